/*
** norm.c -- batch_norm, softmax, log_softmax and cross_entropy, forward and
** backward, with PyTorch semantics.
**
** Every reduction runs wholly inside one task in a fixed order (channels for
** batch norm, rows or column blocks for softmax, rows for cross entropy, then
** a serial sum), so results do not depend on the number of threads.
**
** Synchronised batch norm (nr_dist_sync_bn(), data-parallel runs): the
** training statistics are those of the global batch.  The forward sums x
** and x^2 per channel and all-reduces them with the count (one message);
** the backward all-reduces sum(g) and sum(g (x - mean)) before dx (one
** more).
** The weight and bias gradients stay the rank's own share (local sums), so
** the data-parallel gradient sum gives the whole batch's (PyTorch's
** SyncBatchNorm does the same).
*/
#include "dist.h"
#include "nasrt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vec.h"

/* ------------------------------------------------------------- helpers */

/* sum(p[0..n)) in double, 8 independent lanes so it vectorises. */
static inline double dsum(const float *p, int64_t n) {
    double l[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) l[j] += p[i + j];
    double s = 0;
    for (; i < n; i++) s += p[i];
    return s + ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
}

/* Batch-norm sums: 16 float lanes (one vf16) over chunks of at most 2048
   values (128 per lane), each chunk added to a double.  Twice the lanes of
   the double versions and no conversions, with rounding errors of the
   order of a float's over ~128 terms.  The lanes are added in lane order,
   so a sum depends only on n and the data. */
#define BN_CHUNK 2048

static inline float lanes_sum(vf16 v) {
    float t = 0;
    for (int j = 0; j < VL; j++) t += v[j];
    return t;
}

static inline double bsum(const float *p, int64_t n) {
    double s = 0;
    for (int64_t c0 = 0; c0 < n; c0 += BN_CHUNK) {
        int64_t c1 = c0 + BN_CHUNK < n ? c0 + BN_CHUNK : n, i = c0;
        vf16 l = {0};
        for (; i + VL <= c1; i += VL) l += VLD(p + i);
        for (; i < c1; i++) s += p[i];
        s += lanes_sum(l);
    }
    return s;
}

/* sum((p - mean)^2) */
static inline double bsumsq(const float *p, int64_t n, float mean) {
    double s = 0;
    for (int64_t c0 = 0; c0 < n; c0 += BN_CHUNK) {
        int64_t c1 = c0 + BN_CHUNK < n ? c0 + BN_CHUNK : n, i = c0;
        vf16 l = {0};
        for (; i + VL <= c1; i += VL) {
            vf16 d = VLD(p + i) - mean;
            l += d * d;
        }
        for (; i < c1; i++) s += (double)(p[i] - mean) * (p[i] - mean);
        s += lanes_sum(l);
    }
    return s;
}

/* sum(g) and sum(g * (x - mean)) */
static inline void bsum_gx(const float *g, const float *x, int64_t n, float mean, double *sg,
                           double *sgx) {
    for (int64_t c0 = 0; c0 < n; c0 += BN_CHUNK) {
        int64_t c1 = c0 + BN_CHUNK < n ? c0 + BN_CHUNK : n, i = c0;
        vf16 a = {0}, b = {0};
        for (; i + VL <= c1; i += VL) {
            vf16 gv = VLD(g + i);
            a += gv;
            b += gv * (VLD(x + i) - mean);
        }
        double s1 = 0, s2 = 0;
        for (; i < c1; i++) {
            s1 += g[i];
            s2 += (double)g[i] * (x[i] - mean);
        }
        *sg += s1 + lanes_sum(a);
        *sgx += s2 + lanes_sum(b);
    }
}

/* The same sums over one channel of [N,C,S]: the S values at p + n*ld for
   every n.  Planes of 16 values or more but under BN_CHUNK are summed
   across planes in two vector accumulators per sum (two add chains
   instead of one), a plane's last S % 16 values through a masked vector,
   and flushed into the double every BN_CHUNK / S planes; the per-plane
   versions above flushed (and added their 16 lanes one by one) once per
   plane, which dominated planes of 7x7 and 8x8.  Larger planes go plane
   by plane.  A sum depends only on N, S and the data. */
static inline vf16 vlanes_below(int64_t n) { /* 1 in lanes < n, 0 after */
    vf16 m;
    for (int i = 0; i < VL; i++) m[i] = i < n ? 1.0f : 0.0f;
    return m;
}

static inline int64_t bn_flush(int64_t S) { return BN_CHUNK / S; }

/* sum(x) over the channel, or (sq) sum((x - mean)^2) */
static inline double bsum_ch(const float *p, int64_t N, int64_t ld, int64_t S, int sq,
                             float mean) {
    if (S < VL || S >= BN_CHUNK) {
        double s = 0;
        for (int64_t n = 0; n < N; n++) s += sq ? bsumsq(p + n * ld, S, mean) : bsum(p + n * ld, S);
        return s;
    }
    const int64_t q = bn_flush(S), Sv = S - S % VL, r = S % VL;
    const vf16 tm = vlanes_below(r);
    double s = 0;
    for (int64_t n0 = 0; n0 < N; n0 += q) {
        const int64_t n1 = n0 + q < N ? n0 + q : N;
        vf16 a = {0}, b = {0};
        for (int64_t n = n0; n < n1; n++) {
            const float *x = p + n * ld;
            int64_t i = 0;
            for (; i + 2 * VL <= Sv; i += 2 * VL) {
                vf16 v0 = VLD(x + i), v1 = VLD(x + i + VL);
                if (sq) v0 = (v0 - mean) * (v0 - mean), v1 = (v1 - mean) * (v1 - mean);
                a += v0;
                b += v1;
            }
            if (i < Sv) {
                vf16 v = VLD(x + i);
                if (sq) v = (v - mean) * (v - mean);
                a += v;
            }
            if (r) { /* lanes past r: zeros, masked again after the shift by mean */
                vf16 v = vload_n(x + Sv, r);
                if (sq) v = (v - mean) * tm, v = v * v;
                b += v;
            }
        }
        s += lanes_sum(a + b);
    }
    return s;
}

/* sum(g) and sum(g * (x - mean)) over one channel (g and x share ld) */
static inline void bsum_gx_ch(const float *g, const float *x, int64_t N, int64_t ld, int64_t S,
                              float mean, double *sg, double *sgx) {
    if (S < VL || S >= BN_CHUNK) {
        for (int64_t n = 0; n < N; n++) bsum_gx(g + n * ld, x + n * ld, S, mean, sg, sgx);
        return;
    }
    const int64_t q = bn_flush(S), Sv = S - S % VL, r = S % VL;
    for (int64_t n0 = 0; n0 < N; n0 += q) {
        const int64_t n1 = n0 + q < N ? n0 + q : N;
        vf16 a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0};
        for (int64_t n = n0; n < n1; n++) {
            const float *gp = g + n * ld, *xp = x + n * ld;
            int64_t i = 0;
            for (; i + 2 * VL <= Sv; i += 2 * VL) {
                vf16 g0 = VLD(gp + i), g1 = VLD(gp + i + VL);
                a0 += g0;
                a1 += g1;
                b0 += g0 * (VLD(xp + i) - mean);
                b1 += g1 * (VLD(xp + i + VL) - mean);
            }
            if (i < Sv) {
                vf16 gv = VLD(gp + i);
                a0 += gv;
                b0 += gv * (VLD(xp + i) - mean);
            }
            if (r) { /* the zero lanes of g zero the product */
                vf16 gv = vload_n(gp + Sv, r);
                a1 += gv;
                b1 += gv * (vload_n(xp + Sv, r) - mean);
            }
        }
        *sg += lanes_sum(a0 + a1);
        *sgx += lanes_sum(b0 + b1);
    }
}

/* exp(x) in float, vectorisable (Cephes expf: 2^n * p(r), |r| <= ln2/2;
   max relative error about 2e-7).  Overflow gives inf, underflow 0, NaN stays. */
static inline float fexp(float x) {
    const float hi = 88.3762626647949f, lo = -87.3365447504f;
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    xc = x != x ? 0.0f : xc; /* NaN: the result is x, but (int32_t)fn below must be defined */
    /* round to nearest via the 1.5 * 2^23 trick (floorf would not inline) */
    float fn = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - fn * 0.693359375f + fn * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    union { int32_t i; float f; } sc;
    sc.i = (int32_t)((uint32_t)((int32_t)fn + 127) << 23);
    y *= sc.f;
    y = x > hi ? INFINITY : y;
    y = x < lo ? 0.0f : y;
    return x != x ? x : y;
}

