"""Copy and Repeat Copy (Graves et al. 2014; DNI paper Section 3.1): episodes generated on the fly.

An episode of Copy at length N (8-bit vectors, channels listed left to right)::

    step        1 .. N          N+1         N+2 .. 2N+1
    x  bits     v_1 .. v_N      0           0
    x  delim    0               1           0
    y  bits     -               -           v_1 .. v_N        (mask 1 on these steps only)

Repeat Copy adds an input channel with the repeat count R / max_repeats on the delimiter
step and an output end-marker bit: the network outputs v_1..v_N R times, then a step with
only the end marker set; the end-marker bit is scored (as 0) on every output step before.

Targets follow `seqdni.nets.BitLSTM`: y is (T, bits [+ end] + 2): the target bits, the
loss mask, and an episode-end flag on the last step of each episode.

Each batch row is one endless stream of episodes (after a random blank lead-in, so rows
are out of phase), cut into windows of W columns: an episode cut by a window continues in
the next batch, and the network's state is carried across, so truncation boundaries fall
inside episodes. The curriculum level N lives in the data module; `Curriculum` raises it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from seqdni.data.streams import ResumableBatches
from seqdni.errors import UserError

Draw = Callable[[torch.Generator, int], Tensor]  # (generator, steps) -> whole episodes, >= steps rows


def copy_episodes(n: int, count: int, bits: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """`count` Copy episodes of 2n + 1 steps: x (count, 2n+1, bits+1), y (count, 2n+1, bits+2)."""
    if n < 1:
        raise UserError(f"a copy episode needs at least one vector, got n={n}")
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
        raise UserError(f"a repeat-copy episode needs n >= 1 and 1 <= repeats <= {max_repeats}, "
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
    checkpoint resumes the exact stream. With `lookahead` L, a batch's targets run L steps past its
    window: they are the first targets of the next batch, already drawn. With `whole`, a row's
    window ends after the last episode that ends inside it, padded with blank unscored steps, and
    the episode it would have cut starts the row's next window (one longer than the window is cut).
    """

    def __init__(self, draw: Draw, channels: int, x_dim: int, batch_size: int, window: int, length: int,
                 seed: int, max_lead_in: int, lookahead: int = 0, whole: bool = False):
        super().__init__(length)
        if whole and lookahead:
            raise UserError("data.whole_episodes pads each window after its last whole episode, so there are no "
                            "targets ahead of it to read; set data.lookahead to 0 or data.whole_episodes to false")
        self.draw, self.channels, self.x_dim = draw, channels, x_dim
        self.batch_size, self.window, self.max_lead_in = batch_size, window, max_lead_in
        self.lookahead, self.whole = lookahead, whole
        self.gen = torch.Generator().manual_seed(seed)
        self.refill = 4
        self.pending: list[Tensor] = []

    def _fill(self, row: Tensor) -> Tensor:
        short = self.window + self.lookahead - row.size(0)
        if short <= 0:
            return row
        return torch.cat([row, self.draw(self.gen, short + (self.refill - 1) * self.window)])

    def start_epoch(self) -> None:
        """A fresh epoch: every row starts with a random blank lead-in."""
        leads = torch.randint(0, self.max_lead_in + 1, (self.batch_size,), generator=self.gen).tolist()
        self.pending = [torch.zeros(k, self.channels) for k in leads]

    def _cut(self, row: Tensor) -> int:
        """Where the row's window ends: after its last episode that ends inside it (`whole`; the episode-end
        flag is the last channel), else, or when no episode ends inside it, the window's last column."""
        ends = row[: self.window, -1].nonzero() if self.whole else ()
        return int(ends[-1, 0]) + 1 if len(ends) else self.window

    def batch(self, i: int) -> tuple[Tensor, Tensor]:
        rows = [self._fill(r) for r in self.pending]
        cuts = [self._cut(r) for r in rows]
        self.pending = [r[c:] for r, c in zip(rows, cuts)]
        batch = torch.stack([torch.cat([r[:c], r.new_zeros(self.window - c, self.channels)]) if c < self.window
                             else r[: self.window + self.lookahead] for r, c in zip(rows, cuts)])
        return batch[:, : self.window, : self.x_dim], batch[..., self.x_dim :]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "generator": self.gen.get_state(),
                "pending": [r.clone() for r in self.pending]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "generator" in state:
            self.gen.set_state(state["generator"])
        self.pending = list(state.get("pending", []))
        if self._start and len(self.pending) != self.batch_size:
            raise UserError(f"the checkpoint's stream has {len(self.pending)} rows, data.batch_size is "
                             f"{self.batch_size}; resume with the batch size it was saved with")


class FixedEpisodes:
    """Evaluation batches: the same episodes at every validation (a fixed seed), at the
    level current when iterated. Rows start at step 0; the trailing unfinished episode of
    each row is not scored (its mask is cleared), so `bits_error` counts whole episodes.
    The first `warmup` episodes of each row run unscored and uncounted (mask and episode-end
    flag cleared): they take the state from zero into the mid-stream regime of training."""

    def __init__(self, draw: Draw, x_dim: int, rows: int, window: int, batches: int, seed: int, warmup: int = 0):
        self.draw, self.x_dim = draw, x_dim
        self.rows, self.window, self.batches, self.seed, self.warmup = rows, window, batches, seed, warmup

    def __len__(self) -> int:
        return self.batches

    def grid(self, rows: int, span: int) -> tuple[Tensor, Tensor]:
        gen = torch.Generator().manual_seed(self.seed)
        out = []
        for _ in range(rows):
            row = self.draw(gen, span)[:span].clone()
            ends = row[:, -1].nonzero()
            row[ends[-1, 0] + 1 if len(ends) else 0 :, -2] = 0.0  # cut episode: no loss mask
            if self.warmup:  # warm-up episodes: neither scored nor counted
                row[: ends[self.warmup - 1, 0] + 1 if len(ends) >= self.warmup else span, -2:] = 0.0
            out.append(row)
        g = torch.stack(out)
        return g[..., : self.x_dim], g[..., self.x_dim :]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self.grid(self.rows, self.window * self.batches)
        for i in range(self.batches):
            cols = slice(i * self.window, (i + 1) * self.window)
            yield x[:, cols], y[:, cols]
