/*
** ops/pool.c -- max_pool2d, avg_pool2d and adaptive_avg_pool2d with
** PyTorch's semantics (output size formula and ceil_mode rule, -inf
** padding for max, count_include_pad for avg, floor/ceil bins for
** adaptive), forward and backward, parallel over the N*C planes.
** Max pooling keeps the argmax of every output in the node's `extra`: the
** window tap as one byte when the window has at most 256 taps (a quarter
** of an int32 plane index: DARTS' 3x3 pools hold 45 MB instead of 182),
** else the plane-local int32 index.
** At unit column stride (DARTS' 3x3 pools) max and average windows are
** separable: each padded row's kw-wide max or sum is formed once, then
** every output combines kh of them.
*/
#include "nasrt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vec.h"

/* the first n (<= 16) lanes of v to p (a masked store with AVX-512; lane
   by lane extraction cost more than the pooling itself on 28-wide rows) */
static inline void vstore_n(float *p, vf16 v, int64_t n) {
    if (n >= VL) {
        VST(p, v);
    } else {
#if defined(__AVX512F__)
        _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
#else
        for (int64_t l = 0; l < n; l++) p[l] = v[l];
#endif
    }
}

/* the first n (<= 16) lanes of v, narrowed to bytes, to p */
typedef uint8_t vu8x16 __attribute__((vector_size(16)));
static inline void vstore_nb(uint8_t *p, vi16 v, int64_t n) {
    vu8x16 b = __builtin_convertvector(v, vu8x16);
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    /* a memcpy of a variable length was a libc call per 16 outputs */
    _mm_mask_storeu_epi8(p, (__mmask16)(n >= VL ? 0xffff : (1u << n) - 1), (__m128i)b);
#else
    if (n >= VL)
        memcpy(p, &b, VL);
    else
        for (int64_t i = 0; i < n; i++) p[i] = b[i];
#endif
}

static inline void vstore_ni(int32_t *p, vi16 v, int64_t n) {
    if (n >= VL) {
        *(vi16 *)p = v;
    } else {
#if defined(__AVX512F__)
        _mm512_mask_storeu_epi32(p, (__mmask16)((1u << n) - 1), (__m512i)v);
#else
        for (int64_t l = 0; l < n; l++) p[l] = v[l];
#endif
    }
}

/* m ? a : b, lane by lane (a macro: 64-byte vector arguments would change
   the ABI on machines without AVX-512) */
#define VBLEND(m, a, b) ((vf16)(((vi16)(a) & (m)) | ((vi16)(b) & ~(m))))

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
        if (p->kernel[d] > NR_MAXPARAM || p->stride[d] > NR_MAXPARAM)
            return nr_seterror(NR_EUSAGE, "%s: kernel %lld or stride %lld exceeds %d", fn,
                               (long long)p->kernel[d], (long long)p->stride[d], NR_MAXPARAM);
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

/* Each plane is copied into a padded buffer (padding -inf for max, 0 for
   avg) whose columns are split by stride phase: padded pixel (r, c) at
   P[r*rs + (c % sw)*Tw + c / sw].  Window tap (i, j) of output (oh, ow) is
   then P[oh*sh*rs + toff[i*kw + j] + ow]: a contiguous run of outputs per
   tap, 16 at a time, with no bounds tests. */
typedef struct {
    int64_t Hn, Tw, rs, OWr;
    size_t psz;
    int64_t *toff;
} ppad;

static int ppad_init(const pshape *s, ppad *g) {
    g->OWr = rup(s->OW, VL);
    g->Hn = (s->OH - 1) * s->sh + s->kh;
    g->Tw = rup(g->OWr + (s->kw - 1) / s->sw, VL);
    g->rs = s->sw * g->Tw;
    g->psz = (size_t)(g->Hn * g->rs + VL);
    g->toff = malloc((size_t)(s->kh * s->kw) * sizeof(int64_t));
    if (!g->toff) return 0;
    for (int64_t i = 0; i < s->kh; i++)
        for (int64_t j = 0; j < s->kw; j++)
            g->toff[i * s->kw + j] = i * g->rs + (j % s->sw) * g->Tw + j / s->sw;
    return 1;
}