/* max(p[0..n)), -inf when n == 0 (NaNs are skipped, as in a > b ? a : b) */
static inline float fmaxrow(const float *p, int64_t n) {
    float l[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY,
                  -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) l[j] = p[i + j] > l[j] ? p[i + j] : l[j];
    float m = -INFINITY;
    for (; i < n; i++) m = p[i] > m ? p[i] : m;
    for (int j = 0; j < 8; j++) m = l[j] > m ? l[j] : m;
    return m;
}

/* sum(a * b) in double */
static inline double ddot(const float *a, const float *b, int64_t n) {
    double l[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) l[j] += (double)a[i + j] * b[i + j];
    double s = 0;
    for (; i < n; i++) s += (double)a[i] * b[i];
    return s + ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
}

/* A contiguous gradient (gout normally is; be defensive). +1 */
static nr_tensor *contig_plain(const nr_tensor *t) {
    if (nr_is_contiguous(t)) {
        nr_tensor_retain((nr_tensor *)t);
        return (nr_tensor *)t;
    }
    return nr_tensor_clone(t);
}

/* ---------------------------------------------------------- batch norm */

typedef struct {
    const float *x;
    float *y;
    int64_t N, C, S;
    int training;
    double momentum, eps;
    float *rm, *rv;
    int64_t rms, rvs;
    const float *w, *b;
    int64_t ws, bs;
    double *mean, *invstd;   /* [C] each */
    double *acc;             /* [C] work */
    float *sc, *sh;          /* [C] work: y = (x - mean) * sc + sh */
    float *mf;               /* [C] mean as float */
    double M;                /* values per channel (all ranks when synchronised) */
    int act;                 /* NR_ACT_* on the output */
} bn_fwd;

/* The activation fused into the output, on a segment just written (still
   in L1): relu max(y, 0), relu6 min(max(y, 0), 6); a NaN stays NaN, as in
   PyTorch. */
static inline void act_apply(float *restrict y, int64_t n, int act) {
    if (act == NR_ACT_RELU)
        for (int64_t i = 0; i < n; i++) y[i] = y[i] < 0.0f ? 0.0f : y[i];
    else if (act == NR_ACT_RELU6)
        for (int64_t i = 0; i < n; i++) y[i] = y[i] < 0.0f ? 0.0f : (y[i] > 6.0f ? 6.0f : y[i]);
}

/* y = (x - m) * sc + sh and the activation, in one loop (a second pass
   over planes of 49 floats cost more than the fusion saved) */
static inline void bn_apply_row(float *restrict y, const float *restrict x, int64_t n, float m,
                                float sc, float sh, int act) {
    if (act == NR_ACT_RELU) {
        for (int64_t i = 0; i < n; i++) {
            float v = (x[i] - m) * sc + sh;
            y[i] = v < 0.0f ? 0.0f : v;
        }
    } else if (act == NR_ACT_RELU6) {
        for (int64_t i = 0; i < n; i++) {
            float v = (x[i] - m) * sc + sh;
            y[i] = v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
        }
    } else {
        for (int64_t i = 0; i < n; i++) y[i] = (x[i] - m) * sc + sh;
    }
}

/* The running statistics of one channel (either may be NULL) after a batch
   of M values with this mean and sum of squared deviations ss: momentum m,
   the unbiased variance, as PyTorch. */
static void bn_running(float *rm, float *rv, double m, double mean, double ss, double M) {
    if (rm) *rm = (float)((1.0 - m) * *rm + m * mean);
    if (rv) *rv = (float)((1.0 - m) * *rv + m * (ss / (M - 1.0)));
}

/* Per-channel finish of the statistics: invstd, running stats, and the
   affine coefficients y = (x - mf) * sc + sh. */
static void bn_fwd_coef(bn_fwd *j, int64_t c, double sumsq) {
    if (j->training) {
        j->invstd[c] = 1.0 / sqrt(sumsq / j->M + j->eps);
        bn_running(j->rm ? j->rm + c * j->rms : NULL, j->rv ? j->rv + c * j->rvs : NULL,
                   j->momentum, j->mean[c], sumsq, j->M);
    } else {
        j->mean[c] = j->rm[c * j->rms];
        j->invstd[c] = 1.0 / sqrt((double)j->rv[c * j->rvs] + j->eps);
    }
    double w = j->w ? j->w[c * j->ws] : 1.0;
    j->sc[c] = (float)(w * j->invstd[c]);
    j->sh[c] = j->b ? j->b[c * j->bs] : 0.0f;
    j->mf[c] = (float)j->mean[c];
}

static void bn_fwd_task(void *ctx, int64_t c0, int64_t c1, int ith) {
    bn_fwd *j = ctx;
    const int64_t N = j->N, C = j->C, S = j->S, CS = C * S;
    const double M = (double)N * (double)S;
    const float *x = j->x;
    float *y = j->y;
    if (S >= 16) {
        /* channel by channel: its N*S values stay in cache across the passes */
        for (int64_t c = c0; c < c1; c++) {
            double sq = 0;
            if (j->training) {
                j->mean[c] = bsum_ch(x + c * S, N, CS, S, 0, 0.0f) / M;
                const float mf = (float)j->mean[c];
                sq = bsum_ch(x + c * S, N, CS, S, 1, mf);
            }
            bn_fwd_coef(j, c, sq);
            const float m = j->mf[c], sc = j->sc[c], sh = j->sh[c];
            for (int64_t n = 0; n < N; n++) {
                const float *xp = x + n * CS + c * S;
                float *yp = y + n * CS + c * S;
                bn_apply_row(yp, xp, S, m, sc, sh, j->act);
            }
        }
        return;
    }
    /* few values per (n, c): walk rows, all channels of the range at once */
    double *acc = j->acc;
    if (j->training) {
        for (int64_t c = c0; c < c1; c++) acc[c] = 0;
        for (int64_t n = 0; n < N; n++) {
            const float *xb = x + n * CS;
            if (S == 1)
                for (int64_t c = c0; c < c1; c++) acc[c] += xb[c];
            else
                for (int64_t c = c0; c < c1; c++) acc[c] += bsum(xb + c * S, S);
        }
        for (int64_t c = c0; c < c1; c++) {
            j->mean[c] = acc[c] / M;
            acc[c] = 0;
        }
        for (int64_t n = 0; n < N; n++) {
            const float *xb = x + n * CS;
            if (S == 1)
                for (int64_t c = c0; c < c1; c++) {
                    double d = xb[c] - j->mean[c];
                    acc[c] += d * d;
                }
            else
                for (int64_t c = c0; c < c1; c++) acc[c] += bsumsq(xb + c * S, S, (float)j->mean[c]);
        }
    }
    for (int64_t c = c0; c < c1; c++) bn_fwd_coef(j, c, j->training ? acc[c] : 0);
    for (int64_t n = 0; n < N; n++) {
        const float *xb = x + n * CS;
        float *yb = y + n * CS;
        if (S == 1) {
            for (int64_t c = c0; c < c1; c++) yb[c] = (xb[c] - j->mf[c]) * j->sc[c] + j->sh[c];
        } else {
            for (int64_t c = c0; c < c1; c++) {
                const float *xp = xb + c * S;
                float *yp = yb + c * S;
                const float m = j->mf[c], s = j->sc[c], h = j->sh[c];
                for (int64_t i = 0; i < S; i++) yp[i] = (xp[i] - m) * s + h;
            }
        }
        act_apply(yb + c0 * S, (c1 - c0) * S, j->act);
    }
}

typedef struct {
    const float *x, *g, *w;
    int64_t ws;
    float *gx, *gw, *gb;
    int64_t N, C, S;
    int training;
    int xhat;             /* x holds the normalised output, not the input */
    int fresh;            /* gx is uninitialised: write it, do not add */
    const double *mean, *invstd;
    double *sg, *sgx;     /* [C] work */
    float *k1, *k2, *k3, *mf; /* [C] work */
    double M;                 /* values per channel (all ranks when synchronised) */
} bn_bwd;

