"""Copy and Repeat Copy data modules: episode streams at the curriculum level N (`seqdni.data.episodes`)."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from seqdni.data.episodes import EpisodeStreams, FixedEpisodes, copy_episodes, repeat_copy_episodes
from seqdni.data.task import Task
from seqdni.errors import UserError


class CopyDataModule(L.LightningDataModule):
    """Copy: N random binary vectors, a delimiter, then the N vectors back. N is the
    curriculum level, raised by `seqdni.training.Curriculum`.

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
        eval_warmup: Episodes at the start of each validation row that run unscored. Training
            rows start from the zero state only at an epoch's start and otherwise run mid-stream,
            so a network can copy well mid-stream yet fail the first episode after a reset; the
            warm-up scores validation in the regime that training sees. 0 scores every episode.
        resets: Every episode starts from the zero state: the inputs carry one more channel,
            1 on each episode's first step, where the network (`BitLSTM` with `resets`) zeroes
            the stream's state. No state, and no gradient, crosses an episode end; truncation
            boundaries still fall anywhere inside episodes. False: the state runs on from one
            episode into the next.
        lookahead: Each training batch's targets run this many steps past its window (the first
            targets of the next batch), for a conditional M that reads the targets ahead
            (`model.dni.lookahead`, at most this). 0: the targets cover the window only.
        whole_episodes: Each training row's window holds whole episodes only: it ends after the
            last episode that ends inside it, padded with blank unscored steps, and the episode
            that would be cut starts the next window. BPTT over the window then sees every
            episode whole (the grid's upper bound, `bptt120-whole.yaml`); an episode longer than
            the window is still cut. False: windows cut episodes anywhere.
    """

    task_name = "copy"
    max_repeats = 1  # Copy outputs its block once

    def __init__(self, batch_size: int = 32, window: int = 60, bits: int = 8, level: int = 1, shorter: float = 0.0,
                 max_lead_in: int = 10, epoch_batches: int = 1000, seed: int | None = None,
                 eval_batch_size: int = 32, eval_window: int = 120, eval_batches: int = 3, eval_warmup: int = 0,
                 resets: bool = False, lookahead: int = 0, whole_episodes: bool = False):
        super().__init__()
        for key, value in (("batch_size", batch_size), ("window", window), ("bits", bits), ("level", level),
                           ("epoch_batches", epoch_batches), ("eval_batch_size", eval_batch_size),
                           ("eval_window", eval_window), ("eval_batches", eval_batches)):
            if value <= 0:
                raise UserError(f"data.{key} must be positive, got {value}")
        if not 0.0 <= shorter <= 1.0:
            raise UserError(f"data.shorter is a fraction of episodes in [0, 1], got {shorter}")
        for key, value in (("max_lead_in", max_lead_in), ("eval_warmup", eval_warmup), ("lookahead", lookahead)):
            if value < 0:
                raise UserError(f"data.{key} must be >= 0, got {value}")
        self.batch_size, self.window, self.bits, self.level, self.shorter = batch_size, window, bits, level, shorter
        self.max_lead_in, self.epoch_batches = max_lead_in, epoch_batches
        self.seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else seed
        self.eval_batch_size, self.eval_window, self.eval_batches = eval_batch_size, eval_window, eval_batches
        self.eval_warmup, self.resets, self.lookahead = eval_warmup, resets, lookahead
        self.whole_episodes = whole_episodes

    # ---- the task ---------------------------------------------------------------------------
    @property
    def task(self) -> Task:
        return Task(self.task_name, input_size=self.bits + 1, output_size=self.bits, resets=self.resets)

    @property
    def x_dim(self) -> int:
        """Input channels: what the network reads, and with `resets` the episode-start flag."""
        return self.task.input_size + int(self.resets)

    @property
    def channels(self) -> int:
        """x and y side by side: inputs (with `resets`, the episode-start flag), target bits, loss
        mask, episode end."""
        return self.x_dim + self.task.output_size + 2

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
            if self.resets:  # the episode-start flag, after the inputs the network reads
                start = torch.zeros(x.size(0), x.size(1), 1)
                start[:, 0] = 1.0
                x = torch.cat([x, start], dim=2)
            index = (starts[which, None] + torch.arange(x.size(1))).reshape(-1)
            out[index] = torch.cat([x, y], dim=2).reshape(-1, self.channels)
        return out

    def _eval_draw(self, gen: torch.Generator, steps: int) -> Tensor:
        return self.draw(gen, steps, train=False)

    # ---- loaders ------------------------------------------------------------------------------
    def train_dataloader(self) -> EpisodeStreams:
        if self.trainer is not None and self.trainer.world_size > 1:
            raise UserError("the copy tasks run on one device; set trainer.devices to 1")
        return EpisodeStreams(self.draw, self.channels, self.x_dim, self.batch_size, self.window,
                              self.epoch_batches, self.seed, self.max_lead_in, self.lookahead, self.whole_episodes)

    def val_dataloader(self) -> FixedEpisodes:
        return FixedEpisodes(self._eval_draw, self.x_dim, self.eval_batch_size, self.eval_window,
                             self.eval_batches, self.seed + 1, self.eval_warmup)

    def probe_batch(self, rows: int, span: int) -> tuple[Tensor, Tensor]:
        """A held window of `rows` streams, `span` columns, at the current level (true-gradient probe).
        Each row starts at its own (fixed) step of its stream, so the probed boundary falls at every
        phase of an episode across the rows."""
        lead = int(self.episode_length(torch.tensor(self.level), torch.tensor(self.max_repeats)))  # the longest
        x, y = FixedEpisodes(self._eval_draw, self.x_dim, rows, span + lead, 1, self.seed + 2).grid(rows, span + lead)
        start = torch.randint(0, lead + 1, (rows, 1), generator=torch.Generator().manual_seed(self.seed + 3))
        cols = start + torch.arange(span)
        return (torch.take_along_dim(x, cols.unsqueeze(-1), dim=1), torch.take_along_dim(y, cols.unsqueeze(-1), dim=1))

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
        eval_warmup: Episodes at the start of each validation row that run unscored (see
            `CopyDataModule`); 0 scores every episode.
        resets: Every episode starts from the zero state (see `CopyDataModule`).
        max_repeats: Largest repeat count R; the input carries R / max_repeats.
        lookahead: Targets past each training window (see `CopyDataModule`).
        whole_episodes: Training windows hold whole episodes only (see `CopyDataModule`).
    """

    task_name = "repeat-copy"

    def __init__(self, batch_size: int = 32, window: int = 60, bits: int = 8, level: int = 1, shorter: float = 0.0,
                 max_lead_in: int = 10, epoch_batches: int = 1000, seed: int | None = None,
                 eval_batch_size: int = 32, eval_window: int = 120, eval_batches: int = 3, eval_warmup: int = 0,
                 resets: bool = False, max_repeats: int = 2, lookahead: int = 0, whole_episodes: bool = False):
        super().__init__(batch_size, window, bits, level, shorter, max_lead_in, epoch_batches, seed,
                         eval_batch_size, eval_window, eval_batches, eval_warmup, resets, lookahead, whole_episodes)
        if max_repeats <= 0:
            raise UserError(f"data.max_repeats must be positive, got {max_repeats}")
        self.max_repeats = max_repeats

    @property
    def task(self) -> Task:
        return Task(self.task_name, input_size=self.bits + 2, output_size=self.bits + 1, resets=self.resets)

    def episode_length(self, n: Tensor, repeats: Tensor) -> Tensor:
        return n + 1 + repeats * n + 1

    def _repeats(self, count: int, gen: torch.Generator) -> Tensor:
        return torch.randint(1, self.max_repeats + 1, (count,), generator=gen)

    def episodes(self, n: int, repeats: int, count: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        return repeat_copy_episodes(n, repeats, count, self.max_repeats, self.bits, gen)
