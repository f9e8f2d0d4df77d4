--- nasrt.blocks: the candidate operations of the NAS search spaces, as
-- nasrt.nn modules.
--
-- What is here, and where each one is specified (the reference notes in
-- ../shared/reference):
--
-- * DARTS ops (differentiable.md §1.1): `ReLUConvBN`, `SepConv`, `DilConv`,
--   `FactorizedReduce`, `PoolBN`, the table `DARTS_OPS` (name ->
--   constructor(C, stride, affine)) and `DARTS_PRIMITIVES` in the official
--   index order.  `darts_search_op(name, C, stride)` builds an op the way the
--   DARTS search network does (affine=false, pools followed by an extra
--   BatchNorm(affine=false)).  `AGNAS_PRIMITIVES` is AGNAS' own order of the
--   same 8 ops (§3.1).
-- * NAS-Bench-201 ops (§2.1): `NB201_OPS` (name -> constructor(C_in, C_out,
--   stride, affine, track_running_stats)), `NB201_PRIMITIVES`, and the
--   `ResNetBasicblock` of the macro skeleton (§2.3).  NB201 convs carry a
--   bias exactly when affine is false.
-- * Attention (§3, §4.1): `SE`, `CBAM`, `BAM`, `GEThetaPlus`,
--   `DoubleAttention`, the table `ATT_OPS` (name -> constructor(c, height,
--   width)) with `ATT_PRIMITIVES` in Att-DARTS' order, and
--   `AGNASAttention`, the concat-GAP-FC-ReLU-FC-sigmoid module of AGNAS.
-- * `MBConv` inverted residual (oneshot.md §2.3, §3.1-3.2; AGNAS §3.4).
-- * ShuffleNetV2 choice blocks of SPOS (oneshot.md §1.1): `ShuffleNetBlock`
--   (k = 3/5/7), `ShuffleXception`, `SPOS_OPS`, `SPOS_CHOICES`, and the
--   channel shuffle helpers.
--
-- Conventions.  Constructors take channel counts first, like the upstream
-- code (so a DARTS genotype or an NB201 string maps one to one).  Every
-- module here knows its `output_shape` and `macs` from shapes alone (no
-- forward pass); `flops` is 2 x macs (see nasrt.nn's header).  Ops whose
-- upstream code is an `nn.Sequential` are `nn.Sequential` subclasses here
-- too, so they print, index and cost like one.  Convolutions in DARTS and
-- SPOS ops never have a bias; NAS-Bench-201 follows its `bias = not affine`
-- rule.  BatchNorm is PyTorch's default (eps 1e-5, momentum 0.1, running
-- statistics tracked) unless stated.
--
-- Where nasrt deviates from an upstream implementation it says so in a
-- `NOTE(deviation):` comment next to the code.
-- @module nasrt.blocks
-- @usage
-- local blocks = require "nasrt.blocks"
-- local op = blocks.DARTS_OPS.sep_conv_3x3(16, 1, false)   -- C, stride, affine
-- local y = op(x)                                           -- [N,16,H,W]
-- print(op:num_parameters(), op:macs({1, 16, 32, 32}))
local core = require "nasrt.core"
local nn = require "nasrt.nn"
local F = core.F

local M = {}

local floor, max = math.floor, math.max

-- ------------------------------------------------------------ helpers



local shape_str, copy_shape, opt = nn.util.shape_str, nn.util.copy_shape, nn.util.opt

