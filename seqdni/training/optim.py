"""Optimisers, the learning-rate schedule, and the stepper an engine drives."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from seqdni.engines.base import ParamGroup


def adam(params: list[torch.nn.Parameter], **kw) -> torch.optim.Adam:
    """Adam with the fused kernel where the parameters allow it (one kernel for all tensors)."""
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, fused=fused or None, **kw)


def schedule(kind: str, warmup_steps: int, total: int | None) -> Callable[[int], float]:
    """The learning-rate factor at an optimiser step: linear warm-up, then constant or cosine to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "cosine" and total:
            frac = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
            return 0.5 * (1.0 + math.cos(math.pi * frac))
        return 1.0

    return factor


class Steps:
    """The `seqdni.engines.Stepper` of a LightningModule with manual optimisation.

    The main group (the engine's first) steps through its LightningOptimizer, so Lightning's
    `global_step` (and `trainer.max_steps`) counts its updates only; the other groups step their
    raw optimisers. Clipping is `torch.nn.utils.clip_grad_norm_` on the group's own parameters,
    so one group's clip never sees another's gradients.
    """

    def __init__(self, module, groups: list[ParamGroup], optimizers: list, scheduler=None):
        self.module, self.scheduler = module, scheduler
        self.groups = {g.name: (g, opt) for g, opt in zip(groups, optimizers)}
        self.main = groups[0].name
        self.grad_norm: Tensor | None = None  # the main group's last norm before clipping

    def backward(self, loss: Tensor, retain_graph: bool = False) -> None:
        self.module.manual_backward(loss, retain_graph=retain_graph)

    def clip(self, group: str) -> None:
        g, _ = self.groups[group]
        if g.clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(g.params, g.clip)
        elif group == self.main:
            norm = torch.nn.utils.get_total_norm([p.grad for p in g.params if p.grad is not None])
        else:
            return
        if group == self.main:
            self.grad_norm = norm

    def step(self, group: str) -> None:
        _, opt = self.groups[group]
        if group == self.main:
            opt.step()
        else:
            opt.optimizer.step()
        opt.zero_grad(set_to_none=True)
        if group == self.main and self.scheduler is not None:
            self.scheduler.step()
