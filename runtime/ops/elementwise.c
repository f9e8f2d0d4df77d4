/*
** elementwise.c -- binary ops with numpy broadcasting, scalar and unary
** ops, reductions, and the shape ops (views where possible).  All record a
** tape node when an input needs a gradient.
*/
#include "nasrt.h"
#include "vec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ helpers */

/* dst += src elementwise; same shape, any strides (dst may be a view). */
void nr_acc_into(nr_tensor *dst, const nr_tensor *src) { nr_walk2(dst, src, 1); }

/* A header viewing t's storage with the given shape/strides/offset. +1 */
static nr_tensor *view_of(const nr_tensor *t, int ndim, const int64_t *ne,
                          const int64_t *st, int64_t offset) {
    nr_tensor *v = nr_alias(t);
    if (!v) return NULL;
    v->ndim = ndim;
    memset(v->ne, 0, sizeof v->ne);
    memset(v->st, 0, sizeof v->st);
    for (int i = 0; i < ndim; i++) {
        v->ne[i] = ne[i];
        v->st[i] = st[i];
    }
    v->offset = offset;
    return v;
}

static void flat_add(nr_tensor *gin, const nr_tensor *g) {
    float *d = nr_data(gin);
    const float *s = nr_data(g);
    for (int64_t i = 0, n = nr_numel(gin); i < n; i++) d[i] += s[i];
}

/* ----------------------------------------------------------- broadcast */

typedef enum { B_ADD, B_SUB, B_MUL, B_DIV } binop;
static const char *binop_name[] = {"add", "sub", "mul", "div"};

typedef struct {
    int nd;
    int64_t ne[NR_MAXDIM];
    int64_t sa[NR_MAXDIM], sb[NR_MAXDIM], so[NR_MAXDIM];
} bshape;

/* Output shape of broadcasting a with b, plus element strides (0 along
   broadcast dims) of a, b and the contiguous output.  Adjacent dims that
   are contiguous for all three are merged so inner loops run long. */
static nr_status broadcast(bshape *bs, int64_t *outne, int *outnd,
                           const nr_tensor *a, const nr_tensor *b, const char *fn) {
    char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t sa[NR_MAXDIM], sb[NR_MAXDIM], ne[NR_MAXDIM];
    for (int i = 0; i < nd; i++) {
        int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
        int64_t na = ia >= 0 ? a->ne[ia] : 1, nb = ib >= 0 ? b->ne[ib] : 1;
        if (na != nb && na != 1 && nb != 1)
            return nr_seterror(NR_ESHAPE, "%s: shapes %s and %s cannot be broadcast (dim %d)",
                               fn, nr_shape_str(a, b1), nr_shape_str(b, b2), i + 1);
        ne[i] = na == 1 ? nb : na;
        sa[i] = (ia >= 0 && na != 1) ? a->st[ia] : 0;
        sb[i] = (ib >= 0 && nb != 1) ? b->st[ib] : 0;
    }
    *outnd = nd;
    for (int i = 0; i < nd; i++) outne[i] = ne[i];
    /* output strides, then merge */
    int64_t so[NR_MAXDIM], s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        so[i] = s;
        s *= ne[i];
    }
    int m = 0;
    for (int i = 0; i < nd; i++) {
        if (ne[i] == 1) continue;
        if (m > 0 && sa[m - 1] == sa[i] * ne[i] && sb[m - 1] == sb[i] * ne[i] &&
            bs->so[m - 1] == so[i] * ne[i]) {
            bs->ne[m - 1] *= ne[i];
            bs->sa[m - 1] = sa[i];
            bs->sb[m - 1] = sb[i];
            bs->so[m - 1] = so[i];
            continue;
        }
        bs->ne[m] = ne[i];
        bs->sa[m] = sa[i];
        bs->sb[m] = sb[i];
        bs->so[m] = so[i];
        m++;
    }
    if (m == 0) {
        bs->ne[0] = 1;
        bs->sa[0] = bs->sb[0] = bs->so[0] = 0;
        m = 1;
    }
    bs->nd = m;
    return NR_OK;
}

typedef struct {
    const bshape *bs;
    binop op;
    const float *a, *b;
    float *o;
    int64_t rows;
} bin_job;

/* row r of the merged shape (all dims but the last) -> offsets */
static inline void row_offsets(const bshape *bs, int64_t r, int64_t *oa, int64_t *ob, int64_t *oo) {
    int64_t a = 0, b = 0, o = 0;
    for (int i = bs->nd - 2; i >= 0; i--) {
        int64_t k = r % bs->ne[i];
        r /= bs->ne[i];
        a += k * bs->sa[i];
        b += k * bs->sb[i];
        o += k * bs->so[i];
    }
    *oa = a;
    *ob = b;
    *oo = o;
}

static void bin_task(void *ctx, int64_t r0, int64_t r1, int ith) {
    bin_job *j = ctx;
    const bshape *bs = j->bs;
    int last = bs->nd - 1;
    int64_t n = bs->ne[last], sa = bs->sa[last], sb = bs->sb[last];
    for (int64_t r = r0; r < r1; r++) {
        int64_t oa, ob, oo;
        row_offsets(bs, r, &oa, &ob, &oo);
        const float *restrict a = j->a + oa;
        const float *restrict b = j->b + ob;
        float *restrict o = j->o + oo;
        if (sa == 1 && sb == 1) {
            switch (j->op) {
            case B_ADD: for (int64_t i = 0; i < n; i++) o[i] = a[i] + b[i]; break;
            case B_SUB: for (int64_t i = 0; i < n; i++) o[i] = a[i] - b[i]; break;
            case B_MUL: for (int64_t i = 0; i < n; i++) o[i] = a[i] * b[i]; break;
            case B_DIV: for (int64_t i = 0; i < n; i++) o[i] = a[i] / b[i]; break;
            }
        } else if (sa == 1 && sb == 0) {
            float bv = b[0];
            switch (j->op) {
            case B_ADD: for (int64_t i = 0; i < n; i++) o[i] = a[i] + bv; break;
            case B_SUB: for (int64_t i = 0; i < n; i++) o[i] = a[i] - bv; break;
            case B_MUL: for (int64_t i = 0; i < n; i++) o[i] = a[i] * bv; break;
            case B_DIV: for (int64_t i = 0; i < n; i++) o[i] = a[i] / bv; break;
            }
        } else {
            for (int64_t i = 0; i < n; i++) {
                float x = a[i * sa], y = b[i * sb];
                o[i] = j->op == B_ADD ? x + y : j->op == B_SUB ? x - y
                     : j->op == B_MUL ? x * y : x / y;
            }
        }
    }
}

