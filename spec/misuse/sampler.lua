--- Misuse cases: nasrt.sampler (see spec/misuse.lua).
local nasrt = require "nasrt"
local S = nasrt.sampler

local function f2(a) return a[1] + a[2] end
local su = S.uniform({choices = {3, 3}, seed = 1})
local sf = S.strict_fair({choices = {3, 3}, seed = 1})
local sb = S.flops_bins({choices = {3, 3}, bins = {{0, 10}}, flops = f2, tries = 3})
local sa = S.attentive({choices = {3, 3}, step = 1, draws = 50, flops = f2})
local ss = S.sandwich({choices = {3, 3}})
local nan = 0 / 0

return {
  -- constructors ----------------------------------------------------------
  {"sampler.uniform", "no options", function() return S.uniform() end, "uniform", "table expected"},
  {"sampler.uniform", "no choices", function() return S.uniform({seed = 1}) end, "sampler.uniform: 'choices' must be a list of per-gene choice counts, got nil"},
  {"sampler.uniform", "empty choices", function() return S.uniform({choices = {}}) end, "sampler.uniform: 'choices' is empty"},
  {"sampler.uniform", "0 choices in a gene", function() return S.uniform({choices = {3, 0}}) end, "sampler.uniform: choices[2] = 0 out of range 1..1048576"},
  {"sampler.uniform", "fractional choices", function() return S.uniform({choices = {2.5}}) end, "sampler.uniform: choices[1] must be an integer, got a fractional number"},
  {"sampler.uniform", "NaN choices", function() return S.uniform({choices = {nan}}) end, "sampler.uniform: choices[1] must be an integer"},
  {"sampler.uniform", "2^31 choices", function() return S.uniform({choices = {2 ^ 31}}) end, "sampler.uniform: choices[1] = 2147483648 out of range"},
  {"sampler.uniform", "a space too large", function()
    local c = {} for i = 1, 20 do c[i] = 1048576 end
    return S.uniform({choices = c}) end, "sampler.uniform: search space too large"},
  {"sampler.uniform", "unknown option", function() return S.uniform({choices = {2}, sede = 1}) end, "sampler.uniform: unknown option 'sede'"},
  {"sampler.uniform", "seed a string", function() return S.uniform({choices = {2}, seed = "one"}) end, "sampler.uniform: option 'seed' must be an integer"},
  {"sampler.strict_fair", "unequal genes", function() return S.strict_fair({choices = {3, 4}}) end, "sampler.strict_fair: strict fairness needs the same number of choices in every gene"},
  {"sampler.strict_fair", "choices a string", function() return S.strict_fair({choices = "3,3"}) end, "sampler.strict_fair: 'choices' must be a list"},
  {"sampler.flops_bins", "no bins", function() return S.flops_bins({choices = {3}, flops = f2}) end, "sampler.flops_bins: option 'bins' must be a non-empty list of {lo, hi} pairs"},
  {"sampler.flops_bins", "a bin with lo > hi", function() return S.flops_bins({choices = {3}, bins = {{5, 1}}, flops = f2}) end, "sampler.flops_bins: bins[1]", "has lo > hi"},
  {"sampler.flops_bins", "a bin of 3 numbers", function() return S.flops_bins({choices = {3}, bins = {{1, 2, 3}}, flops = f2}) end, "sampler.flops_bins: bins[1] must be a pair {lo, hi}"},
  {"sampler.flops_bins", "a NaN bin", function() return S.flops_bins({choices = {3}, bins = {{nan, 1}}, flops = f2}) end, "sampler.flops_bins: bins[1]", "has lo > hi"},
  {"sampler.flops_bins", "no flops", function() return S.flops_bins({choices = {3}, bins = {{0, 1}}}) end, "sampler.flops_bins: option 'flops' is required"},
  {"sampler.flops_bins", "tries 0", function() return S.flops_bins({choices = {3}, bins = {{0, 1}}, flops = f2, tries = 0}) end, "sampler.flops_bins: option 'tries' must be in 1..1e9"},
  {"sampler.flops_bins", "flops a number", function() return S.flops_bins({choices = {3}, bins = {{0, 1}}, flops = 5}) end, "sampler.flops_bins: option 'flops' must be a function or {base=, per_gene=}"},
  {"sampler.flops_bins", "additive flops of the wrong size", function()
    return S.flops_bins({choices = {3, 3}, bins = {{0, 1}}, flops = {per_gene = {{1, 2, 3}}}}) end, "sampler.flops_bins: option 'flops': 'per_gene' has 1 genes, the search space has 2"},
  {"sampler.flops_bins", "additive flops with an unknown key", function()
    return S.flops_bins({choices = {3}, bins = {{0, 1}}, flops = {per_gene = {{1, 2, 3}}, scale = 2}}) end, "sampler.flops_bins: option 'flops': unknown key 'scale'"},
  {"sampler.flops_bins", "additive flops with a string", function()
    return S.flops_bins({choices = {3}, bins = {{0, 1}}, flops = {per_gene = {{1, "2", {}}}}}) end, "sampler.flops_bins: flops.per_gene[1] must be a number"},
  {"sampler.attentive", "no flops", function() return S.attentive({choices = {3}}) end, "sampler.attentive: option 'flops' is required"},
  {"sampler.attentive", "step 0", function() return S.attentive({choices = {3}, flops = f2, step = 0}) end, "sampler.attentive: option 'step' must be a positive number"},
  {"sampler.attentive", "infinite step", function() return S.attentive({choices = {3}, flops = f2, step = math.huge}) end, "sampler.attentive: option 'step' must be a positive number"},
  {"sampler.attentive", "table and draws", function()
    return S.attentive({choices = {3}, flops = f2, draws = 5, table = {{arch = {1}, flops = 1}}}) end, "sampler.attentive: give either 'table' or 'draws', not both"},
  {"sampler.attentive", "empty table", function() return S.attentive({choices = {3}, flops = f2, table = {}}) end, "sampler.attentive: option 'table' is empty"},
  {"sampler.attentive", "a table entry with a bad arch", function()
    return S.attentive({choices = {3}, flops = f2, table = {{arch = {4}, flops = 1}}}) end, "sampler.attentive: table[i].arch[1] = 4 out of range 1..3"},
  {"sampler.attentive", "NaN FLOPs in the table", function()
    return S.attentive({choices = {3}, flops = f2, table = {{arch = {1}, flops = nan}}}) end, "sampler.attentive: observation 1 has FLOPs"},
  {"sampler.attentive", "draws 0", function() return S.attentive({choices = {3}, flops = f2, draws = 0}) end, "sampler.attentive: option 'draws' must be positive"},
  {"sampler.attentive", "draws 2^40", function() return S.attentive({choices = {3}, flops = f2, draws = 2 ^ 40}) end, "sampler.attentive: too many observations"},
  {"sampler.attentive", "max_trials -1", function() return S.attentive({choices = {3}, flops = f2, max_trials = -1}) end, "sampler.attentive: option 'max_trials' must be in 0..1e8"},
  {"sampler.attentive", "flops returns a string", function()
    return S.attentive({choices = {3}, flops = function() return "big" end, draws = 2}) end, "sampler.attentive: the flops function returned string, expected a number"},
  {"sampler.attentive", "flops raises", function()
    return S.attentive({choices = {3}, flops = function() error("flops model broke") end, draws = 2}) end, "flops model broke"},
  {"sampler.sandwich", "order of the wrong length", function() return S.sandwich({choices = {3, 3}, order = {{1, 2, 3}}}) end, "sampler.sandwich: option 'order' must list one order per gene (2 genes)"},
  {"sampler.sandwich", "order repeats an index", function() return S.sandwich({choices = {3}, order = {{1, 1, 2}}}) end, "sampler.sandwich: order[1] repeats index 1"},
  {"sampler.sandwich", "order past the choices", function() return S.sandwich({choices = {3}, order = {{1, 2, 4}}}) end, "sampler.sandwich: order[1] holds 4, gene 1 has 3 choices"},
  {"sampler.sandwich", "unknown option", function() return S.sandwich({choices = {3}, sizes = {1}}) end, "sampler.sandwich: unknown option 'sizes'"},

  -- evolution helpers -----------------------------------------------------
  {"sampler.mutate", "no sampler", function() return S.mutate({1, 2}, {3, 3}, 0.5) end, "sampler.mutate: argument #4 must be a sampler"},
  {"sampler.mutate", "prob 2", function() return S.mutate({1, 2}, {3, 3}, 2, su) end, "sampler.mutate: argument #3 (prob) must be a number in [0, 1]"},
  {"sampler.mutate", "NaN prob", function() return S.mutate({1, 2}, {3, 3}, nan, su) end, "sampler.mutate: argument #3 (prob) must be a number in [0, 1]"},
  {"sampler.mutate", "arch out of range", function() return S.mutate({1, 4}, {3, 3}, 0.5, su) end, "sampler.mutate: arch[2] = 4 out of range 1..3"},
  {"sampler.mutate", "arch of the wrong length", function() return S.mutate({1}, {3, 3}, 0.5, su) end, "sampler.mutate: arch has 1 genes, the search space has 2"},
  {"sampler.mutate", "choices a string", function() return S.mutate({1}, "3", 0.5, su) end, "sampler.mutate: argument #2 (choices) must be a list of choice counts"},
  {"sampler.mutate", "unknown option", function() return S.mutate({1, 2}, {3, 3}, 0.5, su, {force = true}) end, "sampler.mutate: unknown option 'force'"},
  {"sampler.mutate", "a tensor for the arch", function() return S.mutate(nasrt.zeros({2}), {3, 3}, 0.5, su) end, "sampler.mutate: arch must be a list of 2 choice indices"},
  {"sampler.crossover", "no sampler", function() return S.crossover({1, 2}, {2, 1}) end, "sampler.crossover: argument #3 must be a sampler"},
  {"sampler.crossover", "parents of different lengths", function() return S.crossover({1, 2}, {2}, su) end, "sampler.crossover: parents have 2 and 1 genes"},
  {"sampler.crossover", "a string parent", function() return S.crossover("1,2", {2, 1}, su) end, "sampler.crossover: arguments #1 and #2 must be archs"},
  {"sampler.crossover", "a fractional gene", function() return S.crossover({1, 2.5}, {2, 1}, su) end, "sampler.crossover: a[2] must be an integer"},

  -- methods ---------------------------------------------------------------
  {"sampler.uniform.sample", "a table as self", function() return su.sample({}) end, "sample: argument #1: expected a sampler, got table"},
  {"sampler.uniform.sample", "a tensor as self", function() return su.sample(nasrt.zeros({1})) end, "sample: argument #1: expected a sampler, got nasrt.Tensor"},
  {"sampler.attentive.sample", "target not a bin", function() return sa:sample(1000) end, "attentive:sample: target 1000", "is not a FLOPs bin of the table"},
  {"sampler.attentive.sample", "target a string", function() return sa:sample("min") end, "attentive:sample: argument #1 (tau) must be a number, got string"},
  {"sampler.attentive.sample", "NaN target", function() return sa:sample(nan) end, "attentive:sample: target", "is not a FLOPs bin"},
  {"sampler.attentive.sample", "n 0", function() return sa:sample(nil, 0) end, "attentive:sample: argument #2 (n) must be >= 1, got 0"},
  {"sampler.sandwich.sample", "n 1", function() return ss:sample(1) end, "sandwich:sample: argument #1 (n) must be >= 2 (max and min), got 1"},
  {"sampler.sandwich.sample", "n 2^40", function() return ss:sample(2 ^ 40) end, "sandwich:sample: argument #1 (n) must be >= 2"},
  {"sampler.strict_fair.next", "a uniform sampler", function() return sf.next(su) end, "strict_fair:next: argument #1: expected strict_fair sampler, got nasrt.sampler.uniform"},
  {"sampler.flops_bins.flops", "arch out of range", function() return sb:flops({1, 9}) end, "flops_bins:flops: arch[2] = 9 out of range 1..3"},
  {"sampler.flops_bins.flops", "a sampler without a FLOPs model", function() return sb.flops(su, {1, 1}) end, "uniform:flops: this sampler has no FLOPs model"},
  {"sampler.flops_bins.flops", "no arch", function() return sb:flops() end, "flops_bins:flops: arch must be a list of 2 choice indices, got nil"},
  {"sampler.attentive.sample_target", "a sandwich sampler", function() return sa.sample_target(ss) end, "attentive:sample_target: argument #1: expected attentive sampler"},
  {"sampler.attentive.prior", "a number as self", function() return sa.prior(1) end, "attentive:prior: argument #1: expected attentive sampler, got number"},
  {"sampler.sandwich.max", "a fair sampler", function() return ss.max(sf) end, "sandwich:max: argument #1: expected sandwich sampler"},
  {"sampler.sandwich.min", "nil", function() return ss.min() end, "sandwich:min: argument #1: expected sandwich sampler, got no value"},
  {"sampler.sandwich.random", "a string as self", function() return ss.random("s") end, "sandwich:random: argument #1: expected sandwich sampler, got string"},
  {"sampler.uniform.randint", "0", function() return su:randint(0) end, "uniform:randint: argument #1 must be an integer in 1..2^32-1, got 0"},
  {"sampler.uniform.randint", "2^33", function() return su:randint(2 ^ 33) end, "uniform:randint: argument #1 must be an integer in 1..2^32-1"},
  {"sampler.uniform.randint", "a fraction", function() return su:randint(2.5) end, "uniform:randint: argument #1 must be an integer", "got number"},
  {"sampler.uniform.uniform", "a table as self", function() return su.uniform({}) end, "uniform: argument #1: expected a sampler, got table"},
  {"sampler.uniform.choices", "nil", function() return su.choices() end, "choices: argument #1: expected a sampler, got no value"},
  {"sampler.uniform.state", "a dataset-like table", function() return su.state({kind = "uniform"}) end, "state: argument #1: expected a sampler, got table"},
  {"sampler.uniform.set_state", "nil", function() return su:set_state(nil) end, "uniform:set_state: expected a state table, got nil"},
  {"sampler.uniform.set_state", "a fair state", function() return su:set_state(sf:state()) end, "uniform:set_state: state is from a 'strict_fair' sampler, this one is 'uniform'"},
  {"sampler.uniform.set_state", "zero generator", function() return su:set_state({kind = "uniform", rng = {0, 0, 0, 0}}) end, "uniform:set_state: rng words are all zero"},
  {"sampler.uniform.set_state", "3 words", function() return su:set_state({kind = "uniform", rng = {1, 2, 3}}) end, "uniform:set_state: 'rng' must be a list of 4 integers"},
  {"sampler.uniform.set_state", "fractional word", function() return su:set_state({kind = "uniform", rng = {1, 2, 3, 4.5}}) end, "uniform:set_state: rng[4] must be an integer"},
  {"sampler.uniform.set_state", "a permutation that is not one", function()
    local st = sf:state(); st.perm[1] = {1, 1, 2}
    return sf:set_state(st) end, "strict_fair:set_state: perm[1] is not a permutation of 1..3"},
  {"sampler.uniform.set_state", "pointer past m", function()
    local st = sf:state(); st.pointer = 4
    return sf:set_state(st) end, "strict_fair:set_state: pointer[1] = 4 out of range 0..3"},
}
