"""The PTB grid: BPTT 8/20/40, DNI 8/20/40, DNI + Aux 8 (and DNI-8 with discounted targets), with seeds.

Each run is `python -m seqdni.train --config CONFIGS/NAME.yaml` in its own process. Without a
budget each run trains as its config says: `configs/ptb-cpu/` trains to convergence (early
stopping on validation BPC, a maximum number of epochs); `--budget-chars` or `--budget-minutes`
cuts every run at the same characters or wall-clock minutes instead. The CLI tests at the best
validation checkpoint after fitting. Everything is read back from the run's TensorBoard log, and
each finished run leaves `result.json` beside it, so re-running the same command skips what is
done and continues an interrupted run from its latest checkpoint (the grid resumes across
sessions; `--records` restores finished runs from a committed results.json).

    python scripts/ptb_table.py --configs configs/ptb-cpu --seeds 3 --jobs 2 --out runs/ptb-converged
    python scripts/ptb_table.py --configs configs/ptb-cpu --names bptt8 --budget-chars 5015040 --seeds 3 --out x

Writes under --out: results.json (every run), table.md (per config: test BPC at the best
validation, mean and spread over seeds, the characters and training CPU seconds to reach it; the
same question at equal characters and at equal CPU seconds; which differences exceed the seed
spread), val_bpc_vs_chars.png and val_bpc_vs_cpu_seconds.png (mean and min-max band over seeds;
below, the same zoomed on the plateau).
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
from pathlib import Path

import torch

from seqdni.cli.train import load_config, shipped

NAMES = ["bptt8", "bptt20", "bptt40", "dni8", "dni20", "dni40", "dni8-aux", "dni8-discount"]
PAPER = {"bptt8": 1.35, "bptt20": 1.35, "bptt40": 1.34, "dni8": 1.34, "dni8-aux": 1.33}  # test BPC, dni-rnn.md
# The comparisons the grid answers (a, b): a's minus b's.
PAIRS = [("dni8", "bptt8"), ("dni8", "bptt40"), ("bptt40", "bptt8"), ("bptt20", "bptt8"), ("dni20", "bptt20"),
         ("dni40", "bptt40"), ("dni8-aux", "dni8"), ("dni8-aux", "bptt8"), ("dni8-aux", "bptt40"),
         ("dni8", "dni8-discount"),
         ("dni8-discount", "bptt8"),
         # the controls, when run
         ("dni8-discount", "dni8-discount-shuffled"), ("dni8-discount-shuffled", "bptt8"),
         ("dni8-aux", "dni8-aux-m-frozen"), ("dni8-aux-m-frozen", "bptt8"),
         ("dni8-aux", "dni8-aux-no-injection"), ("dni8-aux-no-injection", "dni8-aux-m-frozen"),
         ("dni8", "dni8-shuffled"), ("dni8-shuffled", "bptt8")]


def machine() -> dict:
    info = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """tag -> [(step, wall_time, value)] from every TensorBoard event file of a run, in the order logged
    (a resumed run's writer starts with `purge_step`, so what the interrupted process logged after its
    checkpoint is dropped). The files are read in name order, which is not the order written when two
    writers of one process start within a second, hence the sort by wall time."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {tag: sorted(((e.step, e.wall_time, e.value) for e in ea.Scalars(tag)), key=lambda e: e[1])
            for tag in ea.Tags()["scalars"]}


def run_dir(runs: Path, name: str, seed: int) -> Path:
    return runs / f"{name}-s{seed}" / "version_0"


def launch(cfg_path: Path, name: str, seed: int, args, runs: Path, lock) -> subprocess.Popen:
    """Start (or continue, from its latest checkpoint) one run; it inherits the run's lock."""
    cfg = load_config(cfg_path)
    model, data = cfg["model"]["init_args"], cfg["data"]["init_args"]
    cmd = [sys.executable, "-m", "seqdni.train", "--config", str(cfg_path), f"--seed_everything={seed}",
           f"--trainer.logger.init_args.save_dir={runs}", f"--trainer.logger.init_args.name={name}-s{seed}",
           "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false"]
    if args.budget_chars:
        steps = int(args.budget_chars // (data["batch_size"] * model["unroll"]))
        cmd += [f"--trainer.max_steps={steps}", "--trainer.max_time=null"]
    elif args.budget_minutes:
        m = args.budget_minutes
        cmd += [f"--trainer.max_time=00:{int(m // 60):02d}:{int(m % 60):02d}:{round(m % 1 * 60):02d}",
                "--trainer.max_steps=-1"]
    latest = run_dir(runs, name, seed) / "checkpoints" / "latest.ckpt"
    if latest.is_file():  # an interrupted run goes on from where it stopped
        step = torch.load(latest, map_location="cpu", weights_only=False)["global_step"]
        # TensorBoard drops what the interrupted process logged after its checkpoint (step + 1 on: what
        # the checkpoint's own step logged, a validation included, is not logged again).
        cmd += [f"--ckpt_path={latest}", f"--trainer.logger.init_args.purge_step={step + 1}"]
    cmd += args.extra
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(" ".join(cmd), flush=True)
    with open(runs / f"{name}-s{seed}.log", "a") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, pass_fds=(lock.fileno(),))


