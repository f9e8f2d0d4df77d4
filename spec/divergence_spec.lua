--- Divergence: F.all_finite, the optimizers' gradient check, the
-- checkpoint and log guards of nasrt.recipe, and every recipe stopping on a
-- NaN/Inf with a message naming the step and the tensor while the last
-- good checkpoint stays on disk.
local nasrt = require "nasrt"
local recipe = require "nasrt.recipe"
local lfs = require "lfs"

local F, nn, optim = nasrt.F, nasrt.nn, nasrt.optim
local K = dofile("scripts/killtest.lua")

local NAN, INF = 0 / 0, math.huge

local root = os.tmpname()
os.remove(root)
recipe.mkdirs(root)
local n_dirs = 0
local function fresh(tag)
  n_dirs = n_dirs + 1
  return ("%s/%s-%d"):format(root, tag, n_dirs)
end
teardown(function() os.execute(("rm -rf '%s'"):format(root)) end)

local function bits(t) return t:reshape { -1 }:totable() end

describe("F.all_finite", function()
  it("finds the first NaN or Inf of a tensor, row-major, 1-based", function()
    assert.is_true(F.all_finite(nasrt.tensor { { 1, -2 }, { 3.4e38, -1e-45 } }))
    local ok, i, k, v = F.all_finite(nasrt.tensor { { 1, 2, 3 }, { 4, NAN, INF } })
    assert.is_false(ok)
    assert.equal(1, i)
    assert.equal(5, k)
    assert.is_true(v ~= v)
    ok, i, k, v = F.all_finite(nasrt.tensor { 0, 0, -INF })
    assert.same({ false, 1, 3, -INF }, { ok, i, k, v })
    assert.is_true(F.all_finite(nasrt.zeros { 0, 3 }))
  end)

  it("walks a list and reports the tensor's index; views count in logical order", function()
    local a = nasrt.tensor { { 0, 1, 2 }, { 3, NAN, 5 } }
    -- a^T = [[0, 3], [1, NaN], [2, 5]]: the NaN is its element 4
    local ok, i, k = F.all_finite({ nasrt.ones { 4 }, a:transpose(1, 2) })
    assert.same({ false, 2, 4 }, { ok, i, k })
    ok, i, k = F.all_finite({ nasrt.ones { 4 }, a })
    assert.same({ false, 2, 5 }, { ok, i, k })
    -- a 5000-element tensor: the Inf past the first block of 4096
    local big = nasrt.zeros { 5000 }
    big:set(4500, INF)
    ok, i, k = F.all_finite({ big })
    assert.same({ false, 1, 4500 }, { ok, i, k })
  end)

  it("{grad = true} checks the gradients, skipping tensors without one", function()
    local p, q = nasrt.ones { 3 }:requires_grad(), nasrt.ones { 2 }:requires_grad()
    p.grad = nasrt.tensor { 1, 2, 3 }
    assert.is_true(F.all_finite({ p, q }, { grad = true }))
    q.grad = nasrt.tensor { INF, 0 }
    local ok, i, k, v = F.all_finite({ p, q }, { grad = true })
    assert.same({ false, 2, 1, INF }, { ok, i, k, v })
    assert.is_true(F.all_finite({ p, q }))                  -- the values themselves are fine
  end)

  it("rejects what is not a tensor or a list of tensors", function()
    assert.has_error(function() F.all_finite(3) end,
      "all_finite: expected a tensor or a list of tensors, got number")
    assert.has_error(function() F.all_finite({ nasrt.ones { 1 }, "x" }) end,
      "all_finite: entry 2 of the list is string, expected a tensor")
    assert.has_error(function() F.all_finite(nasrt.ones { 1 }, { grads = true }) end)
  end)
end)

