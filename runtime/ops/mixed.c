/*
** mixed.c -- the mixed-op sums of differentiable NAS, fused: DARTS's
** sum_k softmax(alpha)_k * o_k(x) (nr_weighted_sum) and AGNAS's per-sample,
** per-channel attention sum (nr_attn_sum).  One pass over the outputs, no
** scaled copies; backward gives each op output its scaled gradient and the
** weights their dot products.
*/
#include "nasrt.h"
#include "vec.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int n;
    const float *const *x;
    const float *w;   /* weighted_sum: n weights; attn_sum: [N, n*C] */
    float *o;
    int64_t inner, C, plane; /* attn: plane = H*W, C channels */
} mix_job;

#define WS_BLK 4096 /* elements per block: the inputs' slices stay in L1/L2 */

/* o = sum_k w[k] * x[k], block by block: the first nonzero weight writes,
   the others add while the block is still in cache. */
static void wsum_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    mix_job *j = ctx;
    float *restrict o = j->o;
    for (int64_t b0 = i0; b0 < i1; b0 += WS_BLK) {
        int64_t b1 = b0 + WS_BLK < i1 ? b0 + WS_BLK : i1;
        int first = 1;
        for (int k = 0; k < j->n; k++) {
            const float *restrict x = j->x[k];
            float wk = j->w[k];
            if (wk == 0.0f) continue; /* exact zeros add nothing (one-hot arch) */
            if (first)
                for (int64_t i = b0; i < b1; i++) o[i] = wk * x[i];
            else
                for (int64_t i = b0; i < b1; i++) o[i] += wk * x[i];
            first = 0;
        }
        if (first) memset(o + b0, 0, (size_t)(b1 - b0) * sizeof(float));
    }
}

static nr_status check_inputs(const char *fn, int n, nr_tensor *const *xs) {
    char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
    if (n < 1 || n > NR_MAXIN - 1)
        return nr_seterror(NR_EUSAGE, "%s: %d inputs (1..%d)", fn, n, NR_MAXIN - 1);
    for (int k = 0; k < n; k++) {
        if (!xs[k]) return nr_seterror(NR_EUSAGE, "%s: input %d is missing", fn, k + 1);
        if (!nr_same_shape(xs[k], xs[0]))
            return nr_seterror(NR_ESHAPE, "%s: input %d has shape %s, input 1 has %s", fn, k + 1,
                               nr_shape_str(xs[k], b1), nr_shape_str(xs[0], b2));
    }
    return NR_OK;
}

/* contiguous copies of the inputs (retained) */
static int contig_all(int n, nr_tensor *const *xs, nr_tensor **cx) {
    for (int k = 0; k < n; k++) {
        cx[k] = nr_contig(xs[k]);
        if (!cx[k]) {
            for (int i = 0; i < k; i++) nr_tensor_release(cx[i]);
            return 0;
        }
    }
    return 1;
}

typedef struct {
    int n;
    const float *const *x;
    const float *w, *g;
    float *const *gx;
    double *gw;      /* [nblk][n] partial dots, one row per block of WS_BLK */
    int64_t numel;
    unsigned fresh;  /* gx[k] uninitialised: write, not add */
} wsb_job;

/* x.g over n floats: two vector accumulators (two independent chains), a
   16-wide step for a remaining half, the last n % 16 products and the 16
   lanes (in lane order) added in double.  A function of n and the data
   only. */
static double dot32(const float *restrict x, const float *restrict g, int64_t n) {
    vf16 a = {0}, b = {0};
    int64_t i = 0;
    for (; i + 2 * VL <= n; i += 2 * VL) {
        a += VLD(x + i) * VLD(g + i);
        b += VLD(x + i + VL) * VLD(g + i + VL);
    }
    if (i + VL <= n) {
        a += VLD(x + i) * VLD(g + i);
        i += VL;
    }
    a += b;
    double s = 0;
    for (; i < n; i++) s += (double)x[i] * g[i];
    for (int q = 0; q < VL; q++) s += a[q];
    return s;
}

/* Over blocks of WS_BLK elements: gx[k] (+)= w[k] * g, and each block's
   dots x[k].g in its own row of gw, summed in block order afterwards, so
   the weights' gradient does not depend on the number of threads. */
