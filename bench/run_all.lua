-- bench/run_all.lua: what `make bench` runs.  Each nasrt workload beside its
-- PyTorch twin at the same thread count, one after the other, printing both
-- `name value` lines and the nasrt/PyTorch time ratio.
--   ./build/nasrt bench/run_all.lua [--threads N] [--quick]
local threads, quick = 2, false
for i = 1, #arg do
  if arg[i] == "--quick" then quick = true
  elseif arg[i]:match("^%-%-threads=?") then threads = tonumber(arg[i]:match("=(%d+)") or arg[i + 1]) end
end
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local root = here .. "/.."
local nasrt_bin = root .. "/build/nasrt"
local py = "/usr/bin/python3"
local shared = root .. "/../shared/bench"

local function run(cmd)
  print("$ " .. cmd)
  local f = io.popen(cmd .. " 2>&1")
  local out = f:read("a")
  f:close()
  io.write(out)
  return out
end

local function ratio(name, a, b)
  local x = tonumber(a:match(name .. "%s+([%d%.]+)"))
  local y = tonumber(b:match(name .. "%s+([%d%.]+)"))
  if x and y then print(("ratio %s nasrt/torch %.3f"):format(name, x / y)) end
end

local t = " --threads " .. threads
run(("lua5.4 %s/compare_ops.lua --threads %d%s"):format(here, threads, quick and " --filter conv3x3,dw3x3" or ""))
local a = run(nasrt_bin .. " " .. here .. "/train_cnn.lua" .. t)
local b = run(py .. " " .. here .. "/torch_train_cnn.py" .. t)
ratio("train_cnn_step_ms", a, b)
local steps = quick and " --steps 1 --warmup 1" or " --steps 3 --warmup 1"
a = run(nasrt_bin .. " " .. here .. "/darts_step.lua" .. t .. steps)
local f = io.open(shared .. "/torch_darts_step.py")
if f then
  f:close()
  b = run(py .. " " .. shared .. "/torch_darts_step.py" .. t .. steps)
  ratio("darts_step_ms", a, b)
else
  print("(../shared/bench/torch_darts_step.py not found: PyTorch DARTS step skipped)")
end
