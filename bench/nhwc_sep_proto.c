/*
** nhwc_sep_proto.c -- a measurement, not part of the runtime: how fast one
** SepConv half of the DARTS step (ReLU, depthwise KxK, pointwise 16x16,
** then its batch-norm statistics; and its backward) runs when activations are channels-last
** (NHWC, C = 16: one zmm per pixel) and the statistics are taken in the
** kernel's epilogue instead of a pass of their own.  It is the kernel a
** fused channels-last engine would be built on (issue 6, the sgemm-floor
** line); the runtime's engine today is NCHW, op by op.
**
**   ./build/nhwc_sep_proto [K]      (K = 3 or 5; 1 thread; AVX-512 only)
**
** The backward is timed twice: on NHWC tensors, and on NCHW tensors with
** each image transposed into channel-last buffers on its way in and out
** (what the same kernel would give inside today's NCHW engine).
**
** Compare with the runtime on the same shape, [64,16,28,28]:
**   ./build/nasrt bench/sep_segment.lua
** Every kernel is checked against plain loops before it is timed.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__AVX512F__)
#include <immintrin.h>

#include "../runtime/ops/vec.h" /* tr16 */

enum { N = 64, H = 28, W = 28, C = 16 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* t = the depthwise conv of relu(image xn) at (h, w), zero padding K/2 */
static void reference_dw(int K, const float *xn, const float *wd, int h, int w, float *t) {
    const int P = K / 2;
    for (int c = 0; c < C; c++) t[c] = 0;
    for (int kh = 0; kh < K; kh++)
        for (int kw = 0; kw < K; kw++) {
            int ih = h + kh - P, iw = w + kw - P;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            for (int c = 0; c < C; c++) {
                float v = xn[(ih * W + iw) * C + c];
                t[c] += (v > 0 ? v : 0) * wd[(kh * K + kw) * C + c];
            }
        }
}

/* y = pw(dw(relu(x))) for images [n0, n1), NHWC; st[0..16) += sum y,
   st[16..32) += sum y^2 per channel.  wd: [K*K][C]; wpT: [ci][co]. */
static void reference(int K, int n0, int n1, const float *x, const float *wd, const float *wpT,
                      float *y, double *st) {
    for (int n = n0; n < n1; n++)
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++) {
                float t[C];
                reference_dw(K, x + (size_t)n * H * W * C, wd, h, w, t);
                for (int co = 0; co < C; co++) {
                    float o = 0;
                    for (int ci = 0; ci < C; ci++) o += t[ci] * wpT[ci * C + co];
                    y[((n * H + h) * W + w) * C + co] = o;
                    st[co] += o;
                    st[C + co] += (double)o * o;
                }
            }
}


/* Backward of y = pw(dw(relu(x))) for images [n0, n1) given dy: dx
   (written), dwd and dwpT (added to, in double). */
static void reference_bwd(int K, int n0, int n1, const float *x, const float *wd, const float *wpT,
                          const float *dy, float *dx, double *dwd, double *dwpT) {
    const int P = K / 2;
    float *dt = calloc((size_t)H * W * C, sizeof(float));
    if (!dt) exit(1);
    for (int n = n0; n < n1; n++) {
        const float *xn = x + (size_t)n * H * W * C, *gn = dy + (size_t)n * H * W * C;
        for (int p = 0; p < H * W; p++) {
            float t[C];
            reference_dw(K, xn, wd, p / W, p % W, t);
            for (int ci = 0; ci < C; ci++) {
                float d = 0;
                for (int co = 0; co < C; co++) {
                    dwpT[ci * C + co] += (double)t[ci] * gn[p * C + co];
                    d += gn[p * C + co] * wpT[ci * C + co];
                }
                dt[p * C + ci] = d;
            }
        }
        for (int p = 0; p < H * W; p++) {
            const int h = p / W, w = p % W;
            for (int c = 0; c < C; c++) {
                float v = xn[p * C + c], acc = 0;
                for (int kh = 0; kh < K; kh++)
                    for (int kw = 0; kw < K; kw++) {
                        int oh = h - kh + P, ow = w - kw + P; /* outputs this input fed */
                        if (oh < 0 || oh >= H || ow < 0 || ow >= W) continue;
                        acc += dt[(oh * W + ow) * C + c] * wd[(kh * K + kw) * C + c];
                        dwd[(kh * K + kw) * C + c] += (double)dt[(oh * W + ow) * C + c] * (v > 0 ? v : 0);
                    }
                dx[((size_t)n * H * W + p) * C + c] = v > 0 ? acc : 0;
            }
        }
    }
    free(dt);
}

