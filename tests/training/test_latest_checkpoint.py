"""`LatestCheckpoint`: each save is staged beside the file and renamed (a run killed mid-write leaves
only the staging file, which the next start removes); the saves fall on an even schedule and where
training stops; a run stopped by SIGTERM resumes as if it had not stopped."""

from __future__ import annotations

import contextlib
import os
import signal

import lightning as L
import pytest
import torch
from helpers import Losses, Validations, seq_model, trainer

from seqdni.training import LatestCheckpoint


def test_a_stale_staging_file_is_removed_and_the_checkpoint_written_whole(tmp_path, tiny_data, monkeypatch):
    import tempfile

    ckpt_dir = tmp_path / "ckpts"
    ckpt_dir.mkdir()
    stale = ckpt_dir / "latest.ckpt.tmp"
    stale.write_bytes(b"half a checkpoint from a killed run")
    (ckpt_dir / "best-step=2.ckpt.tmp").write_bytes(b"another")

    def no_system_temp(*a, **kw):
        raise AssertionError("a checkpoint was staged in the system temp folder")

    monkeypatch.setattr(tempfile, "mkstemp", no_system_temp)  # where Lightning's own writer stages
    dm = tiny_data()
    trainer(tmp_path, max_steps=4, callbacks=[LatestCheckpoint(every_n_batches=1, dirpath=str(ckpt_dir))]).fit(
        seq_model(dm), datamodule=dm)
    assert not stale.exists()
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["latest.ckpt"]
    assert torch.load(ckpt_dir / "latest.ckpt", weights_only=True)["global_step"] == 4


def test_saving_says_nothing_about_weights_only(tmp_path, tiny_data, lightning_log, recwarn):
    dm = tiny_data()
    trainer(tmp_path, max_steps=2, callbacks=[LatestCheckpoint(every_n_batches=1, dirpath=str(tmp_path / "c"))]
            ).fit(seq_model(dm), datamodule=dm)
    assert (tmp_path / "c" / "latest.ckpt").is_file()
    assert "max_steps=2" in lightning_log.text  # the listener hears Lightning's own messages
    assert "weights_only" not in lightning_log.text
    assert not [w for w in recwarn if "weights_only" in str(w.message)]


def test_a_failed_save_keeps_the_last_checkpoint_and_says_where_it_is(tmp_path, tiny_data, monkeypatch):
    import errno

    import pytest

    from seqdni.errors import UserError
    from seqdni.training import checkpointing

    dm = tiny_data()
    ckpt_dir = tmp_path / "c"
    t = trainer(tmp_path, max_steps=2, callbacks=[LatestCheckpoint(every_n_batches=1, dirpath=str(ckpt_dir))])
    t.fit(seq_model(dm), datamodule=dm)
    good = (ckpt_dir / "latest.ckpt").read_bytes()

    def full(obj, f, *a, **kw):  # the disk fills up halfway through the staging file
        open(f, "wb").write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpointing.torch, "save", full)
    with pytest.raises(UserError, match=r"No space left on device.*the last complete one is .*latest.ckpt"):
        LatestCheckpoint(dirpath=str(ckpt_dir)).save(t)
    assert (ckpt_dir / "latest.ckpt").read_bytes() == good and not (ckpt_dir / "latest.ckpt.tmp").exists()


def test_a_sigterm_saves_the_batch_it_stops_at(tmp_path, tiny_data):
    """Lightning ends training on SIGTERM after the batch in flight; the resume point is that batch,
    not the last scheduled save (here there is none: every 1000 batches)."""

    class Terminate(L.Callback):  # the scheduler's SIGTERM, arriving during the third batch
        step = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 2:
                handler = signal.getsignal(signal.SIGTERM)  # the fit's: never let SIGTERM end pytest
                assert callable(handler) and handler is not before, "the fit installed no SIGTERM handler"
                os.kill(os.getpid(), signal.SIGTERM)
                self.step = trainer.global_step

    before = signal.getsignal(signal.SIGTERM)
    dm = tiny_data()
    ckpt_dir = tmp_path / "c"
    term = Terminate()
    t = trainer(tmp_path, max_steps=200, callbacks=[LatestCheckpoint(every_n_batches=1000, dirpath=str(ckpt_dir)), term])
    with pytest.raises(SystemExit):  # Lightning's SIGTERMException
        t.fit(seq_model(dm), datamodule=dm)
    assert term.step > 0 and t.global_step == term.step  # training stopped at that batch
    assert torch.load(ckpt_dir / "latest.ckpt", weights_only=True)["global_step"] == term.step
    assert signal.getsignal(signal.SIGTERM) == before  # the fit gave the handler back


