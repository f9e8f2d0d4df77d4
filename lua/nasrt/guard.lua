--- Wrong-self guard for Lua classes.
--
-- A method called with the wrong self, most often `obj.method(x)` written
-- for `obj:method(x)`, fails somewhere inside the method with a message
-- about an unrelated local.  A guarded method checks its self first and
-- raises, naming the method:
--
--     Conv2d.forward: self is a tensor, not a Conv2d (call methods with ':')
--
-- A class is a table whose instances have it as metatable; its parent is
-- the `__index` of its own metatable (nn.class, optim and search build
-- classes that way).  A guarded method tail-calls the original, so error
-- levels and tracebacks see the caller as before; the cost is one Lua call
-- and a short metatable walk (about 0.1 us).
-- @module nasrt.guard
local G = {}

-- guard -> original, and per class original -> guard (so aliases such as
-- `Sequential.add = append` stay one function)
local original = setmetatable({}, { __mode = "k" })
local guards = setmetatable({}, { __mode = "k" })

local function parent_of(c)
  local mt = getmetatable(c)
  local p = type(mt) == "table" and rawget(mt, "__index")
  return type(p) == "table" and p or nil
end

-- class -> {cls = true} for the classes it was found to derive from:
-- guarded methods ask on every call, and the walk up a three-level chain
-- was a third of the Lua time of a DARTS step.  Only the found relations
-- are kept (a class gains no ancestors after nn.class made it).
local derived = setmetatable({}, { __mode = "k" })

--- True when class c is cls or derives from it.
function G.derives(c, cls)
  local known = derived[c]
  if known and known[cls] then return true end
  local k = c
  while type(k) == "table" do
    if k == cls then
      if not known then
        known = setmetatable({}, { __mode = "k" })
        derived[c] = known
      end
      known[cls] = true
      return true
    end
    k = parent_of(k)
  end
  return false
end

--- True when v is an instance of cls or of a class derived from it.
function G.isa(v, cls)
  return type(v) == "table" and G.derives(getmetatable(v), cls)
end

--- "a tensor", "a Conv2d", "nil", "a number", ... for messages.
function G.what(v)
  if v == nil then return "nil" end
  local mt = getmetatable(v)
  if type(mt) == "table" then
    local name = rawget(mt, "__name")
    if name == "nasrt.Tensor" then return "a tensor" end
    if type(name) == "string" then return "a " .. name end
  end
  return "a " .. type(v)
end

--- The guarded version of method `name` of class `cls` (labelled
-- `label`, default cls.__name).
function G.method(cls, name, f, label)
  f = original[f] or f
  local per = guards[cls]
  if not per then
    per = {}
    guards[cls] = per
  end
  if per[f] then return per[f] end
  local g = function(self, ...)
    if getmetatable(self) ~= cls and not G.isa(self, cls) then
      local cname = label or tostring(rawget(cls, "__name") or "object")
      error(("%s.%s: self is %s, not a %s (call methods with ':')"):format(cname, name,
        G.what(self), cname), 2)
    end
    return f(self, ...)
  end
  original[g] = f
  per[f] = g
  return g
end

--- True when f is a guarded method.
function G.guarded(f) return original[f] ~= nil end

--- The method behind a guarded one (for introspection).
function G.original(f) return original[f] end

local function is_method_key(k) return type(k) == "string" and k:sub(1, 1) ~= "_" end

--- A `__newindex` for class metatables: methods are guarded as they are
-- defined.  (Redefining a key the class already holds bypasses
-- __newindex; `G.class` at the end of a file catches those.)
function G.define(cls, k, v)
  if type(v) == "function" and is_method_key(k) then v = G.method(cls, k, v) end
  rawset(cls, k, v)
end

--- Guards every method cls holds now (names not starting with "_";
-- `static` lists functions that take no self, such as constructors).
-- Returns cls.
function G.class(cls, static, label)
  for k, v in pairs(cls) do
    if type(v) == "function" and is_method_key(k) and not (static and static[k]) then
      local g = G.method(cls, k, v, label)
      if g ~= v then rawset(cls, k, g) end
    end
  end
  return cls
end

return G
