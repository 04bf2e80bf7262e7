"""scripts/copy_episode_errors.py: wrong bits by the episode's place in its row and by output step."""

from __future__ import annotations

import torch
from helpers import load_script

from seqdni.data import CopyDataModule
from seqdni.data.episodes import FixedEpisodes


class Oracle:
    """Outputs the targets' bits, except one bit flipped at the `bad`-th output step of every episode."""

    output_size = 8

    def __init__(self, y: torch.Tensor, bad: int):
        self.y, self.bad = y, bad

    def init_state(self, rows: int):
        return None

    def core(self, x, state):
        return self.y, state

    def logits(self, y):
        k = self.output_size
        logits = y[..., :k] * 2 - 1
        for row in range(y.size(0)):  # step by step: count the output steps since the last episode end
            seen = 0
            for t in range(y.size(1)):
                if y[row, t, k]:
                    seen += 1
                    if seen == self.bad:
                        logits[row, t, 0] = -logits[row, t, 0]
                if y[row, t, k + 1]:
                    seen = 0
        return logits


def test_output_errors_find_the_failing_output_step_and_episode_errors_count_it_once_per_episode():
    script = load_script("copy_episode_errors")
    dm = CopyDataModule(level=4)
    x, y = FixedEpisodes(dm._eval_draw, dm.x_dim, 5, 200, 1, seed=3).grid(5, 200)
    net = Oracle(y, bad=3)
    wrong = script.wrong_bits(net, x, y)
    steps = script.output_errors(wrong, y, net.output_size)
    assert [s["output_step"] for s in steps] == [1, 2, 3, 4]
    assert [s["wrong_bits"] for s in steps] == [0.0, 0.0, 1.0, 0.0]
    assert len({s["episodes"] for s in steps}) == 1 and steps[0]["episodes"] > 5
    assert all(r["wrong_bits"] == 1.0 for r in script.episode_errors(wrong, y, net.output_size))
