/*
** bind_data.c -- nasrt.data: datasets (Fashion-MNIST, CIFAR-10/100), index
** subsets and splits, and the prefetching, augmenting batch loader
** (runtime/data.c) for Lua.
**
**   local ds = assert(nasrt.data.fashion_mnist{split = "train"})
**   local train, val = nasrt.data.split(ds, {fraction = 0.5})   -- DARTS halves
**   local loader = nasrt.data.loader(train, {batch_size = 64, seed = 1,
**       augment = {crop = 4, flip = true, cutout = 16,
**                  mean = nasrt.data.stats.fashion_mnist.mean,
**                  std = nasrt.data.stats.fashion_mnist.std}})
**   for epoch = 1, 10 do
**     loader:epoch(epoch)
**     for x, y in loader:iter() do ... end      -- x [64,1,28,28], y [64]
**   end
**
** Misuse (bad option names or types, out-of-range indices) raises; a
** missing, corrupt or truncated data file returns nil, message.
*/

/***
Datasets and loaders: `nasrt.data` (C, modules/bind_data.c).
@module nasrt
*/
#include "data.h"
#include "luabind.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DATASET_MT "nasrt.Dataset"
#define LOADER_MT "nasrt.Loader"

#define FASHION_ROOT "/usr/share/datasets/fashion-mnist"

/* A dataset as Lua sees it: a base dataset and, for subsets, the base
   indices (0-based) of its samples, stored inside the userdata. */
typedef struct {
    nr_dataset *base;   /* +1, NULL after close */
    int64_t n;
    int has_idx;
    int64_t idx[];
} dsview;

typedef struct {
    nr_loader *l;       /* NULL after close */
} loaderbox;

/* ------------------------------------------------------------- helpers */

static const char *optstring_field(lua_State *L, int idx, const char *key, const char *def,
                                   const char *fn) {
    if (lua_isnoneornil(L, idx)) return def;
    lua_getfield(L, idx, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return def;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "%s: option '%s' must be a string, got %s", fn, key, luaL_typename(L, -1));
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1); /* the string stays alive in the options table */
    return s;
}

static int64_t checkint(lua_State *L, int idx, const char *fn, const char *what) {
    int isint;
    lua_Integer v = lua_tointegerx(L, idx, &isint);
    if (!isint)
        luaL_error(L, "%s: %s must be an integer, got %s", fn, what,
                   lua_type(L, idx) == LUA_TNUMBER ? "a fractional number" : luaL_typename(L, idx));
    return (int64_t)v;
}

static dsview *checkview(lua_State *L, int idx, const char *fn) {
    dsview *v = luaL_testudata(L, idx, DATASET_MT);
    if (!v) luaL_error(L, "%s: argument #%d: expected a dataset, got %s", fn, idx, nrL_typename(L, idx));
    if (!v->base) luaL_error(L, "%s: argument #%d: dataset used after close", fn, idx);
    return v;
}

static inline int64_t view_index(const dsview *v, int64_t i) { return v->has_idx ? v->idx[i] : i; }

/* Pushes a new view of base with n samples; the caller fills idx when
   has_idx.  base is retained only once the userdata exists. */
static dsview *push_view(lua_State *L, nr_dataset *base, int64_t n, int has_idx) {
    size_t extra = has_idx ? (size_t)n * sizeof(int64_t) : 0;
    dsview *v = lua_newuserdatauv(L, sizeof *v + extra, 0);
    v->base = NULL;
    v->n = n;
    v->has_idx = has_idx;
    luaL_setmetatable(L, DATASET_MT);
    nr_dataset_retain(base);
    v->base = base;
    return v;
}

/* Pushes nil, message for NR_EIO; raises for anything else. */
static int data_fail(lua_State *L, nr_status st) {
    if (st != NR_EIO) return luaL_error(L, "%s", nr_lasterror());
    luaL_pushfail(L);
    lua_pushstring(L, nr_lasterror());
    return 2;
}

/* The `split` option of the dataset constructors: 1 train, 0 test. */
static int checksplit(lua_State *L, const char *fn) {
    const char *s = optstring_field(L, 1, "split", "train", fn);
    if (strcmp(s, "train") == 0) return 1;
    if (strcmp(s, "test") == 0) return 0;
    return luaL_error(L, "%s: option 'split' must be \"train\" or \"test\", got \"%s\"", fn, s);
}

