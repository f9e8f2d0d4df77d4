-- Packaging: the version is written once (CMakeLists.txt project(VERSION))
-- and nasrt.version, `nasrt --version` and the rockspec agree; `make
-- install`'s rules (cmake --install into a temporary prefix) give a binary
-- that runs from another folder and finds its Lua files, recipes and
-- NAS-Bench-201 tables, and a tree stock lua5.4 can `require "nasrt"` from.
local nasrt = require "nasrt"
local H = require "helpers"

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

-- output and exit code of a shell command
local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

local function build_dir()
  return os.getenv("NASRT_BUILD_DIR") or "./build"
end

local function abspath(p)
  return (sh("cd '" .. p .. "' && pwd")):gsub("\n$", "")
end

describe("the version", function()
  it("is the same in CMakeLists.txt, nasrt.version, --version and the rockspec", function()
    local v = read("CMakeLists.txt"):match("project%(nasrt VERSION ([%d.]+)")
    assert.truthy(v)
    assert.are.equal(v, nasrt.version)
    local out = sh(H.nasrt_bin() .. " --version")
    assert.are.equal("nasrt " .. v .. " (Lua 5.4, OpenBLAS)\n", out)
    local rocks = sh("ls *.rockspec")
    assert.are.equal("nasrt-" .. v .. "-1.rockspec\n", rocks)
    local spec = read("nasrt-" .. v .. "-1.rockspec")
    assert.are.equal(v .. "-1", spec:match('\nversion = "([^"]+)"'))
    -- no hand-written copy of the version in the C sources
    assert.are.equal("", (sh("grep -rl --include='*.[ch]' 'define NR_VERSION \"' runtime modules")))
  end)
end)

describe("make install", function()
  local prefix, elsewhere

  setup(function()
    prefix = os.tmpname()
    os.remove(prefix)
    elsewhere = os.tmpname()
    os.remove(elsewhere)
    assert(os.execute("mkdir -p '" .. elsewhere .. "'"))
    local out, code = sh("cmake --install '" .. build_dir() .. "' --prefix '" .. prefix .. "'")
    assert(code == 0, out)
  end)

  teardown(function()
    os.execute("rm -rf '" .. prefix .. "' '" .. elsewhere .. "'")
  end)

  it("installs the binary, the runtime, core.so, the Lua files and recipes", function()
    for _, f in ipairs({ "bin/nasrt", "lib/libnasrt_runtime.so", "lib/lua/5.4/nasrt/core.so",
                         "share/lua/5.4/nasrt/init.lua", "share/lua/5.4/nasrt/repl.lua",
                         "share/lua/5.4/nasrt/cdoc.lua", "share/lua/5.4/nasrt/supernet/init.lua",
                         "share/nasrt/recipes/darts.lua", "share/nasrt/data/nb201/README.md" }) do
      assert.is_true(io.open(prefix .. "/" .. f) ~= nil, f)
    end
  end)

  it("gives a binary that runs from another folder with the installed files", function()
    local script = elsewhere .. "/tiny.lua"
    local f = assert(io.open(script, "w"))
    f:write([[
      print(nasrt.version)
      print(package.searchpath("nasrt.nn", package.path))
      print(nasrt.F.relu(nasrt.tensor({-1, 2})):sum():item())
      print(nasrt.bench.nb201():query(1).cifar10.test)
      print(nasrt.repl == nil and require("nasrt.repl").doc("F.relu"))
    ]])
    f:close()
    local out, code = sh("cd '" .. elsewhere .. "' && env -u NASRT_BUILD_DIR -u NASRT_LUA_DIR '" ..
                         prefix .. "/bin/nasrt' tiny.lua")
    assert.are.equal(0, code, out)
    local l = {}
    for line in out:gmatch("[^\n]+") do l[#l + 1] = line end
    assert.are.equal(nasrt.version, l[1])
    assert.are.equal(abspath(prefix .. "/bin") .. "/../share/lua/5.4/nasrt/nn.lua", l[2])
    assert.are.equal("2.0", l[3])
    assert.are.equal(tostring(nasrt.bench.nb201():query(1).cifar10.test), l[4])
    assert.are.equal("max(x, 0); a NaN stays NaN (PyTorch's relu), here and in every op that", l[5])
    -- an installed recipe answers --help
    out, code = sh("cd '" .. elsewhere .. "' && env -u NASRT_BUILD_DIR -u NASRT_LUA_DIR '" ..
                   prefix .. "/bin/nasrt' '" .. prefix .. "/share/nasrt/recipes/random.lua' --help")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("--seed", 1, true), out)
  end)

  it("gives a tree that stock lua5.4 requires nasrt from", function()
    local out, code = sh("cd '" .. elsewhere .. "' && LUA_PATH='" .. prefix ..
      "/share/lua/5.4/?.lua;" .. prefix .. "/share/lua/5.4/?/init.lua' LUA_CPATH='" .. prefix ..
      "/lib/lua/5.4/?.so' lua5.4 -e 'local n = require \"nasrt\"; " ..
      "print(n.version, n.ones(2, 3):sum():item(), package.searchpath(\"nasrt.core\", package.cpath))'")
    assert.are.equal(0, code, out)
    assert.are.equal(("%s\t6.0\t%s/lib/lua/5.4/nasrt/core.so\n"):format(nasrt.version, prefix), out)
  end)
end)

describe("the rockspec", function()
  -- a whole CMake build: minutes on 2 cores
  it("builds with luarocks make and gives require 'nasrt' to stock Lua #slow", function()
    if select(2, sh("command -v luarocks")) ~= 0 then
      pending("luarocks is not installed (apt-get install luarocks)")
      return
    end
    local tree = os.tmpname()
    os.remove(tree)
    local rockspec = "nasrt-" .. nasrt.version .. "-1.rockspec"
    local out, code = sh("nice -n 19 luarocks --lua-version=5.4 --tree='" .. tree .. "' make " ..
                         rockspec .. " && rm -rf build.luarocks")
    assert.are.equal(0, code, out)
    out, code = sh("cd / && eval \"$(luarocks --lua-version=5.4 --tree='" .. tree .. "' path)\" && " ..
                   "lua5.4 -e 'local n = require \"nasrt\"; print(n.version, n.ones(2):sum():item())'")
    os.execute("rm -rf '" .. tree .. "'")
    assert.are.equal(0, code, out)
    assert.are.equal(nasrt.version .. "\t2.0\n", out)
  end)
end)
