--- nasrt.supernet: weight-sharing supernets and the stand-alone networks
-- built from what they find.  Each family lives in its own file and adds
-- its constructors to this one table:
--
-- * `darts.lua`   DARTS cell supernet (softmax / sigmoid / Gumbel), AGNAS
--                 micro, Att-DARTS; genotypes; the discrete DARTS network
-- * `nb201.lua`   NAS-Bench-201 supernet and `nb201_network(arch_string)`
-- * `chain.lua`   single-path chains (SPOS, FairNAS) and AGNAS macro
-- * `elastic.lua` the AttentiveNAS/BigNAS elastic supernet
--
-- Files require only "nasrt.core" and siblings, never "nasrt", so loading
-- this table from nasrt/init.lua makes no cycle.
-- @module nasrt.supernet
local M = {}

for _, name in ipairs({ "darts", "nb201", "chain", "elastic" }) do
  local modname = "nasrt.supernet." .. name
  if package.searchpath(modname, package.path) then
    local mod = require(modname)
    for k, v in pairs(mod) do
      assert(M[k] == nil, "nasrt.supernet: " .. k .. " defined twice")
      M[k] = v
    end
  end
end

return M
