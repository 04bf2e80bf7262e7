"""The LSTM networks: the step-by-step core (what DNI + Aux reads) is the fused core."""

from __future__ import annotations

import pytest
import torch
from helpers import B, T, char_lstm, random_ids


def test_core_steps_equals_the_fused_core_and_returns_every_state():
    net = char_lstm()
    x, _ = random_ids(T)
    s0 = tuple(torch.randn_like(t) for t in net.init_state(B))
    out, s_end = net.core(x, s0)
    out_s, s_end_s, (h, c) = net.core_steps(x, s0)
    torch.testing.assert_close(out_s, out, rtol=1e-12, atol=1e-14)
    for a, b in zip(s_end_s, s_end):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for j in range(T):  # rows j·B .. (j+1)·B are the state after j + 1 steps
        h_j, c_j = net.core(x[:, : j + 1], s0)[1]
        torch.testing.assert_close(h[:, j * B : (j + 1) * B], h_j, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(c[:, j * B : (j + 1) * B], c_j, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("layers", [1, 2])
def test_step_states_from_the_fused_outputs_are_core_steps_states(layers):
    """What DNI + Aux reads of the current unroll: every step's (h, c), from the fused core's outputs."""
    net = char_lstm(layers=layers)
    x, _ = random_ids(T)
    s0 = tuple(torch.randn_like(t) for t in net.init_state(B))
    out, _ = net.core(x, s0)
    h, c = net.step_states(x, s0, out)
    want_h, want_c = net.core_steps(x, s0)[2]
    torch.testing.assert_close(h, want_h, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(c, want_c, rtol=1e-12, atol=1e-14)
    assert not h.requires_grad and not c.requires_grad
