"""Character vocabulary backed by a Hugging Face `tokenizers` WordLevel model.

The canonical form of a vocabulary is its ordered list of symbols: it is what a
checkpoint stores (as a hyperparameter) and what `vocab.json` beside a run holds, so
sampling needs no dataset. The tokenizer is rebuilt from that list on demand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from seqdni.errors import UserError

EOL = "\n"
WORD_SEP = "_"


class CharVocab:
    """Maps characters to ids and back; every character is one token."""

    def __init__(self, symbols: Sequence[str]):
        symbols = list(symbols)
        if len(set(symbols)) != len(symbols) or any(len(s) != 1 for s in symbols):
            raise UserError(f"a vocabulary is a list of distinct single characters, got {symbols!r}")
        self.symbols = symbols
        self.index = {s: i for i, s in enumerate(symbols)}
        tok = Tokenizer(models.WordLevel(vocab=self.index, unk_token=None))
        # Split into single characters, newlines included ([\s\S] also matches "\n").
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        self.tokenizer = tok

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharVocab:
        chars: set[str] = set()
        for t in texts:
            chars.update(t)
        return cls(sorted(chars))

    @classmethod
    def load(cls, path: str | Path) -> CharVocab:
        return cls(json.loads(Path(path).read_text())["symbols"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"symbols": self.symbols}, ensure_ascii=False))

    def __len__(self) -> int:
        return len(self.symbols)

    def unknown(self, text: str) -> list[str]:
        """Characters of `text` outside the vocabulary, in order of first appearance."""
        return list(dict.fromkeys(ch for ch in text if ch not in self.index))

    def from_display(self, text: str) -> str:
        """Text as people type it -> stream text: spaces become `_` in a PTB-style vocabulary."""
        return text.replace(" ", WORD_SEP) if " " not in self.index and WORD_SEP in self.index else text

    def encode(self, text: str) -> list[int]:
        bad = self.unknown(text)
        if bad:
            raise UserError(
                f"characters not in the vocabulary: {', '.join(repr(c) for c in bad)}; "
                f"the vocabulary has {len(self)} symbols: {''.join(self.symbols)!r}"
            )
        return self.tokenizer.encode(text).ids if text else []

    def encode_lines(self, lines: list[str]) -> torch.Tensor:
        """Encode many lines in parallel (Rust threads) into one flat id tensor."""
        encs = self.tokenizer.encode_batch(lines)
        ids = [i for e in encs for i in e.ids]
        return torch.tensor(ids, dtype=torch.int16 if len(self) > 255 else torch.uint8)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.symbols[i] for i in ids)


def render(text: str) -> str:
    """PTB stream text for people: `_` between words becomes a space."""
    return text.replace(WORD_SEP, " ")