describe("optimizer step", function()
  local function net_with_grads()
    nasrt.manual_seed(3)
    local net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    local x = nasrt.tensor { { 1, 2, 3 } }
    F.sum(net(x)):backward()
    return net
  end

  for _, make in ipairs {
    { "SGD", function(ps) return optim.SGD(ps, { lr = 0.1, momentum = 0.9 }) end },
    { "Adam", function(ps) return optim.Adam(ps, { lr = 0.1 }) end },
  } do
    it(make[1] .. " refuses a NaN gradient, naming the parameter, and touches nothing", function()
      local net = net_with_grads()
      local ps = net:parameters()
      local opt = make[2](ps)
      local before = {}
      for i, p in ipairs(ps) do before[i] = bits(p) end
      -- parameter 3 is '2.weight' [1,2]; its second element goes bad
      ps[3].grad = nasrt.tensor { { 0.5, NAN } }
      assert.has_error(function() opt:step() end, ("divergence: %s.step: the gradient of " ..
        "parameter '2.weight' [1,2] is NaN at element 2"):format(make[1]))
      for i, p in ipairs(ps) do assert.same(before[i], bits(p)) end
      assert.is_nil(next(opt.state))                          -- no momentum / moments made
      -- with the gradient fixed, the step goes through
      ps[3].grad = nasrt.tensor { { 0.5, 0.25 } }
      opt:step()
      assert.are_not.same(before[3], bits(ps[3]))
    end)
  end

  it("names unnamed tensors by index and group, and takes names from name_parameters", function()
    local a, b = nasrt.ones { 2 }:requires_grad(), nasrt.ones { 2, 2 }:requires_grad()
    local opt = optim.SGD({ { params = { a } }, { params = { b } } }, { lr = 1 })
    a.grad, b.grad = nasrt.zeros { 2 }, nasrt.full({ 2, 2 }, -INF)
    assert.has_error(function() opt:step() end,
      "divergence: SGD.step: the gradient of parameter 1 of group 2 [2,2] is -Inf at element 1")
    optim.name_parameters { { "alphas_normal", b } }
    assert.has_error(function() opt:step() end,
      "divergence: SGD.step: the gradient of parameter 'alphas_normal' [2,2] is -Inf at element 1")
  end)
end)

