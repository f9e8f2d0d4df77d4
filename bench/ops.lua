--[[
bench/ops.lua -- conv2d micro-benchmark: nasrt side.

Times F.conv2d forward, and forward+backward (gradients with respect to the
input and the weight, no bias), at batch 64 over the conv shapes a DARTS /
NAS-Bench-201 search network uses: 1x1 and 3x3 dense convs, depthwise 3x3 and
5x5, dilated depthwise (3x3 d2 p2, 5x5 d2 p4) at 16/32/64 channels and 28x28 /
14x14, plus a few stride-2 variants.  bench/torch_ops.py is the PyTorch twin
(same shapes, names, flags and output); bench/compare_ops.lua pairs them.

Usage:
  ./build/nasrt bench/ops.lua [--threads N] [--reps R] [--warmup W]
                              [--warmup_s S] [--budget S] [--filter a,b] [--json] [--list]
  --threads N   intra-op threads (default 2)
  --reps R      max timed repetitions per measurement (default 20); fewer
                (but at least 3) are run when R reps would exceed --budget
  --warmup W    untimed forward+backward passes first (default 2), and
  --warmup_s S  at least S seconds of them (default 0.2): with less, the
                second core may still be idle (its vCPU halted, the pool
                worker asleep) and the small shapes time at 1-thread speed
  --budget S    seconds per measurement that cap the reps (default 1.0)
  --filter F    only shapes whose name contains one of the comma-separated
                substrings of F
  --json        print one JSON document instead of the text lines
  --list        print the shape names and exit

Output (one line per shape, `name value` pairs as in DESIGN.md section 6):
  op conv3x3_c32_28 fwd_ms 1.23 fwdbwd_ms 3.40 gflops 55.1 fwd_gflops 60.2 gflop 0.116 reps 10 threads 2
fwd_ms / fwdbwd_ms are medians over the reps (wall clock); gflop is the
forward count 2*N*Co*Ho*Wo*(Ci/groups)*kh*kw / 1e9; gflops is the
forward+backward rate (3 * gflop per fwdbwd time, backward = 2x forward);
fwd_gflops the forward-only rate.  A shape that raises prints
`op NAME error message`.  Forward is timed with autograd recording (as in
training), the output released after each rep.
]]

local nasrt = require "nasrt"
local F = nasrt.F

-- ------------------------------------------------------------------ options
local function usage(msg)
  if msg then io.stderr:write("ops.lua: ", msg, "\n") end
  io.stderr:write("usage: nasrt bench/ops.lua [--threads N] [--reps R] [--warmup W] "
    .. "[--warmup_s S] [--budget S] [--filter a,b] [--json] [--list]\n")
  os.exit(msg and 2 or 0)
end

