--- Misuse specs: the list of public functions and the runner.
--
-- Every public function of nasrt must survive bad calls: wrong types, nil,
-- wrong ranks and shapes, negative, huge and NaN sizes, unknown options,
-- closed objects, a wrong self, out-of-range indices, malformed arch
-- strings.  Each bad call must raise a Lua error whose message names the
-- function (and the shapes, where shapes are involved); none may crash.
--
-- The cases live in spec/misuse/<group>.lua, one list per module group,
-- each entry {fn, label, thunk, text, ...}: `fn` names the function (as
-- listed by `api()`), `thunk` makes the bad call, and every `text` must
-- appear in the message (plain text, not a pattern).  spec/misuse_<group>_spec.lua
-- runs a group; spec/misuse_coverage_spec.lua checks that every public
-- function has at least one case.  `lua5.4 scripts/list_api.lua` prints
-- the list with the number of cases per function.
local nasrt = require "nasrt"
local guard = require "nasrt.guard"

local M = {}

-- Groups: which names each spec/misuse/<group>.lua covers (by prefix).
M.GROUPS = {
  core = { "nasrt.", "F.", "Tensor.", "io.", "_optim.", "dist." },
  data = { "data.", "Dataset.", "Loader." },
  sampler = { "sampler." },
  nn = { "nn.", "optim." },
  blocks = { "blocks." },
  supernet = { "supernet." },
  search = { "search.", "bench.", "recipe.", "interop." },
}
-- Not walked: nasrt.run and nasrt.plot (reading a run folder back and
-- drawing it; tools over finished runs, not part of a search), and the
-- private C tables nasrt._dist (reached through nasrt.dist) and
-- nasrt._param_names.

