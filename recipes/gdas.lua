--- GDAS: "Searching for A Robust Neural Architecture in Four GPU Hours"
-- (Dong, Yang, CVPR 2019; code D-X-Y/AutoDL-Projects, search_model_gdas.py).
--
-- The DARTS cell space, but each edge runs only ONE op per forward: a
-- Gumbel-softmax sample k of softmax(alpha) at temperature tau, weighted by
-- the straight-through hard weight h = onehot(k) - stopgrad(p) + p, so the
-- alphas still get gradients (differentiable.md §5.3).  tau falls linearly
-- from tau_max to tau_min over the epochs.  Each step: an SGD step of the
-- weights on a train batch, then an Adam step of the alphas on a validation
-- batch (first order).  The architecture: the DARTS top-2 rule on softmax(alpha).
--
-- This file is the README's "write your own strategy" example: the
-- supernet (`relaxation = "gumbel"`) and the shared plumbing (data split,
-- Architect, checkpoints, architecture files) come from the library.
--
-- NOTE(deviation): defaults scaled for 2 CPU cores (C=8, 5 cells, 1024+1024
-- images, 2 epochs); GDAS searched 250 epochs, batch 256 (DARTS space,
-- configs/search-opts/GDAS-NASNet-CIFAR.config).  The weight SGD is DARTS'
-- (lr 0.025 cosine to 0.001, momentum 0.9) without Nesterov.  Weights of
-- ops not sampled in a step get no gradient, so SGD leaves them (and their
-- momentum and decay) alone, as PyTorch does with set_to_none grads.
local nasrt = require "nasrt"
local darts_arch = require "nasrt.darts_arch"
local F, optim = nasrt.F, nasrt.optim

local R = {
  name = "gdas", method = "gdas",
  description = "GDAS (Dong & Yang, CVPR 2019): one Gumbel-sampled op per edge, DARTS cell space.",
  defaults = {
    { "epochs", 2, "search epochs (paper: 250)" },
    { "C", 8, "initial channels (paper: 16)" },
    { "layers", 5, "cells (paper: 8)" },
    { "batch_size", 64, "train and validation batch (paper: 256)" },
    { "dataset", "fashion_mnist", "fashion_mnist | cifar10 | cifar100" },
    { "data_root", "", "dataset folder (default: Debian's fashion-mnist folder)" },
    { "train_portion", 0.5, "share of the training set that trains the weights" },
    { "train_limit", 1024, "images from the weight half, 0 = all" },
    { "val_limit", 1024, "images from the architecture half, 0 = all" },
    { "size", 0, "input side in pixels, 0 = native" },
    { "augment", true, "random crop and flip" },
    { "lr", 0.025, "weight SGD learning rate, cosine schedule" },
    { "lr_min", 0.001, "cosine floor" },
    { "momentum", 0.9, "weight SGD momentum" },
    { "weight_decay", 5e-4, "weight decay (paper: 5e-4)" },
    { "grad_clip", 5.0, "max L2 norm of the weight gradients" },
    { "arch_lr", 3e-4, "Adam learning rate of the alphas (betas 0.5, 0.999)" },
    { "arch_weight_decay", 1e-3, "Adam weight decay of the alphas" },
    { "tau_max", 10.0, "Gumbel temperature of the first epoch" },
    { "tau_min", 0.1, "Gumbel temperature of the last epoch" },
    { "seed", 2, "random seed" },
    { "ckpt_every", 20, "checkpoint every N steps (and at every epoch end)" },
    { "stop_after_steps", 0, "testing: act as if Ctrl-C came after N steps of a fresh run" },
    { "quiet", false, "no terminal output" },
  },
}

