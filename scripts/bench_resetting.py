"""The resetting recurrence's closed-form backward against autograd's: CPU seconds per optimiser step
of Copy and PTB configs, in one process.

`BitLSTM` with `data.resets` runs its one-layer recurrence with the closed-form backward of
`seqdni.nets.resetting` from `seqdni.nets.lstm.CLOSED_FORM_STEPS` steps on, and so does every one-layer
core in a pass for state gradients alone (the n-step targets' recomputation, the probe). The variant
`autograd` raises that threshold past every unroll, so the same recurrence is differentiated by
autograd (nn.LSTM's, where no stream resets); the variant `closed-form` sets it to 1 (every unroll)
and `shipped` keeps it. Each config's engine is
driven by `seqdni.engines.Steps` over the same batches (`bench_n_step.timed_updates`: no Lightning,
validation or logging); the variants alternate in ABBA order over `--repeats`, and the medians and
ratios to `autograd` are reported.

    python scripts/bench_resetting.py --out docs/bench/resetting-cpu.json
    SEQDNI_DATA_DIR=../shared/data/ptb python scripts/bench_resetting.py --configs configs/ptb-cpu/bptt8.yaml \
        configs/ptb-cpu/dni8.yaml configs/ptb-cpu/dni40.yaml --out docs/bench/resetting-ptb-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys

import torch
from bench_n_step import timed_updates  # the same timed loop over the engine's updates

import seqdni.nets.lstm as lstm
from seqdni.cli.train import cli

VARIANTS = {"autograd": 10**9, "closed-form": 1, "shipped": lstm.CLOSED_FORM_STEPS}


def seconds_per_step(config: str, threshold: int, args) -> float:
    """CPU seconds per update after `skip` warm-up batches, the recurrence switched at `threshold`."""
    torch.manual_seed(args.seed)
    lstm.CLOSED_FORM_STEPS = threshold
    over = [f"--model.init_args.hidden_size={args.hidden}"] if args.hidden else []
    built = cli(["--config", config, f"--seed_everything={args.seed}", "--trainer.logger=false", *over], run=False)
    secs, updates = timed_updates(built.model.engine, built.datamodule, args)
    return secs / updates


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["configs/copy/bptt60.yaml", "configs/copy/dni2.yaml",
                                                     "configs/copy/dni5.yaml"])
    p.add_argument("--batches", type=int, default=6, help="batches per timed run (skip included)")
    p.add_argument("--skip", type=int, default=2, help="warm-up batches at the start of every run")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=0, help="override the core's width (0: the config's)")
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args(argv)
    if not 0 <= a.skip < a.batches:
        p.error("--skip must be >= 0 and below --batches")
    torch.set_num_threads(1)
    results = {}
    for config in a.configs:
        runs = {v: [] for v in VARIANTS}
        for r in range(a.repeats):
            for v in (VARIANTS if r % 2 == 0 else reversed(list(VARIANTS))):
                runs[v].append(seconds_per_step(config, VARIANTS[v], a))
        med = {v: statistics.median(s) for v, s in runs.items()}
        results[config] = {"cpu_seconds_per_step": runs, "median": med,
                           "speedup_over_autograd": {v: med["autograd"] / m for v, m in med.items()}}
        print(config, {v: f"{med['autograd'] / m:.2f}x" for v, m in med.items()}, flush=True)
    summary = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}, 1 thread",
               "command": " ".join(["python", "scripts/bench_resetting.py", *(sys.argv[1:] if argv is None else argv)]),
               "closed_form_steps": VARIANTS["shipped"], "results": results}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
