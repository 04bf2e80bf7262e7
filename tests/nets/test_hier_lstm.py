"""The hierarchical network: the upper core ticks every k characters, and the tick phase carries."""

from __future__ import annotations

import torch
from helpers import B, hier_lstm, random_ids, random_state


def test_upper_core_ticks_every_k_steps_and_the_phase_carries():
    net = hier_lstm(tick=4)
    calls = []
    net.upper.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].size(1)))
    x, _ = random_ids(10)
    state = random_state(net)
    feats, new = net.core(x, state)
    assert feats.shape == (B, 10, 6 + 4) and calls == [2]  # ticks after characters 4 and 8
    u = feats[..., 6:]
    changes = [t for t in range(10) if not torch.equal(u[:, t], u[:, t - 1] if t else state[2][-1])]
    assert changes == [3, 7]
    assert torch.equal(u[:, 7], new[2][-1]) and torch.equal(u[:, 9], u[:, 7])
    # the same stream in uneven chunks, with the phase carried, gives the same features
    s, phase, parts = state, 0, []
    for a, b in ((0, 3), (3, 4), (4, 9), (9, 10)):
        f, s = net.core(x[:, a:b], s, phase)
        phase, parts = (phase + b - a) % 4, parts + [f]
    torch.testing.assert_close(torch.cat(parts, 1), feats, rtol=0, atol=1e-12)
