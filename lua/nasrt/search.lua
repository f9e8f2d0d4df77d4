--- nasrt.search: search strategies over gene-list architectures, Pareto
-- helpers and supernet-quality metrics.
--
-- An architecture ("arch") is what nasrt.sampler hands out: a plain list of
-- 1-based choice indices, one per gene, `arch[g]` in `1..choices[g]`.  The
-- searchers here know nothing about networks: they call a `score(arch)`
-- function (higher is better; it may return a second value, `extra`, which
-- is stored with the arch) and, where asked, a `constraint(arch)` or
-- `flops(arch)` function.
--
-- Every searcher draws all its randomness from one nasrt.sampler (its own
-- `S.uniform{choices=, seed=}`, or the `sampler=` given), so a run is a
-- function of the seed.  Each is step-wise (`s:step()`, `s:done()`) so a
-- recipe can checkpoint between steps, and `s:state()` returns a plain
-- table (numbers, strings, booleans, tables) that nasrt.save can store;
-- `s:set_state(t)` on a searcher built with the same options resumes the
-- identical trajectory (scores already computed are not asked for again).
-- Checkpoint between steps (or from on_epoch/on_iteration, which run once a
-- step has finished), never from inside score.
--
-- Algorithms (see ../shared/reference/oneshot.md):
--
-- * `evolution` — SPOS EvolutionSearcher (§1.6): legal random population,
--   elitist top-k kept across generations, per-gene mutation, uniform
--   crossover, a visited dict so each arch is evaluated once.
-- * `rea` — regularized (aging) evolution, Real et al. 2019 (§4.1-4.2);
--   `random` — random search (§4.3).
-- * `pareto` — accuracy vs FLOPs: AttentiveNAS/AlphaNet's evolutionary
--   search with a best-per-FLOPs-bin archive (§3.7, the default), or
--   NSGA-II (§2.4, `method = "nsga2"`, what FairNAS names).
-- * metrics (§5) — Kendall tau-b, Spearman, Pearson, sparse Kendall tau,
--   precision@K, aw_nas P@top-K, top-k percentiles.
--
-- This file requires only "nasrt.core" (samplers through core.sampler).
-- @module nasrt.search
-- @usage
-- local search = require "nasrt.search"
-- local evo = search.evolution{choices = spos_choices, seed = 0,
--   score = function(arch) return accuracy_of(arch) end,
--   constraint = function(arch) return flops_of(arch) <= 330e6 end}
-- while not evo:done() do
--   evo:step()
--   run:save({search = evo:state()})
-- end
-- local best, acc = evo:best()
local core = require "nasrt.core"
local guard = require "nasrt.guard"

local M = {}

local STATE_VERSION = 1
local INF = math.huge

-- ------------------------------------------------------------- helpers

local function sampler_lib()
  local S = core.sampler
  if not S then error("nasrt.search: the C core lacks nasrt.sampler", 3) end
  return S
end

local function keyof(arch) return table.concat(arch, ",") end

--- The arch as a string key ("1,4,2"), as the searchers use it.
function M.key(arch)
  if type(arch) ~= "table" then
    error(("search.key: expected an arch (a list of choice indices), got %s"):format(type(arch)), 2)
  end
  for g = 1, #arch do
    if type(arch[g]) ~= "number" then
      error(("search.key: arch[%d] must be a number, got %s"):format(g, type(arch[g])), 2)
    end
  end
  return keyof(arch)
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  return t
end

