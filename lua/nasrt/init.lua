--- nasrt: a Lua-scriptable runtime for neural architecture search.
-- The C core (tensors, autograd, ops) comes from `nasrt.core`; this file
-- re-exports it as one flat table and adds the Lua-side sugar.
-- @module nasrt
local core = require "nasrt.core"

local nasrt = core

--- Dimensions of a tensor as a string, e.g. "[64,16,28,28]".
function nasrt.shape_str(t)
  if not nasrt.is_tensor(t) then
    local mt = getmetatable(t)
    local what = mt == getmetatable(core.zeros({0})) and "a closed tensor"
      or type(mt) == "table" and mt.__name or type(t)
    error(("shape_str: argument #1: expected tensor, got %s"):format(what), 2)
  end
  return "[" .. table.concat(t:shape(), ",") .. "]"
end

-- Lua library layers (they require only nasrt.core, so no cycle).
nasrt.nn = require "nasrt.nn"
nasrt.optim = require "nasrt.optim"
nasrt.blocks = require "nasrt.blocks"
nasrt.bench = require "nasrt.bench"
nasrt.search = require "nasrt.search"
nasrt.supernet = require "nasrt.supernet"
nasrt.interop = require "nasrt.interop"

--- Data-parallel helpers over MPI (rank 0 of 1 without MPI or mpirun).
nasrt.dist = require "nasrt.dist"

-- Modules that need the whole library load on first use: nasrt.recipe
-- (run directories, options), nasrt.run (reading a run directory back),
-- nasrt.plot (SVG charts).
local lazy = { recipe = "nasrt.recipe", run = "nasrt.run", plot = "nasrt.plot" }
setmetatable(nasrt, { __index = function(t, k)
  local name = lazy[k]
  if not name then return nil end
  local mod = require(name)
  rawset(t, k, mod)
  return mod
end })

return nasrt
