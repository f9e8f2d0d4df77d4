-- nasrt.interop: architectures as JSON / text / files read back to the
-- same description (NB201 strings, DARTS and Att-DARTS genotypes, AGNAS's
-- five cell types, macro paths), and weights as one .npy per tensor with a
-- manifest, read back bit for bit (and by numpy, #slow).
local nasrt = require "nasrt"
local interop = require "nasrt.interop"
local bench = require "nasrt.bench"
local lfs = require "lfs"
local json = require "dkjson"

local sn = nasrt.supernet

local root
local function tmpdir(tag)
  if not root then
    root = os.tmpname()
    os.remove(root)
    assert(lfs.mkdir(root))
  end
  local d = root .. "/" .. tag
  assert(lfs.mkdir(d))
  return d
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- every way out and back in: text, JSON text, decoded JSON, .json and .txt files
local function round_trips(a, tag)
  local dir = tmpdir(tag)
  local text = interop.arch_to_text(a)
  local jtext, rec = interop.arch_to_json(a)
  local back = {
    assert(interop.arch_from_text(text)),
    assert(interop.arch_from_json(jtext)),
    assert(interop.arch_from_json(json.decode(jtext))),
    interop.arch(text),
  }
  assert.is_true(interop.save_arch(dir .. "/arch.json", a))
  assert.is_true(interop.save_arch(dir .. "/arch.txt", a))
  back[#back + 1] = assert(interop.load_arch(dir .. "/arch.json"))
  back[#back + 1] = assert(interop.load_arch(dir .. "/arch.txt"))
  assert.are.equal(text .. "\n", read(dir .. "/arch.txt"))
  assert.are.same(json.decode(jtext), json.decode(read(dir .. "/arch.json")))
  assert.are.equal(text, rec.text)
  return back, rec
end

describe("nasrt.interop architectures", function()
  it("round-trips NAS-Bench-201 strings through text, JSON and files", function()
    local b = assert(bench.nb201())
    for _, i in ipairs {0, 1835, 6999, 13714, 15624} do
      local s = b:arch(i)
      local a = interop.arch(s)
      assert.are.equal("nb201", a.kind)
      assert.are.equal(s, tostring(a))
      local back, rec = round_trips(a, "nb201-" .. i)
      assert.are.equal("nb201", rec.type)
      assert.are.same(bench.nb201_encode(s), rec.genes)
      for _, x in ipairs(back) do
        assert.are.equal("nb201", x.kind)
        assert.are.equal(s, x.arch)
        assert.are.same(rec.genes, x.genes)
      end
    end
    -- the arch.json the baseline and AGNAS nb201 recipes write
    local s = b:arch(13714)
    local a = assert(interop.arch_from_json { type = "nb201", space = "nb201", arch = s,
                                             genotype = { { "nor_conv_3x3", 0 } }, C = 8, N = 1 })
    assert.are.equal(s, a.arch)
  end)

  it("round-trips DARTS and Att-DARTS genotypes", function()
    for _, name in ipairs { "DARTS_V1", "DARTS_V2", "Att_DARTS" } do
      local g = sn.darts_genotypes[name]
      local a = interop.arch(g)
      assert.are.equal("darts", a.kind)
      assert.are.same(g, a.genotype)
      local back, rec = round_trips(a, "darts-" .. name)
      assert.are.equal("darts", rec.type)
      assert.are.equal(sn.genotype_to_string(g), rec.genotype_text)
      for _, x in ipairs(back) do assert.are.same(g, x.genotype) end
    end
    -- DARTS' own printed form (a genotypes.py line) reads the same
    local v2 = assert(interop.arch_from_text("DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), " ..
      "('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), " ..
      "('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], " ..
      "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), " ..
      "('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], " ..
      "reduce_concat=[2, 3, 4, 5])"))
    assert.are.same(sn.darts_genotypes.DARTS_V2, v2.genotype)
    -- the Att-DARTS attention of edge 1 survives JSON
    local _, rec = interop.arch_to_json(sn.darts_genotypes.Att_DARTS)
    assert.are.same({ "sep_conv_3x3", 0, "DoubleAttention" }, rec.genotype.normal[1])
  end)

  it("round-trips AGNAS's five cell types and per-cell genotype lists", function()
    local types = sn.darts_genotypes.AGNAS
    assert.are.equal(5, #types)
    local a = interop.arch(types)
    assert.are.equal("darts", a.kind)
    local back, rec = round_trips(a, "agnas5")
    assert.are.equal("darts_cells", rec.type)
    assert.are.equal(5, #rec.cell_types)                -- what recipes/train.lua --arch reads
    assert.is_nil(rec.genotypes)
    for _, x in ipairs(back) do assert.are.same(types, x.genotype) end
    assert.are.equal(2, (interop.arch_to_text(a):find("Normal_Genotype(normal=[('sep_conv_3x3', 0)", 1, true)))
    -- the agnas recipe's micro arch.json: 8 per-cell genotypes plus the 5 types
    local per = { types[1], types[1], types[2], types[3], types[3], types[4], types[5], types[5] }
    local x = assert(interop.arch_from_json { type = "agnas", space = "micro", genotypes = per,
                                             cell_types = types, cell_type_cells = { 0, 2, 3, 5, 6 } })
    assert.are.same(types, x.genotype)
    -- without the five types: one genotype per cell
    local y = assert(interop.arch_from_json { type = "agnas", genotypes = per })
    assert.are.same(per, y.genotype)
    local _, prec = interop.arch_to_json(y)
    assert.are.equal(8, #prec.genotypes)
    assert.is_nil(prec.cell_types)
    local back2 = round_trips(y, "agnas8")
    for _, z in ipairs(back2) do assert.are.same(per, z.genotype) end
  end)

  it("round-trips macro paths with their block names and supernet layout", function()
    local layout = { stages = { { 2, 16, 2 }, { 2, 24, 2 } }, stem = 8, first_block = 8, head = 64,
                     input_size = 28 }
    local names = { "mobilenet_3x3_ratio_3", "skip", "mobilenet_7x7_ratio_6", "mobilenet_5x5_ratio_3" }
    local a = assert(interop.arch_from_json { type = "agnas_macro", space = "macro", arch = { 1, 7, 6, 3 },
                                             names = names, supernet = layout, text = "macro:1,7,6,3" })
    assert.are.equal("macro", a.kind)
    assert.are.equal("macro:1,7,6,3", tostring(a))
    local _, rec = interop.arch_to_json(a)
    assert.are.equal("agnas_macro", rec.type)
    assert.are.same(layout, rec.supernet)
    local back = round_trips(a, "macro")
    -- JSON and its file keep names and layout; the text keeps the path only
    for k, x in ipairs(back) do
      assert.are.same({ 1, 7, 6, 3 }, x.arch)
      if k == 2 or k == 3 or k == 5 then
        assert.are.same(names, x.names)
        assert.are.same(layout, x.layout)
      end
    end
    local bare = interop.arch { 2, 1, 0 }
    assert.are.equal("macro:2,1,0", tostring(bare))
    assert.are.equal("macro", (select(2, interop.arch_to_json(bare))).type)
    assert.are.same({ 2, 1, 0 }, interop.arch("2, 1, 0").arch)
  end)

  it("reports what it cannot read", function()
    local bad = {
      { interop.arch_from_text("|nor_conv_3x3~0|+|none~0|"), "arch_from_text: bad NAS-Bench-201 arch string" },
      { interop.arch_from_text("Genotype(normal=[('sep_conv_3x3', 0)]"), "arch_from_text: not an NB201 string" },
      { interop.arch_from_text("macro:1,x,3"), "macro path entry 2 is x" },
      { interop.arch_from_json("{"), "arch_from_json: bad JSON" },
      { interop.arch_from_json { type = "what" }, "arch_from_json: the record holds no architecture I know (type what)" },
      { interop.arch_from_json { type = "nb201", arch = 3 }, "an nb201 record needs an 'arch' string" },
      { interop.arch_from_json { type = "macro", arch = { 1, 2 }, names = { "a" } }, "one block name per layer (2)" },
      { interop.load_arch("/nonexistent/arch.json"), "arch_from_text" },
    }
    for _, case in ipairs(bad) do
      assert.is_nil(case[1])
      assert.matches(case[3] or case[2], case[2], 1, true)
    end
    local raising = {
      { function() interop.arch(42) end, "arch: expected an architecture" },
      { function() interop.arch { kind = "nb101" } end, "arch: unknown kind nb101" },
      { function() interop.arch("|x~0|") end, "arch_from_text: bad NAS-Bench-201" },
      { function() interop.save_arch("x.bin", "|x~0|") end, "arch_from_text" },
      { function() interop.save_arch("x.json", bench.nb201():arch(0), "yaml") end, "save_arch: format must be json or text" },
      { function() interop.arch_from_text(5) end, "arch_from_text: expected a string" },
    }
    for _, case in ipairs(raising) do
      local ok, err = pcall(case[1])
      assert.is_false(ok)
      assert.matches(case[2], tostring(err), 1, true)
    end
    local ok, err = interop.save_arch("/nonexistent/dir/arch.json", bench.nb201():arch(0))
    assert.is_nil(ok)
    assert.matches("save_arch: ", err, 1, true)
  end)
end)

-- ------------------------------------------------------------------ weights

local function small_darts(seed)
  nasrt.manual_seed(seed)
  return sn.darts_network(sn.darts_genotypes.DARTS_V2, { C = 4, layers = 3, in_channels = 1 })
end

local function bits(t)
  local out = {}
  for i, v in ipairs(t:reshape(-1):totable()) do out[i] = string.pack("<f", v) end
  return table.concat(out)
end

describe("nasrt.interop weights (.npy per tensor)", function()
  it("exports a DARTS network and imports it into another bit for bit", function()
    local dir = tmpdir("darts-w")
    local net = small_darts(1)
    -- run a training forward so the BN buffers are not their initial values
    net:train()
    net(nasrt.randn({ 2, 1, 28, 28 }))
    local m = assert(net:export_npy(dir))
    local sd, keys = net:state_dict()
    assert.are.equal(#keys, #m.tensors)
    assert.are.equal("nasrt-npy", m.format)
    assert.are.equal(net:num_parameters(), m.num_parameters)
    local nparam = 0
    for i, t in ipairs(m.tensors) do
      assert.are.equal(keys[i], t.name)
      assert.are.equal(keys[i] .. ".npy", t.file)       -- named by the parameter path
      assert.are.same(sd[keys[i]]:shape(), t.shape)
      assert.is_truthy(lfs.attributes(dir .. "/" .. t.file))
      if t.kind == "parameter" then nparam = nparam + 1 end
    end
    assert.are.equal(#net:parameters(), nparam)
    local manifest = json.decode(read(dir .. "/manifest.json"))
    assert.are.equal(#keys, #manifest.tensors)

    local other = small_darts(2)
    local osd = other:state_dict()
    assert.are_not.equal(bits(sd["stem.1.weight"]), bits(osd["stem.1.weight"]))
    local res = assert(other:import_npy(dir))
    assert.are.same({}, res.missing_keys)
    assert.are.same({}, res.unexpected_keys)
    osd = other:state_dict()
    for _, k in ipairs(keys) do assert.are.equal(bits(sd[k]), bits(osd[k]), k) end
    -- and so the same outputs
    net:eval()
    other:eval()
    local x = nasrt.randn({ 3, 1, 28, 28 })
    assert.are.equal(bits(net(x)), bits(other(x)))
  end)

  it("writes standard numpy files ('<f4', C order, the tensor's shape)", function()
    local dir = tmpdir("npy-format")
    local lin = nasrt.nn.Linear(3, 2)
    nasrt.no_grad(function() lin.weight:copy_(nasrt.tensor { { 1.5, -2, 0.25 }, { 3, 4, 5 } }) end)
    assert(interop.export_npy(lin, dir))
    local s = read(dir .. "/weight.npy")
    assert.are.equal("\147NUMPY\1\0", s:sub(1, 8))
    local hlen = string.unpack("<I2", s, 9)
    local header = s:sub(11, 10 + hlen)
    assert.matches("'descr': '<f4'", header, 1, true)
    assert.matches("'fortran_order': False", header, 1, true)
    assert.matches("'shape': (2, 3)", header, 1, true)
    assert.are.equal(0, (10 + hlen) % 64)               -- numpy aligns the data
    assert.are.equal(4 * 6, #s - 10 - hlen)
    local v = { string.unpack("<ffffff", s, 11 + hlen) }
    assert.are.equal(#s + 1, table.remove(v))           -- unpack's next position: the end
    assert.are.same({ 1.5, -2, 0.25, 3, 4, 5 }, v)
  end)

  it("imports a folder of <key>.npy files without a manifest, and checks shapes", function()
    local dir = tmpdir("no-manifest")
    local a, b = nasrt.nn.Linear(4, 3), nasrt.nn.Linear(4, 3)
    assert(a:export_npy(dir))
    os.remove(dir .. "/manifest.json")
    assert(b:import_npy(dir))
    assert.are.equal(bits(a.weight), bits(b.weight))
    assert.are.equal(bits(a.bias), bits(b.bias))
    -- a file of another shape: load_state_dict's size mismatch
    assert(nasrt.io.save_npy(dir .. "/bias.npy", nasrt.zeros({ 5 })))
    local ok, err = pcall(b.import_npy, b, dir)
    assert.is_false(ok)
    assert.matches("size mismatch for bias", tostring(err), 1, true)
    -- a missing key is an error in strict mode only
    os.remove(dir .. "/bias.npy")
    ok, err = pcall(b.import_npy, b, dir)
    assert.is_false(ok)
    assert.matches("missing key(s) in state_dict: bias", tostring(err), 1, true)
    local res = assert(b:import_npy(dir, false))
    assert.are.same({ "bias" }, res.missing_keys)
  end)

  it("reports unreadable folders and files, and misuse", function()
    local dir = tmpdir("broken")
    local lin = nasrt.nn.Linear(2, 2)
    assert(lin:export_npy(dir))
    local f = assert(io.open(dir .. "/weight.npy", "wb"))
    f:write("not numpy")
    f:close()
    local ok, err = lin:import_npy(dir)
    assert.is_nil(ok)
    assert.matches("import_npy: load_npy", err, 1, true)
    ok, err = lin:import_npy(dir .. "/missing")
    assert.is_nil(ok)
    assert.matches("is not a folder", err, 1, true)
    f = assert(io.open(dir .. "/manifest.json", "wb"))
    f:write('{"tensors": [{"name": "weight"}]}')
    f:close()
    ok, err = lin:import_npy(dir)
    assert.is_nil(ok)
    assert.matches("tensors[1] needs a name and a file", err, 1, true)
    -- the manifest's shape is checked against the file
    assert(lin:export_npy(dir))
    local m = json.decode(read(dir .. "/manifest.json"))
    m.tensors[1].shape = { 9, 9 }
    f = assert(io.open(dir .. "/manifest.json", "wb"))
    f:write(json.encode(m))
    f:close()
    ok, err = lin:import_npy(dir)
    assert.is_nil(ok)
    assert.matches("the manifest says [9,9]", err, 1, true)
    ok, err = lin:export_npy("/proc/nasrt-cannot-write")
    assert.is_nil(ok)
    assert.matches("export_npy: ", err, 1, true)
    for _, case in ipairs {
      { function() interop.export_npy({}, dir) end, "export_npy: expected an nn module" },
      { function() interop.import_npy(42, dir) end, "import_npy: expected an nn module" },
      { function() lin:export_npy(7) end, "export_npy: dir must be a folder path" },
    } do
      local okc, e = pcall(case[1])
      assert.is_false(okc)
      assert.matches(case[2], tostring(e), 1, true)
    end
  end)

  it("loads in numpy with the manifest's names and shapes #slow", function()
    local py = "/usr/bin/python3"
    if not lfs.attributes(py) or os.execute(py .. " -c 'import numpy' 2>/dev/null") ~= true then
      pending("needs /usr/bin/python3 with numpy (python3-numpy)")
      return
    end
    local dir = tmpdir("numpy")
    local net = small_darts(3)
    assert(net:export_npy(dir))
    local script = dir .. "/check.py"
    local f = assert(io.open(script, "w"))
    f:write([[
import json, sys
import numpy as np
d = sys.argv[1]
m = json.load(open(d + "/manifest.json"))
n = 0
for t in m["tensors"]:
    a = np.load(d + "/" + t["file"])
    assert a.dtype == np.float32 and list(a.shape) == t["shape"], t["name"]
    n += a.size
w = np.load(d + "/stem.1.weight.npy")
print(len(m["tensors"]), n, repr(float(w[0, 0, 1, 2])), repr(float(w.astype(np.float64).sum())))
]])
    f:close()
    local p = assert(io.popen(("%s %s %s"):format(py, script, dir)))
    local out = p:read("a")
    p:close()
    local count, total, w012, wsum = out:match("^(%d+) (%d+) (%S+) (%S+)")
    assert.is_truthy(count, out)
    local sd, keys = net:state_dict()
    assert.are.equal(#keys, tonumber(count))
    local numel = 0
    for _, k in ipairs(keys) do numel = numel + sd[k]:numel() end
    assert.are.equal(numel, tonumber(total))
    local w = sd["stem.1.weight"]
    assert.are.equal(w:get(1, 1, 2, 3), tonumber(w012))  -- numpy [0,0,1,2], exact float32
    local s = 0
    for _, v in ipairs(w:reshape(-1):totable()) do s = s + v end
    assert.is_true(math.abs(s - tonumber(wsum)) < 1e-9)
  end)
end)
