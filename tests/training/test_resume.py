"""A run cut mid-epoch and resumed from `latest.ckpt` continues exactly, loss by loss, in every
system: the carried state, the data stream and (Copy) the curriculum come from the checkpoint."""

from __future__ import annotations

import pytest
from helpers import Losses, Validations, digit_data, hier_lm, seq_model, trainer, two_timescale
from lightning.pytorch.callbacks import EarlyStopping

from seqdni.data import RepeatCopyDataModule
from seqdni.engines import DNIOptions
from seqdni.training import Curriculum, LatestCheckpoint

# Copy validates on its own schedule, across epochs.
ENDLESS = dict(limit_val_batches=None, max_epochs=-1, check_val_every_n_epoch=None)


@pytest.mark.parametrize("dni,batch,dropout", [
    (None, 6, 0.0), (DNIOptions(aux_weight=0.5), 6, 0.0),
    # the control draws an offset per boundary; at batch 6 every stream holds the same text, so rotating does nothing
    (DNIOptions(scale=1.0, lr=1e-2, injection="shuffled"), 4, 0.0),
    (DNIOptions(aux_weight=0.5, injection="none", target_unrolls=2, pending_targets=True), 6, 0.0),  # DNI + Aux's control
    (DNIOptions(), 6, 0.3),  # dropout draws from torch's global generator, which the checkpoint keeps
])
def test_flat_resume_continues_exactly_loss_by_loss(tmp_path, tiny_data, dni, batch, dropout):
    dm = tiny_data(batch_size=batch)
    per_epoch = len(dm.train_dataloader())
    total = per_epoch + per_epoch // 2 + 3  # batches: into the second epoch
    one = Losses()
    trainer(tmp_path / "one", max_steps=2 * total, callbacks=[one], enable_checkpointing=False).fit(
        seq_model(dm, dni=dni, dropout=dropout), dm)

    first, second = Losses(), Losses()
    cut = per_epoch + 2  # a mid-epoch cut
    latest = LatestCheckpoint(every_n_batches=1000, dirpath=str(tmp_path / "two"))
    trainer(tmp_path / "two", max_steps=2 * cut, callbacks=[first, latest]).fit(
        seq_model(dm, dni=dni, dropout=dropout), dm)
    resumed = seq_model(dm, seed=123, dni=dni, dropout=dropout)  # different init: everything must come from the checkpoint
    trainer(tmp_path / "two", max_steps=2 * total, callbacks=[second, LatestCheckpoint(dirpath=str(tmp_path / "two"))]
            ).fit(resumed, dm, ckpt_path=latest.last_path)
    assert len(one.losses) == total and len(first.losses) == cut and len(second.losses) == total - cut
    assert first.losses + second.losses == pytest.approx(one.losses, rel=1e-6, abs=1e-7)


def test_a_run_cut_after_meeting_its_early_stopping_rule_trains_no_further_on_resume(tmp_path, tiny_data):
    """Cut after the validation that met the rule, before the run could stop: Lightning restores the
    rule's state but not its stop request, so without the module's check the resumed run trains on."""
    dm = tiny_data(batch_size=6)

    def run(callbacks):  # "max" on a falling BPC: the second validation is no better, and patience 1 ends it
        stop = EarlyStopping(monitor="val/bpc", mode="max", patience=1)
        return trainer(tmp_path / "run", max_steps=200, limit_val_batches=None, val_check_interval=2,
                       check_val_every_n_epoch=None, callbacks=[stop, *callbacks])

    latest = LatestCheckpoint(every_n_batches=1000, dirpath=str(tmp_path / "run"))
    first = run([latest])
    first.fit(seq_model(dm), dm)
    assert first.should_stop and first.global_step == 8  # 2 validations of 2 batches, 2 updates a batch
    losses = Losses()
    second = run([losses])
    second.fit(seq_model(dm, seed=1), dm, ckpt_path=latest.last_path)
    assert second.global_step == first.global_step and losses.losses == []


