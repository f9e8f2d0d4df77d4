--- nasrt.nn: modules with parameters, buffers and children, PyTorch style.
--
-- A module is a Lua table whose metatable is its class.  Parameters,
-- buffers and children live in plain fields (`conv.weight`, `net.features`)
-- and are also recorded by name, in registration order, so that
-- `parameters()`, `named_parameters()`, `state_dict()` and the printed tree
-- are deterministic.  Children assigned as fields (`self.conv = nn.Conv2d(...)`)
-- are registered automatically; tensors must be registered explicitly with
-- `register_parameter` / `register_buffer` (PyTorch's nn.Parameter role).
--
-- Cost model (`macs`, `flops`): a multiply-accumulate (MAC) is one multiply
-- and one add.  `m:macs(shape)` counts the MACs of every convolution and
-- linear layer for an input of the given shape (batch dimension included:
-- pass {1, C, H, W} for per-image numbers); bias additions, normalisation,
-- activations and pooling cost nothing by default.  `m:flops(shape)` is
-- 2 x MACs, the convention of most NAS papers that say "FLOPs" and mean
-- arithmetic operations.  NAS-Bench-201 (xautodl's flop_benchmark) reports
-- "FLOPs" that are really MACs *plus* one add per output element for each
-- bias of a conv/linear layer: `m:macs({1,3,32,32}, {bias=true}) / 1e6`
-- reproduces its MFLOPs column.
--
-- Shapes are computed without running heavy compute: leaf modules know their
-- `output_shape(in_shape)` and containers chain them.  A module with its own
-- `forward` and no `output_shape` is traced instead: its leaves are counted
-- while a forward pass runs on zeros of the given shape (eval mode, no tape;
-- every flag is restored afterwards), so use batch size 1 there.  Ops called
-- directly through `F` (not through a module) are not counted by a trace.
-- @module nasrt.nn
-- @usage
-- local nn = require "nasrt.nn"
-- local net = nn.Sequential(nn.Conv2d(1, 16, 3, {padding = 1}), nn.BatchNorm2d(16),
--                           nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
-- local logits = net(x)                      -- same as net:forward(x)
-- print(net, net:num_parameters(), net:flops({1, 1, 28, 28}))
local core = require "nasrt.core"
local guard = require "nasrt.guard"
local F = core.F

local nn = {}

local is_tensor = core.is_tensor
local floor, ceil, sqrt = math.floor, math.ceil, math.sqrt

-- ------------------------------------------------------------ helpers

local function shape_str(s)
  if type(s) ~= "table" then
    error(("shape_str: expected a shape (a list of sizes), got %s"):format(type(s)), 2)
  end
  return "[" .. table.concat(s, ",") .. "]"
end

local function copy_shape(s)
  if type(s) ~= "table" then
    error(("copy_shape: expected a shape (a list of sizes), got %s"):format(type(s)), 2)
  end
  return table.move(s, 1, #s, 1, {})
end

-- A shape argument: a list of non-negative integers, or a tensor (its
-- shape).  Errors are raised at `level` (default 3: the caller of the
-- method that checks).
local function check_shape_arg(in_shape, fn, level)
  if is_tensor(in_shape) then return in_shape:shape() end
  level = level or 3
  if type(in_shape) ~= "table" or #in_shape == 0 then
    error(("%s: expected an input shape like {1, 3, 32, 32}, got %s"):format(fn,
      type(in_shape) == "table" and "{}" or type(in_shape)), level)
  end
  for i, d in ipairs(in_shape) do
    if math.type(d) ~= "integer" or d < 0 then
      error(("%s: shape entry %d must be a non-negative integer, got %s"):format(fn, i,
        tostring(d)), level)
    end
  end
  return in_shape
end

-- A tensor argument.
local function check_tensor(t, fn, i, level)
  if not is_tensor(t) then
    error(("%s: argument #%d: expected tensor, got %s"):format(fn, i, type(t)), level or 3)
  end
  return t
end

--- An integer option that may also be a pair {h, w}; returns h, w.
local function pair(v, name, fn)
  if type(v) == "table" then
    if #v ~= 2 or math.type(v[1]) ~= "integer" or math.type(v[2]) ~= "integer" then
      error(("%s: %s must be an integer or a pair {h, w}"):format(fn, name), 3)
    end
    return v[1], v[2]
  end
  if math.type(v) ~= "integer" then
    error(("%s: %s must be an integer or a pair {h, w}, got %s"):format(fn, name, tostring(v)), 3)
  end
  return v, v
end

local function pair_str(h, w)
  return ("(%d, %d)"):format(h, w)
end

--- Raises when opts holds a key not in `allowed` (catches typos like strid=2).
-- level: error level as seen from the caller's caller (default 3: the
-- user who called the constructor that called check_opts)
local function check_opts(opts, allowed, fn, level)
  level = level or 3
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("%s: options must be a table, got %s"):format(fn, type(opts)), level)
  end
  for k in pairs(opts) do
    if not allowed[k] then
      local names = {}
      for a in pairs(allowed) do names[#names + 1] = a end
      table.sort(names)
      error(("%s: unknown option '%s' (expected one of %s)"):format(fn, tostring(k),
        table.concat(names, ", ")), level)
    end
  end
  return opts
end

local function opt(v, default)
  if v == nil then return default end
  return v
end

local function check_rank(in_shape, rank, cls, what)
  in_shape = check_shape_arg(in_shape, cls .. ":output_shape", 4)
  if #in_shape ~= rank then
    error(("%s: expected a %s input %s, got %s"):format(cls, what or (rank .. "-dim"),
      rank == 4 and "[N,C,H,W]" or "", shape_str(in_shape)), 3)
  end
  return in_shape
end

-- ------------------------------------------------------------ classes

local Module = {}
Module.__name = "Module"
Module.__index = Module

local METAMETHODS = { "__call", "__tostring", "__newindex", "__len", "__index" }

-- Every method a class defines is guarded against a wrong self
-- (`net.forward(x)` for `net:forward(x)`): see nasrt.guard.
local what, define = guard.what, guard.define

--- Makes a new module class.
-- Calling the class creates an instance: the base state is set up, then
-- `Class.__init(self, ...)` runs (inherited like any method).  Metamethods
-- are copied from the parent, so instances are callable and printable.
-- @tparam string name class name, shown when printing
-- @tparam[opt=nn.Module] table parent
-- @treturn table the class
-- @usage
-- local Block = nn.class("Block")
-- function Block:__init(c) self.conv = nn.Conv2d(c, c, 3, {padding = 1}) end
-- function Block:forward(x) return F.relu(self.conv(x)) + x end
function nn.class(name, parent)
  if type(name) ~= "string" or name == "" then
    error(("nn.class: name must be a non-empty string, got %s"):format(what(name)), 2)
  end
  parent = parent or Module
  if not guard.derives(parent, Module) or rawget(parent, "_child_names") then
    error(("nn.class: parent must be a module class, got %s"):format(what(parent)), 2)
  end
  local cls = {}
  for _, k in ipairs(METAMETHODS) do cls[k] = rawget(parent, k) end
  if cls.__index == parent then cls.__index = cls end
  cls.__name = name
  cls.super = parent
  return setmetatable(cls, {
    __index = parent,
    __call = function(c, ...)
      local self = setmetatable({}, c)
      Module._setup(self)
      local init = c.__init
      if init then
        init(self, ...)
      elseif select("#", ...) > 0 then
        local f = rawget(c, "_factory")
        error(("%s: the constructor takes no arguments, got %d%s"):format(name, select("#", ...),
          f and (" (build one with " .. f .. ")") or ""), 2)
      end
      return self
    end,
    __tostring = function() return "class " .. name end,
    __newindex = define,
  })
end

--- True when v is a module instance.
function nn.is_module(v)
  local mt = type(v) == "table" and getmetatable(v)
  return mt ~= nil and mt ~= false and type(mt) == "table" and rawget(v, "_child_names") ~= nil
end
local is_module = nn.is_module

--- The base class.
-- @type Module
nn.Module = Module

function Module._setup(self)
  rawset(self, "_param_names", {})
  rawset(self, "_buffer_names", {})
  rawset(self, "_nonpersistent", {})
  rawset(self, "_child_names", {})
  rawset(self, "training", true)
end

setmetatable(Module, {
  __call = function(c, ...)
    if select("#", ...) > 0 then
      error(("Module: the constructor takes no arguments, got %d"):format(select("#", ...)), 2)
    end
    local self = setmetatable({}, c)
    Module._setup(self)
    return self
  end,
  __tostring = function() return "class Module" end,
  __newindex = define,
})

local function has(list, name)
  for i = 1, #list do if list[i] == name then return true end end
  return false
end

local function check_name(self, name, what)
  if type(name) ~= "string" or name == "" or name:find(".", 1, true) then
    error(("%s: name must be a non-empty string without '.', got %s"):format(what, tostring(name)), 3)
  end
  for _, list in ipairs { self._param_names, self._buffer_names, self._child_names } do
    if has(list, name) then return end  -- re-registering the same kind is handled by callers
  end
  if self[name] ~= nil then   -- a field or a method (PyTorch: hasattr)
    error(("%s: attribute '%s' already exists"):format(what, name), 3)
  end
end

--- Registers (or replaces) a parameter: a leaf tensor that gets
-- requires_grad and is returned by `parameters()`.  `t` may be nil (as a
-- missing bias), which keeps the name but yields no tensor.
-- @tparam string name
-- @tparam ?tensor t
function Module:register_parameter(name, t)
  check_name(self, name, "register_parameter")
  if has(self._buffer_names, name) or has(self._child_names, name) then
    error(("register_parameter: '%s' is already a buffer or child"):format(name), 2)
  end
  if t ~= nil then
    if not is_tensor(t) then
      error(("register_parameter: '%s' must be a tensor or nil, got %s"):format(name, type(t)), 2)
    end
    if not t.is_leaf then
      error(("register_parameter: '%s' is the result of an op; parameters must be leaf tensors " ..
        "(use :detach())"):format(name), 2)
    end
    t:requires_grad(true)
  end
  if not has(self._param_names, name) then table.insert(self._param_names, name) end
  rawset(self, name, t)
  return t
end

--- Registers (or replaces) a buffer: state that is saved in `state_dict()`
-- but not trained (BatchNorm running statistics).
-- @tparam string name
-- @tparam ?tensor t
-- @tparam[opt=true] boolean persistent false keeps it out of state_dict
function Module:register_buffer(name, t, persistent)
  check_name(self, name, "register_buffer")
  if has(self._param_names, name) or has(self._child_names, name) then
    error(("register_buffer: '%s' is already a parameter or child"):format(name), 2)
  end
  if t ~= nil and not is_tensor(t) then
    error(("register_buffer: '%s' must be a tensor or nil, got %s"):format(name, type(t)), 2)
  end
  if persistent ~= nil and type(persistent) ~= "boolean" then
    error(("register_buffer: persistent must be a boolean, got %s"):format(type(persistent)), 2)
  end
  if not has(self._buffer_names, name) then table.insert(self._buffer_names, name) end
  self._nonpersistent[name] = (persistent == false) or nil
  rawset(self, name, t)
  return t
end

--- Registers a child module under `name` (also reachable as `self[name]`).
function Module:add_module(name, m)
  check_name(self, name, "add_module")
  if has(self._param_names, name) or has(self._buffer_names, name) then
    error(("add_module: '%s' is already a parameter or buffer"):format(name), 2)
  end
  if m ~= nil and not is_module(m) then
    error(("add_module: '%s' must be a module, got %s"):format(name, type(m)), 2)
  end
  if not has(self._child_names, name) then table.insert(self._child_names, name) end
  rawset(self, name, m)
  return m
end
Module.register_module = Module.add_module

-- Assigning a module to a new field registers it as a child.
function Module.__newindex(self, k, v)
  if type(k) == "string" and is_module(v) then
    Module.add_module(self, k, v)
  else
    rawset(self, k, v)
  end
end

function Module:__call(...)
  return self:forward(...)
end

--- Computes the output; every module class defines it.
function Module:forward()
  error(("%s: forward is not implemented"):format(self.__name), 2)
end

-- ------------------------------------------------------------ traversal

--- Direct children as a list of {name, module}.
function Module:named_children()
  local out = {}
  for _, name in ipairs(self._child_names) do
    local m = rawget(self, name)
    if m ~= nil then out[#out + 1] = { name, m } end
  end
  return out
end

--- Direct children as a list.
function Module:children()
  -- straight from the fields, without named_children's {name, module}
  -- pairs: forwards ask for them on every call
  local out = {}
  for _, name in ipairs(rawget(self, "_child_names")) do
    local m = rawget(self, name)
    if m ~= nil then out[#out + 1] = m end
  end
  return out
end

--- Every module of the tree, pre-order (self first), each once, as a list
-- of {dotted_name, module}; the root's name is `prefix` or "".
function Module:named_modules(prefix, memo)
  if prefix ~= nil and type(prefix) ~= "string" then
    error(("named_modules: prefix must be a string, got %s"):format(type(prefix)), 2)
  end
  if memo ~= nil and type(memo) ~= "table" then
    error(("named_modules: memo must be a table, got %s"):format(type(memo)), 2)
  end
  memo = memo or {}
  prefix = prefix or ""
  local out = {}
  local function walk(m, p)
    if memo[m] then return end
    memo[m] = true
    out[#out + 1] = { p, m }
    for _, name in ipairs(rawget(m, "_child_names")) do
      local c = rawget(m, name)
      if c ~= nil then walk(c, p == "" and name or (p .. "." .. name)) end
    end
  end
  walk(self, prefix)
  return out
end

--- Every module of the tree (self first), as a list.
function Module:modules()
  local out = {}
  for _, nm in ipairs(self:named_modules()) do out[#out + 1] = nm[2] end
  return out
end

-- Parameter tensor -> its dotted name, so an optimizer can name the
-- parameter whose gradient diverged (optim.lua reads it).  Weak keys; the
-- longest name seen wins, i.e. the name in the outermost module that was
-- asked for its parameters (the network a recipe optimizes).
local param_names = core._param_names or setmetatable({}, { __mode = "k" })
core._param_names = param_names

local function named_members(self, field, recurse, skip_nonpersistent)
  if recurse ~= nil and type(recurse) ~= "boolean" then
    error(("%s: recurse must be a boolean, got %s"):format(field == "_param_names" and
      "parameters" or "buffers", type(recurse)), 4)
  end
  local out, seen = {}, {}
  local mods = recurse == false and { { "", self } } or self:named_modules()
  local is_param = field == "_param_names"
  for _, nm in ipairs(mods) do
    local prefix, m = nm[1], nm[2]
    for _, name in ipairs(m[field]) do
      local t = rawget(m, name)
      if t ~= nil and not seen[t] and not (skip_nonpersistent and m._nonpersistent[name]) then
        seen[t] = true
        local full = prefix == "" and name or (prefix .. "." .. name)
        out[#out + 1] = { full, t }
        if is_param then
          local old = param_names[t]
          if not old or #full > #old then param_names[t] = full end
        end
      end
    end
  end
  return out
end

--- Parameters as a list of {dotted_name, tensor} ("features.1.weight"),
-- in registration order, each tensor once.
-- @tparam[opt=true] boolean recurse false: only this module's own
function Module:named_parameters(recurse)
  return named_members(self, "_param_names", recurse)
end

--- Parameters as a list of tensors (same order as named_parameters).
function Module:parameters(recurse)
  local out = {}
  for _, nt in ipairs(self:named_parameters(recurse)) do out[#out + 1] = nt[2] end
  return out
end

--- Buffers as a list of {dotted_name, tensor}.
function Module:named_buffers(recurse)
  return named_members(self, "_buffer_names", recurse)
end

--- Buffers as a list of tensors.
function Module:buffers(recurse)
  local out = {}
  for _, nt in ipairs(self:named_buffers(recurse)) do out[#out + 1] = nt[2] end
  return out
end

--- Calls fn(m) on every child (recursively), then on self; returns self.
function Module:apply(fn)
  if type(fn) ~= "function" then
    error(("apply: expected a function, got %s"):format(what(fn)), 2)
  end
  for _, m in ipairs(self:children()) do m:apply(fn) end
  fn(self)
  return self
end

--- Sets training mode on the whole tree (`.training`); returns self.
-- @tparam[opt=true] boolean mode
function Module:train(mode)
  if mode == nil then mode = true end
  if type(mode) ~= "boolean" then error("train: mode must be a boolean", 2) end
  rawset(self, "training", mode)
  for _, m in ipairs(self:children()) do m:train(mode) end
  return self
end

--- Evaluation mode: `train(false)`.
function Module:eval()
  return self:train(false)
end

--- Drops every parameter's gradient (sets `.grad` to nil, as PyTorch's
-- set_to_none), so optimizers skip parameters no later backward reaches.
function Module:zero_grad()
  for _, p in ipairs(self:parameters()) do p:zero_grad() end
end

--- Number of scalar parameters (shared tensors counted once).
function Module:num_parameters()
  local n = 0
  for _, p in ipairs(self:parameters()) do n = n + p:numel() end
  return n
end

-- ------------------------------------------------------------ state

--- Parameters and persistent buffers by dotted name.  The tensors share
-- storage with the module (detached, like PyTorch's); clone them to keep a
-- snapshot.
-- @treturn table name -> tensor
-- @treturn table the names in module order
function Module:state_dict()
  local sd, keys = {}, {}
  for _, nm in ipairs(self:named_modules()) do
    local prefix, m = nm[1], nm[2]
    local function add(name)
      local t = rawget(m, name)
      if t ~= nil and not m._nonpersistent[name] then
        local key = prefix == "" and name or (prefix .. "." .. name)
        sd[key] = t:detach()
        keys[#keys + 1] = key
      end
    end
    for _, name in ipairs(m._param_names) do add(name) end
    for _, name in ipairs(m._buffer_names) do add(name) end
  end
  return sd, keys
end

--- Copies values from a state dict (name -> tensor) into this module's
-- parameters and buffers.  A shape mismatch always raises; with strict
-- (the default) missing and unexpected keys raise too.
-- @tparam table sd
-- @tparam[opt=true] boolean strict
-- @treturn table {missing_keys = {...}, unexpected_keys = {...}}
-- @raise on a non-tensor value, a shape mismatch, or (strict) a key mismatch
function Module:load_state_dict(sd, strict)
  if type(sd) ~= "table" then
    error(("load_state_dict: expected a table name -> tensor, got %s"):format(what(sd)), 2)
  end
  if strict == nil then strict = true end
  if type(strict) ~= "boolean" then
    error(("load_state_dict: strict must be a boolean, got %s"):format(type(strict)), 2)
  end
  local own, keys = self:state_dict()
  local missing, unexpected, errs, todo = {}, {}, {}, {}
  for _, k in ipairs(keys) do
    local src = sd[k]
    if src == nil then
      missing[#missing + 1] = k
    elseif not is_tensor(src) then
      errs[#errs + 1] = ("value for '%s' is a %s, expected a tensor"):format(k, type(src))
    else
      local a, b = src:shape(), own[k]:shape()
      local same = #a == #b
      for i = 1, #a do same = same and a[i] == b[i] end
      if not same then
        errs[#errs + 1] = ("size mismatch for %s: copying a tensor of shape %s from the " ..
          "state dict, the shape in the current model is %s"):format(k, shape_str(a), shape_str(b))
      else
        todo[#todo + 1] = { own[k], src }
      end
    end
  end
  for k in pairs(sd) do
    if own[k] == nil then unexpected[#unexpected + 1] = tostring(k) end
  end
  table.sort(unexpected)
  if strict then
    if #missing > 0 then
      table.insert(errs, 1, "missing key(s) in state_dict: " .. table.concat(missing, ", "))
    end
    if #unexpected > 0 then
      table.insert(errs, 1, "unexpected key(s) in state_dict: " .. table.concat(unexpected, ", "))
    end
  end
  if #errs > 0 then
    error(("load_state_dict: error(s) in loading state_dict for %s:\n\t%s"):format(
      self.__name, table.concat(errs, "\n\t")), 2)
  end
  core.no_grad(function()
    for _, pair_ in ipairs(todo) do pair_[1]:copy_(pair_[2]) end
  end)
  return { missing_keys = missing, unexpected_keys = unexpected }
end

--- Writes the state_dict as one numpy `.npy` file per tensor, named by
-- its path (`features.1.weight.npy`), plus manifest.json (see nasrt.interop).
-- @tparam string dir folder (created when missing)
-- @treturn table the manifest, or nil, message when a file cannot be written
function Module:export_npy(dir)
  return require("nasrt.interop").export_npy(self, dir)
end

--- Loads weights written by export_npy (or a folder of `<key>.npy` files)
-- through load_state_dict.
-- @tparam string dir
-- @tparam[opt=true] boolean strict
-- @treturn table {missing_keys=, unexpected_keys=}, or nil, message when a
--   file cannot be read
function Module:import_npy(dir, strict)
  return require("nasrt.interop").import_npy(self, dir, strict)
end

-- ------------------------------------------------------------ printing

--- One-line description of the module's own settings (PyTorch's extra_repr).
function Module:extra_repr()
  return ""
end

function Module:__tostring()
  local lines = {}
  local extra = self:extra_repr()
  if extra ~= "" then
    for l in (extra .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
  end
  local nextra = #lines
  for _, nm in ipairs(self:named_children()) do
    local s = tostring(nm[2]):gsub("\n", "\n  ")
    lines[#lines + 1] = "(" .. nm[1] .. "): " .. s
  end
  local name = self.__name
  if #lines == 0 then return name .. "()" end
  if nextra == 1 and #lines == 1 then return name .. "(" .. lines[1] .. ")" end
  return name .. "(\n  " .. table.concat(lines, "\n  ") .. "\n)"
end

-- ------------------------------------------------------------ cost model

-- Counts leaf MACs while running a forward pass on zeros; returns macs and
-- the output shape.  Flags and patched methods are restored even on error.
local function trace(self, in_shape, opts)
  local total = 0
  local mods = self:modules()
  local flags = {}
  for _, m in ipairs(mods) do
    flags[m] = rawget(m, "training")
    rawset(m, "training", false)
    if m._count then
      local cls_forward = m.forward
      rawset(m, "forward", function(mm, x, ...)
        local y = cls_forward(mm, x, ...)
        total = total + mm:_count(x:shape(), y:shape(), opts)
        return y
      end)
    end
  end
  local ok, out = pcall(core.no_grad, function() return self:forward(core.zeros(in_shape)) end)
  for _, m in ipairs(mods) do
    rawset(m, "training", flags[m])
    if m._count then rawset(m, "forward", nil) end
  end
  if not ok then error(out, 0) end
  if not is_tensor(out) then
    error(("%s: cannot trace the cost: forward returned %s, not a tensor"):format(
      self.__name, type(out)), 3)
  end
  return total, out:shape()
end


--- Output shape for an input of shape `in_shape` (batch included), from
-- shapes alone where the module knows how, else by a traced forward.
function Module:output_shape(in_shape)
  in_shape = check_shape_arg(in_shape, "output_shape")
  local _, out = trace(self, in_shape, {})
  return out
end

--- Multiply-accumulates of one forward pass for an input of shape
-- `in_shape` (see the module header for the convention).
-- @tparam {int,...}|tensor in_shape e.g. {1, 3, 32, 32}
-- @tparam[opt] table opts {bias=true}: also count one add per output
--   element of each conv/linear bias (NAS-Bench-201's convention)
-- @treturn int
function Module:macs(in_shape, opts)
  in_shape = check_shape_arg(in_shape, "macs")
  opts = check_opts(opts, { bias = true }, "macs")
  if self._count then
    return self:_count(in_shape, self:output_shape(in_shape), opts)
  end
  return (trace(self, in_shape, opts))
end

--- FLOPs = 2 x MACs.
function Module:flops(in_shape, opts)
  return 2 * self:macs(in_shape, opts)
end

-- Leaf helpers: elementwise modules keep the shape and cost nothing.
local function same_shape(self, s) return copy_shape(check_shape_arg(s, self.__name .. ":output_shape")) end
local function no_cost() return 0 end

-- Leaf modules derive from Leaf (same shape, no cost); a leaf that knows
-- better defines its own output_shape (a new key, so it is guarded too).
local Leaf = nn.class("Leaf")
Leaf.output_shape = same_shape
Leaf._count = no_cost

local function leaf(name)
  return nn.class(name, Leaf)
end

-- ------------------------------------------------------------ init

--- In-place initialisers (torch.nn.init); all return the tensor.
nn.init = {}

local function check_num(v, fn, name)
  if type(v) ~= "number" or v ~= v then
    error(("%s: %s must be a number, got %s"):format(fn, name, tostring(v)), 3)
  end
  return v
end

--- Fills t with U(a, b).
function nn.init.uniform_(t, a, b)
  check_tensor(t, "init.uniform_", 1)
  a, b = check_num(a or 0, "init.uniform_", "a"), check_num(b or 1, "init.uniform_", "b")
  return core.no_grad(function()
    return t:copy_(core.rand(t:shape()):mul_(b - a):add_(a))
  end)
end

--- Fills t with N(mean, std^2).
function nn.init.normal_(t, mean, std)
  check_tensor(t, "init.normal_", 1)
  mean, std = check_num(mean or 0, "init.normal_", "mean"), check_num(std or 1, "init.normal_", "std")
  if std < 0 then error(("init.normal_: std must be >= 0, got %g"):format(std), 2) end
  return core.no_grad(function()
    return t:copy_(core.randn(t:shape()):mul_(std):add_(mean))
  end)
end

--- Fills t with v.
function nn.init.constant_(t, v)
  check_tensor(t, "init.constant_", 1)
  check_num(v, "init.constant_", "the value")
  return core.no_grad(function() return t:fill_(v) end)
end
function nn.init.zeros_(t)
  check_tensor(t, "init.zeros_", 1)
  return nn.init.constant_(t, 0)
end
function nn.init.ones_(t)
  check_tensor(t, "init.ones_", 1)
  return nn.init.constant_(t, 1)
end

--- fan_in, fan_out of a weight [out, in, k...] (torch's rule).
function nn.init.fans(t)
  check_tensor(t, "init.fans", 1)
  local s = t:shape()
  if #s < 2 then
    error(("init.fans: fan in/out need a tensor with at least 2 dims, got %s"):format(
      shape_str(s)), 2)
  end
  local rf = 1
  for i = 3, #s do rf = rf * s[i] end
  return s[2] * rf, s[1] * rf
end

local LINEAR_GAIN = { linear = true, conv1d = true, conv2d = true, conv3d = true, sigmoid = true }

local function gain(nonlinearity, a, fn)
  if nonlinearity == "relu" then return sqrt(2) end
  if nonlinearity == "leaky_relu" then return sqrt(2 / (1 + (a or 0.01) ^ 2)) end
  if nonlinearity == "tanh" then return 5 / 3 end
  if nonlinearity == "selu" then return 3 / 4 end
  if LINEAR_GAIN[nonlinearity] then return 1 end
  error(("%s: unsupported nonlinearity %s (expected relu, leaky_relu, tanh, selu, sigmoid, "
    .. "linear or conv2d)"):format(fn, tostring(nonlinearity)), 3)
end

-- The options of the kaiming initialisers; returns the fan and the gain.
local KAIMING_OPTS = { a = true, mode = true, nonlinearity = true }
local function kaiming(t, opts, fn)
  check_tensor(t, fn, 1, 4)
  opts = check_opts(opts, KAIMING_OPTS, fn, 4)
  local fan_in, fan_out = nn.init.fans(t)
  local mode = opts.mode or "fan_in"
  if mode ~= "fan_in" and mode ~= "fan_out" then
    error(("%s: mode must be \"fan_in\" or \"fan_out\", got %s"):format(fn, tostring(mode)), 3)
  end
  if opts.a ~= nil then check_num(opts.a, fn, "option 'a'") end
  return mode == "fan_out" and fan_out or fan_in, gain(opts.nonlinearity or "leaky_relu", opts.a or 0, fn)
end

--- He uniform: U(-b, b), b = gain * sqrt(3 / fan).
-- @tparam tensor t
-- @tparam[opt] table opts {a=0, mode="fan_in"|"fan_out", nonlinearity="leaky_relu"}
function nn.init.kaiming_uniform_(t, opts)
  local fan, g = kaiming(t, opts, "init.kaiming_uniform_")
  local bound = g * sqrt(3 / fan)
  return nn.init.uniform_(t, -bound, bound)
end

--- He normal: N(0, (gain / sqrt(fan))^2).
function nn.init.kaiming_normal_(t, opts)
  local fan, g = kaiming(t, opts, "init.kaiming_normal_")
  return nn.init.normal_(t, 0, g / sqrt(fan))
end

--- Glorot uniform: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)).
function nn.init.xavier_uniform_(t, g)
  check_tensor(t, "init.xavier_uniform_", 1)
  check_num(g or 1, "init.xavier_uniform_", "the gain")
  local fan_in, fan_out = nn.init.fans(t)
  local bound = (g or 1) * sqrt(6 / (fan_in + fan_out))
  return nn.init.uniform_(t, -bound, bound)
end

-- PyTorch's default for Conv2d and Linear: kaiming_uniform(a=sqrt(5)) for
-- the weight (= U(-1/sqrt(fan_in), 1/sqrt(fan_in))) and the same bound for
-- the bias.
local function default_init(w, b)
  nn.init.kaiming_uniform_(w, { a = sqrt(5) })
  if b then
    local fan_in = nn.init.fans(w)
    local bound = fan_in > 0 and 1 / sqrt(fan_in) or 0
    nn.init.uniform_(b, -bound, bound)
  end
end

-- ------------------------------------------------------------ layers

--- 2-D convolution (torch.nn.Conv2d).
-- @type Conv2d
-- @tparam int in_channels
-- @tparam int out_channels
-- @tparam int|{int,int} kernel_size
-- @tparam[opt] table opts {stride=1, padding=0, dilation=1, groups=1, bias=true}
local Conv2d = nn.class("Conv2d")
nn.Conv2d = Conv2d
local CONV_OPTS = { stride = true, padding = true, dilation = true, groups = true, bias = true }

function Conv2d:__init(cin, cout, k, opts)
  opts = check_opts(opts, CONV_OPTS, "Conv2d")
  if math.type(cin) ~= "integer" or cin < 1 or math.type(cout) ~= "integer" or cout < 1 then
    error("Conv2d: in_channels and out_channels must be positive integers", 3)
  end
  local groups = opt(opts.groups, 1)
  if math.type(groups) ~= "integer" or groups < 1 or cin % groups ~= 0 or cout % groups ~= 0 then
    error(("Conv2d: groups=%s must divide in_channels=%d and out_channels=%d"):format(
      tostring(groups), cin, cout), 3)
  end
  self.in_channels, self.out_channels, self.groups = cin, cout, groups
  self.kernel_size = { pair(k, "kernel_size", "Conv2d") }
  self.stride = { pair(opt(opts.stride, 1), "stride", "Conv2d") }
  self.padding = { pair(opt(opts.padding, 0), "padding", "Conv2d") }
  self.dilation = { pair(opt(opts.dilation, 1), "dilation", "Conv2d") }
  for i = 1, 2 do
    local k, s, pd, d = self.kernel_size[i], self.stride[i], self.padding[i], self.dilation[i]
    if k < 1 or s < 1 or pd < 0 or d < 1 then
      error(("Conv2d: kernel_size %d, stride %d, dilation %d must be >= 1 and padding %d >= 0")
        :format(k, s, d, pd), 3)
    end
  end
  self._fopts = { stride = self.stride, padding = self.padding, dilation = self.dilation,
                  groups = groups }
  self:register_parameter("weight", core.zeros { cout, cin // groups, self.kernel_size[1],
                                                 self.kernel_size[2] })
  self:register_parameter("bias", opt(opts.bias, true) and core.zeros { cout } or nil)
  self:reset_parameters()
end

--- Re-draws weight and bias with PyTorch's default initialisation.
function Conv2d:reset_parameters()
  default_init(self.weight, self.bias)
end

function Conv2d:forward(x)
  return F.conv2d(x, self.weight, self.bias, self._fopts)
end

function Conv2d:output_shape(s)
  s = check_rank(s, 4, "Conv2d")
  if s[2] ~= self.in_channels then
    error(("Conv2d: input %s has %d channels, weight expects %d (groups=%d)"):format(
      shape_str(s), s[2], self.in_channels, self.groups), 3)
  end
  local out = { s[1], self.out_channels }
  for i = 1, 2 do
    local n = s[2 + i] + 2 * self.padding[i] - self.dilation[i] * (self.kernel_size[i] - 1) - 1
    if n < 0 then
      error(("Conv2d: input %s is smaller than the kernel %s"):format(shape_str(s),
        pair_str(self.kernel_size[1], self.kernel_size[2])), 3)
    end
    out[2 + i] = n // self.stride[i] + 1
  end
  return out
end

function Conv2d:_count(_, o, opts)
  local per = o[1] * o[2] * o[3] * o[4]
  local macs = per * (self.in_channels // self.groups) * self.kernel_size[1] * self.kernel_size[2]
  if opts.bias and self.bias then macs = macs + per end
  return macs
end

function Conv2d:extra_repr()
  local s = ("%d, %d, kernel_size=%s, stride=%s"):format(self.in_channels, self.out_channels,
    pair_str(self.kernel_size[1], self.kernel_size[2]), pair_str(self.stride[1], self.stride[2]))
  if self.padding[1] ~= 0 or self.padding[2] ~= 0 then
    s = s .. ", padding=" .. pair_str(self.padding[1], self.padding[2])
  end
  if self.dilation[1] ~= 1 or self.dilation[2] ~= 1 then
    s = s .. ", dilation=" .. pair_str(self.dilation[1], self.dilation[2])
  end
  if self.groups ~= 1 then s = s .. ", groups=" .. self.groups end
  if not self.bias then s = s .. ", bias=False" end
  return s
end

--- Fully connected layer y = x W^T + b (torch.nn.Linear).
-- @type Linear
-- @tparam int in_features
-- @tparam int out_features
-- @tparam[opt] table opts {bias=true}
local Linear = nn.class("Linear")
nn.Linear = Linear

function Linear:__init(nin, nout, opts)
  opts = check_opts(opts, { bias = true }, "Linear")
  if math.type(nin) ~= "integer" or nin < 1 or math.type(nout) ~= "integer" or nout < 1 then
    error("Linear: in_features and out_features must be positive integers", 3)
  end
  self.in_features, self.out_features = nin, nout
  self:register_parameter("weight", core.zeros { nout, nin })
  self:register_parameter("bias", opt(opts.bias, true) and core.zeros { nout } or nil)
  self:reset_parameters()
end

function Linear:reset_parameters()
  default_init(self.weight, self.bias)
end

function Linear:forward(x)
  return F.linear(x, self.weight, self.bias)
end

function Linear:output_shape(s)
  s = check_shape_arg(s, "Linear:output_shape")
  if #s < 1 or s[#s] ~= self.in_features then
    error(("Linear: input %s does not end in in_features=%d"):format(shape_str(s),
      self.in_features), 3)
  end
  local out = copy_shape(s)
  out[#out] = self.out_features
  return out
end

function Linear:_count(s, _, opts)
  local rows = 1
  for i = 1, #s - 1 do rows = rows * s[i] end
  local macs = rows * self.in_features * self.out_features
  if opts.bias and self.bias then macs = macs + rows * self.out_features end
  return macs
end

function Linear:extra_repr()
  return ("in_features=%d, out_features=%d, bias=%s"):format(self.in_features,
    self.out_features, self.bias and "True" or "False")
end

--- Batch normalisation over [N,C,H,W] (torch.nn.BatchNorm2d).
-- In training mode it normalises with the batch statistics and updates the
-- running ones (running_var with the unbiased variance); in eval mode it
-- uses the running ones.  momentum=false means a cumulative average over
-- the batches seen since the last reset (PyTorch's momentum=None).
-- @type BatchNorm2d
-- @tparam int num_features
-- @tparam[opt] table opts {eps=1e-5, momentum=0.1, affine=true, track_running_stats=true}
local BatchNorm2d = nn.class("BatchNorm2d")
nn.BatchNorm2d = BatchNorm2d
local BN_OPTS = { eps = true, momentum = true, affine = true, track_running_stats = true }

function BatchNorm2d:__init(c, opts)
  opts = check_opts(opts, BN_OPTS, self.__name)
  if math.type(c) ~= "integer" or c < 1 then
    error(("%s: num_features must be a positive integer"):format(self.__name), 3)
  end
  self.num_features = c
  self.eps = opt(opts.eps, 1e-5)
  if type(self.eps) ~= "number" or not (self.eps > 0) then
    error(("%s: eps must be a positive number, got %s"):format(self.__name, tostring(self.eps)), 3)
  end
  local mom = opt(opts.momentum, 0.1)
  if mom ~= false and (type(mom) ~= "number" or not (mom >= 0 and mom <= 1)) then
    error(("%s: momentum must be a number in [0, 1] or false, got %s"):format(self.__name,
      tostring(mom)), 3)
  end
  self.momentum = mom ~= false and mom or nil
  self.affine = opt(opts.affine, true)
  self.track_running_stats = opt(opts.track_running_stats, true)
  for _, k in ipairs { "affine", "track_running_stats" } do
    if type(self[k]) ~= "boolean" then
      error(("%s: option '%s' must be a boolean, got %s"):format(self.__name, k, type(self[k])), 3)
    end
  end
  if self.affine then
    self:register_parameter("weight", core.ones { c })
    self:register_parameter("bias", core.zeros { c })
  else
    self:register_parameter("weight", nil)
    self:register_parameter("bias", nil)
  end
  if self.track_running_stats then
    self:register_buffer("running_mean", core.zeros { c })
    self:register_buffer("running_var", core.ones { c })
    self:register_buffer("num_batches_tracked", core.zeros {})
  end
end

--- running_mean = 0, running_var = 1, num_batches_tracked = 0.
function BatchNorm2d:reset_running_stats()
  if self.track_running_stats then
    core.no_grad(function()
      self.running_mean:zero_()
      self.running_var:fill_(1)
      self.num_batches_tracked:zero_()
    end)
  end
end

--- Resets the running statistics and the affine parameters (1 and 0).
function BatchNorm2d:reset_parameters()
  self:reset_running_stats()
  if self.affine then
    nn.init.ones_(self.weight)
    nn.init.zeros_(self.bias)
  end
end

BatchNorm2d._rank = { [4] = true }

--- The normalised output; with `activation` "relu" or "relu6" that
-- activation of it, in the same op (`bn(x, "relu6")` is
-- `F.relu6(bn(x))` with one pass less, forward and backward).
-- @tparam Tensor x [N,C,H,W]
-- @tparam[opt] string activation "none" (default), "relu" or "relu6"
-- @treturn Tensor
function BatchNorm2d:forward(x, activation)
  local track = self.track_running_stats
  local training = self.training
  local momentum = self.momentum or 0.0
  if training and track then
    local nbt = self.num_batches_tracked
    nbt:add_(1)   -- a leaf: in-place updates are allowed even with grad mode on
    if self.momentum == nil then momentum = 1.0 / nbt:item() end
  end
  local use_batch = training or not track
  return F.batch_norm(x, track and self.running_mean or nil, track and self.running_var or nil,
    self.weight, self.bias, { training = use_batch, momentum = momentum, eps = self.eps,
                              activation = activation })
end

function BatchNorm2d:output_shape(s)
  s = check_shape_arg(s, self.__name .. ":output_shape")
  if not self._rank[#s] or s[2] ~= self.num_features then
    error(("%s: input %s does not match num_features=%d"):format(self.__name, shape_str(s),
      self.num_features), 3)
  end
  return copy_shape(s)
end
BatchNorm2d._count = no_cost

function BatchNorm2d:extra_repr()
  return ("%d, eps=%g, momentum=%s, affine=%s, track_running_stats=%s"):format(
    self.num_features, self.eps, self.momentum and ("%g"):format(self.momentum) or "None",
    self.affine and "True" or "False", self.track_running_stats and "True" or "False")
end

--- Batch normalisation over [N,C] or [N,C,L] (torch.nn.BatchNorm1d).
-- @type BatchNorm1d
local BatchNorm1d = nn.class("BatchNorm1d", BatchNorm2d)
nn.BatchNorm1d = BatchNorm1d
BatchNorm1d._rank = { [2] = true, [3] = true }

--- ReLU activation.
nn.ReLU = leaf("ReLU")
function nn.ReLU:forward(x) return F.relu(x) end

--- Sigmoid activation.
nn.Sigmoid = leaf("Sigmoid")
function nn.Sigmoid:forward(x) return F.sigmoid(x) end

--- Tanh activation.
nn.Tanh = leaf("Tanh")
function nn.Tanh:forward(x) return F.tanh(x) end

--- Returns its input.
nn.Identity = leaf("Identity")
function nn.Identity:forward(x) return x end

--- DARTS' `none` op: zeros shaped like the output, x*0 (subsampled by
-- `stride`), so the graph stays connected and gradients (zeros) flow.
-- @type Zero
-- @tparam[opt=1] int stride
nn.Zero = leaf("Zero")
function nn.Zero:__init(stride)
  stride = stride or 1
  if math.type(stride) ~= "integer" or stride < 1 then
    error("Zero: stride must be a positive integer", 3)
  end
  self.stride = stride
end
function nn.Zero:forward(x)
  if self.stride ~= 1 then x = F.subsample(x, self.stride) end
  return F.scale(x, 0)
end
function nn.Zero:output_shape(s)
  s = check_shape_arg(s, "Zero:output_shape")
  local o = copy_shape(s)
  if self.stride ~= 1 then
    check_rank(s, 4, "Zero")
    o[3], o[4] = ceil(s[3] / self.stride), ceil(s[4] / self.stride)
  end
  return o
end
function nn.Zero:extra_repr() return "stride=" .. self.stride end

--- Inverted dropout: zeroes elements with probability p in training mode
-- and scales the others by 1/(1-p); the identity in eval mode.
-- @type Dropout
-- @tparam[opt=0.5] number p
nn.Dropout = leaf("Dropout")
function nn.Dropout:__init(p)
  p = p or 0.5
  if type(p) ~= "number" or not (p >= 0 and p <= 1) then
    error(("Dropout: p must be a number in [0, 1], got %s"):format(tostring(p)), 3)
  end
  self.p = p
end
function nn.Dropout:forward(x) return F.dropout(x, self.p, self.training) end
function nn.Dropout:extra_repr() return ("p=%g"):format(self.p) end

--- Flattens dims start_dim..end into one (default start_dim=2: keeps the batch).
-- @type Flatten
nn.Flatten = leaf("Flatten")
function nn.Flatten:__init(start_dim)
  start_dim = start_dim or 2
  if math.type(start_dim) ~= "integer" or start_dim == 0 then
    error(("Flatten: start_dim must be a non-zero integer (1-based), got %s"):format(
      tostring(start_dim)), 3)
  end
  self.start_dim = start_dim
end
function nn.Flatten:forward(x) return F.flatten(x, self.start_dim) end
function nn.Flatten:output_shape(s)
  s = check_shape_arg(s, "Flatten:output_shape")
  local sd = self.start_dim < 0 and #s + self.start_dim + 1 or self.start_dim
  if sd < 1 or sd > #s then
    error(("Flatten: start_dim %d out of range for an input %s"):format(self.start_dim,
      shape_str(s)), 3)
  end
  local o, inner = {}, 1
  for i = 1, sd - 1 do o[i] = s[i] end
  for i = sd, #s do inner = inner * s[i] end
  o[sd] = inner
  return o
end
function nn.Flatten:extra_repr() return "start_dim=" .. self.start_dim end

-- pooling output size (torch's rule, with ceil_mode)
local function pool_out(n, k, s, p, ceil_mode)
  local num = n + 2 * p - k
  local o
  if ceil_mode then
    o = -(-num // s) + 1
    if (o - 1) * s >= n + p then o = o - 1 end
  else
    o = num // s + 1
  end
  return o
end

local POOL_OPTS = { stride = true, padding = true, ceil_mode = true, count_include_pad = true }

local function pool_init(self, k, opts, name, avg)
  opts = check_opts(opts, POOL_OPTS, name)
  if not avg and opts.count_include_pad ~= nil then
    error(name .. ": unknown option 'count_include_pad'", 4)
  end
  self.kernel_size = { pair(k, "kernel_size", name) }
  self.stride = { pair(opt(opts.stride, k), "stride", name) }
  self.padding = { pair(opt(opts.padding, 0), "padding", name) }
  self.ceil_mode = opt(opts.ceil_mode, false)
  if type(self.ceil_mode) ~= "boolean" then
    error(("%s: ceil_mode must be a boolean, got %s"):format(name, type(self.ceil_mode)), 4)
  end
  for i = 1, 2 do
    if self.kernel_size[i] < 1 or self.stride[i] < 1 or self.padding[i] < 0 then
      error(("%s: kernel_size %d and stride %d must be >= 1, padding %d >= 0"):format(name,
        self.kernel_size[i], self.stride[i], self.padding[i]), 4)
    end
  end
  if self.padding[1] * 2 > self.kernel_size[1] or self.padding[2] * 2 > self.kernel_size[2] then
    error(("%s: padding should be at most half of the kernel size"):format(name), 4)
  end
  self._fopts = { kernel = self.kernel_size, stride = self.stride, padding = self.padding,
                  ceil_mode = self.ceil_mode }
  if avg then
    self.count_include_pad = opt(opts.count_include_pad, true)
    if type(self.count_include_pad) ~= "boolean" then
      error(("%s: count_include_pad must be a boolean, got %s"):format(name,
        type(self.count_include_pad)), 4)
    end
    self._fopts.count_include_pad = self.count_include_pad
  end
end

local function pool_shape(self, s)
  s = check_rank(s, 4, self.__name)
  local o = { s[1], s[2] }
  for i = 1, 2 do
    o[2 + i] = pool_out(s[2 + i], self.kernel_size[i], self.stride[i], self.padding[i],
      self.ceil_mode)
    if o[2 + i] < 1 then
      error(("%s: input %s is too small for kernel %s"):format(self.__name, shape_str(s),
        pair_str(self.kernel_size[1], self.kernel_size[2])), 3)
    end
  end
  return o
end

local function scalar_or_pair(t)
  return t[1] == t[2] and tostring(t[1]) or pair_str(t[1], t[2])
end

local function pool_repr(self)
  local s = ("kernel_size=%s, stride=%s, padding=%s"):format(scalar_or_pair(self.kernel_size),
    scalar_or_pair(self.stride), scalar_or_pair(self.padding))
  if self.ceil_mode then s = s .. ", ceil_mode=True" end
  if self.count_include_pad == false then s = s .. ", count_include_pad=False" end
  return s
end

--- Max pooling (torch.nn.MaxPool2d); stride defaults to the kernel size.
-- @type MaxPool2d
-- @tparam int|{int,int} kernel_size
-- @tparam[opt] table opts {stride=kernel_size, padding=0, ceil_mode=false}
nn.MaxPool2d = leaf("MaxPool2d")
function nn.MaxPool2d:__init(k, opts) pool_init(self, k, opts, "MaxPool2d", false) end
function nn.MaxPool2d:forward(x) return F.max_pool2d(x, self._fopts) end
nn.MaxPool2d.output_shape = pool_shape
nn.MaxPool2d.extra_repr = pool_repr

--- Average pooling (torch.nn.AvgPool2d).
-- @type AvgPool2d
-- @tparam int|{int,int} kernel_size
-- @tparam[opt] table opts {stride=kernel_size, padding=0, ceil_mode=false, count_include_pad=true}
nn.AvgPool2d = leaf("AvgPool2d")
function nn.AvgPool2d:__init(k, opts) pool_init(self, k, opts, "AvgPool2d", true) end
function nn.AvgPool2d:forward(x) return F.avg_pool2d(x, self._fopts) end
nn.AvgPool2d.output_shape = pool_shape
nn.AvgPool2d.extra_repr = pool_repr

--- Adaptive average pooling to a fixed output size (1: global pooling).
-- @type AdaptiveAvgPool2d
-- @tparam int|{int,int} output_size
nn.AdaptiveAvgPool2d = leaf("AdaptiveAvgPool2d")
function nn.AdaptiveAvgPool2d:__init(size)
  self.output_size = { pair(size or 1, "output_size", "AdaptiveAvgPool2d") }
  self._size = size or 1
end
function nn.AdaptiveAvgPool2d:forward(x) return F.adaptive_avg_pool2d(x, self._size) end
function nn.AdaptiveAvgPool2d:output_shape(s)
  s = check_rank(s, 4, "AdaptiveAvgPool2d")
  return { s[1], s[2], self.output_size[1], self.output_size[2] }
end
function nn.AdaptiveAvgPool2d:extra_repr()
  return "output_size=" .. scalar_or_pair(self.output_size)
end

-- ------------------------------------------------------------ containers

-- Integer keys index the children in order (negative from the end).
local function index_children(t, k)
  if math.type(k) == "integer" then
    local names = rawget(t, "_child_names")
    local n = #names
    if k < 0 then k = n + k + 1 end
    local name = names[k]
    return name and rawget(t, name)
  end
  return getmetatable(t)[k]
end

local function len_children(t)
  return #rawget(t, "_child_names")
end

local function append(self, m)
  if not is_module(m) then
    error(("%s: append expects a module, got %s"):format(self.__name, type(m)), 2)
  end
  self:add_module(tostring(#self._child_names + 1), m)
  return self
end

-- Modules passed as varargs or as one plain list.
local function module_list_args(...)
  local args = table.pack(...)
  if args.n == 1 and type(args[1]) == "table" and not is_module(args[1]) then
    local t = args[1]
    return t, #t
  end
  return args, args.n
end

--- Runs its children in order, each on the previous one's output.
-- Children are named "1", "2", ... and indexed as seq[1], seq[-1].
-- @type Sequential
-- @usage nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
local Sequential = nn.class("Sequential")
nn.Sequential = Sequential
Sequential.__index = index_children
Sequential.__len = len_children

function Sequential:__init(...)
  local list, n = module_list_args(...)
  for i = 1, n do
    if not is_module(list[i]) then
      error(("Sequential: argument %d is a %s, expected a module"):format(i, type(list[i])), 3)
    end
    append(self, list[i])
  end
end
Sequential.append = append
Sequential.add = append

--- Activation modules a `BatchNorm2d` right before them in a `Sequential`
-- applies in its own op (module class -> its `activation` option): one
-- pass less forward and backward, the same numbers.  nasrt.blocks adds
-- its ReLU6.
nn.BN_ACTIVATIONS = { [nn.ReLU] = "relu" }

--- Whether `Sequential` fuses a `BatchNorm2d` and the activation after it
-- (default true); false runs each child on its own.
nn.fuse_bn_activation = true

-- the activation option when child i is a BatchNorm2d and i+1 one of
-- BN_ACTIVATIONS, neither with a forward of its own (a cost tracer or
-- hook may patch one in)
local function bn_act(self, names, i, m)
  if getmetatable(m) ~= BatchNorm2d or rawget(m, "forward") ~= nil then return nil end
  local nx = names[i + 1] and rawget(self, names[i + 1])
  if not nx or rawget(nx, "forward") ~= nil then return nil end
  return nn.BN_ACTIVATIONS[getmetatable(nx)]
end

function Sequential:forward(x)
  local names, fuse = self._child_names, nn.fuse_bn_activation
  local i = 1
  while i <= #names do
    local m = rawget(self, names[i])
    local act = m and fuse and bn_act(self, names, i, m)
    if act then
      x = m(x, act)
      i = i + 2
    else
      if m then x = m(x) end
      i = i + 1
    end
  end
  return x
end

function Sequential:output_shape(s)
  s = check_shape_arg(s, "output_shape")
  for _, m in ipairs(self:children()) do s = m:output_shape(s) end
  return s
end

function Sequential:macs(s, opts)
  s = check_shape_arg(s, "macs")
  opts = check_opts(opts, { bias = true }, "macs")
  local total = 0
  for _, m in ipairs(self:children()) do
    total = total + m:macs(s, opts)
    s = m:output_shape(s)
  end
  return total
end

--- A list of modules (registered, indexable, no forward of its own).
-- @type ModuleList
local ModuleList = nn.class("ModuleList")
nn.ModuleList = ModuleList
ModuleList.__index = index_children
ModuleList.__len = len_children

function ModuleList:__init(...)
  local list, n = module_list_args(...)
  for i = 1, n do append(self, list[i]) end
end
ModuleList.append = append

--- Appends every module of a list.
function ModuleList:extend(list)
  if type(list) ~= "table" or is_module(list) and not rawget(getmetatable(list), "__len") then
    error(("ModuleList.extend: expected a list of modules, got %s"):format(what(list)), 2)
  end
  for _, m in ipairs(list) do append(self, m) end
  return self
end

--- A string-keyed table of modules.  Construction from a table sorts the
-- keys (Lua tables have no order); `:add(name, m)` keeps insertion order.
-- @type ModuleDict
local ModuleDict = nn.class("ModuleDict")
nn.ModuleDict = ModuleDict

function ModuleDict:__init(t)
  if t ~= nil and (type(t) ~= "table" or is_module(t)) then
    error(("ModuleDict: expected a table name -> module, got %s"):format(what(t)), 3)
  end
  if t ~= nil then
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do self:add_module(k, t[k]) end
  end
end

function ModuleDict:add(name, m)
  self:add_module(name, m)
  return self
end

--- Names in order.
function ModuleDict:keys()
  local out = {}
  for _, nm in ipairs(self:named_children()) do out[#out + 1] = nm[1] end
  return out
end

--- List of {name, module}.
function ModuleDict:items()
  return self:named_children()
end

-- ------------------------------------------------------------ losses

--- Cross-entropy over logits [N,K] and class ids [N] (mean over the batch).
-- @type CrossEntropyLoss
-- @tparam[opt] table opts {label_smoothing=0}
nn.CrossEntropyLoss = nn.class("CrossEntropyLoss")
function nn.CrossEntropyLoss:__init(opts)
  opts = check_opts(opts, { label_smoothing = true }, "CrossEntropyLoss")
  self.label_smoothing = opts.label_smoothing or 0
  local ls = self.label_smoothing
  if type(ls) ~= "number" or not (ls >= 0 and ls < 1) then
    error(("CrossEntropyLoss: label_smoothing must be a number in [0, 1), got %s"):format(
      tostring(ls)), 3)
  end
  self._fopts = { label_smoothing = self.label_smoothing }
end
function nn.CrossEntropyLoss:forward(logits, targets)
  return F.cross_entropy(logits, targets, self._fopts)
end
function nn.CrossEntropyLoss:extra_repr()
  return self.label_smoothing ~= 0 and ("label_smoothing=%g"):format(self.label_smoothing) or ""
end

--- Soft-target distillation loss: the batch mean of
-- sum_k -softmax(t/T)_k * log_softmax(s/T)_k (AttentiveNAS' in-place KD,
-- with T=1).  The teacher logits are detached here.  No T^2 factor.
-- @tparam tensor s student logits [N,K]
-- @tparam tensor t teacher logits [N,K]
-- @tparam[opt=1] number T temperature
-- @treturn tensor a 0-dim loss
function nn.kd_loss(s, t, T)
  T = T or 1
  if not (is_tensor(s) and is_tensor(t)) then
    error(("kd_loss: expected two tensors, got %s and %s"):format(type(s), type(t)), 2)
  end
  if type(T) ~= "number" or not (T > 0) then
    error(("kd_loss: temperature T must be a positive number, got %s"):format(tostring(T)), 2)
  end
  local ss, ts = s:shape(), t:shape()
  if #ss ~= 2 or #ts ~= 2 or ss[1] ~= ts[1] or ss[2] ~= ts[2] then
    error(("kd_loss: student %s and teacher %s must be the same [N,K]"):format(shape_str(ss),
      shape_str(ts)), 2)
  end
  t = t:detach()
  if T ~= 1 then
    s = F.scale(s, 1 / T)
    t = F.scale(t, 1 / T)
  end
  local p = F.softmax(t, 2)
  local logq = F.log_softmax(s, 2)
  return F.scale(F.sum(F.mul(p, logq)), -1 / ss[1])
end

--- Module form of kd_loss.
-- @type KDLoss
-- @tparam[opt] table opts {T=1}
nn.KDLoss = nn.class("KDLoss")
function nn.KDLoss:__init(opts)
  opts = check_opts(opts, { T = true }, "KDLoss")
  self.T = opts.T or 1
  if type(self.T) ~= "number" or not (self.T > 0) then
    error(("KDLoss: temperature T must be a positive number, got %s"):format(tostring(self.T)), 3)
  end
end
function nn.KDLoss:forward(s, t) return nn.kd_loss(s, t, self.T) end
function nn.KDLoss:extra_repr() return ("T=%g"):format(self.T) end

-- ------------------------------------------------------------ BN recalibration

-- Generic-for triple over batches: a loader (has :iter()), an iterator
-- function, or a list of tensors / {x, y} pairs.
local function each_batch(batches)
  if type(batches) == "function" then return batches end
  if type(batches) == "table" or type(batches) == "userdata" then
    if type(batches.iter) == "function" then return batches:iter() end
    if type(batches) == "table" then
      local i = 0
      return function()
        i = i + 1
        local b = batches[i]
        if type(b) == "table" and not is_tensor(b) then return b[1], b[2] end
        return b
      end
    end
  end
  error(("recalibrate_bn: batches must be a loader, an iterator function or a list, got %s"):format(
    what(batches)), 3)
end

--- Re-estimates BatchNorm running statistics (SPOS-style recalibration).
-- Resets every tracked BN layer, switches it to a cumulative average
-- (momentum=None), runs up to `n` batches forward in training mode without
-- a tape, restores the momenta, and leaves the model in eval mode.
-- @tparam Module model
-- @param batches a loader (`:iter()`), an iterator function yielding x[, y],
--   or a list of tensors / {x, y} pairs
-- @tparam[opt] int n maximum number of batches (default: all)
-- @treturn int the number of batches used
function nn.recalibrate_bn(model, batches, n)
  if not is_module(model) then
    error(("recalibrate_bn: argument #1: expected a module, got %s"):format(what(model)), 2)
  end
  if n ~= nil and (math.type(n) ~= "integer" or n < 0) then
    error(("recalibrate_bn: argument #3 (n) must be a non-negative integer, got %s"):format(
      tostring(n)), 2)
  end
  local bns = {}
  for _, m in ipairs(model:modules()) do
    if m.reset_running_stats and m.track_running_stats then
      bns[#bns + 1] = { m, m.momentum }
      m:reset_running_stats()
      m.momentum = nil
    end
  end
  model:train()
  local count = 0
  local ok, err = pcall(core.no_grad, function()
    if n == nil or n > 0 then
      local f, s, c = each_batch(batches)
      while true do
        local x = f(s, c)
        if x == nil then break end
        c = x
        model(x)
        count = count + 1
        if n and count >= n then break end
      end
    end
  end)
  for _, bm in ipairs(bns) do bm[1].momentum = bm[2] end
  model:eval()
  if not ok then error(err, 0) end
  return count
end

--- Small helpers shared by the Lua library (blocks, supernets): shape
-- printing, option-table checking, defaults.
nn.util = { shape_str = shape_str, copy_shape = copy_shape, check_opts = check_opts, opt = opt }

return nn
