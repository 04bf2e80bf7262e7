"""The errors seqdni reports to a person rather than to a program.

Every check of what a user gave (a config value, a file, a checkpoint, a sampling argument)
raises `UserError` with a message that is complete on its own: what is wrong, in which input,
and what to do. The command-line entry points print such a message as one paragraph on stderr
and exit with status 1, without a traceback; `SEQDNI_DEBUG=1` (or `--debug`) shows the
traceback as well. Any other exception is a bug and keeps its traceback.

Every layer may import this module; it imports nothing from seqdni.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
DEBUG_ENV = "SEQDNI_DEBUG"


class SeqDNIError(Exception):
    """An error whose message says all a user needs; the entry points print it without a traceback."""


class UserError(SeqDNIError, ValueError):
    """Bad input: a setting, a file, a checkpoint or an argument that cannot be used as given."""


def find(err: BaseException | None) -> SeqDNIError | None:
    """The `SeqDNIError` in an exception's chain (libraries such as jsonargparse wrap constructor errors)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, SeqDNIError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def paragraph(err: SeqDNIError, prog: str, debug_shows: str = "the traceback") -> str:
    """`prog: error: <message>`, wrapped at 100 columns, with the hint on how to see the traceback."""
    text = f"{prog}: error: {' '.join(str(err).split())} (set {DEBUG_ENV}=1 for {debug_shows})"
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)


def debugging(args: list[str]) -> bool:
    return "--debug" in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def reported(run: Callable[[], T], prog: str, args: list[str]) -> T:
    """`run()`, with any `SeqDNIError` in the chain of what it raises printed as one paragraph
    and turned into exit status 1 (unless debugging: then it propagates with its traceback)."""
    try:
        return run()
    except SystemExit as stop:
        if type(stop).__name__ == "SIGTERMException":  # Lightning stopped training on SIGTERM: say so
            print(f"{prog}: stopped by SIGTERM; resume from the run's latest checkpoint", file=sys.stderr)
            raise SystemExit(128 + 15) from None
        raise
    except BaseException as raised:  # noqa: BLE001 - only SeqDNIError chains are caught below
        err = find(raised)
        if err is None or debugging(args):
            raise
        print(paragraph(err, prog), file=sys.stderr)
        raise SystemExit(1) from None


class MissingInput(UserError, FileNotFoundError):
    """A file or folder that was named but is not there."""
