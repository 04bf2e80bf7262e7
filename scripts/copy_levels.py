"""How much data each Copy level took: from a grid's results.json, the characters per stream at which
each N was first solved, the median over seeds, for every task, method and T.

    python scripts/copy_levels.py docs/copy/results.json [--out docs/copy/levels.md]

An optimiser step of an unroll of T steps reads T characters of each of the batch's streams, so the
characters per stream up to step s are s · T (times the batch size for the whole batch). This puts
BPTT over whole 60-step windows (one update per 60 characters) beside DNI at T = 2 (one update per
2 characters) on one axis. A level counts only where every seed of the row solved it; otherwise
the cell says how many did. Levels are found at validations, so a cell is known to the validation
interval (`--trainer.val_check_interval` batches: 600 characters in the shipped Copy configs, 3,000
for BPTT-60).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

METHODS = {"bptt": "BPTT", "bptt-whole": "BPTT, whole episodes", "dni": "DNI", "dni-aux": "DNI + Aux",
           "dni-n2": "DNI, 2-step targets",
           "dni-n4": "DNI, 4-step targets", "dni-n8": "DNI, 8-step targets",
           "dni-pooled": "DNI, the batch's mean injected",
           "dni-n8-pending": "DNI, 8-step targets learned while pending"}


def first_solved(history: list[dict] | dict[str, list]) -> dict[int, int]:
    """N -> the first optimiser step at which the largest N solved reached it (the history as rows, or as
    the columns of scripts/copy_table.py's results.json)."""
    if isinstance(history, list):  # rows, as the older records keep it
        history = {k: [h[k] for h in history] for k in ("step", "solved")}
    first: dict[int, int] = {}
    for step, top in zip(history["step"], history["solved"]):
        for n in range(1, top + 1):
            first.setdefault(n, step)
    return first


def rows(runs: list[dict]) -> dict[tuple, list[dict[int, int]]]:
    """(task, method, T) -> per seed, N -> characters per stream at its first solve."""
    grouped: dict[tuple, list[dict[int, int]]] = defaultdict(list)
    for r in runs:
        chars = {n: step * r["unroll"] for n, step in first_solved(r["history"]).items()}
        grouped[(r["task"], r["method"], r["unroll"])].append(chars)
    return dict(sorted(grouped.items(), key=lambda kv: (kv[0][0], kv[0][2], list(METHODS).index(kv[0][1]))))


def cell(per_seed: list[dict[int, int]], n: int) -> str:
    solved = [c[n] for c in per_seed if n in c]
    if not solved:
        return ""
    if len(solved) < len(per_seed):
        return f"({len(solved)}/{len(per_seed)})"
    chars = statistics.median(solved)
    return f"{chars / 1e6:.3g}M" if chars >= 1e6 else f"{chars / 1000:.3g}k"


def table(runs: list[dict]) -> str:
    grouped = rows(runs)
    top = max((n for seeds in grouped.values() for c in seeds for n in c), default=0)
    head = ["task", "T", "method", "seeds", *(f"N = {n}" for n in range(1, top + 1))]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for (task, method, unroll), per_seed in grouped.items():
        cells = [cell(per_seed, n) for n in range(1, top + 1)]
        lines.append("| " + " | ".join([task, str(unroll), METHODS[method], str(len(per_seed)), *cells]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="a results.json of scripts/copy_table.py")
    p.add_argument("--out", type=Path, help="also write the table here")
    a = p.parse_args(argv)
    md = table(json.loads(a.results.read_text())["runs"])
    if a.out:
        a.out.write_text(md)
    print(md, end="")
    return md


if __name__ == "__main__":
    main()
