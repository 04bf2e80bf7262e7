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
