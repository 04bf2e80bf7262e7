"""`LatestCheckpoint`: the checkpoint a run resumes from, always the newest, and where a SIGTERM
stops the run."""

from __future__ import annotations

import functools
import signal
import threading
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

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
    as if it had not stopped; where the fit ends there anyway, it ends as a finished run. Under
    DDP, a signal that reached any rank stops all of them there. (With a `val_check_interval` in
    time, which Lightning decides on each rank by its clock, these hold for single-process runs.)

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
        sigterm = self._sigterm_anywhere(trainer)
        if _validates_after_this_batch(trainer):  # `on_validation_end` saves (and stops), once it has run
            return
        # a stop request waits while min_steps / min_epochs are unmet (Lightning keeps the flag set meanwhile)
        requested = trainer.should_stop and trainer.fit_loop._can_stop_early
        stopping = requested or sigterm or 0 < trainer.max_steps <= trainer.global_step
        batches = trainer.fit_loop.epoch_loop.total_batch_idx + 1  # of the run, not of this epoch
        if stopping or batches % self.every_n_batches == 0:
            self.save(trainer)
        if sigterm:
            _stop_here(trainer)

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
        if self._sigterm_anywhere(trainer):
            _stop_here(trainer)

    def _sigterm_anywhere(self, trainer: L.Trainer) -> bool:
        """Whether a SIGTERM reached any rank (a collective: every rank asks at the same point)."""
        return trainer.strategy.reduce_boolean_decision(self._sigterm or trainer.received_sigterm, all=False)

    def state_dict(self) -> dict:
        return {"last_path": self.last_path}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_path = state_dict.get("last_path")


def _stop_here(trainer: L.Trainer) -> None:
    """Raise Lightning's SIGTERM flag, which it checks once a batch and the validation after it have
    run, unless the fit ends here anyway."""
    if not _fit_ends_here(trainer):
        trainer._signal_connector.received_sigterm = True


def _fit_ends_here(trainer: L.Trainer) -> bool:
    """Whether the fit ends after this batch (and its validation) anyway: then a SIGTERM lets it end as
    a finished run, not one to resume (which would find nothing left to train)."""
    loop = trainer.fit_loop
    last_epoch = loop.max_epochs is not None and 0 <= loop.max_epochs <= trainer.current_epoch + 1
    return (0 < trainer.max_steps <= trainer.global_step or (trainer.should_stop and loop._can_stop_early)
            or (last_epoch and loop.epoch_loop._num_ready_batches_reached()))


def _validates_after_this_batch(trainer: L.Trainer) -> bool:
    """Whether Lightning runs a validation after the training batch that just ended (its own test;
    with a `val_check_interval` in time, Lightning asks the clock again after this, on each rank)."""
    return trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher)
