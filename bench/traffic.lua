-- bench/traffic.lua: how many bytes the ops of one forward of the DARTS
-- search network (the network of bench/darts_step.lua) take in and give
-- out, op by op, against the machine's streaming rate: a lower bound on the
-- time the op-by-op design spends moving data, whatever its kernels do.
--   ./build/nasrt bench/traffic.lua [--threads 2] [--batch 64] [--layers 8] [--C 16]
-- Each call of a nasrt.F function counts the bytes of its tensor arguments
-- (tables of tensors too) and results, once each: what a call must read and
-- write at least if nothing stays in cache between ops.  Kernels that read
-- an input twice (bn_weighted_sum: statistics, then output) and the
-- backward (about twice the forward's traffic) come on top.  The streaming
-- rate is F.add over 64 MB tensors (read 2, write 1).  For scale it also
-- times a forward and backward of the batch (best of 3).
local nasrt = require "nasrt"
local F = nasrt.F

local o = { threads = 2, batch = 64, layers = 8, C = 16 }
dofile((arg and arg[0] and arg[0]:match("^(.*)/") or "bench") .. "/args.lua").parse(o)
nasrt.set_num_threads(o.threads)
nasrt.manual_seed(0)

local net = nasrt.supernet.darts { C = o.C, layers = o.layers, in_channels = 1, classes = 10 }
local x = nasrt.randn { o.batch, 1, 28, 28 }
local y = {}
for i = 1, o.batch do y[i] = (i * 7) % 10 end
y = nasrt.tensor(y)

local function tensor_bytes(v, nested)
  if nasrt.is_tensor(v) then return v:numel() * 4 end
  local s = 0
  if type(v) == "table" and not nested then
    for _, e in pairs(v) do s = s + tensor_bytes(e, true) end
  end
  return s
end

-- every F function counted while fn runs, then put back
local function counted(fn)
  local bytes, calls, orig = {}, {}, {}
  for k, f in pairs(F) do
    if type(f) == "function" then
      orig[k] = f
      F[k] = function(...)
        local r = table.pack(f(...))
        local n = 0
        for i = 1, select("#", ...) do n = n + tensor_bytes((select(i, ...))) end
        for i = 1, r.n do n = n + tensor_bytes(r[i]) end
        bytes[k], calls[k] = (bytes[k] or 0) + n, (calls[k] or 0) + 1
        return table.unpack(r, 1, r.n)
      end
    end
  end
  local ok, err = pcall(fn)
  for k, f in pairs(orig) do F[k] = f end
  if not ok then error(err, 0) end
  return bytes, calls
end

F.cross_entropy(net(x), y) -- warm-up (allocator, scratch)
local bytes, calls = counted(function() F.cross_entropy(net(x), y) end)
local rows, total = {}, 0
for k, b in pairs(bytes) do
  rows[#rows + 1] = { k, b }
  total = total + b
end
table.sort(rows, function(a, b) return a[2] > b[2] end)

collectgarbage() -- the counted forward's tape
local fwd_s, t0 = math.huge, nil
for _ = 1, 3 do
  t0 = nasrt.clock()
  F.cross_entropy(net(x), y):backward()
  fwd_s = math.min(fwd_s, nasrt.clock() - t0)
  collectgarbage()
end

local a, b = nasrt.randn { 16, 1024, 1024 }, nasrt.randn { 16, 1024, 1024 }
F.add(a, b)
local best = math.huge
for _ = 1, 5 do
  t0 = nasrt.clock()
  F.add(a, b)
  best = math.min(best, nasrt.clock() - t0)
end
local rate = 3 * a:numel() * 4 / best

print(("nasrt %s traffic of one DARTS forward: threads=%d batch=%d layers=%d C=%d"):format(
  nasrt.version, o.threads, o.batch, o.layers, o.C))
print(("%-22s %6s %10s %6s"):format("op", "calls", "MB", "share"))
for _, r in ipairs(rows) do
  print(("%-22s %6d %10.1f %5.1f%%"):format(r[1], calls[r[1]], r[2] / 2 ^ 20, 100 * r[2] / total))
end
print(("forward moves at least %.2f GB; streaming at %.1f GB/s that is %.0f ms; forward and "
  .. "backward of the batch took %.0f ms"):format(total / 1e9, rate / 1e9, 1e3 * total / rate, 1e3 * fwd_s))
