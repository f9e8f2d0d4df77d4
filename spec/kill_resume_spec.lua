--- Kill and resume, Ctrl-C, damaged checkpoints and resume-time option
-- overrides, on tiny recipe runs in child processes (scripts/killtest.lua
-- starts them, SIGKILLs them at seeded random points -- some while a
-- checkpoint is being written -- and compares run directories bit for
-- bit).  The CI form kills a SPOS run 4 times; the #slow form kills darts,
-- agnas (micro), spos, attentivenas and train 20 times each.
local nasrt = require "nasrt"
local recipe = require "nasrt.recipe"
local lfs = require "lfs"

local K = dofile("scripts/killtest.lua")

local root = os.tmpname()
os.remove(root)
recipe.mkdirs(root)
local n_dirs = 0
local function fresh(tag)
  n_dirs = n_dirs + 1
  return ("%s/%s-%d"):format(root, tag, n_dirs)
end

local rm_rf = require("helpers").rm_rf
teardown(function() rm_rf(root) end)

local SPOS = K.CONFIGS.spos

local function with(args, ...)
  local out = {}
  for _, a in ipairs(args) do out[#out + 1] = a end
  for _, a in ipairs { ... } do out[#out + 1] = a end
  return out
end

local function copy_dir(from, to)
  assert(os.execute(("cp -r '%s' '%s'"):format(from, to)))
end

local function steps_logged(dir)
  local n = 0
  for _, r in ipairs(recipe.read_log(dir .. "/log.jsonl")) do
    if r.event == "step" then n = n + 1 end
  end
  return n
end

local function step_losses(dir)
  local out = {}
  for _, r in ipairs(recipe.read_log(dir .. "/log.jsonl")) do
    if r.event == "step" then out[#out + 1] = r.loss end
  end
  return out
end

local function read(path) return recipe.read_file(path) or "" end

-- the uninterrupted SPOS reference run (shared by the tests below)
local ref_dir
local function reference()
  if not ref_dir then
    ref_dir = fresh("spos-ref")
    local out = fresh("spos-ref") .. ".out"
    assert.equal(0, K.wait(K.launch("spos", with(SPOS, "--out", ref_dir), out)), read(out))
  end
  return ref_dir
end

describe("kill and resume", function()
  it("a SPOS run SIGKILLed 4 times (twice mid-checkpoint-write) ends bit-identical", function()
    local rep = K.run { recipe = "spos", kills = 4, seed = 4, root = fresh("kill-spos") }
    assert.is_true(rep.ok, table.concat(rep.diffs, "\n"))
    -- a kill drawn at a random time can land after a short run has already
    -- finished (a heavily loaded machine stretches the other points); that
    -- run is then checked and a new one starts, until all 4 kills landed
    assert.equal(4, rep.kills)
    assert.is_true(rep.cycles >= 1)
    -- seed 4 draws the kill points ckpt, step, ckpt, time: two kills while a
    -- checkpoint is written, each leaving the killed process's half-written
    -- temp file (which the next resume removes)
    assert.is_true(rep.ckpt_kills >= 2, tostring(rep.ckpt_kills))
    assert.is_true(rep.mid_write >= 2)
    -- the run did resume from checkpoints (log markers of the resumes kept)
    assert.is_true(rep.resume_markers >= 1)
    assert.equal(12, steps_logged(rep.dir))
  end)

  it("the comparison catches a duplicated log record and a changed weight", function()
    local ref = reference()
    local a, b = fresh("tamper-log"), fresh("tamper-ckpt")
    copy_dir(ref, a)
    copy_dir(ref, b)
    assert.is_true((K.compare(ref, a)))
    -- a step logged twice (what a resume without cutting the log back does)
    local lines = {}
    for line in io.lines(a .. "/log.jsonl") do lines[#lines + 1] = line end
    table.insert(lines, 3, lines[2])
    recipe.write_file(a .. "/log.jsonl", table.concat(lines, "\n") .. "\n")
    local ok, diffs = K.compare(ref, a)
    assert.is_false(ok)
    assert.truthy(diffs[1]:find("log.jsonl", 1, true))
    -- one weight one ulp away
    local ck = assert(nasrt.load(b .. "/checkpoint.nrck"))
    local name, w
    for k, t in pairs(ck.model) do
      if t:numel() > 1 and (not name or k < name) then name, w = k, t end
    end
    local flat = w:reshape { -1 }
    local v = flat:get(1)
    flat:set(1, v + math.max(math.abs(v), 1e-30) * 2 ^ -20)
    assert(nasrt.save(b .. "/checkpoint.nrck", ck))
    ok, diffs = K.compare(ref, b)
    assert.is_false(ok)
    assert.truthy(table.concat(diffs, "\n"):find("final checkpoint differs: checkpoint.model", 1, true))
  end)

  it("#slow darts, agnas, spos, attentivenas and train survive 20 SIGKILLs each", function()
    for _, name in ipairs(K.ALL) do
      local rep = K.run { recipe = name, kills = 20, seed = 11, root = fresh("kill20-" .. name) }
      print(K.summary(rep))
      assert.is_true(rep.ok, name .. ":\n" .. table.concat(rep.diffs, "\n"))
      assert.equal(20, rep.kills)
      assert.is_true(rep.mid_write >= 1, name .. ": no kill landed in a checkpoint write")
    end
  end)
end)

describe("a crash right after a checkpoint", function()
  -- every checkpoint of a train.lua run (3 epochs of 3 steps: 9 step
  -- checkpoints and 3 at the epoch ends), and the epoch-end ones of agnas;
  -- the resumed run must equal the uninterrupted one bit for bit
  local function check(name, pick)
    local R = dofile(("recipes/%s.lua"):format(name))
    local cfg = assert(recipe.parse(R, K.CONFIGS[name]))
    local ref = fresh(name .. "-crash-ref")
    cfg.out = ref
    -- the uninterrupted run picks the checkpoints to crash after
    local picked = {}
    local total = K.crash_after(R, cfg, function(st, n)
      if pick(st) then picked[#picked + 1] = n end
      return false
    end)
    for _, k in ipairs(picked) do
      local dir = fresh(name .. "-crash")
      cfg.out = dir
      assert.equal(k, K.crash_after(R, cfg, function(_, n) return n == k end))
      recipe.run(R, { resume = dir })
      local ok, diffs = K.compare(ref, dir)
      assert.is_true(ok, ("%s, crash after checkpoint %d:\n%s"):format(name, k, table.concat(diffs, "\n")))
    end
    return #picked, total
  end

  it("train.lua, after each of its 12 checkpoints", function()
    local tried, total = check("train", function() return true end)
    assert.equal(12, total)
    assert.equal(12, tried)
  end)

  it("agnas, after each epoch-end checkpoint of the search", function()
    -- the epoch-end checkpoint: its loader still at the end of the last epoch
    local tried = check("agnas", function(st)
      return st.phase == "search" and st.loader ~= nil and st.loader.epoch ~= st.epoch
    end)
    assert.equal(2, tried)
  end)

  it("agnas, after its searched and done checkpoints (the done record is logged before the last)", function()
    -- a crash right after the final checkpoint used to leave a run that
    -- resumed as complete without its "done" log record (killtest, agnas)
    local tried = check("agnas", function(st) return st.phase ~= "search" end)
    assert.equal(2, tried)
  end)
end)

describe("damaged checkpoints", function()
  local RUN = dofile("recipes/spos.lua")
  local CFG = { input_size = 8, batch_size = 8, train_limit = 64, val_limit = 32,
    calib_batches = 2, calib_batch_size = 8, val_batch_size = 16, stem = 4, widths = "8,16",
    repeats = "1,1", last = 16, steps = 6, evo_epochs = 1, population = 4, select = 2,
    mutation = 2, crossover = 2, ckpt_every = 1, seed = 1, quiet = true }
  local function cfg(extra)
    local c = {}
    for k, v in pairs(CFG) do c[k] = v end
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
  end

  local full
  local function uninterrupted()
    if not full then
      full = fresh("dmg-full")
      recipe.run(RUN, cfg { out = full })
    end
    return full
  end
  local function same_as_uninterrupted(dir)
    local ok, diffs = K.compare(uninterrupted(), dir)
    assert.is_true(ok, table.concat(diffs, "\n"))
  end

  -- a run stopped after 4 steps: checkpoint.nrck (step 4), .prev (step 3)
  local function stopped()
    local dir = fresh("dmg")
    assert.is_true(recipe.run(RUN, cfg { out = dir, stop_after_steps = 4 }).interrupted)
    assert.is_true(recipe.exists(dir .. "/checkpoint.prev.nrck"))
    return dir
  end

  it("a corrupt checkpoint.nrck: resume falls back to checkpoint.prev.nrck, same result", function()
    local dir = stopped()
    local prev = assert(nasrt.load(dir .. "/checkpoint.prev.nrck"))
    assert.equal(3, prev.state.step)
    -- flip one byte in the middle: the CRC no longer matches
    local ck = dir .. "/checkpoint.nrck"
    local bytes = read(ck)
    local i = #bytes // 2
    local flipped = bytes:sub(1, i - 1) .. string.char(bytes:byte(i) ~ 0x5a) .. bytes:sub(i + 1)
    recipe.write_file(ck, flipped)
    local st, err = nasrt.load(ck)
    assert.is_nil(st)
    assert.truthy(err:find(ck, 1, true))
    assert.truthy(err:find("checksum mismatch", 1, true))
    -- (stop_after_steps=0: the test hook would stop again at step 4)
    recipe.run(RUN, { resume = dir, stop_after_steps = 0 })
    -- the corrupt file was moved aside, the run redid step 4 from step 3
    assert.equal(flipped, read(dir .. "/checkpoint.bad.nrck"))
    same_as_uninterrupted(dir)
    assert.equal(6, steps_logged(dir))
  end)

  it("a truncated checkpoint with no previous one: resume refuses, naming the file", function()
    local dir = stopped()
    os.remove(dir .. "/checkpoint.prev.nrck")
    local ck = dir .. "/checkpoint.nrck"
    local bytes = read(ck)
    recipe.write_file(ck, bytes:sub(1, #bytes // 3))
    local ok, err = pcall(recipe.run, RUN, { resume = dir })
    assert.is_false(ok)
    assert.truthy(err:find("resume: no usable checkpoint in " .. dir, 1, true), err)
    assert.truthy(err:find(ck .. ": truncated", 1, true), err)
  end)

  it("both checkpoints bad: the error names both files", function()
    local dir = stopped()
    recipe.write_file(dir .. "/checkpoint.nrck", "NRCKjunk")
    local p = dir .. "/checkpoint.prev.nrck"
    recipe.write_file(p, read(p):sub(1, 100))
    local ok, err = pcall(recipe.run, RUN, { resume = dir })
    assert.is_false(ok)
    assert.truthy(err:find(dir .. "/checkpoint.nrck", 1, true), err)
    assert.truthy(err:find(p, 1, true), err)
  end)

  it("a checkpoint write killed half-way leaves a temp file nobody loads; resume removes it", function()
    local dir = stopped()
    local before = read(dir .. "/checkpoint.nrck")
    local out = dir .. ".out"
    -- the resumed run's first checkpoint write stops for 20 s half-written
    local h = K.launch("spos", { "--resume", dir }, out, { NASRT_CKPT_PAUSE_MS = "20000" })
    local tmp
    for _ = 1, 6000 do
      for f in lfs.dir(dir) do
        if f:match("^checkpoint%.nrck%.tmp%.%d+$") then tmp = dir .. "/" .. f end
      end
      if tmp or not K.alive(h.pid) then break end
      os.execute("sleep 0.01")
    end
    assert.truthy(tmp, "no checkpoint write started: " .. read(out))
    K.signal(h, "KILL")
    assert.equal(137, K.wait(h))
    local st, err = nasrt.load(tmp)
    assert.is_nil(st)
    assert.truthy(err:find("half-written", 1, true), err)
    assert.equal(before, read(dir .. "/checkpoint.nrck"))   -- the good one untouched
    recipe.run(RUN, { resume = dir, stop_after_steps = 0 })
    assert.is_false(recipe.exists(tmp))
    same_as_uninterrupted(dir)
  end)
end)

describe("Ctrl-C", function()
  it("the first SIGINT writes a checkpoint and exits 130; the run resumes bit-identically", function()
    local ref = reference()
    local dir, out = fresh("sigint"), fresh("sigint") .. ".out"
    local h = K.launch("spos", with(SPOS, "--out", dir), out)
    for _ = 1, 6000 do
      if steps_logged(dir) >= 3 or not K.alive(h.pid) then break end
      os.execute("sleep 0.01")
    end
    K.signal(h, "INT")
    assert.equal(130, K.wait(h), read(out))
    assert.truthy(read(out):find("spos: interrupted; checkpoint kept in " .. dir, 1, true), read(out))
    local ck = assert(nasrt.load(dir .. "/checkpoint.nrck"))
    local at = ck.state.step
    assert.is_true(at >= 3 and at < 12, "stopped at step " .. tostring(at))
    assert.equal(at, ck._run.step)
    assert.equal(at, steps_logged(dir))
    assert.equal(0, K.wait(K.launch("spos", { "--resume", dir }, out)), read(out))
    local ok, diffs = K.compare(ref, dir)
    assert.is_true(ok, table.concat(diffs, "\n"))
  end)

  it("a second SIGINT exits at once, even in the middle of a checkpoint write", function()
    local ref = reference()
    local dir, out = fresh("sigint2"), fresh("sigint2") .. ".out"
    -- 3 steps with checkpoints, then a resume whose checkpoint writes hang 20 s
    assert.equal(130, K.wait(K.launch("spos", with(SPOS, "--out", dir, "--stop_after_steps=3"),
      out)), read(out))
    local good = read(dir .. "/checkpoint.nrck")
    local h = K.launch("spos", { "--resume", dir }, out, { NASRT_CKPT_PAUSE_MS = "20000" })
    local tmp
    for _ = 1, 6000 do
      for f in lfs.dir(dir) do
        if f:match("^checkpoint%.nrck%.tmp%.%d+$") then tmp = f end
      end
      if tmp or not K.alive(h.pid) then break end
      os.execute("sleep 0.01")
    end
    assert.truthy(tmp, read(out))
    K.signal(h, "INT")
    os.execute("sleep 0.2")
    assert.is_true(K.alive(h.pid))           -- the first one only asks to stop
    local t0 = nasrt.clock()
    K.signal(h, "INT")
    assert.equal(130, K.wait(h))
    assert.is_true(nasrt.clock() - t0 < 10, "the second SIGINT did not exit at once")
    assert.equal(good, read(dir .. "/checkpoint.nrck"))
    assert.equal(0, K.wait(K.launch("spos", { "--resume", dir }, out)), read(out))
    local ok, diffs = K.compare(ref, dir)
    assert.is_true(ok, table.concat(diffs, "\n"))
  end)
end)

describe("resume with new option values", function()
  local RUN = dofile("recipes/spos.lua")
  local CFG = { input_size = 8, batch_size = 8, train_limit = 64, val_limit = 32,
    calib_batches = 2, calib_batch_size = 8, val_batch_size = 16, stem = 4, widths = "8,16",
    repeats = "1,1", last = 16, steps = 4, evo_epochs = 1, population = 4, select = 2,
    mutation = 2, crossover = 2, ckpt_every = 1, seed = 1, quiet = true }
  local function cfg(extra)
    local c = {}
    for k, v in pairs(CFG) do c[k] = v end
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
  end

  it("parse reports which options were given", function()
    local c, why, given = recipe.parse(RUN, { "--steps=9", "--no-quiet", "--resume", "x" })
    assert.is_nil(why)
    assert.same({ steps = true, quiet = true }, given)
    assert.equal(9, c.steps)
    assert.equal("x", c.resume)
  end)

  it("an explicit --steps on resume overrides the saved config, and sticks", function()
    local dir = fresh("override")
    assert.is_true(recipe.run(RUN, cfg { out = dir, stop_after_steps = 2 }).interrupted)
    local res = recipe.run(RUN, { resume = dir, steps = 6 })
    assert.is_nil(res.interrupted)
    assert.equal(6, steps_logged(dir))
    local saved = recipe.decode(read(dir .. "/config.json"))
    assert.equal(6, saved.steps)
    assert.equal(1, saved.seed)
    -- the steps done before the override are the 4-step run's, the rest
    -- follow the 6-step schedule: 3 and 4 differ from the 4-step run's
    local four = fresh("override-ref")
    recipe.run(RUN, cfg { out = four })
    local a, b = step_losses(four), step_losses(dir)
    assert.equal(a[1], b[1])
    assert.equal(a[2], b[2])
    assert.are_not.equal(a[4], b[4])
  end)

  it("options that fix the data or the model cannot change on resume", function()
    local dir = fresh("fixed")
    assert.is_true(recipe.run(RUN, cfg { out = dir, stop_after_steps = 2 }).interrupted)
    for k, v in pairs { seed = 9, widths = "8,32", batch_size = 16, train_limit = 32 } do
      local ok, err = pcall(recipe.run, RUN, { resume = dir, [k] = v })
      assert.is_false(ok)
      assert.truthy(err:find(("resume: --%s=%s differs from the run's "):format(k, v), 1, true), err)
    end
    -- the same value is no change
    recipe.run(RUN, { resume = dir, seed = 1 })
    assert.equal(4, steps_logged(dir))
  end)

  it("the command line prints a note for each override", function()
    local dir, out = fresh("override-cli"), fresh("override-cli") .. ".out"
    local args = with(SPOS, "--out", dir, "--stop_after_steps=2")
    assert.equal(130, K.wait(K.launch("spos", args, out)), read(out))
    assert.equal(0, K.wait(K.launch("spos", { "--resume", dir, "--steps=3", "--no-quiet" }, out)),
      read(out))
    assert.truthy(read(out):find("spos: resume: --steps=3 overrides the saved 12", 1, true), read(out))
    assert.equal(2, K.wait(K.launch("spos", { "--resume", dir, "--stem=8" }, out)))
    assert.truthy(read(out):find("spos: resume: --stem=8 differs from the run's 4", 1, true), read(out))
  end)
end)
