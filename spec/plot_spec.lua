--- nasrt.plot and nasrt.run: the SVG writer checked element by element
-- (a small XML well-formedness checker parses every document), values read
-- back from the pictures the way a reader would (a point's pixel mapped to
-- data through the gridlines and their tick labels), and `nasrt plot` on
-- tiny runs of darts, agnas, spos and rea.
local nasrt = require "nasrt"
local recipe = require "nasrt.recipe"
local plot = require "nasrt.plot"
local run = require "nasrt.run"
local lfs = require "lfs"

local BUILD = os.getenv("NASRT_BUILD_DIR") or "./build"

-- --------------------------------------------------------------- XML

local ENTITY = { amp = "&", lt = "<", gt = ">", quot = '"', apos = "'" }

local function unescape(s, where)
  return (s:gsub("&([^;]*);?", function(e)
    if ENTITY[e] then return ENTITY[e] end
    local d = e:match("^#(%d+)$")
    if d then return utf8.char(tonumber(d)) end
    local h = e:match("^#x(%x+)$")
    if h then return utf8.char(tonumber(h, 16)) end
    error(("bad entity &%s in %s"):format(e, where), 0)
  end))
end

--- Parses an XML document (declaration, comments, elements, attributes,
-- text); raises on anything not well-formed.  Returns the root element
-- {tag=, attrs=, children=, text=}.
local function parse_xml(s)
  local decl = s:match("^<%?xml%s+version=\"1%.%d\"[^?]*%?>")
  assert(decl, "no XML declaration")
  local pos = #decl + 1
  -- a document type declaration (Graphviz writes one) may follow
  local dt = s:match("^%s*<!DOCTYPE[^>%[]*>()", pos) or s:match("^%s*<!DOCTYPE[^%[]*%b[]%s*>()", pos)
  if dt then pos = dt end
  local top = { tag = "#document", children = {}, text = "" }
  local stack = { top }
  while pos <= #s do
    local lt = s:find("<", pos, true)
    local text = s:sub(pos, (lt or #s + 1) - 1)
    local cur = stack[#stack]
    if cur == top then
      assert(text:match("^%s*$"), "text outside the root element")
    else
      cur.text = cur.text .. unescape(text, cur.tag)
    end
    if not lt then break end
    if s:sub(lt, lt + 3) == "<!--" then
      local e = s:find("-->", lt + 4, true)
      assert(e, "unterminated comment")
      pos = e + 3
    elseif s:sub(lt, lt + 1) == "</" then
      local name, e = s:match("^</([%a_:][%w_:%-%.]*)%s*>()", lt)
      assert(name, "bad end tag at " .. lt)
      assert(name == cur.tag, ("</%s> closes <%s>"):format(name, cur.tag))
      stack[#stack] = nil
      pos = e
    else
      local name, p = s:match("^<([%a_:][%w_:%-%.]*)()", lt)
      assert(name, "bad start tag at " .. lt)
      local el = { tag = name, attrs = {}, children = {}, text = "" }
      local closed
      while true do
        local ws, p2 = s:match("^(%s*)()", p)
        if s:sub(p2, p2 + 1) == "/>" then
          p, closed = p2 + 2, true
          break
        elseif s:sub(p2, p2) == ">" then
          p = p2 + 1
          break
        end
        assert(#ws > 0, ("<%s>: attributes must be separated by white space"):format(name))
        local an, _, val, p3 = s:match("^([%a_:][%w_:%-%.]*)%s*=%s*([\"'])(.-)%2()", p2)
        assert(an, ("<%s>: bad attribute at %d"):format(name, p2))
        assert(not val:find("<", 1, true), "< in an attribute value")
        assert(el.attrs[an] == nil, ("<%s>: attribute %s twice"):format(name, an))
        el.attrs[an] = unescape(val, name)
        p = p3
      end
      if cur == top then assert(#top.children == 0, "two root elements") end
      cur.children[#cur.children + 1] = el
      el.parent = cur
      if not closed then stack[#stack + 1] = el end
      pos = p
    end
  end
  assert(#stack == 1, "unclosed <" .. stack[#stack].tag .. ">")
  assert(#top.children == 1, "no root element")
  return top.children[1]
end

local function find_all(node, pred, out)
  out = out or {}
  for _, c in ipairs(node.children) do
    if pred(c) then out[#out + 1] = c end
    find_all(c, pred, out)
  end
  return out
end

local function by_class(root, tag, class)
  return find_all(root, function(e) return e.tag == tag and e.attrs.class == class end)
end

local function title_of(e)
  for _, c in ipairs(e.children) do if c.tag == "title" then return c.text end end
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function svg_file(path) return parse_xml(read(path)) end

--- The data -> pixel maps of the chart's first plot box, found as a reader
-- finds them: horizontal gridlines paired (top to bottom) with the y tick
-- labels, vertical ones with the x tick labels; a least-squares line
-- through the pairs.  Returns fy(pixel) -> value, fx(pixel) -> value.
local function axis_maps(root)
  local grid = find_all(root, function(e) return e.tag == "g" and e.attrs.class == "grid" end)[1]
  local hs, vs = {}, {}
  for _, l in ipairs(grid.children) do
    local x1, y1, x2, y2 = tonumber(l.attrs.x1), tonumber(l.attrs.y1), tonumber(l.attrs.x2), tonumber(l.attrs.y2)
    if y1 == y2 then hs[#hs + 1] = y1 elseif x1 == x2 then vs[#vs + 1] = x1 end
  end
  local function fit(pix, labels)
    assert.are.equal(#pix, #labels)
    local n, sx, sy, sxx, sxy = #pix, 0, 0, 0, 0
    for i = 1, n do
      local x, y = pix[i], labels[i]
      sx, sy, sxx, sxy = sx + x, sy + y, sxx + x * x, sxy + x * y
    end
    local a = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    local b = (sy - a * sx) / n
    return function(p) return a * p + b end
  end
  local yt, xt = {}, {}
  for _, t in ipairs(by_class(root, "text", "ytick")) do yt[#yt + 1] = { tonumber(t.attrs.y), tonumber(t.text) } end
  table.sort(yt, function(a, b) return a[1] < b[1] end)
  table.sort(hs)
  local yv = {}
  for i, t in ipairs(yt) do yv[i] = t[2] end
  -- x labels may be thinned out when crowded: pair them by nearest gridline
  for _, t in ipairs(by_class(root, "text", "xtick")) do xt[#xt + 1] = { tonumber(t.attrs.x), tonumber(t.text) } end
  local xp, xv = {}, {}
  for i, t in ipairs(xt) do
    local best
    for _, v in ipairs(vs) do if not best or math.abs(v - t[1]) < math.abs(best - t[1]) then best = v end end
    xp[i], xv[i] = best, t[2]
  end
  return fit(hs, yv), fit(xp, xv)
end

local function polyline_points(e)
  local xs, ys = {}, {}
  for x, y in e.attrs.points:gmatch("([%-%d%.]+),([%-%d%.]+)") do
    xs[#xs + 1], ys[#ys + 1] = tonumber(x), tonumber(y)
  end
  return xs, ys
end

local function series_named(root, name)
  for _, e in ipairs(by_class(root, "polyline", "series")) do
    if title_of(e) == name then return e end
  end
  error("no series named " .. name)
end

-- --------------------------------------------------------------- files

local root_dir = os.tmpname()
os.remove(root_dir)
assert(lfs.mkdir(root_dir))
local counter = 0
local function fresh(tag)
  counter = counter + 1
  return ("%s/%s-%d"):format(root_dir, tag, counter)
end

local rm_rf = require("helpers").rm_rf

teardown(function() rm_rf(root_dir) end)

local function exists(p) return lfs.attributes(p, "mode") ~= nil end

local function have(cmd)
  local ok = os.execute(("command -v %s >/dev/null 2>&1"):format(cmd))
  return ok == true or ok == 0
end

-- runs `nasrt plot ...`; returns the exit status and the output
local function nasrt_plot(args)
  local p = io.popen(("%s/nasrt plot %s 2>&1; echo \"status=$?\""):format(BUILD, args))
  local out = p:read("a")
  p:close()
  local st = tonumber(out:match("status=(%d+)%s*$"))
  return st, out
end

-- ==================================================================== units

describe("nasrt.plot: pieces", function()
  it("picks nice ticks", function()
    local T = plot.ticks(0.13, 0.87, 5, true)
    -- range 0.74 / 5 = 0.148 -> step 0.1; domain grows to 0.1 .. 0.9
    assert.near(0.1, T.step, 1e-12)
    assert.near(0.1, T.lo, 1e-12)
    assert.near(0.9, T.hi, 1e-12)
    assert.are.equal(9, #T.ticks)
    local X = plot.ticks(1, 16, 8, false, true)
    assert.are.same({ 2, 4, 6, 8, 10, 12, 14, 16 }, X.ticks)
    assert.are.equal("0.25", plot.tick_label(0.25, 0.05))
    assert.are.equal("3", plot.tick_label(3, 1))
    assert.are.equal("1e-4", plot.tick_label(1e-4, 1e-4))
  end)

  it("finds the Pareto front (max y, min x)", function()
    -- (1,1) (2,3) (3,2) (4,4) (2.5,3): (3,2) is dominated by (2,3);
    -- (2.5,3) by (2,3) (same y, more x)
    local f = plot.pareto_front({ 1, 2, 3, 4, 2.5 }, { 1, 3, 2, 4, 3 })
    assert.are.same({ 1, 2, 4 }, f)
    assert.are.same({}, plot.pareto_front({}, {}))
    assert.are.same({ 2 }, plot.pareto_front({ 0 / 0, 5 }, { 1, 1 }))
  end)

  it("escapes text and writes well-formed SVG 1.1", function()
    local s = plot.line_chart { title = [[a <b> & "c" 'd']], xlabel = "x & y",
      series = { { name = "<s1>", x = { 1, 2 }, y = { 3, 4 } } } }
    local svg = parse_xml(s)
    assert.are.equal("svg", svg.tag)
    assert.are.equal("http://www.w3.org/2000/svg", svg.attrs.xmlns)
    assert.are.equal("1.1", svg.attrs.version)
    local t = by_class(svg, "text", "title")[1]
    assert.are.equal([[a <b> & "c" 'd']], t.text)
    assert.are.equal("<s1>", title_of(by_class(svg, "polyline", "series")[1]))
  end)

  it("line chart: one polyline per series, points map back to their values", function()
    local xs, y1, y2 = {}, {}, {}
    for i = 1, 30 do
      xs[i] = i * 10
      y1[i] = 2.5 * math.exp(-i / 10)
      y2[i] = 0.1 + i / 40
    end
    local s = plot.line_chart { title = "t", xlabel = "step", ylabel = "v",
      series = { { name = "decay", x = xs, y = y1 }, { name = "rise", x = xs, y = y2 },
                 { name = "single", x = { 150 }, y = { 1 } } } }
    local svg = parse_xml(s)
    assert.are.equal(3, #by_class(svg, "polyline", "series"))
    local fy, fx = axis_maps(svg)
    local px, py = polyline_points(series_named(svg, "decay"))
    assert.are.equal(30, #px)
    -- pixel coordinates carry 2 decimals: 0.005 px of a ~2.6-unit/300-px axis
    for _, i in ipairs { 1, 7, 30 } do
      assert.near(y1[i], fy(py[i]), 1e-3)
      assert.near(xs[i], fx(px[i]), 0.05)
    end
    local qx, qy = polyline_points(series_named(svg, "rise"))
    assert.near(0.1 + 17 / 40, fy(qy[17]), 1e-3)
    assert.near(170, fx(qx[17]), 0.05)
    -- non-finite points are left out
    local s2 = parse_xml(plot.line_chart { series = { { name = "n", x = { 1, 2, 3 }, y = { 1, 0 / 0, 3 } } } })
    assert.are.equal(2, #(select(1, polyline_points(by_class(s2, "polyline", "series")[1]))))
  end)

  it("heatmap: a cell per entry, colours from the range, marked cells", function()
    local rows, cols, V = run.darts_edges(14), nasrt.blocks.DARTS_PRIMITIVES, {}
    for r = 1, 14 do
      V[r] = {}
      for c = 1, 8 do V[r][c] = (r - 1) * 8 + c end
    end
    local s = plot.heatmap { title = "h", rows = rows, cols = cols, values = V,
      marks = { [1] = { [8] = true }, [14] = { [1] = true, [2] = true } } }
    local svg = parse_xml(s)
    local cells = by_class(svg, "rect", "cell")
    assert.are.equal(14 * 8, #cells)
    assert.are.equal(3, #by_class(svg, "rect", "mark"))
    -- value 1 at the low end of viridis, 112 at the top
    local fill = {}
    for _, c in ipairs(cells) do fill[title_of(c)] = c.attrs.fill end
    assert.are.equal("#440154", fill[rows[1] .. ", none: 1.00"])
    assert.are.equal("#fde725", fill[rows[14] .. ", dil_conv_5x5: 112.00"])
    assert.are.equal(plot.viridis(0.5), plot.viridis(0.5))
    -- ragged rows: missing entries are rect.na
    local g = parse_xml(plot.heatmap { rows = { "a", "b" }, cols = { "x", "y", "z" },
      values = { { 1, 2, 3 }, { 4, 5 } } })
    assert.are.equal(5, #by_class(g, "rect", "cell"))
    assert.are.equal(1, #by_class(g, "rect", "na"))
  end)

  it("scatter: points, Pareto points and the front line", function()
    local x = { 10, 20, 30, 40, 25, 35 }
    local y = { 0.5, 0.7, 0.6, 0.9, 0.75, 0.65 }
    local svg = parse_xml(plot.scatter { title = "p", xlabel = "MFLOPs", ylabel = "acc",
      series = { { name = "c", x = x, y = y } }, pareto = true, highlight = { x = 40, y = 0.9 } })
    assert.are.equal(6, #by_class(svg, "circle", "point"))
    local P = by_class(svg, "circle", "pareto")
    assert.are.equal(4, #P)             -- (10,.5) (20,.7) (25,.75) (40,.9)
    local fy, fx = axis_maps(svg)
    local want = { { 10, 0.5 }, { 20, 0.7 }, { 25, 0.75 }, { 40, 0.9 } }
    for k, p in ipairs(P) do
      assert.near(want[k][1], fx(tonumber(p.attrs.cx)), 0.01)
      assert.near(want[k][2], fy(tonumber(p.attrs.cy)), 1e-3)
    end
    -- the staircase: 4 points and 3 corners
    local fxs = polyline_points(by_class(svg, "polyline", "front")[1])
    assert.are.equal(7, #fxs)
    assert.are.equal(1, #by_class(svg, "circle", "highlight"))
  end)

  it("small multiples: panels x series polylines", function()
    local panels = {}
    for p = 1, 5 do
      local series = {}
      for s = 1, 3 do series[s] = { name = "op" .. s, x = { 1, 2, 3 }, y = { p, s, p + s } } end
      panels[p] = { title = "edge " .. p, series = series }
    end
    local svg = parse_xml(plot.small_multiples { title = "m", panels = panels, cols = 3 })
    assert.are.equal(15, #by_class(svg, "polyline", "series"))
    assert.are.equal(5, #by_class(svg, "text", "panel-title"))
  end)
end)

-- ==================================================================== runs

local function load_recipe(name) return dofile("recipes/" .. name .. ".lua") end

describe("nasrt plot on tiny runs", function()
  local dirs = {}

  setup(function()
    dirs.darts = fresh("darts")
    recipe.run(load_recipe("darts"), { out = dirs.darts, C = 4, layers = 2, size = 8, train_limit = 32,
      val_limit = 16, batch_size = 16, epochs = 3, quiet = true, seed = 5 })
    dirs.agnas = fresh("agnas")
    recipe.run(load_recipe("agnas"), { out = dirs.agnas, space = "micro", C = 4, layers = 2,
      input_size = 8, train_limit = 32, val_limit = 16, batch_size = 16, epochs = 2, quiet = true,
      dot = false })
    dirs.spos = fresh("spos")
    recipe.run(load_recipe("spos"), { out = dirs.spos, input_size = 8, batch_size = 8, train_limit = 64,
      val_limit = 32, calib_batches = 2, calib_batch_size = 8, val_batch_size = 16, quiet = true,
      stem = 4, widths = "8,16", repeats = "1,1", last = 16, steps = 4, evo_epochs = 2,
      population = 4, select = 2, mutation = 2, crossover = 2 })
    dirs.rea = fresh("rea")
    recipe.run(load_recipe("rea"), { out = dirs.rea, score = "table", cycles = 40, quiet = true })
  end)

  it("darts: curves, alpha heatmaps with the genotype outlined, history, cells", function()
    local r = assert(run.load(dirs.darts))
    assert.are.equal("darts", r.method)
    local out = dirs.darts .. "/plots"
    local st, msg = nasrt_plot(("'%s' --no-png"):format(dirs.darts))
    assert.are.equal(0, st, msg)
    for _, f in ipairs { "loss.svg", "accuracy.svg", "lr.svg", "alpha_normal.svg", "alpha_reduce.svg",
                         "alpha_normal_history.svg", "alpha_reduce_history.svg" } do
      assert.is_true(exists(out .. "/" .. f), f)
    end
    -- loss: train (batch), architecture (batch), train (epoch mean), validation
    local loss = svg_file(out .. "/loss.svg")
    assert.are.equal(4, #by_class(loss, "polyline", "series"))
    local fy, fx = axis_maps(loss)
    local epochs = r:records("epoch")
    assert.are.equal(3, #epochs)
    local vx, vy = polyline_points(series_named(loss, "validation loss"))
    assert.are.equal(3, #vx)
    for k, e in ipairs(epochs) do
      assert.near(e.val_loss, fy(vy[k]), 2e-3)
      assert.near(e.step, fx(vx[k]), 0.02)
    end
    -- the alpha heatmap holds the last snapshot's softmax weights
    local h = svg_file(out .. "/alpha_normal.svg")
    local cells = by_class(h, "rect", "cell")
    assert.are.equal(14 * 8, #cells)
    local a = epochs[3].alphas.normal
    local edge = run.darts_edges(14)
    local want = {}
    for e = 1, 14 do
      for c, op in ipairs(nasrt.blocks.DARTS_PRIMITIVES) do want[edge[e] .. ", " .. op] = a[e][c] end
    end
    for _, c in ipairs(cells) do
      local key, val = title_of(c):match("^(.*): ([%d%.]+)$")
      assert.near(want[key], tonumber(val), 0.0005 + 1e-9)
    end
    -- outlined cells: the 8 (op, input) pairs of the normal genotype
    assert.are.equal(8, #by_class(h, "rect", "mark"))
    local hist = svg_file(out .. "/alpha_normal_history.svg")
    assert.are.equal(14 * 8, #by_class(hist, "polyline", "series"))
    if have("dot") then
      assert.is_true(exists(out .. "/normal.svg"))
      assert.are.equal("svg", svg_file(out .. "/normal.svg").tag)
    end
  end)

  it("agnas: attention shares per cell from the logged scores", function()
    local out = fresh("agnas-plots")
    local res = assert(plot.plot_run(dirs.agnas, out, { png = false }))
    local r = assert(run.load(dirs.agnas))
    assert.are.equal("agnas", r.method)
    local last = r:records("epoch")[2]
    -- the final `done` line has val_acc but no step: it belongs to the last step
    local xs, ys = r:series("val_acc")
    assert.are.same({ r:records("epoch")[1].step, last.step }, xs)
    assert.are.same({ r:records("epoch")[1].val_acc, last.val_acc }, ys)
    local prims = r.arch.primitives
    for cell, kind in ipairs { "reduce", "reduce" } do    -- 2 cells: both reductions
      local name = ("attention_cell%d_%s"):format(cell - 1, kind)
      local svg = svg_file(out .. "/" .. name .. ".svg")
      local cells = by_class(svg, "rect", "cell")
      assert.are.equal(14 * 8, #cells)
      local S = last.scores[cell]
      local edge = run.darts_edges(14)
      local want = {}
      for e = 1, 14 do
        local sum = 0
        for c = 1, 8 do sum = sum + S[e][c] end
        for c = 1, 8 do want[edge[e] .. ", " .. prims[c]] = S[e][c] / sum end
      end
      for _, c in ipairs(cells) do
        local key, val = title_of(c):match("^(.*): ([%d%.]+)$")
        assert.near(want[key], tonumber(val), 0.0005 + 1e-9)
      end
      assert.are.equal(8, #by_class(svg, "rect", "mark"))
    end
    local names = {}
    for _, f in ipairs(res.files) do names[f.name] = true end
    assert.is_true(names["attention_cell0_reduce_history.svg"])
    assert.is_true(names["loss.svg"] and names["accuracy.svg"])
  end)

  it("spos: accuracy vs FLOPs with the Pareto front of the scored candidates", function()
    local out = fresh("spos-plots")
    assert(plot.plot_run(dirs.spos, out, { png = false }))
    local r = assert(run.load(dirs.spos))
    local ev = r:evaluations()
    assert.is_true(#ev >= 4)
    -- the front by brute force: no other point with <= FLOPs and >= accuracy,
    -- one of them strictly; equal points count once
    local n, seen = 0, {}
    for i, a in ipairs(ev) do
      local dominated = false
      for j, b in ipairs(ev) do
        if j ~= i and b.mflops <= a.mflops and b.score >= a.score and
           (b.mflops < a.mflops or b.score > a.score) then dominated = true end
      end
      local k = a.mflops .. "/" .. a.score
      if not dominated and not seen[k] then n, seen[k] = n + 1, true end
    end
    local svg = svg_file(out .. "/pareto.svg")
    assert.are.equal(#ev, #by_class(svg, "circle", "point"))
    assert.are.equal(n, #by_class(svg, "circle", "pareto"))
    -- the selected architecture is ringed where arch.json puts it
    local fy, fx = axis_maps(svg)
    local ring = by_class(svg, "circle", "highlight")[1]
    assert.near(r.arch.val_acc, fy(tonumber(ring.attrs.cy)), 1e-3)
    assert.near(r.arch.mflops, fx(tonumber(ring.attrs.cx)), 1e-5)
    local s = svg_file(out .. "/search.svg")
    assert.are.equal(#ev, #by_class(s, "circle", "point"))
  end)

  it("rea (NAS-Bench-201 table): candidates with FLOPs, best-so-far line, the cell", function()
    local out = fresh("rea-plots")
    local res = assert(plot.plot_run(dirs.rea, out, { png = false }))
    local r = assert(run.load(dirs.rea))
    local ev = r:evaluations()
    for _, e in ipairs(ev) do assert.is_number(e.mflops) end
    local s = svg_file(out .. "/search.svg")
    local fy = axis_maps(s)
    local _, by = polyline_points(series_named(s, "best so far"))
    local best = -math.huge
    for _, e in ipairs(ev) do best = math.max(best, e.score) end
    assert.near(best, fy(by[#by]), 2e-2)       -- 2 decimals of a pixel on a ~40-point axis
    assert.near(r.arch.val12, best, 1e-9)
    local names = {}
    for _, f in ipairs(res.files) do names[f.name] = true end
    assert.is_true(names["pareto.svg"] and names["cell.dot"])
    assert.truthy(read(out .. "/cell.dot"):find("digraph", 1, true))
  end)

  it("PNG files when rsvg-convert and dot are installed", function()
    if not (have("rsvg-convert") and have("dot")) then
      pending("rsvg-convert or dot missing")
      return
    end
    local out = fresh("png")
    local res = assert(plot.plot_run(dirs.darts, out))
    local n = 0
    for _, f in ipairs(res.files) do
      if f.name:match("%.png$") then
        n = n + 1
        assert.are.equal("\137PNG", read(out .. "/" .. f.name):sub(1, 4))
      end
    end
    assert.is_true(n >= 9)   -- 7 charts and the 2 cells
    -- --no-png: SVG only, the Graphviz cells included
    out = fresh("nopng")
    local st, msg = nasrt_plot(("--no-png --out '%s' '%s'"):format(out, dirs.darts))
    assert.are.equal(0, st, msg)
    local svgs, pngs = 0, 0
    for f in lfs.dir(out) do
      if f:match("%.svg$") then svgs = svgs + 1 elseif f:match("%.png$") then pngs = pngs + 1 end
    end
    assert.is_true(svgs >= 9)
    assert.are.equal(0, pngs)
  end)

  it("gives clear messages for what is not a run", function()
    local st, msg = nasrt_plot("'" .. root_dir .. "/nope'")
    assert.are_not.equal(0, st)
    assert.truthy(msg:find("is not a directory", 1, true), msg)
    assert.falsy(msg:find("traceback", 1, true), msg) -- a message for the user, not a stack
    local empty = fresh("empty")
    assert(lfs.mkdir(empty))
    st, msg = nasrt_plot("'" .. empty .. "'")
    assert.are_not.equal(0, st)
    assert.truthy(msg:find("not a run directory", 1, true), msg)
    -- a run whose log is still empty
    assert(io.open(empty .. "/config.json", "w")):write("{}"):close()
    assert(io.open(empty .. "/log.jsonl", "w")):close()
    st, msg = nasrt_plot("'" .. empty .. "'")
    assert.are_not.equal(0, st)
    assert.truthy(msg:find("log.jsonl is empty", 1, true), msg)
    assert.truthy(msg:find("nothing to plot", 1, true), msg)
    st, msg = nasrt_plot("")
    assert.are_not.equal(0, st)
    assert.truthy(msg:find("usage: nasrt plot", 1, true), msg)
    st, msg = nasrt_plot("--help")
    assert.are.equal(0, st)
  end)
end)

describe("nasrt.run.load", function()
  it("reads a run directory back and rebuilds the found network", function()
    local dir = fresh("load")
    recipe.run(load_recipe("darts"), { out = dir, C = 4, layers = 2, size = 8, train_limit = 16,
      val_limit = 16, batch_size = 16, epochs = 2, quiet = true, seed = 3 })
    local r = assert(nasrt.run.load(dir))
    assert.are.equal(dir, r.dir)
    assert.are.equal(4, r.config.C)
    assert.are.equal("darts", r.arch.type)
    assert.are.same(r.arch.genotype, r.genotype)
    assert.truthy(r.text:find("^Genotype%("))
    local xs, ys = r:series("val_acc")
    local ep = r:records("epoch")
    assert.are.same({ ep[1].step, ep[2].step }, xs)
    assert.are.same({ ep[1].val_acc, ep[2].val_acc }, ys)
    local snaps = r:snapshots()
    assert.are.equal(2, #snaps)
    assert.are.equal("alpha_normal", snaps[2].maps[1].name)
    assert.are.same(ep[2].alphas.normal, snaps[2].maps[1].values)
    -- the checkpoint loads on first use
    assert.is_nil(rawget(r, "checkpoint"))
    assert.is_table(r.checkpoint)
    assert.is_true(nasrt.is_tensor(select(2, next(r.checkpoint.model))))
    -- the found cell as a network (fresh weights)
    local net = r:network { C = 4, layers = 2 }
    local y = net(nasrt.randn { 2, 1, 8, 8 })
    assert.are.same({ 2, 10 }, y:shape())
    local text = tostring(r)
    assert.truthy(text:find("(darts)", 1, true))
    assert.truthy(text:find("2 snapshots", 1, true))
    assert.truthy(text:find("found     Genotype", 1, true))
    -- plot through the object
    local res = r:plot(fresh("via-object"), { png = false })
    assert.is_true(#res.files >= 7)
  end)

  it("rebuilds a one-shot path, fresh or sharing the supernet's weights", function()
    local dir = fresh("spos-load")
    recipe.run(load_recipe("spos"), { out = dir, input_size = 8, batch_size = 8, train_limit = 32,
      val_limit = 16, calib_batches = 1, calib_batch_size = 8, val_batch_size = 16, quiet = true,
      stem = 4, widths = "8,16", repeats = "1,1", last = 16, steps = 2, evo_epochs = 1,
      population = 2, select = 1, mutation = 1, crossover = 1 })
    local r = assert(run.load(dir))
    assert.are.equal("spos", r.method)
    local x = nasrt.randn { 3, 1, 8, 8 }
    local fresh_net = r:network()
    fresh_net:eval()
    assert.are.same({ 3, 10 }, fresh_net(x):shape())
    -- the path of the trained supernet: the checkpoint's weights, the
    -- supernet's own forward of that path, bit for bit
    local shared = r:network { weights = "checkpoint" }
    shared:eval()
    assert.are.equal(r.arch.params, shared:num_parameters())
    local oneshot = require "nasrt.oneshot"
    local S = oneshot.space("spos", recipe.with_defaults(load_recipe("spos"), r.config))
    S.net:load_state_dict(r.checkpoint.model)
    S.net:eval()
    local want = nasrt.no_grad(function() return S:forward(x, r.arch.genes) end)
    local got = nasrt.no_grad(function() return shared(x) end)
    assert.are.equal(0, (want - got):abs():max():item())
    local other = nasrt.no_grad(function() return fresh_net(x) end)
    assert.is_true((want - other):abs():max():item() > 0)
  end)

  it("returns nil and a message for what is not a run", function()
    local r, err = run.load(root_dir .. "/missing")
    assert.is_nil(r)
    assert.truthy(err:find("is not a directory", 1, true))
    assert.has_error(function() run.load(42) end,
      "nasrt.run.load: expected a directory name, got number")
  end)
end)
