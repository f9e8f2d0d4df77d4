-- F.sep_block: DARTS' SepConv up to its last batch norm as one op (relu,
-- depthwise, 1x1, batch norm without affine on batch statistics, relu,
-- depthwise stride 1, 1x1).  Checked against the three ops it replaces
-- (each gradient-checked in ops_grad_spec.lua), by finite differences, for
-- thread-count independence, and through blocks.SepConv.
local nasrt = require "nasrt"
local F = nasrt.F
local H = require "helpers"
local blocks = require "nasrt.blocks"

-- largest |a - b| over largest |b|
local function rel(a, b)
  return H.maxdiff(a, b) / (b:abs():max():item() + 1e-30)
end

-- y, x.grad, the four weight grads, running mean and var of one run;
-- fn(x, w1, w2, w3, w4, rm, rv) gives y
local function run(fn, x0, ws0, g, twice)
  local x = x0:clone():requires_grad(true)
  local w = {}
  for i = 1, 4 do w[i] = ws0[i]:clone():requires_grad(true) end
  local rm, rv = nasrt.full({ x0:shape()[2] }, 0.5), nasrt.full({ x0:shape()[2] }, 2)
  local y = fn(x, w[1], w[2], w[3], w[4], rm, rv)
  if twice then y = F.add(y, F.scale(fn(x, w[1], w[2], w[3], w[4], rm, rv), -0.5)) end
  y:backward(g or nasrt.randn(y:shape()))
  return { y, x.grad, w[1].grad, w[2].grad, w[3].grad, w[4].grad, rm, rv }
end

local function apart(o)
  return function(x, w1, w2, w3, w4, rm, rv)
    local a = F.sep_conv2d(x, w1, w2, { stride = o.stride, padding = o.padding,
                                        dilation = o.dilation, relu = true })
    local z = F.batch_norm(a, rm, rv, nil, nil, { training = true, momentum = o.momentum,
                                                  eps = o.eps })
    return F.sep_conv2d(z, w3, w4, { padding = o.padding, dilation = o.dilation, relu = true })
  end
end

local function fused(o)
  return function(x, w1, w2, w3, w4, rm, rv) return F.sep_block(x, w1, w2, w3, w4, rm, rv, o) end
end

-- x [N,C,H,H], kernel k, the 1x1s C->C and C->Co
local function inputs(seed, N, C, Hh, k, Co)
  nasrt.manual_seed(seed)
  return nasrt.randn { N, C, Hh, Hh }, { nasrt.randn { C, 1, k, k }, nasrt.randn { C, C, 1, 1 },
    nasrt.randn { C, 1, k, k }, nasrt.randn { Co, C, 1, 1 } }
end

local NAMES = { "y", "dx", "dWd1", "dWp1", "dWd2", "dWp2", "running_mean", "running_var" }

