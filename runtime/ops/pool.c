/*
** ops/pool.c -- max_pool2d, avg_pool2d and adaptive_avg_pool2d with
** PyTorch's semantics (output size formula and ceil_mode rule, -inf
** padding for max, count_include_pad for avg, floor/ceil bins for
** adaptive), forward and backward, parallel over the N*C planes.
** Max pooling keeps the argmax of every output (plane-local int32) in the
** node's `extra`.
*/
#include "nasrt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t P, H, W, OH, OW;   /* planes, input and output sizes */
    int64_t kh, kw, sh, sw, ph, pw;
    int cip;                   /* count_include_pad */
} pshape;

static int64_t floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

/* PyTorch's pooling_output_shape (dilation 1). */
static int64_t pool_out(int64_t in, int64_t k, int64_t s, int64_t p, int ceil_mode) {
    int64_t o = floordiv(in + 2 * p - (k - 1) - 1 + (ceil_mode ? s - 1 : 0), s) + 1;
    if (ceil_mode && (o - 1) * s >= in + p) o--;
    return o;
}

static int64_t plane_grain(int64_t plane) {
    int64_t g = 16384 / (plane > 0 ? plane : 1);
    return g < 1 ? 1 : g;
}

/* Checks x, the params, computes the output shape.  Returns NR_OK. */
static nr_status pool_setup(const char *fn, const nr_tensor *x, const nr_pool_params *p,
                            pshape *s) {
    char b1[NR_SHAPEBUF];
    if (!x) return nr_seterror(NR_EUSAGE, "%s: input is required", fn);
    if (!p) return nr_seterror(NR_EUSAGE, "%s: missing parameters", fn);
    if (x->ndim != 4 && x->ndim != 3)
        return nr_seterror(NR_ESHAPE, "%s: expected a 4-D input [N,C,H,W] (or 3-D [C,H,W]), got %s",
                           fn, nr_shape_str(x, b1));
    for (int d = 0; d < 2; d++) {
        if (p->kernel[d] < 1)
            return nr_seterror(NR_EUSAGE, "%s: kernel size must be >= 1, got %lld", fn,
                               (long long)p->kernel[d]);
        if (p->stride[d] < 1)
            return nr_seterror(NR_EUSAGE, "%s: stride must be >= 1, got %lld", fn,
                               (long long)p->stride[d]);
        if (p->padding[d] < 0)
            return nr_seterror(NR_EUSAGE, "%s: padding must be >= 0, got %lld", fn,
                               (long long)p->padding[d]);
        if (p->padding[d] > p->kernel[d] / 2)
            return nr_seterror(NR_EUSAGE,
                               "%s: padding should be at most half of kernel size, but got "
                               "padding=%lld and kernel=%lld",
                               fn, (long long)p->padding[d], (long long)p->kernel[d]);
    }
    int nd = x->ndim;
    int64_t H = x->ne[nd - 2], W = x->ne[nd - 1];
    for (int d = (nd == 4 ? 1 : 0); d < nd; d++)
        if (x->ne[d] < 1)
            return nr_seterror(NR_ESHAPE, "%s: input %s has an empty non-batch dim", fn,
                               nr_shape_str(x, b1));
    s->P = 1;
    for (int d = 0; d < nd - 2; d++) s->P *= x->ne[d];
    s->H = H;
    s->W = W;
    s->kh = p->kernel[0];
    s->kw = p->kernel[1];
    s->sh = p->stride[0];
    s->sw = p->stride[1];
    s->ph = p->padding[0];
    s->pw = p->padding[1];
    s->cip = p->count_include_pad;
    s->OH = pool_out(H, s->kh, s->sh, s->ph, p->ceil_mode);
    s->OW = pool_out(W, s->kw, s->sw, s->pw, p->ceil_mode);
    if (s->OH < 1 || s->OW < 1)
        return nr_seterror(NR_ESHAPE,
                           "%s: input %s with kernel %lldx%lld, stride %lldx%lld, padding "
                           "%lldx%lld gives output size %lldx%lld, which is too small",
                           fn, nr_shape_str(x, b1), (long long)s->kh, (long long)s->kw,
                           (long long)s->sh, (long long)s->sw, (long long)s->ph,
                           (long long)s->pw, (long long)s->OH, (long long)s->OW);
    return NR_OK;
}

