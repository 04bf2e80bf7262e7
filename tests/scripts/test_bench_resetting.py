"""scripts/bench_resetting.py: times Copy configs with the resetting recurrence differentiated by autograd,
in closed form, and as shipped, and reports the ratios to autograd."""

from __future__ import annotations

import json

from helpers import ROOT, run_python


def test_bench_times_the_closed_form_against_autograd(tmp_path):
    out = tmp_path / "bench.json"
    res = run_python(["scripts/bench_resetting.py", "--configs", "configs/copy/bptt5.yaml", "--batches", "2",
                      "--skip", "1", "--repeats", "1", "--hidden", "8", "--out", str(out)], ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    got = json.loads(out.read_text())["results"]["configs/copy/bptt5.yaml"]
    assert set(got["median"]) == {"autograd", "closed-form", "shipped"} and all(v > 0 for v in got["median"].values())
    assert got["speedup_over_autograd"]["autograd"] == 1.0
