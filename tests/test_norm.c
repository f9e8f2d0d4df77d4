/* test_norm.c -- batch_norm, softmax, log_softmax, cross_entropy, matmul and
   linear: forward against naive double references and hand-computed values,
   running statistics, eval mode, backward against central differences, error
   messages, and bitwise agreement between 1 and 2 threads. */
#include "check.h"
#include "nasrt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SH(...) ((const int64_t[]){__VA_ARGS__})

static nr_tensor *T(int nd, const int64_t *ne, const float *v) {
    nr_tensor *t = nr_tensor_empty(nd, ne);
    memcpy(nr_data(t), v, (size_t)nr_numel(t) * sizeof(float));
    return t;
}

static nr_tensor *R(int nd, const int64_t *ne) { return nr_tensor_randn(nd, ne); }

static nr_tensor *RG(int nd, const int64_t *ne) {
    nr_tensor *t = nr_tensor_randn(nd, ne);
    t->requires_grad = 1;
    return t;
}

/* offset of the e-th element (row-major logical order) of t */
static int64_t elem_off(const nr_tensor *t, int64_t e) {
    int64_t off = t->offset;
    for (int i = t->ndim - 1; i >= 0; i--) {
        off += (e % t->ne[i]) * t->st[i];
        e /= t->ne[i];
    }
    return off;
}

static float get(const nr_tensor *t, int64_t e) { return t->storage->data[elem_off(t, e)]; }

/* sum(y * g) in double; y and g of the same shape */
static double ldot(const nr_tensor *y, const nr_tensor *g) {
    double s = 0;
    for (int64_t i = 0, n = nr_numel(y); i < n; i++) s += (double)get(y, i) * get(g, i);
    return s;
}

/* max |a - ref| / (1 + |ref|) over all elements of a float tensor vs doubles */
static double maxerr(const nr_tensor *a, const double *ref) {
    double m = 0;
    for (int64_t i = 0, n = nr_numel(a); i < n; i++) {
        double e = fabs(get(a, i) - ref[i]) / (1 + fabs(ref[i]));
        if (!(e <= m)) m = e; /* catches NaN */
    }
    return m;
}

#define CHECK_ERR(what, err, tol)                                                     \
    do {                                                                              \
        double e_ = (err);                                                            \
        if (e_ <= (tol)) check_pass++;                                                \
        else {                                                                        \
            check_fail++;                                                             \
            fprintf(stderr, "FAIL %s:%d: %s: error %g > %g\n", __FILE__, __LINE__,   \
                    what, e_, (double)(tol));                                         \
        }                                                                             \
    } while (0)

/* ------------------------------------------------------------ gradcheck */

typedef nr_status (*fwd_fn)(nr_tensor **out, nr_tensor **in, void *ctx);

/* For L = sum(f(in) * G) with G random, compares every in[i]->grad (for
   inputs with requires_grad) against central differences in float. */
static void gradcheck(const char *name, fwd_fn f, int nin, nr_tensor **in, void *ctx) {
    const float eps = 1e-3f;
    const double tol = 1e-2;
    for (int i = 0; i < nin; i++)
        if (in[i]) {
            nr_tensor_release(in[i]->grad);
            in[i]->grad = NULL;
        }
    nr_tensor *y = NULL;
    if (f(&y, in, ctx) != NR_OK) {
        check_fail++;
        fprintf(stderr, "FAIL gradcheck %s: forward: %s\n", name, nr_lasterror());
        return;
    }
    nr_tensor *G = nr_tensor_randn(y->ndim, y->ne);
    if (nr_backward(y, G) != NR_OK) {
        check_fail++;
        fprintf(stderr, "FAIL gradcheck %s: backward: %s\n", name, nr_lasterror());
        nr_tensor_release(y);
        nr_tensor_release(G);
        return;
    }
    nr_tensor_release(y);
    int prev = nr_set_grad_enabled(0);
    for (int i = 0; i < nin; i++) {
        nr_tensor *x = in[i];
        if (!x || !x->requires_grad) continue;
        if (!x->grad || !nr_same_shape(x->grad, x)) {
            check_fail++;
            fprintf(stderr, "FAIL gradcheck %s: input %d has no gradient\n", name, i);
            continue;
        }
        double worst = 0, wa = 0, wn = 0;
        int64_t we = -1;
        for (int64_t e = 0, n = nr_numel(x); e < n; e++) {
            float *p = x->storage->data + elem_off(x, e);
            float orig = *p;
            nr_tensor *o = NULL;
            *p = orig + eps;
            NR_ASSERT(f(&o, in, ctx) == NR_OK);
            double lp = ldot(o, G);
            nr_tensor_release(o);
            *p = orig - eps;
            NR_ASSERT(f(&o, in, ctx) == NR_OK);
            double lm = ldot(o, G);
            nr_tensor_release(o);
            *p = orig;
            double num = (lp - lm) / (2.0 * ((double)(orig + eps) - (double)orig));
            double ana = get(x->grad, e);
            double err = fabs(ana - num) / (1 + fabs(num));
            if (!(err <= worst)) {
                worst = err;
                we = e;
                wa = ana;
                wn = num;
            }
        }
        if (worst <= tol) {
            check_pass++;
        } else {
            check_fail++;
            fprintf(stderr, "FAIL gradcheck %s: input %d element %lld: analytic %g, numeric %g\n",
                    name, i, (long long)we, wa, wn);
        }
    }
    nr_set_grad_enabled(prev);
    nr_tensor_release(G);
}

/* ---------------------------------------------------------- batch norm */

typedef struct {
    nr_bn_params p;
    nr_tensor *rm, *rv;
} bn_ctx;

/* in: x, weight, bias */
static nr_status bn_f(nr_tensor **out, nr_tensor **in, void *ctx) {
    bn_ctx *c = ctx;
    return nr_batch_norm(out, in[0], c->rm, c->rv, in[1], in[2], &c->p);
}

