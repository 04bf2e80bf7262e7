"""Backprop vs DNI vs cDNI on feed-forward tasks, in one process and as a pipeline of processes.

    python scripts/ff_table.py --steps 2000 --seeds 3 --procs 2 3 --widths 256 1024 --out docs/ff

Part 1 (one process, Lightning, `python -m seqdni.train`'s CLI in-process): every config
`configs/ff/{task}-{bp,dni,cdni}.yaml` (and `digits-dni-bootstrap`) for each task and seed, the
same number of updates; test accuracy at the final weights, training wall-clock and process CPU
seconds (the training batches only: `LayerModel.clock`).

Part 2 (`seqdni.cli.pipeline`): the digits network cut into P blocks, one process each: backprop in
one process, update-unlocked DNI over P processes, and synchronous GPipe backprop over the same P
processes (`--micro` micro-batches); wall-clock of the slowest rank, CPU seconds of all ranks and
of the busiest rank, for each hidden size in `--widths` (those above 256 train `--wide-steps` updates).

Every run writes `<out>/runs/<name>.json`; finished runs are reused, so an interrupted table resumes.
`<out>/table.md` holds mean ± standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"digits": ("bp", "dni", "cdni", "dni-bootstrap"), "addition": ("bp", "dni", "cdni"),
            "mnist": ("bp", "dni", "cdni")}
sys.path.insert(0, str(ROOT))

from seqdni.cli.pipeline import launch, spec_from_config  # noqa: E402
from seqdni.cli.train import cli  # noqa: E402


def single_run(config: str, seed: int, steps: int, root: str) -> dict:
    """One Lightning run of a config in this process; its test accuracy and training clock."""
    built = cli(["--config", config, f"--seed_everything={seed}", f"--data.init_args.seed={seed}",
                 f"--trainer.max_steps={steps}", f"--trainer.default_root_dir={root}",
                 "--trainer.enable_progress_bar=false", f"--trainer.val_check_interval={steps}"], run=False)
    built.trainer.fit(built.model, datamodule=built.datamodule)
    logged = {k: float(v) for k, v in built.trainer.callback_metrics.items() if k.endswith("true_cosine")}
    test = built.trainer.test(built.model, datamodule=built.datamodule, verbose=False)[0]
    return {"config": config, "seed": seed, "steps": steps, "test_accuracy": test["test/accuracy"],
            "test_loss": test["test/loss"], **built.model.clock, "last_true_cosine": logged}


def pipeline_run(config: str, procs: int, mode: str, seed: int, steps: int, micro: int, width: int, root: str) -> dict:
    """One pipeline run; besides the slowest rank's wall-clock, each rank's CPU seconds: the largest is
    what the wall-clock would be with a free core per rank and no waiting."""
    spec = spec_from_config(config, procs, mode, steps, seed, micro)
    spec["net"]["hidden_size"] = width
    result = launch(spec, Path(root) / f"{mode}{procs}-{seed}")
    cos = [h["sg_cosine"] for h in result["ranks"][0]["history"] if "sg_cosine" in h][-50:]
    return {k: v for k, v in result.items() if k != "ranks"} | {
        "config": config, "micro": micro, "hidden_size": width,
        "rank_cpu_s": [r["clock"]["cpu_s"] for r in result["ranks"]],
        "rank_wall_s": [r["clock"]["wall_s"] for r in result["ranks"]],
        "block0_sg_cosine_last50": sum(cos) / len(cos) if cos else None}


def cached(path: Path, run) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    result = run() | {"machine": machine()}
    path.write_text(json.dumps(result, indent=1))
    return result


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_avg_1min": os.getloadavg()[0],
            "torch": torch.__version__, "python": platform.python_version()}


def mean_sd(values: list[float], fmt: str) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{format(statistics.mean(values), fmt)} ± {format(sd, fmt)}"


def rows(results: dict[str, list[dict]]) -> list[str]:
    out = ["| run | seeds | updates | test accuracy | train wall s | train CPU s (all processes) "
           "| busiest process CPU s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, runs in results.items():
        busiest = mean_sd([max(r.get("rank_cpu_s", [r["cpu_s"]])) for r in runs], ".1f")
        accuracy = mean_sd([r["test_accuracy"] for r in runs], ".4f")
        out.append(f"| {name} | {len(runs)} | {runs[0]['steps']} | {accuracy} | "
                   f"{mean_sd([r['wall_s'] for r in runs], '.1f')} | {mean_sd([r['cpu_s'] for r in runs], '.1f')} | "
                   f"{busiest} |")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000, help="updates per run (every block, every variant)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--tasks", nargs="+", default=["digits", "addition"])
    p.add_argument("--procs", nargs="+", type=int, default=[2], help="pipeline sizes to run (besides 1)")
    p.add_argument("--micro", type=int, default=4, help="GPipe micro-batches per batch")
    p.add_argument("--widths", nargs="+", type=int, default=[256], help="hidden sizes of the pipeline networks")
    p.add_argument("--wide-steps", type=int, default=300, help="updates of the pipeline runs wider than 256")
    p.add_argument("--skip-single", action="store_true", help="only the pipeline part")
    p.add_argument("--out", default="runs/ff-table")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(a.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in [] if a.skip_single else a.tasks:
            for variant in VARIANTS[task]:
                config = f"configs/ff/{task}-{variant}.yaml"
                results[f"{task} {variant} (1 process)"] = [
                    cached(out / "runs" / f"{task}-{variant}-s{s}.json", lambda c=config, s=s: single_run(
                        c, s, a.steps, tmp)) for s in range(a.seeds)]
        for width in a.widths:
            steps = a.steps if width <= 256 else a.wide_steps
            plan = [("gpipe", 1, "digits-bp")] + [(m, n, f"digits-{'dni' if m == 'dni' else 'bp'}") for n in a.procs
                                                   for m in ("dni", "gpipe")]
            for mode, procs, name in plan:
                config = f"configs/ff/{name}.yaml"
                label = "bp, 1 process" if procs == 1 else f"{mode}, {procs} processes"
                results[f"digits {width} units: pipeline {label}"] = [
                    cached(out / "runs" / f"pipeline-w{width}-{mode}{procs}-s{s}.json",
                           lambda c=config, m=mode, n=procs, s=s, w=width, k=steps:
                           pipeline_run(c, n, m, s, k, a.micro, w, tmp)) for s in range(a.seeds)]
    table = "\n".join(rows(results))
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
