-- bench/nas_steps.lua: the nasrt twin of ../shared/bench/torch_nas_steps.py.
-- The same four search-step workloads, layer for layer, on N x 1 x 28 x 28
-- inputs with 10 classes; paths and sub-networks are drawn with Python's
-- own generator (bench/pyrandom.lua, random.seed(0)), so both sides time
-- exactly the same draws, warm-up included.
--   agnas        AGNAS micro step: the DARTS search network with, on every
--                edge, the AGNAS attention (GAP of the 8 op outputs -> FC
--                8C->C -> ReLU -> FC C->8C -> sigmoid, no bias) weighting
--                the op outputs; forward+backward+clip 5+SGD, batch 64.
--                (nasrt.supernet.agnas; `none` is not computed: its output
--                is zeros, its pooled features a zero block.)
--   single_path  SPOS/FairNAS chain of 12 MBConv choice layers (kernel
--                3/5/7 x expansion 3/6), one uniform path, batch 128, SGD.
--   fair         FairNAS strict fairness: 6 paths covering every choice of
--                every layer once, gradients accumulated, one SGD step.
--   sandwich     AttentiveNAS elastic MBConv supernet (width, depth, kernel
--                3/5 as centre crop of 5x5, expansion 4/5/6; weights
--                sliced): largest with label-smoothed CE, two random and
--                the smallest with KD to the largest's soft labels, clip
--                value 1, SGD (Nesterov), batch 64.
--   ./build/nasrt bench/nas_steps.lua --workload W [--steps 5] [--warmup 1]
--                                     [--threads 2] [--batch 0 (default per W)]
-- Prints: '<W>_step_ms X  steps_per_s Y  peak_rss_mb Z  gflop_per_step G'
-- (G: 6 x the forward multiply-adds of the step's convs and linears).
local nasrt = require "nasrt"
local nn, optim, F = nasrt.nn, nasrt.optim, nasrt.F
local here = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "bench"
local pyrandom = dofile(here .. "/pyrandom.lua")

local o = { workload = "", steps = 5, warmup = 1, threads = 2, batch = 0 }
dofile((arg and arg[0] and arg[0]:match("^(.*)/") or "bench") .. "/args.lua").parse(o)
local B = o.batch > 0 and o.batch or ({ agnas = 64, single_path = 128, fair = 128, sandwich = 64 })[o.workload]
if not B then error("--workload must be agnas, single_path, fair or sandwich", 0) end
nasrt.set_num_threads(o.threads)
nasrt.manual_seed(0)
local R = pyrandom.new(0)

-- forward multiply-adds of the convs and linears run (all steps)
local macs = 0
local function conv(x, w, opts)
  local y = F.conv2d(x, w, nil, opts)
  local s, ws = y:shape(), w:shape()
  macs = macs + s[1] * s[2] * s[3] * s[4] * ws[2] * ws[3] * ws[4]
  return y
end
local function linear(x, w, b)
  local s, ws = x:shape(), w:shape()
  macs = macs + s[1] * ws[1] * ws[2]
  return F.linear(x, w, b)
end
local function gap(x) -- x.mean((2, 3))
  local s = x:shape()
  return F.adaptive_avg_pool2d(x, 1):reshape { s[1], s[2] }
end
local function labels(n)
  local t = {}
  for j = 1, n do t[j] = (j * 7 + 1) % 10 end
  return nasrt.tensor(t)
end

-- ------------------------------------------------------------ single path

-- Conv (no bias) + BatchNorm module pair, run functionally so convs count.
local function convbn(ci, co, k, stride, groups)
  return { conv = nn.Conv2d(ci, co, k, { stride = stride or 1, padding = k // 2,
                                         groups = groups or 1, bias = false }),
           bn = nn.BatchNorm2d(co) }
end
local function run_convbn(m, x, act)
  return m.bn(conv(x, m.conv.weight, m.conv._fopts), act)
end

local MBConv = nn.class("BenchMBConv")
function MBConv:__init(ci, co, k, e, st)
  local h = ci * e
  self.res = st == 1 and ci == co
  local a, b, c = convbn(ci, h, 1), convbn(h, h, k, st, h), convbn(h, co, 1)
  self.c1, self.b1, self.c2, self.b2, self.c3, self.b3 = a.conv, a.bn, b.conv, b.bn, c.conv, c.bn
end
-- BN then ReLU6 as one op (nn.BatchNorm2d's activation), as the library's
-- MBConv runs them
function MBConv:forward(x)
  local y = run_convbn({ conv = self.c1, bn = self.b1 }, x, "relu6")
  y = run_convbn({ conv = self.c2, bn = self.b2 }, y, "relu6")
  y = run_convbn({ conv = self.c3, bn = self.b3 }, y)
  return self.res and F.add(x, y) or y
end

local CHOICES = {}
for _, k in ipairs { 3, 5, 7 } do for _, e in ipairs { 3, 6 } do CHOICES[#CHOICES + 1] = { k, e } end end
local STAGES = { { 24, 2, 3 }, { 40, 2, 3 }, { 80, 1, 3 }, { 96, 1, 3 } } -- width, first stride, layers

local SinglePath = nn.class("BenchSinglePath")
function SinglePath:__init()
  local s = convbn(1, 16, 3)
  self.stem_conv, self.stem_bn = s.conv, s.bn
  self.layers = nn.ModuleList()
  local ci = 16
  for _, st in ipairs(STAGES) do
    for j = 1, st[3] do
      local l = nn.ModuleList()
      for _, c in ipairs(CHOICES) do l:append(MBConv(ci, st[1], c[1], c[2], j == 1 and st[2] or 1)) end
      self.layers:append(l)
      ci = st[1]
    end
  end
  local h = convbn(ci, 320, 1)
  self.head_conv, self.head_bn = h.conv, h.bn
  self.cls = nn.Linear(320, 10)
end
function SinglePath:forward(x, path)
  x = run_convbn({ conv = self.stem_conv, bn = self.stem_bn }, x, "relu6")
  for l, c in ipairs(path) do x = self.layers[l][c + 1](x) end
  x = run_convbn({ conv = self.head_conv, bn = self.head_bn }, x, "relu6")
  return linear(gap(x), self.cls.weight, self.cls.bias)
end

-- ------------------------------------------------------------ elastic sandwich

local ESTAGES = { { { 16, 24 }, { 1, 2 }, 1 }, { { 24, 32 }, { 2, 3 }, 2 },
                  { { 32, 40 }, { 2, 3, 4 }, 2 }, { { 64, 72 }, { 2, 3, 4 }, 1 } }
local function max_of(t) return math.max(table.unpack(t)) end
local function min_of(t) return math.min(table.unpack(t)) end
local function param(shape, scale)
  return nasrt.no_grad(function() return nasrt.randn(shape):mul_(scale) end):requires_grad(true)
end

local EBlock = nn.class("BenchElasticBlock")
function EBlock:__init(ci, co, st)
  local h = ci * 6
  self.st = st
  self:register_parameter("w1", param({ h, ci, 1, 1 }, 0.1)); self.b1 = nn.BatchNorm2d(h)
  self:register_parameter("w2", param({ h, 1, 5, 5 }, 0.1)); self.b2 = nn.BatchNorm2d(h)
  self:register_parameter("w3", param({ co, h, 1, 1 }, 0.1)); self.b3 = nn.BatchNorm2d(co)
end
-- F.batch_norm(x, None, None, m.weight[:c], m.bias[:c], training=True),
-- then act (relu6) in the same op
local function ebn(m, x, c, act)
  return F.batch_norm(x, nil, nil, F.narrow(m.weight, 1, 1, c), F.narrow(m.bias, 1, 1, c),
    { training = true, activation = act })
end
local function first(t, dims) -- t[:d1, :d2, ...]
  for d, n in ipairs(dims) do t = F.narrow(t, d, 1, n) end
  return t
end
function EBlock:forward(x, co, k, e)
  local ci = x:shape()[2]
  local h, off = ci * e, (5 - k) // 2
  local y = ebn(self.b1, conv(x, first(self.w1, { h, ci })), h, "relu6")
  local w2 = F.narrow(F.narrow(first(self.w2, { h }), 3, off + 1, k), 4, off + 1, k)
  y = ebn(self.b2, conv(y, w2, { stride = self.st, padding = k // 2, groups = h }), h, "relu6")
  y = ebn(self.b3, conv(y, first(self.w3, { co, h })), co)
  return (self.st == 1 and ci == co) and F.add(y, x) or y
end

local Elastic = nn.class("BenchElastic")
function Elastic:__init()
  self.stem = nn.Conv2d(1, 24, 3, { padding = 1, bias = false }); self.sbn = nn.BatchNorm2d(24)
  self.stages = nn.ModuleList()
  local ci = 24
  for _, st in ipairs(ESTAGES) do
    local blocks = nn.ModuleList()
    local w = max_of(st[1])
    for j = 1, max_of(st[2]) do blocks:append(EBlock(j == 1 and ci or w, w, j == 1 and st[3] or 1)) end
    self.stages:append(blocks)
    ci = w
  end
  self.cls = nn.Linear(ci, 10)
end
function Elastic:forward(x, cfg)
  x = self.sbn(conv(x, self.stem.weight, self.stem._fopts), "relu6")
  for s, blocks in ipairs(self.stages:children()) do
    local c = cfg[s]
    for j = 1, c[2] do x = blocks[j](x, c[1], c[3], c[4]) end
  end
  return linear(gap(x), F.narrow(self.cls.weight, 2, 1, x:shape()[2]), self.cls.bias)
end

local function sample_cfg(kind)
  local out = {}
  for s, st in ipairs(ESTAGES) do
    if kind == "max" then out[s] = { max_of(st[1]), max_of(st[2]), 5, 6 }
    elseif kind == "min" then out[s] = { min_of(st[1]), min_of(st[2]), 3, 4 }
    else out[s] = { R:choice(st[1]), R:choice(st[2]), R:choice { 3, 5 }, R:choice { 4, 5, 6 } } end
  end
  return out
end

-- ------------------------------------------------------------ steps

local x, y = nasrt.randn { B, 1, 28, 28 }, labels(B)
local step
if o.workload == "agnas" then
  local net = nasrt.supernet.agnas { C = 16, layers = 8, in_channels = 1, classes = 10 }
  local opt = optim.SGD(net:parameters(), { lr = 0.025, momentum = 0.9, weight_decay = 3e-4 })
  local per_step = net:macs { 1, 1, 28, 28 } * B
  step = function()
    opt:zero_grad(); F.cross_entropy(net(x), y):backward()
    optim.clip_grad_norm(net:parameters(), 5); opt:step()
    macs = macs + per_step
  end
elseif o.workload == "single_path" or o.workload == "fair" then
  local net = SinglePath()
  local opt = optim.SGD(net:parameters(), { lr = 0.1, momentum = 0.9, weight_decay = 4e-5 })
  local L = #net.layers:children()
  step = function()
    opt:zero_grad()
    if o.workload == "single_path" then
      local path = {}
      for l = 1, L do path[l] = R:randrange(#CHOICES) end
      F.cross_entropy(net(x, path), y):backward()
    else
      local perms = {}
      for l = 1, L do perms[l] = R:sample(#CHOICES, #CHOICES) end
      for m = 1, #CHOICES do
        local path = {}
        for l = 1, L do path[l] = perms[l][m] end
        F.cross_entropy(net(x, path), y):backward()
      end
    end
    opt:step()
  end
else
  local oneshot = require "nasrt.oneshot"
  local net = Elastic()
  local opt = optim.SGD(net:parameters(), { lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 1e-5 })
  step = function()
    opt:zero_grad()
    local big = net(x, sample_cfg("max"))
    F.cross_entropy(big, y, { label_smoothing = 0.1 }):backward()
    local soft = F.softmax(big:detach(), 2)
    for _, kind in ipairs { "rand", "rand", "min" } do
      local out = net(x, sample_cfg(kind))
      F.neg(F.mean(F.sum(F.mul(soft, F.log_softmax(out, 2)), 2))):backward()
    end
    oneshot.clip_grad_value(net:parameters(), 1.0); opt:step()
  end
end

for _ = 1, o.warmup do step() end
collectgarbage()
macs = 0
local t0 = nasrt.clock()
for _ = 1, o.steps do step() end
local dt = (nasrt.clock() - t0) / o.steps
local rss = 0
for line in io.lines("/proc/self/status") do
  local v = line:match("^VmHWM:%s+(%d+)")
  if v then rss = tonumber(v) / 1024 end
end
print(("nasrt %s threads=%d workload=%s batch=%d"):format(nasrt.version, o.threads, o.workload, B))
print(("%s_step_ms %.1f  steps_per_s %.3f  peak_rss_mb %.0f  gflop_per_step %.2f"):format(
  o.workload, dt * 1e3, 1 / dt, rss, 6 * macs / o.steps / 1e9))