/* naive double reference; updates rm/rv (doubles) when training */
static void bn_ref(const nr_tensor *x, const nr_tensor *w, const nr_tensor *b, int training,
                   double *rm, double *rv, double mom, double eps, double *y) {
    int64_t N = x->ne[0], C = x->ne[1], S = nr_numel(x) / (N * C);
    for (int64_t c = 0; c < C; c++) {
        double mean = 0, var = 0, M = (double)(N * S);
        if (training) {
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) mean += get(x, (n * C + c) * S + s);
            mean /= M;
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) {
                    double d = get(x, (n * C + c) * S + s) - mean;
                    var += d * d;
                }
            if (rm) rm[c] = (1 - mom) * rm[c] + mom * mean;
            if (rv) rv[c] = (1 - mom) * rv[c] + mom * var / (M - 1);
            var /= M;
        } else {
            mean = rm[c];
            var = rv[c];
        }
        double wc = w ? get(w, c) : 1, bc = b ? get(b, c) : 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) {
                int64_t e = (n * C + c) * S + s;
                y[e] = (get(x, e) - mean) / sqrt(var + eps) * wc + bc;
            }
    }
}

static void test_bn_hand(void) {
    /* x = [[1,2],[3,4]]: channel 0 {1,3}, channel 1 {2,4}: mean 2,3, biased
       var 1, unbiased var 2. eps = 0: xhat = [[-1,-1],[1,1]]. */
    nr_tensor *x = T(2, SH(2, 2), (float[]){1, 2, 3, 4});
    nr_tensor *w = T(1, SH(2), (float[]){2, 0.5f});
    nr_tensor *b = T(1, SH(2), (float[]){1, -1});
    nr_tensor *rm = nr_tensor_zeros(1, SH(2));
    nr_tensor *rv = nr_tensor_full(1, SH(2), 1.0f);
    nr_tensor *y = NULL;
    nr_bn_params p = {1, 0.1, 0.0, NR_ACT_NONE};
    CHECK(nr_batch_norm(&y, x, rm, rv, NULL, NULL, &p) == NR_OK);
    const float e1[] = {-1, -1, 1, 1};
    for (int i = 0; i < 4; i++) CHECK_NEAR(nr_data(y)[i], e1[i], 1e-6);
    nr_tensor_release(y);
    /* running: mean 0.9*0 + 0.1*[2,3]; var 0.9*1 + 0.1*2 (unbiased) */
    CHECK_NEAR(nr_data(rm)[0], 0.2, 1e-6);
    CHECK_NEAR(nr_data(rm)[1], 0.3, 1e-6);
    CHECK_NEAR(nr_data(rv)[0], 1.1, 1e-6);
    CHECK_NEAR(nr_data(rv)[1], 1.1, 1e-6);
    /* affine: y = xhat * w + b = [[-1,-1.5],[3,-0.5]] */
    CHECK(nr_batch_norm(&y, x, NULL, NULL, w, b, &p) == NR_OK);
    const float e2[] = {-1, -1.5f, 3, -0.5f};
    for (int i = 0; i < 4; i++) CHECK_NEAR(nr_data(y)[i], e2[i], 1e-6);
    nr_tensor_release(y);
    /* eval with running mean [0.2,0.3], var [1.1,1.1], eps 0.1: var+eps = 1.2 */
    nr_bn_params pe = {0, 0.1, 0.1, NR_ACT_NONE};
    CHECK(nr_batch_norm(&y, x, rm, rv, w, b, &pe) == NR_OK);
    double r12 = 1 / sqrt(1.2);
    const double e3[] = {(1 - 0.2) * r12 * 2 + 1, (2 - 0.3) * r12 * 0.5 - 1,
                         (3 - 0.2) * r12 * 2 + 1, (4 - 0.3) * r12 * 0.5 - 1};
    CHECK_ERR("bn eval hand", maxerr(y, e3), 1e-6);
    CHECK_NEAR(nr_data(rm)[0], 0.2, 1e-6); /* eval leaves the running stats */
    CHECK_NEAR(nr_data(rv)[1], 1.1, 1e-6);
    nr_tensor_release(y);
    nr_tensor_release(x);
    nr_tensor_release(w);
    nr_tensor_release(b);
    nr_tensor_release(rm);
    nr_tensor_release(rv);
}

static void bn_case(int nd, const int64_t *ne, int affine) {
    char name[64];
    nr_tensor *x = RG(nd, ne);
    int64_t C = ne[1];
    nr_tensor *w = affine ? RG(1, &ne[1]) : NULL, *b = affine ? RG(1, &ne[1]) : NULL;
    if (w) for (int64_t c = 0; c < C; c++) nr_data(w)[c] += 1.5f;
    nr_tensor *rm = R(1, &ne[1]), *rv = nr_tensor_rand(1, &ne[1]);
    for (int64_t c = 0; c < C; c++) nr_data(rv)[c] += 0.5f;
    double *drm = malloc(C * sizeof(double)), *drv = malloc(C * sizeof(double));
    for (int64_t c = 0; c < C; c++) {
        drm[c] = nr_data(rm)[c];
        drv[c] = nr_data(rv)[c];
    }
    int64_t n = nr_numel(x);
    double *ref = malloc(n * sizeof(double));
    /* training forward + running stats */
    bn_ctx c = {{1, 0.2, 1e-5, NR_ACT_NONE}, rm, rv};
    nr_tensor *in[3] = {x, w, b};
    nr_tensor *y = NULL;
    CHECK(bn_f(&y, in, &c) == NR_OK);
    bn_ref(x, w, b, 1, drm, drv, 0.2, 1e-5, ref);
    CHECK_ERR("bn train forward", maxerr(y, ref), 2e-5);
    CHECK_ERR("bn running_mean", maxerr(rm, drm), 1e-6);
    CHECK_ERR("bn running_var", maxerr(rv, drv), 1e-6);
    nr_tensor_release(y);
    /* eval forward */
    c.p.training = 0;
    CHECK(bn_f(&y, in, &c) == NR_OK);
    bn_ref(x, w, b, 0, drm, drv, 0.2, 1e-5, ref);
    CHECK_ERR("bn eval forward", maxerr(y, ref), 2e-5);
    nr_tensor_release(y);
    /* backward: training (no running stats so repeated forwards are pure) */
    bn_ctx ct = {{1, 0.1, 1e-5, NR_ACT_NONE}, NULL, NULL};
    snprintf(name, sizeof name, "batch_norm train %dd affine=%d", nd, affine);
    gradcheck(name, bn_f, 3, in, &ct);
    snprintf(name, sizeof name, "batch_norm eval %dd affine=%d", nd, affine);
    gradcheck(name, bn_f, 3, in, &c);
    nr_tensor_release(x);
    nr_tensor_release(w);
    nr_tensor_release(b);
    nr_tensor_release(rm);
    nr_tensor_release(rv);
    free(drm);
    free(drv);
    free(ref);
}

