"""`python -m seqdni.train` in a fresh process: trains, logs, checkpoints, tests, and names a bad key;
then `python -m seqdni.sample` on what it wrote."""

from __future__ import annotations

import pytest
import torch
from helpers import ROOT, data_args, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqdni.cli.sample import sample

SMOKE = str(ROOT / "configs/smoke.yaml")
pytestmark = pytest.mark.slow


def test_smoke_run_of_the_real_cli_then_sample(text_files, tmp_path):
    """`python -m seqdni.train` without the fit subcommand: trains, logs, checkpoints, tests."""
    res = run_cli("seqdni.train", ["--config", SMOKE, *data_args(text_files, tmp_path),
                                   "--model.dni={\"scale\": 0.1}", "--model.probe_every=8", "--model.probe_rows=2",
                                   "--model.probe_unrolls=2"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs/smoke/smoke/version_0"
    assert (run / "vocab.json").is_file() and (run / "config.yaml").is_file()
    latest = run / "checkpoints/latest.ckpt"
    assert latest.is_file() and len(list((run / "checkpoints").glob("epoch=*.ckpt"))) == 1
    ea = EventAccumulator(str(run))
    ea.Reload()
    scalars = set(ea.Tags()["scalars"])
    for key in ("train/bpc", "val/bpc", "test/bpc", "train/lr", "train/grad_norm", "train/chars_per_sec",
                "sg/loss", "sg/cosine", "sg/pred_norm", "sg/target_norm", "sg/probe_cosine"):
        assert key in scalars, key
    assert "sample/text_summary" in ea.Tags()["tensors"]
    vals = [e.value for e in ea.Scalars("val/bpc")]
    assert vals[-1] < vals[0]
    # the probe is on the optimiser-step axis of every other scalar (4 steps a batch, 24 in all)
    assert [e.step for e in ea.Scalars("sg/probe_cosine")] == [8, 16, 24]

    out = run_cli("seqdni.sample", ["--ckpt", str(latest), "--prime", "the cat", "--length", "40", "--seed", "7"],
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("the cat") and "_" not in out.stdout
    again = sample(str(latest), prime="the cat", length=40, seed=7)
    assert out.stdout.rstrip("\n") == again.rstrip("\n")  # same seed, same text


def test_hier_lm_through_the_cli_trains_logs_checkpoints_and_samples(text_files, tmp_path):
    res = run_cli("seqdni.train", ["--config", SMOKE, *data_args(text_files, tmp_path),
                                   "--model=seqdni.training.HierLM", "--model.tick=2", "--model.upper_unroll=4",
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
    assert torch.load(latest, weights_only=True)["seqdni"]["class_path"] == "seqdni.training.systems.HierLM"
    out = run_cli("seqdni.sample", ["--ckpt", str(latest), "--prime", "the cat", "--length", "40", "--seed", "3"],
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("the cat") and len(out.stdout.rstrip("\n")) >= 47
    assert out.stdout.rstrip("\n") == sample(str(latest), prime="the cat", length=40, seed=3).rstrip("\n")


def test_fit_subcommand_and_print_config(text_files, tmp_path):
    res = run_cli("seqdni.train", ["fit", "--config", SMOKE, *data_args(text_files, tmp_path), "--print_config"],
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "unroll: 4" in res.stdout and "hidden_size: 32" in res.stdout


def test_unknown_config_key_is_named(tmp_path):
    res = run_cli("seqdni.train", ["--config", SMOKE, "--model.hiden_size=64"], cwd=tmp_path)
    assert res.returncode != 0
    assert "hiden_size" in res.stderr


def test_help_alone_lists_every_key_under_the_command_users_type(capsys):
    from seqdni.cli.train import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert out.startswith("usage: python -m seqdni.train")
    assert "--trainer.max_steps" in out and "--model.help" in out and "--data.help" in out
