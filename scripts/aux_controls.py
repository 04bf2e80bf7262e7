"""Where DNI + Aux's gain comes from, at equal characters: DNI + Aux 8 against its two controls and BPTT-8.

    python scripts/ptb_table.py --configs configs/ptb-cpu --budget-chars 6912000 --seeds 3 \\
        --out runs/aux-controls --names bptt8 dni8-aux-no-injection dni8-aux dni8-aux-m-frozen
    python scripts/aux_controls.py runs/aux-controls/results.json \\
        --records docs/ptb-cpu/converged/results.json --out docs/ptb-cpu/aux-controls

The four configs differ in one thing each:
- `bptt8`: no M, no auxiliary loss;
- `dni8-aux-m-frozen`: the auxiliary loss with M held at zero, so only a penalty on Â(s);
- `dni8-aux-no-injection`: M learns, the core learns to predict M 8 steps ahead, no synthetic gradient;
- `dni8-aux`: the same, and the core receives α·M's prediction at every boundary.

A budget only sets trainer.max_steps, so a run cut at it trains as the same config and seed trained
to convergence did up to that point, bit for bit on the same machine and code; so a (config, seed)
missing from the budget runs is read from `--records` (the converged grid), up to the budget. Another
machine or version of the code moves the curve by float rounding that training amplifies, so where
both have a run their validation curves are compared, and the table says by how much they differ.
Writes `results.json` (the budget runs, the runs taken from the records cut at the budget, the check)
and `table.md`.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from ptb_table import best_within, compare, fmt, spread  # scripts/ is on the path

NAMES = ["bptt8", "dni8-aux-m-frozen", "dni8-aux-no-injection", "dni8-aux"]
LABELS = {"bptt8": "BPTT-8", "dni8-aux-m-frozen": "Aux loss, M frozen at 0",
          "dni8-aux-no-injection": "Aux loss, M learned, no injection", "dni8-aux": "DNI + Aux 8"}
# (a, b): a's minus b's, each step adding one thing.
STEPS = [("dni8-aux-m-frozen", "bptt8", "the auxiliary loss against a frozen M (a penalty on Â(s))"),
         ("dni8-aux-no-injection", "dni8-aux-m-frozen", "predicting a learned M 8 steps ahead"),
         ("dni8-aux", "dni8-aux-no-injection", "injecting M's synthetic gradient"),
         ("dni8-aux", "bptt8", "all of it")]


def cut(run: dict, chars: float) -> dict:
    """A converged run as it stood at `chars` characters: its validation curve up to there."""
    return {"name": run["name"], "seed": run["seed"], "config": run["config"], "from": "records",
            "val_curve": [p for p in run["val_curve"] if p["chars"] <= chars]}


def gather(budget: dict, records: dict | None) -> tuple[list[dict], list[dict]]:
    """The runs per (config, seed), budget runs first, and the check on (config, seed) present in both:
    the largest absolute difference of their validation BPC at the validations they share."""
    chars = budget["budget_chars"]
    runs = {(r["name"], r["seed"]): dict(r, **{"from": "budget"}) for r in budget["runs"] if r["name"] in NAMES}
    check = []
    for r in (records or {}).get("runs", []):
        key = (r["name"], r["seed"])
        if r["name"] not in NAMES:
            continue
        if key not in runs:
            runs[key] = cut(r, chars)
            continue
        mine = {p["chars"]: p["bpc"] for p in runs[key]["val_curve"]}
        shared = [abs(p["bpc"] - mine[p["chars"]]) for p in r["val_curve"] if p["chars"] in mine]
        check.append({"name": r["name"], "seed": r["seed"], "validations": len(shared),
                      "max_abs_diff": max(shared) if shared else None})
    order = {n: i for i, n in enumerate(NAMES)}
    return sorted(runs.values(), key=lambda r: (order[r["name"]], r["seed"])), check


def at(runs: list[dict], name: str, chars: float) -> dict[int, float]:
    return {r["seed"]: v for r in runs if r["name"] == name and (v := best_within(r, "chars", chars)) is not None}


def table(runs: list[dict], check: list[dict], chars: float) -> str:
    n_val = max(len([p for p in r["val_curve"] if p["chars"] <= chars]) for r in runs)
    lines = [f"Best validation BPC within {chars:,.0f} training characters ({n_val} validations); "
             "per seed, (b) = cut from a run of the budget grid, (r) = read from the converged records.", "",
             "| config | per seed | mean | spread | test BPC at the best validation, budget runs only: mean (runs) "
             "| training CPU s per million characters, budget runs |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for name in NAMES:
        vals = at(runs, name, chars)
        mine = [r for r in runs if r["name"] == name]
        trained = [r for r in mine if r["from"] == "budget"]  # the records' test and CPU are not at the budget
        where = {r["seed"]: r["from"][0] for r in mine}
        cells = " / ".join(f"s{s} {v:.4f} ({where[s]})" for s, v in sorted(vals.items()))
        mean = statistics.mean(vals.values()) if vals else None
        tests = [r["test_bpc"] for r in trained if r.get("test_bpc")]
        test = f"{statistics.mean(tests):.4f} ({len(tests)})" if tests else "–"
        timed = [r for r in trained if r.get("train_cpu_seconds")]
        rate = sum(r["train_cpu_seconds"] for r in timed) / sum(r["chars_seen"] for r in timed) * 1e6 if timed else None
        lines.append(f"| {LABELS[name]} | {cells or '–'} | {fmt(mean, '.4f')} | "
                     f"{fmt(spread(list(vals.values())), '.4f')} | {test} | {fmt(rate, ',.0f')} |")
    lines += ["", "Each step adds one thing (a's mean minus b's; seed by seed where both ran the seed):", ""]
    for a, b, what in STEPS:
        va, vb = at(runs, a, chars), at(runs, b, chars)
        if va and vb:
            lines.append(f"- {what}: {LABELS[a]} − {LABELS[b]} = {compare(va, vb)}")
    if check:
        lines += ["", "Budget runs against the converged records of the same config and seed (the premise "
                  "that a budget only cuts a run): largest |Δ val BPC| "
                  + ", ".join(f"{c['name']} s{c['seed']} {fmt(c['max_abs_diff'], '.1e')} over {c['validations']}"
                              for c in check) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("budget", help="results.json of scripts/ptb_table.py --budget-chars over these configs")
    p.add_argument("--records", help="the converged grid's results.json, for the (config, seed) not in BUDGET")
    p.add_argument("--out", required=True, help="folder for results.json and table.md")
    args = p.parse_args()
    budget = json.loads(Path(args.budget).read_text())
    if not budget.get("budget_chars"):
        raise SystemExit(f"{args.budget} is not a budget grid (its budget_chars is empty): run scripts/ptb_table.py "
                         "with --budget-chars for it")
    records = json.loads(Path(args.records).read_text()) if args.records else None
    runs, check = gather(budget, records)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"budget_chars": budget["budget_chars"], "command": budget["command"],
                                                  "records": args.records, "check": check, "runs": runs}, indent=2))
    (out / "table.md").write_text(table(runs, check, budget["budget_chars"]))
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
