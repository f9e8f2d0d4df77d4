-- Misuse never crashes: every bad call below must raise a Lua error whose
-- message names the function (and, where shapes are involved, the shapes).
local nasrt = require "nasrt"
local F = nasrt.F

local x4 = nasrt.randn({2, 3, 8, 8})
local w = nasrt.randn({4, 3, 3, 3})
local m23, m45 = nasrt.randn({2, 3}), nasrt.randn({4, 5})
local closed = nasrt.randn({2}); closed:close()

-- {label, function, pattern the message must contain (plain text)}
local bad = {
  {"tensor(nil)", function() return nasrt.tensor(nil) end, "tensor:"},
  {"tensor(string)", function() return nasrt.tensor("abc") end, "tensor:"},
  {"tensor ragged", function() return nasrt.tensor({{1, 2}, {3}}) end, "ragged"},
  {"tensor non-number", function() return nasrt.tensor({1, "x"}) end, "expected a number"},
  {"zeros negative", function() return nasrt.zeros({2, -1}) end, "negative size"},
  {"zeros fractional", function() return nasrt.zeros({2.5}) end, "fractional"},
  {"zeros huge", function() return nasrt.zeros({1e9, 1e9}) end, "too large"},
  {"zeros too many dims", function() return nasrt.zeros({1, 1, 1, 1, 1, 1, 1, 1, 1}) end, "dims"},
  {"zeros no shape", function() return nasrt.zeros() end, "zeros"},
  {"zeros string", function() return nasrt.zeros("a") end, "zeros"},
  {"randn negative", function() return nasrt.randn({-3}) end, "negative"},
  {"full no value", function() return nasrt.full({2}) end, "full"},
  {"manual_seed string", function() return nasrt.manual_seed("x") end, "manual_seed"},
  {"add shapes", function() return F.add(m23, m45) end, "[2,3]"},
  {"add nil", function() return F.add(m23, nil) end, "add: argument #2"},
  {"add string", function() return F.add("a", m23) end, "add: argument #1"},
  {"mul table", function() return m23 * {} end, "mul"},
  {"sub broadcast", function() return m23 - nasrt.randn({4}) end, "cannot be broadcast"},
  {"div shapes", function() return nasrt.randn({3, 2}) / nasrt.randn({2, 3}) end, "div"},
  {"relu nil", function() return F.relu(nil) end, "relu: argument #1: expected tensor"},
  {"relu number", function() return F.relu(3) end, "relu"},
  {"sigmoid table", function() return F.sigmoid({}) end, "sigmoid"},
  {"sum bad dim", function() return F.sum(m23, 3) end, "sum: dim 3 out of range"},
  {"sum dim 0", function() return F.sum(m23, 0) end, "sum"},
  {"mean string dim", function() return F.mean(m23, "x") end, "mean"},
  {"max bad dim", function() return F.max(m23, 5) end, "max"},
  {"reshape wrong numel", function() return m23:reshape(4, 2) end, "reshape"},
  {"reshape two -1", function() return m23:reshape(-1, -1) end, "reshape"},
  {"reshape negative", function() return m23:reshape(-2, 3) end, "reshape"},
  {"narrow out of range", function() return m23:narrow(2, 3, 2) end, "narrow"},
  {"narrow bad dim", function() return m23:narrow(3, 1, 1) end, "narrow"},
  {"transpose bad dim", function() return m23:transpose(1, 3) end, "transpose"},
  {"cat empty", function() return F.cat({}) end, "cat"},
  {"cat mismatched", function() return F.cat({m23, m45}, 2) end, "cat"},
  {"cat non-tensor", function() return F.cat({m23, 5}) end, "cat"},
  {"pad odd", function() return F.pad(x4, {1, 2, 3}) end, "pad"},
  {"pad negative", function() return F.pad(x4, {-1, 1}) end, "pad"},
  {"subsample stride 0", function() return F.subsample(x4, 0) end, "subsample"},
  {"subsample 1-d", function() return F.subsample(nasrt.randn({4}), 2) end, "subsample"},
  {"matmul inner", function() return F.matmul(m23, m45) end, "[2,3]"},
  {"matmul 1 arg", function() return F.matmul(m23) end, "matmul"},
  {"linear shapes", function() return F.linear(m23, m45) end, "linear"},
  {"linear bias", function() return F.linear(m23, nasrt.randn({4, 3}), nasrt.randn({5})) end, "linear"},
  {"conv2d channels", function() return F.conv2d(nasrt.randn({2, 5, 8, 8}), w) end, "conv2d"},
  {"conv2d rank", function() return F.conv2d(m23, w) end, "conv2d"},
  {"conv2d groups", function() return F.conv2d(x4, w, nil, {groups = 2}) end, "conv2d"},
  {"conv2d bad option", function() return F.conv2d(x4, w, nil, {strid = 2}) end, "unknown option 'strid'"},
  {"conv2d stride 0", function() return F.conv2d(x4, w, nil, {stride = 0}) end, "conv2d"},
  {"conv2d negative padding", function() return F.conv2d(x4, w, nil, {padding = -1}) end, "conv2d"},
  {"conv2d kernel too big", function() return F.conv2d(nasrt.randn({1, 3, 2, 2}), w) end, "conv2d"},
  {"conv2d bias shape", function() return F.conv2d(x4, w, nasrt.randn({3})) end, "conv2d"},
  {"conv2d options type", function() return F.conv2d(x4, w, nil, 3) end, "conv2d"},
  {"sep_conv2d depthwise weight", function()
    return F.sep_conv2d(x4, nasrt.randn({2, 1, 3, 3}), nasrt.randn({4, 3, 1, 1})) end,
    "sep_conv2d: depthwise weight [2,1,3,3], expected [3,1,kh,kw] for input [2,3,8,8]"},
  {"sep_conv2d pointwise weight", function()
    return F.sep_conv2d(x4, nasrt.randn({x4:shape()[2], 1, 3, 3}), nasrt.randn({4, 2, 1, 1})) end,
    "sep_conv2d: pointwise weight"},
  {"sep_conv2d kernel too big", function()
    return F.sep_conv2d(nasrt.randn({1, 3, 2, 2}), nasrt.randn({3, 1, 3, 3}), nasrt.randn({3, 3, 1, 1})) end,
    "sep_conv2d: input"},
  {"sep_conv2d relu option", function()
    return F.sep_conv2d(x4, nasrt.randn({x4:shape()[2], 1, 3, 3}), nasrt.randn({4, x4:shape()[2], 1, 1}),
      {relu = 1}) end, "relu must be a boolean"},
  {"conv2d stride string", function() return F.conv2d(x4, w, nil, {stride = "2"}) end, "stride"},
  {"max_pool2d kernel 0", function() return F.max_pool2d(x4, {kernel = 0}) end, "max_pool2d"},
  {"max_pool2d bad padding", function() return F.max_pool2d(x4, {kernel = 2, padding = 2}) end, "max_pool2d"},
  {"max_pool2d rank", function() return F.max_pool2d(m23, {kernel = 2}) end, "max_pool2d"},
  {"avg_pool2d bad option", function() return F.avg_pool2d(x4, {kernel = 2, count_include = true}) end, "unknown option"},
  {"avg_pool2d bool option type", function() return F.avg_pool2d(x4, {kernel = 2, count_include_pad = 1}) end, "count_include_pad"},
  {"adaptive_avg_pool2d 0", function() return F.adaptive_avg_pool2d(x4, 0) end, "adaptive_avg_pool2d"},
  {"batch_norm channels", function() return F.batch_norm(x4, nil, nil, nasrt.ones({4})) end, "batch_norm"},
  {"batch_norm eval without stats", function() return F.batch_norm(x4, nil, nil, nil, nil, {training = false}) end, "batch_norm"},
  {"batch_norm bad option", function() return F.batch_norm(x4, nil, nil, nil, nil, {momentun = 0.1}) end, "unknown option"},
  {"softmax bad dim", function() return F.softmax(m23, 3) end, "softmax"},
  {"log_softmax no dim", function() return F.log_softmax(m23) end, "log_softmax"},
  {"cross_entropy target range", function() return F.cross_entropy(m23, nasrt.tensor({0, 3})) end, "cross_entropy"},
  {"cross_entropy target count", function() return F.cross_entropy(m23, nasrt.tensor({0})) end, "cross_entropy"},
  {"cross_entropy fractional target", function() return F.cross_entropy(m23, nasrt.tensor({0.5, 1})) end, "cross_entropy"},
  {"cross_entropy bad smoothing", function() return F.cross_entropy(m23, nasrt.tensor({0, 1}), {label_smoothing = 2}) end, "cross_entropy"},
  {"item of many", function() return m23:item() end, "item"},
  {"get out of range", function() return m23:get(3, 1) end, "get"},
  {"get wrong count", function() return m23:get(1, 1, 1) end, "get"},
  {"backward non-scalar", function() return (m23 * 2):backward() end, "backward"},
  {"backward no grad", function() return m23:sum():backward() end, "backward"},
  {"backward wrong grad shape", function()
    return (nasrt.randn({2}):requires_grad(true) * 2):backward(nasrt.randn({3})) end, "backward"},
  {"grad of wrong shape", function() m23.grad = m45 end, "grad"},
  {"unknown field", function() m23.foo = 1 end, "foo"},
  {"closed tensor", function() return closed:sum() end, "tensor used after close"},
  {"copy_ numel", function() return nasrt.zeros({2}):copy_(m23) end, "copy_"},
  {"no_grad non-function", function() return nasrt.no_grad(3) end, "no_grad"},
  {"load_npy number", function() return nasrt.io.load_npy(3) end, "load_npy"},
  {"save_npy non-tensor", function() return nasrt.io.save_npy("/tmp/x.npy", {}) end, "save_npy"},
}

describe("bad calls raise Lua errors that name the function", function()
  it("has at least 50 cases", function() assert.is_true(#bad >= 50) end)
  for _, c in ipairs(bad) do
    it(c[1], function()
      local ok, err = pcall(c[2])
      assert.is_false(ok, "expected an error")
      assert.are.equal("string", type(err))
      assert.truthy(err:find(c[3], 1, true), ("message %q lacks %q"):format(err, c[3]))
    end)
  end
  it("leaves the process usable afterwards", function()
    assert.are.equal(6, nasrt.ones({2, 3}):sum():item())
  end)
end)
