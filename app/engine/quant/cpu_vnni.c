/* Small-M int4 / int8 matmuls for x86 CPUs with AVX-512 VNNI + VBMI, on the weights exactly as
 * torch's CPU kernels store them (no second copy, no re-packing). Built and loaded by vnni.py.
 *
 * Why: at batch 1 a decode step is a chain of matrix-vector products. torch's
 * _weight_int4pack_mm_for_cpu dequantizes every weight to float and multiplies in float32
 * (compute-bound at ~17 GB/s of weights per core here); llama.cpp quantizes the activation row to
 * int8 (blocks of 32, one scale each) and multiplies with integer dot products (vpdpbusd: 64
 * multiply-adds per instruction), which leaves it bound by memory bandwidth. This file does the
 * latter on our layouts. The activation rounding is the only approximation: the integer dot
 * products are exact, and the float sums differ from the reference only in order
 * (vnni.py: reference_q4 / reference_q8 are the same arithmetic in torch; tests compare them).
 *
 * Activation quantization (both kernels): per row m and block b of 32 inputs,
 *   d = max|x| / 127, xq = round-half-even(x / d) in -127..127 (all zero when max|x| = 0),
 *   s = sum of the block's x (float, for the int4 zero points).
 *
 * int4 (torch CPU layout, verified at run time by int4_kernels.cpu_layout_known): rows in blocks
 * of 64; a block is K x 32 bytes, k-major, byte j = q[row j][k] | q[row j + 32][k] << 4, q in
 * 0..15; sz (K/g, N, 2) bf16 = (scale, zero); weight = (q - 8) * scale + zero. Per row n:
 *   y = sum_groups [ scale * sum_blocks d_b * (dot(q, xq)_b - 8 sum(xq)_b) + zero * sum(x)_group ]
 * (the -8 offset goes with the rounded activations, as if the weight were dequantized first: pairing
 * it with the exact sum instead would multiply the rounding error by 8).
 * The kernel reads 4 consecutive k of 64 rows (128 bytes), byte-permutes them so each 32-bit lane
 * holds one row's 4 weights, and vpdpbusd's against the broadcast 4 activation bytes: lanes are
 * output rows, no horizontal sums. Full 64-row blocks only (the caller checks N % 64 == 0).
 *
 * int8 (torch's _weight_int8pack_mm layout): w (N, K) int8 row-major, scale (N,) bf16;
 * y = scale * sum_blocks d_b * dot(w, xq)_b. vpdpbusd multiplies unsigned by signed bytes: it gets
 * |xq| and w with the sign of xq moved onto it. Four rows at a time, one horizontal sum per row.
 *
 * Threads: OpenMP over row blocks, nt threads (torch.get_num_threads() of the caller: the engine
 * thread's OpenMP settings are not the main thread's). The library is loaded after torch, so
 * libgomp resolves to the copy torch already loaded: one thread pool for both (vnni.py checks).
 */
#include "cpu_kernels.h"

/* x (M, K); packed: torch CPU int4 layout of an (N, K) weight; y (M, N) float32. 0 or an error code. */
int q4_mm(const void *x, int x_bf16, int M, int K, const uint8_t *packed, const uint16_t *sz, int N, int g,
          float *y, int nt) {
    if (M < 1 || K % QB || g % QB || K % g || N % 64) return -1;
    int nb = K / QB, G = K / g;
    int8_t *xq = malloc((size_t)M * K);
    float *d = malloc(sizeof(float) * M * nb), *s = malloc(sizeof(float) * M * nb);
    float *xg = malloc(sizeof(float) * M * G * 2);
    if (!xq || !d || !s || !xg) {
        free(xq); free(d); free(s); free(xg);
        return -2;
    }
    quantize_rows(x, x_bf16, M, K, xq, d, s, nt);
    q4_group_sums(xq, d, s, M, K, g, xg);
    int blocks = N / 64;
    /* Activation rows in chunks of MC (MC x K int8 stays in L2 while every row block passes over it):
     * without it a 5000-token prefill streamed all of x from memory once per 64-row block. */
    for (int m0 = 0; m0 < M; m0 += MC) {
        int m1 = M - m0 < MC ? M : m0 + MC;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int blk = 0; blk < blocks; blk++) {
            const uint8_t *wb = packed + (size_t)blk * 64 * (K / 2);
            int m = m0;
            for (; m + 2 <= m1; m += 2)  /* two activation rows per pass: each unpacked weight used twice */
                q4_block_t(wb, sz, N, blk * 64, K, g, xq + (size_t)m * K, K, d + m * nb, nb, xg + m * G * 2, G * 2,
                           y + (size_t)m * N + blk * 64, N, 2);
            if (m < m1)
                q4_block_t(wb, sz, N, blk * 64, K, g, xq + (size_t)m * K, K, d + m * nb, nb, xg + m * G * 2, G * 2,
                           y + (size_t)m * N + blk * 64, N, 1);
        }
    }
    free(xq); free(d); free(s); free(xg);
    return 0;
}

