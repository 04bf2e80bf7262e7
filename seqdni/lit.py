"""The LightningModule: truncated BPTT (and DNI) with manual optimisation, carried-state evaluation.

One training loop for every task: the data module says what the task is (`data.task`, a
`seqdni.model.Task`), the network brings its loss and evaluation metric.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import lightning as L
import torch

from seqdni.dni import DNIOptions
from seqdni.model import LN2, Task, build_network
from seqdni.tbptt import Carry, Unroller, window_diagnostics
from seqdni.vocab import CharVocab


class NonFiniteLossError(FloatingPointError):
    """Training stopped on a NaN or infinite loss; checkpoints written before it are kept."""


def adam(params: list[torch.nn.Parameter], **kw) -> torch.optim.Adam:
    """Adam with the fused kernel where the parameters allow it (one kernel for all tensors)."""
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, fused=fused or None, **kw)


class SeqModel(L.LightningModule):
    """An LSTM sequence model trained with truncated BPTT, optionally with DNI.

    Args:
        task: Inputs, outputs and loss; linked from the data module (`data.task`).
        window: Columns per training batch; linked from `data.window`.
        unroll: Truncation length T: steps per unroll, one optimiser step per unroll.
        embed_dim: Input embedding size (characters) or input projection size (vectors).
        hidden_size: LSTM units per layer.
        num_layers: LSTM layers.
        dropout: Dropout on the LSTM output (and between layers).
        lr: Adam learning rate of the network.
        weight_decay: Adam weight decay of the network.
        clip: Gradient-norm clip of the network (its own gradients only); 0 disables.
        lr_schedule: `constant`, or `cosine` decay to 0 over `trainer.max_steps` optimiser steps.
        warmup_steps: Linear warm-up steps of the learning rate.
        dni: Synthetic gradients at truncation boundaries; unset for plain truncated BPTT.
        probe_every: Run the true-gradient probe every this many optimiser steps (0: never).
        probe_unrolls: Unrolls of true BPTT behind the probe's boundary.
        probe_rows: Streams in the probe batch.
    """

    def __init__(
        self,
        task: Task,
        window: int = 120,
        unroll: int = 8,
        embed_dim: int = 128,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.0,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        clip: float = 1.0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        warmup_steps: int = 0,
        dni: DNIOptions | None = None,
        probe_every: int = 0,
        probe_unrolls: int = 8,
        probe_rows: int = 16,
    ):
        super().__init__()
        if unroll <= 0:
            raise ValueError(f"model.unroll must be a positive number of steps, got {unroll}")
        if window % unroll:
            raise ValueError(f"data.window ({window}) must be a multiple of model.unroll ({unroll})")
        if isinstance(dni, dict):  # from a checkpoint's hyperparameters
            dni = DNIOptions(**dni)
        if isinstance(task, dict):
            task = Task(**task)
        self.save_hyperparameters()
        # plain types only, so checkpoints load with weights_only=True
        self.hparams["task"] = asdict(task)
        if dni is not None:
            self.hparams["dni"] = asdict(dni)
        self.automatic_optimization = False
        self.task = task
        self.vocab = CharVocab(task.symbols) if task.kind == "chars" else None
        self.model = build_network(task, embed_dim, hidden_size, num_layers, dropout)
        self.engine = Unroller(self.model, dni)
        self.dni = dni
        self.carry: Carry | None = None
        self._probe_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._clock: tuple[float, int] | None = None

    # ---- optimisation -------------------------------------------------------------------
    def configure_optimizers(self):
        h = self.hparams
        core = adam(self.engine.core_parameters(), lr=h.lr, weight_decay=h.weight_decay)
        total = self.trainer.max_steps if self.trainer is not None and self.trainer.max_steps > 0 else None

        def factor(step: int) -> float:
            if step < h.warmup_steps:
                return (step + 1) / h.warmup_steps
            if h.lr_schedule == "cosine" and total:
                frac = min(1.0, (step - h.warmup_steps) / max(1, total - h.warmup_steps))
                return 0.5 * (1.0 + math.cos(math.pi * frac))
            return 1.0

        sched = torch.optim.lr_scheduler.LambdaLR(core, factor)
        optimizers = [core]
        if self.dni is not None:
            optimizers.append(adam(self.engine.sg_parameters(), lr=self.dni.lr))
        return optimizers, [sched]

    def on_train_epoch_start(self) -> None:
        self.carry = None  # a new epoch starts every stream from the zero state

    def training_step(self, batch, batch_idx: int):
        x, y = batch
        opts = self.optimizers()
        core_opt, sg_opt = (opts, None) if not isinstance(opts, list) else (opts[0], opts[1])
        sched = self.lr_schedulers()
        T = self.hparams.unroll
        if x.size(1) % T:
            raise ValueError(f"a training batch of {x.size(1)} columns is not a multiple of model.unroll ({T})")
        if self.carry is None:
            self.carry = self.engine.initial_carry(x.size(0), x.device)
        elif self.carry.state[0].device != x.device:
            self.carry = self.carry.to(x.device)
        outs = []
        for i in range(x.size(1) // T):
            out = self.engine.unroll(x[:, i * T : (i + 1) * T], y[:, i * T : (i + 1) * T], self.carry,
                                     backward=self._backward)
            last = i == x.size(1) // T - 1
            if last:
                grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.engine.core_parameters()
                                                           if p.grad is not None])
            # Before the SG loss is backpropagated: the core's clip never sees SG-loss gradients
            # (it does see DNI + Aux's auxiliary loss, which is part of the core's objective).
            if self.hparams.clip > 0:
                self.clip_gradients(core_opt, gradient_clip_val=self.hparams.clip, gradient_clip_algorithm="norm")
            if out.sg_loss is not None:
                self.manual_backward(out.sg_loss)
                if self.dni.clip > 0:
                    self.clip_gradients(sg_opt, gradient_clip_val=self.dni.clip, gradient_clip_algorithm="norm")
                # The raw optimiser: Lightning counts LightningOptimizer steps in global_step, and
                # max_steps should count language-model updates whether DNI is on or not.
                sg_opt.optimizer.step()
            if sg_opt is not None:
                sg_opt.zero_grad(set_to_none=True)
            core_opt.step()
            core_opt.zero_grad(set_to_none=True)
            sched.step()
            self.carry = out.carry
            outs.append(out)

        stats = [o.stats for o in outs] + [window_diagnostics(outs)]  # M's, over all the window's boundaries
        loss = torch.stack([o.loss for o in outs]).mean()
        if not torch.isfinite(loss):  # one host sync per batch window, not per step
            self._stop_on_non_finite(batch_idx)
        if self.task.kind == "chars":
            self.log("train/bpc", loss / LN2, prog_bar=True)
        else:
            self.log("train/loss", loss, prog_bar=True)
        self.log("train/grad_norm", grad_norm)
        self.log("train/lr", sched.get_last_lr()[0])
        for key in {k for s in stats for k in s}:
            self.log(key, torch.stack([s[key] for s in stats if key in s]).mean())
        self._maybe_probe()
        return None

    def _backward(self, tensor: torch.Tensor, retain_graph: bool = False) -> None:
        self.manual_backward(tensor, retain_graph=retain_graph)

    def _stop_on_non_finite(self, batch_idx: int) -> None:
        kept = [getattr(cb, "last_path", None) or getattr(cb, "best_model_path", None)
                for cb in self.trainer.checkpoint_callbacks]
        kept = [k for k in kept if k]
        where = f"; last good checkpoint: {kept[0]}" if kept else "; no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"non-finite training loss in the batch ending at optimiser step {self.global_step} "
            f"(epoch {self.current_epoch}, batch {batch_idx}); training stopped{where}. "
            "Lower model.lr or model.clip, or resume from that checkpoint with --ckpt_path."
        )

    def _maybe_probe(self) -> None:
        every, T = self.hparams.probe_every, self.hparams.unroll
        if not every or self.dni is None or self._probe_batch is None:
            return
        step, per_batch = self.global_step, self.hparams.window // T
        if step // every == (step - per_batch) // every:  # no multiple of `every` crossed this batch
            return
        x, y = self._probe_batch
        warm = max(T, x.size(1) - self.hparams.probe_unrolls * T)
        result = {k: v.item() for k, v in self.engine.probe(x.to(self.device), y.to(self.device), T, warm).items()}
        # Straight to the loggers (a sparse metric, not repeated every log step), on the axis
        # Lightning logs everything else against: batches, not optimiser steps.
        step = getattr(self.trainer.fit_loop.epoch_loop, "_batches_that_stepped", self.global_step)
        for logger in self.loggers:
            logger.log_metrics(result, step=step)

    # ---- evaluation: no synthetic gradients, state carried over the whole split -----------
    def _eval_start(self) -> None:
        self._eval_state, self._eval_sums = None, None

    def _eval_step(self, batch) -> None:
        x, y = batch
        if self._eval_state is None:
            self._eval_state = self.model.init_state(x.size(0), x.device)
        out, self._eval_state = self.model.core(x, self._eval_state)
        sums = self.model.eval_sums(out, y)
        self._eval_sums = sums if self._eval_sums is None else {k: v + sums[k] for k, v in self._eval_sums.items()}

    def _eval_end(self, stage: str) -> None:
        if self._eval_sums is None:
            return
        keys = sorted(self._eval_sums)
        total = self.trainer.strategy.reduce(torch.stack([self._eval_sums[k] for k in keys]), reduce_op="sum")
        metrics = self.model.eval_metrics(dict(zip(keys, total)))
        for i, (name, value) in enumerate(metrics.items()):
            # identical on every rank already (summed above): sync_dist only averages equal values
            self.log(f"{stage}/{name}", value.float(), prog_bar=i == 0, sync_dist=True)

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

    # ---- bookkeeping ---------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if str(self.trainer.precision).startswith("16"):
            # Lightning's clip_gradients does not unscale fp16-AMP gradients, and the SG step
            # bypasses the scaler: both clips would act on loss-scaled gradients.
            raise ValueError(f"trainer.precision {self.trainer.precision!r} is not supported; "
                             "use bf16-mixed or 32-true")
        log_dir = self.trainer.log_dir
        if self.trainer.is_global_zero and self.trainer.loggers and log_dir and self.vocab is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self.vocab.save(Path(log_dir) / "vocab.json")
        dm = self.trainer.datamodule
        if self.dni is not None and self.hparams.probe_every and hasattr(dm, "probe_batch"):
            # A held probe window: warm-up over one training window, then probe_unrolls unrolls.
            span = self.hparams.window + self.hparams.probe_unrolls * self.hparams.unroll
            self._probe_batch = dm.probe_batch(self.hparams.probe_rows, span)

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

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Every rank carries the states of its own streams: under DDP all ranks' carries are
        # gathered (every rank runs this hook; rank 0 writes the file) and each takes its own back.
        carry = None
        if self.carry is not None:
            world = self.trainer.world_size if self._trainer is not None else 1

            def per_rank(t: torch.Tensor) -> list[torch.Tensor]:
                return [g.cpu() for g in self.all_gather(t)] if world > 1 else [t.cpu()]

            carry = {"state": [per_rank(t) for t in self.carry.state], "boundary": self.carry.boundary,
                     "kept": None if self.carry.kept is None else
                     {"state": [per_rank(t) for t in self.carry.kept[0]], "x": per_rank(self.carry.kept[1])}}
        checkpoint["seqdni"] = {"format": 2, "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
                                "carry": carry}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = (checkpoint.get("seqdni") or {}).get("carry")
        if saved is None:
            self.carry = None
            return
        if checkpoint["seqdni"].get("format", 1) == 1:  # one rank's carry, tensors unwrapped
            saved = {"state": [[t] for t in saved["state"]], "boundary": saved["boundary"],
                     "kept": None if saved["kept"] is None else
                     {"state": [[t] for t in saved["kept"]["state"]], "x": [saved["kept"]["x"]]}}
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        if not fitting:  # evaluation and sampling start from the zero state: the carry is not used
            self.carry = None
            return
        rank, world = self.trainer.global_rank, len(saved["state"][0])
        if self.trainer.world_size != world:
            raise ValueError(f"the checkpoint carries the streams of {world} rank(s) but this run has "
                             f"{self.trainer.world_size}; resume training with the same number of devices")

        def mine(ts: list[list[torch.Tensor]]) -> tuple[torch.Tensor, ...]:
            return tuple(t[rank] for t in ts)

        kept = None if saved["kept"] is None else (mine(saved["kept"]["state"]), saved["kept"]["x"][rank])
        self.carry = Carry(mine(saved["state"]), kept, saved["boundary"])
