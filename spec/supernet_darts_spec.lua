-- Specs of nasrt.supernet's differentiable families (darts.lua): the DARTS
-- search network (softmax / sigmoid / Gumbel), AGNAS micro, Att-DARTS,
-- genotypes (derivation, text, DOT) and the discrete evaluation network.
local nasrt = require "nasrt"
local H = require "helpers"
local S = nasrt.supernet
local F = nasrt.F
local blocks = nasrt.blocks

local PRIMS = blocks.DARTS_PRIMITIVES

-- Parameter counts of the PyTorch reference (bench/torch_darts_step.py's
-- Network.weights() and torch_nas_steps.py's AgnasNet.parameters()),
-- computed once with /usr/bin/python3:
--   Network()                               -> 1929754  (alphas: 224)
--   Network(C=4, layers=5)                  ->  135966
--   Network(C=4, layers=3, steps=2, mult=2) ->   26742  (alphas: 80)
--   AgnasNet()                              -> 5485082
--   AgnasNet(C=4, layers=5)                 ->  282910
local TORCH_DARTS_DEFAULT = 1929754
local TORCH_DARTS_C4_L5 = 135966
local TORCH_DARTS_TINY = 26742
local TORCH_AGNAS_DEFAULT = 5485082
local TORCH_AGNAS_C4_L5 = 282910

local function numel_of(list)
  local n = 0
  for _, t in ipairs(list) do n = n + t:numel() end
  return n
end

local function seq(n, f)
  local t = {}
  for i = 1, n do t[i] = f(i) end
  return t
end

-- a genotype's cell as an E x n one-hot weight matrix (none on unused edges)
local function onehot_weights(gene, steps, prims)
  local E = steps * (steps + 3) // 2
  local rows = seq(E, function() return seq(#prims, function() return 0 end) end)
  local none = 1
  for k, p in ipairs(prims) do if p == "none" then none = k end end
  for e = 1, E do rows[e][none] = 1 end
  for m, g in ipairs(gene) do
    local node = (m - 1) // 2
    local e = node * (node + 3) // 2 + g[2] + 1
    rows[e][none] = 0
    for k, p in ipairs(prims) do if p == g[1] then rows[e][k] = 1 end end
  end
  return nasrt.tensor(rows)
end

-- copies a search network's weights into the discrete network of `g`
local function inherit(snet, enet, g, prims)
  local ssd = snet:state_dict()
  local esd, keys = enet:state_dict()
  local out, copied = {}, 0
  for _, key in ipairs(keys) do
    local c, m, rest = key:match("^cells%.(%d+)%.ops%.(%d+)%.(.*)$")
    local src
    if c then
      c, m = tonumber(c), tonumber(m)
      local red = snet.cells[c].reduction
      local gene = red and g.reduce or g.normal
      local node = (m - 1) // 2
      local e = node * (node + 3) // 2 + gene[m][2] + 1
      local k
      for i, p in ipairs(prims) do if p == gene[m][1] then k = i end end
      src = ssd[("cells.%d.edges.%d.ops.%d.%s"):format(c, e, k, rest)]
    else
      src = ssd[key]
    end
    if src then copied = copied + 1 end
    out[key] = src or esd[key]
  end
  enet:load_state_dict(out)
  return copied
end

describe("nasrt.supernet.darts", function()
  it("matches the PyTorch reference's parameter count and keeps alphas apart", function()
    nasrt.manual_seed(1)
    local net = S.darts {}
    assert.are.equal(TORCH_DARTS_DEFAULT, net:num_parameters())
    local arch = net:arch_parameters()
    assert.are.equal(2, #arch)
    assert.are.same({ 14, 8 }, arch[1]:shape())
    assert.are.same({ 14, 8 }, arch[2]:shape())
    assert.is_true(arch[1]:abs():max():item() < 0.01)   -- 1e-3 * N(0,1)
    for _, p in ipairs(net:parameters()) do
      assert.are_not.equal(arch[1], p)
      assert.are_not.equal(arch[2], p)
    end
    assert.are.equal(TORCH_DARTS_C4_L5, S.darts { C = 4, layers = 5 }:num_parameters())
    local tiny = S.darts { C = 4, layers = 3, steps = 2, multiplier = 2 }
    assert.are.equal(TORCH_DARTS_TINY, tiny:num_parameters())
    assert.are.equal(80, numel_of(tiny:arch_parameters()))
  end)

  it("lays out the cells as DARTS does (reductions at layers//3, 2*layers//3)", function()
    local net = S.darts { C = 4, layers = 8 }
    local red = {}
    for i = 1, 8 do red[i] = net.cells[i].reduction end
    assert.are.same({ false, false, true, false, false, true, false, false }, red)
    assert.are.equal(14, #net.cells[1].edges)
    local y = net(nasrt.randn { 2, 1, 28, 28 })
    assert.are.same({ 2, 10 }, y:shape())
  end)

  it("gives each cell its own alphas with alpha_per_cell", function()
    local net = S.darts { C = 4, layers = 5, alpha_per_cell = true }
    assert.are.equal(5, #net:arch_parameters())
    assert.are.same({ 2, 10 }, net(nasrt.randn { 2, 1, 8, 8 }):shape())
    assert.are.equal(5, #net:genotypes())
    assert.are.equal(5, #net:genotype())          -- the five cell types
    assert.is_not_nil(net:genotype()[2].reduce)
  end)

  it("stores alphas in the state dict and restores them", function()
    local a = S.darts { C = 4, layers = 3, steps = 2, multiplier = 2 }
    local b = S.darts { C = 4, layers = 3, steps = 2, multiplier = 2 }
    local sd = a:state_dict()
    assert.is_not_nil(sd.alphas_normal)
    b:load_state_dict(sd)
    assert.allclose(b.alphas_normal, a.alphas_normal, 0)
    assert.allclose(b.alphas_reduce, a.alphas_reduce, 0)
    assert.is_true(b.alphas_normal.is_leaf)
  end)

  it("sets alphas from tables and reports the softmax", function()
    local net = S.darts { C = 4, layers = 3, steps = 2, multiplier = 2 }
    local rows = seq(5, function(e) return seq(8, function(k) return (e == k) and 2 or 0 end) end)
    net:set_alphas { normal = rows }
    local w = net:alphas()
    local p = math.exp(2) / (math.exp(2) + 7)
    assert.near(p, w.normal[1][1], 1e-6)
    assert.near(1 / (math.exp(2) + 7), w.normal[1][2], 1e-6)
    assert.has_error(function() net:set_alphas { normal = { { 1 } } } end)
    assert.has_error(function() net:set_alphas { bogus = rows } end)
  end)

  it("runs a mixed op like the sum of its ops' own forwards", function()
    nasrt.manual_seed(3)
    for _, stride in ipairs { 1, 2 } do
      local m = S.darts_MixedOp(4, stride, PRIMS)
      local x = nasrt.randn { 2, 4, 8, 8 }
      local w = F.softmax(nasrt.randn { 8 }, 1)
      local ref
      for k = 1, 8 do
        local t = m.ops[k](x) * w:get(k)
        ref = ref and ref + t or t
      end
      assert.allclose(m:forward(x, w), ref, 1e-5)
    end
  end)

  it("derives the genotype from hand-set alphas by the DARTS rule", function()
    -- columns: none max avg skip sep3 sep5 dil3 dil5
    local rows = seq(14, function() return seq(8, function() return 0 end) end)
    rows[1][5] = 3          -- node 0: (sep3, 0) strongest, then (skip, 1)
    rows[2][4] = 2
    rows[5][7] = 4          -- node 1: dil3 from node 0 first, then max from s0;
    rows[3][2] = 1          --         s1's edge only has `none`, which never counts
    rows[4][1] = 10
    rows[7][6] = 2          -- node 2: a tie, the lower input first
    rows[9][3] = 2
    -- node 3: all equal -> inputs 0 and 1, first non-none op (max_pool_3x3)
    local net = S.darts { C = 4, layers = 3 }
    net:set_alphas { normal = rows, reduce = rows }
    local g = net:genotype()
    local expect = { { "sep_conv_3x3", 0 }, { "skip_connect", 1 },
                     { "dil_conv_3x3", 2 }, { "max_pool_3x3", 0 },
                     { "sep_conv_5x5", 1 }, { "avg_pool_3x3", 3 },
                     { "max_pool_3x3", 0 }, { "max_pool_3x3", 1 } }
    assert.are.same(expect, g.normal)
    assert.are.same(expect, g.reduce)
    assert.are.same({ 2, 3, 4, 5 }, g.normal_concat)
    assert.are.same({ 2, 3, 4, 5 }, g.reduce_concat)
  end)

  it("equals the discrete network of a genotype under one-hot weights", function()
    nasrt.manual_seed(7)
    local g = {
      -- (entries of a node in the order genotype() lists equal-strength edges)
      normal = { { "sep_conv_3x3", 0 }, { "skip_connect", 1 }, { "sep_conv_5x5", 0 },
                 { "dil_conv_3x3", 2 }, { "dil_conv_5x5", 1 }, { "skip_connect", 3 },
                 { "dil_conv_3x3", 0 }, { "sep_conv_3x3", 4 } },
      normal_concat = { 2, 3, 4, 5 },
      reduce = { { "skip_connect", 0 }, { "sep_conv_3x3", 1 }, { "skip_connect", 1 },
                 { "dil_conv_5x5", 2 }, { "sep_conv_5x5", 0 }, { "skip_connect", 2 },
                 { "sep_conv_3x3", 1 }, { "dil_conv_3x3", 3 } },
      reduce_concat = { 2, 3, 4, 5 },
    }
    local snet = S.darts { C = 4, layers = 5 }
    local enet = S.darts_network(g, { C = 4, layers = 5 })
    local copied = inherit(snet, enet, g, PRIMS)
    assert.is_true(copied > 50)
    local arch = { normal = onehot_weights(g.normal, 4, PRIMS),
                   reduce = onehot_weights(g.reduce, 4, PRIMS) }
    local x = nasrt.randn { 3, 1, 8, 8 }
    snet:train()
    enet:train()
    local a = snet(x, arch)
    local b = enet(x)
    -- x*1 and +0 are exact, but the search network's SepConvs (batch norm
    -- without affine) on 16 channels run as F.sep_block, whose statistics
    -- round differently from the discrete network's three ops
    assert.allclose(a, b, 1e-5)
    -- the genotype read back from one-hot alphas is the same genotype
    local big = function(W) return nasrt.no_grad(function() return W * 20 end):totable() end
    snet:set_alphas { normal = big(arch.normal), reduce = big(arch.reduce) }
    assert.are.same(g, snet:genotype())
  end)

  it("handles odd feature sizes in FactorizedReduce as the PyTorch reference", function()
    nasrt.manual_seed(5)
    -- layers=5 on 14x14: the second reduction and the cell after it see 7x7
    local net = S.darts { C = 4, layers = 5 }
    assert.are.same({ 2, 10 }, net(nasrt.randn { 2, 1, 14, 14 }):shape())
    -- the fast path's padded shift equals NB201's padded FactorizedReduce
    local fr = net.cells[5].preprocess0
    local ref = blocks.FactorizedReduce(fr.in_channels, fr.out_channels,
      { affine = false, nb201 = true })
    nasrt.no_grad(function()
      ref.conv_1.weight:copy_(fr.conv_1.weight)
      ref.conv_2.weight:copy_(fr.conv_2.weight)
    end)
    local x = nasrt.randn { 2, fr.in_channels, 7, 7 }
    local cell = S.darts_SearchCell({ steps = 2, multiplier = 2, C_pp = fr.in_channels,
                                C_p = fr.in_channels, C = fr.out_channels, reduction = false,
                                reduction_prev = true }, function(C, s) return S.darts_MixedOp(C, s, PRIMS) end)
    cell.preprocess0 = fr
    cell._pre0.mod = fr
    -- node 0 = preprocess0(x) (every other edge contributes zeros)
    local y = cell:_run(x, nasrt.randn { 2, fr.in_channels, 4, 4 }, {}, function(_, e, xx)
      return e == 1 and xx or F.scale(xx, 0)
    end)
    assert.are.same({ 2, 2 * fr.out_channels, 4, 4 }, y:shape())
    assert.allclose(F.narrow(F.narrow(y, 2, 1, fr.out_channels), 1, 1, 2), ref(x), 1e-5)
  end)

  it("passes a finite-difference check of the alpha gradients (softmax)", function()
    nasrt.manual_seed(11)
    local net = S.darts { C = 4, layers = 3, steps = 2, multiplier = 2 }
    local x = nasrt.randn { 2, 1, 8, 8 }
    nasrt.no_grad(function()
      for _, a in ipairs(net:arch_parameters()) do a:copy_(nasrt.randn(a:shape())) end
    end)
    local ok, msg = H.gradcheck(function() return net(x) end, net:arch_parameters(),
      { atol = 2e-2, rtol = 2e-2 })
    assert(ok, msg)
  end)

  it("folds the ops' final batch norms into the weighted sum: the same outputs, gradients and running statistics", function()
    local darts = require "nasrt.supernet.darts"
    local function run(fold)
      nasrt.manual_seed(21)
      local net = S.darts { C = 16, layers = 3, steps = 2, multiplier = 2 }
      local x = nasrt.randn { 3, 1, 12, 12 }
      darts.fold_bn = fold
      local calls, orig = 0, F.bn_weighted_sum
      F.bn_weighted_sum = function(...) calls = calls + 1; return orig(...) end
      local ok, err = pcall(function()
        F.cross_entropy(net(x), nasrt.tensor { 1, 4, 7 }):backward()
      end)
      F.bn_weighted_sum = orig
      darts.fold_bn = true
      -- the folded path ran exactly when asked: on all 3 cells x 5 edges
      assert.are.equal(fold and 15 or 0, calls)
      assert(ok, err)
      local grads, bufs = {}, {}
      for _, p in ipairs(net:parameters()) do grads[#grads + 1] = p.grad end
      for _, a in ipairs(net:arch_parameters()) do grads[#grads + 1] = a.grad end
      for _, b in ipairs(net:buffers()) do bufs[#bufs + 1] = b end
      return grads, bufs, net
    end
    local g1, b1 = run(false)
    local g2, b2 = run(true)
    assert.are.equal(#g1, #g2)
    for i = 1, #g1 do
      if g1[i] then assert.allclose(g1[i], g2[i], 1e-4) else assert.is_nil(g2[i]) end
    end
    assert.are.equal(#b1, #b2)
    for i = 1, #b1 do assert.allclose(b1[i], b2[i], 1e-6) end
  end)

  it("runs F.bn_weighted_sum like batch_norm then weighted_sum", function()
    nasrt.manual_seed(22)
    local xs = { nasrt.randn { 4, 3, 5, 5 }, nasrt.randn { 4, 3, 5, 5 }, nasrt.randn { 4, 3, 5, 5 } }
    local w = nasrt.tensor { 0.5, -1.5, 2.0 }
    local rm1, rv1, rm2, rv2 = nasrt.zeros { 3 }, nasrt.ones { 3 }, nasrt.zeros { 3 }, nasrt.ones { 3 }
    local ref = F.weighted_sum({ F.batch_norm(xs[1], rm1, rv1, nil, nil, { momentum = 0.3 }), xs[2],
      F.batch_norm(xs[3], nil, nil, nil, nil) }, w)
    local y = F.bn_weighted_sum(xs, w, { { rm2, rv2 }, false, true }, { momentum = 0.3 })
    assert.allclose(ref, y, 1e-6)
    assert.allclose(rm1, rm2, 1e-7)
    assert.allclose(rv1, rv2, 1e-7)
    -- by hand at one point: channel 2 of input 1 normalised with the biased variance
    local x1 = F.narrow(xs[1], 2, 2, 1)
    local m = x1:mean():item()
    local v = F.mean(F.mul(x1 - m, x1 - m)):item()
    local want = 0.5 * (xs[1]:get(1, 2, 1, 1) - m) / math.sqrt(v + 1e-5)
      - 1.5 * xs[2]:get(1, 2, 1, 1)
    local x3 = F.narrow(xs[3], 2, 2, 1)
    local m3 = x3:mean():item()
    local v3 = F.mean(F.mul(x3 - m3, x3 - m3)):item()
    want = want + 2.0 * (xs[3]:get(1, 2, 1, 1) - m3) / math.sqrt(v3 + 1e-5)
    assert.is_true(math.abs(y:get(1, 2, 1, 1) - want) < 1e-4)
  end)

  it("differentiates F.bn_weighted_sum like batch_norm then weighted_sum on planes of 64 values and more, the same with 1 and 2 threads", function()
    -- planes of 9x9 take the plane-by-plane backward; input a twice (its
    -- gradient written, then added), b plain, c normalised
    local function run(fused, threads)
      nasrt.set_num_threads(threads)
      nasrt.manual_seed(23)
      local a, b, c = nasrt.randn { 6, 3, 9, 9 }, nasrt.randn { 6, 3, 9, 9 }, nasrt.randn { 6, 3, 9, 9 }
      local w = nasrt.tensor { 0.7, -1.2, 1.9, 0.4 }
      for _, t in ipairs { a, b, c, w } do t:requires_grad(true) end
      local g = nasrt.randn { 6, 3, 9, 9 }
      local y
      if fused then
        y = F.bn_weighted_sum({ a, b, c, a }, w, { true, false, true, false })
      else
        y = F.weighted_sum({ F.batch_norm(a, nil, nil, nil, nil), b,
          F.batch_norm(c, nil, nil, nil, nil), a }, w)
      end
      -- a plain consumer of the output, so each input gradient is fresh
      F.sum(F.mul(y, g)):backward()
      nasrt.set_num_threads(2)
      return { a.grad, b.grad, c.grad, w.grad }
    end
    local ref, one, two = run(false, 2), run(true, 1), run(true, 2)
    for i = 1, 4 do
      assert.allclose(ref[i], one[i], 1e-4)
      assert.are.same(one[i]:totable(), two[i]:totable())
    end
  end)

  it("passes a finite-difference check of the alpha gradients (sigmoid, FairDARTS)", function()
    nasrt.manual_seed(12)
    local prims = { "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                    "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5" }
    local net = S.darts { C = 4, layers = 3, steps = 2, multiplier = 2, primitives = prims,
                          relaxation = "sigmoid" }
    assert.are.same({ 5, 7 }, net.alphas_normal:shape())
    local x = nasrt.randn { 2, 1, 8, 8 }
    local ok, msg = H.gradcheck(function() return net(x) end, net:arch_parameters(),
      { atol = 2e-2, rtol = 2e-2 })
    assert(ok, msg)
    -- FairDARTS' zero-one loss: -mean((sigmoid(a) - 0.5)^2)
    local l = net:zero_one_loss()
    local ref = 0
    for _, a in ipairs(net:arch_parameters()) do
      local d = F.sigmoid(a) - 0.5
      ref = ref + (d * d):sum():item()
    end
    assert.near(-ref / 70, l:item(), 1e-6)
  end)

  it("evaluates only the sampled op with GDAS and passes gradients to alpha", function()
    nasrt.manual_seed(21)
    local net = S.darts { C = 4, layers = 3, steps = 2, multiplier = 2, relaxation = "gumbel",
                          tau = 1 }
    local x = nasrt.randn { 2, 1, 8, 8 }
    local y = net(x)
    local sample = net.last_sample
    local hard = {}
    for _, k in ipairs { "normal", "reduce" } do
      local rows = seq(5, function(e)
        return seq(8, function(c) return c == sample[k].idx[e] and 1 or 0 end)
      end)
      hard[k] = nasrt.tensor(rows)
      assert.allclose(sample[k].h, hard[k], 1e-6)      -- forward value is one-hot
    end
    assert.allclose(y, net(x, hard), 1e-4)
    y:sum():backward()
    for _, a in ipairs(net:arch_parameters()) do
      assert.is_not_nil(a.grad)
      assert.is_true(a.grad:abs():max():item() > 0)
    end
    -- seeded by the global generator
    nasrt.manual_seed(99)
    net(x)
    local i1 = net.last_sample.normal.idx
    nasrt.manual_seed(99)
    net(x)
    assert.are.same(i1, net.last_sample.normal.idx)
  end)

  it("rejects bad options", function()
    assert.has_error(function() S.darts { relaxation = "hardmax" } end)
    assert.has_error(function() S.darts { C = 5 } end)
    assert.has_error(function() S.darts { bogus = 1 } end)
    assert.has_error(function() S.darts { primitives = { "conv_9x9" } } end)
    local net = S.darts { C = 4, layers = 3, steps = 2, multiplier = 2 }
    assert.has_error(function() net(nasrt.randn { 2, 1, 8, 8 }, { normal = nasrt.zeros { 3, 8 },
                                                              reduce = nasrt.zeros { 5, 8 } }) end)
  end)
end)

describe("nasrt.supernet.agnas", function()
  it("matches the PyTorch reference's parameter count and has no alphas", function()
    local net = S.agnas {}
    assert.are.equal(TORCH_AGNAS_DEFAULT, net:num_parameters())
    assert.are.same({}, net:arch_parameters())
    assert.are.equal(TORCH_AGNAS_C4_L5, S.agnas { C = 4, layers = 5 }:num_parameters())
    assert.are.same(blocks.AGNAS_PRIMITIVES, net.primitives)
  end)

  it("mixes an edge like the upstream concat -> attention -> slice sum", function()
    nasrt.manual_seed(4)
    local edge = S.agnas_Edge(4, 1, blocks.AGNAS_PRIMITIVES, 8)
    local x = nasrt.randn { 2, 4, 6, 6 }
    local outs = {}
    for k = 1, 8 do outs[k] = edge.ops[k](x) end
    local cat = F.cat(outs, 2)
    local a = edge.attention(cat)                       -- [N, 32, 1, 1]
    local scaled = F.mul(cat, a)
    local ref
    for k = 1, 8 do
      local s = F.narrow(scaled, 2, (k - 1) * 4 + 1, 4)
      ref = ref and ref + s or s
    end
    local out, y = edge:mix(x, {})
    assert.allclose(out, ref, 1e-5)
    assert.allclose(y:reshape { 2, 32, 1, 1 }, a, 1e-6)
  end)

  it("passes a finite-difference check of the attention FC gradients", function()
    nasrt.manual_seed(13)
    local net = S.agnas { C = 4, layers = 3, steps = 2, multiplier = 2 }
    local x = nasrt.randn { 2, 1, 8, 8 }
    local att1 = net.cells[1].edges[1].attention
    local att2 = net.cells[3].edges[4].attention
    local ok, msg = H.gradcheck(function() return net(x) end,
      { att1.fc1.weight, att1.fc2.weight, att2.fc1.weight, att2.fc2.weight },
      { atol = 2e-2, rtol = 2e-2, max_elems = 24 })
    assert(ok, msg)
  end)

  it("accumulates per-cell scores while collecting and resets them", function()
    nasrt.manual_seed(8)
    local net = S.agnas { C = 4, layers = 5 }
    local x = nasrt.randn { 3, 1, 8, 8 }
    net:eval()
    net(x)
    local s0 = net:scores()
    assert.are.equal(5, #s0)
    assert.are.equal(14, #s0[1])
    assert.are.equal(0, s0[1][1][1])                   -- not collecting yet
    net.collect_scores = true
    nasrt.no_grad(function() net(x) end)
    local s1 = net:scores()
    for i = 1, 5 do
      for e = 1, 14 do
        for k = 1, 8 do
          local v = s1[i][e][k]
          -- a sum of 3 samples x C sigmoid values
          assert.is_true(v > 0 and v < 3 * net.cells[i].C)
        end
      end
    end
    nasrt.no_grad(function() net(x) end)
    local s2 = net:scores()
    assert.near(2 * s1[2][3][4], s2[2][3][4], 1e-4)
    assert.near(2 * s1[5][14][8], s2[5][14][8], 1e-4)
    net:reset_scores()
    assert.are.equal(0, net:scores()[2][3][4])
  end)

  it("derives one genotype per cell and the five AGNAS cell types", function()
    nasrt.manual_seed(9)
    local net = S.agnas { C = 4, layers = 8 }
    net.collect_scores = true
    net:eval()
    nasrt.no_grad(function() net(nasrt.randn { 2, 1, 8, 8 }) end)
    local per = net:genotypes()
    assert.are.equal(8, #per)
    assert.is_not_nil(per[3].reduce)
    assert.is_not_nil(per[1].normal)
    for _, g in ipairs(per) do
      for _, e in ipairs(g.normal or g.reduce) do assert.are_not.equal("none", e[1]) end
    end
    local five = net:agnas_genotype()
    assert.are.equal(5, #five)
    assert.are.same(per[1], five[1])
    assert.are.same(per[3], five[2])
    assert.are.same(per[4], five[3])
    assert.are.same(per[6], five[4])
    assert.are.same(per[7], five[5])
    local model = S.darts_network(five, { C = 4, layers = 8 })
    assert.are.same({ 2, 10 }, model(nasrt.randn { 2, 1, 8, 8 }):shape())
  end)
end)

describe("nasrt.supernet.att_darts", function()
  it("puts betas with the alphas and derives attention triples", function()
    nasrt.manual_seed(10)
    local net = S.att_darts { C = 8, layers = 3, steps = 2, multiplier = 2, input_size = 8 }
    local arch = net:arch_parameters()
    assert.are.equal(4, #arch)
    assert.are.same({ 5, 6 }, net.betas_normal:shape())
    local x = nasrt.randn { 2, 1, 8, 8 }
    local y = net(x)
    assert.are.same({ 2, 10 }, y:shape())
    y:sum():backward()
    for _, a in ipairs(arch) do assert.is_not_nil(a.grad) end
    local brows = seq(5, function(e) return seq(6, function(b) return b == 4 and 3 or 0 end) end)
    net:set_alphas { betas_normal = brows }
    local g = net:genotype()
    assert.are.equal(4, #g.normal)
    for _, e in ipairs(g.normal) do assert.are.equal("CBAM", e[3]) end
    local s = S.genotype_to_string(g)
    assert.truthy(s:find("'CBAM')", 1, true))
    assert.are.same(g, S.genotype_from_string(s))
    local model = S.darts_network(g, { C = 8, layers = 3, input_size = 8 })
    assert.are.same({ 2, 10 }, model(x):shape())
  end)
end)

describe("nasrt.supernet genotypes", function()
  local V2 = "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), " ..
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), " ..
    "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), " ..
    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), " ..
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"

  it("parses DARTS_V2 and prints it as DARTS does", function()
    local g = assert(S.genotype_from_string("DARTS_V2 = " .. V2))
    assert.are.same({ "sep_conv_3x3", 0 }, g.normal[1])
    assert.are.same({ "dil_conv_3x3", 2 }, g.normal[8])
    assert.are.same({ "max_pool_3x3", 1 }, g.reduce[8])
    assert.are.same({ 2, 3, 4, 5 }, g.reduce_concat)
    assert.are.same(S.darts_genotypes.DARTS_V2, g)
    local s = S.genotype_to_string(g)
    assert.are.equal(V2:gsub("%[2, 3, 4, 5%]", "range(2, 6)"), s)
    assert.are.same(g, S.genotype_from_string(s))
    assert.are.equal(s, S.genotype_to_string(S.genotype_from_string(s)))
  end)

  it("round-trips derived, per-cell and fixture genotypes", function()
    local net = S.darts { C = 4, layers = 3 }
    local g = net:genotype()
    assert.are.same(g, S.genotype_from_string(S.genotype_to_string(g)))
    for _, name in ipairs { "DARTS_V1", "DARTS_V2", "AGNAS", "Att_DARTS" } do
      local f = S.darts_genotypes[name]
      local s = S.genotype_to_string(f)
      assert.are.same(f, S.genotype_from_string(s))
    end
    local agnas = S.darts_genotypes.AGNAS
    assert.are.equal(5, #agnas)
    assert.truthy(S.genotype_to_string(agnas):find("^%[Normal_Genotype%(normal=%[%('sep_conv_3x3', 0%)"))
    -- positional fields and range(n)
    local p = assert(S.genotype_from_string(
      "Genotype([('skip_connect', 0), ('sep_conv_3x3', 1)], range(2, 3), " ..
      "[('max_pool_3x3', 0), ('max_pool_3x3', 1)], [2])"))
    assert.are.same({ 2 }, p.normal_concat)
    assert.are.same({ 2 }, p.reduce_concat)
  end)

  it("is a plain, JSON-able table", function()
    local g = S.darts_genotypes.DARTS_V2
    local function plain(v)
      if type(v) == "table" then
        assert.is_nil(getmetatable(v))
        for k, x in pairs(v) do
          assert.is_true(type(k) == "string" or math.type(k) == "integer")
          plain(x)
        end
      else
        assert.is_true(type(v) == "string" or math.type(v) == "integer")
      end
    end
    plain(g)
  end)

  it("returns nil and a message for malformed text", function()
    for _, bad in ipairs { "Genotype(normal=[('sep_conv_3x3', 0)", "Genotype(foo=1)",
                           "Genotype(normal=[(0, 'sep')], normal_concat=[2])", "42",
                           "Genotype(normal=[('a', 0)], normal_concat=range(2, 3)) extra" } do
      local g, msg = S.genotype_from_string(bad)
      assert.is_nil(g)
      assert.are.equal("string", type(msg))
    end
  end)

  it("refuses a range longer than 4096 instead of building it (tests/fuzz)", function()
    local g, msg = S.genotype_from_string(
      "Genotype(normal=[('skip_connect', 0), ('skip_connect', 1)], normal_concat=range(0, 1099511627776))")
    assert.is_nil(g)
    assert.are.equal("genotype_from_string: range(0, 1099511627776) is longer than 4096 at position 98", msg)
    -- hi - lo wraps around in integers
    g, msg = S.genotype_from_string("Genotype(normal=[], normal_concat=range(" .. math.mininteger + 1 ..
      ", " .. math.maxinteger .. "))")
    assert.is_nil(g)
    assert.truthy(msg:find("is longer than 4096", 1, true))
    local ok = assert(S.genotype_from_string("Genotype(normal=[('skip_connect', 0), ('skip_connect', 1)], " ..
      "normal_concat=range(4096))"))
    assert.are.equal(4096, #ok.normal_concat)
    assert.are.equal(4095, ok.normal_concat[4096])
  end)

  it("refuses integers past 64 bits and keeps range(mininteger) empty (fuzz_arch out-of-memory)", function()
    local g, msg = S.genotype_from_string("Genotype(normal=[('skip_connect', 0)], " ..
      "normal_concat=range(-9223372036854775808, 9223372036854775808))")
    assert.is_nil(g)
    assert.are.equal("genotype_from_string: number out of range at 82", msg)
    -- range(lo) with lo = math.mininteger is range(0, mininteger): empty, as
    -- in Python, where hi - 1 would wrap to maxinteger and loop for ever; an
    -- empty concat is then refused, as genotype_to_string refuses it
    -- (fuzz_arch: the parsed genotype did not print)
    g, msg = S.genotype_from_string("Genotype(normal=[('skip_connect', 0)], " ..
      "normal_concat=range(-9223372036854775808))")
    assert.is_nil(g)
    assert.are.equal("genotype_from_string: normal_concat is empty", msg)
    g, msg = S.genotype_from_string("Genotype(normal=[('skip_connect', 0)], normal_concat=range(5, 2))")
    assert.are.equal("genotype_from_string: normal_concat is empty", msg)
    -- a concat state past maxinteger - 1 would print as a wrapped range
    g, msg = S.genotype_from_string("Genotype(normal=[('skip_connect', 0)], " ..
      "normal_concat=[9223372036854775807])")
    assert.are.equal("genotype_from_string: normal_concat: state 9223372036854775807 is outside 0..4096", msg)
    g, msg = S.genotype_from_string("Genotype(normal=[('skip_connect', 0)], normal_concat=[-1])")
    assert.are.equal("genotype_from_string: normal_concat: state -1 is outside 0..4096", msg)
  end)

  it("writes a cell as a Graphviz digraph like DARTS' visualize.py", function()
    local g = S.darts_genotypes.DARTS_V2
    for _, which in ipairs { "normal", "reduce" } do
      local dot = S.genotype_dot(g, which)
      assert.truthy(dot:match("^digraph {\n"))
      assert.truthy(dot:match("\n}\n$"))
      local nodes, edges = {}, {}
      for line in dot:gmatch("[^\n]+") do
        local u, v, attrs = line:match('^\t"([^"]+)" %-> "([^"]+)" %[(.*)%]$')
        if u then
          edges[#edges + 1] = { u, v, attrs:match('label="([^"]*)"') }
        else
          local n = line:match('^\t"([^"]+)" %[')
          if n then nodes[n] = true end
        end
      end
      assert.are.equal(12, #edges)              -- 8 op edges + 4 into c_{k}
      for _, e in ipairs(edges) do
        assert.is_true(nodes[e[1]] and nodes[e[2]])
      end
      local gene = g[which]
      for m = 1, 8 do assert.are.equal(gene[m][1], edges[m][3]) end
      assert.are.equal("c_{k}", edges[12][2])
    end
    assert.has_error(function() S.genotype_dot(S.darts_genotypes.AGNAS[1], "reduce") end)
  end)
end)

describe("nasrt.supernet.darts_network", function()
  it("has DARTS_V2's published size at C=36, 20 layers on CIFAR", function()
    local net = S.darts_network(S.darts_genotypes.DARTS_V2,
      { C = 36, layers = 20, in_channels = 3, auxiliary = true })
    local n = 0
    for _, nt in ipairs(net:named_parameters()) do
      if not nt[1]:find("^auxiliary_head") then n = n + nt[2]:numel() end
    end
    assert.are.equal(3349342, n)    -- DARTS' "param size = 3.349342MB"
  end)

  it("returns auxiliary logits in training mode on 28x28 inputs", function()
    nasrt.manual_seed(2)
    local net = S.darts_network(S.darts_genotypes.DARTS_V2,
      { C = 8, layers = 8, auxiliary = true, drop_path = 0.2 })
    local x = nasrt.randn { 2, 1, 28, 28 }
    local logits, aux = net(x)
    assert.are.same({ 2, 10 }, logits:shape())
    assert.are.same({ 2, 10 }, aux:shape())
    net:eval()
    local l2, a2 = net(x)
    assert.are.same({ 2, 10 }, l2:shape())
    assert.is_nil(a2)
    -- 32x32 inputs (an 8x8 map at the head) as DARTS on CIFAR
    local c = S.darts_network(S.darts_genotypes.DARTS_V2,
      { C = 8, layers = 8, auxiliary = true, in_channels = 3 })
    local _, a3 = c(nasrt.randn { 2, 3, 32, 32 })
    assert.are.same({ 2, 10 }, a3:shape())
  end)

  it("drops whole samples' paths in training only", function()
    nasrt.manual_seed(6)
    local net = S.darts_network(S.darts_genotypes.DARTS_V2, { C = 4, layers = 3 })
    local x = nasrt.randn { 4, 1, 8, 8 }
    net:eval()
    local ref = net(x)
    net.drop_path_prob = 0.5
    assert.allclose(net(x), ref, 0)                -- eval: no drop-path
    net:train()
    local a = net(x)
    local b = net(x)
    assert.is_true(H.maxdiff(a, b) > 0)            -- different masks
  end)

  it("builds one cell per AGNAS type or per cell", function()
    local five = S.darts_genotypes.AGNAS
    local net = S.darts_network(five, { C = 4, layers = 8 })
    assert.are.equal(8, #net.cells)
    -- cells 0-1 use Cell_0, 3-4 Cell_3, 6-7 Cell_6
    assert.are.same(five[1].normal[2][1], net.cells[2]._names[2])
    assert.are.same(five[3].normal[1][1], net.cells[5]._names[1])
    assert.are.same(five[5].normal[2][1], net.cells[8]._names[2])
    assert.are.same(five[4].reduce[3][1], net.cells[6]._names[3])
    assert.are.same({ 2, 10 }, net(nasrt.randn { 2, 1, 16, 16 }):shape())
    assert.has_error(function() S.darts_network({ five[1], five[2] }, { C = 4, layers = 8 }) end)
    assert.has_error(function() S.darts_network(five[1], { C = 4, layers = 3 }) end)
  end)

  it("refuses a reduction cell that concatenates a cell input (tests/fuzz)", function()
    local g = { normal = { { "sep_conv_3x3", 0 }, { "skip_connect", 1 } }, normal_concat = { 0, 1, 2 },
                reduce = { { "max_pool_3x3", 0 }, { "avg_pool_3x3", 1 } }, reduce_concat = { 0, 1, 2 } }
    local opts = { C = 2, layers = 3, classes = 2, input_size = 8, stem_multiplier = 1 }
    local ok, err = pcall(S.darts_network, g, opts)
    assert.is_false(ok)
    assert.truthy(err:find("darts_network: concat entry 0 of a reduction cell is a cell input", 1, true))
    -- a normal cell may: its inputs and nodes share the resolution
    g.reduce_concat = { 2 }
    local net = S.darts_network(g, opts)
    net:eval()
    assert.are.same({ 1, 2 }, net(nasrt.zeros { 1, 1, 8, 8 }):shape())
  end)
end)

describe("nasrt.supernet.darts timing #slow", function()
  it("runs forward+backward of the default supernet at batch 64", function()
    nasrt.manual_seed(0)
    local net = S.darts {}
    local x = nasrt.randn { 64, 1, 28, 28 }
    local y = nasrt.tensor(seq(64, function(i) return i % 10 end))
    local t0 = nasrt.clock()
    F.cross_entropy(net(x), y):backward()
    local dt = nasrt.clock() - t0
    print(("\ndarts supernet fwd+bwd batch 64: %.2f s"):format(dt))
  end)
end)
