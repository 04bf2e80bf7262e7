"""Synthetic gradients for recurrent cores (Jaderberg et al. 2017, Sections 2-3).

Notation follows docs/dni-rnn.md. A core maps (s_{τ-1}, x_τ) -> s_τ and the stream is
cut into unrolls of T steps. Unroll k starts from the detached state s_t and ends at
s_{t+T}. A synthetic-gradient model M estimates δ_τ = ∂(Σ_{u>τ} ℓ_u)/∂s_τ, and unroll k
differentiates

    J_k = Σ_{τ=t+1}^{t+T} ℓ_τ + < stopgrad(scale · M(s_{t+T})), s_{t+T} >      (injection)

The same backward pass leaves ∂J_k/∂s_t on the detached input state: the bootstrapped
target for the prediction made at that boundary, M(s_t), trained with

    || M(s_t) - stopgrad(target_t) ||²                                         (regression)

`seqdni.tbptt` applies this to an LSTM language model whose unroll loss is a mean over
n = B·T characters; there M works in per-sequence units (injection M/n, target n·∂J/∂s).

Everything here is plain PyTorch and works for any core whose state is a tensor or a
tuple of tensors (LSTM (h, c) of shape (layers, batch, hidden), GRU h, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

State = Tensor | tuple[Tensor, ...]


def as_tuple(state: State) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def flatten_state(state: State, batch_dim: int = 1) -> Tensor:
    """A state as one (batch, features) matrix: the input and output layout of M."""
    parts = [t.movedim(batch_dim, 0).flatten(1) for t in as_tuple(state)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def unflatten_state(flat: Tensor, like: State, batch_dim: int = 1) -> State:
    """Inverse of `flatten_state`, shaped like `like`."""
    parts, i = [], 0
    for t in as_tuple(like):
        moved = t.movedim(batch_dim, 0)
        n = moved[0].numel()
        parts.append(flat[:, i : i + n].reshape(moved.shape).movedim(0, batch_dim))
        i += n
    return tuple(parts) if isinstance(like, tuple) else parts[0]


def detach_state(state: State, requires_grad: bool = False) -> State:
    """Cut the graph at a truncation boundary; optionally make the cut a leaf that
    collects ∂J/∂s (the bootstrapped target)."""
    out = tuple(t.detach().requires_grad_(requires_grad) for t in as_tuple(state))
    return out if isinstance(state, tuple) else out[0]


@dataclass
class DNIOptions:
    """Synthetic gradients at truncation boundaries (unset: plain truncated BPTT).

    Args:
        hidden: Width of the synthetic-gradient model's hidden layer; 0 makes it linear.
        scale: Factor on M's output before it is injected into the core's backward pass.
            0.1 keeps an untrained M from dominating the true in-unroll gradient.
        scale_target: If true the future term of the target uses the scaled prediction,
            so target_t = ∂J_k/∂s_t exactly (one backward pass; M then learns a gradient
            discounted by `scale` per unroll). If false the target uses M unscaled, so M
            estimates the undiscounted future gradient (costs a second backward pass).
        conditional: M also reads the next input (the first character after the boundary).
        train_core: The regression loss also trains the kept core step that produced
            s_t, not only M. Its gradient is added after the core's clip.
        aux_weight: DNI + Aux when > 0: every step also predicts the synthetic gradient
            emitted T steps later, Â(s_τ) ≈ M(s_{τ+T}), with this loss weight. The targets of
            an unroll's steps are known one unroll later, when that unroll is recomputed with
            the current parameters; both run step by step, since the fused nn.LSTM returns
            the full state (h, c) at the unroll's end only. The auxiliary loss is part of the
            core's objective, so the core's clip sees it.
        lr: Learning rate of M's own Adam optimiser.
        clip: Gradient-norm clip of M (separate from the core's clip); 0 disables.
    """

    hidden: int = 0
    scale: float = 0.1
    scale_target: bool = True
    conditional: bool = False
    train_core: bool = False
    aux_weight: float = 0.0
    lr: float = 1e-3
    clip: float = 1.0

    def __post_init__(self) -> None:
        for key in ("hidden", "aux_weight", "lr", "clip"):
            if getattr(self, key) < 0:
                raise ValueError(f"model.dni.{key} must be >= 0, got {getattr(self, key)}")
        if self.scale <= 0:
            raise ValueError(f"model.dni.scale must be > 0, got {self.scale}")


class SyntheticGradient(nn.Module):
    """M: flattened state (and optionally a conditioning vector) -> estimated ∂future/∂state.

    Linear, or a one-hidden-layer MLP. The final layer starts at zero, so M first
    predicts 0 and DNI starts out as truncated BPTT.
    """

    def __init__(self, state_dim: int, hidden: int = 0, cond_dim: int = 0):
        super().__init__()
        self.cond_dim = cond_dim
        d_in = state_dim + cond_dim
        if hidden > 0:
            self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, state_dim))
        else:
            self.net = nn.Sequential(nn.Linear(d_in, state_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, flat_state: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.cond_dim:
            if cond is None:
                raise ValueError("a conditional synthetic-gradient model needs its conditioning input")
            flat_state = torch.cat([flat_state, cond.to(flat_state.dtype)], dim=1)
        return self.net(flat_state)


def boundary_injection(final_state: State, synthetic_grad: Tensor, scale: float = 1.0,
                       batch_dim: int = 1) -> Tensor:
    """< stopgrad(scale · M(s_{t+T})), s_{t+T} >: a scalar whose gradient w.r.t. the final
    state is the (scaled) synthetic gradient, added to the unroll's loss."""
    g = synthetic_grad.detach() * scale
    return (g * flatten_state(final_state, batch_dim)).sum()


def bootstrapped_target(input_state: State, batch_dim: int = 1) -> Tensor:
    """∂J_k/∂s_t, read off the detached input state after J_k's backward pass."""
    grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in as_tuple(input_state)]
    return flatten_state(tuple(grads), batch_dim)


def regression_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """|| M(s_t) - stopgrad(target_t) ||², summed over state features, mean over the batch."""
    return (prediction - target.detach()).pow(2).sum(dim=1).mean()


def true_future_gradient(unroll: Callable[[State, object], tuple[Tensor, State]], state: State,
                         chunks: Iterable[object], batch_dim: int = 1) -> Tensor:
    """The gradient a synthetic gradient stands in for: BPTT from `state` through the
    unrolls `chunks`, δ = ∂(Σ_j loss_j)/∂s. `unroll(state, chunk) -> (loss, new_state)`."""
    leaf = detach_state(state, requires_grad=True)
    with torch.enable_grad():
        total, s = None, leaf
        for chunk in chunks:
            loss, s = unroll(s, chunk)
            total = loss if total is None else total + loss
        grads = torch.autograd.grad(total, as_tuple(leaf), allow_unused=True)
    return flatten_state(tuple(g if g is not None else torch.zeros_like(t) for g, t in zip(grads, as_tuple(leaf))),
                         batch_dim)


def cosine(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """Mean over the batch of per-example cosine similarity."""
    return (torch.nn.functional.cosine_similarity(a, b, dim=1, eps=eps)).mean()


def diagnostics(prediction: Tensor, target: Tensor, prefix: str = "sg") -> dict[str, Tensor]:
    """How M's predictions compare with their targets, over any number of rows (one boundary's
    batch, or all boundaries of a batch window at once): mean norms and mean cosine."""
    p, t = prediction.detach(), target.detach()
    return {f"{prefix}/pred_norm": p.norm(dim=1).mean(), f"{prefix}/target_norm": t.norm(dim=1).mean(),
            f"{prefix}/cosine": cosine(p, t)}
