"""How predictable is the gradient a synthetic-gradient model must predict?

Loads a trained DNI checkpoint, runs its unroll (`seqdni.engines.FlatEngine`, the exact training
computation, parameters left unchanged) over consecutive training windows, and collects at
each truncation boundary the state s_t, the target M learns there (in M's per-sequence units:
bootstrapped after one unroll, or after n with `model.dni.target_unrolls` n, pending or not)
and M's own prediction M(s_t). It then fits the best *linear* predictor offline (ridge
regression on the first 80% of boundaries, the ridge chosen on a slice of them) and compares,
on the held-out 20%:

- `online M`: the checkpoint's synthetic-gradient model (with `--learn`, still learning as in
  training while the core stays fixed);
- `ridge(s)`, `ridge(tanh s)`: the best linear map from the state, or from tanh of it, the ceiling
  for a linear M (on tanh(s) with `model.dni.squash`);
- `ridge(s, next input)`: the same with the next input one-hot, the ceiling for a
  conditional linear M;
- `mlp<W>(tanh s)` with `--mlp W`: a one-hidden-layer MLP of width W on tanh of the state, the
  epoch kept by a validation slice (what a nonlinear M could reach);
- `mean target`: a constant predictor.

Reported per predictor: mean per-example cosine with the target (what `sg/cosine` logs) and
the explained fraction 1 - |pred - target|^2 / |target|^2 (negative: worse than predicting 0).
With pending targets, M's cosine is also given by horizon: every waiting state against the target
it has so far, 1 to n unrolls (`sg/cosine` logs their mean). Beside the scores, M's alignment with
the state it reads (`alignment`): the cosine of M(s) with s, with tanh(s), and with another stream's
s at the same boundary. Were M(s) to lean along s, its injection would act on the core as a penalty
on the state's size, whatever M predicts of the future.

    python scripts/sg_ceiling.py --ckpt runs/ptb-cpu/dni8/version_0/checkpoints/latest.ckpt \
        --data-dir ../shared/data/ptb --unrolls 600 --out sg_ceiling.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from pathlib import Path

import torch
import torch.nn.functional as F

from seqdni.cli.sample import load_checkpoint
from seqdni.data import CharDataModule
from seqdni.dni import flatten_state

sys.path.insert(0, str(Path(__file__).resolve().parent))
from copy_sg_ceiling import mlp, scores  # noqa: E402  (the same scores and MLP fit as the Copy ceiling)


def collect(lm, ids: torch.Tensor, rows: int, unrolls: int, warmup: int, learn: bool = False):
    """The state, the target and M's prediction at every boundary whose target is complete, with the
    next input. With n-step targets (`model.dni.target_unrolls` n > 1, pending or not) a boundary's
    target is complete n - 1 unrolls later: the first `rows` rows the engine reports then are the
    oldest waiting state's (parameters never change here, so the engine's recomputed states are the
    states collected). `learn`: M keeps learning as in training (a fresh Adam at its learning rate, its clip),
    the core stays as it is."""
    T, engine, n = lm.hparams.unroll, lm.engine, lm.dni.target_unrolls
    engine.targets_for_frozen_m = True  # M's targets are what is scored, whether or not M learned (a frozen-M control)
    m_params = list(engine.boundary.parameters())
    opt = torch.optim.Adam(m_params, lr=lm.dni.lr) if learn else None
    length = ids.numel() // rows
    if warmup + (unrolls + n) * T + 1 > length:
        raise ValueError(f"the split is too short for {unrolls} unrolls of {rows} streams; lower --unrolls")
    grid = ids[: rows * length].view(rows, length).long()
    carry = engine.initial_carry(rows, torch.device("cpu"))
    with torch.no_grad():
        _, state = lm.net(grid[:, :warmup], carry.state)
    carry.state = state
    waiting: deque = deque(maxlen=n)  # (s_t, first input) of the last n boundaries, the oldest first
    states, targets, preds, nexts, horizons = [], [], [], [], []
    for u in range(unrolls + n):  # unroll 0 starts no boundary; targets complete from unroll n on
        a = warmup + u * T
        x, y = grid[:, a : a + T], grid[:, a + 1 : a + T + 1]
        if carry.boundary:  # the first unroll starts no boundary: it has no prediction to train
            waiting.append((flatten_state(carry.state), x[:, 0]))
        out = engine.unroll(x, y, carry)
        if out.target is not None and len(waiting) == n:
            s_t, first = waiting[0]
            states.append(s_t)
            targets.append(out.target[:rows])
            preds.append(out.prediction[:rows])
            nexts.append(first)
            if lm.dni.pending_targets:  # every waiting state against the horizon it has so far
                horizons.append([F.cosine_similarity(p, t, dim=1).mean().item() for p, t in
                                 zip(out.prediction.split(rows), out.target.split(rows))])
        carry = out.carry
        engine.zero_grad(set_to_none=True)  # the core's gradients are only read, never applied
        if opt is not None and out.sg_loss is not None:
            out.sg_loss.backward()
            if lm.dni.clip > 0:
                torch.nn.utils.clip_grad_norm_(m_params, lm.dni.clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
    by_horizon = [sum(h) / len(horizons) for h in zip(*horizons)][::-1] if horizons else []  # 1 unroll first
    return torch.cat(states), torch.cat(targets), torch.cat(preds), torch.cat(nexts), by_horizon


def ridge(features: torch.Tensor, target: torch.Tensor, train: int) -> tuple[torch.Tensor, float]:
    """Held-out predictions of the best ridge fit (lambda chosen on the last fifth of `train`)."""
    X = torch.cat([features, torch.ones(len(features), 1)], dim=1).double()
    Y = target.double()
    fit_n = int(0.8 * train)

    def solve(n: int, lam: float) -> torch.Tensor:
        A = X[:n]
        return torch.linalg.solve(A.T @ A + lam * n * torch.eye(A.size(1), dtype=A.dtype), A.T @ Y[:n])

    best = max((scores((X[fit_n:train] @ solve(fit_n, lam)).float(), target[fit_n:train])["cosine"], lam)
               for lam in (1e-3, 1e-2, 1e-1, 1.0, 10.0))
    return (X[train:] @ solve(train, best[1])).float(), best[1]


def alignment(states: torch.Tensor, preds: torch.Tensor, rows: int) -> dict[str, float]:
    """Mean cosine of M(s) with s, with tanh(s) and with another stream's s at the same boundary (the
    next row of each boundary's `rows`); `states` and `preds` hold whole boundaries, `rows` each."""
    other = states.view(-1, rows, states.size(1)).roll(1, dims=1).reshape_as(states)
    return {name: F.cosine_similarity(preds, v, dim=1).mean().item()
            for name, v in (("cos(M, s)", states), ("cos(M, tanh s)", torch.tanh(states)),
                            ("cos(M, another stream's s)", other))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="a DNI checkpoint written by seqdni.train")
    p.add_argument("--data-dir", help="PTB directory (default: $SEQDNI_DATA_DIR)")
    p.add_argument("--rows", type=int, default=64, help="streams per unroll")
    p.add_argument("--unrolls", type=int, default=600, help="boundaries per stream")
    p.add_argument("--warmup", type=int, default=200, help="steps that warm the state up first")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mlp", type=int, default=0,
                   help="> 0: also fit a one-hidden-layer MLP of this width on tanh of the state")
    p.add_argument("--learn", action="store_true",
                   help="M keeps learning during the pass, as in training (the core does not): its predictions "
                        "are then scored online, each before M's step on it")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lm = load_checkpoint(args.ckpt).train()
    if lm.dni is None:
        raise SystemExit(f"{args.ckpt} was trained without DNI: there is no synthetic-gradient model to assess")
    dm = CharDataModule(data_dir=args.data_dir)
    S, G, P, nxt, by_horizon = collect(lm, dm.ids["train"], args.rows, args.unrolls, args.warmup, args.learn)
    n = len(S)
    train = int(0.8 * n)
    held = G[train:]
    onehot = F.one_hot(nxt, lm.net.vocab_size).float()
    fit_s, lam_s = ridge(S, G, train)
    fit_t, lam_t = ridge(torch.tanh(S), G, train)
    fit_sx, lam_sx = ridge(torch.cat([S, onehot], dim=1), G, train)
    results = {
        "online M": scores(P[train:], held),
        f"ridge(s), lambda {lam_s:g}": scores(fit_s, held),
        f"ridge(tanh s), lambda {lam_t:g}": scores(fit_t, held),
        f"ridge(s, next input), lambda {lam_sx:g}": scores(fit_sx, held),
        **({f"mlp{args.mlp}(tanh s)": scores(mlp(torch.tanh(S), G, train, args.mlp), held)} if args.mlp else {}),
        "mean target": scores(G[:train].mean(0, keepdim=True).expand_as(held), held),
    }
    print(f"{args.ckpt}: {n} boundaries ({args.rows} streams x {args.unrolls}), held out {n - train}; "
          f"target norm {held.norm(dim=1).mean():.3f}, M's prediction norm {P[train:].norm(dim=1).mean():.3f}")
    print("| predictor | cosine | explained |\n|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['cosine']:.4f} | {r['explained']:.4f} |")
    aligned = alignment(S, P, args.rows)  # nothing is fitted here: every boundary counts
    print("M's alignment with the state: " + ", ".join(f"{k} {v:.4f}" for k, v in aligned.items()))
    if by_horizon:
        print("online M against the pending targets, by the unrolls each has so far (1 to n), mean cosine: "
              + " ".join(f"{c:.4f}" for c in by_horizon))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"ckpt": args.ckpt, "boundaries": n, "held_out": n - train,
                       "target_norm": held.norm(dim=1).mean().item(),
                       "prediction_norm": P[train:].norm(dim=1).mean().item(), "results": results, "alignment": aligned,
                       "online_cosine_by_horizon": by_horizon, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
