"""Where Lightning's backward and optimiser-step wrappers would add nothing, `LightningSteps` calls
`Tensor.backward` and the raw step directly: the same updates, the same step count, and the
wrapped path whenever a hook, a profiler or another strategy needs it."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import seq_model, trainer

from seqdni.engines import DNIOptions
from seqdni.training.optim import wrappers_add_nothing


class OnStep(L.Callback):
    """A callback with an optimiser-step hook: Lightning's wrappers then have work to do."""

    def __init__(self):
        self.calls = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.calls += 1


class Seen(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.direct = wrappers_add_nothing(pl_module)


def fit(tmp_path, dm, callbacks, **kw):
    lm = seq_model(dm, dni=DNIOptions(scale=0.1))
    trainer(tmp_path, max_steps=12, callbacks=callbacks, **kw).fit(lm, datamodule=dm)
    return lm


def test_the_direct_path_makes_the_same_updates_and_counts_the_same_steps(tmp_path, tiny_data):
    seen, hook = Seen(), OnStep()
    direct = fit(tmp_path / "a", tiny_data(), [seen])
    wrapped = fit(tmp_path / "b", tiny_data(), [hook])
    assert seen.direct and hook.calls == 12  # the hook ran at each of the 12 main-group steps
    assert direct.trainer.global_step == wrapped.trainer.global_step == 12
    for (name, a), b in zip(direct.state_dict().items(), wrapped.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("case", ["hook", "profiler", "module-hook"])
def test_the_wrapped_path_is_kept_where_lightning_has_work(tmp_path, tiny_data, case):
    dm, seen = tiny_data(), Seen()
    kw = {"profiler": "simple"} if case == "profiler" else {}
    callbacks = [seen, OnStep()] if case == "hook" else [seen]
    if case == "module-hook":
        lm = seq_model(dm)
        lm.on_after_backward = lambda: None  # a hook of the module's own
        trainer(tmp_path, max_steps=2, callbacks=callbacks).fit(lm, datamodule=dm)
    else:
        fit(tmp_path, dm, callbacks, **kw)
    assert seen.direct is False
