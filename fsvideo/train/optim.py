"""Optimisers and the learning-rate schedule of the trainer.

``ranger`` is RAdam (``torch.optim.RAdam``, rectification threshold 5 as Ranger) wrapped in
:class:`Lookahead` (every ``k`` steps the slow weights move ``alpha`` of the way to the fast ones and
the fast weights restart from them), with gradient centralisation (the mean over all but the first
dimension is removed from every gradient of a tensor with more than one dimension), as the Ranger
20.4.11 the official trainer uses.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from fsvideo.train.config import OptimSection, ScheduleSection


def centralize_gradients(params: Iterable[Tensor]) -> None:
    """Gradient centralisation (Yong et al. 2020): ``g -= mean(g over dims 1..)`` for ndim > 1."""
    for p in params:
        if p.grad is not None and p.grad.ndim > 1:
            p.grad.sub_(p.grad.mean(dim=tuple(range(1, p.grad.ndim)), keepdim=True))


class Lookahead:
    """Lookahead (Zhang et al. 2019) around any optimiser.

    Args:
        base: the inner ("fast") optimiser.
        k: synchronise every ``k`` steps (Ranger: 6).
        alpha: slow-weight step (Ranger: 0.5).
        gradient_centralization: centralise gradients before each inner step (Ranger).
    """

    def __init__(self, base: torch.optim.Optimizer, k: int = 6, alpha: float = 0.5,
                 gradient_centralization: bool = False):
        if k < 1 or not 0.0 < alpha <= 1.0:
            raise ValueError(f"Lookahead needs k >= 1 and 0 < alpha <= 1, got k={k}, alpha={alpha}")
        self.base, self.k, self.alpha, self.gc = base, int(k), float(alpha), gradient_centralization
        self.counter = 0
        self.slow = [p.detach().clone() for p in self._params()]

    def _params(self) -> list[Tensor]:
        return [p for g in self.base.param_groups for p in g["params"]]

    @property
    def param_groups(self) -> list[dict]:
        return self.base.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        if self.gc:
            centralize_gradients(self._params())
        self.base.step()
        self.counter += 1
        if self.counter % self.k == 0:
            for p, slow in zip(self._params(), self.slow):
                slow.add_(p.detach() - slow, alpha=self.alpha)
                p.copy_(slow)

    def state_dict(self) -> dict:
        return {"base": self.base.state_dict(), "slow": [s.clone() for s in self.slow], "counter": self.counter,
                "k": self.k, "alpha": self.alpha}

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state["base"])
        if len(state["slow"]) != len(self.slow):
            raise ValueError(f"Lookahead state has {len(state['slow'])} slow tensors, expected {len(self.slow)}")
        for s, t in zip(self.slow, state["slow"]):
            s.copy_(t)
        self.counter = int(state["counter"])


def build_optimizer(cfg: OptimSection, params: Iterable[nn.Parameter]):
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
        return Lookahead(torch.optim.RAdam(params, **kw), k=cfg.lookahead_k, alpha=cfg.lookahead_alpha,
                         gradient_centralization=cfg.gradient_centralization)
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
