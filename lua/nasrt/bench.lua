--- nasrt.bench: tabulated NAS benchmarks.  NAS-Bench-201 (NATS-Bench
-- topology space): 15,625 cells, 5 ops on the 6 edges of a 4-node cell.
--
-- Architecture strings are NAS-Bench-201's `|op~j|+|op~j|op~j|+|op~j|op~j|op~j|`:
-- node i (1..3) lists its inputs j = 0..i-1, so the edges come in the
-- official order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.  Indices are the
-- official 0-based architecture indices (row numbers of the tables).
--
-- The tables (data/nb201, see its README) are parsed lazily on first use.
-- This module needs only the Lua standard library (no nasrt.nn).
-- @module nasrt.bench
local M = {}

--- The five NAS-Bench-201 operations, in the benchmark's own order.
M.NB201_OPS = {"none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"}
-- The six edges as {to, from}, in the official (string) order.
M.NB201_EDGES = {{1, 0}, {2, 0}, {2, 1}, {3, 0}, {3, 1}, {3, 2}}
-- The cell as a search space for nasrt.sampler: 6 genes of 5 ops.
M.NB201_CHOICES = {5, 5, 5, 5, 5, 5}

local OP_ID = {}
for i, op in ipairs(M.NB201_OPS) do OP_ID[op] = i end