describe("F.sep_block", function()
  after_each(function() nasrt.set_num_threads(2) end)

  -- N, C, H, k, Co, options: the DARTS planes (28x28 C=16, 14x14 C=32,
  -- 7x7 C=64), the strided half of a reduction cell, dilation
  for _, c in ipairs({
    { 4, 16, 28, 3, 16, { padding = 1 } },
    { 3, 16, 28, 5, 16, { padding = 2, momentum = 0.3, eps = 1e-3 } },
    { 3, 32, 14, 5, 48, { padding = 2 } },
    { 4, 16, 28, 3, 16, { stride = 2, padding = 1 } },
    { 2, 16, 15, 5, 32, { stride = 2, padding = 2 } },
    { 2, 64, 7, 5, 64, { padding = 2 } },
    { 2, 16, 9, 3, 16, { padding = 2, dilation = 2 } },
    -- more images than backward's 16 blocks: blocks of several images
    { 37, 16, 6, 3, 16, { padding = 1 } },
  }) do
    local N, C, Hh, k, Co, o = table.unpack(c)
    local what = ("[%d,%d,%d,%d] %dx%d %s"):format(N, C, Hh, Hh, k, k,
      o.stride and "stride 2" or o.dilation and "dilation 2" or "")
    it("gives the numbers of sep_conv2d, batch_norm, sep_conv2d: " .. what, function()
      local x, ws = inputs(11, N, C, Hh, k, Co)
      local r = { stride = o.stride or 1, padding = o.padding, dilation = o.dilation or 1,
                  momentum = o.momentum or 0.1, eps = o.eps or 1e-5 }
      local g = nasrt.randn { N, Co, (Hh + 2 * o.padding - (o.dilation or 1) * (k - 1) - 1)
        // (o.stride or 1) + 1, (Hh + 2 * o.padding - (o.dilation or 1) * (k - 1) - 1)
        // (o.stride or 1) + 1 }
      local a, b = run(fused(o), x, ws, g), run(apart(r), x, ws, g)
      for i = 1, 8 do
        local e = rel(a[i], b[i])
        assert(e < 3e-6, ("%s: %s differs by %.2g (relative)"):format(what, NAMES[i], e))
      end
      -- the running statistics moved (momentum applied once)
      assert.is_true(H.maxdiff(b[7], 0.5) > 1e-3 and H.maxdiff(b[8], 2) > 1e-3)
    end)
  end

  it("adds its dx to a gradient the input already has (x used twice)", function()
    local x, ws = inputs(12, 3, 16, 14, 3, 16)
    local o = { padding = 1 }
    local a = run(fused(o), x, ws, nil, true)
    nasrt.manual_seed(99)
    local g = nasrt.randn(a[1]:shape())
    a = run(fused(o), x, ws, g, true)
    local b = run(apart({ stride = 1, padding = 1, dilation = 1, momentum = 0.1, eps = 1e-5 }),
      x, ws, g, true)
    for i = 1, 6 do
      local e = rel(a[i], b[i])
      assert(e < 3e-6, ("%s differs by %.2g (relative)"):format(NAMES[i], e))
    end
  end)

  it("gives the same numbers with 1 and 2 threads", function()
    local x, ws = inputs(13, 21, 16, 12, 5, 16)
    local g = nasrt.randn { 21, 16, 12, 12 }
    nasrt.set_num_threads(1)
    local a = run(fused({ padding = 2 }), x, ws, g)
    nasrt.set_num_threads(2)
    local b = run(fused({ padding = 2 }), x, ws, g)
    for i = 1, 8 do
      assert.are.equal(0, H.maxdiff(a[i], b[i]), NAMES[i])
    end
  end)

  it("runs the three ops where its engine does not apply (8 channels, no padding)", function()
    for _, c in ipairs({ { 8, { padding = 1 } }, { 16, { padding = 0 } } }) do
      local x, ws = inputs(14, 2, c[1], 10, 3, c[1])
      local g = nasrt.randn { 2, c[1], 10 - 4 * (1 - c[2].padding), 10 - 4 * (1 - c[2].padding) }
      local a = run(fused(c[2]), x, ws, g)
      local b = run(apart({ stride = 1, padding = c[2].padding, dilation = 1, momentum = 0.1,
                            eps = 1e-5 }), x, ws, g)
      for i = 1, 8 do assert.are.equal(0, H.maxdiff(a[i], b[i]), NAMES[i]) end
    end
  end)

  it("passes a finite-difference gradient check (16 channels: the fused engine)", function()
    local function check(seed, skip)
      nasrt.manual_seed(seed)
      local ins = { H.leaf { 3, 16, 5, 5 }, H.leaf({ 16, 1, 3, 3 }, 0.5),
                    H.leaf({ 16, 16, 1, 1 }, 0.3), H.leaf({ 16, 1, 3, 3 }, 0.5),
                    H.leaf({ 4, 16, 1, 1 }, 0.3) }
      return H.gradcheck(function(x, a, b, c, d)
        return F.sep_block(x, a, b, c, d, nil, nil, { padding = 1 })
      end, ins, { max_elems = 24, skip = skip })
    end
    -- the second half's weights come after the last ReLU: the output is
    -- linear in them, so any inputs do
    for seed = 5, 9 do assert(check(seed, { true, true, true })) end
    -- x and the first half's weights move values across the ReLUs' kinks,
    -- where central differences are wrong: seed 7 crosses none (at seeds
    -- 5, 6 and 9 the three ops apart fail the same check the same way)
    assert(check(7))
  end)

  it("refuses bad shapes with the message of the op that cannot take them", function()
    local x = nasrt.randn { 2, 16, 8, 8 }
    local w = { nasrt.randn { 16, 1, 3, 3 }, nasrt.randn { 16, 16, 1, 1 },
                nasrt.randn { 16, 1, 3, 3 }, nasrt.randn { 16, 16, 1, 1 } }
    local function err(...)
      local ok, e = pcall(F.sep_block, ...)
      assert.is_false(ok)
      return tostring(e)
    end
    assert.matches("sep_block: sep_conv2d: pointwise weight [16,8,1,1], expected [Co,16,1,1] for "
      .. "input [2,16,8,8]", err(x, w[1], nasrt.randn { 16, 8, 1, 1 }, w[3], w[4], nil, nil,
        { padding = 1 }), 1, true)
    assert.matches("sep_block: batch_norm", err(x, w[1], w[2], w[3], w[4], nasrt.zeros { 8 }, nil,
      { padding = 1 }), 1, true)
    assert.matches("more than 1 value per channel", err(nasrt.randn { 1, 16, 1, 1 }, w[1], w[2],
      w[3], w[4], nil, nil, { padding = 1 }), 1, true)
    assert.matches("sep_block: argument #5: expected tensor", err(x, w[1], w[2], w[3], "w4"), 1, true)
  end)
end)

describe("blocks.SepConv with F.sep_block", function()
  it("trains as its children run one by one (outputs, gradients, running statistics)", function()
    local res = {}
    for _, fuse in ipairs({ true, false }) do
      blocks.fuse_sep_conv = fuse
      nasrt.manual_seed(21)
      local m = blocks.SepConv(16, 32, 5, 2, 2, false)
      local x = H.leaf { 3, 16, 14, 14 }
      local y
      for _ = 1, 2 do -- two steps: num_batches_tracked and the running stats move twice
        y = m(x)
        y:backward(nasrt.randn(y:shape()))
      end
      local ch = m:children()
      res[fuse] = { y, x.grad, ch[2].weight.grad, ch[3].weight.grad, ch[6].weight.grad,
                    ch[7].weight.grad, ch[4].running_mean, ch[4].running_var,
                    ch[4].num_batches_tracked }
    end
    blocks.fuse_sep_conv = true
    for i = 1, 9 do
      local e = rel(res[true][i], res[false][i])
      assert(e < 3e-6, ("item %d differs by %.2g"):format(i, e))
    end
    assert.are.equal(2, res[true][9]:item())
  end)
end)
