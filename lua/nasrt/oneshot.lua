--- nasrt.oneshot: what the one-shot recipes (spos, fairnas, attentivenas)
-- and the baselines (random, rea) share.
--
-- * options: the data / run option blocks and the supernet layouts, so the
--   recipes' `--help` agree (`M.options`);
-- * data: the Fashion-MNIST train half as the training set, the other half
--   as validation (DARTS' split), fixed in-memory batches for BN
--   recalibration and for scoring candidates (`M.data`);
-- * spaces: one interface over the SPOS / FairNAS chains, the NB201 cell
--   and the elastic AttentiveNAS supernet (`M.space`): forward a path,
--   FLOPs, the model to BN-recalibrate, a fresh stand-alone network, and
--   the text of an architecture;
-- * evaluation: BN-recalibrated validation accuracy of a candidate
--   (`M.score`, reference/oneshot.md §1.5 / §3.8), brief stand-alone
--   training (`M.standalone`), a ridge-regression accuracy predictor;
-- * a session (`M.session`) that owns the run state: supernet training
--   steps with logging, per-epoch summaries, progress with ETA, periodic
--   atomic checkpoints, graceful stop (Ctrl-C or `--stop_after_steps`) and
--   exact resume; search phases driven step by step through nasrt.search
--   with a score cache, so a search stopped in the middle of a generation
--   continues with the same numbers; and the ranking-quality phase
--   (Kendall tau of supernet vs stand-alone accuracy, §5).
--
-- Everything random draws from the global generator (saved in the
-- checkpoint) or from samplers whose state is saved, and every batch is a
-- pure function of (seed, epoch, index), so `--resume RUNDIR` gives the
-- numbers of an uninterrupted run bit for bit.
--
-- Data-parallel runs (nasrt.dist, mpirun): each training step takes this
-- rank's shard of the global batch (`Session:batch`), the optimizer
-- averages the gradients, the logged loss and accuracy are the global
-- batch's; search phases evaluate the candidates of each step spread over
-- the ranks (`search.upcoming` finds them, `dist.map` scores them, every
-- rank caches every score), and the ranking phase trains its stand-alone
-- paths in parallel.  The supernet's BN running statistics are averaged
-- over the ranks before checkpoints when batch norm is per rank.
-- @module nasrt.oneshot
local nasrt = require "nasrt"
local recipe = require "nasrt.recipe"
local dist = require "nasrt.dist"

local nn, optim, F = nasrt.nn, nasrt.optim, nasrt.F
local search, supernet, bench = nasrt.search, nasrt.supernet, nasrt.bench

local M = {}

local CKPT_VERSION = 1

local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  return t
end
M.copy = copy

local function key_of(arch) return table.concat(arch, ",") end
M.key = key_of

-- ------------------------------------------------------------- options

--- "32,64,128" -> {32, 64, 128} (raises naming the option on bad input).
function M.ints(s, what)
  local out = {}
  for part in tostring(s):gmatch("[^,%s]+") do
    local v = math.tointeger(tonumber(part))
    if not v then error(("option --%s: %q is not a list of integers"):format(what, s), 0) end
    out[#out + 1] = v
  end
  if #out == 0 then error(("option --%s is empty"):format(what), 0) end
  return out
end

--- "24:3:2,40:3:2" -> {{24, 3, 2}, {40, 3, 2}} (width:layers:first stride).
function M.stages(s, what)
  local out = {}
  for part in tostring(s):gmatch("[^,%s]+") do
    local c, n, st = part:match("^(%d+):(%d+):(%d+)$")
    if not c then
      error(("option --%s: %q must be width:layers:stride,... (e.g. 24:3:2)"):format(what, part), 0)
    end
    out[#out + 1] = { tonumber(c) // 1, tonumber(n) // 1, tonumber(st) // 1 }
  end
  if #out == 0 then error(("option --%s is empty"):format(what), 0) end
  return out
end

-- Option blocks shared by the recipes ({key, default, help} rows).
M.options = {
  data = {
    { "seed", 0, "random seed (weights, path sampling, data order)" },
    { "data_root", "", "Fashion-MNIST folder (default $NASRT_FASHION_MNIST or Debian's)" },
    { "input_size", 28, "input side; smaller sizes are average-pooled from 28x28" },
    { "train_limit", 10000, "training images used from the train half, 0 = all 30000 (paper: all)" },
    { "val_limit", 1000, "validation images that score a candidate, 0 = all 30000 (SPOS: 8000)" },
    { "flip", true, "random horizontal flips of training images" },
    { "calib_batches", 6, "BN recalibration batches per candidate (SPOS: 200)" },
    { "calib_batch_size", 64, "images per recalibration batch (SPOS: 128)" },
    { "val_batch_size", 250, "images per validation batch (SPOS: 200)" },
  },
  ranking = {
    { "ranking", 0, "ranking quality: N sampled paths, supernet vs stand-alone accuracy (0 = off)" },
    { "ranking_steps", 150, "SGD steps that train each stand-alone path from scratch" },
    { "ranking_lr", 0.05, "stand-alone training learning rate (cosine, Nesterov momentum 0.9)" },
  },
  run = {
    { "ckpt_every", 50, "checkpoint every N steps (and at phase ends, on stop)" },
    { "stop_after_steps", 0, "stop as if interrupted after N steps (units of work; tests)" },
    { "threads", 0, "worker threads (0 = the default)" },
    { "quiet", false, "no progress output" },
  },
  spos = {
    { "stem", 16, "stem channels (SPOS: 16)" },
    { "stem_stride", 1, "stem stride (SPOS: 2 at 224x224)" },
    { "widths", "32,64,128,256", "SPOS stage widths (paper: 64,160,320,640)" },
    { "repeats", "1,1,2,1", "SPOS choice layers per stage (paper: 4,4,8,4)" },
    { "last", 512, "SPOS tail 1x1 conv width (paper: 1024)" },
    { "dropout", 0.1, "dropout before the classifier (SPOS: 0.1, FairNAS: 0.2)" },
  },
  fairnas = {
    { "stem", 16, "stem channels (FairNAS: 32)" },
    { "stem_stride", 1, "stem stride (FairNAS: 2 at 224x224)" },
    { "stages", "16:2:2,24:2:2,40:2:1",
      "FairNAS stages width:layers:stride (paper: 32:2:2,40:4:2,80:4:2,96:4:1,192:4:2)" },
    { "first_block", 0, "fixed MBE1_K3 block width, 0 = none (FairNAS: 16)" },
    { "last_block", 0, "fixed MBConv e6 k5 width after the choices, 0 = none (FairNAS: 320)" },
    { "head", 128, "FairNAS head 1x1 conv width (paper: 1280)" },
    { "dropout", 0.1, "dropout before the classifier (SPOS: 0.1, FairNAS: 0.2)" },
  },
  nb201 = {
    { "C", 8, "NB201 stem channels (paper: 16)" },
    { "N", 1, "NB201 cells per stage (paper: 5)" },
  },
}

--- Concatenates option rows and named blocks of M.options into one
-- defaults list (the first row of a name wins).
-- @usage defaults = oneshot.defaults({{"steps", 300, "..."}}, "data", "run")
function M.defaults(...)
  local out, seen = {}, {}
  for _, part in ipairs { ... } do
    local rows = type(part) == "string" and assert(M.options[part], part) or part
    for _, row in ipairs(rows) do
      if not seen[row[1]] then
        seen[row[1]] = true
        out[#out + 1] = row
      end
    end
  end
  return out
end

--- Applies the global settings of cfg (threads, seed).
function M.setup(cfg)
  if (cfg.threads or 0) > 0 then nasrt.set_num_threads(cfg.threads) end
  nasrt.manual_seed(cfg.seed or 0)
end

-- ------------------------------------------------------------- data

--- x resized to size x size (adaptive average pooling; only shrinks).
function M.resize(x, size)
  local s = x:shape()
  if s[3] == size and s[4] == size then return x end
  if size > s[3] or size > s[4] then
    error(("resize: cannot grow %dx%d inputs to %d (only pooling down)"):format(s[3], s[4], size), 2)
  end
  return F.adaptive_avg_pool2d(x, size)
end

local function limit(n) return n and n > 0 and n or nil end

-- b batches of a loader (epoch 1), computed on the spot, resized
local function fixed_batches(loader, n, size)
  local out = {}
  for b = 1, math.min(n, #loader) do
    local x, y = loader:batch(b, 1)
    out[b] = { M.resize(x, size), y }
  end
  return out
end

--- The data of a one-shot run.  The Fashion-MNIST training set is split
-- into halves (DARTS: first half trains the supernet, the second
-- validates); the test set is never touched.
-- @treturn table {loader = training loader (epoch 1, wrap with
--   :next(true)), calib = recalibration batches {{x, y}, ...} from the
--   training half, val = validation batches, rank_loader = loader for
--   stand-alone training, size = input side}
function M.data(cfg)
  local root = cfg.data_root ~= "" and cfg.data_root or nil
  local ds, err = nasrt.data.fashion_mnist { split = "train", root = root }
  if not ds then error(err, 0) end
  local train, val = nasrt.data.split(ds, { fraction = 0.5 })
  local st = nasrt.data.stats.fashion_mnist
  local aug = { mean = st.mean, std = st.std, flip = cfg.flip }
  local plain = { mean = st.mean, std = st.std }
  local D = { size = cfg.input_size }
  D.loader = nasrt.data.loader(train, { batch_size = cfg.batch_size, shuffle = true,
    seed = cfg.seed, drop_last = true, limit = limit(cfg.train_limit), augment = aug })
  D.loader:epoch(1)
  -- SPOS recalibrates with training images and the training transforms
  local cal = nasrt.data.loader(train, { batch_size = cfg.calib_batch_size, shuffle = true,
    seed = cfg.seed + 1, drop_last = true, limit = limit(cfg.train_limit), augment = aug,
    prefetch = 0 })
  D.calib = fixed_batches(cal, cfg.calib_batches, cfg.input_size)
  local vl = nasrt.data.loader(val, { batch_size = cfg.val_batch_size, shuffle = false,
    limit = limit(cfg.val_limit), augment = plain, prefetch = 0 })
  D.val = fixed_batches(vl, #vl, cfg.input_size)
  D.rank_loader = nasrt.data.loader(train, { batch_size = cfg.batch_size, shuffle = true,
    seed = cfg.seed + 2, drop_last = true, limit = limit(cfg.train_limit), augment = aug,
    prefetch = 0 })
  return D
end

-- ------------------------------------------------------------- metrics

--- Number of rows where argmax(logits) equals the label.
function M.correct(logits, y)
  local pred = F.argmax(logits, 2):totable()
  local ys = y:totable()
  local n = 0
  for i = 1, #ys do
    if pred[i] == ys[i] then n = n + 1 end
  end
  return n
end

--- Accuracy and mean cross-entropy of a model over {{x, y}, ...} batches
-- (eval mode, no tape).  `prep(x)` adapts inputs (e.g. resizes).
-- @treturn number accuracy in [0, 1]
-- @treturn number loss
function M.accuracy(model, batches, prep)
  model:eval()
  local right, total, loss = 0, 0, 0
  nasrt.no_grad(function()
    for _, b in ipairs(batches) do
      local x, y = b[1], b[2]
      if prep then x = prep(x) end
      local logits = model(x)
      local n = y:numel()
      right = right + M.correct(logits, y)
      loss = loss + F.cross_entropy(logits, y):item() * n
      total = total + n
    end
  end)
  return right / math.max(total, 1), loss / math.max(total, 1)
end

-- ------------------------------------------------------------- spaces

local Space = {}
Space.__index = Space

--- A search space over one supernet.  kind: "spos", "fairnas", "nb201"
-- (path mode, the cell searched by random/rea) or "elastic" (pass
-- `elastic` = the nasrt.supernet.elastic options).  Builds the supernet
-- from cfg (layout options of M.options) with the global generator.
-- @treturn Space with fields kind, net, choices and the methods below
function M.space(kind, cfg, elastic)
  local S = setmetatable({ kind = kind, cfg = cfg }, Space)
  local size = cfg.input_size
  if kind == "spos" then
    S.net = supernet.spos { input_size = size, stem = cfg.stem, stem_stride = cfg.stem_stride,
      widths = M.ints(cfg.widths, "widths"), repeats = M.ints(cfg.repeats, "repeats"),
      last = cfg.last, dropout = cfg.dropout }
  elseif kind == "fairnas" then
    S.net = supernet.fairnas { input_size = size, stem = cfg.stem, stem_stride = cfg.stem_stride,
      stages = M.stages(cfg.stages, "stages"), head = cfg.head, dropout = cfg.dropout,
      first_block = cfg.first_block > 0 and cfg.first_block or false,
      last_block = cfg.last_block > 0 and cfg.last_block or false }
  elseif kind == "nb201" then
    S.nb201_opts = { C = cfg.C, N = cfg.N, in_channels = 1, classes = 10 }
    S.net = supernet.nb201 { mode = "path", C = cfg.C, N = cfg.N, in_channels = 1, classes = 10 }
  elseif kind == "elastic" then
    S.elastic_opts = elastic
    S.net = supernet.elastic(elastic)
  else
    error(("oneshot.space: unknown space '%s' (spos, fairnas, nb201, elastic)"):format(
      tostring(kind)), 2)
  end
  S.choices = kind == "nb201" and copy(bench.NB201_CHOICES) or S.net:choices()
  return S
end

--- The input for arch's subnet: elastic archs run at their resolution.
function Space:input(x, arch)
  if self.kind ~= "elastic" then return x end
  local res = self.net:decode(arch).resolution
  return M.resize(x, res)
end

--- Logits of one path of the supernet (training or eval mode as set).
function Space:forward(x, arch)
  return (self.net(self:input(x, arch), arch))
end

--- FLOPs in millions (MACs of convs and linears, per image; NB201's own
-- count for the cell at the run's input size).
function Space:mflops(arch)
  if self.kind == "nb201" then
    local o = copy(self.nb201_opts)
    o.input_size = self.cfg.input_size
    return supernet.nb201_cost(arch, o).flops
  end
  return self.net:flops(arch) / 1e6
end

--- Parameters of the stand-alone network of arch.
function Space:params(arch)
  if self.kind == "nb201" then
    local o = copy(self.nb201_opts)
    o.input_size = self.cfg.input_size
    return supernet.nb201_cost(arch, o).n_params
  elseif self.kind == "elastic" then
    return self.net:params(arch)
  end
  return self.net:path_network(arch):num_parameters()
end

--- The module whose BN statistics get recalibrated and which is scored:
-- the shared path (chains), a copy (NB201), the extracted subnet (elastic).
function Space:eval_model(arch)
  if self.kind == "nb201" then return self.net:extract(arch) end
  if self.kind == "elastic" then return self.net:subnet(arch) end
  return self.net:path_network(arch)
end

--- A stand-alone network of arch, initialised from scratch with the
-- global generator (for ranking quality and retraining).
function Space:fresh_model(arch)
  if self.kind == "spos" then
    -- the stand-alone SPOS model uses affine BN (src/Evaluation/template)
    return self.net:path_network(arch, { weights = "fresh", affine = true })
  elseif self.kind == "fairnas" then
    return self.net:path_network(arch, { weights = "fresh" })
  elseif self.kind == "nb201" then
    return supernet.nb201_network(bench.nb201_decode(arch), self.nb201_opts)
  end
  return supernet.elastic(self.elastic_opts):subnet(arch)
end

--- A plain description of arch: {type= (the space), genes=, arch= (the
-- NB201 string, else the genes: what recipes/train.lua reads), text=,
-- names= (chains), arch_string= (NB201), config= (elastic)}.
function Space:describe(arch)
  local d = { type = self.kind, genes = copy(arch), arch = copy(arch), space = self.kind }
  if self.kind == "nb201" then
    d.arch_string = bench.nb201_decode(arch)
    d.arch = d.arch_string
    d.text = d.arch_string
  elseif self.kind == "elastic" then
    local c = self.net:decode(arch)
    d.config = c
    d.text = ("resolution %d | width %s | depth %s | kernel %s | expand %s"):format(c.resolution,
      table.concat(c.width, ","), table.concat(c.depth, ","), table.concat(c.kernel, ","),
      table.concat(c.expand, ","))
  else
    d.names = self.net:arch_names(arch)
    d.text = table.concat(d.names, " ")
  end
  return d
end

--- Checks an arch against the space: one gene per choice list, each in
-- range.  Returns true or false, message.
function Space:valid(arch)
  if type(arch) ~= "table" or #arch ~= #self.choices then
    return false, ("arch has %s genes, the space %d"):format(
      type(arch) == "table" and #arch or "no", #self.choices)
  end
  for g, c in ipairs(self.choices) do
    local v = arch[g]
    if math.type(v) ~= "integer" or v < 1 or v > c then
      return false, ("gene %d = %s out of range 1..%d"):format(g, tostring(v), c)
    end
  end
  return true
end

-- ------------------------------------------------------------- evaluation

--- BN-recalibrated validation accuracy of one candidate (SPOS
-- get_cand_err, AttentiveNAS calibration): reset the BN statistics of the
-- candidate's model, re-estimate them over the recalibration batches
-- (training mode, no tape), then score the validation batches in eval
-- mode.
-- NOTE(deviation): the statistics are an exact cumulative average over
-- the batches (AttentiveNAS / OFA, nn.recalibrate_bn), where SPOS keeps
-- PyTorch's EMA with momentum 0.1 over 200 batches; with few batches the
-- average is the better estimate.
-- @treturn number accuracy in [0, 1]
-- @treturn number validation loss
function M.score(S, arch, D)
  -- the same fixed batches on every rank: no synchronised batch norm
  if dist.active() then return dist.independent(M.score, S, arch, D) end
  local model = S:eval_model(arch)
  local prep
  if S.kind == "elastic" then prep = function(x) return S:input(x, arch) end end
  local i = 0
  nn.recalibrate_bn(model, function()
    i = i + 1
    local b = D.calib[i]
    if not b then return nil end
    return prep and prep(b[1]) or b[1]
  end)
  return M.accuracy(model, D.val, prep)
end

--- SGD over a supernet with weight decay only on weights of more than one
-- dimension (SPOS utils.get_parameters; AttentiveNAS: none on BN and
-- biases).
function M.sgd(net, o)
  local decay, rest = {}, {}
  for _, np in ipairs(net:named_parameters()) do
    local p = np[2]
    if #p:shape() > 1 then decay[#decay + 1] = p else rest[#rest + 1] = p end
  end
  local groups = {}
  if #decay > 0 then groups[#groups + 1] = { params = decay, weight_decay = o.weight_decay } end
  if #rest > 0 then groups[#groups + 1] = { params = rest, weight_decay = 0 } end
  return optim.SGD(groups, { lr = o.lr, momentum = o.momentum or 0.9,
                             nesterov = o.nesterov or false })
end

--- Learning-rate schedules in closed form, t = 0-based step (so a resumed
-- run gets exactly the same values).
-- "linear": lr * (1 - t / total) (SPOS' LambdaLR); "cosine": linear warmup
-- from lr * 1e-3 over `warmup` steps, then lr * (1 + cos(pi t / total)) / 2
-- (AttentiveNAS' warmup_cosine_lr); "constant".
function M.lr_schedule(kind, lr, total, warmup)
  warmup = warmup or 0
  if kind == "linear" then
    return function(t) return lr * (1 - t / total) end
  elseif kind == "cosine" then
    return function(t)
      if t < warmup then return lr * (1e-3 + (1 - 1e-3) * t / warmup) end
      return lr * 0.5 * (1 + math.cos(math.pi * t / total))
    end
  elseif kind == "constant" then
    return function() return lr end
  end
  error(("unknown learning-rate schedule '%s' (linear, cosine, constant)"):format(tostring(kind)), 0)
end

--- Clips every gradient element to [-v, v] (torch.nn.utils.clip_grad_value_).
-- nasrt.optim has only norm clipping, so this composes relu:
-- g - relu(g - v) + relu(-g - v).
function M.clip_grad_value(params, v)
  dist.sync_grads(params) -- data-parallel: clip the global batch's gradients
  nasrt.no_grad(function()
    for _, p in ipairs(params) do
      local g = p.grad
      if g then
        g:copy_(g - F.relu(g - v) + F.relu(-g - v))
      end
    end
  end)
end

--- Trains a fresh stand-alone network of arch briefly and returns its
-- validation accuracy (the "stand-alone" side of the ranking quality).
-- The network comes from the global generator seeded with (seed, idx),
-- the batches from `D.rank_loader` by index, so the result is a pure
-- function of (arch, idx, cfg).  Returns nil when should_stop() says so.
-- @treturn number accuracy, or nil (stopped)
-- @treturn number validation loss
-- @treturn number final training loss
function M.standalone(S, arch, D, cfg, idx, should_stop)
  if dist.active() then -- whole batches on every rank: nothing to synchronise
    return dist.independent(M.standalone, S, arch, D, cfg, idx, should_stop)
  end
  nasrt.manual_seed(cfg.seed * 100003 + 7919 * idx)
  local net = S:fresh_model(arch)
  local opt = optim.SGD(net:parameters(), { lr = cfg.ranking_lr, momentum = 0.9, nesterov = true,
                                            weight_decay = 5e-4 })
  local steps = cfg.ranking_steps
  local lr_at = M.lr_schedule("cosine", cfg.ranking_lr, steps, 0)
  local L = D.rank_loader
  local n = #L
  local last = 0 / 0
  net:train()
  for t = 1, steps do
    if should_stop and should_stop() then return nil end
    local x, y = L:batch((t - 1) % n + 1, (t - 1) // n + 1)
    x = S:input(M.resize(x, D.size), arch)
    opt:set_lr(lr_at(t - 1))
    opt:zero_grad()
    local loss = F.cross_entropy((net(x)), y)
    loss:backward()
    opt:step()
    last = loss:item()
  end
  local prep
  if S.kind == "elastic" then prep = function(x) return S:input(x, arch) end end
  local acc, vloss = M.accuracy(net, D.val, prep)
  return acc, vloss, last
end

-- ------------------------------------------------------------- predictor

--- One-hot features of an arch (genes with a single choice are skipped).
local function features(choices, arch)
  local f = {}
  for g, c in ipairs(choices) do
    if c > 1 then
      for v = 1, c do f[#f + 1] = arch[g] == v and 1 or 0 end
    end
  end
  return f
end

-- solves A x = b (A n x n, lists of rows) by Gaussian elimination with
-- partial pivoting; A and b are modified
local function solve(A, b)
  local n = #b
  for c = 1, n do
    local p = c
    for r = c + 1, n do
      if math.abs(A[r][c]) > math.abs(A[p][c]) then p = r end
    end
    A[c], A[p] = A[p], A[c]
    b[c], b[p] = b[p], b[c]
    local piv = A[c][c]
    if piv == 0 then piv = 1e-12 end
    for r = c + 1, n do
      local f = A[r][c] / piv
      if f ~= 0 then
        local Ar, Ac = A[r], A[c]
        for k = c, n do Ar[k] = Ar[k] - f * Ac[k] end
        b[r] = b[r] - f * b[c]
      end
    end
  end
  local x = {}
  for r = n, 1, -1 do
    local s = b[r]
    for k = r + 1, n do s = s - A[r][k] * x[k] end
    local piv = A[r][r]
    if piv == 0 then piv = 1e-12 end
    x[r] = s / piv
  end
  return x
end

--- Ridge regression accuracy predictor on the one-hot gene encoding:
-- w = (X'X + lambda I)^-1 X'(y - mean y), prediction mean y + x.w.
-- (AttentiveNAS ships a random forest on its 31-integer encoding, trained
-- on measured accuracies; the public code never uses it for sampling.
-- Ridge on one-hot genes is the small, exact stand-in used here.)
-- @tparam table choices per-gene choice counts
-- @tparam table data list of {arch, acc}
-- @tparam[opt=1] number lambda
-- @treturn table predictor with :predict(arch)
function M.ridge(choices, data, lambda)
  lambda = lambda or 1
  local X, ys, mean = {}, {}, 0
  for i, d in ipairs(data) do
    X[i] = features(choices, d[1])
    ys[i] = d[2]
    mean = mean + d[2]
  end
  mean = #data > 0 and mean / #data or 0
  local p = 0
  for _, c in ipairs(choices) do
    if c > 1 then p = p + c end
  end
  local A, b = {}, {}
  for r = 1, p do
    A[r], b[r] = {}, 0
    for c = 1, p do A[r][c] = r == c and lambda or 0 end
  end
  for i, x in ipairs(X) do
    local yc = ys[i] - mean
    for r = 1, p do
      if x[r] ~= 0 then
        b[r] = b[r] + x[r] * yc
        local Ar = A[r]
        for c = 1, p do
          if x[c] ~= 0 then Ar[c] = Ar[c] + x[r] * x[c] end
        end
      end
    end
  end
  local w = p > 0 and solve(A, b) or {}
  local model = { w = w, mean = mean, choices = copy(choices), n = #data, lambda = lambda }
  function model.predict(_, arch)
    local x = features(choices, arch)
    local s = mean
    for k = 1, #x do
      if x[k] ~= 0 then s = s + w[k] * x[k] end
    end
    return s
  end
  return model
end

-- ------------------------------------------------------------- session

local STOP = setmetatable({}, { __tostring = function() return "oneshot: stop requested" end })

local Session = {}
Session.__index = Session

--- The run state of a one-shot recipe.  parts: net (supernet, or nil),
-- opt (optimizer), loader (training loader), samplers (name -> sampler
-- whose :state() goes into the checkpoint), extra (a plain table the
-- recipe keeps its own state in: it is saved and restored as ses.state.extra).
-- When the run is resumed, everything is restored from its checkpoint
-- here (weights, optimizer, samplers, loader position, the global RNG).
-- @treturn Session
function M.session(run, cfg, parts)
  parts = parts or {}
  local self = setmetatable({ run = run, cfg = cfg, net = parts.net, opt = parts.opt,
    loader = parts.loader, samplers = parts.samplers or {}, size = cfg.input_size,
    last_save = nasrt.clock() }, Session)
  -- phase: the one running; phases: those finished; step: training steps
  -- done; unit: units of work done (training steps, search steps, ranking
  -- paths); last_epoch: training epochs completed
  self.state = { version = CKPT_VERSION, phase = "setup", step = 0, unit = 0, phases = {},
    losses = {}, epoch_sum = { loss = 0, acc = 0, n = 0 }, last_epoch = 0, cache = {},
    searches = {}, extra = parts.extra or {} }
  if run.resumed then
    local ck = run:load()
    if ck then self:_restore(ck) end
  end
  return self
end

function Session:_restore(ck)
  if ck.version ~= CKPT_VERSION then
    error(("resume: checkpoint version %s, this recipe writes %d"):format(tostring(ck.version),
      CKPT_VERSION), 0)
  end
  if self.net and ck.model then self.net:load_state_dict(ck.model) end
  if self.opt and ck.opt then self.opt:load_state_dict(ck.opt) end
  self._saved_samplers = ck.samplers or {}
  for name, s in pairs(self.samplers) do
    if ck.samplers and ck.samplers[name] then s:set_state(ck.samplers[name]) end
  end
  if self.loader and ck.loader then self.loader:set_state(ck.loader) end
  if ck.rng then nasrt.set_rng_state(ck.rng) end
  self.state = ck.state
  self.state.extra = self.state.extra or {}
  self.resumed = true
  self.run:log { event = "resume", step = self.state.step, unit = self.state.unit }
  if not self.cfg.quiet then
    print(("%s: resumed at step %d (unit %d)"):format(self.run.dir, self.state.step, self.state.unit))
  end
end

--- Registers a sampler created after the session (its saved state, if
-- any, is applied at once).
function Session:add_sampler(name, s)
  self.samplers[name] = s
  if self._saved_samplers and self._saved_samplers[name] then
    s:set_state(self._saved_samplers[name])
  end
  return s
end

--- Writes the checkpoint (atomic: nasrt.save writes a temp file and renames).
function Session:save()
  if self.net then dist.average_buffers(self.net) end
  local ck = { version = CKPT_VERSION, state = self.state, rng = nasrt.get_rng_state() }
  if self.net then ck.model = self.net:state_dict() end
  if self.opt then ck.opt = self.opt:state_dict() end
  ck.samplers = {}
  for name, s in pairs(self.samplers) do ck.samplers[name] = s:state() end
  if self.loader then ck.loader = self.loader:state() end
  self.run:save(ck)
  self.last_save = nasrt.clock()
end

function Session:_maybe_save()
  local every = self.cfg.ckpt_every or 50
  if (every > 0 and self.state.unit % every == 0) or nasrt.clock() - self.last_save > 120 then
    self:save()
  end
end

function Session:_interrupt(why)
  -- logged before the checkpoint, so a resume (which cuts the log back to
  -- the checkpoint's position) keeps it
  self.run:log { event = "interrupted", reason = why, step = self.state.step, unit = self.state.unit }
  self:save()
  self.run.interrupted = true
  self.stopped = true
  return true
end

-- Ctrl-C: save and stop (true)
function Session:_stop_now()
  if self.run:stop_requested() then return self:_interrupt("interrupt") end
  return false
end

-- counts one unit of work; --stop_after_steps=k stops right after unit k
function Session:_after_unit()
  local st = self.state
  st.unit = st.unit + 1
  local k = self.cfg.stop_after_steps or 0
  if k > 0 and st.unit == k then return self:_interrupt("stop_after_steps") end
  self:_maybe_save()
  return false
end

--- Whether a phase already finished (in this run or before the resume).
function Session:done(phase) return self.state.phases[phase] == true end

--- Marks a phase finished and checkpoints.
function Session:finish(phase)
  self.state.phases[phase] = true
  self:save()
end

--- The next training batch (wrapping over epochs), resized: this rank's
-- shard of it under mpirun, the whole batch with `whole` = true (every
-- rank draws every batch, so the loaders stay in step).
function Session:batch(whole)
  local x, y = self.loader:next(true)
  if not whole then x, y = dist.shard(x, y) end
  return M.resize(x, self.size), y
end

--- Runs the supernet training phase "train".
-- opts: steps (total), step = function(t, next_batch) -> record with at
-- least loss and acc (the rest is logged as is: sampled paths, FLOPs...),
-- lr = function(t0) -> lr (0-based), on_epoch = function(epoch) ->
-- table merged into the epoch summary (optional).
-- @treturn boolean true when the phase is complete, false when stopped
function Session:train(opts)
  local st = self.state
  if self:done("train") then return true end
  local total = opts.steps
  local len = #self.loader
  st.phase = "train"
  local p = self.run:progress(total, { start = st.step })
  local next_batch = function(whole) return self:batch(whole) end
  self.net:train()
  while st.step < total do
    if self:_stop_now() then return false end
    local t = st.step + 1
    local lr = opts.lr(t - 1)
    self.opt:set_lr(lr)
    local rec = opts.step(t, next_batch)
    if dist.active() then
      -- the global batch's numbers: means of the ranks' shards, or sums
      -- when the step says its numbers are shares (rec.reduce = "sum")
      local f = rec.reduce == "sum" and dist.sum or dist.mean
      local acc
      rec.loss, acc = f(rec.loss, rec.acc or 0)
      if rec.acc then rec.acc = acc end
    end
    rec.reduce = nil
    st.step = t
    st.losses[t] = rec.loss
    local e = st.epoch_sum
    e.loss, e.acc, e.n = e.loss + rec.loss, e.acc + (rec.acc or 0), e.n + 1
    rec.event, rec.phase, rec.step, rec.lr = "step", "train", t, lr
    self.run:log(rec)
    p:update(t, ("loss %.3f"):format(rec.loss))
    -- an epoch summary when the loader completed an epoch, and at the end
    local ls = self.loader:state()
    local completed = ls.pos >= len and ls.epoch or ls.epoch - 1
    local new_epoch = completed > st.last_epoch
    if new_epoch or t == total then
      local sum = { event = "epoch", epoch = new_epoch and completed or st.last_epoch + 1, step = t,
        loss = e.loss / e.n, acc = e.acc / e.n, lr = lr, steps = e.n,
        partial = not new_epoch or nil }
      if opts.on_epoch then
        for k, v in pairs(opts.on_epoch(sum.epoch) or {}) do sum[k] = v end
        self.net:train()
      end
      self.run:log(sum)
      local extra = ""
      for _, k in ipairs(opts.epoch_fields or {}) do
        if sum[k] then extra = extra .. ("  %s %.4f"):format(k, sum[k]) end
      end
      p:line(("epoch %d  step %d/%d  loss %.4f  acc %.4f  lr %.4g%s"):format(sum.epoch, t, total,
        sum.loss, sum.acc, lr, extra))
      if new_epoch then st.last_epoch = completed end
      st.epoch_sum = { loss = 0, acc = 0, n = 0 }
    end
    if self:_after_unit() then return false end
  end
  self:finish("train")
  return true
end

--- A cached, stop-aware score function for nasrt.search: fn(arch) ->
-- score[, extra table] is called once per arch (the cache is saved in
-- the checkpoint, so a resumed search does not re-evaluate), each call
-- logged as {event = "eval"}.  Ctrl-C inside a generation aborts the
-- step; the session saves the searcher's state from before the step and
-- the cache, so the resumed step recomputes nothing it already had.
function Session:scorer(fn, tag)
  local function store(arch, s, extra)
    self.state.cache[key_of(arch)] = { score = s, extra = extra }
    local rec = { event = "eval", phase = tag, arch = copy(arch), score = s }
    for k, v in pairs(extra or {}) do rec[k] = v end
    self.run:log(rec)
  end
  local score = function(arch)
    local c = self.state.cache[key_of(arch)]
    if c then return c.score, c.extra end
    if self.run:stop_requested() then error(STOP, 0) end
    local s, extra = fn(arch)
    store(arch, s, extra)
    return s, extra
  end
  -- data-parallel: what Session:search and Session:ranking need to score
  -- archs over the ranks and cache the results on every rank
  self._scorers = self._scorers or setmetatable({}, { __mode = "k" })
  self._scorers[score] = {
    known = function(arch)
      local c = self.state.cache[key_of(arch)]
      if c then return c.score, c.extra end
    end,
    -- scores the archs not cached yet, spread over the ranks
    prefetch = function(archs)
      local todo = {}
      for _, a in ipairs(archs) do
        if not self.state.cache[key_of(a)] then todo[#todo + 1] = a end
      end
      local scores, extras = search.evaluate_parallel(todo, fn)
      for i, a in ipairs(todo) do store(a, scores[i], extras[i]) end
      return #todo
    end,
    raw = fn, store = store,
  }
  return score
end

local function guarded(fn, ...)
  return xpcall(fn, function(e)
    if e == STOP then return e end
    if type(e) == "string" and e:match("^divergence:") then return e end
    return debug.traceback(tostring(e), 2)
  end, ...)
end

--- Runs a nasrt.search searcher to the end as phase `name`, one step per
-- unit of work, restoring it on resume.  on_step(searcher, a, b) gets
-- what :step() returned (log it, print progress).
-- @treturn searcher (finished), or nil when stopped
function Session:search(name, searcher, total, on_step)
  local st = self.state
  local rec = st.searches[name]
  if rec then searcher:set_state(rec.state) end
  if self:done(name) then return searcher end
  st.phase = name
  rec = rec or { steps = 0 }
  local p = self.run:progress(total, { start = rec.steps })
  local par = dist.active() and self._scorers and self._scorers[searcher.score]
  while not searcher:done() do
    if self:_stop_now() then return nil end
    if par then
      -- the candidates of the next step(s), scored over the ranks first;
      -- again while the next step still needs a score (its candidates can
      -- depend on scores found in the same step, as evolution's first)
      while true do
        local up = search.upcoming(searcher, { known = par.known, want = dist.size() })
        if #up == 0 or par.prefetch(up) == 0 then break end
      end
    end
    local pre = searcher:state()
    local ok, a, b = guarded(searcher.step, searcher)
    if not ok then
      if a == STOP then
        st.searches[name] = { state = pre, steps = rec.steps }
        self:_interrupt("interrupt")
        return nil
      end
      error(a, 0)
    end
    rec = { state = searcher:state(), steps = rec.steps + 1 }
    st.searches[name] = rec
    p:update(rec.steps)
    if on_step then on_step(searcher, a, b, p) end
    if self:_after_unit() then return nil end
  end
  self:finish(name)
  return searcher
end

--- The ranking-quality phase (reference/oneshot.md §5): cfg.ranking
-- distinct uniform paths; for each, the BN-recalibrated supernet accuracy
-- (score_fn, normally a session scorer) and the accuracy of the same path
-- trained from scratch for cfg.ranking_steps steps; Kendall tau-b,
-- Spearman and Pearson between the two, written to ranking.json.
-- @treturn table the ranking record, nil when stopped, false when off
function Session:ranking(S, D, score_fn)
  local cfg, st = self.cfg, self.state
  local N = cfg.ranking or 0
  if N <= 0 then return false end
  if self:done("ranking") then return st.ranking end
  st.phase = "ranking"
  local R = st.ranking
  if not R then
    -- distinct paths from their own generator (a pure function of the seed)
    local smp = nasrt.sampler.uniform { choices = S.choices, seed = cfg.seed + 4242 }
    local archs, seen = {}, {}
    for _ = 1, 1000 * N do
      local a = smp:sample()
      if not seen[key_of(a)] then
        seen[key_of(a)] = true
        archs[#archs + 1] = a
        if #archs == N then break end
      end
    end
    R = { archs = archs, rows = {} }
    st.ranking = R
  end
  local p = self.run:progress(#R.archs, { start = #R.rows })
  local stop = function() return self.run:stop_requested() end
  -- data-parallel: rows computed dist.size() at a time, one per rank
  local par = dist.active() and self._scorers and self._scorers[score_fn]
  local done_rows = {}
  for i = #R.rows + 1, #R.archs do
    if self:_stop_now() then return nil end
    local arch = R.archs[i]
    if par and not done_rows[i] then
      local idx = {}
      for k = i, math.min(#R.archs, i + dist.size() - 1) do idx[#idx + 1] = k end
      local res = dist.map(idx, function(k)
        local a = R.archs[k]
        local c = par.known(a)
        local sup, extra = c, nil
        if sup == nil then sup, extra = par.raw(copy(a)) end
        return sup, extra, c == nil, M.standalone(S, a, D, cfg, k)
      end)
      for j, k in ipairs(idx) do
        local r = res[j]
        if r[3] then par.store(R.archs[k], r[1], r[2]) end
        done_rows[k] = { r[1], r[4], r[5], r[6] }
      end
    end
    local alone, vloss, tloss, sup
    if done_rows[i] then
      sup, alone, vloss, tloss = table.unpack(done_rows[i], 1, 4)
    else
      local ok
      ok, sup = guarded(score_fn, arch)
      if not ok then
        if sup == STOP then self:_interrupt("interrupt"); return nil end
        error(sup, 0)
      end
      alone, vloss, tloss = M.standalone(S, arch, D, cfg, i, stop)
    end
    if not alone then self:_interrupt("interrupt"); return nil end
    local row = { arch = copy(arch), supernet = sup, standalone = alone, standalone_loss = vloss,
      train_loss = tloss, mflops = S:mflops(arch), text = S:describe(arch).text }
    R.rows[i] = row
    local rec = copy(row)
    rec.event, rec.phase, rec.index = "ranking", "ranking", i
    self.run:log(rec)
    p:update(i)
    p:line(("ranking %d/%d  supernet %.4f  stand-alone %.4f  %s"):format(i, #R.archs, sup, alone,
      row.text))
    if self:_after_unit() then return nil end
  end
  local xs, ys = {}, {}
  for i, r in ipairs(R.rows) do xs[i], ys[i] = r.supernet, r.standalone end
  R.n = #R.rows
  R.kendall_tau = search.kendall_tau(xs, ys)
  R.spearman = search.spearman(xs, ys)
  R.pearson = search.pearson(xs, ys)
  R.standalone_steps = cfg.ranking_steps
  R.space = S.kind
  local out = copy(R)
  out.archs = nil
  local nan = function(v) return v ~= v and "nan" or v end
  out.kendall_tau, out.spearman, out.pearson = nan(R.kendall_tau), nan(R.spearman), nan(R.pearson)
  self.run:write_json("ranking.json", out)
  self.run:log { event = "ranking_result", kendall_tau = out.kendall_tau, spearman = out.spearman,
    n = R.n }
  if not cfg.quiet then
    print(("ranking quality: Kendall tau %.4f, Spearman %.4f over %d paths (ranking.json)"):format(
      R.kendall_tau, R.spearman, R.n))
  end
  self:finish("ranking")
  return R
end

--- What a stopped run returns.
function Session:interrupted()
  return { interrupted = true, dir = self.run.dir, unit = self.state.unit, step = self.state.step }
end

-- ------------------------------------------------------------- outputs

--- Writes arch.json (the description, FLOPs, params and whatever `info`
-- adds) and arch.txt (the text form) into the run directory.
-- @treturn table the arch.json record
function M.write_arch(run, S, arch, info)
  local d = S:describe(arch)
  d.mflops = S:mflops(arch)
  d.params = S:params(arch)
  d.choices = copy(S.choices)
  for k, v in pairs(info or {}) do d[k] = v end
  run:write_json("arch.json", d)
  run:write_text("arch.txt", d.text .. "\n")
  return d
end

-- ------------------------------------------------------------- baselines

--- Options of the baseline recipes (random, rea) besides their own.
M.options.baseline = {
  { "space", "nb201", "search space: nb201 (the NAS-Bench-201 cell) | spos | fairnas" },
  { "score", "supernet", "supernet (BN-recalibrated accuracy) | table (nb201: 12-epoch table)" },
  { "bench", "", "nb201 = run against the NAS-Bench-201 table (same as --score=table)" },
  { "bench_dataset", "cifar10", "table scores: cifar10 | cifar100 | imagenet16" },
  { "budget", 0.0, "table: also stop at this simulated training time (s; AutoDL NB201: 12000), 0 = off" },
  { "steps", 600, "brief supernet training steps before the search (supernet scores)" },
  { "batch_size", 64, "supernet training batch" },
  { "lr", 0.03, "supernet SGD learning rate (cosine schedule)" },
  { "weight_decay", 4e-5, "supernet weight decay of conv/linear weights" },
  { "flops_limit", -1.0, "spos/fairnas: MFLOPs limit of the candidates, -1 = none" },
}

-- Table scores: the 12-epoch validation accuracy; extra carries the
-- 200-epoch test accuracy, the simulated 12-epoch training time and the
-- benchmark network's FLOPs (M), so `nasrt plot` can draw accuracy vs FLOPs.
local function table_score(E, bench_db, dataset)
  return function(arch)
    local s, x = E.score(arch)
    local _, mflops = bench_db:cost(x.index, dataset)
    return s, { test = x.report, test12 = bench_db:acc(x.index, dataset, "test12"), time = x.time,
                index = x.index, mflops = mflops }
  end
end

--- A baseline recipe (random search, REA) over any space, from
-- spec = {name=, description=, options= (its own rows), total(cfg) ->
-- search steps, make(cfg, choices, score, constraint) -> nasrt.search
-- searcher; make gets a 5th argument {budget=, cost=} in table mode, to
-- pass to the searcher).  With --bench=nb201 (or --space=nb201
-- --score=table) the candidates are scored
-- by NAS-Bench-201's 12-epoch validation accuracy (no training: the
-- benchmark mode of AutoDL's scripts) and the pick's 200-epoch test
-- accuracy is reported, each evaluation charging the cell's simulated
-- 12-epoch training time (nasrt.bench's epoch_time; --budget stops on
-- it, as AutoDL's time_budget); otherwise a supernet of the space is trained
-- briefly with its own rule (uniform single path for spos and nb201 --
-- RSPS --, strict fairness for fairnas) and candidates are scored by
-- BN-recalibrated validation accuracy.
-- @treturn table the recipe {name=, description=, defaults=, run=}
function M.baseline_recipe(spec)
  local R = { name = spec.name, description = spec.description }
  R.defaults = M.defaults(spec.options, "baseline", "spos", "fairnas", "nb201", "data", "run")

  function R.run(cfg, run)
    if cfg.bench ~= "" then
      if cfg.bench ~= "nb201" then
        error(("%s: --bench must be nb201 (the only tabulated space), got %s"):format(R.name, cfg.bench), 0)
      end
      cfg.score, cfg.space = "table", "nb201"
    end
    local kinds = { nb201 = true, spos = true, fairnas = true }
    if not kinds[cfg.space] then
      error(("%s: --space must be nb201, spos or fairnas, got %s"):format(R.name, cfg.space), 0)
    end
    if cfg.score ~= "supernet" and cfg.score ~= "table" then
      error(("%s: --score must be supernet or table, got %s"):format(R.name, cfg.score), 0)
    end
    if cfg.score == "table" and cfg.space ~= "nb201" then
      error(("%s: --score=table needs --space=nb201 (the only tabulated space)"):format(R.name), 0)
    end
    local say = function(fmt, ...) if not cfg.quiet then print(fmt:format(...)) end end
    M.setup(cfg)
    local ses, S, D, score, constraint, limits
    local tabled = cfg.score == "table"
    if tabled then
      local db, err = bench.nb201()
      if not db then error(err, 0) end
      local ds = cfg.bench_dataset
      if ds ~= "cifar10" and ds ~= "cifar100" and ds ~= "imagenet16" then
        error(("%s: --bench_dataset must be cifar10, cifar100 or imagenet16"):format(R.name), 0)
      end
      S = { kind = "nb201", choices = copy(bench.NB201_CHOICES) }
      ses = M.session(run, cfg, {})
      local E = db:evaluator { dataset = ds }
      score = ses:scorer(table_score(E, db, ds), "search")
      if cfg.budget < 0 then error(("%s: --budget must be >= 0"):format(R.name), 0) end
      limits = { cost = function(_, _, extra) return extra.time end,
                 budget = cfg.budget > 0 and cfg.budget or nil }
      if not ses.resumed then
        run:log { event = "setup", space = "nb201", score = "table", dataset = ds }
        say("%s: NAS-Bench-201 cell (15625 archs), scored by the 12-epoch %s validation " ..
          "accuracy", R.name, ds)
      end
    else
      D = M.data(cfg)
      S = M.space(cfg.space, cfg)
      local net = S.net
      local opt = M.sgd(net, { lr = cfg.lr, momentum = 0.9, weight_decay = cfg.weight_decay })
      local fair = cfg.space == "fairnas"
      local paths = fair and nasrt.sampler.strict_fair { choices = S.choices, seed = cfg.seed }
        or nasrt.sampler.uniform { choices = S.choices, seed = cfg.seed }
      ses = M.session(run, cfg, { net = net, opt = opt, loader = D.loader,
                                  samplers = { paths = paths } })
      if not ses.resumed then
        run:log { event = "setup", space = cfg.space, score = "supernet", choices = S.choices,
          params = net:num_parameters() }
        say("%s: %s supernet (%d params) trained %d steps (%s), then scored by BN-recalibrated " ..
          "validation accuracy", R.name, cfg.space, net:num_parameters(), cfg.steps,
          fair and "strict fairness" or "uniform single path")
      end
      local ok = ses:train {
        steps = cfg.steps,
        lr = M.lr_schedule("cosine", cfg.lr, cfg.steps),
        step = function(_, next_batch)
          local x, y = next_batch()
          local archs = fair and paths:sample() or { paths:sample() }
          opt:zero_grad()
          local lsum, right = 0, 0
          for _, arch in ipairs(archs) do
            local logits = S:forward(x, arch)
            local loss = F.cross_entropy(logits, y)
            loss:backward()
            lsum, right = lsum + loss:item(), right + M.correct(logits, y)
          end
          opt:step()
          return { loss = lsum / #archs, acc = right / (#archs * y:numel()), archs = archs }
        end,
      }
      if not ok then return ses:interrupted() end
      score = ses:scorer(function(arch)
        local acc, loss = M.score(S, arch, D)
        return acc, { val_loss = loss, mflops = S:mflops(arch) }
      end, "search")
      if cfg.flops_limit > 0 and cfg.space ~= "nb201" then
        constraint = function(arch) return S:mflops(arch) <= cfg.flops_limit end
      end
    end

    local total = spec.total(cfg)
    local searcher = spec.make(cfg, S.choices, score, constraint, limits or {})
    searcher = ses:search("search", searcher, total, function(s, arch, sc, p)
      local best, bs = s:best()
      run:log { event = "search", evaluation = s:evaluations(), arch = arch, score = sc,
        best_score = bs, best_arch = best, sim_time = tabled and s.spent or nil }
      if s:evaluations() % math.max(1, total // 10) == 0 or s:done() then
        p:line(("%d/%d evaluated  best %s %.4f"):format(s:evaluations(), total,
          tabled and "val12" or "val acc", bs))
      end
    end)
    if not searcher then return ses:interrupted() end
    local best, bs, extra = searcher:best()

    local info = { method = R.name, score_kind = cfg.score, val_score = bs,
                   evaluations = searcher:evaluations() }
    local rec
    if tabled then
      local s = bench.nb201_decode(best)
      info.dataset, info.val12, info.test = cfg.bench_dataset, bs, extra.test
      info.sim_time, info.budget = searcher.spent, limits.budget
      rec = { type = "nb201", genes = best, arch = s, space = "nb201", arch_string = s, text = s,
              choices = S.choices }
      for k, v in pairs(info) do rec[k] = v end
      run:write_json("arch.json", rec)
      run:write_text("arch.txt", s .. "\n")
      say("%s: %s\n  12-epoch %s val %.2f%%, 200-epoch test %.2f%% (%d evaluations, %.0f s " ..
        "simulated training) -> %s", R.name, s, cfg.bench_dataset, bs, extra.test,
        searcher:evaluations(), searcher.spent, run:path("arch.json"))
    else
      if S.kind == "nb201" then
        local db = bench.nb201()
        if db then info.nb201_cifar10_test = db:query(bench.nb201_decode(best)).cifar10.test end
      end
      info.val_acc = bs
      info.flops_limit = constraint and cfg.flops_limit or nil
      rec = M.write_arch(run, S, best, info)
      say("%s: %s\n  %.3f MFLOPs, %d params, supernet val acc %.4f (%d evaluations) -> %s",
        R.name, rec.text, rec.mflops, rec.params, bs, searcher:evaluations(),
        run:path("arch.json"))
    end
    run:log { event = "result", arch = best, score = bs, test = info.test }
    return { arch = best, score = bs, test = info.test, sim_time = info.sim_time,
             evaluations = searcher:evaluations(), arch_string = rec.arch_string,
             text = rec.text, mflops = rec.mflops, losses = ses.state.losses, dir = run.dir }
  end

  return R
end

--- FLOPs quantiles of `n` uniform archs of the space (in MFLOPs), drawn
-- with their own generator (a pure function of seed): q(p) for p in
-- [0, 1] (q(0), q(1): the smallest and largest of the sample).
function M.flops_quantiles(S, n, seed)
  local smp = nasrt.sampler.uniform { choices = S.choices, seed = seed }
  local fs = {}
  for i = 1, n do fs[i] = S:mflops(smp:sample()) end
  table.sort(fs)
  return function(p)
    local i = math.max(1, math.min(n, math.floor(p * (n - 1) + 1.5)))
    return fs[i]
  end
end

return M
