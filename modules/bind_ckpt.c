/*
** bind_ckpt.c -- nasrt.save / nasrt.load: checkpoints of nested Lua tables
** (runtime/ckpt.c does the format and the atomic write).
**
** Misuse raises, naming where in the table the problem is:
**     save: cycle at .model.layer1
**     save: value at .opt.fn is a function
**     save: table at .lr has a float key 0.5 (keys must be strings or integers)
** The failures a script should expect (folder not writable, disk full; file
** missing, truncated, corrupt, from a newer nasrt) return nil, message, and
** every message names the file.
**
** Saving walks the table inside a protected call, so an error in the middle
** removes the temp file at once and the previous checkpoint stays in place.
** Loading reads the file into a GC-owned buffer, so nothing leaks when a
** Lua allocation raises.
*/

/***
Checkpoints: `nasrt.save` and `nasrt.load` (C, modules/bind_ckpt.c).
@module nasrt
*/
#include "luabind.h"
#include "ckpt.h"

#include <stdlib.h>
#include <string.h>

#define WRITER_MT "nasrt.CkptWriter"
#define BUFFER_MT "nasrt.CkptBuffer"

/* The path argument: a string, not a number Lua would convert. */
static const char *checkpath(lua_State *L, int idx, const char *fn) {
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "%s: argument #%d: expected a path string, got %s", fn, idx,
                   luaL_typename(L, idx));
    return lua_tostring(L, idx);
}

/* nil, message for NR_EIO; raises for anything else. */
static int io_fail(lua_State *L, nr_status st) {
    if (st != NR_EIO) return nrL_raise(L, st);
    luaL_pushfail(L);
    lua_pushstring(L, nr_lasterror());
    return 2;
}

/* ---------------------------------------------------------------- save */

typedef struct {
    nr_ckpt_writer *w;
    int visiting;                       /* stack index: tables on the current path */
    int keys[NR_CKPT_MAXDEPTH + 2];     /* stack index of the key at each depth */
    char msg[512];                      /* an I/O failure's message */
} save_ctx;

/* Raised (as a light userdata) when the writer hits an I/O error, so
   nasrt.save can tell it from misuse and return nil, message. */
static const char io_sentinel = 0;

static int is_ident(const char *s, size_t n) {
    if (n == 0 || !(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return 0;
    for (size_t i = 1; i < n; i++) {
        char ch = s[i];
        if (!(ch == '_' || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9')))
            return 0;
    }
    return 1;
}

/* Pushes the path of the value at `depth` ("" is the root table itself),
   e.g. .model.layers[3]["weird key"]. */
static const char *push_path(lua_State *L, const save_ctx *c, int depth) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (depth == 0) luaL_addstring(&b, "the root");
    for (int i = 1; i <= depth; i++) {
        int k = c->keys[i];
        if (lua_type(L, k) == LUA_TSTRING) {
            size_t n;
            const char *s = lua_tolstring(L, k, &n);
            if (is_ident(s, n)) {
                luaL_addchar(&b, '.');
                luaL_addlstring(&b, s, n);
            } else {
                luaL_addstring(&b, "[\"");
                for (size_t j = 0; j < n && j < 64; j++) {
                    unsigned char ch = (unsigned char)s[j];
                    char esc[8];
                    if (ch == '"' || ch == '\\') snprintf(esc, sizeof esc, "\\%c", ch);
                    else if (ch < 32 || ch >= 127) snprintf(esc, sizeof esc, "\\%d", ch);
                    else snprintf(esc, sizeof esc, "%c", ch);
                    luaL_addstring(&b, esc);
                }
                if (n > 64) luaL_addstring(&b, "...");
                luaL_addstring(&b, "\"]");
            }
        } else {
            char num[32];
            snprintf(num, sizeof num, "[%lld]", (long long)lua_tointeger(L, k));
            luaL_addstring(&b, num);
        }
    }
    luaL_pushresult(&b);
    return lua_tostring(L, -1);
}

static void check(lua_State *L, save_ctx *c, nr_status st) {
    if (st == NR_OK) return;
    if (st == NR_EIO) {
        snprintf(c->msg, sizeof c->msg, "%s", nr_lasterror());
        lua_pushlightuserdata(L, (void *)&io_sentinel);
        lua_error(L);
    }
    luaL_error(L, "%s", nr_lasterror());
}

static void save_value(lua_State *L, save_ctx *c, int idx, int depth);

static void save_table(lua_State *L, save_ctx *c, int idx, int depth) {
    luaL_checkstack(L, 8, "save: tables nested too deeply");
    if (depth >= NR_CKPT_MAXDEPTH)
        luaL_error(L, "save: tables nested deeper than %d at %s", NR_CKPT_MAXDEPTH,
                   push_path(L, c, depth));
    lua_pushvalue(L, idx);
    if (lua_rawget(L, c->visiting) != LUA_TNIL)
        luaL_error(L, "save: cycle at %s", push_path(L, c, depth));
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, c->visiting);

    /* first pass: count the pairs and check the keys */
    uint64_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        int kt = lua_type(L, -1);
        if (kt == LUA_TNUMBER && !lua_isinteger(L, -1)) {
            lua_Number v = lua_tonumber(L, -1);
            luaL_error(L, "save: table at %s has a float key %s (keys must be strings or "
                       "integers)", push_path(L, c, depth),
                       lua_pushfstring(L, "%f", v));
        }
        if (kt != LUA_TNUMBER && kt != LUA_TSTRING)
            luaL_error(L, "save: table at %s has a %s key (keys must be strings or integers)",
                       push_path(L, c, depth), luaL_typename(L, -1));
        n++;
    }
    check(L, c, nr_ckpt_put_table(c->w, n));

    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int k = lua_gettop(L) - 1, v = lua_gettop(L);
        if (lua_type(L, k) == LUA_TSTRING) {
            size_t len;
            const char *s = lua_tolstring(L, k, &len);
            check(L, c, nr_ckpt_put_string(c->w, s, len));
        } else {
            check(L, c, nr_ckpt_put_int(c->w, (int64_t)lua_tointeger(L, k)));
        }
        c->keys[depth + 1] = k;
        save_value(L, c, v, depth + 1);
        lua_pop(L, 1);
    }

    lua_pushvalue(L, idx);
    lua_pushnil(L);
    lua_rawset(L, c->visiting);
}

