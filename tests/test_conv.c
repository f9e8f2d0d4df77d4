/* test_conv.c -- conv2d and the pooling ops against naive double-precision
   references: forward, all gradients (analytical references, plus central
   finite differences on a few cases), PyTorch's shape rules, error messages,
   non-contiguous inputs, and bit-identical results with 1 and 2 threads. */
#include "check.h"
#include "nasrt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- helpers */

static double max_rel_err(const float *a, const double *b, int64_t n) {
    double scale = 1e-30, e = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (int64_t i = 0; i < n; i++) e = fmax(e, fabs((double)a[i] - b[i]));
    return e / fmax(scale, 1.0);
}

static int expect_close(const char *what, const char *cfg, const float *a, const double *b,
                        int64_t n, double tol) {
    double e = max_rel_err(a, b, n);
    if (!(e <= tol)) {
        fprintf(stderr, "FAIL %s %s: max error %g (tol %g)\n", what, cfg, e, tol);
        return 0;
    }
    return 1;
}

static nr_tensor *randn4(int64_t a, int64_t b, int64_t c, int64_t d) {
    return nr_tensor_randn(4, (int64_t[]){a, b, c, d});
}

static double *to_double(const nr_tensor *t) {
    int64_t n = nr_numel(t);
    double *d = malloc((size_t)(n ? n : 1) * sizeof *d);
    const float *s = nr_data(t);
    for (int64_t i = 0; i < n; i++) d[i] = s[i];
    return d;
}

/* ------------------------------------------------------- conv reference */

typedef struct {
    int64_t N, C, H, W, Co, kh, kw, s, p, d, G;
    int bias;
    int64_t sw, pw, dw; /* the width's stride, padding, dilation; 0: as s, p, d */
} ccfg;

static int64_t c_sw(const ccfg *c) { return c->sw ? c->sw : c->s; }
static int64_t c_pw(const ccfg *c) { return c->pw ? c->pw : c->p; }
static int64_t c_dw(const ccfg *c) { return c->dw ? c->dw : c->d; }

static int64_t cout_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
    return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

static void cfg_str(const ccfg *c, char *buf) {
    snprintf(buf, 200,
             "N=%lld C=%lld %lldx%lld Co=%lld k=%lldx%lld s=%lld,%lld p=%lld,%lld d=%lld,%lld g=%lld b=%d",
             (long long)c->N, (long long)c->C, (long long)c->H, (long long)c->W,
             (long long)c->Co, (long long)c->kh, (long long)c->kw, (long long)c->s,
             (long long)c_sw(c), (long long)c->p, (long long)c_pw(c), (long long)c->d,
             (long long)c_dw(c), (long long)c->G, c->bias);
}

/* y = conv(x, w, b), and given gy: gx, gw, gb (all double). */
static void conv_ref(const ccfg *c, const double *x, const double *w, const double *b,
                     double *y, const double *gy, double *gx, double *gw, double *gb) {
    int64_t OH = cout_size(c->H, c->kh, c->s, c->p, c->d);
    int64_t OW = cout_size(c->W, c->kw, c_sw(c), c_pw(c), c_dw(c));
    int64_t Cg = c->C / c->G, Cog = c->Co / c->G;
    for (int64_t n = 0; n < c->N; n++)
        for (int64_t co = 0; co < c->Co; co++) {
            int64_t g = co / Cog;
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    int64_t yi = ((n * c->Co + co) * OH + oh) * OW + ow;
                    double acc = b ? b[co] : 0.0;
                    double gv = gy ? gy[yi] : 0.0;
                    if (gb) gb[co] += gv;
                    for (int64_t ci = 0; ci < Cg; ci++)
                        for (int64_t i = 0; i < c->kh; i++)
                            for (int64_t j = 0; j < c->kw; j++) {
                                int64_t ih = oh * c->s - c->p + i * c->d;
                                int64_t iw = ow * c_sw(c) - c_pw(c) + j * c_dw(c);
                                if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
                                int64_t xi = ((n * c->C + g * Cg + ci) * c->H + ih) * c->W + iw;
                                int64_t wi = ((co * Cg + ci) * c->kh + i) * c->kw + j;
                                acc += w[wi] * x[xi];
                                if (gx) gx[xi] += w[wi] * gv;
                                if (gw) gw[wi] += x[xi] * gv;
                            }
                    if (y) y[yi] = acc;
                }
        }
}

/* One configuration: forward and the three gradients vs the reference. */
static void check_conv(const ccfg *c) {
    char cs[200];
    cfg_str(c, cs);
    nr_tensor *x = randn4(c->N, c->C, c->H, c->W);
    nr_tensor *w = randn4(c->Co, c->C / c->G, c->kh, c->kw);
    nr_tensor *b = c->bias ? nr_tensor_randn(1, (int64_t[]){c->Co}) : NULL;
    x->requires_grad = w->requires_grad = 1;
    if (b) b->requires_grad = 1;
    nr_conv_params cp = {{c->s, c_sw(c)}, {c->p, c_pw(c)}, {c->d, c_dw(c)}, c->G};
    nr_tensor *y = NULL;
    nr_status st = nr_conv2d(&y, x, w, b, &cp);
    if (st != NR_OK) {
        fprintf(stderr, "FAIL conv2d %s: %s\n", cs, nr_lasterror());
        CHECK(st == NR_OK);
        goto out;
    }
    int64_t OH = cout_size(c->H, c->kh, c->s, c->p, c->d);
    int64_t OW = cout_size(c->W, c->kw, c_sw(c), c_pw(c), c_dw(c));
    CHECK(y->ndim == 4 && y->ne[0] == c->N && y->ne[1] == c->Co && y->ne[2] == OH &&
          y->ne[3] == OW);
    nr_tensor *gy = nr_tensor_randn(4, y->ne);
    double *xd = to_double(x), *wd = to_double(w), *bd = b ? to_double(b) : NULL;
    double *gyd = to_double(gy);
    int64_t ny = nr_numel(y), nx = nr_numel(x), nw = nr_numel(w);
    double *yr = calloc((size_t)ny, sizeof(double)), *gxr = calloc((size_t)nx, sizeof(double));
    double *gwr = calloc((size_t)nw, sizeof(double)), *gbr = calloc((size_t)c->Co, sizeof(double));
    conv_ref(c, xd, wd, bd, yr, gyd, gxr, gwr, gbr);
    CHECK(expect_close("conv2d forward", cs, nr_data(y), yr, ny, 2e-5));
    st = nr_backward(y, gy);
    CHECK(st == NR_OK);
    if (st == NR_OK) {
        CHECK(x->grad && expect_close("conv2d dX", cs, nr_data(x->grad), gxr, nx, 2e-5));
        CHECK(w->grad && expect_close("conv2d dW", cs, nr_data(w->grad), gwr, nw, 2e-5));
        if (b) CHECK(b->grad && expect_close("conv2d dB", cs, nr_data(b->grad), gbr, c->Co, 2e-5));
    }
    free(xd);
    free(wd);
    free(bd);
    free(gyd);
    free(yr);
    free(gxr);
    free(gwr);
    free(gbr);
    nr_tensor_release(gy);
out:
    nr_tensor_release(y);
    nr_tensor_release(x);
    nr_tensor_release(w);
    nr_tensor_release(b);
}

static uint32_t lcg = 12345;
static int64_t pick(int64_t n) {
    lcg = lcg * 1664525u + 1013904223u;
    return (int64_t)((lcg >> 8) % (uint32_t)n);
}

