"""Tests of the data code: finding PTB, the stream rule, encoding, caching, batching.

Nothing here touches the network or the home cache: every CharDataModule gets a
temporary `cache_dir`, and `download=False` wherever the hub could be reached.
Real Penn Treebank is read from ../shared/data/ptb (or $SEQDNI_DATA_DIR) and encoded
at most once per session for the character files and once for the word files.
"""

from __future__ import annotations

import os
import re
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from seqdni import ptb
from seqdni.data import CharDataModule, StreamBatches
from seqdni.vocab import CharVocab, render

PTB_DIR = Path(os.environ.get("SEQDNI_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb")
SPLITS = ("train", "valid", "test")
PTB_TOKENS = {"train": 5_017_482, "valid": 393_042, "test": 442_423}


# --------------------------------------------------------------------------- helpers


def write_ptb(d: Path, kind: str, contents: dict[str, str]) -> Path:
    """Write a complete set of PTB-named files ('char' or 'word') into `d`."""
    d.mkdir(parents=True, exist_ok=True)
    names = ptb.char_files(d) if kind == "char" else ptb.word_files(d)
    for split, text in contents.items():
        names[split].write_text(text, encoding="utf-8")
    return d


def decoded(dm: CharDataModule) -> dict[str, str]:
    return {s: dm.vocab.decode(dm.ids[s].tolist()) for s in SPLITS}


def all_batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# --------------------------------------------------------------------------- real PTB (session-scoped)


def _need_ptb(kind: str) -> None:
    files = ptb.char_files(PTB_DIR) if kind == "char" else ptb.word_files(PTB_DIR)
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
    for src in ptb.word_files(PTB_DIR).values():
        (d / src.name).symlink_to(src)
    assert ptb.ptb_files_in(d)[0] == "word"
    return CharDataModule(data_dir=str(d), cache_dir=str(ptb_cache), download=False)


def test_real_ptb_char_sizes(ptb_char):
    assert ptb_char.kind == "char"
    assert ptb_char.vocab_size == 50
    assert len(ptb_char.symbols) == 50
    assert {"\n", "_"} <= set(ptb_char.symbols) and " " not in ptb_char.symbols
    assert {s: ptb_char.ids[s].numel() for s in SPLITS} == PTB_TOKENS
    # The stream rule on the real file: separator spaces gone, `_` between words.
    assert ptb_char.vocab.decode(ptb_char.ids["train"][:21].tolist()) == "aer_banknote_berlitz_"
    assert render("aer_banknote") == "aer banknote"


def test_real_ptb_word_files_give_same_streams(ptb_char, ptb_word):
    assert ptb_word.kind == "word"
    assert ptb_word.symbols == ptb_char.symbols
    for s in SPLITS:
        assert torch.equal(ptb_word.ids[s], ptb_char.ids[s]), s


def test_real_ptb_cache_is_reused(ptb_char, ptb_cache, monkeypatch):
    def boom(self, lines):
        raise AssertionError("encoded again instead of loading the cache")

    monkeypatch.setattr(CharVocab, "encode_lines", boom)
    again = CharDataModule(data_dir=str(PTB_DIR), cache_dir=str(ptb_cache), download=False)
    assert again.symbols == ptb_char.symbols
    for s in SPLITS:
        assert torch.equal(again.ids[s], ptb_char.ids[s])


# --------------------------------------------------------------------------- stream rule on small files


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


def test_char_files_stream_rule(tmp_path):
    d = write_ptb(tmp_path / "ptb", "char", CHAR_FILES)
    dm = CharDataModule(data_dir=str(d), cache_dir=str(tmp_path / "cache"), download=False)
    assert dm.kind == "char"
    assert decoded(dm) == STREAMS
    assert dm.symbols == sorted(set("".join(STREAMS.values())))


def test_word_files_stream_rule_matches_char_files(tmp_path):
    dc = CharDataModule(data_dir=str(write_ptb(tmp_path / "c", "char", CHAR_FILES)),
                        cache_dir=str(tmp_path / "cache"), download=False)
    dw = CharDataModule(data_dir=str(write_ptb(tmp_path / "w", "word", WORD_FILES)),
                        cache_dir=str(tmp_path / "cache"), download=False)
    assert dw.kind == "word"
    assert decoded(dw) == STREAMS
    assert dw.symbols == dc.symbols
    for s in SPLITS:
        assert torch.equal(dw.ids[s], dc.ids[s]), s


def test_stream_rule_functions():
    assert ptb.char_lines_to_stream([" a b _ c ", "", "  ", "d"]) == ["ab_c\n", "d\n"]
    assert ptb.word_lines_to_stream([" ab  c ", "", " \t ", "d"]) == ["ab_c\n", "d\n"]


def test_char_files_preferred_when_both_sets_present(tmp_path):
    d = write_ptb(tmp_path / "ptb", "char", CHAR_FILES)
    write_ptb(d, "word", {"train": "zz\n", "valid": "zz\n", "test": "zz\n"})
    dm = CharDataModule(data_dir=str(d), cache_dir=str(tmp_path / "cache"), download=False)
    assert dm.kind == "char" and decoded(dm) == STREAMS


# --------------------------------------------------------------------------- hub conversion (offline, local parquet)


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return datasets


def test_parquet_to_word_files(tmp_path, hf_offline):
    sentences = {
        "train": ["aer banknote berlitz", "pierre <unk> N years old", ""],
        "valid": ["the cat", "  sat  on the mat "],
        "test": ["a b c"],
    }
    parquet = {}
    for split, sents in sentences.items():
        p = tmp_path / f"{split}.parquet"
        hf_offline.Dataset.from_dict({"sentence": sents}).to_parquet(str(p))
        parquet[split] = str(p)
    out = tmp_path / "converted"
    ptb.parquet_to_word_files(parquet, out)
    assert ptb.ptb_files_in(out)[0] == "word"

    hand = write_ptb(tmp_path / "hand", "word", {s: "\n".join(v) + "\n" for s, v in sentences.items()})
    conv = CharDataModule(data_dir=str(out), cache_dir=str(tmp_path / "cache"), download=False)
    ref = CharDataModule(data_dir=str(hand), cache_dir=str(tmp_path / "cache"), download=False)
    assert decoded(conv) == {
        "train": "aer_banknote_berlitz\npierre_<unk>_N_years_old\n",
        "valid": "the_cat\nsat_on_the_mat\n",
        "test": "a_b_c\n",
    }
    assert conv.symbols == ref.symbols
    for s in SPLITS:
        assert torch.equal(conv.ids[s], ref.ids[s]), s


def test_sentences_from_dataset_needs_sentence_column(hf_offline):
    ds = hf_offline.Dataset.from_dict({"text": ["a b"]})
    with pytest.raises(ValueError, match=r"'sentence' column.*\['text'\]"):
        ptb.sentences_from_dataset(ds)
    assert ptb.sentences_from_dataset(hf_offline.Dataset.from_dict({"sentence": ["a b", "c"]})) == ["a b", "c"]


# --------------------------------------------------------------------------- locating PTB


def test_found_in_cache_when_nothing_configured(tmp_path, monkeypatch):
    monkeypatch.delenv(ptb.ENV_VAR, raising=False)
    cache = tmp_path / "cache"
    write_ptb(cache / "ptb", "word", WORD_FILES)
    dm = CharDataModule(cache_dir=str(cache), download=False)
    assert dm.kind == "word" and decoded(dm) == STREAMS


def test_env_var_used_when_data_dir_unset(tmp_path, monkeypatch):
    d = write_ptb(tmp_path / "ptb", "char", CHAR_FILES)
    monkeypatch.setenv(ptb.ENV_VAR, str(d))
    dm = CharDataModule(cache_dir=str(tmp_path / "cache"), download=False)
    assert dm.kind == "char" and decoded(dm) == STREAMS


def test_data_dir_wins_over_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv(ptb.ENV_VAR, str(tmp_path / "empty"))  # would be an error if consulted
    d = write_ptb(tmp_path / "ptb", "word", WORD_FILES)
    dm = CharDataModule(data_dir=str(d), cache_dir=str(tmp_path / "cache"), download=False)
    assert decoded(dm) == STREAMS


def test_download_writes_word_files_into_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(ptb.ENV_VAR, raising=False)
    calls = []

    def fake_fetch(out: Path) -> None:
        calls.append(out)
        ptb.write_word_files({s: [ln for ln in t.splitlines() if ln.strip()] for s, t in WORD_FILES.items()}, out)

    monkeypatch.setattr(ptb, "fetch_ptb_from_hub", fake_fetch)
    cache = tmp_path / "cache"
    dm = CharDataModule(cache_dir=str(cache), download=True)
    assert calls == [cache / "ptb"]
    assert dm.kind == "word" and decoded(dm) == STREAMS
    # The second time it is found in the cache: no fetch.
    CharDataModule(cache_dir=str(cache), download=True)
    assert len(calls) == 1


def test_download_failure_is_explained(tmp_path, monkeypatch):
    monkeypatch.delenv(ptb.ENV_VAR, raising=False)

    def offline(out: Path) -> None:
        raise ConnectionError("no route to host")

    monkeypatch.setattr(ptb, "fetch_ptb_from_hub", offline)
    with pytest.raises(FileNotFoundError, match=r"failed \(ConnectionError: no route to host\).*--data\.data_dir"):
        CharDataModule(cache_dir=str(tmp_path / "cache"), download=True)


def test_default_cache_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ptb.default_cache_dir() == tmp_path / "seqdni"


# --------------------------------------------------------------------------- errors


def test_error_empty_data_dir(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    pattern = (r"data\.data_dir points at .*empty: it holds no PTB files; expected either "
               r"ptb\.char\.train\.txt, ptb\.char\.valid\.txt, ptb\.char\.test\.txt or "
               r"ptb\.train\.txt, ptb\.valid\.txt, ptb\.test\.txt")
    with pytest.raises(FileNotFoundError, match=pattern):
        CharDataModule(data_dir=str(d), cache_dir=str(tmp_path / "cache"), download=False)


def test_error_missing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.data_dir points at .*nowhere: it does not exist"):
        CharDataModule(data_dir=str(tmp_path / "nowhere"), cache_dir=str(tmp_path / "cache"), download=False)


def test_error_partial_data_dir(tmp_path):
    d = tmp_path / "partial"
    d.mkdir()
    (d / "ptb.char.train.txt").write_text(" a \n")
    with pytest.raises(FileNotFoundError, match=r"data\.data_dir .*it holds only \['ptb\.char\.train\.txt'\]"):
        CharDataModule(data_dir=str(d), cache_dir=str(tmp_path / "cache"), download=False)


def test_error_env_var_empty_dir_no_fall_through(tmp_path, monkeypatch):
    d = tmp_path / "empty"
    d.mkdir()
    monkeypatch.setenv(ptb.ENV_VAR, str(d))
    cache = tmp_path / "cache"
    write_ptb(cache / "ptb", "char", CHAR_FILES)  # a valid cache must not hide the bad variable
    with pytest.raises(FileNotFoundError, match=re.escape(f"${ptb.ENV_VAR} points at {d}: it holds no PTB files")):
        CharDataModule(cache_dir=str(cache), download=False)


def test_error_nothing_anywhere(tmp_path, monkeypatch):
    monkeypatch.delenv(ptb.ENV_VAR, raising=False)

    def no_fetch(out: Path) -> None:
        raise AssertionError("download=False must not fetch")

    monkeypatch.setattr(ptb, "fetch_ptb_from_hub", no_fetch)
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError) as err:
        CharDataModule(cache_dir=str(cache), download=False)
    msg = str(err.value)
    for needle in ("Penn Treebank not found", "data.data_dir (not set)", f"${ptb.ENV_VAR} (not set)",
                   f"the cache {cache / 'ptb'}", "download is off", "--data.data_dir"):
        assert needle in msg, (needle, msg)


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


def test_error_too_few_ids_for_rows():
    with pytest.raises(ValueError, match=r"7 ids cannot fill 4 rows.*lower the batch size"):
        StreamBatches(torch.arange(7), batch_size=2, window=4, world_size=2)


# --------------------------------------------------------------------------- cache


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


# --------------------------------------------------------------------------- raw text files


RAW_TRAIN = "Hello, world!\n\n\ttabs  and   spaces \nünïcödé — ok\nno newline at the end"
RAW_TRAIN2 = "second file\n"
RAW_VAL = "validation text\nwith two lines\n"


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


# --------------------------------------------------------------------------- StreamBatches


N, B, W = 50, 3, 4  # L = 16 ids a row; 15 inputs a row (the last id is only a target)


def test_stream_rows_layout():
    sb = StreamBatches(torch.arange(N), B, W)
    L = N // B
    assert sb.rows.shape == (B, L)
    for b in range(B):
        assert torch.equal(sb.rows[b], torch.arange(b * L, (b + 1) * L))


def test_stream_batches_windows_and_targets():
    sb = StreamBatches(torch.arange(N), B, W, drop_last=True)
    L = N // B
    batches = all_batches(sb)
    assert len(sb) == len(batches) == (L - 1) // W == 3
    for i, (x, y) in enumerate(batches):
        assert x.dtype == y.dtype == torch.long
        expect = torch.stack([torch.arange(b * L + i * W, b * L + i * W + W) for b in range(B)])
        assert torch.equal(x, expect)
        assert torch.equal(x, sb.rows[:, i * W : i * W + W])
        assert torch.equal(y, x + 1)
    for (x0, _), (x1, _) in pairwise(batches):  # each row continues where it stopped
        assert torch.equal(x1[:, 0], x0[:, -1] + 1)


def test_stream_batches_keep_last_window_for_eval():
    sb = StreamBatches(torch.arange(N), B, W, drop_last=False)
    L = N // B
    batches = all_batches(sb)
    assert len(sb) == len(batches) == -(-(L - 1) // W) == 4
    assert [x.shape[1] for x, _ in batches] == [4, 4, 4, 3]
    x = torch.cat([x for x, _ in batches], 1)
    y = torch.cat([y for _, y in batches], 1)
    assert torch.equal(x, sb.rows[:, :-1]) and torch.equal(y, sb.rows[:, 1:])
    # Every id but the last of each row (and the N % B dropped ones) is an input exactly once.
    assert x.numel() == B * (L - 1)


@pytest.mark.parametrize("n", [48, 49, 51])
def test_stream_batches_exact_fit(n):
    # (L - 1) divisible by W or not: drop_last differs only when it is not.
    L = n // B
    keep, drop = StreamBatches(torch.arange(n), B, W, False), StreamBatches(torch.arange(n), B, W, True)
    assert len(drop) == (L - 1) // W and len(keep) == -(-(L - 1) // W)
    assert all(x.shape == (B, W) for x, _ in drop)


def test_stream_batches_sharding():
    world = 2
    whole = StreamBatches(torch.arange(N), B * world, W)
    shards = [StreamBatches(torch.arange(N), B, W, rank=r, world_size=world) for r in range(world)]
    assert all(s.rows.shape == (B, N // (B * world)) for s in shards)
    assert torch.equal(torch.cat([s.rows for s in shards]), whole.rows)
    a, b = (set(s.rows.flatten().tolist()) for s in shards)
    assert not a & b
    assert a | b == set(whole.rows.flatten().tolist())
    assert all(len(s) == len(whole) for s in shards)
    per_rank = [all_batches(s) for s in shards]
    for i, ((x0, y0), (x1, y1), (xw, yw)) in enumerate(zip(*per_rank, all_batches(whole), strict=True)):
        assert torch.equal(torch.cat([x0, x1]), xw) and torch.equal(torch.cat([y0, y1]), yw), i


def test_datamodule_shards_by_trainer_rank(tmp_path):
    d = write_ptb(tmp_path / "ptb", "word", {"train": "abcdefghijklmnopqrstuvwxyz\n" * 4, "valid": "ab\n" * 20,
                                             "test": "ba\n" * 20})
    dm = CharDataModule(data_dir=str(d), cache_dir=str(tmp_path / "cache"), download=False,
                        batch_size=2, window=3, eval_batch_size=2, eval_window=5)
    dm.trainer = SimpleNamespace(global_rank=1, world_size=2)  # what Trainer attaches to a datamodule
    expect = StreamBatches(dm.ids["train"], 2, 3, True, rank=1, world_size=2)
    assert torch.equal(dm.train_dataloader().rows, expect.rows)


# --------------------------------------------------------------------------- StreamBatches state


def test_stream_batches_resume_mid_epoch():
    ids = torch.arange(N)
    full = all_batches(StreamBatches(ids, B, W, drop_last=False))
    sb = StreamBatches(ids, B, W, drop_last=False)
    it = iter(sb)
    first_two = [next(it), next(it)]
    assert_same_batches(first_two, full[:2])
    state = sb.state_dict()
    assert state == {"next_batch": 2}

    fresh = StreamBatches(ids, B, W, drop_last=False)
    fresh.load_state_dict(state)
    assert_same_batches(all_batches(fresh), full[2:])
    assert fresh.state_dict() == {"next_batch": len(fresh)}
    assert_same_batches(all_batches(fresh), full)  # the next epoch starts at 0


def test_stream_batches_state_at_end_of_epoch_restarts():
    ids = torch.arange(N)
    sb = StreamBatches(ids, B, W)
    full = all_batches(sb)
    state = sb.state_dict()
    assert state == {"next_batch": len(sb)}
    fresh = StreamBatches(ids, B, W)
    fresh.load_state_dict(state)
    assert_same_batches(all_batches(fresh), full)
    fresh.load_state_dict({})  # no key: from the start
    assert_same_batches(all_batches(fresh), full)


# --------------------------------------------------------------------------- CharVocab


def test_vocab_round_trip():
    text = "ab_c\nd e\n\n\t€x"
    v = CharVocab.from_texts([text])
    assert v.symbols == sorted(set(text)) and len(v) == len(set(text))
    ids = v.encode(text)
    assert len(ids) == len(text)
    assert ids == [v.index[c] for c in text]
    assert v.decode(ids) == text
    assert v.encode("") == [] and v.decode([]) == ""
    lines = ["ab_c\n", "d e\n", "\n"]
    flat = v.encode_lines(lines)
    assert flat.dtype == torch.uint8 and flat.tolist() == v.encode("".join(lines))
    assert v.decode(flat.tolist()) == "".join(lines)


def test_vocab_large_uses_int16():
    v = CharVocab([chr(0x4E00 + i) for i in range(300)])
    flat = v.encode_lines([v.symbols[299] + v.symbols[0]])
    assert flat.dtype == torch.int16 and flat.tolist() == [299, 0]


def test_vocab_unknown_characters():
    v = CharVocab.from_texts(["abc\n"])
    assert v.unknown("abxcyx") == ["x", "y"]
    with pytest.raises(ValueError, match=r"characters not in the vocabulary: 'x', 'Z'; the vocabulary has 4 symbols"):
        v.encode("axbZx")
    with pytest.raises(ValueError, match=r"'\\t'"):
        v.encode("a\tb")


def test_vocab_rejects_bad_symbols():
    with pytest.raises(ValueError, match="distinct single characters"):
        CharVocab(["a", "a"])
    with pytest.raises(ValueError, match="distinct single characters"):
        CharVocab(["a", "bc"])


def test_vocab_save_load(tmp_path):
    v = CharVocab(["\n", " ", "_", "a", "é", "€"])
    p = tmp_path / "vocab.json"
    v.save(p)
    w = CharVocab.load(p)
    assert w.symbols == v.symbols
    text = "a_é €\n"
    assert w.encode(text) == v.encode(text) and w.decode(w.encode(text)) == text
