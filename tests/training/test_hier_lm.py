"""The hierarchical LM under the training module: the two levels' update schedule, learning,
evaluation that carries the tick phase, argument errors."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import group_params, hier_lm, trainer

from seqdni.data import Task
from seqdni.engines import DNIOptions
from seqdni.training import HierLM


def test_upper_level_updates_once_per_upper_unroll(tmp_path, tiny_data):
    dm = tiny_data(window=16)
    lit = hier_lm(dm, unroll=4, tick=2, upper_unroll=4)  # lower: every 4 characters; upper: every 8
    seen = []

    class Watch(L.Callback):
        def on_train_start(self, trainer, pl_module):
            upper = pl_module.net.upper_parameters()
            last = [[p.detach().clone() for p in upper]]

            def after(*_):
                now = [p.detach().clone() for p in upper]
                seen.append(any(not torch.equal(a, b) for a, b in zip(now, last[0])))
                last[0] = now

            trainer.optimizers[0].register_step_post_hook(after)

    trainer(tmp_path, max_steps=8, callbacks=[Watch()], enable_checkpointing=False).fit(lit, dm)
    assert seen == [False, True] * 4


def test_tiny_hierarchical_lm_lowers_bpc(tmp_path, tiny_data):
    dm = tiny_data()
    lit = hier_lm(dm, boundaries=True)
    before = trainer(tmp_path, limit_val_batches=None).validate(lit, dm, verbose=False)[0]["val/bpc"]
    trainer(tmp_path, max_steps=120, enable_checkpointing=False).fit(lit, dm)
    after = trainer(tmp_path, limit_val_batches=None).validate(lit, dm, verbose=False)[0]["val/bpc"]
    assert after < before - 0.5, (before, after)  # from near log2(vocabulary): the reference initialisation


def test_evaluation_carries_state_and_tick_phase_across_batches(tmp_path, tiny_data):
    dm = tiny_data(eval_window=5)  # not a multiple of the tick: the phase must cross batches
    lit = hier_lm(dm, tick=4, unroll=4, upper_unroll=2)
    bpc = trainer(tmp_path, limit_val_batches=None).validate(lit, dm, verbose=False)[0]["val/bpc"]
    rows = dm.ids["valid"][: (dm.ids["valid"].numel() // 2) * 2].view(2, -1).long()
    with torch.no_grad():
        feats, _ = lit.net.core(rows[:, :-1], lit.net.init_state(2))
        logits = lit.net.logits(feats)
    expected = F.cross_entropy(logits.reshape(-1, logits.size(-1)), rows[:, 1:].reshape(-1)).item() / math.log(2)
    assert bpc == pytest.approx(expected, rel=1e-5)


def test_bad_arguments_name_their_keys(tiny_data):
    dm = tiny_data()
    task = Task("chars", list("ab"))
    with pytest.raises(ValueError, match=r"model.unroll \(4\) must be a multiple of model.tick \(3\)"):
        hier_lm(dm, tick=3)
    with pytest.raises(ValueError, match="with model.message bptt .* set model.upper_unroll to"):
        hier_lm(dm, message="bptt", dni=None)
    with pytest.raises(ValueError, match=r"data.window \(8\) must be a multiple of the upper unroll"):
        hier_lm(dm, upper_unroll=8)
    with pytest.raises(ValueError, match="model.dni must be set when model.message is dni"):
        hier_lm(dm, dni=None)
    with pytest.raises(ValueError, match="model.dni.conditional is not supported by HierLM"):
        hier_lm(dm, dni=DNIOptions(conditional=True))
    with pytest.raises(ValueError, match="no vocabulary"):
        HierLM(Task("copy", input_size=3, output_size=2), window=8)
    assert group_params(HierLM(task, window=16, unroll=8, upper_unroll=4, message="cut").engine, "sg") == []
