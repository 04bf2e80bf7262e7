"""scripts/copy_pooled_m.py: the control in which the core receives the batch's mean synthetic gradient."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from helpers import ROOT, run_python

from seqdni.dni import Interface, SGOptions

sys.path.insert(0, str(ROOT / "scripts"))
from copy_pooled_m import pooled_inject  # noqa: E402


def test_every_stream_receives_the_mean_prediction():
    iface = Interface(4, SGOptions(scale=0.5))
    s = torch.randn(3, 4, requires_grad=True)
    g = torch.randn(3, 4)
    pooled_inject(iface, s, g, n_send=2.0, batch_dim=0).backward()
    torch.testing.assert_close(s.grad, (0.5 / 2.0 * g.mean(0)).expand(3, 4))
    s.grad = None
    iface.inject(s, g, 2.0, batch_dim=0).backward()  # the library's own injection is untouched
    torch.testing.assert_close(s.grad, 0.5 / 2.0 * g)


@pytest.mark.slow
def test_grid_runs_the_dni_configs_with_the_pooled_injection(tmp_path):
    out = tmp_path / "pooled"
    res = run_python(["scripts/copy_pooled_m.py", "--steps", "120", "--tasks", "copy", "--unrolls", "2", "--out",
                      str(out), "--extra", "--trainer.val_check_interval=2", "--model.init_args.hidden_size=16"], ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["variant"], r["returncode"]) for r in runs] == [("dni", 0)]
    assert "copy_pooled_m.py --run" in runs[0]["command"] and runs[0]["history"]
