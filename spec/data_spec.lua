--- nasrt.data: Fashion-MNIST (the real Debian files), CIFAR-10/100 binary
-- batches synthesised here, bad files, splits, and the loader (counts,
-- determinism, resume, augmentations).
local nasrt = require "nasrt"
local H = require "helpers"
local data = nasrt.data

local FMNIST = "/usr/share/datasets/fashion-mnist"

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function tmpdir()
  local p = assert(io.popen("mktemp -d"))
  local d = p:read("l")
  p:close()
  return d
end

local function rmrf(d) os.execute("rm -rf '" .. d .. "'") end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- IDX files as Fashion-MNIST's, small
local function idx_images(n, fill, magic, rows, cols)
  rows, cols = rows or 28, cols or 28
  return string.pack(">I4I4I4I4", magic or 0x803, n, rows, cols)
      .. string.rep(string.char(fill or 7), n * rows * cols)
end

local function idx_labels(list)
  return string.pack(">I4I4", 0x801, #list) .. string.char(table.unpack(list))
end

local function fake_fmnist(dir, images, labels, prefix)
  prefix = prefix or "train"
  write(dir .. "/" .. prefix .. "-images-idx3-ubyte", images)
  write(dir .. "/" .. prefix .. "-labels-idx1-ubyte", labels)
end

-- CIFAR pixels: never 0, asymmetric in x and y, distinct per record
local function pix(r, c, y, x) return 1 + (r * 37 + c * 11 + y * 5 + x * 3) % 250 end

local function cifar_record(r, labels)
  local t = {}
  for c = 0, 2 do
    for y = 0, 31 do
      for x = 0, 31 do t[#t + 1] = string.char(pix(r, c, y, x)) end
    end
  end
  return string.char(table.unpack(labels)) .. table.concat(t)
end

-- train: 5 batches of 3 records (record r has label r % 10), test: 2 records
local function fake_cifar10(dir)
  local r = 0
  for b = 1, 5 do
    local recs = {}
    for _ = 1, 3 do
      recs[#recs + 1] = cifar_record(r, {r % 10})
      r = r + 1
    end
    write(("%s/data_batch_%d.bin"):format(dir, b), table.concat(recs))
  end
  write(dir .. "/test_batch.bin", cifar_record(100, {3}) .. cifar_record(101, {4}))
end

local function flat(t) return t:reshape(-1):totable() end

local function same(a, b)
  local sa, sb = a:shape(), b:shape()
  if #sa ~= #sb then return false end
  for i = 1, #sa do if sa[i] ~= sb[i] then return false end end
  return H.maxdiff(a, b) == 0
end

local function shape_is(t, s)
  local ts = t:shape()
  if #ts ~= #s then return false end
  for i = 1, #s do if ts[i] ~= s[i] then return false end end
  return true
end

---------------------------------------------------------------------------
describe("nasrt.data.fashion_mnist (the Debian files)", function()
  local have = exists(FMNIST .. "/train-labels-idx1-ubyte.gz")
  local train, test

  setup(function()
    if not have then return end
    train = assert(data.fashion_mnist{split = "train"})
    test = assert(data.fashion_mnist{split = "test", root = FMNIST})
  end)

  it("has 60,000 training and 10,000 test images of 1x28x28 in 10 classes", function()
    if not have then return pending("dataset-fashion-mnist not installed") end
    assert.equal(60000, #train)
    assert.equal(10000, #test)
    assert.same({1, 28, 28}, train:shape())
    assert.equal(10, train:classes())
    assert.same({"fashion_mnist", "train"}, {train:name()})
  end)

  it("reads the first image and label as the file has them", function()
    if not have then return pending("dataset-fashion-mnist not installed") end
    local x, y = train:get(1)
    assert.equal(9, y)                       -- ankle boot, byte 8 of the label file
    assert.is_true(shape_is(x, {1, 28, 28}))
    assert.near(0.38138756, x:mean():item(), 1e-5)
    assert.equal(9, (select(2, test:get(1))))
    assert.equal(5, (select(2, train:get(60000))))
    assert.has_error(function() train:get(0) end, "get: index 0 out of range 1..60000")
    assert.has_error(function() train:get(60001) end)
  end)

  it("has labels 0..9, 6000 of each in train, and plausible pixel statistics", function()
    if not have then return pending("dataset-fashion-mnist not installed") end
    local count = {}
    for _, l in ipairs(train:labels()) do count[l] = (count[l] or 0) + 1 end
    for c = 0, 9 do assert.equal(6000, count[c]) end
    local mean, std = train:stats()
    assert.near(0.2860, mean[1], 1e-3)
    assert.near(0.3530, std[1], 1e-3)
    assert.near(data.stats.fashion_mnist.mean[1], mean[1], 1e-6)
    local x = train:get(123)
    local lo, hi = math.huge, -math.huge
    for _, v in ipairs(flat(x)) do lo = math.min(lo, v); hi = math.max(hi, v) end
    assert.is_true(lo >= 0 and hi <= 1 and hi > 0.5)
  end)

  it("feeds a loader: 64-image batches of the right shape", function()
    if not have then return pending("dataset-fashion-mnist not installed") end
    local tr, va = data.split(train)
    local loader = data.loader(tr, {batch_size = 64, seed = 1, augment = {crop = 2, flip = true,
      mean = data.stats.fashion_mnist.mean, std = data.stats.fashion_mnist.std}})
    assert.equal(469, #loader)
    local x, y = loader:next()
    assert.is_true(shape_is(x, {64, 1, 28, 28}))
    assert.is_true(shape_is(y, {64}))
    local small = data.loader(va, {batch_size = 64, limit = 100, shuffle = false})
    assert.equal(2, #small)
    local n = 0
    for bx in small:iter() do n = n + bx:shape()[1] end
    assert.equal(100, n)
  end)
end)

---------------------------------------------------------------------------
describe("bad Fashion-MNIST files", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() rmrf(dir) end)

  local function fails(pattern)
    local ds, msg = data.fashion_mnist{root = dir}
    assert.is_nil(ds)
    assert.is_string(msg)
    assert.truthy(msg:find(pattern, 1, true), msg)
    return msg
  end

  it("accepts a good small set, plain or gzipped", function()
    fake_fmnist(dir, idx_images(3, 51), idx_labels{1, 2, 3})
    local ds = assert(data.fashion_mnist{root = dir})
    assert.equal(3, #ds)
    local x, y = ds:get(2)
    assert.equal(2, y)
    assert.near(0.2, x:mean():item(), 1e-6)
    if os.execute("gzip -f '" .. dir .. "'/*-ubyte") then
      assert.is_true(exists(dir .. "/train-images-idx3-ubyte.gz"))
      local gz = assert(data.fashion_mnist{root = dir})
      assert.equal(3, #gz)
    end
  end)

  it("rejects truncated pixels, naming the file", function()
    fake_fmnist(dir, idx_images(3):sub(1, 16 + 1000), idx_labels{1, 2, 3})
    local msg = fails(dir .. "/train-images-idx3-ubyte: truncated: expected 2352 bytes of pixels, got 1000")
    assert.truthy(msg:find("^fashion_mnist: "), msg)
  end)

  it("rejects a truncated gzip file", function()
    fake_fmnist(dir, idx_images(3), idx_labels{1, 2, 3})
    if not os.execute("gzip -f '" .. dir .. "/train-images-idx3-ubyte'") then
      return pending("no gzip")
    end
    local path = dir .. "/train-images-idx3-ubyte.gz"
    local gz = read(path)
    write(path, gz:sub(1, #gz - 12))
    fails(path .. ": truncated")
  end)

  it("rejects trailing data after the declared images", function()
    fake_fmnist(dir, idx_images(3) .. "xyz", idx_labels{1, 2, 3})
    fails("train-images-idx3-ubyte: trailing data: 3 bytes after the declared 2352 bytes of pixels")
  end)

  it("rejects a wrong magic number", function()
    fake_fmnist(dir, idx_images(3, 7, 0x801), idx_labels{1, 2, 3})
    fails("train-images-idx3-ubyte: bad magic 0x00000801, expected 0x00000803")
    fake_fmnist(dir, idx_images(3), idx_labels{1, 2, 3})
    write(dir .. "/train-labels-idx1-ubyte", "GIF89a, not IDX at all")
    fails("train-labels-idx1-ubyte: bad magic")
  end)

  it("rejects a label out of range", function()
    fake_fmnist(dir, idx_images(3), idx_labels{1, 10, 3})
    fails("train-labels-idx1-ubyte: label 10 at index 1 is out of range 0..9")
  end)

  it("rejects image and label counts that differ", function()
    fake_fmnist(dir, idx_images(2), idx_labels{1, 2, 3})
    fails("train-labels-idx1-ubyte: 3 labels, but " .. dir .. "/train-images-idx3-ubyte has 2 images")
  end)

  it("rejects images that are not 28x28", function()
    fake_fmnist(dir, idx_images(3, 7, nil, 32, 32), idx_labels{1, 2, 3})
    fails("images are 32x32, expected 28x28")
  end)

  it("reports missing files, and raises on misuse", function()
    fails(dir .. "/train-labels-idx1-ubyte.gz: cannot open")
    assert.has_error(function() data.fashion_mnist{splt = "train"} end)
    assert.has_error(function() data.fashion_mnist{split = "val"} end,
      'fashion_mnist: option \'split\' must be "train" or "test", got "val"')
    assert.has_error(function() data.fashion_mnist{root = 5} end)
    assert.has_error(function() data.fashion_mnist("train") end)
  end)
end)

---------------------------------------------------------------------------
describe("CIFAR binary batches", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() rmrf(dir) end)

  it("loads CIFAR-10 train and test batches", function()
    fake_cifar10(dir)
    local tr = assert(data.cifar10{split = "train", root = dir})
    local te = assert(data.cifar10{split = "test", root = dir})
    assert.equal(15, #tr)
    assert.equal(2, #te)
    assert.same({3, 32, 32}, tr:shape())
    assert.equal(10, tr:classes())
    for _, i in ipairs{1, 5, 15} do
      local x, y = tr:get(i)
      local r = i - 1
      assert.equal(r % 10, y)
      local t = x:totable()
      for _, p in ipairs{{0, 0, 0}, {1, 5, 30}, {2, 31, 7}} do
        local c, yy, xx = p[1], p[2], p[3]
        assert.near(pix(r, c, yy, xx) / 255, t[c + 1][yy + 1][xx + 1], 1e-7)
      end
    end
    assert.equal(4, (select(2, te:get(2))))
  end)

  it("finds the batches inside cifar-10-batches-bin", function()
    local sub = dir .. "/cifar-10-batches-bin"
    os.execute("mkdir '" .. sub .. "'")
    fake_cifar10(sub)
    assert.equal(15, #assert(data.cifar10{root = dir}))
  end)

  it("loads CIFAR-100 with fine labels", function()
    local recs = {}
    for r = 0, 3 do recs[#recs + 1] = cifar_record(r, {r, 96 + r}) end
    write(dir .. "/train.bin", table.concat(recs))
    local ds = assert(data.cifar100{root = dir})
    assert.equal(4, #ds)
    assert.equal(100, ds:classes())
    assert.same({96, 97, 98, 99}, ds:labels())
  end)

  it("rejects missing, wrong-size and out-of-range files by name", function()
    fake_cifar10(dir)
    os.remove(dir .. "/data_batch_4.bin")
    local ds, msg = data.cifar10{root = dir}
    assert.is_nil(ds)
    assert.truthy(msg:find(dir .. "/data_batch_4.bin: cannot open", 1, true), msg)
    fake_cifar10(dir)
    write(dir .. "/data_batch_2.bin", cifar_record(0, {1}) .. "extra")
    ds, msg = data.cifar10{root = dir}
    assert.is_nil(ds)
    assert.truthy(msg:find("data_batch_2.bin: size 3078 is not a whole number of 3073-byte records", 1, true), msg)
    fake_cifar10(dir)
    write(dir .. "/test_batch.bin", cifar_record(0, {1}) .. cifar_record(1, {11}))
    ds, msg = data.cifar10{split = "test", root = dir}
    assert.is_nil(ds)
    assert.truthy(msg:find("test_batch.bin: label 11 of record 1 is out of range 0..9", 1, true), msg)
    write(dir .. "/test.bin", cifar_record(0, {1, 100}))
    ds, msg = data.cifar100{split = "test", root = dir}
    assert.is_nil(ds)
    assert.truthy(msg:find("label 100 of record 0 is out of range 0..99", 1, true), msg)
  end)

  it("raises on misuse", function()
    if not os.getenv("NASRT_CIFAR10") then
      assert.has_error(function() data.cifar10{split = "train"} end)
    end
    assert.has_error(function() data.cifar10{root = dir, fold = 1} end)
    assert.has_error(function() data.cifar100{root = dir, split = "valid"} end)
  end)
end)

---------------------------------------------------------------------------
describe("subsets and the train/validation split", function()
  local dir, ds
  setup(function()
    dir = tmpdir()
    fake_cifar10(dir)
    ds = assert(data.cifar10{root = dir})
  end)
  teardown(function() rmrf(dir) end)

  local function check_partition(a, b, n)
    local seen = {}
    for _, part in ipairs{a, b} do
      for _, i in ipairs(part:indices()) do
        assert.is_nil(seen[i], "index " .. i .. " in both parts")
        seen[i] = true
      end
    end
    for i = 1, n do assert.is_true(seen[i], "index " .. i .. " in neither part") end
  end

  it("is DARTS's indices[:split] / indices[split:] without shuffling", function()
    local a, b = data.split(ds, {fraction = 0.5, shuffle = false})
    assert.equal(7, #a)                    -- floor(0.5 * 15)
    assert.equal(8, #b)
    assert.same({1, 2, 3, 4, 5, 6, 7}, a:indices())
    assert.same({8, 9, 10, 11, 12, 13, 14, 15}, b:indices())
    local x1 = a:get(3)
    assert.is_true(same(x1, (ds:get(3))))
    assert.equal(select(2, ds:get(9)), select(2, b:get(2)))
    check_partition(a, b, 15)
  end)

  it("splits a seeded permutation: disjoint, covering, reproducible", function()
    local a, b = data.split(ds, {seed = 3})
    check_partition(a, b, 15)
    local a2 = data.split(ds, {seed = 3})
    assert.same(a:indices(), a2:indices())
    local a3 = data.split(ds, {seed = 4})
    assert.are_not.same(a:indices(), a3:indices())
    local c, d = ds:split{fraction = 0.2, seed = 1}
    assert.equal(3, #c)
    assert.equal(12, #d)
    check_partition(c, d, 15)
  end)

  it("takes subsets of subsets", function()
    local _, b = data.split(ds, {shuffle = false})
    local s = b:subset{2, 2, 8}
    assert.same({9, 9, 15}, s:indices())
    assert.same({11, 12}, b:subset(4, 5):indices())   -- b holds 8..15
    assert.equal(0, #b:subset(3, 2))
  end)
end)

---------------------------------------------------------------------------
describe("nasrt.data.loader", function()
  local dir, ds
  setup(function()
    dir = tmpdir()
    fake_cifar10(dir)
    ds = assert(data.cifar10{root = dir})
  end)
  teardown(function() rmrf(dir) end)

  local aug = {crop = 4, flip = true, cutout = 8, mean = data.stats.cifar10.mean,
               std = data.stats.cifar10.std}

  local function epoch_batches(loader, e)
    loader:epoch(e)
    local xs, ys = {}, {}
    for x, y in loader:iter() do xs[#xs + 1] = x; ys[#ys + 1] = y end
    return xs, ys
  end

  it("yields the right shapes and counts, each sample once per epoch", function()
    local loader = data.loader(ds, {batch_size = 4, seed = 0})
    assert.equal(4, #loader)
    assert.equal(15, loader:size())
    local xs, ys = epoch_batches(loader, 1)
    assert.equal(4, #xs)
    assert.is_true(shape_is(xs[1], {4, 3, 32, 32}))
    assert.is_true(shape_is(xs[4], {3, 3, 32, 32}))
    assert.is_true(shape_is(ys[4], {3}))
    -- unaugmented: each image is one of the dataset's, each exactly once
    local seen, record_of = {}, {}
    for r = 0, 14 do record_of[pix(r, 0, 0, 0)] = r end  -- distinct for these 15
    for b = 1, #xs do
      local t = xs[b]:totable()
      for k = 1, #t do
        local r = record_of[math.floor(t[k][1][1][1] * 255 + 0.5)]
        assert.equal(r % 10, ys[b]:totable()[k])
        assert.is_nil(seen[r])
        seen[r] = true
      end
    end
    for r = 0, 14 do assert.is_true(seen[r]) end
    assert.is_nil(loader:next())                    -- end of epoch
    local dl = data.loader(ds, {batch_size = 4, drop_last = true})
    assert.equal(3, #dl)
    local lim = data.loader(ds, {batch_size = 4, limit = 5, shuffle = false})
    assert.equal(2, #lim)
  end)

  it("gives the same batches for the same seed and different ones for another", function()
    local a = data.loader(ds, {batch_size = 4, seed = 11, augment = aug})
    local b = data.loader(ds, {batch_size = 4, seed = 11, augment = aug, prefetch = 0})
    local c = data.loader(ds, {batch_size = 4, seed = 12, augment = aug})
    local xa, ya = epoch_batches(a, 2)
    local xb, yb = epoch_batches(b, 2)
    local xc = epoch_batches(c, 2)
    local differs = false
    for i = 1, #xa do
      assert.is_true(same(xa[i], xb[i]))
      assert.is_true(same(ya[i], yb[i]))
      differs = differs or not same(xa[i], xc[i])
    end
    assert.is_true(differs)
    -- another epoch reshuffles; the same epoch again repeats exactly
    local _, y3 = epoch_batches(a, 3)
    local _, y2 = epoch_batches(a, 2)
    local same_order = true
    for i = 1, #y3 do
      assert.is_true(same(y2[i], ya[i]))
      same_order = same_order and same(y3[i], ya[i])
    end
    assert.is_false(same_order)
  end)

  it("resumes from state() to the identical next batch", function()
    local opts = {batch_size = 2, seed = 5, augment = aug, prefetch = 3}
    local a = data.loader(ds, opts)
    a:epoch(4)
    a:next(); a:next(); a:next()
    local st = a:state()
    assert.same({epoch = 4, pos = 3}, st)
    local xa, ya = a:next()
    for _, pf in ipairs{0, 3} do
      opts.prefetch = pf
      local b = data.loader(ds, opts)
      b:next()                                  -- somewhere else first
      b:set_state(st)
      local xb, yb = b:next()
      assert.is_true(same(xa, xb))
      assert.is_true(same(ya, yb))
    end
    assert.is_true(same(xa, (a:batch(4, 4))))
    assert.has_error(function() a:set_state{epoch = 0, pos = 99} end)
    assert.has_error(function() a:set_state{epoch = 0} end)
  end)

  it("moves on to the next epoch when iter() starts after the end", function()
    local l = data.loader(ds, {batch_size = 8, seed = 1})
    l:epoch(7)
    for _ in l:iter() do end
    assert.same({epoch = 7, pos = 2}, l:state())
    local n = 0
    for _ in l:iter() do n = n + 1 end
    assert.equal(2, n)
    assert.same({epoch = 8, pos = 2}, l:state())
    assert.is_nil(l:next())
    assert.is_not_nil(l:next(true))             -- wrap: first batch of epoch 9
    assert.same({epoch = 9, pos = 1}, l:state())
  end)

  it("flips horizontally when told to (p = 1)", function()
    local l = data.loader(ds, {batch_size = 1, shuffle = false, augment = {flip = 1}})
    local x = l:next():totable()[1]
    local img = ds:get(1):totable()
    for c = 1, 3 do
      for y = 1, 32, 7 do
        for xx = 1, 32 do assert.equal(img[c][y][33 - xx], x[c][y][xx]) end
      end
    end
    local n = data.loader(ds, {batch_size = 1, shuffle = false, augment = {flip = false}})
    assert.is_true(same(n:next():reshape{3, 32, 32}, (ds:get(1))))
  end)

  it("crops with zero padding: a shift of the image by at most the padding", function()
    local l = data.loader(ds, {batch_size = 15, shuffle = false, seed = 2, augment = {crop = 3}})
    local xs = l:next():totable()
    local shifted = 0
    for k = 1, 15 do
      local img, out = ds:get(k):totable(), xs[k]
      local found
      for di = -3, 3 do
        for dj = -3, 3 do
          local ok = true
          for c = 1, 3 do
            for y = 1, 32 do
              for x = 1, 32 do
                local sy, sx = y + di, x + dj
                local want = (sy >= 1 and sy <= 32 and sx >= 1 and sx <= 32) and img[c][sy][sx] or 0
                if out[c][y][x] ~= want then ok = false; break end
              end
              if not ok then break end
            end
            if not ok then break end
          end
          if ok then found = {di, dj} end
        end
      end
      assert.is_not_nil(found, "sample " .. k .. " is not a shifted copy")
      if found[1] ~= 0 or found[2] ~= 0 then shifted = shifted + 1 end
    end
    assert.is_true(shifted >= 10)
  end)

  it("cuts out one square (clipped), the same in every channel", function()
    local l = data.loader(ds, {batch_size = 15, seed = 9, augment = {cutout = 8}})
    local xs = l:next():totable()
    for k = 1, 15 do
      local y1, y2, x1, x2, zeros = 99, 0, 99, 0, 0
      for y = 1, 32 do
        for x = 1, 32 do
          local z = xs[k][1][y][x] == 0
          assert.equal(z, xs[k][2][y][x] == 0)
          assert.equal(z, xs[k][3][y][x] == 0)
          if z then
            zeros = zeros + 1
            y1, y2 = math.min(y1, y), math.max(y2, y)
            x1, x2 = math.min(x1, x), math.max(x2, x)
          end
        end
      end
      -- a filled rectangle, 4..8 on a side (centre anywhere in the image)
      assert.equal((y2 - y1 + 1) * (x2 - x1 + 1), zeros)
      assert.is_true(y2 - y1 + 1 >= 4 and y2 - y1 + 1 <= 8)
      assert.is_true(x2 - x1 + 1 >= 4 and x2 - x1 + 1 <= 8)
    end
  end)

  it("normalises with the given per-channel mean and std", function()
    local mean, std = {0.5, 0.4, 0.3}, {0.2, 0.25, 0.5}
    local l = data.loader(ds, {batch_size = 1, shuffle = false, augment = {mean = mean, std = std}})
    local x = l:next():totable()[1]
    local img = ds:get(1):totable()
    for c = 1, 3 do
      for _, p in ipairs{{1, 1}, {7, 30}, {32, 32}} do
        local y, xx = p[1], p[2]
        assert.near((img[c][y][xx] - mean[c]) / std[c], x[c][y][xx], 1e-5)
      end
    end
  end)

  it("raises on bad options", function()
    assert.has_error(function() data.loader(ds, {batch_size = 0}) end)
    assert.has_error(function() data.loader(ds, {batchsize = 4}) end)
    assert.has_error(function() data.loader(ds, {augment = {std = {0, 1, 1}}}) end)
    assert.has_error(function() data.loader(ds, {augment = {mean = {0.5, 0.5}}}) end)
    assert.has_error(function() data.loader(ds, {augment = {flip = 2}}) end)
    assert.has_error(function() data.loader(ds, {augment = {crop = 40}}) end)
    assert.has_error(function() data.loader(ds, {augment = {rotate = 1}}) end)
    assert.has_error(function() data.loader(ds, {limit = -1}) end)
    assert.has_error(function() data.loader({}, {}) end)
    assert.has_error(function() ds:subset{0} end)
    assert.has_error(function() ds:subset(3, 99) end)
    local l = data.loader(ds, {batch_size = 4})
    l:close()
    assert.has_error(function() l:next() end, "next: loader used after close")
  end)
end)
