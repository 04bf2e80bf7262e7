"""An MLP cut into blocks, for decoupled feed-forward training (docs/feedforward.md).

`depth` hidden layers of `hidden_size` units (Linear, then the activation) and an output layer,
grouped into `blocks` consecutive blocks: block i maps h_{i-1} -> h_i (h_{-1} = x), and the
output layer ends the last block. A synthetic gradient may sit at each cut between two blocks.
The hidden layers are shared out as evenly as possible, earlier blocks taking one more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from seqdni.errors import UserError

if TYPE_CHECKING:  # an annotation only: importing seqdni.data would load Lightning
    from seqdni.data.task import Task

Activation = Literal["relu", "tanh", "none"]
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "none": nn.Identity}


def split_layers(depth: int, blocks: int) -> list[int]:
    """How many hidden layers each block holds: `depth` shared out over `blocks`, earlier ones first."""
    if blocks < 1 or depth < blocks - 1:
        raise UserError(f"model.blocks ({blocks}) must be between 1 and model.depth + 1 ({depth + 1}): every "
                        "block but the last needs a hidden layer of its own")
    return [depth // blocks + (i < depth % blocks) for i in range(blocks)]


class BlockMLP(nn.Module):
    """The network: `forward(x)` is the blocks in order; `blocks[i]` is one decoupled piece.

    The loss and metrics follow the task: a classification task (`task.classes` > 0) is scored by
    cross-entropy and accuracy, a bit task (binary addition) by binary cross-entropy per bit and
    the fraction of examples with every bit right.
    """

    def __init__(self, task: Task, hidden_size: int = 256, depth: int = 3, blocks: int = 3,
                 activation: Activation = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise UserError(f"model.activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if hidden_size <= 0:
            raise UserError(f"model.hidden_size must be positive, got {hidden_size}")
        self.task, self.hidden_size = task, hidden_size
        widths = [task.input_size] + [hidden_size] * depth
        layers = [nn.Sequential(nn.Linear(a, b), ACTIVATIONS[activation]()) for a, b in zip(widths, widths[1:])]
        layers.append(nn.Linear(widths[-1], task.output_size))
        counts, groups, i = split_layers(depth, blocks), [], 0
        for k, n in enumerate(counts):
            n += k == blocks - 1  # the output layer ends the last block
            groups.append(nn.Sequential(*layers[i : i + n]))
            i += n
        self.blocks = nn.ModuleList(groups)

    @property
    def cut_widths(self) -> list[int]:
        """Features of h_i at each cut (between block i and block i + 1)."""
        return [self.hidden_size] * (len(self.blocks) - 1)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """The mean loss over the batch (classes: cross-entropy; bits: binary cross-entropy summed over bits)."""
        if self.task.classes:
            return nn.functional.cross_entropy(out, y)
        return nn.functional.binary_cross_entropy_with_logits(out, y.float(), reduction="sum") / out.size(0)

    def condition(self, y: Tensor) -> Tensor:
        """The label as a vector, what a conditional synthetic gradient (cDNI) reads: one-hot, or the bits."""
        if self.task.classes:
            return nn.functional.one_hot(y, self.task.classes).float()
        return y.float()

    @property
    def cond_dim(self) -> int:
        return self.task.classes or self.task.output_size

    @torch.no_grad()
    def eval_sums(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Sums over a batch that `eval_metrics` turns into the split's metrics."""
        out = self(x)
        right = out.argmax(1) == y if self.task.classes else ((out > 0) == y.bool()).all(1)
        return {"loss": self.loss(out, y) * x.size(0), "correct": right.sum().float(),
                "count": torch.tensor(float(x.size(0)), device=right.device)}

    @staticmethod
    def eval_metrics(sums: dict[str, Tensor]) -> dict[str, Tensor]:
        n = sums["count"].clamp_min(1)
        return {"accuracy": sums["correct"] / n, "loss": sums["loss"] / n}
