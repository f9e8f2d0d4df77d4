/*
** bind_sampler.c -- nasrt.sampler: search-space samplers as small userdata
** that own a seeded generator (runtime/sampler.c does the drawing).
**
** A search space is a list of per-gene choice counts, e.g. {4,4,...,4}
** (SPOS: 20 genes of 4 blocks).  An architecture ("arch") is a plain Lua
** list of 1-based choice indices, one per gene: arch[g] in 1..choices[g].
** Samplers return fresh tables, so recipes can log and store them.
**
** Every sampler holds all its arrays inside its own userdata (no malloc, so
** nothing leaks when a Lua error unwinds); user value 1 keeps the FLOPs
** function of the FLOPs-aware samplers, user value 2 the AttentiveNAS
** tables.  s:state() / s:set_state(t) save and restore everything that
** changes (generator words, and for strict_fair the permutations and the
** pointer), so a resumed run draws exactly what the original would have.
*/

/***
Architecture samplers: `nasrt.sampler` (C, modules/bind_sampler.c).
@module nasrt
*/
#include "luabind.h"
#include "sampler.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void nrL_open_sampler(lua_State *L, int lib, int F);

enum { K_UNIFORM, K_FAIR, K_BINS, K_ATTN, K_SANDWICH, K_COUNT };
static const char *const kind_name[K_COUNT] = {"uniform", "strict_fair", "flops_bins",
                                               "attentive", "sandwich"};
static const char *const kind_mt[K_COUNT] = {"nasrt.sampler.uniform", "nasrt.sampler.strict_fair",
                                             "nasrt.sampler.flops_bins", "nasrt.sampler.attentive",
                                             "nasrt.sampler.sandwich"};

enum { FL_NONE, FL_FUNC, FL_ADD };

#define MAX_GENES (1 << 20)
#define MAX_CHOICES (1 << 20)
#define MAX_TOTAL (1 << 24)

typedef struct {
    int kind;
    int n;              /* genes */
    int tot;            /* sum of choices */
    nr_rng rng;
    int32_t *choices;   /* n */
    int32_t *off;       /* n + 1 prefix sums */
    int flops_kind;     /* FL_*: function in user value 1, or additive */
    nr_flops_add add;
    double *addcost;    /* tot, when additive */
    /* flops_bins */
    int nbins;
    double *bins;       /* 2 * nbins: lo, hi */
    int64_t tries;
    /* strict_fair */
    nr_fair fair;
    /* attentive (tables live in user value 2) */
    nr_attn at;
    double step;
    int max_trials;
    int flops_uniform;
    /* sandwich */
    int32_t *smin, *smax;
    double data[];      /* the arrays above point in here */
} smp;

/* ------------------------------------------------------------ helpers */

/* Sizes of the arrays a sampler of this shape carries; when s is given the
   pointers are also set (same order, so size and carve never disagree). */
static size_t layout(smp *s, int kind, int n, int tot, int has_add, int nbins) {
    size_t used = 0;
#define CARVE(field, type, count)                                          \
    do {                                                                   \
        size_t b_ = ((size_t)(count) * sizeof(type) + 7) & ~(size_t)7;     \
        if (s) s->field = (type *)(void *)((char *)s->data + used);        \
        used += b_;                                                        \
    } while (0)
    CARVE(choices, int32_t, n);
    CARVE(off, int32_t, n + 1);
    if (has_add) CARVE(addcost, double, tot);
    if (kind == K_BINS) CARVE(bins, double, 2 * (size_t)nbins);
    if (kind == K_FAIR) CARVE(fair.perm, int32_t, tot);
    if (kind == K_SANDWICH) {
        CARVE(smin, int32_t, n);
        CARVE(smax, int32_t, n);
    }
#undef CARVE
    return used;
}

static smp *testsmp(lua_State *L, int idx) {
    for (int k = 0; k < K_COUNT; k++) {
        smp *s = luaL_testudata(L, idx, kind_mt[k]);
        if (s) return s;
    }
    return NULL;
}

/* The sampler at idx (any kind when kind < 0); raises naming fn. */
static smp *checksmp(lua_State *L, int idx, int kind, const char *fn) {
    smp *s = kind >= 0 ? luaL_testudata(L, idx, kind_mt[kind]) : testsmp(L, idx);
    if (!s)
        luaL_error(L, "%s: argument #%d: expected %s sampler, got %s", fn, idx,
                   kind >= 0 ? kind_name[kind] : "a", nrL_typename(L, idx));
    return s;
}

/* An integer >= lo and <= hi at the top of the stack (what names the value
   in messages); pops it. */
static int64_t pop_int(lua_State *L, int64_t lo, int64_t hi, const char *fn, const char *what,
                       int i) {
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (!isint)
        luaL_error(L, "%s: %s[%d] must be an integer, got %s", fn, what, i,
                   lua_type(L, -1) == LUA_TNUMBER ? "a fractional number" : luaL_typename(L, -1));
    if (v < lo || v > hi)
        luaL_error(L, "%s: %s[%d] = %I out of range %I..%I", fn, what, i, (LUAI_UACINT)v,
                   (LUAI_UACINT)lo, (LUAI_UACINT)hi);
    lua_pop(L, 1);
    return v;
}

