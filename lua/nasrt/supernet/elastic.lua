--- nasrt.supernet (elastic.lua): the AttentiveNAS / BigNAS elastic MBConv
-- supernet (reference/oneshot.md §3).
--
-- A search space is a table (`elastic_spaces` holds the paper's and the
-- small default):
--
--   { in_channels = 1, classes = 10, resolutions = {28},
--     first_conv = {width = {16, 24}, stride = 1},
--     stages = { {width = {16, 24}, depth = {1, 2}, kernel = {3, 5}, expand = {1},
--                 stride = 1, se = false}, ... },          -- mb1 .. mbS
--     last_conv = {width = {512, 640}}, act = "swish", v3_head = true }
--
-- All blocks of a stage share one (width, kernel, expand); only the first
-- `depth` blocks of a stage run.  Weights are allocated at the maximum of
-- every dimension and sliced as §3.2 says: the first channels of every conv,
-- linear and BN (running statistics included), the centre crop of the
-- depthwise kernel, mid = make_divisible(round(c_in * t), 8) from the
-- *actual* incoming width (no expand conv in a stage whose expand ratios are
-- all 1: mid = c_in), SE with se_mid = make_divisible(mid // 4, 8), and a
-- shortcut on every block (identity when c_in = c_out and stride 1, else
-- average pooling by the stride (padding 1 on odd sizes) and a sliced 1x1
-- conv when the widths differ).  The head is MobileNetV3's (v3_head):
-- 1x1 conv to 6 x width(last stage) + BN + act, global pooling, 1x1 conv
-- (as a linear on the pooled features, no bias, no BN) to width(last_conv)
-- + act, dropout, linear.
--
-- Architectures come in two forms:
--   * a config {resolution=, width={...}, depth={...}, kernel={...},
--     expand={...}} of values (width has #stages + 2 entries: first_conv,
--     the stages, last_conv; `kernel_size`/`expand_ratio` are accepted as
--     aliases);
--   * a flat gene list of 1-based choice indices, AttentiveNAS' encoding
--     order: resolution, width[#stages + 2], depth[S], kernel[S],
--     expand[S]; `net:choices()` gives the per-gene counts for
--     nasrt.sampler (every list is sorted ascending, so the sandwich
--     sampler's max/min are the largest/smallest subnets);
--     `net:decode(genes)` / `net:encode(cfg)` convert.
--
-- `net:forward(x, cfg)` runs a subnet (cfg in either form);
-- `net:flops(cfg)` and `net:params(cfg)` are exact MACs (§3.3: conv +
-- linear only) and parameter counts of the subnet, computed from the config
-- alone; `net:subnet(cfg)` extracts a stand-alone static network with the
-- sliced weights copied (BN running statistics included) whose forward
-- equals the supernet's for that cfg -- the thing to BN-calibrate
-- (nn.recalibrate_bn) and evaluate.
--
-- BN momentum is 0 during supernet training by default, as AttentiveNAS
-- (`bn_momentum: 0`): running statistics come from calibrating extracted
-- subnets.  `net:set_dropout(p, drop_connect)` sets the regularisation
-- BigNAS applies to the largest child only.
-- @module nasrt.supernet.elastic
-- @usage
-- local net = nasrt.supernet.elastic{}
-- local smp = nasrt.sampler.sandwich{choices = net:choices(), seed = 0}
-- for _, genes in ipairs(smp:sample(4)) do        -- max, 2 random, min
--   local logits = net(x, genes)
--   ...
-- end
-- print(net:flops(net:sample_min()) / 1e6, "MMACs")
local core = require "nasrt.core"
local nn = require "nasrt.nn"
local blocks = require "nasrt.blocks"
local F = core.F

local M = {}

local make_divisible, py_round = blocks.make_divisible, blocks.py_round
local gap = blocks.global_avg_pool
local sqrt, max = math.sqrt, math.max

-- ------------------------------------------------------------ spaces

local function rep(v, n)
  local t = {}
  for i = 1, n do t[i] = v end
  return t
end

-- Search spaces.  `attentivenas` is the paper's table (§3.1: 224-ish
-- ImageNet, 7 stages, 31 genes); `small` (the default) is scaled for 28x28
-- Fashion-MNIST on a CPU.
M.elastic_spaces = {
  attentivenas = {
    in_channels = 3, classes = 1000, resolutions = { 192, 224, 256, 288 },
    first_conv = { width = { 16, 24 }, stride = 2 },
    stages = {
      { width = { 16, 24 }, depth = { 1, 2 }, kernel = { 3, 5 }, expand = { 1 }, stride = 1, se = false },
      { width = { 24, 32 }, depth = { 3, 4, 5 }, kernel = { 3, 5 }, expand = { 4, 5, 6 }, stride = 2,
        se = false },
      { width = { 32, 40 }, depth = { 3, 4, 5, 6 }, kernel = { 3, 5 }, expand = { 4, 5, 6 }, stride = 2,
        se = true },
      { width = { 64, 72 }, depth = { 3, 4, 5, 6 }, kernel = { 3, 5 }, expand = { 4, 5, 6 }, stride = 2,
        se = false },
      { width = { 112, 120, 128 }, depth = { 3, 4, 5, 6, 7, 8 }, kernel = { 3, 5 }, expand = { 4, 5, 6 },
        stride = 1, se = true },
      { width = { 192, 200, 208, 216 }, depth = { 3, 4, 5, 6, 7, 8 }, kernel = { 3, 5 }, expand = { 6 },
        stride = 2, se = true },
      { width = { 216, 224 }, depth = { 1, 2 }, kernel = { 3, 5 }, expand = { 6 }, stride = 1, se = true },
    },
    last_conv = { width = { 1792, 1984 } },
    act = "swish", v3_head = true,
  },
  -- NOTE(deviation): the default space keeps the paper's structure (stem,
  -- 7 stages with the paper's strides, SE flags, kernel {3, 5} and expand
  -- choices, v3 head) scaled for 28x28 on a CPU: stem stride 1 (paper 2, so
  -- 28 -> 28 -> 14 -> 7 -> 4 -> 4 -> 2 -> 2), depths at most 2-3 (paper up
  -- to 8), the widths of the last three stages and of last_conv cut
  -- (paper {112..128}, {192..216}, {216, 224}, {1792, 1984}), and a single
  -- resolution 28 (paper {192, 224, 256, 288}).
  small = {
    in_channels = 1, classes = 10, resolutions = { 28 },
    first_conv = { width = { 16, 24 }, stride = 1 },
    stages = {
      { width = { 16, 24 }, depth = { 1, 2 }, kernel = { 3, 5 }, expand = { 1 }, stride = 1, se = false },
      { width = { 24, 32 }, depth = { 1, 2 }, kernel = { 3, 5 }, expand = { 4, 5, 6 }, stride = 2,
        se = false },
      { width = { 32, 40 }, depth = { 1, 2, 3 }, kernel = { 3, 5 }, expand = { 4, 5, 6 }, stride = 2,
        se = true },
      { width = { 48, 56 }, depth = { 1, 2, 3 }, kernel = { 3, 5 }, expand = { 4, 5, 6 }, stride = 2,
        se = false },
      { width = { 64, 72 }, depth = { 1, 2, 3 }, kernel = { 3, 5 }, expand = { 4, 5, 6 }, stride = 1,
        se = true },
      { width = { 96, 112 }, depth = { 1, 2 }, kernel = { 3, 5 }, expand = { 6 }, stride = 2, se = true },
      { width = { 112, 128 }, depth = { 1 }, kernel = { 3, 5 }, expand = { 6 }, stride = 1, se = true },
    },
    last_conv = { width = { 512, 640 } },
    act = "swish", v3_head = true,
  },
}

local ACT = {
  swish = blocks.swish,
  relu = F.relu,
  relu6 = blocks.relu6,
  hswish = function(x) return F.mul(x, blocks.hsigmoid(x)) end,
}

local function fail(fn, msg, ...)
  error(fn .. ": " .. msg:format(...), 4)
end

-- a sorted copy of a list of positive integers (a single integer is a list of one)
local function int_list(v, what, fn)
  if math.type(v) == "integer" then v = { v } end
  if type(v) ~= "table" or #v == 0 then fail(fn, "%s must be a non-empty list of integers", what) end
  local out = {}
  for i, x in ipairs(v) do
    if math.type(x) ~= "integer" or x < 1 then
      fail(fn, "%s[%d] must be a positive integer, got %s", what, i, tostring(x))
    end
    out[i] = x
  end
  table.sort(out)
  for i = 2, #out do
    if out[i] == out[i - 1] then fail(fn, "%s lists %d twice", what, out[i]) end
  end
  return out
end

local function num_list(v, what, fn)
  if type(v) == "number" then v = { v } end
  if type(v) ~= "table" or #v == 0 then fail(fn, "%s must be a non-empty list of numbers", what) end
  local out = {}
  for i, x in ipairs(v) do
    if type(x) ~= "number" or x < 1 then fail(fn, "%s[%d] must be a number >= 1", what, i) end
    out[i] = x
  end
  table.sort(out)
  for i = 2, #out do
    if out[i] == out[i - 1] then fail(fn, "%s lists %s twice", what, tostring(out[i])) end
  end
  return out
end

--- A validated copy of a space with every choice list sorted ascending.
local function normalize_space(sp, fn)
  if type(sp) ~= "table" then fail(fn, "space must be a table") end
  local o = {}
  o.in_channels = int_list(sp.in_channels or 1, "in_channels", fn)[1]
  o.classes = int_list(sp.classes or 10, "classes", fn)[1]
  o.resolutions = int_list(sp.resolutions, "resolutions", fn)
  local fc = sp.first_conv
  if type(fc) ~= "table" then fail(fn, "first_conv must be a table {width = {...}, stride = s}") end
  o.first_conv = { width = int_list(fc.width, "first_conv.width", fn), stride = fc.stride or 2 }
  if o.first_conv.stride ~= 1 and o.first_conv.stride ~= 2 then
    fail(fn, "first_conv.stride must be 1 or 2")
  end
  if type(sp.stages) ~= "table" or #sp.stages == 0 then fail(fn, "stages must be a non-empty list") end
  o.stages = {}
  for s, st in ipairs(sp.stages) do
    local w = ("stages[%d]"):format(s)
    if type(st) ~= "table" then fail(fn, "%s must be a table", w) end
    local t = {
      width = int_list(st.width, w .. ".width", fn),
      depth = int_list(st.depth, w .. ".depth", fn),
      kernel = int_list(st.kernel, w .. ".kernel", fn),
      expand = num_list(st.expand, w .. ".expand", fn),
      stride = st.stride or 1,
      se = st.se and true or false,
    }
    if t.stride ~= 1 and t.stride ~= 2 then fail(fn, "%s.stride must be 1 or 2", w) end
    for _, k in ipairs(t.kernel) do
      if k % 2 == 0 then fail(fn, "%s.kernel: kernel sizes must be odd, got %d", w, k) end
    end
    t.has_expand = t.expand[#t.expand] > 1
    if t.has_expand and t.expand[1] == 1 then
      fail(fn, "%s.expand mixes 1 with larger ratios (a stage has an expand conv or not)", w)
    end
    t.kmax = t.kernel[#t.kernel]
    o.stages[s] = t
  end
  if type(sp.last_conv) ~= "table" then fail(fn, "last_conv must be a table {width = {...}}") end
  o.last_conv = { width = int_list(sp.last_conv.width, "last_conv.width", fn) }
  o.act = sp.act or "swish"
  if not ACT[o.act] then
    fail(fn, "act must be one of swish, relu, relu6, hswish, got %s", tostring(o.act))
  end
  o.v3_head = sp.v3_head ~= false
  o.head_expand = sp.head_expand or 6
  -- the width lists in gene order: first_conv, stages, last_conv
  o.widths = { o.first_conv.width }
  for _, st in ipairs(o.stages) do o.widths[#o.widths + 1] = st.width end
  o.widths[#o.widths + 1] = o.last_conv.width
  return o
end

-- expanded width of a block.
-- NOTE(deviation): §3.3's formula writes mid = make_divisible(round(c_in *
-- t), 8) for every block; a stage without an expand conv (t = 1) really
-- runs its depthwise conv on c_in channels (DynamicMBConvLayer), so mid =
-- c_in there -- the same number whenever c_in is a multiple of 8, as in
-- every AttentiveNAS width -- and flops(cfg) stays the MACs actually run.
local function mid_of(st, cin, t)
  if not st.has_expand then return cin end
  return make_divisible(py_round(cin * t), 8)
end

local function se_mid_of(mid)
  return make_divisible(mid // 4, 8)
end

local function ceil_div(a, b) return (a + b - 1) // b end

-- ------------------------------------------------------------ config handling

local CFG_KEYS = { resolution = true, width = true, depth = true, kernel = true, expand = true,
                   kernel_size = true, expand_ratio = true }

local function member(list, v)
  for i, x in ipairs(list) do if x == v then return i end end
  return nil
end

local function num_genes(sp)
  return 1 + #sp.widths + 3 * #sp.stages
end

local function choices_of(sp)
  local c = { #sp.resolutions }
  for _, w in ipairs(sp.widths) do c[#c + 1] = #w end
  for _, k in ipairs { "depth", "kernel", "expand" } do
    for _, st in ipairs(sp.stages) do c[#c + 1] = #st[k] end
  end
  return c
end

local function decode(sp, genes, fn)
  local ch = choices_of(sp)
  if type(genes) ~= "table" or #genes ~= #ch then
    fail(fn, "genes must be a list of %d choice indices", #ch)
  end
  for g = 1, #ch do
    local v = genes[g]
    if math.type(v) ~= "integer" or v < 1 or v > ch[g] then
      fail(fn, "gene %d = %s out of range 1..%d", g, tostring(v), ch[g])
    end
  end
  local S = #sp.stages
  local cfg = { resolution = sp.resolutions[genes[1]], width = {}, depth = {}, kernel = {},
                expand = {} }
  local g = 1
  for i, w in ipairs(sp.widths) do cfg.width[i] = w[genes[g + i]] end
  g = g + #sp.widths
  for s, st in ipairs(sp.stages) do
    cfg.depth[s] = st.depth[genes[g + s]]
    cfg.kernel[s] = st.kernel[genes[g + S + s]]
    cfg.expand[s] = st.expand[genes[g + 2 * S + s]]
  end
  return cfg
end

-- validated copy of a config (or decoded genes); resolution may stay nil
local function check_cfg(sp, cfg, fn)
  if type(cfg) ~= "table" then fail(fn, "expected a config table or a gene list, got %s", type(cfg)) end
  if cfg.width == nil and math.type(cfg[1]) == "integer" then return decode(sp, cfg, fn) end
  for k in pairs(cfg) do
    if not CFG_KEYS[k] then fail(fn, "unknown config key '%s'", tostring(k)) end
  end
  local S = #sp.stages
  local out = { width = {}, depth = {}, kernel = {}, expand = {} }
  if cfg.resolution ~= nil then
    if not member(sp.resolutions, cfg.resolution) then
      fail(fn, "resolution %s is not one of {%s}", tostring(cfg.resolution),
        table.concat(sp.resolutions, ", "))
    end
    out.resolution = cfg.resolution
  end
  local function list(key, alias, n)
    local v = cfg[key] or cfg[alias]
    if type(v) ~= "table" or #v ~= n then
      fail(fn, "config.%s must be a list of %d values", key, n)
    end
    return v
  end
  local w = list("width", nil, #sp.widths)
  for i, allowed in ipairs(sp.widths) do
    if not member(allowed, w[i]) then
      fail(fn, "width[%d] = %s is not one of {%s}", i, tostring(w[i]), table.concat(allowed, ", "))
    end
    out.width[i] = w[i]
  end
  for _, kk in ipairs { { "depth" }, { "kernel", "kernel_size" }, { "expand", "expand_ratio" } } do
    local v = list(kk[1], kk[2], S)
    for s, st in ipairs(sp.stages) do
      if not member(st[kk[1]], v[s]) then
        local strs = {}
        for i, x in ipairs(st[kk[1]]) do strs[i] = tostring(x) end
        fail(fn, "%s[%d] = %s is not one of {%s}", kk[1], s, tostring(v[s]), table.concat(strs, ", "))
      end
      out[kk[1]][s] = v[s]
    end
  end
  return out
end

local function encode(sp, cfg, fn)
  local c = check_cfg(sp, cfg, fn)
  local genes = { c.resolution and member(sp.resolutions, c.resolution) or #sp.resolutions }
  for i, allowed in ipairs(sp.widths) do genes[#genes + 1] = member(allowed, c.width[i]) end
  for _, k in ipairs { "depth", "kernel", "expand" } do
    for s, st in ipairs(sp.stages) do genes[#genes + 1] = member(st[k], c[k][s]) end
  end
  return genes
end

local function extreme(sp, pick)
  local cfg = { resolution = pick(sp.resolutions), width = {}, depth = {}, kernel = {}, expand = {} }
  for i, w in ipairs(sp.widths) do cfg.width[i] = pick(w) end
  for s, st in ipairs(sp.stages) do
    cfg.depth[s], cfg.kernel[s], cfg.expand[s] = pick(st.depth), pick(st.kernel), pick(st.expand)
  end
  return cfg
end

local function first(l) return l[1] end
local function last(l) return l[#l] end

-- ------------------------------------------------------------ costs (§3.3)

-- MACs and parameters of a checked config (resolution defaults to the largest)
local function cost(sp, c)
  local res = c.resolution or sp.resolutions[#sp.resolutions]
  local cin, w = sp.in_channels, c.width
  local s = ceil_div(res, sp.first_conv.stride)
  local macs = cin * w[1] * 9 * s * s
  local params = cin * w[1] * 9 + 2 * w[1]
  cin = w[1]
  for st_i, st in ipairs(sp.stages) do
    local cout, k, t = w[st_i + 1], c.kernel[st_i], c.expand[st_i]
    for j = 1, c.depth[st_i] do
      local mid = mid_of(st, cin, t)
      if st.has_expand then
        macs = macs + cin * mid * s * s                  -- expand conv, pre-stride size
        params = params + cin * mid + 2 * mid
      end
      if j == 1 and st.stride > 1 then s = ceil_div(s, st.stride) end
      macs = macs + mid * s * s * k * k                  -- depthwise
      params = params + mid * k * k + 2 * mid
      if st.se then
        local se = se_mid_of(mid)
        macs = macs + 2 * mid * se
        params = params + 2 * mid * se + se + mid
      end
      macs = macs + mid * cout * s * s                   -- project
      params = params + mid * cout + 2 * cout
      if cin ~= cout then                                -- shortcut conv
        macs = macs + cin * cout * s * s
        params = params + cin * cout
      end
      cin = cout
    end
  end
  local last_c = w[#w]
  if sp.v3_head then
    local e = sp.head_expand * cin
    macs = macs + cin * e * s * s + e * last_c
    params = params + cin * e + 2 * e + e * last_c
  else
    macs = macs + cin * last_c * s * s
    params = params + cin * last_c + 2 * last_c
  end
  macs = macs + last_c * sp.classes
  params = params + last_c * sp.classes + sp.classes
  return macs, params
end

--- MACs of a subnet of a space (§3.3's formula, not divided by 1e6),
-- without building a network.
-- @tparam table space a space table (as in elastic_spaces)
-- @tparam table cfg a config or a gene list
-- @treturn int
function M.elastic_flops(space, cfg)
  local sp = normalize_space(space, "elastic_flops")
  return (cost(sp, check_cfg(sp, cfg, "elastic_flops")))
end

--- Parameters of a subnet of a space, without building a network.
function M.elastic_params(space, cfg)
  local sp = normalize_space(space, "elastic_params")
  local _, p = cost(sp, check_cfg(sp, cfg, "elastic_params"))
  return p
end

-- ------------------------------------------------------------ dynamic layers

local function narrow_to(t, dim, n)
  if t:shape()[dim] == n then return t end
  return F.narrow(t, dim, 1, n)
end

--- A convolution whose weight is allocated at [max_out, max_in, k, k] and
-- sliced per call: first `cout` outputs, first inputs (as many as x has),
-- centre k x k crop; padding k // 2.  `depthwise` makes it grouped with one
-- group per input channel (weight [max_c, 1, k, k]).  No bias.
-- @type ElasticConv2d
local EConv = nn.class("ElasticConv2d")

function EConv:__init(max_in, max_out, k, opts)
  opts = opts or {}
  self.max_in, self.max_out, self.kernel_size = max_in, max_out, k
  self.stride = opts.stride or 1
  self.depthwise = opts.depthwise or false
  if self.depthwise then max_out = max_in end
  self:register_parameter("weight", core.zeros { max_out, self.depthwise and 1 or max_in, k, k })
end

--- The weight slice for cin inputs, cout outputs and kernel k (a view).
function EConv:weight_for(cin, cout, k)
  local fn = "ElasticConv2d"
  if cin > self.max_in then fail(fn, "input has %d channels, at most %d", cin, self.max_in) end
  if self.depthwise then cout = cin end
  if cout > self.max_out then fail(fn, "%d outputs requested, at most %d", cout, self.max_out) end
  if k > self.kernel_size or k % 2 == 0 then
    fail(fn, "kernel %d is not an odd size up to %d", k, self.kernel_size)
  end
  local w = narrow_to(self.weight, 1, cout)
  if not self.depthwise then w = narrow_to(w, 2, cin) end
  if k < self.kernel_size then
    local off = (self.kernel_size - k) // 2
    w = F.narrow(F.narrow(w, 3, off + 1, k), 4, off + 1, k)
  end
  return w
end

function EConv:forward(x, cout, k)
  local cin = x:shape()[2]
  k = k or self.kernel_size
  return F.conv2d(x, self:weight_for(cin, cout or self.max_out, k), nil,
    { stride = self.stride, padding = k // 2, groups = self.depthwise and cin or 1 })
end

function EConv:extra_repr()
  return ("max_in=%d, max_out=%d, kernel_size=%d, stride=%d%s"):format(self.max_in, self.max_out,
    self.kernel_size, self.stride, self.depthwise and ", depthwise=True" or "")
end

--- BatchNorm whose affine parameters and running statistics are allocated
-- at max_c and sliced to the input's channel count (running statistics are
-- updated in place through the slice).  Training mode uses the batch
-- statistics; eval mode the (sliced) running ones.  momentum=nil is a
-- cumulative average (nn.recalibrate_bn works on it).
-- @type ElasticBatchNorm2d
local EBN = nn.class("ElasticBatchNorm2d")

function EBN:__init(c, opts)
  opts = opts or {}
  self.num_features = c
  self.eps = 1e-5
  self.momentum = opts.momentum
  self.track_running_stats = true
  self:register_parameter("weight", core.ones { c })
  self:register_parameter("bias", core.zeros { c })
  self:register_buffer("running_mean", core.zeros { c })
  self:register_buffer("running_var", core.ones { c })
  self:register_buffer("num_batches_tracked", core.zeros {})
end

EBN.reset_running_stats = nn.BatchNorm2d.reset_running_stats

--- Views of weight, bias, running_mean, running_var for C channels.
function EBN:slices(C)
  if C > self.num_features then
    fail("ElasticBatchNorm2d", "input has %d channels, at most %d", C, self.num_features)
  end
  return narrow_to(self.weight, 1, C), narrow_to(self.bias, 1, C),
         narrow_to(self.running_mean, 1, C), narrow_to(self.running_var, 1, C)
end

--- activation: nil, "relu" or "relu6", applied in the same op
function EBN:forward(x, activation)
  local w, b, rm, rv = self:slices(x:shape()[2])
  local momentum = self.momentum or 0.0
  if self.training then
    local nbt = self.num_batches_tracked
    nbt:add_(1)
    if self.momentum == nil then momentum = 1.0 / nbt:item() end
  end
  return F.batch_norm(x, rm, rv, w, b, { training = self.training, momentum = momentum,
                                         eps = self.eps, activation = activation })
end

function EBN:extra_repr()
  return ("max=%d, momentum=%s"):format(self.num_features,
    self.momentum and ("%g"):format(self.momentum) or "None")
end

--- A linear layer allocated at [max_out, max_in], sliced to the input's
-- width and the requested outputs.
-- @type ElasticLinear
local ELinear = nn.class("ElasticLinear")

function ELinear:__init(max_in, max_out, bias)
  self.max_in, self.max_out = max_in, max_out
  self:register_parameter("weight", core.zeros { max_out, max_in })
  self:register_parameter("bias", bias and core.zeros { max_out } or nil)
end

function ELinear:slices(nin, nout)
  if nin > self.max_in or nout > self.max_out then
    fail("ElasticLinear", "[%d -> %d] exceeds the allocated [%d -> %d]", nin, nout, self.max_in,
      self.max_out)
  end
  return narrow_to(narrow_to(self.weight, 1, nout), 2, nin),
         self.bias and narrow_to(self.bias, 1, nout) or nil
end

function ELinear:forward(x, nout)
  local w, b = self:slices(x:shape()[2], nout or self.max_out)
  return F.linear(x, w, b)
end

function ELinear:extra_repr()
  return ("max_in=%d, max_out=%d, bias=%s"):format(self.max_in, self.max_out,
    self.bias and "True" or "False")
end

--- AttentiveNAS' DynamicSE: se_mid = make_divisible(mid // 4, 8); reduce
-- (bias) -> ReLU -> expand (bias) -> hard sigmoid, multiplied onto x.
-- @type ElasticSE
local ESE = nn.class("ElasticSE")

function ESE:__init(max_mid, max_se)
  self.reduce = ELinear(max_mid, max_se, true)
  self.expand = ELinear(max_se, max_mid, true)
end

function ESE:forward(x)
  local s = x:shape()
  local se = se_mid_of(s[2])
  local y = blocks.hsigmoid(self.expand(F.relu(self.reduce(gap(x), se)), s[2]))
  return F.mul(x, y:reshape { s[1], s[2], 1, 1 })
end

-- per-sample drop-connect (upstream's floor(keep + U) / keep mask)
local function drop_connect(x, p)
  local n = x:shape()[1]
  local keep = 1 - p
  local r = core.rand { n }
  local m = {}
  for i = 1, n do m[i] = (keep + r:get(i) >= 1) and 1 / keep or 0 end
  return F.mul(x, core.tensor(m):reshape { n, 1, 1, 1 })
end

--- One elastic MBConv block with its shortcut (DynamicMBConvLayer +
-- DynamicShortcutLayer in a MobileInvertedResidualBlock).
-- @type ElasticMBBlock
local EBlock = nn.class("ElasticMBBlock")

function EBlock:__init(b, bn_opts)
  self.stride, self.act_name = b.stride, b.act
  self.max_in, self.max_out, self.max_mid = b.max_in, b.max_out, b.max_mid
  rawset(self, "drop_connect_rate", 0)
  if b.has_expand then
    self.expand_conv = EConv(b.max_in, b.max_mid, 1)
    self.expand_bn = EBN(b.max_mid, bn_opts)
  end
  self.dw_conv = EConv(b.max_mid, b.max_mid, b.kmax, { stride = b.stride, depthwise = true })
  self.dw_bn = EBN(b.max_mid, bn_opts)
  if b.se then self.se = ESE(b.max_mid, b.max_se) end
  self.project_conv = EConv(b.max_mid, b.max_out, 1)
  self.project_bn = EBN(b.max_out, bn_opts)
  if b.shortcut_conv then self.shortcut_conv = EConv(b.max_in, b.max_out, 1) end
  rawset(self, "_has_expand", b.has_expand)
end

-- shortcut of x for cout outputs
function EBlock:shortcut(x, cout)
  local s = x:shape()
  if s[2] == cout and self.stride == 1 then return x end
  local h = x
  if self.stride > 1 then
    h = F.avg_pool2d(h, { kernel = self.stride, stride = self.stride, padding = s[4] % 2 })
  end
  if s[2] ~= cout then h = self.shortcut_conv(h, cout) end
  return h
end

-- BN then act; relu and relu6 in the BN's own op
local function bn_act(bn, x, name)
  local f = blocks.BN_ACTIVATIONS[name]
  if f then return bn(x, f) end
  return ACT[name](bn(x))
end

--- @tparam tensor x [N, c_in, H, W]
-- @tparam int cout output width
-- @tparam int k depthwise kernel
-- @tparam number t expand ratio
function EBlock:forward(x, cout, k, t)
  local cin = x:shape()[2]
  local h = x
  if self._has_expand then
    h = bn_act(self.expand_bn, self.expand_conv(h, make_divisible(py_round(cin * t), 8)), self.act_name)
  end
  h = bn_act(self.dw_bn, self.dw_conv(h, nil, k), self.act_name)
  if self.se then h = self.se(h) end
  h = self.project_bn(self.project_conv(h, cout))
  local identity = cin == cout and self.stride == 1
  if identity and self.training and self.drop_connect_rate > 0 then
    h = drop_connect(h, self.drop_connect_rate)
  end
  return h + self:shortcut(x, cout)
end

function EBlock:extra_repr()
  return ("max_in=%d, max_out=%d, max_mid=%d, stride=%d"):format(self.max_in, self.max_out,
    self.max_mid, self.stride)
end

-- ------------------------------------------------------------ static subnet

--- One block of an extracted subnet: blocks.MBConv (no residual of its
-- own) plus AttentiveNAS' shortcut (identity, or average pooling by the
-- stride and a 1x1 conv when the widths differ).
-- @type ElasticStaticBlock
local SBlock = nn.class("ElasticStaticBlock")

-- NOTE(deviation): upstream's static ShortcutLayer allocates its 1x1 conv
-- even when it is never used (c_in = c_out); here it exists only when the
-- widths differ, so params(cfg) counts the parameters the subnet uses.
function SBlock:__init(cin, cout, k, stride, t, mid, se_mid, act)
  self.in_channels, self.out_channels, self.stride = cin, cout, stride
  self.mb = blocks.MBConv(cin, cout, k, stride, t, { mid = mid, act = act, se = se_mid ~= nil,
    se_mid = se_mid, residual = false })
  if cin ~= cout then self.shortcut = nn.Conv2d(cin, cout, 1, { bias = false }) end
end

function SBlock:forward(x)
  local h = self.mb(x)
  local s = x:shape()
  if s[2] == self.out_channels and self.stride == 1 then return h + x end
  local sc = x
  if self.stride > 1 then
    sc = F.avg_pool2d(sc, { kernel = self.stride, stride = self.stride, padding = s[4] % 2 })
  end
  if self.shortcut then sc = self.shortcut(sc) end
  return h + sc
end

function SBlock:extra_repr()
  return ("%d, %d, stride=%d"):format(self.in_channels, self.out_channels, self.stride)
end

--- A stand-alone subnet of the elastic supernet (`net:subnet(cfg)`):
-- first_conv (conv 3x3, BN, act), blocks, the head, the classifier; `cfg`
-- records the config, `dropout` the rate before the classifier (0).
-- @type ElasticSubnet
local Subnet = nn.class("ElasticSubnet")

function Subnet:forward(x)
  local h = self.blocks(self.first_conv(x))
  local p
  if self.feature_mix then
    p = self.mix_act(self.feature_mix(gap(self.final_expand(h))))
  else
    p = gap(self.last_conv(h))
  end
  if self.training and self.dropout > 0 then p = F.dropout(p, self.dropout, true) end
  return self.classifier(p)
end

function Subnet:extra_repr()
  local c = self.cfg
  return ("resolution=%s, width={%s}, depth={%s}, kernel={%s}, expand={%s}"):format(
    tostring(c.resolution), table.concat(c.width, ","), table.concat(c.depth, ","),
    table.concat(c.kernel, ","), table.concat(c.expand, ","))
end

-- ------------------------------------------------------------ the supernet

-- options besides the space keys, with their defaults
local DEFAULTS = {
  space = "small",
  bn_momentum = 0,           -- AttentiveNAS' bn_momentum: 0 (stats come from calibration)
  zero_residual_bn = true,   -- zero gamma of every block's last BN (BigNAS init)
  init = "he_fout",          -- "he_fout" (OFA/AttentiveNAS) or "default" (PyTorch's)
}
-- space keys an option may override
local SPACE_KEYS = { in_channels = true, classes = true, resolutions = true, first_conv = true,
                     stages = true, last_conv = true, act = true, v3_head = true }

--- The AttentiveNAS/BigNAS elastic MBConv supernet (see the file header).
-- @tparam[opt] table opts {space="small"|"attentivenas"|table, and any
--   space key to override (in_channels, classes, resolutions, first_conv,
--   stages, last_conv, act, v3_head), bn_momentum=0 (false: cumulative),
--   zero_residual_bn=true, init="he_fout"}
-- @treturn ElasticSupernet
local Elastic = nn.class("ElasticSupernet")
M.elastic = Elastic

function Elastic:__init(opts)
  local fn = "elastic"
  if opts ~= nil and type(opts) ~= "table" then fail(fn, "options must be a table") end
  opts = opts or {}
  for k in pairs(opts) do
    if DEFAULTS[k] == nil and not SPACE_KEYS[k] then
      local names = {}
      for a in pairs(DEFAULTS) do names[#names + 1] = a end
      for a in pairs(SPACE_KEYS) do names[#names + 1] = a end
      table.sort(names)
      fail(fn, "unknown option '%s' (expected one of %s)", tostring(k), table.concat(names, ", "))
    end
  end
  local function get(k)
    if opts[k] == nil then return DEFAULTS[k] end
    return opts[k]
  end
  local base = get("space")
  if type(base) == "string" then
    if not M.elastic_spaces[base] then
      fail(fn, "unknown space '%s' (elastic_spaces has attentivenas, small)", base)
    end
    base = M.elastic_spaces[base]
  end
  if type(base) ~= "table" then fail(fn, "space must be a name or a table") end
  local raw = {}
  for k, v in pairs(base) do raw[k] = v end
  for k in pairs(SPACE_KEYS) do
    if opts[k] ~= nil then raw[k] = opts[k] end
  end
  local sp = normalize_space(raw, fn)
  rawset(self, "space", sp)
  local bn_momentum = get("bn_momentum")
  if bn_momentum == false then bn_momentum = nil end
  local bn_opts = { momentum = bn_momentum }

  local fc = sp.first_conv
  self.first_conv = EConv(sp.in_channels, last(fc.width), 3, { stride = fc.stride })
  self.first_bn = EBN(last(fc.width), bn_opts)
  local blist, groups = nn.ModuleList(), {}
  local prev = fc.width
  for s, st in ipairs(sp.stages) do
    groups[s] = {}
    for i = 1, last(st.depth) do
      local ins = i == 1 and prev or st.width
      local mmid, mse, need_sc = 0, 0, false
      for _, cin in ipairs(ins) do
        for _, t in ipairs(st.expand) do
          local mid = mid_of(st, cin, t)
          mmid = max(mmid, mid)
          if st.se then mse = max(mse, se_mid_of(mid)) end
        end
        for _, cout in ipairs(st.width) do
          if cin ~= cout then need_sc = true end
        end
      end
      blist:append(EBlock({ max_in = last(ins), max_out = last(st.width), max_mid = mmid,
        max_se = mse, kmax = st.kmax, stride = i == 1 and st.stride or 1,
        has_expand = st.has_expand, se = st.se, shortcut_conv = need_sc, act = sp.act }, bn_opts))
      groups[s][i] = #blist
    end
    prev = st.width
  end
  self.blocks = blist
  rawset(self, "_groups", groups)
  local cmax, lmax = last(prev), last(sp.last_conv.width)
  if sp.v3_head then
    local e = sp.head_expand * cmax
    self.final_expand_conv = EConv(cmax, e, 1)
    self.final_expand_bn = EBN(e, bn_opts)
    self.feature_mix = ELinear(e, lmax, false)
  else
    self.last_conv = EConv(cmax, lmax, 1)
    self.last_bn = EBN(lmax, bn_opts)
  end
  self.classifier = ELinear(lmax, sp.classes, true)
  rawset(self, "dropout", 0)
  rawset(self, "active", extreme(sp, last))

  local init = get("init")
  if init ~= "he_fout" and init ~= "default" then
    fail(fn, "init must be 'he_fout' or 'default', got %s", tostring(init))
  end
  if init == "he_fout" then self:_init_he_fout() else self:_init_default() end
  if get("zero_residual_bn") then
    for _, b in ipairs(self.blocks:children()) do nn.init.zeros_(b.project_bn.weight) end
  end
end

-- OFA's init_model('he_fout'): conv N(0, sqrt(2 / (k*k*out))) at the
-- allocated size, linear U(+-1/sqrt(in)) with zero bias, BN 1 / 0.
function Elastic:_init_he_fout()
  for _, m in ipairs(self:modules()) do
    local cls = getmetatable(m)
    if cls == EConv then
      local s = m.weight:shape()
      nn.init.normal_(m.weight, 0, sqrt(2 / (s[3] * s[4] * s[1])))
    elseif cls == ELinear then
      local b = 1 / sqrt(m.max_in)
      nn.init.uniform_(m.weight, -b, b)
      if m.bias then nn.init.zeros_(m.bias) end
    end
  end
end

-- PyTorch's default for conv/linear at the allocated size: U(+-1/sqrt(fan_in))
-- for weights and biases.
function Elastic:_init_default()
  for _, m in ipairs(self:modules()) do
    local cls = getmetatable(m)
    if cls == EConv or cls == ELinear then
      local fan_in = nn.init.fans(m.weight)
      local b = 1 / sqrt(fan_in)
      nn.init.uniform_(m.weight, -b, b)
      if m.bias then nn.init.uniform_(m.bias, -b, b) end
    end
  end
end

--- Per-gene choice counts (resolution, widths, depths, kernels, expands).
function Elastic:choices()
  return choices_of(self.space)
end

--- Names of the genes, for logs: {"resolution", "width1", ..., "expand7"}.
function Elastic:gene_names()
  local out = { "resolution" }
  for i = 1, #self.space.widths do out[#out + 1] = "width" .. i end
  for _, k in ipairs { "depth", "kernel", "expand" } do
    for s = 1, #self.space.stages do out[#out + 1] = k .. s end
  end
  return out
end

--- Config of a gene list.
function Elastic:decode(genes)
  return decode(self.space, genes, "elastic:decode")
end

--- Gene list of a config (a missing resolution encodes as the largest).
function Elastic:encode(cfg)
  return encode(self.space, cfg, "elastic:encode")
end

--- A validated copy of a config (or the decoding of a gene list).
function Elastic:config(cfg)
  return check_cfg(self.space, cfg, "elastic:config")
end

--- The largest subnet's config (max of every dimension).
function Elastic:sample_max()
  return extreme(self.space, last)
end

--- The smallest subnet's config.
function Elastic:sample_min()
  return extreme(self.space, first)
end

--- Sets the config forward uses when called without one (so
-- nn.recalibrate_bn and other cfg-less callers work on the supernet).
function Elastic:set_active(cfg)
  rawset(self, "active", check_cfg(self.space, cfg, "elastic:set_active"))
  return self
end

--- Dropout before the classifier and drop-connect on identity-shortcut
-- blocks (rate drop_connect * idx / #blocks, idx 0-based over all
-- allocated blocks; only in the last two stages unless all_stages), as
-- AttentiveNAS' set_dropout_rate.  Both act in training mode only.
function Elastic:set_dropout(dropout, drop_connect, all_stages)
  for _, v in ipairs { { dropout, "dropout" }, { drop_connect, "drop_connect" } } do
    if v[1] ~= nil and (type(v[1]) ~= "number" or not (v[1] >= 0 and v[1] < 1)) then
      error(("elastic:set_dropout: %s must be a number in [0, 1), got %s"):format(v[2],
        tostring(v[1])), 2)
    end
  end
  if all_stages ~= nil and type(all_stages) ~= "boolean" then
    error(("elastic:set_dropout: all_stages must be a boolean, got %s"):format(type(all_stages)), 2)
  end
  rawset(self, "dropout", dropout or 0)
  local n = #self.blocks
  local S = #self._groups
  local late = {}
  for s = math.max(1, S - 1), S do
    for _, idx in ipairs(self._groups[s]) do late[idx] = true end
  end
  for idx, b in ipairs(self.blocks:children()) do
    local r = 0
    if drop_connect and drop_connect > 0 and (all_stages or late[idx]) then
      r = drop_connect * (idx - 1) / n
    end
    rawset(b, "drop_connect_rate", r)
  end
end

--- Runs the subnet of cfg (a config or a gene list; default: the active
-- config, initially the largest).  If cfg gives a resolution, x must have
-- it.
-- NOTE(deviation): AttentiveNAS resizes its input to the active
-- resolution inside forward (bicubic); nasrt has no resize op, so the
-- caller feeds batches at the subnet's resolution (the loader resizes).
-- @tparam tensor x [N, C, H, W]
-- @tparam[opt] table cfg
-- @treturn tensor logits [N, classes]
function Elastic:forward(x, cfg)
  local sp = self.space
  local c = cfg == nil and self.active or check_cfg(sp, cfg, "elastic:forward")
  local s = x:shape()
  if #s ~= 4 or s[2] ~= sp.in_channels then
    fail("elastic:forward", "expected an input [N,%d,H,W], got [%s]", sp.in_channels,
      table.concat(s, ","))
  end
  if c.resolution and (s[3] ~= c.resolution or s[4] ~= c.resolution) then
    fail("elastic:forward", "input is %dx%d but the config's resolution is %d (resize the batch)",
      s[3], s[4], c.resolution)
  end
  local act = ACT[sp.act]
  local w = c.width
  local h = act(self.first_bn(self.first_conv(x, w[1], 3)))
  local blist = self.blocks
  for st_i, grp in ipairs(self._groups) do
    for j = 1, c.depth[st_i] do
      h = blist[grp[j]](h, w[st_i + 1], c.kernel[st_i], c.expand[st_i])
    end
  end
  local cin = h:shape()[2]
  local p
  if sp.v3_head then
    h = act(self.final_expand_bn(self.final_expand_conv(h, sp.head_expand * cin)))
    p = act(self.feature_mix(gap(h), w[#w]))
  else
    p = gap(act(self.last_bn(self.last_conv(h, w[#w]))))
  end
  if self.training and self.dropout > 0 then p = F.dropout(p, self.dropout, true) end
  return self.classifier(p)
end

--- Exact MACs of the subnet (§3.3; conv + linear only, per image; divide
-- by 1e6 for AttentiveNAS' "MFLOPs").  No forward pass.
-- @tparam table cfg config or gene list (resolution defaults to the largest)
-- @treturn int
function Elastic:flops(cfg)
  return (cost(self.space, check_cfg(self.space, cfg, "elastic:flops")))
end
Elastic.macs = Elastic.flops

--- Exact number of parameters of the extracted subnet of cfg.
function Elastic:params(cfg)
  local _, p = cost(self.space, check_cfg(self.space, cfg, "elastic:params"))
  return p
end

local function copy_from(dst, src)
  dst:copy_(src:contiguous())
end

local function copy_bn(dst, ebn)
  local C = dst.num_features
  local w, b, rm, rv = ebn:slices(C)
  copy_from(dst.weight, w)
  copy_from(dst.bias, b)
  copy_from(dst.running_mean, rm)
  copy_from(dst.running_var, rv)
  dst.num_batches_tracked:copy_(ebn.num_batches_tracked)
end

--- Extracts the subnet of cfg as a stand-alone static network (an
-- ElasticSubnet) with copies of the sliced weights, BN running statistics
-- included.  Its forward equals the supernet's forward for cfg (training
-- and eval mode); it is in the supernet's mode.
-- @tparam table cfg config or gene list
-- @treturn ElasticSubnet
function Elastic:subnet(cfg)
  local sp = self.space
  local c = check_cfg(sp, cfg, "elastic:subnet")
  local w = c.width
  local net = Subnet()
  rawset(net, "cfg", c)
  rawset(net, "dropout", 0)
  local act = sp.act
  core.no_grad(function()
    local fc = nn.Conv2d(sp.in_channels, w[1], 3, { stride = sp.first_conv.stride, padding = 1,
                                                    bias = false })
    local fbn = nn.BatchNorm2d(w[1])
    copy_from(fc.weight, self.first_conv:weight_for(sp.in_channels, w[1], 3))
    copy_bn(fbn, self.first_bn)
    net.first_conv = nn.Sequential(fc, fbn, blocks.activation(act))
    local seq = nn.Sequential()
    local cin = w[1]
    for st_i, st in ipairs(sp.stages) do
      local cout, k, t = w[st_i + 1], c.kernel[st_i], c.expand[st_i]
      for j = 1, c.depth[st_i] do
        local eb = self.blocks[self._groups[st_i][j]]
        local mid = mid_of(st, cin, t)
        local se_mid = st.se and se_mid_of(mid) or nil
        local sb = SBlock(cin, cout, k, eb.stride, t, mid, se_mid, act)
        local mb = sb.mb
        if mb.expand then
          copy_from(mb.expand[1].weight, eb.expand_conv:weight_for(cin, mid, 1))
          copy_bn(mb.expand[2], eb.expand_bn)
        end
        copy_from(mb.depthwise[1].weight, eb.dw_conv:weight_for(mid, mid, k))
        copy_bn(mb.depthwise[2], eb.dw_bn)
        if se_mid then
          local rw, rb = eb.se.reduce:slices(mid, se_mid)
          local ew, ebias = eb.se.expand:slices(se_mid, mid)
          copy_from(mb.se.fc1.weight, rw)
          copy_from(mb.se.fc1.bias, rb)
          copy_from(mb.se.fc2.weight, ew)
          copy_from(mb.se.fc2.bias, ebias)
        end
        copy_from(mb.project[1].weight, eb.project_conv:weight_for(mid, cout, 1))
        copy_bn(mb.project[2], eb.project_bn)
        if sb.shortcut then copy_from(sb.shortcut.weight, eb.shortcut_conv:weight_for(cin, cout, 1)) end
        seq:append(sb)
        cin = cout
      end
    end
    net.blocks = seq
    local lc = w[#w]
    if sp.v3_head then
      local e = sp.head_expand * cin
      local conv, bn = nn.Conv2d(cin, e, 1, { bias = false }), nn.BatchNorm2d(e)
      copy_from(conv.weight, self.final_expand_conv:weight_for(cin, e, 1))
      copy_bn(bn, self.final_expand_bn)
      net.final_expand = nn.Sequential(conv, bn, blocks.activation(act))
      local mix = nn.Linear(e, lc, { bias = false })
      copy_from(mix.weight, (self.feature_mix:slices(e, lc)))
      net.feature_mix = mix
      net.mix_act = blocks.activation(act)
    else
      local conv, bn = nn.Conv2d(cin, lc, 1, { bias = false }), nn.BatchNorm2d(lc)
      copy_from(conv.weight, self.last_conv:weight_for(cin, lc, 1))
      copy_bn(bn, self.last_bn)
      net.last_conv = nn.Sequential(conv, bn, blocks.activation(act))
    end
    local cls = nn.Linear(lc, sp.classes)
    local cw, cb = self.classifier:slices(lc, sp.classes)
    copy_from(cls.weight, cw)
    copy_from(cls.bias, cb)
    net.classifier = cls
  end)
  net:train(self.training)
  return net
end

function Elastic:extra_repr()
  local ch = self:choices()
  return ("%d stages, %d blocks allocated, %d genes {%s}"):format(#self.space.stages, #self.blocks,
    #ch, table.concat(ch, ","))
end

return M