/* Per-channel gradient coefficients: dx = k1 * g + k2 * (x - mf) + k3, and
   the weight/bias gradients, from sg = sum(g), sgx = sum(g * (x - mean)).
   When x is the saved normalised output xhat (j->xhat), mean is 0 and the
   scale xhat = (x - mean) * invstd is already applied. */
static void bn_bwd_coef(bn_bwd *j, int64_t c, double sg, double sgx) {
    const double M = j->M;
    double is = j->invstd[c];
    double xs = j->xhat ? 1.0 : is; /* sgx * xs = sum(g * xhat) */
    if (j->gw) j->gw[c] += (float)(sgx * xs);
    if (j->gb) j->gb[c] += (float)sg;
    double w = j->w ? j->w[c * j->ws] : 1.0;
    double k1 = w * is;
    j->k1[c] = (float)k1;
    if (j->training) {
        /* dx = k1 * (g - mean(g) - xhat * mean(g * xhat)) */
        j->k2[c] = (float)(-k1 * xs * xs * sgx / M);
        j->k3[c] = (float)(-k1 * sg / M);
    } else {
        j->k2[c] = 0;
        j->k3[c] = 0;
    }
    j->mf[c] = j->xhat ? 0.0f : (float)j->mean[c];
}

static inline void bn_dx(float *dp, const float *gp, const float *xp, int64_t S, float k1,
                         float k2, float k3, float m, int fresh) {
    if (fresh) {
        if (k2 == 0 && k3 == 0)
            for (int64_t i = 0; i < S; i++) dp[i] = k1 * gp[i];
        else
            for (int64_t i = 0; i < S; i++) dp[i] = k1 * gp[i] + k2 * (xp[i] - m) + k3;
    } else if (k2 == 0 && k3 == 0) {
        for (int64_t i = 0; i < S; i++) dp[i] += k1 * gp[i];
    } else {
        for (int64_t i = 0; i < S; i++) dp[i] += k1 * gp[i] + k2 * (xp[i] - m) + k3;
    }
}

static void bn_bwd_task(void *ctx, int64_t c0, int64_t c1, int ith) {
    bn_bwd *j = ctx;
    const int64_t N = j->N, C = j->C, S = j->S, CS = C * S;
    const int need_sums = j->training || j->gw || j->gb;
    if (S >= 16) {
        for (int64_t c = c0; c < c1; c++) {
            double sg = 0, sgx = 0;
            if (need_sums)
                bsum_gx_ch(j->g + c * S, j->x + c * S, N, CS, S, (float)j->mean[c], &sg, &sgx);
            bn_bwd_coef(j, c, sg, sgx);
            if (!j->gx) continue;
            for (int64_t n = 0; n < N; n++) {
                int64_t o = n * CS + c * S;
                bn_dx(j->gx + o, j->g + o, j->x + o, S, j->k1[c], j->k2[c], j->k3[c], j->mf[c],
                      j->fresh);
            }
        }
        return;
    }
    for (int64_t c = c0; c < c1; c++) j->sg[c] = j->sgx[c] = 0;
    if (need_sums) {
        for (int64_t n = 0; n < N; n++) {
            const float *xb = j->x + n * CS, *gb = j->g + n * CS;
            if (S == 1)
                for (int64_t c = c0; c < c1; c++) {
                    double gv = gb[c];
                    j->sg[c] += gv;
                    j->sgx[c] += gv * (xb[c] - j->mean[c]);
                }
            else
                for (int64_t c = c0; c < c1; c++)
                    bsum_gx(gb + c * S, xb + c * S, S, (float)j->mean[c], &j->sg[c], &j->sgx[c]);
        }
    }
    for (int64_t c = c0; c < c1; c++) bn_bwd_coef(j, c, j->sg[c], j->sgx[c]);
    if (!j->gx) return;
    for (int64_t n = 0; n < N; n++) {
        const float *xb = j->x + n * CS, *gb = j->g + n * CS;
        float *db = j->gx + n * CS;
        if (S == 1)
            for (int64_t c = c0; c < c1; c++)
                db[c] = (j->fresh ? 0.0f : db[c]) + j->k1[c] * gb[c] +
                        j->k2[c] * (xb[c] - j->mf[c]) + j->k3[c];
        else
            for (int64_t c = c0; c < c1; c++)
                bn_dx(db + c * S, gb + c * S, xb + c * S, S, j->k1[c], j->k2[c], j->k3[c], j->mf[c],
                      j->fresh);
    }
}

/* Synchronised path, pass 1: red[c] = sum of x, red[C + c] = sum of x^2
   over the rank's batch (in double). */
static void bn_sums_task(void *ctx, int64_t c0, int64_t c1, int ith) {
    bn_fwd *j = ctx;
    const int64_t N = j->N, C = j->C, CS = j->C * j->S, S = j->S;
    for (int64_t c = c0; c < c1; c++) {
        double s = 0, q = 0;
        for (int64_t n = 0; n < N; n++) {
            const float *p = j->x + n * CS + c * S;
            s += dsum(p, S);
            q += bsumsq(p, S, 0.0f);
        }
        j->acc[c] = s;
        j->acc[C + c] = q;
    }
}

/* pass 3: coefficients from the global sums, running stats, output. */
static void bn_out_task(void *ctx, int64_t c0, int64_t c1, int ith) {
    bn_fwd *j = ctx;
    const int64_t N = j->N, CS = j->C * j->S, S = j->S;
    for (int64_t c = c0; c < c1; c++) {
        bn_fwd_coef(j, c, j->acc[c]);
        const float m = j->mf[c], sc = j->sc[c], sh = j->sh[c];
        for (int64_t n = 0; n < N; n++) {
            const float *xp = j->x + n * CS + c * S;
            float *yp = j->y + n * CS + c * S;
            bn_apply_row(yp, xp, S, m, sc, sh, j->act);
        }
    }
}

/* The synchronised forward (training): local sums of x and x^2, one
   all-reduce (with the count), then the output.  The variance is
   sum(x^2)/M - mean^2 in double (one message instead of the two a
   two-pass variance would need; batch-norm inputs are far from the
   mean^2/var ~ 1e8 where this loses float32 digits). */
static nr_status bn_fwd_sync(bn_fwd *j, int64_t grain) {
    const int64_t C = j->C;
    double *red = j->acc; /* [2C + 1] */
    nr_parallel_for(C, grain, bn_sums_task, j);
    red[2 * C] = (double)j->N * (double)j->S;
    nr_status st = nr_dist_allreduce_f64(red, 2 * C + 1);
    if (st != NR_OK) return st;
    j->M = red[2 * C];
    if (j->M <= 1)
        return nr_seterror(NR_ESHAPE, "batch_norm: expected more than 1 value per channel when "
                                      "training, got %g over all ranks", j->M);
    for (int64_t c = 0; c < C; c++) {
        double mean = red[c] / j->M;
        double ss = red[C + c] - j->M * mean * mean;
        j->mean[c] = mean;
        red[c] = ss > 0 ? ss : 0; /* the sum of squared deviations */
    }
    nr_parallel_for(C, grain, bn_out_task, j);
    return NR_OK;
}

/* Synchronised backward, pass 1: the rank's sg, sgx and its share of the
   weight and bias gradients. */
static void bn_bwd_sums_task(void *ctx, int64_t c0, int64_t c1, int ith) {
    bn_bwd *j = ctx;
    const int64_t N = j->N, CS = j->C * j->S, S = j->S;
    for (int64_t c = c0; c < c1; c++) {
        double sg = 0, sgx = 0;
        bsum_gx_ch(j->g + c * S, j->x + c * S, N, CS, S, (float)j->mean[c], &sg, &sgx);
        j->sg[c] = sg;
        j->sgx[c] = sgx;
        if (j->gw) j->gw[c] += (float)(sgx * j->invstd[c]);
        if (j->gb) j->gb[c] += (float)sg;
    }
}

/* pass 2: dx from the global sums (gw, gb are NULL here). */
static void bn_bwd_dx_task(void *ctx, int64_t c0, int64_t c1, int ith) {
    bn_bwd *j = ctx;
    const int64_t N = j->N, CS = j->C * j->S, S = j->S;
    for (int64_t c = c0; c < c1; c++) {
        bn_bwd_coef(j, c, j->sg[c], j->sgx[c]);
        for (int64_t n = 0; n < N; n++) {
            int64_t o = n * CS + c * S;
            bn_dx(j->gx + o, j->g + o, j->x + o, S, j->k1[c], j->k2[c], j->k3[c], j->mf[c], j->fresh);
        }
    }
}