/* the interior of P <- plane x (the padding is set once per buffer) */
static void ppad_fill(const pshape *s, const ppad *g, const float *restrict x, float *restrict P) {
    const int64_t sw = s->sw, Tw = g->Tw;
    for (int64_t ih = 0; ih < s->H; ih++) {
        int64_t r = ih + s->ph;
        if (r >= g->Hn) break;
        const float *restrict xr = x + ih * s->W;
        float *restrict pr = P + r * g->rs;
        if (sw == 1) {
            int64_t n = s->W < Tw - s->pw ? s->W : Tw - s->pw;
            copy_short(pr + s->pw, xr, n);
            continue;
        }
        for (int64_t q = 0; q < sw; q++) {
            int64_t t = q >= s->pw ? 0 : (s->pw - q + sw - 1) / sw;
            int64_t iw = q + sw * t - s->pw;
            float *restrict d = pr + q * Tw;
            for (; t < Tw && iw < s->W; t++, iw += sw) d[t] = xr[iw];
        }
    }
}

/* gx plane += the interior of D (P's layout) */
static void ppad_unfill_add(const pshape *s, const ppad *g, const float *restrict D,
                            float *restrict gx) {
    const int64_t sw = s->sw, Tw = g->Tw;
    for (int64_t ih = 0; ih < s->H; ih++) {
        int64_t r = ih + s->ph;
        if (r >= g->Hn) break;
        float *restrict xr = gx + ih * s->W;
        const float *restrict dr = D + r * g->rs;
        for (int64_t q = 0; q < sw; q++) {
            int64_t t = q >= s->pw ? 0 : (s->pw - q + sw - 1) / sw;
            int64_t iw = q + sw * t - s->pw;
            const float *restrict d = dr + q * Tw;
            for (; t < Tw && iw < s->W; t++, iw += sw) xr[iw] += d[t];
        }
    }
}

static nr_status prealloc_scratch(size_t nfloat, const char *fn) {
    for (int i = 0; i < nr_num_threads(); i++)
        if (!nr_scratch(i, nfloat))
            return nr_seterror(NR_ENOMEM, "%s: out of memory for scratch buffers", fn);
    return NR_OK;
}

typedef struct {
    const pshape *s;
    const ppad *g;
    const float *x, *gy;
    float *y, *gx;
    int32_t *idx;
    const float *rowf, *colf; /* avg: divisor factors per output row / column */
    uint8_t *tap;             /* max: the argmax tap (instead of idx) */
} pjob;

/* max pooling stores taps (one byte) rather than plane indices */
static int max_taps(const pshape *s) { return s->kh * s->kw <= 256; }

/* ------------------------------------------------------------ max pool */

/* The separable path (unit column stride, taps or no argmax): the window's
   max is the max over its kh rows of each row's max over kw columns.  Each
   padded row's kw-wide max (and the column it came from) is formed once in
   HM/HJ, then every output takes kh of those: kh + kw - 2 compare-blends
   per output (and the rows' share) instead of kh * kw.  Columns are scanned
   in order within a row and rows in order, with the same test as the
   direct loop, so the choice is PyTorch's: the first maximum in row-major
   order, the last NaN; a window of -inf keeps its first in-bounds tap. */
static int max_separable(const pshape *s, int taps_or_none) {
    return s->sw == 1 && taps_or_none;
}

static size_t max_scratch(const pshape *s, const ppad *g, int sep) {
    return g->psz + (sep ? (size_t)(2 * g->Hn * g->OWr) : 0);
}

