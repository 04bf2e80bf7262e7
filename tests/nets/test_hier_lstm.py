"""The hierarchical network: the upper core ticks every k characters, the tick phase carries, and the
messages and features are indexed on the network's device."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from helpers import B, hier_lstm, random_ids, random_state
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


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


def reference_send_read(net, out, u_prev, u_seq, phase):
    """The messages and features written plainly: Python lists of the tick positions and, for each step,
    of the number of ticks up to it."""
    ticks = [t for t in range(out.size(1)) if (phase + t + 1) % net.tick == 0]
    latest = [sum(s <= t for s in ticks) for t in range(out.size(1))]
    u_all = torch.cat([u_prev.unsqueeze(1), u_seq], dim=1)
    return torch.tanh(net.message(out[:, ticks])), torch.cat([out, u_all[:, latest]], dim=-1)


@pytest.mark.parametrize("tick", [1, 3, 4])
def test_send_and_read_are_the_plain_reference_bit_for_bit(tick):
    """Messages, features and every gradient equal the reference exactly, for every phase and chunk
    length (ticks given as `ticks` returns them, or as a list)."""
    net = hier_lstm(tick=tick)
    g = torch.Generator().manual_seed(2)
    for steps in (1, 5, 8, 12):
        for phase in range(tick):
            k = len(net.ticks(steps, phase))
            out, u_prev, u_seq = (torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
                                  for shape in ((B, steps, 6), (B, 4), (B, k, 4)))
            leaves = (out, u_prev, u_seq, *net.message.parameters())
            want = reference_send_read(net, out, u_prev, u_seq, phase)
            cot = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in want]
            want_grads = torch.autograd.grad(want, leaves, cot, allow_unused=True)
            for ticks in (net.ticks(steps, phase), list(net.ticks(steps, phase))):
                got = net.send(out, ticks), net.read(out, u_prev, u_seq, ticks)
                assert all(torch.equal(a, b) for a, b in zip(got, want))
                got_grads = torch.autograd.grad(got, leaves, cot, allow_unused=True)
                assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(got_grads, want_grads))


class TensorDevices(TorchDispatchMode):
    """The device of every tensor an operation reads or makes."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.seen |= {(str(func), t.device.type) for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)}
        return out


class HostIndices(TorchFunctionMode):
    """Indexing with Python sequences (lists, ranges), which torch turns into a tensor on the host and
    copies over."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__getitem__:
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            self.seen += [i for i in index if isinstance(i, Sequence)]
        return func(*args, **(kwargs or {}))


def test_send_and_read_make_their_indices_on_the_networks_device():
    """No host-to-device copy in the unroll (a blocking one on a GPU): on the meta device, sending and
    reading touch no tensor elsewhere, and index with no Python sequences."""
    net = hier_lstm(tick=4).to("meta")
    out, u_prev = torch.empty(B, 12, 6, device="meta"), torch.empty(B, 4, device="meta")
    for phase in range(4):
        ticks = net.ticks(12, phase)
        with TensorDevices() as devices, HostIndices() as lists:
            net.read(out, u_prev, torch.empty(B, len(ticks), 4, device="meta"), ticks)
            net.send(out, ticks)
        assert {dev for _, dev in devices.seen} == {"meta"}, sorted(devices.seen)
        assert not lists.seen
