/*
** luabind.c -- nrL_* helpers: boxed tensors, option tables, error raising.
*/
#include "luabind.h"

#include <math.h>
#include <string.h>

nr_tensor *nrL_totensor(lua_State *L, int idx) {
    nr_tensor **box = luaL_testudata(L, idx, NR_TENSOR_MT);
    return box ? *box : NULL;
}

#define FNAMES "nasrt.fnames"

/* The name of the running C function: its registered name (so messages
   name it also when Lua knows none, as under pcall(f, ...) or after
   `local g = F.relu`), else the name at the call site. */
static const char *fname(lua_State *L) {
    lua_Debug ar;
    if (!lua_getstack(L, 0, &ar) || !lua_getinfo(L, "nf", &ar)) return "?";
    const char *s = NULL;
    if (lua_getfield(L, LUA_REGISTRYINDEX, FNAMES) == LUA_TTABLE) {
        lua_pushvalue(L, -2);
        lua_rawget(L, -2);
        s = lua_tostring(L, -1);   /* kept alive by the names table */
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
    return s ? s : ar.name ? ar.name : "?";
}

void nrL_name_functions(lua_State *L, int lib) {
    lib = lua_absindex(L, lib);
    if (lua_getfield(L, LUA_REGISTRYINDEX, FNAMES) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, FNAMES);
    }
    int names = lua_gettop(L);
    /* the functions of lib and of the tables it holds (F, Tensor, io, ...) */
    lua_pushnil(L);
    while (lua_next(L, lib)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1)) {
            int t = lua_gettop(L);
            lua_pushnil(L);
            while (lua_next(L, t)) {
                if (lua_type(L, -2) == LUA_TSTRING && lua_iscfunction(L, -1)) {
                    lua_pushvalue(L, -2);
                    lua_rawset(L, names);
                } else {
                    lua_pop(L, 1);
                }
            }
        } else if (lua_type(L, -2) == LUA_TSTRING && lua_iscfunction(L, -1)) {
            lua_pushvalue(L, -1);
            lua_pushvalue(L, -3);
            lua_rawset(L, names);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

const char *nrL_typename(lua_State *L, int idx) {
    int t = luaL_getmetafield(L, idx, "__name");
    if (t == LUA_TSTRING) {
        const char *s = lua_tostring(L, -1);   /* kept alive by the metatable */
        lua_pop(L, 1);
        return s;
    }
    if (t != LUA_TNIL) lua_pop(L, 1);
    return luaL_typename(L, idx);
}

nr_tensor *nrL_checktensorfn(lua_State *L, int idx, const char *fn) {
    nr_tensor **box = luaL_testudata(L, idx, NR_TENSOR_MT);
    if (!box) luaL_error(L, "%s: argument #%d: expected tensor, got %s", fn, idx, nrL_typename(L, idx));
    if (!*box) luaL_error(L, "%s: argument #%d: tensor used after close", fn, idx);
    return *box;
}

nr_tensor *nrL_checktensor(lua_State *L, int idx) {
    nr_tensor **box = luaL_testudata(L, idx, NR_TENSOR_MT);
    if (!box || !*box) nrL_checktensorfn(L, idx, fname(L));
    return *box;
}

nr_tensor *nrL_opttensor(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return NULL;
    return nrL_checktensor(L, idx);
}

/* GC pressure: Lua sees 8 bytes per tensor, so it would collect tensors a
   script dropped at its own pace, which knows nothing of their storage.
   The state runs Lua's generational collector (luaopen_nasrt_core sets
   it), and after every 64 MB of tensors handed to Lua a young collection
   frees the unreachable ones: most tensors die young (an op's output read
   by the next op), and a young collection only walks the objects made
   since the last one.  A full collection every 128 MB, as before, marked
   the whole heap each time: 215 of them in 4 DARTS steps took 1.3 s of
   the main thread; 64 MB young collections take 0.07 s, for 30-45 MB more
   peak RSS.
   Tensors that lived through two young collections are old, and only a
   full collection frees them (and, through them, the tapes they hold).
   Training runs one before each backward; a loop without backward (an
   evaluation) had nothing else: AGNAS's supernet evaluation piled up ~4 GB
   of dead tensors, each batch's outputs in fresh pages (1.1M page faults;
   11-15 s of `make run`'s 60 in the kernel).  So a full collection also
   runs when the live tensor bytes pass twice what the last backward or
   full collection left plus 256 MB -- with gradients on, and a graph the
   size of the last backward's alive, only past that size plus 256 MB, so
   a training forward does not pay full collections that free nothing. */
static size_t bytes_since_gc = 0, live_after_full = 0, live_graph = 0;

void nrL_fullgc(lua_State *L) {
    lua_gc(L, LUA_GCCOLLECT);
    live_after_full = nr_live_bytes();
}

void nrL_gcmark(int graph) {
    if (graph)
        live_graph = nr_live_bytes();
    else
        live_after_full = nr_live_bytes();
}

void nrL_pushtensor(lua_State *L, nr_tensor *t) {
    if (!t) nrL_raise(L, NR_ENOMEM);
    nr_tensor **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = t;
    luaL_setmetatable(L, NR_TENSOR_MT);
    bytes_since_gc += (size_t)nr_numel(t) * 4 + sizeof *t;
    if (bytes_since_gc > ((size_t)64 << 20)) {
        bytes_since_gc = 0; /* t is on the stack: safe either way */
        size_t lim = 2 * live_after_full + ((size_t)256 << 20);
        if (nr_grad_enabled() && live_graph + ((size_t)256 << 20) > lim)
            lim = live_graph + ((size_t)256 << 20);
        if (nr_live_bytes() > lim)
            nrL_fullgc(L);
        else
            lua_gc(L, LUA_GCSTEP, 0);
    }
}

int nrL_raise(lua_State *L, nr_status st) {
    const char *msg = nr_lasterror();
    if (!msg[0]) msg = st == NR_ENOMEM ? "out of memory" : "error";
    const char *fn = fname(L);
    size_t n = strlen(fn);
    if (strcmp(fn, "?") == 0 || (strncmp(msg, fn, n) == 0 && msg[n] == ':'))
        return luaL_error(L, "%s", msg);
    return luaL_error(L, "%s: %s", fn, msg);
}

int nrL_checkshape(lua_State *L, int idx, int64_t *ne, const char *fn) {
    int nd = 0;
    if (lua_istable(L, idx)) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
        if (n > NR_MAXDIM) luaL_error(L, "%s: shape has %d dims (at most %d)", fn, (int)n, NR_MAXDIM);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i);
            int isint = 0;
            lua_Integer v = lua_type(L, -1) == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
            if (!isint)
                luaL_error(L, "%s: shape entry %d is %s, expected an integer", fn, i,
                           lua_type(L, -1) == LUA_TNUMBER ? "fractional" : luaL_typename(L, -1));
            lua_pop(L, 1);
            ne[nd++] = v;
        }
    } else {
        int top = lua_gettop(L);
        for (int i = idx; i <= top; i++) {
            if (nd >= NR_MAXDIM) luaL_error(L, "%s: too many dims (at most %d)", fn, NR_MAXDIM);
            int isint = 0;
            lua_Integer v = lua_type(L, i) == LUA_TNUMBER ? lua_tointegerx(L, i, &isint) : 0;
            if (!isint)
                luaL_error(L, "%s: argument #%d: expected a shape (table or integers), got %s", fn, i,
                           lua_type(L, i) == LUA_TNUMBER ? "fractional number" : luaL_typename(L, i));
            ne[nd++] = v;
        }
        if (nd == 0 && top < idx) luaL_error(L, "%s: missing shape", fn);
    }
    for (int i = 0; i < nd; i++)
        if (ne[i] < 0) luaL_error(L, "%s: negative size %I in dim %d", fn, (lua_Integer)ne[i], i + 1);
    if (nr_check_shape(fn, nd, ne) != NR_OK) luaL_error(L, "%s", nr_lasterror());
    return nd;
}

