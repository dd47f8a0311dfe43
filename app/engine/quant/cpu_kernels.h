/* Shared pieces of our CPU kernels (cpu_vnni.c: the matmuls; models/cpu_decode_step.c: the fused
 * decode step): activation quantization and the int4 / int8 inner loops. See cpu_vnni.c for the
 * layouts and the arithmetic. */
#pragma once
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

/* 16 values at x + at, float32 (bf16 = 0) or bfloat16 (bf16 = 1), as float32 */
static inline __m512 load16(const void *x, int bf16, size_t at) {
    if (!bf16) return _mm512_loadu_ps((const float *)x + at);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)x + at));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* One row x (K,) -> xq (K,), d (K/QB,), s (K/QB,). The rounding (cvtps: round half to even in the
 * default mode, like nearbyintf) and d, inv are the reference's; only s's summation order is the
 * vector's. */
static inline void quantize_row(const void *x, int bf16, int K, int8_t *xq, float *d, float *s) {
    for (int b = 0; b < K / QB; b++) {
        __m512 v0 = load16(x, bf16, (size_t)b * QB), v1 = load16(x, bf16, (size_t)b * QB + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float inv = amax > 0.f ? 127.f / amax : 0.f;
        d[b] = amax / 127.f;
        s[b] = _mm512_reduce_add_ps(_mm512_add_ps(v0, v1));
        __m512 vi = _mm512_set1_ps(inv);
        _mm_storeu_si128((__m128i *)(xq + (size_t)b * QB), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, vi))));
        _mm_storeu_si128((__m128i *)(xq + (size_t)b * QB + 16),
                         _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, vi))));
    }
}

/* x (M, K) -> xq (M, K), d (M, K/QB), s (M, K/QB), rows split over the threads when there are many */
static inline void quantize_rows(const void *x, int bf16, int M, int K, int8_t *xq, float *d, float *s, int nt) {
    int nb = K / QB;
    size_t es = bf16 ? 2 : 4;
#pragma omp parallel for schedule(static) num_threads(nt) if (M >= 64)
    for (int m = 0; m < M; m++)
        quantize_row((const char *)x + (size_t)m * K * es, bf16, K, xq + (size_t)m * K, d + (size_t)m * nb,
                     s + (size_t)m * nb);
}

/* Per row m and group j of g inputs: xg[(m G + j) 2] = sum_b d_b sum(xq)_b (for the -8 offset),
 * xg[... + 1] = sum of the group's x (for the zero point). */
static inline void q4_group_sums(const int8_t *xq, const float *d, const float *s, int M, int K, int g, float *xg) {
    int nb = K / QB, G = K / g, bpg = g / QB;
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

/* ---------------------------------------------------------------- int8, row-major */

static inline void q8_rows4(const int8_t *w, const uint16_t *scale, int K, int n, const uint8_t *xa,
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

static inline void q8_row1(const int8_t *w, const uint16_t *scale, int K, int n, const uint8_t *xa, const __mmask64 *neg,
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

/* The int8 kernel's form of the quantized rows: xa = |xq|, neg = sign masks per 64 bytes, dv = each
 * 64-byte chunk's two block scales spread over 8 lanes each. */
static inline void q8_signs(const int8_t *xq, const float *d, int M, int K, uint8_t *xa, __mmask64 *neg, float *dv) {
    int nb = K / QB, nc = K / 64;
    for (int m = 0; m < M; m++)
        for (int c = 0; c < nc; c++) {
            __m512i v = _mm512_loadu_si512(xq + (size_t)m * K + c * 64);
            neg[m * nc + c] = _mm512_movepi8_mask(v);
            _mm512_storeu_si512(xa + (size_t)m * K + c * 64, _mm512_abs_epi8(v));
            for (int l = 0; l < 16; l++) dv[(m * nc + c) * 16 + l] = d[m * nb + 2 * c + (l >= 8)];
        }
}

/* dot(w row, x) over K bf16 pairs, float32 sums (K % 32 == 0). One row per call with two
 * accumulators: measured on the 2-core Zen 5 VM (17920 x 1536 bf16, 2 threads, best of 12) 41-45 GB/s
 * against 35-37 for four rows interleaved with a run-time row count. */
static inline float bf16_dot(const uint16_t *w, const uint16_t *x, int K) {
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
    int k = 0;
    for (; k + 64 <= K; k += 64) {
        a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_loadu_si512(w + k), (__m512bh)_mm512_loadu_si512(x + k));
        b = _mm512_dpbf16_ps(b, (__m512bh)_mm512_loadu_si512(w + k + 32), (__m512bh)_mm512_loadu_si512(x + k + 32));
    }
    if (k < K) a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_loadu_si512(w + k), (__m512bh)_mm512_loadu_si512(x + k));
    return _mm512_reduce_add_ps(_mm512_add_ps(a, b));
}

/* dot(w row, x) over K floats (K % 16 == 0), four accumulators */
static inline float f32_dot(const float *w, const float *x, int K) {
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    int k = 0;
    for (; k + 64 <= K; k += 64) {
        a = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), a);
        b = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 16), _mm512_loadu_ps(x + k + 16), b);
        c = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 32), _mm512_loadu_ps(x + k + 32), c);
        d = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 48), _mm512_loadu_ps(x + k + 48), d);
    }
    for (; k < K; k += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), a);
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
}

