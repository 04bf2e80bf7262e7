"""Feed-forward tasks: independent examples (x, y) in shuffled batches, and binary addition.

`ExampleData` is the shared data module: a subclass returns its three splits as tensors and its
`Task`; training batches are reshuffled every epoch from the seed, evaluation batches are in order.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from seqdni.data.streams import ResumableBatches
from seqdni.data.task import Task
from seqdni.errors import UserError

Split = tuple[Tensor, Tensor]


class ShuffledBatches(ResumableBatches):
    """Batches of `batch_size` examples; with `shuffle`, a new order every epoch, drawn from
    `seed` and the epoch number (the last, incomplete batch is then dropped)."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool = False, seed: int = 0):
        n = x.size(0) // batch_size if shuffle else -(-x.size(0) // batch_size)
        if n == 0:
            raise UserError(f"{x.size(0)} training examples cannot fill one batch of data.batch_size {batch_size}")
        super().__init__(n)
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self.epoch, self.order = 0, torch.arange(x.size(0))

    def start_epoch(self) -> None:
        if self.shuffle:
            self.order = torch.randperm(self.x.size(0), generator=torch.Generator().manual_seed(self.seed + self.epoch))
            self.epoch += 1

    def batch(self, i: int) -> Split:
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        return self.x[idx], self.y[idx]

    def state_dict(self) -> dict:
        # The epoch's order is redrawn from the seed and the epoch number on resume.
        return {**super().state_dict(), "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.epoch = int(state.get("epoch", 0))
        if self._start and self.shuffle:  # mid-epoch: the order of the epoch being resumed
            self.epoch -= 1
            self.start_epoch()


class ExampleData(L.LightningDataModule):
    """Shuffled training batches, ordered evaluation batches; subclasses implement `task` and `splits`.

    Args:
        batch_size: Training examples per batch (one update per batch).
        eval_batch_size: Examples per validation or test batch.
        seed: Seed of the split (where the task draws one) and of the shuffling.
    """

    def __init__(self, batch_size: int = 64, eval_batch_size: int = 512, seed: int = 0):
        super().__init__()
        for key, value in (("data.batch_size", batch_size), ("data.eval_batch_size", eval_batch_size)):
            if value <= 0:
                raise UserError(f"{key} must be positive, got {value}")
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self._splits: dict[str, Split] | None = None

    @property
    def window(self) -> int:
        """Examples per training batch (what the CLI links to `model.window`)."""
        return self.batch_size

    @property
    def task(self) -> Task:
        raise NotImplementedError

    def splits(self) -> dict[str, Split]:
        """{"train", "valid", "test"} -> (inputs (n, input_size) float, targets (n,) or (n, bits))."""
        raise NotImplementedError

    def split(self, name: str) -> Split:
        if self._splits is None:
            self._splits = self.splits()
        return self._splits[name]

    def train_dataloader(self) -> ShuffledBatches:
        return ShuffledBatches(*self.split("train"), self.batch_size, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> ShuffledBatches:
        return ShuffledBatches(*self.split("valid"), self.eval_batch_size)

    def test_dataloader(self) -> ShuffledBatches:
        return ShuffledBatches(*self.split("test"), self.eval_batch_size)


def add_bits(a: Tensor, b: Tensor) -> Tensor:
    """The bits of a + b, least significant first, for (n, bits) 0/1 tensors: (n, bits + 1)."""
    out, carry = [], torch.zeros_like(a[:, 0])
    for i in range(a.size(1)):
        s = a[:, i] + b[:, i] + carry
        out.append(s % 2)
        carry = s // 2
    return torch.stack(out + [carry], dim=1)


def addition_pairs(n: int, bits: int, seed: int) -> tuple[Tensor, Tensor]:
    """`n` pairs of `bits`-bit numbers as (n, bits) 0/1 tensors, least significant bit first. While all
    pairs number at most 2^24 they are drawn without replacement, so the splits never share a pair."""
    g = torch.Generator().manual_seed(seed)
    if 2 * bits > 24:  # any width: random bits (a repeated pair is then vanishingly rare)
        return torch.randint(0, 2, (2, n, bits), generator=g)
    if n > 4**bits:
        raise UserError(f"binary addition of {bits}-bit numbers has only {4**bits} pairs, fewer than the {n} the "
                        "splits ask for; lower data.train_size / data.eval_size or raise data.bits")
    idx = torch.randperm(4**bits, generator=g)[:n]
    shifts = torch.arange(bits)
    return (idx[:, None] >> (shifts + bits)) & 1, (idx[:, None] >> shifts) & 1


class BinaryAddition(ExampleData):
    """Binary addition, generated: the input is the bits of two `bits`-bit numbers a and b (a's, then
    b's, least significant first), the target the `bits` + 1 bits of a + b.

    Args:
        bits: Width of each number (any width).
        train_size: Training examples; validation and test examples are `eval_size` each, all
            from one draw so that no pair is in two splits.
        eval_size: Examples in the validation and in the test split.
        batch_size: Training examples per batch.
        eval_batch_size: Examples per evaluation batch.
        seed: Seed of the draw and of the shuffling.
    """

    def __init__(self, bits: int = 8, train_size: int = 8192, eval_size: int = 1024, batch_size: int = 64,
                 eval_batch_size: int = 512, seed: int = 0):
        super().__init__(batch_size, eval_batch_size, seed)
        for key, value in (("data.bits", bits), ("data.train_size", train_size), ("data.eval_size", eval_size)):
            if value <= 0:
                raise UserError(f"{key} must be positive, got {value}")
        self.bits, self.train_size, self.eval_size = bits, train_size, eval_size

    @property
    def task(self) -> Task:
        return Task("addition", input_size=2 * self.bits, output_size=self.bits + 1)

    def splits(self) -> dict[str, Split]:
        a, b = addition_pairs(self.train_size + 2 * self.eval_size, self.bits, self.seed)
        x, y = torch.cat([a, b], dim=1).float(), add_bits(a, b).float()
        cuts = [0, self.train_size, self.train_size + self.eval_size, x.size(0)]
        return {name: (x[cuts[i] : cuts[i + 1]], y[cuts[i] : cuts[i + 1]]) for i, name in
                enumerate(("train", "valid", "test"))}
