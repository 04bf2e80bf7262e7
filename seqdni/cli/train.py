"""`python -m seqdni.train --config configs/ptb-cpu/bptt8.yaml [--overrides]`.

A thin LightningCLI: the typed `__init__` arguments of the model and data classes named in
the config (`model.class_path`, `data.class_path`) are the YAML keys and the `--help` text.
The `fit` subcommand is implied when none is given. A config may name the config it extends
(`base: ../ptb-cpu.yaml`, relative to the file); it then holds only what differs, and
`--config variant.yaml` reads as `--config <base> --config <the variant's own keys>`.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.cli import LightningCLI

SUBCOMMANDS = ("fit", "validate", "test", "predict")
PROG = "python -m seqdni.train"


class SeqDNICLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Typed once, in the data module: what the task is and the batch window.
        parser.link_arguments("data.task", "model.init_args.task", compute_fn=asdict, apply_on="instantiate")
        parser.link_arguments("data.window", "model.init_args.window", apply_on="instantiate")

    def after_fit(self) -> None:
        """Test at the best validation checkpoint (or the final weights without one)."""
        if self.trainer.interrupted or not getattr(self.datamodule, "has_test", True):
            return
        best = self.trainer.checkpoint_callback
        ckpt = "best" if best is not None and getattr(best, "best_model_path", "") else None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)


def config_chain(path: str | Path) -> list[str]:
    """A config file as the `--config` values it stands for: its bases first (paths), then its own keys."""
    path = Path(path)
    try:
        own = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return [str(path)]  # not a readable YAML file: LightningCLI reports it
    if not isinstance(own, dict) or "base" not in own:
        return [str(path)]
    base = path.parent / own.pop("base")
    return config_chain(base) + ([yaml.safe_dump(own, sort_keys=False)] if own else [])


def _merge(base: dict, own: dict) -> dict:
    out = dict(base)
    for key, value in own.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(path: str | Path) -> dict:
    """A config file with its bases merged in (mappings merge key by key, anything else replaces): the
    settings it stands for, for scripts that read them (`--print_config` shows every default too)."""
    path = Path(path)
    own = yaml.safe_load(path.read_text()) or {}
    return _merge(load_config(path.parent / own.pop("base")), own) if "base" in own else own


def expand_configs(args: list[str]) -> list[str]:
    """Every `--config FILE` (or `--config=FILE`) replaced by its chain (`config_chain`)."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a == "--config" and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif a.startswith("--config="):
            value, i = a.split("=", 1)[1], i + 1
        else:
            out.append(a)
            i += 1
            continue
        for part in config_chain(value) if Path(value).is_file() else [value]:
            out += ["--config", part]
    return out


def with_fit(args: list[str]) -> list[str]:
    """`fit` unless a subcommand is named; `--help` alone is `fit --help`, which lists every key."""
    return args if args and args[0] in SUBCOMMANDS else ["fit", *args]


def _build(args: list[str] | None, **kw) -> SeqDNICLI:
    return SeqDNICLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                     args=args, save_config_kwargs={"overwrite": True}, parser_kwargs={"prog": PROG}, **kw)


def cli(args: list[str], **kw) -> SeqDNICLI:
    """The CLI over `args` (`run=False` builds `.model`, `.datamodule`, `.trainer` without running)."""
    return _build(expand_configs(list(args)), **kw)


def main(args: list[str] | None = None) -> SeqDNICLI:
    if args is None:  # from the command line: the parser reads sys.argv itself
        sys.argv[1:] = expand_configs(with_fit(sys.argv[1:]))
        return _build(None)
    return cli(with_fit(list(args)))
