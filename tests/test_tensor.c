/* test_tensor.c -- storage, refcounts, views, the tape's memory behaviour,
   the GEMM path, broadcasting and the generator. */
#include "check.h"
#include "nasrt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_refcounts(void) {
    size_t live0 = nr_live_bytes();
    nr_tensor *t = nr_tensor_zeros(2, (int64_t[]){3, 4});
    CHECK(t && t->refcount == 1 && t->storage->refcount == 1);
    CHECK(nr_numel(t) == 12 && nr_is_contiguous(t));
    CHECK(((uintptr_t)t->storage->data & 63) == 0); /* aligned */
    nr_tensor *v = NULL;
    CHECK(nr_narrow(&v, t, 1, 1, 2) == NR_OK);
    CHECK(v->storage == t->storage && t->storage->refcount == 2);
    CHECK(!nr_is_contiguous(v) && v->ne[1] == 2 && v->offset == 1);
    nr_data(v)[0] = 5; /* writes through to t[0][1] */
    CHECK(nr_data(t)[1] == 5);
    nr_tensor_release(t);                 /* view keeps storage alive */
    CHECK(v->storage->refcount == 1 && nr_data(v)[0] == 5);
    nr_tensor *c = nr_tensor_clone(v);
    CHECK(nr_is_contiguous(c) && nr_data(c)[0] == 5 && c->storage != v->storage);
    nr_tensor_release(v);
    nr_tensor_release(c);
    CHECK(nr_live_bytes() == live0);
}

static void test_bad_shapes(void) {
    CHECK(nr_tensor_empty(2, (int64_t[]){-1, 3}) == NULL);
    CHECK(strstr(nr_lasterror(), "negative") != NULL);
    CHECK(nr_tensor_empty(2, (int64_t[]){1LL << 30, 1LL << 30}) == NULL);
    CHECK(nr_tensor_empty(9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}) == NULL);
    nr_tensor *a = nr_tensor_zeros(2, (int64_t[]){2, 3}), *b = nr_tensor_zeros(2, (int64_t[]){4, 3});
    nr_tensor *o = NULL;
    CHECK(nr_add(&o, a, b) == NR_ESHAPE && o == NULL);
    CHECK(strstr(nr_lasterror(), "[2,3]") && strstr(nr_lasterror(), "[4,3]"));
    nr_tensor_release(a);
    nr_tensor_release(b);
}

/* The tape frees what it saved: after backward, live bytes return to what
   the leaves and the grads hold, step after step. */
/* Empty tensors with huge other sizes: numel is 0, but the contiguous
   strides are suffix products and must fit in int64, so the product of the
   non-zero sizes is bounded by 2^40 like numel. */
static void test_empty_shape_overflow(void) {
    const int64_t T40 = (int64_t)1 << 40, T20 = (int64_t)1 << 20;
    CHECK(nr_check_shape("t", 3, (int64_t[]){0, T40, T40}) == NR_ENOMEM);
    CHECK(strstr(nr_lasterror(), "t: shape too large") != NULL);
    CHECK(nr_check_shape("t", 3, (int64_t[]){T40, T40, 0}) == NR_ENOMEM);
    CHECK(nr_check_shape("t", 2, (int64_t[]){0, INT64_MAX}) == NR_ENOMEM);
    CHECK(nr_tensor_empty(3, (int64_t[]){0, T40, T40}) == NULL);
    /* at the bound: fine, strides exact */
    CHECK(nr_check_shape("t", 3, (int64_t[]){0, T20, T20}) == NR_OK);
    nr_tensor *e = nr_tensor_empty(3, (int64_t[]){0, T20, T20});
    CHECK(e && nr_numel(e) == 0 && e->st[0] == T40 && e->st[1] == T20 && e->st[2] == 1);
    CHECK(nr_check_shape("t", 2, (int64_t[]){T40 + 1, 0}) == NR_ENOMEM);
    CHECK(nr_check_shape("t", 2, (int64_t[]){T40, 0}) == NR_OK);
    CHECK(nr_check_shape("t", 4, (int64_t[]){T20, 0, 1, T20}) == NR_OK);
    CHECK(nr_check_shape("t", 4, (int64_t[]){T20, 0, 2, T20}) == NR_ENOMEM);
    /* reshape of an empty tensor goes through the same check (-1 counted
       as 1 there) */
    nr_tensor *o = NULL;
    CHECK(nr_reshape(&o, e, 3, (int64_t[]){0, T40, T40}) == NR_ENOMEM && o == NULL);
    CHECK(strstr(nr_lasterror(), "reshape: shape too large") != NULL);
    CHECK(nr_reshape(&o, e, 3, (int64_t[]){INT64_MAX, 4, 0}) == NR_ENOMEM && o == NULL);
    CHECK(nr_reshape(&o, e, 2, (int64_t[]){T40 + 1, -1}) == NR_ENOMEM && o == NULL);
    CHECK(nr_reshape(&o, e, 2, (int64_t[]){T40, -1}) == NR_OK); /* -1 is inferred as 0 */
    CHECK(o && o->ne[1] == 0 && o->st[0] == 0 && o->st[1] == 1);
    nr_tensor_release(o);
    CHECK(nr_reshape(&o, e, 3, (int64_t[]){T20, 0, T20}) == NR_OK);
    CHECK(o && nr_numel(o) == 0 && o->st[0] == 0 && o->st[1] == T20 && o->st[2] == 1);
    nr_tensor_release(o);
    nr_tensor_release(e);
    /* a 12-element tensor still reshapes with -1 */
    nr_tensor *a = nr_tensor_zeros(1, (int64_t[]){12});
    CHECK(nr_reshape(&o, a, 3, (int64_t[]){2, -1, 3}) == NR_OK && o->ne[1] == 2 && o->st[0] == 6);
    nr_tensor_release(o);
    nr_tensor_release(a);
}

