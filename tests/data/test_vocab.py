"""The character vocabulary: encoding, decoding, unknown characters, saving."""

from __future__ import annotations

import pytest
import torch

from seqdni.data import CharVocab


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
