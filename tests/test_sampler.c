/*
** test_sampler.c -- the sampling primitives of runtime/sampler.c: ranges
** and uniformity of nr_rng_below, permutations, strict-fair columns,
** mutation/crossover contracts, Python-style FLOPs rounding and the
** AttentiveNAS tables.
*/
#include "check.h"
#include "sampler.h"

#include <string.h>

int main(void) {
    nr_rng r;
    nr_rng_seed(&r, 1);

    /* rng_below: in range, every value reached, roughly uniform */
    int cnt[7] = {0};
    for (int i = 0; i < 70000; i++) {
        uint32_t v = nr_rng_below(&r, 7);
        CHECK(v < 7);
        if (v < 7) cnt[v]++;
    }
    for (int v = 0; v < 7; v++) CHECK(cnt[v] > 9500 && cnt[v] < 10500);
    CHECK(nr_rng_below(&r, 1) == 0);
    double d = nr_rng_double(&r);
    CHECK(d >= 0 && d < 1);

    /* permutations */
    int32_t perm[10];
    for (int k = 0; k < 100; k++) {
        nr_permutation(&r, 10, perm);
        int seen[10] = {0};
        for (int i = 0; i < 10; i++) seen[perm[i]]++;
        for (int i = 0; i < 10; i++) CHECK(seen[i] == 1);
    }

    /* strict fairness: every block of m draws covers each choice once */
    int32_t fp[3 * 4], arch[3];
    nr_fair f = {.n = 3, .m = 4, .pos = 4, .perm = fp};
    for (int blk = 0; blk < 20; blk++) {
        int c[3][4];
        memset(c, 0, sizeof c);
        for (int k = 0; k < 4; k++) {
            nr_fair_next(&f, &r, arch);
            for (int g = 0; g < 3; g++) c[g][arch[g]]++;
        }
        for (int g = 0; g < 3; g++)
            for (int v = 0; v < 4; v++) CHECK(c[g][v] == 1);
    }

    /* mutation and crossover */
    int32_t choices[5] = {4, 4, 1, 3, 2}, parent[5] = {1, 2, 0, 1, 0}, child[5];
    nr_mutate(&r, 5, choices, 0.0, 0, parent, child);
    CHECK(memcmp(parent, child, sizeof child) == 0);
    nr_mutate(&r, 5, choices, 1.0, 1, parent, child);
    for (int g = 0; g < 5; g++) CHECK(g == 2 ? child[g] == 0 : child[g] != parent[g]);
    for (int k = 0; k < 50; k++) {
        nr_mutate_one(&r, 5, choices, parent, child);
        int diff = 0;
        for (int g = 0; g < 5; g++) {
            diff += child[g] != parent[g];
            CHECK(child[g] >= 0 && child[g] < choices[g]);
        }
        CHECK(diff == 1);
        CHECK(child[2] == 0);
    }
    int32_t a[5] = {0, 0, 0, 0, 0}, b[5] = {1, 1, 1, 1, 1};
    nr_crossover(&r, 5, a, b, child);
    for (int g = 0; g < 5; g++) CHECK(child[g] == 0 || child[g] == 1);

    /* Python round: half to even */
    CHECK(nr_flops_bin(12.5, 25) == 0);
    CHECK(nr_flops_bin(37.5, 25) == 2);
    CHECK(nr_flops_bin(37.4, 25) == 1);
    CHECK(nr_flops_bin(-12.6, 25) == -1);

    /* categorical draws skip zero-weight entries */
    double cum[4] = {0, 2, 2, 3};
    int hist[4] = {0};
    for (int k = 0; k < 3000; k++) hist[nr_sample_cum(&r, 4, cum)]++;
    CHECK(hist[0] == 0 && hist[2] == 0);
    CHECK(hist[1] > 1800 && hist[1] < 2200);

    /* attentive tables from 3 observations over 2 genes of 2 choices */
    int32_t ch[2] = {2, 2}, off[3] = {0, 2, 4};
    int32_t obs[3 * 2] = {0, 0, 1, 1, 1, 0};
    double fl[3] = {10, 30, 21};
    int64_t bins[3];
    double prior[3], cond[3 * 4];
    nr_attn at = {.n = 2, .choices = ch, .off = off, .bins = bins, .prior_cum = prior, .cond_cum = cond};
    at.nbins = nr_attn_count(3, fl, 10, bins);
    CHECK(at.nbins == 3 && bins[0] == 1 && bins[1] == 2 && bins[2] == 3);
    nr_attn_fill(&at, 3, obs, fl, 10);
    CHECK(prior[2] == 3);
    CHECK(nr_attn_find(&at, 3) == 2 && nr_attn_find(&at, 4) == -1);
    int t = nr_attn_find(&at, 2);   /* the {1, 0} observation */
    for (int k = 0; k < 20; k++) {
        nr_attn_draw(&at, t, &r, arch);
        CHECK(arch[0] == 1 && arch[1] == 0);
    }

    /* additive FLOPs */
    double cost[4] = {1, 2, 10, 20};
    nr_flops_add m = {.n = 2, .base = 100, .off = off, .cost = cost};
    int32_t x[2] = {1, 0};
    CHECK_NEAR(nr_flops_additive(&m, x), 112, 1e-12);
    DONE();
}
