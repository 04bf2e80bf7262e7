"""StreamBatches: B parallel streams cut into windows, sharded over ranks, resumable mid-epoch."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from seqdni.data import StreamBatches

N, B, W = 50, 3, 4  # L = 16 ids a row; 15 inputs a row (the last id is only a target)


def all_batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_stream_rows_layout():
    sb = StreamBatches(torch.arange(N), B, W)
    L = N // B
    assert sb.rows.shape == (B, L)
    for b in range(B):
        assert torch.equal(sb.rows[b], torch.arange(b * L, (b + 1) * L))


def test_stream_batches_windows_and_targets():
    sb = StreamBatches(torch.arange(N), B, W, drop_last=True)
    L = N // B
    batches = all_batches(sb)
    assert len(sb) == len(batches) == (L - 1) // W == 3
    for i, (x, y) in enumerate(batches):
        assert x.dtype == y.dtype == torch.long
        expect = torch.stack([torch.arange(b * L + i * W, b * L + i * W + W) for b in range(B)])
        assert torch.equal(x, expect)
        assert torch.equal(x, sb.rows[:, i * W : i * W + W])
        assert torch.equal(y, x + 1)
    for (x0, _), (x1, _) in pairwise(batches):  # each row continues where it stopped
        assert torch.equal(x1[:, 0], x0[:, -1] + 1)


def test_stream_batches_keep_last_window_for_eval():
    sb = StreamBatches(torch.arange(N), B, W, drop_last=False)
    L = N // B
    batches = all_batches(sb)
    assert len(sb) == len(batches) == -(-(L - 1) // W) == 4
    assert [x.shape[1] for x, _ in batches] == [4, 4, 4, 3]
    x = torch.cat([x for x, _ in batches], 1)
    y = torch.cat([y for _, y in batches], 1)
    assert torch.equal(x, sb.rows[:, :-1]) and torch.equal(y, sb.rows[:, 1:])
    # Every id but the last of each row (and the N % B dropped ones) is an input exactly once.
    assert x.numel() == B * (L - 1)


@pytest.mark.parametrize("n", [48, 49, 51])
def test_stream_batches_exact_fit(n):
    # (L - 1) divisible by W or not: drop_last differs only when it is not.
    L = n // B
    keep, drop = StreamBatches(torch.arange(n), B, W, False), StreamBatches(torch.arange(n), B, W, True)
    assert len(drop) == (L - 1) // W and len(keep) == -(-(L - 1) // W)
    assert all(x.shape == (B, W) for x, _ in drop)


def test_stream_batches_sharding():
    world = 2
    whole = StreamBatches(torch.arange(N), B * world, W)
    shards = [StreamBatches(torch.arange(N), B, W, rank=r, world_size=world) for r in range(world)]
    assert all(s.rows.shape == (B, N // (B * world)) for s in shards)
    assert torch.equal(torch.cat([s.rows for s in shards]), whole.rows)
    a, b = (set(s.rows.flatten().tolist()) for s in shards)
    assert not a & b
    assert a | b == set(whole.rows.flatten().tolist())
    assert all(len(s) == len(whole) for s in shards)
    per_rank = [all_batches(s) for s in shards]
    for i, ((x0, y0), (x1, y1), (xw, yw)) in enumerate(zip(*per_rank, all_batches(whole), strict=True)):
        assert torch.equal(torch.cat([x0, x1]), xw) and torch.equal(torch.cat([y0, y1]), yw), i


def test_stream_batches_resume_mid_epoch():
    ids = torch.arange(N)
    full = all_batches(StreamBatches(ids, B, W, drop_last=False))
    sb = StreamBatches(ids, B, W, drop_last=False)
    it = iter(sb)
    first_two = [next(it), next(it)]
    assert_same_batches(first_two, full[:2])
    state = sb.state_dict()
    assert state == {"next_batch": 2}

    fresh = StreamBatches(ids, B, W, drop_last=False)
    fresh.load_state_dict(state)
    assert_same_batches(all_batches(fresh), full[2:])
    assert fresh.state_dict() == {"next_batch": len(fresh)}
    assert_same_batches(all_batches(fresh), full)  # the next epoch starts at 0


def test_stream_batches_state_at_end_of_epoch_restarts():
    ids = torch.arange(N)
    sb = StreamBatches(ids, B, W)
    full = all_batches(sb)
    state = sb.state_dict()
    assert state == {"next_batch": len(sb)}
    fresh = StreamBatches(ids, B, W)
    fresh.load_state_dict(state)
    assert_same_batches(all_batches(fresh), full)
    fresh.load_state_dict({})  # no key: from the start
    assert_same_batches(all_batches(fresh), full)


def test_error_too_few_ids_for_rows():
    with pytest.raises(ValueError, match=r"7 ids cannot fill 4 rows.*lower the batch size"):
        StreamBatches(torch.arange(7), batch_size=2, window=4, world_size=2)
