-- Run by spec/dist_spec.lua as `[mpirun -np N] nasrt spec/dist_collectives.lua OUT.json`:
-- exercises every nasrt.dist collective with values the spec can check by
-- hand, and synchronised batch norm against the whole batch in one
-- process.  Every rank's results are gathered; rank 0 writes them.
local json = require "dkjson"
local F = nasrt.F
local dist = nasrt.dist

local r, n = dist.rank(), dist.size()
local out = { rank = r, size = n }

-- sums and means through one flat buffer
local t = nasrt.tensor { r + 1, 2 * (r + 1) }
local u = nasrt.tensor { { 10 * r } }
dist.allreduce({ t, u })
out.sum, out.sum2 = t:totable(), u:totable()
local m = nasrt.tensor { r + 1 }
dist.allreduce({ m }, "mean")
out.mean = m:totable()
out.numbers = { dist.sum(r + 1, 0.5) }

-- gradients: p1 on every rank (r + 1), p2 only on the last rank (10), p3 nowhere
local p1 = nasrt.zeros { 2 }:requires_grad(true)
p1.grad = nasrt.full({ 2 }, r + 1)
local p2 = nasrt.zeros { 3 }:requires_grad(true)
if r == n - 1 then p2.grad = nasrt.full({ 3 }, 10) end
local p3 = nasrt.zeros { 1 }:requires_grad(true)
dist.sync_grads { p1, p2, p3 }
out.g1, out.g2, out.g3 = p1.grad:totable(), p2.grad and p2.grad:totable() or false, p3.grad ~= nil
dist.sync_grads { p1 } -- already synchronised for this step: unchanged
out.g1_again = p1.grad:totable()

-- an optimizer step averages, clip_grad_norm first synchronises (once)
local w = nasrt.zeros { 2 }:requires_grad(true)
local opt = nasrt.optim.SGD({ w }, { lr = 1 })
w.grad = nasrt.tensor { 3 * (r + 1), 4 * (r + 1) }
out.norm = nasrt.optim.clip_grad_norm({ w }, 100)
opt:step()
out.w = w:totable()

-- broadcasts and gathers
local b = nasrt.full({ 2 }, r)
dist.broadcast({ b }, n - 1)
out.bcast = b:totable()
out.value = dist.broadcast_value(r == 0 and { a = 1, b = { 2.5, "x", true }, i = 3 } or nil)
out.gather = dist.allgather { rank = r, x = r * 1.5 }

-- shards of a 5-row batch, and a loader's shards
out.shard = dist.shard(nasrt.tensor { { 1 }, { 2 }, { 3 }, { 4 }, { 5 } }):totable()

-- map: squares of 1..5, with the rank that computed each
local res = dist.map({ 1, 2, 3, 4, 5 }, function(v) return v * v, dist.rank() end)
out.map, out.map_rank = {}, {}
for i, x in ipairs(res) do out.map[i], out.map_rank[i] = x[1], x[2] end

-- synchronised batch norm: this rank's rows vs the whole batch in one process
local function flat(v, acc)
  acc = acc or {}
  if type(v) == "table" then
    for _, x in ipairs(v) do flat(x, acc) end
  else
    acc[#acc + 1] = v
  end
  return acc
end
local function maxdiff(a, b)
  local x, y = flat(a:totable()), flat(b:totable())
  assert(#x == #y, "sizes differ")
  local d = 0
  for i = 1, #x do d = math.max(d, math.abs(x[i] - y[i])) end
  return d
end
nasrt.manual_seed(7)
local X, W, B, G = nasrt.randn { 6, 3, 2, 2 }, nasrt.randn { 3 }, nasrt.randn { 3 }, nasrt.randn { 6, 3, 2, 2 }
local function bn(x, g)
  local rm, rv = nasrt.zeros { 3 }, nasrt.ones { 3 }
  local xl = x:clone():requires_grad(true)
  local wl, bl = W:clone():requires_grad(true), B:clone():requires_grad(true)
  local y = F.batch_norm(xl, rm, rv, wl, bl, { training = true, momentum = 0.1 })
  F.sum(F.mul(y, g)):backward()
  return { y = y, dx = xl.grad, dw = wl.grad, db = bl.grad, rm = rm, rv = rv }
end
local whole = dist.independent(bn, X, G)
local lo, len = dist.shard_range(6)
out.sync_bn = dist.sync_bn()
local part = bn(X:narrow(1, lo, len), G:narrow(1, lo, len))
dist.allreduce({ part.dw, part.db }) -- the ranks' shares of the affine gradients
out.bn = {
  y = maxdiff(part.y, whole.y:narrow(1, lo, len)),
  dx = maxdiff(part.dx, whole.dx:narrow(1, lo, len)),
  dw = maxdiff(part.dw, whole.dw), db = maxdiff(part.db, whole.db),
  rm = maxdiff(part.rm, whole.rm), rv = maxdiff(part.rv, whole.rv),
  scale = maxdiff(whole.dx, whole.dx * 0), -- the size of the values compared
}

local all = dist.allgather(out)
if r == 0 then
  local f = assert(io.open(arg[1], "w"))
  f:write(json.encode(all))
  f:close()
end
