-- Misuse cases of group "search" (spec/misuse/search.lua); see spec/misuse.lua.
require("misuse").run(_ENV, "search", 120)
