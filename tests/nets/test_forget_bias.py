"""`forget_bias`: the forget gates of every layer start at the given bias; nothing else changes."""

from __future__ import annotations

import math

import torch

from seqdni.nets import BitLSTM, CharLSTM


def test_forget_bias_sets_the_forget_gates_of_every_layer_and_nothing_else():
    torch.manual_seed(0)
    plain = BitLSTM(8, 8, embed_dim=4, hidden_size=16, num_layers=2)
    torch.manual_seed(0)
    biased = BitLSTM(8, 8, embed_dim=4, hidden_size=16, num_layers=2, forget_bias=1.0)
    forget = torch.zeros(64, dtype=torch.bool)
    forget[16:32] = True
    for (name, a), b in zip(plain.named_parameters(), biased.parameters(), strict=True):
        if name.startswith("lstm.bias"):
            assert torch.equal(a[~forget], b[~forget]), name
            assert torch.all(b[forget] == (1.0 if "bias_ih" in name else 0.0)), name
        else:
            assert torch.equal(a, b), name


def test_a_fresh_cell_keeps_sigmoid_of_the_forget_bias_of_its_state():
    """The slice set is nn.LSTM's forget gate: with every other weight and bias at zero (so the
    candidate is tanh(0) = 0), one step maps c to σ(b_f)·c."""
    net = CharLSTM(5, embed_dim=3, hidden_size=6, forget_bias=1.0)
    with torch.no_grad():
        for name, p in net.lstm.named_parameters():
            if name.startswith("weight") or name == "bias_hh_l0":  # the recurrent forget bias is 0 already
                p.zero_()
            else:
                p[:6].zero_(), p[12:].zero_()
    c0 = torch.randn(1, 2, 6)
    _, (_, c1) = net.lstm(torch.randn(2, 1, 3), (torch.zeros(1, 2, 6), c0))
    torch.testing.assert_close(c1, c0 / (1 + math.exp(-1.0)))