static void max_plane_sep(const pshape *s, const ppad *g, const float *restrict P,
                          float *restrict HM, int32_t *restrict HJ, float *restrict y,
                          uint8_t *restrict tap) {
    const int64_t OH = s->OH, OW = s->OW, OWr = g->OWr, kw = s->kw, kh = s->kh;
    vi16 lane;
    for (int l = 0; l < VL; l++) lane[l] = l;
    for (int64_t r = 0; r < g->Hn; r++) {
        const float *pr = P + r * g->rs;
        for (int64_t ob = 0; ob < OWr; ob += VL) {
            vf16 m = VLD(pr + ob);
            vi16 jt = (int32_t)s->pw - (lane + (int32_t)ob); /* the first in-bounds */
            jt &= jt > 0;                                     /* tap column */
            for (int64_t j = 1; j < kw; j++) {
                vf16 v = VLD(pr + ob + j);
                vi16 gt = (v > m) | (v != v);
                m = VBLEND(gt, v, m);
                jt = ((int32_t)j & gt) | (jt & ~gt);
            }
            VST(HM + r * OWr + ob, m);
            *(vi16 *)(HJ + r * OWr + ob) = jt;
        }
    }
    for (int64_t oh = 0; oh < OH; oh++) {
        const int64_t r0 = oh * s->sh, h0 = r0 - s->ph, fi = h0 < 0 ? -h0 : 0;
        for (int64_t ob = 0; ob < OW; ob += VL) {
            vf16 m = VLD(HM + r0 * OWr + ob);
            /* a window of -inf: its first in-bounds row's first column */
            vi16 mt = *(const vi16 *)(HJ + (r0 + fi) * OWr + ob) + (int32_t)(fi * kw);
            for (int64_t i = 1; i < kh; i++) {
                vf16 v = VLD(HM + (r0 + i) * OWr + ob);
                vi16 gt = (v > m) | (v != v);
                m = VBLEND(gt, v, m);
                if (tap) {
                    vi16 t = *(const vi16 *)(HJ + (r0 + i) * OWr + ob) + (int32_t)(i * kw);
                    mt = (t & gt) | (mt & ~gt);
                }
            }
            vstore_n(y + oh * OW + ob, m, OW - ob);
            if (tap) vstore_nb(tap + oh * OW + ob, mt, OW - ob);
        }
    }
}

static void max_fwd_task(void *ctx, int64_t p0, int64_t p1, int ith) {
    const pjob *J = ctx;
    const pshape *s = J->s;
    const ppad *g = J->g;
    const int64_t H = s->H, W = s->W, OH = s->OH, OW = s->OW, kk = s->kh * s->kw;
    const int sep = max_separable(s, !J->idx);
    float *P = nr_scratch(ith, max_scratch(s, g, sep));
    for (size_t k = 0; k < g->psz; k++) P[k] = -INFINITY;
    vi16 lane;
    for (int l = 0; l < VL; l++) lane[l] = l;
    for (int64_t pl = p0; pl < p1; pl++) {
        ppad_fill(s, g, J->x + pl * H * W, P);
        float *y = J->y + pl * OH * OW;
        int32_t *idx = J->idx ? J->idx + pl * OH * OW : NULL;
        uint8_t *tap = J->tap ? J->tap + pl * OH * OW : NULL;
        if (sep) {
            float *HM = P + g->psz;
            max_plane_sep(s, g, P, HM, (int32_t *)(HM + g->Hn * g->OWr), y, tap);
            continue;
        }
        for (int64_t oh = 0; oh < OH; oh++) {
            const float *row = P + oh * s->sh * g->rs;
            const int64_t h0 = oh * s->sh - s->ph, hs = h0 > 0 ? h0 : 0;
            if (tap) {
                /* the same max, tracking the window tap of the argmax */
                for (int64_t ob = 0; ob < OW; ob += VL) {
                    vi16 ow = lane + (int32_t)ob;
                    vi16 c0 = ow * (int32_t)s->sw - (int32_t)s->pw; /* window's first column */
                    vi16 j0 = (vi16)((c0 < 0) & -c0);              /* first in-bounds tap column */
                    vi16 mt = j0 + (int32_t)((hs - h0) * s->kw);   /* PyTorch: first element */
                    vf16 m = (vf16){0} - INFINITY;
                    for (int64_t t = 0; t < kk; t++) {
                        vf16 v = VLD(row + g->toff[t] + ob);
                        vi16 gt = (v > m) | (v != v);
                        m = VBLEND(gt, v, m);
                        mt = ((int32_t)t & gt) | (mt & ~gt);
                    }
                    vstore_n(y + oh * OW + ob, m, OW - ob);
                    vstore_nb(tap + oh * OW + ob, mt, OW - ob);
                }
                continue;
            }
            for (int64_t ob = 0; ob < OW; ob += VL) {
                vi16 ow = lane + (int32_t)ob;
                vi16 w0 = ow * (int32_t)s->sw - (int32_t)s->pw;
                w0 = (vi16)((w0 > 0) & w0);               /* max(ow*sw - pw, 0) */
                vi16 mi = w0 + (int32_t)(hs * W);         /* PyTorch: first element */
                vi16 base = ow * (int32_t)s->sw;
                vf16 m = (vf16){0} - INFINITY;
                for (int64_t t = 0; t < kk; t++) {
                    int64_t i = t / s->kw, j = t % s->kw;
                    vf16 v = VLD(row + g->toff[t] + ob);
                    vi16 gt = (v > m) | (v != v);
                    m = VBLEND(gt, v, m);
                    vi16 at = base + (int32_t)((h0 + i) * W - s->pw + j);
                    mi = (at & gt) | (mi & ~gt);
                }
                vstore_n(y + oh * OW + ob, m, OW - ob);
                if (idx) vstore_ni(idx + oh * OW + ob, mi, OW - ob);
            }
        }
    }
}

