"""When to run the true-gradient probe (`seqdni.engines.probe`), on a held batch, and where it logs."""

from __future__ import annotations

import torch

from seqdni.engines.probe import probe


class Probe:
    """Every `every` optimiser steps, compare M at a held boundary with the true future gradient
    over `unrolls` unrolls (`sg/probe_cosine`, `sg/probe_norm_ratio`), on `rows` streams."""

    def __init__(self, every: int, unrolls: int, rows: int, window: int):
        self.every, self.unrolls, self.rows, self.window = every, unrolls, rows, window
        self.datamodule = None

    def setup(self, module, datamodule) -> None:
        """The data module that gives the probe window: a warm-up over one training window, then
        `unrolls` unrolls. It is asked at every probe, so a curriculum's current level is probed."""
        self.datamodule = datamodule if hasattr(datamodule, "probe_batch") else None

    def maybe_run(self, module) -> None:
        T = module.engine.span
        step, per_batch = module.global_step, self.window // T
        if self.datamodule is None or step // self.every == (step - per_batch) // self.every:
            return  # no multiple of `every` crossed this batch
        batch = self.datamodule.probe_batch(self.rows, self.window + self.unrolls * T)
        if batch is None:
            return
        x, y = (t.to(module.device) for t in batch)
        warm = max(T, x.size(1) - self.unrolls * T)
        # the probe runs the network as it trains (dropout included) without using up the run's random
        # numbers: with or without probes, training draws the same masks
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            result = {k: v.item() for k, v in probe(module.engine, x, y, warm).items()}
        # Straight to the loggers (a sparse metric, not repeated every log step), on the axis every
        # other scalar uses: the optimiser step (`SeqModule` logs `step`).
        for logger in module.loggers:
            logger.log_metrics(result, step=step)
