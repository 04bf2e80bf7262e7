"""Optimisers, the learning-rate schedule, and the stepper an engine drives."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy

from seqdni.engines.base import ParamGroup, Steps

# Lightning's hooks around a backward pass and an optimiser step: what its wrappers add to them.
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


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


def wrappers_add_nothing(module: LightningModule) -> bool:
    """Whether Lightning's `manual_backward` and `LightningOptimizer.step` would do nothing beyond
    `loss.backward()` and `optimizer.step()` in this run: one device (no DDP gradient hooks), no
    loss scaler, no profiler, and no callback or module that implements a backward or
    optimiser-step hook."""
    t = module.trainer
    plugin = t.precision_plugin
    plain = type(plugin) is Precision or (isinstance(plugin, MixedPrecision) and plugin.scaler is None)
    hooked = any(getattr(getattr(obj, hook), "__func__", None) is not getattr(base, hook) for hook in STEP_HOOKS
                 for obj, base in [(module, LightningModule)] + [(cb, Callback) for cb in t.callbacks])
    return isinstance(t.strategy, SingleDeviceStrategy) and plain and isinstance(t.profiler, PassThroughProfiler) \
        and not hooked


class LightningSteps(Steps):
    """`seqdni.engines.Steps` under Lightning's manual optimisation. The main group steps as its
    LightningOptimizer, so Lightning's `global_step` (and `trainer.max_steps`) counts its updates
    only; the other groups step their raw optimisers.

    With `direct` (`wrappers_add_nothing`), backward is `Tensor.backward` and the main group's step
    is the raw step between the LightningOptimizer's own step-counting calls: Lightning's wrappers
    cost about 150 µs per update (hook dispatch over every callback) and would add nothing.
    Otherwise backward goes through `manual_backward` (precision and strategy plugins apply)."""

    def __init__(self, module, groups: list[ParamGroup], optimizers: list, scheduler=None, direct: bool = False):
        super().__init__(groups, optimizers, scheduler, backward=None if direct else module.manual_backward)
        self.direct = direct

    def optimizer_step(self, group: str, optimizer) -> None:
        if group != self.main:
            optimizer.optimizer.step()
        elif self.direct:  # what LightningOptimizer.step does under manual optimisation, minus the hooks
            optimizer._on_before_step()
            optimizer.optimizer.step()
            optimizer._on_after_step()
        else:
            optimizer.step()
