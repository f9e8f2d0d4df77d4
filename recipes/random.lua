--- Random search: the baseline every NAS method has to beat (Li & Talwalkar,
-- "Random Search and Reproducibility for Neural Architecture Search", UAI
-- 2019; AutoDL-Projects `random_wo_share.py` on NAS-Bench-201; SPOS'
-- `get_random` baseline), reference/oneshot.md §4.3.
--
-- Draws `--n` uniform architectures (filtered by the FLOPs limit when one
-- is set), scores each and keeps the best.  Any space:
--   * `--space=nb201` (default): the NAS-Bench-201 cell (6 edges x 5 ops).
--     `--score=supernet` (default) trains a path-mode NB201 supernet on
--     uniform paths (RSPS) and scores by BN-recalibrated validation
--     accuracy on Fashion-MNIST; `--score=table` scores by the benchmark's
--     12-epoch validation accuracy and reports the pick's 200-epoch test
--     accuracy (no training: a run takes seconds);
--   * `--space=spos|fairnas`: the SPOS / FairNAS chains, scored by the
--     BN-recalibrated supernet after a brief supernet training.
--
--   nasrt recipes/random.lua --bench nb201            # NAS-Bench-201 benchmark mode
--   nasrt recipes/random.lua --bench nb201 --n=100000 --budget=12000   # AutoDL's time budget
--   nasrt recipes/random.lua                          # NB201 supernet on Fashion-MNIST
--   nasrt recipes/random.lua --space=spos --flops_limit=2.4 --n=1050   # SPOS' equal-budget baseline
--
-- Writes config.json, log.jsonl (every evaluation), checkpoint.nrck,
-- arch.json / arch.txt (the NB201 arch string or the block names).
--
-- In table mode every evaluation charges the cell's simulated 12-epoch
-- training time (nasrt.bench epoch_time x 12); `--budget` stops on it.
--
-- NOTE(deviation): AutoDL stops on a simulated time budget only (12000 s
-- of 12-epoch training on NB201); here the default stop is a number of
-- evaluations (100, about what that budget buys: 110 on average with the
-- time estimate of nasrt.bench), and --budget adds the time stop.  The NB201 supernet is scaled for
-- 2 CPU cores (C=8, N=1; paper C=16, N=5) and trained 600 steps.
local oneshot = require "nasrt.oneshot"
local search = require "nasrt.search"

return oneshot.baseline_recipe {
  name = "random",
  description = "Random search (Li & Talwalkar 2019): uniform candidates, best by validation;\n" ..
    "NAS-Bench-201 table mode or BN-recalibrated supernet scores over nb201/spos/fairnas.",
  options = {
    { "n", 100, "candidates evaluated (NB201 benchmark: 100; SPOS' equal budget ~1050)" },
    { "dedup", false, "skip candidates already evaluated" },
  },
  total = function(cfg) return cfg.n end,
  make = function(cfg, choices, score, constraint, limits)
    return search.random { choices = choices, seed = cfg.seed + 1, score = score,
                           constraint = constraint, n = cfg.n, dedup = cfg.dedup,
                           cost = limits.cost, budget = limits.budget }
  end,
}
