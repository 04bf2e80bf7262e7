"""Wrong bits per episode by the episode's place in its stream, and by output step within the episode,
for a Copy or Repeat Copy checkpoint.

Streams of held-out episodes at the checkpoint's level (or `--level`) run from the zero state,
as validation rows do; episode 0 is the first one after the reset. Where the state runs on across
episodes (`data.resets: false`), training rows start from the zero state only at an epoch's start,
so a network can copy well mid-stream yet fail the first episodes after a reset: this is what
`data.eval_warmup` leaves out of the score, and what `data.resets` removes. By output step: the
wrong bits at the i-th output step of an episode (in Copy, the copy of the i-th vector read), so
which vectors a network fails to store shows.

    python scripts/copy_episode_errors.py --ckpt runs/copy/bptt2/version_0/checkpoints/latest.ckpt --out errors.json
"""

from __future__ import annotations

import argparse
import json

import torch

from seqdni.cli.sample import load_checkpoint
from seqdni.data import CopyDataModule, RepeatCopyDataModule
from seqdni.data.episodes import FixedEpisodes


def wrong_bits(net, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(rows, steps): wrong bits at each scored output step, 0 elsewhere; rows run from the zero state."""
    k = net.output_size
    with torch.no_grad():
        out, _ = net.core(x, net.init_state(x.size(0)))
        return (((net.logits(out) > 0).to(y.dtype) != y[..., :k]).to(y.dtype) * y[..., k : k + 1]).sum(-1)


def output_errors(wrong: torch.Tensor, y: torch.Tensor, k: int) -> list[dict]:
    """Mean wrong bits (`wrong_bits`) at the i-th output step of an episode, i = 1, 2, ..., over all
    episodes; k: the network's output bits."""
    scored, end = y[..., k], y[..., k + 1]
    counted = scored.cumsum(1)
    before = torch.cummax(counted * end, dim=1).values  # output steps up to the last episode end so far
    before = torch.cat([torch.zeros_like(before[:, :1]), before[:, :-1]], dim=1)
    place = ((counted - before) * scored).long()  # 1.. on output steps, 0 elsewhere
    return [{"output_step": i, "wrong_bits": float((wrong * (place == i)).sum() / (place == i).sum()),
             "episodes": int((place == i).sum())} for i in range(1, int(place.max()) + 1)]


def episode_errors(wrong: torch.Tensor, y: torch.Tensor, k: int) -> list[dict]:
    """Mean wrong bits (`wrong_bits`) per episode at each place in the rows, over the rows that finish it."""
    end = y[..., k + 1]
    place = end.cumsum(1) - end  # each step's episode, counted from 0 in its row
    rows = []
    for i in range(int(place.max().item()) + 1):
        at = place == i
        finished = float((end * at).sum())
        if finished:
            rows.append({"episode": i, "wrong_bits": float((wrong * at).sum()) / finished, "episodes": int(finished)})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a Copy or Repeat Copy checkpoint written by seqdni.train")
    p.add_argument("--level", type=int, help="N of the episodes (default: the checkpoint's level)")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--span", type=int, default=1200, help="steps per row")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args(argv)
    lm = load_checkpoint(a.ckpt)
    if lm.task.name not in ("copy", "repeat-copy"):
        raise SystemExit(f"{a.ckpt} was trained on {lm.task.name!r}, not on Copy or Repeat Copy")
    ckpt = torch.load(a.ckpt, map_location="cpu", weights_only=True)
    cls = RepeatCopyDataModule if lm.task.name == "repeat-copy" else CopyDataModule
    level = a.level or int(ckpt[cls.__name__]["level"])
    dm = cls(level=level, resets=lm.task.resets)
    x, y = FixedEpisodes(dm._eval_draw, dm.x_dim, a.rows, a.span, 1, a.seed).grid(a.rows, a.span)
    wrong, k = wrong_bits(lm.net.eval(), x, y), lm.net.output_size  # one forward pass serves both tables
    rows, steps = episode_errors(wrong, y, k), output_errors(wrong, y, k)
    print(f"{a.ckpt}: {lm.task.name}, N = {level}, {a.rows} rows of {a.span} steps from the zero state")
    print("| episode in the row | wrong bits per episode | episodes |\n|---:|---:|---:|")
    for r in rows:
        if r["episode"] < 6 or r["episode"] % 10 == 0:
            print(f"| {r['episode']} | {r['wrong_bits']:.3f} | {r['episodes']} |")
    print("\n| output step in the episode | wrong bits |\n|---:|---:|")
    for r in steps:
        print(f"| {r['output_step']} | {r['wrong_bits']:.3f} |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"ckpt": a.ckpt, "task": lm.task.name, "level": level, "rows": a.rows, "span": a.span,
                       "seed": a.seed, "by_episode": rows, "by_output_step": steps}, f, indent=2)


if __name__ == "__main__":
    main()
