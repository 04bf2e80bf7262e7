"""Train the two-timescale system in every regime with the same budget and seeds, and plot
A's and B's held-out error against the steps of each stream.

    python scripts/two_timescale.py --steps 6000 --seeds 3 --jobs 2 --out docs/two-timescale

Each config in configs/two-timescale/ is trained with seeds 0..S-1 through the same CLI as
`python -m seqdni.train`, with `trainer.max_steps` = --steps B updates (T² digits of every
stream each); --jobs runs go at once, each in its own process with one torch thread. Validation
runs every --val-every batches on a held-out stream; after training, the test stream is
evaluated at the best validation checkpoint. Each finished run leaves <out>/runs/<config>-s<seed>.json,
which the same command reuses (an interrupted grid resumes). Writes <out>/curves.png (mean over
seeds) and <out>/results.json (every run, and per config the mean, min and max test errors).
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

import lightning as L

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seqdni.cli.train import SeqDNICLI, expand_configs  # noqa: E402

DEFAULT_CONFIGS = ["bptt", "cut", "dni", "dni-state", "dni-cond"]


class Record(L.Callback):
    """Validation metrics against B's updates (trainer.global_step)."""

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        m = trainer.callback_metrics
        self.rows.append({"step": trainer.global_step, "a_error": m["val/a_error"].item(),
                          "b_error": m["val/b_error"].item()})


def train(config: Path, args: argparse.Namespace) -> dict:
    rec = Record()
    start = time.perf_counter()
    sys.argv[1:] = []  # this script's own arguments are not the CLI's
    cli = SeqDNICLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                    save_config_kwargs={"overwrite": True}, trainer_defaults={"callbacks": [rec]},
                    args=expand_configs(["fit", "--config", str(config), f"--trainer.max_steps={args.steps}",
                          f"--trainer.val_check_interval={args.val_every}", f"--seed_everything={args.seed}",
                          f"--trainer.logger.init_args.save_dir={args.runs}", "--trainer.enable_progress_bar=false",
                          f"--data.init_args.eval_length={args.eval_length}"]))
    seconds = time.perf_counter() - start
    period = cli.model.period
    test = {k.split("/")[1]: v.item() for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}
    val = {key: [r[key] for r in rec.rows] for key in ("step", "a_error", "b_error")}
    val["digits"] = [s * period * period for s in val["step"]]
    return {"config": str(config.relative_to(ROOT)) if config.is_relative_to(ROOT) else str(config),
            "regime": cli.model.regime, "conditional": bool(cli.model.dni and cli.model.dni.conditional),
            "sender_state": bool(cli.model.dni and cli.model.dni.sender_state),
            "seconds": round(seconds, 1), "val": val, "test": test}


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for config in dict.fromkeys(r["config"] for r in runs):  # the mean over seeds of each config
        rs = [r for r in runs if r["config"] == config]
        reads = " + A's state" if rs[0].get("sender_state") else ""
        reads += " + digit frequencies" if rs[0]["conditional"] else ""
        label = rs[0]["regime"] + (f" (M reads the message{reads})" if reads else "") + f" ({len(rs)} seeds)"
        n = min(len(r["val"]["digits"]) for r in rs)
        for ax, key in zip(axes, ("a_error", "b_error")):
            mean = [statistics.mean(r["val"][key][i] for r in rs) for i in range(n)]
            ax.plot(rs[0]["val"]["digits"][:n], mean, label=label, marker=".")
    titles = ("network A: odd digits in the last T steps (error up to 0.1)", "network B: 3s in the last T² steps")
    for ax, title, top in zip(axes, titles, (0.1, 1.0)):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("steps (digits) of each stream")
        ax.set_ylabel("held-out error")
        ax.set_ylim(-0.02 * top, top)
        ax.grid(alpha=0.3)
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_one(config: Path, seed: int, args: argparse.Namespace, path: Path) -> None:
    """Train one (config, seed) in this process and write its record to `path`."""
    import torch

    torch.set_num_threads(1)
    record = train(config, argparse.Namespace(**{**vars(args), "seed": seed}))
    record.update(seed=seed, steps=args.steps)
    path.write_text(json.dumps(record, indent=1))


def run_all(args: argparse.Namespace, out: Path) -> list[dict]:
    """Every (config, seed) not yet done, --jobs at a time in their own processes; then all records."""
    done_dir = out / "runs"
    done_dir.mkdir(parents=True, exist_ok=True)
    todo, paths = [], []
    for config in args.configs:
        for seed in range(args.seeds):
            path = done_dir / f"{Path(config).stem}-s{seed}.json"
            paths.append(path)
            if not (path.is_file() and json.loads(path.read_text()).get("steps") == args.steps):
                todo.append((config, seed, path))
    running: list[subprocess.Popen] = []
    for config, seed, path in todo:
        while len(running) >= args.jobs:
            time.sleep(0.5)
            running = [p for p in running if p.poll() is None]
        cmd = [sys.executable, __file__, "--one", str(config), "--seed", str(seed), "--json", str(path),
               "--steps", str(args.steps), "--val-every", str(args.val_every), "--eval-length", str(args.eval_length),
               "--runs", f"{args.runs}/s{seed}"]
        running.append(subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}))
    for p in running:
        p.wait()
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"runs failed (no record): {', '.join(missing)}")
    return [json.loads(p.read_text()) for p in paths]


def summarise(runs: list[dict]) -> dict[str, dict]:
    table = {}
    for config in dict.fromkeys(r["config"] for r in runs):
        rs = [r for r in runs if r["config"] == config]
        table[config] = {"seeds": [r["seed"] for r in rs]}
        for key in ("a_error", "b_error"):
            vals = [r["test"][key] for r in rs]
            table[config][key] = {"mean": statistics.mean(vals), "min": min(vals), "max": max(vals), "runs": vals}
    return table


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6000, help="B updates per run (trainer.max_steps)")
    p.add_argument("--val-every", type=int, default=125, help="training batches between validations")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..S-1 per config")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (one core each)")
    p.add_argument("--eval-length", type=int, default=2048, help="steps of each validation and test stream")
    p.add_argument("--configs", nargs="+", default=[str(ROOT / "configs/two-timescale" / f"{c}.yaml")
                                                     for c in DEFAULT_CONFIGS])
    p.add_argument("--runs", default="runs/two-timescale", help="TensorBoard logs and checkpoints")
    p.add_argument("--out", default=str(ROOT / "docs/two-timescale"))
    p.add_argument("--one", help=argparse.SUPPRESS)  # a worker: train this config with --seed
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        run_one(Path(args.one).absolute(), args.seed, args, Path(args.json))
        return {}
    command = "python scripts/two_timescale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    start = time.perf_counter()
    runs = run_all(args, out)
    summary = {"command": command, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "steps": args.steps,
               "seeds": args.seeds, "jobs": args.jobs, "wall_seconds": round(time.perf_counter() - start, 1),
               "table": summarise(runs), "runs": runs}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    plot(runs, out / "curves.png")
    for config, row in summary["table"].items():
        print(f"{config:40s} test B {row['b_error']['mean']:.4f} [{row['b_error']['min']:.4f}, "
              f"{row['b_error']['max']:.4f}]  A {row['a_error']['mean']:.4f}  ({len(row['seeds'])} seeds)")
    return summary


if __name__ == "__main__":
    main()
