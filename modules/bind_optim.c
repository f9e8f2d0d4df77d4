/*
** bind_optim.c -- Lua bindings of the training kernels: F.dropout,
** F.all_finite and the private table nasrt._optim (sgd_step, adam_step,
** grad_norm, clip_grad_norm, has_grad) that lua/nasrt/optim.lua drives.  The optimizer
** state tensors are owned by Lua (the optimizer's state table); C only
** updates them in place, or creates them on a parameter's first step.
*/

/***
Optimizer update loops and dropout (C, modules/bind_optim.c).
@module nasrt
*/
#include "luabind.h"
#include "optim.h"

#include <math.h>

/***
F.dropout(x[, p=0.5[, training=true]]): inverted dropout, differentiable.
@function F.dropout
@tparam tensor x
@tparam[opt=0.5] number p probability of zeroing an element
@tparam[opt=true] boolean training false (or p == 0) returns x itself
@treturn tensor
@raise when p is outside [0, 1]
*/
static int optim_dropout(lua_State *L) {
    nr_tensor *x = nrL_checktensor(L, 1);
    double p = luaL_optnumber(L, 2, 0.5);
    int training = lua_isnoneornil(L, 3) ? 1 : (luaL_checktype(L, 3, LUA_TBOOLEAN), lua_toboolean(L, 3));
    nr_tensor *out = NULL;
    nr_status st = nr_dropout(&out, x, p, training, NULL);
    if (st != NR_OK) return nrL_raise(L, st);
    nrL_pushtensor(L, out);
    return 1;
}

/* The gradient a step would use: NULL when p has none. */
static nr_tensor *grad_of(nr_tensor *p) { return p->grad; }

/* zeros shaped like p, pushed (owned by Lua before anything can raise) */
static nr_tensor *push_zeros_like(lua_State *L, const nr_tensor *p) {
    nr_tensor *t = nr_tensor_zeros(p->ndim, p->ne);
    nrL_pushtensor(L, t);   /* raises on NULL */
    return t;
}

/***
One SGD step of parameter p (torch.optim.SGD).
@function _optim.sgd_step
@tparam tensor p parameter (its .grad is used)
@tparam ?tensor buf momentum buffer, nil before the first step
@tparam number lr
@tparam number momentum
@tparam number dampening
@tparam number weight_decay
@tparam boolean nesterov
@treturn boolean|tensor false when p has no gradient (nothing is touched),
  the new momentum buffer when one was created, true otherwise
*/
static int optim_sgd_step(lua_State *L) {
    nr_tensor *p = nrL_checktensor(L, 1);
    nr_tensor *buf = nrL_opttensor(L, 2);
    nr_sgd_params hp;
    hp.lr = luaL_checknumber(L, 3);
    hp.momentum = luaL_checknumber(L, 4);
    hp.dampening = luaL_checknumber(L, 5);
    hp.weight_decay = luaL_checknumber(L, 6);
    hp.nesterov = lua_toboolean(L, 7);
    nr_tensor *g = grad_of(p);
    if (!g) {
        lua_pushboolean(L, 0);
        return 1;
    }
    int first = 0;
    if (hp.momentum != 0.0 && !buf) {
        buf = push_zeros_like(L, p);
        first = 1;
    }
    nr_status st = nr_sgd_step(p, g, buf, &hp, first);
    if (st != NR_OK) return nrL_raise(L, st);
    if (!first) lua_pushboolean(L, 1);
    return 1;
}

