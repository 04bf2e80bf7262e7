"""The cost of n-step targets (`model.dni.target_unrolls`): CPU time per optimiser step of Copy DNI
with n = 1, 2, 4, 8 at T = 2 and 3, in one process, against n = 1 at the same T. A variant `8p` is
n = 8 with `pending_targets` (M learns every waiting state at every update).

Each variant is the shipped config (`configs/copy/dni<T>.yaml`) with `target_unrolls` and
`pending_targets` set, its engine driven by `seqdni.engines.Steps` over the same batches (no
Lightning, validation or logging, so only the update is timed). Variants alternate in ABBA order over `--repeats`; the
medians and the ratio to n = 1 are reported.

    python scripts/bench_n_step.py --out docs/bench/n-step-cpu.json
    python scripts/bench_n_step.py --n 4 4p 8 8p --out docs/bench/n-step-pending-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import time

import torch

from seqdni.cli.train import cli
from seqdni.engines import Steps
from seqdni.training.optim import adam


def parse_variant(v: str) -> tuple[int, bool]:
    """`8` -> (8, False), `8p` -> (8, True): n and `pending_targets`."""
    return int(v.removesuffix("p")), v.endswith("p")


def variant_arg(v: str) -> str:
    if not re.fullmatch(r"[1-9]\d*p?", v) or v == "1p":
        raise argparse.ArgumentTypeError(f"{v!r} is not n >= 1, or n >= 2 followed by p (pending targets)")
    return v


def seconds(config: str, variant: str, args) -> tuple[float, int]:
    """CPU seconds of the updates after the first `skip` batches, and how many updates that was."""
    torch.manual_seed(args.seed)
    n, pending = parse_variant(variant)
    over = [f"--model.init_args.hidden_size={args.hidden}"] if args.hidden else []
    over += [f"--model.init_args.dni.pending_targets={str(pending).lower()}"]
    built = cli(["--config", config, f"--seed_everything={args.seed}", "--trainer.logger=false",
                 f"--model.init_args.dni.target_unrolls={n}", *over], run=False)
    return timed_updates(built.model.engine, built.datamodule, args)


def timed_updates(engine, dm, args) -> tuple[float, int]:
    """Drive `engine` with `seqdni.engines.Steps` over the first `args.batches` training batches of `dm`:
    the CPU seconds of the updates after the first `args.skip` batches, and how many updates that was."""
    groups = engine.param_groups()
    steps = Steps(groups, [adam(g.params, lr=g.lr, weight_decay=g.weight_decay) for g in groups])
    dm.setup("fit")
    carry, t0, updates = None, None, 0
    for b, (x, y) in enumerate(dm.train_dataloader()):
        if b == args.batches:
            break
        if b == args.skip:
            t0, updates = time.process_time(), 0
        carry = carry or engine.initial_carry(x.size(0), x.device)
        for i in range(0, x.size(1), engine.span):
            carry, _ = engine.update(x[:, i : i + engine.span], y[:, i : i + engine.span], carry, steps)
            updates += 1
    return time.process_time() - t0, updates


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--unrolls", nargs="+", type=int, default=[2, 3], help="T: configs/copy/dni<T>.yaml")
    p.add_argument("--n", nargs="+", type=variant_arg, default=["1", "2", "4", "8"],
                   help="target_unrolls to time (1 is the reference); a trailing p adds pending_targets (8p)")
    p.add_argument("--batches", type=int, default=12, help="batches per timed run, the skipped ones included")
    p.add_argument("--skip", type=int, default=2, help="warm-up batches at the start of every run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hidden", type=int, default=0, help="override the core's width (0: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args(argv)
    ns = sorted(set(["1", *a.n]), key=lambda v: (parse_variant(v), v))
    results = {}
    for t in a.unrolls:
        config, per_step = f"configs/copy/dni{t}.yaml", {n: [] for n in ns}
        for r in range(a.repeats):
            for n in ns if r % 2 == 0 else ns[::-1]:
                secs, updates = seconds(config, n, a)
                per_step[n].append(secs / updates)
        med = {n: statistics.median(v) for n, v in per_step.items()}
        results[f"T={t}"] = {"config": config, "cpu_seconds_per_step": per_step, "median": med,
                             "over_n1": {n: med[n] / med["1"] for n in ns}}
        print(f"T = {t}: " + ", ".join(f"n = {n}: {med[n] * 1e3:.1f} ms ({med[n] / med['1']:.2f}x)" for n in ns))
    summary = {"results": results, "args": vars(a), "torch_threads": torch.get_num_threads(),
               "machine": f"{platform.machine()}, {platform.system()}", "torch": torch.__version__}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
