"""Digit streams of the two-timescale task: A's and B's targets, the batches, argument errors."""

from __future__ import annotations

import pytest
import torch

from seqdni.data import DigitStreams
from seqdni.data.digits import digit_stream, digit_targets


def test_digit_targets_on_hand_made_streams():
    d = torch.tensor([[3, 1, 2, 3, 3, 3, 0, 8], [0, 0, 5, 7, 3, 2, 1, 3]])
    y = digit_targets(d, 2)
    # segment ends (t = 1, 3, 5, 7): odd digits in the last 2 steps; 3s in the last 4 steps
    assert y[0, 1::2, 0].tolist() == [2, 1, 2, 0] and y[0, 1::2, 1].tolist() == [1, 2, 3, 2]
    assert y[1, 1::2, 0].tolist() == [0, 2, 1, 2] and y[1, 1::2, 1].tolist() == [0, 0, 1, 2]
    assert (y[:, 0::2] == -1).all()


def test_digit_targets_match_a_direct_count():
    d = digit_stream(3, 64, seed=5).long()
    y = digit_targets(d, 4)
    for r in range(3):
        for t in range(64):
            if (t + 1) % 4:
                assert y[r, t].tolist() == [-1, -1]
                continue
            seg, window = d[r, t - 3 : t + 1].tolist(), d[r, max(0, t - 15) : t + 1].tolist()
            assert y[r, t].tolist() == [sum(v % 2 for v in seg), window.count(3)]


def test_digit_streams_batches_and_errors():
    dm = DigitStreams(period=2, batch_size=3, window=8, train_length=32, eval_batch_size=2, eval_length=20,
                      eval_window=6, seed=1)
    batches = list(dm.train_dataloader())
    assert len(batches) == 4 and all(x.shape == (3, 8) and y.shape == (3, 8, 2) for x, y in batches)
    assert torch.equal(torch.cat([x for x, _ in batches], 1), digit_stream(3, 32, 1).long())  # rows continue
    val, test = list(dm.val_dataloader()), list(dm.test_dataloader())
    assert [x.size(1) for x, _ in val] == [6, 6, 6, 2] and not torch.equal(val[0][0], test[0][0])
    assert dm.task.name == "two-timescale" and dm.task.symbols == list("0123456789")
    with pytest.raises(ValueError, match=r"data.window \(6\) must be a multiple of T² = 4"):
        DigitStreams(period=2, window=6)
    with pytest.raises(ValueError, match="data.eval_window"):
        DigitStreams(period=4, eval_window=6)
