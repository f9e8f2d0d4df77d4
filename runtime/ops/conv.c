/*
** conv.c -- nr_conv2d: 2-D convolution (PyTorch's cross-correlation) with
** stride, padding, dilation and groups, forward and backward.
**
** Four engines, picked by shape:
**  - depthwise on small planes (output rows of at most 8, or 16 when
**    strided; C a multiple of 16, Co == C): 16 channels per vector, the
**    planes transposed into a channel-last padded buffer; every tap of an
**    output pixel is one FMA for 16 channels.
**  - depthwise (groups == C, Co a multiple of C): each input plane is
**    copied into a zero-padded buffer whose columns are split by stride
**    phase, so every tap of every stride and dilation reads a contiguous
**    run; output rows are computed 16 lanes at a time, four rows per pass.
**    dX is a correlation of the padded gradient with the flipped kernel
**    (stride 1) or a per-phase gather (strided).
**  - direct (every other conv with k > 1 and equal strides): the same
**    padded, phase-split copy of an image's channels, then register-tiled
**    kernels with an implicit im2col: 16 output channels per register and a
**    run of output pixels per tile when Co is a multiple of 16 (the
**    common case), else 8 channels x 48 points of a flattened output grid.
**    dW and (stride 1) dX use the same machinery.
**  - GEMM (1x1 kernels, anisotropic strides): nr_gemm on the input as it is
**    (1x1, stride 1, no padding) or on im2col of a few output rows at a
**    time; dX by GEMM + col2im.
** Forward work is split over images (and groups); backward over fixed blocks
** of images whose dW partials are summed in block order, so results are
** bit-identical with any number of threads.
*/
#include "nasrt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "vec.h"

typedef struct {
    int64_t N, C, H, W;       /* input */
    int64_t Co, kh, kw;       /* weight */
    int64_t sh, sw, ph, pw, dh, dw, G;
    int64_t OH, OW;
    int64_t Cg, Cog, Kd;      /* per-group in channels, out channels, C/G*kh*kw */
} cshape;

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
    int gx_fresh;     /* gx is uninitialised: write it */
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
                if (gxg && J->gx_fresh && !pw1) memset(gxg, 0, (size_t)(s->Cg * HW) * sizeof(float));
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
                            nr_gemm(1, 0, s->Cg, npix, s->Cog, 1.0f, wg, s->Kd, gyb, OHW,
                                    J->gx_fresh ? 0.0f : 1.0f, gxg + oh0 * s->OW, HW);
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

static inline float hsum_fast(vf16 v) {
#if defined(__AVX512F__)
    return _mm512_reduce_add_ps((__m512)v);
#else
    float s = 0.0f;
    for (int i = 0; i < VL; i++) s += v[i];
    return s;
#endif
}

/* A correlation of one plane: the source (H x W) is copied into a buffer
   zero-padded by (ph, pw), whose columns are split by stride phase:
   P[r][q][t] holds padded column q + sw*t of padded row r (Hn rows, Tw
   entries per phase, row stride rs = sw*Tw).  Tap (i,j) of output row oh,
   column ow then reads P[oh*sh*rs + toff[i*kw+j] + ow]: contiguous in ow
   for every stride and dilation. */
typedef struct {
    int64_t H, W, ph, pw, sh, sw, dh, dw, kh, kw, kk;
    int64_t OH, OW, OWr;
    int64_t Hn, Tw, rs;
    size_t psz;
    int64_t *toff;  /* kk offsets, rounded up to a multiple of 8 (padding: 0) */
} dwp;

static void dwp_init(dwp *g, int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t sh,
                     int64_t sw, int64_t dh, int64_t dw, int64_t kh, int64_t kw, int64_t OH,
                     int64_t OW, int64_t min_tw, int64_t *toff) {
    g->H = H, g->W = W, g->ph = ph, g->pw = pw, g->sh = sh, g->sw = sw;
    g->dh = dh, g->dw = dw, g->kh = kh, g->kw = kw, g->kk = kh * kw;
    g->OH = OH, g->OW = OW, g->OWr = rup(OW, VL);
    g->Hn = (OH - 1) * sh + (kh - 1) * dh + 1;
    g->Tw = g->OWr + ((kw - 1) * dw) / sw;
    if (g->Tw < min_tw) g->Tw = min_tw;
    g->Tw = rup(g->Tw, VL); /* whole vectors per phase row */
    g->rs = sw * g->Tw;
    g->psz = (size_t)rup(g->Hn * g->rs + VL, VL);
    g->toff = toff;
    for (int64_t i = 0; i < kh; i++)
        for (int64_t j = 0; j < kw; j++) {
            int64_t c = j * dw;
            toff[i * kw + j] = i * dh * g->rs + (c % sw) * g->Tw + c / sw;
        }
    for (int64_t t = g->kk; t < rup(g->kk, 8); t++) toff[t] = 0;
}

/* Stride-2 column phases of one padded row: padded column c = iw + pw of
   x (W floats) goes to phase c % 2 (at dst + (c % 2) * ps) position c / 2,
   for positions < n.  Even iw land in phase pw % 2 from pw / 2 on, odd iw
   in the other phase from (pw + 1) / 2 on. */
static void split2_row(const float *restrict x, int64_t W, int64_t pw, float *restrict dst,
                       int64_t ps, int64_t n, int relu) {
    float *de = dst + (pw & 1) * ps + (pw >> 1), *dq = dst + ((pw + 1) & 1) * ps + ((pw + 1) >> 1);
    int64_t ne = (W + 1) / 2, no = W / 2;
    if (ne > n - (pw >> 1)) ne = n - (pw >> 1);
    if (no > n - ((pw + 1) >> 1)) no = n - ((pw + 1) >> 1);
#if defined(__AVX512F__)
    const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i io = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    int64_t mmax = ne > no ? ne : no;
    for (int64_t m0 = 0; m0 < mmax; m0 += VL) {
        int64_t left = W - 2 * m0; /* x values from 2*m0 on */
        __mmask16 k1 = (__mmask16)(left >= VL ? 0xffff : (1u << left) - 1);
        __mmask16 k2 = (__mmask16)(left >= 2 * VL ? 0xffff : left > VL ? (1u << (left - VL)) - 1 : 0);
        __m512 a = _mm512_maskz_loadu_ps(k1, x + 2 * m0), b = _mm512_maskz_loadu_ps(k2, x + 2 * m0 + VL);
        if (relu) {
            a = _mm512_max_ps(_mm512_setzero_ps(), a); /* max(0, NaN) is NaN */
            b = _mm512_max_ps(_mm512_setzero_ps(), b);
        }
        int64_t ce = ne - m0, co = no - m0;
        if (ce > 0)
            _mm512_mask_storeu_ps(de + m0, (__mmask16)(ce >= VL ? 0xffff : (1u << ce) - 1),
                                  _mm512_permutex2var_ps(a, ie, b));
        if (co > 0)
            _mm512_mask_storeu_ps(dq + m0, (__mmask16)(co >= VL ? 0xffff : (1u << co) - 1),
                                  _mm512_permutex2var_ps(a, io, b));
    }
#else
    for (int64_t m = 0; m < ne; m++) de[m] = relu && x[2 * m] < 0.0f ? 0.0f : x[2 * m];
    for (int64_t m = 0; m < no; m++) dq[m] = relu && x[2 * m + 1] < 0.0f ? 0.0f : x[2 * m + 1];
#endif
}

/* The adjoint of split2_row: x[iw] += its phase value. */
static void merge2_add_row(float *restrict x, int64_t W, int64_t pw, const float *restrict src,
                           int64_t ps, int64_t n) {
    const float *de = src + (pw & 1) * ps + (pw >> 1);
    const float *dq = src + ((pw + 1) & 1) * ps + ((pw + 1) >> 1);
    int64_t ne = (W + 1) / 2, no = W / 2;
    if (ne > n - (pw >> 1)) ne = n - (pw >> 1);
    if (no > n - ((pw + 1) >> 1)) no = n - ((pw + 1) >> 1);
#if defined(__AVX512F__)
    const __m512i il = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i ih = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    int64_t mmax = ne > no ? ne : no;
    for (int64_t m0 = 0; m0 < mmax; m0 += VL) {
        int64_t ce = ne - m0, co = no - m0;
        __m512 e = ce > 0 ? _mm512_maskz_loadu_ps((__mmask16)(ce >= VL ? 0xffff : (1u << ce) - 1), de + m0)
                          : _mm512_setzero_ps();
        __m512 o = co > 0 ? _mm512_maskz_loadu_ps((__mmask16)(co >= VL ? 0xffff : (1u << co) - 1), dq + m0)
                          : _mm512_setzero_ps();
        int64_t left = W - 2 * m0;
        __mmask16 k1 = (__mmask16)(left >= VL ? 0xffff : (1u << left) - 1);
        __mmask16 k2 = (__mmask16)(left >= 2 * VL ? 0xffff : left > VL ? (1u << (left - VL)) - 1 : 0);
        float *x0 = x + 2 * m0;
        _mm512_mask_storeu_ps(x0, k1, _mm512_add_ps(_mm512_maskz_loadu_ps(k1, x0),
                                                     _mm512_permutex2var_ps(e, il, o)));
        if (k2)
            _mm512_mask_storeu_ps(x0 + VL, k2, _mm512_add_ps(_mm512_maskz_loadu_ps(k2, x0 + VL),
                                                              _mm512_permutex2var_ps(e, ih, o)));
    }
#else
    for (int64_t m = 0; m < ne; m++) x[2 * m] += de[m];
    for (int64_t m = 0; m < no; m++) x[2 * m + 1] += dq[m];
#endif
}

/* The interior of P <- src (rows of length W, stride lds), or relu(src)
   (sep_conv2d's ReLU, applied on the way in).  Everything else in P is
   padding: the caller zeroes P once (memset psz) and the padding stays
   zero from plane to plane. */
static void dwp_fill(const dwp *g, const float *restrict src, int64_t lds, float *restrict P,
                     int relu) {
    const int64_t sw = g->sw, Tw = g->Tw, rs = g->rs;
    int64_t n = g->W;
    if (g->pw + n > Tw) n = Tw - g->pw;
    for (int64_t ih = 0; ih < g->H; ih++) {
        int64_t r = ih + g->ph;
        if (r >= g->Hn) break;
        float *restrict pr = P + r * rs;
        const float *restrict xr = src + ih * lds;
        if (sw == 1) {
            if (relu)
                copy_short_relu(pr + g->pw, xr, n);
            else
                copy_short(pr + g->pw, xr, n);
        } else if (sw == 2) {
            split2_row(xr, g->W, g->pw, pr, Tw, Tw, relu);
        } else {
            for (int64_t q = 0; q < sw; q++) {
                /* padded column c = q + sw*t holds x[c - pw] */
                int64_t t = q >= g->pw ? 0 : (g->pw - q + sw - 1) / sw;
                int64_t iw = q + sw * t - g->pw;
                float *restrict pq = pr + q * Tw;
                for (; t < Tw && iw < g->W; t++, iw += sw)
                    pq[t] = relu && xr[iw] < 0.0f ? 0.0f : xr[iw];
            }
        }
    }
}

/* dst (rows of length W, stride ldd) += the interior of D (P's layout). */
static void dwp_unfill_add(const dwp *g, const float *restrict D, float *restrict dst,
                           int64_t ldd) {
    const int64_t sw = g->sw, Tw = g->Tw;
    for (int64_t ih = 0; ih < g->H; ih++) {
        int64_t r = ih + g->ph;
        if (r >= g->Hn) break;
        float *restrict xr = dst + ih * ldd;
        const float *restrict dr = D + r * g->rs;
        if (sw == 2) {
            merge2_add_row(xr, g->W, g->pw, dr, Tw, Tw);
            continue;
        }
        for (int64_t q = 0; q < sw; q++) {
            int64_t t = q >= g->pw ? 0 : (g->pw - q + sw - 1) / sw;
            int64_t iw = q + sw * t - g->pw;
            const float *restrict dq = dr + q * Tw;
            for (; t < Tw && iw < g->W; t++, iw += sw) xr[iw] += dq[t];
        }
    }
}

/* y[0..min(n,16)) = v (acc: +=). */
static inline void store_row(float *restrict y, int64_t n, vf16 v, int acc) {
    if (n >= VL) {
        if (acc) v += VLD(y);
        VST(y, v);
    } else {
#if defined(__AVX512F__)
        __mmask16 mk = (__mmask16)((1u << n) - 1);
        if (acc) v += (vf16)_mm512_maskz_loadu_ps(mk, y);
        _mm512_mask_storeu_ps(y, mk, (__m512)v);
#else
        for (int64_t k = 0; k < n; k++) y[k] = acc ? y[k] + v[k] : v[k];
#endif
    }
}

/* Stride 1, a KH x KW kernel known at compile time, bands of R output
   rows (oh + u*dh, u < R, reading input rows oh + m*dh, m < KH + R - 1):
   each input vector is loaded once for the up to R output rows it feeds.
   3x3: the weights sit in registers, (KH + R - 1) * KW loads per R output
   vectors (18 for R = 4, instead of 4 * KH * KW loads and KH * KW
   broadcasts).  5x5: 25 weights do not fit beside the accumulators (GCC
   kept them on the stack, one load per FMA), so a column of KH + R - 1
   input vectors sits in registers and each weight is broadcast once per
   band: 40 + 25 loads per 4 output vectors instead of 100 + 25.  A band of
   R*dh rows is dh such groups (one pass over q*OWr + column); the rows
   left over at the bottom go one at a time. */
#define DW_CORR_S1(KH, KW, R)                                                            \
    static void dw_corr_##KH##x##KW(const dwp *g, const float *restrict P,               \
                                    const float *restrict w, float bias,                 \
                                    float *restrict y, int64_t ldy, int acc) {           \
        const int64_t rs = g->rs, OW = g->OW, dh = g->dh, dw = g->dw, dr = dh * rs;      \
        vf16 wv[KH * KW];                                                                \
        for (int t = 0; t < KH * KW; t++) wv[t] = (vf16){0} + w[t];                      \
        const vf16 b = (vf16){0} + bias;                                                 \
        int64_t oh = 0;                                                                  \
        for (; oh + R * dh <= g->OH; oh += R * dh) {                                     \
            for (int64_t ob = 0; ob < dh * g->OWr; ob += VL) {                           \
                const int64_t q = ob / g->OWr; /* rows oh + q + u*dh */                  \
                const int64_t oc = ob - q * g->OWr;                                      \
                const float *b0 = P + (oh + q) * rs + oc;                                \
                vf16 a[R];                                                               \
                _Pragma("GCC unroll 8") for (int u = 0; u < R; u++) a[u] = b;            \
                if (KH * KW <= 9) {                                                      \
                    /* the weights stay in registers: rows outer */                      \
                    _Pragma("GCC unroll 12") for (int m = 0; m < KH + R - 1; m++) {      \
                        const float *pr = b0 + m * dr;                                   \
                        _Pragma("GCC unroll 5") for (int j = 0; j < KW; j++) {           \
                            vf16 v = VLD(pr + j * dw);                                   \
                            _Pragma("GCC unroll 8") for (int u = 0; u < R; u++)          \
                                if (m - u >= 0 && m - u < KH)                            \
                                    a[u] += wv[(m - u) * KW + j] * v;                    \
                        }                                                                \
                    }                                                                    \
                } else {                                                                 \
                    /* too many weights for the registers: a column of input           \
                       vectors in registers, each weight loaded once per band */         \
                    _Pragma("GCC unroll 5") for (int j = 0; j < KW; j++) {               \
                        vf16 v[KH + R - 1];                                              \
                        _Pragma("GCC unroll 12") for (int m = 0; m < KH + R - 1; m++)    \
                            v[m] = VLD(b0 + m * dr + j * dw);                            \
                        _Pragma("GCC unroll 5") for (int i = 0; i < KH; i++) {           \
                            const vf16 wij = (vf16){0} + w[i * KW + j];                  \
                            _Pragma("GCC unroll 8") for (int u = 0; u < R; u++)          \
                                a[u] += wij * v[u + i];                                  \
                        }                                                                \
                    }                                                                    \
                }                                                                        \
                float *yr = y + (oh + q) * ldy + oc;                                     \
                _Pragma("GCC unroll 8") for (int u = 0; u < R; u++)                      \
                    store_row(yr + u * dh * ldy, OW - oc, a[u], acc);                    \
            }                                                                            \
        }                                                                                \
        for (; oh < g->OH; oh++) {                                                       \
            for (int64_t ob = 0; ob < g->OWr; ob += VL) {                                \
                const float *b0 = P + oh * rs + ob;                                      \
                vf16 a0 = b;                                                             \
                _Pragma("GCC unroll 5") for (int i = 0; i < KH; i++)                     \
                    _Pragma("GCC unroll 5") for (int j = 0; j < KW; j++)                 \
                        a0 += wv[i * KW + j] * VLD(b0 + i * dr + j * dw);                \
                store_row(y + oh * ldy + ob, OW - ob, a0, acc);                          \
            }                                                                            \
        }                                                                                \
    }
DW_CORR_S1(3, 3, 4)
DW_CORR_S1(5, 5, 4)

/* y (OH x OW, row stride ldy) = bias + correlation of P with the kk taps w
   (acc: y += instead).  Four output rows at a time: four independent FMA
   chains per tap. */
static void dw_corr(const dwp *g, const float *restrict P, const float *restrict w, float bias,
                    float *restrict y, int64_t ldy, int acc) {
    if (g->sh == 1 && g->sw == 1 && g->kh == g->kw && (g->kh == 3 || g->kh == 5)) {
        (g->kh == 3 ? dw_corr_3x3 : dw_corr_5x5)(g, P, w, bias, y, ldy, acc);
        return;
    }
    const int64_t kk = g->kk, rstep = g->sh * g->rs, OW = g->OW;
    const int64_t *restrict toff = g->toff;
    int64_t oh = 0;
    for (; oh + 4 <= g->OH; oh += 4) {
        for (int64_t ob = 0; ob < g->OWr; ob += VL) {
            const float *b0 = P + oh * rstep + ob;
            vf16 a0 = {0}, a1, a2, a3;
            a0 += bias;
            a1 = a0, a2 = a0, a3 = a0;
            for (int64_t t = 0; t < kk; t++) {
                const float *p = b0 + toff[t];
                float wv = w[t];
                a0 += wv * VLD(p);
                a1 += wv * VLD(p + rstep);
                a2 += wv * VLD(p + 2 * rstep);
                a3 += wv * VLD(p + 3 * rstep);
            }
            float *yr = y + oh * ldy + ob;
            store_row(yr, OW - ob, a0, acc);
            store_row(yr + ldy, OW - ob, a1, acc);
            store_row(yr + 2 * ldy, OW - ob, a2, acc);
            store_row(yr + 3 * ldy, OW - ob, a3, acc);
        }
    }
    for (; oh < g->OH; oh++) {
        for (int64_t ob = 0; ob < g->OWr; ob += VL) {
            const float *b0 = P + oh * rstep + ob;
            vf16 a0 = {0};
            a0 += bias;
            for (int64_t t = 0; t < kk; t++) a0 += w[t] * VLD(b0 + toff[t]);
            store_row(y + oh * ldy + ob, OW - ob, a0, acc);
        }
    }
}

/* da[t] += sum over the plane of G * (tap t of P).  G: OH rows of stride
   ldg, zero from column OW up to OWr.  Taps in groups of up to 8
   accumulators. */
#define WGRAD_GROUP(NT)                                                                 \
    static void dw_wgrad_##NT(const dwp *g, const float *restrict P,                  \
                              const float *restrict G, int64_t ldg,                   \
                              const int64_t *restrict toff, double *restrict da) {    \
        const int64_t rstep = g->sh * g->rs;                                          \
        vf16 a[NT];                                                                   \
        for (int u = 0; u < NT; u++) a[u] = (vf16){0};                                \
        for (int64_t oh = 0; oh < g->OH; oh++) {                                      \
            const float *gr = G + oh * ldg, *pr = P + oh * rstep;                     \
            for (int64_t ob = 0; ob < g->OWr; ob += VL) {                             \
                vf16 gv = VLD(gr + ob);                                               \
                for (int u = 0; u < NT; u++) a[u] += gv * VLD(pr + ob + toff[u]);     \
            }                                                                         \
        }                                                                             \
        for (int u = 0; u < NT; u++) da[u] += hsum_fast(a[u]);                         \
    }
WGRAD_GROUP(1)
WGRAD_GROUP(2)
WGRAD_GROUP(3)
WGRAD_GROUP(4)
WGRAD_GROUP(5)
WGRAD_GROUP(6)
WGRAD_GROUP(7)
WGRAD_GROUP(8)

/* Stride 1, KH x KW known at compile time: one accumulator per tap in
   registers, the gradient of four output rows (dh apart) loaded once, and
   each input row vector loaded once for the up to four of those rows it
   meets: 4 + (KH + 3) * KW loads per four output vectors (3x3: 22, 5x5:
   44) instead of (KH * KW + groups) per output vector. */