static void test_conv_configs(void) {
    int n = 0;
    /* a systematic sweep over the main axes */
    static const int64_t ks[] = {1, 3, 5}, ss[] = {1, 2}, ps[] = {0, 1, 2}, ds[] = {1, 2};
    for (int ki = 0; ki < 3; ki++)
        for (int si = 0; si < 2; si++)
            for (int pi = 0; pi < 3; pi++)
                for (int di = 0; di < 2; di++)
                    for (int gk = 0; gk < 3; gk++) {
                        ccfg c = {1 + pick(3), 4, 7 + pick(5), 6 + pick(6), 0, ks[ki], ks[ki],
                                  ss[si], ps[pi], ds[di], 1, (int)pick(2), 0, 0, 0};
                        if (gk == 0) { c.G = 1; c.Co = 5; }
                        if (gk == 1) { c.G = 2; c.Co = 6; }
                        if (gk == 2) { c.G = 4; c.Co = 4 * (1 + pick(2)); } /* depthwise */
                        if (c.H + 2 * c.p < c.d * (c.kh - 1) + 1 ||
                            c.W + 2 * c.p < c.d * (c.kw - 1) + 1)
                            continue;
                        check_conv(&c);
                        n++;
                    }
    /* specific shapes: 1x1 pointwise, wide rows (several 16-lane blocks),
       rectangular kernels, C=1 first layers, bigger channel counts */
    static const ccfg extra[] = {
        {2, 16, 9, 11, 24, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0},
        {3, 8, 5, 5, 8, 1, 1, 2, 0, 1, 1, 0, 0, 0, 0},
        {2, 8, 6, 7, 4, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
        {2, 3, 13, 37, 5, 3, 3, 1, 1, 1, 1, 1, 0, 0, 0},
        {2, 6, 17, 35, 6, 3, 3, 1, 1, 1, 6, 1, 0, 0, 0},
        {2, 6, 17, 35, 6, 3, 3, 2, 1, 1, 6, 0, 0, 0, 0},
        {2, 6, 17, 35, 6, 5, 5, 1, 2, 1, 6, 1, 0, 0, 0},
        {1, 6, 21, 33, 6, 3, 3, 1, 2, 2, 6, 1, 0, 0, 0},
        {1, 5, 19, 18, 5, 3, 3, 3, 2, 3, 5, 1, 0, 0, 0},
        {2, 4, 9, 10, 4, 2, 3, 1, 1, 1, 4, 1, 0, 0, 0},
        {2, 4, 9, 10, 6, 3, 2, 2, 1, 2, 2, 1, 0, 0, 0},
        {3, 1, 12, 12, 8, 3, 3, 1, 1, 1, 1, 1, 0, 0, 0},
        {2, 1, 12, 13, 4, 5, 5, 2, 2, 1, 1, 0, 0, 0, 0},
        {2, 32, 14, 14, 16, 3, 3, 1, 1, 1, 1, 1, 0, 0, 0},
        {2, 16, 14, 14, 32, 3, 3, 2, 1, 1, 1, 1, 0, 0, 0},
        {1, 8, 3, 3, 4, 3, 3, 1, 0, 1, 1, 1, 0, 0, 0},  /* output 1x1 */
        {1, 4, 1, 1, 4, 3, 3, 1, 1, 1, 1, 1, 0, 0, 0},  /* 1x1 input, padded */
        {1, 4, 1, 1, 4, 3, 3, 1, 1, 1, 4, 1, 0, 0, 0},
        {2, 4, 8, 8, 4, 7, 7, 1, 3, 1, 4, 1, 0, 0, 0},
        {2, 12, 10, 10, 12, 3, 3, 1, 1, 1, 3, 1, 0, 0, 0},
        /* the channel-vector kernels (channels multiples of 16, 32, 64) */
        {2, 16, 9, 11, 16, 3, 3, 1, 1, 1, 1, 1, 0, 0, 0},
        {2, 32, 7, 30, 32, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0},
        {1, 64, 6, 5, 64, 3, 3, 1, 1, 1, 1, 1, 0, 0, 0},
        {2, 16, 8, 8, 48, 3, 3, 1, 1, 1, 1, 1, 0, 0, 0},
        {2, 48, 9, 9, 16, 3, 3, 1, 2, 2, 1, 1, 0, 0, 0},
        {2, 32, 11, 13, 32, 3, 3, 2, 1, 1, 1, 1, 0, 0, 0},
        {1, 16, 12, 12, 32, 5, 5, 2, 2, 1, 1, 1, 0, 0, 0},
        {2, 32, 9, 10, 64, 3, 3, 1, 1, 1, 2, 1, 0, 0, 0},
        {2, 16, 10, 9, 16, 3, 3, 3, 1, 1, 1, 1, 0, 0, 0},
        {1, 16, 17, 17, 16, 5, 5, 1, 4, 2, 1, 0, 0, 0, 0},
        {1, 32, 5, 5, 16, 3, 3, 1, 3, 1, 1, 1, 0, 0, 0}, /* padding > d*(k-1): dX fallback */
        {1, 32, 30, 31, 16, 3, 3, 1, 1, 1, 1, 1, 0, 0, 0}, /* rows wider than a tile */
        /* anisotropic stride / padding / dilation / kernel */
        {2, 4, 9, 11, 6, 3, 3, 1, 1, 1, 1, 1, 2, 0, 0},
        {2, 4, 9, 11, 6, 3, 2, 2, 0, 1, 1, 1, 1, 1, 2},
        {2, 16, 10, 12, 32, 3, 5, 1, 1, 2, 1, 1, 1, 2, 1},
        {2, 6, 11, 9, 6, 3, 3, 2, 1, 1, 6, 1, 1, 0, 2},
        {2, 6, 11, 9, 12, 5, 3, 1, 2, 1, 6, 1, 2, 1, 0},
        {1, 8, 7, 9, 8, 1, 3, 1, 0, 1, 1, 1, 2, 1, 0},
        /* stride 3 depthwise, multiplier 2 */
        {2, 5, 16, 17, 10, 3, 3, 3, 1, 1, 5, 1, 0, 0, 0},
        /* depthwise on small planes (output rows <= 8, C a multiple of 16:
           16 channels per vector): kernels 3/5/7, strides 1-3, dilation,
           over-padding (strided dX), rectangular and anisotropic */
        {3, 16, 7, 7, 16, 3, 3, 1, 1, 1, 16, 1, 0, 0, 0},
        {2, 32, 7, 7, 32, 5, 5, 1, 2, 1, 32, 0, 0, 0, 0},
        {2, 48, 7, 7, 48, 7, 7, 1, 3, 1, 48, 1, 0, 0, 0},
        {2, 16, 14, 14, 16, 3, 3, 2, 1, 1, 16, 1, 0, 0, 0},
        {2, 16, 14, 13, 16, 7, 7, 2, 3, 1, 16, 0, 0, 0, 0},
        {2, 16, 7, 7, 16, 3, 3, 1, 2, 2, 16, 1, 0, 0, 0},
        {2, 16, 8, 8, 16, 5, 5, 1, 4, 2, 16, 0, 0, 0, 0},
        {2, 16, 5, 6, 16, 3, 3, 1, 3, 1, 16, 1, 0, 0, 0},
        {2, 16, 9, 4, 16, 3, 3, 3, 1, 1, 16, 1, 0, 0, 0},
        {1, 16, 1, 1, 16, 3, 3, 1, 1, 1, 16, 1, 0, 0, 0},
        {2, 32, 6, 7, 32, 5, 3, 1, 2, 1, 32, 1, 2, 1, 0},
        {2, 16, 10, 8, 16, 3, 3, 1, 1, 1, 16, 1, 0, 0, 2},
    };
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) {
        check_conv(&extra[i]);
        n++;
    }
    printf("conv2d: %d configurations\n", n);
}