def stopped_early(directory: Path) -> bool | None:
    """Whether early stopping ended the run (None: the run has no early stopping)."""
    latest = directory / "checkpoints" / "latest.ckpt"
    if not latest.is_file():
        return None
    callbacks = torch.load(latest, map_location="cpu", weights_only=False).get("callbacks", {})
    states = [s for k, s in callbacks.items() if k.startswith("EarlyStopping")]
    if not states:
        return None
    return any(s.get("stopping_reason", 0) != 0 or s["wait_count"] >= s["patience"] for s in states)


def summarise(cfg_path: Path, name: str, seed: int, runs: Path, seconds: float, rss_kib: int | None) -> dict:
    directory = run_dir(runs, name, seed)
    cfg = load_config(cfg_path)
    data, model = cfg["data"]["init_args"], cfg["model"]["init_args"]
    # TensorBoard's x axis is the optimiser step: one unroll of batch_size x unroll characters.
    per_step = data["batch_size"] * model["unroll"]
    s = scalars(directory)
    t0 = min(w for series in s.values() for _, w, _ in series)
    cpu = {step: v for step, _, v in s.get("time/train_cpu_seconds", [])}
    val = [{"chars": step * per_step, "seconds": round(w - t0, 1), "cpu_seconds": cpu.get(step), "bpc": v}
           for step, w, v in s.get("val/bpc", [])]
    best = min(val, key=lambda r: r["bpc"]) if val else None
    steps = max((step for series in s.values() for step, _, _ in series), default=0)
    cps = [v for _, _, v in s.get("train/chars_per_sec", [])]
    peak = [v for _, _, v in s.get("train/cuda_peak_mib", [])]
    return {
        "name": name, "config": str(cfg_path), "seed": seed, "machine": machine(),
        "chars_seen": steps * per_step, "seconds": round(seconds, 1),
        "train_cpu_seconds": cpu[max(cpu)] if cpu else None, "stopped_early": stopped_early(directory),
        "peak_memory_mib": round(max(peak), 1) if peak else (round(rss_kib / 1024, 1) if rss_kib else None),
        "peak_memory_measure": "torch.cuda.max_memory_allocated" if peak else "max RSS of the training process",
        "best_val_bpc": best["bpc"] if best else None, "best_val_at_chars": best["chars"] if best else None,
        "best_val_at_cpu_seconds": best["cpu_seconds"] if best else None,
        "test_bpc": s["test/bpc"][-1][2] if "test/bpc" in s else None,
        "chars_per_sec": statistics.median(cps) if cps else None,
        "val_curve": val,
        "sg_cosine_mean": statistics.mean(v for _, _, v in s["sg/cosine"]) if "sg/cosine" in s else None,
    }


