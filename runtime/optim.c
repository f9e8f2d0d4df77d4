/*
** optim.c -- optimizer kernels over one parameter tensor (the hot loops of
** nasrt.optim): SGD with momentum/dampening/Nesterov/weight decay, Adam and
** AdamW with bias corrections, and gradient-norm helpers.  The formulas are
** torch.optim's (1.13, single-tensor path), evaluated in float32 as torch does.
*/
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static nr_status check_pair(const char *fn, const char *what, const nr_tensor *p,
                            const nr_tensor *t) {
    char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
    if (!t) return NR_OK;
    if (!nr_same_shape(p, t))
        return nr_seterror(NR_ESHAPE, "%s: %s %s does not match parameter %s", fn, what,
                           nr_shape_str(t, b1), nr_shape_str(p, b2));
    if (!nr_is_contiguous(t))
        return nr_seterror(NR_EUSAGE, "%s: %s must be contiguous", fn, what);
    return NR_OK;
}

/* ------------------------------------------------------------------ SGD */

typedef struct {
    float *p, *buf;
    const float *g;
    float lr, mom, damp, wd;
    int nesterov, first;
} sgd_job;

static void sgd_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    sgd_job *j = ctx;
    float *restrict p = j->p, *restrict buf = j->buf;
    const float *restrict g = j->g;
    const float lr = j->lr, mom = j->mom, damp1 = 1.0f - j->damp, wd = j->wd;
    for (int64_t i = i0; i < i1; i++) {
        float d = g[i];
        if (wd != 0.0f) d += wd * p[i];
        if (mom != 0.0f) {
            float b = j->first ? d : mom * buf[i] + damp1 * d;
            buf[i] = b;
            d = j->nesterov ? d + mom * b : b;
        }
        p[i] -= lr * d;
    }
}

nr_status nr_sgd_step(nr_tensor *p, const nr_tensor *g, nr_tensor *buf,
                      const nr_sgd_params *hp, int first) {
    nr_status st;
    if (!nr_is_contiguous(p)) return nr_seterror(NR_EUSAGE, "sgd_step: parameter must be contiguous");
    if ((st = check_pair("sgd_step", "gradient", p, g)) != NR_OK) return st;
    if (!g) return nr_seterror(NR_EUSAGE, "sgd_step: missing gradient");
    if (hp->momentum != 0.0 && !buf)
        return nr_seterror(NR_EUSAGE, "sgd_step: momentum needs a buffer");
    if ((st = check_pair("sgd_step", "momentum buffer", p, buf)) != NR_OK) return st;
    sgd_job j = {nr_data(p), buf ? nr_data(buf) : NULL, nr_data(g), (float)hp->lr,
                 (float)hp->momentum, (float)hp->dampening, (float)hp->weight_decay,
                 hp->nesterov, first};
    nr_parallel_for(nr_numel(p), 16384, sgd_task, &j);
    return NR_OK;
}

/* ----------------------------------------------------------------- Adam */

typedef struct {
    float *p, *m, *v, *vmax;
    const float *g;
    float lr, b1, b2, eps, wd, step_size, bc2_sqrt;
    int decoupled;
} adam_job;

static void adam_task(void *ctx, int64_t i0, int64_t i1, int ith) {
    adam_job *j = ctx;
    float *restrict p = j->p, *restrict m = j->m, *restrict v = j->v, *restrict vmax = j->vmax;
    const float *restrict g = j->g;
    const float b1 = j->b1, b2 = j->b2, eps = j->eps, wd = j->wd;
    const float step_size = j->step_size, bc2s = j->bc2_sqrt;
    const float decay = 1.0f - j->lr * wd;
    for (int64_t i = i0; i < i1; i++) {
        float gi = g[i];
        if (wd != 0.0f) {
            if (j->decoupled) p[i] *= decay;
            else gi += wd * p[i];
        }
        float mi = m[i] * b1 + (1.0f - b1) * gi;
        float vi = v[i] * b2 + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        if (vmax) {
            if (vi > vmax[i]) vmax[i] = vi;
            vi = vmax[i];
        }
        float denom = sqrtf(vi) / bc2s + eps;
        p[i] -= step_size * (mi / denom);
    }
}