/* Central differences of sum(conv(x,w,b) * gy) on the double reference
   checked against the op's gradients, for a few entries. */
static void test_conv_fd(void) {
    static const ccfg cs[] = {
        {2, 4, 6, 7, 6, 3, 3, 2, 1, 2, 2, 1, 0, 0, 0},
        {2, 3, 7, 6, 3, 3, 3, 1, 1, 1, 3, 1, 0, 0, 0},
        {1, 4, 5, 5, 4, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0},
    };
    for (size_t k = 0; k < sizeof cs / sizeof *cs; k++) {
        const ccfg *c = &cs[k];
        nr_tensor *x = randn4(c->N, c->C, c->H, c->W), *w = randn4(c->Co, c->C / c->G, c->kh, c->kw);
        nr_tensor *b = nr_tensor_randn(1, (int64_t[]){c->Co});
        x->requires_grad = w->requires_grad = b->requires_grad = 1;
        nr_conv_params cp = {{c->s, c->s}, {c->p, c->p}, {c->d, c->d}, c->G};
        nr_tensor *y = NULL;
        CHECK(nr_conv2d(&y, x, w, b, &cp) == NR_OK);
        if (!y) continue;
        nr_tensor *gy = nr_tensor_randn(4, y->ne);
        CHECK(nr_backward(y, gy) == NR_OK);
        int64_t ny = nr_numel(y);
        double *xd = to_double(x), *wd = to_double(w), *bd = to_double(b), *gyd = to_double(gy);
        double *yp = malloc((size_t)ny * sizeof(double)), *ym = malloc((size_t)ny * sizeof(double));
        double *tens[3] = {xd, wd, bd};
        nr_tensor *grads[3] = {x->grad, w->grad, b->grad};
        int64_t sizes[3] = {nr_numel(x), nr_numel(w), c->Co};
        double worst = 0;
        for (int t = 0; t < 3; t++) {
            for (int rep = 0; rep < 12; rep++) {
                int64_t i = pick(sizes[t]);
                double h = 1e-3, old = tens[t][i];
                tens[t][i] = old + h;
                conv_ref(c, xd, wd, bd, yp, NULL, NULL, NULL, NULL);
                tens[t][i] = old - h;
                conv_ref(c, xd, wd, bd, ym, NULL, NULL, NULL, NULL);
                tens[t][i] = old;
                double fd = 0;
                for (int64_t j = 0; j < ny; j++) fd += (yp[j] - ym[j]) * gyd[j];
                fd /= 2 * h;
                double e = fabs(fd - nr_data(grads[t])[i]) / (1 + fabs(fd));
                worst = fmax(worst, e);
            }
        }
        if (worst > 1e-4) fprintf(stderr, "FAIL conv2d finite differences case %zu: %g\n", k, worst);
        CHECK(worst <= 1e-4);
        free(xd);
        free(wd);
        free(bd);
        free(gyd);
        free(yp);
        free(ym);
        nr_tensor_release(gy);
        nr_tensor_release(y);
        nr_tensor_release(x);
        nr_tensor_release(w);
        nr_tensor_release(b);
    }
}

/* Gradients accumulate; only requested gradients are produced. */
static void test_conv_accumulate(void) {
    nr_tensor *x = randn4(2, 4, 6, 6), *w = randn4(4, 1, 3, 3), *w2 = randn4(5, 4, 3, 3);
    w->requires_grad = 1;
    w2->requires_grad = 1;
    nr_conv_params cp = {{1, 1}, {1, 1}, {1, 1}, 4}, cp2 = {{1, 1}, {1, 1}, {1, 1}, 1};
    for (int pass = 0; pass < 2; pass++) {
        nr_tensor *y = NULL, *y2 = NULL, *s = NULL, *s2 = NULL;
        CHECK(nr_conv2d(&y, x, w, NULL, &cp) == NR_OK);
        CHECK(nr_conv2d(&y2, x, w2, NULL, &cp2) == NR_OK);
        nr_tensor *g = nr_tensor_full(4, y->ne, 1.0f), *g2 = nr_tensor_full(4, y2->ne, 1.0f);
        CHECK(nr_backward(y, g) == NR_OK);
        CHECK(nr_backward(y2, g2) == NR_OK);
        CHECK(x->grad == NULL);
        nr_tensor_release(g);
        nr_tensor_release(g2);
        nr_tensor_release(y);
        nr_tensor_release(y2);
        nr_tensor_release(s);
        nr_tensor_release(s2);
    }
    /* after two passes the grads are exactly twice one pass */
    nr_tensor *gw = nr_tensor_clone(w->grad), *gw2 = nr_tensor_clone(w2->grad);
    nr_tensor_release(w->grad);
    nr_tensor_release(w2->grad);
    w->grad = w2->grad = NULL;
    nr_tensor *y = NULL, *y2 = NULL;
    CHECK(nr_conv2d(&y, x, w, NULL, &cp) == NR_OK);
    CHECK(nr_conv2d(&y2, x, w2, NULL, &cp2) == NR_OK);
    nr_tensor *g = nr_tensor_full(4, y->ne, 1.0f), *g2 = nr_tensor_full(4, y2->ne, 1.0f);
    CHECK(nr_backward(y, g) == NR_OK && nr_backward(y2, g2) == NR_OK);
    int ok = 1;
    for (int64_t i = 0; i < nr_numel(gw); i++) ok &= nr_data(gw)[i] == 2 * nr_data(w->grad)[i];
    for (int64_t i = 0; i < nr_numel(gw2); i++) ok &= nr_data(gw2)[i] == 2 * nr_data(w2->grad)[i];
    CHECK(ok);
    nr_tensor_release(g);
    nr_tensor_release(g2);
    nr_tensor_release(y);
    nr_tensor_release(y2);
    nr_tensor_release(gw);
    nr_tensor_release(gw2);
    nr_tensor_release(x);
    nr_tensor_release(w);
    nr_tensor_release(w2);
}

/* A transposed (non-contiguous) input: result and gradient flow through. */
static void test_conv_noncontig(void) {
    nr_tensor *x0 = randn4(2, 3, 9, 7); /* [N,C,W,H] */
    x0->requires_grad = 1;
    nr_tensor *xt = NULL;
    CHECK(nr_transpose(&xt, x0, 2, 3) == NR_OK); /* [2,3,7,9] view */
    if (!xt) return;
    CHECK(!nr_is_contiguous(xt));
    nr_tensor *xc = nr_tensor_clone(xt); /* same values, contiguous */
    nr_tensor *w = randn4(4, 3, 3, 3);
    nr_conv_params cp = {{1, 1}, {1, 1}, {1, 1}, 1};
    nr_tensor *y = NULL, *yc = NULL;
    CHECK(nr_conv2d(&y, xt, w, NULL, &cp) == NR_OK);
    CHECK(nr_conv2d(&yc, xc, w, NULL, &cp) == NR_OK);
    if (y && yc) {
        CHECK(memcmp(nr_data(y), nr_data(yc), (size_t)nr_numel(y) * 4) == 0);
        nr_tensor *g = nr_tensor_randn(4, y->ne);
        CHECK(nr_backward(y, g) == NR_OK);
        ccfg c = {2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0};
        double *xd = to_double(xc), *wd = to_double(w), *gd = to_double(g);
        double *gx = calloc((size_t)nr_numel(xc), sizeof(double));
        conv_ref(&c, xd, wd, NULL, NULL, gd, gx, NULL, NULL);
        /* x0->grad is [2,3,9,7]: element (n,c,a,b) is gx[n,c,b,a] */
        double *gxt = malloc((size_t)nr_numel(xc) * sizeof(double));
        for (int64_t n = 0; n < 6; n++)
            for (int64_t a = 0; a < 9; a++)
                for (int64_t bb = 0; bb < 7; bb++)
                    gxt[(n * 9 + a) * 7 + bb] = gx[(n * 7 + bb) * 9 + a];
        CHECK(x0->grad && expect_close("conv2d non-contiguous dX", "", nr_data(x0->grad), gxt,
                                       nr_numel(x0), 2e-5));
        free(xd);
        free(wd);
        free(gd);
        free(gx);
        free(gxt);
        nr_tensor_release(g);
    }
    nr_tensor_release(y);
    nr_tensor_release(yc);
    nr_tensor_release(xc);
    nr_tensor_release(xt);
    nr_tensor_release(w);
    nr_tensor_release(x0);
}

