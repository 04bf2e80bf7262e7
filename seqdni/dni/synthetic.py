"""M, the synthetic-gradient model: a state (and optionally a conditioning input) -> ∂future/∂state."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqdni.errors import UserError


class SyntheticGradient(nn.Module):
    """M: flattened state (and optionally a conditioning vector) -> estimated ∂future/∂state.

    Linear, a linear map of rank `rank` (d -> rank -> d, no bias in between: 2·d·rank weights
    instead of d²), or a one-hidden-layer MLP, optionally beside a linear map (`skip`: the
    MLP learns what the linear map cannot). `experts` > 0 adds a gated mixture of low-rank linear
    maps, Σ_k softmax(G f)_k U_k V_kᵀ f: a linear map that changes with the state (a Copy state
    says which vector is being read, and the gradient that stores it differs from vector to
    vector). Every final layer starts at zero, so M first
    predicts 0 and DNI starts out as truncated BPTT. With `squash`, M reads tanh of the state
    (element-wise; not the conditioning input), so its output is bounded by its weights alone.
    """

    def __init__(self, state_dim: int, hidden: int = 0, cond_dim: int = 0, rank: int = 0, squash: bool = False,
                 skip: bool = False, experts: int = 0, expert_rank: int = 32):
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
        if skip and hidden == 0:
            raise UserError("a linear skip path goes beside an MLP synthetic-gradient model (hidden > 0)")
        self.skip = nn.Linear(d_in, state_dim) if skip else None
        self.experts = GatedExperts(d_in, state_dim, experts, expert_rank) if experts > 0 else None
        for last in (self.net[-1], self.skip):
            if last is not None:
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)

    def forward(self, flat_state: Tensor, cond: Tensor | None = None) -> Tensor:
        f = self.features(flat_state, cond)
        out = self.net(f)
        for extra in (self.skip, self.experts):
            if extra is not None:
                out = out + extra(f)
        return out

    def features(self, flat_state: Tensor, cond: Tensor | None = None) -> Tensor:
        """What the first layer reads: the state (tanh of it with `squash`), then the conditioning input."""
        if self.squash:  # M(tanh(s)): bounded however far the state runs
            flat_state = torch.tanh(flat_state)
        if self.cond_dim:
            if cond is None:
                raise UserError("a conditional synthetic-gradient model needs its conditioning input")
            flat_state = torch.cat([flat_state, cond.to(flat_state.dtype)], dim=1)
        return flat_state


class GatedExperts(nn.Module):
    """Σ_k softmax(G f + c)_k U_k V_kᵀ f: K linear maps of rank r, mixed by a softmax gate on the input.
    U starts at zero (the mixture adds nothing until it learns); G and V start at PyTorch's default."""

    def __init__(self, d_in: int, d_out: int, experts: int, rank: int):
        super().__init__()
        self.k, self.r = experts, rank
        self.gate = nn.Linear(d_in, experts)
        self.down = nn.Linear(d_in, experts * rank, bias=False)
        self.up = nn.Parameter(torch.zeros(experts * rank, d_out))

    def forward(self, f: Tensor) -> Tensor:
        z = self.down(f).view(-1, self.k, self.r) * torch.softmax(self.gate(f), dim=-1).unsqueeze(-1)
        return z.reshape(-1, self.k * self.r) @ self.up
