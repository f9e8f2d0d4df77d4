/*
** nasrt.h -- the public C API of the nasrt runtime (no Lua in here).
**
** A tiny tour, the way a user of the C core writes one step:
**
**     nr_tensor *x = nr_tensor_randn(4, (int64_t[]){64, 1, 28, 28}, NULL);
**     nr_tensor *w = nr_tensor_randn(4, (int64_t[]){16, 1, 3, 3}, NULL);
**     w->requires_grad = 1;                        // a leaf that wants .grad
**     nr_tensor *y = NULL;
**     nr_conv_params cp = {.stride = {1, 1}, .padding = {1, 1},
**                          .dilation = {1, 1}, .groups = 1};
**     if (nr_conv2d(&y, x, w, NULL, &cp) != NR_OK)  // records a tape node
**         fprintf(stderr, "%s\n", nr_lasterror());
**     nr_tensor *loss = NULL;
**     nr_sum(&loss, y, 0, 0);                      // 0 = all dims
**     nr_backward(loss, NULL);                     // w->grad += dloss/dw
**     nr_tensor_release(loss); ...
**
** Ownership: functions named *_new, *_view, *_clone and every op's `out`
** argument hand the caller a +1 reference; release it with
** nr_tensor_release.  Getters return borrowed pointers.  Ops never take over
** their inputs' references.
**
** Errors: every op returns nr_status.  On failure the details are in
** nr_lasterror() (thread-local), `*out` is left NULL, and nothing leaks.
** Only bugs abort (NR_ASSERT).
**
** Autograd: an op whose inputs need a gradient (leaf with requires_grad, or
** produced by a recorded op) attaches a node to its output while grad mode is
** on.  The node holds +1 on its inputs and on what it saved.  nr_backward
** walks the nodes in reverse topological order and frees each node's saved
** state as soon as its backward has run, so memory stays flat across steps.
*/
#ifndef NASRT_H
#define NASRT_H

#include <stddef.h>
#include <stdint.h>

#define NR_VERSION "0.1.0"
#define NR_MAXDIM 8
#define NR_MAXIN 16
#define NR_MAXSAVED 4

#if defined(__GNUC__)
#define NR_API __attribute__((visibility("default")))
#else
#define NR_API
#endif

/* ---------------------------------------------------------------- status */

typedef enum {
    NR_OK = 0,
    NR_EUSAGE,  /* bad argument or option */
    NR_ESHAPE,  /* shapes do not fit */
    NR_ENOMEM,  /* allocation failed or size overflows */
    NR_EABORT,  /* interrupted (Ctrl-C) */
    NR_EIO      /* file missing, truncated or corrupt */
} nr_status;

