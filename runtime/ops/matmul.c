/*
** matmul.c -- matmul (2-D, batched, 1-D cases) and linear, via nr_gemm.
**
** nr_gemm is single-threaded; we cut the output into tiles whose layout
** depends only on the problem's sizes (never on the thread count) and hand
** the tiles to the pool, so results are bitwise identical for any number of
** threads.  Backward products accumulate straight into the gradient buffers
** with beta = 1.
*/
#include "nasrt.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------- tiled gemm */

typedef struct {
    int ta, tb;
    int64_t m, n, k;            /* C[m,n] (+)= op(A)[m,k] op(B)[k,n] */
    const float *a;
    int64_t lda, sa;            /* sa: batch stride (0 = broadcast) */
    const float *b;
    int64_t ldb, sb;
    float *c;
    int64_t ldc, sc;
    const float *bias;          /* [n] or NULL: C = bias + AB (forward) */
    float beta;                 /* 0 overwrite, 1 accumulate */
    int64_t nbatch;
    int reduce;                 /* sum over the batch into one C */
    int64_t mb, nb, pm, pn;     /* tile plan */
} gjob;

static void gjob_tile(const gjob *j, int64_t bi, int64_t tile) {
    int64_t i0 = (tile / j->pn) * j->mb, j0 = (tile % j->pn) * j->nb;
    int64_t mi = j->m - i0 < j->mb ? j->m - i0 : j->mb;
    int64_t nj = j->n - j0 < j->nb ? j->n - j0 : j->nb;
    float *C = j->c + (j->reduce ? 0 : bi * j->sc) + i0 * j->ldc + j0;
    float beta = j->beta;
    if (j->bias) {
        for (int64_t i = 0; i < mi; i++) memcpy(C + i * j->ldc, j->bias + j0, (size_t)nj * sizeof(float));
        beta = 1.0f;
    }
    int64_t b0 = j->reduce ? 0 : bi, b1 = j->reduce ? j->nbatch : bi + 1;
    if (j->k == 0) {
        if (beta == 0.0f)
            for (int64_t i = 0; i < mi; i++) memset(C + i * j->ldc, 0, (size_t)nj * sizeof(float));
        return;
    }
    if (b1 == b0 && beta == 0.0f) /* reduce over an empty batch */
        for (int64_t i = 0; i < mi; i++) memset(C + i * j->ldc, 0, (size_t)nj * sizeof(float));
    for (int64_t b = b0; b < b1; b++) {
        const float *A = j->a + b * j->sa + (j->ta ? i0 : i0 * j->lda);
        const float *B = j->b + b * j->sb + (j->tb ? j0 * j->ldb : j0);
        nr_gemm(j->ta, j->tb, mi, nj, j->k, 1.0f, A, j->lda, B, j->ldb, beta, C, j->ldc);
        beta = 1.0f;
    }
}

static void gjob_task(void *ctx, int64_t t0, int64_t t1, int ith) {
    const gjob *j = ctx;
    int64_t tiles = j->pm * j->pn;
    for (int64_t t = t0; t < t1; t++) {
        if (j->reduce) gjob_tile(j, 0, t);
        else gjob_tile(j, t / tiles, t % tiles);
    }
}

static int64_t round_up(int64_t v, int64_t q) { return (v + q - 1) / q * q; }
static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Plans tiles from the sizes only, then runs them on the pool. */
static void gjob_run(gjob *j) {
    if (j->m <= 0 || j->n <= 0) return;
    if (!j->reduce && j->nbatch <= 0) return;
    double work = (double)j->m * (double)j->n * (double)(j->k > 0 ? j->k : 1) *
                  (double)(j->nbatch > 0 ? j->nbatch : 1);
    int64_t outer = j->reduce ? 1 : j->nbatch;
    double want = work / (double)(1 << 19);   /* ~0.5M multiply-adds per task */
    int64_t target = want > 64 ? 64 : (want < 1 ? 1 : (int64_t)want);
    int64_t pm = 1, pn = 1;
    while (outer * pm * pn < target) {
        int64_t bm = cdiv(j->m, pm), bn = cdiv(j->n, pn);
        if (bm >= 128 && bm >= bn / 2) pm *= 2;
        else if (bn >= 256) pn *= 2;
        else if (bm >= 32) pm *= 2;
        else break;
    }
    j->mb = round_up(cdiv(j->m, pm), 8);
    j->nb = pn == 1 ? j->n : round_up(cdiv(j->n, pn), 16);
    j->pm = cdiv(j->m, j->mb);
    j->pn = cdiv(j->n, j->nb);
    nr_parallel_for(outer * j->pm * j->pn, 1, gjob_task, j);
}