static int64_t bn_grain(int64_t per_channel) {
    int64_t g = 32768 / (per_channel > 0 ? per_channel : 1);
    return g < 1 ? 1 : g;
}

/* The fused activation's backward, g where it passed its input, else 0
   (relu: y > 0; relu6: 0 < y < 6, PyTorch's hardtanh_backward). */
typedef struct {
    float *g;
    const float *y;
    int act;
} actb_job;

static void act_bwd_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    (void)ith;
    const actb_job *J = ctx;
    float *restrict g = J->g;
    const float *restrict y = J->y;
    if (J->act == NR_ACT_RELU)
        for (int64_t i = i0; i < i1; i++) g[i] = y[i] > 0.0f ? g[i] : 0.0f;
    else
        for (int64_t i = i0; i < i1; i++) g[i] = y[i] > 0.0f && y[i] < 6.0f ? g[i] : 0.0f;
}

static nr_status bn_backward(nr_node *nd, const nr_tensor *gout, nr_tensor *const *gin) {
    const nr_tensor *x = nd->in[0], *w = nd->in[1];
    int64_t N = x->ne[0], C = x->ne[1], S = 1;
    for (int i = 2; i < x->ndim; i++) S *= x->ne[i];
    const int act = (int)nd->p.i[2];
    /* with an activation g is masked in place: a fresh copy, or the node's
       own output gradient (nothing else reads it after this backward) */
    nr_tensor *g = act && !nr_is_contiguous(gout) ? nr_tensor_clone(gout) : contig_plain(gout);
    if (!g) return NR_ENOMEM;
    if (act) {
        actb_job A = {nr_data(g), nr_data(nd->saved[1]), act};
        nr_parallel_for(nr_numel(g), 16384, act_bwd_task, &A);
    }
    char *work = malloc((size_t)C * (2 * sizeof(double) + 4 * sizeof(float)) + 64);
    if (!work) {
        nr_tensor_release(g);
        return nr_seterror(NR_ENOMEM, "batch_norm backward: out of memory");
    }
    const double *stats = nd->extra;
    const int xhat = nd->saved[0] != NULL;
    if (xhat) x = nd->saved[0];
    bn_bwd j = {
        .x = x->storage ? nr_data(x) : NULL, .g = nr_data(g),
        .w = w ? nr_data(w) : NULL, .ws = w ? w->st[0] : 0,
        .gx = gin[0] ? nr_data(gin[0]) : NULL,
        .gw = gin[1] ? nr_data(gin[1]) : NULL,
        .gb = gin[2] ? nr_data(gin[2]) : NULL,
        .N = N, .C = C, .S = S, .training = (int)nd->p.i[0], .xhat = xhat,
        .fresh = (int)(nd->fresh & 1),
        .mean = xhat ? stats + 2 * C : stats, .invstd = stats + C, /* xhat: zero means */
        .sg = (double *)work, .sgx = (double *)work + C,
    };
    float *fw = (float *)((double *)work + 2 * C);
    j.k1 = fw;
    j.k2 = fw + C;
    j.k3 = fw + 2 * C;
    j.mf = fw + 3 * C;
    j.M = (double)N * (double)S;
    nr_status st = NR_OK;
    if (nd->p.i[1]) { /* synchronised: every rank's sums before dx */
        j.M = stats[2 * C];
        nr_parallel_for(C, bn_grain(N * S), bn_bwd_sums_task, &j);
        if (j.gx && (st = nr_dist_allreduce_f64(j.sg, 2 * C)) == NR_OK) {
            j.gw = j.gb = NULL;
            nr_parallel_for(C, bn_grain(N * S), bn_bwd_dx_task, &j);
        }
    } else {
        nr_parallel_for(C, bn_grain(N * S), bn_bwd_task, &j);
    }
    free(work);
    nr_tensor_release(g);
    return st;
}

static nr_status bn_check_vec(const char *what, const nr_tensor *v, const nr_tensor *x) {
    if (!v) return NR_OK;
    if (v->ndim != 1 || v->ne[0] != x->ne[1]) {
        char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
        return nr_seterror(NR_ESHAPE, "batch_norm: %s has shape %s but input %s has %lld channels",
                           what, nr_shape_str(v, b1), nr_shape_str(x, b2), (long long)x->ne[1]);
    }
    return NR_OK;
}

nr_status nr_batch_norm(nr_tensor **out, const nr_tensor *x,
                        nr_tensor *running_mean, nr_tensor *running_var,
                        const nr_tensor *weight, const nr_tensor *bias,
                        const nr_bn_params *p) {
    char b1[NR_SHAPEBUF];
    *out = NULL;
    nr_bn_params defaults = {1, 0.1, 1e-5, NR_ACT_NONE};
    if (!p) p = &defaults;
    if (x->ndim < 2)
        return nr_seterror(NR_ESHAPE, "batch_norm: input %s needs at least 2 dims [N,C,...]",
                           nr_shape_str(x, b1));
    nr_status st;
    if ((st = bn_check_vec("running_mean", running_mean, x)) != NR_OK) return st;
    if ((st = bn_check_vec("running_var", running_var, x)) != NR_OK) return st;
    if ((st = bn_check_vec("weight", weight, x)) != NR_OK) return st;
    if ((st = bn_check_vec("bias", bias, x)) != NR_OK) return st;
    if (!(p->eps >= 0))
        return nr_seterror(NR_EUSAGE, "batch_norm: eps must be >= 0, got %g", p->eps);
    if (p->act < NR_ACT_NONE || p->act > NR_ACT_RELU6)
        return nr_seterror(NR_EUSAGE, "batch_norm: unknown activation %d", p->act);
    int64_t N = x->ne[0], C = x->ne[1], S = 1;
    for (int i = 2; i < x->ndim; i++) S *= x->ne[i];
    const int sync = p->training && nr_dist_sync_bn();
    if (p->training && !sync) {
        if (N * S <= 1)
            return nr_seterror(NR_ESHAPE,
                               "batch_norm: expected more than 1 value per channel when "
                               "training, got input %s", nr_shape_str(x, b1));
    } else if (!p->training && (!running_mean || !running_var)) {
        return nr_seterror(NR_EUSAGE,
                           "batch_norm: eval mode (training=false) needs running_mean and "
                           "running_var");
    }
    nr_tensor *xc = nr_contig(x);
    if (!xc) return NR_ENOMEM;
    nr_tensor *y = nr_tensor_empty(x->ndim, x->ne);
    /* mean[C], invstd[C], work[C] (the global count at [2C] afterwards);
       synchronised, the work is [2C + 1] */
    double *stats = malloc((size_t)(C > 0 ? C : 1) * (sync ? 4 : 3) * sizeof(double) + 8);
    float *fw = malloc((size_t)(C > 0 ? C : 1) * 3 * sizeof(float));
    if (!y || !stats || !fw) {
        nr_tensor_release(xc);
        nr_tensor_release(y);
        free(stats);
        free(fw);
        return nr_seterror(NR_ENOMEM, "batch_norm: out of memory");
    }
    bn_fwd j = {
        .x = nr_data(xc), .y = nr_data(y), .N = N, .C = C, .S = S,
        .training = p->training != 0, .momentum = p->momentum, .eps = p->eps,
        .rm = running_mean ? nr_data(running_mean) : NULL,
        .rv = running_var ? nr_data(running_var) : NULL,
        .rms = running_mean ? running_mean->st[0] : 0,
        .rvs = running_var ? running_var->st[0] : 0,
        .w = weight ? nr_data(weight) : NULL, .ws = weight ? weight->st[0] : 0,
        .b = bias ? nr_data(bias) : NULL, .bs = bias ? bias->st[0] : 0,
        .mean = stats, .invstd = stats + C, .acc = stats + 2 * C,
        .sc = fw, .sh = fw + C, .mf = fw + 2 * C, .M = (double)N * (double)S,
        .act = p->act,
    };
    if (sync) {
        nr_status st = bn_fwd_sync(&j, bn_grain(N * S));
        if (st != NR_OK) {
            nr_tensor_release(xc);
            nr_tensor_release(y);
            free(stats);
            free(fw);
            return st;
        }
        stats[2 * C] = j.M;
    } else {
        nr_parallel_for(C, bn_grain(N * S), bn_fwd_task, &j);
    }
    free(fw);
    nr_tensor *in[3] = {xc, (nr_tensor *)weight, (nr_tensor *)bias};
    nr_node *nd = nr_record(y, "batch_norm", bn_backward, 3, in);
    if (nd) {
        nd->writes = 1; /* dx */
        nd->p.i[0] = j.training;
        nd->p.i[1] = sync;
        nd->p.i[2] = p->act;
        if (p->act) { /* the activation's backward reads the output */
            nr_tensor *al = nr_alias(y);
            if (al) {
                nr_save(nd, 1, al);
                nr_tensor_release(al);
            }
        }
        nd->extra = stats; /* mean[C], invstd[C], then the global count at
                              [2C] (synchronised) or zeros[C] (xhat) */
        if (!weight && !bias && j.training && !sync && !p->act) {
            /* affine=False (every BN inside a DARTS op): the output is xhat,
               which is all backward needs, and the input can die now (the
               conv or pool before it no longer lives until backward).  Not
               when synchronised: stats[2C] holds the global count there. */
            for (int64_t c = 0; c < C; c++) stats[2 * C + c] = 0;
            nr_tensor *al = nr_alias(y);
            if (al) {
                nr_save(nd, 0, al);
                nr_tensor_release(al);
                nr_forget_input(nd, 0);
            }
        }
    } else {
        free(stats);
    }
    nr_tensor_release(xc);
    *out = y;
    return NR_OK;
}

