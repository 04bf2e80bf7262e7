"""CharDataModule: raw text files, the encoded-ids cache, batching and sharding by rank, and its
argument errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers import CHAR_FILES, SPLITS, decoded, write_ptb

from seqdni.data import CharDataModule, CharVocab, StreamBatches, ptb

RAW_TRAIN = "Hello, world!\n\n\ttabs  and   spaces \nünïcödé — ok\nno newline at the end"
RAW_TRAIN2 = "second file\n"
RAW_VAL = "validation text\nwith two lines\n"


# ---- raw text files ------------------------------------------------------------------------------
def test_raw_files_round_trip(tmp_path):
    files = {}
    for name, text in (("t1", RAW_TRAIN), ("t2", RAW_TRAIN2), ("v", RAW_VAL), ("x", "test: zq\n")):
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text(text, encoding="utf-8")
    dm = CharDataModule(train_files=[str(files["t1"]), str(files["t2"])], val_files=[str(files["v"])],
                        test_files=[str(files["x"])], cache_dir=str(tmp_path / "cache"))
    assert dm.kind == "raw"
    assert decoded(dm) == {"train": RAW_TRAIN + RAW_TRAIN2, "valid": RAW_VAL, "test": "test: zq\n"}
    assert dm.symbols == sorted(set(RAW_TRAIN + RAW_TRAIN2 + RAW_VAL + "test: zq\n"))


def test_raw_files_without_test_files(tmp_path):
    t, v = tmp_path / "t.txt", tmp_path / "v.txt"
    t.write_text("abcdefghij" * 10)
    v.write_text("jihgfedcba" * 3)
    dm = CharDataModule(train_files=[str(t)], val_files=[str(v)], cache_dir=str(tmp_path / "cache"),
                        batch_size=2, window=5, eval_batch_size=3, eval_window=7)
    assert dm.ids["test"].numel() == 0
    assert dm.test_dataloader() == []
    train = dm.train_dataloader()
    assert isinstance(train, StreamBatches) and train.rows.shape == (2, 50) and len(train) == 49 // 5
    x, y = next(iter(train))
    assert x.shape == (2, 5) and x.dtype == torch.long
    val = dm.val_dataloader()
    assert val.rows.shape == (3, 10) and len(val) == 2  # 9 inputs per row: windows of 7 and 2
    assert dm.vocab.decode(torch.cat([x for x, _ in val], 1)[0].tolist()) == "jihgfedcb"


def test_raw_files_keep_carriage_returns(tmp_path):
    t, v = tmp_path / "t.txt", tmp_path / "v.txt"
    t.write_bytes(b"windows\r\nline\r\nold mac\rend\n")
    v.write_bytes(b"v\r\n")
    dm = CharDataModule(train_files=[str(t)], val_files=[str(v)], cache_dir=str(tmp_path / "cache"))
    assert decoded(dm)["train"] == "windows\r\nline\r\nold mac\rend\n"


# ---- the cache -----------------------------------------------------------------------------------
def test_cache_skips_encoding(tmp_path, monkeypatch):
    d = write_ptb(tmp_path / "ptb", "char", CHAR_FILES)
    cache = tmp_path / "cache"
    first = CharDataModule(data_dir=str(d), cache_dir=str(cache), download=False)
    assert list((cache / "encoded").glob("*/ids.pt"))

    def boom(self, lines):
        raise RuntimeError("encode_lines called")

    monkeypatch.setattr(CharVocab, "encode_lines", boom)
    second = CharDataModule(data_dir=str(d), cache_dir=str(cache), download=False)
    assert second.symbols == first.symbols
    for s in SPLITS:
        assert torch.equal(second.ids[s], first.ids[s])
    # Control: without a cache the patched encoder is reached, so the check above means something.
    with pytest.raises(RuntimeError, match="encode_lines called"):
        CharDataModule(data_dir=str(d), cache_dir=str(tmp_path / "other_cache"), download=False)


def test_cache_invalidated_when_file_changes(tmp_path):
    d = write_ptb(tmp_path / "ptb", "char", CHAR_FILES)
    cache = tmp_path / "cache"
    CharDataModule(data_dir=str(d), cache_dir=str(cache), download=False)
    ptb.char_files(d)["test"].write_text(" x _ y _ z z \n")
    dm = CharDataModule(data_dir=str(d), cache_dir=str(cache), download=False)
    assert decoded(dm)["test"] == "x_y_zz\n"
    assert "x" in dm.symbols


# ---- batching --------------------------------------------------------------------------------------
def test_datamodule_shards_by_trainer_rank(tmp_path):
    d = write_ptb(tmp_path / "ptb", "word", {"train": "abcdefghijklmnopqrstuvwxyz\n" * 4, "valid": "ab\n" * 20,
                                             "test": "ba\n" * 20})
    dm = CharDataModule(data_dir=str(d), cache_dir=str(tmp_path / "cache"), download=False,
                        batch_size=2, window=3, eval_batch_size=2, eval_window=5)
    dm.trainer = SimpleNamespace(global_rank=1, world_size=2)  # what Trainer attaches to a datamodule
    expect = StreamBatches(dm.ids["train"], 2, 3, True, rank=1, world_size=2)
    assert torch.equal(dm.train_dataloader().rows, expect.rows)


# ---- argument errors -----------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["batch_size", "window", "eval_batch_size", "eval_window"])
@pytest.mark.parametrize("value", [0, -1])
def test_error_non_positive_sizes(tmp_path, key, value):
    with pytest.raises(ValueError, match=rf"data\.{key} must be positive, got {value}"):
        CharDataModule(data_dir=str(tmp_path / "never_read"), cache_dir=str(tmp_path / "cache"),
                       download=False, **{key: value})


def test_error_train_files_without_val_files(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text("hello\n")
    with pytest.raises(ValueError, match=r"data\.train_files needs data\.val_files"):
        CharDataModule(train_files=[str(f)], cache_dir=str(tmp_path / "cache"))


def test_error_raw_file_missing(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text("hello\n")
    with pytest.raises(FileNotFoundError, match=r"data file not found: .*nope\.txt"):
        CharDataModule(train_files=[str(f)], val_files=[str(tmp_path / "nope.txt")], cache_dir=str(tmp_path / "c"))


def test_a_window_longer_than_the_training_streams_is_an_error(tiny_data):
    dm = tiny_data(batch_size=2, window=4096)
    with pytest.raises(ValueError, match=r"data.window \(4096\) is longer than each training stream: the \d+ training "
                                         r"ids make 2 streams of \d+ ids.*lower data.window or data.batch_size"):
        dm.train_dataloader()
