/*
** fuzz_lua.h -- a Lua 5.4 state with the nasrt library, for the harnesses of
** parsers written in Lua, plus Lua line coverage for libFuzzer.
**
** libFuzzer sees only the edges of code compiled with -fsanitize=fuzzer;
** Debian's liblua5.4 is not, so a parser written in Lua would be fuzzed
** blind.  A line hook hashes (previous line, this line) of the running Lua
** code into a byte array in the __libfuzzer_extra_counters section, which
** libFuzzer reads as extra coverage (the trick luzer and atheris use).
**
** A driver is a Lua file returning function(data).  Its errors are fine
** (bad input must raise or return nil, msg); it calls fuzz.bug(msg) when an
** invariant breaks, which aborts so libFuzzer keeps the input.  Globals
** for the driver: fuzz.root (the source tree), fuzz.scratch (a folder for
** files), fuzz.bug.
*/
#ifndef NASRT_FUZZ_LUA_H
#define NASRT_FUZZ_LUA_H

#include "fuzz.h"
#include "luabind.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#ifndef NASRT_SOURCE_DIR
#error "NASRT_SOURCE_DIR must name the source tree"
#endif

__attribute__((used, section("__libfuzzer_extra_counters")))
static uint8_t fuzz_lua_cov[1 << 16];
static uintptr_t fuzz_lua_prev;

static void fuzz_lua_hook(lua_State *L, lua_Debug *ar) {
    if (!lua_getinfo(L, "S", ar)) return;
    /* ar->source points into the chunk's source string, stable while the
       chunk is loaded (all of them are loaded once, before fuzzing) */
    uintptr_t cur = (uintptr_t)ar->source * 0x9e3779b1u ^ (uintptr_t)ar->currentline * 0x85ebca6bu;
    cur ^= cur >> 16;
    fuzz_lua_cov[(cur ^ fuzz_lua_prev) & 0xffff]++;
    fuzz_lua_prev = cur >> 1;
}

static int fuzz_lua_bug(lua_State *L) {
    luaL_traceback(L, L, luaL_optstring(L, 1, "invariant broken"), 1);
    FUZZ_BUG("%s", lua_tostring(L, -1));
    return 0;
}

static lua_State *fuzz_L;
static int fuzz_lua_fn = LUA_NOREF;

/* Opens the state and loads the driver NASRT_SOURCE_DIR/tests/fuzz/<name>. */
static void fuzz_lua_open(const char *name) {
    setenv("NASRT_THREADS", "1", 0);
    lua_State *L = luaL_newstate();
    if (!L) FUZZ_BUG("luaL_newstate failed");
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/recipes/?.lua;%s/tests/fuzz/?.lua;",
                    NASRT_SOURCE_DIR, NASRT_SOURCE_DIR, NASRT_SOURCE_DIR, NASRT_SOURCE_DIR);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_nasrt_core);
    lua_setfield(L, -2, "nasrt.core");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushstring(L, NASRT_SOURCE_DIR);
    lua_setfield(L, -2, "root");
    lua_pushstring(L, fuzz_dir());
    lua_setfield(L, -2, "scratch");
    lua_pushcfunction(L, fuzz_lua_bug);
    lua_setfield(L, -2, "bug");
    lua_setglobal(L, "fuzz");
    char path[512];
    snprintf(path, sizeof path, "%s/tests/fuzz/%s", NASRT_SOURCE_DIR, name);
    if (luaL_loadfile(L, path) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
        FUZZ_BUG("driver %s: %s", path, lua_tostring(L, -1));
    if (!lua_isfunction(L, -1)) FUZZ_BUG("driver %s must return a function", path);
    fuzz_lua_fn = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_gc(L, LUA_GCCOLLECT);
    lua_sethook(L, fuzz_lua_hook, LUA_MASKLINE, 0);
    fuzz_L = L;
}

/* Calls the driver on the bytes; Lua errors are dropped. */
static void fuzz_lua_run(const uint8_t *data, size_t size) {
    lua_State *L = fuzz_L;
    fuzz_lua_prev = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, fuzz_lua_fn);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        if (getenv("NASRT_FUZZ_VERBOSE"))
            fprintf(stderr, "lua error: %s\n", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_pop(L, 1);
    }
    /* a full collection after every input: the heap ends each run as it
       began, so libFuzzer's leak check (run when mallocs and frees differ
       within one input) does not fire on garbage Lua has not collected yet */
    lua_gc(L, LUA_GCCOLLECT);
}

#endif
