"""The one LightningModule: manual optimisation of an engine, carried-state evaluation, checkpoints.

`SeqModule` knows nothing of any system: a system (`seqdni.training.systems`) builds a network
and an engine (`seqdni.engines`) from its typed arguments and hands them over with `build`.
One training batch is a window of columns of every stream; the loop cuts it into the engine's
updates, carrying the state across them:

    for each update of the window:  carry, out = engine.update(x[:, cols], y[:, cols], carry, steps)
    losses, stats = engine.summarise(outs)   -> checked for NaN once per window, then logged
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.utilities import rank_zero_info

from seqdni.data import CharVocab, Task
from seqdni.engines import Carry, Engine
from seqdni.errors import SeqDNIError, UserError
from seqdni.training import checkpointing
from seqdni.training.checks import check_vocabulary, saved_symbols
from seqdni.training.optim import LightningSteps, adam, schedule, wrappers_add_nothing
from seqdni.training.probe import Probe


def stop_if_stopped_early(trainer: L.Trainer) -> None:
    """A run resumed from a checkpoint written after the validation that met its early-stopping rule, but
    before the run could stop, stops again: Lightning restores the rule's state, not its stop request,
    so the run would otherwise train one more validation interval and end elsewhere. A patience changed
    on resume (`checkpointing.keep_given_patience`) is the rule: raised above the validations without
    progress so far, the run trains on; lowered to them, it stops now."""
    for cb in trainer.early_stopping_callbacks:
        if cb.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED and cb.wait_count < cb.patience:
            cb.stopping_reason, cb.stopping_reason_message = EarlyStoppingReason.NOT_STOPPED, None
        elif cb.stopping_reason is EarlyStoppingReason.NOT_STOPPED and 0 < cb.patience <= cb.wait_count:
            cb.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
            cb.stopping_reason_message = (f"{cb.monitor} did not improve in the last {cb.wait_count} validations, "
                                          f"the patience given on resume ({cb.patience})")
        if cb.stopping_reason is not EarlyStoppingReason.NOT_STOPPED:
            trainer.should_stop = True
            rank_zero_info(f"Early stopping had already ended this run ({cb.stopping_reason_message or cb.monitor}); "
                           "it trains no further.")


class NonFiniteLossError(SeqDNIError, FloatingPointError):
    """Training stopped on a NaN or infinite loss; checkpoints written before it are kept. Its message
    says what to do, so the entry points print it as a paragraph, without a traceback."""


def stop_on_non_finite(module: L.LightningModule, batch_idx: int) -> None:
    """Stop training on a non-finite loss, naming the last checkpoint written before it."""
    callbacks = module.trainer.checkpoint_callbacks  # the newest (`LatestCheckpoint`) before the best
    kept = [path for key in ("last_path", "best_model_path") for cb in callbacks if (path := getattr(cb, key, None))]
    where = f"; last good checkpoint: {kept[0]}" if kept else "; no checkpoint had been written yet"
    raise NonFiniteLossError(
        f"non-finite training loss in the batch ending at optimiser step {module.global_step} "
        f"(epoch {module.current_epoch}, batch {batch_idx}); training stopped{where}. "
        "Lower model.lr or model.clip, or resume from that checkpoint with --ckpt_path."
    )


def log_eval_sums(module: L.LightningModule, sums: dict[str, torch.Tensor], stage: str) -> None:
    """Sum an evaluation's float64 sums over the ranks and log the network's metrics as `<stage>/<name>`."""
    keys = sorted(sums)
    total = module.trainer.strategy.reduce(torch.stack([sums[k] for k in keys]), reduce_op="sum")
    for i, (name, value) in enumerate(module.net.eval_metrics(dict(zip(keys, total))).items()):
        # identical on every rank already (summed above): sync_dist only averages equal values
        module.log(f"{stage}/{name}", value.float(), prog_bar=i == 0, sync_dist=True)
    module.log("step", float(evaluated_step(module)))  # the x axis: optimiser steps, as in training


def evaluated_step(module: L.LightningModule) -> int:
    """The optimiser step of the weights being evaluated: the run's own during a fit, the loaded
    checkpoint's for `validate`/`test` from a checkpoint (whose trainer has taken no step)."""
    loaded = getattr(module, "loaded_step", None)
    return loaded if module.trainer.state.fn != "fit" and loaded is not None else module.trainer.global_step