#define DW_WGRAD_S1(KH, KW)                                                              \
    static void dw_wgrad_##KH##x##KW(const dwp *g, const float *restrict P,              \
                                     const float *restrict G, int64_t ldg,               \
                                     double *restrict da) {                              \
        const int64_t rs = g->rs, dh = g->dh, dw = g->dw, dr = dh * rs;                  \
        vf16 a[KH * KW];                                                                 \
        for (int t = 0; t < KH * KW; t++) a[t] = (vf16){0};                              \
        int64_t oh = 0;                                                                  \
        for (; oh + 4 * dh <= g->OH; oh += 4 * dh) {                                     \
            for (int64_t ob = 0; ob < dh * g->OWr; ob += VL) {                           \
                const int64_t q = ob / g->OWr, oc = ob - q * g->OWr;                     \
                const float *gr = G + (oh + q) * ldg + oc;                               \
                const vf16 g0 = VLD(gr), g1 = VLD(gr + dh * ldg);                        \
                const vf16 g2 = VLD(gr + 2 * dh * ldg), g3 = VLD(gr + 3 * dh * ldg);     \
                const float *b0 = P + (oh + q) * rs + oc;                                \
                _Pragma("GCC unroll 8") for (int m = 0; m < KH + 3; m++) {               \
                    const float *pr = b0 + m * dr;                                       \
                    _Pragma("GCC unroll 5") for (int j = 0; j < KW; j++) {               \
                        vf16 v = VLD(pr + j * dw);                                       \
                        if (m < KH) a[m * KW + j] += g0 * v;                             \
                        if (m >= 1 && m - 1 < KH) a[(m - 1) * KW + j] += g1 * v;         \
                        if (m >= 2 && m - 2 < KH) a[(m - 2) * KW + j] += g2 * v;         \
                        if (m >= 3 && m - 3 < KH) a[(m - 3) * KW + j] += g3 * v;         \
                    }                                                                    \
                }                                                                        \
            }                                                                            \
        }                                                                                \
        for (; oh < g->OH; oh++) {                                                       \
            for (int64_t ob = 0; ob < g->OWr; ob += VL) {                                \
                const vf16 gv = VLD(G + oh * ldg + ob);                                  \
                const float *b0 = P + oh * rs + ob;                                      \
                _Pragma("GCC unroll 5") for (int i = 0; i < KH; i++)                     \
                    _Pragma("GCC unroll 5") for (int j = 0; j < KW; j++)                 \
                        a[i * KW + j] += gv * VLD(b0 + i * dr + j * dw);                 \
            }                                                                            \
        }                                                                                \
        for (int t = 0; t < KH * KW; t++) da[t] += hsum_fast(a[t]);                      \
    }
DW_WGRAD_S1(3, 3)
DW_WGRAD_S1(5, 5)

static void dw_wgrad(const dwp *g, const float *P, const float *G, int64_t ldg, double *da) {
    typedef void (*fn)(const dwp *, const float *, const float *, int64_t, const int64_t *,
                       double *);
    static const fn tab[9] = {NULL, dw_wgrad_1, dw_wgrad_2, dw_wgrad_3, dw_wgrad_4,
                              dw_wgrad_5, dw_wgrad_6, dw_wgrad_7, dw_wgrad_8};
    if (g->sh == 1 && g->sw == 1 && g->kh == g->kw && (g->kh == 3 || g->kh == 5)) {
        (g->kh == 3 ? dw_wgrad_3x3 : dw_wgrad_5x5)(g, P, G, ldg, da);
        return;
    }
    int64_t kk = g->kk, t = 0;
    /* balanced groups: 9 taps -> 5+4, 25 -> 7+6+6+6 */
    int64_t ng = (kk + 7) / 8;
    for (int64_t k = 0; k < ng; k++) {
        int64_t n = (kk - t) / (ng - k);
        if ((kk - t) % (ng - k)) n++;
        tab[n](g, P, G, ldg, g->toff + t, da + t);
        t += n;
    }
}

/* dX for the strided (or over-padded) depthwise convs, the adjoint of
   dw_corr as a gather: padded row r = sh*u + a, column phase b of D is
       D[r][b][v] = sum over the taps (i, j) with i*dh % sh == a and
                    j*dw % sw == b of  w[i][j] * G[u - i*dh/sh][v - j*dw/sw]
   (every D entry written once: no read-modify-write chains).  G is read
   from Gz, where it sits at (Ei, Ej) in zeros with row stride ldz; the
   taps of class (a, b) are ctap[cls0[a*sw+b] ..] with Gz offsets cgoff[].
   acc: D += instead of =. */
typedef struct {
    int64_t Ei, Ej, ldz, zrows;  /* Gz geometry */
    int64_t *cls0, *ctap, *cgoff;
} dwpg;

static void dwpg_init(const dwp *g, dwpg *q, int64_t *mem) {
    q->Ei = ((g->kh - 1) * g->dh) / g->sh;
    q->Ej = ((g->kw - 1) * g->dw) / g->sw;
    q->ldz = rup(g->Tw + q->Ej, VL);
    q->zrows = (g->Hn + g->sh - 1) / g->sh + q->Ei + 1;
    q->cls0 = mem;
    q->ctap = mem + g->sh * g->sw + 1;
    q->cgoff = q->ctap + g->kk;
    int64_t n = 0;
    for (int64_t a = 0; a < g->sh; a++)
        for (int64_t b = 0; b < g->sw; b++) {
            q->cls0[a * g->sw + b] = n;
            for (int64_t i = 0; i < g->kh; i++) {
                if ((i * g->dh) % g->sh != a) continue;
                for (int64_t j = 0; j < g->kw; j++) {
                    if ((j * g->dw) % g->sw != b) continue;
                    q->ctap[n] = i * g->kw + j;
                    q->cgoff[n] = (q->Ei - (i * g->dh) / g->sh) * q->ldz + q->Ej - (j * g->dw) / g->sw;
                    n++;
                }
            }
        }
    q->cls0[g->sh * g->sw] = n;
}

static void dw_pgather(const dwp *g, const dwpg *q, float *restrict D, const float *restrict Gz,
                       const float *restrict w, int acc) {
    const int64_t sh = g->sh, sw = g->sw, Tw = g->Tw, rs = g->rs, ldz = q->ldz;
    for (int64_t b = 0; b < sw; b++) {
        /* phase b holds padded columns b + sw*v; unfill reads those < W + pw */
        int64_t nv = (g->W + g->pw - b + sw - 1) / sw;
        if (nv > Tw) nv = Tw;
        for (int64_t a = 0; a < sh; a++) {
            const int64_t t0 = q->cls0[a * sw + b], t1 = q->cls0[a * sw + b + 1];
            const int64_t un = (g->Hn - a + sh - 1) / sh; /* rows sh*u + a < Hn */
            int64_t u = 0;
            for (; u + 4 <= un; u += 4) {
                float *d0 = D + (sh * u + a) * rs + b * Tw;
                const float *g0 = Gz + u * ldz;
                for (int64_t vb = 0; vb < nv; vb += VL) {
                    vf16 v0 = {0}, v1 = {0}, v2 = {0}, v3 = {0};
                    if (acc) {
                        v0 = VLD(d0 + vb), v1 = VLD(d0 + sh * rs + vb);
                        v2 = VLD(d0 + 2 * sh * rs + vb), v3 = VLD(d0 + 3 * sh * rs + vb);
                    }
                    for (int64_t t = t0; t < t1; t++) {
                        float wv = w[q->ctap[t]];
                        const float *gp = g0 + q->cgoff[t] + vb;
                        v0 += wv * VLD(gp);
                        v1 += wv * VLD(gp + ldz);
                        v2 += wv * VLD(gp + 2 * ldz);
                        v3 += wv * VLD(gp + 3 * ldz);
                    }
                    VST(d0 + vb, v0);
                    VST(d0 + sh * rs + vb, v1);
                    VST(d0 + 2 * sh * rs + vb, v2);
                    VST(d0 + 3 * sh * rs + vb, v3);
                }
            }
            for (; u < un; u++) {
                float *dr = D + (sh * u + a) * rs + b * Tw;
                const float *gr = Gz + u * ldz;
                for (int64_t vb = 0; vb < nv; vb += VL) {
                    vf16 v = {0};
                    if (acc) v = VLD(dr + vb);
                    for (int64_t t = t0; t < t1; t++) v += w[q->ctap[t]] * VLD(gr + q->cgoff[t] + vb);
                    VST(dr + vb, v);
                }
            }
        }
    }
}

/* The plan of a depthwise conv: forward geometry over x, and for the
   backward either a gather (stride 1: dX is the correlation of the padded
   gradient with the flipped kernel) or a scatter. */
typedef struct {
    dwp f;           /* x -> y */
    dwp t;           /* gy -> dx (gather mode) */
    int gather;
    dwpg pg;         /* not gather: the phase gather of dX */
    int64_t m;       /* channel multiplier */
    int64_t *offs;   /* storage of the toff tables and of pg */
} dwplan;

static int dw_plan(const cshape *s, dwplan *pl) {
    int64_t kk8 = rup(s->kh * s->kw, 8);
    pl->offs = malloc((size_t)(2 * kk8 + s->sh * s->sw + 1 + 2 * s->kh * s->kw) * sizeof(int64_t));
    if (!pl->offs) return 0;
    pl->m = s->Co / s->C;
    dwp_init(&pl->f, s->H, s->W, s->ph, s->pw, s->sh, s->sw, s->dh, s->dw, s->kh, s->kw, s->OH,
             s->OW, 0, pl->offs);
    int64_t qh = s->dh * (s->kh - 1) - s->ph, qw = s->dw * (s->kw - 1) - s->pw;
    pl->gather = s->sh == 1 && s->sw == 1 && qh >= 0 && qw >= 0;
    if (pl->gather)
        dwp_init(&pl->t, s->OH, s->OW, qh, qw, 1, 1, s->dh, s->dw, s->kh, s->kw, s->H, s->W,
                 qw + rup(s->OW, VL), pl->offs + kk8);
    else
        dwpg_init(&pl->f, &pl->pg, pl->offs + 2 * kk8);
    return 1;
}

typedef struct {
    const cshape *s;
    const dwplan *pl;
    const float *x, *w, *b, *gy;
    float *y, *gx, *gw;
    size_t scr;
    const float *wflip;  /* backward: flipped kernels [Co][kk] */
    double *part;        /* backward: nblk x Co*kk dW partials */
    int64_t nblk;
    int relu;            /* the conv reads relu(x) (sep_conv2d) */
    int gx_fresh;        /* backward: gx is uninitialised, write it */
} dw_job;

/* Plane c of image n through the row engine: P (zero padding kept) gets
   the plane, y (image n's output, [Co][OH*OW]) its m output planes. */
static void dw_fwd_plane(const dw_job *J, float *P, int64_t n, int64_t c, float *y) {
    const cshape *s = J->s;
    const dwp *g = &J->pl->f;
    const int64_t m = J->pl->m, OHW = s->OH * s->OW;
    dwp_fill(g, J->x + (n * s->C + c) * s->H * s->W, s->W, P, J->relu);
    for (int64_t mi = 0; mi < m; mi++) {
        int64_t co = c * m + mi;
        dw_corr(g, P, J->w + co * g->kk, J->b ? J->b[co] : 0.0f, y + co * OHW, s->OW, 0);
    }
}

static void dw_fwd_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    const dw_job *J = ctx;
    const cshape *s = J->s;
    float *P = nr_scratch(ith, J->scr);
    memset(P, 0, J->pl->f.psz * sizeof(float));
    for (int64_t it = i0; it < i1; it++) {
        int64_t n = it / s->C, c = it % s->C;
        dw_fwd_plane(J, P, n, c, J->y + n * s->Co * s->OH * s->OW);
    }
}

static size_t dw_bwd_scratch(const cshape *s, const dwplan *pl, int relu) {
    size_t n = 2 * pl->f.psz;
    n += pl->gather ? pl->t.psz : (size_t)(pl->pg.zrows * pl->pg.ldz);
    if (relu) n += (size_t)rup(s->H * s->W, VL); /* the plane's dx before the mask */
    return n;
}

/* dx through the ReLU in front of the conv: d = (x > 0) t, or d += that */
static void relu_mask_plane(float *restrict d, const float *restrict t, const float *restrict x,
                            int64_t n, int fresh) {
    if (fresh)
        for (int64_t i = 0; i < n; i++) d[i] = x[i] > 0.0f ? t[i] : 0.0f;
    else
        for (int64_t i = 0; i < n; i++) d[i] += x[i] > 0.0f ? t[i] : 0.0f;
}

/* The backward's per-thread buffers, carved from the scratch of size
   dw_bwd_scratch: P (x padded), D (dX in P's layout, scatter mode), Gp
   (the gradient padded: gather mode, or the zero frame Gz of the phase
   gather), T (relu: a plane's dx before the mask).  The zero padding of P
   and Gp is set here once and persists across planes. */
typedef struct {
    float *P, *D, *Gp, *T;
    const float *G;  /* the output gradient as wgrad reads it (in Gp) */
    int64_t ldg;
} dwbufs;

static float *dw_bwd_bufs(const dw_job *J, float *scr, dwbufs *b) {
    const dwplan *pl = J->pl;
    const dwp *g = &pl->f, *gt = &pl->t;
    const dwpg *pg = &pl->pg;
    size_t gsz = pl->gather ? gt->psz : (size_t)(pg->zrows * pg->ldz);
    b->P = scr, b->D = b->P + g->psz, b->Gp = b->D + g->psz;
    b->T = J->relu && J->gx ? b->Gp + gsz : NULL;
    memset(b->P, 0, g->psz * sizeof(float));
    memset(b->Gp, 0, gsz * sizeof(float));
    b->G = pl->gather ? b->Gp + gt->ph * gt->rs + gt->pw : b->Gp + pg->Ei * pg->ldz + pg->Ej;
    b->ldg = pl->gather ? gt->rs : pg->ldz;
    return scr + dw_bwd_scratch(J->s, pl, J->relu && J->gx);
}

/* The backward of image n: gy its output gradient ([Co][OH*OW]), dW added
   to part (double, NULL: none), dx written or added to J->gx as
   J->gx_fresh says.  t (not NULL): image n's forward output is recomputed
   into it on the way (the fused sep_conv2d's 1x1 dW reads it). */
static void dw_bwd_image(const dw_job *J, const dwbufs *B, int64_t n, const float *gyn,
                         double *part, float *t) {
    const cshape *s = J->s;
    const dwplan *pl = J->pl;
    const dwp *g = &pl->f, *gt = &pl->t;
    const int64_t HW = s->H * s->W, OHW = s->OH * s->OW, OW = s->OW;
    const int64_t m = pl->m, kk = g->kk;
    const dwpg *pg = &pl->pg;
    float *P = B->P, *D = B->D, *Gp = B->Gp, *T = B->T;
    for (int64_t c = 0; c < s->C; c++) {
        float *gxp = J->gx ? J->gx + (n * s->C + c) * HW : NULL;
        float *gx = T ? T : gxp;
        const int fresh = J->gx_fresh || T;
        if (t)
            dw_fwd_plane(J, P, n, c, t);
        else if (part) {
            dwp_fill(g, J->x + (n * s->C + c) * HW, s->W, P, J->relu);
        }
        for (int64_t mi = 0; mi < m; mi++) {
            int64_t co = c * m + mi;
            const float *gy = gyn + co * OHW;
            if (pl->gather) {
                dwp_fill(gt, gy, OW, Gp, 0);
            } else {
                for (int64_t oh = 0; oh < s->OH; oh++)
                    copy_short(Gp + (pg->Ei + oh) * pg->ldz + pg->Ej, gy + oh * OW, OW);
            }
            if (part) dw_wgrad(g, P, B->G, B->ldg, part + co * kk);
            if (gx) {
                if (pl->gather)
                    dw_corr(gt, Gp, J->wflip + co * kk, 0.0f, gx, s->W, !(fresh && mi == 0));
                else
                    dw_pgather(g, pg, D, Gp, J->w + co * kk, mi > 0);
            }
        }
        if (gx && !pl->gather) {
            if (fresh) memset(gx, 0, (size_t)HW * sizeof(float));
            dwp_unfill_add(g, D, gx, s->W);
        }
        if (gx && T) relu_mask_plane(gxp, T, J->x + (n * s->C + c) * HW, HW, J->gx_fresh);
    }
}

/* Backward over fixed blocks of images [n0, n1) (planes in memory order);
   dW goes to the block's partial (double), summed later in block order. */
static void dw_bwd_task(void *ctx, int64_t b0, int64_t b1, int ith) {
    const dw_job *J = ctx;
    const cshape *s = J->s;
    const int64_t nck = s->Co * J->pl->f.kk;
    dwbufs B;
    dw_bwd_bufs(J, nr_scratch(ith, J->scr), &B);
    for (int64_t blk = b0; blk < b1; blk++) {
        int64_t n0 = s->N * blk / J->nblk, n1 = s->N * (blk + 1) / J->nblk;
        double *part = J->gw ? J->part + blk * nck : NULL;
        if (part)
            for (int64_t k = 0; k < nck; k++) part[k] = 0.0;
        for (int64_t n = n0; n < n1; n++)
            dw_bwd_image(J, &B, n, J->gy + n * s->Co * s->OH * s->OW, part, NULL);
    }
}

typedef struct {
    const double *part;
    float *gw;
    int64_t nblk, n;
} dwred_job;

static void dw_reduce_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    const dwred_job *J = ctx;
    for (int64_t i = i0; i < i1; i++) {
        double t = 0.0;
        for (int64_t b = 0; b < J->nblk; b++) t += J->part[b * J->n + i];
        J->gw[i] += (float)t;
    }
}

/* a separable conv's weight gradients from its image blocks' partials:
   gwd[nd] += sum of pd (depthwise, doubles), gwp[np] += sum of pp (1x1);
   a NULL side is not wanted */
static void sep_reduce(const double *pd, float *gwd, int64_t nd, const float *pp, float *gwp,
                       int64_t np, int64_t nblk) {
    if (pd && gwd) {
        dwred_job RJ = {pd, gwd, nblk, nd};
        nr_parallel_for(nd, 1024, dw_reduce_task, &RJ);
    }
    if (pp && gwp) {
        red_job RJ = {pp, gwp, nblk, np};
        nr_parallel_for(np, 4096, reduce_task, &RJ);
    }
}

/* ------------------------------------------------- depthwise, small planes */

/* Depthwise convs on small planes (output rows of at most 8, the 7x7 and
   4x4 planes of the last stages) waste most of the 16 lanes of a row
   vector.  This engine puts 16 channels in the lanes instead: the planes
   of 16 consecutive channels are transposed into one zero-padded
   channel-last buffer P[row][col][16], and every output pixel is a vector
   of 16 channels summed over the taps, each tap a vector of the 16
   channels' weights.  No lane is idle for any plane size, stride or
   dilation.  dW sums G * P per tap over the pixels, dX (stride 1) is the
   same correlation of the padded gradient with the flipped kernel, and
   (strided) a scatter of w * G into a padded buffer. */
static nr_status prealloc_scratch(size_t nfloat);

typedef struct {
    int64_t Hp, Wp;        /* padded input (rows and columns it needs) */
    int64_t kk, npix;      /* taps, output pixels */
    int64_t *toff;         /* kk tap offsets in P (floats) */
    int64_t *pb;           /* npix output pixel bases in P (floats) */
    /* stride-1 dX: the gradient zero-padded by (qh, qw), H x W outputs */
    int64_t gather, qh, qw, Hz, Wz;
    int64_t *zoff, *zb;    /* kk tap offsets and H*W pixel bases in it */
    int64_t *mem;
} dwcplan;

/* The shapes the engine can take: depthwise, 16k channels. */
static int dwc_fits(const cshape *s) {
    return s->G == s->C && s->Co == s->C && s->C % VL == 0 && s->W <= 64 && s->kh * s->kw <= 256;
}

/* The shapes a lone depthwise conv takes it for: output rows of up to 8
   (stride 1: from 14 on the row engine is as fast), strided ones of up to
   16 (measured on [128,96,28,28] s2: 15-40% faster).  Fused into
   sep_conv2d it takes more (sepc_fusable). */
static int dwc_usable(const cshape *s) {
    return dwc_fits(s) && (s->OW <= 8 || (s->sw > 1 && s->OW <= 16));
}

static int dwc_plan(const cshape *s, dwcplan *q) {
    const int64_t kk = s->kh * s->kw, npix = s->OH * s->OW, HW = s->H * s->W;
    q->Hp = s->H + 2 * s->ph;
    q->Wp = s->W + 2 * s->pw;
    int64_t hn = (s->OH - 1) * s->sh + (s->kh - 1) * s->dh + 1;
    int64_t wn = (s->OW - 1) * s->sw + (s->kw - 1) * s->dw + 1;
    if (hn > q->Hp) q->Hp = hn;
    if (wn > q->Wp) q->Wp = wn;
    q->kk = kk, q->npix = npix;
    q->qh = s->dh * (s->kh - 1) - s->ph;
    q->qw = s->dw * (s->kw - 1) - s->pw;
    q->gather = s->sh == 1 && s->sw == 1 && q->qh >= 0 && q->qw >= 0;
    q->Hz = s->H + (s->kh - 1) * s->dh;
    q->Wz = s->W + (s->kw - 1) * s->dw;
    q->mem = malloc((size_t)(2 * kk + npix + HW) * sizeof(int64_t));
    if (!q->mem) return 0;
    q->toff = q->mem, q->zoff = q->mem + kk, q->pb = q->mem + 2 * kk, q->zb = q->pb + npix;
    for (int64_t i = 0; i < s->kh; i++)
        for (int64_t j = 0; j < s->kw; j++) {
            q->toff[i * s->kw + j] = (i * s->dh * q->Wp + j * s->dw) * VL;
            q->zoff[i * s->kw + j] = (i * s->dh * q->Wz + j * s->dw) * VL;
        }
    for (int64_t p = 0; p < npix; p++)
        q->pb[p] = ((p / s->OW) * s->sh * q->Wp + (p % s->OW) * s->sw) * VL;
    for (int64_t p = 0; p < HW; p++) q->zb[p] = ((p / s->W) * q->Wz + p % s->W) * VL;
    return 1;
}