/* The interior of the zero-padded NHWC plane pad <- relu(image xn). */
static void fill_relu(float *pad, const float *xn, int P, int WP) {
    for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w++)
            _mm512_store_ps(pad + ((h + P) * WP + w + P) * C,
                            _mm512_max_ps(_mm512_load_ps(xn + (h * W + w) * C), _mm512_setzero_ps()));
}

/* t[u][c] = the depthwise output at (h, w + u), u < 4: four independent
   FMA chains over the taps.  Left in memory: the 1x1 broadcasts its
   values from there (an embedded broadcast, no shuffle). */
static void dw4(const float *pad, const float *wd, int K, int WP, int h, int w, float *t) {
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int kh = 0; kh < K; kh++) {
        const float *r = pad + ((h + kh) * WP + w) * C;
        for (int kw = 0; kw < K; kw++) {
            __m512 wv = _mm512_load_ps(wd + (kh * K + kw) * C);
            for (int u = 0; u < 4; u++) a[u] = _mm512_fmadd_ps(_mm512_load_ps(r + (kw + u) * C), wv, a[u]);
        }
    }
    for (int u = 0; u < 4; u++) _mm512_store_ps(t + u * C, a[u]);
    __asm__ volatile("" ::: "memory"); /* the caller reads t from memory */
}

/* The fused kernel: per image, the ReLU'd input into a zero-padded NHWC
   plane (in L2), then blocks of 4 output pixels: depthwise as 4
   independent FMA chains over the taps, pointwise as 16 FMAs per pixel
   with the depthwise value broadcast from memory (an embedded broadcast,
   no shuffle), the statistics from the outputs in registers. */
static void fused(int K, const float *x, const float *wd, const float *wpT, float *y, float *st,
                  float *pad) {
    const int P = K / 2, WP = W + 2 * P;
    __m512 s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), wp[C];
    for (int i = 0; i < C; i++) wp[i] = _mm512_load_ps(wpT + C * i);
    memset(pad, 0, sizeof(float) * (size_t)(H + 2 * P) * WP * C);
    for (int n = 0; n < N; n++) {
        fill_relu(pad, x + (size_t)n * H * W * C, P, WP);
        float *yn = y + (size_t)n * H * W * C;
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w += 4) { /* W % 4 == 0 */
                float t[4 * C] __attribute__((aligned(64)));
                dw4(pad, wd, K, WP, h, w, t);
                __m512 o[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                               _mm512_setzero_ps()};
                for (int ci = 0; ci < C; ci++)
                    for (int u = 0; u < 4; u++)
                        o[u] = _mm512_fmadd_ps(_mm512_set1_ps(t[u * C + ci]), wp[ci], o[u]);
                for (int u = 0; u < 4; u++) _mm512_store_ps(yn + (h * W + w + u) * C, o[u]);
                s1 = _mm512_add_ps(s1, _mm512_add_ps(_mm512_add_ps(o[0], o[1]), _mm512_add_ps(o[2], o[3])));
                s2 = _mm512_add_ps(s2, _mm512_fmadd_ps(o[0], o[0], _mm512_fmadd_ps(o[1], o[1],
                                       _mm512_fmadd_ps(o[2], o[2], _mm512_mul_ps(o[3], o[3])))));
            }
    }
    _mm512_store_ps(st, s1);
    _mm512_store_ps(st + C, s2);
}

