-- bench/sep_segment.lua: one SepConv half of the DARTS step as the runtime
-- runs it today (NCHW, op by op): F.sep_conv2d (ReLU, depthwise KxK,
-- pointwise 16x16) and then the batch norm (affine=False, training) on
-- [64,16,28,28], forward and backward, 1 thread, best of 20.  The twin of bench/nhwc_sep_proto.c,
-- which runs the same segment fused and channels-last:
--   ./build/nasrt bench/sep_segment.lua     ./build/nhwc_sep_proto 3
local F = nasrt.F
nasrt.set_num_threads(1)
nasrt.manual_seed(1)
local x, g = nasrt.randn { 64, 16, 28, 28 }, nasrt.randn { 64, 16, 28, 28 }
x:requires_grad(true)
for _, k in ipairs { 3, 5 } do
  local wd, wp = nasrt.randn { 16, 1, k, k }, nasrt.randn { 16, 16, 1, 1 }
  wd:requires_grad(true); wp:requires_grad(true)
  local opt = { stride = 1, padding = k // 2, dilation = 1, relu = true }
  local sep, bn, bwd, sbwd = math.huge, math.huge, math.huge, math.huge
  for _ = 1, 20 do
    local t0 = nasrt.clock()
    local y = F.sep_conv2d(x, wd, wp, opt)
    local t1 = nasrt.clock()
    local z = F.batch_norm(y, nil, nil, nil, nil)
    local t2 = nasrt.clock()
    z:backward(g)
    local t3 = nasrt.clock()
    sep, bn, bwd = math.min(sep, t1 - t0), math.min(bn, t2 - t1), math.min(bwd, t3 - t2)
    x:zero_grad(); wd:zero_grad(); wp:zero_grad()
    -- the separable conv's backward alone (dx, dWd, dWp: what
    -- nhwc_sep_proto's backward computes)
    y = F.sep_conv2d(x, wd, wp, opt)
    t0 = nasrt.clock()
    y:backward(g)
    sbwd = math.min(sbwd, nasrt.clock() - t0)
    x:zero_grad(); wd:zero_grad(); wp:zero_grad()
  end
  local gflop = 2 * 64 * 28 * 28 * 16 * (k * k + 16) / 1e9
  print(("nchw relu-dw%dx%d-pw %.3f ms (%.1f GFLOP/s) + batch norm %.3f ms = forward %.3f ms;"
    .. " backward of both %.3f ms (of the conv alone %.3f ms, %.1f GFLOP/s)"):format(k, k, sep * 1e3,
    gflop / sep, bn * 1e3, (sep + bn) * 1e3, bwd * 1e3, sbwd * 1e3, 2 * gflop / sbwd))
end
