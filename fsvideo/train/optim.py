"""Optimisers and the learning-rate schedule of the trainer.

``ranger`` is ``pytorch_optimizer.Ranger``: RAdam (rectification threshold 5) + Lookahead (every
``k`` steps the slow weights move ``alpha`` of the way to the fast ones and the fast weights restart
from them) + gradient centralisation on every gradient of more than one dimension, as the Ranger
20.4.11 the official trainer uses (spec §3).  One argument is not left at the library's default:
``degenerated_to_sgd=True``.  Ranger 20.4.11 (and ``torch.optim.RAdam``) take a bias-corrected
momentum step while the variance is not yet rectified (the first 5 steps); with the library's default
``False`` (pytorch_optimizer 4.1) those steps go *up* the gradient (kozistr/pytorch_optimizer#232).
``tests/test_train.py`` checks the steps against RAdam + Lookahead + centralisation written out.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from fsvideo.train.config import OptimSection, ScheduleSection


def build_optimizer(cfg: OptimSection, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg.name`` over ``params`` (all encoder parameters, as the official trainer)."""
    params = [p for p in params if p.requires_grad]
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    kw = dict(lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, **kw)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, **kw)
    if cfg.name == "radam":
        return torch.optim.RAdam(params, **kw)
    if cfg.name == "ranger":
        from pytorch_optimizer import Ranger
        # Ranger 20.4.11 decays the weights as ``p -= wd * lr * p`` (decoupled, scaled by lr)
        return Ranger(params, **kw, k=cfg.lookahead_k, alpha=cfg.lookahead_alpha, n_sma_threshold=5,
                      degenerated_to_sgd=True, use_gc=cfg.gradient_centralization, gc_conv_only=False,
                      weight_decouple=True, fixed_decay=False)
    raise ValueError(f"unknown optimiser {cfg.name!r}")


class StepDecay:
    """The paper's schedule: ``lr * decay ** (number of decay epochs reached)``, set before each step.

    Stateless (the learning rate is a function of the step), so resuming needs only the step.
    """

    def __init__(self, optimizer, base_lr: float, cfg: ScheduleSection):
        self.optimizer, self.base_lr = optimizer, float(base_lr)
        self.iters, self.epochs, self.decay = cfg.iters_per_epoch, sorted(cfg.lr_decay_epochs), cfg.lr_decay

    def lr_at(self, step: int) -> float:
        epoch = step // self.iters
        return self.base_lr * self.decay ** sum(epoch >= m for m in self.epochs)

    def apply(self, step: int) -> float:
        lr = self.lr_at(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "iters_per_epoch": self.iters, "decay_epochs": self.epochs,
                "decay": self.decay}
