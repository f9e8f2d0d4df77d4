--- nasrt.run: reading a run directory back (the REPL's and scripts' view of
-- what a recipe wrote).
--
--     local r = nasrt.run.load("runs/darts-20260101-120000")
--     print(r)                      -- a summary
--     r.config.epochs, #r.log       -- config.json, log.jsonl records
--     r.arch, r.genotype, r.text    -- arch.json, the genotype, its text
--     r:series("val_acc")           -- steps, values of a logged number
--     r:snapshots()                 -- the alpha / attention history
--     r:evaluations()               -- the candidates a search scored
--     r.checkpoint                  -- checkpoint.nrck (loaded on first use)
--     r:network()                   -- the found architecture, fresh weights
--     r:plot()                      -- every chart into RUNDIR/plots
--
-- A run directory holds config.json (the resolved options), log.jsonl (one
-- JSON object a line: "kind" or "event" = step, epoch, eval, search,
-- ranking, ...), checkpoint.nrck, and once the search is done arch.json,
-- genotype.txt or arch.txt, the cells as DOT (+ SVG); recipes add
-- pareto.json, ranking.json, analysis.json, metrics.json.
-- @module nasrt.run
local nasrt = require "nasrt"
local recipe = require "nasrt.recipe"
local lfs = require "lfs"

local blocks = nasrt.blocks

local M = {}

local Run = {}
M.Run = Run

-- -------------------------------------------------------------- loading

local function read_json(path)
  local text = recipe.read_file(path)
  if not text then return nil end
  local v, err = recipe.decode(text)
  if v == nil then return nil, ("%s: bad JSON (%s)"):format(path, tostring(err)) end
  return v
end

-- the line of a file (genotype.txt, arch.txt) without its newline
local function read_line(path)
  local t = recipe.read_file(path)
  return t and (t:gsub("%s+$", "")) or nil
end

local function kind_of(rec) return rec.kind or rec.event end
M.kind_of = kind_of

--- Which recipe wrote the run (a best guess from arch.json, config.json
-- and the log: "darts", "att_darts", "gdas", "agnas", "spos", "fairnas",
-- "attentivenas", "random", "rea", "train", or "unknown").
local function guess_method(r)
  local a, c = r.arch or {}, r.config or {}
  if type(a.method) == "string" then return a.method end
  if r.metrics or (c.drop_path ~= nil and c.arch ~= nil) then return "train" end
  if a.type == "agnas" or a.type == "agnas_macro" or c.analysis ~= nil then return "agnas" end
  if c.attentions ~= nil then return "att_darts" end
  if c.tau_max ~= nil then return "gdas" end
  if c.unrolled ~= nil then return "darts" end
  for _, rec in ipairs(r.log) do
    if rec.scores then return "agnas" end
    if rec.alphas then return "darts" end
  end
  return "unknown"
end

--- Loads a run directory.  Returns the run object, or nil and a message
-- when `dir` is not a directory or holds neither config.json nor
-- log.jsonl.
-- @tparam string dir
-- @treturn Run
function M.load(dir)
  if type(dir) ~= "string" then
    error(("nasrt.run.load: expected a directory name, got %s"):format(type(dir)), 2)
  end
  dir = dir:gsub("/+$", "")
  if dir == "" then dir = "/" end
  if lfs.attributes(dir, "mode") ~= "directory" then
    return nil, ("nasrt.run.load: %s is not a directory"):format(dir)
  end
  local r = setmetatable({ dir = dir }, Run)
  local err
  r.config, err = read_json(dir .. "/config.json")
  if err then return nil, "nasrt.run.load: " .. err end
  local has_log = recipe.exists(dir .. "/log.jsonl")
  if not r.config and not has_log then
    return nil, ("nasrt.run.load: %s is not a run directory (no config.json, no log.jsonl)"):format(dir)
  end
  r.config = r.config or {}
  r.log = recipe.read_log(dir .. "/log.jsonl")
  for _, name in ipairs { "arch", "metrics", "pareto", "ranking", "analysis", "predictor" } do
    local v, e = read_json(("%s/%s.json"):format(dir, name))
    if e then return nil, "nasrt.run.load: " .. e end
    r[name] = v
  end
  r.text = read_line(dir .. "/genotype.txt") or read_line(dir .. "/arch.txt")
  local a = r.arch
  if a then
    r.genotype = a.genotype or a.cell_types or a.genotypes or a.arch_string or a.arch
    r.text = r.text or a.text or a.genotype_text
  end
  r.method = guess_method(r)
  return r
