"""Fixtures: tiny raw-text files and character data modules, real Penn Treebank, an offline hub.
Everything else the tests share is in helpers.py."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from helpers import PTB_DIR, TEXT

from seqdni.data import CharDataModule
from seqdni.data import ptb as ptb_files

# Tiny models: one thread is faster, and two threads on a shared 2-core machine thrash.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


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
    """A factory of character data modules over `text_files` (batch 2, window 8 unless told)."""

    def make(**kw):
        args = dict(train_files=[text_files["train"]], val_files=[text_files["valid"]],
                    test_files=[text_files["test"]], batch_size=2, window=8, eval_batch_size=2, eval_window=16,
                    cache_dir=str(tmp_path / "cache"), download=False)
        args.update(kw)
        return CharDataModule(**args)

    return make


# ---- real Penn Treebank, from ../shared/data/ptb or $SEQDNI_DATA_DIR, encoded once a session -------
def _need_ptb(kind: str) -> None:
    files = ptb_files.char_files(PTB_DIR) if kind == "char" else ptb_files.word_files(PTB_DIR)
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        pytest.skip(f"Penn Treebank {kind} files not in {PTB_DIR} (missing {missing}); set $SEQDNI_DATA_DIR")


@pytest.fixture(scope="session")
def ptb_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ptb_cache")


@pytest.fixture(scope="session")
def ptb_char(ptb_cache) -> CharDataModule:
    _need_ptb("char")
    return CharDataModule(data_dir=str(PTB_DIR), cache_dir=str(ptb_cache), download=False)


@pytest.fixture(scope="session")
def ptb_word(ptb_cache, tmp_path_factory) -> CharDataModule:
    _need_ptb("word")
    d = tmp_path_factory.mktemp("ptb_words_only")
    for src in ptb_files.word_files(PTB_DIR).values():
        (d / src.name).symlink_to(src)
    assert ptb_files.ptb_files_in(d)[0] == "word"
    return CharDataModule(data_dir=str(d), cache_dir=str(ptb_cache), download=False)


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    """The `datasets` library, offline, with its cache in a temporary directory."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return datasets


@pytest.fixture
def lightning_log(caplog):
    """`caplog` listening at INFO on Lightning's loggers, which stop propagating to the root logger
    pytest captures once Lightning has given them a handler of their own."""
    names = ("lightning.pytorch", "lightning.fabric")
    for name in names:
        logging.getLogger(name).addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    for name in names:
        caplog.set_level(logging.INFO, logger=name)
    yield caplog
    for name in names:
        logging.getLogger(name).removeHandler(caplog.handler)
