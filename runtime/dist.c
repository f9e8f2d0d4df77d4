/*
** dist.c -- data-parallel glue: MPI initialisation, rank and size, and the
** few collectives nasrt.dist needs (sum all-reduce of one flat buffer,
** broadcast, all-gather of byte strings, barrier).  Built against MPI only
** under NASRT_MPI (CMake defines it when find_package(MPI) succeeds);
** otherwise every call answers as a single process.  No home-made
** transport: MPI (Debian's OpenMPI) moves the bytes.
*/
#include "dist.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static int sync_bn_flag = 0;

int nr_dist_set_sync_bn(int on) {
    int old = sync_bn_flag;
    sync_bn_flag = on != 0;
    return old;
}

int nr_dist_sync_bn(void) { return sync_bn_flag && nr_dist_size() > 1; }

int nr_dist_launched(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK",
                                       "MPI_LOCALNRANKS", NULL};
    for (int i = 0; vars[i]; i++) {
        const char *v = getenv(vars[i]);
        if (v && v[0]) return 1;
    }
    return 0;
}

#ifdef NASRT_MPI
#include <mpi.h>

static int inited = 0, finalized = 0, rank = 0, size = 1, local_size = 1;

/* MPI counts are int: collectives on longer buffers go in chunks. */
#define CHUNK (1 << 28)

int nr_dist_compiled(void) { return 1; }

nr_status nr_dist_init(void) {
    if (inited) return NR_OK;
    if (finalized) return nr_seterror(NR_EUSAGE, "dist.init: MPI was already finalized");
    int already = 0;
    MPI_Initialized(&already);
    if (!already) {
        int provided = 0;
        MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local);
    MPI_Comm_size(local, &local_size);
    MPI_Comm_free(&local);
    inited = 1;
    return NR_OK;
}

int nr_dist_initialized(void) { return inited; }
int nr_dist_rank(void) { return inited ? rank : 0; }
int nr_dist_size(void) { return inited ? size : 1; }
int nr_dist_local_size(void) { return inited ? local_size : 1; }

nr_status nr_dist_barrier(void) {
    if (inited && size > 1) MPI_Barrier(MPI_COMM_WORLD);
    return NR_OK;
}

static nr_status allreduce(void *buf, int64_t n, MPI_Datatype type, size_t esize, MPI_Op op) {
    if (n < 0) return nr_seterror(NR_EUSAGE, "dist.allreduce: negative count %lld", (long long)n);
    if (!inited || size == 1) return NR_OK;
    char *p = buf;
    while (n > 0) {
        int k = n > CHUNK ? CHUNK : (int)n;
        MPI_Allreduce(MPI_IN_PLACE, p, k, type, op, MPI_COMM_WORLD);
        p += (size_t)k * esize;
        n -= k;
    }
    return NR_OK;
}

nr_status nr_dist_allreduce_f32(float *buf, int64_t n) {
    return allreduce(buf, n, MPI_FLOAT, sizeof(float), MPI_SUM);
}

nr_status nr_dist_allreduce_f64(double *buf, int64_t n) {
    return allreduce(buf, n, MPI_DOUBLE, sizeof(double), MPI_SUM);
}

nr_status nr_dist_allreduce_max_f64(double *buf, int64_t n) {
    return allreduce(buf, n, MPI_DOUBLE, sizeof(double), MPI_MAX);
}

nr_status nr_dist_bcast(void *buf, int64_t bytes, int root) {
    if (bytes < 0) return nr_seterror(NR_EUSAGE, "dist.broadcast: negative size");
    if (root < 0 || root >= nr_dist_size())
        return nr_seterror(NR_EUSAGE, "dist.broadcast: root %d out of range 0..%d", root,
                           nr_dist_size() - 1);
    if (!inited || size == 1) return NR_OK;
    char *p = buf;
    while (bytes > 0) {
        int k = bytes > CHUNK ? CHUNK : (int)bytes;
        MPI_Bcast(p, k, MPI_BYTE, root, MPI_COMM_WORLD);
        p += k;
        bytes -= k;
    }
    return NR_OK;
}

nr_status nr_dist_allgather_lens(int64_t len, int64_t *lens) {
    if (!inited || size == 1) {
        lens[0] = len;
        return NR_OK;
    }
    long long mine = len;
    long long *all = malloc((size_t)size * sizeof *all);
    if (!all) return nr_seterror(NR_ENOMEM, "dist.allgather: out of memory");
    MPI_Allgather(&mine, 1, MPI_LONG_LONG, all, 1, MPI_LONG_LONG, MPI_COMM_WORLD);
    for (int i = 0; i < size; i++) lens[i] = all[i];
    free(all);
    return NR_OK;
}

nr_status nr_dist_allgatherv(const void *mine, int64_t len, void *out, const int64_t *lens) {
    if (!inited || size == 1) {
        if (len > 0) memcpy(out, mine, (size_t)len);
        return NR_OK;
    }
    int *counts = malloc((size_t)size * 2 * sizeof(int));
    if (!counts) return nr_seterror(NR_ENOMEM, "dist.allgather: out of memory");
    int *displs = counts + size;
    int64_t off = 0;
    for (int i = 0; i < size; i++) {
        if (lens[i] > INT_MAX || off > INT_MAX) {
            free(counts);
            return nr_seterror(NR_EUSAGE, "dist.allgather: more than 2 GB in one call");
        }
        counts[i] = (int)lens[i];
        displs[i] = (int)off;
        off += lens[i];
    }
    MPI_Allgatherv(mine, (int)len, MPI_BYTE, out, counts, displs, MPI_BYTE, MPI_COMM_WORLD);
    free(counts);
    return NR_OK;
}

void nr_dist_finalize(void) {
    if (!inited || finalized) return;
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
    finalized = 1;
    inited = 0;
}

void nr_dist_abort(int code) {
    if (inited && size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

#else /* one process */

int nr_dist_compiled(void) { return 0; }
nr_status nr_dist_init(void) { return NR_OK; }
int nr_dist_initialized(void) { return 0; }
int nr_dist_rank(void) { return 0; }
int nr_dist_size(void) { return 1; }
int nr_dist_local_size(void) { return 1; }
nr_status nr_dist_barrier(void) { return NR_OK; }
nr_status nr_dist_allreduce_f32(float *buf, int64_t n) {
    (void)buf;
    return n < 0 ? nr_seterror(NR_EUSAGE, "dist.allreduce: negative count") : NR_OK;
}
nr_status nr_dist_allreduce_f64(double *buf, int64_t n) {
    (void)buf;
    return n < 0 ? nr_seterror(NR_EUSAGE, "dist.allreduce: negative count") : NR_OK;
}
nr_status nr_dist_allreduce_max_f64(double *buf, int64_t n) {
    return nr_dist_allreduce_f64(buf, n);
}
nr_status nr_dist_bcast(void *buf, int64_t bytes, int root) {
    (void)buf;
    (void)bytes;
    if (root != 0) return nr_seterror(NR_EUSAGE, "dist.broadcast: root %d out of range 0..0", root);
    return NR_OK;
}
nr_status nr_dist_allgather_lens(int64_t len, int64_t *lens) {
    lens[0] = len;
    return NR_OK;
}
nr_status nr_dist_allgatherv(const void *mine, int64_t len, void *out, const int64_t *lens) {
    (void)lens;
    if (len > 0) memcpy(out, mine, (size_t)len);
    return NR_OK;
}
void nr_dist_finalize(void) {}
void nr_dist_abort(int code) { (void)code; }

#endif