class SeqModule(L.LightningModule):
    """Trains a system's engine; see the module docstring. Subclasses only construct (`build`)."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.carry: Carry | None = None
        self.probe: Probe | None = None
        self._clock: tuple[float, int] | None = None
        self._eval_state = self._eval_sums = None
        self.run_config: dict | None = None  # the command line's settings, kept in checkpoints for resumes
        self.loaded_step: int | None = None  # the optimiser step of the checkpoint loaded, if any
        self._direct = False  # whether to bypass Lightning's backward/step wrappers (optim.wrappers_add_nothing)

    def build(self, task: Task, engine: Engine, lr_schedule: str | None = "constant", warmup_steps: int = 0,
              span_key: str = "model.unroll") -> None:
        """The system's task and engine; `lr_schedule` None: no scheduler for the main group."""
        self.task, self.engine = task, engine
        self.lr_schedule, self.warmup_steps, self.span_key = lr_schedule, warmup_steps, span_key
        can_sample = bool(task.symbols) and hasattr(engine.net, "generate")
        self.vocab = CharVocab(task.symbols) if can_sample else None

    @property
    def net(self) -> torch.nn.Module:
        """The pure network (what sampling and evaluation read)."""
        return self.engine.net

    # ---- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        self._groups = groups = self.engine.param_groups()
        optimizers = [adam(g.params, lr=g.lr, weight_decay=g.weight_decay) for g in groups]
        if self.lr_schedule is None:
            return optimizers
        total = self.trainer.max_steps if self.trainer is not None and self.trainer.max_steps > 0 else None
        if self.lr_schedule == "cosine" and total is None:
            raise UserError("model.lr_schedule is cosine, which decays the learning rate to 0 over "
                            "trainer.max_steps, but trainer.max_steps is not set: give --trainer.max_steps, or "
                            "use --model.lr_schedule constant.")
        factor = schedule(self.lr_schedule, self.warmup_steps, total)
        return optimizers, [torch.optim.lr_scheduler.LambdaLR(optimizers[0], factor)]

    def _steps(self) -> LightningSteps:
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        return LightningSteps(self, self._groups, opts, self.lr_schedulers() if self.lr_schedule else None,
                              direct=self._direct)

    def on_train_start(self) -> None:
        self._direct = wrappers_add_nothing(self)
        stop_if_stopped_early(self.trainer)

    def on_train_epoch_start(self) -> None:
        self.carry = None  # a new epoch starts every stream from the zero state

    def _carry_for(self, x: torch.Tensor) -> Carry:
        if self.carry is None:
            return self.engine.initial_carry(x.size(0), x.device)
        return self.carry if self.carry.state[0].device == x.device else self.carry.to(x.device)

    def training_step(self, batch, batch_idx: int):
        x, y = batch
        span = self.engine.span
        if x.size(1) % span:
            raise UserError(f"a training batch of {x.size(1)} columns is not a multiple of {self.span_key} ({span})")
        ahead = getattr(self.engine, "lookahead", 0)  # targets past each unroll that a conditional M reads
        if y.size(1) < x.size(1) + ahead:
            raise UserError(f"model.dni.lookahead is {ahead}, but the data's targets run {y.size(1) - x.size(1)} "
                            f"steps past each window; set data.lookahead to at least {ahead}")
        steps, carry, outs = self._steps(), self._carry_for(x), []
        for i in range(x.size(1) // span):
            a, b = i * span, (i + 1) * span
            carry, out = self.engine.update(x[:, a:b], y[:, a : b + ahead], carry, steps)
            outs.append(out)
        self.carry = carry
        losses, stats = self.engine.summarise(outs)
        if not torch.isfinite(torch.stack(list(losses.values()))).all():  # one host sync per window
            stop_on_non_finite(self, batch_idx)
        self._log_window(losses, stats, steps, batch_idx)
        if self.probe is not None:
            self.probe.maybe_run(self)
        return None

    def _log_window(self, losses: dict, stats: dict, steps: LightningSteps, batch_idx: int) -> None:
        # TensorBoard's x axis is the optimiser step (`trainer.global_step`), as in checkpoint names and
        # text samples, not Lightning's default count of batches (W / T optimiser steps each).
        self.log("step", float(self.trainer.global_step))
        for i, (key, value) in enumerate(losses.items()):
            self.log(key, value, prog_bar=i == 0)
        if steps.grad_norm is not None:
            self.log("train/grad_norm", steps.grad_norm)
        if steps.scheduler is not None:
            self.log("train/lr", steps.scheduler.get_last_lr()[0])
        for key, value in stats.items():
            self.log(key, value)
        if (batch_idx + 1) % max(1, self.trainer.log_every_n_steps):
            return  # the state norms are new work: only on the batches the loggers write
        for name, t in zip(getattr(self.net, "state_names", ()), self.carry.state):
            # Each stream's state norm (over layers and units), mean over the streams: an LSTM's cell
            # state c can integrate without bound on streams that never reset it.
            self.log(f"state/{name}_norm", t.detach().movedim(1, 0).flatten(1).norm(dim=1).mean())

    # ---- evaluation: no synthetic gradients, state carried over the whole split -----------------
    def _eval_start(self) -> None:
        self._eval_state, self._eval_sums = None, None

    def _eval_step(self, batch) -> None:
        x, y = batch
        if self._eval_state is None:
            self._eval_state = self.engine.eval_start(x.size(0), x.device)
        sums, self._eval_state = self.engine.eval_step(x, y, self._eval_state)
        self._eval_sums = sums if self._eval_sums is None else {k: v + sums[k] for k, v in self._eval_sums.items()}

    def _eval_end(self, stage: str) -> None:
        if self._eval_sums is None:
            return
        log_eval_sums(self, self._eval_sums, stage)

    def on_validation_epoch_start(self) -> None:
        self._eval_start()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._eval_start()

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    # ---- bookkeeping ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        checkpointing.stage_checkpoints(self.trainer.strategy)  # every checkpoint staged in its own folder

    def on_fit_start(self) -> None:
        if str(self.trainer.precision).startswith("16"):
            # Loss scaling would leave every clip acting on scaled gradients, and the raw steps of
            # the other groups would bypass the scaler.
            raise UserError(f"trainer.precision {self.trainer.precision!r} is not supported; "
                             "use bf16-mixed or 32-true")
        dni = getattr(self.engine, "dni", None)
        for key, what in (("reuse", "M's graph"), ("aux_keep_graph", "the core's graph")):
            if self.trainer.world_size > 1 and getattr(dni, key, False):
                raise UserError(f"model.dni.{key} keeps {what} from one training step to the next, which DDP's "
                                "gradient synchronisation does not allow; unset it to train on several devices")
        log_dir = self.trainer.log_dir
        if self.trainer.is_global_zero and self.trainer.loggers and log_dir and self.vocab is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self.vocab.save(Path(log_dir) / "vocab.json")
        if self.probe is not None:
            self.probe.setup(self, self.trainer.datamodule)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        now, chars = time.perf_counter(), batch[0].numel()
        if self._clock is None:
            self._clock = (now, 0)
            return
        start, seen = self._clock
        seen += chars
        self._clock = (start, seen)
        if (batch_idx + 1) % max(1, self.trainer.log_every_n_steps) == 0 and now > start:
            self.log("train/chars_per_sec", seen * self.trainer.world_size / (now - start))
            if self.device.type == "cuda":  # a host-side counter: no device sync
                self.log("train/cuda_peak_mib", torch.cuda.max_memory_allocated(self.device) / 2**20)
            self._clock = (now, 0)

    def _gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        world = self.trainer.world_size if self._trainer is not None else 1
        return [g.cpu() for g in self.all_gather(t)] if world > 1 else [t.cpu()]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Every rank carries the states of its own streams: under DDP all ranks' carries are
        # gathered (every rank runs this hook; rank 0 writes the file) and each takes its own back.
        carry = None if self.carry is None else self.carry.state_dict(self._gather)
        checkpoint["seqdni"] = {"format": checkpointing.FORMAT, "carry": carry, "config": self.run_config,
                                "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
                                "rng": checkpointing.rng_state(self.device)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.loaded_step = checkpoint.get("global_step")
        loaded = self._trainer.ckpt_path if self._trainer is not None else None
        check_vocabulary(saved_symbols(checkpoint), list(self.task.symbols), loaded)
        saved = checkpointing.upgrade(checkpoint)["seqdni"].get("carry")
        if self._trainer is not None:
            checkpointing.follow_run_folder(checkpoint, self.trainer.checkpoint_callbacks, self.trainer.ckpt_path)
            for line in checkpointing.keep_given_patience(checkpoint, self.trainer.early_stopping_callbacks):
                rank_zero_info(line)
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        if fitting:  # dropout goes on with the masks the uninterrupted run would draw
            # the module is not on its device yet (Lightning restores before it moves it): the strategy's
            checkpointing.set_rng_state(checkpoint["seqdni"].get("rng"), self.trainer.strategy.root_device)
        if saved is None or not fitting:  # evaluation and sampling start from the zero state
            self.carry = None
            return
        world = len(saved["state"][0])
        if self.trainer.world_size != world:
            raise UserError(f"the checkpoint carries the streams of {world} rank(s) but this run has "
                             f"{self.trainer.world_size}; resume training with the same number of devices")
        self.carry = Carry.from_state_dict(saved, self.trainer.global_rank)
