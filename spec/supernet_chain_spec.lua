-- Specs of the single-path chains (nasrt.supernet.spos, .fairnas) and the
-- AGNAS macro supernet (.agnas_macro): layouts against the references
-- (oneshot.md §1-2, differentiable.md §3.4), one-path forward = the
-- stand-alone path network with the same weights, gradients only on the
-- sampled path (and SGD leaving the rest untouched), strict fairness driven
-- by nasrt.sampler.strict_fair, MAC tables against nn's own counting, AGNAS
-- score accumulation / derivation and a gradient check of its attention.
local nasrt = require "nasrt"
local H = require "helpers"
local nn, F, SN = nasrt.nn, nasrt.F, nasrt.supernet

-- tiny layouts (8x8 inputs) so every test runs in well under a second
local SPOS_TINY = { input_size = 8, stem = 8, widths = { 16, 32 }, repeats = { 2, 2 }, last = 32,
                    dropout = 0 }
local FAIR_TINY = { input_size = 8, stem = 8, stages = { { 8, 2, 2 }, { 16, 2, 1 } }, head = 32 }
local AGNAS_TINY = { input_size = 8, stem = 8, first_block = 8,
                     stages = { { 8, 2, 1 }, { 16, 1, 2 }, { 16, 1, 1 } }, head = 32 }

local function rep(v, n)
  local t = {}
  for i = 1, n do t[i] = v end
  return t
end

-- labels 0..K-1 as a tensor
local function labels(n, k)
  local t = {}
  for i = 1, n do t[i] = (i * 7) % k end
  return nasrt.tensor(t)
end

-- every parameter tensor of module m, as a set
local function param_set(m)
  local s = {}
  for _, p in ipairs(m:parameters()) do s[p] = true end
  return s
end

-- gives BN layers non-trivial running statistics by a few training forwards
local function warm_bn(net, x, arch)
  nasrt.no_grad(function()
    for _ = 1, 3 do net(x, arch) end
  end)
end

local function random_arch(choices, seed)
  return nasrt.sampler.uniform { choices = choices, seed = seed }:sample()
end

-- ---------------------------------------------------------------- shared checks

-- one-path forward equals the path network (shared and copied weights),
-- in training and eval mode
local function check_path_equality(net, x, arch)
  net:train()
  warm_bn(net, x, arch)
  local copy = net:path_network(arch, { copy = true })
  local share = net:path_network(arch)
  assert.are.equal(copy.__name, "ChainPath")
  -- training mode (batch statistics; both update their running statistics
  -- by the same amount), then eval mode (running statistics)
  assert.is_true(H.maxdiff(net(x, arch), copy(x)) == 0, "train (copy)")
  net:eval()
  copy:eval()
  local ref = net(x, arch)
  assert.is_true(H.maxdiff(ref, copy(x)) == 0, "eval (copy)")
  assert.is_true(H.maxdiff(ref, share(x)) == 0, "eval (share)")
  net:train()
  assert.is_true(H.maxdiff(share(x), net(x, arch)) == 0, "train (share)")
  -- the copy owns its tensors: changing it leaves the supernet alone
  local before = net(x, arch):detach():clone()
  nasrt.no_grad(function()
    for _, p in ipairs(copy:parameters()) do p:mul_(0.5) end
  end)
  assert.is_true(H.maxdiff(net(x, arch), before) == 0)
  -- the shared one is the supernet
  assert.is_true(param_set(net)[share.features[1]:parameters()[1]])
end

-- MACs: the per-layer table agrees with nn's traced count of the path network
local function check_flops(net, shape, archs)
  for _, arch in ipairs(archs) do
    local pn = net:path_network(arch)
    local traced = nn.Module.macs(pn, shape)      -- counts conv/linear leaves in a forward
    assert.are.equal(traced, net:flops(arch))
    assert.are.equal(pn:macs(shape), net:flops(arch))
    local b = { 3, shape[2], shape[3], shape[4] }
    assert.are.equal(3 * net:flops(arch), net:flops(arch, b))
  end
end