static nr_status bin_bwd(nr_node *n, const nr_tensor *g, nr_tensor *const *gin);

static nr_status binary(nr_tensor **out, const nr_tensor *a, const nr_tensor *b, binop op) {
    *out = NULL;
    bshape bs;
    int64_t ne[NR_MAXDIM];
    int nd;
    nr_status st = broadcast(&bs, ne, &nd, a, b, binop_name[op]);
    if (st != NR_OK) return st;
    nr_tensor *o = nr_tensor_empty(nd, ne);
    if (!o) return NR_ENOMEM;
    int64_t rows = 1;
    for (int i = 0; i < bs.nd - 1; i++) rows *= bs.ne[i];
    bin_job j = {&bs, op, nr_data(a), nr_data(b), nr_data(o), rows};
    int64_t inner = bs.ne[bs.nd - 1];
    nr_parallel_for(rows, inner >= 16384 ? 1 : 16384 / (inner + 1) + 1, bin_task, &j);
    nr_node *nd_ = nr_record(o, binop_name[op], bin_bwd, 2,
                             (nr_tensor *[]){(nr_tensor *)a, (nr_tensor *)b});
    if (nd_) {
        nd_->p.i[0] = op;
        if (op == B_ADD || op == B_SUB) { /* backward reads shapes only */
            /* an operand of the output's size gets +-g written, not added
               to a zero fill, on its first gradient */
            nd_->writes = (nr_numel(a) == nr_numel(o) ? 1u : 0u) | (nr_numel(b) == nr_numel(o) ? 2u : 0u);
            nr_forget_input(nd_, 0);
            nr_forget_input(nd_, 1);
        }
    }
    *out = o;
    return NR_OK;
}

nr_status nr_add(nr_tensor **o, const nr_tensor *a, const nr_tensor *b) { return binary(o, a, b, B_ADD); }
nr_status nr_sub(nr_tensor **o, const nr_tensor *a, const nr_tensor *b) { return binary(o, a, b, B_SUB); }
nr_status nr_mul(nr_tensor **o, const nr_tensor *a, const nr_tensor *b) { return binary(o, a, b, B_MUL); }
nr_status nr_div(nr_tensor **o, const nr_tensor *a, const nr_tensor *b) { return binary(o, a, b, B_DIV); }

/* Gradient for one operand (which = 0 for a, 1 for b): walks the output
   index space and adds each contribution at the operand's (broadcast)
   index of its contiguous gradient. */
typedef struct {
    const bshape *bs;    /* strides: sa -> a, sb -> b, so -> gout */
    bshape gs;           /* strides into gin (contiguous, broadcast) */
    binop op;
    int which;
    const float *a, *b, *g;
    float *gin;
} bwd_job;

static void bwd_task(void *ctx, int64_t r0, int64_t r1, int ith) {
    bwd_job *j = ctx;
    const bshape *bs = j->bs;
    int last = bs->nd - 1;
    int64_t n = bs->ne[last], sa = bs->sa[last], sb = bs->sb[last], sg = bs->so[last];
    int64_t sgin = j->gs.sa[last];
    for (int64_t r = r0; r < r1; r++) {
        int64_t oa, ob, og, ogin = 0, rr = r;
        row_offsets(bs, r, &oa, &ob, &og);
        for (int i = bs->nd - 2; i >= 0; i--) {
            ogin += (rr % bs->ne[i]) * j->gs.sa[i];
            rr /= bs->ne[i];
        }
        const float *a = j->a + oa, *b = j->b + ob, *g = j->g + og;
        float *gi = j->gin + ogin;
        for (int64_t i = 0; i < n; i++) {
            float gv = g[i * sg], c;
            switch (j->op) {
            case B_ADD: c = gv; break;
            case B_SUB: c = j->which ? -gv : gv; break;
            case B_MUL: c = j->which ? gv * a[i * sa] : gv * b[i * sb]; break;
            default: {
                float bv = b[i * sb];
                c = j->which ? -gv * a[i * sa] / (bv * bv) : gv / bv;
            }
            }
            gi[i * sgin] += c;
        }
    }
}

typedef struct {
    const float *g;
    float *gin;
    float sign;
    int fresh;
} addg_job;

static void addg_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    (void)ith;
    const addg_job *J = ctx;
    const float *restrict g = J->g;
    float *restrict d = J->gin;
    const float sg = J->sign;
    if (J->fresh)
        for (int64_t i = i0; i < i1; i++) d[i] = sg * g[i];
    else
        for (int64_t i = i0; i < i1; i++) d[i] += sg * g[i];
}

