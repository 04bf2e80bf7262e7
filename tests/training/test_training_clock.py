"""`TrainingClock`: the process CPU seconds of training, validations excluded, logged at each
validation and at the end, and carried across a resume."""

from __future__ import annotations

import lightning as L
import torch
from helpers import seq_model, trainer
from lightning.pytorch.loggers.logger import Logger

from seqdni.training import LatestCheckpoint, TrainingClock
from seqdni.training import callbacks as callbacks_module


class Recorder(Logger):
    name, version = "recorder", 0

    def __init__(self):
        super().__init__()
        self.points = []

    def log_metrics(self, metrics, step=None):
        if "time/train_cpu_seconds" in metrics:
            self.points.append((step, metrics["time/train_cpu_seconds"]))

    def log_hyperparams(self, *args, **kwargs):
        pass


class FakeCPU(L.Callback):
    """A process clock that advances 1 s per training batch and 100 s per validation batch."""

    def __init__(self, monkeypatch):
        self.now = 0.0
        monkeypatch.setattr(callbacks_module.time, "process_time", lambda: self.now)

    def on_train_batch_end(self, *args):
        self.now += 1.0

    def on_validation_batch_end(self, *args):
        self.now += 100.0


def fit(tmp_path, dm, monkeypatch, max_steps, ckpt_path=None):
    rec = Recorder()
    t = trainer(tmp_path, max_steps=max_steps, logger=rec, limit_val_batches=2, val_check_interval=2,
                check_val_every_n_epoch=None, num_sanity_val_steps=1,
                callbacks=[FakeCPU(monkeypatch), TrainingClock(),
                           LatestCheckpoint(every_n_batches=1, dirpath=str(tmp_path / "c"))])
    t.fit(seq_model(dm), datamodule=dm, ckpt_path=ckpt_path)
    return rec.points


def test_training_seconds_exclude_validation_and_survive_a_resume(tmp_path, tiny_data, monkeypatch):
    dm = tiny_data()  # window 8, unroll 4: two optimiser steps per batch, a validation every 2 batches
    points = fit(tmp_path, dm, monkeypatch, max_steps=10)
    assert points == [(4, 2.0), (8, 4.0), (10, 5.0)]  # a second per batch; the sanity check and validations not
    saved = torch.load(tmp_path / "c" / "latest.ckpt", weights_only=False)
    assert saved["callbacks"]["TrainingClock"]["seconds"] == 5.0
    resumed = fit(tmp_path, dm, monkeypatch, max_steps=14, ckpt_path=str(tmp_path / "c" / "latest.ckpt"))
    assert resumed == [(12, 6.0), (14, 7.0)]


def test_a_checkpoint_without_the_clock_is_said_to_restart_it(tmp_path, tiny_data, monkeypatch):
    import pytest

    dm = tiny_data()
    fit(tmp_path, dm, monkeypatch, max_steps=4)
    path = tmp_path / "c" / "latest.ckpt"
    saved = torch.load(path, weights_only=False)
    del saved["callbacks"]["TrainingClock"]
    torch.save(saved, path)
    with pytest.warns(UserWarning, match="holds no training time .* counts from this resume at step 4"):
        resumed = fit(tmp_path, dm, monkeypatch, max_steps=8, ckpt_path=str(path))
    assert resumed == [(8, 2.0), (8, 2.0)]
