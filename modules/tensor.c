/*
** tensor.c -- the nasrt.Tensor metatable, constructors, methods, the
** elementwise/reduction/shape ops of nasrt.F, grad mode, and
** luaopen_nasrt_core, which assembles the whole C side of `nasrt`.
*/
#include "luabind.h"

#include <math.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#define FN(L) lua_tostring(L, lua_upvalueindex(1))

/* ------------------------------------------------------------ helpers */

/* A number argument becomes a 0-dim tensor so the binary ops broadcast. */
static nr_tensor *checkoperand(lua_State *L, int idx, const char *fn) {
    if (lua_type(L, idx) == LUA_TNUMBER) {
        nr_tensor *t = nr_tensor_full(0, NULL, (float)lua_tonumber(L, idx));
        nrL_pushtensor(L, t); /* keep it owned by Lua so an error can't leak it */
        lua_replace(L, idx);
        return t;
    }
    nr_tensor **box = luaL_testudata(L, idx, NR_TENSOR_MT);
    if (!box) luaL_error(L, "%s: argument #%d: expected tensor or number, got %s", fn, idx,
                         luaL_typename(L, idx));
    if (!*box) luaL_error(L, "%s: argument #%d: tensor used after close", fn, idx);
    return *box;
}

static int push_or_raise(lua_State *L, nr_status st, nr_tensor *out) {
    if (st != NR_OK) return nrL_raise(L, st);
    nrL_pushtensor(L, out);
    return 1;
}

/* ------------------------------------------------------- constructors */

static int tensor_fill_new(lua_State *L, float v, int random) {
    int64_t ne[NR_MAXDIM];
    const char *fn = random == 1 ? "rand" : random == 2 ? "randn" : v == 0.0f ? "zeros" : "ones";
    int nd = nrL_checkshape(L, 1, ne, fn);
    nr_tensor *t = random == 1 ? nr_tensor_rand(nd, ne)
                 : random == 2 ? nr_tensor_randn(nd, ne)
                 : nr_tensor_full(nd, ne, v);
    if (!t) return nrL_raise(L, NR_ENOMEM);
    nrL_pushtensor(L, t);
    return 1;
}

static int nasrt_zeros(lua_State *L) { return tensor_fill_new(L, 0.0f, 0); }
static int nasrt_ones(lua_State *L) { return tensor_fill_new(L, 1.0f, 0); }
static int nasrt_rand(lua_State *L) { return tensor_fill_new(L, 0, 1); }
static int nasrt_randn(lua_State *L) { return tensor_fill_new(L, 0, 2); }

static int nasrt_full(lua_State *L) {
    int64_t ne[NR_MAXDIM];
    luaL_checktype(L, 1, LUA_TTABLE);
    float v = (float)luaL_checknumber(L, 2);
    int nd = nrL_checkshape(L, 1, ne, "full");
    nr_tensor *t = nr_tensor_full(nd, ne, v);
    if (!t) return nrL_raise(L, NR_ENOMEM);
    nrL_pushtensor(L, t);
    return 1;
}

/* nasrt.tensor(nested table | number): infers the shape from the first
   element at each depth and checks every row against it. */
static void infer_shape(lua_State *L, int idx, int depth, int *nd, int64_t *ne) {
    if (lua_type(L, idx) != LUA_TTABLE) return;
    if (depth >= NR_MAXDIM) luaL_error(L, "tensor: nesting deeper than %d", NR_MAXDIM);
    ne[depth] = (int64_t)lua_rawlen(L, idx);
    *nd = depth + 1;
    if (ne[depth] == 0) return;
    lua_rawgeti(L, idx, 1);
    infer_shape(L, lua_gettop(L), depth + 1, nd, ne);
    lua_pop(L, 1);
}

static void fill_from(lua_State *L, int idx, int depth, int nd, const int64_t *ne, float *d,
                      int64_t *pos) {
    if (depth == nd) {
        int isnum;
        lua_Number v = lua_tonumberx(L, idx, &isnum);
        if (!isnum) luaL_error(L, "tensor: element %I is %s, expected a number",
                               (lua_Integer)*pos + 1, luaL_typename(L, idx));
        d[(*pos)++] = (float)v;
        return;
    }
    if (lua_type(L, idx) != LUA_TTABLE || (int64_t)lua_rawlen(L, idx) != ne[depth])
        luaL_error(L, "tensor: ragged nested table (dim %d should have %I entries)", depth + 1,
                   (lua_Integer)ne[depth]);
    for (int64_t i = 1; i <= ne[depth]; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i);
        fill_from(L, lua_gettop(L), depth + 1, nd, ne, d, pos);
        lua_pop(L, 1);
    }
}

static int nasrt_tensor(lua_State *L) {
    int64_t ne[NR_MAXDIM];
    int nd = 0;
    if (lua_type(L, 1) == LUA_TNUMBER) {
        nrL_pushtensor(L, nr_tensor_full(0, NULL, (float)lua_tonumber(L, 1)));
        return 1;
    }
    if (lua_type(L, 1) != LUA_TTABLE)
        return luaL_error(L, "tensor: expected a (nested) table of numbers or a number, got %s",
                          luaL_typename(L, 1));
    infer_shape(L, 1, 0, &nd, ne);
    if (nr_check_shape("tensor", nd, ne) != NR_OK) return nrL_raise(L, NR_ESHAPE);
    nr_tensor *t = nr_tensor_empty(nd, ne);
    nrL_pushtensor(L, t); /* owned by Lua before filling can raise */
    int64_t pos = 0;
    if (nr_numel(t) > 0) fill_from(L, 1, 0, nd, ne, nr_data(t), &pos);
    return 1;
}

