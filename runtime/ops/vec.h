/*
** vec.h -- the kernels' vector type: 16 floats in one register (one zmm
** with AVX-512, two ymm with AVX2), written with GCC vector extensions so
** the same code builds for any target.  Loads and stores through it are
** unaligned and may alias float / int32.
*/
#ifndef NASRT_VEC_H
#define NASRT_VEC_H

#include <stdint.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define VL 16 /* lanes per register block */
typedef float vf16 __attribute__((vector_size(64), aligned(4), may_alias));
typedef int32_t vi16 __attribute__((vector_size(64), aligned(4), may_alias));
#define VLD(p) (*(const vf16 *)(p))
#define VST(p, v) (*(vf16 *)(p) = (v))

static inline int64_t rup(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

/* p[0..min(n,16)) in the low lanes, zeros in the others (a masked load
   with AVX-512: it reads nothing past p[n - 1]) */
static inline vf16 vload_n(const float *p, int64_t n) {
    if (n >= VL) return VLD(p);
#if defined(__AVX512F__)
    return (vf16)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
#else
    vf16 v = {0};
    for (int64_t l = 0; l < n; l++) v[l] = p[l];
    return v;
#endif
}

/* Asks for p[0..n) to be brought into cache (one prefetch per 64-byte
   line): for the next image or plane of a loop whose data jumps from one
   place to another, which the hardware's prefetcher does not follow. */
static inline void prefetch_image(const float *p, int64_t n) {
    for (int64_t o = 0; o < n; o += 16) __builtin_prefetch(p + o);
}

/* d[0..n) = s[0..n) for short runs (a libc call per image row costs more
   than the copy).  With AVX-512 every vector goes through masked moves:
   GCC turned the plain vector loop into a call to memmove (2.2% of a DARTS
   step's samples, from the padded-plane fills). */
static inline void copy_short(float *restrict d, const float *restrict s, int64_t n) {
#if defined(__AVX512F__)
    for (int64_t k = 0; k < n; k += VL) {
        __mmask16 mk = (__mmask16)(n - k >= VL ? 0xffff : (1u << (n - k)) - 1);
        _mm512_mask_storeu_ps(d + k, mk, _mm512_maskz_loadu_ps(mk, s + k));
    }
#else
    for (int64_t k = 0; k < n; k++) d[k] = s[k];
#endif
}

/* d[0..n) = relu(s[0..n)): x < 0 ? 0 : x, a NaN stays NaN (PyTorch's relu) */
static inline void copy_short_relu(float *restrict d, const float *restrict s, int64_t n) {
#if defined(__AVX512F__)
    for (int64_t k = 0; k < n; k += VL) {
        __mmask16 mk = (__mmask16)(n - k >= VL ? 0xffff : (1u << (n - k)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(mk, s + k);
        _mm512_mask_storeu_ps(d + k, mk, _mm512_max_ps(_mm512_setzero_ps(), v)); /* NaN: v */
    }
#else
    for (int64_t k = 0; k < n; k++) d[k] = s[k] < 0.0f ? 0.0f : s[k];
#endif
}

#if defined(__AVX512F__)
/* r[i][j] <- r[j][i]: a 16 x 16 transpose in registers */
static inline void tr16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0x88);
            t[8 * i + j + 4] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0xDD);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xDD);
    }
}
#endif

#endif