static void store_params(nr_node *n, const pshape *s) {
    n->p.i[0] = s->P;
    n->p.i[1] = s->H;
    n->p.i[2] = s->W;
    n->p.i[3] = s->OH;
    n->p.i[4] = s->OW;
    n->p.i[5] = s->kh;
    n->p.i[6] = s->kw;
    n->p.i[7] = s->sh;
    n->p.i[8] = s->sw;
    n->p.i[9] = s->ph;
    n->p.i[10] = s->pw;
    n->p.i[11] = s->cip;
}

static void load_params(const nr_node *n, pshape *s) {
    s->P = n->p.i[0];
    s->H = n->p.i[1];
    s->W = n->p.i[2];
    s->OH = n->p.i[3];
    s->OW = n->p.i[4];
    s->kh = n->p.i[5];
    s->kw = n->p.i[6];
    s->sh = n->p.i[7];
    s->sw = n->p.i[8];
    s->ph = n->p.i[9];
    s->pw = n->p.i[10];
    s->cip = (int)n->p.i[11];
}

static nr_tensor *out_like(const nr_tensor *x, int64_t oh, int64_t ow) {
    int64_t ne[NR_MAXDIM];
    for (int d = 0; d < x->ndim; d++) ne[d] = x->ne[d];
    ne[x->ndim - 2] = oh;
    ne[x->ndim - 1] = ow;
    return nr_tensor_empty(x->ndim, ne);
}

typedef struct {
    const pshape *s;
    const float *x, *gy;
    float *y, *gx;
    int32_t *idx;
    int64_t aoh, aow;  /* adaptive: output size */
} pjob;

/* ------------------------------------------------------------ max pool */

static void max_fwd_task(void *ctx, int64_t p0, int64_t p1, int ith) {
    const pjob *J = ctx;
    const pshape *s = J->s;
    const int64_t H = s->H, W = s->W, OH = s->OH, OW = s->OW;
    for (int64_t pl = p0; pl < p1; pl++) {
        const float *restrict x = J->x + pl * H * W;
        float *restrict y = J->y + pl * OH * OW;
        int32_t *idx = J->idx ? J->idx + pl * OH * OW : NULL;
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t hs = oh * s->sh - s->ph, he = hs + s->kh;
            if (hs < 0) hs = 0;
            if (he > H) he = H;
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t ws = ow * s->sw - s->pw, we = ws + s->kw;
                if (ws < 0) ws = 0;
                if (we > W) we = W;
                float m = -INFINITY;
                int64_t mi = hs * W + ws;
                for (int64_t ih = hs; ih < he; ih++) {
                    const float *xr = x + ih * W;
                    for (int64_t iw = ws; iw < we; iw++) {
                        float v = xr[iw];
                        if (v > m || isnan(v)) {
                            m = v;
                            mi = ih * W + iw;
                        }
                    }
                }
                y[oh * OW + ow] = m;
                if (idx) idx[oh * OW + ow] = (int32_t)mi;
            }
        }
    }
}

static void max_bwd_task(void *ctx, int64_t p0, int64_t p1, int ith) {
    const pjob *J = ctx;
    const pshape *s = J->s;
    const int64_t HW = s->H * s->W, OHW = s->OH * s->OW;
    for (int64_t pl = p0; pl < p1; pl++) {
        float *restrict gx = J->gx + pl * HW;
        const float *restrict g = J->gy + pl * OHW;
        const int32_t *restrict idx = J->idx + pl * OHW;
        for (int64_t k = 0; k < OHW; k++) gx[idx[k]] += g[k];
    }
}

