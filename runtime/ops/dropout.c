/*
** dropout.c -- inverted dropout (torch.nn.functional.dropout semantics).
** The Bernoulli mask is drawn on the calling thread from one generator, so
** a given seed gives the same mask at any thread count; the scaled mask
** (0 or 1/(1-p)) is kept on the node and reused by the backward.
*/
#include "optim.h"

#include <math.h>

typedef struct {
    const float *x, *m;
    float *y;
} drop_job;

static void drop_fwd_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    drop_job *j = ctx;
    const float *restrict x = j->x, *restrict m = j->m;
    float *restrict y = j->y;
    for (int64_t i = i0; i < i1; i++) y[i] = x[i] * m[i];
}

typedef struct {
    const float *g, *m;
    float *gx;
} dropb_job;

static void drop_bwd_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    dropb_job *j = ctx;
    const float *restrict g = j->g, *restrict m = j->m;
    float *restrict gx = j->gx;
    for (int64_t i = i0; i < i1; i++) gx[i] += g[i] * m[i];
}

static nr_status dropout_bwd(nr_node *n, const nr_tensor *g, nr_tensor *const *gin) {
    if (!gin[0]) return NR_OK;
    dropb_job j = {nr_data(g), nr_data(n->saved[0]), nr_data(gin[0])};
    nr_parallel_for(nr_numel(g), 32768, drop_bwd_task, &j);
    return NR_OK;
}

nr_status nr_dropout(nr_tensor **out, const nr_tensor *x, double p, int training, nr_rng *rng) {
    *out = NULL;
    if (!(p >= 0.0 && p <= 1.0))
        return nr_seterror(NR_EUSAGE, "dropout: probability has to be between 0 and 1, but got %g", p);
    if (!training || p == 0.0) {
        nr_tensor_retain((nr_tensor *)x);
        *out = (nr_tensor *)x;
        return NR_OK;
    }
    if (!rng) rng = nr_rng_global();
    nr_tensor *xc = nr_contig(x);
    if (!xc) return NR_ENOMEM;
    nr_tensor *mask = nr_tensor_empty(xc->ndim, xc->ne);
    nr_tensor *y = nr_tensor_empty(xc->ndim, xc->ne);
    if (!mask || !y) {
        nr_tensor_release(xc);
        nr_tensor_release(mask);
        nr_tensor_release(y);
        return nr_seterror(NR_ENOMEM, "dropout: out of memory");
    }
    int64_t n = nr_numel(xc);
    float *m = nr_data(mask);
    float scale = p < 1.0 ? (float)(1.0 / (1.0 - p)) : 0.0f;
    /* keep an element when its 32-bit uniform draw is >= p * 2^32; two
       draws per generator call */
    uint64_t thr = p >= 1.0 ? UINT64_C(0x100000000) : (uint64_t)ldexp(p, 32);
    int64_t i = 0;
    for (; i + 1 < n; i += 2) {
        uint64_t r = nr_rng_next(rng);
        m[i] = (r & 0xffffffffu) >= thr ? scale : 0.0f;
        m[i + 1] = (r >> 32) >= thr ? scale : 0.0f;
    }
    if (i < n) m[i] = (nr_rng_next(rng) & 0xffffffffu) >= thr ? scale : 0.0f;
    drop_job j = {nr_data(xc), m, nr_data(y)};
    nr_parallel_for(n, 32768, drop_fwd_task, &j);
    nr_node *node = nr_record(y, "dropout", dropout_bwd, 1, &xc);
    if (node) nr_save(node, 0, mask);
    nr_tensor_release(mask);
    nr_tensor_release(xc);
    *out = y;
    return NR_OK;
}
