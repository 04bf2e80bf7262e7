"""Run by tests/training/test_ddp.py as a script: a few training steps with DNI on CPU processes,
either 2 DDP ranks (gloo) of 2 streams each, or 1 process with all 4 streams. Each rank
writes the windows it trained on and its final parameters to OUT/rank{r}.pt.

    python tests/training/ddp_worker.py OUT DATA_DIR {ddp,single} {dni,aux,least-squares}
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from seqdni.data import CharDataModule
from seqdni.engines import DNIOptions
from seqdni.training import SeqModel

STREAMS, WINDOW, STEPS = 4, 8, 12


class Record(L.Callback):
    """The training windows this rank was given."""

    def __init__(self):
        self.windows: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.windows += batch[0].tolist()


def main(out: Path, data: Path, mode: str, variant: str) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0)
    devices = 2 if mode == "ddp" else 1
    dm = CharDataModule(train_files=[str(data / "train.txt")], val_files=[str(data / "valid.txt")],
                        batch_size=STREAMS // devices, window=WINDOW, eval_batch_size=4 // devices, eval_window=32,
                        cache_dir=str(data / "cache"), download=False)
    dni = DNIOptions(aux_weight=0.1 if variant == "aux" else 0.0,
                     least_squares=4 if variant == "least-squares" else 0, solve_every=2)
    model = SeqModel(dm.task, window=WINDOW, unroll=4, embed_dim=8, hidden_size=16, lr=1e-2, clip=0.5, dni=dni)
    rec = Record()
    # The SG model and the Aux head get gradients from a different backward pass than the
    # core's, so DDP must be told that some parameters are unused in each backward.
    strategy = "ddp_find_unused_parameters_true" if devices > 1 else "auto"
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, max_steps=STEPS, limit_val_batches=2,
                        val_check_interval=2, check_val_every_n_epoch=None, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec])
    trainer.fit(model, dm)
    trainer.save_checkpoint(out / f"{mode}.ckpt")  # every rank takes part; rank 0 writes
    torch.save({"windows": rec.windows, "carry": [t.clone() for t in model.carry.state], "params": {k: v.detach().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)},
                "val_bpc": float(trainer.callback_metrics["val/bpc"]), "steps": trainer.global_step},
               out / f"{mode}-rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4])
