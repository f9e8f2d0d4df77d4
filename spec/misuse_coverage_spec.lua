-- The misuse spec as a whole: every public function of nasrt belongs to a
-- group of spec/misuse.lua, has a bad call (or is a method taking only
-- self, refused by the wrong-self sweep, or is listed in NO_BAD_CALL with
-- the reason), and every Lua class method checks its self.  The groups'
-- own specs (errors_spec.lua, misuse_*_spec.lua) run the cases.
local M = require "misuse"
local guard = require "nasrt.guard"

describe("misuse coverage", function()
  local list, byname = M.api()

  it("assigns every public function to a group", function()
    local stray = {}
    for _, e in ipairs(list) do
      if not M.group_of(e.name) then stray[#stray + 1] = e.name end
    end
    assert(#stray == 0, "not in any group: " .. table.concat(stray, ", "))
  end)

  it("has at least 300 distinct bad calls over all groups, and a wrong-self sweep", function()
    local total, sweep, per = 0, 0, {}
    for g in pairs(M.GROUPS) do
      local n = #M.cases(g)
      total = total + n
      per[#per + 1] = ("%s %d"):format(g, n)
      sweep = sweep + (M.sweep(g))
    end
    table.sort(per)
    assert(total >= 300, ("%d bad calls (%s)"):format(total, table.concat(per, ", ")))
    assert(sweep >= 200, ("the wrong-self sweep calls only %d methods"):format(sweep))
  end)

  it("lists only real functions as having no bad call", function()
    for name in pairs(M.NO_BAD_CALL) do
      assert(byname[name], name .. " is not a public function")
    end
  end)

  it("guards every method of every Lua class against a wrong self", function()
    local unguarded = {}
    for _, e in ipairs(list) do
      if e.method and debug.getinfo(e.fn, "S").what == "Lua" and not guard.guarded(e.fn) then
        unguarded[#unguarded + 1] = e.name
      end
    end
    assert(#unguarded == 0, "no self check: " .. table.concat(unguarded, ", "))
  end)
end)
