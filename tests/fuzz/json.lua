-- Fuzz driver (fuzz_json.c): JSON as nasrt reads it -- recipe.decode (the
-- run directory's config.json, arch.json and log.jsonl lines go through it)
-- and train.lua's arch.json reader (arch_from_json).  A decoded value must
-- encode again, and an object must either give an architecture description
-- or raise.
local recipe = require "nasrt.recipe"
local train = require "train"

local KINDS = { nb201 = true, macro = true, darts = true }

return function(s)
  local v, err = recipe.decode(s)
  if v == nil then
    if err ~= nil and type(err) ~= "string" then fuzz.bug("decode error is a " .. type(err)) end
    return
  end
  local ok, text = pcall(recipe.encode, v)
  if ok and type(text) ~= "string" then fuzz.bug("encode returned a " .. type(text)) end
  if type(v) == "table" then
    local oka, a = pcall(train.arch_from_json, v, "fuzz.json", { layers = 5 })
    if oka and (type(a) ~= "table" or not KINDS[a.kind]) then
      fuzz.bug("arch_from_json returned " .. tostring(a and a.kind))
    end
  end
end