#if defined(__AVX512F__)
/* the pixels q0 .. q0+15 that exist (of npix): their count and lane mask */
static inline __mmask16 chunk_mask(int64_t npix, int64_t q0, int64_t *nq) {
    *nq = npix - q0 < VL ? npix - q0 : VL;
    return (__mmask16)(*nq == VL ? 0xffff : (1u << *nq) - 1);
}
#endif

/* dst[(q / W) * ldr + q % W][0..16) = src[j * lds + q] (j < 16) for the
   npix pixels q; relu: max(0, .). */
static void cl_pack(const float *restrict src, int64_t lds, int64_t npix, int64_t W, int64_t ldr,
                    float *restrict dst, int relu) {
    int64_t q0 = 0;
#if defined(__AVX512F__)
    for (; q0 < npix; q0 += VL) {
        int64_t nq;
        __mmask16 mk = chunk_mask(npix, q0, &nq);
        __m512 r[16];
        for (int j = 0; j < VL; j++) {
            r[j] = _mm512_maskz_loadu_ps(mk, src + j * lds + q0);
            if (relu) r[j] = _mm512_max_ps(_mm512_setzero_ps(), r[j]);
        }
        tr16(r);
        int64_t row = q0 / W, col = q0 % W;
        for (int64_t p = 0; p < nq; p++) {
            _mm512_storeu_ps(dst + (row * ldr + col) * VL, r[p]);
            if (++col == W) col = 0, row++;
        }
    }
#endif
    for (int64_t q = q0; q < npix; q++)
        for (int j = 0; j < VL; j++) {
            float v = src[j * lds + q];
            dst[((q / W) * ldr + q % W) * VL + j] = relu && v < 0.0f ? 0.0f : v;
        }
}

/* dst[j * ldd + q] = (or +=) src[q][j] for the npix pixels q (src
   channel-last, contiguous); mask (relu in front of the conv): only where
   mask[j * ldd + q] > 0, else 0 (or nothing added). */
static void cl_unpack(const float *restrict src, int64_t npix, float *restrict dst, int64_t ldd,
                      int acc, const float *restrict mask) {
    int64_t q0 = 0;
#if defined(__AVX512F__)
    for (; q0 < npix; q0 += VL) {
        int64_t nq;
        __mmask16 mk = chunk_mask(npix, q0, &nq);
        __m512 r[16];
        for (int p = 0; p < VL; p++) r[p] = p < nq ? _mm512_loadu_ps(src + (q0 + p) * VL) : _mm512_setzero_ps();
        tr16(r);
        for (int j = 0; j < VL; j++) {
            float *d = dst + j * ldd + q0;
            __m512 v = r[j];
            if (mask) {
                __mmask16 pos = _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(mk, mask + j * ldd + q0),
                                                   _mm512_setzero_ps(), _CMP_GT_OQ);
                v = _mm512_maskz_mov_ps(pos, v);
            }
            if (acc) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, d));
            _mm512_mask_storeu_ps(d, mk, v);
        }
    }
#endif
    for (int64_t q = q0; q < npix; q++)
        for (int j = 0; j < VL; j++) {
            float v = src[q * VL + j];
            if (mask && !(mask[j * ldd + q] > 0.0f)) v = 0.0f;
            dst[j * ldd + q] = acc ? dst[j * ldd + q] + v : v;
        }
}

/* Y[p * ldy] = bias + sum over the taps of wT[t] * P[b[p] + toff[t]] (16
   channels per vector), 8 pixels at a time: 8 independent FMA chains
   sharing each weight load. */
static void dwc_corr(const float *restrict P, const int64_t *restrict b, int64_t npix,
                     const float *restrict wT, const int64_t *restrict toff, int64_t kk,
                     vf16 bias, float *restrict Y, int64_t ldy) {
    int64_t p = 0;
    for (; p + 8 <= npix; p += 8) {
        const float *p0 = P + b[p], *p1 = P + b[p + 1], *p2 = P + b[p + 2], *p3 = P + b[p + 3];
        const float *p4 = P + b[p + 4], *p5 = P + b[p + 5], *p6 = P + b[p + 6], *p7 = P + b[p + 7];
        vf16 a0 = bias, a1 = bias, a2 = bias, a3 = bias, a4 = bias, a5 = bias, a6 = bias, a7 = bias;
        for (int64_t t = 0; t < kk; t++) {
            vf16 w = VLD(wT + t * VL);
            int64_t o = toff[t];
            a0 += w * VLD(p0 + o), a1 += w * VLD(p1 + o), a2 += w * VLD(p2 + o);
            a3 += w * VLD(p3 + o), a4 += w * VLD(p4 + o), a5 += w * VLD(p5 + o);
            a6 += w * VLD(p6 + o), a7 += w * VLD(p7 + o);
        }
        float *y = Y + p * ldy;
        VST(y, a0), VST(y + ldy, a1), VST(y + 2 * ldy, a2), VST(y + 3 * ldy, a3);
        VST(y + 4 * ldy, a4), VST(y + 5 * ldy, a5), VST(y + 6 * ldy, a6), VST(y + 7 * ldy, a7);
    }
    for (; p < npix; p++) {
        const float *p0 = P + b[p];
        vf16 a0 = bias, a1 = {0};
        int64_t t = 0;
        for (; t + 2 <= kk; t += 2) {
            a0 += VLD(wT + t * VL) * VLD(p0 + toff[t]);
            a1 += VLD(wT + (t + 1) * VL) * VLD(p0 + toff[t + 1]);
        }
        if (t < kk) a0 += VLD(wT + t * VL) * VLD(p0 + toff[t]);
        VST(Y + p * ldy, a0 + a1);
    }
}

/* 3x3 and 5x5: every tap's accumulator in a register, G and the pixel's
   base loaded once per pixel for all taps (the loop over taps outside
   loads both again for each tap).  One accumulator per tap, pixels in
   order (the generic loop below splits each tap over four): the order is
   fixed by the shapes, so results stay the same with any thread count. */
#define DWC_WGRAD_REG(KK)                                                                   \
    static void dwc_wgrad_##KK(const float *restrict P, const int64_t *restrict b,          \
                               int64_t npix, const float *restrict G, int64_t ldg,          \
                               const int64_t *restrict toff, double *restrict dacc) {       \
        vf16 a[KK];                                                                         \
        int64_t o[KK];                                                                      \
        for (int t = 0; t < KK; t++) a[t] = (vf16){0}, o[t] = toff[t];                      \
        for (int64_t p = 0; p < npix; p++) {                                                \
            const vf16 g = VLD(G + p * ldg);                                                \
            const float *pp = P + b[p];                                                     \
            _Pragma("GCC unroll 25") for (int t = 0; t < KK; t++) a[t] += g * VLD(pp + o[t]); \
        }                                                                                   \
        for (int t = 0; t < KK; t++)                                                        \
            for (int j = 0; j < VL; j++) dacc[t * VL + j] += (double)a[t][j];               \
    }
DWC_WGRAD_REG(9)
DWC_WGRAD_REG(25)

/* dacc[t] += sum over the pixels of G[p * ldg] * P[b[p] + toff[t]]
   (doubles, 16 channels per tap). */
static void dwc_wgrad(const float *restrict P, const int64_t *restrict b, int64_t npix,
                      const float *restrict G, int64_t ldg, const int64_t *restrict toff,
                      int64_t kk, double *restrict dacc) {
    if (kk == 9 || kk == 25) {
        (kk == 9 ? dwc_wgrad_9 : dwc_wgrad_25)(P, b, npix, G, ldg, toff, dacc);
        return;
    }
    for (int64_t t = 0; t < kk; t++) {
        const float *pt = P + toff[t];
        vf16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        int64_t p = 0;
        for (; p + 4 <= npix; p += 4) {
            a0 += VLD(G + p * ldg) * VLD(pt + b[p]);
            a1 += VLD(G + (p + 1) * ldg) * VLD(pt + b[p + 1]);
            a2 += VLD(G + (p + 2) * ldg) * VLD(pt + b[p + 2]);
            a3 += VLD(G + (p + 3) * ldg) * VLD(pt + b[p + 3]);
        }
        for (; p < npix; p++) a0 += VLD(G + p * ldg) * VLD(pt + b[p]);
        vf16 a = (a0 + a1) + (a2 + a3);
        double *d = dacc + t * VL;
        for (int j = 0; j < VL; j++) d[j] += (double)a[j];
    }
}

/* D[b[p] + toff[t]] += wT[t] * G[p * ldg]: the adjoint of dwc_corr
   (strided dX) */
static void dwc_scatter(float *restrict D, const int64_t *restrict b, int64_t npix,
                        const float *restrict wT, const int64_t *restrict toff, int64_t kk,
                        const float *restrict G, int64_t ldg) {
    for (int64_t p = 0; p < npix; p++) {
        vf16 g = VLD(G + p * ldg);
        float *d = D + b[p];
        for (int64_t t = 0; t < kk; t++) VST(d + toff[t], VLD(d + toff[t]) + VLD(wT + t * VL) * g);
    }
}

typedef struct {
    const cshape *s;
    const dwcplan *q;
    const float *x, *b, *gy;
    const float *wT, *wTf;  /* weights [C/16][kk][16], flipped for dX */
    float *y, *gx;
    double *part;           /* backward: nblk x C*kk dW partials */
    int64_t nblk;
    size_t scr;
    int relu, gx_fresh;
} dwc_job;

/* channels c0 .. c0+15 of image n into the padded buffer (ReLU applied).
   (The engine's tasks work image by image on what earlier ops left in
   memory: each asks for the next image's data with prefetch_image while
   it computes this one.) */
static void dwc_pack_group(const dwc_job *D, float *P, int64_t n, int64_t c0) {
    const cshape *s = D->s;
    const int64_t HW = s->H * s->W;
    cl_pack(D->x + (n * s->C + c0) * HW, HW, HW, s->W, D->q->Wp,
            P + (s->ph * D->q->Wp + s->pw) * VL, D->relu);
}

static size_t dwc_fwd_scratch(const dwcplan *q) {
    return (size_t)rup(q->Hp * q->Wp * VL, VL) + (size_t)q->npix * VL;
}

static void dwc_fwd_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    const dwc_job *J = ctx;
    const cshape *s = J->s;
    const dwcplan *q = J->q;
    const int64_t OHW = s->OH * s->OW, NG = s->C / VL;
    float *P = nr_scratch(ith, J->scr), *Y = P + rup(q->Hp * q->Wp * VL, VL);
    memset(P, 0, (size_t)(q->Hp * q->Wp * VL) * sizeof(float));
    for (int64_t it = i0; it < i1; it++) {
        int64_t n = it / NG, c0 = (it % NG) * VL;
        dwc_pack_group(J, P, n, c0);
        vf16 bias = {0};
        if (J->b) bias = VLD(J->b + c0);
        dwc_corr(P, q->pb, q->npix, J->wT + c0 * q->kk, q->toff, q->kk, bias, Y, VL);
        cl_unpack(Y, OHW, J->y + (n * s->C + c0) * OHW, OHW, 0, NULL);
    }
}

static size_t dwc_bwd_scratch(const cshape *s, const dwcplan *q) {
    size_t pz = (size_t)rup(q->Hp * q->Wp * VL, VL), zz = (size_t)rup(q->Hz * q->Wz * VL, VL);
    size_t g = (size_t)q->npix * VL, x = (size_t)(s->H * s->W) * VL;
    size_t d = 2 * (size_t)q->kk * VL; /* doubles */
    return pz + (q->gather ? zz : pz) + x + g + d;
}

/* dX of image n's channels c0 .. c0+15 from their output gradient G
   (channel-last, pixel stride ldg), written or added to J->gx through the
   ReLU mask.  Z: the padded gradient (gather; its padding stays zero) or
   the padded dX (scatter), X: the dX pixels. */
static void dwc_dx_group(const dwc_job *J, float *Z, float *X, const float *G, int64_t ldg,
                         int64_t n, int64_t c0) {
    const cshape *s = J->s;
    const dwcplan *q = J->q;
    const int64_t HW = s->H * s->W, kk = q->kk;
    if (q->gather) {
        float *Zin = Z + (q->qh * q->Wz + q->qw) * VL;
        for (int64_t oh = 0; oh < s->OH; oh++)
            for (int64_t ow = 0; ow < s->OW; ow++)
                VST(Zin + (oh * q->Wz + ow) * VL, VLD(G + (oh * s->OW + ow) * ldg));
        dwc_corr(Z, q->zb, HW, J->wTf + c0 * kk, q->zoff, kk, (vf16){0}, X, VL);
    } else { /* D: the padded dX, zeroed per plane group */
        memset(Z, 0, (size_t)rup(q->Hp * q->Wp * VL, VL) * sizeof(float));
        dwc_scatter(Z, q->pb, q->npix, J->wT + c0 * kk, q->toff, kk, G, ldg);
        for (int64_t ih = 0; ih < s->H; ih++)
            memcpy(X + ih * s->W * VL, Z + ((ih + s->ph) * q->Wp + s->pw) * VL,
                   (size_t)(s->W * VL) * sizeof(float));
    }
    cl_unpack(X, HW, J->gx + (n * s->C + c0) * HW, HW, !J->gx_fresh,
              J->relu ? J->x + (n * s->C + c0) * HW : NULL);
}

/* Backward over fixed blocks of images: dW partial per block (doubles,
   summed in block order later), dX per plane group. */
static void dwc_bwd_task(void *ctx, int64_t b0, int64_t b1, int ith) {
    const dwc_job *J = ctx;
    const cshape *s = J->s;
    const dwcplan *q = J->q;
    const int64_t HW = s->H * s->W, OHW = s->OH * s->OW, NG = s->C / VL, kk = q->kk;
    const size_t pz = (size_t)rup(q->Hp * q->Wp * VL, VL), zz = (size_t)rup(q->Hz * q->Wz * VL, VL);
    float *P = nr_scratch(ith, J->scr);
    float *Z = P + pz;                    /* gather: padded gradient; else D */
    float *X = Z + (q->gather ? zz : pz); /* dX pixels, channel-last */
    float *G = X + HW * VL;               /* the gradient, channel-last */
    double *dacc = (double *)(G + q->npix * VL);
    memset(P, 0, pz * sizeof(float));
    if (q->gather) memset(Z, 0, zz * sizeof(float));
    for (int64_t blk = b0; blk < b1; blk++) {
        int64_t n0 = s->N * blk / J->nblk, n1 = s->N * (blk + 1) / J->nblk;
        double *part = J->part ? J->part + blk * s->C * kk : NULL;
        for (int64_t cg = 0; cg < NG; cg++) {
            const int64_t c0 = cg * VL;
            if (part) memset(dacc, 0, (size_t)(kk * VL) * sizeof(double));
            for (int64_t n = n0; n < n1; n++) {
                cl_pack(J->gy + (n * s->C + c0) * OHW, OHW, OHW, s->OW, s->OW, G, 0);
                if (part) {
                    dwc_pack_group(J, P, n, c0);
                    dwc_wgrad(P, q->pb, q->npix, G, VL, q->toff, kk, dacc);
                }
                if (J->gx) dwc_dx_group(J, Z, X, G, VL, n, c0);
            }
            if (part)
                for (int64_t t = 0; t < kk; t++)
                    for (int j = 0; j < VL; j++) part[(c0 + j) * kk + t] = dacc[t * VL + j];
        }
    }
}

/* weights [C][kk] -> [C/16][kk][16] (flip: tap kk-1-t) */
static void dwc_wpack(const float *w, int64_t C, int64_t kk, int flip, float *wT) {
    for (int64_t c = 0; c < C; c++)
        for (int64_t t = 0; t < kk; t++)
            wT[((c / VL) * kk + t) * VL + c % VL] = w[c * kk + (flip ? kk - 1 - t : t)];
}

static nr_status dwc_fwd(const cshape *s, const float *xd, const float *wd, const float *bd,
                         float *yd, int relu) {
    dwcplan q;
    if (!dwc_plan(s, &q)) return nr_seterror(NR_ENOMEM, "conv2d: out of memory");
    float *wT = aligned_alloc(64, (size_t)rup(s->C * q.kk, VL) * sizeof(float));
    size_t scr = dwc_fwd_scratch(&q);
    nr_status st = wT ? prealloc_scratch(scr) : nr_seterror(NR_ENOMEM, "conv2d: out of memory");
    if (st == NR_OK) {
        dwc_wpack(wd, s->C, q.kk, 0, wT);
        dwc_job J = {s, &q, xd, bd, NULL, wT, NULL, yd, NULL, NULL, 0, scr, relu, 0};
        nr_parallel_for(s->N * (s->C / VL), 1, dwc_fwd_task, &J);
    }
    free(wT);
    free(q.mem);
    return st;
}

/* gx (fresh: written, else added to) and the dW partials of nblk image
   blocks (part, [nblk][C][kk] doubles; NULL: no dW) */
static nr_status dwc_bwd(const cshape *s, const float *xd, const float *wd, const float *gy,
                         float *gx, double *part, int64_t nblk, int relu, int gx_fresh) {
    dwcplan q;
    if (!dwc_plan(s, &q)) return nr_seterror(NR_ENOMEM, "conv2d backward: out of memory");
    size_t wsz = (size_t)rup(s->C * q.kk, VL);
    float *wT = aligned_alloc(64, 2 * wsz * sizeof(float));
    size_t scr = dwc_bwd_scratch(s, &q);
    nr_status st = wT ? prealloc_scratch(scr)
                      : nr_seterror(NR_ENOMEM, "conv2d backward: out of memory");
    if (st == NR_OK) {
        dwc_wpack(wd, s->C, q.kk, 0, wT);
        dwc_wpack(wd, s->C, q.kk, 1, wT + wsz);
        dwc_job J = {s, &q, xd, NULL, gy, wT, wT + wsz, NULL, gx, part, nblk, scr, relu, gx_fresh};
        nr_parallel_for(nblk, 1, dwc_bwd_task, &J);
    }
    free(wT);
    free(q.mem);
    return st;
}

/* ----------------------------------------------------------- direct path */

/* Dense (grouped) convolutions without im2col.  Each image's input channels
   are copied into a zero-padded buffer whose rows and columns are split by
   stride phase: padded pixel (r, c) of channel ci lives at
       P[ci*cs + ((r%s)*s + c%s)*pp + (r/s)*Wq + c/s].
   Output pixel (oh, ow) is computed on a flattened grid q = oh*Wq + ow
   (Wq >= OW; columns ow >= OW are junk and never stored), and tap
   k = (ci, i, j) of every output reads P[off[k] + q]: one contiguous run
   per tap across the whole plane, whatever the stride and dilation.  The
   forward is then a small GEMM with an implicit B: tiles of 8 output
   channels x 48 grid points in registers, 16 lanes wide.  dW is a GEMM
   over the grid (the gradient placed on the same grid with zero junk
   columns), and for stride 1 dX is again this correlation, of the padded
   output gradient with the flipped, transposed kernel. */

#define MR 8 /* output channels per forward tile */

#if defined(__AVX512F__)
/* keeps a loaded vector in a register (GCC would otherwise fold the load
   into each of the FMAs that use it, multiplying the loads) */
#define KEEP(v) __asm__("" : "+v"(v))
#else
#define KEEP(v) ((void)0)
#endif

typedef struct {
    int64_t C, H, W;             /* source channels, plane */
    int64_t ph, pw, s, dh, dw, kh, kw;
    int64_t Hq, Wq, pp, cs;      /* phase plane rows, cols, size; channel stride */
    int64_t OH, OW, Q, nq;       /* output grid: Q = OH*Wq points, nq vectors */
    int64_t K;                   /* C*kh*kw */
    size_t psz;                  /* floats in a P buffer */
    int64_t *off;                /* K tap offsets */
    int32_t *seg0;               /* store runs per grid vector (dgeo_mksegs) */
    int64_t *soff;
    uint32_t *smask;
} dgeo;

/* off: K entries of storage.  Stride s for both dims (sh == sw). */
static void dgeo_init(dgeo *g, int64_t C, int64_t H, int64_t W, int64_t ph, int64_t pw,
                      int64_t s, int64_t dh, int64_t dw, int64_t kh, int64_t kw, int64_t OH,
                      int64_t OW, int64_t *off) {
    g->C = C, g->H = H, g->W = W, g->ph = ph, g->pw = pw, g->s = s;
    g->dh = dh, g->dw = dw, g->kh = kh, g->kw = kw, g->OH = OH, g->OW = OW;
    g->Hq = OH + ((kh - 1) * dh) / s;
    g->Wq = OW + ((kw - 1) * dw) / s;
    g->pp = g->Hq * g->Wq;
    g->cs = s * s * g->pp;
    g->Q = OH * g->Wq;
    g->nq = (g->Q + VL - 1) / VL;
    g->K = C * kh * kw;
    g->psz = (size_t)rup(C * g->cs + g->Wq + 2 * VL, VL);
    g->off = off;
    g->seg0 = NULL, g->soff = NULL, g->smask = NULL;
    for (int64_t ci = 0; ci < C; ci++)
        for (int64_t i = 0; i < kh; i++)
            for (int64_t j = 0; j < kw; j++) {
                int64_t r = i * dh, c = j * dw;
                off[(ci * kh + i) * kw + j] =
                    ci * g->cs + ((r % s) * s + c % s) * g->pp + (r / s) * g->Wq + c / s;
            }
}