/* ------------------------------------------- batch norm + weighted sum */

/* The DARTS mixed op with the batch norm (affine=False, training) that
   ends most of its ops folded in: out = sum_k w[k] * b_k(x_k), b_k the
   normalisation of x_k by its batch statistics for the k in the mask, the
   identity for the others (skip_connect).  Apart, each BN writes its
   output and the weighted sum reads it back, and in backward the sum
   writes w[k] * g for every k, which each BN backward reads again; here
   the normalised values are formed on the fly from x_k and the
   per-channel statistics, and backward reads g and the x_k directly. */
typedef struct {
    int n;
    unsigned bn;
    const float *x[NR_MAXIN];
    const float *w, *g;
    float *o;
    float *gx[NR_MAXIN];
    unsigned fresh;
    int64_t N, C, S;
    double M, momentum, eps;
    double *mean, *invstd; /* [n][C] (rows of non-BN inputs unused) */
    float *rm[NR_MAXIN], *rv[NR_MAXIN];
    int64_t rms[NR_MAXIN], rvs[NR_MAXIN];
    double *part;          /* backward: [C][n] per-channel dots for dw */
    /* synchronised BN (data-parallel): phase 1 sums into red, phase 2
       uses red's global sums; phase 0 does both on this rank's data */
    int phase;
    double *red;           /* fwd: [n][C][2] sum x, sum x^2; bwd: [C] sg, [n][C] sgx */
} bws_job;

/* input k, channel c: mean, invstd and running statistics from the mean
   and the sum of squared deviations ss of its j->M values */
static void bws_finish(bws_job *j, int k, int64_t c, double mean, double ss) {
    j->mean[k * j->C + c] = mean;
    j->invstd[k * j->C + c] = 1.0 / sqrt(ss / j->M + j->eps);
    bn_running(j->rm[k] ? j->rm[k] + c * j->rms[k] : NULL,
               j->rv[k] ? j->rv[k] + c * j->rvs[k] : NULL, j->momentum, mean, ss, j->M);
}

static void bws_stats_task(void *ctx, int64_t c0, int64_t c1, int ith) {
    (void)ith;
    bws_job *j = ctx;
    const int64_t N = j->N, C = j->C, S = j->S, CS = C * S;
    for (int k = 0; k < j->n; k++) {
        if (!((j->bn >> k) & 1)) continue;
        const float *x = j->x[k];
        for (int64_t c = c0; c < c1; c++) {
            const double mean = bsum_ch(x + c * S, N, CS, S, 0, 0.0f) / j->M;
            bws_finish(j, k, c, mean, bsum_ch(x + c * S, N, CS, S, 1, (float)mean));
        }
    }
}

/* synchronised forward, pass 1: this rank's sum x and sum x^2 per BN
   input and channel (as bn_sums_task) */
static void bws_sums_task(void *ctx, int64_t c0, int64_t c1, int ith) {
    (void)ith;
    bws_job *j = ctx;
    const int64_t N = j->N, C = j->C, S = j->S, CS = C * S;
    for (int k = 0; k < j->n; k++) {
        if (!((j->bn >> k) & 1)) continue;
        for (int64_t c = c0; c < c1; c++) {
            double s = 0, q = 0;
            for (int64_t n = 0; n < N; n++) {
                const float *p = j->x[k] + n * CS + c * S;
                s += dsum(p, S);
                q += bsumsq(p, S, 0.0f);
            }
            j->red[2 * (k * C + c)] = s;
            j->red[2 * (k * C + c) + 1] = q;
        }
    }
}

/* the statistics from the global sums (all ranks), as bn_fwd_sync */
static nr_status bws_sync_stats(bws_job *j) {
    const int64_t C = j->C, nC = (int64_t)j->n * C;
    j->red[2 * nC] = (double)j->N * (double)j->S;
    nr_status st = nr_dist_allreduce_f64(j->red, 2 * nC + 1);
    if (st != NR_OK) return st;
    j->M = j->red[2 * nC];
    if (j->M <= 1)
        return nr_seterror(NR_ESHAPE, "bn_weighted_sum: expected more than 1 value per channel "
                                      "when training, got %g over all ranks", j->M);
    for (int k = 0; k < j->n; k++) {
        if (!((j->bn >> k) & 1)) continue;
        for (int64_t c = 0; c < C; c++) {
            double mean = j->red[2 * (k * C + c)] / j->M;
            double ss = j->red[2 * (k * C + c) + 1] - j->M * mean * mean;
            bws_finish(j, k, c, mean, ss > 0 ? ss : 0);
        }
    }
    return NR_OK;
}

/* out over (n, c) planes, terms in input order: the first nonzero weight
   writes, the others add (weighted_sum's order) */
static void bws_out_task(void *ctx, int64_t p0, int64_t p1, int ith) {
    (void)ith;
    bws_job *j = ctx;
    const int64_t C = j->C, S = j->S;
    for (int64_t p = p0; p < p1; p++) {
        const int64_t c = p % C;
        float *restrict o = j->o + p * S;
        int first = 1;
        for (int k = 0; k < j->n; k++) {
            const float wk = j->w[k];
            if (wk == 0.0f) continue;
            const float *restrict x = j->x[k] + p * S;
            if ((j->bn >> k) & 1) {
                const float m = (float)j->mean[k * C + c], sc = (float)j->invstd[k * C + c];
                if (first)
                    for (int64_t i = 0; i < S; i++) o[i] = wk * ((x[i] - m) * sc);
                else
                    for (int64_t i = 0; i < S; i++) o[i] += wk * ((x[i] - m) * sc);
            } else if (first) {
                for (int64_t i = 0; i < S; i++) o[i] = wk * x[i];
            } else {
                for (int64_t i = 0; i < S; i++) o[i] += wk * x[i];
            }
            first = 0;
        }
        if (first) memset(o, 0, (size_t)S * sizeof(float));
    }
}

/* Per channel: the dots for dw and each input's dx.  For a normalised
   input, with xh = (x - mean) * is the BN backward of w_k * g is
   dx = w_k * is * (g - mean(g) - xh * mean(g * xh)). */
