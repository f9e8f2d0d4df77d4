-- LuaRocks package of nasrt's Lua library and C core, so that
-- `require "nasrt"` works from stock Lua 5.4.  Build it from a clone:
--     luarocks --lua-version=5.4 make nasrt-0.1.0-1.rockspec
-- The version in this file's name must be the one in CMakeLists.txt's
-- project(VERSION ...) (spec/packaging_spec.lua checks that they agree).
-- The build is the CMake one.  The `nasrt` host binary, the recipes and the
-- NAS-Bench-201 tables are not part of the rock (use `make install` for
-- them; from the rock, pass the tables' folder to nasrt.bench.nb201(dir)).
rockspec_format = "3.0"
package = "nasrt"
version = "0.1.0-1"
source = {
  url = "git+file://.",   -- built in place with `luarocks make`
}
description = {
  summary = "A Lua-scriptable runtime for neural architecture search on the CPU",
  license = "MIT",
  detailed = [[
A C11 core (tensors, autograd, convolutions, batch norm, data loaders,
checkpoints, samplers) exposed to Lua 5.4, with the Lua library nasrt.nn,
nasrt.optim, nasrt.supernet, nasrt.search and the search recipes.]],
}
dependencies = {
  "lua >= 5.4",
}
external_dependencies = {
  OPENBLAS = { library = "openblas" },
  ZLIB = { header = "zlib.h", library = "z" },
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    NASRT_INSTALL_LMOD = "$(LUADIR)",
    NASRT_INSTALL_CMOD = "$(LIBDIR)",
    NASRT_INSTALL_LIB = "$(LIBDIR)",
    NASRT_INSTALL_HOST = "OFF",
    NASRT_INSTALL_EXTRAS = "OFF",
  },
}
