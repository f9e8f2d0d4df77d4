-- nasrt.bench: the NAS-Bench-201 tables shipped in data/nb201 (known
-- values from its README), arch-string parsing/printing for all 15,625
-- cells, index lookup, and the error messages.
local bench = require "nasrt.bench"
local nasrt_ok, nasrt = pcall(require, "nasrt")

local SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
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
      local t = b:query(i).cifar10.test
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

  it("reports 12-epoch accuracies and, where known, params and FLOPs", function()
    local q = b:query(0)
    assert.are.equal(0.129306, q.params)
    assert.is_true(math.abs(q.flops - 15.647) < 0.001)
    assert.are.equal(q.params, q.cifar10.params)
    assert.are.equal("nats", q.cifar10.cost_source)
    assert.is_true(math.abs(q.cifar10.test12 - 69.55) < 1e-9)
    assert.is_true(math.abs(q.cifar10.val12 - 63.364) < 1e-3)
    assert.is_true(q.cifar100.params > q.cifar10.params) -- 100-way classifier
    for _, ds in ipairs {"cifar10", "cifar100", "imagenet16"} do
      for _, k in ipairs {"test", "val12", "test12"} do
        assert.are.equal("number", type(q[ds][k]))
      end
    end
    -- cells 11 and 284 from the official summary
    assert.are.equal(0.802426, b:query(11).params)
    assert.are.equal(0.101306, b:query(284).params)
    -- the NASLib subset: 725 cells with params, FLOPs and zero-cost scores;
    -- params depend only on the number of 1x1 and 3x3 convs
    local n, per_count = 0, {}
    for i = 0, b:size() - 1 do
      local c = b:query(i).cifar10
      if c.cost_source == "naslib" then
        n = n + 1
        assert.are.equal("table", type(c.zc))
        assert.are.equal("number", type(c.zc.nwot))
        assert.are.equal("number", type(c.naslib_val))
        local a = b:arch(i)
        local _, n1 = a:gsub("nor_conv_1x1", "")
        local _, n3 = a:gsub("nor_conv_3x3", "")
        local k = n1 .. "," .. n3
        per_count[k] = per_count[k] or c.params
        assert.are.equal(per_count[k], c.params)
      end
    end
    assert.are.equal(725, n)
    -- and agree with the official records: 2 x 1x1 conv (cell 0), 1 x 1x1 (cell 284)
    if per_count["2,0"] then assert.are.equal(0.129306, per_count["2,0"]) end
    if per_count["1,0"] then assert.are.equal(0.101306, per_count["1,0"]) end
    -- unknown elsewhere
    assert.is_nil(b:query(1835).params)
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
  }
  for i, case in ipairs(bad) do
    it(("raises a message naming the function (%d: %s)"):format(i, case[2]), function()
      local ok, err = pcall(case[1])
      assert.is_false(ok)
      assert.matches(case[2], tostring(err), 1, true)
    end)
  end
end)
