"""The two-timescale system under the training module: each regime's update schedule, learning,
argument errors."""

from __future__ import annotations

import lightning as L
import pytest
from helpers import digit_data, trainer, two_timescale

from seqdni.engines import DNIOptions, MessageOptions


class CountSteps(L.Callback):
    def __init__(self):
        self.a = self.b = 0

    def on_train_start(self, trainer, pl_module):
        opt_b, opt_a = trainer.optimizers[:2]
        opt_a.register_step_post_hook(lambda *_: setattr(self, "a", self.a + 1))
        opt_b.register_step_post_hook(lambda *_: setattr(self, "b", self.b + 1))


@pytest.mark.parametrize("regime", ["bptt", "cut", "dni"])
def test_update_schedule_of_each_regime(tmp_path, regime):
    dm = digit_data()
    count = CountSteps()
    t = trainer(tmp_path, max_steps=6, callbacks=[count], enable_checkpointing=False)
    t.fit(two_timescale(dm, regime), dm)
    # a batch of 32 steps: B updates every T² = 16 steps; A every 4 steps unless update-locked to B
    assert t.global_step == count.b == 6
    assert count.a == (6 if regime == "bptt" else 24)


@pytest.mark.slow
def test_training_learns_a_and_b(tmp_path):
    dm = digit_data()
    lit = two_timescale(dm, "bptt")
    before = trainer(tmp_path, limit_val_batches=None).validate(lit, dm, verbose=False)[0]
    trainer(tmp_path, max_steps=400, enable_checkpointing=False).fit(lit, dm)
    after = trainer(tmp_path, limit_val_batches=None).validate(lit, dm, verbose=False)[0]
    assert after["val/a_error"] < 0.1 < 0.4 < before["val/a_error"], (before, after)
    assert after["val/b_error"] < before["val/b_error"]


def test_bad_arguments_name_their_keys(tmp_path):
    dm = digit_data()
    with pytest.raises(ValueError, match="model.dni must be set for regime dni"):
        two_timescale(dm, "dni", dni=None)
    with pytest.raises(ValueError, match="model.dni must be set for regime dni and unset"):
        two_timescale(dm, "cut", dni=MessageOptions())
    with pytest.raises(ValueError, match="model.dni.aux_weight is not supported"):
        two_timescale(dm, "dni", dni=DNIOptions(aux_weight=0.5))  # the flat engine's options
    with pytest.raises(ValueError, match=r"model.period \(3\) differs from data.period \(4\)"):
        trainer(tmp_path, max_steps=1).fit(two_timescale(dm, "cut", period=3, window=36), dm)

