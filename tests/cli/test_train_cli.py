"""The command lines: every shipped config, the real CLI, sampling, and their error messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqdni.dni import DNIOptions
from seqdni.lit import SeqModel
from seqdni.model import Task
from seqdni.sample import CheckpointError, load_checkpoint, sample
from seqdni.train import SeqDNICLI

ROOT = Path(__file__).resolve().parents[1]
# Character-level configs (other tasks test their own configs beside their code's tests).
CONFIGS = sorted([*(ROOT / "configs").glob("ptb*/*.yaml"), ROOT / "configs/smoke.yaml"])


def data_args(text_files, tmp_path) -> list[str]:
    return [f"--data.train_files=[{text_files['train']}]", f"--data.val_files=[{text_files['valid']}]",
            f"--data.test_files=[{text_files['test']}]", f"--data.cache_dir={tmp_path / 'cache'}",
            "--data.download=false"]


def instantiate(config: Path, tmp_path: Path, *args: str) -> SeqDNICLI:
    """A config as `python -m seqdni.train` builds it, without running: `.model`, `.datamodule`."""
    return SeqDNICLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                     run=False, args=["--config", str(config), *args, f"--trainer.default_root_dir={tmp_path}"])


def run_cli(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_shipped_config_parses_and_instantiates(config, text_files, tmp_path):
    cli = instantiate(config, tmp_path, *data_args(text_files, tmp_path))
    model = cli.model
    assert model.hparams.window % model.hparams.unroll == 0
    assert model.vocab.symbols == cli.datamodule.symbols  # linked, not typed twice
    name = config.stem.removeprefix("hier-")  # hierarchical configs: tests/test_hier.py checks the rest
    if name == "smoke":
        return
    assert (model.dni is not None) == name.startswith("dni")
    assert model.hparams.unroll == int("".join(ch for ch in name.split("-")[0] if ch.isdigit()))
    if name.endswith("-aux"):
        assert model.dni.aux_weight > 0


def test_config_sets_differ_only_in_unroll_and_dni():
    import yaml

    for folder in ("ptb", "ptb-cpu"):
        base = yaml.safe_load((ROOT / "configs" / folder / "bptt8.yaml").read_text())
        for path in (ROOT / "configs" / folder).glob("*.yaml"):
            if path.name.startswith("hier-"):  # another model: tests/test_hier.py compares those
                continue
            cfg = yaml.safe_load(path.read_text())
            args = cfg["model"]["init_args"]
            args.pop("unroll"), args.pop("dni", None), args.pop("probe_every", None)
            cfg["trainer"]["logger"]["init_args"].pop("name")
            ref = yaml.safe_load(yaml.safe_dump(base))
            ref["model"]["init_args"].pop("unroll"), ref["trainer"]["logger"]["init_args"].pop("name")
            assert cfg == ref, path


def test_smoke_run_of_the_real_cli_then_sample(text_files, tmp_path):
    """`python -m seqdni.train` without the fit subcommand: trains, logs, checkpoints, tests."""
    res = run_cli("seqdni.train", ["--config", str(ROOT / "configs/smoke.yaml"), *data_args(text_files, tmp_path),
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

    out = run_cli("seqdni.sample", ["--ckpt", str(latest), "--prime", "the cat", "--length", "40", "--seed", "7"],
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("the cat") and "_" not in out.stdout
    again = sample(str(latest), prime="the cat", length=40, seed=7)
    assert out.stdout.rstrip("\n") == again.rstrip("\n")  # same seed, same text


def test_fit_subcommand_and_print_config(text_files, tmp_path):
    res = run_cli("seqdni.train", ["fit", "--config", str(ROOT / "configs/smoke.yaml"), *data_args(text_files, tmp_path),
                                   "--print_config"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "unroll: 4" in res.stdout and "hidden_size: 32" in res.stdout


def test_unknown_config_key_is_named(tmp_path):
    res = run_cli("seqdni.train", ["--config", str(ROOT / "configs/smoke.yaml"), "--model.hiden_size=64"],
                  cwd=tmp_path)
    assert res.returncode != 0
    assert "hiden_size" in res.stderr


def test_sampling_is_reproducible_and_rejects_unknown_characters(tmp_path):
    lm = SeqModel(Task("chars", list("\n_abc")), window=4, unroll=2, embed_dim=4, hidden_size=8, dni=DNIOptions())
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": lm.state_dict(), "hyper_parameters": dict(lm.hparams), "seqdni": {"format": 1},
                "pytorch-lightning_version": "2.6.6"}, path)
    assert sample(str(path), prime="ab", length=30, seed=1) == sample(str(path), prime="ab", length=30, seed=1)
    assert sample(str(path), prime="ab", length=30, seed=1) != sample(str(path), prime="ab", length=30, seed=2)
    with pytest.raises(ValueError, match=r"outside the model's vocabulary: 'x', 'Z'"):
        sample(str(path), prime="axbZ")


def test_bad_checkpoints_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.ckpt")
    lm = SeqModel(Task("chars", list("\n_ab")), window=4, unroll=2, embed_dim=4, hidden_size=8)
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": lm.state_dict(), "hyper_parameters": dict(lm.hparams), "seqdni": {"format": 1}}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a seqdni checkpoint"):
        load_checkpoint(foreign)
    evil = tmp_path / "evil.ckpt"
    torch.save({"seqdni": {}, "hyper_parameters": {}, "payload": Path("x")}, evil)  # a pickled object
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(evil)
    res = run_cli("seqdni.sample", ["--ckpt", str(truncated)], cwd=tmp_path)
    assert res.returncode != 0 and "error:" in res.stderr and "Traceback" not in res.stderr