static int nasrt_manual_seed(lua_State *L) {
    lua_Integer s = luaL_checkinteger(L, 1);
    nr_manual_seed((uint64_t)s);
    return 0;
}

/* Generator state as 4 integers, so checkpoints can restore it exactly. */
static int nasrt_get_rng_state(lua_State *L) {
    nr_rng *r = nr_rng_global();
    lua_createtable(L, 4, 0);
    for (int i = 0; i < 4; i++) {
        lua_pushinteger(L, (lua_Integer)r->s[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int nasrt_set_rng_state(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    nr_rng r;
    for (int i = 0; i < 4; i++) {
        lua_rawgeti(L, 1, i + 1);
        int isint;
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (!isint) return luaL_error(L, "set_rng_state: expected a table of 4 integers");
        r.s[i] = (uint64_t)v;
        lua_pop(L, 1);
    }
    if (!(r.s[0] | r.s[1] | r.s[2] | r.s[3]))
        return luaL_error(L, "set_rng_state: the words are all zero (not a generator state)");
    *nr_rng_global() = r;
    return 0;
}

/* ----------------------------------------------------------- grad mode */

static int finish_nograd(lua_State *L, int status, lua_KContext ctx) {
    nr_set_grad_enabled((int)ctx);
    if (status != LUA_OK && status != LUA_YIELD) return lua_error(L);
    return lua_gettop(L) - 1;
}

/* nasrt.no_grad(fn, ...) -> fn(...) with grad mode off, restored even when
   fn raises. */
static int nasrt_no_grad(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int old = nr_set_grad_enabled(0);
    lua_pushnil(L);          /* slot so results start at 2 after the pcall */
    lua_insert(L, 1);
    int st = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, old, finish_nograd);
    return finish_nograd(L, st, old);
}

static int nasrt_set_grad_enabled(lua_State *L) {
    luaL_checktype(L, 1, LUA_TBOOLEAN);
    lua_pushboolean(L, nr_set_grad_enabled(lua_toboolean(L, 1)));
    return 1;
}

static int nasrt_is_grad_enabled(lua_State *L) {
    lua_pushboolean(L, nr_grad_enabled());
    return 1;
}

static int nasrt_set_num_threads(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 64, 1, "thread count must be in 1..64");
    nr_set_num_threads((int)n);
    return 0;
}

static int nasrt_num_threads(lua_State *L) {
    lua_pushinteger(L, nr_num_threads());
    return 1;
}

static int nasrt_memory(lua_State *L) {
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)nr_live_bytes());
    lua_setfield(L, -2, "live_bytes");
    lua_pushinteger(L, (lua_Integer)nr_peak_bytes());
    lua_setfield(L, -2, "peak_bytes");
    lua_pushinteger(L, (lua_Integer)nr_cached_bytes());
    lua_setfield(L, -2, "cached_bytes");
    return 1;
}

static void tape_add(void *ud, const char *what, size_t bytes) {
    lua_State *L = ud;
    lua_getfield(L, -1, what);
    lua_Integer b = lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_pushinteger(L, b + (lua_Integer)bytes);
    lua_setfield(L, -2, what);
}

/* nasrt.tape_memory(t) -> total_bytes, {what = bytes}: the storages the
   autograd tape behind t keeps alive, by the op that produced them. */
static int nasrt_tape_memory(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    lua_newtable(L);
    size_t total = nr_tape_memory(t, tape_add, L);
    lua_pushinteger(L, (lua_Integer)total);
    lua_insert(L, -2);
    return 2;
}

static int nasrt_reset_peak_memory(lua_State *L) {
    nr_reset_peak_bytes();
    return 0;
}

/* Graceful Ctrl-C for long runs: catch_interrupt(true) replaces the host's
   "raise an error now" handler with one that only sets a flag, which a
   recipe polls between steps (then checkpoints and exits); a second Ctrl-C
   exits at once with status 130.  catch_interrupt(false) restores the
   previous handler. */
static volatile sig_atomic_t interrupt_flag = 0;
static struct sigaction prev_sigint;
static int catching = 0;

static void on_sigint(int sig) {
    (void)sig;
    if (interrupt_flag) _exit(130);
    interrupt_flag = 1;
}

static int nasrt_catch_interrupt(lua_State *L) {
    int on = lua_toboolean(L, 1);
    if (on && !catching) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigint;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &prev_sigint);
        catching = 1;
    } else if (!on && catching) {
        sigaction(SIGINT, &prev_sigint, NULL);
        catching = 0;
    }
    interrupt_flag = 0;
    return 0;
}

static int nasrt_interrupted(lua_State *L) {
    lua_pushboolean(L, interrupt_flag != 0);
    return 1;
}

/* Wall-clock seconds from a monotonic clock (for progress lines and bench). */
static int nasrt_clock(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + ts.tv_nsec * 1e-9);
    return 1;
}

static int nasrt_is_tensor(lua_State *L) {
    lua_pushboolean(L, nrL_totensor(L, 1) != NULL);
    return 1;
}

/* ------------------------------------------------------------- methods */