/* ------------------------------------------------------- constructors */

/*** Fashion-MNIST from Debian's dataset-fashion-mnist (gzipped IDX files).
@function data.fashion_mnist
@tparam[opt] table opts split="train"|"test", root=folder (default
  $NASRT_FASHION_MNIST or /usr/share/datasets/fashion-mnist)
@return dataset (60000 or 10000 images of [1,28,28], 10 classes)
@return nil, message when a file is missing, corrupt or truncated
*/
static int data_fashion_mnist(lua_State *L) {
    static const char *const allowed[] = {"split", "root", NULL};
    const char *fn = "fashion_mnist";
    nrL_checkopts(L, 1, fn, allowed);
    int train = checksplit(L, fn);
    const char *env = getenv("NASRT_FASHION_MNIST");
    const char *root = optstring_field(L, 1, "root", env && *env ? env : FASHION_ROOT, fn);
    nr_dataset *ds = NULL;
    nr_status st = nr_fashion_mnist_load(&ds, root, train);
    if (st != NR_OK) return data_fail(L, st);
    push_view(L, ds, ds->n, 0);
    nr_dataset_release(ds);
    return 1;
}

static int cifar(lua_State *L, int variant) {
    static const char *const allowed[] = {"split", "root", NULL};
    const char *fn = variant == 100 ? "cifar100" : "cifar10";
    nrL_checkopts(L, 1, fn, allowed);
    int train = checksplit(L, fn);
    const char *env = getenv(variant == 100 ? "NASRT_CIFAR100" : "NASRT_CIFAR10");
    const char *root = optstring_field(L, 1, "root", env && *env ? env : NULL, fn);
    if (!root)
        return luaL_error(L, "%s: option 'root' (the folder holding the %s) is required", fn,
                          variant == 100 ? "train.bin/test.bin files"
                                         : "data_batch_*.bin/test_batch.bin files");
    nr_dataset *ds = NULL;
    nr_status st = nr_cifar_load(&ds, root, variant, train);
    if (st != NR_OK) return data_fail(L, st);
    push_view(L, ds, ds->n, 0);
    nr_dataset_release(ds);
    return 1;
}

/*** CIFAR-10 binary batches from a folder (data_batch_1..5.bin, test_batch.bin).
@function data.cifar10
@tparam table opts split="train"|"test", root=folder (or $NASRT_CIFAR10)
@return dataset of [3,32,32] images, 10 classes; or nil, message
*/
static int data_cifar10(lua_State *L) { return cifar(L, 10); }

/*** CIFAR-100 binary files from a folder (train.bin, test.bin; fine labels).
@function data.cifar100
@tparam table opts split="train"|"test", root=folder (or $NASRT_CIFAR100)
@return dataset of [3,32,32] images, 100 classes; or nil, message
*/
static int data_cifar100(lua_State *L) { return cifar(L, 100); }

/* ------------------------------------------------------ dataset methods */

static int ds_gc(lua_State *L) {
    dsview *v = luaL_testudata(L, 1, DATASET_MT);
    if (!v) return luaL_error(L, "close: argument #1: expected a dataset, got %s", nrL_typename(L, 1));
    nr_dataset_release(v->base);
    v->base = NULL;
    return 0;
}

static int ds_len(lua_State *L) {
    lua_pushinteger(L, checkview(L, 1, "#dataset")->n);
    return 1;
}

static int ds_tostring(lua_State *L) {
    dsview *v = luaL_testudata(L, 1, DATASET_MT);
    if (!v) return luaL_error(L, "tostring: argument #1: expected a dataset, got %s", luaL_typename(L, 1));
    if (!v->base) {
        lua_pushstring(L, "nasrt.Dataset(closed)");
        return 1;
    }
    const nr_dataset *d = v->base;
    lua_pushfstring(L, "nasrt.Dataset(%s %s%s: %I x [%d,%d,%d], %d classes)", d->name, d->split,
                    v->has_idx ? " subset" : "", (lua_Integer)v->n, d->c, d->h, d->w, d->classes);
    return 1;
}