static nr_status bin_bwd(nr_node *n, const nr_tensor *g, nr_tensor *const *gin) {
    const nr_tensor *a = n->in[0], *b = n->in[1];
    binop op = (binop)n->p.i[0];
    bshape bs;
    int64_t ne[NR_MAXDIM];
    int nd;
    nr_status st = broadcast(&bs, ne, &nd, a, b, binop_name[op]);
    if (st != NR_OK) return st;
    for (int w = 0; w < 2; w++) {
        if (!gin[w]) continue;
        const nr_tensor *me = w ? b : a;
        int bcast = nr_numel(me) != nr_numel(g);
        if (!bcast && (op == B_ADD || op == B_SUB) && nr_is_contiguous(g)) {
            /* +-g, elementwise in the same layout */
            addg_job J = {nr_data(g), nr_data(gin[w]), op == B_SUB && w ? -1.0f : 1.0f,
                          (int)((n->fresh >> w) & 1)};
            nr_parallel_for(nr_numel(g), 16384, addg_task, &J);
            continue;
        }
        if ((n->fresh >> w) & 1) memset(nr_data(gin[w]), 0, (size_t)nr_numel(gin[w]) * sizeof(float));
        bshape use = bs, gmap = bs;
        /* gin[w] is contiguous: unbroadcast, it shares the output's layout */
        memcpy(gmap.sa, bs.so, sizeof bs.so);
        if (bcast) { /* unmerged walk with explicit strides */
            use.nd = nd;
            int64_t so = 1;
            for (int i = nd - 1; i >= 0; i--) {
                int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
                int im = i - (nd - me->ndim);
                use.ne[i] = ne[i];
                use.sa[i] = (ia >= 0 && a->ne[ia] != 1) ? a->st[ia] : 0;
                use.sb[i] = (ib >= 0 && b->ne[ib] != 1) ? b->st[ib] : 0;
                use.so[i] = so;
                gmap.sa[i] = (im >= 0 && me->ne[im] != 1) ? gin[w]->st[im] : 0;
                so *= ne[i];
            }
            gmap.nd = nd;
            if (nd == 0) {
                use.nd = gmap.nd = 1;
                use.ne[0] = 1;
                use.sa[0] = use.sb[0] = use.so[0] = gmap.sa[0] = 0;
            }
        }
        int64_t rows = 1;
        for (int i = 0; i < use.nd - 1; i++) rows *= use.ne[i];
        bwd_job j = {&use, gmap, op, w, a->storage ? nr_data(a) : NULL,
                     b->storage ? nr_data(b) : NULL, nr_data(g), nr_data(gin[w])};
        /* parallel only when this operand is not broadcast (no write races) */
        if (bcast) bwd_task(&j, 0, rows, 0);
        else nr_parallel_for(rows, 64, bwd_task, &j);
    }
    return NR_OK;
}

/* ------------------------------------------------------- scalar / unary */

typedef struct {
    int kind;        /* 0 affine, 1 rdiv, 2 pow, 3+ unary */
    float s, c;
    const float *x;
    float *y;
} un_job;

#define U_BASE 3

static void un_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    un_job *j = ctx;
    const float *restrict x = j->x;
    float *restrict y = j->y;
    float s = j->s, c = j->c;
    switch (j->kind) {
    case 0: for (int64_t i = i0; i < i1; i++) y[i] = x[i] * s + c; break;
    case 1: for (int64_t i = i0; i < i1; i++) y[i] = s / x[i]; break;
    case 2: for (int64_t i = i0; i < i1; i++) y[i] = powf(x[i], s); break;
    case U_BASE + NR_U_NEG: for (int64_t i = i0; i < i1; i++) y[i] = -x[i]; break;
    case U_BASE + NR_U_RELU: for (int64_t i = i0; i < i1; i++) y[i] = x[i] < 0 ? 0 : x[i]; break; /* NaN: NaN */
    case U_BASE + NR_U_SIGMOID: for (int64_t i = i0; i < i1; i++) y[i] = 1.0f / (1.0f + expf(-x[i])); break;
    case U_BASE + NR_U_TANH: for (int64_t i = i0; i < i1; i++) y[i] = tanhf(x[i]); break;
    case U_BASE + NR_U_EXP: for (int64_t i = i0; i < i1; i++) y[i] = expf(x[i]); break;
    case U_BASE + NR_U_LOG: for (int64_t i = i0; i < i1; i++) y[i] = logf(x[i]); break;
    case U_BASE + NR_U_SQRT: for (int64_t i = i0; i < i1; i++) y[i] = sqrtf(x[i]); break;
    case U_BASE + NR_U_ABS: for (int64_t i = i0; i < i1; i++) y[i] = fabsf(x[i]); break;
    case U_BASE + NR_U_RELU6:
        for (int64_t i = i0; i < i1; i++) y[i] = x[i] < 0 ? 0 : x[i] > 6 ? 6 : x[i];
        break;
    }
}

typedef struct {
    int kind;
    float s;
    const float *x, *y, *g;
    float *gx;
} unb_job;

static void unb_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    unb_job *j = ctx;
    const float *restrict x = j->x, *restrict y = j->y, *restrict g = j->g;
    float *restrict gx = j->gx;
    float s = j->s;
    switch (j->kind) {
    case 0: for (int64_t i = i0; i < i1; i++) gx[i] += g[i] * s; break;
    case 1: for (int64_t i = i0; i < i1; i++) gx[i] -= g[i] * y[i] / x[i]; break;
    case 2: for (int64_t i = i0; i < i1; i++) gx[i] += g[i] * s * powf(x[i], s - 1.0f); break;
    case U_BASE + NR_U_NEG: for (int64_t i = i0; i < i1; i++) gx[i] -= g[i]; break;
    case U_BASE + NR_U_RELU: for (int64_t i = i0; i < i1; i++) gx[i] += y[i] > 0 ? g[i] : 0; break;
    case U_BASE + NR_U_SIGMOID: for (int64_t i = i0; i < i1; i++) gx[i] += g[i] * y[i] * (1 - y[i]); break;
    case U_BASE + NR_U_TANH: for (int64_t i = i0; i < i1; i++) gx[i] += g[i] * (1 - y[i] * y[i]); break;
    case U_BASE + NR_U_EXP: for (int64_t i = i0; i < i1; i++) gx[i] += g[i] * y[i]; break;
    case U_BASE + NR_U_LOG: for (int64_t i = i0; i < i1; i++) gx[i] += g[i] / x[i]; break;
    case U_BASE + NR_U_SQRT: for (int64_t i = i0; i < i1; i++) gx[i] += g[i] * 0.5f / y[i]; break;
    case U_BASE + NR_U_ABS: for (int64_t i = i0; i < i1; i++) gx[i] += x[i] > 0 ? g[i] : x[i] < 0 ? -g[i] : 0; break;
    case U_BASE + NR_U_RELU6: for (int64_t i = i0; i < i1; i++) gx[i] += y[i] > 0 && y[i] < 6 ? g[i] : 0; break;
    }
}