function R.run(cfg, run)
  nasrt.manual_seed(cfg.seed)
  -- the DARTS split of the training set: loaders with state, test set unread
  local data = darts_arch.search_data(cfg)
  local net = nasrt.supernet.darts { C = cfg.C, layers = cfg.layers, classes = data.classes,
                                     in_channels = data.in_channels, relaxation = "gumbel" }
  net:train()
  local weights = net:parameters()
  local w_opt = optim.SGD(weights, { lr = cfg.lr, momentum = cfg.momentum,
                                     weight_decay = cfg.weight_decay })
  -- first order: the Architect's Adam step on a validation batch
  local arch = darts_arch.Architect(net, { lr = cfg.arch_lr, betas = { 0.5, 0.999 },
                                           weight_decay = cfg.arch_weight_decay })
  local parts = { net = net, w_opt = w_opt, a_opt = arch.optimizer,
                  train = data.train, val = data.val }

  -- fresh run, or everything (RNG included) back from the last checkpoint
  local pos = darts_arch.restore_checkpoint(run, parts) or { epoch = 1, step = 0 }
  local epoch, step = pos.epoch, pos.step
  if pos.epoch_done then epoch = epoch + 1 end
  local function checkpoint(done)
    darts_arch.save_checkpoint(run, parts, { epoch = epoch, step = step, epoch_done = done })
  end
  local progress = run:progress(cfg.epochs * #data.train, { start = step })

  while epoch <= cfg.epochs do
    local lr = darts_arch.cosine_lr(cfg.lr, cfg.lr_min, epoch - 1, cfg.epochs)
    w_opt:set_lr(lr)
    net.tau = cfg.tau_max - (cfg.tau_max - cfg.tau_min) * (epoch - 1) / math.max(cfg.epochs - 1, 1)
    if data.train:state().epoch ~= epoch then data.train:epoch(epoch) end
    while true do
      -- graceful stop (Ctrl-C, or the test hook): checkpoint and return
      if darts_arch.stop_requested(run, cfg, step) then
        checkpoint(false)
        run.interrupted = true
        return { interrupted = true, step = step, alphas = darts_arch.raw_alphas(net) }
      end
      local x, y = data.train:next()
      if not x then break end
      x = data.prep(x)
      -- weights: one sampled op per edge (the forward draws the Gumbel sample)
      w_opt:zero_grad()
      local loss = darts_arch.frozen(arch.alphas, function()
        local l = F.cross_entropy(net(x), y)
        l:backward()
        return l:item()
      end)
      optim.clip_grad_norm(weights, cfg.grad_clip)
      w_opt:step()
      -- alphas: a fresh sample on a validation batch, gradients through h
      local xv, yv = data.val:next(true)
      local arch_loss = arch:step(x, y, data.prep(xv), yv, lr)
      loss, arch_loss = nasrt.dist.mean(loss, arch_loss) -- the global batch's (mpirun)
      step = step + 1
      run:log { kind = "step", epoch = epoch, step = step, lr = lr, tau = net.tau,
                train_loss = loss, arch_loss = arch_loss }
      progress:update(step, ("epoch %d tau %.2f loss %.3f"):format(epoch, net.tau, loss))
      if cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0 then checkpoint(false) end
    end
    -- epoch end: supernet accuracy (eval mode), alphas, architecture so far
    local val_loss, val_acc = darts_arch.evaluate(net, data.eval, data.prep)
    local g = net:genotype()
    run:log { kind = "epoch", epoch = epoch, step = step, lr = lr, tau = net.tau,
              val_loss = val_loss, val_acc = val_acc, alphas = net:alphas(), genotype = g }
    progress:line(("gdas epoch %d/%d  tau %.2f  val loss %.4f acc %.4f"):format(epoch,
      cfg.epochs, net.tau, val_loss, val_acc))
    darts_arch.write_architecture(run, R.method, g, { epoch = epoch })
    checkpoint(true)
    epoch = epoch + 1
  end

  -- the found cells: arch.json, genotype.txt, normal/reduce .dot (.svg)
  local g = net:genotype()
  local text = darts_arch.write_architecture(run, R.method, g, { epoch = cfg.epochs }, true)
  run:log { kind = "final", step = step, genotype = g, genotype_text = text }
  if not run.quiet then print("gdas: found " .. text) end
  return { genotype = g, genotype_text = text, step = step, alphas = darts_arch.raw_alphas(net) }
end

return R
