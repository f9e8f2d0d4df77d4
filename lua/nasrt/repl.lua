--- nasrt.repl: what the `nasrt` REPL adds to a plain Lua prompt.
--
-- The host (runtime/host.c) reads and edits lines; everything it shows or
-- completes comes from here, so it can be tested without a terminal:
--
-- * `show(v)`: how a result is displayed -- tensors as PyTorch prints them,
--   modules as a layer tree with parameter counts, supernets as a summary
--   (cells, edges, ops, parameters, FLOPs), samplers, optimizers and other
--   objects with their settings, plain tables as nested constructors;
-- * `complete(text)`: Tab completion of globals, `nasrt.*`, fields
--   (`net.<Tab>`) and methods (`t:<Tab>`), with raw access only, so
--   completing never runs a metamethod;
-- * `help(obj)`: the doc comment of a Lua function or class (read from its
--   source file) or of a C function (from the table the build generates out
--   of `doc/core.luadoc` and the `/***` comments of modules/*.c);
-- * `time(fn, ...)`: wall and CPU time of a call;
-- * `rewrite(line)`: the `%time stmt` and `:load RUNDIR` shortcuts.
--
-- Like Torch7's trepl, but the printers are plain functions over the
-- library's own classes.
-- @module nasrt.repl
-- @usage
-- nasrt> help(nasrt.F.conv2d)
-- nasrt> time(function() return net(x) end)
-- nasrt> %time net(x)
local core = require "nasrt.core"

local M = {}

local is_tensor = core.is_tensor
local rawget, rawlen, type, getmeta = rawget, rawlen, type, debug.getmetatable

-- ------------------------------------------------------------ helpers

--- 1234567 -> "1,234,567".
local function commas(n)
  local s = tostring(math.tointeger(n) or n)
  local sign, int, rest = s:match("^([-]?)(%d+)(.*)$")
  if not int then return s end
  int = int:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return sign .. int .. rest
end
M.commas = commas

--- 23400000 -> "23.40 M" (k, M, G with two decimals; small numbers as is).
local function si(n)
  local a = math.abs(n)
  if a >= 1e9 then return ("%.2f G"):format(n / 1e9) end
  if a >= 1e6 then return ("%.2f M"):format(n / 1e6) end
  if a >= 1e3 then return ("%.2f k"):format(n / 1e3) end
  return tostring(n)
end
M.si = si

local function is_module(v)
  return type(v) == "table" and rawget(v, "_child_names") ~= nil and getmeta(v) ~= nil
end

local function class_name(v)
  local mt = getmeta(v)
  local n = type(mt) == "table" and rawget(mt, "__name")
  return type(n) == "string" and n or nil
end

-- the sampler metatables are named "nasrt.sampler.<kind>"
local function is_sampler(v)
  if type(v) ~= "userdata" then return false end
  local n = class_name(v)
  return n ~= nil and n:match("^nasrt%.sampler%.") ~= nil
end

local function numel_sum(list)
  local n = 0
  for _, t in ipairs(list) do n = n + t:numel() end
  return n
end

-- ------------------------------------------------------------ values

local show_value

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function show_key(k)
  if is_identifier(k) then return k end
  if type(k) == "string" then return "[" .. ("%q"):format(k) .. "]" end
  return "[" .. tostring(k) .. "]"
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

-- A plain table as a constructor: `{1, 2, x = {...}}`, one line when it
-- fits in `width` columns, else one entry per line; nesting stops at depth
-- 4 and long tables are cut after 50 entries.
local function show_table(t, indent, seen, depth)
  if seen[t] then return "{...} -- cycle" end
  if depth > 4 then return "{...}" end
  seen[t] = true
  local parts, n = {}, rawlen(t)
  local shown = 0
  for i = 1, n do
    shown = shown + 1
    if shown > 50 then break end
    parts[#parts + 1] = show_value(rawget(t, i), indent .. "  ", seen, depth + 1)
  end
  local keys = {}
  for k in next, t do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_order)
  for _, k in ipairs(keys) do
    shown = shown + 1
    if shown > 50 then break end
    parts[#parts + 1] = show_key(k) .. " = " .. show_value(rawget(t, k), indent .. "  ", seen,
      depth + 1)
  end
  local total = n + #keys
  if total > 50 then parts[#parts + 1] = ("... (%d entries)"):format(total) end
  seen[t] = nil
  if #parts == 0 then return "{}" end
  local one = "{" .. table.concat(parts, ", ") .. "}"
  if #one + #indent <= 78 and not one:find("\n") then return one end
  return "{\n" .. indent .. "  " .. table.concat(parts, ",\n" .. indent .. "  ") .. "\n" ..
    indent .. "}"
end

-- An object of a Lua class without __tostring (a schedule, a searcher...):
-- its class name and its public scalar and short-list fields.
local function show_object(v, name)
  local keys = {}
  for k, x in next, v do
    local tx = type(x)
    if type(k) == "string" and k:sub(1, 1) ~= "_" and
        (tx == "number" or tx == "string" or tx == "boolean" or
         (tx == "table" and getmeta(x) == nil and rawlen(x) > 0 and rawlen(x) <= 8)) then
      keys[#keys + 1] = k
    end
  end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local x = v[k]
    local s = type(x) == "table" and show_table(x, "", {}, 4) or
              type(x) == "string" and ("%q"):format(x) or tostring(x)
    parts[#parts + 1] = k .. "=" .. s
  end
  return name .. "(" .. table.concat(parts, ", ") .. ")"
end

function show_value(v, indent, seen, depth)
  local tv = type(v)
  if tv == "string" then return ("%q"):format(v) end
  if tv == "table" and getmeta(v) == nil then return show_table(v, indent, seen, depth) end
  local s = tostring(v)
  return (s:gsub("\n", "\n" .. indent))
end

-- ------------------------------------------------------------ modules

-- own parameters of m (not its children's)
local function own_params(m)
  local n = 0
  for _, name in ipairs(rawget(m, "_param_names") or {}) do
    local p = rawget(m, name)
    if is_tensor(p) then n = n + p:numel() end
  end
  return n
end

-- subtree parameter count, shared tensors counted once (as num_parameters)
local function tree_params(m)
  return m:num_parameters()
end

-- Lines of the layer tree of m, PyTorch's repr layout, each line paired
-- with the parameter count to show on it (or false).
local function tree_lines(m, out, prefix, indent)
  local mt = getmeta(m)
  local custom = mt and rawget(mt, "__tostring")
  local nn = package.loaded["nasrt.nn"]
  if custom and nn and custom ~= nn.Module.__tostring then
    -- a class with its own printer: keep its text, count on the first line
    local s = tostring(m)
    local first = true
    for l in (s .. "\n"):gmatch("(.-)\n") do
      out[#out + 1] = { indent .. (first and prefix or "") .. l, first and tree_params(m) }
      first = false
    end
    return
  end
  local extra = m:extra_repr()
  local extras = {}
  if extra ~= "" then
    for l in (extra .. "\n"):gmatch("(.-)\n") do extras[#extras + 1] = l end
  end
  local children = m:named_children()
  local name = rawget(mt, "__name") or "Module"
  local n = tree_params(m)
  if #children == 0 then
    local body = #extras == 0 and "" or #extras == 1 and extras[1] or nil
    if body then
      out[#out + 1] = { indent .. prefix .. name .. "(" .. body .. ")", n > 0 and n }
      return
    end
  end
  out[#out + 1] = { indent .. prefix .. name .. "(", n > 0 and n }
  for _, l in ipairs(extras) do out[#out + 1] = { indent .. "  " .. l, false } end
  for _, nc in ipairs(children) do
    tree_lines(nc[2], out, "(" .. nc[1] .. "): ", indent .. "  ")
  end
  out[#out + 1] = { indent .. ")", false }
end

--- The layer tree of a module (PyTorch's repr) with the number of
-- parameters of every module that has any, and a total line.
-- @tparam nasrt.nn.Module m
-- @treturn string
function M.module_tree(m)
  local rows = {}
  tree_lines(m, rows, "", "")
  local w = 0
  for _, r in ipairs(rows) do
    if r[2] and #r[1] > w then w = #r[1] end
  end
  w = math.min(w, 72)
  local lines = {}
  for i, r in ipairs(rows) do
    if r[2] then
      lines[i] = r[1] .. (" "):rep(math.max(1, w - #r[1] + 2)) .. "# " .. commas(r[2])
    else
      lines[i] = r[1]
    end
  end
  local n = m:num_parameters()
  lines[#lines + 1] = ("parameters: %s (%s of float32)"):format(commas(n), M.bytes(4 * n))
  return table.concat(lines, "\n")
end

--- 1536 -> "1.50 KiB".
function M.bytes(b)
  if b >= 2 ^ 30 then return ("%.2f GiB"):format(b / 2 ^ 30) end
  if b >= 2 ^ 20 then return ("%.2f MiB"):format(b / 2 ^ 20) end
  if b >= 2 ^ 10 then return ("%.2f KiB"):format(b / 2 ^ 10) end
  return ("%d B"):format(b)
end

-- ------------------------------------------------------------ supernets

--- True for the weight-sharing supernets of nasrt.supernet (anything with
-- architecture parameters, a choice chain, or an elastic supernet).
function M.is_supernet(v)
  if not is_module(v) then return false end
  return type(v.arch_parameters) == "function" or
         (type(v.choices) == "function" and
          (type(v.flops_table) == "function" or type(v.sample_max) == "function"))
end

-- first Conv2d-like module with in_channels (the stem), depth first
local function first_conv(m)
  if type(rawget(m, "in_channels")) == "number" then return m end
  for _, c in ipairs(m:children()) do
    local f = first_conv(c)
    if f then return f end
  end
end

--- The input shape a supernet's cost is counted for: its own default
-- when it records one, else {1, C_in, 28, 28} for one channel
-- (Fashion-MNIST) and {1, C_in, 32, 32} otherwise (CIFAR).
function M.default_input(net)
  local d = rawget(net, "_default_shape")
  if type(d) == "table" then return { d[1], d[2], d[3], d[4] } end
  local conv = first_conv(net)
  local cin = conv and conv.in_channels or 3
  local size = rawget(net, "input_size")
  if type(size) ~= "number" then size = cin == 1 and 28 or 32 end
  return { 1, cin, size, size }
end

local function prod(list)
  local p = 1
  for _, v in ipairs(list) do p = p * v end
  return p
end

-- the search space as "choices per layer" and its size
local function space_line(choices)
  local same = true
  for i = 2, #choices do same = same and choices[i] == choices[1] end
  local desc = same and #choices > 0 and ("%d x %d choices"):format(#choices, choices[1]) or
    "choices {" .. table.concat(choices, ",") .. "}"
  local n = prod(choices)
  return ("%s, %s architectures"):format(desc, n < 2 ^ 53 and commas(n) or si(n))
end

--- A summary of a supernet: its kind and settings, cells (normal and
-- reduction), edges per cell and candidate ops per edge, or choice layers
-- and the size of the space, parameters (weights and architecture
-- parameters apart), and the cost of one forward pass: FLOPs (2 x MACs) of
-- the whole supernet for cell supernets (every candidate op runs, as in a
-- DARTS step), the smallest and largest path or subnet for single-path and
-- elastic supernets.
-- @tparam table net a supernet (see `is_supernet`)
-- @tparam[opt] {int,...} in_shape input shape for the cost (default `default_input(net)`)
-- @treturn string
-- @treturn table the numbers: {cells=, normal=, reduction=, edges=, ops=,
--   params=, arch_params=, flops=, flops_min=, flops_max=, in_shape=}
function M.summary(net, in_shape)
  in_shape = in_shape or M.default_input(net)
  local info = { params = net:num_parameters(), arch_params = 0, in_shape = in_shape }
  local lines = { ("%s(%s)"):format(class_name(net) or "Supernet", net:extra_repr()) }
  if type(net.arch_parameters) == "function" then
    info.arch_params = numel_sum(net:arch_parameters())
  end
  local shape = "[" .. table.concat(in_shape, ",") .. "]"
  local cells = rawget(net, "_cells") or (is_module(rawget(net, "cells")) and net.cells:children())
  if type(net.choices) == "function" then
    -- single-path chain or elastic supernet
    local ch = net:choices()
    info.cells = #ch
    lines[#lines + 1] = ("  choice layers: %d (%s)"):format(#ch, space_line(ch))
    local lo, hi
    if type(net.flops_table) == "function" then
      local t = net:flops_table(in_shape)
      lo, hi = t.base, t.base
      for _, row in ipairs(t.per_gene) do
        lo, hi = lo + math.min(table.unpack(row)), hi + math.max(table.unpack(row))
      end
    else
      lo, hi = net:flops(net:sample_min()), net:flops(net:sample_max())
      shape = "its own resolution"
    end
    info.flops_min, info.flops_max = 2 * lo, 2 * hi
    lines[#lines + 1] = ("  FLOPs per path (%s): %s .. %s"):format(shape, si(2 * lo), si(2 * hi))
  elseif cells then
    local normal, reduction = 0, 0
    local edges, ops
    for _, c in ipairs(cells) do
      if rawget(c, "reduction") then reduction = reduction + 1
      elseif rawget(c, "edges") then normal = normal + 1 end
      local e = rawget(c, "edges")
      if is_module(e) and not edges then edges = #e:children() end
    end
    ops = type(rawget(net, "primitives")) == "table" and #net.primitives or nil
    if not ops and rawget(net, "alpha") then ops = net.alpha:shape()[2] end
    if not ops and edges and edges > 0 then
      local e1 = cells[1] and rawget(cells[1], "edges") and cells[1].edges:children()[1]
      if e1 then ops = #(rawget(e1, "ops") or e1):children() end
    end
    info.cells, info.normal, info.reduction = #cells, normal, reduction
    info.edges, info.ops = edges, ops
    local other = #cells - normal - reduction
    lines[#lines + 1] = ("  cells: %d (%d normal, %d reduction%s)"):format(#cells, normal,
      reduction, other > 0 and (", %d fixed, not searched"):format(other) or "")
    if edges then
      lines[#lines + 1] = ("  edges: %d per cell, %s candidate ops per edge%s"):format(edges,
        tostring(ops or "?"), type(rawget(net, "primitives")) == "table" and
        " {" .. table.concat(net.primitives, ", ") .. "}" or "")
    end
    local ok, macs = pcall(net.macs, net, in_shape)
    if ok then
      info.flops = 2 * macs
      lines[#lines + 1] = ("  FLOPs (every candidate op, input %s): %s"):format(shape, si(2 * macs))
    end
  end
  lines[#lines + 1] = ("  parameters: %s weights (%s)%s"):format(commas(info.params),
    M.bytes(4 * info.params), info.arch_params > 0 and
    (", %s architecture"):format(commas(info.arch_params)) or "")
  return table.concat(lines, "\n"), info
end

-- ------------------------------------------------------------ samplers

--- A sampler's settings: kind, genes and choices, the space's size, the
-- FLOPs bins of a FLOPs-aware sampler and its methods.
function M.sampler_summary(s)
  local lines = { tostring(s) }
  local ok, ch = pcall(s.choices, s)
  if ok and type(ch) == "table" then lines[#lines + 1] = "  " .. space_line(ch) end
  local methods = {}
  local mt = getmeta(s)
  local idx = mt and rawget(mt, "__index")
  if type(idx) == "table" then
    for k, f in next, idx do
      if type(f) == "function" and k:sub(1, 1) ~= "_" then methods[#methods + 1] = k end
    end
  end
  table.sort(methods)
  lines[#lines + 1] = "  methods: " .. table.concat(methods, ", ")
  return table.concat(lines, "\n")
end

-- ------------------------------------------------------------ show

--- How the REPL shows a value.
-- @param v any value
-- @treturn string
function M.show(v)
  local tv = type(v)
  if tv == "table" then
    if is_module(v) then
      if M.is_supernet(v) then
        return (M.summary(v)) .. "\n(print(net) shows the whole layer tree)"
      end
      return M.module_tree(v)
    end
    local mt = getmeta(v)
    if mt == nil then return show_table(v, "", {}, 0) end
    if type(mt) == "table" and rawget(mt, "__tostring") then return tostring(v) end
    local name = class_name(v)
    if name then return show_object(v, name) end
    return show_table(v, "", {}, 0)
  elseif is_sampler(v) then
    return M.sampler_summary(v)
  elseif tv == "function" then
    local name = M.name_of(v)
    return tostring(v) .. (name and ("  -- %s; help(%s)"):format(name, name) or "")
  end
  return tostring(v)
end

--- Prints each value with `show`, tab-separated like print.
function M.print(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = M.show((select(i, ...))) end
  io.write(table.concat(parts, "\t"), "\n")
end

-- ------------------------------------------------------------ completion

-- Where lookups in v continue: the metatable's __index if it is a table;
-- for an __index function, the first table upvalue of a C function (the
-- tensor methods) or the metatable itself for a Lua function (classes
-- that serve integer keys and fall back to the class, like nn.Sequential).
local function index_table(v)
  local mt = getmeta(v)
  if type(mt) ~= "table" then return nil end
  local idx = rawget(mt, "__index")
  if type(idx) == "function" then
    if debug.getinfo(idx, "S").what ~= "C" then return mt ~= v and mt or nil end
    for i = 1, 4 do
      local name, up = debug.getupvalue(idx, i)
      if not name then break end
      if type(up) == "table" then return up end
    end
    return nil
  end
  if type(idx) == "table" and idx ~= v then return idx end
  return nil
end

-- raw lookup of k in v, then along the __index chain
local function lookup(v, k)
  for _ = 1, 10 do
    if type(v) == "table" then
      local x = rawget(v, k)
      if x ~= nil then return x end
    end
    v = index_table(v)
    if v == nil then return nil end
  end
end

local KEYWORDS = { "and", "break", "do", "else", "elseif", "end", "false", "for", "function",
  "goto", "if", "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until",
  "while" }

--- Completions of the word before the cursor: a global, a keyword, or a
-- field (`a.b.<Tab>`) or method (`a:<Tab>`) of a value reached from the
-- globals.  Fields starting with `_` are offered only when the word does.
-- Functions get a "(" appended, tables a ".".  Never runs a metamethod.
-- @tparam string text e.g. "nasrt.F.con", "t:res", "net."
-- @treturn {string,...} sorted full completions ("nasrt.F.conv2d(")
function M.complete(text)
  local head, sep, word = text:match("^(.-)([.:])([%w_]*)$")
  local obj, out, seen = _G, {}, {}
  if not head then
    word = text
    if not word:match("^[%w_]*$") then return out end
    for _, k in ipairs(KEYWORDS) do
      if k:sub(1, #word) == word then out[#out + 1] = k; seen[k] = true end
    end
    head = ""
  else
    if head == "" then return out end
    for part in (head .. "."):gmatch("([^.]*)%.") do
      if not is_identifier(part) then return out end
      obj = lookup(obj, part)
      if obj == nil then return out end
    end
    head = head .. sep
  end
  local methods_only = sep == ":"
  local function add(k, x)
    if seen[k] or not is_identifier(k) or k:sub(1, #word) ~= word then return end
    if k:sub(1, 1) == "_" and word:sub(1, 1) ~= "_" then return end
    if methods_only and type(x) ~= "function" then return end
    seen[k] = true
    out[#out + 1] = head .. k .. (type(x) == "function" and "(" or
                                  (type(x) == "table" and not methods_only) and "." or "")
  end
  if is_tensor(obj) and not methods_only then
    for _, k in ipairs({ "grad", "grad_fn", "is_leaf" }) do add(k, "") end
  end
  local v = obj
  for _ = 1, 10 do
    if type(v) == "table" then
      for k, x in next, v do add(k, x) end
    end
    v = index_table(v)
    if v == nil then break end
  end
  table.sort(out)
  return out
end

-- ------------------------------------------------------------ names

-- the nasrt tree, searched breadth first for a value's name
local function search_name(target)
  local root = package.loaded["nasrt"] or core
  local queue, seen = { { root, "nasrt" } }, { [root] = true }
  local head = 1
  while queue[head] do
    local t, path = queue[head][1], queue[head][2]
    head = head + 1
    local keys = {}
    for k in next, t do if type(k) == "string" then keys[#keys + 1] = k end end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local x = rawget(t, k)
      local p = path .. (path:match("Tensor$") and ":" or ".") .. k
      if x == target and k:sub(1, 1) ~= "_" then return p end
    end
    for _, k in ipairs(keys) do
      local x = rawget(t, k)
      if type(x) == "table" and not seen[x] and k:sub(1, 1) ~= "_" and #queue < 5000 then
        seen[x] = true
        queue[#queue + 1] = { x, path .. "." .. k }
      end
    end
  end
  -- sampler methods live in the C metatables of the sampler kinds, not in
  -- the tree: "nasrt.Sampler:randint" (the name core.luadoc gives them)
  local reg = debug.getregistry()
  for _, kind in ipairs({ "uniform", "strict_fair", "flops_bins", "attentive", "sandwich" }) do
    local mt = reg["nasrt.sampler." .. kind]
    local methods = type(mt) == "table" and rawget(mt, "__index")
    if type(methods) == "table" then
      for k, x in next, methods do
        if x == target and type(k) == "string" then return "nasrt.Sampler:" .. k end
      end
    end
  end
end

--- The name of a value in the nasrt tree ("nasrt.F.conv2d",
-- "nasrt.Tensor:reshape", "nasrt.nn.Conv2d"), or nil.
function M.name_of(v)
  if v == nil then return nil end
  return search_name(v)
end

-- ------------------------------------------------------------ help

local file_cache = {}

local function file_lines(path)
  local lines = file_cache[path]
  if lines == nil then
    local f = io.open(path, "r")
    lines = false
    if f then
      lines = {}
      for l in f:lines() do lines[#lines + 1] = l end
      f:close()
    end
    file_cache[path] = lines
  end
  return lines or nil
end

-- the comment block ending right above line n (a `---` block), as lines
-- without the comment markers; nil when there is none
local function comment_above(lines, n)
  local i = n - 1
  local block = {}
  while i >= 1 and lines[i]:match("^%s*%-%-") do
    table.insert(block, 1, lines[i])
    i = i - 1
  end
  if #block == 0 then return nil end
  -- start at the last `---` line of the run (a run may hold several blocks)
  local start = 1
  for k = #block, 1, -1 do
    if block[k]:match("^%s*%-%-%-") and not block[k]:match("^%s*%-%-%-%-") then
      start = k
      break
    end
  end
  local out = {}
  for k = start, #block do
    out[#out + 1] = (block[k]:gsub("^%s*%-%-%-?%s?", ""))
  end
  return out
end

-- makes LDoc tags readable: "@tparam int n count" -> "  n (int): count"
local function format_doc(lines)
  local out = {}
  for _, l in ipairs(lines) do
    local tag, mod, rest = l:match("^%s*@(%w+)(%[?[^%]%s]*%]?)%s*(.*)$")
    if tag == "tparam" then
      local ty, name, desc = rest:match("^(%S+)%s+(%S+)%s*(.*)$")
      if ty then
        local opt = mod:match("^%[opt=?(.*)%]$")
        rest = ("  %s (%s%s)%s"):format(name, ty,
          opt and (", optional" .. (opt ~= "" and ", default " .. opt or "")) or "",
          desc ~= "" and ": " .. desc or "")
      end
      out[#out + 1] = rest
    elseif tag == "param" then
      out[#out + 1] = "  " .. rest
    elseif tag == "treturn" or tag == "return" then
      out[#out + 1] = "  returns " .. rest
    elseif tag == "raise" then
      out[#out + 1] = "  raises " .. rest
    elseif tag == "usage" then
      out[#out + 1] = "Usage:" .. (rest ~= "" and " " .. rest or "")
    elseif tag == "module" or tag == "type" or tag == "classmod" or tag == "function" or
           tag == "within" or tag == "local" or tag == "section" then
      -- structure tags say nothing to a reader at the prompt
    elseif tag then
      out[#out + 1] = "  " .. tag .. ": " .. rest
    else
      out[#out + 1] = l
    end
  end
  while #out > 0 and out[#out]:match("^%s*$") do out[#out] = nil end
  return table.concat(out, "\n")
end

-- the doc of a Lua function: its source line (the signature) and the
-- comment block above it
local function lua_function_doc(f)
  local info = debug.getinfo(f, "S")
  if info.what ~= "Lua" or info.source:sub(1, 1) ~= "@" then return nil end
  local lines = file_lines(info.source:sub(2))
  if not lines or not lines[info.linedefined] then return nil end
  local sig = lines[info.linedefined]:match("^%s*(.-)%s*$")
  local doc = comment_above(lines, info.linedefined)
  return sig, doc and format_doc(doc) or nil
end

-- a class table: the comment above `... class("Name"` in the file that
-- defines its methods
local function class_doc(cls)
  local name = rawget(cls, "__name")
  if type(name) ~= "string" then return nil end
  local files = {}
  for _, f in next, cls do
    if type(f) == "function" then
      local info = debug.getinfo(f, "S")
      if info.what == "Lua" and info.source:sub(1, 1) == "@" then files[info.source:sub(2)] = true end
    end
  end
  -- nn.class("Name"), optim's class("Name", ...), blocks' leaf("Name", ...)
  local pat = "%(%s*[\"']" .. name:gsub("%p", "%%%0") .. "[\"']"
  for path in pairs(files) do
    local lines = file_lines(path)
    for i, l in ipairs(lines or {}) do
      if l:find(pat) and (l:find("class(", 1, true) or l:find("leaf(", 1, true)) then
        local doc = comment_above(lines, i)
        if doc then return format_doc(doc) end
      end
    end
  end
  local init = rawget(cls, "__init") or rawget(cls, "new")
  if type(init) == "function" then
    local _, doc = lua_function_doc(init)
    return doc
  end
end

local cdoc_table

--- The doc table of the C functions (generated at build time as
-- nasrt/cdoc.lua from doc/core.luadoc and modules/*.c), or {} without it.
function M.cdoc()
  if cdoc_table == nil then
    local ok, t = pcall(require, "nasrt.cdoc")
    cdoc_table = ok and type(t) == "table" and t or {}
  end
  return cdoc_table
end

-- keys to try in the C doc table for a name like "nasrt.Tensor:reshape"
local function cdoc_lookup(name)
  local t = M.cdoc()
  local short = name:gsub("^nasrt%.", "")
  local cands = { short, short:gsub(":", "."), (short:gsub("^Tensor%.", "Tensor:")),
                  short:match("[.:]([%w_]+)$") or short }
  local seg = cands[4]
  local found
  for k in pairs(t) do   -- "sample" -> "Sampler:sample" (one match only)
    if k:sub(-#seg - 1) == ":" .. seg or k:sub(-#seg - 1) == "." .. seg then
      found = found == nil and k or false
    end
  end
  if found then cands[#cands + 1] = found end
  for _, k in ipairs(cands) do
    if t[k] then
      local lines = {}
      for l in (t[k] .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
      return k, format_doc(lines)
    end
  end
end

--- The doc text of a value: the signature and doc comment of a Lua
-- function, the class comment of a module or optimizer class (or of an
-- instance's class), the generated doc of a C function, or of a name given
-- as a string ("conv2d", "F.conv2d", "nasrt.nn.Linear").
-- @param obj a function, class, instance or name
-- @treturn string|nil the text
-- @treturn string|nil the name it was found under
function M.doc(obj)
  if type(obj) == "string" then
    local v = lookup(_G, "nasrt")
    local path = obj:gsub("^nasrt[.:]", "")
    for part in path:gmatch("[^.:]+") do
      v = v ~= nil and lookup(v, part) or nil
    end
    if v ~= nil then
      local text, name = M.doc(v)
      if text then return text, name end
    end
    local k, text = cdoc_lookup(obj)
    if k then return text, k end
    return nil
  end
  local name = M.name_of(obj)
  if type(obj) == "function" then
    local sig, doc = lua_function_doc(obj)
    if sig then return (doc and doc .. "\n" or "") .. "-- " .. sig, name end
    if name then
      local k, text = cdoc_lookup(name)
      if k then return text, name end
    end
    return nil, name
  end
  if type(obj) == "table" then
    local cls = obj
    if rawget(obj, "__name") == nil then cls = getmeta(obj) end
    if type(cls) == "table" then
      local doc = class_doc(cls)
      if doc then return doc, name or rawget(cls, "__name") end
    end
    if name then
      local k, text = cdoc_lookup(name)
      if k then return text, name end
    end
    -- a library table: its module doc, from the first function's file
    for k, f in pairs(obj) do
      if type(f) == "function" and type(k) == "string" then
        local info = debug.getinfo(f, "S")
        local lines = info.source:sub(1, 1) == "@" and file_lines(info.source:sub(2))
        if lines then
          for i, l in ipairs(lines) do
            if l:match("^%-%-%-") then
              local block = {}
              for j = i, #lines do
                if not lines[j]:match("^%-%-") then break end
                block[#block + 1] = lines[j]:gsub("^%-%-%-?%s?", "")
              end
              return format_doc(block), name
            end
          end
        end
        break
      end
    end
  end
  if is_sampler(obj) then return M.sampler_summary(obj), name end
  return nil, name
end

--- Prints the doc of obj (see `doc`); with no argument, how the REPL works.
function M.help(...)
  if select("#", ...) == 0 then
    io.write(M.usage, "\n")
    return
  end
  local obj = ...
  local text, name = M.doc(obj)
  if name then io.write(name, "\n") end
  if text then
    io.write(text, "\n")
  else
    io.write(("no documentation found for %s"):format(
      type(obj) == "string" and ("'" .. obj .. "'") or tostring(obj)), "\n")
  end
end

M.usage = [[
nasrt REPL
  expr                    show the value (tensors, modules, supernets, samplers, tables)
  =expr                   the same as 'return expr'
  help(obj)               the doc of a function, class or object; help "F.conv2d"
  time(fn, ...)           run fn(...), print its wall and CPU time, return its results
  %time stmt              time one statement or expression
  :load RUNDIR            run = nasrt.run.load(RUNDIR)  (when nasrt.run is available)
  nasrt.repl.summary(net[, in_shape])   a supernet's summary for another input shape
  Tab                     complete names, fields (net.<Tab>) and methods (t:<Tab>)
  Ctrl-C                  stop a running chunk or discard the line;  Ctrl-D quits]]

-- ------------------------------------------------------------ timing

local function wall() return core.clock() end

--- Runs fn(...), prints "time: wall W, cpu C" and returns fn's results.
-- CPU time counts every thread of the process, so it exceeds the wall time
-- when the thread pool is busy.
-- @tparam function fn
-- @return what fn returns
function M.time(fn, ...)
  if type(fn) ~= "function" then
    error(("time: expected a function, got %s"):format(type(fn)), 2)
  end
  local c0, t0 = os.clock(), wall()
  local res = table.pack(fn(...))
  local dt, dc = wall() - t0, os.clock() - c0
  local function fmt(s)
    if s >= 1 then return ("%.3f s"):format(s) end
    return ("%.3f ms"):format(s * 1e3)
  end
  io.write(("time: wall %s, cpu %s\n"):format(fmt(dt), fmt(dc)))
  return table.unpack(res, 1, res.n)
end

-- ------------------------------------------------------------ shortcuts

--- Turns a REPL shortcut line into Lua, or returns nil for ordinary lines:
-- `%time stmt` times a statement or expression (an expression's value is
-- shown), `:load RUNDIR` calls nasrt.run.load and keeps the result in the
-- global `run`, `:help` prints the REPL's usage.
-- @tparam string line
-- @treturn string|nil the chunk to run (an `error(...)` call for an
--   unknown shortcut)
function M.rewrite(line)
  local stmt = line:match("^%%time%s+(.-)%s*$")
  if stmt then
    if load("return " .. stmt, "=stdin") then
      return ("return nasrt.repl.time(function() return %s\nend)"):format(stmt)
    end
    return ("nasrt.repl.time(function() %s\nend)"):format(stmt)
  end
  local dir = line:match("^:load%s+(.-)%s*$")
  if dir then
    if dir:match('^["\']') then dir = dir:sub(2, -2) end
    return ("assert(nasrt.run and nasrt.run.load, ':load needs nasrt.run.load'); " ..
            "run = assert(nasrt.run.load(%q)); return run"):format(dir)
  end
  if line:match("^:help%s*$") then return "nasrt.repl.help()" end
  if line:match("^%%") or line:match("^:[^:]") then
    return ("error(%q, 0)"):format(("unknown shortcut '%s' (try :help)"):format(
      line:match("^%S+")))
  end
  return nil
end

--- Sets the REPL globals `help` and `time` (not in scripts) and
-- `nasrt.repl`.
function M.install()
  local nasrt = package.loaded["nasrt"]
  if type(nasrt) == "table" then nasrt.repl = M end
  _G.help = M.help
  _G.time = M.time
end

return M
