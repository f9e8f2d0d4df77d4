/*
** dist.h -- data-parallel glue over MPI (runtime/dist.c).
**
** The only file that includes mpi.h is dist.c, and only when the build
** found MPI (NASRT_MPI).  Without MPI, or in a process that was not
** initialised, every function answers as one process: rank 0 of 1, the
** collectives copy or do nothing.  All calls come from the main thread
** (MPI_THREAD_FUNNELED): kernels on the pool never communicate.
**
** Errors: MPI's default handler (MPI_ERRORS_ARE_FATAL) ends the whole job
** on a communication failure, which is what a stuck collective needs, so
** the collectives here only return NR_EUSAGE for bad arguments and
** NR_ENOMEM.
*/
#ifndef NASRT_DIST_H
#define NASRT_DIST_H

#include "nasrt.h"

/* 1 when the runtime was built with MPI. */
NR_API int nr_dist_compiled(void);
/* 1 when the environment says this process was started by mpirun / srun
   (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK or SLURM_STEP_NUM_TASKS with
   PMI_FD); the host then initialises MPI at start. */
NR_API int nr_dist_launched(void);
/* Initialises MPI (MPI_Init_thread, FUNNELED) once; a second call is a
   no-op.  Without MPI: NR_OK, one process.  NR_EUSAGE after finalize. */
NR_API nr_status nr_dist_init(void);
NR_API int nr_dist_initialized(void);
/* Ranks of this process among all, and on this machine (0 of 1 when not
   initialised). */
NR_API int nr_dist_rank(void);
NR_API int nr_dist_size(void);
NR_API int nr_dist_local_size(void);
NR_API nr_status nr_dist_barrier(void);
/* In-place sum over all ranks of n floats / doubles (MPI_SUM; for 2 ranks
   a + b, so every rank gets the same bits). */
NR_API nr_status nr_dist_allreduce_f32(float *buf, int64_t n);
NR_API nr_status nr_dist_allreduce_f64(double *buf, int64_t n);
/* In-place max over all ranks. */
NR_API nr_status nr_dist_allreduce_max_f64(double *buf, int64_t n);
/* Root's bytes into buf on every rank. */
NR_API nr_status nr_dist_bcast(void *buf, int64_t bytes, int root);
/* Every rank's len: lens[size]. */
NR_API nr_status nr_dist_allgather_lens(int64_t len, int64_t *lens);
/* Concatenation of every rank's bytes (lens from nr_dist_allgather_lens)
   into out (sum of lens bytes). */
NR_API nr_status nr_dist_allgatherv(const void *mine, int64_t len, void *out,
                                    const int64_t *lens);
/* MPI_Finalize once (at exit).  Nothing when not initialised. */
NR_API void nr_dist_finalize(void);
/* Ends every rank of the job (MPI_Abort); returns when not initialised. */
NR_API void nr_dist_abort(int code);

/* Synchronised batch norm: while on (and size > 1), F.batch_norm in
   training mode uses the statistics of the whole global batch (PyTorch's
   SyncBatchNorm): per-channel sums are all-reduced in the forward and the
   gradient sums in the backward.  Returns the previous setting. */
NR_API int nr_dist_set_sync_bn(int on);
/* Whether batch norm synchronises now (the flag, initialised, size > 1). */
NR_API int nr_dist_sync_bn(void);

#endif