static nr_status max_bwd(nr_node *n, const nr_tensor *gout, nr_tensor *const *gin) {
    if (!gin[0]) return NR_OK;
    pshape s;
    load_params(n, &s);
    nr_tensor *gc = NULL;
    if (!nr_is_contiguous(gout)) {
        if (!(gc = nr_tensor_clone(gout))) return NR_ENOMEM;
        gout = gc;
    }
    pjob J = {&s, NULL, nr_data(gout), NULL, nr_data(gin[0]), n->extra, 0, 0};
    nr_parallel_for(s.P, plane_grain(s.OH * s.OW * 4), max_bwd_task, &J);
    nr_tensor_release(gc);
    return NR_OK;
}

nr_status nr_max_pool2d(nr_tensor **out, const nr_tensor *x, const nr_pool_params *p) {
    *out = NULL;
    pshape s;
    nr_status st = pool_setup("max_pool2d", x, p, &s);
    if (st != NR_OK) return st;
    if ((s.H * s.W) > INT32_MAX)
        return nr_seterror(NR_ESHAPE, "max_pool2d: planes over 2^31 elements are not supported");
    nr_tensor *xc = nr_contig(x);
    if (!xc) return NR_ENOMEM;
    nr_tensor *y = out_like(xc, s.OH, s.OW);
    if (!y) {
        nr_tensor_release(xc);
        return NR_ENOMEM;
    }
    int32_t *idx = NULL;
    if (nr_grad_enabled() && nr_needs_grad(xc) && s.P > 0) {
        idx = malloc((size_t)(s.P * s.OH * s.OW) * sizeof(int32_t));
        if (!idx) {
            nr_tensor_release(xc);
            nr_tensor_release(y);
            return nr_seterror(NR_ENOMEM, "max_pool2d: out of memory");
        }
    }
    pjob J = {&s, nr_data(xc), NULL, nr_data(y), NULL, idx, 0, 0};
    nr_parallel_for(s.P, plane_grain(s.H * s.W), max_fwd_task, &J);
    nr_node *n = nr_record(y, "max_pool2d", max_bwd, 1, &xc);
    if (n) {
        store_params(n, &s);
        n->extra = idx;
    } else {
        free(idx);
    }
    nr_tensor_release(xc);
    *out = y;
    return NR_OK;
}

/* ------------------------------------------------------------ avg pool */

/* Window [hs,he) x [ws,we) clipped to the input and its divisor. */
static inline float avg_window(const pshape *s, int64_t oh, int64_t ow, int64_t *hs, int64_t *he,
                               int64_t *ws, int64_t *we) {
    int64_t h0 = oh * s->sh - s->ph, h1 = h0 + s->kh;
    int64_t w0 = ow * s->sw - s->pw, w1 = w0 + s->kw;
    if (h1 > s->H + s->ph) h1 = s->H + s->ph;
    if (w1 > s->W + s->pw) w1 = s->W + s->pw;
    int64_t pool = (h1 - h0) * (w1 - w0);
    if (h0 < 0) h0 = 0;
    if (w0 < 0) w0 = 0;
    if (h1 > s->H) h1 = s->H;
    if (w1 > s->W) w1 = s->W;
    *hs = h0;
    *he = h1;
    *ws = w0;
    *we = w1;
    int64_t div = s->cip ? pool : (h1 - h0) * (w1 - w0);
    return (float)div;
}

