"""`python -m seqdni.pipeline --config configs/ff/digits-dni.yaml --procs 2 --mode dni`.

Trains a feed-forward config's network as a pipeline of processes, one block per process
(`seqdni.engines.pipeline`): `--mode dni` is update-unlocked DNI (the config's `model.dni`),
`--mode gpipe` synchronous pipelined backpropagation of micro-batches; `--procs 1` is plain
backpropagation in one process. The network is cut into `--procs` blocks (`model.blocks` is
replaced), every rank runs one torch thread, and processes meet through torch.distributed
(gloo on CPU, NCCL with `--device cuda`). At the end the blocks are put together and tested; a
JSON line says the test accuracy, the wall-clock (the slowest rank) and CPU (all ranks) seconds.

In the pipeline every cut below the last regresses M on the bootstrapped target (the next block's
synthetic gradient backpropagated), whatever `model.dni.target` says: the true gradient there would
make a block wait for every block above it, the locking the pipeline removes. With 2 processes the
one cut is the last, where both targets are the true gradient.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from seqdni.cli.parser import SHIPPED
from seqdni.cli.train import load_config, shipped
from seqdni.dni import Interface
from seqdni.engines import LayerOptions
from seqdni.engines.pipeline import Stage, run_dni, run_gpipe
from seqdni.errors import UserError, reported
from seqdni.nets import BlockMLP

PROG = "python -m seqdni.pipeline"
NET_KEYS = ("hidden_size", "depth", "activation")
FF_CONFIGS = sorted((SHIPPED / "ff").glob("*.yaml"))


def check_arguments(procs: int, mode: str, steps: int | None, micro: int) -> None:
    """The command's own numbers and choices, before any config is read."""
    if procs < 1:
        raise UserError(f"--procs must be at least 1, got {procs}")
    if mode not in ("dni", "gpipe"):
        raise UserError(f"--mode must be dni or gpipe, got {mode!r}")
    if steps is not None and steps < 1:
        raise UserError(f"--steps is the number of updates of every block and must be at least 1, got {steps}")
    if micro < 1:
        raise UserError(f"--micro is the number of micro-batches per batch and must be at least 1, got {micro}")


def spec_from_config(path: str, procs: int, mode: str, steps: int | None, seed: int | None, micro: int) -> dict:
    """What every rank needs, as plain data: the network, data module, optimiser and mode settings."""
    check_arguments(procs, mode, steps, micro)
    if not Path(shipped(path)).is_file():
        raise UserError(f"--config {path} is not a file here, and seqdni ships no config of that name; the "
                        f"feed-forward configs are {', '.join(f'configs/ff/{p.name}' for p in FF_CONFIGS)}")
    cfg = load_config(shipped(path))
    model, data = cfg.get("model", {}).get("init_args", {}), cfg.get("data", {})
    if cfg.get("model", {}).get("class_path") != "seqdni.training.LayerModel":
        raise UserError(f"{path} is not a feed-forward config (its model is {cfg.get('model', {}).get('class_path')}, "
                        "not seqdni.training.LayerModel); the pipeline trains configs/ff/*.yaml")
    if mode == "dni" and procs > 1 and not model.get("dni"):
        raise UserError(f"{path} sets no model.dni, so --mode dni has no synthetic gradient to train with; use a "
                        "DNI config (configs/ff/*-dni.yaml) or --mode gpipe")
    depth = model.get("depth", 3)
    if procs > depth + 1:
        raise UserError(f"--procs {procs} cuts the network into more blocks than it has layers to share out "
                        f"(model.depth {depth} hidden layers and the output layer); use at most {depth + 1} "
                        "processes or a deeper network (--config with a larger model.depth)")
    seed = cfg.get("seed_everything", 0) if seed is None else seed
    if steps is None:
        steps = cfg.get("trainer", {}).get("max_steps", 1000)
        if not isinstance(steps, int) or steps < 1:
            raise UserError(f"{path} sets trainer.max_steps to {steps}, and the pipeline trains a given number of "
                            "updates; give --steps N (at least 1)")
    spec = {"net": {k: model[k] for k in NET_KEYS if k in model}, "lr": model.get("lr", 1e-3),
            "clip": model.get("clip", 0.0), "dni": model.get("dni") if mode == "dni" else None,
            "data": {"class_path": data["class_path"], "init_args": {**data.get("init_args", {}), "seed": seed}},
            "procs": procs, "mode": mode, "steps": steps, "seed": seed, "micro": micro, "record": []}
    check_micro(spec, path)
    return spec


def check_micro(spec: dict, path: str) -> None:
    """GPipe cuts each batch into `micro` micro-batches: at most one per example."""
    if spec["mode"] != "gpipe" or spec["procs"] == 1:
        return
    batch = build_data(spec).batch_size
    if spec["micro"] > batch:
        raise UserError(f"--micro {spec['micro']} would cut each batch of {batch} examples (data.batch_size of "
                        f"{path}) into more micro-batches than it has examples; use --micro between 1 and {batch} "
                        "(or a larger data.batch_size)")


