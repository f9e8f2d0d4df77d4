-- nasrt.sampler: seeded samplers over categorical search spaces.
-- A search space is a list of per-gene choice counts; an arch is a list of
-- 1-based choice indices.  Covers determinism and exact resume, uniformity,
-- FairNAS strict fairness, SPOS FLOPs bins, the AttentiveNAS
-- FLOPs-constrained sampler (measured against plain uniform rejection on
-- the AttentiveNAS space with its FLOPs formula), evolution helpers, the
-- sandwich helper and error messages.
local nasrt = require "nasrt"
local S = nasrt.sampler

local function rep(v, n)
  local t = {}
  for i = 1, n do t[i] = v end
  return t
end

local function key(arch) return table.concat(arch, ",") end

local function valid(arch, choices)
  if #arch ~= #choices then return false end
  for g = 1, #choices do
    local v = arch[g]
    if math.type(v) ~= "integer" or v < 1 or v > choices[g] then return false end
  end
  return true
end

---------------------------------------------------------------------------
-- The AttentiveNAS search space (reference/oneshot.md §3.1) and its FLOPs
-- formula (§3.3, compute_active_subnet_flops), as 31 genes:
-- resolution, width[9], depth[7], kernel[7], expand[7].
local ANAS = {
  res = {192, 224, 256, 288},
  width = {{16, 24}, {16, 24}, {24, 32}, {32, 40}, {64, 72}, {112, 120, 128},
           {192, 200, 208, 216}, {216, 224}, {1792, 1984}},
  depth = {{1, 2}, {3, 4, 5}, {3, 4, 5, 6}, {3, 4, 5, 6}, {3, 4, 5, 6, 7, 8},
           {3, 4, 5, 6, 7, 8}, {1, 2}},
  kernel = rep({3, 5}, 7),
  expand = {{1}, {4, 5, 6}, {4, 5, 6}, {4, 5, 6}, {4, 5, 6}, {6}, {6}},
  stride = {1, 2, 2, 2, 1, 2, 1},
  se = {false, false, true, false, true, true, true},
}
local ANAS_CHOICES = {#ANAS.res}
for _, k in ipairs {"width", "depth", "kernel", "expand"} do
  for _, c in ipairs(ANAS[k]) do ANAS_CHOICES[#ANAS_CHOICES + 1] = #c end
end

local function make_divisible(v, d)
  local new = math.max(1, (v + d // 2) // d * d)
  if new < 0.9 * v then new = new + d end
  return new
end

-- MFLOPs (MACs) of a 31-gene arch
local function anas_flops(a)
  local res = ANAS.res[a[1]]
  local w, d, k, t = {}, {}, {}, {}
  for i = 1, 9 do w[i] = ANAS.width[i][a[1 + i]] end
  for i = 1, 7 do
    d[i] = ANAS.depth[i][a[10 + i]]
    k[i] = ANAS.kernel[i][a[17 + i]]
    t[i] = ANAS.expand[i][a[24 + i]]
  end
  local s = res // 2
  local f = 3 * w[1] * s * s * 9
  local cin = w[1]
  for i = 1, 7 do
    local cout = w[i + 1]
    for j = 1, d[i] do
      local mid = make_divisible(cin * t[i], 8)
      if i > 1 then f = f + cin * mid * s * s end -- mb1 (t = 1) has no expand conv
      if j == 1 and ANAS.stride[i] == 2 then s = (s + 1) // 2 end
      f = f + mid * s * s * k[i] * k[i] -- depthwise
      f = f + mid * cout * s * s -- project
      if ANAS.se[i] then f = f + 2 * mid * make_divisible(mid // 4, 8) end
      if cin ~= cout then f = f + cin * cout * s * s end -- shortcut conv
      cin = cout
    end
  end
  f = f + cin * 6 * w[8] * s * s + 6 * w[8] * w[9] + w[9] * 1000
  return f / 1e6
end

---------------------------------------------------------------------------
describe("nasrt.sampler determinism", function()
  local function seq(s, n, draw)
    local out = {}
    for i = 1, n do out[i] = key(draw(s)) end
    return out
  end
  local makers = {
    uniform = function(seed) return S.uniform{choices = rep(4, 20), seed = seed} end,
    strict_fair = function(seed) return S.strict_fair{choices = rep(6, 18), seed = seed} end,
    flops_bins = function(seed)
      return S.flops_bins{choices = rep(4, 20), seed = seed, bins = {{28, 32}, {32, 36}},
                          flops = {base = 0, per_gene = rep({1, 1.5, 2, 2.5}, 20)}}
    end,
    attentive = function(seed)
      return S.attentive{choices = rep(4, 10), seed = seed, step = 1, draws = 500,
                         flops = {per_gene = rep({0, 1, 2, 3}, 10)}}
    end,
    sandwich = function(seed) return S.sandwich{choices = rep(3, 8), seed = seed} end,
  }
  local draws = {
    uniform = function(s) return s:sample() end,
    strict_fair = function(s) return s:next() end,
    flops_bins = function(s) return (s:sample()) end,
    attentive = function(s) return s:sample(s:sample_target())[1] end,
    sandwich = function(s) return s:random() end,
  }
  for name, make in pairs(makers) do
    it(name .. ": same seed gives the same sequence, another seed another", function()
      local a, b, c = make(7), make(7), make(8)
      local sa, sb, sc = seq(a, 60, draws[name]), seq(b, 60, draws[name]), seq(c, 60, draws[name])
      assert.are.same(sa, sb)
      assert.are_not.same(sa, sc)
    end)
    it(name .. ": state()/set_state() resumes exactly", function()
      local a = make(3)
      seq(a, 17, draws[name]) -- leave it mid-way (strict_fair: mid-permutation)
      local st = a:state()
      assert.are.equal(name, st.kind)
      assert.are.equal(4, #st.rng)
      for _, w in ipairs(st.rng) do assert.are.equal("integer", math.type(w)) end
      local first = seq(a, 40, draws[name])
      a:set_state(st)
      assert.are.same(first, seq(a, 40, draws[name]))
      -- a fresh sampler continues the same run (another seed for all but
      -- attentive, whose tables are built from its seed: configuration,
      -- not state)
      local b = make(name == "attentive" and 3 or 99)
      b:set_state(st)
      assert.are.same(first, seq(b, 40, draws[name]))
    end)
  end

  it("state tables are plain data (survive a serialise round trip)", function()
    local s = S.strict_fair{choices = rep(4, 3), seed = 1}
    s:next(); s:next()
    local st = s:state()
    assert.are.same({"kind", "perm", "pointer", "rng"}, (function()
      local ks = {}
      for k in pairs(st) do ks[#ks + 1] = k end
      table.sort(ks)
      return ks
    end)())
    assert.are.equal(2, st.pointer)
    for _, p in ipairs(st.perm) do
      local sorted = {table.unpack(p)}
      table.sort(sorted)
      assert.are.same({1, 2, 3, 4}, sorted)
    end
    -- rebuild through a string (what a checkpoint does)
    local function ser(v)
      if type(v) ~= "table" then return type(v) == "string" and ("%q"):format(v) or tostring(v) end
      local parts = {}
      for k, x in pairs(v) do
        parts[#parts + 1] = "[" .. ser(k) .. "]=" .. ser(x)
      end
      return "{" .. table.concat(parts, ",") .. "}"
    end
    local copy = load("return " .. ser(st))()
    local expect = {s:next(), s:next(), s:next()}
    local t = S.strict_fair{choices = rep(4, 3), seed = 5}
    t:set_state(copy)
    assert.are.same(expect, {t:next(), t:next(), t:next()})
  end)

  it("a bad state table raises and changes nothing", function()
    local s = S.strict_fair{choices = rep(3, 2), seed = 1}
    s:next()
    local st = s:state()
    local want = s:state()
    local bad = {
      {kind = "uniform", rng = st.rng},
      {kind = "strict_fair", rng = {1, 2, 3}, perm = st.perm, pointer = 0},
      {kind = "strict_fair", rng = {0, 0, 0, 0}, perm = st.perm, pointer = 0},
      {kind = "strict_fair", rng = st.rng, perm = {{1, 1, 2}, {1, 2, 3}}, pointer = 0},
      {kind = "strict_fair", rng = st.rng, perm = {{1, 2, 3}}, pointer = 0},
      {kind = "strict_fair", rng = st.rng, perm = st.perm, pointer = 4},
    }
    for _, b in ipairs(bad) do
      local ok, err = pcall(s.set_state, s, b)
      assert.is_false(ok)
      assert.matches("set_state", err, 1, true)
      assert.are.same(want, s:state())
    end
  end)

  it("randint and uniform draw from the sampler's generator", function()
    local a, b = S.uniform{choices = {2}, seed = 4}, S.uniform{choices = {2}, seed = 4}
    for _ = 1, 200 do
      local x = a:randint(10)
      assert.are.equal(x, b:randint(10))
      assert.is_true(x >= 1 and x <= 10 and math.type(x) == "integer")
      local u = a:uniform()
      assert.are.equal(u, b:uniform())
      assert.is_true(u >= 0 and u < 1)
    end
  end)
end)

---------------------------------------------------------------------------
describe("nasrt.sampler.uniform", function()
  it("returns valid archs whose choice frequencies pass a chi-square bound", function()
    local choices = rep(4, 20)
    choices[21], choices[22] = 7, 2
    local s = S.uniform{choices = choices, seed = 11}
    local N = 7000
    local counts = {}
    for g = 1, #choices do counts[g] = rep(0, choices[g]) end
    for _ = 1, N do
      local a = s:sample()
      assert.is_true(valid(a, choices))
      for g = 1, #choices do counts[g][a[g]] = counts[g][a[g]] + 1 end
    end
    local chi, dof = 0, 0
    for g = 1, #choices do
      local e = N / choices[g]
      local cg = 0
      for v = 1, choices[g] do cg = cg + (counts[g][v] - e) ^ 2 / e end
      assert.is_true(cg < 30, ("gene %d: chi2 %.1f"):format(g, cg)) -- p < 1e-4 for dof <= 6
      chi, dof = chi + cg, dof + choices[g] - 1
    end
    -- total chi2 within about 4 standard deviations of its mean (dof)
    assert.is_true(chi < dof + 4 * math.sqrt(2 * dof), ("chi2 %.1f dof %d"):format(chi, dof))
    assert.is_true(chi > dof - 4 * math.sqrt(2 * dof), "too uniform to be random")
  end)

  it("exposes its search space", function()
    local s = S.uniform{choices = {2, 3}}
    assert.are.same({2, 3}, s:choices())
    assert.matches("nasrt.sampler.uniform", tostring(s), 1, true)
  end)
end)

---------------------------------------------------------------------------
describe("nasrt.sampler.strict_fair", function()
  local m, L = 6, 18

  it("each sample() holds every choice of every layer exactly once", function()
    local s = S.strict_fair{choices = rep(m, L), seed = 1}
    for _ = 1, 5 do
      local archs = s:sample()
      assert.are.equal(m, #archs)
      for g = 1, L do
        local seen = {}
        for k = 1, m do
          assert.is_true(valid(archs[k], rep(m, L)))
          seen[archs[k][g]] = (seen[archs[k][g]] or 0) + 1
        end
        for v = 1, m do assert.are.equal(1, seen[v]) end
      end
    end
  end)

  it("over any number of steps every choice of every layer has the same count", function()
    local s = S.strict_fair{choices = rep(m, L), seed = 2}
    local counts = {}
    for g = 1, L do counts[g] = rep(0, m) end
    local distinct = {}
    for step = 1, 50 do
      for _, a in ipairs(s:sample()) do
        distinct[key(a)] = true
        for g = 1, L do counts[g][a[g]] = counts[g][a[g]] + 1 end
      end
      for g = 1, L do
        for v = 1, m do assert.are.equal(step, counts[g][v]) end
      end
    end
    -- and the schedules are random, not a fixed rotation
    local nd = 0
    for _ in pairs(distinct) do nd = nd + 1 end
    assert.are.equal(50 * m, nd)
  end)

  it("next() hands out the permutations one by one, redrawn on wrap", function()
    local s = S.strict_fair{choices = rep(m, L), seed = 3}
    local counts = {}
    for g = 1, L do counts[g] = rep(0, m) end
    local layer1 = {}
    for i = 1, 50 * m do
      local a = s:next()
      layer1[#layer1 + 1] = a[1]
      for g = 1, L do counts[g][a[g]] = counts[g][a[g]] + 1 end
      if i % m == 0 then
        for g = 1, L do
          for v = 1, m do assert.are.equal(i // m, counts[g][v]) end
        end
      end
    end
    -- the order within a block changes between blocks
    local same = 0
    for b = 1, 49 do
      local x = table.concat(layer1, ",", (b - 1) * m + 1, b * m)
      local y = table.concat(layer1, ",", b * m + 1, (b + 1) * m)
      if x == y then same = same + 1 end
    end
    assert.is_true(same < 5)
    -- sample() equals m next() calls from the same state at a wrap
    local t = S.strict_fair{choices = rep(m, L), seed = 9}
    local u = S.strict_fair{choices = rep(m, L), seed = 9}
    local viaNext = {}
    for k = 1, m do viaNext[k] = t:next() end
    assert.are.same(viaNext, u:sample())
    assert.are.same(t:next(), u:next())
  end)
end)

---------------------------------------------------------------------------
-- A SPOS-like chain: 20 genes of 4 blocks with additive per-layer FLOPs
-- (MFLOPs, rough ShuffleNetV2 block costs scaled to the 290-360 window).
local SPOS_COST = {}
for l = 1, 20 do
  local scale = ({1.6, 1.0, 1.0, 1.0, 1.4, 0.9, 0.9, 0.9, 1.3, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8,
                  1.2, 0.7, 0.7, 0.7})[l]
  SPOS_COST[l] = {10 * scale, 13 * scale, 16 * scale, 20 * scale}
end
local SPOS_BASE = 46
local SPOS_BINS = {}
for lo = 290, 350, 10 do SPOS_BINS[#SPOS_BINS + 1] = {lo, lo + 10} end

describe("nasrt.sampler.flops_bins", function()
  it("lands in one of the SPOS bins, with the C fast path and a Lua function alike", function()
    local add = {base = SPOS_BASE, per_gene = SPOS_COST}
    local calls = 0
    local function lua_flops(a)
      calls = calls + 1
      local f = SPOS_BASE
      for g = 1, 20 do f = f + SPOS_COST[g][a[g]] end
      return f
    end
    local fast = S.flops_bins{choices = rep(4, 20), seed = 5, bins = SPOS_BINS, flops = add}
    local slow = S.flops_bins{choices = rep(4, 20), seed = 5, bins = SPOS_BINS, flops = lua_flops}
    local bin_hits = {}
    local total_tries, total_calls = 0, 0
    for _ = 1, 300 do
      local a, f, tries, hit = fast:sample()
      calls = 0
      local a2, f2, tries2, hit2 = slow:sample()
      assert.are.same(a, a2)
      assert.are.equal(tries, tries2)
      assert.are.equal(hit, hit2)
      assert.is_true(math.abs(f - f2) < 1e-9)
      assert.are.equal(tries + (hit and 0 or 1), calls) -- one FLOPs evaluation per try
      assert.is_true(hit)
      assert.is_true(valid(a, rep(4, 20)))
      assert.is_true(f >= 290 and f <= 360)
      assert.is_true(math.abs(fast:flops(a) - f) < 1e-9)
      bin_hits[math.min(6, (f - 290) // 10)] = true
      total_tries = total_tries + tries
      total_calls = total_calls + calls
    end
    for b = 0, 6 do assert.is_true(bin_hits[b] ~= nil or b == 6, "bin " .. b .. " never hit") end
    assert.is_true(total_tries / 300 < 50)
  end)

  it("falls back to an unconstrained uniform arch when no try hits", function()
    local s = S.flops_bins{choices = rep(4, 5), seed = 1, bins = {{1000, 2000}}, tries = 37,
                           flops = {per_gene = rep({1, 2, 3, 4}, 5)}}
    local a, f, tries, hit = s:sample()
    assert.is_false(hit)
    assert.are.equal(37, tries)
    assert.is_true(valid(a, rep(4, 5)))
    assert.are.equal(s:flops(a), f)
  end)
end)

---------------------------------------------------------------------------
describe("nasrt.sampler.attentive", function()
  it("reproduces the AttentiveNAS table statistics", function()
    local s = S.attentive{choices = rep(3, 4), seed = 1, step = 1, draws = 4000,
                          flops = {per_gene = rep({0, 1, 2}, 4)}}
    local taus, probs = s:prior()
    assert.are.same({0, 1, 2, 3, 4, 5, 6, 7, 8}, taus)
    local sum = 0
    for _, p in ipairs(probs) do sum = sum + p end
    assert.is_true(math.abs(sum - 1) < 1e-12)
    -- binomial-like shape: the middle bin is the most likely (19/81)
    assert.is_true(math.abs(probs[5] - 19 / 81) < 0.03)
    -- tau = 0 and 8 have a single arch each: the conditionals pin it down
    local archs, fl, tries = s:sample(0, 5)
    for i = 1, 5 do
      assert.are.same({1, 1, 1, 1}, archs[i])
      assert.are.equal(0, fl[i])
      assert.are.equal(1, tries[i])
    end
    -- every sample is in its target bin or took all 101 trials
    for _ = 1, 200 do
      local tau = s:sample_target()
      assert.are.equal("integer", math.type(tau))
      local a, f, t = s:sample(tau, 2)
      for i = 1, 2 do
        assert.is_true(t[i] >= 1 and t[i] <= 101)
        assert.is_true(f[i] == tau or t[i] == 101)
        assert.are.equal(s:flops(a[i]), f[i])
      end
    end
  end)

  it("builds from a given table, discretises with Python rounding, accepts the last draw", function()
    -- table claims FLOPs that the model disagrees with: nothing can hit
    local tab = {}
    for i = 1, 20 do tab[i] = {arch = {1 + i % 2, 1 + (i // 2) % 2}, flops = 12.5} end
    local s = S.attentive{choices = {2, 2}, table = tab, step = 25, seed = 3,
                          flops = function() return 1000 end}
    local taus, probs = s:prior()
    assert.are.same({0}, taus) -- round(0.5) == 0 (half to even)
    assert.are.same({1}, probs)
    local a, f, t = s:sample(0, 3)
    for i = 1, 3 do
      assert.are.equal(101, t[i])
      assert.are.equal(1000, f[i])
      assert.is_true(valid(a[i], {2, 2}))
    end
    local s0 = S.attentive{choices = {2, 2}, table = tab, max_trials = 0,
                           flops = function() return 1000 end}
    local _, _, t0 = s0:sample(0)
    assert.are.same({1}, t0)
    -- flops_uniform draws taus uniformly over the observed bins
    local tab2 = {}
    for i = 1, 99 do tab2[i] = {arch = {1, 1}, flops = 0} end
    tab2[100] = {arch = {2, 2}, flops = 50}
    local u = S.attentive{choices = {2, 2}, table = tab2, flops_uniform = true, seed = 1,
                          flops = {per_gene = {{0, 25}, {0, 25}}}}
    local n50 = 0
    for _ = 1, 1000 do if u:sample_target() == 50 then n50 = n50 + 1 end end
    assert.is_true(n50 > 400 and n50 < 600)
  end)

  it("hits a target bin in a handful of tries where uniform rejection needs far more", function()
    -- the AttentiveNAS space (31 genes) with its real FLOPs formula; the
    -- sampler's table comes from 10000 uniform subnets, step 25 MFLOPs
    -- the formula reproduces the released AttentiveNAS-A0 (203 MFLOPs):
    -- res 192, every width/depth/kernel minimal, expand {1,4,4,4,4,6,6}
    assert.is_true(math.abs(anas_flops(rep(1, 31)) - 203) < 1)
    local s = S.attentive{choices = ANAS_CHOICES, seed = 0, step = 25, draws = 10000,
                          flops = anas_flops}
    local taus, probs = s:prior()
    assert.is_true(#taus > 30)
    local u = S.uniform{choices = ANAS_CHOICES, seed = 1}
    local function uniform_tries(tau, cap)
      for t = 1, cap do
        local f = anas_flops(u:sample())
        -- Python round, half to even (ties are measure zero here)
        if math.floor(f / 25 + 0.5) * 25 == tau then return t end
      end
      return cap
    end
    -- (1) targets drawn from the prior, as during supernet training
    local n, att, uni, hits = 300, 0, 0, 0
    for _ = 1, n do
      local tau = s:sample_target()
      local a, f, t = s:sample(tau)
      att = att + t[1]
      if math.floor(f[1] / 25 + 0.5) * 25 == tau then hits = hits + 1 end
      uni = uni + uniform_tries(tau, 5000)
    end
    att, uni = att / n, uni / n
    -- (2) a narrow bin in the tail: the 3rd-lowest observed tau
    local tail = taus[3]
    local att_tail, uni_tail, m = 0, 0, 30
    for _ = 1, m do
      local _, _, t = s:sample(tail)
      att_tail = att_tail + t[1]
      uni_tail = uni_tail + uniform_tries(tail, 20000)
    end
    att_tail, uni_tail = att_tail / m, uni_tail / m
    print(("\nattentive vs uniform rejection (AttentiveNAS space, step 25 MFLOPs, %d bins %s..%s):"
      .. "\n  prior targets: attentive %.1f tries (%d%% hit), uniform %.1f tries"
      .. "\n  tail bin %s (prior %.4f): attentive %.1f tries, uniform %.1f tries")
      :format(#taus, taus[1], taus[#taus], att, 100 * hits // n, uni, tail, probs[3],
              att_tail, uni_tail))
    assert.is_true(att < 20, "attentive average " .. att)
    assert.is_true(uni > 2.5 * att, ("uniform %.1f vs attentive %.1f"):format(uni, att))
    assert.is_true(hits / n > 0.9)
    assert.is_true(uni_tail > 10 * att_tail, ("tail: uniform %.1f vs attentive %.1f"):format(uni_tail, att_tail))
  end)

  it("runs the constrained loop in C with the additive FLOPs table", function()
    -- an additive surrogate of the same space: per-gene contributions
    local per_gene = {}
    for g, c in ipairs(ANAS_CHOICES) do
      per_gene[g] = {}
      for v = 1, c do per_gene[g][v] = (g % 7 + 1) * v * 3.7 end
    end
    local s = S.attentive{choices = ANAS_CHOICES, seed = 2, draws = 20000,
                          flops = {base = 150, per_gene = per_gene}}
    local t0 = os.clock()
    local tot, n = 0, 2000
    for _ = 1, n do
      local _, _, t = s:sample(s:sample_target())
      tot = tot + t[1]
    end
    local dt = os.clock() - t0
    assert.is_true(tot / n < 20)
    assert.is_true(dt < 2, "2000 constrained samples took " .. dt .. " s")
  end)
end)

---------------------------------------------------------------------------
describe("nasrt.sampler evolution helpers", function()
  local choices = rep(4, 20)
  local parent = rep(2, 20)

  it("mutate resamples genes with the given probability, reproducibly", function()
    local r1, r2 = S.uniform{choices = {2}, seed = 1}, S.uniform{choices = {2}, seed = 1}
    assert.are.same(parent, S.mutate(parent, choices, 0, r1))
    r2:set_state(r1:state())
    local c1 = S.mutate(parent, choices, 0.3, r1)
    local c2 = S.mutate(parent, choices, 0.3, r2)
    assert.are.same(c1, c2)
    assert.are.same(rep(2, 20), parent) -- input untouched
    assert.is_true(valid(c1, choices))
    -- force_different: every gene changes at prob 1
    local d = S.mutate(parent, choices, 1, r1, {force_different = true})
    for g = 1, 20 do assert.are_not.equal(2, d[g]) end
    -- without it, about 1/4 of resampled genes keep their value (SPOS)
    local kept = 0
    for _ = 1, 200 do
      local c = S.mutate(parent, choices, 1, r1)
      for g = 1, 20 do if c[g] == 2 then kept = kept + 1 end end
    end
    assert.is_true(math.abs(kept / 4000 - 0.25) < 0.03)
    -- per-gene probability ~ prob
    local changed = 0
    for _ = 1, 500 do
      local c = S.mutate(parent, choices, 0.1, r1, {force_different = true})
      for g = 1, 20 do if c[g] ~= 2 then changed = changed + 1 end end
    end
    assert.is_true(math.abs(changed / 10000 - 0.1) < 0.015)
    -- exactly_one (NAS-Bench-201 REA): one gene, always a different value
    for _ = 1, 100 do
      local c = S.mutate(parent, choices, nil, r1, {exactly_one = true})
      local diff = 0
      for g = 1, 20 do if c[g] ~= parent[g] then diff = diff + 1 end end
      assert.are.equal(1, diff)
    end
    -- a sampler can stand for its search space
    assert.is_true(valid(S.mutate(parent, S.uniform{choices = choices}, 0.5, r1), choices))
    -- single-choice genes never change
    assert.are.same({1, 1}, S.mutate({1, 1}, {1, 1}, 1, r1, {force_different = true}))
  end)

  it("crossover takes each gene from either parent", function()
    local r = S.uniform{choices = {2}, seed = 4}
    local a, b = rep(1, 20), rep(3, 20)
    local from_a = 0
    for _ = 1, 200 do
      local c = S.crossover(a, b, r)
      for g = 1, 20 do
        assert.is_true(c[g] == 1 or c[g] == 3)
        if c[g] == 1 then from_a = from_a + 1 end
      end
    end
    assert.is_true(math.abs(from_a / 4000 - 0.5) < 0.03)
    assert.are.same(a, S.crossover(a, a, r))
    local r1, r2 = S.uniform{choices = {2}, seed = 8}, S.uniform{choices = {2}, seed = 8}
    assert.are.same(S.crossover(a, b, r1), S.crossover(a, b, r2))
  end)
end)

---------------------------------------------------------------------------
describe("nasrt.sampler.sandwich", function()
  it("gives max, min and random subnets", function()
    local s = S.sandwich{choices = {2, 3, 4}, seed = 1}
    assert.are.same({2, 3, 4}, s:max())
    assert.are.same({1, 1, 1}, s:min())
    for _ = 1, 50 do assert.is_true(valid(s:random(), {2, 3, 4})) end
    local set = s:sample(4)
    assert.are.equal(4, #set)
    assert.are.same(s:max(), set[1])
    assert.are.same(s:min(), set[4])
    assert.are.equal(2, #s:sample(2))
  end)

  it("honours a per-gene order (smallest first)", function()
    local s = S.sandwich{choices = {3, 2}, order = {{2, 1, 3}, {2, 1}}}
    assert.are.same({3, 1}, s:max())
    assert.are.same({2, 2}, s:min())
  end)
end)

---------------------------------------------------------------------------
describe("nasrt.sampler errors", function()
  local u = S.uniform{choices = {2, 2}}
  local fair = S.strict_fair{choices = {2, 2}}
  local att = S.attentive{choices = {2, 2}, step = 1, draws = 100, flops = {per_gene = {{0, 1}, {0, 1}}}}
  local bad = {
    {function() return S.uniform() end, "uniform"},
    {function() return S.uniform{} end, "sampler.uniform: 'choices'"},
    {function() return S.uniform{choices = {}} end, "sampler.uniform: 'choices' is empty"},
    {function() return S.uniform{choices = {2, 0}} end, "sampler.uniform: choices[2]"},
    {function() return S.uniform{choices = {2, 1.5}} end, "sampler.uniform: choices[2]"},
    {function() return S.uniform{choices = {2}, sede = 1} end, "unknown option 'sede'"},
    {function() return S.uniform{choices = {2}, seed = "x"} end, "sampler.uniform: option 'seed'"},
    {function() return S.strict_fair{choices = {3, 4}} end, "sampler.strict_fair: strict fairness"},
    {function() return S.flops_bins{choices = {2}, flops = function() return 0 end} end,
     "sampler.flops_bins: option 'bins'"},
    {function() return S.flops_bins{choices = {2}, bins = {{1, 2}}} end,
     "sampler.flops_bins: option 'flops' is required"},
    {function() return S.flops_bins{choices = {2}, bins = {{3, 2}}, flops = function() return 0 end} end,
     "lo > hi"},
    {function() return S.flops_bins{choices = {2}, bins = {{1, 2}}, flops = {per_gene = {{1}}}} end,
     "sampler.flops_bins: option 'flops': per_gene[1]"},
    {function() return S.flops_bins{choices = {2}, bins = {{1, 2}}, flops = function() return "x" end}:sample() end,
     "flops_bins:sample: the flops function returned string"},
    {function() return S.attentive{choices = {2}, flops = function() return 0 end, draws = 0} end,
     "sampler.attentive: option 'draws'"},
    {function() return S.attentive{choices = {2}, flops = function() return 0 end, table = {{arch = {3}, flops = 1}}} end,
     "sampler.attentive: table[i].arch[1]"},
    {function() return S.attentive{choices = {2}, flops = function() return 0 end, table = {}} end,
     "sampler.attentive: option 'table' is empty"},
    {function() return S.attentive{choices = {2}, step = 0, flops = function() return 0 end} end,
     "sampler.attentive: option 'step'"},
    {function() return att:sample(100) end, "attentive:sample: target 100"},
    {function() return att:sample(0.5) end, "not a multiple of the step"},
    {function() return att:sample("x") end, "attentive:sample"},
    {function() return att:flops({1}) end, "attentive:flops: arch has 1 genes"},
    {function() return u:flops({1, 1}) end, "flops"},
    {function() return fair.next(u) end, "strict_fair:next"},
    {function() return u:randint(0) end, "uniform:randint"},
    {function() return u:set_state(fair:state()) end, "uniform:set_state: state is from a 'strict_fair'"},
    {function() return S.mutate({1, 3}, {2, 2}, 0.1, u) end, "sampler.mutate: arch[2] = 3 out of range"},
    {function() return S.mutate({1, 1}, {2, 2}, 2, u) end, "sampler.mutate: argument #3 (prob)"},
    {function() return S.mutate({1, 1}, {2, 2}, 0.1, {}) end, "sampler.mutate: argument #4"},
    {function() return S.mutate({1, 1}, {2, 2}, 0.1, u, {force = true}) end, "unknown option 'force'"},
    {function() return S.mutate({1}, {2, 2}, 0.1, u) end, "sampler.mutate: arch has 1 genes"},
    {function() return S.crossover({1, 2}, {1}, u) end, "sampler.crossover"},
    {function() return S.crossover({1, 2}, {1, 2}) end, "sampler.crossover: argument #3"},
    {function() return S.sandwich{choices = {2}, order = {{1, 1}}} end, "sampler.sandwich: order[1] repeats"},
    {function() return S.sandwich{choices = {2}}:sample(1) end, "sandwich:sample"},
  }
  for i, case in ipairs(bad) do
    it(("raises a message naming the function (%d: %s)"):format(i, case[2]), function()
      local ok, err = pcall(case[1])
      assert.is_false(ok)
      assert.matches(case[2], tostring(err), 1, true)
    end)
  end
end)