/*** Image i (1-based) as a [C,H,W] tensor in [0,1], and its class id (0-based).
@function Dataset:get
*/
static int ds_get(lua_State *L) {
    dsview *v = checkview(L, 1, "get");
    int64_t i = checkint(L, 2, "get", "index");
    if (i < 1 || i > v->n)
        return luaL_error(L, "get: index %I out of range 1..%I", (lua_Integer)i, (lua_Integer)v->n);
    const nr_dataset *d = v->base;
    int64_t bi = view_index(v, i - 1);
    int64_t ne[3] = {d->c, d->h, d->w};
    nr_tensor *t = nr_tensor_empty(3, ne);
    if (!t) return nrL_raise(L, NR_ENOMEM);
    size_t isz = (size_t)d->c * d->h * d->w;
    const uint8_t *src = d->pixels + (size_t)bi * isz;
    float *dst = nr_data(t);
    for (size_t k = 0; k < isz; k++) dst[k] = (float)(src[k] / 255.0);
    nrL_pushtensor(L, t);
    lua_pushinteger(L, d->labels[bi]);
    return 2;
}

static int ds_shape(lua_State *L) {
    const nr_dataset *d = checkview(L, 1, "shape")->base;
    lua_createtable(L, 3, 0);
    lua_pushinteger(L, d->c);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, d->h);
    lua_rawseti(L, -2, 2);
    lua_pushinteger(L, d->w);
    lua_rawseti(L, -2, 3);
    return 1;
}

static int ds_classes(lua_State *L) {
    lua_pushinteger(L, checkview(L, 1, "classes")->base->classes);
    return 1;
}

static int ds_name(lua_State *L) {
    const nr_dataset *d = checkview(L, 1, "name")->base;
    lua_pushstring(L, d->name);
    lua_pushstring(L, d->split);
    return 2;
}

