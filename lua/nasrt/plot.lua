--- nasrt.plot: a small SVG 1.1 writer and the charts of a run directory.
--
-- No dependency: every chart is plain SVG text (rect, line, polyline,
-- circle, text, one linearGradient per colour bar), written with explicit
-- presentation attributes so browsers, rsvg-convert and Inkscape draw it the
-- same.  Text widths are estimated from DejaVu Sans' advances (the widest of
-- the usual sans fonts), so labels laid out with them do not collide.
--
--     local plot = require "nasrt.plot"
--     plot.save("loss.svg", plot.line_chart { title = "loss", xlabel = "step",
--       series = { { name = "train", x = {1, 2, 3}, y = {2.3, 1.9, 1.7} } } })
--     plot.save("alpha.svg", plot.heatmap { rows = {"e0", "e1"}, cols = {"a", "b"},
--       values = { {0.2, 0.8}, {0.5, 0.5} } })
--
-- Charts: `line_chart`, `scatter` (with a highlighted Pareto front),
-- `heatmap` (with a colour bar and marked cells) and `small_multiples` (a
-- grid of small line charts sharing a legend).  Each returns the SVG text.
-- `plot_run(dir)` makes every chart a run directory supports and `main`
-- is `nasrt plot RUNDIR [--out DIR]`.
--
-- Element classes the specs (and anyone post-processing) rely on:
-- polyline.series (one per line series), circle.point (scatter points),
-- circle.pareto (points on the front), polyline.front, rect.cell (heatmap
-- cells), rect.na (missing heatmap cells), rect.mark (marked cells),
-- text.xtick / text.ytick (tick labels, their text is the value).
-- @module nasrt.plot
local M = {}

--- Line and marker colours (Tableau 10).
M.palette = { "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
              "#7f7f7f", "#bcbd22", "#17becf" }

