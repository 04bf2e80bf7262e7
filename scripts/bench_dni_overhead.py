"""Cost of DNI: time per training character and peak memory of DNI-8 against BPTT-8 and
BPTT-40 (and, with --aux, DNI-8 + Aux) on the same model and data, in one run.

Each variant drives `seqdni.engines.FlatEngine.update` as the training module does (unroll;
clip core; backward SG loss; clip SG; step SG; step core). Timed runs skip `--skip` warm-up
batches and alternate the variants over `--repeats`; medians are reported. Memory: on CUDA
torch.cuda.max_memory_allocated; on CPU the bytes saved for backward during one unroll (the
activation memory that the truncation length governs), parameters + optimiser state apart.
M's own work (its two forward passes, its backward and its Adam step) is also timed alone,
which gives a floor under the DNI-8/BPTT-8 time ratio (and, with one forward pass, under DNI-8
with `reuse`). `DNI-8 rank 64` is DNI-8 with a rank-64 linear M (`DNIOptions.rank`).

    python scripts/bench_dni_overhead.py [--aux] [--device cuda] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.autograd.graph import saved_tensors_hooks

from seqdni.data import StreamBatches
from seqdni.dni import regression_loss
from seqdni.engines import DNIOptions, FlatEngine, Steps, window_diagnostics
from seqdni.nets import CharLSTM
from seqdni.training import adam

GOALS = {"time DNI-8/BPTT-8": 1.10, "memory DNI-8/BPTT-8": 1.15, "memory DNI-8/BPTT-40": 0.4}
MEASURES = {
    "cuda_peak_bytes": "torch.cuda.max_memory_allocated over one unroll (params, optimiser state, batch included)",
    "saved_bytes": "peak bytes of tensors saved for backward during one unroll (saved_tensors_hooks; unique "
                   "storages, parameters excluded); parameters + optimiser state in their own column",
}


class Trainee:
    """A flat engine with its optimisers, stepped exactly as the training module steps it."""

    def __init__(self, args, unroll: int, dni: DNIOptions | None):
        torch.manual_seed(args.seed)
        self.T, self.dni = unroll, dni
        net = CharLSTM(args.vocab, args.embed, args.hidden)
        self.engine = FlatEngine(net, unroll, dni, lr=2e-3, clip=args.clip).to(args.device).train()
        self.groups = self.engine.param_groups()
        self.opts = [adam(g.params, lr=g.lr) for g in self.groups]
        self.sg_params = self.groups[1].params if dni is not None else []
        self.carry = self.engine.initial_carry(args.batch, torch.device(args.device))

    def step(self, x, y, backward=None):
        self.carry, out = self.engine.update(x, y, self.carry, Steps(self.groups, self.opts, backward=backward))
        return out

    def batch(self, x, y):
        outs = [self.step(x[:, i : i + self.T], y[:, i : i + self.T]) for i in range(0, x.size(1), self.T)]
        window_diagnostics(outs)  # M's diagnostics once per batch, as in training_step
        if not torch.isfinite(torch.stack([o.loss for o in outs]).mean()):  # one host sync per batch
            raise FloatingPointError("non-finite loss")

    def state_bytes(self) -> int:
        """Parameters (core, M, aux head) and optimiser state, unique storages."""
        ts = list(self.engine.parameters())
        for opt in self.opts:
            ts += [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
        return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in ts}.values())


class SavedTensorMeter:
    """Live bytes saved for backward. A storage counts once, as the smaller of its size and the
    sum of the distinct views saved from it (a slice of the whole data set is not the data
    set); parameters are excluded. A backward that frees the graph clears the live set."""

    def __init__(self, exclude: set[int]):
        self.exclude, self.live, self.peak = exclude, {}, 0

    def pack(self, t):
        s = t.untyped_storage()
        if s.data_ptr() not in self.exclude:
            _, views = self.live.setdefault(s.data_ptr(), (s.nbytes(), {}))
            views[(t.data_ptr(), tuple(t.shape), t.stride())] = t.numel() * t.element_size()
            self.peak = max(self.peak, sum(min(n, sum(v.values())) for n, v in self.live.values()))
        return t

    def backward(self, t, retain_graph: bool = False):
        t.backward(retain_graph=retain_graph)
        if not retain_graph:
            self.live.clear()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def batches(args, ids):
    for b, (x, y) in enumerate(StreamBatches(ids, args.batch, args.window)):
        if b == args.batches:
            return
        yield x.to(args.device, non_blocking=True), y.to(args.device, non_blocking=True)


def time_run(args, ids, unroll, dni, n: int) -> float:
    """Seconds (wall, or this process's CPU time with --clock cpu) for batches skip..n-1 of a fresh model."""
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    trainee, t0 = Trainee(args, unroll, dni), 0.0
    for b, (x, y) in enumerate(batches(args, ids)):
        if b == args.skip:
            sync(args.device)
            t0 = clock()
        trainee.batch(x, y)
        if b == n - 1:
            sync(args.device)
            return clock() - t0
    raise RuntimeError("the data ran out")


def sg_work(args, n: int = 300, reuse: bool = False) -> float:
    """Seconds per unroll of M's own work in DNI-8, timed alone on random states: M at s_{t+T}
    (no graph; not with `reuse`, where that evaluation is the one M learns from), M at s_t with
    its regression loss and backward, M's clip and Adam step. With a BPTT-8 unroll's time it
    bounds DNI-8/BPTT-8 from below (the core's extra work, its backward into s_t and the
    injection, comes on top)."""
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    trainee = Trainee(args, 8, DNIOptions())
    sg, d = trainee.engine.boundary.sg, trainee.engine.net.state_size
    torch.nn.init.normal_(sg.net[-1].weight, std=0.01)
    s_end, s_t, target = (torch.randn(args.batch, d, device=args.device) for _ in range(3))
    times = []
    for i in range(n + 20):
        sync(args.device)
        t0 = clock()
        if not reuse:
            with torch.no_grad():
                sg(s_end)
        regression_loss(sg(s_t), target).backward()
        torch.nn.utils.clip_grad_norm_(trainee.sg_params, trainee.dni.clip)
        trainee.opts[1].step()
        trainee.opts[1].zero_grad(set_to_none=True)
        sync(args.device)
        if i >= 20:
            times.append(clock() - t0)
    return statistics.median(times)


def memory(args, ids, unroll, dni) -> dict[str, int]:
    """Peak memory of a fresh model, measured on its third unroll (a prediction awaits its target)."""
    trainee = Trainee(args, unroll, dni)
    x, y = next(batches(args, ids))
    chunks = [(x[:, i : i + unroll], y[:, i : i + unroll]) for i in range(0, x.size(1), unroll)]
    for cx, cy in chunks[:2]:
        trainee.step(cx, cy)
    out = {"state_bytes": trainee.state_bytes()}
    params = {p.untyped_storage().data_ptr() for p in trainee.engine.parameters()}
    meter = SavedTensorMeter(params)
    if args.device.startswith("cuda"):
        sync(args.device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with saved_tensors_hooks(meter.pack, lambda t: t):
        trainee.step(*chunks[2 % len(chunks)], backward=meter.backward)
    out["saved_bytes"] = meter.peak
    if args.device.startswith("cuda"):
        sync(args.device)
        out["cuda_peak_bytes"], out["cuda_base_bytes"] = torch.cuda.max_memory_allocated(), base
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--aux", action="store_true", help="also DNI-8 + Aux (DNIOptions(aux_weight=0.1)), recomputing "
                   "the previous unroll, with `aux_keep_graph`, and with it and a rank-64 M and Â")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--embed", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--window", type=int, default=120, help="columns per batch; a multiple of 8 and 40")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--batches", type=int, default=20, help="batches per timed run (skip included)")
    p.add_argument("--skip", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time; cpu: this process's CPU time (CPU device, 1 thread), which other "
                        "jobs on a shared machine disturb far less than wall time")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (0: torch default). 1 by default: on a shared 2-core machine "
                        "two threads wait on each other at every op and timings follow the scheduler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.window % 40 or args.skip >= args.batches:
        p.error("--window must be a multiple of 40 and --skip smaller than --batches")
    args.vocab = 50
    variants = {"BPTT-8": (8, None), "DNI-8": (8, DNIOptions()), "DNI-8 reuse": (8, DNIOptions(reuse=True)),
                "DNI-8 rank 64": (8, DNIOptions(rank=64)), "BPTT-40": (40, None)}
    if args.aux:
        variants["DNI-8+Aux"] = (8, DNIOptions(aux_weight=0.1))
        variants["DNI-8+Aux keep graph"] = (8, DNIOptions(aux_weight=0.1, aux_keep_graph=True))
        variants["DNI-8+Aux keep graph rank 64"] = (8, DNIOptions(aux_weight=0.1, aux_keep_graph=True, rank=64))
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, args.vocab, (args.batch * (args.window * (args.batches + 1) + 1),), generator=g)

    mem = {name: memory(args, ids, *v) for name, v in variants.items()}
    for v in variants.values():  # warm-up
        time_run(args, ids, *v, args.skip + 1)
    wall: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.repeats):
        for name in list(variants) if r % 2 == 0 else list(variants)[::-1]:
            wall[name].append(time_run(args, ids, *variants[name], args.batches))
    work, work_reuse = sg_work(args), sg_work(args, reuse=True)
    chars = (args.batches - args.skip) * args.batch * args.window
    us = {name: statistics.median(v) / chars * 1e6 for name, v in wall.items()}
    us_sg_work = work / (args.batch * 8) * 1e6  # per character of an 8-step unroll
    key = "cuda_peak_bytes" if args.device.startswith("cuda") else "saved_bytes"
    ratios = {"time DNI-8/BPTT-8": us["DNI-8"] / us["BPTT-8"],
              "memory DNI-8/BPTT-8": mem["DNI-8"][key] / mem["BPTT-8"][key],
              "memory DNI-8/BPTT-40": mem["DNI-8"][key] / mem["BPTT-40"][key]}
    ratios["time floor (BPTT-8 + M's own work)/BPTT-8"] = 1 + us_sg_work / us["BPTT-8"]
    ratios["time DNI-8 reuse/BPTT-8"] = us["DNI-8 reuse"] / us["BPTT-8"]
    ratios["time floor with reuse/BPTT-8"] = 1 + work_reuse / (args.batch * 8) * 1e6 / us["BPTT-8"]
    ratios["time DNI-8 rank 64/BPTT-8"] = us["DNI-8 rank 64"] / us["BPTT-8"]
    if key == "saved_bytes":  # the CPU measure leaves M's parameters and Adam state out: show them too
        total = {name: m["saved_bytes"] + m["state_bytes"] for name, m in mem.items()}
        ratios["memory incl. params + optimiser DNI-8/BPTT-8"] = total["DNI-8"] / total["BPTT-8"]
    if args.aux:
        ratios["time DNI-8+Aux/BPTT-8"] = us["DNI-8+Aux"] / us["BPTT-8"]
        ratios["memory DNI-8+Aux/BPTT-8"] = mem["DNI-8+Aux"][key] / mem["BPTT-8"][key]
        ratios["time DNI-8+Aux keep graph/BPTT-8"] = us["DNI-8+Aux keep graph"] / us["BPTT-8"]
        ratios["memory DNI-8+Aux keep graph/BPTT-8"] = mem["DNI-8+Aux keep graph"][key] / mem["BPTT-8"][key]
        ratios["time DNI-8+Aux keep graph rank 64/BPTT-8"] = us["DNI-8+Aux keep graph rank 64"] / us["BPTT-8"]

    print(f"device {args.device}, clock {args.clock}, threads {torch.get_num_threads()}, synthetic ids (vocab 50), "
          f"hidden {args.hidden}, embed {args.embed}, batch {args.batch}, window {args.window}; "
          f"{args.batches - args.skip} timed batches ({chars} chars) per run, {args.repeats} repeats, alternating")
    print(f"memory measure: {MEASURES[key]}\n")
    print("| variant | median µs/char | runs µs/char | memory MiB | params + optimiser MiB |")
    print("|---|---:|---|---:|---:|")
    for name in variants:
        runs = ", ".join(f"{w / chars * 1e6:.1f}" for w in wall[name])
        print(f"| {name} | {us[name]:.1f} | {runs} | {mem[name][key] / 2**20:.2f} "
              f"| {mem[name]['state_bytes'] / 2**20:.2f} |")
    print(f"| M's own work alone (no core) | {us_sg_work:.1f} | | | |")
    print("\n| ratio | value | goal |\n|---|---:|---|")
    for name, v in ratios.items():
        goal = GOALS.get(name)
        print(f"| {name} | {v:.3f} | {'' if goal is None else f'≤ {goal}: ' + ('met' if v <= goal else 'NOT met')} |")
    if args.out:
        result = {"config": vars(args), "threads": torch.get_num_threads(), "chars_per_run": chars,
                  "memory_measure": MEASURES[key], "memory": mem, "clock": args.clock, "seconds": wall,
                  "median_us_per_char": us, "sg_work_us_per_char": us_sg_work,
                  "ratios": ratios, "goals": GOALS, "goals_met": {k: ratios[k] <= g for k, g in GOALS.items()}}
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