static void wsum_bwd_task(void *ctx, int64_t blk0, int64_t blk1, int ith) {
    wsb_job *j = ctx;
    const float *restrict g = j->g;
    for (int64_t blk = blk0; blk < blk1; blk++) {
        int64_t b0 = blk * WS_BLK, b1 = b0 + WS_BLK < j->numel ? b0 + WS_BLK : j->numel;
        for (int k = 0; k < j->n; k++) {
            if (j->gx[k]) {
                float *restrict gx = j->gx[k];
                float wk = j->w[k];
                if ((j->fresh >> k) & 1)
                    for (int64_t i = b0; i < b1; i++) gx[i] = wk * g[i];
                else
                    for (int64_t i = b0; i < b1; i++) gx[i] += wk * g[i];
            }
            if (j->gw) j->gw[blk * j->n + k] = dot32(j->x[k] + b0, g + b0, b1 - b0);
        }
    }
}

static nr_status wsum_bwd(nr_node *nd, const nr_tensor *g, nr_tensor *const *gin) {
    int n = nd->n_in - 1;
    const float *x[NR_MAXIN];
    float *gx[NR_MAXIN];
    for (int k = 0; k < n; k++) {
        x[k] = nd->in[k]->storage ? nr_data(nd->in[k]) : NULL;
        gx[k] = gin[k] ? nr_data(gin[k]) : NULL;
    }
    nr_tensor *wt = nr_contig(nd->in[n]);
    if (!wt) return NR_ENOMEM;
    int64_t numel = nr_numel(g), nblk = (numel + WS_BLK - 1) / WS_BLK;
    double *gw = gin[n] ? calloc((size_t)(nblk * n) + 1, sizeof(double)) : NULL;
    if (gin[n] && !gw) {
        nr_tensor_release(wt);
        return nr_seterror(NR_ENOMEM, "weighted_sum backward: out of memory");
    }
    wsb_job j = {n, x, nr_data(wt), nr_data(g), gx, gw, numel, nd->fresh};
    nr_parallel_for(nblk, 4, wsum_bwd_task, &j);
    if (gw) {
        float *gwd = nr_data(gin[n]);
        for (int k = 0; k < n; k++) {
            double s = 0;
            for (int64_t b = 0; b < nblk; b++) s += gw[b * n + k];
            gwd[k] += (float)s;
        }
        free(gw);
    }
    nr_tensor_release(wt);
    return NR_OK;
}

nr_status nr_weighted_sum(nr_tensor **out, int n, nr_tensor *const *xs, const nr_tensor *w) {
    char b1[NR_SHAPEBUF];
    *out = NULL;
    nr_status st = check_inputs("weighted_sum", n, xs);
    if (st != NR_OK) return st;
    if (w->ndim != 1 || w->ne[0] != n)
        return nr_seterror(NR_ESHAPE, "weighted_sum: weights %s, expected [%d] for %d inputs",
                           nr_shape_str(w, b1), n, n);
    /* inputs are contiguous in every supernet; nodes keep the originals */
    nr_tensor *cx[NR_MAXIN];
    if (!contig_all(n, xs, cx)) return NR_ENOMEM;
    nr_tensor *wt = nr_contig(w);
    nr_tensor *o = wt ? nr_tensor_empty(xs[0]->ndim, xs[0]->ne) : NULL;
    if (o) {
        const float *x[NR_MAXIN];
        for (int k = 0; k < n; k++) x[k] = nr_data(cx[k]);
        mix_job j = {n, x, nr_data(wt), nr_data(o), 0, 0, 0};
        nr_parallel_for(nr_numel(o), 16384, wsum_task, &j);
        nr_tensor *ins[NR_MAXIN];
        for (int k = 0; k < n; k++) ins[k] = cx[k];
        ins[n] = (nr_tensor *)w;
        nr_node *nd = nr_record(o, "weighted_sum", wsum_bwd, n + 1, ins);
        if (nd) {
            nd->writes = (1u << n) - 1; /* the inputs' gradients, not the weights' */
            if (!nr_needs_grad(w)) /* fixed weights: backward reads no input */
                for (int k = 0; k < n; k++) nr_forget_input(nd, k);
        }
    }
    for (int k = 0; k < n; k++) nr_tensor_release(cx[k]);
    nr_tensor_release(wt);
    if (!o) return NR_ENOMEM;
    *out = o;
    return NR_OK;
}

/* ------------------------------------------------------------ attn_sum */

static void attn_task(void *ctx, int64_t r0, int64_t r1, int ith) {
    mix_job *j = ctx;  /* rows = (b, c) planes */
    int64_t C = j->C, P = j->plane;
    for (int64_t r = r0; r < r1; r++) {
        int64_t b = r / C, c = r % C;
        float *restrict o = j->o + r * P;
        for (int64_t i = 0; i < P; i++) o[i] = 0;
        for (int k = 0; k < j->n; k++) {
            float a = j->w[b * j->n * C + k * C + c];
            const float *restrict x = j->x[k] + r * P;
            for (int64_t i = 0; i < P; i++) o[i] += a * x[i];
        }
    }
}

