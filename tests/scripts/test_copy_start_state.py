"""scripts/copy_start_state.py: the recurrence with each kind of episode start, and a run through the CLI."""

from __future__ import annotations

import torch
from helpers import ROOT, load_script, run_python

from seqdni.data import CopyDataModule
from seqdni.nets import build_network

script = load_script("copy_start_state")


def streams():
    dm = CopyDataModule(level=2, resets=True, seed=3)
    x, _ = dm.val_dataloader().grid(3, 12)
    torch.manual_seed(0)
    net = build_network(dm.task, 5, 7).double()
    xs, resets = net.split_resets(x.double())
    assert resets[:, 1:].any()  # episodes start inside the span
    return net, net.encode(xs), resets


def run(mode, net, e, resets, s0):
    return script.recurrence(mode)(net, e, s0, resets)


def test_cut_carries_the_values_and_stops_the_gradient_at_each_episode_start():
    net, e, resets = streams()
    s0 = tuple(torch.randn(1, 3, 7, dtype=torch.float64, requires_grad=True) for _ in range(2))
    out_cut, _ = run("cut", net, e, resets, s0)
    out_carry, _ = run("carry", net, e, resets, s0)
    torch.testing.assert_close(out_cut, out_carry, rtol=0, atol=0)
    last_start = int(resets.nonzero()[:, 1].max())  # the latest episode start in any row
    row = int(resets[:, last_start].nonzero()[0, 0])
    g_cut = torch.autograd.grad(out_cut[row, last_start:].sum(), s0)
    g_carry = torch.autograd.grad(out_carry[row, last_start:].sum(), s0)
    assert all(g[:, row].abs().max() == 0 for g in g_cut)  # nothing after the start reaches s0
    assert any(g[:, row].abs().max() > 0 for g in g_carry)


def test_learned_starts_from_zero_like_the_shipped_core_and_trains_its_start():
    net, e, resets = streams()
    net.start_h = torch.nn.Parameter(torch.zeros(7, dtype=torch.float64))
    net.start_c = torch.nn.Parameter(torch.zeros(7, dtype=torch.float64))
    s0 = net.init_state(3)
    out, _ = run("learned", net, e, resets, s0)
    shipped, _ = net._resetting_recurrence(e, s0, resets)
    torch.testing.assert_close(out, shipped, rtol=1e-12, atol=1e-14)
    g_h, g_c = torch.autograd.grad(out.sum(), (net.start_h, net.start_c))
    assert g_h.abs().max() > 0 and g_c.abs().max() > 0


def test_a_run_through_the_cli_and_a_bad_mode(tmp_path):
    res = run_python(["scripts/copy_start_state.py", "learned", "--config", "configs/copy/bptt5.yaml",
                      "--trainer.max_steps=6", "--model.init_args.hidden_size=8",
                      f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false"], ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    ckpt = next(tmp_path.rglob("latest.ckpt"))
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert any(k.endswith("start_h") for k in state)  # the learned start is part of the model
    bad = run_python(["scripts/copy_start_state.py", "sideways"], ROOT)
    assert bad.returncode != 0 and "usage:" in bad.stderr
