"""The hierarchical LM: tick schedule and shapes, the message interface's gradients, the update
schedule of the two levels, training, evaluation, resume, the CLI, sampling and the configs."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_cli import data_args, instantiate, run_cli
from test_two_timescale import Oracle

from seqdni.callbacks import LatestCheckpoint
from seqdni.dni import DNIOptions, flatten_state
from seqdni.hier import HierLM, HierLSTM, HierUnroller
from seqdni.model import Task
from seqdni.sample import sample

ROOT = Path(__file__).resolve().parents[1]
V, B = 7, 3


def net(tick: int = 2, seed: int = 0) -> HierLSTM:
    torch.manual_seed(seed)
    return HierLSTM(V, embed_dim=5, hidden_size=6, tick=tick, upper_hidden=4, message_size=3).double()


def ids(steps: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, V, (B, steps + 1), generator=g)
    return t[:, :-1], t[:, 1:]


def grads(params) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def random_state(model: HierLSTM) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(4)
    return tuple(torch.randn(t.shape, generator=g, dtype=torch.float64) * 0.5 for t in model.init_state(B))


def test_upper_core_ticks_every_k_steps_and_the_phase_carries():
    model = net(tick=4)
    calls = []
    model.upper.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].size(1)))
    x, _ = ids(10)
    state = random_state(model)
    feats, new = model.core(x, state)
    assert feats.shape == (B, 10, 6 + 4) and calls == [2]  # ticks after characters 4 and 8
    u = feats[..., 6:]
    changes = [t for t in range(10) if not torch.equal(u[:, t], u[:, t - 1] if t else state[2][-1])]
    assert changes == [3, 7]
    assert torch.equal(u[:, 7], new[2][-1]) and torch.equal(u[:, 9], u[:, 7])
    # the same stream in uneven chunks, with the phase carried, gives the same features
    s, phase, parts = state, 0, []
    for a, b in ((0, 3), (3, 4), (4, 9), (9, 10)):
        f, s = model.core(x[:, a:b], s, phase)
        phase, parts = (phase + b - a) % 4, parts + [f]
    torch.testing.assert_close(torch.cat(parts, 1), feats, rtol=0, atol=1e-12)


def run(e: HierUnroller, x, y, steps: int, state, zero_between: bool = False):
    carry, losses = e.initial_carry(B, torch.device("cpu")), []
    carry.state = state
    for i in range(x.size(1) // steps):
        if zero_between:
            e.zero_grad(set_to_none=True)
        out = e.unroll(x[:, i * steps : (i + 1) * steps], y[:, i * steps : (i + 1) * steps], carry)
        carry, losses = out.carry, losses + [out]
    return losses


def test_zero_sg_on_the_message_equals_the_cut_interface_exactly():
    model = net()
    x, y = ids(16)
    cut = HierUnroller(copy.deepcopy(model), unroll=4, upper_unroll=4, message="cut")
    dni = HierUnroller(copy.deepcopy(model), unroll=4, upper_unroll=4, message="dni",
                       dni=DNIOptions(scale=1.0)).double()  # M starts at zero
    out_cut = run(cut, x, y, 4, random_state(model))
    out_dni = run(dni, x, y, 4, random_state(model))
    assert [o.loss.item() for o in out_cut] == [o.loss.item() for o in out_dni]
    for a, b in zip(grads(cut.model.parameters()), grads(dni.model.parameters())):
        assert torch.equal(a, b)
    assert all(g.abs().sum() > 0 for g in grads(cut.model.upper_parameters()))


def test_oracle_sg_equals_end_to_end_bptt_over_the_upper_unroll():
    """Period of 8 characters = 2 lower unrolls of 4 (tick 2). With oracles on the messages and at
    the lower boundary, the lower grads summed over the two unrolls equal P = 2 times end-to-end
    BPTT's over the period (the lower loss is a mean over one unroll, the period's over two), and
    the upper grads equal BPTT's."""
    model = net()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    x, y = ids(8)
    state = random_state(model)
    n_upper = B * 8

    ref = HierUnroller(copy.deepcopy(model), unroll=8, upper_unroll=4, message="bptt")
    run(ref, x, y, 8, state)
    g_ref = grads(ref.model.parameters())
    # the true gradients at the lower boundary and the messages, independently of the engines
    m_ = ref.model
    out1, s4 = m_.lower_core(x[:, :4], state[:2])
    s4 = tuple(t.detach().requires_grad_() for t in s4)
    out2, _ = m_.lower_core(x[:, 4:], s4)
    out = torch.cat([out1, out2], 1)
    ticks = m_.ticks(8)
    msg = m_.send(out, ticks)
    u_seq, _ = m_.upper(msg, state[2:])
    loss = m_.loss(m_.read(out, state[2][-1], u_seq, ticks), y)
    *d_s4, d_msg = torch.autograd.grad(loss, (*s4, msg))
    assert d_msg.abs().sum() > 0 and sum(t.abs().sum() for t in d_s4) > 0

    dni = HierUnroller(copy.deepcopy(model), unroll=4, upper_unroll=4, message="dni", dni=DNIOptions(scale=1.0),
                       boundaries=True).double()
    dni.msg_sg.sg = Oracle([(msg[:, :2].detach().reshape(-1, 3), n_upper * d_msg[:, :2].reshape(-1, 3)),
                            (msg[:, 2:].detach().reshape(-1, 3), n_upper * d_msg[:, 2:].reshape(-1, 3))])
    dni.lower_sg.sg = Oracle([(flatten_state(s4).detach(), n_upper * flatten_state(tuple(d_s4)))])
    dni.upper_sg.sg = Oracle([])  # nothing beyond the period: zero
    outs = run(dni, x, y, 4, state)
    g_dni = grads(dni.model.parameters())
    lower = {id(p) for p in dni.model.lower_parameters()}
    for p, a, b in zip(dni.model.parameters(), g_ref, g_dni):
        factor = 2.0 if id(p) in lower else 1.0
        torch.testing.assert_close(b, factor * a, rtol=1e-9, atol=1e-12)
    assert outs[1].sg_loss is not None and "sg/message/cosine" in outs[1].stats


