--- DARTS: Differentiable Architecture Search (Liu, Simonyan, Yang, ICLR 2019;
-- code quark0/darts, `cnn/train_search.py` and `cnn/architect.py`).
--
-- The DARTS cell space (8 ops on 14 edges, one alpha matrix for normal and
-- one for reduction cells) relaxed by a softmax; bilevel optimisation on
-- the two halves of the training set: every step the alphas take an Adam
-- step on a validation batch (first order, or second order with the
-- unrolled virtual step and the finite-difference Hessian-vector product,
-- `--unrolled`; see nasrt.darts_arch), then the weights take an SGD step on
-- a train batch.  The architecture is read off by the DARTS rule (top-2
-- incoming edges per node by their best non-`none` weight, the best
-- non-`none` op on each), see differentiable.md §1.
--
--   nasrt recipes/darts.lua                      # minutes on 2 cores
--   nasrt recipes/darts.lua --unrolled           # second order
--   nasrt recipes/darts.lua --C=16 --layers=8 --epochs=50 --train_limit=0 \
--         --val_limit=0 --unrolled               # the paper's search
--
-- The defaults are scaled for 2 CPU cores on Fashion-MNIST (C=8, 5 cells,
-- 1024+1024 images, 2 epochs); every option reaches the paper's setting.
-- Att-DARTS (recipes/att_darts.lua) reuses `R.search` with its own network.
--
-- NOTE(deviation): DARTS draws each validation batch from a fresh iterator
-- (a random batch every step); here the validation loader is walked in a
-- shuffled order and wraps around, which keeps resume exact.
-- NOTE(deviation): the cosine schedule gives epoch e (0-based) the value at
-- t = e; DARTS' PyTorch-0.3 `scheduler.step()` at the start of each epoch
-- shifts it to t = e + 1 (so its last epoch runs at lr_min).
local nasrt = require "nasrt"
local darts_arch = require "nasrt.darts_arch"

local F, optim, supernet = nasrt.F, nasrt.optim, nasrt.supernet

local R = {
  name = "darts",
  method = "darts",
  description = "DARTS (Liu et al., ICLR 2019): differentiable cell search, first or second order.",
  -- besides recipe.RESUME_FIXED: the nodes of a cell fix the alphas' shape
  resume_fixed = { "steps" },
  defaults = {
    { "epochs", 2, "search epochs (paper: 50)" },
    { "C", 8, "initial channels (paper: 16)" },
    { "layers", 5, "cells; reductions at layers//3 and 2*layers//3 (paper: 8)" },
    { "steps", 4, "intermediate nodes per cell (paper: 4)" },
    { "batch_size", 64, "train and validation batch (paper: 64)" },
    { "dataset", "fashion_mnist", "fashion_mnist | cifar10 | cifar100 (its training set only)" },
    { "data_root", "", "dataset folder (default: Debian's fashion-mnist folder)" },
    { "train_portion", 0.5, "share of the training set that trains the weights (paper: 0.5)" },
    { "train_limit", 1024, "images used from the weight half, 0 = all (paper: all)" },
    { "val_limit", 1024, "images used from the architecture half, 0 = all (paper: all)" },
    { "size", 0, "input side in pixels, 0 = native; smaller images are average-pooled" },
    { "augment", true, "random crop (pad 4) and horizontal flip on both halves (paper: on)" },
    { "lr", 0.025, "weight SGD learning rate (paper: 0.025)" },
    { "lr_min", 0.001, "cosine schedule floor (paper: 0.001)" },
    { "momentum", 0.9, "weight SGD momentum (paper: 0.9)" },
    { "weight_decay", 3e-4, "weight decay of the weights (paper: 3e-4)" },
    { "grad_clip", 5.0, "max global L2 norm of the weight gradients (paper: 5)" },
    { "arch_lr", 3e-4, "Adam learning rate of the alphas (paper: 3e-4)" },
    { "arch_beta1", 0.5, "Adam beta1 of the alphas (paper: 0.5)" },
    { "arch_beta2", 0.999, "Adam beta2 of the alphas (paper: 0.999)" },
    { "arch_weight_decay", 1e-3, "Adam L2 weight decay of the alphas (paper: 1e-3)" },
    { "unrolled", false, "second order: virtual step + finite-difference Hessian-vector product" },
    { "seed", 2, "random seed (paper: 2)" },
    { "ckpt_every", 20, "checkpoint every N steps (and at every epoch end)" },
    { "stop_after_steps", 0, "testing: act as if Ctrl-C came after N steps of a fresh run" },
    { "quiet", false, "no terminal output" },
  },
}

--- The search network of this recipe (att_darts overrides it).
function R.build(cfg, data)
  return supernet.darts { C = cfg.C, layers = cfg.layers, steps = cfg.steps,
                          multiplier = cfg.steps, classes = data.classes,
                          in_channels = data.in_channels }
end

local function say(run, fmt, ...)
  if not run.quiet then print(fmt:format(...)) end
end

