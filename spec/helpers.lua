--- Spec helpers: `allclose` assertion and a finite-difference gradient
-- checker shared by every gradient spec.
local assert = require "luassert"
local say = require "say"
local nasrt = require "nasrt"

local H = {}

--- Max abs difference between two tensors (or tensor and nested table).
function H.maxdiff(a, b)
  if type(b) == "table" then b = nasrt.tensor(b) end
  if type(b) == "number" then b = nasrt.full(a:shape(), b) end
  local d = (a - b):abs():max()
  return d:item()
end

local function allclose(_, args)
  local a, b, tol = args[1], args[2], args[3] or 1e-5
  if type(b) == "table" and not nasrt.is_tensor(b) then b = nasrt.tensor(b) end
  if not (nasrt.is_tensor(a) and nasrt.is_tensor(b)) then return false end
  local sa, sb = a:shape(), b:shape()
  if #sa ~= #sb then return false end
  for i = 1, #sa do if sa[i] ~= sb[i] then return false end end
  local ta, tb = a:reshape(-1), b:reshape(-1)
  for i = 1, a:numel() do
    local x, y = ta:get(i), tb:get(i)
    if not (math.abs(x - y) <= tol * (1 + math.abs(y))) then
      args[4] = ("element %d: %g vs %g"):format(i, x, y)
      return false
    end
  end
  return true
end
say:set("assertion.allclose.positive", "Expected tensors to be close (%s): %s")
say:set("assertion.allclose.negative", "Expected tensors to differ")
assert:register("assertion", "allclose", allclose,
  "assertion.allclose.positive", "assertion.allclose.negative")

--- Central-difference gradient check.
-- f(inputs...) -> tensor.  The output is reduced to a scalar with a fixed
-- random weighting sum(out * r); every element of every input with
-- requires_grad is perturbed by +-eps (float32, eps 1e-3) and the numeric
-- derivative compared to the backward result with |a-n| <= atol + rtol*|n|.
-- Returns true or false, message.
function H.gradcheck(f, inputs, opts)
  opts = opts or {}
  local eps, atol, rtol = opts.eps or 1e-3, opts.atol or 1e-2, opts.rtol or 1e-2
  for _, x in ipairs(inputs) do
    if nasrt.is_tensor(x) and x.is_leaf then x.grad = nil end
  end
  local out = f(table.unpack(inputs))
  local r = nasrt.randn(out:shape())
  local loss = (out * r):sum()
  loss:backward()
  local function eval()
    return nasrt.no_grad(function() return (f(table.unpack(inputs)) * r):sum():item() end)
  end
  for k, x in ipairs(inputs) do
    if nasrt.is_tensor(x) and opts.wrt ~= false and (opts.skip == nil or not opts.skip[k]) then
      local g = x.grad
      if g == nil then return false, ("input %d got no gradient"):format(k) end
      local n = x:numel()
      local step = math.max(1, n // (opts.max_elems or 64))
      for i = 1, n, step do
        local v = x:get(i)
        x:set(i, v + eps)
        local fp = eval()
        x:set(i, v - eps)
        local fm = eval()
        x:set(i, v)
        local num = (fp - fm) / (2 * eps)
        local ana = g:get(i)
        if math.abs(ana - num) > atol + rtol * math.abs(num) then
          return false, ("input %d element %d: analytic %.6g numeric %.6g"):format(k, i, ana, num)
        end
      end
    end
  end
  return true
end

--- Leaf tensor of the given shape with requires_grad, values from randn
-- scaled by `scale` (default 1).
function H.leaf(shape, scale)
  local t = nasrt.randn(shape)
  if scale then t = nasrt.no_grad(function() return t * scale end) end
  return t:requires_grad(true)
end

--- Path of the nasrt executable in the build folder.
function H.nasrt_bin()
  return (os.getenv("NASRT_BUILD_DIR") or "./build") .. "/nasrt"
end

--- Removes a file or a folder with everything in it (spec temp folders).
-- @tparam string path
function H.rm_rf(path)
  local lfs = require "lfs"
  if lfs.attributes(path, "mode") == "directory" then
    for f in lfs.dir(path) do
      if f ~= "." and f ~= ".." then H.rm_rf(path .. "/" .. f) end
    end
    lfs.rmdir(path)
  else
    os.remove(path)
  end
end

package.loaded["helpers"] = H
_G.H = H
return H