static int tensor_gc(lua_State *L) {
    nr_tensor **box = luaL_testudata(L, 1, NR_TENSOR_MT);
    if (!box) return luaL_error(L, "close: argument #1: expected tensor, got %s", nrL_typename(L, 1));
    nr_tensor_release(*box);
    *box = NULL;
    return 0;
}

static int tensor_shape(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->ne[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int tensor_size(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    if (lua_isnoneornil(L, 2)) return tensor_shape(L);
    int d = nrL_checkdim(L, 2, t->ndim, "size");
    lua_pushinteger(L, t->ndim ? t->ne[d] : 1);
    return 1;
}

static int tensor_dim(lua_State *L) {
    lua_pushinteger(L, nrL_checktensor(L, 1)->ndim);
    return 1;
}

static int tensor_numel(lua_State *L) {
    lua_pushinteger(L, nr_numel(nrL_checktensor(L, 1)));
    return 1;
}

static int tensor_len(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    lua_pushinteger(L, t->ndim ? t->ne[0] : 1);
    return 1;
}

static int tensor_item(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    char b[NR_SHAPEBUF];
    if (nr_numel(t) != 1)
        return luaL_error(L, "item: tensor %s has %I elements, expected exactly 1", nr_shape_str(t, b),
                          (lua_Integer)nr_numel(t));
    lua_pushnumber(L, nr_data(t)[0]);
    return 1;
}

static void push_nested(lua_State *L, const nr_tensor *t, int d, const float *p) {
    if (d == t->ndim) {
        lua_pushnumber(L, *p);
        return;
    }
    luaL_checkstack(L, 4, "totable");
    lua_createtable(L, (int)t->ne[d], 0);
    for (int64_t i = 0; i < t->ne[d]; i++) {
        push_nested(L, t, d + 1, p + i * t->st[d]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static int tensor_totable(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    push_nested(L, t, 0, nr_data(t));
    return 1;
}

static int tensor_clone(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    /* differentiable copy, like torch.clone */
    nr_tensor *o = nr_tensor_clone(t);
    if (o && nr_grad_enabled() && nr_needs_grad(t)) {
        nr_tensor_release(o);
        nr_tensor *v = NULL;
        /* contiguous() of a contiguous tensor would alias; force a copy */
        nr_status st = nr_affine_scalar(&v, t, 1.0f, 0.0f);
        return push_or_raise(L, st, v);
    }
    nrL_pushtensor(L, o);
    return 1;
}

static int tensor_detach(lua_State *L) {
    nrL_pushtensor(L, nr_tensor_detach(nrL_checktensor(L, 1)));
    return 1;
}

static int tensor_contiguous(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    nrL_pushtensor(L, nr_contig(t));
    return 1;
}

static int tensor_is_contiguous(lua_State *L) {
    lua_pushboolean(L, nr_is_contiguous(nrL_checktensor(L, 1)));
    return 1;
}

static int tensor_requires_grad(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    int on = lua_isnoneornil(L, 2) ? 1 : (luaL_checktype(L, 2, LUA_TBOOLEAN), lua_toboolean(L, 2));
    if (t->node && !on)
        return luaL_error(L, "requires_grad: can only change the flag of a leaf tensor (use detach)");
    if (!t->node) t->requires_grad = on;
    lua_settop(L, 1);
    return 1;
}

static int tensor_backward(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    nr_tensor *g = nrL_opttensor(L, 2);
    /* Lua's collector does not see tensor memory: forward temporaries the
       script no longer reaches would hold their storage through the whole
       backward, past the point where the tape releases it.  Collect them
       first when a sizeable graph is alive (a DARTS step: ~0.3-0.6 GB). */
    if (nr_live_bytes() > ((size_t)64 << 20)) nrL_fullgc(L);
    nrL_gcmark(1);
    nr_status st = nr_backward(t, g);
    if (st != NR_OK) return nrL_raise(L, st);
    nrL_gcmark(0); /* the tape is gone: what is live now is the model's */
    return 0;
}

static int tensor_zero_grad(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    nr_tensor_release(t->grad);
    t->grad = NULL;
    return 0;
}

/* In-place updates: not recorded on the tape (for optimizers, running
   statistics and initialisation, under no_grad). */
static void check_inplace(lua_State *L, nr_tensor *t, const char *fn) {
    if (t->node && nr_grad_enabled())
        luaL_error(L, "%s: in-place update of a tensor that is part of a graph", fn);
}

static int tensor_fill_(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    float v = (float)luaL_checknumber(L, 2);
    check_inplace(L, t, "fill_");
    nr_tensor *c = nr_tensor_full(t->ndim, t->ne, v);
    if (!c) return nrL_raise(L, NR_ENOMEM);
    nr_copy_into(t, c);
    nr_tensor_release(c);
    lua_settop(L, 1);
    return 1;
}

static int tensor_zero_(lua_State *L) {
    lua_settop(L, 1);
    lua_pushnumber(L, 0);
    return tensor_fill_(L);
}

static int tensor_copy_(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1), *s = nrL_checktensor(L, 2);
    char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
    check_inplace(L, t, "copy_");
    if (nr_numel(t) != nr_numel(s))
        return luaL_error(L, "copy_: source %s has %I elements, destination %s has %I",
                          nr_shape_str(s, b1), (lua_Integer)nr_numel(s), nr_shape_str(t, b2),
                          (lua_Integer)nr_numel(t));
    nr_copy_into(t, s);
    lua_settop(L, 1);
    return 1;
}

/* t:add_(other[, alpha]) : t += alpha * other (other: tensor of the same
   shape, or a number). */
static int tensor_add_(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    check_inplace(L, t, "add_");
    if (!nr_is_contiguous(t)) return luaL_error(L, "add_: destination must be contiguous");
    float *d = nr_data(t);
    int64_t n = nr_numel(t);
    if (lua_type(L, 2) == LUA_TNUMBER) {
        float v = (float)lua_tonumber(L, 2);
        for (int64_t i = 0; i < n; i++) d[i] += v;
    } else {
        nr_tensor *o = nrL_checktensor(L, 2);
        float a = (float)luaL_optnumber(L, 3, 1.0);
        char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
        if (!nr_same_shape(t, o))
            return luaL_error(L, "add_: shapes differ: %s += %s", nr_shape_str(t, b1), nr_shape_str(o, b2));
        nr_tensor *oc = nr_tensor_clone(o);
        if (!oc) return nrL_raise(L, NR_ENOMEM);
        const float *s = nr_data(oc);
        for (int64_t i = 0; i < n; i++) d[i] += a * s[i];
        nr_tensor_release(oc);
    }
    lua_settop(L, 1);
    return 1;
}

static int tensor_mul_(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    float v = (float)luaL_checknumber(L, 2);
    check_inplace(L, t, "mul_");
    if (!nr_is_contiguous(t)) return luaL_error(L, "mul_: destination must be contiguous");
    float *d = nr_data(t);
    for (int64_t i = 0, n = nr_numel(t); i < n; i++) d[i] *= v;
    lua_settop(L, 1);
    return 1;
}

/* Element offset for t:get/t:set: indices from idx to last_idx (1-based);
   a single index on a tensor of any rank counts in row-major order. */
static int64_t elem_offset(lua_State *L, nr_tensor *t, int idx, int last, const char *fn) {
    int n = last - idx + 1;
    char b[NR_SHAPEBUF];
    if (n == 1 && t->ndim != 1) {
        lua_Integer i = luaL_checkinteger(L, idx);
        int64_t numel = nr_numel(t);
        if (i < 1 || i > numel)
            luaL_error(L, "%s: flat index %I out of range for %s (1..%I)", fn, (lua_Integer)i,
                       nr_shape_str(t, b), (lua_Integer)numel);
        int64_t r = i - 1, off = 0;
        for (int d = t->ndim - 1; d >= 0; d--) {
            off += (r % t->ne[d]) * t->st[d];
            r /= t->ne[d];
        }
        return off;
    }
    if (n != t->ndim)
        luaL_error(L, "%s: %d indices for a %d-dim tensor %s", fn, n, t->ndim, nr_shape_str(t, b));
    int64_t off = 0;
    for (int d = 0; d < n; d++) {
        lua_Integer i = luaL_checkinteger(L, idx + d);
        if (i < 1 || i > t->ne[d])
            luaL_error(L, "%s: index %I out of range for dim %d of %s (1-based)", fn, (lua_Integer)i,
                       d + 1, nr_shape_str(t, b));
        off += (i - 1) * t->st[d];
    }
    return off;
}

/* t:get(i, j, ...) -> number (1-based) */
static int tensor_get(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    int64_t off = elem_offset(L, t, 2, lua_gettop(L), "get");
    lua_pushnumber(L, nr_data(t)[off]);
    return 1;
}

/* t:set(i, j, ..., value): not recorded on the tape */
static int tensor_set(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    int top = lua_gettop(L);
    float v = (float)luaL_checknumber(L, top);
    check_inplace(L, t, "set");
    int64_t off = elem_offset(L, t, 2, top - 1, "set");
    nr_data(t)[off] = v;
    return 0;
}

static int tensor_index(lua_State *L) {
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *k = lua_tostring(L, 2);
        nr_tensor *t = strcmp(k, "grad") && strcmp(k, "grad_fn") && strcmp(k, "is_leaf")
                     ? NULL : nrL_checktensorfn(L, 1, k);
        if (!t) {
            /* methods: found even on a closed box, so the method itself
               reports "tensor used after close" under its own name */
        } else if (strcmp(k, "grad") == 0) {
            if (t->grad) {
                nr_tensor_retain(t->grad);
                nrL_pushtensor(L, t->grad);
            } else {
                lua_pushnil(L);
            }
            return 1;
        }
        if (strcmp(k, "grad_fn") == 0) {
            if (t->node) lua_pushstring(L, t->node->name);
            else lua_pushnil(L);
            return 1;
        }
        if (strcmp(k, "is_leaf") == 0) {
            lua_pushboolean(L, t->node == NULL);
            return 1;
        }
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1)); /* methods */
    return 1;
}

static int tensor_newindex(lua_State *L) {
    nr_tensor *t = nrL_checktensor(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "grad") == 0) {
        nr_tensor *g = nrL_opttensor(L, 3);
        char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
        if (g && !nr_same_shape(g, t))
            return luaL_error(L, "grad: gradient %s does not match tensor %s", nr_shape_str(g, b1),
                              nr_shape_str(t, b2));
        nr_tensor *c = g ? nr_tensor_clone(g) : NULL;
        if (g && !c) return nrL_raise(L, NR_ENOMEM);
        nr_tensor_release(t->grad);
        t->grad = c;
        return 0;
    }
    return luaL_error(L, "tensor: cannot set field '%s' (tensors only have .grad)", k);
}

static int tensor_eq(lua_State *L) {
    nr_tensor *a = nrL_totensor(L, 1), *b = nrL_totensor(L, 2);
    lua_pushboolean(L, a && a == b);
    return 1;
}

/* ------------------------------------------------------------------ ops */

static int op_binary(lua_State *L) {
    const char *fn = FN(L);
    nr_tensor *a = checkoperand(L, 1, fn), *b = checkoperand(L, 2, fn);
    nr_tensor *o = NULL;
    nr_status st;
    switch (fn[0]) {
    case 'a': st = nr_add(&o, a, b); break;
    case 's': st = nr_sub(&o, a, b); break;
    case 'm': st = nr_mul(&o, a, b); break;
    default: st = nr_div(&o, a, b); break;
    }
    return push_or_raise(L, st, o);
}

static int op_unary(lua_State *L) {
    const char *fn = FN(L);
    nr_unary u = (nr_unary)lua_tointeger(L, lua_upvalueindex(2));
    nr_tensor *a = nrL_checktensorfn(L, 1, fn), *o = NULL;
    {
        nr_status st_ = nr_unary_op(&o, a, u);
        return push_or_raise(L, st_, o);
    }
}

static int op_pow(lua_State *L) {
    nr_tensor *a = nrL_checktensor(L, 1), *o = NULL;
    float e = (float)luaL_checknumber(L, 2);
    {
        nr_status st_ = nr_pow_scalar(&o, a, e);
        return push_or_raise(L, st_, o);
    }
}

/* scale(x, s[, c]) = x*s + c */
static int op_scale(lua_State *L) {
    nr_tensor *a = nrL_checktensor(L, 1), *o = NULL;
    float s = (float)luaL_checknumber(L, 2), c = (float)luaL_optnumber(L, 3, 0);
    {
        nr_status st_ = nr_affine_scalar(&o, a, s, c);
        return push_or_raise(L, st_, o);
    }
}

static int op_reduce(lua_State *L) {
    const char *fn = FN(L);
    nr_tensor *a = nrL_checktensor(L, 1), *o = NULL;
    int dim = -1;
    if (!lua_isnoneornil(L, 2)) dim = nrL_checkdim(L, 2, a->ndim, fn);
    int keep = lua_toboolean(L, 3);
    if (a->ndim == 0) dim = -1;
    nr_status st = fn[0] == 's' ? nr_sum(&o, a, dim, keep) : nr_mean(&o, a, dim, keep);
    return push_or_raise(L, st, o);
}

/* max(x, dim[, keepdim]) -> values, indices (0-based, like class ids) */
static int op_max(lua_State *L) {
    nr_tensor *a = nrL_checktensor(L, 1), *o = NULL, *ix = NULL;
    if (lua_isnoneornil(L, 2)) {
        nr_tensor *flat = NULL;
        int64_t n = nr_numel(a);
        nr_status st = nr_reshape(&flat, a, 1, &n);
        if (st != NR_OK) return nrL_raise(L, st);
        st = nr_max_dim(&o, &ix, flat, 0, 0);
        nr_tensor_release(flat);
        if (st != NR_OK) return nrL_raise(L, st);
    } else {
        int dim = nrL_checkdim(L, 2, a->ndim, "max");
        nr_status st = nr_max_dim(&o, &ix, a, dim, lua_toboolean(L, 3));
        if (st != NR_OK) return nrL_raise(L, st);
    }
    nrL_pushtensor(L, o);
    nrL_pushtensor(L, ix);
    return 2;
}

static int op_argmax(lua_State *L) {
    op_max(L);
    return 1;
}

static int op_reshape(lua_State *L) {
    nr_tensor *a = nrL_checktensor(L, 1), *o = NULL;
    int64_t ne[NR_MAXDIM];
    int nd = 0;
    if (lua_istable(L, 2)) {
        int n = (int)lua_rawlen(L, 2);
        if (n > NR_MAXDIM) return luaL_error(L, "%s: %d dims (at most %d)", FN(L), n, NR_MAXDIM);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, 2, i);
            int isint = 0;
            ne[nd++] = lua_type(L, -1) == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
            if (!isint) return luaL_error(L, "%s: shape entry %d is not an integer", FN(L), i);
            lua_pop(L, 1);
        }
    } else {
        for (int i = 2; i <= lua_gettop(L); i++) {
            if (nd >= NR_MAXDIM) return luaL_error(L, "%s: too many dims (at most %d)", FN(L), NR_MAXDIM);
            int isint = 0;
            ne[nd++] = lua_type(L, i) == LUA_TNUMBER ? lua_tointegerx(L, i, &isint) : 0;
            if (!isint) return luaL_error(L, "%s: argument #%d: expected an integer, got %s", FN(L), i,
                                          luaL_typename(L, i));
        }
    }
    {
        nr_status st_ = nr_reshape(&o, a, nd, ne);
        return push_or_raise(L, st_, o);
    }
}

