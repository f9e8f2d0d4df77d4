--[[
bench/compare_ops.lua -- conv2d micro-benchmark, nasrt vs PyTorch side by side.

Runs bench/ops.lua (through build/nasrt) and bench/torch_ops.py (through
/usr/bin/python3) at the same thread count and prints one table: per shape
the median forward and forward+backward times of both, the ratios
nasrt/torch (> 1 means nasrt is slower) and both forward+backward GFLOP/s,
then the geometric-mean ratio per op family.  To keep a busy machine's drift
out of the ratios the two are run alternately, one op family at a time, each
twice (--rounds), keeping each shape's lowest median.

Usage (plain Lua 5.4, from anywhere):
  lua5.4 bench/compare_ops.lua [--threads N] [--scaling] [--reps R]
         [--budget S] [--filter a,b] [--nasrt PATH] [--python PATH]
  --threads N   thread count for both (default 2)
  --scaling     also run both at 1 thread and print 1-thread vs N-thread
  --reps, --budget, --filter   passed to both benchmarks
  --rounds K    run each side K times (default 2, alternating nasrt, torch,
                nasrt, torch per op family) and keep each shape's lowest
                median: a process's timings of the small shapes can sit ~1.5x
                apart from the next process's (thread placement, page luck)
  --nasrt PATH  the nasrt host (default <repo>/build/nasrt)
  --python PATH the interpreter with torch (default /usr/bin/python3)
  --torch_default_malloc  run torch_ops.py with --default_malloc (by default
                it keeps freed buffers in the process, like nasrt's allocator,
                so its times measure the conv rather than page faults)
  --max_interference C, --retries R
                both peers' thread pools spin and barrier, so other busy
                processes on the 2 cores distort their times badly (PyTorch's
                OpenMP most of all).  Each run measures the CPU other
                processes used meanwhile (/proc/stat minus our children, in
                cores); above C (default 0.15) it is repeated, at most R
                (default 2) times, and the quietest attempt kept.  Before
                each run it waits for the cores to be quiet (1 s samples).
  --wait S      give up waiting for quiet cores after S seconds in all (120)
  --deadline S  no more retries or extra rounds once the comparison has run
                S seconds (180)
The last line sums up in `name value` pairs:
  compare_ops threads 2 shapes 43 geomean_fwd_ratio 0.62 geomean_fwdbwd_ratio 0.36 slower_fwdbwd 10 wall_s 90 waited_s 0 max_interference 0.03
]]

local function dirname(p) return (p:match("^(.*)/[^/]*$")) or "." end
local here = dirname(arg and arg[0] or "bench/compare_ops.lua")
local root = here .. "/.."

local opt = { threads = 2, scaling = false, reps = nil, budget = nil, filter = nil,
              retries = 2, max_interference = 0.15, wait = 120, deadline = 180, rounds = 2,
              nasrt = root .. "/build/nasrt", python = "/usr/bin/python3" }
do
  local a, i = arg or {}, 1
  local function usage(msg)
    io.stderr:write("compare_ops.lua: ", msg, "\nusage: lua5.4 bench/compare_ops.lua [--threads N] "
      .. "[--scaling] [--reps R] [--budget S] [--filter a,b] [--nasrt PATH] [--python PATH]\n")
    os.exit(2)
  end
  while i <= #a do
    local k, v = a[i]:match("^%-%-([%w_]+)=(.*)$")
    k = k or a[i]:match("^%-%-([%w_]+)$")
    if not k then usage("unexpected argument '" .. a[i] .. "'") end
    if k == "help" then
      io.write("usage: lua5.4 bench/compare_ops.lua [--threads N] [--scaling] [--reps R] [--budget S]\n"
        .. "       [--filter a,b] [--nasrt PATH] [--python PATH] [--max_interference C] [--retries R]\n"
        .. "       [--wait S] [--deadline S] [--rounds K] [--torch_default_malloc]\n"
        .. "       (see the file's header)\n")
      os.exit(0)
    end
    if k == "scaling" or k == "torch_default_malloc" then
      opt[k] = true
    elseif opt[k] ~= nil or k == "reps" or k == "budget" or k == "filter" then
      if not v then i = i + 1; v = a[i] end
      if not v then usage("--" .. k .. " needs a value") end
      if k == "threads" or k == "retries" or k == "max_interference" or k == "wait" or k == "deadline"
          or k == "rounds" then
        v = tonumber(v)
        if k == "threads" or k == "retries" or k == "rounds" then v = math.tointeger(v) end
        if not v or v < 0 or ((k == "threads" or k == "rounds") and v < 1) then usage("bad --" .. k) end
      end
      opt[k] = v
    else
      usage("unknown option --" .. k)
    end
    i = i + 1
  end
