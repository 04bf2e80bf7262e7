"""scripts/bench_copy_throughput.py: times the three variants of a Copy config and writes the ratios."""

from __future__ import annotations

import json
import logging

import pytest
from helpers import ROOT, load_script

pytestmark = pytest.mark.slow


def test_the_benchmark_times_every_variant_and_writes_the_ratios(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the script names the shipped configs as configs/copy/...
    script = load_script("bench_copy_throughput")
    out = tmp_path / "bench.json"
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    try:  # the script quiets Lightning's logger for its own output
        script.main(["--methods", "dni", "--batches", "5", "--skip", "3", "--repeats", "1", "--out", str(out)])
    finally:
        lightning_log.setLevel(level)
    r = json.loads(out.read_text())["methods"]["dni"]
    assert r["steps_per_run"] == 2 * 30  # two timed batches of 60 columns, T = 2
    assert set(r["median"]) == {"seqdni", "engine", "plain"} and all(v > 0 for v in r["median"].values())
    assert r["seqdni_over_plain"] == pytest.approx(r["median"]["seqdni"] / r["median"]["plain"])