/*** Class ids (0-based) of every sample, as a table. */
static int ds_labels(lua_State *L) {
    dsview *v = checkview(L, 1, "labels");
    lua_createtable(L, (int)v->n, 0);
    for (int64_t i = 0; i < v->n; i++) {
        lua_pushinteger(L, v->base->labels[view_index(v, i)]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/*** 1-based indices of the samples in the full dataset, as a table. */
static int ds_indices(lua_State *L) {
    dsview *v = checkview(L, 1, "indices");
    lua_createtable(L, (int)v->n, 0);
    for (int64_t i = 0; i < v->n; i++) {
        lua_pushinteger(L, view_index(v, i) + 1);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/*** Per-channel mean and (population) std of the pixels in [0,1].
@treturn table mean, table std */
static int ds_stats(lua_State *L) {
    dsview *v = checkview(L, 1, "stats");
    const nr_dataset *d = v->base;
    size_t plane = (size_t)d->h * d->w, isz = plane * d->c;
    uint64_t *hist = calloc((size_t)d->c * 256, sizeof *hist);
    if (!hist) return luaL_error(L, "stats: out of memory");
    for (int64_t i = 0; i < v->n; i++) {
        const uint8_t *p = d->pixels + (size_t)view_index(v, i) * isz;
        for (int c = 0; c < d->c; c++) {
            uint64_t *h = hist + 256 * c;
            for (size_t k = 0; k < plane; k++) h[p[c * plane + k]]++;
        }
    }
    double mean[NR_DATA_MAXC + 8] = {0}, sd[NR_DATA_MAXC + 8] = {0};
    for (int c = 0; c < d->c && c < NR_DATA_MAXC + 8; c++) {
        double s = 0, s2 = 0, cnt = 0;
        for (int k = 0; k < 256; k++) {
            double x = k / 255.0, m = (double)hist[256 * c + k];
            s += m * x;
            s2 += m * x * x;
            cnt += m;
        }
        mean[c] = cnt ? s / cnt : 0;
        sd[c] = cnt ? sqrt(fmax(0, s2 / cnt - mean[c] * mean[c])) : 0;
    }
    free(hist);
    for (int t = 0; t < 2; t++) {
        lua_createtable(L, d->c, 0);
        for (int c = 0; c < d->c; c++) {
            lua_pushnumber(L, t ? sd[c] : mean[c]);
            lua_rawseti(L, -2, c + 1);
        }
    }
    return 2;
}

/*** A subset: ds:subset{i1, i2, ...} (1-based, repeats allowed) or
ds:subset(first, last) (inclusive range). */
static int ds_subset(lua_State *L) {
    dsview *v = checkview(L, 1, "subset");
    if (lua_istable(L, 2)) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
        dsview *s = push_view(L, v->base, n, 1); /* at top; table stays at 2 */
        for (lua_Integer k = 1; k <= n; k++) {
            lua_rawgeti(L, 2, k);
            int isint;
            lua_Integer i = lua_tointegerx(L, -1, &isint);
            if (!isint)
                return luaL_error(L, "subset: entry %I is %s, expected an integer index", k,
                                  lua_type(L, -1) == LUA_TNUMBER ? "fractional" : luaL_typename(L, -1));
            if (i < 1 || i > v->n)
                return luaL_error(L, "subset: entry %I: index %I out of range 1..%I", k, i,
                                  (lua_Integer)v->n);
            lua_pop(L, 1);
            s->idx[k - 1] = view_index(v, i - 1);
        }
        return 1;
    }
    if (lua_type(L, 2) != LUA_TNUMBER)
        return luaL_error(L, "subset: expected a table of indices or a range (first, last), got %s",
                          luaL_typename(L, 2));
    int64_t a = checkint(L, 2, "subset", "first index");
    int64_t b = checkint(L, 3, "subset", "last index");
    if (a < 1 || b > v->n || b < a - 1)
        return luaL_error(L, "subset: range %I..%I out of range 1..%I", (lua_Integer)a,
                          (lua_Integer)b, (lua_Integer)v->n);
    int64_t n = b - a + 1;
    dsview *s = push_view(L, v->base, n, 1);
    for (int64_t k = 0; k < n; k++) s->idx[k] = view_index(v, a - 1 + k);
    return 1;
}

/*** Train/validation split, as DARTS does it.
nasrt.data.split(ds, {fraction=0.5, seed=n, shuffle=bool}) -> first, second.
The first part holds floor(fraction * #ds) samples.  shuffle=false (the
default unless a seed is given) gives exactly DARTS's indices[:split] and
indices[split:]; shuffle=true splits a permutation drawn from seed
(default 0).  The parts are disjoint and cover the dataset. */
static int data_split(lua_State *L) {
    static const char *const allowed[] = {"fraction", "seed", "shuffle", NULL};
    const char *fn = "split";
    dsview *v = checkview(L, 1, fn);
    nrL_checkopts(L, 2, fn, allowed);
    double frac = nrL_optnum_field(L, 2, "fraction", 0.5, fn);
    if (!(frac > 0 && frac < 1))
        return luaL_error(L, "split: option 'fraction' must be in (0, 1), got %f", frac);
    int has_seed = 0;
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "seed");
        has_seed = !lua_isnil(L, -1);
        lua_pop(L, 1);
    }
    int64_t seed = nrL_optint_field(L, 2, "seed", 0, fn);
    int shuffle = nrL_optbool_field(L, 2, "shuffle", has_seed, fn);
    int64_t n = v->n, n1 = (int64_t)floor(frac * (double)n);
    /* positions 0..n-1 of the view, permuted when shuffling */
    int64_t *perm = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof(int64_t), 0);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    if (shuffle) {
        nr_rng r;
        nr_rng_seed(&r, (uint64_t)seed ^ 0x73706c6974ULL);
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)(((nr_rng_next(&r) >> 32) * (uint64_t)(i + 1)) >> 32);
            int64_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
    }
    dsview *a = push_view(L, v->base, n1, 1);
    for (int64_t k = 0; k < n1; k++) a->idx[k] = view_index(v, perm[k]);
    dsview *b = push_view(L, v->base, n - n1, 1);
    for (int64_t k = n1; k < n; k++) b->idx[k - n1] = view_index(v, perm[k]);
    return 2;
}

static int ds_split(lua_State *L) { return data_split(L); }

/* --------------------------------------------------------------- loader */

