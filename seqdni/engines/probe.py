"""How good is M? Compare it at a held boundary with the true future gradient (BPTT behind it)."""

from __future__ import annotations

import torch
from torch import Tensor

from seqdni.dni import as_tuple, cosine, detach_state, flatten_state
from seqdni.engines.base import state_gradients_only
from seqdni.engines.flat import FlatEngine


def _agreement(pred: Tensor, true: Tensor, suffix: str = "") -> dict[str, Tensor]:
    return {f"sg/probe_cosine{suffix}": cosine(pred, true),
            f"sg/probe_norm_ratio{suffix}": pred.norm(dim=1).mean() / true.norm(dim=1).mean().clamp_min(1e-30)}


@torch.no_grad()
def probe(engine: FlatEngine, x: Tensor, y: Tensor, warmup: int) -> dict[str, Tensor]:
    """Warm up `warmup` steps, then compare M at that boundary with the true future gradient, by
    BPTT over the rest of the window (K unrolls of the engine's T steps).

    `sg/probe_cosine` compares M with the gradient it is trained towards: unroll j after the
    boundary weighted γ^j (`discount`). With γ < 1, `sg/probe_cosine_undiscounted` compares it
    with the plain gradient of all K unrolls' losses, so the horizon M actually learned shows.
    With `episodic`, both count only the losses of the episode under way at the boundary."""
    net, unroll, gamma = engine.net, engine.span, engine.dni.gamma
    if engine.dni.episodic:
        y = torch.cat([y[:, :warmup], net.current_episode(y[:, warmup:])], dim=1)
    state = net.init_state(x.size(0), x.device)
    _, state = net.core(x[:, :warmup], state)
    leaf = detach_state(state, requires_grad=True)
    with torch.enable_grad(), state_gradients_only(net):
        losses, s = [], leaf
        for i in range(warmup, x.size(1), unroll):
            out, s = net.core(x[:, i : i + unroll], s)
            losses.append(net.loss(out, y[:, i : i + unroll]))
        weights = {"": [gamma**j for j in range(len(losses))]}
        if gamma < 1.0:
            weights["_undiscounted"] = [1.0] * len(losses)
        trues = {}
        for k, (suffix, w) in enumerate(weights.items()):
            total = sum(wj * lj for wj, lj in zip(w, losses))
            grads = torch.autograd.grad(total, as_tuple(leaf), retain_graph=k + 1 < len(weights))
            trues[suffix] = flatten_state(tuple(grads)) * (x.size(0) * unroll)  # per-sequence units
    pred = engine.boundary.sg(flatten_state(state), engine.condition_at(x, y, warmup))
    return {k: v for suffix, true in trues.items() for k, v in _agreement(pred, true, suffix).items()}
