"""Digit streams for the two-timescale system (Jaderberg et al. 2017, Section 3.3).

A stream of digits 0-9, uniform and seeded. With period T, step t (0-based) *ends a
segment* when (t + 1) % T == 0. At that step

- network A's target is the number of odd digits in the segment (the last T steps), 0..T;
- network B's target is the number of 3s in the last T² steps, 0..T² (near the start of a
  stream, the steps since the start).

Targets are a (rows, length, 2) tensor: channel 0 for A, channel 1 for B, -1 at the steps
that end no segment.
"""

from __future__ import annotations

import lightning as L
import torch

from seqdni.data.streams import ResumableBatches
from seqdni.data.task import Task
from seqdni.errors import UserError

DIGITS = [str(d) for d in range(10)]


def digit_targets(digits: torch.Tensor, period: int) -> torch.Tensor:
    """A's and B's targets for (rows, length) digits; see the module docstring."""
    if digits.dim() != 2:
        raise UserError(f"digits must be (rows, length), got shape {tuple(digits.shape)}")
    rows, length = digits.shape

    def counts(hit: torch.Tensor, span: int) -> torch.Tensor:
        c = torch.cat([hit.new_zeros(rows, 1), hit.cumsum(1)], dim=1)  # c[:, t+1] = hits in 0..t
        end = torch.arange(1, length + 1)
        return c[:, end] - c[:, (end - span).clamp_min(0)]

    y = torch.full((rows, length, 2), -1, dtype=torch.long)
    ends = (torch.arange(length) + 1) % period == 0
    y[:, ends, 0] = counts((digits % 2 == 1).long(), period)[:, ends]
    y[:, ends, 1] = counts((digits == 3).long(), period * period)[:, ends]
    return y


def digit_stream(rows: int, length: int, seed: int) -> torch.Tensor:
    """`rows` independent uniform digit streams of `length` steps, reproducible from `seed`."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 10, (rows, length), generator=g, dtype=torch.uint8)


class DigitBatches(ResumableBatches):
    """Consecutive windows of fixed streams: batch i is columns [iW, iW + W) of every row,
    resumable mid-epoch like `seqdni.data.StreamBatches`."""

    def __init__(self, digits: torch.Tensor, targets: torch.Tensor, window: int):
        super().__init__(-(-digits.size(1) // window))
        self.digits, self.targets, self.window = digits, targets, window

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = i * self.window
        return self.digits[:, a : a + self.window].long(), self.targets[:, a : a + self.window]


class DigitStreams(L.LightningDataModule):
    """Generated digit streams for the two-timescale system: train, validation and test
    streams come from different seeds, so evaluation is on streams never trained on.

    Args:
        period: T: A reports every T steps, B every T steps about the last T² steps.
        batch_size: Training streams B.
        window: Steps per training batch; a multiple of T² (one update of B per T² steps).
        train_length: Steps per training stream (one epoch); a multiple of `window`.
        eval_batch_size: Validation and test streams.
        eval_length: Steps per validation or test stream; a multiple of T.
        eval_window: Steps per evaluation batch (the state is carried across them); a multiple of T.
        seed: Seed of the training streams; validation and test use seed + 1 and seed + 2.
    """

    def __init__(self, period: int = 4, batch_size: int = 32, window: int = 64, train_length: int = 65536,
                 eval_batch_size: int = 64, eval_length: int = 2048, eval_window: int = 512, seed: int = 0):
        super().__init__()
        if period < 2:
            raise UserError(f"data.period must be at least 2, got {period}")
        for key, value in (("data.batch_size", batch_size), ("data.window", window),
                           ("data.train_length", train_length), ("data.eval_batch_size", eval_batch_size),
                           ("data.eval_length", eval_length), ("data.eval_window", eval_window)):
            if value <= 0:
                raise UserError(f"{key} must be positive, got {value}")
        if window % (period * period):
            raise UserError(f"data.window ({window}) must be a multiple of T² = {period * period} "
                             f"(data.period = {period})")
        if train_length % window:
            raise UserError(f"data.train_length ({train_length}) must be a multiple of data.window ({window})")
        for key, value in (("data.eval_length", eval_length), ("data.eval_window", eval_window)):
            if value % period:
                raise UserError(f"{key} ({value}) must be a multiple of data.period ({period})")
        self.period, self.batch_size, self.window = period, batch_size, window
        self.train_length, self.eval_batch_size = train_length, eval_batch_size
        self.eval_length, self.eval_window, self.seed = eval_length, eval_window, seed
        self._splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def task(self) -> Task:
        return Task("two-timescale", DIGITS)

    def _split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in self._splits:
            rows, length, seed = {"train": (self.batch_size, self.train_length, self.seed),
                                  "valid": (self.eval_batch_size, self.eval_length, self.seed + 1),
                                  "test": (self.eval_batch_size, self.eval_length, self.seed + 2)}[name]
            d = digit_stream(rows, length, seed)
            self._splits[name] = (d, digit_targets(d, self.period))
        return self._splits[name]

    def train_dataloader(self) -> DigitBatches:
        return DigitBatches(*self._split("train"), self.window)

    def val_dataloader(self) -> DigitBatches:
        return DigitBatches(*self._split("valid"), self.eval_window)

    def test_dataloader(self) -> DigitBatches:
        return DigitBatches(*self._split("test"), self.eval_window)
