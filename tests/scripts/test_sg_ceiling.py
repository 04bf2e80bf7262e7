"""scripts/sg_ceiling.py: at every boundary it collects the state, the target M learns there and M's
prediction, aligned (n-step and pending targets arrive n - 1 unrolls late), and its ridge fit is the
best linear map."""

from __future__ import annotations

import json
import re

import pytest
import torch
from helpers import ROOT, load_script, run_cli, run_python, write_ptb

from seqdni.data.task import Task
from seqdni.dni import flatten_state
from seqdni.engines.options import DNIOptions
from seqdni.training import SeqModel

sg_ceiling = load_script("sg_ceiling")

ROWS, T, WARMUP, UNROLLS = 3, 4, 5, 6


def _model(dni: DNIOptions) -> SeqModel:
    torch.manual_seed(0)
    lm = SeqModel(task=Task(symbols=list("abcdefg")), window=8, unroll=T, embed_dim=5, hidden_size=6, dni=dni)
    with torch.no_grad():  # M starts at zero; any M will do for the alignment
        for p in lm.engine.boundary.parameters():
            p.normal_(0, 0.3)
    return lm.train()


def _target(lm: SeqModel, s: tuple[torch.Tensor, ...], xs: torch.Tensor, ys: torch.Tensor, n: int) -> torch.Tensor:
    """By hand: ∂(Σ_{j<n} γ^j · B·T · loss_j)/∂s + γ^n Jᵀ M(s_end), the n-step target in per-sequence units."""
    gamma = lm.dni.gamma
    leaf = tuple(t.detach().requires_grad_(True) for t in s)
    state, total = leaf, 0.0
    for j in range(n):
        out, state = lm.net.core(xs[:, j * T : (j + 1) * T], state)
        total = total + gamma ** j * ROWS * T * lm.net.loss(out, ys[:, j * T : (j + 1) * T])
    end = flatten_state(state)
    g = lm.engine.boundary.predict(end, batch_dim=0)
    total = total + gamma ** n * (g * end).sum()
    return flatten_state(torch.autograd.grad(total, leaf))


@pytest.mark.parametrize("dni", [
    DNIOptions(hidden=0, scale=0.1, discount=0.1),  # one-step, γ = α
    DNIOptions(hidden=0, scale=0.1, discount=1.0, squash=True, target_unrolls=3, pending_targets=True),
    DNIOptions(hidden=0, scale=0.1, discount=0.5, target_unrolls=2),  # n-step, learned once, late
    # M frozen (a control's checkpoint): its targets are scored all the same
    DNIOptions(hidden=0, scale=0.1, discount=1.0, squash=True, target_unrolls=3, pending_targets=True, lr=0.0),
], ids=["one-step", "pending-3", "n-step-2", "pending-3-frozen"])
def test_collect_pairs_each_boundary_state_with_its_own_target_and_prediction(dni):
    lm = _model(dni)
    n = dni.target_unrolls
    ids = torch.randint(0, 7, (ROWS * (WARMUP + (UNROLLS + n) * T + 1),), generator=torch.Generator().manual_seed(1))
    S, G, P, nxt, by_horizon = sg_ceiling.collect(lm, ids, ROWS, UNROLLS, WARMUP)
    assert S.shape == G.shape == P.shape == (UNROLLS * ROWS, 12) and nxt.shape == (UNROLLS * ROWS,)
    assert len(by_horizon) == (n if dni.pending_targets else 0)
    if by_horizon:  # the full horizon, the last, is the mean cosine of the collected pairs
        cos = torch.nn.functional.cosine_similarity(P, G, dim=1).view(UNROLLS, ROWS).mean(1).mean()
        assert by_horizon[-1] == pytest.approx(cos.item(), abs=1e-5)

    grid = ids.view(ROWS, -1)
    with torch.no_grad():
        for k in range(UNROLLS):
            a = WARMUP + (k + 1) * T  # boundary k starts unroll k + 1 (unroll 0 starts none)
            _, s = lm.net(grid[:, :a])
            rows = slice(k * ROWS, (k + 1) * ROWS)
            torch.testing.assert_close(S[rows], flatten_state(s))
            torch.testing.assert_close(P[rows], lm.engine.boundary.predict(flatten_state(s), batch_dim=0))
            assert torch.equal(nxt[rows], grid[:, a])
            with torch.enable_grad():
                want = _target(lm, s, grid[:, a : a + n * T], grid[:, a + 1 : a + n * T + 1], n)
            torch.testing.assert_close(G[rows], want, rtol=1e-4, atol=1e-5)
    assert G.norm() > 0


