--- scripts/killtest.lua: the kill-and-resume harness.
--
-- Runs a recipe on a tiny configuration as a child process, kills it with
-- SIGKILL again and again at seeded random points, resumes it each time
-- with `--resume RUNDIR`, lets the last resume finish, and checks that the
-- run directory is bit-identical to an uninterrupted run with the same
-- seed: arch.json (and every other result file), the log records (no step
-- lost or logged twice; `resume` markers and wall-clock fields aside) and
-- every tensor and number of the final checkpoint (weights, optimizer
-- state, alphas, sampler and RNG state, loader positions).
--
-- Kill points, drawn from a seeded generator, come in three kinds:
--   ckpt   while a checkpoint is being written: the child runs with
--          NASRT_CKPT_PAUSE_MS (the writer stops with a half-written temp
--          file on disk) and is killed once that temp file exists;
--   step   a random 0-60 ms after the log has grown (in the middle of a
--          step, an evaluation, a write of arch.json ...);
--   time   a random 0-1.5 s after the launch (start-up, data loading ...).
-- After every kill the harness also checks that checkpoint.nrck, when
-- present, loads (CRC verified): a kill never leaves a bad one behind.
--
--   nasrt scripts/killtest.lua                       # darts, 20 kills
--   nasrt scripts/killtest.lua --recipe spos --kills 5 --seed 3
--   nasrt scripts/killtest.lua --recipe all          # darts agnas spos attentivenas train
--
-- Specs load it with dofile (it returns its table when not run as a
-- script): spec/kill_resume_spec.lua.
local nasrt = require "nasrt"
local recipe = require "nasrt.recipe"
local lfs = require "lfs"

local K = {}

--- Tiny configurations (8x8 inputs, a few steps, a checkpoint every step).
K.CONFIGS = {
  darts = { "--C=4", "--layers=2", "--size=8", "--train_limit=32", "--val_limit=16",
    "--batch_size=16", "--epochs=4", "--ckpt_every=1", "--seed=5", "--quiet" },
  agnas = { "--space=micro", "--C=4", "--layers=2", "--input_size=8", "--train_limit=64",
    "--val_limit=32", "--batch_size=16", "--epochs=2", "--checkpoint_every=1", "--dot=false",
    "--seed=3", "--quiet" },
  spos = { "--input_size=8", "--batch_size=8", "--train_limit=64", "--val_limit=32",
    "--calib_batches=2", "--calib_batch_size=8", "--val_batch_size=16", "--stem=4",
    "--widths=8,16", "--repeats=1,1", "--last=16", "--steps=12", "--evo_epochs=2",
    "--population=4", "--select=2", "--mutation=2", "--crossover=2", "--ckpt_every=1",
    "--seed=1", "--quiet" },
  attentivenas = { "--space=tiny", "--input_size=8", "--batch_size=8", "--train_limit=64",
    "--val_limit=32", "--calib_batches=2", "--calib_batch_size=8", "--val_batch_size=16",
    "--steps=10", "--flops_table=200", "--evo_iters=2", "--population=4", "--mutation=2",
    "--crossover=2", "--num_trials=2", "--ckpt_every=1", "--seed=1", "--quiet" },
  train = { "--random=true", "--C=4", "--layers=2", "--input_size=8", "--train_limit=48",
    "--test_limit=64", "--batch_size=16", "--epochs=3", "--checkpoint_every=1", "--seed=2",
    "--quiet" },
}
-- the other recipes (the determinism spec runs every one)
K.CONFIGS.att_darts = K.CONFIGS.darts
K.CONFIGS.gdas = K.CONFIGS.darts
K.CONFIGS.fairnas = { "--input_size=8", "--batch_size=8", "--train_limit=64", "--val_limit=32",
  "--calib_batches=2", "--calib_batch_size=8", "--val_batch_size=16", "--stem=8",
  "--stages=8:1:2,16:1:1", "--head=16", "--steps=3", "--evo_epochs=2", "--population=4",
  "--select=2", "--mutation=2", "--crossover=2", "--ckpt_every=1", "--seed=1", "--quiet" }
K.CONFIGS.random = { "--space=nb201", "--C=2", "--N=1", "--steps=3", "--n=4", "--input_size=8",
  "--batch_size=8", "--train_limit=64", "--val_limit=32", "--calib_batches=2",
  "--calib_batch_size=8", "--val_batch_size=16", "--ckpt_every=1", "--seed=1", "--quiet" }