/* mean/std: a number (every channel) or a table of C numbers. */
static void read_channels(lua_State *L, int opt, const char *key, int c, double *out,
                          double def, const char *fn) {
    for (int i = 0; i < c; i++) out[i] = def;
    lua_getfield(L, opt, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    if (lua_type(L, -1) == LUA_TNUMBER) {
        double x = lua_tonumber(L, -1);
        for (int i = 0; i < c; i++) out[i] = x;
    } else if (lua_istable(L, -1)) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        if (n != c && n != 1)
            luaL_error(L, "%s: augment option '%s' has %I values, the dataset has %d channel%s", fn,
                       key, n, c, c == 1 ? "" : "s");
        for (int i = 0; i < c; i++) {
            lua_rawgeti(L, -1, n == 1 ? 1 : i + 1);
            int isnum;
            out[i] = lua_tonumberx(L, -1, &isnum);
            if (!isnum)
                luaL_error(L, "%s: augment option '%s'[%d] must be a number, got %s", fn, key,
                           n == 1 ? 1 : i + 1, luaL_typename(L, -1));
            lua_pop(L, 1);
        }
    } else {
        luaL_error(L, "%s: augment option '%s' must be a number or a table of numbers, got %s", fn,
                   key, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
}

static void read_augment(lua_State *L, int opts, const nr_dataset *d, nr_augment *a, const char *fn) {
    static const char *const allowed[] = {"crop", "padding", "flip", "cutout", "mean", "std", NULL};
    memset(a, 0, sizeof *a);
    for (int c = 0; c < NR_DATA_MAXC; c++) a->std[c] = 1;
    if (lua_isnoneornil(L, opts)) return;
    lua_getfield(L, opts, "augment");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "%s: option 'augment' must be a table, got %s", fn, luaL_typename(L, -1));
    int t = lua_gettop(L);
    nrL_checkopts(L, t, fn, allowed);

    /* crop: true (padding 4, or `padding`), false, or the padding itself */
    int64_t padding = -1;
    lua_getfield(L, t, "padding");
    if (!lua_isnil(L, -1)) {
        padding = checkint(L, -1, fn, "augment option 'padding'");
        if (padding < 0) luaL_error(L, "%s: augment option 'padding' must be >= 0", fn);
    }
    lua_pop(L, 1);
    lua_getfield(L, t, "crop");
    if (lua_isboolean(L, -1)) {
        if (!lua_toboolean(L, -1)) {
            if (padding > 0)
                luaL_error(L, "%s: augment options crop=false and padding=%I disagree", fn,
                           (lua_Integer)padding);
            padding = 0;
        } else if (padding < 0) {
            padding = 4;
        }
    } else if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "%s: augment option 'crop' must be a boolean or the padding (integer), got %s",
                       fn, luaL_typename(L, -1));
        int64_t p = checkint(L, -1, fn, "augment option 'crop' (the padding)");
        if (p < 0) luaL_error(L, "%s: augment option 'crop' (the padding) must be >= 0", fn);
        if (padding >= 0 && padding != p)
            luaL_error(L, "%s: augment options crop=%I and padding=%I disagree", fn, (lua_Integer)p,
                       (lua_Integer)padding);
        padding = p;
    }
    lua_pop(L, 1);
    a->padding = padding < 0 ? 0 : padding;
    if (a->padding > d->h || a->padding > d->w)
        luaL_error(L, "%s: crop padding %I is larger than the %dx%d image", fn,
                   (lua_Integer)a->padding, d->h, d->w);

    lua_getfield(L, t, "flip");
    if (lua_isboolean(L, -1)) a->flip_p = lua_toboolean(L, -1) ? 0.5 : 0;
    else if (lua_type(L, -1) == LUA_TNUMBER) {
        a->flip_p = lua_tonumber(L, -1);
        if (!(a->flip_p >= 0 && a->flip_p <= 1))
            luaL_error(L, "%s: augment option 'flip' (a probability) must be in [0, 1], got %f", fn,
                       a->flip_p);
    } else if (!lua_isnil(L, -1))
        luaL_error(L, "%s: augment option 'flip' must be a boolean or a probability, got %s", fn,
                   luaL_typename(L, -1));
    lua_pop(L, 1);

    a->cutout = nrL_optint_field(L, t, "cutout", 0, fn);
    if (a->cutout < 0) luaL_error(L, "%s: augment option 'cutout' must be >= 0", fn);

    lua_getfield(L, t, "mean");
    int has_mean = !lua_isnil(L, -1);
    lua_getfield(L, t, "std");
    int has_std = !lua_isnil(L, -1);
    lua_pop(L, 2);
    if (has_mean || has_std) {
        a->normalize = 1;
        read_channels(L, t, "mean", d->c, a->mean, 0, fn);
        read_channels(L, t, "std", d->c, a->std, 1, fn);
        for (int c = 0; c < d->c; c++)
            if (!(a->std[c] > 0))
                luaL_error(L, "%s: augment option 'std'[%d] must be positive, got %f", fn, c + 1,
                           a->std[c]);
    }
    lua_pop(L, 1);
}

