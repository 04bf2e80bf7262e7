"""M fitted by least squares instead of by gradient steps: an exponentially weighted ridge regression.

A linear M(s) = W f(s) + b (f: the features M reads, e.g. tanh of the state) minimises the
regression loss over its recent targets in closed form. With rows f_i (a column of ones
appended) and targets g_i, the weighted second moments

    F ← ρ F + (1 - ρ) mean_i f_i f_iᵀ,      G ← ρ G + (1 - ρ) mean_i f_i g_iᵀ,      ρ = 1 - 1 / memory

give [W b]ᵀ = (F + λ · tr(F) / D · I)⁻¹ G: the ridge fit of the targets of the last `memory` updates or
so. The ridge is relative to F's mean diagonal, so the fit does not depend on the features' scale
(nor on a common factor of F and G). Under torch.distributed each update's moments are averaged
over the processes first, so every process holds the same fit (that of all their rows, when each
has as many). Unlike Adam, whose steps keep a weight moving by about its
learning rate whatever the noise, the fit averages its noisy targets over the whole memory.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


class LeastSquares(nn.Module):
    """The running moments of a linear M's inputs and targets, and the ridge fit they give.

    Args:
        features: Width of M's input rows (before the appended constant).
        outputs: Width of M's output rows.
        memory: Updates over which the moments average (ρ = 1 - 1 / memory).
        ridge: λ, relative to the mean diagonal of the input moment.
        every: Solve for the weights every this many updates.
    """

    def __init__(self, features: int, outputs: int, memory: int, ridge: float, every: int):
        super().__init__()
        self.rho, self.ridge, self.every = 1.0 - 1.0 / memory, ridge, every
        self.register_buffer("ff", torch.zeros(features + 1, features + 1, dtype=torch.float64))
        self.register_buffer("fg", torch.zeros(features + 1, outputs, dtype=torch.float64))
        self.updates = 0  # saved with the module (extra state), so a resumed run solves on the same updates

    @torch.no_grad()
    def update(self, f: Tensor, g: Tensor, linear: nn.Linear) -> None:
        """Fold one update's rows (f: inputs, g: targets) into the moments; every `every` updates,
        set `linear` to the ridge fit."""
        f1 = torch.cat([f, torch.ones_like(f[:, :1])], dim=1)
        ff, fg = (f1.T @ f1).double() / f.size(0), (f1.T @ g.to(f1.dtype)).double() / f.size(0)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            both = torch.cat([ff.flatten(), fg.flatten()])
            dist.all_reduce(both)
            both /= dist.get_world_size()
            ff, fg = both[: ff.numel()].view_as(ff), both[ff.numel() :].view_as(fg)
        self.ff.mul_(self.rho).add_(ff, alpha=1.0 - self.rho)
        self.fg.mul_(self.rho).add_(fg, alpha=1.0 - self.rho)
        self.updates += 1
        if self.updates % self.every == 0:
            self.solve(linear)

    def get_extra_state(self) -> dict:
        return {"updates": self.updates}

    def set_extra_state(self, state: dict) -> None:
        self.updates = int(state["updates"])

    @torch.no_grad()
    def solve(self, linear: nn.Linear) -> None:
        """`linear`'s weight and bias := the ridge fit of the moments so far."""
        d = self.ff.size(0)
        damp = self.ridge * torch.diagonal(self.ff).mean().clamp_min(1e-12)
        wb = torch.linalg.solve(self.ff + damp * torch.eye(d, dtype=self.ff.dtype, device=self.ff.device), self.fg)
        linear.weight.copy_(wb[:-1].T.to(linear.weight.dtype))
        linear.bias.copy_(wb[-1].to(linear.bias.dtype))
