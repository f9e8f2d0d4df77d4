--- End-to-end specs of the one-shot recipes (spos, fairnas, attentivenas)
-- and the baselines (random, rea) on tiny configurations: 2-3 choice
-- layers, 8x8 inputs, a few steps, tiny evolution budgets.  Each run goes
-- through recipe.run into a temporary run directory; the specs check the
-- architecture, the files, strict fairness, ranking.json, and that a run
-- stopped part-way (--stop_after_steps, or a Ctrl-C in the middle of a
-- search generation) and resumed ends bit-identical to an uninterrupted one.
local nasrt = require "nasrt"
local recipe = require "nasrt.recipe"
local bench = require "nasrt.bench"
local lfs = require "lfs"

local function load(name) return dofile("recipes/" .. name .. ".lua") end

local root
local function tmpdir(tag)
  if not root then
    root = os.tmpname()
    os.remove(root)
    assert(lfs.mkdir(root))
  end
  local n = 0
  local d
  repeat
    n = n + 1
    d = ("%s/%s-%d"):format(root, tag or "run", n)
  until not recipe.exists(d)
  return d
end

local rm_rf = require("helpers").rm_rf

teardown(function() if root then rm_rf(root) end end)

local function merged(...)
  local out = {}
  for _, t in ipairs { ... } do
    for k, v in pairs(t) do out[k] = v end
  end
  return out
end

-- tiny data: 8x8 inputs, 64 training images, 32 validation images
local TINY = { input_size = 8, batch_size = 8, train_limit = 64, val_limit = 32,
  calib_batches = 2, calib_batch_size = 8, val_batch_size = 16, quiet = true, ckpt_every = 2 }

local SPOS = merged(TINY, { stem = 4, widths = "8,16", repeats = "1,1", last = 16, steps = 4,
  evo_epochs = 2, population = 4, select = 2, mutation = 2, crossover = 2 })
local FAIRNAS = merged(TINY, { stem = 8, stages = "8:1:2,16:1:1", head = 16, steps = 3,
  evo_epochs = 2, population = 4, select = 2, mutation = 2, crossover = 2 })
local ATT = merged(TINY, { space = "tiny", steps = 4, flops_table = 200, evo_iters = 2,
  population = 4, mutation = 2, crossover = 2, num_trials = 2 })

local function files(dir, names)
  for _, f in ipairs(names) do
    assert.is_true(recipe.exists(dir .. "/" .. f), dir .. "/" .. f .. " is missing")
  end
end

local function read_json(path)
  return assert(recipe.decode(assert(recipe.read_file(path), path)))
end

