"""scripts/aux_controls.py: DNI + Aux against its controls at equal characters, budget runs completed
by the converged records cut at the budget, with the check that both agree where both ran."""

from __future__ import annotations

import json

from helpers import ROOT, load_script, run_python


def _run(name, seed, points):
    return {"name": name, "seed": seed, "config": f"configs/ptb-cpu/{name}.yaml", "test_bpc": 1.0,
            "train_cpu_seconds": 30.0 * seed + 30.0, "chars_seen": 300,
            "val_curve": [{"chars": c, "bpc": b} for c, b in points]}


def test_the_converged_records_fill_missing_seeds_cut_at_the_budget_and_agreement_is_checked(tmp_path):
    budget = {"command": "python scripts/ptb_table.py --budget-chars 300", "budget_chars": 300, "runs": [
        _run("bptt8", 0, [(100, 2.0), (200, 1.9), (300, 1.8)]),
        _run("bptt8", 1, [(100, 2.1), (200, 1.95), (300, 1.85)]),
        _run("dni8-aux-no-injection", 0, [(100, 1.95), (200, 1.8), (300, 1.7)]),
        _run("dni8-aux-no-injection", 1, [(100, 1.96), (200, 1.82), (300, 1.75)]),
        _run("dni8-aux", 1, [(100, 1.9), (200, 1.75), (300, 1.65)]),
        _run("dni8-aux-m-frozen", 1, [(100, 2.0), (200, 1.9), (300, 1.81)])]}
    records = {"runs": [
        _run("bptt8", 0, [(100, 2.0), (200, 1.9), (300, 1.8), (400, 1.5)]),  # the same run, trained on
        _run("bptt8", 1, [(100, 2.1), (200, 1.95), (300, 1.86), (400, 1.5)]),  # 0.01 off at the third
        _run("dni8-aux", 0, [(100, 1.9), (200, 1.7), (300, 1.6), (400, 1.2)]),  # 1.2 is past the budget
        _run("dni8-aux-m-frozen", 0, [(100, 2.0), (200, 1.85), (300, 1.79), (400, 1.4)]),
        _run("dni20", 0, [(100, 1.0)])]}  # not one of the four configs
    (tmp_path / "budget.json").write_text(json.dumps(budget))
    (tmp_path / "records.json").write_text(json.dumps(records))
    out = tmp_path / "out"
    p = run_python(["scripts/aux_controls.py", str(tmp_path / "budget.json"), "--records",
                    str(tmp_path / "records.json"), "--out", str(out)], ROOT)
    assert p.returncode == 0, p.stderr
    res = json.loads((out / "results.json").read_text())
    got = {(r["name"], r["seed"]): r for r in res["runs"]}
    assert set(got) == {("bptt8", 0), ("bptt8", 1), ("dni8-aux-no-injection", 0), ("dni8-aux-no-injection", 1),
                        ("dni8-aux", 0), ("dni8-aux", 1), ("dni8-aux-m-frozen", 0), ("dni8-aux-m-frozen", 1)}
    assert got[("dni8-aux", 0)]["from"] == "records" and len(got[("dni8-aux", 0)]["val_curve"]) == 3
    assert got[("bptt8", 0)]["from"] == "budget"
    check = {(c["name"], c["seed"]): c for c in res["check"]}
    assert check[("bptt8", 0)]["max_abs_diff"] == 0 and check[("bptt8", 0)]["validations"] == 3
    assert abs(check[("bptt8", 1)]["max_abs_diff"] - 0.01) < 1e-9
    table = (out / "table.md").read_text()
    # the test BPC only where a budget run measured it (the records' is at convergence, not at the budget)
    assert "| DNI + Aux 8 | s0 1.6000 (r) / s1 1.6500 (b) | 1.6250 | 0.0500 | 1.0000 (1) | 200,000 |" in table
    # injection: aux (1.60, 1.65) against no injection (1.70, 1.75), -0.1 in each seed
    assert ("injecting M's synthetic gradient: DNI + Aux 8 − Aux loss, M learned, no injection = -0.1000, "
            "larger than the seed spread") in table
    assert "seed by seed -0.1000 / -0.1000, the same sign in every seed" in table
    # CPU per million characters pooled over the budget runs: bptt8 s0 30 s and s1 60 s over 600 characters
    assert "| BPTT-8 | s0 1.8000 (b) / s1 1.8500 (b) | 1.8250 | 0.0500 | 1.0000 (2) | 150,000 |" in table


def test_a_results_file_without_a_budget_is_refused_with_what_to_run(tmp_path):
    (tmp_path / "converged.json").write_text(json.dumps({"command": "x", "budget_chars": None, "runs": []}))
    p = run_python(["scripts/aux_controls.py", str(tmp_path / "converged.json"), "--out", str(tmp_path / "o")], ROOT)
    assert p.returncode != 0
    assert "not a budget grid" in p.stderr and "--budget-chars" in p.stderr
    assert "Traceback" not in p.stderr


def test_the_committed_decomposition_is_twelve_budget_runs_and_its_table_is_theirs(monkeypatch):
    """docs/ptb-cpu/aux-controls/: every (config, seed) of the four configs × 3 seeds is a run of the
    budget grid (none read from the converged records), each a shipped config cut at the budget, and
    table.md is what the script writes from them."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    aux_controls = load_script("aux_controls")
    base = ROOT / "docs/ptb-cpu/aux-controls"
    res = json.loads((base / "results.json").read_text())
    runs, chars = res["runs"], res["budget_chars"]
    assert sorted((r["name"], r["seed"]) for r in runs) == sorted(
        (n, s) for n in aux_controls.NAMES for s in range(3))
    for r in runs:
        assert r["from"] == "budget" and r["chars_seen"] == chars and r["val_curve"][-1]["chars"] == chars
        assert (ROOT / r["config"]).is_file() and r["config"] == f"configs/ptb-cpu/{r['name']}.yaml"
        assert r["test_bpc"] is not None
    assert (base / "table.md").read_text() == aux_controls.table(runs, res["check"], chars)
