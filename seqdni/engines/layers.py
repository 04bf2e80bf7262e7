"""Decoupled feed-forward layers: backprop, DNI and cDNI on a `BlockMLP` (docs/feedforward.md).

One update of a batch (x, y) of B examples, with DNI (the mathematics is `seqdni.dni.layers`):

    h_i = f_i(leaf_i), leaf_0 = x, leaf_{i+1} = detach(h_i)        every block on its own graph
    block K-1: backward L(h_{K-1}, y), step                         leaf_{K-1}.grad = ∂L/∂h_{K-2}
    block i < K-1: backward < stopgrad(scale · M_i(h_i)) / B, h_i >, step   (the synthetic gradient)
    M_i: regression on its target (true δ_i, or the next block's synthetic gradient backpropagated)

Each block's update reads only its own input and M_i's prediction: it could be taken as soon as
h_i is known, before any block above has run (update unlocking, what `seqdni.engines.pipeline`
does across processes). In one process the blocks step in turn after the forward sweep, which is
the same update: block i + 1 reads h_i as computed before block i stepped in either order.
Without DNI the same blocks train end to end by backpropagation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from seqdni.dni import Interface, SGOptions, bootstrap_target, cosine, true_layer_gradients
from seqdni.engines.base import ParamGroup, Stepper
from seqdni.errors import UserError
from seqdni.nets.mlp import BlockMLP

Target = Literal["true", "bootstrap"]


@dataclass
class LayerOptions(SGOptions):
    """Synthetic gradients at the cuts between blocks.

    Args:
        hidden: Width of M's hidden layer; 0 makes it linear.
        scale: Factor on M's output before a block receives it (1: the prediction as it is).
        lr: Learning rate of the M models' Adam optimiser.
        clip: Gradient-norm clip of the M models together; 0 disables.
        rank: > 0: M is a linear map of this rank; 0: full rank. Not with `hidden`.
        conditional: cDNI: M also reads the label (one-hot classes, or the target bits).
        target: What M_i regresses on: `true`, the true gradient δ_i (backpropagation from the loss,
            for the regression only), or `bootstrap` (the paper's), the next block's synthetic gradient
            backpropagated through that block, so only the last cut sees the loss.
    """

    scale: float = 1.0
    conditional: bool = False
    target: Target = "true"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target not in ("true", "bootstrap"):
            raise UserError(f"model.dni.target must be true or bootstrap, got {self.target!r}")


class LayerEngine(nn.Module):
    """A `BlockMLP` and, with `dni`, one `Interface` (M_i) per cut; see the module docstring.

    Parameter groups: one per block (`block0` first: its steps are the optimiser steps Lightning
    counts; each block clips its own gradients, so no block waits for another's norm), then `sg`.
    """

    def __init__(self, net: BlockMLP, dni: LayerOptions | None = None, lr: float = 1e-3,
                 weight_decay: float = 0.0, clip: float = 0.0):
        super().__init__()
        if dni is not None and len(net.blocks) < 2:
            raise UserError("model.dni needs at least two blocks to decouple: raise model.blocks, or unset "
                            "model.dni for backpropagation")
        self.net, self.dni, self.lr, self.weight_decay, self.clip = net, dni, lr, weight_decay, clip
        cond = net.cond_dim if dni is not None and dni.conditional else 0
        self.sgs = nn.ModuleList([] if dni is None else [Interface(w, dni, f"block{i}", cond)
                                                          for i, w in enumerate(net.cut_widths)])

    def param_groups(self) -> list[ParamGroup]:
        groups = [ParamGroup(f"block{i}", list(b.parameters()), self.lr, self.clip, self.weight_decay)
                  for i, b in enumerate(self.net.blocks)]
        if self.dni is not None:
            groups.append(ParamGroup("sg", list(self.sgs.parameters()), self.dni.lr, self.dni.clip))
        return groups

    def _step_blocks(self, steps: Stepper, which) -> None:
        for i in which:
            steps.clip(f"block{i}")
            steps.step(f"block{i}")

    def update(self, x: Tensor, y: Tensor, steps: Stepper, diagnose: bool = True) -> dict[str, Tensor]:
        """One update of every block (and every M) on the batch; the loss and diagnostics, detached.
        `diagnose`: also compare each M with the true gradient (a backpropagation more, with `bootstrap`)."""
        if self.dni is None:
            loss = self.net.loss(self.net(x), y)
            steps.backward(loss)
            self._step_blocks(steps, range(len(self.net.blocks)))
            return {"train/loss": loss.detach()}
        return self._decoupled(x, y, steps, diagnose)

    def _decoupled(self, x: Tensor, y: Tensor, steps: Stepper, diagnose: bool) -> dict[str, Tensor]:
        leaves, outs, h = [], [], x
        for i, block in enumerate(self.net.blocks):
            leaves.append(h.detach().requires_grad_(i > 0))
            outs.append(block(leaves[-1]))
            h = outs[-1]
        n, last = x.size(0), len(outs) - 1
        loss = self.net.loss(outs[-1], y)
        steps.backward(loss)
        self._step_blocks(steps, [last])
        top = leaves[-1].grad * n  # δ_{K-2}: one example's true gradient at the last cut
        true = true_layer_gradients(outs, leaves, top) if self.dni.target == "true" or diagnose else None
        cond = self.net.condition(y) if self.dni.conditional else None
        targets = [top] * last
        for i in reversed(range(last)):  # each block from its own M's prediction
            g = self.sgs[i].predict(outs[i], cond, batch_dim=0)
            steps.backward(self.sgs[i].inject(outs[i], g, n, batch_dim=0))
            self._step_blocks(steps, [i])
            if self.dni.target == "true":
                targets[i] = true[i]
            elif i < last - 1:  # block i + 1's backward has left (∂h_{i+1}/∂h_i)ᵀ M_{i+1}(h_{i+1}) on its leaf
                targets[i] = bootstrap_target(leaves[i + 1], n, self.dni.scale)
        return {"train/loss": loss.detach(), **self._learn(outs, targets, true, cond, steps)}

    def _learn(self, outs: list[Tensor], targets: list[Tensor], true: list[Tensor] | None, cond: Tensor | None,
               steps: Stepper) -> dict[str, Tensor]:
        stats, total = {}, 0.0
        for sg, h, target, delta in zip(self.sgs, outs, targets, true or [None] * len(targets)):
            sg_loss, prediction = sg.learn(h.detach(), target, cond)
            total = total + sg_loss
            stats.update({f"{sg.prefix}/loss": sg_loss.detach(), **sg.diagnostics(prediction, target)})
            if delta is not None:
                stats[f"{sg.prefix}/true_cosine"] = cosine(prediction, delta)
        steps.backward(total)
        steps.clip("sg")
        steps.step("sg")
        return stats

    @torch.no_grad()
    def eval_sums(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        return self.net.eval_sums(x, y)