/* A 4 x T tile: out[t * 4 + r] = dot(w row r, x row t), r < 4 weight rows (K apart), t < T <= 4
 * input rows (ldx apart); T a constant after inlining, so the 4 T accumulators stay in registers:
 * each weight load feeds T products and each input load 4. */
static inline __attribute__((always_inline)) void bf16_tile(const uint16_t *w, const uint16_t *x, size_t ldx, int K,
                                                            float *out, const int T) {
    __m512 f[4][4];
    for (int t = 0; t < T; t++)
        for (int r = 0; r < 4; r++) f[t][r] = _mm512_setzero_ps();
    for (int k = 0; k < K; k += 32) {
        __m512bh wv[4];
        for (int r = 0; r < 4; r++) wv[r] = (__m512bh)_mm512_loadu_si512(w + (size_t)r * K + k);
        for (int t = 0; t < T; t++) {
            __m512bh xv = (__m512bh)_mm512_loadu_si512(x + t * ldx + k);
            for (int r = 0; r < 4; r++) f[t][r] = _mm512_dpbf16_ps(f[t][r], wv[r], xv);
        }
    }
    for (int t = 0; t < T; t++)
        for (int r = 0; r < 4; r++) out[t * 4 + r] = _mm512_reduce_add_ps(f[t][r]);
}

static inline __attribute__((always_inline)) void f32_tile(const float *w, const float *x, size_t ldx, int K,
                                                           float *out, const int T) {
    __m512 f[4][4];
    for (int t = 0; t < T; t++)
        for (int r = 0; r < 4; r++) f[t][r] = _mm512_setzero_ps();
    for (int k = 0; k < K; k += 16) {
        __m512 wv[4];
        for (int r = 0; r < 4; r++) wv[r] = _mm512_loadu_ps(w + (size_t)r * K + k);
        for (int t = 0; t < T; t++) {
            __m512 xv = _mm512_loadu_ps(x + t * ldx + k);
            for (int r = 0; r < 4; r++) f[t][r] = _mm512_fmadd_ps(wv[r], xv, f[t][r]);
        }
    }
    for (int t = 0; t < T; t++)
        for (int r = 0; r < 4; r++) out[t * 4 + r] = _mm512_reduce_add_ps(f[t][r]);
}

/* y (M, N) (+ bias) = x (M, K) @ w (N, K)^T for bf16 (bf16 = 1: w, x uint16) or float32 rows, the
 * weight rows split over the calling team (an orphaned omp for: call it inside a parallel region).
 * One row: one weight row at a time (best streaming, see bf16_dot); more: 4 x 4 tiles. */
static inline __attribute__((always_inline)) void dense_tile(const void *w, const void *x, int bf16, int K,
                                                             float *out, const int T) {
    if (bf16)
        bf16_tile((const uint16_t *)w, (const uint16_t *)x, K, K, out, T);
    else
        f32_tile((const float *)w, (const float *)x, K, K, out, T);
}

static inline void dense_rows_mm(const void *w, const void *x, int bf16, int M, int K, int N, const float *bias,
                                 float *y) {
    size_t es = bf16 ? 2 : 4; /* bytes per element */
    if (M == 1) {
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++)
            y[n] = (bf16 ? bf16_dot((const uint16_t *)w + (size_t)n * K, (const uint16_t *)x, K)
                         : f32_dot((const float *)w + (size_t)n * K, (const float *)x, K)) + (bias ? bias[n] : 0.f);
        return;
    }
#pragma omp for schedule(static)
    for (int q = 0; q < (N + 3) / 4; q++) {
        int n0 = q * 4;
        for (int m = 0; m < M; m += 4) {
            int T = M - m < 4 ? M - m : 4;
            float o[16];
            if (n0 + 4 <= N) {
                const char *wq = (const char *)w + (size_t)n0 * K * es, *xm = (const char *)x + (size_t)m * K * es;
                switch (T) {  /* a constant T per call, so each tile's accumulators stay in registers */
                    case 1: dense_tile(wq, xm, bf16, K, o, 1); break;
                    case 2: dense_tile(wq, xm, bf16, K, o, 2); break;
                    case 3: dense_tile(wq, xm, bf16, K, o, 3); break;
                    default: dense_tile(wq, xm, bf16, K, o, 4);
                }
                for (int t = 0; t < T; t++)
                    for (int r = 0; r < 4; r++)
                        y[(size_t)(m + t) * N + n0 + r] = o[t * 4 + r] + (bias ? bias[n0 + r] : 0.f);
            } else {  /* the last 1-3 weight rows */
                for (int n = n0; n < N; n++)
                    for (int t = 0; t < T; t++) {
                        size_t at = (size_t)(m + t) * K;
                        float v = bf16 ? bf16_dot((const uint16_t *)w + (size_t)n * K, (const uint16_t *)x + at, K)
                                       : f32_dot((const float *)w + (size_t)n * K, (const float *)x + at, K);
                        y[(size_t)(m + t) * N + n] = v + (bias ? bias[n] : 0.f);
                    }
            }
        }
    }
}