static void test_bn(void) {
    test_bn_hand();
    bn_case(2, SH(5, 3), 1);
    bn_case(2, SH(4, 2), 0);
    bn_case(4, SH(3, 2, 3, 2), 1);
    bn_case(4, SH(2, 3, 2, 3), 0);
    bn_case(3, SH(3, 2, 5), 1);
    /* running stats update with grad mode off too, x non-contiguous */
    nr_tensor *x = R(2, SH(3, 4)), *xt = NULL, *rm = nr_tensor_zeros(1, SH(3)),
              *rv = nr_tensor_full(1, SH(3), 1), *y = NULL;
    CHECK(nr_transpose(&xt, x, 0, 1) == NR_OK); /* [4,3], non-contiguous */
    nr_tensor *xtc = nr_tensor_clone(xt);
    int prev = nr_set_grad_enabled(0);
    nr_bn_params p = {1, 0.1, 1e-5, NR_ACT_NONE};
    CHECK(nr_batch_norm(&y, xt, rm, rv, NULL, NULL, &p) == NR_OK);
    nr_set_grad_enabled(prev);
    double ref[12], drm[3] = {0, 0, 0}, drv[3] = {1, 1, 1};
    bn_ref(xtc, NULL, NULL, 1, drm, drv, 0.1, 1e-5, ref);
    CHECK_ERR("bn non-contiguous", maxerr(y, ref), 2e-5);
    CHECK_ERR("bn no-grad running_var", maxerr(rv, drv), 1e-6);
    CHECK(y->node == NULL);
    nr_tensor_release(y);
    nr_tensor_release(x);
    nr_tensor_release(xt);
    nr_tensor_release(xtc);
    /* errors */
    nr_bn_params pe = {0, 0.1, 1e-5, NR_ACT_NONE};
    x = R(2, SH(4, 3));
    y = (nr_tensor *)1;
    CHECK(nr_batch_norm(&y, x, NULL, NULL, NULL, NULL, &pe) == NR_EUSAGE && y == NULL);
    CHECK(strstr(nr_lasterror(), "batch_norm") && strstr(nr_lasterror(), "running"));
    nr_tensor *w5 = R(1, SH(5));
    CHECK(nr_batch_norm(&y, x, NULL, NULL, w5, NULL, &p) == NR_ESHAPE && y == NULL);
    CHECK(strstr(nr_lasterror(), "batch_norm") && strstr(nr_lasterror(), "[5]"));
    nr_tensor *x1 = R(2, SH(1, 3));
    CHECK(nr_batch_norm(&y, x1, NULL, NULL, NULL, NULL, &p) == NR_ESHAPE && y == NULL);
    CHECK(strstr(nr_lasterror(), "more than 1 value"));
    nr_tensor_release(x1);
    nr_tensor_release(w5);
    nr_tensor_release(x);
    nr_tensor_release(rm);
    nr_tensor_release(rv);
}

/* Planes of 16 values and more (the channel sums run across planes in
   vector accumulators, a plane's S % 16 tail masked, a flush into double
   every BN_CHUNK / S planes; planes of BN_CHUNK and more go plane by
   plane): training forward, dx, dweight, dbias against double references
   (dx = w * is * (g - mean(g) - xhat * mean(g * xhat))). */
static void test_bn_planes(void) {
    static const int64_t shapes[][4] = {{90, 2, 7, 7}, {3, 4, 17, 3}, {7, 3, 16, 1}, {5, 2, 45, 50}};
    for (int si = 0; si < 4; si++) {
        const int64_t *ne = shapes[si], N = ne[0], C = ne[1], S = ne[2] * ne[3], n = N * C * S;
        nr_tensor *x = RG(4, ne), *w = RG(1, &ne[1]), *b = RG(1, &ne[1]), *g = R(4, ne);
        /* an offset mean, so a tail lane counted as (0 - mean)^2 would show */
        for (int64_t i = 0; i < n; i++) nr_data(x)[i] = 3.0f + 2.0f * nr_data(x)[i];
        nr_tensor *y = NULL;
        nr_bn_params p = {1, 0.1, 1e-5, NR_ACT_NONE};
        CHECK(nr_batch_norm(&y, x, NULL, NULL, w, b, &p) == NR_OK && nr_backward(y, g) == NR_OK);
        double *ry = malloc((size_t)n * sizeof(double)), *rdx = malloc((size_t)n * sizeof(double));
        double rdw[4], rdb[4];
        bn_ref(x, w, b, 1, NULL, NULL, 0.1, 1e-5, ry);
        for (int64_t c = 0; c < C; c++) {
            double mean = 0, var = 0, M = (double)(N * S);
            for (int64_t m = 0; m < N; m++)
                for (int64_t i = 0; i < S; i++) mean += nr_data(x)[(m * C + c) * S + i];
            mean /= M;
            for (int64_t m = 0; m < N; m++)
                for (int64_t i = 0; i < S; i++) {
                    double d = nr_data(x)[(m * C + c) * S + i] - mean;
                    var += d * d;
                }
            double is = 1 / sqrt(var / M + 1e-5), sg = 0, sgx = 0;
            for (int64_t m = 0; m < N; m++)
                for (int64_t i = 0; i < S; i++) {
                    int64_t e = (m * C + c) * S + i;
                    sg += nr_data(g)[e];
                    sgx += nr_data(g)[e] * (nr_data(x)[e] - mean) * is;
                }
            rdw[c] = sgx, rdb[c] = sg;
            for (int64_t m = 0; m < N; m++)
                for (int64_t i = 0; i < S; i++) {
                    int64_t e = (m * C + c) * S + i;
                    double xh = (nr_data(x)[e] - mean) * is;
                    rdx[e] = nr_data(w)[c] * is * (nr_data(g)[e] - sg / M - xh * sgx / M);
                }
        }
        char what[80];
        snprintf(what, sizeof what, "bn [%lld,%lld,%lld,%lld] forward", (long long)ne[0],
                 (long long)ne[1], (long long)ne[2], (long long)ne[3]);
        CHECK_ERR(what, maxerr(y, ry), 2e-5);
        CHECK_ERR("bn planes dx", maxerr(x->grad, rdx), 1e-4);
        CHECK_ERR("bn planes dweight", maxerr(w->grad, rdw), 1e-4);
        CHECK_ERR("bn planes dbias", maxerr(b->grad, rdb), 1e-4);
        free(ry);
        free(rdx);
        nr_tensor_release(y);
        nr_tensor_release(x);
        nr_tensor_release(w);
        nr_tensor_release(b);
        nr_tensor_release(g);
    }
}

