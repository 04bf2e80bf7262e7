"""Resuming through the command line, followed from a directory other than the repository root:
the shipped config is found, the run lives under `--trainer.default_root_dir`, a resume that would
change the experiment stops and names each key, one with nothing left to train says so, and a
good resume continues in the run's own folder on one optimiser-step axis."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import data_args
from lightning.pytorch.callbacks import ModelCheckpoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqdni.cli import resume
from seqdni.cli.train import main
from seqdni.errors import UserError
from seqdni.training import checkpointing


def steps(run, key: str) -> list[int]:
    """The steps of `key` in the order logged: the event files are read in name order, and two writers
    of one process started within a second are named out of order (…pid.9 after …pid.10)."""
    ea = EventAccumulator(str(run))
    ea.Reload()
    return [e.step for e in sorted(ea.Scalars(key), key=lambda e: e.wall_time)]


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
    # trained without max_time, the run still records its training time, which a later max_time counts
    assert torch.load(latest, weights_only=True)["callbacks"]["Timer"]["time_elapsed"]["train"] > 0

    err = failure(capsys, [*args, f"--ckpt_path={latest}", "--model.hidden_size=64", "--data.batch_size=2"])
    assert "model.init_args.hidden_size is 32 in the checkpoint but 64 as given" in err
    assert "data.init_args.batch_size is 4 in the checkpoint but 2 as given" in err
    assert "drop these keys" in err
    err = failure(capsys, [*args, f"--ckpt_path={latest}"])
    assert "nothing to train: the checkpoint is at optimiser step 8" in err and "Raise --trainer.max_steps" in err
    err = failure(capsys, ["--ckpt_path", str(latest), "--trainer.max_steps=16"])  # no config: the run's is named
    assert f"needs the run's settings as well: add --config {run / 'config.yaml'}" in err
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
    samples = sorted(ea.Tensors("sample/text_summary"), key=lambda e: e.wall_time)
    assert [e.step for e in samples] == [8, 16]  # text samples on the same axis


def test_resumed_from_another_working_directory_the_run_keeps_its_best_and_is_tested_there(
        text_files, tmp_path, monkeypatch, recwarn):
    """The best checkpoint's path in the saved state is relative to the directory that wrote it; resumed
    from elsewhere (and validated no more), the run keeps its best score and path in its own folder and
    scores the test split at that checkpoint."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    args = ["--config", "configs/smoke.yaml", *data_args(text_files, tmp_path), "--trainer.default_root_dir=out",
            "--trainer.enable_progress_bar=false"]
    main([*args, "--trainer.max_steps=16"])  # a validation at step 12 writes the best checkpoint
    run = tmp_path / "a/out/runs/smoke/smoke/version_0"
    decoy = tmp_path / "b/out/runs/smoke/smoke/version_0/checkpoints/epoch=0-step=12.ckpt"  # the saved relative path
    decoy.parent.mkdir(parents=True)
    decoy.write_bytes(b"another run's file")
    monkeypatch.chdir(tmp_path / "b")
    main([*args, "--trainer.max_steps=20", f"--ckpt_path={run / 'checkpoints/latest.ckpt'}"])
    assert not [str(w.message) for w in recwarn if "dirpath has changed" in str(w.message)]
    ea = EventAccumulator(str(run))
    ea.Reload()
    assert [e.step for e in ea.Scalars("val/bpc")] == [12]
    assert [e.step for e in ea.Scalars("test/bpc")] == [12, 12]  # each phase tested at the best checkpoint, its step
    assert ea.Scalars("test/bpc")[1].value == pytest.approx(ea.Scalars("test/bpc")[0].value)
    state = next(v for k, v in torch.load(run / "checkpoints/latest.ckpt", weights_only=False)["callbacks"].items()
                 if k.startswith("ModelCheckpoint"))
    assert float(state["best_model_score"]) == pytest.approx(ea.Scalars("val/bpc")[0].value)
    assert Path(state["best_model_path"]).resolve() == (run / "checkpoints/epoch=0-step=12.ckpt").resolve()
    assert [p for p in (tmp_path / "b").rglob("*") if p.is_file()] == [decoy]  # nothing written where it ran


