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
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define QB 32 /* activation block */
#define MC 128 /* activation rows per pass over the weights (int4) */

static inline float bf16f(uint16_t h) {
    uint32_t u = ((uint32_t)h) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* x (M, K) float32 (bf16 = 0) or bfloat16 (bf16 = 1) -> xq (M, K), d (M, K/QB), s (M, K/QB) */
static void quantize_rows(const void *x, int bf16, int M, int K, int8_t *xq, float *d, float *s) {
    int nb = K / QB;
    for (int m = 0; m < M; m++) {
        for (int b = 0; b < nb; b++) {
            float v[QB], amax = 0.f, sum = 0.f;
            for (int i = 0; i < QB; i++) {
                size_t at = (size_t)m * K + (size_t)b * QB + i;
                v[i] = bf16 ? bf16f(((const uint16_t *)x)[at]) : ((const float *)x)[at];
                sum += v[i];
                amax = fmaxf(amax, fabsf(v[i]));
            }
            float dd = amax / 127.f, inv = amax > 0.f ? 127.f / amax : 0.f;
            d[m * nb + b] = dd;
            s[m * nb + b] = sum;
            for (int i = 0; i < QB; i++) xq[(size_t)m * K + (size_t)b * QB + i] = (int8_t)nearbyintf(v[i] * inv);
        }
    }
}

/* ---------------------------------------------------------------- int4, torch CPU layout */

/* The byte permutations taking 4 consecutive k of a 64-row block (128 bytes) to one row's 4
 * weights per 32-bit lane: IDX0 -> rows 0-15 (low nibbles) and 32-47 (high), IDX1 -> 16-31, 48-63 */
static inline void q4_indices(__m512i *idx0, __m512i *idx1) {
    uint8_t i0[64], i1[64];
    for (int l = 0; l < 16; l++)
        for (int i = 0; i < 4; i++) {
            i0[l * 4 + i] = (uint8_t)(i * 32 + l);
            i1[l * 4 + i] = (uint8_t)(i * 32 + l + 16);
        }
    *idx0 = _mm512_loadu_si512(i0);
    *idx1 = _mm512_loadu_si512(i1);
}

/* One 64-row block against MT (1 or 2) activation rows sharing each unpacked weight:
 * out[t * ldo + 0..63] for row t. gsum: per group (sum_b d_b sum(xq)_b, sum(x)) of each row. */
static inline __attribute__((always_inline)) void q4_block_t(const uint8_t *wb, const uint16_t *sz, int N, int n0,
                                                             int K, int g, const int8_t *xq, int ldx, const float *d,
                                                             int ldd, const float *gsum, int ldg, float *out, int ldo,
                                                             const int MT) {
    const __m512i lo4 = _mm512_set1_epi8(0x0F);
    __m512i idx0, idx1;
    q4_indices(&idx0, &idx1);
    __m512 tot[2][4];
    for (int t = 0; t < MT; t++)
        for (int r = 0; r < 4; r++) tot[t][r] = _mm512_setzero_ps();
    int G = K / g, bpg = g / QB;
    for (int j = 0; j < G; j++) {
        __m512 f[2][4];
        for (int t = 0; t < MT; t++)
            for (int r = 0; r < 4; r++) f[t][r] = _mm512_setzero_ps();
        for (int bb = 0; bb < bpg; bb++) {
            int b = j * bpg + bb;
            __m512i a[2][4];
            for (int t = 0; t < MT; t++)
                for (int r = 0; r < 4; r++) a[t][r] = _mm512_setzero_si512();
            const uint8_t *p = wb + (size_t)b * QB * 32;
            for (int st = 0; st < QB / 4; st++) {
                /* the next row block's same bytes (a hint; 4% on the 1.5B shapes, M = 1) */
                _mm_prefetch((const char *)(p + st * 128 + (size_t)32 * K), _MM_HINT_T0);
                _mm_prefetch((const char *)(p + st * 128 + (size_t)32 * K + 64), _MM_HINT_T0);
                __m512i A = _mm512_loadu_si512(p + st * 128), B = _mm512_loadu_si512(p + st * 128 + 64);
                __m512i z0 = _mm512_permutex2var_epi8(A, idx0, B), z1 = _mm512_permutex2var_epi8(A, idx1, B);
                __m512i w[4] = {_mm512_and_si512(z0, lo4), _mm512_and_si512(z1, lo4),
                                _mm512_and_si512(_mm512_srli_epi16(z0, 4), lo4),
                                _mm512_and_si512(_mm512_srli_epi16(z1, 4), lo4)};
                for (int t = 0; t < MT; t++) {
                    int32_t x4;
                    memcpy(&x4, xq + (size_t)t * ldx + b * QB + st * 4, 4);
                    __m512i xv = _mm512_set1_epi32(x4);
                    for (int r = 0; r < 4; r++) a[t][r] = _mm512_dpbusd_epi32(a[t][r], w[r], xv);
                }
            }
            for (int t = 0; t < MT; t++) {
                __m512 db = _mm512_set1_ps(d[t * ldd + b]);
                for (int r = 0; r < 4; r++) f[t][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a[t][r]), db, f[t][r]);
            }
        }
        /* (scale, zero) bf16 pairs of 16 rows = 16 32-bit lanes: scale in the low half, zero in the high */
        const uint16_t *sj = sz + ((size_t)j * N + n0) * 2;
        for (int r = 0; r < 4; r++) {
            __m512i pr = _mm512_loadu_si512(sj + r * 32);
            __m512 sc = _mm512_castsi512_ps(_mm512_slli_epi32(pr, 16));
            __m512 ze = _mm512_castsi512_ps(_mm512_and_si512(pr, _mm512_set1_epi32((int)0xFFFF0000u)));
            for (int t = 0; t < MT; t++) {
                __m512 q8s = _mm512_set1_ps(8.f * gsum[t * ldg + 2 * j]), xs = _mm512_set1_ps(gsum[t * ldg + 2 * j + 1]);
                tot[t][r] = _mm512_fmadd_ps(ze, xs, _mm512_fmadd_ps(_mm512_sub_ps(f[t][r], q8s), sc, tot[t][r]));
            }
        }
    }
    for (int t = 0; t < MT; t++)
        for (int r = 0; r < 4; r++) _mm512_storeu_ps(out + (size_t)t * ldo + r * 16, tot[t][r]);
}