/* batch_norm with a fused relu / relu6 against relu(batch_norm(x)) and
   relu6(...) of separate ops: the same outputs, and the same gradients of
   x, weight and bias (the fused backward masks g by the output, strictly
   inside (0, 6) for relu6 as PyTorch's hardtanh_backward).  Weight 3 and
   bias 1 put outputs past 6 and below 0. Every shape path: S >= 16, S < 16,
   S == 1, affine or not. */
static void test_bn_act(void) {
    static const int64_t shapes[][4] = {{4, 3, 5, 5}, {3, 4, 2, 3}, {6, 5, 0, 0}};
    for (int si = 0; si < 3; si++)
        for (int affine = 0; affine < 2; affine++)
            for (int act = NR_ACT_RELU; act <= NR_ACT_RELU6; act++) {
                int nd = shapes[si][2] ? 4 : 2;
                nr_tensor *x = R(nd, shapes[si]), *g = R(nd, shapes[si]);
                int64_t C = shapes[si][1];
                nr_tensor *w = nr_tensor_full(1, SH(C), 3.0f), *b = nr_tensor_full(1, SH(C), 1.0f);
                nr_tensor *rm1 = nr_tensor_zeros(1, SH(C)), *rv1 = nr_tensor_full(1, SH(C), 1);
                nr_tensor *rm2 = nr_tensor_zeros(1, SH(C)), *rv2 = nr_tensor_full(1, SH(C), 1);
                nr_tensor *grads[2][3] = {{0}};
                nr_tensor *ys[2] = {0};
                for (int fused = 0; fused < 2; fused++) {
                    nr_tensor *xl = nr_tensor_clone(x), *wl = nr_tensor_clone(w), *bl = nr_tensor_clone(b);
                    xl->requires_grad = wl->requires_grad = bl->requires_grad = 1;
                    nr_bn_params p = {1, 0.1, 1e-5, fused ? act : NR_ACT_NONE};
                    nr_tensor *z = NULL, *y = NULL;
                    CHECK(nr_batch_norm(&z, xl, fused ? rm2 : rm1, fused ? rv2 : rv1,
                                        affine ? wl : NULL, affine ? bl : NULL, &p) == NR_OK);
                    if (fused) {
                        y = z;
                        z = NULL;
                    } else {
                        CHECK(nr_unary_op(&y, z, act == NR_ACT_RELU ? NR_U_RELU : NR_U_RELU6) == NR_OK);
                    }
                    CHECK(nr_backward(y, g) == NR_OK);
                    ys[fused] = y;
                    grads[fused][0] = xl;
                    grads[fused][1] = wl;
                    grads[fused][2] = bl;
                    nr_tensor_release(z);
                }
                double e = 0, eg = 0;
                int64_t n = nr_numel(x);
                int clamped = 0;
                for (int64_t i = 0; i < n; i++) {
                    float v = nr_data(ys[1])[i];
                    e = fmax(e, fabs(v - nr_data(ys[0])[i]));
                    clamped += v == 0.0f || (act == NR_ACT_RELU6 && v == 6.0f);
                    eg = fmax(eg, fabs(nr_data(grads[1][0]->grad)[i] - nr_data(grads[0][0]->grad)[i]));
                }
                CHECK(clamped > 0 && clamped < n);
                for (int k = 1; affine && k < 3; k++)
                    for (int64_t c = 0; c < C; c++)
                        eg = fmax(eg, fabs(nr_data(grads[1][k]->grad)[c] - nr_data(grads[0][k]->grad)[c]));
                char name[96];
                snprintf(name, sizeof name, "bn %s fused, %dd affine=%d forward",
                         act == NR_ACT_RELU ? "relu" : "relu6", nd, affine);
                CHECK_ERR(name, e, 1e-6);
                snprintf(name, sizeof name, "bn %s fused, %dd affine=%d gradients",
                         act == NR_ACT_RELU ? "relu" : "relu6", nd, affine);
                CHECK_ERR(name, eg, 1e-5);
                for (int64_t c = 0; c < C; c++)
                    CHECK(nr_data(rm1)[c] == nr_data(rm2)[c] && nr_data(rv1)[c] == nr_data(rv2)[c]);
                for (int f = 0; f < 2; f++) {
                    nr_tensor_release(ys[f]);
                    for (int k = 0; k < 3; k++) nr_tensor_release(grads[f][k]);
                }
                nr_tensor *tensors[] = {x, g, w, b, rm1, rv1, rm2, rv2};
                for (int k = 0; k < 8; k++) nr_tensor_release(tensors[k]);
            }
    nr_bn_params bad = {1, 0.1, 1e-5, 7};
    nr_tensor *x = R(2, SH(4, 3)), *y = NULL;
    CHECK(nr_batch_norm(&y, x, NULL, NULL, NULL, NULL, &bad) == NR_EUSAGE && y == NULL);
    CHECK(strstr(nr_lasterror(), "batch_norm") && strstr(nr_lasterror(), "activation"));
    nr_tensor_release(x);
}

/* ------------------------------------------------------------ softmax */

typedef struct {
    int dim, logmode;
} sm_ctx;

static nr_status sm_f(nr_tensor **out, nr_tensor **in, void *ctx) {
    sm_ctx *c = ctx;
    return c->logmode ? nr_log_softmax(out, in[0], c->dim) : nr_softmax(out, in[0], c->dim);
}

static void sm_ref(const nr_tensor *x, int dim, int logmode, double *y) {
    int64_t O = 1, K = x->ne[dim], I = 1;
    for (int i = 0; i < dim; i++) O *= x->ne[i];
    for (int i = dim + 1; i < x->ndim; i++) I *= x->ne[i];
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < I; i++) {
            double mx = -INFINITY, s = 0;
            for (int64_t k = 0; k < K; k++) mx = fmax(mx, get(x, (o * K + k) * I + i));
            for (int64_t k = 0; k < K; k++) s += exp(get(x, (o * K + k) * I + i) - mx);
            for (int64_t k = 0; k < K; k++) {
                double v = get(x, (o * K + k) * I + i) - mx - log(s);
                y[(o * K + k) * I + i] = logmode ? v : exp(v);
            }
        }
}