static void test_conv_3d_input(void) {
    nr_tensor *x = nr_tensor_randn(3, (int64_t[]){3, 8, 8}), *w = randn4(5, 3, 3, 3);
    nr_tensor *x4 = nr_tensor_clone(x);
    x4->ndim = 4;
    x4->ne[0] = 1, x4->ne[1] = 3, x4->ne[2] = 8, x4->ne[3] = 8;
    x4->st[0] = 192, x4->st[1] = 64, x4->st[2] = 8, x4->st[3] = 1;
    nr_conv_params cp = {{2, 2}, {1, 1}, {1, 1}, 1};
    nr_tensor *y = NULL, *y4 = NULL;
    CHECK(nr_conv2d(&y, x, w, NULL, &cp) == NR_OK);
    CHECK(nr_conv2d(&y4, x4, w, NULL, &cp) == NR_OK);
    CHECK(y && y->ndim == 3 && y->ne[0] == 5 && y->ne[1] == 4 && y->ne[2] == 4);
    if (y && y4) CHECK(memcmp(nr_data(y), nr_data(y4), 5 * 16 * 4) == 0);
    nr_tensor_release(y);
    nr_tensor_release(y4);
    nr_tensor_release(x);
    nr_tensor_release(x4);
    nr_tensor_release(w);
}

static void test_conv_errors(void) {
    nr_tensor *x = randn4(2, 3, 8, 8), *w = randn4(16, 16, 3, 3), *w3 = randn4(16, 3, 3, 3);
    nr_tensor *b5 = nr_tensor_randn(1, (int64_t[]){5}), *x2 = nr_tensor_randn(2, (int64_t[]){3, 3});
    nr_tensor *y = NULL;
    nr_conv_params cp = {{1, 1}, {0, 0}, {1, 1}, 1};
    CHECK(nr_conv2d(&y, x, w, NULL, &cp) == NR_ESHAPE && y == NULL);
    CHECK(strstr(nr_lasterror(), "conv2d") && strstr(nr_lasterror(), "[2,3,8,8]") &&
          strstr(nr_lasterror(), "[16,16,3,3]") && strstr(nr_lasterror(), "3 channels"));
    CHECK(nr_conv2d(&y, x, w3, b5, &cp) == NR_ESHAPE);
    CHECK(strstr(nr_lasterror(), "bias") && strstr(nr_lasterror(), "[5]"));
    CHECK(nr_conv2d(&y, x2, w3, NULL, &cp) == NR_ESHAPE);
    CHECK(strstr(nr_lasterror(), "[3,3]") != NULL);
    nr_conv_params bad = cp;
    bad.stride[0] = 0;
    CHECK(nr_conv2d(&y, x, w3, NULL, &bad) == NR_EUSAGE && strstr(nr_lasterror(), "stride"));
    bad = cp;
    bad.groups = 2;
    CHECK(nr_conv2d(&y, x, w3, NULL, &bad) == NR_ESHAPE && strstr(nr_lasterror(), "groups"));
    bad = cp;
    bad.groups = 0;
    CHECK(nr_conv2d(&y, x, w3, NULL, &bad) == NR_EUSAGE);
    bad = cp;
    bad.dilation[1] = 5; /* effective kernel 11 > 8 */
    CHECK(nr_conv2d(&y, x, w3, NULL, &bad) == NR_ESHAPE && strstr(nr_lasterror(), "smaller"));
    bad = cp;
    bad.padding[0] = -1;
    CHECK(nr_conv2d(&y, x, w3, NULL, &bad) == NR_EUSAGE && strstr(nr_lasterror(), "padding"));
    CHECK(y == NULL);
    nr_tensor_release(x);
    nr_tensor_release(w);
    nr_tensor_release(w3);
    nr_tensor_release(b5);
    nr_tensor_release(x2);
}

/* ------------------------------------------------------------- pooling */

typedef struct {
    int64_t N, C, H, W, k, s, p;
    int cip, ceil;
    int64_t kw, sw, pw; /* the width's kernel, stride, padding; 0: as k, s, p */
} pcfg;

static int64_t p_kw(const pcfg *c) { return c->kw ? c->kw : c->k; }
static int64_t p_sw(const pcfg *c) { return c->sw ? c->sw : c->s; }
static int64_t p_pw(const pcfg *c) { return c->pw ? c->pw : c->p; }

static int64_t pout(int64_t in, int64_t k, int64_t s, int64_t p, int ceil_mode) {
    int64_t num = in + 2 * p - k + (ceil_mode ? s - 1 : 0);
    int64_t o = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1;
    if (ceil_mode && (o - 1) * s >= in + p) o--;
    return o;
}

/* kind 0 max, 1 avg.  Computes y and gx for gy. */
static void pool_ref(int kind, const pcfg *c, const double *x, double *y, const double *gy,
                     double *gx) {
    int64_t OH = pout(c->H, c->k, c->s, c->p, c->ceil);
    int64_t OW = pout(c->W, p_kw(c), p_sw(c), p_pw(c), c->ceil);
    const int64_t kw = p_kw(c), sw = p_sw(c), pw = p_pw(c);
    for (int64_t pl = 0; pl < c->N * c->C; pl++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t yi = (pl * OH + oh) * OW + ow;
                double best = -INFINITY, sum = 0;
                int64_t bi = -1, cnt = 0, cntpad = 0;
                for (int64_t i = 0; i < c->k; i++)
                    for (int64_t j = 0; j < kw; j++) {
                        int64_t ih = oh * c->s - c->p + i, iw = ow * sw - pw + j;
                        /* count_include_pad counts positions inside the padded input */
                        if (ih < c->H + c->p && iw < c->W + pw) cntpad++;
                        if (ih < 0 || iw < 0 || ih >= c->H || iw >= c->W) continue;
                        int64_t xi = (pl * c->H + ih) * c->W + iw;
                        cnt++;
                        sum += x[xi];
                        if (x[xi] > best) {
                            best = x[xi];
                            bi = xi;
                        }
                    }
                if (kind == 0) {
                    y[yi] = best;
                    gx[bi] += gy[yi];
                } else {
                    double div = c->cip ? (double)cntpad : (double)cnt;
                    y[yi] = sum / div;
                    for (int64_t i = 0; i < c->k; i++)
                        for (int64_t j = 0; j < kw; j++) {
                            int64_t ih = oh * c->s - c->p + i, iw = ow * sw - pw + j;
                            if (ih < 0 || iw < 0 || ih >= c->H || iw >= c->W) continue;
                            gx[(pl * c->H + ih) * c->W + iw] += gy[yi] / div;
                        }
                }
            }
}

