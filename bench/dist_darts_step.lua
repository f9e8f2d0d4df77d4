-- bench/dist_darts_step.lua: the first-order DARTS search step of
-- bench/darts_step.lua (C=16, 8 cells, global batch 64 of 1x28x28), data
-- parallel over MPI ranks: each rank takes its shard of both batches,
-- gradients are averaged by the optimizers, batch norm is synchronised
-- (NASRT_SYNC_BN=1, the default) or per rank (NASRT_SYNC_BN=0).
--   ./build/nasrt --threads 2 bench/dist_darts_step.lua [--steps 4] [--warmup 1]
--   mpirun -np 2 ./build/nasrt --threads 1 bench/dist_darts_step.lua
-- Rank 0 prints: dist_darts_step_ms X  steps_per_s Y  ranks N  threads T  sync_bn B
local nasrt = require "nasrt"
local optim, F, dist = nasrt.optim, nasrt.F, nasrt.dist

local o = { steps = 4, warmup = 1, batch = 64, layers = 8, C = 16 }
dofile((arg and arg[0] and arg[0]:match("^(.*)/") or "bench") .. "/args.lua").parse(o)

nasrt.manual_seed(0)
local function labels(n, seed)
  local t = {}
  for j = 1, n do t[j] = (j * 7 + seed) % 10 end
  return nasrt.tensor(t)
end
-- the same global batches on every rank, then this rank's rows
local xt, yt = dist.shard(nasrt.randn({ o.batch, 1, 28, 28 }), labels(o.batch, 1))
local xv, yv = dist.shard(nasrt.randn({ o.batch, 1, 28, 28 }), labels(o.batch, 3))
local net = nasrt.supernet.darts { C = o.C, layers = o.layers, in_channels = 1, classes = 10 }
local wopt = optim.SGD(net:parameters(), { lr = 0.025, momentum = 0.9, weight_decay = 3e-4 })
local aopt = optim.Adam(net:arch_parameters(), { lr = 3e-4, betas = { 0.5, 0.999 }, weight_decay = 1e-3 })
local function step()
  aopt:zero_grad(); F.cross_entropy(net(xv), yv):backward(); aopt:step()
  wopt:zero_grad(); F.cross_entropy(net(xt), yt):backward()
  optim.clip_grad_norm(net:parameters(), 5); wopt:step()
end
for _ = 1, o.warmup do step() end
collectgarbage()
dist.barrier()
local t0 = nasrt.clock()
for _ = 1, o.steps do step() end
dist.barrier()
local dt = (nasrt.clock() - t0) / o.steps
if dist.is_main() then
  print(("dist_darts_step_ms %.1f  steps_per_s %.3f  ranks %d  threads %d  sync_bn %s"):format(
    dt * 1e3, 1 / dt, dist.size(), nasrt.num_threads(), tostring(dist.sync_bn())))
end