/* A message may quote the previous one (it is formatted aside first). */
static void test_error_prefix(void) {
    nr_seterror(NR_EIO, "inner %d", 42);
    CHECK(nr_seterror(NR_ENOMEM, "outer: %s: %s", "f.npy", nr_lasterror()) == NR_ENOMEM);
    CHECK(strcmp(nr_lasterror(), "outer: f.npy: inner 42") == 0);
    char big[700];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    nr_seterror(NR_EIO, "%s", big); /* truncated to the buffer, still terminated */
    CHECK(strlen(nr_lasterror()) == 511);
}

static void test_tape_memory(void) {
    nr_tensor *w = nr_tensor_randn(2, (int64_t[]){64, 64});
    w->requires_grad = 1;
    size_t after_first = 0;
    for (int step = 0; step < 5; step++) {
        nr_tensor *x = nr_tensor_randn(2, (int64_t[]){32, 64});
        nr_tensor *h = NULL, *r = NULL, *l = NULL;
        CHECK(nr_matmul(&h, x, w) == NR_OK);
        CHECK(nr_unary_op(&r, h, NR_U_TANH) == NR_OK);
        CHECK(nr_sum(&l, r, -1, 0) == NR_OK);
        nr_tensor_release(h);
        nr_tensor_release(r);
        nr_tensor_release(x);
        CHECK(nr_backward(l, NULL) == NR_OK);
        /* a second backward through the freed graph is an error, not a crash */
        CHECK(nr_backward(l, NULL) == NR_EUSAGE);
        nr_tensor_release(l);
        if (step == 0) after_first = nr_live_bytes();
        else CHECK(nr_live_bytes() == after_first);
    }
    CHECK(w->grad != NULL);
    nr_tensor_release(w);
}

static void naive_gemm(int m, int n, int k, const float *a, const float *b, double *c) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++) s += (double)a[i * k + p] * b[p * n + j];
            c[i * n + j] = s;
        }
}

/* The storage cache: freed blocks serve later requests of the same size,
   or of a size over half theirs; held memory (live + cached) stays under
   1.25x the peak of live bytes, here 5 MB from the first 4 MB block (this
   test runs first). */