static loaderbox *checkloader(lua_State *L, int idx, const char *fn) {
    loaderbox *b = luaL_testudata(L, idx, LOADER_MT);
    if (!b) luaL_error(L, "%s: argument #%d: expected a loader, got %s", fn, idx, nrL_typename(L, idx));
    if (!b->l) luaL_error(L, "%s: loader used after close", fn);
    return b;
}

/*** A batch loader over a dataset or subset.
nasrt.data.loader(ds, {batch_size=64, shuffle=true, seed=0, drop_last=false,
  augment={crop=4 (or crop=true, padding=4), flip=true (or a probability),
           cutout=16, mean={...}, std={...}}, prefetch=2, limit=N})
x = (pixel/255 - mean)/std after random crop and flip, then cutout zeroes
a square (DARTS order); y holds class ids as floats.  Batches are a pure
function of (seed, epoch, batch index). */
static int data_loader(lua_State *L) {
    static const char *const allowed[] = {"batch_size", "shuffle", "seed", "drop_last",
                                          "augment", "prefetch", "limit", NULL};
    const char *fn = "loader";
    dsview *v = checkview(L, 1, fn);
    nrL_checkopts(L, 2, fn, allowed);
    nr_loader_opts o;
    memset(&o, 0, sizeof o);
    o.batch_size = nrL_optint_field(L, 2, "batch_size", 64, fn);
    if (o.batch_size < 1 || o.batch_size > ((int64_t)1 << 24))
        return luaL_error(L, "%s: option 'batch_size' must be in 1..%d, got %I", fn, 1 << 24,
                          (lua_Integer)o.batch_size);
    o.shuffle = nrL_optbool_field(L, 2, "shuffle", 1, fn);
    o.seed = (uint64_t)nrL_optint_field(L, 2, "seed", 0, fn);
    o.drop_last = nrL_optbool_field(L, 2, "drop_last", 0, fn);
    int64_t pf = nrL_optint_field(L, 2, "prefetch", 2, fn);
    if (pf < 0 || pf > 64)
        return luaL_error(L, "%s: option 'prefetch' must be in 0..64, got %I", fn, (lua_Integer)pf);
    o.prefetch = (int)pf;
    int64_t n = v->n;
    int64_t limit = nrL_optint_field(L, 2, "limit", -1, fn);
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "limit");
        int given = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (given && limit < 0)
            return luaL_error(L, "%s: option 'limit' must be >= 0, got %I", fn, (lua_Integer)limit);
    }
    if (limit >= 0 && limit < n) n = limit;
    if (v->base->c > NR_DATA_MAXC)
        return luaL_error(L, "%s: %d channels (at most %d)", fn, v->base->c, NR_DATA_MAXC);
    read_augment(L, 2, v->base, &o.aug, fn);

    loaderbox *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->l = NULL;
    luaL_setmetatable(L, LOADER_MT);
    nr_status st = nr_loader_new(&b->l, v->base, v->has_idx ? v->idx : NULL, n, &o);
    if (st != NR_OK) return luaL_error(L, "%s", nr_lasterror());
    return 1;
}

static int loader_gc(lua_State *L) {
    loaderbox *b = luaL_testudata(L, 1, LOADER_MT);
    if (!b) return luaL_error(L, "close: argument #1: expected a loader, got %s", nrL_typename(L, 1));
    nr_loader_free(b->l); /* stops and joins the prefetch thread */
    b->l = NULL;
    return 0;
}

static int loader_len(lua_State *L) {
    lua_pushinteger(L, nr_loader_len(checkloader(L, 1, "#loader")->l));
    return 1;
}

static int loader_size(lua_State *L) {
    lua_pushinteger(L, nr_loader_size(checkloader(L, 1, "size")->l));
    return 1;
}

static int loader_batch_size(lua_State *L) {
    lua_pushinteger(L, nr_loader_options(checkloader(L, 1, "batch_size")->l)->batch_size);
    return 1;
}

