"""Training throughput of the seqdni step (SeqModel under a real Lightning Trainer) against a
minimal plain-PyTorch truncated-BPTT loop, on the same model, the same data, in one run.

Both variants read the same `StreamBatches` loader and run plain truncated BPTT (no DNI):
the seqdni variant is `SeqModel.training_step` driven by `lightning.Trainer`; the plain
variant is CharLSTM + Adam + clip_grad_norm_ with the state detached between unrolls and
no per-step host sync. Each timed run skips `--skip` warm-up batches, then clocks from the
start of the first measured batch to the end of the last. The variants alternate (in
ABBA order) over `--repeats`; medians and the ratio seqdni/plain are reported.

    python scripts/bench_throughput.py                    # synthetic ids, vocab 50
    python scripts/bench_throughput.py --data-dir DIR     # PTB from DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F

from seqdni.data import CharDataModule, StreamBatches, Task
from seqdni.nets import CharLSTM
from seqdni.training import SeqModel

GOAL = 0.95


def load_ids(args) -> tuple[torch.Tensor, list[str]]:
    """Training ids and vocabulary: PTB from --data-dir, else seeded random ids over 50 symbols."""
    if args.data_dir:
        dm = CharDataModule(data_dir=args.data_dir, batch_size=args.batch, window=args.window, download=False)
        return dm.ids["train"], dm.symbols
    need = args.batch * (args.window * (args.batches + 1) + 1)
    g = torch.Generator().manual_seed(args.seed)
    return torch.randint(0, 50, (need,), generator=g), [chr(ord("!") + i) for i in range(50)]


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


CLOCK = [time.perf_counter]  # --clock cpu: time.process_time


class BatchClock(L.Callback):
    """The clock at the start of batch `skip` and at the end of batch `last`."""

    def __init__(self, skip: int, last: int, device: str):
        self.skip, self.last, self.device = skip, last, device
        self.t0 = self.t1 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.skip:
            synchronize(self.device)
            self.t0 = CLOCK[0]()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.last:
            synchronize(self.device)
            self.t1 = CLOCK[0]()


def run_seqdni(args, ids, vocab, batches: int) -> float:
    """Seconds for batches skip..batches-1 of SeqModel.training_step under lightning.Trainer."""
    torch.manual_seed(args.seed)
    model = SeqModel(Task("chars", vocab), window=args.window, unroll=args.unroll, embed_dim=args.embed,
                     hidden_size=args.hidden, clip=args.clip)
    clock = BatchClock(args.skip, batches - 1, args.device)
    cuda = args.device.startswith("cuda")
    devices = [torch.device(args.device).index or 0] if cuda else 1
    trainer = L.Trainer(accelerator="gpu" if cuda else "cpu", devices=devices,
                        precision=args.precision, max_epochs=1, max_steps=batches * (args.window // args.unroll),
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[clock])
    # max_steps counts core optimiser steps: one per unroll, window // unroll per batch.
    trainer.fit(model, train_dataloaders=StreamBatches(ids, args.batch, args.window))
    if clock.t0 is None or clock.t1 is None:
        raise RuntimeError(f"the Lightning run stopped before batch {batches - 1}; is the data long enough?")
    return clock.t1 - clock.t0


def run_plain(args, ids, vocab, batches: int) -> float:
    """Seconds for batches skip..batches-1 of a minimal plain-PyTorch TBPTT loop."""
    device, T = torch.device(args.device), args.unroll
    torch.manual_seed(args.seed)
    model = CharLSTM(len(vocab), args.embed, args.hidden).to(device).train()
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=2e-3, fused=True)  # the same Adam kernel as seqdni.training.adam
    amp = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    state, t0 = None, None
    for b, (x, y) in enumerate(StreamBatches(ids, args.batch, args.window)):
        if b == args.skip:
            synchronize(args.device)
            t0 = CLOCK[0]()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        for i in range(0, x.size(1), T):
            ctx = torch.autocast(device.type, amp) if amp is not None else contextlib.nullcontext()
            with ctx:
                logits, state = model(x[:, i : i + T], state)
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y[:, i : i + T].reshape(-1))
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            torch.nn.utils.clip_grad_norm_(params, args.clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            state = tuple(s.detach() for s in state)
        if b == batches - 1:
            synchronize(args.device)
            return CLOCK[0]() - t0
    raise RuntimeError(f"the data ran out before batch {batches - 1}")


VARIANTS = {"seqdni": run_seqdni, "plain": run_plain}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="directory with PTB (default: synthetic random ids, vocab 50)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"],
                   help="16-mixed needs CUDA (or a CPU whose oneDNN has an fp16 LSTM)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--embed", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--unroll", type=int, default=8)
    p.add_argument("--window", type=int, default=120)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--batches", type=int, default=50, help="batches per timed run (skip included)")
    p.add_argument("--skip", type=int, default=3, help="warm-up batches at the start of every run")
    p.add_argument("--warmup-batches", type=int, default=6, help="batches of the untimed warm-up run per variant")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time; cpu: this process's CPU time (CPU device), which other jobs on a "
                        "shared machine disturb far less")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (0: torch default). 1 by default: on a shared 2-core machine "
                        "two threads wait on each other at every op and timings follow the scheduler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    if args.clock == "cpu":
        CLOCK[0] = time.process_time
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.window % args.unroll or args.skip >= args.batches:
        p.error("--window must be a multiple of --unroll and --skip smaller than --batches")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")

    ids, vocab = load_ids(args)
    for run in VARIANTS.values():  # warm-up: allocator, kernels, Lightning imports
        run(args, ids, vocab, max(args.warmup_batches, args.skip + 1))
    secs: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(args.repeats):
        order = list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]  # ABBA: drift hits both alike
        for name in order:
            secs[name].append(VARIANTS[name](args, ids, vocab, args.batches))
    chars = (args.batches - args.skip) * args.batch * args.window
    rates = {name: [chars / s for s in v] for name, v in secs.items()}
    med = {name: statistics.median(v) for name, v in rates.items()}
    ratio = med["seqdni"] / med["plain"]

    print(f"device {args.device}, precision {args.precision}, threads {torch.get_num_threads()}, "
          f"{'PTB' if args.data_dir else 'synthetic ids (vocab 50)'}, hidden {args.hidden}, embed {args.embed}, "
          f"batch {args.batch}, unroll {args.unroll}, window {args.window}; {args.batches - args.skip} timed batches "
          f"({chars} chars) per run, {args.repeats} repeats, alternating\n")
    print("| variant | median chars/s | runs (chars/s) | median s/run |")
    print("|---|---:|---|---:|")
    for name in VARIANTS:
        runs = ", ".join(f"{v:,.0f}" for v in rates[name])
        print(f"| {name} | {med[name]:,.0f} | {runs} | {statistics.median(secs[name]):.2f} |")
    print(f"\nratio seqdni/plain = {ratio:.3f} (goal >= {GOAL}: {'met' if ratio >= GOAL else 'NOT met'})")
    if args.out:
        result = {"config": vars(args), "threads": torch.get_num_threads(), "chars_per_run": chars,
                  "seconds": secs, "chars_per_sec": rates, "median_chars_per_sec": med,
                  "ratio_seqdni_over_plain": ratio, "goal": GOAL, "goal_met": ratio >= GOAL}
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
