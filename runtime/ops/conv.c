/*
** conv.c -- nr_conv2d: 2-D convolution (PyTorch's cross-correlation) with
** stride, padding, dilation and groups, forward and backward.
**
** Two engines:
**  - dense / grouped: im2col (a few output rows at a time, so the column
**    buffer stays in L2) + nr_gemm, parallel over (image, group, row chunk).
**    The 1x1 stride-1 unpadded case multiplies the input directly.
**    Backward runs over fixed blocks of images (the blocking depends on the
**    shapes only, never on the thread count, so results are bit-identical
**    with any number of threads): dX = col2im(W^T gout), dW into one partial
**    per block, the partials summed in block order.
**  - depthwise (groups == C, Co a multiple of C): a direct kernel.  Each
**    input plane is copied once into a zero-padded buffer whose columns are
**    split by stride phase, so every tap of every stride reads a contiguous
**    run; output rows are computed 16 lanes at a time in registers.
**    Backward runs over input channels (so dW sums images in a fixed order).
*/
#include "nasrt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define VL 16 /* lanes per register block (one zmm, two ymm) */

typedef struct {
    int64_t N, C, H, W;       /* input */
    int64_t Co, kh, kw;       /* weight */
    int64_t sh, sw, ph, pw, dh, dw, G;
    int64_t OH, OW;
    int64_t Cg, Cog, Kd;      /* per-group in channels, out channels, C/G*kh*kw */
} cshape;