/***
One Adam/AdamW step of parameter p (torch.optim.Adam, AdamW).
@function _optim.adam_step
@tparam tensor p parameter
@tparam ?tensor exp_avg nil before the first step (then created)
@tparam ?tensor exp_avg_sq
@tparam ?tensor max_exp_avg_sq only with amsgrad
@tparam int step count including this step (1 on the first)
@tparam number lr
@tparam number beta1
@tparam number beta2
@tparam number eps
@tparam number weight_decay
@tparam boolean decoupled AdamW-style decay
@tparam boolean amsgrad
@treturn false|tensor false when p has no gradient; else exp_avg,
  exp_avg_sq, max_exp_avg_sq (nil without amsgrad)
*/
static int optim_adam_step(lua_State *L) {
    nr_tensor *p = nrL_checktensor(L, 1);
    nr_tensor *m = nrL_opttensor(L, 2);
    nr_tensor *v = nrL_opttensor(L, 3);
    nr_tensor *vmax = nrL_opttensor(L, 4);
    lua_Integer step = luaL_checkinteger(L, 5);
    nr_adam_params hp;
    hp.lr = luaL_checknumber(L, 6);
    hp.beta1 = luaL_checknumber(L, 7);
    hp.beta2 = luaL_checknumber(L, 8);
    hp.eps = luaL_checknumber(L, 9);
    hp.weight_decay = luaL_checknumber(L, 10);
    hp.decoupled = lua_toboolean(L, 11);
    hp.amsgrad = lua_toboolean(L, 12);
    lua_settop(L, 4);
    nr_tensor *g = grad_of(p);
    if (!g) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (!m) {
        m = push_zeros_like(L, p);
        lua_replace(L, 2);
    }
    if (!v) {
        v = push_zeros_like(L, p);
        lua_replace(L, 3);
    }
    if (hp.amsgrad && !vmax) {
        vmax = push_zeros_like(L, p);
        lua_replace(L, 4);
    }
    nr_status st = nr_adam_step(p, g, m, v, hp.amsgrad ? vmax : NULL, (int64_t)step, &hp);
    if (st != NR_OK) return nrL_raise(L, st);
    return 3;   /* m, v, vmax-or-nil at slots 2..4 */
}

/* Reads the tensors of list at idx (skipping those without .grad) and
   returns the total norm of their gradients. */
static double total_grad_norm(lua_State *L, int idx, double q, const char *fn) {
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    double acc = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        nr_tensor *p = nrL_totensor(L, -1);
        if (!p) luaL_error(L, "%s: entry %I of the parameter list is %s, expected a tensor", fn, i,
                           luaL_typename(L, -1));
        lua_pop(L, 1);
        if (!p->grad) continue;
        double s = nr_norm_partial(p->grad, q);
        if (isinf(q)) acc = s > acc || isnan(s) ? s : acc;
        else acc += s;
    }
    return isinf(q) ? acc : pow(acc, 1.0 / q);
}

static double check_normtype(lua_State *L, int idx, const char *fn) {
    double q = luaL_optnumber(L, idx, 2.0);
    if (!(q > 0)) luaL_error(L, "%s: norm_type must be > 0 (or math.huge), got %f", fn, q);
    return q;
}

/***
Total norm of the gradients of a list of parameters (those without .grad are
skipped), as if all were concatenated into one vector.
@function _optim.grad_norm
@tparam {tensor,...} params
@tparam[opt=2] number norm_type math.huge for the max norm
@treturn number
*/
static int optim_grad_norm(lua_State *L) {
    double q = check_normtype(L, 2, "grad_norm");
    lua_pushnumber(L, total_grad_norm(L, 1, q, "grad_norm"));
    return 1;
}

/***
torch.nn.utils.clip_grad_norm_: scales every gradient by
min(1, max_norm / (total_norm + 1e-6)).
@function _optim.clip_grad_norm
@tparam {tensor,...} params
@tparam number max_norm
@tparam[opt=2] number norm_type
@treturn number the total norm before clipping
*/
static int optim_clip_grad_norm(lua_State *L) {
    double max_norm = luaL_checknumber(L, 2);
    double q = check_normtype(L, 3, "clip_grad_norm");
    double total = total_grad_norm(L, 1, q, "clip_grad_norm");
    double coef = max_norm / (total + 1e-6);
    if (coef < 1.0) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, 1, i);
            nr_tensor *p = nrL_totensor(L, -1);
            lua_pop(L, 1);
            if (p && p->grad) NRL_CHECK(L, nr_scale_inplace(p->grad, (float)coef));
        }
    }
    lua_pushnumber(L, total);
    return 1;
}