/* Formats a message into the thread-local error buffer and returns st. */
NR_API nr_status nr_seterror(nr_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
NR_API const char *nr_lasterror(void);

NR_API void nr_abort_(const char *file, int line, const char *cond);
#define NR_ASSERT(c) ((c) ? (void)0 : nr_abort_(__FILE__, __LINE__, #c))

/* -------------------------------------------------------------- storage */

typedef struct nr_storage {
    int refcount;
    size_t bytes;
    float *data;      /* 64-byte aligned */
} nr_storage;

/* +1; data uninitialised.  NULL (and nr_lasterror) on failure. */
NR_API nr_storage *nr_storage_new(size_t nfloat);
NR_API void nr_storage_retain(nr_storage *s);
NR_API void nr_storage_release(nr_storage *s);
/* Bytes held by all live storages of this process. */
NR_API size_t nr_live_bytes(void);
NR_API size_t nr_peak_bytes(void);
/* Bytes of freed blocks the allocator keeps for reuse. */
NR_API size_t nr_cached_bytes(void);
NR_API void nr_reset_peak_bytes(void);
/* Drops the allocator's cache of freed blocks (returns memory to the OS). */
NR_API void nr_storage_trim(void);

/* --------------------------------------------------------------- tensor */

struct nr_node;

typedef struct nr_tensor {
    int refcount;
    int ndim;
    int64_t ne[NR_MAXDIM];     /* sizes */
    int64_t st[NR_MAXDIM];     /* strides, in elements */
    int64_t offset;            /* in elements, into storage */
    nr_storage *storage;       /* +1 */
    struct nr_tensor *grad;    /* +1 or NULL: accumulated gradient (leaves) */
    struct nr_node *node;      /* +1 or NULL: the op that produced it */
    int requires_grad;
} nr_tensor;

static inline float *nr_data(const nr_tensor *t) {
    return t->storage->data + t->offset;
}

/* All return +1, or NULL with nr_lasterror set (bad shape, out of memory). */
NR_API nr_tensor *nr_tensor_empty(int ndim, const int64_t *ne);
NR_API nr_tensor *nr_tensor_zeros(int ndim, const int64_t *ne);
NR_API nr_tensor *nr_tensor_full(int ndim, const int64_t *ne, float v);
NR_API nr_tensor *nr_tensor_empty_like(const nr_tensor *t);
NR_API nr_tensor *nr_tensor_zeros_like(const nr_tensor *t);
/* Uniform [0,1) / standard normal from the global generator. */
NR_API nr_tensor *nr_tensor_rand(int ndim, const int64_t *ne);
NR_API nr_tensor *nr_tensor_randn(int ndim, const int64_t *ne);
/* A contiguous copy, no tape. */
NR_API nr_tensor *nr_tensor_clone(const nr_tensor *t);
/* Shares storage, no node, no grad. */
NR_API nr_tensor *nr_tensor_detach(const nr_tensor *t);

NR_API void nr_tensor_retain(nr_tensor *t);
NR_API void nr_tensor_release(nr_tensor *t);   /* NULL is fine */

NR_API int64_t nr_numel(const nr_tensor *t);
NR_API int nr_is_contiguous(const nr_tensor *t);
NR_API int nr_same_shape(const nr_tensor *a, const nr_tensor *b);
/* "[64,16,28,28]" into buf (at least 96 bytes); returns buf. */
NR_API char *nr_shape_str(const nr_tensor *t, char *buf);
#define NR_SHAPEBUF 160
/* Copies src into dst elementwise (same numel, any strides). */
NR_API void nr_copy_into(nr_tensor *dst, const nr_tensor *src);
/* Validates a shape: 0 <= ndim <= NR_MAXDIM, sizes >= 0, numel fits. */
NR_API nr_status nr_check_shape(const char *fn, int ndim, const int64_t *ne);

/* ------------------------------------------------------------------ RNG */

/* xoshiro128+-style generator of our own; state is 4 x uint64 (Philox-free,
   portable, identical across platforms). */
typedef struct nr_rng { uint64_t s[4]; } nr_rng;
NR_API void nr_rng_seed(nr_rng *r, uint64_t seed);
NR_API uint64_t nr_rng_next(nr_rng *r);
NR_API float nr_rng_uniform(nr_rng *r);       /* [0,1) */
NR_API float nr_rng_normal(nr_rng *r);        /* N(0,1) */
NR_API nr_rng *nr_rng_global(void);
NR_API void nr_manual_seed(uint64_t seed);

/* -------------------------------------------------------------- threads */

/* Runs fn(ctx, i0, i1, ith) over [0, n) split into nth contiguous chunks
   (static, so results never depend on timing).  grain: minimum items per
   thread; small loops run inline on the caller. */
typedef void (*nr_task_fn)(void *ctx, int64_t i0, int64_t i1, int ith);
NR_API void nr_parallel_for(int64_t n, int64_t grain, nr_task_fn fn, void *ctx);
NR_API int nr_num_threads(void);
NR_API void nr_set_num_threads(int n);
/* Per-thread scratch (grows, never shrinks; 64-byte aligned). Valid until the
   next call with the same ith.  NULL on out of memory. */
NR_API float *nr_scratch(int ith, size_t nfloat);
/* Abort flag, set by the host's SIGINT handler; ops poll it. */
NR_API void nr_set_abort(int on);
NR_API int nr_aborted(void);

/* ----------------------------------------------------------------- BLAS */

/* C = alpha * op(A) * op(B) + beta * C, row-major, single-threaded sgemm
   (the pool splits work above it).  lda/ldb/ldc are row strides. */
NR_API void nr_gemm(int transa, int transb, int64_t m, int64_t n, int64_t k,
                    float alpha, const float *a, int64_t lda,
                    const float *b, int64_t ldb,
                    float beta, float *c, int64_t ldc);

/* Sets up OpenBLAS (single-threaded) and the pool with nthreads (<= 0:
   NASRT_THREADS from the environment, else the number of cores). */
NR_API void nr_runtime_init(int nthreads);

/* ------------------------------------------------------------- autograd */

typedef union {
    int64_t i[16];
    double f[8];
} nr_params_u;

struct nr_node;
/* Adds d(loss)/d(in[i]) into gin[i] (contiguous, shape of in[i]); gin[i] is
   NULL when input i needs no gradient.  Accumulates, except into a gin[i]
   whose bit is set in n->fresh: that one is uninitialised and must be
   written whole (only for inputs whose bit the op set in n->writes). */
typedef nr_status (*nr_bwd_fn)(struct nr_node *n, const nr_tensor *gout,
                               nr_tensor *const *gin);

typedef struct nr_node {
    int refcount;
    const char *name;              /* op name, for messages */
    nr_bwd_fn bwd;                 /* NULL once backward has consumed it */
    int n_in;
    nr_tensor *in[NR_MAXIN];       /* +1 each, may be NULL */
    nr_tensor *saved[NR_MAXSAVED]; /* +1 each: extra tensors kept for bwd */
    nr_params_u p;                 /* the op's parameters */
    void *extra;                   /* malloc'ed op state, freed with the node */
    int out_ndim;
    int64_t out_ne[NR_MAXDIM];
    nr_tensor *gout;               /* gradient accumulator during backward */
    int mark;                      /* traversal scratch */
    unsigned writes;               /* inputs whose fresh gradient bwd writes (bit i) */
    unsigned fresh;                /* set by nr_backward: gin[i] is new, write it */
} nr_node;

/* Grad mode (thread-local; on by default). Returns the previous mode. */
NR_API int nr_set_grad_enabled(int on);
NR_API int nr_grad_enabled(void);
/* True when t takes part in differentiation. */
static inline int nr_needs_grad(const nr_tensor *t) {
    return t && (t->requires_grad || t->node);
}
/* If grad mode is on and any input needs a gradient, creates a node for
   `out` (retaining the inputs) and returns it (borrowed: out owns it).
   Otherwise returns NULL and the op records nothing. */
NR_API nr_node *nr_record(nr_tensor *out, const char *name, nr_bwd_fn bwd,
                          int n_in, nr_tensor *const *in);
/* Retains t into n->saved[slot]. */
NR_API void nr_save(nr_node *n, int slot, nr_tensor *t);
/* For ops whose backward needs only the shape of input i (pool, cat, ReLU
   that saved its output, ...): replaces n->in[i] by a header with the same
   shape and producer node but no storage, so the tape does not keep the
   input's data alive on this op's account.  Leaves are kept as they are. */
NR_API void nr_forget_input(nr_node *n, int i);
/* A new header sharing out's storage, with no node: what a node may keep of
   its own output without making a reference cycle. +1 */
NR_API nr_tensor *nr_alias(const nr_tensor *t);
/* Backpropagates from root. gout may be NULL for a one-element root.
   Frees every visited node's saved state. */
NR_API nr_status nr_backward(nr_tensor *root, const nr_tensor *gout);
/* What the tape behind root keeps alive: calls fn(ud, what, bytes) once for
   each distinct storage held by a node (an input or a saved tensor), where
   `what` names the op that produced it ("conv2d", ...), "parameter",
   "input", or "saved by <op>" for state an op saved of its own.  Returns
   the total bytes.  fn may be NULL.  Memory an op keeps in its node's
   `extra` is not counted. */
typedef void (*nr_tape_fn)(void *ud, const char *what, size_t bytes);
NR_API size_t nr_tape_memory(const nr_tensor *root, nr_tape_fn fn, void *ud);

/* ---------------------------------------------------------------- ops */
/* Every op: out is set to a new +1 tensor, inputs are borrowed.  Inputs may
   be non-contiguous; ops make contiguous copies where they need them.
   Dims are 0-based in C (the Lua layer maps 1-based and negative dims). */

/* elementwise, numpy broadcasting */
NR_API nr_status nr_add(nr_tensor **out, const nr_tensor *a, const nr_tensor *b);
NR_API nr_status nr_sub(nr_tensor **out, const nr_tensor *a, const nr_tensor *b);
NR_API nr_status nr_mul(nr_tensor **out, const nr_tensor *a, const nr_tensor *b);
NR_API nr_status nr_div(nr_tensor **out, const nr_tensor *a, const nr_tensor *b);
/* out = a * s + c */
NR_API nr_status nr_affine_scalar(nr_tensor **out, const nr_tensor *a, float s, float c);
/* out = s / a */
NR_API nr_status nr_rdiv_scalar(nr_tensor **out, const nr_tensor *a, float s);
NR_API nr_status nr_pow_scalar(nr_tensor **out, const nr_tensor *a, float e);

typedef enum {
    NR_U_NEG, NR_U_RELU, NR_U_SIGMOID, NR_U_TANH, NR_U_EXP, NR_U_LOG,
    NR_U_SQRT, NR_U_ABS, NR_U_RELU6  /* relu6: min(max(x, 0), 6) */
} nr_unary;
NR_API nr_status nr_unary_op(nr_tensor **out, const nr_tensor *a, nr_unary op);

/* reductions: dim < 0 means over all elements (result has 0 dims) */
NR_API nr_status nr_sum(nr_tensor **out, const nr_tensor *a, int dim, int keepdim);
NR_API nr_status nr_mean(nr_tensor **out, const nr_tensor *a, int dim, int keepdim);
NR_API nr_status nr_max_dim(nr_tensor **out, nr_tensor **idx, const nr_tensor *a,
                            int dim, int keepdim);  /* idx may be NULL; not differentiable wrt idx */

/* shape ops (views where possible, differentiable) */
NR_API nr_status nr_reshape(nr_tensor **out, const nr_tensor *a, int ndim, const int64_t *ne);
NR_API nr_status nr_contiguous(nr_tensor **out, const nr_tensor *a);
NR_API nr_status nr_narrow(nr_tensor **out, const nr_tensor *a, int dim,
                           int64_t start, int64_t len);
NR_API nr_status nr_transpose(nr_tensor **out, const nr_tensor *a, int d0, int d1);
NR_API nr_status nr_cat(nr_tensor **out, int n, nr_tensor *const *xs, int dim);
/* pad the last len/2 dims: pads = {left_last, right_last, left_prev, ...}
   as torch.nn.functional.pad, constant value */
NR_API nr_status nr_pad(nr_tensor **out, const nr_tensor *a, int npad,
                        const int64_t *pads, float value);
/* x[..., off_h::s, off_w::s] on the last two dims */
NR_API nr_status nr_subsample(nr_tensor **out, const nr_tensor *a, int64_t stride,
                              int64_t off_h, int64_t off_w);

/* matmul: [m,k]x[k,n]; batched [b,m,k]x[b,k,n] */
NR_API nr_status nr_matmul(nr_tensor **out, const nr_tensor *a, const nr_tensor *b);
/* x[..., in] w[out, in] b[out] */
NR_API nr_status nr_linear(nr_tensor **out, const nr_tensor *x, const nr_tensor *w,
                           const nr_tensor *b);

typedef struct {
    int64_t stride[2], padding[2], dilation[2];
    int64_t groups;
} nr_conv_params;
NR_API nr_status nr_conv2d(nr_tensor **out, const nr_tensor *x, const nr_tensor *w,
                           const nr_tensor *b, const nr_conv_params *p);

/* relu(x) (when relu != 0) -> depthwise conv with wd [C,1,kh,kw] (stride,
   padding, dilation of p; p->groups is ignored) -> 1x1 conv with wp
   [Co,C,1,1]: DARTS' SepConv/DilConv body as one op.  Keeps only x and the
   weights for backward, which recomputes the depthwise output. */
NR_API nr_status nr_sep_conv2d(nr_tensor **out, const nr_tensor *x, const nr_tensor *wd,
                               const nr_tensor *wp, const nr_conv_params *p, int relu);

typedef struct {
    int64_t kernel[2], stride[2], padding[2];
    int count_include_pad;
    int ceil_mode;
} nr_pool_params;
NR_API nr_status nr_max_pool2d(nr_tensor **out, const nr_tensor *x, const nr_pool_params *p);
NR_API nr_status nr_avg_pool2d(nr_tensor **out, const nr_tensor *x, const nr_pool_params *p);
NR_API nr_status nr_adaptive_avg_pool2d(nr_tensor **out, const nr_tensor *x,
                                        int64_t oh, int64_t ow);

typedef struct {
    int training;
    double momentum, eps;
} nr_bn_params;
/* running_mean/var updated in place when training (may be NULL); weight and
   bias may be NULL (affine=false). */
NR_API nr_status nr_batch_norm(nr_tensor **out, const nr_tensor *x,
                               nr_tensor *running_mean, nr_tensor *running_var,
                               const nr_tensor *weight, const nr_tensor *bias,
                               const nr_bn_params *p);

NR_API nr_status nr_softmax(nr_tensor **out, const nr_tensor *x, int dim);
NR_API nr_status nr_log_softmax(nr_tensor **out, const nr_tensor *x, int dim);
/* logits [N,K], targets [N] holding class ids 0..K-1 as floats; mean loss */
NR_API nr_status nr_cross_entropy(nr_tensor **out, const nr_tensor *logits,
                                  const nr_tensor *targets, double label_smoothing);

/* Mixed ops (the DARTS / AGNAS edge), fused so no k-fold temporaries are
   made.  n <= NR_MAXIN - 1 inputs of one shape [N,C,...].
   weighted_sum: out = sum_k w[k] * xs[k], w a 1-D tensor of n weights.
   attn_sum:     out[b,c,...] = sum_k xs[k][b,c,...] * a[b, k*C + c],
                 a of shape [N, n*C] (the AGNAS per-sample channel weights). */
NR_API nr_status nr_weighted_sum(nr_tensor **out, int n, nr_tensor *const *xs,
                                 const nr_tensor *w);
NR_API nr_status nr_attn_sum(nr_tensor **out, int n, nr_tensor *const *xs,
                             const nr_tensor *a);

/* ------------------------------------------------------------------ I/O */
NR_API nr_status nr_npy_load(nr_tensor **out, const char *path);
NR_API nr_status nr_npy_save(const char *path, const nr_tensor *t);

/* helpers for op implementers (runtime/ops_util.c) */
/* Retained contiguous version of a (a itself if already contiguous; else a
   recorded copy so gradients still flow). NULL on error. */
NR_API nr_tensor *nr_contig(const nr_tensor *a);
/* dst += src, same shape, any strides (dst may be a view into a gradient). */
NR_API void nr_acc_into(nr_tensor *dst, const nr_tensor *src);

#endif
