/*
** bind_dist.c -- nasrt._dist: the Lua side of runtime/dist.c (MPI).  The
** Lua module nasrt.dist (lua/nasrt/dist.lua) builds the user-facing API on
** these: rank, size, barrier, sums of tensor lists through one flat buffer,
** broadcasts, all-gathers of byte strings, the synchronised-BN switch.
**
** The flat buffer is one grow-only block owned by this file (collectives
** run on the main thread only); every argument is checked before it is
** touched, so a raise never leaves a half-packed buffer behind.
*/
#include "dist.h"
#include "luabind.h"

#include <stdlib.h>
#include <string.h>

static float *flat = NULL;
static size_t flat_cap = 0;

/* The flat buffer with room for n floats (raises on out of memory). */
static float *flat_buffer(lua_State *L, int64_t n) {
    size_t need = (size_t)(n > 0 ? n : 1);
    if (need > flat_cap) {
        float *p = realloc(flat, need * sizeof(float));
        if (!p) luaL_error(L, "dist: out of memory for a %I-float buffer", (lua_Integer)n);
        flat = p;
        flat_cap = need;
    }
    return flat;
}

/* Tensor i of the list at idx (raises naming fn). */
static nr_tensor *list_tensor(lua_State *L, int idx, lua_Integer i, const char *fn) {
    lua_rawgeti(L, idx, i);
    nr_tensor *t = nrL_totensor(L, -1);
    if (!t)
        luaL_error(L, "%s: entry %d is a %s, expected a tensor", fn, (int)i, luaL_typename(L, -1));
    lua_pop(L, 1);
    return t;
}

/* Copies t (any strides) into dst. */
static void pack(float *dst, const nr_tensor *t) {
    int64_t n = nr_numel(t);
    if (nr_is_contiguous(t)) {
        memcpy(dst, nr_data(t), (size_t)n * sizeof(float));
        return;
    }
    nr_tensor *c = nr_tensor_clone(t);
    NR_ASSERT(c != NULL);
    memcpy(dst, nr_data(c), (size_t)n * sizeof(float));
    nr_tensor_release(c);
}

/* Copies src * scale into t (any strides). */
static void unpack(nr_tensor *t, const float *src, float scale) {
    int64_t n = nr_numel(t);
    if (nr_is_contiguous(t)) {
        float *d = nr_data(t);
        for (int64_t i = 0; i < n; i++) d[i] = src[i] * scale;
        return;
    }
    nr_tensor *c = nr_tensor_empty(t->ndim, t->ne);
    NR_ASSERT(c != NULL);
    float *d = nr_data(c);
    for (int64_t i = 0; i < n; i++) d[i] = src[i] * scale;
    nr_copy_into(t, c);
    nr_tensor_release(c);
}

/* Sums a list of tensors over all ranks, in place, through one flat
buffer (one MPI_Allreduce), then multiplies by scale.
@function allreduce
@tparam {tensor,...} list
@tparam[opt=1] number scale (1/size gives the mean)
*/
static int dist_allreduce(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    float scale = (float)luaL_optnumber(L, 2, 1.0);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    int64_t total = 0;
    for (lua_Integer i = 1; i <= n; i++) total += nr_numel(list_tensor(L, 1, i, "dist.allreduce"));
    float *buf = flat_buffer(L, total);
    int64_t off = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        nr_tensor *t = list_tensor(L, 1, i, "dist.allreduce");
        pack(buf + off, t);
        off += nr_numel(t);
    }
    NRL_CHECK(L, nr_dist_allreduce_f32(buf, total));
    off = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        nr_tensor *t = list_tensor(L, 1, i, "dist.allreduce");
        unpack(t, buf + off, scale);
        off += nr_numel(t);
    }
    return 0;
}

