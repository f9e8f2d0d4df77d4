-- The differentiable-search recipes (recipes/darts.lua first and second
-- order, recipes/att_darts.lua, recipes/gdas.lua) end to end on a tiny
-- configuration (2 cells, 8x8 inputs, C=4, a few steps on real
-- Fashion-MNIST images): a valid genotype, the run directory's files, and
-- resume continuing the same run bit for bit.  Then the acceptance check of
-- the DARTS Architect: its second-order gradient is the derivative of the
-- unrolled validation loss L_val(w - eta (mu m + dL_tr/dw + lambda w), alpha).
local nasrt = require "nasrt"
local recipe = require "nasrt.recipe"
local darts_arch = require "nasrt.darts_arch"

local F = nasrt.F
local supernet = nasrt.supernet
local blocks = nasrt.blocks

local ROOT = os.tmpname()
os.remove(ROOT)
recipe.mkdirs(ROOT)
local n_dirs = 0
local function fresh_dir(tag)
  n_dirs = n_dirs + 1
  return ("%s/%s-%d"):format(ROOT, tag, n_dirs)
end

local function load_recipe(name)
  return dofile("recipes/" .. name .. ".lua")
end

-- 2 cells (both reductions: layers//3 = 0, 2*layers//3 = 1), 8x8 inputs,
-- 2 steps per epoch of 16 images, 2 epochs
local function tiny(extra)
  local cfg = { C = 4, layers = 2, size = 8, train_limit = 32, val_limit = 16, batch_size = 16,
                epochs = 2, ckpt_every = 1, quiet = true, seed = 5 }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return cfg
end

local function step_records(dir)
  local out = {}
  for _, rec in ipairs(recipe.read_log(dir .. "/log.jsonl")) do
    if rec.kind == "step" then out[#out + 1] = rec end
  end
  return out
end

local function same_tables(a, b, path)
  path = path or ""
  if type(a) ~= type(b) then return false, path .. ": types differ" end
  if type(a) ~= "table" then
    if a ~= b then return false, ("%s: %s ~= %s"):format(path, tostring(a), tostring(b)) end
    return true
  end
  for k, v in pairs(a) do
    local ok, why = same_tables(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) .. " missing" end
  end
  return true
end

-- every tensor of two checkpoint tables equal bit for bit
local function same_checkpoints(a, b, path)
  path = path or ""
  if nasrt.is_tensor(a) then
    if not nasrt.is_tensor(b) then return false, path .. ": not a tensor" end
    local x, y = a:reshape { -1 }:totable(), b:reshape { -1 }:totable()
    for i = 1, #x do
      if x[i] ~= y[i] then return false, ("%s[%d]: %.9g ~= %.9g"):format(path, i, x[i], y[i]) end
    end
    return #x == #y, path .. ": sizes differ"
  end
  if type(a) == "table" then
    for k, v in pairs(a) do
      local ok, why = same_checkpoints(v, b[k], path .. "." .. tostring(k))
      if not ok then return false, why end
    end
    return true
  end
  if a ~= b then return false, ("%s: %s ~= %s"):format(path, tostring(a), tostring(b)) end
  return true
end

local function check_files(dir)
  for _, f in ipairs { "config.json", "log.jsonl", "arch.json", "genotype.txt", "normal.dot",
                       "reduce.dot", "checkpoint.nrck" } do
    assert.is_true(recipe.exists(dir .. "/" .. f), f .. " missing in " .. dir)
  end
end

teardown(function()
  os.execute("rm -rf '" .. ROOT .. "'")
end)

describe("recipes/darts.lua, att_darts.lua, gdas.lua", function()
  it("answer --help with every option, the paper's setting reachable", function()
    for _, name in ipairs { "darts", "att_darts", "gdas" } do
      local R = load_recipe(name)
      local text = recipe.usage(R)
      for _, opt in ipairs { "--epochs", "--C", "--layers", "--batch_size", "--train_limit",
                             "--lr", "--lr_min", "--momentum", "--weight_decay", "--grad_clip",
                             "--arch_lr", "--arch_weight_decay", "--seed", "--size",
                             "--stop_after_steps", "--resume" } do
        assert.is_truthy(text:find(opt, 1, true), name .. " --help lacks " .. opt)
      end
    end
    local R = load_recipe("darts")
    local cfg = recipe.parse(R, { "--C=16", "--layers=8", "--epochs=50", "--train_limit=0",
                                  "--val_limit=0", "--unrolled" })
    assert.are.same({ 16, 8, 50, 0, 0, true, 0.025, 0.001, 0.9, 3e-4, 3e-4, 1e-3, 5.0, 64 },
      { cfg.C, cfg.layers, cfg.epochs, cfg.train_limit, cfg.val_limit, cfg.unrolled, cfg.lr,
        cfg.lr_min, cfg.momentum, cfg.weight_decay, cfg.arch_lr, cfg.arch_weight_decay,
        cfg.grad_clip, cfg.batch_size })
    assert.is_truthy(recipe.usage(load_recipe("att_darts")):find("--attentions", 1, true))
    assert.is_truthy(recipe.usage(load_recipe("gdas")):find("--tau_max", 1, true))
    -- the usage line names the script that was run (examples/, a copy elsewhere)
    assert.are.equal("usage: nasrt recipes/gdas.lua [--key=value ...]",
      recipe.usage(load_recipe("gdas")):match("^[^\n]*"))
    assert.are.equal("usage: nasrt examples/mine.lua [--key=value ...]",
      recipe.usage(load_recipe("gdas"), "examples/mine.lua"):match("^[^\n]*"))
    for line in recipe.usage(load_recipe("gdas")):gmatch("\n  (%-%-[^\n]*)") do
      assert.are.equal(" ", line:sub(25, 25), line)        -- one column for every help text
      assert.are_not.equal(" ", line:sub(26, 26), line)
    end
  end)

  it("draw the progress bar only when stderr is a terminal", function()
    local bin = (os.getenv("NASRT_BUILD_DIR") or "./build") .. "/nasrt"
    local err = os.tmpname()
    local function stderr_of(tty)
      local chunk = ("local p = require('nasrt.recipe').progress(4, {tty = %s}); p:update(4, 'x'); p:line('done')")
        :format(tty)
      local out = assert(io.popen(("env -u CI TERM=xterm %s -e %q 2>%s"):format(bin, chunk, err)))
      local text = out:read("a")
      out:close()
      local f = assert(io.open(err))
      local e = f:read("a")
      f:close()
      return text, e
    end
    local out, e = stderr_of("nil")              -- TERM is set, but stderr is a file
    assert.truthy(out:find("^done  elapsed"), out)
    assert.are.equal("", e)
    out, e = stderr_of("true")                   -- forced on
    assert.truthy(e:find("[####", 1, true), e)
    os.remove(err)
  end)

  local cases = {
    { "darts", "darts", {} },
    { "darts (second order)", "darts", { unrolled = true } },
    { "att_darts", "att_darts", {} },
    { "gdas", "gdas", {} },
  }
  for _, case in ipairs(cases) do
    local label, name, extra = case[1], case[2], case[3]
    it(label .. " runs end to end and writes a valid architecture", function()
      local R = load_recipe(name)
      local dir = fresh_dir(name)
      local cfg = tiny(extra)
      cfg.out = dir
      local res = recipe.run(R, cfg)
      assert.is_nil(res.interrupted)
      assert.are.equal(4, res.step)
      check_files(dir)
      local g = res.genotype
      assert(darts_arch.check_genotype(g, blocks.DARTS_PRIMITIVES, 4))
      assert.are.same({ 2, 3, 4, 5 }, g.normal_concat)
      assert.are.same({ 2, 3, 4, 5 }, g.reduce_concat)
      if name == "att_darts" then
        local att = {}
        for _, a in ipairs(blocks.ATT_PRIMITIVES) do att[a] = true end
        for _, which in ipairs { "normal", "reduce" } do
          for _, e in ipairs(g[which]) do assert.is_true(att[e[3]], tostring(e[3])) end
        end
      end
      -- arch.json and genotype.txt describe the same cells
      local arch = assert(recipe.decode(recipe.read_file(dir .. "/arch.json")))
      assert.are.equal("darts", arch.type)
      assert.are.equal(name, arch.method)
      assert.are.same(g, arch.genotype)
      local text = recipe.read_file(dir .. "/genotype.txt"):gsub("%s+$", "")
      assert.are.equal(arch.genotype_text, text)
      assert.are.same(g, (supernet.genotype_from_string(text)))
      assert.is_truthy(recipe.read_file(dir .. "/normal.dot"):find("digraph", 1, true))
      -- the log: a record per step, a record per epoch with the supernet's
      -- validation accuracy and the alphas
      local steps = step_records(dir)
      assert.are.equal(4, #steps)
      for i, rec in ipairs(steps) do
        assert.are.equal(i, rec.step)
        assert.is_true(rec.train_loss > 0 and rec.arch_loss > 0 and rec.lr > 0)
      end
      local epochs = 0
      for _, rec in ipairs(recipe.read_log(dir .. "/log.jsonl")) do
        if rec.kind == "epoch" then
          epochs = epochs + 1
          assert.is_true(rec.val_acc >= 0 and rec.val_acc <= 1)
          assert.are.equal(14, #rec.alphas.normal)
          assert.are.equal(8, #rec.alphas.normal[1])
        end
      end
      assert.are.equal(2, epochs)
      local config = assert(recipe.decode(recipe.read_file(dir .. "/config.json")))
      assert.are.equal(4, config.C)
      local ck = assert(nasrt.load(dir .. "/checkpoint.nrck"))
      assert.are.same({ epoch = 2, step = 4, epoch_done = true },
        { epoch = ck.pos.epoch, step = ck.pos.step, epoch_done = ck.pos.epoch_done })
    end)
  end

  local resume_cases = {
    { "darts", "darts", {} },
    { "darts (second order)", "darts", { unrolled = true } },
    { "gdas (Gumbel noise from the global RNG)", "gdas", {} },
  }
  for _, case in ipairs(resume_cases) do
    local label, name, extra = case[1], case[2], case[3]
    it(label .. ": a run stopped after 3 steps and resumed equals the uninterrupted run", function()
      local R = load_recipe(name)
      local full_dir, cut_dir = fresh_dir(name .. "-full"), fresh_dir(name .. "-cut")
      local cfg = tiny(extra)
      cfg.ckpt_every = 0                 -- only the stop and the epoch ends checkpoint
      cfg.out = full_dir
      local full = recipe.run(R, cfg)

      local cut_cfg = tiny(extra)
      cut_cfg.ckpt_every = 0
      cut_cfg.out, cut_cfg.stop_after_steps = cut_dir, 3
      local cut = recipe.run(R, cut_cfg)
      assert.is_true(cut.interrupted)
      assert.are.equal(3, cut.step)
      local ck = assert(nasrt.load(cut_dir .. "/checkpoint.nrck"))
      assert.are.equal(3, ck.pos.step)
      assert.is_false(ck.pos.epoch_done)

      local resumed = recipe.run(R, { resume = cut_dir })
      assert.is_nil(resumed.interrupted)
      assert.are.equal(4, resumed.step)
      assert(same_tables(full.alphas, resumed.alphas))
      assert.are.same(full.genotype, resumed.genotype)
      assert.are.equal(full.genotype_text, resumed.genotype_text)
      local a, b = step_records(full_dir), step_records(cut_dir)
      assert.are.equal(#a, #b)
      for i = 1, #a do
        assert.are.equal(a[i].train_loss, b[i].train_loss)
        assert.are.equal(a[i].arch_loss, b[i].arch_loss)
      end
      local ca = assert(nasrt.load(full_dir .. "/checkpoint.nrck"))
      local cb = assert(nasrt.load(cut_dir .. "/checkpoint.nrck"))
      assert(same_checkpoints(ca.model, cb.model, "model"))
      assert(same_checkpoints(ca.w_opt, cb.w_opt, "w_opt"))
      assert(same_checkpoints(ca.a_opt, cb.a_opt, "a_opt"))
      assert(same_checkpoints(ca.rng, cb.rng, "rng"))
    end)
  end

  it("stops at Ctrl-C between steps with a checkpoint to resume from", function()
    local R = load_recipe("darts")
    local dir = fresh_dir("ctrl-c")
    local cfg = tiny()
    cfg.out = dir
    local saved = nasrt.interrupted
    nasrt.interrupted = function() return true end
    local ok, res = pcall(recipe.run, R, cfg)
    nasrt.interrupted = saved
    assert(ok, res)
    assert.is_true(res.interrupted)
    assert.are.equal(0, res.step)
    assert.are.equal(0, assert(nasrt.load(dir .. "/checkpoint.nrck")).pos.step)
    local done = recipe.run(R, { resume = dir })
    assert.are.equal(4, done.step)
    assert(darts_arch.check_genotype(done.genotype))
  end)
end)

describe("nasrt.darts_arch.Architect", function()
  -- A tiny supernet made smooth for finite differences: the inner gradient
  -- dL_tr/dw jumps wherever a ReLU or max-pool switches, so the unrolled
  -- loss is only piecewise smooth in alpha.  ReLU is swapped for softplus
  -- while the net runs and max_pool_3x3 is left out; the Architect does
  -- not depend on either.
  local relu = F.relu
  local function softplus(x) return F.log(F.scale(F.exp(x), 1, 1)) end

  it("second order: the gradient of the unrolled validation loss (momentum and weight decay included)", function()
    F.relu = softplus
    -- SepConv/DilConv's fused op applies its own ReLU: run them unfused so
    -- the softplus above is used everywhere
    blocks.fuse_sep_conv = false
    local ok, err = pcall(function()
      nasrt.manual_seed(3)
      local net = supernet.darts { C = 4, layers = 3, steps = 2, multiplier = 2, classes = 10,
        in_channels = 1, primitives = { "none", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                                        "dil_conv_3x3" } }
      net:train()
      local W, A = net:parameters(), net:arch_parameters()
      nasrt.no_grad(function()
        for _, a in ipairs(A) do a:copy_(nasrt.randn(a:shape()):mul_(0.5)) end
      end)
      local function batch(n)
        local y = {}
        for i = 1, n do y[i] = (i * 7) % 10 end
        return nasrt.randn { n, 1, 8, 8 }, nasrt.tensor(y)
      end
      local xt, yt = batch(8)
      local xv, yv = batch(8)
      -- a large eta so the implicit (Hessian) term is a big part of the gradient
      local eta, mu, wd = 0.5, 0.9, 3e-4
      local w_opt = nasrt.optim.SGD(W, { lr = eta, momentum = mu, weight_decay = wd })
      w_opt:zero_grad()              -- one real step: non-zero momentum buffers
      F.cross_entropy(net(xt), yt):backward()
      w_opt:step()
      w_opt:zero_grad()
      for _, a in ipairs(A) do a:zero_grad() end

      -- L_val(w', alpha), w' = w - eta (mu m + dL_tr/dw + wd w), written out here
      local function unrolled_loss()
        local w0 = nasrt.no_grad(function()
          local t = {}
          for i, p in ipairs(W) do t[i] = p:detach():clone() end
          return t
        end)
        for _, p in ipairs(W) do p:zero_grad() end
        F.cross_entropy(net(xt), yt):backward()
        nasrt.no_grad(function()
          for i, p in ipairs(W) do
            local d = p.grad:clone():add_(w0[i], wd):add_(w_opt.state[p].momentum_buffer, mu)
            p:copy_(w0[i]):add_(d, -eta)
          end
        end)
        local lv = nasrt.no_grad(function() return F.cross_entropy(net(xv), yv):item() end)
        nasrt.no_grad(function() for i, p in ipairs(W) do p:copy_(w0[i]) end end)
        for _, t in ipairs(W) do t:zero_grad() end
        for _, t in ipairs(A) do t:zero_grad() end
        return lv
      end

      local w_before = nasrt.no_grad(function()
        local t = {}
        for i, p in ipairs(W) do t[i] = p:detach():clone() end
        return t
      end)
      local g2 = darts_arch.Architect(net, { unrolled = true }):gradient(xt, yt, xv, yv, eta, w_opt)
      local g1 = darts_arch.Architect(net, { unrolled = false }):gradient(xt, yt, xv, yv, eta, w_opt)
      -- the architect leaves the weights exactly as it found them
      for i, p in ipairs(W) do assert.are.equal(0, (p - w_before[i]):abs():max():item()) end

      local function dot(g, r)
        local s = 0
        for k = 1, #A do
          local a, b = g[k]:reshape { -1 }:totable(), r[k]:reshape { -1 }:totable()
          for i = 1, #a do s = s + a[i] * b[i] end
        end
        return s
      end
      local function unit(list)
        local s = 0
        for _, t in ipairs(list) do
          for _, v in ipairs(t:reshape { -1 }:totable()) do s = s + v * v end
        end
        local out = {}
        for k, t in ipairs(list) do out[k] = t:clone():mul_(1 / math.sqrt(s)) end
        return out
      end
      local a0 = {}
      for k, a in ipairs(A) do a0[k] = a:detach():clone() end
      local dirs = { unit(g2), unit { nasrt.randn(A[1]:shape()), nasrt.randn(A[2]:shape()) },
                     unit { nasrt.randn(A[1]:shape()), nasrt.zeros(A[2]:shape()) } }
      local h = 1e-2
      for d, r in ipairs(dirs) do
        local function at(s)
          nasrt.no_grad(function()
            for k, a in ipairs(A) do a:copy_(a0[k]):add_(r[k], s * h) end
          end)
          return unrolled_loss()
        end
        local fd = (at(1) - at(-1)) / (2 * h)
        nasrt.no_grad(function() for k, a in ipairs(A) do a:copy_(a0[k]) end end)
        local second, first = dot(g2, r), dot(g1, r)
        local err2 = math.abs(fd - second)
        assert.is_true(err2 <= 2e-3 * math.abs(fd) + 2e-4,
          ("direction %d: finite difference %.6g, second order %.6g"):format(d, fd, second))
        -- and the implicit term matters: first order is far off
        assert.is_true(err2 < 0.05 * math.abs(fd - first),
          ("direction %d: fd %.6g second %.6g first %.6g"):format(d, fd, second, first))
      end
    end)
    F.relu = relu
    blocks.fuse_sep_conv = true
    assert(ok, err)
  end)

  it("first order: the gradient of L_val(w, alpha); one Adam step moves the alphas", function()
    nasrt.manual_seed(4)
    local net = supernet.darts { C = 4, layers = 2, steps = 2, multiplier = 2, classes = 10 }
    net:train()
    local x, y = nasrt.randn { 4, 1, 8, 8 }, nasrt.tensor { 1, 2, 3, 4 }
    local arch = darts_arch.Architect(net)
    assert.are.same({ 0.5, 0.999 }, arch.optimizer.param_groups[1].betas)
    assert.are.equal(3e-4, arch.optimizer.param_groups[1].lr)
    assert.are.equal(1e-3, arch.optimizer.param_groups[1].weight_decay)
    local g = arch:gradient(nil, nil, x, y)
    local A = net:arch_parameters()
    for _, a in ipairs(A) do a:zero_grad() end
    F.cross_entropy(net(x), y):backward()
    assert.are.equal(0, (A[2].grad - g[2]):abs():max():item())
    net:zero_grad()
    for _, a in ipairs(A) do a:zero_grad() end
    local before = A[2]:detach():clone()
    arch:step(nil, nil, x, y)
    assert.is_true((A[2] - before):abs():max():item() > 0)
    for _, p in ipairs(net:parameters()) do assert.is_nil(p.grad) end
  end)
end)