/* ----------------------------------------------------------- matmul */

/* p.i: 0 nbatch, 1 m, 2 k, 3 n, 4 sa, 5 sb (after folding) */
static nr_status matmul_backward(nr_node *nd, const nr_tensor *gout, nr_tensor *const *gin) {
    const nr_tensor *a = nd->in[0], *b = nd->in[1];
    int64_t nb = nd->p.i[0], m = nd->p.i[1], k = nd->p.i[2], n = nd->p.i[3];
    int64_t sa = nd->p.i[4], sb = nd->p.i[5];
    nr_tensor *g = nr_is_contiguous(gout) ? (nr_tensor_retain((nr_tensor *)gout), (nr_tensor *)gout)
                                          : nr_tensor_clone(gout);
    if (!g) return NR_ENOMEM;
    if (gin[0]) {
        /* dA[b] += g[b] B[b]^T : [m,n] x [n,k] */
        gjob j = {.ta = 0, .tb = 1, .m = m, .n = k, .k = n,
                  .a = nr_data(g), .lda = n, .sa = m * n,
                  .b = nr_data(b), .ldb = n, .sb = sb,
                  .c = nr_data(gin[0]), .ldc = k, .sc = m * k,
                  .beta = 1.0f, .nbatch = nb, .reduce = sa == 0 && nb > 1};
        gjob_run(&j);
    }
    if (gin[1]) {
        /* dB[b] += A[b]^T g[b] : [k,m] x [m,n] */
        gjob j = {.ta = 1, .tb = 0, .m = k, .n = n, .k = m,
                  .a = nr_data(a), .lda = k, .sa = sa,
                  .b = nr_data(g), .ldb = n, .sb = m * n,
                  .c = nr_data(gin[1]), .ldc = n, .sc = k * n,
                  .beta = 1.0f, .nbatch = nb, .reduce = sb == 0 && nb > 1};
        gjob_run(&j);
    }
    nr_tensor_release(g);
    return NR_OK;
}

