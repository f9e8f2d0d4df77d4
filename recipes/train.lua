--- recipes/train.lua: retrain a found architecture from scratch and report
-- its test accuracy and size -- the evaluation protocol of DARTS (Liu et
-- al., ICLR 2019, cnn/train.py) that AGNAS (Sun et al., ICML 2022) and the
-- other cell-search papers reuse; ../shared/reference/differentiable.md §1.7
-- and §3.3.
--
-- The network is built from `--arch`, which may be
--   * a run directory's arch.json (recipes/agnas.lua: micro, macro or nb201;
--     recipes/darts.lua and friends: a DARTS genotype),
--   * a file or string holding DARTS' genotype text
--     ("Genotype(normal=[('sep_conv_3x3', 0), ...], ...)", AGNAS'
--     "[Normal_Genotype(...), Reduce_Genotype(...), ...]" five cell types),
--   * a NAS-Bench-201 arch string "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|",
--   * a macro path "macro:2,1,7,..." (1-based choices of agnas_macro),
-- or drawn at random (`--random=true`: a seeded random DARTS cell, matched
-- in size to `--arch` when one is given) for the "against random cells"
-- baseline.
--
-- Training (DARTS cells): SGD with momentum and weight decay, cosine
-- annealing per epoch, gradient clipping, random crop + flip + cutout,
-- drop-path on non-identity ops with a linear ramp 0 -> drop_path, and the
-- auxiliary head (weight 0.4).  Test accuracy on the Fashion-MNIST test set
-- at the end (metrics.json); checkpoints and `--resume` as every recipe.
--
--   nasrt recipes/train.lua --arch runs/agnas-.../arch.json
--   nasrt recipes/train.lua --random=true --arch runs/agnas-.../arch.json
--   nasrt recipes/train.lua --arch runs/agnas-.../arch.json --C=36 --layers=20 --epochs=600
--         --batch_size=96              (the paper's protocol)
-- @script train
local nasrt = require "nasrt"
local recipe = require "nasrt.recipe"

local F = nasrt.F
local optim = nasrt.optim
local supernet = nasrt.supernet

local R = {
  name = "train",
  description = "Retrain a found architecture from scratch on Fashion-MNIST and report test\n" ..
    "accuracy and params (DARTS' evaluation protocol).  Defaults take minutes on 2\n" ..
    "cores; --C=36 --layers=20 --epochs=600 is the paper's CIFAR-10 setting.",
}

-- NOTE(deviation): the defaults are scaled for 2 CPU cores (C 8 and 5 cells
-- instead of 36 and 20, 2 epochs instead of 600); the protocol is not.
R.defaults = {
  { "arch", "", "arch.json, genotype text (file or string), NB201 string or macro:path" },
  { "random", false, "train a random DARTS cell genotype instead (seeded by random_seed)" },
  { "random_seed", 1, "seed of the random genotype" },
  { "random_tolerance", 0.1, "random: redraw until params are within this fraction of --arch's" },
  { "epochs", 2, "training epochs (DARTS/AGNAS 600)" },
  { "batch_size", 96, "batch size (DARTS/AGNAS 96)" },
  { "lr", 0.025, "SGD learning rate (0.025)" },
  { "lr_min", 0.0, "final learning rate of the per-epoch cosine schedule (0)" },
  { "momentum", 0.9, "SGD momentum (0.9)" },
  { "weight_decay", 3e-4, "weight decay (3e-4)" },
  { "grad_clip", 5.0, "gradient norm clip, 0 = off (5)" },
  { "C", 8, "initial channels (DARTS/AGNAS 36; NB201 16)" },
  { "layers", 5, "DARTS cells, reductions at layers//3 and 2*layers//3 (DARTS/AGNAS 20)" },
  { "N", 5, "NB201: cells per stage (5)" },
  { "auxiliary", true, "auxiliary head after cell 2*layers//3 (DARTS cells)" },
  { "auxiliary_weight", 0.4, "auxiliary loss weight (0.4)" },
  { "drop_path", 0.2, "final drop-path probability, ramped linearly per epoch (0.2)" },
  { "cutout", 16, "cutout square side, 0 = off (16)" },
  { "augment", true, "random crop (pad 4) and horizontal flip" },
  { "train_limit", 0, "train images used, 0 = all 60000" },
  { "test_limit", 0, "test images used, 0 = all 10000" },
  { "input_size", 28, "input side; below 28 the images are average-pooled down (specs use 8)" },
  { "seed", 1, "seed of weights, data order, augmentation and drop-path (AGNAS uses 1)" },
  { "data_root", "", "Fashion-MNIST folder (empty: /usr/share/datasets/fashion-mnist)" },
  { "test_every", 0, "epochs between test evaluations logged, 0 = only at the end" },
  { "checkpoint_every", 200, "steps between checkpoints (one is also written at every epoch end)" },
  { "print_every", 50, "steps between progress lines, 0 = epoch lines only" },
  { "stop_after_steps", 0, "stop as Ctrl-C does once this global step is done (resume tests)" },
  { "quiet", false, "print nothing but errors" },
}

local MEAN, STD = 0.2860, 0.3530

local function say(cfg, fmt, ...)
  if not cfg.quiet then
    print(fmt:format(...))
    io.stdout:flush()
  end
end

local function n_correct(logits, y)
  local p, t = F.argmax(logits, 2):totable(), y:totable()
  local c = 0
  for i = 1, #p do
    if p[i] == t[i] then c = c + 1 end
  end
  return c
end

-- ------------------------------------------------------------------ architectures

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function macro_from_text(s)
  local body = s:match("^macro:%s*(.*)$") or s
  local arch = {}
  for d in body:gmatch("%d+") do arch[#arch + 1] = math.tointeger(tonumber(d)) end
  return arch
end

--- Architecture description from text: NB201 string, macro path or DARTS genotype.
local function arch_from_text(text, source)
  local s = trim(text)
  -- a genotype file may hold several lines; the first non-comment one counts
  if s:find("\n") then
    for line in s:gmatch("[^\n]+") do
      local l = trim(line)
      if l ~= "" and not l:match("^#") then s = l break end
    end
  end
  if s:sub(1, 1) == "|" then return { kind = "nb201", arch = s, text = s, source = source } end
  if s:match("^macro:") or s:match("^[%d%s,]+$") then
    return { kind = "macro", arch = macro_from_text(s), text = s, source = source }
  end
  local g, err = supernet.genotype_from_string(s)
  if not g then error("train: --arch: " .. tostring(err), 0) end
  return { kind = "darts", genotype = g, text = supernet.genotype_to_string(g), source = source }
end

--- Architecture description from a decoded arch.json.
local function arch_from_json(rec, source, cfg)
  if rec.type == "nb201" or (type(rec.arch) == "string" and rec.arch:sub(1, 1) == "|") then
    return { kind = "nb201", arch = rec.arch, text = rec.arch, source = source }
  end
  if rec.type == "agnas_macro" then
    return { kind = "macro", arch = rec.arch, layout = rec.supernet, text = rec.text, source = source }
  end
  if type(rec.cell_types) == "table" and #rec.cell_types == 5 then
    return { kind = "darts", genotype = rec.cell_types, text = supernet.genotype_to_string(rec.cell_types),
             source = source }
  end
  if type(rec.genotypes) == "table" and #rec.genotypes > 0 then
    if #rec.genotypes ~= cfg.layers then
      error(("train: %s has one genotype per cell of a %d-cell search and no five-cell-type " ..
        "list; train it with --layers=%d"):format(source, #rec.genotypes, #rec.genotypes), 0)
    end
    return { kind = "darts", genotype = rec.genotypes, text = supernet.genotype_to_string(rec.genotypes),
             source = source }
  end
  if type(rec.genotype) == "table" and (rec.genotype.normal or rec.genotype.reduce) then
    return { kind = "darts", genotype = rec.genotype, text = supernet.genotype_to_string(rec.genotype),
             source = source }
  end
  if type(rec.text) == "string" then return arch_from_text(rec.text, source) end
  error(("train: %s holds no architecture I know (type %s)"):format(source, tostring(rec.type)), 0)
end

-- The --arch readers parse untrusted text and JSON; tests/fuzz drives them.
R.arch_from_text, R.arch_from_json = arch_from_text, arch_from_json

local function load_arch(spec, cfg)
  if recipe.exists(spec) then
    local text = assert(recipe.read_file(spec))
    if trim(text):sub(1, 1) == "{" then
      local rec, err = recipe.decode(text)
      if not rec then error(("train: %s: bad JSON (%s)"):format(spec, tostring(err)), 0) end
      return arch_from_json(rec, spec, cfg)
    end
    return arch_from_text(text, spec)
  end
  return arch_from_text(spec, "--arch")
end

-- A small seeded generator (splitmix64) for the random genotype, so drawing
-- it leaves the global generator alone.
local function rng(seed)
  local s = seed
  return function(n)
    s = s + 0x9E3779B97F4A7C15
    local z = s
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    z = z ~ (z >> 31)
    return (z >> 11) % n + 1
  end
end

local RANDOM_OPS = { "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                     "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5" }

--- A random DARTS genotype: per node two distinct inputs, each with a random
-- non-`none` op (the random baseline of DARTS §3.3 / NAO).
local function random_genotype(draw)
  local function cell()
    local gene = {}
    for i = 0, 3 do
      local n = i + 2
      local a = draw(n) - 1
      local b = draw(n - 1) - 1
      if b >= a then b = b + 1 end
      gene[#gene + 1] = { RANDOM_OPS[draw(#RANDOM_OPS)], a }
      gene[#gene + 1] = { RANDOM_OPS[draw(#RANDOM_OPS)], b }
    end
    return gene
  end
  return { normal = cell(), normal_concat = { 2, 3, 4, 5 }, reduce = cell(),
           reduce_concat = { 2, 3, 4, 5 } }
end

-- spatial side at the auxiliary head (after cell 2*layers//3)
local function aux_side(cfg)
  local h = cfg.input_size
  for i = 0, 2 * cfg.layers // 3 do
    if i == cfg.layers // 3 or i == 2 * cfg.layers // 3 then h = (h + 1) // 2 end
  end
  return h
end

local function aux_fits(h)
  local stride = 3
  while stride > 1 and (h - 5) // stride + 1 < 2 do stride = stride - 1 end
  return h >= 6 and (h - 5) // stride + 1 == 2
end

--- Builds the network of an arch description.  Returns net, forward(x) ->
-- logits[, aux], the number of parameters without the auxiliary head, and
-- whether drop-path applies.
local function build(A, cfg, aux)
  if A.kind == "darts" then
    local net = supernet.darts_network(A.genotype, { C = cfg.C, layers = cfg.layers, classes = 10,
      in_channels = 1, auxiliary = aux, drop_path = 0, input_size = cfg.input_size })
    local n = 0
    for _, nt in ipairs(net:named_parameters()) do
      if not nt[1]:match("^auxiliary_head%.") then n = n + nt[2]:numel() end
    end
    return net, function(x) return net(x) end, n, true
  elseif A.kind == "nb201" then
    local net = supernet.nb201_network(A.arch, { C = cfg.C, N = cfg.N, classes = 10, in_channels = 1 })
    return net, function(x) return (net(x)) end, net:num_parameters(), false
  else
    local L = A.layout or {}
    local opts = { in_channels = 1, classes = 10, input_size = cfg.input_size, record_scores = false }
    for _, k in ipairs { "stages", "stem", "first_block", "head", "ratio" } do
      if L[k] ~= nil then opts[k] = L[k] end
    end
    local sn = supernet.agnas_macro(opts)
    if #A.arch ~= sn:num_layers() then
      error(("train: the macro path has %d choices, the %s layout %d layers (give the search " ..
        "run's arch.json, which records its layout)"):format(#A.arch,
        A.layout and "searched" or "default agnas_macro", sn:num_layers()), 0)
    end
    local net = sn:path_network(A.arch, { weights = "fresh" })
    A.names = sn:arch_names(A.arch)
    return net, function(x) return net(x) end, net:num_parameters(), false
  end
end

-- ------------------------------------------------------------------ run

function R.run(cfg, run)
  local t0 = nasrt.clock()
  nasrt.manual_seed(cfg.seed)
  -- the architecture
  local A
  if cfg.random then
    local ref = cfg.arch ~= "" and load_arch(cfg.arch, cfg) or nil
    local draw = rng(cfg.random_seed)
    local target
    if ref then
      local _, _, n = build(ref, cfg, false)
      target = n
    end
    local g, n
    for _ = 1, 200 do
      g = random_genotype(draw)
      local _, _, k = build({ kind = "darts", genotype = g }, cfg, false)
      n = k
      if not target or math.abs(n - target) <= cfg.random_tolerance * target then break end
    end
    A = { kind = "darts", genotype = g, text = supernet.genotype_to_string(g),
          source = ("random (seed %d)"):format(cfg.random_seed), reference_params = target }
  else
    if cfg.arch == "" then error("train: give --arch (arch.json, genotype text, ...) or --random=true", 0) end
    A = load_arch(cfg.arch, cfg)
  end
  -- data
  local tr, err = nasrt.data.fashion_mnist { split = "train",
    root = cfg.data_root ~= "" and cfg.data_root or nil }
  if not tr then error("train: " .. tostring(err), 0) end
  local te, err2 = nasrt.data.fashion_mnist { split = "test",
    root = cfg.data_root ~= "" and cfg.data_root or nil }
  if not te then error("train: " .. tostring(err2), 0) end
  local side = tr:shape()[2]
  if cfg.input_size < 1 or cfg.input_size > side then
    error(("train: --input_size must be in 1..%d"):format(side), 0)
  end
  local aug = { mean = MEAN, std = STD }
  if cfg.augment then aug.crop, aug.flip = 4, true end
  if cfg.cutout > 0 then aug.cutout = cfg.cutout end
  -- under mpirun each rank trains on its shard of every batch (nasrt.dist)
  local train = nasrt.dist.sharded(nasrt.data.loader(tr, { batch_size = cfg.batch_size,
    shuffle = true, seed = cfg.seed, augment = aug,
    limit = cfg.train_limit > 0 and cfg.train_limit or nil }))
  local test = nasrt.data.loader(te, { batch_size = math.max(cfg.batch_size, 128), shuffle = false,
    augment = { mean = MEAN, std = STD }, limit = cfg.test_limit > 0 and cfg.test_limit or nil })
  local function prep(x)
    if cfg.input_size ~= side then return F.adaptive_avg_pool2d(x, cfg.input_size) end
    return x
  end
  -- the network
  local aux = cfg.auxiliary and A.kind == "darts"
  if aux and not aux_fits(aux_side(cfg)) then
    -- NOTE(deviation): the auxiliary head needs a 6..11 pixel map after cell
    -- 2*layers//3; tiny inputs have none, so it is left out.
    say(cfg, "train: no auxiliary head (the map after cell %d is %dx%d)", 2 * cfg.layers // 3,
      aux_side(cfg), aux_side(cfg))
    aux = false
  end
  local net, forward, params, droppable = build(A, cfg, aux)
  local params_total = net:num_parameters()
  local ps = net:parameters()
  local opt = optim.SGD(ps, { lr = cfg.lr, momentum = cfg.momentum, weight_decay = cfg.weight_decay })
  local sched = optim.CosineLR(opt, cfg.epochs, cfg.lr_min)
  run:write_json("arch.json", { type = A.kind == "darts" and "darts_cells" or A.kind,
    genotype = A.kind == "darts" and A.genotype or nil, arch = A.arch, names = A.names,
    supernet = A.layout, text = A.text, source = A.source })
  local st = run.resumed and run:load() or nil
  local ep, step, sums = 0, 0, { 0, 0, 0 }
  local resume_loader = false
  if st then
    net:load_state_dict(st.model)
    opt:load_state_dict(st.optim)
    train:set_state(st.loader)
    nasrt.set_rng_state(st.rng)
    ep, step, sums = st.epoch, st.step, st.sums
    resume_loader = true
    run:log { kind = "resume", epoch = ep, step = step }
  else
    say(cfg, "train: %s (%s)", A.text, A.source)
    say(cfg, "train: %d parameters (%.3f MB)%s, %d train / %d test images, %d epochs", params,
      params / 1e6, aux and (", %d with the auxiliary head"):format(params_total) or "",
      train:size(), test:size(), cfg.epochs)
  end
  local nb = #train
  local total = cfg.epochs * nb
  local start_step = step
  local prog = run:progress(total, { start = step })
  local function save()
    run:save { model = net:state_dict(), optim = opt:state_dict(), loader = train:state(),
               rng = nasrt.get_rng_state(), epoch = ep, step = step, sums = sums }
  end
  local function evaluate()
    net:eval()
    local n, c, l = 0, 0, 0
    test:epoch(0)
    local stopped = false
    nasrt.no_grad(function()
      for x, y in test:iter() do
        if run:stop_requested() then stopped = true break end
        local logits = forward(prep(x))
        local b = y:shape()[1]
        l = l + F.cross_entropy(logits, y):item() * b
        c = c + n_correct(logits, y)
        n = n + b
      end
    end)
    net:train()
    if stopped then return nil end
    return c / math.max(n, 1), l / math.max(n, 1)
  end
  local function finish_interrupted()
    save()
    run.interrupted = true
    train:close()
    test:close()
    say(cfg, "train: stopped; checkpoint in %s", run:path("checkpoint.nrck"))
    return { dir = run.dir, interrupted = true }
  end
  net:train()
  while ep < cfg.epochs do
    sched:step(ep)
    local lr = opt:get_lr()
    if droppable then net.drop_path_prob = cfg.drop_path * ep / cfg.epochs end
    -- a new epoch, unless the checkpoint was taken inside this one (the
    -- epoch-end checkpoint holds the loader at the end of the last one)
    if not (resume_loader and train:state().epoch == ep) then train:epoch(ep) end
    resume_loader = false
    while train:state().pos < nb do
      if run:stop_requested() then return finish_interrupted() end
      local x, y = train:next()
      net:zero_grad()
      local logits, la = forward(prep(x))
      local loss = F.cross_entropy(logits, y)
      if la then loss = loss + F.scale(F.cross_entropy(la, y), cfg.auxiliary_weight) end
      loss:backward()
      if cfg.grad_clip > 0 then optim.clip_grad_norm(ps, cfg.grad_clip) end
      opt:step()
      local b = y:shape()[1]
      local lv, c = loss:item(), n_correct(logits, y)
      local lb
      lb, c, b = nasrt.dist.sum(lv * b, c, b) -- the global batch's (mpirun)
      lv = lb / b
      step = step + 1
      sums = { sums[1] + lv * b, sums[2] + c, sums[3] + b }
      run:log { kind = "step", epoch = ep, step = step, loss = lv, acc = c / b, lr = lr }
      prog:update(step, ("epoch %d/%d loss %.4f"):format(ep + 1, cfg.epochs, lv))
      if cfg.print_every > 0 and step % cfg.print_every == 0 then
        prog:line(("train step %d/%d  epoch %d/%d  loss %.4f  acc %.4f  lr %.5f"):format(step,
          total, ep + 1, cfg.epochs, sums[1] / sums[3], sums[2] / sums[3], lr))
      end
      if cfg.stop_after_steps > 0 and step == cfg.stop_after_steps and step > start_step then
        return finish_interrupted()
      end
      if cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0 then save() end
    end
    local rec = { kind = "epoch", epoch = ep, step = step, lr = lr,
                  drop_path = droppable and net.drop_path_prob or nil,
                  train_loss = sums[1] / math.max(sums[3], 1), train_acc = sums[2] / math.max(sums[3], 1) }
    if cfg.test_every > 0 and (ep + 1) % cfg.test_every == 0 and ep + 1 < cfg.epochs then
      local acc, loss = evaluate()
      if not acc then return finish_interrupted() end
      rec.test_acc, rec.test_loss = acc, loss
    end
    run:log(rec)
    prog:line(("train epoch %d/%d done  loss %.4f  acc %.4f%s"):format(ep + 1, cfg.epochs,
      rec.train_loss, rec.train_acc, rec.test_acc and ("  test acc %.4f"):format(rec.test_acc) or ""))
    ep, sums = ep + 1, { 0, 0, 0 }
    save()
  end
  local acc, loss = evaluate()
  if not acc then
    train:close()
    test:close()
    run.interrupted = true
    return { dir = run.dir, interrupted = true }
  end
  local m = {
    test_acc = acc, test_loss = loss, test_images = test:size(), params = params,
    params_mb = params / 1e6, params_with_auxiliary = params_total, epochs = cfg.epochs, steps = step,
    kind = A.kind, arch = A.text, source = A.source, reference_params = A.reference_params,
    auxiliary = aux, drop_path = cfg.drop_path, cutout = cfg.cutout, C = cfg.C, layers = cfg.layers,
    time_s = nasrt.clock() - t0,
  }
  run:write_json("metrics.json", m)
  run:log { kind = "done", test_acc = acc, test_loss = loss, params = params }
  say(cfg, "train: test accuracy %.4f (loss %.4f) on %d images, %d parameters (%.3f MB)", acc, loss,
    test:size(), params, params / 1e6)
  train:close()
  test:close()
  return m
end

return R
