"""How predictable from the state is the gradient a Copy synthetic-gradient model stands in for?

Loads a trained Copy / Repeat Copy DNI checkpoint and, on fixed held-out episode streams at the
checkpoint's curriculum level, collects at every truncation boundary the state s_t, M's
prediction M(s_t) and the true future gradient over the next K unrolls by BPTT (in M's
per-sequence units), undiscounted and discounted by the run's γ. It then fits the best
*linear* map from the state to each (ridge regression on the first 80% of boundaries, the
ridge chosen on a slice of them) and compares, on the held-out 20%, mean per-example cosine and
explained fraction 1 - |pred - target|² / |target|² for: the checkpoint's M, ridge fits (the
ceiling of a linear M with this state distribution) on the state, on tanh of it, on the state
and the input read last (and their products), with `--mlp W` a one-hidden-layer MLP of width W on
tanh of the state (the epoch kept by a validation slice), with `--ranks` reduced-rank and diagonal
maps on tanh of the state, and the mean gradient (a constant). With episode resets it also fits
tanh of the state beside the vectors the episode under way has read (its future targets in Copy:
the labels a conditional M would get), alone and gated by the episode's place, and `--phase`
keeps the boundaries before or after the episode's delimiter. `episode` is the true gradient of
the current episode's losses alone, what an `episodic` M is trained towards.

    python scripts/copy_sg_ceiling.py --ckpt runs/copy-table/copy/dni2/seed1/checkpoints/latest.ckpt \
        --unrolls 8 --out ceiling.json
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from seqdni.cli.sample import load_checkpoint
from seqdni.data import CopyDataModule, RepeatCopyDataModule
from seqdni.data.episodes import FixedEpisodes
from seqdni.dni import flatten_state, true_future_gradient


def streams(lm, ckpt: dict, rows: int, span: int, seed: int):
    """Held-out episode streams at the checkpoint's level: x (rows, span, ·), y (rows, span, ·)."""
    name = "RepeatCopyDataModule" if lm.task.name == "repeat-copy" else "CopyDataModule"
    dm = (RepeatCopyDataModule if name.startswith("Repeat") else CopyDataModule)(level=ckpt[name]["level"],
                                                                               resets=lm.task.resets)
    return FixedEpisodes(dm._eval_draw, dm.x_dim, rows, span, 1, seed).grid(rows, span), dm.level


def collect(lm, x, y, warmup: int, boundaries: int, K: int, level: int):
    """Per boundary: s_t, M(s_t) and the true future gradient over K unrolls (undiscounted, γ-weighted)."""
    net, T, gamma = lm.net, lm.engine.span, lm.dni.gamma
    with torch.no_grad():
        _, state = net.core(x[:, :warmup], net.init_state(x.size(0)))
    rows = {"s": [], "x_last": [], "m": [], "true": [], "discounted": [], "episode": [], "output": [], "vectors": [],
            "place": []}
    bits = lm.net.output_size
    for b in range(boundaries):
        at = warmup + b * T
        ahead = y[:, at : at + K * T]
        for key, weight, ys in (("true", 1.0, ahead), ("discounted", gamma, ahead),
                                ("episode", 1.0, net.current_episode(ahead))):  # the episode under way only
            chunks = [(j, x[:, at + j * T : at + (j + 1) * T], ys[:, j * T : (j + 1) * T]) for j in range(K)]

            def loss(s, chunk, w=weight):
                out, s = net.core(chunk[1], s)
                return w ** chunk[0] * net.loss(out, chunk[2]), s
            rows[key].append(true_future_gradient(loss, state, chunks) * (x.size(0) * T))
        with torch.no_grad():
            if lm.task.resets:
                rows["output"].append(output_phase(x[:, :at]))
                rows["vectors"].append(episode_vectors(x[:, :at], level, bits))
                place = episode_place(x[:, :at]).clamp(max=2 * level + 1)
                rows["place"].append(F.one_hot(place, 2 * level + 2).float())
            rows["s"].append(flatten_state(state))
            rows["x_last"].append(x[:, at - 1].float())  # the input the core read last, before s_t
            rows["m"].append(lm.engine.boundary.sg(rows["s"][-1]))
            _, state = net.core(x[:, at : at + T], state)
    return {k: torch.cat(v) for k, v in rows.items() if v}