static void check_pool(int kind, const pcfg *c) {
    char cs[200];
    snprintf(cs, sizeof cs,
             "%s N=%lld C=%lld %lldx%lld k=%lld,%lld s=%lld,%lld p=%lld,%lld cip=%d ceil=%d",
             kind ? "avg" : "max", (long long)c->N, (long long)c->C, (long long)c->H,
             (long long)c->W, (long long)c->k, (long long)p_kw(c), (long long)c->s,
             (long long)p_sw(c), (long long)c->p, (long long)p_pw(c), c->cip, c->ceil);
    nr_tensor *x = randn4(c->N, c->C, c->H, c->W);
    x->requires_grad = 1;
    nr_pool_params pp = {{c->k, p_kw(c)}, {c->s, p_sw(c)}, {c->p, p_pw(c)}, c->cip, c->ceil};
    nr_tensor *y = NULL;
    nr_status st = kind ? nr_avg_pool2d(&y, x, &pp) : nr_max_pool2d(&y, x, &pp);
    if (st != NR_OK) {
        fprintf(stderr, "FAIL pool %s: %s\n", cs, nr_lasterror());
        CHECK(0);
        nr_tensor_release(x);
        return;
    }
    int64_t OH = pout(c->H, c->k, c->s, c->p, c->ceil);
    int64_t OW = pout(c->W, p_kw(c), p_sw(c), p_pw(c), c->ceil);
    CHECK(y->ne[2] == OH && y->ne[3] == OW);
    nr_tensor *gy = nr_tensor_randn(4, y->ne);
    int64_t nx = nr_numel(x), ny = nr_numel(y);
    double *xd = to_double(x), *gyd = to_double(gy), *yr = calloc((size_t)ny, sizeof(double));
    double *gxr = calloc((size_t)nx, sizeof(double));
    pool_ref(kind, c, xd, yr, gyd, gxr);
    CHECK(expect_close("pool forward", cs, nr_data(y), yr, ny, 1e-6));
    /* without grad mode max pooling tracks no argmax (its own loop) */
    nr_tensor *y0 = NULL;
    int was = nr_set_grad_enabled(0);
    st = kind ? nr_avg_pool2d(&y0, x, &pp) : nr_max_pool2d(&y0, x, &pp);
    nr_set_grad_enabled(was);
    CHECK(st == NR_OK && y0 && expect_close("pool forward, no grad", cs, nr_data(y0), yr, ny, 1e-6));
    nr_tensor_release(y0);
    CHECK(nr_backward(y, gy) == NR_OK);
    CHECK(x->grad && expect_close("pool backward", cs, nr_data(x->grad), gxr, nx, 1e-6));
    /* x pooled twice: the second backward adds to the gradient the first wrote */
    nr_tensor *x2 = nr_tensor_clone(x), *ya = NULL, *yb = NULL, *ys = NULL;
    x2->requires_grad = 1;
    st = kind ? nr_avg_pool2d(&ya, x2, &pp) : nr_max_pool2d(&ya, x2, &pp);
    if (st == NR_OK) st = kind ? nr_avg_pool2d(&yb, x2, &pp) : nr_max_pool2d(&yb, x2, &pp);
    if (st == NR_OK) st = nr_add(&ys, ya, yb);
    CHECK(st == NR_OK && nr_backward(ys, gy) == NR_OK && x2->grad);
    if (x2->grad) {
        for (int64_t i = 0; i < nx; i++) gxr[i] *= 2;
        CHECK(expect_close("pool backward, twice", cs, nr_data(x2->grad), gxr, nx, 1e-6));
    }
    nr_tensor_release(ys);
    nr_tensor_release(yb);
    nr_tensor_release(ya);
    nr_tensor_release(x2);
    free(xd);
    free(gyd);
    free(yr);
    free(gxr);
    nr_tensor_release(gy);
    nr_tensor_release(y);
    nr_tensor_release(x);
}

static void test_pools(void) {
    int n = 0;
    for (int kind = 0; kind < 2; kind++)
        for (int64_t k = 1; k <= 4; k++)
            for (int64_t s = 1; s <= 3; s++)
                for (int64_t p = 0; p <= k / 2; p++)
                    for (int cip = 0; cip < 2; cip++)
                        for (int ceil = 0; ceil < 2; ceil++) {
                            if (kind == 0 && cip) continue;
                            pcfg c = {1 + pick(2), 1 + pick(3), 5 + pick(6), 4 + pick(7), k, s, p,
                                      cip, ceil, 0, 0, 0};
                            if (pout(c.H, k, s, p, ceil) < 1 || pout(c.W, k, s, p, ceil) < 1)
                                continue;
                            check_pool(kind, &c);
                            n++;
                        }
    /* rectangular windows, wide rows (several 16-lane blocks) */
    static const pcfg rect[] = {
        {2, 3, 9, 40, 3, 2, 1, 1, 0, 2, 3, 1}, {2, 3, 9, 40, 3, 2, 1, 0, 1, 2, 3, 1},
        {1, 2, 11, 37, 2, 1, 1, 0, 1, 4, 3, 2}, {1, 2, 12, 35, 4, 3, 2, 1, 1, 3, 1, 1},
        {2, 2, 33, 7, 3, 3, 0, 0, 0, 5, 2, 2},
        {1, 2, 20, 21, 17, 1, 0, 0, 0, 17, 2, 3}, /* 289 taps: int32 argmax indices */
        /* unit column stride (the separable max and sums): strided rows, wide
           rows, ceil mode, a 1-wide and a 1-tall window */
        {2, 3, 11, 40, 3, 2, 1, 0, 1, 5, 1, 2}, {1, 2, 28, 28, 3, 1, 1, 0, 0, 3, 1, 1},
        {2, 2, 7, 7, 3, 1, 1, 1, 0, 3, 1, 1}, {1, 3, 13, 35, 4, 3, 2, 1, 1, 2, 1, 1},
        {1, 2, 9, 33, 1, 1, 0, 0, 0, 3, 1, 1}, {1, 2, 9, 20, 3, 2, 0, 0, 0, 1, 1, 0},
    };
    for (int kind = 0; kind < 2; kind++)
        for (size_t i = 0; i < sizeof rect / sizeof *rect; i++) {
            check_pool(kind, &rect[i]);
            n++;
        }
    printf("pooling: %d configurations\n", n);
    /* PyTorch's output sizes, ceil_mode's last-window rule */
    CHECK(pout(5, 2, 2, 0, 1) == 3 && pout(5, 2, 2, 0, 0) == 2);
    CHECK(pout(6, 3, 2, 1, 1) == 4 && pout(6, 3, 2, 1, 0) == 3);
    CHECK(pout(4, 2, 2, 1, 1) == 3); /* a window starting in the right pad is dropped */
    nr_tensor *x = randn4(1, 1, 4, 4), *y = NULL;
    nr_pool_params pp = {{2, 2}, {2, 2}, {1, 1}, 1, 1};
    CHECK(nr_max_pool2d(&y, x, &pp) == NR_OK && y->ne[2] == 3 && y->ne[3] == 3);
    nr_tensor_release(y);
    /* errors */
    y = NULL;
    nr_pool_params bad = {{3, 3}, {1, 1}, {2, 2}, 1, 0};
    CHECK(nr_max_pool2d(&y, x, &bad) == NR_EUSAGE && strstr(nr_lasterror(), "max_pool2d") &&
          strstr(nr_lasterror(), "half"));
    CHECK(nr_avg_pool2d(&y, x, &bad) == NR_EUSAGE && strstr(nr_lasterror(), "avg_pool2d"));
    nr_pool_params big = {{5, 5}, {1, 1}, {0, 0}, 1, 0};
    CHECK(nr_max_pool2d(&y, x, &big) == NR_ESHAPE && strstr(nr_lasterror(), "[1,1,4,4]"));
    nr_pool_params zs = {{2, 2}, {0, 0}, {0, 0}, 1, 0};
    CHECK(nr_avg_pool2d(&y, x, &zs) == NR_EUSAGE && strstr(nr_lasterror(), "stride"));
    CHECK(y == NULL);
    CHECK(nr_adaptive_avg_pool2d(&y, x, 0, 2) == NR_EUSAGE && y == NULL);
    nr_tensor_release(x);
}

