-- nasrt.search: SPOS evolution, regularized evolution, random search,
-- Pareto helpers and the AttentiveNAS / NSGA-II Pareto searches, and the
-- supernet-quality metrics.  Covers exact values of the metrics (scipy's
-- documented examples and hand counts), optimisation on synthetic problems
-- with known optima, determinism, exact resume through nasrt.save/load,
-- and REA on the NAS-Bench-201 tables.
local core = require "nasrt.core"
local search = require "nasrt.search"
local bench = require "nasrt.bench"
local S = core.sampler

local function rep(v, n)
  local t = {}
  for i = 1, n do t[i] = v end
  return t
end

local function near(a, b, tol) return math.abs(a - b) <= (tol or 1e-12) end

local function is_nan(x) return x ~= x end

-- a small deterministic generator for synthetic problems (independent of
-- the samplers under test)
local function lcg(seed)
  return function()
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed / 2147483648
  end
end

-- Separable weighted problem: genes of C choices, integer weights; legal
-- archs use choice C in at most `lim` genes.  Its optimum is the best
-- non-C value per gene plus the `lim` largest positive gains of C.
local function weighted_problem(G, C, lim, seed)
  local r = lcg(seed)
  local w = {}
  for g = 1, G do
    w[g] = {}
    for v = 1, C do w[g][v] = math.floor(r() * 100) end
  end
  local P = {choices = rep(C, G)}
  function P.score(a)
    local s = 0
    for g = 1, G do s = s + w[g][a[g]] end
    return s
  end
  function P.legal(a)
    local k = 0
    for g = 1, G do if a[g] == C then k = k + 1 end end
    return k <= lim
  end
  local base, gains = 0, {}
  for g = 1, G do
    local b = -1
    for v = 1, C - 1 do b = math.max(b, w[g][v]) end
    base = base + b
    gains[g] = w[g][C] - b
  end
  table.sort(gains, function(a, b) return a > b end)
  P.optimum = base
  for i = 1, lim do if gains[i] > 0 then P.optimum = P.optimum + gains[i] end end
  return P
end

local function keys(evals)
  local out = {}
  for i, r in ipairs(evals) do out[i] = table.concat(r.arch, ",") .. "=" .. r.score end
  return out
end

-- state -> nasrt.save -> nasrt.load (what a recipe checkpoint does)
local function roundtrip(st)
  local path = os.tmpname()
  assert(core.save(path, {search = st}))
  local back = assert(core.load(path))
  os.remove(path)
  return back.search
end

