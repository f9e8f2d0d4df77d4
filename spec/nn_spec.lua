-- Specs of nasrt.nn (modules, state dicts, cost model, BN recalibration,
-- losses) and nasrt.optim (SGD, Adam, AdamW, schedules, clipping).
-- Reference numbers marked "torch" were produced with PyTorch 1.13 on the
-- same inputs (/usr/bin/python3) and pasted here as constants.
local nasrt = require "nasrt"
local H = require "helpers"
local nn, optim, F = nasrt.nn, nasrt.optim, nasrt.F

-- Specs that need ops another piece provides run only once it is built.
local function it_if(cond, name, fn)
  if cond then it(name, fn) else pending(name .. " (needs F ops not built yet)") end
end
local has_conv = F.conv2d ~= nil
local has_pool = F.max_pool2d ~= nil and F.avg_pool2d ~= nil and F.adaptive_avg_pool2d ~= nil

local function set_values(t, values)
  nasrt.no_grad(function() t:copy_(nasrt.tensor(values):reshape(t:shape())) end)
  return t
end

local function names_of(list)
  local out = {}
  for i, nt in ipairs(list) do out[i] = nt[1] end
  return out
end

describe("nasrt.nn modules", function()
  before_each(function() nasrt.manual_seed(7) end)

  it_if(has_conv, "Conv2d matches a hand computation", function()
    local conv = nn.Conv2d(1, 1, 2)
    set_values(conv.weight, {1, 2, -1, 0.5})
    set_values(conv.bias, {0.25})
    local x = nasrt.tensor{{{{0, 1, 2}, {3, 4, 5}, {6, 7, 8}}}}
    -- y[0,0] = 0*1 + 1*2 + 3*-1 + 4*0.5 + 0.25 = 1.25 (torch agrees)
    assert.allclose(conv(x), {{{{1.25, 3.75}, {8.75, 11.25}}}}, 1e-6)
  end)

  it_if(has_conv, "Conv2d output shape follows stride, padding, dilation and groups", function()
    local conv = nn.Conv2d(4, 8, 3, {stride = 2, padding = 2, dilation = 2, groups = 2})
    local y = conv(nasrt.randn{2, 4, 9, 9})
    assert.are.same({2, 8, 5, 5}, y:shape())
    assert.are.same({2, 8, 5, 5}, conv:output_shape{2, 4, 9, 9})
  end)

  it("Conv2d uses PyTorch's default init bounds", function()
    local conv = nn.Conv2d(8, 16, 3)          -- fan_in = 72
    local bound = 1 / math.sqrt(72)
    local w, b = conv.weight, conv.bias
    assert.is_true(w:abs():max():item() <= bound + 1e-7)
    assert.is_true(b:abs():max():item() <= bound + 1e-7)
    assert.is_true(w:abs():max():item() > 0.8 * bound)   -- spread over the whole range
    assert.is_true(w.is_leaf)
    assert.is_nil(nn.Conv2d(2, 2, 1, {bias = false}).bias)
    local lin = nn.Linear(50, 3)
    assert.is_true(lin.weight:abs():max():item() <= 1 / math.sqrt(50) + 1e-7)
  end)

  it("Linear matches a hand computation", function()
    local lin = nn.Linear(3, 2)
    set_values(lin.weight, {1, 0, -1, 2, 0.5, 0})
    set_values(lin.bias, {0.5, -1})
    local y = lin(nasrt.tensor{{1, 2, 3}, {0, -2, 4}})
    assert.allclose(y, {{1 - 3 + 0.5, 2 + 1 - 1}, {-4 + 0.5, -1 - 1}}, 1e-6)
    assert.allclose(nn.Linear(3, 2, {bias = false}):output_shape({5, 7, 3}) and
      nasrt.tensor(nn.Linear(3, 2):output_shape({5, 7, 3})), {5, 7, 2})
  end)

  it("BatchNorm2d normalises with batch stats in training, running stats in eval", function()
    local bn = nn.BatchNorm2d(2)
    set_values(bn.weight, {2, 0.5})
    set_values(bn.bias, {0.1, -0.2})
    local x = nasrt.tensor{{{{1, 2}}, {{0, -1}}}, {{{3, 4}}, {{5, 2}}}}
    -- torch
    assert.allclose(bn(x):reshape(-1), {-2.58327079, -0.79442358, -0.527326524, -0.745544195,
                            0.994423628, 2.78327084, 0.56376189, -0.0908911526}, 1e-5)
    -- channel 1: mean 2.5, unbiased var 5/3 -> 0.9*0 + 0.1*2.5, 0.9*1 + 0.1*5/3
    assert.allclose(bn.running_mean, {0.25, 0.15}, 1e-6)
    assert.allclose(bn.running_var, {1.0666666, 1.6}, 1e-6)
    assert.are.equal(1, bn.num_batches_tracked:item())
    bn:eval()
    assert.allclose(bn(x):reshape(-1), {1.55236208, 3.48884487, -0.259292543, -0.654576063,
                                        5.42532778, 7.36181068, 1.71712494, 0.531274438}, 1e-5)
    assert.are.equal(1, bn.num_batches_tracked:item())   -- eval does not count
    bn:reset_running_stats()
    assert.allclose(bn.running_mean, {0, 0})
    assert.allclose(bn.running_var, {1, 1})
  end)

  it("BatchNorm without affine or running stats", function()
    local bn = nn.BatchNorm1d(3, {affine = false, track_running_stats = false})
    assert.are.same({}, bn:parameters())
    assert.are.same({}, bn:buffers())
    bn:eval()   -- no running stats: still uses the batch
    local y = bn(nasrt.randn{16, 3})
    assert.is_true(math.abs(y:mean():item()) < 1e-5)
  end)

  it_if(has_pool, "pools match hand computations", function()
    local x16 = nasrt.tensor{{{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10, 11}, {12, 13, 14, 15}}}}
    assert.allclose(nn.MaxPool2d(2)(x16), {{{{5, 7}, {13, 15}}}})
    local x9 = nasrt.tensor{{{{0, 1, 2}, {3, 4, 5}, {6, 7, 8}}}}
    assert.allclose(nn.AvgPool2d(3, {stride = 1, padding = 1, count_include_pad = false})(x9):reshape(-1),
      {2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6}, 1e-6)
    assert.allclose(nn.AvgPool2d(3, {stride = 1, padding = 1})(x9):reshape(-1),   -- torch
      {0.888888896, 1.66666663, 1.33333337, 2.33333325, 4, 3, 2.22222233, 3.66666675, 2.66666675}, 1e-6)
    assert.allclose(nn.AdaptiveAvgPool2d(1)(x9), {{{{4}}}})
    local x25 = nasrt.tensor(nasrt.no_grad(function()
      local t = {}
      for i = 1, 5 do t[i] = {} for j = 1, 5 do t[i][j] = (i - 1) * 5 + j - 1 end end
      return {{t}}
    end))
    assert.allclose(nn.MaxPool2d(3, {stride = 2, padding = 1})(x25):reshape(-1),
      {6, 8, 9, 16, 18, 19, 21, 23, 24})
    assert.allclose(nn.MaxPool2d(2, {ceil_mode = true})(x25):reshape(-1),
      {6, 8, 9, 16, 18, 19, 21, 23, 24})
  end)

  it("pool output shapes follow torch's rule", function()
    assert.are.same({1, 3, 3, 3}, nn.MaxPool2d(2, {ceil_mode = true}):output_shape{1, 3, 5, 5})
    assert.are.same({1, 3, 2, 2}, nn.MaxPool2d(2):output_shape{1, 3, 5, 5})
    assert.are.same({1, 3, 5, 5}, nn.AvgPool2d(3, {stride = 1, padding = 1}):output_shape{1, 3, 5, 5})
    assert.are.same({2, 3, 1, 1}, nn.AdaptiveAvgPool2d(1):output_shape{2, 3, 7, 7})
    assert.are.same({2, 3, 2, 4}, nn.AdaptiveAvgPool2d({2, 4}):output_shape{2, 3, 7, 7})
  end)

  it("Zero gives zeros of the output shape and keeps the graph valid", function()
    local x = H.leaf{2, 3, 5, 5}
    local y = nn.Zero(2)(x)
    assert.are.same({2, 3, 3, 3}, y:shape())
    assert.are.same({2, 3, 3, 3}, nn.Zero(2):output_shape{2, 3, 5, 5})
    assert.are.equal(0, y:abs():max():item())
    F.sum(F.add(y, 1)):backward()
    assert.is_not_nil(x.grad)
    assert.are.equal(0, x.grad:abs():max():item())
    local y1 = nn.Zero()(x)
    assert.are.same({2, 3, 5, 5}, y1:shape())
  end)

  it("Dropout zeroes about p of the elements, scales by 1/(1-p), and is off in eval", function()
    local x = nasrt.ones{200, 500}:requires_grad(true)
    local d = nn.Dropout(0.3)
    local y = d(x)
    local zeros = 0
    local flat = y:reshape(-1)
    local kept_value
    for i = 1, flat:numel(), 37 do
      local v = flat:get(i)
      if v == 0 then zeros = zeros + 1 else kept_value = v end
    end
    local n = math.ceil(flat:numel() / 37)
    assert.is_true(math.abs(zeros / n - 0.3) < 0.02, "zero fraction " .. zeros / n)
    assert.is_true(math.abs(kept_value - 1 / 0.7) < 1e-6)
    assert.is_true(math.abs(y:mean():item() - 1) < 0.01)
    -- backward reuses the mask: d(sum y)/dx = mask / (1-p) = y for x = 1
    y:sum():backward()
    assert.allclose(x.grad, y, 1e-6)
    d:eval()
    assert.is_true(d(x) == x)
    assert.is_true(F.dropout(x, 0.5, false) == x)
    -- the same seed gives the same mask
    nasrt.manual_seed(3)
    local a = F.dropout(nasrt.ones{64}, 0.5)
    nasrt.manual_seed(3)
    assert.allclose(F.dropout(nasrt.ones{64}, 0.5), a)
    assert.has_error(function() nn.Dropout(1.5) end)
    assert.has_error(function() F.dropout(x, -0.1) end, "dropout: probability has to be between 0 and 1, but got -0.1")
    assert.are.equal(0, F.dropout(nasrt.ones{10}, 1):abs():sum():item())
  end)

  it("Dropout gradient passes a gradcheck", function()
    local x = H.leaf{4, 6}
    local ok, msg = H.gradcheck(function(a)
      nasrt.manual_seed(11)   -- same mask at every evaluation
      return F.dropout(a, 0.4)
    end, {x})
    assert.is_true(ok, msg)
  end)

  it("Flatten, Identity, ReLU, Sigmoid, Tanh", function()
    local x = nasrt.tensor{{{-1, 2}, {3, -4}}}
    assert.are.same({1, 4}, nn.Flatten()(x):shape())
    assert.are.same({1, 4}, nn.Flatten():output_shape{1, 2, 2})
    assert.is_true(nn.Identity()(x) == x)
    assert.allclose(nn.ReLU()(x), {{{0, 2}, {3, 0}}})
    assert.allclose(nn.Sigmoid()(nasrt.tensor{0}), {0.5})
    assert.allclose(nn.Tanh()(nasrt.tensor{0}), {0})
  end)
