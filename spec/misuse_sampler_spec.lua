-- Misuse cases of group "sampler" (spec/misuse/sampler.lua); see spec/misuse.lua.
require("misuse").run(_ENV, "sampler", 70)