/* The interior of P <- src [C][H][W] (row stride lds, channel stride ldc).
   The padding is zeroed once per buffer by the caller and stays zero. */
static void dgeo_fill(const dgeo *g, const float *restrict src, int64_t ldc, int64_t lds,
                      float *restrict P) {
    const int64_t s = g->s, Wq = g->Wq;
    /* rows: padded row r = ih + ph sits in phase a = r % s at u = r / s */
    const int64_t r0 = g->ph, a0 = r0 % s, u0 = r0 / s;
    int64_t n = g->W; /* stride 1: columns that fit */
    if (g->pw + n > Wq) n = Wq - g->pw;
    for (int64_t ci = 0; ci < g->C; ci++) {
        const float *xc = src + ci * ldc;
        float *pc = P + ci * g->cs;
        int64_t a = a0, u = u0;
        for (int64_t ih = 0; ih < g->H && u < g->Hq; ih++) {
            const float *restrict xr = xc + ih * lds;
            float *pr = pc + a * s * g->pp + u * Wq;
            if (s == 1) {
                copy_short(pr + g->pw, xr, n);
            } else if (s == 2) {
                split2_row(xr, g->W, g->pw, pr, g->pp, Wq, 0);
            } else {
                for (int64_t b = 0; b < s; b++) {
                    int64_t v = b >= g->pw ? 0 : (g->pw - b + s - 1) / s;
                    int64_t iw = b + s * v - g->pw;
                    float *restrict d = pr + b * g->pp;
                    for (; v < Wq && iw < g->W; v++, iw += s) d[v] = xr[iw];
                }
            }
            if (++a == s) a = 0, u++;
        }
    }
}

/* Where the 16 grid points from q land in an OH x OW plane: up to 17 runs
   (offset of lane 0, lane mask). */
static int dgeo_segs(const dgeo *g, int64_t q, int64_t *soff, uint32_t *smask) {
    int n = 0;
    int64_t oh = q / g->Wq, c = q - oh * g->Wq, l = 0;
    while (l < VL && oh < g->OH) {
        int64_t nl = g->Wq - c;
        if (nl > VL - l) nl = VL - l;
        int64_t nv = g->OW - c;
        if (nv > nl) nv = nl;
        if (nv > 0) {
            if (soff) {
                soff[n] = oh * g->OW + c - l;
                smask[n] = ((1u << nv) - 1) << l;
            }
            n++;
        }
        l += nl;
        oh++;
        c = 0;
    }
    return n;
}

/* The runs of every grid vector, once per geometry: vector v has runs
   seg0[v] .. seg0[v+1]-1.  Returns 0 on out of memory. */
static int dgeo_mksegs(dgeo *g) {
    g->seg0 = malloc((size_t)(g->nq + 1) * sizeof(int32_t));
    if (!g->seg0) return 0;
    int64_t tot = 0;
    for (int64_t v = 0; v < g->nq; v++) {
        g->seg0[v] = (int32_t)tot;
        tot += dgeo_segs(g, v * VL, NULL, NULL);
    }
    g->seg0[g->nq] = (int32_t)tot;
    g->soff = malloc((size_t)(tot ? tot : 1) * sizeof(int64_t));
    g->smask = malloc((size_t)(tot ? tot : 1) * sizeof(uint32_t));
    if (!g->soff || !g->smask) return 0;
    for (int64_t v = 0; v < g->nq; v++) dgeo_segs(g, v * VL, g->soff + g->seg0[v], g->smask + g->seg0[v]);
    return 1;
}

static void dgeo_free(dgeo *g) {
    free(g->seg0);
    free(g->soff);
    free(g->smask);
    g->seg0 = NULL, g->soff = NULL, g->smask = NULL;
}

static inline void store_seg(float *y, int64_t off, uint32_t mask, vf16 v, int acc) {
#if defined(__AVX512F__)
    float *p = y + off; /* lanes outside the mask are not touched */
    __mmask16 mk = (__mmask16)mask;
    if (acc) v += (vf16)_mm512_maskz_loadu_ps(mk, p);
    _mm512_mask_storeu_ps(p, mk, (__m512)v);
#else
    for (int l = 0; l < VL; l++)
        if (mask >> l & 1) y[off + l] = acc ? y[off + l] + v[l] : v[l];
#endif
}

/* a[R][V] += sum_k wb[k][r] * P[off[k] + 16v + lane] */
#define DCK(R, V)                                                                       \
    static void dck_##R##_##V(const float *restrict P, const int64_t *restrict off,    \
                              int64_t K, const float *restrict wb, vf16 *restrict acc) { \
        vf16 a[R][V];                                                                   \
        for (int r = 0; r < R; r++)                                                     \
            for (int v = 0; v < V; v++) a[r][v] = acc[r * V + v];                       \
        for (int64_t k = 0; k < K; k++) {                                               \
            const float *p = P + off[k];                                                \
            const float *w = wb + k * MR;                                               \
            vf16 x[V];                                                                  \
            for (int v = 0; v < V; v++) {                                               \
                x[v] = VLD(p + VL * v);                                                 \
                KEEP(x[v]);                                                             \
            }                                                                           \
            for (int r = 0; r < R; r++)                                                 \
                for (int v = 0; v < V; v++) a[r][v] += w[r] * x[v];                     \
        }                                                                               \
        for (int r = 0; r < R; r++)                                                     \
            for (int v = 0; v < V; v++) acc[r * V + v] = a[r][v];                       \
    }
#define DCK_V(R) DCK(R, 1) DCK(R, 2) DCK(R, 3)
DCK_V(1)
DCK_V(2)
DCK_V(3)
DCK_V(4)
DCK_V(5)
DCK_V(6)
DCK_V(7)
DCK_V(8)

typedef void (*dck_fn)(const float *, const int64_t *, int64_t, const float *, vf16 *);
static const dck_fn dck_tab[MR + 1][4] = {
    {0}, {0, dck_1_1, dck_1_2, dck_1_3}, {0, dck_2_1, dck_2_2, dck_2_3},
    {0, dck_3_1, dck_3_2, dck_3_3}, {0, dck_4_1, dck_4_2, dck_4_3},
    {0, dck_5_1, dck_5_2, dck_5_3}, {0, dck_6_1, dck_6_2, dck_6_3},
    {0, dck_7_1, dck_7_2, dck_7_3}, {0, dck_8_1, dck_8_2, dck_8_3}};

/* Y [Co][OH][OW] (= or += with acc) = bias + correlation of P with the
   packed kernel wp [ceil(Co/MR)][K][MR]. */
static void dconv_run(const dgeo *g, const float *P, const float *wp, const float *bias,
                      int64_t Co, float *Y, int acc) {
    const int64_t OHW = g->OH * g->OW;
    for (int64_t cb = 0; cb * MR < Co; cb++) {
        int R = (int)(Co - cb * MR < MR ? Co - cb * MR : MR);
        const float *wb = wp + cb * g->K * MR;
        for (int64_t qv = 0; qv < g->nq; qv += 3) {
            int V = (int)(g->nq - qv < 3 ? g->nq - qv : 3);
            vf16 a[MR * 3];
            for (int r = 0; r < R; r++) {
                vf16 b0 = {0};
                b0 += bias ? bias[cb * MR + r] : 0.0f;
                for (int v = 0; v < V; v++) a[r * V + v] = b0;
            }
            dck_tab[R][V](P + qv * VL, g->off, g->K, wb, a);
            for (int v = 0; v < V; v++) {
                int32_t k0 = g->seg0[qv + v], k1 = g->seg0[qv + v + 1];
                for (int r = 0; r < R; r++) {
                    float *y = Y + (cb * MR + r) * OHW;
                    for (int32_t k = k0; k < k1; k++)
                        store_seg(y, g->soff[k], g->smask[k], a[r * V + v], acc);
                }
            }
        }
    }
}


/* dw[r][t] += sum over ni images i and the grid q of
   G[i][r][q] * P[i][off[t] + q].  Summing several images in registers
   before the horizontal sums keeps those off the critical path. */
#define DWK(R, T)                                                                       \
    static void dwk_##R##_##T(const float *restrict G, int64_t ldg, int64_t gstr,      \
                              const float *restrict P, int64_t pstr, int64_t ni,       \
                              const int64_t *restrict off, int64_t nq,                 \
                              float *restrict dw, int64_t ldd) {                       \
        vf16 a[R][T];                                                                   \
        for (int r = 0; r < R; r++)                                                     \
            for (int t = 0; t < T; t++) a[r][t] = (vf16){0};                            \
        for (int64_t i = 0; i < ni; i++) {                                              \
            const float *gi = G + i * gstr, *p[T];                                      \
            for (int t = 0; t < T; t++) p[t] = P + i * pstr + off[t];                   \
            for (int64_t q = 0; q < nq * VL; q += VL) {                                 \
                vf16 gv[R];                                                             \
                for (int r = 0; r < R; r++) gv[r] = VLD(gi + r * ldg + q);             \
                for (int t = 0; t < T; t++) {                                           \
                    vf16 x = VLD(p[t] + q);                                             \
                    KEEP(x);                                                            \
                    for (int r = 0; r < R; r++) a[r][t] += gv[r] * x;                   \
                }                                                                       \
            }                                                                           \
        }                                                                               \
        for (int r = 0; r < R; r++)                                                     \
            for (int t = 0; t < T; t++) dw[r * ldd + t] += hsum_fast(a[r][t]);          \
    }
#define DWK_T(R) DWK(R, 1) DWK(R, 2) DWK(R, 3) DWK(R, 4) DWK(R, 5) DWK(R, 6)
DWK_T(1)
DWK_T(2)
DWK_T(3)
DWK_T(4)

typedef void (*dwk_fn)(const float *, int64_t, int64_t, const float *, int64_t, int64_t,
                       const int64_t *, int64_t, float *, int64_t);
static const dwk_fn dwk_tab[5][7] = {
    {0},
    {0, dwk_1_1, dwk_1_2, dwk_1_3, dwk_1_4, dwk_1_5, dwk_1_6},
    {0, dwk_2_1, dwk_2_2, dwk_2_3, dwk_2_4, dwk_2_5, dwk_2_6},
    {0, dwk_3_1, dwk_3_2, dwk_3_3, dwk_3_4, dwk_3_5, dwk_3_6},
    {0, dwk_4_1, dwk_4_2, dwk_4_3, dwk_4_4, dwk_4_5, dwk_4_6}};

/* dW [Co][K] += sum over ni images of Gz [Co][nq*16] (the gradient on the
   grid, zero junk) x taps of P. */
static void dconv_wgrad(const dgeo *g, const float *P, int64_t pstr, const float *Gz,
                        int64_t ldg, int64_t gstr, int64_t ni, int64_t Co, float *dw) {
    for (int64_t cb = 0; cb < Co; cb += 4) {
        int R = (int)(Co - cb < 4 ? Co - cb : 4);
        for (int64_t k0 = 0; k0 < g->K; k0 += 6) {
            int T = (int)(g->K - k0 < 6 ? g->K - k0 : 6);
            dwk_tab[R][T](Gz + cb * ldg, ldg, gstr, P, pstr, ni, g->off + k0, g->nq,
                          dw + cb * g->K + k0, g->K);
        }
    }
}

/* Channel-vector kernels, for Co a multiple of 16: 16 output channels per
   register and a run of NW output pixels of one row per tile (accumulators
   a[pixel][channel vector]), every input value broadcast from P.  No junk
   columns are computed; the tile is transposed in registers to store the
   NCHW rows. */
#define CVK(NC, NW)                                                                     \
    static void cvk_##NC##_##NW(const float *restrict P, const int64_t *restrict off,  \
                                int64_t K, const float *restrict wv, const vf16 *init, \
                                vf16 *restrict acc) {                                  \
        vf16 a[NW][NC];                                                                 \
        _Pragma("GCC unroll 32") for (int p = 0; p < NW; p++)                           \
            _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++) a[p][c] = init[c];     \
        for (int64_t k = 0; k < K; k++) {                                               \
            const float *x = P + off[k];                                                \
            vf16 w[NC];                                                                 \
            for (int c = 0; c < NC; c++) {                                              \
                w[c] = VLD(wv + (k * NC + c) * VL);                                     \
                KEEP(w[c]);                                                             \
            }                                                                           \
            _Pragma("GCC unroll 32") for (int p = 0; p < NW; p++)                       \
                _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++) a[p][c] += w[c] * x[p]; \
        }                                                                               \
        _Pragma("GCC unroll 32") for (int p = 0; p < NW; p++)                           \
            _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++) acc[p * NC + c] = a[p][c]; \
    }
#define CVK_A(NC) CVK(NC, 1) CVK(NC, 2) CVK(NC, 3) CVK(NC, 4) CVK(NC, 5) CVK(NC, 6) \
    CVK(NC, 7) CVK(NC, 8) CVK(NC, 9) CVK(NC, 10) CVK(NC, 11) CVK(NC, 12) CVK(NC, 13) CVK(NC, 14)
CVK_A(1)
CVK_A(2)
CVK(1, 15) CVK(1, 16) CVK(1, 17) CVK(1, 18) CVK(1, 19) CVK(1, 20) CVK(1, 21)
CVK(1, 22) CVK(1, 23) CVK(1, 24) CVK(1, 25) CVK(1, 26) CVK(1, 27) CVK(1, 28)

typedef void (*cvk_fn)(const float *, const int64_t *, int64_t, const float *, const vf16 *,
                       vf16 *);
#define CVMAX1 28 /* pixels per tile with one channel vector */
#define CVMAX2 14 /* with two */
static const cvk_fn cvk1_tab[CVMAX1 + 1] = {
    0, cvk_1_1, cvk_1_2, cvk_1_3, cvk_1_4, cvk_1_5, cvk_1_6, cvk_1_7, cvk_1_8, cvk_1_9,
    cvk_1_10, cvk_1_11, cvk_1_12, cvk_1_13, cvk_1_14, cvk_1_15, cvk_1_16, cvk_1_17, cvk_1_18,
    cvk_1_19, cvk_1_20, cvk_1_21, cvk_1_22, cvk_1_23, cvk_1_24, cvk_1_25, cvk_1_26, cvk_1_27,
    cvk_1_28};
static const cvk_fn cvk2_tab[CVMAX2 + 1] = {
    0, cvk_2_1, cvk_2_2, cvk_2_3, cvk_2_4, cvk_2_5, cvk_2_6, cvk_2_7, cvk_2_8, cvk_2_9,
    cvk_2_10, cvk_2_11, cvk_2_12, cvk_2_13, cvk_2_14};

/* Y[co0 + 16c + j][pix0 + p] (= or +=) a[p][c][j] for p < NW. */
static void cv_store(const vf16 *a, int NC, int NW, float *Y, int64_t OHW, int64_t pix0,
                     int acc) {
#if defined(__AVX512F__)
    for (int c = 0; c < NC; c++) {
        for (int h0 = 0; h0 < NW; h0 += VL) {
            int nh = NW - h0 < VL ? NW - h0 : VL;
            __m512 r[16];
            for (int i = 0; i < VL; i++)
                r[i] = i < nh ? (__m512)a[(h0 + i) * NC + c] : _mm512_setzero_ps();
            tr16(r);
            __mmask16 mk = (__mmask16)((1u << nh) - 1);
            for (int j = 0; j < VL; j++) {
                float *y = Y + (c * VL + j) * OHW + pix0 + h0;
                __m512 v = r[j];
                if (acc) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, y));
                _mm512_mask_storeu_ps(y, mk, v);
            }
        }
    }
#else
    for (int c = 0; c < NC; c++)
        for (int j = 0; j < VL; j++) {
            float *y = Y + (c * VL + j) * OHW + pix0;
            for (int p = 0; p < NW; p++) y[p] = acc ? y[p] + a[p * NC + c][j] : a[p * NC + c][j];
        }
#endif
}

/* Y [Co][OH][OW] (= or += with acc) = bias + correlation of P with the
   packed kernel wv [Co/(16 NC)][K][16 NC]. */
static void cv_run(const dgeo *g, const float *P, const float *wv, int NC, const float *bias,
                   int64_t Co, float *Y, int acc) {
    const int64_t OHW = g->OH * g->OW, OW = g->OW, cw = VL * NC;
    const int64_t nt = (OW + (NC == 2 ? CVMAX2 : CVMAX1) - 1) / (NC == 2 ? CVMAX2 : CVMAX1);
    for (int64_t cb = 0; cb * cw < Co; cb++) {
        const float *wb = wv + cb * g->K * cw;
        vf16 b0[2];
        for (int c = 0; c < NC; c++) b0[c] = bias ? VLD(bias + cb * cw + c * VL) : (vf16){0};
        for (int64_t oh = 0; oh < g->OH; oh++) {
            for (int64_t t = 0; t < nt; t++) {
                int64_t ow0 = OW * t / nt, ow1 = OW * (t + 1) / nt;
                int NW = (int)(ow1 - ow0);
                vf16 a[CVMAX1 * 1 > CVMAX2 * 2 ? CVMAX1 : CVMAX2 * 2];
                (NC == 2 ? cvk2_tab : cvk1_tab)[NW](P + oh * g->Wq + ow0, g->off, g->K, wb, b0, a);
                cv_store(a, NC, NW, Y + cb * cw * OHW, OHW, oh * OW + ow0, acc);
            }
        }
    }
}

/* wv [G][Co/(16 NC)][K][16 NC] from rows w[g*Co + co][k] (k < K), where
   get(co, k) gives the weight. */
static void cv_pack(float *wv, int64_t Co, int64_t K, int NC, const float *w, int64_t ldw) {
    const int64_t cw = VL * NC;
    for (int64_t co = 0; co < Co; co++)
        for (int64_t k = 0; k < K; k++)
            wv[(co / cw) * K * cw + k * cw + co % cw] = w[co * ldw + k];
}

/* dW with channel vectors (Co a multiple of 16): dWT[k][co] += sum over the
   valid pixels p of G^T[p][co] * P[off[k] + q(p)], accumulators a[tap][channel
   vector], the input values broadcast.  No junk pixels, no horizontal sums. */
#define CWK(NC, T)                                                                      \
    static void cwk_##NC##_##T(const float *restrict GT, int64_t ldgt, int64_t gtstr,  \
                               const float *restrict P, int64_t pstr, int64_t ni,      \
                               const int64_t *restrict off, const dgeo *g,             \
                               float *restrict dwt, int64_t lddw) {                    \
        vf16 a[T][NC];                                                                  \
        for (int t = 0; t < T; t++)                                                     \
            for (int c = 0; c < NC; c++) a[t][c] = (vf16){0};                           \
        const int64_t OW = g->OW, Wq = g->Wq;                                           \
        for (int64_t i = 0; i < ni; i++) {                                              \
            const float *p[T];                                                          \
            for (int t = 0; t < T; t++) p[t] = P + i * pstr + off[t];                   \
            for (int64_t oh = 0; oh < g->OH; oh++) {                                    \
                const float *gr = GT + i * gtstr + oh * OW * ldgt;                      \
                const int64_t q0 = oh * Wq;                                             \
                for (int64_t ow = 0; ow < OW; ow++) {                                   \
                    vf16 gv[NC];                                                        \
                    for (int c = 0; c < NC; c++) {                                      \
                        gv[c] = VLD(gr + ow * ldgt + c * VL);                           \
                        KEEP(gv[c]);                                                    \
                    }                                                                   \
                    _Pragma("GCC unroll 16") for (int t = 0; t < T; t++) {              \
                        float x = p[t][q0 + ow];                                        \
                        _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++) a[t][c] += gv[c] * x; \
                    }                                                                   \
                }                                                                       \
            }                                                                           \
        }                                                                               \
        for (int t = 0; t < T; t++)                                                     \
            for (int c = 0; c < NC; c++) {                                              \
                float *d = dwt + t * lddw + c * VL;                                     \
                VST(d, VLD(d) + a[t][c]);                                               \
            }                                                                           \
    }
#define CWK_12(NC) CWK(NC, 1) CWK(NC, 2) CWK(NC, 3) CWK(NC, 4) CWK(NC, 5) CWK(NC, 6) \
    CWK(NC, 7) CWK(NC, 8) CWK(NC, 9) CWK(NC, 10) CWK(NC, 11) CWK(NC, 12)
CWK_12(1)
CWK_12(2)
CWK(4, 1) CWK(4, 2) CWK(4, 3) CWK(4, 4) CWK(4, 5) CWK(4, 6)

typedef void (*cwk_fn)(const float *, int64_t, int64_t, const float *, int64_t, int64_t,
                       const int64_t *, const dgeo *, float *, int64_t);
