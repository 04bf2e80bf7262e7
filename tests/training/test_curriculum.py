"""The Copy curriculum: the level goes up only when validation says it is solved, `patience` times in a row."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from seqdni.data import CopyDataModule
from seqdni.errors import UserError
from seqdni.training import Curriculum


def fake_trainer(dm, step: int = 0):
    return SimpleNamespace(datamodule=dm, sanity_checking=False, state=SimpleNamespace(fn="fit"), loggers=[],
                           log_dir=None, is_global_zero=True, global_step=step, callback_metrics={},
                           should_stop=False)


def test_curriculum_advances_only_when_the_criterion_holds():
    dm = CopyDataModule(seed=0)
    cur = Curriculum(threshold=0.25, patience=2, max_level=3)  # 0.25: exact in float32, so "below" is tested
    trainer, module = fake_trainer(dm), SimpleNamespace(hparams={"unroll": 3})
    levels = []
    for i, err in enumerate([0.5, 0.1, 0.3, 0.1, 0.2, 0.1, 0.25, 0.0, 0.0, 0.0, 0.01]):
        trainer.global_step, trainer.callback_metrics = i, {"val/bits_error": torch.tensor(err)}
        cur.on_validation_end(trainer, module)
        levels.append(dm.level)
        if trainer.should_stop:
            break
    # below 0.25 twice in a row (0.1, 0.2) -> 2; once then 0.25 (not below) -> stays; 0.0 twice -> 3; twice -> stop
    assert levels == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4]
    assert cur.solved == 3 and trainer.should_stop
    assert [h["level"] for h in cur.history] == [1] + levels[:-1]  # each validation's level when measured
    with pytest.raises(UserError, match="val/bits_error"):
        trainer.callback_metrics = {"val/bpc": torch.tensor(1.0)}
        cur.on_validation_end(trainer, module)
    with pytest.raises(ValueError, match="needs a data module with a `level`"):
        cur.on_fit_start(fake_trainer(object()), module)


def test_curriculum_reports_the_score_at_the_end(lightning_log):
    dm = CopyDataModule(seed=0)
    cur = Curriculum(threshold=0.25)
    trainer, module = fake_trainer(dm), SimpleNamespace(hparams={"unroll": 3})
    for i, err in enumerate([0.1, 0.5, 0.1, 0.9]):
        trainer.global_step, trainer.callback_metrics = 10 * (i + 1), {"val/bits_error": torch.tensor(err)}
        cur.on_validation_end(trainer, module)
    cur.on_fit_end(trainer, module)
    assert "Curriculum: largest N solved 2 (at optimiser step 30); last level tried 3" in lightning_log.text
