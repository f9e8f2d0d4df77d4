--- AttentiveNAS: Improving Neural Architecture Search via Attentive
-- Sampling (Wang, Li, Gong, Chandra; CVPR 2021, arXiv:2011.09011; code
-- facebookresearch/AttentiveNAS), with the BigNAS sandwich rule and
-- in-place distillation (Yu et al., ECCV 2020) -- reference/oneshot.md §3.
--
-- 1. Supernet training on the elastic MBConv space (width, depth, kernel,
--    expand ratio, resolution per stage): every step trains N subnets on
--    one minibatch and takes one update (sandwich rule):
--      * the largest subnet on the true labels (label smoothing 0.1, with
--        dropout and drop-connect), its logits kept as soft targets;
--      * N - 2 subnets from the attentive sampler: a FLOPs target tau is
--        drawn from the prior pi(tau), k candidates are drawn from the
--        per-dimension conditionals of tau, and BestUp-k keeps the best
--        (WorstUp-k the worst) -- ranked by the minibatch loss (no tape,
--        train mode) or by an accuracy predictor (`--rank_by=predictor`);
--      * the smallest subnet;
--    every subnet but the largest learns from the soft targets (in-place
--    KD); gradients accumulate, are clipped element-wise to +-1, and SGD
--    (Nesterov) steps once.
-- 2. Evolutionary search for the accuracy / FLOPs Pareto front (AlphaNet's
--    search, nasrt.search.pareto method "bins"): the smallest subnet plus
--    uniform subnets, mutation and crossover from an archive that keeps
--    the most accurate subnet per FLOPs bin; accuracy is BN-calibrated.
-- 3. Optional (`--ranking=N`): Kendall tau of supernet vs stand-alone
--    accuracy over N subnets.
--
-- The accuracy predictor (`--rank_by=predictor`): AttentiveNAS ships a
-- random forest on the 31-integer encoding but its training code never
-- uses a predictor for sampling.  Here a ridge regression on the one-hot
-- gene encoding is fitted to (subnet, BN-calibrated validation accuracy)
-- pairs measured on the supernet itself: `--predictor_archs` subnets at
-- step `--predictor_start` x steps, refitted with as many new ones every
-- `--predictor_every` steps.  Until the first fit, candidates are ranked by
-- loss.  The fit and its Kendall tau against the accuracies measured in
-- the search go to predictor.json.
--
--   nasrt recipes/attentivenas.lua                      # minutes on 2 cores
--   nasrt recipes/attentivenas.lua --sampler=worstup --rank_by=predictor
--   nasrt recipes/attentivenas.lua --space=attentivenas --steps=... \
--       --lr=0.8 --batch_size=2048 --flops_step=25 --pareto_step=10 \
--       --min_flops=200 --max_flops=1200 --population=512 --mutation=128 \
--       --crossover=128 --evo_iters=20                # the paper's knobs
--
-- Writes config.json, log.jsonl, checkpoint.nrck, pareto.json (the front:
-- config, genes, MFLOPs, params, accuracy), arch.json / arch.txt (the most
-- accurate front subnet within --flops_limit), predictor.json,
-- ranking.json with --ranking.
--
-- NOTE(deviation): scaled for 2 CPU cores on Fashion-MNIST 28x28x1: the
-- default space "cpu" keeps the paper's structure (stem stride 2, stages
-- with stride/SE flags as mb1-mb4, kernels {3,5}, expand {1} then
-- {4,5,6}, v3 head) with 4 stages of depth <= 2 and widths 8-40 (paper 7
-- stages, depth <= 8, widths 16-224, last_conv 1792-1984), one resolution
-- (paper {192, 224, 256, 288}; nasrt pools down only, so resolutions must
-- be <= --input_size); 200 steps of batch 32 (paper 360 epochs of 2048),
-- lr 0.05 (paper 0.1 per 256 images: the short schedule needs more),
-- warmup 5 steps (paper 5 epochs); FLOPs bins are
-- 1/40 (sampler) and 1/100 (Pareto archive) of the space's FLOPs range,
-- the ratios of the paper's 25 and 10 MFLOPs over 200-1200.
local nasrt = require "nasrt"
local oneshot = require "nasrt.oneshot"

local F, nn, search, supernet = nasrt.F, nasrt.nn, nasrt.search, nasrt.supernet

