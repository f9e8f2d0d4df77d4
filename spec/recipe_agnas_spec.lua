-- recipes/agnas.lua and recipes/train.lua end to end on tiny configurations
-- (2 cells, 8x8 inputs, C 2-4, a few steps of real Fashion-MNIST): the
-- found architecture is valid for its space, the run directory holds what it
-- must, a run stopped part-way (--stop_after_steps, as Ctrl-C would) and
-- resumed ends bit-identical to an uninterrupted one, train.lua reports a
-- test accuracy and a size, and the ranking analysis yields its 8 x 3
-- numbers and two taus.
local nasrt = require "nasrt"
local recipe = require "nasrt.recipe"

local AGNAS = dofile("recipes/agnas.lua")
local TRAIN = dofile("recipes/train.lua")

local PRIMS = nasrt.blocks.AGNAS_PRIMITIVES
local NB201 = nasrt.blocks.NB201_PRIMITIVES

local root = os.tmpname()
os.remove(root)
assert(os.execute("mkdir -p '" .. root .. "'"))
local counter = 0
local function fresh_dir(tag)
  counter = counter + 1
  return ("%s/%s-%d"):format(root, tag, counter)
end

local function read_json(path)
  local text = recipe.read_file(path)
  assert.is_truthy(text, "missing " .. path)
  return assert(recipe.decode(text))
end

local function has(dir, name) return recipe.exists(dir .. "/" .. name) end

