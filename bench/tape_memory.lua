-- bench/tape_memory.lua: where the memory of one DARTS search step goes.
-- Runs the forward of bench/darts_step.lua's network on one batch and prints
-- what the autograd tape keeps alive, by the op that produced each tensor
-- (nasrt.tape_memory), then the live/peak counters of the storage allocator
-- and the process's peak RSS after a full backward.
--   ./build/nasrt bench/tape_memory.lua [--batch 64] [--layers 8] [--C 16]
--                                      [--workload darts|agnas]
local nasrt = require "nasrt"
local F = nasrt.F

local o = { batch = 64, layers = 8, C = 16, workload = "darts", threads = 2 }
dofile((arg and arg[0] and arg[0]:match("^(.*)/") or "bench") .. "/args.lua").parse(o)
nasrt.set_num_threads(o.threads)
nasrt.manual_seed(0)
local net = nasrt.supernet[o.workload] { C = o.C, layers = o.layers, in_channels = 1, classes = 10 }
local x = nasrt.randn { o.batch, 1, 28, 28 }
local y = nasrt.tensor((function() local t = {} for j = 1, o.batch do t[j] = j % 10 end return t end)())
local MB = 1024 * 1024
local base = nasrt.memory().live_bytes
nasrt.reset_peak_memory()
local loss = F.cross_entropy(net(x), y)
local total, by = nasrt.tape_memory(loss)
local rows = {}
for k, v in pairs(by) do rows[#rows + 1] = { k, v } end
table.sort(rows, function(a, b) return a[2] > b[2] end)
print(("tape after forward: %.0f MB (live %.0f MB over the %.0f MB of weights and data)")
  :format(total / MB, (nasrt.memory().live_bytes - base) / MB, base / MB))
for _, r in ipairs(rows) do print(("  %-28s %8.1f MB  %5.1f%%"):format(r[1], r[2] / MB, 100 * r[2] / total)) end
loss:backward()
loss = nil
collectgarbage()
local m = nasrt.memory()
local rss = 0
for line in io.lines("/proc/self/status") do
  local v = line:match("^VmHWM:%s+(%d+)")
  if v then rss = tonumber(v) / 1024 end
end
print(("forward+backward: peak live %.0f MB, live after %.0f MB, peak RSS %.0f MB")
  :format(m.peak_bytes / MB, m.live_bytes / MB, rss))
