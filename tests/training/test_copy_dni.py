"""The point of DNI on Copy: with T = 2 it solves N = 2 (3 steps between a vector and its copy),
which truncated BPTT with the same T and budget does not."""

from __future__ import annotations

import lightning as L
import pytest
from helpers import trainer

from seqdni.data import CopyDataModule
from seqdni.engines import DNIOptions
from seqdni.training import Curriculum, SeqModel


def tiny_run(tmp_path, dni: DNIOptions | None, steps: int, seed: int = 1) -> tuple[Curriculum, CopyDataModule]:
    """Copy of 2-bit vectors with T = 2, where N = 2 puts 3 steps between a vector and its copy."""
    L.seed_everything(seed, verbose=False)
    dm = CopyDataModule(batch_size=16, window=60, bits=2, shorter=0.3)
    lit = SeqModel(dm.task, window=60, unroll=2, embed_dim=16, hidden_size=32, lr=3e-3, dni=dni,
                   init_range=None)  # the Copy configs' initialisation (configs/base/copy.yaml)
    cur = Curriculum(threshold=0.15, max_level=2)
    trainer(tmp_path, max_steps=steps, val_check_interval=10, callbacks=[cur], enable_checkpointing=False,
            limit_val_batches=None, max_epochs=-1, check_val_every_n_epoch=None).fit(lit, dm)
    return cur, dm


@pytest.mark.slow
def test_dni_solves_n_beyond_the_truncation_where_bptt_does_not(tmp_path):
    cur, dm = tiny_run(tmp_path, DNIOptions(scale=0.3), steps=3000)
    assert cur.solved == 2 and dm.level == 3  # N = 2 solved with T = 2 (then stopped by max_level)
    assert cur.history[-1]["bits_error"] < 0.15
    bptt, _ = tiny_run(tmp_path, None, steps=cur.history[-1]["step"])  # the same budget, without DNI
    assert bptt.solved < 2


def test_a_conditional_m_on_the_targets_ahead_needs_data_that_supplies_them(tmp_path):
    dm = CopyDataModule(batch_size=4, window=8, bits=2, lookahead=2)
    lit = SeqModel(dm.task, window=8, unroll=2, embed_dim=4, hidden_size=8, dni=DNIOptions(lookahead=4))
    with pytest.raises(ValueError, match="data's targets run 2 steps past each window; set data.lookahead to at least 4"):
        trainer(tmp_path, max_steps=2, enable_checkpointing=False).fit(lit, dm)