local R = {
  name = "attentivenas",
  description = "AttentiveNAS (Wang et al., CVPR 2021): sandwich rule + in-place KD + " ..
    "BestUp/WorstUp-k attentive sampling\n(by minibatch loss or an accuracy predictor), then " ..
    "evolutionary search of the accuracy/FLOPs Pareto front.",
}

--- Elastic spaces of this recipe (besides nasrt.supernet.elastic_spaces'
-- "small" and "attentivenas"): "cpu" (the default) and "tiny" (specs).
R.spaces = {
  cpu = {
    in_channels = 1, classes = 10, resolutions = { 28 },
    first_conv = { width = { 8, 16 }, stride = 2 },
    stages = {
      { width = { 8, 16 }, depth = { 1, 2 }, kernel = { 3, 5 }, expand = { 1 }, stride = 1,
        se = false },
      { width = { 16, 24 }, depth = { 1, 2 }, kernel = { 3, 5 }, expand = { 4, 5, 6 }, stride = 2,
        se = false },
      { width = { 24, 32 }, depth = { 1, 2 }, kernel = { 3, 5 }, expand = { 4, 5, 6 }, stride = 2,
        se = true },
      { width = { 32, 40 }, depth = { 1, 2 }, kernel = { 3, 5 }, expand = { 4, 5, 6 }, stride = 1,
        se = true },
    },
    last_conv = { width = { 128, 192 } },
    act = "swish", v3_head = true,
  },
  tiny = {
    in_channels = 1, classes = 10, resolutions = { 8 },
    first_conv = { width = { 4, 8 }, stride = 1 },
    stages = {
      { width = { 4, 8 }, depth = { 1, 2 }, kernel = { 3, 5 }, expand = { 1 }, stride = 1,
        se = false },
      { width = { 8, 16 }, depth = { 1, 2 }, kernel = { 3, 5 }, expand = { 4, 6 }, stride = 2,
        se = true },
    },
    last_conv = { width = { 16, 32 } },
    act = "swish", v3_head = true,
  },
}

R.defaults = oneshot.defaults({
  { "space", "cpu", "elastic space: cpu | small | attentivenas (paper) | tiny" },
  { "resolutions", "", "input resolutions, e.g. 20,24,28 ('' = --input_size; paper 192-288)" },
  { "stem_stride", 0, "first conv stride, 0 = the space's (paper: 2)" },
  { "steps", 200, "supernet steps, each N subnets and one update (paper: 360 epochs)" },
  { "batch_size", 32, "training batch (paper: 2048)" },
  { "lr", 0.05, "SGD learning rate (paper: 0.1 per 256 images, 0.8 at 2048)" },
  { "warmup", 5, "linear warmup steps from lr/1000 (paper: 5 epochs)" },
  { "momentum", 0.9, "SGD Nesterov momentum (paper: 0.9)" },
  { "weight_decay", 1e-5, "weight decay, none on BN and biases (paper: 1e-5)" },
  { "label_smoothing", 0.1, "label smoothing of the largest subnet (paper: 0.1)" },
  { "grad_clip", 1.0, "element-wise gradient clip, 0 = off (paper: 1.0)" },
  { "dropout", 0.2, "dropout of the largest subnet (paper: 0.2)" },
  { "drop_connect", 0.2, "drop-connect of the largest subnet, last two stages (paper: 0.2)" },
  { "num_arch_training", 4, "subnets per step N: max, N-2 sampled, min (paper: 4)" },
  { "sandwich", true, "the last subnet of a step is the smallest (paper: true)" },
  { "inplace_kd", true, "subnets learn from the largest one's soft labels (paper: true)" },
  { "sampler", "bestup", "bestup | worstup (attentive, k candidates) | uniform" },
  { "num_trials", 3, "k: candidates per attentive draw (paper: 3)" },
  { "rank_by", "loss", "rank the k candidates by minibatch loss | predictor" },
  { "flops_step", 0.0, "MFLOPs per target bin, 0 = 1/40 of the FLOPs range (paper: 25)" },
  { "flops_table", 2000, "uniform subnets that build pi(tau) and the conditionals" },
  { "predictor_archs", 12, "subnets measured per predictor fit" },
  { "predictor_start", 0.5, "first predictor fit after this fraction of the steps" },
  { "predictor_every", 0, "refit every N steps with new measurements, 0 = once" },
  { "ridge", 1.0, "ridge penalty of the predictor" },
  { "evo_iters", 3, "Pareto search iterations (paper: 20)" },
  { "population", 16, "initial population (paper: 512)" },
  { "mutation", 8, "mutants per iteration (paper: 128)" },
  { "crossover", 8, "crossover children per iteration (paper: 128)" },
  { "m_prob", 0.2, "per-gene mutation probability (paper: 0.2)" },
  { "pareto_step", 0.0, "MFLOPs per archive bin, 0 = 1/100 of the range (paper: 10)" },
  { "min_flops", 0.0, "smallest MFLOPs searched, 0 = the smallest subnet's (paper: 200)" },
  { "max_flops", 0.0, "largest MFLOPs searched, 0 = the largest subnet's (paper: 1200)" },
  { "flops_limit", 0.0, "arch.json: most accurate front subnet within this, 0 = any" },
}, "data", "ranking", "run")

