"""How good is M? Compare it at a held boundary with the true future gradient (BPTT behind it)."""

from __future__ import annotations

import torch
from torch import Tensor

from seqdni.dni import cosine, flatten_state, true_future_gradient
from seqdni.engines.flat import FlatEngine


@torch.no_grad()
def probe(engine: FlatEngine, x: Tensor, y: Tensor, warmup: int) -> dict[str, Tensor]:
    """Warm up `warmup` steps, then compare M at that boundary with the true future gradient, by
    BPTT over the rest of the window cut into the engine's unrolls.

    The true gradient is the one M is trained towards: with `scale_target` the target's future
    term is scaled once per unroll, so unroll j after the boundary counts scale**j."""
    net, unroll, dni = engine.net, engine.span, engine.dni
    state = net.init_state(x.size(0), x.device)
    _, state = net.core(x[:, :warmup], state)
    chunks = [(j, x[:, i : i + unroll], y[:, i : i + unroll]) for j, i in enumerate(range(warmup, x.size(1), unroll))]
    discount = dni.scale if dni.scale_target else 1.0

    def weighted(s, chunk):
        j, xc, yc = chunk
        out, s = net.core(xc, s)
        return discount**j * net.loss(out, yc), s

    true = true_future_gradient(weighted, state, chunks) * (x.size(0) * unroll)  # per-sequence units
    pred = engine.boundary.sg(flatten_state(state), engine._cond(x[:, warmup]))
    return {"sg/probe_cosine": cosine(pred, true),
            "sg/probe_norm_ratio": pred.norm(dim=1).mean() / true.norm(dim=1).mean().clamp_min(1e-30)}