static void max_bwd_task(void *ctx, int64_t p0, int64_t p1, int ith) {
    const pjob *J = ctx;
    const pshape *s = J->s;
    const int64_t HW = s->H * s->W, OHW = s->OH * s->OW;
    if (J->tap) {
        int64_t off[256]; /* tap -> plane offset from the window's corner */
        for (int64_t t = 0; t < s->kh * s->kw; t++) off[t] = (t / s->kw) * s->W + t % s->kw;
        for (int64_t pl = p0; pl < p1; pl++) {
            float *restrict gx = J->gx + pl * HW;
            const float *restrict g = J->gy + pl * OHW;
            const uint8_t *restrict tap = J->tap + pl * OHW;
            for (int64_t oh = 0; oh < s->OH; oh++) {
                const int64_t corner = (oh * s->sh - s->ph) * s->W - s->pw;
                for (int64_t ow = 0; ow < s->OW; ow++) {
                    int64_t k = oh * s->OW + ow;
                    gx[corner + ow * s->sw + off[tap[k]]] += g[k];
                }
            }
        }
        return;
    }
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
    int taps = max_taps(&s);
    pjob J = {&s, NULL, NULL, nr_data(gout), NULL, nr_data(gin[0]), taps ? NULL : n->extra,
              NULL, NULL, taps ? n->extra : NULL};
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
    void *idx = NULL; /* int32 indices, or taps */
    const int taps = max_taps(&s);
    if (nr_grad_enabled() && nr_needs_grad(xc) && s.P > 0) {
        idx = malloc((size_t)(s.P * s.OH * s.OW) * (taps ? 1 : sizeof(int32_t)));
        if (!idx) {
            nr_tensor_release(xc);
            nr_tensor_release(y);
            return nr_seterror(NR_ENOMEM, "max_pool2d: out of memory");
        }
    }
    ppad g;
    if (!ppad_init(&s, &g)) {
        st = nr_seterror(NR_ENOMEM, "max_pool2d: out of memory");
    } else {
        st = prealloc_scratch(max_scratch(&s, &g, max_separable(&s, taps || !idx)), "max_pool2d");
        if (st == NR_OK) {
            pjob J = {&s, &g, nr_data(xc), NULL, nr_data(y), NULL, taps ? NULL : idx, NULL, NULL,
                      taps ? idx : NULL};
            nr_parallel_for(s.P, plane_grain(s.H * s.W), max_fwd_task, &J);
        }
        free(g.toff);
    }
    if (st != NR_OK) {
        free(idx);
        nr_tensor_release(xc);
        nr_tensor_release(y);
        return st;
    }
    nr_node *n = nr_record(y, "max_pool2d", max_bwd, 1, &xc);
    if (n) {
        store_params(n, &s);
        n->extra = idx;
        nr_forget_input(n, 0); /* backward needs the argmax only */
    } else {
        free(idx);
    }
    nr_tensor_release(xc);
    *out = y;
    return NR_OK;
}

/* ------------------------------------------------------------ avg pool */

/* The divisor of window (oh, ow) is rowf[oh] * colf[ow]: the window's rows
   and columns, counted inside the padded input (count_include_pad, where
   a window may still hang over the right edge in ceil mode) or inside the
   input.  colf has OWr entries (1 past OW). */
static float *avg_factors(const pshape *s, int64_t OWr) {
    float *f = malloc((size_t)(s->OH + OWr) * sizeof(float));
    if (!f) return NULL;
    for (int d = 0; d < 2; d++) {
        int64_t n = d ? s->OW : s->OH, in = d ? s->W : s->H;
        int64_t st = d ? s->sw : s->sh, pd = d ? s->pw : s->ph, k = d ? s->kw : s->kh;
        float *o = d ? f + s->OH : f;
        for (int64_t a = 0; a < n; a++) {
            int64_t a0 = a * st - pd, a1 = a0 + k;
            if (a1 > in + pd) a1 = in + pd;
            if (!s->cip) {
                if (a0 < 0) a0 = 0;
                if (a1 > in) a1 = in;
            }
            o[a] = (float)(a1 - a0);
        }
        if (d)
            for (int64_t a = n; a < OWr; a++) o[a] = 1.0f;
    }
    return f;
}

