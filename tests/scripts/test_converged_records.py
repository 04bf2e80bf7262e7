"""The committed converged PTB grid (docs/ptb-cpu/converged/): the records are the shipped configs'
runs, each finished (tested at its best validation), and the page shows every one of them. The grid
is `scripts/ptb_table.py`'s eight configs × 3 seeds; the control runs beside it are shown but not counted."""

from __future__ import annotations

import json

from helpers import ROOT, load_script

BASE = ROOT / "docs/ptb-cpu/converged"


def _runs() -> list[dict]:
    return json.loads((BASE / "results.json").read_text())["runs"]


def test_every_record_is_a_finished_run_of_a_shipped_config():
    runs = _runs()
    assert runs
    for r in runs:
        assert (ROOT / r["config"]).is_file() and r["config"].startswith("configs/ptb-cpu/")
        assert r["test_bpc"] is not None and r["best_val_bpc"] == min(p["bpc"] for p in r["val_curve"])
        assert r["seed"] in (0, 1, 2) and r["train_cpu_seconds"] >= r["best_val_at_cpu_seconds"] > 0
    assert len({(r["name"], r["seed"]) for r in runs}) == len(runs)


def test_the_page_shows_every_finished_run():
    page = (BASE / "README.md").read_text()
    for r in _runs():
        assert f"{r['test_bpc']:.4f}" in page and f"{r['best_val_bpc']:.4f}" in page, (r["name"], r["seed"])
    grid = load_script("ptb_table").NAMES
    n = sum(r["name"] in grid for r in _runs())
    assert n == 3 * len(grid) or f"**Finished so far: {n} of {3 * len(grid)} runs**" in page  # while the grid runs
