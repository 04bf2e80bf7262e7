"""Copy throughput: optimiser steps per CPU-second of seqdni's training step against plain PyTorch
loops doing the same work, in one run (the per-step overhead at small sizes).

For each method (`bptt`, `dni`) of a Copy config, three variants train on the same data module:

- `seqdni`: the config's `SeqModel` under `lightning.Trainer`, as `python -m seqdni.train` runs it
  (TensorBoard logger at the config's `log_every_n_steps`; no validation, checkpoints or
  curriculum, so only the training step is timed);
- `engine`: the same engine driven by `seqdni.engines.Steps` in a Python loop (no Lightning);
- `plain`: a minimal loop over the same network: core, loss, backward, clip, Adam, and for DNI
  the synthetic-gradient moves of `seqdni.dni.Interface` written out (README), with the target's
  extra future term where the config asks for it (γ ≠ α, or `episodic`).

The variants alternate in ABBA order over `--repeats`; medians and the ratios seqdni/plain and
seqdni/engine are reported (goal for seqdni/plain: 0.95).

    python scripts/bench_copy_throughput.py --out docs/bench/copy-throughput-cpu.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import warnings

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from seqdni.cli.train import cli
from seqdni.dni.state import detach_state, flatten_state
from seqdni.engines import Steps
from seqdni.training.optim import adam

GOAL = 0.95
CONFIGS = {"bptt": "configs/copy/bptt2.yaml", "dni": "configs/copy/dni2.yaml"}


class StepClock(L.Callback):
    """CPU time from the start of batch `skip` to the end of batch `last`."""

    def __init__(self, skip: int, last: int):
        self.skip, self.last, self.t0, self.t1 = skip, last, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.skip:
            self.t0 = time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.last:
            self.t1 = time.process_time()


def build(method: str, seed: int):
    """The config's model and data module (and its log_every_n_steps), freshly seeded."""
    torch.manual_seed(seed)
    built = cli(["--config", CONFIGS[method], f"--seed_everything={seed}", "--trainer.logger=false"], run=False)
    return built.model, built.datamodule, built.trainer.log_every_n_steps


def run_seqdni(method: str, args) -> float:
    model, dm, log_every = build(method, args.seed)
    clock = StepClock(args.skip, args.batches - 1)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=args.batches * dm.window // model.engine.span,
                            logger=TensorBoardLogger(tmp, name="bench"), log_every_n_steps=log_every,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock])
        trainer.fit(model, datamodule=dm)
    return clock.t1 - clock.t0


def _batches(dm, args):
    dm.setup("fit")
    for b, batch in enumerate(dm.train_dataloader()):
        if b == args.batches:
            return
        yield b, batch


def run_engine(method: str, args) -> float:
    model, dm, _ = build(method, args.seed)
    engine = model.engine
    groups = engine.param_groups()
    steps = Steps(groups, [adam(g.params, lr=g.lr, weight_decay=g.weight_decay) for g in groups])
    carry, t0 = None, None
    for b, (x, y) in _batches(dm, args):
        t0 = time.process_time() if b == args.skip else t0
        carry = carry or engine.initial_carry(x.size(0), x.device)
        for i in range(0, x.size(1), engine.span):
            carry, _ = engine.update(x[:, i : i + engine.span], y[:, i : i + engine.span], carry, steps)
    return time.process_time() - t0


def run_plain(method: str, args) -> float:
    model, dm, _ = build(method, args.seed)
    net, T, sg = model.engine.net, model.engine.span, model.engine.boundary  # a fresh model, used alone
    dni = model.engine.dni
    opt, params = adam(list(net.parameters()), lr=model.engine.lr), list(net.parameters())
    sg_opt = adam(list(sg.parameters()), lr=sg.opts.lr) if sg is not None else None
    state, t0, boundary = None, None, False
    for b, (x, y) in _batches(dm, args):
        t0 = time.process_time() if b == args.skip else t0
        state = state or net.init_state(x.size(0), x.device)
        for i in range(0, x.size(1), T):
            xs, ys = x[:, i : i + T], y[:, i : i + T]
            s_t = detach_state(state, requires_grad=sg is not None and boundary)
            out, end = net.core(xs, s_t)
            loss = net.loss(out, ys)
            learn = sg is not None and boundary
            second = learn and dni.second_pass  # γ ≠ α or `episodic`: the target's extra future term
            if sg is not None:  # inject M(s_{t+T}); after backward, M learns on s_t's bootstrapped target
                n, flat_end = ys.numel() // ys.size(-1), flatten_state(end)
                g = sg.predict(flat_end, batch_dim=0)
                loss = loss + sg.inject(flat_end, g, n, batch_dim=0)
            loss.backward(retain_graph=second)
            if learn:
                target = sg.target([s_t], n)
                if second:
                    ended = net.episode_ends(ys) if dni.episodic else torch.zeros(ys.size(0), dtype=torch.bool)
                    target = target + sg.remainder(end, g, s_t, discount=dni.gamma * (~ended).to(g.dtype))
            torch.nn.utils.clip_grad_norm_(params, model.engine.clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if learn:
                sg_loss, _ = sg.learn(flatten_state(s_t).detach(), target)
                sg_loss.backward()
                torch.nn.utils.clip_grad_norm_(list(sg.parameters()), sg.opts.clip)
                sg_opt.step()
                sg_opt.zero_grad(set_to_none=True)
            state, boundary = detach_state(end), True
    return time.process_time() - t0


VARIANTS = {"seqdni": run_seqdni, "engine": run_engine, "plain": run_plain}


def measure(method: str, args) -> dict:
    for run in VARIANTS.values():  # warm-up: allocator, kernels, imports
        run(method, argparse.Namespace(**{**vars(args), "batches": args.skip + 2}))
    secs = {name: [] for name in VARIANTS}
    for r in range(args.repeats):
        order = list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]
        for name in order:
            secs[name].append(VARIANTS[name](method, args))
    model, dm, _ = build(method, args.seed)
    steps = (args.batches - args.skip) * dm.window // model.engine.span
    rate = {name: [steps / s for s in v] for name, v in secs.items()}
    med = {name: statistics.median(v) for name, v in rate.items()}
    return {"config": CONFIGS[method], "steps_per_run": steps, "cpu_seconds": secs, "steps_per_cpu_second": rate,
            "median": med, "seqdni_over_plain": med["seqdni"] / med["plain"],
            "seqdni_over_engine": med["seqdni"] / med["engine"], "engine_over_plain": med["engine"] / med["plain"]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--batches", type=int, default=40, help="batches per timed run (skip included)")
    p.add_argument("--skip", type=int, default=3, help="warm-up batches at the start of every run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    results = {"machine": f"{torch.get_num_threads()} torch thread, CPU", "torch": torch.__version__,
               "clock": "time.process_time", "args": vars(args), "goal_seqdni_over_plain": GOAL,
               "methods": {m: measure(m, args) for m in args.methods}}
    print("| method | seqdni steps/CPU-s | engine | plain | seqdni/plain | seqdni/engine | engine/plain |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for m, r in results["methods"].items():
        med = r["median"]
        print(f"| {m} | {med['seqdni']:.0f} | {med['engine']:.0f} | {med['plain']:.0f} | {r['seqdni_over_plain']:.3f} "
              f"| {r['seqdni_over_engine']:.3f} | {r['engine_over_plain']:.3f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
