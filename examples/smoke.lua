-- smoke.lua: a first nasrt script.  Makes tensors, runs a tiny two-layer
-- network forward and backward, takes a few SGD steps and prints what it
-- sees.  Run it with:  ./build/nasrt examples/smoke.lua
local nasrt = require "nasrt"
local F = nasrt.F

print(("nasrt %s, %d threads"):format(nasrt.version, nasrt.num_threads()))
nasrt.manual_seed(0)

-- tensors print the way PyTorch prints them
local a = nasrt.tensor{{0.1, -1.2}, {3, 4}}
print(a)
print(F.relu(a))
print("shape", table.concat(a:shape(), "x"), "numel", a:numel())

-- a toy classifier: 8 samples of 4 features, 3 classes
local x = nasrt.randn{8, 4}
local y = nasrt.tensor{0, 1, 2, 0, 1, 2, 0, 1}
local w1 = nasrt.randn{16, 4}:requires_grad(true)
local b1 = nasrt.zeros{16}:requires_grad(true)
local w2 = nasrt.randn{3, 16}:requires_grad(true)
local b2 = nasrt.zeros{3}:requires_grad(true)
local params = {w1, b1, w2, b2}

local function forward(input)
  local h = F.relu(F.linear(input, w1, b1))
  return F.linear(h, w2, b2)
end

local logits = forward(x)
local loss = F.cross_entropy(logits, y)
print("logits", logits)
print("loss", loss)
loss:backward()
print("w2.grad", w2.grad)

-- plain SGD: p <- p - lr * grad, in place and outside the tape
local lr = 0.1
local first = loss:item()
for step = 1, 20 do
  for _, p in ipairs(params) do p:zero_grad() end
  loss = F.cross_entropy(forward(x), y)
  loss:backward()
  nasrt.no_grad(function()
    for _, p in ipairs(params) do p:add_(p.grad, -lr) end
  end)
  if step % 5 == 0 then print(("step %2d  loss %.4f"):format(step, loss:item())) end
end
assert(loss:item() < first, "the loss should go down")

-- a small convolution, when the conv bindings are there
if F.conv2d then
  local img = nasrt.randn{2, 1, 8, 8}
  local k = nasrt.randn{4, 1, 3, 3}:requires_grad(true)
  local out = F.conv2d(img, k, nil, {padding = 1})
  print("conv2d out shape", table.concat(out:shape(), "x"))
  F.sum(out):backward()
  print("conv2d weight grad shape", table.concat(k.grad:shape(), "x"))
end

print("smoke: ok")
