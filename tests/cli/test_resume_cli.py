"""Resuming through the command line, followed from a directory other than the repository root:
the shipped config is found, the run lives under `--trainer.default_root_dir`, a resume that would
change the experiment stops and names each key, one with nothing left to train says so, and a
good resume continues in the run's own folder on one optimiser-step axis."""

from __future__ import annotations

import pytest
from helpers import data_args
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqdni.cli import resume
from seqdni.cli.train import main
from seqdni.errors import UserError


def steps(run, key: str) -> list[int]:
    ea = EventAccumulator(str(run))
    ea.Reload()
    return [e.step for e in ea.Scalars(key)]


def failure(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = " ".join(capsys.readouterr().err.split())
    assert exit_.value.code == 1 and "Traceback" not in err
    return err


def test_resume_from_another_directory(text_files, tmp_path, monkeypatch, capsys, lightning_log):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the shipped one is used
    args = ["--config", "configs/smoke.yaml", *data_args(text_files, tmp_path), "--trainer.default_root_dir=out",
            "--trainer.enable_progress_bar=false", "--trainer.max_steps=8"]
    main(args)
    run = tmp_path / "out/runs/smoke/smoke/version_0"
    latest = run / "checkpoints/latest.ckpt"
    assert latest.is_file() and steps(run, "train/bpc") == [4, 8]

    err = failure(capsys, [*args, f"--ckpt_path={latest}", "--model.hidden_size=64", "--data.batch_size=2"])
    assert "model.init_args.hidden_size is 32 in the checkpoint but 64 as given" in err
    assert "data.init_args.batch_size is 4 in the checkpoint but 2 as given" in err
    assert "drop these keys" in err
    err = failure(capsys, [*args, f"--ckpt_path={latest}"])
    assert "nothing to train: the checkpoint is at optimiser step 8" in err and "Raise --trainer.max_steps" in err
    err = failure(capsys, [*args, f"--ckpt_path={latest}", "--trainer.max_steps=-1", "--trainer.max_time=00:00:00:00"])
    assert "max_time 0:00:00 leaves 0:00:00 (it counts the" in err and "Raise --trainer.max_time" in err

    resumed = [a for a in args if not a.startswith("--trainer.max_steps")]
    main([*resumed, "--trainer.max_steps=16", f"--ckpt_path={latest}"])
    assert "Resuming at optimiser step 8: max_steps 16 leaves 8 optimiser steps" in lightning_log.text
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]  # the same folder, not version_1
    assert steps(run, "train/bpc") == [4, 8, 12, 16]  # one x axis: optimiser steps, continued
    assert steps(run, "val/bpc") == [12]
    ea = EventAccumulator(str(run))
    ea.Reload()
    assert [e.step for e in ea.Tensors("sample/text_summary")] == [8, 16]  # text samples on the same axis


def test_a_budget_counts_what_the_checkpoint_trained():
    ckpt = {"global_step": 40, "epoch": 2, "callbacks": {"Timer": {"time_elapsed": {"train": 75.0}}}}
    assert resume.budgets(ckpt, 100, 5, 120.0) == [
        "max_steps 100 leaves 60 optimiser steps", "max_epochs 5 leaves 3",
        "max_time 0:02:00 leaves 0:00:45 (it counts the 0:01:15 already trained)"]
    with pytest.raises(UserError, match=r"nothing to train: .* after 0:01:15 of training, and max_time 0:01:00 "
                                        r"leaves 0:00:00 \(it counts .*Raise --trainer.max_time"):
        resume.budgets(ckpt, -1, None, 60.0)
    assert resume.budgets(None, -1, None, 60.0) == ["max_time 0:01:00 leaves 0:01:00"]


def test_an_older_checkpoint_is_compared_on_its_model_hyperparameters():
    ckpt = {"seqdni": {"format": 3}, "hyper_parameters": {
        "_class_path": "seqdni.training.SeqModel", "task": {"name": "chars"}, "hidden_size": 32, "dni": None}}
    given = {"model": {"class_path": "seqdni.training.SeqModel",
                       "init_args": {"hidden_size": 32, "dni": {"scale": 0.1}, "new_option": 1}},
             "trainer": {"max_steps": 99}}
    with pytest.raises(UserError, match=r"model.init_args.dni is unset in the checkpoint but \{'scale': 0.1\}"):
        resume.check_settings(ckpt, given, "old.ckpt")
    given["model"]["init_args"]["dni"] = None
    resume.check_settings(ckpt, given, "old.ckpt")  # keys only one side knows are not compared
    given["model"]["class_path"] = "seqdni.training.HierLM"
    with pytest.raises(UserError, match=r"model.class_path is 'seqdni.training.SeqModel' in the checkpoint but "
                                        r"'seqdni.training.HierLM' as given") as err:
        resume.check_settings(ckpt, given, "old.ckpt")
    assert "hidden_size" not in str(err.value)


def test_the_settings_a_resume_may_change_are_not_compared():
    saved = {"trainer": {"max_steps": 10, "precision": "32-true", "logger": {"init_args": {"name": "a"}}},
             "data": {"init_args": {"cache_dir": "/a", "batch_size": 4}}}
    given = {"trainer": {"max_steps": 20, "precision": "bf16-mixed", "logger": {"init_args": {"name": "b"}}},
             "data": {"init_args": {"cache_dir": "/b", "batch_size": 4}}}
    assert [k for k, *_ in resume.differences(saved, given)] == ["trainer.precision"]


def test_settings_newer_than_the_checkpoint_are_named_and_conflicts_still_stop():
    saved = {"model": {"class_path": "seqdni.training.SeqModel", "init_args": {"lr": 0.002, "dni": None}},
             "trainer": {"max_steps": 10}}
    checkpoint = {"seqdni": {"config": saved}}
    given = {"model": {"class_path": "seqdni.training.SeqModel",
                       "init_args": {"lr": 0.002, "dni": None, "init_range": 0.1}},
             "trainer": {"max_steps": 20, "max_time": None}}  # stopping rules may change and are not listed
    with pytest.warns(UserWarning, match=r"before these settings existed.*: model\.init_args\.init_range = 0\.1$"):
        resume.check_settings(checkpoint, given, "latest.ckpt")
    given["model"]["init_args"]["lr"] = 0.001
    with pytest.raises(UserError, match=r"model\.init_args\.lr is 0\.002 in the checkpoint but 0\.001 as given"):
        resume.check_settings(checkpoint, given, "latest.ckpt")