local opt = { threads = 2, reps = 20, warmup = 2, warmup_s = 0.2, budget = 1.0, filter = nil, json = false, list = false }
do
  local args = arg or {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local k, v = a:match("^%-%-([%w_]+)=(.*)$")
    k = k or a:match("^%-%-([%w_]+)$")
    if not k then usage("unexpected argument '" .. a .. "'") end
    if k == "help" or k == "h" then usage() end
    if k == "json" or k == "list" then
      opt[k] = true
    elseif k == "threads" or k == "reps" or k == "warmup" or k == "warmup_s" or k == "budget"
        or k == "filter" then
      if not v then i = i + 1; v = args[i] end
      if v == nil then usage("--" .. k .. " needs a value") end
      if k == "filter" then
        opt.filter = v
      else
        local n = tonumber(v)
        if not n or n < 0 or (k ~= "budget" and k ~= "warmup_s" and n ~= math.floor(n)) then
          usage("--" .. k .. " wants a number, got '" .. v .. "'")
        end
        opt[k] = n
      end
    else
      usage("unknown option --" .. k)
    end
    i = i + 1
  end
  if opt.threads < 1 then usage("--threads wants a positive integer") end
  if opt.reps < 1 then usage("--reps wants a positive integer") end
end

-- ------------------------------------------------------------------ shapes
-- Keep in step with SHAPES in bench/torch_ops.py (same names, same order).
local N = 64
local shapes = {}
local function add(name, ci, co, hw, k, s, p, d, g)
  shapes[#shapes + 1] = { name = name, ci = ci, co = co, hw = hw, k = k,
                          stride = s, padding = p, dilation = d, groups = g }
end
for _, k in ipairs { 1, 3 } do
  for _, c in ipairs { 16, 32, 64 } do
    for _, hw in ipairs { 28, 14 } do
      add(("conv%dx%d_c%d_%d"):format(k, k, c, hw), c, c, hw, k, 1, (k - 1) // 2, 1, 1)
    end
  end
end
for _, k in ipairs { 3, 5 } do
  for _, c in ipairs { 16, 32, 64 } do
    for _, hw in ipairs { 28, 14 } do
      add(("dw%dx%d_c%d_%d"):format(k, k, c, hw), c, c, hw, k, 1, (k - 1) // 2, 1, c)
    end
  end
end
for _, k in ipairs { 3, 5 } do
  for _, c in ipairs { 16, 32, 64 } do
    for _, hw in ipairs { 28, 14 } do
      add(("dil%dx%d_c%d_%d"):format(k, k, c, hw), c, c, hw, k, 1, k - 1, 2, c)
    end
  end
end
add("conv1x1_s2_c16_28", 16, 16, 28, 1, 2, 0, 1, 1)
add("conv3x3_s2_c32_28", 32, 32, 28, 3, 2, 1, 1, 1)
add("dw3x3_s2_c16_28", 16, 16, 28, 3, 2, 1, 1, 16)
add("dw5x5_s2_c32_28", 32, 32, 28, 5, 2, 2, 1, 32)
add("dw3x3_s2_c64_14", 64, 64, 14, 3, 2, 1, 1, 64)
add("dil3x3_s2_c16_28", 16, 16, 28, 3, 2, 2, 2, 16)
add("dil5x5_s2_c32_28", 32, 32, 28, 5, 2, 4, 2, 32)

local function selected(name)
  if not opt.filter or opt.filter == "" then return true end
  for pat in opt.filter:gmatch("[^,]+") do
    if name:find(pat, 1, true) then return true end
  end
  return false
end

if opt.list then
  for _, s in ipairs(shapes) do if selected(s.name) then print(s.name) end end
  os.exit(0)
end

-- ------------------------------------------------------------------ wall clock
-- Prefer a clock from nasrt itself (seconds, monotonic); else luasystem's
-- monotime (installed with busted); else `date` through popen, which costs a
-- fork per reading and is only good enough for long reps.
local clock, clock_name
for _, k in ipairs { "clock", "monotime", "time", "wall_time", "now" } do
  if type(nasrt[k]) == "function" then clock, clock_name = nasrt[k], "nasrt." .. k; break end
end
if not clock then
  local ok, sys = pcall(require, "system")
  if ok and type(sys) == "table" and type(sys.monotime) == "function" then
    clock, clock_name = sys.monotime, "system.monotime"
  end
end
if not clock then
  clock_name = "popen(date)"
  clock = function()
    local f = io.popen("date +%s.%N")
    local s = f:read("l"); f:close()
    return tonumber(s)
  end
end

-- ------------------------------------------------------------------ timing
local function median(t)
  table.sort(t)
  local n = #t
  if n % 2 == 1 then return t[(n + 1) // 2] end
  return 0.5 * (t[n // 2] + t[n // 2 + 1])
end

local function out_size(s)
  return (s.hw + 2 * s.padding - s.dilation * (s.k - 1) - 1) // s.stride + 1
end

local function bench_shape(s)
  local ho = out_size(s)
  local flops = 2.0 * N * s.co * ho * ho * (s.ci // s.groups) * s.k * s.k
  local cfg = { stride = s.stride, padding = s.padding, dilation = s.dilation, groups = s.groups }
  local x = nasrt.randn({ N, s.ci, s.hw, s.hw }):requires_grad(true)
  local w = nasrt.randn({ s.co, s.ci // s.groups, s.k, s.k }):requires_grad(true)
  local gout = nasrt.randn({ N, s.co, ho, ho })

  local function fwd()
    local out = F.conv2d(x, w, nil, cfg)
    out:close()
  end
  local function fwdbwd()
    local out = F.conv2d(x, w, nil, cfg)
    out:backward(gout)
    out:close()
  end
  local function reset()
    x:zero_grad(); w:zero_grad()
  end

  -- warm up (and estimate the cost of one forward+backward)
  local est, n, tw = 0, 0, clock()
  repeat
    reset()
    local t0 = clock(); fwdbwd(); est = clock() - t0
    n = n + 1
  until n >= math.max(opt.warmup, 1) and clock() - tw >= opt.warmup_s
  local function nreps(t)
    return math.max(3, math.min(opt.reps, math.floor(opt.budget / math.max(t, 1e-6))))
  end
  local function measure(fn, n)
    local ts = {}
    for r = 1, n do
      reset()
      if r % 4 == 0 then collectgarbage("step") end
      local t0 = clock()
      fn()
      ts[r] = clock() - t0
    end
    return median(ts)
  end

  local nfb = nreps(est)
  local t_fb = measure(fwdbwd, nfb)
  local nf = nreps(t_fb / 3)
  local t_f = measure(fwd, nf)
  reset()
  x:close(); w:close(); gout:close()
  collectgarbage(); collectgarbage()
  return {
    name = s.name, fwd_ms = t_f * 1e3, fwdbwd_ms = t_fb * 1e3,
    gflops = 3 * flops / t_fb / 1e9, fwd_gflops = flops / t_f / 1e9,
    gflop = flops / 1e9, reps = math.min(nf, nfb), threads = opt.threads,
  }
end

-- ------------------------------------------------------------------ main
nasrt.set_num_threads(opt.threads)
nasrt.manual_seed(0)
io.stderr:write(("# nasrt ops bench: batch %d, threads %d, clock %s\n")
  :format(N, nasrt.num_threads(), clock_name))
if clock_name == "popen(date)" then
  io.stderr:write("# warning: no in-process wall clock; timings include a fork per reading\n")
end

local results = {}
for _, s in ipairs(shapes) do
  if selected(s.name) then
    local ok, r = pcall(bench_shape, s)
    if not ok then
      r = { name = s.name, error = tostring(r):gsub("%s+", " ") }
      collectgarbage(); collectgarbage()
    end
    results[#results + 1] = r
    if not opt.json then
      if r.error then
        print(("op %s error %s"):format(r.name, r.error))
      else
        print(("op %s fwd_ms %.3f fwdbwd_ms %.3f gflops %.1f fwd_gflops %.1f gflop %.4f reps %d threads %d")
          :format(r.name, r.fwd_ms, r.fwdbwd_ms, r.gflops, r.fwd_gflops, r.gflop, r.reps, r.threads))
      end
      io.stdout:flush()
    end
  end
end

if opt.json then
  local function q(s) return '"' .. tostring(s):gsub('[%c"\\]', function(c)
    return ("\\u%04x"):format(c:byte()) end) .. '"' end
  local rows = {}
  for _, r in ipairs(results) do
    if r.error then
      rows[#rows + 1] = ('{"name": %s, "error": %s}'):format(q(r.name), q(r.error))
    else
      rows[#rows + 1] = ('{"name": %s, "fwd_ms": %.4f, "fwdbwd_ms": %.4f, "gflops": %.2f, '
        .. '"fwd_gflops": %.2f, "gflop": %.5f, "reps": %d}')
        :format(q(r.name), r.fwd_ms, r.fwdbwd_ms, r.gflops, r.fwd_gflops, r.gflop, r.reps)
    end
  end
  print(('{"impl": "nasrt", "batch": %d, "threads": %d, "clock": %s, "results": [\n  %s\n]}')
    :format(N, opt.threads, q(clock_name), table.concat(rows, ",\n  ")))
end