static void test_softmax(void) {
    /* hand: [0,0,ln 2] -> [.25,.25,.5]; [1,1,1] -> 1/3 each; large values stay finite */
    nr_tensor *x = T(2, SH(3, 3), (float[]){0, 0, logf(2), 1, 1, 1, 1000, 0, -1000});
    nr_tensor *y = NULL;
    CHECK(nr_softmax(&y, x, 1) == NR_OK);
    const double e[] = {.25, .25, .5, 1. / 3, 1. / 3, 1. / 3, 1, 0, 0};
    CHECK_ERR("softmax hand", maxerr(y, e), 1e-6);
    nr_tensor_release(y);
    CHECK(nr_log_softmax(&y, x, 1) == NR_OK);
    CHECK_NEAR(nr_data(y)[2], -log(2), 1e-6);
    CHECK_NEAR(nr_data(y)[3], -log(3), 1e-6);
    CHECK_NEAR(nr_data(y)[7], -1000, 1e-6);
    CHECK_NEAR(nr_data(y)[8], -2000, 1e-6);
    nr_tensor_release(y);
    nr_tensor_release(x);

    char name[64];
    for (int logmode = 0; logmode < 2; logmode++) {
        for (int dim = 0; dim < 3; dim++) {
            x = RG(3, SH(3, 4, 5));
            double ref[60];
            sm_ctx c = {dim, logmode};
            CHECK(sm_f(&y, &x, &c) == NR_OK);
            sm_ref(x, dim, logmode, ref);
            snprintf(name, sizeof name, "%s dim %d", logmode ? "log_softmax" : "softmax", dim);
            CHECK_ERR(name, maxerr(y, ref), 1e-6);
            nr_tensor_release(y);
            gradcheck(name, sm_f, 1, &x, &c);
            nr_tensor_release(x);
        }
        /* inner size above one column block, and a non-contiguous input */
        x = R(3, SH(2, 3, 300));
        double *ref = malloc(1800 * sizeof(double));
        sm_ctx c = {1, logmode};
        CHECK(sm_f(&y, &x, &c) == NR_OK);
        sm_ref(x, 1, logmode, ref);
        CHECK_ERR("softmax wide inner", maxerr(y, ref), 1e-6);
        nr_tensor_release(y);
        nr_tensor *xt = NULL;
        CHECK(nr_transpose(&xt, x, 1, 2) == NR_OK);
        nr_tensor *xtc = nr_tensor_clone(xt);
        CHECK(sm_f(&y, &xt, &c) == NR_OK);
        sm_ref(xtc, 1, logmode, ref);
        CHECK_ERR("softmax non-contiguous", maxerr(y, ref), 1e-6);
        nr_tensor_release(y);
        free(ref);
        nr_tensor_release(xt);
        nr_tensor_release(xtc);
        nr_tensor_release(x);
    }
    x = R(2, SH(2, 3));
    y = (nr_tensor *)1;
    CHECK(nr_softmax(&y, x, 2) == NR_EUSAGE && y == NULL);
    CHECK(strstr(nr_lasterror(), "softmax") != NULL);
    nr_tensor_release(x);
}

/* ------------------------------------------------------ cross entropy */

typedef struct {
    nr_tensor *t;
    double ls;
} ce_ctx;

static nr_status ce_f(nr_tensor **out, nr_tensor **in, void *ctx) {
    ce_ctx *c = ctx;
    return nr_cross_entropy(out, in[0], c->t, c->ls);
}

static double ce_ref(const nr_tensor *z, const nr_tensor *t, double ls) {
    int64_t N = z->ne[0], K = z->ne[1];
    double tot = 0;
    for (int64_t i = 0; i < N; i++) {
        double mx = -INFINITY, s = 0, mlp = 0;
        for (int64_t k = 0; k < K; k++) mx = fmax(mx, get(z, i * K + k));
        for (int64_t k = 0; k < K; k++) s += exp(get(z, i * K + k) - mx);
        double lse = mx + log(s);
        for (int64_t k = 0; k < K; k++) mlp += (lse - get(z, i * K + k)) / K;
        int64_t ti = (int64_t)get(t, i);
        tot += (1 - ls) * (lse - get(z, i * K + ti)) + ls * mlp;
    }
    return tot / N;
}

static void test_cross_entropy(void) {
    /* row 0: z = [0,0,ln 2], p = [.25,.25,.5], target 2:
         nll = ln 2, mean_k(-log p) = (ln 4 + ln 4 + ln 2)/3 = 5 ln2 / 3
       row 1: z = [1,1,1], p = 1/3, target 0: nll = ln 3, smooth term = ln 3
       loss = mean(0.9 * nll + 0.1 * smooth) */
    nr_tensor *z = T(2, SH(2, 3), (float[]){0, 0, logf(2), 1, 1, 1});
    z->requires_grad = 1;
    nr_tensor *t = T(1, SH(2), (float[]){2, 0});
    nr_tensor *y = NULL;
    CHECK(nr_cross_entropy(&y, z, t, 0.1) == NR_OK);
    CHECK(y->ndim == 0);
    double l0 = 0.9 * log(2) + 0.1 * (5 * log(2) / 3), l1 = log(3);
    CHECK_NEAR(nr_data(y)[0], (l0 + l1) / 2, 1e-6);
    CHECK_NEAR(nr_data(y)[0], 0.9189846, 1e-6); /* the same number, spelled out */
    /* d loss / d z = (p - 0.9 onehot - 0.1/3) / N */
    CHECK(nr_backward(y, NULL) == NR_OK);
    nr_tensor_release(y);
    const double g[] = {(.25 - .1 / 3) / 2, (.25 - .1 / 3) / 2, (.5 - .9 - .1 / 3) / 2,
                        (1. / 3 - .9 - .1 / 3) / 2, (1. / 3 - .1 / 3) / 2, (1. / 3 - .1 / 3) / 2};
    CHECK_ERR("cross_entropy hand grad", maxerr(z->grad, g), 1e-6);
    /* without smoothing */
    CHECK(nr_cross_entropy(&y, z, t, 0.0) == NR_OK);
    CHECK_NEAR(nr_data(y)[0], (log(2) + log(3)) / 2, 1e-6);
    nr_tensor_release(y);
    nr_tensor_release(z);
    nr_tensor_release(t);

    const double lss[] = {0.0, 0.1, 0.5};
    for (int i = 0; i < 3; i++) {
        z = RG(2, SH(5, 4));
        t = T(1, SH(5), (float[]){0, 3, 1, 3, 2});
        ce_ctx c = {t, lss[i]};
        CHECK(ce_f(&y, &z, &c) == NR_OK);
        CHECK_NEAR(nr_data(y)[0], ce_ref(z, t, lss[i]), 1e-6);
        nr_tensor_release(y);
        gradcheck(i == 0 ? "cross_entropy" : "cross_entropy smoothed", ce_f, 1, &z, &c);
        nr_tensor_release(z);
        nr_tensor_release(t);
    }
    /* errors name the function and the value */
    z = R(2, SH(2, 3));
    t = T(1, SH(2), (float[]){0, 3});
    y = (nr_tensor *)1;
    CHECK(nr_cross_entropy(&y, z, t, 0) == NR_EUSAGE && y == NULL);
    CHECK(strstr(nr_lasterror(), "cross_entropy") && strstr(nr_lasterror(), "3") &&
          strstr(nr_lasterror(), "range"));
    nr_data(t)[1] = 1.5f;
    CHECK(nr_cross_entropy(&y, z, t, 0) == NR_EUSAGE && y == NULL);
    CHECK(strstr(nr_lasterror(), "cross_entropy") && strstr(nr_lasterror(), "1.5") &&
          strstr(nr_lasterror(), "integer"));
    nr_data(t)[1] = -1;
    CHECK(nr_cross_entropy(&y, z, t, 0) == NR_EUSAGE);
    CHECK(strstr(nr_lasterror(), "-1") != NULL);
    nr_data(t)[1] = 1;
    CHECK(nr_cross_entropy(&y, z, t, 1.5) == NR_EUSAGE);
    nr_tensor *t3 = T(1, SH(3), (float[]){0, 1, 2});
    CHECK(nr_cross_entropy(&y, z, t3, 0) == NR_ESHAPE && y == NULL);
    nr_tensor_release(t3);
    nr_tensor_release(z);
    nr_tensor_release(t);
}

