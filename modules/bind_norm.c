/*
** bind_norm.c -- Lua bindings: F.batch_norm, F.softmax, F.log_softmax,
** F.cross_entropy, F.matmul, F.linear.
*/
#include "luabind.h"

#include <string.h>

/* F.batch_norm(x, running_mean, running_var, weight, bias,
                {training=true, momentum=0.1, eps=1e-5, activation="none"})
   activation "relu" / "relu6": F.relu(F.batch_norm(...)) in one op */
static int l_batch_norm(lua_State *L) {
    static const char *const opts[] = {"training", "momentum", "eps", "activation", NULL};
    static const char *const acts[] = {"none", "relu", "relu6", NULL};
    nr_tensor *x = nrL_checktensor(L, 1);
    nr_tensor *rm = nrL_opttensor(L, 2);
    nr_tensor *rv = nrL_opttensor(L, 3);
    nr_tensor *w = nrL_opttensor(L, 4);
    nr_tensor *b = nrL_opttensor(L, 5);
    nrL_checkopts(L, 6, "batch_norm", opts);
    nr_bn_params p;
    p.training = nrL_optbool_field(L, 6, "training", 1, "batch_norm");
    p.momentum = nrL_optnum_field(L, 6, "momentum", 0.1, "batch_norm");
    p.eps = nrL_optnum_field(L, 6, "eps", 1e-5, "batch_norm");
    p.act = NR_ACT_NONE;
    if (lua_istable(L, 6)) {
        lua_getfield(L, 6, "activation");
        if (!lua_isnil(L, -1)) {
            const char *a = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            int k = 0;
            while (a && acts[k] && strcmp(acts[k], a) != 0) k++;
            if (!a || !acts[k])
                return luaL_error(L, "batch_norm: activation must be 'none', 'relu' or 'relu6', "
                                     "got %s", a ? a : luaL_typename(L, -1));
            p.act = k; /* NR_ACT_NONE, NR_ACT_RELU, NR_ACT_RELU6 in that order */
        }
        lua_pop(L, 1);
    }
    nr_tensor *out = NULL;
    nr_status st = nr_batch_norm(&out, x, rm, rv, w, b, &p);
    if (st != NR_OK) return nrL_raise(L, st);
    nrL_pushtensor(L, out);
    return 1;
}

static int softmax_common(lua_State *L, int logmode) {
    const char *fn = logmode ? "log_softmax" : "softmax";
    nr_tensor *x = nrL_checktensor(L, 1);
    if (lua_isnoneornil(L, 2))
        return luaL_error(L, "%s: missing dim (1-based; -1 is the last)", fn);
    int dim = nrL_checkdim(L, 2, x->ndim, fn);
    nr_tensor *out = NULL;
    nr_status st = logmode ? nr_log_softmax(&out, x, dim) : nr_softmax(&out, x, dim);
    if (st != NR_OK) return nrL_raise(L, st);
    nrL_pushtensor(L, out);
    return 1;
}

/* F.softmax(x, dim) */
static int l_softmax(lua_State *L) { return softmax_common(L, 0); }
/* F.log_softmax(x, dim) */
static int l_log_softmax(lua_State *L) { return softmax_common(L, 1); }

/* F.cross_entropy(logits, targets, {label_smoothing=0}) */
static int l_cross_entropy(lua_State *L) {
    static const char *const opts[] = {"label_smoothing", NULL};
    nr_tensor *z = nrL_checktensor(L, 1);
    nr_tensor *t = nrL_checktensor(L, 2);
    nrL_checkopts(L, 3, "cross_entropy", opts);
    double ls = nrL_optnum_field(L, 3, "label_smoothing", 0.0, "cross_entropy");
    nr_tensor *out = NULL;
    nr_status st = nr_cross_entropy(&out, z, t, ls);
    if (st != NR_OK) return nrL_raise(L, st);
    nrL_pushtensor(L, out);
    return 1;
}

/* F.matmul(a, b) */
static int l_matmul(lua_State *L) {
    nr_tensor *a = nrL_checktensor(L, 1);
    nr_tensor *b = nrL_checktensor(L, 2);
    nr_tensor *out = NULL;
    nr_status st = nr_matmul(&out, a, b);
    if (st != NR_OK) return nrL_raise(L, st);
    nrL_pushtensor(L, out);
    return 1;
}

/* F.linear(x, w, b_or_nil) */
static int l_linear(lua_State *L) {
    nr_tensor *x = nrL_checktensor(L, 1);
    nr_tensor *w = nrL_checktensor(L, 2);
    nr_tensor *b = nrL_opttensor(L, 3);
    nr_tensor *out = NULL;
    nr_status st = nr_linear(&out, x, w, b);
    if (st != NR_OK) return nrL_raise(L, st);
    nrL_pushtensor(L, out);
    return 1;
}

static const luaL_Reg norm_funcs[] = {
    {"batch_norm", l_batch_norm},
    {"softmax", l_softmax},
    {"log_softmax", l_log_softmax},
    {"cross_entropy", l_cross_entropy},
    {"matmul", l_matmul},
    {"linear", l_linear},
    {NULL, NULL},
};

void nrL_open_norm(lua_State *L, int lib, int F) {
    (void)lib;
    F = lua_absindex(L, F);
    lua_pushvalue(L, F);
    nrL_setfuncs(L, norm_funcs);
    lua_pop(L, 1);
}
