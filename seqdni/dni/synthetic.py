"""M, the synthetic-gradient model: a state (and optionally a conditioning input) -> ∂future/∂state."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqdni.errors import UserError


class SyntheticGradient(nn.Module):
    """M: flattened state (and optionally a conditioning vector) -> estimated ∂future/∂state.

    Linear, a linear map of rank `rank` (d -> rank -> d, no bias in between: 2·d·rank weights
    instead of d²), or a one-hidden-layer MLP. The final layer starts at zero, so M first
    predicts 0 and DNI starts out as truncated BPTT. With `squash`, M reads tanh of the state
    (element-wise; not the conditioning input), so its output is bounded by its weights alone.
    """

    def __init__(self, state_dim: int, hidden: int = 0, cond_dim: int = 0, rank: int = 0, squash: bool = False):
        super().__init__()
        self.cond_dim, self.squash = cond_dim, squash
        d_in = state_dim + cond_dim
        if hidden > 0 and rank > 0:
            raise UserError("a synthetic-gradient model is an MLP (hidden) or a low-rank linear map (rank), not both")
        if hidden > 0:
            self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, state_dim))
        elif rank > 0:
            self.net = nn.Sequential(nn.Linear(d_in, rank, bias=False), nn.Linear(rank, state_dim))
        else:
            self.net = nn.Sequential(nn.Linear(d_in, state_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, flat_state: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.squash:  # M(tanh(s)): bounded however far the state runs
            flat_state = torch.tanh(flat_state)
        if self.cond_dim:
            if cond is None:
                raise UserError("a conditional synthetic-gradient model needs its conditioning input")
            flat_state = torch.cat([flat_state, cond.to(flat_state.dtype)], dim=1)
        return self.net(flat_state)
