"""`episodic`: a bootstrapped target stops at an episode end, as a TD target at a terminal state:
target_t = n·∂ℓ/∂s_t + γ·[no episode end in the unroll]·Jᵀ M(s_{t+T}), the core still gets α·M."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import Oracle, char_lstm, grads, randomize, unroll_all

from seqdni.dni import detach_state, flatten_state, unflatten_state
from seqdni.engines import DNIOptions, FlatEngine
from seqdni.engines.probe import probe
from seqdni.nets import BitLSTM

T, B, BITS = 3, 4, 3
ENDS = {0: [4], 1: [1], 2: [], 3: [5, 8]}  # stream -> steps that end an episode (second unroll: steps 3..5)


def bit_data(steps: int = 2 * T, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (B, steps, BITS + 1), generator=g).double()
    y = torch.cat([torch.randint(0, 2, (B, steps, BITS), generator=g).double(),
                   torch.ones(B, steps, 1, dtype=torch.float64), torch.zeros(B, steps, 1, dtype=torch.float64)], -1)
    for row, ends in ENDS.items():
        for step in ends:
            if step < steps:
                y[row, step, -1] = 1.0
    return x, y


def engine(gamma: float, episodic: bool, scale: float = 0.3) -> FlatEngine:
    torch.manual_seed(0)
    e = FlatEngine(BitLSTM(BITS + 1, BITS, embed_dim=5, hidden_size=6), T,
                   DNIOptions(scale=scale, discount=gamma, episodic=episodic)).double()
    randomize(e.boundary.sg, std=0.3)
    randomize(e.net, seed=3, std=0.3)
    return e


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.3])
def test_target_keeps_its_future_term_only_where_no_episode_ended(gamma):
    x, y = bit_data()
    e = engine(gamma, episodic=True)
    outs = unroll_all(e, x, y, T)

    # independently: the second unroll's local gradient and Jᵀ M(s_{t+T}), by autograd alone
    s_t = detach_state(outs[0].carry.state, requires_grad=True)
    out, s_end = e.net.core(x[:, T:], s_t)
    local = flatten_state(torch.autograd.grad(e.net.loss(out, y[:, T:]), s_t, retain_graph=True))
    m = e.boundary.sg(flatten_state(s_end)).detach()
    jt_m = flatten_state(torch.autograd.grad(s_end, s_t, grad_outputs=unflatten_state(m, s_end)))
    going_on = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64).unsqueeze(1)  # rows 0, 3 end in 3..5
    torch.testing.assert_close(outs[1].target, B * T * local + gamma * going_on * jt_m, rtol=1e-10, atol=1e-12)
    assert jt_m[[0, 3]].abs().max() > 1e-6  # there was a future term to drop

    # the core's gradient is the same with or without `episodic`: only M's target changes
    plain = engine(gamma, episodic=False)
    plain.load_state_dict(e.state_dict())
    e.zero_grad(set_to_none=True)
    unroll_all(e, x, y, T)
    unroll_all(plain, x, y, T)
    for a, b in zip(grads(e.net.parameters()), grads(plain.net.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_current_episode_masks_the_losses_after_the_first_end():
    x, y = bit_data(steps=10)
    masked = BitLSTM(BITS + 1, BITS).current_episode(y)
    for row, ends in ENDS.items():
        last = ends[0] if ends else 9  # the first episode's last step is still scored
        assert masked[row, : last + 1, BITS].eq(1).all() and masked[row, last + 1 :, BITS].eq(0).all()
    assert torch.equal(masked[..., :BITS], y[..., :BITS]) and torch.equal(masked[..., -1], y[..., -1])


def test_probe_counts_the_current_episode_only():
    """With `episodic` the probe's truth is the gradient of the episode under way's losses: here, with
    M set to that truth, the probe's cosine is 1; without `episodic` it is not."""
    x, y = bit_data(steps=T + 4 * T)
    e = engine(1.0, episodic=True)
    truth_y = torch.cat([y[:, :T], e.net.current_episode(y[:, T:])], dim=1)
    s = detach_state(e.net.core(x[:, :T], e.net.init_state(B))[1], requires_grad=True)
    out, _ = e.net.core(x[:, T:], s)
    truth = flatten_state(torch.autograd.grad(e.net.loss(out, truth_y[:, T:]) * 4, s)) * B * T
    oracle = copy.deepcopy(e)
    oracle.boundary.sg = Oracle([(flatten_state(s).detach(), truth)])  # M answers the truth at this boundary
    assert probe(oracle, x, y, T)["sg/probe_cosine"] > 1 - 1e-9
    oracle.dni.episodic = False
    assert probe(oracle, x, y, T)["sg/probe_cosine"] < 0.999


def test_episodic_needs_a_task_with_episodes():
    with pytest.raises(ValueError, match="model.dni.episodic needs a task with episodes"):
        FlatEngine(char_lstm(), T, DNIOptions(episodic=True))


def test_with_resets_a_target_stops_at_the_episode_end_without_episodic():
    """A network that resets its state at each episode start (`data.resets`): J is zero for a stream
    whose state is reset inside the unroll, so without `episodic` its target keeps no future term (a
    different M leaves it unchanged), while the other streams' targets still bootstrap on M. An
    episode that ends on the unroll's last step resets only at the next unroll's first step: there
    the target still reads M at the boundary, which `episodic` would drop."""
    x, y = bit_data()
    starts = torch.zeros(B, x.size(1), 1, dtype=torch.float64)
    for row, ends in ENDS.items():
        for step in ends:
            if step + 1 < x.size(1):
                starts[row, step + 1] = 1.0
    x = torch.cat([x, starts], dim=-1)

    def second_target(m_seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        net = BitLSTM(BITS + 1, BITS, embed_dim=5, hidden_size=6, resets=True)
        e = FlatEngine(net, T, DNIOptions(scale=0.3, discount=1.0)).double()
        randomize(e.net, seed=3, std=0.3)
        randomize(e.boundary.sg, seed=m_seed, std=0.3)
        return unroll_all(e, x, y, T)[1].target

    a, b = second_target(5), second_target(6)
    torch.testing.assert_close(a[0], b[0], rtol=1e-12, atol=1e-14)  # stream 0 resets at step 5, inside 3..5
    for row in (1, 2, 3):  # no reset inside 3..5 (stream 3's episode ends on step 5: it resets at step 6)
        assert (a[row] - b[row]).abs().max() > 1e-6
