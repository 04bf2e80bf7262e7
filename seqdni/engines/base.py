"""What every engine shares: the typed carry, parameter groups, the stepper it drives, its output.

An engine computes one update of a system, in plain PyTorch: forward, backward, and the
optimiser steps of its parameter groups through a `Stepper` (the training module supplies
it, so the engine needs no Lightning). The protocol (`Engine`):

    param_groups()                   -> [ParamGroup]   one optimiser each, the first one counted
    initial_carry(B, device)         -> Carry          what crosses an update boundary
    update(x, y, carry, stepper)     -> (Carry, out)   one update over `span` columns
    summarise([out, ...])            -> (losses, stats) a batch window's logged metrics
    eval_start(B, device) / eval_step(x, y, state) -> (sums, state)   evaluation, no gradients
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from seqdni.dni import diagnostics

Gather = Callable[[Tensor], list[Tensor]]  # a tensor -> every rank's copy of it, on the CPU


@contextmanager
def state_gradients_only(module: nn.Module) -> Iterator[None]:
    """Within: the module's parameters do not require gradients, so a pass that differentiates with
    respect to states alone (an n-step target, the probe) records no weight gradients, and a core
    with a closed-form backward (`seqdni.nets.resetting`) computes none. Restored on the way out."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass
class ParamGroup:
    """Parameters with their own Adam optimiser and gradient clip. The first group of an engine
    is its main one: its steps are Lightning's optimiser steps (`trainer.max_steps` counts them)
    and the learning-rate schedule drives it."""

    name: str
    params: list[nn.Parameter]
    lr: float
    clip: float = 0.0
    weight_decay: float = 0.0


class Stepper(Protocol):
    def backward(self, loss: Tensor, retain_graph: bool = False) -> None: ...

    def clip(self, group: str) -> None:
        """Clip the group's gradients to its norm (and, for the main group, record the norm)."""

    def step(self, group: str) -> None:
        """The group's optimiser step, then zero its gradients (and, for the main group, the schedule)."""


class Steps:
    """A plain-PyTorch `Stepper` over an engine's parameter groups and one optimiser per group
    (`seqdni.training.optim.LightningSteps` is the same under Lightning's manual optimisation).
    Clipping is `torch.nn.utils.clip_grad_norm_` on the group's own parameters, so one group's
    clip never sees another's gradients.

    Args:
        groups: The engine's `param_groups()`; the first is the main one.
        optimizers: One per group, in the same order.
        scheduler: A learning-rate scheduler of the main group, stepped after each of its steps.
        backward: What backpropagates a loss (default `Tensor.backward`).
    """

    def __init__(self, groups: list[ParamGroup], optimizers: list, scheduler=None,
                 backward: Callable[..., None] | None = None):
        self.scheduler, self._backward = scheduler, backward
        self.groups = {g.name: (g, opt) for g, opt in zip(groups, optimizers)}
        self.main = groups[0].name
        self.grad_norm: Tensor | None = None  # the main group's last norm before clipping

    def backward(self, loss: Tensor, retain_graph: bool = False) -> None:
        (self._backward or Tensor.backward)(loss, retain_graph=retain_graph)

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

    def optimizer_step(self, group: str, optimizer) -> None:
        optimizer.step()

    def step(self, group: str) -> None:
        _, opt = self.groups[group]
        self.optimizer_step(group, opt)
        opt.zero_grad(set_to_none=True)
        if group == self.main and self.scheduler is not None:
            self.scheduler.step()


@dataclass
class Kept:
    """The input of steps an engine recomputes later: the state before them, their inputs (and, for
    an n-step target, their targets and what a conditional M reads beside the state)."""

    state: tuple[Tensor, ...]
    inputs: Tensor
    targets: Tensor | None = None
    cond: Tensor | None = None

    def to(self, device: torch.device) -> Kept:
        y, c = (None if t is None else t.to(device) for t in (self.targets, self.cond))
        return Kept(tuple(t.to(device) for t in self.state), self.inputs.to(device), y, c)

    def state_dict(self, gather: Gather) -> dict:
        saved = {"state": [gather(t) for t in self.state], "x": gather(self.inputs)}
        extra = {k: gather(t) for k, t in (("y", self.targets), ("c", self.cond)) if t is not None}
        return {**saved, **extra}

    @classmethod
    def from_state_dict(cls, saved: dict, rank: int) -> Kept:
        y, c = (None if saved.get(k) is None else saved[k][rank] for k in ("y", "c"))
        return cls(tuple(t[rank] for t in saved["state"]), saved["x"][rank], y, c)


