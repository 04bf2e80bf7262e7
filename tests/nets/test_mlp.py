"""`BlockMLP`: the blocks compose to the network, the cut is as documented, the loss follows the task."""

from __future__ import annotations

import pytest
import torch

from seqdni.data import Task
from seqdni.errors import UserError
from seqdni.nets import BlockMLP
from seqdni.nets.mlp import split_layers


def test_hidden_layers_are_shared_out_earlier_blocks_first():
    assert split_layers(3, 3) == [1, 1, 1] and split_layers(5, 2) == [3, 2] and split_layers(1, 2) == [1, 0]
    with pytest.raises(UserError, match="model.blocks"):
        split_layers(1, 3)


def test_the_blocks_in_order_are_the_network():
    net = BlockMLP(Task("t", input_size=6, output_size=4, classes=4), 5, depth=3, blocks=2)
    x = torch.randn(3, 6)
    h = x
    for block in net.blocks:
        h = block(h)
    assert torch.equal(h, net(x)) and h.shape == (3, 4)
    assert [len(b) for b in net.blocks] == [2, 2] and net.cut_widths == [5]  # the output layer ends the last


def test_bits_tasks_score_whole_examples():
    net = BlockMLP(Task("addition", input_size=4, output_size=3), 5, 1, 1)
    out = torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, 1.0]])
    with torch.no_grad():
        net.forward = lambda x: out
        sums = net.eval_sums(torch.zeros(2, 4), torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]))
    assert sums["correct"] == 1 and net.cond_dim == 3
    assert torch.equal(net.condition(torch.tensor([[1.0, 0.0, 1.0]])), torch.tensor([[1.0, 0.0, 1.0]]))


def test_eval_sums_stay_on_the_batch_device():
    """`log_eval_sums` stacks the sums, so one left on the CPU breaks every validation on a GPU; the meta
    device stands in for one."""
    for task in (Task("digits", input_size=4, output_size=3, classes=3), Task("addition", input_size=4, output_size=3)):
        net = BlockMLP(task, 5, 1, 1).to("meta")
        y = torch.zeros(2, dtype=torch.long) if task.classes else torch.zeros(2, 3)
        sums = net.eval_sums(torch.zeros(2, 4, device="meta"), y.to("meta"))
        assert {v.device.type for v in sums.values()} == {"meta"}, sums