local function copy_list(t) return table.move(t, 1, #t, 1, {}) end

local function check_opts(fn, opts, allowed)
  if type(opts) ~= "table" then
    error(("%s: expected an options table, got %s"):format(fn, type(opts)), 3)
  end
  local ok = {}
  for _, k in ipairs(allowed) do ok[k] = true end
  for k in pairs(opts) do
    if not ok[k] then
      table.sort(allowed)
      error(("%s: unknown option '%s' (expected one of %s)"):format(fn, tostring(k),
        table.concat(allowed, ", ")), 3)
    end
  end
end

-- An integer option >= lo (nil -> default).
local function opt_int(fn, opts, name, default, lo)
  local v = opts[name]
  if v == nil then return default end
  if math.type(v) ~= "integer" then
    if type(v) == "number" and v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
      v = math.tointeger(v)
    else
      error(("%s: option '%s' must be an integer, got %s"):format(fn, name, tostring(v)), 3)
    end
  end
  if v < lo then error(("%s: option '%s' must be >= %d, got %d"):format(fn, name, lo, v), 3) end
  return v
end

local function opt_num(fn, opts, name, default, lo, hi)
  local v = opts[name]
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or (lo and v < lo) or (hi and v > hi) then
    error(("%s: option '%s' must be a number%s, got %s"):format(fn, name,
      lo and hi and (" in [%g, %g]"):format(lo, hi) or "", tostring(v)), 3)
  end
  return v
end

local function opt_fun(fn, opts, name, required)
  local v = opts[name]
  if v == nil and not required then return nil end
  if type(v) ~= "function" then
    error(("%s: option '%s' must be a function, got %s"):format(fn, name, type(v)), 3)
  end
  return v
end

local function is_sampler(s)
  return (type(s) == "userdata" or type(s) == "table") and type(s.randint) == "function"
    and type(s.state) == "function"
end

local function check_choices(fn, c)
  if type(c) ~= "table" or #c == 0 then
    error(("%s: option 'choices' must be a non-empty list of per-gene choice counts, got %s")
      :format(fn, type(c)), 4)
  end
  for g = 1, #c do
    if math.type(c[g]) ~= "integer" or c[g] < 1 then
      error(("%s: choices[%d] must be a positive integer, got %s"):format(fn, g, tostring(c[g])), 4)
    end
  end
  return copy_list(c)
end

-- Search space and generator from {choices=, seed=, sampler=}.
local function space_and_rng(fn, opts)
  local S = sampler_lib()
  local rng, choices = opts.sampler, nil
  if rng ~= nil then
    if not is_sampler(rng) then
      error(("%s: option 'sampler' must be a nasrt.sampler, got %s"):format(fn, type(rng)), 3)
    end
    if opts.seed ~= nil then
      error(("%s: give either 'seed' or 'sampler' (whose own seed is used), not both"):format(fn), 3)
    end
    choices = check_choices(fn, opts.choices or rng:choices())
    if #choices ~= #rng:choices() then
      error(("%s: 'choices' has %d genes, the sampler %d"):format(fn, #choices, #rng:choices()), 3)
    end
  else
    choices = check_choices(fn, opts.choices)
    local seed = opt_int(fn, opts, "seed", 0, math.mininteger)
    rng = S.uniform{choices = choices, seed = seed}
  end
  return choices, rng
end

-- A uniform-ish random arch from whatever sampler drives the search.
local DRAW = {
  uniform = function(s) return s:sample() end,
  flops_bins = function(s) return (s:sample()) end,
  attentive = function(s) return s:sample(s:sample_target())[1] end,
  sandwich = function(s) return s:random() end,
  strict_fair = function(s) return s:next() end,
}

local function check_arch(self, arch, what)
  local c = self.choices
  if type(arch) ~= "table" or #arch ~= #c then
    error(("%s: %s must be an arch of %d genes, got %s"):format(self.fn, what, #c,
      type(arch) == "table" and (#arch .. " genes") or type(arch)), 4)
  end
  for g = 1, #c do
    local v = arch[g]
    if math.type(v) ~= "integer" or v < 1 or v > c[g] then
      error(("%s: %s: gene %d = %s out of range 1..%d"):format(self.fn, what, g, tostring(v), c[g]), 4)
    end
  end
  return arch
end

-- The user's constraint on arch: a boolean (a number would be a silent
-- "true" in Lua, so anything but a boolean is an error).
local function satisfies(self, arch)
  local ok = self.constraint(copy_list(arch))
  if type(ok) ~= "boolean" then
    error(("%s: constraint returned %s for arch {%s}, expected a boolean"):format(self.fn,
      type(ok), keyof(arch)), 4)
  end
  return ok
end

-- ---------------------------------------------------------- base class

--- Methods every searcher has.
-- @type Searcher
local Base = {}
Base.__index = Base
Base.__name = "Searcher"

local function new_searcher(class, kind, fn, opts, fields)
  local choices, rng = space_and_rng(fn, opts)
  local self = setmetatable({kind = kind, fn = fn, choices = choices, rng = rng,
                             _fields = fields, evals = {}}, class)
  self._draw_fn = opt_fun(fn, opts, "random")
  if not self._draw_fn then
    local k = rng:state().kind
    self._draw_kind = DRAW[k]
    if not self._draw_kind then
      error(("%s: cannot draw archs from a '%s' sampler (give option 'random')"):format(fn, k), 3)
    end
  end
  return self
end

function Base:_random()
  if self._draw_fn then
    return check_arch(self, self._draw_fn(self.rng), "the 'random' function's result")
  end
  return self._draw_kind(self.rng)
end

-- Calls the user's score; returns score (NaN -> -inf), extra.
function Base:_score(arch)
  local s, extra = self.score(copy_list(arch))
  if type(s) ~= "number" then
    error(("%s: score returned %s for arch {%s}, expected a number"):format(self.fn,
      type(s), keyof(arch)), 3)
  end
  if s ~= s then s = -INF end
  return s, extra
end

-- Appends an evaluation record; returns its index.
function Base:_record(arch, s, extra, more)
  local rec = more or {}
  rec.arch, rec.score, rec.extra = arch, s, extra
  local evals = self.evals
  evals[#evals + 1] = rec
  return #evals
end

--- The best evaluated arch (first of equals, in evaluation order).
-- @treturn table arch (a copy), or nil before any evaluation
-- @treturn number score
-- @treturn any extra
function Base:best()
  local bi, bs = nil, -INF
  for i, r in ipairs(self.evals) do
    if bi == nil or r.score > bs then bi, bs = i, r.score end
  end
  if not bi then return nil end
  local r = self.evals[bi]
  return copy_list(r.arch), r.score, copy(r.extra)
end

--- Every evaluation so far, in order: a list of `{arch=, score=, extra=, ...}`
-- (a copy).
function Base:evaluated() return copy(self.evals) end

--- Number of score calls made so far.
function Base:evaluations() return #self.evals end

--- Runs steps until done.
-- @return what the searcher's `run` documents
function Base:run()
  while not self:done() do self:step() end
  return self:_result()
end

--- Everything that changes as the search runs, as plain data (what
-- nasrt.save stores).  Configuration (options, score function) is not in
-- it: rebuild the searcher with the same options, then set_state.
-- @treturn table
function Base:state()
  local st = {kind = self.kind, version = STATE_VERSION, choices = copy_list(self.choices),
              rng = self.rng:state()}
  for f, _ in pairs(self._fields) do st[f] = copy(self[f]) end
  return st
end

--- Restores a state() table (validated first: a bad table changes nothing).
-- @tparam table st
-- @raise on a state from another kind of search, another search space, or a
--   malformed table
function Base:set_state(st)
  local fn = self.fn .. ":set_state"
  if type(st) ~= "table" then error(("%s: expected a state table, got %s"):format(fn, type(st)), 2) end
  if st.kind ~= self.kind then
    error(("%s: state is from a '%s' search, this is '%s'"):format(fn, tostring(st.kind), self.kind), 2)
  end
  if st.version ~= STATE_VERSION then
    error(("%s: state version %s, this nasrt reads %d"):format(fn, tostring(st.version), STATE_VERSION), 2)
  end
  if type(st.choices) ~= "table" or keyof(st.choices) ~= keyof(self.choices) then
    error(("%s: state is for the search space {%s}, this searcher has {%s}"):format(fn,
      type(st.choices) == "table" and keyof(st.choices) or "?", keyof(self.choices)), 2)
  end
  for f, ty in pairs(self._fields) do
    if type(st[f]) ~= ty then
      error(("%s: field '%s' must be a %s, got %s"):format(fn, f, ty, type(st[f])), 2)
    end
  end
  for i, r in ipairs(st.evals) do
    if type(r) ~= "table" or type(r.score) ~= "number" or type(r.arch) ~= "table"
      or #r.arch ~= #self.choices then
      error(("%s: evals[%d] is not an evaluation record"):format(fn, i), 2)
    end
  end
  if type(st.rng) ~= "table" then error(("%s: field 'rng' must be a table"):format(fn), 2) end
  local ok, err = pcall(self.rng.set_state, self.rng, st.rng)
  if not ok then error(("%s: %s"):format(fn, tostring(err)), 2) end
  for f, _ in pairs(self._fields) do self[f] = copy(st[f]) end
  self:_rebuild()
end

function Base:_rebuild() end

--- Scores a list of archs spread over the MPI ranks (nasrt.dist.map:
-- rank r scores archs r+1, r+1+N, ...; the results are all-gathered, so
-- every rank returns the same lists).  One process: in order, here.
-- @tparam table archs list of archs
-- @tparam function score function(arch) -> number[, extra] (plain values)
-- @treturn table scores[i]
-- @treturn table extras[i] (nil where score gave none)
function M.evaluate_parallel(archs, score)
  if type(archs) ~= "table" then
    error(("search.evaluate_parallel: archs must be a list, got %s"):format(type(archs)), 2)
  end
  if type(score) ~= "function" then
    error(("search.evaluate_parallel: score must be a function, got %s"):format(type(score)), 2)
  end
  local dist = require "nasrt.dist"
  local res = dist.map(archs, function(a) return score(copy_list(a)) end)
  local scores, extras = {}, {}
  for i, r in ipairs(res) do scores[i], extras[i] = r[1], r[2] end
  return scores, extras
end

--- The archs the next steps of a searcher will score, without scoring
-- them: the steps run with a stand-in score (`known(arch)` when it has the
-- score, else 0) and callbacks off, then the searcher's state is put back
-- as it was.  Collection stops after the first step when that step needs
-- no unknown arch (nothing to prefetch), else once `want` unknown archs
-- are found or `max_steps` steps ran.  Where a step's candidates depend
-- on scores of that same step (evolution's first step breeds from the
-- initial population it has just scored; REA cycles beyond the first
-- listed) the later part of the list is a guess: score the list, then ask
-- again with the new scores known, until nothing is missing (a wrong guess
-- costs an evaluation, never changes a result).  nasrt.oneshot does this
-- over the MPI ranks (nasrt.dist.map) before each real step, which then
-- finds every score in its cache.
-- @tparam Searcher s
-- @tparam[opt] table opts {known = function(arch) -> score or nil,
--   want = 1, max_steps = want}
-- @treturn table list of distinct archs, in the order they would be scored
function M.upcoming(s, opts)
  if not guard.isa(s, Base) then
    error(("search.upcoming: expected a searcher, got %s"):format(guard.what(s)), 2)
  end
  if opts ~= nil then check_opts("search.upcoming", opts, {"known", "want", "max_steps"}) end
  opts = opts or {}
  local known = opt_fun("search.upcoming", opts, "known") or function() return nil end
  local want = opt_int("search.upcoming", opts, "want", 1, 1)
  local max_steps = opt_int("search.upcoming", opts, "max_steps", want, 1)
  local pre = s:state()
  local score, on_epoch, on_iteration = s.score, s.on_epoch, s.on_iteration
  local found, seen = {}, {}
  s.score = function(arch)
    local sc, extra = known(arch)
    if sc ~= nil then return sc, extra end
    local k = keyof(arch)
    if not seen[k] then
      seen[k] = true
      found[#found + 1] = copy_list(arch)
    end
    return 0
  end
  s.on_epoch, s.on_iteration = nil, nil
  local ok, err = pcall(function()
    for t = 1, max_steps do
      if s:done() or #found >= want then break end
      s:step()
      if t == 1 and #found == 0 then break end
    end
  end)
  s.score, s.on_epoch, s.on_iteration = score, on_epoch, on_iteration
  s:set_state(pre)
  if not ok then error(err, 0) end
  return found
end

-- ---------------------------------------------------- SPOS evolution

local Evolution = setmetatable({}, {__index = Base})
Evolution.__index = Evolution
Evolution.__name = "Evolution"

--- SPOS evolutionary search (Guo et al. 2019; `EvolutionSearcher` in
-- megvii-model/SinglePathOneShot `src/Search/search.py`).
--
-- An arch is *legal* when it has not been visited and passes `constraint`;
-- a legal arch is scored once, at the moment it is generated, and marked
-- visited (constraint failures are cached too).  The initial population is
-- `population` legal uniform archs.  Each epoch: (1) merge the population
-- into the top-`select` list kept across generations (sorted by score,
-- stable, truncated); (2) up to 10·mutation attempts to make `mutation`
-- legal children, each from a parent drawn uniformly from the top list with
-- every gene resampled uniformly (it may keep its value) with probability
-- `m_prob`; (3) up to 10·crossover attempts to make `crossover` legal
-- children, two parents drawn uniformly from the top list (possibly the
-- same), each gene from either with probability 1/2; (4) the new population
-- is mutants + crossovers topped up with legal uniform archs.  The answer is
-- the best of everything evaluated (SPOS `eval.py`): 50 + 20·50 = 1,050
-- evaluations at the defaults.
--
-- NOTE(deviation): upstream draws random archs forever until the population
-- is full; here at most `random_tries` draws are made per fill (a tight
-- constraint or an exhausted space gives a smaller population, and no legal
-- arch at all raises).  Epochs count from 1.
-- @tparam table opts
--   `choices` per-gene choice counts (or taken from `sampler`);
--   `score` function(arch) -> number (higher is better)[, extra];
--   `constraint` function(arch) -> bool (e.g. FLOPs <= limit), optional;
--   `population`=50, `select`=10, `mutation`=25, `crossover`=25,
--   `m_prob`=0.1, `epochs`=20, `random_tries`=1000·population;
--   `seed`=0 or `sampler` (any nasrt.sampler: its generator is used, and its
--   kind's draw for random archs); `random` function(rng) -> arch (custom
--   random candidates); `on_epoch` function(epoch, top) called after each
--   step, top = list of `{arch=, score=, extra=}` (best first).
-- @treturn Searcher with `:step()` -> epoch, top (nil when done), `:done()`,
--   `:run()` -> best arch, best score, history, `:top()`, `:best()`,
--   `:state()`, `:set_state()`.  history[e] =
--   `{epoch=, top={{arch=, score=}...}, population={eval indices},
--   evaluations=, best_score=}`.
function M.evolution(opts)
  local fn = "search.evolution"
  check_opts(fn, opts, {"choices", "score", "constraint", "population", "select", "mutation",
                        "crossover", "m_prob", "epochs", "seed", "sampler", "on_epoch",
                        "random", "random_tries"})
  local self = new_searcher(Evolution, "evolution", fn, opts,
    {evals = "table", illegal = "table", candidates = "table", topk = "table",
     epoch = "number", initialized = "boolean", history = "table"})
  self.score = opt_fun(fn, opts, "score", true)
  self.constraint = opt_fun(fn, opts, "constraint")
  self.on_epoch = opt_fun(fn, opts, "on_epoch")
  self.cfg = {
    population = opt_int(fn, opts, "population", 50, 1),
    select = opt_int(fn, opts, "select", 10, 1),
    mutation = opt_int(fn, opts, "mutation", 25, 0),
    crossover = opt_int(fn, opts, "crossover", 25, 0),
    m_prob = opt_num(fn, opts, "m_prob", 0.1, 0, 1),
    epochs = opt_int(fn, opts, "epochs", 20, 0),
  }
  self.cfg.random_tries = opt_int(fn, opts, "random_tries", 1000 * self.cfg.population, 1)
  self.illegal, self.candidates, self.topk, self.history = {}, {}, {}, {}
  self.epoch, self.initialized = 0, false
  self:_rebuild()
  return self
end

function Evolution:_rebuild()
  self.vis, self.illegal_set = {}, {}
  for i, r in ipairs(self.evals) do self.vis[keyof(r.arch)] = i end
  for _, k in ipairs(self.illegal) do self.illegal_set[k] = true end
end

-- is_legal: scores a new legal arch and returns its eval index, else nil.
function Evolution:_legal(arch)
  local key = keyof(arch)
  if self.vis[key] or self.illegal_set[key] then return nil end
  if self.constraint and not satisfies(self, arch) then
    self.illegal_set[key] = true
    self.illegal[#self.illegal + 1] = key
    return nil
  end
  local s, extra = self:_score(arch)
  local i = self:_record(arch, s, extra, {epoch = self.epoch})
  self.vis[key] = i
  return i
end

-- Tops the population up to n with legal random archs.
function Evolution:_fill(n)
  local tries = self.cfg.random_tries
  while #self.candidates < n and tries > 0 do
    tries = tries - 1
    local i = self:_legal(self:_random())
    if i then self.candidates[#self.candidates + 1] = i end
  end
end

-- Stable sort of eval indices by score, best first.
local function sort_by_score(evals, list)
  local pos = {}
  for p, i in ipairs(list) do pos[i] = pos[i] or p end
  table.sort(list, function(a, b)
    local sa, sb = evals[a].score, evals[b].score
    if sa ~= sb then return sa > sb end
    return pos[a] < pos[b]
  end)
  return list
end

function Evolution:_top_records()
  local out = {}
  for r, i in ipairs(self.topk) do
    local e = self.evals[i]
    out[r] = {arch = copy_list(e.arch), score = e.score, extra = copy(e.extra)}
  end
  return out
end

--- The current top-k list: `{arch=, score=, extra=}`, best first.
function Evolution:top() return self:_top_records() end

function Evolution:done() return self.epoch >= self.cfg.epochs end

--- One generation.
-- @treturn int the epoch just finished (1-based), or nil when done
-- @treturn table the top list used to breed it
function Evolution:step()
  if self:done() then return nil end
  local cfg, S = self.cfg, sampler_lib()
  if not self.initialized then
    self:_fill(cfg.population)
    if #self.candidates == 0 then
      error(("%s: no legal arch in %d random draws (constraint too tight?)"):format(self.fn,
        cfg.random_tries), 2)
    end
    self.initialized = true
  end
  local population = copy_list(self.candidates)
  -- 1. elitist top-k across generations
  local merged = copy_list(self.topk)
  table.move(self.candidates, 1, #self.candidates, #merged + 1, merged)
  sort_by_score(self.evals, merged)
  for r = #merged, cfg.select + 1, -1 do merged[r] = nil end
  self.topk = merged
  local top, rng = self.topk, self.rng
  -- 2. mutation
  local next_pop = {}
  local tries = 10 * cfg.mutation
  local got = 0
  while got < cfg.mutation and tries > 0 do
    tries = tries - 1
    local parent = self.evals[top[rng:randint(#top)]].arch
    local i = self:_legal(S.mutate(parent, self.choices, cfg.m_prob, rng))
    if i then
      got = got + 1
      next_pop[#next_pop + 1] = i
    end
  end
  -- 3. crossover
  tries, got = 10 * cfg.crossover, 0
  while got < cfg.crossover and tries > 0 do
    tries = tries - 1
    local p1 = self.evals[top[rng:randint(#top)]].arch
    local p2 = self.evals[top[rng:randint(#top)]].arch
    local i = self:_legal(S.crossover(p1, p2, rng))
    if i then
      got = got + 1
      next_pop[#next_pop + 1] = i
    end
  end
  -- 4. top up with random legal archs
  self.candidates = next_pop
  self:_fill(cfg.population)
  self.epoch = self.epoch + 1
  local records = self:_top_records()
  local h = {epoch = self.epoch, population = population, evaluations = #self.evals,
             best_score = records[1].score, top = {}}
  for r, rec in ipairs(records) do h.top[r] = {arch = copy_list(rec.arch), score = rec.score} end
  self.history[#self.history + 1] = h
  if self.on_epoch then self.on_epoch(self.epoch, records) end
  return self.epoch, records
end

function Evolution:_result()
  local arch, s = self:best()
  return arch, s, copy(self.history)
end

-- ------------------------------------------------ regularized evolution

local REA = setmetatable({}, {__index = Base})
REA.__index = REA
REA.__name = "REA"

-- Draws a legal random arch (bounded rejection).
local function legal_random(self)
  for _ = 1, self.tries do
    local a = self:_random()
    if not self.constraint or satisfies(self, a) then return a end
  end
  error(("%s: no legal arch in %d random draws (constraint too tight?)"):format(self.fn, self.tries), 4)
end

--- Regularized (aging) evolution (Real et al. 2019, Algorithm 1; NNI
-- `RegularizedEvolution`, AutoDL `regularized_ea.py`).
--
-- Fill a FIFO population with `population` random archs (scored), then each
-- cycle: draw `sample` members (with replacement, as AutoDL; `replace=false`
-- shuffles and takes the first `sample`, as NNI), mutate the best of them,
-- score the child, push it and pop the *oldest*.  Stops once `cycles`
-- archs have been scored in all (the initial population included) or, with
-- `budget`, once the summed `cost` reaches it (AutoDL's simulated time).
-- Archs are not deduplicated (a repeat is scored again and counts).
-- Defaults are the NAS-Bench-201 settings (population 10, sample 3, 100
-- cycles, one gene changed to a different op); NNI's are 100/25/20000 with
-- `mutate = 0.05`.
-- @tparam table opts `choices`, `score`, `population`=10, `sample`=3,
--   `cycles`=100, `seed` or `sampler`, `mutate` = "one" (default: one gene to
--   a different value) | number p (each gene resampled with probability p,
--   may keep its value) | function(arch, rng) -> arch; `replace`=true;
--   `constraint` function(arch) -> bool (rejection, `tries`=1000 per draw);
--   `budget` number and `cost` function(arch, score, extra) -> number;
--   `random` function(rng) -> arch.
-- @treturn Searcher `:step()` scores one arch and returns arch, score;
--   `:run()` -> best arch, best score, history (every evaluation
--   `{arch=, score=, extra=}` in order)
function M.rea(opts)
  local fn = "search.rea"
  check_opts(fn, opts, {"choices", "score", "population", "sample", "cycles", "seed", "sampler",
                        "mutate", "replace", "constraint", "tries", "budget", "cost", "random"})
  local self = new_searcher(REA, "rea", fn, opts,
    {evals = "table", population = "table", spent = "number"})
  self.score = opt_fun(fn, opts, "score", true)
  self.constraint = opt_fun(fn, opts, "constraint")
  self.cost = opt_fun(fn, opts, "cost")
  self.tries = opt_int(fn, opts, "tries", 1000, 1)
  self.cfg = {
    population = opt_int(fn, opts, "population", 10, 1),
    sample = opt_int(fn, opts, "sample", 3, 1),
    cycles = opt_int(fn, opts, "cycles", 100, 0),
    budget = opt_num(fn, opts, "budget", nil, 0),
  }
  if self.cfg.budget and not self.cost then
    error(fn .. ": option 'budget' needs option 'cost' (function(arch, score, extra) -> number)", 2)
  end
  local replace = opts.replace
  if replace == nil then replace = true end
  if type(replace) ~= "boolean" then
    error(("%s: option 'replace' must be a boolean, got %s"):format(fn, type(replace)), 2)
  end
  self.cfg.replace = replace
  local m = opts.mutate
  if m == nil or m == "one" then
    self._mutate = function(arch, rng)
      return sampler_lib().mutate(arch, self.choices, nil, rng, {exactly_one = true})
    end
  elseif type(m) == "number" then
    if not (m >= 0 and m <= 1) then
      error(("%s: option 'mutate' as a probability must be in [0, 1], got %s"):format(fn, m), 2)
    end
    self._mutate = function(arch, rng) return sampler_lib().mutate(arch, self.choices, m, rng) end
  elseif type(m) == "function" then
    self._mutate = function(arch, rng)
      return check_arch(self, m(copy_list(arch), rng), "the 'mutate' function's result")
    end
  else
    error(("%s: option 'mutate' must be \"one\", a probability or a function, got %s")
      :format(fn, tostring(m)), 2)
  end
  self.population, self.spent = {}, 0
  return self
end

function REA:done()
  local n, cfg = #self.evals, self.cfg
  if n < cfg.population then return false end
  if n >= cfg.cycles then return true end
  return cfg.budget ~= nil and self.spent >= cfg.budget
end

-- Tournament: the eval index of the best of `sample` population members.
function REA:_tournament()
  local pop, rng, k = self.population, self.rng, self.cfg.sample
  local best
  local function consider(i)
    if best == nil or self.evals[i].score > self.evals[best].score then best = i end
  end
  if self.cfg.replace then
    for _ = 1, k do consider(pop[rng:randint(#pop)]) end
  else
    local idx = copy_list(pop)
    for j = 1, math.min(k, #idx) do
      local r = j - 1 + rng:randint(#idx - j + 1)
      idx[j], idx[r] = idx[r], idx[j]
      consider(idx[j])
    end
  end
  return best
end

--- One evaluation: a random member while the population fills, then one
-- aging-evolution cycle.
-- @treturn table arch scored (nil when done)
-- @treturn number its score
function REA:step()
  if self:done() then return nil end
  local arch
  if #self.evals < self.cfg.population then
    arch = legal_random(self)
  else
    local parent = self.evals[self:_tournament()].arch
    for t = 1, self.tries do
      arch = self._mutate(parent, self.rng)
      if not self.constraint or satisfies(self, arch) then break end
      if t == self.tries then
        error(("%s: no legal mutation of {%s} in %d tries"):format(self.fn, keyof(parent), self.tries), 2)
      end
    end
  end
  local s, extra = self:_score(arch)
  local i = self:_record(arch, s, extra)
  if self.cost then self.spent = self.spent + self.cost(copy_list(arch), s, extra) end
  local pop = self.population
  pop[#pop + 1] = i
  if #self.evals > self.cfg.population then table.remove(pop, 1) end -- aging: the oldest goes
  return copy_list(arch), s
end

function REA:_result()
  local arch, s = self:best()
  return arch, s, self:evaluated()
end

-- -------------------------------------------------------- random search

local Random = setmetatable({}, {__index = Base})
Random.__index = Random
Random.__name = "RandomSearch"

--- Random search (reference §4.3; AutoDL `random_wo_share.py`): `n` uniform
-- archs (filtered by `constraint` when given), each scored; the best wins.
-- Stops after `n` evaluations or, with `budget`, once the summed `cost`
-- reaches it (AutoDL's simulated time; the evaluation that crosses it
-- still counts).
-- @tparam table opts `choices`, `score`, `n`=100, `seed` or `sampler`,
--   `constraint`, `tries`=1000 (draws per legal arch), `dedup`=false (skip
--   archs already scored; they then cost a draw, not an evaluation),
--   `budget` number and `cost` function(arch, score, extra) -> number,
--   `random` function(rng) -> arch.
-- @treturn Searcher `:step()` -> arch, score; `:run()` -> best arch, best
--   score, history (every evaluation in order)
function M.random(opts)
  local fn = "search.random"
  check_opts(fn, opts, {"choices", "score", "n", "seed", "sampler", "constraint", "tries",
                        "dedup", "budget", "cost", "random"})
  local self = new_searcher(Random, "random", fn, opts, {evals = "table", spent = "number"})
  self.score = opt_fun(fn, opts, "score", true)
  self.constraint = opt_fun(fn, opts, "constraint")
  self.cost = opt_fun(fn, opts, "cost")
  self.tries = opt_int(fn, opts, "tries", 1000, 1)
  self.n = opt_int(fn, opts, "n", 100, 0)
  self.budget = opt_num(fn, opts, "budget", nil, 0)
  if self.budget and not self.cost then
    error(fn .. ": option 'budget' needs option 'cost' (function(arch, score, extra) -> number)", 2)
  end
  self.dedup = opts.dedup == true
  self.spent = 0
  self:_rebuild()
  return self
end

function Random:_rebuild()
  self.seen = {}
  for _, r in ipairs(self.evals) do self.seen[keyof(r.arch)] = true end
end

-- States saved before random search had a budget lack `spent`.
function Random:set_state(st)
  if type(st) == "table" and st.kind == "random" and st.spent == nil then
    st = copy(st)
    st.spent = 0
  end
  return Base.set_state(self, st)
end

function Random:done()
  return #self.evals >= self.n or (self.budget ~= nil and self.spent >= self.budget)
end

function Random:step()
  if self:done() then return nil end
  local arch
  for t = 1, self.tries do
    local a = self:_random()
    if not (self.dedup and self.seen[keyof(a)])
      and (not self.constraint or satisfies(self, a)) then
      arch = a
      break
    end
    if t == self.tries then
      error(("%s: no legal%s arch in %d random draws"):format(self.fn,
        self.dedup and " unseen" or "", self.tries), 2)
    end
  end
  local s, extra = self:_score(arch)
  self:_record(arch, s, extra)
  self.seen[keyof(arch)] = true
  if self.cost then self.spent = self.spent + self.cost(copy_list(arch), s, extra) end
  return copy_list(arch), s
end

Random._result = REA._result

-- ------------------------------------------------------ Pareto helpers

local function objectives_of(fn, points, opts)
  opts = opts or {}
  if type(points) ~= "table" then error(("%s: expected a list of points, got %s"):format(fn, type(points)), 3) end
  local key = opts.key
  local vals = {}
  local m
  for i, p in ipairs(points) do
    local v = key and key(p) or p
    if type(v) ~= "table" then
      error(("%s: point %d must be a list of objective values, got %s"):format(fn, i, type(v)), 3)
    end
    m = m or #v
    if #v ~= m or m == 0 then
      error(("%s: point %d has %d objectives, point 1 has %d"):format(fn, i, #v, m), 3)
    end
    local row = {}
    for j = 1, m do
      local x = v[j]
      if type(x) ~= "number" or x ~= x then
        error(("%s: point %d objective %d must be a number, got %s"):format(fn, i, j, tostring(x)), 3)
      end
      row[j] = x
    end
    vals[i] = row
  end
  local maxi = opts.maximize
  local sign = {}
  for j = 1, m or 0 do
    local mx = true
    if type(maxi) == "table" then mx = maxi[j] ~= false
    elseif maxi == false then mx = false end
    sign[j] = mx and 1 or -1
  end
  -- internally every objective is maximized
  for _, row in ipairs(vals) do
    for j = 1, #row do row[j] = row[j] * sign[j] end
  end
  return vals, m or 0
end

-- a dominates b (all maximized): no worse everywhere, better somewhere
local function dominates(a, b)
  local better = false
  for j = 1, #a do
    if a[j] < b[j] then return false end
    if a[j] > b[j] then better = true end
  end
  return better
end

--- The non-dominated points.
-- @tparam table points list of objective lists `{acc, flops}` (or records
--   with `opts.key(point) -> list`)
-- @tparam[opt] table opts `maximize` = list of booleans per objective (or
--   one boolean for all; default: maximize all), `key`
-- @treturn table the non-dominated points (the given tables, input order;
--   equal points are all kept)
-- @treturn table their indices
-- @usage search.pareto_front({{93.1, 50}, {92.0, 30}, {91.0, 60}}, {maximize = {true, false}})
--   --> {{93.1, 50}, {92.0, 30}}, {1, 2}
function M.pareto_front(points, opts)
  local vals = objectives_of("pareto_front", points, opts)
  local front, idx = {}, {}
  for i = 1, #vals do
    local dominated = false
    for j = 1, #vals do
      if j ~= i and dominates(vals[j], vals[i]) then
        dominated = true
        break
      end
    end
    if not dominated then
      front[#front + 1] = points[i]
      idx[#idx + 1] = i
    end
  end
  return front, idx
end

--- NSGA-II fast non-dominated sorting (Deb et al. 2002).
-- @tparam table points as for pareto_front
-- @tparam[opt] table opts as for pareto_front
-- @treturn table fronts: a list of lists of point indices (front 1 is the
--   Pareto front; indices ascending within a front)
-- @treturn table rank of each point (1-based front number)
function M.nondominated_sort(points, opts)
  local vals = objectives_of("nondominated_sort", points, opts)
  local n = #vals
  local dominated_by, count, rank = {}, {}, {}
  local fronts = {{}}
  for i = 1, n do
    dominated_by[i], count[i] = {}, 0
    for j = 1, n do
      if i ~= j then
        if dominates(vals[i], vals[j]) then
          local d = dominated_by[i]
          d[#d + 1] = j
        elseif dominates(vals[j], vals[i]) then
          count[i] = count[i] + 1
        end
      end
    end
    if count[i] == 0 then
      rank[i] = 1
      fronts[1][#fronts[1] + 1] = i
    end
  end
  local f = 1
  while #fronts[f] > 0 do
    local nxt = {}
    for _, i in ipairs(fronts[f]) do
      for _, j in ipairs(dominated_by[i]) do
        count[j] = count[j] - 1
        if count[j] == 0 then
          rank[j] = f + 1
          nxt[#nxt + 1] = j
        end
      end
    end
    table.sort(nxt)
    f = f + 1
    fronts[f] = nxt
  end
  fronts[f] = nil
  return fronts, rank
end

--- NSGA-II crowding distance of the points of one front.
-- @tparam table points as for pareto_front
-- @tparam table front list of indices into points
-- @tparam[opt] table opts as for pareto_front
-- @treturn table distance of front[i] at [i]; the extremes of every
--   objective get math.huge; an objective where the front is flat adds 0
function M.crowding_distance(points, front, opts)
  local vals, m = objectives_of("crowding_distance", points, opts)
  if type(front) ~= "table" then
    error(("crowding_distance: front must be a list of point indices, got %s"):format(type(front)), 2)
  end
  for i = 1, #front do
    local k = front[i]
    if math.type(k) ~= "integer" or k < 1 or k > #vals then
      error(("crowding_distance: front[%d] = %s is not a point index 1..%d"):format(i,
        tostring(k), #vals), 2)
    end
  end
  local n = #front
  local dist = {}
  for i = 1, n do dist[i] = 0 end
  if n == 0 then return dist end
  for j = 1, m do
    local order = {}
    for i = 1, n do order[i] = i end
    table.sort(order, function(a, b)
      local va, vb = vals[front[a]][j], vals[front[b]][j]
      if va ~= vb then return va < vb end
      return a < b
    end)
    local lo, hi = vals[front[order[1]]][j], vals[front[order[n]]][j]
    dist[order[1]], dist[order[n]] = INF, INF
    if hi > lo then
      for r = 2, n - 1 do
        local i = order[r]
        dist[i] = dist[i] + (vals[front[order[r + 1]]][j] - vals[front[order[r - 1]]][j]) / (hi - lo)
      end
    end
  end
  return dist
end

-- Python's round(): half to even; an integer
local function round_half_even(x)
  local f = math.floor(x)
  local d = x - f
  if d > 0.5 or (d == 0.5 and f % 2 == 1) then f = f + 1 end
  return math.tointeger(f) or f
end
function M.round_half_even(x)
  if type(x) ~= "number" then
    error(("round_half_even: expected a number, got %s"):format(type(x)), 2)
  end
  return round_half_even(x)
end

-- --------------------------------------------------- Pareto evolution

local Pareto = setmetatable({}, {__index = Base})
Pareto.__index = Pareto
Pareto.__name = "Pareto"

--- Evolutionary search for the accuracy/FLOPs Pareto front.
--
-- `method = "bins"` (default) is AttentiveNAS's (AlphaNet
-- `parallel_supernet_evo_search.py`, reference §3.7): the initial
-- population is `init` (e.g. `{sandwich:min()}`) plus uniform archs with
-- FLOPs in [min_flops, max_flops] (rejection); each iteration scores the
-- population and updates an archive keyed by round(flops/step) (Python
-- rounding) that keeps the best score per bin; the next population is
-- `mutation` children (parent uniform from the archive, every gene switched
-- to a *different* value with probability m_prob) and `crossover` children
-- (two archive parents, uniform crossover), each retried until its FLOPs
-- are in range.  The result is the archive; `front()` is its non-dominated
-- part.  NOTE(deviation): a child gives up after `tries` draws (upstream
-- retries forever); archs already scored are not scored again (the
-- evaluator is assumed deterministic); the last iteration does not breed
-- (upstream breeds and never scores the children).
--
-- `method = "nsga2"` is generic NSGA-II (Deb et al. 2002; reference §2.4,
-- what FairNAS reports using): objectives (score max, FLOPs min); each
-- generation breeds `population` children by binary tournament on (rank,
-- crowding), uniform crossover and SPOS per-gene mutation with m_prob,
-- FLOPs in range and not already in the population; parents and children
-- are merged and the next population filled front by front, the last front
-- cut by crowding distance.  The result is the final population's first
-- front.
-- @tparam table opts `choices`, `score`, `flops` function(arch) -> number
--   (default: the sampler's `:flops`), `min_flops`=-inf, `max_flops`=inf,
--   `method`="bins"|"nsga2", `population` (512 bins, 100 nsga2),
--   `mutation`=128, `crossover`=128 (bins), `m_prob` (0.2 bins, 1/genes
--   nsga2), `iterations`=20, `step`=10 (bins: FLOPs bin width),
--   `init` list of archs, `tries`=1000, `seed` or `sampler`, `random`,
--   `on_iteration` function(it, front).
-- @treturn Searcher `:step()` -> iteration (nil when done); `:run()` ->
--   front (list of `{arch=, score=, flops=, extra=}` by FLOPs), history;
--   `:front()`, `:archive()` (bins)
function M.pareto(opts)
  local fn = "search.pareto"
  check_opts(fn, opts, {"choices", "score", "flops", "min_flops", "max_flops", "method",
                        "population", "mutation", "crossover", "m_prob", "iterations", "step",
                        "init", "tries", "seed", "sampler", "random", "on_iteration"})
  local method = opts.method or "bins"
  if method ~= "bins" and method ~= "nsga2" then
    error(("%s: option 'method' must be \"bins\" or \"nsga2\", got %s"):format(fn, tostring(method)), 2)
  end
  local self = new_searcher(Pareto, "pareto_" .. method, fn, opts,
    {evals = "table", pending = "table", members = "table", kept = "table",
     iteration = "number", initialized = "boolean", history = "table"})
  self.method = method
  self.score = opt_fun(fn, opts, "score", true)
  local flops = opt_fun(fn, opts, "flops")
  if not flops then
    local rng = self.rng
    if type(rng.flops) ~= "function" then
      error(fn .. ": option 'flops' is required (function(arch) -> number) unless the sampler has a FLOPs model", 2)
    end
    flops = function(a) return rng:flops(a) end
  end
  self.flops = flops
  self.on_iteration = opt_fun(fn, opts, "on_iteration")
  local nsga = method == "nsga2"
  self.cfg = {
    min_flops = opt_num(fn, opts, "min_flops", -INF),
    max_flops = opt_num(fn, opts, "max_flops", INF),
    population = opt_int(fn, opts, "population", nsga and 100 or 512, 1),
    mutation = opt_int(fn, opts, "mutation", 128, 0),
    crossover = opt_int(fn, opts, "crossover", 128, 0),
    m_prob = opt_num(fn, opts, "m_prob", nsga and 1 / #self.choices or 0.2, 0, 1),
    iterations = opt_int(fn, opts, "iterations", 20, 0),
    step = opt_num(fn, opts, "step", 10, 0),
    tries = opt_int(fn, opts, "tries", 1000, 1),
  }
  if not (self.cfg.step > 0) then error(fn .. ": option 'step' must be positive", 2) end
  if self.cfg.min_flops > self.cfg.max_flops then
    error(("%s: min_flops %g > max_flops %g"):format(fn, self.cfg.min_flops, self.cfg.max_flops), 2)
  end
  if nsga and (opts.mutation ~= nil or opts.crossover ~= nil) then
    error(fn .. ": options 'mutation'/'crossover' are counts of method \"bins\" (nsga2 breeds 'population' children)", 2)
  end
  self.init = {}
  if opts.init ~= nil then
    if type(opts.init) ~= "table" then error(fn .. ": option 'init' must be a list of archs", 2) end
    for i, a in ipairs(opts.init) do self.init[i] = copy_list(check_arch(self, a, "init[" .. i .. "]")) end
  end
  self.pending, self.members, self.kept, self.history = {}, {}, {}, {}
  self.iteration, self.initialized = 0, false
  self:_rebuild()
  return self
end

function Pareto:_rebuild()
  self.cache = {}
  for i, r in ipairs(self.evals) do self.cache[keyof(r.arch)] = i end
end

function Pareto:_flops(arch)
  local f = self.flops(copy_list(arch))
  if type(f) ~= "number" or f ~= f then
    error(("%s: flops returned %s for arch {%s}, expected a number"):format(self.fn,
      tostring(f), keyof(arch)), 4)
  end
  return f
end

function Pareto:_in_range(f) return f >= self.cfg.min_flops and f <= self.cfg.max_flops end

-- Draws from make() until the FLOPs are in range and reject(arch) is false;
-- returns {arch=, flops=} or nil after `tries` draws.
function Pareto:_draw(make, reject)
  for _ = 1, self.cfg.tries do
    local a = make()
    if not (reject and reject(a)) then
      local f = self:_flops(a)
      if self:_in_range(f) then return {arch = a, flops = f} end
    end
  end
  return nil
end

-- Scores a candidate (cached); returns its eval index.
function Pareto:_eval(c)
  local key = keyof(c.arch)
  local i = self.cache[key]
  if i then return i end
  local s, extra = self:_score(c.arch)
  i = self:_record(c.arch, s, extra, {flops = c.flops})
  self.cache[key] = i
  return i
end

function Pareto:_initial()
  local pop = {}
  for _, a in ipairs(self.init) do pop[#pop + 1] = {arch = copy_list(a), flops = self:_flops(a)} end
  while #pop < self.cfg.population do
    local c = self:_draw(function() return self:_random() end)
    if not c then
      if #pop == 0 then
        error(("%s: no arch with FLOPs in [%g, %g] in %d random draws"):format(self.fn,
          self.cfg.min_flops, self.cfg.max_flops, self.cfg.tries), 3)
      end
      break
    end
    pop[#pop + 1] = c
  end
  return pop
end

function Pareto:done() return self.iteration >= self.cfg.iterations end

local function record_of(e)
  return {arch = copy_list(e.arch), score = e.score, flops = e.flops, extra = copy(e.extra)}
end

-- (score, flops) objective lists of eval indices
function Pareto:_points(list)
  local pts = {}
  for k, i in ipairs(list) do pts[k] = {self.evals[i].score, self.evals[i].flops} end
  return pts
end

local MAXMIN = {maximize = {true, false}}

-- records of eval indices, non-dominated only, by FLOPs then score
function Pareto:_front_of(list)
  local _, idx = M.pareto_front(self:_points(list), MAXMIN)
  local out = {}
  for k, j in ipairs(idx) do out[k] = record_of(self.evals[list[j]]) end
  table.sort(out, function(a, b)
    if a.flops ~= b.flops then return a.flops < b.flops end
    if a.score ~= b.score then return a.score > b.score end
    return keyof(a.arch) < keyof(b.arch)
  end)
  return out
end

--- The Pareto front found so far: `{arch=, score=, flops=, extra=}` by
-- ascending FLOPs.
function Pareto:front()
  if self.method == "bins" then return self:_front_of(self.kept) end
  if #self.members == 0 then return {} end
  return self:_front_of(self.members)
end

--- Method "bins": the whole archive (best per FLOPs bin), by bin, each
-- record with its `bin` (= round(flops/step)).
function Pareto:archive()
  local out = {}
  for k, i in ipairs(self.kept) do
    out[k] = record_of(self.evals[i])
    out[k].bin = round_half_even(self.evals[i].flops / self.cfg.step)
  end
  return out
end

function Pareto:_step_bins()
  local cfg, S, rng = self.cfg, sampler_lib(), self.rng
  -- evaluate the population, update the archive (best per bin)
  local by_bin = {}
  for _, i in ipairs(self.kept) do
    by_bin[round_half_even(self.evals[i].flops / cfg.step)] = i
  end
  for _, c in ipairs(self.pending) do
    local i = self:_eval(c)
    local b = round_half_even(self.evals[i].flops / cfg.step)
    local cur = by_bin[b]
    if cur == nil or self.evals[i].score > self.evals[cur].score then by_bin[b] = i end
  end
  local bins = {}
  for b in pairs(by_bin) do bins[#bins + 1] = b end
  table.sort(bins)
  self.kept = {}
  for k, b in ipairs(bins) do self.kept[k] = by_bin[b] end
  local evaluated = #self.pending
  self.pending = {}
  -- breed the next population (not after the last iteration)
  if self.iteration + 1 < cfg.iterations then
    local arc = self.kept
    local function pick() return self.evals[arc[rng:randint(#arc)]].arch end
    local nxt = {}
    for _ = 1, cfg.mutation do
      local c = self:_draw(function()
        return S.mutate(pick(), self.choices, cfg.m_prob, rng, {force_different = true})
      end)
      if c then nxt[#nxt + 1] = c end
    end
    for _ = 1, cfg.crossover do
      local c = self:_draw(function() return S.crossover(pick(), pick(), rng) end)
      if c then nxt[#nxt + 1] = c end
    end
    self.pending = nxt
  end
  return evaluated
end

-- NSGA-II ranking of a list of eval indices: rank[i], crowd[i] by position
function Pareto:_rank(list)
  local pts = self:_points(list)
  local fronts = M.nondominated_sort(pts, MAXMIN)
  local rank, crowd = {}, {}
  for f, fr in ipairs(fronts) do
    local d = M.crowding_distance(pts, fr, MAXMIN)
    for k, p in ipairs(fr) do rank[p], crowd[p] = f, d[k] end
  end
  return rank, crowd, fronts
end

function Pareto:_step_nsga2()
  local cfg, S, rng = self.cfg, sampler_lib(), self.rng
  local pop = self.members
  local rank, crowd = self:_rank(pop)
  local function better(a, b) -- positions
    if rank[a] ~= rank[b] then return rank[a] < rank[b] end
    return crowd[a] > crowd[b]
  end
  local function tournament()
    local a, b = rng:randint(#pop), rng:randint(#pop)
    if better(b, a) then a = b end
    return self.evals[pop[a]].arch
  end
  local taken = {}
  for _, i in ipairs(pop) do taken[keyof(self.evals[i].arch)] = true end
  local kids = {}
  for _ = 1, cfg.population do
    local c = self:_draw(function()
      local child = S.crossover(tournament(), tournament(), rng)
      return S.mutate(child, self.choices, cfg.m_prob, rng)
    end, function(a) return taken[keyof(a)] end)
    if c then
      taken[keyof(c.arch)] = true
      kids[#kids + 1] = self:_eval(c)
    end
  end
  -- elitist survival over parents + children
  local merged = copy_list(pop)
  table.move(kids, 1, #kids, #merged + 1, merged)
  local _, mcrowd, fronts = self:_rank(merged)
  local nxt = {}
  for _, fr in ipairs(fronts) do
    if #nxt + #fr <= cfg.population then
      for _, p in ipairs(fr) do nxt[#nxt + 1] = merged[p] end
    else
      local order = copy_list(fr)
      table.sort(order, function(a, b)
        if mcrowd[a] ~= mcrowd[b] then return mcrowd[a] > mcrowd[b] end
        return a < b
      end)
      for k = 1, cfg.population - #nxt do nxt[#nxt + 1] = merged[order[k]] end
      break
    end
  end
  self.members = nxt
  return #kids
end

--- One iteration (bins: score the population, update the archive, breed;
-- nsga2: breed, score and select one generation).
-- @treturn int the iteration just finished (1-based), or nil when done
function Pareto:step()
  if self:done() then return nil end
  local before = #self.evals
  if not self.initialized then
    local pop = self:_initial()
    if self.method == "bins" then
      self.pending = pop
    else
      local seen = {}
      for _, c in ipairs(pop) do
        local i = self:_eval(c)
        if not seen[i] then
          seen[i] = true
          self.members[#self.members + 1] = i
        end
      end
    end
    self.initialized = true
  end
  local bred = self.method == "bins" and self:_step_bins() or self:_step_nsga2()
  self.iteration = self.iteration + 1
  local front = self:front()
  self.history[#self.history + 1] = {iteration = self.iteration, candidates = bred,
    evaluations = #self.evals, new_evaluations = #self.evals - before, front_size = #front,
    archive_size = self.method == "bins" and #self.kept or nil}
  if self.on_iteration then self.on_iteration(self.iteration, front) end
  return self.iteration
end

function Pareto:_result() return self:front(), copy(self.history) end

-- ------------------------------------------------------------- metrics

local function check_pair(fn, xs, ys)
  if type(xs) ~= "table" or type(ys) ~= "table" then
    error(("%s: expected two lists of numbers, got %s and %s"):format(fn, type(xs), type(ys)), 3)
  end
  if #xs ~= #ys then error(("%s: lists have %d and %d values"):format(fn, #xs, #ys), 3) end
  local nan = false
  for i = 1, #xs do
    local x, y = xs[i], ys[i]
    if type(x) ~= "number" or type(y) ~= "number" then
      error(("%s: value %d is not a number (%s, %s)"):format(fn, i, type(x), type(y)), 3)
    end
    if x ~= x or y ~= y then nan = true end
  end
  return #xs, nan
end

-- Merge sort of a[lo..hi] (in place, tmp scratch); returns inversions
-- (pairs i < j with a[i] > a[j]).
local function sort_count(a, tmp, lo, hi)
  if hi - lo < 1 then return 0 end
  local mid = (lo + hi) // 2
  local inv = sort_count(a, tmp, lo, mid) + sort_count(a, tmp, mid + 1, hi)
  local i, j, k = lo, mid + 1, lo
  while i <= mid and j <= hi do
    if a[j] < a[i] then
      tmp[k] = a[j]
      inv = inv + (mid - i + 1)
      j = j + 1
    else
      tmp[k] = a[i]
      i = i + 1
    end
    k = k + 1
  end
  while i <= mid do tmp[k] = a[i]; i = i + 1; k = k + 1 end
  while j <= hi do tmp[k] = a[j]; j = j + 1; k = k + 1 end
  for t = lo, hi do a[t] = tmp[t] end
  return inv
end

-- sum over runs of equal values (in a sorted list) of c(c-1)/2
local function tie_pairs(sorted, eq)
  local t, run = 0, 1
  for i = 2, #sorted + 1 do
    if i <= #sorted and eq(sorted[i - 1], sorted[i]) then
      run = run + 1
    else
      t = t + run * (run - 1) // 2
      run = 1
    end
  end
  return t
end

--- Kendall's tau-b (scipy.stats.kendalltau's default):
-- (P - Q) / sqrt((P + Q + T_x)(P + Q + T_y)), with P concordant and Q
-- discordant pairs, T_x / T_y pairs tied in x only / y only.  Exact, in
-- O(n log n) (Knight's algorithm, as scipy).
-- @tparam table xs numbers
-- @tparam table ys numbers (same length)
-- @treturn number tau in [-1, 1]; NaN when n < 2, when either list is
--   constant, or when a value is NaN
function M.kendall_tau(xs, ys)
  local n, nan = check_pair("kendall_tau", xs, ys)
  if nan or n < 2 then return 0 / 0 end
  local perm = {}
  for i = 1, n do perm[i] = i end
  table.sort(perm, function(a, b)
    local xa, xb = xs[a], xs[b]
    if xa ~= xb then return xa < xb end
    local ya, yb = ys[a], ys[b]
    if ya ~= yb then return ya < yb end
    return a < b
  end)
  local xt = tie_pairs(perm, function(a, b) return xs[a] == xs[b] end)
  local nt = tie_pairs(perm, function(a, b) return xs[a] == xs[b] and ys[a] == ys[b] end)
  local y = {}
  for i = 1, n do y[i] = ys[perm[i]] end
  local dis = sort_count(y, {}, 1, n) -- y is now sorted
  local yt = tie_pairs(y, function(a, b) return a == b end)
  local tot = n * (n - 1) // 2
  if tot == xt or tot == yt then return 0 / 0 end
  local c_minus_d = tot - xt - yt + nt - 2 * dis
  local tau = c_minus_d / math.sqrt((tot - xt + 0.0) * (tot - yt))
  return math.max(-1.0, math.min(1.0, tau))
end

--- Ranks with ties averaged (scipy.stats.rankdata's 'average'), 1-based.
-- @tparam table xs numbers
-- @treturn table ranks
function M.rankdata(xs)
  check_pair("rankdata", xs, xs)
  local n = #xs
  local order = {}
  for i = 1, n do order[i] = i end
  table.sort(order, function(a, b)
    if xs[a] ~= xs[b] then return xs[a] < xs[b] end
    return a < b
  end)
  local r = {}
  local i = 1
  while i <= n do
    local j = i
    while j < n and xs[order[j + 1]] == xs[order[i]] do j = j + 1 end
    local avg = (i + j) / 2
    for k = i, j do r[order[k]] = avg end
    i = j + 1
  end
  return r
end

--- Pearson's correlation coefficient.
-- @treturn number r; NaN when n < 2 or either list is constant
function M.pearson(xs, ys)
  local n = check_pair("pearson", xs, ys)
  if n < 2 then return 0 / 0 end
  local mx, my = 0, 0
  for i = 1, n do mx, my = mx + xs[i], my + ys[i] end
  mx, my = mx / n, my / n
  local sxy, sxx, syy = 0, 0, 0
  for i = 1, n do
    local dx, dy = xs[i] - mx, ys[i] - my
    sxy, sxx, syy = sxy + dx * dy, sxx + dx * dx, syy + dy * dy
  end
  if sxx == 0 or syy == 0 then return 0 / 0 end
  local r = sxy / math.sqrt(sxx * syy)
  return math.max(-1.0, math.min(1.0, r))
end

--- Spearman's rank correlation: Pearson on average ranks (scipy.stats.spearmanr).
-- @treturn number rho; NaN when n < 2 or either list is constant
function M.spearman(xs, ys)
  check_pair("spearman", xs, ys)
  return M.pearson(M.rankdata(xs), M.rankdata(ys))
end

--- Sparse Kendall tau (Yu et al. 2020, "How to Train Your Super-Net";
-- nas-landmarkreg `compute_sparse_kendalltau`): ground-truth accuracies are
-- rescaled to [0, 1] when their mean lies in (1, 100), then binned with
-- width `threshold` (archs in one bin share a rank) before tau-b against
-- the predictions.
-- @tparam table truth ground-truth accuracies
-- @tparam table pred supernet (or predictor) scores
-- @tparam[opt] table opts `threshold`=1e-3 (0.1 % bins, as the paper's
--   evaluation)
-- @treturn number tau
function M.sparse_kendall_tau(truth, pred, opts)
  local n = check_pair("sparse_kendall_tau", truth, pred)
  opts = opts or {}
  local th = opts.threshold or 1e-3
  if type(th) ~= "number" or not (th > 0) then
    error("sparse_kendall_tau: option 'threshold' must be a positive number", 2)
  end
  local mean = 0
  for i = 1, n do mean = mean + truth[i] end
  mean = n > 0 and mean / n or 0
  local scale = (mean > 1 and mean < 100) and 1e-2 or 1
  local mult = th < 1 and 1 / th or 1
  local bins = {}
  for i = 1, n do bins[i] = math.floor(truth[i] * scale * mult) end
  return M.kendall_tau(bins, pred)
end

-- indices sorted by value, best (largest) first; ties by index
local function order_desc(xs)
  local o = {}
  for i = 1, #xs do o[i] = i end
  table.sort(o, function(a, b)
    if xs[a] ~= xs[b] then return xs[a] > xs[b] end
    return a < b
  end)
  return o
end

--- Precision@K (top-k overlap): |predicted top-K ∩ true top-K| / K.  Ties
-- are broken by position (the earlier arch ranks higher).
-- @tparam table truth ground-truth accuracies
-- @tparam table pred predicted scores
-- @tparam int k 1 <= k <= #truth
-- @treturn number in [0, 1]
function M.precision_at_k(truth, pred, k)
  local n = check_pair("precision_at_k", truth, pred)
  if math.type(k) ~= "integer" or k < 1 or k > n then
    error(("precision_at_k: k must be an integer in 1..%d, got %s"):format(n, tostring(k)), 2)
  end
  local top = {}
  local ot, op = order_desc(truth), order_desc(pred)
  for r = 1, k do top[ot[r]] = true end
  local hit = 0
  for r = 1, k do if top[op[r]] then hit = hit + 1 end end
  return hit / k
end
M.topk_overlap = M.precision_at_k

--- P@top-K as aw_nas's `test_xk` (reference §5): for each ratio r, K =
-- floor(r·N) (ratios giving K = 0 are skipped), the share of the predicted
-- top-K that is in the true top-K, and Kendall tau between true and
-- predicted scores over those correctly retrieved archs.
-- @tparam table truth
-- @tparam table pred
-- @tparam[opt] table ratios default {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0}
-- @treturn table list of `{ratio=, k=, found=, precision=, tau=}`
function M.p_at_top_k(truth, pred, ratios)
  local n = check_pair("p_at_top_k", truth, pred)
  ratios = ratios or {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0}
  if type(ratios) ~= "table" then
    error(("p_at_top_k: ratios must be a list of numbers in (0, 1], got %s"):format(type(ratios)), 2)
  end
  for i, r in ipairs(ratios) do
    if type(r) ~= "number" or not (r > 0 and r <= 1) then
      error(("p_at_top_k: ratios[%d] = %s is not in (0, 1]"):format(i, tostring(r)), 2)
    end
  end
  local ot, op = order_desc(truth), order_desc(pred)
  local true_rank = {}
  for r, i in ipairs(ot) do true_rank[i] = r end
  local out = {}
  for _, ratio in ipairs(ratios) do
    local k = math.floor(n * ratio + 1e-9)
    if k >= 1 then
      local tx, ty = {}, {}
      for r = 1, k do
        local i = op[r]
        if true_rank[i] <= k then
          tx[#tx + 1], ty[#ty + 1] = truth[i], pred[i]
        end
      end
      out[#out + 1] = {ratio = ratio, k = k, found = #tx, precision = #tx / k,
                       tau = M.kendall_tau(tx, ty)}
    end
  end
  return out
end

--- Where the predicted top-k really rank (nas-landmarkreg
-- `compute_percentile`): for each of the k best archs by `pred`, its true
-- rank (1 = best) divided by N.
-- @treturn table percentiles (predicted order)
-- @treturn table summary `{min=, median=, max=}`
function M.top_percentile(truth, pred, k)
  local n = check_pair("top_percentile", truth, pred)
  k = k or 10
  if math.type(k) ~= "integer" or k < 1 then error("top_percentile: k must be a positive integer", 2) end
  k = math.min(k, n)
  local ot, op = order_desc(truth), order_desc(pred)
  local true_rank = {}
  for r, i in ipairs(ot) do true_rank[i] = r end
  local p = {}
  for r = 1, k do p[r] = true_rank[op[r]] / n end
  if k == 0 then return p, {} end
  local s = copy_list(p)
  table.sort(s)
  local med = k % 2 == 1 and s[(k + 1) // 2] or (s[k // 2] + s[k // 2 + 1]) / 2
  return p, {min = s[1], median = med, max = s[k]}
end

-- Every searcher method checks its self (nasrt.guard).
for _, cls in ipairs { Base, Evolution, REA, Random, Pareto } do guard.class(cls) end

return M
