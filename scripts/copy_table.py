"""Copy / Repeat Copy grid: task × T ∈ {2,3,4,5} × {BPTT, DNI, DNI+Aux}, the largest N solved.

    python scripts/copy_table.py --steps 15000 --seeds 1 --jobs 1 --out runs/copy-table [--upper]

`--variants dni-n4` adds DNI with 4-step targets learned once, when complete, and α = 0.3
(`configs/<task>/dni{2,3}-n4.yaml`); `cdni-n8-pending` DNI's 8-step pending targets with a conditional
M that also reads the targets its target covers (`configs/copy/cdni{2,3}-n8-pending.yaml`). With --upper,
each task also gets the upper-bound row under the same step budget: BPTT over the whole 120-step window,
each training window holding whole episodes so that no gradient within an episode is cut
(`configs/<task>/bptt120-whole.yaml`); `--upper-window 60` runs it on 60-step windows instead
(`bptt60-whole.yaml`, which hold one Copy episode from N = 15; `--upper-window 60 120`: both), and
`--upper-variant bptt --upper-window 60` BPTT-60 on windows that cut episodes anywhere (`bptt60.yaml`).

Each run is `python -m seqdni.train --config configs/<task>/<name>.yaml --trainer.max_steps S
--seed_everything k`, logged under OUT/<task>/<name>/seed<k>. A run that finished with the same
step budget is reused when the script is run again; one that finished with a smaller budget is
continued from its `latest.ckpt` to the new one when its learning rate is constant, as in the
shipped configs (`--ckpt_path`: the same run, so the curve up to the old budget is kept; a resume
with settings that differ from the checkpoint's is refused by `seqdni.train`). A run stopped before it
finished (the script killed, the machine gone) resumes from its `latest.ckpt` when the script is run
again, so a grid larger than one sitting is made by running the same command until it is done; on a fresh
checkout, `--records docs/copy/results.json` counts the runs that summary holds as finished, so the
command goes on from the committed grid instead of training it again. Grid
commands may share runs: a run that another process is training (its `running.lock` held) is left to
it and reported without a result, so several commands can split a grid between cores. Writes
OUT/results.json (every run with its validation history as columns), OUT/table.md (per row the
median N over seeds, the task length 2N + 1 and each seed's N, beside the paper's), one PNG of N
against steps per run (OUT/plots/) and one per task with every run and its validation error
(OUT/<task>.png).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("copy", "repeat-copy")
UNROLLS = (2, 3, 4, 5)
UPPER = 120  # the upper bound: BPTT whose unroll is the whole training window, 120 steps unless --upper-window
UPPER_ROWS = {"bptt-whole": "BPTT over the whole window of whole episodes: the upper bound",
              "bptt": "BPTT over the whole window, episodes cut by windows"}
VARIANTS = {"bptt": "BPTT", "dni": "DNI", "dni-aux": "DNI + Aux", "dni-n4": "DNI, 4-step targets",
            "cdni-n8-pending": "cDNI (M also reads the targets ahead), 8-step targets learned while pending"}
DEFAULT_VARIANTS = ("bptt", "dni", "dni-aux")  # the paper's three; dni-n4 ships for T = 2, 3
# Jaderberg et al. 2017, largest sequence length solved (see docs/dni-rnn.md).
PAPER = {
    "copy": {2: (7, 16, 16), 3: (8, 14, 17), 4: (10, 18, 19), 5: (8, 18, 18)},
    "repeat-copy": {2: (7, 39, 39), 3: (5, 33, 59), 4: (19, 39, 67), 5: (23, 59, 59)},
}


def config_name(variant: str, unroll: int) -> str:
    """The config's file stem: `bptt3`, `dni3`, and a suffixed variant's `dni3-aux`, `dni3-n4`."""
    method, _, suffix = variant.partition("-")
    return f"{method}{unroll}-{suffix}" if suffix else f"{method}{unroll}"


def run_dir(out: Path, task: str, variant: str, unroll: int, seed: int) -> Path:
    """Where a run of the grid logs: OUT/<task>/<config name>/seed<k>."""
    return out / task / config_name(variant, unroll) / f"seed{seed}"


def train_command(task: str, name: str, seed: int, steps: int, out: Path, extra: list[str]) -> list[str]:
    config = ROOT / "configs" / task / f"{name}.yaml"
    return [sys.executable, "-m", "seqdni.train", "--config", str(config), f"--trainer.max_steps={steps}",
            f"--seed_everything={seed}", f"--trainer.logger.init_args.save_dir={out / task}",
            f"--trainer.logger.init_args.name={name}", f"--trainer.logger.init_args.version=seed{seed}",
            "--trainer.enable_progress_bar=false", *extra]


def run_one(task: str, variant: str, unroll: int, seed: int, steps: int, out: Path, extra: list[str]) -> dict:
    """The run's record: reused if it finished with these settings, else trained (resumed, continued) now,
    unless another process is training it (`claimed`): then a record without a result."""
    name, log_dir = config_name(variant, unroll), run_dir(out, task, variant, unroll, seed)
    key = run_key(task, variant, unroll, seed, steps, extra)
    if (record := finished(key, log_dir)) is not None:
        return record
    with claimed(log_dir) as mine:
        if not mine:
            print(f"{task:12s} {name:9s} seed {seed}: being trained by another process, left to it", flush=True)
            return {**key, "method": variant, "returncode": None, "seconds": 0.0, "solved": None, "history": [],
                    "note": "being trained by another process"}
        return finished(key, log_dir) or train(key, name, log_dir, out)


@contextmanager
def claimed(log_dir: Path) -> Iterator[bool]:
    """Whether this process may train the run in `log_dir`: an exclusive lock on `running.lock`, held while
    the run trains and released by the system when the holder ends however it ends, so two grid
    commands (or one command run twice) never train the same run at once."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "running.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True


