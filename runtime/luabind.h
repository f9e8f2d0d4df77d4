/*
** luabind.h -- nrL_*: the helpers every Lua binding uses (the luaL_ role).
** Tensors are boxed pointers (one +1 reference per box); misuse raises a Lua
** error naming the function; nothing allocated in C is held across a call
** that can raise.
*/
#ifndef NASRT_LUABIND_H
#define NASRT_LUABIND_H

#include "nasrt.h"

#include <lauxlib.h>
#include <lua.h>

#define NR_TENSOR_MT "nasrt.Tensor"

#if defined(__GNUC__)
#define NR_MODAPI __attribute__((visibility("default")))
#else
#define NR_MODAPI
#endif

/* Borrowed tensor at idx; raises "fn: argument #i: expected tensor, got X"
   or "tensor used after close". */
nr_tensor *nrL_checktensor(lua_State *L, int idx);
/* Type name for messages: the __name of a userdata's metatable (e.g.
   "nasrt.Dataset"), else Lua's type name. */
const char *nrL_typename(lua_State *L, int idx);
/* Same, naming fn in the message. */
nr_tensor *nrL_checktensorfn(lua_State *L, int idx, const char *fn);
/* Like checktensor, but nil/none -> NULL. */
nr_tensor *nrL_opttensor(lua_State *L, int idx);
/* Borrowed tensor or NULL (no error). */
nr_tensor *nrL_totensor(lua_State *L, int idx);
/* Pushes a box owning t's reference (consumes it).  t == NULL raises the
   last error.  Nudges the GC when many tensor bytes were made since the last
   collection. */
void nrL_pushtensor(lua_State *L, nr_tensor *t);
/* a full Lua collection (frees every unreachable tensor); nrL_gcmark: the
   live tensor bytes now are a graph's about to run backward (graph = 1) or
   what one left behind (0): the marks the next full collection counts from */
void nrL_fullgc(lua_State *L);
void nrL_gcmark(int graph);
/* Raises nr_lasterror() (with the calling function's name prefixed when
   the message does not start with it). Never returns. */
int nrL_raise(lua_State *L, nr_status st);
/* if (st != NR_OK) raise; releases nothing. */
#define NRL_CHECK(L, st) do { nr_status st_ = (st); if (st_ != NR_OK) nrL_raise(L, st_); } while (0)

/* Reads a shape given as a table {d1,...} or as integers from idx onward.
   Returns ndim; raises on negative, fractional or too many sizes. */
int nrL_checkshape(lua_State *L, int idx, int64_t *ne, const char *fn);

/* Options tables: nrL_checkopts raises on keys not in `allowed` (a NULL
   terminated list), so typos like {strid=2} are caught.  The getters read
   a field of the table at idx (absent: default); an integer option may be
   a number or a pair {h, w} (out[0], out[1]). */
void nrL_checkopts(lua_State *L, int idx, const char *fn, const char *const *allowed);
int64_t nrL_optint_field(lua_State *L, int idx, const char *key, int64_t def, const char *fn);
void nrL_optpair_field(lua_State *L, int idx, const char *key, int64_t def,
                       int64_t out[2], const char *fn);
double nrL_optnum_field(lua_State *L, int idx, const char *key, double def, const char *fn);
int nrL_optbool_field(lua_State *L, int idx, const char *key, int def, const char *fn);

/* 1-based Lua dim (negative counts from the end) -> 0-based C dim; raises. */
int nrL_checkdim(lua_State *L, int idx, int ndim, const char *fn);

/* Records the names of the C functions in lib and in its subtables, so
   messages name them even when Lua knows no name at the call site. */
void nrL_name_functions(lua_State *L, int lib);

/* Registers functions into the table at the top of the stack. */
void nrL_setfuncs(lua_State *L, const luaL_Reg *l);

/* Module pieces opened by luaopen_nasrt_core; each adds its functions to
   the `nasrt` table at `lib` and the op table `F` at `F`. */
void nrL_open_tensor(lua_State *L, int lib, int F);
void nrL_open_ops(lua_State *L, int lib, int F);
void nrL_open_conv(lua_State *L, int lib, int F);   /* modules/bind_conv.c */
void nrL_open_norm(lua_State *L, int lib, int F);   /* modules/bind_norm.c */
void nrL_open_io(lua_State *L, int lib, int F);     /* modules/bind_io.c */
void nrL_open_data(lua_State *L, int lib, int F);   /* modules/bind_data.c */
void nrL_open_ckpt(lua_State *L, int lib, int F);   /* modules/bind_ckpt.c */
void nrL_open_optim(lua_State *L, int lib, int F);  /* modules/bind_optim.c */
void nrL_open_sampler(lua_State *L, int lib, int F); /* modules/bind_sampler.c */
void nrL_open_dist(lua_State *L, int lib, int F);   /* modules/bind_dist.c */
/* __tostring of tensors, PyTorch-like (modules/print.c) */
int nrL_tensor_tostring(lua_State *L);

NR_MODAPI int luaopen_nasrt_core(lua_State *L);

#endif