-- Parses an arch string; returns edges {{op, j}, ...} or nil, reason.
local function parse(str)
  if type(str) ~= "string" then return nil, "expected an arch string, got " .. type(str) end
  local nodes, pos = {}, 1
  while true do
    local plus = str:find("+", pos, true)
    nodes[#nodes + 1] = str:sub(pos, (plus or 0) - 1)
    if not plus then break end
    pos = plus + 1
    if #nodes > 3 then break end
  end
  if #nodes ~= 3 then
    return nil, ("expected 3 nodes separated by '+', got %d"):format(#nodes)
  end
  local edges = {}
  for i, node in ipairs(nodes) do
    if node:sub(1, 1) ~= "|" or node:sub(-1) ~= "|" or #node < 2 then
      return nil, ("node %d '%s' must be |op~j|...|"):format(i, node)
    end
    local k = 0
    for tok in node:sub(2, -2):gmatch("([^|]*)|?") do
      if k == i and tok == "" then break end -- gmatch's trailing empty match
      local op, j = tok:match("^([%w_]+)~(%d+)$")
      if not op then return nil, ("node %d: bad entry '%s' (expected op~j)"):format(i, tok) end
      if not OP_ID[op] then
        return nil, ("node %d: unknown op '%s' (expected one of %s)"):format(i, op,
          table.concat(M.NB201_OPS, ", "))
      end
      if tonumber(j) ~= k then
        return nil, ("node %d: entry %d is '%s', expected input ~%d"):format(i, k + 1, tok, k)
      end
      k = k + 1
      edges[#edges + 1] = {op, k - 1}
      if k > i then break end
    end
    if k ~= i then
      return nil, ("node %d has %d inputs, expected %d"):format(i, k, i)
    end
    -- nothing may follow the last expected entry
    local want = {}
    for e = #edges - i + 1, #edges do want[#want + 1] = edges[e][1] .. "~" .. edges[e][2] end
    if node ~= "|" .. table.concat(want, "|") .. "|" then
      return nil, ("node %d '%s' has extra entries"):format(i, node)
    end
  end
  return edges
end

local function fail(fn, str, why, level)
  error(("%s: bad NAS-Bench-201 arch string %q: %s"):format(fn, tostring(str), why), level + 1)
end

--- Parses an arch string into its edges.
-- @tparam string str `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`
-- @treturn table `{{op, j}, ...}` six edges in official order (1<-0, 2<-0,
--   2<-1, 3<-0, 3<-1, 3<-2); j is the input node
-- @raise "parse_nb201: ..." on a malformed string
-- @usage nasrt.bench.parse_nb201("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|")
function M.parse_nb201(str)
  local edges, why = parse(str)
  if not edges then fail("parse_nb201", str, why, 2) end
  return edges
end

local function to_string(ops, fn)
  if type(ops) ~= "table" or #ops ~= 6 then
    error(("%s: expected 6 edges ({op, j} pairs or op names), got %s"):format(fn,
      type(ops) == "table" and (#ops .. " entries") or type(ops)), 3)
  end
  local parts = {}
  for e = 1, 6 do
    local x, op, j = ops[e], nil, M.NB201_EDGES[e][2]
    if type(x) == "string" then op = x
    elseif type(x) == "table" then
      op = x[1]
      if x[2] ~= nil and x[2] ~= j then
        error(("%s: edge %d must come from node %d, got %s"):format(fn, e, j, tostring(x[2])), 3)
      end
    end
    if not OP_ID[op] then
      error(("%s: edge %d: unknown op %s (expected one of %s)"):format(fn, e, tostring(op),
        table.concat(M.NB201_OPS, ", ")), 3)
    end
    parts[e] = op .. "~" .. j
  end
  return ("|%s|+|%s|%s|+|%s|%s|%s|"):format(table.unpack(parts))
end

--- Inverse of parse_nb201.
-- @tparam table ops six edges in official order: `{op, j}` pairs (j is
--   checked) or plain op names
-- @treturn string
-- @raise "nb201_string: ..." on a wrong count, op or input node
function M.nb201_string(ops) return to_string(ops, "nb201_string") end

--- An arch string as sampler genes: 6 indices into NB201_OPS (1-based).
-- @tparam string str
-- @treturn table
function M.nb201_encode(str)
  local edges, why = parse(str)
  if not edges then fail("nb201_encode", str, why, 2) end
  local g = {}
  for e = 1, 6 do g[e] = OP_ID[edges[e][1]] end
  return g
end

--- Sampler genes (6 indices into NB201_OPS) as an arch string.
-- @tparam table genes
-- @treturn string
function M.nb201_decode(genes)
  if type(genes) ~= "table" or #genes ~= 6 then
    error("nb201_decode: expected 6 op indices (1..5), got " .. type(genes), 2)
  end
  local ops = {}
  for e = 1, 6 do
    ops[e] = M.NB201_OPS[genes[e]]
    if not ops[e] then
      error(("nb201_decode: gene %d = %s is not an op index 1..5"):format(e, tostring(genes[e])), 2)
    end
  end
  return to_string(ops, "nb201_decode")
end

---------------------------------------------------------------------------
-- Table loading

local function default_dir()
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) == "@" then
    local path = src:sub(2)
    if path:match("^lua[/\\]nasrt[/\\]bench%.lua$") then return "data/nb201" end
    -- installed (make install): PREFIX/share/lua/5.4/nasrt/bench.lua ->
    -- PREFIX/share/nasrt/data/nb201
    local prefix = path:match("^(.*)[/\\]share[/\\]lua[/\\]5%.4[/\\]nasrt[/\\]bench%.lua$")
    if prefix then return prefix .. "/share/nasrt/data/nb201" end
    -- installed (make install): PREFIX/share/lua/5.4/nasrt/bench.lua ->
    -- PREFIX/share/nasrt/data/nb201
    local prefix = path:match("^(.*)[/\\]share[/\\]lua[/\\]5%.4[/\\]nasrt[/\\]bench%.lua$")
    if prefix then return prefix .. "/share/nasrt/data/nb201" end
    local root = path:match("^(.*)[/\\]lua[/\\]nasrt[/\\]bench%.lua$")
    if root then return root .. "/data/nb201" end
  end
  return "data/nb201"
end

local FILES = {
  acc200 = "nats_tss_test_acc_200ep.csv",
  hp12 = "nb201_minibench_hp12.csv",
  naslib = "naslib_zc_nasbench201_subset725.json",
  summary = "tss_3arch_summary.json",
}

local function slurp(path)
  local f, err = io.open(path, "rb")
  if not f then error("nb201: cannot read " .. tostring(err), 0) end
  local s = f:read("a")
  f:close()
  return s
end

local function num(s)
  if s == "Infinity" then return math.huge end
  if s == "-Infinity" then return -math.huge end
  if s == "NaN" then return 0 / 0 end
  return tonumber(s)
end

-- 200-epoch test accuracies: row i (0-based) = index i
local function load_acc200(self)
  local path = self.dir .. "/" .. FILES.acc200
  local text = slurp(path)
  local nl = text:find("\n", 1, true)
  if not nl or not text:sub(1, nl):find("^CIFAR10TestAccuracy200Epochs,CIFAR100TestAccuracy200Epochs,ImageNetTestAccuracy200Epochs,ArchitectureString") then
    error("nb201: " .. path .. ": unexpected header", 0)
  end
  local arch, c10, c100, img, index = {}, {}, {}, {}, {}
  local n = 0
  for a, b, c, s in text:gmatch("\n([^,\r\n]+),([^,\r\n]+),([^,\r\n]+),(|[^,\r\n]+|),[^\n]*", nl) do
    n = n + 1
    c10[n], c100[n], img[n], arch[n] = tonumber(a), tonumber(b), tonumber(c), s
    if not (c10[n] and c100[n] and img[n]) then
      error(("nb201: %s: row %d is malformed"):format(path, n), 0)
    end
    index[s] = n - 1
  end
  local rows = select(2, text:gsub("\n[^\n]", ""))
  if rows ~= n or n == 0 then
    error(("nb201: %s: %d of %d rows could be read (truncated or corrupt?)"):format(path, n, rows), 0)
  end
  self._arch, self._index, self._n = arch, index, n
  self._test = {cifar10 = c10, cifar100 = c100, imagenet16 = img}
end

-- 12-epoch validation/test accuracies (mini-bench)
local function load_hp12(self)
  local path = self.dir .. "/" .. FILES.hp12
  local text = slurp(path)
  if not text:find("^arch,cellstr,cifar10%-test,cifar10%-val,cifar100%-test,cifar100%-val,imagenet%-test,imagenet%-val") then
    error("nb201: " .. path .. ": unexpected header", 0)
  end
  local cols = {}
  for k = 1, 6 do cols[k] = {} end
  local n = 0
  for i, s, a, b, c, d, e, f in text:gmatch("\n(%d+),([^,\r\n]+),([^,\r\n]+),([^,\r\n]+),([^,\r\n]+),([^,\r\n]+),([^,\r\n]+),([^,\r\n]+)") do
    local idx = tonumber(i)
    if idx ~= n or s ~= self._arch[idx + 1] then
      error(("nb201: %s: row %d does not match the 200-epoch table (index %s, %s)"):format(path, n, i, s), 0)
    end
    n = n + 1
    local v = {a, b, c, d, e, f}
    for k = 1, 6 do cols[k][n] = tonumber(v[k]) end
  end
  if n ~= self._n then
    error(("nb201: %s: %d rows, the 200-epoch table has %d"):format(path, n, self._n), 0)
  end
  self._hp12 = {
    cifar10 = {test12 = cols[1], val12 = cols[2]},
    cifar100 = {test12 = cols[3], val12 = cols[4]},
    imagenet16 = {test12 = cols[5], val12 = cols[6]},
  }
end

-- NASLib's tuple (ops in OP_NAMES order, edges (1,2),(1,3),(1,4),(2,3),(2,4),(3,4)
-- in its 1-based node numbering) -> official string
local NASLIB_OPS = {"skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3"}
local NASLIB_EDGE = {1, 2, 4, 3, 5, 6} -- official edge e is tuple entry NASLIB_EDGE[e]
local DATASETS = {cifar10 = "cifar10", cifar100 = "cifar100", ["ImageNet16-120"] = "imagenet16"}

-- params/FLOPs (and NASLib's zero-cost scores) where known
local function load_costs(self)
  local costs = {cifar10 = {}, cifar100 = {}, imagenet16 = {}}
  local f = io.open(self.dir .. "/" .. FILES.naslib, "rb")
  if f then
    local text = f:read("a")
    f:close()
    for ds, body in text:gmatch('"([%w%-]+)": (%b{})') do
      local key = DATASETS[ds]
      if key then
        for t1, t2, t3, t4, t5, t6, entry in body:gmatch('"%((%d), (%d), (%d), (%d), (%d), (%d)%)": (%b{})') do
          local t = {tonumber(t1), tonumber(t2), tonumber(t3), tonumber(t4), tonumber(t5), tonumber(t6)}
          local ops = {}
          for e = 1, 6 do ops[e] = NASLIB_OPS[t[NASLIB_EDGE[e]] + 1] end
          local idx = self._index[to_string(ops, "nb201")]
          if idx then
            local rec = {zc = {}, source = "naslib"}
            for name, v in entry:gmatch('"([%w_]+)": {"score": ([^,}]+)') do
              if name == "params" then rec.params = num(v)
              elseif name == "flops" then rec.flops = num(v)
              else rec.zc[name] = num(v) end
            end
            rec.naslib_val = num(entry:match('"val_accuracy": ([^,}]+)'))
            costs[key][idx] = rec
          end
        end
      end
    end
  end
  f = io.open(self.dir .. "/" .. FILES.summary, "rb")
  if f then
    local text = f:read("a")
    f:close()
    for _, body in text:gmatch('"(%d+)": (%b{})') do
      local idx = tonumber(body:match('"arch_index": (%d+)'))
      if idx then
        for ds, p, fl in body:gmatch('"dataset": "([^"]+)",%s*"seed": %d+,%s*"epochs_planned": %d+,%s*"params_MB": ([^,%s]+),%s*"flops_M": ([^,%s]+)') do
          local key = DATASETS[ds]
          if key then
            local rec = costs[key][idx] or {}
            -- the official NATS-Bench record wins over NASLib's count
            rec.params, rec.flops, rec.source = num(p), num(fl), "nats"
            costs[key][idx] = rec
          end
        end
      end
    end
  end
  self._costs = costs
end

local NB201 = {}
NB201.__index = NB201

local function ensure(self)
  if not self._arch then load_acc200(self) end
end

local function check_index(self, i, fn)
  ensure(self)
  if math.type(i) ~= "integer" then
    if type(i) == "number" and i == math.floor(i) then i = math.tointeger(i)
    else error(("%s: index must be an integer 0..%d, got %s"):format(fn, self._n - 1, tostring(i)), 3) end
  end
  if i < 0 or i >= self._n then
    error(("%s: index %d out of range 0..%d (official 0-based indices)"):format(fn, i, self._n - 1), 3)
  end
  return i
end

local function lookup(self, str, fn)
  local edges, why = parse(str)
  if not edges then fail(fn, str, why, 3) end
  ensure(self)
  return self._index[to_string(edges, fn)]
end

--- Number of architectures (15625).
function NB201:size()
  ensure(self)
  return self._n
end

--- The arch string of an official index.
-- @tparam int index 0-based
-- @treturn string
function NB201:arch(index)
  local i = check_index(self, index, "nb201:arch")
  return self._arch[i + 1]
end

--- The official index of an arch string (validated).
-- @tparam string str
-- @treturn int 0-based index
-- @raise "nb201:index: ..." on a malformed string
function NB201:index(str)
  return lookup(self, str, "nb201:index")
end

--- Everything known about one cell.
-- @tparam int|string which official 0-based index or arch string
-- @treturn table `{index=, arch=, cifar10={test=, val12=, test12=, params=?,
--   flops=?, cost_source=?, naslib_val=?, zc=?}, cifar100={...},
--   imagenet16={...}, params=?, flops=?}`.  test: mean test accuracy (%)
--   after the 200-epoch schedule; val12/test12: after the 12-epoch schedule;
--   params (M) and flops (M) where known (top level: CIFAR-10), from the
--   official NATS-Bench records of cells 0, 11 and 284 (cost_source "nats")
--   or NASLib's 725-cell subset ("naslib": NASLib's FLOPs count is a little
--   higher than the official one, its params agree); zc: NASLib's zero-cost
--   proxy scores.
function NB201:query(which)
  local i
  if type(which) == "string" then
    i = lookup(self, which, "nb201:query")
    if not i then error(("nb201:query: %q is not in the table"):format(which), 2) end
  else
    i = check_index(self, which, "nb201:query")
  end
  if not self._hp12 then load_hp12(self) end
  if not self._costs then load_costs(self) end
  local r = {index = i, arch = self._arch[i + 1]}
  for _, ds in ipairs {"cifar10", "cifar100", "imagenet16"} do
    local h = self._hp12[ds]
    local e = {test = self._test[ds][i + 1], val12 = h.val12[i + 1], test12 = h.test12[i + 1]}
    local c = self._costs[ds][i]
    if c then
      e.params, e.flops, e.cost_source, e.naslib_val = c.params, c.flops, c.source, c.naslib_val
      if c.zc and next(c.zc) then
        e.zc = {}
        for k, v in pairs(c.zc) do e.zc[k] = v end
      end
    end
    r[ds] = e
  end
  r.params, r.flops = r.cifar10.params, r.cifar10.flops
  return r
end

--- A uniformly random cell drawn with a sampler's generator.
-- @tparam sampler rng_sampler any nasrt.sampler (its :randint is used)
-- @treturn int index
-- @treturn string arch
function NB201:random(rng_sampler)
  if type(rng_sampler) ~= "userdata" and type(rng_sampler) ~= "table" or not rng_sampler.randint then
    error("nb201:random: argument #1 must be a sampler (its generator is used), got " .. type(rng_sampler), 2)
  end
  ensure(self)
  local i = rng_sampler:randint(self._n) - 1
  return i, self._arch[i + 1]
end

function NB201:__tostring()
  return ("nasrt.bench.nb201(%s)"):format(self.dir)
end

local cache = {}

--- Opens the NAS-Bench-201 tables (parsed lazily, shared between calls).
-- @tparam[opt] string dir folder with the tables (default: the project's data/nb201)
-- @return the benchmark object, or nil, message when the tables are missing
-- @usage local b = nasrt.bench.nb201(); print(b:query(13714).cifar10.test)
function M.nb201(dir)
  if dir ~= nil and type(dir) ~= "string" then
    error("nb201: dir must be a string, got " .. type(dir), 2)
  end
  dir = dir or default_dir()
  if cache[dir] then return cache[dir] end
  for _, name in ipairs {FILES.acc200, FILES.hp12} do
    local f = io.open(dir .. "/" .. name, "rb")
    if not f then return nil, ("nb201: %s/%s not found"):format(dir, name) end
    f:close()
  end
  local self = setmetatable({dir = dir}, NB201)
  cache[dir] = self
  return self
end

return M