def test_upper_level_updates_once_per_upper_unroll(tmp_path, tiny_data):
    dm = tiny_data(window=16)
    lit = hier_lm(dm, unroll=4, tick=2, upper_unroll=4)  # lower: every 4 characters; upper: every 8
    seen = []

    class Watch(L.Callback):
        def on_train_start(self, trainer, pl_module):
            upper = pl_module.model.upper_parameters()
            last = [[p.detach().clone() for p in upper]]

            def after(*_):
                now = [p.detach().clone() for p in upper]
                seen.append(any(not torch.equal(a, b) for a, b in zip(now, last[0])))
                last[0] = now

            trainer.optimizers[0].register_step_post_hook(after)

    trainer(tmp_path, max_steps=8, callbacks=[Watch()], enable_checkpointing=False).fit(lit, dm)
    assert seen == [False, True] * 4


def trainer(tmp_path, **kw) -> L.Trainer:
    args = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=str(tmp_path), max_epochs=100)
    args.update(kw)
    return L.Trainer(**args)


def hier_lm(dm, seed: int = 0, **kw) -> HierLM:
    L.seed_everything(seed)
    args = dict(task=dm.task, window=dm.window, unroll=4, tick=2, upper_unroll=4, embed_dim=8, hidden_size=16,
                upper_hidden=8, message_size=4, lr=1e-2, clip=0.5, message="dni", dni=DNIOptions(scale=1.0))
    args.update(kw)
    return HierLM(**args)


def test_tiny_hierarchical_lm_lowers_bpc(tmp_path, tiny_data):
    dm = tiny_data()
    lit = hier_lm(dm, boundaries=True)
    before = trainer(tmp_path, limit_val_batches=None).validate(lit, dm, verbose=False)[0]["val/bpc"]
    trainer(tmp_path, max_steps=60, enable_checkpointing=False).fit(lit, dm)
    after = trainer(tmp_path, limit_val_batches=None).validate(lit, dm, verbose=False)[0]["val/bpc"]
    assert after < before - 0.5, (before, after)


