"""Checks of what a user gives a system, each error naming the key and what to do."""

from __future__ import annotations

from seqdni.errors import UserError


def check_values(positive: dict[str, float], non_negative: dict[str, float], dropout: float = 0.0) -> None:
    """A system's `model.*` numbers, each error naming its key: sizes and counts above 0, rates, decay,
    clip and warm-up at 0 or more, dropout a probability below 1."""
    for key, value in positive.items():
        if not value > 0:
            raise UserError(f"model.{key} must be positive, got {value}")
    for key, value in non_negative.items():
        if not value >= 0:
            raise UserError(f"model.{key} must be 0 or more, got {value}")
    if not 0 <= dropout < 1:
        raise UserError(f"model.dropout is the probability of zeroing a unit, in [0, 1); got {dropout}")


def check_vocabulary(saved: list[str], given: list[str], path: str | None) -> None:
    """The data's characters must be the checkpoint's, in its order: the embedding and the output layer
    are indexed by them (other data files may be given on resume, not another vocabulary)."""
    if saved == given or not saved:
        return
    new, gone = sorted(set(given) - set(saved)), sorted(set(saved) - set(given))
    what = (f"it adds {new!r}" if new else "") + ("; " if new and gone else "") + (f"it lacks {gone!r}" if gone else "")
    raise UserError(
        f"the checkpoint {path or ''} was trained on a vocabulary of {len(saved)} characters, and the data given "
        f"has {len(given)}: {what or 'the same characters in another order'}. A checkpoint's embedding and output "
        "layer are indexed by its own characters: give the data files (data.data_dir, data.*_files) it was "
        "trained on.")


def saved_symbols(checkpoint: dict) -> list[str]:
    """A checkpoint's vocabulary (none for a task of vectors)."""
    return list((checkpoint["hyper_parameters"].get("task") or {}).get("symbols") or [])
