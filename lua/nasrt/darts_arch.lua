--- nasrt.darts_arch: the DARTS Architect (first and second order) and the
-- plumbing the differentiable-search recipes share (search data, supernet
-- validation accuracy, checkpoints that resume exactly, the found
-- architecture on disk).
--
-- The Architect follows quark0/darts `cnn/architect.py`
-- (differentiable.md §1.5; Liu, Simonyan, Yang, "DARTS: Differentiable
-- Architecture Search", ICLR 2019):
--
-- * first order: grad_alpha = dL_val(w, alpha)/dalpha on a validation batch;
-- * second order (`unrolled = true`): the virtual step
--   w' = w - eta (mu m + dL_tr/dw + lambda w) with the weight optimizer's
--   momentum buffers m, momentum mu and weight decay lambda (no clipping);
--   d_alpha = dL_val(w', alpha)/dalpha and v = dL_val(w', alpha)/dw'; the
--   finite-difference Hessian-vector product with R = 0.01/||v|| on the
--   train batch, g+- = dL_tr(w +- R v, alpha)/dalpha; finally
--   grad_alpha = d_alpha - eta (g+ - g-)/(2R).
--
-- Then one Adam step on the architecture parameters (lr 3e-4, betas (0.5,
-- 0.999), weight decay 1e-3 by default).  Any net with `parameters()`
-- (weights) and `arch_parameters()` works: DARTS, Att-DARTS (alphas and
-- betas), GDAS.
--
-- NOTE(deviation): DARTS restores the weights after the virtual step and
-- after each perturbation with in-place additions (w + Rv - 2Rv + Rv),
-- which is not exact in floating point; here they are copied back from a
-- snapshot, so the architect leaves w bit-identical.  Likewise the BN
-- running statistics that DARTS' throw-away virtual model would update are
-- restored after the forward at w'; the other forwards update them on the
-- real network, as in DARTS.
--
-- Data-parallel runs (nasrt.dist, mpirun): the search loaders hand out
-- this rank's shard of each global batch; the virtual step and v of the
-- second order use the gradients averaged over the ranks (so w', R and the
-- perturbations are the whole batch's); everything else is linear in the
-- per-rank pieces, which the alpha optimizer's step averages.  evaluate()
-- splits the validation batches over the ranks and sums the results.
-- @module nasrt.darts_arch
-- @usage
-- local darts_arch = require "nasrt.darts_arch"
-- local arch = darts_arch.Architect(net, {unrolled = true})
-- local w_opt = nasrt.optim.SGD(net:parameters(), {lr = 0.025, momentum = 0.9,
--                                                  weight_decay = 3e-4})
-- -- each step, before the weight step:
-- local val_loss = arch:step(x_train, y_train, x_val, y_val, lr, w_opt)
local nasrt = require "nasrt"
local dist = require "nasrt.dist"

local F = nasrt.F
local optim = nasrt.optim
local supernet = nasrt.supernet

local M = {}

-- ------------------------------------------------------------ tensor lists

local function snapshot(list)
  return nasrt.no_grad(function()
    local out = {}
    for i, t in ipairs(list) do out[i] = t:detach():clone() end
    return out
  end)
end

local function copy_back(list, saved)
  nasrt.no_grad(function()
    for i, t in ipairs(list) do t:copy_(saved[i]) end
  end)
end

-- the gradients of a list of leaves (cloned; nil where backward never reached)
local function grads(list)
  local out = {}
  for i, t in ipairs(list) do
    local g = t.grad
    out[i] = g and g:clone() or false
  end
  return out
end

local function zero_grads(list)
  for _, t in ipairs(list) do t:zero_grad() end
end

--- Runs fn(...) with requires_grad off on every tensor of `list` (so a
-- backward computes no gradient for them, which saves their GEMMs), then
-- switches it back on, also when fn raises.
-- @tparam {tensor,...} list leaf tensors
-- @tparam function fn
-- @return what fn returns
function M.frozen(list, fn, ...)
  for _, t in ipairs(list) do t:requires_grad(false) end
  local res = table.pack(pcall(fn, ...))
  for _, t in ipairs(list) do t:requires_grad(true) end
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end
local frozen = M.frozen

local function default_loss(net, x, y)
  return F.cross_entropy(net(x), y)
end

-- ------------------------------------------------------------ Architect

--- The architecture optimizer of DARTS.
-- @type Architect
local Architect = {}
Architect.__index = Architect

--- Makes an Architect for a search network.
-- @tparam table net a search network (`parameters()`, `arch_parameters()`)
-- @tparam[opt] table opts {lr=3e-4, betas={0.5, 0.999}, weight_decay=1e-3
--   (Adam on the alphas), unrolled=false (second order), r=0.01 (the
--   finite-difference scale), loss=function(net, x, y) -> 0-dim tensor
--   (cross-entropy of net(x))}
-- @treturn Architect
function M.Architect(net, opts)
  opts = opts or {}
  local self = setmetatable({}, Architect)
  self.net = net
  self.weights = net:parameters()
  self.alphas = net:arch_parameters()
  if net.named_arch_parameters then optim.name_parameters(net:named_arch_parameters()) end
  if #self.alphas == 0 then error("Architect: the network has no architecture parameters", 2) end
  self.unrolled = opts.unrolled or false
  self.r = opts.r or 0.01
  self.loss = opts.loss or default_loss
  self.optimizer = optim.Adam(self.alphas, { lr = opts.lr or 3e-4,
    betas = opts.betas or { 0.5, 0.999 }, weight_decay = opts.weight_decay or 1e-3 })
  -- the running statistics (every buffer that is not an architecture
  -- parameter), restored after the forward at the virtual weights w'
  local is_arch = {}
  for _, a in ipairs(self.alphas) do is_arch[a] = true end
  self.stats = {}
  for _, b in ipairs(net:buffers()) do
    if not is_arch[b] then self.stats[#self.stats + 1] = b end
  end
  return self
end

-- per weight: momentum mu, weight decay lambda and momentum buffer m of the
-- weight optimizer (DARTS reads them from network_optimizer)
function Architect:_virtual_settings(w_opt)
  local out = {}
  if w_opt then
    for _, g in ipairs(w_opt.param_groups) do
      for _, p in ipairs(g.params) do
        local st = w_opt.state[p]
        out[p] = { mu = g.momentum or 0, wd = g.weight_decay or 0,
                   m = st and st.momentum_buffer or nil }
      end
    end
  end
  return out
end

--- The virtual step: sets every weight to w - eta (mu m + g + lambda w)
-- with g = dL_tr(w, alpha)/dw on (x, y).  Returns the snapshot of w.
function Architect:_virtual_step(x, y, eta, w_opt)
  local W, net = self.weights, self.net
  zero_grads(W)
  frozen(self.alphas, function() self.loss(net, x, y):backward() end)
  dist.allreduce_grads(W)
  local w0 = snapshot(W)
  local set = self:_virtual_settings(w_opt)
  nasrt.no_grad(function()
    for i, p in ipairs(W) do
      local s = set[p] or { mu = 0, wd = 0 }
      local d = p.grad and p.grad:clone() or nasrt.zeros(p:shape())
      if s.wd ~= 0 then d:add_(w0[i], s.wd) end
      if s.m and s.mu ~= 0 then d:add_(s.m, s.mu) end
      p:add_(d, -eta)
    end
  end)
  zero_grads(W)
  return w0
end

--- The architecture gradient, without stepping.
-- @tparam tensor xt train batch (second order only)
-- @tparam tensor yt train labels
-- @tparam tensor xv validation batch
-- @tparam tensor yv validation labels
-- @tparam number eta the current weight learning rate (second order)
-- @tparam[opt] Optimizer w_opt the weight SGD (its momentum buffers,
--   momentum and weight decay enter the virtual step; without it both are 0)
-- @treturn table one gradient tensor per architecture parameter (false
--   where the loss does not depend on it)
-- @treturn number the validation loss (at w for first order, at w' for second)
function Architect:gradient(xt, yt, xv, yv, eta, w_opt)
  local net, W, A = self.net, self.weights, self.alphas
  if not self.unrolled then
    zero_grads(A)
    local loss = frozen(W, function()
      local l = self.loss(net, xv, yv)
      l:backward()
      return l:item()
    end)
    local g = grads(A)
    zero_grads(A)
    return g, loss
  end

  -- 1. virtual step w -> w'
  local w0 = self:_virtual_step(xt, yt, eta, w_opt)
  -- 2. d_alpha and v at w' on the validation batch (the virtual model's
  --    running statistics are thrown away, as DARTS' copy is)
  local stats = snapshot(self.stats)
  zero_grads(A)
  local lv = self.loss(net, xv, yv)
  lv:backward()
  local val_loss = lv:item()
  dist.allreduce_grads(W)
  local dalpha, v = grads(A), grads(W)
  zero_grads(W)
  zero_grads(A)
  copy_back(self.stats, stats)
  copy_back(W, w0)
  -- 3. finite-difference Hessian-vector product, R = r / ||v||
  local sq = 0
  nasrt.no_grad(function()
    for _, g in ipairs(v) do
      if g then sq = sq + F.sum(F.mul(g, g)):item() end
    end
  end)
  local norm = math.sqrt(sq)
  if norm > 0 then
    local R = self.r / norm
    local function alpha_grads_at(sign)
      nasrt.no_grad(function()
        for i, p in ipairs(W) do
          p:copy_(w0[i])
          if v[i] then p:add_(v[i], sign * R) end
        end
      end)
      frozen(W, function() self.loss(net, xt, yt):backward() end)
      local g = grads(A)
      zero_grads(A)
      return g
    end
    local gp = alpha_grads_at(1)
    local gn = alpha_grads_at(-1)
    copy_back(W, w0)
    -- 4. grad = d_alpha - eta (g+ - g-) / (2R)
    nasrt.no_grad(function()
      for k, a in ipairs(A) do
        if gp[k] or gn[k] then
          local h = gp[k] and gp[k]:clone() or nasrt.zeros(a:shape())
          if gn[k] then h:add_(gn[k], -1) end
          if not dalpha[k] then dalpha[k] = nasrt.zeros(a:shape()) end
          dalpha[k]:add_(h, -eta / (2 * R))
        end
      end
    end)
  end
  return dalpha, val_loss
end

--- One architecture step: `gradient(...)`, then Adam on the alphas.
-- @treturn number the validation loss
function Architect:step(xt, yt, xv, yv, eta, w_opt)
  local g, loss = self:gradient(xt, yt, xv, yv, eta, w_opt)
  self.optimizer:zero_grad()
  for k, a in ipairs(self.alphas) do
    if g[k] then a.grad = g[k] end
  end
  self.optimizer:step()
  self.optimizer:zero_grad()
  return loss
end

function Architect:state_dict() return self.optimizer:state_dict() end
function Architect:load_state_dict(sd) self.optimizer:load_state_dict(sd) end

-- ------------------------------------------------------------ search data

--- The DARTS search data: the training set split in two halves
-- (`train_portion`, DARTS' indices[:split] / indices[split:]), the first
-- trains the weights, the second the architecture; the test set is never
-- read.  Returns loaders with state (exact resume) and a non-augmented,
-- unshuffled loader over the validation half for the supernet accuracy.
-- @tparam table cfg {dataset="fashion_mnist"|"cifar10"|"cifar100",
--   data_root="" (default folder), train_portion=0.5, train_limit=0,
--   val_limit=0 (0 = the whole half), batch_size=64, augment=true, seed=2,
--   size=0 (input side; smaller images are average-pooled down)}
-- @treturn table {train=, val=, eval=, in_channels=, classes=, size=,
--   n_train=, n_val=, prep=function(x) -> x at the input size}
function M.search_data(cfg)
  local name = cfg.dataset or "fashion_mnist"
  if not nasrt.data.stats[name] or not nasrt.data[name] then
    error(("search_data: unknown dataset '%s' (fashion_mnist, cifar10, cifar100)"):format(
      tostring(name)), 0)
  end
  local root = cfg.data_root
  if root == "" then root = nil end
  local ds, err = nasrt.data[name] { split = "train", root = root }
  if not ds then error(err, 0) end
  local shape = ds:shape()
  local train_half, val_half = nasrt.data.split(ds, { fraction = cfg.train_portion or 0.5 })
  local stats = nasrt.data.stats[name]
  local norm = { mean = stats.mean, std = stats.std }
  local aug = { mean = stats.mean, std = stats.std }
  if cfg.augment ~= false then aug.crop, aug.flip = 4, true end
  local function limit(n) return (n and n > 0) and n or nil end
  local bs, seed = cfg.batch_size or 64, cfg.seed or 0
  -- under mpirun each rank keeps its shard of every batch (dist.sharded)
  local d = {
    train = dist.sharded(nasrt.data.loader(train_half, { batch_size = bs, seed = seed,
      augment = aug, limit = limit(cfg.train_limit) })),
    val = dist.sharded(nasrt.data.loader(val_half, { batch_size = bs, seed = seed + 7919,
      augment = aug, limit = limit(cfg.val_limit) })),
    eval = dist.sharded(nasrt.data.loader(val_half, { batch_size = bs, shuffle = false,
      augment = norm, limit = limit(cfg.val_limit) })),
    in_channels = shape[1], classes = ds:classes(), native = shape[2],
  }
  d.n_train, d.n_val = d.train:size(), d.val:size()
  local size = cfg.size or 0
  if size <= 0 then size = shape[2] end
  if size > shape[2] or shape[2] ~= shape[3] then
    error(("search_data: size %d: the %s images are %dx%d (size must be <= their side)"):format(
      size, name, shape[2], shape[3]), 0)
  end
  d.size = size
  if size == shape[2] then
    d.prep = function(x) return x end
  else
    d.prep = function(x)
      return nasrt.no_grad(function() return F.adaptive_avg_pool2d(x, size) end)
    end
  end
  return d
end

--- Fraction of correct argmax predictions.
function M.accuracy(logits, y)
  local p = F.argmax(logits, 2):totable()
  local t = y:totable()
  local ok = 0
  for i = 1, #t do if p[i] == t[i] then ok = ok + 1 end end
  return ok / #t
end

--- Loss and accuracy of the supernet on a whole loader, in eval mode (BN
-- running statistics; DARTS' infer()), without a tape.  The net is put
-- back in training mode.
-- @treturn number mean loss
-- @treturn number accuracy
function M.evaluate(net, loader, prep)
  dist.average_buffers(net)
  net:eval()
  local ok, loss, acc = pcall(nasrt.no_grad, function()
    local sl, sa, n = 0, 0, 0
    loader:epoch(0)
    for x, y in loader:iter() do
      x = prep and prep(x) or x
      local logits = net(x)
      local b = x:shape()[1]
      sl = sl + F.cross_entropy(logits, y):item() * b
      sa = sa + M.accuracy(logits, y) * b
      n = n + b
    end
    sl, sa, n = dist.sum(sl, sa, n) -- each rank saw its shard of every batch
    return sl / math.max(n, 1), sa / math.max(n, 1)
  end)
  net:train()
  if not ok then error(loss, 0) end
  return loss, acc
end

--- The cosine learning rate of (0-based) epoch e of `epochs`:
-- lr_min + (lr - lr_min)(1 + cos(pi e / epochs)) / 2.
function M.cosine_lr(lr, lr_min, e, epochs)
  return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * e / epochs)) / 2
end

-- ------------------------------------------------------------ checkpoints

--- Saves everything a search needs to continue exactly: the network's
-- state dict (weights, BN statistics, alphas), the optimizers, the loader
-- positions, the global RNG (Gumbel noise, dropout) and `pos`.
-- @tparam table run the run object
-- @tparam table parts {net=, w_opt=, a_opt=, train=, val=}
-- @tparam table pos {epoch=, step=, epoch_done=, ...} (numbers, strings, booleans)
function M.save_checkpoint(run, parts, pos)
  dist.average_buffers(parts.net)
  run:save {
    format = "nasrt.darts_search", version = 1,
    pos = pos,
    model = parts.net:state_dict(),
    w_opt = parts.w_opt:state_dict(),
    a_opt = parts.a_opt and parts.a_opt:state_dict() or nil,
    train = parts.train:state(),
    val = parts.val:state(),
    rng = nasrt.get_rng_state(),
  }
end

--- Restores the last checkpoint of a resumed run into `parts` and returns
-- its `pos`; nil on a fresh run or when no checkpoint was written yet.
-- (Run:load cuts log.jsonl back to the checkpoint, so the log of a run
-- killed between two checkpoints reads as one run.)
function M.restore_checkpoint(run, parts)
  if not run.resumed then return nil end
  local st = run:load()
  if not st then return nil end
  if st.format ~= "nasrt.darts_search" then
    error(("resume: %s is not a DARTS-search checkpoint"):format(run:path("checkpoint.nrck")), 0)
  end
  parts.net:load_state_dict(st.model)
  parts.w_opt:load_state_dict(st.w_opt)
  if parts.a_opt and st.a_opt then parts.a_opt:load_state_dict(st.a_opt) end
  parts.train:set_state(st.train)
  parts.val:set_state(st.val)
  nasrt.set_rng_state(st.rng)
  run:log { kind = "resume", step = st.pos.step, epoch = st.pos.epoch }
  return st.pos
end

--- True when the search should stop here: Ctrl-C, or the test hook
-- `stop_after_steps` (a fresh run acts as if Ctrl-C came after that many
-- steps; a resumed run ignores it, so it can finish).
function M.stop_requested(run, cfg, step)
  if run:stop_requested() then return true end
  local k = cfg.stop_after_steps or 0
  return k > 0 and not run.resumed and step >= k
end

-- ------------------------------------------------------------ architecture

--- The raw architecture parameters as Lua tables, by name
-- ({alphas_normal = {{...}, ...}, ...}).
function M.raw_alphas(net)
  local out = {}
  for _, nt in ipairs(net:named_arch_parameters()) do out[nt[1]] = nt[2]:totable() end
  return out
end

local has_dot
local function dot_available()
  if has_dot == nil then
    has_dot = os.execute("command -v dot >/dev/null 2>&1") == true
  end
  return has_dot
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- Writes the found architecture: arch.json ({type="darts", method=,
-- genotype=, genotype_text=, ...extra}), genotype.txt, normal.dot and
-- reduce.dot, and (render=true, when Graphviz' `dot` is on PATH) their SVGs.
-- @treturn string the genotype text
function M.write_architecture(run, method, genotype, extra, render)
  local text = supernet.genotype_to_string(genotype)
  local arch = { type = "darts", method = method, genotype = genotype, genotype_text = text }
  for k, v in pairs(extra or {}) do arch[k] = v end
  run:write_json("arch.json", arch)
  run:write_text("genotype.txt", text .. "\n")
  for _, which in ipairs { "normal", "reduce" } do
    run:write_text(which .. ".dot", supernet.genotype_dot(genotype, which))
    if render and not run.muted and dot_available() then
      os.execute(("dot -Tsvg %s -o %s >/dev/null 2>&1"):format(
        shell_quote(run:path(which .. ".dot")), shell_quote(run:path(which .. ".svg"))))
    end
  end
  return text
end

--- Checks a DARTS-space genotype: `steps` nodes with 2 (op, input) pairs
-- each per cell type, ops from `primitives` and never `none`, inputs of
-- node i in 0..i+1.  Returns true or nil, message (specs use it).
function M.check_genotype(g, primitives, steps)
  steps = steps or 4
  local ok_op = {}
  for _, p in ipairs(primitives or nasrt.blocks.DARTS_PRIMITIVES) do ok_op[p] = true end
  for _, which in ipairs { "normal", "reduce" } do
    local gene = g[which]
    if type(gene) ~= "table" or #gene ~= 2 * steps then
      return nil, ("%s: expected %d (op, input) pairs"):format(which, 2 * steps)
    end
    for m, e in ipairs(gene) do
      local node = (m - 1) // 2
      if not ok_op[e[1]] or e[1] == "none" then
        return nil, ("%s[%d]: op %s is not a primitive"):format(which, m, tostring(e[1]))
      end
      if math.type(e[2]) ~= "integer" or e[2] < 0 or e[2] > node + 1 then
        return nil, ("%s[%d]: input %s out of range 0..%d"):format(which, m, tostring(e[2]), node + 1)
      end
    end
  end
  return true
end

return M