def test_evaluation_carries_state_and_tick_phase_across_batches(tmp_path, tiny_data):
    dm = tiny_data(eval_window=5)  # not a multiple of the tick: the phase must cross batches
    lit = hier_lm(dm, tick=4, unroll=4, upper_unroll=2)
    bpc = trainer(tmp_path, limit_val_batches=None).validate(lit, dm, verbose=False)[0]["val/bpc"]
    rows = dm.ids["valid"][: (dm.ids["valid"].numel() // 2) * 2].view(2, -1).long()
    with torch.no_grad():
        feats, _ = lit.model.core(rows[:, :-1], lit.model.init_state(2))
        logits = lit.model.logits(feats)
    expected = F.cross_entropy(logits.reshape(-1, logits.size(-1)), rows[:, 1:].reshape(-1)).item() / math.log(2)
    assert bpc == pytest.approx(expected, rel=1e-5)


def test_resume_continues_exactly(tmp_path, tiny_data):
    dm = tiny_data(batch_size=6)

    class Losses(L.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seen.append(trainer.callback_metrics["train/bpc"].item())

    per_epoch = len(dm.train_dataloader())
    total, cut = per_epoch + 3, per_epoch // 2 + 1
    one, first, second = Losses(), Losses(), Losses()
    opts = dict(boundaries=True)
    trainer(tmp_path / "one", max_steps=2 * total, callbacks=[one], enable_checkpointing=False).fit(
        hier_lm(dm, **opts), dm)
    latest = LatestCheckpoint(every_n_batches=1000, dirpath=str(tmp_path / "two"))
    trainer(tmp_path / "two", max_steps=2 * cut, callbacks=[first, latest]).fit(hier_lm(dm, **opts), dm)
    trainer(tmp_path / "two", max_steps=2 * total, callbacks=[second]).fit(hier_lm(dm, seed=5, **opts), dm,
                                                                           ckpt_path=latest.last_path)
    assert len(one.seen) == total and len(first.seen) + len(second.seen) == total
    assert first.seen + second.seen == pytest.approx(one.seen, rel=1e-6, abs=1e-7)


def test_bad_arguments_name_their_keys(tiny_data):
    dm = tiny_data()
    task = Task("chars", list("ab"))
    with pytest.raises(ValueError, match=r"model.unroll \(4\) must be a multiple of model.tick \(3\)"):
        hier_lm(dm, tick=3)
    with pytest.raises(ValueError, match="with model.message bptt .* set model.upper_unroll to"):
        hier_lm(dm, message="bptt", dni=None)
    with pytest.raises(ValueError, match=r"data.window \(8\) must be a multiple of the upper unroll"):
        hier_lm(dm, upper_unroll=8)
    with pytest.raises(ValueError, match="model.dni must be set when model.message is dni"):
        hier_lm(dm, dni=None)
    with pytest.raises(ValueError, match="model.dni.conditional is not supported by HierLM"):
        hier_lm(dm, dni=DNIOptions(conditional=True))
    with pytest.raises(ValueError, match="no vocabulary"):
        HierLM(Task("copy", input_size=3, output_size=2), window=8)
    assert HierLM(task, window=16, unroll=8, upper_unroll=4, message="cut").engine.sg_parameters() == []


HIER_CONFIGS = sorted((ROOT / "configs").glob("ptb*/hier-*.yaml"))


@pytest.mark.parametrize("config", HIER_CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_hier_configs_instantiate(config, text_files, tmp_path):
    cli = instantiate(config, tmp_path, *data_args(text_files, tmp_path))
    model = cli.model
    assert isinstance(model, HierLM) and model.vocab.symbols == cli.datamodule.symbols
    kind = config.stem.split("-")[1]
    assert model.engine.message == kind.rstrip("0123456789") and model.hparams.unroll == int(kind[-1])
    # the trainer setup is the folder's flat config's
    flat = yaml.safe_load((config.parent / "dni8.yaml").read_text())["trainer"]
    mine = yaml.safe_load(config.read_text())["trainer"]
    for t in (flat, mine):
        t["logger"]["init_args"].pop("name")
    assert mine == flat


def test_hier_configs_differ_only_in_the_interface():
    for folder in ("ptb", "ptb-cpu"):
        a, b = (yaml.safe_load((ROOT / "configs" / folder / f"hier-{n}8.yaml").read_text()) for n in ("dni", "bptt"))
        for cfg in (a, b):
            for key in ("message", "upper_unroll", "dni"):
                cfg["model"]["init_args"].pop(key, None)
            cfg["trainer"]["logger"]["init_args"].pop("name")
        assert a == b, folder


def test_cli_trains_logs_checkpoints_and_samples(text_files, tmp_path):
    res = run_cli("seqdni.train", ["--config", str(ROOT / "configs/smoke.yaml"), *data_args(text_files, tmp_path),
                                   "--model=seqdni.hier.HierLM", "--model.tick=2", "--model.upper_unroll=4",
                                   "--model.upper_hidden=16", "--model.message_size=8", "--data.window=16",
                                   "--model.dni={\"scale\": 1.0}", "--model.boundaries=true"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = tmp_path / "runs/smoke/smoke/version_0"
    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    scalars = set(ea.Tags()["scalars"])
    for key in ("train/bpc", "val/bpc", "test/bpc", *(f"sg/{i}/{s}" for i in ("message", "lower", "upper")
                                                     for s in ("loss", "cosine", "pred_norm", "target_norm"))):
        assert key in scalars, key
    assert "sample/text_summary" in ea.Tags()["tensors"]
    latest = run_dir / "checkpoints/latest.ckpt"
    assert torch.load(latest, weights_only=True)["seqdni"]["class_path"] == "seqdni.hier.HierLM"
    out = run_cli("seqdni.sample", ["--ckpt", str(latest), "--prime", "the cat", "--length", "40", "--seed", "3"],
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("the cat") and len(out.stdout.rstrip("\n")) >= 47
    assert out.stdout.rstrip("\n") == sample(str(latest), prime="the cat", length=40, seed=3).rstrip("\n")