---------------------------------------------------------------------------
describe("nasrt.search metrics", function()
  -- naive O(n^2) tau-b straight from the definition
  local function naive_tau(x, y)
    local P, Q, Tx, Ty = 0, 0, 0, 0
    for i = 1, #x - 1 do
      for j = i + 1, #x do
        local dx = x[i] < x[j] and -1 or (x[i] > x[j] and 1 or 0)
        local dy = y[i] < y[j] and -1 or (y[i] > y[j] and 1 or 0)
        if dx == 0 and dy == 0 then -- tied in both: counted nowhere
        elseif dx == 0 then Tx = Tx + 1
        elseif dy == 0 then Ty = Ty + 1
        elseif dx == dy then P = P + 1
        else Q = Q + 1 end
      end
    end
    return (P - Q) / math.sqrt((P + Q + Tx) * (P + Q + Ty))
  end

  it("kendall_tau is tau-b: scipy's documented example and hand counts", function()
    -- scipy.stats.kendalltau docs: x1 = [12, 2, 1, 12, 2], x2 = [1, 4, 7, 1, 0]
    -- P=2, Q=6, T_x=1, T_y=0 (one pair tied in both): -4/sqrt(9*8)
    assert.is_true(near(search.kendall_tau({12, 2, 1, 12, 2}, {1, 4, 7, 1, 0}), -0.47140452079103173))
    -- no ties: P=5, Q=1
    assert.is_true(near(search.kendall_tau({1, 2, 3, 4}, {1, 3, 2, 4}), 2 / 3))
    -- ties on both sides: P=20, Q=2, T_x=3, T_y=3 -> 18/25 (checked with a
    -- brute-force count in python3)
    assert.is_true(near(search.kendall_tau({1, 1, 2, 2, 3, 3, 4, 5}, {2, 1, 2, 3, 3, 5, 4, 4}), 0.72))
    assert.are.equal(1, search.kendall_tau({1, 2, 3}, {10, 20, 30}))
    assert.are.equal(-1, search.kendall_tau({1, 2, 3, 4, 5}, {5, 4, 3, 2, 1}))
    -- undefined cases are NaN, as scipy
    assert.is_true(is_nan(search.kendall_tau({1}, {2})))
    assert.is_true(is_nan(search.kendall_tau({1, 1, 1}, {1, 2, 3})))
    assert.is_true(is_nan(search.kendall_tau({1, 0 / 0, 3}, {1, 2, 3})))
  end)

  it("kendall_tau (O(n log n)) agrees with the O(n^2) definition on tied data", function()
    local r = lcg(5)
    for trial = 1, 40 do
      local n = 2 + trial * 3
      local levels = trial % 4 == 0 and 1e9 or (2 + trial % 7) -- few levels: many ties
      local x, y = {}, {}
      for i = 1, n do
        x[i] = math.floor(r() * levels)
        y[i] = math.floor(r() * levels) + 0.5 * x[i]
      end
      local want = naive_tau(x, y)
      local got = search.kendall_tau(x, y)
      if is_nan(want) then assert.is_true(is_nan(got))
      else assert.is_true(near(got, want, 1e-12), ("n=%d: %.15g vs %.15g"):format(n, got, want)) end
    end
    -- large n stays fast
    local x, y = {}, {}
    for i = 1, 20000 do x[i], y[i] = r(), r() end
    local t0 = os.clock()
    assert.is_true(math.abs(search.kendall_tau(x, y)) < 0.03)
    assert.is_true(os.clock() - t0 < 2)
  end)

  it("spearman, pearson and rankdata match scipy's documented examples", function()
    -- scipy.stats.spearmanr([1,2,3,4,5], [5,6,7,8,7]) = 0.8207826816681233
    assert.is_true(near(search.spearman({1, 2, 3, 4, 5}, {5, 6, 7, 8, 7}), 0.8207826816681233))
    -- scipy.stats.pearsonr([1,2,3,4,5], [10,9,2.5,6,4]) = -0.7426106572325057
    assert.is_true(near(search.pearson({1, 2, 3, 4, 5}, {10, 9, 2.5, 6, 4}), -0.7426106572325057))
    assert.are.same({1.5, 3, 1.5, 4}, search.rankdata({10, 20, 10, 30}))
    assert.are.same({2, 2, 2}, search.rankdata({7, 7, 7}))
    assert.is_true(is_nan(search.pearson({1, 1}, {1, 2})))
    assert.is_true(is_nan(search.spearman({3}, {3})))
  end)

  it("sparse Kendall tau bins the ground truth (percent rescaled to [0, 1])", function()
    -- 0.1 % bins: 91.11, 91.12, 91.19 share bin 911; 92.5 is bin 925.
    -- P=3, Q=0, T_x=3 -> 3/sqrt(6*3)
    local truth, pred = {91.11, 91.12, 91.19, 92.5}, {1, 2, 3, 4}
    assert.is_true(near(search.sparse_kendall_tau(truth, pred), 3 / math.sqrt(18)))
    -- finer bins separate them again
    assert.are.equal(1, search.sparse_kendall_tau(truth, pred, {threshold = 1e-5}))
    -- accuracies already in [0, 1] are not rescaled
    assert.is_true(near(search.sparse_kendall_tau({0.9111, 0.9112, 0.9119, 0.925}, pred), 3 / math.sqrt(18)))
  end)

  it("precision@K, aw_nas P@top-K and top-k percentiles", function()
    local truth, pred = {5, 4, 3, 2, 1}, {5, 3, 4, 1, 2}
    assert.are.equal(1, search.precision_at_k(truth, pred, 1))
    assert.are.equal(0.5, search.precision_at_k(truth, pred, 2)) -- {1,2} vs {1,3}
    assert.are.equal(1, search.precision_at_k(truth, pred, 3))
    assert.are.equal(search.precision_at_k, search.topk_overlap)
    -- 10 archs; the predictor swaps the true ranks 2<->3, 4<->5 and 8<->9
    local t10, p10 = {}, {}
    for i = 1, 10 do t10[i] = 100 - i end
    local perm = {1, 3, 2, 5, 4, 6, 7, 9, 8, 10} -- predicted rank of arch i
    for i = 1, 10 do p10[i] = 100 - perm[i] end
    local rows = search.p_at_top_k(t10, p10, {0.05, 0.1, 0.2, 0.5, 1.0})
    assert.are.equal(4, #rows) -- K = 0 is skipped
    assert.are.same({0.1, 1, 1, 1}, {rows[1].ratio, rows[1].k, rows[1].found, rows[1].precision})
    assert.is_true(is_nan(rows[1].tau)) -- one arch: tau undefined
    -- predicted top-2 = archs {1, 3}: only arch 1 is in the true top-2
    assert.are.same({2, 1, 0.5}, {rows[2].k, rows[2].found, rows[2].precision})
    -- predicted top-5 = {1, 3, 2, 5, 4} = the true top-5; among them 2 of
    -- the 10 pairs are discordant: (8 - 2) / 10
    assert.are.same({5, 5, 1}, {rows[3].k, rows[3].found, rows[3].precision})
    assert.is_true(near(rows[3].tau, 0.6))
    assert.are.same({10, 10, 1}, {rows[4].k, rows[4].found, rows[4].precision})
    assert.is_true(near(rows[4].tau, (42 - 3) / 45)) -- all 10: 3 discordant pairs
    local p, summary = search.top_percentile(t10, p10, 3)
    assert.are.same({0.1, 0.3, 0.2}, p)
    assert.are.same({min = 0.1, median = 0.2, max = 0.3}, summary)
  end)

  it("rejects mismatched inputs with messages naming the function", function()
    local cases = {
      {function() search.kendall_tau({1, 2}, {1}) end, "kendall_tau: lists have 2 and 1 values"},
      {function() search.spearman({1, "x"}, {1, 2}) end, "spearman: value 2 is not a number"},
      {function() search.pearson(nil, {}) end, "pearson: expected two lists"},
      {function() search.precision_at_k({1, 2}, {1, 2}, 3) end, "precision_at_k: k must be an integer in 1..2"},
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(c[1])
      assert.is_false(ok)
      assert.matches(c[2], tostring(err), 1, true)
    end
  end)
end)

---------------------------------------------------------------------------
describe("nasrt.search Pareto helpers", function()
  -- {top-1, MFLOPs}: maximize accuracy, minimize FLOPs
  local pts = {
    {93.0, 300}, -- 1 front
    {92.0, 200}, -- 2 front
    {92.5, 350}, -- 3 dominated by 1
    {94.0, 500}, -- 4 front
    {91.0, 200}, -- 5 dominated by 2
    {93.0, 300}, -- 6 equal to 1: equal points do not dominate each other
    {90.0, 100}, -- 7 front
  }
  local MM = {maximize = {true, false}}

  it("pareto_front keeps the non-dominated points in input order", function()
    local front, idx = search.pareto_front(pts, MM)
    assert.are.same({1, 2, 4, 6, 7}, idx)
    assert.are.equal(pts[4], front[3]) -- the given tables themselves
    -- maximizing both: only the most accurate (and the biggest) survive
    local _, both = search.pareto_front(pts)
    assert.are.same({4}, both)
    -- minimizing both
    local _, mins = search.pareto_front(pts, {maximize = false})
    assert.are.same({7}, mins)
    -- records through a key function
    local recs = {}
    for i, p in ipairs(pts) do recs[i] = {acc = p[1], flops = p[2]} end
    local _, kidx = search.pareto_front(recs, {maximize = {true, false},
                                               key = function(r) return {r.acc, r.flops} end})
    assert.are.same(idx, kidx)
    assert.are.same({}, (search.pareto_front({})))
  end)

  it("nondominated_sort and crowding_distance (NSGA-II)", function()
    local fronts, rank = search.nondominated_sort(pts, MM)
    assert.are.same({{1, 2, 4, 6, 7}, {3, 5}}, fronts)
    assert.are.same({1, 1, 2, 1, 2, 1, 1}, rank)
    -- a chain of 4 points: extremes infinite, inner ones sum the
    -- normalised gaps of their neighbours in both objectives
    local chain = {{1, 1}, {2, 2}, {4, 3}, {5, 5}}
    local d = search.crowding_distance(chain, {1, 2, 3, 4}, MM)
    assert.are.equal(math.huge, d[1])
    assert.are.equal(math.huge, d[4])
    assert.is_true(near(d[2], (4 - 1) / 4 + (3 - 1) / 4))
    assert.is_true(near(d[3], (5 - 2) / 4 + (5 - 2) / 4))
    -- a flat objective adds nothing
    local flat = search.crowding_distance({{1, 7}, {2, 7}, {3, 7}}, {1, 2, 3})
    assert.is_true(near(flat[2], 1))
  end)

  it("round_half_even is Python's round", function()
    local cases = {{0.5, 0}, {1.5, 2}, {2.5, 2}, {3.5, 4}, {2.6, 3}, {-0.5, 0}, {-1.5, -2}, {7, 7}}
    for _, c in ipairs(cases) do
      local r = search.round_half_even(c[1])
      assert.are.equal(c[2], r)
      assert.are.equal("integer", math.type(r))
    end
  end)
end)

---------------------------------------------------------------------------
describe("nasrt.search.evolution (SPOS)", function()
  local P = weighted_problem(12, 4, 3, 2024)

  it("finds the constrained optimum of a separable problem within its budget", function()
    for seed = 1, 5 do
      local calls = 0
      local evo = search.evolution{choices = P.choices, seed = seed, constraint = P.legal,
                                   score = function(a) calls = calls + 1; return P.score(a) end}
      local best, score, hist = evo:run()
      assert.are.equal(P.optimum, score, "seed " .. seed)
      assert.are.equal(P.optimum, P.score(best))
      assert.is_true(P.legal(best))
      assert.are.equal(20, #hist)
      -- every legal candidate is scored exactly once, illegal ones never
      local seen = {}
      for _, r in ipairs(evo:evaluated()) do
        local k = table.concat(r.arch, ",")
        assert.is_nil(seen[k])
        seen[k] = true
        assert.is_true(P.legal(r.arch))
      end
      assert.are.equal(calls, evo:evaluations())
      assert.is_true(calls <= 50 + 20 * 50)
    end
  end)

  it("keeps an elitist top-k across generations and reports each epoch", function()
    local epochs = {}
    local evo = search.evolution{choices = P.choices, seed = 3, score = P.score, constraint = P.legal,
      epochs = 6, on_epoch = function(e, top) epochs[#epochs + 1] = {e, #top, top[1].score} end}
    local _, _, hist = evo:run()
    assert.are.equal(6, #epochs)
    local prev = -math.huge
    for e, h in ipairs(hist) do
      assert.are.equal(e, h.epoch)
      assert.are.same({e, 10, h.best_score}, epochs[e])
      assert.is_true(h.best_score >= prev) -- elitist: never gets worse
      prev = h.best_score
      for r = 2, #h.top do assert.is_true(h.top[r - 1].score >= h.top[r].score) end
      assert.are.equal(50, #h.population)
    end
    -- exactly the SPOS default budget: 50 initial + 50 per epoch
    assert.are.equal(50 + 6 * 50, hist[6].evaluations)
    local top = evo:top()
    assert.are.equal(10, #top)
    assert.are.equal(hist[6].top[1].score, top[1].score)
  end)

  it("is a function of the seed; a sampler can supply the generator", function()
    local function run(opts)
      opts.choices, opts.score, opts.constraint, opts.epochs = P.choices, P.score, P.legal, 4
      local evo = search.evolution(opts)
      evo:run()
      return keys(evo:evaluated())
    end
    local a, b, c = run{seed = 11}, run{seed = 11}, run{seed = 12}
    assert.are.same(a, b)
    assert.are_not.same(a, c)
    assert.are.same(a, run{sampler = S.uniform{choices = P.choices, seed = 11}})
    -- any sampler kind: random candidates come from its own draw
    local fb = S.flops_bins{choices = P.choices, seed = 1, bins = {{20, 30}},
                            flops = {per_gene = rep({1, 2, 3, 4}, 12)}}
    local evo = search.evolution{sampler = fb, score = P.score, epochs = 1}
    evo:run()
    local inbin = 0
    for i, r in ipairs(evo:evaluated()) do
      if i <= 50 and fb:flops(r.arch) >= 20 and fb:flops(r.arch) <= 30 then inbin = inbin + 1 end
    end
    assert.is_true(inbin >= 45)
  end)

  it("resumes from state() (through nasrt.save/load) on the identical trajectory", function()
    local full = search.evolution{choices = P.choices, seed = 7, score = P.score, constraint = P.legal}
    local best, score, hist = full:run()
    local want = keys(full:evaluated())

    local first = search.evolution{choices = P.choices, seed = 7, score = P.score, constraint = P.legal}
    for _ = 1, 7 do first:step() end
    local st = roundtrip(first:state())
    local scored_before = first:evaluations()

    local calls = 0
    local resumed = search.evolution{choices = P.choices, seed = 999, constraint = P.legal,
                                     score = function(a) calls = calls + 1; return P.score(a) end}
    resumed:set_state(st)
    assert.is_false(resumed:done())
    local best2, score2, hist2 = resumed:run()
    assert.are.same(want, keys(resumed:evaluated()))
    assert.are.same(best, best2)
    assert.are.equal(score, score2)
    assert.are.same(hist, hist2)
    assert.are.equal(#want - scored_before, calls) -- nothing is scored twice
    -- the state is plain data
    local function plain(v, path)
      local t = type(v)
      assert.is_true(t == "number" or t == "string" or t == "boolean" or t == "table", path .. " is " .. t)
      if t == "table" then for k, x in pairs(v) do plain(x, path .. "." .. tostring(k)) end end
    end
    plain(first:state(), "state")
  end)

  it("bounds its random draws and checks states", function()
    local impossible = search.evolution{choices = rep(3, 4), score = P.score,
                                        constraint = function() return false end, random_tries = 200}
    local ok, err = pcall(impossible.step, impossible)
    assert.is_false(ok)
    assert.matches("search.evolution: no legal arch in 200 random draws", err, 1, true)
    -- a space smaller than the population is exhausted without hanging
    local tiny = search.evolution{choices = {2, 2}, seed = 1, epochs = 3,
                                  score = function(a) return a[1] * 10 + a[2] end}
    local best, score = tiny:run()
    assert.are.same({2, 2}, best)
    assert.are.equal(22, score)
    assert.are.equal(4, tiny:evaluations())
    -- state checks
    local evo = search.evolution{choices = P.choices, score = P.score}
    local rea = search.rea{choices = P.choices, score = P.score}
    local other = search.evolution{choices = rep(4, 5), score = P.score}
    local bad = {
      {function() evo:set_state(rea:state()) end, "state is from a 'rea' search, this is 'evolution'"},
      {function() evo:set_state(other:state()) end, "search.evolution:set_state: state is for the search space"},
      {function() local s = evo:state(); s.rng.rng = {0, 0, 0, 0}; evo:set_state(s) end, "rng words are all zero"},
      {function() local s = evo:state(); s.topk = 3; evo:set_state(s) end, "field 'topk' must be a table"},
      {function() search.evolution{choices = P.choices, score = P.score, popuation = 3} end,
       "search.evolution: unknown option 'popuation'"},
      {function() search.evolution{choices = P.choices} end, "search.evolution: option 'score' must be a function"},
      {function() search.evolution{choices = {2, 0}, score = P.score} end, "search.evolution: choices[2]"},
      {function() search.evolution{choices = P.choices, score = P.score, m_prob = 2} end, "option 'm_prob'"},
      {function() search.evolution{choices = {2}, score = function() return "x" end}:step() end,
       "search.evolution: score returned string"},
      {function() search.evolution{choices = {2}, score = P.score, seed = 1, sampler = S.uniform{choices = {2}}} end,
       "give either 'seed' or 'sampler'"},
    }
    for _, c in ipairs(bad) do
      local ok2, e = pcall(c[1])
      assert.is_false(ok2)
      assert.matches(c[2], tostring(e), 1, true)
    end
  end)
end)

---------------------------------------------------------------------------
describe("nasrt.search.rea and random", function()
  local P = weighted_problem(20, 4, 20, 99) -- unconstrained

  it("regularized evolution beats random search on average (fixed seeds)", function()
    local rea_sum, rnd_sum, wins = 0, 0, 0
    for seed = 1, 10 do
      local _, a = search.rea{choices = P.choices, seed = seed, score = P.score, cycles = 200}:run()
      local _, b = search.random{choices = P.choices, seed = seed, score = P.score, n = 200}:run()
      rea_sum, rnd_sum = rea_sum + a, rnd_sum + b
      if a > b then wins = wins + 1 end
    end
    assert.is_true(rea_sum > rnd_sum + 10 * 50, ("REA %.1f vs random %.1f"):format(rea_sum / 10, rnd_sum / 10))
    assert.is_true(wins >= 9)
  end)

  it("ages out the oldest member and spends exactly its cycles", function()
    local parents = {}
    local rea = search.rea{choices = P.choices, seed = 4, score = P.score, population = 8, sample = 3,
                           cycles = 40}
    for _ = 1, 40 do rea:step() end
    assert.is_true(rea:done())
    assert.is_nil(rea:step())
    assert.are.equal(40, rea:evaluations())
    local st = rea:state()
    assert.are.same({33, 34, 35, 36, 37, 38, 39, 40}, st.population)
    -- the default mutation changes exactly one gene of a population member
    local evals = rea:evaluated()
    for i = 9, 40 do
      local one = false
      for j = i - 8, i - 1 do
        local diff = 0
        for g = 1, 20 do if evals[i].arch[g] ~= evals[j].arch[g] then diff = diff + 1 end end
        if diff == 1 then one = true end
      end
      assert.is_true(one, "child " .. i)
    end
    -- custom mutation, tournament without replacement, time budget
    local calls = 0
    local r2 = search.rea{choices = P.choices, seed = 4, score = P.score, population = 5, sample = 5,
                          replace = false, cycles = 1000, budget = 12, cost = function() return 1 end,
                          mutate = function(a, rng)
                            calls = calls + 1
                            parents[#parents + 1] = table.concat(a, ",")
                            a[1] = rng:randint(4)
                            return a
                          end}
    r2:run()
    assert.are.equal(12, r2:evaluations())
    assert.are.equal(7, calls)
    -- sample = population without replacement: the parent is always the
    -- best of the current population
    local ev = r2:evaluated()
    for c = 1, 7 do
      local best, bs = nil, -math.huge
      for j = c, c + 4 do if ev[j].score > bs then best, bs = j, ev[j].score end end
      assert.are.equal(table.concat(ev[best].arch, ","), parents[c])
    end
  end)

  it("is deterministic and resumes exactly (REA and random)", function()
    for _, make in ipairs{
      function(seed) return search.rea{choices = P.choices, seed = seed, score = P.score, cycles = 60} end,
      function(seed) return search.random{choices = P.choices, seed = seed, score = P.score, n = 60} end,
    } do
      local a = make(5)
      a:run()
      local b = make(5)
      b:run()
      assert.are.same(keys(a:evaluated()), keys(b:evaluated()))
      local c = make(6)
      c:run()
      assert.are_not.same(keys(a:evaluated()), keys(c:evaluated()))
      local d = make(5)
      for _ = 1, 23 do d:step() end
      local e = make(77)
      e:set_state(roundtrip(d:state()))
      local best, score, hist = e:run()
      assert.are.same(keys(a:evaluated()), keys(hist))
      local abest, ascore = a:best()
      assert.are.same(abest, best)
      assert.are.equal(ascore, score)
    end
  end)

  it("random search stops on a cost budget and resumes its spending", function()
    local cost = function(a) return a[1] end           -- 1..4 per evaluation
    local rs = search.random{choices = P.choices, seed = 3, score = P.score, n = 1000, budget = 50,
                             cost = cost}
    local _, _, hist = rs:run()
    local spent = 0
    for k, r in ipairs(hist) do
      if k == #hist then assert.is_true(spent < 50) end  -- under budget before the last one
      spent = spent + r.arch[1]
    end
    assert.is_true(spent >= 50)
    assert.are.equal(spent, rs.spent)
    -- resume mid-way: the same evaluations and the same spending
    local d = search.random{choices = P.choices, seed = 3, score = P.score, n = 1000, budget = 50, cost = cost}
    for _ = 1, 5 do d:step() end
    local e = search.random{choices = P.choices, seed = 9, score = P.score, n = 1000, budget = 50, cost = cost}
    e:set_state(roundtrip(d:state()))
    local _, _, h2 = e:run()
    assert.are.same(keys(hist), keys(h2))
    assert.are.equal(rs.spent, e.spent)
    -- a state saved before random search had a budget (no 'spent') loads
    local old = d:state()
    old.spent = nil
    local f = search.random{choices = P.choices, seed = 3, score = P.score, n = 20}
    f:set_state(old)
    assert.are.equal(0, f.spent)
    assert.are.equal(5, f:evaluations())
    local ok, err = pcall(search.random, {choices = P.choices, score = P.score, budget = 5})
    assert.is_false(ok)
    assert.matches("search.random: option 'budget' needs option 'cost'", err, 1, true)
  end)

  it("random search draws n legal archs; dedup skips repeats", function()
    local legal = function(a) return a[1] ~= 4 end
    local rs = search.random{choices = P.choices, seed = 2, score = P.score, n = 50, constraint = legal}
    local best, score, hist = rs:run()
    assert.are.equal(50, #hist)
    local mx = -math.huge
    for _, r in ipairs(hist) do
      assert.is_true(legal(r.arch))
      mx = math.max(mx, r.score)
    end
    assert.are.equal(mx, score)
    assert.are.equal(score, P.score(best))
    local small = search.random{choices = {2, 2}, seed = 1, n = 4, dedup = true, score = function() return 0 end}
    local _, _, h = small:run()
    local seen = {}
    for _, r in ipairs(h) do
      local k = table.concat(r.arch, ",")
      assert.is_nil(seen[k])
      seen[k] = true
    end
    local more = search.random{choices = {2, 2}, seed = 1, n = 5, dedup = true, tries = 50,
                               score = function() return 0 end}
    local ok, err = pcall(more.run, more)
    assert.is_false(ok)
    assert.matches("search.random: no legal unseen arch in 50 random draws", err, 1, true)
  end)

  it("REA on NAS-Bench-201 (12-epoch val score, 100 evaluations) finds > 93% test cells", function()
    local nb = bench.nb201()
    local function val12(a) return nb:query(bench.nb201_decode(a)).cifar10.val12 end
    local function test200(a) return nb:query(bench.nb201_decode(a)).cifar10.test end
    local rea_sum, rnd_sum, seeds = 0, 0, 8
    for seed = 1, seeds do
      local rea = search.rea{choices = bench.NB201_CHOICES, seed = seed, score = val12,
                             population = 10, sample = 3, cycles = 100}
      local arch = rea:run()
      assert.are.equal(100, rea:evaluations())
      rea_sum = rea_sum + test200(arch)
      local rnd = search.random{choices = bench.NB201_CHOICES, seed = seed, score = val12, n = 100}
      rnd_sum = rnd_sum + test200((rnd:run()))
    end
    local rea_mean, rnd_mean = rea_sum / seeds, rnd_sum / seeds
    print(("\nNB201 CIFAR-10, 100 evaluations, %d seeds: REA %.2f, random %.2f (reported 93.94 / 93.73)")
      :format(seeds, rea_mean, rnd_mean))
    assert.is_true(rea_mean > 93.0, ("REA mean test %.2f"):format(rea_mean))
    assert.is_true(rea_mean > rnd_mean)
  end)
end)

---------------------------------------------------------------------------
describe("nasrt.search.pareto", function()
  -- 8 genes of 4 choices with diminishing-returns accuracy and additive
  -- FLOPs; the true front comes from enumerating all 65536 archs
  local G, C = 8, 4
  local r = lcg(777)
  local k, c = {}, {}
  for g = 1, G do k[g], c[g] = 0.5 + 2 * r(), 1 + math.floor(9 * r()) end
  local function acc(a)
    local s = 0
    for g = 1, G do s = s + math.log(1 + k[g] * a[g]) end
    return s
  end
  local function flops(a)
    local f = 0
    for g = 1, G do f = f + c[g] * a[g] end
    return f
  end
  local truth
  local function true_front()
    if truth then return truth end
    local pts, a = {}, rep(1, G)
    while true do
      pts[#pts + 1] = {acc(a), flops(a)}
      local g = 1
      while g <= G do
        a[g] = a[g] + 1
        if a[g] <= C then break end
        a[g] = 1
        g = g + 1
      end
      if g > G then break end
    end
    -- sweep by FLOPs (pareto_front is O(n^2); it is checked on samples below)
    table.sort(pts, function(x, y)
      if x[2] ~= y[2] then return x[2] < y[2] end
      return x[1] > y[1]
    end)
    truth = {}
    local best = -math.huge
    for _, p in ipairs(pts) do
      if p[1] > best then
        truth[#truth + 1] = p
        best = p[1]
      end
    end
    return truth
  end
  -- hypervolume (accuracy up, FLOPs down) of the found records, relative
  -- to the true front's, inside [lo, hi] with the reference point
  -- (accuracy of the smallest arch, hi)
  local function hv(recs, lo, hi)
    local ref = acc(rep(1, G))
    local pts = {}
    for _, p in ipairs(recs) do
      if p.flops >= lo and p.flops <= hi and p.score > ref then pts[#pts + 1] = p end
    end
    table.sort(pts, function(x, y)
      if x.flops ~= y.flops then return x.flops < y.flops end
      return x.score > y.score
    end)
    local area, best = 0, ref
    for _, p in ipairs(pts) do
      if p.score > best then
        area = area + (hi - p.flops) * (p.score - best)
        best = p.score
      end
    end
    return area
  end
  local function hv_ratio(recs, lo, hi)
    local t = {}
    for i, p in ipairs(true_front()) do t[i] = {score = p[1], flops = p[2]} end
    return hv(recs, lo, hi) / hv(t, lo, hi)
  end
  local function random_front(n, seed, lo, hi)
    local s = S.uniform{choices = rep(C, G), seed = seed}
    local recs = {}
    while #recs < n do
      local a = s:sample()
      local f = flops(a)
      if f >= lo and f <= hi then recs[#recs + 1] = {score = acc(a), flops = f} end
    end
    return recs
  end

  it("bins (AttentiveNAS): best per FLOPs bin, all in range, closer to the true front than random", function()
    local lo, hi = 40, 140
    for seed = 1, 3 do
      local p = search.pareto{choices = rep(C, G), seed = seed, score = acc, flops = flops,
                              min_flops = lo, max_flops = hi, step = 2, population = 128,
                              mutation = 32, crossover = 32, iterations = 15,
                              init = {rep(1, G)}}
      local front, hist = p:run()
      assert.are.equal(15, #hist)
      local evals = p:evaluated()
      -- the archive holds, per bin, the best arch ever scored in that bin
      local best = {}
      for _, e in ipairs(evals) do
        assert.is_true(e.flops >= lo and e.flops <= hi or table.concat(e.arch) == "11111111")
        local b = search.round_half_even(e.flops / 2)
        if not best[b] or e.score > best[b] then best[b] = e.score end
      end
      local archive = p:archive()
      local nbins = 0
      for _ in pairs(best) do nbins = nbins + 1 end
      assert.are.equal(nbins, #archive)
      for i, rec in ipairs(archive) do
        assert.are.equal(best[rec.bin], rec.score)
        if i > 1 then assert.is_true(archive[i - 1].bin < rec.bin) end
      end
      -- the front is non-dominated and sorted by FLOPs
      for i = 2, #front do
        assert.is_true(front[i - 1].flops <= front[i].flops)
        assert.is_true(front[i - 1].score < front[i].score)
      end
      local h_evo = hv_ratio(front, lo, hi)
      local h_rnd = hv_ratio(random_front(#evals, seed, lo, hi), lo, hi)
      print(("\nbins seed %d: hypervolume %.4f of the true front's, random %.4f"):format(seed, h_evo, h_rnd))
      assert.is_true(h_evo > h_rnd + 0.03 and h_evo > 0.96, ("seed %d: %.4f vs random %.4f"):format(seed, h_evo, h_rnd))
    end
  end)

  it("nsga2: keeps its population, approaches the true front", function()
    local lo, hi = 30, 200
    for seed = 1, 3 do
      local fronts = 0
      local p = search.pareto{choices = rep(C, G), seed = seed, score = acc, flops = flops, method = "nsga2",
                              min_flops = lo, max_flops = hi, population = 60, iterations = 15,
                              on_iteration = function() fronts = fronts + 1 end}
      local front = p:run()
      assert.are.equal(15, fronts)
      assert.are.equal(60, #p:state().members)
      local pts = {}
      for i, rec in ipairs(front) do
        assert.is_true(rec.flops >= lo and rec.flops <= hi)
        pts[i] = {rec.score, rec.flops}
      end
      local _, idx = search.pareto_front(pts, {maximize = {true, false}})
      assert.are.equal(#front, #idx)
      local h_evo = hv_ratio(front, lo, hi)
      local h_rnd = hv_ratio(random_front(p:evaluations(), seed, lo, hi), lo, hi)
      print(("\nnsga2 seed %d: hypervolume %.4f of the true front's, random %.4f"):format(seed, h_evo, h_rnd))
      assert.is_true(h_evo > h_rnd + 0.03 and h_evo > 0.96, ("seed %d: %.4f vs random %.4f"):format(seed, h_evo, h_rnd))
    end
  end)

  it("is deterministic and resumes exactly (both methods)", function()
    for _, method in ipairs{"bins", "nsga2"} do
      local function make(seed)
        local o = {choices = rep(C, G), seed = seed, score = acc, flops = flops, method = method,
                   min_flops = 40, max_flops = 150, population = 30, iterations = 8}
        if method == "bins" then o.mutation, o.crossover, o.step = 10, 10, 3 end
        return search.pareto(o)
      end
      local a = make(3)
      local fa, ha = a:run()
      local b = make(3)
      for _ = 1, 3 do b:step() end
      local resumed = make(50)
      resumed:set_state(roundtrip(b:state()))
      local fb, hb = resumed:run()
      assert.are.same(keys(a:evaluated()), keys(resumed:evaluated()))
      assert.are.same(fa, fb)
      assert.are.same(ha, hb)
      local c = make(4)
      c:run()
      assert.are_not.same(keys(a:evaluated()), keys(c:evaluated()))
      -- a state of the other method is refused
      local other = method == "bins" and "nsga2" or "bins"
      local ok, err = pcall(resumed.set_state, resumed, search.pareto{choices = rep(C, G), score = acc,
        flops = flops, method = other}:state())
      assert.is_false(ok)
      assert.matches("search.pareto:set_state: state is from a 'pareto_" .. other, err, 1, true)
    end
  end)

  it("takes FLOPs from a sampler's model and checks its options", function()
    local fb = S.flops_bins{choices = rep(C, G), seed = 1, bins = {{40, 150}},
                            flops = {per_gene = (function()
                              local t = {}
                              for g = 1, G do t[g] = {c[g], 2 * c[g], 3 * c[g], 4 * c[g]} end
                              return t
                            end)()}}
    local p = search.pareto{sampler = fb, score = acc, min_flops = 40, max_flops = 150,
                            population = 20, mutation = 5, crossover = 5, iterations = 3}
    local front = p:run()
    for _, rec in ipairs(front) do assert.are.equal(flops(rec.arch), rec.flops) end
    local bad = {
      {function() search.pareto{choices = {2}, score = acc} end, "search.pareto: option 'flops' is required"},
      {function() search.pareto{choices = {2}, score = acc, flops = flops, method = "spea2"} end,
       "option 'method' must be"},
      {function() search.pareto{choices = {2}, score = acc, flops = flops, min_flops = 5, max_flops = 1} end,
       "min_flops 5 > max_flops 1"},
      {function() search.pareto{choices = {2}, score = acc, flops = flops, method = "nsga2", mutation = 3} end,
       "nsga2 breeds 'population' children"},
      {function() search.pareto{choices = rep(C, G), score = acc, flops = flops, min_flops = 1e9, tries = 10}:step() end,
       "search.pareto: no arch with FLOPs in"},
      {function() search.pareto{choices = {2}, score = acc, flops = flops, init = {{3}}} end,
       "search.pareto: init[1]: gene 1 = 3 out of range 1..2"},
    }
    for _, case in ipairs(bad) do
      local ok, err = pcall(case[1])
      assert.is_false(ok)
      assert.matches(case[2], tostring(err), 1, true)
    end
  end)
end)
