"""`LatestCheckpoint` stages each save beside the file and renames it; a run killed mid-write leaves
only the staging file, which the next start removes."""

from __future__ import annotations

import torch
from helpers import seq_model, trainer

from seqdni.training import LatestCheckpoint


def test_a_stale_staging_file_is_removed_and_the_checkpoint_written_whole(tmp_path, tiny_data):
    ckpt_dir = tmp_path / "ckpts"
    ckpt_dir.mkdir()
    stale = ckpt_dir / "latest.ckpt.tmp"
    stale.write_bytes(b"half a checkpoint from a killed run")
    dm = tiny_data()
    trainer(tmp_path, max_steps=4, callbacks=[LatestCheckpoint(every_n_batches=1, dirpath=str(ckpt_dir))]).fit(
        seq_model(dm), datamodule=dm)
    assert not stale.exists()
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["latest.ckpt"]
    assert torch.load(ckpt_dir / "latest.ckpt", weights_only=True)["global_step"] == 4


def test_saving_says_nothing_about_weights_only(tmp_path, tiny_data, lightning_log, recwarn):
    dm = tiny_data()
    trainer(tmp_path, max_steps=2, callbacks=[LatestCheckpoint(every_n_batches=1, dirpath=str(tmp_path / "c"))]
            ).fit(seq_model(dm), datamodule=dm)
    assert (tmp_path / "c" / "latest.ckpt").is_file()
    assert "max_steps=2" in lightning_log.text  # the listener hears Lightning's own messages
    assert "weights_only" not in lightning_log.text
    assert not [w for w in recwarn if "weights_only" in str(w.message)]
