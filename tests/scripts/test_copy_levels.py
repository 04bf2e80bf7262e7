"""scripts/copy_levels.py: characters per stream to each level's first solve, median over seeds."""

from __future__ import annotations

import json

from helpers import load_script


def run(method, unroll, seed, solved_at):
    """A run record whose largest N solved steps up at the given optimiser steps."""
    history, solved = [], 0
    for step in range(100, max(solved_at) + 100, 100):
        solved += sum(s == step for s in solved_at)
        history.append({"step": step, "level": solved + 1, "bits_error": 1.0, "solved": solved})
    return {"task": "copy", "method": method, "unroll": unroll, "seed": seed, "history": history}


def test_levels_are_characters_per_stream_at_the_first_solve_and_need_every_seed(tmp_path):
    runs = [run("dni", 2, 1, [100, 300]), run("dni", 2, 2, [200, 500, 600]), run("dni", 2, 3, [100, 400]),
            run("bptt", 60, 1, [100, 200, 300])]
    as_rows = runs[2]["history"]  # seed 3 as scripts/copy_table.py writes it: the history as columns
    runs[2] = {**runs[2], "history": {k: [h[k] for h in as_rows] for k in as_rows[0]}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"runs": runs}))
    md = load_script("copy_levels").main([str(path), "--out", str(tmp_path / "levels.md")])
    assert (tmp_path / "levels.md").read_text() == md
    lines = md.splitlines()
    assert lines[0] == "| task | T | method | seeds | N = 1 | N = 2 | N = 3 |"
    # BPTT-60 reads 60 characters a step; DNI at T = 2 two: medians of 200/400/200 and 600/1000/800 characters
    assert lines[2] == "| copy | 2 | DNI | 3 | 0.2k | 0.8k | (1/3) |"
    assert lines[3] == "| copy | 60 | BPTT | 1 | 6k | 12k | 18k |"