static nr_status un_bwd(nr_node *n, const nr_tensor *g, nr_tensor *const *gin) {
    if (!gin[0]) return NR_OK;
    const nr_tensor *x = n->in[0];
    unb_job j = {(int)n->p.i[0], (float)n->p.f[1], x->storage ? nr_data(x) : NULL,
                 n->saved[0] ? nr_data(n->saved[0]) : NULL, nr_data(g), nr_data(gin[0])};
    nr_parallel_for(nr_numel(g), 32768, unb_task, &j);
    return NR_OK;
}

static const char *un_names[] = {"affine", "rdiv", "pow", "neg", "relu", "sigmoid",
                                 "tanh", "exp", "log", "sqrt", "abs", "relu6"};

static nr_status unary(nr_tensor **out, const nr_tensor *a, int kind, float s, float c) {
    *out = NULL;
    nr_tensor *x = nr_contig(a);
    if (!x) return NR_ENOMEM;
    nr_tensor *y = nr_tensor_empty(x->ndim, x->ne);
    if (!y) {
        nr_tensor_release(x);
        return NR_ENOMEM;
    }
    un_job j = {kind, s, c, nr_data(x), nr_data(y)};
    nr_parallel_for(nr_numel(y), 32768, un_task, &j);
    nr_node *n = nr_record(y, un_names[kind], un_bwd, 1, &x);
    if (n) {
        n->p.i[0] = kind;
        n->p.f[1] = kind == 0 ? s : s;
        int need_y = kind == 1 || kind >= U_BASE + NR_U_RELU;
        if (need_y && kind != U_BASE + NR_U_LOG && kind != U_BASE + NR_U_ABS) {
            nr_tensor *al = nr_alias(y);
            nr_save(n, 0, al);
            nr_tensor_release(al);
        }
        /* backward of these reads only the output (or nothing) */
        int y_only = kind == 0 || kind == U_BASE + NR_U_NEG || kind == U_BASE + NR_U_RELU ||
                     kind == U_BASE + NR_U_SIGMOID || kind == U_BASE + NR_U_TANH ||
                     kind == U_BASE + NR_U_EXP || kind == U_BASE + NR_U_SQRT ||
                     kind == U_BASE + NR_U_RELU6;
        if (y_only && (n->saved[0] || !need_y)) nr_forget_input(n, 0);
    }
    nr_tensor_release(x);
    *out = y;
    return NR_OK;
}

nr_status nr_affine_scalar(nr_tensor **o, const nr_tensor *a, float s, float c) { return unary(o, a, 0, s, c); }
nr_status nr_rdiv_scalar(nr_tensor **o, const nr_tensor *a, float s) { return unary(o, a, 1, s, 0); }
nr_status nr_pow_scalar(nr_tensor **o, const nr_tensor *a, float e) { return unary(o, a, 2, e, 0); }

nr_status nr_unary_op(nr_tensor **o, const nr_tensor *a, nr_unary op) {
    if ((int)op < 0 || op > NR_U_RELU6) return nr_seterror(NR_EUSAGE, "unary: bad op %d", (int)op);
    return unary(o, a, U_BASE + (int)op, 0, 0);
}

/* ---------------------------------------------------------- reductions */

/* View a as [outer, n, inner] around dim. */
static void split3(const nr_tensor *a, int dim, int64_t *outer, int64_t *n, int64_t *inner) {
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < dim; i++) *outer *= a->ne[i];
    for (int i = dim + 1; i < a->ndim; i++) *inner *= a->ne[i];
    *n = a->ne[dim];
}

typedef struct {
    const float *x;
    float *y;
    double *part;
    int64_t n, inner;
    float scale;
} red_job;

/* 64 fixed blocks, each summed in double: the result does not depend on
   the thread count or on which thread ran which block */
#define SUM_BLOCKS 64
static void sumall_task(void *ctx, int64_t b0, int64_t b1, int ith) {
    (void)ith;
    red_job *j = ctx;
    for (int64_t b = b0; b < b1; b++) {
        double s = 0;
        for (int64_t i = j->n * b / SUM_BLOCKS, e = j->n * (b + 1) / SUM_BLOCKS; i < e; i++)
            s += j->x[i];
        j->part[b] = s;
    }
}

/* The sum of a contiguous row: four vector accumulators (a single float
   accumulator is one serial chain of adds, and through y in memory, a
   store-to-load chain: the global average pooling of an attention module,
   [N,C,HW] summed over HW, ran at one add per five cycles). */
static float row_sum(const float *restrict x, int64_t n) {
    vf16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int64_t i = 0;
    for (; i + 4 * VL <= n; i += 4 * VL) {
        a0 += VLD(x + i);
        a1 += VLD(x + i + VL);
        a2 += VLD(x + i + 2 * VL);
        a3 += VLD(x + i + 3 * VL);
    }
    for (; i + VL <= n; i += VL) a0 += VLD(x + i);
    a0 += a1 + a2 + a3;
    float s = 0;
    for (; i < n; i++) s += x[i];
    for (int k = 0; k < VL; k++) s += a0[k];
    return s;
}

static void sumdim_task(void *ctx, int64_t o0, int64_t o1, int ith) {
    (void)ith;
    red_job *j = ctx;
    const int64_t n = j->n, inner = j->inner;
    for (int64_t o = o0; o < o1; o++) {
        const float *restrict x = j->x + o * n * inner;
        float *restrict y = j->y + o * inner;
        if (inner == 1) {
            y[0] = row_sum(x, n) * j->scale;
            continue;
        }
        for (int64_t i = 0; i < inner; i++) y[i] = 0;
        for (int64_t k = 0; k < n; k++)
            for (int64_t i = 0; i < inner; i++) y[i] += x[k * inner + i];
        for (int64_t i = 0; i < inner; i++) y[i] *= j->scale;
    }
}

typedef struct {
    float *gx;
    const float *g, *idx; /* idx: max's argmax, NULL for sum / mean */
    int64_t nn, inner;
    float scale;
} redb_job;

/* gx[o, k, i] += g[o, i] * scale (sum, mean), or gx[o, argmax, i] += g[o, i]
   (max), for the rows o of the task */