-- after one path's backward: exactly the chosen candidates carry gradients;
-- an SGD step with momentum and weight decay leaves the others bit-identical
local function check_single_path_grads(net, x, y, arch)
  local opt = nasrt.optim.SGD(net:parameters(), { lr = 0.1, momentum = 0.9, weight_decay = 1e-3 })
  opt:zero_grad()
  local snap = {}
  for _, p in ipairs(net:parameters()) do snap[p] = p:detach():clone() end
  F.cross_entropy(net(x, arch), y):backward()
  for l = 1, #arch do
    for c = 1, net:choices()[l] do
      local m = net:_candidate(l, c)
      if m then
        for _, p in ipairs(m:parameters()) do
          if c == arch[l] then
            assert.is_not_nil(p.grad, ("layer %d choice %d should have a gradient"):format(l, c))
          else
            assert.is_nil(p.grad, ("layer %d choice %d should have no gradient"):format(l, c))
          end
        end
      end
    end
  end
  for _, p in ipairs(net.stem:parameters()) do assert.is_not_nil(p.grad) end
  for _, p in ipairs(net.tail:parameters()) do assert.is_not_nil(p.grad) end
  opt:step()
  for l = 1, #arch do
    for c = 1, net:choices()[l] do
      local m = net:_candidate(l, c)
      if m and c ~= arch[l] then
        for _, p in ipairs(m:parameters()) do
          assert.is_true(H.maxdiff(p, snap[p]) == 0, ("layer %d choice %d moved"):format(l, c))
        end
      elseif m then
        assert.is_true(H.maxdiff(m:parameters()[1], snap[m:parameters()[1]]) > 0)
      end
    end
  end
end

-- ---------------------------------------------------------------- SPOS

