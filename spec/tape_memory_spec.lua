-- What the autograd tape keeps alive (nasrt.tape_memory): ops whose
-- backward needs only shapes or their own output do not hold their inputs'
-- data, so a conv output dies as soon as the BatchNorm after it has run.
-- Byte counts are storage sizes: numel * 4 rounded up to 64.
local nasrt = require "nasrt"
local F = nasrt.F

local function bytes(n) return (n * 4 + 63) // 64 * 64 end

describe("nasrt.tape_memory", function()
  it("is empty for a tensor without a tape", function()
    local total, by = nasrt.tape_memory(nasrt.ones { 3 })
    assert.are.equal(0, total)
    assert.are.same({}, by)
  end)

  it("counts a conv's input and weight, each storage once", function()
    local x = nasrt.randn { 2, 3, 4, 4 }
    local w = nasrt.randn { 4, 3, 3, 3 }:requires_grad(true)
    local y = F.conv2d(x, w, nil, { padding = 1 })
    local total, by = nasrt.tape_memory(F.add(y, y))
    -- add keeps no data (shapes only), conv keeps x and w
    assert.are.same({ input = bytes(96), parameter = bytes(108) }, by)
    assert.are.equal(bytes(96) + bytes(108), total)
  end)

  it("drops a conv output once BatchNorm (affine=false) has normalised it", function()
    local x = nasrt.randn { 2, 3, 4, 4 }
    local w = nasrt.randn { 4, 3, 3, 3 }:requires_grad(true)
    local y = F.batch_norm(F.conv2d(x, w, nil, { padding = 1 }), nil, nil, nil, nil,
      { training = true })
    local _, by = nasrt.tape_memory(y)
    assert.is_nil(by.conv2d)
    assert.are.equal(bytes(128), by["saved by batch_norm"])
    -- an affine BatchNorm needs its input
    local g = nasrt.ones { 4 }:requires_grad(true)
    local z = F.batch_norm(F.conv2d(x, w, nil, { padding = 1 }), nil, nil, g, nil,
      { training = true })
    _, by = nasrt.tape_memory(z)
    assert.are.equal(bytes(128), by.conv2d)
    assert.is_nil(by["saved by batch_norm"])
  end)

  it("keeps only ReLU's output and nothing of pools' inputs", function()
    local x = nasrt.randn { 1, 2, 6, 6 }:requires_grad(true)
    local h = F.scale(x, 2.0, 0.0)
    local r = F.relu(h)
    local _, by = nasrt.tape_memory(r)
    assert.is_nil(by.affine)
    assert.are.equal(bytes(72), by["saved by relu"])
    local p = F.max_pool2d(F.scale(x, 2.0, 0.0), { kernel = 3, stride = 1, padding = 1 })
    local a = F.avg_pool2d(F.scale(x, 2.0, 0.0), { kernel = 3, stride = 1, padding = 1 })
    local total
    total, by = nasrt.tape_memory(F.add(p, a))
    assert.are.same({ parameter = bytes(72) }, by) -- x itself, a leaf the scales hold
    assert.are.equal(bytes(72), total)
  end)

  it("SepConv runs its ReLU-depthwise-1x1 runs fused: same numbers, less tape", function()
    local blocks = nasrt.blocks
    for _, m in ipairs { blocks.SepConv(4, 6, 3, 1, 1, false), blocks.DilConv(4, 6, 5, 2, 4, 2, false) } do
      nasrt.manual_seed(3)
      local x = nasrt.randn { 2, 4, 9, 9 }:requires_grad(true)
      local function run(fwd)
        for _, p in ipairs(m:parameters()) do p.grad = nil end
        x.grad = nil
        local y = fwd(m, x)
        local r = nasrt.randn(y:shape())
        F.sum(F.mul(y, r)):backward()
        local g = { x.grad:clone() }
        for _, p in ipairs(m:parameters()) do g[#g + 1] = p.grad:clone() end
        return y, g
      end
      nasrt.manual_seed(5)
      local y1, g1 = run(m.forward)
      nasrt.manual_seed(5)
      local y2, g2 = run(nasrt.nn.Sequential.forward)
      assert.are.equal(0, (y1 - y2):abs():max():item()) -- forward: bit-identical
      for i = 1, #g1 do assert.allclose(g1[i], g2[i], 1e-5) end
      -- the tape keeps the input and the BN outputs (+ ReLU/conv outputs unfused)
      local fused = nasrt.tape_memory(m(x))
      local plain = nasrt.tape_memory(nasrt.nn.Sequential.forward(m, x))
      assert.is_true(fused < plain, ("fused %d vs plain %d bytes"):format(fused, plain))
    end
  end)

  it("frees what backward has used: live bytes return to the leaves", function()
    collectgarbage()
    local before = nasrt.memory().live_bytes
    local x = nasrt.randn { 4, 3, 8, 8 }
    local w = nasrt.randn { 3, 3, 3, 3 }:requires_grad(true)
    local loss = F.sum(F.relu(F.batch_norm(F.conv2d(x, w, nil, { padding = 1 }), nil, nil, nil,
      nil, { training = true })))
    loss:backward()
    loss = nil
    collectgarbage()
    -- x, w and w.grad remain
    assert.are.equal(before + bytes(768) + 2 * bytes(81), nasrt.memory().live_bytes)
  end)

  it("frees the dead tensors of a loop that never runs backward, old ones too", function()
    -- each round keeps a 32 MB tensor alive while 160 MB of temporaries
    -- pass (young collections every 64 MB: it turns old), then drops it;
    -- only a full collection frees an old tensor, and with no backward to
    -- run one the 20 dropped tensors (640 MB) stayed allocated -- under
    -- no_grad, and with gradients on, where each also held its tape
    local function peak_of(round)
      collectgarbage()
      local base, peak = nasrt.memory().live_bytes, 0
      for _ = 1, 20 do
        peak = math.max(peak, round() - base)
      end
      return peak
    end
    local function round()
      local keep = nasrt.zeros { 8, 1024, 1024 }
      for _ = 1, 20 do nasrt.zeros { 2, 1024, 1024 } end
      assert.are.equal(8 * 1024 * 1024, keep:numel())
      return nasrt.memory().live_bytes
    end
    local w = nasrt.ones { 1 }:requires_grad(true)
    local function round_grad() -- the kept tensor is an op's output, its tape alive
      local keep = F.mul(nasrt.zeros { 8, 1024, 1024 }, w)
      for _ = 1, 20 do nasrt.zeros { 2, 1024, 1024 } end
      assert.is_true(nasrt.tape_memory(keep) >= 32 * 2 ^ 20) -- mul keeps its input
      return nasrt.memory().live_bytes
    end
    -- the bound: 256 MB past twice the mark, plus one 64 MB interval
    local p1 = nasrt.no_grad(function() return peak_of(round) end)
    assert.is_true(p1 < 400 * 2 ^ 20, ("no_grad: peak %.0f MB live"):format(p1 / 2 ^ 20))
    local p2 = peak_of(round_grad)
    assert.is_true(p2 < 400 * 2 ^ 20, ("gradients on: peak %.0f MB live"):format(p2 / 2 ^ 20))
    collectgarbage()
  end)
end)
