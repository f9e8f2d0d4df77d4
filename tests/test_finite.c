/* test_finite.c -- nr_first_nonfinite, the divergence check of the
   optimizers and checkpoints: the index and value of the first NaN / +-Inf
   in row-major order, across the 4096-element blocks, in views (a transpose,
   a narrow), in empty tensors, and that no memory is leaked. */
#include "check.h"
#include "nasrt.h"
#include "optim.h"

#include <math.h>
#include <string.h>

#define SH(...) ((const int64_t[]){__VA_ARGS__})

static void test_contiguous(void) {
    nr_tensor *t = nr_tensor_zeros(2, SH(3, 5000));    /* 15000 elements: 4 blocks */
    float v = 7;
    CHECK(nr_first_nonfinite(t, &v) == -1);
    CHECK(v == 7);                                       /* untouched when finite */
    float *d = nr_data(t);
    d[0] = 3.4e38f;                                      /* largest finite floats pass */
    d[1] = -3.4e38f;
    d[2] = 1e-45f;                                       /* denormal */
    CHECK(nr_first_nonfinite(t, NULL) == -1);
    d[12345] = -INFINITY;
    CHECK(nr_first_nonfinite(t, &v) == 12345);
    CHECK(isinf(v) && v < 0);
    d[9000] = NAN;                                       /* earlier, another block */
    CHECK(nr_first_nonfinite(t, &v) == 9000);
    CHECK(isnan(v));
    d[4095] = INFINITY;                                  /* last element of block 0 */
    CHECK(nr_first_nonfinite(t, &v) == 4095);
    CHECK(isinf(v) && v > 0);
    d[14999] = NAN;
    d[4095] = d[9000] = d[12345] = 0;
    CHECK(nr_first_nonfinite(t, &v) == 14999);           /* very last element */
    nr_tensor_release(t);
}

static void test_views(void) {
    /* a = [[0, 1, 2], [3, NaN, 5]]; a^T = [[0, 3], [1, NaN], [2, 5]]: the
       NaN is element 4 of a and element 3 of a^T (0-based, row-major) */
    nr_tensor *a = nr_tensor_zeros(2, SH(2, 3));
    float *d = nr_data(a);
    for (int i = 0; i < 6; i++) d[i] = (float)i;
    d[4] = NAN;
    nr_tensor *at = NULL, *col = NULL;
    CHECK(nr_transpose(&at, a, 0, 1) == NR_OK);
    CHECK(nr_first_nonfinite(a, NULL) == 4);
    CHECK(nr_first_nonfinite(at, NULL) == 3);
    /* column 0 of a (finite) and column 1 (NaN in row 1) as narrowed views */
    CHECK(nr_narrow(&col, a, 1, 0, 1) == NR_OK);
    CHECK(nr_first_nonfinite(col, NULL) == -1);
    nr_tensor_release(col);
    col = NULL;
    CHECK(nr_narrow(&col, a, 1, 1, 1) == NR_OK);
    float v = 0;
    CHECK(nr_first_nonfinite(col, &v) == 1);
    CHECK(isnan(v));
    nr_tensor_release(col);
    nr_tensor_release(at);
    nr_tensor_release(a);
    nr_tensor *e = nr_tensor_zeros(2, SH(0, 4));
    CHECK(nr_first_nonfinite(e, NULL) == -1);
    nr_tensor_release(e);
}

int main(void) {
    nr_runtime_init(2);
    size_t live0 = nr_live_bytes();
    test_contiguous();
    test_views();
    CHECK(nr_live_bytes() == live0);
    DONE();
}