/* The fused backward of one NHWC image: the ReLU'd input padded as in
   forward; blocks of 4 pixels recompute the depthwise value, take dWp
   (its 16 rows in registers, gw, across images), dt = Wp^T dy into a
   padded plane and dWd; then dx as the correlation of dt with the
   kernel, masked by x > 0. */
static void bwd_image(int K, const float *xn, const float *wd, const float *wpr, const float *gn,
                      float *dxn, float *dwd, __m512 *gw, float *pad, float *dtp) {
    const int P = K / 2, WP = W + 2 * P;
    fill_relu(pad, xn, P, WP);
    for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w += 4) {
            float t[4 * C] __attribute__((aligned(64)));
            dw4(pad, wd, K, WP, h, w, t);
            const float *g = gn + (h * W + w) * C;
            __m512 d[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                           _mm512_setzero_ps()};
            __m512 gv[4];
            for (int u = 0; u < 4; u++) gv[u] = _mm512_load_ps(g + u * C);
            for (int ci = 0; ci < C; ci++)
                for (int u = 0; u < 4; u++) /* dWp^T[ci] (over co) += t[ci] dy */
                    gw[ci] = _mm512_fmadd_ps(_mm512_set1_ps(t[u * C + ci]), gv[u], gw[ci]);
            for (int co = 0; co < C; co++) {
                __m512 wr = _mm512_load_ps(wpr + co * C); /* Wp[co][:] over ci */
                for (int u = 0; u < 4; u++)
                    d[u] = _mm512_fmadd_ps(_mm512_set1_ps(g[u * C + co]), wr, d[u]);
            }
            float *dr = dtp + ((h + P) * WP + w + P) * C;
            for (int u = 0; u < 4; u++) _mm512_store_ps(dr + u * C, d[u]);
            for (int kh = 0; kh < K; kh++) { /* dWd[tap] += dt * relu(x) shifted */
                const float *r = pad + ((h + kh) * WP + w) * C;
                for (int kw = 0; kw < K; kw++) {
                    __m512 acc = _mm512_mul_ps(d[0], _mm512_load_ps(r + kw * C));
                    for (int u = 1; u < 4; u++)
                        acc = _mm512_fmadd_ps(d[u], _mm512_load_ps(r + (kw + u) * C), acc);
                    float *q = dwd + (kh * K + kw) * C;
                    _mm512_store_ps(q, _mm512_add_ps(_mm512_load_ps(q), acc));
                }
            }
        }
    for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w += 4) {
            __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                           _mm512_setzero_ps()};
            for (int kh = 0; kh < K; kh++) {
                const float *r = dtp + ((h + 2 * P - kh) * WP + w + 2 * P) * C;
                for (int kw = 0; kw < K; kw++) {
                    __m512 wv = _mm512_load_ps(wd + (kh * K + kw) * C);
                    for (int u = 0; u < 4; u++)
                        a[u] = _mm512_fmadd_ps(_mm512_load_ps(r + (u - kw) * C), wv, a[u]);
                }
            }
            for (int u = 0; u < 4; u++) {
                const int p = h * W + w + u;
                __mmask16 pos = _mm512_cmp_ps_mask(_mm512_load_ps(xn + p * C), _mm512_setzero_ps(), _CMP_GT_OQ);
                _mm512_store_ps(dxn + p * C, _mm512_maskz_mov_ps(pos, a[u]));
            }
        }
}

/* One image [C][H*W] (NCHW) to [H*W][C] and back, 16x16 blocks
   transposed in registers, as the runtime's channel-last engine packs. */
static void tr_image(const float *src, float *dst, int to_cl) {
    for (int q0 = 0; q0 < H * W; q0 += 16) { /* H * W % 16 == 0 */
        __m512 r[16];
        for (int j = 0; j < 16; j++)
            r[j] = to_cl ? _mm512_loadu_ps(src + j * H * W + q0) : _mm512_load_ps(src + (q0 + j) * C);
        tr16(r);
        for (int j = 0; j < 16; j++)
            if (to_cl)
                _mm512_store_ps(dst + (q0 + j) * C, r[j]);
            else
                _mm512_storeu_ps(dst + j * H * W + q0, r[j]);
    }
}

