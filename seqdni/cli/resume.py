"""Resuming a run: the settings it may not change and the budget it has left.

A checkpoint written by `python -m seqdni.train` holds the run's whole configuration
(`checkpoint["seqdni"]["config"]`). `--ckpt_path` resumes that experiment, so every setting
given must equal the checkpoint's, except those in `MAY_CHANGE` (how long to train, what to
log and where, the callbacks, where the data files live); a conflict is an error that names
each key. Checkpoints of earlier versions hold only the model's hyperparameters, which are
then the settings compared.
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Iterator
from typing import Any

from seqdni.errors import UserError

# Settings a resumed run may change (prefixes of dotted keys); the README lists them.
MAY_CHANGE = (
    "ckpt_path", "config",
    "trainer.max_steps", "trainer.max_epochs", "trainer.max_time", "trainer.min_steps", "trainer.min_epochs",
    "trainer.logger", "trainer.callbacks", "trainer.default_root_dir", "trainer.enable_progress_bar",
    "trainer.enable_model_summary", "trainer.log_every_n_steps", "trainer.enable_checkpointing",
    "trainer.num_sanity_val_steps", "trainer.limit_test_batches", "trainer.profiler", "trainer.accelerator",
    "data.init_args.data_dir", "data.init_args.train_files", "data.init_args.val_files",
    "data.init_args.test_files", "data.init_args.cache_dir", "data.init_args.download",
)


def differences(saved: Any, given: Any, key: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, saved value, given value) wherever both sides hold a key and disagree. Where
    the classes differ (`class_path`), only the class is reported; keys in `MAY_CHANGE` never are."""
    if key.startswith(MAY_CHANGE):
        return
    if isinstance(saved, dict) and isinstance(given, dict):
        if "class_path" in saved and "class_path" in given and saved["class_path"] != given["class_path"]:
            yield f"{key}.class_path".lstrip("."), saved["class_path"], given["class_path"]
            return
        for k in saved.keys() & given.keys():
            yield from differences(saved[k], given[k], f"{key}.{k}" if key else k)
    elif saved != given:
        yield key, saved, given


def saved_settings(checkpoint: dict) -> dict:
    """The run's configuration from a checkpoint; for earlier versions, the model's hyperparameters."""
    config = checkpoint["seqdni"].get("config")
    if config is not None:
        return config
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_") and k != "task"}
    model = {"init_args": hparams}
    if "_class_path" in checkpoint["hyper_parameters"]:
        model["class_path"] = checkpoint["hyper_parameters"]["_class_path"]
    return {"model": model}


def added(saved: Any, given: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value given) for each setting given that the saved configuration lacks: an option
    newer than the checkpoint (within classes both sides share; keys in `MAY_CHANGE` never)."""
    if key.startswith(MAY_CHANGE) or not (isinstance(saved, dict) and isinstance(given, dict)):
        return
    if saved.get("class_path") != given.get("class_path"):
        return
    for k in sorted(given.keys() - saved.keys()):
        full = f"{key}.{k}" if key else k
        if not full.startswith(MAY_CHANGE):
            yield full, given[k]
    for k in saved.keys() & given.keys():
        yield from added(saved[k], given[k], f"{key}.{k}" if key else k)


def check_settings(checkpoint: dict, given: dict, path: str) -> None:
    """Stop when the settings given would change the experiment the checkpoint belongs to; say which
    settings the checkpoint does not record (options added since it was written)."""
    if checkpoint["seqdni"].get("config") is not None:
        newer = list(added(checkpoint["seqdni"]["config"], given))
        if newer:
            listed = "; ".join(f"{k} = {_show(v)}" for k, v in newer)
            warnings.warn(f"--ckpt_path {path} was written before these settings existed, so it does not record "
                          f"them; the run goes on with them as given: {listed}", stacklevel=2)
    check_schedule(checkpoint, given, path)
    conflicts = list(differences(saved_settings(checkpoint), given))
    if not conflicts:
        return
    listed = "; ".join(f"{k} is {_show(s)} in the checkpoint but {_show(g)} as given" for k, s, g in sorted(conflicts))
    raise UserError(
        f"--ckpt_path {path} resumes a run whose settings differ from those given: {listed}. A resume "
        "continues the same experiment: drop these keys (or give the run's own config), or start a new "
        "run instead of resuming. Only the stopping rule, logging, callbacks and data locations may change "
        "on resume (README, 'Watch, resume, sample').")


def check_schedule(checkpoint: dict, given: dict, path: str) -> None:
    """With a cosine learning-rate schedule, `trainer.max_steps` is where the rate reaches 0, part of
    the experiment: a resume that changed it would jump to another point of another curve."""
    saved = checkpoint["seqdni"].get("config")
    if saved is None:
        return

    def setting(cfg: dict, *keys: str) -> Any:
        for key in keys:
            cfg = cfg.get(key) if isinstance(cfg, dict) else None
        return cfg

    if setting(saved, "model", "init_args", "lr_schedule") != "cosine" or \
            setting(given, "model", "init_args", "lr_schedule") != "cosine":
        return  # (a changed schedule is a conflict `check_settings` names)
    before, now = setting(saved, "trainer", "max_steps"), setting(given, "trainer", "max_steps")
    if before is None or before <= 0:
        raise UserError(
            f"--ckpt_path {path} resumes a run with model.lr_schedule cosine but no trainer.max_steps, which "
            "earlier versions trained at a constant rate; it cannot go on as either schedule without changing "
            "the experiment: start a new run with --trainer.max_steps set.")
    if before != now:
        raise UserError(
            f"--ckpt_path {path} resumes a run with model.lr_schedule cosine, whose learning rate decays to 0 "
            f"over trainer.max_steps: {_show(before)} in the checkpoint but {_show(now)} as given. A resume "
            f"keeps the schedule: give --trainer.max_steps {_show(before)} (or drop it), or start a new run "
            "for a longer one.")


def _show(value: Any) -> str:
    return "unset" if value is None else repr(value)


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


def budgets(checkpoint: dict | None, max_steps: int, max_epochs: int | None, max_time: float | None) -> list[str]:
    """What each stopping rule that is set leaves of a run resumed from `checkpoint` (None: a fresh
    run), one phrase each; raises when a rule leaves nothing to train."""
    ckpt = checkpoint or {}
    step, epoch = ckpt.get("global_step", 0), ckpt.get("epoch", 0)
    spent = ((ckpt.get("callbacks") or {}).get("Timer") or {}).get("time_elapsed", {}).get("train", 0.0)
    rules = []  # (key, what is left, phrase)
    if max_steps is not None and max_steps >= 0:
        left = max_steps - step
        rules.append(("max_steps", left, f"max_steps {max_steps} leaves {left} optimiser steps"))
    if max_epochs is not None and max_epochs >= 0:
        rules.append(("max_epochs", max_epochs - epoch, f"max_epochs {max_epochs} leaves {max_epochs - epoch}"))
    if max_time is not None:
        rules.append(("max_time", max_time - spent, f"max_time {_clock(max_time)} leaves "
                      f"{_clock(max(0.0, max_time - spent))}" + (f" (it counts the {_clock(spent)} already "
                                                                  "trained)" if checkpoint else "")))
    for key, remaining, phrase in rules:
        if remaining <= 0:
            raise UserError(f"nothing to train: the checkpoint is at optimiser step {step}, epoch {epoch}, after "
                            f"{_clock(spent)} of training, and {phrase}. Raise --trainer.{key} (on resume every "
                            "budget counts the training the checkpoint has already done), or start a new run.")
    return [phrase for _, _, phrase in rules]