static inline int64_t rup(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

/* ------------------------------------------------------------- im2col */

/* Valid output-column range for kernel column j: iw = ow*s - p + j*d in
   [0, W).  lo/hi clipped to [0, OW]. */
static void ow_range(const cshape *s, int64_t j, int64_t *lo, int64_t *hi) {
    int64_t off = j * s->dw - s->pw; /* iw = ow*sw + off */
    int64_t l = off >= 0 ? 0 : (-off + s->sw - 1) / s->sw;
    int64_t h = (s->W - 1 - off) >= 0 ? (s->W - 1 - off) / s->sw + 1 : 0;
    if (l > s->OW) l = s->OW;
    if (h > s->OW) h = s->OW;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
}

/* col[(c*kh+i)*kw+j][(oh-oh0)*OW+ow] for oh in [oh0, oh1). */
static void im2col(const cshape *s, const float *restrict x, int64_t oh0, int64_t oh1,
                   float *restrict col) {
    const int64_t OW = s->OW, W = s->W, H = s->H, sw = s->sw;
    const int64_t ld = (oh1 - oh0) * OW;
    for (int64_t c = 0; c < s->Cg; c++) {
        const float *xc = x + c * H * W;
        for (int64_t i = 0; i < s->kh; i++) {
            for (int64_t j = 0; j < s->kw; j++) {
                float *dst = col + ((c * s->kh + i) * s->kw + j) * ld;
                int64_t lo, hi;
                ow_range(s, j, &lo, &hi);
                const int64_t off = j * s->dw - s->pw;
                for (int64_t oh = oh0; oh < oh1; oh++) {
                    float *restrict d = dst + (oh - oh0) * OW;
                    int64_t ih = oh * s->sh - s->ph + i * s->dh;
                    if (ih < 0 || ih >= H) {
                        memset(d, 0, (size_t)OW * sizeof(float));
                        continue;
                    }
                    const float *restrict xr = xc + ih * W + off;
                    for (int64_t ow = 0; ow < lo; ow++) d[ow] = 0.0f;
                    if (sw == 1) {
                        memcpy(d + lo, xr + lo, (size_t)(hi - lo) * sizeof(float));
                    } else if (sw == 2) {
                        for (int64_t ow = lo; ow < hi; ow++) d[ow] = xr[2 * ow];
                    } else {
                        for (int64_t ow = lo; ow < hi; ow++) d[ow] = xr[ow * sw];
                    }
                    for (int64_t ow = hi; ow < OW; ow++) d[ow] = 0.0f;
                }
            }
        }
    }
}

/* x[...] += col, the adjoint of im2col. */
static void col2im_add(const cshape *s, const float *restrict col, int64_t oh0, int64_t oh1,
                       float *restrict x) {
    const int64_t OW = s->OW, W = s->W, H = s->H, sw = s->sw;
    const int64_t ld = (oh1 - oh0) * OW;
    for (int64_t c = 0; c < s->Cg; c++) {
        float *xc = x + c * H * W;
        for (int64_t i = 0; i < s->kh; i++) {
            for (int64_t j = 0; j < s->kw; j++) {
                const float *src = col + ((c * s->kh + i) * s->kw + j) * ld;
                int64_t lo, hi;
                ow_range(s, j, &lo, &hi);
                const int64_t off = j * s->dw - s->pw;
                for (int64_t oh = oh0; oh < oh1; oh++) {
                    int64_t ih = oh * s->sh - s->ph + i * s->dh;
                    if (ih < 0 || ih >= H) continue;
                    const float *restrict d = src + (oh - oh0) * OW;
                    float *restrict xr = xc + ih * W + off;
                    if (sw == 1) {
                        for (int64_t ow = lo; ow < hi; ow++) xr[ow] += d[ow];
                    } else {
                        for (int64_t ow = lo; ow < hi; ow++) xr[ow * sw] += d[ow];
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------------ dense path */

static int is_pointwise(const cshape *s) {
    return s->kh == 1 && s->kw == 1 && s->sh == 1 && s->sw == 1 && s->ph == 0 && s->pw == 0;
}

/* Output rows per im2col chunk: keep the column chunk near 256 KB.  Depends
   on the shapes only. */
static int64_t chunk_rows(const cshape *s) {
    if (is_pointwise(s)) return s->OH;
    int64_t per_row = s->Kd * s->OW;
    int64_t r = (64 * 1024) / (per_row > 0 ? per_row : 1);
    if (r < 1) r = 1;
    if (r > s->OH) r = s->OH;
    /* even out the chunks */
    int64_t nch = (s->OH + r - 1) / r;
    return (s->OH + nch - 1) / nch;
}

typedef struct {
    const cshape *s;
    const float *x, *w, *b;
    float *y;
    int64_t R, nch;
    size_t colsz;
} fwd_job;

static void fwd_dense_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    const fwd_job *J = ctx;
    const cshape *s = J->s;
    const int64_t OHW = s->OH * s->OW, HW = s->H * s->W;
    const int pw1 = is_pointwise(s);
    float *col = pw1 ? NULL : nr_scratch(ith, J->colsz);
    for (int64_t it = i0; it < i1; it++) {
        int64_t ch = it % J->nch, g = (it / J->nch) % s->G, n = it / (J->nch * s->G);
        int64_t oh0 = ch * J->R, oh1 = oh0 + J->R < s->OH ? oh0 + J->R : s->OH;
        int64_t npix = (oh1 - oh0) * s->OW;
        float *yb = J->y + (n * s->Co + g * s->Cog) * OHW + oh0 * s->OW;
        const float *xg = J->x + (n * s->C + g * s->Cg) * HW;
        float beta = 0.0f;
        if (J->b) {
            for (int64_t co = 0; co < s->Cog; co++) {
                float bv = J->b[g * s->Cog + co];
                float *restrict yr = yb + co * OHW;
                for (int64_t k = 0; k < npix; k++) yr[k] = bv;
            }
            beta = 1.0f;
        }
        const float *B;
        int64_t ldb;
        if (pw1) {
            B = xg + oh0 * s->OW;
            ldb = HW;
        } else {
            im2col(s, xg, oh0, oh1, col);
            B = col;
            ldb = npix;
        }
        nr_gemm(0, 0, s->Cog, npix, s->Kd, 1.0f, J->w + g * s->Cog * s->Kd, s->Kd, B, ldb,
                beta, yb, OHW);
    }
}

typedef struct {
    const cshape *s;
    const float *x, *w, *gy;
    float *gx;        /* may be NULL */
    float *part;      /* nblk x Co*Kd, or NULL (no dW) */
    int64_t nblk, R, nch;
    size_t colsz;
} bwd_job;

static void bwd_dense_task(void *ctx, int64_t b0, int64_t b1, int ith) {
    const bwd_job *J = ctx;
    const cshape *s = J->s;
    const int64_t OHW = s->OH * s->OW, HW = s->H * s->W;
    const int pw1 = is_pointwise(s);
    float *col = NULL, *dcol = NULL;
    if (!pw1) {
        col = nr_scratch(ith, 2 * J->colsz);
        dcol = col + J->colsz;
    }
    for (int64_t blk = b0; blk < b1; blk++) {
        int64_t n0 = s->N * blk / J->nblk, n1 = s->N * (blk + 1) / J->nblk;
        float *part = J->part ? J->part + blk * s->Co * s->Kd : NULL;
        for (int64_t n = n0; n < n1; n++) {
            for (int64_t g = 0; g < s->G; g++) {
                const float *xg = J->x + (n * s->C + g * s->Cg) * HW;
                const float *wg = J->w + g * s->Cog * s->Kd;
                float *gxg = J->gx ? J->gx + (n * s->C + g * s->Cg) * HW : NULL;
                for (int64_t ch = 0; ch < J->nch; ch++) {
                    int64_t oh0 = ch * J->R, oh1 = oh0 + J->R < s->OH ? oh0 + J->R : s->OH;
                    int64_t npix = (oh1 - oh0) * s->OW;
                    const float *gyb = J->gy + (n * s->Co + g * s->Cog) * OHW + oh0 * s->OW;
                    if (part) {
                        const float *B;
                        int64_t ldb;
                        if (pw1) {
                            B = xg + oh0 * s->OW;
                            ldb = HW;
                        } else {
                            im2col(s, xg, oh0, oh1, col);
                            B = col;
                            ldb = npix;
                        }
                        float beta = (n == n0 && ch == 0) ? 0.0f : 1.0f;
                        nr_gemm(0, 1, s->Cog, s->Kd, npix, 1.0f, gyb, OHW, B, ldb, beta,
                                part + g * s->Cog * s->Kd, s->Kd);
                    }
                    if (gxg) {
                        if (pw1) {
                            nr_gemm(1, 0, s->Cg, npix, s->Cog, 1.0f, wg, s->Kd, gyb, OHW, 1.0f,
                                    gxg + oh0 * s->OW, HW);
                        } else {
                            nr_gemm(1, 0, s->Kd, npix, s->Cog, 1.0f, wg, s->Kd, gyb, OHW, 0.0f,
                                    dcol, npix);
                            col2im_add(s, dcol, oh0, oh1, gxg);
                        }
                    }
                }
            }
        }
    }
}

typedef struct {
    const float *part;
    float *gw;
    int64_t nblk, n;
} red_job;

static void reduce_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    const red_job *J = ctx;
    float *restrict gw = J->gw;
    float tmp[256];
    /* sum the partials first, then add once: gw += (p0 + p1 + ...) */
    for (int64_t c0 = i0; c0 < i1; c0 += 256) {
        int64_t n = i1 - c0 < 256 ? i1 - c0 : 256;
        memcpy(tmp, J->part + c0, (size_t)n * sizeof(float));
        for (int64_t b = 1; b < J->nblk; b++) {
            const float *restrict p = J->part + b * J->n + c0;
            for (int64_t i = 0; i < n; i++) tmp[i] += p[i];
        }
        for (int64_t i = 0; i < n; i++) gw[c0 + i] += tmp[i];
    }
}

/* ------------------------------------------------------- depthwise path */

/* The padded, phase-split plane: P[r][q][t] holds padded column q + s*t of
   padded row r.  Hn rows are needed, Tw entries per phase. */
typedef struct {
    int64_t Hn, Tw, OWr, m, kk;
    size_t psz, gsz;   /* floats in a P buffer, in a G buffer */
} dwgeo;

static void dw_geometry(const cshape *s, dwgeo *g) {
    g->OWr = rup(s->OW, VL);
    g->Hn = (s->OH - 1) * s->sh + (s->kh - 1) * s->dh + 1;
    g->Tw = g->OWr + ((s->kw - 1) * s->dw) / s->sw;
    g->m = s->Co / s->C;
    g->kk = s->kh * s->kw;
    g->psz = (size_t)rup(g->Hn * s->sw * g->Tw, VL);
    g->gsz = (size_t)rup(s->OH * g->OWr, VL);
}

static void dw_fill(const cshape *s, const dwgeo *g, const float *restrict x,
                    float *restrict P) {
    memset(P, 0, g->psz * sizeof(float));
    const int64_t sw = s->sw, Tw = g->Tw;
    for (int64_t ih = 0; ih < s->H; ih++) {
        int64_t r = ih + s->ph;
        if (r >= g->Hn) break;
        const float *restrict xr = x + ih * s->W;
        float *restrict pr = P + r * sw * Tw;
        if (sw == 1) {
            int64_t n = s->W;
            if (s->pw + n > Tw) n = Tw - s->pw;
            if (n > 0) memcpy(pr + s->pw, xr, (size_t)n * sizeof(float));
        } else {
            for (int64_t iw = 0; iw < s->W; iw++) {
                int64_t c = iw + s->pw, t = c / sw;
                if (t < Tw) pr[(c % sw) * Tw + t] = xr[iw];
            }
        }
    }
}

/* gx_plane += interior of D (same layout as P). */
static void dw_unfill_add(const cshape *s, const dwgeo *g, const float *restrict D,
                          float *restrict gx) {
    const int64_t sw = s->sw, Tw = g->Tw;
    for (int64_t ih = 0; ih < s->H; ih++) {
        int64_t r = ih + s->ph;
        if (r >= g->Hn) break;
        float *restrict xr = gx + ih * s->W;
        const float *restrict dr = D + r * sw * Tw;
        if (sw == 1) {
            int64_t n = s->W;
            if (s->pw + n > Tw) n = Tw - s->pw;
            const float *restrict d0 = dr + s->pw;
            for (int64_t iw = 0; iw < n; iw++) xr[iw] += d0[iw];
        } else {
            for (int64_t iw = 0; iw < s->W; iw++) {
                int64_t c = iw + s->pw, t = c / sw;
                if (t < Tw) xr[iw] += dr[(c % sw) * Tw + t];
            }
        }
    }
}

/* One output plane from a filled P. */
static void dw_plane_fwd(const cshape *s, const dwgeo *g, const float *restrict P,
                         const float *restrict w, float bias, float *restrict y) {
    const int64_t sw = s->sw, Tw = g->Tw, OW = s->OW;
    for (int64_t oh = 0; oh < s->OH; oh++) {
        float *restrict yr = y + oh * OW;
        for (int64_t ob = 0; ob < g->OWr; ob += VL) {
            float acc[VL];
            for (int v = 0; v < VL; v++) acc[v] = bias;
            for (int64_t i = 0; i < s->kh; i++) {
                const float *row = P + (oh * s->sh + i * s->dh) * sw * Tw + ob;
                const float *restrict wr = w + i * s->kw;
                for (int64_t j = 0; j < s->kw; j++) {
                    int64_t c = j * s->dw;
                    const float *restrict src = row + (c % sw) * Tw + c / sw;
                    float wv = wr[j];
                    for (int v = 0; v < VL; v++) acc[v] += wv * src[v];
                }
            }
            if (ob + VL <= OW) {
                for (int v = 0; v < VL; v++) yr[ob + v] = acc[v];
            } else {
                for (int64_t v = 0; v < OW - ob; v++) yr[ob + v] = acc[v];
            }
        }
    }
}

/* 3x3 stride 1 specialisation: the taps are compile-time constants. */
static void dw_plane_fwd_k3s1(const cshape *s, const dwgeo *g, const float *restrict P,
                              const float *restrict w, float bias, float *restrict y) {
    const int64_t Tw = g->Tw, OW = s->OW, d = s->dh, e = s->dw;
    const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5],
                w6 = w[6], w7 = w[7], w8 = w[8];
    for (int64_t oh = 0; oh < s->OH; oh++) {
        float *restrict yr = y + oh * OW;
        const float *r0 = P + oh * Tw, *r1 = r0 + d * Tw, *r2 = r1 + d * Tw;
        for (int64_t ob = 0; ob < g->OWr; ob += VL) {
            float acc[VL];
            for (int v = 0; v < VL; v++) {
                int64_t k = ob + v;
                acc[v] = bias + w0 * r0[k] + w1 * r0[k + e] + w2 * r0[k + 2 * e]
                       + w3 * r1[k] + w4 * r1[k + e] + w5 * r1[k + 2 * e]
                       + w6 * r2[k] + w7 * r2[k + e] + w8 * r2[k + 2 * e];
            }
            if (ob + VL <= OW) {
                for (int v = 0; v < VL; v++) yr[ob + v] = acc[v];
            } else {
                for (int64_t v = 0; v < OW - ob; v++) yr[ob + v] = acc[v];
            }
        }
    }
}

typedef struct {
    const cshape *s;
    const dwgeo *g;
    const float *x, *w, *b, *gy;
    float *y, *gx, *gw;
} dw_job;

static void dw_fwd_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    const dw_job *J = ctx;
    const cshape *s = J->s;
    const dwgeo *g = J->g;
    const int64_t HW = s->H * s->W, OHW = s->OH * s->OW;
    float *P = nr_scratch(ith, g->psz);
    int k3s1 = s->kh == 3 && s->kw == 3 && s->sh == 1 && s->sw == 1;
    for (int64_t it = i0; it < i1; it++) {
        int64_t n = it / s->C, c = it % s->C;
        dw_fill(s, g, J->x + (n * s->C + c) * HW, P);
        for (int64_t mi = 0; mi < g->m; mi++) {
            int64_t co = c * g->m + mi;
            const float *w = J->w + co * g->kk;
            float bias = J->b ? J->b[co] : 0.0f;
            float *y = J->y + (n * s->Co + co) * OHW;
            if (k3s1)
                dw_plane_fwd_k3s1(s, g, P, w, bias, y);
            else
                dw_plane_fwd(s, g, P, w, bias, y);
        }
    }
}

/* Backward over input channels [c0, c1): every image in order. */
static void dw_bwd_task(void *ctx, int64_t c0, int64_t c1, int ith) {
    const dw_job *J = ctx;
    const cshape *s = J->s;
    const dwgeo *g = J->g;
    const int64_t HW = s->H * s->W, OHW = s->OH * s->OW;
    const int64_t sw = s->sw, Tw = g->Tw, OWr = g->OWr, OW = s->OW;
    float *buf = nr_scratch(ith, 2 * g->psz + g->gsz + 2 * (size_t)rup(g->m * g->kk, VL));
    float *P = buf, *D = P + g->psz, *Gp = D + g->psz;
    double *dacc = (double *)(Gp + g->gsz);
    for (int64_t c = c0; c < c1; c++) {
        if (J->gw)
            for (int64_t k = 0; k < g->m * g->kk; k++) dacc[k] = 0.0;
        for (int64_t n = 0; n < s->N; n++) {
            if (J->gw) dw_fill(s, g, J->x + (n * s->C + c) * HW, P);
            if (J->gx) memset(D, 0, g->psz * sizeof(float));
            for (int64_t mi = 0; mi < g->m; mi++) {
                int64_t co = c * g->m + mi;
                const float *restrict gy = J->gy + (n * s->Co + co) * OHW;
                /* padded copy of the output gradient: tail lanes are 0 */
                for (int64_t oh = 0; oh < s->OH; oh++) {
                    float *restrict gr = Gp + oh * OWr;
                    memcpy(gr, gy + oh * OW, (size_t)OW * sizeof(float));
                    for (int64_t k = OW; k < OWr; k++) gr[k] = 0.0f;
                }
                if (J->gw) {
                    double *da = dacc + mi * g->kk;
                    for (int64_t i = 0; i < s->kh; i++) {
                        for (int64_t j = 0; j < s->kw; j++) {
                            int64_t cc = j * s->dw;
                            float acc[VL] = {0};
                            for (int64_t oh = 0; oh < s->OH; oh++) {
                                const float *restrict src = P + (oh * s->sh + i * s->dh) * sw * Tw
                                                          + (cc % sw) * Tw + cc / sw;
                                const float *restrict gr = Gp + oh * OWr;
                                for (int64_t ob = 0; ob < OWr; ob += VL)
                                    for (int v = 0; v < VL; v++) acc[v] += gr[ob + v] * src[ob + v];
                            }
                            double t = 0;
                            for (int v = 0; v < VL; v++) t += acc[v];
                            da[i * s->kw + j] += t;
                        }
                    }
                }
                if (J->gx) {
                    const float *w = J->w + co * g->kk;
                    for (int64_t oh = 0; oh < s->OH; oh++) {
                        const float *restrict gr = Gp + oh * OWr;
                        for (int64_t i = 0; i < s->kh; i++) {
                            float *row = D + (oh * s->sh + i * s->dh) * sw * Tw;
                            for (int64_t j = 0; j < s->kw; j++) {
                                int64_t cc = j * s->dw;
                                float *restrict dst = row + (cc % sw) * Tw + cc / sw;
                                float wv = w[i * s->kw + j];
                                for (int64_t k = 0; k < OWr; k++) dst[k] += wv * gr[k];
                            }
                        }
                    }
                }
            }
            if (J->gx) dw_unfill_add(s, g, D, J->gx + (n * s->C + c) * HW);
        }
        if (J->gw) {
            for (int64_t k = 0; k < g->m * g->kk; k++)
                J->gw[c * g->m * g->kk + k] += (float)dacc[k];
        }
    }
}

/* ------------------------------------------------------------------ bias */

typedef struct {
    const float *gy;
    float *gb;
    int64_t N, Co, OHW;
} bias_job;

static void bias_task(void *ctx, int64_t c0, int64_t c1, int ith) {
    const bias_job *J = ctx;
    for (int64_t co = c0; co < c1; co++) {
        double tot = 0;
        for (int64_t n = 0; n < J->N; n++) {
            const float *restrict p = J->gy + (n * J->Co + co) * J->OHW;
            float acc[VL] = {0};
            int64_t k = 0;
            for (; k + VL <= J->OHW; k += VL)
                for (int v = 0; v < VL; v++) acc[v] += p[k + v];
            double t = 0;
            for (; k < J->OHW; k++) t += p[k];
            for (int v = 0; v < VL; v++) t += acc[v];
            tot += t;
        }
        J->gb[co] += (float)tot;
    }
}

/* ------------------------------------------------------------- the op */

static int is_depthwise(const cshape *s) {
    return s->G == s->C && s->Co % s->C == 0 && s->C > 0;
}

static void load_shape(const nr_node *n, const nr_tensor *x, const nr_tensor *w, cshape *s) {
    int b = x->ndim == 4;
    s->N = b ? x->ne[0] : 1;
    s->C = x->ne[b];
    s->H = x->ne[b + 1];
    s->W = x->ne[b + 2];
    s->Co = w->ne[0];
    s->kh = w->ne[2];
    s->kw = w->ne[3];
    s->sh = n->p.i[0];
    s->sw = n->p.i[1];
    s->ph = n->p.i[2];
    s->pw = n->p.i[3];
    s->dh = n->p.i[4];
    s->dw = n->p.i[5];
    s->G = n->p.i[6];
    s->OH = (s->H + 2 * s->ph - s->dh * (s->kh - 1) - 1) / s->sh + 1;
    s->OW = (s->W + 2 * s->pw - s->dw * (s->kw - 1) - 1) / s->sw + 1;
    s->Cg = s->C / s->G;
    s->Cog = s->Co / s->G;
    s->Kd = s->Cg * s->kh * s->kw;
}

static nr_status prealloc_scratch(size_t nfloat) {
    int nth = nr_num_threads();
    for (int i = 0; i < nth; i++)
        if (!nr_scratch(i, nfloat))
            return nr_seterror(NR_ENOMEM, "conv2d: out of memory for scratch buffers");
    return NR_OK;
}

static nr_status conv_bwd(nr_node *nd, const nr_tensor *gout, nr_tensor *const *gin) {
    const nr_tensor *x = nd->in[0], *w = nd->in[1];
    cshape s;
    load_shape(nd, x, w, &s);
    nr_tensor *gc = NULL;
    if (!nr_is_contiguous(gout)) {
        gc = nr_tensor_clone(gout);
        if (!gc) return NR_ENOMEM;
        gout = gc;
    }
    const float *gy = nr_data(gout);
    const int64_t OHW = s.OH * s.OW;
    nr_status st = NR_OK;
    float *gx = gin[0] ? nr_data(gin[0]) : NULL;
    float *gw = gin[1] ? nr_data(gin[1]) : NULL;
    if (s.N > 0 && (gx || gw)) {
        if (is_depthwise(&s)) {
            dwgeo g;
            dw_geometry(&s, &g);
            st = prealloc_scratch(2 * g.psz + g.gsz + 2 * (size_t)rup(g.m * g.kk, VL));
            if (st != NR_OK) goto done;
            dw_job J = {&s, &g, nr_data(x), nr_data(w), NULL, gy, NULL, gx, gw};
            nr_parallel_for(s.C, 1, dw_bwd_task, &J);
        } else {
            int64_t R = chunk_rows(&s), nch = (s.OH + R - 1) / R;
            size_t colsz = (size_t)rup(s.Kd * R * s.OW, VL);
            if (!is_pointwise(&s)) {
                st = prealloc_scratch(2 * colsz);
                if (st != NR_OK) goto done;
            }
            int64_t nblk = s.N < 16 ? s.N : 16;
            float *part = NULL;
            if (gw) {
                part = aligned_alloc(64, (size_t)rup(nblk * s.Co * s.Kd, 16) * sizeof(float));
                if (!part) {
                    st = nr_seterror(NR_ENOMEM, "conv2d backward: out of memory");
                    goto done;
                }
            }
            bwd_job J = {&s, nr_data(x), nr_data(w), gy, gx, part, nblk, R, nch, colsz};
            nr_parallel_for(nblk, 1, bwd_dense_task, &J);
            if (part) {
                red_job RJ = {part, gw, nblk, s.Co * s.Kd};
                nr_parallel_for(s.Co * s.Kd, 4096, reduce_task, &RJ);
                free(part);
            }
        }
    }
    if (gin[2] && s.N > 0) {
        bias_job B = {gy, nr_data(gin[2]), s.N, s.Co, OHW};
        nr_parallel_for(s.Co, 8, bias_task, &B);
    }
done:
    nr_tensor_release(gc);
    return st;
}

nr_status nr_conv2d(nr_tensor **out, const nr_tensor *x, const nr_tensor *w,
                    const nr_tensor *b, const nr_conv_params *p) {
    char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
    *out = NULL;
    if (!x || !w) return nr_seterror(NR_EUSAGE, "conv2d: input and weight are required");
    if (!p) return nr_seterror(NR_EUSAGE, "conv2d: missing parameters");
    if (x->ndim != 4 && x->ndim != 3)
        return nr_seterror(NR_ESHAPE,
                           "conv2d: expected a 4-D input [N,C,H,W] (or 3-D [C,H,W]), got %s",
                           nr_shape_str(x, b1));
    if (w->ndim != 4)
        return nr_seterror(NR_ESHAPE, "conv2d: expected a 4-D weight [Co,C/groups,kh,kw], got %s",
                           nr_shape_str(w, b1));
    for (int d = 0; d < 2; d++) {
        if (p->stride[d] < 1)
            return nr_seterror(NR_EUSAGE, "conv2d: stride must be >= 1, got %lld",
                               (long long)p->stride[d]);
        if (p->padding[d] < 0)
            return nr_seterror(NR_EUSAGE, "conv2d: padding must be >= 0, got %lld",
                               (long long)p->padding[d]);
        if (p->dilation[d] < 1)
            return nr_seterror(NR_EUSAGE, "conv2d: dilation must be >= 1, got %lld",
                               (long long)p->dilation[d]);
    }
    int64_t G = p->groups;
    int bt = x->ndim == 4;
    int64_t C = x->ne[bt], H = x->ne[bt + 1], W = x->ne[bt + 2];
    int64_t Co = w->ne[0], kh = w->ne[2], kw = w->ne[3];
    if (G < 1) return nr_seterror(NR_EUSAGE, "conv2d: groups must be >= 1, got %lld", (long long)G);
    if (C < 1 || H < 1 || W < 1)
        return nr_seterror(NR_ESHAPE, "conv2d: input %s has an empty channel or spatial dim",
                           nr_shape_str(x, b1));
    if (Co < 1 || kh < 1 || kw < 1 || w->ne[1] < 1)
        return nr_seterror(NR_ESHAPE, "conv2d: weight %s has an empty dim", nr_shape_str(w, b1));
    if (C % G != 0)
        return nr_seterror(NR_ESHAPE, "conv2d: input channels (%lld) not divisible by groups (%lld)",
                           (long long)C, (long long)G);
    if (Co % G != 0)
        return nr_seterror(NR_ESHAPE,
                           "conv2d: output channels (%lld, weight %s) not divisible by groups (%lld)",
                           (long long)Co, nr_shape_str(w, b1), (long long)G);
    if (w->ne[1] * G != C)
        return nr_seterror(NR_ESHAPE,
                           "conv2d: input %s has %lld channels, weight %s expects %lld (groups=%lld)",
                           nr_shape_str(x, b1), (long long)C, nr_shape_str(w, b2),
                           (long long)(w->ne[1] * G), (long long)G);
    if (b && (b->ndim != 1 || b->ne[0] != Co))
        return nr_seterror(NR_ESHAPE, "conv2d: bias %s does not match %lld output channels",
                           nr_shape_str(b, b1), (long long)Co);
    int64_t ekh = p->dilation[0] * (kh - 1) + 1, ekw = p->dilation[1] * (kw - 1) + 1;
    if (H + 2 * p->padding[0] < ekh || W + 2 * p->padding[1] < ekw)
        return nr_seterror(NR_ESHAPE,
                           "conv2d: input %s (padded %lldx%lld) is smaller than the kernel "
                           "(%lldx%lld with dilation)",
                           nr_shape_str(x, b1), (long long)(H + 2 * p->padding[0]),
                           (long long)(W + 2 * p->padding[1]), (long long)ekh, (long long)ekw);

    nr_tensor *xc = nr_contig(x), *wc = nr_contig(w), *bc = b ? nr_contig(b) : NULL;
    nr_tensor *y = NULL;
    nr_status st = NR_OK;
    if (!xc || !wc || (b && !bc)) {
        st = NR_ENOMEM;
        goto done;
    }
    nr_node tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.p.i[0] = p->stride[0];
    tmp.p.i[1] = p->stride[1];
    tmp.p.i[2] = p->padding[0];
    tmp.p.i[3] = p->padding[1];
    tmp.p.i[4] = p->dilation[0];
    tmp.p.i[5] = p->dilation[1];
    tmp.p.i[6] = G;
    cshape s;
    load_shape(&tmp, xc, wc, &s);
    int64_t yne[4] = {s.N, s.Co, s.OH, s.OW};
    y = bt ? nr_tensor_empty(4, yne) : nr_tensor_empty(3, yne + 1);
    if (!y) {
        st = NR_ENOMEM;
        goto done;
    }
    if (s.N > 0) {
        const float *xd = nr_data(xc), *wd = nr_data(wc), *bd = bc ? nr_data(bc) : NULL;
        if (is_depthwise(&s)) {
            dwgeo g;
            dw_geometry(&s, &g);
            st = prealloc_scratch(g.psz);
            if (st != NR_OK) goto done;
            dw_job J = {&s, &g, xd, wd, bd, NULL, nr_data(y), NULL, NULL};
            nr_parallel_for(s.N * s.C, 1, dw_fwd_task, &J);
        } else {
            int64_t R = chunk_rows(&s), nch = (s.OH + R - 1) / R;
            size_t colsz = (size_t)rup(s.Kd * R * s.OW, VL);
            if (!is_pointwise(&s)) {
                st = prealloc_scratch(colsz);
                if (st != NR_OK) goto done;
            }
            fwd_job J = {&s, xd, wd, bd, nr_data(y), R, nch, colsz};
            nr_parallel_for(s.N * s.G * nch, 1, fwd_dense_task, &J);
        }
    }
    nr_node *nd = nr_record(y, "conv2d", conv_bwd, 3, (nr_tensor *[]){xc, wc, bc});
    if (nd) nd->p = tmp.p;
done:
    nr_tensor_release(xc);
    nr_tensor_release(wc);
    nr_tensor_release(bc);
    if (st != NR_OK) {
        nr_tensor_release(y);
        return st;
    }
    *out = y;
    return NR_OK;
}