static const cwk_fn cwk_tab[5][13] = {
    {0},
    {0, cwk_1_1, cwk_1_2, cwk_1_3, cwk_1_4, cwk_1_5, cwk_1_6, cwk_1_7, cwk_1_8, cwk_1_9,
     cwk_1_10, cwk_1_11, cwk_1_12},
    {0, cwk_2_1, cwk_2_2, cwk_2_3, cwk_2_4, cwk_2_5, cwk_2_6, cwk_2_7, cwk_2_8, cwk_2_9,
     cwk_2_10, cwk_2_11, cwk_2_12},
    {0},
    {0, cwk_4_1, cwk_4_2, cwk_4_3, cwk_4_4, cwk_4_5, cwk_4_6}};

/* Channel vectors per dW tile: 4, 2 or 1 (Co a multiple of 64, 32, 16). */
static int cw_width(int64_t Co) { return Co % 64 == 0 ? 4 : Co % 32 == 0 ? 2 : Co % 16 == 0 ? 1 : 0; }

/* dWT [K][Co] += sum over ni images of G^T [OH*OW][Co] x taps of P. */
static void cv_wgrad(const dgeo *g, int NC, const float *P, int64_t pstr, const float *GT,
                     int64_t gtstr, int64_t ni, int64_t Co, float *dwt) {
    const int64_t cw = NC * VL, tmax = NC == 4 ? 6 : 9;
    const int64_t nt = (g->K + tmax - 1) / tmax;
    for (int64_t cb = 0; cb * cw < Co; cb++) {
        for (int64_t c = 0; c < nt; c++) { /* balanced tap groups */
            int64_t k0 = g->K * c / nt, k1 = g->K * (c + 1) / nt;
            cwk_tab[NC][k1 - k0](GT + cb * cw, Co, gtstr, P, pstr, ni, g->off + k0, g,
                                 dwt + k0 * Co + cb * cw, Co);
        }
    }
}

/* gw [G][Cog][K] += sum over blocks of partT [blk][G][K][Cog] */
typedef struct {
    const float *part;
    float *gw;
    int64_t nblk, Cog, K, n;  /* n: floats per block */
} redt_job;

static void reduce_t_task(void *ctx, int64_t r0, int64_t r1, int ith) {
    const redt_job *J = ctx;
    float tmp[256];
    for (int64_t r = r0; r < r1; r++) { /* row r = (g, k) */
        int64_t g = r / J->K, k = r % J->K;
        for (int64_t c0 = 0; c0 < J->Cog; c0 += 256) {
            int64_t n = J->Cog - c0 < 256 ? J->Cog - c0 : 256;
            const float *p0 = J->part + r * J->Cog + c0;
            memcpy(tmp, p0, (size_t)n * sizeof(float));
            for (int64_t b = 1; b < J->nblk; b++) {
                const float *restrict p = p0 + b * J->n;
                for (int64_t i = 0; i < n; i++) tmp[i] += p[i];
            }
            for (int64_t i = 0; i < n; i++) J->gw[(g * J->Cog + c0 + i) * J->K + k] += tmp[i];
        }
    }
}

/* Weights in tiles of `tile` output channels: wp [ceil(Co/tile)][K][tile]
   from rows w[co * ldw + k], zero rows past Co (the grid kernel's packing
   with tile MR, pw_cl_nchw's with 16). */
static void tile_pack(float *wp, int64_t Co, int64_t K, const float *w, int64_t ldw,
                      int64_t tile) {
    for (int64_t co = 0; co < rup(Co, tile); co++)
        for (int64_t k = 0; k < K; k++)
            wp[(co / tile) * K * tile + k * tile + co % tile] = co < Co ? w[co * ldw + k] : 0.0f;
}

/* Channel vectors per tile for Co channels: 2 when Co is a multiple of 32,
   1 for a multiple of 16, else 0 (use the grid kernel). */
static int cv_width(int64_t Co) { return Co % 32 == 0 ? 2 : Co % 16 == 0 ? 1 : 0; }

/* The plan of a direct conv: forward geometry and packed weights per group;
   for the backward the grid geometry of dX (stride 1) and its kernel. */
typedef struct {
    dgeo f, t;
    int fcv, tcv, wcv; /* channel vectors of the forward / dX / dW kernel (0: grid) */
    int tdirect;       /* dX by the transposed correlation */
    int64_t *offs;
    float *wp, *wtp;   /* packed kernels of the forward and of dX, per group */
    int64_t wpg, wtpg; /* floats per group */
    int64_t R, nch;    /* dX fallback: row chunks of the GEMM + col2im */
    size_t colsz;
    int64_t ni;        /* images per dW pass */
    size_t gzsz;       /* floats per image of the gradient on the grid */
} dplan;

static void dplan_free(dplan *pl) {
    dgeo_free(&pl->f);
    dgeo_free(&pl->t);
    free(pl->offs);
    free(pl->wp);
    free(pl->wtp);
}

/* Runs the forward kernel of plan geometry g over one image and group. */
static void dplan_conv(const dgeo *g, int cv, const float *P, const float *wp, const float *bias,
                       int64_t Co, float *Y, int acc) {
    if (cv)
        cv_run(g, P, wp, cv, bias, Co, Y, acc);
    else
        dconv_run(g, P, wp, bias, Co, Y, acc);
}

/* bwd: set up the backward (dX) instead of the forward.  0: out of memory. */
static int dplan_make(const cshape *s, const float *w, int bwd, dplan *pl) {
    memset(pl, 0, sizeof *pl);
    int64_t kk = s->kh * s->kw, K = s->Cg * kk, Kt = s->Cog * kk;
    int64_t qh = s->dh * (s->kh - 1) - s->ph, qw = s->dw * (s->kw - 1) - s->pw;
    pl->tdirect = bwd && s->sh == 1 && s->sw == 1 && qh >= 0 && qw >= 0;
    pl->offs = malloc((size_t)(K + Kt) * sizeof(int64_t));
    if (!pl->offs) goto oom;
    dgeo_init(&pl->f, s->Cg, s->H, s->W, s->ph, s->pw, s->sh, s->dh, s->dw, s->kh, s->kw,
              s->OH, s->OW, pl->offs);
    if (!bwd) {
        pl->fcv = cv_width(s->Cog);
        pl->wpg = (pl->fcv ? s->Cog : rup(s->Cog, MR)) * K;
        pl->wp = malloc((size_t)(s->G * pl->wpg) * sizeof(float));
        if (!pl->wp || (!pl->fcv && !dgeo_mksegs(&pl->f))) goto oom;
        for (int64_t g = 0; g < s->G; g++) {
            const float *wg = w + g * s->Cog * K;
            if (pl->fcv)
                cv_pack(pl->wp + g * pl->wpg, s->Cog, K, pl->fcv, wg, K);
            else
                tile_pack(pl->wp + g * pl->wpg, s->Cog, K, wg, K, MR);
        }
        return 1;
    }
    if (pl->tdirect) {
        dgeo_init(&pl->t, s->Cog, s->OH, s->OW, qh, qw, 1, s->dh, s->dw, s->kh, s->kw, s->H,
                  s->W, pl->offs + K);
        pl->tcv = cv_width(s->Cg);
        pl->wtpg = (pl->tcv ? s->Cg : rup(s->Cg, MR)) * Kt;
        pl->wtp = malloc((size_t)(s->G * pl->wtpg) * sizeof(float));
        float *wt = malloc((size_t)(s->Cg * Kt) * sizeof(float));
        if (!pl->wtp || !wt || (!pl->tcv && !dgeo_mksegs(&pl->t))) {
            free(wt);
            goto oom;
        }
        for (int64_t g = 0; g < s->G; g++) {
            /* W'[ci][(co, i', j')] = W[co][ci][kh-1-i'][kw-1-j'] */
            for (int64_t ci = 0; ci < s->Cg; ci++)
                for (int64_t co = 0; co < s->Cog; co++)
                    for (int64_t t = 0; t < kk; t++)
                        wt[ci * Kt + co * kk + t] =
                            w[((g * s->Cog + co) * s->Cg + ci) * kk + kk - 1 - t];
            if (pl->tcv)
                cv_pack(pl->wtp + g * pl->wtpg, s->Cg, Kt, pl->tcv, wt, Kt);
            else
                tile_pack(pl->wtp + g * pl->wtpg, s->Cg, Kt, wt, Kt, MR);
        }
        free(wt);
    } else {
        pl->R = chunk_rows(s);
        pl->nch = (s->OH + pl->R - 1) / pl->R;
        pl->colsz = (size_t)rup(s->Kd * pl->R * s->OW, VL);
    }
    /* as many images per dW pass as fit in ~768 KB (at most 8) */
    pl->wcv = cw_width(s->Cog);
    pl->gzsz = pl->wcv ? (size_t)rup(s->OH * s->OW * s->Cog + VL, VL)
                       : (size_t)(s->Cog * pl->f.nq * VL + VL);
    int64_t per = (int64_t)(pl->f.psz + pl->gzsz);
    pl->ni = (192 * 1024) / per;
    if (pl->ni > 8) pl->ni = 8;
    if (pl->ni < 1) pl->ni = 1;
    return 1;
oom:
    dplan_free(pl);
    return 0;
}

typedef struct {
    const cshape *s;
    const dplan *pl;
    const float *x, *w, *b, *gy;
    float *y, *gx;
    float *part;     /* backward: nblk x Co*Kd dW partials, or NULL */
    int64_t nblk;
    size_t scr;
} dc_job;

static void dc_fwd_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    const dc_job *J = ctx;
    const cshape *s = J->s;
    const dgeo *g = &J->pl->f;
    const int64_t HW = s->H * s->W, OHW = s->OH * s->OW;
    float *P = nr_scratch(ith, J->scr);
    memset(P, 0, g->psz * sizeof(float));
    for (int64_t it = i0; it < i1; it++) {
        int64_t n = it / s->G, gr = it % s->G;
        dgeo_fill(g, J->x + (n * s->C + gr * s->Cg) * HW, HW, s->W, P);
        dplan_conv(g, J->pl->fcv, P, J->pl->wp + gr * J->pl->wpg,
                   J->b ? J->b + gr * s->Cog : NULL, s->Cog,
                   J->y + (n * s->Co + gr * s->Cog) * OHW, 0);
    }
}

static size_t dc_bwd_scratch(const cshape *s, const dplan *pl) {
    size_t n = (size_t)pl->ni * (pl->f.psz + pl->gzsz);
    n += pl->tdirect ? pl->t.psz : pl->colsz;
    return n;
}

/* Backward over fixed blocks of images: dW into the block's partial, dX
   straight into gx. */