static void save_value(lua_State *L, save_ctx *c, int idx, int depth) {
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
        check(L, c, nr_ckpt_put_bool(c->w, lua_toboolean(L, idx)));
        return;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            check(L, c, nr_ckpt_put_int(c->w, (int64_t)lua_tointeger(L, idx)));
        else
            check(L, c, nr_ckpt_put_float(c->w, (double)lua_tonumber(L, idx)));
        return;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        check(L, c, nr_ckpt_put_string(c->w, s, len));
        return;
    }
    case LUA_TTABLE:
        save_table(L, c, idx, depth);
        return;
    case LUA_TUSERDATA: {
        nr_tensor **box = luaL_testudata(L, idx, NR_TENSOR_MT);
        if (box) {
            if (!*box) luaL_error(L, "save: value at %s is a closed tensor", push_path(L, c, depth));
            check(L, c, nr_ckpt_put_tensor(c->w, *box));
            return;
        }
        const char *path = push_path(L, c, depth);
        if (luaL_getmetafield(L, idx, "__name") == LUA_TSTRING)
            luaL_error(L, "save: value at %s is a userdata (%s)", path, lua_tostring(L, -1));
        luaL_error(L, "save: value at %s is a userdata", path);
        return;
    }
    default: /* function, thread, light userdata */
        luaL_error(L, "save: value at %s is a %s", push_path(L, c, depth),
                   luaL_typename(L, idx));
    }
}

/* pcall'ed: 1 = save_ctx (light), 2 = the table, 3 = visiting set */
static int save_body(lua_State *L) {
    save_ctx *c = lua_touserdata(L, 1);
    c->visiting = 3;
    save_value(L, c, 2, 0);
    return 0;
}

static int writer_gc(lua_State *L) {
    nr_ckpt_writer_discard(luaL_checkudata(L, 1, WRITER_MT));
    return 0;
}

