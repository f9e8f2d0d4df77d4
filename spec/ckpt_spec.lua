-- Checkpoints: nasrt.save / nasrt.load.  Exact round trips (tensor bits,
-- integer vs float, strings with NUL bytes, nested and empty tables), the
-- generator state, misuse errors that name the key path, and files that are
-- missing, foreign, from a newer nasrt, truncated or corrupt coming back as
-- nil, message (naming the file) -- never a crash.  Saving is atomic: a temp
-- file in the same folder, renamed over the target.
local nasrt = require "nasrt"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p '" .. dir .. "'"))

local function P(name) return dir .. "/" .. name end

local function read_bytes(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write_bytes(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- Files in dir whose name starts with prefix.
local function listdir(prefix)
  local out = {}
  local p = io.popen("ls -a '" .. dir .. "'")
  for name in p:lines() do
    if name:sub(1, #prefix) == prefix then out[#out + 1] = name end
  end
  p:close()
  table.sort(out)
  return out
end

local function pid()
  local s = read_bytes("/proc/self/stat")
  return s:match("^(%d+)")
end

-- The float32 bits of every element, row-major.
local function bits(t)
  if #t:shape() == 0 then return string.pack("<f", t:item()) end
  local c = t:contiguous()
  local parts = {}
  for i = 1, c:numel() do parts[i] = string.pack("<f", c:get(i)) end
  return table.concat(parts)
end

-- zlib's crc32, so specs can forge a payload with a valid checksum.
local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if c & 1 == 1 then c = 0xEDB88320 ~ (c >> 1) else c = c >> 1 end
  end
  crc_table[i] = c
end
local function crc32(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do c = crc_table[(c ~ s:byte(i)) & 0xFF] ~ (c >> 8) end
  return c ~ 0xFFFFFFFF
end
-- Recomputes the trailer of a (possibly edited) checkpoint image.
local function reseal(s)
  local body = s:sub(1, #s - 4)
  return body .. string.pack("<I4", crc32(body))
end

local function roundtrip(value, name)
  local path = P(name or "rt.ckpt")
  assert.is_true(nasrt.save(path, value))
  local got, err = nasrt.load(path)
  assert.is_nil(err)
  return got
end

teardown(function()
  os.execute("rm -rf '" .. dir .. "'")
end)

describe("nasrt.save / nasrt.load round trips", function()
  it("keeps integers as integers and floats as exact doubles", function()
    local v = {
      i0 = 0, i1 = -1, imax = math.maxinteger, imin = math.mininteger, big = 1 << 53,
      f1 = 3.0, f2 = 0.1, f3 = -0.0, f4 = 1 / 0, f5 = -1 / 0, f6 = 5e-324, f7 = 1.7976931348623157e308,
      f8 = 2.0 ^ 53, nan = 0 / 0,
    }
    local got = roundtrip(v)
    for k, x in pairs(v) do
      local y = got[k]
      assert.are.equal(math.type(x), math.type(y), k)
      if x ~= x then
        assert.is_true(y ~= y, k)
      else
        assert.are.equal(string.pack("<d", x), string.pack("<d", y), k) -- bit-identical
        assert.are.equal(x, y, k)
      end
    end
    assert.are.equal(-1 / 0, 1 / got.f3) -- -0.0 keeps its sign
  end)

  it("keeps strings byte for byte (NUL bytes, every byte value, long strings)", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    local v = {
      nul = "a\0b\0", empty = "", all = table.concat(all),
      long = string.rep("xyz\0", 300000), ["key\0with nul"] = "k",
    }
    local got = roundtrip(v)
    for k, x in pairs(v) do assert.are.equal(x, got[k]) end
  end)

  it("keeps booleans, nested and empty tables and every kind of key", function()
    local v = {
      t = true, f = false, empty = {},
      nested = {a = {b = {c = {d = {}}}}, list = {1, 2.5, "three", false, {}}},
      keys = {[0] = "zero", [-7] = "neg", [math.maxinteger] = "max", ["1"] = "string one",
              [1] = "int one", [""] = "empty key"},
      sparse = {[1] = 1, [100] = 100, [1000000] = 1e6},
    }
    local got = roundtrip(v)
    assert.are.same(v, got)
    assert.are.equal("string one", got.keys["1"])
    assert.are.equal("int one", got.keys[1])
    assert.are.equal(5, #got.nested.list)
    local many = {}
    for i = 1, 10000 do many["k" .. i] = i; many[i] = -i end
    assert.are.same(many, roundtrip(many))
  end)

  it("stores a shared table twice (no cycle) and loads two equal copies", function()
    local shared = {x = 1, w = nasrt.tensor({1, 2})}
    local got = roundtrip({a = shared, b = shared, list = {shared, shared}})
    assert.are.equal(1, got.a.x)
    assert.are.equal(1, got.list[2].x)
    assert.are_not.equal(got.a, got.b) -- two copies, not one table
    assert.are.equal(bits(shared.w), bits(got.a.w))
    assert.are.equal(bits(got.a.w), bits(got.b.w))
  end)

  it("keeps tensors bit-identical: -0.0, inf, denormals, extremes", function()
    local vals = {0.0, -0.0, 1 / 0, -1 / 0, 1.0, -1.5, 1e-45, -1e-45, 1.1754942e-38,
                  3.4028234663852886e38, -3.4028234663852886e38, 0.1, 1 / 3}
    local t = nasrt.tensor(vals)
    local got = roundtrip({t = t}).t
    assert.are.same({#vals}, got:shape())
    assert.are.equal(bits(t), bits(got))
    assert.are.equal(-1 / 0, 1 / got:get(2))
    assert.are.equal(1 / 0, got:get(3))
    local nan = roundtrip({t = nasrt.tensor({0 / 0, 1})}).t
    assert.is_true(nan:get(1) ~= nan:get(1))
  end)

  it("keeps shapes: 0-dim, empty, every rank up to 8, non-contiguous views", function()
    local cases = {
      scalar = nasrt.tensor(-0.0),
      s2 = nasrt.tensor(2.5),
      empty = nasrt.zeros({0}),
      empty3 = nasrt.zeros({2, 0, 3}),
      r8 = nasrt.randn({1, 2, 1, 3, 1, 2, 1, 2}),
      m = nasrt.randn({3, 4}),
      tr = nasrt.randn({3, 4}):transpose(1, 2), -- strided view: stored row-major
    }
    local got = roundtrip(cases)
    for k, t in pairs(cases) do
      assert.are.same(t:shape(), got[k]:shape(), k)
      assert.are.equal(bits(t), bits(got[k]), k)
      assert.is_true(got[k]:is_contiguous(), k)
    end
    assert.are.same({}, got.scalar:shape())
    assert.are.equal(-1 / 0, 1 / got.scalar:item())
    -- each shape as the last value of the file (no bytes after its sizes)
    for k, t in pairs(cases) do
      local only = roundtrip({t}, "only.ckpt")[1]
      assert.are.same(t:shape(), only:shape(), k)
      assert.are.equal(bits(t), bits(only), k)
    end
  end)

  it("keeps big tensors exactly (larger than the write buffer)", function()
    nasrt.manual_seed(5)
    local big = nasrt.randn({3, 1024, 1024}) -- 12 MiB
    local small = nasrt.randn({7})
    local got = roundtrip({big = big, small = small, after = "tail"})
    assert.are.same({3, 1024, 1024}, got.big:shape())
    assert.are.equal(0, (got.big - big):abs():max():item())
    assert.are.equal(bits(big:narrow(2, 1000, 3)), bits(got.big:narrow(2, 1000, 3)))
    assert.are.equal(bits(small), bits(got.small))
    assert.are.equal("tail", got.after)
  end)

  it("restores requires_grad on leaf tensors", function()
    local w = nasrt.randn({2, 2}):requires_grad(true)
    local got = roundtrip({w = w, plain = nasrt.ones({2})})
    got.w:sum():backward()
    assert.is_not_nil(got.w.grad)
    assert.is_true(got.w.is_leaf)
    assert.are.equal(bits(w), bits(got.w))
  end)

  it("round-trips the generator state and restores the same random stream", function()
    nasrt.manual_seed(1234)
    nasrt.randn({17}) -- move away from the seed
    local st = nasrt.get_rng_state()
    assert.is_true(nasrt.save(P("rng.ckpt"), {rng = st, step = 42}))
    local expect = bits(nasrt.randn({64})) .. bits(nasrt.rand({9}))
    nasrt.manual_seed(999) -- scramble
    nasrt.randn({5})
    local ck = assert(nasrt.load(P("rng.ckpt")))
    assert.are.equal(4, #ck.rng)
    for i = 1, 4 do
      assert.are.equal("integer", math.type(ck.rng[i]))
      assert.are.equal(st[i], ck.rng[i])
    end
    nasrt.set_rng_state(ck.rng)
    assert.are.equal(expect, bits(nasrt.randn({64})) .. bits(nasrt.rand({9})))
  end)

  it("returns true and overwrites an existing checkpoint", function()
    local path = P("over.ckpt")
    assert.is_true(nasrt.save(path, {v = 1}))
    assert.is_true(nasrt.save(path, {v = 2}))
    assert.are.equal(2, nasrt.load(path).v)
    assert.are.same({}, listdir("over.ckpt.tmp"))
  end)
end)

describe("nasrt.save misuse", function()
  local function err_of(fn)
    local ok, e = pcall(fn)
    assert.is_false(ok)
    return tostring(e)
  end

  it("detects cycles and names the path", function()
    local t = {model = {}}
    t.model.layer1 = t.model
    assert.are.equal("save: cycle at .model.layer1", err_of(function() nasrt.save(P("c"), t) end))
    local s = {}
    s.self = s
    assert.are.equal("save: cycle at .self", err_of(function() nasrt.save(P("c"), s) end))
    local deep = {layers = {{}, {}}}
    deep.layers[2].back = {up = deep}
    assert.are.equal("save: cycle at .layers[2].back.up",
      err_of(function() nasrt.save(P("c"), deep) end))
    local odd = {["a key"] = {}}
    odd["a key"][7] = odd
    assert.are.equal('save: cycle at ["a key"][7]', err_of(function() nasrt.save(P("c"), odd) end))
  end)

  it("rejects unsupported values and keys, naming the path", function()
    local cases = {
      {{opt = {fn = print}}, "save: value at .opt.fn is a function"},
      {{co = coroutine.create(print)}, "save: value at .co is a thread"},
      {{f = io.stdout}, "save: value at .f is a userdata"},
      {{list = {1, 2, {x = print}}}, "save: value at .list[3].x is a function"},
      {{opt = {[1.5] = 1}}, "save: table at .opt has a float key 1.5"},
      {{k = {[true] = 1}}, "save: table at .k has a boolean key"},
      {{k = {[{}] = 1}}, "save: table at .k has a table key"},
      {{[print] = 1}, "save: table at the root has a function key"},
      {{k = {[1 / 0] = 1}}, "save: table at .k has a float key inf"},
    }
    for _, c in ipairs(cases) do
      local e = err_of(function() nasrt.save(P("bad"), c[1]) end)
      assert.is_truthy(e:find(c[2], 1, true), e .. " vs " .. c[2])
    end
    local closed = nasrt.randn({2})
    closed:close()
    assert.is_truthy(err_of(function() nasrt.save(P("bad"), {w = closed}) end)
      :find("save: value at .w is a closed tensor", 1, true))
    assert.is_truthy(err_of(function() nasrt.save(P("bad"), 5) end):find("save: argument #2", 1, true))
    assert.is_truthy(err_of(function() nasrt.save(nil, {}) end):find("save: argument #1", 1, true))
    assert.is_truthy(err_of(function() nasrt.load(42) end):find("load: argument #1", 1, true))
    assert.are.same({}, listdir("bad.tmp"))
    assert.is_false(exists(P("bad")))
  end)

  it("limits nesting depth with an error, not a crash", function()
    local ok_t = {}
    local cur = ok_t
    for _ = 1, 150 do cur.n = {}; cur = cur.n end
    cur.leaf = 1
    local got = roundtrip(ok_t, "deep.ckpt")
    for _ = 1, 150 do got = got.n end
    assert.are.equal(1, got.leaf)
    local too = {}
    cur = too
    for _ = 1, 500 do cur.n = {}; cur = cur.n end
    local e = err_of(function() nasrt.save(P("deep2"), too) end)
    assert.is_truthy(e:find("nested deeper than", 1, true), e)
  end)

  it("an error in the middle keeps the previous checkpoint and leaves no temp file", function()
    local path = P("keep.ckpt")
    assert.is_true(nasrt.save(path, {version = 1}))
    local before = read_bytes(path)
    local big = nasrt.randn({1024, 1024}) -- 4 MiB, so bytes reach the temp file first
    local e = err_of(function() nasrt.save(path, {big, big, big, print}) end)
    assert.are.equal("save: value at [4] is a function", e)
    assert.are.equal(before, read_bytes(path))
    assert.are.equal(1, nasrt.load(path).version)
    assert.are.same({"keep.ckpt"}, listdir("keep.ckpt"))
  end)
end)

describe("nasrt.load failures", function()
  local path = P("small.ckpt")
  local image

  setup(function()
    assert.is_true(nasrt.save(path, {step = 3, lr = 0.05, name = "n", flag = true,
                                     w = nasrt.tensor({{1, -0.0}, {1 / 0, 2}}), sub = {1, 2}}))
    image = read_bytes(path)
  end)

  local function expect_fail(bytes, name, pattern)
    local p = P(name)
    write_bytes(p, bytes)
    local v, msg = nasrt.load(p)
    assert.is_nil(v)
    assert.are.equal("string", type(msg))
    assert.is_truthy(msg:find(p, 1, true), "message does not name the file: " .. msg)
    if pattern then assert.is_truthy(msg:find(pattern, 1, true), msg) end
    return msg
  end

  it("reports a missing file, a folder and a foreign file", function()
    local v, msg = nasrt.load(P("nope.ckpt"))
    assert.is_nil(v)
    assert.is_truthy(msg:find(P("nope.ckpt"), 1, true), msg)
    v, msg = nasrt.load(dir)
    assert.is_nil(v)
    assert.is_truthy(msg:find(dir, 1, true))
    expect_fail("hello, this is plain text\n", "text.ckpt", "not a nasrt checkpoint")
    expect_fail("\x93NUMPY\1\0", "npy.ckpt", "not a nasrt checkpoint")
  end)

  it("reports a checkpoint from a newer nasrt by version", function()
    local newer = image:sub(1, 8) .. string.pack("<I4", 7) .. image:sub(13)
    local msg = expect_fail(newer, "v7.ckpt")
    assert.are.equal("load: " .. P("v7.ckpt") ..
      ": checkpoint format version 7 is newer than this nasrt (1)", msg)
    expect_fail(reseal(newer), "v7b.ckpt", "checkpoint format version 7 is newer than this nasrt (1)")
  end)

  it("rejects every truncation of a checkpoint", function()
    for n = 0, #image - 1 do
      expect_fail(image:sub(1, n), "trunc.ckpt", "truncated")
    end
  end)

  it("rejects every flipped byte (checksum, header checks)", function()
    for i = 1, #image do
      for _, mask in ipairs({0x01, 0x80, 0xFF}) do
        local b = image:byte(i) ~ mask
        local bad = image:sub(1, i - 1) .. string.char(b) .. image:sub(i + 1)
        local msg = expect_fail(bad, "flip.ckpt")
        if i > 20 and i <= #image - 4 then
          assert.is_truthy(msg:find("checksum mismatch: file is corrupt or half-written", 1, true), msg)
        end
      end
    end
  end)

  it("rejects appended bytes and a never-completed header", function()
    expect_fail(image .. "x", "long.ckpt", "unexpected bytes")
    local half = image:sub(1, 12) .. string.rep("\0", 8) .. image:sub(21)
    expect_fail(half, "half.ckpt", "half-written")
  end)

  it("never crashes on a corrupt payload with a valid checksum", function()
    local rnd = 12345
    local function rand(n) rnd = (rnd * 1103515245 + 12345) % 2147483648; return rnd % n end
    local loaded, failed = 0, 0
    for i = 21, #image - 4 do
      for _ = 1, 3 do
        local bad = image:sub(1, i - 1) .. string.char(rand(256)) .. image:sub(i + 1)
        local p = P("forged.ckpt")
        write_bytes(p, reseal(bad))
        local v, msg = nasrt.load(p)
        if v == nil then
          failed = failed + 1
          assert.is_truthy(msg:find(p, 1, true), msg)
        else
          loaded = loaded + 1 -- e.g. a changed number: still a valid checkpoint
        end
      end
    end
    assert.is_true(failed > 0)
    -- garbage of every small size behind a valid header
    for n = 0, 64 do
      local junk = {}
      for k = 1, n do junk[k] = string.char(rand(256)) end
      local body = "NASRTCK1" .. string.pack("<I4I8", 1, n) .. table.concat(junk)
      local p = P("junk.ckpt")
      write_bytes(p, body .. string.pack("<I4", crc32(body)))
      local v, msg = nasrt.load(p)
      assert.is_true(v ~= nil or msg:find(p, 1, true) ~= nil)
    end
  end)
end)

describe("nasrt.save atomicity", function()
  it("is not broken by stale temp files left from a crash", function()
    local path = P("stale.ckpt")
    assert.is_true(nasrt.save(path, {v = 1}))
    local mine = path .. ".tmp." .. pid()
    write_bytes(mine, "half a checkpoint from a crashed run")
    os.execute("chmod 444 '" .. mine .. "'")
    write_bytes(path .. ".tmp.1", "another process's leftovers")
    -- the good checkpoint is unaffected by the debris...
    assert.are.equal(1, nasrt.load(path).v)
    -- ...and the next save goes through
    assert.is_true(nasrt.save(path, {v = 2}))
    assert.are.equal(2, nasrt.load(path).v)
    assert.is_false(exists(mine))
  end)

  it("a half-written temp file never replaces the previous checkpoint", function()
    local path = P("half.ckpt")
    assert.is_true(nasrt.save(path, {v = "good", w = nasrt.randn({100})}))
    local good = read_bytes(path)
    -- what a crash between write and rename leaves behind
    write_bytes(path .. ".tmp." .. pid(), good:sub(1, #good // 2))
    assert.are.equal("good", nasrt.load(path).v)
    assert.are.equal(good, read_bytes(path))
    local v, msg = nasrt.load(path .. ".tmp." .. pid())
    assert.is_nil(v)
    assert.is_truthy(msg:find("truncated", 1, true), msg)
  end)

  it("a process killed while saving leaves the old or the new checkpoint, never a mix", function()
    local path = P("killed.ckpt")
    assert.is_true(nasrt.save(path, {gen = 0}))
    local lua = "lua5.4"
    local script = P("saver.lua")
    write_bytes(script, ([[
      package.cpath = %q .. ";" .. package.cpath
      package.path = %q .. ";" .. package.path
      local nasrt = require "nasrt"
      local big = nasrt.randn({512, 1024})
      for gen = 1, 1000000 do assert(nasrt.save(%q, {gen = gen, w = big})) end
    ]]):format(package.cpath, package.path, path))
    local last = 0
    for _, delay in ipairs({"0.3", "0.6", "1.5"}) do
      os.execute("timeout -s KILL " .. delay .. " " .. lua .. " '" .. script .. "' 2>/dev/null")
      local ck, msg = nasrt.load(path)
      assert.is_not_nil(ck, msg)
      assert.are.equal("integer", math.type(ck.gen))
      if ck.gen > 0 then assert.are.same({512, 1024}, ck.w:shape()) end
      last = ck.gen
    end
    assert.is_true(last > 0, "the child process never completed a save")
  end)

  it("returns nil, message (naming the file) when the folder does not exist", function()
    local path = P("no/such/folder/x.ckpt")
    local ok, msg = nasrt.save(path, {v = 1})
    assert.is_nil(ok)
    assert.is_truthy(msg:find(path, 1, true), msg)
  end)
end)
