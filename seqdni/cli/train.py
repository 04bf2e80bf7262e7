"""`python -m seqdni.train --config configs/ptb-cpu/bptt8.yaml [--overrides]`.

A thin LightningCLI: the typed `__init__` arguments of the model and data classes named in
the config (`model.class_path`, `data.class_path`) are the YAML keys and the `--help` text.
The `fit` subcommand is implied when none is given. A config may name the config it extends
(`base: ../ptb-cpu.yaml`, relative to the file); it then holds only what differs, and
`--config variant.yaml` reads as `--config <base> --config <the variant's own keys>`.

`--config configs/...` names a shipped config (installed with the package) when no such file
exists where the command runs. A relative logger `save_dir` lies under `--trainer.default_root_dir`
when that is given. `--ckpt_path` resumes the checkpoint's run in its own folder, with the
checks of `seqdni.cli.resume`. Mistakes end in one paragraph and exit status 1 (`seqdni.errors`; a bad
argument: `seqdni.cli.parser`).
"""

from __future__ import annotations

import re
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import lightning as L
import yaml
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from seqdni.cli import folders, resume
from seqdni.cli.parser import SHIPPED, Parser
from seqdni.errors import UserError, debugging, reported
from seqdni.training import checkpointing
from seqdni.training.checks import check_vocabulary, saved_symbols

SUBCOMMANDS = ("fit", "validate", "test", "predict")
PROG = "python -m seqdni.train"
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")


class SeqDNICLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Typed once, in the data module: what the task is and the batch window.
        parser.link_arguments("data.task", "model.init_args.task", compute_fn=asdict, apply_on="instantiate")
        parser.link_arguments("data.window", "model.init_args.window", apply_on="instantiate")

    def settings(self) -> dict:
        """The subcommand's configuration as plain data (what a checkpoint stores and a resume compares)."""
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_link_targets=False, skip_none=False))
        sub = self.config.get("subcommand")
        return dumped[sub] if sub else dumped

    def _parse_ckpt_path(self) -> None:
        """Replaces LightningCLI's, which would silently take the model settings from the checkpoint:
        a resume must agree with the settings given (`resume.check_settings`)."""
        self.resumed = None
        sub = self.config.get("subcommand")
        path = self.config[sub].get("ckpt_path") if sub else None
        if path and str(path) not in LIGHTNING_CKPT_NAMES:
            self.resumed = checkpointing.read(path, "--ckpt_path")
            resume.check_settings(self.resumed, self.settings(), str(path))

    def before_instantiate_classes(self) -> None:
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else self.config
        limit = cfg.trainer.get("max_time")
        if isinstance(limit, str) and not re.fullmatch(r"\d+:\d\d:\d\d:\d\d", limit.strip()):
            raise UserError(f"trainer.max_time is days:hours:minutes:seconds, DD:HH:MM:SS (00:12:00:00 is 12 hours); "
                            f"got {limit!r}")
        folders.place_logger(cfg.trainer, cfg.get("ckpt_path"))

    def after_instantiate_classes(self) -> None:
        if hasattr(self.model, "run_config"):
            self.model.run_config = self.settings()
        if not any(isinstance(c, Timer) for c in self.trainer.callbacks):
            # no max_time: a Timer without a limit still keeps the training time in checkpoints, which a
            # later max_time counts (and a checkpoint's Timer state then always has its callback)
            self.trainer.callbacks.append(Timer(duration=None, verbose=False))

    def before_fit(self) -> None:
        """Say what each stopping rule leaves (a resume counts what the checkpoint trained); stop when
        nothing can be trained or the run folder cannot be written."""
        t = self.trainer
        given = self.config[self.config.subcommand].get("ckpt_path")
        if given == "last" and not any(getattr(c, "save_last", False) for c in t.checkpoint_callbacks):
            raise UserError("--ckpt_path last names Lightning's last.ckpt, which no checkpoint callback of this run "
                            "writes (Lightning would train from scratch): a run's resume point is <run folder>/"
                            "checkpoints/latest.ckpt; give that file's path")
        if self.resumed:  # before the run's config.yaml is rewritten with these settings
            check_vocabulary(saved_symbols(self.resumed), list(self.model.task.symbols), given)
        timer = next(c for c in t.callbacks if isinstance(c, Timer))
        left = resume.budgets(self.resumed, t.max_steps, t.max_epochs, timer._duration)
        folders.check_writable(t.log_dir or t.default_root_dir)
        if self.resumed:  # the run's own folder holds its checkpoints: that is the point
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        start = "Resuming at optimiser step {global_step}".format(**self.resumed) if self.resumed else "Training"
        rank_zero_info(f"{start}: " + ("; ".join(left) if left else "no stopping rule is set") + ".")

    def after_fit(self) -> None:
        """Test at the best validation checkpoint (or the final weights without one)."""
        if self.trainer.interrupted or not getattr(self.datamodule, "has_test", True):
            return
        best = self.trainer.checkpoint_callback
        # the path itself: "best" makes Lightning warn that LatestCheckpoint is a second ModelCheckpoint
        ckpt = getattr(best, "best_model_path", "") or None  # (LatestCheckpoint, if first, keeps no best)
        if ckpt is None:  # the final weights: logged at the final step, not at a checkpoint loaded to resume
            self.model.loaded_step = None
        if ckpt and not get_filesystem(ckpt).isfile(ckpt):
            run = self.trainer.log_dir or "<run>"
            raise UserError(
                f"training finished, but the test split was not scored: the run's best checkpoint, "
                f"{best.best_model_path}, is not there (deleted, or the run was moved away from the folder "
                f"that wrote it). Its checkpoints are in {best.dirpath}; score one of them with `{PROG} test "
                f"--config {run}/config.yaml --ckpt_path <file>`")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)


