"""DNI + Aux's pieces beside the flat engine: Â, the head that predicts the synthetic gradient T steps
ahead, and an unroll's every-step states on copies of the weights (`aux_keep_graph`)."""

from __future__ import annotations

from torch import Tensor, nn


def aux_head(d: int, rank: int = 0) -> nn.Module:
    """Â, the auxiliary head of DNI + Aux: a linear map of the d-wide state, of rank `rank` when > 0
    (d -> rank -> d, 2·d·rank weights; the form of a low-rank M)."""
    if rank <= 0:
        return nn.Linear(d, d)
    return nn.Sequential(nn.Linear(d, rank, bias=False), nn.Linear(rank, d))


class StatesOfUnroll(nn.Module):
    """The fused core over an unroll and its every-step states, both with their graph, as one module
    call, so that `functional_call` runs them on copies of the network's weights (not registered
    anywhere: the engine builds one per unroll)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...]]:
        out, end = self.net.core(x, state)
        return out, end, self.net.step_states(x, state, out, graph=True)
