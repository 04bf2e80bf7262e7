"""Every shipped config under configs/ parses and instantiates as `python -m seqdni.train` builds it
(`seqdni.cli.train.cli`, `base:` inheritance resolved), and is what its file name says.

What the files share is not checked here: a variant names its `base:` and holds only its differences.
"""

from __future__ import annotations

import re
import sys

import pytest
import torch
from helpers import CHAR_FILES, ROOT, write_ptb
from lightning.pytorch.callbacks import EarlyStopping

from seqdni.cli.train import cli
from seqdni.data import CopyDataModule, ptb
from seqdni.training import Curriculum, HierLM, LayerModel, SeqModel, TrainingClock, TwoTimescale

CONFIG_DIR = ROOT / "configs"
# The grids the scripts run (scripts/copy_table.py, scripts/two_timescale.py) and the smoke run: each must exist.
EXPECTED = [
    CONFIG_DIR / "smoke.yaml",
    *(CONFIG_DIR / task / f"{variant}{t}{aux}.yaml" for task in ("copy", "repeat-copy") for t in (2, 3, 4, 5)
      for variant, aux in (("bptt", ""), ("dni", ""), ("dni", "-aux"))),
    *(CONFIG_DIR / task / f"bptt{w}.yaml" for task in ("copy", "repeat-copy") for w in ("60", "60-whole", "120-whole")),
    *(CONFIG_DIR / "two-timescale" / f"{regime}.yaml" for regime in ("bptt", "cut", "dni")),
    # scripts/ff_table.py
    *(CONFIG_DIR / "ff" / f"{task}-{variant}.yaml" for task in ("digits", "addition", "mnist")
      for variant in ("bp", "dni", "cdni")),
]
CONFIGS = sorted(set(CONFIG_DIR.rglob("*.yaml")) | set(EXPECTED))