static void test_max_pool_neg_inf_pad(void) {
    /* all-negative input: padding must not win (it is -inf, not 0) */
    nr_tensor *x = nr_tensor_full(4, (int64_t[]){1, 1, 3, 3}, -5.0f), *y = NULL;
    nr_pool_params pp = {{3, 3}, {1, 1}, {1, 1}, 1, 0};
    CHECK(nr_max_pool2d(&y, x, &pp) == NR_OK);
    int ok = 1;
    for (int i = 0; i < 9; i++) ok &= nr_data(y)[i] == -5.0f;
    CHECK(ok);
    nr_tensor_release(y);
    /* and avg with count_include_pad=true divides by 9 at the corner */
    CHECK(nr_avg_pool2d(&y, x, &pp) == NR_OK);
    CHECK_NEAR(nr_data(y)[0], -5.0 * 4 / 9, 1e-6);
    nr_tensor_release(y);
    pp.count_include_pad = 0;
    CHECK(nr_avg_pool2d(&y, x, &pp) == NR_OK);
    CHECK_NEAR(nr_data(y)[0], -5.0, 1e-6);
    nr_tensor_release(y);
    nr_tensor_release(x);
}

/* A window of -inf only: the gradient goes to its first in-bounds element
   (PyTorch's rule), with taps (3x3) and with plane indices (17x17). */
static void test_max_pool_all_neg_inf(void) {
    for (int big = 0; big < 2; big++) {
        int64_t k = big ? 17 : 3, p = big ? 8 : 1;
        nr_tensor *x = nr_tensor_full(4, (int64_t[]){1, 1, 3, 3}, -INFINITY), *y = NULL;
        x->requires_grad = 1;
        nr_pool_params pp = {{k, k}, {1, 1}, {p, p}, 1, 0};
        CHECK(nr_max_pool2d(&y, x, &pp) == NR_OK);
        if (!y) return;
        CHECK(y->ne[2] == 3 && y->ne[3] == 3 && nr_data(y)[4] == -INFINITY);
        nr_tensor *g = nr_tensor_full(4, y->ne, 1.0f);
        CHECK(nr_backward(y, g) == NR_OK);
        const float *gx = nr_data(x->grad);
        /* 3x3 windows: firsts (0,0) x4, (0,1) x2, (1,0) x2, (1,1); 17x17: all (0,0) */
        static const float want3[9] = {4, 2, 0, 2, 1, 0, 0, 0, 0};
        static const float want17[9] = {9, 0, 0, 0, 0, 0, 0, 0, 0};
        int ok = 1;
        for (int i = 0; i < 9; i++) ok &= gx[i] == (big ? want17 : want3)[i];
        CHECK(ok);
        nr_tensor_release(g);
        nr_tensor_release(y);
        nr_tensor_release(x);
    }
}

/* PyTorch's max: NaN wins (and propagates), ties go to the first element */
static void test_max_pool_nan_ties(void) {
    nr_tensor *x = nr_tensor_zeros(4, (int64_t[]){1, 1, 2, 4}), *y = NULL;
    x->requires_grad = 1;
    float *d = nr_data(x);
    d[0] = 1, d[1] = 1, d[2] = NAN, d[3] = 5; /* row 0 */
    d[4] = 1, d[5] = 0, d[6] = 3, d[7] = 7;   /* row 1 */
    nr_pool_params pp = {{2, 2}, {2, 2}, {0, 0}, 1, 0};
    CHECK(nr_max_pool2d(&y, x, &pp) == NR_OK);
    if (!y) return;
    CHECK(nr_data(y)[0] == 1.0f && isnan(nr_data(y)[1]));
    nr_tensor *g = nr_tensor_full(4, y->ne, 1.0f);
    CHECK(nr_backward(y, g) == NR_OK);
    const float *gx = nr_data(x->grad);
    CHECK(gx[0] == 1 && gx[1] == 0 && gx[4] == 0); /* first of the tied 1s */
    CHECK(gx[2] == 1 && gx[3] == 0 && gx[7] == 0); /* the NaN */
    nr_tensor_release(g);
    nr_tensor_release(y);
    nr_tensor_release(x);
}

/* The same rules through the unit-column-stride path (3x3, stride 1):
   a window's first maximum in row-major order, across rows and columns,
   and its last NaN */
static void test_max_pool_nan_ties_s1(void) {
    nr_tensor *x = nr_tensor_zeros(4, (int64_t[]){1, 1, 4, 8}), *y = NULL;
    x->requires_grad = 1;
    float *d = nr_data(x); /* index r*8 + c */
    d[0] = 2, d[1] = 1, d[2] = 2, d[8] = 2;  /* ties along a row and down a column */
    d[20] = NAN, d[22] = NAN, d[29] = NAN;   /* two NaNs in row 2, one in row 3 */
    d[31] = 9;
    nr_pool_params pp = {{3, 3}, {1, 1}, {1, 1}, 1, 0};
    CHECK(nr_max_pool2d(&y, x, &pp) == NR_OK);
    if (!y) return;
    const float *o = nr_data(y);
    CHECK(o[0] == 2 && o[1] == 2 && o[8] == 2 && o[3] == 2 && o[24] == 0);
    CHECK(isnan(o[21]) && isnan(o[13]) && isnan(o[31]));
    nr_tensor *g = nr_tensor_zeros(4, y->ne);
    float *gd = nr_data(g);
    gd[0] = 1, gd[1] = 10, gd[8] = 100, gd[21] = 1e3f, gd[13] = 1e4f, gd[31] = 1e5f;
    gd[3] = 1e6f, gd[24] = 3;
    CHECK(nr_backward(y, g) == NR_OK);
    const float *gx = nr_data(x->grad);
    CHECK(gx[0] == 111 && gx[8] == 0 && gx[2] == 1e6f); /* the first of the tied 2s */
    CHECK(gx[29] == 1e3f && gx[20] == 0);  /* rows 2 and 3 both NaN: row 3's */
    CHECK(gx[22] == 1e4f + 1e5f);          /* (1,5): 20 and 22 in one row: 22 */
    CHECK(gx[16] == 3 && gx[31] == 0);     /* a window of zeros: its first */
    nr_tensor_release(g);
    nr_tensor_release(y);
    nr_tensor_release(x);
}

