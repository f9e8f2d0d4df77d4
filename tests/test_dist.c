/*
** test_dist.c -- runtime/dist.c in a process that mpirun did not start:
** rank 0 of 1 before (and without) MPI, collectives that copy or do
** nothing, argument checks, and synchronised batch norm falling back to
** the local path (bit-identical) while there is one rank.
*/
#include "check.h"
#include "dist.h"

#include <stdlib.h>
#include <string.h>

int main(void) {
    nr_runtime_init(1);
    CHECK(nr_dist_rank() == 0);
    CHECK(nr_dist_size() == 1);
    CHECK(nr_dist_local_size() == 1);
    CHECK(!nr_dist_initialized());

    float f[3] = {1, 2, 3};
    CHECK(nr_dist_allreduce_f32(f, 3) == NR_OK);
    CHECK(f[0] == 1 && f[1] == 2 && f[2] == 3);
    double d[2] = {0.5, -4};
    CHECK(nr_dist_allreduce_f64(d, 2) == NR_OK);
    CHECK(nr_dist_allreduce_max_f64(d, 2) == NR_OK);
    CHECK(d[0] == 0.5 && d[1] == -4);
    CHECK(nr_dist_allreduce_f32(f, -1) == NR_EUSAGE);
    CHECK(strstr(nr_lasterror(), "negative") != NULL);

    char msg[6] = "hello", got[6] = {0};
    CHECK(nr_dist_bcast(msg, 5, 0) == NR_OK);
    CHECK(nr_dist_bcast(msg, 5, 1) == NR_EUSAGE);
    CHECK(strstr(nr_lasterror(), "root 1 out of range 0..0") != NULL);
    int64_t lens[1] = {0};
    CHECK(nr_dist_allgather_lens(5, lens) == NR_OK && lens[0] == 5);
    CHECK(nr_dist_allgatherv(msg, 5, got, lens) == NR_OK);
    CHECK(memcmp(got, "hello", 5) == 0);
    CHECK(nr_dist_barrier() == NR_OK);

    /* the switch is remembered, but one rank never synchronises */
    CHECK(nr_dist_set_sync_bn(1) == 0);
    CHECK(nr_dist_sync_bn() == 0);
    nr_tensor *x = nr_tensor_randn(4, (int64_t[]){4, 3, 2, 2});
    nr_tensor *y1 = NULL, *y2 = NULL;
    nr_bn_params p = {1, 0.1, 1e-5, NR_ACT_NONE};
    CHECK(nr_batch_norm(&y1, x, NULL, NULL, NULL, NULL, &p) == NR_OK);
    CHECK(nr_dist_set_sync_bn(0) == 1);
    CHECK(nr_batch_norm(&y2, x, NULL, NULL, NULL, NULL, &p) == NR_OK);
    CHECK(memcmp(nr_data(y1), nr_data(y2), 48 * sizeof(float)) == 0);
    nr_tensor_release(x);
    nr_tensor_release(y1);
    nr_tensor_release(y2);

    nr_dist_finalize(); /* nothing to finalize: harmless */
    nr_dist_abort(1);   /* one process: returns */
    CHECK(nr_dist_size() == 1);
    DONE();
}
