--- nasrt.supernet (chain.lua): single-path choice-block chains and the
-- AGNAS macro supernet.
--
-- * `spos{...}`        SPOS' ShuffleNetV2 supernet (reference/oneshot.md
--                      §1.1): stem, stages of choice layers with the four
--                      blocks of `blocks.SPOS_CHOICES` (BN affine=false),
--                      1x1 tail conv, global pooling, dropout, classifier.
-- * `fairnas{...}`     FairNAS' MBConv chain (oneshot.md §2.3): every
--                      layer offers {e3, e6} x {k3, k5, k7} (6 choices, the
--                      order of `fairnas_choices`).
-- * `agnas_macro{...}` AGNAS' ProxylessNAS-space supernet (differentiable.md
--                      §3.4): every layer runs its 6 MBConv candidates (+
--                      skip where stride 1 and cin == cout) and mixes them
--                      with its own AGNASAttention (ratio 16).
--
-- The three share one interface.  An architecture ("arch") is a plain list
-- of 1-based choice indices, one per choice layer, as nasrt.sampler returns
-- them; `net:choices()` gives the per-layer counts for the samplers.
--
--   net:forward(x, arch)      one path: only arch[l] runs at layer l, so
--                             the other candidates' parameters get no
--                             gradient (`.grad` stays nil) and SGD leaves
--                             them and their momentum untouched (SPOS'
--                             grad = None rule).  agnas_macro without an
--                             arch runs the attention supernet.
--   net:flops(arch[, shape])  MACs of that path (conv + linear only, SPOS'
--                             counting rule, batch included; default shape
--                             {1, C, H, W}) from a per-layer table built
--                             from shapes alone; `net:flops_table()` gives
--                             the table in nasrt.sampler's additive form.
--                             Note: these supernets follow the papers'
--                             "FLOPs" = MACs, unlike nn's Module:flops.
--   net:path_network(arch[, opts])
--                             a stand-alone network of the chosen blocks;
--                             opts.weights = "share" (default: the very
--                             supernet modules), "copy" (fresh modules, the
--                             supernet's values copied, BN running stats
--                             included) or "fresh" (re-initialised, for
--                             retraining); opts.copy = true is "copy";
--                             opts.affine overrides the BN affine flag of
--                             copied/fresh blocks.
--
-- Defaults are small, for 28x28 Fashion-MNIST on a CPU; the `*_paper`
-- tables hold the options of the papers' ImageNet layouts, e.g.
-- `nasrt.supernet.spos(nasrt.supernet.spos_paper)`.  Scaling is by options
-- only; each place the defaults differ from the paper says so in a
-- `NOTE(deviation):` comment.
-- @module nasrt.supernet.chain
-- @usage
-- local net = nasrt.supernet.spos{}                 -- 10 choice layers
-- local s = nasrt.sampler.uniform{choices = net:choices(), seed = 0}
-- local arch = s:sample()
-- local loss = F.cross_entropy(net(x, arch), y)
-- print(net:flops(arch) / 1e6, "MMACs")
local core = require "nasrt.core"
local nn = require "nasrt.nn"
local blocks = require "nasrt.blocks"
local F = core.F

local M = {}

local sqrt = math.sqrt

-- ------------------------------------------------------------ helpers

local shape_str = nn.util.shape_str

