/* One pure-decode step of the native decoder's layers on the CPU, in one call: the fused form of
 * the lean forward (lean.py) for the rows of a decode batch (one new token each). Built into the
 * same library as quant/cpu_vnni.c (quant/vnni.py compiles both) and driven by fused_decode.py.
 *
 * Why: at 31M parameters a batch-1 decode step's matmuls take ~0.3 ms and the ~45 torch ops per
 * layer around them (norms, rotary, KV writes, attention, residuals: a few microseconds of
 * dispatch each) cost twice that. Here a step is one OpenMP parallel region: the matmuls are split
 * over the threads by weight rows, the attention by (row, kv head), the small per-row pieces (norms,
 * activation quantization, rotary, KV write, SiLU) by row, with a barrier between phases; nothing
 * returns to Python until the last layer is done.
 *
 * Per layer, for each row b (h: (B, H) float32 residual stream, updated in place):
 *   x = rms_norm(h, ln1);  qkv = x @ Wqkv^T (+ bias);  [q, k = rms_norm per head (Qwen3)]
 *   q, k = rotary (rotate-half convention, cos/sin rows of the model's tables at pos[b]);
 *   k, v stored at slot[b] of the layer's paged pool (float32 or bf16, rounded to nearest even);
 *   o = softmax(q k^T * scale) v over positions 0 .. lens[b]-1, read through the block table;
 *   h += o @ Wo^T;  x = rms_norm(h, ln2);  g, u = x @ Wgu^T;  h += (silu(g) * u) @ Wdown^T.
 * The same arithmetic as the module path in float32, except: the int4 / int8 matmuls round the
 * activations to int8 per block of 32 (cpu_vnni.c's kernels, which the module path runs for int4 at
 * every M and for int8 at M = 1),
 * sums are taken in another order, and exp is a degree-7 polynomial (relative error ~1e-7).
 * fused_decode.py's tests compare it with the lean forward at a stated tolerance.
 *
 * Linear kinds: int4 (torch's CPU packed layout), int8 row-major with per-row bf16 scales, float32
 * or bf16 row-major (bf16: the input row rounded to bf16, products exact, float32 sums; a bf16 model's
 * residual stream and intermediates stay float32 here, where its module path rounds them to bf16);
 * see cpu_kernels.h for the first two.
 */
#include "cpu_kernels.h"

enum { LIN_INT4 = 1, LIN_INT8 = 2, LIN_F32 = 3, LIN_BF16 = 4 };

typedef struct {
    int64_t kind, N, K, g;   /* g: int4 group size */
    const void *w;           /* int4: packed uint8 (N, K/2); int8: (N, K); float32 / bf16: (N, K) */
    const uint16_t *sz;      /* int4: (K/g, N, 2) bf16 (scale, zero); int8: (N,) bf16 scales */
    const float *bias;       /* (N,) or NULL */
} Lin;

typedef struct {
    const float *ln1, *ln2;  /* (H,) */
    const float *q_norm, *k_norm; /* (D,) Qwen3 QK-norm, or NULL */
    double eps1, eps2, eps_qk;
    Lin qkv, o, gate_up, down;
    void *k_cache, *v_cache; /* (num_blocks, block_size, Hkv, D) */
} Layer;

typedef struct {
    int64_t layers, H, Hq, Hkv, D, I, block_size, kv_bf16, max_pos;
    double scale;            /* softmax scale */
} Spec;

/* Per-call scratch, sized for B rows. */
typedef struct {
    int8_t *xq;
    float *d, *s, *xg, *dv;
    uint8_t *xa;
    __mmask64 *neg;
    uint16_t *xb;            /* bf16 linears: the input rows rounded to bf16 */
} Act;

/* ---------------------------------------------------------------- small pieces (one thread) */

static inline __m512 exp512(__m512 x) {
    /* e^x = 2^n e^r, n = round(x log2 e), r = x - n ln2 (ln2 in two parts), |r| <= ln2 / 2, e^r by
     * its Taylor polynomial of degree 7 (truncation < 3e-9 relative); x clamped to [-104, 88]. */
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.f)), _mm512_set1_ps(88.f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.f / 5040.f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 720.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    return _mm512_scalef_ps(p, n);
}

