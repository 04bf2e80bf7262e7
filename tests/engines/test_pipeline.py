"""The pipeline of processes (`seqdni.cli.pipeline`, `seqdni.engines.pipeline`): 2 CPU ranks over gloo."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqdni.cli.pipeline import launch, spec_from_config
from seqdni.errors import UserError

CONFIG = "configs/ff/digits-dni.yaml"
NET = {"hidden_size": 32, "depth": 2, "activation": "relu"}


def spec(mode: str, procs: int, steps: int, record=()):
    s = spec_from_config(CONFIG, procs, mode, steps, seed=0, micro=2)
    s["net"], s["record"] = NET, list(record)
    return s


@pytest.mark.slow
def test_two_ranks_update_unlocked_each_block_steps_on_the_synthetic_gradient_it_logged(tmp_path):
    result = launch(spec("dni", 2, 200, record=(5, 150)), tmp_path)
    rank0, rank1 = result["ranks"]
    assert result["last_loss"] < 0.5 * result["first_loss"]  # the pipeline trains
    assert result["test_accuracy"] > 0.5
    for t in (5, 150):  # rank 0's update: the gradient of < g / B, block(x) > with the g it logged, nothing else
        trace = rank0["trace"][t]
        block = nn.Sequential(nn.Linear(64, 32), nn.ReLU())
        block.load_state_dict({k.removeprefix("0."): v for k, v in trace["weights"].items()})
        h = block(trace["input"])
        g = trace["sg"]
        expected = torch.autograd.grad((h * g).sum() / h.size(0), list(block.parameters()))
        assert g.norm() > 0
        for got, want in zip(trace["grads"], expected):
            torch.testing.assert_close(got, want)
    # M_0 learned from the true gradients rank 1 sent back: its cosine with them rose
    cos = [h["sg_cosine"] for h in rank0["history"]]
    assert sum(cos[-20:]) / 20 > max(0.2, sum(cos[:5]) / 5)
    assert all("loss" in h for h in rank1["history"]) and len(rank1["history"]) == 200


@pytest.mark.slow
def test_the_synchronous_pipeline_is_backprop_in_one_process(tmp_path):
    one = launch(spec("gpipe", 1, 30), tmp_path / "one")
    two = launch(spec("gpipe", 2, 30), tmp_path / "two")
    assert two["mode"] == "gpipe" and one["mode"] == "bp"
    losses = [[h["loss"] for h in r["ranks"][-1]["history"]] for r in (one, two)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4, abs=1e-6)
    assert two["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=1e-6)


def test_a_dni_pipeline_needs_a_dni_config():
    with pytest.raises(UserError, match="model.dni"):
        spec_from_config("configs/ff/digits-bp.yaml", 2, "dni", 10, 0, 2)
    with pytest.raises(UserError, match="--mode"):
        spec_from_config(CONFIG, 2, "async", 10, 0, 2)
    with pytest.raises(UserError, match="--procs 5"):
        spec_from_config(CONFIG, 5, "dni", 10, 0, 2)
