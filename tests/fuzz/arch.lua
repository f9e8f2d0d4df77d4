-- Fuzz driver (fuzz_arch.c): the text forms of architectures.  The input
-- goes through
--   * supernet.genotype_from_string (DARTS / AGNAS / Att-DARTS genotype text);
--     a parsed genotype must print and re-parse to the same text, and a
--     single genotype that darts_network accepts must run a forward pass;
--   * bench.parse_nb201 / nb201_encode (NAS-Bench-201 arch strings); a
--     parsed string must be canonical and survive nb201_string/decode;
--   * train.lua's --arch text reader (arch_from_text).
-- A Lua error is the expected outcome of bad input; fuzz.bug marks a broken
-- invariant.
local nasrt = require "nasrt"
local supernet = nasrt.supernet
local bench = require "nasrt.bench"
local train = require "train"

local function genotype(s)
  local g, err = supernet.genotype_from_string(s)
  if g == nil then
    if type(err) ~= "string" or not err:find("^genotype_from_string: ") then
      fuzz.bug("genotype_from_string returned nil without its message: " .. tostring(err))
    end
    return
  end
  local ok, text = pcall(supernet.genotype_to_string, g)
  if not ok then fuzz.bug("genotype_to_string failed on a parsed genotype: " .. tostring(text)) end
  local g2, err2 = supernet.genotype_from_string(text)
  if not g2 then fuzz.bug(("printed genotype %q does not parse: %s"):format(text, err2)) end
  local text2 = supernet.genotype_to_string(g2)
  if text2 ~= text then fuzz.bug(("print/parse is not a fixpoint: %q vs %q"):format(text, text2)) end
  -- one genotype with both cells and a small gene: build it and run it
  if g.normal and g.reduce and #g.normal <= 16 and #g.reduce <= 16 then
    local okb, net = pcall(supernet.darts_network, g,
      { C = 2, layers = 3, classes = 2, in_channels = 1, stem_multiplier = 1, input_size = 8 })
    if okb then
      net:eval()
      local okf, out = pcall(net.forward, net, nasrt.zeros { 1, 1, 8, 8 })
      if not okf then fuzz.bug("darts_network accepted a genotype its forward rejects: " .. tostring(out)) end
      local sz = out:size()
      if #sz ~= 2 or sz[1] ~= 1 or sz[2] ~= 2 then fuzz.bug("forward gave the wrong shape") end
    end
  end
end

local function nb201(s)
  local ok, edges = pcall(bench.parse_nb201, s)
  if not ok then
    if type(edges) ~= "string" or not edges:find("parse_nb201: ", 1, true) then
      fuzz.bug("parse_nb201 raised without its name: " .. tostring(edges))
    end
    return
  end
  if #edges ~= 6 then fuzz.bug("parse_nb201 gave " .. #edges .. " edges") end
  local canon = bench.nb201_string(edges)
  if canon ~= s then fuzz.bug(("accepted a non-canonical string %q (canonical %q)"):format(s, canon)) end
  local genes = bench.nb201_encode(s)
  if bench.nb201_decode(genes) ~= canon then fuzz.bug("encode/decode round trip differs") end
end

return function(s)
  genotype(s)
  nb201(s)
  pcall(train.arch_from_text, s, "fuzz")
end
