--- FairNAS: Rethinking Evaluation Fairness of Weight Sharing Neural
-- Architecture Search (Chu, Zhang, Xu; ICCV 2021, arXiv:1907.01845; models
-- xiaomi-automl/FairNAS), as reference/oneshot.md §2 describes it.
--
-- 1. Strict-fairness supernet training: a chain of MBConv choice layers
--    with m = 6 candidates each ({e3, e6} x {k3, k5, k7}).  Every step
--    draws an independent permutation of the m choices per layer
--    (nasrt.sampler.strict_fair), builds the m single-path models they
--    define, runs forward + backward for each while the gradients
--    accumulate, and takes one optimizer step: every candidate of every
--    layer is trained exactly once per step.  The recipe counts how often
--    each choice was trained and logs the counts (they stay equal).
-- 2. Search: the SPOS evolution under a FLOPs limit (default), or NSGA-II
--    on (accuracy, FLOPs) (`--search=nsga2`; FairNAS names a
--    multi-objective evolutionary search) whose front goes to pareto.json.
--    Candidates are scored by BN-recalibrated validation accuracy.
-- 3. Optional (`--ranking=N`): Kendall tau of supernet vs stand-alone
--    accuracy over N paths (FairNAS reports 0.9487 vs SPOS 0.6153 on
--    ImageNet).
--
--   nasrt recipes/fairnas.lua                  # a few minutes on 2 cores
--   nasrt recipes/fairnas.lua --search=nsga2 --ranking=10
--   nasrt recipes/fairnas.lua --stem=32 --stem_stride=2 --first_block=16 \
--       --stages=32:2:2,40:4:2,80:4:2,96:4:1,192:4:2 --last_block=320 \
--       --head=1280 --dropout=0.2 --train_limit=0 ...   # the paper's layout
--
-- NOTE(deviation): FairNAS' supernet hyperparameters and NSGA-II settings
-- are not public (oneshot.md §2.4, §7); the optimizer follows SPOS
-- (SGD momentum 0.9, weight decay 4e-5 on weights) with a cosine schedule
-- (`--grad_clip=5` adds the gradient-norm clip of kcyu2014's loop), and one
-- shared minibatch for the m models as both third-party loops do (`--fair_batches=fresh` gives
-- each model its own batch, as the paper's Fig. 2 caption reads).
-- NOTE(deviation): scaled for 2 CPU cores on Fashion-MNIST 28x28x1: 6
-- choice layers of widths 16-40 (paper 18 of 32-192), stem stride 1, no
-- fixed first/last blocks, head 128 (paper 1280), 200 steps of batch 32,
-- a 10k-image subset, 4 generations of 16.
local nasrt = require "nasrt"
local oneshot = require "nasrt.oneshot"

local dist = nasrt.dist
local F, optim, search = nasrt.F, nasrt.optim, nasrt.search

local R = {
  name = "fairnas",
  description = "FairNAS (Chu et al., ICCV 2021): strict-fairness supernet training (m paths per " ..
    "step,\nevery choice once, one update), then evolution or NSGA-II.",
}

R.defaults = oneshot.defaults({
  { "steps", 200, "supernet steps, each m = 6 paths and one update (paper: not published)" },
  { "batch_size", 32, "training batch (paper: not published)" },
  { "lr", 0.05, "SGD learning rate (paper: not published)" },
  { "schedule", "cosine", "learning-rate schedule: cosine | linear | constant" },
  { "momentum", 0.9, "SGD momentum" },
  { "weight_decay", 4e-5, "weight decay of conv/linear weights" },
  { "label_smoothing", 0.0, "label smoothing" },
  { "grad_clip", 0.0, "clip the accumulated gradient's L2 norm, 0 = off (kcyu2014's loop: 5)" },
  { "fair_batches", "same", "same: the m models share a minibatch | fresh: one batch each" },
  { "paths_per_rank", false, "mpirun: each rank trains its share of the m paths on the whole " ..
    "batch, gradients summed (default: every path on the rank's shard)" },
  { "search", "evolution", "evolution (SPOS' searcher) | nsga2 (accuracy vs FLOPs)" },
  { "flops_limit", 0.0, "search FLOPs limit in MFLOPs, 0 = median of the space, -1 = none" },
  { "evo_epochs", 4, "generations (SPOS: 20)" },
  { "population", 16, "population size (SPOS: 50; NSGA-II: 100)" },
  { "select", 4, "evolution: top-k parents (SPOS: 10)" },
  { "mutation", 8, "evolution: mutants per generation (SPOS: 25)" },
  { "crossover", 8, "evolution: crossover children per generation (SPOS: 25)" },
  { "m_prob", 0.1, "per-gene mutation probability (SPOS: 0.1)" },
}, "fairnas", "data", "ranking", "run")

local function say(cfg, fmt, ...)
  if not cfg.quiet then print(fmt:format(...)) end
end

-- counts[l][c] = 0 for every choice of every layer
local function zero_counts(choices)
  local c = {}
  for l, m in ipairs(choices) do
    c[l] = {}
    for k = 1, m do c[l][k] = 0 end
  end
  return c
end

--- Strict fairness holds when every choice of every layer was trained
-- equally often: returns true/false and that count (or the spread).
function R.fair(counts)
  local v
  for _, row in ipairs(counts) do
    for _, n in ipairs(row) do
      if v == nil then v = n elseif n ~= v then return false, n - v end
    end
  end
  return true, v
end

function R.run(cfg, run)
  if cfg.fair_batches ~= "same" and cfg.fair_batches ~= "fresh" then
    error("fairnas: --fair_batches must be 'same' or 'fresh'", 0)
  end
  if cfg.search ~= "evolution" and cfg.search ~= "nsga2" then
    error("fairnas: --search must be 'evolution' or 'nsga2'", 0)
  end
  oneshot.setup(cfg)
  local D = oneshot.data(cfg)
  local S = oneshot.space("fairnas", cfg)
  local net = S.net
  local m = S.choices[1]
  local fair = nasrt.sampler.strict_fair { choices = S.choices, seed = cfg.seed }
  local opt = oneshot.sgd(net, { lr = cfg.lr, momentum = cfg.momentum,
                                 weight_decay = cfg.weight_decay })
  local ses = oneshot.session(run, cfg, { net = net, opt = opt, loader = D.loader,
    samplers = { paths = fair }, extra = { counts = zero_counts(S.choices) } })
  local q = oneshot.flops_quantiles(S, 2000, cfg.seed + 99)
  local limit = cfg.flops_limit
  if limit == 0 then limit = q(0.5) elseif limit < 0 then limit = math.huge end
  if not ses.resumed then
    run:log { event = "setup", choices = S.choices, params = net:num_parameters(),
      flops_limit = limit < math.huge and limit or nil, train_batches = #D.loader }
    say(cfg, "fairnas: %d choice layers x %d MBConv choices, %d supernet params, paths " ..
      "%.2f-%.2f MFLOPs, limit %s", #S.choices, m, net:num_parameters(), q(0), q(1),
      limit < math.huge and ("%.2f MFLOPs"):format(limit) or "none")
  end
  local params = net:parameters()

  -- 1. strict-fair training: m paths covering every choice once, one update
  local ok = ses:train {
    steps = cfg.steps,
    lr = oneshot.lr_schedule(cfg.schedule, cfg.lr, cfg.steps),
    step = function(_, next_batch)
      local archs = fair:sample()
      local counts = ses.state.extra.counts
      -- mpirun --paths_per_rank: rank r trains paths r+1, r+1+N, ... on the
      -- whole batch (its own batch-norm statistics are then the batch's)
      local split = cfg.paths_per_rank and dist.active()
      local sync_bn = split and dist.set_sync_bn(false)
      opt:zero_grad()
      local x, y
      if cfg.fair_batches == "same" then x, y = next_batch(split) end
      local lsum, right, n = 0, 0, 0
      for i, arch in ipairs(archs) do
        if cfg.fair_batches == "fresh" then x, y = next_batch(split) end
        if not split or (i - 1) % dist.size() == dist.rank() then
          local logits = net(x, arch)
          local loss = F.cross_entropy(logits, y, { label_smoothing = cfg.label_smoothing })
          loss:backward()              -- gradients accumulate over the m paths
          lsum = lsum + loss:item()
          right, n = right + oneshot.correct(logits, y), n + y:numel()
        end
        for l, c in ipairs(arch) do counts[l][c] = counts[l][c] + 1 end
      end
      if split then
        dist.set_sync_bn(sync_bn)
        dist.sync_grads(params, "sum") -- the sum over all m paths, as one process
        n = #archs * y:numel()
      end
      local gnorm
      if cfg.grad_clip > 0 then gnorm = optim.clip_grad_norm(params, cfg.grad_clip) end
      opt:step()
      return { loss = lsum / #archs, acc = right / n, archs = archs, grad_norm = gnorm,
               reduce = split and "sum" or nil }
    end,
    on_epoch = function()
      local counts = ses.state.extra.counts
      local fairness, c = R.fair(counts)
      run:log { event = "fairness", step = ses.state.step, counts = counts, fair = fairness }
      return { fair = fairness, trained_each = fairness and c or nil }
    end,
  }
  if not ok then return ses:interrupted() end

  -- 2. search
  local score = ses:scorer(function(arch)
    local acc, loss = oneshot.score(S, arch, D)
    return acc, { val_loss = loss, mflops = S:mflops(arch) }
  end, "search")
  local mflops = function(arch) return S:mflops(arch) end
  local searcher
  if cfg.search == "evolution" then
    searcher = search.evolution {
      choices = S.choices, seed = cfg.seed + 1, score = score,
      constraint = function(arch) return mflops(arch) <= limit end,
      population = cfg.population, select = cfg.select, mutation = cfg.mutation,
      crossover = cfg.crossover, m_prob = cfg.m_prob, epochs = cfg.evo_epochs }
  else
    searcher = search.pareto {
      method = "nsga2", choices = S.choices, seed = cfg.seed + 1, score = score, flops = mflops,
      population = cfg.population, iterations = cfg.evo_epochs, m_prob = cfg.m_prob }
  end
  searcher = ses:search("search", searcher, cfg.evo_epochs, function(s, it, top, p)
    local best = select(2, s:best())
    run:log { event = "search", generation = it, evaluations = s:evaluations(), best_score = best,
      top = cfg.search == "evolution" and top or nil,
      front = cfg.search == "nsga2" and s:front() or nil }
    p:line(("generation %d/%d  best val acc %.4f  (%d candidates scored)"):format(it,
      cfg.evo_epochs, best, s:evaluations()))
  end)
  if not searcher then return ses:interrupted() end

  local best, acc
  if cfg.search == "evolution" then
    best, acc = searcher:best()
  else
    local front = searcher:front()
    run:write_json("pareto.json", { objectives = { "val_acc", "mflops" }, front = front })
    for _, r in ipairs(front) do
      if r.flops <= limit and (acc == nil or r.score > acc) then best, acc = r.arch, r.score end
    end
    if not best then best, acc = front[1].arch, front[1].score end   -- nothing under the limit
  end

  -- 3. ranking quality (optional)
  local rk = ses:ranking(S, D, ses:scorer(function(arch)
    return (oneshot.score(S, arch, D))
  end, "ranking"))
  if rk == nil then return ses:interrupted() end

  local counts = ses.state.extra.counts
  local fairness, each = R.fair(counts)
  local rec = oneshot.write_arch(run, S, best, { val_acc = acc, method = "fairnas",
    search = cfg.search, flops_limit = limit < math.huge and limit or nil,
    evaluations = searcher:evaluations(), fair = fairness, trained_each = each })
  run:log { event = "result", arch = best, val_acc = acc, mflops = rec.mflops,
    counts = counts, fair = fairness }
  say(cfg, "fairnas: every choice of every layer trained %s times (strict fairness %s)",
    tostring(each), fairness and "holds" or "BROKEN")
  say(cfg, "fairnas: best path %s\n  %.2f MFLOPs, %d params, supernet val acc %.4f -> %s",
    rec.text, rec.mflops, rec.params, acc, run:path("arch.json"))
  return { arch = best, score = acc, mflops = rec.mflops, flops_limit = limit,
           losses = ses.state.losses, counts = counts, fair = fairness, ranking = rk or nil,
           dir = run.dir }
end

return R