@dataclass
class Carry:
    """What crosses an update boundary: the detached state s_t, the kept steps (if the engine keeps
    any) and whether s_t ended an update (so a synthetic-gradient prediction awaits its target)."""

    state: tuple[Tensor, ...]
    kept: Kept | None = None
    boundary: bool = False
    prediction: Tensor | None = None  # M(s_t) with its graph (`DNIOptions.reuse`); never checkpointed
    graph: Tensor | None = None  # last unroll's every-step states, with graph (`aux_keep_graph`); not checkpointed
    history: tuple[Kept, ...] = ()  # n-step targets: the last n - 1 unrolls, oldest first (`target_unrolls`)

    def to(self, device: torch.device) -> Carry:
        kept = None if self.kept is None else self.kept.to(device)
        history = tuple(h.to(device) for h in self.history)
        return type(self)(tuple(t.to(device) for t in self.state), kept, self.boundary,
                          history=history)  # graphs are not moved

    def state_dict(self, gather: Gather) -> dict:
        """Checkpoint layout (format 2): each tensor as the list of every rank's copy."""
        kept = None if self.kept is None else self.kept.state_dict(gather)
        saved = {"state": [gather(t) for t in self.state], "boundary": self.boundary, "kept": kept}
        return {**saved, "history": [h.state_dict(gather) for h in self.history]} if self.history else saved

    @classmethod
    def from_state_dict(cls, saved: dict, rank: int) -> Carry:
        """This rank's carry from `state_dict`'s layout."""
        kept = saved.get("kept")
        kept = None if kept is None else Kept.from_state_dict(kept, rank)
        history = tuple(Kept.from_state_dict(h, rank) for h in saved.get("history", ()))
        return cls(tuple(t[rank] for t in saved["state"]), kept, bool(saved["boundary"]), history=history)


@dataclass
class UnrollOut:
    """One unroll of a recurrent engine (flat or hierarchical)."""

    loss: Tensor  # the unroll's mean loss, detached
    sg_loss: Tensor | None  # M's regression loss with its graph (None: no prediction to train)
    carry: Carry
    stats: dict[str, Tensor] = field(default_factory=dict)  # detached diagnostics
    target: Tensor | None = None  # bootstrapped target of M(s_t), rows, detached
    prediction: Tensor | None = None  # M(s_t), detached: diagnostics over the window compare the two


class Engine(Protocol):
    net: nn.Module
    span: int  # columns of one update

    def param_groups(self) -> list[ParamGroup]: ...

    def initial_carry(self, batch_size: int, device: torch.device) -> Carry: ...

    def update(self, x: Tensor, y: Tensor, carry: Carry, stepper: Stepper) -> tuple[Carry, Any]: ...

    def summarise(self, outs: list[Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]: ...

    def eval_start(self, batch_size: int, device: torch.device) -> Any: ...

    def eval_step(self, x: Tensor, y: Tensor, state: Any) -> tuple[dict[str, Tensor], Any]: ...


def apply_unroll(out: UnrollOut, stepper: Stepper, main: str = "core", sg: str = "sg") -> None:
    """The optimiser steps after an unroll's backward. The core is clipped before M's regression
    loss is backpropagated, so the core's clip never sees SG-loss gradients (`train_core` adds
    its gradient after the clip); M steps before the core."""
    stepper.clip(main)
    if out.sg_loss is not None:
        stepper.backward(out.sg_loss)
        stepper.clip(sg)
        stepper.step(sg)
    stepper.step(main)


def mean_stats(dicts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Each key's mean over the dicts that have it."""
    return {k: torch.stack([d[k] for d in dicts if k in d]).mean() for k in {k for d in dicts for k in d}}


def window_diagnostics(outs: list[UnrollOut]) -> dict[str, Tensor]:
    """M against its targets over all boundaries of a batch window at once (none: empty)."""
    pairs = [(o.prediction, o.target) for o in outs if o.prediction is not None]
    if not pairs:
        return {}
    preds, targets = zip(*pairs)
    return diagnostics(torch.cat(preds), torch.cat(targets))


def summarise_unrolls(net: nn.Module, outs: list[UnrollOut]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A recurrent engine's window: the network's training metric of the mean loss, the mean of
    each diagnostic over the unrolls, and M's diagnostics over all the window's boundaries."""
    loss = torch.stack([o.loss for o in outs]).mean()
    return net.train_metrics(loss), mean_stats([o.stats for o in outs] + [window_diagnostics(outs)])


class Unrolling:
    """An engine whose update is one unroll (`self.unroll`) followed by `apply_unroll`'s steps."""

    net: nn.Module

    def update(self, x: Tensor, y: Tensor, carry: Carry, stepper: Stepper) -> tuple[Carry, UnrollOut]:
        out = self.unroll(x, y, carry, stepper.backward)
        apply_unroll(out, stepper)
        return out.carry, out

    def summarise(self, outs: list[UnrollOut]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        return summarise_unrolls(self.net, outs)


class RecurrentEval:
    """Evaluation of a network that carries its state across the split: `core`, then `eval_sums`."""

    net: nn.Module

    def eval_start(self, batch_size: int, device: torch.device) -> Any:
        return self.net.init_state(batch_size, device)

    def eval_step(self, x: Tensor, y: Tensor, state: Any) -> tuple[dict[str, Tensor], Any]:
        out, state = self.net.core(x, state)
        return self.net.eval_sums(out, y), state
