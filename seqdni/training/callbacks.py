"""Callbacks: an always-latest checkpoint for resuming, a clock of training CPU time, text samples in
TensorBoard, the Copy curriculum."""

from __future__ import annotations

import functools
import json
import signal
import threading
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from seqdni.data.vocab import render
from seqdni.errors import UserError


class LatestCheckpoint(Checkpoint):
    """Keeps `latest.ckpt` fresh: every `every_n_batches` training batches, after each
    validation, at the end of each epoch, and where training stops (max_steps, max_time, a stop
    request, a SIGTERM; checkpoint callbacks run after the others, so they see the stop).
    Saving at a batch end, not in `on_train_end`, keeps the cut mid-epoch for Lightning too,
    so a resume continues the epoch with the carried state. Under a seqdni module it is written to
    `latest.ckpt.tmp` beside it and renamed (`checkpointing.StagedCheckpointIO`, which `SeqModule`
    installs), so a crash mid-write never leaves a broken `latest.ckpt`, nor anything in the
    system temp folder.

    At a batch a validation follows, the save waits for the validation's end: Lightning resumes
    a checkpoint of that batch as if its validation had run, so a save before it would drop the
    validation from a resumed run.

    A SIGTERM (a scheduler's notice) stops training where the uninterrupted run would have saved
    next: at the end of the training batch in progress, or, during a validation or at a batch one
    follows, at the end of that validation (part of the run's record). The run resumes from there
    as if it had not stopped. Under DDP, a signal that reached any rank stops all of them there.
    (With a `val_check_interval` in time, which Lightning decides on each rank by its clock, these
    hold for single-process runs only.)

    Lightning's `save_last=True` only refreshes last.ckpt when its own schedule saves, which
    can leave it behind the real state; this callback is the resume point instead.

    Args:
        every_n_batches: Training batches between saves, counted across epochs (with 653 batches an
            epoch and 200, the saves fall at batches 200, 400, 600, 800, ... of the run).
        dirpath: Directory; default `<log_dir>/checkpoints`.
        filename: File name of the checkpoint.
    """

    def __init__(self, every_n_batches: int = 200, dirpath: str | None = None, filename: str = "latest.ckpt"):
        super().__init__()
        if every_n_batches <= 0:
            raise UserError(f"every_n_batches must be positive, got {every_n_batches}")
        self.every_n_batches, self.dirpath, self.filename = every_n_batches, dirpath, filename
        self.last_path: str | None = None
        self._sigterm = False

    def _path(self, trainer: L.Trainer) -> Path:
        d = Path(self.dirpath) if self.dirpath else Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
        return d / self.filename

    def on_fit_start(self, trainer, pl_module) -> None:
        """A run killed while writing leaves staging files (`*.ckpt.tmp`) behind; they are never checkpoints."""
        if trainer.is_global_zero:
            for tmp in self._path(trainer).parent.glob("*.ckpt.tmp"):
                tmp.unlink(missing_ok=True)

    def save(self, trainer: L.Trainer) -> None:
        path = self._path(trainer)
        try:
            trainer.save_checkpoint(path, weights_only=False)  # everything needed to resume
        except (OSError, RuntimeError) as err:  # a full disk or a folder gone read-only: keep the last one
            kept = f"the last complete one is {path}" if path.is_file() else "no checkpoint was written before"
            raise UserError(f"writing the checkpoint {path} failed ({str(err).splitlines()[0]}); {kept}. Free "
                            "space or choose another folder (--trainer.default_root_dir), then resume.") from err
        trainer.strategy.barrier("latest_checkpoint")
        self.last_path = str(path)

    def setup(self, trainer, pl_module, stage) -> None:
        self._sigterm = False

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self._listen(trainer)

    def on_train_start(self, trainer, pl_module) -> None:
        self._listen(trainer)

    def _listen(self, trainer: L.Trainer) -> None:
        """From Lightning's registering of its handlers (just before the sanity check) to the fit's end."""
        if threading.current_thread() is threading.main_thread():  # where Python runs signal handlers
            before = trainer._signal_connector._original_handlers.get(signal.SIGTERM)  # the fit puts it back
            handler = functools.partial(self._note_sigterm, trainer.strategy.launcher, before)
            signal.signal(signal.SIGTERM, handler)

    def _note_sigterm(self, launcher, before, signum, frame) -> None:
        """Replaces Lightning's SIGTERM handler, which also broadcasts from inside the handler: under
        DDP that deadlocks when another rank waits in a collective. This one only takes note; the next
        batch end or validation end acts on it, on every rank alike."""
        if not self._sigterm and launcher is not None:
            launcher.kill(signum)  # the ranks this process started hear it too, as under Lightning's handler
        self._sigterm = True
        if callable(before):  # a handler installed before the fit, which Lightning's would call too
            before(signum, frame)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # A SIGTERM that reached any process stops all of them at the same batch, each having saved.
        sigterm = trainer.strategy.reduce_boolean_decision(self._sigterm or trainer.received_sigterm, all=False)
        if _validates_after_this_batch(trainer):  # `on_validation_end` saves (and stops), once it has run
            return
        # a stop request waits while min_steps / min_epochs are unmet (Lightning keeps the flag set meanwhile)
        requested = trainer.should_stop and trainer.fit_loop._can_stop_early
        stopping = requested or sigterm or 0 < trainer.max_steps <= trainer.global_step
        batches = trainer.fit_loop.epoch_loop.total_batch_idx + 1  # of the run, not of this epoch
        if stopping or batches % self.every_n_batches == 0:
            self.save(trainer)
        if sigterm:
            _stop_after_this_batch(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # The end of an epoch can end the fit (max_epochs, or a stop request that waited for the epoch).
        # An epoch cut short by a stop was saved where it stopped: Lightning resumes a save made here
        # after it at the next epoch, skipping the rest of this one.
        if trainer.fit_loop.epoch_loop._num_ready_batches_reached():
            self.save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self.save(trainer)
        if trainer.strategy.reduce_boolean_decision(self._sigterm or trainer.received_sigterm, all=False):
            _stop_after_this_batch(trainer)

    def state_dict(self) -> dict:
        return {"last_path": self.last_path}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_path = state_dict.get("last_path")


def _stop_after_this_batch(trainer: L.Trainer) -> None:
    """Lightning's SIGTERM flag, which it checks once a batch and the validation after it have run."""
    trainer._signal_connector.received_sigterm = True


def _validates_after_this_batch(trainer: L.Trainer) -> bool:
    """Whether Lightning runs a validation after the training batch that just ended (its own test;
    with a `val_check_interval` in time, Lightning asks the clock again after this, on each rank)."""
    return trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher)


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
