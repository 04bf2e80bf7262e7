"""docs/copy/results.json, the committed Copy / Repeat Copy grid: a record per run, and the table beside it says
what the records say."""

from __future__ import annotations

import json

from helpers import ROOT, load_script

RECORDS = ROOT / "docs/copy/results.json"


def test_every_record_names_its_run_and_its_shipped_config():
    script, summary = load_script("copy_table"), json.loads(RECORDS.read_text())
    seen = set()
    for r in summary["runs"]:
        assert {"task", "unroll", "method", "seed", "solved", "steps"} <= set(r), r.get("command")
        assert r["method"] in {"bptt", "dni", "dni-aux", "bptt-whole"} and r["steps"] == summary["steps"]
        assert r["returncode"] == 0 and r["solved"] == max(r["history"]["solved"])  # N is what its curriculum solved
        config = ROOT / "configs" / r["task"] / f"{script.config_name(r['variant'], r['unroll'])}.yaml"
        assert config.is_file(), f"{config} is not a shipped config"
        key = (r["task"], r["variant"], r["unroll"], r["seed"])
        assert key not in seen, f"two records of {key}"
        seen.add(key)


def test_the_committed_table_is_the_table_of_the_records():
    script, summary = load_script("copy_table"), json.loads(RECORDS.read_text())
    table = script.table(summary["runs"], script.TASKS, script.UNROLLS, script.DEFAULT_VARIANTS)
    assert (ROOT / "docs/copy/table.md").read_text() == table
