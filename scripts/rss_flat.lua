-- Memory stays flat: runs N training steps of a tiny DARTS search (the loop
-- of recipes/darts.lua: architecture step, weight step, gradient clipping,
-- a JSON log line per step, a checkpoint save + load every 50 steps, the
-- Fashion-MNIST loader with augmentation) and prints the process RSS
-- (/proc/self/statm) and nasrt's live/peak tensor bytes at chosen steps.
--
--   ./build/nasrt scripts/rss_flat.lua                 1000 steps, RSS at 100 and 1000
--   ./build/nasrt scripts/rss_flat.lua --steps=200 --at=50,200
--
-- The last line reads "growth <from> <to> rss_kb <n> live_bytes <n> lua_kb <n> asan <0|1>"
-- (spec/memory_spec.lua parses it): how much the RSS, nasrt's live tensor
-- bytes and the Lua heap grew between the first and the last step of --at.
-- Each point is taken after a full Lua collection, so it counts memory that
-- stays, not garbage the collector has not reached yet.
local nasrt = require "nasrt"
local recipe = require "nasrt.recipe"
local darts_arch = require "nasrt.darts_arch"
local F, optim, supernet = nasrt.F, nasrt.optim, nasrt.supernet

local opts = { steps = 1000, at = "100,1000", threads = 0 }
for _, a in ipairs(arg or {}) do
  local k, v = a:match("^%-%-([%w_]+)=(.*)$")
  if not k or opts[k] == nil then error("rss_flat: unknown argument " .. a, 0) end
  opts[k] = math.type(opts[k]) == "integer" and assert(math.tointeger(tonumber(v)), a) or v
end
local marks = {}
for s in opts.at:gmatch("%d+") do marks[#marks + 1] = math.tointeger(tonumber(s)) end
assert(#marks >= 2, "rss_flat: --at needs two steps")

local PAGE_KB = 4
local function rss_kb()
  local f = assert(io.open("/proc/self/statm"))
  local _, res = f:read("n", "n")
  f:close()
  return res * PAGE_KB
end

nasrt.manual_seed(1)
local cfg = { C = 4, layers = 2, steps = 2, batch_size = 16, train_limit = 64, val_limit = 64,
              size = 8, seed = 1, augment = true }
local data = darts_arch.search_data(cfg)
local net = supernet.darts { C = cfg.C, layers = cfg.layers, steps = cfg.steps,
                             multiplier = cfg.steps, classes = data.classes,
                             in_channels = data.in_channels }
net:train()
local weights = net:parameters()
local w_opt = optim.SGD(weights, { lr = 0.025, momentum = 0.9, weight_decay = 3e-4 })
local arch = darts_arch.Architect(net, { lr = 3e-4, betas = { 0.5, 0.999 }, weight_decay = 1e-3 })
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))
local log = recipe.logger(dir .. "/log.jsonl")
local ckpt = dir .. "/checkpoint.nrck"

local rows, step, epoch, mi = {}, 0, 1, 1
while step < opts.steps do
  local x, y = data.train:next()
  if not x then
    epoch = epoch + 1
    data.train:epoch(epoch)
    x, y = data.train:next()
  end
  local xv, yv = data.val:next(true)
  x, xv = data.prep(x), data.prep(xv)
  local vloss = arch:step(x, y, xv, yv, 0.025, w_opt)
  w_opt:zero_grad()
  local loss = darts_arch.frozen(arch.alphas, function()
    local l = F.cross_entropy(net(x), y)
    l:backward()
    return l:item()
  end)
  optim.clip_grad_norm(weights, 5)
  w_opt:step()
  step = step + 1
  log:log { step = step, loss = loss, arch_loss = vloss }
  if step % 50 == 0 then
    assert(nasrt.save(ckpt, { model = net:state_dict(), w_opt = w_opt:state_dict(),
                              a_opt = arch.optimizer:state_dict(), train = data.train:state(),
                              rng = nasrt.get_rng_state() }))
    assert(nasrt.load(ckpt))
  end
  if step == marks[mi] then
    collectgarbage("collect")
    collectgarbage("collect")
    local m = nasrt.memory()
    rows[mi] = { rss = rss_kb(), live = m.live_bytes, lua = collectgarbage("count") }
    print(("step %5d  rss %8.1f MB  live %7.2f MB  peak %7.2f MB  lua %7.2f MB  loss %.4f"):format(
      step, rows[mi].rss / 1024, m.live_bytes / 2^20, m.peak_bytes / 2^20,
      collectgarbage("count") / 1024, loss))
    io.stdout:flush()
    mi = mi + 1
    if mi > #marks then break end
  end
end
log:close()
os.remove(ckpt)
os.remove(dir .. "/log.jsonl")
os.remove(dir)
-- under ASan the RSS holds the allocator's quarantine (256 MB of freed
-- blocks) and shadow memory, so it says nothing about this loop
local asan = 0
for line in io.lines("/proc/self/maps") do
  if line:find("libasan", 1, true) or line:find("clang_rt.asan", 1, true) then asan = 1 break end
end
local a, b = rows[1], rows[#marks]
print(("growth %d %d rss_kb %d live_bytes %d lua_kb %.1f asan %d"):format(marks[1], marks[#marks],
  b.rss - a.rss, b.live - a.live, b.lua - a.lua, asan))