describe("run directory guards", function()
  local R = { name = "toy", defaults = { { "lr", 0.1, "" } } }

  it("Run:save refuses NaN/Inf tensors and leaves the last good checkpoint as it was", function()
    local dir = fresh("guard")
    local run = recipe.open_run(R, { out = dir })
    run:log { kind = "step", step = 1, loss = 1.5 }
    local w = nasrt.ones { 2, 3 }
    run:save { model = { ["cells.0.w"] = w }, step = 1 }
    local good = recipe.read_file(dir .. "/checkpoint.nrck")
    run:log { kind = "step", step = 2, loss = 1.25 }
    w:set(2, 3, INF)
    assert.has_error(function() run:save { model = { ["cells.0.w"] = w }, step = 2 } end,
      "divergence: checkpoint not written: model[\"cells.0.w\"] [2,3] is +Inf at element 6")
    assert.equal(good, recipe.read_file(dir .. "/checkpoint.nrck"))
    assert.equal(2, run.diverged_step)
    run:close()
  end)

  it("Run:log refuses a NaN or Inf loss field and records the step", function()
    local dir = fresh("guard-log")
    local run = recipe.open_run(R, { out = dir })
    run:log { kind = "step", step = 1, train_loss = 2.0, acc = 0.5 }
    assert.has_error(function() run:log { kind = "step", step = 2, train_loss = 1.0, val_loss = NAN } end,
      "divergence: the val_loss is NaN")
    assert.has_error(function() run:log { kind = "epoch", step = 2, loss = -INF } end,
      "divergence: the loss is -Inf")
    run:log { kind = "eval", score = INF }                    -- not a loss: logged
    assert.equal(2, run.diverged_step)
    run:close()
    assert.equal(2, #recipe.read_log(dir .. "/log.jsonl"))
  end)
end)

-- the tiny configuration of a recipe as a cfg table (its CLI arguments parsed)
local function tiny(name, extra)
  local R = dofile(("recipes/%s.lua"):format(name))
  local cfg = assert(recipe.parse(R, K.CONFIGS[name]))
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return R, cfg
end

describe("recipes stop on divergence", function()
  it("darts: message with step and tensor, last good checkpoint kept, resumable with a smaller lr", function()
    local R, cfg = tiny("darts", { lr = 1e30 })
    local dir = fresh("darts-div")
    cfg.out = dir
    local ok, err = pcall(recipe.run, R, cfg)
    assert.is_false(ok)
    assert.equal("darts: diverged at step 2: Adam.step: the gradient of parameter " ..
      "'alphas_reduce' [14,8] is NaN at element 1", err)
    -- the checkpoint is the one after step 1, finite
    local ck = assert(nasrt.load(dir .. "/checkpoint.nrck"))
    assert.equal(1, ck.pos.step)
    assert.equal(1, ck._run.step)
    recipe.check_finite(ck)
    -- nothing of step 2 was logged, only the divergence record
    local log = recipe.read_log(dir .. "/log.jsonl")
    assert.same({ kind = "diverged", step = 2, error = err:match("step 2: (.*)$") }, log[#log])
    for i = 1, #log - 1 do assert.is_true(log[i].step <= 1) end
    -- a resume redoes step 2 from that checkpoint and stops the same way;
    -- the checkpoint is not overwritten and the log keeps one divergence
    -- record.  (The step-1 weights are finite but already huge: with
    -- lr=1e30 only a fresh run helps, which the message says.)
    local bytes = recipe.read_file(dir .. "/checkpoint.nrck")
    local ok2, err2 = pcall(recipe.run, R, { resume = dir })
    assert.is_false(ok2)
    assert.equal(err, err2)
    assert.equal(bytes, recipe.read_file(dir .. "/checkpoint.nrck"))
    local n = 0
    for _, r in ipairs(recipe.read_log(dir .. "/log.jsonl")) do
      if r.kind == "diverged" then n = n + 1 end
    end
    assert.equal(1, n)
  end)

  it("a run that diverges after a resume with a larger lr keeps the checkpoint of before", function()
    local R, cfg = tiny("darts", { stop_after_steps = 3 })
    local dir = fresh("darts-div-late")
    cfg.out = dir
    assert.is_true(recipe.run(R, cfg).interrupted)
    local ok, err = pcall(recipe.run, R, { resume = dir, lr = 1e30 })
    assert.is_false(ok)
    -- here the epoch-end evaluation after step 4 sees a NaN loss; the
    -- checkpoint of step 4 (written before it, finite) is the last good one
    assert.equal("darts: diverged at step 4: the val_loss is NaN", err)
    local ck = assert(nasrt.load(dir .. "/checkpoint.nrck"))
    assert.equal(4, ck._run.step)
    assert.equal(4, ck.pos.step)
    assert.is_false(ck.pos.epoch_done)
    recipe.check_finite(ck)
  end)

  it("every recipe stops with the step and the tensor named", function()
    for _, name in ipairs(K.RECIPES) do
      local R, cfg = tiny(name, { lr = 1e30 })
      local dir = fresh(name .. "-div")
      cfg.out = dir
      local ok, err = pcall(recipe.run, R, cfg)
      assert.is_false(ok, name .. " did not diverge")
      local step, what = err:match("^" .. name .. ": diverged at step (%d+): (.*)$")
      assert.truthy(step, err)
      assert.truthy(what:match("gradient of parameter '[%w_.]+' %[[%d,]+%] is [%+%-]?%a+ at element %d+$")
        or what:match("^checkpoint not written: model%[\"[%w_.]+\"%] %[[%d,]+%] is [%+%-]?%a+ at element %d+$"),
        err)
      if recipe.exists(dir .. "/checkpoint.nrck") then
        local ck = assert(nasrt.load(dir .. "/checkpoint.nrck"))
        recipe.check_finite(ck)
        assert.is_true(ck._run.step < tonumber(step), name)
      end
    end
  end)

  it("the command line exits with status 3 and says where the checkpoint is", function()
    local dir, out = fresh("train-cli"), fresh("train-cli") .. ".out"
    local args = { "--out", dir, "--lr=1e30" }
    for _, a in ipairs(K.CONFIGS.train) do args[#args + 1] = a end
    assert.equal(3, K.wait(K.launch("train", args, out)))
    local text = recipe.read_file(out)
    assert.truthy(text:find("train: diverged at step 2: SGD.step: the gradient of parameter '", 1, true), text)
    assert.truthy(text:find(("train: the last good checkpoint (step 1) is kept in %s/checkpoint.nrck"):format(dir),
      1, true), text)
    assert.is_nil(text:find("traceback", 1, true))
  end)
end)

-- ReLU keeps a NaN (PyTorch's relu and relu6 do), in every kernel that
-- applies one: otherwise one NaN activation is zeroed on the way and the
-- loss stays finite while the weights behind it go bad.
describe("a NaN through the ReLU kernels", function()
  local function with_nan(shape, seed)
    nasrt.manual_seed(seed)
    local x = nasrt.randn(shape)
    x:set(1, 1, 2, 3, NAN)
    return x
  end
  local function has_nan(t) return not F.all_finite(t) end

  it("F.relu and F.relu6 give NaN for NaN, and max(x, 0) / min(max(x, 0), 6) otherwise", function()
    local x = nasrt.tensor { NAN, -1, 0, 2.5, 7 }
    local r, r6 = F.relu(x), F.relu6(x)
    assert.is_true(r:get(1) ~= r:get(1))
    assert.is_true(r6:get(1) ~= r6:get(1))
    assert.same({ 0, 0, 2.5, 7 }, { r:get(2), r:get(3), r:get(4), r:get(5) })
    assert.same({ 0, 0, 2.5, 6 }, { r6:get(2), r6:get(3), r6:get(4), r6:get(5) })
    -- long enough for the vector loops
    local big = with_nan({ 4, 3, 17, 19 }, 1)
    assert.is_true(has_nan(F.relu(big)))
    assert.is_true(has_nan(F.relu6(big)))
  end)

  it("F.batch_norm with activation relu / relu6 gives a NaN channel", function()
    for _, shape in ipairs { { 4, 3, 7, 7 }, { 2, 5, 28, 28 } } do
      for _, act in ipairs { "relu", "relu6" } do
        local x = with_nan(shape, 2)
        local y = F.batch_norm(x, nil, nil, nasrt.ones { shape[2] }, nasrt.zeros { shape[2] },
          { activation = act })
        assert.is_true(y:get(2, 1, 1, 1) ~= y:get(2, 1, 1, 1), act)
        assert.is_true(F.all_finite(y:narrow(2, 2, shape[2] - 1)), act)
      end
    end
  end)

  it("F.sep_conv2d with relu=true and F.sep_block carry it to their outputs", function()
    local cases = {
      { { 2, 3, 16, 16 }, 3, 1, 1 },  -- the row engine, stride 1
      { { 2, 3, 16, 16 }, 3, 2, 1 },  -- stride 2 (split rows)
      { { 2, 16, 28, 28 }, 3, 1, 1 }, -- channel-last
      { { 2, 16, 28, 28 }, 5, 2, 2 },
      { { 2, 32, 14, 14 }, 5, 1, 2 },
      { { 2, 64, 7, 7 }, 3, 1, 1 },
    }
    for _, c in ipairs(cases) do
      local shape, k, s, p = c[1], c[2], c[3], c[4]
      local C = shape[2]
      local x = with_nan(shape, 3)
      local wd, wp = nasrt.randn { C, 1, k, k }, nasrt.randn { C, C, 1, 1 }
      local y = F.sep_conv2d(x, wd, wp, { stride = s, padding = p, relu = true })
      assert.is_true(has_nan(y), table.concat(shape, "x") .. " sep_conv2d")
      local y2 = F.sep_block(x, wd, wp, nasrt.randn { C, 1, k, k }, nasrt.randn { C, C, 1, 1 },
        nil, nil, { stride = s, padding = p })
      assert.is_true(has_nan(y2), table.concat(shape, "x") .. " sep_block")
      -- without the NaN, the same ops are finite
      x:set(1, 1, 2, 3, 0.5)
      assert.is_true(F.all_finite(F.sep_conv2d(x, wd, wp, { stride = s, padding = p, relu = true })))
    end
  end)
end)
