--- nasrt.optim: optimizers, learning-rate schedules and gradient clipping.
--
-- The update formulas are torch.optim's (1.13) and run in C over each
-- parameter tensor (`nasrt._optim`).  Before it touches anything, `step()`
-- checks that every gradient is finite and raises a "divergence: ..." error
-- naming the parameter otherwise (`Optimizer:check_finite`).  `step()`
-- skips parameters whose `.grad` is nil: they and their state (momentum
-- buffers, Adam moments, step counts) stay untouched, which single-path NAS
-- (SPOS, FairNAS) relies on.  `zero_grad()` sets every gradient to nil
-- (PyTorch's set_to_none).
--
-- Parameters are given as a list of tensors or as a list of groups
-- `{params = {...}, lr = ...}` whose own settings override the defaults.
--
-- Data-parallel runs (nasrt.dist, mpirun): `step()` first averages the
-- gradients of its parameters over the ranks through one flat buffer
-- (unless `clip_grad_norm` already did for this step, or the optimizer's
-- field `dist_sync` is false); a parameter that has a gradient on any rank
-- then has one on all, so every rank makes the same update.
-- @module nasrt.optim
-- @usage
-- local opt = optim.SGD(net:parameters(), {lr = 0.1, momentum = 0.9, nesterov = true,
--                                         weight_decay = 5e-4})
-- local sched = optim.CosineLR(opt, epochs)
-- for epoch = 1, epochs do
--   for x, y in loader:iter() do
--     opt:zero_grad()
--     local loss = F.cross_entropy(net(x), y)
--     loss:backward()
--     opt:step()
--   end
--   sched:step()
-- end
local core = require "nasrt.core"
local dist = require "nasrt.dist"
local guard = require "nasrt.guard"
local C = assert(core._optim, "nasrt.optim: the C core lacks _optim (bind_optim.c not built)")

local optim = {}

local is_tensor = core.is_tensor

local function copy_list(t)
  return table.move(t, 1, #t, 1, {})
end

-- A number option that must lie in [lo, hi] (NaN never does).
local function check_range(fn, name, v, lo, hi, level)
  if type(v) ~= "number" or not (v >= lo and v <= hi) then
    error(("%s: invalid %s: %s (expected a number in [%g, %g])"):format(fn, name, tostring(v),
      lo, hi), level or 4)
  end
end

-- i names a param group of opt (nil: the first).
local function group_index(fn, groups, i)
  if i == nil then return 1 end
  if math.type(i) ~= "integer" or i < 1 or i > #groups then
    error(("%s: group %s out of range 1..%d"):format(fn, tostring(i), #groups), 3)
  end
  return i
end

local function check_closure(fn, closure)
  if closure ~= nil and type(closure) ~= "function" then
    error(("%s: closure must be a function, got %s"):format(fn, type(closure)), 3)
  end
end

-- ------------------------------------------------------------ Optimizer

--- Base class of the optimizers.
-- @type Optimizer
local Optimizer = {}
Optimizer.__index = Optimizer
Optimizer.__name = "Optimizer"
optim.Optimizer = Optimizer

local function class(name, parent)
  local cls = setmetatable({}, { __index = parent })
  cls.__index = cls
  cls.__name = name
  cls.__tostring = parent and parent.__tostring
  return cls
end

-- Validates a group's settings: every key must be a known hyper-parameter.
local function fill_group(g, defaults, fn, i)
  local group = {}
  for k, v in pairs(g) do
    if k ~= "params" and defaults[k] == nil then
      error(("%s: param group %d: unknown option '%s'"):format(fn, i, tostring(k)), 4)
    end
    group[k] = v
  end
  for k, v in pairs(defaults) do
    if group[k] == nil then group[k] = v end
  end
  return group
end

local function check_params(list, fn, i)
  if type(list) ~= "table" then
    error(("%s: param group %d: params must be a list of tensors"):format(fn, i), 4)
  end
  for j, p in ipairs(list) do
    if not is_tensor(p) then
      error(("%s: param group %d: entry %d is a %s, expected a tensor"):format(fn, i, j, type(p)), 4)
    end
    if not p.is_leaf then
      error(("%s: param group %d: entry %d is not a leaf tensor (can't optimize a " ..
        "non-leaf tensor)"):format(fn, i, j), 4)
    end
  end
  return copy_list(list)
end

-- Sets up param_groups and state; `defaults` holds every hyper-parameter
-- with its default (sentinel false means "required").
local function init_optimizer(self, params, opts, defaults, fn)
  if type(params) ~= "table" then
    error(fn .. ": params must be a list of tensors or of param groups", 3)
  end
  if type(params.parameters) == "function" then
    error(fn .. ": pass model:parameters(), not the model", 3)
  end
  if #params == 0 then error(fn .. ": optimizer got an empty parameter list", 3) end
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: options must be a table, got %s"):format(fn, type(opts)), 3)
  end
  opts = opts or {}
  local d = {}
  for k, v in pairs(defaults) do d[k] = v end
  for k, v in pairs(opts) do
    if defaults[k] == nil then
      local names = {}
      for n in pairs(defaults) do names[#names + 1] = n end
      table.sort(names)
      error(("%s: unknown option '%s' (expected one of %s)"):format(fn, tostring(k),
        table.concat(names, ", ")), 3)
    end
    d[k] = v
  end
  self.defaults = d
  self.param_groups = {}
  self.state = {}       -- tensor -> per-parameter state table
  local groups = is_tensor(params[1]) and { { params = params } } or params
  for i, g in ipairs(groups) do self:add_param_group(g, i) end
end

--- Adds a group {params = {...}, <settings>}; unset settings take the defaults.
function Optimizer:add_param_group(g, i)
  i = i or #self.param_groups + 1
  local fn = self.__name
  if type(g) ~= "table" or g.params == nil then
    error(("%s: param group %d must be a table {params = {...}, ...}"):format(fn, i), 3)
  end
  local group = fill_group(g, self.defaults, fn, i)
  group.params = check_params(g.params, fn, i)
  for k, v in pairs(group) do
    if v == false and self._required[k] then
      error(("%s: option '%s' is required"):format(fn, k), 3)
    end
  end
  self:_check_group(group)
  local seen = {}
  for _, og in ipairs(self.param_groups) do
    for _, p in ipairs(og.params) do seen[p] = true end
  end
  for _, p in ipairs(group.params) do
    if seen[p] then error(fn .. ": some parameters appear in more than one parameter group", 3) end
    seen[p] = true
  end
  table.insert(self.param_groups, group)
end

function Optimizer:_check_group() end

--- Sets every parameter's gradient to nil.
function Optimizer:zero_grad()
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do p:zero_grad() end
  end
  if dist.active() then dist.consumed(self:parameters()) end
end

-- data-parallel: the gradients of the whole batch before the update
local function sync_before_step(self)
  if self.dist_sync ~= false and dist.active() then
    local ps = self:parameters()
    dist.sync_grads(ps)
    dist.consumed(ps)
  end
end

--- Learning rate of group i (default 1).
function Optimizer:get_lr(i)
  return self.param_groups[group_index(self.__name .. ".get_lr", self.param_groups, i)].lr
end

--- Sets the learning rate of every group (or of group i).
function Optimizer:set_lr(lr, i)
  check_range(self.__name .. ".set_lr", "learning rate", lr, 0, math.huge, 3)
  if i then
    i = group_index(self.__name .. ".set_lr", self.param_groups, i)
    self.param_groups[i].lr = lr
  else
    for _, g in ipairs(self.param_groups) do g.lr = lr end
  end
end

--- All parameters of all groups, in order.
function Optimizer:parameters()
  local out = {}
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do out[#out + 1] = p end
  end
  return out
end

--- State for checkpoints: per-parameter state by 1-based index over all
-- groups (tensors shared, not copied) and the groups' settings with their
-- parameters as indices, like torch.
-- @treturn table {state = {[i] = {...}}, param_groups = {{lr=..., params={1,2,...}}, ...}}
function Optimizer:state_dict()
  local state, groups, idx = {}, {}, 0
  for gi, g in ipairs(self.param_groups) do
    local gd = { params = {} }
    for k, v in pairs(g) do
      if k ~= "params" then gd[k] = type(v) == "table" and copy_list(v) or v end
    end
    for _, p in ipairs(g.params) do
      idx = idx + 1
      gd.params[#gd.params + 1] = idx
      local st = self.state[p]
      if st then
        local s = {}
        for k, v in pairs(st) do s[k] = v end
        state[idx] = s
      end
    end
    groups[gi] = gd
  end
  return { state = state, param_groups = groups }
end

--- Restores a state dict made by `state_dict()` of an optimizer over the
-- same parameter list (tensors are cloned).
-- @raise when the groups or parameter counts or state shapes differ
function Optimizer:load_state_dict(sd)
  local fn = self.__name .. ".load_state_dict"
  if type(sd) ~= "table" or type(sd.param_groups) ~= "table" or type(sd.state) ~= "table" then
    error(fn .. ": expected {state = ..., param_groups = ...}", 2)
  end
  if #sd.param_groups ~= #self.param_groups then
    error(("%s: loaded state dict has %d parameter groups, the optimizer has %d"):format(fn,
      #sd.param_groups, #self.param_groups), 2)
  end
  local byidx = {}
  for gi, g in ipairs(self.param_groups) do
    local sg = sd.param_groups[gi]
    if type(sg.params) ~= "table" or #sg.params ~= #g.params then
      error(("%s: parameter group %d has %d parameters, the optimizer's has %d"):format(fn, gi,
        type(sg.params) == "table" and #sg.params or 0, #g.params), 2)
    end
    for j, p in ipairs(g.params) do byidx[sg.params[j]] = p end
  end
  local newstate = {}
  for idx, s in pairs(sd.state) do
    local p = byidx[tonumber(idx)]
    if not p then error(("%s: state for unknown parameter index %s"):format(fn, tostring(idx)), 2) end
    local st = {}
    for k, v in pairs(s) do
      if is_tensor(v) then
        local a, b = v:shape(), p:shape()
        local same = #a == #b
        for i = 1, #a do same = same and a[i] == b[i] end
        if not same then
          error(("%s: state '%s' of parameter %s has shape [%s], the parameter is [%s]"):format(fn,
            k, tostring(idx), table.concat(a, ","), table.concat(b, ",")), 2)
        end
        st[k] = v:detach():clone()
      else
        st[k] = v
      end
    end
    newstate[p] = st
  end
  for gi, g in ipairs(self.param_groups) do
    for k, v in pairs(sd.param_groups[gi]) do
      if k ~= "params" then g[k] = type(v) == "table" and copy_list(v) or v end
    end
  end
  self.state = newstate
end

function Optimizer:__tostring()
  local lines = { self.__name .. " (" }
  for i, g in ipairs(self.param_groups) do
    lines[#lines + 1] = ("Parameter Group %d"):format(i - 1)
    local keys = {}
    for k in pairs(g) do if k ~= "params" then keys[#keys + 1] = k end end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v = g[k]
      if type(v) == "table" then v = "(" .. table.concat(v, ", ") .. ")" end
      lines[#lines + 1] = ("    %s: %s"):format(k, tostring(v))
    end
  end
  lines[#lines + 1] = ")"
  return table.concat(lines, "\n")
end

-- ------------------------------------------------------------ divergence

local all_finite = core.F.all_finite
local GRAD = { grad = true }

-- tensor -> dotted name (weak keys), shared with nn's named_parameters()
core._param_names = core._param_names or setmetatable({}, { __mode = "k" })

--- Gives tensors names for the divergence message of `step()`: a list of
-- {name, tensor} pairs, like `module:named_parameters()` (whose names are
-- registered anyway) or a supernet's `named_arch_parameters()`.
function optim.name_parameters(named)
  if type(named) ~= "table" then
    error(("optim.name_parameters: expected a list of {name, tensor}, got %s"):format(type(named)), 2)
  end
  for i, nt in ipairs(named) do
    if type(nt) ~= "table" or type(nt[1]) ~= "string" or not is_tensor(nt[2]) then
      error(("optim.name_parameters: entry %d must be {name, tensor}"):format(i), 2)
    end
  end
  for _, nt in ipairs(named) do core._param_names[nt[2]] = nt[1] end
end

local function value_str(v)
  if v ~= v then return "NaN" end
  return v > 0 and "+Inf" or "-Inf"
end

--- Raises the divergence error when a gradient of the optimizer's
-- parameters holds a NaN or an Inf, before any parameter is touched (so
-- the weights stay the last good ones).  The message starts with
-- "divergence:" and names the parameter (its dotted name when it came
-- from a module's `parameters()`), its shape, the bad element and value;
-- nasrt.recipe adds the step and keeps the last good checkpoint.
-- @raise "divergence: SGD.step: the gradient of parameter 'cells.1.op.weight'
--   [8,8,3,3] is NaN at element 17"
function Optimizer:check_finite()
  for gi, g in ipairs(self.param_groups) do
    local ok, i, k, v = all_finite(g.params, GRAD)
    if not ok then
      local p = g.params[i]
      local name = core._param_names[p]
      local what = name and ("parameter '%s'"):format(name)
        or ("parameter %d of group %d"):format(i, gi)
      error(("divergence: %s.step: the gradient of %s [%s] is %s at element %d"):format(
        self.__name, what, table.concat(p:shape(), ","), value_str(v), k), 0)
    end
  end
end

-- ------------------------------------------------------------ SGD

--- Stochastic gradient descent with momentum (torch.optim.SGD):
-- d = g + wd*p; buf = momentum*buf + (1-dampening)*d (buf = d on the first
-- step); d = nesterov and d + momentum*buf or buf; p = p - lr*d.
-- @type SGD
-- @tparam {tensor,...}|{table,...} params tensors or param groups
-- @tparam table opts {lr (required), momentum=0, dampening=0, nesterov=false, weight_decay=0}
local SGD = class("SGD", Optimizer)
optim.SGD = SGD
SGD._required = { lr = true }

function SGD.new(params, opts)
  local self = setmetatable({}, SGD)
  init_optimizer(self, params, opts,
    { lr = false, momentum = 0, dampening = 0, nesterov = false, weight_decay = 0 }, "SGD")
  return self
end
setmetatable(SGD, { __index = Optimizer, __call = function(_, ...) return SGD.new(...) end })

function SGD:_check_group(g)
  if type(g.lr) ~= "number" or not (g.lr >= 0) then error("SGD: invalid learning rate: " .. tostring(g.lr), 4) end
  check_range("SGD", "momentum value", g.momentum, 0, math.huge)
  check_range("SGD", "dampening value", g.dampening, 0, 1)
  check_range("SGD", "weight_decay value", g.weight_decay, 0, math.huge)
  if type(g.nesterov) ~= "boolean" then error("SGD: nesterov must be a boolean, got " .. type(g.nesterov), 4) end
  if g.nesterov and (g.momentum <= 0 or g.dampening ~= 0) then
    error("SGD: Nesterov momentum requires a momentum and zero dampening", 4)
  end
end

--- One update of every parameter that has a gradient.
-- @tparam[opt] function closure re-evaluates the model and returns the loss
-- @return the closure's loss, if any
function SGD:step(closure)
  check_closure("SGD.step", closure)
  local loss
  if closure then loss = closure() end
  sync_before_step(self)
  self:check_finite()
  local step = C.sgd_step
  for _, g in ipairs(self.param_groups) do
    local lr, mom, damp, wd, nest = g.lr, g.momentum, g.dampening, g.weight_decay, g.nesterov
    for _, p in ipairs(g.params) do
      local st = self.state[p]
      local r = step(p, st and st.momentum_buffer, lr, mom, damp, wd, nest)
      if r ~= false then
        if not st then
          st = {}
          self.state[p] = st
        end
        if r ~= true then st.momentum_buffer = r end
      end
    end
  end
  return loss
end

-- ------------------------------------------------------------ Adam

--- Adam (torch.optim.Adam): L2 weight decay added to the gradient, bias
-- corrected moments, denominator sqrt(v)/sqrt(1-beta2^t) + eps.
-- @type Adam
-- @tparam {tensor,...}|{table,...} params
-- @tparam[opt] table opts {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=0, amsgrad=false}
local Adam = class("Adam", Optimizer)
optim.Adam = Adam
Adam._required = {}
Adam._decoupled = false

local function adam_new(cls, params, opts, wd)
  local self = setmetatable({}, cls)
  init_optimizer(self, params, opts,
    { lr = 1e-3, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = wd, amsgrad = false },
    cls.__name)
  return self
end

function Adam.new(params, opts) return adam_new(Adam, params, opts, 0) end
setmetatable(Adam, { __index = Optimizer, __call = function(_, ...) return Adam.new(...) end })

function Adam:_check_group(g)
  local fn = self.__name
  if type(g.lr) ~= "number" or not (g.lr >= 0) then error(fn .. ": invalid learning rate: " .. tostring(g.lr), 4) end
  check_range(fn, "epsilon value", g.eps, 0, math.huge)
  if type(g.amsgrad) ~= "boolean" then error(fn .. ": amsgrad must be a boolean, got " .. type(g.amsgrad), 4) end
  local b = g.betas
  if type(b) ~= "table" or type(b[1]) ~= "number" or type(b[2]) ~= "number" then
    error(fn .. ": betas must be a pair {beta1, beta2}", 4)
  end
  if not (b[1] >= 0 and b[1] < 1) then error(fn .. ": invalid beta parameter at index 1: " .. b[1], 4) end
  if not (b[2] >= 0 and b[2] < 1) then error(fn .. ": invalid beta parameter at index 2: " .. b[2], 4) end
  check_range(fn, "weight_decay value", g.weight_decay, 0, math.huge)
end

--- One update of every parameter that has a gradient.
function Adam:step(closure)
  check_closure(self.__name .. ".step", closure)
  local loss
  if closure then loss = closure() end
  sync_before_step(self)
  self:check_finite()
  local step = C.adam_step
  local decoupled = self._decoupled
  for _, g in ipairs(self.param_groups) do
    local lr, b1, b2, eps, wd, ams = g.lr, g.betas[1], g.betas[2], g.eps, g.weight_decay, g.amsgrad
    for _, p in ipairs(g.params) do
      local st = self.state[p]
      local t = (st and st.step or 0) + 1
      local m, v, vmax = step(p, st and st.exp_avg, st and st.exp_avg_sq,
        st and st.max_exp_avg_sq, t, lr, b1, b2, eps, wd, decoupled, ams)
      if m ~= false then
        if not st then
          st = {}
          self.state[p] = st
        end
        st.step, st.exp_avg, st.exp_avg_sq, st.max_exp_avg_sq = t, m, v, vmax
      end
    end
  end
  return loss
end

--- AdamW (torch.optim.AdamW): decoupled weight decay p = p*(1 - lr*wd)
-- before the Adam update; weight_decay defaults to 1e-2.
-- @type AdamW
local AdamW = class("AdamW", Adam)
optim.AdamW = AdamW
AdamW._decoupled = true
function AdamW.new(params, opts) return adam_new(AdamW, params, opts, 1e-2) end
setmetatable(AdamW, { __index = Adam, __call = function(_, ...) return AdamW.new(...) end })

-- ------------------------------------------------------------ gradients

--- Total norm of the parameters' gradients (as one vector), skipping
-- parameters without a gradient.
-- @tparam {tensor,...} params
-- @tparam[opt=2] number norm_type math.huge for the max norm
-- @treturn number
function optim.grad_norm(params, norm_type)
  return C.grad_norm(params, norm_type)
end

--- torch.nn.utils.clip_grad_norm_: scales all gradients by
-- min(1, max_norm / (total_norm + 1e-6)).  In a data-parallel run the
-- gradients are averaged over the ranks first (the norm is the global
-- batch's), and the next optimizer step does not average them again.
-- @tparam {tensor,...} params
-- @tparam number max_norm
-- @tparam[opt=2] number norm_type
-- @treturn number the total norm before clipping
function optim.clip_grad_norm(params, max_norm, norm_type)
  if dist.active() then dist.sync_grads(params) end
  return C.clip_grad_norm(params, max_norm, norm_type)
end

-- ------------------------------------------------------------ schedules

--- Base class of the learning-rate schedules (torch.optim.lr_scheduler):
-- the constructor sets every group's lr to its epoch-0 value; call
-- `step()` once per epoch (or iteration) after `optimizer:step()`.
-- @type LRScheduler
local LRScheduler = {}
LRScheduler.__index = LRScheduler
LRScheduler.__name = "LRScheduler"
optim.LRScheduler = LRScheduler

local function sched_init(self, opt, last_epoch)
  if not guard.isa(opt, Optimizer) then
    error(("%s: expected an optimizer, got %s"):format(self.__name, guard.what(opt)), 3)
  end
  self.optimizer = opt
  last_epoch = last_epoch or -1
  if math.type(last_epoch) ~= "integer" or last_epoch < -1 then
    error(("%s: last_epoch must be an integer >= -1, got %s"):format(self.__name,
      tostring(last_epoch)), 3)
  end
  for i, g in ipairs(opt.param_groups) do
    if last_epoch == -1 then
      if g.initial_lr == nil then g.initial_lr = g.lr end
    elseif g.initial_lr == nil then
      error(("%s: param 'initial_lr' is not specified in param_groups[%d] when resuming"):format(
        self.__name, i), 3)
    end
  end
  self.base_lrs = {}
  for i, g in ipairs(opt.param_groups) do self.base_lrs[i] = g.initial_lr end
  self.last_epoch = last_epoch
  self:_initial_step()
end

function LRScheduler:_initial_step()
  self._step_count = 0
  self:step()
end

--- Advances the schedule by one epoch (or jumps to `epoch`, using the
-- closed form where the schedule has one) and sets the groups' lr.
function LRScheduler:step(epoch)
  if epoch ~= nil and (math.type(epoch) ~= "integer" or epoch < 0) then
    error(("%s.step: epoch must be a non-negative integer, got %s"):format(self.__name,
      tostring(epoch)), 2)
  end
  self._step_count = self._step_count + 1
  local values
  if epoch == nil then
    self.last_epoch = self.last_epoch + 1
    values = self:_compute()
  else
    self.last_epoch = epoch
    values = self._closed_form and self:_closed_form() or self:_compute()
  end
  for i, g in ipairs(self.optimizer.param_groups) do g.lr = values[i] end
  self._last_lr = copy_list(values)
end

--- The learning rates of all groups after the last step (a list).
function LRScheduler:get_last_lr()
  return copy_list(self._last_lr)
end

--- The current learning rate of group i (default 1).
function LRScheduler:get_lr(i)
  if i ~= nil and (math.type(i) ~= "integer" or i < 1 or i > #self._last_lr) then
    error(("%s.get_lr: group %s out of range 1..%d"):format(self.__name, tostring(i),
      #self._last_lr), 2)
  end
  return self._last_lr[i or 1]
end

--- {last_epoch=, _step_count=, base_lrs=, ...} for checkpoints.
function LRScheduler:state_dict()
  local sd = {}
  for k, v in pairs(self) do
    if k ~= "optimizer" then sd[k] = type(v) == "table" and copy_list(v) or v end
  end
  return sd
end

function LRScheduler:load_state_dict(sd)
  if type(sd) ~= "table" or type(sd.last_epoch) ~= "number" then
    error(("%s.load_state_dict: expected a state dict from state_dict(), got %s"):format(
      self.__name, guard.what(sd)), 2)
  end
  for k, v in pairs(sd) do self[k] = type(v) == "table" and copy_list(v) or v end
end

local function sched_class(name)
  local cls = setmetatable({}, { __index = LRScheduler })
  cls.__index = cls
  cls.__name = name
  return cls
end

local function group_lrs(self)
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr end
  return out
end

--- Cosine annealing (torch's CosineAnnealingLR, recursive form):
-- lr_t = eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2.
-- @type CosineLR
-- @tparam Optimizer opt
-- @tparam int T_max steps in one half period
-- @tparam[opt=0] number eta_min
-- @tparam[opt=-1] int last_epoch
local CosineLR = sched_class("CosineLR")
optim.CosineLR = CosineLR
optim.CosineAnnealingLR = CosineLR

function CosineLR.new(opt, T_max, eta_min, last_epoch)
  if type(T_max) ~= "number" or not (T_max > 0) or T_max == math.huge then
    error(("CosineLR: T_max must be a positive number, got %s"):format(tostring(T_max)), 2)
  end
  if eta_min ~= nil and (type(eta_min) ~= "number" or eta_min ~= eta_min) then
    error(("CosineLR: eta_min must be a number, got %s"):format(tostring(eta_min)), 2)
  end
  local self = setmetatable({ T_max = T_max, eta_min = eta_min or 0 }, CosineLR)
  sched_init(self, opt, last_epoch)
  return self
end
setmetatable(CosineLR, { __index = LRScheduler, __call = function(_, ...) return CosineLR.new(...) end })

function CosineLR:_compute()
  local t, T, emin, pi, cos = self.last_epoch, self.T_max, self.eta_min, math.pi, math.cos
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do
    local base = self.base_lrs[i]
    if t == 0 then
      out[i] = g.lr
    elseif self._step_count == 1 and t > 0 then
      out[i] = emin + (base - emin) * (1 + cos(t * pi / T)) / 2
    elseif (t - 1 - T) % (2 * T) == 0 then
      out[i] = g.lr + (base - emin) * (1 - cos(pi / T)) / 2
    else
      out[i] = (1 + cos(pi * t / T)) / (1 + cos(pi * (t - 1) / T)) * (g.lr - emin) + emin
    end
  end
  return out
end

function CosineLR:_closed_form()
  local out = {}
  for i, base in ipairs(self.base_lrs) do
    out[i] = self.eta_min + (base - self.eta_min) *
      (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
  end
  return out
end

--- Linear ramp of the lr factor from start_factor to end_factor over
-- total_iters steps (torch's LinearLR; a warmup when start_factor < 1).
-- @type LinearLR
-- @tparam Optimizer opt
-- @tparam[opt] table opts {start_factor=1/3, end_factor=1, total_iters=5}
local LinearLR = sched_class("LinearLR")
optim.LinearLR = LinearLR

function LinearLR.new(opt, opts, last_epoch)
  if opts ~= nil and type(opts) ~= "table" then
    error(("LinearLR: options must be a table, got %s"):format(type(opts)), 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "start_factor" and k ~= "end_factor" and k ~= "total_iters" then
      error(("LinearLR: unknown option '%s'"):format(tostring(k)), 2)
    end
  end
  local self = setmetatable({ start_factor = opts.start_factor or 1 / 3,
                              end_factor = opts.end_factor or 1.0,
                              total_iters = opts.total_iters or 5 }, LinearLR)
  if type(self.start_factor) ~= "number" or not (self.start_factor > 0 and self.start_factor <= 1) then
    error(("LinearLR: start_factor must be in (0, 1], got %s"):format(tostring(self.start_factor)), 2)
  end
  if type(self.end_factor) ~= "number" or not (self.end_factor >= 0 and self.end_factor <= 1) then
    error(("LinearLR: end_factor must be in [0, 1], got %s"):format(tostring(self.end_factor)), 2)
  end
  if math.type(self.total_iters) ~= "integer" or self.total_iters < 1 then
    error(("LinearLR: total_iters must be a positive integer, got %s"):format(
      tostring(self.total_iters)), 2)
  end
  sched_init(self, opt, last_epoch)
  return self
end
setmetatable(LinearLR, { __index = LRScheduler, __call = function(_, ...) return LinearLR.new(...) end })

function LinearLR:_compute()
  local t, s, e, n = self.last_epoch, self.start_factor, self.end_factor, self.total_iters
  local out = group_lrs(self)
  if t == 0 then
    for i = 1, #out do out[i] = out[i] * s end
  elseif t <= n then
    for i = 1, #out do out[i] = out[i] * (1 + (e - s) / (n * s + (t - 1) * (e - s))) end
  end
  return out
end

function LinearLR:_closed_form()
  local out = {}
  local t = math.min(self.total_iters, self.last_epoch)
  for i, base in ipairs(self.base_lrs) do
    out[i] = base * (self.start_factor + (self.end_factor - self.start_factor) * t / self.total_iters)
  end
  return out
end

--- Runs schedules one after another, switching at the milestones
-- (torch's SequentialLR), e.g. a linear warmup then cosine annealing.
-- @type SequentialLR
-- @tparam Optimizer opt
-- @tparam {LRScheduler,...} schedulers all built on opt
-- @tparam {int,...} milestones #schedulers - 1 switch epochs
-- @usage
-- local warm = optim.LinearLR(opt, {start_factor = 0.1, total_iters = 5})
-- local cos = optim.CosineLR(opt, epochs - 5)
-- local sched = optim.SequentialLR(opt, {warm, cos}, {5})
local SequentialLR = sched_class("SequentialLR")
optim.SequentialLR = SequentialLR

function SequentialLR.new(opt, schedulers, milestones, last_epoch)
  if not guard.isa(opt, Optimizer) then
    error(("SequentialLR: expected an optimizer, got %s"):format(guard.what(opt)), 2)
  end
  if type(schedulers) ~= "table" or #schedulers == 0 then
    error("SequentialLR: expected a list of schedulers", 2)
  end
  for i, s in ipairs(schedulers) do
    if not guard.isa(s, LRScheduler) then
      error(("SequentialLR: schedulers[%d] is %s, not a scheduler"):format(i, guard.what(s)), 2)
    end
    if s.optimizer ~= opt then
      error(("SequentialLR: scheduler %d belongs to another optimizer"):format(i), 2)
    end
  end
  if type(milestones) ~= "table" or #milestones ~= #schedulers - 1 then
    error(("SequentialLR: expected %d milestones for %d schedulers"):format(#schedulers - 1,
      #schedulers), 2)
  end
  for i, m in ipairs(milestones) do
    if math.type(m) ~= "integer" or m < 1 or (i > 1 and m <= milestones[i - 1]) then
      error(("SequentialLR: milestones must be increasing positive integers, got %s at %d"):format(
        tostring(m), i), 2)
    end
  end
  if last_epoch ~= nil and (math.type(last_epoch) ~= "integer" or last_epoch < -1) then
    error(("SequentialLR: last_epoch must be an integer >= -1, got %s"):format(tostring(last_epoch)), 2)
  end
  local self = setmetatable({ optimizer = opt, _schedulers = schedulers,
                              _milestones = copy_list(milestones),
                              last_epoch = (last_epoch or -1) + 1 }, SequentialLR)
  for _, g in ipairs(opt.param_groups) do g.lr = g.initial_lr end
  for _, s in ipairs(schedulers) do s.last_epoch = s.last_epoch - 1 end
  schedulers[1]:_initial_step()
  self._last_lr = schedulers[1]:get_last_lr()
  return self
end
setmetatable(SequentialLR, { __index = LRScheduler,
                             __call = function(_, ...) return SequentialLR.new(...) end })

function SequentialLR:step()
  self.last_epoch = self.last_epoch + 1
  local idx = 1   -- bisect_right(milestones, last_epoch) + 1
  while idx <= #self._milestones and self._milestones[idx] <= self.last_epoch do idx = idx + 1 end
  local s = self._schedulers[idx]
  if idx > 1 and self._milestones[idx - 1] == self.last_epoch then
    s:step(0)
  else
    s:step()
  end
  self._last_lr = s:get_last_lr()
end

function SequentialLR:state_dict()
  local sd = { last_epoch = self.last_epoch, _last_lr = copy_list(self._last_lr), schedulers = {} }
  for i, s in ipairs(self._schedulers) do sd.schedulers[i] = s:state_dict() end
  return sd
end

function SequentialLR:load_state_dict(sd)
  if type(sd) ~= "table" or type(sd.schedulers) ~= "table" or #sd.schedulers ~= #self._schedulers
      or type(sd.last_epoch) ~= "number" or type(sd._last_lr) ~= "table" then
    error(("SequentialLR.load_state_dict: expected a state dict of %d schedulers from state_dict(), got %s")
      :format(#self._schedulers, guard.what(sd)), 2)
  end
  self.last_epoch = sd.last_epoch
  self._last_lr = copy_list(sd._last_lr)
  for i, s in ipairs(self._schedulers) do s:load_state_dict(sd.schedulers[i]) end
end

-- Every method checks its self (nasrt.guard): `opt.step()` for
-- `opt:step()` names the method.  `new` is a constructor, not a method.
for _, cls in ipairs { Optimizer, SGD, Adam, AdamW, LRScheduler, CosineLR, LinearLR, SequentialLR } do
  guard.class(cls, { new = true })
end

return optim