def train(key: dict, name: str, log_dir: Path, out: Path) -> dict:
    """Train the run `key` (from scratch, from its checkpoint if it was interrupted, or on from a smaller
    budget) with the config `name`, logged in `log_dir`."""
    task, variant, seed, steps, extra = key["task"], key["variant"], key["seed"], key["steps"], key["extra"]
    done = log_dir / "done.json"
    result = json.loads(done.read_text()) if done.is_file() else None  # a finished run with another budget
    if result and result.get("steps", 0) > steps:
        sys.exit(f"{log_dir} holds a finished run of {result['steps']} steps, more than --steps {steps}: "
                 "give --steps of at least that, or another --out")
    earlier = interrupted(key, log_dir) or (continuation(result, key, log_dir) if result else None)
    resume = [f"--ckpt_path={log_dir / 'checkpoints' / 'latest.ckpt'}"] if earlier else []
    cmd = train_command(task, name, seed, steps, out, [*extra, *resume])
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.time()
    prior = earlier or {}  # a finished run with a smaller budget has "steps"; an interrupted one has not
    legs = [*prior.get("continued_from", []), *([prior["steps"]] if "steps" in prior else [])]
    leg = {"key": key, "time": start, "seconds": prior.get("seconds", 0.0),
           "interruptions": prior.get("interruptions", 0), "continued_from": legs}
    (log_dir / "started.json").write_text(json.dumps(leg))
    with open(log_dir / "stdout.txt", "a" if earlier else "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    curriculum = log_dir / "curriculum.json"
    record = json.loads(curriculum.read_text()) if curriculum.is_file() else {"solved": None, "history": []}
    seconds = time.time() - start + leg["seconds"]  # a continued or resumed run counts every leg
    result = {**key, "method": variant, "returncode": rc, "seconds": round(seconds, 1), "solved": record["solved"],
              "history": record["history"], "command": " ".join(cmd[1:])}
    if leg["continued_from"]:  # the budgets of the earlier legs
        result["continued_from"] = leg["continued_from"]
    if leg["interruptions"]:  # resumed from its checkpoint this many times (`interrupted`)
        result["interruptions"] = leg["interruptions"]
    if rc == 0:
        done.write_text(json.dumps(result))
    print(f"{task:12s} {name:9s} seed {seed}: N = {shown(result)} ({result['seconds']:.0f} s, rc {rc})", flush=True)
    return result


def columns(history: list[dict]) -> dict[str, list]:
    """A run's validation history as columns (step, level, bits_error, solved), the errors to 4 decimals."""
    keys = ("step", "level", "bits_error", "solved")
    return {k: [round(h[k], 4) if k == "bits_error" else h[k] for h in history] for k in keys}


def as_json(summary: dict) -> str:
    """The grid's summary as JSON, one run per line, its history as columns (a whole grid's curves stay
    compact and diffable)."""
    head = json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1)[:-2]
    runs = ",\n".join(json.dumps({**r, "history": columns(r["history"])}, separators=(",", ":"))
                       for r in summary["runs"])
    return f'{head},\n "runs": [\n{runs}\n]}}\n'


