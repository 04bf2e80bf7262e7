"""scripts/two_timescale.py: trains every regime with the same budget and plots A's and B's error."""

from __future__ import annotations

import pytest
from helpers import ROOT, load_script

pytestmark = pytest.mark.slow


def test_script_plots_all_regimes(tmp_path):
    script = load_script("two_timescale")
    configs = [str(ROOT / f"configs/two-timescale/{c}.yaml") for c in ("cut", "dni")]
    args = ["--steps", "8", "--val-every", "1", "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"),
            "--eval-length", "64", "--seeds", "2", "--jobs", "2", "--configs", *configs]
    summary = script.main(args)
    assert (tmp_path / "out/curves.png").stat().st_size > 1000
    assert sorted((r["regime"], r["seed"]) for r in summary["runs"]) == [("cut", 0), ("cut", 1), ("dni", 0), ("dni", 1)]
    for run in summary["runs"]:
        assert len(run["val"]["step"]) == 2 and 0 <= run["test"]["b_error"] <= 1
    row = summary["table"]["configs/two-timescale/dni.yaml"]["b_error"]
    assert row["min"] <= row["mean"] <= row["max"] and len(row["runs"]) == 2
    done = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out/runs").glob("*.json")}
    assert len(done) == 4
    script.main(args)  # every run is done: reused, none retrained
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out/runs").glob("*.json")} == done
