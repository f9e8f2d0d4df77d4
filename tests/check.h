/* check.h -- the tiny assertion kit of the C tests: CHECK counts, prints
   what failed, and DONE prints the 'N passed, N failed' line ctest reads. */
#ifndef NASRT_CHECK_H
#define NASRT_CHECK_H
#include <math.h>
#include <stdio.h>

static int check_pass = 0, check_fail = 0;
#define CHECK(cond)                                                          \
    do {                                                                     \
        if (cond) check_pass++;                                              \
        else {                                                               \
            check_fail++;                                                    \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);  \
        }                                                                    \
    } while (0)
#define CHECK_NEAR(a, b, tol)                                                \
    do {                                                                     \
        double a_ = (a), b_ = (b);                                           \
        if (fabs(a_ - b_) <= (tol) * (1 + fabs(b_))) check_pass++;           \
        else {                                                               \
            check_fail++;                                                    \
            fprintf(stderr, "FAIL %s:%d: %s = %g, expected %s = %g\n",       \
                    __FILE__, __LINE__, #a, a_, #b, b_);                     \
        }                                                                    \
    } while (0)
#define DONE()                                                               \
    do {                                                                     \
        printf("%d passed, %d failed\n", check_pass, check_fail);            \
        return check_fail ? 1 : 0;                                           \
    } while (0)
#endif
