--- scripts/nb201_compare.lua: random search vs regularized evolution on the
-- NAS-Bench-201 tables (nasrt.bench.nb201():simulate), the comparison of
-- the NAS-Bench-201 paper: each run evaluates --evaluations cells (and/or
-- spends --budget simulated seconds of 12-epoch training), picks the cell
-- with the best 12-epoch validation accuracy and reports its 200-epoch
-- test accuracy; the table gives mean +- std (n-1) over --runs runs.
--
--   ./build/nasrt scripts/nb201_compare.lua                    # 100 runs x 100 evaluations, 3 datasets (~2 s)
--   ./build/nasrt scripts/nb201_compare.lua --runs=20 --datasets=cifar10
--   ./build/nasrt scripts/nb201_compare.lua --evaluations=0 --budget=12000   # AutoDL's time budget
--
-- REA uses the NAS-Bench-201 settings (population 10, tournament 3 drawn
-- with replacement, one op changed per mutation); run r uses seed
-- --seed + r - 1 for both methods.
local bench = require "nasrt.bench"

local opts = { runs = 100, evaluations = 100, budget = 0, seed = 0,
               datasets = "cifar10,cifar100,imagenet16" }
local help = [[
usage: nasrt scripts/nb201_compare.lua [--key=value ...]
  --runs=N           runs per method and dataset [100]
  --evaluations=N    evaluations per run, 0 = no count limit [100]
  --budget=S         also stop at S simulated seconds of training, 0 = off [0]
  --seed=N           seed of the first run [0]
  --datasets=LIST    comma-separated: cifar10, cifar100, imagenet16 [all three]
]]
for _, a in ipairs(arg or {}) do
  if a == "--help" or a == "-h" then io.write(help) os.exit(0) end
  local k, v = a:match("^%-%-([%w_]+)=(.*)$")
  if not k or opts[k] == nil then
    io.stderr:write(("nb201_compare: unknown argument %s\n%s"):format(a, help))
    os.exit(2)
  end
  if type(opts[k]) == "number" then
    local n = tonumber(v)
    if not n then
      io.stderr:write(("nb201_compare: --%s expects a number, got %q\n"):format(k, v))
      os.exit(2)
    end
    opts[k] = math.tointeger(n) or n
  else
    opts[k] = v
  end
end
if opts.evaluations <= 0 and opts.budget <= 0 then
  io.stderr:write("nb201_compare: give --evaluations > 0, --budget > 0 or both\n")
  os.exit(2)
end

local db = assert(bench.nb201())
-- Published CIFAR-10 numbers (data/nb201/README.md): selection by the
-- 12-epoch validation column, 200-epoch test, 100 evaluations.
local PUBLISHED = { cifar10 = { random = "93.73", rea = "93.94" } }
local TITLE = { cifar10 = "CIFAR-10", cifar100 = "CIFAR-100", imagenet16 = "ImageNet16-120" }

local limit = {}
if opts.evaluations > 0 then limit[#limit + 1] = opts.evaluations .. " evaluations" end
if opts.budget > 0 then limit[#limit + 1] = ("%g s simulated training"):format(opts.budget) end
print(("NAS-Bench-201: %d runs per method, %s each; pick by 12-epoch validation, " ..
  "report its 200-epoch test accuracy (%%)"):format(opts.runs, table.concat(limit, " or ")))
print(("%-15s  %-15s%-15s%7s  %6s %6s  %s"):format("dataset", "random search", "REA", "optimum",
  "evals", "sim h", "published (random / REA)"))
local t0 = os.clock()
for ds in opts.datasets:gmatch("[^,%s]+") do
  if not TITLE[ds] then
    io.stderr:write(("nb201_compare: unknown dataset %s\n"):format(ds))
    os.exit(2)
  end
  local res = {}
  for _, m in ipairs { "random", "rea" } do
    res[m] = db:simulate { method = m, dataset = ds, runs = opts.runs, seed = opts.seed,
                           evaluations = opts.evaluations > 0 and opts.evaluations or false,
                           budget = opts.budget > 0 and opts.budget or nil }
  end
  local p = PUBLISHED[ds]
  print(("%-15s  %5.2f ± %-5.2f  %5.2f ± %-5.2f  %7.2f  %6.1f %6.1f  %s"):format(TITLE[ds],
    res.random.mean, res.random.std, res.rea.mean, res.rea.std, res.rea.optimum,
    (res.random.evaluations + res.rea.evaluations) / 2,
    (res.random.time + res.rea.time) / 2 / 3600,
    p and (p.random .. " / " .. p.rea) or "-"))
end
print(("(evals, sim h: mean evaluations and simulated training hours per run; %.1f s CPU)")
  :format(os.clock() - t0))