nr_status nr_matmul(nr_tensor **out, const nr_tensor *a, const nr_tensor *b) {
    char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
    *out = NULL;
    if (a->ndim < 1 || b->ndim < 1)
        return nr_seterror(NR_ESHAPE, "matmul: both arguments need at least 1 dim: %s x %s",
                           nr_shape_str(a, b1), nr_shape_str(b, b2));
    /* a: [batch..., m, k] (1-D: m = 1), b: [batch..., k, n] (1-D: n = 1) */
    int64_t m = a->ndim >= 2 ? a->ne[a->ndim - 2] : 1, ka = a->ne[a->ndim - 1];
    int64_t kb = b->ndim >= 2 ? b->ne[b->ndim - 2] : b->ne[0];
    int64_t n = b->ndim >= 2 ? b->ne[b->ndim - 1] : 1;
    if (ka != kb)
        return nr_seterror(NR_ESHAPE, "matmul: inner dims differ: %s x %s",
                           nr_shape_str(a, b1), nr_shape_str(b, b2));
    int abd = a->ndim > 2 ? a->ndim - 2 : 0, bbd = b->ndim > 2 ? b->ndim - 2 : 0;
    int64_t anb = 1, bnb = 1;
    for (int i = 0; i < abd; i++) anb *= a->ne[i];
    for (int i = 0; i < bbd; i++) bnb *= b->ne[i];
    /* batch dims: equal (right-aligned, ones padded), or one side all ones */
    const nr_tensor *big = abd >= bbd ? a : b;
    int bd = abd >= bbd ? abd : bbd;
    int ok = 1;
    if (anb != 1 && bnb != 1) {
        for (int i = 0; i < bd; i++) {
            int ia = i - (bd - abd), ib = i - (bd - bbd);
            int64_t da = ia >= 0 ? a->ne[ia] : 1, db = ib >= 0 ? b->ne[ib] : 1;
            if (da != db) ok = 0;
        }
    }
    if (!ok)
        return nr_seterror(NR_ESHAPE,
                           "matmul: batch dims do not match (only equal batch dims or a "
                           "batch of one broadcast): %s x %s",
                           nr_shape_str(a, b1), nr_shape_str(b, b2));
    int64_t ne[NR_MAXDIM];
    int nd = 0;
    for (int i = 0; i < bd; i++) {
        int ia = i - (bd - abd), ib = i - (bd - bbd);
        int64_t da = ia >= 0 ? a->ne[ia] : 1, db = ib >= 0 ? b->ne[ib] : 1;
        ne[nd++] = da > db ? da : db;
    }
    (void)big;
    if (a->ndim >= 2) ne[nd++] = m;
    if (b->ndim >= 2) ne[nd++] = n;
    int64_t nbatch = anb > bnb ? anb : bnb;
    nr_status st = nr_check_shape("matmul", nd, ne);
    if (st != NR_OK) return st;

    nr_tensor *ac = nr_contig(a);
    if (!ac) return NR_ENOMEM;
    nr_tensor *bc = nr_contig(b);
    if (!bc) {
        nr_tensor_release(ac);
        return NR_ENOMEM;
    }
    nr_tensor *y = nr_tensor_empty(nd, ne);
    if (!y) {
        nr_tensor_release(ac);
        nr_tensor_release(bc);
        return NR_ENOMEM;
    }
    int64_t sa = anb == 1 ? 0 : m * ka, sb = bnb == 1 ? 0 : ka * n;
    if (sb == 0 && nbatch > 1) { /* [nb*m, k] x [k, n]: one gemm */
        m *= nbatch;
        nbatch = 1;
        sa = 0;
    }
    if (nbatch == 1) sa = sb = 0;
    gjob j = {.ta = 0, .tb = 0, .m = m, .n = n, .k = ka,
              .a = nr_data(ac), .lda = ka, .sa = sa,
              .b = nr_data(bc), .ldb = n, .sb = sb,
              .c = nr_data(y), .ldc = n, .sc = m * n,
              .beta = 0.0f, .nbatch = nbatch};
    gjob_run(&j);
    nr_tensor *in[2] = {ac, bc};
    nr_node *node = nr_record(y, "matmul", matmul_backward, 2, in);
    if (node) {
        node->p.i[0] = nbatch;
        node->p.i[1] = m;
        node->p.i[2] = ka;
        node->p.i[3] = n;
        node->p.i[4] = sa;
        node->p.i[5] = sb;
    }
    nr_tensor_release(ac);
    nr_tensor_release(bc);
    *out = y;
    return NR_OK;
}

/* ----------------------------------------------------------- linear */

typedef struct {
    const float *g;
    float *db;
    int64_t M, O;
} colsum_job;

#define CS_BLK 64

static void colsum_task(void *ctx, int64_t t0, int64_t t1, int ith) {
    const colsum_job *j = ctx;
    double acc[CS_BLK];
    for (int64_t t = t0; t < t1; t++) {
        int64_t c0 = t * CS_BLK, nc = j->O - c0 < CS_BLK ? j->O - c0 : CS_BLK;
        for (int64_t c = 0; c < nc; c++) acc[c] = 0;
        for (int64_t r = 0; r < j->M; r++) {
            const float *g = j->g + r * j->O + c0;
            for (int64_t c = 0; c < nc; c++) acc[c] += g[c];
        }
        for (int64_t c = 0; c < nc; c++) j->db[c0 + c] += (float)acc[c];
    }
}