/* Window sums at unit column stride, separable: each padded row's kw-wide
   sums once into HS (Hn x OWr), then kh of those per output, so kh + kw - 2
   adds per output (and the rows' share) instead of kh * kw - 1.  y (OH x
   OW, row stride OW) = the sums divided by rowf[oh] * colf[ow] (rowf NULL:
   not divided); acc: y += instead. */
static void box_sum_sep(const pshape *s, const ppad *g, const float *restrict P,
                        float *restrict HS, const float *rowf, const float *colf,
                        float *restrict y, int acc) {
    const int64_t OH = s->OH, OW = s->OW, OWr = g->OWr, kw = s->kw, kh = s->kh;
    for (int64_t r = 0; r < g->Hn; r++) {
        const float *pr = P + r * g->rs;
        for (int64_t ob = 0; ob < OWr; ob += VL) {
            vf16 a = VLD(pr + ob);
            for (int64_t j = 1; j < kw; j++) a += VLD(pr + ob + j);
            VST(HS + r * OWr + ob, a);
        }
    }
    for (int64_t oh = 0; oh < OH; oh++) {
        const float *hr = HS + oh * s->sh * OWr;
        float *yr = y + oh * OW;
        for (int64_t ob = 0; ob < OW; ob += VL) {
            vf16 a = VLD(hr + ob);
            for (int64_t i = 1; i < kh; i++) a += VLD(hr + i * OWr + ob);
            if (rowf) a /= VLD(colf + ob) * rowf[oh];
            if (acc) a += vload_n(yr + ob, OW - ob);
            vstore_n(yr + ob, a, OW - ob);
        }
    }
}

static void avg_fwd_task(void *ctx, int64_t p0, int64_t p1, int ith) {
    const pjob *J = ctx;
    const pshape *s = J->s;
    const ppad *g = J->g;
    const int64_t H = s->H, W = s->W, OH = s->OH, OW = s->OW, kk = s->kh * s->kw;
    float *P = nr_scratch(ith, g->psz + (size_t)(g->Hn * g->OWr));
    memset(P, 0, g->psz * sizeof(float));
    for (int64_t pl = p0; pl < p1; pl++) {
        ppad_fill(s, g, J->x + pl * H * W, P);
        float *y = J->y + pl * OH * OW;
        if (s->sw == 1) {
            box_sum_sep(s, g, P, P + g->psz, J->rowf, J->colf, y, 0);
            continue;
        }
        for (int64_t oh = 0; oh < OH; oh++) {
            const float *row = P + oh * s->sh * g->rs;
            for (int64_t ob = 0; ob < OW; ob += VL) {
                vf16 acc = {0};
                for (int64_t t = 0; t < kk; t++) acc += VLD(row + g->toff[t] + ob);
                vf16 div = VLD(J->colf + ob) * J->rowf[oh];
                vstore_n(y + oh * OW + ob, acc / div, OW - ob);
            }
        }
    }
}

/* D (P's layout) += g / div spread over each window, then gx += D. */
static void avg_bwd_task(void *ctx, int64_t p0, int64_t p1, int ith) {
    const pjob *J = ctx;
    const pshape *s = J->s;
    const ppad *g = J->g;
    const int64_t H = s->H, W = s->W, OH = s->OH, OW = s->OW, OWr = g->OWr;
    const int64_t kk = s->kh * s->kw, rstep = s->sh * g->rs;
    float *D = nr_scratch(ith, g->psz + (size_t)(OH * OWr));
    float *G = D + g->psz; /* g / div, zero past OW */
    for (int64_t pl = p0; pl < p1; pl++) {
        const float *gy = J->gy + pl * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OWr; ow++)
                G[oh * OWr + ow] = ow < OW ? gy[oh * OW + ow] / (J->rowf[oh] * J->colf[ow]) : 0.0f;
        memset(D, 0, g->psz * sizeof(float));
        for (int64_t t = 0; t < kk; t++) /* one tap over the plane at a time */
            for (int64_t oh = 0; oh < OH; oh++) {
                float *dr = D + oh * rstep + g->toff[t];
                const float *gr = G + oh * OWr;
                for (int64_t ob = 0; ob < OWr; ob += VL) VST(dr + ob, VLD(dr + ob) + VLD(gr + ob));
            }
        ppad_unfill_add(s, g, D, J->gx + pl * H * W);
    }
}