/* Checks one tensor: pushes false, i, k, v and returns 1 at a non-finite
   element (i the list index, k the 1-based flat index), else returns 0. */
static int push_nonfinite(lua_State *L, const nr_tensor *t, lua_Integer i) {
    float v = 0;
    int64_t k = nr_first_nonfinite(t, &v);
    if (k == -2) return luaL_error(L, "all_finite: out of memory");
    if (k < 0) return 0;
    lua_pushboolean(L, 0);
    lua_pushinteger(L, i);
    lua_pushinteger(L, (lua_Integer)k + 1);
    lua_pushnumber(L, (lua_Number)v);
    return 1;
}

/***
Whether every element of a tensor, or of every tensor of a list, is finite
(no NaN, no +-Inf): the divergence check of the optimizers and of
checkpoints.  One pass over the data, no allocation for contiguous tensors.
@function all_finite
@tparam tensor|{tensor,...} x a tensor or a list of tensors
@tparam[opt] table opts {grad=false}: true checks each tensor's `.grad`
  instead (tensors without a gradient are skipped)
@treturn boolean true when all are finite
@treturn integer the list index of the first bad tensor (1 for a tensor)
@treturn integer the 1-based flat (row-major) index of its first bad element
@treturn number that element (nan, inf or -inf)
@usage local ok, i, k, v = F.all_finite(net:parameters(), {grad = true})
*/
static int optim_all_finite(lua_State *L) {
    static const char *const allowed[] = {"grad", NULL};
    int grad = 0;
    if (!lua_isnoneornil(L, 2)) {
        nrL_checkopts(L, 2, "all_finite", allowed);
        grad = nrL_optbool_field(L, 2, "grad", 0, "all_finite");
    }
    nr_tensor *one = nrL_totensor(L, 1);
    if (one) {
        const nr_tensor *t = grad ? one->grad : one;
        if (t && push_nonfinite(L, t, 1)) return 4;
        lua_pushboolean(L, 1);
        return 1;
    }
    if (!lua_istable(L, 1))
        return luaL_error(L, "all_finite: expected a tensor or a list of tensors, got %s",
                          luaL_typename(L, 1));
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        nr_tensor *p = nrL_totensor(L, -1);
        if (!p) return luaL_error(L, "all_finite: entry %I of the list is %s, expected a tensor", i,
                                  luaL_typename(L, -1));
        lua_pop(L, 1);
        const nr_tensor *t = grad ? p->grad : p;
        if (t && push_nonfinite(L, t, i)) return 4;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* _optim.has_grad(p) -> boolean, without boxing the gradient */
static int optim_has_grad(lua_State *L) {
    lua_pushboolean(L, nrL_checktensor(L, 1)->grad != NULL);
    return 1;
}

static const luaL_Reg optim_funcs[] = {
    {"sgd_step", optim_sgd_step},
    {"adam_step", optim_adam_step},
    {"grad_norm", optim_grad_norm},
    {"clip_grad_norm", optim_clip_grad_norm},
    {"has_grad", optim_has_grad},
    {NULL, NULL},
};

void nrL_open_optim(lua_State *L, int lib, int F) {
    lib = lua_absindex(L, lib);
    F = lua_absindex(L, F);
    lua_newtable(L);
    nrL_setfuncs(L, optim_funcs);
    lua_setfield(L, lib, "_optim");
    lua_pushcfunction(L, optim_dropout);
    lua_setfield(L, F, "dropout");
    lua_pushcfunction(L, optim_all_finite);
    lua_setfield(L, F, "all_finite");
}
