"""scripts/copy_sg_ceiling.py: the constrained linear fits (reduced rank, diagonal) recover what they can
represent and miss what they cannot."""

from __future__ import annotations

import torch
from helpers import load_script


def data(kind: str, n: int = 3000, width: int = 32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, width, generator=g)
    if kind == "rank2":
        w = torch.randn(width, 2, generator=g) @ torch.randn(2, width, generator=g) / 4
    else:
        w = torch.diag(torch.randn(width, generator=g))
    return x, x @ w + 0.3 * torch.randn(n, width, generator=g)


def test_reduced_rank_fit_recovers_a_low_rank_map_and_rank_one_cannot():
    s = load_script("copy_sg_ceiling")
    x, y = data("rank2")
    full = s.scores(s.ridge(x, y, 2400), y[2400:])["explained"]
    two = s.scores(s.ridge(x, y, 2400, rank=2), y[2400:])["explained"]
    one = s.scores(s.ridge(x, y, 2400, rank=1), y[2400:])["explained"]
    assert two >= full - 0.005 and two > 0.8  # the right rank loses nothing (and overfits less)
    assert one < two - 0.2


def test_diagonal_fit_recovers_a_diagonal_map_and_misses_a_dense_one():
    s = load_script("copy_sg_ceiling")
    x, y = data("diagonal")
    assert s.scores(s.ridge(x, y, 2400, diagonal=True), y[2400:])["explained"] > 0.85
    x, y = data("rank2")
    assert s.scores(s.ridge(x, y, 2400, diagonal=True), y[2400:])["explained"] < 0.2


def test_output_phase_starts_at_the_delimiter_and_ends_at_the_next_episode():
    """A Copy episode with N = 3 from the zero state: read, read, read, delimiter, out, out, out."""
    s = load_script("copy_sg_ceiling")
    x = torch.zeros(1, 14, 8 + 2)
    for start in (0, 7):
        x[0, start, -1] = 1.0  # episode start
        x[0, start:start + 3, :8] = 1.0  # three vectors (all ones)
        x[0, start + 3, 8] = 1.0  # the delimiter
    phase = [s.output_phase(x[:, :at]).item() for at in range(1, 15)]
    assert phase == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1]


def test_episode_vectors_are_the_vectors_read_so_far_by_place_and_place_counts_steps():
    s = load_script("copy_sg_ceiling")
    x = torch.zeros(1, 14, 8 + 2)
    block = torch.eye(8)[:3]  # three one-hot vectors
    for start in (0, 7):
        x[0, start, -1] = 1.0
        x[0, start:start + 3, :8] = block
        x[0, start + 3, 8] = 1.0
    signed = 2 * block - 1
    for at, read in ((1, 1), (2, 2), (6, 3), (7, 3), (8, 1), (9, 2)):
        v = s.episode_vectors(x[:, :at], 3, 8).view(3, 8)
        assert torch.equal(v[:read], signed[:read]) and not v[read:].any()
    assert [s.episode_place(x[:, :at]).item() for at in (1, 4, 7, 8, 12)] == [1, 4, 7, 1, 5]
