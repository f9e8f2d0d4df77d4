-- nasrt.supernet, NAS-Bench-201 part: arch strings, the stand-alone
-- network and its cost against the official records (data/nb201), and the
-- search supernet in its darts / gdas / path / agnas modes.
local nasrt = require "nasrt"
local sn = nasrt.supernet
local F = nasrt.F
local bench_ok, bench = pcall(require, "nasrt.bench")
if not (bench_ok and type(bench) == "table" and bench.parse_nb201) then bench = nil end

local PRIMS = { "none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3" }
local CELL0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
local BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"

-- ------------------------------------------------------------ data files

local function data_dir()
  for _, d in ipairs { "data/nb201", "../shared/data/nb201", "/work/shared/data/nb201" } do
    local f = io.open(d .. "/tss_3arch_summary.json", "rb")
    if f then f:close() return d end
  end
  error("data/nb201 not found")
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- official records: list of {arch=, dataset=, params=, flops=} (deduplicated)
local function official_records()
  local text = slurp(data_dir() .. "/tss_3arch_summary.json")
  local out, seen = {}, {}
  for _, body in text:gmatch('"(%d+)": (%b{})') do
    local arch = body:match('"arch_str": "([^"]+)"')
    for ds, p, f in body:gmatch('"dataset": "([^"]+)",%s*"seed": %d+,%s*"epochs_planned": %d+,' ..
                                '%s*"params_MB": ([%d.]+),%s*"flops_M": ([%d.]+)') do
      local key = arch .. ds
      if not seen[key] then
        seen[key] = true
        out[#out + 1] = { arch = arch, dataset = ds, params = tonumber(p), flops = tonumber(f) }
      end
    end
  end
  return out
end

-- NASLib's 725-cell subset: ops skip_connect, none, nor_conv_3x3,
-- nor_conv_1x1, avg_pool_3x3 as 0..4 on its edges (1,2),(1,3),(1,4),(2,3),
-- (2,4),(3,4); official edge e is tuple entry NASLIB_EDGE[e] (data README).
local NASLIB_OPS = { "skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3" }
local NASLIB_EDGE = { 1, 2, 4, 3, 5, 6 }
local function naslib_records()
  local text = slurp(data_dir() .. "/naslib_zc_nasbench201_subset725.json")
  local out = {}
  for ds, body in text:gmatch('"([%w%-]+)": (%b{})') do
    local list = {}
    for t1, t2, t3, t4, t5, t6, entry in body:gmatch(
        '"%((%d), (%d), (%d), (%d), (%d), (%d)%)": (%b{})') do
      local t = { tonumber(t1), tonumber(t2), tonumber(t3), tonumber(t4), tonumber(t5), tonumber(t6) }
      local ops = {}
      for e = 1, 6 do ops[e] = NASLIB_OPS[t[NASLIB_EDGE[e]] + 1] end
      list[#list + 1] = {
        ops = ops,
        params = tonumber(entry:match('"params": {"score": ([^,}]+)')),
        flops = tonumber(entry:match('"flops": {"score": ([^,}]+)')),
      }
    end
    out[ds] = list
  end
  return out
end

local function rel(a, b) return math.abs(a - b) / math.abs(b) end

local function count(ops, name)
  local n = 0
  for _, o in ipairs(ops) do if o == name then n = n + 1 end end
  return n
end

-- ------------------------------------------------------------ arch strings

describe("nasrt.supernet.nb201_arch", function()
  it("round-trips all 15625 cells between op indices and arch strings", function()
    local idx = { 1, 1, 1, 1, 1, 1 }
    local n = 0
    repeat
      local s = select(2, sn.nb201_arch(idx))
      local back, s2 = sn.nb201_arch(s)
      assert.are.same(idx, back)
      assert.are.equal(s, s2)
      if bench then
        assert.are.equal(s, bench.nb201_string(bench.parse_nb201(s)))
        assert.are.same(idx, bench.nb201_encode(s))
      end
      n = n + 1
      local e = 1
      while e <= 6 do
        idx[e] = idx[e] + 1
        if idx[e] <= 5 then break end
        idx[e] = 1
        e = e + 1
      end
    until e > 6
    assert.are.equal(15625, n)
  end)

  it("accepts op names and {op, j} pairs and prints the official format", function()
    local names = { "nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_1x1",
                    "nor_conv_3x3" }
    assert.are.equal(BEST, select(2, sn.nb201_arch(names)))
    local pairs_ = {}
    for e, nm in ipairs(names) do pairs_[e] = { nm, ({ 0, 0, 1, 0, 1, 2 })[e] } end
    assert.are.equal(BEST, select(2, sn.nb201_arch(pairs_)))
    assert.are.same({ 4, 4, 4, 2, 3, 4 }, (sn.nb201_arch(BEST)))
    if bench then assert.are.same(bench.parse_nb201(BEST), pairs_) end
  end)

  it("rejects bad arch strings with errors naming the function", function()
    local bad = {
      "", "|nor_conv_3x3~0|", "|nor_conv_3x3~0|+|nor_conv_3x3~0|+|none~0|none~1|none~2|",
      "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
      "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
      "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|none~3|",
      "|none~0|+|none~0|none~1|+|none~0|none~1|none~2",
    }
    for _, s in ipairs(bad) do
      assert.has_error(function() sn.nb201_network(s) end)
      local ok, err = pcall(sn.nb201_network, s)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("nb201_network: ", 1, true), err)
      ok, err = pcall(sn.nb201_cost, s)
      assert.truthy(tostring(err):find("nb201_cost: ", 1, true), err)
    end
    local ok, err = pcall(sn.nb201_network, 42)
    assert.is_false(ok)
    assert.truthy(err:find("nb201_network: ", 1, true))
    ok, err = pcall(sn.nb201_network, { 1, 2, 3, 4, 5 })
    assert.truthy(err:find("6 edges", 1, true))
    ok, err = pcall(sn.nb201_network, { 1, 2, 3, 4, 5, 6 })
    assert.truthy(err:find("out of range", 1, true))
    ok, err = pcall(sn.nb201_network, CELL0, { classes = 0 })
    assert.truthy(err:find("nb201_network: classes", 1, true))
    ok, err = pcall(sn.nb201_network, CELL0, { channels = 3 })
    assert.truthy(err:find("unknown option 'channels'", 1, true))
  end)
end)

