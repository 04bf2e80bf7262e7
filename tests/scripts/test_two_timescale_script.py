"""scripts/two_timescale.py: trains every regime with the same budget and plots A's and B's error."""

from __future__ import annotations

import importlib.util

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow


def test_script_plots_all_regimes(tmp_path):
    spec = importlib.util.spec_from_file_location("two_timescale", ROOT / "scripts/two_timescale.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    summary = script.main(["--steps", "8", "--val-every", "1", "--out", str(tmp_path / "out"),
                           "--runs", str(tmp_path / "runs"), "--eval-length", "64"])
    assert (tmp_path / "out/curves.png").stat().st_size > 1000
    assert {r["regime"] for r in summary["runs"]} >= {"bptt", "cut", "dni"}
    for run in summary["runs"]:
        assert len(run["val"]["step"]) == 2 and 0 <= run["test"]["b_error"] <= 1
