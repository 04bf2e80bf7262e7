"""`init_range`: the embedding table and the output layer start as in PyTorch's word-language-model
example (weights uniform(-r, r), output bias 0); nothing else changes, and None keeps PyTorch's."""

from __future__ import annotations

import pytest
import torch

from seqdni.data import Task
from seqdni.errors import UserError
from seqdni.nets import BitLSTM, CharLSTM, HierLSTM


def _params(net):
    return dict(net.named_parameters())


@pytest.mark.parametrize("build", [lambda r: CharLSTM(40, 16, 32, init_range=r),
                                   lambda r: HierLSTM(40, 16, 32, upper_hidden=24, message_size=8, init_range=r)])
def test_char_models_start_with_the_reference_table_and_head(build):
    torch.manual_seed(0)
    ref = _params(build(0.1))
    torch.manual_seed(0)
    default = _params(build(None))
    for name in ("embed.weight", "head.weight"):
        w = ref[name]
        assert w.abs().max() <= 0.1 and w.abs().max() > 0.09, name  # fills the range, not a narrower one
        assert abs(w.mean()) < 0.01 and abs(w.std() - 0.1 / 3**0.5) < 0.01, name  # uniform(-0.1, 0.1)
    assert torch.all(ref["head.bias"] == 0)
    assert default["embed.weight"].std() > 0.5  # PyTorch's N(0, 1) table
    assert default["head.bias"].abs().max() > 0
    for name in ref.keys() - {"embed.weight", "head.weight", "head.bias"}:
        assert torch.equal(ref[name], default[name]), name  # the recurrent cores start alike


def test_an_input_projection_keeps_pytorchs_initialisation():
    torch.manual_seed(0)
    ref = _params(BitLSTM(6, 4, embed_dim=8, hidden_size=16, init_range=0.1))
    torch.manual_seed(0)
    default = _params(BitLSTM(6, 4, embed_dim=8, hidden_size=16, init_range=None))
    assert torch.equal(ref["embed.weight"], default["embed.weight"])
    assert torch.all(ref["head.bias"] == 0) and not torch.all(default["head.bias"] == 0)
    assert not torch.equal(ref["head.weight"], default["head.weight"])


def test_the_default_is_the_reference_and_a_bad_range_is_named():
    from seqdni.training import SeqModel

    tiny_task = Task("chars", list("abcdef"))
    torch.manual_seed(0)
    net = SeqModel(tiny_task, window=8, unroll=4, embed_dim=8, hidden_size=16).engine.net
    assert torch.all(net.head.bias == 0) and net.head.weight.abs().max() <= 0.1
    with pytest.raises(UserError, match="model.init_range must be positive"):
        SeqModel(tiny_task, window=8, unroll=4, embed_dim=8, hidden_size=16, init_range=0.0)
