"""Does the synthetic gradient point where the missing gradient points, in the weights?

Truncated BPTT's update for the unroll ending at boundary t is g_in = ∂(its losses)/∂θ; the full
gradient adds g_miss = δ_tᵀ ∂s_t/∂θ, where δ_t = ∂(all later losses)/∂s_t (true BPTT over the next
K unrolls, the current episode's losses only), and DNI adds g_sg = α M(s_t)ᵀ ∂s_t/∂θ instead.
Summed over an unroll's whole batch (as a training update is) and over many unrolls, the three
are vectors over the core's weights; this script loads a trained Copy / Repeat Copy checkpoint,
runs held-out streams at its level and reports, beside the per-stream cosine of M(s_t) with δ_t
in the state (what `sg/probe_cosine` logs):

- cos(g_sg, g_miss) of sums over blocks of 1, 10 and 100 unrolls (one update; about what Adam's
  momentum averages; many), the mean and spread over blocks; the same
  with M's predictions shuffled across the batch's streams (`shuffled`), which keeps what M says
  of every stream alike and loses what it says of each one;
- cos(g_in + g_sg, g_in + g_miss) against cos(g_in, g_in + g_miss): whether DNI's update is
  nearer the full gradient than truncation's;
- |Σ g_miss| / |Σ g_in|: how much of the gradient truncation drops; and the best factor on
  Σ g_sg, ⟨Σ g_sg, Σ g_miss⟩ / |Σ g_sg|², against the injected α (1 is α itself).

A BPTT checkpoint has no M: it gets the truncation numbers only.

    python scripts/copy_credit.py --ckpt runs/copy-table/copy/dni2/seed1/checkpoints/latest.ckpt --out credit.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from seqdni.cli.sample import load_checkpoint
from seqdni.dni import detach_state, flatten_state, true_future_gradient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from copy_sg_ceiling import streams  # noqa: E402  (the same held-out streams)


def weight_grad(value: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def unroll_gradients(lm, x, y, start, at: int, K: int) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
    """g_in, g_miss, g_sg and the shuffled control (sum units) for the unroll [at - T, at) that
    starts from `start`, with the state-space δ_t and M(s_t); and the state s_t, detached."""
    net, T = lm.net, lm.engine.span
    n = x.size(0) * T  # the mean loss runs over B·T positions; sum units multiply by it
    params = [p for p in net.parameters() if p.requires_grad]
    ahead = net.current_episode(y[:, at : at + K * T])
    chunks = [(x[:, at + j * T : at + (j + 1) * T], ahead[:, j * T : (j + 1) * T]) for j in range(K)]

    def future(s, chunk):
        out, s = net.core(chunk[0], s)
        return net.loss(out, chunk[1]), s

    with torch.enable_grad():
        out, end = net.core(x[:, at - T : at], detach_state(start))
        flat = flatten_state(end)
        delta = true_future_gradient(future, end, chunks) * n
        g = {"in": weight_grad(net.loss(out, y[:, at - T : at]) * n, params),
             "miss": weight_grad((delta * flat).sum(), params), "delta": delta}
        if lm.dni is not None:
            m = lm.engine.boundary.sg(flat.detach()).detach()
            shuffled = m[torch.randperm(m.size(0), generator=torch.Generator().manual_seed(at))]
            g.update(sg=weight_grad((lm.dni.scale * m * flat).sum(), params), m=m,
                     shuffled=weight_grad((lm.dni.scale * shuffled * flat).sum(), params))
    return g, detach_state(end)


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a, b, dim=0).item()


def block_cosines(per: list[dict], size: int, dni: bool) -> dict[str, dict[str, float]]:
    """Cosines of gradients summed over consecutive blocks of `size` unrolls: mean and spread over blocks."""
    pairs = {"in_full": lambda t: (t["in"], t["in"] + t["miss"])}
    if dni:
        pairs.update(sg_miss=lambda t: (t["sg"], t["miss"]), shuffled_miss=lambda t: (t["shuffled"], t["miss"]),
                     dni_full=lambda t: (t["in"] + t["sg"], t["in"] + t["miss"]))
    blocks = [{k: sum(p[k] for p in per[i : i + size]) for k in per[0] if k not in ("m", "delta")}
              for i in range(0, len(per) - size + 1, size)]
    out = {}
    for name, pair in pairs.items():
        c = torch.tensor([cos(*pair(b)) for b in blocks])
        out[name] = {"mean": c.mean().item(), "std": c.std().item() if len(c) > 1 else 0.0, "blocks": len(c)}
    return out


def summarise(per: list[dict], dni: bool, sizes: list[int]) -> dict:
    total = {k: sum(p[k] for p in per) for k in per[0] if k not in ("m", "delta")}
    out = {"unrolls": len(per), "dropped_fraction": (total["miss"].norm() / total["in"].norm()).item(),
           "cosines": {str(size): block_cosines(per, size, dni) for size in sizes}}
    if dni:
        sg, miss = total["sg"], total["miss"]
        out.update(best_factor_on_sg=((sg @ miss) / (sg @ sg).clamp_min(1e-30)).item(),
                   state_cosine=torch.cat([F.cosine_similarity(p["m"], p["delta"], dim=1) for p in per]).mean().item())
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="a Copy or Repeat Copy checkpoint written by seqdni.train")
    p.add_argument("--rows", type=int, default=32, help="held-out streams (the batch of one update)")
    p.add_argument("--boundaries", type=int, default=120, help="unrolls per stream")
    p.add_argument("--unrolls", type=int, default=16, help="K: unrolls of true BPTT behind each boundary")
    p.add_argument("--warmup", type=int, default=60, help="steps that warm the state up first")
    p.add_argument("--seed", type=int, default=12345, help="seed of the held-out streams")
    p.add_argument("--blocks", type=int, nargs="+", default=[1, 10, 100],
                   help="cosines of gradients summed over blocks of this many unrolls (1: one update's)")
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args(argv)
    ckpt = torch.load(a.ckpt, map_location="cpu", weights_only=True)
    lm = load_checkpoint(a.ckpt)
    T = lm.engine.span
    (x, y), level = streams(lm, ckpt, a.rows, a.warmup + (a.boundaries + a.unrolls + 1) * T, a.seed)
    with torch.no_grad():
        _, state = lm.net.core(x[:, : a.warmup], lm.net.init_state(x.size(0)))
    per = []
    for b in range(a.boundaries):
        g, state = unroll_gradients(lm, x, y, state, a.warmup + (b + 1) * T, a.unrolls)
        per.append(g)
    summary = {"ckpt": a.ckpt, "task": lm.task.name, "unroll": T, "level": level,
               "method": "bptt" if lm.dni is None else ("dni-aux" if lm.dni.aux_weight > 0 else "dni"),
               "scale": None if lm.dni is None else lm.dni.scale, **summarise(per, lm.dni is not None, a.blocks),
               "args": vars(a)}
    print(json.dumps(summary, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
