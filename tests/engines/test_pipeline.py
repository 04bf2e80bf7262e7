"""The pipeline of processes (`seqdni.cli.pipeline`, `seqdni.engines.pipeline`): 2 CPU ranks over gloo."""

from __future__ import annotations

import itertools
import sys

import pytest
import torch
from torch import nn

from seqdni.cli import pipeline as pipeline_cli
from seqdni.cli.pipeline import batches, build_data, launch, spec_from_config
from seqdni.engines import pipeline as engine
from seqdni.errors import UserError
from seqdni.nets import BlockMLP

CONFIG = "configs/ff/digits-dni.yaml"
NET = {"hidden_size": 32, "depth": 2, "activation": "relu"}


def spec(mode: str, procs: int, steps: int, record=(), micro: int = 2):
    s = spec_from_config(CONFIG, procs, mode, steps, seed=0, micro=micro)
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


@pytest.mark.parametrize("micro", [3, 9])
def test_a_gpipe_step_runs_exactly_the_micro_batches_asked_and_steps_on_the_whole_batch(micro):
    """64 rows in 9 micro-batches: `chunk` would make 8 (of 8 rows); the step runs 9, of 7 or 8 rows, and its
    update is the whole batch's gradient all the same."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    want = torch.autograd.grad(nn.functional.cross_entropy(block(x), y), list(block.parameters()))
    rows = []
    block.register_forward_hook(lambda module, inputs, out: rows.append(inputs[0].size(0)))
    stage = engine.Stage(block, nn.functional.cross_entropy, torch.optim.SGD(block.parameters(), lr=0.1), (6, 3), 64,
                         record={0})
    engine._gpipe_step(stage, 0, x, y, micro)
    assert len(rows) == micro and sum(rows) == 64 and max(rows) - min(rows) <= 1
    torch.testing.assert_close(stage.trace[0]["input"], x)
    for got, expected in zip(stage.trace[0]["grads"], want):
        torch.testing.assert_close(got, expected)


def test_a_gpipe_step_refuses_more_micro_batches_than_rows():
    block = nn.Linear(6, 3)
    stage = engine.Stage(block, nn.functional.cross_entropy, torch.optim.SGD(block.parameters(), lr=0.1), (6, 3), 8)
    for micro in (0, 9):
        with pytest.raises(ValueError, match=f"a batch of 8 examples cannot make {micro} micro-batches"):
            engine._gpipe_step(stage, 0, torch.randn(8, 6), torch.randint(0, 3, (8,)), micro)
    assert stage.history == []


@pytest.mark.slow
@pytest.mark.parametrize("micro", [2, 9])
def test_a_gpipe_rank_records_the_input_its_block_ran_on_and_steps_as_backprop(tmp_path, micro):
    """The trace of each rank at step t reproduces its update: rank 0's input is the batch, rank 1's the
    activations rank 0 sent, and each block's gradient is backpropagation's on the whole batch."""
    s = spec("gpipe", 2, 12, record=(0, 7), micro=micro)
    two = launch(s, tmp_path / "two")
    one = launch(spec("gpipe", 1, 12), tmp_path / "one")
    losses = [[h["loss"] for h in r["ranks"][-1]["history"]] for r in (one, two)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4, abs=1e-6)
    dm = build_data(s)
    for t in (0, 7):
        x, y = next(itertools.islice(batches(dm), t, None))
        rank0, rank1 = (r["trace"][t] for r in two["ranks"])
        net = BlockMLP(dm.task, blocks=2, **s["net"])
        net.blocks[0].load_state_dict(rank0["weights"])
        net.blocks[1].load_state_dict(rank1["weights"])
        torch.testing.assert_close(rank0["input"], x)
        h = net.blocks[0](x)
        torch.testing.assert_close(rank1["input"], h.detach())
        loss = net.loss(net.blocks[1](h), y)
        want = torch.autograd.grad(loss, list(net.blocks[0].parameters()) + list(net.blocks[1].parameters()))
        for got, expected in zip(rank0["grads"] + rank1["grads"], want):
            torch.testing.assert_close(got, expected)


READS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy")


def counting_reads(run):
    """`run` (an engine loop) in a rank, counting the tensor values seqdni's code reads back to the host
    (on a GPU each read waits for the device's queued work); the count is returned with the clock."""

    def wrapped(*args, **kwargs):
        reads, saved = [], {name: getattr(torch.Tensor, name) for name in READS}

        def spy(name):
            def read(self, *a, **k):
                if sys._getframe(1).f_globals.get("__name__", "").startswith("seqdni."):
                    reads.append(name)
                return saved[name](self, *a, **k)
            return read

        for name in READS:
            setattr(torch.Tensor, name, spy(name))
        try:
            clock = run(*args, **kwargs)
        finally:
            for name, real in saved.items():
                setattr(torch.Tensor, name, real)
        return {**clock, "reads": reads}

    return wrapped


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dni", "gpipe"])
def test_the_ranks_read_their_values_back_once_at_the_end_not_every_step(tmp_path, monkeypatch, mode):
    """Update unlocking on a GPU needs a host that queues step after step: every rank keeps its per-step
    values (losses, M's loss and cosine, g's norm) on the device and reads them back in one go at the end;
    the history it saves holds plain numbers all the same."""
    monkeypatch.setattr(pipeline_cli, "run_dni", counting_reads(engine.run_dni))  # the forked ranks inherit it
    monkeypatch.setattr(pipeline_cli, "run_gpipe", counting_reads(engine.run_gpipe))
    result = launch(spec(mode, 3, 30), tmp_path)
    for saved in result["ranks"]:
        assert len(saved["clock"]["reads"]) <= 1, saved["clock"]["reads"]
        assert len(saved["history"]) == 30
        assert all(type(v) in (int, float) for h in saved["history"] for v in h.values())
    assert all(type(h["loss"]) is float for h in result["ranks"][-1]["history"])
    if mode == "dni":
        assert all(h.keys() == {"step", "sg_norm", "sg_loss", "sg_cosine"} for h in result["ranks"][0]["history"])
