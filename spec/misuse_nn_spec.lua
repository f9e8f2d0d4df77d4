-- Misuse cases of group "nn" (spec/misuse/nn.lua); see spec/misuse.lua.
require("misuse").run(_ENV, "nn", 200)
