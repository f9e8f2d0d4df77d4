--- SPOS: Single Path One-Shot Neural Architecture Search with Uniform
-- Sampling (Guo, Zhang, Mu, Heng, Liu, Wei, Sun; ECCV 2020,
-- arXiv:1904.00420; code megvii-model/SinglePathOneShot), as
-- reference/oneshot.md §1 describes it.
--
-- 1. Supernet training: a ShuffleNetV2-style chain of choice layers (4
--    blocks each: ShuffleNet 3x3/5x5/7x7, Xception; BN affine=False).
--    Every step trains one path: a FLOPs bin is drawn uniformly, then up
--    to 500 uniform paths until one falls in the bin (unconstrained
--    fallback); SGD with momentum, weight decay on conv/linear weights
--    only, label smoothing 0.1, linearly decaying learning rate.
--    Unsampled blocks get no gradient and SGD leaves them (and their
--    momentum) untouched, SPOS' `grad = None` rule.
-- 2. Evolutionary search (SPOS EvolutionSearcher, nasrt.search.evolution)
--    under a FLOPs limit; every candidate is scored by its validation
--    accuracy after BN recalibration on training batches.
-- 3. Optional (`--ranking=N`): ranking quality, Kendall tau between the
--    supernet accuracy and the accuracy of the same paths trained alone.
--
--   nasrt recipes/spos.lua                    # a few minutes on 2 cores
--   nasrt recipes/spos.lua --ranking=10       # + supernet ranking quality
--   nasrt recipes/spos.lua --stem_stride=2 --widths=64,160,320,640 \
--       --repeats=4,4,8,4 --last=1024 --steps=150000 --batch_size=1024 \
--       --lr=0.5 --bin_lo=290 --bin_hi=360 --flops_limit=330 --calib_batches=200 \
--       --calib_batch_size=128 --val_limit=8000 --val_batch_size=200 \
--       --train_limit=0 --evo_epochs=20 --population=50 --select=10 \
--       --mutation=25 --crossover=25           # the paper's settings (on 28x28)
--
-- Writes config.json, log.jsonl, checkpoint.nrck, arch.json / arch.txt
-- (the best path: block names, genes, MFLOPs, params, validation
-- accuracy), ranking.json with --ranking.
--
-- NOTE(deviation): scaled for 2 CPU cores on Fashion-MNIST 28x28x1 (paper:
-- ImageNet 224x224x3): 5 choice layers of widths 32-256 (paper 20 of
-- 64-640), stem stride 1, batch 64 and 1000 steps (paper 1024 and 150000),
-- learning rate 0.03 (paper 0.5 at batch 1024), a 10k-image training
-- subset, 6 x 64 recalibration images and 1000 validation images per
-- candidate (paper 200 x 128 and 8000), 4 generations of 16 (paper 20 of
-- 50).  Every option reaches the paper's value (see above).
-- NOTE(deviation): the FLOPs bins and limit are in this space's MFLOPs:
-- by default 7 bins between the 10th and 90th percentiles of uniform
-- paths, and the limit 4/7 of the way through them (where 330 sits in the
-- paper's 290-360).  Data augmentation is a horizontal flip (paper:
-- RandomResizedCrop, ColorJitter, flip on ImageNet).
local nasrt = require "nasrt"
local oneshot = require "nasrt.oneshot"

local F, search = nasrt.F, nasrt.search

local R = {
  name = "spos",
  description = "SPOS (Guo et al., ECCV 2020): uniform single-path supernet training with FLOPs " ..
    "bins,\nthen evolutionary search under a FLOPs limit with BN recalibration per candidate.",
}

R.defaults = oneshot.defaults({
  { "steps", 1000, "supernet training iterations (paper: 150000)" },
  { "batch_size", 64, "training batch (paper: 1024)" },
  { "lr", 0.03, "SGD learning rate (paper: 0.5 at batch 1024, ~0.03 at 64 scaled linearly)" },
  { "schedule", "linear", "learning-rate schedule: linear (paper) | cosine | constant" },
  { "momentum", 0.9, "SGD momentum (paper: 0.9)" },
  { "weight_decay", 4e-5, "weight decay of conv/linear weights (paper: 4e-5)" },
  { "label_smoothing", 0.1, "label smoothing (paper: 0.1)" },
  { "bins", 7, "FLOPs bins for path sampling, 0 = plain uniform (paper: 7)" },
  { "bin_lo", 0.0, "lower end of the bins in MFLOPs, 0 = 10th percentile (paper: 290)" },
  { "bin_hi", 0.0, "upper end of the bins in MFLOPs, 0 = 90th percentile (paper: 360)" },
  { "bin_tries", 500, "uniform draws per bin before the fallback (paper: 500)" },
  { "flops_limit", 0.0, "search FLOPs limit in MFLOPs, 0 = auto, -1 = none (paper: 330)" },
  { "evo_epochs", 4, "evolution generations (paper: 20)" },
  { "population", 16, "population size (paper: 50)" },
  { "select", 4, "top-k parents kept across generations (paper: 10)" },
  { "mutation", 8, "mutants per generation (paper: 25)" },
  { "crossover", 8, "crossover children per generation (paper: 25)" },
  { "m_prob", 0.1, "per-gene mutation probability (paper: 0.1)" },
}, "spos", "data", "ranking", "run")