def config_chain(path: str | Path) -> list[str]:
    """A config file as the `--config` values it stands for: its bases first (paths), then its own keys."""
    path = Path(path)
    try:
        with path.open() as f:
            own = yaml.safe_load(f)
    except OSError:
        return [str(path)]  # not a readable file: the parser reports it
    except yaml.YAMLError as err:
        raise UserError(f"--config {path} is not valid YAML: {err}") from err
    if not isinstance(own, dict) or "base" not in own:
        return [str(path)]
    base = path.parent / own.pop("base")
    if not base.is_file():
        raise UserError(f"--config {path}: its base {base} is not a file; fix `base:` (a path relative to {path})")
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
    """Every `--config FILE` (or `--config=FILE`, or its alias `-c`) replaced by its chain (`config_chain`),
    and the configs put first (after a subcommand), in their order: a setting given on the command line
    wins over the configs wherever it stands (a config read after it would silently replace it; a
    run's config.yaml, for instance, holds `ckpt_path: null`)."""
    head = args[:1] if args and args[0] in SUBCOMMANDS else []
    configs, rest, i = [], [], len(head)
    while i < len(args):
        a = args[i]
        if a in ("--config", "-c") and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif a.startswith(("--config=", "-c=")):
            value, i = a.split("=", 1)[1], i + 1
        else:
            rest.append(a)
            i += 1
            continue
        value = shipped(value)
        for part in config_chain(value) if Path(value).is_file() else [value]:
            configs += ["--config", part]
    return head + configs + rest


def shipped(value: str) -> str:
    """A `--config` path as given, or the shipped config it names when no such file exists here."""
    p = Path(value)
    if p.is_file() or p.is_absolute() or not p.parts or p.parts[0] != "configs":
        return value
    packaged = SHIPPED.joinpath(*p.parts[1:])
    return str(packaged) if packaged.is_file() else value


def with_fit(args: list[str]) -> list[str]:
    """`fit` unless a subcommand is named; `--help` alone is `fit --help`, which lists every key."""
    return args if args and args[0] in SUBCOMMANDS else ["fit", *args]


def _build(args: list[str] | None, debug: bool = False, **kw) -> SeqDNICLI:
    return SeqDNICLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                     args=args, save_config_kwargs={"overwrite": True}, parser_class=Parser,
                     parser_kwargs={"prog": PROG, "debug": debug, **{sub: {"debug": debug} for sub in SUBCOMMANDS}},
                     **kw)


def cli(args: list[str], **kw) -> SeqDNICLI:
    """The CLI over `args` (`run=False` builds `.model`, `.datamodule`, `.trainer` without running).
    The caller's own command line (a script's options) is not the CLI's, and Lightning's warning that it
    exists is not shown."""
    with warnings.catch_warnings():  # given `args`, the CLI reads nothing of the caller's own command line
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return _build(expand_configs(list(args)), **kw)


def needs_config(args: list[str]) -> None:
    """`--ckpt_path` alone: the settings come from a config (the run's own is saved beside its checkpoints)."""
    ckpt = next((a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else "")
                 for i, a in enumerate(args) if a.split("=")[0] == "--ckpt_path"), None)
    given = any(a.split("=")[0] in ("--config", "-c") or a.startswith(("--model", "--help", "-h")) for a in args)
    if ckpt is None or given:
        return
    own = Path(ckpt).parent.parent / "config.yaml"
    raise UserError(f"--ckpt_path {ckpt} needs the run's settings as well: add --config "
                    f"{own if own.is_file() else '<run folder>/config.yaml'} (the config the run saved beside its "
                    "checkpoints), and any stopping rule to change, e.g. --trainer.max_steps")


def main(args: list[str] | None = None) -> SeqDNICLI:
    """The command line: `args`, or sys.argv when None. A user error ends in one paragraph, exit 1."""
    given = sys.argv[1:] if args is None else list(args)
    own, debug = with_fit([a for a in given if a != "--debug"]), debugging(given)

    def build() -> SeqDNICLI:
        needs_config(own)
        if args is None:  # from the command line: the parser reads sys.argv itself
            sys.argv[1:] = expand_configs(own)
            return _build(None, debug=debug)
        return cli(own, debug=debug)

    return reported(build, PROG, given)