/* The fused backward over the batch: dx written, dwd and dwpT written.
   nchw: x, dy and dx are NCHW, and each image goes through the per-image
   buffers xt, gt, dxt (channel-last, in L2) on its way in and out -- the
   fused kernel inside today's engine, whose tensors are NCHW. */
static void fused_bwd(int K, const float *x, const float *wd, const float *wpr, const float *dy,
                      float *dx, float *dwd, float *dwpT, float *pad, float *dtp, int nchw,
                      float *xt, float *gt, float *dxt) {
    const int P = K / 2, WP = W + 2 * P;
    __m512 gw[C];
    for (int i = 0; i < C; i++) gw[i] = _mm512_setzero_ps();
    memset(pad, 0, sizeof(float) * (size_t)(H + 2 * P) * WP * C);
    memset(dtp, 0, sizeof(float) * (size_t)(H + 2 * P) * WP * C);
    memset(dwd, 0, sizeof(float) * (size_t)K * K * C);
    for (int n = 0; n < N; n++) {
        const size_t o = (size_t)n * H * W * C;
        if (nchw) {
            tr_image(x + o, xt, 1);
            tr_image(dy + o, gt, 1);
            bwd_image(K, xt, wd, wpr, gt, dxt, dwd, gw, pad, dtp);
            tr_image(dxt, dx + o, 0);
        } else {
            bwd_image(K, x + o, wd, wpr, dy + o, dx + o, dwd, gw, pad, dtp);
        }
    }
    for (int i = 0; i < C; i++) _mm512_store_ps(dwpT + i * C, gw[i]);
}