static int op_flatten(lua_State *L) {
    /* flatten(x[, start_dim=2]) keeps dims before start_dim (batch) */
    nr_tensor *a = nrL_checktensor(L, 1), *o = NULL;
    int sd = lua_isnoneornil(L, 2) ? (a->ndim > 1 ? 1 : 0) : nrL_checkdim(L, 2, a->ndim, "flatten");
    int64_t ne[NR_MAXDIM], inner = 1;
    for (int i = 0; i < sd; i++) ne[i] = a->ne[i];
    for (int i = sd; i < a->ndim; i++) inner *= a->ne[i];
    ne[sd] = inner;
    {
        nr_status st_ = nr_reshape(&o, a, sd + 1, ne);
        return push_or_raise(L, st_, o);
    }
}

/* narrow(x, dim, start, length): start is 1-based */
static int op_narrow(lua_State *L) {
    nr_tensor *a = nrL_checktensor(L, 1), *o = NULL;
    int dim = nrL_checkdim(L, 2, a->ndim, "narrow");
    lua_Integer start = luaL_checkinteger(L, 3), len = luaL_checkinteger(L, 4);
    if (a->ndim == 0) return luaL_error(L, "narrow: cannot narrow a 0-dim tensor");
    if (start < 1) return luaL_error(L, "narrow: start %I must be >= 1 (1-based)", start);
    {
        nr_status st_ = nr_narrow(&o, a, dim, start - 1, len);
        return push_or_raise(L, st_, o);
    }
}

