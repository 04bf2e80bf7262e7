"""A recurrent state as one matrix, and cutting it at a truncation boundary.

A state is a tensor or a tuple of tensors (an LSTM's (h, c), each (layers, batch, hidden);
a GRU's h). The synthetic-gradient model M reads and predicts one (batch, features) row per
example: `flatten_state` makes it, `unflatten_state` undoes it.
"""

from __future__ import annotations

import torch
from torch import Tensor

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
