-- Random search over the DARTS cell space: draw a cell, train it briefly on small inputs,
-- score it on the validation half, keep the best.  A recipe without resume; see the README.
--   ./build/nasrt examples/my_first_strategy.lua --out runs/my1 && ./build/nasrt plot runs/my1
local nasrt = require "nasrt"
local darts_arch = require "nasrt.darts_arch"
local F, OPS = nasrt.F, { table.unpack(nasrt.blocks.DARTS_PRIMITIVES, 2) } -- every op but 'none'

local R = { name = "my_random", method = "random", description = "random DARTS cells, each trained briefly",
  defaults = { { "candidates", 8, "cells to try" }, { "C", 4, "channels" }, { "layers", 3, "cells" },
    { "size", 14, "input side in pixels" }, { "batch_size", 32, "batch" },
    { "train_limit", 960, "training images per candidate" }, { "val_limit", 512, "validation images" },
    { "seed", 0, "random seed" } } }

local choices = {} -- genes: per cell type and node i = 0..3, twice (input in 0..i+1, op)
for e = 0, 15 do table.move({ e % 8 // 2 + 2, #OPS }, 1, 2, #choices + 1, choices) end
local function genotype(a)
  local g = { normal = {}, reduce = {}, normal_concat = { 2, 3, 4, 5 }, reduce_concat = { 2, 3, 4, 5 } }
  for e = 1, 16 do table.insert(e <= 8 and g.normal or g.reduce, { OPS[a[2 * e]], a[2 * e - 1] - 1 }) end
  return g
end

function R.run(cfg, run)
  nasrt.manual_seed(cfg.seed)
  local data = darts_arch.search_data(cfg)
  local sampler = nasrt.sampler.uniform { choices = choices, seed = cfg.seed }
  local best, best_acc = nil, -1
  for c = 1, cfg.candidates do
    local genes = sampler:sample()
    local net = nasrt.supernet.darts_network(genotype(genes), { C = cfg.C, layers = cfg.layers })
    local opt = nasrt.optim.SGD(net:parameters(), { lr = 0.05, momentum = 0.9 })
    data.train:epoch(c)
    for x, y in data.train:iter() do
      opt:zero_grad(); F.cross_entropy(net(data.prep(x)), y):backward(); opt:step()
    end
    local _, acc = darts_arch.evaluate(net, data.eval, data.prep)
    run:log { kind = "eval", step = c, arch = genes, score = acc }
    print(("candidate %d: val acc %.4f"):format(c, acc))
    if acc > best_acc then best, best_acc = genes, acc end
  end
  local text = darts_arch.write_architecture(run, R.method, genotype(best), { val_acc = best_acc }, true)
  print(("best of %d: val acc %.4f  %s"):format(cfg.candidates, best_acc, text))
  return { genotype = genotype(best), val_acc = best_acc }
end

return R