static void test_storage_cache(void) {
    size_t live0 = nr_live_bytes();
    nr_tensor *a = nr_tensor_empty(1, (int64_t[]){1 << 20}); /* 4 MB */
    float *pa = nr_data(a);
    size_t ba = a->storage->bytes;
    CHECK(ba == (size_t)4 << 20 && nr_live_bytes() == live0 + ba);
    nr_tensor_release(a);
    CHECK(nr_cached_bytes() == ba && nr_live_bytes() == live0);
    /* 3 MB fits the cached 4 MB block: same memory, counted at its size */
    nr_tensor *b = nr_tensor_empty(1, (int64_t[]){3 << 18});
    CHECK(nr_data(b) == pa && b->storage->bytes == ba && nr_cached_bytes() == 0);
    nr_tensor_release(b);
    nr_storage_trim();
    CHECK(nr_cached_bytes() == 0);
    nr_tensor *y = nr_tensor_empty(1, (int64_t[]){1 << 19}); /* 2 MB */
    for (int i = 0; i < 1 << 19; i++) nr_data(y)[i] = (float)i;
    nr_tensor_release(y);
    /* 0.75 MB: the 2 MB block is over twice that; a new block, and the
       2 MB one stays cached (held 2.75 MB, under the 5 MB cap) */
    nr_tensor *c = nr_tensor_empty(1, (int64_t[]){3 << 16});
    CHECK(c->storage->bytes == (size_t)3 << 18 && nr_cached_bytes() == (size_t)2 << 20);
    /* 2.5 MB more would pass the cap: the cached 2 MB block is resized
       for it (mremap keeps its pages, so its old values are still there;
       a bare storage, which NASRT_POISON leaves as it is) */
    nr_storage *d = nr_storage_new(5 << 17);
    CHECK(d != NULL && nr_cached_bytes() == 0 && d->bytes == (size_t)5 << 19);
    float *pd = d ? (float *)d->data : NULL;
    CHECK(pd && pd[12345] == 12345.0f && pd[(1 << 19) - 1] == (float)((1 << 19) - 1));
    CHECK(nr_live_bytes() == live0 + ((size_t)13 << 18));
    nr_tensor_release(c);
    nr_storage_release(d);
    nr_storage_trim();
    CHECK(nr_cached_bytes() == 0 && nr_live_bytes() == live0);
}

static void test_gemm(void) {
    int dims[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 9, 33}, {64, 128, 96}};
    for (size_t d = 0; d < 4; d++) {
        int m = dims[d][0], n = dims[d][1], k = dims[d][2];
        nr_tensor *a = nr_tensor_randn(2, (int64_t[]){m, k}), *b = nr_tensor_randn(2, (int64_t[]){k, n});
        double *ref = malloc(sizeof(double) * m * n);
        naive_gemm(m, n, k, nr_data(a), nr_data(b), ref);
        nr_tensor *c = NULL;
        CHECK(nr_matmul(&c, a, b) == NR_OK);
        double err = 0;
        for (int i = 0; i < m * n; i++) err = fmax(err, fabs(nr_data(c)[i] - ref[i]));
        CHECK(err < 1e-4 * k);
        /* the raw wrapper with transposes: C = A^T(k x m)^T ... */
        float *ct = calloc((size_t)m * n, sizeof(float));
        nr_tensor *at = NULL, *atc = NULL;
        nr_transpose(&at, a, 0, 1);
        atc = nr_tensor_clone(at); /* [k, m] */
        nr_gemm(1, 0, m, n, k, 1.0f, nr_data(atc), m, nr_data(b), n, 0.0f, ct, n);
        err = 0;
        for (int i = 0; i < m * n; i++) err = fmax(err, fabs(ct[i] - ref[i]));
        CHECK(err < 1e-4 * k);
        free(ct);
        free(ref);
        nr_tensor_release(at);
        nr_tensor_release(atc);
        nr_tensor_release(a);
        nr_tensor_release(b);
        nr_tensor_release(c);
    }
}

