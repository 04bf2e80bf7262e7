"""The restructured code reproduces the flat-module layout's runs and reads its checkpoints.

tests/fixtures/legacy holds, from the code before the restructuring (commit 116ae4d), seeded
short runs of every system (flat BPTT, DNI, DNI + Aux, hierarchical, two-timescale, Copy) with
their per-batch training metrics and final parameters, and five checkpoints with their samples,
test metrics and resumed runs. The arithmetic is unchanged, so the numbers must agree to the
last bit but for summation order: 1e-6 relative (float32 has 24 bits, about 6e-8) leaves room
for a differently ordered sum of a few terms and nothing else.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from legacy import GOLDEN, LEGACY, golden_params, legacy_args, param_sums, run, with_old_init_order

from seqdni.cli.sample import load_checkpoint, sample
from seqdni.cli.train import cli

RTOL = 1e-6
ATOL = 1e-7  # float32's resolution at 1: a cosine near 0 moves by ~1e-8 between CPUs with other vector units
pytestmark = pytest.mark.slow


def close(a: dict, b: dict, what: str) -> None:
    missing = set(b) - set(a)
    assert not missing, f"{what}: not logged any more: {sorted(missing)}"
    for key, want in b.items():
        assert a[key] == pytest.approx(want, rel=RTOL, abs=ATOL), f"{what}: {key} {a[key]!r} != {want!r}"


def check_run(batches, module, recorded, name) -> None:
    assert len(batches) == len(recorded["batches"]), name
    for i, (got, want) in enumerate(zip(batches, recorded["batches"])):
        close(got, want, f"{name} batch {i}")
    flat = name.startswith(("flat", "copy"))
    got, want = param_sums(module), golden_params(recorded["params"], flat)
    assert set(got) == set(want), f"{name}: parameters {sorted(set(got) ^ set(want))}"
    for key, w in want.items():  # a sum with cancellation: compare on the scale of its terms
        assert abs(got[key]["sum"] - w["sum"]) <= RTOL * w["abs_sum"], f"{name} params: {key}"
        assert got[key]["abs_sum"] == pytest.approx(w["abs_sum"], rel=RTOL), f"{name} params: {key}"


@pytest.mark.parametrize("name", sorted(GOLDEN["runs"]))
def test_recorded_run_is_reproduced(name, tmp_path, monkeypatch):
    with_old_init_order(monkeypatch)
    recorded = GOLDEN["runs"][name]
    batches, built = run(recorded["args"], tmp_path)
    check_run(batches, built.model, recorded, name)


@pytest.mark.parametrize("name", sorted(GOLDEN["checkpoints"]))
def test_old_checkpoint_resumes_exactly(name, tmp_path):
    saved = GOLDEN["checkpoints"][name]
    ckpt = tmp_path / "resume.ckpt"
    shutil.copy(LEGACY / f"{name}.ckpt", ckpt)
    batches, built = run(saved["resume"]["args"], tmp_path, ckpt_path=str(ckpt))
    check_run(batches, built.model, saved["resume"], f"{name} resumed")


@pytest.mark.parametrize("name", sorted(k for k, v in GOLDEN["checkpoints"].items() if v.get("sample")))
def test_old_checkpoint_samples_the_same_text(name):
    ckpt = str(LEGACY / f"{name}.ckpt")
    want = GOLDEN["checkpoints"][name]["sample"]
    assert sample(ckpt, prime="the ", length=60, seed=0) == want["default"]
    assert sample(ckpt, prime="the ", length=60, temperature=0.5, top_k=3, seed=1) == want["t0.5_k3_s1"]


@pytest.mark.parametrize("name", sorted(GOLDEN["checkpoints"]))
def test_old_checkpoint_loads_as_todays_class(name):
    lm = load_checkpoint(LEGACY / f"{name}.ckpt")
    expected = {"seqdni.lit.SeqModel": "SeqModel", "seqdni.hier.HierLM": "HierLM",
                "seqdni.twotimescale.TwoTimescale": "TwoTimescale"}[GOLDEN["checkpoints"][name]["class_path"]]
    assert type(lm).__name__ == expected
    assert type(lm).__module__ == "seqdni.training.systems"


def as_format_1(src, dst) -> None:
    """A format-2 checkpoint of the flat model rewritten as format 1: one rank's carry with its
    tensors unwrapped, and no class path (the oldest checkpoints were all `seqdni.lit.SeqModel`)."""
    ckpt = torch.load(src, weights_only=True)
    carry = ckpt["seqdni"]["carry"]
    kept = carry["kept"]
    ckpt["seqdni"] = {"format": 1, "carry": {
        "state": [t[0] for t in carry["state"]], "boundary": carry["boundary"],
        "kept": None if kept is None else {"state": [t[0] for t in kept["state"]], "x": kept["x"][0]}}}
    torch.save(ckpt, dst)


def test_format_1_checkpoint_resumes_and_samples_as_recorded(tmp_path):
    saved = GOLDEN["checkpoints"]["flat-dni-aux"]
    ckpt = tmp_path / "format1.ckpt"
    as_format_1(LEGACY / "flat-dni-aux.ckpt", ckpt)
    assert sample(str(ckpt), prime="the ", length=60, seed=0) == saved["sample"]["default"]
    batches, built = run(saved["resume"]["args"], tmp_path, ckpt_path=str(ckpt))
    check_run(batches, built.model, saved["resume"], "flat-dni-aux resumed from format 1")


@pytest.mark.parametrize("name", sorted(GOLDEN["checkpoints"]))
def test_old_checkpoint_evaluates_as_recorded(name, tmp_path):
    """`trainer.test` (or `validate`, for Copy, which has no test split) at an old checkpoint."""
    saved = GOLDEN["checkpoints"][name]
    built = cli(legacy_args(GOLDEN["runs"][name]["args"], tmp_path), run=False)
    ckpt = tmp_path / "eval.ckpt"
    shutil.copy(LEGACY / f"{name}.ckpt", ckpt)
    stage = "test" if "test" in saved else "validate"
    metrics = getattr(built.trainer, stage)(built.model, datamodule=built.datamodule, ckpt_path=str(ckpt),
                                            verbose=False)[0]
    close({k: float(v) for k, v in metrics.items()}, saved[stage], f"{name} {stage}")