FF = re.compile(r"(digits|addition|mnist)-(bp|dni|cdni)(-bootstrap)?")  # ff/digits-cdni: task, variant, M's target
# bptt8, dni20, dni8-aux, dni2-n4, cdni2-n8-pending, bptt60-whole, dni8-discount: T, DNI, DNI + Aux, n-step
# targets (learned while pending), M also reading the targets its n-step target covers (cdni), windows of whole
# episodes, one-step targets discounted by the injection scale (γ = α); -shuffled: the control injection
# (each stream receives another's synthetic gradient), -no-injection: the control that injects nothing;
# -m-frozen: M kept at its zero start (learning rate 0).
# Without -n<k>, a family's own DNI targets: 8-step learned while pending (docs/copy.md).
FLAT = re.compile(r"(bptt|dni|cdni)(\d+)(-aux|-whole|-discount|-n(\d+)(-pending)?)?(-shuffled|-no-injection)?(-m-frozen)?")
INJECTION = {None: "prediction", "-shuffled": "shuffled", "-no-injection": "none"}
FAMILY_TARGETS = {family: (8, True) for family in ("copy", "repeat-copy", "ptb-cpu", "ptb")}  # (n, pending)
HIER = re.compile(r"hier-(bptt|cut|dni)(\d+)")  # hier-dni8: the message interface and the lower T
REGIME = re.compile(r"(bptt|cut|dni)(-cond|-state)?")  # two-timescale/dni-cond: the regime, what M also reads


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_shipped_config_instantiates_and_is_what_its_name_says(config, tmp_path, monkeypatch):
    assert config.is_file(), f"{config} is missing"
    # Character configs find a tiny PTB through $SEQDNI_DATA_DIR: every file is built as shipped.
    monkeypatch.setenv(ptb.ENV_VAR, str(write_ptb(tmp_path / "ptb", "char", CHAR_FILES)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    built = cli(["--config", str(config), f"--trainer.default_root_dir={tmp_path}"], run=False)
    model, dm, name = built.model, built.datamodule, config.stem

    assert model.task == dm.task  # linked from the data module, not typed twice
    if isinstance(model, LayerModel):  # feed-forward: one update per batch of examples
        assert model.hparams.window == dm.batch_size
    else:
        if model.vocab is not None:
            assert model.vocab.symbols == dm.symbols
        assert model.hparams.window % model.engine.span == 0  # a training batch is whole updates
    if isinstance(dm, CopyDataModule):
        assert any(isinstance(cb, Curriculum) for cb in built.trainer.callbacks)
    if config.parent.name in ("copy", "repeat-copy"):
        assert model.task.name == config.parent.name
    if config.parent.name in ("copy", "repeat-copy") or config.stem in ("copy", "repeat-copy"):
        assert model.hparams.init_range is None  # the initialisation the Copy grid was measured with
    if config.parent.name in ("ptb", "ptb-cpu") or config.stem in ("ptb", "ptb-cpu"):
        assert model.hparams.init_range == 0.1  # the reference LM's (docs/ptb-cpu/baseline/)
        stops = [cb for cb in built.trainer.callbacks if isinstance(cb, EarlyStopping)]
        assert [(cb.monitor, cb.mode) for cb in stops] == [("val/bpc", "min")]  # trained to convergence
        assert any(isinstance(cb, TrainingClock) for cb in built.trainer.callbacks)

    if config.parent.name == "ff":
        task, variant, bootstrap = FF.fullmatch(name).groups()
        assert isinstance(model, LayerModel) and model.task.name == task
        assert (model.dni is not None) == (variant != "bp")
        assert (model.dni is not None and model.dni.conditional) == (variant == "cdni")
        assert (model.dni is not None and model.dni.target == "bootstrap") == bool(bootstrap)
        assert len(model.engine.sgs) == (len(model.net.blocks) - 1 if model.dni else 0)
    elif m := HIER.fullmatch(name):
        message, unroll = m.groups()
        assert isinstance(model, HierLM)
        assert model.engine.message == message and model.hparams.unroll == int(unroll)
    elif config.parent.name == "two-timescale":
        assert isinstance(model, TwoTimescale) and model.period == dm.period == 4
        regime, reads = REGIME.fullmatch(name).groups()
        assert model.regime == regime
        assert (model.dni is not None and model.dni.conditional) == (reads == "-cond")
        assert (model.dni is not None and model.dni.sender_state) == (reads == "-state")
    elif m := FLAT.fullmatch(name):
        kind, unroll, suffix, n, pending, control, frozen = m.groups()
        assert isinstance(model, SeqModel)
        assert model.hparams.unroll == int(unroll)
        assert (model.dni is not None) == (kind != "bptt")
        assert (model.dni is not None and model.dni.aux_weight > 0) == (suffix == "-aux")
        default = (1, False) if suffix == "-discount" else FAMILY_TARGETS.get(config.parent.name, (1, False))
        targets = (int(n), bool(pending)) if n else default
        assert model.dni is None or (suffix == "-discount") == (model.dni.gamma == model.dni.scale < 1)
        assert model.dni is None or (model.dni.target_unrolls, model.dni.pending_targets) == targets
        ahead = int(unroll) * int(n or 1) if kind == "cdni" else 0
        assert model.dni is None or model.dni.lookahead == ahead
        assert getattr(dm, "lookahead", 0) == ahead
        assert getattr(dm, "whole_episodes", False) == (suffix == "-whole")
        assert model.dni is None or model.dni.injection == INJECTION[control]
        assert model.dni is None or (model.dni.lr == 0) == bool(frozen)
    else:  # a shipped variant has a name the rules above read; only the bases and the smoke run have none
        assert config.parent.name == "base" or name == "smoke", f"{config}: no naming rule above reads {name!r}"


# The benchmark configs beside the results they produced (docs/**/configs): <method><T>, then what each
# differs in from configs/ptb-cpu: -n<k>-pending targets, -g05 / -g1 the discount γ, -squash, -rank64,
# -scale02 (α = 0.2, γ kept at 0.1), -reuse.
BENCH = sorted((ROOT / "docs").rglob("*.yaml"))
BENCH_PART = {"g05": ("gamma", 0.5), "g1": ("gamma", 1.0), "squash": ("squash", True), "rank64": ("rank", 64),
              "scale02": ("scale", 0.2), "reuse": ("reuse", True), "pending": ("pending_targets", True)}


@pytest.mark.parametrize("config", BENCH, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_benchmark_config_in_docs_instantiates_and_is_what_its_name_says(config, tmp_path, monkeypatch):
    monkeypatch.setenv(ptb.ENV_VAR, str(write_ptb(tmp_path / "ptb", "char", CHAR_FILES)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = cli(["--config", str(config), f"--trainer.default_root_dir={tmp_path}"], run=False).model
    first, *parts = config.stem.split("-")
    m = re.fullmatch(r"(bptt|dni)(\d+)", first)
    assert m, f"{config.stem}: a benchmark config is named <bptt|dni><T>[-...]"
    assert isinstance(model, SeqModel) and model.hparams.unroll == int(m.group(2))
    assert (model.dni is not None) == (m.group(1) == "dni")
    for part in parts:
        if re.fullmatch(r"n\d+", part):
            assert model.dni.target_unrolls == int(part[1:])
        else:
            key, value = BENCH_PART[part]
            assert getattr(model.dni, key) == value, f"{config.stem}: model.dni.{key} is not {value}"


def test_one_seed_starts_every_ptb_grid_config_from_the_same_network(tmp_path, monkeypatch):
    """scripts/ptb_table.py compares the grid's configs seed by seed: what a seed fixes, the network's
    initial weights, must not depend on the unroll, on M or on Â (their layers are built after the
    network). A seed that differs gives other weights: the check can fail."""
    monkeypatch.setenv(ptb.ENV_VAR, str(write_ptb(tmp_path / "ptb", "char", CHAR_FILES)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def start(name, seed=0):
        built = cli(["--config", str(CONFIG_DIR / "ptb-cpu" / f"{name}.yaml"), f"--seed_everything={seed}",
                     f"--trainer.default_root_dir={tmp_path}"], run=False)
        return built.model.engine.net.state_dict()

    first = start("bptt8")
    for name in ("bptt40", "dni8", "dni8-aux", "dni8-discount-shuffled", "dni8-aux-m-frozen", "dni8-aux-no-injection"):
        weights = start(name)
        assert all(torch.equal(first[k], weights[k]) for k in first), name
    other = start("bptt8", seed=1)
    assert not any(torch.equal(first[k], other[k]) for k in first if "weight" in k)


def test_a_script_builds_the_cli_from_its_list_alone_whatever_its_own_command_line(monkeypatch, recwarn):
    """`cli(args)` in a script (`scripts/ff_table.py --steps 5`): the script's options on sys.argv are
    neither parsed nor warned about, and are left as they are (a launcher of more processes reads them)."""
    monkeypatch.setattr(sys, "argv", ["ff_table.py", "--steps", "5"])
    built = cli(["--config", str(ROOT / "configs/ff/digits-bp.yaml"), "--trainer.logger=false",
                 "--trainer.max_steps=3"], run=False)
    assert built.trainer.max_steps == 3
    assert not [w for w in recwarn if "args parameter" in str(w.message)]
    assert sys.argv == ["ff_table.py", "--steps", "5"]
