/*
** sampler.h -- sampling primitives over categorical search spaces (no Lua).
**
** A search space is a list of per-gene choice counts choices[0..n-1]; an
** architecture is an int32 vector arch[g] in [0, choices[g]) (0-based here;
** the Lua binding shows 1-based indices).  Every function draws from an
** explicit nr_rng, so a sampler that owns its generator is reproducible and
** its state (4 words, plus whatever the caller keeps) restores it exactly.
**
** What lives here is what the samplers of SPOS, FairNAS and AttentiveNAS
** share: uniform draws, permutations (strict fairness), mutation and
** crossover (evolution), categorical draws from cumulative tables, the
** additive FLOPs model and the AttentiveNAS conditional tables.  Loops that
** call back into a scripting language live in the binding.
*/
#ifndef NASRT_SAMPLER_H
#define NASRT_SAMPLER_H

#include "nasrt.h"

/* Uniform integer in [0, n), n >= 1, unbiased (Lemire's method). */
NR_API uint32_t nr_rng_below(nr_rng *r, uint32_t n);
/* Uniform double in [0, 1) with 53 random bits. */
NR_API double nr_rng_double(nr_rng *r);

/* arch[g] uniform in [0, choices[g]) for g in [0, n). */
NR_API void nr_sample_uniform(nr_rng *r, int n, const int32_t *choices, int32_t *arch);

/* perm = a uniformly random permutation of 0..m-1 (Fisher-Yates). */
NR_API void nr_permutation(nr_rng *r, int m, int32_t *perm);

/* child = parent with each gene resampled with probability prob, uniformly
   over its choices (may keep the value: SPOS/NNI), or over the other
   choices when force_different (AttentiveNAS mutate_and_reset).  A gene
   with one choice never changes.  child may alias parent. */
NR_API void nr_mutate(nr_rng *r, int n, const int32_t *choices, double prob,
                      int force_different, const int32_t *parent, int32_t *child);
/* child = parent with exactly one gene (uniform among genes with more than
   one choice) set to a different value (NAS-Bench-201 REA).  child may
   alias parent; an all-fixed space leaves the copy unchanged. */
NR_API void nr_mutate_one(nr_rng *r, int n, const int32_t *choices,
                          const int32_t *parent, int32_t *child);
/* child[g] = a[g] or b[g] with probability 1/2 each (uniform crossover). */
NR_API void nr_crossover(nr_rng *r, int n, const int32_t *a, const int32_t *b,
                         int32_t *child);

/* Index i in [0, k) drawn with probability (cum[i] - cum[i-1]) / cum[k-1],
   cum nondecreasing with cum[k-1] > 0. */
NR_API int nr_sample_cum(nr_rng *r, int k, const double *cum);

/* Python's round(flops / step): nearest integer, ties to even.  The FLOPs
   bin of AttentiveNAS is nr_flops_bin(f, step) * step. */
NR_API int64_t nr_flops_bin(double flops, double step);

/* ------------------------------------------------- additive FLOPs model */

/* flops(arch) = base + sum_g cost[off[g] + arch[g]], the fast path for
   chain supernets whose genes contribute independently.  off has n + 1
   entries (prefix sums of choices). */
typedef struct {
    int n;
    double base;
    const int32_t *off;
    const double *cost;
} nr_flops_add;
NR_API double nr_flops_additive(const nr_flops_add *m, const int32_t *arch);

/* -------------------------------------------------- strict fairness */

/* FairNAS strict fairness, with nnabla-nas's bookkeeping: each of the n
   genes keeps a permutation of its m choices (row g of perm, n*m entries)
   and a pointer pos (shared: all genes advance together).  nr_fair_next
   redraws every permutation when pos == m, then returns column pos and
   advances; so every block of m consecutive draws after a redraw uses each
   choice of each gene exactly once. */
typedef struct {
    int n, m, pos;
    int32_t *perm;   /* caller-owned, n * m */
} nr_fair;
NR_API void nr_fair_redraw(nr_fair *f, nr_rng *r);
NR_API void nr_fair_next(nr_fair *f, nr_rng *r, int32_t *arch);

/* ------------------------------------------ AttentiveNAS ArchSampler */

/* Tables of the FLOPs-constrained sampler, built from a set of (arch,
   FLOPs) observations:
     bins[t]            FLOPs bin numbers k (tau = k * step), ascending;
     prior_cum[t]       cumulative counts of bin t (the prior pi(tau));
     cond_cum[t*tot + off[g] + v]
                        cumulative counts of gene g taking value <= v among
                        observations of bin t (P(gene = v | tau), genes
                        conditionally independent given tau).
   All arrays are caller-owned; nr_attn_count gives the sizes. */
typedef struct {
    int n;                 /* genes */
    const int32_t *choices;
    const int32_t *off;    /* n + 1 prefix sums; tot = off[n] */
    int nbins;
    int64_t *bins;
    double *prior_cum;
    double *cond_cum;
} nr_attn;

/* Distinct bins of nobs FLOPs values: writes them ascending into bins
   (room for nobs) and returns how many. */
NR_API int nr_attn_count(int nobs, const double *flops, double step, int64_t *bins);
/* Fills prior_cum and cond_cum from nobs archs (row-major nobs x n, each
   valid for choices) whose bins are all in a->bins.  a->bins/nbins must
   come from nr_attn_count over the same flops. */
NR_API void nr_attn_fill(nr_attn *a, int nobs, const int32_t *archs, const double *flops,
                         double step);
/* Position of bin k in a->bins, or -1. */
NR_API int nr_attn_find(const nr_attn *a, int64_t k);
/* A bin index t drawn from the prior, or uniformly over the observed bins. */
NR_API int nr_attn_target(const nr_attn *a, nr_rng *r, int flops_uniform);
/* arch drawn gene by gene from P(gene | bin t). */
NR_API void nr_attn_draw(const nr_attn *a, int t, nr_rng *r, int32_t *arch);

#endif
