"""`python -m seqdni.pipeline`'s arguments are checked before any process starts: a bad --steps or
--micro is one paragraph on stderr that names the option and what to give, and exit status 1, not
a traceback from a worker process."""

from __future__ import annotations

import pytest
from helpers import ROOT
from test_user_errors import one_paragraph

from seqdni.cli import pipeline as pipeline_cli

CONFIG = "configs/ff/digits-dni.yaml"  # data.batch_size 64


@pytest.fixture
def no_launch(monkeypatch):
    """The checks come before the ranks start: starting them is a failure here."""

    def launch(*args, **kwargs):
        raise AssertionError("the ranks were started")

    monkeypatch.setattr(pipeline_cli, "launch", launch)


@pytest.mark.parametrize(("args", "needles"), [
    (["--steps", "0"], ["--steps is the number of updates of every block and must be at least 1, got 0"]),
    (["--steps", "-5", "--mode", "gpipe"], ["--steps", "must be at least 1, got -5"]),
    (["--micro", "0", "--mode", "gpipe"], ["--micro is the number of micro-batches per batch and must be at least 1, "
                                           "got 0"]),
    (["--micro", "-2", "--procs", "3", "--mode", "gpipe"], ["--micro", "must be at least 1, got -2"]),
    (["--micro", "65", "--mode", "gpipe"], ["--micro 65 would cut each batch of 64 examples (data.batch_size of "
                                            f"{CONFIG})", "use --micro between 1 and 64"]),
    (["--micro", "500", "--procs", "3", "--mode", "gpipe"], ["--micro 500", "use --micro between 1 and 64"]),
])
def test_a_bad_step_or_micro_batch_count_is_one_paragraph_before_any_rank_starts(capsys, tmp_path, no_launch,
                                                                                 args, needles):
    one_paragraph(capsys, pipeline_cli.main, ["--config", CONFIG, "--out", str(tmp_path), *args], *needles)


def test_a_config_without_a_step_count_asks_for_steps(capsys, tmp_path, no_launch):
    """Lightning reads trainer.max_steps -1 as 'no limit'; the pipeline needs a number."""
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"base: {ROOT / CONFIG}\ntrainer: {{max_steps: -1}}\n")
    one_paragraph(capsys, pipeline_cli.main, ["--config", str(mine), "--out", str(tmp_path)],
                  f"{mine} sets trainer.max_steps to -1", "give --steps N (at least 1)")


def test_help_states_the_range_of_steps_and_micro(capsys):
    with pytest.raises(SystemExit) as exit_:
        pipeline_cli.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    assert "updates of every block, at least 1" in out
    assert "micro-batches per batch in gpipe mode, from 1 to data.batch_size" in out
    assert "--mode {dni,gpipe}" in out  # the choices show, and a wrong one is still our paragraph:


def test_a_wrong_mode_is_one_paragraph(capsys, tmp_path, no_launch):
    one_paragraph(capsys, pipeline_cli.main, ["--config", CONFIG, "--out", str(tmp_path), "--mode", "x"],
                  "--mode must be dni or gpipe, got 'x'")