--- The DARTS search loop for any network with `arch_parameters()` and
-- `genotype()`: spec = {name=, method=, build=function(cfg, data) -> net}.
function R.search(spec, cfg, run)
  nasrt.manual_seed(cfg.seed)
  local data = darts_arch.search_data(cfg)
  local net = spec.build(cfg, data)
  net:train()
  local weights = net:parameters()
  local w_opt = optim.SGD(weights, { lr = cfg.lr, momentum = cfg.momentum,
                                     weight_decay = cfg.weight_decay })
  local arch = darts_arch.Architect(net, {
    lr = cfg.arch_lr, betas = { cfg.arch_beta1, cfg.arch_beta2 },
    weight_decay = cfg.arch_weight_decay, unrolled = cfg.unrolled })
  local parts = { net = net, w_opt = w_opt, a_opt = arch.optimizer,
                  train = data.train, val = data.val }

  -- where we are: a fresh run starts at epoch 1, a resumed one where its
  -- checkpoint was taken (weights, optimizers, loaders and RNG restored)
  local pos = darts_arch.restore_checkpoint(run, parts)
    or { epoch = 1, step = 0, epoch_done = false }
  local epoch, step = pos.epoch, pos.step
  if pos.epoch_done then epoch = epoch + 1 end
  local meter = pos.meter or { loss = 0, acc = 0, vloss = 0, n = 0 }
  local last = pos.last or {}

  local per_epoch = #data.train
  say(run, "%s: %s order, C=%d, %d cells, %d params; %d train + %d val images %dx%d, %d steps/epoch%s",
    spec.name, cfg.unrolled and "second" or "first", cfg.C, cfg.layers, net:num_parameters(),
    data.n_train, data.n_val, data.size, data.size, per_epoch,
    run.resumed and (", resumed at step %d"):format(step) or "")
  local progress = run:progress(cfg.epochs * per_epoch, { start = step })
  local function checkpoint(done)
    darts_arch.save_checkpoint(run, parts, { epoch = epoch, step = step, epoch_done = done,
                                             meter = meter, last = last })
  end

  while epoch <= cfg.epochs do
    local lr = darts_arch.cosine_lr(cfg.lr, cfg.lr_min, epoch - 1, cfg.epochs)
    w_opt:set_lr(lr)
    if data.train:state().epoch ~= epoch then data.train:epoch(epoch) end
    while true do
      if darts_arch.stop_requested(run, cfg, step) then
        checkpoint(false)
        run.interrupted = true
        say(run, "\n%s: stopped at step %d; checkpoint saved", spec.name, step)
        return { interrupted = true, step = step, alphas = darts_arch.raw_alphas(net), dir = run.dir }
      end
      local x, y = data.train:next()
      if not x then break end
      x = data.prep(x)
      local xv, yv = data.val:next(true)
      xv = data.prep(xv)
      -- 1. architecture step on the validation batch (DARTS order)
      local vloss = arch:step(x, y, xv, yv, lr, w_opt)
      -- 2. weight step on the train batch
      w_opt:zero_grad()
      local logits, loss = darts_arch.frozen(arch.alphas, function()
        local out = net(x)
        local l = F.cross_entropy(out, y)
        l:backward()
        return out, l:item()
      end)
      optim.clip_grad_norm(weights, cfg.grad_clip)
      w_opt:step()
      step = step + 1
      local acc = darts_arch.accuracy(logits, y)
      loss, acc, vloss = nasrt.dist.mean(loss, acc, vloss) -- the global batch's (mpirun)
      meter.loss, meter.acc, meter.vloss, meter.n =
        meter.loss + loss, meter.acc + acc, meter.vloss + vloss, meter.n + 1
      run:log { kind = "step", epoch = epoch, step = step, lr = lr, train_loss = loss,
                train_acc = acc, arch_loss = vloss }
      progress:update(step, ("epoch %d/%d loss %.3f acc %.2f"):format(epoch, cfg.epochs, loss, acc))
      if cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0 then checkpoint(false) end
    end

    -- epoch end: supernet accuracy on the validation half (eval mode),
    -- alpha snapshot, current architecture, checkpoint
    local val_loss, val_acc = darts_arch.evaluate(net, data.eval, data.prep)
    local g = net:genotype()
    local n = math.max(meter.n, 1)
    last = { val_loss = val_loss, val_acc = val_acc }
    run:log { kind = "epoch", epoch = epoch, step = step, lr = lr,
              train_loss = meter.loss / n, train_acc = meter.acc / n, arch_loss = meter.vloss / n,
              val_loss = val_loss, val_acc = val_acc, alphas = net:alphas(), genotype = g }
    progress:line(("%s epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  lr %.5f")
      :format(spec.name, epoch, cfg.epochs, meter.loss / n, meter.acc / n, val_loss, val_acc, lr))
    darts_arch.write_architecture(run, spec.method, g, { epoch = epoch, step = step })
    meter = { loss = 0, acc = 0, vloss = 0, n = 0 }
    checkpoint(true)
    epoch = epoch + 1
  end

  local g = net:genotype()
  local text = darts_arch.write_architecture(run, spec.method, g,
    { epoch = cfg.epochs, step = step, val_acc = last.val_acc }, true)
  run:log { kind = "final", step = step, genotype = g, genotype_text = text, val_acc = last.val_acc }
  say(run, "%s: found %s", spec.name, text)
  say(run, "%s: architecture in %s/arch.json (retrain: nasrt recipes/train.lua --arch %s/arch.json)",
    spec.name, run.dir, run.dir)
  return { genotype = g, genotype_text = text, alphas = darts_arch.raw_alphas(net), step = step,
           val_acc = last.val_acc, dir = run.dir }
end

function R.run(cfg, run)
  return R.search(R, cfg, run)
end

return R