local function say(cfg, fmt, ...)
  if not cfg.quiet then print(fmt:format(...)) end
end

function R.run(cfg, run)
  oneshot.setup(cfg)
  local D = oneshot.data(cfg)
  local S = oneshot.space("spos", cfg)
  local net = S.net

  -- FLOPs bins (SPOS train.py: [[l, l + 10] for l in 290..350] MFLOPs)
  local q = oneshot.flops_quantiles(S, 2000, cfg.seed + 99)
  local lo = cfg.bin_lo > 0 and cfg.bin_lo or q(0.1)
  local hi = cfg.bin_hi > 0 and cfg.bin_hi or q(0.9)
  local limit = cfg.flops_limit
  if limit == 0 then limit = lo + (hi - lo) * 4 / 7 elseif limit < 0 then limit = math.huge end
  local paths
  if cfg.bins > 0 then
    local bins, w = {}, (hi - lo) / cfg.bins
    for b = 1, cfg.bins do bins[b] = { lo + (b - 1) * w, lo + b * w } end
    paths = nasrt.sampler.flops_bins { choices = S.choices, seed = cfg.seed, bins = bins,
      tries = cfg.bin_tries, flops = net:flops_table(nil, 1e6) }
  else
    paths = nasrt.sampler.uniform { choices = S.choices, seed = cfg.seed }
  end

  local opt = oneshot.sgd(net, { lr = cfg.lr, momentum = cfg.momentum,
                                 weight_decay = cfg.weight_decay })
  local ses = oneshot.session(run, cfg, { net = net, opt = opt, loader = D.loader,
                                          samplers = { paths = paths } })
  if not ses.resumed then
    run:log { event = "setup", choices = S.choices, params = net:num_parameters(),
      bin_lo = lo, bin_hi = hi, flops_limit = limit < math.huge and limit or nil,
      train_batches = #D.loader, val_images = #D.val * cfg.val_batch_size }
    say(cfg, "spos: %d choice layers x 4 blocks, %d supernet params, paths %.2f-%.2f MFLOPs " ..
      "(bins %.2f-%.2f), limit %s", #S.choices, net:num_parameters(), q(0), q(1), lo, hi,
      limit < math.huge and ("%.2f MFLOPs"):format(limit) or "none")
  end

  -- 1. supernet training: one uniformly sampled path (within a FLOPs bin) per step
  local ok = ses:train {
    steps = cfg.steps,
    lr = oneshot.lr_schedule(cfg.schedule, cfg.lr, cfg.steps),
    step = function(_, next_batch)
      local x, y = next_batch()
      local arch, mflops, _, in_bin = paths:sample()
      opt:zero_grad()
      local logits = net(x, arch)
      local loss = F.cross_entropy(logits, y, { label_smoothing = cfg.label_smoothing })
      loss:backward()
      opt:step()                 -- blocks off the path have no grad: skipped
      return { loss = loss:item(), acc = oneshot.correct(logits, y) / y:numel(), arch = arch,
               mflops = mflops or S:mflops(arch), in_bin = in_bin }
    end,
  }
  if not ok then return ses:interrupted() end

  -- 2. evolutionary search under the FLOPs limit, BN recalibrated per candidate
  local score = ses:scorer(function(arch)
    local acc, loss = oneshot.score(S, arch, D)
    return acc, { val_loss = loss, mflops = S:mflops(arch) }
  end, "search")
  local evo = search.evolution {
    choices = S.choices, seed = cfg.seed + 1, score = score,
    constraint = function(arch) return S:mflops(arch) <= limit end,
    population = cfg.population, select = cfg.select, mutation = cfg.mutation,
    crossover = cfg.crossover, m_prob = cfg.m_prob, epochs = cfg.evo_epochs,
  }
  evo = ses:search("search", evo, cfg.evo_epochs, function(s, epoch, top, p)
    local arch, best = s:best()          -- top is the parents' list this generation bred from
    run:log { event = "search", generation = epoch, evaluations = s:evaluations(),
      best_score = best, best_arch = arch, top = top }
    p:line(("generation %d/%d  best val acc %.4f  (%d candidates scored)"):format(epoch,
      cfg.evo_epochs, best, s:evaluations()))
  end)
  if not evo then return ses:interrupted() end
  local best, acc, extra = evo:best()

  -- 3. ranking quality (optional)
  local rk = ses:ranking(S, D, ses:scorer(function(arch)
    return (oneshot.score(S, arch, D))
  end, "ranking"))
  if rk == nil then return ses:interrupted() end

  local rec = oneshot.write_arch(run, S, best, { val_acc = acc, val_loss = extra and extra.val_loss,
    flops_limit = limit < math.huge and limit or nil, evaluations = evo:evaluations(),
    method = "spos" })
  run:log { event = "result", arch = best, val_acc = acc, mflops = rec.mflops, params = rec.params }
  say(cfg, "spos: best path %s\n  %.2f MFLOPs, %d params, supernet val acc %.4f " ..
    "(%d candidates) -> %s",
    rec.text, rec.mflops, rec.params, acc, evo:evaluations(), run:path("arch.json"))
  return { arch = best, score = acc, mflops = rec.mflops, flops_limit = limit,
           losses = ses.state.losses, ranking = rk or nil, dir = run.dir }
end

return R
