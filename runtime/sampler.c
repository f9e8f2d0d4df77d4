/*
** sampler.c -- sampling primitives over categorical search spaces: uniform
** draws, permutations, mutation/crossover, categorical tables, the additive
** FLOPs model and the AttentiveNAS conditional tables.  See sampler.h.
*/
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

uint32_t nr_rng_below(nr_rng *r, uint32_t n) {
    NR_ASSERT(n >= 1);
    /* Lemire, "Fast random integer generation in an interval" (2019): the
       high word of x*n, rejecting the few low words that would bias it. */
    uint64_t m = (nr_rng_next(r) >> 32) * (uint64_t)n;
    uint32_t l = (uint32_t)m;
    if (l < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (l < t) {
            m = (nr_rng_next(r) >> 32) * (uint64_t)n;
            l = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

double nr_rng_double(nr_rng *r) {
    return (double)(nr_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

void nr_sample_uniform(nr_rng *r, int n, const int32_t *choices, int32_t *arch) {
    for (int g = 0; g < n; g++) arch[g] = (int32_t)nr_rng_below(r, (uint32_t)choices[g]);
}

void nr_permutation(nr_rng *r, int m, int32_t *perm) {
    for (int i = 0; i < m; i++) perm[i] = i;
    for (int i = m - 1; i > 0; i--) {
        int j = (int)nr_rng_below(r, (uint32_t)i + 1);
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void nr_mutate(nr_rng *r, int n, const int32_t *choices, double prob, int force_different,
               const int32_t *parent, int32_t *child) {
    for (int g = 0; g < n; g++) {
        int32_t v = parent[g];
        /* one draw per gene whatever happens, so the stream does not depend
           on the values: mutate(a) and mutate(b) consume the same RNG */
        double u = nr_rng_double(r);
        if (u < prob && choices[g] > 1) {
            if (force_different) {
                int32_t w = (int32_t)nr_rng_below(r, (uint32_t)choices[g] - 1);
                v = w >= v ? w + 1 : w;
            } else {
                v = (int32_t)nr_rng_below(r, (uint32_t)choices[g]);
            }
        }
        child[g] = v;
    }
}

void nr_mutate_one(nr_rng *r, int n, const int32_t *choices, const int32_t *parent,
                   int32_t *child) {
    int free_genes = 0;
    for (int g = 0; g < n; g++) free_genes += choices[g] > 1;
    if (child != parent) memcpy(child, parent, (size_t)n * sizeof *child);
    if (free_genes == 0) return;
    int pick = (int)nr_rng_below(r, (uint32_t)free_genes);
    for (int g = 0; g < n; g++) {
        if (choices[g] <= 1) continue;
        if (pick-- == 0) {
            int32_t w = (int32_t)nr_rng_below(r, (uint32_t)choices[g] - 1);
            child[g] = w >= parent[g] ? w + 1 : w;
            return;
        }
    }
}

void nr_crossover(nr_rng *r, int n, const int32_t *a, const int32_t *b, int32_t *child) {
    for (int g = 0; g < n; g++) {
        /* one bit per gene, taken from the top of a fresh word */
        child[g] = (nr_rng_next(r) >> 63) ? b[g] : a[g];
    }
}

int nr_sample_cum(nr_rng *r, int k, const double *cum) {
    NR_ASSERT(k >= 1 && cum[k - 1] > 0);
    double u = nr_rng_double(r) * cum[k - 1];
    /* first i with cum[i] > u (entries of zero weight are never picked) */
    int lo = 0, hi = k - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (cum[mid] > u) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

int64_t nr_flops_bin(double flops, double step) {
    /* nearbyint rounds half to even in the default rounding mode, as
       Python's round() does */
    return (int64_t)nearbyint(flops / step);
}

double nr_flops_additive(const nr_flops_add *m, const int32_t *arch) {
    double f = m->base;
    for (int g = 0; g < m->n; g++) f += m->cost[m->off[g] + arch[g]];
    return f;
}

/* ----------------------------------------------------- strict fairness */

void nr_fair_redraw(nr_fair *f, nr_rng *r) {
    for (int g = 0; g < f->n; g++) nr_permutation(r, f->m, f->perm + (size_t)g * f->m);
    f->pos = 0;
}

void nr_fair_next(nr_fair *f, nr_rng *r, int32_t *arch) {
    if (f->pos >= f->m) nr_fair_redraw(f, r);
    for (int g = 0; g < f->n; g++) arch[g] = f->perm[(size_t)g * f->m + f->pos];
    f->pos++;
}

/* -------------------------------------------------------- attentive */

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int nr_attn_count(int nobs, const double *flops, double step, int64_t *bins) {
    for (int i = 0; i < nobs; i++) bins[i] = nr_flops_bin(flops[i], step);
    qsort(bins, (size_t)nobs, sizeof *bins, cmp_i64);
    int k = 0;
    for (int i = 0; i < nobs; i++)
        if (k == 0 || bins[k - 1] != bins[i]) bins[k++] = bins[i];
    return k;
}

int nr_attn_find(const nr_attn *a, int64_t k) {
    int lo = 0, hi = a->nbins - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (a->bins[mid] == k) return mid;
        if (a->bins[mid] < k) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

void nr_attn_fill(nr_attn *a, int nobs, const int32_t *archs, const double *flops,
                  double step) {
    int tot = a->off[a->n];
    memset(a->prior_cum, 0, (size_t)a->nbins * sizeof *a->prior_cum);
    memset(a->cond_cum, 0, (size_t)a->nbins * tot * sizeof *a->cond_cum);
    for (int i = 0; i < nobs; i++) {
        int t = nr_attn_find(a, nr_flops_bin(flops[i], step));
        NR_ASSERT(t >= 0);
        a->prior_cum[t] += 1;
        double *c = a->cond_cum + (size_t)t * tot;
        const int32_t *arch = archs + (size_t)i * a->n;
        for (int g = 0; g < a->n; g++) c[a->off[g] + arch[g]] += 1;
    }
    for (int t = 1; t < a->nbins; t++) a->prior_cum[t] += a->prior_cum[t - 1];
    for (int t = 0; t < a->nbins; t++) {
        double *c = a->cond_cum + (size_t)t * tot;
        for (int g = 0; g < a->n; g++)
            for (int v = 1; v < a->choices[g]; v++) c[a->off[g] + v] += c[a->off[g] + v - 1];
    }
}

int nr_attn_target(const nr_attn *a, nr_rng *r, int flops_uniform) {
    if (flops_uniform) return (int)nr_rng_below(r, (uint32_t)a->nbins);
    return nr_sample_cum(r, a->nbins, a->prior_cum);
}

void nr_attn_draw(const nr_attn *a, int t, nr_rng *r, int32_t *arch) {
    const double *c = a->cond_cum + (size_t)t * a->off[a->n];
    for (int g = 0; g < a->n; g++) arch[g] = (int32_t)nr_sample_cum(r, a->choices[g], c + a->off[g]);
}
