-- Specs of nasrt.blocks: shapes and costs of every op at stride 1 and 2,
-- hand-counted parameters, hand-computed forward values on tiny inputs,
-- and central-difference gradient checks.
--
-- The blocks call F.conv2d / F.max_pool2d / F.avg_pool2d.  While the core
-- is built without those bindings, this file installs slow reference
-- versions written with the ops that exist (pad, narrow, cat, matmul, max,
-- mean) for the duration of its tests and removes them afterwards; once the
-- bindings are built, the spec runs against them and also checks that they
-- agree with the references.
local nasrt = require "nasrt"
local H = require "helpers"
local nn, F = nasrt.nn, nasrt.F
local blocks = require "nasrt.blocks"

-- ------------------------------------------------------------ reference ops

local REF = {}

local function pair(v)
  if type(v) == "table" then return v[1], v[2] end
  return v, v
end

-- every s-th entry of dim (3 or 4) of a 4-D x, n entries (starting at 1)
local function stride_dim(x, dim, s, n)
  if s == 1 then return x end
  local sh = x:shape()
  local pad = n * s - sh[dim]
  if pad > 0 then x = F.pad(x, dim == 4 and { 0, pad } or { 0, 0, 0, pad }) end
  if dim == 3 then
    x = F.narrow(x:reshape { sh[1], sh[2], n, s, sh[4] }, 4, 1, 1)
    return x:reshape { sh[1], sh[2], n, sh[4] }
  end
  x = F.narrow(x:reshape { sh[1], sh[2], sh[3], n, s }, 5, 1, 1)
  return x:reshape { sh[1], sh[2], sh[3], n }
end

