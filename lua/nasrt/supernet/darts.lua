--- nasrt.supernet (darts.lua): the differentiable cell-search families and
-- what they produce.
--
-- * `darts{...}`      the DARTS search network (differentiable.md §1.2-1.3)
--                     with softmax (DARTS), sigmoid (FairDARTS, §5.2) or
--                     Gumbel straight-through (GDAS, §5.3) relaxation; alphas
--                     shared by cell type or one set per cell.
-- * `agnas{...}`      AGNAS micro (§3.1-3.2): an attention module on every
--                     edge of every cell, no alphas, per-op scores.
-- * `att_darts{...}`  Att-DARTS (§4.2, location `after_every`): a softmax
--                     mixture of attention modules after every mixed op.
-- * `darts_network(genotype, {...})`  the discrete evaluation network (§1.7):
--                     one genotype, the AGNAS five-cell-type list (§3.3), or
--                     one genotype per cell; Att-DARTS triples.
-- * genotypes: `genotype_parse` (the DARTS top-2 rule, §1.6),
--   `genotype_to_string` / `genotype_from_string` (DARTS' printed
--   `Genotype(...)` text), `genotype_dot` (Graphviz, like DARTS'
--   visualize.py), and the fixtures in `darts_genotypes`.
--
-- Genotypes are plain Lua tables (JSON-able), with DARTS' 0-based state
-- indices: `{normal = {{"sep_conv_3x3", 0}, ...}, normal_concat = {2, 3, 4, 5},
-- reduce = {...}, reduce_concat = {...}}`.  One cell's genotype (AGNAS) has
-- only the normal or only the reduce pair; Att-DARTS entries are triples
-- `{"sep_conv_3x3", 0, "CBAM"}`.
--
-- Architecture parameters are kept apart from the weights: `net:parameters()`
-- holds weights only, `net:arch_parameters()` the alphas (and betas).  They
-- are registered as buffers, so `state_dict()`/`load_state_dict()` carry them
-- (checkpoints keep the architecture) while optimizers over `parameters()`
-- never see them.
--
-- Speed.  The cell forward is the hot path of a DARTS step, so it is
-- written against the ops directly: every op list is compiled once; `none`
-- is never run (its output is zero, so leaving it out of the weighted sum
-- changes neither the value nor any gradient; its weight still takes its
-- softmax share); the ReLU that opens every conv op (and both preprocessing
-- ops) is computed once per state and shared by all ops that read it (the
-- same numbers as each op applying its own ReLU); each edge is one fused
-- `F.weighted_sum` (AGNAS: `F.attn_sum`), and each node one more.  GDAS
-- evaluates only the sampled op of each edge.
--
-- Where nasrt deviates from an upstream implementation it says so in a
-- `NOTE(deviation):` comment.
-- @module nasrt.supernet.darts
-- @usage
-- local supernet = require "nasrt.supernet"
-- local net = supernet.darts{C = 16, layers = 8, classes = 10, in_channels = 1}
-- local logits = net(x)                          -- [N, 10]
-- local g = net:genotype()
-- print(supernet.genotype_to_string(g))
-- local model = supernet.darts_network(g, {C = 36, layers = 20, auxiliary = true})
local core = require "nasrt.core"
local nn = require "nasrt.nn"
local blocks = require "nasrt.blocks"
local F = core.F

local M = {}

local is_tensor = core.is_tensor

-- ------------------------------------------------------------ helpers



local shape_str, check_opts, opt = nn.util.shape_str, nn.util.check_opts, nn.util.opt

local function check_int(v, what, fn, min)
  if math.type(v) ~= "integer" or v < (min or 1) then
    error(("%s: %s must be an integer >= %d, got %s"):format(fn, what, min or 1, tostring(v)), 3)
  end
  return v
end

local function index_of(list, name)
  for i = 1, #list do if list[i] == name then return i end end
  return nil
end

-- A tensor argument of a module's forward; anything else raises naming fn.
local function check_input(x, fn, what)
  if not is_tensor(x) then
    error(("%s: %s must be a tensor, got %s"):format(fn, what or "the input",
      x == nil and "nil" or type(x)), 3)
  end
  return x
end