static int op_transpose(lua_State *L) {
    nr_tensor *a = nrL_checktensor(L, 1), *o = NULL;
    int d0 = lua_isnoneornil(L, 2) ? 0 : nrL_checkdim(L, 2, a->ndim, "transpose");
    int d1 = lua_isnoneornil(L, 3) ? 1 : nrL_checkdim(L, 3, a->ndim, "transpose");
    if (a->ndim < 2 && lua_isnoneornil(L, 2)) return luaL_error(L, "transpose: needs at least 2 dims");
    {
        nr_status st_ = nr_transpose(&o, a, d0, d1);
        return push_or_raise(L, st_, o);
    }
}

static int op_cat(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)lua_rawlen(L, 1);
    if (n < 1) return luaL_error(L, "cat: needs a non-empty list of tensors");
    if (n > 4096) return luaL_error(L, "cat: at most 4096 tensors");
    nr_tensor *xs[4096];
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        xs[i - 1] = nrL_totensor(L, -1);
        if (!xs[i - 1]) return luaL_error(L, "cat: entry %d is %s, expected a tensor", i, luaL_typename(L, -1));
        lua_pop(L, 1); /* still referenced by the list */
    }
    int dim = lua_isnoneornil(L, 2) ? 0 : nrL_checkdim(L, 2, xs[0]->ndim, "cat");
    nr_tensor *o = NULL;
    {
        nr_status st_ = nr_cat(&o, n, xs, dim);
        return push_or_raise(L, st_, o);
    }
}

