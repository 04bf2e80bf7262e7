"""The control injection beside the flat engine (`DNIOptions.injection: shuffled`): each stream's core
receives another stream's synthetic gradient."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqdni.errors import UserError


class StreamRotation(nn.Module):
    """The batch's rows (streams) rotated by a random offset in 1 .. B - 1 at every call, so every
    stream gets another stream's row. The offsets come from a generator of its own, seeded from the
    run's seed (`torch.initial_seed`, nothing drawn from the global generator) and kept in the module's
    state, so a run resumed from a checkpoint draws the offsets the uninterrupted run would. The
    offset is drawn on the host, the rotation is done on g's device (no device sync)."""

    def __init__(self):
        super().__init__()
        self.generator = torch.Generator().manual_seed(torch.initial_seed())

    def forward(self, g: Tensor) -> Tensor:
        b = g.size(0)
        if b < 2:
            raise UserError("model.dni.injection shuffled gives each stream another stream's synthetic gradient, "
                            "which a batch of one stream does not have; use data.batch_size >= 2")
        shift = int(torch.randint(1, b, (), generator=self.generator))
        return g.roll(-shift, dims=0)  # row i gets row (i + shift) mod B

    def get_extra_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu())