/* y (n,) = w * (x * 1/sqrt(mean(x^2) + eps)); n % 16 == 0 */
static void rms_row(const float *x, const float *w, float eps, int n, float *y) {
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        acc = _mm512_fmadd_ps(v, v, acc);
    }
    float inv = 1.f / sqrtf(_mm512_reduce_add_ps(acc) / (float)n + eps);
    __m512 vi = _mm512_set1_ps(inv);
    for (int i = 0; i < n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(w + i), _mm512_mul_ps(_mm512_loadu_ps(x + i), vi)));
}

/* x (D,) rotated in place: x[i] cos[i] - x[i + D/2] sin[i] (first half), x[i] cos[i] + x[i - D/2] sin[i] */
static void rotate(float *x, const float *c, const float *s, int D) {
    int half = D / 2;
    for (int i = 0; i < half; i++) {
        float a = x[i], b = x[i + half];
        x[i] = a * c[i] - b * s[i];
        x[i + half] = b * c[i + half] + a * s[i + half];
    }
}

/* n floats -> the pool's dtype at dst */
static void store_row(const float *x, void *dst, int n, int bf16) {
    if (!bf16) {
        memcpy(dst, x, sizeof(float) * n);
        return;
    }
    for (int i = 0; i < n; i += 16) {
        __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(x + i));
        memcpy((uint16_t *)dst + i, &h, 32);
    }
}

static inline __m512 load_kv(const void *base, size_t at, int bf16) {
    if (!bf16) return _mm512_loadu_ps((const float *)base + at);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)base + at));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Row b of a linear's input, x (K,), in the form its kernel reads (float32 rows are read as they are). */
static void lin_prep_row(const Lin *l, const float *x, int b, Act *A) {
    int K = (int)l->K, nb = K / QB;
    if (l->kind == LIN_INT4) {
        quantize_row(x, 0, K, A->xq + (size_t)b * K, A->d + (size_t)b * nb, A->s + (size_t)b * nb);
        q4_group_sums(A->xq + (size_t)b * K, A->d + (size_t)b * nb, A->s + (size_t)b * nb, 1, K, (int)l->g,
                      A->xg + (size_t)b * 2 * (K / l->g));
    } else if (l->kind == LIN_INT8) {
        quantize_row(x, 0, K, A->xq + (size_t)b * K, A->d + (size_t)b * nb, A->s + (size_t)b * nb);
        q8_signs(A->xq + (size_t)b * K, A->d + (size_t)b * nb, 1, K, A->xa + (size_t)b * K, A->neg + (size_t)b * (K / 64),
                 A->dv + (size_t)b * (K / 64) * 16);
    } else if (l->kind == LIN_BF16) {  /* round to nearest even, as torch's cast */
        for (int i = 0; i < K; i += 16) {
            __m256bh hv = _mm512_cvtneps_pbh(_mm512_loadu_ps(x + i));
            memcpy(A->xb + (size_t)b * K + i, &hv, 32);
        }
    }
}

/* ---------------------------------------------------------------- work-shared pieces (all threads) */

/* y (B, N) = x @ W^T (+ bias), the rows of W split over the threads (an orphaned omp for: called
 * inside the step's parallel region; its implicit barrier ends the phase). */
static void lin_run(const Lin *l, int B, const Act *A, const float *xf, float *y) {
    int N = (int)l->N, K = (int)l->K;
    if (l->kind == LIN_INT4) {
        int g = (int)l->g, nb = K / QB, G = K / g;
#pragma omp for schedule(static)
        for (int blk = 0; blk < N / 64; blk++) {
            const uint8_t *wb = (const uint8_t *)l->w + (size_t)blk * 64 * (K / 2);
            int m = 0;
            for (; m + 2 <= B; m += 2)
                q4_block_t(wb, l->sz, N, blk * 64, K, g, A->xq + (size_t)m * K, K, A->d + m * nb, nb,
                           A->xg + m * G * 2, G * 2, y + (size_t)m * N + blk * 64, N, 2);
            if (m < B)
                q4_block_t(wb, l->sz, N, blk * 64, K, g, A->xq + (size_t)m * K, K, A->d + m * nb, nb,
                           A->xg + m * G * 2, G * 2, y + (size_t)m * N + blk * 64, N, 1);
            if (l->bias)
                for (int r = 0; r < B; r++)
                    for (int i = 0; i < 64; i++) y[(size_t)r * N + blk * 64 + i] += l->bias[blk * 64 + i];
        }
    } else if (l->kind == LIN_INT8) {
        int nc = K / 64, quads = N / 4;
        const int8_t *w = (const int8_t *)l->w;
#pragma omp for schedule(static)
        for (int qd = 0; qd < quads + (N % 4 ? 1 : 0); qd++) {
            int n0 = qd * 4;
            for (int m = 0; m < B; m++) {
                float *ym = y + (size_t)m * N;
                if (n0 + 4 <= N) {
                    float o[4];
                    q8_rows4(w, l->sz, K, n0, A->xa + (size_t)m * K, A->neg + m * nc, A->dv + m * nc * 16, o);
                    memcpy(ym + n0, o, sizeof o);
                } else {
                    for (int n = n0; n < N; n++)
                        q8_row1(w, l->sz, K, n, A->xa + (size_t)m * K, A->neg + m * nc, A->dv + m * nc * 16, ym + n);
                }
                if (l->bias)
                    for (int n = n0; n < N && n < n0 + 4; n++) ym[n] += l->bias[n];
            }
        }
    } else if (l->kind == LIN_BF16) {  /* vdpbf16ps: bf16 products exact, float32 sums */
        dense_rows_mm(l->w, A->xb, 1, B, K, N, l->bias, y);
    } else {
        dense_rows_mm(l->w, xf, 0, B, K, N, l->bias, y);
    }
}

