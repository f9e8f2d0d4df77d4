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

#endif
