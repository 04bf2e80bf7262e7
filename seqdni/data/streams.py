"""Resumable batch loaders and contiguous streams for truncated BPTT."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from seqdni.errors import UserError


class ResumableBatches:
    """A sized loader whose position in the epoch is Lightning-stateful (`state_dict`): a
    checkpoint taken mid-epoch resumes at the next batch. Lightning does not prefetch from a
    loader with a length, so "yielded" equals "consumed" when a checkpoint is cut.

    Subclasses set `self.n` (batches per epoch), implement `batch(i)`, and may override
    `start_epoch()`, called before batch 0 of a fresh (not a resumed) epoch.
    """

    def __init__(self, n: int):
        self.n = n
        self._start = self._pos = 0

    def __len__(self) -> int:
        return self.n

    def start_epoch(self) -> None:
        pass

    def batch(self, i: int):
        raise NotImplementedError

    def __iter__(self) -> Iterator:
        start, self._start = self._start, 0
        if start == 0:
            self.start_epoch()
        self._pos = start
        for i in range(start, self.n):
            self._pos = i + 1
            yield self.batch(i)

    def state_dict(self) -> dict:
        return {"next_batch": self._pos}

    def load_state_dict(self, state: dict) -> None:
        nxt = int(state.get("next_batch", 0))
        self._start = self._pos = nxt if nxt < self.n else 0


class StreamBatches(ResumableBatches):
    """Batches of B contiguous streams, in order, so a recurrent state can be carried.

    A split of N ids is cut into B rows of L = N // B ids (the remainder is dropped);
    batch i is a window of W columns of every row, and its targets are shifted by one::

        stream  t0 t1 ... t(L-1) | tL ... t(2L-1) | ... | t((B-1)L) ... t(BL-1)
        rows    row 0 = t0..t(L-1), row 1 = tL..t(2L-1), ...   shape (B, L)
        batch i x = rows[:, iW : iW+W]      y = rows[:, iW+1 : iW+W+1]

    Row b of batch i+1 continues row b of batch i. With `drop_last` (training) every
    batch has exactly W columns; otherwise the last, shorter window is kept so that
    evaluation covers the whole split but for fewer than B ids.

    The position within the epoch is resumable (`ResumableBatches`).
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, window: int, drop_last: bool = True,
                 rank: int = 0, world_size: int = 1):
        rows = batch_size * world_size
        length = ids.numel() // rows
        if length < 2:
            raise UserError(f"{ids.numel()} ids cannot fill {rows} rows of at least 2 ids; lower the batch size")
        # Each rank owns a disjoint block of rows: its own part of the stream.
        self.rows = ids[: rows * length].view(rows, length)[rank * batch_size : (rank + 1) * batch_size]
        self.window = window
        span = length - 1  # the last id of a row is only ever a target
        super().__init__(span // window if drop_last else -(-span // window))

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = i * self.window
        b = min(a + self.window, self.rows.size(1) - 1)
        return self.rows[:, a:b].long(), self.rows[:, a + 1 : b + 1].long()