def build_data(spec: dict):
    module, _, name = spec["data"]["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**spec["data"]["init_args"])


def batches(dm):
    """The training batches, epoch after epoch (the same order on every rank)."""
    while True:
        yield from dm.train_dataloader()


def build_stage(spec: dict, dm, rank: int, device: torch.device) -> Stage:
    torch.manual_seed(spec["seed"])  # every rank builds the whole network alike and keeps its block
    net = BlockMLP(dm.task, blocks=spec["procs"], **spec["net"]).to(device)
    block = net.blocks[rank]
    widths = ([dm.task.input_size] + net.cut_widths + [dm.task.output_size])[rank : rank + 2]
    stage = Stage(block, net.loss, torch.optim.Adam(block.parameters(), lr=spec["lr"]), tuple(widths),
                  dm.batch_size, clip=spec["clip"], record=set(spec["record"]), rank=rank, world=spec["procs"])
    opts = LayerOptions(**spec["dni"]) if spec["dni"] else None
    if opts is not None and rank < spec["procs"] - 1:
        stage.sg = Interface(widths[1], opts, f"block{rank}", net.cond_dim if opts.conditional else 0).to(device)
        stage.sg_opt = torch.optim.Adam(stage.sg.parameters(), lr=opts.lr)
        stage.condition = net.condition if opts.conditional else None
    return stage


def worker(rank: int, spec: dict, port: int, out: str, device: str = "cpu") -> None:
    """One rank: train its block, then save its weights, history, trace and clock to `out`/rank<r>.pt."""
    torch.set_num_threads(1)
    dev = torch.device(f"cuda:{rank}" if device == "cuda" else "cpu")
    if spec["procs"] > 1:
        dist.init_process_group("nccl" if device == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=spec["procs"])
    try:
        dm = build_data(spec)
        dm.split("train")  # loaded before the clock starts
        stage = build_stage(spec, dm, rank, dev)
        data = ((x.to(dev), y.to(dev)) for x, y in batches(dm))
        clock = run_dni(stage, data, spec["steps"]) if spec["mode"] == "dni" and spec["procs"] > 1 else \
            run_gpipe(stage, data, spec["steps"], spec["micro"])
        torch.save({"block": stage.block.state_dict(), "history": stage.history, "trace": stage.trace,
                    "clock": clock}, Path(out) / f"rank{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(spec: dict, out: str | Path, device: str = "cpu") -> dict:
    """Run every rank (one process each), then test the assembled network; the result as a dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if sys.platform.startswith("linux"):  # gloo over loopback: no dependence on the host name resolving
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if spec["procs"] == 1:
        worker(0, spec, 0, str(out), device)  # one rank: this process
    else:  # forked on the CPU (no second start-up); CUDA needs fresh processes
        mp.start_processes(worker, args=(spec, free_port(), str(out), device), nprocs=spec["procs"], join=True,
                           start_method="fork" if device == "cpu" else "spawn")
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(spec["procs"])]
    dm = build_data(spec)
    net = BlockMLP(dm.task, blocks=spec["procs"], **spec["net"])
    for block, saved in zip(net.blocks, ranks):
        block.load_state_dict(saved["block"])
    sums = net.eval_sums(*dm.split("test"))
    metrics = {k: float(v) for k, v in net.eval_metrics(sums).items()}
    losses = [h["loss"] for h in ranks[-1]["history"]]
    return {"mode": spec["mode"] if spec["procs"] > 1 else "bp", "procs": spec["procs"], "seed": spec["seed"],
            "steps": spec["steps"], "test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"],
            "wall_s": max(r["clock"]["wall_s"] for r in ranks), "cpu_s": sum(r["clock"]["cpu_s"] for r in ranks),
            "first_loss": sum(losses[:20]) / len(losses[:20]), "last_loss": sum(losses[-20:]) / len(losses[-20:]),
            "ranks": ranks}


def log_tensorboard(result: dict, save_dir: str, name: str) -> None:
    """Each rank's training curves (loss; M's loss and cosine with its target) as TensorBoard scalars."""
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(save_dir, name=name)
    for r, saved in enumerate(result["ranks"]):
        for h in saved["history"]:
            metrics = {f"{'train' if k == 'loss' else f'sg/block{r}'}/{k.removeprefix('sg_')}": v
                       for k, v in h.items() if k != "step"}
            if metrics:
                logger.log_metrics(metrics, step=h["step"])
    logger.log_metrics({"test/accuracy": result["test_accuracy"]}, step=result["steps"])
    logger.finalize("success")


def parse(args: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[1])
    p.add_argument("--config", required=True, help="a feed-forward config (configs/ff/...)")
    p.add_argument("--procs", type=int, default=2, help="processes = blocks (1: backpropagation in one process)")
    p.add_argument("--mode", default="dni", metavar="{dni,gpipe}",  # checked by check_arguments: one paragraph
                   help="dni (update unlocking, the default) or gpipe (synchronous micro-batches)")
    p.add_argument("--steps", type=int, default=None,
                   help="updates of every block, at least 1 (default: the config's trainer.max_steps)")
    p.add_argument("--seed", type=int, default=None, help="seed of the weights and the shuffling")
    p.add_argument("--micro", type=int, default=4,
                   help="micro-batches per batch in gpipe mode, from 1 to data.batch_size: a batch of B examples "
                        "makes exactly that many, of B // micro or B // micro + 1 consecutive examples each (the "
                        "update is the whole batch's either way)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: one GPU per rank, NCCL")
    p.add_argument("--out", default="runs/pipeline", help="folder of the ranks' files, TensorBoard and result.json")
    return p.parse_args(args)


def main(args: list[str] | None = None) -> dict:
    def run() -> dict:
        a = parse(args)
        spec = spec_from_config(a.config, a.procs, a.mode, a.steps, a.seed, a.micro)
        result = launch(spec, a.out, a.device)
        log_tensorboard(result, a.out, "tensorboard")
        summary = {k: v for k, v in result.items() if k != "ranks"} | {"config": a.config}
        (Path(a.out) / "result.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary))
        return summary

    return reported(run, PROG, sys.argv[1:] if args is None else list(args))
