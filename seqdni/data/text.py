"""Character-level data: PTB (or any text files) as contiguous streams for TBPTT."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
import torch

from seqdni.data import ptb
from seqdni.data.streams import StreamBatches
from seqdni.data.task import Task
from seqdni.data.vocab import CharVocab
from seqdni.errors import MissingInput, UserError

CACHE_VERSION = 1


def read_text_file(kind: str, path: Path, split: str) -> list[str]:
    """A data file's stream lines; a file that holds no text is an error that names it."""
    lines = ptb.read_stream_lines(kind, path)
    if not any(lines):
        option = {"train": "train_files", "valid": "val_files", "test": "test_files"}[split]
        given = f", data.{option}" if kind == "raw" else ""
        raise UserError(f"{path} holds no text (it is the {split} split{given}); give a file with the text "
                        "to train and evaluate on")
    return lines


class CharDataModule(L.LightningDataModule):
    """Character streams from Penn Treebank, or from your own text files.

    Args:
        data_dir: Directory with ptb.char.{train,valid,test}.txt or ptb.{train,valid,test}.txt.
            Unset: $SEQDNI_DATA_DIR, then the cache, then a one-time download.
        batch_size: Number of parallel streams B (per device).
        window: Columns per training batch; cut into unrolls of `model.unroll` steps,
            so it must be a multiple of the unroll.
        eval_batch_size: Streams for validation/test (fewer streams: fewer ids dropped).
        eval_window: Columns per evaluation batch (no gradients: can be long).
        train_files: Plain-text files to train on instead of PTB (raw characters).
        val_files: Plain-text validation files (with train_files).
        test_files: Plain-text test files (with train_files; optional).
        cache_dir: Where encoded ids (and a downloaded PTB) are kept; default ~/.cache/seqdni.
        download: Allow fetching PTB from the Hugging Face hub when it is nowhere on disk.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 64,
        window: int = 120,
        eval_batch_size: int = 16,
        eval_window: int = 1000,
        train_files: list[str] | None = None,
        val_files: list[str] | None = None,
        test_files: list[str] | None = None,
        cache_dir: str | None = None,
        download: bool = True,
    ):
        super().__init__()
        for key, value in (("data.batch_size", batch_size), ("data.window", window),
                           ("data.eval_batch_size", eval_batch_size), ("data.eval_window", eval_window)):
            if value <= 0:
                raise UserError(f"{key} must be positive, got {value}")
        if train_files and not val_files:
            raise UserError("data.train_files needs data.val_files too (validation picks the best checkpoint)")
        self.batch_size, self.window = batch_size, window
        self.eval_batch_size, self.eval_window = eval_batch_size, eval_window
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else ptb.default_cache_dir()
        if train_files:
            self.kind = "raw"
            self.files = {"train": [Path(p) for p in train_files], "valid": [Path(p) for p in val_files or []],
                          "test": [Path(p) for p in test_files or []]}
            for p in (p for ps in self.files.values() for p in ps):
                if not p.is_file():
                    raise MissingInput(f"data file not found: {p}")
        else:
            self.kind, found = ptb.locate_ptb(data_dir, self.cache_dir, download)
            self.files = {s: [p] for s, p in found.items()}
        # Built now, not in setup(): the CLI links the vocabulary to the model at instantiation.
        self.vocab, self.ids = self._load_or_encode()

    @property
    def symbols(self) -> list[str]:
        return self.vocab.symbols

    @property
    def has_test(self) -> bool:
        return self.ids["test"].numel() > 0

    @property
    def task(self) -> Task:
        """What the model is linked to: a character task over this vocabulary."""
        return Task("chars", self.symbols)

    def probe_batch(self, rows: int, span: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A held window of `rows` validation streams, `span` columns, for the true-gradient probe."""
        ids = self.ids["valid"]
        length = ids.numel() // rows
        if length <= span:
            return None
        grid = ids[: rows * length].view(rows, length)
        return grid[:, :span].long(), grid[:, 1 : span + 1].long()

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _cache_key(self) -> str:
        h = hashlib.sha1(f"v{CACHE_VERSION}:{self.kind}".encode())
        for split in ptb.SPLITS:
            for p in self.files[split]:
                st = p.stat()
                h.update(f"{split}:{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    def _load_or_encode(self) -> tuple[CharVocab, dict[str, torch.Tensor]]:
        """Encoded ids are cached: encoding 5M characters must not repeat every run."""
        d = self.cache_dir / "encoded" / self._cache_key()
        if (d / "ids.pt").is_file():
            vocab = CharVocab.load(d / "vocab.json")
            return vocab, torch.load(d / "ids.pt", weights_only=True)
        lines = {s: [ln for p in self.files[s] for ln in read_text_file(self.kind, p, s)] for s in ptb.SPLITS}
        vocab = CharVocab.from_texts(ln for s in ptb.SPLITS for ln in lines[s])
        ids = {s: vocab.encode_lines(lines[s]) for s in ptb.SPLITS}
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f"ids.pt.{id(self)}.tmp"  # write-then-rename: concurrent ranks never see half a file
        vocab.save(d / "vocab.json")
        torch.save(ids, tmp)
        tmp.replace(d / "ids.pt")
        (d / "sources.json").write_text(json.dumps({s: [str(p) for p in self.files[s]] for s in ptb.SPLITS}))
        return vocab, ids

    def _rank(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def train_dataloader(self) -> StreamBatches:
        rank, world = self._rank()
        loader = StreamBatches(self.ids["train"], self.batch_size, self.window, True, rank, world)
        if len(loader) == 0:  # Lightning would skip training with a warning and exit as if it had trained
            per_stream = self.ids["train"].numel() // (self.batch_size * world)
            raise UserError(
                f"data.window ({self.window}) is longer than each training stream: the "
                f"{self.ids['train'].numel()} training ids make {self.batch_size * world} streams of {per_stream} "
                f"ids (data.batch_size {self.batch_size} × {world} device(s)); lower data.window or data.batch_size")
        return loader

    def _eval_loader(self, split: str) -> StreamBatches | list:
        if self.ids[split].numel() == 0:
            return []
        rank, world = self._rank()
        return StreamBatches(self.ids[split], self.eval_batch_size, self.eval_window, False, rank, world)

    def val_dataloader(self):
        return self._eval_loader("valid")

    def test_dataloader(self):
        return self._eval_loader("test")