static void bws_bwd_task(void *ctx, int64_t c0, int64_t c1, int ith) {
    (void)ith;
    bws_job *j = ctx;
    const int64_t N = j->N, C = j->C, S = j->S, CS = C * S;
    const double M = j->M;
    double *red = j->red; /* phases 1, 2: [C] sg then [n][C] sgx */
    for (int64_t c = c0; c < c1; c++) {
        double sg = 0;
        if (j->phase == 2) {
            sg = red[c];
        } else {
            sg = bsum_ch(j->g + c * S, N, CS, S, 0, 0.0f);
            if (j->phase == 1) red[c] = sg;
        }
        for (int k = 0; k < j->n; k++) {
            const int bnk = (j->bn >> k) & 1, fresh = (j->fresh >> k) & 1;
            const float wk = j->w[k];
            const float *x = j->x[k];
            float *gx = j->gx[k];
            if (bnk) {
                const float mf = (float)j->mean[k * C + c];
                const double is = j->invstd[k * C + c];
                double sgx = 0, dummy = 0;
                if (j->phase == 2) {
                    sgx = red[C + k * C + c];
                } else {
                    bsum_gx_ch(j->g + c * S, x + c * S, N, CS, S, mf, &dummy, &sgx);
                    if (j->part) j->part[c * j->n + k] = sgx * is;
                    if (j->phase == 1) {
                        red[C + k * C + c] = sgx;
                        continue;
                    }
                }
                if (!gx) continue;
                const double k1 = wk * is;
                const float f1 = (float)k1, f2 = (float)(-k1 * is * is * sgx / M),
                            f3 = (float)(-k1 * sg / M);
                for (int64_t n = 0; n < N; n++) {
                    int64_t o = n * CS + c * S;
                    bn_dx(gx + o, j->g + o, x + o, S, f1, f2, f3, mf, fresh);
                }
            } else {
                if (j->part && j->phase != 2) {
                    /* the float-lane channel dot (the double one, converting
                       every product, was a tenth of this task) */
                    double d = 0, dummy = 0;
                    bsum_gx_ch(j->g + c * S, x + c * S, N, CS, S, 0.0f, &dummy, &d);
                    j->part[c * j->n + k] = d;
                }
                if (!gx || j->phase == 1) continue;
                for (int64_t n = 0; n < N; n++) {
                    int64_t o = n * CS + c * S;
                    bn_dx(gx + o, j->g + o, NULL, S, wk, 0.0f, 0.0f, 0.0f, fresh);
                }
            }
        }
    }
}

static nr_status bws_backward(nr_node *nd, const nr_tensor *gout, nr_tensor *const *gin) {
    const int n = nd->n_in - 1;
    const nr_tensor *x0 = nd->in[0];
    nr_tensor *g = contig_plain(gout);
    nr_tensor *wt = g ? nr_contig(nd->in[n]) : NULL;
    if (!wt) {
        nr_tensor_release(g);
        return NR_ENOMEM;
    }
    bws_job j = {.n = n, .bn = (unsigned)nd->p.i[0], .w = nr_data(wt), .g = nr_data(g),
                 .fresh = nd->fresh, .N = x0->ne[0], .C = x0->ne[1]};
    j.S = nr_numel(x0) / (j.N * j.C > 0 ? j.N * j.C : 1);
    j.M = (double)j.N * (double)j.S;
    j.mean = nd->extra;
    j.invstd = j.mean + (size_t)n * j.C;
    const int sync = (int)nd->p.i[1];
    if (sync) j.M = j.mean[2 * (size_t)n * j.C]; /* the global count */
    for (int k = 0; k < n; k++) {
        j.x[k] = nr_data(nd->in[k]);
        j.gx[k] = gin[k] ? nr_data(gin[k]) : NULL;
    }
    nr_status st = NR_OK;
    if (gin[n]) {
        j.part = malloc((size_t)(j.C * n + 1) * sizeof(double));
        if (!j.part) st = nr_seterror(NR_ENOMEM, "bn_weighted_sum backward: out of memory");
    }
    if (st == NR_OK && sync) { /* every rank's sums before dx */
        j.red = malloc((size_t)(j.C * (n + 1)) * sizeof(double));
        if (!j.red) st = nr_seterror(NR_ENOMEM, "bn_weighted_sum backward: out of memory");
        if (st == NR_OK) {
            memset(j.red, 0, (size_t)(j.C * (n + 1)) * sizeof(double));
            j.phase = 1;
            nr_parallel_for(j.C, bn_grain(j.N * j.S * n), bws_bwd_task, &j);
            st = nr_dist_allreduce_f64(j.red, j.C * (n + 1));
            j.phase = 2;
        }
    }
    if (st == NR_OK) {
        nr_parallel_for(j.C, bn_grain(j.N * j.S * n), bws_bwd_task, &j);
        if (j.part) {
            float *gw = nr_data(gin[n]);
            for (int k = 0; k < n; k++) {
                double s = 0;
                for (int64_t c = 0; c < j.C; c++) s += j.part[c * n + k];
                gw[k] += (float)s;
            }
        }
    }
    free(j.part);
    free(j.red);
    nr_tensor_release(wt);
    nr_tensor_release(g);
    return st;
}

nr_status nr_bn_weighted_sum(nr_tensor **out, int n, nr_tensor *const *xs, const nr_tensor *w,
                             unsigned bn_mask, nr_tensor *const *running_mean,
                             nr_tensor *const *running_var, double momentum, double eps) {
    char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
    *out = NULL;
    if (n < 1 || n > NR_MAXIN - 1)
        return nr_seterror(NR_EUSAGE, "bn_weighted_sum: %d inputs (1..%d)", n, NR_MAXIN - 1);
    for (int k = 0; k < n; k++) {
        if (!xs[k]) return nr_seterror(NR_EUSAGE, "bn_weighted_sum: input %d is missing", k + 1);
        if (!nr_same_shape(xs[k], xs[0]))
            return nr_seterror(NR_ESHAPE, "bn_weighted_sum: input %d has shape %s, input 1 has %s",
                               k + 1, nr_shape_str(xs[k], b1), nr_shape_str(xs[0], b2));
    }
    if (xs[0]->ndim < 2)
        return nr_seterror(NR_ESHAPE, "bn_weighted_sum: inputs %s need at least 2 dims [N,C,...]",
                           nr_shape_str(xs[0], b1));
    if (!w || w->ndim != 1 || w->ne[0] != n)
        return nr_seterror(NR_ESHAPE, "bn_weighted_sum: weights %s, expected [%d] for %d inputs",
                           w ? nr_shape_str(w, b1) : "missing", n, n);
    if (!(eps >= 0)) return nr_seterror(NR_EUSAGE, "bn_weighted_sum: eps must be >= 0, got %g", eps);
    const int64_t N = xs[0]->ne[0], C = xs[0]->ne[1];
    const int64_t S = nr_numel(xs[0]) / (N * C > 0 ? N * C : 1);
    for (int k = 0; k < n; k++) {
        if (!((bn_mask >> k) & 1)) continue;
        nr_tensor *const rs[2] = {running_mean ? running_mean[k] : NULL,
                                  running_var ? running_var[k] : NULL};
        for (int r = 0; r < 2; r++)
            if (rs[r] && (rs[r]->ndim != 1 || rs[r]->ne[0] != C))
                return nr_seterror(NR_ESHAPE, "bn_weighted_sum: %s %d has shape %s but the inputs "
                                   "%s have %lld channels", r ? "running_var" : "running_mean",
                                   k + 1, nr_shape_str(rs[r], b1), nr_shape_str(xs[0], b2),
                                   (long long)C);
    }
    if (bn_mask && N * S <= 1 && !nr_dist_sync_bn())
        return nr_seterror(NR_ESHAPE, "bn_weighted_sum: expected more than 1 value per channel "
                                      "when training, got input %s", nr_shape_str(xs[0], b1));
    nr_tensor *cx[NR_MAXIN] = {0};
    for (int k = 0; k < n; k++)
        if (!(cx[k] = nr_contig(xs[k]))) goto oom;
    nr_tensor *wt = nr_contig(w);
    nr_tensor *o = wt ? nr_tensor_empty(xs[0]->ndim, xs[0]->ne) : NULL;
    const int sync = bn_mask && nr_dist_sync_bn();
    /* mean, invstd [n][C] each, then (synchronised) the global count and
       room for the [n][C][2] sums */
    const size_t nC = (size_t)n * (C > 0 ? C : 1);
    double *stats = o ? malloc((2 * nC + (sync ? 2 * nC + 1 : 0)) * sizeof(double)) : NULL;
    if (!stats) {
        nr_tensor_release(o);
        nr_tensor_release(wt);
        goto oom;
    }
    bws_job j = {.n = n, .bn = bn_mask, .w = nr_data(wt), .o = nr_data(o), .N = N, .C = C,
                 .S = S, .M = (double)N * (double)S, .momentum = momentum, .eps = eps,
                 .mean = stats, .invstd = stats + (size_t)n * C};
    for (int k = 0; k < n; k++) {
        j.x[k] = nr_data(cx[k]);
        nr_tensor *rm = running_mean ? running_mean[k] : NULL, *rv = running_var ? running_var[k] : NULL;
        j.rm[k] = ((bn_mask >> k) & 1) && rm ? nr_data(rm) : NULL;
        j.rv[k] = ((bn_mask >> k) & 1) && rv ? nr_data(rv) : NULL;
        j.rms[k] = rm ? rm->st[0] : 0;
        j.rvs[k] = rv ? rv->st[0] : 0;
    }
    if (sync) {
        j.red = stats + 2 * nC;
        memset(j.red, 0, (2 * nC + 1) * sizeof(double));
        nr_parallel_for(C, bn_grain(N * S), bws_sums_task, &j);
        nr_status st = bws_sync_stats(&j);
        if (st != NR_OK) {
            free(stats);
            nr_tensor_release(o);
            nr_tensor_release(wt);
            for (int k = 0; k < n; k++) nr_tensor_release(cx[k]);
            return st;
        }
        stats[2 * nC] = j.M; /* backward reads the global count here */
    } else if (bn_mask) {
        nr_parallel_for(C, bn_grain(N * S), bws_stats_task, &j);
    }
    nr_parallel_for(N * C, S >= 4096 ? 1 : 4096 / (S + 1) + 1, bws_out_task, &j);
    nr_tensor *ins[NR_MAXIN];
    for (int k = 0; k < n; k++) ins[k] = cx[k];
    ins[n] = (nr_tensor *)w;
    nr_node *nd = nr_record(o, "bn_weighted_sum", bws_backward, n + 1, ins);
    if (nd) {
        nd->writes = (1u << n) - 1; /* the inputs' gradients, not the weights' */
        nd->p.i[0] = bn_mask;
        nd->p.i[1] = sync;
        nd->extra = stats;
    } else {
        free(stats);
    }
    for (int k = 0; k < n; k++) nr_tensor_release(cx[k]);
    nr_tensor_release(wt);
    *out = o;
    return NR_OK;
oom:
    for (int k = 0; k < n; k++) nr_tensor_release(cx[k]);
    return nr_seterror(NR_ENOMEM, "bn_weighted_sum: out of memory");
}

