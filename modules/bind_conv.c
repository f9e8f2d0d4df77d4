/*
** bind_conv.c -- Lua bindings: F.conv2d, F.max_pool2d, F.avg_pool2d,
** F.adaptive_avg_pool2d.  Integer options take a number or a pair {h, w};
** unknown option names are errors.
*/
#include "luabind.h"

#include <string.h>

/* F.conv2d(x, w, b_or_nil, {stride=1, padding=0, dilation=1, groups=1})
   padding may also be "valid" (0) or "same" (stride 1; the total padding
   d*(k-1) must be even on each side, as nr_conv2d pads symmetrically). */
static int l_conv2d(lua_State *L) {
    static const char *const opts[] = {"stride", "padding", "dilation", "groups", NULL};
    nr_tensor *x = nrL_checktensor(L, 1);
    nr_tensor *w = nrL_checktensor(L, 2);
    nr_tensor *b = nrL_opttensor(L, 3);
    nrL_checkopts(L, 4, "conv2d", opts);
    nr_conv_params p;
    nrL_optpair_field(L, 4, "stride", 1, p.stride, "conv2d");
    nrL_optpair_field(L, 4, "dilation", 1, p.dilation, "conv2d");
    p.groups = nrL_optint_field(L, 4, "groups", 1, "conv2d");
    const char *pad = NULL;
    if (lua_istable(L, 4)) {
        lua_getfield(L, 4, "padding");
        if (lua_type(L, -1) == LUA_TSTRING) pad = lua_tostring(L, -1);
        lua_pop(L, 1); /* the string stays alive in the options table */
    }
    if (pad && strcmp(pad, "valid") == 0) {
        p.padding[0] = p.padding[1] = 0;
    } else if (pad && strcmp(pad, "same") == 0) {
        if (p.stride[0] != 1 || p.stride[1] != 1)
            return luaL_error(L, "conv2d: padding='same' is not supported for strided convolutions");
        if (w->ndim != 4)
            return luaL_error(L, "conv2d: expected a 4-D weight, got %d dims", w->ndim);
        for (int d = 0; d < 2; d++) {
            int64_t tot = p.dilation[d] * (w->ne[2 + d] - 1);
            if (tot % 2)
                return luaL_error(L,
                                  "conv2d: padding='same' needs an odd effective kernel size "
                                  "(kernel %I, dilation %I)",
                                  (lua_Integer)w->ne[2 + d], (lua_Integer)p.dilation[d]);
            p.padding[d] = tot / 2;
        }
    } else if (pad) {
        return luaL_error(L, "conv2d: padding must be an integer, a pair {h, w}, 'valid' or "
                             "'same', got '%s'", pad);
    } else {
        nrL_optpair_field(L, 4, "padding", 0, p.padding, "conv2d");
    }
    nr_tensor *out = NULL;
    nr_status st = nr_conv2d(&out, x, w, b, &p);
    if (st != NR_OK) return nrL_raise(L, st);
    nrL_pushtensor(L, out);
    return 1;
}

/* stride, padding and dilation of options table i (integers or pairs),
   groups = the input's channels: the depthwise geometry of sep_conv2d and
   sep_block */
static void sep_params(lua_State *L, int i, const nr_tensor *x, const char *fn,
                       nr_conv_params *p) {
    nrL_optpair_field(L, i, "stride", 1, p->stride, fn);
    nrL_optpair_field(L, i, "padding", 0, p->padding, fn);
    nrL_optpair_field(L, i, "dilation", 1, p->dilation, fn);
    p->groups = x->ndim == 4 ? x->ne[1] : 1;
}

/* F.sep_conv2d(x, w_dw, w_pw, {stride=1, padding=0, dilation=1, relu=false}):
   conv2d(conv2d(relu?(x), w_dw, nil, {groups=C, ...}), w_pw) in one op that
   saves only x (backward recomputes the depthwise output). */