end

local function sh(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs one benchmark, returns {name -> row} and the list of names in order.
local function run(which, threads, filter)
  local cmd
  local flags = " --threads " .. threads
  if opt.reps then flags = flags .. " --reps " .. sh(opt.reps) end
  if opt.budget then flags = flags .. " --budget " .. sh(opt.budget) end
  if filter then flags = flags .. " --filter " .. sh(filter) end
  if which == "nasrt" then
    cmd = sh(opt.nasrt) .. " " .. sh(here .. "/ops.lua") .. flags
  else
    cmd = sh(opt.python) .. " " .. sh(here .. "/torch_ops.py") .. flags
    if opt.torch_default_malloc then cmd = cmd .. " --default_malloc" end
  end
  local f = assert(io.popen(cmd .. " 2>&1"))
  local rows, order = {}, {}
  for line in f:lines() do
    local name, rest = line:match("^op%s+(%S+)%s+(.*)$")
    if name then
      local r = { name = name }
      if rest:match("^error%s") then
        r.error = rest:match("^error%s+(.*)$")
      else
        for k, v in rest:gmatch("(%S+)%s+(%S+)") do r[k] = tonumber(v) or v end
      end
      rows[name] = r; order[#order + 1] = name
    elseif not line:match("^#") and line:match("%S") then
      io.stderr:write("[", which, "] ", line, "\n")
    end
  end
  local ok, how, code = f:close()
  if not ok then io.stderr:write(("[%s] exited with %s %s\n"):format(which, how, code)) end
  return rows, order
end

-- Op families, run alternately (nasrt, torch, nasrt, ...).  Every shape name
-- starts with one of these.
local families = { "conv1x1", "conv3x3", "dw3x3", "dw5x5", "dil3x3", "dil5x5" }

-- Interference: CPU time other processes used during a run, in cores
-- (system busy jiffies from /proc/stat minus what our children used, from
-- /proc/self/stat, over the wall time from /proc/uptime).  A run with more
-- than --max_interference cores of it is repeated (up to --retries times) and
-- the quietest attempt kept.
local HZ = 100
do
  local f = io.popen("getconf CLK_TCK 2>/dev/null")
  if f then HZ = tonumber(f:read("l") or "") or 100; f:close() end
end
local function read1(path)
  local f = io.open(path)
  if not f then return nil end
  local l = f:read("l"); f:close()
  return l
end
local function sys_busy()
  local l = read1("/proc/stat")
  if not l then return nil end
  local v = {}
  for x in l:gmatch("%d+") do v[#v + 1] = tonumber(x) end
  -- user nice system idle iowait irq softirq steal
  return v[1] + v[2] + v[3] + v[6] + v[7] + (v[8] or 0)
end
local function own_cpu()
  local l = read1("/proc/self/stat")
  if not l then return nil end
  local v = {}
  for x in l:match("%)%s+(.*)$"):gmatch("%S+") do v[#v + 1] = x end
  -- fields 14..17 of stat (utime stime cutime cstime) are 12..15 after ")"
  return tonumber(v[12]) + tonumber(v[13]) + tonumber(v[14]) + tonumber(v[15])
end
local function uptime() local l = read1("/proc/uptime"); return l and tonumber(l:match("^(%S+)")) end

-- Waits (at most opt.wait seconds over the whole comparison) until other
-- processes leave the cores alone: less than max_interference cores over 1 s.
local waited = 0
local function sleep(s) os.execute("sleep " .. s) end
local function wait_quiet()
  while waited < opt.wait do
    local b0, w0 = sys_busy(), uptime()
    sleep(1)
    local b1, w1 = sys_busy(), uptime()
    if not (b0 and b1 and w0 and w1) or w1 <= w0 then return end
    if (b1 - b0) / HZ / (w1 - w0) <= opt.max_interference then return end
    waited = waited + (w1 - w0)
  end
end

local max_intf_seen = 0
local t_first = uptime() or 0
local function run_quiet(which, threads, filter)
  local best
  for attempt = 1, opt.retries + 1 do
    wait_quiet()
    local b0, c0, w0 = sys_busy(), own_cpu(), uptime()
    local rows, order = run(which, threads, filter)
    local b1, c1, w1 = sys_busy(), own_cpu(), uptime()
    local intf = 0
    if b0 and c0 and w0 and b1 and c1 and w1 and w1 > w0 then
      intf = math.max(0, ((b1 - b0) - (c1 - c0)) / HZ / (w1 - w0))
    end
    if not best or intf < best.intf then best = { rows = rows, order = order, intf = intf } end
    if intf <= opt.max_interference then break end
    if (uptime() or 0) - t_first > opt.deadline then break end -- no time left for retries
    if attempt <= opt.retries then
      io.stderr:write(("# %s %s (%d threads): other processes used %.2f cores, running it again\n")
        :format(which, filter ~= "" and filter or "all", threads, intf))
    end
  end
  if best.intf > max_intf_seen then max_intf_seen = best.intf end
  return best.rows, best.order, best.intf
end

-- Keeps, per shape, the lower median of two runs (fwd and fwd+bwd apart).
local function merge(into, rows)
  for k, r in pairs(rows) do
    local o = into[k]
    if not o or o.error then
      into[k] = r
    elseif not r.error then
      if r.fwd_ms < o.fwd_ms then o.fwd_ms = r.fwd_ms end
      if r.fwdbwd_ms < o.fwdbwd_ms then o.fwdbwd_ms = r.fwdbwd_ms end
      o.gflops = 3 * o.gflop / (o.fwdbwd_ms * 1e-3)
    end
  end
end

local function run_both(threads)
  local N, T, order, intf = {}, {}, {}, {}
  local seen = {}
  local fams = opt.filter and { "" } or families
  for _, fam in ipairs(fams) do
    local filt = opt.filter or fam
    local ni, ti = 0, 0
    for round = 1, opt.rounds do
      if round > 1 and (uptime() or 0) - t_first > opt.deadline then break end
      local n, o, i1 = run_quiet("nasrt", threads, filt)
      local t, o2, i2 = run_quiet("torch", threads, filt)
      merge(N, n); merge(T, t)
      ni, ti = math.max(ni, i1), math.max(ti, i2)
      for _, list in ipairs { o, o2 } do
        for _, name in ipairs(list) do
          if not seen[name] then seen[name] = true; order[#order + 1] = name end
        end
      end
    end
    for _, name in ipairs(order) do intf[name] = intf[name] or { ni, ti } end
  end
  return N, T, order, intf
end

local function fmt(v, f) if type(v) ~= "number" then return "-" end return (f or "%.2f"):format(v) end
local function ratio(a, b)
  if type(a) == "number" and type(b) == "number" and b > 0 then return a / b end
end

local t_start = os.time()
local N, T, order, INTF = run_both(opt.threads)

print(("conv2d batch 64, %d threads; times are medians in ms; ratio = nasrt/torch (>1: nasrt slower); "
  .. "GF/s = forward+backward GFLOP/s"):format(opt.threads))
local hdr = ("%-20s %9s %9s %6s   %9s %9s %6s   %8s %8s"):format("shape", "nasrt_fwd", "torch_fwd",
  "ratio", "nasrt_fb", "torch_fb", "ratio", "nasrt_GF", "torch_GF")
print(hdr)
print(("-"):rep(#hdr))
local fam_log = {}
local all_f, all_fb, nslow, nshapes = { 0, 0 }, { 0, 0 }, 0, 0
for _, name in ipairs(order) do
  local n, t = N[name] or {}, T[name] or {}
  local rf, rfb = ratio(n.fwd_ms, t.fwd_ms), ratio(n.fwdbwd_ms, t.fwdbwd_ms)
  local line = ("%-20s %9s %9s %6s   %9s %9s %6s   %8s %8s"):format(name,
    fmt(n.fwd_ms), fmt(t.fwd_ms), fmt(rf), fmt(n.fwdbwd_ms), fmt(t.fwdbwd_ms), fmt(rfb),
    fmt(n.gflops, "%.1f"), fmt(t.gflops, "%.1f"))
  if n.error then line = line .. "   nasrt error: " .. n.error end
  if t.error then line = line .. "   torch error: " .. t.error end
  if rfb and rfb > 1 then line = line .. "  <" end
  print(line)
  if rf and rfb then
    nshapes = nshapes + 1
    if rfb > 1 then nslow = nslow + 1 end
    local fam = name:match("^(%a+%dx%d)")
    local fl = fam_log[fam] or { 0, 0, 0 }
    fl[1], fl[2], fl[3] = fl[1] + math.log(rf), fl[2] + math.log(rfb), fl[3] + 1
    fl.intf = fl.intf or INTF[name]
    fam_log[fam] = fl
    all_f[1], all_f[2] = all_f[1] + math.log(rf), all_f[2] + 1
    all_fb[1], all_fb[2] = all_fb[1] + math.log(rfb), all_fb[2] + 1
  end
end
print(("-"):rep(#hdr))
print("geometric-mean ratio nasrt/torch per family:")
for _, fam in ipairs(families) do
  local fl = fam_log[fam]
  if fl then
    print(("  %-10s fwd %6.2f   fwd+bwd %6.2f   (%d shapes; other processes busy: %.2f cores "
      .. "during nasrt, %.2f during torch)"):format(fam, math.exp(fl[1] / fl[3]),
      math.exp(fl[2] / fl[3]), fl[3], fl.intf and fl.intf[1] or -1, fl.intf and fl.intf[2] or -1))
  end
end

if opt.scaling then
  local N1, T1, _, INTF1 = run_both(1)
  print()
  print(("thread scaling, forward+backward median ms at 1 and %d threads (speedup = 1t/%dt)")
    :format(opt.threads, opt.threads))
  local h2 = ("%-20s %9s %9s %7s   %9s %9s %7s"):format("shape", "nasrt_1t", "nasrt_" .. opt.threads .. "t",
    "speedup", "torch_1t", "torch_" .. opt.threads .. "t", "speedup")
  print(h2)
  print(("-"):rep(#h2))
  for _, name in ipairs(order) do
    local n1, n2, t1, t2 = N1[name] or {}, N[name] or {}, T1[name] or {}, T[name] or {}
    print(("%-20s %9s %9s %7s   %9s %9s %7s"):format(name, fmt(n1.fwdbwd_ms), fmt(n2.fwdbwd_ms),
      fmt(ratio(n1.fwdbwd_ms, n2.fwdbwd_ms)), fmt(t1.fwdbwd_ms), fmt(t2.fwdbwd_ms),
      fmt(ratio(t1.fwdbwd_ms, t2.fwdbwd_ms))))
  end
end

local gf = all_f[2] > 0 and math.exp(all_f[1] / all_f[2]) or 0
local gfb = all_fb[2] > 0 and math.exp(all_fb[1] / all_fb[2]) or 0
if max_intf_seen > opt.max_interference then
  print(("warning: other processes kept up to %.2f cores busy during some runs (see the family lines); "
    .. "those ratios are distorted"):format(max_intf_seen))
end
print(("compare_ops threads %d shapes %d geomean_fwd_ratio %.3f geomean_fwdbwd_ratio %.3f slower_fwdbwd %d "
  .. "wall_s %d waited_s %d max_interference %.2f")
  :format(opt.threads, nshapes, gf, gfb, nslow, os.time() - t_start, math.floor(waited), max_intf_seen))