static void redb_task(void *ctx, int64_t o0, int64_t o1, int ith) {
    (void)ith;
    const redb_job *j = ctx;
    const int64_t nn = j->nn, inner = j->inner;
    for (int64_t o = o0; o < o1; o++) {
        float *restrict gx = j->gx + o * nn * inner;
        const float *restrict g = j->g + o * inner;
        if (j->idx) {
            for (int64_t i = 0; i < inner; i++) gx[(int64_t)j->idx[o * inner + i] * inner + i] += g[i];
        } else if (inner == 1) {
            const float v = g[0] * j->scale;
            for (int64_t k = 0; k < nn; k++) gx[k] += v;
        } else {
            for (int64_t k = 0; k < nn; k++)
                for (int64_t i = 0; i < inner; i++) gx[k * inner + i] += g[i] * j->scale;
        }
    }
}

/* rows of about 16K elements per chunk */
static int64_t red_grain(int64_t per_row) { return per_row >= 16384 ? 1 : 16384 / (per_row + 1) + 1; }

static nr_status red_bwd(nr_node *n, const nr_tensor *g, nr_tensor *const *gin) {
    if (!gin[0]) return NR_OK;
    int dim = (int)n->p.i[0];
    float scale = (float)n->p.f[1];
    float *gx = nr_data(gin[0]);
    const float *gd = nr_data(g);
    if (dim < 0) {
        float v = gd[0] * scale;
        for (int64_t i = 0, m = nr_numel(gin[0]); i < m; i++) gx[i] += v;
        return NR_OK;
    }
    int64_t outer, nn, inner;
    split3(gin[0], dim, &outer, &nn, &inner);
    redb_job j = {gx, gd, NULL, nn, inner, scale};
    nr_parallel_for(outer, red_grain(nn * inner), redb_task, &j);
    return NR_OK;
}

static nr_status reduce(nr_tensor **out, const nr_tensor *a, int dim, int keepdim, int mean) {
    *out = NULL;
    const char *fn = mean ? "mean" : "sum";
    if (dim >= a->ndim)
        return nr_seterror(NR_EUSAGE, "%s: dim %d out of range for %d dims", fn, dim + 1, a->ndim);
    nr_tensor *x = nr_contig(a);
    if (!x) return NR_ENOMEM;
    nr_tensor *y;
    float scale;
    if (dim < 0) {
        int64_t ne1[NR_MAXDIM];
        for (int i = 0; i < a->ndim; i++) ne1[i] = 1;
        y = nr_tensor_empty(keepdim ? a->ndim : 0, ne1);
        if (!y) goto oom;
        int64_t n = nr_numel(x);
        double part[SUM_BLOCKS] = {0};
        red_job j = {nr_data(x), NULL, part, n, 1, 1};
        /* at least 65536 elements per thread */
        nr_parallel_for(SUM_BLOCKS, n / 65536 >= SUM_BLOCKS ? 1 : SUM_BLOCKS * 65536 / (n + 1) + 1,
                        sumall_task, &j);
        double s = 0;
        for (int i = 0; i < SUM_BLOCKS; i++) s += part[i];
        scale = mean ? (n ? 1.0f / (float)n : NAN) : 1.0f;
        nr_data(y)[0] = (float)(s * (mean ? (n ? 1.0 / n : NAN) : 1.0));
    } else {
        int64_t outer, n, inner, ne[NR_MAXDIM];
        split3(x, dim, &outer, &n, &inner);
        int nd = 0;
        for (int i = 0; i < x->ndim; i++) {
            if (i == dim) {
                if (keepdim) ne[nd++] = 1;
            } else {
                ne[nd++] = x->ne[i];
            }
        }
        y = nr_tensor_empty(nd, ne);
        if (!y) goto oom;
        scale = mean ? (n ? 1.0f / (float)n : NAN) : 1.0f;
        red_job j = {nr_data(x), nr_data(y), NULL, n, inner, scale};
        nr_parallel_for(outer, red_grain(n * inner), sumdim_task, &j);
    }
    nr_node *nd_ = nr_record(y, fn, red_bwd, 1, &x);
    if (nd_) {
        nd_->p.i[0] = dim;
        nd_->p.f[1] = scale;
    }
    nr_tensor_release(x);
    *out = y;
    return NR_OK;
oom:
    nr_tensor_release(x);
    return NR_ENOMEM;
}

nr_status nr_sum(nr_tensor **o, const nr_tensor *a, int dim, int keepdim) { return reduce(o, a, dim, keepdim, 0); }
nr_status nr_mean(nr_tensor **o, const nr_tensor *a, int dim, int keepdim) { return reduce(o, a, dim, keepdim, 1); }

static nr_status max_bwd(nr_node *n, const nr_tensor *g, nr_tensor *const *gin) {
    if (!gin[0]) return NR_OK;
    int64_t outer, nn, inner;
    split3(gin[0], (int)n->p.i[0], &outer, &nn, &inner);
    redb_job j = {nr_data(gin[0]), nr_data(g), nr_data(n->saved[0]), nn, inner, 1.0f};
    nr_parallel_for(outer, red_grain(nn * inner), redb_task, &j);
    return NR_OK;
}

typedef struct {
    const float *x;
    float *y, *idx;
    int64_t n, inner;
} maxd_job;

/* the max over k of x[o, k, i] and its first index (a NaN wins over
   numbers, the first NaN stays) */
static void maxd_task(void *ctx, int64_t o0, int64_t o1, int ith) {
    (void)ith;
    const maxd_job *j = ctx;
    const int64_t n = j->n, inner = j->inner;
    for (int64_t o = o0; o < o1; o++)
        for (int64_t i = 0; i < inner; i++) {
            const float *restrict x = j->x + o * n * inner + i;
            float best = x[0];
            int64_t bk = 0;
            for (int64_t k = 1; k < n; k++) {
                float v = x[k * inner];
                if (v > best || (isnan(v) && !isnan(best))) {
                    best = v;
                    bk = k;
                }
            }
            j->y[o * inner + i] = best;
            j->idx[o * inner + i] = (float)bk;
        }
}