/* Backward at stride 1 as a gather: dx is the box sum of g / div, zero-
   padded by k - 1 - p, i.e. the forward kernel run on the transposed
   problem t (input OH x OW, output H x W): every dx element is written once
   (no read-modify-write of a scatter), and written rather than added when
   the accumulator is fresh. */
typedef struct {
    const pshape *s, *t;
    const ppad *g;       /* t's padded geometry */
    const float *gy, *rowf, *colf;
    float *gx;
    int fresh;
} agjob;

/* the gather's per-thread buffer: the padded plane, then g / div (or the
   box sums' rows when the columns are unit-strided) */
static size_t avg_gather_scratch(const pshape *s, const ppad *g) {
    size_t n = (size_t)(s->OH * s->OW), m = (size_t)(g->Hn * g->OWr);
    return g->psz + (n > m ? n : m);
}

static void avg_bwd_gather_task(void *ctx, int64_t p0, int64_t p1, int ith) {
    const agjob *J = ctx;
    const pshape *s = J->s, *t = J->t;
    const ppad *g = J->g;
    const int64_t H = s->H, W = s->W, OH = s->OH, OW = s->OW, kk = s->kh * s->kw;
    float *P = nr_scratch(ith, avg_gather_scratch(s, g));
    float *G = P + g->psz;
    memset(P, 0, g->psz * sizeof(float));
    for (int64_t pl = p0; pl < p1; pl++) {
        const float *gy = J->gy + pl * OH * OW;
        float *gx = J->gx + pl * H * W;
        if (s->sw == 1) {
            /* g / div straight into the padded plane, then the box sums */
            for (int64_t oh = 0; oh < OH; oh++) {
                const float rf = J->rowf[oh];
                float *restrict pr = P + (oh + t->ph) * g->rs + t->pw;
                const float *restrict gr = gy + oh * OW;
                for (int64_t ob = 0; ob < OW; ob += VL)
                    vstore_n(pr + ob, vload_n(gr + ob, OW - ob) / (VLD(J->colf + ob) * rf),
                             OW - ob);
            }
            box_sum_sep(t, g, P, G, NULL, NULL, gx, !J->fresh);
            continue;
        }
        for (int64_t oh = 0; oh < OH; oh++) {
            const float rf = J->rowf[oh];
            for (int64_t ow = 0; ow < OW; ow++)
                G[oh * OW + ow] = gy[oh * OW + ow] / (rf * J->colf[ow]);
        }
        ppad_fill(t, g, G, P);
        for (int64_t ih = 0; ih < H; ih++) {
            const float *row = P + ih * g->rs;
            float *d = gx + ih * W;
            for (int64_t ob = 0; ob < W; ob += VL) {
                vf16 acc = {0};
                for (int64_t k = 0; k < kk; k++) acc += VLD(row + g->toff[k] + ob);
                if (J->fresh) {
                    vstore_n(d + ob, acc, W - ob);
                } else if (W - ob >= VL) {
                    VST(d + ob, VLD(d + ob) + acc);
                } else {
                    for (int64_t l = 0; l < W - ob; l++) d[ob + l] += acc[l];
                }
            }
        }
    }
}

static nr_status avg_bwd_gather(const pshape *s, const float *gy, float *gx, int fresh) {
    pshape t = *s;
    t.H = s->OH, t.W = s->OW, t.OH = s->H, t.OW = s->W;
    t.ph = s->kh - 1 - s->ph, t.pw = s->kw - 1 - s->pw;
    ppad g, go;
    if (!ppad_init(&t, &g)) return nr_seterror(NR_ENOMEM, "avg_pool2d: out of memory");
    if (!ppad_init(s, &go)) {
        free(g.toff);
        return nr_seterror(NR_ENOMEM, "avg_pool2d: out of memory");
    }
    float *f = avg_factors(s, go.OWr);
    nr_status st = f ? prealloc_scratch(avg_gather_scratch(s, &g), "avg_pool2d")
                     : nr_seterror(NR_ENOMEM, "avg_pool2d: out of memory");
    if (st == NR_OK) {
        agjob J = {s, &t, &g, gy, f, f + s->OH, gx, fresh};
        nr_parallel_for(s->P, plane_grain(s->H * s->W), avg_bwd_gather_task, &J);
    }
    free(f);
    free(g.toff);
    free(go.toff);
    return st;
}

