--- nasrt.dist: data-parallel training and parallel evaluation over MPI.
--
-- Started as `mpirun -np N nasrt script.lua`, every process is one rank
-- (the host initialises MPI when the environment says mpirun or srun
-- started it); without MPI, or started plainly, this is rank 0 of 1 and
-- every collective is a copy or nothing.  The C side is runtime/dist.c
-- (MPI) and modules/bind_dist.c; there is no transport of our own.
--
-- What a data-parallel step does (the recipes do it through
-- nasrt.recipe, nasrt.optim, nasrt.darts_arch and nasrt.oneshot):
--
-- * every rank draws the same global batch (same seed, same loader) and
--   keeps its shard (`dist.shard`: rows lo..hi of the batch, as even as
--   possible); samplers draw the same paths on every rank;
-- * `optimizer:step()` first sums the gradients of its parameters over the
--   ranks through one flat buffer and divides by the number of ranks
--   (PyTorch DDP's mean), so with equal shards the update is the one of the
--   whole batch; `optim.clip_grad_norm` synchronises first, so the norm is
--   the global one;
-- * batch norm: synchronised by default (`NASRT_SYNC_BN=1`): the training
--   statistics are those of the global batch (PyTorch's SyncBatchNorm), so
--   losses, running statistics and the found architecture are those of a
--   single process at the same global batch, to float32 rounding.  With
--   `NASRT_SYNC_BN=0` each rank normalises with its shard's statistics
--   (DDP without SyncBN: fewer messages, a different, noisier
--   objective) and the running statistics are averaged over the ranks
--   before every evaluation and checkpoint (`dist.average_buffers`);
-- * only rank 0 writes the run directory and prints (nasrt.recipe).
--
-- Candidate evaluations spread over the ranks with `dist.map` (each rank
-- computes its share, the results are all-gathered, identical everywhere).
-- @module nasrt.dist
-- @usage
-- local dist = require "nasrt.dist"
-- local x, y = dist.shard(loader:next())         -- this rank's rows
-- opt:zero_grad(); F.cross_entropy(net(x), y):backward()
-- opt:step()                                       -- gradients averaged first
-- local loss = dist.mean(loss_value)               -- the global batch's
local core = require "nasrt.core"

local C = core._dist
local M = {}

-- ------------------------------------------------------------- basics

--- True when nasrt was built with MPI.
function M.compiled() return C.compiled() end

--- True when MPI is initialised in this process.
function M.initialized() return C.initialized() end

--- Initialises MPI if the host did not (a singleton run: rank 0 of 1
-- unless started by mpirun).  Returns whether MPI is initialised.
function M.init() return C.init() end

--- This process's rank, 0-based.
function M.rank() return C.rank() end

--- Number of ranks (1 without MPI).
function M.size() return C.size() end

--- Ranks on this machine.
function M.local_size() return C.local_size() end

--- True on rank 0, the one that writes files and prints.
function M.is_main() return C.rank() == 0 end

--- Waits for every rank.
function M.barrier() C.barrier() end

--- MPI_Finalize (the host calls it at exit).
function M.finalize() C.finalize() end

-- Nesting depth of M.independent: inside, nothing communicates.
local independent_depth = 0

--- True when collectives run: more than one rank and not inside
-- `dist.independent`.
function M.active()
  return independent_depth == 0 and C.size() > 1
end

-- Argument checks run also with one rank, so a bad call fails the same
-- way on a laptop as under mpirun.
local function check_list(fn, list)
  if type(list) ~= "table" then
    error(("%s: expected a list of tensors, got %s"):format(fn, type(list)), 3)
  end
end

local function check_root(fn, root)
  if root ~= nil and (math.type(root) ~= "integer" or root < 0 or root >= C.size()) then
    error(("%s: root %s out of range 0..%d"):format(fn, tostring(root), C.size() - 1), 3)
  end
end

local function check_fn(fn, f, what)
  if type(f) ~= "function" then
    error(("%s: %s must be a function, got %s"):format(fn, what, type(f)), 3)
  end
end

local function check_numbers(fn, ...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) ~= "number" then
      error(("%s: argument %d is a %s, expected a number"):format(fn, i, type(v)), 3)
    end
  end
end

local function scale_of(fn, op)
  if op == nil or op == "mean" then return 1 / C.size() end
  if op == "sum" then return 1 end
  error(("%s: op must be \"sum\" or \"mean\", got %s"):format(fn, tostring(op)), 3)
end

--- Sums (or averages) a list of tensors over the ranks, in place, through
-- one flat buffer.
-- @tparam {tensor,...} list
-- @tparam[opt="sum"] string op "sum" or "mean"
function M.allreduce(list, op)
  check_list("dist.allreduce", list)
  local scale = scale_of("dist.allreduce", op or "sum")
  if C.size() == 1 then return end
  C.allreduce(list, scale)
end

--- Root's values of a list of tensors on every rank (in place).
function M.broadcast(list, root)
  check_list("dist.broadcast", list)
  check_root("dist.broadcast", root)
  C.broadcast(list, root or 0)
end

--- Sums of numbers over the ranks: `dist.sum(a, b, ...)` -> a', b', ...
function M.sum(...)
  check_numbers("dist.sum", ...)
  local xs = table.pack(...)
  if C.size() == 1 then return ... end
  local r = C.allreduce_numbers({ table.unpack(xs, 1, xs.n) })
  return table.unpack(r, 1, xs.n)
end

--- Means of numbers over the ranks (equal shards: the global batch's mean).
function M.mean(...)
  check_numbers("dist.mean", ...)
  local xs = table.pack(...)
  if C.size() == 1 then return ... end
  local r = C.allreduce_numbers({ table.unpack(xs, 1, xs.n) })
  local n = C.size()
  for i = 1, xs.n do r[i] = r[i] / n end
  return table.unpack(r, 1, xs.n)
end

-- ------------------------------------------------------------- Lua values

-- string.pack serialisation of plain Lua values (nil, booleans, numbers
-- keeping integer/float, strings, tables of those; no cycles).
local function enc(v, out, depth)
  local t = type(v)
  if t == "nil" then out[#out + 1] = "n"
  elseif t == "boolean" then out[#out + 1] = v and "t" or "f"
  elseif t == "number" then
    if math.type(v) == "integer" then out[#out + 1] = string.pack("<c1j", "i", v)
    else out[#out + 1] = string.pack("<c1n", "d", v) end
  elseif t == "string" then out[#out + 1] = string.pack("<c1s4", "s", v)
  elseif t == "table" then
    if depth > 64 then error("dist: value nested too deeply (a cycle?)", 0) end
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    out[#out + 1] = string.pack("<c1I4", "T", n)
    for k, x in pairs(v) do
      enc(k, out, depth + 1)
      enc(x, out, depth + 1)
    end
  else
    error(("dist: cannot send a %s (plain values only; tensors go through " ..
      "dist.broadcast / dist.allreduce)"):format(core.is_tensor(v) and "tensor" or t), 0)
  end
end

local function dec(s, pos)
  local tag = s:sub(pos, pos)
  pos = pos + 1
  if tag == "n" then return nil, pos
  elseif tag == "t" then return true, pos
  elseif tag == "f" then return false, pos
  elseif tag == "i" then return string.unpack("<j", s, pos)
  elseif tag == "d" then return string.unpack("<n", s, pos)
  elseif tag == "s" then return string.unpack("<s4", s, pos)
  elseif tag == "T" then
    local n
    n, pos = string.unpack("<I4", s, pos)
    local t = {}
    for _ = 1, n do
      local k, x
      k, pos = dec(s, pos)
      x, pos = dec(s, pos)
      t[k] = x
    end
    return t, pos
  end
  error(("dist: corrupt value (tag %q at %d)"):format(tag, pos - 1), 0)
end

--- A plain Lua value as bytes (what broadcast_value sends).
function M.encode(v)
  local out = {}
  enc(v, out, 0)
  return table.concat(out)
end

--- The value back from `dist.encode`.
function M.decode(s)
  if type(s) ~= "string" then error(("dist.decode: expected a string, got %s"):format(type(s)), 2) end
  return (dec(s, 1))
end

--- Root's Lua value on every rank (plain values: no functions, tensors).
-- @param v the value (used on root only)
-- @tparam[opt=0] int root
function M.broadcast_value(v, root)
  check_root("dist.broadcast_value", root)
  root = root or 0
  if C.size() == 1 then return v end
  local s = C.rank() == root and M.encode(v) or nil
  return M.decode(C.broadcast_string(s, root))
end

--- Every rank's Lua value, by rank: {[1] = rank 0's, ...}.
function M.allgather(v)
  if C.size() == 1 then
    M.encode(v)   -- what could not be sent fails here too
    return { v }
  end
  local parts = C.allgather_string(M.encode(v))
  local out = {}
  for i, s in ipairs(parts) do out[i] = M.decode(s) end
  return out
end

-- ------------------------------------------------------------- batches

--- The rows of a batch of n that this rank keeps: 1-based start and count
-- (rank r of N keeps rows floor(r n / N) + 1 .. floor((r + 1) n / N)).
function M.shard_range(n, rank, size)
  size = size or C.size()
  rank = rank or C.rank()
  if math.type(n) ~= "integer" or n < 0 or math.type(size) ~= "integer" or size < 1
      or math.type(rank) ~= "integer" or rank < 0 or rank >= size then
    error(("dist.shard_range: expected n >= 0 rows and a rank in 0..size-1, got n=%s, rank=%s, size=%s")
      :format(tostring(n), tostring(rank), tostring(size)), 2)
  end
  local lo, hi = rank * n // size, (rank + 1) * n // size
  return lo + 1, hi - lo
end

--- This rank's shard of each tensor (along dim 1; all must have the same
-- first size).  Returns the tensors unchanged when not active.
-- @usage local x, y = dist.shard(loader:next())
function M.shard(...)
  for i = 1, select("#", ...) do
    local t = select(i, ...)
    if t ~= nil and not core.is_tensor(t) then
      error(("dist.shard: argument %d is a %s, expected a tensor (or nil)"):format(i, type(t)), 2)
    end
  end
  if not M.active() then return ... end
  local ts = table.pack(...)
  local x = ts[1]
  if not core.is_tensor(x) then return ... end
  local n = x:shape()[1]
  local start, len = M.shard_range(n)
  if len < 1 then
    error(("dist.shard: a batch of %d rows cannot be split over %d ranks (use a larger " ..
      "batch or fewer ranks)"):format(n, C.size()), 2)
  end
  for i = 1, ts.n do
    local t = ts[i]
    if core.is_tensor(t) then
      if t:shape()[1] ~= n then
        error(("dist.shard: argument %d has %d rows, the first has %d"):format(i, t:shape()[1], n), 2)
      end
      ts[i] = t:narrow(1, start, len)
    end
  end
  return table.unpack(ts, 1, ts.n)
end

--- A loader (nasrt.data.loader) whose next / iter / batch give this
-- rank's shard of each batch; everything else is the loader's own (state,
-- epochs, #).  The loader itself is `.unsharded`.  One process: the loader.
function M.sharded(loader)
  if type(loader) ~= "userdata" and type(loader) ~= "table" then
    error(("dist.sharded: expected a loader, got %s"):format(type(loader)), 2)
  end
  if C.size() == 1 then return loader end
  local P = setmetatable({ unsharded = loader }, {
    __index = function(t, k)
      local v = loader[k]
      if type(v) ~= "function" then return v end
      local f = function(_, ...) return v(loader, ...) end
      rawset(t, k, f)
      return f
    end,
    __len = function() return #loader end,
  })
  function P.next(_, ...) return M.shard(loader:next(...)) end
  function P.batch(_, ...) return M.shard(loader:batch(...)) end
  function P.iter(_, ...)
    local it = loader:iter(...)
    return function() return M.shard(it()) end
  end
  return P
end

-- ------------------------------------------------------------- gradients

-- parameters whose gradients were synchronised and not consumed yet
-- (clip_grad_norm synchronises before optimizer:step; step must not add
-- them up a second time)
local synced = setmetatable({}, { __mode = "k" })

--- Averages (op "mean", default) or sums the gradients of params over the
-- ranks through one flat buffer, skipping those already synchronised for
-- this step.  A parameter without a gradient counts as zeros; afterwards
-- it has one on every rank when some rank had one.
-- @tparam {tensor,...} params
-- @tparam[opt="mean"] string op
function M.sync_grads(params, op)
  check_list("dist.sync_grads", params)
  scale_of("dist.sync_grads", op)
  if not M.active() then return end
  local todo = {}
  for _, p in ipairs(params) do
    if not synced[p] then todo[#todo + 1] = p end
  end
  if #todo == 0 then return end
  C.allreduce_grads(todo, scale_of("dist.sync_grads", op))
  for _, p in ipairs(todo) do synced[p] = true end
end

--- Averages (or sums) the gradients of params over the ranks now, through
-- one flat buffer, without marking them (for gradients used inside a step,
-- e.g. DARTS' virtual step).
function M.allreduce_grads(params, op)
  check_list("dist.allreduce_grads", params)
  scale_of("dist.allreduce_grads", op)
  if not M.active() then return end
  C.allreduce_grads(params, scale_of("dist.allreduce_grads", op))
end

--- Forgets that params were synchronised (optimizer:step and zero_grad
-- call it: the next gradients are new ones).
function M.consumed(params)
  check_list("dist.consumed", params)
  for _, p in ipairs(params) do synced[p] = nil end
end

-- ------------------------------------------------------------- batch norm

local env_bn = os.getenv("NASRT_SYNC_BN")
C.set_sync_bn(not (env_bn == "0" or env_bn == "false" or env_bn == "no"))

--- Switches synchronised batch norm on or off; returns the old setting.
function M.set_sync_bn(on)
  if type(on) ~= "boolean" then
    error(("dist.set_sync_bn: expected a boolean, got %s"):format(type(on)), 2)
  end
  return C.set_sync_bn(on)
end

--- Whether batch norm in training mode uses the global batch's statistics
-- now (the switch is on, more than one rank, not inside independent).
function M.sync_bn() return C.sync_bn() end

--- Averages the buffers (BN running statistics) of a module over the ranks
-- when batch norm is per rank (NASRT_SYNC_BN=0); with synchronised batch
-- norm they are already identical and nothing is sent.  Architecture
-- parameters among the buffers are left alone (their gradients are
-- synchronised, so they agree).
function M.average_buffers(net)
  if type(net) ~= "table" or type(net.buffers) ~= "function" then
    error(("dist.average_buffers: expected a module, got %s"):format(type(net)), 2)
  end
  if not M.active() or C.sync_bn() then return end
  local skip = {}
  if net.arch_parameters then
    for _, a in ipairs(net:arch_parameters()) do skip[a] = true end
  end
  local list = {}
  for _, b in ipairs(net:buffers()) do
    if not skip[b] then list[#list + 1] = b end
  end
  if #list > 0 then C.allreduce(list, 1 / C.size()) end
end

-- ------------------------------------------------------------- independent work

--- Runs fn(...) with every collective off: no gradient or batch-norm
-- synchronisation, no sharding (each rank works on its own, e.g. on its
-- share of candidate evaluations).  Restores the settings also when fn
-- raises.
function M.independent(fn, ...)
  check_fn("dist.independent", fn, "fn")
  independent_depth = independent_depth + 1
  local bn = C.set_sync_bn(false)
  local res = table.pack(pcall(fn, ...))
  C.set_sync_bn(bn)
  independent_depth = independent_depth - 1
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

--- Evaluates fn(item, i) for every item, spread over the ranks (rank r
-- takes items r+1, r+1+N, ...), inside `dist.independent`; the results
-- are all-gathered, so every rank returns the same list.  Results must be
-- plain values.  The global generator is left as it was before the call
-- on every rank (each evaluation draws from it as it likes).
-- @tparam table items
-- @tparam function fn function(item, i) -> values
-- @treturn table results[i] = {n = count, ...} (table.pack of fn's results)
function M.map(items, fn)
  if type(items) ~= "table" then
    error(("dist.map: items must be a list, got %s"):format(type(items)), 2)
  end
  check_fn("dist.map", fn, "fn")
  local n = #items
  local out = {}
  if not M.active() then
    for i = 1, n do out[i] = table.pack(fn(items[i], i)) end
    return out
  end
  local size, rank = C.size(), C.rank()
  local rng = core.get_rng_state()
  local mine = M.independent(function()
    local acc = {}
    for i = rank + 1, n, size do acc[#acc + 1] = { i, table.pack(fn(items[i], i)) } end
    return acc
  end)
  core.set_rng_state(rng)
  for _, part in ipairs(M.allgather(mine)) do
    for _, r in ipairs(part) do out[r[1]] = r[2] end
  end
  return out
end

return M