/* o (B, Hq*D) = attention of each row's query heads over its context, one (row, kv head) per task:
 * the key / value rows are read once for the G = Hq/Hkv query heads that share them, a block of
 * the paged pool at a time (no division per position). qkv (B, (Hq + 2 Hkv) D) after rotary;
 * sc: (B * Hq, Lmax) scores scratch. */
static void attend(const Spec *S, const Layer *L, int B, const float *qkv, const int32_t *tables, int tstride,
                   const int32_t *lens, float *sc, int Lmax, float *o) {
    int Hq = (int)S->Hq, Hkv = (int)S->Hkv, D = (int)S->D, G = Hq / Hkv, bs = (int)S->block_size;
    int bf16 = (int)S->kv_bf16, W = (Hq + 2 * Hkv) * D, nv = D / 16;
    size_t row = (size_t)Hkv * D; /* pool elements per position */
    float scale = (float)S->scale;
#pragma omp for schedule(static) collapse(2)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < Hkv; kh++) {
            int n = lens[b];
            const float *q = qkv + (size_t)b * W + (size_t)kh * G * D;  /* G heads of D, contiguous */
            float *s = sc + ((size_t)b * Hq + (size_t)kh * G) * Lmax;   /* (G, Lmax) */
            const int32_t *tb = tables + (size_t)b * tstride;
            for (int p0 = 0; p0 < n; p0 += bs) {
                size_t at = (size_t)tb[p0 / bs] * bs * row + (size_t)kh * D;
                int m = n - p0 < bs ? n - p0 : bs;
                for (int j = 0; j < m; j++, at += row) {
                    __m512 kr[16];
                    for (int i = 0; i < nv; i++) kr[i] = load_kv(L->k_cache, at + 16 * i, bf16);
                    for (int g = 0; g < G; g++) {
                        __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(q + g * D), kr[0]);
                        for (int i = 1; i < nv; i++) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + g * D + 16 * i), kr[i], acc);
                        s[(size_t)g * Lmax + p0 + j] = _mm512_reduce_add_ps(acc) * scale;
                    }
                }
            }
            for (int g = 0; g < G; g++) {  /* softmax over the n scores, in place */
                float *sg = s + (size_t)g * Lmax;
                __m512 vmx = _mm512_set1_ps(-INFINITY);
                int p = 0;
                for (; p + 16 <= n; p += 16) vmx = _mm512_max_ps(vmx, _mm512_loadu_ps(sg + p));
                float mx = _mm512_reduce_max_ps(vmx);
                for (; p < n; p++) mx = fmaxf(mx, sg[p]);
                __m512 vm = _mm512_set1_ps(mx), tot = _mm512_setzero_ps();
                for (p = 0; p + 16 <= n; p += 16) {
                    __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(sg + p), vm));
                    _mm512_storeu_ps(sg + p, e);
                    tot = _mm512_add_ps(tot, e);
                }
                if (p < n) {
                    __mmask16 mk = (__mmask16)((1u << (n - p)) - 1);
                    __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, sg + p), vm));
                    _mm512_mask_storeu_ps(sg + p, mk, e);
                    tot = _mm512_add_ps(tot, _mm512_maskz_mov_ps(mk, e));
                }
                __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(tot));
                for (p = 0; p + 16 <= n; p += 16) _mm512_storeu_ps(sg + p, _mm512_mul_ps(_mm512_loadu_ps(sg + p), inv));
                for (; p < n; p++) sg[p] *= inv[0];
            }
            /* out[g] = sum_p s[g][p] v_p: one 16-wide slice of D at a time, the G accumulators in registers */
            float *out = o + (size_t)b * Hq * D + (size_t)kh * G * D;  /* (G, D) */
            for (int i = 0; i < nv; i++) {
                __m512 acc[8];
                for (int g0 = 0; g0 < G; g0 += 8) {
                    int gn = G - g0 < 8 ? G - g0 : 8;
                    for (int g = 0; g < 8; g++) acc[g] = _mm512_setzero_ps();
                    for (int p0 = 0; p0 < n; p0 += bs) {
                        size_t at = (size_t)tb[p0 / bs] * bs * row + (size_t)kh * D + 16 * i;
                        int m = n - p0 < bs ? n - p0 : bs;
                        for (int j = 0; j < m; j++, at += row) {
                            __m512 v = load_kv(L->v_cache, at, bf16);
                            const float *sp = s + (size_t)g0 * Lmax + p0 + j;
#pragma GCC unroll 8
                            for (int g = 0; g < 8; g++)
                                if (g < gn) acc[g] = _mm512_fmadd_ps(_mm512_set1_ps(sp[(size_t)g * Lmax]), v, acc[g]);
                        }
                    }
                    for (int g = 0; g < gn; g++) _mm512_storeu_ps(out + (size_t)(g0 + g) * D + 16 * i, acc[g]);
                }
            }
        }
}