static void test_broadcast(void) {
    /* per-channel scale: [2,3,2,2] * [3,1,1]; gradient of the scale is the
       per-channel sum of x (times the upstream 1s) */
    nr_tensor *x = nr_tensor_randn(4, (int64_t[]){2, 3, 2, 2});
    nr_tensor *s = nr_tensor_randn(3, (int64_t[]){3, 1, 1});
    x->requires_grad = 1;
    s->requires_grad = 1;
    nr_tensor *y = NULL, *l = NULL;
    CHECK(nr_mul(&y, x, s) == NR_OK);
    CHECK(y->ndim == 4 && y->ne[1] == 3);
    const float *xd = nr_data(x), *sd = nr_data(s), *yd = nr_data(y);
    int ok = 1;
    for (int n = 0; n < 2; n++)
        for (int c = 0; c < 3; c++)
            for (int k = 0; k < 4; k++) {
                int i = (n * 3 + c) * 4 + k;
                ok &= fabsf(yd[i] - xd[i] * sd[c]) < 1e-6f;
            }
    CHECK(ok);
    CHECK(nr_sum(&l, y, -1, 0) == NR_OK);
    CHECK(nr_backward(l, NULL) == NR_OK);
    for (int c = 0; c < 3; c++) {
        double ref = 0;
        for (int n = 0; n < 2; n++)
            for (int k = 0; k < 4; k++) ref += xd[(n * 3 + c) * 4 + k];
        CHECK_NEAR(nr_data(s->grad)[c], ref, 1e-5);
    }
    for (int i = 0; i < 24; i++) CHECK_NEAR(nr_data(x->grad)[i], sd[(i / 4) % 3], 1e-6);
    nr_tensor_release(y);
    nr_tensor_release(l);
    /* scalar (0-dim) weight times a tensor */
    nr_tensor *w = nr_tensor_full(0, NULL, 0.5f);
    w->requires_grad = 1;
    CHECK(nr_mul(&y, w, x) == NR_OK && nr_same_shape(y, x));
    CHECK(nr_sum(&l, y, -1, 0) == NR_OK && nr_backward(l, NULL) == NR_OK);
    double sx = 0;
    for (int i = 0; i < 24; i++) sx += xd[i];
    CHECK_NEAR(nr_data(w->grad)[0], sx, 1e-5);
    nr_tensor_release(y);
    nr_tensor_release(l);
    nr_tensor_release(w);
    nr_tensor_release(x);
    nr_tensor_release(s);
}

static void test_rng(void) {
    nr_manual_seed(42);
    nr_tensor *a = nr_tensor_randn(1, (int64_t[]){1000});
    nr_manual_seed(42);
    nr_tensor *b = nr_tensor_randn(1, (int64_t[]){1000});
    CHECK(memcmp(nr_data(a), nr_data(b), 4000) == 0);
    double m = 0, v = 0;
    for (int i = 0; i < 1000; i++) m += nr_data(a)[i];
    m /= 1000;
    for (int i = 0; i < 1000; i++) v += (nr_data(a)[i] - m) * (nr_data(a)[i] - m);
    v /= 999;
    CHECK(fabs(m) < 0.1 && fabs(v - 1) < 0.15);
    nr_tensor *u = nr_tensor_rand(1, (int64_t[]){1000});
    int inrange = 1;
    for (int i = 0; i < 1000; i++) inrange &= nr_data(u)[i] >= 0 && nr_data(u)[i] < 1;
    CHECK(inrange);
    nr_tensor_release(a);
    nr_tensor_release(b);
    nr_tensor_release(u);
}

static void test_threads_agree(void) {
    nr_tensor *x = nr_tensor_randn(2, (int64_t[]){1000, 300});
    nr_tensor *o1 = NULL, *o2 = NULL;
    nr_set_num_threads(1);
    nr_sum(&o1, x, -1, 0);
    nr_set_num_threads(2);
    nr_sum(&o2, x, -1, 0);
    CHECK_NEAR(nr_data(o1)[0], nr_data(o2)[0], 1e-5);
    nr_tensor_release(o1);
    nr_tensor_release(o2);
    nr_tensor_release(x);
}

/* sum / mean / max over each dim of [37, 5, 211] (rows long enough for the
   vector path, enough of them to run on both threads) against double
   references, their gradients (g = 1 + index), one NaN row for max, and
   the same bits with 1 and 2 threads */
