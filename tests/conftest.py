from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tiny models: one thread is faster, and two threads on a shared 2-core machine thrash.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
PTB_DIR = Path(os.environ.get("SEQDNI_DATA_DIR") or ROOT.parent / "shared" / "data" / "ptb")

TEXT = (
    "the cat sat on the mat.\nthe dog sat on the log.\na cat and a dog met on a mat.\n"
    "the dog saw the cat.\nthe cat saw the dog.\n"
)


@pytest.fixture
def text_files(tmp_path: Path) -> dict[str, str]:
    """Tiny raw-text train/valid/test files; no download, no PTB."""
    files = {}
    for split, reps in (("train", 6), ("valid", 2), ("test", 2)):
        p = tmp_path / f"{split}.txt"
        p.write_text(TEXT * reps)
        files[split] = str(p)
    return files


@pytest.fixture
def tiny_data(text_files, tmp_path):
    from seqdni.data import CharDataModule

    def make(**kw):
        args = dict(train_files=[text_files["train"]], val_files=[text_files["valid"]],
                    test_files=[text_files["test"]], batch_size=2, window=8, eval_batch_size=2, eval_window=16,
                    cache_dir=str(tmp_path / "cache"), download=False)
        args.update(kw)
        return CharDataModule(**args)

    return make
