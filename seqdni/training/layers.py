"""`LayerModel`: the LightningModule of decoupled feed-forward networks (`seqdni.engines.LayerEngine`).

It is not a `SeqModule`: its batches are independent examples, with no stream state to carry
and no windows to cut. Optimisation is manual, one Adam per block and one for the synthetic-
gradient models, stepped by the engine through `LightningSteps`; `trainer.max_steps` counts
updates of the first block, one per batch, with or without DNI.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Literal

import lightning as L
import torch

from seqdni.data import Task
from seqdni.engines import LayerEngine, LayerOptions
from seqdni.errors import UserError
from seqdni.nets import BlockMLP
from seqdni.training import checkpointing
from seqdni.training.checks import check_values
from seqdni.training.module import log_eval_sums, stop_if_stopped_early, stop_on_non_finite
from seqdni.training.optim import LightningSteps, adam, wrappers_add_nothing


class LayerModel(L.LightningModule):
    """An MLP cut into blocks, trained by backpropagation (`dni` unset), DNI or cDNI.

    Args:
        task: Inputs, outputs and loss; linked from the data module (`data.task`).
        window: Examples per training batch; linked from `data.window` (= `data.batch_size`).
        hidden_size: Units of every hidden layer.
        depth: Hidden layers (each Linear, then the activation), then the output layer.
        blocks: K, the blocks the layers are cut into; a synthetic gradient sits at each of the K - 1 cuts.
        activation: `relu`, `tanh`, or `none` (a linear network).
        lr: Adam learning rate of every block.
        weight_decay: Adam weight decay of every block.
        clip: Gradient-norm clip of each block on its own gradients; 0 disables.
        dni: Synthetic gradients at the cuts (`LayerOptions`); unset for backpropagation.
    """

    def __init__(self, task: Task, window: int = 64, hidden_size: int = 256, depth: int = 3, blocks: int = 3,
                 activation: Literal["relu", "tanh", "none"] = "relu", lr: float = 1e-3, weight_decay: float = 0.0,
                 clip: float = 0.0, dni: LayerOptions | None = None):
        super().__init__()
        task = Task(**task) if isinstance(task, dict) else task
        dni = LayerOptions(**dni) if isinstance(dni, dict) else dni
        if task.kind != "bits":
            raise UserError(f"LayerModel trains feed-forward tasks of input vectors; {task.name!r} is a character "
                            "task: use data.class_path seqdni.data.DigitImages, MNIST or BinaryAddition")
        check_values({}, dict(depth=depth, lr=lr, weight_decay=weight_decay, clip=clip))  # BlockMLP checks the rest
        self.save_hyperparameters()
        self.hparams.update(task=asdict(task), dni=None if dni is None else asdict(dni))  # weights-only loadable
        self.automatic_optimization = False
        self.task, self.dni = task, dni
        self.engine = LayerEngine(BlockMLP(task, hidden_size, depth, blocks, activation), dni, lr, weight_decay, clip)
        self._direct, self._sums = False, None
        self.clock = {"wall_s": 0.0, "cpu_s": 0.0}  # training time of this process, for benchmarks
        self.run_config: dict | None = None  # the command line's settings, kept in checkpoints for resumes
        self.loaded_step: int | None = None  # the optimiser step of the checkpoint loaded, if any

    @property
    def net(self) -> BlockMLP:
        return self.engine.net

    def configure_optimizers(self):
        self._groups = self.engine.param_groups()
        return [adam(g.params, lr=g.lr, weight_decay=g.weight_decay) for g in self._groups]

    def setup(self, stage: str) -> None:
        checkpointing.stage_checkpoints(self.trainer.strategy)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The sections `seqdni.train --ckpt_path` reads; no state is carried between batches.
        checkpoint["seqdni"] = {"format": checkpointing.FORMAT, "carry": None, "config": self.run_config,
                                "class_path": f"{type(self).__module__}.{type(self).__qualname__}"}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.loaded_step = checkpoint.get("global_step")  # the x axis of a `test` from it (`log_eval_sums`)
        if self._trainer is not None:
            checkpointing.follow_run_folder(checkpoint, self.trainer.checkpoint_callbacks, self.trainer.ckpt_path)

    def on_train_start(self) -> None:
        self._direct = wrappers_add_nothing(self)
        stop_if_stopped_early(self.trainer)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._t0 = (time.perf_counter(), time.process_time())

    def training_step(self, batch, batch_idx: int):
        x, y = batch
        opts = self.optimizers()
        steps = LightningSteps(self, self._groups, opts if isinstance(opts, list) else [opts], direct=self._direct)
        diagnose = (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0
        stats = self.engine.update(x, y, steps, diagnose=self.dni is not None and diagnose)
        if not torch.isfinite(stats["train/loss"]):  # the one host sync of a batch
            stop_on_non_finite(self, batch_idx)
        self.log("step", float(self.trainer.global_step))
        for key, value in stats.items():
            self.log(key, value, prog_bar=key == "train/loss")
        return None

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        wall, cpu = self._t0
        self.clock["wall_s"] += time.perf_counter() - wall
        self.clock["cpu_s"] += time.process_time() - cpu

    # ---- evaluation: the whole network forward, no synthetic gradient ----------------------------
    def _eval_step(self, batch) -> None:
        sums = self.engine.eval_sums(*batch)
        self._sums = sums if self._sums is None else {k: v + sums[k] for k, v in self._sums.items()}

    def _eval_end(self, stage: str) -> None:
        if self._sums is not None:
            sums, self._sums = self._sums, None
            log_eval_sums(self, sums, stage)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")
