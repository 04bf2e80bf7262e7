"""scripts/ff_table.py: every variant and pipeline runs with the same updates, the table has a row
each, and finished runs are reused."""

from __future__ import annotations

import json

import pytest
from helpers import load_script

pytestmark = pytest.mark.slow


def test_the_table_runs_every_variant_and_reuses_finished_runs(tmp_path):
    script = load_script("ff_table")
    args = ["--steps", "6", "--seeds", "1", "--tasks", "digits", "--procs", "2", "--widths", "16",
            "--out", str(tmp_path)]
    script.main(args)
    runs = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")}
    assert set(runs) == {f"digits-{v}-s0" for v in ("bp", "dni", "cdni", "dni-bootstrap")} | {
        f"pipeline-w16-{m}-s0" for m in ("gpipe1", "dni2", "gpipe2")}
    assert all(r["steps"] == 6 and 0 <= r["test_accuracy"] <= 1 and r["cpu_s"] > 0 for r in runs.values())
    assert len(runs["pipeline-w16-dni2-s0"]["rank_cpu_s"]) == 2
    table = (tmp_path / "table.md").read_text().splitlines()
    assert len(table) == 2 + 7
    done = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")}
    script.main(args)  # every run is done: reused, none retrained
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")} == done
