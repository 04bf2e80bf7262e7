"""What the tests share: paths, tiny networks and engines, gradient snapshots, an oracle M, a quiet
Lightning trainer, small systems, and running the command lines. Fixtures are in conftest.py."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from seqdni.data import DigitStreams
from seqdni.data import ptb as ptb_files
from seqdni.dni import BoundaryOptions, detach_state, flatten_state, unflatten_state
from seqdni.engines import DNIOptions, FlatEngine, MessageOptions, UnrollOut
from seqdni.nets import CharLSTM, HierLSTM
from seqdni.training import HierLM, SeqModel, TwoTimescale

ROOT = Path(__file__).resolve().parents[1]
PTB_DIR = Path(os.environ.get("SEQDNI_DATA_DIR") or ROOT.parent / "shared" / "data" / "ptb")

# A tiny character corpus for data modules that read raw text files.
TEXT = (
    "the cat sat on the mat.\nthe dog sat on the log.\na cat and a dog met on a mat.\n"
    "the dog saw the cat.\nthe cat saw the dog.\n"
)

# Engine-level tests of the character networks: vocabulary, streams, steps per unroll.
V, B, T = 7, 3, 4


# ---- gradients and stand-ins for M -------------------------------------------------------------
def grads(params) -> list[torch.Tensor]:
    """A copy of each parameter's gradient (zeros where there is none)."""
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def randomize(module: nn.Module, seed: int = 5, std: float = 0.05) -> None:
    """Every parameter drawn afresh, N(0, std²): an M that no longer predicts zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


class Oracle(nn.Module):
    """Stands in for M: the given answer for an input it knows, zero otherwise."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.pairs = pairs

    def forward(self, flat, cond=None):
        for inp, out in self.pairs:
            if inp.shape == flat.shape and torch.allclose(inp, flat, rtol=0, atol=1e-12):
                return out
        return torch.zeros_like(flat)


def group_params(engine, name: str) -> list[nn.Parameter]:
    """The parameters of an engine's group `name` (none if it has no such group)."""
    return [p for g in engine.param_groups() if g.name == name for p in g.params]


# ---- tiny networks and engines (float64) -------------------------------------------------------
def char_lstm(layers: int = 2, seed: int = 0) -> CharLSTM:
    torch.manual_seed(seed)
    return CharLSTM(V, embed_dim=5, hidden_size=6, num_layers=layers).double()


def hier_lstm(tick: int = 2, seed: int = 0) -> HierLSTM:
    torch.manual_seed(seed)
    return HierLSTM(V, embed_dim=5, hidden_size=6, tick=tick, upper_hidden=4, message_size=3).double()


