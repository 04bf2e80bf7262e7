"""The two-timescale system: digit-stream targets, the message interface's gradients, the update
schedule of each regime, the configs and a short training run."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from seqdni.callbacks import LatestCheckpoint
from seqdni.digits import DigitStreams, digit_stream, digit_targets
from seqdni.dni import DNIOptions
from seqdni.twotimescale import TwoNets, TwoTimescale, TwoTimescaleEngine

ROOT = Path(__file__).resolve().parents[1]
T, B = 3, 4


def test_digit_targets_on_hand_made_streams():
    d = torch.tensor([[3, 1, 2, 3, 3, 3, 0, 8], [0, 0, 5, 7, 3, 2, 1, 3]])
    y = digit_targets(d, 2)
    # segment ends (t = 1, 3, 5, 7): odd digits in the last 2 steps; 3s in the last 4 steps
    assert y[0, 1::2, 0].tolist() == [2, 1, 2, 0] and y[0, 1::2, 1].tolist() == [1, 2, 3, 2]
    assert y[1, 1::2, 0].tolist() == [0, 2, 1, 2] and y[1, 1::2, 1].tolist() == [0, 0, 1, 2]
    assert (y[:, 0::2] == -1).all()


def test_digit_targets_match_a_direct_count():
    d = digit_stream(3, 64, seed=5).long()
    y = digit_targets(d, 4)
    for r in range(3):
        for t in range(64):
            if (t + 1) % 4:
                assert y[r, t].tolist() == [-1, -1]
                continue
            seg, window = d[r, t - 3 : t + 1].tolist(), d[r, max(0, t - 15) : t + 1].tolist()
            assert y[r, t].tolist() == [sum(v % 2 for v in seg), window.count(3)]


def test_digit_streams_batches_and_errors():
    dm = DigitStreams(period=2, batch_size=3, window=8, train_length=32, eval_batch_size=2, eval_length=20,
                      eval_window=6, seed=1)
    batches = list(dm.train_dataloader())
    assert len(batches) == 4 and all(x.shape == (3, 8) and y.shape == (3, 8, 2) for x, y in batches)
    assert torch.equal(torch.cat([x for x, _ in batches], 1), digit_stream(3, 32, 1).long())  # rows continue
    val, test = list(dm.val_dataloader()), list(dm.test_dataloader())
    assert [x.size(1) for x, _ in val] == [6, 6, 6, 2] and not torch.equal(val[0][0], test[0][0])
    assert dm.task.name == "two-timescale" and dm.task.symbols == list("0123456789")
    with pytest.raises(ValueError, match=r"data.window \(6\) must be a multiple of T² = 4"):
        DigitStreams(period=2, window=6)
    with pytest.raises(ValueError, match="data.eval_window"):
        DigitStreams(period=4, eval_window=6)


def engine(regime: str, dni: DNIOptions | None = None, seed: int = 0) -> TwoTimescaleEngine:
    torch.manual_seed(seed)
    return TwoTimescaleEngine(TwoNets(T, 5, 7, 6, 4), regime, dni).double()


def window(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    d = digit_stream(B, 2 * T * T, seed).long()
    y = digit_targets(d, T)
    return d[:, T * T :], y[:, T * T :]  # a window that starts mid-stream: B's targets span T² steps


def randomize(module: nn.Module, seed: int = 7) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)


def grads(params) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def decoupled(e: TwoTimescaleEngine, x, y, state):
    """A's T updates (no optimiser step: A's gradients accumulate over them), then B's."""
    s_a, messages = state[:2], []
    for j in range(T):
        _, s_a, m, _ = e.a_update(x[:, j * T : (j + 1) * T], y[:, j * T : (j + 1) * T], s_a)
        messages.append(m)
    e.b_update(messages, y, state[2:])
    return messages


