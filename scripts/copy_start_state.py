"""What each Copy episode's start state does to learning: `python -m seqdni.train` with the one-layer
resetting recurrence of `BitLSTM` (`data.resets: true`) replaced by one of

    cut      the state carried across episodes (its values), the gradient cut at each episode start;
    carry    the state and the gradient carried across episodes (the start flag ignored);
    learned  every episode starts from a learned state (h, c), trained with the core; nothing crosses.

The shipped behaviour (every episode starts from the zero state) needs no script. `cut` and `carry`
carry the state through validation too, so give them `--data.init_args.eval_warmup=1` (the first
episode of each validation row, from the zero state, unscored; docs/copy.md, "The validation
mismatch"). Everything after the mode goes to `seqdni.train`:

    python scripts/copy_start_state.py cut --config configs/copy/bptt60.yaml --trainer.max_steps=4000 \\
        --data.init_args.eval_warmup=1 --trainer.logger.init_args.save_dir=runs/start-state
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import seqdni.nets.lstm as lstm
from seqdni.cli.train import main as train

MODES = ("cut", "carry", "learned")


def recurrence(mode: str):
    """The one-layer recurrence of `_LSTMNet._resetting_recurrence` with `mode`'s episode starts."""

    def run(self, e: Tensor, state: tuple[Tensor, Tensor], resets: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        w = self.lstm
        pre = F.linear(e, w.weight_ih_l0, w.bias_ih_l0 + w.bias_hh_l0)
        start = resets.to(e.dtype).unsqueeze(-1)  # 1 before an episode's first step
        h, c, outs = state[0][0], state[1][0], []
        for t in range(e.size(1)):
            s = start[:, t]
            if mode == "cut":  # the same values; no gradient into the state before the start
                h, c = h * (1 - s) + (h * s).detach(), c * (1 - s) + (c * s).detach()
            elif mode == "learned":
                h, c = h * (1 - s) + s * self.start_h, c * (1 - s) + s * self.start_c
            i, f, g, o = torch.addmm(pre[:, t], h, w.weight_hh_l0.t()).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, dim=1), (h.unsqueeze(0), c.unsqueeze(0))

    return run


def with_learned_start(init):
    def build(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.start_h = nn.Parameter(torch.zeros(self.hidden_size))  # from zero: the shipped start at step 0
        self.start_c = nn.Parameter(torch.zeros(self.hidden_size))

    return build


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in MODES:
        sys.exit(f"usage: python scripts/copy_start_state.py {{{','.join(MODES)}}} <seqdni.train arguments>")
    mode, rest = argv[0], argv[1:]
    lstm._LSTMNet._resetting_recurrence = recurrence(mode)
    if mode == "learned":
        lstm.BitLSTM.__init__ = with_learned_start(lstm.BitLSTM.__init__)
    sys.argv[1:] = rest
    train()


if __name__ == "__main__":
    main(sys.argv[1:])
