"""`python -m seqdni.sample --ckpt PATH [--prime TEXT] [--length N] [--temperature X] [--top_k K] [--seed S]`.

Loads a checkpoint (weights only: no code from the file runs), warms the state on the
prime text and prints plain text: `_` as a space, end-of-line as a newline.
"""

from __future__ import annotations

import importlib
import io
import sys
from pathlib import Path

import torch
from jsonargparse import DefaultHelpFormatter

from seqdni.cli.parser import FunctionParser
from seqdni.data.vocab import render
from seqdni.errors import UserError, debugging, reported
from seqdni.training import SeqModel, checkpointing
from seqdni.training.checkpointing import CheckpointError, class_path

PROG = "python -m seqdni.sample"


class QuotedDefaults(DefaultHelpFormatter):
    """jsonargparse's help with a text default quoted, so what it holds shows: `default: 'the '`, the prime's
    trailing space included."""

    def _get_help_string(self, action) -> str:
        help_str = super()._get_help_string(action)
        if isinstance(action.default, str):
            help_str = help_str.replace("default: %(default)s", f"default: {action.default!r}".replace("%", "%%"))
        return help_str


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
    ckpt = checkpointing.read(path)
    cls = _model_class(Path(path), class_path(ckpt))
    buffer = io.BytesIO()  # earlier formats are upgraded in memory; the file is never rewritten
    torch.save(ckpt, buffer)
    buffer.seek(0)
    return cls.load_from_checkpoint(buffer, map_location=map_location, weights_only=True)


def check_arguments(length: int, temperature: float, top_k: int | None) -> None:
    """The sampling arguments' ranges, each named as it is typed."""
    if length < 0:
        raise UserError(f"--length is the number of characters to generate, >= 0; got {length}")
    if not temperature > 0:
        raise UserError(f"--temperature must be > 0 (1 samples the model as trained, lower is more "
                        f"conservative); got {temperature}")
    if top_k is not None and top_k < 1:
        raise UserError(f"--top_k must be at least 1 (or left unset to sample among all characters); got {top_k}")


def check_device(device: str) -> None:
    """A device this machine has, or a clear error."""
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise UserError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, mps)") from err
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                        "sample with --device cpu or name a device it has")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {device}: this machine has no MPS device; sample with --device cpu")


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
    check_arguments(length, temperature, top_k)
    check_device(device)
    lm = load_checkpoint(ckpt, map_location=device).eval()
    vocab = getattr(lm, "vocab", None)
    if vocab is None:
        raise UserError(f"{ckpt} holds a model of the {lm.task.name!r} task, which has no text to sample")
    text = vocab.from_display(prime)
    bad = vocab.unknown(text)
    if bad and not vocab.unknown(text.lower()):  # a lower-case vocabulary (PTB): read capitals as lower case
        print(f"note: the vocabulary has no capitals; the prime is read as {render(text.lower())!r}", file=sys.stderr)
        text, bad = text.lower(), []
    if top_k is not None and top_k > len(vocab):
        raise UserError(f"--top_k {top_k} exceeds the vocabulary ({len(vocab)} characters); give at most {len(vocab)}")
    if bad:
        raise UserError(
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

    given = sys.argv[1:] if args is None else list(args)
    own = [a for a in given if a != "--debug"]
    print(reported(lambda: auto_cli(sample, args=own, as_positional=False, prog=PROG, parser_class=FunctionParser,
                                    formatter_class=QuotedDefaults, debug=debugging(given)), PROG, given))


if __name__ == "__main__":
    main()