static void test_dim_reductions(void) {
    const int64_t ne[3] = {37, 5, 211}, n = 37 * 5 * 211;
    nr_tensor *x = nr_tensor_randn(3, ne);
    nr_data(x)[3 * 211 + 17] = NAN; /* row [0, 3, :] and column [:, :, 17] */
    x->requires_grad = 1;
    const float *xd = nr_data(x);
    for (int op = 0; op < 3; op++)
        for (int dim = 0; dim < 3; dim++) {
            float *res[2] = {NULL, NULL};
            int64_t outer = 1, nn = ne[dim], inner = 1, m = n / ne[dim];
            for (int i = 0; i < dim; i++) outer *= ne[i];
            for (int i = dim + 1; i < 3; i++) inner *= ne[i];
            for (int th = 0; th < 2; th++) {
                nr_set_num_threads(th + 1);
                nr_tensor *y = NULL, *g = nr_tensor_empty(2, (int64_t[]){outer, inner});
                for (int64_t i = 0; i < m; i++) nr_data(g)[i] = 1.0f + (float)i;
                nr_status st = op == 0   ? nr_sum(&y, x, dim, 0)
                               : op == 1 ? nr_mean(&y, x, dim, 0)
                                         : nr_max_dim(&y, NULL, x, dim, 0);
                CHECK(st == NR_OK && nr_numel(y) == m);
                nr_tensor_release(x->grad);
                x->grad = NULL;
                nr_tensor *gv = NULL;
                CHECK(nr_reshape(&gv, g, y->ndim, y->ne) == NR_OK);
                CHECK(nr_backward(y, gv) == NR_OK && x->grad);
                res[th] = malloc((size_t)(m + n) * sizeof(float));
                memcpy(res[th], nr_data(y), (size_t)m * sizeof(float));
                memcpy(res[th] + m, nr_data(x->grad), (size_t)n * sizeof(float));
                int ok = 1;
                for (int64_t o = 0; o < outer && ok; o++)
                    for (int64_t i = 0; i < inner && ok; i++) {
                        double s = 0, best = xd[o * nn * inner + i];
                        int64_t bk = 0;
                        for (int64_t k = 0; k < nn; k++) {
                            double v = xd[(o * nn + k) * inner + i];
                            s += v;
                            if (v > best || (isnan(v) && !isnan(best))) best = v, bk = k;
                        }
                        double want = op == 0 ? s : op == 1 ? s / nn : best;
                        double got = nr_data(y)[o * inner + i], gi = 1.0 + (double)(o * inner + i);
                        ok = isnan(want) ? isnan(got) : fabs(got - want) <= 1e-4 * (1 + fabs(want));
                        for (int64_t k = 0; k < nn && ok; k++) {
                            double gw = op == 0 ? gi : op == 1 ? gi / nn : (k == bk ? gi : 0);
                            double gg = nr_data(x->grad)[(o * nn + k) * inner + i];
                            ok = fabs(gg - gw) <= 1e-5 * (1 + fabs(gw));
                        }
                    }
                if (!ok) fprintf(stderr, "FAIL reduction op %d dim %d threads %d\n", op, dim, th + 1);
                CHECK(ok);
                nr_tensor_release(gv);
                nr_tensor_release(g);
                nr_tensor_release(y);
            }
            CHECK(res[0] && res[1] && !memcmp(res[0], res[1], (size_t)(m + n) * sizeof(float)));
            free(res[0]);
            free(res[1]);
        }
    nr_tensor_release(x);
    nr_set_num_threads(2);
}

/* nr_walk2 (copies, cat and its backward, gradient accumulation): dst =
   src and dst += src through views whose dims merge into long runs, into
   strided rows, with size-1 dims, and one contiguous run longer than a
   chunk with a remainder, against an index-by-index reference, with 1 and
   2 threads */
static float *at4(const nr_tensor *t, const int64_t *i) {
    int64_t o = 0;
    for (int d = 0; d < t->ndim; d++) o += i[d] * t->st[d];
    return nr_data(t) + o;
}

static int walk_matches(nr_tensor *dst, const nr_tensor *src, int acc) {
    nr_tensor *want = nr_tensor_clone(dst);
    nr_tensor *wv = want; /* want is contiguous: compare index by index */
    int64_t i[4] = {0}, n = nr_numel(dst);
    for (int64_t k = 0; k < n; k++) {
        int64_t r = k;
        for (int d = dst->ndim - 1; d >= 0; d--) i[d] = r % dst->ne[d], r /= dst->ne[d];
        float v = *at4(src, i);
        float *w = at4(wv, i);
        *w = acc ? *w + v : v;
    }
    nr_walk2(dst, src, acc);
    int ok = 1;
    for (int64_t k = 0; k < n && ok; k++) {
        int64_t r = k;
        for (int d = dst->ndim - 1; d >= 0; d--) i[d] = r % dst->ne[d], r /= dst->ne[d];
        ok = memcmp(at4(dst, i), at4(wv, i), sizeof(float)) == 0;
    }
    nr_tensor_release(want);
    return ok;
}

