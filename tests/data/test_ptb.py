"""Penn Treebank as character streams: the stream rule (separator spaces gone, `_` between words,
one line per sentence), the same streams from the character and the word files, real PTB's sizes,
and converting the hub's parquet files.

Nothing here touches the network or the home cache: every CharDataModule gets a temporary
`cache_dir`, and `download=False`. Real Penn Treebank is read from ../shared/data/ptb (or
$SEQDNI_DATA_DIR) and encoded at most once per session (fixtures in conftest.py).
"""

from __future__ import annotations

import pytest
import torch
from helpers import CHAR_FILES, PTB_DIR, SPLITS, STREAMS, WORD_FILES, decoded, write_ptb

from seqdni.data import CharDataModule, CharVocab, ptb
from seqdni.data.vocab import render

PTB_TOKENS = {"train": 5_017_482, "valid": 393_042, "test": 442_423}


# ---- real PTB ------------------------------------------------------------------------------------
@pytest.mark.slow  # encodes all of PTB once a session: about 10 s
def test_real_ptb_char_sizes(ptb_char):
    assert ptb_char.kind == "char"
    assert ptb_char.vocab_size == 50
    assert len(ptb_char.symbols) == 50
    assert {"\n", "_"} <= set(ptb_char.symbols) and " " not in ptb_char.symbols
    assert {s: ptb_char.ids[s].numel() for s in SPLITS} == PTB_TOKENS
    # The stream rule on the real file: separator spaces gone, `_` between words.
    assert ptb_char.vocab.decode(ptb_char.ids["train"][:21].tolist()) == "aer_banknote_berlitz_"
    assert render("aer_banknote") == "aer banknote"


@pytest.mark.slow  # encodes all of PTB once a session: about 10 s
def test_real_ptb_word_files_give_same_streams(ptb_char, ptb_word):
    assert ptb_word.kind == "word"
    assert ptb_word.symbols == ptb_char.symbols
    for s in SPLITS:
        assert torch.equal(ptb_word.ids[s], ptb_char.ids[s]), s


@pytest.mark.slow  # encodes all of PTB once a session: about 10 s
def test_real_ptb_cache_is_reused(ptb_char, ptb_cache, monkeypatch):
    def boom(self, lines):
        raise AssertionError("encoded again instead of loading the cache")

    monkeypatch.setattr(CharVocab, "encode_lines", boom)
    again = CharDataModule(data_dir=str(PTB_DIR), cache_dir=str(ptb_cache), download=False)
    assert again.symbols == ptb_char.symbols
    for s in SPLITS:
        assert torch.equal(again.ids[s], ptb_char.ids[s])


# ---- the stream rule on small files --------------------------------------------------------------
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


# ---- hub conversion (offline, local parquet) -----------------------------------------------------
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
