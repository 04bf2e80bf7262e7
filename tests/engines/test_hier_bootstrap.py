"""The hierarchical engine's boundary targets with `scale_target: false` (one extra vector-Jacobian
product per boundary), against an independent autograd computation."""

from __future__ import annotations

import pytest
import torch

from seqdni.dni import BoundaryOptions, flatten_state
from seqdni.engines import Carry, HierEngine
from seqdni.nets import HierLSTM


def engine(message: str, scale_target: bool) -> HierEngine:
    torch.manual_seed(0)
    net = HierLSTM(6, embed_dim=4, hidden_size=5, tick=2, upper_hidden=3, message_size=2).double()
    upper_unroll = 2 if message == "bptt" else 4
    eng = HierEngine(net, unroll=4, upper_unroll=upper_unroll, message=message,
                     dni=BoundaryOptions(scale=0.3, scale_target=scale_target), boundaries=True).double()
    for sg in (eng.lower_sg, eng.upper_sg):
        torch.nn.init.normal_(sg.sg.net[-1].weight, std=0.3)  # M ≠ 0, so the future term matters
    return eng


def recorded_targets(eng: HierEngine) -> dict[str, list[torch.Tensor]]:
    """Every target each boundary's M is trained towards, in order."""
    seen: dict[str, list[torch.Tensor]] = {"lower": [], "upper": []}
    for name in seen:
        sg = getattr(eng, f"{name}_sg")
        learn = sg.learn_leaves

        def wrapped(*a, _learn=learn, _name=name, **kw):
            out = _learn(*a, **kw)
            seen[_name].append(out[2])
            return out

        sg.learn_leaves = wrapped
    return seen


@pytest.mark.parametrize("scale_target", [True, False])
def test_joint_boundary_targets(scale_target):
    eng = engine("bptt", scale_target)
    net, scale, n = eng.net, 0.3, 2 * 4
    x, y = torch.randint(0, 6, (2, 4)), torch.randint(0, 6, (2, 4))
    state = tuple(torch.randn_like(t, dtype=torch.float64) for t in net.init_state(2))
    seen = recorded_targets(eng)
    eng.unroll(x, y, Carry(state, boundary=True))

    leaves = [tuple(t.clone().requires_grad_() for t in part) for part in (state[:2], state[2:])]
    feats, new = net.core(x, (*leaves[0], *leaves[1]))
    ends = (new[:2], new[2:])
    with torch.no_grad():
        gs = [sg.sg(flatten_state(end)) for sg, end in zip((eng.lower_sg, eng.upper_sg), ends)]
    inner = [(g * flatten_state(end)).sum() for g, end in zip(gs, ends)]  # <M(s_{t+T}), s_{t+T}>
    for i, name in enumerate(("lower", "upper")):
        own, other = inner[i], inner[1 - i]
        j = n * net.loss(feats, y) + (1.0 if not scale_target else scale) * own + scale * other
        want = flatten_state(torch.autograd.grad(j, leaves[i], retain_graph=True))
        torch.testing.assert_close(seen[name][0], want)


def test_decoupled_lower_boundary_target_is_undiscounted():
    """`dni` message: the lower boundary's target n·∂ℓ/∂s + Jᵀ M(s_{t+T}) (the message's own
    injection enters the lower objective too, at its scale)."""
    eng = engine("dni", scale_target=False)
    net, n = eng.net, 2 * 4
    x, y = torch.randint(0, 6, (2, 4)), torch.randint(0, 6, (2, 4))
    state = tuple(torch.randn_like(t, dtype=torch.float64) for t in net.init_state(2))
    seen = recorded_targets(eng)
    eng.unroll(x, y, Carry(state, boundary=True))

    s_low = tuple(t.clone().requires_grad_() for t in state[:2])
    out, low_end = net.lower_core(x, s_low)
    ticks = net.ticks(x.size(1))
    m = net.send(out, ticks)
    u_seq, _ = net.upper(m.detach(), state[2:])
    loss = net.loss(net.read(out, state[2][-1], u_seq.detach(), ticks), y)
    with torch.no_grad():
        g_low = eng.lower_sg.sg(flatten_state(low_end))
        g_msg = eng.msg_sg.sg(m.reshape(-1, m.size(-1))).reshape(m.shape)
    j = n * loss + (g_low * flatten_state(low_end)).sum() + 0.3 * (g_msg * m).sum()
    want = flatten_state(torch.autograd.grad(j, s_low))
    torch.testing.assert_close(seen["lower"][0], want)
