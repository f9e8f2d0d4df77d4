--- nasrt.interop: architectures and weights in the forms other NAS code
-- reads.
--
-- **Architectures.** A description is a table with a `kind`:
--
-- * `{kind = "nb201", arch = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"}` — a
--   NAS-Bench-201 cell (`genes` = the 6 op indices of nasrt.bench);
-- * `{kind = "darts", genotype = g}` — a DARTS genotype table
--   (`{normal=, normal_concat=, reduce=, reduce_concat=}`, Att-DARTS
--   triples and bottlenecks included), one AGNAS cell
--   (`Normal_Genotype` / `Reduce_Genotype`), or a list of them: AGNAS's five
--   cell types, or one genotype per cell;
-- * `{kind = "macro", arch = {2, 1, 7, ...}, names = ?, layout = ?}` — a
--   path through a chain supernet (AGNAS macro, SPOS, FairNAS): one choice
--   index per layer, the chosen blocks' names and the supernet layout.
--
-- Each has three outside forms, and every one reads back to the same
-- description: the text form (`arch_to_text`: the NB201 string, DARTS'
-- printed `Genotype(...)`, or `macro:2,1,7`), JSON (`arch_to_json`: the
-- record the recipes write as arch.json, which `recipes/train.lua --arch`
-- takes) and files (`save_arch` / `load_arch`).  Descriptions print as
-- their text form.
--
-- **Weights.** `export_npy(model, dir)` writes one numpy `.npy` file per
-- state_dict tensor (parameters and persistent buffers, float32, C order),
-- named by its parameter path (`cells.0.edges.1.op.1.weight.npy`), plus
-- `manifest.json` (name, file, shape, kind of each); `import_npy(model, dir)`
-- reads them back through `load_state_dict`.  From Python:
--
--     import json, numpy as np
--     m = json.load(open(d + "/manifest.json"))
--     sd = {t["name"]: np.load(d + "/" + t["file"]) for t in m["tensors"]}
--     # PyTorch: model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
--
-- and a folder of `<state_dict key>.npy` files written by numpy (no
-- manifest) imports too.  `nasrt.nn` modules have the same as methods:
-- `model:export_npy(dir)`, `model:import_npy(dir)`.
-- @module nasrt.interop
-- @usage
-- local interop = require "nasrt.interop"
-- local a = interop.arch("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|")
-- interop.save_arch("cell.json", a)            -- arch.json record
-- print(interop.load_arch("cell.json"))        -- the NB201 string again
-- net:export_npy("weights")                    -- one .npy per tensor + manifest.json
local core = require "nasrt.core"
local bench = require "nasrt.bench"

local M = {}

-- dkjson and LuaFileSystem (Debian lua-dkjson, lua-filesystem) are required
-- on first use, so `require "nasrt"` does not need them.
local function json() return require "dkjson" end
local function lfs() return require "lfs" end

-- the genotype printer/parser (nasrt.supernet needs nasrt.nn, which loads
-- this module lazily, so require it on first use)
local function darts() return require "nasrt.supernet.darts" end

local Arch = {}
Arch.__index = Arch

local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  return t
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function is_list(t) return type(t) == "table" and t[1] ~= nil end

local function is_genotype(t)
  return type(t) == "table" and (type(t.normal) == "table" or type(t.reduce) == "table")
end

-- ------------------------------------------------------------ descriptions

local function new(kind, fields)
  local a = setmetatable({kind = kind}, Arch)
  for k, v in pairs(fields) do a[k] = v end
  return a
end

local function nb201(s, fn)
  local ok, err = pcall(bench.parse_nb201, s)
  if not ok then return nil, ("%s: %s"):format(fn, tostring(err):gsub("^parse_nb201: ", "")) end
  local canon = bench.nb201_string(bench.parse_nb201(s))
  return new("nb201", {arch = canon, genes = bench.nb201_encode(canon)})
end

-- A genotype table or list, checked by printing and parsing it again
-- (that also gives integer inputs and plain tables).
local function genotype(g, fn)
  local ok, text = pcall(darts().genotype_to_string, g)
  if not ok then return nil, ("%s: not a genotype: %s"):format(fn, tostring(text)) end
  local back, err = darts().genotype_from_string(text)
  if not back then return nil, ("%s: %s"):format(fn, err) end
  return new("darts", {genotype = back})
end