class Oracle(nn.Module):
    """Stands in for M: the given answer for an input it knows, zero otherwise."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.pairs = pairs

    def forward(self, flat, cond=None):
        for inp, out in self.pairs:
            if inp.shape == flat.shape and torch.allclose(inp, flat, rtol=0, atol=1e-12):
                return out
        return torch.zeros_like(flat)


def test_zero_sg_equals_cut_exactly():
    x, y = window()
    cut, dni = engine("cut"), engine("dni", DNIOptions(scale=1.0))  # M starts at zero
    state = tuple(t.double() + 0.1 for t in cut.nets.init_state(B))
    decoupled(cut, x, y, state)
    decoupled(dni, x, y, state)
    for a, b in zip(grads(cut.nets.parameters()), grads(dni.nets.parameters())):
        assert torch.equal(a, b)
    assert any(g.abs().sum() > 0 for g in grads(cut.nets.b_parameters()))


def test_oracle_sg_equals_end_to_end_and_targets_are_true_gradients():
    x, y = window()
    ref = engine("bptt")
    randomize(ref.nets)
    state = tuple(torch.randn(t.shape, dtype=torch.float64) * 0.5 for t in ref.nets.init_state(B))
    dni = TwoTimescaleEngine(copy.deepcopy(ref.nets), "dni", DNIOptions(scale=1.0)).double()

    ref.joint_update(x, y, state[:2], state[2:])
    g_ref = grads(ref.nets.parameters())
    # the true gradient of B's loss w.r.t. each message, independently of the engine
    nets, s_a, messages = ref.nets, state[:2], []
    for j in range(T):
        h, s_a = nets.a_segment(x[:, j * T : (j + 1) * T], tuple(t.detach() for t in s_a))
        messages.append(nets.a_message(h).detach().requires_grad_())
    out, _ = nets.b(torch.stack(messages, 1), state[2:])
    true = torch.autograd.grad(nets.b_loss(out, y[:, T - 1 :: T, 1]), messages)
    assert all(g.abs().sum() > 0 for g in true)

    # per-sequence units: the loss is a mean over the batch, so M's answer is B × the gradient
    dni.interface.sg = Oracle([(m.detach(), B * g) for m, g in zip(messages, true)])
    leaves = decoupled(dni, x, y, state)
    for a, b in zip(g_ref, grads(dni.nets.parameters())):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    _, _, target = dni.interface.learn(leaves, n_recv=B, batch_dim=0)
    torch.testing.assert_close(target, B * torch.cat(true), rtol=1e-10, atol=1e-12)


def trainer(tmp_path, **kw) -> L.Trainer:
    args = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                num_sanity_val_steps=0, default_root_dir=str(tmp_path), max_epochs=100)
    args.update(kw)
    return L.Trainer(**args)


def data(**kw) -> DigitStreams:
    args = dict(period=4, batch_size=8, window=32, train_length=2048, eval_batch_size=16, eval_length=256,
                eval_window=64, seed=0)
    args.update(kw)
    return DigitStreams(**args)


def module(dm: DigitStreams, regime: str, seed: int = 0, **kw) -> TwoTimescale:
    L.seed_everything(seed)
    args = dict(task=dm.task, window=dm.window, period=dm.period, regime=regime, embed_dim=8, hidden_a=16,
                hidden_b=16, message_size=8, lr=1e-2, dni=DNIOptions(scale=1.0) if regime == "dni" else None)
    args.update(kw)
    return TwoTimescale(**args)


class CountSteps(L.Callback):
    def __init__(self):
        self.a = self.b = 0

    def on_train_start(self, trainer, pl_module):
        opt_b, opt_a = trainer.optimizers[:2]
        opt_a.register_step_post_hook(lambda *_: setattr(self, "a", self.a + 1))
        opt_b.register_step_post_hook(lambda *_: setattr(self, "b", self.b + 1))


@pytest.mark.parametrize("regime", ["bptt", "cut", "dni"])
def test_update_schedule_of_each_regime(tmp_path, regime):
    dm = data()
    count = CountSteps()
    t = trainer(tmp_path, max_steps=6, limit_val_batches=0, callbacks=[count], enable_checkpointing=False)
    t.fit(module(dm, regime), dm)
    # a batch of 32 steps: B updates every T² = 16 steps; A every 4 steps unless update-locked to B
    assert t.global_step == count.b == 6
    assert count.a == (6 if regime == "bptt" else 24)


def test_training_learns_a_and_b_and_resumes_exactly(tmp_path):
    dm = data()
    lit = module(dm, "bptt")
    before = trainer(tmp_path).validate(lit, dm, verbose=False)[0]
    trainer(tmp_path, max_steps=400, limit_val_batches=0, enable_checkpointing=False).fit(lit, dm)
    after = trainer(tmp_path).validate(lit, dm, verbose=False)[0]
    assert after["val/a_error"] < 0.1 < 0.4 < before["val/a_error"], (before, after)
    assert after["val/b_error"] < before["val/b_error"]

    class Losses(L.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seen.append(trainer.callback_metrics["train/b_loss"].item())

    one, first, second = Losses(), Losses(), Losses()
    trainer(tmp_path / "one", max_steps=20, limit_val_batches=0, callbacks=[one],
            enable_checkpointing=False).fit(module(dm, "dni"), dm)
    latest = LatestCheckpoint(every_n_batches=1000, dirpath=str(tmp_path / "two"))
    trainer(tmp_path / "two", max_steps=8, limit_val_batches=0, callbacks=[first, latest]).fit(module(dm, "dni"), dm)
    trainer(tmp_path / "two", max_steps=20, limit_val_batches=0, callbacks=[second]).fit(
        module(dm, "dni", seed=9), dm, ckpt_path=latest.last_path)
    assert first.seen + second.seen == pytest.approx(one.seen, rel=1e-6, abs=1e-7)


def test_bad_arguments_name_their_keys(tmp_path):
    dm = data()
    with pytest.raises(ValueError, match="model.dni must be set for regime dni"):
        module(dm, "dni", dni=None)
    with pytest.raises(ValueError, match="model.dni must be set for regime dni and unset"):
        module(dm, "cut", dni=DNIOptions())
    with pytest.raises(ValueError, match="model.dni.aux_weight is not supported"):
        module(dm, "dni", dni=DNIOptions(aux_weight=0.5))
    with pytest.raises(ValueError, match=r"model.period \(3\) differs from data.period \(4\)"):
        trainer(tmp_path, max_steps=1).fit(module(dm, "cut", period=3, window=36), dm)


CONFIGS = sorted((ROOT / "configs/two-timescale").glob("*.yaml"))


def test_configs_instantiate_and_differ_only_in_the_regime(tmp_path):
    import yaml
    from test_cli import instantiate

    assert {p.stem for p in CONFIGS} >= {"bptt", "cut", "dni"}
    base = yaml.safe_load((ROOT / "configs/two-timescale/bptt.yaml").read_text())
    for path in CONFIGS:
        cli = instantiate(path, tmp_path)
        assert isinstance(cli.model, TwoTimescale) and cli.model.period == cli.datamodule.period == 4
        assert cli.model.regime == path.stem.split("-")[0]
        cfg = yaml.safe_load(path.read_text())
        for c in (cfg, ref := copy.deepcopy(base)):
            c["model"]["init_args"].pop("regime"), c["model"]["init_args"].pop("dni", None)
            c["trainer"]["logger"]["init_args"].pop("name")
        assert cfg == ref, path


def test_script_plots_all_regimes(tmp_path):
    spec = importlib.util.spec_from_file_location("two_timescale", ROOT / "scripts/two_timescale.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    summary = script.main(["--steps", "8", "--val-every", "1", "--out", str(tmp_path / "out"),
                           "--runs", str(tmp_path / "runs"), "--eval-length", "64"])
    assert (tmp_path / "out/curves.png").stat().st_size > 1000
    assert {r["regime"] for r in summary["runs"]} >= {"bptt", "cut", "dni"}
    for run in summary["runs"]:
        assert len(run["val"]["step"]) == 2 and 0 <= run["test"]["b_error"] <= 1