describe("nasrt.supernet.spos", function()
  it("has four ShuffleNetV2 choices per layer and SPOS' stage layout", function()
    nasrt.manual_seed(0)
    local net = SN.spos {}
    assert.are.same(rep(4, 10), net:choices())
    assert.are.same({ "shufflenet_3x3", "shufflenet_5x5", "shufflenet_7x7", "xception_3x3" },
      SN.spos_choices)
    -- first layer of a stage: stride 2 on the whole input; the others:
    -- stride 1 on half of it (shuffle + split), mid = width // 2
    local l1, l2 = net.layers[1][1], net.layers[2][4]
    assert.are.same({ 16, 32, 16, 2 }, { l1.inp, l1.oup, l1.mid, l1.stride })
    assert.are.same({ 16, 32, 16, 1 }, { l2.inp, l2.oup, l2.mid, l2.stride })
    assert.are.equal("ShuffleXception", l2.__name)
    assert.are.equal(7, net.layers[3][3].kernel_size)
    -- BN is affine=False in the supernet
    for _, m in ipairs(net:modules()) do
      if m.__name == "BatchNorm2d" then assert.is_false(m.affine) end
    end
    -- classifier without bias
    assert.is_nil(net.tail[-1].bias)
  end)

  it("reproduces SPOS' ImageNet layout and its 323 MFLOPs for the released arch", function()
    nasrt.manual_seed(0)
    local net = SN.spos(SN.spos_paper)
    assert.are.same(rep(4, 20), net:choices())
    -- backbone_info of src/Supernet/flops.py: (inp, oup, H, W, stride) per layer
    local expect = { [1] = { 16, 64, 112, 2 }, [2] = { 64, 64, 56, 1 }, [5] = { 64, 160, 56, 2 },
                     [9] = { 160, 320, 28, 2 }, [16] = { 320, 320, 14, 1 },
                     [17] = { 320, 640, 14, 2 }, [20] = { 640, 640, 7, 1 } }
    for l, e in pairs(expect) do
      local li = net:layer_info(l)
      assert.are.same(e, { li.cin, li.cout, li.in_shape[3], li.stride })
    end
    -- (2,1,0,1,2,0,2,0,2,0,2,3,0,0,0,0,3,2,3,3) is 323 MFLOPs in the README
    local arch = { 2, 1, 0, 1, 2, 0, 2, 0, 2, 0, 2, 3, 0, 0, 0, 0, 3, 2, 3, 3 }
    for i = 1, 20 do arch[i] = arch[i] + 1 end
    local mf = net:flops(arch) / 1e6
    assert.is_true(math.abs(mf - 323) < 0.5, "MFLOPs " .. mf)
  end)

  it("runs one path that equals the stand-alone path network with the same weights", function()
    nasrt.manual_seed(1)
    local net = SN.spos(SPOS_TINY)
    local x = nasrt.randn { 4, 1, 8, 8 }
    for seed = 1, 3 do check_path_equality(net, x, random_arch(net:choices(), seed)) end
  end)

  it("gives gradients only to the sampled path; SGD leaves the other blocks untouched", function()
    nasrt.manual_seed(2)
    local net = SN.spos(SPOS_TINY)
    local x = nasrt.randn { 4, 1, 8, 8 }
    check_single_path_grads(net, x, labels(4, 10), { 1, 4, 3, 2 })
    check_single_path_grads(net, x, labels(4, 10), { 4, 2, 1, 3 })
  end)

  it("counts MACs from its per-layer table exactly as nn counts the path network", function()
    nasrt.manual_seed(3)
    local net = SN.spos {}
    local archs = { rep(1, 10), rep(4, 10) }
    for s = 1, 3 do archs[#archs + 1] = random_arch(net:choices(), s) end
    check_flops(net, { 1, 1, 28, 28 }, archs)
    -- the additive table drives nasrt.sampler's C fast path
    local t = net:flops_table(nil, 1e6)
    local lo, hi = net:flops(rep(1, 10)) / 1e6, net:flops(rep(3, 10)) / 1e6
    local s = nasrt.sampler.flops_bins { choices = net:choices(), seed = 1, bins = { { lo, hi } },
                                         flops = t }
    for _ = 1, 5 do
      local a = s:sample()
      local f = net:flops(a) / 1e6
      assert.is_true(f >= lo - 1e-9 and f <= hi + 1e-9)
    end
  end)

  it("builds fresh or affine path networks for retraining", function()
    nasrt.manual_seed(4)
    local net = SN.spos(SPOS_TINY)
    local arch = { 2, 3, 4, 1 }
    local fresh = net:path_network(arch, { weights = "fresh", affine = true })
    local nbn = 0
    for _, m in ipairs(fresh:modules()) do
      if m.__name == "BatchNorm2d" then
        assert.is_true(m.affine)
        nbn = nbn + 1
      end
    end
    assert.is_true(nbn > 0)
    assert.are.same({ 4, 10 }, fresh(nasrt.randn { 4, 1, 8, 8 }):shape())
    -- copying into affine BN starts from gamma = 1, beta = 0: same function
    local x = nasrt.randn { 4, 1, 8, 8 }
    local aff = net:path_network(arch, { weights = "copy", affine = true })
    net:eval()
    aff:eval()
    assert.is_true(H.maxdiff(net(x, arch), aff(x)) < 1e-6)
    assert.are.same({ "shufflenet_5x5", "shufflenet_7x7", "xception_3x3", "shufflenet_3x3" },
      net:arch_names(arch))
  end)

  it("rejects bad architectures and options with clear messages", function()
    local net = SN.spos(SPOS_TINY)
    local x = nasrt.randn { 2, 1, 8, 8 }
    assert.has_error(function() net(x, { 1, 2, 3 }) end,
      "spos:forward: arch has 3 entries, expected 4 (one per choice layer)")
    assert.has_error(function() net(x, { 1, 2, 3, 5 }) end, "spos:forward: arch[4] = 5 out of range 1..4")
    assert.has_error(function() net:flops({ 1, 2, 3, 0 }) end, "spos:flops: arch[4] = 0 out of range 1..4")
    assert.has_error(function() SN.spos { widht = 3 } end)
    assert.has_error(function() SN.spos { stem = 16, widths = { 16 }, repeats = { 1 } } end)
    assert.has_error(function() net:path_network({ 1, 1, 1, 1 }, { weights = "mirror" }) end)
  end)
end)

-- ---------------------------------------------------------------- FairNAS

describe("nasrt.supernet.fairnas", function()
  it("offers {e3, e6} x {k3, k5, k7} at every layer", function()
    nasrt.manual_seed(0)
    local net = SN.fairnas {}
    assert.are.same(rep(6, 12), net:choices())
    local ke = { { 3, 3 }, { 5, 3 }, { 7, 3 }, { 3, 6 }, { 5, 6 }, { 7, 6 } }
    for c = 1, 6 do
      local b = net.layers[2][c]
      assert.are.equal("MBConv", b.__name)
      assert.are.same(ke[c], { b.kernel_size, b.expand_ratio })
      assert.are.equal(24 * ke[c][2], b.mid)
    end
    assert.are.equal(SN.fairnas_choices[5], "mb_e6_k5")
    -- identity residual iff stride 1 and cin == cout
    assert.is_false(net.layers[1][1].use_residual)
    assert.is_true(net.layers[2][1].use_residual)
    assert.is_false(net.layers[4][1].use_residual)   -- 24 -> 40, stride 2
    assert.is_false(net.layers[7][1].use_residual)   -- 40 -> 80, stride 1
  end)

  it("has FairNAS' ImageNet layout with fairnas_paper (18 layers, fixed first/last blocks)", function()
    nasrt.manual_seed(0)
    local net = SN.fairnas(SN.fairnas_paper)
    assert.are.same(rep(6, 18), net:choices())
    assert.are.equal(32, net.stem[1].out_channels)
    assert.are.equal(2, net.stem[1].stride[1])
    local mbe1 = net.stem[4]
    assert.are.same({ 32, 16, 3, 1 }, { mbe1.in_channels, mbe1.out_channels, mbe1.kernel_size,
                                        mbe1.expand_ratio })
    local last = net.tail[1]
    assert.are.same({ 192, 320, 5, 6 }, { last.in_channels, last.out_channels, last.kernel_size,
                                          last.expand_ratio })
    assert.are.equal(1280, net.tail[2].out_channels)
    local strides = {}
    for l = 1, 18 do strides[l] = net:layer_info(l).stride end
    assert.are.same({ 2, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1 }, strides)
    assert.are.equal(7, net:layer_info(18).in_shape[3])
  end)

  it("runs one path that equals the stand-alone path network; MACs match nn", function()
    nasrt.manual_seed(5)
    local net = SN.fairnas(FAIR_TINY)
    local x = nasrt.randn { 4, 1, 8, 8 }
    for seed = 1, 3 do check_path_equality(net, x, random_arch(net:choices(), seed)) end
    local archs = {}
    for s = 1, 4 do archs[s] = random_arch(net:choices(), s) end
    check_flops(net, { 1, 1, 8, 8 }, archs)
    check_single_path_grads(net, x, labels(4, 10), { 6, 1, 3, 4 })
  end)

  it("trains every choice of every layer exactly S times under strict_fair (m paths a step)", function()
    nasrt.manual_seed(6)
    local net = SN.fairnas(FAIR_TINY)
    local L, m, S = 4, 6, 3
    local fair = nasrt.sampler.strict_fair { choices = net:choices(), seed = 11 }
    local opt = nasrt.optim.SGD(net:parameters(), { lr = 0.05, momentum = 0.9 })
    local x, y = nasrt.randn { 4, 1, 8, 8 }, labels(4, 10)
    local count = {}
    for l = 1, L do count[l] = rep(0, m) end
    for _ = 1, S do
      opt:zero_grad()
      local snap = {}
      for _, p in ipairs(net:parameters()) do snap[p] = p:detach():clone() end
      local paths = fair:sample()
      assert.are.equal(m, #paths)
      for _, arch in ipairs(paths) do
        -- which candidates does this backward touch?  (their gradient changes)
        local before = {}
        for l = 1, L do
          for c = 1, m do
            local g = net.layers[l][c]:parameters()[1].grad
            before[l * 10 + c] = g and g:clone() or false
          end
        end
        F.cross_entropy(net(x, arch), y):backward()   -- accumulates
        for l = 1, L do
          for c = 1, m do
            local g = net.layers[l][c]:parameters()[1].grad
            local b = before[l * 10 + c]
            local touched = g ~= nil and (b == false or H.maxdiff(g, b) > 0)
            if touched then count[l][c] = count[l][c] + 1 end
            assert.are.equal(c == arch[l], touched, ("layer %d choice %d"):format(l, c))
          end
        end
      end
      opt:step()    -- one update for the m paths: every candidate moved
      for l = 1, L do
        for c = 1, m do
          for _, p in ipairs(net.layers[l][c]:parameters()) do
            assert.is_true(H.maxdiff(p, snap[p]) > 0, ("layer %d choice %d not updated"):format(l, c))
          end
        end
      end
    end
    for l = 1, L do assert.are.same(rep(S, m), count[l]) end
  end)
end)

-- ---------------------------------------------------------------- AGNAS macro

describe("nasrt.supernet.agnas_macro", function()
  it("has 6 MBConv candidates per layer plus skip where stride 1 and cin == cout", function()
    nasrt.manual_seed(0)
    local net = SN.agnas_macro {}
    assert.are.same({ 6, 7, 6, 7, 6, 7, 6 }, net:choices())
    local layer = net.layers[2]
    assert.is_true(layer.has_skip)
    assert.are.equal(7, layer.n)
    assert.are.equal(16, layer.attention.ratio)
    assert.are.equal(7 * 24, layer.attention.channels)
    local ke = { { 3, 3 }, { 3, 6 }, { 5, 3 }, { 5, 6 }, { 7, 3 }, { 7, 6 } }
    for c = 1, 6 do
      local b = layer.candidates[c]
      assert.are.same(ke[c], { b.kernel_size, b.expand_ratio })
    end
    assert.are.equal("skip", net:layer_info(2).names[7])
    local paper = SN.agnas_macro(SN.agnas_macro_paper)
    assert.are.equal(21, #paper:choices())
    local skips = 0
    for _, n in ipairs(paper:choices()) do if n == 7 then skips = skips + 1 end end
    assert.are.equal(15, skips)   -- 21 layers minus the 6 stage-first layers
  end)

  it("mixes all candidates with its attention and accumulates per-candidate scores", function()
    nasrt.manual_seed(7)
    local net = SN.agnas_macro(AGNAS_TINY)
    net:eval()
    assert.are.same({ 7, 7, 6, 7 }, net:choices())
    local expect = {}
    for l, n in ipairs(net:choices()) do expect[l] = rep(0, n) end
    for _ = 1, 2 do
      local x = nasrt.randn { 3, 1, 8, 8 }
      local logits, weights = net(x)
      assert.are.same({ 3, 10 }, logits:shape())
      for l, w in ipairs(weights) do
        local n = net:choices()[l]
        local C = w:shape()[2] // n
        for i = 1, n do
          -- compute_attention.py: sum of the candidate's weights / channels
          local s = F.sum(F.narrow(w, 2, (i - 1) * C + 1, C)):item() / C
          expect[l][i] = expect[l][i] + s
        end
      end
    end
    local sc, nb = net:scores()
    assert.are.equal(2, nb)
    for l = 1, #expect do
      for i = 1, #expect[l] do
        assert.is_true(math.abs(sc[l][i] - expect[l][i]) < 1e-4 * (1 + math.abs(expect[l][i])))
      end
    end
    local arch = net:derive()
    for l, row in ipairs(sc) do
      for i = 1, #row do assert.is_true(row[arch[l]] >= row[i]) end
    end
    -- argmax may pick skip (index 7)
    net._scores[1][7] = 1e9
    local a2, names = net:derive()
    assert.are.equal(7, a2[1])
    assert.are.equal("skip", names[1])
    net:reset_scores()
    local _, n0 = net:scores()
    assert.are.equal(0, n0)
    assert.has_error(function() net:derive() end)
  end)

  it("gives every candidate and every attention a gradient in the supernet forward", function()
    nasrt.manual_seed(8)
    local net = SN.agnas_macro(AGNAS_TINY)
    net:zero_grad()
    F.cross_entropy((net(nasrt.randn { 4, 1, 8, 8 })), labels(4, 10)):backward()
    for _, p in ipairs(net:parameters()) do assert.is_not_nil(p.grad) end
  end)

  it("runs a derived path (skip included) equal to its stand-alone network", function()
    nasrt.manual_seed(9)
    local net = SN.agnas_macro(AGNAS_TINY)
    local x = nasrt.randn { 4, 1, 8, 8 }
    for _, arch in ipairs { { 7, 2, 5, 7 }, { 1, 7, 6, 3 }, random_arch(net:choices(), 3) } do
      check_path_equality(net, x, arch)
    end
    check_flops(net, { 1, 1, 8, 8 }, { { 7, 7, 1, 7 }, { 6, 6, 6, 6 }, random_arch(net:choices(), 4) })
    -- skip costs nothing and adds no block to the path network
    local t = net:flops_table()
    assert.are.equal(0, t.per_gene[1][7])
    assert.are.equal(2, #net:path_network({ 7, 2, 1, 7 }).features)
    check_single_path_grads(net, x, labels(4, 10), { 2, 7, 4, 1 })
  end)

  it("passes the gradient check of its attention weights (tiny config)", function()
    nasrt.manual_seed(10)
    local net = SN.agnas_macro { input_size = 6, stem = 4, first_block = 4,
                                 stages = { { 4, 1, 1 }, { 8, 1, 2 } }, head = 8, classes = 3 }
    net.record_scores = false
    net:eval()
    local x = nasrt.randn { 2, 1, 6, 6 }
    for _, l in ipairs { 1, 2 } do
      local att = net.layers[l].attention
      local ok, msg = H.gradcheck(function() return (net(x)) end, { att.fc1.weight, att.fc2.weight },
        { max_elems = 32 })
      assert.is_true(ok, msg)
    end
    -- and through the training-mode (batch statistics) path
    net:train()
    local att = net.layers[1].attention
    local ok, msg = H.gradcheck(function() return (net(x)) end, { att.fc2.weight },
      { max_elems = 16 })
    assert.is_true(ok, msg)
  end)
end)