static int l_sep_conv2d(lua_State *L) {
    static const char *const opts[] = {"stride", "padding", "dilation", "relu", NULL};
    nr_tensor *x = nrL_checktensor(L, 1);
    nr_tensor *wd = nrL_checktensor(L, 2);
    nr_tensor *wp = nrL_checktensor(L, 3);
    nrL_checkopts(L, 4, "sep_conv2d", opts);
    nr_conv_params p;
    sep_params(L, 4, x, "sep_conv2d", &p);
    int relu = 0;
    if (lua_istable(L, 4)) {
        lua_getfield(L, 4, "relu");
        if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
            return luaL_error(L, "sep_conv2d: option relu must be a boolean, got %s",
                              luaL_typename(L, -1));
        relu = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    nr_tensor *out = NULL;
    nr_status st = nr_sep_conv2d(&out, x, wd, wp, &p, relu);
    if (st != NR_OK) return nrL_raise(L, st);
    nrL_pushtensor(L, out);
    return 1;
}

/* F.sep_block(x, wd1, wp1, wd2, wp2, running_mean, running_var,
   {stride=1, padding=0, dilation=1, momentum=0.1, eps=1e-5}): DARTS'
   SepConv up to its last batch norm (relu, depthwise, 1x1, batch norm with
   batch statistics and no affine, relu, depthwise stride 1, 1x1) in one op. */
static int l_sep_block(lua_State *L) {
    static const char *const opts[] = {"stride", "padding", "dilation", "momentum", "eps", NULL};
    nr_tensor *t[5];
    for (int i = 0; i < 5; i++) t[i] = nrL_checktensor(L, i + 1);
    nr_tensor *rm = nrL_opttensor(L, 6);
    nr_tensor *rv = nrL_opttensor(L, 7);
    nrL_checkopts(L, 8, "sep_block", opts);
    nr_conv_params p;
    sep_params(L, 8, t[0], "sep_block", &p);
    double momentum = nrL_optnum_field(L, 8, "momentum", 0.1, "sep_block");
    double eps = nrL_optnum_field(L, 8, "eps", 1e-5, "sep_block");
    nr_tensor *out = NULL;
    nr_status st = nr_sep_block(&out, t[0], t[1], t[2], t[3], t[4], &p, rm, rv, momentum, eps);
    if (st != NR_OK) return nrL_raise(L, st);
    nrL_pushtensor(L, out);
    return 1;
}

/* Pooling options: the second argument is the options table, or just the
   kernel size (a number or {h, w}).  stride defaults to the kernel. */
static void pool_opts(lua_State *L, const char *fn, int avg, nr_pool_params *p) {
    static const char *const max_opts[] = {"kernel", "stride", "padding", "ceil_mode", NULL};
    static const char *const avg_opts[] = {"kernel", "stride", "padding", "ceil_mode",
                                           "count_include_pad", NULL};
    memset(p, 0, sizeof *p);
    p->count_include_pad = 1;
    int t = lua_type(L, 2);
    if (t == LUA_TNUMBER || (t == LUA_TTABLE && lua_rawlen(L, 2) > 0)) {
        /* F.max_pool2d(x, 2) or F.max_pool2d(x, {2, 3}) */
        lua_createtable(L, 0, 1);
        lua_pushvalue(L, 2);
        lua_setfield(L, -2, "kernel");
        nrL_optpair_field(L, lua_gettop(L), "kernel", 0, p->kernel, fn);
        lua_pop(L, 1);
        p->stride[0] = p->kernel[0];
        p->stride[1] = p->kernel[1];
        return;
    }
    if (t != LUA_TTABLE)
        luaL_error(L, "%s: expected an options table {kernel=...} or a kernel size, got %s", fn,
                   luaL_typename(L, 2));
    nrL_checkopts(L, 2, fn, avg ? avg_opts : max_opts);
    lua_getfield(L, 2, "kernel");
    int has_kernel = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!has_kernel) luaL_error(L, "%s: option 'kernel' is required", fn);
    nrL_optpair_field(L, 2, "kernel", 0, p->kernel, fn);
    lua_getfield(L, 2, "stride");
    int has_stride = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (has_stride) {
        nrL_optpair_field(L, 2, "stride", 1, p->stride, fn);
    } else {
        p->stride[0] = p->kernel[0];
        p->stride[1] = p->kernel[1];
    }
    nrL_optpair_field(L, 2, "padding", 0, p->padding, fn);
    p->ceil_mode = nrL_optbool_field(L, 2, "ceil_mode", 0, fn);
    if (avg) p->count_include_pad = nrL_optbool_field(L, 2, "count_include_pad", 1, fn);
}

/* F.max_pool2d(x, {kernel=3, stride=kernel, padding=0, ceil_mode=false}) */
static int l_max_pool2d(lua_State *L) {
    nr_tensor *x = nrL_checktensor(L, 1);
    nr_pool_params p;
    pool_opts(L, "max_pool2d", 0, &p);
    nr_tensor *out = NULL;
    nr_status st = nr_max_pool2d(&out, x, &p);
    if (st != NR_OK) return nrL_raise(L, st);
    nrL_pushtensor(L, out);
    return 1;
}

/* F.avg_pool2d(x, {kernel=3, stride=kernel, padding=0, count_include_pad=true,
                    ceil_mode=false}) */
static int l_avg_pool2d(lua_State *L) {
    nr_tensor *x = nrL_checktensor(L, 1);
    nr_pool_params p;
    pool_opts(L, "avg_pool2d", 1, &p);
    nr_tensor *out = NULL;
    nr_status st = nr_avg_pool2d(&out, x, &p);
    if (st != NR_OK) return nrL_raise(L, st);
    nrL_pushtensor(L, out);
    return 1;
}

/* F.adaptive_avg_pool2d(x, size): size an integer or {h, w} */
static int l_adaptive_avg_pool2d(lua_State *L) {
    nr_tensor *x = nrL_checktensor(L, 1);
    int64_t sz[2];
    if (lua_isnoneornil(L, 2))
        return luaL_error(L, "adaptive_avg_pool2d: missing output size (an integer or {h, w})");
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "size");
    nrL_optpair_field(L, lua_gettop(L), "size", 0, sz, "adaptive_avg_pool2d");
    lua_pop(L, 1);
    nr_tensor *out = NULL;
    nr_status st = nr_adaptive_avg_pool2d(&out, x, sz[0], sz[1]);
    if (st != NR_OK) return nrL_raise(L, st);
    nrL_pushtensor(L, out);
    return 1;
}

static const luaL_Reg conv_funcs[] = {
    {"conv2d", l_conv2d},
    {"sep_conv2d", l_sep_conv2d},
    {"sep_block", l_sep_block},
    {"max_pool2d", l_max_pool2d},
    {"avg_pool2d", l_avg_pool2d},
    {"adaptive_avg_pool2d", l_adaptive_avg_pool2d},
    {NULL, NULL},
};

void nrL_open_conv(lua_State *L, int lib, int F) {
    (void)lib;
    F = lua_absindex(L, F);
    lua_pushvalue(L, F);
    nrL_setfuncs(L, conv_funcs);
    lua_pop(L, 1);
}