/* --------------------------------------------------- softmax, log_softmax */

#define SM_IB 256 /* inner columns per task when the dim is not the last */

typedef struct {
    const float *x, *g;
    float *y;
    int64_t O, K, I, nblk;
    int logmode;
} sm_job;

/* Forward over rows (dim is the last one, or I == 1). */
static void sm_rows_task(void *ctx, int64_t r0, int64_t r1, int ith) {
    sm_job *j = ctx;
    const int64_t K = j->K;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = j->x + r * K;
        float *y = j->y + r * K;
        const float mx = fmaxrow(x, K);
        for (int64_t k = 0; k < K; k++) y[k] = fexp(x[k] - mx);
        double s = dsum(y, K);
        if (j->logmode) {
            const float ls = (float)log(s);
            for (int64_t k = 0; k < K; k++) y[k] = (x[k] - mx) - ls;
        } else {
            const float inv = (float)(1.0 / s);
            for (int64_t k = 0; k < K; k++) y[k] *= inv;
        }
    }
}

/* Forward over blocks of inner columns (dim is not the last one). */
static void sm_cols_task(void *ctx, int64_t t0, int64_t t1, int ith) {
    sm_job *j = ctx;
    const int64_t K = j->K, I = j->I;
    float mx[SM_IB];
    double s[SM_IB];
    for (int64_t t = t0; t < t1; t++) {
        int64_t o = t / j->nblk, i0 = (t % j->nblk) * SM_IB;
        int64_t nb = I - i0 < SM_IB ? I - i0 : SM_IB;
        const float *x = j->x + o * K * I + i0;
        float *y = j->y + o * K * I + i0;
        for (int64_t i = 0; i < nb; i++) {
            mx[i] = -INFINITY;
            s[i] = 0;
        }
        for (int64_t k = 0; k < K; k++)
            for (int64_t i = 0; i < nb; i++) mx[i] = x[k * I + i] > mx[i] ? x[k * I + i] : mx[i];
        if (j->logmode) {
            for (int64_t k = 0; k < K; k++)
                for (int64_t i = 0; i < nb; i++) s[i] += fexp(x[k * I + i] - mx[i]);
            float ls[SM_IB];
            for (int64_t i = 0; i < nb; i++) ls[i] = (float)log(s[i]);
            for (int64_t k = 0; k < K; k++)
                for (int64_t i = 0; i < nb; i++) y[k * I + i] = (x[k * I + i] - mx[i]) - ls[i];
        } else {
            for (int64_t k = 0; k < K; k++)
                for (int64_t i = 0; i < nb; i++) {
                    float e = fexp(x[k * I + i] - mx[i]);
                    y[k * I + i] = e;
                    s[i] += e;
                }
            for (int64_t i = 0; i < nb; i++) mx[i] = (float)(1.0 / s[i]);
            for (int64_t k = 0; k < K; k++)
                for (int64_t i = 0; i < nb; i++) y[k * I + i] *= mx[i];
        }
    }
}

/* Backward: x here is the saved output y, y is the input gradient (+=).
   softmax: dx = y * (g - sum(g * y));  log_softmax: dx = g - exp(y) * sum(g) */
static void sm_bwd_rows_task(void *ctx, int64_t r0, int64_t r1, int ith) {
    sm_job *j = ctx;
    const int64_t K = j->K;
    for (int64_t r = r0; r < r1; r++) {
        const float *y = j->x + r * K, *g = j->g + r * K;
        float *d = j->y + r * K;
        if (j->logmode) {
            const float sf = (float)dsum(g, K);
            for (int64_t k = 0; k < K; k++) d[k] += g[k] - fexp(y[k]) * sf;
        } else {
            const float sf = (float)ddot(g, y, K);
            for (int64_t k = 0; k < K; k++) d[k] += y[k] * (g[k] - sf);
        }
    }
}

static void sm_bwd_cols_task(void *ctx, int64_t t0, int64_t t1, int ith) {
    sm_job *j = ctx;
    const int64_t K = j->K, I = j->I;
    double s[SM_IB];
    float sf[SM_IB];
    for (int64_t t = t0; t < t1; t++) {
        int64_t o = t / j->nblk, i0 = (t % j->nblk) * SM_IB;
        int64_t nb = I - i0 < SM_IB ? I - i0 : SM_IB;
        const float *y = j->x + o * K * I + i0, *g = j->g + o * K * I + i0;
        float *d = j->y + o * K * I + i0;
        for (int64_t i = 0; i < nb; i++) s[i] = 0;
        if (j->logmode) {
            for (int64_t k = 0; k < K; k++)
                for (int64_t i = 0; i < nb; i++) s[i] += g[k * I + i];
            for (int64_t i = 0; i < nb; i++) sf[i] = (float)s[i];
            for (int64_t k = 0; k < K; k++)
                for (int64_t i = 0; i < nb; i++)
                    d[k * I + i] += g[k * I + i] - fexp(y[k * I + i]) * sf[i];
        } else {
            for (int64_t k = 0; k < K; k++)
                for (int64_t i = 0; i < nb; i++) s[i] += (double)g[k * I + i] * y[k * I + i];
            for (int64_t i = 0; i < nb; i++) sf[i] = (float)s[i];
            for (int64_t k = 0; k < K; k++)
                for (int64_t i = 0; i < nb; i++)
                    d[k * I + i] += y[k * I + i] * (g[k * I + i] - sf[i]);
        }
    }
}

static void sm_split(const nr_tensor *t, int dim, int64_t *O, int64_t *K, int64_t *I) {
    *O = 1;
    *K = 1;
    *I = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (i < dim) *O *= t->ne[i];
        else if (i == dim) *K = t->ne[i];
        else *I *= t->ne[i];
    }
}

static void sm_run(sm_job *j, int bwd) {
    int64_t K = j->K > 0 ? j->K : 1;
    if (j->I == 1) {
        int64_t grain = 16384 / K;
        nr_parallel_for(j->O, grain < 1 ? 1 : grain, bwd ? sm_bwd_rows_task : sm_rows_task, j);
    } else {
        j->nblk = (j->I + SM_IB - 1) / SM_IB;
        int64_t per = K * (j->I < SM_IB ? j->I : SM_IB);
        int64_t grain = 16384 / per;
        nr_parallel_for(j->O * j->nblk, grain < 1 ? 1 : grain,
                        bwd ? sm_bwd_cols_task : sm_cols_task, j);
    }
}

