-- Specs of nasrt.supernet.elastic, the AttentiveNAS / BigNAS elastic MBConv
-- supernet (reference/oneshot.md §3): gene encoding, the slicing rules of
-- §3.2 (first channels, centre kernel crop, first-d blocks, make_divisible,
-- shortcuts, BN with sliced running statistics), supernet forward = the
-- extracted static subnet's forward, exact MACs (§3.3) and parameters
-- against nn's own counting of the extracted subnet, gradients, and
-- gradient checks of a tiny sub-path.
local nasrt = require "nasrt"
local H = require "helpers"
local nn, F, SN = nasrt.nn, nasrt.F, nasrt.supernet
local blocks = nasrt.blocks

-- a tiny space: odd resolutions exercise the padded average-pool shortcut
local TINY = {
  in_channels = 1, classes = 3, resolutions = { 5, 7 },
  first_conv = { width = { 4, 8 }, stride = 1 },
  stages = {
    { width = { 4, 8 }, depth = { 1, 2 }, kernel = { 3 }, expand = { 1 }, stride = 1, se = false },
    { width = { 8, 16 }, depth = { 1, 2 }, kernel = { 3, 5 }, expand = { 2, 3 }, stride = 2, se = true },
    { width = { 16 }, depth = { 1, 2 }, kernel = { 3, 5 }, expand = { 2 }, stride = 1, se = true },
  },
  last_conv = { width = { 8, 12 } }, act = "swish", v3_head = true,
}

local function rep(v, n)
  local t = {}
  for i = 1, n do t[i] = v end
  return t
end

-- random weights and BN statistics (the default init zeroes the residual
-- BN gammas, which would hide the main branches)
local function randomize(net, scale)
  nasrt.no_grad(function()
    for _, p in ipairs(net:parameters()) do p:copy_(nasrt.randn(p:shape()):mul_(scale or 0.3)) end
    for _, nb in ipairs(net:named_buffers()) do
      local name, b = nb[1], nb[2]
      if name:match("running_mean$") then b:copy_(nasrt.randn(b:shape()):mul_(0.1)) end
      if name:match("running_var$") then b:copy_(nasrt.rand(b:shape()):add_(0.5)) end
    end
  end)
end

