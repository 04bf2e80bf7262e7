"""Train the two-timescale system in every regime with the same budget and seed, and plot
A's and B's held-out error against the steps of each stream.

    python scripts/two_timescale.py --steps 6000 --out docs/two-timescale

Each config in configs/two-timescale/ is trained in turn (one process, one at a time) through
the same CLI as `python -m seqdni.train`, with `trainer.max_steps` = --steps B updates (T²
digits of every stream each). Validation runs every --val-every batches on a held-out stream;
after training, the test stream is evaluated at the best validation checkpoint. Writes
<out>/curves.png and <out>/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seqdni.cli.train import SeqDNICLI, expand_configs  # noqa: E402

DEFAULT_CONFIGS = ["bptt", "cut", "dni", "dni-cond"]


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
            "seconds": round(seconds, 1), "val": val, "test": test}


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for run in runs:
        label = run["regime"] + (" (conditional M)" if run["conditional"] else "")
        for ax, key in zip(axes, ("a_error", "b_error")):
            ax.plot(run["val"]["digits"], run["val"][key], label=label, marker=".")
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6000, help="B updates per run (trainer.max_steps)")
    p.add_argument("--val-every", type=int, default=125, help="training batches between validations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-length", type=int, default=2048, help="steps of each validation and test stream")
    p.add_argument("--configs", nargs="+", default=[str(ROOT / "configs/two-timescale" / f"{c}.yaml")
                                                     for c in DEFAULT_CONFIGS])
    p.add_argument("--runs", default="runs/two-timescale", help="TensorBoard logs and checkpoints")
    p.add_argument("--out", default=str(ROOT / "docs/two-timescale"))
    args = p.parse_args(argv)
    command = "python scripts/two_timescale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [train(Path(c).resolve(), args) for c in args.configs]
    summary = {"command": command, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "steps": args.steps,
               "seed": args.seed, "runs": runs}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    plot(runs, out / "curves.png")
    for run in runs:
        last = {k: v[-1] for k, v in run["val"].items()} if run["val"]["step"] else {}
        print(f"{run['config']:40s} test A {run['test'].get('a_error', float('nan')):.4f} "
              f"B {run['test'].get('b_error', float('nan')):.4f}  last val {last}  {run['seconds']} s")
    return summary


if __name__ == "__main__":
    main()
