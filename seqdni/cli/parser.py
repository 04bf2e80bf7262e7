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

import os
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


def _innermost_union(message: str) -> tuple[list[str], list[str], str | None]:
    """The subtypes, the alternatives' errors and the given value of the innermost Union the message reports."""
    start = message.rfind("Subtypes:")
    if start < 0:
        return [], [], None
    end = message.find("Given value type:", start)
    block = message[start : end if end > 0 else len(message)]
    given = re.search(r"Given value: (.*)$", message[start:], re.MULTILINE)
    value = re.sub(r"NestedArg\(key='[^']*', val=(['\"])(.*)\1\)$", r"\2", given[1].strip()) if given else None
    subtypes = re.match(r"Subtypes: \[(.*)\]$", block, re.MULTILINE)
    kinds = re.split(r",\s*(?![^\[]*\])", subtypes[1]) if subtypes else []
    return kinds, re.findall(r"^\s*- (.*)$", block, re.MULTILINE), value


def _type_name(text: str) -> str:
    """`<class 'x.Y'>` as Y, NoneType as null, the plain types in words."""
    name = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text.strip())
    return TYPE_NAMES.get(name, name)


def _wrong_type(message: str, key: str) -> str | None:
    """The innermost check ('Expected a <class 'float'>. Got value: x', or a choice of values:
    'Expected a typing.Literal['a', 'b']. Got value: c'), or the innermost Union."""
    leaves = list(re.finditer(r"Expected a (?:<class '(\w+)'>|typing\.Literal\[(.*)\])\. Got value: (.*)$", message,
                              re.MULTILINE))
    if leaves:
        kind, choices, value = leaves[-1].groups()
        if choices is not None:
            return f"{key} must be one of {choices.replace(chr(39), '')}, got {value.strip()!r}"
        return f"{key} must be {_type_name(kind)}, got {value.strip()!r}"
    kinds, alternatives, value = _innermost_union(message)
    if not (key and value is not None and alternatives):
        return None
    plain_types = [re.fullmatch(r"Expected a (<class '\w+'>)", a.strip()) for a in alternatives]
    if all(plain_types):
        return f"{key} must be {' or '.join(_type_name(t[1]) for t in plain_types)}, got {value!r}"
    return f"{key} cannot be {value!r}: it takes one of {', '.join(_type_name(t) for t in kinds) or '?'}"


RULES = (_unknown_key, _unrecognized_inside, _wrong_type)


def plain(message: str, prog: str, shipped: Path | None = None) -> str:
    """jsonargparse's account of a bad argument as one sentence: the full key, what is wrong with it,
    and what to do."""
    key = ".".join(re.findall(r'Parser key "([^"]+)"', message))
    if m := re.search(r"File does not exist: '([^']+)'", message):
        return f"--{key or 'config'}: no such file: {m[1]}{shipped_hint(m[1], shipped)}"
    said = next((s for rule in RULES if (s := rule(message, key))), None)
    if said is None:
        said = " ".join(ln.strip(" -") for ln in message.splitlines() if ln.strip(" -")).rstrip(".")
    return f"{said}; {where_keys_are(message, key, prog)}"


def where_keys_are(message: str, key: str, prog: str) -> str:
    """`--help` lists the Trainer's keys; a model's or data module's are listed by `--model.help CLASS`."""
    owners = re.findall(r"class_path '([^']+)'", message)
    parts = key.split(".")
    if parts[0] in ("model", "data") and owners and owners[0] not in NOT_CHOSEN:
        # a key of a nested options class (model.dni.*) is listed by that class's own help
        nested = f" --{parts[0]}.{parts[1]}.help" if len(owners) > 1 and len(parts) > 1 else ""
        return f"`{prog} --{parts[0]}.help {owners[0]}{nested}` lists its keys and their types"
    return f"`{prog} --help` lists every key and its type"


def shipped_hint(path: str, shipped: Path | None) -> str:
    """For a missing `configs/<family>/<name>.yaml` under the working directory (the paths the command
    also looks up among the shipped configs): the family's shipped configs, when it has any."""
    try:
        parts = Path(path).resolve().relative_to(Path.cwd().resolve()).parts
    except ValueError:
        return ""
    if shipped is None or not parts or parts[0] != "configs":
        return ""
    family = shipped.joinpath(*parts[1:-1])
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
        if not self.exit_on_error or self.debug or os.environ.get("JSONARGPARSE_DEBUG"):  # nested: raise to the outer
            super().error(message, ex)
        prog = self.prog.split(" [")[0]  # a subcommand's parser is "<prog> [options] fit"
        print(paragraph(UserError(plain(message, prog, SHIPPED)), prog, debug_shows="jsonargparse's full report"),
              file=sys.stderr)
        self.exit(1)


class Parser(OneParagraph, LightningArgumentParser):
    """The training command's parser (LightningCLI's)."""


class FunctionParser(OneParagraph, ArgumentParser):
    """The parser of a command that calls one function (`jsonargparse.auto_cli`): `seqdni.sample`."""