-- Functions that take no arguments and have no self, so no call can be
-- wrong (extra arguments are ignored, as in Lua's own libraries), and
-- predicates that accept any value by design.
M.NO_BAD_CALL = {
  ["nasrt.get_rng_state"] = "no arguments",
  ["nasrt.is_grad_enabled"] = "no arguments",
  ["nasrt.num_threads"] = "no arguments",
  ["nasrt.memory"] = "no arguments",
  ["nasrt.reset_peak_memory"] = "no arguments",
  ["nasrt.clock"] = "no arguments",
  ["nasrt.interrupted"] = "no arguments",
  ["dist.rank"] = "no arguments",
  ["dist.size"] = "no arguments",
  ["dist.local_size"] = "no arguments",
  ["dist.is_main"] = "no arguments",
  ["dist.active"] = "no arguments",
  ["dist.compiled"] = "no arguments",
  ["dist.initialized"] = "no arguments",
  ["dist.init"] = "no arguments",
  ["dist.barrier"] = "no arguments",
  ["dist.finalize"] = "no arguments (MPI_Finalize; calling it in a spec would end MPI)",
  ["dist.sync_bn"] = "no arguments",
  ["nasrt.is_tensor"] = "predicate: any value",
  ["nasrt.catch_interrupt"] = "takes any value as a flag (truthiness)",
  ["nn.is_module"] = "predicate: any value",
  ["nn.util.opt"] = "opt(v, default): any two values",
  ["Tensor.__eq"] = "comparison: any two values",
}

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do if type(k) == "string" then ks[#ks + 1] = k end end
  table.sort(ks)
  return ks
end

local function is_class(v)
  if type(v) ~= "table" then return false end
  local mt = getmetatable(v)
  return rawget(v, "__index") == v or rawget(v, "super") ~= nil
    or (type(mt) == "table" and mt.__call ~= nil)
end

--- The public API: a list of {name=, fn=} (one entry per distinct
-- function, under the first name found) and a map name -> function that
-- also holds every alias.  Classes contribute their constructor ("X()",
-- when callable) and the methods they define themselves (names not
-- starting with "_"); inherited methods are listed under the class that
-- defines them.  C userdata (datasets, loaders, samplers) are found by
-- their registered metatables; Lua objects (searchers, the NB201 table)
-- through one instance each.
function M.api()
  local list, byname, seen, seen_class, exported = {}, {}, {}, {}, {}
  local function add(name, f, method)
    byname[name] = f
    if not seen[f] then
      seen[f] = name
      list[#list + 1] = { name = name, fn = f, method = method }
    end
  end
  local walk_class
  local function walk_methods(t, prefix)
    for _, k in ipairs(sorted_keys(t)) do
      local v = rawget(t, k)
      if type(v) == "function" and not k:match("^_") then
        add(prefix .. "." .. k, v, k ~= "new")   -- `new`: the optimizers' constructors
      end
    end
  end
  function walk_class(c, name, internal)
    if seen_class[c] then
      -- an alias of a class already listed: map its names too
      local mt = getmetatable(c)
      if type(mt) == "table" and mt.__call then byname[name .. "()"] = byname[seen_class[c] .. "()"] end
      for _, k in ipairs(sorted_keys(c)) do
        if type(rawget(c, k)) == "function" then byname[name .. "." .. k] = rawget(c, k) end
      end
      return
    end
    seen_class[c] = name
    local mt = getmetatable(c)
    if type(mt) == "table" and mt.__call and not internal then add(name .. "()", mt.__call) end
    walk_methods(c, name)
    -- a parent that is not exported itself (e.g. the chain supernets' base)
    local parent = rawget(c, "super") or (type(mt) == "table" and type(mt.__index) == "table" and mt.__index)
    if parent and not seen_class[parent] and parent ~= nasrt.nn.Module then
      local pname = rawget(parent, "__name")
      walk_class(parent, exported[parent] or
        (name:match("^(.*)%.") .. "." .. (type(pname) == "string" and pname or "Base")),
        not exported[parent])
    end
  end
  local function walk_lib(t, prefix)
    for _, k in ipairs(sorted_keys(t)) do   -- exported classes keep their names as parents
      local v = t[k]
      if is_class(v) and not exported[v] then exported[v] = prefix .. "." .. k end
    end
    for _, k in ipairs(sorted_keys(t)) do
      local v = t[k]
      if type(v) == "function" then add(prefix .. "." .. k, v)
      elseif is_class(v) then walk_class(v, prefix .. "." .. k) end
    end
  end
  -- classes first where they are defined, so names are stable
  walk_class(nasrt.nn.Module, "nn.Module")
  walk_lib(nasrt, "nasrt")
  for _, sub in ipairs { "F", "io", "data", "sampler", "_optim", "dist", "nn", "nn.util",
                         "nn.init", "optim", "search", "bench", "blocks", "supernet", "interop" } do
    local t = nasrt
    for p in sub:gmatch("[^.]+") do t = t[p] end
    walk_lib(t, sub)
  end
  walk_lib(require "nasrt.recipe", "recipe")
  local reg = debug.getregistry()
  walk_methods(nasrt.Tensor, "Tensor")
  walk_methods(reg["nasrt.Dataset"].__index, "Dataset")
  walk_methods(reg["nasrt.Loader"].__index, "Loader")
  -- metamethods of the C userdata (operators, #, tostring, fields)
  for _, ud in ipairs { { "nasrt.Tensor", "Tensor" }, { "nasrt.Dataset", "Dataset" },
                        { "nasrt.Loader", "Loader" } } do
    local mt = reg[ud[1]]
    for _, k in ipairs(sorted_keys(mt)) do
      if type(mt[k]) == "function" then add(ud[2] .. "." .. k, mt[k]) end
    end
  end
  for _, kind in ipairs { "uniform", "strict_fair", "flops_bins", "attentive", "sandwich" } do
    walk_methods(reg["nasrt.sampler." .. kind].__index, "sampler." .. kind)
  end
  -- Lua objects, through an instance each
  local S = nasrt.search
  local score = function(a) return a[1] end
  local objs = {
    { "search.evolution", S.evolution { choices = { 2, 2 }, score = score, epochs = 1, population = 2,
                                        select = 1, mutation = 1, crossover = 1 } },
    { "search.rea", S.rea { choices = { 2, 2 }, score = score, cycles = 2, population = 2, sample = 1 } },
    { "search.random", S.random { choices = { 2, 2 }, score = score, n = 1 } },
    { "search.pareto", S.pareto { choices = { 2, 2 }, score = score, flops = score, iterations = 1,
                                  population = 2, mutation = 1, crossover = 1 } },
    { "bench.NB201", nasrt.bench.nb201() },
  }
  for _, o in ipairs(objs) do
    local cls = getmetatable(o[2])
    walk_methods(cls, o[1])
    local base = getmetatable(cls)
    if type(base) == "table" and type(base.__index) == "table" and not seen_class[base.__index] then
      seen_class[base.__index] = true
      walk_methods(base.__index, "search.Searcher")
    end
  end
  return list, byname
end

--- The group a public name belongs to, or nil.
function M.group_of(name)
  for g, prefixes in pairs(M.GROUPS) do
    for _, p in ipairs(prefixes) do
      if name:sub(1, #p) == p then return g end
    end
  end
end

--- True when a method takes nothing but self (so a wrong self is the only
-- bad call it has): a guarded Lua method whose original has one parameter.
function M.self_only(e)
  if not (e.method and guard.guarded(e.fn)) then return false end
  local info = debug.getinfo(guard.original(e.fn), "u")
  return info.nparams == 1 and not info.isvararg
end

--- The wrong-self sweep of a group: every method is called with self = 5
-- (no arguments) and must raise naming itself.  Returns the number of
-- methods called and a list of failures.
function M.sweep(group)
  local n, failures = 0, {}
  for _, e in ipairs((M.api())) do
    local short = e.name:match("([%w_]+)$")
    if e.method and M.group_of(e.name) == group and not short:match("^__") then
      n = n + 1
      local ok, err = pcall(e.fn, 5)
      local want = guard.guarded(e.fn) and ": self is a number" or short
      if ok then
        failures[#failures + 1] = e.name .. ": no error"
      elseif type(err) ~= "string" or not err:find(want, 1, true) then
        failures[#failures + 1] = ("%s: message %q lacks %q"):format(e.name, tostring(err), want)
      end
    end
  end
  return n, failures
end

--- Runs one bad call; returns true or false, why.
function M.check(case)
  local ok, err = pcall(case[3])
  if ok then return false, "no error" end
  if type(err) ~= "string" then
    return false, ("error value is a %s, not a message"):format(type(err))
  end
  for i = 4, #case do
    if not err:find(case[i], 1, true) then
      return false, ("message %q lacks %q"):format(err, case[i])
    end
  end
  return true
end

--- Loads the cases of a group (spec/misuse/<group>.lua).
function M.cases(group)
  return require("misuse." .. group)
end

--- Defines the busted block of a group: one `it` per bad call, then the
-- coverage of the group's public functions.  `env` is the spec file's
-- _ENV (where busted puts describe and it).
function M.run(env, group, min_cases)
  local describe, it, assert = env.describe, env.it, env.assert
  local cases = M.cases(group)
  local _, byname = M.api()
  describe(("misuse (%s): bad calls raise Lua errors that name the function"):format(group), function()
    for _, c in ipairs(cases) do
      it(c[1] .. ": " .. c[2], function()
        local ok, why = M.check(c)
        assert(ok, c[1] .. " (" .. c[2] .. "): " .. tostring(why))
      end)
    end
    it("names only public functions of the group", function()
      for _, c in ipairs(cases) do
        assert(byname[c[1]], ("case %q: %s is not a public function"):format(c[2], c[1]))
        assert(M.group_of(c[1]) == group, ("case %q: %s is not in group %s"):format(c[2], c[1], group))
      end
    end)
    it(("has at least %d cases and covers every public function of the group"):format(min_cases), function()
      assert(#cases >= min_cases, ("%d cases, expected at least %d"):format(#cases, min_cases))
      local covered = {}
      for _, c in ipairs(cases) do if byname[c[1]] then covered[byname[c[1]]] = true end end
      local missing = {}
      for _, e in ipairs((M.api())) do
        if M.group_of(e.name) == group and not covered[e.fn] and not M.NO_BAD_CALL[e.name]
            and not M.self_only(e) then
          missing[#missing + 1] = e.name
        end
      end
      assert(#missing == 0, "no misuse case for: " .. table.concat(missing, ", "))
    end)
    it("every method refuses a wrong self, naming itself", function()
      local n, failures = M.sweep(group)
      assert(#failures == 0, ("%d of %d methods: %s"):format(#failures, n, table.concat(failures, "; ")))
    end)
    it("leaves the process usable afterwards", function()
      assert.are.equal(6, nasrt.ones({ 2, 3 }):sum():item())
    end)
  end)
end

return M
