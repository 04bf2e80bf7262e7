"""Sampling from a checkpoint: reproducible, refuses unknown characters, and clear errors for files
that are not seqdni checkpoints (also from `python -m seqdni.sample`, in one line)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import run_cli

from seqdni.cli.sample import CheckpointError, load_checkpoint, main, sample
from seqdni.data import Task
from seqdni.engines import DNIOptions
from seqdni.training import SeqModel
from seqdni.training.checkpointing import FORMAT


def save(lm, path: Path, **extra) -> Path:
    """A minimal checkpoint of today's format: weights, hyperparameters, the seqdni section."""
    torch.save({"state_dict": lm.state_dict(), "hyper_parameters": dict(lm.hparams), "seqdni": {"format": FORMAT},
                **extra}, path)
    return path


def truncated(tmp_path: Path) -> Path:
    lm = SeqModel(Task("chars", list("\n_ab")), window=4, unroll=2, embed_dim=4, hidden_size=8)
    good = save(lm, tmp_path / "good.ckpt")
    cut = tmp_path / "truncated.ckpt"
    cut.write_bytes(good.read_bytes()[:200])
    return cut


def test_sampling_is_reproducible_and_rejects_unknown_characters(tmp_path):
    lm = SeqModel(Task("chars", list("\n_abc")), window=4, unroll=2, embed_dim=4, hidden_size=8, dni=DNIOptions())
    path = save(lm, tmp_path / "m.ckpt", **{"pytorch-lightning_version": "2.6.6"})
    assert sample(str(path), prime="ab", length=30, seed=1) == sample(str(path), prime="ab", length=30, seed=1)
    assert sample(str(path), prime="ab", length=30, seed=1) != sample(str(path), prime="ab", length=30, seed=2)
    with pytest.raises(ValueError, match=r"outside the model's vocabulary: 'x', 'Z'"):
        sample(str(path), prime="axbZ")


def test_bad_checkpoints_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(truncated(tmp_path))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a seqdni checkpoint"):
        load_checkpoint(foreign)
    evil = tmp_path / "evil.ckpt"
    torch.save({"seqdni": {}, "hyper_parameters": {}, "payload": Path("x")}, evil)  # a pickled object
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(evil)


@pytest.mark.slow
def test_sample_cli_reports_a_bad_checkpoint_in_one_line(tmp_path):
    res = run_cli("seqdni.sample", ["--ckpt", str(truncated(tmp_path))], cwd=tmp_path)
    assert res.returncode != 0 and "error:" in res.stderr and "Traceback" not in res.stderr


def test_capitals_in_the_prime_are_read_as_lower_case_for_a_lower_case_vocabulary(capsys):
    from legacy import LEGACY

    ckpt = str(LEGACY / "flat-bptt.ckpt")  # its vocabulary: the tiny lower-case text of the fixtures
    assert sample(ckpt, prime="The Cat", length=30, seed=3) == sample(ckpt, prime="the cat", length=30, seed=3)
    assert "the prime is read as 'the cat'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"outside the model's vocabulary: 'Z'"):  # no lower-case 'z' either
        sample(ckpt, prime="Zz", length=5)


def test_help_quotes_the_default_prime_so_its_trailing_space_shows(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    assert "(type: str, default: 'the ')" in out and "default: the )" not in out
    assert "(type: str, default: 'cpu')" in out and "(type: int, default: 500)" in out  # numbers stay bare