static int loader_tostring(lua_State *L) {
    loaderbox *b = luaL_testudata(L, 1, LOADER_MT);
    if (!b) return luaL_error(L, "tostring: argument #1: expected a loader, got %s", luaL_typename(L, 1));
    if (!b->l) {
        lua_pushstring(L, "nasrt.Loader(closed)");
        return 1;
    }
    int64_t e, p;
    nr_loader_state(b->l, &e, &p);
    const nr_loader_opts *o = nr_loader_options(b->l);
    lua_pushfstring(L, "nasrt.Loader(%I samples, batch %I, %I batches/epoch, epoch %I at %I)",
                    (lua_Integer)nr_loader_size(b->l), (lua_Integer)o->batch_size,
                    (lua_Integer)nr_loader_len(b->l), (lua_Integer)e, (lua_Integer)p);
    return 1;
}

static int push_batch(lua_State *L, nr_status st, nr_tensor *x, nr_tensor *y) {
    if (st != NR_OK) return luaL_error(L, "%s", nr_lasterror());
    if (!x) {
        lua_pushnil(L);
        return 1;
    }
    nrL_pushtensor(L, x);
    nrL_pushtensor(L, y);
    return 2;
}

/*** The next batch x, y of the current epoch, or nil at its end.  With
wrap=true the end of an epoch moves on to the next one instead. */
static int loader_next(lua_State *L) {
    nr_loader *l = checkloader(L, 1, "next")->l;
    int wrap = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TBOOLEAN);
        wrap = lua_toboolean(L, 2);
    }
    int64_t e, p;
    nr_loader_state(l, &e, &p);
    if (wrap && p >= nr_loader_len(l) && nr_loader_len(l) > 0) nr_loader_set_state(l, e + 1, 0);
    nr_tensor *x, *y;
    nr_status st = nr_loader_next(l, &x, &y);
    return push_batch(L, st, x, y);
}

static int loader_iter_step(lua_State *L) {
    loaderbox *b = luaL_checkudata(L, lua_upvalueindex(1), LOADER_MT);
    if (!b->l) return luaL_error(L, "iter: loader used after close");
    nr_tensor *x, *y;
    nr_status st = nr_loader_next(b->l, &x, &y);
    return push_batch(L, st, x, y);
}

/*** for x, y in loader:iter() do ... end: the rest of the current epoch;
when the current epoch is finished, the whole next one. */
static int loader_iter(lua_State *L) {
    nr_loader *l = checkloader(L, 1, "iter")->l;
    int64_t e, p;
    nr_loader_state(l, &e, &p);
    if (p >= nr_loader_len(l)) nr_loader_set_state(l, e + 1, 0);
    lua_pushvalue(L, 1);
    lua_pushcclosure(L, loader_iter_step, 1);
    return 1;
}

/*** loader:epoch(e) starts epoch e (order and augmentation drawn from
(seed, e)) and returns the loader; loader:epoch() returns the current one. */
static int loader_epoch(lua_State *L) {
    nr_loader *l = checkloader(L, 1, "epoch")->l;
    int64_t e, p;
    nr_loader_state(l, &e, &p);
    if (lua_isnoneornil(L, 2)) {
        lua_pushinteger(L, e);
        return 1;
    }
    int64_t ne = checkint(L, 2, "epoch", "epoch");
    if (ne < 0) return luaL_error(L, "epoch: epoch must be >= 0, got %I", (lua_Integer)ne);
    nr_loader_set_state(l, ne, 0);
    lua_settop(L, 1);
    return 1;
}

/*** {epoch=, pos=}: pos batches of epoch `epoch` were handed out. */
static int loader_state(lua_State *L) {
    nr_loader *l = checkloader(L, 1, "state")->l;
    int64_t e, p;
    nr_loader_state(l, &e, &p);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, e);
    lua_setfield(L, -2, "epoch");
    lua_pushinteger(L, p);
    lua_setfield(L, -2, "pos");
    return 1;
}