/* ---------------------------------------------------------------- the step */

static int lin_ok(const Lin *l, int64_t N, int64_t K) {
    if (l->N != N || l->K != K || !l->w) return 0;
    if (l->kind == LIN_INT4) return K % QB == 0 && l->g % QB == 0 && K % l->g == 0 && N % 64 == 0 && l->sz;
    if (l->kind == LIN_INT8) return K % 64 == 0 && l->sz;
    if (l->kind == LIN_BF16) return K % 32 == 0;
    return l->kind == LIN_F32 && K % 16 == 0;
}

/* h (B, H) float32 in place through every layer. cos_t/sin_t: (max_pos, D) float32; pos, slots (B,)
 * int64; tables (B, tstride) int32 block ids; lens (B,) int32 context lengths including this token.
 * Returns 0, -1 (shapes the kernels do not take), -2 (out of memory). */
int decode_step(const Spec *S, const Layer *Ls, int B, float *h, const float *cos_t, const float *sin_t,
                const int64_t *pos, const int64_t *slots, const int32_t *tables, int tstride, const int32_t *lens,
                int nt) {
    int H = (int)S->H, Hq = (int)S->Hq, Hkv = (int)S->Hkv, D = (int)S->D, I = (int)S->I;
    int qs = Hq * D, kvs = Hkv * D, W = qs + 2 * kvs;
    if (B < 1 || H % 16 || D % 16 || Hkv < 1 || Hq % Hkv || I % 16) return -1;
    int Lmax = 0;
    for (int b = 0; b < B; b++) {
        if (lens[b] < 1 || pos[b] < 0 || pos[b] >= S->max_pos || slots[b] < 0) return -1;
        Lmax = lens[b] > Lmax ? lens[b] : Lmax;
    }
    for (int l = 0; l < S->layers; l++) {
        const Layer *L = Ls + l;
        if (!lin_ok(&L->qkv, W, H) || !lin_ok(&L->o, H, qs) || !lin_ok(&L->gate_up, 2 * (int64_t)I, H) ||
            !lin_ok(&L->down, H, I) || !L->ln1 || !L->ln2 || !L->k_cache || !L->v_cache)
            return -1;
    }
    int Kmax = H > qs ? H : qs;
    Kmax = Kmax > I ? Kmax : I;
    size_t nbk = (size_t)B * Kmax / QB, nck = (size_t)B * Kmax / 64 + 1;
    Act A;
    A.xq = malloc((size_t)B * Kmax);
    A.xa = malloc((size_t)B * Kmax);
    A.d = malloc(sizeof(float) * nbk);
    A.s = malloc(sizeof(float) * nbk);
    A.xg = malloc(sizeof(float) * 2 * nbk);
    A.neg = malloc(sizeof(__mmask64) * nck);
    A.dv = malloc(sizeof(float) * 16 * nck);
    A.xb = malloc(sizeof(uint16_t) * (size_t)B * Kmax);
    float *x = malloc(sizeof(float) * (size_t)B * Kmax);     /* a linear's input rows */
    float *qkv = malloc(sizeof(float) * (size_t)B * W);
    float *att = malloc(sizeof(float) * (size_t)B * qs);
    float *y = malloc(sizeof(float) * (size_t)B * H);         /* o / down outputs */
    float *y2 = malloc(sizeof(float) * (size_t)B * 2 * I);    /* gate_up output */
    float *sc = malloc(sizeof(float) * (size_t)B * Hq * Lmax);
    int rc = 0;
    if (!A.xq || !A.xa || !A.d || !A.s || !A.xg || !A.neg || !A.dv || !A.xb || !x || !qkv || !att || !y || !y2 || !sc) {
        rc = -2;
        goto out;
    }
#pragma omp parallel num_threads(nt)
    {
        for (int l = 0; l < S->layers; l++) {
            const Layer *L = Ls + l;
            /* the per-row pieces are split over the threads by row (a batch of one: one thread) */
#pragma omp for schedule(static)
            for (int b = 0; b < B; b++) {
                float *hb = h + (size_t)b * H, *xb = x + (size_t)b * H;
                if (l > 0) /* the previous layer's MLP output */
                    for (int i = 0; i < H; i++) hb[i] += y[(size_t)b * H + i];
                rms_row(hb, L->ln1, (float)L->eps1, H, xb);
                lin_prep_row(&L->qkv, xb, b, &A);
            }
            lin_run(&L->qkv, B, &A, x, qkv);
#pragma omp for schedule(static)
            for (int b = 0; b < B; b++) {
                float *r = qkv + (size_t)b * W;
                const float *c = cos_t + pos[b] * D, *sn = sin_t + pos[b] * D;
                for (int hh = 0; hh < Hq + Hkv; hh++) {
                    float *v = r + (size_t)hh * D;
                    if (L->q_norm) rms_row(v, hh < Hq ? L->q_norm : L->k_norm, (float)L->eps_qk, D, v);
                    rotate(v, c, sn, D);
                }
                int bf16 = (int)S->kv_bf16;
                size_t at = (size_t)slots[b] * kvs * (bf16 ? 2 : 4);
                store_row(r + qs, (char *)L->k_cache + at, kvs, bf16);
                store_row(r + qs + kvs, (char *)L->v_cache + at, kvs, bf16);
            }
            attend(S, L, B, qkv, tables, tstride, lens, sc, Lmax, att);
#pragma omp for schedule(static)
            for (int b = 0; b < B; b++) lin_prep_row(&L->o, att + (size_t)b * qs, b, &A);
            lin_run(&L->o, B, &A, att, y);
#pragma omp for schedule(static)
            for (int b = 0; b < B; b++) {
                float *hb = h + (size_t)b * H, *xb = x + (size_t)b * H;
                for (int i = 0; i < H; i++) hb[i] += y[(size_t)b * H + i];
                rms_row(hb, L->ln2, (float)L->eps2, H, xb);
                lin_prep_row(&L->gate_up, xb, b, &A);
            }
            lin_run(&L->gate_up, B, &A, x, y2);
#pragma omp for schedule(static)
            for (int b = 0; b < B; b++) { /* silu(gate) * up = g / (1 + e^-g) * u */
                const float *g = y2 + (size_t)b * 2 * I, *u = g + I;
                float *a = x + (size_t)b * I;
                for (int i = 0; i < I; i += 16) {
                    __m512 gv = _mm512_loadu_ps(g + i);
                    __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
                    __m512 sg = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.f), e));
                    _mm512_storeu_ps(a + i, _mm512_mul_ps(sg, _mm512_loadu_ps(u + i)));
                }
                lin_prep_row(&L->down, a, b, &A);
            }
            lin_run(&L->down, B, &A, x, y);
        }
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++)
            for (int i = 0; i < H; i++) h[(size_t)b * H + i] += y[(size_t)b * H + i];
    }
out:
    free(A.xq); free(A.xa); free(A.d); free(A.s); free(A.xg); free(A.neg); free(A.dv); free(A.xb);
    free(x); free(qkv); free(att); free(y); free(y2); free(sc);
    return rc;
}
