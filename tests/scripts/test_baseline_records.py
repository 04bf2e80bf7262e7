"""The committed PTB baseline (docs/ptb-cpu/baseline/): one epoch, three seeds each, seqdni's BPTT-8 at
least as good as the plain-PyTorch reference, the hierarchical model better with its initialisation than
without, and the page's numbers are the records'."""

from __future__ import annotations

import json
import statistics

from helpers import ROOT

BASE = ROOT / "docs/ptb-cpu/baseline"


def _records(name: str) -> tuple[list[float], list[float], int]:
    runs = json.loads((BASE / f"{name}.json").read_text())["runs"]
    if name.startswith("reference"):
        return [r["val_bpc"] for r in runs], [r["test_bpc"] for r in runs], min(r["chars"] for r in runs)
    return [r["best_val_bpc"] for r in runs], [r["test_bpc"] for r in runs], min(r["chars_seen"] for r in runs)


def test_seqdni_is_at_least_as_good_as_the_reference_after_one_epoch():
    ref_val, ref_test, ref_chars = _records("reference")
    val, test, chars = _records("seqdni")
    assert len(ref_val) == len(val) == 3
    assert chars >= 5_000_000 and ref_chars >= 5_000_000  # one epoch of PTB's 5,017,482 training characters
    assert statistics.mean(val) <= statistics.mean(ref_val) and statistics.mean(test) <= statistics.mean(ref_test)


def test_the_reference_initialisation_helps_the_hierarchical_model_too():
    val, test, chars = _records("hier")
    old_val, old_test, old_chars = _records("hier-torch-init")
    assert len(val) == len(old_val) == 3 and min(chars, old_chars) >= 5_000_000
    assert max(val) < min(old_val) and statistics.mean(test) < statistics.mean(old_test)


def test_the_page_shows_the_records():
    page = (BASE / "README.md").read_text()
    for name in ("reference", "reference-torch", "reference-decoder", "reference-encoder", "seqdni",
                 "seqdni-torch-init", "hier", "hier-torch-init"):
        val, test, _ = _records(name)
        for values in (val, test):
            assert " / ".join(f"{v:.4f}" for v in values) in page, name
            assert f"{statistics.mean(values):.4f}" in page, name
