"""Model cards: the MODEL_CARD.md every fitted model is saved with (one layout for all of them).

A card records the exact command that produced the model (so ``tests/test_embedded.py`` can re-run it),
what it was fitted on, the numbers measured after fitting (a ``| metric | value |`` table that tests read
back), where it was trained, and every setting.
"""

from __future__ import annotations

import platform
from dataclasses import asdict
from typing import Any

import torch

from latentmix.version import __version__


def metrics_table(metrics: dict[str, Any]) -> list[str]:
    """Markdown rows of a metrics table (floats to 5 significant digits)."""
    rows = [f"| {k} | {v:.5g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    return ["| metric | value |", "|---|---|", *rows]


def model_card(
    *,
    title: str,
    command: str | None,
    default_command: str,
    description: str,
    metrics: dict[str, Any],
    notes: tuple[str, ...] = (),
    settings: Any = None,
    device: str | torch.device = "cpu",
) -> str:
    """The text of a MODEL_CARD.md.

    Args:
        title: what the model is ("ConvVAE backend").
        command: the command line that made it (None for a Python call: ``default_command`` is shown).
        description: a paragraph: architecture and the data it was fitted on.
        metrics: measured numbers (read back by tests: keep the keys stable).
        notes: lines after the table (how the numbers were measured).
        settings: the config dataclass (every field is listed).
        device: where it was trained.
    """
    lines = [
        f"# {title} (latentmix)",
        "",
        f"Produced by latentmix {__version__} with:",
        "",
        "```",
        command or default_command,
        "```",
        "",
        description,
        "",
        "## Metrics",
        "",
        *metrics_table(metrics),
        "",
        *notes,
        f"Trained on {device} ({platform.machine()}, torch {torch.__version__}).",
    ]
    if settings is not None:
        lines += ["", "## Settings", "", "```", *[f"{k} = {v}" for k, v in asdict(settings).items()], "```"]
    return "\n".join(lines) + "\n"
