-- The tensor API of DESIGN.md §2: constructors, views, autograd, no_grad,
-- the generator, npy interchange.
local nasrt = require "nasrt"
local F = nasrt.F

describe("nasrt.Tensor", function()
  it("relu6 clamps to [0, 6] and passes the gradient strictly inside", function()
    local x = nasrt.tensor({-1, 0.5, 3, 5.75, 7}):requires_grad(true)
    local y = F.relu6(x)
    assert.are.same({0, 0.5, 3, 5.75, 6}, y:totable())
    F.sum(y):backward()
    assert.are.same({0, 1, 1, 1, 0}, x.grad:totable())
  end)

  it("builds from nested tables and gives them back", function()
    local t = nasrt.tensor({{1, 2, 3}, {4, 5, 6}})
    assert.are.same({2, 3}, t:shape())
    assert.are.equal(6, t:numel())
    assert.are.same({{1, 2, 3}, {4, 5, 6}}, t:totable())
    assert.are.equal(5, t:get(2, 2))
    assert.are.equal(6, t:get(6)) -- flat, row-major
    assert.are.equal(3.5, nasrt.tensor(3.5):item())
    assert.are.same({}, nasrt.tensor(3.5):shape())
  end)

  it("makes filled and random tensors of any rank", function()
    assert.are.same({{0, 0}}, nasrt.zeros({1, 2}):totable())
    assert.are.same({1, 1, 1}, nasrt.ones(3):totable())
    assert.are.same({{7, 7}}, nasrt.full({1, 2}, 7):totable())
    assert.are.same({2, 1, 3, 1, 2}, nasrt.randn({2, 1, 3, 1, 2}):shape())
    local r = nasrt.rand({1000})
    assert.is_true(r:max():item() < 1 and F.neg(r):max():item() <= 0)
  end)

  it("is reproducible under manual_seed and restores generator state", function()
    nasrt.manual_seed(123)
    local a = nasrt.randn({5}):totable()
    nasrt.manual_seed(123)
    assert.are.same(a, nasrt.randn({5}):totable())
    local st = nasrt.get_rng_state()
    local b = nasrt.rand({4}):totable()
    nasrt.set_rng_state(st)
    assert.are.same(b, nasrt.rand({4}):totable())
  end)

  it("shares storage with its views", function()
    local t = nasrt.zeros({3, 4})
    local v = t:narrow(2, 2, 2)
    assert.are.same({3, 2}, v:shape())
    assert.is_false(v:is_contiguous())
    v:set(1, 1, 9)
    assert.are.equal(9, t:get(1, 2))
    local r = t:reshape(12)
    r:set(12, 4)
    assert.are.equal(4, t:get(3, 4))
    local c = t:clone()
    c:set(1, 1, -1)
    assert.are.equal(0, t:get(1, 1))
  end)

  it("reshapes with an inferred dim and transposes", function()
    local t = nasrt.tensor({{1, 2, 3}, {4, 5, 6}})
    assert.are.same({3, 2}, t:reshape(-1, 2):shape())
    assert.are.same({{1, 4}, {2, 5}, {3, 6}}, t:transpose(1, 2):totable())
    assert.are.same({{1, 4}, {2, 5}, {3, 6}}, t:transpose(1, 2):contiguous():totable())
  end)

  it("does arithmetic with operators, numbers and broadcasting", function()
    local a = nasrt.tensor({{1, 2}, {3, 4}})
    assert.are.same({{2, 4}, {6, 8}}, (a * 2):totable())
    assert.are.same({{0, 1}, {2, 3}}, (a - 1):totable())
    assert.are.same({{11, 22}, {13, 24}}, (a + nasrt.tensor({10, 20})):totable())
    assert.are.same({{-1, -2}, {-3, -4}}, (-a):totable())
    assert.are.same({{0.5, 1}, {1.5, 2}}, (a / 2):totable())
    assert.are.equal(10, a:sum():item())
    assert.are.same({4, 6}, a:sum(1):totable())
    assert.are.same({1.5, 3.5}, a:mean(2):totable())
    assert.are.same({{1.5}, {3.5}}, a:mean(-1, true):totable())
    local v, i = a:max(2)
    assert.are.same({2, 4}, v:totable())
    assert.are.same({1, 1}, i:totable()) -- 0-based class ids
  end)

  it("pads, concatenates and subsamples like PyTorch", function()
    local x = nasrt.tensor({{{{1, 2}, {3, 4}}}})
    assert.are.same({{{{0, 0, 0, 0}, {0, 1, 2, 0}, {0, 3, 4, 0}, {0, 0, 0, 0}}}},
      F.pad(x, {1, 1, 1, 1}):totable())
    assert.are.same({{{{1, 2, 1, 2}, {3, 4, 3, 4}}}}, F.cat({x, x}, 4):totable())
    local y = nasrt.tensor({{{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}}})
    assert.are.same({{{{1, 3}, {7, 9}}}}, F.subsample(y, 2):totable())
    assert.are.same({{{{5}}}}, F.subsample(y, 2, 1, 1):totable())
  end)

  it("accumulates gradients into .grad of leaves", function()
    local x = nasrt.tensor({1, 2, 3}):requires_grad(true)
    assert.is_true(x.is_leaf)
    local y = (x * x):sum()
    assert.are.equal("sum", y.grad_fn)
    y:backward()
    assert.are.same({2, 4, 6}, x.grad:totable())
    ;(x * 3):sum():backward()
    assert.are.same({5, 7, 9}, x.grad:totable()) -- accumulated, not overwritten
    x:zero_grad()
    assert.is_nil(x.grad)
  end)

  it("takes an explicit output gradient", function()
    local x = nasrt.tensor({1, 2}):requires_grad(true)
    local y = x * 2
    y:backward(nasrt.tensor({1, 10}))
    assert.are.same({2, 20}, x.grad:totable())
  end)

  it("records nothing under no_grad and restores the mode after errors", function()
    local x = nasrt.tensor({1, 2}):requires_grad(true)
    local y, extra = nasrt.no_grad(function(a) return x * a, "z" end, 3)
    assert.is_nil(y.grad_fn)
    assert.are.equal("z", extra)
    assert.has_error(function() nasrt.no_grad(function() error("boom") end) end)
    assert.is_true(nasrt.is_grad_enabled())
    assert.is_not_nil((x * 2).grad_fn)
  end)

  it("detaches from the graph", function()
    local x = nasrt.tensor({1, 2}):requires_grad(true)
    local d = (x * 2):detach()
    assert.is_nil(d.grad_fn)
    assert.has_error(function() d:sum():backward() end)
  end)

  it("refuses a second backward through a freed graph", function()
    local x = nasrt.tensor({1, 2}):requires_grad(true)
    local y = (x * x):sum()
    y:backward()
    assert.has_error(function() y:backward() end, nil)
  end)

  it("keeps memory flat across training steps", function()
    local w = nasrt.randn({32, 32}):requires_grad(true)
    local live
    for step = 1, 6 do
      local x = nasrt.randn({16, 32})
      local loss = F.matmul(x, w):tanh():sum()
      loss:backward()
      x, loss = nil, nil
      collectgarbage()
      collectgarbage()
      local m = nasrt.memory().live_bytes
      if step == 2 then live = m elseif step > 2 then assert.are.equal(live, m) end
    end
  end)

  it("round-trips through .npy files", function()
    local path = os.tmpname() .. ".npy"
    local t = nasrt.randn({2, 3, 4})
    assert.is_true(nasrt.io.save_npy(path, t))
    local u = nasrt.io.load_npy(path)
    assert.are.same(t:totable(), u:totable())
    os.remove(path)
    local v, msg = nasrt.io.load_npy(path)
    assert.is_nil(v)
    assert.matches(path, msg, 1, true)
    -- {sync = false} skips the fsync, not a byte
    local p2 = os.tmpname() .. ".npy"
    assert.is_true(nasrt.io.save_npy(path, t, {sync = true}))
    assert.is_true(nasrt.io.save_npy(p2, t, {sync = false}))
    local f1, f2 = assert(io.open(path, "rb")), assert(io.open(p2, "rb"))
    assert.are.equal(f1:read("a"), f2:read("a"))
    f1:close() f2:close()
    os.remove(path) os.remove(p2)
    assert.has_error(function() nasrt.io.save_npy(path, t, {synk = false}) end,
      "save_npy: unknown option 'synk' (expected one of: sync)")
  end)

  it("prints like PyTorch", function()
    assert.are.equal("tensor([[ 0.1000, -1.2000],\n        [ 3.0000,  4.0000]])",
      tostring(nasrt.tensor({{0.1, -1.2}, {3, 4}})))
    assert.are.equal("tensor(3.5000)", tostring(nasrt.tensor(3.5)))
  end)

  it("can be closed early with <close>", function()
    local x = nasrt.randn({4})
    do
      local y <close> = x * 2
    end
    x:close()
    assert.has_error(function() return x:sum() end, "sum: argument #1: tensor used after close")
  end)
end)