/* x (M, K); packed: torch CPU int4 layout of an (N, K) weight; y (M, N) float32. 0 or an error code. */
int q4_mm(const void *x, int x_bf16, int M, int K, const uint8_t *packed, const uint16_t *sz, int N, int g,
          float *y, int nt) {
    if (M < 1 || K % QB || g % QB || K % g || N % 64) return -1;
    int nb = K / QB, G = K / g, bpg = g / QB;
    int8_t *xq = malloc((size_t)M * K);
    float *d = malloc(sizeof(float) * M * nb), *s = malloc(sizeof(float) * M * nb);
    float *xg = malloc(sizeof(float) * M * G * 2);
    if (!xq || !d || !s || !xg) {
        free(xq); free(d); free(s); free(xg);
        return -2;
    }
    quantize_rows(x, x_bf16, M, K, xq, d, s);
    for (int m = 0; m < M; m++)
        for (int j = 0; j < G; j++) {
            float a = 0.f, c = 0.f;
            for (int bb = 0; bb < bpg; bb++) {
                int b = j * bpg + bb, isum = 0;
                for (int i = 0; i < QB; i++) isum += xq[(size_t)m * K + (size_t)b * QB + i];
                c += d[m * nb + b] * (float)isum;
                a += s[m * nb + b];
            }
            xg[(m * G + j) * 2] = c;
            xg[(m * G + j) * 2 + 1] = a;
        }
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

/* ---------------------------------------------------------------- int8, row-major */

static void q8_rows4(const int8_t *w, const uint16_t *scale, int K, int n, const uint8_t *xa,
                     const __mmask64 *neg, const float *dv, float *out) {
    const __m512i zero = _mm512_setzero_si512();
    const int8_t *w0 = w + (size_t)n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
    __m512 f0 = _mm512_setzero_ps(), f1 = f0, f2 = f0, f3 = f0;
    for (int c = 0; c < K / 64; c++) {
        __m512i xv = _mm512_loadu_si512(xa + c * 64);
        __mmask64 mk = neg[c];
        __m512 dd = _mm512_loadu_ps(dv + c * 16); /* lanes 0-7: block 2c, lanes 8-15: block 2c + 1 */
        /* the next four rows' same chunk (a hint: never faults past the end). Measured on the
         * 151936 x 1536 LM head, M = 1: 6.1-7.0 ms vs 7.7 (2 threads), 9.4 vs 11.7 (1 thread) */
        _mm_prefetch((const char *)(w3 + K + c * 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(w3 + 2 * (size_t)K + c * 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(w3 + 3 * (size_t)K + c * 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(w3 + 4 * (size_t)K + c * 64), _MM_HINT_T0);
        __m512i v0 = _mm512_loadu_si512(w0 + c * 64), v1 = _mm512_loadu_si512(w1 + c * 64);
        __m512i v2 = _mm512_loadu_si512(w2 + c * 64), v3 = _mm512_loadu_si512(w3 + c * 64);
        v0 = _mm512_mask_sub_epi8(v0, mk, zero, v0);
        v1 = _mm512_mask_sub_epi8(v1, mk, zero, v1);
        v2 = _mm512_mask_sub_epi8(v2, mk, zero, v2);
        v3 = _mm512_mask_sub_epi8(v3, mk, zero, v3);
        f0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, xv, v0)), dd, f0);
        f1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, xv, v1)), dd, f1);
        f2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, xv, v2)), dd, f2);
        f3 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, xv, v3)), dd, f3);
    }
    out[0] = bf16f(scale[n]) * _mm512_reduce_add_ps(f0);
    out[1] = bf16f(scale[n + 1]) * _mm512_reduce_add_ps(f1);
    out[2] = bf16f(scale[n + 2]) * _mm512_reduce_add_ps(f2);
    out[3] = bf16f(scale[n + 3]) * _mm512_reduce_add_ps(f3);
}

