--- recipes/agnas.lua: AGNAS, attention-guided micro- and macro-architecture
-- search (Sun et al., "AGNAS: Attention-Guided Micro- and Macro-Architecture
-- Search", ICML 2022; code Sunzh1996/AGNAS).  Facts used here are in
-- ../shared/reference/differentiable.md §3.
--
-- There are no architecture parameters.  Every edge (micro, the DARTS cell)
-- or layer (macro, the MBConv chain; nb201, the NAS-Bench-201 cell) runs all
-- its candidates and mixes them with an SE-style attention module that is
-- trained together with the weights, single level, by SGD on the train half
-- (§3.2).  After each epoch the validation half is forwarded in eval mode and
-- each candidate's attention, summed over channels and samples, is its
-- score.  The architecture is the DARTS top-2 rule on the scores of every
-- cell (micro; the evaluation network uses the five cell types of §3.3),
-- the argmax per layer (macro) or per edge (nb201).
--
--   nasrt recipes/agnas.lua                      micro, CPU-sized defaults
--   nasrt recipes/agnas.lua --space=macro        MBConv chain
--   nasrt recipes/agnas.lua --space=nb201        NAS-Bench-201 cell
--   nasrt recipes/agnas.lua --analysis=true      + the ranking analysis
--   nasrt recipes/agnas.lua --C=16 --layers=8 --epochs=50 --train_limit=0 --val_limit=0
--                                                the paper's micro setting
--
-- The ranking analysis (the paper's argument for attention over alpha): on
-- one edge, discretise the trained supernet to each op in turn and measure
-- its validation accuracy; compare that ranking with the ops' attention
-- scores and with the DARTS alphas of a DARTS supernet trained the same way
-- (first order, same budget) by Kendall tau (paper: 0.71 and 0).
--
-- The run directory holds config.json, log.jsonl, checkpoint.nrck, arch.json,
-- genotype.txt, the cells as DOT (+ SVG) and, with --analysis, analysis.json.
-- @script agnas
local nasrt = require "nasrt"
local recipe = require "nasrt.recipe"

local F = nasrt.F
local optim = nasrt.optim
local supernet = nasrt.supernet

local R = {
  name = "agnas",
  description = "AGNAS (Sun et al., ICML 2022): attention-guided NAS on Fashion-MNIST.\n" ..
    "Defaults are sized for a 2-core CPU (about a minute); every option reaches the\n" ..
    "paper's search setting (--C=16 --layers=8 --epochs=50 --train_limit=0 --val_limit=0).",
}

-- NOTE(deviation): the defaults are scaled for 2 CPU cores (C 8 instead of
-- 16, 5 cells instead of 8, 2 epochs instead of 50, 2560 of the 30000
-- train-half images and 2560 of the validation half); the algorithm is not.
R.defaults = {
  { "space", "micro", "search space: micro (DARTS cell), macro (MBConv chain) or nb201" },
  { "epochs", 2, "search epochs (paper 50)" },
  { "batch_size", 64, "batch size (paper 64)" },
  { "lr", 0.025, "SGD learning rate, cosine-annealed per epoch (paper 0.025)" },
  { "lr_min", 0.001, "final learning rate of the cosine schedule (paper 0.001)" },
  { "momentum", 0.9, "SGD momentum (paper 0.9)" },
  { "weight_decay", 3e-4, "weight decay, attention FCs included (paper 3e-4)" },
  { "grad_clip", 5.0, "gradient norm clip, 0 = off (paper 5)" },
  { "label_smoothing", 0.0, "label smoothing of the loss (paper 0 micro, 0.1 macro)" },
  { "C", 8, "micro/nb201: initial channels (paper 16)" },
  { "layers", 5, "micro: cells, reductions at layers//3 and 2*layers//3 (paper 8)" },
  { "N", 1, "nb201: cells per stage (NAS-Bench-201: 5)" },
  { "ratio", 0, "attention reduction ratio, 0 = the space's (micro/nb201 8, macro 16)" },
  { "stages", "", "macro: stages 'width:layers:stride,...' (empty: 24:2:2,40:2:2,64:2:2,96:1:1)" },
  { "stem", 0, "macro: stem width, 0 = 16" },
  { "head", 0, "macro: head width, 0 = 384" },
  { "train_portion", 0.5, "train/validation split of the Fashion-MNIST train set (paper 0.5)" },
  { "train_limit", 2560, "images of the train half used, 0 = all 30000" },
  { "val_limit", 2560, "images of the validation half used, 0 = all 30000" },
  { "input_size", 28, "input side; below 28 the images are average-pooled down (specs use 8)" },
  { "augment", true, "random crop (pad 4) and horizontal flip on the train half" },
  { "seed", 0, "seed of weights, data order and augmentation (AGNAS uses 0)" },
  { "data_root", "", "Fashion-MNIST folder (empty: /usr/share/datasets/fashion-mnist)" },
  { "checkpoint_every", 50, "steps between checkpoints (one is also written at every epoch end)" },
  { "print_every", 10, "steps between progress lines, 0 = epoch lines only" },
  { "stop_after_steps", 0, "stop as Ctrl-C does once step k of a training phase is done (tests)" },
  { "analysis", false, "micro: run the ranking analysis after the search" },
  { "analysis_cell", 0, "analysis: cell index, 0-based (Cell_0 of AGNAS)" },
  { "analysis_edge", 0, "analysis: edge index 0..13 in DARTS order (0, 1: node 0 <- s0, s1)" },
  { "analysis_mode", "onehot", "analysis: onehot (edge = the op) or mask (the op x its attention)" },
  { "analysis_val_limit", 0, "analysis: validation images per discretised supernet, 0 = val_limit" },
  { "arch_lr", 3e-4, "analysis: DARTS alpha Adam learning rate (DARTS 3e-4)" },
  { "arch_weight_decay", 1e-3, "analysis: DARTS alpha weight decay (DARTS 1e-3)" },
  { "dot", true, "render the DOT files to SVG when Graphviz' dot is on PATH" },
  { "quiet", false, "print nothing but errors" },
}

-- Fashion-MNIST pixel statistics (train set), the normalisation of every loader.
local MEAN, STD = 0.2860, 0.3530

local SPACES = { micro = true, macro = true, nb201 = true }

-- ------------------------------------------------------------------ helpers

local function say(cfg, fmt, ...)
  if not cfg.quiet then
    print(fmt:format(...))
    io.stdout:flush()
  end
end

--- Class predictions that match: logits [N, K], y [N] (class ids as floats).
local function n_correct(logits, y)
  local p, t = F.argmax(logits, 2):totable(), y:totable()
  local c = 0
  for i = 1, #p do
    if p[i] == t[i] then c = c + 1 end
  end
  return c
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function have_dot()
  local ok = os.execute("command -v dot >/dev/null 2>&1")
  return ok == true or ok == 0
end

--- Writes name.dot for every {name, text} and renders name.svg if possible.
local function write_dots(run, cfg, dots)
  local render = cfg.dot and have_dot()
  local files = {}
  for _, d in ipairs(dots) do
    local path = run:path(d[1] .. ".dot")
    run:write_text(d[1] .. ".dot", d[2])
    files[#files + 1] = d[1] .. ".dot"
    if render then
      local svg = run:path(d[1] .. ".svg")
      os.execute(("dot -Tsvg %s -o %s >/dev/null 2>&1"):format(shell_quote(path), shell_quote(svg)))
      if recipe.exists(svg) then files[#files + 1] = d[1] .. ".svg" end
    end
  end
  return files
end

--- "24:2:2,40:2:2" -> {{24, 2, 2}, {40, 2, 2}}
local function parse_stages(s)
  local out = {}
  for item in s:gmatch("[^,%s]+") do
    local c, n, st = item:match("^(%d+):(%d+):(%d+)$")
    if not c then
      error(("agnas: --stages entry %q must be width:layers:stride"):format(item), 0)
    end
    out[#out + 1] = { tonumber(c) // 1, tonumber(n) // 1, tonumber(st) // 1 }
  end
  if #out == 0 then error("agnas: --stages is empty", 0) end
  return out
end

-- ------------------------------------------------------------------ data

--- The train half (augmented, shuffled) and the validation half (plain, in
-- order) of the Fashion-MNIST train set, as DARTS splits CIFAR-10.
-- NOTE(deviation): DARTS/AGNAS feed the validation half through the train
-- transform (crop + flip); here it is only normalised, so the scores and
-- the analysis' accuracies are measured on the images themselves.
local function make_data(cfg)
  local ds, err = nasrt.data.fashion_mnist { split = "train",
    root = cfg.data_root ~= "" and cfg.data_root or nil }
  if not ds then error("agnas: " .. tostring(err), 0) end
  local shape = ds:shape()
  if cfg.input_size < 1 or cfg.input_size > shape[2] then
    error(("agnas: --input_size must be in 1..%d, got %d"):format(shape[2], cfg.input_size), 0)
  end
  local tr, va = nasrt.data.split(ds, { fraction = cfg.train_portion })
  local aug = { mean = MEAN, std = STD }
  if cfg.augment then aug.crop, aug.flip = 4, true end
  local function limit(n) return n > 0 and n or nil end
  local D = {}
  -- under mpirun each rank trains on its shard of every batch (nasrt.dist)
  D.train = nasrt.dist.sharded(nasrt.data.loader(tr, { batch_size = cfg.batch_size,
    shuffle = true, seed = cfg.seed, augment = aug, limit = limit(cfg.train_limit) }))
  D.val = nasrt.data.loader(va, { batch_size = cfg.batch_size, shuffle = false,
    augment = { mean = MEAN, std = STD }, limit = limit(cfg.val_limit) })
  D.val_set = va
  D.size = shape[2]
  function D.prep(x)
    if cfg.input_size ~= D.size then return F.adaptive_avg_pool2d(x, cfg.input_size) end
    return x
  end
  function D.close()
    for _, k in ipairs { "train", "val", "val_arch", "val_analysis" } do
      if D[k] then D[k]:close() end
    end
  end
  return D
end

--- Accuracy and mean loss of `forward` over a loader in eval mode (no
-- gradient).  Returns nil when Ctrl-C arrives in between batches.
local function evaluate(run, forward, loader, prep)
  local n, correct, loss = 0, 0, 0
  loader:epoch(0)
  local stopped = false
  nasrt.no_grad(function()
    for x, y in loader:iter() do
      if run:stop_requested() then
        stopped = true
        break
      end
      local logits = forward(prep(x))
      local b = y:shape()[1]
      loss = loss + F.cross_entropy(logits, y):item() * b
      correct = correct + n_correct(logits, y)
      n = n + b
    end
  end)
  if stopped then return nil end
  return correct / math.max(n, 1), loss / math.max(n, 1), n
end

-- ------------------------------------------------------------------ spaces

local function cell_kind(i, layers) -- i 0-based
  return (i == layers // 3 or i == 2 * layers // 3) and "reduce" or "normal"
end

--- 0-based cells of the five AGNAS cell types (§3.3): first normal, first
-- reduction, first normal of the middle stage, second reduction, first
-- normal of the last stage -- cells 0, 2, 3, 5, 6 of 8.  Small networks
-- lack some of them; then each type takes the nearest cell of its kind,
-- and when there is no normal cell at all there is no list (nil).
local function five_cell_types(layers)
  local r1, r2 = layers // 3, 2 * layers // 3
  local want = { { 0, "normal" }, { r1, "reduce" }, { r1 + 1, "normal" }, { r2, "reduce" },
                 { r2 + 1, "normal" } }
  local out = {}
  for k, w in ipairs(want) do
    local best
    for i = 0, layers - 1 do
      if cell_kind(i, layers) == w[2] and (best == nil or math.abs(i - w[1]) < math.abs(best - w[1])) then
        best = i
      end
    end
    if best == nil then return nil end
    out[k] = best
  end
  return out
end

local TYPE_NAMES = { "first normal cell", "first reduction cell", "middle-stage normal cell",
                     "second reduction cell", "last-stage normal cell" }

--- Graphviz text of an NB201 cell (nodes 0..3, one labelled edge per op;
-- `none` edges are left out).
local function nb201_dot(genotype)
  local L = { "digraph {", "\tgraph [rankdir=LR]",
    '\tnode [fontname=times fontsize=20 shape=rect style=filled fillcolor=lightblue]',
    "\tedge [fontname=times fontsize=16]" }
  local to = { 1, 2, 2, 3, 3, 3 }
  for e, g in ipairs(genotype) do
    if g[1] ~= "none" then
      L[#L + 1] = ('\t"%d" -> "%d" [label="%s"]'):format(g[2], to[e], g[1])
    end
  end
  L[#L + 1] = "}"
  return table.concat(L, "\n") .. "\n"
end

local chain_dot = require("nasrt.plot").chain_dot  -- Graphviz text of a macro path

--- Builds the space's supernet and a small adapter:
-- S.net, S.forward(x) -> logits, S.collect(on), S.reset(), S.scores(),
-- S.derive() -> arch record, DOT list, printable lines.
local function build_space(cfg)
  local S = {}
  local ratio = cfg.ratio > 0 and cfg.ratio or nil
  if cfg.space == "micro" then
    local net = supernet.agnas { C = cfg.C, layers = cfg.layers, in_channels = 1, classes = 10,
                                 ratio = ratio }
    S.net = net
    function S.forward(x) return net(x) end
    function S.collect(on) net.collect_scores = on end
    function S.reset() net:reset_scores() end
    function S.scores() return net:scores() end
    function S.derive()
      local per = net:genotypes()
      local idx = five_cell_types(cfg.layers)
      local types
      if idx then
        types = {}
        for k, i in ipairs(idx) do types[k] = per[i + 1] end
      end
      local arch = {
        type = "agnas", space = "micro", genotypes = per, cell_types = types,
        cell_type_cells = idx, primitives = net.primitives, C = cfg.C, layers = cfg.layers,
        text = supernet.genotype_to_string(types or per),
      }
      local dots, lines = {}, {}
      for i, g in ipairs(per) do
        local kind = g.normal and "normal" or "reduce"
        dots[#dots + 1] = { ("cell%d_%s"):format(i - 1, kind), supernet.genotype_dot(g, kind) }
      end
      if types then
        for k, g in ipairs(types) do
          lines[#lines + 1] = ("  Cell_%d (%s): %s"):format(idx[k], TYPE_NAMES[k],
            supernet.genotype_to_string(g))
        end
      else
        for i, g in ipairs(per) do
          lines[#lines + 1] = ("  Cell_%d: %s"):format(i - 1, supernet.genotype_to_string(g))
        end
      end
      return arch, dots, lines
    end
  elseif cfg.space == "macro" then
    local opts = { in_channels = 1, classes = 10, input_size = cfg.input_size, ratio = ratio,
                   record_scores = false }
    if cfg.stages ~= "" then opts.stages = parse_stages(cfg.stages) end
    if cfg.stem > 0 then opts.stem, opts.first_block = cfg.stem, cfg.stem end
    if cfg.head > 0 then opts.head = cfg.head end
    local net = supernet.agnas_macro(opts)
    S.net = net
    S.layout = { stages = opts.stages, stem = opts.stem, first_block = opts.first_block,
                 head = opts.head, ratio = opts.ratio, input_size = cfg.input_size }
    function S.forward(x) return (net(x)) end
    function S.collect(on) net.record_scores = on end
    function S.reset() net:reset_scores() end
    function S.scores() return (net:scores()) end
    function S.derive()
      local arch, names = net:derive()
      local rec = { type = "agnas_macro", space = "macro", arch = arch, names = names,
                    choices = net:choices(), supernet = S.layout,
                    text = "macro:" .. table.concat(arch, ",") }
      local lines = {}
      for l, name in ipairs(names) do
        local inf = net:layer_info(l)
        lines[#lines + 1] = ("  layer %2d (%d -> %d, stride %d): %s"):format(l, inf.cin, inf.cout,
          inf.stride, name)
      end
      return rec, { { "macro", chain_dot(names) } }, lines
    end
  else
    local net = supernet.nb201 { C = cfg.C, N = cfg.N, in_channels = 1, classes = 10,
                                 mode = "agnas", ratio = ratio }
    net.record_scores = false
    S.net = net
    function S.forward(x) return (net(x)) end
    function S.collect(on) net.record_scores = on end
    function S.reset() net:reset_scores() end
    function S.scores() return net:scores() end
    function S.derive()
      local s = net:arch_string()
      local rec = { type = "nb201", space = "nb201", arch = s, genotype = net:genotype(),
                    C = cfg.C, N = cfg.N, text = s }
      local lines = { "  " .. s }
      local okb, bench = pcall(nasrt.bench.nb201)
      if okb and bench then
        local okq, q = pcall(bench.query, bench, s)
        if okq and type(q) == "table" and q.cifar10 then
          rec.nb201_bench = { cifar10_test = q.cifar10.test, cifar100_test = q.cifar100 and q.cifar100.test,
                              imagenet16_test = q.imagenet16 and q.imagenet16.test, index = q.index }
          lines[#lines + 1] = ("  NAS-Bench-201 CIFAR-10 test accuracy of this cell: %.2f%%"):format(
            q.cifar10.test)
        end
      end
      return rec, { { "cell", nb201_dot(rec.genotype) } }, lines
    end
  end
  return S
end

-- ------------------------------------------------------------------ training loop

--- Trains a supernet for cfg.epochs from `st` (a checkpoint section or nil).
-- hooks:
--   step(x, y) -> loss, correct       one optimisation step on a batch
--   epoch_end(epoch) -> record|nil     after an epoch's training (nil: stopped)
--   state() -> table                   extra checkpoint fields
--   restore(st)                        the inverse of state() (and the model)
--   save(section)                      writes the checkpoint holding `section`
-- Returns true when finished, false when stopped (checkpoint written).
local function train_loop(run, cfg, D, opt, sched, hooks, st, label)
  local nb = #D.train
  local total = cfg.epochs * nb
  local ep, step, trained = 0, 0, false
  local sums = { 0, 0, 0 }           -- loss * n, correct, n of the epoch so far
  local resume_loader = false
  if st then
    hooks.restore(st)
    opt:load_state_dict(st.optim)
    D.train:set_state(st.loader)
    nasrt.set_rng_state(st.rng)
    ep, step, trained, sums = st.epoch, st.step, st.trained, st.sums
    resume_loader = true
    run:log { kind = "resume", phase = label, epoch = ep + 1, step = step }
  end
  local start_step = step
  local prog = run:progress(total, { start = step })
  local function section()
    local s = hooks.state()
    s.optim, s.loader, s.rng = opt:state_dict(), D.train:state(), nasrt.get_rng_state()
    s.epoch, s.step, s.trained, s.sums = ep, step, trained, sums
    return s
  end
  local function stop()
    hooks.save(section())
    run.interrupted = true
    return false
  end
  -- ep counts from 0 here (the scheduler's and the loader's epoch); the log
  -- and the terminal count from 1, as every other recipe
  while ep < cfg.epochs do
    sched:step(ep)
    local lr = opt:get_lr()
    if not trained then
      -- a new epoch, unless the checkpoint was taken inside this one (the
      -- epoch-end checkpoint holds the loader at the end of the last one)
      if not (resume_loader and D.train:state().epoch == ep) then D.train:epoch(ep) end
      resume_loader = false
      while D.train:state().pos < nb do
        if run:stop_requested() then return stop() end
        local x, y = D.train:next()
        local loss, correct = hooks.step(D.prep(x), y)
        local b = y:shape()[1]
        local lb
        lb, correct, b = nasrt.dist.sum(loss * b, correct, b) -- the global batch's (mpirun)
        loss = lb / b
        step = step + 1
        sums = { sums[1] + loss * b, sums[2] + correct, sums[3] + b }
        run:log { kind = "step", phase = label, epoch = ep + 1, step = step, loss = loss,
                  acc = correct / b, lr = lr }
        prog:update(step, ("%s epoch %d/%d loss %.4f"):format(label, ep + 1, cfg.epochs, loss))
        if cfg.print_every > 0 and step % cfg.print_every == 0 then
          prog:line(("%s step %d/%d  epoch %d/%d  loss %.4f  acc %.3f  lr %.5f"):format(label,
            step, total, ep + 1, cfg.epochs, sums[1] / sums[3], sums[2] / sums[3], lr))
        end
        if cfg.stop_after_steps > 0 and step == cfg.stop_after_steps and step > start_step then
          return stop()
        end
        if cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0 then
          hooks.save(section())
        end
      end
      trained = true
    end
    local rec = hooks.epoch_end(ep)
    if not rec then return stop() end
    rec.kind, rec.phase, rec.epoch, rec.step, rec.lr = "epoch", label, ep + 1, step, lr
    if sums[3] > 0 then rec.train_loss, rec.train_acc = sums[1] / sums[3], sums[2] / sums[3] end
    sums = { 0, 0, 0 }
    run:log(rec)
    prog:line(("%s epoch %d/%d done  train loss %s  val acc %.4f"):format(label, ep + 1,
      cfg.epochs, rec.train_loss and ("%.4f"):format(rec.train_loss) or "-", rec.val_acc or 0))
    ep, trained = ep + 1, false
    hooks.save(section())
  end
  return true
end

local function cosine(opt, cfg)
  -- NOTE(deviation): epoch e (0-based) trains at the cosine value of t = e
  -- (today's PyTorch); DARTS/AGNAS' PyTorch-0.3 scheduler used t = e + 1.
  return optim.CosineLR(opt, cfg.epochs, cfg.lr_min)
end

local function sgd(params, cfg)
  return optim.SGD(params, { lr = cfg.lr, momentum = cfg.momentum,
                             weight_decay = cfg.weight_decay })
end

local function sgd_step(net, params, opt, cfg, forward, x, y)
  net:zero_grad()
  local logits = forward(x)
  local loss = F.cross_entropy(logits, y, { label_smoothing = cfg.label_smoothing })
  loss:backward()
  if cfg.grad_clip > 0 then optim.clip_grad_norm(params, cfg.grad_clip) end
  opt:step()
  return loss:item(), n_correct(logits, y)
end

-- ------------------------------------------------------------------ search

--- Phase 1: the AGNAS supernet, single level (§3.2).
local function search(run, cfg, D, S, st)
  local net = S.net
  local params = net:parameters()
  local opt = sgd(params, cfg)
  local sched = cosine(opt, cfg)
  local last = { scores = nil, val_acc = nil, val_loss = nil }
  local hooks = {}
  function hooks.step(x, y)
    return sgd_step(net, params, opt, cfg, S.forward, x, y)
  end
  -- the architecture evaluation of §3.2: scores over the validation half,
  -- eval mode, no gradient
  local function score_pass()
    net:eval()
    S.collect(true)
    S.reset()
    local acc, loss = evaluate(run, S.forward, D.val, D.prep)
    S.collect(false)
    net:train()
    if not acc then return nil end
    last.scores, last.val_acc, last.val_loss = S.scores(), acc, loss
    return true
  end
  function hooks.epoch_end()
    if not score_pass() then return nil end
    local arch = S.derive()
    return { val_acc = last.val_acc, val_loss = last.val_loss, scores = last.scores,
             genotype = arch.text }
  end
  function hooks.state()
    return { phase = "search", model = net:state_dict(), scores = last.scores or {} }
  end
  function hooks.restore(s) net:load_state_dict(s.model) end
  function hooks.save(s) run:save(s) end
  net:train()
  if not train_loop(run, cfg, D, opt, sched, hooks, st, "search") then return nil end
  -- a run resumed after its last epoch recomputes the final scores (the
  -- pass is deterministic, so they equal the ones that were logged)
  if not last.scores then
    if not score_pass() then      -- the checkpoint on disk still holds this state
      run.interrupted = true
      return nil
    end
  end
  return last
end

--- Writes arch.json, genotype.txt and the DOT/SVG files; prints the cells.
local function write_arch(run, cfg, S, last)
  local arch, dots, lines = S.derive()
  arch.val_acc = last.val_acc
  arch.files = write_dots(run, cfg, dots)
  run:write_json("arch.json", arch)
  run:write_text("genotype.txt", arch.text .. "\n")
  say(cfg, "agnas: found architecture (%s space, supernet validation accuracy %.4f):",
    cfg.space, last.val_acc or 0)
  for _, l in ipairs(lines) do say(cfg, "%s", l) end
  say(cfg, "agnas: genotype text in %s", run:path("genotype.txt"))
  local svgs = {}
  for _, f in ipairs(arch.files) do
    if f:match("%.svg$") then svgs[#svgs + 1] = f end
  end
  if #svgs > 0 then say(cfg, "agnas: the cells drawn: %s", table.concat(svgs, ", ")) end
  say(cfg, "agnas: charts of the run: ./build/nasrt plot %s", run.dir)
  return arch
end

-- ------------------------------------------------------------------ analysis

local function index_of(list, v)
  for i, x in ipairs(list) do if x == v then return i end end
end

-- "node 1 <- node 0" style description of a DARTS edge (0-based)
local function edge_desc(e)
  local start = 0
  for node = 0, 13 do
    local n = node + 2
    if e < start + n then
      local j = e - start
      local src = j == 0 and "c_{k-2}" or j == 1 and "c_{k-1}" or ("node " .. (j - 2))
      return ("node %d <- %s"):format(node, src)
    end
    start = start + n
  end
end

local function tau_of(xs, ys)
  local t = nasrt.search.kendall_tau(xs, ys)
  if t ~= t then return nil end
  return t
end

--- Accuracies of the supernet discretised to each op on one edge (AGNAS:
-- the edge's attention replaced by a one-hot on that op, or masked to it).
local function agnas_discretised(run, cfg, D, net, cell, edge)
  local prims = net.primitives
  local e_mod = net.cells[cell + 1].edges[edge + 1]
  local Cc = e_mod.C
  local accs, losses = {}, {}
  net:eval()
  net.collect_scores = false
  for k = 1, #prims do
    local op = e_mod.ops[k]
    if cfg.analysis_mode == "mask" and prims[k] ~= "none" then
      rawset(e_mod, "mix", function(self, x, rc)
        local _, y = supernet.AGNASEdge.mix(self, x, rc)
        return F.attn_sum({ op(x) }, F.narrow(y, 2, (k - 1) * Cc + 1, Cc)), y
      end)
    else
      rawset(e_mod, "mix", function(_, x) return op(x) end)
    end
    local acc, loss = evaluate(run, function(x) return net(x) end, D.val_analysis, D.prep)
    rawset(e_mod, "mix", nil)
    if not acc then net:train(); return nil end
    accs[k], losses[k] = acc, loss
    say(cfg, "  agnas: %-14s discretised accuracy %.4f", prims[k], acc)
  end
  net:train()
  return accs, losses
end

--- Accuracies of the DARTS supernet discretised (one-hot alpha row) to
-- each op, in `order` (op names).
local function darts_discretised(run, cfg, D, dnet, cell, edge, order)
  local w = nasrt.no_grad(function()
    local aw = dnet:arch_weights()
    return { normal = aw.normal:totable(), reduce = aw.reduce:totable() }
  end)
  local dprims = dnet.primitives
  local accs, losses = {}, {}
  dnet:eval()
  for k, name in ipairs(order) do
    local list = {}
    for i = 0, cfg.layers - 1 do
      local rows = w[cell_kind(i, cfg.layers)]
      if i == cell then
        local copy = {}
        for r, row in ipairs(rows) do copy[r] = table.move(row, 1, #row, 1, {}) end
        local hot = {}
        for c = 1, #dprims do hot[c] = dprims[c] == name and 1 or 0 end
        copy[edge + 1] = hot
        rows = copy
      end
      list[i + 1] = nasrt.tensor(rows)
    end
    local acc, loss = evaluate(run, function(x) return dnet(x, list) end, D.val_analysis, D.prep)
    if not acc then dnet:train(); return nil end
    accs[k], losses[k] = acc, loss
    say(cfg, "  darts: %-14s discretised accuracy %.4f", name, acc)
  end
  dnet:train()
  return accs, losses
end

--- Phase 2-3 of --analysis (micro): the AGNAS half on the trained supernet,
-- then a first-order DARTS supernet trained with the same budget.
local function analysis(run, cfg, D, S, last, st)
  local cell, edge = cfg.analysis_cell, cfg.analysis_edge
  if cell < 0 or cell >= cfg.layers then
    error(("agnas: --analysis_cell must be in 0..%d"):format(cfg.layers - 1), 0)
  end
  if edge < 0 or edge > 13 then error("agnas: --analysis_edge must be in 0..13", 0) end
  if cfg.analysis_mode ~= "onehot" and cfg.analysis_mode ~= "mask" then
    error("agnas: --analysis_mode must be onehot or mask", 0)
  end
  local vlim = cfg.analysis_val_limit > 0 and cfg.analysis_val_limit or cfg.val_limit
  D.val_analysis = nasrt.data.loader(D.val_set, { batch_size = cfg.batch_size, shuffle = false,
    augment = { mean = MEAN, std = STD }, limit = vlim > 0 and vlim or nil })
  local prims = S.net.primitives
  local A = st and st.analysis
  if not A then
    say(cfg, "agnas: analysis on Cell_%d edge %d (%s), %d ops", cell, edge, edge_desc(edge), #prims)
    -- attention: the edge's score row, as a mean attention per channel and sample
    local row = last.scores[cell + 1][edge + 1]
    local e_mod = S.net.cells[cell + 1].edges[edge + 1]
    local n = D.val:size()
    local att = {}
    for k = 1, #prims do att[k] = row[k] / (n * e_mod.C) end
    local accs, losses = agnas_discretised(run, cfg, D, S.net, cell, edge)
    if not accs then
      run:save { phase = "analysis_agnas", model = S.net:state_dict(), scores = last.scores,
                 val_acc = last.val_acc }
      run.interrupted = true
      return nil
    end
    A = { attention = att, agnas_acc = accs, agnas_loss = losses }
    st = nil
  end
  -- the DARTS supernet: bilevel first order (differentiable.md §1.4-1.5)
  nasrt.manual_seed(cfg.seed)
  local dnet = supernet.darts { C = cfg.C, layers = cfg.layers, in_channels = 1, classes = 10 }
  local params = dnet:parameters()
  local wopt = sgd(params, cfg)
  local sched = cosine(wopt, cfg)
  local aopt = optim.Adam(dnet:arch_parameters(), { lr = cfg.arch_lr, betas = { 0.5, 0.999 },
                                                     weight_decay = cfg.arch_weight_decay })
  D.val_arch = nasrt.data.loader(D.val_set, { batch_size = cfg.batch_size, shuffle = true,
    seed = cfg.seed + 1, augment = { mean = MEAN, std = STD },
    limit = cfg.val_limit > 0 and cfg.val_limit or nil })
  local hooks = {}
  function hooks.step(x, y)
    local xv, yv = D.val_arch:next(true)
    aopt:zero_grad()
    dnet:zero_grad()
    F.cross_entropy(dnet(D.prep(xv)), yv):backward()
    aopt:step()
    aopt:zero_grad()
    return sgd_step(dnet, params, wopt, cfg, function(z) return dnet(z) end, x, y)
  end
  function hooks.epoch_end()
    local acc, loss = evaluate(run, function(x) return dnet(x) end, D.val, D.prep)
    if not acc then return nil end
    return { val_acc = acc, val_loss = loss, alphas = dnet:alphas(),
             genotype = supernet.genotype_to_string(dnet:genotype()) }
  end
  function hooks.state()
    return { phase = "analysis_darts", analysis = A, model = dnet:state_dict(),
             aoptim = aopt:state_dict(), val_arch = D.val_arch:state(), val_acc = last.val_acc }
  end
  function hooks.restore(s)
    dnet:load_state_dict(s.model)
    aopt:load_state_dict(s.aoptim)
    D.val_arch:set_state(s.val_arch)
  end
  function hooks.save(s) run:save(s) end
  dnet:train()
  local dst = st and st.phase == "analysis_darts" and st or nil
  if not train_loop(run, cfg, D, wopt, sched, hooks, dst, "darts") then return nil end
  local arow = dnet:alphas()[cell_kind(cell, cfg.layers)][edge + 1]   -- softmax(alpha)
  local alpha = {}
  for k, name in ipairs(prims) do alpha[k] = arow[index_of(dnet.primitives, name)] end
  local daccs, dlosses = darts_discretised(run, cfg, D, dnet, cell, edge, prims)
  if not daccs then
    run:save(hooks.state())
    run.interrupted = true
    return nil
  end
  -- Kendall tau of each importance measure against the discretised
  -- accuracy.  When every accuracy ties (a barely trained supernet) tau is
  -- undefined; the validation loss (lower is better) then stands in.
  local basis, truth = "accuracy", A.agnas_acc
  local t_att = tau_of(A.attention, truth)
  if t_att == nil then
    basis, truth = "negative validation loss", {}
    for k, l in ipairs(A.agnas_loss) do truth[k] = -l end
    t_att = tau_of(A.attention, truth)
  end
  local t_alpha = tau_of(alpha, truth)
  local dbasis, dtruth = "accuracy", daccs
  local t_alpha_own = tau_of(alpha, dtruth)
  if t_alpha_own == nil then
    dbasis, dtruth = "negative validation loss", {}
    for k, l in ipairs(dlosses) do dtruth[k] = -l end
    t_alpha_own = tau_of(alpha, dtruth)
  end
  local res = {
    cell = cell, edge = edge, edge_desc = edge_desc(edge), cell_kind = cell_kind(cell, cfg.layers),
    mode = cfg.analysis_mode, ops = prims, val_images = vlim > 0 and vlim or #D.val_set,
    accuracy = A.agnas_acc, val_loss = A.agnas_loss, attention = A.attention, alpha = alpha,
    tau_attention = t_att or 0, tau_alpha = t_alpha or 0, tau_basis = basis,
    tau_defined = t_att ~= nil and t_alpha ~= nil,
    darts_accuracy = daccs, darts_val_loss = dlosses, tau_alpha_darts = t_alpha_own or 0,
    darts_tau_basis = dbasis,
    paper = { tau_attention = 0.71, tau_alpha = 0 },
  }
  run:write_json("analysis.json", res)
  say(cfg, "agnas: ranking analysis, Cell_%d edge %d (%s), %s:", cell, edge, res.edge_desc,
    cfg.analysis_mode)
  say(cfg, "  %-14s %9s %9s %9s %9s", "op", "acc", "attention", "alpha", "darts acc")
  for k, name in ipairs(prims) do
    say(cfg, "  %-14s %9.4f %9.4f %9.4f %9.4f", name, A.agnas_acc[k], A.attention[k], alpha[k],
      daccs[k])
  end
  say(cfg, "  Kendall tau vs AGNAS discretised %s: attention %.3f, DARTS alpha %.3f (paper: 0.71, 0)",
    basis, res.tau_attention, res.tau_alpha)
  say(cfg, "  Kendall tau of DARTS alpha vs the DARTS supernet's own discretised %s: %.3f", dbasis,
    res.tau_alpha_darts)
  run:log { kind = "analysis", tau_attention = res.tau_attention, tau_alpha = res.tau_alpha,
            tau_alpha_darts = res.tau_alpha_darts }
  return res
end

-- ------------------------------------------------------------------ run

function R.run(cfg, run)
  if not SPACES[cfg.space] then
    error(("agnas: --space must be micro, macro or nb201, got %q"):format(tostring(cfg.space)), 0)
  end
  if cfg.analysis and cfg.space ~= "micro" then
    error("agnas: --analysis is defined on the micro (DARTS) space only", 0)
  end
  local t0 = nasrt.clock()
  local st = run.resumed and run:load() or nil
  if run.resumed and not st then say(cfg, "agnas: %s has no checkpoint; starting over", run.dir) end
  if st and st.phase == "done" then
    say(cfg, "agnas: %s is already complete", run.dir)
    return { dir = run.dir, arch = recipe.decode(recipe.read_file(run:path("arch.json")) or "null"),
             analysis = recipe.decode(recipe.read_file(run:path("analysis.json")) or "null") }
  end
  nasrt.manual_seed(cfg.seed)
  local D = make_data(cfg)
  local S = build_space(cfg)
  local params = S.net:num_parameters()
  if not st then
    say(cfg, "agnas: %s space, %d supernet parameters, %d train / %d validation images, %d epochs",
      cfg.space, params, D.train:size(), D.val:size(), cfg.epochs)
  end
  local function body()
    local phase = st and st.phase or "search"
    local last, arch
    if phase == "search" then
      last = search(run, cfg, D, S, st)
      if not last then return nil end
      arch = write_arch(run, cfg, S, last)
      run:save { phase = "searched", model = S.net:state_dict(), scores = last.scores,
                 val_acc = last.val_acc }
    else
      if phase == "searched" or phase == "analysis_agnas" then
        S.net:load_state_dict(st.model)
        last = { scores = st.scores, val_acc = st.val_acc }
      else                                             -- analysis_darts
        last = { val_acc = st.val_acc }
      end
      arch = recipe.decode(assert(recipe.read_file(run:path("arch.json")),
        "agnas: resume: arch.json is missing"))
    end
    local A
    if cfg.analysis then
      A = analysis(run, cfg, D, S, last, phase == "analysis_darts" and st or nil)
      if not A then return nil end
    end
    -- the final checkpoint keeps the final weights (kill/resume tests compare
    -- them); it comes after the "done" record, so a kill between the two
    -- resumes from the previous checkpoint, whose log length drops the
    -- record and writes it again (saved first, a kill there lost the record:
    -- scripts/killtest.lua --recipe agnas)
    run:log { kind = "done", time_s = nasrt.clock() - t0, val_acc = last.val_acc }
    run:save { phase = "done", val_acc = last.val_acc, model = S.net:state_dict() }
    return { dir = run.dir, arch = arch, scores = last.scores, val_acc = last.val_acc,
             analysis = A, params = params }
  end
  local ok, res = xpcall(body, function(e)
    if type(e) == "string" and (e:match("^agnas:") or e:match("^divergence:")) then return e end
    return debug.traceback(tostring(e), 2)
  end)
  D.close()
  if not ok then error(res, 0) end
  if not res then
    say(cfg, "agnas: stopped; checkpoint in %s", run:path("checkpoint.nrck"))
    return { dir = run.dir, interrupted = true }
  end
  return res
end

return R