nr_status nr_adam_step(nr_tensor *p, const nr_tensor *g, nr_tensor *m, nr_tensor *v,
                       nr_tensor *vmax, int64_t step, const nr_adam_params *hp) {
    nr_status st;
    if (!nr_is_contiguous(p)) return nr_seterror(NR_EUSAGE, "adam_step: parameter must be contiguous");
    if (!g || !m || !v) return nr_seterror(NR_EUSAGE, "adam_step: missing gradient or state");
    if (hp->amsgrad && !vmax) return nr_seterror(NR_EUSAGE, "adam_step: amsgrad needs max_exp_avg_sq");
    if ((st = check_pair("adam_step", "gradient", p, g)) != NR_OK) return st;
    if ((st = check_pair("adam_step", "exp_avg", p, m)) != NR_OK) return st;
    if ((st = check_pair("adam_step", "exp_avg_sq", p, v)) != NR_OK) return st;
    if ((st = check_pair("adam_step", "max_exp_avg_sq", p, vmax)) != NR_OK) return st;
    if (step < 1) return nr_seterror(NR_EUSAGE, "adam_step: step must be >= 1, got %lld", (long long)step);
    double bc1 = 1.0 - pow(hp->beta1, (double)step);
    double bc2 = 1.0 - pow(hp->beta2, (double)step);
    adam_job j = {nr_data(p), nr_data(m), nr_data(v), hp->amsgrad ? nr_data(vmax) : NULL,
                  nr_data(g), (float)hp->lr, (float)hp->beta1, (float)hp->beta2,
                  (float)hp->eps, (float)hp->weight_decay, (float)(hp->lr / bc1),
                  (float)sqrt(bc2), hp->decoupled};
    nr_parallel_for(nr_numel(p), 16384, adam_task, &j);
    return NR_OK;
}

/* ---------------------------------------------------------- grad norms */

#define NORM_BLOCK 8192

typedef struct {
    const float *g;
    int64_t n;
    double q;       /* norm type; INFINITY: max */
    double *part;   /* one per block */
} norm_job;

static void norm_task(void *ctx, int64_t b0, int64_t b1, int ith) {
    norm_job *j = ctx;
    for (int64_t b = b0; b < b1; b++) {
        int64_t i0 = b * NORM_BLOCK, i1 = i0 + NORM_BLOCK < j->n ? i0 + NORM_BLOCK : j->n;
        double s = 0;
        if (isinf(j->q)) {
            for (int64_t i = i0; i < i1; i++) {
                double a = fabs((double)j->g[i]);
                if (a > s) s = a;
            }
        } else if (j->q == 2.0) {
            for (int64_t i = i0; i < i1; i++) s += (double)j->g[i] * j->g[i];
        } else if (j->q == 1.0) {
            for (int64_t i = i0; i < i1; i++) s += fabs((double)j->g[i]);
        } else {
            for (int64_t i = i0; i < i1; i++) s += pow(fabs((double)j->g[i]), j->q);
        }
        j->part[b] = s;
    }
}

double nr_norm_partial(const nr_tensor *g, double norm_type) {
    nr_tensor *c = nr_is_contiguous(g) ? (nr_tensor *)g : nr_tensor_clone(g);
    if (!c) return NAN;
    if (c == g) nr_tensor_retain(c);
    int64_t n = nr_numel(c);
    int64_t nb = (n + NORM_BLOCK - 1) / NORM_BLOCK;
    double *part = malloc((size_t)(nb > 0 ? nb : 1) * sizeof *part);
    if (!part) {
        nr_tensor_release(c);
        return NAN;
    }
    norm_job j = {nr_data(c), n, norm_type, part};
    nr_parallel_for(nb, 4, norm_task, &j);
    double s = 0;
    for (int64_t b = 0; b < nb; b++) {
        if (isinf(norm_type)) s = part[b] > s ? part[b] : s;
        else s += part[b];
    }
    free(part);
    nr_tensor_release(c);
    return s;
}

/* Exponent bits all ones: NaN or +-Inf.  Bit tests rather than isfinite()
   so the check survives fast-math flags, and the block loop vectorises. */
#define FINITE_BLOCK 4096

static int nonfinite(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x7f800000u) == 0x7f800000u;
}

int64_t nr_first_nonfinite(const nr_tensor *t, float *value) {
    nr_tensor *c = nr_is_contiguous(t) ? (nr_tensor *)t : nr_tensor_clone(t);
    if (!c) return -2;
    if (c == t) nr_tensor_retain(c);
    const float *d = nr_data(c);
    int64_t n = nr_numel(c), found = -1;
    for (int64_t i0 = 0; i0 < n && found < 0; i0 += FINITE_BLOCK) {
        int64_t i1 = i0 + FINITE_BLOCK < n ? i0 + FINITE_BLOCK : n;
        int any = 0;
        for (int64_t i = i0; i < i1; i++) any |= nonfinite(d[i]);
        if (!any) continue;
        for (int64_t i = i0; i < i1; i++) {
            if (nonfinite(d[i])) {
                found = i;
                if (value) *value = d[i];
                break;
            }
        }
    }
    nr_tensor_release(c);
    return found;
}

nr_status nr_scale_inplace(nr_tensor *g, float s) {
    if (nr_is_contiguous(g)) {
        float *d = nr_data(g);
        for (int64_t i = 0, n = nr_numel(g); i < n; i++) d[i] *= s;
        return NR_OK;
    }
    nr_tensor *c = nr_tensor_clone(g);
    if (!c) return nr_seterror(NR_ENOMEM, "scale_inplace: out of memory");
    float *d = nr_data(c);
    for (int64_t i = 0, n = nr_numel(c); i < n; i++) d[i] *= s;
    nr_copy_into(g, c);
    nr_tensor_release(c);
    return NR_OK;
}