/* Sums the gradients of a list of parameters over all ranks through one
flat buffer and multiplies them by scale.  A parameter without a gradient
counts as zeros; after the call it has a gradient on every rank when some
rank had one, else it stays without (so optimizers skip the same
parameters everywhere: single-path NAS with a path per rank).
@function allreduce_grads
@tparam {tensor,...} params
@tparam[opt=1] number scale
@treturn int parameters that have a gradient afterwards
*/
static int dist_allreduce_grads(lua_State *L) {
    const char *fn = "dist.allreduce_grads";
    luaL_checktype(L, 1, LUA_TTABLE);
    float scale = (float)luaL_optnumber(L, 2, 1.0);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    int64_t total = n;
    for (lua_Integer i = 1; i <= n; i++) total += nr_numel(list_tensor(L, 1, i, fn));
    float *buf = flat_buffer(L, total);
    float *mask = buf + (total - n);
    int64_t off = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        nr_tensor *p = list_tensor(L, 1, i, fn);
        int64_t k = nr_numel(p);
        if (p->grad) {
            pack(buf + off, p->grad);
            mask[i - 1] = 1;
        } else {
            memset(buf + off, 0, (size_t)k * sizeof(float));
            mask[i - 1] = 0;
        }
        off += k;
    }
    NRL_CHECK(L, nr_dist_allreduce_f32(buf, total));
    off = 0;
    lua_Integer with = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        nr_tensor *p = list_tensor(L, 1, i, fn);
        int64_t k = nr_numel(p);
        if (mask[i - 1] > 0) {
            if (!p->grad) {
                p->grad = nr_tensor_empty(p->ndim, p->ne);
                if (!p->grad) return nrL_raise(L, NR_ENOMEM);
            }
            unpack(p->grad, buf + off, scale);
            with++;
        }
        off += k;
    }
    lua_pushinteger(L, with);
    return 1;
}

/* Root's values of a list of tensors into the same tensors on every rank
(one flat buffer, one MPI_Bcast).
@function broadcast
@tparam {tensor,...} list same shapes on every rank
@tparam[opt=0] int root
*/
static int dist_broadcast(lua_State *L) {
    const char *fn = "dist.broadcast";
    luaL_checktype(L, 1, LUA_TTABLE);
    int root = (int)luaL_optinteger(L, 2, 0);
    if (root < 0 || root >= nr_dist_size())
        return luaL_error(L, "%s: root %d out of range 0..%d", fn, root, nr_dist_size() - 1);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    int64_t total = 0;
    for (lua_Integer i = 1; i <= n; i++) total += nr_numel(list_tensor(L, 1, i, fn));
    /* the sizes must agree, else MPI would truncate: compare with root's */
    int64_t root_total = total;
    NRL_CHECK(L, nr_dist_bcast(&root_total, sizeof root_total, root));
    if (root_total != total)
        return luaL_error(L, "%s: rank %d has %I values, root %d has %I", fn, nr_dist_rank(),
                          (lua_Integer)total, root, (lua_Integer)root_total);
    float *buf = flat_buffer(L, total);
    int64_t off = 0;
    if (nr_dist_rank() == root)
        for (lua_Integer i = 1; i <= n; i++) {
            nr_tensor *t = list_tensor(L, 1, i, fn);
            pack(buf + off, t);
            off += nr_numel(t);
        }
    NRL_CHECK(L, nr_dist_bcast(buf, total * (int64_t)sizeof(float), root));
    off = 0;
    if (nr_dist_rank() != root)
        for (lua_Integer i = 1; i <= n; i++) {
            nr_tensor *t = list_tensor(L, 1, i, fn);
            unpack(t, buf + off, 1.0f);
            off += nr_numel(t);
        }
    return 0;
}