/* ----------------------------------------------------- matmul, linear */

static nr_status mm_f(nr_tensor **out, nr_tensor **in, void *ctx) {
    return nr_matmul(out, in[0], in[1]);
}

/* reference: a as [anb?nb:1, m, k], b as [bnb?nb:1, k, n] */
static void mm_ref(const nr_tensor *a, const nr_tensor *b, int64_t nb, int ab, int bb,
                   int64_t m, int64_t k, int64_t n, double *y) {
    for (int64_t q = 0; q < nb; q++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t l = 0; l < k; l++)
                    s += (double)get(a, (ab ? q : 0) * m * k + i * k + l) *
                         get(b, (bb ? q : 0) * k * n + l * n + j);
                y[(q * m + i) * n + j] = s;
            }
}

static void mm_case(int and, const int64_t *ane, int bnd, const int64_t *bne, int64_t nb,
                    int ab, int bb, int64_t m, int64_t k, int64_t n, int ond, const int64_t *one) {
    char name[96], s1[NR_SHAPEBUF], s2[NR_SHAPEBUF];
    nr_tensor *in[2] = {RG(and, ane), RG(bnd, bne)};
    snprintf(name, sizeof name, "matmul %s x %s", nr_shape_str(in[0], s1), nr_shape_str(in[1], s2));
    nr_tensor *y = NULL;
    CHECK(mm_f(&y, in, NULL) == NR_OK);
    int shape_ok = y->ndim == ond;
    for (int i = 0; shape_ok && i < ond; i++) shape_ok = y->ne[i] == one[i];
    if (!shape_ok) fprintf(stderr, "  (%s: result shape %s)\n", name, nr_shape_str(y, s1));
    CHECK(shape_ok);
    double *ref = malloc((size_t)(nb * m * n + 1) * sizeof(double));
    mm_ref(in[0], in[1], nb, ab, bb, m, k, n, ref);
    CHECK_ERR(name, maxerr(y, ref), 1e-5);
    free(ref);
    nr_tensor_release(y);
    gradcheck(name, mm_f, 2, in, NULL);
    nr_tensor_release(in[0]);
    nr_tensor_release(in[1]);
}

static nr_status lin_f(nr_tensor **out, nr_tensor **in, void *ctx) {
    return nr_linear(out, in[0], in[1], in[2]);
}

static void lin_case(int xnd, const int64_t *xne, int64_t O, int bias) {
    char name[96], s1[NR_SHAPEBUF];
    int64_t I = xne[xnd - 1], M = 1;
    for (int i = 0; i < xnd - 1; i++) M *= xne[i];
    nr_tensor *in[3] = {RG(xnd, xne), RG(2, SH(O, I)), bias ? RG(1, SH(O)) : NULL};
    snprintf(name, sizeof name, "linear %s -> %lld bias=%d", nr_shape_str(in[0], s1),
             (long long)O, bias);
    nr_tensor *y = NULL;
    CHECK(lin_f(&y, in, NULL) == NR_OK);
    CHECK(y->ndim == xnd && y->ne[xnd - 1] == O);
    double *ref = malloc((size_t)(M * O) * sizeof(double));
    for (int64_t r = 0; r < M; r++)
        for (int64_t o = 0; o < O; o++) {
            double s = bias ? get(in[2], o) : 0;
            for (int64_t i = 0; i < I; i++) s += (double)get(in[0], r * I + i) * get(in[1], o * I + i);
            ref[r * O + o] = s;
        }
    CHECK_ERR(name, maxerr(y, ref), 1e-5);
    free(ref);
    nr_tensor_release(y);
    gradcheck(name, lin_f, 3, in, NULL);
    for (int i = 0; i < 3; i++) nr_tensor_release(in[i]);
}

