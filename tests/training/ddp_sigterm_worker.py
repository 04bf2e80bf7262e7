"""Run by tests/training/test_ddp.py as a script: 2 DDP ranks (gloo, CPU) train with a
`LatestCheckpoint`, and a SIGTERM reaches rank $SIGTERM_RANK only: at the end of training batch 2
(`train`), during the validation after batch 3 (`validation`), or during the sanity check (`sanity`). Each rank writes where it stopped to
OUT/stopped-rank{r}.json; the checkpoint goes to OUT/c/latest.ckpt.

    python tests/training/ddp_sigterm_worker.py OUT DATA_DIR {train,validation,sanity}
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import lightning as L
import torch

from seqdni.data import CharDataModule
from seqdni.training import LatestCheckpoint, SeqModel

RANK = int(os.environ.get("SIGTERM_RANK", "0"))


class Terminate(L.Callback):
    def __init__(self, when: str):
        self.when, self.sent = when, False

    def _send(self, trainer):
        if trainer.global_rank == RANK and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.when == "train" and trainer.fit_loop.epoch_loop.total_batch_idx == 2:
            self._send(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.when == "sanity" and trainer.sanity_checking:
            self._send(trainer)
        if self.when == "validation" and not trainer.sanity_checking and \
                trainer.fit_loop.epoch_loop.total_batch_idx == 3:
            self._send(trainer)


def main(out: Path, data: Path, when: str) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0)
    dm = CharDataModule(train_files=[str(data / "train.txt")], val_files=[str(data / "valid.txt")],
                        batch_size=2, window=8, eval_batch_size=2, eval_window=32,
                        cache_dir=str(data / "cache"), download=False)
    model = SeqModel(dm.task, window=8, unroll=4, embed_dim=8, hidden_size=16, lr=1e-2, clip=0.5)
    latest = LatestCheckpoint(every_n_batches=1000, dirpath=str(out / "c"))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=40, limit_val_batches=2,
                        val_check_interval=2, check_val_every_n_epoch=None, logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Terminate(when), latest])
    with contextlib.suppress(SystemExit):  # Lightning's SIGTERMException
        trainer.fit(model, dm)
    (out / f"stopped-rank{trainer.global_rank}.json").write_text(json.dumps(
        {"step": trainer.global_step, "interrupted": trainer.interrupted}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
