--- Memory stays flat during training (issue 7): scripts/rss_flat.lua runs a
-- tiny DARTS search (architecture + weight steps, JSON log, checkpoint
-- save/load every 50 steps, the augmenting loader) in a nasrt process and
-- reports the growth between two steps, each measured after a full Lua
-- collection.  Tensor bytes must come back exactly, the Lua heap and the
-- RSS within small bounds.  The 1,000-step form is #slow; CI runs 200.
local H = require "helpers"

local function growth(steps, from)
  local cmd = ("%s --threads 1 scripts/rss_flat.lua --steps=%d --at=%d,%d 2>&1"):format(
    H.nasrt_bin(), steps, from, steps)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local ok = p:close()
  assert(ok, "rss_flat failed:\n" .. out)
  local a, b, rss, live, lua, asan = out:match(
    "growth (%d+) (%d+) rss_kb (%-?%d+) live_bytes (%-?%d+) lua_kb (%-?[%d%.]+) asan (%d)")
  assert(a, "no growth line in:\n" .. out)
  return { from = tonumber(a), to = tonumber(b), rss_kb = tonumber(rss),
           live = tonumber(live), lua_kb = tonumber(lua), asan = asan == "1", text = out }
end

local function check(g, rss_bound_kb)
  -- the same tensors are alive at both points: parameters, optimizer state,
  -- the loaders' buffers
  assert.are.equal(0, g.live, g.text)
  assert.is_true(math.abs(g.lua_kb) < 256, "Lua heap grew by " .. g.lua_kb .. " kB\n" .. g.text)
  if g.asan then return end -- the sanitizer build's RSS is its quarantine (make test SANITIZE=1)
  assert.is_true(g.rss_kb < rss_bound_kb,
    ("RSS grew by %d kB from step %d to %d (bound %d kB)\n%s"):format(g.rss_kb, g.from, g.to,
      rss_bound_kb, g.text))
end

describe("memory over training steps", function()
  it("stays flat from step 100 to 200 of a tiny DARTS search", function()
    check(growth(200, 100), 8 * 1024)
  end)

  it("stays flat from step 100 to 1000 of a tiny DARTS search #slow", function()
    check(growth(1000, 100), 8 * 1024)
  end)
end)
