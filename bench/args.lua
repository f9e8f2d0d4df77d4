-- Command-line options of the bench scripts: parse(o) fills the table of
-- defaults o from `--key=value` / `--key value` in arg.  A default's type
-- decides the value's: numbers must be integers, booleans are flags
-- (`--quick`), anything else is kept as the string.  Unknown keys are errors.
local M = {}

function M.parse(o)
  local i = 1
  while arg and arg[i] do
    local k, v = arg[i]:match("^%-%-(%w+)=?(.*)$")
    if not k or o[k] == nil then error("unknown option " .. arg[i], 0) end
    if type(o[k]) == "boolean" then
      o[k] = true
    else
      if v == "" then i = i + 1; v = arg[i] end
      o[k] = type(o[k]) == "number" and (math.tointeger(tonumber(v)) or error("bad --" .. k, 0)) or v
    end
    i = i + 1
  end
  return o
end

return M
