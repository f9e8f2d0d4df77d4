--[[
bench/compare_ops.lua -- conv2d micro-benchmark, nasrt vs PyTorch side by side.

Runs bench/ops.lua (through build/nasrt) and bench/torch_ops.py (through
/usr/bin/python3) at the same thread count and prints one table: per shape
the median forward and forward+backward times of both, the ratios
nasrt/torch (> 1 means nasrt is slower) and both forward+backward GFLOP/s,
then the geometric-mean ratio per op family.  To keep a busy machine's drift
out of the ratios the two are run alternately, one op family at a time.

Usage (plain Lua 5.4, from anywhere):
  lua5.4 bench/compare_ops.lua [--threads N] [--scaling] [--reps R]
         [--budget S] [--filter a,b] [--nasrt PATH] [--python PATH]
  --threads N   thread count for both (default 2)
  --scaling     also run both at 1 thread and print 1-thread vs N-thread
  --reps, --budget, --filter   passed to both benchmarks
  --nasrt PATH  the nasrt host (default <repo>/build/nasrt)
  --python PATH the interpreter with torch (default /usr/bin/python3)
The last line sums up in `name value` pairs:
  compare_ops threads 2 shapes 43 geomean_fwd_ratio 1.23 geomean_fwdbwd_ratio 0.98 slower_fwdbwd 12
]]

local function dirname(p) return (p:match("^(.*)/[^/]*$")) or "." end
local here = dirname(arg and arg[0] or "bench/compare_ops.lua")
local root = here .. "/.."

local opt = { threads = 2, scaling = false, reps = nil, budget = nil, filter = nil,
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
        .. "       [--filter a,b] [--nasrt PATH] [--python PATH]   (see the file's header)\n")
      os.exit(0)
    end
    if k == "scaling" then
      opt.scaling = true
    elseif opt[k] ~= nil or k == "reps" or k == "budget" or k == "filter" then
      if not v then i = i + 1; v = a[i] end
      if not v then usage("--" .. k .. " needs a value") end
      opt[k] = (k == "threads") and math.tointeger(tonumber(v)) or v
      if k == "threads" and (not opt.threads or opt.threads < 1) then usage("bad --threads") end
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

local function run_both(threads)
  local N, T, order = {}, {}, {}
  local seen = {}
  local fams = opt.filter and { "" } or families
  for _, fam in ipairs(fams) do
    local filt = opt.filter or fam
    local n, o = run("nasrt", threads, filt)
    local t, o2 = run("torch", threads, filt)
    for k, v in pairs(n) do N[k] = v end
    for k, v in pairs(t) do T[k] = v end
    for _, list in ipairs { o, o2 } do
      for _, name in ipairs(list) do
        if not seen[name] then seen[name] = true; order[#order + 1] = name end
      end
    end
  end
  return N, T, order
end

local function fmt(v, f) if type(v) ~= "number" then return "-" end return (f or "%.2f"):format(v) end
local function ratio(a, b)
  if type(a) == "number" and type(b) == "number" and b > 0 then return a / b end
end

-- Both peers spin-wait in their thread pools, so other busy processes on the
-- 2 cores distort the figures badly (PyTorch's OpenMP barriers most of all):
-- say so next to the table.
local function loadavg()
  local f = io.open("/proc/loadavg")
  if not f then return nil end
  local l = tonumber(f:read("l"):match("^(%S+)")); f:close()
  return l
end
local load0 = loadavg()
if load0 and load0 > 0.5 then
  io.stderr:write(("# warning: load average %.2f before the run: other processes are busy, "
    .. "ratios will be distorted\n"):format(load0))
end
local t_start = os.time()
local N, T, order = run_both(opt.threads)

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
    print(("  %-10s fwd %6.2f   fwd+bwd %6.2f   (%d shapes)"):format(fam, math.exp(fl[1] / fl[3]),
      math.exp(fl[2] / fl[3]), fl[3]))
  end
end

if opt.scaling then
  local N1, T1 = run_both(1)
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
print(("compare_ops threads %d shapes %d geomean_fwd_ratio %.3f geomean_fwdbwd_ratio %.3f slower_fwdbwd %d "
  .. "wall_s %d loadavg_before %.2f loadavg_after %.2f")
  :format(opt.threads, nshapes, gf, gfb, nslow, os.time() - t_start, load0 or -1, loadavg() or -1))
