"""The synthetic-gradient mathematics (Jaderberg et al. 2017, Sections 2-3), as functions.

Notation follows docs/dni-rnn.md. A core maps (s_{τ-1}, x_τ) -> s_τ and the stream is
cut into unrolls of T steps. Unroll k starts from the detached state s_t and ends at
s_{t+T}. A synthetic-gradient model M estimates δ_τ = ∂(Σ_{u>τ} ℓ_u)/∂s_τ, and unroll k
differentiates

    J_k = Σ_{τ=t+1}^{t+T} ℓ_τ + < stopgrad(scale · M(s_{t+T})), s_{t+T} >      (`boundary_injection`)

The same backward pass leaves ∂J_k/∂s_t on the detached input state: the bootstrapped
target for the prediction made at that boundary, M(s_t), trained with

    || M(s_t) - stopgrad(target_t) ||²                                         (`regression_loss`)

Everything here is plain PyTorch and works for any core whose state is a tensor or a
tuple of tensors (`seqdni.dni.state`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from seqdni.dni.state import State, as_tuple, detach_state, flatten_state


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
                         chunks: Iterable[object], batch_dim: int = 1, bootstrap: Tensor | None = None) -> Tensor:
    """The gradient a synthetic gradient stands in for: BPTT from `state` through the
    unrolls `chunks`, δ = ∂(Σ_j loss_j)/∂s. `unroll(state, chunk) -> (loss, new_state)`.

    With `bootstrap` (rows of the flattened state), the n-step bootstrapped target instead:
    δ = ∂(Σ_j loss_j + < stopgrad(bootstrap), s_end >)/∂s, the true gradient over the chunks
    plus J_nᵀ · bootstrap, J_n = ∂s_end/∂s (M(s_end), discounted, in place of what lies beyond)."""
    leaf = detach_state(state, requires_grad=True)
    with torch.enable_grad():
        total, s = None, leaf
        for chunk in chunks:
            loss, s = unroll(s, chunk)
            total = loss if total is None else total + loss
        if bootstrap is not None:
            total = total + boundary_injection(s, bootstrap, 1.0, batch_dim)
        grads = torch.autograd.grad(total, as_tuple(leaf), allow_unused=True)
    return flatten_state(tuple(g if g is not None else torch.zeros_like(t) for g, t in zip(grads, as_tuple(leaf))),
                         batch_dim)


def pending_targets(unroll: Callable[[State, object], tuple[Tensor, State]], state: State, chunks: list[object],
                    bootstrap: Tensor, gamma: float, batch_dim: int = 1) -> tuple[Tensor, Tensor]:
    """The target each chunk's start state has so far: for s_i, the start of chunk i of n,

        δ_i = ∂(Σ_{j>=i} γ^(j-i) loss_j)/∂s_i + γ^(n-i) J_iᵀ · bootstrap,   J_i = ∂s_end/∂s_i,

    from one pass through the chunks from `state` and one backward: with chunk j's loss weighted
    γ^j, the gradient at s_i is γ^i δ_i (γ > 0). Returns the start states as the pass recomputed
    them and their targets, both rows of the flattened state, chunk by chunk."""
    leaf = detach_state(state, requires_grad=True)
    with torch.enable_grad():
        starts, total, s = [], 0.0, leaf
        for j, chunk in enumerate(chunks):
            s = fresh_node(s)  # its gradient comes from the chunks after it only, not the step that made it
            starts.append(as_tuple(s))
            loss, s = unroll(s, chunk)
            total = total + gamma ** j * loss
        total = total + boundary_injection(s, gamma ** len(chunks) * bootstrap, 1.0, batch_dim)
        flat = [t for start in starts for t in start]
        grads = torch.autograd.grad(total, flat, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, flat)]
    k = len(starts[0])
    targets = [flatten_state(tuple(grads[i * k : (i + 1) * k]), batch_dim) / gamma ** i for i in range(len(starts))]
    return (torch.cat([flatten_state(start, batch_dim).detach() for start in starts]), torch.cat(targets))


def fresh_node(state: State) -> State:
    """The same values as a new node of the graph (a view): the gradient at it collects only what flows
    through its later uses. A core whose outputs and final state are one tensor (a written-out
    recurrence) would otherwise add its last step's own loss to the state's gradient."""
    if isinstance(state, Tensor):
        return state.view_as(state)
    return tuple(t.view_as(t) for t in state)


def cosine(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """Mean over the batch of per-example cosine similarity."""
    return (torch.nn.functional.cosine_similarity(a, b, dim=1, eps=eps)).mean()


def diagnostics(prediction: Tensor, target: Tensor, prefix: str = "sg") -> dict[str, Tensor]:
    """How M's predictions compare with their targets, over any number of rows (one boundary's
    batch, or all boundaries of a batch window at once): mean norms and mean cosine."""
    p, t = prediction.detach(), target.detach()
    return {f"{prefix}/pred_norm": p.norm(dim=1).mean(), f"{prefix}/target_norm": t.norm(dim=1).mean(),
            f"{prefix}/cosine": cosine(p, t)}
