"""The Lightning module: same gradients as plain PyTorch, exact resume, evaluation, NaN stop."""

from __future__ import annotations

import copy
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from seqdni.callbacks import LatestCheckpoint
from seqdni.dni import DNIOptions
from seqdni.lit import NonFiniteLossError, SeqModel, adam
from seqdni.sample import load_checkpoint


def trainer(tmp_path, **kw) -> L.Trainer:
    args = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=str(tmp_path), max_epochs=100)
    args.update(kw)
    return L.Trainer(**args)


def model(dm, seed=0, **kw) -> SeqModel:
    L.seed_everything(seed)
    args = dict(task=dm.task, window=dm.window, unroll=4, embed_dim=8, hidden_size=16, lr=1e-2, clip=0.5)
    args.update(kw)
    return SeqModel(**args)


def snapshot(params) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


class Record(L.Callback):
    """Language-model gradients seen by each core optimiser step, and the batch losses."""

    def __init__(self):
        self.grads, self.losses = [], []

    def on_train_start(self, trainer, pl_module):
        params = pl_module.engine.core_parameters()
        trainer.optimizers[0].register_step_pre_hook(
            lambda *_: self.grads.append(snapshot(params)))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(trainer.callback_metrics["train/bpc"].item())


@pytest.mark.parametrize("dni", [None, DNIOptions(aux_weight=0.5, train_core=True, conditional=True)])
def test_check6_lightning_path_equals_plain_pytorch(tmp_path, tiny_data, dni):
    dm = tiny_data()
    lit = model(dm, dni=dni)
    plain = copy.deepcopy(lit.engine)
    rec = Record()
    trainer(tmp_path, max_steps=12, callbacks=[rec], enable_checkpointing=False).fit(lit, dm)

    core_opt = adam(plain.core_parameters(), lr=1e-2)
    sg_opt = adam(plain.sg_parameters(), lr=dni.lr) if dni else None
    carry, seen = plain.initial_carry(2, torch.device("cpu")), []
    for x, y in dm.train_dataloader():
        for i in range(x.size(1) // 4):
            out = plain.unroll(x[:, 4 * i : 4 * i + 4], y[:, 4 * i : 4 * i + 4], carry)
            torch.nn.utils.clip_grad_norm_(plain.core_parameters(), 0.5)
            if out.sg_loss is not None:
                out.sg_loss.backward()
                torch.nn.utils.clip_grad_norm_(plain.sg_parameters(), dni.clip)
                sg_opt.step()
            if sg_opt:
                sg_opt.zero_grad()
            seen.append(snapshot(plain.core_parameters()))
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
        t.fit(model(dm, dni=dni), dm)
        assert t.global_step == 6


@pytest.mark.parametrize("dni", [None, DNIOptions(aux_weight=0.5)])
def test_resume_continues_exactly_loss_by_loss(tmp_path, tiny_data, dni):
    dm = tiny_data(batch_size=6)
    per_epoch = len(dm.train_dataloader())
    total = per_epoch + per_epoch // 2 + 3  # batches: into the second epoch
    one = Record()
    trainer(tmp_path / "one", max_steps=2 * total, callbacks=[one], enable_checkpointing=False).fit(model(dm, dni=dni), dm)

    first, second = Record(), Record()
    cut = per_epoch + 2  # a mid-epoch cut
    latest = LatestCheckpoint(every_n_batches=1000, dirpath=str(tmp_path / "two"))
    trainer(tmp_path / "two", max_steps=2 * cut, callbacks=[first, latest]).fit(model(dm, dni=dni), dm)
    resumed = model(dm, seed=123, dni=dni)  # different init: everything must come from the checkpoint
    trainer(tmp_path / "two", max_steps=2 * total, callbacks=[second, LatestCheckpoint(dirpath=str(tmp_path / "two"))]
            ).fit(resumed, dm, ckpt_path=latest.last_path)
    assert len(one.losses) == total and len(first.losses) == cut and len(second.losses) == total - cut
    assert first.losses + second.losses == pytest.approx(one.losses, rel=1e-6, abs=1e-7)


def test_check5_evaluation_carries_state_over_the_split_and_never_uses_sg(tmp_path, tiny_data):
    dm = tiny_data(eval_window=5)  # many short evaluation batches: the state must cross them
    lit = model(dm, dni=DNIOptions(scale=1.0))
    with torch.no_grad():
        for p in lit.engine.sg.parameters():
            p.normal_(0, 1.0)

    def boom(*args, **kwargs):
        raise AssertionError("evaluation called the synthetic-gradient model")

    lit.engine.sg.forward = boom
    bpc = trainer(tmp_path, limit_val_batches=None).validate(lit, dm)[0]["val/bpc"]

    ids = dm.ids["valid"]
    rows = ids[: (ids.numel() // 2) * 2].view(2, -1).long()
    with torch.no_grad():
        logits, _ = lit.model(rows[:, :-1])  # one forward over each whole stream
    expected = F.cross_entropy(logits.reshape(-1, logits.size(-1)), rows[:, 1:].reshape(-1)).item() / math.log(2)
    assert bpc == pytest.approx(expected, rel=1e-5)


def test_training_lowers_validation_bpc(tmp_path, tiny_data):
    dm = tiny_data()
    lit = model(dm, dni=DNIOptions())
    t = trainer(tmp_path, max_steps=1, limit_val_batches=None, enable_checkpointing=False)
    before = t.validate(lit, dm, verbose=False)[0]["val/bpc"]
    t = trainer(tmp_path, max_steps=60, limit_val_batches=None, enable_checkpointing=False)
    t.fit(lit, dm)
    after = t.validate(lit, dm, verbose=False)[0]["val/bpc"]
    assert after < before - 0.5, (before, after)


class Poison(L.Callback):
    def __init__(self, at_batch: int):
        self.at_batch = at_batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.at_batch:
            with torch.no_grad():
                pl_module.model.head.bias.fill_(float("nan"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data):
    dm = tiny_data()
    latest = LatestCheckpoint(every_n_batches=2, dirpath=str(tmp_path / "ckpt"))
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss .* optimiser step 12 .*latest\.ckpt"):
        trainer(tmp_path, max_steps=100, callbacks=[latest, Poison(at_batch=5)]).fit(model(dm), dm)
    good = load_checkpoint(latest.last_path)
    assert all(torch.isfinite(p).all() for p in good.parameters())
    assert torch.load(latest.last_path, weights_only=True)["global_step"] == 8


def test_bad_unroll_and_window_name_the_keys(tiny_data):
    dm = tiny_data()
    with pytest.raises(ValueError, match="model.unroll"):
        model(dm, unroll=0)
    with pytest.raises(ValueError, match=r"data.window \(8\) must be a multiple of model.unroll \(3\)"):
        model(dm, unroll=3)
