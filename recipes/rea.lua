--- REA: regularized (aging) evolution (Real, Aggarwal, Huang, Le,
-- "Regularized Evolution for Image Classifier Architecture Search", AAAI
-- 2019, Algorithm 1; as re-implemented by NNI `RegularizedEvolution` and
-- AutoDL-Projects `regularized_ea.py` for NAS-Bench-201),
-- reference/oneshot.md §4.1-4.2.
--
-- A population of `--population` random architectures; each cycle draws
-- `--sample` members (with replacement, as AutoDL), mutates the best of
-- them (one gene changed to a different value, AutoDL; or every gene
-- resampled with `--m_prob`, NNI), scores the child, adds it and removes
-- the *oldest* member.  The answer is the best of everything scored.
-- Spaces and scores as recipes/random.lua:
--   * `--space=nb201` (default) with `--score=supernet` (an RSPS-trained
--     NB201 supernet on Fashion-MNIST) or `--score=table` (NAS-Bench-201's
--     12-epoch validation accuracy; the pick's 200-epoch test accuracy is
--     reported);
--   * `--space=spos|fairnas`: BN-recalibrated supernet accuracy after a
--     brief supernet training.
--
--   nasrt recipes/rea.lua --bench nb201               # NAS-Bench-201 benchmark mode
--   nasrt recipes/rea.lua --bench nb201 --cycles=100000 --budget=12000   # AutoDL's time budget
--   nasrt recipes/rea.lua                             # NB201 supernet on Fashion-MNIST
--   nasrt recipes/rea.lua --population=100 --sample=25 --cycles=20000 \
--       --m_prob=0.05 --score=table                   # NNI's (Real et al.'s) settings
--
-- Writes config.json, log.jsonl (every evaluation), checkpoint.nrck,
-- arch.json / arch.txt.
--
-- NOTE(deviation): AutoDL stops on a simulated time budget only (12000 s
-- on NB201); here on a number of evaluations (`--cycles`, 100 as the NB201
-- R_EA scripts) and, with `--budget`, also on the simulated 12-epoch
-- training time of the cells scored (nasrt.bench epoch_time x 12).  The NB201 supernet is scaled for 2 CPU cores (C=8, N=1;
-- paper C=16, N=5) and trained 600 steps.
local oneshot = require "nasrt.oneshot"
local search = require "nasrt.search"

return oneshot.baseline_recipe {
  name = "rea",
  description = "REA (Real et al., AAAI 2019): regularized (aging) evolution; NAS-Bench-201 " ..
    "table mode\nor BN-recalibrated supernet scores over nb201/spos/fairnas.",
  options = {
    { "population", 10, "population size P (NB201: 10; NNI: 100)" },
    { "sample", 3, "tournament size S (NB201: 3; NNI: 25)" },
    { "cycles", 100, "evaluations in all, population included (NB201: 100; NNI: 20000)" },
    { "m_prob", 0.0, "0 = change one gene to a different value (AutoDL); p = NNI's per-gene rate" },
    { "replace", true, "tournament draws with replacement (AutoDL) or without (NNI)" },
  },
  total = function(cfg) return cfg.cycles end,
  make = function(cfg, choices, score, constraint, limits)
    return search.rea { choices = choices, seed = cfg.seed + 1, score = score,
                        constraint = constraint, population = cfg.population,
                        sample = cfg.sample, cycles = cfg.cycles, replace = cfg.replace,
                        mutate = cfg.m_prob > 0 and cfg.m_prob or "one",
                        cost = limits.cost, budget = limits.budget }
  end,
}
