--- Misuse cases: nasrt.supernet (see spec/misuse.lua).  The networks are
-- the smallest the constructors allow, so building them costs little.
local nasrt = require "nasrt"
local S = nasrt.supernet

local nan = 0 / 0
local x1 = nasrt.randn({2, 1, 8, 8})
local x3 = nasrt.randn({2, 3, 8, 8})
local TINY = {
  in_channels = 1, classes = 3, resolutions = { 5, 7 },
  first_conv = { width = { 4, 8 }, stride = 1 },
  stages = {
    { width = { 4, 8 }, depth = { 1, 2 }, kernel = { 3 }, expand = { 1 }, stride = 1, se = false },
    { width = { 8 }, depth = { 1 }, kernel = { 3, 5 }, expand = { 2 }, stride = 2, se = true },
  },
  last_conv = { width = { 8 } }, act = "swish", v3_head = true,
}
local SMALL_CHAIN = { stem = 4, widths = { 8, 16 }, repeats = { 1, 1 }, last = 16, input_size = 8 }
local darts = S.darts({C = 4, layers = 3, steps = 2, multiplier = 2})
local agnas = S.agnas({C = 4, layers = 3, steps = 2, multiplier = 2})
local att = S.att_darts({C = 8, layers = 3, steps = 2, multiplier = 2, input_size = 8})
local nb = S.nb201({C = 4, N = 1})
local spos = S.spos(SMALL_CHAIN)
local macro = S.agnas_macro({stem = 4, first_block = 4, stages = {{8, 1, 2}}, head = 16, input_size = 8})
local el = S.elastic({space = TINY})
local V2 = S.darts_genotypes.DARTS_V2
local net = S.darts_network(V2, {C = 4, layers = 3})
local cell = net.cells[1]
local inf = S.nb201_network("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|avg_pool_3x3~2|", {C = 4, N = 1})
local infcell = inf.cells[1]
local scell = nb.cells[1]
local PRIMS = nasrt.blocks.DARTS_PRIMITIVES
local head = S.darts_AuxiliaryHead(8, 10)
local mixed = S.darts_MixedOp(4, 1, PRIMS)
local edge = S.AGNASEdge(4, 1, nasrt.blocks.AGNAS_PRIMITIVES)
local ARCH = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|avg_pool_3x3~2|"

