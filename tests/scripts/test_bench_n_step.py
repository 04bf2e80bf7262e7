"""scripts/bench_n_step.py: times the shipped Copy DNI config with each n (and n with pending targets) and
reports the ratio to n = 1."""

from __future__ import annotations

import json

from helpers import ROOT, run_python


def test_bench_times_every_n_against_n1(tmp_path):
    out = tmp_path / "bench.json"
    res = run_python(["scripts/bench_n_step.py", "--unrolls", "3", "--n", "4", "4p", "--batches", "2", "--skip", "1",
                      "--repeats", "1", "--hidden", "8", "--out", str(out)], ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    got = json.loads(out.read_text())["results"]["T=3"]
    assert got["config"] == "configs/copy/dni3.yaml" and set(got["median"]) == {"1", "4", "4p"}
    assert got["over_n1"]["1"] == 1.0 and got["over_n1"]["4"] > 0 and got["over_n1"]["4p"] > 0 and all(v > 0 for v in got["median"].values())
