-- Misuse cases of group "supernet" (spec/misuse/supernet.lua); see spec/misuse.lua.
require("misuse").run(_ENV, "supernet", 120)
