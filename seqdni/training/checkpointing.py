"""What seqdni adds to a Lightning checkpoint, and reading the checkpoints of earlier versions.

`checkpoint["seqdni"]` holds the format number, the class of the LightningModule (so
`seqdni.sample` rebuilds the right system) and every rank's carry (`seqdni.engines.Carry`).

Formats: 1 (one rank's carry), 2 (every rank's carry), 3 (this layout: the network lives
once, under `engine.net`). Formats 1 and 2 were written by the flat-module layout
(`seqdni.lit.SeqModel`, `seqdni.hier.HierLM`, `seqdni.twotimescale.TwoTimescale`);
`upgrade` rewrites them in memory to format 3.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from seqdni.errors import MissingInput, UserError

FORMAT = 3

CLASS_PATHS = {  # the flat-module layout's LightningModules
    "seqdni.lit.SeqModel": "seqdni.training.systems.SeqModel",
    "seqdni.hier.HierLM": "seqdni.training.systems.HierLM",
    "seqdni.twotimescale.TwoTimescale": "seqdni.training.systems.TwoTimescale",
}


def class_path(checkpoint: dict) -> str | None:
    """The LightningModule class a checkpoint was written by, in today's layout."""
    name = (checkpoint.get("seqdni") or {}).get("class_path")
    return CLASS_PATHS.get(name, name)


def _upgrade_keys(state: dict, flat: bool) -> dict:
    """Format 1-2 parameter names: the network was held twice (`model.` and `engine.model.` or
    `engine.nets.`), and the flat engine's M sat at `engine.sg.`."""
    out = {}
    for key, value in state.items():
        if key.startswith("model."):
            continue
        for old in ("engine.model.", "engine.nets."):
            if key.startswith(old):
                key = "engine.net." + key[len(old):]
        if flat and key.startswith("engine.sg."):
            key = "engine.boundary.sg." + key[len("engine.sg."):]
        out[key] = value
    return out


def _upgrade_carry(carry: dict | None) -> dict | None:
    """Format 1: one rank's carry, tensors unwrapped -> lists of one rank's tensors."""
    if carry is None:
        return None
    kept = carry["kept"]
    return {"state": [[t] for t in carry["state"]], "boundary": carry["boundary"],
            "kept": None if kept is None else {"state": [[t] for t in kept["state"]], "x": [kept["x"]]}}


def _upgrade_hparams(hparams: dict, new_class: str) -> None:
    """The module's class path, and `dni` with only the fields today's class of options has (earlier
    versions stored every engine's fields; those a system did not use were at their defaults)."""
    from seqdni.training.systems import as_options, system_options

    if "_class_path" in hparams:
        hparams["_class_path"] = CLASS_PATHS.get(hparams["_class_path"], hparams["_class_path"])
    options, owner = system_options(new_class)
    if isinstance(hparams.get("dni"), dict) and options is not None:
        hparams["dni"] = asdict(as_options(options, hparams["dni"], owner))


def upgrade(checkpoint: dict) -> dict:
    """Rewrite an earlier format in place to format 3 (a format-3 checkpoint is left as it is)."""
    meta = checkpoint.setdefault("seqdni", {}) or {}
    checkpoint["seqdni"] = meta
    fmt = meta.get("format", 1)
    if fmt >= FORMAT:
        return checkpoint
    if "state_dict" in checkpoint:
        flat = meta.get("class_path", "seqdni.lit.SeqModel") in ("seqdni.lit.SeqModel", None)
        checkpoint["state_dict"] = _upgrade_keys(checkpoint["state_dict"], flat)
    if fmt == 1:
        meta["carry"] = _upgrade_carry(meta.get("carry"))
    old_class = meta.get("class_path", "seqdni.lit.SeqModel")
    meta["class_path"] = CLASS_PATHS.get(old_class, old_class)
    if isinstance(checkpoint.get("hyper_parameters"), dict):
        _upgrade_hparams(checkpoint["hyper_parameters"], meta["class_path"])
    meta["format"] = FORMAT
    return checkpoint


