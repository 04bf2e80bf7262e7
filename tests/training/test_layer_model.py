"""`LayerModel` through the real CLI: a few updates of cDNI on the digits log every block's synthetic
gradient (its loss, its cosine with the true gradient) and test the whole network."""

from __future__ import annotations

import pytest

from seqdni.cli.train import cli
from seqdni.data import Task
from seqdni.engines import LayerOptions
from seqdni.errors import UserError
from seqdni.training import LayerModel


@pytest.mark.slow
def test_cdni_on_the_digits_logs_each_blocks_synthetic_gradient(tmp_path):
    built = cli(["--config", "configs/ff/digits-cdni.yaml", f"--trainer.default_root_dir={tmp_path}",
                 "--trainer.max_steps=40", "--trainer.val_check_interval=20", "--trainer.log_every_n_steps=5",
                 "--model.hidden_size=32", "--trainer.enable_progress_bar=false"], run=False)
    built.trainer.fit(built.model, datamodule=built.datamodule)
    logged = built.trainer.callback_metrics
    for i in (0, 1):
        assert {f"sg/block{i}/loss", f"sg/block{i}/cosine", f"sg/block{i}/true_cosine"} <= set(logged)
    assert built.trainer.global_step == 40 and 0 < float(logged["val/accuracy"]) <= 1
    assert built.model.clock["wall_s"] > 0 and built.model.clock["cpu_s"] > 0
    assert list(tmp_path.rglob("events.out.tfevents.*"))  # TensorBoard


def test_bad_settings_name_their_key():
    task = Task("digits", input_size=64, output_size=10, classes=10)
    with pytest.raises(UserError, match="model.dni needs at least two blocks"):
        LayerModel(task, blocks=1, dni=LayerOptions())
    with pytest.raises(UserError, match="model.blocks"):
        LayerModel(task, depth=1, blocks=3)
    with pytest.raises(UserError, match="model.dni.target"):
        LayerOptions(target="oracle")
    with pytest.raises(UserError, match="character task"):
        LayerModel(Task("chars", list("ab")))


@pytest.mark.slow
def test_a_run_resumed_mid_epoch_continues_exactly(tmp_path):
    """The shuffled order, every block's and M's optimiser come from the checkpoint."""
    import lightning as L
    from helpers import Losses, trainer

    from seqdni.data import DigitImages
    from seqdni.training import LatestCheckpoint

    dm = DigitImages(batch_size=128)
    per_epoch = len(dm.train_dataloader())  # 9

    def model(seed=0):
        L.seed_everything(seed, verbose=False)
        return LayerModel(dm.task, hidden_size=16, dni=LayerOptions(conditional=True))

    total, cut = per_epoch + 5, per_epoch + 2  # the cut is mid-way through the second epoch
    one, first, second = Losses("train/loss"), Losses("train/loss"), Losses("train/loss")
    trainer(tmp_path / "one", max_steps=total, callbacks=[one], enable_checkpointing=False).fit(model(), dm)
    latest = LatestCheckpoint(every_n_batches=1000, dirpath=str(tmp_path / "two"))
    trainer(tmp_path / "two", max_steps=cut, callbacks=[first, latest]).fit(model(), dm)
    trainer(tmp_path / "two", max_steps=total, callbacks=[second]).fit(model(seed=7), dm, ckpt_path=latest.last_path)
    assert len(first.losses) == cut and len(second.losses) == total - cut
    assert first.losses + second.losses == pytest.approx(one.losses, rel=1e-6, abs=1e-7)
