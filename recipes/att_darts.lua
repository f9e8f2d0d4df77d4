--- Att-DARTS: "Attention Cell Search" (Nakai, Matsubara, Uehara, IJCNN 2020;
-- code chomin/Att-DARTS, `model_search.py`, `train_search.py`).
--
-- DARTS with attention modules searched along with the operations
-- (differentiable.md §4): on every edge h = sum_o softmax(alpha)_o o(x),
-- then out = sum_a softmax(beta)_a Attn_a(h) over the candidates Identity,
-- SE, BAM, CBAM, GE_theta-plus and DoubleAttention (location
-- `after_every`, the default used for the published cell).  Alphas and
-- betas take Adam steps together; the optimisation is DARTS' bilevel
-- scheme unchanged (first order, or `--unrolled`), so this recipe runs the
-- search loop of recipes/darts.lua with its own network.  The found genotype
-- has (op, input, attention) triples; `darts_network` builds it for
-- retraining.
--
--   nasrt recipes/att_darts.lua                   # minutes on 2 cores (C=8,
--                                                 # 5 cells, 512+512 images, 2 epochs)
--   nasrt recipes/att_darts.lua --C=16 --layers=8 --epochs=50 --train_limit=0 \
--         --val_limit=0 --unrolled                # the paper's search
--
-- NOTE(deviation): only the `after_every` location is searched (the
-- network's own limitation, see nasrt.supernet.att_darts).
local nasrt = require "nasrt"

local supernet = nasrt.supernet

-- recipes/darts.lua, next to this file: its options and search loop
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local darts = dofile(here .. "darts.lua")

local R = {
  name = "att_darts",
  method = "att_darts",
  description = "Att-DARTS (Nakai et al., IJCNN 2020): DARTS cells with searched attention modules.",
  resume_fixed = darts.resume_fixed,
  defaults = {},
}

-- DARTS' options, plus the attention candidates (the paper's search
-- setting is DARTS': C=16, 8 cells, 50 epochs, batch 64, the same
-- optimisers, seed 2).  Six attention modules on every edge make a step
-- about 5x a DARTS step, so the default data subset is halved.
local OVERRIDE = { train_limit = 512, val_limit = 512 }
for _, d in ipairs(darts.defaults) do
  local v = d[2]
  if OVERRIDE[d[1]] ~= nil then v = OVERRIDE[d[1]] end
  R.defaults[#R.defaults + 1] = { d[1], v, d[3] }
  if d[1] == "steps" then
    R.defaults[#R.defaults + 1] = { "attentions", table.concat(nasrt.blocks.ATT_PRIMITIVES, ","),
      "attention candidates after every mixed op, comma-separated (paper: all six)" }
  end
end

local function split_list(s)
  local out = {}
  for name in tostring(s):gmatch("[^,%s]+") do out[#out + 1] = name end
  return out
end

--- The Att-DARTS search network (its GE_theta-plus needs the input side).
function R.build(cfg, data)
  return supernet.att_darts { C = cfg.C, layers = cfg.layers, steps = cfg.steps,
                              multiplier = cfg.steps, classes = data.classes,
                              in_channels = data.in_channels, input_size = data.size,
                              attentions = split_list(cfg.attentions) }
end

function R.run(cfg, run)
  return darts.search(R, cfg, run)
end

return R