local function macro(path, names, layout, fn)
  if not is_list(path) then return nil, fn .. ": a macro path must be a non-empty list of choice indices" end
  local arch = {}
  for i, v in ipairs(path) do
    local n = math.tointeger(v)
    if not n or n < 0 then
      return nil, ("%s: macro path entry %d is %s, expected a choice index"):format(fn, i, tostring(v))
    end
    arch[i] = n
  end
  if names ~= nil and (type(names) ~= "table" or #names ~= #arch) then
    return nil, ("%s: 'names' must list one block name per layer (%d)"):format(fn, #arch)
  end
  return new("macro", {arch = arch, names = copy(names), layout = copy(layout)})
end

--- Architecture description from text: an NB201 string, `macro:2,1,7`
-- (or bare `2,1,7`), or DARTS genotype text (`Genotype(...)`, a
-- `NAME = Genotype(...)` line, AGNAS' `[Normal_Genotype(...), ...]`;
-- `#` comments and newlines allowed).
-- @tparam string s
-- @return description, or nil, message when the text is none of these
function M.arch_from_text(s)
  local fn = "arch_from_text"
  if type(s) ~= "string" then error(("%s: expected a string, got %s"):format(fn, type(s)), 2) end
  local t = trim(s)
  local first = t
  for line in t:gmatch("[^\n]+") do
    local l = trim(line)
    if l ~= "" and not l:match("^#") then first = l break end
  end
  if first:sub(1, 1) == "|" then return nb201(first, fn) end
  local body = first:match("^macro:%s*(.*)$") or (first:match("^[%d%s,]+$") and first)
  if body then
    local path = {}
    for d in body:gmatch("[^,%s]+") do path[#path + 1] = tonumber(d) or d end
    return macro(path, nil, nil, fn)
  end
  local g, err = darts().genotype_from_string(t)
  if not g then return nil, ("%s: not an NB201 string, macro path or genotype (%s)"):format(fn, err) end
  return new("darts", {genotype = g})
end

--- The text form: the NB201 string, DARTS' printed genotype(s), or
-- `macro:` and the path.
-- @param a a description (or anything `arch` takes)
-- @treturn string
function M.arch_to_text(a)
  a = M.arch(a)
  if a.kind == "nb201" then return a.arch end
  if a.kind == "macro" then return "macro:" .. table.concat(a.arch, ",") end
  return darts().genotype_to_string(a.genotype)
end

Arch.__tostring = M.arch_to_text

--- Architecture description from a JSON record (text or decoded table):
-- what `arch_to_json` writes and every arch.json the recipes write
-- (types nb201, darts, darts_cells, agnas (micro: `cell_types` or
-- `genotypes`), agnas_macro, macro; else its `text` field).
-- @param rec JSON text or a decoded table
-- @return description, or nil, message
function M.arch_from_json(rec)
  local fn = "arch_from_json"
  if type(rec) == "string" then
    local v, _, err = json().decode(rec)
    if err or type(v) ~= "table" then
      return nil, ("%s: bad JSON (%s)"):format(fn, tostring(err or "not an object"))
    end
    rec = v
  end
  if type(rec) ~= "table" then error(("%s: expected JSON text or a table, got %s"):format(fn, type(rec)), 2) end
  local ty = rec.type
  if ty == "nb201" or (type(rec.arch) == "string" and rec.arch:sub(1, 1) == "|") then
    if type(rec.arch) ~= "string" then return nil, fn .. ": an nb201 record needs an 'arch' string" end
    return nb201(rec.arch, fn)
  end
  if ty == "agnas_macro" or ty == "macro" then
    return macro(rec.arch, rec.names, rec.supernet or rec.layout, fn)
  end
  if type(rec.cell_types) == "table" and #rec.cell_types > 0 then return genotype(rec.cell_types, fn) end
  if type(rec.genotypes) == "table" and #rec.genotypes > 0 then return genotype(rec.genotypes, fn) end
  if is_genotype(rec.genotype) then return genotype(rec.genotype, fn) end
  if type(rec.text) == "string" then return M.arch_from_text(rec.text) end
  return nil, ("%s: the record holds no architecture I know (type %s)"):format(fn, tostring(ty))
end

-- Sorted keys, so files diff cleanly (as nasrt.recipe writes JSON).
local function encode(v)
  local keys, seen = {}, {}
  local function collect(t)
    if type(t) ~= "table" or seen[t] then return end
    seen[t] = true
    for k, x in pairs(t) do
      if type(k) == "string" then keys[#keys + 1] = k end
      collect(x)
    end
  end
  collect(v)
  table.sort(keys)
  local uniq = {}
  for i, k in ipairs(keys) do if k ~= keys[i - 1] then uniq[#uniq + 1] = k end end
  return json().encode(v, {indent = true, keyorder = uniq})
end

--- The JSON record of an architecture (the arch.json format; `text` is
-- always the text form): `{type="nb201", arch=, genes=}`,
-- `{type="darts", genotype=, genotype_text=}` for one genotype,
-- `{type="darts_cells", cell_types=}` for AGNAS's five cell types or
-- `{type="darts_cells", genotypes=}` for one per cell, and
-- `{type="macro" | "agnas_macro" (with a layout), arch=, names=, supernet=}`.
-- @param a a description (or anything `arch` takes)
-- @treturn string JSON text
-- @treturn table the record
function M.arch_to_json(a)
  a = M.arch(a)
  local rec = {text = M.arch_to_text(a)}
  if a.kind == "nb201" then
    rec.type, rec.arch, rec.genes = "nb201", a.arch, copy(a.genes)
  elseif a.kind == "macro" then
    rec.type, rec.arch, rec.names, rec.supernet = a.layout and "agnas_macro" or "macro",
      copy(a.arch), copy(a.names), copy(a.layout)
  elseif is_list(a.genotype) then
    rec.type = "darts_cells"
    if #a.genotype == 5 then rec.cell_types = copy(a.genotype) else rec.genotypes = copy(a.genotype) end
  else
    rec.type, rec.genotype, rec.genotype_text = "darts", copy(a.genotype), rec.text
  end
  return encode(rec), rec
end

--- A description of anything that names an architecture: a description,
-- an NB201 string, genotype or macro text, a genotype table or a list of
-- them, a list of integers (a macro path), or an arch.json record table.
-- @return description
-- @raise "arch: ..." when it names none
function M.arch(x)
  local a, err
  if getmetatable(x) == Arch then return x
  elseif type(x) == "string" then a, err = M.arch_from_text(x)
  elseif is_genotype(x) or (is_list(x) and is_genotype(x[1])) then a, err = genotype(x, "arch")
  elseif is_list(x) and math.type(x[1]) == "integer" then a, err = macro(x, nil, nil, "arch")
  elseif type(x) == "table" and type(x.kind) == "string" then
    if x.kind == "nb201" then a, err = nb201(x.arch, "arch")
    elseif x.kind == "darts" then a, err = genotype(x.genotype, "arch")
    elseif x.kind == "macro" then a, err = macro(x.arch, x.names, x.layout, "arch")
    else err = ("arch: unknown kind %s (expected nb201, darts or macro)"):format(x.kind) end
  elseif type(x) == "table" then a, err = M.arch_from_json(x)
  else err = "arch: expected an architecture (string or table), got " .. type(x) end
  if not a then error(err, 2) end
  return a
end

--- Writes an architecture to a file, atomically.
-- @tparam string path
-- @param a a description (or anything `arch` takes)
-- @tparam[opt] string format "json" or "text" (default: json for a `.json` path)
-- @return true, or nil, message when the file cannot be written
function M.save_arch(path, a, format)
  if type(path) ~= "string" then error("save_arch: path must be a string", 2) end
  format = format or (path:match("%.json$") and "json" or "text")
  if format ~= "json" and format ~= "text" then
    error(("save_arch: format must be json or text, got %s"):format(tostring(format)), 2)
  end
  local text = format == "json" and M.arch_to_json(a) or M.arch_to_text(a)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, "save_arch: " .. err end
  f:write(text, "\n")
  f:close()
  local ok, rerr = os.rename(tmp, path)
  if not ok then
    os.remove(tmp)
    return nil, "save_arch: " .. tostring(rerr)
  end
  return true
end

--- Reads an architecture from a file (JSON record or text) or, when no
-- such file exists, from the string itself.
-- @tparam string path_or_text
-- @return description, or nil, message
function M.load_arch(path_or_text)
  if type(path_or_text) ~= "string" then error("load_arch: expected a path or text", 2) end
  local text, source = path_or_text, nil
  if lfs().attributes(path_or_text, "mode") == "file" then
    local f, err = io.open(path_or_text, "rb")
    if not f then return nil, "load_arch: " .. err end
    text, source = f:read("a"), path_or_text
    f:close()
  end
  local a, err
  if trim(text):sub(1, 1) == "{" then a, err = M.arch_from_json(text)
  else a, err = M.arch_from_text(text) end
  if not a and source then err = ("%s (%s)"):format(err, source) end
  return a, err
end

-- ------------------------------------------------------------------ weights

M.MANIFEST = "manifest.json"

local function check_module(model, fn)
  if type(model) ~= "table" or type(model.state_dict) ~= "function" then
    error(("%s: expected an nn module (with state_dict), got %s"):format(fn, type(model)), 3)
  end
end

local function mkdirs(path)
  local acc = path:sub(1, 1) == "/" and "/" or ""
  for part in path:gmatch("[^/]+") do
    acc = acc .. part
    if lfs().attributes(acc, "mode") == nil then
      local ok, err = lfs().mkdir(acc)
      if not ok and lfs().attributes(acc, "mode") ~= "directory" then return nil, err end
    end
    acc = acc .. "/"
  end
  return true
end

-- The file name of a state_dict key: the key itself where it is a safe
-- file name (dotted paths always are), else with the other characters
-- replaced; clashes get a numeric suffix (the manifest has the mapping).
local function file_name(key, used)
  local base = key:gsub("[^%w%._%-]", "_")
  if base == "" or base:sub(1, 1) == "." then base = "_" .. base end
  local name, k = base .. ".npy", 1
  while used[name] or name == M.MANIFEST do
    k = k + 1
    name = ("%s~%d.npy"):format(base, k)
  end
  used[name] = true
  return name
end

--- Writes a model's state_dict as one `.npy` per tensor plus manifest.json.
-- @tparam Module model any nasrt.nn module
-- @tparam string dir the folder (created when missing; existing files of
--   the same names are replaced)
-- @treturn table the manifest `{format="nasrt-npy", version=1, model=,
--   num_parameters=, tensors={{name=, file=, shape=, dtype="<f4",
--   kind="parameter"|"buffer"}, ...}}` (state_dict order)
-- @return nil, message when a file cannot be written
function M.export_npy(model, dir)
  local fn = "export_npy"
  check_module(model, fn)
  if type(dir) ~= "string" or dir == "" then error(fn .. ": dir must be a folder path", 2) end
  local ok, err = mkdirs(dir)
  if not ok then return nil, ("%s: cannot create %s: %s"):format(fn, dir, tostring(err)) end
  local sd, keys = model:state_dict()
  local params = {}
  for _, nt in ipairs(model:named_parameters()) do params[nt[1]] = true end
  local used, tensors = {}, {}
  for _, key in ipairs(keys) do
    local t = sd[key]
    local file = file_name(key, used)
    local okw, werr = core.io.save_npy(dir .. "/" .. file, t, {sync = false})
    if not okw then return nil, ("%s: %s"):format(fn, werr) end
    tensors[#tensors + 1] = {name = key, file = file, shape = t:shape(), dtype = "<f4",
                             kind = params[key] and "parameter" or "buffer"}
  end
  local manifest = {format = "nasrt-npy", version = 1, model = model.__name,
                    num_parameters = model:num_parameters(), tensors = tensors}
  local path = dir .. "/" .. M.MANIFEST
  local f, ferr = io.open(path .. ".tmp", "wb")
  if not f then return nil, ("%s: %s"):format(fn, ferr) end
  f:write(encode(manifest), "\n")
  f:close()
  local okr, rerr = os.rename(path .. ".tmp", path)
  if not okr then return nil, ("%s: %s"):format(fn, rerr) end
  return manifest
end

--- Loads weights written by export_npy (or a folder of `<key>.npy` files
-- without a manifest, e.g. from numpy) into a model, through
-- load_state_dict.
-- @tparam Module model
-- @tparam string dir
-- @tparam[opt=true] boolean strict missing or unexpected keys raise
-- @treturn table load_state_dict's `{missing_keys=, unexpected_keys=}`
-- @return nil, message when the folder, manifest or a file cannot be read
-- @raise a shape mismatch (always) or, strict, a key mismatch (load_state_dict)
function M.import_npy(model, dir, strict)
  local fn = "import_npy"
  check_module(model, fn)
  if type(dir) ~= "string" then error(fn .. ": dir must be a folder path", 2) end
  if lfs().attributes(dir, "mode") ~= "directory" then
    return nil, ("%s: %s is not a folder"):format(fn, dir)
  end
  local entries = {}
  local mf = io.open(dir .. "/" .. M.MANIFEST, "rb")
  if mf then
    local text = mf:read("a")
    mf:close()
    local m, _, err = json().decode(text)
    if type(m) ~= "table" or type(m.tensors) ~= "table" then
      return nil, ("%s: %s/%s: %s"):format(fn, dir, M.MANIFEST, tostring(err or "no 'tensors' list"))
    end
    for i, t in ipairs(m.tensors) do
      if type(t) ~= "table" or type(t.name) ~= "string" or type(t.file) ~= "string" then
        return nil, ("%s: %s/%s: tensors[%d] needs a name and a file"):format(fn, dir, M.MANIFEST, i)
      end
      entries[#entries + 1] = {t.name, t.file, t.shape}
    end
  else
    for file in lfs().dir(dir) do
      local key = file:match("^(.+)%.npy$")
      if key then entries[#entries + 1] = {key, file} end
    end
    table.sort(entries, function(x, y) return x[1] < y[1] end)
  end
  local sd = {}
  for _, e in ipairs(entries) do
    local t, err = core.io.load_npy(dir .. "/" .. e[2])
    if not t then return nil, ("%s: %s"):format(fn, err) end
    if e[3] then
      local s = t:shape()
      local same = #s == #e[3]
      for k = 1, #s do same = same and s[k] == e[3][k] end
      if not same then
        return nil, ("%s: %s has shape [%s], the manifest says [%s]"):format(fn, e[2],
          table.concat(s, ","), table.concat(e[3], ","))
      end
    end
    sd[e[1]] = t
  end
  return model:load_state_dict(sd, strict)
end

return M