local function configs(net, n, seed)
  local s = nasrt.sampler.sandwich { choices = net:choices(), seed = seed or 1 }
  local out = { net:sample_max(), net:sample_min() }
  for _ = 1, n do out[#out + 1] = net:decode(s:random()) end
  return out
end

local function cfg_str(c)
  return ("res %s w{%s} d{%s} k{%s} e{%s}"):format(tostring(c.resolution), table.concat(c.width, ","),
    table.concat(c.depth, ","), table.concat(c.kernel, ","), table.concat(c.expand, ","))
end

describe("nasrt.supernet.elastic", function()
  it("encodes subnets as AttentiveNAS' flat gene list (resolution, width, depth, kernel, expand)", function()
    nasrt.manual_seed(0)
    local net = SN.elastic {}
    local ch = net:choices()
    assert.are.equal(1 + 9 + 3 * 7, #ch)
    assert.are.same({ 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 2, 1, 2, 2, 2, 2, 2, 2, 2, 1, 3, 3, 3, 3,
                      1, 1 }, ch)
    assert.are.equal(31, #net:gene_names())
    assert.are.equal("kernel3", net:gene_names()[1 + 9 + 7 + 3])
    -- the sandwich sampler's max / min genes are the largest / smallest subnets
    local s = nasrt.sampler.sandwich { choices = ch, seed = 1 }
    assert.are.same(net:sample_max(), net:decode(s:max()))
    assert.are.same(net:sample_min(), net:decode(s:min()))
    assert.are.same({ 24, 24, 32, 40, 56, 72, 112, 128, 640 }, net:sample_max().width)
    assert.are.same({ 1, 1, 1, 1, 1, 1, 1 }, net:sample_min().depth)
    for _ = 1, 20 do
      local g = s:random()
      assert.are.same(g, net:encode(net:decode(g)))
    end
    -- aliases kernel_size / expand_ratio are accepted
    local c = net:sample_min()
    local alias = { resolution = 28, width = c.width, depth = c.depth, kernel_size = c.kernel,
                    expand_ratio = c.expand }
    assert.are.same(net:config(c), net:config(alias))
  end)

  it("forwards exactly like the extracted subnet (max, min, random; train and eval)", function()
    nasrt.manual_seed(1)
    local net = SN.elastic {}
    randomize(net)
    local x = nasrt.randn { 3, 1, 28, 28 }
    for _, cfg in ipairs(configs(net, 3, 2)) do
      local sub = net:subnet(cfg)
      assert.are.equal("ElasticSubnet", sub.__name)
      -- eval first: the subnet's BN (momentum 0.1) moves its statistics in
      -- training mode, the supernet's (momentum 0) does not
      net:eval()
      sub:eval()
      assert.is_true(H.maxdiff(net(x, cfg), sub(x)) == 0, "eval " .. cfg_str(cfg))
      net:train()
      sub:train()
      assert.is_true(H.maxdiff(net(x, net:encode(cfg)), sub(x)) == 0, "train " .. cfg_str(cfg))
    end
  end)

  it("gives flops(cfg) and params(cfg) equal to nn's count of the extracted subnet", function()
    nasrt.manual_seed(2)
    local net = SN.elastic {}
    for _, cfg in ipairs(configs(net, 6, 3)) do
      local sub = net:subnet(cfg)
      local counted = sub:macs({ 1, 1, 28, 28 })     -- a traced forward counting conv/linear
      assert.are.equal(counted, net:flops(cfg), cfg_str(cfg))
      assert.are.equal(sub:num_parameters(), net:params(cfg), cfg_str(cfg))
    end
    -- and in the tiny space, at both resolutions, v3 head or not
    for _, v3 in ipairs { true, false } do
      local t = SN.elastic { space = TINY, v3_head = v3 }
      for _, cfg in ipairs(configs(t, 6, 4)) do
        for _, r in ipairs { 5, 7 } do
          cfg.resolution = r
          local sub = t:subnet(cfg)
          assert.are.equal(sub:macs({ 1, 1, r, r }), t:flops(cfg), cfg_str(cfg))
          assert.are.equal(sub:num_parameters(), t:params(cfg))
        end
      end
    end
  end)

  it("reproduces AttentiveNAS-A0's 203 MFLOPs with the paper's space (no network built)", function()
    local A = SN.elastic_spaces.attentivenas
    local a0 = { resolution = 192, width = { 16, 16, 24, 32, 64, 112, 192, 216, 1792 },
                 depth = { 1, 3, 3, 3, 3, 3, 1 }, kernel = rep(3, 7), expand = { 1, 4, 4, 4, 4, 6, 6 } }
    local mf = SN.elastic_flops(A, a0) / 1e6
    assert.is_true(math.abs(mf - 203) < 1, "A0 MFLOPs " .. mf)
    -- the min subnet of the space at 192 is A0
    local min = rep(1, 31)
    assert.are.equal(SN.elastic_flops(A, a0), SN.elastic_flops(A, min))
    assert.is_true(SN.elastic_params(A, a0) > 0)
  end)

  it("slices first channels, centre-crops kernels and runs the first d blocks (§3.2)", function()
    nasrt.manual_seed(3)
    local net = SN.elastic { space = TINY }
    randomize(net)
    local cfg = { resolution = 7, width = { 4, 8, 8, 16, 8 }, depth = { 2, 1, 2 }, kernel = { 3, 3, 5 },
                  expand = { 1, 2, 2 } }
    local sub = net:subnet(cfg)
    assert.are.equal(2 + 1 + 2, #sub.blocks)    -- the first d = 2, 1, 2 blocks of the stages
    -- stage 2, block 1: cin 8, t 2 -> mid = make_divisible(16, 8) = 16 of the
    -- allocated 24 (max cin 8 x max t 3); SE mid = make_divisible(16 // 4, 8) = 8
    local sb = sub.blocks[3]
    local eb = net.blocks[net._groups[2][1]]
    assert.are.equal(16, sb.mb.mid)
    assert.are.equal(8, sb.mb.se.mid)
    assert.are.equal(blocks.make_divisible(16, 8), 16)
    -- first channels of the expand conv
    local we, wf = sb.mb.expand[1].weight, eb.expand_conv.weight
    assert.are.same({ 16, 8, 1, 1 }, we:shape())
    assert.are.same({ 24, 8, 1, 1 }, wf:shape())
    assert.is_true(H.maxdiff(we, F.narrow(wf, 1, 1, 16)) == 0)
    -- centre 3x3 of the stored 5x5 depthwise kernel, first 16 channels
    local wd, wdf = sb.mb.depthwise[1].weight, eb.dw_conv.weight
    assert.are.same({ 16, 1, 3, 3 }, wd:shape())
    assert.are.same({ 24, 1, 5, 5 }, wdf:shape())
    local centre = F.narrow(F.narrow(F.narrow(wdf, 1, 1, 16), 3, 2, 3), 4, 2, 3)
    assert.is_true(H.maxdiff(wd, centre) == 0)
    -- SE: reduce W[:se_mid, :mid], expand W[:mid, :se_mid]
    assert.is_true(H.maxdiff(sb.mb.se.fc2.weight,
      F.narrow(F.narrow(eb.se.expand.weight, 1, 1, 16), 2, 1, 8)) == 0)
    -- BN: the first C entries of all four tensors
    local bn, ebn = sb.mb.project[2], eb.project_bn
    assert.is_true(H.maxdiff(bn.running_var, F.narrow(ebn.running_var, 1, 1, 8)) == 0)
    assert.is_true(H.maxdiff(bn.weight, F.narrow(ebn.weight, 1, 1, 8)) == 0)
    -- shortcuts: identity at stride 1 and equal widths; pool + 1x1 conv otherwise
    assert.are.same({ 8, 4, 1, 1 }, sub.blocks[1].shortcut.weight:shape())   -- 4 -> 8
    assert.is_nil(sub.blocks[2].shortcut)                       -- 8 -> 8, stride 1: identity
    assert.is_nil(sb.shortcut)                                   -- 8 -> 8, stride 2: pool only
    assert.are.same({ 16, 8, 1, 1 }, sub.blocks[4].shortcut.weight:shape())   -- 8 -> 16
    assert.are.equal(2, sb.stride)
    -- stage 1 has no expand conv (t = 1): mid = c_in
    assert.is_nil(sub.blocks[1].mb.expand)
    assert.are.equal(4, sub.blocks[1].mb.mid)
  end)

  it("pools odd sizes with padding 1 in the shortcut, like AttentiveNAS", function()
    nasrt.manual_seed(4)
    local net = SN.elastic { space = TINY }
    randomize(net)
    local cfg = { resolution = 7, width = { 8, 8, 8, 16, 12 }, depth = { 1, 1, 1 }, kernel = { 3, 3, 3 },
                  expand = { 1, 2, 2 } }
    net:eval()
    local sub = net:subnet(cfg)
    sub:eval()
    local x = nasrt.randn { 2, 1, 7, 7 }
    local h = sub.blocks[1](sub.first_conv(x))
    local y = sub.blocks[2](h)
    assert.are.same({ 2, 8, 4, 4 }, y:shape())
    -- the shortcut part is avg_pool2d(h, 2, padding = 1) (count_include_pad)
    local main = sub.blocks[2].mb(h)
    local pooled = F.avg_pool2d(h, { kernel = 2, stride = 2, padding = 1 })
    assert.is_true(H.maxdiff(y - main, pooled) < 1e-6)
    assert.is_true(H.maxdiff(net(x, cfg), sub(x)) == 0)
  end)

  it("trains only the active slices: deeper blocks get no gradient, unused channels a zero one", function()
    nasrt.manual_seed(5)
    local net = SN.elastic { space = TINY }
    randomize(net)
    net:zero_grad()
    local cfg = { resolution = 5, width = { 4, 4, 8, 16, 8 }, depth = { 1, 1, 2 }, kernel = { 3, 3, 3 },
                  expand = { 1, 2, 2 } }
    local y = nasrt.tensor { 0, 1 }
    F.cross_entropy(net(nasrt.randn { 2, 1, 5, 5 }, cfg), y):backward()
    local cin = cfg.width[1]
    for s, grp in ipairs(net._groups) do
      for j, idx in ipairs(grp) do
        local b = net.blocks[idx]
        local sc = b.shortcut_conv and b.shortcut_conv.weight
        for _, p in ipairs(b:parameters()) do
          if j > cfg.depth[s] then
            assert.is_nil(p.grad, ("stage %d block %d"):format(s, j))
          elseif p == sc then
            -- the 1x1 shortcut runs only when the widths differ
            assert.are.equal(cin ~= cfg.width[s + 1], p.grad ~= nil, ("stage %d block %d"):format(s, j))
          else
            assert.is_not_nil(p.grad, ("stage %d block %d"):format(s, j))
          end
        end
        if j <= cfg.depth[s] then cin = cfg.width[s + 1] end
      end
    end
    -- in this config stage 1's first block is 4 -> 4: its shortcut conv was idle
    assert.is_nil(net.blocks[1].shortcut_conv.weight.grad)
    -- the first conv's weight is [8, 1, 3, 3]; only the first 4 outputs are used
    local g = net.first_conv.weight.grad
    assert.is_true(F.sum(F.narrow(g, 1, 1, 4):abs()):item() > 0)
    assert.are.equal(0, F.sum(F.narrow(g, 1, 5, 4):abs()):item())
    -- the depthwise kernel of stage 2 (k = 3 of 5): only the centre has gradient
    local dw = net.blocks[net._groups[2][1]].dw_conv.weight.grad
    assert.are.equal(0, F.sum(F.narrow(dw, 3, 1, 1):abs()):item())
    assert.are.equal(0, F.sum(F.narrow(dw, 4, 5, 1):abs()):item())
    assert.is_true(F.sum(F.narrow(F.narrow(dw, 3, 2, 3), 4, 2, 3):abs()):item() > 0)
  end)

  it("keeps BN statistics at max size and updates only the active slice", function()
    nasrt.manual_seed(6)
    local net = SN.elastic { space = TINY, bn_momentum = 0.1 }
    local bn = net.first_bn
    local before = bn.running_mean:clone()
    nasrt.no_grad(function() net(nasrt.randn { 4, 1, 5, 5 }, net:sample_min()) end)
    assert.is_true(H.maxdiff(F.narrow(bn.running_mean, 1, 1, 4), F.narrow(before, 1, 1, 4)) > 0)
    assert.is_true(H.maxdiff(F.narrow(bn.running_mean, 1, 5, 4), F.narrow(before, 1, 5, 4)) == 0)
    -- AttentiveNAS' default: momentum 0, statistics untouched in training
    local net0 = SN.elastic { space = TINY }
    nasrt.no_grad(function() net0(nasrt.randn { 4, 1, 7, 7 }, net0:sample_max()) end)
    assert.is_true(H.maxdiff(net0.first_bn.running_mean, 0) == 0)
    -- nn.recalibrate_bn works on an extracted subnet
    local sub = net0:subnet(net0:sample_min())
    local batches = { nasrt.randn { 4, 1, 5, 5 }, nasrt.randn { 4, 1, 5, 5 } }
    assert.are.equal(2, nn.recalibrate_bn(sub, batches))
    assert.is_true(H.maxdiff(sub.first_conv[2].running_mean, 0) > 0)
  end)

  it("zero-initialises the residual BN gammas and applies drop-connect in training only", function()
    nasrt.manual_seed(7)
    local net = SN.elastic { space = TINY }
    for _, b in ipairs(net.blocks:children()) do
      assert.are.equal(0, F.sum(b.project_bn.weight:abs()):item())
    end
    randomize(net)
    net:set_dropout(0.2, 0.5)
    local late = net.blocks[net._groups[3][2]]
    assert.is_true(late.drop_connect_rate > 0)
    assert.are.equal(0, net.blocks[1].drop_connect_rate)
    local x = nasrt.randn { 4, 1, 7, 7 }
    net:eval()
    local cfg = net:sample_max()
    assert.is_true(H.maxdiff(net(x, cfg), net:subnet(cfg)(x)) == 0)
    net:set_dropout(0, 0)
    assert.are.equal(0, late.drop_connect_rate)
  end)

  it("passes gradient checks through a tiny sub-path (weights, SE, shortcut conv, input)", function()
    nasrt.manual_seed(8)
    local net = SN.elastic { space = TINY, bn_momentum = 0.1 }
    randomize(net, 0.4)
    local cfg = { resolution = 5, width = { 4, 8, 8, 16, 12 }, depth = { 1, 1, 1 }, kernel = { 3, 3, 3 },
                  expand = { 1, 2, 2 } }
    local x = H.leaf({ 2, 1, 5, 5 })
    local b2 = net.blocks[net._groups[2][1]]
    local b3 = net.blocks[net._groups[3][1]]
    net:eval()
    local ok, msg = H.gradcheck(function() return net(x, cfg) end,
      { x, b2.expand_conv.weight, b2.dw_conv.weight, b2.se.reduce.weight, b3.shortcut_conv.weight,
        net.feature_mix.weight }, { max_elems = 24 })
    assert.is_true(ok, msg)
    -- training mode: batch statistics of the sliced BNs
    net:train()
    local ok2, msg2 = H.gradcheck(function() return net(x, cfg) end,
      { b2.project_conv.weight, net.blocks[1].dw_conv.weight }, { max_elems = 24 })
    assert.is_true(ok2, msg2)
  end)

  it("builds the AttentiveNAS space from elastic_spaces and checks configs and inputs", function()
    local net = SN.elastic { space = TINY }
    local x = nasrt.randn { 2, 1, 5, 5 }
    local bad = {
      { function() net(x, { resolution = 7, width = { 4, 4, 8, 16, 8 }, depth = { 1, 1, 1 },
                            kernel = { 3, 3, 3 }, expand = { 1, 2, 2 } }) end, "resolution is 7" },
      { function() net:flops({ width = { 4, 4, 8, 16, 9 }, depth = { 1, 1, 1 }, kernel = { 3, 3, 3 },
                               expand = { 1, 2, 2 } }) end, "width[5] = 9 is not one of {8, 12}" },
      { function() net:flops({ width = { 4, 4, 8, 16, 8 }, depth = { 1, 1, 1 }, kernel = { 3, 3, 3 },
                               expand = { 1, 2, 4 } }) end, "expand[3] = 4 is not one of {2}" },
      { function() net:decode(rep(1, 3)) end, "genes must be a list of 15 choice indices" },
      { function() net:decode({ 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 }) end, "gene 1 = 3 out of range 1..2" },
      { function() SN.elastic { space = "tiny" } end, "unknown space 'tiny'" },
      { function() SN.elastic { widht = 1 } end, "unknown option 'widht'" },
      { function() net:flops({ width = { 4, 4, 8, 16, 8 }, depth = { 1, 1, 1 }, kernel = { 3, 3, 3 },
                               expand = { 1, 2, 2 }, res = 5 }) end, "unknown config key 'res'" },
    }
    for _, b in ipairs(bad) do
      local ok, err = pcall(b[1])
      assert.is_false(ok)
      assert.matches(b[2], tostring(err), 1, true)
    end
    assert.has_error(function()
      SN.elastic { space = TINY, stages = { { width = { 8 }, depth = { 1 }, kernel = { 3 }, expand = { 1, 4 } } } }
    end)
    -- a gene list works wherever a config does
    assert.are.equal(net:flops(net:sample_min()), net:flops(rep(1, 15)))
    assert.are.same({ 2, 3 }, net(x, rep(1, 15)):shape())
  end)
end)