static void test_adaptive(void) {
    static const int64_t cases[][4] = {{7, 7, 1, 1}, {7, 9, 3, 4}, {10, 10, 5, 5}, {5, 6, 7, 8},
                                       {13, 11, 2, 3}, {4, 4, 4, 4}, {6, 3, 4, 2}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        int64_t H = cases[k][0], W = cases[k][1], OH = cases[k][2], OW = cases[k][3];
        nr_tensor *x = randn4(2, 3, H, W), *y = NULL;
        x->requires_grad = 1;
        CHECK(nr_adaptive_avg_pool2d(&y, x, OH, OW) == NR_OK);
        if (!y) {
            nr_tensor_release(x);
            continue;
        }
        CHECK(y->ne[2] == OH && y->ne[3] == OW);
        nr_tensor *gy = nr_tensor_randn(4, y->ne);
        double *xd = to_double(x), *gyd = to_double(gy);
        double *yr = calloc((size_t)nr_numel(y), sizeof(double));
        double *gxr = calloc((size_t)nr_numel(x), sizeof(double));
        for (int64_t pl = 0; pl < 6; pl++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    int64_t hs = (int64_t)floor((double)oh * H / OH);
                    int64_t he = (int64_t)ceil((double)(oh + 1) * H / OH);
                    int64_t ws = (int64_t)floor((double)ow * W / OW);
                    int64_t we = (int64_t)ceil((double)(ow + 1) * W / OW);
                    double sum = 0, cnt = (double)((he - hs) * (we - ws));
                    int64_t yi = (pl * OH + oh) * OW + ow;
                    for (int64_t i = hs; i < he; i++)
                        for (int64_t j = ws; j < we; j++) {
                            sum += xd[(pl * H + i) * W + j];
                            gxr[(pl * H + i) * W + j] += gyd[yi] / cnt;
                        }
                    yr[yi] = sum / cnt;
                }
        CHECK(expect_close("adaptive_avg_pool2d forward", "", nr_data(y), yr, nr_numel(y), 1e-6));
        CHECK(nr_backward(y, gy) == NR_OK);
        CHECK(x->grad && expect_close("adaptive_avg_pool2d backward", "", nr_data(x->grad), gxr,
                                      nr_numel(x), 1e-6));
        free(xd);
        free(gyd);
        free(yr);
        free(gxr);
        nr_tensor_release(gy);
        nr_tensor_release(y);
        nr_tensor_release(x);
    }
}

/* ------------------------------------------------------------ sep_conv2d */

/* sep_conv2d (relu -> depthwise -> 1x1 in one op; the fused engine runs it
   image by image, the small planes go through the unfused path) against
   the three ops one by one, for each subset of the gradients a step asks
   for (the DARTS alpha step wants dx only, the weight step all), and the
   fused results with 1 and 2 threads bit for bit.  The batches are not
   multiples of the 16 image blocks of the backward. */
typedef struct {
    int64_t N, C, H, W, Co, k, s, p, d;
    int relu;
} scfg;

typedef struct {
    float *v[4];
    int64_t n[4];
} sep_out;

/* mask bit i: input i (x, wd, wp) requires grad; sep: the fused op */
static sep_out run_sep(const scfg *c, unsigned mask, int sep, uint64_t seed) {
    nr_manual_seed(seed);
    nr_tensor *in[3] = {randn4(c->N, c->C, c->H, c->W), randn4(c->C, 1, c->k, c->k),
                        randn4(c->Co, c->C, 1, 1)};
    for (int i = 0; i < 3; i++) in[i]->requires_grad = (mask >> i) & 1;
    nr_conv_params dp = {{c->s, c->s}, {c->p, c->p}, {c->d, c->d}, c->C};
    nr_conv_params pp = {{1, 1}, {0, 0}, {1, 1}, 1};
    nr_tensor *y = NULL, *r = NULL, *t = NULL;
    sep_out o = {0};
    nr_status st;
    if (sep) {
        st = nr_sep_conv2d(&y, in[0], in[1], in[2], &dp, c->relu);
    } else {
        st = c->relu ? nr_unary_op(&r, in[0], NR_U_RELU) : NR_OK;
        if (st == NR_OK) st = nr_conv2d(&t, r ? r : in[0], in[1], NULL, &dp);
        if (st == NR_OK) st = nr_conv2d(&y, t, in[2], NULL, &pp);
    }
    nr_tensor *g = st == NR_OK ? nr_tensor_randn(4, y->ne) : NULL;
    if (g && nr_backward(y, g) == NR_OK) {
        for (int i = 0; i < 4; i++) {
            const nr_tensor *src = i == 0 ? y : in[i - 1]->grad;
            if (!src) continue;
            o.n[i] = nr_numel(src);
            o.v[i] = malloc((size_t)o.n[i] * 4);
            memcpy(o.v[i], nr_data(src), (size_t)o.n[i] * 4);
        }
    }
    nr_tensor_release(g);
    nr_tensor_release(y);
    nr_tensor_release(t);
    nr_tensor_release(r);
    for (int i = 0; i < 3; i++) nr_tensor_release(in[i]);
    return o;
}

static void free_sep(sep_out *o) {
    for (int i = 0; i < 4; i++) free(o->v[i]);
}

static void test_sep_conv(void) {
    static const scfg cs[] = {
        {19, 8, 14, 14, 8, 3, 1, 1, 1, 1},   {19, 16, 28, 28, 16, 5, 1, 2, 1, 1},
        {17, 12, 13, 11, 20, 3, 2, 1, 1, 1}, {18, 8, 16, 16, 8, 5, 2, 4, 2, 1},
        {5, 4, 9, 9, 6, 3, 1, 2, 2, 0},      {3, 6, 10, 10, 4, 3, 3, 1, 1, 1},
        /* the channel-last engine (channels a multiple of 16, output rows
           not a multiple of 16): gather and scatter dX, one and two
           channel groups; the 28x28 case above goes there too, 16x16 with
           16 channels stays on the row engine */
        {7, 32, 14, 14, 32, 5, 1, 4, 2, 1},  {11, 16, 16, 16, 16, 3, 1, 1, 1, 1},
        {21, 16, 7, 7, 16, 3, 1, 1, 1, 1},   {9, 32, 7, 7, 24, 5, 1, 2, 1, 1},
        {7, 32, 7, 7, 32, 5, 1, 4, 2, 0},    {19, 16, 14, 14, 16, 3, 2, 1, 1, 1},
        {5, 16, 9, 9, 8, 5, 2, 2, 1, 1},     {3, 16, 4, 4, 16, 3, 1, 1, 1, 1},
    };
    static const char *what[4] = {"y", "dx", "dWd", "dWp"};
    static const unsigned masks[] = {7, 1, 4, 6, 3};
    for (size_t k = 0; k < sizeof cs / sizeof *cs; k++) {
        const scfg *c = &cs[k];
        char cfg[160];
        snprintf(cfg, sizeof cfg, "N%lld C%lld %lldx%lld Co%lld k%lld s%lld p%lld d%lld relu%d",
                 (long long)c->N, (long long)c->C, (long long)c->H, (long long)c->W,
                 (long long)c->Co, (long long)c->k, (long long)c->s, (long long)c->p,
                 (long long)c->d, c->relu);
        for (size_t m = 0; m < sizeof masks / sizeof *masks; m++) {
            /* the fused op first, and a seed of its own per mask: freed
               blocks come back, and an output element the fused op failed
               to write must not still hold the right value from before */
            const uint64_t seed = 500 + 8 * k + m;
            sep_out a = run_sep(c, masks[m], 1, seed), ref = run_sep(c, masks[m], 0, seed);
            CHECK(ref.v[0] && a.v[0]);
            for (int i = 0; i < 4; i++) {
                int want = i == 0 || ((masks[m] >> (i - 1)) & 1);
                CHECK(!want == !a.v[i] && a.n[i] == ref.n[i]);
                if (!a.v[i] || !ref.v[i] || a.n[i] != ref.n[i]) continue;
                double *rd = malloc((size_t)ref.n[i] * sizeof(double));
                for (int64_t j = 0; j < ref.n[i]; j++) rd[j] = ref.v[i][j];
                char nm[64];
                snprintf(nm, sizeof nm, "sep_conv2d %s (grads %u)", what[i], masks[m]);
                CHECK(expect_close(nm, cfg, a.v[i], rd, a.n[i], 1e-5));
                free(rd);
            }
            free_sep(&ref);
            free_sep(&a);
        }
        /* the fused engine: the same bits with 1 and 2 threads */
        nr_set_num_threads(1);
        sep_out t1 = run_sep(c, 7, 1, 900 + k);
        nr_set_num_threads(2);
        sep_out t2 = run_sep(c, 7, 1, 900 + k);
        int same = 1;
        for (int i = 0; i < 4; i++)
            same = same && t1.v[i] && t2.v[i] && !memcmp(t1.v[i], t2.v[i], (size_t)t1.n[i] * 4);
        if (!same) fprintf(stderr, "FAIL sep_conv2d differs between 1 and 2 threads: %s\n", cfg);
        CHECK(same);
        free_sep(&t1);
        free_sep(&t2);
    }
}