static void dc_bwd_task(void *ctx, int64_t b0, int64_t b1, int ith) {
    const dc_job *J = ctx;
    const cshape *s = J->s;
    const dplan *pl = J->pl;
    const dgeo *g = &pl->f, *gt = &pl->t;
    const int64_t HW = s->H * s->W, OHW = s->OH * s->OW, ldg = g->nq * VL;
    const int64_t pstr = (int64_t)pl->f.psz, gstr = (int64_t)pl->gzsz;
    float *P = nr_scratch(ith, J->scr), *Gz = P + pl->ni * pstr;
    float *B2 = Gz + pl->ni * gstr; /* padded gradient, or the dcol buffer */
    /* zero padding and junk columns persist from image to image */
    memset(P, 0, (size_t)(pl->ni * (pstr + gstr)) * sizeof(float));
    if (pl->tdirect) memset(B2, 0, gt->psz * sizeof(float));
    for (int64_t blk = b0; blk < b1; blk++) {
        int64_t n0 = s->N * blk / J->nblk, n1 = s->N * (blk + 1) / J->nblk;
        float *part = J->part ? J->part + blk * s->Co * s->Kd : NULL;
        if (part) memset(part, 0, (size_t)(s->Co * s->Kd) * sizeof(float));
        for (int64_t gr = 0; gr < s->G; gr++) {
            for (int64_t m0 = n0; m0 < n1; m0 += pl->ni) {
                int64_t ni = n1 - m0 < pl->ni ? n1 - m0 : pl->ni;
                if (part) {
                    for (int64_t i = 0; i < ni; i++) {
                        int64_t n = m0 + i;
                        const float *gy = J->gy + (n * s->Co + gr * s->Cog) * OHW;
                        dgeo_fill(g, J->x + (n * s->C + gr * s->Cg) * HW, HW, s->W, P + i * pstr);
                        if (pl->wcv) { /* G^T [OH*OW][Cog] */
                            float *restrict d = Gz + i * gstr;
                            for (int64_t px = 0; px < OHW; px++)
                                for (int64_t co = 0; co < s->Cog; co++)
                                    d[px * s->Cog + co] = gy[co * OHW + px];
                            continue;
                        }
                        for (int64_t co = 0; co < s->Cog; co++)
                            for (int64_t oh = 0; oh < s->OH; oh++) {
                                copy_short(Gz + i * gstr + co * ldg + oh * g->Wq,
                                           gy + co * OHW + oh * s->OW, s->OW);
                            }
                    }
                    if (pl->wcv)
                        cv_wgrad(g, pl->wcv, P, pstr, Gz, gstr, ni, s->Cog,
                                 part + gr * s->Cog * s->Kd);
                    else
                        dconv_wgrad(g, P, pstr, Gz, ldg, gstr, ni, s->Cog,
                                    part + gr * s->Cog * s->Kd);
                }
                if (!J->gx) continue;
                for (int64_t n = m0; n < m0 + ni; n++) {
                    const float *gy = J->gy + (n * s->Co + gr * s->Cog) * OHW;
                    float *gx = J->gx + (n * s->C + gr * s->Cg) * HW;
                    if (pl->tdirect) {
                        dgeo_fill(gt, gy, OHW, s->OW, B2);
                        dplan_conv(gt, pl->tcv, B2, pl->wtp + gr * pl->wtpg, NULL, s->Cg, gx, 1);
                    } else {
                        const float *wg = J->w + gr * s->Cog * s->Kd;
                        for (int64_t ch = 0; ch < pl->nch; ch++) {
                            int64_t oh0 = ch * pl->R;
                            int64_t oh1 = oh0 + pl->R < s->OH ? oh0 + pl->R : s->OH;
                            int64_t npix = (oh1 - oh0) * s->OW;
                            nr_gemm(1, 0, s->Kd, npix, s->Cog, 1.0f, wg, s->Kd, gy + oh0 * s->OW,
                                    OHW, 0.0f, B2, npix);
                            col2im_add(s, B2, oh0, oh1, gx);
                        }
                    }
                }
            }
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

/* Image blocks of a dense backward, each with its own dW partial: up to
   16, fewer when the partials would pass 64 MB.  A function of the shape
   only, so the sums do not depend on the thread count. */
static int64_t dense_blocks(const cshape *s) {
    int64_t nblk = s->N < 16 ? s->N : 16;
    while (nblk > 1 && nblk * s->Co * s->Kd > ((int64_t)16 << 20)) nblk /= 2;
    return nblk;
}

/* The direct engine takes every dense conv but 1x1 kernels (a GEMM on the
   input as it is, or on its strided im2col) and anisotropic strides. */
static int use_direct(const cshape *s) {
    return !(s->kh == 1 && s->kw == 1) && s->sh == s->sw;
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

/* y = conv(x) for the shape s (x, y contiguous); relu: the conv reads
   relu(x) (depthwise only). */
static nr_status conv_fwd(const cshape *sp, const float *xd, const float *wd, const float *bd,
                          float *yd, int relu) {
    const cshape s = *sp;
    nr_status st = NR_OK;
    NR_ASSERT(!relu || is_depthwise(&s));
    if (is_depthwise(&s) && dwc_usable(&s)) {
        st = dwc_fwd(&s, xd, wd, bd, yd, relu);
    } else if (is_depthwise(&s)) {
        dwplan pl;
        if (!dw_plan(&s, &pl)) return nr_seterror(NR_ENOMEM, "conv2d: out of memory");
        size_t scr = pl.f.psz;
        st = prealloc_scratch(scr);
        if (st == NR_OK) {
            dw_job J = {&s, &pl, xd, wd, bd, NULL, yd, NULL, NULL, scr, NULL, NULL, 0, relu, 0};
            nr_parallel_for(s.N * s.C, 1, dw_fwd_task, &J);
        }
        free(pl.offs);
    } else if (use_direct(&s)) {
        dplan pl;
        if (!dplan_make(&s, wd, 0, &pl)) return nr_seterror(NR_ENOMEM, "conv2d: out of memory");
        st = prealloc_scratch(pl.f.psz);
        if (st == NR_OK) {
            dc_job J = {&s, &pl, xd, wd, bd, NULL, yd, NULL, NULL, 0, pl.f.psz};
            nr_parallel_for(s.N * s.G, 1, dc_fwd_task, &J);
        }
        dplan_free(&pl);
    } else {
        int64_t R = chunk_rows(&s), nch = (s.OH + R - 1) / R;
        size_t colsz = (size_t)rup(s.Kd * R * s.OW, VL);
        if (!is_pointwise(&s)) {
            st = prealloc_scratch(colsz);
            if (st != NR_OK) return st;
        }
        fwd_job J = {&s, xd, wd, bd, yd, R, nch, colsz};
        nr_parallel_for(s.N * s.G * nch, 1, fwd_dense_task, &J);
    }
    return st;
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
    /* a fresh dx is written by the engines that can (1x1 GEMM, stride-1
       depthwise), zeroed here for the others */
    int gx_fresh = gx && (nd->fresh & 1);
    if (gx_fresh && s.N > 0 && !is_depthwise(&s) && use_direct(&s)) {
        memset(gx, 0, (size_t)nr_numel(x) * sizeof(float));
        gx_fresh = 0;
    }
    if (gx_fresh && s.N == 0) memset(gx, 0, (size_t)nr_numel(x) * sizeof(float));
    if (s.N > 0 && (gx || gw)) {
        if (is_depthwise(&s) && dwc_usable(&s)) {
            int64_t kk = s.kh * s.kw, nblk = s.N < 16 ? s.N : 16;
            double *part = gw ? malloc((size_t)(nblk * s.Co * kk) * sizeof(double)) : NULL;
            if (gw && !part) {
                st = nr_seterror(NR_ENOMEM, "conv2d backward: out of memory");
                goto done;
            }
            st = dwc_bwd(&s, nr_data(x), nr_data(w), gy, gx, part, nblk, (int)nd->p.i[7], gx_fresh);
            if (st == NR_OK && gw) {
                dwred_job RJ = {part, gw, nblk, s.Co * kk};
                nr_parallel_for(s.Co * kk, 1024, dw_reduce_task, &RJ);
            }
            free(part);
            if (st != NR_OK) goto done;
        } else if (is_depthwise(&s)) {
            dwplan pl;
            if (!dw_plan(&s, &pl)) {
                st = nr_seterror(NR_ENOMEM, "conv2d backward: out of memory");
                goto done;
            }
            size_t scr = dw_bwd_scratch(&s, &pl, gx && nd->p.i[7]);
            int64_t kk = s.kh * s.kw, nblk = s.N < 16 ? s.N : 16;
            float *wflip = malloc((size_t)(s.Co * kk) * sizeof(float));
            double *part = malloc((size_t)(nblk * s.Co * kk) * sizeof(double));
            st = prealloc_scratch(scr);
            if (st == NR_OK && (!wflip || !part))
                st = nr_seterror(NR_ENOMEM, "conv2d backward: out of memory");
            if (st == NR_OK) {
                const float *wd = nr_data(w);
                for (int64_t co = 0; co < s.Co; co++)
                    for (int64_t t = 0; t < kk; t++) wflip[co * kk + t] = wd[co * kk + kk - 1 - t];
                /* relu (sep_conv2d): P holds relu(x) for dW, dx goes through the mask */
                dw_job J = {&s, &pl, nr_data(x), wd, NULL, gy, NULL, gx, gw, scr,
                            wflip, part, nblk, (int)nd->p.i[7], gx_fresh};
                nr_parallel_for(nblk, 1, dw_bwd_task, &J);
                if (gw) {
                    dwred_job RJ = {part, gw, nblk, s.Co * kk};
                    nr_parallel_for(s.Co * kk, 1024, dw_reduce_task, &RJ);
                }
            }
            free(wflip);
            free(part);
            free(pl.offs);
            if (st != NR_OK) goto done;
        } else if (use_direct(&s)) {
            dplan pl;
            if (!dplan_make(&s, nr_data(w), 1, &pl)) {
                st = nr_seterror(NR_ENOMEM, "conv2d backward: out of memory");
                goto done;
            }
            size_t scr = dc_bwd_scratch(&s, &pl);
            int64_t nblk = dense_blocks(&s);
            float *part = gw ? malloc((size_t)(nblk * s.Co * s.Kd) * sizeof(float)) : NULL;
            st = prealloc_scratch(scr);
            if (st == NR_OK && gw && !part)
                st = nr_seterror(NR_ENOMEM, "conv2d backward: out of memory");
            if (st == NR_OK) {
                dc_job J = {&s, &pl, nr_data(x), nr_data(w), NULL, gy, NULL, gx, part, nblk, scr};
                nr_parallel_for(nblk, 1, dc_bwd_task, &J);
                if (part) {
                    if (pl.wcv) {
                        redt_job RJ = {part, gw, nblk, s.Cog, s.Kd, s.Co * s.Kd};
                        nr_parallel_for(s.G * s.Kd, 64, reduce_t_task, &RJ);
                    } else {
                        red_job RJ = {part, gw, nblk, s.Co * s.Kd};
                        nr_parallel_for(s.Co * s.Kd, 4096, reduce_task, &RJ);
                    }
                }
            }
            free(part);
            dplan_free(&pl);
            if (st != NR_OK) goto done;
        } else {
            int64_t R = chunk_rows(&s), nch = (s.OH + R - 1) / R;
            size_t colsz = (size_t)rup(s.Kd * R * s.OW, VL);
            if (!is_pointwise(&s)) {
                st = prealloc_scratch(2 * colsz);
                if (st != NR_OK) goto done;
            }
            int64_t nblk = dense_blocks(&s);
            float *part = NULL;
            if (gw) {
                part = aligned_alloc(64, (size_t)rup(nblk * s.Co * s.Kd, 16) * sizeof(float));
                if (!part) {
                    st = nr_seterror(NR_ENOMEM, "conv2d backward: out of memory");
                    goto done;
                }
            }
            bwd_job J = {&s, nr_data(x), nr_data(w), gy, gx, part, nblk, R, nch, colsz, gx_fresh};
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

/* The checks of conv2d's arguments; fn names the op in the messages. */
static nr_status conv_check(const char *fn, const nr_tensor *x, const nr_tensor *w,
                            const nr_tensor *b, const nr_conv_params *p) {
    char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
    if (!x || !w) return nr_seterror(NR_EUSAGE, "%s: input and weight are required", fn);
    if (!p) return nr_seterror(NR_EUSAGE, "%s: missing parameters", fn);
    if (x->ndim != 4 && x->ndim != 3)
        return nr_seterror(NR_ESHAPE,
                           "%s: expected a 4-D input [N,C,H,W] (or 3-D [C,H,W]), got %s", fn,
                           nr_shape_str(x, b1));
    if (w->ndim != 4)
        return nr_seterror(NR_ESHAPE, "%s: expected a 4-D weight [Co,C/groups,kh,kw], got %s", fn,
                           nr_shape_str(w, b1));
    for (int d = 0; d < 2; d++) {
        if (p->stride[d] < 1)
            return nr_seterror(NR_EUSAGE, "%s: stride must be >= 1, got %lld", fn,
                               (long long)p->stride[d]);
        if (p->padding[d] < 0)
            return nr_seterror(NR_EUSAGE, "%s: padding must be >= 0, got %lld", fn,
                               (long long)p->padding[d]);
        if (p->dilation[d] < 1)
            return nr_seterror(NR_EUSAGE, "%s: dilation must be >= 1, got %lld", fn,
                               (long long)p->dilation[d]);
        /* bounds that keep every size computation far from overflow */
        if (p->stride[d] > NR_MAXPARAM || p->padding[d] > NR_MAXPARAM ||
            p->dilation[d] > NR_MAXPARAM || w->ne[2 + d] > NR_MAXPARAM)
            return nr_seterror(NR_EUSAGE,
                               "conv2d: stride %lld, padding %lld, dilation %lld or kernel %lld "
                               "exceeds %d",
                               (long long)p->stride[d], (long long)p->padding[d],
                               (long long)p->dilation[d], (long long)w->ne[2 + d], NR_MAXPARAM);
    }
    int64_t G = p->groups;
    int bt = x->ndim == 4;
    int64_t C = x->ne[bt], H = x->ne[bt + 1], W = x->ne[bt + 2];
    int64_t Co = w->ne[0], kh = w->ne[2], kw = w->ne[3];
    if (G < 1) return nr_seterror(NR_EUSAGE, "%s: groups must be >= 1, got %lld", fn, (long long)G);
    if (C < 1 || H < 1 || W < 1)
        return nr_seterror(NR_ESHAPE, "%s: input %s has an empty channel or spatial dim", fn,
                           nr_shape_str(x, b1));
    if (Co < 1 || kh < 1 || kw < 1 || w->ne[1] < 1)
        return nr_seterror(NR_ESHAPE, "%s: weight %s has an empty dim", fn, nr_shape_str(w, b1));
    if (C % G != 0)
        return nr_seterror(NR_ESHAPE, "%s: input channels (%lld) not divisible by groups (%lld)", fn,
                           (long long)C, (long long)G);
    if (Co % G != 0)
        return nr_seterror(NR_ESHAPE,
                           "%s: output channels (%lld, weight %s) not divisible by groups (%lld)", fn,
                           (long long)Co, nr_shape_str(w, b1), (long long)G);
    if (w->ne[1] * G != C)
        return nr_seterror(NR_ESHAPE,
                           "%s: input %s has %lld channels, weight %s expects %lld (groups=%lld)", fn,
                           nr_shape_str(x, b1), (long long)C, nr_shape_str(w, b2),
                           (long long)(w->ne[1] * G), (long long)G);
    if (b && (b->ndim != 1 || b->ne[0] != Co))
        return nr_seterror(NR_ESHAPE, "%s: bias %s does not match %lld output channels", fn,
                           nr_shape_str(b, b1), (long long)Co);
    int64_t ekh = p->dilation[0] * (kh - 1) + 1, ekw = p->dilation[1] * (kw - 1) + 1;
    if (H + 2 * p->padding[0] < ekh || W + 2 * p->padding[1] < ekw)
        return nr_seterror(NR_ESHAPE,
                           "%s: input %s (padded %lldx%lld) is smaller than the kernel "
                           "(%lldx%lld with dilation)", fn,
                           nr_shape_str(x, b1), (long long)(H + 2 * p->padding[0]),
                           (long long)(W + 2 * p->padding[1]), (long long)ekh, (long long)ekw);

    return NR_OK;
}

nr_status nr_conv2d(nr_tensor **out, const nr_tensor *x, const nr_tensor *w,
                    const nr_tensor *b, const nr_conv_params *p) {
    *out = NULL;
    nr_status st = conv_check("conv2d", x, w, b, p);
    if (st != NR_OK) return st;
    int bt = x->ndim == 4;
    int64_t G = p->groups;
    nr_tensor *xc = nr_contig(x), *wc = nr_contig(w), *bc = b ? nr_contig(b) : NULL;
    nr_tensor *y = NULL;
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
    if (s.N > 0)
        st = conv_fwd(&s, nr_data(xc), nr_data(wc), bc ? nr_data(bc) : NULL, nr_data(y), 0);
    if (st != NR_OK) goto done;
    nr_node *nd = nr_record(y, "conv2d", conv_bwd, 3, (nr_tensor *[]){xc, wc, bc});
    if (nd) {
        nd->p = tmp.p;
        nd->writes = 1; /* dx */
    }
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

/* ------------------------------------------------------------ sep_conv2d */

/* The 1x1, stride-1 conv of t [N,C,OH,OW] with wp [Co,C,1,1]. */
static void pw_shape(const cshape *sd, int64_t Co, nr_node *np, cshape *sp) {
    memset(np, 0, sizeof *np);
    np->p.i[0] = np->p.i[1] = 1; /* stride */
    np->p.i[4] = np->p.i[5] = 1; /* dilation */
    np->p.i[6] = 1;              /* groups */
    sp->N = sd->N, sp->C = sd->Co, sp->H = sd->OH, sp->W = sd->OW;
    sp->Co = Co, sp->kh = sp->kw = 1;
    sp->sh = sp->sw = sp->dh = sp->dw = 1, sp->ph = sp->pw = 0, sp->G = 1;
    sp->OH = sd->OH, sp->OW = sd->OW;
    sp->Cg = sd->Co, sp->Cog = Co, sp->Kd = sd->Co;
}

/* The fused engine: the depthwise convs that take the row engine run image
   by image, each image's depthwise output t_n (C x OH*OW) staying in the
   thread's scratch from the producer to the 1x1 GEMM that consumes it,
   instead of a whole [N,C,OH,OW] tensor written out and read back.
   Backward, per image: g_t = Wp^T g_n (scratch), dWp += g_n t_n^T with
   t_n recomputed from x on the way through the depthwise backward, which
   reads g_t.  Only for t_n of up to 1 MB (L2); the small planes of the
   channel-last engine and larger ones go the unfused way. */
typedef struct {
    dw_job d;             /* the depthwise conv (x, wd, relu, dx, dWd) */
    const float *wp, *gy; /* 1x1 weight [Co][C], output gradient */
    float *y, *partp;     /* output; dWp partials nblk x Co*C */
    int64_t Cop;
    size_t dscr;          /* the depthwise part of the scratch */
} sep_job;

static int sepc_fusable(const cshape *sd);

static int sep_fusable(const cshape *sd) {
    return is_depthwise(sd) && !sepc_fusable(sd) && sd->Co == sd->C &&
           sd->C * sd->OH * sd->OW <= (256 << 10);
}

static void sep_fwd_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    const sep_job *J = ctx;
    const cshape *s = J->d.s;
    const int64_t OHW = s->OH * s->OW;
    float *P = nr_scratch(ith, J->dscr + (size_t)rup(s->C * OHW, VL)), *t = P + J->dscr;
    memset(P, 0, J->d.pl->f.psz * sizeof(float));
    for (int64_t n = i0; n < i1; n++) {
        for (int64_t c = 0; c < s->C; c++) dw_fwd_plane(&J->d, P, n, c, t);
        nr_gemm(0, 0, J->Cop, OHW, s->C, 1.0f, J->wp, s->C, t, OHW, 0.0f,
                J->y + n * J->Cop * OHW, OHW);
    }
}

static void sep_bwd_task(void *ctx, int64_t b0, int64_t b1, int ith) {
    const sep_job *J = ctx;
    const dw_job *D = &J->d;
    const cshape *s = D->s;
    const int64_t OHW = s->OH * s->OW, COHW = rup(s->C * OHW, VL);
    const int64_t nck = s->C * D->pl->f.kk, npw = J->Cop * s->C;
    const int need_gt = D->gx || D->gw;
    dwbufs B;
    float *t = dw_bwd_bufs(D, nr_scratch(ith, J->dscr + 2 * (size_t)COHW), &B), *gt = t + COHW;
    for (int64_t blk = b0; blk < b1; blk++) {
        int64_t n0 = s->N * blk / D->nblk, n1 = s->N * (blk + 1) / D->nblk;
        double *part = D->gw ? D->part + blk * nck : NULL;
        float *partp = J->partp ? J->partp + blk * npw : NULL;
        if (part)
            for (int64_t k = 0; k < nck; k++) part[k] = 0.0;
        for (int64_t n = n0; n < n1; n++) {
            const float *gn = J->gy + n * J->Cop * OHW;
            if (need_gt) {
                nr_gemm(1, 0, s->C, OHW, J->Cop, 1.0f, J->wp, s->C, gn, OHW, 0.0f, gt, OHW);
                dw_bwd_image(D, &B, n, gt, part, partp ? t : NULL);
            } else if (partp) { /* B.P's padding is zero from dw_bwd_bufs on */
                for (int64_t c = 0; c < s->C; c++) dw_fwd_plane(D, B.P, n, c, t);
            }
            if (partp)
                nr_gemm(0, 1, J->Cop, s->C, OHW, 1.0f, gn, OHW, t, OHW, n == n0 ? 0.0f : 1.0f,
                        partp, s->C);
        }
    }
}

/* The same fusion on the channel-last engine (16k channels, and output
   rows that do not fill whole 16-lane vectors: the 28x28, 14x14 and 7x7
   planes of the DARTS and AGNAS search networks): per image, each 16-channel
   group's depthwise output stays in the thread's scratch up to the 1x1
   conv, y_n = Wp t_n: with AVX-512 pw_cl_nchw, which takes t_n as it
   comes ([pix][C]); else t_n unpacked to [C][pix] and sgemm (OpenBLAS
   takes a row-major A B^T of these sizes off its small-matrix kernels,
   1.3x slower than the unpack and A B).  Backward, t_n is recomputed as T
   [pix][C] (each group's lanes at column c0), dT = g_n^T Wp comes out
   channel-last as the depthwise backward reads it, and dWp += g_n T.
   Unfused, t was written out as [C][pix] and read back, and backward
   packed it and its gradient to channel-last again and formed dWp as
   g t^T (that slower A B^T).  Fused, this engine beats the row engine's
   sep_fwd/bwd_task on those planes even where the lone depthwise conv
   does not (1 thread, [64,16,28,28] 3x3: backward 1.8 -> 1.5 ms,
   [64,32,14,14] 5x5: 2.1 -> 1.5 ms, forwards 0-30% faster); on 16x16 and
   32x32 planes the row engine's full vectors keep the forward 20% ahead. */
typedef struct {
    dwc_job d;            /* the depthwise conv (x, weights, relu, dx, dWd) */
    const float *wp, *gy; /* 1x1 weight [Co][C], output gradient */
    float *y, *partp;     /* output; dWp partials nblk x Co*C */
    int64_t Cop;
    const float *wpT;     /* forward: wp as tile_pack's [ceil(Co/16)][C][16] */
} sepc_job;

static int sepc_fusable(const cshape *sd) {
    return is_depthwise(sd) && dwc_fits(sd) && (dwc_usable(sd) || sd->OW % VL != 0) &&
           sd->C * sd->OH * sd->OW <= (256 << 10);
}

/* the padded buffer, then (bwd) Z and X as dwc_bwd_task's, then T (and GT
   and the dW accumulators [C][kk] in doubles) */
static size_t sepc_scratch(const cshape *s, const dwcplan *q, int bwd) {
    size_t pz = (size_t)rup(q->Hp * q->Wp * VL, VL), t = (size_t)rup(q->npix * s->C, VL);
    if (!bwd) return pz + t + (size_t)(q->npix > s->C ? q->npix : s->C) * VL;
    size_t zz = q->gather ? (size_t)rup(q->Hz * q->Wz * VL, VL) : pz;
    return pz + zz + (size_t)(s->H * s->W) * VL + 2 * t + 2 * (size_t)(s->C * q->kk);
}

/* a backward task's part of the scratch, as sepc_scratch lays it out: P
   (pz floats), Z (zz), X, T, GT, then the dW accumulators in doubles */
typedef struct {
    float *P, *Z, *X, *T, *GT;
    double *dacc;
    size_t pz, zz;
} sepc_bufs;

static sepc_bufs sepc_bwd_bufs(const dwc_job *D, int ith) {
    const dwcplan *q = D->q;
    const cshape *s = D->s;
    const size_t t = (size_t)rup(q->npix * s->C, VL);
    sepc_bufs b;
    b.pz = (size_t)rup(q->Hp * q->Wp * VL, VL);
    b.zz = q->gather ? (size_t)rup(q->Hz * q->Wz * VL, VL) : b.pz;
    b.P = nr_scratch(ith, D->scr), b.Z = b.P + b.pz, b.X = b.Z + b.zz;
    b.T = b.X + (s->H * s->W) * VL, b.GT = b.T + t;
    b.dacc = (double *)(b.GT + t);
    return b;
}

#if defined(__AVX512F__)
/* y [Cop][npix] = Wp T for T channel-last [npix][C] (the depthwise
   output as dwc_corr leaves it), 16 pixels at a time: the chunk's 16 x C
   block transposed in registers into tt [C][16], then 16 output channels
   per register tile (wpT: tile_pack's [ceil(Cop/16)][C][16]), each FMA
   taking its weight as an embedded broadcast, stored straight into the
   planes of y.  T never
   goes through a [C][npix] copy, and no GEMM call per image. */
static void pw_cl_nchw(const float *restrict T, int64_t npix, int64_t C,
                       const float *restrict wpT, int64_t Cop, float *restrict tt,
                       float *restrict y) {
    for (int64_t q0 = 0; q0 < npix; q0 += VL) {
        int64_t nq;
        const __mmask16 mk = chunk_mask(npix, q0, &nq);
        for (int64_t c0 = 0; c0 < C; c0 += VL) {
            __m512 r[16];
            if (nq == VL)
                for (int p = 0; p < VL; p++) r[p] = _mm512_loadu_ps(T + (q0 + p) * C + c0);
            else
                for (int p = 0; p < VL; p++)
                    r[p] = p < nq ? _mm512_loadu_ps(T + (q0 + p) * C + c0) : _mm512_setzero_ps();
            tr16(r);
            for (int j = 0; j < VL; j++) _mm512_store_ps(tt + (c0 + j) * VL, r[j]);
        }
        for (int64_t co0 = 0; co0 < Cop; co0 += VL) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
                   a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0,
                   a15 = a0;
            const float *w = wpT + co0 * C;
            for (int64_t c = 0; c < C; c++, w += VL) {
                const __m512 v = _mm512_load_ps(tt + c * VL);
#define PW_FMA(i) a##i = _mm512_fmadd_ps(_mm512_set1_ps(w[i]), v, a##i)
                PW_FMA(0), PW_FMA(1), PW_FMA(2), PW_FMA(3), PW_FMA(4), PW_FMA(5), PW_FMA(6);
                PW_FMA(7), PW_FMA(8), PW_FMA(9), PW_FMA(10), PW_FMA(11), PW_FMA(12);
                PW_FMA(13), PW_FMA(14), PW_FMA(15);
#undef PW_FMA
            }
            const __m512 a[16] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15};
            const int nr = Cop - co0 < VL ? (int)(Cop - co0) : VL;
            float *yo = y + co0 * npix + q0;
            if (nr == VL && nq == VL)
                for (int i = 0; i < VL; i++) _mm512_storeu_ps(yo + i * npix, a[i]);
            else
                for (int i = 0; i < nr; i++) _mm512_mask_storeu_ps(yo + i * npix, mk, a[i]);
        }
    }
}
#endif

static void sepc_fwd_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    const sepc_job *J = ctx;
    const dwc_job *D = &J->d;
    const cshape *s = D->s;
    const dwcplan *q = D->q;
    const int64_t npix = q->npix;
    const size_t pz = (size_t)rup(q->Hp * q->Wp * VL, VL), t = (size_t)rup(npix * s->C, VL);
    float *P = nr_scratch(ith, D->scr), *T = P + pz, *Y = T + t; /* Y: pw_cl_nchw's tt */
    memset(P, 0, pz * sizeof(float));
    for (int64_t n = i0; n < i1; n++) {
        if (n + 1 < i1) prefetch_image(D->x + (n + 1) * s->C * s->H * s->W, s->C * s->H * s->W);
#if defined(__AVX512F__)
        for (int64_t c0 = 0; c0 < s->C; c0 += VL) {
            dwc_pack_group(D, P, n, c0);
            dwc_corr(P, q->pb, npix, D->wT + c0 * q->kk, q->toff, q->kk, (vf16){0}, T + c0, s->C);
        }
        pw_cl_nchw(T, npix, s->C, J->wpT, J->Cop, Y, J->y + n * J->Cop * npix);
#else
        for (int64_t c0 = 0; c0 < s->C; c0 += VL) {
            dwc_pack_group(D, P, n, c0);
            dwc_corr(P, q->pb, npix, D->wT + c0 * q->kk, q->toff, q->kk, (vf16){0}, Y, VL);
            cl_unpack(Y, npix, T + c0 * npix, npix, 0, NULL);
        }
        nr_gemm(0, 0, J->Cop, npix, s->C, 1.0f, J->wp, s->C, T, npix, 0.0f,
                J->y + n * J->Cop * npix, npix);
#endif
    }
}

static void sepc_bwd_task(void *ctx, int64_t b0, int64_t b1, int ith) {
    const sepc_job *J = ctx;
    const dwc_job *D = &J->d;
    const cshape *s = D->s;
    const dwcplan *q = D->q;
    const int64_t C = s->C, npix = q->npix, kk = q->kk, Cop = J->Cop;
    const sepc_bufs B = sepc_bwd_bufs(D, ith);
    const size_t pz = B.pz, zz = B.zz;
    float *P = B.P, *Z = B.Z, *X = B.X, *T = B.T, *GT = B.GT;
    double *dacc = B.dacc; /* [C/16][kk][16] */
    memset(P, 0, pz * sizeof(float));
    if (q->gather) memset(Z, 0, zz * sizeof(float));
    const int need_gt = D->gx || D->part;
    for (int64_t blk = b0; blk < b1; blk++) {
        int64_t n0 = s->N * blk / D->nblk, n1 = s->N * (blk + 1) / D->nblk;
        double *part = D->part ? D->part + blk * C * kk : NULL;
        float *partp = J->partp ? J->partp + blk * Cop * C : NULL;
        if (part) memset(dacc, 0, (size_t)(C * kk) * sizeof(double));
        for (int64_t n = n0; n < n1; n++) {
            const float *gn = J->gy + n * Cop * npix;
            if (n + 1 < n1) {
                const int64_t HW = s->H * s->W;
                prefetch_image(gn + Cop * npix, Cop * npix);
                prefetch_image(D->x + (n + 1) * C * HW, C * HW);
                if (D->gx && !D->gx_fresh) prefetch_image(D->gx + (n + 1) * C * HW, C * HW);
            }
            if (need_gt) nr_gemm(1, 0, npix, C, Cop, 1.0f, gn, npix, J->wp, C, 0.0f, GT, C);
            for (int64_t c0 = 0; c0 < C; c0 += VL) {
                if (part || partp) dwc_pack_group(D, P, n, c0);
                if (partp)
                    dwc_corr(P, q->pb, npix, D->wT + c0 * kk, q->toff, kk, (vf16){0}, T + c0, C);
                if (part) dwc_wgrad(P, q->pb, npix, GT + c0, C, q->toff, kk, dacc + c0 * kk);
                if (D->gx) dwc_dx_group(D, Z, X, GT + c0, C, n, c0);
            }
            if (partp)
                nr_gemm(0, 0, Cop, C, npix, 1.0f, gn, npix, T, C, n == n0 ? 0.0f : 1.0f, partp, C);
        }
        if (part)
            for (int64_t c0 = 0; c0 < C; c0 += VL)
                for (int64_t k = 0; k < kk; k++)
                    for (int j = 0; j < VL; j++)
                        part[(c0 + j) * kk + k] = dacc[c0 * kk + k * VL + j];
    }
}

/* Forward (gy NULL) or backward of the channel-last fused sep_conv2d. */
static nr_status sepc_run(const cshape *sd, const float *x, const float *wd, const float *wp,
                          int64_t Cop, int relu, float *y, const float *gy, float *gx,
                          int gx_fresh, float *gwd, float *gwp) {
    const int bwd = gy != NULL;
    const char *fn = bwd ? "sep_conv2d backward" : "sep_conv2d";
    dwcplan q;
    if (!dwc_plan(sd, &q)) return nr_seterror(NR_ENOMEM, "%s: out of memory", fn);
    const int64_t kk = q.kk, nblk = sd->N < 16 ? sd->N : 16;
    const size_t wsz = (size_t)rup(sd->C * kk, VL), scr = sepc_scratch(sd, &q, bwd);
    /* fwd: then wp packed for pw_cl_nchw; bwd: then the flipped depthwise weights */
    const size_t wsz2 = bwd ? wsz : (size_t)(sd->C * rup(Cop, VL));
    float *wT = aligned_alloc(64, (wsz + wsz2) * sizeof(float));
    double *part = gwd ? malloc((size_t)(nblk * sd->C * kk) * sizeof(double)) : NULL;
    float *partp = gwp ? malloc((size_t)(nblk * Cop * sd->C) * sizeof(float)) : NULL;
    nr_status st = prealloc_scratch(scr);
    if (st == NR_OK && (!wT || (gwd && !part) || (gwp && !partp)))
        st = nr_seterror(NR_ENOMEM, "%s: out of memory", fn);
    if (st == NR_OK) {
        dwc_wpack(wd, sd->C, kk, 0, wT);
        if (bwd) {
            dwc_wpack(wd, sd->C, kk, 1, wT + wsz);
        } else {
#if defined(__AVX512F__)
            tile_pack(wT + wsz, Cop, sd->C, wp, sd->C, VL);
#endif
        }
        sepc_job J = {{sd, &q, x, NULL, gy, wT, bwd ? wT + wsz : NULL, NULL, gx, part, nblk, scr,
                       relu, gx_fresh},
                      wp, gy, y, partp, Cop, bwd ? NULL : wT + wsz};
        if (!bwd) {
            nr_parallel_for(sd->N, 1, sepc_fwd_task, &J);
        } else {
            nr_parallel_for(nblk, 1, sepc_bwd_task, &J);
            sep_reduce(part, gwd, sd->C * kk, partp, gwp, Cop * sd->C, nblk);
        }
    }
    free(wT);
    free(part);
    free(partp);
    free(q.mem);
    return st;
}

/* Backward: the depthwise output t is recomputed from x, then the 1x1
   conv's backward gives dt and dWp, the depthwise conv's dx (through the
   ReLU mask) and dWd. */
static nr_status sep_bwd(nr_node *nd, const nr_tensor *gout, nr_tensor *const *gin) {
    const nr_tensor *x = nd->in[0], *wd = nd->in[1], *wp = nd->in[2];
    const int relu = (int)nd->p.i[7];
    cshape sd, sp;
    load_shape(nd, x, wd, &sd);
    nr_node np;
    pw_shape(&sd, wp->ne[0], &np, &sp);
    if (sepc_fusable(&sd) && sd.N > 0) {
        nr_tensor *gc = nr_is_contiguous(gout) ? NULL : nr_tensor_clone(gout);
        if (!nr_is_contiguous(gout) && !gc) return NR_ENOMEM;
        nr_status st = sepc_run(&sd, nr_data(x), nr_data(wd), nr_data(wp), sp.Co, relu, NULL,
                                nr_data(gc ? gc : gout), gin[0] ? nr_data(gin[0]) : NULL,
                                gin[0] && (nd->fresh & 1), gin[1] ? nr_data(gin[1]) : NULL,
                                gin[2] ? nr_data(gin[2]) : NULL);
        nr_tensor_release(gc);
        return st;
    }
    if (sep_fusable(&sd) && sd.N > 0) {
        nr_tensor *gc = nr_is_contiguous(gout) ? NULL : nr_tensor_clone(gout);
        if (!nr_is_contiguous(gout) && !gc) return NR_ENOMEM;
        float *gx = gin[0] ? nr_data(gin[0]) : NULL, *gw = gin[1] ? nr_data(gin[1]) : NULL;
        int64_t kk = sd.kh * sd.kw, nblk = sd.N < 16 ? sd.N : 16, Cop = sp.Co;
        dwplan pl;
        if (!dw_plan(&sd, &pl)) {
            nr_tensor_release(gc);
            return nr_seterror(NR_ENOMEM, "sep_conv2d backward: out of memory");
        }
        size_t dscr = dw_bwd_scratch(&sd, &pl, gx && relu);
        float *wflip = malloc((size_t)(sd.C * kk) * sizeof(float));
        double *part = gw ? malloc((size_t)(nblk * sd.C * kk) * sizeof(double)) : NULL;
        float *partp = gin[2] ? malloc((size_t)(nblk * Cop * sd.C) * sizeof(float)) : NULL;
        nr_status st = prealloc_scratch(dscr + 2 * (size_t)rup(sd.C * sd.OH * sd.OW, VL));
        if (st == NR_OK && (!wflip || (gw && !part) || (gin[2] && !partp)))
            st = nr_seterror(NR_ENOMEM, "sep_conv2d backward: out of memory");
        if (st == NR_OK) {
            const float *wdd = nr_data(wd);
            for (int64_t c = 0; c < sd.C; c++)
                for (int64_t t = 0; t < kk; t++) wflip[c * kk + t] = wdd[c * kk + kk - 1 - t];
            sep_job J = {{&sd, &pl, nr_data(x), wdd, NULL, NULL, NULL, gx, gw, dscr, wflip, part,
                          nblk, relu, gx && (nd->fresh & 1)},
                         nr_data(wp), nr_data(gc ? gc : gout), NULL, partp, Cop, dscr};
            nr_parallel_for(nblk, 1, sep_bwd_task, &J);
            sep_reduce(part, gw, sd.C * kk, partp, partp ? nr_data(gin[2]) : NULL, Cop * sd.C, nblk);
        }
        free(wflip);
        free(part);
        free(partp);
        free(pl.offs);
        nr_tensor_release(gc);
        return st;
    }
    int64_t tne[4] = {sd.N, sd.Co, sd.OH, sd.OW};
    nr_tensor *t = nr_tensor_empty(4, tne);
    /* gt is written whole by the 1x1 conv's backward (fresh) */
    nr_tensor *gt = (gin[0] || gin[1]) ? nr_tensor_empty(4, tne) : NULL;
    nr_status st = NR_OK;
    if (!t || ((gin[0] || gin[1]) && !gt)) {
        st = NR_ENOMEM;
        goto done;
    }
    st = conv_fwd(&sd, nr_data(x), nr_data(wd), NULL, nr_data(t), relu);
    if (st != NR_OK) goto done;
    np.in[0] = t;
    np.in[1] = (nr_tensor *)wp;
    np.fresh = 1;
    st = conv_bwd(&np, gout, (nr_tensor *[]){gt, gin[2], NULL});
    nr_tensor_release(t);
    t = NULL;
    if (st != NR_OK || !gt) goto done;
    /* the depthwise conv (p.i[7]: through the ReLU mask); dx written or
       added to gin[0] as nd->fresh says */
    st = conv_bwd(nd, gt, (nr_tensor *[]){gin[0], gin[1], NULL});
done:
    nr_tensor_release(t);
    nr_tensor_release(gt);
    return st;
}

nr_status nr_sep_conv2d(nr_tensor **out, const nr_tensor *x, const nr_tensor *wd,
                        const nr_tensor *wp, const nr_conv_params *p, int relu) {
    char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
    *out = NULL;
    if (!x || !wd || !wp || !p)
        return nr_seterror(NR_EUSAGE, "sep_conv2d: input, both weights and parameters are required");
    if (x->ndim != 4)
        return nr_seterror(NR_ESHAPE, "sep_conv2d: expected a 4-D input [N,C,H,W], got %s",
                           nr_shape_str(x, b1));
    int64_t C = x->ne[1];
    if (wd->ndim != 4 || wd->ne[0] != C || wd->ne[1] != 1)
        return nr_seterror(NR_ESHAPE,
                           "sep_conv2d: depthwise weight %s, expected [%lld,1,kh,kw] for input %s",
                           nr_shape_str(wd, b1), (long long)C, nr_shape_str(x, b2));
    if (wp->ndim != 4 || wp->ne[1] != C || wp->ne[2] != 1 || wp->ne[3] != 1)
        return nr_seterror(NR_ESHAPE,
                           "sep_conv2d: pointwise weight %s, expected [Co,%lld,1,1] for input %s",
                           nr_shape_str(wp, b1), (long long)C, nr_shape_str(x, b2));
    nr_conv_params dp = *p;
    dp.groups = C;
    nr_status st = conv_check("sep_conv2d", x, wd, NULL, &dp);
    if (st != NR_OK) return st;
    nr_tensor *xc = nr_contig(x), *wdc = nr_contig(wd), *wpc = nr_contig(wp), *t = NULL, *y = NULL;
    nr_node tmp;
    memset(&tmp, 0, sizeof tmp);
    if (!xc || !wdc || !wpc) {
        st = NR_ENOMEM;
        goto done;
    }
    tmp.p.i[0] = dp.stride[0];
    tmp.p.i[1] = dp.stride[1];
    tmp.p.i[2] = dp.padding[0];
    tmp.p.i[3] = dp.padding[1];
    tmp.p.i[4] = dp.dilation[0];
    tmp.p.i[5] = dp.dilation[1];
    tmp.p.i[6] = C;
    tmp.p.i[7] = relu != 0;
    cshape sd, sp;
    load_shape(&tmp, xc, wdc, &sd);
    nr_node np;
    pw_shape(&sd, wp->ne[0], &np, &sp);
    int64_t tne[4] = {sd.N, sd.Co, sd.OH, sd.OW}, yne[4] = {sd.N, sp.Co, sd.OH, sd.OW};
    const int fuse = sep_fusable(&sd) || sepc_fusable(&sd);
    t = fuse ? NULL : nr_tensor_empty(4, tne);
    y = fuse || t ? nr_tensor_empty(4, yne) : NULL;
    if (!y) {
        st = NR_ENOMEM;
        goto done;
    }
    if (fuse && sepc_fusable(&sd)) {
        if (sd.N > 0)
            st = sepc_run(&sd, nr_data(xc), nr_data(wdc), nr_data(wpc), sp.Co, relu != 0,
                          nr_data(y), NULL, NULL, 0, NULL, NULL);
    } else if (fuse) {
        dwplan pl;
        if (!dw_plan(&sd, &pl)) {
            st = nr_seterror(NR_ENOMEM, "sep_conv2d: out of memory");
            goto done;
        }
        size_t dscr = pl.f.psz;
        st = prealloc_scratch(dscr + (size_t)rup(sd.C * sd.OH * sd.OW, VL));
        if (st == NR_OK) {
            sep_job J = {{&sd, &pl, nr_data(xc), nr_data(wdc), NULL, NULL, NULL, NULL, NULL, dscr,
                          NULL, NULL, 0, relu != 0, 0},
                         nr_data(wpc), NULL, nr_data(y), NULL, sp.Co, dscr};
            nr_parallel_for(sd.N, 1, sep_fwd_task, &J);
        }
        free(pl.offs);
    } else {
        st = conv_fwd(&sd, nr_data(xc), nr_data(wdc), NULL, nr_data(t), relu != 0);
        if (st == NR_OK) st = conv_fwd(&sp, nr_data(t), nr_data(wpc), NULL, nr_data(y), 0);
    }
    if (st != NR_OK) goto done;
    nr_node *nd = nr_record(y, "sep_conv2d", sep_bwd, 3, (nr_tensor *[]){xc, wdc, wpc});
    if (nd) {
        nd->p = tmp.p;
        nd->writes = relu ? 1 : 0; /* dx through the ReLU mask */
    }
done:
    nr_tensor_release(t);
    nr_tensor_release(xc);
    nr_tensor_release(wdc);
    nr_tensor_release(wpc);
    if (st != NR_OK) {
        nr_tensor_release(y);
        return st;
    }
    *out = y;
    return NR_OK;
}

/* ------------------------------------------------------------ sep_block */

/* DARTS' SepConv body up to its last batch norm as one op: relu, depthwise
   k x k (stride s), 1x1 C->C, batch norm (affine=false, batch statistics),
   relu, depthwise k x k (stride 1), 1x1 C->Co.  Apart, the middle batch
   norm is two passes of its own over y1 forward (statistics, then the
   normalised output written out, which the second half reads and packs to
   channel-last again) and two backward (its dots, then dx written out,
   which the first half reads); and the second half's backward unpacks its
   dx to NCHW for the batch norm to read.  Here y1 is kept channel-last
   ([N][OH*OW][C], as the 1x1 conv leaves it: no transposes), its
   statistics come from each image's output while it is in L2, the second
   half normalises as it packs, its backward leaves the gradient channel-
   last with the batch norm's dots taken on the way, and the first half's
   backward forms the batch norm's dx image by image as it reads it.  Only
   on the channel-last engine (AVX-512, 16k channels, both halves
   sepc_fusable, "same" padding in the second half) and unsynchronised
   batch norm; elsewhere the three ops run one after the other. */
#if defined(__AVX512F__)
typedef struct {
    dwc_job d1, d2;         /* the depthwise halves (d1: x, relu, dx; d2: weights) */
    const float *wp1T;      /* wp1 as [ci][co] (forward: y1 = T wp1^T) */
    const float *wp1, *wp2; /* [C][C], [Co][C] */
    const float *wp2T;      /* forward: wp2 as tile_pack's [ceil(Co/16)][C][16] */
    float *y1;              /* [N][npix1][C] */
    float *y;               /* forward output [N][Co][npix2] */
    const float *gy;        /* backward: gradient of y */
    float *gz;              /* backward: [N][npix1][C], through the ReLU mask */
    const float *mf, *isf;  /* [C] mean and 1/std, floats */
    const float *k;         /* backward: [3][C] dx coefficients of the batch norm */
    double *st;             /* forward: [N][2][C] image sums and squared deviations;
                               backward: [nblk][2][C] sum g, sum g * xhat */
    double *pd1, *pd2;      /* dWd partials [nblk][C*kk] */
    float *pp1, *pp2;       /* dWp partials [nblk][C*C], [nblk][Co*C] */
    int64_t C, Co, nblk;
} sb_job;

static int sb_fusable(const cshape *s1, const cshape *s2) {
    return !nr_dist_sync_bn() && sepc_fusable(s1) && sepc_fusable(s2) && s1->Co == s1->C &&
           s2->OH == s2->H && s2->OW == s2->W && s2->dh * (s2->kh - 1) >= s2->ph &&
           s2->dw * (s2->kw - 1) >= s2->pw && s1->N * s1->OH * s1->OW > 1;
}

/* channels c0 .. c0+15 of image n of y1, normalised and ReLU'd, into the
   interior of the second half's padded buffer */
static void sb_pack(const sb_job *J, float *P, int64_t n, int64_t c0) {
    const cshape *s = J->d2.s;
    const int64_t Wp = J->d2.q->Wp, C = J->C;
    const float *src = J->y1 + n * s->H * s->W * C + c0;
    const vf16 m = VLD(J->mf + c0), is = VLD(J->isf + c0), zero = {0};
    for (int64_t h = 0; h < s->H; h++) {
        float *d = P + ((h + s->ph) * Wp + s->pw) * VL;
        const float *r = src + h * s->W * C;
        for (int64_t w = 0; w < s->W; w++) {
            vf16 v = (VLD(r + w * C) - m) * is;
            VST(d + w * VL, (vf16)_mm512_max_ps((__m512)zero, (__m512)v));
        }
    }
}

/* forward, first half: y1 of image n channel-last, its per-channel sum and
   squared deviations from its own mean (two passes while it is in L2) */
static void sb_fwd1_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    const sb_job *J = ctx;
    const dwc_job *D = &J->d1;
    const dwcplan *q = D->q;
    const int64_t C = J->C, npix = q->npix, kk = q->kk;
    const size_t pz = (size_t)rup(q->Hp * q->Wp * VL, VL);
    float *P = nr_scratch(ith, D->scr), *T = P + pz;
    const int64_t img = C * D->s->H * D->s->W; /* floats of an image of x */
    memset(P, 0, pz * sizeof(float));
    for (int64_t n = i0; n < i1; n++) {
        if (n + 1 < i1) prefetch_image(D->x + (n + 1) * img, img);
        for (int64_t c0 = 0; c0 < C; c0 += VL) {
            dwc_pack_group(D, P, n, c0);
            dwc_corr(P, q->pb, npix, D->wT + c0 * kk, q->toff, kk, (vf16){0}, T + c0, C);
        }
        float *y1 = J->y1 + n * npix * C;
        nr_gemm(0, 0, npix, C, C, 1.0f, T, C, J->wp1T, C, 0.0f, y1, C);
        double *st = J->st + n * 2 * C;
        for (int64_t c0 = 0; c0 < C; c0 += VL) {
            vf16 s = {0}, d2 = {0};
            for (int64_t p = 0; p < npix; p++) s += VLD(y1 + p * C + c0);
            vf16 m;
            for (int j = 0; j < VL; j++) {
                st[c0 + j] = (double)s[j];
                m[j] = (float)((double)s[j] / (double)npix);
            }
            for (int64_t p = 0; p < npix; p++) {
                vf16 v = VLD(y1 + p * C + c0) - m;
                d2 += v * v;
            }
            for (int j = 0; j < VL; j++) st[C + c0 + j] = (double)d2[j];
        }
    }
}

static void sb_fwd2_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    const sb_job *J = ctx;
    const dwc_job *D = &J->d2;
    const dwcplan *q = D->q;
    const int64_t C = J->C, npix = q->npix, kk = q->kk;
    const size_t pz = (size_t)rup(q->Hp * q->Wp * VL, VL), t = (size_t)rup(npix * C, VL);
    float *P = nr_scratch(ith, D->scr), *T = P + pz, *tt = T + t;
    const int64_t img = C * D->s->H * D->s->W; /* floats of an image of y1 */
    memset(P, 0, pz * sizeof(float));
    for (int64_t n = i0; n < i1; n++) {
        if (n + 1 < i1) prefetch_image(J->y1 + (n + 1) * img, img);
        for (int64_t c0 = 0; c0 < C; c0 += VL) {
            sb_pack(J, P, n, c0);
            dwc_corr(P, q->pb, npix, D->wT + c0 * kk, q->toff, kk, (vf16){0}, T + c0, C);
        }
        pw_cl_nchw(T, npix, C, J->wp2T, J->Co, tt, J->y + n * J->Co * npix);
    }
}

/* backward, second half, over image blocks: dWd2, dWp2 partials, and the
   gradient of the batch norm's output through the ReLU mask, channel-last
   into gz, with its per-channel sum and dot with xhat (per block) */
static void sb_bwd2_task(void *ctx, int64_t b0, int64_t b1, int ith) {
    const sb_job *J = ctx;
    const dwc_job *D = &J->d2;
    const cshape *s = D->s;
    const dwcplan *q = D->q;
    const int64_t C = J->C, Co = J->Co, npix = q->npix, kk = q->kk;
    const sepc_bufs B = sepc_bwd_bufs(D, ith); /* q->gather: stride 1, "same" */
    const size_t pz = B.pz, zz = B.zz;
    float *P = B.P, *Z = B.Z, *X = B.X, *T = B.T, *GT = B.GT;
    double *dacc = B.dacc;
    memset(P, 0, pz * sizeof(float));
    memset(Z, 0, zz * sizeof(float));
    float *Zin = Z + (q->qh * q->Wz + q->qw) * VL;
    for (int64_t blk = b0; blk < b1; blk++) {
        int64_t n0 = s->N * blk / J->nblk, n1 = s->N * (blk + 1) / J->nblk;
        double *pd = J->pd2 ? J->pd2 + blk * C * kk : NULL, *st = J->st + blk * 2 * C;
        float *pp = J->pp2 ? J->pp2 + blk * Co * C : NULL;
        if (pd) memset(dacc, 0, (size_t)(C * kk) * sizeof(double));
        for (int64_t c = 0; c < 2 * C; c++) st[c] = 0.0;
        for (int64_t n = n0; n < n1; n++) {
            const float *gn = J->gy + n * Co * npix;
            if (n + 1 < n1) {
                prefetch_image(gn + Co * npix, Co * npix);
                prefetch_image(J->y1 + (n + 1) * s->H * s->W * C, s->H * s->W * C);
            }
            nr_gemm(1, 0, npix, C, Co, 1.0f, gn, npix, J->wp2, C, 0.0f, GT, C);
            for (int64_t c0 = 0; c0 < C; c0 += VL) {
                sb_pack(J, P, n, c0);
                if (pp) dwc_corr(P, q->pb, npix, D->wT + c0 * kk, q->toff, kk, (vf16){0}, T + c0, C);
                if (pd) dwc_wgrad(P, q->pb, npix, GT + c0, C, q->toff, kk, dacc + c0 * kk);
                if (!J->gz) continue;
                for (int64_t oh = 0; oh < s->OH; oh++)
                    for (int64_t ow = 0; ow < s->OW; ow++)
                        VST(Zin + (oh * q->Wz + ow) * VL, VLD(GT + (oh * s->OW + ow) * C + c0));
                float *g = J->gz + n * npix * C + c0;
                const float *y1 = J->y1 + n * npix * C + c0;
                dwc_corr(Z, q->zb, npix, D->wTf + c0 * kk, q->zoff, kk, (vf16){0}, X, VL);
                const vf16 m = VLD(J->mf + c0), is = VLD(J->isf + c0), zero = {0};
                vf16 sg = {0}, sgx = {0};
                for (int64_t p = 0; p < npix; p++) {
                    vf16 xh = (VLD(y1 + p * C) - m) * is, v = VLD(X + p * VL);
                    v = (vf16)_mm512_maskz_mov_ps(
                        _mm512_cmp_ps_mask((__m512)xh, (__m512)zero, _CMP_GT_OQ), (__m512)v);
                    VST(g + p * C, v);
                    sg += v, sgx += v * xh;
                }
                for (int j = 0; j < VL; j++) st[c0 + j] += (double)sg[j], st[C + c0 + j] += (double)sgx[j];
            }
            if (pp) nr_gemm(0, 0, Co, C, npix, 1.0f, gn, npix, T, C, n == n0 ? 0.0f : 1.0f, pp, C);
        }
        if (pd)
            for (int64_t c0 = 0; c0 < C; c0 += VL)
                for (int64_t k = 0; k < kk; k++)
                    for (int j = 0; j < VL; j++) pd[(c0 + j) * kk + k] = dacc[c0 * kk + k * VL + j];
    }
}

/* backward, first half: per image the batch norm's dx g1 = k0 gz +
   k1 (y1 - mean) + k2 (channel-last, in scratch), then the first half's
   backward from it: dx (NCHW, through relu(x)'s mask), dWd1, dWp1 */
static void sb_bwd1_task(void *ctx, int64_t b0, int64_t b1, int ith) {
    const sb_job *J = ctx;
    const dwc_job *D = &J->d1;
    const cshape *s = D->s;
    const dwcplan *q = D->q;
    const int64_t C = J->C, npix = q->npix, kk = q->kk;
    const sepc_bufs B = sepc_bwd_bufs(D, ith);
    const size_t pz = B.pz, zz = B.zz;
    float *P = B.P, *Z = B.Z, *X = B.X, *T = B.T, *GT = B.GT;
    double *dacc = B.dacc;
    float *G1 = (float *)(dacc + C * kk);
    memset(P, 0, pz * sizeof(float));
    if (q->gather) memset(Z, 0, zz * sizeof(float));
    for (int64_t blk = b0; blk < b1; blk++) {
        int64_t n0 = s->N * blk / J->nblk, n1 = s->N * (blk + 1) / J->nblk;
        double *pd = J->pd1 ? J->pd1 + blk * C * kk : NULL;
        float *pp = J->pp1 ? J->pp1 + blk * C * C : NULL;
        if (pd) memset(dacc, 0, (size_t)(C * kk) * sizeof(double));
        for (int64_t n = n0; n < n1; n++) {
            const float *gz = J->gz + n * npix * C, *y1 = J->y1 + n * npix * C;
            if (n + 1 < n1) {
                const int64_t HW = s->H * s->W;
                prefetch_image(gz + npix * C, npix * C);
                prefetch_image(y1 + npix * C, npix * C);
                prefetch_image(D->x + (n + 1) * C * HW, C * HW);
                if (D->gx && !D->gx_fresh) prefetch_image(D->gx + (n + 1) * C * HW, C * HW);
            }
            for (int64_t c0 = 0; c0 < C; c0 += VL) {
                const vf16 k0 = VLD(J->k + c0), k1 = VLD(J->k + C + c0), k2 = VLD(J->k + 2 * C + c0);
                const vf16 m = VLD(J->mf + c0);
                for (int64_t p = 0; p < npix; p++)
                    VST(G1 + p * C + c0,
                        k0 * VLD(gz + p * C + c0) + k1 * (VLD(y1 + p * C + c0) - m) + k2);
            }
            nr_gemm(0, 0, npix, C, C, 1.0f, G1, C, J->wp1, C, 0.0f, GT, C);
            for (int64_t c0 = 0; c0 < C; c0 += VL) {
                if (pd || pp) dwc_pack_group(D, P, n, c0);
                if (pp) dwc_corr(P, q->pb, npix, D->wT + c0 * kk, q->toff, kk, (vf16){0}, T + c0, C);
                if (pd) dwc_wgrad(P, q->pb, npix, GT + c0, C, q->toff, kk, dacc + c0 * kk);
                if (D->gx) dwc_dx_group(D, Z, X, GT + c0, C, n, c0);
            }
            if (pp) nr_gemm(1, 0, C, C, npix, 1.0f, G1, C, T, C, n == n0 ? 0.0f : 1.0f, pp, C);
        }
        if (pd)
            for (int64_t c0 = 0; c0 < C; c0 += VL)
                for (int64_t k = 0; k < kk; k++)
                    for (int j = 0; j < VL; j++) pd[(c0 + j) * kk + k] = dacc[c0 * kk + k * VL + j];
    }
}

/* the two halves' shapes: x [N,C,H,W] -> y1 [N,C,OH,OW] -> y [N,Co,OH,OW] */
static void sb_shapes(const nr_node *nd, const nr_tensor *x, const nr_tensor *wd1,
                      const nr_tensor *wd2, cshape *s1, cshape *s2) {
    nr_node t = *nd;
    load_shape(&t, x, wd1, s1);
    t.p.i[0] = t.p.i[1] = 1;
    load_shape(&t, x, wd2, s2);
    s2->H = s1->OH, s2->W = s1->OW;
    s2->OH = (s2->H + 2 * s2->ph - s2->dh * (s2->kh - 1) - 1) + 1;
    s2->OW = (s2->W + 2 * s2->pw - s2->dw * (s2->kw - 1) - 1) + 1;
}

/* the halves' plans, the packed weights, the scratch every phase fits in */
typedef struct {
    dwcplan q1, q2;
    float *w;     /* wd1, wd2 packed and flipped, wp1T, wp2T */
    size_t scr;
} sb_plan;

static nr_status sb_plan_make(const cshape *s1, const cshape *s2, const float *wd1,
                              const float *wd2, const float *wp1, const float *wp2, int64_t Co,
                              sb_plan *pl, sb_job *J) {
    memset(pl, 0, sizeof *pl);
    if (!dwc_plan(s1, &pl->q1)) return nr_seterror(NR_ENOMEM, "sep_block: out of memory");
    if (!dwc_plan(s2, &pl->q2)) {
        free(pl->q1.mem);
        pl->q1.mem = NULL;
        return nr_seterror(NR_ENOMEM, "sep_block: out of memory");
    }
    const int64_t C = s1->C, k1 = pl->q1.kk, k2 = pl->q2.kk;
    const size_t w1 = (size_t)rup(C * k1, VL), w2 = (size_t)rup(C * k2, VL);
    const size_t cc = (size_t)(C * C), ct = (size_t)(C * rup(Co, VL));
    pl->w = aligned_alloc(64, (2 * w1 + 2 * w2 + cc + ct) * sizeof(float));
    size_t t1 = (size_t)rup(pl->q1.npix * C, VL);
    size_t a = (size_t)rup(pl->q1.Hp * pl->q1.Wp * VL, VL) + t1;
    size_t b = sepc_scratch(s2, &pl->q2, 0), c = sepc_scratch(s2, &pl->q2, 1);
    size_t d = sepc_scratch(s1, &pl->q1, 1) + t1;
    pl->scr = a > b ? a : b;
    if (c > pl->scr) pl->scr = c;
    if (d > pl->scr) pl->scr = d;
    nr_status st = pl->w ? prealloc_scratch(pl->scr)
                         : nr_seterror(NR_ENOMEM, "sep_block: out of memory");
    if (st != NR_OK) return st;
    float *w = pl->w;
    dwc_wpack(wd1, C, k1, 0, w);
    dwc_wpack(wd1, C, k1, 1, w + w1);
    dwc_wpack(wd2, C, k2, 0, w + 2 * w1);
    dwc_wpack(wd2, C, k2, 1, w + 2 * w1 + w2);
    float *wp1T = w + 2 * w1 + 2 * w2;
    for (int64_t co = 0; co < C; co++)
        for (int64_t ci = 0; ci < C; ci++) wp1T[ci * C + co] = wp1[co * C + ci];
    tile_pack(wp1T + cc, Co, C, wp2, C, VL);
    memset(J, 0, sizeof *J);
    J->d1 = (dwc_job){s1, &pl->q1, NULL, NULL, NULL, w, w + w1, NULL, NULL, NULL, 0, pl->scr, 1, 0};
    J->d2 = (dwc_job){s2, &pl->q2, NULL, NULL, NULL, w + 2 * w1, w + 2 * w1 + w2, NULL, NULL,
                      NULL, 0, pl->scr, 0, 0};
    J->wp1T = wp1T, J->wp2T = wp1T + cc, J->wp1 = wp1, J->wp2 = wp2;
    J->C = C, J->Co = Co;
    return NR_OK;
}

static void sb_plan_free(sb_plan *pl) {
    free(pl->q1.mem);
    free(pl->q2.mem);
    free(pl->w);
}

/* node extra: mean[C], invstd[C] (doubles), then mean and invstd as
   floats [2][C] (64-byte aligned: allocated with aligned_alloc) */
static nr_status sb_bwd(nr_node *nd, const nr_tensor *gout, nr_tensor *const *gin) {
    const nr_tensor *x = nd->in[0], *wd1 = nd->in[1], *wp1 = nd->in[2], *wd2 = nd->in[3],
                    *wp2 = nd->in[4];
    cshape s1, s2;
    const int64_t Co = wp2->ne[0];
    sb_shapes(nd, x, wd1, wd2, &s1, &s2);
    const int64_t C = s1.C, N = s1.N, nblk = N < 16 ? N : 16;
    nr_tensor *gc = nr_is_contiguous(gout) ? NULL : nr_tensor_clone(gout);
    if (!nr_is_contiguous(gout) && !gc) return NR_ENOMEM;
    sb_plan pl;
    sb_job J;
    nr_status st = sb_plan_make(&s1, &s2, nr_data(wd1), nr_data(wd2), nr_data(wp1), nr_data(wp2),
                                Co, &pl, &J);
    const int half1 = gin[0] || gin[1] || gin[2];
    const int64_t kk1 = pl.q1.kk, kk2 = pl.q2.kk, npix = pl.q1.npix;
    int64_t gne[3] = {N, npix, C};
    nr_tensor *gz = NULL;
    float *k = aligned_alloc(64, (size_t)(3 * C) * sizeof(float));
    double *sums = malloc((size_t)(nblk * 2 * C) * sizeof(double));
    J.pd1 = gin[1] ? malloc((size_t)(nblk * C * kk1) * sizeof(double)) : NULL;
    J.pd2 = gin[3] ? malloc((size_t)(nblk * C * kk2) * sizeof(double)) : NULL;
    J.pp1 = gin[2] ? malloc((size_t)(nblk * C * C) * sizeof(float)) : NULL;
    J.pp2 = gin[4] ? malloc((size_t)(nblk * Co * C) * sizeof(float)) : NULL;
    if (st == NR_OK && half1) gz = nr_tensor_empty(3, gne);
    if (st == NR_OK && (!k || !sums || (gin[1] && !J.pd1) || (gin[3] && !J.pd2) ||
                        (gin[2] && !J.pp1) || (gin[4] && !J.pp2) || (half1 && !gz)))
        st = nr_seterror(NR_ENOMEM, "sep_block backward: out of memory");
    if (st == NR_OK) {
        const double *invstd = (const double *)nd->extra + C;
        J.mf = (const float *)(invstd + C), J.isf = J.mf + C;
        J.y1 = nr_data(nd->saved[0]);
        J.gy = nr_data(gc ? gc : gout);
        J.gz = gz ? nr_data(gz) : NULL;
        J.st = sums;
        J.nblk = J.d1.nblk = J.d2.nblk = nblk;
        nr_parallel_for(nblk, 1, sb_bwd2_task, &J);
        sep_reduce(J.pd2, J.pd2 ? nr_data(gin[3]) : NULL, C * kk2, J.pp2,
                   J.pp2 ? nr_data(gin[4]) : NULL, Co * C, nblk);
        if (half1) {
            const double M = (double)N * (double)npix;
            for (int64_t c = 0; c < C; c++) {
                double sg = 0, sgx = 0;
                for (int64_t b = 0; b < nblk; b++) sg += sums[b * 2 * C + c], sgx += sums[b * 2 * C + C + c];
                const double is = invstd[c];
                k[c] = (float)is;
                k[C + c] = (float)(-is * is * sgx / M);
                k[2 * C + c] = (float)(-is * sg / M);
            }
            J.k = k;
            J.d1.x = nr_data(x);
            J.d1.gx = gin[0] ? nr_data(gin[0]) : NULL;
            J.d1.gx_fresh = gin[0] && (nd->fresh & 1);
            nr_parallel_for(nblk, 1, sb_bwd1_task, &J);
            sep_reduce(J.pd1, J.pd1 ? nr_data(gin[1]) : NULL, C * kk1, J.pp1,
                       J.pp1 ? nr_data(gin[2]) : NULL, C * C, nblk);
        }
    }
    sb_plan_free(&pl);
    free(k);
    free(sums);
    free(J.pd1);
    free(J.pd2);
    free(J.pp1);
    free(J.pp2);
    nr_tensor_release(gz);
    nr_tensor_release(gc);
    return st;
}
#endif

/* the block as the three ops, sep_conv2d, batch_norm, sep_conv2d (errors
   named as sep_block's) */
static nr_status sb_apart(nr_tensor **out, const nr_tensor *x, const nr_tensor *wd1,
                          const nr_tensor *wp1, const nr_tensor *wd2, const nr_tensor *wp2,
                          const nr_conv_params *p, nr_tensor *running_mean,
                          nr_tensor *running_var, double momentum, double eps) {
    nr_conv_params p2 = *p;
    p2.stride[0] = p2.stride[1] = 1;
    nr_bn_params bp = {1, momentum, eps, NR_ACT_NONE};
    nr_tensor *a = NULL, *z = NULL;
    nr_status s = nr_sep_conv2d(&a, x, wd1, wp1, p, 1);
    if (s == NR_OK) s = nr_batch_norm(&z, a, running_mean, running_var, NULL, NULL, &bp);
    nr_tensor_release(a);
    if (s == NR_OK) s = nr_sep_conv2d(out, z, wd2, wp2, &p2, 1);
    nr_tensor_release(z);
    if (s != NR_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "sep_block: %s", nr_lasterror());
        return nr_seterror(s, "%s", msg);
    }
    return NR_OK;
}

nr_status nr_sep_block(nr_tensor **out, const nr_tensor *x, const nr_tensor *wd1,
                       const nr_tensor *wp1, const nr_tensor *wd2, const nr_tensor *wp2,
                       const nr_conv_params *p, nr_tensor *running_mean,
                       nr_tensor *running_var, double momentum, double eps) {
    *out = NULL;
    if (!x || !wd1 || !wp1 || !wd2 || !wp2 || !p)
        return nr_seterror(NR_EUSAGE, "sep_block: input, four weights and parameters are required");
#if defined(__AVX512F__)
    nr_node tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.p.i[0] = p->stride[0], tmp.p.i[1] = p->stride[1];
    tmp.p.i[2] = p->padding[0], tmp.p.i[3] = p->padding[1];
    tmp.p.i[4] = p->dilation[0], tmp.p.i[5] = p->dilation[1];
    tmp.p.i[7] = 1;
    /* shapes the fused engine takes; anything else (bad ones included,
       which the ops apart report) runs as the three ops */
    cshape s1, s2;
    const int64_t C = x->ndim == 4 ? x->ne[1] : 0;
    nr_conv_params dp = *p;
    dp.groups = C;
    tmp.p.i[6] = C;
    const nr_tensor *r[2] = {running_mean, running_var};
    int fuse = x->ndim == 4 && x->ne[0] > 0 && wd1->ndim == 4 && wd2->ndim == 4 && wp1->ndim == 4 &&
           wp2->ndim == 4 && wd1->ne[0] == C && wd1->ne[1] == 1 && wd2->ne[0] == C &&
           wd2->ne[1] == 1 && wd2->ne[2] == wd1->ne[2] && wd2->ne[3] == wd1->ne[3] &&
           wp1->ne[0] == C && wp1->ne[1] == C && wp1->ne[2] == 1 && wp1->ne[3] == 1 &&
           wp2->ne[1] == C && wp2->ne[2] == 1 && wp2->ne[3] == 1;
    for (int i = 0; i < 2; i++)
        if (r[i] && (r[i]->ndim != 1 || r[i]->ne[0] != C || !nr_is_contiguous(r[i]))) fuse = 0;
    if (fuse && conv_check("sep_block", x, wd1, NULL, &dp) != NR_OK) fuse = 0;
    if (fuse) {
        sb_shapes(&tmp, x, wd1, wd2, &s1, &s2);
        fuse = sb_fusable(&s1, &s2);
    }
    if (!fuse)
        return sb_apart(out, x, wd1, wp1, wd2, wp2, p, running_mean, running_var, momentum, eps);
    nr_status st = NR_OK;
    const int64_t N = s1.N, Co = wp2->ne[0];
    nr_tensor *xc = nr_contig(x), *w[4] = {nr_contig(wd1), nr_contig(wp1), nr_contig(wd2),
                                           nr_contig(wp2)};
    int64_t y1ne[3] = {N, s1.OH * s1.OW, C}, yne[4] = {N, Co, s2.OH, s2.OW};
    nr_tensor *y1 = nr_tensor_empty(3, y1ne), *y = nr_tensor_empty(4, yne);
    double *stats = aligned_alloc(64, (size_t)(3 * C) * sizeof(double));
    double *part = malloc((size_t)(N * 2 * C) * sizeof(double));
    sb_plan pl;
    memset(&pl, 0, sizeof pl);
    if (!xc || !w[0] || !w[1] || !w[2] || !w[3] || !y1 || !y || !stats || !part) {
        st = nr_seterror(NR_ENOMEM, "sep_block: out of memory");
        goto done;
    }
    sb_job J;
    st = sb_plan_make(&s1, &s2, nr_data(w[0]), nr_data(w[2]), nr_data(w[1]), nr_data(w[3]), Co,
                      &pl, &J);
    if (st != NR_OK) goto done;
    J.d1.x = nr_data(xc);
    J.y1 = nr_data(y1), J.y = nr_data(y), J.st = part;
    nr_parallel_for(N, 1, sb_fwd1_task, &J);
    /* the statistics: image sums and squared deviations combined in image
       order (Chan et al.), running statistics as batch_norm updates them */
    const int64_t npix = s1.OH * s1.OW;
    const double M = (double)N * (double)npix;
    float *mf = (float *)(stats + 2 * C), *isf = mf + C;
    for (int64_t c = 0; c < C; c++) {
        double s = 0, ss = 0;
        for (int64_t n = 0; n < N; n++) s += part[n * 2 * C + c];
        const double mean = s / M;
        for (int64_t n = 0; n < N; n++) {
            double d = part[n * 2 * C + c] / (double)npix - mean;
            ss += part[n * 2 * C + C + c] + (double)npix * d * d;
        }
        stats[c] = mean;
        stats[C + c] = 1.0 / sqrt(ss / M + eps);
        mf[c] = (float)mean, isf[c] = (float)stats[C + c];
        if (running_mean) {
            float *r = nr_data(running_mean) + c;
            *r = (float)((1.0 - momentum) * *r + momentum * mean);
        }
        if (running_var) {
            float *r = nr_data(running_var) + c;
            *r = (float)((1.0 - momentum) * *r + momentum * (ss / (M - 1.0)));
        }
    }
    J.mf = mf, J.isf = isf;
    nr_parallel_for(N, 1, sb_fwd2_task, &J);
    nr_node *nd = nr_record(y, "sep_block", sb_bwd, 5, (nr_tensor *[]){xc, w[0], w[1], w[2], w[3]});
    if (nd) {
        nd->p = tmp.p;
        nd->writes = 1; /* dx through the ReLU mask */
        nr_save(nd, 0, y1);
        nd->extra = stats;
        stats = NULL;
    }
done:
    sb_plan_free(&pl);
    free(stats);
    free(part);
    nr_tensor_release(xc);
    for (int i = 0; i < 4; i++) nr_tensor_release(w[i]);
    nr_tensor_release(y1);
    if (st != NR_OK) {
        nr_tensor_release(y);
        return st;
    }
    *out = y;
    return NR_OK;
#else
    return sb_apart(out, x, wd1, wp1, wd2, wp2, p, running_mean, running_var, momentum, eps);
#endif
}