K.CONFIGS.rea = { "--space=spos", "--stem=4", "--widths=8,16", "--repeats=1,1", "--last=16",
  "--steps=3", "--population=3", "--cycles=6", "--input_size=8", "--batch_size=8",
  "--train_limit=64", "--val_limit=32", "--calib_batches=2", "--calib_batch_size=8",
  "--val_batch_size=16", "--ckpt_every=1", "--seed=1", "--quiet" }

--- The recipes `--recipe all` runs (the issue's list).
K.ALL = { "darts", "agnas", "spos", "attentivenas", "train" }
--- Every recipe.
K.RECIPES = { "agnas", "darts", "att_darts", "gdas", "spos", "fairnas", "attentivenas", "random",
              "rea", "train" }

-- record fields that hold wall-clock time, and log markers of a resume
local VOLATILE = { time_s = true }
local MARKERS = { resume = true, interrupted = true }

local function nasrt_bin()
  return os.getenv("NASRT") or ((os.getenv("NASRT_BUILD_DIR") or "./build") .. "/nasrt")
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sleep(s) os.execute(("sleep %.3f"):format(s)) end

--- True while the process runs (not gone, not a zombie).
function K.alive(pid)
  local f = io.open(("/proc/%d/stat"):format(pid), "r")
  if not f then return false end
  local stat = f:read("a") or ""
  f:close()
  local state = stat:match("%) (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

--- Starts `nasrt --threads 2 recipes/<name>.lua args...` in the background
-- (output appended to `out`) and returns a handle {pid=, pipe=}; the
-- shell around it waits for it and reports its exit status (K.wait).
function K.launch(name, args, out, env)
  local words = { nasrt_bin(), "--threads", "2", ("recipes/%s.lua"):format(name) }
  for _, a in ipairs(args) do words[#words + 1] = a end
  for i, w in ipairs(words) do words[i] = q(w) end
  local prefix = ""
  for k, v in pairs(env or {}) do prefix = prefix .. ("%s=%s "):format(k, q(v)) end
  local inner = ("%s%s >>%s 2>&1 & echo $!; wait $!; echo rc=$?"):format(prefix,
    table.concat(words, " "), q(out))
  local pipe = assert(io.popen("sh -c " .. q(inner) .. " 2>/dev/null", "r"))
  local pid = tonumber(pipe:read("l"))
  assert(pid, "killtest: could not start " .. name)
  return { pid = pid, pipe = pipe }
end

--- Waits for the process to end; returns its exit status (137 = SIGKILL).
function K.wait(h)
  local line = h.pipe:read("l") or ""
  h.pipe:close()
  return tonumber(line:match("rc=(%d+)"))
end

function K.signal(h, sig)
  os.execute(("kill -%s %d 2>/dev/null"):format(sig, h.pid))
end

local function tmp_files(dir)
  local out = {}
  if not recipe.exists(dir) then return out end
  for f in lfs.dir(dir) do
    if f:match("^checkpoint%.nrck%.tmp%.%d+$") then out[#out + 1] = f end
  end
  return out
end

local function file_size(p) return lfs.attributes(p, "size") or 0 end

-- Polls until cond() holds or the process ends (or `limit` seconds pass).
local function wait_for(h, cond, limit)
  local t0 = nasrt.clock()
  while K.alive(h.pid) do
    if cond() then return true end
    if nasrt.clock() - t0 > limit then return false end
    sleep(0.005)
  end
  return false
end

-- ------------------------------------------------------------ comparison

local function strip(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do
    if not VOLATILE[k] then out[k] = strip(x) end
  end
  return out
end

--- The log records that must match between runs, as canonical JSON lines.
function K.log_lines(dir)
  local out = {}
  for _, rec in ipairs(recipe.read_log(dir .. "/log.jsonl")) do
    if not MARKERS[rec.kind or rec.event] then out[#out + 1] = recipe.encode(strip(rec)) end
  end
  return out
end

-- every number and tensor element equal (tensors bit for bit); `skip`
-- names top-level keys that may differ
local function same_values(a, b, path, skip)
  if nasrt.is_tensor(a) or nasrt.is_tensor(b) then
    if not (nasrt.is_tensor(a) and nasrt.is_tensor(b)) then return false, path .. ": not both tensors" end
    local sa, sb = table.concat(a:shape(), ","), table.concat(b:shape(), ",")
    if sa ~= sb then return false, ("%s: shapes [%s] and [%s]"):format(path, sa, sb) end
    local x, y = a:reshape { -1 }:totable(), b:reshape { -1 }:totable()
    for i = 1, #x do
      if x[i] ~= y[i] then
        return false, ("%s[%d]: %.9g ~= %.9g"):format(path, i, x[i], y[i])
      end
    end
    return true
  end
  if type(a) ~= type(b) then return false, ("%s: %s vs %s"):format(path, type(a), type(b)) end
  if type(a) ~= "table" then
    if a ~= b and not (a ~= a and b ~= b) then
      return false, ("%s: %s ~= %s"):format(path, tostring(a), tostring(b))
    end
    return true
  end
  for k, v in pairs(a) do
    if not (skip and skip[k]) then
      local ok, why = same_values(v, b[k], path .. "." .. tostring(k))
      if not ok then return false, why end
    end
  end
  for k in pairs(b) do
    if a[k] == nil and not (skip and skip[k]) then return false, path .. "." .. tostring(k) .. " missing" end
  end
  return true
end
K.same_values = same_values

--- Compares two run directories: every *.json result file but config.json
-- (wall-clock fields aside), the text files, the log records and the final
-- checkpoint.  Returns true, or false and a list of differences.
function K.compare(ref, got)
  local diffs = {}
  local function add(fmt, ...) diffs[#diffs + 1] = fmt:format(...) end
  for f in lfs.dir(ref) do
    if f:match("%.json$") and f ~= "config.json" then
      local a = recipe.read_file(ref .. "/" .. f)
      local b = recipe.read_file(got .. "/" .. f)
      if not b then
        add("%s is missing", f)
      else
        local ok, why = same_values(strip(recipe.decode(a)), strip(recipe.decode(b)), f)
        if not ok then add("%s differs: %s", f, why) end
      end
    elseif f:match("%.txt$") then
      if recipe.read_file(ref .. "/" .. f) ~= recipe.read_file(got .. "/" .. f) then
        add("%s differs", f)
      end
    end
  end
  if not recipe.exists(ref .. "/arch.json") then add("the reference run has no arch.json") end
  local la, lb = K.log_lines(ref), K.log_lines(got)
  if #la ~= #lb then add("log.jsonl: %d records, the reference has %d", #lb, #la) end
  for i = 1, math.min(#la, #lb) do
    if la[i] ~= lb[i] then
      add("log.jsonl record %d differs:\n  ref %s\n  got %s", i, la[i]:gsub("%s+", " "),
        lb[i]:gsub("%s+", " "))
      break
    end
  end
  local ca, ea = nasrt.load(ref .. "/checkpoint.nrck")
  local cb, eb = nasrt.load(got .. "/checkpoint.nrck")
  if not ca or not cb then
    add("final checkpoint: %s", tostring(ea or eb))
  else
    local ok, why = same_values(ca, cb, "checkpoint", { _run = true })
    if not ok then add("final checkpoint differs: %s", why) end
  end
  return #diffs == 0, diffs
end

-- ------------------------------------------------------------ the harness

--- Runs the kill-and-resume test of one recipe.
-- @tparam table o {recipe="darts", kills=20, seed=1, root=<fresh temp dir>,
--   args=K.CONFIGS[recipe], pause_ms=60, say=function(text) (progress)}
-- @treturn table report {ok=, diffs=, kills=, ckpt_kills=, mid_write=,
--   finished_early=, launches=, cycles= (runs checked to the end; a new one
--   starts when a run ends before the kills are landed), resume_markers=,
--   ref_s=, dir=, ref=}
function K.run(o)
  local name = o.recipe or "darts"
  local args = o.args or assert(K.CONFIGS[name], "killtest: no tiny config for " .. name)
  local kills = o.kills or 20
  local rng_state = o.seed or 1
  -- a small seeded generator of our own (math.random's state is global)
  local function rand()
    rng_state = (rng_state * 6364136223846793005 + 1442695040888963407) & 0x7fffffffffffffff
    return (rng_state >> 11) / (1 << 52)
  end
  for _ = 1, 4 do rand() end
  local root = o.root
  if not root then
    root = os.tmpname()
    os.remove(root)
  end
  recipe.mkdirs(root)
  local say = o.say or function() end
  local ref, dir = root .. "/" .. name .. "-ref", root .. "/" .. name .. "-killed"
  local out = root .. "/" .. name .. ".out"
  local rep = { recipe = name, kills = 0, ckpt_kills = 0, step_kills = 0, time_kills = 0,
                mid_write = 0, finished_early = 0, launches = 0, ref = ref, dir = dir,
                failures = {} }

  -- 1. the uninterrupted reference
  local t0 = nasrt.clock()
  local ra = { "--out", ref }
  for _, a in ipairs(args) do ra[#ra + 1] = a end
  local rc = K.wait(K.launch(name, ra, out))
  rep.ref_s = nasrt.clock() - t0
  if rc ~= 0 then
    rep.ok, rep.diffs = false, { ("reference run failed (exit %s), see %s"):format(tostring(rc), out) }
    return rep
  end

  -- 2. the killed run.  A tiny run ends after a few resumes, long before
  -- the wanted number of kills: when one ends, it is checked against the
  -- reference (3, 4) and a new run starts from scratch in a fresh
  -- directory, until the kills are all landed.
  local env = { NASRT_CKPT_PAUSE_MS = tostring(o.pause_ms or 60) }
  local fresh = { "--out", dir }
  for _, a in ipairs(args) do fresh[#fresh + 1] = a end
  rep.cycles, rep.resume_markers = 0, 0
  local diffs = {}

  -- 3. the last resume of a run runs to the end; 4. bit-identical to the
  -- reference
  local function check_cycle()
    rep.cycles = rep.cycles + 1
    local last = recipe.exists(dir .. "/config.json") and { "--resume", dir } or fresh
    local status = K.wait(K.launch(name, last, out))
    rep.launches = rep.launches + 1
    local fails = {}
    if status ~= 0 then
      fails[#fails + 1] = ("the final resume exited with status %s (see %s)"):format(
        tostring(status), out)
    end
    -- the resumes removed the temp files the kills left
    if #tmp_files(dir) > 0 then
      fails[#fails + 1] = "stale temp files left: " .. table.concat(tmp_files(dir), " ")
    end
    local same, d = true, {}
    if #fails == 0 then same, d = K.compare(ref, dir) end
    for i = #fails, 1, -1 do table.insert(d, 1, fails[i]) end
    for _, line in ipairs(d) do diffs[#diffs + 1] = ("run %d: %s"):format(rep.cycles, line) end
    for _, r in ipairs(recipe.read_log(dir .. "/log.jsonl")) do
      if (r.kind or r.event) == "resume" then rep.resume_markers = rep.resume_markers + 1 end
    end
    return same and #fails == 0
  end

  local attempts = 0
  while rep.kills < kills and attempts < 8 * kills and #rep.failures == 0 do
    attempts = attempts + 1
    local started = recipe.exists(dir .. "/config.json")
    local h = K.launch(name, started and { "--resume", dir } or fresh, out, env)
    rep.launches = rep.launches + 1
    local r = rand()
    local kind = r < 0.4 and "ckpt" or (r < 0.7 and "step" or "time")
    local fired
    if kind == "ckpt" then
      -- this process's temp file (not one a killed predecessor left)
      local mine = ("%s/checkpoint.nrck.tmp.%d"):format(dir, h.pid)
      fired = wait_for(h, function() return recipe.exists(mine) end, 30)
    elseif kind == "step" then
      local size0 = file_size(dir .. "/log.jsonl")
      fired = wait_for(h, function() return file_size(dir .. "/log.jsonl") > size0 end, 30)
      if fired then sleep(0.06 * rand()) end
    else
      sleep(1.5 * rand())
      fired = true
    end
    if fired and K.alive(h.pid) then K.signal(h, "KILL") end
    local status = K.wait(h)
    if status == 137 then
      rep.kills = rep.kills + 1
      rep[kind .. "_kills"] = rep[kind .. "_kills"] + 1
      -- the killed process's own temp file: it died writing a checkpoint
      local mid = recipe.exists(("%s/checkpoint.nrck.tmp.%d"):format(dir, h.pid))
      if mid then rep.mid_write = rep.mid_write + 1 end
      -- a kill never leaves an unreadable checkpoint.nrck behind
      local ck = dir .. "/checkpoint.nrck"
      if recipe.exists(ck) then
        local st, err = nasrt.load(ck)
        if not st then rep.failures[#rep.failures + 1] = "after a kill: " .. tostring(err) end
      end
      say(("%s: kill %d/%d (%s)%s"):format(name, rep.kills, kills, kind,
        mid and ", mid-write" or ""))
    elseif status == 0 then
      -- the run ended before its kill: check it, start another
      rep.finished_early = rep.finished_early + 1
      if recipe.exists(dir .. "/config.json") and rep.kills < kills then
        check_cycle()
        os.execute(("rm -rf '%s'"):format(dir))
      end
    else
      rep.failures[#rep.failures + 1] = ("launch %d exited with status %s (see %s)"):format(
        rep.launches, tostring(status), out)
    end
  end
  if rep.kills < kills and #rep.failures == 0 then
    rep.failures[#rep.failures + 1] = ("only %d of %d kills landed in %d launches"):format(
      rep.kills, kills, rep.launches)
  end

  local ok = #rep.failures == 0 and check_cycle()
  for i = #rep.failures, 1, -1 do table.insert(diffs, 1, rep.failures[i]) end
  rep.ok, rep.diffs = ok and #diffs == 0, diffs
  return rep
end

-- ------------------------------------------------------------ in-process crashes

local CRASH = setmetatable({}, { __tostring = function() return "killtest: simulated crash" end })

--- Runs recipe R in this process with cfg (cfg.out set) and "crashes"
-- (raises) right after the checkpoint for which pred(state, n) is true
-- (n counts the checkpoints written), the exact moment a kill is hardest
-- to land.  Returns the number of checkpoints written (all of them when
-- pred never fires).  The run directory is left as a kill would leave it.
function K.crash_after(R, cfg, pred)
  local c = recipe.with_defaults(R, cfg)
  local run = recipe.open_run(R, c, {})
  local save, n = run.save, 0
  run.save = function(self, st)
    save(self, st)
    n = n + 1
    if pred and pred(st, n) then error(CRASH) end
  end
  local ok, err = pcall(R.run, c, run)
  run:close()
  if not ok and not (err == CRASH or tostring(err):find("killtest: simulated crash", 1, true)) then
    error(err, 0)
  end
  return n
end

--- One line summarising a report.
function K.summary(rep)
  return ("%s: %s  %d kills (%d while writing a checkpoint, %d mid-step, %d at a random time; " ..
    "%d left a half-written temp file), %d runs to the end, %d launches, %d finished before " ..
    "their kill, reference %.1f s"):format(rep.recipe, rep.ok and "bit-identical" or "DIFFERS",
    rep.kills, rep.ckpt_kills, rep.step_kills, rep.time_kills, rep.mid_write, rep.cycles or 0,
    rep.launches, rep.finished_early, rep.ref_s or 0)
end

-- ------------------------------------------------------------ script

local function main(argv)
  local o = { recipe = "darts", kills = 20, seed = 1 }
  local i = 1
  while i <= #argv do
    local k, v = argv[i]:match("^%-%-([%w_]+)=(.*)$")
    if not k then
      k = argv[i]:match("^%-%-([%w_]+)$")
      v = argv[i + 1]
      i = i + 1
    end
    if k == "help" or not k then
      print("usage: nasrt scripts/killtest.lua [--recipe NAME|all] [--kills N] [--seed N] [--root DIR]")
      return
    end
    o[k] = (k == "kills" or k == "seed" or k == "pause_ms") and math.tointeger(tonumber(v)) or v
    i = i + 1
  end
  local names = o.recipe == "all" and K.ALL or { o.recipe }
  local all_ok = true
  for _, name in ipairs(names) do
    local rep = K.run { recipe = name, kills = o.kills, seed = o.seed, root = o.root,
                        pause_ms = o.pause_ms, say = print }
    print(K.summary(rep))
    for _, d in ipairs(rep.diffs) do print("  " .. d) end
    all_ok = all_ok and rep.ok
  end
  os.exit(all_ok and 0 or 1)
end

if arg and arg[0] and arg[0]:match("killtest%.lua$") then
  main(arg)
end

return K