local function say(cfg, fmt, ...)
  if not cfg.quiet then print(fmt:format(...)) end
end

--- The nasrt.supernet.elastic options of cfg.
function R.elastic_options(cfg)
  local base = R.spaces[cfg.space] or supernet.elastic_spaces[cfg.space]
  if not base then
    error(("attentivenas: unknown --space=%s (cpu, small, attentivenas, tiny)"):format(cfg.space), 0)
  end
  local sp = oneshot.copy(base)
  sp.resolutions = cfg.resolutions ~= "" and oneshot.ints(cfg.resolutions, "resolutions")
    or { cfg.input_size }
  for _, r in ipairs(sp.resolutions) do
    if r > cfg.input_size then
      error(("attentivenas: resolution %d exceeds --input_size=%d (inputs are only pooled down)")
        :format(r, cfg.input_size), 0)
    end
  end
  if cfg.stem_stride > 0 then sp.first_conv.stride = cfg.stem_stride end
  return { space = sp, bn_momentum = 0 }
end

function R.run(cfg, run)
  for k, allowed in pairs { sampler = { bestup = 1, worstup = 1, uniform = 1 },
                            rank_by = { loss = 1, predictor = 1 } } do
    if not allowed[cfg[k]] then error(("attentivenas: bad --%s=%s"):format(k, cfg[k]), 0) end
  end
  if cfg.num_arch_training < 2 then error("attentivenas: --num_arch_training must be >= 2", 0) end
  oneshot.setup(cfg)
  local D = oneshot.data(cfg)
  local S = oneshot.space("elastic", cfg, R.elastic_options(cfg))
  local net = S.net
  local mflops = function(g) return S:mflops(g) end
  local sand = nasrt.sampler.sandwich { choices = S.choices, seed = cfg.seed }
  local fmin, fmax = mflops(sand:min()), mflops(sand:max())
  local range = math.max(fmax - fmin, 1e-9)
  local fstep = cfg.flops_step > 0 and cfg.flops_step or range / 40
  local att = nasrt.sampler.attentive { choices = S.choices, seed = cfg.seed + 1, step = fstep,
    flops = mflops, draws = cfg.flops_table }
  local pred_smp = nasrt.sampler.uniform { choices = S.choices, seed = cfg.seed + 2 }
  local opt = oneshot.sgd(net, { lr = cfg.lr, momentum = cfg.momentum, nesterov = true,
                                 weight_decay = cfg.weight_decay })
  local ses = oneshot.session(run, cfg, { net = net, opt = opt, loader = D.loader,
    samplers = { sandwich = sand, attentive = att, predictor = pred_smp },
    extra = { pred_data = {}, fits = {} } })
  if not ses.resumed then
    run:log { event = "setup", choices = S.choices, genes = net:gene_names(),
      params = net:num_parameters(), min_mflops = fmin, max_mflops = fmax, flops_step = fstep }
    say(cfg, "attentivenas: %d genes, %d supernet params, subnets %.3f-%.3f MFLOPs, " ..
      "sampler %s-%d by %s", #S.choices, net:num_parameters(), fmin, fmax, cfg.sampler,
      cfg.num_trials, cfg.rank_by)
  end
  local params = net:parameters()
  local ls = { label_smoothing = cfg.label_smoothing }

  -- the predictor: refitted from the saved measurements (a pure function of them)
  local predictor
  local function refit()
    local data = ses.state.extra.pred_data
    if #data == 0 then return nil end
    predictor = oneshot.ridge(S.choices, data, cfg.ridge)
    return predictor
  end
  refit()
  local function measure(t)
    local data = ses.state.extra.pred_data
    for _ = 1, cfg.predictor_archs do
      local g = pred_smp:sample()
      data[#data + 1] = { g, (oneshot.score(S, g, D)) }
    end
    refit()
    local xs, ys = {}, {}
    for i, d in ipairs(data) do xs[i], ys[i] = predictor:predict(d[1]), d[2] end
    local fit = { step = t, n = #data, fit_tau = search.kendall_tau(xs, ys) }
    table.insert(ses.state.extra.fits, fit)
    run:log { event = "predictor", step = t, n = #data, fit_tau = fit.fit_tau }
    net:train()
  end
  local start = math.max(1, math.floor(cfg.predictor_start * cfg.steps + 0.5))

  -- one sampled subnet: uniform, or the best/worst of k FLOPs-targeted candidates
  local function pick(x, y)
    if cfg.sampler == "uniform" then return sand:random() end
    local tau = att:sample_target()
    local cands = att:sample(tau, cfg.num_trials)
    local best, best_v, vals = nil, nil, {}
    for i, g in ipairs(cands) do
      local v
      if cfg.rank_by == "predictor" and predictor then
        v = predictor:predict(g)                       -- predicted accuracy
      else
        v = -nasrt.dist.mean(nasrt.no_grad(function()   -- minus the minibatch loss
          return F.cross_entropy(S:forward(x, g), y, ls):item()
        end))                                           -- (of the global batch, mpirun)
      end
      vals[i] = v
      local better = best_v == nil or (cfg.sampler == "bestup" and v > best_v)
        or (cfg.sampler == "worstup" and v < best_v)
      if better then best, best_v = g, v end
    end
    return best, { tau = tau, candidates = cands, values = vals }
  end

  -- 1. sandwich training with in-place distillation
  local ok = ses:train {
    steps = cfg.steps,
    lr = oneshot.lr_schedule("cosine", cfg.lr, cfg.steps, cfg.warmup),
    step = function(t, next_batch)
      if cfg.rank_by == "predictor" and (t == start or (cfg.predictor_every > 0 and t > start
          and (t - start) % cfg.predictor_every == 0)) then
        measure(t)
      end
      local x, y = next_batch()
      opt:zero_grad()
      local N = cfg.num_arch_training
      local archs = {}
      -- the largest subnet: true labels, regularised
      net:set_dropout(cfg.dropout, cfg.drop_connect)
      local gmax = sand:max()
      local logits = S:forward(x, gmax)
      local loss = F.cross_entropy(logits, y, ls)
      loss:backward()
      local soft = logits:detach()
      net:set_dropout(0, 0)
      archs[1] = { genes = gmax, mflops = mflops(gmax), loss = loss:item() }
      local total = loss:item()
      for i = 2, N do
        local g, info
        if i == N and cfg.sandwich then g = sand:min() else g, info = pick(x, y) end
        local out = S:forward(x, g)
        local l = cfg.inplace_kd and nn.kd_loss(out, soft) or F.cross_entropy(out, y, ls)
        l:backward()
        archs[i] = { genes = g, mflops = mflops(g), loss = l:item(), tau = info and info.tau,
                     candidate_values = info and info.values }
        total = total + l:item()
      end
      if cfg.grad_clip > 0 then oneshot.clip_grad_value(params, cfg.grad_clip) end
      opt:step()
      -- data-parallel: each subnet's loss over the global batch, as the
      -- session makes loss and acc (one process: unchanged)
      local losses = {}
      for i = 1, N do losses[i] = archs[i].loss end
      losses = { nasrt.dist.mean(table.unpack(losses)) }
      for i = 1, N do archs[i].loss = losses[i] end
      return { loss = total / N, max_loss = archs[1].loss,
               acc = oneshot.correct(logits, y) / y:numel(), archs = archs }
    end,
    on_epoch = function()
      -- AttentiveNAS validates the BN-calibrated smallest and largest subnets
      return { max_val_acc = (oneshot.score(S, sand:max(), D)),
               min_val_acc = (oneshot.score(S, sand:min(), D)) }
    end,
    epoch_fields = { "max_val_acc", "min_val_acc" },
  }
  if not ok then return ses:interrupted() end

  -- 2. evolutionary search of the accuracy / FLOPs Pareto front
  local lo = cfg.min_flops > 0 and cfg.min_flops or fmin
  local hi = cfg.max_flops > 0 and cfg.max_flops or fmax
  local score = ses:scorer(function(g)
    local acc, loss = oneshot.score(S, g, D)
    return acc, { val_loss = loss, mflops = mflops(g) }
  end, "search")
  local evo = search.pareto {
    method = "bins", choices = S.choices, seed = cfg.seed + 3, score = score, flops = mflops,
    min_flops = lo, max_flops = hi, population = cfg.population, mutation = cfg.mutation,
    crossover = cfg.crossover, m_prob = cfg.m_prob, iterations = cfg.evo_iters,
    step = cfg.pareto_step > 0 and cfg.pareto_step or range / 100, init = { sand:min() },
  }
  evo = ses:search("search", evo, cfg.evo_iters, function(s, it, _, p)
    local front = s:front()
    run:log { event = "search", iteration = it, evaluations = s:evaluations(),
      front = front, archive = #s:archive() }
    p:line(("iteration %d/%d  front of %d subnets, %.4f-%.4f val acc  (%d scored)"):format(it,
      cfg.evo_iters, #front, front[1] and front[1].score or 0, front[#front] and
      front[#front].score or 0, s:evaluations()))
  end)
  if not evo then return ses:interrupted() end

  local front = {}
  for i, r in ipairs(evo:front()) do
    local d = S:describe(r.arch)
    front[i] = { genes = r.arch, config = d.config, text = d.text, mflops = r.flops,
                 params = S:params(r.arch), val_acc = r.score }
  end
  run:write_json("pareto.json", { objectives = { "val_acc", "mflops" }, front = front,
    evaluations = evo:evaluations() })
  local pick_i
  for i, r in ipairs(front) do
    if (cfg.flops_limit <= 0 or r.mflops <= cfg.flops_limit)
        and (pick_i == nil or r.val_acc > front[pick_i].val_acc) then
      pick_i = i
    end
  end
  pick_i = pick_i or 1

  -- the predictor against what the search measured
  if predictor then
    local xs, ys = {}, {}
    for i, r in ipairs(evo:evaluated()) do xs[i], ys[i] = predictor:predict(r.arch), r.score end
    local tau = search.kendall_tau(xs, ys)
    local nan = function(v) return v ~= v and "nan" or v end
    run:write_json("predictor.json", { kind = "ridge on one-hot genes", lambda = cfg.ridge,
      train_pairs = #ses.state.extra.pred_data, fits = ses.state.extra.fits,
      search_pairs = #xs, search_kendall_tau = nan(tau) })
    say(cfg, "attentivenas: predictor (%d pairs) vs search accuracies: Kendall tau %.4f",
      #ses.state.extra.pred_data, tau)
  end

  -- 3. ranking quality (optional)
  local rk = ses:ranking(S, D, ses:scorer(function(g)
    return (oneshot.score(S, g, D))
  end, "ranking"))
  if rk == nil then return ses:interrupted() end

  local best = front[pick_i]
  local rec = oneshot.write_arch(run, S, best.genes, { val_acc = best.val_acc,
    method = "attentivenas", sampler = cfg.sampler, rank_by = cfg.rank_by,
    flops_limit = cfg.flops_limit > 0 and cfg.flops_limit or nil, front_size = #front })
  run:log { event = "result", arch = best.genes, val_acc = best.val_acc, mflops = rec.mflops,
    front = #front }
  say(cfg, "attentivenas: Pareto front of %d subnets (pareto.json):", #front)
  for _, r in ipairs(front) do
    say(cfg, "  %8.4f MFLOPs  val acc %.4f  %s", r.mflops, r.val_acc, r.text)
  end
  say(cfg, "attentivenas: picked %s (%.4f MFLOPs, %d params, val acc %.4f) -> %s", rec.text,
    rec.mflops, rec.params, best.val_acc, run:path("arch.json"))
  return { arch = best.genes, score = best.val_acc, mflops = rec.mflops, front = front,
           losses = ses.state.losses, ranking = rk or nil, dir = run.dir }
end

return R
