/*
** blas.c -- the only user of cblas.h.  OpenBLAS runs single-threaded: the
** pool splits GEMMs above it, so the two never fight over the cores (the
** OpenBLAS FAQ's advice for multi-threaded callers).
*/
#include "nasrt.h"

#include <cblas.h>

void nr_gemm(int transa, int transb, int64_t m, int64_t n, int64_t k,
             float alpha, const float *a, int64_t lda,
             const float *b, int64_t ldb,
             float beta, float *c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    cblas_sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans,
                transb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha,
                a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* Called once by the host / module loader. */
void nr_blas_init(void);
void nr_blas_init(void) { openblas_set_num_threads(1); }

#include <stdlib.h>
#include <unistd.h>

void nr_runtime_init(int nthreads) {
    static int done = 0;
    if (done && nthreads <= 0) return; /* keep what the host chose */
    if (!done) {
        nr_blas_init();
        done = 1;
    }
    if (nthreads <= 0) {
        const char *e = getenv("NASRT_THREADS");
        nthreads = e ? atoi(e) : 0;
    }
    if (nthreads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = c > 0 ? (int)c : 1;
    }
    nr_set_num_threads(nthreads);
}