static void test_matmul(void) {
    /* hand: [[1,2],[3,4]] x [[5,6],[7,8]] = [[19,22],[43,50]] */
    nr_tensor *a = T(2, SH(2, 2), (float[]){1, 2, 3, 4}), *b = T(2, SH(2, 2), (float[]){5, 6, 7, 8});
    nr_tensor *y = NULL;
    CHECK(nr_matmul(&y, a, b) == NR_OK);
    CHECK(nr_data(y)[0] == 19 && nr_data(y)[1] == 22 && nr_data(y)[2] == 43 && nr_data(y)[3] == 50);
    nr_tensor_release(y);
    /* a^T (a non-contiguous view) x b = [[1,3],[2,4]] x b = [[26,30],[38,44]] */
    nr_tensor *at = NULL;
    CHECK(nr_transpose(&at, a, 0, 1) == NR_OK && !nr_is_contiguous(at));
    CHECK(nr_matmul(&y, at, b) == NR_OK);
    CHECK(nr_data(y)[0] == 26 && nr_data(y)[1] == 30 && nr_data(y)[2] == 38 && nr_data(y)[3] == 44);
    nr_tensor_release(y);
    /* gradient through a transposed leaf view */
    at->requires_grad = 1;
    nr_tensor *in[2] = {at, b};
    b->requires_grad = 1;
    gradcheck("matmul transposed view", mm_f, 2, in, NULL);
    nr_tensor_release(at);
    nr_tensor_release(a);
    nr_tensor_release(b);

    mm_case(2, SH(3, 4), 2, SH(4, 5), 1, 0, 0, 3, 4, 5, 2, SH(3, 5));
    mm_case(3, SH(2, 3, 4), 3, SH(2, 4, 5), 2, 1, 1, 3, 4, 5, 3, SH(2, 3, 5));
    mm_case(3, SH(2, 3, 4), 2, SH(4, 5), 2, 1, 0, 3, 4, 5, 3, SH(2, 3, 5));
    mm_case(2, SH(3, 4), 3, SH(2, 4, 5), 2, 0, 1, 3, 4, 5, 3, SH(2, 3, 5));
    mm_case(4, SH(2, 2, 3, 4), 4, SH(2, 2, 4, 2), 4, 1, 1, 3, 4, 2, 4, SH(2, 2, 3, 2));
    mm_case(3, SH(1, 3, 4), 3, SH(2, 4, 5), 2, 0, 1, 3, 4, 5, 3, SH(2, 3, 5));
    mm_case(1, SH(4), 2, SH(4, 5), 1, 0, 0, 1, 4, 5, 1, SH(5));
    mm_case(2, SH(3, 4), 1, SH(4), 1, 0, 0, 3, 4, 1, 1, SH(3));
    mm_case(1, SH(4), 1, SH(4), 1, 0, 0, 1, 4, 1, 0, SH(0));
    mm_case(3, SH(2, 3, 4), 1, SH(4), 2, 1, 0, 3, 4, 1, 2, SH(2, 3));
    mm_case(1, SH(4), 3, SH(2, 4, 5), 2, 0, 1, 1, 4, 5, 2, SH(2, 5));
    /* k = 0: zeros */
    a = R(2, SH(3, 0));
    b = R(2, SH(0, 2));
    CHECK(nr_matmul(&y, a, b) == NR_OK && y->ne[0] == 3 && y->ne[1] == 2);
    int zero = 1;
    for (int i = 0; i < 6; i++) zero &= nr_data(y)[i] == 0;
    CHECK(zero);
    nr_tensor_release(y);
    nr_tensor_release(a);
    nr_tensor_release(b);
    /* errors */
    a = R(2, SH(32, 64));
    b = R(2, SH(128, 10));
    y = (nr_tensor *)1;
    CHECK(nr_matmul(&y, a, b) == NR_ESHAPE && y == NULL);
    CHECK(strcmp(nr_lasterror(), "matmul: inner dims differ: [32,64] x [128,10]") == 0);
    nr_tensor *w = R(2, SH(10, 128));
    CHECK(nr_linear(&y, a, w, NULL) == NR_ESHAPE && y == NULL);
    CHECK(strstr(nr_lasterror(), "linear") && strstr(nr_lasterror(), "[32,64]") &&
          strstr(nr_lasterror(), "[10,128]"));
    nr_tensor *bb = R(1, SH(7));
    nr_tensor_release(w);
    w = R(2, SH(10, 64));
    CHECK(nr_linear(&y, a, w, bb) == NR_ESHAPE && y == NULL);
    CHECK(strstr(nr_lasterror(), "linear") && strstr(nr_lasterror(), "[7]"));
    nr_tensor *a3 = R(3, SH(2, 3, 4)), *b3 = R(3, SH(5, 4, 2));
    CHECK(nr_matmul(&y, a3, b3) == NR_ESHAPE && y == NULL);
    CHECK(strstr(nr_lasterror(), "[2,3,4]") && strstr(nr_lasterror(), "[5,4,2]"));
    nr_tensor_release(a3);
    nr_tensor_release(b3);
    nr_tensor_release(bb);
    nr_tensor_release(w);
    nr_tensor_release(a);
    nr_tensor_release(b);

    lin_case(2, SH(5, 4), 3, 1);
    lin_case(2, SH(5, 4), 3, 0);
    lin_case(3, SH(2, 3, 4), 2, 1);
    lin_case(1, SH(4), 3, 1);
}

/* -------------------------------------------- bigger shapes, 1 vs 2 threads */

typedef struct {
    nr_tensor *y, *g[3];
} run_out;

static void free_run(run_out *r) {
    nr_tensor_release(r->y);
    for (int i = 0; i < 3; i++) nr_tensor_release(r->g[i]);
}

/* runs f on in with nth threads, backward with G; keeps output and grads */
static run_out run_with(int nth, fwd_fn f, int nin, nr_tensor **in, void *ctx, nr_tensor *G) {
    run_out r = {0};
    nr_set_num_threads(nth);
    for (int i = 0; i < nin; i++)
        if (in[i]) {
            nr_tensor_release(in[i]->grad);
            in[i]->grad = NULL;
        }
    nr_tensor *y = NULL;
    NR_ASSERT(f(&y, in, ctx) == NR_OK);
    r.y = nr_tensor_clone(y);
    NR_ASSERT(nr_backward(y, G) == NR_OK);
    nr_tensor_release(y);
    for (int i = 0; i < nin; i++)
        if (in[i] && in[i]->grad) {
            r.g[i] = in[i]->grad;
            in[i]->grad = NULL;
        }
    nr_set_num_threads(2);
    return r;
}

static int same(const nr_tensor *a, const nr_tensor *b) {
    if (!a || !b) return a == b;
    return nr_same_shape(a, b) &&
           memcmp(nr_data(a), nr_data(b), (size_t)nr_numel(a) * sizeof(float)) == 0;
}

static void threads_case(const char *name, fwd_fn f, int nin, nr_tensor **in, void *ctx) {
    nr_tensor *y = NULL;
    NR_ASSERT(f(&y, in, ctx) == NR_OK);
    nr_tensor *G = nr_tensor_randn(y->ndim, y->ne);
    nr_tensor_release(y);
    run_out r1 = run_with(1, f, nin, in, ctx, G), r2 = run_with(2, f, nin, in, ctx, G);
    int ok = same(r1.y, r2.y);
    for (int i = 0; i < 3; i++) ok &= same(r1.g[i], r2.g[i]);
    if (ok) check_pass++;
    else {
        check_fail++;
        fprintf(stderr, "FAIL %s: results differ between 1 and 2 threads\n", name);
    }
    free_run(&r1);
    free_run(&r2);
    nr_tensor_release(G);
}