static nr_status sm_backward(nr_node *nd, const nr_tensor *gout, nr_tensor *const *gin) {
    if (!gin[0]) return NR_OK;
    nr_tensor *g = contig_plain(gout);
    if (!g) return NR_ENOMEM;
    const nr_tensor *y = nd->saved[0];
    sm_job j = {.x = nr_data(y), .g = nr_data(g), .y = nr_data(gin[0]),
                .logmode = (int)nd->p.i[1]};
    sm_split(y, (int)nd->p.i[0], &j.O, &j.K, &j.I);
    sm_run(&j, 1);
    nr_tensor_release(g);
    return NR_OK;
}

static nr_status softmax_impl(nr_tensor **out, const nr_tensor *x, int dim, int logmode) {
    const char *fn = logmode ? "log_softmax" : "softmax";
    *out = NULL;
    int nd = x->ndim;
    if (dim < 0 || dim >= (nd > 0 ? nd : 1)) {
        char b1[NR_SHAPEBUF];
        return nr_seterror(NR_EUSAGE, "%s: dim %d out of range for input %s", fn, dim,
                           nr_shape_str(x, b1));
    }
    nr_tensor *xc = nr_contig(x);
    if (!xc) return NR_ENOMEM;
    nr_tensor *y = nr_tensor_empty(x->ndim, x->ne);
    if (!y) {
        nr_tensor_release(xc);
        return NR_ENOMEM;
    }
    sm_job j = {.x = nr_data(xc), .y = nr_data(y), .logmode = logmode};
    sm_split(xc, dim, &j.O, &j.K, &j.I);
    if (nr_numel(y) > 0) sm_run(&j, 0);
    nr_node *n = nr_record(y, fn, sm_backward, 1, &xc);
    if (n) {
        n->p.i[0] = dim;
        n->p.i[1] = logmode;
        nr_tensor *al = nr_alias(y);
        if (!al) {
            nr_tensor_release(xc);
            nr_tensor_release(y);
            return NR_ENOMEM;
        }
        nr_save(n, 0, al);
        nr_tensor_release(al);
    }
    nr_tensor_release(xc);
    *out = y;
    return NR_OK;
}

nr_status nr_softmax(nr_tensor **out, const nr_tensor *x, int dim) {
    return softmax_impl(out, x, dim, 0);
}

nr_status nr_log_softmax(nr_tensor **out, const nr_tensor *x, int dim) {
    return softmax_impl(out, x, dim, 1);
}

/* ------------------------------------------------------- cross entropy */

typedef struct {
    const float *z, *g;
    float *dz;
    const int64_t *t;
    double *lse, *loss;
    int64_t N, K;
    double ls;
    float scale;
} ce_job;

static void ce_fwd_task(void *ctx, int64_t r0, int64_t r1, int ith) {
    ce_job *j = ctx;
    const int64_t K = j->K;
    float *e = nr_scratch(ith, (size_t)K);
    for (int64_t r = r0; r < r1; r++) {
        const float *z = j->z + r * K;
        const float mx = fmaxrow(z, K);
        double s;
        if (e) {
            for (int64_t k = 0; k < K; k++) e[k] = fexp(z[k] - mx);
            s = dsum(e, K);
        } else { /* no scratch memory: the slow way */
            s = 0;
            for (int64_t k = 0; k < K; k++) s += fexp(z[k] - mx);
        }
        double lse = mx + log(s);
        j->lse[r] = lse;
        double nll = lse - z[j->t[r]];
        double smooth = lse - dsum(z, K) / (double)K;
        j->loss[r] = (1.0 - j->ls) * nll + j->ls * smooth;
    }
}

/* dz += scale * (softmax(z) - (1 - ls) * onehot(t) - ls / K) */
static void ce_bwd_task(void *ctx, int64_t r0, int64_t r1, int ith) {
    ce_job *j = ctx;
    const int64_t K = j->K;
    const float sc = j->scale;
    const float off = (float)(j->ls / (double)K);
    const float hit = (float)(1.0 - j->ls);
    for (int64_t r = r0; r < r1; r++) {
        const float *z = j->z + r * K;
        float *d = j->dz + r * K;
        const float lse = (float)j->lse[r];
        for (int64_t k = 0; k < K; k++) d[k] += sc * (fexp(z[k] - lse) - off);
        d[j->t[r]] -= sc * hit;
    }
}

static nr_status ce_backward(nr_node *nd, const nr_tensor *gout, nr_tensor *const *gin) {
    if (!gin[0]) return NR_OK;
    const nr_tensor *z = nd->in[0];
    int64_t N = z->ne[0], K = z->ne[1];
    if (N == 0) return NR_OK;
    ce_job j = {.z = nr_data(z), .dz = nr_data(gin[0]), .N = N, .K = K,
                .ls = nd->p.f[0]};
    j.t = nd->extra;
    j.lse = (double *)((int64_t *)nd->extra + N);
    j.scale = (float)((double)nr_data(gout)[0] / (double)N);
    int64_t grain = 16384 / K;
    nr_parallel_for(N, grain < 1 ? 1 : grain, ce_bwd_task, &j);
    return NR_OK;
}

nr_status nr_cross_entropy(nr_tensor **out, const nr_tensor *logits,
                           const nr_tensor *targets, double label_smoothing) {
    char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
    *out = NULL;
    if (logits->ndim != 2)
        return nr_seterror(NR_ESHAPE, "cross_entropy: logits %s must be 2-D [N,K]",
                           nr_shape_str(logits, b1));
    int64_t N = logits->ne[0], K = logits->ne[1];
    if (targets->ndim != 1 || targets->ne[0] != N)
        return nr_seterror(NR_ESHAPE,
                           "cross_entropy: targets %s must be 1-D with one class id per row of "
                           "logits %s", nr_shape_str(targets, b1), nr_shape_str(logits, b2));
    if (K == 0)
        return nr_seterror(NR_ESHAPE, "cross_entropy: logits %s have no classes",
                           nr_shape_str(logits, b1));
    if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0))
        return nr_seterror(NR_EUSAGE, "cross_entropy: label_smoothing must be in [0, 1], got %g",
                           label_smoothing);
    char *extra = malloc((size_t)(N > 0 ? N : 1) * (sizeof(int64_t) + 2 * sizeof(double)));
    if (!extra) return nr_seterror(NR_ENOMEM, "cross_entropy: out of memory");
    int64_t *t = (int64_t *)extra;
    double *lse = (double *)(t + N), *loss = lse + N;
    const float *td = nr_data(targets);
    for (int64_t i = 0; i < N; i++) {
        float v = td[i * targets->st[0]];
        if (!(v == floorf(v)))
            return free(extra), nr_seterror(NR_EUSAGE,
                                            "cross_entropy: target %g (row %lld) is not an "
                                            "integer class id", (double)v, (long long)i + 1);
        if (v < 0 || v >= (float)K)
            return free(extra), nr_seterror(NR_EUSAGE,
                                            "cross_entropy: target %g (row %lld) is out of "
                                            "range for %lld classes (expected 0..%lld)",
                                            (double)v, (long long)i + 1, (long long)K,
                                            (long long)K - 1);
        t[i] = (int64_t)v;
    }
    nr_tensor *zc = nr_contig(logits);
    nr_tensor *y = zc ? nr_tensor_empty(0, NULL) : NULL;
    if (!y) {
        nr_tensor_release(zc);
        free(extra);
        return NR_ENOMEM;
    }
    ce_job j = {.z = nr_data(zc), .t = t, .lse = lse, .loss = loss, .N = N, .K = K,
                .ls = label_smoothing};
    int64_t grain = 16384 / K;
    nr_parallel_for(N, grain < 1 ? 1 : grain, ce_fwd_task, &j);
    double s = 0;
    for (int64_t i = 0; i < N; i++) s += loss[i];
    nr_data(y)[0] = N > 0 ? (float)(s / (double)N) : NAN;
    nr_node *n = nr_record(y, "cross_entropy", ce_backward, 1, &zc);
    if (n) {
        n->p.f[0] = label_smoothing;
        n->extra = extra;
    } else {
        free(extra);
    }
    nr_tensor_release(zc);
    *out = y;
    return NR_OK;
}
