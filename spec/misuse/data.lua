--- Misuse cases: nasrt.data, datasets and loaders (see spec/misuse.lua).
-- A six-image Fashion-MNIST look-alike is written to a temporary folder.
local nasrt = require "nasrt"
local data = nasrt.data

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p '" .. dir .. "'"))
local function write(name, s)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(s)
  f:close()
end
write("train-images-idx3-ubyte", string.pack(">I4I4I4I4", 0x803, 6, 28, 28) .. string.rep("\7", 6 * 784))
write("train-labels-idx1-ubyte", string.pack(">I4I4", 0x801, 6) .. "\0\1\2\3\4\5")

local ds = assert(data.fashion_mnist({root = dir}))
local dsc = assert(data.fashion_mnist({root = dir})); dsc:close()
local ld = data.loader(ds, {batch_size = 2, prefetch = 0})
local ldc = data.loader(ds, {batch_size = 2}); ldc:close()
local nan = 0 / 0
local dmt, lmt = getmetatable(ds), getmetatable(ld)

return {
  -- datasets --------------------------------------------------------------
  {"data.fashion_mnist", "options a string", function() return data.fashion_mnist("train") end, "fashion_mnist: options must be a table"},
  {"data.fashion_mnist", "unknown option", function() return data.fashion_mnist({splt = "train"}) end, "fashion_mnist: unknown option 'splt'"},
  {"data.fashion_mnist", "split 'valid'", function() return data.fashion_mnist({root = dir, split = "valid"}) end, "fashion_mnist: option 'split' must be \"train\" or \"test\""},
  {"data.fashion_mnist", "split a number", function() return data.fashion_mnist({split = 1}) end, "fashion_mnist: option 'split' must be a string"},
  {"data.fashion_mnist", "root a table", function() return data.fashion_mnist({root = {}}) end, "fashion_mnist: option 'root' must be a string"},
  {"data.cifar10", "no root", function() return data.cifar10({split = "train", root = nil}) end, "cifar10: option 'root'", "is required"},
  {"data.cifar10", "unknown option", function() return data.cifar10({root = dir, fine = true}) end, "cifar10: unknown option 'fine'"},
  {"data.cifar10", "split 'val'", function() return data.cifar10({root = dir, split = "val"}) end, "cifar10: option 'split'"},
  {"data.cifar10", "options a number", function() return data.cifar10(10) end, "cifar10: options must be a table"},
  {"data.cifar100", "root a number", function() return data.cifar100({root = 100}) end, "cifar100: option 'root' must be a string"},
  {"data.cifar100", "unknown option", function() return data.cifar100({root = dir, coarse = true}) end, "cifar100: unknown option 'coarse'"},
  {"data.cifar100", "no root", function() return data.cifar100({}) end, "cifar100: option 'root'", "is required"},

  -- split -----------------------------------------------------------------
  {"data.split", "not a dataset", function() return data.split({1, 2, 3}) end, "split: argument #1: expected a dataset, got table"},
  {"data.split", "closed dataset", function() return data.split(dsc) end, "split: argument #1: dataset used after close"},
  {"data.split", "fraction 0", function() return data.split(ds, {fraction = 0}) end, "split: option 'fraction' must be in (0, 1)"},
  {"data.split", "fraction 1.5", function() return data.split(ds, {fraction = 1.5}) end, "split: option 'fraction' must be in (0, 1)"},
  {"data.split", "NaN fraction", function() return data.split(ds, {fraction = nan}) end, "split: option 'fraction' must be in (0, 1)"},
  {"data.split", "seed a string", function() return data.split(ds, {seed = "1"}) end, "split: option 'seed' must be an integer"},
  {"data.split", "shuffle a number", function() return data.split(ds, {shuffle = 1}) end, "split: option 'shuffle' must be a boolean"},
  {"data.split", "unknown option", function() return data.split(ds, {ratio = 0.5}) end, "split: unknown option 'ratio'"},

  -- loader ----------------------------------------------------------------
  {"data.loader", "not a dataset", function() return data.loader(nil) end, "loader: argument #1: expected a dataset, got nil"},
  {"data.loader", "a loader for a dataset", function() return data.loader(ld) end, "loader: argument #1: expected a dataset"},
  {"data.loader", "closed dataset", function() return data.loader(dsc) end, "loader: argument #1: dataset used after close"},
  {"data.loader", "batch size 0", function() return data.loader(ds, {batch_size = 0}) end, "loader: option 'batch_size' must be in 1..16777216, got 0"},
  {"data.loader", "batch size 2^40", function() return data.loader(ds, {batch_size = 2 ^ 40}) end, "loader: option 'batch_size' must be in"},
  {"data.loader", "fractional batch size", function() return data.loader(ds, {batch_size = 1.5}) end, "loader: option 'batch_size' must be an integer"},
  {"data.loader", "NaN batch size", function() return data.loader(ds, {batch_size = nan}) end, "loader: option 'batch_size' must be an integer"},
  {"data.loader", "prefetch -1", function() return data.loader(ds, {prefetch = -1}) end, "loader: option 'prefetch' must be in 0..64"},
  {"data.loader", "limit -1", function() return data.loader(ds, {limit = -1}) end, "loader: option 'limit' must be >= 0"},
  {"data.loader", "unknown option", function() return data.loader(ds, {batchsize = 2}) end, "loader: unknown option 'batchsize'"},
  {"data.loader", "drop_last a string", function() return data.loader(ds, {drop_last = "yes"}) end, "loader: option 'drop_last' must be a boolean"},
  {"data.loader", "augment a string", function() return data.loader(ds, {augment = "flip"}) end, "loader: option 'augment' must be a table"},
  {"data.loader", "unknown augment option", function() return data.loader(ds, {augment = {rotate = 10}}) end, "loader: unknown option 'rotate'"},
  {"data.loader", "crop padding larger than the image", function() return data.loader(ds, {augment = {crop = 100}}) end, "loader: crop padding 100 is larger than the 28x28 image"},
  {"data.loader", "negative padding", function() return data.loader(ds, {augment = {padding = -4}}) end, "loader: augment option 'padding' must be >= 0"},
  {"data.loader", "crop and padding disagree", function() return data.loader(ds, {augment = {crop = 2, padding = 4}}) end, "loader: augment options crop=2 and padding=4 disagree"},
  {"data.loader", "crop a string", function() return data.loader(ds, {augment = {crop = "4"}}) end, "loader: augment option 'crop' must be a boolean or the padding"},
  {"data.loader", "flip 2", function() return data.loader(ds, {augment = {flip = 2}}) end, "loader: augment option 'flip' (a probability) must be in [0, 1]"},
  {"data.loader", "flip a string", function() return data.loader(ds, {augment = {flip = "h"}}) end, "loader: augment option 'flip' must be a boolean or a probability"},
  {"data.loader", "negative cutout", function() return data.loader(ds, {augment = {cutout = -1}}) end, "loader: augment option 'cutout' must be >= 0"},
  {"data.loader", "std 0", function() return data.loader(ds, {augment = {std = 0}}) end, "loader: augment option 'std'[1] must be positive"},
  {"data.loader", "NaN std", function() return data.loader(ds, {augment = {std = nan}}) end, "loader: augment option 'std'[1] must be positive"},
  {"data.loader", "3 means for 1 channel", function() return data.loader(ds, {augment = {mean = {0.1, 0.2, 0.3}}}) end, "loader: augment option 'mean'", "1 channel"},
  {"data.loader", "mean a string", function() return data.loader(ds, {augment = {mean = "0.5"}}) end, "loader: augment option 'mean' must be a number or a table of numbers"},

  -- dataset methods -------------------------------------------------------
  {"Dataset.get", "index 0", function() return ds:get(0) end, "get: index 0 out of range 1..6"},
  {"Dataset.get", "index past the end", function() return ds:get(7) end, "get: index 7 out of range 1..6"},
  {"Dataset.get", "a string index", function() return ds:get("one") end, "get: index must be an integer, got string"},
  {"Dataset.get", "NaN index", function() return ds:get(nan) end, "get: index must be an integer, got a fractional number"},
  {"Dataset.get", "closed", function() return dsc:get(1) end, "get: argument #1: dataset used after close"},
  {"Dataset.get", "a loader as self", function() return ds.get(ld, 1) end, "get: argument #1: expected a dataset"},
  {"Dataset.shape", "closed", function() return dsc:shape() end, "shape: argument #1: dataset used after close"},
  {"Dataset.classes", "closed", function() return dsc:classes() end, "classes: argument #1: dataset used after close"},
  {"Dataset.labels", "closed", function() return dsc:labels() end, "labels: argument #1: dataset used after close"},
  {"Dataset.indices", "a tensor as self", function() return ds.indices(nasrt.zeros({6})) end, "indices: argument #1: expected a dataset"},
  {"Dataset.stats", "closed", function() return dsc:stats() end, "stats: argument #1: dataset used after close"},
  {"Dataset.name", "closed", function() return dsc:name() end, "name: argument #1: dataset used after close"},
  {"Dataset.subset", "index 0", function() return ds:subset({1, 0}) end, "subset: entry 2: index 0 out of range 1..6"},
  {"Dataset.subset", "fractional index", function() return ds:subset({1.5}) end, "subset: entry 1 is fractional"},
  {"Dataset.subset", "range past the end", function() return ds:subset(1, 7) end, "subset: range 1..7 out of range 1..6"},
  {"Dataset.subset", "reversed range", function() return ds:subset(4, 2) end, "subset: range 4..2 out of range"},
  {"Dataset.subset", "a string", function() return ds:subset("1-3") end, "subset: expected a table of indices or a range"},
  {"Dataset.subset", "no last index", function() return ds:subset(1) end, "subset: last index must be an integer, got no value"},
  {"Dataset.split", "fraction 1", function() return ds:split({fraction = 1}) end, "split: option 'fraction' must be in (0, 1)"},
  {"Dataset.close", "a number as self", function() return ds.close(5) end, "close: argument #1: expected a dataset, got number"},
  {"Dataset.__len", "closed", function() return #dsc end, "#dataset: argument #1: dataset used after close"},
  {"Dataset.__tostring", "a table as self", function() return dmt.__tostring({}) end, "tostring: argument #1: expected a dataset"},

  -- loader methods --------------------------------------------------------
  {"Loader.next", "wrap a string", function() return ld:next("yes") end, "next", "boolean expected"},
  {"Loader.next", "closed", function() return ldc:next() end, "next: loader used after close"},
  {"Loader.next", "a dataset as self", function() return ld.next(ds) end, "next: argument #1: expected a loader"},
  {"Loader.iter", "closed", function() return ldc:iter() end, "iter: loader used after close"},
  {"Loader.epoch", "negative", function() return ld:epoch(-1) end, "epoch: epoch must be >= 0, got -1"},
  {"Loader.epoch", "a string", function() return ld:epoch("two") end, "epoch: epoch must be an integer, got string"},
  {"Loader.epoch", "fractional", function() return ld:epoch(1.5) end, "epoch: epoch must be an integer, got a fractional number"},
  {"Loader.state", "closed", function() return ldc:state() end, "state: loader used after close"},
  {"Loader.set_state", "nil", function() return ld:set_state(nil) end, "set_state: expected a state table {epoch=, pos=}, got nil"},
  {"Loader.set_state", "negative epoch", function() return ld:set_state({epoch = -1, pos = 0}) end, "set_state: epoch must be >= 0"},
  {"Loader.set_state", "position past the epoch", function() return ld:set_state({epoch = 0, pos = 99}) end, "set_state: position 99 out of range 0..3"},
  {"Loader.set_state", "no position", function() return ld:set_state({epoch = 0}) end, "set_state: field 'pos' must be an integer, got nil"},
  {"Loader.set_state", "unknown field", function() return ld:set_state({epoch = 0, pos = 0, seed = 1}) end, "set_state: unknown option 'seed'"},
  {"Loader.batch", "index 0", function() return ld:batch(0) end, "batch: index 0 out of range 1..3"},
  {"Loader.batch", "index past the end", function() return ld:batch(4) end, "batch: index 4 out of range 1..3"},
  {"Loader.batch", "negative epoch", function() return ld:batch(1, -1) end, "batch", "epoch must be >= 0, got -1"},
  {"Loader.batch", "a string epoch", function() return ld:batch(1, "next") end, "batch: epoch must be an integer, got string"},
  {"Loader.batch", "no index", function() return ld:batch() end, "batch: batch index must be an integer, got no value"},
  {"Loader.size", "closed", function() return ldc:size() end, "size: loader used after close"},
  {"Loader.batch_size", "closed", function() return ldc:batch_size() end, "batch_size: loader used after close"},
  {"Loader.close", "a dataset as self", function() return ld.close(ds) end, "close: argument #1: expected a loader, got nasrt.Dataset"},
  {"Loader.__len", "closed", function() return #ldc end, "#loader: loader used after close"},
  {"Loader.__tostring", "a number as self", function() return lmt.__tostring(3) end, "tostring: argument #1: expected a loader"},
}
