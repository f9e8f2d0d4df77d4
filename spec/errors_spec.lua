-- Misuse never crashes: bad calls of the core (nasrt.*, tensors, nasrt.F,
-- nasrt.io, checkpoints, nasrt._optim) raise Lua errors whose messages name
-- the function and the shapes.  The cases are in spec/misuse/core.lua; the
-- other groups run from spec/misuse_*_spec.lua (see spec/misuse.lua).
require("misuse").run(_ENV, "core", 200)
