-- train_cnn.lua: trains a small CNN on Fashion-MNIST with nasrt.nn and
-- nasrt.optim, printing one progress line per epoch.
--
--   ./build/nasrt examples/train_cnn.lua [key=value ...]
--   ./build/nasrt examples/train_cnn.lua epochs=2 limit=6000     -- a quick run
--
-- Options (also accepted as --key=value):
--   epochs=10 batch_size=128 lr=0.05 optimizer=sgd|adam momentum=0.9
--   weight_decay=5e-4 label_smoothing=0 dropout=0.25 width=32 hidden=128
--   flip=true crop=0 seed=0 threads=<cores> limit=<train images> root=<dir>
--
-- Model: [conv3x3 -> BN -> ReLU -> maxpool2] x 2 (width, 2*width channels),
-- then flatten -> dropout -> linear(hidden) -> ReLU -> linear(10).
-- SGD with Nesterov momentum (or Adam), cosine learning rate per iteration.
local nasrt = require "nasrt"
local nn, optim, F = nasrt.nn, nasrt.optim, nasrt.F

-- ------------------------------------------------------------ options

local defaults = {
  epochs = 10, batch_size = 128, lr = 0.05, optimizer = "sgd", momentum = 0.9,
  weight_decay = 5e-4, label_smoothing = 0, dropout = 0.25, width = 32, hidden = 128,
  flip = true, crop = 0, seed = 0, threads = 0, limit = 0, root = "", eval_batch = 1000,
}

local function usage()
  local keys = {}
  for k in pairs(defaults) do keys[#keys + 1] = k end
  table.sort(keys)
  print("usage: nasrt examples/train_cnn.lua [key=value ...]\noptions (defaults):")
  for _, k in ipairs(keys) do print(("  %-16s %s"):format(k, tostring(defaults[k]))) end
end

--- key=value (or --key=value) arguments over the defaults, typed like them.
local function parse_args(argv)
  local cfg = {}
  for k, v in pairs(defaults) do cfg[k] = v end
  for _, a in ipairs(argv or {}) do
    if a == "-h" or a == "--help" then
      usage()
      os.exit(0)
    end
    local k, v = a:match("^%-*([%w_%-]+)=(.*)$")
    if not k then error(("bad argument '%s' (expected key=value)"):format(a), 0) end
    k = k:gsub("%-", "_")
    local d = defaults[k]
    if d == nil then error(("unknown option '%s' (try --help)"):format(k), 0) end
    if type(d) == "number" then
      local n = tonumber(v)
      if not n then error(("option '%s' expects a number, got '%s'"):format(k, v), 0) end
      cfg[k] = math.type(d) == "integer" and math.tointeger(n) or n
      if cfg[k] == nil then error(("option '%s' expects an integer, got '%s'"):format(k, v), 0) end
    elseif type(d) == "boolean" then
      if v ~= "true" and v ~= "false" then
        error(("option '%s' expects true or false, got '%s'"):format(k, v), 0)
      end
      cfg[k] = v == "true"
    else
      cfg[k] = v
    end
  end
  return cfg
end

local cfg = parse_args(arg)
if cfg.threads > 0 then nasrt.set_num_threads(cfg.threads) end
nasrt.manual_seed(cfg.seed)

-- ------------------------------------------------------------ data

local root = cfg.root ~= "" and cfg.root or nil
local train_ds = nasrt.data.fashion_mnist { split = "train", root = root }
local test_ds = nasrt.data.fashion_mnist { split = "test", root = root }
local MEAN, STD = { 0.2860 }, { 0.3530 }   -- Fashion-MNIST training pixels
local train = nasrt.data.loader(train_ds, {
  batch_size = cfg.batch_size, shuffle = true, seed = cfg.seed, drop_last = true,
  limit = cfg.limit > 0 and cfg.limit or nil,
  augment = { flip = cfg.flip, crop = cfg.crop, mean = MEAN, std = STD },
})
local test = nasrt.data.loader(test_ds, {
  batch_size = cfg.eval_batch, shuffle = false, augment = { mean = MEAN, std = STD },
})

-- ------------------------------------------------------------ model

local w = cfg.width
local net = nn.Sequential(
  nn.Conv2d(1, w, 3, { padding = 1, bias = false }), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
  nn.Conv2d(w, 2 * w, 3, { padding = 1, bias = false }), nn.BatchNorm2d(2 * w), nn.ReLU(),
  nn.MaxPool2d(2),
  nn.Flatten(), nn.Dropout(cfg.dropout),
  nn.Linear(2 * w * 7 * 7, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 10))

local opt
if cfg.optimizer == "sgd" then
  opt = optim.SGD(net:parameters(), { lr = cfg.lr, momentum = cfg.momentum, nesterov = true,
                                      weight_decay = cfg.weight_decay })
elseif cfg.optimizer == "adam" then
  opt = optim.Adam(net:parameters(), { lr = cfg.lr, weight_decay = cfg.weight_decay })
else
  error("optimizer must be sgd or adam, got " .. cfg.optimizer, 0)
end
local iters = #train
local sched = optim.CosineLR(opt, cfg.epochs * iters)
local criterion = nn.CrossEntropyLoss { label_smoothing = cfg.label_smoothing }

print(net)
print(("parameters %d  MFLOPs/image %.2f  threads %d  train %d (%d batches of %d)  test %d"):format(
  net:num_parameters(), net:flops { 1, 1, 28, 28 } / 1e6, nasrt.num_threads(),
  iters * cfg.batch_size, iters, cfg.batch_size, #test_ds))

-- ------------------------------------------------------------ loop

-- number of rows where argmax(logits) equals the label
local function correct(logits, y)
  local pred = F.argmax(logits, 2):totable()
  local ys = y:totable()
  local n = 0
  for i = 1, #ys do
    if pred[i] == ys[i] then n = n + 1 end
  end
  return n
end

local function evaluate()
  net:eval()
  local right, total = 0, 0
  nasrt.no_grad(function()
    test:epoch(1)
    for x, y in test:iter() do
      right = right + correct(net(x), y)
      total = total + y:numel()
    end
  end)
  net:train()
  return right / total
end

local function fmt_time(s)
  s = math.floor(s + 0.5)
  return ("%d:%02d"):format(s // 60, s % 60)
end

local t_start = nasrt.clock()
local train_time = 0
local acc
for epoch = 1, cfg.epochs do
  net:train()
  train:epoch(epoch)
  local t0 = nasrt.clock()
  local loss_sum, right, seen, batches = 0, 0, 0, 0
  for x, y in train:iter() do
    local logits = net(x)
    local loss = criterion(logits, y)
    opt:zero_grad()
    loss:backward()
    opt:step()
    sched:step()
    loss_sum = loss_sum + loss:item()
    right = right + correct(logits, y)
    seen = seen + y:numel()
    batches = batches + 1
  end
  local dt = nasrt.clock() - t0
  train_time = train_time + dt
  acc = evaluate()
  local elapsed = nasrt.clock() - t_start
  local eta = elapsed / epoch * (cfg.epochs - epoch)
  print(("epoch %2d/%d  loss %.4f  train acc %.4f  test acc %.4f  lr %.4f  %.0f img/s  " ..
    "time %s  ETA %s"):format(epoch, cfg.epochs, loss_sum / batches, right / seen, acc,
    opt:get_lr(), seen / dt, fmt_time(elapsed), fmt_time(eta)))
  io.stdout:flush()
end
local total = nasrt.clock() - t_start
print(("final test acc %.4f  total %s  train %.0f img/s"):format(acc, fmt_time(total),
  cfg.epochs * iters * cfg.batch_size / train_time))