static void test_walk2(void) {
    const int64_t ne[4] = {6, 5, 40, 301};
    for (int th = 1; th <= 2; th++) {
        nr_set_num_threads(th);
        nr_tensor *a = nr_tensor_randn(4, ne), *b = nr_tensor_randn(4, ne);
        nr_tensor *v = NULL, *w = NULL, *d = NULL;
        for (int acc = 0; acc <= 1; acc++) {
            /* a cat piece: rows of 3*40*301 */
            CHECK(nr_narrow(&v, a, 1, 1, 3) == NR_OK);
            d = nr_tensor_randn(4, v->ne);
            CHECK(walk_matches(d, v, acc) && walk_matches(v, d, acc));
            nr_tensor_release(d), nr_tensor_release(v);
            /* transposed: strided rows on one side */
            CHECK(nr_transpose(&v, b, 2, 3) == NR_OK);
            d = nr_tensor_randn(4, v->ne);
            CHECK(walk_matches(d, v, acc) && walk_matches(v, d, acc));
            nr_tensor_release(d), nr_tensor_release(v);
            /* size-1 dims between merged ones */
            CHECK(nr_narrow(&v, a, 1, 2, 1) == NR_OK);
            CHECK(nr_narrow(&w, v, 3, 7, 1) == NR_OK);
            d = nr_tensor_randn(4, w->ne);
            CHECK(walk_matches(d, w, acc) && walk_matches(w, d, acc));
            nr_tensor_release(d), nr_tensor_release(w), nr_tensor_release(v);
            /* one contiguous run: 22 chunks and a remainder */
            d = nr_tensor_randn(4, ne);
            CHECK(walk_matches(d, a, acc));
            nr_tensor_release(d);
        }
        nr_tensor_release(a), nr_tensor_release(b);
    }
}

/* a task that itself calls a parallel helper (nr_copy_into of a large
   tensor) runs it inline: every item done once, right */
typedef struct {
    nr_tensor *src[4], *dst[4];
} nest_job;

static void nest_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    (void)ith;
    nest_job *J = ctx;
    for (int64_t i = i0; i < i1; i++) nr_copy_into(J->dst[i], J->src[i]);
}

static void test_nested_parallel(void) {
    nest_job J;
    const int64_t ne[2] = {300, 1000};
    for (int i = 0; i < 4; i++) J.src[i] = nr_tensor_randn(2, ne), J.dst[i] = nr_tensor_zeros(2, ne);
    nr_parallel_for(4, 1, nest_task, &J);
    for (int i = 0; i < 4; i++) {
        CHECK(!memcmp(nr_data(J.dst[i]), nr_data(J.src[i]), 300 * 1000 * sizeof(float)));
        nr_tensor_release(J.src[i]), nr_tensor_release(J.dst[i]);
    }
}

/* the pool hands out every item of a job exactly once, for job sizes
   and grains around the guided chunk sizes */
static void cover_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    (void)ith;
    int *cnt = ctx;
    for (int64_t i = i0; i < i1; i++) cnt[i]++;
}

static void test_parallel_for_cover(void) {
    static const int64_t ns[] = {1, 2, 7, 64, 1000, 100003}, grains[] = {1, 3, 1000};
    for (int th = 1; th <= 2; th++) {
        nr_set_num_threads(th);
        for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
            for (size_t b = 0; b < sizeof grains / sizeof *grains; b++) {
                int *cnt = calloc((size_t)ns[a], sizeof(int));
                for (int rep = 0; rep < 3; rep++) nr_parallel_for(ns[a], grains[b], cover_task, cnt);
                int ok = 1;
                for (int64_t i = 0; i < ns[a]; i++) ok = ok && cnt[i] == 3;
                if (!ok)
                    fprintf(stderr, "FAIL parallel_for n=%lld grain=%lld threads=%d\n",
                            (long long)ns[a], (long long)grains[b], th);
                CHECK(ok);
                free(cnt);
            }
    }
    nr_set_num_threads(2);
}

int main(void) {
    nr_runtime_init(2);
    test_storage_cache();
    test_refcounts();
    test_bad_shapes();
    test_empty_shape_overflow();
    test_error_prefix();
    test_tape_memory();
    test_gemm();
    test_broadcast();
    test_rng();
    test_threads_agree();
    test_dim_reductions();
    test_walk2();
    test_nested_parallel();
    test_parallel_for_cover();
    DONE();
}
