"""What M and the core did in Copy runs of `scripts/copy_table.py`: state norms, M's predictions and
targets, and the probe's cosines with the discounted and undiscounted true future gradient.

    python scripts/copy_dynamics.py runs/gamma/g0.9 [runs/gamma/g1.0 ...] --out docs/copy/gamma

For every run under each OUT folder of copy_table.py it reads the TensorBoard scalars and writes
one record (`dynamics.json`: label, seed, largest N solved, and per metric its first, last and
largest value and its mean over the last quarter of the run) and `dynamics.md`, a table of the
means over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from copy_table import config_name  # the run folders are named after the configs (scripts/ is on the path)
from ptb_table import scalars  # tag -> [(step, wall_time, value)], in the order logged

METRICS = ("state/c_norm", "state/h_norm", "sg/pred_norm", "sg/target_norm", "sg/cosine", "sg/probe_cosine",
           "sg/probe_cosine_undiscounted", "val/bits_error")


def summary(series: list[tuple[int, float, float]]) -> dict[str, float]:
    values = [v for _, _, v in series]
    tail = values[len(values) * 3 // 4 :] or values
    return {"first": values[0], "last": values[-1], "max": max(values), "tail_mean": statistics.mean(tail)}


def records(out: Path) -> list[dict]:
    results = json.loads((out / "results.json").read_text())
    rows = []
    for r in results["runs"]:
        s = scalars(out / r["task"] / config_name(r["variant"], r["unroll"]) / f"seed{r['seed']}")
        rows.append({"label": out.name, "task": r["task"], "variant": r["variant"], "unroll": r["unroll"],
                     "seed": r["seed"], "steps": r["steps"], "extra": r["extra"], "solved": r["solved"],
                     "metrics": {m: summary(s[m]) for m in METRICS if s.get(m)}})
    return rows


def table(rows: list[dict]) -> str:
    labels = list(dict.fromkeys(r["label"] for r in rows))
    head = ["run", "seeds", "N solved (per seed)"] + [f"{m} (last quarter)" for m in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label in labels:
        rs = [r for r in rows if r["label"] == label]
        cells = [label, str(len(rs)), " ".join(str(r["solved"]) for r in rs)]
        for m in METRICS:
            vals = [r["metrics"][m]["tail_mean"] for r in rs if m in r["metrics"]]
            cells.append(f"{statistics.mean(vals):.3g}" if vals else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="OUT folders of scripts/copy_table.py")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    rows = [row for out in a.runs for row in records(out)]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "dynamics.json").write_text(json.dumps(rows, indent=1))
    md = table(rows)
    (a.out / "dynamics.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