def run_key(task: str, variant: str, unroll: int, seed: int, steps: int, extra: list[str]) -> dict:
    return {"task": task, "variant": variant, "unroll": unroll, "seed": seed, "steps": steps, "extra": extra}


def finished(key: dict, log_dir: Path) -> dict | None:
    """The record of the run `key` if it finished with exactly these settings and budget (else None)."""
    done = log_dir / "done.json"
    result = json.loads(done.read_text()) if done.is_file() else {}
    return {**result, "reused": True} if result and all(result.get(k) == v for k, v in key.items()) else None


def adopt(records: Path, grid: list[tuple], steps: int, extra: list[str], out: Path) -> int:
    """Count the runs of a summary this script wrote (`records`) as finished in `out`: each run of the grid
    that it holds with the same settings and budget, and `out` has not finished, gets its `done.json`.
    Returns how many it adopted."""
    runs = {tuple(r[k] for k in ("task", "variant", "unroll", "seed")): r
            for r in json.loads(records.read_text())["runs"] if r.get("returncode") == 0}
    adopted = 0
    for g in grid:
        key, log_dir = run_key(*g, steps, extra), run_dir(out, *g)
        record = runs.get(g)
        if record is None or any(record.get(k) != v for k, v in key.items()) or finished(key, log_dir):
            continue
        rows = [dict(zip(record["history"], row)) for row in zip(*record["history"].values())]
        log_dir.mkdir(parents=True, exist_ok=True)
        done = {k: v for k, v in record.items() if k != "reused"}
        (log_dir / "done.json").write_text(json.dumps({**done, "history": rows}))
        adopted += 1
    return adopted


def continuation(finished: dict, key: dict, log_dir: Path) -> dict | None:
    """The finished run to continue: one that differs from `key` only in a smaller step budget and
    left its checkpoint (else None)."""
    same = all(finished.get(k) == v for k, v in key.items() if k != "steps")
    if same and finished["steps"] < key["steps"] and (log_dir / "checkpoints" / "latest.ckpt").is_file():
        return finished if constant_lr(log_dir) else None
    return None


def interrupted(key: dict, log_dir: Path) -> dict | None:
    """A run of `key` stopped before it finished (it left `started.json` and a checkpoint, no `done.json`):
    the leg to resume, its seconds counted up to its checkpoint (else None)."""
    started, ckpt = log_dir / "started.json", log_dir / "checkpoints" / "latest.ckpt"
    if not (started.is_file() and ckpt.is_file()):
        return None
    leg = json.loads(started.read_text())
    if leg.get("key") != key or not constant_lr(log_dir):
        return None
    return {"seconds": leg["seconds"] + max(0.0, ckpt.stat().st_mtime - leg["time"]),
            "continued_from": leg["continued_from"], "interruptions": leg["interruptions"] + 1}


def constant_lr(log_dir: Path) -> bool:
    """Whether the run's saved config keeps its learning rate constant (a schedule over max_steps would
    make a continued run differ from one started with the larger budget)."""
    import yaml

    config = log_dir / "config.yaml"
    init = (yaml.safe_load(config.read_text()) or {}).get("model", {}).get("init_args", {}) if config.is_file() else {}
    return init.get("lr_schedule", "constant") == "constant"


def largest_solved(run: dict) -> int | None:
    """The largest N a run solved: 0 for a finished run that solved none (one that never validated wrote no
    curriculum, and its record says null), None for a run that did not finish (failed, or another process's)."""
    if run["returncode"] != 0:
        return None
    return 0 if run["solved"] is None else run["solved"]


def shown(run: dict) -> str:
    """A run's N as printed: `0 (none solved)` for a finished run that solved nothing, `–` for an unfinished one."""
    n = largest_solved(run)
    return "–" if n is None else "0 (none solved)" if n == 0 else str(n)


def seeds_solved(results: list[dict], task: str, variant: str, unroll: int) -> list[int]:
    """The largest N solved by each finished run of the row, in seed order (0: it solved none)."""
    runs = sorted((r for r in results if (r["task"], r["variant"], r["unroll"]) == (task, variant, unroll)
                   and largest_solved(r) is not None), key=lambda r: r["seed"])
    return [largest_solved(r) for r in runs]


