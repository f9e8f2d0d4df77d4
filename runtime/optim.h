/*
** optim.h -- training-time kernels that are not plain ops of the tape:
** dropout (needs the generator) and the optimizer updates (SGD, Adam) over
** one parameter tensor with its state tensors, plus gradient-norm helpers.
** No Lua in here; modules/bind_optim.c binds them as nasrt._optim and
** F.dropout.
*/
#ifndef NASRT_OPTIM_H
#define NASRT_OPTIM_H

#include "nasrt.h"

/* Inverted dropout: out = x * mask / (1 - p) where mask ~ Bernoulli(1 - p)
   drawn from rng (NULL: the global generator), so E[out] = x.  Differentiable
   (the backward reuses the mask).  When training is 0 or p == 0, out is x
   itself (+1, same tensor, as torch returns its input).  p == 1 gives zeros.
   Errors: NR_EUSAGE when p is outside [0, 1]. */
NR_API nr_status nr_dropout(nr_tensor **out, const nr_tensor *x, double p, int training,
                            nr_rng *rng);

/* Hyper-parameters of one SGD update (torch.optim.SGD semantics). */
typedef struct {
    double lr, momentum, dampening, weight_decay;
    int nesterov;
} nr_sgd_params;

/* One SGD step of parameter p (contiguous) with gradient g (same shape):
       d = g + wd * p
       if momentum != 0:
           buf = first ? d : momentum * buf + (1 - dampening) * d
           d = nesterov ? d + momentum * buf : buf
       p -= lr * d
   buf may be NULL only when momentum == 0.  Borrowed pointers; p and buf
   are updated in place, never recorded on the tape.
   Errors: NR_ESHAPE (shapes differ), NR_EUSAGE (non-contiguous tensors). */
NR_API nr_status nr_sgd_step(nr_tensor *p, const nr_tensor *g, nr_tensor *buf,
                             const nr_sgd_params *hp, int first);

/* Hyper-parameters of one Adam update (torch.optim.Adam / AdamW). */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    int decoupled;   /* 1: AdamW (p *= 1 - lr*wd); 0: L2 added to the gradient */
    int amsgrad;     /* keep the running max of exp_avg_sq in vmax */
} nr_adam_params;

/* One Adam step; `step` is the 1-based count including this step (for the
   bias corrections 1 - beta^step).  m, v (and vmax with amsgrad) have p's
   shape, start at zero and are updated in place.
   Errors: NR_ESHAPE, NR_EUSAGE as nr_sgd_step. */
NR_API nr_status nr_adam_step(nr_tensor *p, const nr_tensor *g, nr_tensor *m, nr_tensor *v,
                              nr_tensor *vmax, int64_t step, const nr_adam_params *hp);

/* sum(|g|^norm_type) of one tensor in double (norm_type = inf: max |g|).
   Elements combine in fixed blocks, so the result does not depend on the
   thread count.  NaN on out of memory. */
NR_API double nr_norm_partial(const nr_tensor *g, double norm_type);

/* g *= s in place (contiguous or not).  Errors: NR_ENOMEM. */
NR_API nr_status nr_scale_inplace(nr_tensor *g, float s);

/* The 0-based flat (row-major) index of t's first NaN or +-Inf element, -1
   when every element is finite; *value gets that element.  One pass over
   the data (the divergence check of the optimizers and checkpoints);
   -2 on out of memory (a non-contiguous t is copied first). */
NR_API int64_t nr_first_nonfinite(const nr_tensor *t, float *value);

#endif