static void avg_fwd_task(void *ctx, int64_t p0, int64_t p1, int ith) {
    const pjob *J = ctx;
    const pshape *s = J->s;
    const int64_t H = s->H, W = s->W, OH = s->OH, OW = s->OW;
    for (int64_t pl = p0; pl < p1; pl++) {
        const float *restrict x = J->x + pl * H * W;
        float *restrict y = J->y + pl * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++) {
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t hs, he, ws, we;
                float div = avg_window(s, oh, ow, &hs, &he, &ws, &we);
                float acc = 0.0f;
                for (int64_t ih = hs; ih < he; ih++)
                    for (int64_t iw = ws; iw < we; iw++) acc += x[ih * W + iw];
                y[oh * OW + ow] = acc / div;
            }
        }
    }
}

static void avg_bwd_task(void *ctx, int64_t p0, int64_t p1, int ith) {
    const pjob *J = ctx;
    const pshape *s = J->s;
    const int64_t H = s->H, W = s->W, OH = s->OH, OW = s->OW;
    for (int64_t pl = p0; pl < p1; pl++) {
        float *restrict gx = J->gx + pl * H * W;
        const float *restrict g = J->gy + pl * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++) {
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t hs, he, ws, we;
                float div = avg_window(s, oh, ow, &hs, &he, &ws, &we);
                float v = g[oh * OW + ow] / div;
                for (int64_t ih = hs; ih < he; ih++)
                    for (int64_t iw = ws; iw < we; iw++) gx[ih * W + iw] += v;
            }
        }
    }
}

static nr_status avg_bwd(nr_node *n, const nr_tensor *gout, nr_tensor *const *gin) {
    if (!gin[0]) return NR_OK;
    pshape s;
    load_params(n, &s);
    nr_tensor *gc = NULL;
    if (!nr_is_contiguous(gout)) {
        if (!(gc = nr_tensor_clone(gout))) return NR_ENOMEM;
        gout = gc;
    }
    pjob J = {&s, NULL, nr_data(gout), NULL, nr_data(gin[0]), NULL, 0, 0};
    nr_parallel_for(s.P, plane_grain(s.H * s.W), avg_bwd_task, &J);
    nr_tensor_release(gc);
    return NR_OK;
}

nr_status nr_avg_pool2d(nr_tensor **out, const nr_tensor *x, const nr_pool_params *p) {
    *out = NULL;
    pshape s;
    nr_status st = pool_setup("avg_pool2d", x, p, &s);
    if (st != NR_OK) return st;
    nr_tensor *xc = nr_contig(x);
    if (!xc) return NR_ENOMEM;
    nr_tensor *y = out_like(xc, s.OH, s.OW);
    if (!y) {
        nr_tensor_release(xc);
        return NR_ENOMEM;
    }
    pjob J = {&s, nr_data(xc), NULL, nr_data(y), NULL, NULL, 0, 0};
    nr_parallel_for(s.P, plane_grain(s.H * s.W), avg_fwd_task, &J);
    nr_node *n = nr_record(y, "avg_pool2d", avg_bwd, 1, &xc);
    if (n) store_params(n, &s);
    nr_tensor_release(xc);
    *out = y;
    return NR_OK;
}

/* --------------------------------------------------- adaptive avg pool */

static inline int64_t bin_start(int64_t a, int64_t out, int64_t in) { return a * in / out; }
static inline int64_t bin_end(int64_t a, int64_t out, int64_t in) {
    return ((a + 1) * in + out - 1) / out;
}

static void ad_fwd_task(void *ctx, int64_t p0, int64_t p1, int ith) {
    const pjob *J = ctx;
    const pshape *s = J->s;
    const int64_t H = s->H, W = s->W, OH = s->OH, OW = s->OW;
    for (int64_t pl = p0; pl < p1; pl++) {
        const float *restrict x = J->x + pl * H * W;
        float *restrict y = J->y + pl * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t hs = bin_start(oh, OH, H), he = bin_end(oh, OH, H);
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t ws = bin_start(ow, OW, W), we = bin_end(ow, OW, W);
                double acc = 0.0;
                for (int64_t ih = hs; ih < he; ih++) {
                    float r = 0.0f;
                    for (int64_t iw = ws; iw < we; iw++) r += x[ih * W + iw];
                    acc += r;
                }
                y[oh * OW + ow] = (float)(acc / (double)((he - hs) * (we - ws)));
            }
        }
    }
}