/* p.i: 0 M, 1 in, 2 out */
static nr_status linear_backward(nr_node *nd, const nr_tensor *gout, nr_tensor *const *gin) {
    const nr_tensor *x = nd->in[0], *w = nd->in[1];
    int64_t M = nd->p.i[0], I = nd->p.i[1], O = nd->p.i[2];
    nr_tensor *g = nr_is_contiguous(gout) ? (nr_tensor_retain((nr_tensor *)gout), (nr_tensor *)gout)
                                          : nr_tensor_clone(gout);
    if (!g) return NR_ENOMEM;
    if (gin[0]) { /* dx[M,I] += g[M,O] w[O,I] */
        gjob j = {.ta = 0, .tb = 0, .m = M, .n = I, .k = O,
                  .a = nr_data(g), .lda = O, .b = nr_data(w), .ldb = I,
                  .c = nr_data(gin[0]), .ldc = I, .beta = 1.0f, .nbatch = 1};
        gjob_run(&j);
    }
    if (gin[1]) { /* dw[O,I] += g^T[O,M] x[M,I] */
        gjob j = {.ta = 1, .tb = 0, .m = O, .n = I, .k = M,
                  .a = nr_data(g), .lda = O, .b = nr_data(x), .ldb = I,
                  .c = nr_data(gin[1]), .ldc = I, .beta = 1.0f, .nbatch = 1};
        gjob_run(&j);
    }
    if (gin[2]) { /* db[O] += sum over rows of g */
        colsum_job j = {nr_data(g), nr_data(gin[2]), M, O};
        int64_t per = M * CS_BLK, grain = 65536 / (per > 0 ? per : 1);
        nr_parallel_for(cdiv(O, CS_BLK), grain < 1 ? 1 : grain, colsum_task, &j);
    }
    nr_tensor_release(g);
    return NR_OK;
}

nr_status nr_linear(nr_tensor **out, const nr_tensor *x, const nr_tensor *w,
                    const nr_tensor *b) {
    char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
    *out = NULL;
    if (w->ndim != 2)
        return nr_seterror(NR_ESHAPE, "linear: weight %s must be 2-D [out,in]",
                           nr_shape_str(w, b1));
    if (x->ndim < 1 || x->ne[x->ndim - 1] != w->ne[1])
        return nr_seterror(NR_ESHAPE,
                           "linear: input %s does not fit weight %s (last dim must be %lld)",
                           nr_shape_str(x, b1), nr_shape_str(w, b2), (long long)w->ne[1]);
    int64_t I = w->ne[1], O = w->ne[0];
    if (b && (b->ndim != 1 || b->ne[0] != O))
        return nr_seterror(NR_ESHAPE, "linear: bias %s does not fit weight %s (expected [%lld])",
                           nr_shape_str(b, b1), nr_shape_str(w, b2), (long long)O);
    int64_t ne[NR_MAXDIM];
    for (int i = 0; i < x->ndim; i++) ne[i] = x->ne[i];
    ne[x->ndim - 1] = O;
    int64_t M = 1;
    for (int i = 0; i < x->ndim - 1; i++) M *= x->ne[i];
    nr_tensor *xc = nr_contig(x), *wc = xc ? nr_contig(w) : NULL;
    nr_tensor *bc = wc && b ? nr_contig(b) : NULL;
    nr_tensor *y = wc && (bc || !b) ? nr_tensor_empty(x->ndim, ne) : NULL;
    if (!y) {
        nr_tensor_release(xc);
        nr_tensor_release(wc);
        nr_tensor_release(bc);
        return NR_ENOMEM;
    }
    gjob j = {.ta = 0, .tb = 1, .m = M, .n = O, .k = I,
              .a = nr_data(xc), .lda = I, .b = nr_data(wc), .ldb = I,
              .c = nr_data(y), .ldc = O, .bias = bc ? nr_data(bc) : NULL,
              .beta = 0.0f, .nbatch = 1};
    gjob_run(&j);
    nr_tensor *in[3] = {xc, wc, bc};
    nr_node *node = nr_record(y, "linear", linear_backward, 3, in);
    if (node) {
        node->p.i[0] = M;
        node->p.i[1] = I;
        node->p.i[2] = O;
    }
    nr_tensor_release(xc);
    nr_tensor_release(wc);
    nr_tensor_release(bc);
    *out = y;
    return NR_OK;
}
