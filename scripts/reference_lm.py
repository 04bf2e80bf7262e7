"""The reference baseline: a plain-PyTorch truncated-BPTT character LM, nothing from seqdni but the data.

The canonical setup users know (PyTorch's word-language-model example, at the sizes of
`configs/ptb-cpu/bptt8.yaml`): embedding 128 -> one 256-unit LSTM -> linear decoder, embedding and
decoder weights uniform(-0.1, 0.1) and decoder bias 0, the LSTM at PyTorch's initialisation; the
training split cut into 64 contiguous streams, unrolls of 8 characters with the state carried and
detached, Adam 2e-3, gradient norm clipped at 1, no dropout. Validation and test carry the state
over 16 streams in windows of 1000 characters, as seqdni evaluates.

    python scripts/reference_lm.py --data-dir ../shared/data/ptb --epochs 1 --seeds 1 2 3 \
        --out docs/ptb-cpu/baseline/reference.json

`--init torch` starts from PyTorch's defaults instead, `--init encoder` / `--init decoder` from one
part of the reference initialisation. Writes one record per seed: validation and test BPC after the
budget, optimiser steps, characters and process CPU seconds of training.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# What starts uniform(-0.1, 0.1) (and the decoder bias at 0 with the decoder weights): the reference
# initialisation, PyTorch's defaults, and each part of the reference alone.
INITS = {"reference": ("encoder", "decoder"), "torch": (), "encoder": ("encoder",), "decoder": ("decoder",)}


class ReferenceLM(nn.Module):
    def __init__(self, vocab: int, embed: int = 128, hidden: int = 256, init: str = "reference",
                 init_range: float = 0.1):
        super().__init__()
        self.encoder = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)
        if "encoder" in INITS[init]:
            nn.init.uniform_(self.encoder.weight, -init_range, init_range)
        if "decoder" in INITS[init]:
            nn.init.uniform_(self.decoder.weight, -init_range, init_range)
            nn.init.zeros_(self.decoder.bias)

    def forward(self, x: Tensor, state):
        out, state = self.rnn(self.encoder(x), state)
        return self.decoder(out), state


def rows(ids: Tensor, n: int) -> Tensor:
    """The split as n contiguous streams (the remainder dropped)."""
    length = ids.numel() // n
    return ids[: n * length].view(n, length).long()


@torch.no_grad()
def evaluate(model: ReferenceLM, ids: Tensor, streams: int = 16, window: int = 1000) -> float:
    data, state, nats, count = rows(ids, streams), None, 0.0, 0
    for a in range(0, data.size(1) - 1, window):
        b = min(a + window, data.size(1) - 1)
        logits, state = model(data[:, a:b], state)
        y = data[:, a + 1 : b + 1]
        nats += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    return nats / count / math.log(2)


def train(ids: dict[str, Tensor], vocab: int, seed: int, epochs: float, batch: int = 64, unroll: int = 8,
          lr: float = 2e-3, clip: float = 1.0, init: str = "reference") -> dict:
    torch.manual_seed(seed)
    model = ReferenceLM(vocab, init=init)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    data = rows(ids["train"], batch)
    per_epoch = (data.size(1) - 1) // unroll
    steps = int(per_epoch * epochs)
    state, start = None, time.process_time()
    for step in range(steps):
        a = (step % per_epoch) * unroll
        if a == 0:
            state = None  # each epoch starts the streams afresh
        x, y = data[:, a : a + unroll], data[:, a + 1 : a + unroll + 1]
        state = None if state is None else tuple(s.detach() for s in state)
        logits, state = model(x, state)
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
    cpu = time.process_time() - start
    model.eval()
    return {"seed": seed, "init": init, "steps": steps, "chars": steps * batch * unroll,
            "train_cpu_seconds": round(cpu, 1),
            "val_bpc": evaluate(model, ids["valid"]), "test_bpc": evaluate(model, ids["test"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="folder with PTB's ptb.char.{train,valid,test}.txt")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the training split")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--init", choices=sorted(INITS), default="reference",
                   help="reference: embedding and decoder weights uniform(-0.1, 0.1), decoder bias 0; torch: "
                        "PyTorch's defaults; encoder / decoder: only that part of the reference")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", required=True, help="JSON file of the records")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from seqdni.data import CharDataModule

    dm = CharDataModule(data_dir=args.data_dir, download=False)
    records = []
    for seed in args.seeds:
        records.append(train(dm.ids, len(dm.symbols), seed, args.epochs, init=args.init))
        print(json.dumps(records[-1]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python scripts/reference_lm.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if k != "out") + f" --out {args.out}",
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
        "runs": records}, indent=2) + "\n")


if __name__ == "__main__":
    main()
