/*
** nhwc_sep_proto.c -- a measurement, not part of the runtime: how fast one
** SepConv half of the DARTS step (ReLU, depthwise KxK, pointwise 16x16,
** then its batch-norm statistics) runs when activations are channels-last
** (NHWC, C = 16: one zmm per pixel) and the statistics are taken in the
** kernel's epilogue instead of a pass of their own.  It is the kernel a
** fused channels-last engine would be built on (issue 6, the sgemm-floor
** line); the runtime's engine today is NCHW, op by op.
**
**   ./build/nhwc_sep_proto [K]      (K = 3 or 5; 1 thread; AVX-512 only)
**
** Compare with the runtime on the same shape, [64,16,28,28]:
**   ./build/nasrt bench/sep_segment.lua
** The kernel is checked against a plain loop on two images before timing.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

enum { N = 64, H = 28, W = 28, C = 16 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* y = pw(dw(relu(x))) for images [n0, n1), NHWC; st[0..16) += sum y,
   st[16..32) += sum y^2 per channel.  wd: [K*K][C]; wpT: [ci][co]. */
static void reference(int K, int n0, int n1, const float *x, const float *wd, const float *wpT,
                      float *y, double *st) {
    const int P = K / 2;
    for (int n = n0; n < n1; n++)
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++) {
                float t[C] = {0};
                for (int kh = 0; kh < K; kh++)
                    for (int kw = 0; kw < K; kw++) {
                        int ih = h + kh - P, iw = w + kw - P;
                        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                        for (int c = 0; c < C; c++) {
                            float v = x[((n * H + ih) * W + iw) * C + c];
                            t[c] += (v > 0 ? v : 0) * wd[(kh * K + kw) * C + c];
                        }
                    }
                for (int co = 0; co < C; co++) {
                    float o = 0;
                    for (int ci = 0; ci < C; ci++) o += t[ci] * wpT[ci * C + co];
                    y[((n * H + h) * W + w) * C + co] = o;
                    st[co] += o;
                    st[C + co] += (double)o * o;
                }
            }
}

#if defined(__AVX512F__)
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
        const float *xn = x + (size_t)n * H * W * C;
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++)
                _mm512_store_ps(pad + ((h + P) * WP + w + P) * C,
                                _mm512_max_ps(_mm512_load_ps(xn + (h * W + w) * C), _mm512_setzero_ps()));
        float *yn = y + (size_t)n * H * W * C;
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w += 4) { /* W % 4 == 0 */
                __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                               _mm512_setzero_ps()};
                for (int kh = 0; kh < K; kh++) {
                    const float *r = pad + ((h + kh) * WP + w) * C;
                    for (int kw = 0; kw < K; kw++) {
                        __m512 wv = _mm512_load_ps(wd + (kh * K + kw) * C);
                        for (int u = 0; u < 4; u++)
                            a[u] = _mm512_fmadd_ps(_mm512_load_ps(r + (kw + u) * C), wv, a[u]);
                    }
                }
                float t[4 * C] __attribute__((aligned(64)));
                for (int u = 0; u < 4; u++) _mm512_store_ps(t + u * C, a[u]);
                __asm__ volatile("" ::: "memory"); /* broadcast from t, not from registers */
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
    printf("nhwc fused relu-dw%dx%d-pw + BN statistics [64,28,28,16]: %.3f ms  %.1f GFLOP/s"
           "  (checked: max |dy| %.1e)\n", K, K, best * 1e3, flop / best / 1e9, err);
    return 0;
}
#else
int main(void) {
    puts("nhwc_sep_proto: needs AVX-512");
    return 0;
}
#endif
