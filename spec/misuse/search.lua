--- Misuse cases: nasrt.search, nasrt.bench (NAS-Bench-201 tables) and
-- nasrt.recipe (see spec/misuse.lua).
local nasrt = require "nasrt"
local search, bench = nasrt.search, nasrt.bench
local recipe = require "nasrt.recipe"
local interop = nasrt.interop

local nan = 0 / 0
local score = function(a) return a[1] end
local evo = search.evolution({choices = {2, 2}, score = score, epochs = 1, population = 2, select = 1,
                              mutation = 1, crossover = 1})
local rea = search.rea({choices = {2, 2}, score = score, cycles = 2, population = 2, sample = 1})
local rnd = search.random({choices = {2, 2}, score = score, n = 1})
local par = search.pareto({choices = {2, 2}, score = score, flops = score, iterations = 1,
                           population = 2, mutation = 1, crossover = 1})
local nb = assert(bench.nb201())
local S = nasrt.sampler.uniform({choices = {2}})
local R = { name = "demo", defaults = { { "epochs", 3, "epochs" }, { "lr", 0.1, "lr" }, { "quiet", false, "quiet" } },
            run = function() return true end }
local tmp = os.tmpname()
local ARCH = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|avg_pool_3x3~2|"

return {
  -- searchers -------------------------------------------------------------
  {"search.evolution", "no options", function() return search.evolution() end, "search.evolution: expected an options table, got nil"},
  {"search.evolution", "no score", function() return search.evolution({choices = {2}}) end, "search.evolution: option 'score' must be a function, got nil"},
  {"search.evolution", "unknown option", function() return search.evolution({choices = {2}, score = score, generations = 5}) end, "search.evolution: unknown option 'generations'"},
  {"search.evolution", "population 0", function() return search.evolution({choices = {2}, score = score, population = 0}) end, "search.evolution: option 'population' must be >= 1, got 0"},
  {"search.evolution", "m_prob 2", function() return search.evolution({choices = {2}, score = score, m_prob = 2}) end, "search.evolution: option 'm_prob' must be a number in [0, 1], got 2"},
  {"search.evolution", "NaN m_prob", function() return search.evolution({choices = {2}, score = score, m_prob = nan}) end, "search.evolution: option 'm_prob' must be a number"},
  {"search.evolution", "choices with a 0", function() return search.evolution({choices = {2, 0}, score = score}) end, "search.evolution: choices[2] must be a positive integer, got 0"},
  {"search.evolution", "seed and sampler", function() return search.evolution({sampler = S, seed = 1, score = score}) end, "search.evolution: give either 'seed' or 'sampler'"},
  {"search.evolution", "a table for the sampler", function() return search.evolution({choices = {2}, sampler = {}, score = score}) end, "search.evolution: option 'sampler' must be a nasrt.sampler, got table"},
  {"search.evolution", "epochs 1.5", function() return search.evolution({choices = {2}, score = score, epochs = 1.5}) end, "search.evolution: option 'epochs' must be an integer, got 1.5"},
  {"search.rea", "mutate 'two'", function() return search.rea({choices = {2}, score = score, mutate = "two"}) end, "search.rea: option 'mutate' must be \"one\", a probability or a function, got two"},
  {"search.rea", "budget without cost", function() return search.rea({choices = {2}, score = score, budget = 10}) end, "search.rea: option 'budget' needs option 'cost'"},
  {"search.rea", "replace a number", function() return search.rea({choices = {2}, score = score, replace = 1}) end, "search.rea: option 'replace' must be a boolean, got number"},
  {"search.rea", "sample 0", function() return search.rea({choices = {2}, score = score, sample = 0}) end, "search.rea: option 'sample' must be >= 1, got 0"},
  {"search.random", "n -1", function() return search.random({choices = {2}, score = score, n = -1}) end, "search.random: option 'n' must be >= 0, got -1"},
  {"search.random", "score a number", function() return search.random({choices = {2}, score = 1}) end, "search.random: option 'score' must be a function, got number"},
  {"search.random", "options a string", function() return search.random("fast") end, "search.random: expected an options table, got string"},
  {"search.pareto", "method 'moead'", function() return search.pareto({choices = {2}, score = score, flops = score, method = "moead"}) end, "search.pareto: option 'method' must be \"bins\" or \"nsga2\", got moead"},
  {"search.pareto", "min above max", function() return search.pareto({choices = {2}, score = score, flops = score, min_flops = 10, max_flops = 1}) end, "search.pareto: min_flops 10 > max_flops 1"},
  {"search.pareto", "no flops model", function() return search.pareto({choices = {2}, score = score}) end, "search.pareto: option 'flops' is required"},
  {"search.pareto", "nsga2 with mutation", function() return search.pareto({choices = {2}, score = score, flops = score, method = "nsga2", mutation = 4}) end, "search.pareto: options 'mutation'/'crossover' are counts of method \"bins\""},
  {"search.pareto", "an init arch out of range", function() return search.pareto({choices = {2}, score = score, flops = score, init = {{3}}}) end, "search.pareto: init[1]: gene 1 = 3 out of range 1..2"},
  {"search.pareto", "step 0", function() return search.pareto({choices = {2}, score = score, flops = score, step = 0}) end, "search.pareto: option 'step' must be positive"},

  -- searcher methods ------------------------------------------------------
  {"search.Searcher.set_state", "nil", function() return evo:set_state(nil) end, "search.evolution:set_state: expected a state table, got nil"},
  {"search.Searcher.set_state", "a state of another kind", function() return evo:set_state(rea:state()) end, "search.evolution:set_state: state is from a 'rea' search, this is 'evolution'"},
  {"search.Searcher.set_state", "another search space", function()
    local st = evo:state(); st.choices = {3, 3}
    return evo:set_state(st) end, "search.evolution:set_state: state is for the search space {3,3}, this searcher has {2,2}"},
  {"search.Searcher.set_state", "version 9", function()
    local st = rnd:state(); st.version = 9
    return rnd:set_state(st) end, "search.random:set_state: state version 9"},
  {"search.Searcher.set_state", "a bad generator state", function()
    local st = rnd:state(); st.rng = {kind = "uniform", rng = {0, 0, 0, 0}}
    return rnd:set_state(st) end, "search.random:set_state:", "rng words are all zero"},
  {"search.Searcher.set_state", "a broken evaluation record", function()
    local st = rnd:state(); st.evals = {{arch = {1}, score = "high"}}
    return rnd:set_state(st) end, "search.random:set_state: evals[1] is not an evaluation record"},
  {"search.Searcher.run", "score returns a string", function()
    return search.random({choices = {2}, score = function() return "good" end, n = 1}):run() end, "search.random: score returned string for arch {", "expected a number"},
  {"search.Searcher.run", "score raises", function()
    return search.random({choices = {2}, score = function() error("evaluator crashed") end, n = 1}):run() end, "evaluator crashed"},
  {"search.Searcher.best", "a sampler as self", function() return evo.best(S) end, "Searcher.best: self is a nasrt.sampler.uniform, not a Searcher"},
  {"search.Searcher.evaluated", "nil", function() return evo.evaluated() end, "Searcher.evaluated: self is nil"},
  {"search.Searcher.evaluations", "a table as self", function() return evo.evaluations({}) end, "Searcher.evaluations: self is a table"},
  {"search.Searcher.state", "a number as self", function() return evo.state(3) end, "Searcher.state: self is a number"},
  {"search.evolution.step", "a random searcher as self", function() return evo.step(rnd) end, "Evolution.step: self is a RandomSearch, not a Evolution"},
  {"search.evolution.step", "a constraint that returns a number", function()
    return search.evolution({choices = {2, 2}, score = score, constraint = function() return 1 end,
                             population = 1, epochs = 1}):step() end, "search.evolution: constraint returned number for arch {", "expected a boolean"},
  {"search.evolution.top", "a pareto searcher as self", function() return evo.top(par) end, "Evolution.top: self is a Pareto"},
  {"search.evolution.done", "nil", function() return evo.done() end, "Evolution.done: self is nil"},
  {"search.rea.step", "a random function returning a bad arch", function()
    return search.rea({choices = {2}, score = score, random = function() return {5} end}):step() end, "search.rea: the 'random' function's result: gene 1 = 5 out of range 1..2"},
  {"search.rea.done", "an evolution as self", function() return rea.done(evo) end, "REA.done: self is a Evolution, not a REA"},
  {"search.random.step", "a string as self", function() return rnd.step("x") end, "RandomSearch.step: self is a string"},
  {"search.random.done", "a table as self", function() return rnd.done({}) end, "RandomSearch.done: self is a table"},
  {"search.pareto.step", "flops returns nil", function()
    return search.pareto({choices = {2}, score = score, flops = function() end, population = 1, iterations = 1}):step() end, "search.pareto", "flops"},
  {"search.pareto.done", "a REA as self", function() return par.done(rea) end, "Pareto.done: self is a REA"},
  {"search.pareto.front", "nil", function() return par.front() end, "Pareto.front: self is nil"},
  {"search.pareto.archive", "a number as self", function() return par.archive(1) end, "Pareto.archive: self is a number"},

  -- Pareto helpers and metrics --------------------------------------------
  {"search.pareto_front", "a number", function() return search.pareto_front(5) end, "pareto_front: expected a list of points, got number"},
  {"search.pareto_front", "points of different sizes", function() return search.pareto_front({{1, 2}, {1}}) end, "pareto_front: point 2 has 1 objectives, point 1 has 2"},
  {"search.pareto_front", "a string objective", function() return search.pareto_front({{1, "a"}}) end, "pareto_front: point 1 objective 2 must be a number, got a"},
  {"search.nondominated_sort", "a point that is a number", function() return search.nondominated_sort({{1, 2}, 3}) end, "nondominated_sort: point 2 must be a list of objective values, got number"},
  {"search.nondominated_sort", "nil", function() return search.nondominated_sort() end, "nondominated_sort: expected a list of points, got nil"},
  {"search.crowding_distance", "a string", function() return search.crowding_distance("front") end, "crowding_distance: expected a list of points, got string"},
  {"search.crowding_distance", "a front index out of range", function() return search.crowding_distance({{1, 2}, {2, 1}}, {1, 5}) end, "crowding_distance: front[2] = 5 is not a point index 1..2"},
  {"search.kendall_tau", "different lengths", function() return search.kendall_tau({1, 2, 3}, {1, 2}) end, "kendall_tau: lists have 3 and 2 values"},
  {"search.kendall_tau", "a string value", function() return search.kendall_tau({1, "2"}, {1, 2}) end, "kendall_tau: value 2 is not a number (string, number)"},
  {"search.kendall_tau", "nil", function() return search.kendall_tau(nil, {1}) end, "kendall_tau: expected two lists of numbers, got nil and table"},
  {"search.spearman", "different lengths", function() return search.spearman({1}, {1, 2}) end, "spearman: lists have 1 and 2 values"},
  {"search.spearman", "a table value", function() return search.spearman({1, {}}, {1, 2}) end, "spearman: value 2 is not a number"},
  {"search.pearson", "a number", function() return search.pearson(1, 2) end, "pearson: expected two lists of numbers, got number and number"},
  {"search.pearson", "different lengths", function() return search.pearson({1, 2}, {1}) end, "pearson: lists have 2 and 1 values"},
  {"search.rankdata", "a string", function() return search.rankdata("123") end, "rankdata: expected", "got string"},
  {"search.rankdata", "a boolean value", function() return search.rankdata({1, true}) end, "rankdata: value 2 is not a number"},
  {"search.sparse_kendall_tau", "threshold 0", function() return search.sparse_kendall_tau({1, 2}, {1, 2}, {threshold = 0}) end, "sparse_kendall_tau: option 'threshold' must be a positive number"},
  {"search.sparse_kendall_tau", "different lengths", function() return search.sparse_kendall_tau({1, 2}, {1}) end, "sparse_kendall_tau: lists have 2 and 1 values"},
  {"search.precision_at_k", "k 0", function() return search.precision_at_k({1, 2}, {1, 2}, 0) end, "precision_at_k: k must be an integer in 1..2, got 0"},
  {"search.precision_at_k", "k past the list", function() return search.precision_at_k({1, 2}, {1, 2}, 3) end, "precision_at_k: k must be an integer in 1..2, got 3"},
  {"search.p_at_top_k", "ratio 2", function() return search.p_at_top_k({1, 2}, {1, 2}, {2}) end, "p_at_top_k: ratios[1] = 2 is not in (0, 1]"},
  {"search.p_at_top_k", "lists of different lengths", function() return search.p_at_top_k({1, 2}, {1}) end, "p_at_top_k: lists have 2 and 1 values"},
  {"search.top_percentile", "k 0", function() return search.top_percentile({1, 2}, {1, 2}, 0) end, "top_percentile: k must be a positive integer"},
  {"search.top_percentile", "a string list", function() return search.top_percentile("a", {1}, 1) end, "top_percentile: expected two lists of numbers"},
  {"search.key", "a number", function() return search.key(5) end, "search.key: expected an arch (a list of choice indices), got number"},
  {"search.key", "a list of tables", function() return search.key({{1}}) end, "search.key: arch[1] must be a number, got table"},
  {"search.round_half_even", "a string", function() return search.round_half_even("2.5") end, "round_half_even: expected a number, got string"},

  -- NAS-Bench-201 ---------------------------------------------------------
  {"bench.nb201", "a number", function() return bench.nb201(5) end, "nb201: dir must be a string, got number"},
  {"bench.parse_nb201", "nil", function() return bench.parse_nb201(nil) end, "parse_nb201: bad NAS-Bench-201 arch string \"nil\": expected an arch string, got nil"},
  {"bench.parse_nb201", "two nodes", function() return bench.parse_nb201("|none~0|+|none~0|none~1|") end, "parse_nb201: bad NAS-Bench-201 arch string", "expected 3 nodes separated by '+', got 2"},
  {"bench.parse_nb201", "an unknown op", function() return bench.parse_nb201("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|") end, "parse_nb201:", "unknown op 'conv'"},
  {"bench.parse_nb201", "an extra entry", function() return bench.parse_nb201("|none~0|none~1|+|none~0|none~1|+|none~0|none~1|none~2|") end, "parse_nb201:", "node 1"},
  {"bench.nb201_encode", "a wrong input", function() return bench.nb201_encode("|none~0|+|none~1|none~1|+|none~0|none~1|none~2|") end, "nb201_encode:", "expected input ~0"},
  {"bench.nb201_encode", "a table", function() return bench.nb201_encode({1, 2}) end, "nb201_encode: bad NAS-Bench-201 arch string", "expected an arch string, got table"},
  {"bench.nb201_decode", "5 genes", function() return bench.nb201_decode({1, 1, 1, 1, 1}) end, "nb201_decode: expected 6 op indices (1..5)"},
  {"bench.nb201_decode", "an index of 6", function() return bench.nb201_decode({1, 1, 1, 1, 1, 6}) end, "nb201_decode", "6"},
  {"bench.nb201_string", "an unknown op", function() return bench.nb201_string({"none", "none", "none", "none", "none", "conv"}) end, "nb201_string", "conv"},
  {"bench.nb201_string", "7 edges", function() return bench.nb201_string({1, 1, 1, 1, 1, 1, 1}) end, "nb201_string: expected 6 edges ({op, j} pairs or op names), got 7 entries"},
  {"bench.NB201.arch", "index -1", function() return nb:arch(-1) end, "nb201:arch: index -1 out of range (official 0-based indices)"},
  {"bench.NB201.arch", "a string", function() return nb:arch("0") end, "nb201:arch: index must be an integer (0-based), got 0"},
  {"bench.NB201.index", "a bad string", function() return nb:index("|none~0|") end, "nb201:index: bad NAS-Bench-201 arch string"},
  {"bench.NB201.query", "index 1.5", function() return nb:query(1.5) end, "nb201:query: index must be an integer (0-based), got 1.5"},
  {"bench.NB201.query", "an empty gene list", function() return nb:query({}) end, "nb201:query: expected 6 op indices (1..5), got table"},
  {"bench.NB201.random", "no sampler", function() return nb:random() end, "nb201:random: argument #1 must be a sampler (its generator is used), got nil"},
  {"bench.NB201.size", "a table as self", function() return nb.size({}) end, "nb201.size: self is a table, not a nb201"},

  -- recipe ----------------------------------------------------------------
  {"recipe.parse", "an unknown option", function() return recipe.parse(R, {"--epoch=3"}) end, "unknown option --epoch (known: epochs, lr, quiet)"},
  {"recipe.parse", "a number for an integer", function() return recipe.parse(R, {"--epochs=2.5"}) end, "option --epochs expects an integer, got \"2.5\""},
  {"recipe.parse", "a word for a number", function() return recipe.parse(R, {"--lr", "fast"}) end, "option --lr expects a number, got \"fast\""},
  {"recipe.parse", "a bad boolean", function() return recipe.parse(R, {"--quiet=maybe"}) end, "option --quiet expects true or false, got \"maybe\""},
  {"recipe.parse", "an unknown flag last", function() return recipe.parse(R, {"--bogus"}) end, "unknown option --bogus (known: "},
  {"recipe.parse", "a missing value", function() return recipe.parse(R, {"--lr"}) end, "option --lr needs a value"},
  {"recipe.parse", "a positional argument", function() return recipe.parse(R, {"fast"}) end, "unexpected argument \"fast\" (options look like --key=value)"},
  {"recipe.parse", "not a recipe", function() return recipe.parse(nil, {}) end, "recipe.parse: expected a recipe table"},
  {"recipe.parse", "argv a string", function() return recipe.parse(R, "--epochs=3") end, "recipe.parse: argv must be a list of strings, got string"},
  {"recipe.parse", "a number in argv", function() return recipe.parse(R, {3}) end, "recipe.parse: argv[1] must be a string, got number"},
  {"recipe.usage", "a string", function() return recipe.usage("darts") end, "recipe.usage: expected a recipe table"},
  {"recipe.usage", "script a number", function() return recipe.usage(R, 5) end, "recipe.usage: script must be a string, got number"},
  {"recipe.usage", "defaults a string", function() return recipe.usage({name = "x", defaults = "none"}) end, "recipe.usage: defaults must be a list of {name, default, help}"},
  {"recipe.with_defaults", "cfg a number", function() return recipe.with_defaults(R, 3) end, "recipe.with_defaults: cfg must be a table, got number"},
  {"recipe.with_defaults", "no recipe", function() return recipe.with_defaults() end, "recipe.with_defaults: expected a recipe table"},
  {"recipe.mkdirs", "a number", function() return recipe.mkdirs(5) end, "recipe.mkdirs: path must be a string, got number"},
  {"recipe.mkdirs", "below a file", function() return recipe.mkdirs(tmp .. "/sub") end, "cannot create directory"},
  {"recipe.write_file", "no text", function() return recipe.write_file(tmp .. ".w") end, "recipe.write_file: text must be a string, got nil"},
  {"recipe.write_file", "a table path", function() return recipe.write_file({}, "x") end, "recipe.write_file: path must be a string, got table"},
  {"recipe.read_file", "nil", function() return recipe.read_file(nil) end, "recipe.read_file: path must be a string, got nil"},
  {"recipe.exists", "a table", function() return recipe.exists({}) end, "recipe.exists: path must be a string, got table"},
  {"recipe.encode", "a function", function() return recipe.encode({f = print}) end, "recipe.encode"},
  {"recipe.decode", "a number", function() return recipe.decode(5) end, "recipe.decode: text must be a string, got number"},
  {"recipe.logger", "a table path", function() return recipe.logger({}) end, "recipe.logger: path must be a string, got table"},
  {"recipe.logger", "append a string", function() return recipe.logger(tmp .. ".log", "yes") end, "recipe.logger: append must be a boolean, got string"},
  {"recipe.read_log", "a number", function() return recipe.read_log(1) end, "recipe.read_log: path must be a string, got number"},
  {"recipe.progress", "a string total", function() return recipe.progress("10") end, "recipe.progress: total must be a non-negative number, got 10"},
  {"recipe.progress", "opts a number", function() return recipe.progress(10, 1) end, "recipe.progress: options must be a table, got number"},
  {"recipe.fmt_time", "a string", function() return recipe.fmt_time("60") end, "recipe.fmt_time: expected a number of seconds, got string"},
  {"recipe.open_run", "cfg a string", function() return recipe.open_run(R, "runs/x") end, "recipe.open_run: cfg must be a table, got string"},
  {"recipe.open_run", "no recipe", function() return recipe.open_run(nil, {}) end, "recipe.open_run: expected a recipe table"},
  {"recipe.run", "a recipe without run", function() return recipe.run({name = "x"}, {out = tmp .. ".d"}) end, "recipe.run: the recipe has no run function"},
  {"recipe.run", "not a recipe", function() return recipe.run(5) end, "recipe.run: expected a recipe table"},
  {"recipe.main", "not a recipe", function() return recipe.main("darts", {}) end, "recipe.main: expected a recipe table"},
  {"recipe.main", "argv a number", function() return recipe.main(R, 5) end, "recipe.main: argv must be a list of strings, got number"},
  -- more searcher helpers ---------------------------------------------------
  {"search.evaluate_parallel", "archs a number", function() return search.evaluate_parallel(5, score) end, "search.evaluate_parallel: archs must be a list, got number"},
  {"search.evaluate_parallel", "no score", function() return search.evaluate_parallel({{1, 1}}) end, "search.evaluate_parallel: score must be a function, got nil"},
  {"search.evaluate_parallel", "score raises", function() return search.evaluate_parallel({{1, 1}}, function() error("scorer died") end) end, "scorer died"},
  {"search.upcoming", "not a searcher", function() return search.upcoming({}) end, "search.upcoming: expected a searcher, got a table"},
  {"search.upcoming", "unknown option", function() return search.upcoming(rnd, {wants = 2}) end, "search.upcoming: unknown option 'wants'"},
  {"search.upcoming", "want 0", function() return search.upcoming(rnd, {want = 0}) end, "search.upcoming: option 'want' must be >= 1, got 0"},
  {"search.random.set_state", "a string", function() return rnd:set_state("saved") end, "search.random:set_state: expected a state table, got string"},
  {"search.random.set_state", "an evolution state", function() return rnd:set_state(evo:state()) end, "search.random:set_state: state is from a 'evolution' search, this is 'random'"},

  -- NAS-Bench-201 queries (arguments checked before the tables load) --------
  {"bench.NB201.acc", "an unknown dataset", function() return nb:acc(0, "mnist") end, "nb201:acc: unknown dataset mnist (expected cifar10, cifar100 or imagenet16)"},
  {"bench.NB201.acc", "a negative index", function() return nb:acc(-1) end, "nb201:acc: index -1 out of range"},
  {"bench.NB201.cost", "a bad gene list", function() return nb:cost({9, 9, 9, 9, 9, 9}) end, "nb201:cost: gene 1 = 9 is not an op index 1..5"},
  {"bench.NB201.epoch_time", "a fractional index", function() return nb:epoch_time(0.5) end, "nb201:epoch_time: index must be an integer (0-based), got 0.5"},
  {"bench.NB201.train_time", "a bad arch string", function() return nb:train_time("|x~0|") end, "nb201:train_time: bad NAS-Bench-201 arch string"},
  {"bench.NB201.unique", "a boolean", function() return nb:unique(true) end, "nb201:unique: index must be an integer (0-based), got true"},
  {"bench.NB201.isomorphs", "a negative index", function() return nb:isomorphs(-3) end, "nb201:unique: index -3 out of range"},
  {"bench.NB201.best", "an unknown dataset", function() return nb:best("svhn") end, "nb201:best: unknown dataset svhn"},
  {"bench.NB201.evaluator", "unknown option", function() return nb:evaluator({epoch = 12}) end, "nb201:evaluator: unknown option 'epoch'"},
  {"bench.NB201.evaluator", "a string", function() return nb:evaluator("cifar10") end, "nb201:evaluator: expected an options table"},
  {"bench.NB201.simulate", "no options", function() return nb:simulate() end, "nb201:simulate: expected an options table"},
  {"bench.NB201.simulate", "unknown option", function() return nb:simulate({method = "rea", repeats = 3}) end, "nb201:simulate: unknown option 'repeats'"},
  {"bench.NB201.simulate", "an unknown method", function() return nb:simulate({method = "bayes"}) end, "nb201:simulate", "bayes"},

  -- recipe helpers of the checkpoint logic (arguments only) -----------------
  {"recipe.check_finite", "a tensor", function() return recipe.check_finite(nasrt.zeros({2})) end, "recipe.check_finite: state must be a table, got userdata"},
  {"recipe.check_finite", "a NaN in the state", function() return recipe.check_finite({w = nasrt.tensor({1, nan})}) end, "divergence: checkpoint not written: ", "[2] is NaN at element 2"},
  {"recipe.truncate_file", "n -1", function() return recipe.truncate_file(tmp, -1) end, "recipe.truncate_file: n must be a non-negative integer, got -1"},
  {"recipe.truncate_file", "a number path", function() return recipe.truncate_file(1, 0) end, "recipe.truncate_file: path must be a string, got number"},

  -- architecture interchange (nasrt.interop) --------------------------------
  {"interop.arch_from_text", "a number", function() return interop.arch_from_text(5) end, "arch_from_text: expected a string, got number"},
  {"interop.arch_from_text", "garbage", function() return assert(interop.arch_from_text("not an arch")) end, "arch_from_text: not an NB201 string, macro path or genotype"},
  {"interop.arch_from_text", "a bad NB201 string", function() return assert(interop.arch_from_text("|none~0|+|none~1|")) end, "arch_from_text"},
  {"interop.arch_from_text", "a negative macro entry", function() return assert(interop.arch_from_text("macro:1,-2")) end, "arch_from_text: macro path entry 2 is -2"},
  {"interop.arch_to_text", "a number", function() return interop.arch_to_text(5) end, "arch: expected an architecture (string or table), got number"},
  {"interop.arch_from_json", "a number", function() return interop.arch_from_json(5) end, "arch_from_json: expected JSON text or a table, got number"},
  {"interop.arch_from_json", "bad JSON", function() return assert(interop.arch_from_json("{bad")) end, "arch_from_json: bad JSON"},
  {"interop.arch_from_json", "a record without an arch", function() return assert(interop.arch_from_json({type = "resnet"})) end, "arch_from_json: the record holds no architecture I know (type resnet)"},
  {"interop.arch_to_json", "a boolean", function() return interop.arch_to_json(true) end, "arch: expected an architecture (string or table), got boolean"},
  {"interop.arch", "an unknown kind", function() return interop.arch({kind = "vit"}) end, "arch: unknown kind vit (expected nb201, darts or macro)"},
  {"interop.arch", "nil", function() return interop.arch(nil) end, "arch: expected an architecture (string or table), got nil"},
  {"interop.save_arch", "a number path", function() return interop.save_arch(5, ARCH) end, "save_arch: path must be a string"},
  {"interop.save_arch", "format 'yaml'", function() return interop.save_arch(tmp .. ".arch", ARCH, "yaml") end, "save_arch: format must be json or text, got yaml"},
  {"interop.load_arch", "a table", function() return interop.load_arch({}) end, "load_arch: expected a path or text"},
  {"interop.load_arch", "text that is no arch", function() return assert(interop.load_arch("hello")) end, "arch_from_text: not an NB201 string"},
  {"interop.export_npy", "not a module", function() return interop.export_npy({}, tmp .. ".w") end, "export_npy"},
  {"interop.export_npy", "an empty folder name", function() return interop.export_npy(nasrt.nn.Linear(2, 2), "") end, "export_npy: dir must be a folder path"},
  {"interop.import_npy", "not a module", function() return interop.import_npy(5, "/tmp") end, "import_npy"},
  {"interop.import_npy", "a file for the folder", function() return assert(interop.import_npy(nasrt.nn.Linear(2, 2), tmp)) end, "import_npy:", "is not a folder"},
}