nr_status nr_max_dim(nr_tensor **out, nr_tensor **idxout, const nr_tensor *a, int dim, int keepdim) {
    *out = NULL;
    if (idxout) *idxout = NULL;
    if (dim < 0 || dim >= a->ndim)
        return nr_seterror(NR_EUSAGE, "max: dim %d out of range for %d dims", dim + 1, a->ndim);
    if (a->ne[dim] == 0)
        return nr_seterror(NR_ESHAPE, "max: dim %d is empty", dim + 1);
    nr_tensor *x = nr_contig(a);
    if (!x) return NR_ENOMEM;
    int64_t outer, n, inner, ne[NR_MAXDIM];
    split3(x, dim, &outer, &n, &inner);
    int nd = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (i == dim) {
            if (keepdim) ne[nd++] = 1;
        } else {
            ne[nd++] = x->ne[i];
        }
    }
    nr_tensor *y = nr_tensor_empty(nd, ne), *ix = nr_tensor_empty(nd, ne);
    if (!y || !ix) {
        nr_tensor_release(y);
        nr_tensor_release(ix);
        nr_tensor_release(x);
        return NR_ENOMEM;
    }
    maxd_job mj = {nr_data(x), nr_data(y), nr_data(ix), n, inner};
    nr_parallel_for(outer, red_grain(n * inner), maxd_task, &mj);
    nr_node *nd_ = nr_record(y, "max", max_bwd, 1, &x);
    if (nd_) {
        nd_->p.i[0] = dim;
        nr_save(nd_, 0, ix);
    }
    nr_tensor_release(x);
    *out = y;
    if (idxout) *idxout = ix;
    else nr_tensor_release(ix);
    return NR_OK;
}

/* ----------------------------------------------------------- shape ops */

static nr_status flat_bwd(nr_node *n, const nr_tensor *g, nr_tensor *const *gin) {
    if (gin[0]) flat_add(gin[0], g);
    return NR_OK;
}

static nr_status contig_bwd(nr_node *n, const nr_tensor *g, nr_tensor *const *gin) {
    if (gin[0]) flat_add(gin[0], g); /* gin is contiguous, same shape */
    return NR_OK;
}

nr_status nr_contiguous(nr_tensor **out, const nr_tensor *a) {
    *out = nr_tensor_clone(a);
    if (!*out) return NR_ENOMEM;
    nr_node *n = nr_record(*out, "contiguous", contig_bwd, 1, (nr_tensor *[]){(nr_tensor *)a});
    if (n) nr_forget_input(n, 0);
    return NR_OK;
}

nr_tensor *nr_contig(const nr_tensor *a) {
    if (nr_is_contiguous(a)) {
        nr_tensor_retain((nr_tensor *)a);
        return (nr_tensor *)a;
    }
    nr_tensor *o = NULL;
    nr_contiguous(&o, a);
    return o;
}

nr_status nr_reshape(nr_tensor **out, const nr_tensor *a, int ndim, const int64_t *ne_in) {
    char b1[NR_SHAPEBUF];
    *out = NULL;
    int64_t ne[NR_MAXDIM];
    if (ndim < 0 || ndim > NR_MAXDIM)
        return nr_seterror(NR_ESHAPE, "reshape: %d dims (at most %d)", ndim, NR_MAXDIM);
    int infer = -1;
    int64_t known = 1, n = nr_numel(a);
    for (int i = 0; i < ndim; i++) {
        ne[i] = ne_in[i];
        if (ne[i] == -1) {
            if (infer >= 0) return nr_seterror(NR_ESHAPE, "reshape: only one dim can be -1");
            infer = i;
        } else if (ne[i] < 0) {
            return nr_seterror(NR_ESHAPE, "reshape: negative size %lld", (long long)ne[i]);
        }
    }
    /* the sizes given (-1 counted as 1) must pass nr_check_shape before they
       are multiplied: a 0-element source would otherwise accept
       {0, 2^40, 2^40}, whose strides overflow */
    int64_t given[NR_MAXDIM];
    for (int i = 0; i < ndim; i++) given[i] = i == infer ? 1 : ne[i];
    nr_status cs = nr_check_shape("reshape", ndim, given);
    if (cs != NR_OK) return cs;
    for (int i = 0; i < ndim; i++)
        if (i != infer) known *= ne[i];
    if (infer >= 0) {
        if (known == 0 || n % known)
            return nr_seterror(NR_ESHAPE, "reshape: cannot infer -1 for %s into %lld-element groups",
                               nr_shape_str(a, b1), (long long)known);
        ne[infer] = n / known;
        known *= ne[infer];
    }
    if (known != n)
        return nr_seterror(NR_ESHAPE, "reshape: shape %s (%lld elements) cannot become %lld elements",
                           nr_shape_str(a, b1), (long long)n, (long long)known);
    nr_tensor *x = nr_contig(a);
    if (!x) return NR_ENOMEM;
    int64_t st[NR_MAXDIM], s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        st[i] = s;
        s *= ne[i];
    }
    nr_tensor *v = view_of(x, ndim, ne, st, x->offset);
    if (!v) {
        nr_tensor_release(x);
        return NR_ENOMEM;
    }
    nr_node *nd = nr_record(v, "reshape", flat_bwd, 1, &x);
    if (nd) nr_forget_input(nd, 0); /* views: backward needs shapes only */
    nr_tensor_release(x);
    *out = v;
    return NR_OK;
}

static nr_status narrow_bwd(nr_node *n, const nr_tensor *g, nr_tensor *const *gin) {
    if (!gin[0]) return NR_OK;
    int dim = (int)n->p.i[0];
    nr_tensor *v = view_of(gin[0], gin[0]->ndim, gin[0]->ne, gin[0]->st,
                           gin[0]->offset + n->p.i[1] * gin[0]->st[dim]);
    if (!v) return NR_ENOMEM;
    v->ne[dim] = n->p.i[2];
    nr_acc_into(v, g);
    nr_tensor_release(v);
    return NR_OK;
}

