"""Callbacks: a clock of training CPU time, text samples in TensorBoard, the Copy curriculum (the
checkpoint to resume from is `latest_checkpoint.LatestCheckpoint`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from seqdni.data.vocab import render
from seqdni.errors import UserError


class TrainingClock(L.Callback):
    """Logs `time/train_cpu_seconds` after every validation of a fit and when training ends: the
    process CPU seconds spent training so far, validations excluded, on the optimiser-step axis of
    every other scalar. The count is kept in checkpoints, so a resumed run goes on from where it
    stopped. CPU time, not wall-clock, is what stays comparable on a machine shared with other jobs
    (one torch thread per run counts one core; threads add up)."""

    def __init__(self):
        super().__init__()
        self.seconds, self._since, self._loaded = 0.0, None, False

    def _total(self) -> float:
        return self.seconds + (time.process_time() - self._since if self._since is not None else 0.0)

    def _pause(self) -> None:
        self.seconds, self._since = self._total(), None

    def _log(self, trainer: L.Trainer) -> None:
        for logger in trainer.loggers:
            logger.log_metrics({"time/train_cpu_seconds": self.seconds}, step=trainer.global_step)
            logger.save()  # on disk before the checkpoint that follows a validation

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_step > 0 and not self._loaded:
            rank_zero_warn(f"TrainingClock: the checkpoint holds no training time (it predates the callback); "
                           f"time/train_cpu_seconds counts from this resume at step {trainer.global_step}")
        self._since = time.process_time()

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit":
            self._pause()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._log(trainer)
        self._since = time.process_time()

    def on_train_end(self, trainer, pl_module) -> None:
        self._pause()
        self._log(trainer)

    def state_dict(self) -> dict:
        return {"seconds": self._total()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seconds, self._loaded = float(state_dict["seconds"]), True


class SampleText(L.Callback):
    """Writes a text sample to TensorBoard (`add_text`) every `every_n_steps` optimiser steps.

    Args:
        every_n_steps: Optimiser steps between samples.
        length: Characters to sample.
        prime: Text that warms up the state; characters outside the vocabulary are dropped.
        temperature: Softmax temperature.
    """

    def __init__(self, every_n_steps: int = 2000, length: int = 300, prime: str = "the ", temperature: float = 0.8):
        super().__init__()
        self.every_n_steps, self.length, self.prime, self.temperature = every_n_steps, length, prime, temperature
        self._last = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._last = trainer.global_step  # a resumed run keeps the schedule of multiples of every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step // self.every_n_steps == self._last // self.every_n_steps:
            return
        self._last = step
        if not trainer.is_global_zero:
            return
        vocab = getattr(pl_module, "vocab", None)
        if vocab is None:  # not a character task: nothing to sample
            return
        text = "".join(ch for ch in vocab.from_display(self.prime) if ch in vocab.index) or vocab.symbols[0]
        prime = torch.tensor(vocab.encode(text), device=pl_module.device)
        gen = torch.Generator(device=pl_module.device).manual_seed(step)
        was_training = pl_module.training
        pl_module.eval()
        ids = pl_module.net.generate(prime, self.length, self.temperature, generator=gen)
        pl_module.train(was_training)
        text = render(text + vocab.decode(ids.tolist()))
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_text"):
                # Markdown in TensorBoard: keep line breaks visible.
                experiment.add_text("sample", "    " + text.replace("\n", "\n    "), step)


class Curriculum(L.Callback):
    """Raises the data module's level N when validation says the current level is solved.

    After each validation, N counts as solved when `val/bits_error` (wrong bits per
    episode) is below `threshold`; after `patience` solved validations in a row the level
    goes up by one. `curriculum/level` and `curriculum/solved` go to the loggers, and the
    history is written to `<log_dir>/curriculum.json` (read by `scripts/copy_table.py`).
    The score of a run is the largest N solved.

    Args:
        threshold: Wrong bits per episode below which a validation counts as solved.
        patience: Solved validations in a row needed to advance.
        max_level: Stop training once this level is solved; 0 never stops.
        monitor: The metric compared with the threshold.
    """

    def __init__(self, threshold: float = 0.15, patience: int = 1, max_level: int = 0,
                 monitor: str = "val/bits_error"):
        super().__init__()
        if threshold <= 0 or patience <= 0 or max_level < 0:
            raise UserError(f"Curriculum needs threshold > 0, patience > 0 and max_level >= 0, "
                             f"got {threshold}, {patience}, {max_level}")
        self.threshold, self.patience, self.max_level, self.monitor = threshold, patience, max_level, monitor
        self.streak, self.solved, self.history = 0, 0, []

    @staticmethod
    def _data(trainer: L.Trainer) :
        dm = trainer.datamodule
        if not hasattr(dm, "level"):
            raise UserError(f"Curriculum needs a data module with a `level` (seqdni.data.CopyDataModule), "
                             f"got {type(dm).__name__}; remove the callback for this task")
        return dm

    def on_fit_start(self, trainer, pl_module) -> None:
        self._data(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if self.monitor not in trainer.callback_metrics:
            raise UserError(f"Curriculum monitors {self.monitor!r}, which validation did not log; "
                           f"logged: {sorted(trainer.callback_metrics)}")
        dm, error = self._data(trainer), float(trainer.callback_metrics[self.monitor])
        level = dm.level
        self.streak = self.streak + 1 if error < self.threshold else 0
        if self.streak >= self.patience:
            self.solved, self.streak = max(self.solved, level), 0
            dm.level = level + 1
            if self.max_level and self.solved >= self.max_level:
                trainer.should_stop = True
        step = trainer.global_step
        self.history.append({"step": step, "level": level, "bits_error": error, "solved": self.solved})
        # On the axis of every other scalar and of the history: the optimiser step.
        metrics = {"curriculum/level": float(level), "curriculum/solved": float(self.solved)}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if trainer.is_global_zero and trainer.log_dir:
            path = Path(trainer.log_dir) / "curriculum.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps({"task": dm.task.name, "unroll": pl_module.hparams.get("unroll"),
                                       "dni": pl_module.hparams.get("dni"), "solved": self.solved,
                                       "threshold": self.threshold, "history": self.history}))
            tmp.replace(path)

    def on_fit_end(self, trainer, pl_module) -> None:
        """The run's score, where the user sees it."""
        at = next((h["step"] for h in self.history if h["solved"] == self.solved), None) if self.solved else None
        rank_zero_info(f"Curriculum: largest N solved {self.solved}" + (f" (at optimiser step {at})" if at else "")
                       + f"; last level tried {self.history[-1]['level'] if self.history else 'none'}")

    def state_dict(self) -> dict:
        return {"streak": self.streak, "solved": self.solved, "history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.streak, self.solved = int(state_dict["streak"]), int(state_dict["solved"])
        self.history = list(state_dict.get("history", []))