/*** Saves a table of tensors, numbers, strings, booleans and tables.
Integers stay integers, floats are stored as doubles, tensors as float32
bits (so -0.0, inf and NaN survive), strings byte for byte.  Keys must be
strings or integers; metatables are not saved; a table reached twice is
stored twice, a cycle is an error.  The file is written to
`path .. ".tmp." .. pid`, synced, and renamed over `path`, so `path` always
holds either the previous checkpoint or the whole new one.
@function save
@tparam string path
@tparam table t
@treturn true
@return nil, message when the file cannot be written
@raise on cycles and unsupported values, naming the key path
@usage assert(nasrt.save("run/ckpt", {step = 10, model = net:state_dict()}))
*/
static int nasrt_save(lua_State *L) {
    const char *path = checkpath(L, 1, "save");
    if (lua_type(L, 2) != LUA_TTABLE)
        return luaL_error(L, "save: argument #2: expected a table, got %s",
                          luaL_typename(L, 2));
    lua_settop(L, 2);
    nr_ckpt_writer *w = lua_newuserdatauv(L, sizeof *w, 0);
    memset(w, 0, sizeof *w);
    w->done = 1; /* harmless to discard until init */
    luaL_setmetatable(L, WRITER_MT);
    nr_status st = nr_ckpt_writer_init_file(w, path);
    if (st != NR_OK) return io_fail(L, st);

    save_ctx *c = lua_newuserdatauv(L, sizeof *c, 0); /* GC-owned: survives a raise */
    memset(c, 0, sizeof *c);
    c->w = w;
    lua_pushcfunction(L, save_body);
    lua_pushlightuserdata(L, c);
    lua_pushvalue(L, 2);
    lua_newtable(L);
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
        nr_ckpt_writer_discard(w); /* the temp file goes now, not at the next GC */
        if (lua_touserdata(L, -1) == (void *)&io_sentinel) {
            luaL_pushfail(L);
            lua_pushstring(L, c->msg);
            return 2;
        }
        return lua_error(L);
    }
    st = nr_ckpt_writer_finish(w, NULL, NULL);
    if (st != NR_OK) return io_fail(L, st);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---------------------------------------------------------------- load */

typedef struct {
    void *p;
} buffer_box;

static int buffer_gc(lua_State *L) {
    buffer_box *b = luaL_checkudata(L, 1, BUFFER_MT);
    free(b->p);
    b->p = NULL;
    return 0;
}

/* Pushes the next value; on a corrupt file returns its status (nothing
   pushed for the failing value; the caller drops the partial result). */
static nr_status load_value(lua_State *L, nr_ckpt_reader *r) {
    nr_ckpt_item it;
    nr_status st = nr_ckpt_read(r, &it);
    if (st != NR_OK) return st;
    switch (it.tag) {
    case NR_CKPT_FALSE: lua_pushboolean(L, 0); break;
    case NR_CKPT_TRUE: lua_pushboolean(L, 1); break;
    case NR_CKPT_INT: lua_pushinteger(L, (lua_Integer)it.i); break;
    case NR_CKPT_FLOAT: lua_pushnumber(L, (lua_Number)it.f); break;
    case NR_CKPT_STRING: lua_pushlstring(L, it.s, it.len); break;
    case NR_CKPT_TENSOR: {
        nr_tensor *t = nr_ckpt_item_tensor(&it);
        if (!t) return NR_ENOMEM;
        nrL_pushtensor(L, t);
        break;
    }
    case NR_CKPT_TABLE: {
        luaL_checkstack(L, 6, "load: tables nested too deeply");
        lua_createtable(L, 0, it.count < 64 ? (int)it.count : 64);
        for (uint64_t i = 0; i < it.count; i++) {
            if ((st = load_value(L, r)) != NR_OK) return st;  /* key */
            if ((st = load_value(L, r)) != NR_OK) return st;  /* value */
            lua_rawset(L, -3);
        }
        break;
    }
    }
    return NR_OK;
}

/*** Loads a checkpoint written by `save`.
@function load
@tparam string path
@treturn table
@return nil, message when the file is missing, not a checkpoint, from a newer
nasrt, truncated or corrupt (the message names the file)
@usage local ck = assert(nasrt.load("run/ckpt"))
*/
static int nasrt_load(lua_State *L) {
    const char *path = checkpath(L, 1, "load");
    lua_settop(L, 1);
    buffer_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->p = NULL;
    luaL_setmetatable(L, BUFFER_MT);
    size_t len = 0;
    nr_status st = nr_ckpt_read_file(path, &b->p, &len);
    if (st != NR_OK) return io_fail(L, st);
    nr_ckpt_reader r;
    st = nr_ckpt_reader_open(&r, b->p, len, path, 0);
    if (st == NR_OK) st = load_value(L, &r);
    if (st == NR_OK) st = nr_ckpt_reader_end(&r);
    free(b->p);
    b->p = NULL;
    if (st != NR_OK) return io_fail(L, st);
    return 1;
}

static const luaL_Reg ckpt_funcs[] = {
    {"save", nasrt_save},
    {"load", nasrt_load},
    {NULL, NULL},
};

void nrL_open_ckpt(lua_State *L, int lib, int F) {
    lib = lua_absindex(L, lib);
    luaL_newmetatable(L, WRITER_MT);
    lua_pushcfunction(L, writer_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, BUFFER_MT);
    lua_pushcfunction(L, buffer_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_pushvalue(L, lib);
    luaL_setfuncs(L, ckpt_funcs, 0);
    lua_pop(L, 1);
}
