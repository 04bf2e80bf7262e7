"""Where a run writes: its logger's folder, under `trainer.default_root_dir`, and the same folder again
when it is resumed.

- A relative logger `save_dir` (the shipped configs say `runs/...`) lies under
  `--trainer.default_root_dir` when that is given, else under the directory the command runs in.
- `--ckpt_path <run>/checkpoints/latest.ckpt` continues in `<run>` (its TensorBoard files,
  checkpoints and config), unless a logger version is given.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from seqdni.errors import UserError


def run_folder(ckpt_path: str) -> Path | None:
    """The run folder `<save_dir>/<name>/version_N` a checkpoint was written in, if it lies in one."""
    p = Path(ckpt_path).resolve()
    run = p.parent.parent
    return run if p.parent.name == "checkpoints" and (run / "config.yaml").is_file() else None


def _loggers(trainer_cfg: Any) -> list[Any]:
    logger = trainer_cfg.get("logger")
    loggers = logger if isinstance(logger, list) else [logger]
    return [lg for lg in loggers if hasattr(lg, "get") and lg.get("init_args") is not None]


def place_logger(trainer_cfg: Any, ckpt_path: str | None) -> None:
    """Rewrite the logger settings of a parsed config in place (see the module's docstring)."""
    root = trainer_cfg.get("default_root_dir")
    run = run_folder(ckpt_path) if ckpt_path else None
    for logger in _loggers(trainer_cfg):
        args = logger.init_args
        save_dir = args.get("save_dir")
        if root and save_dir is not None and not Path(save_dir).is_absolute():
            args.save_dir = str(Path(root) / save_dir)
        if run is not None and "version" in args and args.get("version") is None:
            args.version = run.name
            here = Path(args.get("save_dir") or ".") / (args.get("name") or "")
            if here.resolve() != run.parent:  # keep the paths as configured when they lead there already
                args.save_dir, args.name = str(run.parent.parent), run.parent.name


def check_writable(folder: str | os.PathLike) -> None:
    """The run folder can be created and written, or a clear error that names it."""
    path = Path(folder).resolve()
    probe = path / f".seqdni-write-check-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        why = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err)).lower()
        raise UserError(
            f"cannot write the run folder {path} ({why}); choose a writable folder with "
            "--trainer.default_root_dir DIR (relative logger folders lie under it) or "
            "--trainer.logger.init_args.save_dir DIR") from err
