--- Misuse cases: nasrt.blocks (see spec/misuse.lua).
local nasrt = require "nasrt"
local B = nasrt.blocks

local x8 = nasrt.randn({2, 8, 6, 6})
local x3 = nasrt.randn({2, 3, 6, 6})
local nan = 0 / 0
local se, cbam, bam = B.SE(8), B.CBAM(16), B.BAM(16)
local ge, da = B.GEThetaPlus(8, 6), B.DoubleAttention(8)
local att = B.AGNASAttention(4, 2)
local mb = B.MBConv(8, 8, 3, 1, 3)
local sn = B.ShuffleNetBlock(4, 8, 4, 3, 1)
local sx = B.ShuffleXception(4, 8, 4, 1)
local fr = B.FactorizedReduce(8, 8)
local rb = B.ResNetBasicBlock(8, 8, 1)
local zero = B.NB201Zero(8, 16, 2)

return {
  -- functions -------------------------------------------------------------
  {"blocks.activation", "an unknown name", function() return B.activation("gelu") end, "activation: unknown activation 'gelu' (expected one of"},
  {"blocks.activation", "nil", function() return B.activation() end, "activation: unknown activation 'nil'"},
  {"blocks.darts_search_op", "an unknown op", function() return B.darts_search_op("conv_9x9", 8, 1) end, "darts_search_op: unknown op 'conv_9x9'"},
  {"blocks.darts_search_op", "stride 3", function() return B.darts_search_op("max_pool_3x3", 8, 3) end, "PoolBN: stride must be 1 or 2, got 3"},
  {"blocks.darts_search_op", "0 channels", function() return B.darts_search_op("sep_conv_3x3", 0, 1) end, "SepConv: cin must be an integer >= 1, got 0"},
  {"blocks.forward_but_last", "not a module", function() return B.forward_but_last("seq", nasrt.randn({1, 4, 4, 4})) end, "forward_but_last: expected a module, got string"},
  {"blocks.forward_but_last", "a module without children", function() return B.forward_but_last(nasrt.nn.ReLU(), nasrt.randn({1, 4, 4, 4})) end, "forward_but_last: ReLU has no children"},
  {"blocks.forward_but_last", "an input of the wrong channels", function()
    return B.forward_but_last(B.SepConv(4, 4, 3, 1, 1, false), nasrt.randn({1, 3, 6, 6})) end, "sep_conv2d", "[1,3,6,6]"},
  {"blocks.make_divisible", "a string", function() return B.make_divisible("24") end, "make_divisible: v must be a number, got 24"},
  {"blocks.make_divisible", "divisor 0", function() return B.make_divisible(24, 0) end, "make_divisible: divisor must be a positive integer, got 0"},
  {"blocks.make_divisible", "NaN", function() return B.make_divisible(nan) end, "make_divisible: v must be a number"},
  {"blocks.py_round", "a string", function() return B.py_round("2.5") end, "py_round: expected a number, got string"},
  {"blocks.global_avg_pool", "nil", function() return B.global_avg_pool(nil) end, "global_avg_pool: expected a tensor input, got nil"},
  {"blocks.global_avg_pool", "a 2-d input", function() return B.global_avg_pool(nasrt.randn({2, 3})) end, "global_avg_pool: expected an input [N,C,H,W], got [2,3]"},
  {"blocks.relu6", "a number", function() return B.relu6(3) end, "relu6: argument #1: expected tensor, got number"},
  {"blocks.hsigmoid", "nil", function() return B.hsigmoid() end, "scale: argument #1: expected tensor, got nil"},
  {"blocks.swish", "a table", function() return B.swish({}) end, "sigmoid: argument #1: expected tensor, got table"},
  {"blocks.shuffle_split", "odd channels", function() return B.shuffle_split(x3) end, "shuffle_split: expected [N,C,H,W] with C even, got [2,3,6,6]"},
  {"blocks.shuffle_split", "a table", function() return B.shuffle_split({}) end, "shuffle_split: expected a tensor input, got table"},
  {"blocks.channel_shuffle", "3 groups of 8 channels", function() return B.channel_shuffle(x8, 3) end, "channel_shuffle: [2,8,6,6] cannot be shuffled in 3 groups"},
  {"blocks.channel_shuffle", "no groups", function() return B.channel_shuffle(x8) end, "channel_shuffle: [2,8,6,6] cannot be shuffled in nil groups"},
  {"blocks.agnas_scores", "channels not splitting", function() return B.agnas_scores(nasrt.randn({2, 9, 1, 1}), 2) end, "agnas_scores: 9 channels do not split into 2 candidates"},
  {"blocks.agnas_scores", "n 0", function() return B.agnas_scores(nasrt.randn({2, 8, 1, 1}), 0) end, "agnas_scores: n (the number of candidates) must be a positive integer, got 0"},
  {"blocks.agnas_scores", "a 3-d input", function() return B.agnas_scores(nasrt.randn({2, 8, 1}), 2) end, "agnas_scores: expected attention weights [N,C] or [N,C,1,1], got [2,8,1]"},
  {"blocks.agnas_scores", "nil", function() return B.agnas_scores(nil, 2) end, "agnas_scores: expected a tensor input, got nil"},

  -- activations -----------------------------------------------------------
  {"blocks.ReLU6()", "an argument", function() return B.ReLU6(6) end, "ReLU6: the constructor takes no arguments, got 1"},
  {"blocks.ReLU6.forward", "a string", function() return B.ReLU6()("x") end, "relu6: argument #1: expected tensor, got string"},
  {"blocks.ReLU6.output_shape", "an empty shape", function() return B.ReLU6():output_shape({}) end, "ReLU6: expected an input shape like {1, 16, 32, 32}"},
  {"blocks.HSigmoid()", "an argument", function() return B.HSigmoid(true) end, "HSigmoid: the constructor takes no arguments"},
  {"blocks.HSigmoid.forward", "nil", function() return B.HSigmoid()(nil) end, "scale: argument #1: expected tensor, got nil"},
  {"blocks.HSigmoid.output_shape", "a fractional size", function() return B.HSigmoid():output_shape({1, 2.5}) end, "HSigmoid: shape entry 2 must be a non-negative integer"},
  {"blocks.Swish()", "an argument", function() return B.Swish("beta") end, "Swish: the constructor takes no arguments"},
  {"blocks.Swish.forward", "a table", function() return B.Swish()({}) end, "sigmoid: argument #1: expected tensor, got table"},
  {"blocks.Swish.output_shape", "nil", function() return B.Swish():output_shape() end, "Swish: expected an input shape"},
  {"blocks.HSwish()", "an argument", function() return B.HSwish(1) end, "HSwish: the constructor takes no arguments"},
  {"blocks.HSwish.forward", "a number", function() return B.HSwish()(1) end, "argument #1: expected tensor, got number"},
  {"blocks.HSwish.output_shape", "a negative size", function() return B.HSwish():output_shape({1, -1}) end, "HSwish: shape entry 2 must be a non-negative integer"},

  -- the cost base ---------------------------------------------------------
  {"blocks.Block()", "an argument", function() return B.Block(8) end, "Block: the constructor takes no arguments"},
  {"blocks.Block.output_shape", "no _cost", function() return B.Block():output_shape({1, 8, 4, 4}) end, "Block: _cost is not implemented"},
  {"blocks.Block.output_shape", "a string shape", function() return se:output_shape("1x8x6x6") end, "SE:output_shape: expected an input shape like {1, 16, 32, 32}"},
  {"blocks.Block.macs", "the wrong channels", function() return se:macs({1, 3, 6, 6}) end, "SE: input [1,3,6,6] has 3 channels, expected 8"},
  {"blocks.Block.macs", "a rank-2 shape", function() return fr:macs({1, 8}) end, "FactorizedReduce", "[1,8]"},

  -- DARTS and NB201 ops ---------------------------------------------------
  {"blocks.ReLUConvBN()", "0 channels", function() return B.ReLUConvBN(0, 8, 3, 1, 1) end, "ReLUConvBN: cin must be an integer >= 1, got 0"},
  {"blocks.ReLUConvBN()", "unknown option", function() return B.ReLUConvBN(8, 8, 3, 1, 1, {afine = true}) end, "ReLUConvBN: unknown option 'afine'"},
  {"blocks.ReLUConvBN()", "options a number", function() return B.ReLUConvBN(8, 8, 3, 1, 1, 1) end, "ReLUConvBN: options must be a table or a boolean (affine), got number"},
  {"blocks.SepConv()", "fractional channels", function() return B.SepConv(8, 8.5, 3, 1, 1) end, "SepConv: cout must be an integer >= 1, got 8.5"},
  {"blocks.SepConv()", "a string affine", function() return B.SepConv(8, 8, 3, 1, 1, "no") end, "SepConv: options must be a table or a boolean (affine), got string"},
  {"blocks.DilConv()", "negative channels", function() return B.DilConv(-8, 8, 3, 1, 2, 2) end, "DilConv: cin must be an integer >= 1, got -8"},
  {"blocks.SepConv.forward", "the wrong channels", function() return B.SepConv(8, 8, 3, 1, 1)(nasrt.randn({2, 3, 8, 8})) end,
    "sep_conv2d: depthwise weight [8,1,3,3], expected [3,1,kh,kw] for input [2,3,8,8]"},
  {"blocks.DilConv.forward", "a string", function() return B.DilConv(8, 8, 3, 1, 2, 2)("x") end,
    "sep_conv2d: argument #1: expected tensor, got string"},
  {"blocks.DilConv()", "dilation 0", function() return B.DilConv(8, 8, 3, 1, 2, 0) end, "Conv2d: kernel_size 3, stride 1, dilation 0 must be >= 1"},
  {"blocks.Conv7x1_1x7()", "stride 3", function() return B.Conv7x1_1x7(8, 3) end, "Conv7x1_1x7: stride must be 1 or 2, got 3"},
  {"blocks.Conv7x1_1x7()", "no channels", function() return B.Conv7x1_1x7() end, "Conv7x1_1x7: C must be an integer >= 1, got nil"},
  {"blocks.FactorizedReduce()", "odd output", function() return B.FactorizedReduce(8, 7) end, "FactorizedReduce: cout must be even, got 7"},
  {"blocks.FactorizedReduce()", "unknown option", function() return B.FactorizedReduce(8, 8, {stirde = 2}) end, "FactorizedReduce: unknown option 'stirde'"},
  {"blocks.FactorizedReduce()", "stride 4", function() return B.FactorizedReduce(8, 8, {stride = 4}) end, "FactorizedReduce: stride must be 1 or 2, got 4"},
  {"blocks.FactorizedReduce.forward", "the wrong channels", function() return fr(x3) end, "FactorizedReduce: input [2,3,6,6] has 3 channels, expected 8"},
  {"blocks.FactorizedReduce.forward", "nil", function() return fr(nil) end, "relu: argument #1: expected tensor, got nil"},
  {"blocks.PoolBN()", "kind 'min'", function() return B.PoolBN("min", 8, 1) end, "PoolBN: kind must be 'max' or 'avg', got min"},
  {"blocks.PoolBN()", "stride 0", function() return B.PoolBN("max", 8, 0) end, "PoolBN: stride must be 1 or 2, got 0"},
  {"blocks.NB201Zero()", "stride 0", function() return B.NB201Zero(8, 8, 0) end, "NB201Zero: stride must be an integer >= 1, got 0"},
  {"blocks.NB201Zero()", "no channels", function() return B.NB201Zero() end, "NB201Zero: cin must be an integer >= 1, got nil"},
  {"blocks.NB201Zero.forward", "a table", function() return zero({}) end, "NB201Zero: expected a tensor input, got table"},
  {"blocks.NB201Zero.forward", "the wrong channels", function() return zero(x3) end, "NB201Zero", "[2,3,6,6]"},
  {"blocks.NB201Pool()", "stride 3", function() return B.NB201Pool(8, 8, 3) end, "NB201Pool: stride must be 1 or 2, got 3"},
  {"blocks.NB201Pool()", "a string width", function() return B.NB201Pool("8", 16, 1) end, "NB201Pool: cin must be an integer >= 1, got 8"},
  {"blocks.ResNetBasicBlock()", "stride 3", function() return B.ResNetBasicBlock(8, 8, 3) end, "ResNetBasicblock: stride must be 1 or 2, got 3"},
  {"blocks.ResNetBasicBlock()", "0 planes", function() return B.ResNetBasicBlock(8, 0, 1) end, "ResNetBasicblock: planes must be an integer >= 1, got 0"},
  {"blocks.ResNetBasicBlock.forward", "the wrong channels", function() return rb(x3) end, "conv2d: input [2,3,6,6] has 3 channels"},

  -- attention blocks ------------------------------------------------------
  {"blocks.SE()", "0 channels", function() return B.SE(0) end, "SE: channels must be an integer >= 1, got 0"},
  {"blocks.SE()", "unknown option", function() return B.SE(8, {ratio = 4}) end, "SE: unknown option 'ratio'"},
  {"blocks.SE.forward", "the wrong channels", function() return se(x3) end, "SE: input [2,3,6,6] has 3 channels, expected 8"},
  {"blocks.SE.mask", "nil", function() return se:mask() end, "SE: expected a tensor input, got nil"},
  {"blocks.CBAM()", "a string", function() return B.CBAM("16") end, "CBAM: channels must be an integer >= 1, got 16"},
  {"blocks.CBAM()", "unknown option", function() return B.CBAM(16, {spatial = false}) end, "CBAM: unknown option 'spatial'"},
  {"blocks.CBAM.forward", "the wrong channels", function() return cbam(x8) end, "CBAM: input [2,8,6,6] has 8 channels, expected 16"},
  {"blocks.CBAM.mask", "a 2-d input", function() return cbam:mask(nasrt.randn({2, 16})) end, "CBAM: expected a 4-dim input [N,C,H,W], got [2,16]"},
  {"blocks.BAM()", "unknown option", function() return B.BAM(16, {dilations = 2}) end, "BAM: unknown option 'dilations'"},
  {"blocks.BAM()", "0 channels", function() return B.BAM(0) end, "BAM: channels must be an integer >= 1, got 0"},
  {"blocks.BAM.forward", "the wrong channels", function() return bam(x8) end, "BAM: input [2,8,6,6] has 8 channels, expected 16"},
  {"blocks.BAM.mask", "a string", function() return bam:mask("x") end, "BAM: expected a tensor input, got string"},
  {"blocks.GEThetaPlus()", "no spatial size", function() return B.GEThetaPlus(8) end, "GEThetaPlus: spatial must be an integer >= 1, got nil"},
  {"blocks.GEThetaPlus()", "unknown option", function() return B.GEThetaPlus(8, 6, {extent = 2}) end, "GEThetaPlus: unknown option 'extent'"},
  {"blocks.GEThetaPlus.forward", "the wrong spatial size", function() return ge(nasrt.randn({2, 8, 5, 5})) end, "GEThetaPlus", "[2,8,5,5]"},
  {"blocks.GEThetaPlus.mask", "nil", function() return ge:mask(nil) end, "GEThetaPlus: expected a tensor input, got nil"},
  {"blocks.DoubleAttention()", "0 channels", function() return B.DoubleAttention(0) end, "DoubleAttention: channels must be an integer >= 1, got 0"},
  {"blocks.DoubleAttention()", "unknown option", function() return B.DoubleAttention(8, {c_k = 2}) end, "DoubleAttention: unknown option 'c_k'"},
  {"blocks.DoubleAttention.forward", "the wrong channels", function() return da(x3) end, "DoubleAttention: input [2,3,6,6] has 3 channels, expected 8"},
  {"blocks.AGNASAttention()", "n 0", function() return B.AGNASAttention(4, 0) end, "AGNASAttention: n must be an integer >= 1, got 0"},
  {"blocks.AGNASAttention()", "a ratio leaving no unit", function() return B.AGNASAttention(4, 2, {ratio = 64}) end, "AGNASAttention: 8 channels / ratio 64 leaves no hidden unit"},
  {"blocks.AGNASAttention.forward", "the wrong channels", function() return att(x3) end, "AGNASAttention: input [2,3,6,6] has 3 channels, expected 8"},
  {"blocks.AGNASAttention.mix", "one output for two", function() return att:mix({nasrt.randn({2, 4, 6, 6})}) end, "AGNASAttention:mix: expected a list of 2 candidate outputs, got 1"},
  {"blocks.AGNASAttention.mix", "outputs of the wrong width", function() return att:mix({x3, x3}) end, "AGNASAttention:mix: input [2,3,6,6] has 3 channels, expected 4"},
  {"blocks.AGNASAttention.mix", "a string in the list", function() return att:mix({nasrt.randn({2, 4, 6, 6}), "x"}) end, "AGNASAttention:mix: expected a tensor input, got string"},
  {"blocks.AGNASAttention.weights", "pooled of the wrong width", function() return att:weights(nasrt.randn({2, 3})) end, "linear", "[2,3]"},

  -- MBConv and the SPOS blocks --------------------------------------------
  {"blocks.MBConv()", "even kernel", function() return B.MBConv(8, 8, 4, 1, 3) end, "MBConv: kernel size must be odd, got 4"},
  {"blocks.MBConv()", "expansion 0", function() return B.MBConv(8, 8, 3, 1, 0) end, "MBConv: expansion ratio must be a positive number, got 0"},
  {"blocks.MBConv()", "unknown option", function() return B.MBConv(8, 8, 3, 1, 3, {squeeze = true}) end, "MBConv: unknown option 'squeeze'"},
  {"blocks.MBConv()", "NaN expansion", function() return B.MBConv(8, 8, 3, 1, nan) end, "MBConv: expansion ratio must be a positive number"},
  {"blocks.MBConv.forward", "the wrong channels", function() return mb(x3) end, "conv2d: input [2,3,6,6] has 3 channels"},
  {"blocks.ShuffleNetBlock()", "oup not above inp", function() return B.ShuffleNetBlock(8, 8, 4, 3, 1) end, "ShuffleNetBlock: oup (8) must exceed inp (8)"},
  {"blocks.ShuffleNetBlock()", "even kernel", function() return B.ShuffleNetBlock(4, 8, 4, 4, 1) end, "ShuffleNetBlock: kernel size must be odd, got 4"},
  {"blocks.ShuffleNetBlock()", "stride 3", function() return B.ShuffleNetBlock(4, 8, 4, 3, 3) end, "ShuffleNetBlock: stride must be 1 or 2, got 3"},
  {"blocks.ShuffleNetBlock.forward", "the wrong channels", function() return sn(x3) end, "ShuffleNetBlock: input [2,3,6,6] has 3 channels, expected 8"},
  {"blocks.ShuffleXception()", "channels not divisible by 4", function() return B.ShuffleXception(3, 8, 4, 1) end, "ShuffleXception: a stride-1 block needs its 6 input channels divisible by 4"},
  {"blocks.ShuffleXception()", "unknown option", function() return B.ShuffleXception(4, 8, 4, 1, {se = true}) end, "ShuffleXception: unknown option 'se'"},
  {"blocks.ShuffleXception.forward", "nil", function() return sx(nil) end, "ShuffleXception: expected a tensor input, got nil"},
}
