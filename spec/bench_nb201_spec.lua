-- nasrt.bench: the NAS-Bench-201 tables shipped in data/nb201 (known
-- values from its README), arch-string parsing/printing for all 15,625
-- cells, index lookup, and the error messages.
local bench = require "nasrt.bench"
local nasrt_ok, nasrt = pcall(require, "nasrt")

local SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
local RAW_6999 = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
local BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"

describe("nasrt.bench.nb201", function()
  local b = assert(bench.nb201())

  it("has 15625 cells and the README's known values", function()
    assert.are.equal(15625, b:size())
    local q = b:query(13714)
    assert.are.equal(13714, q.index)
    assert.are.equal(BEST, q.arch)
    assert.is_true(math.abs(q.cifar10.test - 94.37) < 0.005)
    -- it is the best CIFAR-10 cell (index 6111 ties with it to the last digit)
    local best, at = -1, nil
    for i = 0, b:size() - 1 do
      local t = b:acc(i, "cifar10", "test")
      if t > best then best, at = t, i end
    end
    assert.are.equal(q.cifar10.test, best)
    assert.is_true(at == 6111 or at == 13714)
    -- the all-skip cell where DARTS collapses
    local s = b:query(1835)
    assert.are.equal(SKIP, s.arch)
    assert.is_true(math.abs(s.cifar10.test - 54.30) < 0.005)
    assert.is_true(math.abs(s.cifar100.test - 15.61) < 0.005)
    assert.is_true(math.abs(s.imagenet16.test - 16.32) < 0.005)
    assert.are.same(s, b:query(SKIP))
  end)

  it("reports 12-epoch accuracies, params and FLOPs, and the official records", function()
    local q = b:query(0)
    assert.are.equal(0.129306, q.params)
    assert.is_true(math.abs(q.flops - 15.64737) < 1e-9)
    assert.are.equal(q.params, q.cifar10.params)
    assert.is_true(math.abs(q.cifar10.test12 - 69.55) < 1e-9)
    assert.is_true(math.abs(q.cifar10.val12 - 63.364) < 1e-3)
    assert.are.equal(q.cifar10.test, q.cifar10.test200)
    assert.is_true(q.cifar100.params > q.cifar10.params) -- 100-way classifier
    for _, ds in ipairs {"cifar10", "cifar100", "imagenet16"} do
      for _, k in ipairs {"test", "val12", "test12", "params", "flops", "epoch_time"} do
        assert.are.equal("number", type(q[ds][k]))
      end
    end
    -- the official records: 0.135156 M / 15.65322 MFLOPs on CIFAR-100,
    -- 0.136456 M / 3.91948 MFLOPs on ImageNet16-120
    assert.is_true(math.abs(q.cifar100.params - 0.135156) < 1e-9)
    assert.is_true(math.abs(q.cifar100.flops - 15.65322) < 1e-9)
    assert.is_true(math.abs(q.imagenet16.params - 0.136456) < 1e-9)
    assert.is_true(math.abs(q.imagenet16.flops - 3.91948) < 1e-9)
    -- the 12-epoch validation column of cell 0 is the mean of the official
    -- cifar10-valid seeds 777 (62.712) and 111 (64.016)
    local valid = {}
    for _, r in ipairs(q.cifar10.official) do
      if r.epochs == 12 and r.split == "cifar10-valid" then valid[#valid + 1] = r.valid end
    end
    assert.are.equal(2, #valid)
    assert.is_true(math.abs((valid[1] + valid[2]) / 2 - q.cifar10.val12) < 1e-9)
    assert.is_true(math.abs(q.cifar10.latency - 0.0139359758611311) < 1e-15)
    -- cells 11 and 284 from the official summary
    assert.are.equal(0.802426, b:query(11).params)
    assert.are.equal(0.101306, b:query(284).params)
    assert.is_true(math.abs(b:query(11).flops - 113.95137) < 1e-9)
    -- now known for every cell: the all-skip cell has only the skeleton
    local s = b:query(1835)
    assert.is_true(math.abs(s.params - 0.073306) < 1e-9)  -- 129306 - 2 x 5 x (16^2+32 + 32^2+64 + 64^2+128)
    assert.is_nil(s.cifar10.official)
    assert.is_nil(s.cifar10.latency)
    -- the NASLib subset: 725 cells with its validation accuracy and zero-cost scores
    local n = 0
    for i = 0, b:size() - 1 do
      local c = b:query(i).cifar10
      if c.zc then
        n = n + 1
        assert.are.equal("number", type(c.zc.nwot))
        assert.are.equal("number", type(c.naslib_val))
        assert.is_nil(c.zc.params)
      end
    end
    assert.are.equal(725, n)
    -- NASLib's first CIFAR-10 entry, tuple (0, 2, 3, 2, 3, 1) (its own "idx"
    -- 534 is not the official index): val 86.06, params 0.615386 -> cell 4811
    local q = b:query("|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_1x1~0|nor_conv_1x1~1|none~2|")
    assert.are.equal(4811, q.index)
    assert.are.equal(86.06, q.cifar10.naslib_val)
    assert.is_true(math.abs(q.params - 0.615386) < 1e-9)
  end)

  -- Raw rows, copied by hand from data/nb201 (index i = line i + 2 of both CSVs):
  -- nats_tss_test_acc_200ep.csv                          nb201_minibench_hp12.csv
  -- 1834: 92.63,68.27999993489584,39.811111009385854      82.39,76.1000000012207,49.29999997558594,49.15999998168945,26.86666665649414,26.633333318074545
  -- 6999: 93.58,70.25999998474121,44.08333328755697       88.08,83.1899999975586,58.619999932861326,58.7199999633789,34.866666544596356,34.46666658528646
  -- 13713: 86.71,57.066666634114576,23.499999955919055    72.76,64.1139999963379,30.819999984741212,31.24000001220703,15.733333267211915,15.266666646321614
  local RAW = {
    {1834, "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|none~2|",
     {92.63, 68.27999993489584, 39.811111009385854},
     {82.39, 76.1000000012207, 49.29999997558594, 49.15999998168945, 26.86666665649414, 26.633333318074545}},
    {6999, "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
     {93.58, 70.25999998474121, 44.08333328755697},
     {88.08, 83.1899999975586, 58.619999932861326, 58.7199999633789, 34.866666544596356, 34.46666658528646}},
    {13713, "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|none~0|avg_pool_3x3~1|avg_pool_3x3~2|",
     {86.71, 57.066666634114576, 23.499999955919055},
     {72.76, 64.1139999963379, 30.819999984741212, 31.24000001220703, 15.733333267211915, 15.266666646321614}},
  }
  it("returns the raw table entries of three hand-checked cells, by index, string and genes", function()
    for _, row in ipairs(RAW) do
      local i, s, t200, h12 = row[1], row[2], row[3], row[4]
      for _, q in ipairs {b:query(i), b:query(s), b:query(bench.nb201_encode(s))} do
        assert.are.equal(i, q.index)
        assert.are.equal(s, q.arch)
        assert.are.equal(t200[1], q.cifar10.test)
        assert.are.equal(t200[2], q.cifar100.test)
        assert.are.equal(t200[3], q.imagenet16.test)
        assert.are.equal(h12[1], q.cifar10.test12)
        assert.are.equal(h12[2], q.cifar10.val12)
        assert.are.equal(h12[3], q.cifar100.test12)
        assert.are.equal(h12[4], q.cifar100.val12)
        assert.are.equal(h12[5], q.imagenet16.test12)
        assert.are.equal(h12[6], q.imagenet16.val12)
      end
      assert.are.equal(h12[2], b:acc(i, "cifar10", "val12"))
      assert.are.equal(t200[3], b:acc(s, "imagenet16", "test200"))
      assert.are.equal(t200[1], b:acc(i))
    end
    -- params by hand for 6999 (two 3x3 convs, one 1x1 per cell):
    -- skeleton 73306 + 5 x [2 (9c^2 + 2c) + (c^2 + 2c)] for c = 16, 32, 64
    local cells = 0
    for _, c in ipairs {16, 32, 64} do cells = cells + 5 * (2 * (9 * c * c + 2 * c) + c * c + 2 * c) end
    assert.are.equal(73306 + cells, math.floor(b:query(6999).params * 1e6 + 0.5))
    local p, f = b:cost(6999)
    assert.are.equal(b:query(6999).params, p)
    assert.are.equal(b:query(6999).flops, f)
  end)

  it("prints a query as a table", function()
    local text = tostring(b:query(1834))
    assert.matches("NAS-Bench-201 cell 1834", text, 1, true)
    assert.matches(RAW[1][2], text, 1, true)
    assert.matches("CIFAR-10         76.10   82.39    92.63", text, 1, true)
    assert.matches("ImageNet16-120   26.63   26.87    39.81", text, 1, true)
    assert.matches("(est.)", text, 1, true)
    assert.matches("latency 13.94 ms", tostring(b:query(0)), 1, true)
    assert.matches("15625 cells", tostring(b), 1, true)
  end)

  it("charges the official training time of cells 0, 11, 284 and an estimate elsewhere", function()
    local official = {[0] = 7.221092998981476, [11] = 12.462056795756022, [284] = 4.875794370969136}
    for i, t in pairs(official) do
      local got, src = b:epoch_time(i)
      assert.are.equal(t, got)
      assert.are.equal("nats", src)
      -- the records: CIFAR-100 twice, ImageNet16-120 6.068 times the cifar10-valid epoch
      local c100 = b:epoch_time(i, "cifar100")
      assert.is_true(math.abs(c100 / t - 2) < 1e-12)
      assert.is_true(math.abs(b:epoch_time(i, "imagenet16") / t - 6.068) < 1e-9)
      assert.is_true(math.abs(b:train_time(i) - 12 * t) < 1e-9)
      assert.is_true(math.abs(b:train_time(i, "cifar10", 200) - 200 * t) < 1e-9)
    end
    -- the model goes through the three official cells: 3.40400692 +
    -- 0.03068357 MFLOPs + 1.11232296 conv/pool edges; checked here on a
    -- cell with the same ops as cell 0 on other edges (same FLOPs and count)
    local same = b:index("|nor_conv_1x1~0|+|avg_pool_3x3~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|")
    assert.are.equal(b:query(0).flops, b:query(same).flops)
    local t, src = b:epoch_time(same)
    assert.are.equal("model", src)
    assert.is_true(math.abs(t - official[0]) < 1e-6, t)
    -- the all-none cell: 3.40400692 + 0.03068357 x skeleton MFLOPs
    local none = b:index("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert.is_true(math.abs(b:epoch_time(none) - (3.40400692 + 0.03068357 * b:query(none).flops)) < 1e-9)
  end)

  it("gives the table's canonical form and the isomorphic cells", function()
    assert.are.equal("(0)@avg_pool_3x3+(0)@avg_pool_3x3+(0)@nor_conv_1x1+(0)@nor_conv_1x1", b:unique(0))
    local iso = b:isomorphs(0)
    assert.are.equal(0, iso[1])
    -- node 1 = conv1x1 instead of avg_pool: the output is the same sum
    local swapped = b:index("|nor_conv_1x1~0|+|avg_pool_3x3~0|skip_connect~1|+|avg_pool_3x3~0|skip_connect~1|skip_connect~2|")
    local found = false
    for k, i in ipairs(iso) do
      assert.are.equal(b:unique(0), b:unique(i))
      if k > 1 then assert.is_true(i > iso[k - 1]) end
      found = found or i == swapped
    end
    assert.is_true(found)
    assert.are.equal(b:query(0).unique, b:unique(b:arch(0)))
    local n = 0
    local seen = {}
    for i = 0, b:size() - 1 do
      local u = b:unique(i)
      if not seen[u] then seen[u] = true n = n + 1 end
    end
    assert.are.equal(6466, n)
    local bi, bv = b:best()
    assert.is_true(bi == 6111 or bi == 13714)
    assert.is_true(math.abs(bv - 94.37) < 0.005)
  end)

  it("round-trips every arch string and its index", function()
    local seen = {}
    for i = 0, b:size() - 1 do
      local s = b:arch(i)
      local edges = bench.parse_nb201(s)
      assert.are.equal(6, #edges)
      for e = 1, 6 do assert.are.equal(bench.NB201_EDGES[e][2], edges[e][2]) end
      assert.are.equal(s, bench.nb201_string(edges))
      assert.are.equal(s, bench.nb201_decode(bench.nb201_encode(s)))
      assert.are.equal(i, b:index(s))
      assert.is_nil(seen[s])
      seen[s] = true
    end
  end)

  it("parses in the official edge order and prints plain op lists", function()
    local edges = bench.parse_nb201(BEST)
    assert.are.same({{"nor_conv_3x3", 0}, {"nor_conv_3x3", 0}, {"nor_conv_3x3", 1},
                     {"skip_connect", 0}, {"nor_conv_1x1", 1}, {"nor_conv_3x3", 2}}, edges)
    assert.are.equal(BEST, bench.nb201_string {"nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3",
                                               "skip_connect", "nor_conv_1x1", "nor_conv_3x3"})
    assert.are.same({4, 4, 4, 2, 3, 4}, bench.nb201_encode(BEST))
  end)

  it("draws reproducible random cells with a sampler's generator", function()
    if not nasrt_ok then pending("nasrt.core not built") return end
    local s1 = nasrt.sampler.uniform{choices = bench.NB201_CHOICES, seed = 3}
    local s2 = nasrt.sampler.uniform{choices = bench.NB201_CHOICES, seed = 3}
    for _ = 1, 20 do
      local i, a = b:random(s1)
      local j, a2 = b:random(s2)
      assert.are.equal(i, j)
      assert.are.equal(a, a2)
      assert.are.equal(b:arch(i), a)
    end
    -- the sampler's genes map onto the table too
    local q = b:query(bench.nb201_decode(s1:sample()))
    assert.are.equal("number", type(q.cifar10.test))
  end)

  it("shares one parsed table per folder and reports a missing folder", function()
    assert.are.equal(b, bench.nb201())
    local none, msg = bench.nb201("/nonexistent/nb201")
    assert.is_nil(none)
    assert.matches("not found", msg, 1, true)
  end)

  local bad = {
    {function() return bench.parse_nb201(42) end, "parse_nb201: "},
    {function() return bench.parse_nb201("|none~0|+|none~0|none~1|") end, "parse_nb201: bad NAS-Bench-201 arch string"},
    {function() return bench.parse_nb201("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|") end, "expected input ~0"},
    {function() return bench.parse_nb201("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|") end, "unknown op 'conv'"},
    {function() return bench.parse_nb201("|none~0|+|none~0|none~1|+|none~0|none~1|") end, "node 3 has 2 inputs"},
    {function() return bench.parse_nb201("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|none~3|") end, "parse_nb201"},
    {function() return bench.parse_nb201("none~0|+|none~0|none~1|+|none~0|none~1|none~2|") end, "parse_nb201"},
    {function() return bench.nb201_string({"none"}) end, "nb201_string: expected 6 edges"},
    {function() return bench.nb201_string({"none", "none", "none", "none", "none", "sep_conv_3x3"}) end,
     "nb201_string: edge 6: unknown op sep_conv_3x3"},
    {function() return bench.nb201_string({{"none", 1}, "none", "none", "none", "none", "none"}) end,
     "nb201_string: edge 1 must come from node 0"},
    {function() return bench.nb201_decode({1, 2, 3, 4, 5, 6}) end, "nb201_decode: gene 6"},
    {function() return bench.nb201():query(15625) end, "nb201:query: index 15625 out of range"},
    {function() return bench.nb201():query(-1) end, "nb201:query"},
    {function() return bench.nb201():query(1.5) end, "nb201:query: index must be an integer"},
    {function() return bench.nb201():query("|x|") end, "nb201:query: bad NAS-Bench-201 arch string"},
    {function() return bench.nb201():arch(20000) end, "nb201:arch"},
    {function() return bench.nb201():index("nope") end, "nb201:index"},
    {function() return bench.nb201():random() end, "nb201:random"},
    {function() return bench.nb201(5) end, "nb201: dir must be a string"},
    {function() return bench.nb201():query({1, 2, 3, 4, 5, 6}) end, "nb201:query: gene 6 = 6"},
    {function() return bench.nb201():acc(0, "cifar1000") end, "nb201:acc: unknown dataset cifar1000"},
    {function() return bench.nb201():acc(0, "cifar10", "val200") end, "nb201:acc: unknown column val200"},
    {function() return bench.nb201():cost(-3) end, "nb201:cost: index -3 out of range"},
    {function() return bench.nb201():train_time(0, "cifar10", -1) end, "nb201:train_time: epochs"},
    {function() return bench.nb201():evaluator{select = "valid"} end, "nb201:evaluator: unknown column valid"},
    {function() return bench.nb201():evaluator{datset = "cifar10"} end, "nb201:evaluator: unknown option 'datset'"},
    {function() return bench.nb201():simulate{method = "bohb"} end, "nb201:simulate: method must be"},
    {function() return bench.nb201():simulate{runs = 0} end, "nb201:simulate: runs must be"},
    {function() return bench.nb201():simulate{evaluations = false} end, "nb201:simulate: give evaluations, budget or both"},
    {function() return bench.nb201():simulate{budget = -5} end, "nb201:simulate: budget must be"},
    {function() return bench.nb201():simulate{method = function() error("boom") end, runs = 1} end, "boom"},
    {function() return bench.nb201():simulate{method = function() end, runs = 1} end, "nb201:simulate: run 1 evaluated no cell"},
  }
  for i, case in ipairs(bad) do
    it(("raises a message naming the function (%d: %s)"):format(i, case[2]), function()
      local ok, err = pcall(case[1])
      assert.is_false(ok)
      assert.matches(case[2], tostring(err), 1, true)
    end)
  end
end)

-- Multi-trial strategies against the table (the NAS-Bench-201 paper's
-- comparison): pick by 12-epoch validation, report 200-epoch test.
describe("nasrt.bench.nb201 simulated search", function()
  if not nasrt_ok then
    it("needs nasrt.core", function() pending("nasrt.core not built") end)
    return
  end
  local b = assert(bench.nb201())

  it("scores by one column, reports another and charges the simulated training time", function()
    local E = b:evaluator{dataset = "cifar100"}
    local s, x = E.score(bench.nb201_encode(RAW_6999))
    assert.are.equal(58.7199999633789, s)              -- cifar100-val, 12 epochs (raw row)
    assert.are.equal(70.25999998474121, x.report)      -- cifar100 test, 200 epochs
    assert.are.equal(6999, x.index)
    assert.is_true(math.abs(x.time - 12 * b:epoch_time(6999, "cifar100")) < 1e-9)
    assert.are.equal(x.time, E.cost(nil, s, x))
    assert.are.equal(1, E.n)
    assert.are.equal(x.time, E.spent)
    E.score(0)
    assert.are.equal(6999, E.best_index)               -- 58.72 beats cell 0's 31.84
    assert.are.equal(2, E.n)
    -- a count limit: the call past it raises (simulate catches that)
    local L = b:evaluator{evaluations = 1, select = "test12", epochs = 0}
    assert.are.equal(88.08, (L.score(6999)))
    assert.are.equal(0, L.spent)
    assert.is_false(pcall(L.score, 0))
    assert.are.equal(1, L.n)
  end)

  it("reproduces the published random search and REA means (20 runs, CIFAR-10)", function()
    local rnd = b:simulate{method = "random", runs = 20}
    local rea = b:simulate{method = "rea", runs = 20}
    print(("\nNB201 CIFAR-10, 20 runs x 100 evaluations: random %.2f +- %.2f, REA %.2f +- %.2f " ..
      "(published 93.73 / 93.94)"):format(rnd.mean, rnd.std, rea.mean, rea.std))
    -- the standard error of a 20-run mean is about 0.08: +-0.3 is ~4 of them
    assert.is_true(math.abs(rnd.mean - 93.73) < 0.3, rnd.mean)
    assert.is_true(math.abs(rea.mean - 93.94) < 0.3, rea.mean)
    assert.is_true(rea.mean > rnd.mean)
    assert.is_true(rnd.std > 0.1 and rnd.std < 1.0)
    assert.are.equal(20, #rnd.values)
    assert.are.equal(100, rnd.evaluations)
    assert.is_true(math.abs(rnd.optimum - 94.37) < 0.005)
    -- every value is the reported column of the pick, and the pick the first
    -- best by the 12-epoch validation among the run's cells
    for r = 1, 20 do
      assert.are.equal(b:acc(rnd.picks[r], "cifar10", "test"), rnd.values[r])
      assert.is_true(rnd.values[r] <= rnd.optimum)
    end
    local m = 0
    for _, v in ipairs(rnd.values) do m = m + v end
    assert.is_true(math.abs(m / 20 - rnd.mean) < 1e-9)
    -- the same seed gives the same numbers; another seed others
    local again = b:simulate{method = "rea", runs = 20}
    assert.are.same(rea.values, again.values)
    assert.are.equal(rea.mean, again.mean)
    local other = b:simulate{method = "rea", runs = 20, seed = 100}
    assert.are_not.same(rea.values, other.values)
  end)

  it("runs any strategy that takes an evaluation function", function()
    -- random search written by hand draws what search.random draws
    local by_hand = b:simulate{runs = 5, method = function(ctx)
      while true do ctx.score(ctx.sampler:sample()) end
    end}
    local builtin = b:simulate{runs = 5, method = "random"}
    assert.are.same(builtin.values, by_hand.values)
    assert.are.same(builtin.picks, by_hand.picks)
    assert.are.equal("custom", by_hand.method)
    -- a strategy that returns early: its own count, best of what it saw
    local two = b:simulate{runs = 1, method = function(ctx) ctx.score(0) ctx.score(1834) end}
    assert.are.equal(2, two.evaluations)
    assert.are.equal(1834, two.picks[1])                -- val12 76.10 beats 63.36
    assert.are.equal(92.63, two.values[1])
  end)

  it("stops on a simulated time budget as AutoDL does (the crossing evaluation counts)", function()
    local res = b:simulate{method = "rea", runs = 5, evaluations = false, budget = 3000}
    assert.is_true(res.time >= 3000)
    -- each 12-epoch evaluation costs 12 x 3.4..16.8 s: 3000 s buy 15..74 of them
    assert.is_true(res.evaluations > 15 and res.evaluations < 74, res.evaluations)
    -- by hand for one run: the sum before the last evaluation is under the budget
    local E = b:evaluator{budget = 3000}
    local rea = nasrt.search.rea{choices = bench.NB201_CHOICES, seed = 0, score = E.score,
                                 cost = E.cost, budget = 3000, cycles = math.maxinteger}
    local _, _, hist = rea:run()
    local before = 0
    for k = 1, #hist - 1 do before = before + hist[k].extra.time end
    assert.is_true(before < 3000)
    assert.is_true(before + hist[#hist].extra.time >= 3000)
    assert.is_true(math.abs(rea.spent - E.spent) < 1e-9)
    local first = b:simulate{method = "rea", runs = 1, evaluations = false, budget = 3000}
    assert.are.equal(#hist, first.evaluations)
    -- both limits: whichever comes first
    local both = b:simulate{method = "random", runs = 3, evaluations = 10, budget = 1e9}
    assert.are.equal(10, both.evaluations)
  end)
end)
