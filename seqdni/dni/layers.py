"""Synthetic gradients between the layers of a feed-forward network (Jaderberg et al. 2017,
Section 3.1; docs/feedforward.md).

A network is cut into blocks f_0 .. f_{K-1}; block i maps h_{i-1} -> h_i (h_{-1} = x) and the
last block ends in the loss L, a mean over the batch of B examples. At each cut, a synthetic
gradient model M_i (an `Interface`, optionally reading the label: cDNI) predicts one example's
gradient δ_i = ∂ℓ/∂h_i. Block i < K-1 updates at once from

    J_i = < stopgrad(scale · M_i(h_i)) / B, h_i >                         (`Interface.inject`)

and block K-1 from L itself. Block i reads h_{i-1} as a detached leaf, so the same backward
pass leaves ∂J_i/∂h_{i-1} there. M_{i-1} is regressed on one of two targets:

    bootstrap:  B / scale · ∂J_i/∂h_{i-1} = (∂h_i/∂h_{i-1})ᵀ M_i(h_i)   (the paper's: only the
                last block waits for the loss; `bootstrap_target`)
    true:       δ_{i-1} = (∂h_i/∂h_{i-1})ᵀ δ_i, from the loss down      (`true_layer_gradients`)

At the last cut both are B · ∂L/∂h_{K-2}, the true gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqdni.dni.functional import bootstrapped_target


def bootstrap_target(leaf: Tensor, batch: int, scale: float) -> Tensor:
    """(∂h_i/∂h_{i-1})ᵀ M_i(h_i), per example, read off block i's input leaf h_{i-1} after the backward
    of J_i, which carried `scale` / B on M_i's prediction."""
    return bootstrapped_target(leaf, batch_dim=0) * (batch / scale)


def true_layer_gradients(outputs: list[Tensor], leaves: list[Tensor], top: Tensor) -> list[Tensor]:
    """δ_i for every cut, by backpropagation from `top` = δ_{K-2} through the blocks above each cut.

    `outputs[i]` is h_i with block i's graph alive (from the leaf `leaves[i]` = h_{i-1}); `top` is
    the true gradient at the last cut. Returns [δ_0, .., δ_{K-2}]: what each M_i stands in for."""
    deltas = [top]
    for i in range(len(outputs) - 2, 0, -1):  # δ_{i-1} = (∂h_i/∂h_{i-1})ᵀ δ_i
        (g,) = torch.autograd.grad(outputs[i], leaves[i], deltas[0], retain_graph=True)
        deltas.insert(0, g)
    return deltas
