-- Gradient checks (central differences) for every differentiable op of
-- nasrt.F, table-driven: each row names the op, a function of the inputs,
-- and the input shapes.
local nasrt = require "nasrt"
local F = nasrt.F
local H = require "helpers"

local function away_from_zero(shape)
  -- values in +-[0.2, 1.2]: keeps relu/abs/max_pool away from their kinks
  local t = nasrt.rand(shape) + 0.2
  local s = nasrt.rand(shape):sub(0.5):scale(1e6):sigmoid() -- ~0 or ~1
  return nasrt.no_grad(function() return (t * (s * 2 - 1)) end):requires_grad(true)
end

local function positive(shape)
  return nasrt.no_grad(function() return nasrt.rand(shape) + 0.5 end):requires_grad(true)
end

local RM, RV = nasrt.randn({3}), nasrt.rand({3}) + 0.5

local cases = {
  {"add", function(a, b) return F.add(a, b) end, {{3, 4}, {3, 4}}},
  {"add broadcast per-channel", function(a, b) return a + b end, {{2, 3, 4, 4}, {3, 1, 1}}},
  {"sub broadcast row", function(a, b) return a - b end, {{3, 5}, {5}}},
  -- same-size operands get +-g written on their first gradient, added after
  {"sub", function(a, b) return F.sub(a, b) end, {{3, 4}, {3, 4}}},
  {"add, an input on both sides", function(a) return F.add(a, a) end, {{3, 4}}},
  {"sub, an input on both sides plus a product", function(a, b)
    return F.add(F.sub(F.mul(a, b), a), F.sub(b, a)) end, {{3, 4}, {3, 4}}},
  {"add, one operand broadcast and one not", function(a, b)
    return F.add(F.add(a, b), a) end, {{2, 3, 4}, {3, 1}}},
  {"mul scalar weight", function(a, b) return F.mul(a, b) end, {{}, {2, 3, 4}}},
  {"mul per-channel", function(a, b) return a * b end, {{2, 3, 2, 2}, {1, 3, 1, 1}}},
  {"div", function(a, b) return a / b end, {{3, 4}, "pos:3,4"}},
  {"div broadcast", function(a, b) return a / b end, {{2, 3}, "pos:1,3"}},
  {"neg", function(a) return -a end, {{5}}},
  {"relu", F.relu, {"kink:4,5"}},
  {"relu6", function(a) return F.relu6(F.scale(a, 4)) end, {"kink:4,5"}}, -- values in +-[0.8, 4.8]
  {"sigmoid", F.sigmoid, {{4, 5}}},
  {"tanh", F.tanh, {{4, 5}}},
  {"exp", F.exp, {{4, 5}}},
  {"log", F.log, {"pos:4,5"}},
  {"sqrt", F.sqrt, {"pos:4,5"}},
  {"abs", F.abs, {"kink:4,5"}},
  {"pow", function(a) return F.pow(a, 3) end, {{4, 5}}},
  {"scale", function(a) return F.scale(a, 2.5, 1) end, {{4, 5}}},
  {"sum all", function(a) return F.sum(a) end, {{3, 4}}},
  {"sum dim", function(a) return F.sum(a, 2) end, {{3, 4, 2}}},
  {"sum dim keepdim", function(a) return F.sum(a, -1, true) end, {{3, 4, 2}}},
  {"mean all", function(a) return F.mean(a) end, {{3, 4}}},
  {"mean dim", function(a) return F.mean(a, 1) end, {{3, 4}}},
  {"max dim", function(a) return (F.max(a, 2)) end, {{3, 6}}},
  {"reshape", function(a) return F.reshape(a, {4, 3}) end, {{3, 4}}},
  {"narrow", function(a) return F.narrow(a, 2, 2, 3) end, {{3, 6}}},
  {"narrow of narrow", function(a) return F.narrow(F.narrow(a, 1, 2, 2), 2, 1, 2) end, {{4, 3}}},
  {"transpose", function(a) return F.transpose(a, 1, 2) end, {{3, 4}}},
  {"cat dim 2", function(a, b) return F.cat({a, b}, 2) end, {{2, 3, 2}, {2, 1, 2}}},
  {"cat many", function(a, b, c) return F.cat({a, b, c, a, b, c}, 1) end, {{1, 3}, {2, 3}, {1, 3}}},
  {"pad", function(a) return F.pad(a, {1, 2, 0, 1}) end, {{2, 2, 3, 3}}},
  {"subsample", function(a) return F.subsample(a, 2) end, {{2, 2, 5, 5}}},
  {"subsample offset", function(a) return F.subsample(a, 2, 1, 1) end, {{1, 2, 6, 6}}},
  {"contiguous of transpose", function(a) return F.transpose(a, 1, 2):contiguous() end, {{3, 4}}},
  {"weighted_sum (DARTS mixed op)", function(a, b, c, w) return F.weighted_sum({a, b, c}, w) end,
    {{2, 3, 2, 2}, {2, 3, 2, 2}, {2, 3, 2, 2}, {3}}},
  {"weighted_sum shared input", function(a, w) return F.weighted_sum({a, a}, w) end, {{2, 3}, {2}}},
  {"attn_sum (AGNAS edge)", function(a, b, att) return F.attn_sum({a, b}, att) end,
    {{2, 3, 2, 2}, {2, 3, 2, 2}, {2, 6}}},
  -- planes of 49 (the dot's 32- and 16-lane steps and a scalar tail), an
  -- input twice (the first slot writes its gradient, the second adds) and
  -- an input also used elsewhere
  {"attn_sum 7x7 planes", function(a, b, att) return F.attn_sum({a, b}, att) end,
    {{2, 3, 7, 7}, {2, 3, 7, 7}, {2, 6}}},
  {"attn_sum shared input", function(a, att) return F.attn_sum({a, a}, att) end,
    {{2, 3, 2, 2}, {2, 6}}},
  {"attn_sum input used twice", function(a, b, att) return F.add(F.attn_sum({a, b}, att), F.scale(a, 0.5)) end,
    {{2, 3, 2, 2}, {2, 3, 2, 2}, {2, 6}}},
  {"matmul", F.matmul, {{3, 4}, {4, 5}}},
  {"matmul batched", F.matmul, {{2, 3, 4}, {2, 4, 5}}},
  {"matmul transposed input", function(a, b) return F.matmul(F.transpose(a, 1, 2), b) end, {{4, 3}, {4, 2}}},
  {"linear", F.linear, {{5, 4}, {3, 4}, {3}}},
  {"linear no bias", function(x, w) return F.linear(x, w) end, {{5, 4}, {3, 4}}},
  {"softmax", function(a) return F.softmax(a, 2) end, {{3, 5}}},
  {"softmax dim 1", function(a) return F.softmax(a, 1) end, {{3, 5}}},
  {"log_softmax", function(a) return F.log_softmax(a, -1) end, {{3, 5}}},
  {"cross_entropy", function(a) return F.cross_entropy(a, nasrt.tensor({0, 4, 2})) end, {{3, 5}}},
  {"cross_entropy smoothing", function(a)
    return F.cross_entropy(a, nasrt.tensor({1, 0, 3}), {label_smoothing = 0.1}) end, {{3, 4}}},
  {"batch_norm train", function(x, w, b)
    return F.batch_norm(x, nil, nil, w, b, {training = true}) end, {{4, 3, 2, 2}, {3}, {3}}},
  {"batch_norm train no affine", function(x)
    return F.batch_norm(x, nil, nil, nil, nil, {training = true}) end, {{5, 2, 3, 3}}},
  {"batch_norm 2d input", function(x, w, b)
    return F.batch_norm(x, nil, nil, w, b, {training = true}) end, {{6, 3}, {3}, {3}}},
  {"bn_weighted_sum", function(a, b, c, w)
    return F.bn_weighted_sum({a, b, c}, w, {true, false, true}) end,
    {{3, 2, 2, 2}, {3, 2, 2, 2}, {3, 2, 2, 2}, {3}}},
  {"bn_weighted_sum, an input twice", function(a, b, w)
    return F.bn_weighted_sum({a, b, a}, w, {true, true, false}) end,
    {{4, 2, 3}, {4, 2, 3}, {3}}},
  {"batch_norm eval", function(x, w, b)
    return F.batch_norm(x, RM, RV, w, b, {training = false}) end,
    {{2, 3, 2, 2}, {3}, {3}}},
}

-- conv2d over strides, paddings, dilations and groups
for _, c in ipairs({
  {x = {2, 3, 6, 6}, w = {4, 3, 3, 3}, o = {stride = 1, padding = 1}},
  {x = {2, 3, 7, 7}, w = {4, 3, 3, 3}, o = {stride = 2, padding = 1}},
  {x = {1, 2, 7, 7}, w = {3, 2, 3, 3}, o = {stride = 1, padding = 2, dilation = 2}},
  {x = {2, 4, 5, 5}, w = {4, 2, 3, 3}, o = {padding = 1, groups = 2}},
  {x = {2, 4, 6, 6}, w = {4, 1, 3, 3}, o = {padding = 1, groups = 4}},         -- depthwise 3x3
  {x = {1, 3, 9, 9}, w = {3, 1, 5, 5}, o = {stride = 2, padding = 2, groups = 3}}, -- depthwise 5x5 s2
  {x = {1, 3, 9, 9}, w = {3, 1, 3, 3}, o = {padding = 2, dilation = 2, groups = 3}}, -- dil depthwise
  {x = {2, 4, 5, 5}, w = {6, 4, 1, 1}, o = {}},                                 -- 1x1
  {x = {2, 4, 6, 6}, w = {6, 4, 1, 1}, o = {stride = 2}},                       -- 1x1 s2
  {x = {1, 2, 5, 7}, w = {2, 2, 3, 1}, o = {padding = {1, 0}}},                 -- non-square
  -- depthwise on small planes, 16 channels per vector (C a multiple of 16)
  {x = {2, 16, 4, 4}, w = {16, 1, 3, 3}, o = {padding = 1, groups = 16}},
  {x = {1, 16, 5, 5}, w = {16, 1, 5, 5}, o = {stride = 2, padding = 2, groups = 16}},
}) do
  local label = ("conv2d x%s w%s %s"):format(table.concat(c.x, "x"), table.concat(c.w, "x"),
    (function() local t = {} for k, v in pairs(c.o) do
      t[#t + 1] = k .. "=" .. (type(v) == "table" and table.concat(v, ",") or v) end
      table.sort(t) return table.concat(t, " ") end)())
  cases[#cases + 1] = {label, function(x, w, b) return F.conv2d(x, w, b, c.o) end,
    {c.x, c.w, {c.w[1]}}}
end

-- an input feeding two convs: the first backward writes its gradient, the
-- second adds (each engine: depthwise, direct, 1x1 GEMM, strided 1x1)
for _, c in ipairs({
  {"depthwise", {2, 4, 6, 6}, {4, 1, 3, 3}, {padding = 1, groups = 4}},
  {"depthwise 16 channels", {1, 16, 4, 4}, {16, 1, 3, 3}, {padding = 1, groups = 16}},
  {"depthwise 16 channels s2", {1, 16, 5, 5}, {16, 1, 3, 3}, {stride = 2, padding = 1, groups = 16}},
  {"direct 3x3", {2, 3, 6, 6}, {4, 3, 3, 3}, {padding = 1}},
  {"1x1", {2, 4, 5, 5}, {3, 4, 1, 1}, {}},
  {"1x1 s2", {2, 4, 6, 6}, {3, 4, 1, 1}, {stride = 2}},
}) do
  cases[#cases + 1] = {"conv2d twice on one input, " .. c[1], function(x, w)
    return F.add(F.conv2d(x, w, nil, c[4]), F.scale(F.conv2d(x, w, nil, c[4]), -0.5)) end, {c[2], c[3]}}
end

-- relu -> depthwise -> 1x1 in one op (backward recomputes the depthwise output)
for _, c in ipairs({
  {"sep_conv2d relu 3x3", {"kink:2,4,6,6", {4, 1, 3, 3}, {5, 4, 1, 1}}, {padding = 1, relu = true}},
  {"sep_conv2d 5x5 s2", {{1, 3, 9, 9}, {3, 1, 5, 5}, {3, 3, 1, 1}}, {stride = 2, padding = 2}},
  {"sep_conv2d relu dil 3x3 s2", {"kink:2,3,9,9", {3, 1, 3, 3}, {4, 3, 1, 1}},
    {stride = 2, padding = 2, dilation = 2, relu = true}},
  {"sep_conv2d relu 3x3, 16 channels", {"kink:1,16,4,4", {16, 1, 3, 3}, {3, 16, 1, 1}},
    {padding = 1, relu = true}},
  {"sep_conv2d relu dil 3x3 s2, 16 channels", {"kink:1,16,5,5", {16, 1, 3, 3}, {3, 16, 1, 1}},
    {stride = 2, padding = 2, dilation = 2, relu = true}},
}) do
  cases[#cases + 1] = {c[1], function(x, wd, wp) return F.sep_conv2d(x, wd, wp, c[3]) end, c[2]}
  -- x used twice: the second backward adds its dx (through the ReLU mask)
  -- to the first's
  cases[#cases + 1] = {c[1] .. ", twice on one input", function(x, wd, wp)
    return F.add(F.sep_conv2d(x, wd, wp, c[3]), F.scale(F.sep_conv2d(x, wd, wp, c[3]), -0.5)) end, c[2]}
end

for _, c in ipairs({
  {"max_pool2d 3x3 s1 p1", function(x) return F.max_pool2d(x, {kernel = 3, stride = 1, padding = 1}) end},
  {"max_pool2d 2x2 s2", function(x) return F.max_pool2d(x, {kernel = 2, stride = 2}) end},
  {"max_pool2d 3x3 s2 p1", function(x) return F.max_pool2d(x, {kernel = 3, stride = 2, padding = 1}) end},
  {"avg_pool2d 3x3 s1 p1 count_include_pad", function(x)
    return F.avg_pool2d(x, {kernel = 3, stride = 1, padding = 1}) end},
  {"avg_pool2d 3x3 s2 p1 exclude pad", function(x)
    return F.avg_pool2d(x, {kernel = 3, stride = 2, padding = 1, count_include_pad = false}) end},
  {"avg_pool2d ceil_mode", function(x)
    return F.avg_pool2d(x, {kernel = 2, stride = 2, ceil_mode = true}) end},
  {"adaptive_avg_pool2d 1", function(x) return F.adaptive_avg_pool2d(x, 1) end},
  {"adaptive_avg_pool2d 2x3", function(x) return F.adaptive_avg_pool2d(x, {2, 3}) end},
}) do
  cases[#cases + 1] = {c[1], c[2], {"distinct:2,3,7,7"}}
end

-- distinct values (a permutation of a spaced grid) keep max_pool away from
-- ties, where the derivative is undefined
local function distinct(shape)
  local n = 1
  for _, d in ipairs(shape) do n = n * d end
  local vals = {}
  for i = 1, n do vals[i] = (i - n / 2) * 0.05 end
  for i = n, 2, -1 do
    local j = math.floor(nasrt.rand({}):item() * i) + 1
    vals[i], vals[j] = vals[j], vals[i]
  end
  return nasrt.tensor(vals):reshape(shape):detach():requires_grad(true)
end

local function make(spec)
  if type(spec) == "table" then return H.leaf(spec) end
  local kind, dims = spec:match("(%a+):(.*)")
  local shape = {}
  for d in dims:gmatch("%d+") do shape[#shape + 1] = tonumber(d) end
  if kind == "pos" then return positive(shape) end
  if kind == "kink" then return away_from_zero(shape) end
  if kind == "distinct" then return distinct(shape) end
  error("bad input spec " .. spec)
end

describe("gradients of nasrt.F ops (central differences)", function()
  for _, c in ipairs(cases) do
    it(c[1], function()
      nasrt.manual_seed(7)
      local inputs = {}
      for i, s in ipairs(c[3]) do inputs[i] = make(s) end
      local ok, msg = H.gradcheck(c[2], inputs)
      assert(ok, msg)
    end)
  end
end)

-- The same ops on inputs produced by another op: ops whose backward needs
-- only shapes or their own output drop such inputs' data from the tape
-- (nr_forget_input), a path leaves never take.
describe("gradients of nasrt.F ops on intermediate inputs", function()
  for _, c in ipairs(cases) do
    it(c[1], function()
      nasrt.manual_seed(7)
      local inputs = {}
      for i, s in ipairs(c[3]) do inputs[i] = make(s) end
      local function f(...)
        local mid = {}
        for i, a in ipairs({ ... }) do mid[i] = F.scale(a, 1.25, 0.0) end
        return c[2](table.unpack(mid))
      end
      local ok, msg = H.gradcheck(f, inputs)
      assert(ok, msg)
    end)
  end
end)
