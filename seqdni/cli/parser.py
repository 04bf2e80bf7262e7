"""The commands' argument parsers (jsonargparse's, LightningCLI's for training), with a bad argument
said in one paragraph.

jsonargparse reports a bad argument with the whole usage (over a hundred lines for a Trainer) and a
nested account of every type it tried. These parsers say instead which key was wrong, what it takes and
what was given, and where to look (`--help`), then exits with status 1 like every other mistake
(`seqdni.errors`). With `--debug` or SEQDNI_DEBUG=1 jsonargparse's own report is kept.

The account nests from the outer key inwards (`Parser key "model"`, then `Parser key "dni"`, ...), so
the full key is those names joined; each rule below reads one kind of mistake from it, and a message
none of them reads is kept, on one line.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LightningArgumentParser

from seqdni.errors import UserError, paragraph

SHIPPED = Path(__file__).resolve().parents[1] / "configs"  # the configs installed with the package
TYPE_NAMES = {"NoneType": "null", "int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}
NOT_CHOSEN = ("lightning.LightningModule", "lightning.LightningDataModule")  # model/data before a class_path


def _owner(message: str) -> str:
    """The innermost class the message names, as ' of <class>' ('' when none)."""
    owners = re.findall(r"class_path '([^']+)'", message)
    return f" of {owners[-1]}" if owners else ""


def _unknown_key(message: str, key: str) -> str | None:
    if m := re.search(r"Option '([^']+)' is not accepted", message):
        return f"{'.'.join(filter(None, (key, m[1])))} is not a setting{_owner(message)}"
    return None


def _unrecognized_inside(message: str, key: str) -> str | None:
    if not key or not (m := re.search(r"unrecognized arguments: (.*)$", message, re.MULTILINE)):
        return None
    given = re.sub(r"--(\S+)", lambda a: f"--{key}.{a[1]}", m[1].strip())
    owner = _owner(message)
    hint = (" (no class is chosen for it yet: give --config or its class_path before its keys)"
            if owner.removeprefix(" of ") in NOT_CHOSEN else "")
    return f"{given} is not an argument{owner}{hint}"


def _wrong_type(message: str, key: str) -> str | None:
    """The innermost check ('Expected a <class 'float'>. Got value: x'), or a Union of plain types."""
    if m := re.search(r"Expected a <class '(\w+)'>\. Got value: (.*)$", message, re.MULTILINE):
        return f"{key} must be {TYPE_NAMES.get(m[1], m[1])}, got {m[2].strip()!r}"
    given = [re.sub(r"NestedArg\(key='[^']*', val='(.*)'\)$", r"\1", g.strip())
             for g in re.findall(r"Given value: (.*)$", message, re.MULTILINE)]
    if not (key and given):
        return None
    alternatives = [re.fullmatch(r"Expected a <class '(\w+)'>", a.strip())
                    for a in re.findall(r"^\s*- (.*)$", message, re.MULTILINE)]
    if alternatives and all(alternatives):
        return f"{key} must be {' or '.join(TYPE_NAMES.get(a[1], a[1]) for a in alternatives)}, got {given[-1]!r}"
    if m := re.search(r"Subtypes: \[(.*)\]$", message, re.MULTILINE):
        return f"{key} cannot be {given[-1]!r}: it takes one of {m[1]}"
    return None


RULES = (_unknown_key, _unrecognized_inside, _wrong_type)


def plain(message: str, prog: str, shipped: Path | None = None) -> str:
    """jsonargparse's account of a bad argument as one sentence: the full key, what is wrong with it,
    and what to do."""
    key = ".".join(re.findall(r'Parser key "([^"]+)"', message))
    if m := re.search(r"File does not exist: '([^']+)'", message):
        return f"--{key or 'config'}: no such file: {m[1]}{shipped_hint(m[1], shipped)}"
    said = next((s for rule in RULES if (s := rule(message, key))), None)
    if said is None:
        said = " ".join(ln.strip(" -") for ln in message.splitlines() if ln.strip(" -"))
    return f"{said}; `{prog} --help` lists every key and its type"


def shipped_hint(path: str, shipped: Path | None) -> str:
    """For a missing `configs/<family>/<name>.yaml`: the family's shipped configs, when it has any."""
    parts = Path(path).parts
    if shipped is None or "configs" not in parts:
        return ""
    family = shipped.joinpath(*parts[parts.index("configs") + 1 : -1])
    names = sorted(p.name for p in family.glob("*.yaml")) if family.is_dir() else []
    if not names:
        return " (nor among the shipped configs)"
    return f" (nor among the shipped configs; {family.name}/ has {', '.join(names)})"


class OneParagraph:
    """A jsonargparse parser whose errors end in one paragraph and exit status 1; `debug`: jsonargparse's
    own report instead."""

    def __init__(self, *args, debug: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.debug = debug

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error or self.debug:  # a nested parser raises to the outer one
            super().error(message, ex)
        prog = self.prog.split(" [")[0]  # a subcommand's parser is "<prog> [options] fit"
        print(paragraph(UserError(plain(message, prog, SHIPPED)), prog, debug_shows="jsonargparse's full report"),
              file=sys.stderr)
        self.exit(1)


class Parser(OneParagraph, LightningArgumentParser):
    """The training command's parser (LightningCLI's)."""


class FunctionParser(OneParagraph, ArgumentParser):
    """The parser of a command that calls one function (`jsonargparse.auto_cli`): `seqdni.sample`."""
