-- Misuse cases of group "data" (spec/misuse/data.lua); see spec/misuse.lua.
require("misuse").run(_ENV, "data", 80)