/* pad(x, {left, right, top, bottom, ...}[, value]) as torch's F.pad */
static int op_pad(lua_State *L) {
    nr_tensor *a = nrL_checktensor(L, 1), *o = NULL;
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)lua_rawlen(L, 2);
    if (n > 2 * NR_MAXDIM) return luaL_error(L, "pad: too many pad values");
    int64_t p[2 * NR_MAXDIM];
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, i);
        int isint;
        p[i - 1] = lua_tointegerx(L, -1, &isint);
        if (!isint) return luaL_error(L, "pad: pad entry %d is not an integer", i);
        lua_pop(L, 1);
    }
    float v = (float)luaL_optnumber(L, 3, 0);
    {
        nr_status st_ = nr_pad(&o, a, n, p, v);
        return push_or_raise(L, st_, o);
    }
}

/* subsample(x, stride[, off_h=0, off_w=0]) = x[..., off_h::s, off_w::s] */
static int op_subsample(lua_State *L) {
    nr_tensor *a = nrL_checktensor(L, 1), *o = NULL;
    lua_Integer s = luaL_checkinteger(L, 2);
    lua_Integer oh = luaL_optinteger(L, 3, 0), ow = luaL_optinteger(L, 4, 0);
    if (s > NR_MAXPARAM) return luaL_error(L, "subsample: stride %I exceeds %d", s, NR_MAXPARAM);
    {
        nr_status st_ = nr_subsample(&o, a, s, oh, ow);
        return push_or_raise(L, st_, o);
    }
}

/* Reads a Lua list of tensors at idx into xs (borrowed; the list keeps them
   alive); returns the count. */