--- Accepts a shape table or a tensor (like nn's cost functions).
local function check_shape(s, fn)
  if core.is_tensor(s) then return s:shape() end
  if type(s) ~= "table" or #s == 0 then
    error(("%s: expected an input shape like {1, 16, 32, 32}"):format(fn), 3)
  end
  for i, d in ipairs(s) do
    if math.type(d) ~= "integer" or d < 0 then
      error(("%s: shape entry %d must be a non-negative integer"):format(fn, i), 3)
    end
  end
  return s
end

-- The shape of a tensor argument; anything else raises naming fn.
local function shape_of(x, fn)
  if not core.is_tensor(x) then
    error(("%s: expected a tensor input, got %s"):format(fn, x == nil and "nil" or type(x)), 3)
  end
  return x:shape()
end

local function check_input(s, channels, name)
  if #s ~= 4 then
    error(("%s: expected a 4-dim input [N,C,H,W], got %s"):format(name, shape_str(s)), 3)
  end
  if channels and s[2] ~= channels then
    error(("%s: input %s has %d channels, expected %d"):format(name, shape_str(s), s[2],
      channels), 3)
  end
end

local function check_int(v, what, fn, min)
  if math.type(v) ~= "integer" or v < (min or 1) then
    error(("%s: %s must be an integer >= %d, got %s"):format(fn, what, min or 1, tostring(v)), 3)
  end
  return v
end

local function check_stride(s, fn)
  if s ~= 1 and s ~= 2 then
    error(("%s: stride must be 1 or 2, got %s"):format(fn, tostring(s)), 3)
  end
  return s
end

--- Options: nil -> {}, a boolean -> {affine = b} (DARTS' positional
-- `affine` argument), a table is checked against the allowed keys.
local function norm_opts(o, allowed, fn)
  if o == nil then return {} end
  if type(o) == "boolean" then return { affine = o } end
  if type(o) ~= "table" then
    error(("%s: options must be a table or a boolean (affine), got %s"):format(fn, type(o)), 3)
  end
  return nn.util.check_opts(o, allowed, fn, 4)
end

local function bn2d(c, o, extra)
  local t = { affine = opt(o.affine, true), track_running_stats = opt(o.track_running_stats, true) }
  if extra then for k, v in pairs(extra) do t[k] = v end end
  return nn.BatchNorm2d(c, t)
end

--- Python's round() (half to even), used for expanded widths.
local function py_round(x)
  if type(x) ~= "number" then error(("py_round: expected a number, got %s"):format(type(x)), 2) end
  local f = floor(x)
  local d = x - f
  if d > 0.5 then return f + 1 end
  if d < 0.5 then return f end
  return f % 2 == 0 and f or f + 1
end
M.py_round = py_round

--- MobileNet's make_divisible as AttentiveNAS uses it: the multiple of
-- `divisor` nearest to v (halves up), at least `min_value`, bumped by one
-- divisor when that loses more than 10 %.
-- @tparam number v
-- @tparam[opt=8] int divisor
-- @tparam[opt=1] int min_value
-- @treturn int
function M.make_divisible(v, divisor, min_value)
  divisor = divisor or 8
  min_value = min_value or 1
  if type(v) ~= "number" or v ~= v then
    error(("make_divisible: v must be a number, got %s"):format(tostring(v)), 2)
  end
  if math.type(divisor) ~= "integer" or divisor < 1 then
    error(("make_divisible: divisor must be a positive integer, got %s"):format(tostring(divisor)), 2)
  end
  if type(min_value) ~= "number" then
    error(("make_divisible: min_value must be a number, got %s"):format(tostring(min_value)), 2)
  end
  local new = max(min_value, floor(v + divisor / 2) // divisor * divisor)
  if new < 0.9 * v then new = new + divisor end
  return math.tointeger(new) or new
end

--- Global average pooling to [N, C] (the SE/attention squeeze).
local function gap(x)
  local s = shape_of(x, "global_avg_pool")
  if #s ~= 4 then
    error(("global_avg_pool: expected an input [N,C,H,W], got %s"):format(shape_str(s)), 2)
  end
  return F.mean(x:reshape { s[1], s[2], s[3] * s[4] }, 3)
end
M.global_avg_pool = gap

-- ------------------------------------------------------------ cost model

-- Modules with their own forward derive from Block and define
-- `_cost(in_shape, opts) -> macs, out_shape`; output_shape and macs come
-- from it, so the cost of a block never needs a forward pass.

--- Base class of the multi-branch blocks.
-- @type Block
local Block = nn.class("Block")
M.Block = Block

function Block:output_shape(s)
  s = check_shape(s, self.__name .. ":output_shape")
  local _, o = self:_cost(s, {})
  return o
end

function Block:macs(s, opts)
  s = check_shape(s, self.__name .. ":macs")
  return (self:_cost(s, opts or {}))
end

function Block:_cost()
  error(("%s: _cost is not implemented"):format(self.__name), 2)
end

-- macs and output shape of module m on shape s
local function cost(m, s, opts)
  return m:macs(s, opts), m:output_shape(s)
end

-- ------------------------------------------------------------ activations

-- Elementwise modules: same shape, no cost (as nn's leaves).
local function leaf(name, fwd)
  local cls = nn.class(name)
  cls.forward = fwd
  cls.output_shape = function(_, s) return copy_shape(check_shape(s, name)) end
  cls._count = function() return 0 end
  M[name] = cls
  return cls
end

--- min(max(x, 0), 6) (one op: F.relu6).
local function relu6(x)
  return F.relu6(x)
end
M.relu6 = relu6

--- relu6(x + 3) / 6 (MobileNetV3's hard sigmoid, AttentiveNAS' SE gate).
local function hsigmoid(x)
  return F.scale(relu6(F.scale(x, 1, 3)), 1 / 6)
end
M.hsigmoid = hsigmoid

--- x * sigmoid(x).
local function swish(x)
  return F.mul(x, F.sigmoid(x))
end
M.swish = swish

--- ReLU6 activation (FairNAS, ProxylessNAS/AGNAS macro).
-- @function ReLU6
leaf("ReLU6", function(_, x) return relu6(x) end)
nn.BN_ACTIVATIONS[M.ReLU6] = "relu6"  -- a BatchNorm2d before it in a Sequential applies it
--- Hard sigmoid.
-- @function HSigmoid
leaf("HSigmoid", function(_, x) return hsigmoid(x) end)
--- Swish (x * sigmoid(x); AttentiveNAS' stage activation).
-- @function Swish
leaf("Swish", function(_, x) return swish(x) end)
--- Hard swish x * hsigmoid(x).
-- @function HSwish
leaf("HSwish", function(_, x) return F.mul(x, hsigmoid(x)) end)

local ACTIVATIONS = {
  relu = function() return nn.ReLU() end,
  relu6 = function() return M.ReLU6() end,
  swish = function() return M.Swish() end,
  hswish = function() return M.HSwish() end,
  sigmoid = function() return nn.Sigmoid() end,
  hsigmoid = function() return M.HSigmoid() end,
  identity = function() return nn.Identity() end,
}

--- An activation module by name: relu, relu6, swish, hswish, sigmoid,
-- hsigmoid or identity.
function M.activation(name)
  local f = ACTIVATIONS[name]
  if not f then
    local names = {}
    for k in pairs(ACTIVATIONS) do names[#names + 1] = k end
    table.sort(names)
    error(("activation: unknown activation '%s' (expected one of %s)"):format(tostring(name),
      table.concat(names, ", ")), 2)
  end
  return f()
end

local GATES = { sigmoid = F.sigmoid, hsigmoid = hsigmoid }

-- ------------------------------------------------------------ DARTS ops

local RCB_OPTS = { affine = true, bias = true, dilation = true, track_running_stats = true }

--- ReLU, k x k conv, BatchNorm (DARTS' and NB201's ReLUConvBN).
-- @type ReLUConvBN
-- @tparam int cin
-- @tparam int cout
-- @tparam int k kernel size
-- @tparam int stride
-- @tparam int padding
-- @tparam[opt] boolean|table opts `affine` (default true) or a table
--   {affine=true, bias=false, dilation=1, track_running_stats=true}
local ReLUConvBN = nn.class("ReLUConvBN", nn.Sequential)
M.ReLUConvBN = ReLUConvBN

function ReLUConvBN:__init(cin, cout, k, stride, padding, opts)
  opts = norm_opts(opts, RCB_OPTS, "ReLUConvBN")
  check_int(cin, "cin", "ReLUConvBN")
  check_int(cout, "cout", "ReLUConvBN")
  nn.Sequential.__init(self,
    nn.ReLU(),
    nn.Conv2d(cin, cout, k, { stride = stride or 1, padding = padding or 0,
                              dilation = opts.dilation or 1, bias = opts.bias or false }),
    bn2d(cout, opts))
end

local BN_ONLY = { affine = true, track_running_stats = true }

-- A depthwise conv without bias, and a 1x1 stride-1 conv without bias on
-- its output: the body of SepConv and DilConv.  Neither may have its own
-- forward (the cost tracer of nn.Module:macs patches one in to count).
local function is_dw(d)
  return getmetatable(d) == nn.Conv2d and rawget(d, "forward") == nil
    and d.groups == d.in_channels and d.out_channels == d.in_channels and d.bias == nil
end

local function is_pw(p, d)
  return getmetatable(p) == nn.Conv2d and rawget(p, "forward") == nil
    and p.in_channels == d.out_channels and p.groups == 1
    and p.bias == nil and p.kernel_size[1] == 1 and p.kernel_size[2] == 1
    and p.stride[1] == 1 and p.stride[2] == 1 and p.padding[1] == 0 and p.padding[2] == 0
end

--- Whether SepConv and DilConv run their [ReLU,] depthwise, 1x1 runs as one
-- `F.sep_conv2d` (default true).  Set it to false to run the children one by
-- one, e.g. to compare against the unfused ops or to swap `F.relu` for
-- another activation (the fused op applies its own ReLU).
M.fuse_sep_conv = true

-- A batch norm the middle of a SepConv can fold into `F.sep_block`: no
-- affine, batch statistics (training), its own forward.
local function is_plain_bn(b)
  return getmetatable(b) == nn.BatchNorm2d and rawget(b, "forward") == nil and b.training
    and b.weight == nil and b.bias == nil
end

-- ReLU, depthwise, 1x1 C->C, such a batch norm, ReLU, depthwise (stride 1,
-- the same kernel, padding and dilation), 1x1 at ch[i .. i+6]: the body of a
-- SepConv up to its last batch norm, one `F.sep_block`.  Returns its output
-- or nil.
local function sep_block(ch, i, x)
  local r1, d1, p1, bn, r2, d2, p2 = table.unpack(ch, i, i + 6)
  if not (p2 and getmetatable(r1) == nn.ReLU and getmetatable(r2) == nn.ReLU and is_dw(d1)
      and is_pw(p1, d1) and p1.out_channels == d1.in_channels and is_plain_bn(bn)
      and bn.num_features == p1.out_channels and is_dw(d2) and is_pw(p2, d2)
      and d2.in_channels == d1.in_channels and d2.stride[1] == 1 and d2.stride[2] == 1) then
    return nil
  end
  for j = 1, 2 do
    if d2.kernel_size[j] ~= d1.kernel_size[j] or d2.padding[j] ~= d1.padding[j]
        or d2.dilation[j] ~= d1.dilation[j] then
      return nil
    end
  end
  local rm, rv, momentum = nil, nil, bn.momentum or 0.0
  if bn.track_running_stats then
    local nbt = bn.num_batches_tracked
    nbt:add_(1)
    if bn.momentum == nil then momentum = 1.0 / nbt:item() end
    rm, rv = bn.running_mean, bn.running_var
  end
  return F.sep_block(x, d1.weight, p1.weight, d2.weight, p2.weight, rm, rv,
    { stride = d1.stride, padding = d1.padding, dilation = d1.dilation, momentum = momentum,
      eps = bn.eps })
end

-- Sequential forward in which each run of [ReLU,] depthwise conv, 1x1 conv
-- is one `F.sep_conv2d`: the same numbers, but the tape keeps only the
-- run's input (backward recomputes the ReLU and depthwise outputs), which
-- halves what a DARTS search step holds.  A SepConv's two halves with the
-- batch norm between them (training, no affine) are one `F.sep_block`.
-- Other children run as they are.
local function fused_forward(self, x, upto, ch)
  ch = ch or self:children()
  upto = upto or #ch
  if not M.fuse_sep_conv then
    for i = 1, upto do x = ch[i](x) end
    return x
  end
  local i = 1
  while i <= upto do
    local m = ch[i]
    local relu = getmetatable(m) == nn.ReLU
    local d = relu and ch[i + 1] or m
    local p = relu and ch[i + 2] or ch[i + 1]
    local y = i + 6 <= upto and relu and sep_block(ch, i, x)
    if y then
      x = y
      i = i + 7
    elseif d and p and (relu and i + 2 or i + 1) <= upto and is_dw(d) and is_pw(p, d) then
      x = F.sep_conv2d(x, d.weight, p.weight,
        { stride = d.stride, padding = d.padding, dilation = d.dilation, relu = relu })
      i = i + (relu and 3 or 2)
    else
      x = m(x)
      i = i + 1
    end
  end
  return x
end

--- Separable conv applied twice, as DARTS: [ReLU, depthwise k x k (stride s),
-- 1x1 cin->cin, BN(cin)] then [ReLU, depthwise k x k (stride 1), 1x1
-- cin->cout, BN(cout)].  Only the first depthwise conv is strided.
-- @type SepConv
-- @tparam int cin
-- @tparam int cout
-- @tparam int k
-- @tparam int stride
-- @tparam int padding
-- @tparam[opt=true] boolean|table affine or {affine=, track_running_stats=}
local SepConv = nn.class("SepConv", nn.Sequential)
M.SepConv = SepConv

function SepConv:__init(cin, cout, k, stride, padding, affine)
  local o = norm_opts(affine, BN_ONLY, "SepConv")
  check_int(cin, "cin", "SepConv")
  check_int(cout, "cout", "SepConv")
  nn.Sequential.__init(self,
    nn.ReLU(),
    nn.Conv2d(cin, cin, k, { stride = stride, padding = padding, groups = cin, bias = false }),
    nn.Conv2d(cin, cin, 1, { bias = false }),
    bn2d(cin, o),
    nn.ReLU(),
    nn.Conv2d(cin, cin, k, { stride = 1, padding = padding, groups = cin, bias = false }),
    nn.Conv2d(cin, cout, 1, { bias = false }),
    bn2d(cout, o))
end

SepConv.forward = fused_forward

--- The output before the last child (a SepConv's, DilConv's or PoolBN's
-- final batch norm), as `forward` computes it.
-- @tparam Module seq a SepConv, DilConv, PoolBN or nn.Sequential
-- @tparam Tensor x
-- @treturn Tensor
function M.forward_but_last(seq, x)
  if not nn.is_module(seq) then
    error(("forward_but_last: expected a module, got %s"):format(type(seq)), 2)
  end
  local mt = getmetatable(seq)
  local ch = seq:children()
  if #ch < 1 then
    error(("forward_but_last: %s has no children"):format(seq.__name), 2)
  end
  if mt == M.SepConv or mt == M.DilConv then return fused_forward(seq, x, #ch - 1, ch) end
  for i = 1, #ch - 1 do x = ch[i](x) end
  return x
end

--- Dilated separable conv (one pass): ReLU, depthwise k x k with dilation d
-- (stride s), 1x1 cin->cout, BN(cout).
-- @type DilConv
-- @tparam int cin
-- @tparam int cout
-- @tparam int k
-- @tparam int stride
-- @tparam int padding
-- @tparam int dilation
-- @tparam[opt=true] boolean|table affine
local DilConv = nn.class("DilConv", nn.Sequential)
M.DilConv = DilConv

function DilConv:__init(cin, cout, k, stride, padding, dilation, affine)
  local o = norm_opts(affine, BN_ONLY, "DilConv")
  check_int(cin, "cin", "DilConv")
  check_int(cout, "cout", "DilConv")
  nn.Sequential.__init(self,
    nn.ReLU(),
    nn.Conv2d(cin, cin, k, { stride = stride, padding = padding, dilation = dilation,
                             groups = cin, bias = false }),
    nn.Conv2d(cin, cout, 1, { bias = false }),
    bn2d(cout, o))
end

DilConv.forward = fused_forward

--- DARTS' conv_7x1_1x7 (in DARTS' OPS table, not in PRIMITIVES): ReLU,
-- 1x7 conv (stride (1, s)), 7x1 conv (stride (s, 1)), BN.
-- @type Conv7x1_1x7
local Conv7x1_1x7 = nn.class("Conv7x1_1x7", nn.Sequential)
M.Conv7x1_1x7 = Conv7x1_1x7

function Conv7x1_1x7:__init(c, stride, affine)
  local o = norm_opts(affine, BN_ONLY, "Conv7x1_1x7")
  check_int(c, "C", "Conv7x1_1x7")
  check_stride(stride, "Conv7x1_1x7")
  nn.Sequential.__init(self,
    nn.ReLU(),
    nn.Conv2d(c, c, { 1, 7 }, { stride = { 1, stride }, padding = { 0, 3 }, bias = false }),
    nn.Conv2d(c, c, { 7, 1 }, { stride = { stride, 1 }, padding = { 3, 0 }, bias = false }),
    bn2d(c, o))
end

local FR_OPTS = { affine = true, bias = true, track_running_stats = true, stride = true,
                  nb201 = true }

--- Halves the resolution without losing pixels: ReLU; branch A = 1x1 conv
-- stride 2 on x; branch B = 1x1 conv stride 2 on x shifted by one pixel
-- (without its first row and column); concat [A, B] on channels; BN.
--
-- DARTS (default): each branch gives cout/2 channels (cout must be even);
-- H and W must be even (DARTS' own code fails on odd sizes, here with a
-- message).  With `nb201=true` it is NAS-Bench-201's variant: cout//2 and
-- cout - cout//2 channels, x zero-padded by one on the right and bottom
-- before the shift (so odd sizes work), and stride=1 gives 1x1 conv + BN
-- (no ReLU).
-- @type FactorizedReduce
-- @tparam int cin
-- @tparam int cout
-- @tparam[opt] boolean|table opts affine, or {affine=true, bias=false,
--   track_running_stats=true, stride=2, nb201=false}
local FactorizedReduce = nn.class("FactorizedReduce", Block)
M.FactorizedReduce = FactorizedReduce

function FactorizedReduce:__init(cin, cout, opts)
  opts = norm_opts(opts, FR_OPTS, "FactorizedReduce")
  check_int(cin, "cin", "FactorizedReduce")
  check_int(cout, "cout", "FactorizedReduce")
  self.nb201 = opts.nb201 or false
  self.stride = check_stride(opts.stride or 2, "FactorizedReduce")
  self.in_channels, self.out_channels = cin, cout
  local bias = opts.bias or false
  if self.stride == 2 then
    local c1 = cout // 2
    local c2 = cout - c1
    if not self.nb201 and cout % 2 ~= 0 then
      error(("FactorizedReduce: cout must be even, got %d"):format(cout), 2)
    end
    if c1 < 1 then error("FactorizedReduce: cout must be at least 2 with stride 2", 2) end
    self.conv_1 = nn.Conv2d(cin, c1, 1, { stride = 2, bias = bias })
    self.conv_2 = nn.Conv2d(cin, c2, 1, { stride = 2, bias = bias })
  else
    if not self.nb201 then
      error("FactorizedReduce: stride 1 exists only in the NB201 variant (nb201=true)", 2)
    end
    self.conv = nn.Conv2d(cin, cout, 1, { bias = bias })
  end
  self.bn = bn2d(cout, opts)
end

-- shape fed to conv_2
function FactorizedReduce:_shifted(s)
  if self.nb201 then return s end            -- pad right/bottom by 1, then drop row/col 0
  if s[3] % 2 == 1 or s[4] % 2 == 1 then
    error(("FactorizedReduce: input %s must have an even height and width (the two " ..
      "branches would differ; use nb201=true to pad)"):format(shape_str(s)), 4)
  end
  return { s[1], s[2], s[3] - 1, s[4] - 1 }
end

--- conv_2 on x shifted by one pixel (x[:, :, 1:, 1:], zero-padded on the
-- right and bottom first when pad is true): its 1x1 stride-2 conv is run as
-- a stride-1 conv of x[:, :, 1::2, 1::2].  The same numbers, but the copy
-- the conv keeps for backward is a quarter of the shifted input.
function FactorizedReduce:_conv_shifted(x, pad)
  local c = self.conv_2
  if pad then x = F.pad(x, { 0, 1, 0, 1 }) end
  if rawget(c, "forward") then -- traced for its cost: run the module itself
    local s = x:shape()
    return c(F.narrow(F.narrow(x, 3, 2, s[3] - 1), 4, 2, s[4] - 1))
  end
  return F.conv2d(F.subsample(x, 2, 1, 1), c.weight, c.bias)
end

function FactorizedReduce:forward(x)
  if self.stride == 1 then return self.bn(self.conv(x)) end
  x = F.relu(x)
  local s = shape_of(x, "FactorizedReduce")
  check_input(s, self.in_channels, "FactorizedReduce")
  self:_shifted(s) -- even sizes unless nb201
  return self.bn(F.cat({ self.conv_1(x), self:_conv_shifted(x, self.nb201) }, 2))
end

function FactorizedReduce:_cost(s, opts)
  check_input(s, self.in_channels, "FactorizedReduce")
  if self.stride == 1 then return cost(self.conv, s, opts) end
  local m1, o1 = cost(self.conv_1, s, opts)
  local m2, o2 = cost(self.conv_2, self:_shifted(s), opts)
  if o1[3] ~= o2[3] or o1[4] ~= o2[4] then
    error(("FactorizedReduce: branches give %s and %s"):format(shape_str(o1), shape_str(o2)), 3)
  end
  return m1 + m2, { s[1], self.out_channels, o1[3], o1[4] }
end

function FactorizedReduce:extra_repr()
  return ("%d, %d, stride=%d%s"):format(self.in_channels, self.out_channels, self.stride,
    self.nb201 and ", nb201=True" or "")
end

-- 3x3 pools of DARTS and NB201: pad 1, stride s; avg excludes the padding.
local function pool3x3(kind, stride)
  if kind == "max" then
    return nn.MaxPool2d(3, { stride = stride, padding = 1 })
  elseif kind == "avg" then
    return nn.AvgPool2d(3, { stride = stride, padding = 1, count_include_pad = false })
  end
  error(("pool: kind must be 'max' or 'avg', got %s"):format(tostring(kind)), 3)
end

--- A DARTS 3x3 pool followed by BatchNorm (affine=false by default), as the
-- DARTS search network wraps its pooling ops inside the mixed op.
-- @type PoolBN
-- @tparam string kind "max" or "avg"
-- @tparam int C channels
-- @tparam int stride
-- @tparam[opt=false] boolean|table affine of the BN
local PoolBN = nn.class("PoolBN", nn.Sequential)
M.PoolBN = PoolBN

function PoolBN:__init(kind, C, stride, affine)
  local o = norm_opts(affine, BN_ONLY, "PoolBN")
  if kind ~= "max" and kind ~= "avg" then
    error(("PoolBN: kind must be 'max' or 'avg', got %s"):format(tostring(kind)), 3)
  end
  check_int(C, "C", "PoolBN")
  o = { affine = opt(o.affine, false), track_running_stats = o.track_running_stats }
  nn.Sequential.__init(self, pool3x3(kind, check_stride(stride, "PoolBN")), bn2d(C, o))
end

--- DARTS' op constructors: name -> function(C, stride, affine) (C in = C out).
-- Besides the 8 `DARTS_PRIMITIVES` it holds `sep_conv_7x7` and
-- `conv_7x1_1x7`, which DARTS' OPS table also has (NASNet/AmoebaNet genotypes).
M.DARTS_OPS = {
  none = function(_, stride) return nn.Zero(stride) end,
  avg_pool_3x3 = function(_, stride) return pool3x3("avg", stride) end,
  max_pool_3x3 = function(_, stride) return pool3x3("max", stride) end,
  skip_connect = function(C, stride, affine)
    if stride == 1 then return nn.Identity() end
    return FactorizedReduce(C, C, { affine = opt(affine, true) })
  end,
  sep_conv_3x3 = function(C, stride, affine)
    return SepConv(C, C, 3, stride, 1, opt(affine, true))
  end,
  sep_conv_5x5 = function(C, stride, affine)
    return SepConv(C, C, 5, stride, 2, opt(affine, true))
  end,
  sep_conv_7x7 = function(C, stride, affine)
    return SepConv(C, C, 7, stride, 3, opt(affine, true))
  end,
  dil_conv_3x3 = function(C, stride, affine)
    return DilConv(C, C, 3, stride, 2, 2, opt(affine, true))
  end,
  dil_conv_5x5 = function(C, stride, affine)
    return DilConv(C, C, 5, stride, 4, 2, opt(affine, true))
  end,
  conv_7x1_1x7 = function(C, stride, affine) return Conv7x1_1x7(C, stride, opt(affine, true)) end,
}

--- DARTS' PRIMITIVES in its index order (the column order of alpha).
M.DARTS_PRIMITIVES = { "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                       "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5" }

--- AGNAS' order of the same ops (`none` last; differentiable.md §3.1).
M.AGNAS_PRIMITIVES = { "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
                       "skip_connect", "avg_pool_3x3", "max_pool_3x3", "none" }

--- An op as the DARTS (and AGNAS) search network builds it inside a mixed
-- op: affine=false everywhere, and pools followed by BatchNorm(C, affine=false).
-- @tparam string name a DARTS primitive
-- @tparam int C
-- @tparam int stride
function M.darts_search_op(name, C, stride)
  local ctor = M.DARTS_OPS[name]
  if not ctor then error(("darts_search_op: unknown op '%s'"):format(tostring(name)), 2) end
  if name == "max_pool_3x3" then return PoolBN("max", C, stride, false) end
  if name == "avg_pool_3x3" then return PoolBN("avg", C, stride, false) end
  return ctor(C, stride, false)
end

-- ------------------------------------------------------------ NAS-Bench-201

--- NB201's `none`: x*0 (subsampled by the stride) when C_in = C_out, else a
-- fresh zero tensor with C_out channels.
-- NOTE(deviation): upstream keeps the input's H, W in the C_in ~= C_out
-- case even for stride 2; here the zeros are always subsampled so the
-- shape matches the other ops of the edge (the benchmark's cells never use
-- that case: all are stride 1 with C_in = C_out).
-- @type NB201Zero
local NB201Zero = nn.class("NB201Zero", Block)
M.NB201Zero = NB201Zero

function NB201Zero:__init(cin, cout, stride)
  check_int(cin, "cin", "NB201Zero")
  check_int(cout, "cout", "NB201Zero")
  self.in_channels, self.out_channels = cin, cout
  self.stride = check_int(stride or 1, "stride", "NB201Zero")
end

function NB201Zero:forward(x)
  if self.in_channels == self.out_channels then
    if self.stride ~= 1 then x = F.subsample(x, self.stride) end
    return F.scale(x, 0)
  end
  local o = self:output_shape(shape_of(x, "NB201Zero"))
  return core.zeros(o)
end

function NB201Zero:_cost(s)
  check_input(s, self.in_channels, "NB201Zero")
  local st = self.stride
  return 0, { s[1], self.out_channels, -(-s[3] // st), -(-s[4] // st) }
end

function NB201Zero:extra_repr()
  return ("C_in=%d, C_out=%d, stride=%d"):format(self.in_channels, self.out_channels, self.stride)
end

--- NB201's `avg_pool_3x3` (POOLING): a 1x1 ReLUConvBN first if C_in ~=
-- C_out, then AvgPool 3x3 (stride s, pad 1, count_include_pad=false).  No
-- BN after the pool.
-- @type NB201Pool
local NB201Pool = nn.class("NB201Pool", nn.Sequential)
M.NB201Pool = NB201Pool

function NB201Pool:__init(cin, cout, stride, affine, track)
  check_int(cin, "cin", "NB201Pool")
  check_int(cout, "cout", "NB201Pool")
  local list = {}
  if cin ~= cout then
    list[1] = ReLUConvBN(cin, cout, 1, 1, 0, { affine = affine, bias = not affine,
                                               track_running_stats = track })
  end
  list[#list + 1] = pool3x3("avg", check_stride(stride, "NB201Pool"))
  nn.Sequential.__init(self, list)
end

local function nb201_rcb(cin, cout, k, stride, affine, track)
  return ReLUConvBN(cin, cout, k, stride, (k - 1) // 2,
    { affine = affine, bias = not affine, track_running_stats = track })
end

--- NAS-Bench-201 op constructors: name -> function(C_in, C_out, stride,
-- affine, track_running_stats) (affine and track_running_stats default to
-- true; the search supernet passes affine=false).
M.NB201_OPS = {
  none = function(cin, cout, stride) return NB201Zero(cin, cout, stride) end,
  skip_connect = function(cin, cout, stride, affine, track)
    if stride == 1 and cin == cout then return nn.Identity() end
    affine, track = opt(affine, true), opt(track, true)
    return FactorizedReduce(cin, cout, { stride = stride, nb201 = true, affine = affine,
                                         bias = not affine, track_running_stats = track })
  end,
  nor_conv_1x1 = function(cin, cout, stride, affine, track)
    return nb201_rcb(cin, cout, 1, stride, opt(affine, true), opt(track, true))
  end,
  nor_conv_3x3 = function(cin, cout, stride, affine, track)
    return nb201_rcb(cin, cout, 3, stride, opt(affine, true), opt(track, true))
  end,
  avg_pool_3x3 = function(cin, cout, stride, affine, track)
    return NB201Pool(cin, cout, stride, opt(affine, true), opt(track, true))
  end,
}

--- NAS-Bench-201's op list in its order (the column order of alpha).
M.NB201_PRIMITIVES = { "none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3" }

--- The residual block between NB201 stages: branch = ReLUConvBN 3x3
-- (stride s) then ReLUConvBN 3x3; shortcut = AvgPool 2x2 stride 2 + 1x1
-- conv (no bias, no BN) when s = 2, a 1x1 ReLUConvBN when s = 1 and the
-- widths differ, else identity; output = shortcut + branch.
-- @type ResNetBasicblock
-- @tparam int inplanes
-- @tparam int planes
-- @tparam int stride 1 or 2
-- @tparam[opt=true] boolean affine
-- @tparam[opt=true] boolean track_running_stats
local ResNetBasicblock = nn.class("ResNetBasicblock", Block)
M.ResNetBasicblock = ResNetBasicblock
M.ResNetBasicBlock = ResNetBasicblock

function ResNetBasicblock:__init(inplanes, planes, stride, affine, track)
  check_int(inplanes, "inplanes", "ResNetBasicblock")
  check_int(planes, "planes", "ResNetBasicblock")
  check_stride(stride, "ResNetBasicblock")
  affine, track = opt(affine, true), opt(track, true)
  self.in_channels, self.out_channels, self.stride = inplanes, planes, stride
  self.conv_a = nb201_rcb(inplanes, planes, 3, stride, affine, track)
  self.conv_b = nb201_rcb(planes, planes, 3, 1, affine, track)
  if stride == 2 then
    self.downsample = nn.Sequential(nn.AvgPool2d(2, { stride = 2, padding = 0 }),
      nn.Conv2d(inplanes, planes, 1, { bias = false }))
  elseif inplanes ~= planes then
    self.downsample = nb201_rcb(inplanes, planes, 1, 1, affine, track)
  end
end

function ResNetBasicblock:forward(x)
  local b = self.conv_b(self.conv_a(x))
  local r = self.downsample and self.downsample(x) or x
  return r + b
end

function ResNetBasicblock:_cost(s, opts)
  check_input(s, self.in_channels, "ResNetBasicblock")
  local ma, oa = cost(self.conv_a, s, opts)
  local mb, ob = cost(self.conv_b, oa, opts)
  local md = 0
  if self.downsample then
    local od
    md, od = cost(self.downsample, s, opts)
    if od[3] ~= ob[3] or od[4] ~= ob[4] then
      error(("ResNetBasicblock: shortcut %s and branch %s differ (odd input size?)"):format(
        shape_str(od), shape_str(ob)), 3)
    end
  end
  return ma + mb + md, ob
end

-- ------------------------------------------------------------ attention

local SE_OPTS = { reduction = true, mid = true, divisor = true, bias = true, gate = true,
                  act = true }

local function gate_fn(name, fn)
  local g = GATES[name]
  if not g then
    error(("%s: gate must be 'sigmoid' or 'hsigmoid', got %s"):format(fn, tostring(name)), 3)
  end
  return g
end

--- Squeeze-and-excitation: GAP -> FC c->mid -> act -> FC mid->c -> gate,
-- then x * mask (per channel).  Defaults are Att-DARTS' SE (r = 16, no
-- bias, ReLU, sigmoid); MBConv uses AttentiveNAS' form (mid =
-- make_divisible(c // 4, 8), bias, hard-sigmoid).  The FCs are `nn.Linear`
-- on the pooled [N, c] (the same numbers as 1x1 convs).
-- NOTE(deviation): mid is at least 1 (upstream's c // r is 0 for c < r and
-- fails to build).
-- @type SE
-- @tparam int c channels
-- @tparam[opt] table opts {reduction=16, mid=c//reduction, divisor=nil
--   (make_divisible(c // reduction, divisor)), bias=false, act="relu",
--   gate="sigmoid"|"hsigmoid"}
local SE = nn.class("SE", Block)
M.SE = SE

function SE:__init(c, opts)
  opts = norm_opts(opts, SE_OPTS, "SE")
  check_int(c, "channels", "SE")
  local r = opts.reduction or 16
  local mid = opts.mid
  if mid == nil then
    mid = opts.divisor and M.make_divisible(c // r, opts.divisor) or max(1, c // r)
  end
  check_int(mid, "mid", "SE")
  self.channels, self.mid = c, mid
  self.gate_name = opts.gate or "sigmoid"
  self._gate = gate_fn(self.gate_name, "SE")
  local bias = opts.bias or false
  self.fc1 = nn.Linear(c, mid, { bias = bias })
  self.act = M.activation(opts.act or "relu")
  self.fc2 = nn.Linear(mid, c, { bias = bias })
end

--- The per-channel weights [N, c, 1, 1] (in (0, 1)).
function SE:mask(x)
  local s = shape_of(x, "SE")
  check_input(s, self.channels, "SE")
  local y = self._gate(self.fc2(self.act(self.fc1(gap(x)))))
  return y:reshape { s[1], s[2], 1, 1 }
end

function SE:forward(x)
  return F.mul(x, self:mask(x))
end

function SE:_cost(s, opts)
  check_input(s, self.channels, "SE")
  local p = { s[1], s[2] }
  local m1, o1 = cost(self.fc1, p, opts)
  return m1 + self.fc2:macs(o1, opts), copy_shape(s)
end

function SE:extra_repr()
  return ("%d, mid=%d, gate=%s"):format(self.channels, self.mid, self.gate_name)
end

--- CBAM: channel attention sigmoid(MLP(GAP(x)) + MLP(GMP(x))) with one
-- shared MLP (FC c->c/r with bias, ReLU, FC ->c with bias); then spatial
-- attention on x' = c_att * x: [max over channels, mean over channels] ->
-- 7x7 conv 2->1 (pad 3, no bias) -> BN(eps 1e-5, momentum 0.01, affine)
-- -> sigmoid.  Output x * (s_att(x') * c_att) (Att-DARTS' ConvolutionalBAM).
-- NOTE(deviation): hidden width is at least 1 (upstream fails for c < r).
-- @type CBAM
-- @tparam int c
-- @tparam[opt] table opts {reduction=16, no_spatial=false}
local CBAM = nn.class("CBAM", Block)
M.CBAM = CBAM

function CBAM:__init(c, opts)
  opts = norm_opts(opts, { reduction = true, no_spatial = true }, "CBAM")
  check_int(c, "channels", "CBAM")
  local h = max(1, c // (opts.reduction or 16))
  self.channels, self.hidden = c, h
  self.no_spatial = opts.no_spatial or false
  self.mlp = nn.Sequential(nn.Linear(c, h), nn.ReLU(), nn.Linear(h, c))
  if not self.no_spatial then
    self.spatial_conv = nn.Conv2d(2, 1, 7, { padding = 3, bias = false })
    self.spatial_bn = nn.BatchNorm2d(1, { eps = 1e-5, momentum = 0.01, affine = true })
  end
end

--- The combined mask s_att(c_att * x) * c_att, broadcast to x's shape.
function CBAM:mask(x)
  local s = shape_of(x, "CBAM")
  check_input(s, self.channels, "CBAM")
  local flat = x:reshape { s[1], s[2], s[3] * s[4] }
  local avg = F.mean(flat, 3)
  local mx = (F.max(flat, 3))
  local c_att = F.sigmoid(self.mlp(avg) + self.mlp(mx)):reshape { s[1], s[2], 1, 1 }
  if self.no_spatial then return c_att end
  local xc = F.mul(c_att, x)
  local pooled = F.cat({ (F.max(xc, 2, true)), F.mean(xc, 2, true) }, 2)
  local s_att = F.sigmoid(self.spatial_bn(self.spatial_conv(pooled)))
  return F.mul(s_att, c_att)
end

function CBAM:forward(x)
  return F.mul(x, self:mask(x))
end

function CBAM:_cost(s, opts)
  check_input(s, self.channels, "CBAM")
  local mlp = 2 * self.mlp:macs({ s[1], s[2] }, opts)
  local sp = 0
  if not self.no_spatial then sp = self.spatial_conv:macs({ s[1], 2, s[3], s[4] }, opts) end
  return mlp + sp, copy_shape(s)
end

function CBAM:extra_repr()
  return ("%d, hidden=%d%s"):format(self.channels, self.hidden,
    self.no_spatial and ", no_spatial=True" or "")
end

--- BAM as Att-DARTS builds it (default `paper=false`): channel gate = GAP
-- -> [FC c->c/r (bias), BatchNorm1d, ReLU] x num_layers -> FC -> c (bias);
-- spatial gate = 1x1 conv c->c/r (bias) -> BN -> ReLU -> num_dilated x [3x3
-- conv c/r->c/r, dilation d, pad d (bias), BN, ReLU] -> 1x1 conv -> 1 map
-- (bias); mask = 1 + sigmoid(channel_gate * spatial_gate) (broadcast and
-- multiplied, as that code does); output x * mask.  With `paper=true` the
-- hidden BNs are dropped and a BN follows the final FC and the final conv.
-- NOTE(deviation): the channel gate's pooling is a true global average
-- (upstream pools with an H x H window, the same for square inputs), and
-- the hidden width is at least 1.
-- @type BAM
-- @tparam int c
-- @tparam[opt] table opts {reduction=16, dilation=4, num_dilated=2, num_layers=1, paper=false}
local BAM = nn.class("BAM", Block)
M.BAM = BAM

function BAM:__init(c, opts)
  opts = norm_opts(opts, { reduction = true, dilation = true, num_dilated = true,
                           num_layers = true, paper = true }, "BAM")
  check_int(c, "channels", "BAM")
  local h = max(1, c // (opts.reduction or 16))
  local d = opts.dilation or 4
  local paper = opts.paper or false
  self.channels, self.hidden, self.paper = c, h, paper
  local cg = nn.Sequential()
  local width = c
  for _ = 1, opts.num_layers or 1 do
    cg:append(nn.Linear(width, h))
    if not paper then cg:append(nn.BatchNorm1d(h)) end
    cg:append(nn.ReLU())
    width = h
  end
  cg:append(nn.Linear(width, c))
  if paper then cg:append(nn.BatchNorm1d(c)) end
  self.channel_gate = cg
  local sg = nn.Sequential(nn.Conv2d(c, h, 1))
  if not paper then sg:append(nn.BatchNorm2d(h)) end
  sg:append(nn.ReLU())
  for _ = 1, opts.num_dilated or 2 do
    sg:append(nn.Conv2d(h, h, 3, { padding = d, dilation = d }))
    if not paper then sg:append(nn.BatchNorm2d(h)) end
    sg:append(nn.ReLU())
  end
  sg:append(nn.Conv2d(h, 1, 1))
  if paper then sg:append(nn.BatchNorm2d(1)) end
  self.spatial_gate = sg
end

--- The mask 1 + sigmoid(channel_gate * spatial_gate), [N, c, H, W].
function BAM:mask(x)
  local s = shape_of(x, "BAM")
  check_input(s, self.channels, "BAM")
  local cg = self.channel_gate(gap(x)):reshape { s[1], s[2], 1, 1 }
  local sg = self.spatial_gate(x)
  return F.scale(F.sigmoid(F.mul(cg, sg)), 1, 1)
end

function BAM:forward(x)
  return F.mul(x, self:mask(x))
end

function BAM:_cost(s, opts)
  check_input(s, self.channels, "BAM")
  return self.channel_gate:macs({ s[1], s[2] }, opts) + self.spatial_gate:macs(s, opts),
    copy_shape(s)
end

function BAM:extra_repr()
  return ("%d, hidden=%d%s"):format(self.channels, self.hidden, self.paper and ", paper=True" or "")
end

--- Att-DARTS' GE_theta-plus (gather-excite, global extent, extra params,
-- MLP): depthwise conv with a kernel as large as the feature map (no pad,
-- no bias) -> BN -> 1x1 conv c->c/16 (no bias) -> ReLU -> 1x1 conv ->c (no
-- bias) -> sigmoid, broadcast back to H x W (upstream's nearest upsample
-- of a 1x1 map); output x * mask.  Built per feature size: the input must
-- be `spatial` x `spatial`.
-- @type GEThetaPlus
-- @tparam int c
-- @tparam int spatial the feature map's height (= width)
-- @tparam[opt] table opts {reduction=16}
local GEThetaPlus = nn.class("GEThetaPlus", Block)
M.GEThetaPlus = GEThetaPlus

function GEThetaPlus:__init(c, spatial, opts)
  opts = norm_opts(opts, { reduction = true }, "GEThetaPlus")
  check_int(c, "channels", "GEThetaPlus")
  self.channels = c
  self.spatial = check_int(spatial, "spatial", "GEThetaPlus")
  local h = max(1, c // (opts.reduction or 16))
  self.downop = nn.Sequential(nn.Conv2d(c, c, spatial, { groups = c, bias = false }),
    nn.BatchNorm2d(c))
  self.mlp = nn.Sequential(nn.Conv2d(c, h, 1, { bias = false }), nn.ReLU(),
    nn.Conv2d(h, c, 1, { bias = false }))
end

local function check_spatial(self, s)
  check_input(s, self.channels, "GEThetaPlus")
  if s[3] ~= self.spatial or s[4] ~= self.spatial then
    error(("GEThetaPlus: input %s must be %dx%d (the module is built per feature size)"):format(
      shape_str(s), self.spatial, self.spatial), 4)
  end
end

function GEThetaPlus:mask(x)
  check_spatial(self, shape_of(x, "GEThetaPlus"))
  return F.sigmoid(self.mlp(self.downop(x)))
end

function GEThetaPlus:forward(x)
  return F.mul(x, self:mask(x))
end

function GEThetaPlus:_cost(s, opts)
  check_spatial(self, s)
  local m1, o1 = cost(self.downop, s, opts)
  return m1 + self.mlp:macs(o1, opts), copy_shape(s)
end

--- A^2-Net double attention (k = 1), as in Att-DARTS: 1x1 convs (bias)
-- A: c->c_m, B: c->c_n, V: c->c_n; softmax of B over positions, of V over
-- channels; G = A softmax(B)^T ([c_m, c_n] per sample); Z = G softmax(V);
-- output x + 1x1 conv c_m->c (bias) of Z.
-- @type DoubleAttention
-- @tparam int c
-- @tparam[opt] table opts {c_m=c//4, c_n=c//4}
local DoubleAttention = nn.class("DoubleAttention", Block)
M.DoubleAttention = DoubleAttention

function DoubleAttention:__init(c, opts)
  opts = norm_opts(opts, { c_m = true, c_n = true }, "DoubleAttention")
  check_int(c, "channels", "DoubleAttention")
  local cm, cn = opts.c_m or max(1, c // 4), opts.c_n or max(1, c // 4)
  self.channels, self.c_m, self.c_n = c, cm, cn
  self.convA = nn.Conv2d(c, cm, 1)
  self.convB = nn.Conv2d(c, cn, 1)
  self.convV = nn.Conv2d(c, cn, 1)
  self.convZ = nn.Conv2d(cm, c, 1)
end

function DoubleAttention:forward(x)
  local s = shape_of(x, "DoubleAttention")
  check_input(s, self.channels, "DoubleAttention")
  local b, hw = s[1], s[3] * s[4]
  local A = self.convA(x):reshape { b, self.c_m, hw }
  local B = F.softmax(self.convB(x):reshape { b, self.c_n, hw }, 3)   -- over positions
  local V = F.softmax(self.convV(x):reshape { b, self.c_n, hw }, 2)   -- over channels
  local G = F.matmul(A, F.transpose(B, 2, 3):contiguous())           -- [b, c_m, c_n]
  local Z = F.matmul(G, V):reshape { b, self.c_m, s[3], s[4] }      -- [b, c_m, H, W]
  return self.convZ(Z) + x
end

function DoubleAttention:_cost(s, opts)
  check_input(s, self.channels, "DoubleAttention")
  local hw = s[3] * s[4]
  local m = self.convA:macs(s, opts) + self.convB:macs(s, opts) + self.convV:macs(s, opts)
  m = m + self.convZ:macs({ s[1], self.c_m, s[3], s[4] }, opts)
  m = m + 2 * s[1] * self.c_m * self.c_n * hw            -- the two batched matmuls
  return m, copy_shape(s)
end

--- Att-DARTS' attention constructors: name -> function(c, height, width).
M.ATT_OPS = {
  Identity = function() return nn.Identity() end,
  SE = function(c) return SE(c, { reduction = 16 }) end,
  BAM = function(c) return BAM(c) end,
  CBAM = function(c) return CBAM(c) end,
  ["GE_theta-plus"] = function(c, height) return GEThetaPlus(c, height) end,
  DoubleAttention = function(c) return DoubleAttention(c) end,
}

--- Att-DARTS' attention list in its order (the column order of beta).
M.ATT_PRIMITIVES = { "Identity", "SE", "BAM", "CBAM", "GE_theta-plus", "DoubleAttention" }

--- AGNAS' attention module over n concatenated candidate outputs of C
-- channels each: GAP -> FC nC -> nC/ratio (no bias) -> ReLU -> FC -> nC
-- (no bias) -> sigmoid.  `forward(x)` takes the concatenation [N, nC, H, W]
-- and returns the per-channel weights [N, nC, 1, 1] (as the macro search's
-- module does); `mix(list)` runs a whole edge/layer: weights of the
-- concatenated candidates, then sum_i list[i] * weights_i.
-- Ratio 8 is the micro (DARTS-space) module, 16 the macro (ProxylessNAS) one.
--
-- `mix` never materialises the nC-channel concatenation: the GAP of a
-- concatenation is the concatenation of the GAPs, and the weighted sum is
-- F.attn_sum (one fused pass) when the core provides it.  The numbers are
-- those of the upstream concat -> GAP -> FC -> scale -> slice-sum.
-- @type AGNASAttention
-- @tparam int C channels of one candidate
-- @tparam int n number of candidates
-- @tparam[opt] table opts {ratio=8}
local AGNASAttention = nn.class("AGNASAttention", Block)
M.AGNASAttention = AGNASAttention

function AGNASAttention:__init(C, n, opts)
  opts = norm_opts(opts, { ratio = true }, "AGNASAttention")
  check_int(C, "C", "AGNASAttention")
  check_int(n, "n", "AGNASAttention")
  self.C, self.n, self.ratio = C, n, opts.ratio or 8
  self.channels = C * n
  local h = self.channels // self.ratio
  if h < 1 then
    error(("AGNASAttention: %d channels / ratio %d leaves no hidden unit"):format(
      self.channels, self.ratio), 2)
  end
  self.hidden = h
  self.fc1 = nn.Linear(self.channels, h, { bias = false })
  self.fc2 = nn.Linear(h, self.channels, { bias = false })
end

--- Weights [N, nC] from the pooled candidates [N, nC].
function AGNASAttention:weights(pooled)
  return F.sigmoid(self.fc2(F.relu(self.fc1(pooled))))
end

--- Per-channel weights [N, nC, 1, 1] of the concatenated candidates.
function AGNASAttention:forward(x)
  local s = shape_of(x, "AGNASAttention")
  check_input(s, self.channels, "AGNASAttention")
  return self:weights(gap(x)):reshape { s[1], s[2], 1, 1 }
end

--- Mixes a list of n candidate outputs (each [N, C, H, W]).
-- @treturn tensor sum_i list[i] * weights[:, (i-1)C+1 .. iC]   [N, C, H, W]
-- @treturn tensor the weights [N, nC]
function AGNASAttention:mix(list)
  if type(list) ~= "table" or #list ~= self.n then
    error(("AGNASAttention:mix: expected a list of %d candidate outputs, got %s"):format(
      self.n, type(list) == "table" and #list or type(list)), 2)
  end
  local pooled = {}
  for i = 1, self.n do
    local s = shape_of(list[i], "AGNASAttention:mix")
    check_input(s, self.C, "AGNASAttention:mix")
    pooled[i] = gap(list[i])
  end
  local y = self:weights(F.cat(pooled, 2))
  if F.attn_sum then return F.attn_sum(list, y), y end
  local out
  local s = list[1]:shape()
  for i = 1, self.n do
    local w = F.narrow(y, 2, (i - 1) * self.C + 1, self.C):reshape { s[1], self.C, 1, 1 }
    local t = F.mul(list[i], w)
    out = out and out + t or t
  end
  return out, y
end

function AGNASAttention:_cost(s, opts)
  check_input(s, self.channels, "AGNASAttention")
  local m1, o1 = cost(self.fc1, { s[1], s[2] }, opts)
  return m1 + self.fc2:macs(o1, opts), { s[1], s[2], 1, 1 }
end

function AGNASAttention:extra_repr()
  return ("C=%d, n=%d, ratio=%d"):format(self.C, self.n, self.ratio)
end

--- Per-candidate scores of AGNAS weights: the sum over the batch and the
-- candidate's C channels (divided by C with `mean_channels`, as the macro
-- search's compute_attention does).  Detached; returns a Lua list of n numbers.
-- @tparam tensor y weights [N, nC, 1, 1] (or [N, nC])
-- @tparam int n number of candidates
-- @tparam[opt=false] boolean mean_channels
function M.agnas_scores(y, n, mean_channels)
  local s = shape_of(y, "agnas_scores")
  if math.type(n) ~= "integer" or n < 1 then
    error(("agnas_scores: n (the number of candidates) must be a positive integer, got %s"):format(
      tostring(n)), 2)
  end
  if #s ~= 2 and #s ~= 4 then
    error(("agnas_scores: expected attention weights [N,C] or [N,C,1,1], got %s"):format(
      shape_str(s)), 2)
  end
  local C = s[2] // n
  if C * n ~= s[2] then
    error(("agnas_scores: %d channels do not split into %d candidates"):format(s[2], n), 2)
  end
  return core.no_grad(function()
    local per = F.sum(F.sum(y:reshape { s[1], n, C }, 3), 1)
    if mean_channels then per = F.scale(per, 1 / C) end
    local out = {}
    for i = 1, n do out[i] = per:get(i) end
    return out
  end)
end

-- ------------------------------------------------------------ MBConv

local MB_OPTS = { se = true, act = true, affine = true, track_running_stats = true, mid = true,
                  mid_divisor = true, residual = true, se_reduction = true, se_divisor = true,
                  se_mid = true, se_gate = true, se_bias = true }

--- Inverted residual (MobileNetV2 MBConv): 1x1 expand conv to mid =
-- round(cin * e) -> BN -> act (skipped when e = 1), k x k depthwise conv
-- (stride s, pad k//2) -> BN -> act, optional SE, 1x1 project conv -> BN;
-- identity residual iff stride = 1 and cin = cout.  All convs have no bias.
-- act defaults to ReLU6 (FairNAS, AGNAS/ProxylessNAS); AttentiveNAS uses
-- "swish".  The SE defaults to AttentiveNAS' (se_mid = make_divisible(mid
-- // 4, 8), FCs with bias, ReLU, hard-sigmoid gate), placed after the
-- depthwise activation.
-- @type MBConv
-- @tparam int cin
-- @tparam int cout
-- @tparam int k depthwise kernel (odd)
-- @tparam int stride
-- @tparam number e expansion ratio
-- @tparam[opt] table opts {se=false, act="relu6", affine=true,
--   track_running_stats=true, mid=round(cin*e), mid_divisor=nil
--   (AttentiveNAS: make_divisible(round(cin*e), 8)), residual=auto,
--   se_reduction=4, se_divisor=8, se_mid=nil, se_gate="hsigmoid", se_bias=true}
local MBConv = nn.class("MBConv", Block)
M.MBConv = MBConv

function MBConv:__init(cin, cout, k, stride, e, opts)
  opts = norm_opts(opts, MB_OPTS, "MBConv")
  check_int(cin, "cin", "MBConv")
  check_int(cout, "cout", "MBConv")
  check_int(k, "kernel size", "MBConv")
  check_int(stride, "stride", "MBConv")
  if k % 2 == 0 then error(("MBConv: kernel size must be odd, got %d"):format(k), 2) end
  if type(e) ~= "number" or not (e > 0 and e < math.huge) then
    error(("MBConv: expansion ratio must be a positive number, got %s"):format(tostring(e)), 2)
  end
  local mid = opts.mid
  if mid == nil then
    mid = py_round(cin * e)
    if opts.mid_divisor then mid = M.make_divisible(mid, opts.mid_divisor) end
  end
  check_int(mid, "mid", "MBConv")
  self.in_channels, self.out_channels, self.kernel_size = cin, cout, k
  self.stride, self.expand_ratio, self.mid = stride, e, mid
  local act = opts.act or "relu6"
  self.act_name = act
  if e ~= 1 then
    self.expand = nn.Sequential(nn.Conv2d(cin, mid, 1, { bias = false }), bn2d(mid, opts),
      M.activation(act))
  elseif mid ~= cin then
    error(("MBConv: with e = 1 there is no expand conv, so mid must equal cin (%d), got %d"):format(
      cin, mid), 2)
  end
  self.depthwise = nn.Sequential(
    nn.Conv2d(mid, mid, k, { stride = stride, padding = k // 2, groups = mid, bias = false }),
    bn2d(mid, opts), M.activation(act))
  if opts.se then
    self.se = SE(mid, { mid = opts.se_mid, reduction = opts.se_reduction or 4,
                        divisor = opts.se_mid == nil and opt(opts.se_divisor, 8) or nil,
                        bias = opt(opts.se_bias, true), gate = opts.se_gate or "hsigmoid" })
  end
  self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, { bias = false }), bn2d(cout, opts))
  local auto = stride == 1 and cin == cout
  self.use_residual = opt(opts.residual, auto)
  if self.use_residual and not auto then
    error("MBConv: a residual needs stride 1 and cin == cout", 2)
  end
end

--- The activations a batch norm can apply in its own op (name -> the
-- `activation` option of `nn.BatchNorm2d` / `F.batch_norm`).
M.BN_ACTIVATIONS = { relu = "relu", relu6 = "relu6" }

-- expand and depthwise are conv -> BN -> activation Sequentials: a relu or
-- relu6 runs in the BN's own op there (nn.BN_ACTIVATIONS)
function MBConv:forward(x)
  local h = x
  if self.expand then h = self.expand(h) end
  h = self.depthwise(h)
  if self.se then h = self.se(h) end
  h = self.project(h)
  if self.use_residual then h = h + x end
  return h
end

function MBConv:_cost(s, opts)
  check_input(s, self.in_channels, "MBConv")
  local total, o = 0, s
  for _, m in ipairs { self.expand or false, self.depthwise, self.se or false, self.project } do
    if m then
      local mm
      mm, o = cost(m, o, opts)
      total = total + mm
    end
  end
  return total, o
end

function MBConv:extra_repr()
  return ("%d, %d, kernel_size=%d, stride=%d, expand_ratio=%s, mid=%d, act=%s%s%s"):format(
    self.in_channels, self.out_channels, self.kernel_size, self.stride,
    tostring(self.expand_ratio), self.mid, self.act_name, self.se and ", se=True" or "",
    self.use_residual and ", residual=True" or "")
end

-- ------------------------------------------------------------ SPOS / ShuffleNetV2

--- SPOS' fused channel shuffle + split: the channels at even (0-based)
-- indices and those at odd indices, each [N, C/2, H, W].
-- @tparam tensor x [N, C, H, W], C even
-- @treturn tensor x[:, 0::2]
-- @treturn tensor x[:, 1::2]
function M.shuffle_split(x)
  local s = shape_of(x, "shuffle_split")
  if #s ~= 4 or s[2] % 2 ~= 0 then
    error(("shuffle_split: expected [N,C,H,W] with C even, got %s"):format(shape_str(s)), 2)
  end
  local half = s[2] // 2
  local r = x:reshape { s[1], half, 2, s[3], s[4] }
  return F.narrow(r, 3, 1, 1):reshape { s[1], half, s[3], s[4] },
         F.narrow(r, 3, 2, 1):reshape { s[1], half, s[3], s[4] }
end

--- ShuffleNet's channel shuffle with g groups: channel j*g + i of the
-- output is channel i*(C/g) + j of the input (as PC-DARTS/ShuffleNet).
-- @tparam tensor x [N, C, H, W]
-- @tparam int groups
function M.channel_shuffle(x, groups)
  local s = shape_of(x, "channel_shuffle")
  if #s ~= 4 or math.type(groups) ~= "integer" or groups < 1 or s[2] % groups ~= 0 then
    error(("channel_shuffle: %s cannot be shuffled in %s groups"):format(shape_str(s),
      tostring(groups)), 2)
  end
  local r = x:reshape { s[1], groups, s[2] // groups, s[3], s[4] }
  return F.transpose(r, 2, 3):reshape(s)
end

local SPOS_BLOCK_OPTS = { affine = true, track_running_stats = true }

-- stride-2 projection branch: k x k depthwise stride 2, BN, 1x1, BN, ReLU
local function spos_proj(inp, k, o)
  return nn.Sequential(
    nn.Conv2d(inp, inp, k, { stride = 2, padding = k // 2, groups = inp, bias = false }),
    bn2d(inp, o),
    nn.Conv2d(inp, inp, 1, { bias = false }), bn2d(inp, o), nn.ReLU())
end

-- shared init/forward/cost of the two SPOS block kinds
local function spos_init(self, name, inp, oup, mid, stride)
  check_int(inp, "inp", name)
  check_int(oup, "oup", name)
  check_int(mid, "mid", name)
  check_stride(stride, name)
  if oup <= inp then
    error(("%s: oup (%d) must exceed inp (%d): the main branch makes oup - inp channels"):format(
      name, oup, inp), 3)
  end
  self.inp, self.oup, self.mid, self.stride = inp, oup, mid, stride
  -- channels the block receives: all of them at stride 2, 2*inp at stride 1
  self.in_channels = stride == 2 and inp or 2 * inp
  if stride == 1 and self.in_channels % 4 ~= 0 then
    error(("%s: a stride-1 block needs its %d input channels divisible by 4 (SPOS asserts it)")
      :format(name, self.in_channels), 3)
  end
end

local function spos_forward(self, x)
  check_input(shape_of(x, self.__name), self.in_channels, self.__name)
  if self.stride == 1 then
    local keep, work = M.shuffle_split(x)
    return F.cat({ keep, self.branch_main(work) }, 2)
  end
  return F.cat({ self.branch_proj(x), self.branch_main(x) }, 2)
end

local function spos_cost(self, s, opts)
  check_input(s, self.in_channels, self.__name)
  if self.stride == 1 then
    local half = { s[1], self.inp, s[3], s[4] }
    local m, o = cost(self.branch_main, half, opts)
    return m, { s[1], self.oup, o[3], o[4] }
  end
  local mp = self.branch_proj:macs(s, opts)
  local mm, o = cost(self.branch_main, s, opts)
  return mp + mm, { s[1], self.oup, o[3], o[4] }
end

local function spos_repr(self)
  return ("inp=%d, oup=%d, mid=%d, stride=%d"):format(self.inp, self.oup, self.mid, self.stride)
end

--- SPOS' ShuffleNetV2 choice block with a k x k depthwise kernel (k = 3, 5,
-- 7).  Arguments follow SPOS: at stride 1 the block receives 2*inp
-- channels, shuffles and splits them (even channels pass through, odd ones
-- go through the main branch); at stride 2 it receives inp channels and
-- concatenates [projection, main].  Main branch: 1x1 inp->mid, BN, ReLU;
-- k x k depthwise (stride s), BN; 1x1 mid->(oup-inp), BN, ReLU.  The
-- output always has oup channels.  BN is affine by default (the
-- stand-alone network); SPOS' supernet passes affine=false.
-- @type ShuffleNetBlock
-- @tparam int inp
-- @tparam int oup
-- @tparam int mid middle width (oup // 2 in SPOS)
-- @tparam int k 3, 5 or 7
-- @tparam int stride 1 or 2
-- @tparam[opt] table opts {affine=true, track_running_stats=true}
local ShuffleNetBlock = nn.class("ShuffleNetBlock", Block)
M.ShuffleNetBlock = ShuffleNetBlock

function ShuffleNetBlock:__init(inp, oup, mid, k, stride, opts)
  local o = norm_opts(opts, SPOS_BLOCK_OPTS, "ShuffleNetBlock")
  spos_init(self, "ShuffleNetBlock", inp, oup, mid, stride)
  check_int(k, "kernel size", "ShuffleNetBlock")
  if k % 2 == 0 then error(("ShuffleNetBlock: kernel size must be odd, got %d"):format(k), 2) end
  self.kernel_size = k
  local outputs = oup - inp
  self.branch_main = nn.Sequential(
    nn.Conv2d(inp, mid, 1, { bias = false }), bn2d(mid, o), nn.ReLU(),
    nn.Conv2d(mid, mid, k, { stride = stride, padding = k // 2, groups = mid, bias = false }),
    bn2d(mid, o),
    nn.Conv2d(mid, outputs, 1, { bias = false }), bn2d(outputs, o), nn.ReLU())
  if stride == 2 then self.branch_proj = spos_proj(inp, k, o) end
end

ShuffleNetBlock.forward = spos_forward
ShuffleNetBlock._cost = spos_cost
function ShuffleNetBlock:extra_repr()
  return spos_repr(self) .. (", kernel_size=%d"):format(self.kernel_size)
end

--- SPOS' Xception-style choice block: the main branch is three times
-- [3x3 depthwise (stride s on the first), BN, 1x1 conv, BN, ReLU] with
-- widths inp->mid, mid->mid, mid->(oup-inp); split/shuffle and the stride-2
-- projection (3x3) as in ShuffleNetBlock.
-- @type ShuffleXception
-- @tparam int inp
-- @tparam int oup
-- @tparam int mid
-- @tparam int stride
-- @tparam[opt] table opts {affine=true, track_running_stats=true}
local ShuffleXception = nn.class("ShuffleXception", Block)
M.ShuffleXception = ShuffleXception

function ShuffleXception:__init(inp, oup, mid, stride, opts)
  local o = norm_opts(opts, SPOS_BLOCK_OPTS, "ShuffleXception")
  spos_init(self, "ShuffleXception", inp, oup, mid, stride)
  local outputs = oup - inp
  local function dw(c, s)
    return nn.Conv2d(c, c, 3, { stride = s, padding = 1, groups = c, bias = false })
  end
  self.branch_main = nn.Sequential(
    dw(inp, stride), bn2d(inp, o),
    nn.Conv2d(inp, mid, 1, { bias = false }), bn2d(mid, o), nn.ReLU(),
    dw(mid, 1), bn2d(mid, o),
    nn.Conv2d(mid, mid, 1, { bias = false }), bn2d(mid, o), nn.ReLU(),
    dw(mid, 1), bn2d(mid, o),
    nn.Conv2d(mid, outputs, 1, { bias = false }), bn2d(outputs, o), nn.ReLU())
  if stride == 2 then self.branch_proj = spos_proj(inp, 3, o) end
end

ShuffleXception.forward = spos_forward
ShuffleXception._cost = spos_cost
ShuffleXception.extra_repr = spos_repr

--- SPOS' four choices in gene order (gene value g -> SPOS_CHOICES[g + 1]).
M.SPOS_CHOICES = { "shufflenet_3x3", "shufflenet_5x5", "shufflenet_7x7", "xception_3x3" }

--- SPOS choice constructors: name -> function(inp, oup, mid, stride, opts).
M.SPOS_OPS = {
  shufflenet_3x3 = function(inp, oup, mid, stride, opts)
    return ShuffleNetBlock(inp, oup, mid, 3, stride, opts)
  end,
  shufflenet_5x5 = function(inp, oup, mid, stride, opts)
    return ShuffleNetBlock(inp, oup, mid, 5, stride, opts)
  end,
  shufflenet_7x7 = function(inp, oup, mid, stride, opts)
    return ShuffleNetBlock(inp, oup, mid, 7, stride, opts)
  end,
  xception_3x3 = function(inp, oup, mid, stride, opts)
    return ShuffleXception(inp, oup, mid, stride, opts)
  end,
}

return M
