"""Where the time of one update goes: the torch profiler over FlatEngine updates at PTB size.

For each variant, the operators that take the most self CPU time per update (one unroll, its
backward, the clips and optimiser steps), grouped by input shapes, so that the matrix
products can be told apart (the LSTM's, M's, the Aux head's, the gate products of the
every-step cell states). Profiler overhead inflates the totals; compare operators, not totals,
with `scripts/bench_dni_overhead.py`'s timings.

    python scripts/profile_unroll.py --variants bptt8 dni8 dni8-aux dni8-aux-keep --out profile.json
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.profiler import ProfilerActivity, profile

from seqdni.engines import DNIOptions, FlatEngine, Steps
from seqdni.nets import CharLSTM
from seqdni.training import adam

VARIANTS = {
    "bptt8": None,
    "dni8": DNIOptions(),
    "dni8-aux": DNIOptions(aux_weight=0.1),
    "dni8-aux-keep": DNIOptions(aux_weight=0.1, aux_keep_graph=True),
    "dni8-aux-keep-rank64": DNIOptions(aux_weight=0.1, aux_keep_graph=True, rank=64),
}


def profile_variant(args, dni: DNIOptions | None) -> dict:
    torch.manual_seed(args.seed)
    engine = FlatEngine(CharLSTM(args.vocab, args.embed, args.hidden), args.unroll, dni)
    groups = engine.param_groups()
    steps = Steps(groups, [adam(g.params, lr=g.lr) for g in groups])
    carry = engine.initial_carry(args.batch, torch.device("cpu"))
    g = torch.Generator().manual_seed(args.seed)
    x, y = (torch.randint(0, args.vocab, (args.batch, args.unroll), generator=g) for _ in range(2))
    for _ in range(args.warmup):
        carry, _ = engine.update(x, y, carry, steps)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.updates):
            carry, _ = engine.update(x, y, carry, steps)
    rows = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in rows) / args.updates / 1e3
    top = [{"op": e.key, "shapes": str(e.input_shapes), "ms_per_update": e.self_cpu_time_total / args.updates / 1e3,
            "calls_per_update": e.count / args.updates} for e in rows[: args.top]]
    return {"total_ms_per_update": total, "top": top}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--embed", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--unroll", type=int, default=8)
    p.add_argument("--updates", type=int, default=20, help="profiled updates per variant")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--top", type=int, default=12, help="operators listed per variant")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.vocab = 50
    results = {}
    for name in args.variants:
        results[name] = r = profile_variant(args, VARIANTS[name])
        print(f"\n## {name}: {r['total_ms_per_update']:.1f} ms of self CPU time per update (profiled)\n")
        print("| operator | input shapes | ms / update | calls / update |\n|---|---|---:|---:|")
        for row in r["top"]:
            ms, calls = row["ms_per_update"], row["calls_per_update"]
            print(f"| {row['op']} | {row['shapes'][:80]} | {ms:.2f} | {calls:.0f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"config": vars(args), "threads": torch.get_num_threads(), "variants": results}, f, indent=2)


if __name__ == "__main__":
    main()