static void q8_row1(const int8_t *w, const uint16_t *scale, int K, int n, const uint8_t *xa, const __mmask64 *neg,
                    const float *dv, float *out) {
    const __m512i zero = _mm512_setzero_si512();
    const int8_t *w0 = w + (size_t)n * K;
    __m512 f0 = _mm512_setzero_ps();
    for (int c = 0; c < K / 64; c++) {
        __m512i v0 = _mm512_mask_sub_epi8(_mm512_loadu_si512(w0 + c * 64), neg[c], zero, _mm512_loadu_si512(w0 + c * 64));
        f0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, _mm512_loadu_si512(xa + c * 64), v0)),
                             _mm512_loadu_ps(dv + c * 16), f0);
    }
    out[0] = bf16f(scale[n]) * _mm512_reduce_add_ps(f0);
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
    quantize_rows(x, x_bf16, M, K, xq, d, s);
    for (int m = 0; m < M; m++)
        for (int c = 0; c < nc; c++) {
            __m512i v = _mm512_loadu_si512(xq + (size_t)m * K + c * 64);
            neg[m * nc + c] = _mm512_movepi8_mask(v);
            _mm512_storeu_si512(xa + (size_t)m * K + c * 64, _mm512_abs_epi8(v));
            for (int l = 0; l < 16; l++) dv[(m * nc + c) * 16 + l] = d[m * nb + 2 * c + (l >= 8)];
        }
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
static inline __m512bh bf16_load_x(const uint16_t *p) { return (__m512bh)_mm512_loadu_si512(p); }

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
    int quads = N / 4;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int qd = 0; qd < quads + (N % 4 ? 1 : 0); qd++) {
        int n0 = qd * 4, rows = N - n0 < 4 ? N - n0 : 4;
        for (int m = 0; m < M; m++) {
            const uint16_t *xr = xb + (size_t)m * K;
            __m512 f[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
            if (rows == 4) {
                const uint16_t *w0 = w + (size_t)n0 * K;
                for (int c = 0; c < K; c += 32) {
                    __m512bh xv = bf16_load_x(xr + c);
                    f[0] = _mm512_dpbf16_ps(f[0], (__m512bh)_mm512_loadu_si512(w0 + c), xv);
                    f[1] = _mm512_dpbf16_ps(f[1], (__m512bh)_mm512_loadu_si512(w0 + K + c), xv);
                    f[2] = _mm512_dpbf16_ps(f[2], (__m512bh)_mm512_loadu_si512(w0 + 2 * (size_t)K + c), xv);
                    f[3] = _mm512_dpbf16_ps(f[3], (__m512bh)_mm512_loadu_si512(w0 + 3 * (size_t)K + c), xv);
                }
            } else {
                for (int r = 0; r < rows; r++)
                    for (int c = 0; c < K; c += 32)
                        f[r] = _mm512_dpbf16_ps(f[r], (__m512bh)_mm512_loadu_si512(w + (size_t)(n0 + r) * K + c),
                                                bf16_load_x(xr + c));
            }
            for (int r = 0; r < rows; r++) {
                float v = _mm512_reduce_add_ps(f[r]);
                if (y_bf16) {
                    __m128bh h = _mm_cvtneps_pbh(_mm_set_ss(v));
                    memcpy((uint16_t *)y + (size_t)m * N + n0 + r, &h, 2);
                } else {
                    ((float *)y)[(size_t)m * N + n0 + r] = v;
                }
            }
        }
    }
    free(xb);
    return 0;
}