/* --------------------------------------------------- thread invariance */

typedef struct {
    float *y, *gx, *gw, *gb;
    int64_t ny, nx, nw, nb;
} run_out;

static run_out run_conv(const ccfg *c, uint64_t seed) {
    nr_manual_seed(seed);
    nr_tensor *x = randn4(c->N, c->C, c->H, c->W), *w = randn4(c->Co, c->C / c->G, c->kh, c->kw);
    nr_tensor *b = nr_tensor_randn(1, (int64_t[]){c->Co});
    x->requires_grad = w->requires_grad = b->requires_grad = 1;
    nr_conv_params cp = {{c->s, c->s}, {c->p, c->p}, {c->d, c->d}, c->G};
    nr_tensor *y = NULL;
    run_out r = {0};
    if (nr_conv2d(&y, x, w, b, &cp) == NR_OK) {
        nr_tensor *g = nr_tensor_randn(4, y->ne);
        if (nr_backward(y, g) == NR_OK) {
            r.ny = nr_numel(y), r.nx = nr_numel(x), r.nw = nr_numel(w), r.nb = c->Co;
            r.y = malloc((size_t)r.ny * 4), r.gx = malloc((size_t)r.nx * 4);
            r.gw = malloc((size_t)r.nw * 4), r.gb = malloc((size_t)r.nb * 4);
            memcpy(r.y, nr_data(y), (size_t)r.ny * 4);
            memcpy(r.gx, nr_data(x->grad), (size_t)r.nx * 4);
            memcpy(r.gw, nr_data(w->grad), (size_t)r.nw * 4);
            memcpy(r.gb, nr_data(b->grad), (size_t)r.nb * 4);
        }
        nr_tensor_release(g);
    }
    nr_tensor_release(y);
    nr_tensor_release(x);
    nr_tensor_release(w);
    nr_tensor_release(b);
    return r;
}

static void free_run(run_out *r) {
    free(r->y);
    free(r->gx);
    free(r->gw);
    free(r->gb);
}

static void test_threads(void) {
    static const ccfg cs[] = {
        {19, 16, 14, 14, 24, 3, 3, 1, 1, 1, 1, 1, 0, 0, 0},
        {8, 16, 14, 14, 32, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0},
        {9, 16, 13, 15, 16, 3, 3, 2, 1, 1, 2, 1, 0, 0, 0},
        {11, 16, 14, 14, 16, 3, 3, 1, 1, 1, 16, 1, 0, 0, 0},
        {7, 8, 15, 15, 16, 5, 5, 2, 2, 1, 8, 1, 0, 0, 0},
        {5, 16, 14, 14, 16, 3, 3, 1, 2, 2, 16, 1, 0, 0, 0},
        {19, 32, 7, 7, 32, 5, 5, 1, 2, 1, 32, 1, 0, 0, 0},
        {7, 16, 14, 14, 16, 3, 3, 2, 1, 1, 16, 1, 0, 0, 0},
    };
    for (size_t k = 0; k < sizeof cs / sizeof *cs; k++) {
        nr_set_num_threads(1);
        run_out a = run_conv(&cs[k], 99 + k);
        nr_set_num_threads(2);
        run_out b = run_conv(&cs[k], 99 + k);
        int same = a.y && b.y && !memcmp(a.y, b.y, (size_t)a.ny * 4) &&
                   !memcmp(a.gx, b.gx, (size_t)a.nx * 4) && !memcmp(a.gw, b.gw, (size_t)a.nw * 4) &&
                   !memcmp(a.gb, b.gb, (size_t)a.nb * 4);
        if (!same) {
            char s[200];
            cfg_str(&cs[k], s);
            fprintf(stderr, "FAIL conv2d results differ between 1 and 2 threads: %s\n", s);
        }
        CHECK(same);
        free_run(&a);
        free_run(&b);
    }
    /* pooling */
    for (int kind = 0; kind < 3; kind++) {
        float *res[2][2] = {{0}};
        int64_t n[2] = {0};
        for (int t = 0; t < 2; t++) {
            nr_set_num_threads(t + 1);
            nr_manual_seed(7);
            nr_tensor *x = randn4(6, 16, 15, 15), *y = NULL;
            x->requires_grad = 1;
            nr_pool_params pp = {{3, 3}, {2, 2}, {1, 1}, 0, 1};
            if (kind == 0) nr_max_pool2d(&y, x, &pp);
            if (kind == 1) nr_avg_pool2d(&y, x, &pp);
            if (kind == 2) nr_adaptive_avg_pool2d(&y, x, 4, 3);
            if (!y) {
                nr_tensor_release(x);
                continue;
            }
            nr_tensor *g = nr_tensor_randn(4, y->ne);
            nr_backward(y, g);
            n[0] = nr_numel(y), n[1] = nr_numel(x);
            res[t][0] = malloc((size_t)n[0] * 4), res[t][1] = malloc((size_t)n[1] * 4);
            memcpy(res[t][0], nr_data(y), (size_t)n[0] * 4);
            memcpy(res[t][1], nr_data(x->grad), (size_t)n[1] * 4);
            nr_tensor_release(g);
            nr_tensor_release(y);
            nr_tensor_release(x);
        }
        CHECK(res[0][0] && res[1][0] && !memcmp(res[0][0], res[1][0], (size_t)n[0] * 4) &&
              !memcmp(res[0][1], res[1][1], (size_t)n[1] * 4));
        for (int t = 0; t < 2; t++) free(res[t][0]), free(res[t][1]);
    }
    nr_set_num_threads(2);
}

static void test_no_grad(void) {
    nr_tensor *x = randn4(2, 4, 8, 8), *w = randn4(4, 4, 3, 3), *y = NULL;
    w->requires_grad = 1;
    int old = nr_set_grad_enabled(0);
    nr_conv_params cp = {{1, 1}, {1, 1}, {1, 1}, 1};
    CHECK(nr_conv2d(&y, x, w, NULL, &cp) == NR_OK && y->node == NULL);
    nr_tensor_release(y);
    x->requires_grad = 1;
    nr_pool_params pp = {{2, 2}, {2, 2}, {0, 0}, 1, 0};
    y = NULL;
    CHECK(nr_max_pool2d(&y, x, &pp) == NR_OK && y->node == NULL);
    nr_tensor_release(y);
    nr_set_grad_enabled(old);
    nr_tensor_release(x);
    nr_tensor_release(w);
}

int main(void) {
    nr_runtime_init(2);
    nr_manual_seed(1);
    size_t live0 = nr_live_bytes();
    test_conv_configs();
    test_conv_fd();
    test_conv_accumulate();
    test_conv_noncontig();
    test_conv_3d_input();
    test_conv_errors();
    test_pools();
    test_max_pool_neg_inf_pad();
    test_max_pool_nan_ties();
    test_max_pool_nan_ties_s1();
    test_max_pool_all_neg_inf();
    test_adaptive();
    test_threads();
    test_sep_conv();
    test_no_grad();
    CHECK(nr_live_bytes() == live0); /* nothing leaked */
    DONE();
}