typedef struct {
    int n;
    int64_t C, P;
    const float *const *x;
    const float *a, *g;
    float *const *gx;
    float *ga;
    unsigned fresh; /* bit k: gx[k] is new, write it */
} attnb_job;

static void attn_bwd_task(void *ctx, int64_t r0, int64_t r1, int ith) {
    attnb_job *j = ctx;
    int64_t C = j->C, P = j->P;
    for (int64_t r = r0; r < r1; r++) {
        int64_t b = r / C, c = r % C;
        const float *restrict g = j->g + r * P;
        for (int k = 0; k < j->n; k++) {
            int64_t ai = b * j->n * C + k * C + c;
            if (j->gx[k]) {
                float a = j->a[ai];
                float *restrict gx = j->gx[k] + r * P;
                if ((j->fresh >> k) & 1)
                    for (int64_t i = 0; i < P; i++) gx[i] = a * g[i];
                else
                    for (int64_t i = 0; i < P; i++) gx[i] += a * g[i];
            }
            if (j->ga) /* each (b, k, c) is owned by one row */
                j->ga[ai] += (float)dot32(j->x[k] + r * P, g, P);
        }
    }
}

static nr_status attn_bwd(nr_node *nd, const nr_tensor *g, nr_tensor *const *gin) {
    int n = nd->n_in - 1;
    const float *x[NR_MAXIN];
    float *gx[NR_MAXIN];
    for (int k = 0; k < n; k++) {
        x[k] = nr_data(nd->in[k]);
        gx[k] = gin[k] ? nr_data(gin[k]) : NULL;
    }
    nr_tensor *at = nr_contig(nd->in[n]);
    if (!at) return NR_ENOMEM;
    int64_t C = g->ne[1], P = nr_numel(g) / (g->ne[0] * C);
    attnb_job j = {n, C, P, x, nr_data(at), nr_data(g), gx, gin[n] ? nr_data(gin[n]) : NULL,
                   nd->fresh};
    nr_parallel_for(g->ne[0] * C, 4, attn_bwd_task, &j);
    nr_tensor_release(at);
    return NR_OK;
}

nr_status nr_attn_sum(nr_tensor **out, int n, nr_tensor *const *xs, const nr_tensor *a) {
    char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
    *out = NULL;
    nr_status st = check_inputs("attn_sum", n, xs);
    if (st != NR_OK) return st;
    const nr_tensor *x0 = xs[0];
    if (x0->ndim < 2)
        return nr_seterror(NR_ESHAPE, "attn_sum: inputs %s need a batch and a channel dim",
                           nr_shape_str(x0, b1));
    int64_t N = x0->ne[0], C = x0->ne[1];
    if (a->ndim != 2 || a->ne[0] != N || a->ne[1] != n * C)
        return nr_seterror(NR_ESHAPE, "attn_sum: attention %s, expected [%lld,%lld] for %d inputs %s",
                           nr_shape_str(a, b1), (long long)N, (long long)(n * C), n,
                           nr_shape_str(x0, b2));
    nr_tensor *cx[NR_MAXIN];
    if (!contig_all(n, xs, cx)) return NR_ENOMEM;
    nr_tensor *at = nr_contig(a);
    nr_tensor *o = at ? nr_tensor_empty(x0->ndim, x0->ne) : NULL;
    if (o) {
        const float *x[NR_MAXIN];
        for (int k = 0; k < n; k++) x[k] = nr_data(cx[k]);
        int64_t P = (N > 0 && C > 0) ? nr_numel(o) / (N * C) : 0;
        mix_job j = {n, x, nr_data(at), nr_data(o), 0, C, P};
        nr_parallel_for(N * C, 4, attn_task, &j);
        nr_tensor *ins[NR_MAXIN];
        for (int k = 0; k < n; k++) ins[k] = cx[k];
        ins[n] = (nr_tensor *)a;
        nr_node *nd = nr_record(o, "attn_sum", attn_bwd, n + 1, ins);
        if (nd) nd->writes = (1u << n) - 1; /* the inputs' gradients, not the attention's */
    }
    for (int k = 0; k < n; k++) nr_tensor_release(cx[k]);
    nr_tensor_release(at);
    if (!o) return NR_ENOMEM;
    *out = o;
    return NR_OK;
}
