/*
** bind_io.c -- nasrt.io: NumPy .npy interchange (runtime/npy.c) for Lua.
** Misuse (a path that is not a string, a non-tensor) raises; the failures a
** script should expect (missing, truncated or unsupported file, unwritable
** folder) return nil, message as io.open does.
*/

/***
numpy interchange: `nasrt.io` (C, modules/bind_io.c).
@module nasrt
*/
#include "luabind.h"

/* Pushes nil, message for NR_EIO; raises for anything else (out of memory
   is not an expected failure of a file operation). */
/* The path argument: a string, not a number Lua would convert. */
static const char *checkpath(lua_State *L, int idx, const char *fn) {
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "%s: argument #%d: expected a path string, got %s", fn, idx,
                   luaL_typename(L, idx));
    return lua_tostring(L, idx);
}

/* The tensor argument, named in the message even in a tail call (where Lua
   knows no function name). */
static nr_tensor *checktensor(lua_State *L, int idx, const char *fn) {
    nr_tensor **box = luaL_testudata(L, idx, NR_TENSOR_MT);
    if (!box)
        luaL_error(L, "%s: argument #%d: expected tensor, got %s", fn, idx,
                   luaL_typename(L, idx));
    if (!*box) luaL_error(L, "%s: argument #%d: tensor used after close", fn, idx);
    return *box;
}

/* nr_npy_* messages start with the function's name already. */
static int io_fail(lua_State *L, nr_status st) {
    if (st != NR_EIO) return luaL_error(L, "%s", nr_lasterror());
    luaL_pushfail(L);
    lua_pushstring(L, nr_lasterror());
    return 2;
}

/*** Loads a .npy file as a float32 tensor.
Reads '<f4' directly and converts f8, i1-i8, u1-u8 and bool arrays; C order
only.
@function io.load_npy
@tparam string path
@treturn tensor
@return nil, message when the file is missing, truncated or unsupported
@usage local x = assert(nasrt.io.load_npy("x.npy"))
*/
static int io_load_npy(lua_State *L) {
    const char *path = checkpath(L, 1, "load_npy");
    nr_tensor *t = NULL;
    nr_status st = nr_npy_load(&t, path);
    if (st != NR_OK) return io_fail(L, st);
    nrL_pushtensor(L, t);
    return 1;
}

/*** Saves a tensor as a version 1.0 '<f4' C-order .npy file.
The file is written to a temporary name and renamed, so readers never see
half a file.
@function io.save_npy
@tparam string path
@tparam tensor t
@tparam[opt] table opts {sync=true}: fsync the file before the rename
  (false when writing many files, e.g. a model's weights)
@treturn true
@return nil, message when the file cannot be written
*/
static int io_save_npy(lua_State *L) {
    static const char *const allowed[] = {"sync", NULL};
    const char *path = checkpath(L, 1, "save_npy");
    nr_tensor *t = checktensor(L, 2, "save_npy");
    int sync = 1;
    if (!lua_isnoneornil(L, 3)) {
        nrL_checkopts(L, 3, "save_npy", allowed);
        sync = nrL_optbool_field(L, 3, "sync", 1, "save_npy");
    }
    nr_status st = nr_npy_save_flags(path, t, sync ? NR_NPY_SYNC : 0u);
    if (st != NR_OK) return io_fail(L, st);
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg io_funcs[] = {
    {"load_npy", io_load_npy},
    {"save_npy", io_save_npy},
    {NULL, NULL},
};

void nrL_open_io(lua_State *L, int lib, int F) {
    lib = lua_absindex(L, lib);
    luaL_newlibtable(L, io_funcs);
    nrL_setfuncs(L, io_funcs);
    lua_setfield(L, lib, "io");
}