end)

describe("nasrt.nn module system", function()
  before_each(function() nasrt.manual_seed(1) end)

  local Net = nn.class("Net")
  function Net:__init()
    self.features = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
    self.head = nn.Linear(8, 3, {bias = false})
    self:register_parameter("scale", nasrt.ones{1})
  end
  function Net:forward(x)
    return F.mul(self.head(self.features(x)), self.scale)
  end

  it("names parameters and buffers with dotted paths in registration order", function()
    local net = Net()
    assert.are.same({"scale", "features.1.weight", "features.1.bias", "features.2.weight",
                     "features.2.bias", "head.weight"}, names_of(net:named_parameters()))
    assert.are.same({"features.2.running_mean", "features.2.running_var",
                     "features.2.num_batches_tracked"}, names_of(net:named_buffers()))
    assert.are.equal(6, #net:parameters())
    assert.is_true(net:parameters()[2] == net.features[1].weight)
    assert.are.same({"scale"}, names_of(net:named_parameters(false)))
    assert.are.equal(2, #net:children())
    assert.are.equal(6, #net:modules())   -- net, features, 3 layers, head
  end)

  it("counts parameters", function()
    assert.are.equal(16 * 3 * 9 + 16, nn.Conv2d(3, 16, 3):num_parameters())
    assert.are.equal(55, nn.Linear(10, 5):num_parameters())
    assert.are.equal(32, nn.BatchNorm2d(16):num_parameters())
    assert.are.equal(1 + 4 * 8 + 8 + 8 + 8 + 8 * 3, Net():num_parameters())
    -- a shared module counts once
    local lin = nn.Linear(2, 2)
    assert.are.equal(6, nn.Sequential(lin, lin):num_parameters())
  end)

  it("switches train/eval recursively", function()
    local net = Net()
    assert.is_true(net.training and net.features[2].training)
    assert.are.equal(net, net:eval())
    for _, m in ipairs(net:modules()) do assert.is_false(m.training) end
    net:train()
    for _, m in ipairs(net:modules()) do assert.is_true(m.training) end
    net.features:eval()
    assert.is_true(net.training)
    assert.is_false(net.features[3].training)
  end)

  it("round-trips a state dict", function()
    local a, b = Net(), Net()
    a(nasrt.randn{10, 4})   -- move BN running stats away from their init
    local x = nasrt.randn{5, 4}
    a:eval(); b:eval()
    assert.is_false(H.maxdiff(a(x), b(x)) < 1e-3)
    local sd, keys = a:state_dict()
    assert.are.equal(9, #keys)
    assert.are.equal("scale", keys[1])
    local copy = {}
    for k, v in pairs(sd) do copy[k] = v:clone() end
    local r = b:load_state_dict(copy)
    assert.are.same({}, r.missing_keys)
    assert.allclose(b(x), a(x), 1e-6)
    assert.allclose(b.features[2].running_mean, a.features[2].running_mean)
    -- the state dict shares storage with the module
    nasrt.no_grad(function() sd["head.weight"]:fill_(0) end)
    assert.are.equal(0, a.head.weight:abs():sum():item())
  end)

  it("checks state dict keys and shapes", function()
    local net = Net()
    local sd = net:state_dict()
    sd["extra.weight"] = nasrt.zeros{1}
    assert.has_error(function() net:load_state_dict(sd) end,
      "load_state_dict: error(s) in loading state_dict for Net:\n\tunexpected key(s) in state_dict: extra.weight")
    sd["extra.weight"] = nil
    sd["head.weight"] = nil
    assert.has_error(function() net:load_state_dict(sd) end,
      "load_state_dict: error(s) in loading state_dict for Net:\n\tmissing key(s) in state_dict: head.weight")
    local r = net:load_state_dict(sd, false)
    assert.are.same({"head.weight"}, r.missing_keys)
    sd["head.weight"] = nasrt.zeros{8, 3}
    local ok, err = pcall(net.load_state_dict, net, sd, false)
    assert.is_false(ok)
    assert.truthy(err:find("size mismatch for head.weight: copying a tensor of shape [8,3] from the " ..
      "state dict, the shape in the current model is [3,8]", 1, true))
  end)

  it("zero_grad sets gradients to nil", function()
    local net = Net()
    F.sum(net(nasrt.randn{4, 4})):backward()
    assert.is_not_nil(net.head.weight.grad)
    net:zero_grad()
    for _, p in ipairs(net:parameters()) do assert.is_nil(p.grad) end
  end)

  it("applies a function to every module, children first", function()
    local seen = {}
    Net():apply(function(m) seen[#seen + 1] = m.__name end)
    assert.are.same({"Linear", "BatchNorm1d", "ReLU", "Sequential", "Linear", "Net"}, seen)
  end)

  it("prints the module tree like PyTorch", function()
    local s = tostring(Net())
    assert.are.equal([[
Net(
  (features): Sequential(
    (1): Linear(in_features=4, out_features=8, bias=True)
    (2): BatchNorm1d(8, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (3): ReLU()
  )
  (head): Linear(in_features=8, out_features=3, bias=False)
)]], s)
    assert.are.equal("Conv2d(3, 16, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False)",
      tostring(nn.Conv2d(3, 16, 3, {stride = 2, padding = 1, bias = false})))
    assert.are.equal("MaxPool2d(kernel_size=2, stride=2, padding=0)", tostring(nn.MaxPool2d(2)))
  end)

  it("Sequential, ModuleList and ModuleDict index and iterate their children", function()
    local seq = nn.Sequential{nn.ReLU(), nn.Identity(), nn.Tanh()}
    assert.are.equal(3, #seq)
    assert.are.equal("Tanh", seq[-1].__name)
    assert.is_nil(seq[4])
    local n = 0
    for i, m in ipairs(seq) do n = n + 1 assert.are.equal(seq[i], m) end
    assert.are.equal(3, n)
    seq:append(nn.Sigmoid())
    assert.are.equal(4, #seq)
    local ml = nn.ModuleList(nn.Linear(2, 2), nn.Linear(2, 3))
    ml:append(nn.Linear(3, 1))
    assert.are.same({"1.weight", "1.bias", "2.weight", "2.bias", "3.weight", "3.bias"},
      names_of(ml:named_parameters()))
    local md = nn.ModuleDict{b = nn.Linear(1, 1), a = nn.ReLU()}
    md:add("c", nn.Identity())
    assert.are.same({"a", "b", "c"}, md:keys())
    assert.are.equal("Linear", md.b.__name)
    assert.has_error(function() nn.Sequential(1) end)
  end)

  it_if(has_conv, "Sequential runs BatchNorm2d and the ReLU / ReLU6 after it as one op: the same numbers and gradients", function()
    local blocks = require "nasrt.blocks"
    local function run(fuse, act, train)
      nasrt.manual_seed(3)
      local bn = nn.BatchNorm2d(4)
      local seq = nn.Sequential(nn.Conv2d(3, 4, 3, { padding = 1 }), bn, act(), nn.Tanh())
      if not train then
        seq:eval()
        set_values(bn.running_mean, { 0.1, -0.2, 0.3, 0 })
        set_values(bn.running_var, { 0.5, 2, 1, 0.25 })
      end
      local x = nasrt.randn { 2, 3, 5, 5 }
      nasrt.no_grad(function() bn.weight:copy_(nasrt.tensor { 1.5, -0.5, 2, 1 }) end)
      local relus, orig, orig6 = 0, F.relu, F.relu6
      F.relu = function(...) relus = relus + 1; return orig(...) end
      F.relu6 = function(...) relus = relus + 1; return orig6(...) end
      nn.fuse_bn_activation = fuse
      local ok, y = pcall(seq, x)
      F.relu, F.relu6, nn.fuse_bn_activation = orig, orig6, true
      assert(ok, y)
      F.sum(F.mul(y, nasrt.randn(y:shape()))):backward()
      return y, { bn.weight.grad, bn.bias.grad, seq[1].weight.grad }, bn.running_mean, relus
    end
    for _, act in ipairs { nn.ReLU, blocks.ReLU6 } do
      for _, train in ipairs { true, false } do
        local y1, g1, rm1, n1 = run(false, act, train)
        local y2, g2, rm2, n2 = run(true, act, train)
        assert.are.equal(1, n1)
        assert.are.equal(0, n2) -- the batch norm applied it
        assert.allclose(y1, y2, 1e-6)
        for i = 1, 3 do assert.allclose(g1[i], g2[i], 1e-5) end
        assert.allclose(rm1, rm2, 1e-7)
        -- the activation did apply: tanh of what it passes is >= 0
        local lo = math.huge
        local function walk(t) for _, v in ipairs(t) do if type(v) == "table" then walk(v) else lo = math.min(lo, v) end end end
        walk(y2:totable())
        assert.is_true(lo >= 0, ("min %g"):format(lo))
      end
    end
  end)

  it("rejects bad constructor options clearly", function()
    assert.has_error(function() nn.Conv2d(3, 16, 3, {strid = 2}) end,
      "Conv2d: unknown option 'strid' (expected one of bias, dilation, groups, padding, stride)")
    assert.has_error(function() nn.Conv2d(3, 16, 3, {groups = 2}) end,
      "Conv2d: groups=2 must divide in_channels=3 and out_channels=16")
    assert.has_error(function() nn.Linear(0, 3) end)
    assert.has_error(function() nn.Linear(4, 3):output_shape{2, 5} end)
    assert.has_error(function() nn.Conv2d(3, 16, 3):output_shape{1, 4, 8, 8} end,
      "Conv2d: input [1,4,8,8] has 4 channels, weight expects 3 (groups=1)")
  end)
end)

describe("nasrt.nn cost model", function()
  it("counts Conv2d and Linear MACs and FLOPs by hand", function()
    local conv = nn.Conv2d(3, 16, 3, {padding = 1})
    assert.are.equal(16 * 32 * 32 * 3 * 9, conv:macs{1, 3, 32, 32})
    assert.are.equal(2 * 16 * 32 * 32 * 3 * 9, conv:flops{1, 3, 32, 32})
    assert.are.equal(16 * 32 * 32 * 3 * 9 + 16 * 32 * 32, conv:macs({1, 3, 32, 32}, {bias = true}))
    local g = nn.Conv2d(16, 32, 3, {groups = 4, stride = 2, padding = 1})
    assert.are.equal(2 * 32 * 4 * 4 * 4 * 9, g:macs{2, 16, 8, 8})
    assert.are.equal(1000, nn.Linear(100, 10):macs{1, 100})
    assert.are.equal(2 * 1000 + 2 * 10, nn.Linear(100, 10):macs({2, 100}, {bias = true}))
    assert.are.equal(0, nn.BatchNorm2d(3):macs{1, 3, 8, 8})
  end)

  it("chains shapes through a Sequential without running it", function()
    local net = nn.Sequential(
      nn.Conv2d(1, 8, 3, {padding = 1}), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(8, 16, 3, {padding = 1, bias = false}), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
      nn.Dropout(0.1), nn.Linear(16, 10))
    assert.are.same({1, 10}, net:output_shape{1, 1, 28, 28})
    local macs = 8 * 28 * 28 * 9 + 16 * 14 * 14 * 8 * 9 + 16 * 10
    assert.are.equal(macs, net:macs{1, 1, 28, 28})
    assert.are.equal(2 * macs, net:flops{1, 1, 28, 28})
    assert.are.equal(macs + 8 * 28 * 28 + 10, net:macs({1, 1, 28, 28}, {bias = true}))
  end)

  it("traces modules with their own forward, restoring their state", function()
    local Res = nn.class("Res")
    function Res:__init() self.a = nn.Linear(6, 6) self.b = nn.Linear(6, 6) self.bn = nn.BatchNorm1d(6) end
    function Res:forward(x) return F.add(self.b(F.relu(self.bn(self.a(x)))), self.a(x)) end
    local r = Res()
    local rm = r.bn.running_mean:clone()
    assert.are.equal(3 * 36, r:macs{1, 6})   -- `a` runs twice
    assert.are.same({1, 6}, r:output_shape{1, 6})
    assert.is_true(r.training and r.bn.training)
    assert.allclose(r.bn.running_mean, rm)
    assert.is_nil(rawget(r.a, "forward"))
    local net = nn.Sequential(nn.Linear(3, 6), r, nn.Linear(6, 2))
    assert.are.equal(18 + 108 + 12, net:macs{1, 3})
  end)
end)

describe("nasrt.nn losses", function()
  local s = nasrt.tensor{{1.0, 2.0, 0.5}, {-1.0, 0.0, 3.0}}
  local t = nasrt.tensor{{0.5, 1.5, -0.5}, {2.0, 0.1, 0.3}}

  it("kd_loss matches torch's soft cross-entropy", function()
    assert.is_true(math.abs(nn.kd_loss(s, t):item() - 2.12463236) < 1e-5)      -- torch
    assert.is_true(math.abs(nn.kd_loss(s, t, 2):item() - 1.3768723) < 1e-5)   -- torch
    assert.is_true(math.abs(nn.KDLoss{T = 2}(s, t):item() - 1.3768723) < 1e-5)
    -- equals cross-entropy when the teacher is (almost) one-hot
    local hard = nasrt.tensor{{0, 50, 0}, {0, 0, 50}}
    local ce = F.cross_entropy(s, nasrt.tensor{1, 2})
    assert.is_true(math.abs(nn.kd_loss(s, hard):item() - ce:item()) < 1e-5)
  end)

  it("kd_loss passes a gradcheck and does not reach the teacher", function()
    local st = H.leaf{3, 4}
    local te = H.leaf{3, 4}
    local ok, msg = H.gradcheck(function(a) return nn.kd_loss(a, te, 1.5) end, {st})
    assert.is_true(ok, msg)
    te.grad = nil
    nn.kd_loss(st, te):backward()
    assert.is_nil(te.grad)
  end)

  it("CrossEntropyLoss equals F.cross_entropy", function()
    local y = nasrt.tensor{2, 0}
    assert.are.equal(F.cross_entropy(s, y):item(), nn.CrossEntropyLoss()(s, y):item())
    assert.are.equal(F.cross_entropy(s, y, {label_smoothing = 0.1}):item(),
      nn.CrossEntropyLoss{label_smoothing = 0.1}(s, y):item())
  end)
end)

describe("nasrt.nn.recalibrate_bn", function()
  it("re-estimates running statistics as a cumulative average", function()
    local net = nn.Sequential(nn.BatchNorm1d(2, {momentum = 0.5}), nn.Dropout(0.0))
    local data = {
      nasrt.tensor{{1, 0}, {3, 1}, {2, 5}, {6, 2}},
      nasrt.tensor{{0, 0}, {4, 4}, {2, 2}, {2, -2}},
      nasrt.tensor{{5, 1}, {5, 1}, {8, 1}, {2, 1}},
    }
    net(nasrt.randn{8, 2} * 10)   -- garbage statistics first
    local n = nn.recalibrate_bn(net, data)
    assert.are.equal(3, n)
    local bn = net[1]
    -- mean of all 12 rows (equal batches): col1 40/12, col2 16/12
    assert.allclose(bn.running_mean, {40 / 12, 16 / 12}, 1e-6)
    -- mean of the per-batch unbiased variances
    local function uvar(v)
      local m = 0 for _, a in ipairs(v) do m = m + a end m = m / #v
      local s = 0 for _, a in ipairs(v) do s = s + (a - m) ^ 2 end
      return s / (#v - 1)
    end
    local v1 = (uvar{1, 3, 2, 6} + uvar{0, 4, 2, 2} + uvar{5, 5, 8, 2}) / 3
    local v2 = (uvar{0, 1, 5, 2} + uvar{0, 4, 2, -2} + uvar{1, 1, 1, 1}) / 3
    assert.allclose(bn.running_var, {v1, v2}, 1e-6)
    assert.are.equal(0.5, bn.momentum)
    assert.is_false(net.training)
    assert.are.equal(3, bn.num_batches_tracked:item())
  end)

  it("with one batch of all the data gives its exact mean and variance", function()
    local bn = nn.BatchNorm1d(1)
    local x = nasrt.tensor{{2}, {4}, {4}, {4}, {5}, {5}, {7}, {9}}
    local used = nn.recalibrate_bn(bn, function() local b = x; x = nil; return b end, 10)
    assert.are.equal(1, used)
    assert.allclose(bn.running_mean, {5})
    assert.allclose(bn.running_var, {32 / 7}, 1e-6)   -- unbiased, as PyTorch stores it
  end)

  it("stops after n batches and accepts {x, y} pairs", function()
    local bn = nn.BatchNorm1d(1)
    local data = {{nasrt.tensor{{1}, {3}}, nasrt.tensor{0, 1}}, {nasrt.tensor{{100}, {300}}, nasrt.tensor{0, 1}}}
    assert.are.equal(1, nn.recalibrate_bn(bn, data, 1))
    assert.allclose(bn.running_mean, {2})
  end)
end)

describe("nasrt.optim", function()
  local p0 = {1.0, -2.0, 0.5, 3.0}
  local grads = {{0.1, -0.2, 0.3, -0.4}, {-0.5, 0.25, 0.0, 1.0}, {0.3, 0.3, -0.6, 0.2}}

  local function run(make, expected)
    local p = nasrt.tensor(p0):requires_grad(true)
    local opt = make{p}
    for i, g in ipairs(grads) do
      p.grad = nasrt.tensor(g)
      opt:step()
      assert.allclose(p, expected[i], 1e-6)
    end
    return opt, p
  end

  it("SGD with Nesterov momentum and weight decay matches torch over 3 steps", function()
    run(function(ps) return optim.SGD(ps, {lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 0.01}) end, {
      {0.979099989, -1.95819998, 0.44205001, 3.0703001},
      {1.0633297, -1.98415935, 0.416505128, 2.90443659},
      {1.03599727, -2.04001522, 0.507121205, 2.80440426}})
  end)

  it("SGD by hand: first step sets the buffer to the gradient", function()
    local p = nasrt.tensor{1.0}:requires_grad(true)
    local opt = optim.SGD({p}, {lr = 0.1, momentum = 0.9, nesterov = true})
    p.grad = nasrt.tensor{1.0}
    opt:step()                          -- buf = 1; d = 1 + 0.9*1 = 1.9; p = 1 - 0.19
    assert.allclose(p, {0.81}, 1e-7)
    opt:step()                          -- buf = 0.9 + 1 = 1.9; d = 1 + 1.71 = 2.71
    assert.allclose(p, {0.81 - 0.271}, 1e-6)
  end)

  it("SGD with dampening matches torch", function()
    run(function(ps) return optim.SGD(ps, {lr = 0.05, momentum = 0.8, dampening = 0.3, weight_decay = 0.1}) end, {
      {0.99000001, -1.98000002, 0.482499987, 3.00500011},
      {0.99603498, -1.96582007, 0.46681124, 2.96348262},
      {0.986876845, -1.95809567, 0.473626405, 2.91289639}})
  end)

  it("Adam with weight decay matches torch over 3 steps", function()
    local opt, p = run(function(ps) return optim.Adam(ps, {lr = 0.01, betas = {0.8, 0.9}, weight_decay = 0.1}) end, {
      {0.99000001, -1.99000001, 0.49000001, 3.00999999},
      {0.994160175, -1.98461998, 0.482493579, 3.00283217},
      {0.991757631, -1.98258674, 0.485549569, 2.99536633}})
    assert.are.equal(3, opt.state[p].step)
  end)

  it("AdamW and amsgrad match torch", function()
    run(function(ps) return optim.AdamW(ps, {lr = 0.01, weight_decay = 0.1}) end, {
      {0.989000022, -1.98800004, 0.489500016, 3.00699997},
      {0.993994594, -1.98763943, 0.482309937, 2.99957085},
      {0.993745983, -1.99093902, 0.485228002, 2.9920435}})
    run(function(ps) return optim.Adam(ps, {lr = 0.01, amsgrad = true}) end, {
      {0.99000001, -1.99000001, 0.49000001, 3.00999999},
      {0.995983541, -1.99162734, 0.483302772, 3.0055778},
      {0.996728897, -1.99691451, 0.486703128, 3.00105}})
  end)

  it("step leaves parameters without a gradient (and their state) untouched", function()
    for _, make in ipairs{
      function(ps) return optim.SGD(ps, {lr = 0.1, momentum = 0.9, weight_decay = 0.1}) end,
      function(ps) return optim.Adam(ps, {lr = 0.1, weight_decay = 0.1}) end,
    } do
      local a = nasrt.tensor{1, 2}:requires_grad(true)
      local b = nasrt.tensor{3, 4}:requires_grad(true)
      local opt = make{a, b}
      a.grad = nasrt.tensor{1, 1}
      opt:step()
      assert.allclose(b, {3, 4})
      assert.is_nil(opt.state[b])
      opt:zero_grad()
      assert.is_nil(a.grad)
      local a_before = a:clone()
      b.grad = nasrt.tensor{1, 1}
      opt:step()
      assert.allclose(a, a_before)          -- a has no grad this time: untouched
      if opt.__name == "SGD" then
        -- b's first step: buf = d = g + wd*b
        assert.allclose(opt.state[b].momentum_buffer, {1.3, 1.4}, 1e-6)
      else
        assert.are.equal(1, opt.state[b].step)
        assert.are.equal(1, opt.state[a].step)
      end
    end
  end)

  it("supports param groups with their own learning rate", function()
    local a = nasrt.tensor{1}:requires_grad(true)
    local b = nasrt.tensor{1}:requires_grad(true)
    local opt = optim.SGD({{params = {a}}, {params = {b}, lr = 0.5}}, {lr = 0.1})
    a.grad, b.grad = nasrt.tensor{1}, nasrt.tensor{1}
    opt:step()
    assert.allclose(a, {0.9}, 1e-7)
    assert.allclose(b, {0.5}, 1e-7)
    assert.are.equal(0.5, opt:get_lr(2))
    assert.has_error(function() optim.SGD({a}, {}) end, "SGD: option 'lr' is required")
    assert.has_error(function() optim.SGD({a}, {lr = 0.1, momentun = 0.9}) end)
    assert.has_error(function() optim.SGD({a}, {lr = 0.1, nesterov = true}) end,
      "SGD: Nesterov momentum requires a momentum and zero dampening")
    assert.has_error(function() optim.SGD({{params = {a}}, {params = {a}}}, {lr = 0.1}) end,
      "SGD: some parameters appear in more than one parameter group")
    assert.has_error(function() optim.Adam(nn.Linear(2, 2)) end, "Adam: pass model:parameters(), not the model")
  end)

  it("round-trips its state dict", function()
    local function make(p) return optim.Adam({p}, {lr = 0.05, weight_decay = 0.01}) end
    local pa = nasrt.tensor{1, 2, 3}:requires_grad(true)
    local oa = make(pa)
    pa.grad = nasrt.tensor{0.5, -1, 2}
    oa:step()
    local pb = pa:clone():detach():requires_grad(true)
    local ob = make(pb)
    ob:load_state_dict(oa:state_dict())
    assert.are.equal(1, ob.state[pb].step)
    for _ = 1, 2 do
      pa.grad = nasrt.tensor{0.1, 0.2, -0.3}
      pb.grad = nasrt.tensor{0.1, 0.2, -0.3}
      oa:step(); ob:step()
    end
    assert.allclose(pb, pa, 1e-7)
    local sd = oa:state_dict()
    assert.are.same({1}, sd.param_groups[1].params)
    assert.are.equal(0.05, sd.param_groups[1].lr)
  end)
end)

describe("nasrt.optim schedules and clipping", function()
  local function lrs(sched_fn, steps, base)
    local p = nasrt.zeros{1}:requires_grad(true)
    local opt = optim.SGD({p}, {lr = base or 0.1})
    local s = sched_fn(opt)
    local out = {opt:get_lr()}
    for _ = 1, steps do opt:step(); s:step(); out[#out + 1] = opt:get_lr() end
    return out, s
  end

  local function same_numbers(a, b)
    assert.are.equal(#b, #a)
    for i = 1, #b do assert.is_true(math.abs(a[i] - b[i]) < 1e-12, ("%d: %.17g vs %.17g"):format(i, a[i], b[i])) end
  end

  it("CosineLR matches torch's CosineAnnealingLR, past T_max too", function()
    local got, s = lrs(function(o) return optim.CosineLR(o, 5, 0.001) end, 12)
    same_numbers(got, {0.10000000000000001, 0.090546341221559898, 0.06579634122155989,
      0.035203658778440096, 0.010453658778440105, 0.001, 0.010453658778440102,
      0.035203658778440117, 0.065796341221559931, 0.090546341221559953, 0.10000000000000005,
      0.090546341221559981, 0.065796341221559945})   -- torch
    assert.are.equal(got[#got], s:get_lr())
    assert.are.same({got[#got]}, s:get_last_lr())
  end)

  it("LinearLR and a warmup+cosine SequentialLR match torch", function()
    same_numbers(lrs(function(o) return optim.LinearLR(o) end, 7), {0.033333333333333333,
      0.046666666666666669, 0.060000000000000005, 0.073333333333333348, 0.086666666666666684,
      0.10000000000000001, 0.10000000000000001, 0.10000000000000001})   -- torch
    same_numbers(lrs(function(o)
      local w = optim.LinearLR(o, {start_factor = 0.1, total_iters = 3})
      local c = optim.CosineLR(o, 4)
      return optim.SequentialLR(o, {w, c}, {3})
    end, 9), {0.010000000000000002, 0.040000000000000001, 0.070000000000000007,
      0.10000000000000001, 0.085355339059327379, 0.050000000000000003, 0.014644660940672627, 0,
      0.014644660940672622, 0.05000000000000001})   -- torch
  end)

  it("clip_grad_norm returns the total norm and scales like torch", function()
    local a = nasrt.zeros{2}:requires_grad(true)
    local b = nasrt.zeros{1}:requires_grad(true)
    local c = nasrt.zeros{3}:requires_grad(true)   -- no grad: skipped
    a.grad, b.grad = nasrt.tensor{3, 4}, nasrt.tensor{12}
    assert.are.equal(13, optim.grad_norm{a, b, c})
    assert.is_true(math.abs(optim.clip_grad_norm({a, b, c}, 6.5) - 13) < 1e-9)
    assert.allclose(a.grad, {1.49999988, 1.99999988}, 1e-6)   -- torch
    assert.allclose(b.grad, {5.99999952}, 1e-6)
    assert.is_nil(c.grad)
    a.grad, b.grad = nasrt.tensor{3, -4}, nasrt.tensor{12}
    assert.are.equal(12, optim.clip_grad_norm({a, b}, 100, math.huge))
    assert.are.equal(19, optim.clip_grad_norm({a, b}, 100, 1))
    assert.allclose(a.grad, {3, -4})   -- under the limit: untouched
  end)
end)

describe("training state through checkpoints", function()
  it_if(nasrt.save ~= nil, "model, optimizer and schedule state survive nasrt.save/load", function()
    local function build()
      nasrt.manual_seed(5)
      local net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
      local opt = optim.SGD(net:parameters(), {lr = 0.1, momentum = 0.9})
      return net, opt, optim.CosineLR(opt, 10)
    end
    local x = nasrt.randn{6, 3}
    local function train_step(net, opt, sched)
      opt:zero_grad()
      F.sum(F.pow(net(x), 2)):backward()
      opt:step()
      sched:step()
    end
    local net, opt, sched = build()
    train_step(net, opt, sched)
    local path = os.tmpname()
    assert.is_true(nasrt.save(path, {model = net:state_dict(), opt = opt:state_dict(),
                                     sched = sched:state_dict()}))
    local ck = assert(nasrt.load(path))
    os.remove(path)
    local net2, opt2, sched2 = build()
    net2:load_state_dict(ck.model)
    opt2:load_state_dict(ck.opt)
    sched2:load_state_dict(ck.sched)
    train_step(net, opt, sched)
    train_step(net2, opt2, sched2)
    assert.are.equal(sched:get_lr(), sched2:get_lr())
    for i, p in ipairs(net:parameters()) do assert.allclose(net2:parameters()[i], p, 1e-6) end
  end)
end)
