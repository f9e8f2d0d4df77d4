/*
** pool.c -- the one thread pool: [0, n) cut into guided chunks (large first, small last)
** that the threads (thread 0 is the caller) take from a shared counter,
** per-thread scratch, the abort flag.
** Workers spin up to a millisecond and then sleep on a condition
** variable, so an idle pool costs nothing while a long stretch of Lua or
** I/O runs.
*/
#include "nasrt.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXTHREADS 64

static struct {
    int nth;                       /* threads in use, including the caller */
    int started;                   /* worker threads created */
    pthread_t tid[MAXTHREADS];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;               /* bumped per job */
    atomic_int pending;            /* workers still running the job */
    nr_task_fn fn;
    void *ctx;
    int64_t n, grain;
    atomic_llong next;             /* next chunk to run */
    int job_nth;
} P = {.nth = 1, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static atomic_int abort_flag;

void nr_set_abort(int on) { atomic_store(&abort_flag, on); }
int nr_aborted(void) { return atomic_load_explicit(&abort_flag, memory_order_relaxed); }

/* Guided: a thread takes 1/(2 nth) of what is left (at least the grain),
   from a shared counter, so chunks start large and end small: a thread
   that starts late (a worker being woken, a vCPU the hypervisor paused) or
   runs slower leaves its share to the others, and the last chunks, which
   the other thread waits for, are short.  Which thread runs a chunk, and
   where chunks begin, vary; what an item computes does not (ith only
   picks scratch).  in_task: the thread's index while it runs a chunk,
   else -1 (a parallel_for from inside a task runs inline, on that thread,
   instead of posting a job over the one in flight). */
static _Thread_local int in_task = -1;

static void run_chunks(int ith) {
    const int64_t n = P.n, grain = P.grain, div = 2 * (int64_t)P.job_nth;
    in_task = ith;
    int64_t i0 = atomic_load_explicit(&P.next, memory_order_relaxed), len;
    for (;;) {
        if (i0 >= n) break;
        len = (n - i0) / div;
        if (len < grain) len = grain;
        if (len > n - i0) len = n - i0;
        if (!atomic_compare_exchange_weak_explicit(&P.next, &i0, i0 + len, memory_order_relaxed,
                                                   memory_order_relaxed))
            continue; /* i0 reloaded */
        P.fn(P.ctx, i0, i0 + len, ith);
        i0 = atomic_load_explicit(&P.next, memory_order_relaxed);
    }
    in_task = -1;
}

/* How long an idle worker spins before it sleeps on the condition
   variable.  Waking a sleeping worker costs tens of microseconds, more than
   many kernels take; with 20,000 spins (~20 us) the main thread of a DARTS
   step waited 1.85 s over 4 steps for late workers, with 1 ms 1.1 s. */
#define SPIN_NS 1e6

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

/* generation each worker was created at: a job posted before the thread
   first runs must still be seen as new */
static unsigned start_gen[MAXTHREADS];

static void *worker(void *arg) {
    int ith = (int)(intptr_t)arg;
    unsigned seen = start_gen[ith];
    for (;;) {
        unsigned g;
        /* spin up to SPIN_NS for the next job (the main thread's Lua and
           bookkeeping between two kernels usually take less), then sleep */
        const double t0 = now_ns();
        for (int spins = 1;; spins++) {
            if ((g = atomic_load_explicit(&P.gen, memory_order_acquire)) != seen) break;
            cpu_relax();
            if ((spins & 255) == 0 && now_ns() - t0 > SPIN_NS) break;
        }
        if (g == seen) {
            pthread_mutex_lock(&P.mu);
            while ((g = atomic_load(&P.gen)) == seen) pthread_cond_wait(&P.cv, &P.mu);
            pthread_mutex_unlock(&P.mu);
        }
        seen = g;
        if (ith < P.job_nth) run_chunks(ith);
        atomic_fetch_sub_explicit(&P.pending, 1, memory_order_release);
    }
    return NULL;
}

int nr_num_threads(void) { return P.nth; }

void nr_set_num_threads(int n) {
    if (n < 1) n = 1;
    if (n > MAXTHREADS) n = MAXTHREADS;
    /* workers start with every signal blocked, so Ctrl-C always reaches the
       main thread (where the host turns it into a Lua error) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    while (P.started < n - 1) {
        int ith = P.started + 1;
        start_gen[ith] = atomic_load(&P.gen);
        if (pthread_create(&P.tid[ith], NULL, worker, (void *)(intptr_t)ith) != 0) break;
        pthread_detach(P.tid[ith]);
        P.started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    P.nth = P.started + 1 < n ? P.started + 1 : n;
}

void nr_parallel_for(int64_t n, int64_t grain, nr_task_fn fn, void *ctx) {
    if (n <= 0) return;
    if (in_task >= 0) {
        fn(ctx, 0, n, in_task);
        return;
    }
    if (grain < 1) grain = 1;
    int64_t nth = P.nth;
    if (nth > n / grain) nth = n / grain;
    if (nth <= 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    P.fn = fn;
    P.ctx = ctx;
    P.n = n;
    P.job_nth = (int)nth;
    P.grain = grain;
    atomic_store_explicit(&P.next, 0, memory_order_relaxed);
    atomic_store(&P.pending, P.started);
    pthread_mutex_lock(&P.mu);
    atomic_fetch_add_explicit(&P.gen, 1, memory_order_release);
    pthread_cond_broadcast(&P.cv);
    pthread_mutex_unlock(&P.mu);
    run_chunks(0);
    /* spin a little (the common case: the worker is a few microseconds
       behind), then yield so a descheduled worker gets the core */
    for (int spins = 0; atomic_load_explicit(&P.pending, memory_order_acquire) > 0; spins++)
        if (spins > 4000) sched_yield();
}

/* ------------------------------------------------------------ scratch */

static struct { float *p; size_t n; } scratch[MAXTHREADS];

float *nr_scratch(int ith, size_t nfloat) {
    NR_ASSERT(ith >= 0 && ith < MAXTHREADS);
    if (scratch[ith].n < nfloat) {
        free(scratch[ith].p);
        size_t bytes = (nfloat * sizeof(float) + 63) & ~(size_t)63;
        scratch[ith].p = aligned_alloc(64, bytes);
        scratch[ith].n = scratch[ith].p ? nfloat : 0;
    }
    return scratch[ith].p;
}
