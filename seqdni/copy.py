"""Copy and Repeat Copy (Graves et al. 2014; DNI paper Section 3.1): episodes generated on the fly.

An episode of Copy at length N (8-bit vectors, channels listed left to right)::

    step        1 .. N          N+1         N+2 .. 2N+1
    x  bits     v_1 .. v_N      0           0
    x  delim    0               1           0
    y  bits     -               -           v_1 .. v_N        (mask 1 on these steps only)

Repeat Copy adds an input channel with the repeat count R / max_repeats on the delimiter
step and an output end-marker bit: the network outputs v_1..v_N R times, then a step with
only the end marker set; the end-marker bit is scored (as 0) on every output step before.

Targets follow `seqdni.model.BitLSTM`: y is (T, bits [+ end] + 2): the target bits, the
loss mask, and an episode-end flag on the last step of each episode.

Each batch row is one endless stream of episodes (after a random blank lead-in, so rows
are out of phase), cut into windows of W columns: an episode cut by a window continues in
the next batch, and the network's state is carried across, so truncation boundaries fall
inside episodes. The curriculum level N lives in the data module; `Curriculum` raises it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from seqdni.data import ResumableBatches
from seqdni.model import Task

Draw = Callable[[torch.Generator, int], Tensor]  # (generator, steps) -> whole episodes, >= steps rows


def copy_episodes(n: int, count: int, bits: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """`count` Copy episodes of 2n + 1 steps: x (count, 2n+1, bits+1), y (count, 2n+1, bits+2)."""
    if n < 1:
        raise ValueError(f"a copy episode needs at least one vector, got n={n}")
    v = torch.randint(0, 2, (count, n, bits), generator=gen).float()
    x = torch.zeros(count, 2 * n + 1, bits + 1)
    y = torch.zeros(count, 2 * n + 1, bits + 2)
    x[:, :n, :bits] = v
    x[:, n, bits] = 1.0
    y[:, n + 1 :, :bits] = v
    y[:, n + 1 :, bits] = 1.0
    y[:, -1, bits + 1] = 1.0
    return x, y


def repeat_copy_episodes(n: int, repeats: int, count: int, max_repeats: int, bits: int,
                         gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """`count` Repeat Copy episodes of n + 1 + repeats·n + 1 steps: x (count, ., bits+2), y (count, ., bits+3)."""
    if n < 1 or not 1 <= repeats <= max_repeats:
        raise ValueError(f"a repeat-copy episode needs n >= 1 and 1 <= repeats <= {max_repeats}, "
                         f"got n={n}, repeats={repeats}")
    v = torch.randint(0, 2, (count, n, bits), generator=gen).float()
    steps = n + 1 + repeats * n + 1
    x = torch.zeros(count, steps, bits + 2)
    y = torch.zeros(count, steps, bits + 3)
    x[:, :n, :bits] = v
    x[:, n, bits] = 1.0
    x[:, n, bits + 1] = repeats / max_repeats
    y[:, n + 1 : steps - 1, :bits] = v.repeat(1, repeats, 1)
    y[:, steps - 1, bits] = 1.0  # end marker
    y[:, n + 1 :, bits + 1] = 1.0  # loss mask: every output step, the end-marker step included
    y[:, -1, bits + 2] = 1.0
    return x, y


class EpisodeStreams(ResumableBatches):
    """Training batches: B endless streams of episodes cut into windows of W columns::

        row 0   [lead-in][ episode ][ episode ][ episo|de ][ episode ] ...
        row 1   [lead-in  ][ episode ][ episode ][ e|pisode ][ episo ...
        batch   |<------------- W ------------->|<------ W ------>|
                 batch i                          batch i+1 (rows continue)

    Episodes are drawn (`draw(generator, steps)`) when a row runs short, `refill` windows'
    worth at a time, so they follow the curriculum level within a few batches. An epoch is `length` batches; a new
    epoch starts every row afresh (the model resets its state at epoch start too). The
    generator, the position and the unfinished episodes are in `state_dict`, so a
    checkpoint resumes the exact stream.
    """

    def __init__(self, draw: Draw, channels: int, x_dim: int, batch_size: int, window: int, length: int,
                 seed: int, max_lead_in: int):
        super().__init__(length)
        self.draw, self.channels, self.x_dim = draw, channels, x_dim
        self.batch_size, self.window, self.max_lead_in = batch_size, window, max_lead_in
        self.gen = torch.Generator().manual_seed(seed)
        self.refill = 4
        self.pending: list[Tensor] = []

    def _fill(self, row: Tensor) -> Tensor:
        short = self.window - row.size(0)
        if short <= 0:
            return row
        return torch.cat([row, self.draw(self.gen, short + (self.refill - 1) * self.window)])

    def start_epoch(self) -> None:
        """A fresh epoch: every row starts with a random blank lead-in."""
        leads = torch.randint(0, self.max_lead_in + 1, (self.batch_size,), generator=self.gen).tolist()
        self.pending = [torch.zeros(k, self.channels) for k in leads]

    def batch(self, i: int) -> tuple[Tensor, Tensor]:
        rows = [self._fill(r) for r in self.pending]
        self.pending = [r[self.window :] for r in rows]
        batch = torch.stack([r[: self.window] for r in rows])
        return batch[..., : self.x_dim], batch[..., self.x_dim :]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "generator": self.gen.get_state(),
                "pending": [r.clone() for r in self.pending]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "generator" in state:
            self.gen.set_state(state["generator"])
        self.pending = list(state.get("pending", []))
        if self._start and len(self.pending) != self.batch_size:
            raise ValueError(f"the checkpoint's stream has {len(self.pending)} rows, data.batch_size is "
                             f"{self.batch_size}; resume with the batch size it was saved with")


class FixedEpisodes:
    """Evaluation batches: the same episodes at every validation (a fixed seed), at the
    level current when iterated. Rows start at step 0; the trailing unfinished episode of
    each row is not scored (its mask is cleared), so `bits_error` counts whole episodes."""

    def __init__(self, draw: Draw, x_dim: int, rows: int, window: int, batches: int, seed: int):
        self.draw, self.x_dim = draw, x_dim
        self.rows, self.window, self.batches, self.seed = rows, window, batches, seed

    def __len__(self) -> int:
        return self.batches

    def grid(self, rows: int, span: int) -> tuple[Tensor, Tensor]:
        gen = torch.Generator().manual_seed(self.seed)
        out = []
        for _ in range(rows):
            row = self.draw(gen, span)[:span].clone()
            ends = row[:, -1].nonzero()
            row[ends[-1, 0] + 1 if len(ends) else 0 :, -2] = 0.0  # cut episode: no loss mask
            out.append(row)
        g = torch.stack(out)
        return g[..., : self.x_dim], g[..., self.x_dim :]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self.grid(self.rows, self.window * self.batches)
        for i in range(self.batches):
            cols = slice(i * self.window, (i + 1) * self.window)
            yield x[:, cols], y[:, cols]


class CopyDataModule(L.LightningDataModule):
    """Copy: N random binary vectors, a delimiter, then the N vectors back. N is the
    curriculum level, raised by `seqdni.copy.Curriculum`.

    Args:
        batch_size: Parallel episode streams B.
        window: Columns per training batch; a multiple of `model.unroll` (60 suits T = 2..5).
        bits: Width of each random binary vector.
        level: Curriculum level N to start from.
        shorter: Fraction of training episodes whose N is drawn uniformly from 1..level
            instead of being the level itself (keeps shorter lengths rehearsed); 0 disables.
        max_lead_in: Each training row starts with 0..max_lead_in blank steps, so rows are
            out of phase with each other and with the truncation boundaries.
        epoch_batches: Training batches per epoch (the streams restart at each epoch).
        seed: Seed of the training episodes; unset: drawn from the global seed (`seed_everything`).
        eval_batch_size: Streams in the validation set.
        eval_window: Columns per validation batch.
        eval_batches: Validation batches; the state is carried across them.
    """

    task_name = "copy"

    def __init__(self, batch_size: int = 32, window: int = 60, bits: int = 8, level: int = 1, shorter: float = 0.0,
                 max_lead_in: int = 10, epoch_batches: int = 1000, seed: int | None = None,
                 eval_batch_size: int = 32, eval_window: int = 120, eval_batches: int = 3):
        super().__init__()
        for key, value in (("batch_size", batch_size), ("window", window), ("bits", bits), ("level", level),
                           ("epoch_batches", epoch_batches), ("eval_batch_size", eval_batch_size),
                           ("eval_window", eval_window), ("eval_batches", eval_batches)):
            if value <= 0:
                raise ValueError(f"data.{key} must be positive, got {value}")
        if not 0.0 <= shorter <= 1.0:
            raise ValueError(f"data.shorter is a fraction of episodes in [0, 1], got {shorter}")
        if max_lead_in < 0:
            raise ValueError(f"data.max_lead_in must be >= 0, got {max_lead_in}")
        self.batch_size, self.window, self.bits, self.level, self.shorter = batch_size, window, bits, level, shorter
        self.max_lead_in, self.epoch_batches = max_lead_in, epoch_batches
        self.seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else seed
        self.eval_batch_size, self.eval_window, self.eval_batches = eval_batch_size, eval_window, eval_batches

    # ---- the task ---------------------------------------------------------------------------
    @property
    def task(self) -> Task:
        return Task(self.task_name, input_size=self.bits + 1, output_size=self.bits)

    @property
    def x_dim(self) -> int:
        return self.task.input_size

    @property
    def channels(self) -> int:
        """x and y side by side: inputs, target bits, loss mask, episode end."""
        return self.task.input_size + self.task.output_size + 2

    @property
    def has_test(self) -> bool:
        return False  # the score is the curriculum level reached; there is no test split

    def episode_length(self, n: Tensor, repeats: Tensor) -> Tensor:
        return 2 * n + 1

    def _repeats(self, count: int, gen: torch.Generator) -> Tensor:
        return torch.ones(count, dtype=torch.long)

    def episodes(self, n: int, repeats: int, count: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """`count` episodes with n vectors (and R repeats): x (count, steps, inputs), y (count, steps, targets)."""
        return copy_episodes(n, count, self.bits, gen)

    def draw(self, gen: torch.Generator, steps: int, train: bool = True) -> Tensor:
        """Whole episodes at the current level, end to end along time: (>= steps, channels).
        With `shorter`, a training episode's N is drawn from 1..level with that probability."""
        mixed = train and self.shorter > 0 and self.level > 1
        count = -(-steps // int(self.episode_length(torch.tensor(1 if mixed else self.level), torch.tensor(1))))
        n = torch.full((count,), self.level, dtype=torch.long)
        if mixed:
            pick = torch.rand(count, generator=gen) < self.shorter
            n = torch.where(pick, torch.randint(1, self.level + 1, (count,), generator=gen), n)
        r = self._repeats(count, gen)
        lengths = self.episode_length(n, r)
        ends = lengths.cumsum(0)
        keep = int((ends < steps).sum()) + 1  # the first episodes that reach `steps`
        n, r, lengths, ends = n[:keep], r[:keep], lengths[:keep], ends[:keep]
        out = torch.empty(int(ends[-1]), self.channels)
        starts = ends - lengths
        for nr in torch.unique(torch.stack([n, r], 1), dim=0).tolist():  # a few (n, R) groups, built at once
            which = ((n == nr[0]) & (r == nr[1])).nonzero()[:, 0]
            x, y = self.episodes(nr[0], nr[1], len(which), gen)
            index = (starts[which, None] + torch.arange(x.size(1))).reshape(-1)
            out[index] = torch.cat([x, y], dim=2).reshape(-1, self.channels)
        return out

    def _eval_draw(self, gen: torch.Generator, steps: int) -> Tensor:
        return self.draw(gen, steps, train=False)

    # ---- loaders ------------------------------------------------------------------------------
    def train_dataloader(self) -> EpisodeStreams:
        if self.trainer is not None and self.trainer.world_size > 1:
            raise ValueError("the copy tasks run on one device; set trainer.devices to 1")
        return EpisodeStreams(self.draw, self.channels, self.x_dim, self.batch_size, self.window,
                              self.epoch_batches, self.seed, self.max_lead_in)

    def val_dataloader(self) -> FixedEpisodes:
        return FixedEpisodes(self._eval_draw, self.x_dim, self.eval_batch_size, self.eval_window,
                             self.eval_batches, self.seed + 1)

    def probe_batch(self, rows: int, span: int) -> tuple[Tensor, Tensor]:
        """A held window of `rows` streams, `span` columns, at the current level (true-gradient probe)."""
        return FixedEpisodes(self._eval_draw, self.x_dim, rows, span, 1, self.seed + 2).grid(rows, span)

    def state_dict(self) -> dict:
        return {"level": self.level, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.level, self.seed = int(state["level"]), int(state["seed"])


class RepeatCopyDataModule(CopyDataModule):
    """Repeat Copy: N random binary vectors, a delimiter carrying the repeat count R, then the
    N vectors R times and an end marker. N is the curriculum level; R is drawn uniformly
    from 1..max_repeats for every episode.

    Args:
        batch_size: Parallel episode streams B.
        window: Columns per training batch; a multiple of `model.unroll` (60 suits T = 2..5).
        bits: Width of each random binary vector.
        level: Curriculum level N to start from.
        shorter: Fraction of training episodes whose N is drawn uniformly from 1..level; 0 disables.
        max_lead_in: Each training row starts with 0..max_lead_in blank steps.
        epoch_batches: Training batches per epoch (the streams restart at each epoch).
        seed: Seed of the training episodes; unset: drawn from the global seed (`seed_everything`).
        eval_batch_size: Streams in the validation set.
        eval_window: Columns per validation batch.
        eval_batches: Validation batches; the state is carried across them.
        max_repeats: Largest repeat count R; the input carries R / max_repeats.
    """

    task_name = "repeat-copy"

    def __init__(self, batch_size: int = 32, window: int = 60, bits: int = 8, level: int = 1, shorter: float = 0.0,
                 max_lead_in: int = 10, epoch_batches: int = 1000, seed: int | None = None,
                 eval_batch_size: int = 32, eval_window: int = 120, eval_batches: int = 3, max_repeats: int = 2):
        super().__init__(batch_size, window, bits, level, shorter, max_lead_in, epoch_batches, seed,
                         eval_batch_size, eval_window, eval_batches)
        if max_repeats <= 0:
            raise ValueError(f"data.max_repeats must be positive, got {max_repeats}")
        self.max_repeats = max_repeats

    @property
    def task(self) -> Task:
        return Task(self.task_name, input_size=self.bits + 2, output_size=self.bits + 1)

    def episode_length(self, n: Tensor, repeats: Tensor) -> Tensor:
        return n + 1 + repeats * n + 1

    def _repeats(self, count: int, gen: torch.Generator) -> Tensor:
        return torch.randint(1, self.max_repeats + 1, (count,), generator=gen)

    def episodes(self, n: int, repeats: int, count: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        return repeat_copy_episodes(n, repeats, count, self.max_repeats, self.bits, gen)


class Curriculum(L.Callback):
    """Raises the data module's level N when validation says the current level is solved.

    After each validation, N counts as solved when `val/bits_error` (wrong bits per
    episode) is below `threshold`; after `patience` solved validations in a row the level
    goes up by one. `curriculum/level` and `curriculum/solved` go to the loggers, and the
    history is written to `<log_dir>/curriculum.json` (read by `scripts/copy_table.py`).
    The score of a run is the largest N solved.

    Args:
        threshold: Wrong bits per episode below which a validation counts as solved.
        patience: Solved validations in a row needed to advance.
        max_level: Stop training once this level is solved; 0 never stops.
        monitor: The metric compared with the threshold.
    """

    def __init__(self, threshold: float = 0.15, patience: int = 1, max_level: int = 0,
                 monitor: str = "val/bits_error"):
        super().__init__()
        if threshold <= 0 or patience <= 0 or max_level < 0:
            raise ValueError(f"Curriculum needs threshold > 0, patience > 0 and max_level >= 0, "
                             f"got {threshold}, {patience}, {max_level}")
        self.threshold, self.patience, self.max_level, self.monitor = threshold, patience, max_level, monitor
        self.streak, self.solved, self.history = 0, 0, []

    @staticmethod
    def _data(trainer: L.Trainer) -> CopyDataModule:
        dm = trainer.datamodule
        if not hasattr(dm, "level"):
            raise ValueError(f"Curriculum needs a data module with a `level` (seqdni.copy.CopyDataModule), "
                             f"got {type(dm).__name__}; remove the callback for this task")
        return dm

    def on_fit_start(self, trainer, pl_module) -> None:
        self._data(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if self.monitor not in trainer.callback_metrics:
            raise KeyError(f"Curriculum monitors {self.monitor!r}, which validation did not log; "
                           f"logged: {sorted(trainer.callback_metrics)}")
        dm, error = self._data(trainer), float(trainer.callback_metrics[self.monitor])
        level = dm.level
        self.streak = self.streak + 1 if error < self.threshold else 0
        if self.streak >= self.patience:
            self.solved, self.streak = max(self.solved, level), 0
            dm.level = level + 1
            if self.max_level and self.solved >= self.max_level:
                trainer.should_stop = True
        step = trainer.global_step
        self.history.append({"step": step, "level": level, "bits_error": error, "solved": self.solved})
        # On the axis Lightning logs val/bits_error against (batches); the history keeps optimiser steps.
        loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
        batches = getattr(loop, "_batches_that_stepped", step)
        metrics = {"curriculum/level": float(level), "curriculum/solved": float(self.solved)}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=batches)
        if trainer.is_global_zero and trainer.log_dir:
            path = Path(trainer.log_dir) / "curriculum.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps({"task": dm.task.name, "unroll": pl_module.hparams.get("unroll"),
                                       "dni": pl_module.hparams.get("dni"), "solved": self.solved,
                                       "threshold": self.threshold, "history": self.history}))
            tmp.replace(path)

    def state_dict(self) -> dict:
        return {"streak": self.streak, "solved": self.solved, "history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.streak, self.solved = int(state_dict["streak"]), int(state_dict["solved"])
        self.history = list(state_dict.get("history", []))
