"""A recurrent state as one (batch, features) matrix: what M reads and predicts."""

from __future__ import annotations

import torch
from helpers import B

from seqdni.dni import flatten_state, unflatten_state


def test_state_flattening_round_trips_for_tuples_and_tensors():
    h, c = torch.randn(2, B, 3), torch.randn(2, B, 3)
    flat = flatten_state((h, c))
    assert flat.shape == (B, 12)
    assert torch.equal(flat[1], torch.cat([h[:, 1].reshape(-1), c[:, 1].reshape(-1)]))
    h2, c2 = unflatten_state(flat, (h, c))
    assert torch.equal(h2, h) and torch.equal(c2, c)
    g = torch.randn(B, 5)  # a GRU-like single tensor with batch first
    assert torch.equal(unflatten_state(flatten_state(g, 0), g, 0), g)