static void ad_bwd_task(void *ctx, int64_t p0, int64_t p1, int ith) {
    const pjob *J = ctx;
    const pshape *s = J->s;
    const int64_t H = s->H, W = s->W, OH = s->OH, OW = s->OW;
    for (int64_t pl = p0; pl < p1; pl++) {
        float *restrict gx = J->gx + pl * H * W;
        const float *restrict g = J->gy + pl * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t hs = bin_start(oh, OH, H), he = bin_end(oh, OH, H);
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t ws = bin_start(ow, OW, W), we = bin_end(ow, OW, W);
                float v = g[oh * OW + ow] / (float)((he - hs) * (we - ws));
                for (int64_t ih = hs; ih < he; ih++)
                    for (int64_t iw = ws; iw < we; iw++) gx[ih * W + iw] += v;
            }
        }
    }
}

static nr_status ad_bwd(nr_node *n, const nr_tensor *gout, nr_tensor *const *gin) {
    if (!gin[0]) return NR_OK;
    pshape s;
    load_params(n, &s);
    nr_tensor *gc = NULL;
    if (!nr_is_contiguous(gout)) {
        if (!(gc = nr_tensor_clone(gout))) return NR_ENOMEM;
        gout = gc;
    }
    pjob J = {&s, NULL, nr_data(gout), NULL, nr_data(gin[0]), NULL, 0, 0};
    nr_parallel_for(s.P, plane_grain(s.H * s.W), ad_bwd_task, &J);
    nr_tensor_release(gc);
    return NR_OK;
}

nr_status nr_adaptive_avg_pool2d(nr_tensor **out, const nr_tensor *x, int64_t oh, int64_t ow) {
    char b1[NR_SHAPEBUF];
    *out = NULL;
    if (!x) return nr_seterror(NR_EUSAGE, "adaptive_avg_pool2d: input is required");
    if (x->ndim != 4 && x->ndim != 3)
        return nr_seterror(NR_ESHAPE,
                           "adaptive_avg_pool2d: expected a 4-D input [N,C,H,W] (or 3-D [C,H,W]), "
                           "got %s",
                           nr_shape_str(x, b1));
    if (oh < 1 || ow < 1)
        return nr_seterror(NR_EUSAGE, "adaptive_avg_pool2d: output size must be >= 1, got %lldx%lld",
                           (long long)oh, (long long)ow);
    int nd = x->ndim;
    for (int d = (nd == 4 ? 1 : 0); d < nd; d++)
        if (x->ne[d] < 1)
            return nr_seterror(NR_ESHAPE, "adaptive_avg_pool2d: input %s has an empty non-batch dim",
                               nr_shape_str(x, b1));
    pshape s;
    memset(&s, 0, sizeof s);
    s.P = 1;
    for (int d = 0; d < nd - 2; d++) s.P *= x->ne[d];
    s.H = x->ne[nd - 2];
    s.W = x->ne[nd - 1];
    s.OH = oh;
    s.OW = ow;
    nr_tensor *xc = nr_contig(x);
    if (!xc) return NR_ENOMEM;
    nr_tensor *y = out_like(xc, oh, ow);
    if (!y) {
        nr_tensor_release(xc);
        return NR_ENOMEM;
    }
    pjob J = {&s, nr_data(xc), NULL, nr_data(y), NULL, NULL, 0, 0};
    nr_parallel_for(s.P, plane_grain(s.H * s.W), ad_fwd_task, &J);
    nr_node *n = nr_record(y, "adaptive_avg_pool2d", ad_bwd, 1, &xc);
    if (n) store_params(n, &s);
    nr_tensor_release(xc);
    *out = y;
    return NR_OK;
}