/* x (M, K); w (N, K) int8; scale (N,) bf16; y (M, N) float32. K % 64 == 0. */
int q8_mm(const void *x, int x_bf16, int M, int K, const int8_t *w, const uint16_t *scale, int N, float *y, int nt) {
    if (M < 1 || K % 64) return -1;
    int nb = K / QB, nc = K / 64;
    int8_t *xq = malloc((size_t)M * K);
    uint8_t *xa = malloc((size_t)M * K);
    __mmask64 *neg = malloc(sizeof(__mmask64) * M * nc);
    float *d = malloc(sizeof(float) * M * nb), *s = malloc(sizeof(float) * M * nb);
    float *dv = malloc(sizeof(float) * M * nc * 16);
    if (!xq || !xa || !neg || !d || !s || !dv) {
        free(xq); free(xa); free(neg); free(d); free(s); free(dv);
        return -2;
    }
    quantize_rows(x, x_bf16, M, K, xq, d, s, nt);
    q8_signs(xq, d, M, K, xa, neg, dv);
    int quads = N / 4;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int qd = 0; qd < quads; qd++) {
        for (int m = 0; m < M; m++) {
            float o[4];
            q8_rows4(w, scale, K, qd * 4, xa + (size_t)m * K, neg + m * nc, dv + m * nc * 16, o);
            memcpy(y + (size_t)m * N + qd * 4, o, sizeof o);
        }
    }
    for (int n = quads * 4; n < N; n++)
        for (int m = 0; m < M; m++)
            q8_row1(w, scale, K, n, xa + (size_t)m * K, neg + m * nc, dv + m * nc * 16, y + (size_t)m * N + n);
    free(xq); free(xa); free(neg); free(d); free(s); free(dv);
    return 0;
}

/* ---------------------------------------------------------------- bf16, row-major (AVX512_BF16) */

/* y (M, N) = x (M, K) @ w (N, K)^T with w in bf16: vdpbf16ps multiplies bf16 pairs exactly and
 * accumulates in float32, like a bf16 matmul with float32 accumulation (only the order of the sums
 * differs). x float32 is rounded to bf16 first (round to nearest even: the cast torch would do).
 * Output float32 (y_bf16 = 0) or bf16 rounded to nearest even (y_bf16 = 1). K % 32 == 0. */
int bf16_mm(const void *x, int x_bf16, int M, int K, const uint16_t *w, int N, void *y, int y_bf16, int nt) {
    if (M < 1 || K % 32) return -1;
    uint16_t *xb = malloc(sizeof(uint16_t) * (size_t)M * K);
    if (!xb) return -2;
    if (x_bf16) {
        memcpy(xb, x, sizeof(uint16_t) * (size_t)M * K);
    } else {
        for (size_t i = 0; i < (size_t)M * K; i += 16) {
            __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps((const float *)x + i));
            memcpy(xb + i, &h, 32);
        }
    }
    float *yf = y_bf16 ? malloc(sizeof(float) * (size_t)M * N) : (float *)y;
    if (!yf) {
        free(xb);
        return -2;
    }
#pragma omp parallel num_threads(nt)
    dense_rows_mm(w, xb, 1, M, K, N, NULL, yf);
    if (y_bf16) {  /* one rounding to bf16 (nearest even) at the end */
        size_t n = (size_t)M * N, i = 0;
        for (; i + 16 <= n; i += 16) {
            __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(yf + i));
            memcpy((uint16_t *)y + i, &h, 32);
        }
        for (; i < n; i++) {
            __m128bh h = _mm_cvtneps_pbh(_mm_set_ss(yf[i]));
            memcpy((uint16_t *)y + i, &h, 2);
        }
        free(yf);
    }
    free(xb);
    return 0;
}

/* ---------------------------------------------------------------- float32, row-major */

/* y (M, N) float32 = x (M, K) @ w (N, K)^T, all float32, sums in float32 (another order than
 * F.linear's). K % 16 == 0. */
int f32_mm(const float *x, int M, int K, const float *w, int N, float *y, int nt) {
    if (M < 1 || K % 16) return -1;
#pragma omp parallel num_threads(nt)
    dense_rows_mm(w, x, 0, M, K, N, NULL, y);
    return 0;
}