local function copy_list(t)
  return table.move(t, 1, #t, 1, {})
end

--- Cells (0-based) that are reduction cells: layers//3 and 2*layers//3.
local function is_reduction(i, layers)
  return i == layers // 3 or i == 2 * layers // 3
end

--- Number of edges of a cell with `steps` intermediate nodes.
local function num_edges(steps)
  return steps * (steps + 3) // 2
end

-- constant ones vectors for the node sums (no grad)
local ONES = {}
local function ones(n)
  local t = ONES[n]
  if not t then
    t = core.ones { n }
    ONES[n] = t
  end
  return t
end

--- Sum of a list of same-shape tensors in one fused pass.
local function sum_list(list)
  local n = #list
  if n == 1 then return list[1] end
  return F.weighted_sum(list, ones(n))
end

--- [N, C, H, W] -> [N, C] global average pool.
local function gap(x)
  local s = x:shape()
  return F.mean(x:reshape { s[1], s[2], s[3] * s[4] }, 3)
end

-- ------------------------------------------------------------ compiled ops

-- How an op is run on a state x whose ReLU may already exist:
--   ID    identity: x
--   ZERO  DARTS' none: never run inside a weighted sum
--   RSEQ  a Sequential opening with ReLU (SepConv, DilConv, ReLUConvBN):
--         the rest of its children on relu(x)
--   FR    DARTS' FactorizedReduce (stride 2): its convs on relu(x)
--   PLAIN anything else: m(x)
local ID, ZERO, RSEQ, FR, PLAIN = 1, 2, 3, 4, 5

local function compile_op(m)
  local mt = getmetatable(m)
  if mt == nn.Identity then return { kind = ID, mod = m } end
  if mt == nn.Zero then return { kind = ZERO, mod = m } end
  if mt == blocks.FactorizedReduce and m.stride == 2 and not m.nb201 then
    return { kind = FR, mod = m }
  end
  if m.forward == nn.Sequential.forward then
    local ch = m:children()
    if #ch >= 2 and getmetatable(ch[1]) == nn.ReLU then
      return { kind = RSEQ, mod = m, tail = table.move(ch, 2, #ch, 1, {}) }
    end
  end
  return { kind = PLAIN, mod = m }
end

-- relu(x), computed once per forward for each tensor (rc: tensor -> relu)
local function relu_of(x, rc)
  local r = rc[x]
  if not r then
    r = F.relu(x)
    rc[x] = r
  end
  return r
end

--- DARTS' FactorizedReduce on an input that already went through the ReLU.
-- The shifted branch reads x without its first row and column; for odd
-- sizes it is zero-padded on the right and bottom first, as the PyTorch
-- reference (bench/torch_darts_step.py) does; for even sizes the two forms
-- are the same numbers.
-- NOTE(deviation): DARTS' own FactorizedReduce fails on odd sizes.
local function fr_pre_bn(fr, rx)
  local s = rx:shape()
  local odd = s[3] % 2 == 1 or s[4] % 2 == 1
  return F.cat({ fr.conv_1(rx), fr:_conv_shifted(rx, odd) }, 2)
end

local function fr_forward(fr, rx)
  return fr.bn(fr_pre_bn(fr, rx))
end

local function run_op(rec, x, rc)
  local kind = rec.kind
  if kind == ID then return x end
  if kind == RSEQ then
    local y = relu_of(x, rc)
    local tail = rec.tail
    for t = 1, #tail do y = tail[t](y) end
    return y
  end
  if kind == FR then return fr_forward(rec.mod, relu_of(x, rc)) end
  return rec.mod(x)
end

-- ------------------------------------------------------------ options

local function check_primitives(list, fn)
  if type(list) ~= "table" or #list == 0 then
    error(("%s: primitives must be a non-empty list of op names"):format(fn), 3)
  end
  if #list > 15 then
    error(("%s: at most 15 primitives (the fused mixed op's limit), got %d"):format(fn, #list), 3)
  end
  for i, name in ipairs(list) do
    if type(name) ~= "string" or not blocks.DARTS_OPS[name] then
      error(("%s: primitive %d ('%s') is not a DARTS op"):format(fn, i, tostring(name)), 3)
    end
  end
  return copy_list(list)
end

local SKELETON_OPTS = { C = true, layers = true, steps = true, multiplier = true,
                        stem_multiplier = true, classes = true, in_channels = true,
                        primitives = true }

local function skeleton_opts(opts, fn, default_primitives, extra)
  local allowed = {}
  for k in pairs(SKELETON_OPTS) do allowed[k] = true end
  for k in pairs(extra or {}) do allowed[k] = true end
  opts = check_opts(opts, allowed, fn)
  local o = {
    C = check_int(opt(opts.C, 16), "C", fn),
    layers = check_int(opt(opts.layers, 8), "layers", fn),
    steps = check_int(opt(opts.steps, 4), "steps", fn),
    multiplier = check_int(opt(opts.multiplier, 4), "multiplier", fn),
    stem_multiplier = check_int(opt(opts.stem_multiplier, 3), "stem_multiplier", fn),
    classes = check_int(opt(opts.classes, 10), "classes", fn),
    in_channels = check_int(opt(opts.in_channels, 1), "in_channels", fn),
    primitives = check_primitives(opt(opts.primitives, default_primitives), fn),
  }
  if o.C % 2 ~= 0 then
    error(("%s: C must be even (FactorizedReduce splits it in two), got %d"):format(fn, o.C), 3)
  end
  if o.multiplier > o.steps then
    error(("%s: multiplier (%d) cannot exceed steps (%d)"):format(fn, o.multiplier, o.steps), 3)
  end
  if o.steps + 1 > 15 then
    error(("%s: at most 14 steps, got %d"):format(fn, o.steps), 3)
  end
  return o, opts
end

-- Runs of consecutive active (non-none) columns, so the weights of the
-- active ops are one narrow (DARTS and AGNAS orders) or a few.
local function active_columns(primitives)
  local active, runs = {}, {}
  for k, name in ipairs(primitives) do
    if name ~= "none" then
      active[#active + 1] = k
      local r = runs[#runs]
      if r and r[1] + r[2] == k then r[2] = r[2] + 1 else runs[#runs + 1] = { k, 1 } end
    end
  end
  return active, runs
end

-- W [E, n] -> the active columns [E, k], contiguous
local function select_active(W, runs, n)
  if #runs == 1 and runs[1][2] == n then return W end
  local parts = {}
  for i, r in ipairs(runs) do parts[i] = F.narrow(W, 2, r[1], r[2]) end
  local out = #parts == 1 and parts[1] or F.cat(parts, 2)
  return out:contiguous()
end

-- 1e-3 * N(0, 1), a leaf with requires_grad
local function new_alpha(E, n)
  local t = core.no_grad(function() return core.randn { E, n }:mul_(1e-3) end)
  return t:requires_grad(true)
end

-- ------------------------------------------------------------ edges

--- A DARTS mixed op: every primitive on the same input, mixed by weights.
-- `forward(x, w)` with w the [n] weights of all primitives (standalone use;
-- the search cell calls the compiled ops directly).
-- @type MixedOp
local MixedOp = nn.class("MixedOp")
M.darts_MixedOp = MixedOp

function MixedOp:__init(C, stride, primitives)
  local fn = self.__name
  check_int(C, "C", fn)
  if stride ~= 1 and stride ~= 2 then
    error(("%s: stride must be 1 or 2, got %s"):format(fn, tostring(stride)), 3)
  end
  primitives = check_primitives(primitives, fn)
  self.ops = nn.ModuleList()
  for _, name in ipairs(primitives) do self.ops:append(blocks.darts_search_op(name, C, stride)) end
  self.stride = stride
  self:_compile(primitives)
end

-- Folding the ops' final batch norms into the weighted sum: for each
-- active op, {bn = its final BatchNorm2d (affine=false), pre = function
-- giving its input} or {id = true} (skip_connect at stride 1).  nil when an
-- op does not end in such a BN or the BNs differ in eps / momentum.
local function fold_plan(active)
  local plan, eps, mom = {}, nil, nil
  for a, rec in ipairs(active) do
    local m, bn, pre = rec.mod, nil, nil
    if rec.kind == ID then
      plan[a] = { id = true }
    else
      local mt = getmetatable(m)
      if rec.kind == FR then
        bn, pre = m.bn, function(x, rc) return fr_pre_bn(m, relu_of(x, rc)) end
      elseif rec.kind == PLAIN and (mt == blocks.SepConv or mt == blocks.DilConv or mt == blocks.PoolBN) then
        local ch = m:children()
        bn, pre = ch[#ch], function(x) return blocks.forward_but_last(m, x) end
      end
      if not bn or getmetatable(bn) ~= nn.BatchNorm2d or bn.affine or bn.momentum == nil then
        return nil
      end
      if eps and (bn.eps ~= eps or bn.momentum ~= mom) then return nil end
      eps, mom = bn.eps, bn.momentum
      plan[a] = { bn = bn, pre = pre }
    end
  end
  if not eps then return nil end
  plan.opts = { eps = eps, momentum = mom }
  return plan
end

function MixedOp:_compile(primitives)
  local recs, active = {}, {}
  for k, name in ipairs(primitives) do
    recs[k] = compile_op(self.ops[k])
    if name ~= "none" then active[#active + 1] = recs[k] end
  end
  self._recs, self._active = recs, active
  self._active_cols, self._runs = active_columns(primitives)
  self._n = #primitives
  self._fold = fold_plan(active)
end

function MixedOp:forward(x, w)
  check_input(x, self.__name)
  if not is_tensor(w) or w:numel() ~= self._n then
    error(("%s: weights must be a tensor of %d numbers (one per primitive), got %s"):format(
      self.__name, self._n, is_tensor(w) and shape_str(w:shape()) or type(w)), 2)
  end
  local rc, outs = {}, {}
  for a, rec in ipairs(self._active) do outs[a] = run_op(rec, x, rc) end
  local wa = select_active(w:reshape { 1, self._n }, self._runs, self._n)
  return F.weighted_sum(outs, wa:reshape { #outs })
end

--- An AGNAS edge: every primitive, then the AGNAS attention over the
-- concatenated outputs; the edge output is the attention-weighted sum.
-- @type AGNASEdge
local AGNASEdge = nn.class("AGNASEdge", MixedOp)
M.agnas_Edge = AGNASEdge
M.AGNASEdge = AGNASEdge   -- (the name recipes/agnas.lua uses)

function AGNASEdge:__init(C, stride, primitives, ratio)
  MixedOp.__init(self, C, stride, primitives)
  self.C = C
  self.attention = blocks.AGNASAttention(C, #primitives, { ratio = ratio })
  -- the attention slice of the active ops, when `none` is first or last
  local none = index_of(primitives, "none")
  local n = #primitives
  if none == nil then
    self._slice = false
  elseif none == n then
    self._slice = { 1, (n - 1) * C }
  elseif none == 1 then
    self._slice = { C + 1, (n - 1) * C }
  else
    self._slice = nil   -- none in the middle: a zero tensor takes its place
  end
  self._none = none
end

-- Runs the edge on x; returns the output and the attention weights [N, nC].
function AGNASEdge:mix(x, rc)
  check_input(x, "AGNASEdge")
  rc = rc or {}
  local outs = {}
  local active = self._active
  for a, rec in ipairs(active) do outs[a] = run_op(rec, x, rc) end
  local s = outs[1]:shape()
  local pooled, pos = {}, 0
  for k = 1, self._n do
    if k == self._none then
      pooled[k] = core.zeros { s[1], self.C }
    else
      pos = pos + 1
      pooled[k] = gap(outs[pos])
    end
  end
  local y = self.attention:weights(F.cat(pooled, 2))
  local out
  if self._slice == false then
    out = F.attn_sum(outs, y)
  elseif self._slice then
    out = F.attn_sum(outs, F.narrow(y, 2, self._slice[1], self._slice[2]))
  else
    local full, p = {}, 0
    for k = 1, self._n do
      if k == self._none then full[k] = core.zeros(s) else p = p + 1; full[k] = outs[p] end
    end
    out = F.attn_sum(full, y)
  end
  return out, y
end

function AGNASEdge:forward(x)
  return (self:mix(x, {}))
end

--- An Att-DARTS edge (`after_every`): the DARTS mixed op, then a
-- softmax(beta)-weighted mixture of the attention candidates on its output.
-- @type AttMixedOp
local AttMixedOp = nn.class("AttMixedOp", MixedOp)
M.att_darts_MixedOp = AttMixedOp

function AttMixedOp:__init(C, stride, primitives, attentions, height)
  MixedOp.__init(self, C, stride, primitives)
  if type(attentions) ~= "table" or #attentions == 0 then
    error("AttMixedOp: attentions must be a non-empty list of attention names", 3)
  end
  for i, name in ipairs(attentions) do
    if not blocks.ATT_OPS[name] then
      error(("AttMixedOp: attention %d ('%s') is not one of blocks.ATT_PRIMITIVES"):format(i,
        tostring(name)), 3)
    end
  end
  self.attns = nn.ModuleList()
  local recs = {}
  for b, name in ipairs(attentions) do
    local m = blocks.ATT_OPS[name](C, height, height)
    self.attns:append(m)
    recs[b] = getmetatable(m) == nn.Identity
  end
  self._att_identity = recs
  self._attn_list = self.attns:children()
end

-- ------------------------------------------------------------ search cell

--- A search cell: two preprocessing ops, `steps` nodes, one edge per
-- (node, earlier state) pair, output = the last `multiplier` states
-- concatenated.  Edges are numbered as in DARTS: node 0 gets edges 1-2
-- (from s0, s1), node 1 edges 3-5, ...
-- @type SearchCell
local SearchCell = nn.class("SearchCell")
M.darts_SearchCell = SearchCell

function SearchCell:__init(o, make_edge)
  if type(o) ~= "table" or type(make_edge) ~= "function" then
    error("SearchCell: expected a settings table {C=, C_pp=, C_p=, steps=, multiplier=, "
      .. "reduction=, reduction_prev=} and an edge constructor function(C, stride)", 3)
  end
  for _, k in ipairs { "C", "C_pp", "C_p", "steps", "multiplier" } do check_int(o[k], k, "SearchCell") end
  self.reduction, self.reduction_prev = o.reduction, o.reduction_prev
  self.steps, self.multiplier, self.C = o.steps, o.multiplier, o.C
  if o.reduction_prev then
    self.preprocess0 = blocks.FactorizedReduce(o.C_pp, o.C, { affine = false })
  else
    self.preprocess0 = blocks.ReLUConvBN(o.C_pp, o.C, 1, 1, 0, false)
  end
  self.preprocess1 = blocks.ReLUConvBN(o.C_p, o.C, 1, 1, 0, false)
  self.edges = nn.ModuleList()
  for i = 0, o.steps - 1 do
    for j = 0, i + 1 do
      self.edges:append(make_edge(o.C, (o.reduction and j < 2) and 2 or 1))
    end
  end
  self._pre0 = compile_op(self.preprocess0)
  self._pre1 = compile_op(self.preprocess1)
  self._edges = self.edges:children()
end

--- Runs the cell; edge_fn(cell, e, x, rc, ctx) gives edge e's output.
function SearchCell:_run(s0, s1, rc, edge_fn, ctx)
  local st = { run_op(self._pre0, s0, rc), run_op(self._pre1, s1, rc) }
  local e = 0
  for _ = 1, self.steps do
    local parts = {}
    for j = 1, #st do
      e = e + 1
      parts[j] = edge_fn(self, e, st[j], rc, ctx)
    end
    st[#st + 1] = sum_list(parts)
  end
  return F.cat(table.move(st, #st - self.multiplier + 1, #st, 1, {}), 2)
end

function SearchCell:extra_repr()
  return ("C=%d, steps=%d, multiplier=%d, reduction=%s, reduction_prev=%s"):format(self.C,
    self.steps, self.multiplier, tostring(self.reduction), tostring(self.reduction_prev))
end

-- edge functions ---------------------------------------------------------

--- Whether DARTS edges run their ops' final batch norms (affine=false) and
-- the weighted sum as one `F.bn_weighted_sum` in training (default true):
-- the same numbers with fewer passes over memory.  Set it to false to run
-- them apart, e.g. to compare.
M.fold_bn = true

-- Whether the plan's batch norms fold now: all in training mode (they
-- normalise with the batch statistics; synchronised over the ranks when
-- batch norm is, as F.batch_norm would be).
local function fold_now(plan)
  if not M.fold_bn then return false end
  for _, f in ipairs(plan) do
    if f.bn and not f.bn.training then return false end
  end
  return true
end

-- softmax / sigmoid / given weights: ctx = Wa [E, k] (active columns, contiguous)
local function weighted_edge(cell, e, x, rc, Wa)
  local edge = cell._edges[e]
  local active = edge._active
  local w = F.narrow(Wa, 1, e, 1):reshape { #active }
  local plan = edge._fold
  if plan and fold_now(plan) then
    -- F.bn_weighted_sum: the same numbers as BN then weighted_sum, with
    -- fewer passes over memory (running statistics updated as BN does)
    local zs, bns = {}, {}
    for a, f in ipairs(plan) do
      if f.id then
        zs[a], bns[a] = x, false
      else
        zs[a] = f.pre(x, rc)
        local bn = f.bn
        if bn.track_running_stats then
          bn.num_batches_tracked:add_(1)
          bns[a] = { bn.running_mean, bn.running_var }
        else
          bns[a] = true
        end
      end
    end
    return F.bn_weighted_sum(zs, w, bns, plan.opts)
  end
  local outs = {}
  for a, rec in ipairs(active) do outs[a] = run_op(rec, x, rc) end
  return F.weighted_sum(outs, w)
end

-- GDAS: ctx = {idx = sampled column per edge, hk = [E] weight of the sampled
-- op, rest = [E] sum of the others' (value-zero) straight-through weights}
local function gumbel_edge(cell, e, x, rc, ctx)
  local edge = cell._edges[e]
  local rec = edge._recs[ctx.idx[e]]
  local y = rec.kind == ZERO and rec.mod(x) or run_op(rec, x, rc)
  local out = F.weighted_sum({ y }, F.narrow(ctx.hk, 1, e, 1))
  return F.add(out, F.narrow(ctx.rest, 1, e, 1):reshape { 1, 1, 1, 1 })
end

-- AGNAS: ctx = list collecting the attention weights of each edge (or false)
local function agnas_edge(cell, e, x, rc, ctx)
  local out, y = cell._edges[e]:mix(x, rc)
  if ctx then ctx[e] = y end
  return out
end

-- Att-DARTS: ctx = {Wa = [E, k], B = [E, nb]}
local function att_edge(cell, e, x, rc, ctx)
  local edge = cell._edges[e]
  local outs = {}
  for a, rec in ipairs(edge._active) do outs[a] = run_op(rec, x, rc) end
  local h = F.weighted_sum(outs, F.narrow(ctx.Wa, 1, e, 1):reshape { #outs })
  local atts = {}
  local ident = edge._att_identity
  for b, m in ipairs(edge._attn_list) do atts[b] = ident[b] and h or m(h) end
  return F.weighted_sum(atts, F.narrow(ctx.B, 1, e, 1):reshape { #atts })
end

-- ------------------------------------------------------------ search network

--- Shared skeleton of the search networks: stem, cells, GAP + Linear.
-- @type SearchNetwork
local SearchNetwork = nn.class("SearchNetwork")
M.darts_SearchBase = SearchNetwork

function SearchNetwork:_build(o, make_edge, on_cell)
  self.C, self.layers, self.steps, self.multiplier = o.C, o.layers, o.steps, o.multiplier
  self.num_classes, self.primitives = o.classes, o.primitives
  self.num_edges = num_edges(o.steps)
  local C_curr = o.stem_multiplier * o.C
  self.stem = nn.Sequential(
    nn.Conv2d(o.in_channels, C_curr, 3, { padding = 1, bias = false }),
    nn.BatchNorm2d(C_curr))
  local C_pp, C_p = C_curr, C_curr
  C_curr = o.C
  self.cells = nn.ModuleList()
  local reduction_prev = false
  for i = 0, o.layers - 1 do
    local reduction = is_reduction(i, o.layers)
    if reduction then C_curr = C_curr * 2 end
    local cell = SearchCell({ steps = o.steps, multiplier = o.multiplier, C_pp = C_pp, C_p = C_p,
                              C = C_curr, reduction = reduction, reduction_prev = reduction_prev },
      function(C, stride) return make_edge(C, stride, i) end)
    if on_cell then on_cell(cell, i) end
    self.cells:append(cell)
    reduction_prev = reduction
    C_pp, C_p = C_p, o.multiplier * C_curr
  end
  self.classifier = nn.Linear(C_p, o.classes)
  self._cells = self.cells:children()
  local active, runs = active_columns(o.primitives)
  self._active_cols, self._runs = active, runs
  self._none = index_of(o.primitives, "none")
end

-- stem, cells (cell_fn(i, cell, s0, s1, rc) -> output), head
function SearchNetwork:_trunk(x, cell_fn)
  local rc = {}
  local s0 = self.stem(x)
  local s1 = s0
  for i, cell in ipairs(self._cells) do
    s0, s1 = s1, cell_fn(i, cell, s0, s1, rc)
  end
  local s = s1:shape()
  return self.classifier(F.adaptive_avg_pool2d(s1, 1):reshape { s[1], s[2] })
end

--- Indices (1-based) of the five AGNAS cell types in a network of `layers`
-- cells: first normal, first reduction, first normal of the middle stage,
-- second reduction, first normal of the last stage.
-- @raise when a stage has no normal cell
local function five_cell_types(layers, fn)
  if math.type(layers) ~= "integer" then
    error(("%s: layers must be an integer, got %s"):format(fn, tostring(layers)), 3)
  end
  local r1, r2 = layers // 3, 2 * layers // 3
  local idx = { 0, r1, r1 + 1, r2, r2 + 1 }
  if r1 < 1 or r1 + 1 >= r2 or r2 + 1 >= layers then
    error(("%s: %d cells do not have a normal cell in every stage (reductions at %d and %d)")
      :format(fn, layers, r1, r2), 3)
  end
  for k = 1, 5 do idx[k] = idx[k] + 1 end
  return idx
end

--- The five AGNAS cell types of a `layers`-cell network as 1-based cell
-- indices (e.g. {1, 3, 4, 6, 7} for 8 cells: cells 0, 2, 3, 5, 6).
-- @tparam int layers
-- @treturn {int,...}
function M.darts_cell_types(layers)
  return five_cell_types(layers, "darts_cell_types")
end

-- ------------------------------------------------------------ genotypes

--- Derives a cell's genes from an edge x op weight matrix by the DARTS rule
-- (differentiable.md §1.6): per node the 2 incoming edges with the largest
-- best-non-`none` weight (ties: lower input first), and on each the
-- non-`none` op with the largest weight (ties: first in primitive order).
-- @tparam {{number,...},...} weights E rows of n numbers (softmax(alpha),
--   scores, ...), E = steps*(steps+3)/2
-- @tparam table opts {primitives=DARTS_PRIMITIVES, steps=4, multiplier=4,
--   k=2 (edges kept per node), threshold=nil (FairDARTS: a kept edge whose
--   best weight is below it becomes `none`), attention_weights=nil (E rows;
--   Att-DARTS: the argmax attention is added as a third entry),
--   attentions=ATT_PRIMITIVES}
-- @treturn table genes {{op, input[, attention]}, ...}
-- @treturn table concat {2, ..., steps+1}
function M.genotype_parse(weights, opts)
  opts = check_opts(opts, { primitives = true, steps = true, multiplier = true, k = true,
                            threshold = true, attention_weights = true, attentions = true },
    "genotype_parse")
  local prims = opts.primitives or blocks.DARTS_PRIMITIVES
  local steps = opts.steps or 4
  local mult = opts.multiplier or steps
  local keep = opts.k or 2
  local E = num_edges(steps)
  if type(weights) ~= "table" or #weights ~= E then
    error(("genotype_parse: expected %d rows of weights for %d steps, got %s"):format(E, steps,
      type(weights) == "table" and #weights or type(weights)), 2)
  end
  local none = index_of(prims, "none")
  local aw, anames = opts.attention_weights, opts.attentions or blocks.ATT_PRIMITIVES
  local gene = {}
  local start = 0
  for i = 0, steps - 1 do
    local n = i + 2
    local order, strength = {}, {}
    for j = 0, n - 1 do
      local row = weights[start + j + 1]
      if type(row) ~= "table" or #row ~= #prims then
        error(("genotype_parse: row %d has %s entries, expected %d"):format(start + j + 1,
          type(row) == "table" and #row or type(row), #prims), 2)
      end
      local best = -math.huge
      for k = 1, #prims do
        if k ~= none and row[k] > best then best = row[k] end
      end
      strength[j] = best
      order[#order + 1] = j
    end
    table.sort(order, function(a, b)
      if strength[a] ~= strength[b] then return strength[a] > strength[b] end
      return a < b
    end)
    for t = 1, math.min(keep, n) do
      local j = order[t]
      local row = weights[start + j + 1]
      local kb
      for k = 1, #prims do
        if k ~= none and (kb == nil or row[k] > row[kb]) then kb = k end
      end
      local name = prims[kb]
      if opts.threshold and row[kb] < opts.threshold then name = "none" end
      local entry = { name, j }
      if aw then
        local arow, ab = aw[start + j + 1], nil
        for b = 1, #arow do
          if ab == nil or arow[b] > arow[ab] then ab = b end
        end
        entry[3] = anames[ab]
      end
      gene[#gene + 1] = entry
    end
    start = start + n
  end
  local concat = {}
  for s = 2 + steps - mult, steps + 1 do concat[#concat + 1] = s end
  return gene, concat
end

local function rows_of(t)
  return core.no_grad(function() return t:totable() end)
end

-- ------------------------------------------------------------ DARTS

local RELAXATIONS = { softmax = true, sigmoid = true, gumbel = true }

--- The DARTS search network.
-- @type DARTSSearchNetwork
-- (instances come from supernet.darts{...}; the class call takes no arguments)
local DARTSSearchNetwork = nn.class("DARTSSearchNetwork", SearchNetwork)
DARTSSearchNetwork._factory = "supernet.darts{...}"
M.darts_SearchNetwork = DARTSSearchNetwork

--- Builds a DARTS search network (differentiable.md §1.2-1.3).
-- Stem 3x3 conv in_channels -> stem_multiplier*C + BN; `layers` cells with
-- reductions at layers//3 and 2*layers//3 (C doubles there); every edge a
-- mixed op over `primitives` (affine=false, pools followed by BN); the cell
-- output concatenates the last `multiplier` nodes; GAP + Linear.
-- alphas: `alphas_normal`/`alphas_reduce` (E x n, 1e-3 N(0,1)), or one per
-- cell (`alpha_per_cell`).  Edge weights: softmax(alpha) (DARTS),
-- sigmoid(alpha) (FairDARTS; pass primitives without `none` as upstream
-- does, and add `net:zero_one_loss()`), or GDAS' straight-through Gumbel
-- sample, drawn from the global generator at every forward and kept in
-- `net.last_sample` (hard one-hot values, soft gradients; only the sampled
-- op of each edge runs).  Set `net.tau` per epoch (GDAS: 10 -> 0.1).
-- @tparam[opt] table opts {C=16, layers=8, steps=4, multiplier=4,
--   stem_multiplier=3, classes=10, in_channels=1,
--   primitives=DARTS_PRIMITIVES, relaxation="softmax"|"sigmoid"|"gumbel",
--   alpha_per_cell=false, tau=10 (gumbel temperature; set net.tau per epoch)}
-- @treturn DARTSSearchNetwork
-- @usage local net = supernet.darts{C = 16, layers = 8}
function M.darts(opts)
  local o, raw = skeleton_opts(opts, "darts", blocks.DARTS_PRIMITIVES,
    { relaxation = true, alpha_per_cell = true, tau = true })
  local self = DARTSSearchNetwork()
  local relax = opt(raw.relaxation, "softmax")
  if not RELAXATIONS[relax] then
    error(("darts: relaxation must be 'softmax', 'sigmoid' or 'gumbel', got %s"):format(
      tostring(relax)), 2)
  end
  self.relaxation = relax
  self.tau = opt(raw.tau, 10)
  if type(self.tau) ~= "number" or self.tau <= 0 then
    error("darts: tau must be a positive number", 2)
  end
  self.alpha_per_cell = opt(raw.alpha_per_cell, false)
  local prims = o.primitives
  self:_build(o, function(C, stride) return MixedOp(C, stride, prims) end)
  local E, n = self.num_edges, #prims
  if self.alpha_per_cell then
    for i = 1, o.layers do self:register_buffer("alphas_" .. i, new_alpha(E, n)) end
  else
    self:register_buffer("alphas_normal", new_alpha(E, n))
    self:register_buffer("alphas_reduce", new_alpha(E, n))
  end
  return self
end

--- The architecture parameters as a list of {name, tensor}.
function DARTSSearchNetwork:named_arch_parameters()
  local out = {}
  if self.alpha_per_cell then
    for i = 1, self.layers do out[i] = { "alphas_" .. i, self["alphas_" .. i] } end
  else
    out[1] = { "alphas_normal", self.alphas_normal }
    out[2] = { "alphas_reduce", self.alphas_reduce }
  end
  return out
end

--- The architecture parameters (alphas), apart from `parameters()`.
function SearchNetwork:arch_parameters()
  local out = {}
  for i, nt in ipairs(self:named_arch_parameters()) do out[i] = nt[2] end
  return out
end

function SearchNetwork:named_arch_parameters()
  return {}
end

-- alpha tensor used by cell i (1-based)
function DARTSSearchNetwork:_alpha_of(i)
  if self.alpha_per_cell then return self["alphas_" .. i] end
  return self._cells[i].reduction and self.alphas_reduce or self.alphas_normal
end

local function relax(alpha, kind)
  if kind == "sigmoid" then return F.sigmoid(alpha) end
  return F.softmax(alpha, 2)
end

--- The relaxed weights: softmax(alpha) (sigmoid for FairDARTS; the softmax
-- probabilities for GDAS), as tensors on the tape.
-- @treturn table {normal=[E,n], reduce=[E,n]} or, per cell, a list
function DARTSSearchNetwork:arch_weights()
  if self.alpha_per_cell then
    local out = {}
    for i = 1, self.layers do out[i] = relax(self["alphas_" .. i], self.relaxation) end
    return out
  end
  return { normal = relax(self.alphas_normal, self.relaxation),
           reduce = relax(self.alphas_reduce, self.relaxation) }
end

-- GDAS' straight-through Gumbel sample of one alpha (differentiable.md §5.3)
local function gumbel_sample(alpha, tau)
  local shape = alpha:shape()
  local E, n = shape[1], shape[2]
  for _ = 1, 100 do
    local g = core.no_grad(function()
      return F.neg(F.log(F.neg(F.log(core.rand(shape)))))
    end)
    local p = F.softmax(F.scale(F.log_softmax(alpha, 2) + g, 1 / tau), 2)
    local rows = rows_of(p)
    local ok, idx, hot = true, {}, {}
    for e = 1, E do
      local row, kb = rows[e], 1
      hot[e] = {}
      for k = 1, n do
        local v = row[k]
        if v ~= v or v == math.huge or v == -math.huge then ok = false end
        if v > row[kb] then kb = k end
        hot[e][k] = 0
      end
      hot[e][kb] = 1
      idx[e] = kb
    end
    if ok then
      local onehot = core.tensor(hot)
      local h = onehot - p:detach() + p
      return {
        idx = idx,
        hk = F.sum(F.mul(h, onehot), 2),
        rest = F.sum(F.mul(h, core.ones(shape) - onehot), 2),
        h = h,
      }
    end
  end
  error("darts: Gumbel sampling gave inf/NaN 100 times in a row (alpha diverged?)", 3)
end

--- Draws the GDAS hard sample for every alpha (the global generator).
-- @treturn table {normal=ctx, reduce=ctx} or a list (per cell); ctx.idx[e]
--   is the sampled primitive (1-based) of edge e, ctx.h the hard weights
function DARTSSearchNetwork:sample_gumbel()
  if self.alpha_per_cell then
    local out = {}
    for i = 1, self.layers do out[i] = gumbel_sample(self["alphas_" .. i], self.tau) end
    return out
  end
  return { normal = gumbel_sample(self.alphas_normal, self.tau),
           reduce = gumbel_sample(self.alphas_reduce, self.tau) }
end

local function weights_for(w, i, cell, per_cell)
  if per_cell then return w[i] end
  return cell.reduction and w.reduce or w.normal
end

local function check_arch(self, arch, fn)
  if type(arch) ~= "table" then
    error(("%s: arch must be a table {normal=W, reduce=W} or a list of W per cell"):format(fn), 3)
  end
  local per_cell = arch.normal == nil and arch.reduce == nil
  if per_cell and #arch ~= self.layers then
    error(("%s: arch list has %d entries, the network %d cells"):format(fn, #arch, self.layers), 3)
  end
  local function chk(W, what)
    if not is_tensor(W) then error(("%s: arch %s must be a tensor"):format(fn, what), 4) end
    local s = W:shape()
    if #s ~= 2 or s[1] ~= self.num_edges or s[2] ~= #self.primitives then
      error(("%s: arch %s is %s, expected [%d,%d]"):format(fn, what, shape_str(s),
        self.num_edges, #self.primitives), 4)
    end
  end
  if per_cell then
    for i = 1, #arch do chk(arch[i], "entry " .. i) end
  else
    chk(arch.normal, "normal")
    chk(arch.reduce, "reduce")
  end
  return per_cell
end

--- Logits for a batch.
-- @tparam tensor x [N, in_channels, H, W]
-- @tparam[opt] table arch relaxed weights to use instead of the network's
--   own: {normal=[E,n], reduce=[E,n]} or a list of [E,n] per cell (any
--   relaxation then takes the dense weighted-sum path; a one-hot arch gives
--   exactly the discrete network)
-- @treturn tensor [N, classes]
function DARTSSearchNetwork:forward(x, arch)
  local per_cell = self.alpha_per_cell
  local mode = "dense"
  if arch ~= nil then
    per_cell = check_arch(self, arch, "darts:forward")
  elseif self.relaxation == "gumbel" then
    mode = "gumbel"
    arch = self:sample_gumbel()
    self.last_sample = arch
  else
    arch = self:arch_weights()
  end
  local runs, n = self._runs, #self.primitives
  local cache = {}
  return self:_trunk(x, function(i, cell, s0, s1, rc)
    local w = weights_for(arch, i, cell, per_cell)
    if mode == "gumbel" then return cell:_run(s0, s1, rc, gumbel_edge, w) end
    local Wa = cache[w]
    if not Wa then
      Wa = select_active(w, runs, n)
      cache[w] = Wa
    end
    return cell:_run(s0, s1, rc, weighted_edge, Wa)
  end)
end

--- The relaxed weights as Lua tables (for logging): softmax(alpha)
-- (sigmoid for FairDARTS).
-- @treturn table {normal={{...},...}, reduce=...} or a list per cell
function DARTSSearchNetwork:alphas()
  return core.no_grad(function()
    local w = self:arch_weights()
    if self.alpha_per_cell then
      local out = {}
      for i = 1, #w do out[i] = w[i]:totable() end
      return out
    end
    return { normal = w.normal:totable(), reduce = w.reduce:totable() }
  end)
end

-- Checks rows against t's shape; returns the values, row-major.
local function matrix_values(t, rows, what, fn)
  local s = t:shape()
  if type(rows) ~= "table" or #rows ~= s[1] then
    error(("%s: %s must be a table of %d rows"):format(fn, what, s[1]), 3)
  end
  local flat = {}
  for e = 1, s[1] do
    local r = rows[e]
    if type(r) ~= "table" or #r ~= s[2] then
      error(("%s: %s row %d must have %d numbers"):format(fn, what, e, s[2]), 3)
    end
    for k = 1, s[2] do
      if type(r[k]) ~= "number" then
        error(("%s: %s[%d][%d] is not a number"):format(fn, what, e, k), 3)
      end
      flat[#flat + 1] = r[k]
    end
  end
  return flat
end

-- Sets tensors from tbl[key] (keys in sorted order, all checked before
-- any is written, so a bad table changes nothing); target(key) names the
-- tensor or raises.
local function set_matrices(tbl, target, fn)
  local keys = {}
  for k in pairs(tbl) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local todo = {}
  for i, k in ipairs(keys) do
    local t = target(k)
    todo[i] = { t, matrix_values(t, tbl[k], type(k) == "number" and ("cell " .. k) or k, fn) }
  end
  core.no_grad(function()
    for _, tv in ipairs(todo) do tv[1]:copy_(core.tensor(tv[2]):reshape(tv[1]:shape())) end
  end)
end

--- Sets the raw architecture logits from Lua tables (same layout as
-- `alphas()`; any subset of the keys).
-- @tparam table tbl {normal={{...}}, reduce={{...}}} or a list per cell
function DARTSSearchNetwork:set_alphas(tbl)
  if type(tbl) ~= "table" then error("set_alphas: expected a table", 2) end
  if self.alpha_per_cell then
    set_matrices(tbl, function(i)
      if math.type(i) ~= "integer" or i < 1 or i > self.layers then
        error(("set_alphas: key %s is not a cell index 1..%d"):format(tostring(i), self.layers), 4)
      end
      return self["alphas_" .. i]
    end, "set_alphas")
    return self
  end
  set_matrices(tbl, function(k)
    if k ~= "normal" and k ~= "reduce" then
      error(("set_alphas: unknown key '%s' (normal, reduce)"):format(tostring(k)), 4)
    end
    return self["alphas_" .. k]
  end, "set_alphas")
  return self
end

local function cell_genotype(gene, concat, reduction)
  if reduction then return { reduce = gene, reduce_concat = concat } end
  return { normal = gene, normal_concat = concat }
end

--- One genotype per cell ({normal=, normal_concat=} or {reduce=,
-- reduce_concat=}), from each cell's relaxed weights.
-- @tparam[opt] table opts passed to genotype_parse (threshold=...)
function DARTSSearchNetwork:genotypes(opts)
  local w = self:alphas()
  local out = {}
  for i, cell in ipairs(self._cells) do
    local rows = self.alpha_per_cell and w[i] or (cell.reduction and w.reduce or w.normal)
    local gene, concat = M.genotype_parse(rows, self:_parse_opts(opts))
    out[i] = cell_genotype(gene, concat, cell.reduction)
  end
  return out
end

function SearchNetwork:_parse_opts(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error(("genotype: options must be a table, got %s"):format(type(opts)), 3)
  end
  local o = { primitives = self.primitives, steps = self.steps, multiplier = self.multiplier }
  for k, v in pairs(opts or {}) do o[k] = v end
  return o
end

--- The derived architecture by the DARTS rule on softmax(alpha) (sigmoid
-- for FairDARTS): {normal=, normal_concat=, reduce=, reduce_concat=}.  With
-- per-cell alphas: the five-cell-type list (as `agnas_genotype`).
-- @tparam[opt] table opts {threshold=nil} (FairDARTS' op threshold, 0.85 upstream)
function DARTSSearchNetwork:genotype(opts)
  if self.alpha_per_cell then
    local per = self:genotypes(opts)
    local out = {}
    for k, i in ipairs(five_cell_types(self.layers, "genotype")) do out[k] = per[i] end
    return out
  end
  local w = self:alphas()
  local po = self:_parse_opts(opts)
  local gn, cn = M.genotype_parse(w.normal, po)
  local gr, cr = M.genotype_parse(w.reduce, po)
  return { normal = gn, normal_concat = cn, reduce = gr, reduce_concat = cr }
end

--- FairDARTS' zero-one loss: -mean((sigmoid(alpha) - 0.5)^2) over every
-- alpha entry ("l2"), or -mean|sigmoid(alpha) - 0.5| ("l1").  Add it with
-- weight 10 (upstream's default) to the cross-entropy.
-- @tparam[opt="l2"] string kind
-- @treturn tensor 0-dim
function DARTSSearchNetwork:zero_one_loss(kind)
  kind = kind or "l2"
  if kind ~= "l1" and kind ~= "l2" then error("zero_one_loss: kind must be 'l1' or 'l2'", 2) end
  local total, count
  for _, a in ipairs(self:arch_parameters()) do
    local d = F.scale(F.sigmoid(a), 1, -0.5)
    local v = kind == "l2" and F.sum(F.mul(d, d)) or F.sum(F.abs(d))
    total = total and total + v or v
    count = (count or 0) + a:numel()
  end
  return F.scale(total, -1 / count)
end

function DARTSSearchNetwork:extra_repr()
  return ("relaxation=%s, alpha_per_cell=%s%s"):format(self.relaxation,
    tostring(self.alpha_per_cell), self.relaxation == "gumbel" and (", tau=%g"):format(self.tau) or "")
end

-- ------------------------------------------------------------ AGNAS

--- The AGNAS micro search network.
-- @type AGNASSearchNetwork
-- (instances come from supernet.agnas{...}; the class call takes no arguments)
local AGNASSearchNetwork = nn.class("AGNASSearchNetwork", SearchNetwork)
AGNASSearchNetwork._factory = "supernet.agnas{...}"
M.agnas_SearchNetwork = AGNASSearchNetwork

--- Builds the AGNAS micro search network (differentiable.md §3.1): the
-- DARTS skeleton with, on every edge of every cell, the AGNAS attention
-- (GAP of the n op outputs -> FC nC->nC/ratio -> ReLU -> FC -> sigmoid,
-- no bias); the edge output is the attention-weighted sum of the op
-- outputs.  No alphas: `arch_parameters()` is empty and the attention FCs
-- are ordinary weights.  With `net.collect_scores = true` every forward
-- adds each op's attention, summed over channels and samples, to a
-- per-cell E x n score matrix (`scores()`, `reset_scores()`).
-- @tparam[opt] table opts {C=16, layers=8, steps=4, multiplier=4,
--   stem_multiplier=3, classes=10, in_channels=1,
--   primitives=AGNAS_PRIMITIVES, ratio=8}
-- @treturn AGNASSearchNetwork
function M.agnas(opts)
  local o, raw = skeleton_opts(opts, "agnas", blocks.AGNAS_PRIMITIVES, { ratio = true })
  local self = AGNASSearchNetwork()
  self.ratio = check_int(opt(raw.ratio, 8), "ratio", "agnas")
  local prims, ratio = o.primitives, self.ratio
  self:_build(o, function(C, stride) return AGNASEdge(C, stride, prims, ratio) end)
  self.collect_scores = false
  self:reset_scores()
  return self
end

--- Zeroes every cell's score matrix.
function AGNASSearchNetwork:reset_scores()
  local E, n = self.num_edges, #self.primitives
  local s = {}
  for i = 1, self.layers do s[i] = core.zeros { E, n } end
  self._scores = s
  return self
end

function AGNASSearchNetwork:forward(x)
  local collect = self.collect_scores
  local scores = self._scores
  local n = #self.primitives
  return self:_trunk(x, function(i, cell, s0, s1, rc)
    local ys = collect and {} or false
    local out = cell:_run(s0, s1, rc, agnas_edge, ys)
    if ys then
      core.no_grad(function()
        local rows = {}
        for e = 1, #ys do
          local y = ys[e]:detach()
          local sh = y:shape()
          rows[e] = F.sum(F.sum(y:reshape { sh[1], n, sh[2] // n }, 3), 1):reshape { 1, n }
        end
        scores[i]:add_(F.cat(rows, 1))
      end)
    end
    return out
  end)
end

--- The accumulated scores as Lua tables: layers x E x n.
function AGNASSearchNetwork:scores()
  local out = {}
  for i, s in ipairs(self._scores) do out[i] = s:totable() end
  return out
end

--- One genotype per cell, by the DARTS rule on its score matrix (`none`
-- excluded): {normal=, normal_concat=} or {reduce=, reduce_concat=}.
function AGNASSearchNetwork:genotypes()
  local out = {}
  local po = self:_parse_opts()
  for i, cell in ipairs(self._cells) do
    local gene, concat = M.genotype_parse(self._scores[i]:totable(), po)
    out[i] = cell_genotype(gene, concat, cell.reduction)
  end
  return out
end

--- The AGNAS evaluation genotype (§3.3): the genotypes of the first normal
-- cell, the first reduction cell, the first normal cell of the middle
-- stage, the second reduction cell and the first normal cell of the last
-- stage (cells 0, 2, 3, 5, 6 of 8), for `darts_network`.
function AGNASSearchNetwork:agnas_genotype()
  local per = self:genotypes()
  local out = {}
  for k, i in ipairs(five_cell_types(self.layers, "agnas_genotype")) do out[k] = per[i] end
  return out
end
AGNASSearchNetwork.genotype = AGNASSearchNetwork.agnas_genotype

function AGNASSearchNetwork:extra_repr()
  return ("ratio=%d"):format(self.ratio)
end

-- ------------------------------------------------------------ Att-DARTS

--- The Att-DARTS search network.
-- @type AttDARTSSearchNetwork
-- (instances come from supernet.att_darts{...}; the class call takes no arguments)
local AttDARTSSearchNetwork = nn.class("AttDARTSSearchNetwork", SearchNetwork)
AttDARTSSearchNetwork._factory = "supernet.att_darts{...}"
M.att_darts_SearchNetwork = AttDARTSSearchNetwork

--- Builds the Att-DARTS search network (differentiable.md §4.2, location
-- `after_every`): on every edge h = sum_o softmax(alpha)_o o(x), then
-- out = sum_a softmax(beta)_a Attn_a(h) over the attention candidates.
-- `betas_normal`/`betas_reduce` (E x #attentions, 1e-3 N(0,1)) join the
-- alphas in `arch_parameters()`.  GE_theta-plus needs the feature size, so
-- the input size is an option (square inputs).
-- NOTE(deviation): only the default `after_every` location is built.
-- @tparam[opt] table opts {C=16, layers=8, steps=4, multiplier=4,
--   stem_multiplier=3, classes=10, in_channels=1,
--   primitives=DARTS_PRIMITIVES, attentions=ATT_PRIMITIVES, input_size=28}
function M.att_darts(opts)
  local o, raw = skeleton_opts(opts, "att_darts", blocks.DARTS_PRIMITIVES,
    { attentions = true, input_size = true })
  local atts = copy_list(opt(raw.attentions, blocks.ATT_PRIMITIVES))
  if #atts == 0 or #atts > 15 then error("att_darts: 1..15 attentions expected", 2) end
  for i, a in ipairs(atts) do
    if not blocks.ATT_OPS[a] then
      error(("att_darts: attention %d ('%s') is not in ATT_OPS"):format(i, tostring(a)), 2)
    end
  end
  local self = AttDARTSSearchNetwork()
  self.attentions = atts
  self.input_size = check_int(opt(raw.input_size, 28), "input_size", "att_darts")
  local prims = o.primitives
  local height = self.input_size
  self:_build(o, function(C, stride, i)
    -- the attention sees the cell's output resolution
    local h = height
    for c = 0, i do if is_reduction(c, o.layers) then h = (h + 1) // 2 end end
    return AttMixedOp(C, stride, prims, atts, h)
  end)
  local E = self.num_edges
  self:register_buffer("alphas_normal", new_alpha(E, #prims))
  self:register_buffer("alphas_reduce", new_alpha(E, #prims))
  self:register_buffer("betas_normal", new_alpha(E, #atts))
  self:register_buffer("betas_reduce", new_alpha(E, #atts))
  return self
end

function AttDARTSSearchNetwork:named_arch_parameters()
  return { { "alphas_normal", self.alphas_normal }, { "alphas_reduce", self.alphas_reduce },
           { "betas_normal", self.betas_normal }, { "betas_reduce", self.betas_reduce } }
end

--- softmax of alphas and betas: {normal=, reduce=, betas_normal=, betas_reduce=} tensors.
function AttDARTSSearchNetwork:arch_weights()
  return { normal = F.softmax(self.alphas_normal, 2), reduce = F.softmax(self.alphas_reduce, 2),
           betas_normal = F.softmax(self.betas_normal, 2),
           betas_reduce = F.softmax(self.betas_reduce, 2) }
end

--- Logits; `arch` may give the weights {normal=, reduce=, betas_normal=,
-- betas_reduce=} (all four) instead of the softmax of the parameters.
function AttDARTSSearchNetwork:forward(x, arch)
  local w = arch or self:arch_weights()
  local runs, n = self._runs, #self.primitives
  local ctx = {
    normal = { Wa = select_active(w.normal, runs, n), B = w.betas_normal:contiguous() },
    reduce = { Wa = select_active(w.reduce, runs, n), B = w.betas_reduce:contiguous() },
  }
  return self:_trunk(x, function(_, cell, s0, s1, rc)
    return cell:_run(s0, s1, rc, att_edge, cell.reduction and ctx.reduce or ctx.normal)
  end)
end

--- Lua tables of the softmaxed alphas and betas.
function AttDARTSSearchNetwork:alphas()
  return core.no_grad(function()
    local w = self:arch_weights()
    local out = {}
    for k, t in pairs(w) do out[k] = t:totable() end
    return out
  end)
end

--- Sets raw logits: any of {normal=, reduce=, betas_normal=, betas_reduce=}.
function AttDARTSSearchNetwork:set_alphas(tbl)
  if type(tbl) ~= "table" then error("set_alphas: expected a table", 2) end
  local target = { normal = "alphas_normal", reduce = "alphas_reduce",
                   betas_normal = "betas_normal", betas_reduce = "betas_reduce" }
  set_matrices(tbl, function(k)
    if not target[k] then
      error(("set_alphas: unknown key '%s' (normal, reduce, betas_normal, betas_reduce)"):format(
        tostring(k)), 4)
    end
    return self[target[k]]
  end, "set_alphas")
  return self
end

--- The derived genotype: DARTS' rule on softmax(alpha), plus the argmax
-- attention of each kept edge (triples, as Att-DARTS' genotype()).
function AttDARTSSearchNetwork:genotype()
  local w = self:alphas()
  local function parse(a, b)
    local po = self:_parse_opts { attention_weights = b, attentions = self.attentions }
    return M.genotype_parse(a, po)
  end
  local gn, cn = parse(w.normal, w.betas_normal)
  local gr, cr = parse(w.reduce, w.betas_reduce)
  return { normal = gn, normal_concat = cn, reduce = gr, reduce_concat = cr }
end

function AttDARTSSearchNetwork:extra_repr()
  return ("attentions={%s}, input_size=%d"):format(table.concat(self.attentions, ", "),
    self.input_size)
end

-- ------------------------------------------------------------ evaluation network

-- per-sample drop-path mask, kept with probability 1-p and scaled by 1/(1-p)
local function drop_path(x, p)
  local n = x:shape()[1]
  return F.mul(x, F.dropout(core.ones { n, 1, 1, 1 }, p, true))
end

--- A discrete cell (DARTS model.py): two preprocessing ops (affine), each
-- node the sum of its two chosen ops (each followed by its attention for
-- Att-DARTS genes), output = concat of the `concat` states.
-- @type Cell
local Cell = nn.class("Cell")
M.darts_Cell = Cell

local function check_gene(gene, concat, fn, reduction)
  if type(gene) ~= "table" or #gene == 0 or #gene % 2 ~= 0 then
    error(("%s: a cell genotype needs an even, non-zero number of (op, input) entries"):format(fn), 4)
  end
  local steps = #gene // 2
  for m, g in ipairs(gene) do
    if type(g) ~= "table" or type(g[1]) ~= "string" or math.type(g[2]) ~= "integer" then
      error(("%s: entry %d must be {op_name, input_index}"):format(fn, m), 4)
    end
    if not blocks.DARTS_OPS[g[1]] then
      error(("%s: entry %d: unknown op '%s'"):format(fn, m, g[1]), 4)
    end
    local node = (m - 1) // 2
    if g[2] < 0 or g[2] >= node + 2 then
      error(("%s: entry %d: input %d does not exist for node %d"):format(fn, m, g[2], node), 4)
    end
    if g[3] ~= nil and g[3] ~= "" and not blocks.ATT_OPS[g[3]] then
      error(("%s: entry %d: unknown attention '%s'"):format(fn, m, tostring(g[3])), 4)
    end
  end
  if type(concat) ~= "table" or #concat == 0 then
    error(("%s: a cell genotype needs a non-empty concat list"):format(fn), 4)
  end
  for _, c in ipairs(concat) do
    if math.type(c) ~= "integer" or c < 0 or c > steps + 1 then
      error(("%s: concat entry %s is not a state index 0..%d"):format(fn, tostring(c), steps + 1), 4)
    end
    -- a reduction cell's inputs keep the full resolution, its nodes have half:
    -- they cannot be concatenated (found by tests/fuzz: forward failed in cat)
    if reduction and c < 2 then
      error(("%s: concat entry %d of a reduction cell is a cell input, at twice the nodes' " ..
        "resolution (use nodes 2..%d)"):format(fn, c, steps + 1), 4)
    end
  end
  return steps
end

function Cell:__init(gene, concat, C_pp, C_p, C, reduction, reduction_prev, height)
  local steps = check_gene(gene, concat, "darts_network", reduction)
  self.reduction, self.reduction_prev, self.C = reduction, reduction_prev, C
  self.steps = steps
  self.concat = copy_list(concat)
  self.multiplier = #concat
  if reduction_prev then
    self.preprocess0 = blocks.FactorizedReduce(C_pp, C, { affine = true })
  else
    self.preprocess0 = blocks.ReLUConvBN(C_pp, C, 1, 1, 0, true)
  end
  self.preprocess1 = blocks.ReLUConvBN(C_p, C, 1, 1, 0, true)
  self.ops = nn.ModuleList()
  local has_att = false
  for _, g in ipairs(gene) do
    if g[3] ~= nil and g[3] ~= "" then has_att = true end
  end
  if has_att then self.attns = nn.ModuleList() end
  local recs, indices, droppable, names = {}, {}, {}, {}
  for m, g in ipairs(gene) do
    local stride = (reduction and g[2] < 2) and 2 or 1
    local op = blocks.DARTS_OPS[g[1]](C, stride, true)
    self.ops:append(op)
    recs[m] = compile_op(op)
    indices[m] = g[2]
    names[m] = g[1]
    local op_id = getmetatable(op) == nn.Identity
    if has_att then
      local a = (g[3] ~= nil and g[3] ~= "") and g[3] or "Identity"
      local am = blocks.ATT_OPS[a](C, height, height)
      self.attns:append(am)
      -- Att-DARTS model.py (Cell.forward) drops a path only when neither
      -- the op nor the attention is the identity.  (differentiable.md §4.2
      -- words it as "skipped only if both are identities"; the code is
      -- followed here.)
      droppable[m] = not op_id and getmetatable(am) ~= nn.Identity
    else
      droppable[m] = not op_id
    end
  end
  self._recs, self._indices, self._droppable, self._names = recs, indices, droppable, names
  self._pre0 = compile_op(self.preprocess0)
  self._pre1 = compile_op(self.preprocess1)
  self._attns = has_att and self.attns:children() or false
end

function Cell:forward(s0, s1, drop_prob, rc)
  check_input(s0, "Cell", "s0 (the state two cells back)")
  check_input(s1, "Cell", "s1 (the previous state)")
  if drop_prob ~= nil and (type(drop_prob) ~= "number" or not (drop_prob >= 0 and drop_prob < 1)) then
    error(("Cell: drop_prob must be a number in [0, 1), got %s"):format(tostring(drop_prob)), 2)
  end
  rc = rc or {}
  drop_prob = self.training and drop_prob or 0
  local st = { run_op(self._pre0, s0, rc), run_op(self._pre1, s1, rc) }
  local recs, idx, attns, droppable = self._recs, self._indices, self._attns, self._droppable
  for i = 1, self.steps do
    local h
    for m = 2 * i - 1, 2 * i do
      local y = run_op(recs[m], st[idx[m] + 1], rc)
      if attns then y = attns[m](y) end
      if drop_prob > 0 and droppable[m] then y = drop_path(y, drop_prob) end
      h = h and h + y or y
    end
    st[#st + 1] = h
  end
  local outs = {}
  for k, c in ipairs(self.concat) do outs[k] = st[c + 1] end
  return #outs == 1 and outs[1] or F.cat(outs, 2)
end

function Cell:extra_repr()
  return ("C=%d, reduction=%s, reduction_prev=%s, concat={%s}"):format(self.C,
    tostring(self.reduction), tostring(self.reduction_prev), table.concat(self.concat, ", "))
end

--- DARTS' CIFAR auxiliary head: ReLU, AvgPool 5 (no pad), 1x1 conv ->128,
-- BN, ReLU, 2x2 conv ->768, BN, ReLU, Linear(768 -> classes).
-- NOTE(deviation): DARTS pools with stride 3, which assumes an 8x8 input
-- (32x32 images).  The stride here is the largest <= 3 that leaves a 2x2
-- map, so 28x28 inputs (a 7x7 map, stride 2) work; 8x8 gets stride 3.
-- @type AuxiliaryHead
local AuxiliaryHead = nn.class("AuxiliaryHead")
M.darts_AuxiliaryHead = AuxiliaryHead

function AuxiliaryHead:__init(C, classes)
  check_int(C, "C", "AuxiliaryHead")
  check_int(classes, "classes", "AuxiliaryHead")
  self.conv1 = nn.Conv2d(C, 128, 1, { bias = false })
  self.bn1 = nn.BatchNorm2d(128)
  self.conv2 = nn.Conv2d(128, 768, 2, { bias = false })
  self.bn2 = nn.BatchNorm2d(768)
  self.classifier = nn.Linear(768, classes)
  self.in_channels = C
end

function AuxiliaryHead:forward(x)
  local s = check_input(x, "AuxiliaryHead"):shape()
  if #s ~= 4 then
    error(("AuxiliaryHead: expected an input [N,C,H,W], got %s"):format(shape_str(s)), 2)
  end
  local h = s[3]
  local stride = 3
  while stride > 1 and (h - 5) // stride + 1 < 2 do stride = stride - 1 end
  if h < 6 or (h - 5) // stride + 1 ~= 2 or (s[4] - 5) // stride + 1 ~= 2 then
    error(("AuxiliaryHead: input %s does not pool to 2x2 (needs 6x6 .. 11x11)"):format(
      shape_str(s)), 2)
  end
  local y = F.avg_pool2d(F.relu(x), { kernel = 5, stride = stride, padding = 0,
                                      count_include_pad = false })
  y = F.relu(self.bn1(self.conv1(y)))
  y = F.relu(self.bn2(self.conv2(y)))
  return self.classifier(y:reshape { s[1], 768 })
end

--- The discrete evaluation network.
-- @type DARTSNetwork
-- (instances come from supernet.darts_network(genotype, {...}); the class call takes no arguments)
local DARTSNetwork = nn.class("DARTSNetwork")
DARTSNetwork._factory = "supernet.darts_network(genotype, {...})"
M.darts_Network = DARTSNetwork

local function is_list(t)
  return type(t) == "table" and t[1] ~= nil and t.normal == nil and t.reduce == nil
end

-- the gene and concat cell i (0-based) uses
local function gene_for(g, i, layers, reduction)
  local entry = g
  if is_list(g) then
    if #g == layers then
      entry = g[i + 1]
    elseif #g == 5 then
      local r1, r2 = layers // 3, 2 * layers // 3
      local k = i < r1 and 1 or i == r1 and 2 or i < r2 and 3 or i == r2 and 4 or 5
      entry = g[k]
    else
      error(("darts_network: a list of genotypes must have 5 entries (AGNAS cell types) or " ..
        "one per cell (%d), got %d"):format(layers, #g), 3)
    end
  end
  if type(entry) ~= "table" then
    error(("darts_network: no genotype for cell %d"):format(i), 3)
  end
  local key = reduction and "reduce" or "normal"
  local gene, concat = entry[key], entry[key .. "_concat"]
  if gene == nil then
    error(("darts_network: cell %d is a %s cell but its genotype has no '%s'"):format(i,
      reduction and "reduction" or "normal", key), 3)
  end
  return gene, concat
end

--- Builds the discrete network of a genotype (differentiable.md §1.7; AGNAS
-- §3.3; Att-DARTS §4.2): stem 3x3 conv + BN, `layers` cells (reductions at
-- layers//3 and 2*layers//3) with affine ops and no BN after pools,
-- drop-path on non-identity op outputs in training (`net.drop_path_prob`,
-- per-sample mask), an optional auxiliary head after cell 2*layers//3, GAP +
-- Linear.  In training mode with `auxiliary` the forward returns logits and
-- the auxiliary logits; otherwise the logits only.
-- @tparam table genotype a genotype {normal=, normal_concat=, reduce=,
--   reduce_concat=}, the AGNAS list of 5 cell genotypes, or one per cell
-- @tparam[opt] table opts {C=36, layers=20, classes=10, in_channels=1,
--   stem_multiplier=3, auxiliary=false, drop_path=0, input_size=28 (only
--   GE_theta-plus attention needs it)}
-- @treturn DARTSNetwork
function M.darts_network(genotype, opts)
  if type(genotype) ~= "table" then
    error("darts_network: genotype must be a table (see genotype_from_string for text)", 2)
  end
  opts = check_opts(opts, { C = true, layers = true, classes = true, in_channels = true,
                            stem_multiplier = true, auxiliary = true, drop_path = true,
                            input_size = true }, "darts_network")
  local C = check_int(opt(opts.C, 36), "C", "darts_network")
  local layers = check_int(opt(opts.layers, 20), "layers", "darts_network")
  local classes = check_int(opt(opts.classes, 10), "classes", "darts_network")
  local in_ch = check_int(opt(opts.in_channels, 1), "in_channels", "darts_network")
  local stem_mult = check_int(opt(opts.stem_multiplier, 3), "stem_multiplier", "darts_network")
  local height = check_int(opt(opts.input_size, 28), "input_size", "darts_network")
  if C % 2 ~= 0 then error(("darts_network: C must be even, got %d"):format(C), 2) end
  local self = DARTSNetwork()
  self.drop_path_prob = opt(opts.drop_path, 0)
  if type(self.drop_path_prob) ~= "number" or self.drop_path_prob < 0 or self.drop_path_prob >= 1 then
    error("darts_network: drop_path must be a number in [0, 1)", 2)
  end
  self.layers, self.auxiliary = layers, opt(opts.auxiliary, false)
  self.genotype = genotype
  local C_curr = stem_mult * C
  self.stem = nn.Sequential(nn.Conv2d(in_ch, C_curr, 3, { padding = 1, bias = false }),
    nn.BatchNorm2d(C_curr))
  local C_pp, C_p = C_curr, C_curr
  C_curr = C
  self.cells = nn.ModuleList()
  local reduction_prev = false
  local C_aux
  for i = 0, layers - 1 do
    local reduction = is_reduction(i, layers)
    if reduction then
      C_curr = C_curr * 2
      height = (height + 1) // 2
    end
    local gene, concat = gene_for(genotype, i, layers, reduction)
    local cell = Cell(gene, concat, C_pp, C_p, C_curr, reduction, reduction_prev, height)
    self.cells:append(cell)
    reduction_prev = reduction
    C_pp, C_p = C_p, cell.multiplier * C_curr
    if i == 2 * layers // 3 then C_aux = C_p end
  end
  if self.auxiliary then self.auxiliary_head = AuxiliaryHead(C_aux, classes) end
  self.classifier = nn.Linear(C_p, classes)
  self._cells = self.cells:children()
  return self
end

function DARTSNetwork:forward(x)
  local rc = {}
  local s0 = self.stem(x)
  local s1 = s0
  local aux
  local p = self.drop_path_prob or 0
  local aux_at = 2 * self.layers // 3 + 1
  for i, cell in ipairs(self._cells) do
    s0, s1 = s1, cell:forward(s0, s1, p, rc)
    if i == aux_at and self.auxiliary and self.training then aux = self.auxiliary_head(s1) end
  end
  local s = s1:shape()
  local logits = self.classifier(F.adaptive_avg_pool2d(s1, 1):reshape { s[1], s[2] })
  if aux then return logits, aux end
  return logits
end

function DARTSNetwork:extra_repr()
  return ("layers=%d, auxiliary=%s, drop_path_prob=%g"):format(self.layers,
    tostring(self.auxiliary), self.drop_path_prob or 0)
end

-- ------------------------------------------------------------ genotype text

local function entry_str(g)
  local s = ("('%s', %d"):format(g[1], g[2])
  if g[3] ~= nil then s = s .. (", '%s'"):format(g[3]) end
  return s .. ")"
end

local function gene_str(gene)
  local parts = {}
  for i, g in ipairs(gene) do parts[i] = entry_str(g) end
  return "[" .. table.concat(parts, ", ") .. "]"
end

local function concat_str(c)
  local contiguous = #c > 0
  for i = 2, #c do if c[i] ~= c[i - 1] + 1 then contiguous = false end end
  if contiguous then return ("range(%d, %d)"):format(c[1], c[#c] + 1) end
  return "[" .. table.concat(c, ", ") .. "]"
end

local validate_cell_gene

local function one_genotype_str(g)
  if type(g) ~= "table" then error("genotype_to_string: expected a genotype table", 3) end
  for _, key in ipairs { "normal", "reduce" } do
    local err = g[key] ~= nil and validate_cell_gene(g[key], key)
    if err then error("genotype_to_string: " .. err, 3) end
    local c = g[key .. "_concat"]
    if g[key] ~= nil and (type(c) ~= "table" or #c == 0) then
      error(("genotype_to_string: %s_concat must be a non-empty list"):format(key), 3)
    end
  end
  if g.normal and g.reduce then
    local s = ("Genotype(normal=%s, normal_concat=%s, reduce=%s, reduce_concat=%s"):format(
      gene_str(g.normal), concat_str(g.normal_concat), gene_str(g.reduce),
      concat_str(g.reduce_concat))
    if g.normal_bottleneck ~= nil or g.reduce_bottleneck ~= nil then
      s = s .. (", normal_bottleneck='%s', reduce_bottleneck='%s'"):format(
        g.normal_bottleneck or "", g.reduce_bottleneck or "")
    end
    return s .. ")"
  elseif g.normal then
    return ("Normal_Genotype(normal=%s, normal_concat=%s)"):format(gene_str(g.normal),
      concat_str(g.normal_concat))
  elseif g.reduce then
    return ("Reduce_Genotype(reduce=%s, reduce_concat=%s)"):format(gene_str(g.reduce),
      concat_str(g.reduce_concat))
  end
  error("genotype_to_string: the table has neither 'normal' nor 'reduce'", 3)
end

--- DARTS' printed form of a genotype:
-- `Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6),
-- reduce=[...], reduce_concat=range(2, 6))`; one cell's genotype prints as
-- AGNAS' `Normal_Genotype(...)`/`Reduce_Genotype(...)`; a list of cell
-- genotypes as `[..., ...]`; Att-DARTS triples as `('op', j, 'CBAM')`.
-- @tparam table g
-- @treturn string
function M.genotype_to_string(g)
  if is_list(g) then
    local parts = {}
    for i, c in ipairs(g) do parts[i] = one_genotype_str(c) end
    return "[" .. table.concat(parts, ", ") .. "]"
  end
  return one_genotype_str(g)
end

-- A tokenizer + recursive-descent parser for the Python subset genotypes
-- are written in: names, calls with positional/keyword arguments, lists,
-- tuples, quoted strings, integers, range(a[, b]).
local FIELDS = {
  Genotype = { "normal", "normal_concat", "reduce", "reduce_concat", "normal_bottleneck",
               "reduce_bottleneck" },
  Normal_Genotype = { "normal", "normal_concat" },
  Reduce_Genotype = { "reduce", "reduce_concat" },
}

local MAX_RANGE = 4096

local function tokenize(s)
  local toks, i, n = {}, 1, #s
  while i <= n do
    local c = s:sub(i, i)
    if c:match("%s") then
      i = i + 1
    elseif c == "#" then
      local j = s:find("\n", i, true) or n
      i = j + 1
    elseif c:match("[%(%)%[%],=]") then
      toks[#toks + 1] = { "p", c, i }
      i = i + 1
    elseif c == "'" or c == '"' then
      local j = s:find(c, i + 1, true)
      if not j then return nil, ("unterminated string at %d"):format(i) end
      toks[#toks + 1] = { "s", s:sub(i + 1, j - 1), i }
      i = j + 1
    elseif c:match("[%-%d]") then
      local num = s:match("^%-?%d+", i)
      if not num then return nil, ("bad number at %d"):format(i) end
      local v = math.tointeger(tonumber(num))
      if not v then return nil, ("number out of range at %d"):format(i) end
      toks[#toks + 1] = { "n", v, i }
      i = i + #num
    elseif c:match("[%a_]") then
      local name = s:match("^[%w_%.]+", i)
      toks[#toks + 1] = { "id", name, i }
      i = i + #name
    else
      return nil, ("unexpected character '%s' at %d"):format(c, i)
    end
  end
  return toks
end

local function parse_text(s)
  local toks, terr = tokenize(s)
  if not toks then return nil, terr end
  local pos = 1
  local function peek() return toks[pos] end
  local function fail(msg)
    local t = toks[pos]
    error({ msg = ("%s at %s"):format(msg, t and ("position " .. t[3]) or "end of text") }, 0)
  end
  local function expect(v)
    local t = toks[pos]
    if not t or t[1] ~= "p" or t[2] ~= v then fail(("expected '%s'"):format(v)) end
    pos = pos + 1
  end
  local function accept(v)
    local t = toks[pos]
    if t and t[1] == "p" and t[2] == v then
      pos = pos + 1
      return true
    end
    return false
  end
  local value
  local function seq(close)
    local out = {}
    if accept(close) then return out end
    repeat
      if peek() and peek()[1] == "p" and peek()[2] == close then break end  -- trailing comma
      out[#out + 1] = value()
    until not accept(",")
    expect(close)
    return out
  end
  function value()
    local t = peek()
    if not t then fail("unexpected end") end
    if t[1] == "s" or t[1] == "n" then
      pos = pos + 1
      return t[2]
    end
    if t[1] == "p" and t[2] == "[" then
      pos = pos + 1
      return seq("]")
    end
    if t[1] == "p" and t[2] == "(" then
      pos = pos + 1
      return seq(")")
    end
    if t[1] == "id" then
      pos = pos + 1
      local name = t[2]:match("([%w_]+)$")
      if not accept("(") then fail(("unknown name '%s'"):format(t[2])) end
      local args, kw = {}, {}
      if not accept(")") then
        repeat
          if peek() and peek()[1] == "p" and peek()[2] == ")" then break end
          local a, b = toks[pos], toks[pos + 1]
          if a and a[1] == "id" and b and b[1] == "p" and b[2] == "=" then
            pos = pos + 2
            kw[a[2]] = value()
          else
            args[#args + 1] = value()
          end
        until not accept(",")
        expect(")")
      end
      if name == "range" then
        local lo, hi = args[1], args[2]
        if hi == nil then lo, hi = 0, lo end
        if math.type(lo) ~= "integer" or math.type(hi) ~= "integer" then fail("bad range") end
        -- concat lists name a cell's states; a huge range would be a way to
        -- exhaust memory from one line of text (found by tests/fuzz); the
        -- length in floats, as hi - lo can wrap around
        if hi + 0.0 - lo > MAX_RANGE then fail(("range(%d, %d) is longer than %d"):format(lo, hi, MAX_RANGE)) end
        local r = {}
        -- empty, as in Python; also keeps hi - 1 from wrapping at math.mininteger
        if hi <= lo then return r end
        for v = lo, hi - 1 do r[#r + 1] = v end
        return r
      end
      local fields = FIELDS[name]
      if not fields then fail(("unknown constructor '%s'"):format(name)) end
      local g = {}
      for k, v in ipairs(args) do
        if not fields[k] then fail(("too many arguments to %s"):format(name)) end
        g[fields[k]] = v
      end
      for k, v in pairs(kw) do
        if not index_of(fields, k) then fail(("%s has no field '%s'"):format(name, k)) end
        g[k] = v
      end
      g.__kind = name
      return g
    end
    fail("unexpected token")
  end
  local ok, res = pcall(function()
    -- optional "NAME =" prefix (a line of genotypes.py)
    if toks[1] and toks[1][1] == "id" and toks[2] and toks[2][1] == "p" and toks[2][2] == "=" then
      pos = 3
    end
    local v = value()
    if pos <= #toks then fail("trailing text") end
    return v
  end)
  if not ok then
    if type(res) == "table" then return nil, res.msg end
    error(res, 0)
  end
  return res
end

function validate_cell_gene(gene, what)
  if type(gene) ~= "table" then return ("%s must be a list of (op, input) tuples"):format(what) end
  for i, e in ipairs(gene) do
    if type(e) ~= "table" or type(e[1]) ~= "string" or math.type(e[2]) ~= "integer"
      or (e[3] ~= nil and type(e[3]) ~= "string") or #e > 3 then
      return ("%s entry %d must be ('op', input) or ('op', input, 'attention')"):format(what, i)
    end
    if not blocks.DARTS_OPS[e[1]] then
      return ("%s entry %d: unknown op '%s'"):format(what, i, e[1])
    end
    -- (the upper bound depends on how many entries a node has: darts_network
    -- checks it)
    if e[2] < 0 then
      return ("%s entry %d: input %d is negative"):format(what, i, e[2])
    end
    if e[3] ~= nil and e[3] ~= "" and not blocks.ATT_OPS[e[3]] then
      return ("%s entry %d: unknown attention '%s'"):format(what, i, e[3])
    end
  end
  return nil
end

local function validate_genotype(g)
  if type(g) ~= "table" or not g.__kind then return "expected Genotype(...)" end
  g.__kind = nil
  for _, key in ipairs { "normal", "reduce" } do
    if g[key] ~= nil then
      local err = validate_cell_gene(g[key], key)
      if err then return err end
      local c = g[key .. "_concat"]
      if type(c) ~= "table" then return key .. "_concat must be a list or range" end
      -- a cell outputs at least one state, and states are numbered from 0
      -- (genotype_to_string refuses the same; found by tests/fuzz)
      if #c == 0 then return key .. "_concat is empty" end
      for _, v in ipairs(c) do
        if math.type(v) ~= "integer" then return key .. "_concat must hold integers" end
        if v < 0 or v > MAX_RANGE then
          return ("%s_concat: state %d is outside 0..%d"):format(key, v, MAX_RANGE)
        end
      end
    end
  end
  if g.normal == nil and g.reduce == nil then return "the genotype has no cells" end
  for _, key in ipairs { "normal_bottleneck", "reduce_bottleneck" } do
    if g[key] ~= nil and type(g[key]) ~= "string" then return key .. " must be a string" end
  end
  return nil
end

--- Parses DARTS' printed genotype text (also a `NAME = Genotype(...)`
-- line of genotypes.py, AGNAS' `Normal_Genotype`/`Reduce_Genotype`, a list
-- of them, and Att-DARTS' triples/bottleneck fields) into the table form.
-- @tparam string s
-- @treturn table|nil the genotype (or a list of cell genotypes)
-- @treturn string on failure, the reason
function M.genotype_from_string(s)
  if type(s) ~= "string" then error("genotype_from_string: expected a string", 2) end
  local v, err = parse_text(s)
  if v == nil then return nil, "genotype_from_string: " .. err end
  if type(v) == "table" and v.__kind == nil and v[1] ~= nil then
    for i, g in ipairs(v) do
      local e = validate_genotype(g)
      if e then return nil, ("genotype_from_string: entry %d: %s"):format(i, e) end
    end
    return v
  end
  local e = validate_genotype(v)
  if e then return nil, "genotype_from_string: " .. e end
  return v
end

--- Graphviz DOT text of one cell of a genotype, as DARTS' visualize.py
-- draws it: inputs c_{k-2}, c_{k-1}, nodes 0..steps-1, one edge per gene
-- labelled with its op (and attention), and an edge from every concat
-- node to the output c_{k}.
-- @tparam table g a genotype (or one cell's genotype)
-- @tparam[opt="normal"] string which "normal" or "reduce"
-- @treturn string
function M.genotype_dot(g, which)
  which = which or "normal"
  if which ~= "normal" and which ~= "reduce" then
    error("genotype_dot: which must be 'normal' or 'reduce'", 2)
  end
  local gene = type(g) == "table" and g[which]
  if type(gene) ~= "table" then
    error(("genotype_dot: the genotype has no '%s' cell"):format(which), 2)
  end
  local concat = g[which .. "_concat"]
  local steps = #gene // 2
  local L = {
    "digraph {",
    "\tgraph [rankdir=LR]",
    '\tnode [align=center fontname=times fontsize=20 height=0.5 penwidth=2 shape=rect ' ..
      'style=filled width=0.5]',
    "\tedge [fontname=times fontsize=20]",
    '\t"c_{k-2}" [fillcolor=darkseagreen2]',
    '\t"c_{k-1}" [fillcolor=darkseagreen2]',
  }
  for i = 0, steps - 1 do L[#L + 1] = ('\t"%d" [fillcolor=lightblue]'):format(i) end
  for m, e in ipairs(gene) do
    local node = (m - 1) // 2
    local j = e[2]
    local u = j == 0 and "c_{k-2}" or j == 1 and "c_{k-1}" or tostring(j - 2)
    local label = e[1]
    if e[3] ~= nil and e[3] ~= "" then label = label .. "\\n" .. e[3] end
    L[#L + 1] = ('\t"%s" -> "%d" [label="%s" fillcolor=gray]'):format(u, node, label)
  end
  L[#L + 1] = '\t"c_{k}" [fillcolor=palegoldenrod]'
  local outs = concat or {}
  if #outs == 0 then for s = 2, steps + 1 do outs[#outs + 1] = s end end
  for _, s in ipairs(outs) do
    local u = s == 0 and "c_{k-2}" or s == 1 and "c_{k-1}" or tostring(s - 2)
    L[#L + 1] = ('\t"%s" -> "c_{k}" [fillcolor=gray]'):format(u)
  end
  L[#L + 1] = "}"
  return table.concat(L, "\n") .. "\n"
end

-- ------------------------------------------------------------ fixtures

local function fixture(s)
  return assert(M.genotype_from_string(s))
end

--- Published genotypes as tables: DARTS_V1 and DARTS_V2 (quark0/darts
-- cnn/genotypes.py), AGNAS (the five cell types of Sunzh1996/AGNAS), and
-- Att_DARTS (chomin/Att-DARTS).  Each call returns fresh tables.
M.darts_genotypes = setmetatable({}, {
  __index = function(_, k)
    local texts = {
      DARTS_V1 = "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), " ..
        "('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), " ..
        "('skip_connect', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), " ..
        "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), " ..
        "('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])",
      DARTS_V2 = "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), " ..
        "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), " ..
        "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), " ..
        "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), " ..
        "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])",
      AGNAS = "[Normal_Genotype(normal=[('sep_conv_3x3', 0), ('dil_conv_3x3', 1), " ..
        "('dil_conv_5x5', 0), ('skip_connect', 1), ('sep_conv_3x3', 0), ('sep_conv_5x5', 3), " ..
        "('dil_conv_5x5', 0), ('sep_conv_3x3', 3)], normal_concat=range(2, 6)), " ..
        "Reduce_Genotype(reduce=[('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('skip_connect', 0), " ..
        "('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('skip_connect', 1), ('sep_conv_5x5', 0), " ..
        "('sep_conv_3x3', 1)], reduce_concat=range(2, 6)), " ..
        "Normal_Genotype(normal=[('skip_connect', 0), ('sep_conv_3x3', 1), ('dil_conv_5x5', 0), " ..
        "('sep_conv_3x3', 1), ('dil_conv_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 1), " ..
        "('dil_conv_5x5', 4)], normal_concat=range(2, 6)), " ..
        "Reduce_Genotype(reduce=[('skip_connect', 1), ('skip_connect', 0), ('dil_conv_3x3', 1), " ..
        "('dil_conv_3x3', 0), ('avg_pool_3x3', 0), ('max_pool_3x3', 1), ('avg_pool_3x3', 0), " ..
        "('max_pool_3x3', 1)], reduce_concat=range(2, 6)), " ..
        "Normal_Genotype(normal=[('skip_connect', 0), ('dil_conv_5x5', 1), ('sep_conv_3x3', 0), " ..
        "('sep_conv_3x3', 1), ('sep_conv_5x5', 0), ('max_pool_3x3', 2), ('sep_conv_5x5', 0), " ..
        "('sep_conv_3x3', 1)], normal_concat=range(2, 6))]",
      Att_DARTS = "Genotype(normal=[('sep_conv_3x3', 0, 'DoubleAttention'), " ..
        "('sep_conv_3x3', 1, 'CBAM'), ('sep_conv_3x3', 0, 'CBAM'), ('skip_connect', 2, 'CBAM'), " ..
        "('skip_connect', 0, 'CBAM'), ('sep_conv_3x3', 1, 'CBAM'), ('skip_connect', 0, 'CBAM'), " ..
        "('skip_connect', 2, 'CBAM')], normal_concat=range(2, 6), " ..
        "reduce=[('max_pool_3x3', 0, 'BAM'), ('dil_conv_3x3', 1, 'DoubleAttention'), " ..
        "('avg_pool_3x3', 0, 'BAM'), ('skip_connect', 2, 'CBAM'), ('skip_connect', 2, 'CBAM'), " ..
        "('avg_pool_3x3', 0, 'BAM'), ('skip_connect', 2, 'CBAM'), ('avg_pool_3x3', 0, 'BAM')], " ..
        "reduce_concat=range(2, 6), normal_bottleneck='', reduce_bottleneck='')",
    }
    local s = texts[k]
    if s == nil then return nil end
    return fixture(s)
  end,
})

return M