def cell(scores: list[int], task: str) -> str:
    """`median (seed 1 / seed 2 / ...)`, on Copy the median's task length 2N + 1 beside it; – for no finished
    run (a finished run that solved no level counts 0)."""
    if not scores:
        return "–"
    med = statistics.median(scores)
    length = f" [{fmt(2 * med + 1)}]" if task == "copy" else ""
    return f"**{fmt(med)}**{length} ({' / '.join(map(str, scores))})"


def fmt(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def table(results: list[dict], tasks, unrolls, variants) -> str:
    """One row per task and T: each method's median N [the Copy task length 2N + 1] (per seed), the paper's."""
    lines = ["Largest N solved: the median over seeds, **N** [on Copy, the task length 2N + 1 in steps] (each "
             "seed), and the paper's (Jaderberg et al. 2017).", "",
             f"| task | T | {' | '.join(VARIANTS[v] for v in variants)} | paper |",
             f"| --- | ---: | {' | '.join('---' for _ in variants)} | --- |"]
    for task in tasks:
        for t in unrolls:
            ours = " | ".join(cell(seeds_solved(results, task, v, t), task) for v in variants)
            paper = " / ".join(str(PAPER[task][t][DEFAULT_VARIANTS.index(v)]) if v in DEFAULT_VARIANTS else "–"
                               for v in variants)
            lines.append(f"| {task} | {t} | {ours} | {paper} |")
        for v, what in UPPER_ROWS.items():  # one row per upper-bound window that has runs
            for w in sorted({r["unroll"] for r in results if (r["task"], r["variant"]) == (task, v)} - set(UNROLLS)):
                lines.append(f"| {task} | {w} ({what}) | "
                             f"{cell(seeds_solved(results, task, v, w), task)} |{' |' * len(variants)}")
    return "\n".join(lines) + "\n"


def curve(history: list[dict]) -> tuple[list[int], list[int]]:
    """Steps and the largest N solved so far, a step function starting at (0, 0)."""
    steps, solved = [0], [0]
    for h in history:
        steps.append(h["step"])
        solved.append(h["solved"])
    return steps, solved


def plots(results: list[dict], out: Path, tasks, unrolls, variants) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "plots").mkdir(parents=True, exist_ok=True)
    results = [r for r in results if r["returncode"] is not None]  # not the runs another process trains
    for r in results:
        fig, ax = plt.subplots(figsize=(4, 2.6))
        ax.step(*curve(r["history"]), where="post")
        ax.set(xlabel="optimiser steps", ylabel="largest N solved",
               title=f"{r['task']} {config_name(r['variant'], r['unroll'])} seed {r['seed']}")
        fig.tight_layout()
        fig.savefig(out / "plots" / f"{r['task']}-{config_name(r['variant'], r['unroll'])}-seed{r['seed']}.png",
                    dpi=80)
        plt.close(fig)
    colors = {"bptt": "tab:gray", "dni": "tab:blue", "dni-aux": "tab:orange", "dni-n4": "tab:green",
              "cdni-n8-pending": "tab:brown"}
    offset = {"bptt": -0.06, "dni": 0.0, "dni-aux": 0.06, "dni-n4": 0.12,
              "cdni-n8-pending": 0.18}  # equal curves apart
    for task in tasks:
        fig, axes = plt.subplots(2, len(unrolls), figsize=(3 * len(unrolls), 4.6), sharex="col", sharey="row",
                                 squeeze=False)
        for col, t in enumerate(unrolls):
            for r in results:
                if r["task"] != task or r["unroll"] != t or r["variant"] not in variants:
                    continue
                first = r["seed"] == min(q["seed"] for q in results if q["variant"] == r["variant"])
                style = dict(color=colors[r["variant"]], alpha=0.8, label=VARIANTS[r["variant"]] if first else None)
                steps, solved = curve(r["history"])
                axes[0][col].step(steps, [n + offset[r["variant"]] for n in solved], where="post", **style)
                h = r["history"]
                axes[1][col].plot([x["step"] for x in h], [max(x["bits_error"], 1e-3) for x in h], lw=0.8, **style)
            axes[0][col].set(title=f"{task}, T = {t}")
            axes[1][col].set(xlabel="optimiser steps", yscale="log")
            axes[1][col].xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}k" if x else "0")  # 27k, not 27000
        axes[0][0].set_ylabel("largest N solved")
        axes[1][0].set_ylabel("bits wrong per episode\nat the current N")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{task}.png", dpi=80)
        plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, required=True, help="optimiser steps per run (trainer.max_steps)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 1..K per configuration")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (one core each)")
    p.add_argument("--out", type=Path, default=Path("runs/copy-table"))
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--unrolls", nargs="+", type=int, default=list(UNROLLS), choices=UNROLLS)
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS))
    p.add_argument("--upper", action="store_true",
                   help=f"also each task's upper bound: BPTT over the whole window (bptt{UPPER}-whole.yaml)")
    p.add_argument("--upper-variant", choices=list(UPPER_ROWS), default="bptt-whole",
                   help="the upper bound's windows: bptt-whole (whole episodes only) or bptt (cut anywhere)")
    p.add_argument("--upper-window", nargs="+", type=int, default=[UPPER],
                   help="the upper bound's windows (and unrolls): 60 (bptt60-whole.yaml), 120 (bptt120-whole.yaml)")
    p.add_argument("--upper-seeds", type=int, help="seeds 1..K of the upper bound (default: --seeds)")
    p.add_argument("--report", action="store_true",
                   help="train nothing: tabulate the runs of the grid that finished with this budget, list the others")
    p.add_argument("--records", type=Path,
                   help="a results.json this script wrote: its runs count as finished (a fresh checkout goes on "
                        "from the committed grid)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="further arguments for every run, e.g. --extra --model.hidden_size=128")
    a = p.parse_args(argv)
    if a.steps <= 0 or a.seeds <= 0 or a.jobs <= 0:
        p.error("--steps, --seeds and --jobs must be positive")
    grid = [(task, v, t, s) for task in a.tasks for t in a.unrolls for v in a.variants for s in range(1, a.seeds + 1)]
    if a.upper:
        grid += [(task, a.upper_variant, w, s) for task in a.tasks for w in a.upper_window
                 for s in range(1, (a.upper_seeds or a.seeds) + 1)]
    missing = sorted({f"configs/{task}/{config_name(v, t)}.yaml" for task, v, t, _ in grid
                      if not (ROOT / "configs" / task / f"{config_name(v, t)}.yaml").is_file()})
    if missing:
        p.error(f"no shipped config for {', '.join(missing)}: choose --tasks, --unrolls and --variants that have one")
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if a.records:
        if not a.records.is_file():
            p.error(f"--records {a.records}: no such file; give a results.json written by this script")
        try:
            adopted = adopt(a.records, grid, a.steps, a.extra, out)
        except (ValueError, KeyError, TypeError) as e:
            p.error(f"--records {a.records} is not a results.json written by this script ({e!r}): give one that is")
        print(f"{adopted} finished runs taken from {a.records}", flush=True)
    start = time.time()
    if a.report:  # train nothing: the finished runs, and which are not
        found = [finished(run_key(*g, a.steps, a.extra), run_dir(out, *g)) for g in grid]
        results = [r for r in found if r is not None]
        for (task, v, t, seed), r in zip(grid, found):
            if r is None:
                print(f"not finished: {task} {config_name(v, t)} seed {seed}", file=sys.stderr)
    else:
        with ThreadPoolExecutor(a.jobs) as pool:
            results = list(pool.map(lambda g: run_one(*g, a.steps, out, a.extra), grid))
    summary = {"steps": a.steps, "seeds": a.seeds, "jobs": a.jobs, "seconds": round(time.time() - start, 1),
               "finished": f"{sum(r['returncode'] == 0 for r in results)} of {len(grid)} runs",
               "run_seconds": round(sum(r["seconds"] for r in results), 1),  # reused runs count their own time
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
               "command": " ".join(["python", "scripts/copy_table.py", *(argv if argv is not None else sys.argv[1:])]),
               "runs": results}
    (out / "results.json").write_text(as_json(summary))
    md = table(results, a.tasks, a.unrolls, a.variants)
    (out / "table.md").write_text(md)
    plots(results, out, a.tasks, a.unrolls, a.variants)
    print(md)
    failed = [r for r in results if r["returncode"] not in (0, None)]  # None: another process trains it
    for r in failed:
        print(f"FAILED: {r['task']} {config_name(r['variant'], r['unroll'])} seed {r['seed']}: "
              f"see {out / r['task'] / config_name(r['variant'], r['unroll']) / ('seed' + str(r['seed']))}/stdout.txt",
              file=sys.stderr)
    if failed:
        sys.exit(1)
    return summary


if __name__ == "__main__":
    main()
