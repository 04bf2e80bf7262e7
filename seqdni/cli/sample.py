"""`python -m seqdni.sample --ckpt PATH [--prime TEXT] [--length N] [--temperature X] [--top_k K] [--seed S]`.

Loads a checkpoint (weights only: no code from the file runs), warms the state on the
prime text and prints plain text: `_` as a space, end-of-line as a newline.
"""

from __future__ import annotations

import importlib
import io
import pickle
import sys
import zipfile
from pathlib import Path

import torch

from seqdni.data.vocab import render
from seqdni.training import SeqModel
from seqdni.training.checkpointing import class_path, upgrade


class CheckpointError(ValueError):
    """A file that cannot be used as a seqdni checkpoint."""


def _model_class(path: Path, name: str | None) -> type:
    """The LightningModule class a checkpoint was saved from (only seqdni's own classes)."""
    if name is None:
        return SeqModel
    module, _, attr = name.rpartition(".")
    if not module.startswith("seqdni."):
        raise CheckpointError(f"{path} names a model class outside seqdni ({name}); refusing to load it")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(f"{path} was saved from {name}, which this version of seqdni lacks") from err


def load_checkpoint(path: str | Path, map_location: str = "cpu"):
    """A trained seqdni model from a checkpoint, with a clear error for anything else."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError) as err:
        raise CheckpointError(
            f"{p} cannot be read as a checkpoint (truncated or corrupt, or it holds objects that a "
            f"weights-only load refuses): {str(err).splitlines()[0]}"
        ) from err
    if not isinstance(ckpt, dict) or "seqdni" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{p} is not a seqdni checkpoint (it lacks the 'seqdni' and hyperparameter sections)")
    cls = _model_class(p, class_path(ckpt))
    buffer = io.BytesIO()  # earlier formats are upgraded in memory; the file is never rewritten
    torch.save(upgrade(ckpt), buffer)
    buffer.seek(0)
    return cls.load_from_checkpoint(buffer, map_location=map_location, weights_only=True)


def sample(ckpt: str, prime: str = "the ", length: int = 500, temperature: float = 0.8,
           top_k: int | None = None, seed: int = 0, device: str = "cpu") -> str:
    """Sample text from a checkpoint.

    Args:
        ckpt: Path of a checkpoint written by `seqdni.train`.
        prime: Text that warms up the state; spaces are read as word separators, and capitals as
            lower case when the vocabulary has none (PTB), with a note on stderr.
        length: Characters to generate.
        temperature: Softmax temperature (> 0); lower is more conservative.
        top_k: Sample only among the k most likely characters.
        seed: Random seed: the same seed gives the same text.
        device: Torch device to sample on.
    """
    lm = load_checkpoint(ckpt, map_location=device).eval()
    vocab = getattr(lm, "vocab", None)
    if vocab is None:
        raise ValueError(f"{ckpt} holds a model of the {lm.task.name!r} task, which has no text to sample")
    text = vocab.from_display(prime)
    bad = vocab.unknown(text)
    if bad and not vocab.unknown(text.lower()):  # a lower-case vocabulary (PTB): read capitals as lower case
        print(f"note: the vocabulary has no capitals; the prime is read as {render(text.lower())!r}", file=sys.stderr)
        text, bad = text.lower(), []
    if bad:
        raise ValueError(
            f"the prime text has characters outside the model's vocabulary: {', '.join(repr(c) for c in bad)} "
            f"(the vocabulary is {''.join(vocab.symbols)!r})"
        )
    if not text:
        text = vocab.symbols[0]
    gen = torch.Generator(device=device).manual_seed(seed)
    ids = lm.net.generate(torch.tensor(vocab.encode(text), device=device), length, temperature, top_k, gen)
    return render(text + vocab.decode(ids.tolist()))


def main(args: list[str] | None = None) -> None:
    from jsonargparse import auto_cli

    try:
        print(auto_cli(sample, args=args, as_positional=False))
    except (FileNotFoundError, ValueError) as err:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
