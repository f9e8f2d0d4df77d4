-- bench/train_cnn.lua: training throughput of the examples/train_cnn.lua
-- network, the nasrt twin of bench/torch_train_cnn.py (same net, same
-- optimizer, batch 128 of synthetic 1x28x28, loader not measured).
--   ./build/nasrt bench/train_cnn.lua [--steps 30] [--warmup 5] [--threads 2] [--batch 128]
local nasrt = require "nasrt"
local nn, optim, F = nasrt.nn, nasrt.optim, nasrt.F

local o = { steps = 30, warmup = 5, threads = 2, batch = 128 }
dofile((arg and arg[0] and arg[0]:match("^(.*)/") or "bench") .. "/args.lua").parse(o)
nasrt.set_num_threads(o.threads)
nasrt.manual_seed(0)
local w = 32
local net = nn.Sequential(
  nn.Conv2d(1, w, 3, { padding = 1, bias = false }), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
  nn.Conv2d(w, 2 * w, 3, { padding = 1, bias = false }), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
  nn.Flatten(), nn.Dropout(0.25), nn.Linear(2 * w * 49, 128), nn.ReLU(), nn.Linear(128, 10))
local opt = optim.SGD(net:parameters(), { lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 5e-4 })
local x = nasrt.randn({ o.batch, 1, 28, 28 })
local ys = {}
for j = 1, o.batch do ys[j] = (j * 7) % 10 end
local y = nasrt.tensor(ys)
local function step()
  local loss = F.cross_entropy(net(x), y)
  opt:zero_grad(); loss:backward(); opt:step()
end
for _ = 1, o.warmup do step() end
local t0 = nasrt.clock()
for _ = 1, o.steps do step() end
local dt = (nasrt.clock() - t0) / o.steps
local rss = 0
for line in io.lines("/proc/self/status") do
  local v = line:match("^VmHWM:%s+(%d+)")
  if v then rss = tonumber(v) / 1024 end
end
-- step FLOPs: 6 x the forward multiply-adds of convs and linears
local gflop = 6 * net:macs { o.batch, 1, 28, 28 } / 1e9
print(("train_cnn_step_ms %.2f  img_per_s %.0f  peak_rss_mb %.0f  gflop_per_step %.3f"):format(
  dt * 1e3, o.batch / dt, rss, gflop))
