-- Misuse cases of group "blocks" (spec/misuse/blocks.lua); see spec/misuse.lua.
require("misuse").run(_ENV, "blocks", 100)
