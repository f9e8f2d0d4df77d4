--- nasrt.supernet (NAS-Bench-201 part): the stand-alone network of an arch
-- string, its analytic cost, and the NB201 search supernet.
--
-- Everything follows ../shared/reference/differentiable.md §2 (xautodl's
-- TinyNetwork / TinyNetworkDarts / GDAS / SETN / RSPS) and §3.5 (AGNAS on
-- NB201):
--
-- * `nb201_network(arch, opts)` is xautodl's `TinyNetwork`: stem (3x3 conv
--   in_channels -> C, no bias; BN), N cells at C, `ResNetBasicblock(C, 2C,
--   stride 2)`, N cells at 2C, `ResNetBasicblock(2C, 4C, 2)`, N cells at 4C,
--   `lastact` BN + ReLU, global average pool, Linear(4C -> classes).
--   `affine` / `track_running_stats` apply to the cells' ops only (convs in
--   an op carry a bias exactly when affine is false); the stem, the residual
--   blocks and lastact always use affine BN, as upstream.
-- * `nb201_cost(arch, opts)` counts params and FLOPs from the arch alone,
--   with NAS-Bench-201's convention (MACs of convs and linears plus one add
--   per output element of each bias; BN, ReLU, pooling and additions free).
--   Cell 0 on CIFAR-10 gives 0.129306 M params and 15.64737 MFLOPs, the
--   official record.
-- * `nb201{...}` is the search supernet (`TinyNetworkDarts` & co.): the same
--   skeleton with mixed cells, one 6 x 5 alpha shared by all cells, and four
--   modes (darts, gdas, path, agnas; see `nb201`).
--
-- Naming: both networks use xautodl's child names (`stem`, `cells`,
-- `lastact`, `global_pooling`, `classifier`); a cell's ops live in
-- `cells.K.edges.E` (E = 1..6 in the official edge order 1<-0, 2<-0, 2<-1,
-- 3<-0, 3<-1, 3<-2).  In the supernet each edge holds its 5 ops by name
-- (`cells.K.edges.E.nor_conv_3x3.2.weight`); in the stand-alone network the
-- edge is the op itself (`cells.K.edges.E.2.weight`), so a path's weights
-- move over by dropping the op name (`net:path_state_dict(arch)`,
-- `net:extract(arch)`).
--
-- Op indices are 1-based positions in `NB201_PRIMITIVES` = {none,
-- skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3} (the column order
-- of alpha and the genes of nasrt.bench.nb201_encode).
-- @module nasrt.supernet
-- @usage
-- local supernet = require "nasrt.supernet"
-- local net = supernet.nb201_network("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+" ..
--                                    "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
-- print(supernet.nb201_cost(net.arch).flops)     -- MFLOPs on CIFAR-10
-- local search = supernet.nb201{mode = "darts"}
-- local logits = search(x)                       -- softmax(alpha)-weighted cells
-- print(search:arch_string())
local core = require "nasrt.core"
local nn = require "nasrt.nn"
local blocks = require "nasrt.blocks"
local F = core.F

-- nasrt.bench owns the arch-string format; it needs only the standard
-- library (no cycle).  A small strict parser stands in if it is missing.
local bench
do
  local ok, mod = pcall(require, "nasrt.bench")
  if ok and type(mod) == "table" and mod.parse_nb201 then bench = mod end
end

local M = {}

local PRIMS = blocks.NB201_PRIMITIVES
local NOPS = #PRIMS                               -- 5
local NONE = 1                                    -- index of `none`
local OP_ID = {}
for i, name in ipairs(PRIMS) do OP_ID[name] = i end
-- official edge order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2: edge e reads
-- node EDGE_FROM[e]; edge_index(i, j) is the edge of i<-j
local EDGE_FROM = { 0, 0, 1, 0, 1, 2 }
local NEDGES = 6
local function edge_index(i, j) return i * (i - 1) // 2 + j + 1 end

--- The five NB201 op names (alpha's column order).
M.nb201_primitives = PRIMS

-- ------------------------------------------------------------ arch strings

local shape_str = nn.util.shape_str

local function ops_string(names)
  local p = {}
  for e = 1, NEDGES do p[e] = names[e] .. "~" .. EDGE_FROM[e] end
  return ("|%s|+|%s|%s|+|%s|%s|%s|"):format(table.unpack(p))
end

-- Parses an arch string into 6 op names or raises "<fn>: bad ...".
local function parse_string(s, fn, level)
  if bench then
    local ok, edges = pcall(bench.parse_nb201, s)
    if not ok then
      local msg = tostring(edges):gsub("^.-parse_nb201: ", "")
      error(fn .. ": " .. msg, level + 1)
    end
    local names = {}
    for e = 1, NEDGES do names[e] = edges[e][1] end
    return names
  end
  local names = { s:match("^|([%w_]+)~0|%+|([%w_]+)~0|([%w_]+)~1|%+|([%w_]+)~0|([%w_]+)~1|([%w_]+)~2|$") }
  if #names ~= NEDGES then
    error(("%s: bad NAS-Bench-201 arch string %q: expected |op~0|+|op~0|op~1|+|op~0|op~1|op~2|")
      :format(fn, s), level + 1)
  end
  for e = 1, NEDGES do
    if not OP_ID[names[e]] then
      error(("%s: bad NAS-Bench-201 arch string %q: unknown op '%s' (expected one of %s)"):format(
        fn, s, names[e], table.concat(PRIMS, ", ")), level + 1)
    end
  end
  return names
end

-- Any accepted arch form -> list of 6 op indices (1..5) and 6 op names.
-- Accepted: an arch string; a list of 6 op indices 1..5; a list of 6 op
-- names; a list of 6 {op, j} pairs (as nasrt.bench.parse_nb201 returns).
local function normalize(arch, fn, level)
  level = level or 2
  local names
  if type(arch) == "string" then
    names = parse_string(arch, fn, level + 1)
  elseif type(arch) == "table" and not core.is_tensor(arch) then
    if #arch ~= NEDGES then
      error(("%s: an arch needs 6 edges (op indices 1..5, op names or {op, j} pairs), got %d")
        :format(fn, #arch), level + 1)
    end
    names = {}
    for e = 1, NEDGES do
      local v = arch[e]
      if type(v) == "table" then
        if v[2] ~= nil and v[2] ~= EDGE_FROM[e] then
          error(("%s: edge %d comes from node %d, got {%s, %s}"):format(fn, e, EDGE_FROM[e],
            tostring(v[1]), tostring(v[2])), level + 1)
        end
        v = v[1]
      end
      if math.type(v) == "integer" then
        if v < 1 or v > NOPS then
          error(("%s: edge %d: op index %d is out of range 1..%d (%s)"):format(fn, e, v, NOPS,
            table.concat(PRIMS, ", ")), level + 1)
        end
        names[e] = PRIMS[v]
      elseif type(v) == "string" and OP_ID[v] then
        names[e] = v
      else
        error(("%s: edge %d: expected an op index 1..%d or an op name (%s), got %s"):format(
          fn, e, NOPS, table.concat(PRIMS, ", "), tostring(v)), level + 1)
      end
    end
  else
    error(("%s: expected an arch string or a list of 6 ops, got %s"):format(fn,
      core.is_tensor(arch) and "a tensor" or type(arch)), level + 1)
  end
  local idx = {}
  for e = 1, NEDGES do idx[e] = OP_ID[names[e]] end
  return idx, names
end

--- Normalises an architecture to op indices.
-- @param arch an arch string, or a list of 6 op indices (1..5), op names or
--   {op, j} pairs in the official edge order
-- @treturn table 6 op indices into `nb201_primitives`
-- @treturn string the canonical arch string
-- @raise "nb201_arch: ..." on a malformed arch
function M.nb201_arch(arch)
  local idx, names = normalize(arch, "nb201_arch", 2)
  return idx, ops_string(names)
end

-- ------------------------------------------------------------ options

local check_opts = nn.util.check_opts

local function int_opt(v, default, name, fn)
  if v == nil then return default end
  if math.type(v) ~= "integer" or v < 1 then
    error(("%s: %s must be a positive integer, got %s"):format(fn, name, tostring(v)), 3)
  end
  return v
end

local function bool_opt(v, default, name, fn)
  if v == nil then return default end
  if type(v) ~= "boolean" then
    error(("%s: %s must be a boolean, got %s"):format(fn, name, tostring(v)), 3)
  end
  return v
end

-- ------------------------------------------------------------ the skeleton

-- Builds stem, the 3N + 2 cells (cell_fn(C_stage) for the cells) and the
-- head on `self`, as xautodl's TinyNetwork does.
local function build_skeleton(self, cfg, cell_fn)
  local C, N = cfg.C, cfg.N
  self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, C, 3, { padding = 1, bias = false }),
    nn.BatchNorm2d(C))
  local cells = nn.ModuleList()
  local widths, kinds = {}, {}
  local prev = C
  for stage = 1, 3 do
    local c = C << (stage - 1)
    if stage > 1 then
      cells:append(blocks.ResNetBasicblock(prev, c, 2, true, true))
      kinds[#kinds + 1] = "reduce"
      widths[#widths + 1] = c
    end
    for _ = 1, N do
      cells:append(cell_fn(c))
      kinds[#kinds + 1] = "cell"
      widths[#widths + 1] = c
    end
    prev = c
  end
  self.cells = cells
  self._kinds, self._widths = kinds, widths
  self.lastact = nn.Sequential(nn.BatchNorm2d(prev), nn.ReLU())
  self.global_pooling = nn.AdaptiveAvgPool2d(1)
  self.classifier = nn.Linear(prev, cfg.classes)
  self.C, self.N, self.classes, self.in_channels = C, N, cfg.classes, cfg.in_channels
  self.affine, self.track_running_stats = cfg.affine, cfg.track_running_stats
  self.out_channels = prev
end

local function head(self, f)
  local out = self.global_pooling(self.lastact(f))
  local s = out:shape()
  out = out:reshape { s[1], s[2] }
  return self.classifier(out), out
end

local function check_net_input(self, x, fn)
  if not core.is_tensor(x) then
    error(("%s: expected an input tensor [N,%d,H,W], got %s"):format(fn, self.in_channels,
      type(x)), 3)
  end
  local s = x:shape()
  if #s ~= 4 or s[2] ~= self.in_channels then
    error(("%s: input %s must be [N,%d,H,W]"):format(fn, shape_str(s), self.in_channels), 3)
  end
end

-- macs of the skeleton: stem, every cell (cell_cost(cell, shape)), head
local function skeleton_cost(self, s, opts, cell_cost)
  if #s ~= 4 or s[2] ~= self.in_channels then
    error(("%s: input %s must be [N,%d,H,W]"):format(self.__name, shape_str(s),
      self.in_channels), 4)
  end
  local total = self.stem:macs(s, opts)
  s = self.stem:output_shape(s)
  for k, cell in ipairs(self.cells:children()) do
    if self._kinds[k] == "cell" then
      total = total + cell_cost(cell, s, opts)
    else
      total = total + cell:macs(s, opts)
      s = cell:output_shape(s)
    end
  end
  total = total + self.lastact:macs(s, opts)
  local p = { s[1], s[2] }
  return total + self.classifier:macs(p, opts), self.classifier:output_shape(p)
end

-- ------------------------------------------------------------ stand-alone network

--- One NB201 cell with fixed ops (xautodl's InferCell): node i = sum over
-- j < i of op_(i<-j)(node j); the output is node 3.  `none` edges are
-- skipped (their output is zeros); a node whose inputs are all `none` is
-- zeros.
-- @type NB201InferCell
local InferCell = nn.class("NB201InferCell", blocks.Block)
M.nb201_InferCell = InferCell

function InferCell:__init(ops, C, affine, track)
  if type(ops) ~= "table" or #ops ~= NEDGES then
    error(("NB201InferCell: ops must be a list of %d op indices (1..%d), got %s"):format(NEDGES,
      #PRIMS, type(ops)), 3)
  end
  for e = 1, NEDGES do
    if math.type(ops[e]) ~= "integer" or not PRIMS[ops[e]] then
      error(("NB201InferCell: ops[%d] = %s is not an op index 1..%d"):format(e, tostring(ops[e]),
        #PRIMS), 3)
    end
  end
  if math.type(C) ~= "integer" or C < 1 then
    error(("NB201InferCell: C must be a positive integer, got %s"):format(tostring(C)), 3)
  end
  self.ops = ops                -- 6 op indices
  self.C = C
  local edges = nn.ModuleList()
  for e = 1, NEDGES do
    edges:append(blocks.NB201_OPS[PRIMS[ops[e]]](C, C, 1, affine, track))
  end
  self.edges = edges
end

function InferCell:forward(x)
  local nodes = { x }
  for i = 1, 3 do
    local s
    for j = 0, i - 1 do
      local e = edge_index(i, j)
      if self.ops[e] ~= NONE then
        local y = self.edges[e](nodes[j + 1])
        s = s and s + y or y
      end
    end
    nodes[i + 1] = s or F.scale(x, 0)
  end
  return nodes[4]
end

function InferCell:_cost(s, opts)
  if #s ~= 4 or s[2] ~= self.C then
    error(("NB201InferCell: input %s must have %d channels"):format(shape_str(s), self.C), 4)
  end
  local total = 0
  for e = 1, NEDGES do
    if self.ops[e] ~= NONE then total = total + self.edges[e]:macs(s, opts) end
  end
  return total, { s[1], s[2], s[3], s[4] }
end

function InferCell:extra_repr()
  local names = {}
  for e = 1, NEDGES do names[e] = PRIMS[self.ops[e]] end
  return ("C=%d, %s"):format(self.C, ops_string(names))
end

--- The stand-alone NAS-Bench-201 network (xautodl's TinyNetwork).
-- `forward(x)` returns the logits [N, classes] and the pooled features
-- [N, 4C].  Fields: `arch` (canonical string), `ops` (6 op indices).
-- @type NB201Network
local Network = nn.class("NB201Network", blocks.Block)
M.nb201_Network = Network

local NETWORK_OPTS = { classes = true, in_channels = true, C = true, N = true, affine = true,
                       track_running_stats = true }

function Network:__init(arch, opts)
  local fn = "nb201_network"
  local ops, names = normalize(arch, fn, 4)
  opts = check_opts(opts, NETWORK_OPTS, fn)
  local cfg = {
    classes = int_opt(opts.classes, 10, "classes", fn),
    in_channels = int_opt(opts.in_channels, 3, "in_channels", fn),
    C = int_opt(opts.C, 16, "C", fn),
    N = int_opt(opts.N, 5, "N", fn),
    affine = bool_opt(opts.affine, true, "affine", fn),
    track_running_stats = bool_opt(opts.track_running_stats, true, "track_running_stats", fn),
  }
  self.ops, self.arch = ops, ops_string(names)
  build_skeleton(self, cfg, function(c)
    return InferCell(ops, c, cfg.affine, cfg.track_running_stats)
  end)
end

function Network:forward(x)
  check_net_input(self, x, "nb201_network:forward")
  local f = self.stem(x)
  for _, cell in ipairs(self.cells:children()) do f = cell(f) end
  return head(self, f)
end

function Network:_cost(s, opts)
  return skeleton_cost(self, s, opts, function(cell, cs, o) return (cell:_cost(cs, o)) end)
end

function Network:extra_repr()
  return ("%s, C=%d, N=%d, classes=%d%s"):format(self.arch, self.C, self.N, self.classes,
    self.affine and "" or ", affine=False")
end

--- The stand-alone NAS-Bench-201 network of an architecture.
-- @param arch an arch string `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` (or a
--   list of 6 op indices / names)
-- @tparam[opt] table opts {classes=10, in_channels=3, C=16, N=5,
--   affine=true, track_running_stats=true}
-- @treturn NB201Network
-- @raise "nb201_network: ..." on a bad arch string or option
-- @usage local net = supernet.nb201_network(s, {classes = 100})
function M.nb201_network(arch, opts)
  return Network(arch, opts)
end

-- ------------------------------------------------------------ analytic cost

local DATASETS = {
  cifar10 = { classes = 10, size = 32 },
  ["cifar10-valid"] = { classes = 10, size = 32 },
  cifar100 = { classes = 100, size = 32 },
  ["ImageNet16-120"] = { classes = 120, size = 16 },
  imagenet16 = { classes = 120, size = 16 },
}

local COST_OPTS = { classes = true, in_channels = true, C = true, N = true, affine = true,
                    track_running_stats = true, input_size = true, dataset = true }

--- Params and FLOPs of the stand-alone network of an arch, from the arch
-- alone (no module is built).  FLOPs follow NAS-Bench-201 (MACs of every
-- conv and linear, plus one add per output element of each bias; BN, ReLU,
-- pooling and additions cost nothing), params count every weight, bias and
-- affine BN parameter.  Both are in millions, like the benchmark's
-- `params_MB` / `flops_M` columns.
-- @param arch an arch string or a list of 6 ops (see nb201_arch)
-- @tparam[opt] table opts {dataset="cifar10"|"cifar100"|"ImageNet16-120"
--   (sets classes and input_size), classes=10, in_channels=3,
--   input_size=32 (or {H, W}), C=16, N=5, affine=true}
-- @treturn table {params=M, flops=M, n_params=int, n_flops=int}
-- @raise "nb201_cost: ..." on a bad arch or option
-- @usage supernet.nb201_cost(s, {dataset = "ImageNet16-120"}).flops
function M.nb201_cost(arch, opts)
  local fn = "nb201_cost"
  local ops = normalize(arch, fn, 2)
  opts = check_opts(opts, COST_OPTS, fn)
  local ds = { classes = 10, size = 32 }
  if opts.dataset ~= nil then
    ds = DATASETS[opts.dataset]
    if not ds then
      error(("%s: unknown dataset %s (expected cifar10, cifar100 or ImageNet16-120)"):format(fn,
        tostring(opts.dataset)), 2)
    end
  end
  local classes = int_opt(opts.classes, ds.classes, "classes", fn)
  local inch = int_opt(opts.in_channels, 3, "in_channels", fn)
  local C = int_opt(opts.C, 16, "C", fn)
  local N = int_opt(opts.N, 5, "N", fn)
  local affine = bool_opt(opts.affine, true, "affine", fn)
  bool_opt(opts.track_running_stats, true, "track_running_stats", fn)  -- no effect on cost
  local H, W
  if type(opts.input_size) == "table" then
    H = int_opt(opts.input_size[1], nil, "input_size[1]", fn)
    W = int_opt(opts.input_size[2], nil, "input_size[2]", fn)
  else
    H = int_opt(opts.input_size, ds.size, "input_size", fn)
    W = H
  end
  local params, flops = 0, 0
  local function conv(cin, cout, k, h, w, bias)
    params = params + cin * cout * k * k + (bias and cout or 0)
    flops = flops + h * w * cout * (cin * k * k + (bias and 1 or 0))
  end
  local function bn(c, aff)
    if aff then params = params + 2 * c end
  end
  conv(inch, C, 3, H, W, false)
  bn(C, true)
  local c = C
  for stage = 1, 3 do
    if stage > 1 then
      -- ResNetBasicblock(c, 2c, stride 2): 3x3 s2 + 3x3, shortcut avgpool 2 + 1x1
      local h2, w2 = (H - 1) // 2 + 1, (W - 1) // 2 + 1
      if H < 2 or W < 2 or h2 ~= H // 2 or w2 ~= W // 2 then
        error(("%s: input %dx%d cannot be halved to %dx%d before stage %d (use even sizes)")
          :format(fn, H, W, h2, w2, stage), 2)
      end
      conv(c, 2 * c, 3, h2, w2, false)
      bn(2 * c, true)
      conv(2 * c, 2 * c, 3, h2, w2, false)
      bn(2 * c, true)
      conv(c, 2 * c, 1, h2, w2, false)
      c, H, W = 2 * c, h2, w2
    end
    for _ = 1, N do
      for e = 1, NEDGES do
        local op = PRIMS[ops[e]]
        if op == "nor_conv_1x1" or op == "nor_conv_3x3" then
          conv(c, c, op == "nor_conv_1x1" and 1 or 3, H, W, not affine)
          bn(c, affine)
        end
      end
    end
  end
  bn(c, true)                                     -- lastact
  params = params + c * classes + classes         -- classifier
  flops = flops + c * classes + classes
  return { params = params / 1e6, flops = flops / 1e6, n_params = params, n_flops = flops }
end

-- ------------------------------------------------------------ search cell

--- One NB201 search cell: 6 edges, each holding the 5 ops by name, and in
-- AGNAS mode one attention module per edge.  It is driven by the network
-- with a per-forward plan (see SearchNetwork:forward).
-- @type NB201SearchCell
local SearchCell = nn.class("NB201SearchCell", blocks.Block)
M.nb201_SearchCell = SearchCell

function SearchCell:__init(C, affine, track, agnas_ratio)
  if math.type(C) ~= "integer" or C < 1 then
    error(("NB201SearchCell: C must be a positive integer, got %s"):format(tostring(C)), 3)
  end
  self.C = C
  local edges = nn.ModuleList()
  for _ = 1, NEDGES do
    local mixed = nn.ModuleDict()
    for _, name in ipairs(PRIMS) do
      mixed:add(name, blocks.NB201_OPS[name](C, C, 1, affine, track))
    end
    edges:append(mixed)
  end
  self.edges = edges
  if agnas_ratio then
    local att = nn.ModuleList()
    for _ = 1, NEDGES do att:append(blocks.AGNASAttention(C, NOPS, { ratio = agnas_ratio })) end
    self.attention = att
  end
end

-- Runs op `k` of edge `e` on node input x.  relu(x) is computed once per
-- node and shared by every conv op reading that node (ReLUConvBN = ReLU,
-- conv, BN; the numbers are those of calling the op).
local function run_op(edge, k, x, relu_of, j)
  local op = edge[PRIMS[k]]
  if k == 3 or k == 4 then                        -- nor_conv_1x1 / nor_conv_3x3
    local r = relu_of[j]
    if not r then
      r = F.relu(x)
      relu_of[j] = r
    end
    return op[3](op[2](r))
  end
  return op(x)
end

function SearchCell:forward(x, plan)
  if type(plan) ~= "table" then
    error("NB201SearchCell: a search cell runs inside its network (net:forward(x[, arch]))", 2)
  end
  local mode = plan.mode
  local nodes, relu_of = { x }, {}
  local scores = plan.scores and plan.scores[plan.cell]
  for i = 1, 3 do
    local s
    for j = 0, i - 1 do
      local e = edge_index(i, j)
      local edge = self.edges[e]
      local xin = nodes[j + 1]
      local y
      if mode == "path" then
        local k = plan.ops[e]
        if k ~= NONE then y = run_op(edge, k, xin, relu_of, j) end
      elseif mode == "darts" then
        -- `none` is left out: its output is zeros, so w_none * 0 adds
        -- nothing to the value and nothing to w_none's gradient (alpha_none
        -- still gets its softmax share through the other weights).
        local outs = {}
        for k = 2, NOPS do outs[k - 1] = run_op(edge, k, xin, relu_of, j) end
        y = F.weighted_sum(outs, plan.w[e])
      elseif mode == "gdas" then
        -- GDAS (search_cells.py forward_gdas): h_k * op_k(x) + sum_{j~=k} h_j,
        -- only the sampled op runs; the other h_j are 0 in value but pass
        -- their gradient to alpha.  One fused weighted_sum with a shared
        -- constant ones tensor: {op_k(x), 1} weighted by {h_k, sum_{j~=k} h_j}
        -- (upstream's numbers, one temporary instead of two).
        local k = plan.ops[e]
        local ones = plan.ones(xin)
        if k == NONE then                        -- none: h_k * 0 adds nothing
          y = F.weighted_sum({ ones }, plan.rest[e])
        else
          y = F.weighted_sum({ run_op(edge, k, xin, relu_of, j), ones }, plan.w[e])
        end
      elseif mode == "agnas" and self.attention then
        local outs, pooled = {}, {}
        local sx = xin:shape()
        pooled[1] = core.zeros { sx[1], self.C }  -- GAP of the `none` output
        for k = 2, NOPS do
          local o = run_op(edge, k, xin, relu_of, j)
          outs[k - 1] = o
          pooled[k] = blocks.global_avg_pool(o)
        end
        local att = self.attention[e]
        local a = att:weights(F.cat(pooled, 2))  -- [N, 5C]
        y = F.attn_sum(outs, F.narrow(a, 2, self.C + 1, (NOPS - 1) * self.C))
        if scores then
          local per = blocks.agnas_scores(a, NOPS)
          local row = scores[e]
          for k = 1, NOPS do row[k] = row[k] + per[k] end
        end
      else
        error(("NB201SearchCell: cannot run mode '%s'%s"):format(tostring(mode),
          mode == "agnas" and " (this cell has no attention modules)" or ""), 2)
      end
      if y then s = s and s + y or y end
    end
    nodes[i + 1] = s or F.scale(x, 0)
  end
  return nodes[4]
end

-- macs with every op of every edge (and the attention FCs)
function SearchCell:_cost(s, opts)
  if #s ~= 4 or s[2] ~= self.C then
    error(("NB201SearchCell: input %s must have %d channels"):format(shape_str(s), self.C), 4)
  end
  local total = 0
  for e = 1, NEDGES do
    for _, name in ipairs(PRIMS) do total = total + self.edges[e][name]:macs(s, opts) end
    if self.attention then
      total = total + self.attention[e]:macs({ s[1], NOPS * self.C, s[3], s[4] }, opts)
    end
  end
  return total, { s[1], s[2], s[3], s[4] }
end

function SearchCell:extra_repr()
  return ("C=%d%s"):format(self.C, self.attention and ", agnas" or "")
end

-- ------------------------------------------------------------ search network

local MODES = { darts = true, gdas = true, path = true, agnas = true }

--- The NAS-Bench-201 search supernet (see `nb201`).
-- @type NB201SearchNetwork
local SearchNetwork = nn.class("NB201SearchNetwork", blocks.Block)
M.nb201_SearchNetwork = SearchNetwork

local SEARCH_OPTS = { C = true, N = true, classes = true, in_channels = true, mode = true,
                      affine = true, track_running_stats = true, ratio = true, tau = true }

function SearchNetwork:__init(opts)
  local fn = "nb201"
  opts = check_opts(opts, SEARCH_OPTS, fn)
  local mode = opts.mode or "darts"
  if not MODES[mode] then
    error(("%s: mode must be 'darts', 'gdas', 'path' or 'agnas', got %s"):format(fn,
      tostring(mode)), 3)
  end
  local cfg = {
    classes = int_opt(opts.classes, 10, "classes", fn),
    in_channels = int_opt(opts.in_channels, 3, "in_channels", fn),
    C = int_opt(opts.C, 16, "C", fn),
    N = int_opt(opts.N, 5, "N", fn),
    affine = bool_opt(opts.affine, false, "affine", fn),
    track_running_stats = bool_opt(opts.track_running_stats, true, "track_running_stats", fn),
  }
  local ratio
  if mode == "agnas" then
    ratio = int_opt(opts.ratio, 8, "ratio", fn)
  elseif opts.ratio ~= nil then
    error(("%s: ratio is an option of mode 'agnas' only"):format(fn), 3)
  end
  self.mode = mode
  self.tau = opts.tau or 10
  if type(self.tau) ~= "number" or self.tau <= 0 then
    error(("%s: tau must be a positive number, got %s"):format(fn, tostring(opts.tau)), 3)
  end
  self.ratio = ratio
  build_skeleton(self, cfg, function(c)
    return SearchCell(c, cfg.affine, cfg.track_running_stats, ratio)
  end)
  self.n_cells = 3 * cfg.N
  if mode == "agnas" then
    self.record_scores = true
    self:reset_scores()
  else
    -- one 6 x 5 alpha shared by every cell, 1e-3 * N(0, 1) as upstream; a
    -- buffer, so it is saved in state_dict() but kept out of parameters()
    local alpha = core.no_grad(function() return F.scale(core.randn { NEDGES, NOPS }, 1e-3) end)
    self:register_buffer("alpha", alpha:detach():requires_grad(true))
  end
end

--- Architecture parameters: {alpha} (6 x 5, rows = edges, columns = ops),
-- or {} in AGNAS mode.  Not part of `parameters()`.
function SearchNetwork:arch_parameters()
  if self.alpha then return { self.alpha } end
  return {}
end
SearchNetwork.arch_params = SearchNetwork.arch_parameters

--- Switches between "darts", "gdas" and "path" (they share weights and
-- alpha, e.g. SETN trains on uniform paths and updates alpha in "darts"
-- mode).  AGNAS networks are built as such and cannot switch.
function SearchNetwork:set_mode(mode)
  if not MODES[mode] then
    error(("nb201:set_mode: mode must be 'darts', 'gdas' or 'path', got %s"):format(
      tostring(mode)), 2)
  end
  if (mode == "agnas") ~= (self.mode == "agnas") then
    error(("nb201:set_mode: cannot switch from '%s' to '%s' (AGNAS networks have attention " ..
      "modules instead of alpha; build one with mode='agnas')"):format(self.mode, mode), 2)
  end
  self.mode = mode
  return self
end

--- Gumbel-softmax temperature of GDAS (upstream: linear from 10 to 0.1).
function SearchNetwork:set_tau(tau)
  if type(tau) ~= "number" or tau <= 0 then
    error(("nb201:set_tau: tau must be a positive number, got %s"):format(tostring(tau)), 2)
  end
  self.tau = tau
  return self
end

-- GDAS sampling (differentiable.md §5.3): per edge, logits =
-- (log_softmax(alpha) + g) / tau with Gumbel noise g = -log(E), E ~ Exp(1);
-- p = softmax(logits); k = argmax p; h = onehot(k) - stopgrad(p) + p.
-- Resampled when the noise or p is not finite.
local function gdas_plan(self)
  local alpha, tau = self.alpha, self.tau
  local hard, ks
  for _ = 1, 100 do
    local g = core.no_grad(function()
      local u = core.rand { NEDGES, NOPS }
      return F.neg(F.log(F.neg(F.log(F.scale(u, -1, 1)))))   -- -log(-log(1 - u))
    end)
    local gt = g:totable()
    local ok = true
    for e = 1, NEDGES do
      for k = 1, NOPS do
        local v = gt[e][k]
        if v ~= v or v == math.huge or v == -math.huge then ok = false end
      end
    end
    if ok then
      local p = F.softmax(F.scale(F.log_softmax(alpha, 2) + g, 1 / tau), 2)
      local pt = p:totable()
      ks = {}
      for e = 1, NEDGES do
        local best, bk = -math.huge, nil
        for k = 1, NOPS do
          local v = pt[e][k]
          if v ~= v or v == math.huge then ok = false end
          if v > best then best, bk = v, k end
        end
        ks[e] = bk
      end
      if ok and #ks == NEDGES then
        local c = core.no_grad(function()
          local onehot = {}
          for e = 1, NEDGES do
            onehot[e] = {}
            for k = 1, NOPS do onehot[e][k] = (k == ks[e]) and 1 or 0 end
          end
          return core.tensor(onehot) - p:detach()
        end)
        hard = c + p
        break
      end
    end
  end
  if not hard then error("nb201:forward: GDAS sampling gave non-finite values 100 times", 3) end
  local w, rest = {}, {}
  for e = 1, NEDGES do
    local row = F.narrow(hard, 1, e, 1):reshape { NOPS }
    local mask = {}
    for k = 1, NOPS do mask[k] = (k == ks[e]) and 0 or 1 end
    -- the others sum to exactly 0 in value ((0 - p) + p), with gradient
    rest[e] = F.sum(F.mul(row, core.tensor(mask))):reshape { 1 }
    w[e] = F.cat({ F.narrow(row, 1, ks[e], 1), rest[e] }, 1)
  end
  self.last_arch = ks
  -- constant ones shaped like a node, one per shape (shared by every edge)
  local cache = rawget(self, "_ones") or {}
  rawset(self, "_ones", cache)
  local function ones(x)
    local key = table.concat(x:shape(), "x")
    local t = cache[key]
    if not t then
      t = core.ones(x:shape())
      cache[key] = t
    end
    return t
  end
  return { mode = "gdas", ops = ks, w = w, rest = rest, ones = ones }
end

--- Forward pass.  Returns the logits [N, classes] and the pooled features.
-- * "darts": every edge is sum_o softmax(alpha_e)_o * o(x) (F.weighted_sum);
-- * "gdas": one Gumbel straight-through sample of alpha per call (the sampled
--   op indices are kept in `net.last_arch`);
-- * "path": the single path `arch` (required);
-- * "agnas": every edge mixes its 5 ops with its attention module; the
--   per-op scores are accumulated while `net.record_scores` is true.
-- In the darts and gdas modes an explicit `arch` also runs that path (the
-- uniform-path weight step of SETN / RSPS).
-- @tparam tensor x [N, in_channels, H, W]
-- @param[opt] arch an arch string or a list of 6 op indices 1..5
-- @treturn tensor logits
-- @treturn tensor features [N, 4C]
function SearchNetwork:forward(x, arch)
  check_net_input(self, x, "nb201:forward")
  local mode = self.mode
  local plan
  if arch ~= nil then
    if mode == "agnas" then
      error("nb201:forward: an AGNAS supernet has no single-path forward (arch must be nil)", 2)
    end
    plan = { mode = "path", ops = (normalize(arch, "nb201:forward", 2)) }
  elseif mode == "path" then
    error("nb201:forward: mode 'path' needs an arch (an arch string or 6 op indices 1..5)", 2)
  elseif mode == "darts" then
    local w = F.softmax(self.alpha, 2)
    local rows = {}
    for e = 1, NEDGES do rows[e] = F.narrow(F.narrow(w, 1, e, 1):reshape { NOPS }, 1, 2, NOPS - 1) end
    plan = { mode = "darts", w = rows }
  elseif mode == "gdas" then
    plan = gdas_plan(self)
  else
    plan = { mode = "agnas", scores = self.record_scores and self._scores or nil }
  end
  local f = self.stem(x)
  local ncell = 0
  for k, cell in ipairs(self.cells:children()) do
    if self._kinds[k] == "cell" then
      ncell = ncell + 1
      plan.cell = ncell
      f = cell(f, plan)
    else
      f = cell(f)
    end
  end
  return head(self, f)
end

function SearchNetwork:_cost(s, opts)
  return skeleton_cost(self, s, opts, function(cell, cs, o) return (cell:_cost(cs, o)) end)
end

function SearchNetwork:extra_repr()
  return ("mode=%s, C=%d, N=%d, classes=%d%s"):format(self.mode, self.C, self.N, self.classes,
    self.affine and ", affine=True" or "")
end

--- softmax(alpha) as a 6 x 5 Lua table (for logs).
function SearchNetwork:arch_weights()
  if not self.alpha then error("nb201:arch_weights: an AGNAS supernet has no alpha", 2) end
  return core.no_grad(function() return F.softmax(self.alpha, 2):totable() end)
end

--- Clears the AGNAS score accumulators.
function SearchNetwork:reset_scores()
  if self.mode ~= "agnas" then error("nb201:reset_scores: only in mode 'agnas'", 2) end
  local sc = {}
  for c = 1, self.n_cells do
    sc[c] = {}
    for e = 1, NEDGES do sc[c][e] = { 0, 0, 0, 0, 0 } end
  end
  self._scores = sc
  return self
end

--- AGNAS scores per cell: a list of 3N tables 6 x 5, each entry the sum of
-- the op's attention weights over its C channels and every sample seen
-- since reset_scores (upstream's micro score).
function SearchNetwork:cell_scores()
  if self.mode ~= "agnas" then error("nb201:cell_scores: only in mode 'agnas'", 2) end
  local out = {}
  for c, m in ipairs(self._scores) do
    out[c] = {}
    for e = 1, NEDGES do out[c][e] = table.move(m[e], 1, NOPS, 1, {}) end
  end
  return out
end

--- AGNAS scores of the shared cell: 6 x 5, the sum over all cells of each
-- cell's scores divided by that cell's width C (so the 16-, 32- and
-- 64-channel stages weigh the same; within a cell the ranking is
-- upstream's).
function SearchNetwork:scores()
  if self.mode ~= "agnas" then error("nb201:scores: only in mode 'agnas'", 2) end
  local out = {}
  for e = 1, NEDGES do out[e] = { 0, 0, 0, 0, 0 } end
  local k = 0
  for i, kind in ipairs(self._kinds) do
    if kind == "cell" then
      k = k + 1
      local c = self._widths[i]
      for e = 1, NEDGES do
        for o = 1, NOPS do out[e][o] = out[e][o] + self._scores[k][e][o] / c end
      end
    end
  end
  return out
end

local function argmax_row(row, from)
  local best, bk = -math.huge, nil
  for k = from, NOPS do
    if row[k] > best then best, bk = row[k], k end
  end
  return bk or from
end

--- The derived architecture as 6 {op, j} pairs (nasrt.bench.parse_nb201's
-- form).  darts / gdas / path: per edge the argmax of the raw alpha over all
-- 5 ops, `none` included (differentiable.md §2.7; ties: the first op).
-- agnas: per edge the argmax of `scores()`, `none` excluded unless
-- opts.include_none (its attention multiplies zeros, so its score carries no
-- signal; AGNAS' DARTS-space rule also drops `none`).
-- @tparam[opt] table opts {include_none=false} (agnas only)
-- @treturn table
function SearchNetwork:genotype(opts)
  opts = check_opts(opts, { include_none = true }, "nb201:genotype")
  local ks = {}
  if self.mode == "agnas" then
    local sc = self:scores()
    for e = 1, NEDGES do ks[e] = argmax_row(sc[e], opts.include_none and 1 or 2) end
  else
    local a = self.alpha:totable()
    for e = 1, NEDGES do ks[e] = argmax_row(a[e], 1) end
  end
  local g = {}
  for e = 1, NEDGES do g[e] = { PRIMS[ks[e]], EDGE_FROM[e] } end
  return g
end

--- The derived architecture as an arch string (see genotype).
function SearchNetwork:arch_string(opts)
  local g = self:genotype(opts)
  local names = {}
  for e = 1, NEDGES do names[e] = g[e][1] end
  return ops_string(names)
end

--- The derived architecture as 6 op indices 1..5 (see genotype).
function SearchNetwork:arch_indices(opts)
  local g = self:genotype(opts)
  local idx = {}
  for e = 1, NEDGES do idx[e] = OP_ID[g[e][1]] end
  return idx
end

--- The weights and buffers of one path, named as in the stand-alone
-- network `nb201_network(arch, {C=, N=, classes=, in_channels=,
-- affine=net.affine, track_running_stats=net.track_running_stats})`.
-- The tensors share storage with the supernet (load_state_dict copies).
-- @param arch an arch string or 6 op indices
-- @treturn table name -> tensor
function SearchNetwork:path_state_dict(arch)
  local ops = normalize(arch, "nb201:path_state_dict", 2)
  local sd = self:state_dict()
  local out = {}
  for name, t in pairs(sd) do
    local cell, e, op, rest = name:match("^cells%.(%d+)%.edges%.(%d+)%.([%w_]+)%.(.+)$")
    if cell then
      if PRIMS[ops[tonumber(e)]] == op then
        out[("cells.%s.edges.%s.%s"):format(cell, e, rest)] = t
      end
    elseif name ~= "alpha" and not name:match("^cells%.%d+%.attention%.") then
      out[name] = t
    end
  end
  return out
end

--- A stand-alone network of one path with the supernet's weights and BN
-- statistics copied in (same affine / track_running_stats as the search
-- cells, so the numbers match the supernet's path forward).
-- @param arch an arch string or 6 op indices
-- @treturn NB201Network
function SearchNetwork:extract(arch)
  local _, s = M.nb201_arch(arch)
  local net = Network(s, { C = self.C, N = self.N, classes = self.classes,
                           in_channels = self.in_channels, affine = self.affine,
                           track_running_stats = self.track_running_stats })
  net:load_state_dict(self:path_state_dict(s))
  net:train(self.training)
  return net
end

--- The NAS-Bench-201 search supernet (xautodl's TinyNetworkDarts / GDAS /
-- SETN / RANDOM skeleton, and AGNAS on NB201).
--
-- Cells use `affine=false` BN (so their convs carry a bias), the residual
-- blocks, stem and lastact affine BN, as upstream.  Modes:
--
-- * "darts": softmax(alpha)-weighted sum of the 5 ops on every edge;
-- * "gdas": Gumbel straight-through, only the sampled op runs (`set_tau`);
-- * "path": one given arch per call, `net(x, arch)` (SPOS / RSPS / SETN's
--   uniform path; darts and gdas networks accept `arch` too);
-- * "agnas": no alpha; each edge of each cell has its own AGNASAttention
--   over the 5 ops (5C channels, ratio 8: the micro module of
--   differentiable.md §3.1, which §3.5 says to plug into the NB201 edges),
--   trained with the weights; `scores()`, `reset_scores()`.
--
-- The 6 x 5 `alpha` (rows: edges in official order; columns:
-- `nb201_primitives`) is shared by all cells and returned by
-- `arch_parameters()`, never by `parameters()`.
-- @tparam[opt] table opts {C=16, N=5, classes=10, in_channels=3,
--   mode="darts", affine=false, track_running_stats=true, ratio=8 (agnas),
--   tau=10 (gdas)}
-- @treturn NB201SearchNetwork
-- @raise "nb201: ..." on a bad option
-- @usage
-- local net = supernet.nb201{mode = "darts"}
-- local w_opt = nasrt.optim.SGD(net:parameters(), {lr = 0.025, momentum = 0.9, nesterov = true})
-- local a_opt = nasrt.optim.Adam(net:arch_parameters(), {lr = 3e-4, betas = {0.5, 0.999}})
-- print(net:arch_string())
function M.nb201(opts)
  return SearchNetwork(opts)
end

return M
