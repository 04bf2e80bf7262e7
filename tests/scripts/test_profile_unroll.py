"""scripts/profile_unroll.py: per-operator CPU time of one update, per variant."""

from __future__ import annotations

import json

from helpers import load_script


def test_the_profile_shows_that_keeping_the_graph_runs_the_core_once_per_update(tmp_path):
    script = load_script("profile_unroll")
    out = tmp_path / "profile.json"
    script.main(["--variants", "bptt8", "dni8-aux", "dni8-aux-keep", "--hidden", "16", "--embed", "8", "--batch", "4",
                 "--updates", "3", "--warmup", "2", "--top", "1000", "--out", str(out)])
    r = json.loads(out.read_text())["variants"]

    def lstm_calls(name):  # nn.LSTM forward calls per update
        return sum(row["calls_per_update"] for row in r[name]["top"] if row["op"] == "aten::lstm")

    assert all(r[v]["total_ms_per_update"] > 0 for v in r)
    assert lstm_calls("bptt8") == 1
    assert lstm_calls("dni8-aux") == 1 + 8  # the previous unroll again, step by step
    assert lstm_calls("dni8-aux-keep") == 1  # nothing recomputed