void nrL_checkopts(lua_State *L, int idx, const char *fn, const char *const *allowed) {
    if (lua_isnoneornil(L, idx)) return;
    if (!lua_istable(L, idx))
        luaL_error(L, "%s: options must be a table, got %s", fn, luaL_typename(L, idx));
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "%s: option keys must be names", fn);
        const char *k = lua_tostring(L, -1);
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++) ok = strcmp(*a, k) == 0;
        if (!ok) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (const char *const *a = allowed; *a; a++) {
                if (a != allowed) luaL_addstring(&b, ", ");
                luaL_addstring(&b, *a);
            }
            luaL_pushresult(&b);
            luaL_error(L, "%s: unknown option '%s' (expected one of: %s)", fn, k, lua_tostring(L, -1));
        }
    }
}

static int getfield(lua_State *L, int idx, const char *key) {
    if (lua_isnoneornil(L, idx)) return 0;
    lua_getfield(L, idx, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

int64_t nrL_optint_field(lua_State *L, int idx, const char *key, int64_t def, const char *fn) {
    if (!getfield(L, idx, key)) return def;
    int isint = 0;
    lua_Integer v = lua_type(L, -1) == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
    if (!isint) luaL_error(L, "%s: option '%s' must be an integer, got %s", fn, key,
                           lua_type(L, -1) == LUA_TNUMBER ? "a fractional number" : luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

void nrL_optpair_field(lua_State *L, int idx, const char *key, int64_t def, int64_t out[2],
                       const char *fn) {
    out[0] = out[1] = def;
    if (!getfield(L, idx, key)) return;
    if (lua_istable(L, -1)) {
        if (lua_rawlen(L, -1) != 2) luaL_error(L, "%s: option '%s' must be a number or a pair {h, w}", fn, key);
        for (int i = 0; i < 2; i++) {
            lua_rawgeti(L, -1, i + 1);
            int isint = 0;
            lua_Integer v = lua_type(L, -1) == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
            if (!isint) luaL_error(L, "%s: option '%s'[%d] must be an integer", fn, key, i + 1);
            out[i] = v;
            lua_pop(L, 1);
        }
    } else {
        int isint = 0;
        lua_Integer v = lua_type(L, -1) == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
        if (!isint) luaL_error(L, "%s: option '%s' must be an integer or a pair {h, w}, got %s", fn, key,
                               lua_type(L, -1) == LUA_TNUMBER ? "a fractional number" : luaL_typename(L, -1));
        out[0] = out[1] = v;
    }
    lua_pop(L, 1);
}

double nrL_optnum_field(lua_State *L, int idx, const char *key, double def, const char *fn) {
    if (!getfield(L, idx, key)) return def;
    int isnum = lua_type(L, -1) == LUA_TNUMBER;
    lua_Number v = lua_tonumber(L, -1);
    if (!isnum) luaL_error(L, "%s: option '%s' must be a number, got %s", fn, key, luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

int nrL_optbool_field(lua_State *L, int idx, const char *key, int def, const char *fn) {
    if (!getfield(L, idx, key)) return def;
    if (!lua_isboolean(L, -1))
        luaL_error(L, "%s: option '%s' must be a boolean, got %s", fn, key, luaL_typename(L, -1));
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

int nrL_checkdim(lua_State *L, int idx, int ndim, const char *fn) {
    int isint;
    lua_Integer d = lua_tointegerx(L, idx, &isint);
    if (!isint) luaL_error(L, "%s: dim must be an integer, got %s", fn, luaL_typename(L, idx));
    int n = ndim == 0 ? 1 : ndim;
    if (d < -n || d > n || d == 0)
        luaL_error(L, "%s: dim %d out of range for a %d-dim tensor (1-based; negative counts from the end)",
                   fn, (int)d, ndim);
    return d > 0 ? (int)d - 1 : (int)(n + d);
}

void nrL_setfuncs(lua_State *L, const luaL_Reg *l) { luaL_setfuncs(L, l, 0); }
