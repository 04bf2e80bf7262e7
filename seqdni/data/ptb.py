"""Finding Penn Treebank on disk (or fetching it once) and turning it into text streams.

Stream rule, shared by every source: each non-blank line (sentence) becomes its
characters without the separator spaces, `_` between words, then one end-of-line.
Mikolov's character files (`ptb.char.*.txt`) and the word files (`ptb.*.txt`) give the
same streams; the character train file was derived from the word file by the rule in
the data README, which the word branch below inverts.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from pathlib import Path

from seqdni.data.vocab import EOL, WORD_SEP
from seqdni.errors import MissingInput, UserError

SPLITS = ("train", "valid", "test")
ENV_VAR = "SEQDNI_DATA_DIR"
HUB_DATASET = "ptb-text-only/ptb_text_only"
HUB_REVISION = "refs/convert/parquet"
HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}


def char_files(d: Path) -> dict[str, Path]:
    return {s: d / f"ptb.char.{s}.txt" for s in SPLITS}


def word_files(d: Path) -> dict[str, Path]:
    return {s: d / f"ptb.{s}.txt" for s in SPLITS}


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "seqdni"


def ptb_files_in(d: Path) -> tuple[str, dict[str, Path]] | None:
    """('char' | 'word', files) if `d` holds a complete set, else None."""
    for kind, files in (("char", char_files(d)), ("word", word_files(d))):
        if all(p.is_file() for p in files.values()):
            return kind, files
    return None


def _explain_partial(d: Path) -> str:
    have = sorted(p.name for p in d.glob("ptb*.txt")) if d.is_dir() else []
    want = ", ".join(p.name for p in char_files(d).values())
    alt = ", ".join(p.name for p in word_files(d).values())
    found = f"it holds only {have}" if have else ("it does not exist" if not d.exists() else "it holds no PTB files")
    return f"{d}: {found}; expected either {want} or {alt}"


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached, when that is evident at once (offline mode, no route), so that
    no download is attempted only to retry for half a minute; None when it may be reachable."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").lower() in ("1", "true", "yes", "on"):
            return f"{var} is set, so the hub is not asked"
    host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as err:
        return f"the hub ({host}) cannot be reached: {err.strerror or err}"
    return None


def locate_ptb(data_dir: str | None, cache_dir: Path, download: bool) -> tuple[str, dict[str, Path]]:
    """Find PTB: the `data_dir` option, then $SEQDNI_DATA_DIR, then the cache, then the hub.

    A location given explicitly (option or variable) that lacks the files is an error,
    never a silent fall-through to the next place.
    """
    for origin, given in (("data.data_dir", data_dir), (f"${ENV_VAR}", os.environ.get(ENV_VAR))):
        if given:
            found = ptb_files_in(Path(given).expanduser())
            if found is None:
                raise MissingInput(f"{origin} points at {_explain_partial(Path(given).expanduser())}")
            return found
    cached = cache_dir / "ptb"
    found = ptb_files_in(cached)
    if found is not None:
        return found
    if download and (reason := hub_unreachable()) is None:
        try:
            fetch_ptb_from_hub(cached)
            return ptb_files_in(cached)  # type: ignore[return-value]
        except Exception as err:  # hub down, datasets missing: all end the same way
            reason = f"fetching {HUB_DATASET} failed ({type(err).__name__}: {str(err).splitlines()[0]})"
    elif not download:
        reason = "download is off (data.download: false)"
    raise MissingInput(
        "Penn Treebank not found. Looked in: data.data_dir (not set), "
        f"${ENV_VAR} (not set), the cache {cached} (empty); {reason}. "
        f"Point at a directory holding ptb.char.{{train,valid,test}}.txt or ptb.{{train,valid,test}}.txt "
        f"with --data.data_dir DIR or `export {ENV_VAR}=DIR`."
    )


def char_lines_to_stream(lines: list[str]) -> list[str]:
    """Mikolov character lines (`a e r _ b a n k`) -> stream lines (`aer_bank\\n`)."""
    return [ln.replace(" ", "") + EOL for ln in lines if ln.strip()]


def word_lines_to_stream(lines: list[str]) -> list[str]:
    """Word lines (`aer banknote`) -> stream lines (`aer_banknote\\n`)."""
    return [WORD_SEP.join(ln.split()) + EOL for ln in lines if ln.strip()]


def read_stream_lines(kind: str, path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8", newline="") as f:  # newline="": raw text keeps its \r
            text = f.read()
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not a UTF-8 text file (byte {err.start} cannot be decoded); the data "
                        "files must be plain text") from err
    except OSError as err:
        raise UserError(f"{path} cannot be read ({err.strerror or err})") from err
    if kind == "char":
        return char_lines_to_stream(text.split("\n"))
    if kind == "word":
        return word_lines_to_stream(text.split("\n"))
    # raw text: the file as it is, cut after each "\n" (kept) so encoding parallelises
    return text.splitlines(keepends=True)


def write_word_files(split_sentences: dict[str, list[str]], out: Path) -> None:
    """Write `ptb.{split}.txt` word files (atomically) from lists of sentences."""
    out.mkdir(parents=True, exist_ok=True)
    for split, sentences in split_sentences.items():
        tmp = out / f".ptb.{split}.txt.tmp"
        tmp.write_text("".join(" " + s.strip() + " \n" for s in sentences), encoding="utf-8")
        tmp.replace(out / f"ptb.{split}.txt")


def sentences_from_dataset(ds) -> list[str]:
    """The `sentence` column of a `datasets` split shaped like the hub's PTB copy."""
    if "sentence" not in ds.column_names:
        raise UserError(f"expected a 'sentence' column, found {ds.column_names}")
    return list(ds["sentence"])


def fetch_ptb_from_hub(out: Path) -> None:
    """Download the hub copy of PTB (parquet revision) once and store it as word files."""
    import datasets

    dd = datasets.load_dataset(HUB_DATASET, revision=HUB_REVISION)
    write_word_files({s: sentences_from_dataset(dd[h]) for s, h in HUB_SPLITS.items()}, out)


def parquet_to_word_files(parquet: dict[str, str], out: Path) -> None:
    """Local parquet files (split -> path) with a `sentence` column -> PTB word files."""
    import datasets

    dd = datasets.load_dataset("parquet", data_files=parquet)
    write_word_files({s: sentences_from_dataset(dd[s]) for s in parquet}, out)
