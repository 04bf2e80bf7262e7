"""The training module on the flat system (`SeqModel`): the same gradients as a plain PyTorch loop,
optimiser steps counted, carried-state evaluation without M, learning, the NaN stop, argument errors."""

from __future__ import annotations

import copy
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import Losses, grads, group_params, seq_model, trainer

from seqdni.cli.sample import load_checkpoint
from seqdni.engines import DNIOptions
from seqdni.errors import UserError, reported
from seqdni.training import LatestCheckpoint, NonFiniteLossError, adam
from seqdni.training.optim import schedule


class CoreGrads(L.Callback):
    """The gradients of the core group seen by each of its optimiser steps."""

    def __init__(self):
        self.grads = []

    def on_train_start(self, trainer, pl_module):
        params = group_params(pl_module.engine, "core")
        trainer.optimizers[0].register_step_pre_hook(lambda *_: self.grads.append(grads(params)))


@pytest.mark.parametrize("dni", [None, DNIOptions(aux_weight=0.5, train_core=True, conditional=True)])
def test_check6_lightning_path_equals_plain_pytorch(tmp_path, tiny_data, dni):
    dm = tiny_data()
    lit = seq_model(dm, dni=dni)
    plain = copy.deepcopy(lit.engine)
    rec = CoreGrads()
    trainer(tmp_path, max_steps=12, callbacks=[rec], enable_checkpointing=False).fit(lit, dm)

    core, sg = group_params(plain, "core"), group_params(plain, "sg")
    core_opt = adam(core, lr=1e-2)
    sg_opt = adam(sg, lr=dni.lr) if dni else None
    carry, seen = plain.initial_carry(2, torch.device("cpu")), []
    for x, y in dm.train_dataloader():
        for i in range(x.size(1) // 4):
            out = plain.unroll(x[:, 4 * i : 4 * i + 4], y[:, 4 * i : 4 * i + 4], carry)
            torch.nn.utils.clip_grad_norm_(core, 0.5)
            if out.sg_loss is not None:
                out.sg_loss.backward()
                torch.nn.utils.clip_grad_norm_(sg, dni.clip)
                sg_opt.step()
            if sg_opt:
                sg_opt.zero_grad()
            seen.append(grads(core))
            core_opt.step()
            core_opt.zero_grad()
            carry = out.carry
        if len(seen) >= 12:
            break
    assert len(rec.grads) == len(seen) == 12
    for g_lit, g_plain in zip(rec.grads, seen):
        for a, b in zip(g_lit, g_plain):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
    for a, b in zip(lit.engine.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_max_steps_counts_language_model_updates_with_or_without_dni(tmp_path, tiny_data):
    dm = tiny_data()
    for dni in (None, DNIOptions()):
        t = trainer(tmp_path, max_steps=6, enable_checkpointing=False)
        t.fit(seq_model(dm, dni=dni), dm)
        assert t.global_step == 6


def test_check5_evaluation_carries_state_over_the_split_and_never_uses_sg(tmp_path, tiny_data):
    dm = tiny_data(eval_window=5)  # many short evaluation batches: the state must cross them
    lit = seq_model(dm, dni=DNIOptions(scale=1.0))
    with torch.no_grad():
        for p in lit.engine.boundary.sg.parameters():
            p.normal_(0, 1.0)

    def boom(*args, **kwargs):
        raise AssertionError("evaluation called the synthetic-gradient model")

    lit.engine.boundary.sg.forward = boom
    bpc = trainer(tmp_path, limit_val_batches=None).validate(lit, dm)[0]["val/bpc"]

    ids = dm.ids["valid"]
    rows = ids[: (ids.numel() // 2) * 2].view(2, -1).long()
    with torch.no_grad():
        logits, _ = lit.net(rows[:, :-1])  # one forward over each whole stream
    expected = F.cross_entropy(logits.reshape(-1, logits.size(-1)), rows[:, 1:].reshape(-1)).item() / math.log(2)
    assert bpc == pytest.approx(expected, rel=1e-5)


def test_training_lowers_validation_bpc(tmp_path, tiny_data):
    dm = tiny_data()
    lit = seq_model(dm, dni=DNIOptions())
    t = trainer(tmp_path, max_steps=1, limit_val_batches=None, enable_checkpointing=False)
    before = t.validate(lit, dm, verbose=False)[0]["val/bpc"]
    t = trainer(tmp_path, max_steps=60, limit_val_batches=None, enable_checkpointing=False)
    t.fit(lit, dm)
    after = t.validate(lit, dm, verbose=False)[0]["val/bpc"]
    assert after < before - 0.5, (before, after)


@pytest.mark.parametrize("lr", [0.0, 1e-2])
def test_m_at_learning_rate_zero_stays_at_its_zero_start_while_the_aux_head_learns(tmp_path, tiny_data, lr):
    """DNI + Aux's control (`configs/ptb-cpu/dni8-aux-m-frozen.yaml`): with M's learning rate 0, M is
    exactly 0 after training, so the core never receives a synthetic gradient, while Â still learns
    (towards M = 0). With a learning rate, M leaves zero: the check can fail."""
    dm = tiny_data()
    lit = seq_model(dm, dni=DNIOptions(aux_weight=0.5, lr=lr, target_unrolls=2, pending_targets=True))
    aux_before = [p.detach().clone() for p in lit.engine.aux.parameters()]
    trainer(tmp_path, max_steps=12, enable_checkpointing=False).fit(lit, dm)
    m_is_zero = all(bool((p == 0).all()) for p in lit.engine.boundary.sg.parameters())
    assert m_is_zero == (lr == 0)
    assert all(not torch.equal(a, p) for a, p in zip(aux_before, lit.engine.aux.parameters()))


class Poison(L.Callback):
    def __init__(self, at_batch: int):
        self.at_batch = at_batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.at_batch:
            with torch.no_grad():
                pl_module.net.head.bias.fill_(float("nan"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data):
    """The message names the newest checkpoint, also where a best-checkpoint callback is listed first
    (as in the PTB configs) and holds an older one."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    dm = tiny_data()
    latest = LatestCheckpoint(every_n_batches=2, dirpath=str(tmp_path / "ckpt"))
    best = ModelCheckpoint(dirpath=str(tmp_path / "best"), every_n_train_steps=2)
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss .* optimiser step 12 .*latest\.ckpt"):
        trainer(tmp_path, max_steps=100, callbacks=[best, latest, Poison(at_batch=5)]).fit(seq_model(dm), dm)
    assert best.best_model_path  # it had written one: the message chose the newer
    good = load_checkpoint(latest.last_path)
    assert all(torch.isfinite(p).all() for p in good.parameters())
    assert torch.load(latest.last_path, weights_only=True)["global_step"] == 8


def test_the_nan_stop_reaches_the_user_as_its_paragraph(capsys):
    """Its message says what to do, so the entry points print it without a traceback, exit status 1."""
    def diverge():
        raise NonFiniteLossError("non-finite training loss ...; last good checkpoint: run/latest.ckpt. Lower model.lr")

    with pytest.raises(SystemExit) as stop:
        reported(diverge, "python -m seqdni.train", [])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "Traceback" not in err and "last good checkpoint: run/latest.ckpt" in err


def test_the_cosine_schedule_warms_up_then_decays_to_zero_at_max_steps(tiny_data, tmp_path):
    factor = schedule("cosine", 2, 10)
    assert [factor(s) for s in (0, 1, 2, 6, 10, 12)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0, 0.0], abs=1e-12)
    assert [schedule("constant", 2, 10)(s) for s in (0, 1, 9)] == [0.5, 1.0, 1.0]
    dm = tiny_data()
    with pytest.raises(UserError, match=r"model.lr_schedule is cosine.*trainer.max_steps is not set"):
        trainer(tmp_path, max_epochs=1).fit(seq_model(dm, lr_schedule="cosine"), dm)


def test_bad_unroll_and_window_name_the_keys(tiny_data):
    dm = tiny_data()
    with pytest.raises(ValueError, match="model.unroll"):
        seq_model(dm, unroll=0)
    with pytest.raises(ValueError, match=r"data.window \(8\) must be a multiple of model.unroll \(3\)"):
        seq_model(dm, unroll=3)


def test_probes_leave_the_training_run_unchanged_with_dropout(tmp_path, tiny_data):
    """The probe runs the network as it trains, dropout included, on random numbers of its own."""
    dm = tiny_data()
    runs = []
    for every in (0, 2):
        losses = Losses()
        model = seq_model(dm, dni=DNIOptions(), dropout=0.3, probe_every=every, probe_rows=2, probe_unrolls=1)
        trainer(tmp_path / str(every), max_steps=12, callbacks=[losses]).fit(model, dm)
        runs.append(losses.losses)
    assert len(runs[0]) == 6 and runs[0] == runs[1]