def rng_state(device: torch.device) -> dict:
    """torch's global random state (what dropout draws from), which Lightning's checkpoints do not keep:
    the CPU generator's, and the device's on a GPU. Under DDP every rank was seeded alike and draws
    alike, so rank 0's state is every rank's."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict | None, device: torch.device) -> None:
    """Restore what `rng_state` kept (checkpoints of earlier versions kept nothing: left as seeded)."""
    if state is None:
        return
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def follow_run_folder(checkpoint: dict, callbacks: list, loaded: str | None) -> None:
    """Point the `ModelCheckpoint` states of a checkpoint `loaded` from a run's own checkpoint folder at
    that folder as the run now names it. The states hold their paths as written: relative to the
    directory the command ran in, and with the folder's old name if it was moved since. Where those
    strings differ from today's, Lightning would drop the best score (the next validation would become
    the best, whatever its BPC) and keep a best path that leads elsewhere or nowhere (the test at the
    end would score another file, or none). A checkpoint loaded from anywhere but the callback's folder
    (a new run started from another run's checkpoint) is left to Lightning's own rule."""
    saved = checkpoint.get("callbacks") or {}
    for cb in callbacks:
        state = saved.get(cb.state_key) if isinstance(cb, ModelCheckpoint) else None
        if not state or cb.dirpath is None or loaded is None or state.get("dirpath") == cb.dirpath:
            continue
        if _is_remote(str(loaded)) or Path(loaded).resolve().parent != Path(cb.dirpath).resolve():
            continue
        here = Path(cb.dirpath)
        state.update(dirpath=cb.dirpath, best_model_path=_moved(state.get("best_model_path"), here),
                     kth_best_model_path=_moved(state.get("kth_best_model_path"), here),
                     last_model_path=_moved(state.get("last_model_path"), here),
                     best_k_models={_moved(k, here): v for k, v in (state.get("best_k_models") or {}).items()})


def keep_given_patience(checkpoint: dict, callbacks: list) -> list[str]:
    """Give each `EarlyStopping` of a resumed run the patience its command gives: Lightning would
    restore the checkpoint's, silently undoing a stopping rule changed on resume. Returns one line
    per patience changed, for the log."""
    saved, changed = checkpoint.get("callbacks") or {}, []
    for cb in callbacks:
        state = saved.get(cb.state_key) if isinstance(cb, EarlyStopping) else None
        if state and state.get("patience") != cb.patience:
            changed.append(f"EarlyStopping on {cb.monitor}: patience {cb.patience} as given "
                           f"(the checkpoint's run had {state.get('patience')})")
            state["patience"] = cb.patience
    return changed


def _moved(path: str | None, folder: Path) -> str | None:
    """A checkpoint file's path in `folder` (an empty or missing path stays as it is)."""
    return str(folder / Path(path).name) if path else path


def _is_remote(path: str) -> bool:
    return "://" in path


class CheckpointError(UserError):
    """A file that cannot be used as a seqdni checkpoint."""


def read(path: str | Path, what: str = "checkpoint") -> dict:
    """A seqdni checkpoint as a dict (weights only, on the CPU: no code from the file runs), upgraded
    to today's format in memory, with one clear error for a missing, truncated or foreign file."""
    p = Path(path)
    if p.is_dir():
        inside = sorted(p.rglob("*.ckpt"))
        raise MissingInput(f"{what} {p} is a folder; give one of the .ckpt files seqdni.train wrote"
                           + (f", such as {inside[-1]}" if inside else " (this folder holds none)"))
    if not p.is_file():
        raise MissingInput(f"{what} not found: {p} (give the path of a .ckpt file written by seqdni.train)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever torch.load trips on, the file is no checkpoint
        raise CheckpointError(
            f"{p} cannot be read as a checkpoint: it is empty, truncated or corrupt, not a file that torch.save "
            f"wrote, or it holds objects that a weights-only load refuses ({type(err).__name__}). Give a .ckpt "
            "file written by seqdni.train."
        ) from err
    if not isinstance(ckpt, dict) or "seqdni" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{p} is not a seqdni checkpoint (it lacks the 'seqdni' and hyperparameter sections)")
    return upgrade(ckpt)


class StagedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, staging each file as `<file>.tmp` beside it and renaming it:
    a crash mid-write leaves the previous file whole and nothing outside the run folder (Lightning's
    own writer stages in the system temp folder, and its move may cross file systems)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or _is_remote(str(path)):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def stage_checkpoints(strategy) -> None:
    """Make a strategy write checkpoints with `StagedCheckpointIO` (unless it was given another writer)."""
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = StagedCheckpointIO()