static int checklist(lua_State *L, int idx, nr_tensor **xs, int max, const char *fn) {
    luaL_checktype(L, idx, LUA_TTABLE);
    int n = (int)lua_rawlen(L, idx);
    if (n < 1 || n > max) luaL_error(L, "%s: expected a list of 1..%d tensors, got %d", fn, max, n);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        xs[i - 1] = nrL_totensor(L, -1);
        if (!xs[i - 1]) luaL_error(L, "%s: entry %d is %s, expected a tensor", fn, i, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    return n;
}

/* weighted_sum({x1..xn}, w) = sum_k w[k] * xk  (the DARTS mixed op) */
static int op_weighted_sum(lua_State *L) {
    nr_tensor *xs[NR_MAXIN], *o = NULL;
    int n = checklist(L, 1, xs, NR_MAXIN - 1, "weighted_sum");
    nr_tensor *w = nrL_checktensor(L, 2);
    nr_status st = nr_weighted_sum(&o, n, xs, w);
    return push_or_raise(L, st, o);
}

/* bn_weighted_sum({x1..xn}, w, bns[, {momentum=0.1, eps=1e-5}]): the
   DARTS mixed op with the ops' final batch norms folded in; bns[k] is
   false (xk as it is), true (batch norm, no running statistics) or
   {running_mean, running_var} (updated in place) */
static int op_bn_weighted_sum(lua_State *L) {
    static const char *const opts[] = {"momentum", "eps", NULL};
    nr_tensor *xs[NR_MAXIN], *rm[NR_MAXIN] = {0}, *rv[NR_MAXIN] = {0}, *o = NULL;
    int n = checklist(L, 1, xs, NR_MAXIN - 1, "bn_weighted_sum");
    nr_tensor *w = nrL_checktensor(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    if ((int)lua_rawlen(L, 3) != n)
        return luaL_error(L, "bn_weighted_sum: %d inputs but %d entries in bns", n,
                          (int)lua_rawlen(L, 3));
    unsigned mask = 0;
    for (int k = 0; k < n; k++) {
        int t = lua_rawgeti(L, 3, k + 1);
        if (t == LUA_TTABLE) {
            mask |= 1u << k;
            for (int r = 0; r < 2; r++) {
                lua_rawgeti(L, -1, r + 1);
                nr_tensor *v = nrL_totensor(L, -1);
                if (!v)
                    return luaL_error(L, "bn_weighted_sum: bns[%d][%d] is %s, expected the running %s",
                                      k + 1, r + 1, luaL_typename(L, -1), r ? "variance" : "mean");
                (r ? rv : rm)[k] = v;
                lua_pop(L, 1);
            }
        } else if (t == LUA_TBOOLEAN) {
            if (lua_toboolean(L, -1)) mask |= 1u << k;
        } else {
            return luaL_error(L, "bn_weighted_sum: bns[%d] is %s, expected false, true or "
                                 "{running_mean, running_var}", k + 1, luaL_typename(L, -1));
        }
        lua_pop(L, 1);
    }
    nrL_checkopts(L, 4, "bn_weighted_sum", opts);
    double momentum = nrL_optnum_field(L, 4, "momentum", 0.1, "bn_weighted_sum");
    double eps = nrL_optnum_field(L, 4, "eps", 1e-5, "bn_weighted_sum");
    nr_status st = nr_bn_weighted_sum(&o, n, xs, w, mask, rm, rv, momentum, eps);
    return push_or_raise(L, st, o);
}

/* attn_sum({x1..xn}, a) with a [N, n*C]: the AGNAS edge output */
static int op_attn_sum(lua_State *L) {
    nr_tensor *xs[NR_MAXIN], *o = NULL;
    int n = checklist(L, 1, xs, NR_MAXIN - 1, "attn_sum");
    nr_tensor *a = nrL_checktensor(L, 2);
    nr_status st = nr_attn_sum(&o, n, xs, a);
    return push_or_raise(L, st, o);
}

/* --------------------------------------------------------------- tables */

static const struct { const char *name; nr_unary u; } unaries[] = {
    {"neg", NR_U_NEG}, {"relu", NR_U_RELU}, {"sigmoid", NR_U_SIGMOID}, {"tanh", NR_U_TANH},
    {"exp", NR_U_EXP}, {"log", NR_U_LOG}, {"sqrt", NR_U_SQRT}, {"abs", NR_U_ABS},
    {"relu6", NR_U_RELU6},
};

static const char *const binaries[] = {"add", "sub", "mul", "div"};

static const luaL_Reg op_funcs[] = {
    {"pow", op_pow}, {"scale", op_scale}, {"max", op_max}, {"argmax", op_argmax},
    {"reshape", op_reshape}, {"view", op_reshape}, {"flatten", op_flatten},
    {"narrow", op_narrow}, {"transpose", op_transpose}, {"cat", op_cat}, {"pad", op_pad},
    {"subsample", op_subsample}, {"weighted_sum", op_weighted_sum},
    {"bn_weighted_sum", op_bn_weighted_sum},
    {"attn_sum", op_attn_sum}, {NULL, NULL}};

static const luaL_Reg tensor_methods[] = {
    {"shape", tensor_shape}, {"size", tensor_size}, {"dim", tensor_dim}, {"numel", tensor_numel},
    {"item", tensor_item}, {"totable", tensor_totable}, {"clone", tensor_clone},
    {"detach", tensor_detach}, {"contiguous", tensor_contiguous},
    {"is_contiguous", tensor_is_contiguous}, {"requires_grad", tensor_requires_grad},
    {"backward", tensor_backward}, {"zero_grad", tensor_zero_grad}, {"fill_", tensor_fill_},
    {"zero_", tensor_zero_}, {"copy_", tensor_copy_}, {"add_", tensor_add_}, {"mul_", tensor_mul_},
    {"get", tensor_get}, {"set", tensor_set}, {"close", tensor_gc}, {NULL, NULL}};

static const luaL_Reg lib_funcs[] = {
    {"tensor", nasrt_tensor}, {"zeros", nasrt_zeros}, {"ones", nasrt_ones}, {"full", nasrt_full},
    {"rand", nasrt_rand}, {"randn", nasrt_randn}, {"manual_seed", nasrt_manual_seed},
    {"get_rng_state", nasrt_get_rng_state}, {"set_rng_state", nasrt_set_rng_state},
    {"no_grad", nasrt_no_grad}, {"set_grad_enabled", nasrt_set_grad_enabled},
    {"is_grad_enabled", nasrt_is_grad_enabled}, {"set_num_threads", nasrt_set_num_threads},
    {"num_threads", nasrt_num_threads}, {"memory", nasrt_memory},
    {"reset_peak_memory", nasrt_reset_peak_memory},
    {"tape_memory", nasrt_tape_memory}, {"is_tensor", nasrt_is_tensor},
    {"clock", nasrt_clock}, {"catch_interrupt", nasrt_catch_interrupt},
    {"interrupted", nasrt_interrupted}, {NULL, NULL}};

/* Registers fn under name in the tables at F and methods (if > 0), with the
   name as upvalue 1 so messages name the op. */
static void reg(lua_State *L, int F, int methods, const char *name, lua_CFunction fn, int extra) {
    /* stack: ... extra upvalues on top (count = extra) */
    lua_pushstring(L, name);
    if (extra) lua_insert(L, -1 - extra);
    lua_pushcclosure(L, fn, 1 + extra);
    if (methods) {
        lua_pushvalue(L, -1);
        lua_setfield(L, methods, name);
    }
    lua_setfield(L, F, name);
}

void nrL_open_tensor(lua_State *L, int lib, int F) {
    lua_pushvalue(L, lib);
    luaL_setfuncs(L, lib_funcs, 0);
    lua_pop(L, 1);

    /* metatable with methods as the __index upvalue */
    luaL_newmetatable(L, NR_TENSOR_MT);
    int mt = lua_gettop(L);
    lua_newtable(L);
    int methods = lua_gettop(L);
    luaL_setfuncs(L, tensor_methods, 0);

    for (size_t i = 0; i < sizeof binaries / sizeof *binaries; i++)
        reg(L, F, methods, binaries[i], op_binary, 0);
    for (size_t i = 0; i < sizeof unaries / sizeof *unaries; i++) {
        lua_pushinteger(L, unaries[i].u);
        reg(L, F, methods, unaries[i].name, op_unary, 1);
    }
    for (const luaL_Reg *r = op_funcs; r->name; r++) reg(L, F, methods, r->name, r->func, 0);
    {
        lua_pushstring(L, "sum");
        lua_pushcclosure(L, op_reduce, 1);
        lua_pushvalue(L, -1);
        lua_setfield(L, methods, "sum");
        lua_setfield(L, F, "sum");
        lua_pushstring(L, "mean");
        lua_pushcclosure(L, op_reduce, 1);
        lua_pushvalue(L, -1);
        lua_setfield(L, methods, "mean");
        lua_setfield(L, F, "mean");
    }
    /* arithmetic metamethods */
    static const char *const mm[][2] = {{"__add", "add"}, {"__sub", "sub"}, {"__mul", "mul"},
                                        {"__div", "div"}};
    for (int i = 0; i < 4; i++) {
        lua_pushstring(L, mm[i][1]);
        lua_pushcclosure(L, op_binary, 1);
        lua_setfield(L, mt, mm[i][0]);
    }
    lua_pushinteger(L, NR_U_NEG);
    lua_pushstring(L, "neg");
    lua_insert(L, -2);
    lua_pushcclosure(L, op_unary, 2);
    lua_setfield(L, mt, "__unm");
    lua_pushcfunction(L, tensor_gc);
    lua_setfield(L, mt, "__gc");
    lua_pushcfunction(L, tensor_gc);
    lua_setfield(L, mt, "__close");
    lua_pushcfunction(L, tensor_len);
    lua_setfield(L, mt, "__len");
    lua_pushcfunction(L, tensor_eq);
    lua_setfield(L, mt, "__eq");
    lua_pushcfunction(L, nrL_tensor_tostring);
    lua_setfield(L, mt, "__tostring");
    lua_pushcfunction(L, tensor_newindex);
    lua_setfield(L, mt, "__newindex");
    lua_pushstring(L, NR_TENSOR_MT);
    lua_setfield(L, mt, "__name");
    lua_pushvalue(L, methods);
    lua_pushcclosure(L, tensor_index, 1);
    lua_setfield(L, mt, "__index");
    lua_pushvalue(L, methods);
    lua_setfield(L, lib, "Tensor"); /* methods table, for extension from Lua */
    lua_pop(L, 2);
}

/* ----------------------------------------------------------- the module */
NR_MODAPI int luaopen_nasrt_core(lua_State *L) {
    nr_runtime_init(0);
    /* generational collection: see nrL_pushtensor (luabind.c) */
    lua_gc(L, LUA_GCGEN, 0, 0);
    lua_newtable(L);
    int lib = lua_gettop(L);
    lua_newtable(L);
    int F = lua_gettop(L);
    nrL_open_tensor(L, lib, F);
    nrL_open_conv(L, lib, F);
    nrL_open_norm(L, lib, F);
    nrL_open_io(L, lib, F);
    nrL_open_data(L, lib, F);
    nrL_open_ckpt(L, lib, F);
    nrL_open_optim(L, lib, F);
    nrL_open_sampler(L, lib, F);
    nrL_open_dist(L, lib, F);
    lua_pushvalue(L, F);
    lua_setfield(L, lib, "F");
    lua_pushstring(L, NR_VERSION);
    lua_setfield(L, lib, "version");
    nrL_name_functions(L, lib);
    lua_settop(L, lib);
    return 1;
}
