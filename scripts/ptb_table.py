"""The PTB grid: BPTT 8/20/40, DNI 8/20/40 and DNI+Aux 8 under one budget, as a table and plots.

Each run is `python -m seqdni.train --config CONFIGS/NAME.yaml` in its own process, limited by
wall-clock minutes (`trainer.max_time`) or by training characters (`trainer.max_steps`). The
CLI tests at the best validation checkpoint after fitting. Everything is read back from the
run's TensorBoard log, and each finished run leaves `result.json` beside it, so re-running
the same command skips what is done (the grid resumes).

    python scripts/ptb_table.py --configs configs/ptb-cpu --budget-minutes 10 --seeds 1 --out docs/ptb-cpu
    python scripts/ptb_table.py --configs configs/ptb --budget-chars 200e6 --seeds 1 --out docs/ptb-gpu

Writes under --out: results.json (every run), table.md (beside the paper's test BPC),
val_bpc_vs_chars.png and val_bpc_vs_seconds.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from seqdni.cli.train import load_config

NAMES = ["bptt8", "bptt20", "bptt40", "dni8", "dni20", "dni40", "dni8-aux"]
PAPER = {"bptt8": 1.35, "bptt20": 1.35, "bptt40": 1.34, "dni8": 1.34, "dni8-aux": 1.33}  # test BPC, dni-rnn.md


def machine() -> dict:
    info = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """tag -> [(step, wall_time, value)] from a run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {tag: [(e.step, e.wall_time, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def launch(cfg_path: Path, name: str, seed: int, args, runs: Path) -> subprocess.Popen:
    cfg = load_config(cfg_path)
    model, data = cfg["model"]["init_args"], cfg["data"]["init_args"]
    cmd = [sys.executable, "-m", "seqdni.train", "--config", str(cfg_path), f"--seed_everything={seed}",
           f"--trainer.logger.init_args.save_dir={runs}", f"--trainer.logger.init_args.name={name}-s{seed}",
           "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false"]
    if args.budget_chars:
        steps = int(args.budget_chars // (data["batch_size"] * model["unroll"]))
        cmd += [f"--trainer.max_steps={steps}", "--trainer.max_time=null"]
    else:
        m = args.budget_minutes
        cmd += [f"--trainer.max_time=00:{int(m // 60):02d}:{int(m % 60):02d}:{round(m % 1 * 60):02d}",
                "--trainer.max_steps=-1"]
    cmd += args.extra
    log = open(runs / f"{name}-s{seed}.log", "w")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(" ".join(cmd), flush=True)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def summarise(cfg_path: Path, name: str, seed: int, runs: Path, seconds: float, rss_kib: int | None) -> dict:
    run_dir = runs / f"{name}-s{seed}" / "version_0"
    cfg = load_config(cfg_path)
    data, model = cfg["data"]["init_args"], cfg["model"]["init_args"]
    # TensorBoard's x axis is the optimiser step: one unroll of batch_size x unroll characters.
    per_step = data["batch_size"] * model["unroll"]
    s = scalars(run_dir)
    t0 = min(w for series in s.values() for _, w, _ in series)
    val = [(step * per_step, w - t0, v) for step, w, v in s.get("val/bpc", [])]
    best = min(val, key=lambda r: r[2]) if val else None
    steps = max((step for series in s.values() for step, _, _ in series), default=0)
    cps = [v for _, _, v in s.get("train/chars_per_sec", [])]
    peak = [v for _, _, v in s.get("train/cuda_peak_mib", [])]
    return {
        "name": name, "config": str(cfg_path), "seed": seed, "machine": machine(),
        "chars_seen": steps * per_step, "seconds": round(seconds, 1),
        "peak_memory_mib": round(max(peak), 1) if peak else (round(rss_kib / 1024, 1) if rss_kib else None),
        "peak_memory_measure": "torch.cuda.max_memory_allocated" if peak else "max RSS of the training process",
        "best_val_bpc": best[2] if best else None, "best_val_at_chars": best[0] if best else None,
        "test_bpc": s["test/bpc"][-1][2] if "test/bpc" in s else None,
        "chars_per_sec": statistics.median(cps) if cps else None,
        "val_curve": [{"chars": c, "seconds": round(t, 1), "bpc": v} for c, t, v in val],
        "sg_cosine_mean": statistics.mean(v for _, _, v in s["sg/cosine"]) if "sg/cosine" in s else None,
    }


def run_grid(args) -> list[dict]:
    out = Path(args.out)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    todo, results = [], []
    for name in args.names:
        cfg_path = Path(args.configs) / f"{name}.yaml"
        if not cfg_path.is_file():
            raise SystemExit(f"no config {cfg_path}: --configs must hold {', '.join(args.names)}.yaml")
        for seed in range(args.seeds):
            done = runs / f"{name}-s{seed}" / "result.json"
            if done.is_file():
                results.append(json.loads(done.read_text()))
                print(f"reusing {done}")
            else:
                todo.append((cfg_path, name, seed))
    running: dict[int, tuple] = {}
    while todo or running:
        while todo and len(running) < args.jobs:
            cfg_path, name, seed = todo.pop(0)
            p = launch(cfg_path, name, seed, args, runs)
            running[p.pid] = (p, cfg_path, name, seed, time.time())
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        p, cfg_path, name, seed, start = running.pop(pid)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            print(f"{name} seed {seed} failed (exit {p.returncode}); see {runs / f'{name}-s{seed}.log'}")
            continue
        r = summarise(cfg_path, name, seed, runs, time.time() - start, usage.ru_maxrss)
        (runs / f"{name}-s{seed}" / "result.json").write_text(json.dumps(r, indent=2))
        results.append(r)
        print(f"{name} seed {seed}: best val {r['best_val_bpc']}, test {r['test_bpc']}", flush=True)
    return results


def table(results: list[dict], names: list[str]) -> str:
    rows = ["| run | seeds | chars seen | seconds | chars/s | peak MiB | best val BPC | test BPC | paper test BPC |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def mean(key, rs):
        vals = [r[key] for r in rs if r[key] is not None]
        return statistics.mean(vals) if vals else None

    def fmt(v, spec):
        return "–" if v is None else format(v, spec)

    for name in names:
        rs = [r for r in results if r["name"] == name]
        if not rs:
            continue
        paper = PAPER.get(name)
        rows.append(f"| {name} | {len(rs)} | {fmt(mean('chars_seen', rs), ',.0f')} | {fmt(mean('seconds', rs), '.0f')} "
                    f"| {fmt(mean('chars_per_sec', rs), ',.0f')} | {fmt(mean('peak_memory_mib', rs), '.0f')} "
                    f"| {fmt(mean('best_val_bpc', rs), '.3f')} | {fmt(mean('test_bpc', rs), '.3f')} "
                    f"| {fmt(paper, '.2f')} |")
    return "\n".join(rows) + "\n"


def plots(results: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for x_key, label, fname in (("chars", "training characters seen", "val_bpc_vs_chars.png"),
                                ("seconds", "wall-clock seconds", "val_bpc_vs_seconds.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=90)
        for r in sorted(results, key=lambda r: (NAMES.index(r["name"]) if r["name"] in NAMES else 99, r["seed"])):
            curve = r["val_curve"]
            if curve:
                style = "-" if r["name"].startswith("dni") else "--"
                ax.plot([c[x_key] for c in curve], [c["bpc"] for c in curve], style, marker=".",
                        label=f"{r['name']} (seed {r['seed']})")
        ax.set_xlabel(label)
        ax.set_ylabel("validation bits per character")
        ax.set_title("PTB characters: validation BPC (dashed: BPTT, solid: DNI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / fname)
        plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", required=True, help="folder with bptt8.yaml ... dni8-aux.yaml")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-minutes", type=float, help="wall-clock minutes per run (trainer.max_time)")
    budget.add_argument("--budget-chars", type=float, help="training characters per run (sets trainer.max_steps)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..S-1 per config")
    p.add_argument("--names", nargs="+", default=NAMES, help="which configs of the grid to run")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (one per core or device)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run")
    p.add_argument("--out", default="ptb_grid", help="output folder (runs, results.json, table.md, PNGs)")
    p.add_argument("extra", nargs="*", help="more seqdni.train arguments for every run, after --")
    args = p.parse_args()
    results = run_grid(args)
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps({"budget_minutes": args.budget_minutes,
                                                  "budget_chars": args.budget_chars, "runs": results}, indent=2))
    md = table(results, args.names)
    (out / "table.md").write_text(md)
    plots(results, out)
    print(md)


if __name__ == "__main__":
    main()
