"""Input checks shared by every module: each names the argument and what was expected.

A check takes ``(value, name)`` and returns the value (converted where that is lossless) or raises
``ValueError`` / ``TypeError`` with a message such as ``"steps must be a positive int, got 0"``. Config
dataclasses attach checks to their fields (:func:`latentmix.configs.options.option`), library functions call them
directly. Only the standard library is imported here, so the CLI can use these without loading torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def int_at_least(value: Any, name: str, minimum: int) -> int:
    """An int >= ``minimum`` (bools are not ints here)."""
    if not _is_int(value) or value < minimum:
        kind = {0: "an int >= 0", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def int_in(value: Any, name: str, minimum: int, maximum: int) -> int:
    """An int in [minimum, maximum]."""
    value = int_at_least(value, name, minimum)
    if value > maximum:
        raise ValueError(f"{name} must be at most {maximum:,}, got {value:,}")
    return value


def seed(value: Any, name: str = "seed") -> int:
    """A seed: an int in [0, 2**63) (what torch, NumPy and Python's generators all take)."""
    if not _is_int(value) or not 0 <= value < 2**63:
        raise ValueError(f"{name} must be an int in [0, 2**63), got {value!r}")
    return int(value)


def positive_int(value: Any, name: str) -> int:
    return int_at_least(value, name, 1)


def non_negative_int(value: Any, name: str) -> int:
    return int_at_least(value, name, 0)


def integer(value: Any, name: str) -> int:
    if not _is_int(value):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return int(value)


def number(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> float:
    """A finite number within the given bounds (NaN and ±inf are refused)."""
    ok = _is_number(value) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if exclusive_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if exclusive_maximum else value <= maximum
    if not ok:
        bounds = []
        if minimum is not None:
            bounds.append(f"{'>' if exclusive_minimum else '>='} {minimum:g}")
        if maximum is not None:
            bounds.append(f"{'<' if exclusive_maximum else '<='} {maximum:g}")
        raise ValueError(f"{name} must be a finite number{' ' + ' and '.join(bounds) if bounds else ''}, got {value!r}")
    return float(value)


def positive_number(value: Any, name: str) -> float:
    return number(value, name, minimum=0, exclusive_minimum=True)


def non_negative_number(value: Any, name: str) -> float:
    return number(value, name, minimum=0)


def guidance_scale(value: Any, name: str = "guidance_scale") -> float:
    """Classifier-free guidance scale: a finite number >= 1 (1 turns guidance off)."""
    if not (_is_number(value) and math.isfinite(value) and value >= 1):
        raise ValueError(f"{name} must be a finite number >= 1 (1 turns classifier-free guidance off), got {value!r}")
    return float(value)


def strength(value: Any, name: str = "strength") -> float:
    """Partial inversion strength of latent diffusion: a number in (0, 1] (1 inverts all the way to noise)."""
    if not (_is_number(value) and math.isfinite(value) and 0 < value <= 1):
        raise ValueError(f"{name} must be a number in (0, 1] (1 inverts all the way to noise), got {value!r}")
    return float(value)


def probability(value: Any, name: str) -> float:
    return number(value, name, minimum=0, maximum=1)


def choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def int_tuple(value: Any, name: str, *, minimum: int = 1) -> tuple[int, ...]:
    """A non-empty sequence of ints >= ``minimum``, as a tuple."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a sequence of ints, got {value!r}")
    items = tuple(value)
    if not items or not all(_is_int(v) and v >= minimum for v in items):
        raise ValueError(f"{name} must be a non-empty sequence of ints >= {minimum}, got {value!r}")
    return items


def output_file(value: Any, name: str, suffixes: tuple[str, ...]) -> str:
    """A file path a job will write when it ends (a report, a diagram): the right suffix, not a directory, and a
    place that can be written — checked before the work, not found out after it."""
    path = Path(suffix(value, name, suffixes)).expanduser()
    if path.is_dir():
        raise ValueError(f"{name}: {path} is a directory; give a file path")
    parent = path.parent if str(path.parent) else Path(".")
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if (
        not existing.is_dir()
        or not os.access(existing, os.W_OK | os.X_OK)
        or (path.exists() and not os.access(path, os.W_OK))
    ):
        raise ValueError(f"{name}: {path} cannot be written (no write permission in {existing})")
    return os.fspath(value)


DEVICE_KINDS = ("auto", "cpu", "cuda", "mps", "xpu")


def device_name(value: Any, name: str = "device") -> str:
    """A device name: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``xpu``; whether
    the machine has it is asked when the job runs (:func:`latentmix.utils.device.resolve_device`)."""
    kind, _, index = value.partition(":") if isinstance(value, str) else ("", "", "")
    if kind not in DEVICE_KINDS or (index and not (index.isdigit() and kind in ("cuda", "xpu"))):
        raise ValueError(f"{name} must be one of {', '.join(DEVICE_KINDS)} (or cuda:N), got {value!r}")
    return value


def attention_slice(value: Any, name: str = "attention_slicing") -> str | int:
    """``auto``, ``max`` or a positive number of attention slices (``"4"`` from a command line is 4)."""
    if isinstance(value, str) and value in ("auto", "max"):
        return value
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if _is_int(value) and value > 0:
        return int(value)
    raise ValueError(f"{name} must be auto, max or a positive number of slices, got {value!r}")


def variant_name(value: Any, name: str = "variant") -> str:
    """A weight-file variant such as ``fp16`` (letters, digits, ``_`` and ``-``)."""
    if not isinstance(value, str) or not value or not all(c.isalnum() or c in "_-" for c in value):
        raise ValueError(f"{name} must be a variant name such as fp16, got {value!r}")
    return value


def parse_json(text: str, where: str) -> Any:
    """``json.loads(text)``, or a one-line ``ValueError`` naming ``where`` — for malformed JSON, and for JSON nested
    so deeply that the parser would exhaust Python's recursion limit."""
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply to read") from None


def suffix(value: Any, name: str, suffixes: tuple[str, ...]) -> str:
    """A path ending in one of ``suffixes`` (case-insensitive), e.g. ``--json`` must be a .json path."""
    if not isinstance(value, (str, os.PathLike)) or Path(value).suffix.lower() not in suffixes:
        raise ValueError(f"{name} must be a {' or '.join(suffixes)} path, got {value}")
    return os.fspath(value)