-- the kh*kw shifted windows of a (padded) x, each [N, C, Ho, Wo]
local function windows(x, kh, kw, sh, sw, dh, dw)
  local s = x:shape()
  local Ho = (s[3] - dh * (kh - 1) - 1) // sh + 1
  local Wo = (s[4] - dw * (kw - 1) - 1) // sw + 1
  local out = {}
  for i = 0, kh - 1 do
    for j = 0, kw - 1 do
      local p = F.narrow(F.narrow(x, 3, i * dh + 1, (Ho - 1) * sh + 1), 4, j * dw + 1,
        (Wo - 1) * sw + 1)
      out[#out + 1] = stride_dim(stride_dim(p, 3, sh, Ho), 4, sw, Wo)
    end
  end
  return out, Ho, Wo
end

function REF.conv2d(x, w, b, o)
  o = o or {}
  local sh, sw = pair(o.stride or 1)
  local ph, pw = pair(o.padding or 0)
  local dh, dw = pair(o.dilation or 1)
  local G = o.groups or 1
  local N, C = x:shape()[1], x:shape()[2]
  local ws = w:shape()
  local Co, Cg, kh, kw = ws[1], ws[2], ws[3], ws[4]
  if ph > 0 or pw > 0 then x = F.pad(x, { pw, pw, ph, ph }) end
  local ps, Ho, Wo = windows(x, kh, kw, sh, sw, dh, dw)
  local y
  if Cg == 1 and G == C and Co == C then          -- depthwise
    for t, p in ipairs(ps) do
      local i, j = (t - 1) // kw + 1, (t - 1) % kw + 1
      local term = F.mul(p, F.narrow(F.narrow(w, 3, i, 1), 4, j, 1):reshape { 1, C, 1, 1 })
      y = y and y + term or term
    end
  else
    local L, K, Cog = Ho * Wo, kh * kw, Co // G
    local cols = {}
    for t, p in ipairs(ps) do cols[t] = p:reshape { N, C, 1, L } end
    local all = F.cat(cols, 3)                      -- [N, C, K, L]
    local outs = {}
    for g = 1, G do
      local xg = F.narrow(all, 2, (g - 1) * Cg + 1, Cg):reshape { N, Cg * K, L }
      local wg = F.narrow(w, 1, (g - 1) * Cog + 1, Cog):reshape { Cog, Cg * K }
      outs[g] = F.matmul(wg, xg)                    -- [N, Cog, L]
    end
    y = F.cat(outs, 2):reshape { N, Co, Ho, Wo }
  end
  if b then y = y + b:reshape { 1, Co, 1, 1 } end
  return y
end

local function pool_args(o)
  assert(not o.ceil_mode, "reference pools: no ceil_mode")
  local kh, kw = pair(o.kernel)
  local sh, sw = pair(o.stride or o.kernel)
  local ph, pw = pair(o.padding or 0)
  return kh, kw, sh, sw, ph, pw
end

function REF.max_pool2d(x, o)
  local kh, kw, sh, sw, ph, pw = pool_args(o)
  if ph > 0 or pw > 0 then x = F.pad(x, { pw, pw, ph, ph }, -1e30) end
  local ps, Ho, Wo = windows(x, kh, kw, sh, sw, 1, 1)
  local s = x:shape()
  local cols = {}
  for t, p in ipairs(ps) do cols[t] = p:reshape { s[1], s[2], 1, Ho * Wo } end
  return (F.max(F.cat(cols, 3), 3)):reshape { s[1], s[2], Ho, Wo }
end

local function window_sum(x, kh, kw, sh, sw, ph, pw)
  if ph > 0 or pw > 0 then x = F.pad(x, { pw, pw, ph, ph }) end
  local ps, Ho, Wo = windows(x, kh, kw, sh, sw, 1, 1)
  local y
  for _, p in ipairs(ps) do y = y and y + p or p end
  return y, Ho, Wo
end

function REF.avg_pool2d(x, o)
  local kh, kw, sh, sw, ph, pw = pool_args(o)
  local y = window_sum(x, kh, kw, sh, sw, ph, pw)
  if o.count_include_pad == false then
    local s = x:shape()
    local count = nasrt.no_grad(function()
      return (window_sum(nasrt.ones { 1, 1, s[3], s[4] }, kh, kw, sh, sw, ph, pw))
    end)
    return y / count
  end
  return F.scale(y, 1 / (kh * kw))
end

function REF.adaptive_avg_pool2d(x, size)
  assert(size == 1, "reference adaptive_avg_pool2d: only output size 1")
  return F.mean(F.mean(x, 4, true), 3, true)
end

local installed = {}
local function install_refs()
  for name, fn in pairs(REF) do
    if F[name] == nil then
      F[name] = fn
      installed[#installed + 1] = name
    end
  end
end
local function remove_refs()
  for _, name in ipairs(installed) do F[name] = nil end
  installed = {}
end

-- ------------------------------------------------------------ helpers

local function set_values(t, values)
  nasrt.no_grad(function() t:copy_(nasrt.tensor(values):reshape(t:shape())) end)
  return t
end

local function same_shape(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local function assert_shape(t, expected, what)
  local s = nasrt.is_tensor(t) and t:shape() or t
  assert(same_shape(s, expected), ("%s: shape %s, expected %s"):format(what or "",
    nasrt.shape_str(nasrt.zeros(s)), table.concat(expected, "x")))
end

local function sigmoid(v) return 1 / (1 + math.exp(-v)) end

-- gradcheck input with values in +-[0.2, 1.2]: a ReLU applied to the input
-- itself (every DARTS op starts with one) is then never within eps of its
-- kink.  Kinks inside a block (ReLU after a training-mode BN) cannot be
-- steered this way, so the configurations below were chosen to keep them
-- rare (MBConv is checked with its smooth "swish" activation; ReLU6 and the
-- hard sigmoid are checked alone, away from 0, 6 and +-3).
local function away_from_zero(shape)
  local t = nasrt.rand(shape) + 0.2
  local sign = nasrt.rand(shape):sub(0.5):scale(1e6):sigmoid()   -- ~0 or ~1
  return nasrt.no_grad(function() return t * (sign * 2 - 1) end):requires_grad(true)
end

-- CBAM input without max ties: channel 0 positive, the others negative, so
-- the max over channels of c_att * x is always channel 0 (c_att > 0); within
-- a channel the values are a shuffled grid with spacing 0.02 >> eps, so the
-- spatial max never changes under a perturbation either.
local function cbam_input(n, c, h, w)
  local vals = {}
  for b = 1, n do
    for ch = 1, c do
      local grid = {}
      for k = 1, h * w do grid[k] = 0.2 + 0.02 * k end
      for k = #grid, 2, -1 do
        local j = math.floor(nasrt.rand({}):item() * k) + 1
        grid[k], grid[j] = grid[j], grid[k]
      end
      for k = 1, h * w do vals[#vals + 1] = ch == 1 and grid[k] or -grid[k] end
    end
  end
  return nasrt.tensor(vals):reshape { n, c, h, w }:requires_grad(true)
end

-- forward shape == expected == output_shape(), and the analytic macs
-- equal the traced ones (counted leaf by leaf during a forward pass)
local function check_op(m, xshape, expected, what, skip_trace)
  local y = m(nasrt.randn(xshape))
  assert_shape(y, expected, what .. " forward")
  assert_shape(m:output_shape(xshape), expected, what .. " output_shape")
  local one = { 1, xshape[2], xshape[3], xshape[4] }
  if not skip_trace and m.macs ~= nn.Module.macs then
    assert.are.equal(nn.Module.macs(m, one), m:macs(one), what .. " macs")
  end
  return y
end

describe("nasrt.blocks", function()
  setup(install_refs)
  teardown(remove_refs)
  before_each(function() nasrt.manual_seed(11) end)

  it("reference ops used by this spec agree with the bound F ops when they exist", function()
    local x = nasrt.randn { 2, 4, 7, 7 }
    local cases = {
      { "conv2d", { x, nasrt.randn { 4, 1, 3, 3 }, nil, { stride = 2, padding = 2, dilation = 2,
                                                         groups = 4 } } },
      { "conv2d", { x, nasrt.randn { 6, 2, 3, 1 }, nasrt.randn { 6 }, { padding = { 1, 0 }, groups = 2 } } },
      { "max_pool2d", { x, { kernel = { 3, 3 }, stride = { 2, 2 }, padding = { 1, 1 } } } },
      { "avg_pool2d", { x, { kernel = 3, stride = 1, padding = 1, count_include_pad = false } } },
      { "avg_pool2d", { x, { kernel = 2, stride = 2 } } },
      { "adaptive_avg_pool2d", { x, 1 } },
    }
    for _, c in ipairs(cases) do
      local f = F[c[1]]
      if f ~= REF[c[1]] then
        assert.allclose(REF[c[1]](table.unpack(c[2], 1, 4)), f(table.unpack(c[2], 1, 4)), 1e-4)
      end
    end
    -- and the conv reference matches nn_spec's hand computation
    local w = nasrt.tensor { { { { 1, 2 }, { -1, 0.5 } } } }
    local xx = nasrt.tensor { { { { 0, 1, 2 }, { 3, 4, 5 }, { 6, 7, 8 } } } }
    assert.allclose(REF.conv2d(xx, w, nasrt.tensor { 0.25 }), { { { { 1.25, 3.75 }, { 8.75, 11.25 } } } }, 1e-6)
  end)

  describe("DARTS ops", function()
    it("lists the 8 primitives in DARTS' index order, each with a constructor", function()
      assert.are.same({ "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
        "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5" }, blocks.DARTS_PRIMITIVES)
      for _, name in ipairs(blocks.DARTS_PRIMITIVES) do
        assert.is_function(blocks.DARTS_OPS[name], name)
      end
      -- AGNAS: the same 8 ops, none last
      assert.are.same({ "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
        "skip_connect", "avg_pool_3x3", "max_pool_3x3", "none" }, blocks.AGNAS_PRIMITIVES)
    end)

    it("keep [N,C,H,W] at stride 1 and halve H,W at stride 2 (plain and search form)", function()
      for _, name in ipairs(blocks.DARTS_PRIMITIVES) do
        for _, stride in ipairs { 1, 2 } do
          local expected = { 2, 8, 8 // stride, 8 // stride }
          for _, affine in ipairs { true, false } do
            check_op(blocks.DARTS_OPS[name](8, stride, affine), { 2, 8, 8, 8 }, expected,
              ("%s stride %d affine %s"):format(name, stride, affine))
          end
          check_op(blocks.darts_search_op(name, 8, stride), { 2, 8, 8, 8 }, expected,
            ("search %s stride %d"):format(name, stride))
        end
      end
      for _, name in ipairs { "sep_conv_7x7", "conv_7x1_1x7" } do
        check_op(blocks.DARTS_OPS[name](4, 2, true), { 1, 4, 8, 8 }, { 1, 4, 4, 4 }, name)
      end
    end)

    it("have the hand-counted numbers of parameters at C = 16", function()
      -- BN(16) with affine: gamma + beta = 32 parameters
      local counts = {
        none = { 0, 0 }, max_pool_3x3 = { 0, 0 }, avg_pool_3x3 = { 0, 0 },
        -- skip_connect stride 1 = identity; stride 2 = FactorizedReduce, counted below
        skip_connect = { 0, 0 },
        -- two passes of [depthwise 16*3*3 = 144, pointwise 16*16 = 256] = 2*400 = 800;
        -- affine adds two BN(16): 2*32 = 64 -> 864
        sep_conv_3x3 = { 800, 864 },
        -- two passes of [16*5*5 = 400, 256] = 2*656 = 1312; +64 -> 1376
        sep_conv_5x5 = { 1312, 1376 },
        -- one pass: 144 + 256 = 400; +32 -> 432
        dil_conv_3x3 = { 400, 432 },
        -- one pass: 400 + 256 = 656; +32 -> 688
        dil_conv_5x5 = { 656, 688 },
      }
      for name, c in pairs(counts) do
        assert.are.equal(c[1], blocks.DARTS_OPS[name](16, 1, false):num_parameters(), name)
        assert.are.equal(c[2], blocks.DARTS_OPS[name](16, 1, true):num_parameters(), name)
        if name ~= "skip_connect" then  -- the stride changes no weight
          assert.are.equal(c[1], blocks.DARTS_OPS[name](16, 2, false):num_parameters(), name)
        end
      end
      -- FactorizedReduce(16, 16): two 1x1 convs 16 -> 8: 2*(16*8) = 256; +BN(16) 32 -> 288
      assert.are.equal(256, blocks.DARTS_OPS.skip_connect(16, 2, false):num_parameters())
      assert.are.equal(288, blocks.DARTS_OPS.skip_connect(16, 2, true):num_parameters())
      -- the search form's pool BN is affine=false: buffers only
      assert.are.equal(0, blocks.darts_search_op("max_pool_3x3", 16, 1):num_parameters())
      assert.are.equal(3, #blocks.darts_search_op("avg_pool_3x3", 16, 1):buffers())
      -- ReLUConvBN(16, 32, 1x1): 16*32 = 512, no bias; +BN(32) 64 -> 576
      assert.are.equal(512, blocks.ReLUConvBN(16, 32, 1, 1, 0, false):num_parameters())
      assert.are.equal(576, blocks.ReLUConvBN(16, 32, 1, 1, 0, true):num_parameters())
    end)

    it("count the MACs of sep_conv_3x3 by hand", function()
      -- per pass at 32x32: depthwise 16*9*1024 = 147456, pointwise 16*16*1024 = 262144;
      -- two passes = 2 * 409600 = 819200 (stride 2: the first depthwise at 16x16 = 36864,
      -- then everything else at 16x16: 65536 + 36864 + 65536 = 204800)
      local op = blocks.DARTS_OPS.sep_conv_3x3(16, 1, false)
      assert.are.equal(819200, op:macs { 1, 16, 32, 32 })
      assert.are.equal(2 * 819200, op:flops { 1, 16, 32, 32 })
      assert.are.equal(204800, blocks.DARTS_OPS.sep_conv_3x3(16, 2, false):macs { 1, 16, 32, 32 })
    end)

    it("are built in the documented layer order", function()
      local sep = blocks.DARTS_OPS.sep_conv_3x3(4, 2, false)
      local kinds = {}
      for i = 1, #sep do kinds[i] = sep[i].__name end
      assert.are.same({ "ReLU", "Conv2d", "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "Conv2d",
        "BatchNorm2d" }, kinds)
      assert.are.same({ 2, 2 }, sep[2].stride)        -- only the first depthwise is strided
      assert.are.same({ 1, 1 }, sep[6].stride)
      assert.are.equal(4, sep[2].groups)
      assert.is_nil(sep[2].bias)
      assert.is_false(sep[4].affine)
      local dil = blocks.DARTS_OPS.dil_conv_5x5(4, 1, true)
      assert.are.same({ 2, 2 }, dil[2].dilation)
      assert.are.same({ 4, 4 }, dil[2].padding)
      local avg = blocks.DARTS_OPS.avg_pool_3x3(4, 1)
      assert.is_false(avg.count_include_pad)
    end)

    it("FactorizedReduce concatenates [conv on x, conv on x shifted by one pixel]", function()
      local fr = blocks.FactorizedReduce(2, 4, false):eval()  -- BN: running 0/1, y = x/sqrt(1+eps)
      -- identity 1x1 weights: branch A = relu(x)[::2, ::2], branch B = relu(x)[1::2, 1::2]
      set_values(fr.conv_1.weight, { 1, 0, 0, 1 })
      set_values(fr.conv_2.weight, { 1, 0, 0, 1 })
      local x0, x1 = {}, {}
      for r = 0, 3 do
        x0[r + 1], x1[r + 1] = {}, {}
        for c = 0, 3 do x0[r + 1][c + 1], x1[r + 1][c + 1] = 4 * r + c, 16 + 4 * r + c end
      end
      x0[1][1] = -1                                        -- removed by the ReLU
      local y = fr(nasrt.tensor { { x0, x1 } })
      local k = 1 / math.sqrt(1 + 1e-5)
      assert.allclose(y, nasrt.tensor { { {                -- channel order: A0, A1, B0, B1
        { 0, 2 }, { 8, 10 } }, { { 16, 18 }, { 24, 26 } },
        { { 5, 7 }, { 13, 15 } }, { { 21, 23 }, { 29, 31 } } } } * k, 1e-6)
      assert.has_error(function() fr(nasrt.randn { 1, 2, 5, 5 }) end)  -- DARTS: even sizes only
      -- NB201 variant: pads right/bottom first, so odd sizes work
      local nb = blocks.FactorizedReduce(1, 2, { nb201 = true, affine = true }):eval()
      set_values(nb.conv_1.weight, { 1 })
      set_values(nb.conv_2.weight, { 1 })
      local z = nb(nasrt.tensor { { { { 1, 2, 3 }, { 4, 5, 6 }, { 7, 8, 9 } } } })
      -- A = x[0::2, 0::2] = {1,3,7,9}; B = pad(x)[1::2, 1::2] = {5, 0, 0, 0}
      assert.allclose(z, nasrt.tensor { { { { 1, 3 }, { 7, 9 } }, { { 5, 0 }, { 0, 0 } } } } * k, 1e-6)
    end)

    it("pool + BN: avg excludes the padding, BN normalises with batch statistics", function()
      local op = blocks.darts_search_op("avg_pool_3x3", 1, 1)   -- training mode
      local x = nasrt.tensor { { { { 1, 2, 3 }, { 4, 5, 6 }, { 7, 8, 9 } } } }
      -- avg over the real pixels of each 3x3 window:
      --   corner (1+2+4+5)/4 = 3, edge (1+2+3+4+5+6)/6 = 3.5, centre 45/9 = 5, ...
      --   pooled = 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7 (= 3 + 0.5 i, i = 0..8)
      -- batch mean 5, biased var = 0.25 * sum((i-4)^2)/9 = 0.25 * 60/9 = 5/3
      local d = math.sqrt(5 / 3 + 1e-5)
      local expected = {}
      for i = 0, 8 do expected[i + 1] = (3 + 0.5 * i - 5) / d end
      assert.allclose(op(x):reshape { 9 }, expected, 1e-5)
      -- running stats: mean 0.9*0 + 0.1*5 = 0.5; var 0.9*1 + 0.1*(0.25*60/8 = 1.875) = 1.0875
      local bn = op[2]
      assert.allclose(bn.running_mean, { 0.5 }, 1e-6)
      assert.allclose(bn.running_var, { 1.0875 }, 1e-6)
      -- max pool 3x3 pad 1: window maxima 5 6 6 / 8 9 9 / 8 9 9
      local mp = blocks.DARTS_OPS.max_pool_3x3(1, 1)
      assert.allclose(mp(x), { { { { 5, 6, 6 }, { 8, 9, 9 }, { 8, 9, 9 } } } })
      -- stride 2 keeps the windows centred on rows/cols 0 and 2
      assert.allclose(blocks.DARTS_OPS.avg_pool_3x3(1, 2)(x), { { { { 3, 4 }, { 6, 7 } } } }, 1e-6)
    end)

    it("none is zeros, subsampled at stride 2", function()
      local x = nasrt.randn { 2, 3, 5, 5 }
      local y = blocks.DARTS_OPS.none(3, 2)(x)
      assert_shape(y, { 2, 3, 3, 3 })
      assert.are.equal(0, y:abs():sum():item())
      assert.are.equal(x, blocks.DARTS_OPS.skip_connect(3, 1)(x))
    end)

    it("pass the gradient check (SepConv, training-mode BN)", function()
      local op = blocks.SepConv(2, 3, 3, 2, 1, true)
      local x = away_from_zero { 2, 2, 6, 6 }
      local ok, msg = H.gradcheck(function(xx) return op(xx) end, { x, op[2].weight, op[7].weight })
      assert(ok, msg)
      local dil = blocks.DARTS_OPS.dil_conv_3x3(2, 1, false)
      ok, msg = H.gradcheck(function(xx) return dil(xx) end,
        { away_from_zero { 2, 2, 5, 5 }, dil[3].weight })
      assert(ok, msg)
      local fr = blocks.FactorizedReduce(2, 4, true)
      ok, msg = H.gradcheck(function(xx) return fr(xx) end, { away_from_zero { 2, 2, 4, 4 } })
      assert(ok, msg)
    end)
  end)

  describe("NAS-Bench-201 ops", function()
    it("lists the 5 ops in NB201's order", function()
      assert.are.same({ "none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3" },
        blocks.NB201_PRIMITIVES)
    end)

    it("give the right shapes at stride 1 and 2, also when the width changes", function()
      for _, name in ipairs(blocks.NB201_PRIMITIVES) do
        for _, affine in ipairs { true, false } do
          local ctor = blocks.NB201_OPS[name]
          check_op(ctor(8, 8, 1, affine, true), { 2, 8, 6, 6 }, { 2, 8, 6, 6 }, name .. " s1")
          check_op(ctor(8, 8, 2, affine, true), { 2, 8, 6, 6 }, { 2, 8, 3, 3 }, name .. " s2")
          check_op(ctor(8, 16, 2, affine, false), { 2, 8, 7, 7 }, { 2, 16, 4, 4 }, name .. " 8->16 s2")
          check_op(ctor(8, 16, 1, affine, false), { 2, 8, 5, 5 }, { 2, 16, 5, 5 }, name .. " 8->16 s1")
        end
      end
    end)

    it("use ReLU-Conv-BN with bias = not affine and pass track_running_stats", function()
      local op = blocks.NB201_OPS.nor_conv_3x3(16, 16, 1, false, false)
      assert.are.same({ "ReLU", "Conv2d", "BatchNorm2d" }, { op[1].__name, op[2].__name, op[3].__name })
      assert.is_not_nil(op[2].bias)
      assert.is_false(op[3].affine)
      assert.is_false(op[3].track_running_stats)
      assert.are.equal(0, #op:buffers())
      local op2 = blocks.NB201_OPS.nor_conv_3x3(16, 16, 1, true, true)
      assert.is_nil(op2[2].bias)
      -- nor_conv_3x3: 16*16*9 = 2304 (+16 bias when affine=false: 2320; +BN 32 when true: 2336)
      assert.are.equal(2320, op:num_parameters())
      assert.are.equal(2336, op2:num_parameters())
      -- nor_conv_1x1: 16*16 = 256 (+16 bias = 272; or +32 BN = 288)
      assert.are.equal(272, blocks.NB201_OPS.nor_conv_1x1(16, 16, 1, false, true):num_parameters())
      assert.are.equal(288, blocks.NB201_OPS.nor_conv_1x1(16, 16, 1, true, true):num_parameters())
      for _, name in ipairs { "none", "skip_connect", "avg_pool_3x3" } do
        assert.are.equal(0, blocks.NB201_OPS[name](16, 16, 1, true, true):num_parameters(), name)
      end
      -- skip 16 -> 32 stride 2 (affine): convs 16->16 and 16->16 = 512; BN(32) 64 -> 576
      assert.are.equal(576, blocks.NB201_OPS.skip_connect(16, 32, 2, true, true):num_parameters())
      -- affine=false: 512 + 2*16 biases = 544, no BN parameters
      assert.are.equal(544, blocks.NB201_OPS.skip_connect(16, 32, 2, false, true):num_parameters())
      -- avg_pool 16 -> 32: a 1x1 ReLUConvBN first: 512 + 64 = 576; and no BN after the pool
      local pool = blocks.NB201_OPS.avg_pool_3x3(16, 32, 1, true, true)
      assert.are.equal(576, pool:num_parameters())
      assert.are.equal("AvgPool2d", pool[-1].__name)
    end)

    it("ResNetBasicblock: branch + shortcut, hand-counted", function()
      -- 16 -> 32 stride 2: conv_a 16*32*9 = 4608 + BN 64; conv_b 32*32*9 = 9216 + BN 64;
      -- shortcut avgpool + 1x1 16*32 = 512 -> 4672 + 9280 + 512 = 14464
      local b = blocks.ResNetBasicblock(16, 32, 2)
      assert.are.equal(14464, b:num_parameters())
      check_op(b, { 2, 16, 8, 8 }, { 2, 32, 4, 4 }, "resnet s2")
      check_op(blocks.ResNetBasicblock(8, 8, 1), { 2, 8, 5, 5 }, { 2, 8, 5, 5 }, "resnet s1")
      check_op(blocks.ResNetBasicblock(8, 16, 1), { 2, 8, 5, 5 }, { 2, 16, 5, 5 }, "resnet 8->16")
      -- identity shortcut: with conv_b's BN gamma = 0 the block returns its input
      local id = blocks.ResNetBasicblock(4, 4, 1):eval()
      nasrt.no_grad(function() id.conv_b[3].weight:zero_() end)
      local x = nasrt.randn { 1, 4, 3, 3 }
      assert.allclose(id(x), x, 1e-6)
    end)
  end)

  describe("MBConv", function()
    it("has the hand-counted parameters (cin = cout = 16, e = 6, k = 3)", function()
      -- mid = 16*6 = 96
      -- expand 1x1 16*96 = 1536, BN(96) 192; depthwise 96*3*3 = 864, BN 192;
      -- project 96*16 = 1536, BN(16) 32.  Total 1536+192+864+192+1536+32 = 4352
      local m = blocks.MBConv(16, 16, 3, 1, 6)
      assert.are.equal(96, m.mid)
      assert.are.equal(4352, m:num_parameters())
      -- SE (AttentiveNAS): se_mid = make_divisible(96 // 4 = 24, 8) = 24;
      -- reduce 96*24 + 24 bias = 2328, expand 24*96 + 96 bias = 2400 -> +4728 = 9080
      local mse = blocks.MBConv(16, 16, 3, 1, 6, { se = true })
      assert.are.equal(24, mse.se.mid)
      assert.are.equal(9080, mse:num_parameters())
      -- e = 1: no expand conv; depthwise 16*9 = 144 + BN 32, project 16*24 = 384 + BN 48 = 608
      local m1 = blocks.MBConv(16, 24, 3, 2, 1)
      assert.is_nil(m1.expand)
      assert.are.equal(608, m1:num_parameters())
      -- k = 7, e = 3: mid 48; 16*48 = 768 + 96, 48*49 = 2352 + 96, 48*32 = 1536 + 64 = 4912
      assert.are.equal(4912, blocks.MBConv(16, 32, 7, 2, 3):num_parameters())
    end)

    it("keeps the documented layer order, activation and residual rule", function()
      local m = blocks.MBConv(8, 8, 5, 1, 3)
      assert.are.same({ "Conv2d", "BatchNorm2d", "ReLU6" },
        { m.expand[1].__name, m.expand[2].__name, m.expand[3].__name })
      assert.are.same({ 5, 5 }, m.depthwise[1].kernel_size)
      assert.are.same({ 2, 2 }, m.depthwise[1].padding)
      assert.are.equal(24, m.depthwise[1].groups)
      assert.are.equal(2, #m.project)                       -- project conv + BN, no activation
      assert.is_true(m.use_residual)
      assert.is_false(blocks.MBConv(8, 8, 3, 2, 3).use_residual)
      assert.is_false(blocks.MBConv(8, 16, 3, 1, 3).use_residual)
      assert.are.equal("Swish", blocks.MBConv(8, 8, 3, 1, 3, { act = "swish" }).depthwise[3].__name)
      -- residual: with the project BN's gamma = 0 the block is the identity
      nasrt.no_grad(function() m.project[2].weight:zero_() end)
      m:eval()
      local x = nasrt.randn { 2, 8, 4, 4 }
      assert.allclose(m(x), x, 1e-6)
    end)

    it("gives the right shapes and MACs at stride 1 and 2, with and without SE", function()
      for _, se in ipairs { false, true } do
        check_op(blocks.MBConv(8, 8, 3, 1, 6, { se = se }), { 2, 8, 8, 8 }, { 2, 8, 8, 8 }, "mb s1")
        check_op(blocks.MBConv(8, 16, 5, 2, 3, { se = se }), { 2, 8, 8, 8 }, { 2, 16, 4, 4 }, "mb s2")
        check_op(blocks.MBConv(8, 16, 7, 2, 1, { se = se }), { 2, 8, 7, 7 }, { 2, 16, 4, 4 }, "mb e1")
      end
      -- MACs of MBConv(16, 16, k3, s1, e6) at 8x8 (per image):
      --   expand 16*96*64 = 98304, depthwise 96*9*64 = 55296, project 96*16*64 = 98304
      --   = 251904; SE adds 96*24 + 24*96 = 4608 -> 256512
      assert.are.equal(251904, blocks.MBConv(16, 16, 3, 1, 6):macs { 1, 16, 8, 8 })
      assert.are.equal(256512, blocks.MBConv(16, 16, 3, 1, 6, { se = true }):macs { 1, 16, 8, 8 })
    end)

    it("passes the gradient check with SE", function()
      -- swish: ReLU6 right after a training-mode BN puts some of the many
      -- normalised values within eps of 0 for most inputs (see away_from_zero)
      local m = blocks.MBConv(4, 4, 3, 1, 2, { se = true, se_mid = 2, act = "swish" })
      local ok, msg = H.gradcheck(function(xx) return m(xx) end,
        { away_from_zero { 2, 4, 4, 4 }, m.expand[1].weight, m.se.fc1.weight, m.se.fc2.bias })
      assert(ok, msg)
      local m2 = blocks.MBConv(4, 6, 3, 2, 3, { se = true, se_mid = 2, act = "swish" })
      ok, msg = H.gradcheck(function(xx) return m2(xx) end, { away_from_zero { 2, 4, 5, 5 } })
      assert(ok, msg)
      -- the piecewise activations alone, on values away from their kinks
      local v = nasrt.tensor { -4, -2.5, -1, -0.3, 0.4, 1.7, 2.6, 3.5, 5.2, 6.8, 8 }
      for _, name in ipairs { "relu6", "hsigmoid", "hswish", "swish" } do
        local act = blocks.activation(name)
        ok, msg = H.gradcheck(function(xx) return act(xx) end, { v:clone():requires_grad(true) })
        assert(ok, name .. ": " .. tostring(msg))
      end
      assert.allclose(blocks.relu6(v), { 0, 0, 0, 0, 0.4, 1.7, 2.6, 3.5, 5.2, 6, 6 }, 1e-6)
      assert.allclose(blocks.hsigmoid(v), { 0, 0.5 / 6, 2 / 6, 2.7 / 6, 3.4 / 6, 4.7 / 6, 5.6 / 6,
        1, 1, 1, 1 }, 1e-6)
    end)

    it("make_divisible follows AttentiveNAS' rule", function()
      assert.are.equal(24, blocks.make_divisible(24, 8))
      assert.are.equal(16, blocks.make_divisible(13, 8))    -- (13+4)//8*8 = 16
      assert.are.equal(16, blocks.make_divisible(11.9, 8))  -- (15.9)//8*8 = 8 < 0.9*11.9 -> +8
      assert.are.equal(9, blocks.make_divisible(2, 8))      -- max(1, 0) = 1 < 1.8 -> 1 + 8
      assert.are.equal(0, blocks.py_round(0.5))             -- half to even, as Python
      assert.are.equal(2, blocks.py_round(2.5))
      assert.are.equal(4, blocks.py_round(3.5))
    end)
  end)

  describe("ShuffleNetV2 choice blocks (SPOS)", function()
    it("lists the four choices in gene order", function()
      assert.are.same({ "shufflenet_3x3", "shufflenet_5x5", "shufflenet_7x7", "xception_3x3" },
        blocks.SPOS_CHOICES)
    end)

    it("shuffle+split sends even channels to the shortcut and odd ones to the branch", function()
      local vals = {}
      for c = 0, 7 do vals[c + 1] = { { c, c + 0.5 } } end
      local x = nasrt.tensor { vals }                       -- [1, 8, 1, 2], channel c holds c
      local even, odd = blocks.shuffle_split(x)
      assert.allclose(even:reshape { 4, 2 }, { { 0, 0.5 }, { 2, 2.5 }, { 4, 4.5 }, { 6, 6.5 } })
      assert.allclose(odd:reshape { 4, 2 }, { { 1, 1.5 }, { 3, 3.5 }, { 5, 5.5 }, { 7, 7.5 } })
      -- in a stride-1 block the first half of the output is the even channels, untouched
      local b = blocks.ShuffleNetBlock(4, 8, 4, 3, 1)
      local y = b(x)
      assert.allclose(F.narrow(y, 2, 1, 4):reshape { 4, 2 }, even:reshape { 4, 2 })
      -- general shuffle, 2 groups: output channel j*2 + i = input channel i*4 + j
      assert.allclose(blocks.channel_shuffle(x, 2):reshape { 8, 2 },
        { { 0, 0.5 }, { 4, 4.5 }, { 1, 1.5 }, { 5, 5.5 }, { 2, 2.5 }, { 6, 6.5 }, { 3, 3.5 },
          { 7, 7.5 } })
    end)

    it("give oup channels at stride 1 and 2 for all four choices", function()
      for _, name in ipairs(blocks.SPOS_CHOICES) do
        local ctor = blocks.SPOS_OPS[name]
        -- stride 1 (SPOS: inp = C/2): 16 channels in, 16 out
        check_op(ctor(8, 16, 8, 1), { 2, 16, 8, 8 }, { 2, 16, 8, 8 }, name .. " s1")
        -- stride 2: 16 in, 32 out
        check_op(ctor(16, 32, 16, 2, { affine = false }), { 2, 16, 8, 8 }, { 2, 32, 4, 4 },
          name .. " s2")
      end
    end)

    it("have the hand-counted parameters", function()
      -- Shufflenet k3 stride 1 (inp 8, oup 16, mid 8), affine=false:
      --   1x1 8*8 = 64, dw 8*9 = 72, 1x1 8*(16-8) = 64 -> 200
      assert.are.equal(200, blocks.ShuffleNetBlock(8, 16, 8, 3, 1, { affine = false }):num_parameters())
      -- affine BN adds BN(8) x 3 = 48 -> 248
      assert.are.equal(248, blocks.ShuffleNetBlock(8, 16, 8, 3, 1):num_parameters())
      -- k5: 64 + 8*25 = 200 + 64 -> 328; k7: 64 + 8*49 = 392 + 64 -> 520
      assert.are.equal(328, blocks.ShuffleNetBlock(8, 16, 8, 5, 1, { affine = false }):num_parameters())
      assert.are.equal(520, blocks.ShuffleNetBlock(8, 16, 8, 7, 1, { affine = false }):num_parameters())
      -- k3 stride 2 (inp 16, oup 32, mid 16): main 16*16 = 256 + 16*9 = 144 + 16*16 = 256 = 656;
      --   projection dw 16*9 = 144 + 1x1 16*16 = 256 = 400 -> 1056
      assert.are.equal(1056, blocks.ShuffleNetBlock(16, 32, 16, 3, 2, { affine = false }):num_parameters())
      -- Xception stride 1: 3 x [dw 8*9 = 72, 1x1 8*8 = 64] = 408
      assert.are.equal(408, blocks.ShuffleXception(8, 16, 8, 1, { affine = false }):num_parameters())
      -- Xception stride 2: main 3 x [144, 256] = 1200, projection 400 -> 1600
      assert.are.equal(1600, blocks.ShuffleXception(16, 32, 16, 2, { affine = false }):num_parameters())
      -- SPOS' supernet BN has no gamma/beta
      for _, m in ipairs(blocks.ShuffleXception(8, 16, 8, 1, { affine = false }):modules()) do
        if m.__name == "BatchNorm2d" then assert.is_false(m.affine) end
      end
    end)

    it("check their input widths", function()
      assert.has_error(function() blocks.ShuffleNetBlock(3, 8, 4, 3, 1) end)  -- 6 channels: not /4
      local b = blocks.ShuffleNetBlock(4, 8, 4, 3, 1)
      assert.has_error(function() b(nasrt.randn { 1, 4, 4, 4 }) end)
    end)
  end)

  describe("attention modules", function()
    it("list Att-DARTS' candidates in order and keep the shape", function()
      assert.are.same({ "Identity", "SE", "BAM", "CBAM", "GE_theta-plus", "DoubleAttention" },
        blocks.ATT_PRIMITIVES)
      for _, name in ipairs(blocks.ATT_PRIMITIVES) do
        for _, hw in ipairs { 8, 4 } do       -- the post-op size at stride 1 and 2
          check_op(blocks.ATT_OPS[name](16, hw, hw), { 2, 16, hw, hw }, { 2, 16, hw, hw },
            name, name == "DoubleAttention")
        end
      end
    end)

    it("have the hand-counted parameters at c = 16 (r = 16: one hidden unit)", function()
      -- SE: 16*1 + 1*16 = 32 (no bias)
      assert.are.equal(32, blocks.ATT_OPS.SE(16):num_parameters())
      -- CBAM: MLP 16*1+1 + 1*16+16 = 49; spatial 7x7 conv 2*49 = 98 (no bias) + BN(1) 2 -> 149
      assert.are.equal(149, blocks.ATT_OPS.CBAM(16):num_parameters())
      -- BAM: channel FC 16+1, BN1d 2, FC 16+16 = 51;
      --   spatial 1x1 16+1, BN 2, 2 x [3x3 1*1*9+1, BN 2] = 24, 1x1 1+1 = 2 -> 45; total 96
      assert.are.equal(96, blocks.ATT_OPS.BAM(16):num_parameters())
      -- GE_theta-plus at 4x4: depthwise 16*4*4 = 256, BN 32, 1x1 16*1 + 1*16 = 32 -> 320
      assert.are.equal(320, blocks.ATT_OPS["GE_theta-plus"](16, 4, 4):num_parameters())
      -- DoubleAttention (c_m = c_n = 4): 3 x (16*4 + 4) = 204, convZ 4*16 + 16 = 80 -> 284
      assert.are.equal(284, blocks.ATT_OPS.DoubleAttention(16):num_parameters())
      -- AGNAS micro, 8 ops of C = 4 (32 channels, ratio 8 -> 4 hidden): 32*4 + 4*32 = 256
      assert.are.equal(256, blocks.AGNASAttention(4, 8):num_parameters())
    end)

    it("SE matches a hand computation with set weights", function()
      local se = blocks.SE(2, { mid = 1 })
      set_values(se.fc1.weight, { 1, 1 })
      set_values(se.fc2.weight, { 2, -1 })
      local x = nasrt.tensor { { { { 1, 3 } }, { { -2, 0 } } } }   -- [1, 2, 1, 2]
      -- GAP = (2, -1); fc1: 2 - 1 = 1; relu 1; fc2: (2, -1); sigmoid
      local a, b = sigmoid(2), sigmoid(-1)
      assert.allclose(se(x), { { { { a, 3 * a } }, { { -2 * b, 0 } } } }, 1e-6)
      assert.allclose(se:mask(x):reshape { 2 }, { a, b }, 1e-6)
      -- hard-sigmoid gate: relu6(v + 3)/6 -> (5/6, 2/6)
      local hse = blocks.SE(2, { mid = 1, gate = "hsigmoid" })
      set_values(hse.fc1.weight, { 1, 1 })
      set_values(hse.fc2.weight, { 2, -1 })
      assert.allclose(hse:mask(x):reshape { 2 }, { 5 / 6, 2 / 6 }, 1e-6)
    end)

    it("AGNAS attention matches a hand computation with set weights", function()
      local att = blocks.AGNASAttention(1, 2, { ratio = 2 })   -- 2 candidates of 1 channel
      set_values(att.fc1.weight, { 1, 1 })
      set_values(att.fc2.weight, { 2, -1 })
      local o1 = nasrt.tensor { { { { 1, 3 } } }, { { { 0, 2 } } } }   -- [2, 1, 1, 2]
      local o2 = nasrt.tensor { { { { -2, 0 } } }, { { { 4, 4 } } } }
      -- sample 1: GAP (2, -1) -> fc1 1 -> fc2 (2, -1) -> (s(2), s(-1))
      -- sample 2: GAP (1, 4) -> fc1 5 -> fc2 (10, -5) -> (s(10), s(-5))
      local w = { { sigmoid(2), sigmoid(-1) }, { sigmoid(10), sigmoid(-5) } }
      local out, y = att:mix { o1, o2 }
      assert.allclose(y, w, 1e-6)
      assert.allclose(out, { { { { w[1][1] - 2 * w[1][2], 3 * w[1][1] } } },
                             { { { 4 * w[2][2], 2 * w[2][1] + 4 * w[2][2] } } } }, 1e-6)
      -- forward on the concatenation gives the same weights as [N, nC, 1, 1]
      assert.allclose(att(F.cat({ o1, o2 }, 2)), nasrt.tensor(w):reshape { 2, 2, 1, 1 }, 1e-6)
      -- per-op score = sum over batch and the op's channels
      local sc = blocks.agnas_scores(y, 2)
      assert.is_true(math.abs(sc[1] - (w[1][1] + w[2][1])) < 1e-6)
      assert.is_true(math.abs(sc[2] - (w[1][2] + w[2][2])) < 1e-6)
      assert_shape(out, { 2, 1, 1, 2 })
    end)

    it("AGNAS attention: shapes, ratio and cost", function()
      local att = blocks.AGNASAttention(16, 8)                 -- micro: ratio 8, 128 -> 16
      assert.are.equal(16, att.hidden)
      local list = {}
      for i = 1, 8 do list[i] = nasrt.randn { 2, 16, 4, 4 } end
      local out, y = att:mix(list)
      assert_shape(out, { 2, 16, 4, 4 })
      assert_shape(y, { 2, 128 })
      assert_shape(att(F.cat(list, 2)), { 2, 128, 1, 1 })
      assert.are.equal(2 * 128 * 16, att:macs { 1, 128, 4, 4 })
      assert.are.equal(224 // 16, blocks.AGNASAttention(32, 7, { ratio = 16 }).hidden)  -- macro
      assert.has_error(function() att:mix { list[1] } end)
    end)

    it("AGNAS mix equals upstream's concat -> weights -> scale -> slice sum", function()
      local att = blocks.AGNASAttention(3, 4, { ratio = 4 })
      local list = {}
      for i = 1, 4 do list[i] = nasrt.randn { 2, 3, 5, 5 } end
      local cat = F.cat(list, 2)
      local prod = cat * att(cat)
      local ref = F.narrow(prod, 2, 1, 3)
      for i = 2, 4 do ref = ref + F.narrow(prod, 2, 3 * i - 2, 3) end
      local out = att:mix(list)
      assert.allclose(out, ref, 1e-5)
      -- the same through the unfused fallback used when the core lacks F.attn_sum
      local fused = F.attn_sum
      F.attn_sum = nil
      local ok, out2 = pcall(att.mix, att, list)
      F.attn_sum = fused
      assert(ok, out2)
      assert.allclose(out2, ref, 1e-5)
    end)

    it("CBAM pools [max, mean] over channels into a 7x7 conv", function()
      local m = blocks.CBAM(4, { reduction = 2 })
      assert.are.same({ 7, 7 }, m.spatial_conv.kernel_size)
      assert.are.same({ 3, 3 }, m.spatial_conv.padding)
      assert.is_nil(m.spatial_conv.bias)
      assert.are.equal(0.01, m.spatial_bn.momentum)
      -- channel attention alone (no_spatial) with zeroed MLP: sigmoid(0 + 0 + biases 0)
      local c = blocks.CBAM(4, { reduction = 2, no_spatial = true })
      for _, p in ipairs(c:parameters()) do nasrt.no_grad(function() p:zero_() end) end
      local x = nasrt.randn { 1, 4, 3, 3 }
      assert.allclose(c(x), x * 0.5, 1e-6)
    end)

    it("BAM's mask is 1 + sigmoid(channel gate x spatial gate)", function()
      local m = blocks.BAM(16):eval()
      -- zero the last layer of both gates: both gates = 0 -> mask 1 + sigmoid(0) = 1.5
      nasrt.no_grad(function()
        for _, g in ipairs { m.channel_gate[-1], m.spatial_gate[-1] } do
          g.weight:zero_()
          g.bias:zero_()
        end
      end)
      local x = nasrt.randn { 2, 16, 4, 4 }
      assert.allclose(m(x), x * 1.5, 1e-6)
      local sg = m.spatial_gate
      assert.are.same({ 4, 4 }, sg[4].dilation)
      assert.are.same({ 4, 4 }, sg[4].padding)
    end)

    it("pass the gradient check (SE, CBAM, BAM, AGNAS, GE, DoubleAttention)", function()
      local cases = {
        { blocks.SE(4, { reduction = 2 }), { 2, 4, 3, 3 } },
        { blocks.CBAM(4, { reduction = 2 }), { 2, 4, 5, 5 } },
        -- batch 4: BatchNorm1d over a batch of 2 or 3 is nearly degenerate.  BAM's
        -- ReLUs sit after training-mode BNs; with other seeds about 1 in 20 inputs
        -- puts one within eps of its kink (the same check with smooth activations
        -- passed 40 seeds of 40), so keep the fixed seed of before_each
        { blocks.BAM(8, { reduction = 4, dilation = 1 }), { 4, 8, 3, 3 } },
        { blocks.GEThetaPlus(4, 3, { reduction = 2 }), { 3, 4, 3, 3 } },
        { blocks.DoubleAttention(4), { 2, 4, 3, 3 } },
      }
      for _, c in ipairs(cases) do
        local m = c[1]
        local inputs = { m.__name == "CBAM" and cbam_input(table.unpack(c[2])) or away_from_zero(c[2]) }
        local ps = m:parameters()
        inputs[2], inputs[3] = ps[1], ps[#ps]
        local ok, msg = H.gradcheck(function(xx) return m(xx) end, inputs)
        assert(ok, m.__name .. ": " .. tostring(msg))
      end
      local att = blocks.AGNASAttention(3, 4, { ratio = 4 })
      local ins = { away_from_zero { 2, 3, 3, 3 }, away_from_zero { 2, 3, 3, 3 },
                    away_from_zero { 2, 3, 3, 3 }, away_from_zero { 2, 3, 3, 3 },
                    att.fc1.weight, att.fc2.weight }
      local ok, msg = H.gradcheck(function(a, b, c, d) return (att:mix { a, b, c, d }) end, ins)
      assert(ok, msg)
    end)
  end)

  it("is reachable as nasrt.blocks", function()
    assert.are.equal(blocks, nasrt.blocks)
  end)
end)
