-- Writes the seed corpora of tests/fuzz/corpus/<target>/ (small, valid
-- files of each format plus a few near misses).  Run from the source root:
--   ./build/nasrt tests/fuzz/make_seeds.lua
-- The corpora in the repo are these seeds plus what libFuzzer found and
-- `scripts/fuzz.sh --merge` kept (regression inputs are named reg-*).
local nasrt = require "nasrt"
local recipe = require "nasrt.recipe"

local root = "tests/fuzz/corpus"
local function write(target, name, bytes)
  os.execute(("mkdir -p %s/%s"):format(root, target))
  local f = assert(io.open(("%s/%s/%s"):format(root, target, name), "wb"))
  f:write(bytes)
  f:close()
end
local u32be = function(v) return string.pack(">I4", v) end

-- IDX: magic 0x0000080<ndim>, big-endian u32 dims, the bytes.
write("idx", "labels-3", "\0\0\8\1" .. u32be(3) .. "\0\9\5")
write("idx", "images-2x2x2", "\0\0\8\3" .. u32be(2) .. u32be(2) .. u32be(2) .. "\0\1\2\3\4\5\6\255")
write("idx", "images-0x28x28", "\0\0\8\3" .. u32be(0) .. u32be(28) .. u32be(28))
write("idx", "fmnist-header", "\0\0\8\3" .. u32be(10000) .. u32be(28) .. u32be(28) .. ("\0"):rep(16))
write("idx", "labels-int32", "\0\0\12\1" .. u32be(1) .. "\0\0\0\1")

-- CIFAR: CIFAR-10 records are label + 3072 pixels, CIFAR-100 coarse + fine + 3072.
local function pixels(seed)
  local t = {}
  for i = 1, 3072 do t[i] = string.char((i * 7 + seed * 13) % 256) end
  return table.concat(t)
end
write("cifar", "c10-1", "\3" .. pixels(1))
write("cifar", "c100-1", "\4\42" .. pixels(2))
write("cifar", "c10-bad-label", "\10" .. pixels(3))

-- npy: version 1.0/2.0 headers, several dtypes; the data follows the
-- header, padded with spaces to 64 bytes and ending in '\n'.
local function npy(dict, data, major)
  major = major or 1
  local pre = major == 1 and 10 or 12
  local hlen = #dict + 1
  local total = (pre + hlen + 63) // 64 * 64
  dict = dict .. (" "):rep(total - pre - hlen) .. "\n"
  local len = major == 1 and string.pack("<I2", #dict) or string.pack("<I4", #dict)
  return "\147NUMPY" .. string.char(major, 0) .. len .. dict .. data
end
write("npy", "f4-2x3", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
  string.pack("<ffffff", 1, 2, 3, 4, 5, 6)))
write("npy", "f8-scalar", npy("{'descr': '<f8', 'fortran_order': False, 'shape': (), }",
  string.pack("<d", 0.5)))
write("npy", "i8-3", npy("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }",
  string.pack("<i8i8i8", -1, 0, 7)))
write("npy", "b1-2-v2", npy("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }",
  "\1\0", 2))
write("npy", "u2-big-endian", npy("{'descr': '>u2', 'fortran_order': False, 'shape': (1, 2), }",
  string.pack(">I2I2", 1, 65535)))
write("npy", "f4-empty", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }", ""))

-- checkpoints: what nasrt.save writes.
local tmp = os.tmpname()
local function ckpt(name, t)
  assert(nasrt.save(tmp, t))
  local f = assert(io.open(tmp, "rb"))
  write("ckpt", name, f:read("a"))
  f:close()
end
ckpt("scalars", { step = 3, lr = 0.025, name = "darts", done = false, [1] = true })
ckpt("tensors", { w = nasrt.tensor { { 1, 2 }, { 3, 4 } }, b = nasrt.zeros { 0 },
  s = nasrt.tensor(2.5), g = nasrt.ones { 2, 1, 2 }:requires_grad(true) })
ckpt("nested", { model = { layer = { weight = nasrt.ones { 3 } } }, opt = { { 1, 2 }, { m = -0.0 } },
  rng = { 1, 2, 3, 4 }, bytes = "a\0b" })
os.remove(tmp)

-- architecture text: DARTS genotypes (DARTS_V2 of genotypes.py, one with
-- range), AGNAS cell types, Att-DARTS triples, NB201 strings, macro paths.
local V2 = "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), " ..
  "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), " ..
  "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), " ..
  "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), " ..
  "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
write("arch", "darts-v2", "DARTS_V2 = " .. V2)
write("arch", "small-range", "Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1)], " ..
  "normal_concat=range(2, 3), reduce=[('max_pool_3x3', 0), ('avg_pool_3x3', 1)], reduce_concat=range(2, 3))")
write("arch", "agnas-list", "[Normal_Genotype(normal=[('sep_conv_5x5', 1), ('dil_conv_5x5', 0)], " ..
  "normal_concat=[2]), Reduce_Genotype(reduce=[('max_pool_3x3', 0), ('none', 1)], reduce_concat=[2])]")
write("arch", "att-darts", "Genotype(normal=[('sep_conv_3x3', 0, 'SE'), ('skip_connect', 1, 'CBAM')], " ..
  "normal_concat=[2], reduce=[('max_pool_3x3', 0, ''), ('skip_connect', 1, 'SE')], reduce_concat=[2], " ..
  "normal_bottleneck='', reduce_bottleneck='')")
write("arch", "nb201", "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
write("arch", "nb201-none", "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
write("arch", "macro", "macro: 0, 3, 1, 2")
write("arch", "multiline", "# genotype file\n\n" .. V2 .. "\n")

-- JSON: arch.json of each kind, a config.json, a log line.
local g = nasrt.supernet.genotype_from_string(V2)
write("json", "arch-darts", recipe.encode { type = "darts", method = "darts", genotype = g,
  genotype_text = V2 })
write("json", "arch-nb201", recipe.encode { type = "nb201", genes = { 4, 4, 5, 2, 4, 2 },
  arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|" })
write("json", "arch-macro", recipe.encode { type = "agnas_macro", arch = { 1, 0, 2 },
  supernet = { layers = 3 }, text = "macro: 1, 0, 2" })
write("json", "arch-cell-types", recipe.encode { cell_types = { g, g, g, g, g } })
write("json", "config", recipe.encode { seed = 1, lr = 0.025, epochs = 2, data = "fashion_mnist",
  tiny = true, out = "runs" })
write("json", "log-line", '{"step":10,"loss":2.3025,"acc":0.1,"lr":[0.025,1e-3],"ok":true,"x":null}')
print("seeds written to " .. root)
