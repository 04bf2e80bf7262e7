"""scripts/ptb_table.py: one command runs a grid, writes the report, and resumes."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import ROOT, run_python

pytestmark = pytest.mark.slow


def test_grid_writes_results_table_plots_and_resumes(text_files, tmp_path):
    base = yaml.safe_load((ROOT / "configs/smoke.yaml").read_text())
    base["trainer"]["callbacks"] = base["trainer"]["callbacks"][:2]  # checkpoints only
    cfgs = tmp_path / "configs"
    cfgs.mkdir()
    for name, dni in (("bptt8", None), ("dni8", {"scale": 0.1})):
        cfg = yaml.safe_load(yaml.safe_dump(base))
        if dni:
            cfg["model"]["init_args"]["dni"] = dni
        (cfgs / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "grid"
    cmd = [str(ROOT / "scripts/ptb_table.py"), "--configs", str(cfgs), "--names", "bptt8", "dni8",
           "--budget-chars", "1024", "--out", str(out), "--",
           f"--data.train_files=[{text_files['train']}]", f"--data.val_files=[{text_files['valid']}]",
           f"--data.test_files=[{text_files['test']}]", f"--data.cache_dir={tmp_path / 'cache'}",
           "--data.download=false"]
    first = run_python(cmd, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]

    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["name"] for r in runs] == ["bptt8", "dni8"]
    for r in runs:
        assert r["chars_seen"] == 1024  # 1024 chars / (batch 4 x unroll 4) = 64 steps = 16 batches of 64
        assert r["test_bpc"] is not None and r["best_val_bpc"] == min(p["bpc"] for p in r["val_curve"])
        assert r["seconds"] > 0 and r["peak_memory_mib"] > 0 and r["chars_per_sec"] > 0
    assert runs[1]["sg_cosine_mean"] is not None and runs[0]["sg_cosine_mean"] is None
    table = (out / "table.md").read_text()
    assert "| bptt8 | 1 | 1,024 |" in table and "| 1.34 |" in table  # beside the paper's DNI-8 test BPC
    for png in ("val_bpc_vs_chars.png", "val_bpc_vs_seconds.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"

    again = run_python(cmd, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("reusing") == 2 and "seqdni.train" not in again.stdout  # nothing retrained
    assert json.loads((out / "results.json").read_text())["runs"] == runs
