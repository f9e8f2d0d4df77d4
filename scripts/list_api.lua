--- Lists every public function of nasrt (what spec/misuse.lua walks) with
-- its misuse group and how many bad calls the misuse spec makes of it.
--
--   lua5.4 scripts/list_api.lua             -- every function
--   lua5.4 scripts/list_api.lua --missing   -- only those without a case
--
-- Run from the repository root after a build (NASRT_BUILD_DIR overrides
-- ./build).  A function counts as covered by a case of its own, by being a
-- method that takes only self (the wrong-self sweep calls it), or by an
-- entry of misuse.NO_BAD_CALL (which says why no call can be wrong).
local build = os.getenv("NASRT_BUILD_DIR") or "./build"
package.path = "./lua/?.lua;./lua/?/init.lua;./spec/?.lua;" .. package.path
package.cpath = build .. "/lua/?.so;" .. package.cpath

local M = require "misuse"

local only_missing = arg[1] == "--missing"
local list, byname = M.api()
local count = {}
for g in pairs(M.GROUPS) do
  for _, c in ipairs(M.cases(g)) do
    local f = byname[c[1]]
    if f then count[f] = (count[f] or 0) + 1 end
  end
end

local shown, missing = 0, 0
for _, e in ipairs(list) do
  local n = count[e.fn] or 0
  local note = ""
  if M.NO_BAD_CALL[e.name] then note = "no bad call: " .. M.NO_BAD_CALL[e.name]
  elseif n == 0 and M.self_only(e) then note = "self only (wrong-self sweep)"
  elseif n == 0 then note = "MISSING"; missing = missing + 1 end
  if not only_missing or note == "MISSING" then
    print(("%-9s %-52s %3d  %s"):format(M.group_of(e.name) or "?", e.name, n, note))
    shown = shown + 1
  end
end
io.stderr:write(("%d public functions, %d without a misuse case\n"):format(#list, missing))
os.exit(missing == 0 and 0 or 1)