nr_status nr_narrow(nr_tensor **out, const nr_tensor *a, int dim, int64_t start, int64_t len) {
    char b1[NR_SHAPEBUF];
    *out = NULL;
    if (dim < 0 || dim >= a->ndim)
        return nr_seterror(NR_EUSAGE, "narrow: dim %d out of range for %s", dim + 1, nr_shape_str(a, b1));
    if (start < 0 || len < 0 || start > a->ne[dim] || len > a->ne[dim] - start)
        return nr_seterror(NR_ESHAPE,
                           "narrow: start %lld (1-based) and length %lld do not fit dim %d of %s",
                           (long long)start + 1, (long long)len, dim + 1, nr_shape_str(a, b1));
    nr_tensor *v = view_of(a, a->ndim, a->ne, a->st, a->offset + start * a->st[dim]);
    if (!v) return NR_ENOMEM;
    v->ne[dim] = len;
    nr_node *n = nr_record(v, "narrow", narrow_bwd, 1, (nr_tensor *[]){(nr_tensor *)a});
    if (n) {
        n->p.i[0] = dim;
        n->p.i[1] = start;
        n->p.i[2] = len;
        nr_forget_input(n, 0);
    }
    *out = v;
    return NR_OK;
}

static nr_status transpose_bwd(nr_node *n, const nr_tensor *g, nr_tensor *const *gin) {
    if (!gin[0]) return NR_OK;
    int d0 = (int)n->p.i[0], d1 = (int)n->p.i[1];
    nr_tensor *v = view_of(gin[0], gin[0]->ndim, gin[0]->ne, gin[0]->st, gin[0]->offset);
    if (!v) return NR_ENOMEM;
    int64_t t = v->ne[d0];
    v->ne[d0] = v->ne[d1];
    v->ne[d1] = t;
    t = v->st[d0];
    v->st[d0] = v->st[d1];
    v->st[d1] = t;
    nr_acc_into(v, g);
    nr_tensor_release(v);
    return NR_OK;
}

nr_status nr_transpose(nr_tensor **out, const nr_tensor *a, int d0, int d1) {
    char b1[NR_SHAPEBUF];
    *out = NULL;
    if (d0 < 0 || d0 >= a->ndim || d1 < 0 || d1 >= a->ndim)
        return nr_seterror(NR_EUSAGE, "transpose: dims %d,%d out of range for %s", d0 + 1, d1 + 1,
                           nr_shape_str(a, b1));
    nr_tensor *v = view_of(a, a->ndim, a->ne, a->st, a->offset);
    if (!v) return NR_ENOMEM;
    int64_t t = v->ne[d0];
    v->ne[d0] = v->ne[d1];
    v->ne[d1] = t;
    t = v->st[d0];
    v->st[d0] = v->st[d1];
    v->st[d1] = t;
    nr_node *n = nr_record(v, "transpose", transpose_bwd, 1, (nr_tensor *[]){(nr_tensor *)a});
    if (n) {
        n->p.i[0] = d0;
        n->p.i[1] = d1;
        nr_forget_input(n, 0);
    }
    *out = v;
    return NR_OK;
}

/* cat: node inputs are limited to NR_MAXIN, so cat of many tensors is built
   as a chain of nodes, each concatenating up to NR_MAXIN pieces; the slice
   offsets live in p.i. */
static nr_status cat_bwd(nr_node *n, const nr_tensor *g, nr_tensor *const *gin) {
    int dim = (int)n->p.i[0];
    int64_t off = 0;
    for (int k = 0; k < n->n_in; k++) {
        int64_t len = n->in[k]->ne[dim];
        if (gin[k]) {
            nr_tensor *v = view_of(g, g->ndim, g->ne, g->st, g->offset + off * g->st[dim]);
            if (!v) return NR_ENOMEM;
            v->ne[dim] = len;
            nr_walk2(gin[k], v, !((n->fresh >> k) & 1)); /* fresh: written, not zeroed and added */
            nr_tensor_release(v);
        }
        off += len;
    }
    return NR_OK;
}

static nr_status cat_small(nr_tensor **out, int n, nr_tensor *const *xs, int dim) {
    int64_t ne[NR_MAXDIM];
    const nr_tensor *x0 = xs[0];
    for (int i = 0; i < x0->ndim; i++) ne[i] = x0->ne[i];
    ne[dim] = 0;
    for (int k = 0; k < n; k++) ne[dim] += xs[k]->ne[dim];
    nr_tensor *o = nr_tensor_empty(x0->ndim, ne);
    if (!o) return NR_ENOMEM;
    int64_t off = 0;
    for (int k = 0; k < n; k++) {
        nr_tensor *v = view_of(o, o->ndim, o->ne, o->st, off * o->st[dim]);
        if (!v) {
            nr_tensor_release(o);
            return NR_ENOMEM;
        }
        v->ne[dim] = xs[k]->ne[dim];
        nr_copy_into(v, xs[k]);
        nr_tensor_release(v);
        off += xs[k]->ne[dim];
    }
    nr_node *nd = nr_record(o, "cat", cat_bwd, n, xs);
    if (nd) {
        nd->p.i[0] = dim;
        nd->writes = (1u << n) - 1;
        for (int k = 0; k < n; k++) nr_forget_input(nd, k); /* shapes only */
    }
    *out = o;
    return NR_OK;
}

nr_status nr_cat(nr_tensor **out, int n, nr_tensor *const *xs, int dim) {
    char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
    *out = NULL;
    if (n < 1) return nr_seterror(NR_EUSAGE, "cat: needs at least one tensor");
    const nr_tensor *x0 = xs[0];
    if (dim < 0 || dim >= x0->ndim)
        return nr_seterror(NR_EUSAGE, "cat: dim %d out of range for %s", dim + 1, nr_shape_str(x0, b1));
    for (int k = 1; k < n; k++) {
        const nr_tensor *x = xs[k];
        int ok = x->ndim == x0->ndim;
        for (int i = 0; ok && i < x0->ndim; i++) ok = i == dim || x->ne[i] == x0->ne[i];
        if (!ok)
            return nr_seterror(NR_ESHAPE, "cat: tensor %d has shape %s, tensor 1 has %s (dim %d)",
                               k + 1, nr_shape_str(x, b1), nr_shape_str(x0, b2), dim + 1);
    }
    if (n <= NR_MAXIN) return cat_small(out, n, xs, dim);
    /* groups of NR_MAXIN, then cat of the groups (recursively) */
    int ng = (n + NR_MAXIN - 1) / NR_MAXIN;
    nr_tensor **parts = calloc((size_t)ng, sizeof *parts);
    if (!parts) return nr_seterror(NR_ENOMEM, "cat: out of memory");
    nr_status st = NR_OK;
    for (int g = 0; g < ng && st == NR_OK; g++) {
        int k0 = g * NR_MAXIN, kn = n - k0 < NR_MAXIN ? n - k0 : NR_MAXIN;
        st = cat_small(&parts[g], kn, xs + k0, dim);
    }
    if (st == NR_OK) st = nr_cat(out, ng, parts, dim);
    for (int g = 0; g < ng; g++) nr_tensor_release(parts[g]);
    free(parts);
    return st;
}

