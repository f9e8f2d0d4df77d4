-- bench/darts_step.lua: the nasrt twin of ../shared/bench/torch_darts_step.py.
-- One first-order DARTS search step on the DARTS search network (C=16,
-- 8 cells, 4 steps, multiplier 4, 8 ops, affine=False BN), batch 64 of
-- 1x28x28, 10 classes: alpha step (Adam) on a validation batch, then
-- weight step (SGD, clip 5) on a train batch, exactly as the peer does.
--   ./build/nasrt bench/darts_step.lua [--steps 5] [--warmup 1] [--threads 2]
--                                      [--batch 64] [--layers 8] [--C 16]
--                                      [--workload darts|darts_frozen|agnas]
-- darts_frozen: the same step as recipes/darts.lua takes it, each backward
-- only towards the parameters its optimizer updates (twin:
-- bench/torch_darts_frozen.py).
-- Prints: darts_step_ms X  steps_per_s Y  peak_rss_mb Z  gflop_per_step G
-- (agnas_step_ms ...)
local nasrt = require "nasrt"
local nn, optim, F = nasrt.nn, nasrt.optim, nasrt.F

local o = { steps = 5, warmup = 1, threads = 2, batch = 64, layers = 8, C = 16, workload = "darts" }
dofile((arg and arg[0] and arg[0]:match("^(.*)/") or "bench") .. "/args.lua").parse(o)
nasrt.set_num_threads(o.threads)
nasrt.manual_seed(0)

local function labels(n, seed)
  local t = {}
  for j = 1, n do t[j] = (j * 7 + seed) % 10 end
  return nasrt.tensor(t)
end
local xt, yt = nasrt.randn({ o.batch, 1, 28, 28 }), labels(o.batch, 1)
local xv, yv = nasrt.randn({ o.batch, 1, 28, 28 }), labels(o.batch, 3)

local step, macs
if o.workload == "darts_frozen" then
  -- what recipes/darts.lua does: the alpha step differentiates the alphas
  -- only and the weight step the weights only (darts_arch.frozen), so the
  -- first skips every weight gradient (conv dW) and the second the alpha
  -- gradients of each mixed op; the updates are the same as "darts"
  local net = nasrt.supernet.darts { C = o.C, layers = o.layers, in_channels = 1, classes = 10 }
  local W, A = net:parameters(), net:arch_parameters()
  local wopt = optim.SGD(W, { lr = 0.025, momentum = 0.9, weight_decay = 3e-4 })
  local aopt = optim.Adam(A, { lr = 3e-4, betas = { 0.5, 0.999 }, weight_decay = 1e-3 })
  macs = 2 * o.batch * net:macs { 1, 1, 28, 28 }
  local frozen = require("nasrt.darts_arch").frozen
  step = function()
    aopt:zero_grad(); frozen(W, function() F.cross_entropy(net(xv), yv):backward() end); aopt:step()
    wopt:zero_grad(); frozen(A, function() F.cross_entropy(net(xt), yt):backward() end)
    optim.clip_grad_norm(W, 5); wopt:step()
  end
elseif o.workload == "darts" then
  local net = nasrt.supernet.darts { C = o.C, layers = o.layers, in_channels = 1, classes = 10 }
  local wopt = optim.SGD(net:parameters(), { lr = 0.025, momentum = 0.9, weight_decay = 3e-4 })
  local aopt = optim.Adam(net:arch_parameters(), { lr = 3e-4, betas = { 0.5, 0.999 }, weight_decay = 1e-3 })
  macs = 2 * o.batch * net:macs { 1, 1, 28, 28 } -- two batches per step
  step = function()
    aopt:zero_grad(); F.cross_entropy(net(xv), yv):backward(); aopt:step()
    wopt:zero_grad(); F.cross_entropy(net(xt), yt):backward()
    optim.clip_grad_norm(net:parameters(), 5); wopt:step()
  end
elseif o.workload == "agnas" then
  local net = nasrt.supernet.agnas { C = o.C, layers = o.layers, in_channels = 1, classes = 10 }
  macs = o.batch * net:macs { 1, 1, 28, 28 }
  local wopt = optim.SGD(net:parameters(), { lr = 0.025, momentum = 0.9, weight_decay = 3e-4 })
  step = function()
    wopt:zero_grad(); F.cross_entropy(net(xt), yt):backward()
    optim.clip_grad_norm(net:parameters(), 5); wopt:step()
  end
else
  error("workload must be darts, darts_frozen or agnas", 0)
end

for _ = 1, o.warmup do step() end
collectgarbage()
local t0 = nasrt.clock()
for _ = 1, o.steps do step() end
local dt = (nasrt.clock() - t0) / o.steps
local rss = 0
for line in io.lines("/proc/self/status") do
  local v = line:match("^VmHWM:%s+(%d+)")
  if v then rss = tonumber(v) / 1024 end
end
print(("nasrt %s threads=%d batch=%d layers=%d C=%d"):format(nasrt.version, o.threads, o.batch, o.layers, o.C))
-- step FLOPs: 6 x the forward multiply-adds of convs and linears
-- 6 flops per forward multiply-add (forward, input and weight gradients);
-- darts_frozen has no weight gradients in the alpha step: 4 + 6 over its
-- two batches
local per_mac = o.workload == "darts_frozen" and 5 or 6
print(("%s_step_ms %.1f  steps_per_s %.3f  peak_rss_mb %.0f  gflop_per_step %.1f"):format(
  o.workload, dt * 1e3, 1 / dt, rss, per_mac * macs / 1e9))