-- viridis at 9 evenly spaced points (matplotlib's table)
local VIRIDIS = { { 68, 1, 84 }, { 71, 45, 123 }, { 59, 82, 139 }, { 44, 114, 142 },
                  { 33, 145, 140 }, { 40, 174, 128 }, { 94, 201, 98 }, { 173, 220, 48 },
                  { 253, 231, 37 } }

local FONT = "DejaVu Sans, Verdana, Helvetica, Arial, sans-serif"

-- ------------------------------------------------------------- helpers

local function finite(v) return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge end
M.finite = finite

--- A coordinate as SVG text: at most 2 decimals, no trailing zeros.
local function num(v)
  local s = ("%.2f"):format(v):gsub("0+$", ""):gsub("%.$", "")
  if s == "-0" then s = "0" end
  return s
end

local ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;" }
--- XML-escaped text.
function M.escape(s) return (tostring(s):gsub("[&<>\"']", ESC)) end
local esc = M.escape

-- advance widths (em) of DejaVu Sans, rounded up
local NARROW = "[iljI%.,:;|!' ]"
local MEDIUM = "[frt%(%)%[%]{}/\\%-]"

--- Estimated width in pixels of text at font size `size`.
function M.text_width(s, size)
  local w = 0
  for c in tostring(s):gmatch(utf8.charpattern) do
    if c == "m" or c == "W" then w = w + 1.0
    elseif c == "w" or c == "M" then w = w + 0.86
    elseif c:match(NARROW) then w = w + 0.34
    elseif c:match(MEDIUM) then w = w + 0.44
    elseif c:match("%u") then w = w + 0.74
    elseif c:match("%d") then w = w + 0.64
    else w = w + 0.63 end
  end
  return w * size
end
local text_width = M.text_width

local function max_width(list, size)
  local w = 0
  for _, s in ipairs(list) do w = math.max(w, text_width(s, size)) end
  return w
end

--- Colour of t in [0, 1] on viridis, as "#rrggbb", and its luminance.
function M.viridis(t)
  if not finite(t) then t = 0 end
  t = math.max(0, math.min(1, t))
  local p = t * (#VIRIDIS - 1)
  local i = math.min(math.floor(p), #VIRIDIS - 2)
  local f = p - i
  local a, b = VIRIDIS[i + 1], VIRIDIS[i + 2]
  local c = {}
  for k = 1, 3 do c[k] = math.floor(a[k] + (b[k] - a[k]) * f + 0.5) end
  local lum = (0.299 * c[1] + 0.587 * c[2] + 0.114 * c[3]) / 255
  return ("#%02x%02x%02x"):format(c[1], c[2], c[3]), lum
end

-- ------------------------------------------------------------- ticks

--- A "nice" step (1, 2 or 5 times a power of ten) cutting `range` into
-- about n parts.
function M.nice_step(range, n)
  local raw = range / (n or 5)
  local mag = 10 ^ math.floor(math.log(raw, 10))
  local f = raw / mag
  local nice = f < 1.5 and 1 or f < 3 and 2 or f < 7 and 5 or 10
  return nice * mag
end

--- Ticks over [lo, hi]: {lo=, hi=, step=, ticks={...}}.  With `expand`
-- the domain grows to the enclosing multiples of the step.  `integer`
-- keeps the step at 1 or more.
function M.ticks(lo, hi, n, expand, integer)
  if lo == hi then
    local d = lo == 0 and 1 or math.abs(lo) * 0.1
    lo, hi = lo - d, hi + d
  end
  local step = M.nice_step(hi - lo, n)
  if integer and step < 1 then step = 1 end
  if expand then
    lo = math.floor(lo / step + 1e-9) * step
    hi = math.ceil(hi / step - 1e-9) * step
  end
  local t, k0 = {}, math.ceil(lo / step - 1e-9)
  for k = k0, math.floor(hi / step + 1e-9) do
    local v = k * step
    if math.abs(v) < step * 1e-9 then v = 0 end
    t[#t + 1] = v
  end
  return { lo = lo, hi = hi, step = step, ticks = t }
end

--- Tick label text of v on an axis with the given step.
function M.tick_label(v, step)
  if v == 0 then return "0" end
  local a = math.abs(v)
  if a >= 1e6 or a < 1e-3 then      -- 2.5e-5, 1e6
    local e = math.floor(math.log(a, 10) + 1e-9)
    return ("%se%d"):format(("%.3g"):format(v / 10 ^ e), e)
  end
  local d = math.max(0, -math.floor(math.log(step, 10) + 1e-9))
  return ("%." .. d .. "f"):format(v)
end

-- ------------------------------------------------------------- SVG document

local Svg = {}
Svg.__index = Svg

--- A new SVG document of w x h pixels.  Methods: el(tag, attrs[, body]),
-- open(tag, attrs), close(tag), text(x, y, s, attrs), def(text),
-- id(prefix), render() -> string.
function M.svg(w, h)
  return setmetatable({ w = w, h = h, parts = {}, defs = {}, nid = 0 }, Svg)
end

local function attr_text(a)
  local keys = {}
  for k in pairs(a or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local v = a[k]
    if type(v) == "number" then v = num(v) end
    out[#out + 1] = (' %s="%s"'):format(k, esc(v))
  end
  return table.concat(out)
end

function Svg:el(tag, a, body)
  if body then
    self.parts[#self.parts + 1] = ("<%s%s>%s</%s>"):format(tag, attr_text(a), body, tag)
  else
    self.parts[#self.parts + 1] = ("<%s%s/>"):format(tag, attr_text(a))
  end
end

function Svg:open(tag, a) self.parts[#self.parts + 1] = ("<%s%s>"):format(tag, attr_text(a)) end
function Svg:close(tag) self.parts[#self.parts + 1] = ("</%s>"):format(tag) end
function Svg:def(text) self.defs[#self.defs + 1] = text end

function Svg:id(prefix)
  self.nid = self.nid + 1
  return ("%s%d"):format(prefix, self.nid)
end

function Svg:text(x, y, s, a)
  a = a or {}
  a.x, a.y = x, y
  self:el("text", a, esc(s))
end

--- A polyline through parallel lists of pixel coordinates.
function Svg:polyline(px, py, a)
  local pts = {}
  for i = 1, #px do pts[i] = num(px[i]) .. "," .. num(py[i]) end
  a = a or {}
  a.points = table.concat(pts, " ")
  local title = a.title
  a.title = nil
  self:el("polyline", a, title and ("<title>%s</title>"):format(esc(title)) or nil)
end

function Svg:render()
  local head = ('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n' ..
    '<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="%s" height="%s" ' ..
    'viewBox="0 0 %s %s" font-family="%s" font-size="12">\n'):format(num(self.w), num(self.h),
    num(self.w), num(self.h), FONT)
  local out = { head, ('<rect x="0" y="0" width="%s" height="%s" fill="#ffffff"/>\n'):format(
    num(self.w), num(self.h)) }
  if #self.defs > 0 then out[#out + 1] = "<defs>\n" .. table.concat(self.defs, "\n") .. "\n</defs>\n" end
  out[#out + 1] = table.concat(self.parts, "\n")
  out[#out + 1] = "\n</svg>\n"
  return table.concat(out)
end

--- Writes text to path.  Returns true, or nil and a message.
function M.save(path, text)
  local f, err = io.open(path, "w")
  if not f then return nil, err end
  f:write(text)
  f:close()
  return true
end

-- ------------------------------------------------------------- axes

-- Domain of the finite values of several lists ({lo, hi} or nil).
local function extent(lists, lo, hi)
  for _, l in ipairs(lists) do
    for _, v in ipairs(l) do
      if finite(v) then
        lo = lo and math.min(lo, v) or v
        hi = hi and math.max(hi, v) or v
      end
    end
  end
  return lo, hi
end

local function all_integers(lists)
  for _, l in ipairs(lists) do
    for _, v in ipairs(l) do if finite(v) and math.floor(v) ~= v then return false end end
  end
  return true
end

-- Ticks of both axes from the data lists (and o.xlim / o.ylim).
local function scales(xs, ys, o, nx, ny)
  local xlo, xhi = extent(xs)
  local ylo, yhi = extent(ys)
  if not xlo then xlo, xhi = 0, 1 end
  if not ylo then ylo, yhi = 0, 1 end
  if o.xlim then xlo, xhi = o.xlim[1], o.xlim[2] end
  if o.ylim then ylo, yhi = o.ylim[1], o.ylim[2] end
  if o.yzero then ylo, yhi = math.min(ylo, 0), math.max(yhi, 0) end
  local X = M.ticks(xlo, xhi, nx, o.xpad, all_integers(xs))
  local Y = M.ticks(ylo, yhi, ny, not o.ylim, false)
  if o.xpad then   -- scatter: a margin of 4% so points do not sit on the frame
    local d = (xhi - xlo) * 0.04
    if d == 0 then d = X.step / 2 end
    X = M.ticks(xlo - d, xhi + d, nx, false, false)
  end
  return X, Y
end

-- Width of the widest y tick label.
local function ytick_width(Y, size)
  local w = 0
  for _, v in ipairs(Y.ticks) do w = math.max(w, text_width(M.tick_label(v, Y.step), size)) end
  return w
end

-- Draws grid, frame, ticks and axis labels of the plot box {x, y, w, h};
-- returns the value -> pixel maps sx, sy.
local function frame(svg, box, X, Y, o)
  local fs = o.small and 9 or 11
  local function sx(v) return box.x + (v - X.lo) / (X.hi - X.lo) * box.w end
  local function sy(v) return box.y + box.h - (v - Y.lo) / (Y.hi - Y.lo) * box.h end
  svg:open("g", { class = "grid", stroke = "#e6e6e6", ["stroke-width"] = 1 })
  for _, v in ipairs(X.ticks) do svg:el("line", { x1 = sx(v), y1 = box.y, x2 = sx(v), y2 = box.y + box.h }) end
  for _, v in ipairs(Y.ticks) do svg:el("line", { x1 = box.x, y1 = sy(v), x2 = box.x + box.w, y2 = sy(v) }) end
  svg:close("g")
  svg:el("rect", { x = box.x, y = box.y, width = box.w, height = box.h, fill = "none",
                   stroke = "#555555", ["stroke-width"] = 1, class = "frame" })
  svg:open("g", { stroke = "#555555", ["stroke-width"] = 1 })
  for _, v in ipairs(X.ticks) do
    svg:el("line", { x1 = sx(v), y1 = box.y + box.h, x2 = sx(v), y2 = box.y + box.h + 4 })
  end
  for _, v in ipairs(Y.ticks) do svg:el("line", { x1 = box.x - 4, y1 = sy(v), x2 = box.x, y2 = sy(v) }) end
  svg:close("g")
  svg:open("g", { fill = "#333333", ["font-size"] = fs })
  -- x tick labels: skip those that would touch the previous one
  local last_right = -math.huge
  for _, v in ipairs(X.ticks) do
    local s = M.tick_label(v, X.step)
    local w = text_width(s, fs)
    local x = sx(v)
    if x - w / 2 > last_right + 4 then
      svg:text(x, box.y + box.h + 6 + fs, s, { ["text-anchor"] = "middle", class = "xtick" })
      last_right = x + w / 2
    end
  end
  for _, v in ipairs(Y.ticks) do
    svg:text(box.x - 7, sy(v) + fs * 0.35, M.tick_label(v, Y.step), { ["text-anchor"] = "end",
      class = "ytick" })
  end
  svg:close("g")
  local lfs = o.small and 10 or 12
  if o.xlabel then
    svg:text(box.x + box.w / 2, box.y + box.h + fs + 10 + lfs + 2, o.xlabel,
      { ["text-anchor"] = "middle", ["font-size"] = lfs, fill = "#222222", class = "xlabel" })
  end
  if o.ylabel then
    local x = box.x - 10 - (o.ytick_w or ytick_width(Y, fs)) - 6
    local y = box.y + box.h / 2
    svg:text(x, y, o.ylabel, { ["text-anchor"] = "middle", ["font-size"] = lfs, fill = "#222222",
      transform = ("rotate(-90 %s %s)"):format(num(x), num(y)), class = "ylabel" })
  end
  return sx, sy
end

local function title(svg, w, s, y)
  if s then
    svg:text(w / 2, y or 22, s, { ["text-anchor"] = "middle", ["font-size"] = 15,
      ["font-weight"] = "bold", fill = "#222222", class = "title" })
  end
end

-- A clip path of the box (so lines drawn past a fixed ylim stay inside).
local function clip(svg, box)
  local id = svg:id("clip")
  svg:def(('<clipPath id="%s"><rect x="%s" y="%s" width="%s" height="%s"/></clipPath>'):format(
    id, num(box.x - 6), num(box.y - 6), num(box.w + 12), num(box.h + 12)))
  return ("url(#%s)"):format(id)
end

-- Finite points of a series as two lists (pixel-mapped when sx, sy given).
local function points(s, sx, sy)
  local px, py = {}, {}
  for i = 1, math.min(#s.x, #s.y) do
    local x, y = s.x[i], s.y[i]
    if finite(x) and finite(y) then
      px[#px + 1] = sx and sx(x) or x
      py[#py + 1] = sy and sy(y) or y
    end
  end
  return px, py
end

local function marker(svg, shape, x, y, r, color, a)
  a = a or {}
  if shape == "square" then
    a.x, a.y, a.width, a.height = x - r, y - r, 2 * r, 2 * r
    a.fill = a.fill or color
    svg:el("rect", a)
  elseif shape == "diamond" then
    a.points = ("%s,%s %s,%s %s,%s %s,%s"):format(num(x), num(y - r * 1.3), num(x + r * 1.3),
      num(y), num(x), num(y + r * 1.3), num(x - r * 1.3), num(y))
    a.fill = a.fill or color
    svg:el("polygon", a)
  else
    a.cx, a.cy, a.r = x, y, r
    a.fill = a.fill or color
    svg:el("circle", a)
  end
end

-- Legend at (x, y): entries {name, color, line=bool, marker=shape|nil,
-- dash=, opacity=}.  Returns its height.
local function legend(svg, x, y, entries, fs)
  fs = fs or 11
  local h = fs + 7
  svg:open("g", { class = "legend", ["font-size"] = fs, fill = "#222222" })
  for i, e in ipairs(entries) do
    local cy = y + (i - 1) * h + h / 2
    if e.line ~= false then
      svg:el("line", { x1 = x, y1 = cy, x2 = x + 22, y2 = cy, stroke = e.color,
        ["stroke-width"] = e.width or 2, ["stroke-dasharray"] = e.dash,
        ["stroke-opacity"] = e.opacity })
    end
    if e.marker then marker(svg, e.marker, x + 11, cy, e.r or 3.5, e.color, { stroke = e.stroke,
      ["stroke-width"] = e.stroke and 1.5 or nil }) end
    svg:text(x + 28, cy + fs * 0.36, e.name)
  end
  svg:close("g")
  return #entries * h
end

local function legend_width(entries, fs)
  local names = {}
  for i, e in ipairs(entries) do names[i] = e.name end
  return max_width(names, fs or 11) + 28
end

-- Plot box and legend placement: the legend goes right of the box, or
-- below the chart in rows when it would take more than 28% of the width
-- (the document then grows taller).  Returns the box, the document
-- height and a function drawing the legend.
local function layout(W, H, left, top, bottom, entries)
  local lw = #entries > 0 and legend_width(entries) + 24 or 10
  if lw <= W * 0.28 then
    local box = { x = left, y = top, w = W - left - lw - 10, h = H - top - bottom }
    return box, H, function(svg)
      if #entries > 0 then legend(svg, box.x + box.w + 16, box.y, entries) end
    end
  end
  local box = { x = left, y = top, w = W - left - 24, h = H - top - bottom }
  local rows, cur, curw = {}, {}, 0
  for _, e in ipairs(entries) do
    local w = text_width(e.name, 11) + 28 + 20
    if #cur > 0 and curw + w > box.w then
      rows[#rows + 1] = cur
      cur, curw = {}, 0
    end
    cur[#cur + 1] = { e, curw }
    curw = curw + w
  end
  if #cur > 0 then rows[#rows + 1] = cur end
  local lh = 18
  return box, H + #rows * lh + 4, function(svg)
    for ri, row in ipairs(rows) do
      for _, it in ipairs(row) do legend(svg, box.x + it[2], H - 6 + (ri - 1) * lh, { it[1] }) end
    end
  end
end

-- ------------------------------------------------------------- line chart

--- Line chart.  o = {title=, xlabel=, ylabel=, width=720, height=420,
-- xlim=, ylim= ({lo, hi}), yzero=, series = {{name=, x={...}, y={...},
-- color=, width=, dash=, opacity=, markers=bool}, ...}}.  Non-finite
-- points are left out; every series is one polyline.series (with its name
-- as <title>), with circle markers when it has markers (default: 12 points
-- or fewer).
-- @treturn string SVG text
function M.line_chart(o)
  local W, H = o.width or 720, o.height or 420
  local series = o.series or {}
  local xs, ys = {}, {}
  for i, s in ipairs(series) do xs[i], ys[i] = s.x, s.y end
  local X, Y = scales(xs, ys, o, 8, 6)
  local entries = {}
  for i, s in ipairs(series) do
    s.color = s.color or M.palette[(i - 1) % #M.palette + 1]
    local px = points(s)
    if s.markers == nil then s.markers = #px <= 12 end
    entries[i] = { name = s.name or ("series " .. i), color = s.color, width = s.width or 2,
                   dash = s.dash, opacity = s.opacity, marker = s.markers and "circle" or nil }
  end
  local ytw = ytick_width(Y, 11)
  local left = 14 + (o.ylabel and 22 or 0) + ytw
  local top = o.title and 40 or 14
  local box, H2, draw_legend = layout(W, H, left, top, o.xlabel and 50 or 32, entries)
  local svg = M.svg(W, H2)
  title(svg, W, o.title)
  local sx, sy = frame(svg, box, X, Y, { xlabel = o.xlabel, ylabel = o.ylabel, ytick_w = ytw })
  local cp = clip(svg, box)
  for i, s in ipairs(series) do
    local px, py = points(s, sx, sy)
    svg:polyline(px, py, { class = "series", fill = "none", stroke = s.color,
      ["stroke-width"] = s.width or 2, ["stroke-dasharray"] = s.dash,
      ["stroke-opacity"] = s.opacity, ["stroke-linejoin"] = "round", ["clip-path"] = cp,
      title = entries[i].name })
    if s.markers then
      svg:open("g", { fill = s.color, ["clip-path"] = cp })
      for k = 1, #px do svg:el("circle", { cx = px[k], cy = py[k], r = 3.2 }) end
      svg:close("g")
    end
  end
  draw_legend(svg)
  return svg:render()
end

--- Exponential moving average (TensorBoard's smoothing, debiased).
function M.smooth(y, weight)
  weight = weight or 0.9
  local out, last, n = {}, 0, 0
  for i, v in ipairs(y) do
    if finite(v) then
      n = n + 1
      last = last * weight + (1 - weight) * v
      out[i] = last / (1 - weight ^ n)
    else
      out[i] = v
    end
  end
  return out
end

-- ------------------------------------------------------------- scatter

--- Indices of the points that no other point dominates when y is to be
-- maximised and x minimised (ties: the first one), sorted by x.
function M.pareto_front(x, y)
  local idx = {}
  for i = 1, math.min(#x, #y) do if finite(x[i]) and finite(y[i]) then idx[#idx + 1] = i end end
  table.sort(idx, function(a, b)
    if x[a] ~= x[b] then return x[a] < x[b] end
    if y[a] ~= y[b] then return y[a] > y[b] end
    return a < b
  end)
  local front, best = {}, -math.huge
  for _, i in ipairs(idx) do
    if y[i] > best then
      front[#front + 1] = i
      best = y[i]
    end
  end
  return front
end

--- Scatter plot.  o = {title=, xlabel=, ylabel=, width=720, height=460,
-- series = {{name=, x=, y=, color=, r=, shape= (circle|square|diamond),
-- class= (default "point"), labels= (per-point <title>)}},
-- lines = {{name=, x=, y=, color=, dash=, class=}} (drawn under the points),
-- pareto = true (the front of all points -- max y, min x -- is drawn as
-- a step line (polyline.front) and its points as circle.pareto),
-- highlight = {x=, y=, label=} (a ring and a label)}.
-- @treturn string SVG text
function M.scatter(o)
  local W, H = o.width or 720, o.height or 460
  local series, lines = o.series or {}, o.lines or {}
  local xs, ys = {}, {}
  for _, s in ipairs(series) do xs[#xs + 1], ys[#ys + 1] = s.x, s.y end
  for _, s in ipairs(lines) do xs[#xs + 1], ys[#ys + 1] = s.x, s.y end
  local vl = o.vline and finite(o.vline.x) and o.vline or nil
  if vl then xs[#xs + 1] = { vl.x } end
  local so = { xpad = true, xlim = o.xlim, ylim = o.ylim }
  local X, Y = scales(xs, ys, so, 8, 6)
  local entries = {}
  for i, s in ipairs(lines) do
    s.color = s.color or M.palette[(#series + i - 1) % #M.palette + 1]
    entries[#entries + 1] = { name = s.name, color = s.color, dash = s.dash, width = 2 }
  end
  for i, s in ipairs(series) do
    s.color = s.color or M.palette[(i - 1) % #M.palette + 1]
    entries[#entries + 1] = { name = s.name or ("series " .. i), color = s.color, line = false,
      marker = s.shape or "circle", r = 4 }
  end
  if vl then
    entries[#entries + 1] = { name = vl.name or ("x = %g"):format(vl.x), color = "#555555", dash = "6,4",
      width = 1.5 }
  end
  -- the Pareto front over every point
  local fx, fy = {}, {}
  if o.pareto then
    local ax, ay = {}, {}
    for _, s in ipairs(series) do
      local px, py = points(s)
      for k = 1, #px do ax[#ax + 1], ay[#ay + 1] = px[k], py[k] end
    end
    for _, i in ipairs(M.pareto_front(ax, ay)) do fx[#fx + 1], fy[#fy + 1] = ax[i], ay[i] end
    entries[#entries + 1] = { name = o.pareto_name or ("Pareto front (%d)"):format(#fx),
      color = "#d62728", marker = "circle", r = 5, width = 2 }
  end
  if o.highlight then
    entries[#entries + 1] = { name = o.highlight.label or "selected", color = "#ffffff",
      line = false, marker = "circle", r = 6, stroke = "#111111" }
  end
  local ytw = ytick_width(Y, 11)
  local left = 14 + (o.ylabel and 22 or 0) + ytw
  local top = o.title and 40 or 14
  local box, H2, draw_legend = layout(W, H, left, top, o.xlabel and 50 or 32, entries)
  local svg = M.svg(W, H2)
  title(svg, W, o.title)
  local sx, sy = frame(svg, box, X, Y, { xlabel = o.xlabel, ylabel = o.ylabel, ytick_w = ytw })
  local cp = clip(svg, box)
  if vl then
    svg:el("line", { class = "vline", x1 = sx(vl.x), y1 = box.y, x2 = sx(vl.x), y2 = box.y + box.h,
      stroke = "#555555", ["stroke-width"] = 1.5, ["stroke-dasharray"] = "6,4" })
  end
  for _, s in ipairs(lines) do
    local px, py = points(s, sx, sy)
    svg:polyline(px, py, { class = s.class or "series", fill = "none", stroke = s.color,
      ["stroke-width"] = 2, ["stroke-dasharray"] = s.dash, ["stroke-linejoin"] = "round",
      ["clip-path"] = cp, title = s.name })
  end
  if #fx > 0 then
    -- staircase: from each front point right to the next one's x, then up
    local px, py = {}, {}
    for k = 1, #fx do
      if k > 1 then px[#px + 1], py[#py + 1] = sx(fx[k]), sy(fy[k - 1]) end
      px[#px + 1], py[#py + 1] = sx(fx[k]), sy(fy[k])
    end
    svg:polyline(px, py, { class = "front", fill = "none", stroke = "#d62728", ["stroke-width"] = 2,
      ["stroke-opacity"] = 0.8, ["clip-path"] = cp, title = "Pareto front" })
  end
  for _, s in ipairs(series) do
    svg:open("g", { fill = s.color, ["fill-opacity"] = s.opacity or 0.75, ["clip-path"] = cp })
    for k = 1, math.min(#s.x, #s.y) do
      if finite(s.x[k]) and finite(s.y[k]) then
        local a = { class = s.class or "point" }
        if s.labels and s.labels[k] then
          -- a <title> child needs the element open, so circles with labels
          -- are written by hand
          svg.parts[#svg.parts + 1] = ('<circle class="%s" cx="%s" cy="%s" r="%s"><title>%s</title></circle>')
            :format(esc(a.class), num(sx(s.x[k])), num(sy(s.y[k])), num(s.r or 4), esc(s.labels[k]))
        else
          marker(svg, s.shape or "circle", sx(s.x[k]), sy(s.y[k]), s.r or 4, s.color, a)
        end
      end
    end
    svg:close("g")
  end
  if #fx > 0 then
    svg:open("g", { fill = "#d62728", stroke = "#ffffff", ["stroke-width"] = 1, ["clip-path"] = cp })
    for k = 1, #fx do svg:el("circle", { class = "pareto", cx = sx(fx[k]), cy = sy(fy[k]), r = 5 }) end
    svg:close("g")
  end
  local hl = o.highlight
  if hl and finite(hl.x) and finite(hl.y) then
    local x, y = sx(hl.x), sy(hl.y)
    svg:el("circle", { class = "highlight", cx = x, cy = y, r = 8, fill = "none", stroke = "#111111",
      ["stroke-width"] = 2 })
  end
  draw_legend(svg)
  return svg:render()
end

-- ------------------------------------------------------------- heatmap

--- Heatmap.  o = {title=, rows={labels}, cols={labels}, values={{...}}
-- (rows x cols; ragged rows leave rect.na cells), vmin=, vmax= (default:
-- the data's range), marks = {[r] = {[c] = true}} (outlined cells),
-- annotate = bool (values in the cells; default when the cells are wide
-- enough), fmt = "%.2f", xlabel=, ylabel=, colorbar = "label",
-- cell_w=, cell_h=}.
-- @treturn string SVG text
function M.heatmap(o)
  local rows, cols, V = o.rows or {}, o.cols or {}, o.values or {}
  local nr, nc = #rows, #cols
  local lo, hi = o.vmin, o.vmax
  local dlo, dhi = extent(V)
  lo, hi = lo or dlo or 0, hi or dhi or 1
  if hi <= lo then hi = lo + 1 end
  local fs = 11
  local cw = o.cell_w or math.max(36, math.min(64, max_width(cols, fs) * 0.55))
  local ch = o.cell_h or math.max(24, math.min(40, 120 / math.max(nr, 1)))
  local fmt = o.fmt or "%.2f"
  local annotate = o.annotate
  if annotate == nil then annotate = cw >= text_width(fmt:format(-0.99), 9.5) + 4 end
  local rlw = max_width(rows, fs)
  -- column labels below the grid, rotated by 40 degrees
  local ang = math.rad(40)
  local clw = max_width(cols, fs)
  local col_h = clw * math.sin(ang) + fs
  local top = o.title and 42 or 14
  local x0 = 12 + (o.ylabel and 20 or 0) + rlw + 8
  -- the first column label reaches left of the grid by about its width * cos
  x0 = math.max(x0, 12 + clw * math.cos(ang) - cw / 2)
  local gw, gh = nc * cw, nr * ch
  local cbx = x0 + gw + 18
  local cbh = math.max(gh, 120)          -- the colour bar: at least 120 px tall
  local C = M.ticks(lo, hi, math.max(2, math.min(6, cbh // 30)), false, false)
  local cblw = 0
  for _, v in ipairs(C.ticks) do cblw = math.max(cblw, text_width(M.tick_label(v, C.step), 10)) end
  local W = cbx + 14 + 6 + cblw + (o.colorbar and 24 or 8)
  if o.title then W = math.max(W, text_width(o.title, 15) + 30) end
  local H = math.max(top + gh + col_h + 12 + (o.xlabel and 22 or 0), top + cbh + 12)
  local svg = M.svg(W, H)
  title(svg, W, o.title)
  local y0 = top
  svg:open("g", { class = "cells", stroke = "#ffffff", ["stroke-width"] = 1 })
  for r = 1, nr do
    local row = V[r] or {}
    for c = 1, nc do
      local v = row[c]
      local x, y = x0 + (c - 1) * cw, y0 + (r - 1) * ch
      if finite(v) then
        local color = M.viridis((v - lo) / (hi - lo))
        svg.parts[#svg.parts + 1] = ('<rect class="cell" x="%s" y="%s" width="%s" height="%s" fill="%s">' ..
          '<title>%s</title></rect>'):format(num(x), num(y), num(cw), num(ch), color,
          esc(("%s, %s: %s"):format(rows[r], cols[c], fmt:format(v))))
      else
        svg:el("rect", { class = "na", x = x, y = y, width = cw, height = ch, fill = "#f2f2f2" })
      end
    end
  end
  svg:close("g")
  if annotate then
    svg:open("g", { ["font-size"] = 9.5, ["text-anchor"] = "middle", class = "values" })
    for r = 1, nr do
      for c = 1, nc do
        local v = (V[r] or {})[c]
        if finite(v) then
          local _, lum = M.viridis((v - lo) / (hi - lo))
          svg:text(x0 + (c - 0.5) * cw, y0 + (r - 0.5) * ch + 3.4, fmt:format(v),
            { fill = lum < 0.55 and "#ffffff" or "#222222" })
        end
      end
    end
    svg:close("g")
  end
  if o.marks then
    svg:open("g", { fill = "none", stroke = "#ff3b30", ["stroke-width"] = 2.5 })
    for r = 1, nr do
      for c = 1, nc do
        if o.marks[r] and o.marks[r][c] then
          svg:el("rect", { class = "mark", x = x0 + (c - 1) * cw + 1.5, y = y0 + (r - 1) * ch + 1.5,
                           width = cw - 3, height = ch - 3 })
        end
      end
    end
    svg:close("g")
  end
  -- row and column labels
  svg:open("g", { ["font-size"] = fs, fill = "#222222" })
  for r = 1, nr do
    svg:text(x0 - 6, y0 + (r - 0.5) * ch + fs * 0.36, rows[r], { ["text-anchor"] = "end",
      class = "rowlabel" })
  end
  for c = 1, nc do
    local x, y = x0 + (c - 0.5) * cw + 3, y0 + gh + 8
    svg:text(x, y + fs * 0.7, cols[c], { ["text-anchor"] = "end", class = "collabel",
      transform = ("rotate(-40 %s %s)"):format(num(x), num(y + fs * 0.7)) })
  end
  svg:close("g")
  if o.ylabel then
    local x, y = 14, y0 + gh / 2
    svg:text(x, y, o.ylabel, { ["text-anchor"] = "middle", ["font-size"] = 12, fill = "#222222",
      transform = ("rotate(-90 %s %s)"):format(num(x), num(y)) })
  end
  if o.xlabel then
    svg:text(x0 + gw / 2, H - 8, o.xlabel, { ["text-anchor"] = "middle", ["font-size"] = 12,
      fill = "#222222" })
  end
  -- colour bar: a vertical gradient, vmax at the top
  local id = svg:id("cbar")
  local stops = {}
  for k = 0, 10 do
    stops[#stops + 1] = ('<stop offset="%s" stop-color="%s"/>'):format(num(k / 10), M.viridis(1 - k / 10))
  end
  svg:def(('<linearGradient id="%s" x1="0" y1="0" x2="0" y2="1">%s</linearGradient>'):format(id,
    table.concat(stops)))
  svg:el("rect", { x = cbx, y = y0, width = 14, height = cbh, fill = ("url(#%s)"):format(id),
                   stroke = "#555555", ["stroke-width"] = 0.8, class = "colorbar" })
  svg:open("g", { ["font-size"] = 10, fill = "#333333" })
  for _, v in ipairs(C.ticks) do
    local y = y0 + cbh - (v - lo) / (hi - lo) * cbh
    svg:el("line", { x1 = cbx + 14, y1 = y, x2 = cbx + 18, y2 = y, stroke = "#555555" })
    svg:text(cbx + 20, y + 3.5, M.tick_label(v, C.step), { class = "ctick" })
  end
  svg:close("g")
  if o.colorbar then
    local x, y = W - 10, y0 + cbh / 2
    svg:text(x, y, o.colorbar, { ["text-anchor"] = "middle", ["font-size"] = 11, fill = "#222222",
      transform = ("rotate(-90 %s %s)"):format(num(x), num(y)) })
  end
  return svg:render()
end

-- ------------------------------------------------------------- small multiples

--- A grid of small line charts sharing axes ranges and one legend.
-- o = {title=, panels = {{title=, series = {{name=, x=, y=, color=}}}},
-- cols = 4, panel_w = 200, panel_h = 130, ylim=, xlabel=, ylabel=,
-- highlight = {[panel] = series index} (drawn thicker)}.  Series i has
-- the same colour in every panel; the legend lists the first panel's.
-- @treturn string SVG text
function M.small_multiples(o)
  local panels = o.panels or {}
  local ncol = math.min(o.cols or 4, math.max(#panels, 1))
  local nrow = math.max(1, math.ceil(#panels / ncol))
  local pw, ph = o.panel_w or 200, o.panel_h or 130
  local xs, ys = {}, {}
  for _, p in ipairs(panels) do
    for _, s in ipairs(p.series) do xs[#xs + 1], ys[#ys + 1] = s.x, s.y end
  end
  local X, Y = scales(xs, ys, { ylim = o.ylim }, 4, 4)
  local entries = {}
  for i, s in ipairs(panels[1] and panels[1].series or {}) do
    entries[i] = { name = s.name or ("series " .. i), color = s.color or M.palette[(i - 1) % #M.palette + 1] }
  end
  local lw = #entries > 0 and legend_width(entries) + 24 or 10
  local ytw = ytick_width(Y, 9)
  local left = 12 + ytw + 8 + (o.ylabel and 20 or 0)
  local gapx, gapy = ytw + 18, 44
  local top = o.title and 46 or 16
  local W = left + ncol * pw + (ncol - 1) * gapx + lw + 10
  local H = top + nrow * ph + (nrow - 1) * gapy + 30 + (o.xlabel and 20 or 0)
  local svg = M.svg(W, H)
  title(svg, W, o.title)
  for k, p in ipairs(panels) do
    local r, c = (k - 1) // ncol, (k - 1) % ncol
    local box = { x = left + c * (pw + gapx), y = top + r * (ph + gapy), w = pw, h = ph }
    svg:text(box.x + pw / 2, box.y - 6, p.title or "", { ["text-anchor"] = "middle",
      ["font-size"] = 11, fill = "#222222", class = "panel-title" })
    local sx, sy = frame(svg, box, X, Y, { small = true, ytick_w = ytw })
    local cp = clip(svg, box)
    local hi = o.highlight and o.highlight[k]
    for i, s in ipairs(p.series) do
      local px, py = points(s, sx, sy)
      local color = s.color or M.palette[(i - 1) % #M.palette + 1]
      svg:polyline(px, py, { class = "series", fill = "none", stroke = color,
        ["stroke-width"] = hi == i and 3 or 1.6, ["stroke-linejoin"] = "round", ["clip-path"] = cp,
        title = (p.title or "") .. ": " .. (s.name or "") })
      if #px <= 12 then
        svg:open("g", { fill = color, ["clip-path"] = cp })
        for q = 1, #px do svg:el("circle", { cx = px[q], cy = py[q], r = hi == i and 2.6 or 1.8 }) end
        svg:close("g")
      end
    end
  end
  if o.xlabel then
    svg:text(left + (ncol * pw + (ncol - 1) * gapx) / 2, H - 10, o.xlabel, { ["text-anchor"] = "middle",
      ["font-size"] = 12, fill = "#222222", class = "xlabel" })
  end
  if o.ylabel then
    local x, y = 14, top + (nrow * ph + (nrow - 1) * gapy) / 2
    svg:text(x, y, o.ylabel, { ["text-anchor"] = "middle", ["font-size"] = 12, fill = "#222222",
      transform = ("rotate(-90 %s %s)"):format(num(x), num(y)), class = "ylabel" })
  end
  if #entries > 0 then legend(svg, W - lw + 6, top, entries) end
  return svg:render()
end

-- ------------------------------------------------------------- run directories

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- Whether a command is on PATH.
function M.have(cmd)
  local ok = os.execute(("command -v %s >/dev/null 2>&1"):format(cmd))
  return ok == true or ok == 0
end

local function run_cmd(fmt, ...)
  local args = { ... }
  for i, a in ipairs(args) do args[i] = shell_quote(a) end
  local ok = os.execute(fmt:format(table.unpack(args)) .. " >/dev/null 2>&1")
  return ok == true or ok == 0
end

-- the training curves: loss, accuracy, learning rate (and GDAS' tau)
local function curves(r, put, notes)
  local phases = r:phases("step")
  local multi = #phases > 1
  local function label(name, phase)
    if multi and phase then return ("%s [%s]"):format(name, phase) end
    return name
  end
  local loss, acc, lr, tau = {}, {}, {}, {}
  local palette_i = 0
  local function color()
    palette_i = palette_i + 1
    return M.palette[(palette_i - 1) % #M.palette + 1]
  end
  -- a per-step series: the raw batch values faint, their moving average
  -- on top when there are many
  local function add_steps(list, xs, ys, name)
    if #xs == 0 then return end
    local c = color()
    if #xs > 40 then
      list[#list + 1] = { name = name .. " (batch)", x = xs, y = ys, color = c, width = 1,
                          opacity = 0.3, markers = false }
      list[#list + 1] = { name = name .. " (smoothed)", x = xs, y = M.smooth(ys, 0.9), color = c, width = 2 }
    else
      list[#list + 1] = { name = name .. " (batch)", x = xs, y = ys, color = c, width = 1.5 }
    end
  end
  local step_phases = #phases > 0 and phases or { false }
  for _, ph in ipairs(step_phases) do
    local o = { kind = "step", phase = ph or nil }
    for _, k in ipairs { { "loss", "train loss", loss }, { "train_loss", "train loss", loss },
                         { "arch_loss", "architecture loss", loss }, { "acc", "train accuracy", acc },
                         { "train_acc", "train accuracy", acc } } do
      local xs, ys = r:series(k[1], o)
      add_steps(k[3], xs, ys, label(k[2], ph or nil))
    end
    for _, k in ipairs { { "lr", "learning rate", lr }, { "tau", "Gumbel temperature τ", tau } } do
      local xs, ys = r:series(k[1], o)
      if #xs > 0 then k[3][#k[3] + 1] = { name = label(k[2], ph or nil), x = xs, y = ys, color = color() } end
    end
  end
  local eph = r:phases("epoch")
  if #eph == 0 then eph = { false } end
  local emulti = #eph > 1
  for _, ph in ipairs(eph) do
    local o = { kind = "epoch", phase = ph or nil }
    local function lab(n) return emulti and ph and ("%s [%s]"):format(n, ph) or n end
    for _, k in ipairs { { "train_loss", "train loss (epoch mean)", loss }, { "loss", "train loss (epoch mean)", loss },
                         { "val_loss", "validation loss", loss },
                         { "train_acc", "train accuracy (epoch mean)", acc }, { "acc", "train accuracy (epoch mean)", acc },
                         { "val_acc", "validation accuracy", acc },
                         { "max_val_acc", "validation accuracy, largest subnet", acc },
                         { "min_val_acc", "validation accuracy, smallest subnet", acc },
                         { "test_acc", "test accuracy", acc } } do
      local xs, ys = r:series(k[1], o)
      if #xs > 0 then
        k[3][#k[3] + 1] = { name = lab(k[2]), x = xs, y = ys, color = color(), markers = #xs <= 30 }
      end
    end
    if #lr == 0 then
      local xs, ys = r:series("lr", o)
      if #xs > 0 then lr[#lr + 1] = { name = lab("learning rate"), x = xs, y = ys, color = color() } end
    end
  end
  -- train.lua's final test accuracy, at the last step
  local last_step = 0
  for _, rec in ipairs(r.log) do if type(rec.step) == "number" then last_step = math.max(last_step, rec.step) end end
  for _, rec in ipairs(r:records("done")) do
    if type(rec.test_acc) == "number" and last_step > 0 then
      acc[#acc + 1] = { name = "test accuracy (final)", x = { last_step }, y = { rec.test_acc },
                        color = "#d62728", markers = true }
    end
  end
  local made = false
  if #loss > 0 then
    put("loss.svg", M.line_chart { title = "Loss", xlabel = "step", ylabel = "cross-entropy loss",
      series = loss }, "training and validation loss")
    made = true
  end
  if #acc > 0 then
    put("accuracy.svg", M.line_chart { title = "Accuracy", xlabel = "step", ylabel = "accuracy",
      series = acc }, "training and validation accuracy")
    made = true
  end
  if #lr > 0 then
    put("lr.svg", M.line_chart { title = "Learning rate", xlabel = "step", ylabel = "learning rate",
      series = lr, yzero = true }, "learning-rate schedule")
  end
  if #tau > 0 then
    put("tau.svg", M.line_chart { title = "GDAS temperature", xlabel = "step", ylabel = "τ",
      series = tau, yzero = true }, "Gumbel-softmax temperature")
  end
  if not made then notes[#notes + 1] = "no loss or accuracy records in log.jsonl: no training curves" end
end

local function index_of(list, v)
  for i, x in ipairs(list) do if x == v then return i end end
end

-- first DARTS edge of node i (0-based): 2 + 3 + ... inputs before it
local function edge_start(node) return node * (node + 3) // 2 end

-- marks of a DARTS cell gene {{op, input[, attention]}, ...} on a map
local function gene_marks(gene, cols, att)
  local marks = {}
  for m, e in ipairs(gene or {}) do
    local node = (m - 1) // 2
    local row = edge_start(node) + e[2] + 1
    local col = index_of(cols, att and e[3] or e[1])
    if col then
      marks[row] = marks[row] or {}
      marks[row][col] = true
    end
  end
  return marks
end

-- the cells of the found architecture outlined on a map of the last snapshot
local function marks_for(r, m)
  local a = r.arch
  if not a then return nil end
  local which = m.name:match("_(normal)$") or m.name:match("_(reduce)$")
  if (m.kind == "alpha" or m.kind == "beta") and which and type(a.genotype) == "table" then
    return gene_marks(a.genotype[which], m.cols, m.kind == "beta")
  end
  local cell = tonumber(m.name:match("cell(%d+)"))
  if cell and type(a.genotypes) == "table" and a.genotypes[cell + 1] then
    local g = a.genotypes[cell + 1]
    return gene_marks(g.normal or g.reduce, m.cols)
  end
  if m.name == "attention" then
    local marks = {}
    if type(a.genotype) == "table" and #m.rows == 6 then      -- NB201 {{op, from}, ...}
      for e, g in ipairs(a.genotype) do marks[e] = { [index_of(m.cols, g[1]) or 0] = true } end
      return marks
    elseif type(a.arch) == "table" then                      -- macro: a choice per layer
      for l, c in ipairs(a.arch) do marks[l] = { [c] = true } end
      return marks
    end
  end
  return nil
end

-- alpha / attention heatmaps of the last snapshot and their history
local function arch_weights(r, put, notes)
  local snaps = r:snapshots()
  if #snaps == 0 then return end
  local last = snaps[#snaps]
  -- "step N": recipes count epochs from 0 or from 1, steps always from 1
  local at = last.step and ("step %s"):format(last.step) or ("epoch %s"):format(last.epoch)
  for _, m in ipairs(last.maps) do
    -- colours span the data's range (softmax weights near 1/#ops would
    -- otherwise all look alike); the values are printed in the cells
    local lo, hi = extent(m.values)
    local macro = m.rows[1] and m.rows[1]:match("^layer")
    put(m.name .. ".svg", M.heatmap { title = ("%s (%s)"):format(m.title, at), rows = m.rows, cols = m.cols,
      values = m.values, vmin = lo, vmax = hi, marks = marks_for(r, m),
      fmt = hi and lo and hi - lo < 0.05 and "%.3f" or "%.2f",
      xlabel = macro and "candidate block" or "operation",
      ylabel = macro and "layer" or "edge (node ← input)",
      colorbar = m.kind == "attention" and "attention share" or "weight" },
      m.title .. ", last snapshot (outlined: the found architecture)")
  end
  if #snaps < 2 then
    notes[#notes + 1] = "one architecture snapshot only: no history plots"
    return
  end
  local use_epoch = snaps[1].epoch ~= nil
  for mi, m in ipairs(last.maps) do
    local panels, thick = {}, {}
    -- the op the found architecture kept on an edge is drawn thicker
    for row, cs in pairs(marks_for(r, m) or {}) do thick[row] = next(cs) end
    for row = 1, #m.rows do
      local series = {}
      for c = 1, #m.cols do
        local xs, ys = {}, {}
        for _, s in ipairs(snaps) do
          local mm = s.maps[mi]
          if mm and mm.name == m.name and mm.values[row] then
            xs[#xs + 1] = use_epoch and s.epoch or s.step
            ys[#ys + 1] = mm.values[row][c]
          end
        end
        series[c] = { name = m.cols[c], x = xs, y = ys }
      end
      panels[row] = { title = m.rows[row], series = series }
    end
    put(m.name .. "_history.svg", M.small_multiples { title = ("%s over the search"):format(m.title),
      panels = panels, cols = #panels > 8 and 5 or 3, highlight = thick,
      xlabel = use_epoch and "epoch" or "step", ylabel = m.kind == "attention" and "share" or "weight" },
      m.title .. " per edge over time (thick: the op kept)")
  end
end

-- evolutionary / random search: scores per evaluation, accuracy vs FLOPs
local function search_plots(r, put)
  local ev = r:evaluations()
  if #ev == 0 then return end
  local tabled = r.config.score == "table"
  local ylabel = tabled and ("NAS-Bench-201 %s 12-epoch validation accuracy (%%)"):format(
    r.config.bench_dataset or "cifar10") or "validation accuracy (supernet, BN recalibrated)"
  local idx, sc, best, bx = {}, {}, {}, {}
  local b = -math.huge
  for i, e in ipairs(ev) do
    idx[i], sc[i] = i, e.score
    if e.score > b then b = e.score end
    best[i], bx[i] = b, i
  end
  put("search.svg", M.scatter { title = ("Search: %d candidates scored"):format(#ev),
    xlabel = "evaluation", ylabel = ylabel,
    series = { { name = "candidate", x = idx, y = sc, r = 3.5, color = "#1f77b4" } },
    lines = { { name = "best so far", x = bx, y = best, color = "#ff7f0e" } } },
    "score of every candidate in the order scored, best so far")
  local fx, fy, labels = {}, {}, {}
  for _, e in ipairs(ev) do
    if finite(e.mflops) then
      fx[#fx + 1], fy[#fy + 1] = e.mflops, e.score
      labels[#labels + 1] = ("%s: %.4g at %.4g MFLOPs"):format(type(e.arch) == "table" and
        table.concat(e.arch, ",") or tostring(e.arch), e.score, e.mflops)
    end
  end
  if #fx >= 2 then
    local sel = r:selected()
    local limit = (r.arch or {}).flops_limit
    put("pareto.svg", M.scatter { title = "Accuracy vs FLOPs of the candidates",
      xlabel = "MFLOPs", ylabel = ylabel,
      series = { { name = "candidate", x = fx, y = fy, labels = labels, color = "#1f77b4", opacity = 0.55 } },
      pareto = true,
      vline = finite(limit) and { x = limit, name = ("FLOPs limit %.4g"):format(limit) } or nil,
      highlight = sel and sel.mflops and { x = sel.mflops, y = sel.score, label = "selected" } or nil },
      "accuracy vs FLOPs, the Pareto front in red, the selected architecture ringed")
  end
end

-- ranking quality: supernet accuracy vs stand-alone accuracy
local function ranking_plot(r, put)
  local R = r.ranking
  if type(R) ~= "table" or type(R.rows) ~= "table" or #R.rows == 0 then return end
  local xs, ys, labels = {}, {}, {}
  for i, row in ipairs(R.rows) do xs[i], ys[i], labels[i] = row.supernet, row.standalone, row.text end
  local tau = tonumber(R.kendall_tau)
  put("ranking.svg", M.scatter { title = ("Ranking quality: Kendall τ %s over %d paths"):format(
      tau and ("%.3f"):format(tau) or "n/a", #xs),
    xlabel = "supernet accuracy (BN recalibrated)", ylabel = "stand-alone accuracy",
    series = { { name = "path", x = xs, y = ys, labels = labels } } },
    "supernet vs stand-alone accuracy of sampled paths")
end

-- DOT text of an NB201 cell (edges with `none` left out)
local function nb201_dot(s)
  local L = { "digraph {", "\tgraph [rankdir=LR]",
    "\tnode [fontname=times fontsize=20 shape=rect style=filled fillcolor=lightblue]",
    "\tedge [fontname=times fontsize=16]" }
  local node = 0
  for group in s:gmatch("|([^+]+)|") do
    node = node + 1
    for op, from in group:gmatch("([%w_]+)~(%d+)") do
      if op ~= "none" then L[#L + 1] = ('\t"%s" -> "%d" [label="%s"]'):format(from, node, op) end
    end
  end
  L[#L + 1] = "}"
  return table.concat(L, "\n") .. "\n"
end

--- Graphviz DOT text of a chain architecture (a macro path): stem -> one box
-- per layer -> head.
-- @tparam {string,...} names the block chosen at each layer
-- @treturn string the DOT text
function M.chain_dot(names)
  local L = { "digraph {", "\tgraph [rankdir=LR]",
    "\tnode [fontname=times fontsize=16 shape=rect style=filled fillcolor=lightblue]",
    '\t"stem" [fillcolor=darkseagreen2]', '\t"head" [fillcolor=palegoldenrod]' }
  local prev = "stem"
  for l, name in ipairs(names) do
    local id = ("L%d"):format(l)
    L[#L + 1] = ('\t"%s" [label="%d: %s"]'):format(id, l, name)
    L[#L + 1] = ('\t"%s" -> "%s"'):format(prev, id)
    prev = id
  end
  L[#L + 1] = ('\t"%s" -> "head"'):format(prev)
  L[#L + 1] = "}"
  return table.concat(L, "\n") .. "\n"
end

-- DOT files of the run (or made from arch.json when the recipe wrote
-- none), rendered to SVG and PNG when Graphviz is installed
local function cells(r, outdir, put_file, notes, png)
  local lfs = require "lfs"
  local dots = {}
  for f in lfs.dir(r.dir) do
    if f:match("%.dot$") then dots[#dots + 1] = { f:gsub("%.dot$", ""), r.dir .. "/" .. f } end
  end
  table.sort(dots, function(a, b) return a[1] < b[1] end)
  local a = r.arch
  if #dots == 0 and a then
    local made = {}
    local g = a.cell_types or a.genotype
    local sn = require("nasrt").supernet
    if type(g) == "table" and (g.normal or g.reduce) then
      for _, which in ipairs { "normal", "reduce" } do
        if g[which] then made[#made + 1] = { which, sn.genotype_dot(g, which) } end
      end
    elseif type(g) == "table" and type(g[1]) == "table" and (g[1].normal or g[1].reduce) then
      for i, c in ipairs(g) do
        local which = c.normal and "normal" or "reduce"
        made[#made + 1] = { ("cell%d_%s"):format(i - 1, which), sn.genotype_dot(c, which) }
      end
    elseif type(a.arch_string or a.arch) == "string" and (a.arch_string or a.arch):sub(1, 1) == "|" then
      made[#made + 1] = { "cell", nb201_dot(a.arch_string or a.arch) }
    elseif type(a.names) == "table" then
      made[#made + 1] = { "path", M.chain_dot(a.names) }
    elseif type(a.config) == "table" and a.config.width then       -- elastic subnet
      local c, names = a.config, {}
      for s = 1, #(c.depth or {}) do
        names[#names + 1] = ("width %s, depth %s, k%s, e%s"):format(tostring(c.width[s + 1]),
          tostring(c.depth[s]), tostring(c.kernel[s]), tostring(c.expand[s]))
      end
      made[#made + 1] = { "subnet", M.chain_dot(names) }
    end
    for _, d in ipairs(made) do
      local p = outdir .. "/" .. d[1] .. ".dot"
      M.save(p, d[2])
      put_file(d[1] .. ".dot", "the found architecture as Graphviz DOT")
      dots[#dots + 1] = { d[1], p }
    end
  end
  if #dots == 0 then return end
  if not M.have("dot") then
    notes[#notes + 1] = "Graphviz' dot is not installed (apt-get install graphviz): cells left as .dot"
    return
  end
  for _, d in ipairs(dots) do
    local svg, pngf = outdir .. "/" .. d[1] .. ".svg", outdir .. "/" .. d[1] .. ".png"
    if run_cmd("dot -Tsvg %s -o %s", d[2], svg) then put_file(d[1] .. ".svg", "cell graph (Graphviz)", true) end
    if png and run_cmd("dot -Tpng -Gdpi=96 %s -o %s", d[2], pngf) then
      put_file(d[1] .. ".png", "cell graph (Graphviz)", true)
    end
  end
end

--- Makes every chart a run directory supports into outdir (default
-- RUNDIR/plots): loss.svg, accuracy.svg, lr.svg (tau.svg) from the log;
-- <alpha|beta|attention>_*.svg heatmaps of the last snapshot with the found
-- architecture outlined, and *_history.svg (each edge's op weights over
-- the search); search.svg and pareto.svg of an evolutionary or random
-- search; ranking.svg; the cells rendered from DOT by Graphviz; a PNG of
-- each SVG when rsvg-convert is installed (opts.png = false: none).
-- @param r a run directory name or a nasrt.run object
-- @tparam[opt] string outdir where the files go (default RUNDIR/plots)
-- @tparam[opt] table opts {png = false} to skip the PNGs
-- @treturn table {dir=, files={{name=, what=}}, notes={...}}, or nil and a message
function M.plot_run(r, outdir, opts)
  opts = opts or {}
  local recipe = require "nasrt.recipe"
  if type(r) == "string" then
    local err
    r, err = require("nasrt.run").load(r)
    if not r then return nil, err end
  end
  outdir = outdir or (r.dir .. "/plots")
  local ok, err = pcall(recipe.mkdirs, outdir)
  if not ok then return nil, err end
  local res = { dir = outdir, files = {}, notes = {} }
  local svgs = {}
  local function put_file(name, what, rendered)
    res.files[#res.files + 1] = { name = name, what = what }
    if name:match("%.svg$") and not rendered then svgs[#svgs + 1] = name end
  end
  local function put(name, text, what)
    local okw, e = M.save(outdir .. "/" .. name, text)
    if not okw then error(("nasrt.plot: cannot write %s/%s: %s"):format(outdir, name, tostring(e)), 0) end
    put_file(name, what)
  end
  if #r.log == 0 then
    res.notes[#res.notes + 1] = recipe.exists(r.dir .. "/log.jsonl") and "log.jsonl is empty: no curves"
      or "no log.jsonl: no curves"
  else
    curves(r, put, res.notes)
    arch_weights(r, put, res.notes)
    search_plots(r, put)
    ranking_plot(r, put)
  end
  cells(r, outdir, put_file, res.notes, opts.png ~= false)
  if opts.png ~= false and #svgs > 0 then
    if M.have("rsvg-convert") then
      for _, name in ipairs(svgs) do
        local png = name:gsub("%.svg$", ".png")
        if run_cmd("rsvg-convert -o %s %s", outdir .. "/" .. png, outdir .. "/" .. name) then
          put_file(png, "PNG of " .. name, true)
        end
      end
    else
      res.notes[#res.notes + 1] = "rsvg-convert is not installed (apt-get install librsvg2-bin): SVG only"
    end
  end
  return res
end

local USAGE = [[
usage: nasrt plot RUNDIR [--out DIR] [--no-png]

Draws the charts of a run directory as SVG (and PNG when rsvg-convert is
installed) into RUNDIR/plots, or DIR with --out: training curves (loss.svg,
accuracy.svg, lr.svg), the architecture weights of DARTS-style and AGNAS
runs as heatmaps with the found cell outlined (alpha_*.svg, attention_*.svg)
and their history (*_history.svg), the candidates of evolutionary and random
searches (search.svg, pareto.svg: accuracy vs FLOPs with the Pareto front),
ranking.svg, and the found cells rendered from DOT by Graphviz.]]

--- `nasrt plot RUNDIR [--out DIR] [--no-png]` (the host calls this with
-- the command line's arguments).  Raises an error with a message on bad
-- usage or an unreadable run directory.
function M.main(argv)
  argv = argv or {}
  local dir, out, png = nil, nil, true
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--help" or a == "-h" then
      print(USAGE)
      return
    elseif a == "--out" then
      out = argv[i + 1]
      if not out then error("nasrt plot: --out needs a directory\n" .. USAGE, 0) end
      i = i + 1
    elseif a:match("^%-%-out=") then
      out = a:match("^%-%-out=(.*)$")
    elseif a == "--no-png" then
      png = false
    elseif a:sub(1, 1) == "-" then
      error(("nasrt plot: unknown option %s\n%s"):format(a, USAGE), 0)
    elseif dir then
      error(("nasrt plot: one run directory at a time (got %s and %s)"):format(dir, a), 0)
    else
      dir = a
    end
    i = i + 1
  end
  if not dir then error("nasrt plot: which run directory?\n" .. USAGE, 0) end
  local res, err = M.plot_run(dir, out, { png = png })
  if not res then error(err, 0) end
  for _, n in ipairs(res.notes) do print("nasrt plot: note: " .. n) end
  if #res.files == 0 then
    error(("nasrt plot: nothing to plot in %s (no log records, no architecture)"):format(dir), 0)
  end
  local w, pngs = 0, 0
  for _, f in ipairs(res.files) do
    w = math.max(w, #f.name)
    if f.name:match("%.png$") then pngs = pngs + 1 end
  end
  print(("nasrt plot: %d files in %s%s"):format(#res.files, res.dir,
    pngs > 0 and (" (these, and a PNG of %d of them)"):format(pngs) or ""))
  for _, f in ipairs(res.files) do
    if not f.name:match("%.png$") then print(("  %-" .. w .. "s  %s"):format(f.name, f.what or "")) end
  end
  return res
end

return M
