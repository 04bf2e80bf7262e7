"""Optimisers, the learning-rate schedule, and the stepper an engine drives."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from seqdni.engines.base import ParamGroup, Steps


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


class LightningSteps(Steps):
    """`seqdni.engines.Steps` under Lightning's manual optimisation: backward through
    `manual_backward` (precision and strategy plugins apply), and the main group steps through its
    LightningOptimizer, so Lightning's `global_step` (and `trainer.max_steps`) counts its updates
    only; the other groups step their raw optimisers."""

    def __init__(self, module, groups: list[ParamGroup], optimizers: list, scheduler=None):
        super().__init__(groups, optimizers, scheduler, backward=module.manual_backward)

    def optimizer_step(self, group: str, optimizer) -> None:
        (optimizer if group == self.main else optimizer.optimizer).step()