--- step losses by "phase:step" (a resumed run's later line wins)
local function step_losses(dir)
  local out = {}
  for _, r in ipairs(recipe.read_log(dir .. "/log.jsonl")) do
    if r.kind == "step" then out[(r.phase or "") .. ":" .. r.step] = r.loss end
  end
  return out
end

local function epoch_records(dir)
  local out = {}
  for _, r in ipairs(recipe.read_log(dir .. "/log.jsonl")) do
    if r.kind == "epoch" then out[(r.phase or "") .. ":" .. r.epoch] = r end
  end
  return out
end

local function index_of(list, v)
  for i, x in ipairs(list) do if x == v then return i end end
end

-- tiny search configurations of the three spaces
local function micro(over)
  local c = { space = "micro", C = 4, layers = 2, input_size = 8, train_limit = 64, val_limit = 32,
              batch_size = 16, epochs = 2, quiet = true, dot = false, checkpoint_every = 2 }
  for k, v in pairs(over or {}) do c[k] = v end
  return c
end
local function macro(over)
  local c = micro { space = "macro", stages = "8:1:2,8:1:1", stem = 4, head = 16 }
  for k, v in pairs(over or {}) do c[k] = v end
  return c
end
local function nb201(over)
  local c = micro { space = "nb201", N = 1 }
  for k, v in pairs(over or {}) do c[k] = v end
  return c
end

--- A DARTS cell genotype {normal|reduce=..., *_concat=...} is well formed.
local function check_cell(g, kind)
  local gene = g[kind]
  assert.is_table(gene, "no '" .. kind .. "' gene")
  assert.equal(8, #gene)
  for m, e in ipairs(gene) do
    local node = (m - 1) // 2
    assert.is_truthy(index_of(PRIMS, e[1]), "unknown op " .. tostring(e[1]))
    assert.are_not.equal("none", e[1])
    assert.equal("integer", math.type(e[2]))
    assert.is_true(e[2] >= 0 and e[2] < node + 2, ("entry %d: input %d for node %d"):format(m, e[2], node))
    if m % 2 == 0 then assert.are_not.equal(gene[m - 1][2], e[2], "a node's two inputs differ") end
  end
  assert.same({ 2, 3, 4, 5 }, g[kind .. "_concat"])
end

local function check_micro_arch(arch, layers)
  assert.equal("agnas", arch.type)
  assert.equal(layers, #arch.genotypes)
  for i, g in ipairs(arch.genotypes) do
    local i0 = i - 1
    local kind = (i0 == layers // 3 or i0 == 2 * layers // 3) and "reduce" or "normal"
    check_cell(g, kind)
  end
  local parsed = nasrt.supernet.genotype_from_string(arch.text)
  assert.is_table(parsed, "arch.text parses as genotype text")
end

--- An interrupted run resumed to its end equals an uninterrupted run.
local function check_resume(make, k, tag)
  local a_dir, b_dir = fresh_dir(tag .. "-full"), fresh_dir(tag .. "-cut")
  local a = recipe.run(AGNAS, make { out = a_dir })
  assert.is_falsy(a.interrupted)
  local cut = recipe.run(AGNAS, make { out = b_dir, stop_after_steps = k })
  assert.is_true(cut.interrupted)
  assert.is_true(has(b_dir, "checkpoint.nrck"))
  assert.is_false(has(b_dir, "arch.json"))
  local b = recipe.run(AGNAS, { resume = b_dir })
  assert.is_falsy(b.interrupted)
  assert.same(a.scores, b.scores)
  assert.same(a.arch, b.arch)
  assert.same(read_json(a_dir .. "/arch.json"), read_json(b_dir .. "/arch.json"))
  local la, lb = step_losses(a_dir), step_losses(b_dir)
  assert.is_true(next(la) ~= nil)
  assert.same(la, lb)
  local ea, eb = epoch_records(a_dir), epoch_records(b_dir)
  for key, r in pairs(ea) do
    assert.is_table(eb[key], "epoch record " .. key)
    assert.equal(r.val_acc, eb[key].val_acc)
    assert.same(r.scores, eb[key].scores)
    assert.equal(r.train_loss, eb[key].train_loss)
  end
  return a, a_dir
end

describe("recipes/agnas.lua", function()
  teardown(function() os.execute("rm -rf '" .. root .. "'") end)

  it("answers with its options and the paper's values reachable", function()
    local usage = recipe.usage(AGNAS)
    for _, k in ipairs { "space", "epochs", "C", "layers", "lr", "lr_min", "momentum",
                         "weight_decay", "grad_clip", "analysis", "train_limit", "val_limit" } do
      assert.is_truthy(usage:find("--" .. k, 1, true), k)
    end
    local cfg = recipe.parse(AGNAS, { "--C=16", "--layers=8", "--epochs=50", "--train_limit=0",
                                      "--val_limit=0" })
    assert.equal(16, cfg.C)
    assert.equal(8, cfg.layers)
    assert.equal("micro", cfg.space)
    assert.equal(0.025, cfg.lr)
    assert.equal(0.001, cfg.lr_min)
    assert.equal(3e-4, cfg.weight_decay)
    assert.equal(5, cfg.grad_clip)
  end)

  it("searches the micro space and writes the run directory", function()
    local dir = fresh_dir("micro")
    local res = recipe.run(AGNAS, micro { out = dir })
    assert.is_falsy(res.interrupted)
    for _, f in ipairs { "config.json", "log.jsonl", "checkpoint.nrck", "arch.json", "genotype.txt",
                         "cell0_reduce.dot", "cell1_reduce.dot" } do
      assert.is_true(has(dir, f), f)
    end
    local arch = read_json(dir .. "/arch.json")
    check_micro_arch(arch, 2)
    assert.is_truthy(recipe.read_file(dir .. "/cell0_reduce.dot"):find("digraph", 1, true))
    local cfg = read_json(dir .. "/config.json")
    assert.equal(4, cfg.C)
    -- the log: steps with loss, accuracy and lr; epochs with the scores
    local steps, epochs = 0, 0
    for _, r in ipairs(recipe.read_log(dir .. "/log.jsonl")) do
      if r.kind == "step" then
        steps = steps + 1
        assert.is_number(r.loss)
        assert.is_true(r.acc >= 0 and r.acc <= 1)
        assert.is_number(r.lr)
      elseif r.kind == "epoch" then
        epochs = epochs + 1
        assert.equal(2, #r.scores)            -- one 14 x 8 matrix per cell
        assert.equal(14, #r.scores[1])
        assert.equal(8, #r.scores[1][1])
      end
    end
    assert.equal(8, steps)                     -- 64 images / 16, 2 epochs
    assert.equal(2, epochs)
    local st = nasrt.load(dir .. "/checkpoint.nrck")
    assert.is_table(st)
    assert.equal("done", st.phase)
  end)

  it("gives five cell types for a network with a normal cell in every stage", function()
    local dir = fresh_dir("micro5")
    local res = recipe.run(AGNAS, micro { out = dir, C = 2, layers = 5, epochs = 1,
                                          train_limit = 32 })
    local arch = res.arch
    check_micro_arch(arch, 5)
    assert.equal(5, #arch.cell_types)
    local kinds = { "normal", "reduce", "normal", "reduce", "normal" }
    for k, g in ipairs(arch.cell_types) do check_cell(g, kinds[k]) end
    assert.same({ 0, 1, 2, 3, 4 }, arch.cell_type_cells)
  end)

  it("resumes an interrupted micro search bit-identically (mid-epoch and at an epoch end)", function()
    check_resume(micro, 3, "micro-r3")
    check_resume(micro, 4, "micro-r4")
  end)

  it("searches the macro space: one choice per layer", function()
    local res, dir = check_resume(macro, 2, "macro")
    local arch = read_json(dir .. "/arch.json")
    assert.equal("agnas_macro", arch.type)
    assert.equal(2, #arch.arch)
    for l, c in ipairs(arch.arch) do
      assert.equal("integer", math.type(c))
      assert.is_true(c >= 1 and c <= arch.choices[l])
      assert.is_string(arch.names[l])
    end
    assert.equal(6, arch.choices[1])           -- stride 2: no skip
    assert.equal(7, arch.choices[2])           -- stride 1, same width: skip allowed
    assert.is_true(has(dir, "macro.dot"))
    assert.is_true(has(dir, "genotype.txt"))
    assert.is_truthy(res.arch.text:match("^macro:%d+,%d+$"))
  end)

  it("searches the NAS-Bench-201 cell: a valid arch string", function()
    local _, dir = check_resume(nb201, 5, "nb201")
    local arch = read_json(dir .. "/arch.json")
    assert.equal("nb201", arch.type)
    local ops = { arch.arch:match(
      "^|([%w_]+)~0|%+|([%w_]+)~0|([%w_]+)~1|%+|([%w_]+)~0|([%w_]+)~1|([%w_]+)~2|$") }
    assert.equal(6, #ops)
    for _, op in ipairs(ops) do
      assert.is_truthy(index_of(NB201, op), op)
      assert.are_not.equal("none", op)
    end
    local idx, canon = nasrt.supernet.nb201_arch(arch.arch)
    assert.equal(arch.arch, canon)
    assert.equal(6, #idx)
    assert.is_true(has(dir, "cell.dot"))
  end)

  it("runs the ranking analysis: 8 accuracies, attentions and alphas, two taus", function()
    local dir = fresh_dir("analysis")
    local res = recipe.run(AGNAS, micro { out = dir, analysis = true, epochs = 1,
                                          analysis_cell = 1, analysis_edge = 3 })
    local A = res.analysis
    assert.is_table(A)
    assert.is_true(has(dir, "analysis.json"))
    local J = read_json(dir .. "/analysis.json")
    for _, t in ipairs { A, J } do
      assert.equal(8, #t.accuracy)
      assert.equal(8, #t.attention)
      assert.equal(8, #t.alpha)
      assert.same(PRIMS, t.ops)
      for k = 1, 8 do
        assert.is_true(t.accuracy[k] >= 0 and t.accuracy[k] <= 1)
        assert.is_true(t.attention[k] > 0 and t.attention[k] < 1)
        assert.is_true(t.alpha[k] > 0 and t.alpha[k] < 1)
      end
      local s = 0
      for k = 1, 8 do s = s + t.alpha[k] end
      assert.is_true(math.abs(s - 1) < 1e-5, "alphas are a softmax row")
      for _, key in ipairs { "tau_attention", "tau_alpha" } do
        assert.is_number(t[key])
        assert.is_true(t[key] >= -1 and t[key] <= 1, key)
      end
      assert.equal(1, t.cell)
      assert.equal(3, t.edge)
    end
  end)

  it("resumes the analysis in its DARTS phase to the same result", function()
    local a_dir, b_dir = fresh_dir("an-full"), fresh_dir("an-cut")
    local a = recipe.run(AGNAS, micro { out = a_dir, analysis = true })
    -- stop_after_steps stops each training phase once: the search, then the DARTS supernet
    assert.is_true(recipe.run(AGNAS, micro { out = b_dir, analysis = true, stop_after_steps = 3 }).interrupted)
    assert.equal("search", nasrt.load(b_dir .. "/checkpoint.nrck").phase)
    assert.is_true(recipe.run(AGNAS, { resume = b_dir }).interrupted)
    assert.equal("analysis_darts", nasrt.load(b_dir .. "/checkpoint.nrck").phase)
    local b = recipe.run(AGNAS, { resume = b_dir })
    assert.same(a.analysis, b.analysis)
    assert.same(read_json(a_dir .. "/analysis.json"), read_json(b_dir .. "/analysis.json"))
    assert.same(step_losses(a_dir), step_losses(b_dir))
  end)
end)

describe("recipes/train.lua", function()
  local search_dir

  setup(function()
    search_dir = fresh_dir("train-src")
    recipe.run(AGNAS, micro { out = search_dir, epochs = 1 })
  end)

  local function tiny(over)
    local c = { C = 4, layers = 2, input_size = 8, train_limit = 48, test_limit = 64,
                batch_size = 16, epochs = 2, quiet = true }
    for k, v in pairs(over or {}) do c[k] = v end
    return c
  end

  local function check_metrics(dir, m)
    assert.is_true(has(dir, "metrics.json"))
    local J = read_json(dir .. "/metrics.json")
    for _, t in ipairs { m, J } do
      assert.is_number(t.test_acc)
      assert.is_true(t.test_acc >= 0 and t.test_acc <= 1)
      assert.is_true(t.params > 0)
    end
    assert.is_true(has(dir, "log.jsonl"))
    assert.is_true(has(dir, "checkpoint.nrck"))
    return J
  end

  it("retrains a found arch.json and reports test accuracy and params", function()
    local dir = fresh_dir("train")
    local m = recipe.run(TRAIN, tiny { out = dir, arch = search_dir .. "/arch.json" })
    check_metrics(dir, m)
    assert.equal("darts", m.kind)
    assert.equal(64, m.test_images)
  end)

  it("accepts genotype text, an NB201 string and draws seeded random cells", function()
    local g = nasrt.supernet.genotype_to_string(nasrt.supernet.darts_genotypes.DARTS_V2)
    local m1 = recipe.run(TRAIN, tiny { out = fresh_dir("train-text"), arch = g, epochs = 1 })
    assert.is_true(m1.params > 0)
    local s = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"
    local m2 = recipe.run(TRAIN, tiny { out = fresh_dir("train-nb201"), arch = s, epochs = 1, N = 1 })
    assert.equal("nb201", m2.kind)
    local d1, d2 = fresh_dir("train-rand"), fresh_dir("train-rand")
    local r1 = recipe.run(TRAIN, tiny { out = d1, random = true, epochs = 1 })
    local r2 = recipe.run(TRAIN, tiny { out = d2, random = true, epochs = 1 })
    check_metrics(d1, r1)
    assert.equal(r1.arch, r2.arch)           -- seeded
    local rg = read_json(d1 .. "/arch.json").genotype
    check_cell({ normal = rg.normal, normal_concat = rg.normal_concat }, "normal")
    check_cell({ reduce = rg.reduce, reduce_concat = rg.reduce_concat }, "reduce")
  end)

  it("resumes an interrupted retraining bit-identically", function()
    local a_dir, b_dir = fresh_dir("train-full"), fresh_dir("train-cut")
    local a = recipe.run(TRAIN, tiny { out = a_dir, arch = search_dir .. "/arch.json" })
    local cut = recipe.run(TRAIN, tiny { out = b_dir, arch = search_dir .. "/arch.json",
                                         stop_after_steps = 4 })
    assert.is_true(cut.interrupted)
    assert.is_false(has(b_dir, "metrics.json"))
    local b = recipe.run(TRAIN, { resume = b_dir })
    assert.equal(a.test_acc, b.test_acc)
    assert.equal(a.test_loss, b.test_loss)
    assert.same(step_losses(a_dir), step_losses(b_dir))
  end)
end)