@pytest.mark.parametrize("max_steps", [200, -1])  # a budget in steps, or in epochs only (as the PTB configs)
@pytest.mark.parametrize("before,after", [(3, 1), (1, 3)])
def test_a_patience_given_on_resume_is_the_rule_the_run_ends_by(tmp_path, tiny_data, lightning_log, before, after,
                                                                max_steps):
    """Lightning restores `EarlyStopping`'s patience from the checkpoint; the stopping rule may change on
    resume, so the patience given counts, and the log says so: the resumed run validates, trains and
    ends as a run with that patience from the start. Patience 3 is cut after 2 validations (one without
    progress); patience 1 ends there by itself, mid-epoch."""
    dm = tiny_data(batch_size=6)  # 14 batches an epoch, validations after every 3rd

    def run(folder, patience, steps, ckpt=None, seed=0):  # "max" on a falling BPC: no validation after the first is better
        seen, losses = Validations(), Losses()
        stop = EarlyStopping(monitor="val/bpc", mode="max", patience=patience)
        latest = LatestCheckpoint(every_n_batches=1000, dirpath=str(tmp_path / folder))
        t = trainer(tmp_path / folder, max_epochs=4, max_steps=steps, limit_val_batches=None, val_check_interval=3,
                    callbacks=[stop, seen, losses, latest])
        t.fit(seq_model(dm, seed=seed), dm, ckpt_path=ckpt)
        return seen.seen, losses.losses

    whole = run("whole", after, max_steps)
    cut = run("cut", before, 12 if before > after else max_steps)  # 2 validations, 2 updates a batch
    resumed = run("cut", after, max_steps, ckpt=str(tmp_path / "cut" / "latest.ckpt"), seed=1)
    assert len(cut[0]) == 2 and cut[0] + resumed[0] == whole[0]
    assert cut[1] + resumed[1] == pytest.approx(whole[1], rel=1e-6, abs=1e-7)
    assert f"patience {after} as given (the checkpoint's run had {before})" in lightning_log.text


def test_hier_resume_continues_exactly(tmp_path, tiny_data):
    dm = tiny_data(batch_size=6)
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
    assert len(one.losses) == total and len(first.losses) + len(second.losses) == total
    assert first.losses + second.losses == pytest.approx(one.losses, rel=1e-6, abs=1e-7)


def test_two_timescale_resume_continues_exactly(tmp_path):
    dm = digit_data()
    one, first, second = Losses("train/b_loss"), Losses("train/b_loss"), Losses("train/b_loss")
    trainer(tmp_path / "one", max_steps=20, callbacks=[one], enable_checkpointing=False).fit(
        two_timescale(dm, "dni"), dm)
    latest = LatestCheckpoint(every_n_batches=1000, dirpath=str(tmp_path / "two"))
    trainer(tmp_path / "two", max_steps=8, callbacks=[first, latest]).fit(two_timescale(dm, "dni"), dm)
    trainer(tmp_path / "two", max_steps=20, callbacks=[second]).fit(
        two_timescale(dm, "dni", seed=9), dm, ckpt_path=latest.last_path)
    assert first.losses + second.losses == pytest.approx(one.losses, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("dni", [None, DNIOptions(aux_weight=0.1),
                                 DNIOptions(discount=1.0, episodic=True, target_unrolls=3),
                                 DNIOptions(discount=1.0, target_unrolls=3, pending_targets=True),
                                 DNIOptions(discount=1.0, target_unrolls=3, pending_targets=True, least_squares=5,
                                            solve_every=3),
                                 DNIOptions(discount=1.0, target_unrolls=3, pending_targets=True, lookahead=9),
                                 DNIOptions(discount=1.0, target_unrolls=3, pending_targets=True, aux_weight=0.1)])
def test_copy_resume_continues_the_stream_and_the_curriculum_exactly(tmp_path, dni):
    def data():
        return RepeatCopyDataModule(batch_size=4, window=12, epoch_batches=6, eval_batch_size=4, eval_window=12,
                                    eval_batches=1, seed=3, lookahead=getattr(dni, "lookahead", 0))

    def run(root, steps, callbacks, ckpt=None):
        cur = Curriculum(threshold=1e9)  # every validation advances: the level changes during the run
        model = seq_model(data(), seed=0 if ckpt is None else 99, unroll=3, lr=1e-2, clip=1.0, dni=dni)
        trainer(root, max_steps=steps, val_check_interval=3, callbacks=[cur, *callbacks], **ENDLESS).fit(
            model, dm := data(), ckpt_path=ckpt)
        return cur, dm

    one = Losses("train/loss")
    cur_one, _ = run(tmp_path / "one", 4 * 14, [one])
    first, second = Losses("train/loss"), Losses("train/loss")
    latest = LatestCheckpoint(every_n_batches=1000, dirpath=str(tmp_path / "two"))
    run(tmp_path / "two", 4 * 8, [first, latest])  # cut mid-epoch, between validations
    cur_two, dm = run(tmp_path / "two", 4 * 14, [second, LatestCheckpoint(dirpath=str(tmp_path / "two"))],
                      ckpt=latest.last_path)
    assert len(first.losses) == 8 and len(second.losses) == 6
    assert first.losses + second.losses == pytest.approx(one.losses, rel=1e-6, abs=1e-7)
    assert first.levels + second.levels == one.levels and one.levels[-1] > one.levels[0]
    assert cur_two.history == cur_one.history and cur_two.solved == cur_one.solved