def test_the_ridge_fit_recovers_a_linear_map():
    torch.manual_seed(0)
    X = torch.randn(400, 6)
    W = torch.randn(6, 4)
    Y = X @ W + 0.5
    held, lam = sg_ceiling.ridge(X, Y, 300)
    s = sg_ceiling.scores(held, Y[300:])
    assert lam == 1e-3 and s["cosine"] > 0.999 and s["explained"] > 0.999
    zero = sg_ceiling.scores(torch.zeros_like(Y[300:]), Y[300:])
    assert zero["explained"] == pytest.approx(0.0) and s["explained"] > zero["explained"]


def test_alignment_sees_an_m_that_leans_along_the_state_and_no_other_stream():
    torch.manual_seed(0)
    S = torch.randn(50 * 4, 12)  # 50 boundaries of 4 streams, independent
    along = sg_ceiling.alignment(S, 0.3 * S, rows=4)
    assert along["cos(M, s)"] == pytest.approx(1.0) and along["cos(M, tanh s)"] > 0.8
    assert abs(along["cos(M, another stream's s)"]) < 0.1
    against = sg_ceiling.alignment(S, -S + 0.1 * torch.randn_like(S), rows=4)
    assert against["cos(M, s)"] < -0.9
    # another stream's state: the next row within each boundary, never across boundaries
    shifted = sg_ceiling.alignment(S, S.view(50, 4, 12).roll(1, dims=1).reshape_as(S), rows=4)
    assert shifted["cos(M, another stream's s)"] == pytest.approx(1.0)


@pytest.mark.parametrize("learn", [False, True])
def test_only_m_learns_and_only_when_asked(learn):
    lm = _model(DNIOptions(hidden=0, scale=0.1, discount=1.0, squash=True, target_unrolls=3, pending_targets=True))
    before = {k: v.clone() for k, v in lm.engine.state_dict().items()}
    ids = torch.randint(0, 7, (ROWS * (WARMUP + (UNROLLS + 3) * T + 1),), generator=torch.Generator().manual_seed(2))
    sg_ceiling.collect(lm, ids, ROWS, UNROLLS, WARMUP, learn=learn)
    after = lm.engine.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == ({k for k in before if k.startswith("boundary.")} if learn else set())


@pytest.mark.slow
def test_the_script_scores_a_pending_dni_checkpoint_end_to_end(tmp_path):
    """Train a tiny DNI run with pending targets on PTB-named files, then run the script on its checkpoint."""
    text = "the cat sat on the mat _ a dog ran in the fog _ " * 40
    data = write_ptb(tmp_path / "ptb", "char", {"train": text, "valid": text[:400], "test": text[:400]})
    res = run_cli("seqdni.train", [
        "--config", str(ROOT / "configs/smoke.yaml"), f"--data.data_dir={data}", f"--data.cache_dir={tmp_path / 'c'}",
        "--data.download=false", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", "--trainer.max_steps=12",
        "--model.init_args.dni={scale: 0.1, discount: 1.0, squash: true, target_unrolls: 3, pending_targets: true}"],
        tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = next((tmp_path / "runs").rglob("latest.ckpt"))
    out = tmp_path / "ceiling.json"
    res = run_python([str(ROOT / "scripts/sg_ceiling.py"), "--ckpt", str(ckpt), "--data-dir", str(data), "--rows", "4",
                      "--unrolls", "30", "--warmup", "8", "--mlp", "8", "--learn", "--out", str(out)], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["boundaries"] == 4 * 30 and got["held_out"] == 24 and got["target_norm"] > 0
    assert len(got["online_cosine_by_horizon"]) == 3
    names = {re.sub(r", lambda .*", "", k) for k in got["results"]}
    assert names == {"online M", "ridge(s)", "ridge(tanh s)", "ridge(s, next input)", "mlp8(tanh s)", "mean target"}
    assert all(-1 <= r["cosine"] <= 1 for r in got["results"].values())
    assert set(got["alignment"]) == {"cos(M, s)", "cos(M, tanh s)", "cos(M, another stream's s)"}