/* Sums of numbers over all ranks (in double).
@function allreduce_numbers
@tparam {number,...} xs
@tparam[opt="sum"] string op "sum" or "max"
@treturn {number,...}
*/
static int dist_allreduce_numbers(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *op = luaL_optstring(L, 2, "sum");
    int max = strcmp(op, "max") == 0;
    if (!max && strcmp(op, "sum") != 0)
        return luaL_error(L, "dist.allreduce_numbers: op must be \"sum\" or \"max\", got \"%s\"", op);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    double *buf = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof(double), 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        int ok;
        buf[i - 1] = lua_tonumberx(L, -1, &ok);
        if (!ok)
            return luaL_error(L, "dist.allreduce_numbers: entry %d is a %s, expected a number",
                              (int)i, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    NRL_CHECK(L, max ? nr_dist_allreduce_max_f64(buf, n) : nr_dist_allreduce_f64(buf, n));
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_pushnumber(L, buf[i - 1]);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

/* Root's string on every rank (the other ranks pass nil or anything).
@function broadcast_string
@tparam string|nil s
@tparam[opt=0] int root
@treturn string
*/
static int dist_broadcast_string(lua_State *L) {
    int root = (int)luaL_optinteger(L, 2, 0);
    if (root < 0 || root >= nr_dist_size())
        return luaL_error(L, "dist.broadcast_string: root %d out of range 0..%d", root,
                          nr_dist_size() - 1);
    int me = nr_dist_rank() == root;
    size_t len = 0;
    const char *s = me ? luaL_checklstring(L, 1, &len) : NULL;
    int64_t n = (int64_t)len;
    NRL_CHECK(L, nr_dist_bcast(&n, sizeof n, root));
    if (me) {
        lua_pushvalue(L, 1);
        NRL_CHECK(L, nr_dist_bcast((void *)s, n, root));
        return 1;
    }
    char *buf = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1), 0);
    NRL_CHECK(L, nr_dist_bcast(buf, n, root));
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

/* Every rank's string, by rank: {[1] = rank 0's, ...}.
@function allgather_string
@tparam string s
@treturn {string,...}
*/
static int dist_allgather_string(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    int size = nr_dist_size();
    int64_t *lens = lua_newuserdatauv(L, (size_t)size * sizeof(int64_t), 0);
    NRL_CHECK(L, nr_dist_allgather_lens((int64_t)len, lens));
    int64_t total = 0;
    for (int i = 0; i < size; i++) total += lens[i];
    char *out = lua_newuserdatauv(L, (size_t)(total > 0 ? total : 1), 0);
    NRL_CHECK(L, nr_dist_allgatherv(s, (int64_t)len, out, lens));
    lua_createtable(L, size, 0);
    int64_t off = 0;
    for (int i = 0; i < size; i++) {
        lua_pushlstring(L, out + off, (size_t)lens[i]);
        lua_rawseti(L, -2, i + 1);
        off += lens[i];
    }
    return 1;
}

static int dist_init(lua_State *L) {
    NRL_CHECK(L, nr_dist_init());
    lua_pushboolean(L, nr_dist_initialized());
    return 1;
}

static int dist_rank(lua_State *L) {
    lua_pushinteger(L, nr_dist_rank());
    return 1;
}

static int dist_size(lua_State *L) {
    lua_pushinteger(L, nr_dist_size());
    return 1;
}

static int dist_local_size(lua_State *L) {
    lua_pushinteger(L, nr_dist_local_size());
    return 1;
}

static int dist_compiled(lua_State *L) {
    lua_pushboolean(L, nr_dist_compiled());
    return 1;
}

static int dist_launched(lua_State *L) {
    lua_pushboolean(L, nr_dist_launched());
    return 1;
}

static int dist_initialized(lua_State *L) {
    lua_pushboolean(L, nr_dist_initialized());
    return 1;
}

static int dist_barrier(lua_State *L) {
    NRL_CHECK(L, nr_dist_barrier());
    return 0;
}

static int dist_finalize(lua_State *L) {
    (void)L;
    nr_dist_finalize();
    return 0;
}

static int dist_abort(lua_State *L) {
    nr_dist_abort((int)luaL_optinteger(L, 1, 1));
    return 0;
}

/* set_sync_bn(on) -> previous setting */
static int dist_set_sync_bn(lua_State *L) {
    luaL_checkany(L, 1);
    lua_pushboolean(L, nr_dist_set_sync_bn(lua_toboolean(L, 1)));
    return 1;
}

/* sync_bn() -> whether batch norm synchronises now */
static int dist_sync_bn(lua_State *L) {
    lua_pushboolean(L, nr_dist_sync_bn());
    return 1;
}

static const luaL_Reg dist_funcs[] = {
    {"compiled", dist_compiled},
    {"launched", dist_launched},
    {"init", dist_init},
    {"initialized", dist_initialized},
    {"rank", dist_rank},
    {"size", dist_size},
    {"local_size", dist_local_size},
    {"barrier", dist_barrier},
    {"allreduce", dist_allreduce},
    {"allreduce_grads", dist_allreduce_grads},
    {"allreduce_numbers", dist_allreduce_numbers},
    {"broadcast", dist_broadcast},
    {"broadcast_string", dist_broadcast_string},
    {"allgather_string", dist_allgather_string},
    {"set_sync_bn", dist_set_sync_bn},
    {"sync_bn", dist_sync_bn},
    {"finalize", dist_finalize},
    {"abort", dist_abort},
    {NULL, NULL},
};

void nrL_open_dist(lua_State *L, int lib, int F) {
    (void)F;
    lib = lua_absindex(L, lib);
    lua_newtable(L);
    nrL_setfuncs(L, dist_funcs);
    lua_setfield(L, lib, "_dist");
}
