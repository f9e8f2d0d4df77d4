-- Fuzz driver (fuzz_ckpt.c): nasrt.load on a checkpoint file whose CRC the
-- harness has fixed up, so the bytes reach the table builder of
-- modules/bind_ckpt.c.  A loaded tree must save again and load back equal.
local nasrt = require "nasrt"

-- t:requires_grad() sets the flag; the printed form is the only reader
local function grad_flag(t) return tostring(t):find("requires_grad=True", 1, true) ~= nil end

local function same(a, b, seen)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then return false end
    return a == b or (a ~= a and b ~= b)
  end
  if type(a) == "userdata" then
    local sa, sb = a:size(), b:size()
    if #sa ~= #sb or grad_flag(a) ~= grad_flag(b) then return false end
    for i = 1, #sa do if sa[i] ~= sb[i] then return false end end
    return a:numel() == 0 or same(a:totable(), b:totable(), {})
  end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not same(v, b[k], seen) then return false end
  end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

return function(path)
  local t, err = nasrt.load(path)
  if t == nil then
    if type(err) ~= "string" or not err:find("load: ", 1, true) then
      fuzz.bug("load failed without a message naming it: " .. tostring(err))
    end
    return
  end
  if type(t) ~= "table" then return end -- save takes a table; a bare root is fine to load
  local out = fuzz.scratch .. "/again.ckpt"
  local ok, why = nasrt.save(out, t)
  if not ok then fuzz.bug("a loaded checkpoint does not save: " .. tostring(why)) end
  local t2, err2 = nasrt.load(out)
  if not t2 then fuzz.bug("a saved checkpoint does not load: " .. tostring(err2)) end
  if not same(t, t2) then fuzz.bug("save/load round trip differs") end
  os.remove(out)
end