def claim(runs: Path, name: str, seed: int):
    """The run's lock (`NAME-sSEED.lock`, an exclusive flock) as an open file, or None while another
    process holds it: several copies of the command share one grid. The training process inherits
    it, so the lock lasts while either lives, and the system releases it however they end."""
    f = open(runs / f"{name}-s{seed}.lock", "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def restored(records: str | None) -> dict[tuple[str, int], dict]:
    if not records:
        return {}
    return {(r["name"], r["seed"]): r for r in json.loads(Path(records).read_text())["runs"]}


def finished(runs: Path, name: str, seed: int, kept: dict) -> dict | None:
    done = runs / f"{name}-s{seed}" / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    return kept.get((name, seed))


def config_paths(configs: str, names: list[str]) -> dict[str, Path]:
    """Each name's config: `CONFIGS/NAME.yaml` as given where that file exists, else the shipped config
    it names, as `python -m seqdni.train --config configs/...` finds it from any folder (`shipped`).
    A config found in neither place stops the command before anything is written."""
    paths = {name: Path(shipped(str(Path(configs) / f"{name}.yaml"))) for name in names}
    lacking = [str(Path(configs) / f"{name}.yaml") for name, path in paths.items() if not path.is_file()]
    if lacking:
        raise SystemExit(f"no config {', '.join(lacking)} (nor among the shipped configs): --configs must hold "
                         f"{', '.join(names)}.yaml")
    return paths


def run_grid(args) -> list[dict]:
    """Train every (config, seed) without a result, `args.jobs` at a time, seed by seed (the first seed
    of every config first); then the results of the whole grid, whoever trained them."""
    configs = config_paths(args.configs, args.names)  # before any folder is made
    runs = Path(args.out) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    kept = restored(args.records)
    grid = [(name, seed) for seed in range(args.seeds) for name in args.names]
    todo = [key for key in grid if finished(runs, *key, kept) is None]
    print(f"{len(grid) - len(todo)} of {len(grid)} runs finished (reusing them)")
    if args.report:
        todo = []  # the report of what is finished; nothing trains
    running: dict[int, tuple] = {}
    while todo or running:
        while todo and len(running) < args.jobs:
            name, seed = todo.pop(0)
            lock = claim(runs, name, seed)
            if lock is None:
                print(f"{name} seed {seed} is being trained by another process; left to it")
                continue
            if finished(runs, name, seed, kept) is not None:  # finished by another process meanwhile
                lock.close()
                continue
            cfg_path = configs[name]
            p = launch(cfg_path, name, seed, args, runs, lock)
            running[p.pid] = (p, cfg_path, name, seed, time.time(), lock)
        if not running:
            break
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        p, cfg_path, name, seed, start, lock = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        r = summarise(cfg_path, name, seed, runs, time.time() - start, usage.ru_maxrss) if code == 0 else None
        if r is None or r["test_bpc"] is None:  # a run stopped before its end (a signal) is not finished
            print(f"{name} seed {seed} did not finish (exit {code}); see {runs / f'{name}-s{seed}.log'}; "
                  "the same command continues it")
        else:
            (runs / f"{name}-s{seed}" / "result.json").write_text(json.dumps(r, indent=2))
            print(f"{name} seed {seed}: best val {r['best_val_bpc']}, test {r['test_bpc']}", flush=True)
        lock.close()
    found = {key: finished(runs, *key, kept) for key in grid}
    results = [r for r in found.values() if r is not None]
    missing = [f"{name} seed {seed}" for (name, seed), r in found.items() if r is None]
    if missing:
        print(f"not finished yet: {', '.join(missing)}")
    order = {n: i for i, n in enumerate(args.names)}
    return sorted(results, key=lambda r: (order.get(r["name"], len(order)), r["seed"]))


# ---- the report --------------------------------------------------------------------------------
def fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def spread(values: list[float]) -> float | None:
    return max(values) - min(values) if len(values) > 1 else None


def best_within(run: dict, key: str, limit: float) -> float | None:
    """The run's lowest validation BPC among the validations at or below `limit` of `key`."""
    points = [p["bpc"] for p in run["val_curve"] if p.get(key) is not None and p[key] <= limit]
    return min(points) if points else None


def by_name(results: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["name"], []).append(r)
    return groups


def converged_table(groups: dict[str, list[dict]]) -> list[str]:
    rows = ["| run | seeds | test BPC at the best validation, per seed | mean | spread | best val BPC | "
            "chars to best (M) | CPU s to best | CPU s in all | stopped early | paper |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, rs in groups.items():
        tests = [r["test_bpc"] for r in rs if r["test_bpc"] is not None]

        def mean(key, rs=rs):
            vals = [r[key] for r in rs if r.get(key) is not None]
            return statistics.mean(vals) if vals else None

        early, chars = [r.get("stopped_early") for r in rs], mean("best_val_at_chars")
        rows.append(
            f"| {name} | {len(rs)} | {' / '.join(format(t, '.4f') for t in tests) or '–'} "
            f"| {fmt(statistics.mean(tests) if tests else None, '.4f')} | {fmt(spread(tests), '.4f')} "
            f"| {fmt(mean('best_val_bpc'), '.4f')} | {fmt(chars / 1e6 if chars else None, '.1f')} "
            f"| {fmt(mean('best_val_at_cpu_seconds'), ',.0f')} | {fmt(mean('train_cpu_seconds'), ',.0f')} "
            f"| {sum(e is True for e in early)} of {len(rs)} | {fmt(PAPER.get(name), '.2f')} |")
    return rows


def budget_table(groups: dict[str, list[dict]], key: str, limit: float) -> list[str]:
    rows = ["| run | best val BPC within the budget, per seed | mean | spread |", "| --- | --- | ---: | ---: |"]
    for name, rs in groups.items():
        vals = [best_within(r, key, limit) for r in rs]
        vals = [v for v in vals if v is not None]
        rows.append(f"| {name} | {' / '.join(format(v, '.4f') for v in vals) or '–'} "
                    f"| {fmt(statistics.mean(vals) if vals else None, '.4f')} | {fmt(spread(vals), '.4f')} |")
    return rows


def compare(a: dict[int, float], b: dict[int, float]) -> str:
    """a's mean minus b's, whether the seeds separate them, and the difference seed by seed where both ran
    a seed (the same seed starts both from the same weights on the same data). Where both ran some of the
    same seeds but not all, the means and the verdict are over those seeds only: a seed one config lacks
    would otherwise move its mean alone."""
    common, scope = sorted(a.keys() & b.keys()), ""
    if common and set(common) != a.keys() | b.keys():
        a, b = {s: a[s] for s in common}, {s: b[s] for s in common}
        scope = f" over seed{'s' if len(common) > 1 else ''} {', '.join(map(str, common))} (run by both)"
    diff = statistics.mean(a.values()) - statistics.mean(b.values())
    if len(a) < 2 or len(b) < 2:
        verdict = "too few seeds to tell"
    elif max(a.values()) < min(b.values()) or max(b.values()) < min(a.values()):
        verdict = "larger than the seed spread (the seeds do not overlap)"
    else:
        verdict = "within the seed spread (the seeds overlap)"
    paired = [a[s] - b[s] for s in common]
    if not paired:
        return f"{diff:+.4f}, {verdict}"
    signs = "" if len(paired) < 2 else (", the same sign in every seed" if all(d < 0 for d in paired)
                                         or all(d > 0 for d in paired) else ", not one sign in every seed")
    return f"{diff:+.4f}{scope}, {verdict}; seed by seed {' / '.join(format(d, '+.4f') for d in paired)}{signs}"


def differences(groups: dict[str, list[dict]], limits: dict[str, float]) -> list[str]:
    lines = []
    for a, b in PAIRS:
        if a not in groups or b not in groups:
            continue
        test = [{r["seed"]: r["test_bpc"] for r in groups[n] if r["test_bpc"] is not None} for n in (a, b)]
        parts = [f"converged test BPC {compare(*test)}" if all(test) else None]
        for key, label in (("chars", "at equal characters"), ("cpu_seconds", "at equal CPU seconds")):
            if key in limits:
                vals = [{r["seed"]: v for r in groups[n] if (v := best_within(r, key, limits[key])) is not None}
                        for n in (a, b)]
                if all(vals):
                    parts.append(f"{label} (val BPC) {compare(*vals)}")
        lines.append(f"- {a} − {b}: " + "; ".join(p for p in parts if p))
    return lines


def table(results: list[dict]) -> str:
    groups = by_name(results)
    limits = {}
    chars = [r["chars_seen"] for r in results if r["val_curve"]]
    cpu = [r["train_cpu_seconds"] for r in results if r.get("train_cpu_seconds")]
    out = converged_table(groups)
    if chars:
        limits["chars"] = min(chars)
        out += ["", f"At equal characters: the best validation BPC within the first {limits['chars']:,} training "
                "characters (the fewest any run trained).", "", *budget_table(groups, "chars", limits["chars"])]
    if cpu and len(cpu) == len(results):
        limits["cpu_seconds"] = min(cpu)
        out += ["", f"At equal CPU time: the best validation BPC within the first {limits['cpu_seconds']:,.0f} "
                "seconds of training CPU time (the least any run used).", "",
                *budget_table(groups, "cpu_seconds", limits["cpu_seconds"])]
    diffs = differences(groups, limits)
    if diffs:
        out += ["", "Differences (the first run's mean minus the second's, then seed by seed: a seed starts every "
                "config's network from the same weights, and every run reads the data in one order; negative: "
                "the first is better):", "", *diffs]
    return "\n".join(out) + "\n"


def band(runs: list[dict], x_key: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """Validation k of every seed that has it: mean x, mean, min and max BPC."""
    xs, mean, low, high = [], [], [], []
    for k in range(max(len(r["val_curve"]) for r in runs)):
        points = [r["val_curve"][k] for r in runs if len(r["val_curve"]) > k]
        points = [p for p in points if p.get(x_key) is not None]
        if not points:
            continue
        ys = [p["bpc"] for p in points]
        xs.append(statistics.mean(p[x_key] for p in points))
        mean.append(statistics.mean(ys)), low.append(min(ys)), high.append(max(ys))
    return xs, mean, low, high


ZOOM_MARGIN, ZOOM_HEIGHT = 0.04, 0.3  # the plateau panel: above the worst best mean, and at most this tall


def zoom_limits(curves: dict[str, tuple]) -> tuple[float, float]:
    """The plateau panel's BPC range: from just under the lowest seed's best to just over the worst of the
    configs' best mean, so every config's plateau shows; a config that never got within `ZOOM_HEIGHT`
    (a diverged one) is left to the full panel rather than flattening the others."""
    low = min(min(c[2]) for c in curves.values()) - 0.01
    best_means = [min(c[1]) for c in curves.values() if min(c[1]) < low + ZOOM_HEIGHT - ZOOM_MARGIN]
    return low, max(best_means, default=low) + ZOOM_MARGIN


def plots(results: list[dict], out: Path) -> None:
    """Validation BPC against characters and against CPU seconds: every validation above, the plateau below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for x_key, label, fname in (("chars", "training characters", "val_bpc_vs_chars.png"),
                                ("cpu_seconds", "training CPU seconds", "val_bpc_vs_cpu_seconds.png")):
        curves = {}
        for name, rs in by_name(results).items():
            rs = [r for r in rs if r["val_curve"]]
            curve = band(rs, x_key) if rs else None
            if curve and curve[0]:  # some validation has this x
                curves[f"{name} ({len(rs)} seed{'s' if len(rs) > 1 else ''})"] = curve
        if not curves:
            continue
        fig, axes = plt.subplots(2, 1, figsize=(7.5, 8), dpi=90, sharex=True)
        for name, (xs, mean, low, high) in curves.items():
            for ax in axes:
                line, = ax.plot(xs, mean, "-" if name.startswith("dni") else "--", label=name)
                ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)
        axes[1].set_ylim(*zoom_limits(curves))
        axes[0].set_title("PTB characters: validation BPC, mean and min-max over seeds (dashed: BPTT)")
        axes[1].set_title("the same, zoomed on the plateau", fontsize=10)
        if x_key == "cpu_seconds":  # DNI's runs take several times BPTT's CPU time: a log axis shows both
            axes[1].set_xscale("log")
            label += " (log scale)"
        axes[1].set_xlabel(label)
        for ax in axes:
            ax.set_ylabel("validation bits per character")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / fname)
        plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", required=True,
                   help="folder with bptt8.yaml ... dni8-aux.yaml; configs/ptb-cpu names the shipped configs "
                        "from any folder, as seqdni.train's --config does")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget-minutes", type=float, help="wall-clock minutes per run (trainer.max_time)")
    budget.add_argument("--budget-chars", type=float, help="training characters per run (sets trainer.max_steps)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..S-1 per config")
    p.add_argument("--names", nargs="+", default=NAMES, help="which configs of the grid to run")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (one per core or device)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run")
    p.add_argument("--out", default="ptb_grid", help="output folder (runs, results.json, table.md, PNGs)")
    p.add_argument("--records", help="a results.json whose runs count as finished (a committed grid)")
    p.add_argument("--report", action="store_true", help="only write the report of the runs finished so far")
    p.add_argument("extra", nargs="*", help="more seqdni.train arguments for every run, after --")
    args = p.parse_args()
    results = run_grid(args)
    out = Path(args.out)
    command = "python scripts/ptb_table.py " + " ".join(sys.argv[1:])
    (out / "results.json").write_text(json.dumps({"command": command, "budget_minutes": args.budget_minutes,
                                                  "budget_chars": args.budget_chars, "runs": results}, indent=2))
    md = table(results)
    (out / "table.md").write_text(md)
    plots(results, out)
    print(md)


if __name__ == "__main__":
    main()