local function copy_list(t)
  return table.move(t, 1, #t, 1, {})
end

--- opts merged over defaults; unknown keys raise (catches typos).
local function options(opts, defaults, fn)
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: options must be a table, got %s"):format(fn, type(opts)), 3)
  end
  local o = {}
  for k, v in pairs(defaults) do o[k] = v end
  for k, v in pairs(opts or {}) do
    if defaults[k] == nil then
      local names = {}
      for a in pairs(defaults) do names[#names + 1] = a end
      table.sort(names)
      error(("%s: unknown option '%s' (expected one of %s)"):format(fn, tostring(k),
        table.concat(names, ", ")), 3)
    end
    o[k] = v
  end
  return o
end

local function check_pos_int(v, what, fn)
  if math.type(v) ~= "integer" or v < 1 then
    error(("%s: %s must be a positive integer, got %s"):format(fn, what, tostring(v)), 3)
  end
  return v
end

local NONE = {}   -- sentinel default for options whose default is "absent"

local function unset(v) return v == NONE or v == nil or v == false end

--- Stage list {{c, n, s}, ...} or {{c=, n=, s=}, ...} -> {{c=, n=, s=}}.
local function stages_of(list, fn)
  if type(list) ~= "table" or #list == 0 then
    error(fn .. ": stages must be a non-empty list of {c, n, s} (width, layers, first stride)", 3)
  end
  local out = {}
  for i, st in ipairs(list) do
    if type(st) ~= "table" then error(("%s: stages[%d] must be a table {c, n, s}"):format(fn, i), 3) end
    local c, n, s = st.c or st[1], st.n or st[2], st.s or st[3]
    for _, v in ipairs { c, n, s } do
      if math.type(v) ~= "integer" or v < 1 then
        error(("%s: stages[%d] must hold positive integers {c, n, s}"):format(fn, i), 3)
      end
    end
    if s > 2 then error(("%s: stages[%d]: stride must be 1 or 2"):format(fn, i), 3) end
    out[i] = { c = c, n = n, s = s }
  end
  return out
end

-- ------------------------------------------------------------ initialisers

-- SPOS (oneshot.md §1.1): conv N(0, 1/fan), fan = weight.shape[1] (input
-- channels per group); the stem conv N(0, 0.01); linear N(0, 0.01), bias 0.
local function init_spos(root, stem_conv)
  for _, m in ipairs(root:modules()) do
    local cls = getmetatable(m)
    if cls == nn.Conv2d then
      nn.init.normal_(m.weight, 0, 1 / m.weight:shape()[2])
      if m.bias then nn.init.zeros_(m.bias) end
    elseif cls == nn.Linear then
      nn.init.normal_(m.weight, 0, 0.01)
      if m.bias then nn.init.zeros_(m.bias) end
    end
  end
  if stem_conv then nn.init.normal_(stem_conv.weight, 0, 0.01) end
end

-- FairNAS / ProxylessNAS / AGNAS: conv N(0, sqrt(2 / (k*k*out))); with
-- `linear_uniform`, linear U(+-1/sqrt(out)) and bias 0 (FairNAS' released
-- models); BN stays 1 / 0.
local function init_he_fout(root, linear_uniform)
  for _, m in ipairs(root:modules()) do
    local cls = getmetatable(m)
    if cls == nn.Conv2d then
      local n = m.kernel_size[1] * m.kernel_size[2] * m.out_channels
      nn.init.normal_(m.weight, 0, sqrt(2 / n))
      if m.bias then nn.init.zeros_(m.bias) end
    elseif cls == nn.Linear and linear_uniform then
      local b = 1 / sqrt(m.out_features)
      nn.init.uniform_(m.weight, -b, b)
      if m.bias then nn.init.zeros_(m.bias) end
    end
  end
end

-- BatchNorm2d with PyTorch's defaults (eps 1e-5, momentum 0.1), as the
-- blocks' own BNs (the papers keep PyTorch's defaults too)
local function bn(c, affine)
  return nn.BatchNorm2d(c, { affine = affine })
end

-- the classifier tail: 1x1 conv -> BN -> act -> GAP -> flatten [-> dropout] -> linear
local function build_tail(cin, last, classes, o)
  local t = nn.Sequential(
    nn.Conv2d(cin, last, 1, { bias = false }), bn(last, o.affine),
    blocks.activation(o.act), nn.AdaptiveAvgPool2d(1), nn.Flatten())
  if o.dropout and o.dropout > 0 then t:append(nn.Dropout(o.dropout)) end
  t:append(nn.Linear(last, classes, { bias = o.classifier_bias }))
  return t
end

-- ------------------------------------------------------------ path network

--- A stand-alone network of one path: stem -> features (the chosen blocks)
-- -> tail.  `arch` and `choice_names` record what it was built from.
-- Its costs come from shapes alone (output_shape, macs).
-- @type ChainPath
local ChainPath = nn.class("ChainPath")

function ChainPath:__init(stem, features, tail, arch, names)
  self.stem = stem
  self.features = features
  self.tail = tail
  rawset(self, "arch", copy_list(arch))
  rawset(self, "choice_names", names)
end

function ChainPath:forward(x)
  return self.tail(self.features(self.stem(x)))
end

function ChainPath:output_shape(s)
  for _, m in ipairs { self.stem, self.features, self.tail } do s = m:output_shape(s) end
  return s
end

function ChainPath:macs(s, opts)
  if core.is_tensor(s) then s = s:shape() end
  local total = 0
  for _, m in ipairs { self.stem, self.features, self.tail } do
    total = total + m:macs(s, opts)
    s = m:output_shape(s)
  end
  return total
end

function ChainPath:extra_repr()
  return "arch={" .. table.concat(self.arch, ",") .. "}"
end

-- ------------------------------------------------------------ the chain base

--- Common base of the three supernets.  Subclasses set, in __init:
-- self.stem, self.layers (ModuleList of per-layer candidate lists or
-- layers), self.tail, and call `self:_setup(o, info)`.
-- @type Chain
local Chain = nn.class("ChoiceChain")

-- Records the layout: per layer {cin, cout, stride, n} and the default
-- input shape; builds the MAC table for it.
function Chain:_setup(o, info, fam)
  rawset(self, "_opts", o)
  rawset(self, "_info", info)
  rawset(self, "_family", fam)
  rawset(self, "_default_shape", { 1, o.in_channels, o.input_size, o.input_size })
  rawset(self, "_tables", {})
  rawset(self, "_shapes", {})
  local nchoice = {}
  for l, inf in ipairs(info) do nchoice[l] = inf.n end
  rawset(self, "_choices", nchoice)
  self:_table(nil, fam)   -- builds and caches the default table (fails early on a bad layout)
end

--- Per-layer choice counts (the search space for nasrt.sampler).
-- @treturn {int,...}
function Chain:choices()
  return copy_list(self._choices)
end

--- Number of choice layers.
function Chain:num_layers()
  return #self._choices
end

--- The choice names of an arch (e.g. {"shufflenet_3x3", "xception_3x3", ...}).
function Chain:arch_names(arch)
  self:_check_arch(arch, self._family .. ":arch_names")
  local out = {}
  for l, c in ipairs(arch) do out[l] = self._info[l].names[c] end
  return out
end

--- Layout of layer l: {cin=, cout=, stride=, n=, names=, in_shape=} where
-- in_shape is the layer's input shape for the default input.
function Chain:layer_info(l)
  local inf = self._info[l]
  if not inf then error(("%s:layer_info: no layer %s"):format(self._family, tostring(l)), 2) end
  local t = {}
  for k, v in pairs(inf) do t[k] = type(v) == "table" and copy_list(v) or v end
  local _, shapes = self:_table(nil, self._family .. ":layer_info")
  t.in_shape = copy_list(shapes[l])
  return t
end

function Chain:_check_arch(arch, fn)
  local L = #self._choices
  if type(arch) ~= "table" then
    error(("%s: arch must be a list of %d choice indices, got %s"):format(fn, L, type(arch)), 3)
  end
  if #arch ~= L then
    error(("%s: arch has %d entries, expected %d (one per choice layer)"):format(fn, #arch, L), 3)
  end
  for l = 1, L do
    local c = arch[l]
    if math.type(c) ~= "integer" or c < 1 or c > self._choices[l] then
      error(("%s: arch[%d] = %s out of range 1..%d"):format(fn, l, tostring(c), self._choices[l]), 3)
    end
  end
end

-- the module that runs choice c at layer l (nil: skip)
function Chain:_candidate(l, c)
  return self.layers[l][c]
end

--- Runs one path: stem, the chosen block of every layer, tail.
-- @tparam tensor x [N, C, H, W]
-- @tparam {int,...} arch one 1-based choice per layer
-- @treturn tensor logits [N, classes]
function Chain:forward(x, arch)
  self:_check_arch(arch, self._family .. ":forward")
  local h = self.stem(x)
  for l = 1, #arch do
    local m = self:_candidate(l, arch[l])
    if m then h = m(h) end
  end
  return self.tail(h)
end

-- The cached MAC table {base=, per_gene=} and per-layer input shapes for
-- an input shape (built from shapes alone on first use).
function Chain:_table(in_shape, fn)
  in_shape = in_shape or self._default_shape
  if core.is_tensor(in_shape) then in_shape = in_shape:shape() end
  if type(in_shape) ~= "table" or #in_shape ~= 4 then
    error(("%s: in_shape must be {N, C, H, W}, got %s"):format(fn,
      type(in_shape) == "table" and shape_str(in_shape) or type(in_shape)), 3)
  end
  local key = table.concat(in_shape, ",")
  local t = self._tables[key]
  if t then return t, self._shapes[key] end
  local s = in_shape
  local base = self.stem:macs(s)
  s = self.stem:output_shape(s)
  local per, shapes = {}, {}
  for l = 1, #self._choices do
    shapes[l] = copy_list(s)
    per[l] = {}
    local out
    for c = 1, self._choices[l] do
      local m = self:_candidate(l, c)
      if m then
        per[l][c] = m:macs(s)
        local o = m:output_shape(s)
        if out and (o[2] ~= out[2] or o[3] ~= out[3] or o[4] ~= out[4]) then
          error(("%s: layer %d: choices give %s and %s"):format(fn, l, shape_str(out),
            shape_str(o)), 3)
        end
        out = o
      else
        per[l][c] = 0
      end
    end
    s = out or s
  end
  t = { base = base + self.tail:macs(s), per_gene = per }
  self._tables[key] = t
  self._shapes[key] = shapes
  return t, shapes
end

--- Per-layer MAC table for an input shape (default {1, C, H, W}): {base =
-- stem + tail MACs, per_gene = {{macs of choice 1, ...}, ...}} -- the
-- additive form nasrt.sampler's `flops` option takes.  Costs come from
-- shapes alone and are cached per shape.  With `scale`, every entry is
-- divided by it (1e6 gives MFLOPs as SPOS' bins use them).
-- @tparam[opt] {int,...} in_shape
-- @tparam[opt=1] number scale
-- @treturn table a fresh copy
function Chain:flops_table(in_shape, scale)
  local t = self:_table(in_shape, self._family .. ":flops_table")
  scale = scale or 1
  local per = {}
  for l, row in ipairs(t.per_gene) do
    per[l] = {}
    for c, v in ipairs(row) do per[l][c] = scale == 1 and v or v / scale end
  end
  return { base = scale == 1 and t.base or t.base / scale, per_gene = per }
end

--- MACs of one path (SPOS' FLOPs: conv + linear, batch included).
-- @tparam {int,...} arch
-- @tparam[opt] {int,...} in_shape default {1, C, H, W} of the constructor
-- @treturn int
function Chain:flops(arch, in_shape)
  self:_check_arch(arch, self._family .. ":flops")
  local t = self:_table(in_shape, self._family .. ":flops")
  local f = t.base
  for l, c in ipairs(arch) do f = f + t.per_gene[l][c] end
  return f
end
Chain.macs = Chain.flops

-- builds a module with `make` and copies `src`'s parameters and buffers
local function copied(make, src, affine_changed)
  local m = make()
  m:load_state_dict(src:state_dict(), not affine_changed)
  return m
end

--- A stand-alone network of the chosen blocks (see the file header for
-- opts: weights = "share" | "copy" | "fresh", copy = true, affine).
-- @tparam {int,...} arch
-- @tparam[opt] table opts
-- @treturn ChainPath
function Chain:path_network(arch, opts)
  local fn = self._family .. ":path_network"
  self:_check_arch(arch, fn)
  opts = options(opts, { weights = "share", copy = NONE, affine = NONE }, fn)
  local mode = opts.weights
  if opts.copy == true then mode = "copy" end
  if mode ~= "share" and mode ~= "copy" and mode ~= "fresh" then
    error(("%s: weights must be 'share', 'copy' or 'fresh', got %s"):format(fn, tostring(mode)), 2)
  end
  local o = self._opts
  local affine = o.affine
  if opts.affine ~= NONE then
    if mode == "share" then error(fn .. ": affine needs weights='copy' or 'fresh'", 2) end
    affine = opts.affine
  end
  local changed = affine ~= o.affine
  local mk = self._make
  local stem, tail
  local feats = nn.Sequential()
  local names = {}
  if mode == "share" then
    stem, tail = self.stem, self.tail
  end
  for l, c in ipairs(arch) do
    names[l] = self._info[l].names[c]
    local m = self:_candidate(l, c)
    if m then
      if mode == "share" then
        feats:append(m)
      elseif mode == "copy" then
        feats:append(copied(function() return mk.block(l, c, affine) end, m, changed))
      else
        feats:append(mk.block(l, c, affine))
      end
    end
  end
  if mode == "copy" then
    stem = copied(function() return mk.stem(affine) end, self.stem, changed)
    tail = copied(function() return mk.tail(affine) end, self.tail, changed)
  elseif mode == "fresh" then
    stem, tail = mk.stem(affine), mk.tail(affine)
  end
  local p = ChainPath(stem, feats, tail, arch, names)
  if mode == "fresh" then mk.init(p, p.stem) end
  p:train(self.training)
  return p
end

function Chain:extra_repr()
  return ("%s: %d choice layers, choices {%s}"):format(self._family, #self._choices,
    table.concat(self._choices, ","))
end

-- ------------------------------------------------------------ SPOS

-- Options of SPOS' ImageNet supernet (oneshot.md §1.1): 224x224x3 input,
-- stem 16 stride 2, stage widths {64, 160, 320, 640} with repeats
-- {4, 4, 8, 4} (20 choice layers), tail 1024, dropout 0.1, 1000 classes.
M.spos_paper = {
  in_channels = 3, classes = 1000, input_size = 224, stem = 16, stem_stride = 2,
  widths = { 64, 160, 320, 640 }, repeats = { 4, 4, 8, 4 }, last = 1024, dropout = 0.1,
}

--- SPOS' choice names in gene order (blocks.SPOS_CHOICES).
M.spos_choices = copy_list(blocks.SPOS_CHOICES)

local SPOS_DEFAULTS = {
  in_channels = 1, classes = 10, input_size = 28,
  -- NOTE(deviation): the defaults are scaled for 28x28 Fashion-MNIST: stem
  -- stride 1 (paper 2), widths {32, 64, 128, 256} (paper {64, 160, 320,
  -- 640}), repeats {2, 2, 4, 2} = 10 layers (paper 20), tail 512 (paper
  -- 1024).  `spos_paper` restores the paper's values.  The paper asserts an
  -- input size divisible by 32; any size works here (pooling is global).
  stem = 16, stem_stride = 1,
  widths = { 32, 64, 128, 256 }, repeats = { 2, 2, 4, 2 }, last = 512,
  dropout = 0.1,
  affine = false,            -- BN affine=False in the supernet (paper)
  init = "spos",             -- "spos" (the paper's init) or "default" (PyTorch's)
}

--- SPOS supernet: ShuffleNetV2 choice blocks (oneshot.md §1.1).
-- Stem 3x3 conv (stride `stem_stride`) -> BN -> ReLU; per stage, the first
-- layer has stride 2 and takes the whole input (inp = C), the others
-- stride 1 and half of it (inp = C/2, shuffle+split); mid = width // 2;
-- 4 candidates per layer (`spos_choices`); tail 1x1 conv -> `last`, BN,
-- ReLU, global pooling, dropout, linear without bias.
-- @tparam[opt] table opts {in_channels=1, classes=10, input_size=28,
--   stem=16, stem_stride=1, widths={32,64,128,256}, repeats={2,2,4,2},
--   last=512, dropout=0.1, affine=false, init="spos"}
-- @treturn SPOSSupernet
local SPOS = nn.class("SPOSSupernet", Chain)
M.spos = SPOS

function SPOS:__init(opts)
  local fn = "spos"
  local o = options(opts, SPOS_DEFAULTS, fn)
  o.act, o.classifier_bias = "relu", false
  check_pos_int(o.in_channels, "in_channels", fn)
  check_pos_int(o.classes, "classes", fn)
  check_pos_int(o.input_size, "input_size", fn)
  check_pos_int(o.stem, "stem", fn)
  check_pos_int(o.last, "last", fn)
  if type(o.widths) ~= "table" or type(o.repeats) ~= "table" or #o.widths ~= #o.repeats
      or #o.widths == 0 then
    error("spos: widths and repeats must be lists of the same non-zero length", 2)
  end
  local function make_stem(affine)
    return nn.Sequential(
      nn.Conv2d(o.in_channels, o.stem, 3, { stride = o.stem_stride, padding = 1, bias = false }),
      bn(o.stem, affine), nn.ReLU())
  end
  local info, specs = {}, {}
  local cin = o.stem
  for s, w in ipairs(o.widths) do
    check_pos_int(w, ("widths[%d]"):format(s), fn)
    check_pos_int(o.repeats[s], ("repeats[%d]"):format(s), fn)
    for i = 1, o.repeats[s] do
      local inp, stride = cin, 2
      if i > 1 then inp, stride = cin // 2, 1 end
      if w <= inp then
        error(("spos: stage %d: width %d must exceed the block input %d (the main branch " ..
          "makes width - inp channels)"):format(s, w, inp), 2)
      end
      specs[#specs + 1] = { inp = inp, oup = w, mid = w // 2, stride = stride }
      info[#info + 1] = { cin = cin, cout = w, stride = stride, n = 4, names = M.spos_choices }
      cin = w
    end
  end
  local function make_block(l, c, affine)
    local sp = specs[l]
    return blocks.SPOS_OPS[M.spos_choices[c]](sp.inp, sp.oup, sp.mid, sp.stride,
      { affine = affine, track_running_stats = true })
  end
  local function make_tail(affine)
    local t = { affine = affine, act = o.act, dropout = o.dropout, classifier_bias = false }
    return build_tail(cin, o.last, o.classes, t)
  end
  local function init(root, stem_seq)
    if o.init == "spos" then init_spos(root, stem_seq and stem_seq[1]) end
  end
  if o.init ~= "spos" and o.init ~= "default" then
    error(("spos: init must be 'spos' or 'default', got %s"):format(tostring(o.init)), 2)
  end
  self.stem = make_stem(o.affine)
  local layers = nn.ModuleList()
  for l = 1, #specs do
    local cands = nn.ModuleList()
    for c = 1, 4 do cands:append(make_block(l, c, o.affine)) end
    layers:append(cands)
  end
  self.layers = layers
  self.tail = make_tail(o.affine)
  rawset(self, "_make", { stem = make_stem, block = make_block, tail = make_tail, init = init })
  init(self, self.stem)
  self:_setup(o, info, "spos")
end

-- ------------------------------------------------------------ FairNAS

--- FairNAS' choices in gene order: {e3, e6} x {k3, k5, k7}
-- (MBE3_K3 ... MBE6_K7, oneshot.md §2.3).
M.fairnas_choices = { "mb_e3_k3", "mb_e3_k5", "mb_e3_k7", "mb_e6_k3", "mb_e6_k5", "mb_e6_k7" }
local FAIRNAS_KE = { { 3, 3 }, { 5, 3 }, { 7, 3 }, { 3, 6 }, { 5, 6 }, { 7, 6 } }

-- Options of FairNAS' ImageNet supernet (oneshot.md §2.3): stem 32 stride
-- 2, the fixed MBE1_K3 block 32 -> 16, 18 choice layers (widths 32, 40, 80,
-- 96, 192 with 2, 4, 4, 4, 4 layers, first strides 2, 2, 2, 1, 2), the
-- fixed MBConv e6 k5 -> 320, 1x1 conv -> 1280, dropout 0.2, 1000 classes.
M.fairnas_paper = {
  in_channels = 3, classes = 1000, input_size = 224, stem = 32, stem_stride = 2,
  first_block = 16,
  stages = { { 32, 2, 2 }, { 40, 4, 2 }, { 80, 4, 2 }, { 96, 4, 1 }, { 192, 4, 2 } },
  last_block = 320, head = 1280, dropout = 0.2,
}

local FAIRNAS_DEFAULTS = {
  in_channels = 1, classes = 10, input_size = 28,
  -- NOTE(deviation): the defaults are the CPU single-path workload of
  -- ../shared/bench/torch_nas_steps.py (so nasrt and PyTorch time the same
  -- net): stem 16 stride 1, 12 choice layers {24x3 s2, 40x3 s2, 80x3 s1,
  -- 96x3 s1}, no fixed MBE1_K3 / last MBConv (first_block / last_block
  -- false), head 320, no dropout.  `fairnas_paper` is the paper's layout.
  stem = 16, stem_stride = 1,
  first_block = false,
  stages = { { 24, 3, 2 }, { 40, 3, 2 }, { 80, 3, 1 }, { 96, 3, 1 } },
  last_block = false, head = 320, dropout = 0,
  act = "relu6", affine = true,
  init = "he_fout",          -- "he_fout" (FairNAS' released models) or "default"
}

--- FairNAS supernet: a chain of MBConv choice layers, 6 candidates each
-- ({e3, e6} x {k3, k5, k7}, `fairnas_choices`), oneshot.md §2.3.  Stem 3x3
-- conv -> BN -> ReLU6; optional fixed MBE1_K3 block (`first_block`
-- channels); the choice layers (first of a stage strided, identity residual
-- iff stride 1 and cin == cout); optional fixed MBConv e6 k5 (`last_block`
-- channels); 1x1 conv -> `head`, BN, ReLU6, GAP, dropout, linear (bias).
-- Train it with nasrt.sampler.strict_fair: m = 6 paths per step, gradients
-- accumulated, one optimizer step.
-- @tparam[opt] table opts {in_channels=1, classes=10, input_size=28,
--   stem=16, stem_stride=1, first_block=false, stages={{24,3,2},...},
--   last_block=false, head=320, dropout=0, act="relu6", affine=true,
--   init="he_fout"}
-- @treturn FairNASSupernet
local FairNAS = nn.class("FairNASSupernet", Chain)
M.fairnas = FairNAS

-- shared MBConv-chain construction of fairnas and agnas_macro
local function mb_layout(o, fn)
  check_pos_int(o.in_channels, "in_channels", fn)
  check_pos_int(o.classes, "classes", fn)
  check_pos_int(o.input_size, "input_size", fn)
  check_pos_int(o.stem, "stem", fn)
  check_pos_int(o.head, "head", fn)
  local stages = stages_of(o.stages, fn)
  local function make_stem(affine)
    local seq = nn.Sequential(
      nn.Conv2d(o.in_channels, o.stem, 3, { stride = o.stem_stride, padding = 1, bias = false }),
      bn(o.stem, affine), blocks.activation(o.act))
    if not unset(o.first_block) then
      check_pos_int(o.first_block, "first_block", fn)
      seq:append(blocks.MBConv(o.stem, o.first_block, 3, 1, 1,
        { act = o.act, affine = affine }))
    end
    return seq
  end
  local specs = {}
  local cin = unset(o.first_block) and o.stem or o.first_block
  for _, st in ipairs(stages) do
    for i = 1, st.n do
      specs[#specs + 1] = { cin = cin, cout = st.c, stride = i == 1 and st.s or 1 }
      cin = st.c
    end
  end
  local last_in = cin
  if not unset(o.last_block) then
    check_pos_int(o.last_block, "last_block", fn)
    last_in = o.last_block
  end
  local function make_tail(affine)
    local seq = nn.Sequential()
    if not unset(o.last_block) then
      seq:append(blocks.MBConv(cin, o.last_block, 5, 1, 6, { act = o.act, affine = affine }))
    end
    local t = build_tail(last_in, o.head, o.classes, { affine = affine, act = o.act,
      dropout = o.dropout, classifier_bias = true })
    for _, m in ipairs(t:children()) do seq:append(m) end
    return seq
  end
  return specs, make_stem, make_tail
end

function FairNAS:__init(opts)
  local fn = "fairnas"
  local o = options(opts, FAIRNAS_DEFAULTS, fn)
  if o.init ~= "he_fout" and o.init ~= "default" then
    error(("fairnas: init must be 'he_fout' or 'default', got %s"):format(tostring(o.init)), 2)
  end
  local specs, make_stem, make_tail = mb_layout(o, fn)
  local function make_block(l, c, affine)
    local sp, ke = specs[l], FAIRNAS_KE[c]
    return blocks.MBConv(sp.cin, sp.cout, ke[1], sp.stride, ke[2], { act = o.act, affine = affine })
  end
  local function init(root)
    if o.init == "he_fout" then init_he_fout(root, true) end
  end
  self.stem = make_stem(o.affine)
  local layers, info = nn.ModuleList(), {}
  for l, sp in ipairs(specs) do
    local cands = nn.ModuleList()
    for c = 1, 6 do cands:append(make_block(l, c, o.affine)) end
    layers:append(cands)
    info[l] = { cin = sp.cin, cout = sp.cout, stride = sp.stride, n = 6, names = M.fairnas_choices }
  end
  self.layers = layers
  self.tail = make_tail(o.affine)
  rawset(self, "_make", { stem = make_stem, block = make_block, tail = make_tail, init = init })
  init(self)
  self:_setup(o, info, "fairnas")
end

-- ------------------------------------------------------------ AGNAS macro

--- AGNAS macro candidates in gene order (config.blocks_keys of
-- Sunzh1996/AGNAS: kernel-major), then "skip" (7th, where it exists).
M.agnas_macro_choices = { "mobilenet_3x3_ratio_3", "mobilenet_3x3_ratio_6",
                          "mobilenet_5x5_ratio_3", "mobilenet_5x5_ratio_6",
                          "mobilenet_7x7_ratio_3", "mobilenet_7x7_ratio_6", "skip" }
local AGNAS_KE = { { 3, 3 }, { 3, 6 }, { 5, 3 }, { 5, 6 }, { 7, 3 }, { 7, 6 } }

-- Options of AGNAS' ProxylessNAS-space supernet (differentiable.md §3.4):
-- stem 40 stride 2, fixed MBConv e1 40 -> 24, stages (32,4,2), (56,4,2),
-- (112,4,2), (128,4,1), (256,4,2), (432,1,1) = 21 layers, head 1728,
-- 1000 classes.
M.agnas_macro_paper = {
  in_channels = 3, classes = 1000, input_size = 224, stem = 40, stem_stride = 2,
  first_block = 24,
  stages = { { 32, 4, 2 }, { 56, 4, 2 }, { 112, 4, 2 }, { 128, 4, 1 }, { 256, 4, 2 },
             { 432, 1, 1 } },
  head = 1728,
}

local AGNAS_DEFAULTS = {
  in_channels = 1, classes = 10, input_size = 28,
  -- NOTE(deviation): scaled for 28x28 on a CPU: stem 16 stride 1 (paper 40,
  -- stride 2), fixed e1 block -> 16 (paper 24), 7 layers {24x2 s2, 40x2 s2,
  -- 64x2 s2, 96x1 s1} (paper 21), head 384 (paper 1728).
  -- `agnas_macro_paper` restores the paper's layout.
  stem = 16, stem_stride = 1, first_block = 16,
  stages = { { 24, 2, 2 }, { 40, 2, 2 }, { 64, 2, 2 }, { 96, 1, 1 } },
  head = 384, dropout = 0,
  ratio = 16,                -- attention reduction (16 in the macro search)
  act = "relu6", affine = true,
  record_scores = true,      -- accumulate per-candidate attention scores in forward
  init = "he_fout",
}

--- One AGNAS macro layer: n candidate blocks (+ the input itself as skip)
-- mixed by AGNASAttention.  forward(x) -> mixed [N, C, H, W], weights [N, nC].
-- @type AGNASMacroLayer
local AGNASLayer = nn.class("AGNASMacroLayer")

function AGNASLayer:__init(cands, C, skip, ratio)
  self.candidates = cands
  rawset(self, "has_skip", skip)
  rawset(self, "n", #cands + (skip and 1 or 0))
  self.attention = blocks.AGNASAttention(C, self.n, { ratio = ratio })
end

function AGNASLayer:forward(x)
  local outs = {}
  for i, m in ipairs(self.candidates:children()) do outs[i] = m(x) end
  if self.has_skip then outs[#outs + 1] = x end
  return self.attention:mix(outs)
end

function AGNASLayer:extra_repr()
  return ("n=%d, skip=%s"):format(self.n, self.has_skip and "True" or "False")
end

--- AGNAS macro supernet (differentiable.md §3.4).  Every choice layer runs
-- all its candidates -- MBConv k{3,5,7} x e{3,6} in `agnas_macro_choices`
-- order, plus the identity (`skip`, the 7th) where stride 1 and cin == cout
-- -- and mixes them with its own AGNASAttention (GAP of the concatenation ->
-- FC nC -> nC/16 -> ReLU -> FC -> sigmoid, no bias): output = sum_i
-- candidate_i x its slice of the weights (F.attn_sum).  There are no
-- architecture parameters; the attention is trained with the weights.
--
-- `net:forward(x)` runs the supernet and, when `net.record_scores` is
-- true, adds every layer's per-candidate score (attention summed over the
-- batch and the candidate's channels, divided by the channel count, as
-- compute_attention.py) to an accumulator: `net:scores()` reads it,
-- `net:reset_scores()` clears it, `net:derive()` takes the argmax per
-- layer (skip allowed).  `net:forward(x, arch)` runs one path instead
-- (no attention), the network `net:path_network(arch)` builds.
-- @tparam[opt] table opts {in_channels=1, classes=10, input_size=28,
--   stem=16, stem_stride=1, first_block=16, stages={{24,2,2},...}, head=384,
--   dropout=0, ratio=16, act="relu6", affine=true, record_scores=true,
--   init="he_fout"}
-- @treturn AGNASMacroSupernet
local AGNAS = nn.class("AGNASMacroSupernet", Chain)
M.agnas_macro = AGNAS

function AGNAS:__init(opts)
  local fn = "agnas_macro"
  local o = options(opts, AGNAS_DEFAULTS, fn)
  check_pos_int(o.ratio, "ratio", fn)
  if o.init ~= "he_fout" and o.init ~= "default" then
    error(("agnas_macro: init must be 'he_fout' or 'default', got %s"):format(tostring(o.init)), 2)
  end
  local specs, make_stem, make_tail = mb_layout(o, fn)
  local function make_block(l, c, affine)
    local sp, ke = specs[l], AGNAS_KE[c]
    if not ke then return nil end   -- skip
    return blocks.MBConv(sp.cin, sp.cout, ke[1], sp.stride, ke[2], { act = o.act, affine = affine })
  end
  local function init(root)
    if o.init == "he_fout" then init_he_fout(root, false) end
  end
  self.stem = make_stem(o.affine)
  local layers, info = nn.ModuleList(), {}
  for l, sp in ipairs(specs) do
    local cands = nn.ModuleList()
    for c = 1, 6 do cands:append(make_block(l, c, o.affine)) end
    local skip = sp.stride == 1 and sp.cin == sp.cout
    local layer = AGNASLayer(cands, sp.cout, skip, o.ratio)
    layers:append(layer)
    local names = table.move(M.agnas_macro_choices, 1, skip and 7 or 6, 1, {})
    info[l] = { cin = sp.cin, cout = sp.cout, stride = sp.stride, n = layer.n, names = names }
  end
  self.layers = layers
  self.tail = make_tail(o.affine)
  rawset(self, "_make", { stem = make_stem, block = make_block, tail = make_tail, init = init })
  rawset(self, "record_scores", o.record_scores)
  init(self)
  self:_setup(o, info, "agnas_macro")
  self:reset_scores()
end

function AGNAS:_candidate(l, c)
  if c > 6 then return nil end    -- skip
  return self.layers[l].candidates[c]
end

--- With an arch: one path (as Chain:forward).  Without: the attention
-- supernet (all candidates), accumulating scores when record_scores.
-- @tparam tensor x
-- @tparam[opt] {int,...} arch
-- @treturn tensor logits
-- @treturn[opt] table without an arch: per layer the attention weights [N, nC]
function AGNAS:forward(x, arch)
  if arch ~= nil then return Chain.forward(self, x, arch) end
  local h = self.stem(x)
  local weights = {}
  for l, layer in ipairs(self.layers:children()) do
    local w
    h, w = layer(h)
    weights[l] = w
    if self.record_scores then
      local sc = blocks.agnas_scores(w, layer.n, true)
      local acc = self._scores[l]
      for i = 1, layer.n do acc[i] = acc[i] + sc[i] end
    end
  end
  if self.record_scores then rawset(self, "_score_batches", self._score_batches + 1) end
  return self.tail(h), weights
end

--- Clears the score accumulator.
function AGNAS:reset_scores()
  local s = {}
  for l, n in ipairs(self._choices) do
    s[l] = {}
    for i = 1, n do s[l][i] = 0 end
  end
  rawset(self, "_scores", s)
  rawset(self, "_score_batches", 0)
end

--- Accumulated scores: per layer a list of per-candidate sums (in choice
-- order; the last is skip where the layer has one).
-- @treturn table {{...}, ...}
-- @treturn int number of forward passes accumulated
function AGNAS:scores()
  local out = {}
  for l, row in ipairs(self._scores) do out[l] = copy_list(row) end
  return out, self._score_batches
end

--- The architecture AGNAS selects: per layer the argmax of the accumulated
-- scores (ties: the lower index; index 7 = skip).
-- @treturn {int,...} arch
-- @treturn {string,...} choice names
function AGNAS:derive()
  if self._score_batches == 0 then
    error("agnas_macro:derive: no scores accumulated (run forward(x) with record_scores first)", 2)
  end
  local arch = {}
  for l, row in ipairs(self._scores) do
    local best = 1
    for i = 2, #row do
      if row[i] > row[best] then best = i end
    end
    arch[l] = best
  end
  return arch, self:arch_names(arch)
end

return M