static void test_threads(void) {
    {
        nr_tensor *in[2] = {RG(2, SH(300, 200)), RG(2, SH(200, 300))};
        nr_tensor *y = NULL;
        CHECK(nr_matmul(&y, in[0], in[1]) == NR_OK);
        double *ref = malloc(300 * 300 * sizeof(double));
        mm_ref(in[0], in[1], 1, 0, 0, 300, 200, 300, ref);
        /* K = 200 float products per output: partial sums of magnitude ~14
           round by ~1e-6 per add, so near-zero outputs can be 1e-5 off
           (1e-5 failed on one draw of the inputs) */
        CHECK_ERR("matmul 300x200x300", maxerr(y, ref), 5e-5);
        free(ref);
        nr_tensor_release(y);
        threads_case("matmul big", mm_f, 2, in, NULL);
        nr_tensor_release(in[0]);
        nr_tensor_release(in[1]);
    }
    {
        nr_tensor *in[2] = {RG(3, SH(6, 100, 64)), RG(3, SH(6, 64, 120))};
        threads_case("matmul batched", mm_f, 2, in, NULL);
        nr_tensor_release(in[1]);
        in[1] = RG(2, SH(64, 700));
        threads_case("matmul folded", mm_f, 2, in, NULL);
        nr_tensor_release(in[0]);
        nr_tensor_release(in[1]);
        nr_tensor *in2[2] = {RG(2, SH(200, 64)), RG(3, SH(8, 64, 200))};
        threads_case("matmul broadcast a", mm_f, 2, in2, NULL);
        nr_tensor *y = NULL, *G = NULL;
        /* the reduced gradient of the broadcast side vs a naive sum */
        nr_tensor_release(in2[0]->grad);
        in2[0]->grad = NULL;
        CHECK(nr_matmul(&y, in2[0], in2[1]) == NR_OK);
        G = nr_tensor_randn(y->ndim, y->ne);
        CHECK(nr_backward(y, G) == NR_OK);
        double *ref = calloc(200 * 64, sizeof(double));
        for (int q = 0; q < 8; q++)
            for (int i = 0; i < 200; i++)
                for (int l = 0; l < 64; l++) {
                    double s = 0;
                    for (int j = 0; j < 200; j++)
                        s += (double)nr_data(G)[(q * 200 + i) * 200 + j] *
                             nr_data(in2[1])[(q * 64 + l) * 200 + j];
                    ref[i * 64 + l] += s;
                }
        CHECK_ERR("matmul broadcast grad", maxerr(in2[0]->grad, ref), 1e-4);
        free(ref);
        nr_tensor_release(y);
        nr_tensor_release(G);
        nr_tensor_release(in2[0]);
        nr_tensor_release(in2[1]);
    }
    {
        nr_tensor *in[3] = {RG(2, SH(512, 256)), RG(2, SH(128, 256)), RG(1, SH(128))};
        threads_case("linear big", lin_f, 3, in, NULL);
        for (int i = 0; i < 3; i++) nr_tensor_release(in[i]);
    }
    {
        nr_tensor *in[3] = {RG(4, SH(16, 32, 16, 16)), RG(1, SH(32)), RG(1, SH(32))};
        bn_ctx c = {{1, 0.1, 1e-5, NR_ACT_NONE}, NULL, NULL};
        nr_tensor *y = NULL;
        CHECK(bn_f(&y, in, &c) == NR_OK);
        int64_t n = nr_numel(in[0]);
        double *ref = malloc(n * sizeof(double));
        bn_ref(in[0], in[1], in[2], 1, NULL, NULL, 0.1, 1e-5, ref);
        CHECK_ERR("batch_norm big", maxerr(y, ref), 2e-5);
        free(ref);
        nr_tensor_release(y);
        threads_case("batch_norm 4d train", bn_f, 3, in, &c);
        c.rm = R(1, SH(32));
        c.rv = nr_tensor_full(1, SH(32), 2.0f);
        c.p.training = 0;
        threads_case("batch_norm 4d eval", bn_f, 3, in, &c);
        nr_tensor_release(c.rm);
        nr_tensor_release(c.rv);
        for (int i = 0; i < 3; i++) nr_tensor_release(in[i]);
        nr_tensor *in2[3] = {RG(2, SH(4096, 64)), RG(1, SH(64)), RG(1, SH(64))};
        bn_ctx c2 = {{1, 0.1, 1e-5, NR_ACT_NONE}, NULL, NULL};
        threads_case("batch_norm 2d train", bn_f, 3, in2, &c2);
        for (int i = 0; i < 3; i++) nr_tensor_release(in2[i]);
    }
    {
        nr_tensor *x = RG(2, SH(64, 1000));
        sm_ctx c = {1, 0};
        threads_case("softmax rows", sm_f, 1, &x, &c);
        c.logmode = 1;
        threads_case("log_softmax rows", sm_f, 1, &x, &c);
        nr_tensor_release(x);
        x = RG(3, SH(8, 50, 300));
        threads_case("log_softmax cols", sm_f, 1, &x, &c);
        c.logmode = 0;
        threads_case("softmax cols", sm_f, 1, &x, &c);
        nr_tensor_release(x);
    }
    {
        nr_tensor *z = RG(2, SH(512, 100));
        nr_tensor *t = nr_tensor_empty(1, SH(512));
        for (int i = 0; i < 512; i++) nr_data(t)[i] = (float)((i * 37) % 100);
        ce_ctx c = {t, 0.1};
        nr_tensor *y = NULL;
        CHECK(ce_f(&y, &z, &c) == NR_OK);
        CHECK_NEAR(nr_data(y)[0], ce_ref(z, t, 0.1), 1e-6);
        nr_tensor_release(y);
        threads_case("cross_entropy", ce_f, 1, &z, &c);
        nr_tensor_release(z);
        nr_tensor_release(t);
    }
}

int main(void) {
    nr_runtime_init(2);
    nr_manual_seed(1234);
    size_t live0 = nr_live_bytes();
    test_bn();
    test_bn_planes();
    test_bn_act();
    test_softmax();
    test_cross_entropy();
    test_matmul();
    test_threads();
    CHECK(nr_live_bytes() == live0); /* nothing leaked */
    DONE();
}
