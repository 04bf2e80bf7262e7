"""scripts/copy_credit.py: the gradient truncation drops, and DNI's stand-in for it, in the weights."""

from __future__ import annotations

import lightning as L
import torch
from helpers import load_script

from seqdni.data import CopyDataModule
from seqdni.engines import DNIOptions
from seqdni.training import SeqModel


def small_copy_model() -> SeqModel:
    L.seed_everything(3, verbose=False)
    task = CopyDataModule(resets=True).task
    lm = SeqModel(task, window=60, unroll=2, embed_dim=4, hidden_size=8,
                  dni=DNIOptions(scale=0.3, discount=1.0, episodic=True, squash=True))
    for p in lm.engine.boundary.parameters():  # M starts at zero; any M will do here
        torch.nn.init.normal_(p, std=0.1)
    return lm


def test_the_dropped_gradient_and_the_unroll_gradient_add_up_to_bptt_through_the_boundary():
    script, lm = load_script("copy_credit"), small_copy_model()
    net, T, K = lm.net, 2, 6
    (x, y), level = script.streams(lm, {"CopyDataModule": {"level": 4}}, rows=4, span=10 + (K + 1) * T, seed=5)
    assert level == 4
    with torch.no_grad():
        _, start = net.core(x[:, :8], net.init_state(4))
    g, end = script.unroll_gradients(lm, x, y, start, at=10, K=K)

    params = [p for p in net.parameters() if p.requires_grad]
    ahead = net.current_episode(y[:, 10 : 10 + K * T])

    def future_loss(s):  # the rest of the episode under way at the boundary, from state s
        total = 0.0
        for j in range(K):
            out, s = net.core(x[:, 10 + j * T : 12 + j * T], s)
            total = total + net.loss(out, ahead[:, j * T : (j + 1) * T])
        return total

    n = 4 * T
    out, s_end = net.core(x[:, 8:10], start)
    full = torch.autograd.grad(n * (net.loss(out, y[:, 8:10]) + future_loss(s_end)), params, allow_unused=True)
    direct = torch.autograd.grad(n * future_loss(tuple(t.detach() for t in s_end)), params, allow_unused=True)

    def flat(gs):
        return torch.cat([(q if q is not None else torch.zeros_like(p)).flatten() for q, p in zip(gs, params)])

    # BPTT's gradient = the unroll's own + what flows back through s_t (truncation drops it) + the future unrolls'
    torch.testing.assert_close(g["in"] + g["miss"] + flat(direct), flat(full), rtol=1e-4, atol=1e-6)
    assert g["miss"].norm() > 0 and g["sg"].norm() > 0 and g["shuffled"].norm() > 0
    torch.testing.assert_close(tuple(end), tuple(t.detach() for t in s_end))


def test_the_summary_scores_an_injection_that_equals_the_dropped_gradient_as_aligned():
    script = load_script("copy_credit")
    torch.manual_seed(0)
    per = []
    for _ in range(20):
        miss, noise = torch.randn(50), torch.randn(50)
        per.append({"in": torch.randn(50), "miss": miss, "sg": miss.clone(), "shuffled": noise,
                    "m": torch.randn(3, 4), "delta": torch.randn(3, 4)})
    out = script.summarise(per, dni=True, sizes=[1, 10])
    assert out["cosines"]["1"]["sg_miss"]["mean"] > 0.999 and out["cosines"]["10"]["sg_miss"]["blocks"] == 2
    assert abs(out["cosines"]["1"]["shuffled_miss"]["mean"]) < 0.2  # unrelated directions
    assert abs(out["best_factor_on_sg"] - 1.0) < 1e-5