end

-- -------------------------------------------------------------- queries

--- Log records, optionally only those of a kind ("step", "epoch",
-- "eval", ...; the log's "kind" or "event" field) and phase.
function Run:records(kind, phase)
  local out = {}
  for _, rec in ipairs(self.log) do
    if (kind == nil or kind_of(rec) == kind) and (phase == nil or rec.phase == phase) then
      out[#out + 1] = rec
    end
  end
  return out
end

--- A logged number against the step: xs, ys from the records of `kind`
-- (default: every record that has the key) and `phase` (optional).  A
-- step that comes again (a resumed run re-logging what it redid) replaces
-- the earlier points from there on.  opts.x names the x key (default
-- "step").  A record without it (AGNAS' final `done` line) is placed at
-- the x of the last record before it that has one; when none has, the
-- records count 1, 2, ...
-- @tparam string key the logged field
-- @tparam[opt] table opts {kind=, phase=, x="step"}
-- @treturn {number,...} xs
-- @treturn {number,...} ys
function Run:series(key, opts)
  opts = opts or {}
  local xkey = opts.x or "step"
  local xs, ys = {}, {}
  local n, last_x = 0, nil
  for _, rec in ipairs(self.log) do
    local v = rec[key]
    if type(rec[xkey]) == "number" then last_x = rec[xkey] end
    if type(v) == "number" and (opts.kind == nil or kind_of(rec) == opts.kind)
        and (opts.phase == nil or rec.phase == opts.phase) then
      n = n + 1
      local x = rec[xkey]
      if type(x) ~= "number" then x = last_x or n end
      while #xs > 0 and xs[#xs] >= x do
        xs[#xs], ys[#ys] = nil, nil
      end
      xs[#xs + 1], ys[#ys + 1] = x, v
    end
  end
  return xs, ys
end

--- The phases of the step records, in order of appearance.
function Run:phases(kind)
  local out, seen = {}, {}
  for _, rec in ipairs(self.log) do
    if kind_of(rec) == (kind or "step") and rec.phase and not seen[rec.phase] then
      seen[rec.phase] = true
      out[#out + 1] = rec.phase
    end
  end
  return out
end

-- DARTS edge labels: edge e of node i reads c_{k-2}, c_{k-1} or node j
local function darts_edges(n)
  local out = {}
  local node = 0
  while #out < n do
    for j = 0, node + 1 do
      if #out == n then break end
      out[#out + 1] = ("%d ← %s"):format(node, j == 0 and "k-2" or j == 1 and "k-1" or tostring(j - 2))
    end
    node = node + 1
  end
  return out
end
M.darts_edges = darts_edges

local NB201_EDGES = { "1 ← 0", "2 ← 0", "2 ← 1", "3 ← 0", "3 ← 1", "3 ← 2" }

local function split_list(s)
  local out = {}
  for part in tostring(s):gmatch("[^,%s]+") do out[#out + 1] = part end
  return out
end

local function copy(t)
  local out = {}
  for i, v in ipairs(t) do out[i] = v end
  return out
end

-- rows divided by their sum (attention scores -> each op's share)
local function row_shares(m)
  local out = {}
  for r, row in ipairs(m) do
    local s = 0
    for _, v in ipairs(row) do s = s + v end
    out[r] = {}
    for c, v in ipairs(row) do out[r][c] = s > 0 and v / s or 0 end
  end
  return out
end

-- DARTS cell kind of 0-based cell i of `layers`
local function cell_kind(i, layers)
  return (i == layers // 3 or i == 2 * layers // 3) and "reduce" or "normal"
end

local function is_matrix(v) return type(v) == "table" and type(v[1]) == "table" and type(v[1][1]) == "number" end

--- The architecture weights of every logged snapshot (the epoch records'
-- `alphas` of DARTS, Att-DARTS and GDAS, the `scores` of AGNAS):
-- {{step=, epoch=, maps = {{name=, title=, kind= ("alpha"|"beta"|"attention"),
-- rows={edge labels}, cols={op names}, values={{...}}}, ...}}, ...}.
-- Alphas are logged as the softmax (sigmoid for FairDARTS); AGNAS scores
-- are summed attention, shown here as each op's share of its edge's sum.
function Run:snapshots()
  local out = {}
  local cfg, arch = self.config, self.arch or {}
  local prims = arch.primitives or (cfg.primitives and split_list(cfg.primitives))
  for _, rec in ipairs(self.log) do
    local maps = {}
    local a = rec.alphas
    if type(a) == "table" then
      local ops = prims or blocks.DARTS_PRIMITIVES
      if is_matrix(a.normal) or is_matrix(a.reduce) then
        for _, which in ipairs { "normal", "reduce" } do
          if is_matrix(a[which]) then
            maps[#maps + 1] = { name = "alpha_" .. which, kind = "alpha",
              title = ("α (softmax), %s cell"):format(which),
              rows = darts_edges(#a[which]), cols = copy(ops), values = a[which] }
          end
        end
        local att = cfg.attentions and split_list(cfg.attentions) or blocks.ATT_PRIMITIVES
        for _, which in ipairs { "normal", "reduce" } do
          local b = a["betas_" .. which]
          if is_matrix(b) then
            maps[#maps + 1] = { name = "beta_" .. which, kind = "beta",
              title = ("β attention modules (softmax), %s cell"):format(which),
              rows = darts_edges(#b), cols = copy(att), values = b }
          end
        end
      elseif is_matrix(a[1]) then     -- one alpha matrix per cell
        for i, m in ipairs(a) do
          local kind = cell_kind(i - 1, #a)
          maps[#maps + 1] = { name = ("alpha_cell%d_%s"):format(i - 1, kind), kind = "alpha",
            title = ("α (softmax), cell %d (%s)"):format(i - 1, kind),
            rows = darts_edges(#m), cols = copy(ops), values = m }
        end
      end
    end
    local s = rec.scores
    if type(s) == "table" and #s > 0 then
      if is_matrix(s[1]) then         -- AGNAS micro: a score matrix per cell
        local ops = prims or blocks.AGNAS_PRIMITIVES
        local layers = #s
        for i, m in ipairs(s) do
          local kind = cell_kind(i - 1, layers)
          maps[#maps + 1] = { name = ("attention_cell%d_%s"):format(i - 1, kind), kind = "attention",
            title = ("attention share, cell %d (%s)"):format(i - 1, kind),
            rows = darts_edges(#m), cols = copy(ops), values = row_shares(m) }
        end
      elseif is_matrix(s) then
        local macro = cfg.space == "macro" or arch.type == "agnas_macro" or #s[1] ~= 5 or #s ~= 6
        local rows, cols = {}, nil
        if macro then
          cols = copy(nasrt.supernet.agnas_macro_choices)
          local width = 0
          for l, row in ipairs(s) do
            rows[l] = ("layer %d"):format(l)
            width = math.max(width, #row)
          end
          while #cols > width do cols[#cols] = nil end
        else
          rows, cols = copy(NB201_EDGES), copy(blocks.NB201_PRIMITIVES)
        end
        maps[#maps + 1] = { name = "attention", kind = "attention",
          title = macro and "attention share per layer" or "attention share per edge",
          rows = rows, cols = cols, values = row_shares(s) }
      end
    end
    if #maps > 0 then
      out[#out + 1] = { step = rec.step, epoch = rec.epoch, maps = maps }
    end
  end
  return out
end

-- key of an arch (a gene list or a string)
local function arch_key(a)
  if type(a) == "table" then return table.concat(a, ",") end
  return tostring(a)
end
M.arch_key = arch_key

--- The candidates a search scored ("eval" records of phase "search"):
-- {{arch=, score=, mflops=, test=, index=}, ...} in the order scored.
function Run:evaluations()
  local out = {}
  for _, rec in ipairs(self.log) do
    if kind_of(rec) == "eval" and (rec.phase == nil or rec.phase == "search") and type(rec.score) == "number" then
      out[#out + 1] = { arch = rec.arch, score = rec.score, mflops = rec.mflops, test = rec.test,
                        val_loss = rec.val_loss, index = #out + 1 }
    end
  end
  return out
end

--- The selected architecture's {score=, mflops=} among the evaluations
-- (or from arch.json), or nil.
function Run:selected()
  local a = self.arch
  if not a then return nil end
  local genes = a.genes or (type(a.arch) == "table" and a.arch) or nil
  local score = a.val_score or a.val_acc
  local mflops = a.mflops
  if genes then
    local k = arch_key(genes)
    for _, e in ipairs(self:evaluations()) do
      if arch_key(e.arch) == k then
        score, mflops = score or e.score, mflops or e.mflops
        break
      end
    end
  end
  if score == nil then return nil end
  return { score = score, mflops = mflops, text = a.text }
end

-- -------------------------------------------------------------- checkpoint

--- Fields loaded on first use: `checkpoint` (the tensors and state of
-- checkpoint.nrck, false when there is none).
function Run.__index(self, k)
  if Run[k] ~= nil then return Run[k] end
  if k == "checkpoint" then
    local p = self.dir .. "/checkpoint.nrck"
    local st = false
    if recipe.exists(p) then
      local v, err = nasrt.load(p)
      if not v then error(("nasrt.run: %s: %s"):format(p, tostring(err)), 2) end
      st = v
    end
    rawset(self, "checkpoint", st)
    return st
  end
  return nil
end

-- -------------------------------------------------------------- networks

-- The recipe file `name` (for option helpers such as attentivenas'
-- elastic_options): next to the lua/ directory nasrt.run came from, or
-- under ./recipes.
local function recipe_file(name)
  local here = package.searchpath("nasrt.run", package.path)
  local cands = {}
  if here then cands[1] = here:gsub("lua/nasrt/run%.lua$", "recipes/" .. name .. ".lua") end
  cands[#cands + 1] = "recipes/" .. name .. ".lua"
  for _, p in ipairs(cands) do if recipe.exists(p) then return dofile(p) end end
  error(("nasrt.run: cannot find recipes/%s.lua"):format(name), 3)
end

local function with_defaults(cfg, defaults)
  local out = {}
  for _, d in ipairs(defaults or {}) do out[d[1]] = d[2] end
  for k, v in pairs(cfg) do out[k] = v end
  return out
end

--- The found architecture as a network.  opts: weights = "fresh"
-- (default; initialised from the global generator, for retraining) or
-- "checkpoint" (one-shot runs: the path of the trained supernet, sharing
-- its weights; train runs: the trained network); C=, layers=, N= override
-- the sizes of cell networks (default: the run's config).
-- @treturn module
function Run:network(opts)
  opts = opts or {}
  local a, cfg = self.arch, self.config
  if not a then error(("network: %s has no arch.json (the search has not finished)"):format(self.dir), 2) end
  local sn = nasrt.supernet
  local weights = opts.weights or "fresh"
  if weights ~= "fresh" and weights ~= "checkpoint" then
    error(("network: weights must be 'fresh' or 'checkpoint', got %s"):format(tostring(weights)), 2)
  end
  local function ckpt_model()
    local ck = self.checkpoint
    if not ck or not ck.model then error(("network: %s has no model in its checkpoint"):format(self.dir), 3) end
    return ck.model
  end
  local size = cfg.input_size or (cfg.size and cfg.size > 0 and cfg.size) or 28
  local oneshot_kinds = { spos = true, fairnas = true, elastic = true }
  local space = a.space or a.type
  if oneshot_kinds[space] or (space == "nb201" and a.method and cfg.score == "supernet") then
    local oneshot = require "nasrt.oneshot"
    local S
    if space == "elastic" then
      local R = recipe_file("attentivenas")
      local c = with_defaults(cfg, R.defaults)
      S = oneshot.space("elastic", c, R.elastic_options(c))
    else
      local names = { spos = "spos", fairnas = "fairnas", nb201 = "random" }
      local R = recipe_file(a.method == "rea" and "rea" or a.method == "random" and "random"
        or names[space])
      S = oneshot.space(space, with_defaults(cfg, R.defaults))
    end
    local genes = a.genes or a.arch
    if weights == "checkpoint" then
      S.net:load_state_dict(ckpt_model())
      return S:eval_model(genes)
    end
    return S:fresh_model(genes)
  end
  local net
  if a.type == "nb201" or (type(a.arch) == "string" and a.arch:sub(1, 1) == "|") then
    net = sn.nb201_network(a.arch_string or a.arch, { C = opts.C or cfg.C or 16, N = opts.N or cfg.N or 5,
      classes = 10, in_channels = 1 })
  elseif a.type == "agnas_macro" then
    local L = a.supernet or {}
    local o = { in_channels = 1, classes = 10, input_size = L.input_size or size, record_scores = false }
    for _, k in ipairs { "stages", "stem", "first_block", "head", "ratio" } do
      if L[k] ~= nil then o[k] = L[k] end
    end
    net = sn.agnas_macro(o):path_network(a.arch, { weights = "fresh" })
  else
    local g = a.cell_types or a.genotype or a.genotypes
    if type(g) ~= "table" then error(("network: %s/arch.json holds no genotype"):format(self.dir), 2) end
    local layers = opts.layers or cfg.layers or 8
    if a.genotypes and not a.cell_types and not a.genotype then layers = #a.genotypes end
    net = sn.darts_network(g, { C = opts.C or cfg.C or 16, layers = layers, classes = 10,
      in_channels = 1, input_size = size,
      auxiliary = self.method == "train" and weights == "checkpoint" and cfg.auxiliary or false })
  end
  if weights == "checkpoint" then
    if self.method ~= "train" then
      error("network: weights='checkpoint' needs a one-shot or a train run (a cell search's " ..
        "checkpoint holds the supernet, not the found network)", 2)
    end
    net:load_state_dict(ckpt_model())
  end
  return net
end

--- Makes every chart of the run (see nasrt.plot.plot_run).
function Run:plot(outdir, opts)
  return require("nasrt.plot").plot_run(self, outdir, opts)
end

-- -------------------------------------------------------------- summary

local function fmt(v)
  if type(v) == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    return ("%.4g"):format(v)
  end
  return tostring(v)
end

local function shorten(s, n)
  s = tostring(s)
  if utf8.len(s) and utf8.len(s) > n then return s:sub(1, utf8.offset(s, n - 2) - 1) .. "..." end
  return s
end

function Run:__tostring()
  local L = { ("run %s  (%s)"):format(self.dir, self.method) }
  local keys = {}
  for k in pairs(self.config) do keys[#keys + 1] = k end
  table.sort(keys)
  local shown = {}
  for _, k in ipairs { "space", "epochs", "steps", "C", "layers", "N", "batch_size", "lr", "seed",
                       "score", "cycles", "evo_epochs", "arch" } do
    if self.config[k] ~= nil and self.config[k] ~= "" then shown[#shown + 1] = k .. "=" .. fmt(self.config[k]) end
  end
  L[#L + 1] = ("  config    %d options: %s"):format(#keys, shorten(table.concat(shown, " "), 90))
  local counts, order = {}, {}
  for _, rec in ipairs(self.log) do
    local k = kind_of(rec) or "?"
    if not counts[k] then order[#order + 1] = k end
    counts[k] = (counts[k] or 0) + 1
  end
  local parts = {}
  for _, k in ipairs(order) do parts[#parts + 1] = ("%d %s"):format(counts[k], k) end
  L[#L + 1] = ("  log       %d records (%s)"):format(#self.log, table.concat(parts, ", "))
  local last
  for _, rec in ipairs(self.log) do if kind_of(rec) == "epoch" then last = rec end end
  if last then
    local p = {}
    for _, k in ipairs { "epoch", "step", "train_loss", "train_acc", "loss", "acc", "val_loss", "val_acc" } do
      if type(last[k]) == "number" then p[#p + 1] = k .. " " .. fmt(last[k]) end
    end
    L[#L + 1] = "  last      " .. table.concat(p, "  ")
  end
  local snaps = self:snapshots()
  if #snaps > 0 then
    local names = {}
    for _, m in ipairs(snaps[#snaps].maps) do names[#names + 1] = m.name end
    L[#L + 1] = ("  history   %d snapshots of %s"):format(#snaps, shorten(table.concat(names, ", "), 70))
  end
  local ev = self:evaluations()
  if #ev > 0 then
    local best
    for _, e in ipairs(ev) do if not best or e.score > best.score then best = e end end
    L[#L + 1] = ("  search    %d candidates scored, best %s%s"):format(#ev, fmt(best.score),
      best.mflops and (" at %s MFLOPs"):format(fmt(best.mflops)) or "")
  end
  if self.text then L[#L + 1] = "  found     " .. shorten(self.text, 100) end
  if self.metrics then
    L[#L + 1] = ("  metrics   test acc %s, %s params"):format(fmt(self.metrics.test_acc), fmt(self.metrics.params))
  end
  local files = {}
  for f in lfs.dir(self.dir) do if f ~= "." and f ~= ".." then files[#files + 1] = f end end
  table.sort(files)
  L[#L + 1] = "  files     " .. shorten(table.concat(files, " "), 100)
  return table.concat(L, "\n")
end

return M