def episode_start(x: torch.Tensor) -> torch.Tensor:
    """Per row of inputs with resets (episode-start flag last): the step at which the episode under way
    began, -1 where none began in `x`."""
    return torch.where(x[..., -1] > 0, torch.arange(x.size(1)), -1).amax(1)


def output_phase(x: torch.Tensor) -> torch.Tensor:
    """Per row of inputs with resets (..., bits, delimiter, episode start): 1. where the episode under
    way has read its delimiter, so only blanks remain to be read; 0. while it is still reading vectors."""
    return ((x[..., -2] > 0) & (torch.arange(x.size(1)) >= episode_start(x)[:, None])).any(1).float()


def episode_place(x: torch.Tensor) -> torch.Tensor:
    """Per row of inputs with resets: how many steps of the episode under way have been read."""
    return x.size(1) - episode_start(x)


def episode_vectors(x: torch.Tensor, level: int, bits: int) -> torch.Tensor:
    """Per row of inputs with resets: the vectors the episode under way has read so far, by their place
    in it, as ±1 bits (0 for a place not read yet): (rows, level · bits). In Copy these are the
    episode's future targets, what a conditional M would be given as labels."""
    rows, steps = x.size(0), x.size(1)
    pos, start = torch.arange(steps), episode_start(x)
    delimiter_seen = torch.cumsum(x[..., bits] * (pos[None] >= start[:, None]), dim=1) > 0
    out = torch.zeros(rows, level, bits)
    for i in range(level):
        at = (start + i).clamp(0, steps - 1)
        read = (start >= 0) & (start + i < steps) & ~delimiter_seen[torch.arange(rows), at]
        out[:, i] = torch.where(read[:, None], 2 * x[torch.arange(rows), at, :bits] - 1, 0.0)
    return out.flatten(1)


def outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row, every product a_i · b_j: what a linear map needs to gate the state by the input."""
    return (a.unsqueeze(2) * b.unsqueeze(1)).flatten(1)


def scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    return {"cosine": F.cosine_similarity(pred, target, dim=1).mean().item(),
            "explained": 1.0 - (pred - target).pow(2).sum().item() / target.pow(2).sum().item()}


def ridge(features: torch.Tensor, target: torch.Tensor, train: int, rank: int | None = None,
          diagonal: bool = False) -> torch.Tensor:
    """Held-out predictions of the best ridge fit (lambda chosen on the last fifth of `train`).

    rank: reduced-rank ridge, the fit projected onto the `rank` leading directions of its fitted
    values (a linear M of that rank). diagonal: output i reads feature i alone (features and
    target of one width): a linear M with a diagonal matrix, one gain per state unit."""
    X = torch.cat([features, torch.ones(len(features), 1)], dim=1).double()
    Y, fit_n = target.double(), int(0.8 * train)

    def solve(n: int, lam: float) -> torch.Tensor:
        A = X[:n]
        if diagonal:  # per unit: slope and intercept of target_i on feature_i
            f, y = A[:, :-1] - A[:, :-1].mean(0), Y[:n] - Y[:n].mean(0)
            gain = (f * y).mean(0) / (f.pow(2).mean(0) + lam)
            bias = Y[:n].mean(0) - gain * A[:, :-1].mean(0)
            return torch.cat([torch.diag(gain), bias[None]])
        B = torch.linalg.solve(A.T @ A + lam * n * torch.eye(A.size(1), dtype=A.dtype), A.T @ Y[:n])
        if rank is not None:
            V = torch.linalg.svd(A @ B, full_matrices=False).Vh[:rank].T
            B = B @ V @ V.T
        return B

    lam = max((1e-3, 1e-2, 1e-1, 1.0, 10.0),
              key=lambda lam: scores((X[fit_n:train] @ solve(fit_n, lam)).float(), target[fit_n:train])["cosine"])
    return (X[train:] @ solve(train, lam)).float()


def mlp(features: torch.Tensor, target: torch.Tensor, train: int, hidden: int, epochs: int = 60) -> torch.Tensor:
    """Held-out predictions of a one-hidden-layer ReLU MLP (Adam, minibatches of 256) fitted to the
    first 80% of `train` rows; the epoch kept is the best by cosine on the rest of `train`."""
    fit_n = int(0.8 * train)
    net = torch.nn.Sequential(torch.nn.Linear(features.size(1), hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, target.size(1)))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    best, kept = -2.0, None
    for _ in range(epochs):
        for idx in torch.randperm(fit_n).split(256):
            opt.zero_grad()
            (net(features[idx]) - target[idx]).pow(2).sum(1).mean().backward()
            opt.step()
        with torch.no_grad():
            score = scores(net(features[fit_n:train]), target[fit_n:train])["cosine"]
            if score > best:
                best, kept = score, net(features[train:]).clone()
    return kept


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="a Copy or Repeat Copy DNI checkpoint written by seqdni.train")
    p.add_argument("--rows", type=int, default=64, help="held-out streams")
    p.add_argument("--boundaries", type=int, default=150, help="boundaries per stream")
    p.add_argument("--unrolls", type=int, default=8, help="K: unrolls of true BPTT behind each boundary")
    p.add_argument("--warmup", type=int, default=60, help="steps that warm the state up first")
    p.add_argument("--mlp", type=int, default=0, help="> 0: also fit an MLP of this width on tanh of the state")
    p.add_argument("--ranks", type=int, nargs="*", default=[],
                   help="also reduced-rank ridge fits of these ranks, and a diagonal one, on tanh of the state")
    p.add_argument("--seed", type=int, default=12345, help="seed of the held-out streams")
    p.add_argument("--phase", choices=("all", "read", "output"), default="all",
                   help="fit and score only the boundaries where the episode under way is still reading vectors "
                        "(read) or has read its delimiter (output; needs a run with data.resets)")
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    ckpt = torch.load(a.ckpt, map_location="cpu", weights_only=True)
    lm = load_checkpoint(a.ckpt)
    if lm.dni is None:
        raise SystemExit(f"{a.ckpt} was trained without DNI: there is no synthetic-gradient model to assess")
    span = a.warmup + (a.boundaries + a.unrolls) * lm.engine.span
    (x, y), level = streams(lm, ckpt, a.rows, span, a.seed)
    d = collect(lm, x, y, a.warmup, a.boundaries, a.unrolls, level)
    if a.phase != "all":
        if not lm.task.resets:
            raise SystemExit(f"--phase {a.phase} needs a checkpoint trained with data.resets (episode starts marked)")
        keep = d["output"] == float(a.phase == "output")
        d = {k: v[keep] for k, v in d.items()}
    train = int(0.8 * len(d["s"]))
    results = {}
    ts = torch.tanh(d["s"])  # what a squashing M reads
    features = {"ridge(s)": d["s"], "ridge(tanh s)": ts,
                "ridge(s, last input)": torch.cat([d["s"], d["x_last"]], 1),
                "ridge(s, last input, s x last input)": torch.cat([d["s"], d["x_last"], outer(d["s"], d["x_last"])], 1)}
    if "vectors" in d:  # the episode's targets, as labels: what M cannot read from a state that lost them
        features |= {"ridge(tanh s, episode vectors)": torch.cat([ts, d["vectors"]], 1),
                     "ridge(tanh s, episode vectors x place)": torch.cat(
                         [ts, outer(d["vectors"], d["place"])], 1)}
    for key in ("true", "discounted", "episode"):
        held = d[key][train:]
        results[key] = {"M": scores(d["m"][train:], held),
                        **{name: scores(ridge(f, d[key], train), held) for name, f in features.items()},
                        **({f"mlp{a.mlp}(tanh s)": scores(mlp(ts, d[key], train, a.mlp), held)}
                           if a.mlp else {}),
                        **({f"mlp{a.mlp}(tanh s, episode vectors)": scores(mlp(
                            features["ridge(tanh s, episode vectors)"], d[key], train, a.mlp), held)}
                           if a.mlp and "vectors" in d else {}),
                        **{f"rank{r}(tanh s)": scores(ridge(ts, d[key], train, rank=r), held)
                           for r in a.ranks},
                        **({"diagonal(tanh s)": scores(ridge(ts, d[key], train, diagonal=True), held)}
                           if a.ranks else {}),
                        "mean": scores(d[key][:train].mean(0, keepdim=True).expand_as(held), held),
                        "target_norm": held.norm(dim=1).mean().item()}
    summary = {"ckpt": a.ckpt, "task": lm.task.name, "unroll": lm.engine.span, "level": level,
               "gamma": lm.dni.gamma, "boundaries": len(d["s"]), "held_out": len(d["s"]) - train,
               "output_phase": d["output"].mean().item() if "output" in d else None,
               "m_norm": d["m"][train:].norm(dim=1).mean().item(), "results": results, "args": vars(a)}
    print(json.dumps(summary, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
