"""The network protocol: what an engine (`seqdni.engines`) asks of a pure `nn.Module` network.

Every network provides the first group; language models add `generate` (sampling), and the
flat engine's DNI reads the second group.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor


class Network(Protocol):
    state_names: tuple[str, ...]  # one name per state tensor: the training module logs `state/<name>_norm`

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        """The zero state of `batch_size` streams."""

    def core(self, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Any, tuple[Tensor, ...]]:
        """Inputs (B, T, ...) and the state -> what `loss` / `eval_sums` read, and the new state."""

    def eval_sums(self, out: Any, y: Tensor) -> dict[str, Tensor]:
        """Float64 sums over a batch (summed over batches and ranks by the training module)."""

    def eval_metrics(self, sums: dict[str, Tensor]) -> dict[str, Tensor]:
        """The evaluation metrics (logged as `val/<name>`, `test/<name>`) from the summed sums."""


class LanguageNetwork(Network, Protocol):
    def generate(self, prime: Tensor, length: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Warm the state on `prime` (1-D ids), then sample `length` ids."""


class RecurrentNetwork(Network, Protocol):
    """What the flat engine (TBPTT, DNI, DNI + Aux) drives."""

    state_size: int  # features of one example's flattened state: what M reads and predicts
    cond_size: int  # features of `condition(x_step)`: what conditional DNI also reads

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """The unroll's mean loss per position (B·T positions)."""

    def train_metrics(self, loss: Tensor) -> dict[str, Tensor]:
        """A batch window's mean loss as it is logged (`train/bpc`, `train/loss`)."""

    def core_steps(self, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...]]:
        """`core`, also returning every step's full state, each (layers, T·B, H) in time-major order."""

    def condition(self, x_step: Tensor) -> Tensor:
        """An input step as conditional DNI reads it."""

    def next_input(self, y: Tensor) -> Tensor:
        """The input that follows an unroll (a language model's last target)."""

    # Tasks made of episodes (BitLSTM) also give, for `DNIOptions.episodic` and its probe:
    # episode_ends(y) -> (B,) bool, the streams whose episode ends inside `y`'s steps, and
    # current_episode(y) -> y with the losses after each stream's first episode end masked out.
