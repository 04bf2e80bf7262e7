"""bf16-mixed trains: each group's clip is `clip_grad_norm_` on its own parameters, so the fused Adam
has no Lightning clipping to refuse (fp16 AMP, whose loss scaling the clips would bypass, is refused
on a GPU; on a CPU Lightning runs 16-mixed as bf16)."""

from __future__ import annotations

import math

from helpers import Losses, seq_model, trainer

from seqdni.engines import DNIOptions


def test_bf16_mixed_trains_dni_on_cpu(tmp_path, tiny_data):
    dm = tiny_data()
    model = seq_model(dm, dni=DNIOptions(scale=0.5, lr=1e-2))
    losses = Losses()
    trainer(tmp_path, max_steps=40, precision="bf16-mixed", callbacks=[losses]).fit(model, datamodule=dm)
    assert model.trainer.global_step == 40
    assert all(math.isfinite(v) for v in losses.losses)
    assert sum(losses.losses[-3:]) / 3 < sum(losses.losses[:3]) / 3  # it learned
    assert model.engine.boundary.sg.net[-1].weight.abs().sum() > 0  # M trained too


def test_16_mixed_on_cpu_trains_as_bf16(tmp_path, tiny_data):
    """Lightning turns 16-mixed into bf16-mixed on a CPU; the run must train, not stop."""
    dm = tiny_data()
    model = seq_model(dm, dni=DNIOptions(scale=0.5))
    trainer(tmp_path, max_steps=8, precision="16-mixed").fit(model, datamodule=dm)
    assert str(model.trainer.precision) == "bf16-mixed" and model.trainer.global_step == 8
