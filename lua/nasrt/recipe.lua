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

-- ------------------------------------------------------ argument checks

-- Misuse of these functions raises, naming the function (recipe.<fn>).
local function check_recipe(R, fn)
  if type(R) ~= "table" then
    error(("recipe.%s: expected a recipe table {name=, defaults=, run=}, got %s"):format(fn,
      type(R)), 3)
  end
  if R.defaults ~= nil and type(R.defaults) ~= "table" then
    error(("recipe.%s: defaults must be a list of {name, default, help}, got %s"):format(fn,
      type(R.defaults)), 3)
  end
end

local function check_arg(v, ty, fn, what, optional)
  if (v ~= nil or not optional) and type(v) ~= ty then
    error(("recipe.%s: %s must be a %s, got %s"):format(fn, what, ty == "table" and "table" or ty,
      type(v)), 3)
  end
end

local function check_argv(argv, fn)
  if argv == nil then return end
  if type(argv) ~= "table" then
    error(("recipe.%s: argv must be a list of strings, got %s"):format(fn, type(argv)), 3)
  end
  for i, a in ipairs(argv) do
    if type(a) ~= "string" then
      error(("recipe.%s: argv[%d] must be a string, got %s"):format(fn, i, type(a)), 3)
    end
  end
end

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
-- @tparam table R the recipe
-- @tparam[opt] string script the path it was run from (default recipes/<name>.lua)
-- @treturn string the text
function M.usage(R, script)
  check_recipe(R, "usage")
  if script ~= nil and type(script) ~= "string" then
    error(("recipe.usage: script must be a string, got %s"):format(type(script)), 2)
  end
  local lines = { ("usage: nasrt %s [--key=value ...]"):format(
    script or ("recipes/%s.lua"):format(R.name or "recipe")) }
  if R.description then lines[#lines + 1] = "\n" .. R.description end
  lines[#lines + 1] = "\noptions (default in brackets):"
  for _, d in ipairs(R.defaults or {}) do
    local v = d[2]
    if type(v) == "string" and v == "" then v = '""' end
    lines[#lines + 1] = ("  --%-22s %s [%s]"):format(d[1], d[3] or "", tostring(v))
  end
  lines[#lines + 1] = ("  %-24s %s"):format("--resume RUNDIR", "continue an interrupted run")
  lines[#lines + 1] = ("  %-24s %s"):format("--out DIR", "run directory (default runs/<name>-<time>)")
  lines[#lines + 1] = ("  %-24s %s"):format("--help", "this text")
  return table.concat(lines, "\n")
end

--- Parses `--key=value`, `--key value`, `--flag`, `--no-flag` against the
-- defaults.  Returns cfg (every option, defaults filled in), nil and the
-- set of options given explicitly (`given[key] = true`, which a resume
-- lets override the saved config); or nil and "help" when --help was
-- asked.  Unknown options raise an error that lists the known ones.
function M.parse(R, argv)
  check_recipe(R, "parse")
  check_argv(argv, "parse")
  local map, order = default_map(R.defaults)
  local cfg, given = {}, {}
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
      elseif not map[key] and not extra[key] then
        error(("unknown option --%s (known: %s)"):format(key, table.concat(order, ", ")), 0)
      else
        val = argv[i + 1]
        if val == nil then error(("option --%s needs a value"):format(key), 0) end
        i = i + 1
      end
    end
    key = key:gsub("%-", "_")
    if map[key] then
      cfg[key] = coerce(key, val, map[key][2])
      given[key] = true
    elseif extra[key] then
      cfg[key] = val
    else
      error(("unknown option --%s (known: %s)"):format(key, table.concat(order, ", ")), 0)
    end
    i = i + 1
  end
  return cfg, nil, given
end

--- Fills missing keys of cfg from the recipe defaults (for specs).
function M.with_defaults(R, cfg)
  check_recipe(R, "with_defaults")
  check_arg(cfg, "table", "with_defaults", "cfg", true)
  local out = {}
  for _, d in ipairs(R.defaults or {}) do out[d[1]] = d[2] end
  for k, v in pairs(cfg or {}) do out[k] = v end
  return out
end

-- ------------------------------------------------------- files and dirs

--- mkdir -p
function M.mkdirs(path)
  check_arg(path, "string", "mkdirs", "path")
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
  check_arg(path, "string", "write_file", "path")
  check_arg(text, "string", "write_file", "text")
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "w"))
  f:write(text)
  f:close()
  assert(os.rename(tmp, path))
end

function M.read_file(path)
  check_arg(path, "string", "read_file", "path")
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.exists(path)
  check_arg(path, "string", "exists", "path")
  return lfs.attributes(path, "mode") ~= nil
end

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
  local ok, s = pcall(json.encode, v, { indent = true, keyorder = uniq })
  if not ok then error("recipe.encode: " .. tostring(s), 2) end
  return s
end

function M.decode(text)
  check_arg(text, "string", "decode", "text")
  local v, _, err = json.decode(text)
  if err then return nil, err end
  return v
end

-- ------------------------------------------------------------- logging

local Logger = {}
Logger.__index = Logger

--- JSON-lines log: one object per line, flushed at once.  `logger.pos` is
-- the file's length in bytes (checkpoints record it, see Run:save).
function M.logger(path, append)
  check_arg(path, "string", "logger", "path")
  check_arg(append, "boolean", "logger", "append", true)
  local f = assert(io.open(path, append and "a" or "w"))
  local pos = f:seek("end")
  return setmetatable({ f = f, path = path, pos = pos }, Logger)
end

function Logger:log(rec)
  local line = json.encode(rec) .. "\n"
  self.f:write(line)
  self.f:flush()
  self.pos = self.pos + #line
end

--- Cuts a file down to its first n bytes (atomically: the head is written
-- to a temp file that replaces it).  Nothing happens when it is missing.
function M.truncate_file(path, n)
  check_arg(path, "string", "truncate_file", "path")
  if math.type(n) ~= "integer" or n < 0 then
    error(("recipe.truncate_file: n must be a non-negative integer, got %s"):format(tostring(n)), 2)
  end
  local f = io.open(path, "rb")
  if not f then return end
  local head = n > 0 and f:read(n) or ""
  f:close()
  M.write_file(path, head or "")
end

function Logger:close() if self.f then self.f:close(); self.f = nil end end

--- Reads a JSON-lines file back as a list of tables.
function M.read_log(path)
  check_arg(path, "string", "read_log", "path")
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
  if type(s) ~= "number" then
    error(("recipe.fmt_time: expected a number of seconds, got %s"):format(type(s)), 2)
  end
  if s ~= s or s == math.huge then return "--:--" end
  s = math.floor(s + 0.5)
  if s >= 3600 then return ("%d:%02d:%02d"):format(s // 3600, s % 3600 // 60, s % 60) end
  return ("%02d:%02d"):format(s // 60, s % 60)
end
M.fmt_time = fmt_time

-- stderr is a terminal (asked once, and only when TERM says there may be one)
local stderr_tty
local function stderr_is_tty()
  if stderr_tty == nil then stderr_tty = os.execute("test -t 2") == true end
  return stderr_tty
end

--- Progress over `total` units of work: `p:update(done, text)` redraws a
-- bar with the ETA when stderr is an interactive terminal (at most 5 times
-- a second; not when it goes to a file or a pipe), `p:line(text)` prints a
-- finished line with elapsed time and ETA.
-- @tparam number total the units of work
-- @tparam[opt] table opts {tty= (force the bar on or off), quiet=, start= (units done before)}
-- @treturn table the progress object
function M.progress(total, opts)
  if type(total) ~= "number" or not (total >= 0) then
    error(("recipe.progress: total must be a non-negative number, got %s"):format(tostring(total)), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("recipe.progress: options must be a table, got %s"):format(type(opts)), 2)
  end
  opts = opts or {}
  local tty = opts.tty
  if tty == nil then
    tty = os.getenv("TERM") ~= nil and os.getenv("CI") == nil and not opts.quiet and stderr_is_tty()
  end
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

local CKPT, PREV, BAD = "checkpoint.nrck", "checkpoint.prev.nrck", "checkpoint.bad.nrck"

-- Options that cannot change when a run is resumed: they fix the data and
-- its order, the model's shapes, the network being trained or the layout
-- of saved sampler/search state, so a checkpoint taken under the old value
-- would not load, or would load and silently mean something else.  A
-- recipe adds its own in `R.resume_fixed` (DARTS: `steps`, the nodes of a
-- cell).  Every other option given with --resume overrides the saved one.
M.RESUME_FIXED = {
  -- the data and its order
  "seed", "dataset", "space", "batch_size", "train_portion", "train_limit", "val_limit",
  "test_limit", "input_size", "size",
  -- model shapes
  "C", "N", "layers", "stem", "stem_stride", "widths", "repeats", "last", "stages",
  "first_block", "last_block", "head", "ratio", "attentions", "resolutions", "auxiliary",
  -- the network train.lua trains
  "arch", "random", "random_seed", "random_tolerance",
  -- samplers and searches whose saved state has a fixed layout
  "sampler", "bins", "bin_lo", "bin_hi", "flops_table", "flops_step", "score", "bench_dataset",
  "population", "select", "sample",
}

local function fixed_on_resume(R)
  local set = {}
  for _, k in ipairs(M.RESUME_FIXED) do set[k] = true end
  for _, k in ipairs(R.resume_fixed or {}) do set[k] = true end
  return set
end

-- The saved config of a resumed run, with the explicitly given options
-- (`given`) overriding it except the fixed ones (an error).  Returns the
-- notes to print (empty when nothing was overridden).
local function merge_saved_config(R, cfg, given, dir)
  local saved = M.read_file(dir .. "/config.json")
  if not saved then error(("resume: %s has no config.json"):format(dir), 0) end
  local old, err = M.decode(saved)
  if type(old) ~= "table" then
    error(("resume: %s/config.json is not a JSON object (%s)"):format(dir, tostring(err)), 0)
  end
  local fixed, notes = fixed_on_resume(R), {}
  local keys = {}
  for k in pairs(old) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = old[k]
    if k ~= "resume" and k ~= "out" then
      if given and given[k] and cfg[k] ~= v then
        if fixed[k] then
          error(("resume: --%s=%s differs from the run's %s; it fixes the data, the model or " ..
            "saved search state, so it cannot change on resume (start a new run instead)"):format(
            k, tostring(cfg[k]), tostring(v)), 0)
        end
        notes[#notes + 1] = ("%s: resume: --%s=%s overrides the saved %s"):format(
          R.name or "recipe", k, tostring(cfg[k]), tostring(v))
      else
        cfg[k] = v
      end
    end
  end
  return notes
end

--- Creates (or reopens, on resume) the run directory and returns a run
-- object: run.dir, run.cfg, run:log(rec), run:save(state), run:load(),
-- run:write_json(name, value), run:progress(total), run:stop_requested().
-- On resume (cfg.resume = DIR) the saved config.json is used, except the
-- options in `given` (those typed on the command line): they override it
-- with a printed note, and config.json is rewritten, unless they are in
-- M.RESUME_FIXED / R.resume_fixed (then an error names the option).
-- Temp files left by a killed process (`*.tmp`, `*.tmp.<pid>`) are removed.
local function open_local(R, cfg, given)
  local dir = cfg.resume or cfg.out
  local resumed = cfg.resume ~= nil
  if not dir then
    local stamp = os.date("!%Y%m%d-%H%M%S")
    dir = ("runs/%s-%s"):format(R.name or "run", stamp)
    local n, base = 1, dir
    while M.exists(dir) do n = n + 1; dir = base .. "-" .. n end
  end
  M.mkdirs(dir)
  local notes = {}
  if resumed then
    notes = merge_saved_config(R, cfg, given, dir)
    cfg.resume = dir
    for f in lfs.dir(dir) do
      if f:match("%.tmp$") or f:match("%.tmp%.%d+$") then os.remove(dir .. "/" .. f) end
    end
  end
  cfg.out = dir
  local run = setmetatable({ dir = dir, cfg = cfg, resumed = resumed, quiet = cfg.quiet }, Run)
  if not resumed or #notes > 0 then
    local c = {}
    for k, v in pairs(cfg) do if k ~= "resume" then c[k] = v end end
    M.write_file(dir .. "/config.json", M.encode(c))
  end
  if not run.quiet then
    for _, n in ipairs(notes) do print(n) end
  end
  run.logger = M.logger(dir .. "/log.jsonl", resumed)
  return run
end

local function value_str(v)
  if v ~= v then return "NaN" end
  return v > 0 and "+Inf" or "-Inf"
end

local function finite(v) return v == v and v ~= math.huge and v ~= -math.huge end

--- Appends a record to log.jsonl.  A record's integer `step` becomes
-- run.step (the step a divergence message names).  A NaN or Inf in a
-- field whose name contains "loss" raises the divergence error instead
-- (the record is not written).
function Run:log(rec)
  local bad
  for k, v in pairs(rec) do
    if type(v) == "number" and type(k) == "string" and k:find("loss", 1, true) and not finite(v) then
      if not bad or k < bad then bad = k end
    end
  end
  if bad then
    if math.type(rec.step) == "integer" then self.diverged_step = rec.step end
    error(("divergence: the %s is %s"):format(bad, value_str(rec[bad])), 0)
  end
  if math.type(rec.step) == "integer" then self.step = rec.step end
  self.logger:log(rec)
end

function Run:path(name) return self.dir .. "/" .. name end

function Run:write_json(name, value) M.write_file(self:path(name), M.encode(value)) end

function Run:write_text(name, text) M.write_file(self:path(name), text) end

-- every tensor of a nested table with its path ("model['cells.0.w']")
local function collect_tensors(t, path, list, paths, seen)
  if nasrt.is_tensor(t) then
    list[#list + 1], paths[#paths + 1] = t, path
  elseif type(t) == "table" and not seen[t] then
    seen[t] = true
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      if type(a) == type(b) then return a < b end
      return type(a) == "number"
    end)
    for _, k in ipairs(keys) do
      local sub
      if type(k) == "string" and k:match("^[%a_][%w_]*$") then
        sub = path == "" and k or (path .. "." .. k)
      else
        sub = ("%s[%s]"):format(path, type(k) == "string" and ("%q"):format(k) or tostring(k))
      end
      collect_tensors(t[k], sub, list, paths, seen)
    end
  end
end

--- Raises the divergence error when a tensor of `state` holds a NaN or an
-- Inf (naming its path in the table), so poisoned weights never replace
-- a good checkpoint.
function M.check_finite(state)
  check_arg(state, "table", "check_finite", "state")
  local list, paths = {}, {}
  collect_tensors(state, "", list, paths, {})
  local ok, i, k, v = nasrt.F.all_finite(list)
  if not ok then
    error(("divergence: checkpoint not written: %s [%s] is %s at element %d"):format(paths[i],
      table.concat(list[i]:shape(), ","), value_str(v), k), 0)
  end
end

--- Atomic checkpoint of a table of tensors, numbers, strings (nasrt.save:
-- temp file, fsync, rename; CRC-32 checked on load).  Refuses (divergence
-- error) a state holding a NaN or an Inf.  The checkpoint it replaces
-- stays as checkpoint.prev.nrck (a hard link), the fallback of Run:load.
-- The checkpoint also records the log position and step (field `_run`),
-- so a resume cuts log.jsonl back to what it held then.
function Run:save(state)
  local fine, err0 = pcall(M.check_finite, state)
  if not fine then
    self.diverged_step = self.step    -- the state after the last logged step
    error(err0, 0)
  end
  local path, prev = self:path(CKPT), self:path(PREV)
  local ck = {}
  for k, v in pairs(state) do ck[k] = v end
  ck._run = { log_bytes = self.logger.pos, step = self.step }
  if M.exists(path) then
    os.remove(prev)
    lfs.link(path, prev)   -- best effort: without hard links there is no fallback
  end
  local ok, err = nasrt.save(path, ck)
  if not ok then error("checkpoint: " .. tostring(err), 0) end
  self.ckpt_step = self.step
end

--- The checkpoint to resume from, or nil when there is none.
-- checkpoint.nrck is tried first; when it is unreadable (corrupt,
-- truncated: the loader checks its CRC) the previous one,
-- checkpoint.prev.nrck, is used with a printed note and the bad file is
-- moved aside to checkpoint.bad.nrck.  When neither loads, an error names
-- both files.  On the first load of a resumed run log.jsonl is cut back to
-- the checkpoint's position (to nothing when there is no checkpoint: the
-- run starts over), so steps redone after a kill are not logged twice.
function Run:load()
  local errs, st, used = {}, nil, nil
  for _, name in ipairs { CKPT, PREV } do
    local p = self:path(name)
    if M.exists(p) then
      local v, err = nasrt.load(p)
      if v then
        st, used = v, name
        break
      end
      errs[#errs + 1] = tostring(err)
    end
  end
  if not st and #errs > 0 then
    error(("resume: no usable checkpoint in %s: %s"):format(self.dir, table.concat(errs, "; ")), 0)
  end
  if st and used == PREV and #errs > 0 then
    io.stderr:write(("resume: %s\nresume: using the previous checkpoint %s instead (the bad " ..
      "file is kept as %s)\n"):format(errs[1], self:path(PREV), self:path(BAD)))
    os.rename(self:path(CKPT), self:path(BAD))
  end
  local meta = st and st._run
  if st then st._run = nil end
  if self.resumed and not self.log_cut then
    self.log_cut = true
    local bytes = st and (meta and meta.log_bytes) or (not st and 0) or nil
    if bytes then
      self.logger:close()
      M.truncate_file(self:path("log.jsonl"), bytes)
      self.logger = M.logger(self:path("log.jsonl"), true)
    end
    self.step = meta and meta.step or nil
    self.ckpt_step = self.step
  end
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
function M.open_run(R, cfg, given)
  check_recipe(R, "open_run")
  check_arg(cfg, "table", "open_run", "cfg")
  if dist.size() == 1 then return open_local(R, cfg, given) end
  local ok, run
  if dist.is_main() then ok, run = pcall(open_local, R, cfg, given) end
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

-- The message of a divergence error (a NaN or Inf loss, gradient or
-- checkpoint tensor) with the step and the checkpoint kept; nil for any
-- other error.  Also logs {kind = "diverged"}.
local function divergence(R, run, e)
  local what = type(e) == "string" and e:match("divergence: ([^\n]*)")
  if not what then return nil end
  local step = run.diverged_step or (run.step or 0) + 1
  pcall(run.logger.log, run.logger, { kind = "diverged", step = step, error = what })
  local name = R.name or "recipe"
  local msg = ("%s: diverged at step %d: %s"):format(name, step, what)
  local ck = M.exists(run:path(CKPT))
  local hint
  if ck then
    hint = ("%s: the last good checkpoint%s is kept in %s; continue from it with other " ..
      "settings, e.g. nasrt recipes/%s.lua --resume %s --lr=<smaller>"):format(name,
      run.ckpt_step and (" (step %d)"):format(run.ckpt_step) or "", run:path(CKPT), name, run.dir)
  else
    hint = ("%s: no checkpoint was written before; start again with other settings " ..
      "(e.g. a smaller --lr)"):format(name)
  end
  return msg, hint
end

--- Runs a recipe with a configuration table (specs): fills defaults, opens
-- the run directory (cfg.out, or a fresh one under runs/) and calls
-- R.run(cfg, run).  Returns whatever R.run returns.  With cfg.resume the
-- other keys of cfg override the saved config (see open_run).  A
-- divergence raises "<name>: diverged at step N: ...".
function M.run(R, cfg)
  check_recipe(R, "run")
  if type(R.run) ~= "function" then error("recipe.run: the recipe has no run function", 2) end
  check_arg(cfg, "table", "run", "cfg", true)
  local given = {}
  for k in pairs(cfg or {}) do given[k] = true end
  cfg = M.with_defaults(R, cfg)
  local run = M.open_run(R, cfg, given)
  local res = table.pack(pcall(R.run, cfg, run))
  if not res[1] then
    local msg = divergence(R, run, res[2])
    run:close()
    error(msg or res[2], 0)
  end
  run:close()
  return table.unpack(res, 2, res.n)
end

--- Entry point used by the host for `nasrt recipes/x.lua [options]`.
-- Exit status: 0 done, 2 bad options, 3 divergence (message on stderr,
-- last good checkpoint kept), 130 interrupted (checkpoint written).
function M.main(R, argv)
  check_recipe(R, "main")
  check_argv(argv, "main")
  local script = type(argv) == "table" and type(argv[0]) == "string" and argv[0] or nil
  local ok, cfg, why, given = pcall(M.parse, R, argv)
  if not ok then
    io.stderr:write(("%s: %s\n\n%s\n"):format(R.name or "recipe", cfg, M.usage(R, script)))
    os.exit(2)
  end
  if not cfg and why == "help" then
    print(M.usage(R, script))
    return
  end
  if nasrt.catch_interrupt then nasrt.catch_interrupt(true) end
  local okr, run = pcall(M.open_run, R, cfg, given)
  if not okr then
    io.stderr:write(("%s: %s\n"):format(R.name or "recipe", run))
    os.exit(2)
  end
  if not run.quiet then print(("%s: run directory %s"):format(R.name, run.dir)) end
  local res = table.pack(xpcall(R.run, function(e)
    if type(e) == "string" and e:find("divergence: ", 1, true) then return e end
    return debug.traceback(type(e) == "string" and e or tostring(e), 2)
  end, cfg, run))
  if not res[1] then
    local msg, hint = divergence(R, run, res[2])
    run:close()
    if msg then
      io.stderr:write(msg, "\n", hint, "\n")
      os.exit(3)
    end
    io.stderr:write("nasrt: ", tostring(res[2]), "\n")
    os.exit(1)
  end
  run:close()
  if nasrt.catch_interrupt then nasrt.catch_interrupt(false) end
  if run.interrupted then
    print(("%s: interrupted; checkpoint kept in %s (continue with --resume %s)"):format(
      R.name, run.dir, run.dir))
    os.exit(130)
  end
  return table.unpack(res, 2, res.n)
end

return M
