"""Rebuilding the runs recorded in tests/fixtures/legacy (golden.json) with today's code."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from seqdni.cli.train import cli
from seqdni.training.checkpointing import _upgrade_keys

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"
GOLDEN = json.loads((LEGACY / "golden.json").read_text())
# The flat-module layout's class paths, as they appear in the recorded configs and arguments.
RENAMES = {
    "seqdni.lit.SeqModel": "seqdni.training.SeqModel",
    "seqdni.hier.HierLM": "seqdni.training.HierLM",
    "seqdni.twotimescale.TwoTimescale": "seqdni.training.TwoTimescale",
    "seqdni.callbacks.": "seqdni.training.",
    "seqdni.copy.Curriculum": "seqdni.training.Curriculum",
    "seqdni.copy.": "seqdni.data.",
    "seqdni.digits.": "seqdni.data.",
}
SKIP = ("train/chars_per_sec", "train/cuda_peak_mib")


def renamed(text: str) -> str:
    for old, new in RENAMES.items():
        text = text.replace(old, new)
    return text


def legacy_args(args: list[str], tmp: Path) -> list[str]:
    """The recorded arguments with their placeholders filled and class paths renamed; the recorded
    configs are copied (renamed) under `tmp`."""
    configs = tmp / "legacy-configs"
    for src in (LEGACY / "configs").rglob("*.yaml"):
        dst = configs / src.relative_to(LEGACY / "configs")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(renamed(src.read_text()))
    fill = {"{fixtures}/configs": str(configs), "{fixtures}": str(LEGACY), "{tmp}": str(tmp)}
    out = []
    for a in args:
        for key, value in fill.items():
            a = a.replace(key, value)
        out.append(renamed(a))
    return out


class Record(L.Callback):
    """Every training batch's logged `train/*` and `sg/*` metrics."""

    def __init__(self):
        self.batches: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches.append({k: float(v) for k, v in trainer.callback_metrics.items()
                             if k.startswith(("train/", "sg/")) and k not in SKIP})


def run(args: list[str], tmp: Path, ckpt_path: str | None = None):
    """Fit the recorded run; its per-batch metrics and the module."""
    built = cli(legacy_args(args, tmp), run=False)
    rec = Record()
    built.trainer.callbacks.append(rec)
    built.trainer.fit(built.model, datamodule=built.datamodule, ckpt_path=ckpt_path)
    return rec.batches, built


def param_sums(module: torch.nn.Module) -> dict[str, dict[str, float]]:
    return {k: {"sum": v.double().sum().item(), "abs_sum": v.double().abs().sum().item()}
            for k, v in module.state_dict().items()}


def golden_params(recorded: dict, flat: bool) -> dict:
    """The recorded parameter sums under today's names (the network once, under `engine.net`)."""
    return _upgrade_keys(recorded, flat)


def with_old_init_order(monkeypatch) -> None:
    """The flat-module layout built the hierarchical and two-timescale networks after a character
    LSTM that its `SeqModel` parent made and threw away, so their initial weights came later in the
    random stream. Draw that network again before each, so the runs start from the recorded weights.
    Every network starts as it then did, from PyTorch's initialisation (`init_range` None)."""
    from seqdni.nets import CharLSTM
    from seqdni.training import systems

    def hier(vocab, embed_dim, hidden_size, num_layers, dropout, *rest):
        CharLSTM(vocab, embed_dim, hidden_size, num_layers, dropout, init_range=None)
        return HierLSTM(vocab, embed_dim, hidden_size, num_layers, dropout, *rest[:3], init_range=None)

    def two(period, embed_dim, hidden_a, hidden_b, message_size):
        CharLSTM(10, embed_dim, hidden_a, init_range=None)
        return TwoNets(period, embed_dim, hidden_a, hidden_b, message_size)

    def flat(*args, **kwargs):
        return build_network(*args[:6], init_range=None)

    HierLSTM, TwoNets, build_network = systems.HierLSTM, systems.TwoNets, systems.build_network
    monkeypatch.setattr(systems, "HierLSTM", hier)
    monkeypatch.setattr(systems, "TwoNets", two)
    monkeypatch.setattr(systems, "build_network", flat)
