"""scripts/reference_lm.py: the plain-PyTorch baseline is seqdni's network, trained by the plain loop."""

from __future__ import annotations

import math

import torch
from helpers import load_script

from seqdni.nets import CharLSTM

ref = load_script("reference_lm")


def test_the_reference_network_is_seqdnis_char_lstm_with_the_same_weights():
    """Copied weights give the same logits, state and gradients over two carried unrolls: the
    baseline differs from seqdni's only in what it does before the first step and in the loop."""
    torch.manual_seed(0)
    a = ref.ReferenceLM(11, embed=6, hidden=8)
    b = CharLSTM(11, embed_dim=6, hidden_size=8)
    b.embed.load_state_dict(a.encoder.state_dict())
    b.lstm.load_state_dict(a.rnn.state_dict())
    b.head.load_state_dict(a.decoder.state_dict())
    x = torch.randint(0, 11, (3, 10))
    sa, sb = None, b.init_state(3)
    for part in (x[:, :5], x[:, 5:]):
        la, sa = a(part, sa)
        lb, sb = b(part, sb)
        torch.testing.assert_close(la, lb)
        torch.testing.assert_close(sa[1], sb[1])
    la.sum().backward()
    lb.sum().backward()
    torch.testing.assert_close(a.decoder.weight.grad, b.head.weight.grad)
    torch.testing.assert_close(a.rnn.weight_hh_l0.grad, b.lstm.weight_hh_l0.grad)


def test_a_short_run_learns_and_reports_its_budget():
    text = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7] * 700, dtype=torch.uint8)  # a cycle of 8 symbols
    ids = {"train": text, "valid": text[:800], "test": text[:800]}
    record = ref.train(ids, vocab=8, seed=0, epochs=1.0, batch=4, unroll=8)
    assert record["steps"] == (1400 - 1) // 8 and record["chars"] == record["steps"] * 32
    assert record["val_bpc"] < 0.3 * math.log2(8) and record["test_bpc"] < 0.3 * math.log2(8)


def test_each_initialisation_sets_only_its_part():
    nets = {}
    for init in ref.INITS:
        torch.manual_seed(0)
        nets[init] = ref.ReferenceLM(30, embed=8, hidden=16, init=init)
    torch_default = nets["torch"]
    for init, net in nets.items():
        for part in ("encoder", "decoder"):
            changed = not torch.equal(getattr(net, part).weight, getattr(torch_default, part).weight)
            assert changed == (part in ref.INITS[init]), (init, part)
            if changed:
                assert getattr(net, part).weight.abs().max() <= 0.1
        assert torch.equal(net.rnn.weight_hh_l0, torch_default.rnn.weight_hh_l0)
    assert torch.all(nets["decoder"].decoder.bias == 0) and torch.all(nets["reference"].decoder.bias == 0)