return {
  -- DARTS family constructors --------------------------------------------
  {"supernet.darts", "options a number", function() return S.darts(4) end, "darts: options must be a table, got number"},
  {"supernet.darts", "unknown option", function() return S.darts({C = 4, layer = 3}) end, "darts: unknown option 'layer'"},
  {"supernet.darts", "odd C", function() return S.darts({C = 5}) end, "darts: C must be even"},
  {"supernet.darts", "multiplier above steps", function() return S.darts({steps = 2, multiplier = 3}) end, "darts: multiplier (3) cannot exceed steps (2)"},
  {"supernet.darts", "an unknown primitive", function() return S.darts({primitives = {"none", "conv_9x9"}}) end, "darts: primitive 2 ('conv_9x9') is not a DARTS op"},
  {"supernet.darts", "C 0", function() return S.darts({C = 0}) end, "darts: C"},
  {"supernet.darts", "relaxation 'hard'", function() return S.darts({relaxation = "hard"}) end, "darts", "relaxation"},
  {"supernet.agnas", "unknown option", function() return S.agnas({C = 4, attention = "se"}) end, "agnas: unknown option 'attention'"},
  {"supernet.agnas", "layers 0", function() return S.agnas({layers = 0}) end, "agnas: layers"},
  {"supernet.att_darts", "unknown option", function() return S.att_darts({C = 8, betas = 2}) end, "att_darts: unknown option 'betas'"},
  {"supernet.att_darts", "an unknown attention", function() return S.att_darts({C = 8, attentions = {"SE", "XL"}}) end, "att_darts", "XL"},
  {"supernet.darts_SearchNetwork()", "options (use supernet.darts)", function() return S.darts_SearchNetwork({C = 4}) end, "DARTSSearchNetwork: the constructor takes no arguments, got 1 (build one with supernet.darts{...})"},
  {"supernet.agnas_SearchNetwork()", "options (use supernet.agnas)", function() return S.agnas_SearchNetwork({C = 4}) end, "AGNASSearchNetwork: the constructor takes no arguments, got 1 (build one with supernet.agnas{...})"},
  {"supernet.agnas", "steps 20", function() return S.agnas({steps = 20, multiplier = 4}) end, "agnas: at most 14 steps, got 20"},
  {"supernet.att_darts_SearchNetwork()", "options (use supernet.att_darts)", function() return S.att_darts_SearchNetwork({C = 8}) end, "AttDARTSSearchNetwork: the constructor takes no arguments, got 1 (build one with supernet.att_darts{...})"},
  {"supernet.att_darts", "odd C", function() return S.att_darts({C = 7}) end, "att_darts: C must be even"},
  {"supernet.darts_SearchBase()", "an argument", function() return S.darts_SearchBase(1) end, "SearchNetwork: the constructor takes no arguments, got 1"},
  {"supernet.darts_SearchCell()", "no options", function() return S.darts_SearchCell() end, "SearchCell: expected a settings table"},
  {"supernet.darts_SearchCell()", "C 0", function() return S.darts_SearchCell({C = 0, C_pp = 4, C_p = 4, steps = 2, multiplier = 2}, function() end) end, "SearchCell: C must be an integer >= 1, got 0"},
  {"supernet.darts_MixedOp()", "0 channels", function() return S.darts_MixedOp(0, 1) end, "MixedOp: C must be an integer >= 1, got 0"},
  {"supernet.darts_MixedOp()", "stride 3", function() return S.darts_MixedOp(4, 3, PRIMS) end, "MixedOp: stride must be 1 or 2, got 3"},
  {"supernet.darts_MixedOp()", "no primitives", function() return S.darts_MixedOp(4, 1) end, "MixedOp: primitives must be a non-empty list of op names"},
  {"supernet.AGNASEdge()", "a string C", function() return S.AGNASEdge("4", 1, PRIMS) end, "AGNASEdge: C must be an integer >= 1, got 4"},
  {"supernet.att_darts_MixedOp()", "no channels", function() return S.att_darts_MixedOp() end, "AttMixedOp: C must be an integer >= 1, got nil"},
  {"supernet.att_darts_MixedOp()", "an unknown attention", function() return S.att_darts_MixedOp(4, 1, PRIMS, {"SE", "Transformer"}, 8) end, "AttMixedOp: attention 2 ('Transformer') is not one of blocks.ATT_PRIMITIVES"},

  -- DARTS family methods --------------------------------------------------
  {"supernet.darts_SearchNetwork.forward", "the wrong channels", function() return darts(x3) end, "conv2d", "[2,3,8,8]"},
  {"supernet.darts_SearchNetwork.forward", "nil", function() return darts(nil) end, "expected tensor, got nil"},
  {"supernet.darts_SearchNetwork.forward", "a tensor as self", function() return darts.forward(x1) end, "DARTSSearchNetwork.forward: self is a tensor"},
  {"supernet.darts_SearchNetwork.set_alphas", "nil", function() return darts:set_alphas(nil) end, "set_alphas: expected a table"},
  {"supernet.darts_SearchNetwork.set_alphas", "the wrong shape", function() return darts:set_alphas({normal = nasrt.zeros({2, 2}), reduce = nasrt.zeros({5, 8})}) end, "set_alphas: normal must be a table of 5 rows"},
  {"supernet.darts_SearchNetwork.set_alphas", "an unknown key", function() return darts:set_alphas({normal = darts:alphas().normal, middle = {}}) end, "set_alphas: unknown key 'middle' (normal, reduce)"},
  {"supernet.darts_SearchNetwork.genotype", "unknown option", function() return darts:genotype({top = 3}) end, "genotype_parse: unknown option 'top'"},
  {"supernet.darts_SearchNetwork.genotypes", "options a number", function() return darts:genotypes(2) end, "genotype: options must be a table, got number"},
  {"supernet.darts_SearchNetwork.zero_one_loss", "an unknown kind", function() return darts:zero_one_loss("l3") end, "zero_one_loss: kind must be 'l1' or 'l2'"},
  {"supernet.att_darts_SearchNetwork.forward", "the wrong channels", function() return att(x3) end, "conv2d", "[2,3,8,8]"},
  {"supernet.att_darts_SearchNetwork.set_alphas", "a string", function() return att:set_alphas("uniform") end, "set_alphas: expected a table"},
  {"supernet.att_darts_SearchNetwork.genotype", "a DARTS net as self", function() return att.genotype(darts) end, "AttDARTSSearchNetwork.genotype: self is a DARTSSearchNetwork"},
  {"supernet.agnas_SearchNetwork.forward", "a 2-d input", function() return agnas(nasrt.randn({2, 8})) end, "conv2d", "[2,8]"},
  {"supernet.agnas_SearchNetwork.agnas_genotype", "a DARTS net as self", function() return agnas.agnas_genotype(darts) end, "AGNASSearchNetwork.agnas_genotype: self is a DARTSSearchNetwork"},
  {"supernet.darts_MixedOp.forward", "weights of the wrong size", function() return mixed(nasrt.randn({2, 4, 8, 8}), nasrt.randn({3})) end, "MixedOp: weights must be a tensor of 8 numbers (one per primitive), got [3]"},
  {"supernet.darts_MixedOp.forward", "no weights", function() return mixed(nasrt.randn({2, 4, 8, 8})) end, "MixedOp: weights must be a tensor of 8 numbers (one per primitive), got nil"},
  {"supernet.AGNASEdge.forward", "the wrong channels", function() return edge(x3) end, "sep_conv2d: depthwise weight [4,1,3,3], expected [3,1,kh,kw] for input [2,3,8,8]"},
  {"supernet.AGNASEdge.mix", "a string", function() return edge:mix("x") end, "AGNASEdge: the input must be a tensor, got string"},

  -- genotypes and the discrete network -------------------------------------
  {"supernet.genotype_from_string", "a number", function() return S.genotype_from_string(5) end, "genotype_from_string: expected a string"},
  {"supernet.genotype_from_string", "garbage", function() return assert(S.genotype_from_string("Genotype(normal=[")) end, "genotype_from_string:", "unexpected end"},
  {"supernet.genotype_from_string", "a range of 10^12 nodes", function()
    return assert(S.genotype_from_string("Genotype(normal=[], normal_concat=range(0, 1000000000000), reduce=[], reduce_concat=[2])")) end, "genotype_from_string: range(0, 1000000000000) is longer than 4096"},
  {"supernet.genotype_from_string", "an unknown op", function()
    return assert(S.genotype_from_string("Genotype(normal=[('conv_9x9', 0)], normal_concat=[2], reduce=[('max_pool_3x3', 0)], reduce_concat=[2])")) end, "genotype_from_string", "conv_9x9"},
  {"supernet.genotype_from_string", "a negative input", function()
    return assert(S.genotype_from_string("Genotype(normal=[('skip_connect', -1), ('skip_connect', 0)], normal_concat=[2], reduce=[('skip_connect', 0), ('skip_connect', 1)], reduce_concat=[2])")) end, "genotype_from_string: normal entry 1: input -1 is negative"},
  {"supernet.genotype_to_string", "a string", function() return S.genotype_to_string("DARTS_V2") end, "genotype_to_string: expected a genotype table"},
  {"supernet.genotype_to_string", "no cells", function() return S.genotype_to_string({}) end, "genotype_to_string: the table has neither 'normal' nor 'reduce'"},
  {"supernet.genotype_to_string", "a gene with a number op", function() return S.genotype_to_string({normal = {{1, 0}}, normal_concat = {2}}) end, "genotype_to_string", "op"},
  {"supernet.genotype_dot", "no normal cell", function() return S.genotype_dot({}) end, "genotype_dot: the genotype has no 'normal' cell"},
  {"supernet.genotype_dot", "cell 'middle'", function() return S.genotype_dot(V2, "middle") end, "genotype_dot: which must be 'normal' or 'reduce'"},
  {"supernet.genotype_parse", "nil", function() return S.genotype_parse(nil) end, "genotype_parse: expected 14 rows of weights for 4 steps, got nil"},
  {"supernet.genotype_parse", "rows of the wrong width", function() return S.genotype_parse(nasrt.randn({14, 3})) end, "genotype_parse: expected 14 rows of weights for 4 steps, got userdata"},
  {"supernet.genotype_parse", "unknown option", function() return S.genotype_parse(nasrt.randn({14, 8}), {topk = 3}) end, "genotype_parse: unknown option 'topk'"},
  {"supernet.darts_cell_types", "a string", function() return S.darts_cell_types("8") end, "darts_cell_types: layers must be"},
  {"supernet.darts_cell_types", "0 layers", function() return S.darts_cell_types(0) end, "darts_cell_types: 0 cells do not have a normal cell in every stage"},
  {"supernet.darts_network", "a string genotype", function() return S.darts_network("DARTS_V2") end, "darts_network: genotype must be a table"},
  {"supernet.darts_network", "unknown option", function() return S.darts_network(V2, {C = 4, cells = 3}) end, "darts_network: unknown option 'cells'"},
  {"supernet.darts_network", "a genotype without reduce", function() return S.darts_network({normal = V2.normal, normal_concat = V2.normal_concat}, {C = 4, layers = 3}) end, "darts_network: cell 1 is a reduction cell but its genotype has no 'reduce'"},
  {"supernet.darts_Network()", "a genotype (use supernet.darts_network)", function() return S.darts_Network(V2) end, "DARTSNetwork: the constructor takes no arguments, got 1 (build one with supernet.darts_network(genotype, {...}))"},
  {"supernet.darts_Network.forward", "the wrong channels", function() return net(x3) end, "conv2d", "[2,3,8,8]"},
  {"supernet.darts_Cell()", "no genes", function() return S.darts_Cell() end, "a cell genotype needs an even, non-zero number of (op, input) entries"},
  {"supernet.darts_Cell()", "an unknown op", function() return S.darts_Cell({{"conv_9x9", 0}, {"skip_connect", 1}}, {2}, 4, 4, 4) end, "entry 1: unknown op 'conv_9x9'"},
  {"supernet.darts_Cell.forward", "one input", function() return cell(nasrt.randn({2, 12, 8, 8})) end, "Cell: s1 (the previous state) must be a tensor, got nil"},
  {"supernet.darts_Cell.forward", "drop_prob 2", function() return cell(x3, x3, 2) end, "Cell: drop_prob must be a number in [0, 1), got 2"},
  {"supernet.darts_AuxiliaryHead()", "0 classes", function() return S.darts_AuxiliaryHead(8, 0) end, "AuxiliaryHead: classes must be an integer >= 1, got 0"},
  {"supernet.darts_AuxiliaryHead.forward", "a 2-d input", function() return head(nasrt.randn({2, 8})) end, "AuxiliaryHead: expected an input [N,C,H,W], got [2,8]"},
  {"supernet.darts_AuxiliaryHead.forward", "too small", function() return head(nasrt.randn({2, 8, 4, 4})) end, "AuxiliaryHead: input [2,8,4,4] does not pool to 2x2"},

  -- NAS-Bench-201 ---------------------------------------------------------
  {"supernet.nb201", "unknown option", function() return S.nb201({C = 4, cells = 5}) end, "nb201: unknown option 'cells'"},
  {"supernet.nb201", "mode 'enas'", function() return S.nb201({mode = "enas"}) end, "nb201: mode must be 'darts', 'gdas', 'path' or 'agnas', got enas"},
  {"supernet.nb201", "N 0", function() return S.nb201({N = 0}) end, "nb201: N must be a positive integer, got 0"},
  {"supernet.nb201_SearchNetwork()", "a string", function() return S.nb201_SearchNetwork("darts") end, "nb201: options must be a table"},
  {"supernet.nb201_SearchNetwork.forward", "the wrong channels", function() return nb(x1) end, "nb201:forward: input [2,1,8,8] must be [N,3,H,W]"},
  {"supernet.nb201_SearchNetwork.forward", "a bad arch", function() return nb(x3, {9, 1, 1, 1, 1, 1}) end, "nb201:forward: edge 1: op index 9 is out of range 1..5"},
  {"supernet.nb201_SearchNetwork.set_mode", "an unknown mode", function() return nb:set_mode("hard") end, "nb201:set_mode: mode must be 'darts', 'gdas' or 'path', got hard"},
  {"supernet.nb201_SearchNetwork.set_tau", "tau 0", function() return nb:set_tau(0) end, "nb201:set_tau: tau must be a positive number, got 0"},
  {"supernet.nb201_SearchNetwork.set_tau", "a string", function() return nb:set_tau("10") end, "nb201:set_tau: tau must be a positive number, got 10"},
  {"supernet.nb201_SearchNetwork.genotype", "unknown option", function() return nb:genotype({none = true}) end, "nb201:genotype: unknown option 'none'"},
  {"supernet.nb201_SearchNetwork.arch_string", "unknown option", function() return nb:arch_string({top = 1}) end, "unknown option 'top'"},
  {"supernet.nb201_SearchNetwork.arch_indices", "options a number", function() return nb:arch_indices(1) end, "options must be a table"},
  {"supernet.nb201_SearchNetwork.path_state_dict", "a bad arch string", function() return nb:path_state_dict("|conv~0|") end, "nb201:path_state_dict: bad NAS-Bench-201 arch string \"|conv~0|\""},
  {"supernet.nb201_SearchNetwork.path_state_dict", "nil", function() return nb:path_state_dict() end, "nb201:path_state_dict: expected an arch string or a list of 6 ops, got nil"},
  {"supernet.nb201_SearchNetwork.extract", "7 ops", function() return nb:extract({1, 1, 1, 1, 1, 1, 1}) end, "an arch needs 6 edges", "got 7"},
  {"supernet.nb201_SearchNetwork.extract", "a number", function() return nb:extract(5) end, "expected an arch string or a list of 6 ops, got number"},
  {"supernet.nb201_SearchCell()", "C 0", function() return S.nb201_SearchCell(0) end, "NB201SearchCell: C must be a positive integer, got 0"},
  {"supernet.nb201_SearchCell.forward", "the wrong channels", function() return scell(x1) end, "NB201SearchCell: a search cell runs inside its network"},
  {"supernet.nb201_network", "nil", function() return S.nb201_network(nil) end, "nb201_network: expected an arch string or a list of 6 ops, got nil"},
  {"supernet.nb201_network", "a bad op", function() return S.nb201_network("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|") end, "nb201_network", "conv_5x5"},
  {"supernet.nb201_network", "a wrong input index", function() return S.nb201_network("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|") end, "nb201_network: bad NAS-Bench-201 arch string", "expected input ~0"},
  {"supernet.nb201_network", "unknown option", function() return S.nb201_network(ARCH, {cells = 5}) end, "nb201_network: unknown option 'cells'"},
  {"supernet.nb201_network", "5 ops", function() return S.nb201_network({"none", "none", "none", "none", "none"}) end, "nb201_network: an arch needs 6 edges", "got 5"},
  {"supernet.nb201_Network()", "a number", function() return S.nb201_Network(5) end, "nb201_network: expected an arch string or a list of 6 ops, got number"},
  {"supernet.nb201_Network.forward", "the wrong channels", function() return inf(x1) end, "nb201_network:forward: input [2,1,8,8] must be [N,3,H,W]"},
  {"supernet.nb201_InferCell()", "no ops", function() return S.nb201_InferCell() end, "NB201InferCell: ops must be a list of 6 op indices (1..5), got nil"},
  {"supernet.nb201_InferCell()", "op index 6", function() return S.nb201_InferCell({1, 2, 3, 4, 5, 6}, 4) end, "NB201InferCell: ops[6] = 6 is not an op index 1..5"},
  {"supernet.nb201_InferCell.forward", "the wrong channels", function() return infcell(x1) end, "conv2d: input [2,1,8,8] has 1 channels"},
  {"supernet.nb201_arch", "a table of numbers", function() return S.nb201_arch({1, 2, 3, 4, 5, 6}) end, "nb201_arch: edge 6: op index 6 is out of range 1..5"},
  {"supernet.nb201_arch", "an empty string", function() return S.nb201_arch("") end, "nb201_arch: bad NAS-Bench-201 arch string"},
  {"supernet.nb201_arch", "two cells", function() return S.nb201_arch(ARCH .. ARCH) end, "nb201_arch: bad NAS-Bench-201 arch string"},
  {"supernet.nb201_cost", "a number", function() return S.nb201_cost(1) end, "nb201_cost: expected an arch string or a list of 6 ops, got number"},
  {"supernet.nb201_cost", "unknown option", function() return S.nb201_cost(ARCH, {resolution = 32}) end, "nb201_cost: unknown option 'resolution'"},

  -- single-path chains ----------------------------------------------------
  {"supernet.spos()", "unknown option", function() return S.spos({widht = 3}) end, "spos: unknown option 'widht'"},
  {"supernet.spos()", "mismatched widths and repeats", function() return S.spos({widths = {16}, repeats = {1, 2}}) end, "spos: widths and repeats must be lists of the same non-zero length"},
  {"supernet.spos()", "classes 0", function() return S.spos({classes = 0}) end, "spos: classes must be a positive integer, got 0"},
  {"supernet.fairnas()", "unknown option", function() return S.fairnas({choice = 6}) end, "fairnas: unknown option 'choice'"},
  {"supernet.fairnas()", "a string", function() return S.fairnas("paper") end, "fairnas: options must be a table, got string"},
  {"supernet.agnas_macro()", "unknown option", function() return S.agnas_macro({heads = 3}) end, "agnas_macro: unknown option 'heads'"},
  {"supernet.agnas_macro()", "a bad stage", function() return S.agnas_macro({stages = {{24, 0, 2}}}) end, "agnas_macro: stages[1] must hold positive integers {c, n, s}"},
  {"supernet.ChoiceChain.forward", "a bad arch", function() return spos(x1, {1, 5}) end, "spos:forward: arch[2] = 5 out of range 1..4"},
  {"supernet.ChoiceChain.forward", "no arch", function() return spos(x1) end, "spos:forward: arch must be a list of 2 choice indices, got nil"},
  {"supernet.ChoiceChain.forward", "the wrong channels", function() return spos(x3, {1, 1}) end, "conv2d", "[2,3,8,8]"},
  {"supernet.ChoiceChain.flops", "a bad arch", function() return spos:flops({1, 0}) end, "spos:flops: arch[2] = 0 out of range 1..4"},
  {"supernet.ChoiceChain.flops", "a bad shape", function() return spos:flops({1, 1}, {1, 1}) end, "spos:flops: in_shape must be {N, C, H, W}, got [1,1]"},
  {"supernet.ChoiceChain.flops_table", "a string shape", function() return spos:flops_table("8x8") end, "spos:flops_table: in_shape must be {N, C, H, W}, got string"},
  {"supernet.ChoiceChain.arch_names", "3 genes", function() return spos:arch_names({1, 1, 1}) end, "spos:arch_names: arch has 3 entries, expected 2 (one per choice layer)"},
  {"supernet.ChoiceChain.layer_info", "layer 9", function() return spos:layer_info(9) end, "spos:layer_info: no layer 9"},
  {"supernet.ChoiceChain.layer_info", "a string", function() return spos:layer_info("one") end, "spos:layer_info: no layer one"},
  {"supernet.ChoiceChain.path_network", "a bad arch", function() return spos:path_network({1, 7}) end, "spos:path_network: arch[2] = 7 out of range 1..4"},
  {"supernet.ChoiceChain.path_network", "unknown option", function() return spos:path_network({1, 1}, {bn = true}) end, "spos:path_network: unknown option 'bn'"},
  {"supernet.agnas_macro.forward", "an arch out of range", function() return macro(x1, {9}) end, "agnas_macro:forward: arch[1] = 9 out of range"},
  {"supernet.agnas_macro.forward", "the wrong channels", function() return macro(x3) end, "conv2d", "[2,3,8,8]"},
  {"supernet.agnas_macro.derive", "a SPOS net as self", function() return macro.derive(spos) end, "AGNASMacroSupernet.derive: self is a SPOSSupernet"},

  -- the elastic supernet --------------------------------------------------
  {"supernet.elastic()", "unknown option", function() return S.elastic({spaces = TINY}) end, "elastic: unknown option 'spaces'"},
  {"supernet.elastic()", "an unknown space", function() return S.elastic({space = "huge"}) end, "elastic: unknown space 'huge' (elastic_spaces has attentivenas, small)"},
  {"supernet.elastic()", "a space without stages", function() return S.elastic({space = {resolutions = {8}}}) end, "elastic: first_conv must be a table {width = {...}, stride = s}"},
  {"supernet.elastic.decode", "the wrong gene count", function() return el:decode({1, 1}) end, "elastic:decode: genes must be a list of 11 choice indices"},
  {"supernet.elastic.decode", "a string", function() return el:decode("max") end, "elastic:decode: genes must be a list of 11 choice indices"},
  {"supernet.elastic.encode", "a bad config", function() return el:encode({resolution = 6}) end, "elastic:encode: resolution 6 is not one of {5, 7}"},
  {"supernet.elastic.config", "a number", function() return el:config(5) end, "elastic:config: expected a config table or a gene list, got number"},
  {"supernet.elastic.set_active", "a width not in the space", function()
    local c = el:sample_max(); c.width[1] = 5
    return el:set_active(c) end, "elastic:set_active: width[1] = 5 is not one of {4, 8}"},
  {"supernet.elastic.set_active", "nil", function() return el:set_active(nil) end, "elastic:set_active: expected a config table or a gene list, got nil"},
  {"supernet.elastic.set_dropout", "dropout 2", function() return el:set_dropout(2) end, "elastic:set_dropout: dropout must be a number in [0, 1), got 2"},
  {"supernet.elastic.set_dropout", "a string", function() return el:set_dropout(0, "none") end, "elastic:set_dropout: drop_connect must be a number in [0, 1), got none"},
  {"supernet.elastic.forward", "the wrong channels", function() return el(x3) end, "elastic:forward: expected an input [N,1,H,W], got [2,3,8,8]"},
  {"supernet.elastic.forward", "a bad config", function() return el(x1, {resolution = 1}) end, "elastic:forward: resolution 1 is not one of {5, 7}"},
  {"supernet.elastic.flops", "a bad config", function() return el:flops({depth = {9, 9}}) end, "elastic:flops: config.width must be a list of 4 values"},
  {"supernet.elastic.params", "a string", function() return el:params("max") end, "elastic:params: expected a config table or a gene list, got string"},
  {"supernet.elastic.subnet", "a number", function() return el:subnet(1) end, "elastic:subnet: expected a config table or a gene list, got number"},
  {"supernet.elastic_flops", "a number space", function() return S.elastic_flops(5, {}) end, "elastic_flops: space must be a table"},
  {"supernet.elastic_flops", "a bad config", function() return S.elastic_flops(TINY, {resolution = 3}) end, "elastic_flops: resolution 3 is not one of {5, 7}"},
  {"supernet.elastic_params", "no resolutions", function() return S.elastic_params({}, {}) end, "elastic_params: resolutions must be a non-empty list of integers"},
  {"supernet.elastic_params", "a bad config", function() return S.elastic_params(TINY, "max") end, "elastic_params: expected a config table or a gene list, got string"},
}
