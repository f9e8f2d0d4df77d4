--- Determinism: every recipe, run twice as a fresh process with the same
-- seed and the same thread count (`nasrt --threads 2`), writes the same run
-- directory bit for bit: arch.json and the other result files, every log
-- record (losses, accuracies, sampled paths, scores) and every tensor and
-- number of the final checkpoint.  Tiny configurations from
-- scripts/killtest.lua (8x8 inputs, a few steps).
local recipe = require "nasrt.recipe"

local K = dofile("scripts/killtest.lua")

local root = os.tmpname()
os.remove(root)
recipe.mkdirs(root)
teardown(function() os.execute(("rm -rf '%s'"):format(root)) end)

local function run(name, tag, extra)
  local dir = ("%s/%s-%s"):format(root, name, tag)
  local out = dir .. ".out"
  local args = { "--out", dir }
  for _, a in ipairs(K.CONFIGS[name]) do args[#args + 1] = a end
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local status = K.wait(K.launch(name, args, out))
  assert.equal(0, status, recipe.read_file(out))
  return dir
end

-- shorter still for the DARTS family (2 epochs of 2 steps)
local SHORT = { darts = { "--epochs=2" }, att_darts = { "--epochs=2" }, gdas = { "--epochs=2" } }

describe("determinism at a fixed thread count", function()
  for _, name in ipairs(K.RECIPES) do
    it(name .. ": two runs with the same seed are bit-identical", function()
      local a, b = run(name, "a", SHORT[name]), run(name, "b", SHORT[name])
      local ok, diffs = K.compare(a, b)
      assert.is_true(ok, table.concat(diffs, "\n"))
      -- something was compared: a result file and logged losses
      assert.is_true(recipe.exists(a .. "/arch.json"))
      local losses = 0
      for _, line in ipairs(K.log_lines(a)) do
        if line:find("loss", 1, true) then losses = losses + 1 end
      end
      assert.is_true(losses >= 3, name .. ": too few loss records")
    end)
  end

  it("the comparison sees a different seed", function()
    local a, c = ("%s/spos-a"):format(root), run("spos", "seed2", { "--seed=2" })
    if not recipe.exists(a) then a = run("spos", "a") end
    local ok, diffs = K.compare(a, c)
    assert.is_false(ok)
    assert.is_true(#diffs >= 2, table.concat(diffs, "\n"))
  end)
end)