/* pad: out = constant, then the input copied into the interior view. */
static nr_status pad_bwd(nr_node *n, const nr_tensor *g, nr_tensor *const *gin) {
    if (!gin[0]) return NR_OK;
    int64_t off = g->offset;
    nr_tensor *v = view_of(g, g->ndim, gin[0]->ne, g->st, 0);
    if (!v) return NR_ENOMEM;
    for (int i = 0; i < g->ndim; i++) off += n->p.i[i] * g->st[i];
    v->offset = off;
    nr_acc_into(gin[0], v);
    nr_tensor_release(v);
    return NR_OK;
}

nr_status nr_pad(nr_tensor **out, const nr_tensor *a, int npad, const int64_t *pads, float value) {
    char b1[NR_SHAPEBUF];
    *out = NULL;
    if (npad % 2 || npad / 2 > a->ndim)
        return nr_seterror(NR_EUSAGE, "pad: %d pad values for %s (need an even count, at most 2 per dim)",
                           npad, nr_shape_str(a, b1));
    int64_t ne[NR_MAXDIM], lo[NR_MAXDIM] = {0};
    for (int i = 0; i < a->ndim; i++) ne[i] = a->ne[i];
    for (int k = 0; k < npad / 2; k++) {
        int d = a->ndim - 1 - k;
        if (pads[2 * k] < 0 || pads[2 * k + 1] < 0)
            return nr_seterror(NR_EUSAGE, "pad: negative padding is not supported");
        if (pads[2 * k] > NR_MAXPARAM || pads[2 * k + 1] > NR_MAXPARAM)
            return nr_seterror(NR_EUSAGE, "pad: padding %lld exceeds %d", (long long)(pads[2 * k] > pads[2 * k + 1] ? pads[2 * k] : pads[2 * k + 1]), NR_MAXPARAM);
        lo[d] = pads[2 * k];
        ne[d] += pads[2 * k] + pads[2 * k + 1];
    }
    if (nr_check_shape("pad", a->ndim, ne) != NR_OK) return NR_ESHAPE;
    nr_tensor *o = nr_tensor_full(a->ndim, ne, value);
    if (!o) return NR_ENOMEM;
    int64_t off = 0;
    for (int i = 0; i < a->ndim; i++) off += lo[i] * o->st[i];
    nr_tensor *v = view_of(o, a->ndim, a->ne, o->st, off);
    if (!v) {
        nr_tensor_release(o);
        return NR_ENOMEM;
    }
    nr_copy_into(v, a);
    nr_tensor_release(v);
    nr_node *n = nr_record(o, "pad", pad_bwd, 1, (nr_tensor *[]){(nr_tensor *)a});
    if (n) {
        for (int i = 0; i < a->ndim; i++) n->p.i[i] = lo[i];
        nr_forget_input(n, 0);
    }
    *out = o;
    return NR_OK;
}

static nr_status subsample_bwd(nr_node *n, const nr_tensor *g, nr_tensor *const *gin) {
    if (!gin[0]) return NR_OK;
    int nd = gin[0]->ndim;
    int64_t s = n->p.i[0];
    nr_tensor *v = view_of(gin[0], nd, g->ne, gin[0]->st,
                           n->p.i[1] * gin[0]->st[nd - 2] + n->p.i[2] * gin[0]->st[nd - 1]);
    if (!v) return NR_ENOMEM;
    v->st[nd - 2] *= s;
    v->st[nd - 1] *= s;
    nr_acc_into(v, g);
    nr_tensor_release(v);
    return NR_OK;
}

nr_status nr_subsample(nr_tensor **out, const nr_tensor *a, int64_t s, int64_t oh, int64_t ow) {
    char b1[NR_SHAPEBUF];
    *out = NULL;
    int nd = a->ndim;
    if (nd < 2) return nr_seterror(NR_ESHAPE, "subsample: needs at least 2 dims, got %s", nr_shape_str(a, b1));
    if (s < 1 || oh < 0 || ow < 0 || oh >= s || ow >= s)
        return nr_seterror(NR_EUSAGE, "subsample: stride %lld and offsets %lld,%lld (need 0 <= off < stride)",
                           (long long)s, (long long)oh, (long long)ow);
    int64_t h = a->ne[nd - 2], w = a->ne[nd - 1];
    int64_t ho = h > oh ? (h - oh + s - 1) / s : 0, wo = w > ow ? (w - ow + s - 1) / s : 0;
    /* an offset past the extent gives an empty view (placed at the start) */
    int64_t off = ho && wo ? oh * a->st[nd - 2] + ow * a->st[nd - 1] : 0;
    nr_tensor *v = view_of(a, nd, a->ne, a->st, a->offset + off);
    if (!v) return NR_ENOMEM;
    v->ne[nd - 2] = ho;
    v->ne[nd - 1] = wo;
    v->st[nd - 2] *= s;
    v->st[nd - 1] *= s;
    nr_node *n = nr_record(v, "subsample", subsample_bwd, 1, (nr_tensor *[]){(nr_tensor *)a});
    if (n) {
        n->p.i[0] = s;
        n->p.i[1] = oh;
        n->p.i[2] = ow;
        nr_forget_input(n, 0);
    }
    *out = v;
    return NR_OK;
}