def test_a_best_checkpoint_gone_before_the_test_is_named_with_what_to_do(text_files, tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.chdir(tmp_path)
    args = ["--config", "configs/smoke.yaml", *data_args(text_files, tmp_path), "--trainer.enable_progress_bar=false"]
    main([*args, "--trainer.max_steps=16"])
    ckpts = tmp_path / "runs/smoke/smoke/version_0/checkpoints"
    (best,) = ckpts.glob("epoch=*.ckpt")
    best.unlink()
    err = failure(capsys, [*args, "--trainer.max_steps=20", f"--ckpt_path={ckpts / 'latest.ckpt'}"])
    assert f"the test split was not scored: the run's best checkpoint, {best.relative_to(tmp_path)}, is not there" in err
    assert "python -m seqdni.train test --config runs/smoke/smoke/version_0/config.yaml --ckpt_path <file>" in err
    assert torch.load(ckpts / "latest.ckpt", weights_only=False)["global_step"] == 20  # the training is saved
    main(["test", "--config", "runs/smoke/smoke/version_0/config.yaml", f"--ckpt_path={ckpts / 'latest.ckpt'}"])
    # the first run tested its best checkpoint (step 12); the command given scores latest.ckpt: each logged
    # at the optimiser step of the weights it scored
    assert steps(ckpts.parent, "test/bpc") == [12, 20]


def test_follow_run_folder_moves_a_states_paths_only_for_a_checkpoint_of_the_callbacks_own_folder(tmp_path):
    here = tmp_path / "moved/checkpoints"
    cb = ModelCheckpoint(dirpath=str(here), monitor="val/bpc")
    old = "runs/x/version_0/checkpoints"

    def saved():
        return {"callbacks": {cb.state_key: {
            "dirpath": old, "best_model_path": f"{old}/best-step=12.ckpt", "best_model_score": torch.tensor(1.5),
            "kth_best_model_path": f"{old}/best-step=12.ckpt", "kth_value": torch.tensor(1.5),
            "last_model_path": "", "best_k_models": {f"{old}/best-step=12.ckpt": torch.tensor(1.5)}}}}

    ckpt = saved()
    checkpointing.follow_run_folder(ckpt, [cb], loaded=str(here / "latest.ckpt"))  # the run's own checkpoint
    cb.load_state_dict(ckpt["callbacks"][cb.state_key])
    assert cb.best_model_path == str(here / "best-step=12.ckpt") and float(cb.best_model_score) == 1.5
    assert list(cb.best_k_models) == [str(here / "best-step=12.ckpt")]
    for elsewhere in (str(tmp_path / "another/checkpoints/latest.ckpt"), None):  # a new run from another's checkpoint
        ckpt = saved()
        checkpointing.follow_run_folder(ckpt, [cb], loaded=elsewhere)
        assert ckpt == saved()  # Lightning's own rule


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


def test_a_cosine_schedule_keeps_its_horizon_on_resume():
    """Its rate reaches 0 at trainer.max_steps: a resume that moved it would jump to another curve."""
    def config(schedule, max_steps):
        return {"model": {"class_path": "seqdni.training.SeqModel", "init_args": {"lr_schedule": schedule}},
                "trainer": {"max_steps": max_steps}}

    checkpoint = {"seqdni": {"config": config("cosine", 1000)}}
    resume.check_settings(checkpoint, config("cosine", 1000), "latest.ckpt")
    with pytest.raises(UserError, match=r"model.lr_schedule cosine.*1000 in the checkpoint but 4000 as given.*"
                                        r"--trainer.max_steps 1000"):
        resume.check_settings(checkpoint, config("cosine", 4000), "latest.ckpt")
    constant = {"seqdni": {"config": config("constant", 1000)}}
    resume.check_settings(constant, config("constant", 4000), "latest.ckpt")  # a constant rate has no horizon
    with pytest.raises(UserError, match=r"model.init_args.lr_schedule is 'constant' in the checkpoint but 'cosine'"):
        resume.check_settings(constant, config("cosine", 4000), "latest.ckpt")  # the conflict, not the horizon
    unset = {"seqdni": {"config": config("cosine", -1)}}  # earlier versions trained this at a constant rate
    with pytest.raises(UserError, match=r"cosine but no trainer.max_steps.*start a new run"):
        resume.check_settings(unset, config("cosine", 1000), "latest.ckpt")


def test_a_resume_on_data_of_another_vocabulary_is_refused(text_files, tmp_path, monkeypatch, capsys):
    """Data files may move on resume, but the characters index the embedding and the output layer."""
    monkeypatch.chdir(tmp_path)
    args = ["--config", "configs/smoke.yaml", *data_args(text_files, tmp_path), "--trainer.enable_progress_bar=false"]
    main([*args, "--trainer.max_steps=4"])
    latest = tmp_path / "runs/smoke/smoke/version_0/checkpoints/latest.ckpt"
    other = tmp_path / "other.txt"
    other.write_text(Path(text_files["train"]).read_text() + "~^\n")
    err = failure(capsys, [*args, "--trainer.max_steps=8", f"--data.train_files=[{other}]", f"--ckpt_path={latest}"])
    assert "was trained on a vocabulary of" in err and "it adds ['^', '~']" in err and "give the data files" in err
    assert str(other) not in (latest.parent.parent / "config.yaml").read_text()  # refused before it is rewritten
    moved = tmp_path / "moved.txt"
    moved.write_text(Path(text_files["train"]).read_text())
    main([*args, "--trainer.max_steps=8", f"--data.train_files=[{moved}]", f"--ckpt_path={latest}"])  # same text
