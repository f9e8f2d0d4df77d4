-- The REPL: nasrt.repl's printers (module trees with parameter counts,
-- supernet summaries checked against hand walks of the network, samplers,
-- objects, tables), Tab completion, help() for Lua and C functions (every
-- C function of nasrt.F and Tensor has a doc), time(), the %time / :load
-- shortcuts, and the `nasrt -i` host driven through a pipe.
local nasrt = require "nasrt"
local repl = require "nasrt.repl"
local H = require "helpers"
local nn, F = nasrt.nn, nasrt.F
_G.nasrt = nasrt   -- as in the host, where completion and shortcuts start

local function lines_of(s)
  local out = {}
  for l in (s .. "\n"):gmatch("(.-)\n") do out[#out + 1] = l end
  return out
end

-- runs fn with io.write going to a temp file; returns the text written
local function captured(fn)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  local old = io.output()
  io.output(f)
  local ok, err = pcall(fn)
  io.output(old)
  f:close()
  local g = assert(io.open(path))
  local text = g:read("a")
  g:close()
  os.remove(path)
  assert(ok, err)
  return text
end

describe("nasrt.repl.show", function()
  it("prints a module as a layer tree with parameter counts", function()
    local net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 10))
    local l = lines_of(repl.show(net))
    -- conv 8*1*3*3 + 8 = 80, linear 8*10 + 10 = 90
    assert.are.equal(7, #l)
    assert.truthy(l[1]:match("^Sequential%(%s+# 170$"))
    assert.truthy(l[2]:match("^  %(1%): Conv2d%(1, 8, kernel_size=%(3, 3%), stride=%(1, 1%)%)%s+# 80$"))
    assert.are.equal("  (2): ReLU()", l[3])
    assert.are.equal("  (3): Flatten(start_dim=2)", l[4])
    assert.truthy(l[5]:match("^  %(4%): Linear%(in_features=8, out_features=10, bias=True%)%s+# 90$"))
    assert.are.equal(")", l[6])
    assert.are.equal("parameters: 170 (680 B of float32)", l[7])
    -- the counts sit in one column
    assert.are.equal(l[1]:find("#"), l[2]:find("#"))
    assert.are.equal(l[2]:find("#"), l[5]:find("#"))
  end)

  it("counts nested containers and shared modules once", function()
    local lin = nn.Linear(3, 4)   -- 16 parameters
    local net = nn.Sequential(nn.Sequential(lin, nn.ReLU()), lin)
    local l = lines_of(repl.show(net))
    assert.truthy(l[1]:match("# 16$"))
    assert.truthy(l[2]:match("^  %(1%): Sequential%(%s+# 16$"))
    assert.are.equal("parameters: 16 (64 B of float32)", l[#l])
  end)

  it("prints plain tables as constructors, cycles cut", function()
    assert.are.equal('{1, 2, {a = 1, b = "x"}, ["a b"] = true}',
      repl.show({ 1, 2, { a = 1, b = "x" }, ["a b"] = true }))
    local t = { n = 1 }
    t.self = t
    assert.are.equal("{n = 1, self = {...} -- cycle}", repl.show(t))
    assert.are.equal("{}", repl.show({}))
    local long = {}
    for i = 1, 60 do long[i] = i end
    assert.truthy(repl.show(long):find("... (60 entries)", 1, true))
  end)

  it("prints objects without __tostring with their settings", function()
    local net = nn.Linear(2, 2)
    local opt = nasrt.optim.SGD(net:parameters(), { lr = 0.1, momentum = 0.9 })
    local s = repl.show(nasrt.optim.CosineLR(opt, 100))
    assert.are.equal("CosineLR(T_max=100, base_lrs={0.1}, eta_min=0, last_epoch=0)", s)
    -- optimizers keep their own PyTorch-style printer
    assert.truthy(repl.show(opt):find("momentum: 0.9", 1, true))
  end)

  it("prints a sampler's space and methods", function()
    local s = repl.show(nasrt.sampler.uniform { choices = { 3, 3, 4 }, seed = 1 })
    local l = lines_of(s)
    assert.are.equal("nasrt.sampler.uniform(3 genes)", l[1])
    assert.are.equal("  choices {3,3,4}, 36 architectures", l[2])
    assert.truthy(l[3]:match("^  methods: .*sample"))
    local f = repl.show(nasrt.sampler.strict_fair { choices = { 6, 6 }, seed = 1 })
    assert.truthy(f:find("2 x 6 choices, 36 architectures", 1, true))
  end)

  it("formats numbers", function()
    assert.are.equal("1,234,567", repl.commas(1234567))
    assert.are.equal("-1,000", repl.commas(-1000))
    assert.are.equal("999", repl.commas(999))
    assert.are.equal("23.40 M", repl.si(23.4e6))
    assert.are.equal("1.50 KiB", repl.bytes(1536))
  end)
end)

describe("nasrt.repl.summary", function()
  -- MACs of every candidate op of a DARTS search network, walked by hand
  -- over the cells with each module's own shape and cost functions
  local function darts_macs(net, in_shape)
    local total = net.stem:macs(in_shape)
    local s0 = net.stem:output_shape(in_shape)
    local s1 = s0
    for _, cell in ipairs(net.cells:children()) do
      total = total + cell.preprocess0:macs(s0) + cell.preprocess1:macs(s1)
      local p = cell.preprocess1:output_shape(s1)
      local nodes = { p, p }
      local e = 0
      local edges = cell.edges:children()
      for i = 1, cell.steps do
        local out
        for j = 1, i + 1 do
          e = e + 1
          for _, op in ipairs(edges[e].ops:children()) do
            total = total + op:macs(nodes[j])
            if getmetatable(op) ~= nn.Zero or not out then out = op:output_shape(nodes[j]) end
          end
        end
        nodes[#nodes + 1] = out
      end
      s0, s1 = s1, { 1, cell.multiplier * cell.C, nodes[#nodes][3], nodes[#nodes][4] }
    end
    return total + net.classifier:macs({ 1, s1[2] })
  end

  it("summarises a DARTS supernet: cells, edges, ops, params, FLOPs", function()
    nasrt.manual_seed(0)
    local net = nasrt.supernet.darts { C = 4, layers = 3 }
    local text, info = repl.summary(net)
    assert.are.same({ 1, 1, 28, 28 }, info.in_shape)
    assert.are.equal(3, info.cells)
    assert.are.equal(1, info.normal)
    assert.are.equal(2, info.reduction)
    assert.are.equal(14, info.edges)
    assert.are.equal(8, info.ops)
    assert.are.equal(2 * 14 * 8, info.arch_params)
    assert.are.equal(net:num_parameters(), info.params)
    local hand = darts_macs(net, { 1, 1, 28, 28 })
    assert.is_true(hand > 1e6)
    assert.are.equal(2 * hand, info.flops)
    assert.truthy(text:find("cells: 3 (1 normal, 2 reduction)", 1, true))
    assert.truthy(text:find("edges: 14 per cell, 8 candidate ops per edge", 1, true))
    assert.truthy(text:find("224 architecture", 1, true))
    -- another input size changes only the FLOPs
    local _, info8 = repl.summary(net, { 1, 1, 8, 8 })
    assert.are.equal(2 * darts_macs(net, { 1, 1, 8, 8 }), info8.flops)
    -- the REPL shows the summary, print() the tree
    assert.truthy(repl.show(net):find("^DARTSSearchNetwork%(relaxation=softmax"))
  end)

  it("summarises a NAS-Bench-201 supernet", function()
    local net = nasrt.supernet.nb201 { C = 4, N = 1 }
    local text, info = repl.summary(net)
    assert.are.same({ 1, 3, 32, 32 }, info.in_shape)
    assert.are.equal(5, info.cells)      -- 3 search cells + 2 ResNet reduction blocks
    assert.are.equal(3, info.normal)
    assert.are.equal(6, info.edges)
    assert.are.equal(5, info.ops)
    assert.are.equal(30, info.arch_params)
    assert.truthy(text:find("2 fixed, not searched", 1, true))
  end)

  it("gives the FLOPs range of single-path supernets", function()
    local net = nasrt.supernet.spos {}
    local _, info = repl.summary(net)
    local t = net:flops_table()
    local amin, amax = {}, {}
    for l, row in ipairs(t.per_gene) do
      amin[l], amax[l] = 1, 1
      for c, v in ipairs(row) do
        if v < row[amin[l]] then amin[l] = c end
        if v > row[amax[l]] then amax[l] = c end
      end
    end
    assert.are.equal(2 * net:flops(amin), info.flops_min)
    assert.are.equal(2 * net:flops(amax), info.flops_max)
    local s = nasrt.sampler.uniform { choices = net:choices(), seed = 3 }
    for _ = 1, 200 do
      local f = 2 * net:flops(s:sample())
      assert.is_true(f >= info.flops_min and f <= info.flops_max)
    end
    assert.are.equal(#net:choices(), info.cells)
  end)
end)

describe("nasrt.repl.complete", function()
  setup(function()
    _G.t_ = nasrt.zeros(2, 3)
    _G.net_ = nn.Sequential(nn.Linear(2, 2))
    _G.trap_ = setmetatable({}, { __index = function() error("metamethod ran") end })
  end)
  teardown(function() _G.t_, _G.net_, _G.trap_ = nil, nil, nil end)

  it("completes nasrt.* names", function()
    assert.are.same({ "nasrt.F.conv2d(" }, repl.complete("nasrt.F.conv"))
    assert.are.same({ "nasrt.nn.Conv2d." }, repl.complete("nasrt.nn.Conv2"))
    assert.are.same({ "nasrt.supernet.nb201_arch(" }, repl.complete("nasrt.supernet.nb201_a"))
    assert.are.same({ "nasrt.supernet.nb201_cost(" }, repl.complete("nasrt.supernet.nb201_co"))
  end)

  it("completes tensor methods after ':' and properties after '.'", function()
    assert.are.same({ "t_:reshape(" }, repl.complete("t_:resh"))
    assert.are.same({ "t_.get(", "t_.grad", "t_.grad_fn" }, repl.complete("t_.g"))
    -- methods only after ':'
    for _, m in ipairs(repl.complete("t_:")) do assert.truthy(m:match("%($")) end
    assert.is_true(#repl.complete("t_:") > 40)
  end)

  it("completes module fields and class methods", function()
    assert.are.same({ "net_:num_parameters(" }, repl.complete("net_:num_p"))
    assert.are.same({ "net_.train(", "net_.training" }, repl.complete("net_.trai"))
    -- private fields only when asked for
    for _, m in ipairs(repl.complete("net_.")) do assert.falsy(m:match("^net_%._")) end
    assert.truthy(#repl.complete("net_._child") >= 1)
  end)

  it("completes keywords and globals, never runs a metamethod", function()
    assert.are.same({ "return" }, repl.complete("retu"))
    assert.are.same({ "print(" }, repl.complete("prin"))
    assert.are.same({}, repl.complete("trap_.x"))
    assert.are.same({}, repl.complete("trap_.x.y"))
    assert.are.same({}, repl.complete("nosuchname.x"))
    assert.are.same({}, repl.complete("a..b"))
    assert.are.same({}, repl.complete("x:y:z"))
  end)
end)

describe("nasrt.repl.help", function()
  it("shows the doc comment of a Lua class, instance and function", function()
    local d = repl.doc(nn.Conv2d)
    assert.truthy(d:find("^2%-D convolution %(torch.nn.Conv2d%)"))
    assert.truthy(d:find("opts (table, optional): {stride=1", 1, true))
    assert.truthy(d:find("in_channels (int)", 1, true))
    assert.are.equal(d, (repl.doc(nn.Conv2d(1, 2, 3))))
    local s, name = repl.doc(nasrt.shape_str)
    assert.are.equal("nasrt.shape_str", name)
    assert.are.equal('Dimensions of a tensor as a string, e.g. "[64,16,28,28]".\n' ..
                     "-- function nasrt.shape_str(t)", s)
    assert.truthy(repl.doc(nasrt.optim.SGD):find("Stochastic gradient descent", 1, true))
  end)

  it("shows the doc of C functions, by value or by name", function()
    local d, name = repl.doc(F.conv2d)
    assert.are.equal("nasrt.F.conv2d", name)
    assert.truthy(d:find("im2col", 1, true))
    assert.truthy(d:find("opts (table, optional): {stride=1, padding=0, dilation=1, groups=1}",
      1, true))
    assert.are.equal(d, (repl.doc("F.conv2d")))
    assert.are.equal(d, (repl.doc("nasrt.F.conv2d")))
    assert.truthy(repl.doc(nasrt.zeros(1).shape):find("sizes as a table", 1, true))
    assert.truthy(repl.doc("save"):find("atomically", 1, true) or
                  repl.doc("save"):find("Saves a table", 1, true))
  end)

  it("has a doc for every C function of nasrt.F, Tensor and nasrt", function()
    local missing = {}
    local function check(tbl, prefix)
      for k, f in pairs(tbl) do
        if type(f) == "function" and debug.getinfo(f, "S").what == "C" and k:sub(1, 2) ~= "__" then
          if not repl.doc(f) then missing[#missing + 1] = prefix .. k end
        end
      end
    end
    check(F, "F.")
    check(nasrt.Tensor, "Tensor:")
    check(nasrt, "nasrt.")
    check(nasrt.io, "io.")
    check(nasrt.sampler, "sampler.")
    -- every sampler kind's methods (C metatables, reached through an instance)
    local S = nasrt.sampler
    for kind, s in pairs({ uniform = S.uniform { choices = { 2, 2 } },
                           strict_fair = S.strict_fair { choices = { 2, 2 } },
                           flops_bins = S.flops_bins { choices = { 2, 2 }, bins = { { 0, 10 } },
                                                       flops = function() return 1 end },
                           attentive = S.attentive { choices = { 2, 2 }, flops = function() return 1 end },
                           sandwich = S.sandwich { choices = { 2, 2 } } }) do
      check(getmetatable(s).__index, kind .. ":")
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)

  it("prints the doc, or says there is none", function()
    local out = captured(function() repl.help(nn.Linear) end)
    assert.truthy(out:find("^nasrt.nn.Linear\n"))
    assert.are.equal("no documentation found for 'no_such_thing'\n",
      captured(function() repl.help("no_such_thing") end))
    assert.truthy(captured(function() repl.help() end):find("%time stmt", 1, true))
  end)
end)

describe("nasrt.repl.time", function()
  it("prints wall and CPU time and returns the results", function()
    local a, b
    local out = captured(function()
      a, b = repl.time(function(x, y)
        local t0 = nasrt.clock()
        while nasrt.clock() - t0 < 0.05 do end
        return x + y, "r"
      end, 2, 3)
    end)
    assert.are.equal(5, a)
    assert.are.equal("r", b)
    local wall = tonumber(out:match("^time: wall ([%d.]+) ms, cpu [%d.]+ ms\n$"))
    assert.is_true(wall ~= nil and wall >= 50 and wall < 5000, out)
    assert.has_error(function() repl.time("x") end, "time: expected a function, got string")
  end)
end)

describe("nasrt.repl.rewrite", function()
  it("turns %time and :load into Lua, leaves Lua alone", function()
    assert.is_nil(repl.rewrite("x = 1"))
    assert.is_nil(repl.rewrite("::top:: x = 1"))
    local saved_repl, saved_run = nasrt.repl, nasrt.run
    nasrt.repl = repl
    local out = captured(function()
      local v = load(repl.rewrite("%time 6 * 7"))()
      assert.are.equal(42, v)
      load(repl.rewrite("%time rw_x = 5"))()
    end)
    assert.are.equal(5, _G.rw_x)
    assert.truthy(out:match("^time: wall [%d.]+ ms, cpu [%d.]+ ms\ntime: wall"))
    nasrt.run = { load = function(dir) return { dir = dir } end }
    local r = load(repl.rewrite(":load runs/abc"))()
    assert.are.equal("runs/abc", r.dir)
    assert.are.equal("runs/abc", _G.run.dir)
    nasrt.run = nil
    assert.has_error(load(repl.rewrite(":load x")), nil)
    assert.has_error(load(repl.rewrite(":nope")), "unknown shortcut ':nope' (try :help)")
    nasrt.repl, nasrt.run, _G.rw_x, _G.run = saved_repl, saved_run, nil, nil
  end)
end)

describe("the nasrt REPL (piped)", function()
  local function run_repl(input, args)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(input)
    f:close()
    local p = assert(io.popen(H.nasrt_bin() .. " " .. (args or "-i") .. " < " .. path .. " 2>&1"))
    local out = p:read("a")
    local ok, _, code = p:close()
    os.remove(path)
    return out, ok and 0 or code
  end

  it("shows results, help and timings", function()
    local out, code = run_repl(table.concat({
      "net = nasrt.nn.Sequential(nasrt.nn.Conv2d(1, 8, 3), nasrt.nn.ReLU())",
      "net",
      "help(nasrt.F.relu)",
      "%time y = nasrt.ones(4, 4):sum()",
      "=y:item()",
      "{1, 2, a = 'x'}",
      "",
    }, "\n"))
    assert.are.equal(0, code, out)
    local l = lines_of(out)
    assert.truthy(l[1]:match("^Sequential%(%s+# 80$"), out)
    assert.truthy(l[2]:match("^  %(1%): Conv2d%(1, 8, .*# 80$"), out)
    assert.are.equal("  (2): ReLU()", l[3])
    assert.are.equal(")", l[4])
    assert.are.equal("parameters: 80 (320 B of float32)", l[5])
    assert.are.equal("nasrt.F.relu", l[6])
    assert.are.equal("max(x, 0); a NaN stays NaN (PyTorch's relu), here and in every op that", l[7])
    assert.truthy(out:find("\ntime: wall [%d.]+ ms, cpu [%d.]+ ms\n16.0\n{1, 2, a = \"x\"}\n"), out)
  end)

  it("exits 1 after a failing chunk and names the error", function()
    local out, code = run_repl("nasrt.F.relu(1)\n:bogus\n")
    assert.are.equal(1, code)
    assert.truthy(out:find("relu", 1, true))
    assert.truthy(out:find("unknown shortcut ':bogus' (try :help)", 1, true))
  end)

  it("answers --version and --help", function()
    local out, code = run_repl("", "--version")
    assert.are.equal(0, code)
    assert.are.equal("nasrt " .. nasrt.version .. " (Lua 5.4, OpenBLAS)\n", out)
    out = run_repl("", "--help")
    for _, opt in ipairs({ "-e chunk", "-l name", "-i ", "--threads N", "-v, --version",
                           "-h, --help", "NASRT_THREADS", "help(obj)", "%time", ":load" }) do
      assert.truthy(out:find(opt, 1, true), opt)
    end
  end)
end)