static int loader_set_state(lua_State *L) {
    static const char *const allowed[] = {"epoch", "pos", NULL};
    nr_loader *l = checkloader(L, 1, "set_state")->l;
    if (!lua_istable(L, 2))
        return luaL_error(L, "set_state: expected a state table {epoch=, pos=}, got %s",
                          luaL_typename(L, 2));
    nrL_checkopts(L, 2, "set_state", allowed);
    lua_getfield(L, 2, "epoch");
    int64_t e = checkint(L, -1, "set_state", "field 'epoch'");
    lua_getfield(L, 2, "pos");
    int64_t p = checkint(L, -1, "set_state", "field 'pos'");
    lua_pop(L, 2);
    if (nr_loader_set_state(l, e, p) != NR_OK)
        return luaL_error(L, "set_state: %s", nr_lasterror() + strlen("loader: "));
    return 0;
}

/*** loader:batch(b [, epoch]): batch b (1-based) of an epoch (default the
current one) computed on the spot, leaving the state alone. */
static int loader_batch(lua_State *L) {
    nr_loader *l = checkloader(L, 1, "batch")->l;
    int64_t b = checkint(L, 2, "batch", "batch index");
    int64_t e, p;
    nr_loader_state(l, &e, &p);
    if (!lua_isnoneornil(L, 3)) e = checkint(L, 3, "batch", "epoch");
    if (e < 0) return luaL_error(L, "batch: epoch must be >= 0, got %I", (lua_Integer)e);
    if (b < 1 || b > nr_loader_len(l))
        return luaL_error(L, "batch: index %I out of range 1..%I", (lua_Integer)b,
                          (lua_Integer)nr_loader_len(l));
    nr_tensor *x, *y;
    nr_status st = nr_loader_batch(l, e, b - 1, &x, &y);
    return push_batch(L, st, x, y);
}

/* ------------------------------------------------------------ register */

static const luaL_Reg ds_methods[] = {
    {"get", ds_get},         {"shape", ds_shape},     {"classes", ds_classes},
    {"labels", ds_labels},   {"indices", ds_indices}, {"subset", ds_subset},
    {"split", ds_split},     {"stats", ds_stats},     {"name", ds_name},
    {"close", ds_gc},        {NULL, NULL},
};

static const luaL_Reg loader_methods[] = {
    {"next", loader_next},   {"iter", loader_iter},           {"epoch", loader_epoch},
    {"state", loader_state}, {"set_state", loader_set_state}, {"batch", loader_batch},
    {"size", loader_size},   {"batch_size", loader_batch_size}, {"close", loader_gc},
    {NULL, NULL},
};

static const luaL_Reg data_funcs[] = {
    {"fashion_mnist", data_fashion_mnist},
    {"cifar10", data_cifar10},
    {"cifar100", data_cifar100},
    {"split", data_split},
    {"loader", data_loader},
    {NULL, NULL},
};

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                      lua_CFunction len, lua_CFunction tostring) {
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
}

/* Normalisation constants commonly used with each dataset. */
static void push_stats(lua_State *L, const char *name, int c, const double *mean,
                       const double *std) {
    lua_createtable(L, 0, 2);
    for (int t = 0; t < 2; t++) {
        lua_createtable(L, c, 0);
        for (int i = 0; i < c; i++) {
            lua_pushnumber(L, t ? std[i] : mean[i]);
            lua_rawseti(L, -2, i + 1);
        }
        lua_setfield(L, -2, t ? "std" : "mean");
    }
    lua_setfield(L, -2, name);
}

void nrL_open_data(lua_State *L, int lib, int F) {
    lib = lua_absindex(L, lib);
    new_class(L, DATASET_MT, ds_methods, ds_gc, ds_len, ds_tostring);
    lua_pop(L, 1);
    new_class(L, LOADER_MT, loader_methods, loader_gc, loader_len, loader_tostring);
    lua_pop(L, 1);

    luaL_newlibtable(L, data_funcs);
    nrL_setfuncs(L, data_funcs);
    lua_createtable(L, 0, 3);
    /* Fashion-MNIST: the training set's own figures; CIFAR: DARTS's constants */
    push_stats(L, "fashion_mnist", 1, (const double[]){0.2860405969887955},
               (const double[]){0.3530242445149223});
    push_stats(L, "cifar10", 3, (const double[]){0.49139968, 0.48215827, 0.44653124},
               (const double[]){0.24703233, 0.24348505, 0.26158768});
    push_stats(L, "cifar100", 3, (const double[]){0.5071, 0.4865, 0.4409},
               (const double[]){0.2673, 0.2564, 0.2762});
    lua_setfield(L, -2, "stats");
    lua_setfield(L, lib, "data");
}
