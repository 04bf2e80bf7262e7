"""Decoupled feed-forward layers (`LayerEngine`): each block updates from its own synthetic gradient,
and on a linear model a linear cDNI synthetic gradient reaches the least-squares solution."""

from __future__ import annotations

import torch

from seqdni.data import Task
from seqdni.engines import LayerEngine, LayerOptions, Steps
from seqdni.nets import BlockMLP


class LinearRegression(BlockMLP):
    """A BlockMLP with a quadratic loss; cDNI reads the regression target."""

    def loss(self, out, y):
        return 0.5 * (out - y).pow(2).sum() / out.size(0)

    def condition(self, y):
        return y

    @property
    def cond_dim(self):
        return self.task.output_size


def stepper(engine, lr=None):
    groups = engine.param_groups()
    return Steps(groups, [torch.optim.Adam(g.params, lr=lr or g.lr) for g in groups])


def digits_batch(n=16):
    """Inputs and the class a fixed linear map picks for each (a task the network can learn)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 12, generator=g)
    return x, (x @ torch.randn(12, 5, generator=g)).argmax(1)


def test_blocks_below_the_last_start_unmoved_because_m_starts_at_zero():
    """M's last layer starts at zero, so the first update of every block but the last is zero."""
    torch.manual_seed(0)
    engine = LayerEngine(BlockMLP(Task("toy", input_size=12, output_size=5, classes=5), 8, 3, 3),
                         LayerOptions(hidden=4))
    before = [[p.clone() for p in b.parameters()] for b in engine.net.blocks]
    stats = engine.update(*digits_batch(), stepper(engine))
    after = [list(b.parameters()) for b in engine.net.blocks]
    assert all(torch.equal(p, q) for p, q in zip(before[0] + before[1], after[0] + after[1]))
    assert not any(torch.equal(p, q) for p, q in zip(before[2], after[2]))
    assert stats["sg/block0/pred_norm"] == 0 and stats["sg/block1/target_norm"] > 0


def test_a_block_steps_on_the_gradient_of_its_synthetic_gradient_only():
    """After one update M_0 predicts g ≠ 0; block 0's next gradient is exactly Jᵀ g / B, whatever the blocks above."""
    torch.manual_seed(1)
    task = Task("toy", input_size=12, output_size=5, classes=5)
    engine = LayerEngine(BlockMLP(task, 8, 2, 2), LayerOptions())
    steps = stepper(engine)
    x, y = digits_batch()
    engine.update(x, y, steps)
    captured = {}
    block0 = engine.net.blocks[0]
    handles = [p.register_hook(lambda g, i=i: captured.__setitem__(i, g.clone())) for i, p in
               enumerate(block0.parameters())]
    g = engine.sgs[0].predict(block0(x), batch_dim=0)
    expected = torch.autograd.grad((block0(x) * g).sum() / x.size(0), list(block0.parameters()))
    engine.update(x, y, steps)
    for h in handles:
        h.remove()
    assert g.abs().sum() > 0
    for i, e in enumerate(expected):
        torch.testing.assert_close(captured[i], e)


def test_backprop_and_bootstrap_targets_train():
    torch.manual_seed(0)
    task = Task("toy", input_size=12, output_size=5, classes=5)
    x, y = digits_batch(64)
    for dni in (None, LayerOptions(target="bootstrap", lr=0.01), LayerOptions(conditional=True, lr=0.01)):
        engine = LayerEngine(BlockMLP(task, 32, 3, 3), dni, lr=3e-3)
        steps = stepper(engine)
        first = engine.update(x, y, steps)["train/loss"]
        for _ in range(150):
            last = engine.update(x, y, steps)
        assert last["train/loss"] < 0.5 * first, dni
        if dni is not None:  # the diagnostics compare every M with the true gradient
            assert {"sg/block0/true_cosine", "sg/block1/true_cosine", "sg/block1/loss"} <= set(last)


def test_linear_sg_on_a_linear_model_reaches_the_least_squares_solution():
    """Czarnecki et al. 2017: a linear synthetic gradient (here conditioned on the target) on a linear
    model with a quadratic loss converges to the true solution, and M to the true gradient."""
    torch.manual_seed(0)
    n, d, o = 64, 4, 3
    x = torch.randn(n, d)
    y = x @ torch.randn(d, o) + 0.1 * torch.randn(n, o)
    xa = torch.cat([x, torch.ones(n, 1)], 1)
    fit = xa @ torch.linalg.lstsq(xa, y).solution
    least = 0.5 * (fit - y).pow(2).sum() / n
    net = LinearRegression(Task("regression", input_size=d, output_size=o), 6, depth=1, blocks=2, activation="none")
    engine = LayerEngine(net, LayerOptions(lr=0.01, clip=0.0, conditional=True), lr=0.003)
    steps = stepper(engine)
    for _ in range(1200):
        stats = engine.update(x, y, steps)
    assert stats["train/loss"] < least * 1.001
    assert (net(x) - fit).abs().max() < 0.01
    assert stats["sg/block0/true_cosine"] > 0.98
