"""Finding Penn Treebank: `data.data_dir`, then $SEQDNI_DATA_DIR, then the cache, then a download;
and the error that names what was tried and how to fix it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import CHAR_FILES, STREAMS, WORD_FILES, decoded, write_ptb

from seqdni.data import CharDataModule, ptb
from seqdni.errors import UserError


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
    monkeypatch.setattr(ptb, "hub_unreachable", lambda: None)
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
    monkeypatch.setattr(ptb, "hub_unreachable", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"failed \(ConnectionError: no route to host\).*--data\.data_dir"):
        CharDataModule(cache_dir=str(tmp_path / "cache"), download=True)


@pytest.mark.parametrize("offline", ["env", "no-route"])
def test_an_evident_offline_machine_is_not_asked_to_download(tmp_path, monkeypatch, offline):
    """Offline mode, or a hub with no route to it: no download attempt (which would retry for half a
    minute), and the reason in the one message."""
    monkeypatch.delenv(ptb.ENV_VAR, raising=False)
    monkeypatch.setattr(ptb, "fetch_ptb_from_hub", lambda out: pytest.fail("an offline machine must not fetch"))
    if offline == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        expected = "HF_HUB_OFFLINE is set, so the hub is not asked"
    else:
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            monkeypatch.delenv(var, raising=False)

        def no_route(*a, **kw):
            raise OSError(101, "Network is unreachable")

        monkeypatch.setattr(ptb.socket, "create_connection", no_route)
        expected = "the hub (huggingface.co) cannot be reached: Network is unreachable"
    with pytest.raises(UserError) as err:
        CharDataModule(cache_dir=str(tmp_path / "cache"), download=True)
    assert expected in str(err.value) and "--data.data_dir DIR" in str(err.value)


def test_default_cache_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ptb.default_cache_dir() == tmp_path / "seqdni"


# ---- errors --------------------------------------------------------------------------------------
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