static double pop_num(lua_State *L, const char *fn, const char *what, int i) {
    int isnum;
    lua_Number v = lua_tonumberx(L, -1, &isnum);
    if (!isnum) luaL_error(L, "%s: %s[%d] must be a number, got %s", fn, what, i, luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

/* The choices list at idx: validates it and returns the gene count; fills
   out (n entries) when given; *tot = sum of choices. */
static int read_choices(lua_State *L, int idx, const char *fn, int32_t *out, int *tot) {
    if (!lua_istable(L, idx))
        luaL_error(L, "%s: 'choices' must be a list of per-gene choice counts, got %s", fn,
                   luaL_typename(L, idx));
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    if (n < 1) luaL_error(L, "%s: 'choices' is empty (expected one choice count per gene)", fn);
    if (n > MAX_GENES) luaL_error(L, "%s: 'choices' has %I genes (at most %d)", fn, (LUAI_UACINT)n, MAX_GENES);
    int64_t t = 0;
    for (int g = 1; g <= n; g++) {
        lua_rawgeti(L, idx, g);
        int64_t c = pop_int(L, 1, MAX_CHOICES, fn, "choices", g);
        if (out) out[g - 1] = (int32_t)c;
        t += c;
    }
    if (t > MAX_TOTAL) luaL_error(L, "%s: search space too large (%d choices in all)", fn, (int)t);
    *tot = (int)t;
    return (int)n;
}

/* An arch (list of 1-based indices valid for choices) at idx into out
   (0-based). */
static void read_arch(lua_State *L, int idx, int n, const int32_t *choices, int32_t *out,
                      const char *fn, const char *what) {
    if (!lua_istable(L, idx))
        luaL_error(L, "%s: %s must be a list of %d choice indices, got %s", fn, what, n,
                   luaL_typename(L, idx));
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    if (len != n)
        luaL_error(L, "%s: %s has %I genes, the search space has %d", fn, what, (LUAI_UACINT)len, n);
    for (int g = 1; g <= n; g++) {
        lua_rawgeti(L, idx, g);
        out[g - 1] = (int32_t)pop_int(L, 1, choices ? choices[g - 1] : INT32_MAX, fn, what, g) - 1;
    }
}

static void push_arch(lua_State *L, int n, const int32_t *arch) {
    lua_createtable(L, n, 0);
    for (int g = 0; g < n; g++) {
        lua_pushinteger(L, arch[g] + 1);
        lua_rawseti(L, -2, g + 1);
    }
}

/* Per-call scratch: a userdata left on the stack (freed by the GC even when
   an error unwinds). */
static void *scratch(lua_State *L, size_t bytes) {
    return lua_newuserdatauv(L, bytes ? bytes : 1, 0);
}

static const char *fn_of(const smp *s, const char *method, char *buf) {
    snprintf(buf, 64, "%s:%s", kind_name[s->kind], method);
    return buf;
}

/* FLOPs of arch under the sampler's model (s at stack index sidx). */
static double smp_flops(lua_State *L, smp *s, int sidx, const int32_t *arch, const char *fn) {
    if (s->flops_kind == FL_ADD) return nr_flops_additive(&s->add, arch);
    lua_getiuservalue(L, sidx, 1);
    push_arch(L, s->n, arch);
    lua_call(L, 1, 1);
    int isnum;
    lua_Number f = lua_tonumberx(L, -1, &isnum);
    if (!isnum) luaL_error(L, "%s: the flops function returned %s, expected a number", fn,
                           luaL_typename(L, -1));
    lua_pop(L, 1);
    return f;
}

/* Tau (bin k times step) as a Lua value: an integer when it is one. */
static void push_tau(lua_State *L, int64_t k, double step) {
    double v = (double)k * step;
    if (v == floor(v) && fabs(v) < 9.0e15) lua_pushinteger(L, (lua_Integer)v);
    else lua_pushnumber(L, v);
}

static void seed_rng(smp *s, int64_t seed) { nr_rng_seed(&s->rng, (uint64_t)seed); }

/* Reads option 'flops' of the options table at 1 into s (s at sidx): a
   function, or an additive table {base=, per_gene={{f1, f2, ...}, ...}}. */
static void read_flops_opt(lua_State *L, smp *s, int sidx, const char *fn, int required) {
    lua_getfield(L, 1, "flops");
    if (lua_isnil(L, -1)) {
        if (required)
            luaL_error(L, "%s: option 'flops' is required (a function(arch) -> number, or "
                       "{base=, per_gene={{...}, ...}})", fn);
        lua_pop(L, 1);
        return;
    }
    if (lua_isfunction(L, -1)) {
        s->flops_kind = FL_FUNC;
        lua_setiuservalue(L, sidx, 1);
        return;
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "%s: option 'flops' must be a function or {base=, per_gene=}, got %s", fn,
                   luaL_typename(L, -1));
    int t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
        if (strcmp(k, "base") != 0 && strcmp(k, "per_gene") != 0)
            luaL_error(L, "%s: option 'flops': unknown key '%s' (expected base, per_gene)", fn,
                       lua_type(L, -1) == LUA_TSTRING ? k : luaL_typename(L, -1));
    }
    lua_getfield(L, t, "base");
    if (lua_isnil(L, -1)) {
        s->add.base = 0.0;
        lua_pop(L, 1);
    } else {
        s->add.base = pop_num(L, fn, "flops.base", 1);
    }
    lua_getfield(L, t, "per_gene");
    int pg = lua_gettop(L);
    if (!lua_istable(L, pg))
        luaL_error(L, "%s: option 'flops': 'per_gene' must be a list of per-choice FLOPs lists, got %s",
                   fn, luaL_typename(L, pg));
    if ((lua_Integer)lua_rawlen(L, pg) != s->n)
        luaL_error(L, "%s: option 'flops': 'per_gene' has %d genes, the search space has %d", fn,
                   (int)lua_rawlen(L, pg), s->n);
    for (int g = 0; g < s->n; g++) {
        lua_rawgeti(L, pg, g + 1);
        if (!lua_istable(L, -1) || (lua_Integer)lua_rawlen(L, -1) != s->choices[g])
            luaL_error(L, "%s: option 'flops': per_gene[%d] must list %d numbers (one per choice)",
                       fn, g + 1, (int)s->choices[g]);
        for (int v = 0; v < s->choices[g]; v++) {
            lua_rawgeti(L, -1, v + 1);
            s->addcost[s->off[g] + v] = pop_num(L, fn, "flops.per_gene", g + 1);
        }
        lua_pop(L, 1);
    }
    lua_settop(L, t - 1);
    s->flops_kind = FL_ADD;
    s->add.n = s->n;
    s->add.off = s->off;
    s->add.cost = s->addcost;
}

/* Common start of every constructor: checks the options table at 1, reads
   choices and allocates the sampler (left on the stack; returned).  extra
   sizes: has_add (flops given as a table), nbins (flops_bins). */
static smp *new_sampler(lua_State *L, int kind, const char *fn, const char *const *allowed) {
    luaL_checktype(L, 1, LUA_TTABLE);
    nrL_checkopts(L, 1, fn, allowed);
    lua_settop(L, 1);
    lua_getfield(L, 1, "choices");
    int tot;
    int n = read_choices(L, 2, fn, NULL, &tot);
    lua_getfield(L, 1, "flops");
    int has_add = lua_istable(L, -1);
    lua_pop(L, 1);
    int nbins = 0;
    if (kind == K_BINS) {
        lua_getfield(L, 1, "bins");
        if (!lua_istable(L, -1) || lua_rawlen(L, -1) < 1)
            luaL_error(L, "%s: option 'bins' must be a non-empty list of {lo, hi} pairs", fn);
        if (lua_rawlen(L, -1) > 1000000) luaL_error(L, "%s: too many bins", fn);
        nbins = (int)lua_rawlen(L, -1);
        lua_pop(L, 1);
    }
    if (kind == K_FAIR) {
        for (int g = 1; g <= n; g++) {
            lua_rawgeti(L, 2, g);
            lua_rawgeti(L, 2, 1);
            if (!lua_rawequal(L, -1, -2))
                luaL_error(L, "%s: strict fairness needs the same number of choices in every "
                           "gene (gene 1 has %d, gene %d has %d)", fn, (int)lua_tointeger(L, -1),
                           g, (int)lua_tointeger(L, -2));
            lua_pop(L, 2);
        }
    }
    size_t bytes = sizeof(smp) + layout(NULL, kind, n, tot, has_add, nbins);
    smp *s = lua_newuserdatauv(L, bytes, 2);
    memset(s, 0, sizeof *s);
    layout(s, kind, n, tot, has_add, nbins);
    s->kind = kind;
    s->n = n;
    s->tot = tot;
    s->nbins = nbins;
    read_choices(L, 2, fn, s->choices, &tot);
    s->off[0] = 0;
    for (int g = 0; g < n; g++) s->off[g + 1] = s->off[g] + s->choices[g];
    seed_rng(s, nrL_optint_field(L, 1, "seed", 0, fn));
    luaL_setmetatable(L, kind_mt[kind]);
    lua_replace(L, 2);   /* stack: opts, sampler */
    return s;
}

/* ------------------------------------------------------ constructors */

/***
A uniform sampler: every gene independently uniform over its choices.
@function sampler.uniform
@tparam table opts {choices={c1, c2, ...}, seed=0}
@treturn sampler s with s:sample() -> arch (list of 1-based choice indices)
@usage local s = nasrt.sampler.uniform{choices = {4,4,4,4}, seed = 1}; local arch = s:sample()
*/
static int sampler_uniform(lua_State *L) {
    static const char *const allowed[] = {"choices", "seed", NULL};
    new_sampler(L, K_UNIFORM, "sampler.uniform", allowed);
    return 1;
}

/***
FairNAS strict fairness: s:sample() returns m archs in which every choice of
every gene appears exactly once (an independent random permutation per
gene); s:next() hands them out one at a time (nnabla-nas bookkeeping: each
gene keeps its permutation and a pointer, redrawn on wrap).  sample()
always draws fresh permutations and leaves the pointer at the end, so it
equals m next() calls made from a wrap; mixing the two never breaks the
per-block guarantee of either.
@function sampler.strict_fair
@tparam table opts {choices={m, m, ...}, seed=0} (every gene the same m)
@treturn sampler
*/
static int sampler_strict_fair(lua_State *L) {
    static const char *const allowed[] = {"choices", "seed", NULL};
    smp *s = new_sampler(L, K_FAIR, "sampler.strict_fair", allowed);
    s->fair.n = s->n;
    s->fair.m = s->choices[0];
    s->fair.pos = s->fair.m;  /* the first draw makes the permutations */
    for (int i = 0; i < s->tot; i++) s->fair.perm[i] = i % s->fair.m;
    return 1;
}

/***
SPOS FLOPs-bin sampler: pick a bin uniformly, draw up to `tries` uniform
archs and accept the first whose FLOPs lie in [lo, hi]; if none does, fall
back to an unconstrained uniform arch.
s:sample() -> arch, flops, tries_used, in_bin.
@function sampler.flops_bins
@tparam table opts {choices=, seed=0, bins={{lo, hi}, ...}, tries=500,
  flops=function(arch) -> number | {base=, per_gene={{f1, f2, ...}, ...}}}
@treturn sampler
*/
static int sampler_flops_bins(lua_State *L) {
    static const char *const fn = "sampler.flops_bins";
    static const char *const allowed[] = {"choices", "seed", "bins", "tries", "flops", NULL};
    smp *s = new_sampler(L, K_BINS, fn, allowed);
    s->tries = nrL_optint_field(L, 1, "tries", 500, fn);
    if (s->tries < 1 || s->tries > 1000000000)
        luaL_error(L, "%s: option 'tries' must be in 1..1e9, got %I", fn, (LUAI_UACINT)s->tries);
    lua_getfield(L, 1, "bins");
    for (int b = 0; b < s->nbins; b++) {
        lua_rawgeti(L, -1, b + 1);
        if (!lua_istable(L, -1) || lua_rawlen(L, -1) != 2)
            luaL_error(L, "%s: bins[%d] must be a pair {lo, hi}", fn, b + 1);
        lua_rawgeti(L, -1, 1);
        s->bins[2 * b] = pop_num(L, fn, "bins", b + 1);
        lua_rawgeti(L, -1, 2);
        s->bins[2 * b + 1] = pop_num(L, fn, "bins", b + 1);
        if (!(s->bins[2 * b] <= s->bins[2 * b + 1]))
            luaL_error(L, "%s: bins[%d] = {%f, %f} has lo > hi", fn, b + 1, s->bins[2 * b],
                       s->bins[2 * b + 1]);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    read_flops_opt(L, s, 2, fn, 1);
    lua_settop(L, 2);
    return 1;
}

/***
AttentiveNAS FLOPs-constrained ArchSampler.  Built from observed (arch,
FLOPs) pairs: `table = {{arch=, flops=}, ...}`, or, without a table, from
`draws` (default 10000) uniform archs drawn with the sampler's own
generator and measured with `flops`.  FLOPs are discretised to
tau = round(flops / step) * step (Python rounding: half to even).  The prior
pi(tau) is the histogram of tau (or uniform over the observed taus with
flops_uniform=true); P(gene = v | tau) are per-gene normalised counts.
s:sample_target() -> tau; s:sample([tau[, n=1]]) -> archs, flops, tries:
each arch is drawn gene by gene from the conditionals of tau, up to
max_trials + 1 times, accepting the first whose binned FLOPs equal tau, else
the last draw (accept-last, as upstream); tries[i] is how many draws arch i
took.
@function sampler.attentive
@tparam table opts {choices=, seed=0, step=25, table=?, draws=10000,
  flops=function|{base=, per_gene=} (required), flops_uniform=false,
  max_trials=100}
@treturn sampler
*/
static int sampler_attentive(lua_State *L) {
    static const char *const fn = "sampler.attentive";
    static const char *const allowed[] = {"choices", "seed", "step", "table", "draws", "flops",
                                          "flops_uniform", "max_trials", NULL};
    smp *s = new_sampler(L, K_ATTN, fn, allowed);
    s->step = nrL_optnum_field(L, 1, "step", 25.0, fn);
    if (!(s->step > 0) || !isfinite(s->step))
        luaL_error(L, "%s: option 'step' must be a positive number, got %f", fn, s->step);
    int64_t mt = nrL_optint_field(L, 1, "max_trials", 100, fn);
    if (mt < 0 || mt > 100000000) luaL_error(L, "%s: option 'max_trials' must be in 0..1e8", fn);
    s->max_trials = (int)mt;
    s->flops_uniform = nrL_optbool_field(L, 1, "flops_uniform", 0, fn);
    read_flops_opt(L, s, 2, fn, 1);

    /* observations: archs (nobs x n), flops (nobs), bins scratch (nobs) */
    lua_getfield(L, 1, "table");
    int tab = lua_gettop(L);
    int have_table = !lua_isnil(L, tab);
    lua_getfield(L, 1, "draws");
    int have_draws = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (have_table && have_draws) luaL_error(L, "%s: give either 'table' or 'draws', not both", fn);
    int64_t nobs;
    if (have_table) {
        if (!lua_istable(L, tab))
            luaL_error(L, "%s: option 'table' must be a list of {arch=, flops=}, got %s", fn,
                       luaL_typename(L, tab));
        nobs = (int64_t)lua_rawlen(L, tab);
        if (nobs < 1) luaL_error(L, "%s: option 'table' is empty", fn);
    } else {
        nobs = nrL_optint_field(L, 1, "draws", 10000, fn);
        if (nobs < 1) luaL_error(L, "%s: option 'draws' must be positive, got %I", fn, (LUAI_UACINT)nobs);
    }
    if (nobs > 100000000 || (double)nobs * s->n > 1e9)
        luaL_error(L, "%s: too many observations (%I)", fn, (LUAI_UACINT)nobs);
    int32_t *archs = scratch(L, (size_t)nobs * s->n * sizeof *archs);
    double *flops = scratch(L, (size_t)nobs * sizeof *flops);
    int64_t *bins = scratch(L, (size_t)nobs * sizeof *bins);
    for (int64_t i = 0; i < nobs; i++) {
        int32_t *a = archs + (size_t)i * s->n;
        if (have_table) {
            lua_rawgeti(L, tab, i + 1);
            int e = lua_gettop(L);
            if (!lua_istable(L, e))
                luaL_error(L, "%s: table[%I] must be {arch=, flops=}, got %s", fn, (LUAI_UACINT)(i + 1),
                           luaL_typename(L, e));
            lua_getfield(L, e, "arch");
            read_arch(L, lua_gettop(L), s->n, s->choices, a, fn, "table[i].arch");
            lua_pop(L, 1);
            lua_getfield(L, e, "flops");
            flops[i] = pop_num(L, fn, "table.flops", (int)(i + 1));
            lua_pop(L, 1);
        } else {
            nr_sample_uniform(&s->rng, s->n, s->choices, a);
            flops[i] = smp_flops(L, s, 2, a, fn);
        }
        if (!isfinite(flops[i]) || fabs(flops[i] / s->step) > 9.0e15)
            luaL_error(L, "%s: observation %I has FLOPs %f", fn, (LUAI_UACINT)(i + 1), flops[i]);
    }
    int nb = nr_attn_count((int)nobs, flops, s->step, bins);
    /* the tables, owned by user value 2 */
    size_t tb = (size_t)nb * (sizeof(int64_t) + sizeof(double) * (1 + (size_t)s->tot));
    char *mem = lua_newuserdatauv(L, tb, 0);
    lua_setiuservalue(L, 2, 2);
    s->at.n = s->n;
    s->at.choices = s->choices;
    s->at.off = s->off;
    s->at.nbins = nb;
    s->at.bins = (int64_t *)(void *)mem;
    s->at.prior_cum = (double *)(void *)(mem + (size_t)nb * sizeof(int64_t));
    s->at.cond_cum = s->at.prior_cum + nb;
    memcpy(s->at.bins, bins, (size_t)nb * sizeof *bins);
    nr_attn_fill(&s->at, (int)nobs, archs, flops, s->step);
    lua_settop(L, 2);
    return 1;
}

/***
Sandwich-rule helper (BigNAS/AttentiveNAS): s:max(), s:min() (the largest
and smallest choice of every gene: the last and first index, or the ends of
a per-gene `order` listing indices from smallest to largest), s:random()
(uniform) and s:sample([n=4]) -> {max, n-2 uniform archs, min}.
@function sampler.sandwich
@tparam table opts {choices=, seed=0, order=?}
@treturn sampler
*/
static int sampler_sandwich(lua_State *L) {
    static const char *const fn = "sampler.sandwich";
    static const char *const allowed[] = {"choices", "seed", "order", NULL};
    smp *s = new_sampler(L, K_SANDWICH, fn, allowed);
    lua_getfield(L, 1, "order");
    if (lua_isnil(L, -1)) {
        for (int g = 0; g < s->n; g++) {
            s->smin[g] = 0;
            s->smax[g] = s->choices[g] - 1;
        }
    } else {
        int o = lua_gettop(L);
        if (!lua_istable(L, o) || (lua_Integer)lua_rawlen(L, o) != s->n)
            luaL_error(L, "%s: option 'order' must list one order per gene (%d genes)", fn, s->n);
        int32_t *perm = scratch(L, (size_t)s->tot * sizeof *perm);
        for (int g = 0; g < s->n; g++) {
            lua_rawgeti(L, o, g + 1);
            int row = lua_gettop(L);
            if (!lua_istable(L, row) || (lua_Integer)lua_rawlen(L, row) != s->choices[g])
                luaL_error(L, "%s: order[%d] must list the %d choice indices of gene %d, "
                           "smallest first", fn, g + 1, (int)s->choices[g], g + 1);
            read_arch(L, row, s->choices[g], NULL, perm + s->off[g], fn, "order[g]");
            int32_t *p = perm + s->off[g];
            for (int i = 0; i < s->choices[g]; i++) {
                if (p[i] >= s->choices[g])
                    luaL_error(L, "%s: order[%d] holds %d, gene %d has %d choices", fn, g + 1,
                               (int)p[i] + 1, g + 1, (int)s->choices[g]);
                for (int j = 0; j < i; j++)
                    if (p[j] == p[i])
                        luaL_error(L, "%s: order[%d] repeats index %d", fn, g + 1, (int)p[i] + 1);
            }
            s->smin[g] = p[0];
            s->smax[g] = p[s->choices[g] - 1];
            lua_pop(L, 1);
        }
    }
    lua_settop(L, 2);
    return 1;
}

/* ---------------------------------------------------------- methods */

/***
A sampler: userdata with its own generator (see `sampler.uniform` and the
other constructors).
@type Sampler
*/

/***
One architecture (uniform sampler) / m archs (strict_fair) / arch, flops,
tries, in_bin (flops_bins) / archs, flops, tries (attentive) / the sandwich
list (sandwich).
@function sample
*/
static int sampler_sample(lua_State *L) {
    smp *s = checksmp(L, 1, -1, "sample");
    char fb[64];
    const char *fn = fn_of(s, "sample", fb);
    switch (s->kind) {
    case K_UNIFORM: {
        lua_settop(L, 1);
        lua_createtable(L, s->n, 0);
        for (int g = 0; g < s->n; g++) {
            lua_pushinteger(L, (lua_Integer)nr_rng_below(&s->rng, (uint32_t)s->choices[g]) + 1);
            lua_rawseti(L, -2, g + 1);
        }
        return 1;
    }
    case K_FAIR: {
        lua_settop(L, 1);
        nr_fair_redraw(&s->fair, &s->rng);
        int m = s->fair.m;
        lua_createtable(L, m, 0);
        for (int k = 0; k < m; k++) {
            lua_createtable(L, s->n, 0);
            for (int g = 0; g < s->n; g++) {
                lua_pushinteger(L, s->fair.perm[(size_t)g * m + k] + 1);
                lua_rawseti(L, -2, g + 1);
            }
            lua_rawseti(L, -2, k + 1);
        }
        s->fair.pos = m;  /* consumed: the next draw makes new permutations */
        return 1;
    }
    case K_BINS: {
        lua_settop(L, 1);
        int32_t *arch = scratch(L, (size_t)s->n * sizeof *arch);
        int b = (int)nr_rng_below(&s->rng, (uint32_t)s->nbins);
        double lo = s->bins[2 * b], hi = s->bins[2 * b + 1];
        for (int64_t t = 1; t <= s->tries; t++) {
            nr_sample_uniform(&s->rng, s->n, s->choices, arch);
            double f = smp_flops(L, s, 1, arch, fn);
            if (f >= lo && f <= hi) {
                push_arch(L, s->n, arch);
                lua_pushnumber(L, f);
                lua_pushinteger(L, t);
                lua_pushboolean(L, 1);
                return 4;
            }
        }
        nr_sample_uniform(&s->rng, s->n, s->choices, arch);
        double f = smp_flops(L, s, 1, arch, fn);
        push_arch(L, s->n, arch);
        lua_pushnumber(L, f);
        lua_pushinteger(L, s->tries);
        lua_pushboolean(L, 0);
        return 4;
    }
    case K_ATTN: {
        int t;
        int64_t k;
        if (lua_isnoneornil(L, 2)) {
            t = nr_attn_target(&s->at, &s->rng, s->flops_uniform);
            k = s->at.bins[t];
        } else {
            int isnum;
            double tau = lua_tonumberx(L, 2, &isnum);
            if (!isnum) luaL_error(L, "%s: argument #1 (tau) must be a number, got %s", fn, luaL_typename(L, 2));
            if (!isfinite(tau) || fabs(tau / s->step) > 9.0e15)
                luaL_error(L, "%s: target %f is not a FLOPs bin", fn, tau);
            k = nr_flops_bin(tau, s->step);
            if (fabs((double)k * s->step - tau) > 1e-9 * fmax(1.0, fabs(tau)))
                luaL_error(L, "%s: target %f is not a multiple of the step %f", fn, tau, s->step);
            t = nr_attn_find(&s->at, k);
            if (t < 0)
                luaL_error(L, "%s: target %f is not a FLOPs bin of the table (%d bins of step %f, "
                           "%f..%f)", fn, tau, s->at.nbins, s->step, (double)s->at.bins[0] * s->step,
                           (double)s->at.bins[s->at.nbins - 1] * s->step);
        }
        lua_Integer n = luaL_optinteger(L, 3, 1);
        if (n < 1 || n > 100000000) luaL_error(L, "%s: argument #2 (n) must be >= 1, got %I", fn, (LUAI_UACINT)n);
        lua_settop(L, 1);
        int32_t *arch = scratch(L, (size_t)s->n * sizeof *arch);   /* 2 */
        lua_createtable(L, (int)n, 0);                            /* 3 archs */
        lua_createtable(L, (int)n, 0);                            /* 4 flops */
        lua_createtable(L, (int)n, 0);                            /* 5 tries */
        for (lua_Integer i = 1; i <= n; i++) {
            double f = 0;
            int trial;
            for (trial = 0; trial <= s->max_trials; trial++) {
                nr_attn_draw(&s->at, t, &s->rng, arch);
                f = smp_flops(L, s, 1, arch, fn);
                if (isfinite(f) && fabs(f / s->step) < 9.0e15 && nr_flops_bin(f, s->step) == k) break;
            }
            if (trial > s->max_trials) trial = s->max_trials;  /* accept the last draw */
            push_arch(L, s->n, arch);
            lua_rawseti(L, 3, i);
            lua_pushnumber(L, f);
            lua_rawseti(L, 4, i);
            lua_pushinteger(L, trial + 1);
            lua_rawseti(L, 5, i);
        }
        return 3;
    }
    case K_SANDWICH: {
        lua_Integer n = luaL_optinteger(L, 2, 4);
        if (n < 2 || n > 100000000) luaL_error(L, "%s: argument #1 (n) must be >= 2 (max and min), got %I",
                                               fn, (LUAI_UACINT)n);
        lua_settop(L, 1);
        int32_t *arch = scratch(L, (size_t)s->n * sizeof *arch);
        lua_createtable(L, (int)n, 0);
        push_arch(L, s->n, s->smax);
        lua_rawseti(L, -2, 1);
        for (lua_Integer i = 2; i < n; i++) {
            nr_sample_uniform(&s->rng, s->n, s->choices, arch);
            push_arch(L, s->n, arch);
            lua_rawseti(L, -2, i);
        }
        push_arch(L, s->n, s->smin);
        lua_rawseti(L, -2, n);
        return 1;
    }
    }
    return 0;
}

/***
Strict-fair pointer-style draw: the next arch of the current permutations
(new permutations after every m draws).
@function next
@treturn table arch
*/
static int sampler_next(lua_State *L) {
    smp *s = checksmp(L, 1, K_FAIR, "strict_fair:next");
    lua_settop(L, 1);
    int32_t *arch = scratch(L, (size_t)s->n * sizeof *arch);
    nr_fair_next(&s->fair, &s->rng, arch);
    push_arch(L, s->n, arch);
    return 1;
}

/***
FLOPs of an arch under the sampler's model (flops_bins, attentive).
@function flops
@tparam table arch
@treturn number
*/
static int sampler_flops(lua_State *L) {
    smp *s = checksmp(L, 1, -1, "flops");
    char fb[64];
    const char *fn = fn_of(s, "flops", fb);
    if (s->flops_kind == FL_NONE) luaL_error(L, "%s: this sampler has no FLOPs model", fn);
    lua_settop(L, 2);   /* the scratch must not stand in for a missing arch */
    int32_t *arch = scratch(L, (size_t)s->n * sizeof *arch);
    read_arch(L, 2, s->n, s->choices, arch, fn, "arch");
    lua_pushnumber(L, smp_flops(L, s, 1, arch, fn));
    return 1;
}

/***
AttentiveNAS target: tau drawn from the prior pi(tau) (or uniformly over the
observed taus when flops_uniform).
@function sample_target
@treturn number tau
*/
static int sampler_sample_target(lua_State *L) {
    smp *s = checksmp(L, 1, K_ATTN, "attentive:sample_target");
    int t = nr_attn_target(&s->at, &s->rng, s->flops_uniform);
    push_tau(L, s->at.bins[t], s->step);
    return 1;
}

/***
The prior of an attentive sampler: taus (ascending) and their probabilities.
@function prior
@treturn table taus
@treturn table probs
*/
static int sampler_prior(lua_State *L) {
    smp *s = checksmp(L, 1, K_ATTN, "attentive:prior");
    int nb = s->at.nbins;
    double total = s->at.prior_cum[nb - 1];
    lua_createtable(L, nb, 0);
    lua_createtable(L, nb, 0);
    for (int t = 0; t < nb; t++) {
        push_tau(L, s->at.bins[t], s->step);
        lua_rawseti(L, -3, t + 1);
        double c = s->at.prior_cum[t] - (t ? s->at.prior_cum[t - 1] : 0);
        lua_pushnumber(L, c / total);
        lua_rawseti(L, -2, t + 1);
    }
    return 2;
}

static int sandwich_end(lua_State *L, int which) {
    smp *s = checksmp(L, 1, K_SANDWICH, which ? "sandwich:max" : "sandwich:min");
    push_arch(L, s->n, which ? s->smax : s->smin);
    return 1;
}
/*** The largest subnet. @function max */
static int sampler_max(lua_State *L) { return sandwich_end(L, 1); }
/*** The smallest subnet. @function min */
static int sampler_min(lua_State *L) { return sandwich_end(L, 0); }

/***
A uniform arch from a sandwich sampler.
@function random
*/
static int sampler_random(lua_State *L) {
    smp *s = checksmp(L, 1, K_SANDWICH, "sandwich:random");
    lua_settop(L, 1);
    int32_t *arch = scratch(L, (size_t)s->n * sizeof *arch);
    nr_sample_uniform(&s->rng, s->n, s->choices, arch);
    push_arch(L, s->n, arch);
    return 1;
}

/***
Uniform integer in 1..n from the sampler's generator.
@function randint
@tparam int n (1 <= n < 2^32)
*/
static int sampler_randint(lua_State *L) {
    smp *s = checksmp(L, 1, -1, "randint");
    int isint;
    lua_Integer n = lua_tointegerx(L, 2, &isint);
    if (!isint || n < 1 || n > (lua_Integer)UINT32_MAX)
        luaL_error(L, "%s:randint: argument #1 must be an integer in 1..2^32-1, got %s",
                   kind_name[s->kind], isint ? lua_tostring(L, 2) : luaL_typename(L, 2));
    lua_pushinteger(L, (lua_Integer)nr_rng_below(&s->rng, (uint32_t)n) + 1);
    return 1;
}

/***
Uniform number in [0, 1) from the sampler's generator (53 bits).
@function uniform
*/
static int sampler_uniform01(lua_State *L) {
    smp *s = checksmp(L, 1, -1, "uniform");
    lua_pushnumber(L, nr_rng_double(&s->rng));
    return 1;
}

/***
The search space (a copy of the choices list).
@function choices
*/
static int sampler_choices(lua_State *L) {
    smp *s = checksmp(L, 1, -1, "choices");
    lua_createtable(L, s->n, 0);
    for (int g = 0; g < s->n; g++) {
        lua_pushinteger(L, s->choices[g]);
        lua_rawseti(L, -2, g + 1);
    }
    return 1;
}

/***
Everything that changes as the sampler draws, as a plain table:
{kind=, rng={w1, w2, w3, w4}} (generator words as integers), plus for
strict_fair perm={{...}, ...} (per-gene permutations, 1-based) and pointer
(draws used of them, 0..m).
@function state
*/
static int sampler_state(lua_State *L) {
    smp *s = checksmp(L, 1, -1, "state");
    lua_createtable(L, 0, 4);
    lua_pushstring(L, kind_name[s->kind]);
    lua_setfield(L, -2, "kind");
    lua_createtable(L, 4, 0);
    for (int i = 0; i < 4; i++) {
        lua_pushinteger(L, (lua_Integer)s->rng.s[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "rng");
    if (s->kind == K_FAIR) {
        int m = s->fair.m;
        lua_createtable(L, s->n, 0);
        for (int g = 0; g < s->n; g++) {
            lua_createtable(L, m, 0);
            for (int k = 0; k < m; k++) {
                lua_pushinteger(L, s->fair.perm[(size_t)g * m + k] + 1);
                lua_rawseti(L, -2, k + 1);
            }
            lua_rawseti(L, -2, g + 1);
        }
        lua_setfield(L, -2, "perm");
        lua_pushinteger(L, s->fair.pos);
        lua_setfield(L, -2, "pointer");
    }
    return 1;
}

/***
Restores a state() table exactly (validated first: a bad table changes
nothing).
@function set_state
@tparam table t
@raise on a table from another kind of sampler or a malformed one
*/
static int sampler_set_state(lua_State *L) {
    smp *s = checksmp(L, 1, -1, "set_state");
    char fb[64];
    const char *fn = fn_of(s, "set_state", fb);
    if (!lua_istable(L, 2)) luaL_error(L, "%s: expected a state table, got %s", fn, luaL_typename(L, 2));
    lua_settop(L, 2);
    lua_getfield(L, 2, "kind");
    const char *k = lua_tostring(L, -1);
    if (!k || strcmp(k, kind_name[s->kind]) != 0)
        luaL_error(L, "%s: state is from a '%s' sampler, this one is '%s'", fn, k ? k : "?",
                   kind_name[s->kind]);
    lua_pop(L, 1);
    nr_rng r;
    lua_getfield(L, 2, "rng");
    if (!lua_istable(L, -1) || lua_rawlen(L, -1) != 4)
        luaL_error(L, "%s: 'rng' must be a list of 4 integers", fn);
    uint64_t any = 0;
    for (int i = 0; i < 4; i++) {
        lua_rawgeti(L, -1, i + 1);
        int isint;
        lua_Integer w = lua_tointegerx(L, -1, &isint);
        if (!isint) luaL_error(L, "%s: rng[%d] must be an integer", fn, i + 1);
        r.s[i] = (uint64_t)w;
        any |= r.s[i];
        lua_pop(L, 1);
    }
    if (!any) luaL_error(L, "%s: rng words are all zero (not a generator state)", fn);
    lua_pop(L, 1);
    if (s->kind == K_FAIR) {
        int m = s->fair.m;
        int32_t *perm = scratch(L, (size_t)s->tot * sizeof *perm);
        int sc = lua_gettop(L);
        lua_getfield(L, 2, "perm");
        int pt = lua_gettop(L);
        if (!lua_istable(L, pt) || (lua_Integer)lua_rawlen(L, pt) != s->n)
            luaL_error(L, "%s: 'perm' must hold one permutation per gene (%d)", fn, s->n);
        int32_t *seen = scratch(L, (size_t)m * sizeof *seen);
        for (int g = 0; g < s->n; g++) {
            lua_rawgeti(L, pt, g + 1);
            read_arch(L, lua_gettop(L), m, NULL, perm + (size_t)g * m, fn, "perm[g]");
            lua_pop(L, 1);
            memset(seen, 0, (size_t)m * sizeof *seen);
            for (int i = 0; i < m; i++) {
                int32_t v = perm[(size_t)g * m + i];
                if (v >= m || seen[v]++)
                    luaL_error(L, "%s: perm[%d] is not a permutation of 1..%d", fn, g + 1, m);
            }
        }
        lua_getfield(L, 2, "pointer");
        int64_t pos = pop_int(L, 0, m, fn, "pointer", 1);
        memcpy(s->fair.perm, perm, (size_t)s->tot * sizeof *perm);
        s->fair.pos = (int)pos;
        lua_settop(L, sc);
    }
    s->rng = r;
    return 0;
}

static int sampler_tostring(lua_State *L) {
    smp *s = testsmp(L, 1);
    if (!s) return luaL_error(L, "tostring: expected a sampler");
    if (s->kind == K_ATTN)
        lua_pushfstring(L, "nasrt.sampler.attentive(%d genes, %d FLOPs bins of step %f)", s->n,
                        s->at.nbins, (lua_Number)s->step);
    else
        lua_pushfstring(L, "nasrt.sampler.%s(%d genes)", kind_name[s->kind], s->n);
    return 1;
}

/* -------------------------------------------------- evolution helpers */

/* choices list (or a sampler) at idx into a scratch array; returns n. */
static int32_t *arg_choices(lua_State *L, int idx, int *n, const char *fn) {
    smp *s = testsmp(L, idx);
    if (s) {
        *n = s->n;
        return s->choices;
    }
    int tot;
    if (!lua_istable(L, idx))
        luaL_error(L, "%s: argument #%d (choices) must be a list of choice counts, got %s", fn, idx,
                   luaL_typename(L, idx));
    *n = read_choices(L, idx, fn, NULL, &tot);
    int32_t *c = scratch(L, (size_t)*n * sizeof *c);
    read_choices(L, idx, fn, c, &tot);
    return c;
}

/***
Mutation: each gene resampled with probability prob, uniformly over its
choices (SPOS/NNI: may keep its value) or over the other choices with
force_different (AttentiveNAS); exactly_one changes exactly one gene to a
different value (NAS-Bench-201 REA; prob is then ignored and may be nil).
The RNG is rng_sampler's, so runs are reproducible.
@function sampler.mutate
@tparam table arch
@tparam table choices per-gene choice counts (or a sampler: its space)
@tparam number prob in [0, 1]
@tparam sampler rng_sampler
@tparam[opt] table opts {force_different=false, exactly_one=false}
@treturn table a new arch
*/
static int sampler_mutate(lua_State *L) {
    static const char *const fn = "sampler.mutate";
    static const char *const allowed[] = {"force_different", "exactly_one", NULL};
    nrL_checkopts(L, 5, fn, allowed);
    int force = nrL_optbool_field(L, 5, "force_different", 0, fn);
    int one = nrL_optbool_field(L, 5, "exactly_one", 0, fn);
    smp *rs = testsmp(L, 4);
    if (!rs) luaL_error(L, "%s: argument #4 must be a sampler (its generator is used), got %s", fn,
                        luaL_typename(L, 4));
    double prob = 0;
    if (!one || !lua_isnoneornil(L, 3)) {
        int isnum;
        prob = lua_tonumberx(L, 3, &isnum);
        if (!isnum || !(prob >= 0 && prob <= 1))
            luaL_error(L, "%s: argument #3 (prob) must be a number in [0, 1], got %s", fn,
                       isnum ? lua_tostring(L, 3) : luaL_typename(L, 3));
    }
    lua_settop(L, 5);
    int n;
    int32_t *choices = arg_choices(L, 2, &n, fn);
    int32_t *arch = scratch(L, (size_t)n * sizeof *arch);
    read_arch(L, 1, n, choices, arch, fn, "arch");
    if (one) nr_mutate_one(&rs->rng, n, choices, arch, arch);
    else nr_mutate(&rs->rng, n, choices, prob, force, arch, arch);
    push_arch(L, n, arch);
    return 1;
}

/***
Uniform crossover: each gene from a or b with probability 1/2, drawn from
rng_sampler's generator.
@function sampler.crossover
@tparam table a
@tparam table b
@tparam sampler rng_sampler
@treturn table a new arch
*/
static int sampler_crossover(lua_State *L) {
    static const char *const fn = "sampler.crossover";
    smp *rs = testsmp(L, 3);
    if (!rs) luaL_error(L, "%s: argument #3 must be a sampler (its generator is used), got %s", fn,
                        luaL_typename(L, 3));
    if (!lua_istable(L, 1) || !lua_istable(L, 2))
        luaL_error(L, "%s: arguments #1 and #2 must be archs (lists of choice indices)", fn);
    int n = (int)lua_rawlen(L, 1);
    if ((int)lua_rawlen(L, 2) != n || n < 1)
        luaL_error(L, "%s: parents have %d and %d genes", fn, n, (int)lua_rawlen(L, 2));
    lua_settop(L, 3);
    int32_t *a = scratch(L, (size_t)n * sizeof *a);
    int32_t *b = scratch(L, (size_t)n * sizeof *b);
    read_arch(L, 1, n, NULL, a, fn, "a");
    read_arch(L, 2, n, NULL, b, fn, "b");
    nr_crossover(&rs->rng, n, a, b, a);
    push_arch(L, n, a);
    return 1;
}

/* ------------------------------------------------------ registration */

static const luaL_Reg common_methods[] = {
    {"state", sampler_state},     {"set_state", sampler_set_state},
    {"randint", sampler_randint}, {"uniform", sampler_uniform01},
    {"choices", sampler_choices}, {NULL, NULL}};

static const luaL_Reg uniform_methods[] = {{"sample", sampler_sample}, {NULL, NULL}};
static const luaL_Reg fair_methods[] = {{"sample", sampler_sample}, {"next", sampler_next}, {NULL, NULL}};
static const luaL_Reg bins_methods[] = {{"sample", sampler_sample}, {"flops", sampler_flops}, {NULL, NULL}};
static const luaL_Reg attn_methods[] = {{"sample", sampler_sample},
                                        {"sample_target", sampler_sample_target},
                                        {"flops", sampler_flops},
                                        {"prior", sampler_prior},
                                        {NULL, NULL}};
static const luaL_Reg sandwich_methods[] = {{"sample", sampler_sample}, {"max", sampler_max},
                                            {"min", sampler_min},       {"random", sampler_random},
                                            {NULL, NULL}};
static const luaL_Reg *const kind_methods[K_COUNT] = {uniform_methods, fair_methods, bins_methods,
                                                      attn_methods, sandwich_methods};

static const luaL_Reg sampler_funcs[] = {
    {"uniform", sampler_uniform},     {"strict_fair", sampler_strict_fair},
    {"flops_bins", sampler_flops_bins}, {"attentive", sampler_attentive},
    {"sandwich", sampler_sandwich},   {"mutate", sampler_mutate},
    {"crossover", sampler_crossover}, {NULL, NULL}};

static void createmeta(lua_State *L, int kind) {
    luaL_newmetatable(L, kind_mt[kind]);
    lua_newtable(L);
    luaL_setfuncs(L, common_methods, 0);
    luaL_setfuncs(L, kind_methods[kind], 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, sampler_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

void nrL_open_sampler(lua_State *L, int lib, int F) {
    (void)F;
    for (int k = 0; k < K_COUNT; k++) createmeta(L, k);
    lua_newtable(L);
    luaL_setfuncs(L, sampler_funcs, 0);
    lua_setfield(L, lib, "sampler");
}