int main(int argc, char **argv) {
    const int K = argc > 1 ? atoi(argv[1]) : 3;
    if (K != 3 && K != 5) {
        fprintf(stderr, "nhwc_sep_proto: K must be 3 or 5, got %d\n", K);
        return 2;
    }
    const size_t sz = (size_t)N * H * W * C;
    float *x = aligned_alloc(64, sz * sizeof(float)), *y = aligned_alloc(64, sz * sizeof(float));
    float *yr = aligned_alloc(64, sz * sizeof(float)), *wd = aligned_alloc(64, 25 * C * sizeof(float));
    float *wpT = aligned_alloc(64, C * C * sizeof(float)), *st = aligned_alloc(64, 2 * C * sizeof(float));
    float *pad = aligned_alloc(64, 32 * 32 * C * sizeof(float));
    if (!x || !y || !yr || !wd || !wpT || !st || !pad) return 1;
    srand(1);
    for (size_t i = 0; i < sz; i++) x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (int i = 0; i < 25 * C; i++) wd[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (int i = 0; i < C * C; i++) wpT[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    /* check: outputs of two images and the statistics of all */
    double ref[2 * C] = {0}, err = 0, serr = 0;
    fused(K, x, wd, wpT, y, st, pad);
    reference(K, 0, N, x, wd, wpT, yr, ref);
    for (size_t i = 0; i < 2 * (size_t)H * W * C; i++) err = fmax(err, fabs(y[i] - yr[i]));
    for (int c = 0; c < 2 * C; c++) serr = fmax(serr, fabs(st[c] - ref[c]) / (fabs(ref[c]) + 1));
    if (err > 1e-4 || serr > 1e-4) {
        fprintf(stderr, "nhwc_sep_proto: wrong result (max |dy| %g, stats rel %g)\n", err, serr);
        return 1;
    }
    double best = 1e9;
    for (int r = 0; r < 30; r++) {
        double t0 = now();
        fused(K, x, wd, wpT, y, st, pad);
        double t = now() - t0;
        if (t < best) best = t;
    }
    const double flop = 2.0 * N * H * W * C * (K * K + C);
    printf("nhwc fused relu-dw%dx%d-pw + BN statistics [64,28,28,16]: forward %.3f ms  %.1f GFLOP/s"
           "  (checked: max |y - ref| %.1e)\n", K, K, best * 1e3, flop / best / 1e9, err);

    /* backward: dx, dWd, dWp from dy (the gradient the batch norm's
       backward hands on; forming it is one more FMA per value) */
    float *dy = aligned_alloc(64, sz * sizeof(float)), *dx = aligned_alloc(64, sz * sizeof(float));
    float *dxr = aligned_alloc(64, sz * sizeof(float)), *dtp = aligned_alloc(64, 32 * 32 * C * sizeof(float));
    float *dwd = aligned_alloc(64, 25 * C * sizeof(float)), *dwpT = aligned_alloc(64, C * C * sizeof(float));
    float *wpr = aligned_alloc(64, C * C * sizeof(float));
    double *rdwd = calloc(25 * C, sizeof(double)), *rdwp = calloc(C * C, sizeof(double));
    if (!dy || !dx || !dxr || !dtp || !dwd || !dwpT || !wpr || !rdwd || !rdwp) return 1;
    for (size_t i = 0; i < sz; i++) dy[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (int ci = 0; ci < C; ci++)
        for (int co = 0; co < C; co++) wpr[co * C + ci] = wpT[ci * C + co];
    reference_bwd(K, 0, N, x, wd, wpT, dy, dxr, rdwd, rdwp);
    /* the same backward with NCHW tensors: x, dy in NCHW, dx back */
    float *xc = aligned_alloc(64, sz * sizeof(float)), *gc = aligned_alloc(64, sz * sizeof(float));
    float *dxc = aligned_alloc(64, sz * sizeof(float)), *xt = aligned_alloc(64, H * W * C * sizeof(float));
    float *gt = aligned_alloc(64, H * W * C * sizeof(float)), *dxt = aligned_alloc(64, H * W * C * sizeof(float));
    if (!xc || !gc || !dxc || !xt || !gt || !dxt) return 1;
    for (int n = 0; n < N; n++) {
        tr_image(x + (size_t)n * H * W * C, xc + (size_t)n * H * W * C, 0);
        tr_image(dy + (size_t)n * H * W * C, gc + (size_t)n * H * W * C, 0);
    }
    for (int nchw = 0; nchw < 2; nchw++) {
        const float *xi = nchw ? xc : x, *gi = nchw ? gc : dy;
        float *dxo = nchw ? dxc : dx;
        fused_bwd(K, xi, wd, wpr, gi, dxo, dwd, dwpT, pad, dtp, nchw, xt, gt, dxt);
        err = 0, serr = 0;
        for (int n = 0; n < N; n++) {
            const size_t o = (size_t)n * H * W * C;
            const float *d = dx + o;
            if (nchw) tr_image(dxc + o, dxt, 1), d = dxt;
            for (int i = 0; i < H * W * C; i++) err = fmax(err, fabs(d[i] - dxr[o + i]));
        }
        for (int i = 0; i < K * K * C; i++) serr = fmax(serr, fabs(dwd[i] - rdwd[i]) / (fabs(rdwd[i]) + 1));
        for (int i = 0; i < C * C; i++) serr = fmax(serr, fabs(dwpT[i] - rdwp[i]) / (fabs(rdwp[i]) + 1));
        if (err > 1e-4 || serr > 1e-4) {
            fprintf(stderr, "nhwc_sep_proto: wrong gradients (%s; max |dx| %g, weights rel %g)\n",
                    nchw ? "nchw" : "nhwc", err, serr);
            return 1;
        }
        best = 1e9;
        for (int r = 0; r < 20; r++) {
            double t0 = now();
            fused_bwd(K, xi, wd, wpr, gi, dxo, dwd, dwpT, pad, dtp, nchw, xt, gt, dxt);
            double t = now() - t0;
            if (t < best) best = t;
        }
        printf("%s fused backward (dx, dWd, dWp) [64,28,28,16]: %.3f ms  %.1f GFLOP/s"
               "  (checked: max |dx - ref| %.1e, weights rel %.1e)\n",
               nchw ? "nchw tensors, packed per image:" : "nhwc", best * 1e3, 2 * flop / best / 1e9,
               err, serr);
    }
    return 0;
}
#else
int main(void) {
    puts("nhwc_sep_proto: needs AVX-512");
    return 0;
}
#endif
