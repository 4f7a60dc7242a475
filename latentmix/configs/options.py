"""Settings dataclasses that document, check and expose themselves: ``option()`` fields and the CLI built from them.

Each job's settings are a dataclass whose fields are declared with :func:`option` — default, help text and
a check in one place::

    @dataclass
    class FitConfig:
        epochs: int = option(300, "passes over the training set", check=POSITIVE_INT)

From that one declaration:

* :func:`validate_fields` runs every field's check (``Settings.validate()`` calls it; a job adds rules that
  involve several fields);
* :func:`add_flags` adds one ``--epochs`` flag per field to an ``argparse`` parser, with the help text,
  the default and the choices of the field, and :func:`from_args` builds the dataclass back from the
  parsed arguments — so the command line can never drift from the library's defaults;
* :func:`identity` gives the settings that identify a run (for resuming), with paths resolved so that
  ``./data`` and ``data`` are the same run.

Only the standard library is imported here.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from latentmix.utils import validation


@dataclasses.dataclass(frozen=True)
class Check:
    """A field check: ``fn(value, name)`` returns the value or raises; ``choices`` feed the CLI."""

    fn: Callable[[Any, str], Any]
    choices: tuple[Any, ...] | None = None

    def __call__(self, value: Any, name: str) -> Any:
        return self.fn(value, name)


POSITIVE_INT = Check(validation.positive_int)
NON_NEGATIVE_INT = Check(validation.non_negative_int)
INT = Check(validation.integer)
SEED = Check(validation.seed)
POSITIVE_NUMBER = Check(validation.positive_number)
NON_NEGATIVE_NUMBER = Check(validation.non_negative_number)
PROBABILITY = Check(validation.probability)
TEXT = Check(validation.text)
POSITIVE_INTS = Check(validation.int_tuple)


def one_of(choices: Sequence[Any]) -> Check:
    options = tuple(choices)
    return Check(lambda value, name: validation.choice(value, name, options), choices=options)


def int_at_least(minimum: int) -> Check:
    return Check(lambda value, name: validation.int_at_least(value, name, minimum))


def int_in(minimum: int, maximum: int) -> Check:
    """An int in [minimum, maximum]: bounded work (frames, samples) refused up front, not run for hours."""
    return Check(lambda value, name: validation.int_in(value, name, minimum, maximum))


def number_in(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> Check:
    def check(value: Any, name: str) -> float:
        return validation.number(
            value,
            name,
            minimum=minimum,
            maximum=maximum,
            exclusive_minimum=exclusive_minimum,
            exclusive_maximum=exclusive_maximum,
        )

    return Check(check)


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    check: Check | None = None,
    flags: tuple[str, ...] | None = None,
    parse: Callable[[str], Any] | None = None,
    convert: Callable[[Any], Any] | None = None,
    metavar: str | None = None,
    group: str | None = None,
    cli: bool = True,
    identity: bool = True,
    path: bool = False,
) -> Any:
    """A dataclass field with its help text and check.

    Args:
        default: the default value (immutable: tuples, not lists).
        help: one line for ``--help`` and the docs; say what None means when None is the default.
        check: run on the value by :func:`validate_fields` (None values of Optional fields are skipped).
        flags: command-line spellings (default: ``--field-name``).
        parse: converts one command-line token (default: from the field's type).
        convert: applied to the parsed value(s) before the dataclass is built (e.g. pairs from a flat list).
        metavar: placeholder in ``--help``.
        group: fields sharing a group name are mutually exclusive on the command line.
        cli: False keeps the field off the command line.
        identity: False leaves the field out of :func:`identity` (e.g. output locations).
        path: the value is a path when it names an existing file or directory (resolved in :func:`identity`).
    """
    metadata = {
        "help": help,
        "check": check,
        "flags": flags,
        "parse": parse,
        "convert": convert,
        "metavar": metavar,
        "group": group,
        "cli": cli,
        "identity": identity,
        "path": path,
    }
    return dataclasses.field(default=default, metadata=metadata)


# -- types ------------------------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """(inner type, whether None is allowed) of ``X | None``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def validate_fields(config: Any) -> None:
    """Run each field's check; ``None`` passes for fields typed ``X | None``."""
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        _, optional = _unwrap_optional(hints[f.name])
        if value is None and optional:
            continue
        check = f.metadata.get("check")
        if check is not None:
            check(value, f.name)


def identity(config: Any) -> dict[str, Any]:
    """The settings that identify a run: fields marked ``identity`` (default), JSON-ready, with path
    fields that name an existing file or directory resolved to an absolute path."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if not f.metadata.get("identity", True):
            continue
        value = getattr(config, f.name)
        if f.metadata.get("path") and _spelled_as_path(value):
            value = str(Path(value).expanduser().resolve())
        out[f.name] = _jsonable(value)
    return out


def _spelled_as_path(value: Any) -> bool:
    """A value that names an existing file or directory *as a path* (``./x``, ``a/b``, ``~/x``); bare names
    such as ``digits`` or ``digits-vae`` stay names, as the loaders read them."""
    if not isinstance(value, (str, os.PathLike)):
        return False
    text = os.fspath(value)
    looks_like_path = isinstance(value, os.PathLike) or os.sep in text or "/" in text or text.startswith((".", "~"))
    return looks_like_path and Path(text).expanduser().exists()


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


# -- the command line --------------------------------------------------------------------------------


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``latentmix: error: ...`` and exit status 2, no usage dump."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"latentmix: error: {message} (see `{self.prog} --help`)\n")


def _none_or(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(token: str) -> Any:
        return None if token.lower() == "none" else parse(token)

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _format_default(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(_format_default(v) for v in value)
    return str(value)


def add_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: Sequence[str] = (),
    defaults: dict[str, Any] | None = None,
    required: Sequence[str] = (),
) -> None:
    """One flag per field of the dataclass ``cls`` (see the module docstring).

    ``defaults`` overrides a field's default for this command (shown in ``--help`` and used by
    :func:`from_args`); ``required`` fields must be given on this command line. Flags left out of the
    command line keep the dataclass default.
    """
    hints = _hints(cls)
    groups: dict[str, Any] = {}
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in skip:
            continue
        default = defaults.get(f.name, f.default)
        inner, optional = _unwrap_optional(hints[f.name])
        flags = meta.get("flags") or ("--" + f.name.replace("_", "-"),)
        help_text = meta.get("help") or ""
        if not help_text:
            raise TypeError(f"{cls.__name__}.{f.name} has no help text")
        target = parser
        if meta.get("group"):
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_mutually_exclusive_group()
            target = groups[meta["group"]]
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if f.name in required:
            kwargs["required"] = True
        if inner is bool:
            if default:
                flags = tuple(flag.replace("--", "--no-", 1) for flag in flags)
                target.add_argument(*flags, action="store_false", help=f"{help_text} (on by default)", **kwargs)
            else:
                target.add_argument(*flags, action="store_true", help=help_text, **kwargs)
            continue
        parse = meta.get("parse")
        origin = typing.get_origin(inner)
        if origin is tuple and parse is None:
            element = typing.get_args(inner)[0]
            parse = element if element in (int, float, str) else str
            kwargs["nargs"] = "+"
        elif origin is tuple:
            kwargs["nargs"] = "+"
        elif parse is None:
            parse = inner if inner in (int, float, str) else str
        assert parse is not None
        if optional and default is not None:
            parse = _none_or(parse)
        kwargs["type"] = parse
        check = meta.get("check")
        if check is not None and check.choices is not None and origin is not tuple:
            kwargs["choices"] = check.choices
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if default is not None and default is not dataclasses.MISSING and default != ():
            help_text = f"{help_text} (default: {_format_default(default)})"
        target.add_argument(*flags, help=help_text, **kwargs)


def from_args(cls: type, args: argparse.Namespace, *, defaults: dict[str, Any] | None = None, **values: Any) -> Any:
    """Build ``cls`` from parsed arguments (fields given on the command line), ``defaults`` and ``values``."""
    hints = _hints(cls)
    given = dict(defaults or {})
    for f in dataclasses.fields(cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            inner, _ = _unwrap_optional(hints[f.name])
            if isinstance(value, list) and typing.get_origin(inner) is tuple:
                value = tuple(value)
            convert = f.metadata.get("convert")
            if convert is not None and value is not None:
                value = convert(value)
            given[f.name] = value
    given.update(values)
    return cls(**given)


def index_pair(token: str) -> tuple[int, int]:
    """``"3:8"`` → ``(3, 8)`` (two integers)."""
    a, b = name_pair(token)
    try:
        return int(a), int(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two integer indices I:J, got {token!r}") from None


def name_pair(token: str) -> tuple[str, str]:
    """``"cat:dog"`` → ``("cat", "dog")``."""
    parts = token.split(":")
    if len(parts) != 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected A:B, got {token!r}")
    return parts[0], parts[1]