local function valid_arch(arch, choices)
  assert.equal(#choices, #arch)
  for g, c in ipairs(choices) do
    assert.is_true(math.type(arch[g]) == "integer" and arch[g] >= 1 and arch[g] <= c,
      ("gene %d = %s out of 1..%d"):format(g, tostring(arch[g]), c))
  end
end

local function events(dir, kind)
  local out = {}
  for _, r in ipairs(recipe.read_log(dir .. "/log.jsonl")) do
    if r.event == kind then out[#out + 1] = r end
  end
  return out
end

-- the same final arch, score and every training loss, exactly
local function same_run(a, b)
  assert.is_nil(a.interrupted)
  assert.is_nil(b.interrupted)
  assert.same(a.arch, b.arch)
  assert.equal(a.score, b.score)
  assert.equal(#a.losses, #b.losses)
  for i = 1, #a.losses do
    assert.equal(a.losses[i], b.losses[i], "loss of step " .. i)
  end
end

-- an uninterrupted run against one stopped after k units and resumed
local function check_resume(R, cfg, k)
  local full = recipe.run(R, merged(cfg, { out = tmpdir(R.name .. "-full") }))
  local dir = tmpdir(R.name .. "-stopped")
  local part = recipe.run(R, merged(cfg, { out = dir, stop_after_steps = k }))
  assert.is_true(part.interrupted)
  assert.equal(k, part.unit)
  files(dir, { "config.json", "log.jsonl", "checkpoint.nrck" })
  assert.is_false(recipe.exists(dir .. "/arch.json"))
  local res = recipe.run(R, { resume = dir })
  same_run(full, res)
  assert.equal(1, #events(dir, "interrupted"))
  assert.equal(1, #events(dir, "resume"))
  -- the resumed run continued: no step or search step was done twice
  assert.equal(#events(full.dir, "step"), #events(dir, "step"))
  assert.equal(#events(full.dir, "search"), #events(dir, "search"))
  assert.same(read_json(full.dir .. "/arch.json").genes, read_json(dir .. "/arch.json").genes)
  return full, res
end

-- a Ctrl-C (nasrt.interrupted) after `calls` checks, then resume
local function check_ctrl_c(R, cfg, calls)
  local full = recipe.run(R, merged(cfg, { out = tmpdir(R.name .. "-full") }))
  local dir = tmpdir(R.name .. "-ctrlc")
  local real, n = nasrt.interrupted, 0
  nasrt.interrupted = function()
    n = n + 1
    return n == calls
  end
  local ok, part = pcall(recipe.run, R, merged(cfg, { out = dir }))
  nasrt.interrupted = real
  assert.is_true(ok, tostring(part))
  assert.is_true(part.interrupted)
  local res = recipe.run(R, { resume = dir })
  same_run(full, res)
  return full, res, dir
end

describe("recipes/spos", function()
  local R = load("spos")

  it("answers --help with every option", function()
    local usage = recipe.usage(R)
    for _, d in ipairs(R.defaults) do assert.truthy(usage:find("--" .. d[1], 1, true)) end
  end)

  it("trains, searches under the FLOPs limit and writes its run directory", function()
    local dir = tmpdir("spos")
    local res = recipe.run(R, merged(SPOS, { out = dir, ranking = 3, ranking_steps = 2 }))
    assert.equal(2, #res.arch)
    valid_arch(res.arch, { 4, 4 })
    assert.is_true(res.mflops <= res.flops_limit + 1e-12)
    assert.equal(SPOS.steps, #res.losses)
    files(dir, { "config.json", "log.jsonl", "checkpoint.nrck", "arch.json", "arch.txt",
                 "ranking.json" })
    local a = read_json(dir .. "/arch.json")
    assert.same(res.arch, a.genes)
    assert.equal(2, #a.names)
    assert.equal(table.concat(a.names, " ") .. "\n", recipe.read_file(dir .. "/arch.txt"))
    local steps = events(dir, "step")
    assert.equal(SPOS.steps, #steps)
    for _, s in ipairs(steps) do
      valid_arch(s.arch, { 4, 4 })
      assert.is_number(s.loss)
      assert.is_number(s.lr)
    end
    assert.is_true(#events(dir, "epoch") >= 1)
    assert.equal(SPOS.evo_epochs, #events(dir, "search"))
    local rk = read_json(dir .. "/ranking.json")
    assert.equal(3, rk.n)
    assert.equal(3, #rk.rows)
    assert.truthy(rk.kendall_tau)
    for _, row in ipairs(rk.rows) do
      assert.is_true(row.supernet >= 0 and row.supernet <= 1)
      assert.is_true(row.standalone >= 0 and row.standalone <= 1)
    end
  end)

  it("resumes a run stopped during supernet training bit for bit", function()
    check_resume(R, SPOS, 2)
  end)

  it("resumes a run stopped after the first search generation bit for bit", function()
    check_resume(R, SPOS, SPOS.steps + 1)
  end)

  it("resumes after a Ctrl-C in the middle of a search generation", function()
    -- one check per training step, one before the generation, one per new
    -- candidate: the third candidate of generation 1 is interrupted
    local _, _, dir = check_ctrl_c(R, SPOS, SPOS.steps + 1 + 3)
    local evals = events(dir, "eval")
    local seen = {}
    for _, e in ipairs(evals) do
      local key = table.concat(e.arch, ",")
      assert.is_nil(seen[key], "candidate " .. key .. " scored twice")
      seen[key] = true
    end
  end)
end)

describe("recipes/fairnas", function()
  local R = load("fairnas")

  it("trains every choice of every layer equally often (strict fairness)", function()
    local dir = tmpdir("fairnas")
    local res = recipe.run(R, merged(FAIRNAS, { out = dir, ranking = 2, ranking_steps = 2 }))
    valid_arch(res.arch, { 6, 6 })
    assert.is_true(res.fair)
    for _, row in ipairs(res.counts) do
      for _, n in ipairs(row) do assert.equal(FAIRNAS.steps, n) end
    end
    -- every step: m = 6 paths whose choices form a permutation in each layer
    local steps = events(dir, "step")
    assert.equal(FAIRNAS.steps, #steps)
    for _, s in ipairs(steps) do
      assert.equal(6, #s.archs)
      for l = 1, 2 do
        local seen = {}
        for _, a in ipairs(s.archs) do
          assert.is_nil(seen[a[l]])
          seen[a[l]] = true
        end
      end
    end
    local fair = events(dir, "fairness")
    assert.is_true(#fair >= 1)
    assert.is_true(fair[#fair].fair)
    files(dir, { "config.json", "log.jsonl", "checkpoint.nrck", "arch.json", "arch.txt",
                 "ranking.json" })
    assert.is_true(res.mflops <= res.flops_limit + 1e-12)
    assert.is_true(read_json(dir .. "/arch.json").fair)
  end)

  it("searches with NSGA-II and writes the Pareto front", function()
    local dir = tmpdir("fairnas-nsga2")
    local res = recipe.run(R, merged(FAIRNAS, { out = dir, search = "nsga2", flops_limit = -1 }))
    local p = read_json(dir .. "/pareto.json")
    assert.is_true(#p.front >= 1)
    for i, a in ipairs(p.front) do
      valid_arch(a.arch, { 6, 6 })
      for j, b in ipairs(p.front) do
        if i ~= j then
          assert.is_false(b.score >= a.score and b.flops <= a.flops and
            (b.score > a.score or b.flops < a.flops), "a dominated point on the front")
        end
      end
    end
    valid_arch(res.arch, { 6, 6 })
  end)

  it("resumes a stopped run bit for bit, fairness intact", function()
    local _, res = check_resume(R, FAIRNAS, 2)
    assert.is_true(res.fair)
    for _, row in ipairs(res.counts) do
      for _, n in ipairs(row) do assert.equal(FAIRNAS.steps, n) end
    end
  end)
end)

describe("recipes/attentivenas", function()
  local R = load("attentivenas")

  it("trains with the sandwich rule, searches the Pareto front, writes pareto.json", function()
    local dir = tmpdir("att")
    local res = recipe.run(R, merged(ATT, { out = dir, rank_by = "predictor",
      predictor_archs = 3, ranking = 2, ranking_steps = 2 }))
    local choices = read_json(dir .. "/arch.json").choices
    valid_arch(res.arch, choices)
    files(dir, { "config.json", "log.jsonl", "checkpoint.nrck", "arch.json", "arch.txt",
                 "pareto.json", "predictor.json", "ranking.json" })
    -- each step: N = 4 subnets, the largest first, the smallest last
    for _, s in ipairs(events(dir, "step")) do
      assert.equal(4, #s.archs)
      assert.same(choices, s.archs[1].genes)
      for _, v in ipairs(s.archs[4].genes) do assert.equal(1, v) end
      for _, a in ipairs(s.archs) do valid_arch(a.genes, choices) end
    end
    local p = read_json(dir .. "/pareto.json")
    assert.is_true(#p.front >= 1)
    for i = 2, #p.front do
      assert.is_true(p.front[i].mflops >= p.front[i - 1].mflops)
      assert.is_true(p.front[i].val_acc > p.front[i - 1].val_acc)
    end
    for _, r in ipairs(p.front) do valid_arch(r.genes, choices) end
    assert.equal(1, #events(dir, "predictor"))
  end)

  it("resumes a stopped run bit for bit (WorstUp by loss)", function()
    check_resume(R, merged(ATT, { sampler = "worstup" }), 3)
  end)

  it("resumes bit for bit across the predictor fit", function()
    check_resume(R, merged(ATT, { rank_by = "predictor", predictor_archs = 2 }), 3)
  end)
end)

describe("recipes/random and recipes/rea", function()
  local RND, REA = load("random"), load("rea")

  local function check_table_pick(res, dir)
    local edges = bench.parse_nb201(res.arch_string)
    assert.equal(6, #edges)
    valid_arch(res.arch, { 5, 5, 5, 5, 5, 5 })
    assert.equal(bench.nb201_decode(res.arch), res.arch_string)
    local q = bench.nb201():query(res.arch_string)
    assert.equal(q.cifar10.val12, res.score)
    assert.equal(q.cifar10.test, res.test)
    assert.is_true(res.test > 10 and res.test <= 100)
    local a = read_json(dir .. "/arch.json")
    assert.equal(res.arch_string, a.arch_string)
    assert.equal(res.arch_string .. "\n", recipe.read_file(dir .. "/arch.txt"))
  end

  it("random search on the NAS-Bench-201 table finishes fast with a valid pick", function()
    local dir = tmpdir("random-table")
    local t0 = nasrt.clock()
    local res = recipe.run(RND, { out = dir, score = "table", quiet = true })
    assert.is_true(nasrt.clock() - t0 < 30)
    check_table_pick(res, dir)
    assert.equal(100, #events(dir, "eval"))
  end)

  it("REA on the NAS-Bench-201 table finishes fast with a valid pick", function()
    local dir = tmpdir("rea-table")
    local t0 = nasrt.clock()
    local res = recipe.run(REA, { out = dir, score = "table", quiet = true })
    assert.is_true(nasrt.clock() - t0 < 30)
    check_table_pick(res, dir)
    assert.equal(100, #events(dir, "search"))
  end)

  it("--bench nb201 runs against the table and --budget stops on the simulated time", function()
    local argv_cfg = recipe.parse(REA, { "--bench", "nb201", "--budget=3000", "--cycles=100000" })
    assert.equal("nb201", argv_cfg.bench)
    local dir = tmpdir("rea-budget")
    local res = recipe.run(REA, merged(argv_cfg, { out = dir, quiet = true }))
    check_table_pick(res, dir)
    -- the time of every evaluation is logged: under the budget before the
    -- last one, over it after
    local ev, spent = events(dir, "eval"), 0
    local searches = events(dir, "search")
    assert.equal(res.evaluations, #searches)
    for k, e in ipairs(searches) do
      local q = bench.nb201():query(bench.nb201_decode(e.arch))
      local t = 12 * q.cifar10.epoch_time
      if k == #searches then assert.is_true(spent < 3000) end
      spent = spent + t
      assert.is_true(math.abs(e.sim_time - spent) < 1e-6)
    end
    assert.is_true(spent >= 3000)
    assert.is_true(math.abs(res.sim_time - spent) < 1e-6)
    assert.is_true(#ev <= #searches)                    -- repeats come from the cache
    local a = read_json(dir .. "/arch.json")
    assert.equal(3000, a.budget)
    local bad = recipe.parse(RND, { "--bench=nb301" })
    local ok, err = pcall(recipe.run, RND, merged(bad, { out = tmpdir("bad-bench"), quiet = true }))
    assert.is_false(ok)
    assert.matches("--bench must be nb201", tostring(err), 1, true)
  end)

  it("REA in table mode resumes bit for bit", function()
    local cfg = { score = "table", quiet = true, ckpt_every = 7 }
    local full = recipe.run(REA, merged(cfg, { out = tmpdir("rea-full") }))
    local dir = tmpdir("rea-stopped")
    assert.is_true(recipe.run(REA, merged(cfg, { out = dir, stop_after_steps = 23 })).interrupted)
    local res = recipe.run(REA, { resume = dir })
    assert.equal(23, #events(dir, "search") - 77)    -- 23 before the stop, 77 after
    assert.same(full.arch, res.arch)
    assert.equal(full.score, res.score)
    assert.equal(full.test, res.test)
  end)

  it("random search scores NB201 cells with a briefly trained supernet", function()
    local dir = tmpdir("random-nb201")
    local res = recipe.run(RND, merged(TINY, { out = dir, C = 2, N = 1, steps = 3, n = 4 }))
    valid_arch(res.arch, { 5, 5, 5, 5, 5, 5 })
    assert.truthy(bench.parse_nb201(res.arch_string))
    assert.is_true(res.score >= 0 and res.score <= 1)
    files(dir, { "config.json", "log.jsonl", "checkpoint.nrck", "arch.json", "arch.txt" })
    assert.equal(3, #events(dir, "step"))
  end)

  it("REA over the SPOS space respects the FLOPs limit and resumes bit for bit", function()
    local cfg = merged(TINY, { space = "spos", stem = 4, widths = "8,16", repeats = "1,1",
      last = 16, steps = 3, population = 3, cycles = 6, flops_limit = 0.05 })
    local full = check_resume(REA, cfg, 5)
    valid_arch(full.arch, { 4, 4 })
    assert.is_true(full.mflops <= 0.05)
  end)

  it("REA over the FairNAS space trains strict-fair and finishes", function()
    local dir = tmpdir("rea-fairnas")
    local res = recipe.run(REA, merged(TINY, { out = dir, space = "fairnas", stem = 8,
      stages = "8:1:2,16:1:1", head = 16, steps = 2, population = 2, cycles = 3 }))
    valid_arch(res.arch, { 6, 6 })
    for _, s in ipairs(events(dir, "step")) do assert.equal(6, #s.archs) end
  end)
end)
