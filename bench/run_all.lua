-- bench/run_all.lua: what `make bench` runs.  Every nasrt search-step
-- workload beside its PyTorch twin (../shared/bench/*.py, run with
-- /usr/bin/python3) at the same thread count, several repetitions
-- interleaved (nasrt, torch, nasrt at 1 thread), and one table of medians:
--   ms/step of each and their ratio, peak RSS of each and their ratio,
--   the GFLOP/s nasrt achieves (6 x forward MACs of convs and linears per
--   step) and its share of the sgemm rate (1024^3 through F.matmul, the
--   median of a sample before each repetition of the row), and the
--   speed-up of N threads over 1.
-- The load average is printed before and after: on a busy machine the
-- absolute times mean little, the ratios of one run somewhat more.
--   ./build/nasrt bench/run_all.lua [--threads 2] [--reps 3] [--steps 2]
--       [--warmup 1] [--only darts,agnas,...] [--quick] [--ops] [--verbose]
-- --quick: 1 repetition of 1 step, no 1-thread runs.
-- --ops: also run bench/compare_ops.lua (per-op conv table) first.
local nasrt = require "nasrt"

local o = { threads = 2, reps = 3, steps = 2, warmup = 1, only = "", quick = false,
            ops = false, verbose = false }
dofile((arg and arg[0] and arg[0]:match("^(.*)/") or "bench") .. "/args.lua").parse(o)
if o.quick then o.reps, o.steps = 1, 1 end

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local nasrt_bin = here .. "/../build/nasrt"
local py = "/usr/bin/python3"
local shared = here .. "/../../shared/bench"

-- name, nasrt command, torch command (nil: no twin), steps scale
local W = {
  { "train_cnn", "train_cnn.lua", here .. "/torch_train_cnn.py", 10 },
  { "darts", "darts_step.lua", shared .. "/torch_darts_step.py", 1 },
  { "darts_frozen", "darts_step.lua --workload darts_frozen", here .. "/torch_darts_frozen.py", 1 },
  { "agnas", "nas_steps.lua --workload agnas", shared .. "/torch_nas_steps.py --workload agnas", 1 },
  { "single_path", "nas_steps.lua --workload single_path",
    shared .. "/torch_nas_steps.py --workload single_path", 3 },
  { "fair", "nas_steps.lua --workload fair", shared .. "/torch_nas_steps.py --workload fair", 1 },
  { "sandwich", "nas_steps.lua --workload sandwich",
    shared .. "/torch_nas_steps.py --workload sandwich", 2 },
}
local only = {}
for name in o.only:gmatch("[%w_]+") do only[name] = true end

local function loadavg()
  local f = io.open("/proc/loadavg")
  local s = f and f:read("l") or "?"
  if f then f:close() end
  return s:match("^(%S+ %S+ %S+)") or s
end

local function exists(path)
  local f = io.open((path:match("^(%S+)")))
  if f then f:close() end
  return f ~= nil
end

-- runs cmd, returns {ms=, rss=, gflop=} from its `<name>_step_ms X ...` line
local function run(cmd)
  if o.verbose then print("$ " .. cmd) end
  local f = io.popen(cmd .. " 2>&1")
  local out = f:read("a")
  f:close()
  if o.verbose then io.write(out) end
  local ms = tonumber(out:match("_step_ms%s+([%d%.]+)"))
  if not ms then
    io.stderr:write(("run_all: no result from %s:\n%s\n"):format(cmd, out))
    return nil
  end
  return { ms = ms, rss = tonumber(out:match("peak_rss_mb%s+([%d%.]+)")),
           gflop = tonumber(out:match("gflop_per_step%s+([%d%.]+)")) }
end

local function median(list, key)
  local v = {}
  for _, r in ipairs(list) do if r[key] then v[#v + 1] = r[key] end end
  if #v == 0 then return nil end
  table.sort(v)
  local m = #v // 2
  return #v % 2 == 1 and v[m + 1] or (v[m] + v[m + 1]) / 2
end

-- sgemm rate through nasrt (OpenBLAS under the thread pool), 1024^3
local function sgemm_rate(threads)
  nasrt.set_num_threads(threads)
  local a, b = nasrt.randn { 1024, 1024 }, nasrt.randn { 1024, 1024 }
  nasrt.F.matmul(a, b)
  local t = {}
  for r = 1, 7 do
    local t0 = nasrt.clock()
    nasrt.F.matmul(a, b)
    t[r] = { s = nasrt.clock() - t0 }
  end
  return 2 * 1024 ^ 3 / median(t, "s") / 1e9
end

print(("nasrt %s bench, %d threads, %d repetitions of %d step(s) (+%d warm-up), medians"):format(
  nasrt.version, o.threads, o.reps, o.steps, o.warmup))
print("load average before: " .. loadavg())
if o.ops then
  os.execute(("lua5.4 %s/compare_ops.lua --threads %d"):format(here, o.threads))
end

local rows = {}
for _, w in ipairs(W) do
  local name, ncmd, tcmd, scale = w[1], w[2], w[3], w[4]
  if next(only) == nil or only[name] then
    local steps = (" --steps %d --warmup %d"):format(o.steps * scale, o.warmup * scale)
    -- the sgemm rate beside the row's runs, a sample before each
    -- repetition and their median: the load drifts during a run, and one
    -- sample can fall in a burst (session 13: 94.5 GFLOP/s between rows
    -- measuring 163-169)
    local res = { n = {}, t = {}, n1 = {}, peak = {} }
    local have_torch = tcmd and exists(tcmd)
    for _ = 1, o.reps do
      res.peak[#res.peak + 1] = { r = sgemm_rate(o.threads) }
      res.n[#res.n + 1] = run(("%s %s/%s --threads %d%s"):format(nasrt_bin, here, ncmd, o.threads, steps))
      if have_torch then
        res.t[#res.t + 1] = run(("%s %s --threads %d%s"):format(py, tcmd, o.threads, steps))
      end
      if not o.quick and o.threads > 1 then
        res.n1[#res.n1 + 1] = run(("%s %s/%s --threads 1%s"):format(nasrt_bin, here, ncmd, steps))
      end
    end
    rows[#rows + 1] = {
      name = name, ms = median(res.n, "ms"), rss = median(res.n, "rss"),
      gflop = median(res.n, "gflop"), tms = median(res.t, "ms"), trss = median(res.t, "rss"),
      ms1 = median(res.n1, "ms"), peak = median(res.peak, "r"),
    }
    io.stderr:write(("  %s done (load %s)\n"):format(name, loadavg()))
  end
end

local function f(fmt, v) return v and fmt:format(v) or "-" end
local function div(a, b) return (a and b and b > 0) and a / b or nil end
print()
print(("%-12s %10s %10s %6s | %7s %7s %6s | %7s %7s %6s | %8s %6s"):format("workload",
  "nasrt ms", "torch ms", "ratio", "RSS MB", "torch", "ratio", "GFLOP/s", "sgemm", "share",
  "1T ms", ("%dT/1T"):format(o.threads)))
for _, r in ipairs(rows) do
  local gfs = r.gflop and r.ms and r.gflop / (r.ms / 1e3)
  print(("%-12s %10s %10s %6s | %7s %7s %6s | %7s %7s %6s | %8s %6s"):format(r.name,
    f("%.1f", r.ms), f("%.1f", r.tms), f("%.3f", div(r.ms, r.tms)),
    f("%.0f", r.rss), f("%.0f", r.trss), f("%.3f", div(r.rss, r.trss)),
    f("%.1f", gfs), f("%.1f", r.peak), f("%.0f%%", gfs and 100 * gfs / r.peak),
    f("%.1f", r.ms1), f("%.2fx", div(r.ms1, r.ms))))
end
print("load average after: " .. loadavg())