def random_ids(steps: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """B streams of random ids: inputs and next-id targets, each (B, steps)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, steps + 1), generator=g)
    return ids[:, :-1], ids[:, 1:]


def random_state(net: nn.Module, seed: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(t.shape, generator=g, dtype=torch.float64) * 0.5 for t in net.init_state(B))


def flat_engine(net: CharLSTM, dni: DNIOptions | None) -> FlatEngine:
    """A flat engine of T-step unrolls over a copy of `net`."""
    return FlatEngine(copy.deepcopy(net), T, dni).double()


def unroll_all(engine, x, y, span: int, state=None, zero_between: bool = False, ahead: int = 0) -> list[UnrollOut]:
    """The engine's unrolls of `span` columns over x, carrying the state (no optimiser steps, so the
    gradients add up unless `zero_between`); optionally from a given `state`. With `ahead`, each unroll
    also gets that many targets past its own, as the training module gives them (the last `ahead`
    columns of x and y only supply those)."""
    carry, outs = engine.initial_carry(x.size(0), x.device), []
    if state is not None:
        carry.state = state
    for i in range((x.size(1) - ahead) // span):
        if zero_between:
            engine.zero_grad(set_to_none=True)
        out = engine.unroll(x[:, i * span : (i + 1) * span], y[:, i * span : (i + 1) * span + ahead], carry)
        carry = out.carry
        outs.append(out)
    return outs


def local_and_future(engine: FlatEngine, outs: list[UnrollOut], x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """For the second unroll of `unroll_all(engine, x, y, T)`, by autograd alone: ∂ℓ/∂s_t (the unroll's
    mean loss) and Jᵀ M(s_{t+T}), J = ∂s_{t+T}/∂s_t. A bootstrapped target is B·T·local + γ·future."""
    s_t = detach_state(outs[0].carry.state, requires_grad=True)
    logits, s_end = engine.net(x[:, T:], s_t)
    loss = F.cross_entropy(logits.reshape(-1, V), y[:, T:].reshape(-1))
    local = flatten_state(torch.autograd.grad(loss, s_t, retain_graph=True))
    m = engine.boundary.sg(flatten_state(s_end)).detach()
    return local, flatten_state(torch.autograd.grad(s_end, s_t, grad_outputs=unflatten_state(m, s_end)))


# ---- Lightning ---------------------------------------------------------------------------------
def trainer(tmp_path, **kw) -> L.Trainer:
    """A quiet CPU trainer that trains without validating unless `limit_val_batches` says otherwise."""
    args = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=str(tmp_path), max_epochs=100)
    args.update(kw)
    return L.Trainer(**args)


class Losses(L.Callback):
    """A logged training metric after every batch (and the curriculum level, for data that has one)."""

    def __init__(self, key: str = "train/bpc"):
        self.key, self.losses, self.levels = key, [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(trainer.callback_metrics[self.key].item())
        self.levels.append(getattr(trainer.datamodule, "level", None))


class Validations(L.Callback):
    """The optimiser step and validation BPC of each validation of a fit."""

    def __init__(self):
        self.seen: list[tuple[int, float]] = []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.seen.append((trainer.global_step, trainer.callback_metrics["val/bpc"].item()))


def seq_model(dm, seed: int = 0, **kw) -> SeqModel:
    L.seed_everything(seed, verbose=False)
    args = dict(task=dm.task, window=dm.window, unroll=4, embed_dim=8, hidden_size=16, lr=1e-2, clip=0.5)
    args.update(kw)
    return SeqModel(**args)


def hier_lm(dm, seed: int = 0, **kw) -> HierLM:
    L.seed_everything(seed, verbose=False)
    args = dict(task=dm.task, window=dm.window, unroll=4, tick=2, upper_unroll=4, embed_dim=8, hidden_size=16,
                upper_hidden=8, message_size=4, lr=1e-2, clip=0.5, message="dni", dni=BoundaryOptions(scale=1.0))
    args.update(kw)
    return HierLM(**args)


def digit_data(**kw) -> DigitStreams:
    args = dict(period=4, batch_size=8, window=32, train_length=2048, eval_batch_size=16, eval_length=256,
                eval_window=64, seed=0)
    args.update(kw)
    return DigitStreams(**args)


def two_timescale(dm: DigitStreams, regime: str, seed: int = 0, **kw) -> TwoTimescale:
    L.seed_everything(seed, verbose=False)
    args = dict(task=dm.task, window=dm.window, period=dm.period, regime=regime, embed_dim=8, hidden_a=16,
                hidden_b=16, message_size=8, lr=1e-2, dni=MessageOptions(scale=1.0) if regime == "dni" else None)
    args.update(kw)
    return TwoTimescale(**args)


# ---- files and command lines -------------------------------------------------------------------
SPLITS = ("train", "valid", "test")
# Small PTB-named files, in the character and the word format, and the streams both must give.
CHAR_FILES = {
    "train": " a b _ c d \n e f ",
    "valid": " a \n\n   \n b _ a \n",
    "test": "\n f _ e _ d \n",
}
WORD_FILES = {
    "train": "ab cd\nef\n",
    "valid": "  a  \n\n \nb   a\n",
    "test": "\nf e d",
}
STREAMS = {"train": "ab_cd\nef\n", "valid": "a\nb_a\n", "test": "f_e_d\n"}


def decoded(dm) -> dict[str, str]:
    """A character data module's three splits, decoded."""
    return {s: dm.vocab.decode(dm.ids[s].tolist()) for s in SPLITS}


def write_ptb(d: Path, kind: str, contents: dict[str, str]) -> Path:
    """Write a complete set of PTB-named files ('char' or 'word') into `d`."""
    d.mkdir(parents=True, exist_ok=True)
    names = ptb_files.char_files(d) if kind == "char" else ptb_files.word_files(d)
    for split, text in contents.items():
        names[split].write_text(text, encoding="utf-8")
    return d


def data_args(text_files: dict[str, str], tmp_path: Path) -> list[str]:
    """CLI arguments that point a character data module at the `text_files` fixture."""
    return [f"--data.train_files=[{text_files['train']}]", f"--data.val_files=[{text_files['valid']}]",
            f"--data.test_files=[{text_files['test']}]", f"--data.cache_dir={tmp_path / 'cache'}",
            "--data.download=false"]


def run_python(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """`python ARGS` in a fresh process that imports this checkout, one thread."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def load_script(name: str) -> ModuleType:
    """`scripts/NAME.py` imported as a module, so a test can call its functions."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` (`seqdni.train`, `seqdni.sample`)."""
    return run_python(["-m", module, *args], cwd)


def weighted_ridge(fs: list[torch.Tensor], gs: list[torch.Tensor], rho: float, ridge: float) -> torch.Tensor:
    """[W b]ᵀ of the exponentially weighted ridge regression, by the normal equations written out: the
    rows of update k of K weigh (1 - ρ) ρ^(K-1-k) / rows, a column of ones appended for b."""
    K, ff, fg = len(fs), 0.0, 0.0
    for k, (f, g) in enumerate(zip(fs, gs)):
        f1 = torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype)], 1).double()
        w = (1 - rho) * rho ** (K - 1 - k) / len(f)
        ff, fg = ff + w * f1.T @ f1, fg + w * f1.T @ g.double()
    return torch.linalg.solve(ff + ridge * ff.diagonal().mean() * torch.eye(len(ff), dtype=ff.dtype), fg)