class TerminateAt(L.Callback):
    """Sends this process a SIGTERM once: at the end of the run's training batch `batch` (counted from
    0), or during the first batch of the validation that follows it."""

    def __init__(self, batch: int, during_validation: bool):
        self.batch, self.during_validation, self.sent = batch, during_validation, False

    def _send(self, trainer):
        if not self.sent and trainer.fit_loop.epoch_loop.total_batch_idx == self.batch:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.during_validation:
            self._send(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.during_validation and not trainer.sanity_checking:
            self._send(trainer)


EVERY_3 = dict(val_check_interval=3, check_val_every_n_epoch=None)  # validations after batches 2, 5, 8


@pytest.mark.parametrize("schedule,batch,during_validation", [
    (EVERY_3, 2, False),  # at a batch a validation follows: Lightning would resume past that validation
    (EVERY_3, 5, True),  # during a validation: Lightning stops it, and the resume repeated batches 3-5
    (EVERY_3, 3, False),  # between validations
    ({}, 13, False),  # at the last batch of the first epoch (14 batches), whose end validates
    ({}, 13, True),
])
def test_a_sigterm_resumes_with_every_validation_and_loss_of_the_uninterrupted_run(
        tmp_path, tiny_data, schedule, batch, during_validation):
    dm = tiny_data(batch_size=6)
    kw = dict(limit_val_batches=None, max_epochs=3, **schedule)

    def run(folder, *callbacks, ckpt=None, seed=0):
        seen, losses = Validations(), Losses()
        latest = LatestCheckpoint(every_n_batches=1000, dirpath=str(tmp_path / folder))
        t = trainer(tmp_path / folder, callbacks=[seen, losses, *callbacks, latest], **kw)
        with contextlib.suppress(SystemExit):  # Lightning's SIGTERMException ends a terminated fit
            t.fit(seq_model(dm, seed=seed), dm, ckpt_path=ckpt)
        return seen.seen, losses.losses, t.interrupted

    whole = run("whole")
    cut = run("cut", TerminateAt(batch, during_validation))
    resumed = run("cut", ckpt=str(tmp_path / "cut" / "latest.ckpt"), seed=1)
    assert cut[2] and not resumed[2] and not whole[2]
    assert cut[0] and cut[0] + resumed[0] == whole[0]
    assert cut[1] + resumed[1] == pytest.approx(whole[1], rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("schedule,batch", [
    (dict(max_steps=2 * 9, val_check_interval=3), 8),  # the validation after the step budget's last batch
    (dict(max_epochs=1), 13),  # the validation at the end of the last epoch (14 batches)
])
def test_a_sigterm_where_the_fit_ends_anyway_lets_it_finish(tmp_path, tiny_data, schedule, batch):
    """Stopped as interrupted, the run would say to resume, and a resume would find nothing to train."""
    dm = tiny_data(batch_size=6)
    term = TerminateAt(batch, during_validation=True)
    latest = LatestCheckpoint(every_n_batches=1000, dirpath=str(tmp_path / "c"))
    t = trainer(tmp_path, limit_val_batches=None, callbacks=[term, latest], **{"max_epochs": 3, **schedule})
    t.fit(seq_model(dm), dm)  # no SIGTERMException
    assert term.sent and not t.interrupted and t.global_step == 2 * (batch + 1)
    assert torch.load(latest.last_path, weights_only=True)["global_step"] == t.global_step


class SaveRecorder(LatestCheckpoint):
    """Records, at each save, the batch of the run and the optimiser step, instead of writing."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.batches: list[int] = []
        self.steps: list[int] = []
        self.validations: list[int] = []  # validation batches run before each save

    def save(self, trainer):
        self.batches.append(trainer.fit_loop.epoch_loop.total_batch_idx + 1)
        self.steps.append(trainer.global_step)
        self.validations.append(trainer.fit_loop.epoch_loop.val_loop.batch_progress.total.completed)


def test_saves_fall_every_n_batches_of_the_run_across_epoch_ends(tmp_path, tiny_data):
    """Counted within each epoch, saves every 3 batches drift at each epoch end (with 7 batches an epoch:
    3, 6, then 10, 13, four apart). Counted over the run, they stay 3 apart; each epoch's end saves too."""
    dm = tiny_data()
    saves = SaveRecorder(every_n_batches=3, dirpath=str(tmp_path / "c"))
    t = trainer(tmp_path, max_epochs=3, callbacks=[saves])
    t.fit(seq_model(dm), datamodule=dm)
    per_epoch = t.num_training_batches
    assert per_epoch % 3 != 0, f"the test needs epochs that 3 does not divide, got {per_epoch} batches"
    scheduled = [b for b in range(1, 3 * per_epoch + 1) for _ in range((b % 3 == 0) + (b % per_epoch == 0))]
    assert saves.batches == scheduled  # every 3rd batch of the run, and each epoch's last


def test_a_stop_request_that_waits_for_min_steps_saves_once_when_it_stops(tmp_path, tiny_data):
    """Lightning keeps `should_stop` set while `min_steps` (or the first epoch, which it also waits for)
    is unmet and trains on; the stop is the batch where both are met, and that is the one save (the
    schedule, every 1000 batches, adds none)."""
    import lightning as L

    class StopAtOnce(L.Callback):  # early stopping's request, at the first batch
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            trainer.should_stop = True

    dm = tiny_data()
    saves = SaveRecorder(every_n_batches=1000, dirpath=str(tmp_path / "c"))
    t = trainer(tmp_path, min_steps=20, callbacks=[StopAtOnce(), saves])
    t.fit(seq_model(dm), datamodule=dm)
    assert t.global_step >= 20 and saves.steps == [t.global_step]


def test_a_save_at_a_batch_a_validation_follows_waits_for_its_end(tmp_path, tiny_data):
    """Lightning resumes a checkpoint of such a batch as if its validation had run: the saves there come
    after it (here every 3rd batch validates, 2 validation batches, and every 3rd batch saves)."""
    dm = tiny_data(batch_size=6)
    saves = SaveRecorder(every_n_batches=3, dirpath=str(tmp_path / "c"))
    t = trainer(tmp_path, max_steps=2 * 9, limit_val_batches=2, val_check_interval=3, check_val_every_n_epoch=None,
                callbacks=[saves])
    t.fit(seq_model(dm), datamodule=dm)
    assert sorted(set(saves.batches)) == [3, 6, 9]  # (the last also at the epoch's end, where the fit ends)
    assert saves.validations == [2 * b // 3 for b in saves.batches]  # each after the validation of its batch
