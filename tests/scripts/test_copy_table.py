"""scripts/copy_table.py: trains the Copy configs, writes the table and the plots, and reuses finished runs."""

from __future__ import annotations

import json

import pytest
from helpers import ROOT, run_python
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.slow


def test_table_script_trains_the_configs_writes_table_and_plots_and_reuses_runs(tmp_path):
    args = ["scripts/copy_table.py", "--steps", "60", "--tasks", "repeat-copy", "--unrolls", "3", "--variants",
            "bptt", "dni", "--out", str(tmp_path / "grid"), "--extra", "--trainer.val_check_interval=2",
            "--trainer.log_every_n_steps=1"]
    res = run_python(args, ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    out = tmp_path / "grid"
    table = (out / "table.md").read_text()
    assert "| repeat-copy | 3 |" in table and "| 5 / 33 |" in table  # ours beside the paper's BPTT / DNI
    summary = json.loads((out / "results.json").read_text())
    assert [(r["variant"], r["steps"], r["returncode"]) for r in summary["runs"]] == [("bptt", 60, 0), ("dni", 60, 0)]
    for r in summary["runs"]:
        assert r["history"] and r["history"][-1]["step"] <= 60 and r["solved"] >= 0
    run_dir = out / "repeat-copy/dni3/seed1"
    assert (run_dir / "curriculum.json").is_file()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert {"curriculum/level", "curriculum/solved", "val/bits_error", "sg/loss"} <= set(events.Tags()["scalars"])
    assert (out / "repeat-copy.png").stat().st_size > 0 and len(list((out / "plots").glob("*.png"))) == 2
    again = run_python(args, ROOT)
    assert again.returncode == 0 and all(r["reused"] for r in json.loads((out / "results.json").read_text())["runs"])