static nr_status avg_run(const pshape *s, const float *x, const float *gy, float *y, float *gx) {
    ppad g;
    if (!ppad_init(s, &g)) return nr_seterror(NR_ENOMEM, "avg_pool2d: out of memory");
    float *f = avg_factors(s, g.OWr);
    size_t n = (size_t)(s->OH * g.OWr), m = (size_t)(g.Hn * g.OWr); /* bwd's G, fwd's HS */
    nr_status st = f ? prealloc_scratch(g.psz + (n > m ? n : m), "avg_pool2d")
                     : nr_seterror(NR_ENOMEM, "avg_pool2d: out of memory");
    if (st == NR_OK) {
        pjob J = {s, &g, x, gy, y, gx, NULL, f, f + s->OH, NULL};
        nr_parallel_for(s->P, plane_grain(s->H * s->W), x ? avg_fwd_task : avg_bwd_task, &J);
    }
    free(f);
    free(g.toff);
    return st;
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
    nr_status st;
    if (s.sh == 1 && s.sw == 1) {
        st = avg_bwd_gather(&s, nr_data(gout), nr_data(gin[0]), (int)(n->fresh & 1));
    } else {
        if (n->fresh & 1) memset(nr_data(gin[0]), 0, (size_t)nr_numel(gin[0]) * sizeof(float));
        st = avg_run(&s, NULL, nr_data(gout), NULL, nr_data(gin[0]));
    }
    nr_tensor_release(gc);
    return st;
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
    st = avg_run(&s, nr_data(xc), NULL, nr_data(y), NULL);
    if (st != NR_OK) {
        nr_tensor_release(xc);
        nr_tensor_release(y);
        return st;
    }
    nr_node *n = nr_record(y, "avg_pool2d", avg_bwd, 1, &xc);
    if (n) {
        store_params(n, &s);
        n->writes = 1;
        nr_forget_input(n, 0); /* backward needs the shape only */
    }
    nr_tensor_release(xc);
    *out = y;
    return NR_OK;
}

/* --------------------------------------------------- adaptive avg pool */

static inline int64_t bin_start(int64_t a, int64_t out, int64_t in) { return a * in / out; }
static inline int64_t bin_end(int64_t a, int64_t out, int64_t in) {
    return ((a + 1) * in + out - 1) / out;
}

/* sum of p[0..n): 16 partial sums, then in double */
static double sum_run(const float *p, int64_t n) {
    vf16 a = {0}, b = {0};
    int64_t k = 0;
    for (; k + 2 * VL <= n; k += 2 * VL) a += VLD(p + k), b += VLD(p + k + VL);
    for (; k + VL <= n; k += VL) a += VLD(p + k);
    if (k < n) {
        float tail[VL] = {0};
        for (int64_t l = 0; l < n - k; l++) tail[l] = p[k + l];
        b += VLD(tail);
    }
    a += b;
    double t = 0.0;
    for (int l = 0; l < VL; l++) t += a[l];
    return t;
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
                if (ws == 0 && we == W) /* whole rows: one run */
                    acc = sum_run(x + hs * W, (he - hs) * W);
                else
                    for (int64_t ih = hs; ih < he; ih++) acc += sum_run(x + ih * W + ws, we - ws);
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
    pjob J = {&s, NULL, NULL, nr_data(gout), NULL, nr_data(gin[0]), NULL, NULL, NULL, NULL};
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
    if (oh < 1 || ow < 1 || oh > NR_MAXPARAM || ow > NR_MAXPARAM)
        return nr_seterror(NR_EUSAGE, "adaptive_avg_pool2d: output size must be in 1..%d, got %lldx%lld",
                           NR_MAXPARAM, (long long)oh, (long long)ow);
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
    pjob J = {&s, NULL, nr_data(xc), NULL, nr_data(y), NULL, NULL, NULL, NULL, NULL};
    nr_parallel_for(s.P, plane_grain(s.H * s.W), ad_fwd_task, &J);
    nr_node *n = nr_record(y, "adaptive_avg_pool2d", ad_bwd, 1, &xc);
    if (n) {
        store_params(n, &s);
        nr_forget_input(n, 0);
    }
    nr_tensor_release(xc);
    *out = y;
    return NR_OK;
}
