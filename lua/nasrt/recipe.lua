--- What every recipe shares: options, the run directory, the JSON-lines
-- log, progress with ETA, checkpoints and graceful Ctrl-C.
--
-- A recipe file returns a table and nothing else runs at load time:
--
--     local R = { name = "darts", description = "...",
--                 defaults = { {"epochs", 10, "search epochs"}, ... } }
--     function R.run(cfg, ctx) ... end
--     return R
--
-- `nasrt recipes/darts.lua --epochs=3` hands that table to `recipe.main`,
-- which parses the options against `defaults` (types follow the default
-- values), answers `--help`, makes the run directory and calls
-- `R.run(cfg, ctx)`.  Specs call `recipe.run(R, {epochs = 1, ...})` with a
-- tiny configuration instead.
-- @module nasrt.recipe
local nasrt = require "nasrt"
local dist = require "nasrt.dist"
local json = require "dkjson"
local lfs = require "lfs"

local M = {}
M.json = json

-- ------------------------------------------------------------- options

local function default_map(defaults)
  local map, order = {}, {}
  for _, d in ipairs(defaults or {}) do
    map[d[1]] = d
    order[#order + 1] = d[1]
  end
  return map, order
end

local function coerce(name, text, default)
  local t = type(default)
  if t == "number" then
    local v = tonumber(text)
    if not v then error(("option --%s expects a number, got %q"):format(name, text), 0) end
    if math.type(default) == "integer" and math.type(v) ~= "integer" then
      if v ~= math.floor(v) then
        error(("option --%s expects an integer, got %q"):format(name, text), 0)
      end
      v = math.tointeger(v)
    end
    return v
  elseif t == "boolean" then
    if text == true or text == "true" or text == "1" or text == "yes" then return true end
    if text == false or text == "false" or text == "0" or text == "no" then return false end
    error(("option --%s expects true or false, got %q"):format(name, tostring(text)), 0)
  end
  return text
end

--- Usage text listing every option with its default and help.
function M.usage(R)
  local lines = { ("usage: nasrt recipes/%s.lua [--key=value ...]"):format(R.name or "recipe") }
  if R.description then lines[#lines + 1] = "\n" .. R.description end
  lines[#lines + 1] = "\noptions (default in brackets):"
  for _, d in ipairs(R.defaults or {}) do
    local v = d[2]
    if type(v) == "string" and v == "" then v = '""' end
    lines[#lines + 1] = ("  --%-22s %s [%s]"):format(d[1], d[3] or "", tostring(v))
  end
  lines[#lines + 1] = "  --resume RUNDIR         continue an interrupted run"
  lines[#lines + 1] = "  --out DIR              run directory (default runs/<name>-<time>)"
  lines[#lines + 1] = "  --help                 this text"
  return table.concat(lines, "\n")
end

--- Parses `--key=value`, `--key value`, `--flag`, `--no-flag` against the
-- defaults.  Returns cfg, or nil and "help" when --help was asked.
-- Unknown options raise an error that lists the known ones.
function M.parse(R, argv)
  local map, order = default_map(R.defaults)
  local cfg = {}
  for _, k in ipairs(order) do cfg[k] = map[k][2] end
  local extra = { resume = true, out = true, help = true }
  local i = 1
  argv = argv or {}
  while i <= #argv do
    local a = argv[i]
    local key, val = a:match("^%-%-([%w_%-]+)=(.*)$")
    if not key then
      key = a:match("^%-%-([%w_%-]+)$")
      if not key then error(("unexpected argument %q (options look like --key=value)"):format(a), 0) end
      key = key:gsub("%-", "_")
      local neg = key:match("^no_(.+)$")
      if key == "help" then return nil, "help"
      elseif map[key] and type(map[key][2]) == "boolean" then val = true
      elseif neg and map[neg] and type(map[neg][2]) == "boolean" then key, val = neg, false
      else
        val = argv[i + 1]
        if val == nil then error(("option --%s needs a value"):format(key), 0) end
        i = i + 1
      end
    end
    key = key:gsub("%-", "_")
    if map[key] then
      cfg[key] = coerce(key, val, map[key][2])
    elseif extra[key] then
      cfg[key] = val
    else
      error(("unknown option --%s (known: %s)"):format(key, table.concat(order, ", ")), 0)
    end
    i = i + 1
  end
  return cfg
end

--- Fills missing keys of cfg from the recipe defaults (for specs).
function M.with_defaults(R, cfg)
  local out = {}
  for _, d in ipairs(R.defaults or {}) do out[d[1]] = d[2] end
  for k, v in pairs(cfg or {}) do out[k] = v end
  return out
end

-- ------------------------------------------------------- files and dirs

--- mkdir -p
function M.mkdirs(path)
  local acc = path:sub(1, 1) == "/" and "/" or ""
  for part in path:gmatch("[^/]+") do
    acc = acc .. part
    if not lfs.attributes(acc, "mode") then
      local ok, err = lfs.mkdir(acc)
      if not ok and not lfs.attributes(acc, "mode") then
        error(("cannot create directory %s: %s"):format(acc, err), 0)
      end
    end
    acc = acc .. "/"
  end
  return path
end

--- Writes text to path atomically (temp file, then rename).
function M.write_file(path, text)
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "w"))
  f:write(text)
  f:close()
  assert(os.rename(tmp, path))
end

function M.read_file(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.exists(path) return lfs.attributes(path, "mode") ~= nil end

--- JSON text of a Lua value (keys sorted, so files diff cleanly).
function M.encode(v)
  local keys = {}
  local function collect(t, seen)
    if type(t) ~= "table" or seen[t] then return end
    seen[t] = true
    for k, x in pairs(t) do
      if type(k) == "string" then keys[#keys + 1] = k end
      collect(x, seen)
    end
  end
  collect(v, {})
  table.sort(keys)
  local uniq = {}
  for i, k in ipairs(keys) do if k ~= keys[i - 1] then uniq[#uniq + 1] = k end end
  return json.encode(v, { indent = true, keyorder = uniq })
end

function M.decode(text)
  local v, _, err = json.decode(text)
  if err then return nil, err end
  return v
end

-- ------------------------------------------------------------- logging

local Logger = {}
Logger.__index = Logger

--- JSON-lines log: one object per line, flushed at once.
function M.logger(path, append)
  local f = assert(io.open(path, append and "a" or "w"))
  return setmetatable({ f = f, path = path }, Logger)
end

function Logger:log(rec)
  self.f:write(json.encode(rec), "\n")
  self.f:flush()
end

function Logger:close() if self.f then self.f:close(); self.f = nil end end

--- Reads a JSON-lines file back as a list of tables.
function M.read_log(path)
  local out = {}
  local f = io.open(path, "r")
  if not f then return out end
  for line in f:lines() do
    local v = json.decode(line)
    if v then out[#out + 1] = v end
  end
  f:close()
  return out
end

-- ------------------------------------------------------------ progress

local Progress = {}
Progress.__index = Progress

local function fmt_time(s)
  if s ~= s or s == math.huge then return "--:--" end
  s = math.floor(s + 0.5)
  if s >= 3600 then return ("%d:%02d:%02d"):format(s // 3600, s % 3600 // 60, s % 60) end
  return ("%02d:%02d"):format(s // 60, s % 60)
end
M.fmt_time = fmt_time

--- Progress over `total` units of work: `p:update(done, text)` redraws a
-- bar with the ETA when the terminal is interactive (at most 5 times a
-- second), `p:line(text)` prints a finished line with elapsed time and ETA.
function M.progress(total, opts)
  opts = opts or {}
  local tty = opts.tty
  if tty == nil then tty = os.getenv("TERM") ~= nil and os.getenv("CI") == nil and not opts.quiet end
  return setmetatable({ total = math.max(total, 1), t0 = nasrt.clock(), last = 0, tty = tty,
    quiet = opts.quiet, done = 0, start_done = opts.start or 0 }, Progress)
end

function Progress:eta(done)
  done = done or self.done
  local el = nasrt.clock() - self.t0
  local rate = (done - self.start_done) / math.max(el, 1e-9)
  return (self.total - done) / math.max(rate, 1e-12), el
end

function Progress:update(done, text)
  self.done = done
  if self.quiet or not self.tty then return end
  local now = nasrt.clock()
  if now - self.last < 0.2 and done < self.total then return end
  self.last = now
  local eta, el = self:eta(done)
  local w = 24
  local fill = math.floor(w * done / self.total)
  io.stderr:write(("\r[%s%s] %d/%d %s elapsed %s eta %s\027[K"):format(
    ("#"):rep(fill), ("."):rep(w - fill), done, self.total, text or "", fmt_time(el), fmt_time(eta)))
  io.stderr:flush()
end

function Progress:line(text)
  if self.quiet then return end
  local eta, el = self:eta()
  if self.tty then io.stderr:write("\r\027[K") end
  print(("%s  elapsed %s  eta %s"):format(text, fmt_time(el), fmt_time(eta)))
  io.stdout:flush()
end

-- ------------------------------------------------------- run directory

local Run = {}
Run.__index = Run

--- Creates (or reopens, on resume) the run directory and returns a run
-- object: run.dir, run.cfg, run:log(rec), run:save(state), run:load(),
-- run:write_json(name, value), run:progress(total), run:stop_requested().
local function open_local(R, cfg)
  local dir = cfg.resume or cfg.out
  local resumed = cfg.resume ~= nil
  if not dir then
    local stamp = os.date("!%Y%m%d-%H%M%S")
    dir = ("runs/%s-%s"):format(R.name or "run", stamp)
    local n, base = 1, dir
    while M.exists(dir) do n = n + 1; dir = base .. "-" .. n end
  end
  M.mkdirs(dir)
  if resumed then
    local saved = M.read_file(dir .. "/config.json")
    if not saved then error(("resume: %s has no config.json"):format(dir), 0) end
    local old = assert(M.decode(saved))
    for k, v in pairs(old) do if cfg[k] == nil or k ~= "resume" then cfg[k] = v end end
    cfg.resume = dir
  end
  cfg.out = dir
  local run = setmetatable({ dir = dir, cfg = cfg, resumed = resumed, quiet = cfg.quiet }, Run)
  if not resumed then
    local c = {}
    for k, v in pairs(cfg) do if k ~= "resume" then c[k] = v end end
    M.write_file(dir .. "/config.json", M.encode(c))
  end
  run.logger = M.logger(dir .. "/log.jsonl", resumed)
  return run
end

function Run:log(rec) self.logger:log(rec) end

function Run:path(name) return self.dir .. "/" .. name end

function Run:write_json(name, value) M.write_file(self:path(name), M.encode(value)) end

function Run:write_text(name, text) M.write_file(self:path(name), text) end

--- Atomic checkpoint of a table of tensors, numbers, strings (nasrt.save).
function Run:save(state)
  local ok, err = nasrt.save(self:path("checkpoint.nrck"), state)
  if not ok then error("checkpoint: " .. tostring(err), 0) end
end

--- The last checkpoint, or nil when there is none (or it is unreadable).
function Run:load()
  local p = self:path("checkpoint.nrck")
  if not M.exists(p) then return nil end
  local st, err = nasrt.load(p)
  if not st then error("resume: " .. tostring(err), 0) end
  return st
end

function Run:progress(total, opts)
  opts = opts or {}
  opts.quiet = opts.quiet or self.quiet
  return M.progress(total, opts)
end

--- True once Ctrl-C was pressed (recipes check it between steps, save, and
-- return; a second Ctrl-C exits at once).
function Run:stop_requested() return nasrt.interrupted and nasrt.interrupted() or false end

function Run:close() self.logger:close() end

-- ------------------------------------------------- data-parallel runs

-- The run object of ranks other than 0 (nasrt.dist): same directory and
-- configuration, reads work (resume), writes and prints do nothing.
local Muted = setmetatable({}, { __index = Run })
Muted.__index = Muted
function Muted.log() end
function Muted.write_json() end
function Muted.write_text() end
function Muted.save() end
function Muted.close() end

--- Creates (or reopens, on resume) the run directory and returns a run
-- object (see open_local above).  Under mpirun only rank 0 touches the
-- directory; the other ranks get its name and configuration (broadcast),
-- `run.muted = true`, and cfg.quiet.
function M.open_run(R, cfg)
  if dist.size() == 1 then return open_local(R, cfg) end
  local ok, run
  if dist.is_main() then ok, run = pcall(open_local, R, cfg) end
  local info = dist.broadcast_value(dist.is_main() and
    { ok = ok, err = not ok and tostring(run) or nil, cfg = ok and run.cfg or nil,
      dir = ok and run.dir or nil, resumed = ok and run.resumed or nil } or nil)
  if not info.ok then error(info.err, 0) end
  if dist.is_main() then return run end
  for k, v in pairs(info.cfg) do cfg[k] = v end
  cfg.quiet = true
  return setmetatable({ dir = info.dir, cfg = cfg, resumed = info.resumed, quiet = true,
                        muted = true, logger = { log = function() end, close = function() end } },
                      Muted)
end

-- ---------------------------------------------------------------- main

--- Runs a recipe with a configuration table (specs): fills defaults, opens
-- the run directory (cfg.out, or a fresh one under runs/) and calls
-- R.run(cfg, run).  Returns whatever R.run returns.
function M.run(R, cfg)
  cfg = M.with_defaults(R, cfg)
  local run = M.open_run(R, cfg)
  local res = table.pack(R.run(cfg, run))
  run:close()
  return table.unpack(res, 1, res.n)
end

--- Entry point used by the host for `nasrt recipes/x.lua [options]`.
function M.main(R, argv)
  local ok, cfg, why = pcall(M.parse, R, argv)
  if not ok then
    io.stderr:write(("%s: %s\n\n%s\n"):format(R.name or "recipe", cfg, M.usage(R)))
    os.exit(2)
  end
  if not cfg and why == "help" then
    print(M.usage(R))
    return
  end
  if nasrt.catch_interrupt then nasrt.catch_interrupt(true) end
  local run = M.open_run(R, cfg)
  if not run.quiet then print(("%s: run directory %s"):format(R.name, run.dir)) end
  local res = table.pack(R.run(cfg, run))
  run:close()
  if nasrt.catch_interrupt then nasrt.catch_interrupt(false) end
  if run.interrupted then
    print(("%s: interrupted; checkpoint kept in %s (continue with --resume %s)"):format(
      R.name, run.dir, run.dir))
    os.exit(130)
  end
  return table.unpack(res, 1, res.n)
end

return M