-- ------------------------------------------------------------ cost

describe("nasrt.supernet.nb201_network cost", function()
  it("matches cell 0's official values on CIFAR-10", function()
    local c = sn.nb201_cost(CELL0)
    assert.are.equal(129306, c.n_params)
    assert.are.equal(15647370, c.n_flops)
    assert.is_true(rel(c.params, 0.129306) < 1e-9)
    assert.is_true(math.abs(c.flops - 15.647) < 5e-4)
    local net = sn.nb201_network(CELL0, { classes = 10, in_channels = 3 })
    assert.are.equal(129306, net:num_parameters())
    assert.are.equal(15647370, net:macs({ 1, 3, 32, 32 }, { bias = true }))
  end)

  it("matches every official NATS-Bench record (cells 0, 11, 284; 3 datasets)", function()
    local recs = official_records()
    local n = 0
    for _, r in ipairs(recs) do
      local c = sn.nb201_cost(r.arch, { dataset = r.dataset })
      assert.is_true(rel(c.params, r.params) < 1e-4, r.arch .. " " .. r.dataset)
      assert.is_true(rel(c.flops, r.flops) < 1e-4, r.arch .. " " .. r.dataset)
      -- the records print 6 (params) and 5 (flops) decimals: exact to that
      assert.is_true(math.abs(c.params - r.params) < 6e-7)
      assert.is_true(math.abs(c.flops - r.flops) < 6e-6)
      n = n + 1
    end
    assert.is_true(n >= 12, "records found: " .. n)   -- 3 cells x 4 dataset names
  end)

  it("matches NASLib's params for its 725 cells on CIFAR-10, CIFAR-100 and ImageNet16-120", function()
    local all = naslib_records()
    local datasets = { cifar10 = 1, cifar100 = 1, ["ImageNet16-120"] = 1 }
    local total = 0
    for ds in pairs(datasets) do
      local list = assert(all[ds], ds)
      assert.is_true(#list >= 724)
      for _, r in ipairs(list) do
        local c = sn.nb201_cost(r.ops, { dataset = ds })
        assert.is_true(rel(c.params, r.params) < 1e-4, ds)
        assert.is_true(math.abs(c.params - r.params) < 6e-7, ds)
        total = total + 1
      end
    end
    assert.is_true(total >= 2170)
  end)

  it("agrees with NASLib's FLOPs for all its cells once its extra element-wise terms are added", function()
    -- NASLib's own FLOPs counter also charges ReLU (1) + affine BN (2) per
    -- output element of each conv op and 9 per output element of each 3x3
    -- avg pool, plus a skeleton constant; with those terms the difference
    -- to the official count is one constant per dataset for all cells, so
    -- every cell's conv FLOPs agree.
    local all = naslib_records()
    local cfg = { cifar10 = 32, cifar100 = 32, ["ImageNet16-120"] = 16 }
    for ds, size in pairs(cfg) do
      local per_op = 5 * 16 * size * size * (1 + 1 / 2 + 1 / 4) / 1e6  -- elements per op, 15 cells
      local lo, hi = math.huge, -math.huge
      for _, r in ipairs(all[ds]) do
        local c = sn.nb201_cost(r.ops, { dataset = ds })
        local convs = count(r.ops, "nor_conv_1x1") + count(r.ops, "nor_conv_3x3")
        local d = r.flops - c.flops - per_op * (3 * convs + 9 * count(r.ops, "avg_pool_3x3"))
        lo, hi = math.min(lo, d), math.max(hi, d)
      end
      assert.is_true(hi - lo < 2e-6, ("%s: offset spread %g"):format(ds, hi - lo))
      assert.is_true(lo > 0 and hi < 0.2, ds)
    end
  end)

  it("counts the built modules exactly as the analytic formula (25 cells, 3 datasets, affine off)", function()
    local all = naslib_records()
    local list = all.cifar10
    local checked = 0
    for i = 1, #list, 29 do
      local ops = list[i].ops
      local r = list[i]
      for _, case in ipairs {
        { ds = "cifar10", classes = 10, size = 32 },
        { ds = "ImageNet16-120", classes = 120, size = 16 },
      } do
        local net = sn.nb201_network(ops, { classes = case.classes })
        local c = sn.nb201_cost(ops, { dataset = case.ds })
        assert.are.equal(c.n_params, net:num_parameters())
        assert.are.equal(c.n_flops, net:macs({ 1, 3, case.size, case.size }, { bias = true }))
      end
      assert.is_true(rel(sn.nb201_cost(ops).params, r.params) < 1e-4)
      local net = sn.nb201_network(ops, { affine = false, C = 8, N = 2, classes = 7 })
      local c = sn.nb201_cost(ops, { affine = false, C = 8, N = 2, classes = 7, input_size = 16 })
      assert.are.equal(c.n_params, net:num_parameters())
      assert.are.equal(c.n_flops, net:macs({ 1, 3, 16, 16 }, { bias = true }))
      checked = checked + 1
    end
    assert.is_true(checked >= 25)
  end)
end)

-- ------------------------------------------------------------ stand-alone forward

describe("nasrt.supernet.nb201_network", function()
  it("runs CIFAR-100 and ImageNet16-120 shapes and returns logits and features", function()
    nasrt.manual_seed(1)
    local net = sn.nb201_network(BEST, { classes = 100 })
    local y, f = net(nasrt.randn { 2, 3, 32, 32 })
    assert.are.same({ 2, 100 }, y:shape())
    assert.are.same({ 2, 64 }, f:shape())
    local net16 = sn.nb201_network(CELL0, { classes = 120, C = 8, N = 1 })
    assert.are.same({ 3, 120 }, net16(nasrt.randn { 3, 3, 16, 16 }):shape())
    assert.are.equal(CELL0, net16.arch)
    local ok, err = pcall(net16.forward, net16, nasrt.randn { 1, 1, 16, 16 })
    assert.is_false(ok)
    assert.truthy(err:find("nb201_network:forward", 1, true))
  end)

  it("gives zeros for a node whose inputs are all none", function()
    local s = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    local cell = sn.nb201_InferCell(sn.nb201_arch(s), 4, true, true)
    local y = cell(nasrt.randn { 2, 4, 8, 8 })
    assert.are.equal(0, y:abs():max():item())
  end)
end)

-- ------------------------------------------------------------ search supernet

local ARCHS = {
  BEST, CELL0,
  "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|",
  "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|none~0|nor_conv_1x1~1|none~2|",
  "|none~0|+|avg_pool_3x3~0|none~1|+|none~0|none~1|nor_conv_1x1~2|",
}

local function tiny(mode, extra)
  local o = { C = 4, N = 1, mode = mode }
  for k, v in pairs(extra or {}) do o[k] = v end
  return sn.nb201(o)
end

-- sets alpha to one-hot logits (0 on the chosen op, -1e4 elsewhere):
-- softmax is then exactly 1 and 0
local function set_onehot(net, ops)
  local t = {}
  for e = 1, 6 do
    t[e] = {}
    for k = 1, 5 do t[e][k] = (k == ops[e]) and 0 or -1e4 end
  end
  nasrt.no_grad(function() net.alpha:copy_(nasrt.tensor(t)) end)
end

describe("nasrt.supernet.nb201 (search supernet)", function()
  it("keeps one shared 6x5 alpha out of parameters()", function()
    nasrt.manual_seed(3)
    local net = sn.nb201 {}
    local ap = net:arch_parameters()
    assert.are.equal(1, #ap)
    assert.are.same({ 6, 5 }, ap[1]:shape())
    assert.is_true(ap[1]:abs():max():item() < 0.01)           -- 1e-3 * N(0,1)
    for _, p in ipairs(net:parameters()) do assert.are_not.equal(ap[1], p) end
    local n = 0
    for _, nt in ipairs(net:named_parameters()) do
      assert.is_nil(nt[1]:find("alpha", 1, true))
      n = n + 1
    end
    assert.is_true(n > 0)
    assert.is_not_nil(net:state_dict().alpha)                   -- saved with the weights
    assert.are.equal(net.arch_params, net.arch_parameters)
    -- cells: affine=false BN, so op convs carry a bias; residual blocks affine
    local sd = net:state_dict()
    assert.is_not_nil(sd["cells.1.edges.1.nor_conv_3x3.2.bias"])
    assert.is_nil(sd["cells.1.edges.1.nor_conv_3x3.3.weight"])
    assert.is_not_nil(sd["cells.6.conv_a.3.weight"])
    assert.is_nil(sd["cells.6.conv_a.2.bias"])
    -- every mixed edge has the 5 ops; 15 cells + 2 residual blocks
    assert.are.equal(17, #net.cells)
  end)

  it("in path mode equals the stand-alone network of the path with the same weights", function()
    nasrt.manual_seed(4)
    local net = tiny("path", { C = 4, N = 2 })
    local x = nasrt.randn { 3, 3, 8, 8 }
    for _, arch in ipairs(ARCHS) do
      net:train()
      -- stand-alone with the search's affine=false, weights copied by name
      local alone = sn.nb201_network(arch, { C = 4, N = 2, affine = false })
      alone:load_state_dict(net:path_state_dict(arch))      -- strict: every name matches
      alone:train()
      local ys = net(x, arch)
      local ya = alone(x)
      assert.allclose(ys, ya, 1e-5)
      -- eval with the same (copied) running statistics
      net(x, arch)                                           -- one more batch of statistics
      local ex = net:extract(arch)
      net:eval()
      ex:eval()
      assert.allclose(net(x, arch), ex(x), 1e-5)
      assert.allclose(net(x, sn.nb201_arch(arch)), ex(x), 1e-5)  -- op indices work too
    end
  end)

  it("in path mode equals the stand-alone network at the default size", function()
    nasrt.manual_seed(5)
    local net = sn.nb201 { mode = "path" }
    local ex = net:extract(BEST)
    assert.are.equal(BEST, ex.arch)
    local x = nasrt.randn { 2, 3, 32, 32 }
    assert.allclose(net(x, BEST), ex(x), 1e-5)
    assert.has_error(function() net(x) end)                  -- path mode needs an arch
    local ok, err = pcall(net.forward, net, x, "|bad|")
    assert.is_false(ok)
    assert.truthy(err:find("nb201:forward", 1, true))
  end)

  it("in darts mode with exactly one-hot weights equals path mode", function()
    nasrt.manual_seed(6)
    local net = tiny("darts", { N = 2 })
    local x = nasrt.randn { 2, 3, 8, 8 }
    for _, arch in ipairs(ARCHS) do
      local ops = sn.nb201_arch(arch)
      set_onehot(net, ops)
      local sm = F.softmax(net.alpha, 2):totable()
      for e = 1, 6 do assert.are.equal(1, sm[e][ops[e]]) end
      net:train()
      assert.allclose(net(x), net(x, arch), 1e-6)
      net:eval()
      assert.allclose(net(x), net(x, ops), 1e-6)
    end
  end)

  it("passes a finite-difference check of the alpha gradient (C=4, N=1, 8x8, batch 2)", function()
    -- Central differences in float32 on every alpha entry, loss sum(logits * r).
    -- The tiny network is full of ReLU kinks (and BN over 8 values per
    -- channel in the 2x2 last stage), some within 1e-3 of the point, where a
    -- single step size gives a one-sided slope (the one-sided differences
    -- then disagree); so an entry passes when one of the steps 1e-3, 3e-4,
    -- 1e-4, 3e-5 agrees with the analytic value (ggml's grad_expect idea).
    -- A wrong gradient (wrong row, missing softmax Jacobian, sign) misses
    -- all four by far more than the tolerance.
    local function check(net, x, alpha)
      local r = nasrt.randn(net(x):shape())
      alpha.grad = nil
      local loss = (net(x) * r):sum()
      loss:backward()
      local g = alpha.grad:clone()
      local function f(i, v)
        return nasrt.no_grad(function()
          alpha:set(i, v)
          return (net(x) * r):sum():item()
        end)
      end
      for i = 1, alpha:numel() do
        local v, a = alpha:get(i), g:get(i)
        local best, nums = math.huge, {}
        for _, eps in ipairs { 1e-3, 3e-4, 1e-4, 3e-5 } do
          local num = (f(i, v + eps) - f(i, v - eps)) / (2 * eps)
          nums[#nums + 1] = ("%.5g"):format(num)
          best = math.min(best, math.abs(a - num) / (1e-2 + 5e-2 * math.abs(a)))
        end
        alpha:set(i, v)
        if best > 1 then
          return false, ("alpha entry %d: analytic %.5g, numeric %s"):format(i, a,
            table.concat(nums, " "))
        end
      end
      return true
    end
    nasrt.manual_seed(10)
    local net = tiny("darts")
    nasrt.no_grad(function() net.alpha:copy_(nasrt.randn { 6, 5 }) end)
    local x = nasrt.randn { 2, 3, 8, 8 }
    net:train()
    assert(check(net, x, net.alpha))
    net:eval()
    assert(check(net, x, net.alpha))
  end)

  it("in gdas mode runs the sampled path scaled by the straight-through weight", function()
    local net = tiny("gdas", { N = 2 })
    nasrt.no_grad(function() net.alpha:copy_(nasrt.randn { 6, 5 }) end)
    local x = nasrt.randn { 2, 3, 8, 8 }
    net:eval()
    local seen = {}
    for seed = 1, 8 do
      nasrt.manual_seed(100 + seed)
      net.alpha.grad = nil
      local y = net(x)
      local ks = net.last_arch
      assert.are.equal(6, #ks)
      seen[table.concat(ks, ",")] = true
      -- h_k is 1 in value (up to rounding), the others 0
      assert.allclose(y, net(x, ks), 1e-5)
      y:sum():backward()
      local g = net.alpha.grad
      assert.is_not_nil(g)
      local gt = g:totable()
      local nonzero = false
      for e = 1, 6 do
        for k = 1, 5 do
          assert.is_true(gt[e][k] == gt[e][k] and math.abs(gt[e][k]) < 1e6)
          if gt[e][k] ~= 0 then nonzero = true end
        end
      end
      assert.is_true(nonzero)
    end
    assert.is_true(next(seen) ~= nil)
    -- same seed, same sample
    nasrt.manual_seed(9)
    net(x)
    local a = table.concat(net.last_arch, ",")
    nasrt.manual_seed(9)
    net(x)
    assert.are.equal(a, table.concat(net.last_arch, ","))
    -- low temperature follows alpha's argmax
    set_onehot(net, { 2, 3, 4, 5, 1, 2 })
    net:set_tau(0.1)
    nasrt.manual_seed(10)
    net(x)
    assert.are.same({ 2, 3, 4, 5, 1, 2 }, net.last_arch)
  end)

  it("switches between darts, gdas and path but not to agnas", function()
    local net = tiny("darts")
    net:set_mode("path")
    assert.are.equal("path", net.mode)
    assert.has_error(function() net:set_mode("agnas") end)
    assert.has_error(function() net:set_mode("spos") end)
    assert.has_error(function() sn.nb201 { mode = "enas" } end)
    assert.has_error(function() sn.nb201 { ratio = 4 } end)
    local ok, err = pcall(sn.nb201, { Cx = 4 })
    assert.truthy(err:find("nb201: unknown option 'Cx'", 1, true))
  end)

  it("derives the genotype from hand-set alphas: argmax over all 5 ops, none included", function()
    local net = tiny("darts")
    local a = {
      { 0.1, 0.5, 0.2, 0.3, 0.0 },     -- skip
      { 0.9, 0.5, 0.2, 0.3, 0.0 },     -- none wins (DARTS collapse, kept as upstream)
      { 0.0, 0.0, 0.0, 0.7, 0.2 },     -- conv 3x3
      { 0.2, 0.2, 0.2, 0.2, 0.2 },     -- tie: the first op
      { -1, -2, -3, -4, -0.5 },        -- avg pool
      { 0.0, 0.1, 0.3, 0.2, 0.25 },    -- conv 1x1
    }
    nasrt.no_grad(function() net.alpha:copy_(nasrt.tensor(a)) end)
    local want = "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|avg_pool_3x3~1|nor_conv_1x1~2|"
    assert.are.equal(want, net:arch_string())
    assert.are.same({ 2, 1, 4, 1, 5, 3 }, net:arch_indices())
    local g = net:genotype()
    assert.are.same({ "skip_connect", 0 }, g[1])
    assert.are.same({ "nor_conv_1x1", 2 }, g[6])
    if bench then assert.are.same(bench.parse_nb201(want), g) end
    -- the softmax of the alphas orders the same way
    local w = net:arch_weights()
    assert.is_true(w[3][4] > w[3][5])
  end)

  describe("agnas mode", function()
    it("has per-edge attention (5C channels, ratio 8) and no alpha", function()
      local net = sn.nb201 { mode = "agnas", C = 16, N = 1 }
      assert.are.equal(0, #net:arch_parameters())
      assert.is_nil(net.alpha)
      local att = net.cells[1].attention[1]
      assert.are.equal(80, att.channels)
      assert.are.equal(10, att.hidden)
      assert.are.equal(8, att.ratio)
      local found = false
      for _, nt in ipairs(net:named_parameters()) do
        if nt[1] == "cells.1.attention.1.fc1.weight" then found = true end
      end
      assert.is_true(found)
      assert.has_error(function() net:set_mode("darts") end)
      assert.has_error(function() net(nasrt.randn { 1, 3, 8, 8 }, BEST) end)
    end)

    it("mixes each edge as upstream's concat -> GAP -> FC -> sigmoid -> slice sum", function()
      nasrt.manual_seed(11)
      local cell = sn.nb201_SearchCell(8, false, true, 8)
      cell:eval()
      local x = nasrt.randn { 2, 8, 6, 6 }
      local y = cell(x, { mode = "agnas" })
      -- reference: the five outputs concatenated (none = zeros), attention on
      -- the concat, weighted slices summed
      local nodes = { x }
      for i = 1, 3 do
        local s
        for j = 0, i - 1 do
          local e = i * (i - 1) // 2 + j + 1
          local outs = {}
          for k, name in ipairs(PRIMS) do outs[k] = cell.edges[e][name](nodes[j + 1]) end
          local cat = F.cat(outs, 2)
          local w = cell.attention[e](cat)                      -- [N, 40, 1, 1]
          local mixed = F.mul(cat, w)
          local sum
          for k = 1, 5 do
            local part = F.narrow(mixed, 2, (k - 1) * 8 + 1, 8)
            sum = sum and sum + part or part
          end
          s = s and s + sum or sum
        end
        nodes[i + 1] = s
      end
      assert.allclose(y, nodes[4]:contiguous(), 1e-5)
    end)

    it("accumulates scores, resets them, and picks the argmax op per edge", function()
      nasrt.manual_seed(12)
      local net = sn.nb201 { mode = "agnas", C = 4, N = 1 }
      local x = nasrt.randn { 2, 3, 8, 8 }
      local y = net(x)
      assert.are.same({ 2, 10 }, y:shape())
      y:sum():backward()
      assert.is_not_nil(net.cells[1].attention[1].fc1.weight.grad)
      local cs = net:cell_scores()
      assert.are.equal(3, #cs)
      -- each op's score is a sum of 2 samples x C sigmoid values in (0, 1)
      for c = 1, 3 do
        local C = ({ 4, 8, 16 })[c]
        for e = 1, 6 do
          for k = 1, 5 do
            assert.is_true(cs[c][e][k] > 0 and cs[c][e][k] < 2 * C)
          end
        end
      end
      net(x)
      local cs2 = net:cell_scores()
      -- same input again (train-mode BN uses the batch): the scores double
      assert.is_true(math.abs(cs2[2][3][4] - 2 * cs[2][3][4]) < 1e-4 * cs[2][3][4])
      local sc = net:scores()
      local want = {}
      for e = 1, 6 do
        local best, bk = -math.huge, nil
        for k = 2, 5 do if sc[e][k] > best then best, bk = sc[e][k], k end end
        want[e] = bk
      end
      assert.are.same(want, net:arch_indices())
      local with_none = net:arch_indices { include_none = true }
      for e = 1, 6 do
        local best, bk = -math.huge, nil
        for k = 1, 5 do if sc[e][k] > best then best, bk = sc[e][k], k end end
        assert.are.equal(bk, with_none[e])
      end
      -- scores() sums each cell's scores divided by its width
      local manual = 0
      for c = 1, 3 do manual = manual + cs2[c][1][2] / ({ 4, 8, 16 })[c] end
      assert.is_true(math.abs(manual - sc[1][2]) < 1e-6)
      net:reset_scores()
      assert.are.equal(0, net:scores()[1][1])
      net.record_scores = false
      net(x)
      assert.are.equal(0, net:scores()[1][1])
    end)
  end)

  it("reports the supernet's MACs with every op counted", function()
    local net = tiny("darts", { N = 1 })
    local total = net:macs({ 1, 3, 8, 8 })
    local one = sn.nb201_network(BEST, { C = 4, N = 1, affine = false }):macs({ 1, 3, 8, 8 })
    assert.is_true(total > one)
    assert.are.same({ 1, 10 }, net:output_shape({ 1, 3, 8, 8 }))
  end)
end)
