"""The prompt a diffusion backend draws each synthetic sample with: the example's caption, a template filled from
the example's fields, or a per-class prompt (file).

* ``template``: a ``str.format`` pattern over the example's fields — ``{class}`` (its class name), ``{text}`` (its
  caption) and, on data with factors, each factor (``{colour}``, ``{size}``, … on ``shapes``):
  ``"a photo of a {class}"`` is the prompt of Real Guidance and DA-Fusion.
* ``per_class``: ``{class name: prompt or [prompts]}`` (a JSON file on the command line), each prompt itself a
  template; a class with several prompts gets one per sample, drawn from (seed, sample index). Classes the file
  leaves out fall back to the template, or to the caption.

Every field a template names is checked against the data before any work: an unknown one is a ValueError that
names it and lists the fields there are.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import Any

import numpy as np

from latentmix.data.base import ImageTextDataset
from latentmix.latent.pairing import uniform

__all__ = ["PromptBook", "read_prompt_file"]


def read_prompt_file(path: str | os.PathLike, name: str = "prompts") -> dict[str, list[str]]:
    """``{class name: [prompts]}`` from a JSON file holding ``{class name: prompt or [prompts]}``."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{name}: {p} is not a file (a JSON object of class name -> prompt or list of prompts)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{name}: {p} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{name}: {p} must hold a non-empty JSON object of class name -> prompt or list of prompts")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        prompts = [value] if isinstance(value, str) else value
        if not isinstance(prompts, list) or not prompts or not all(isinstance(v, str) and v.strip() for v in prompts):
            raise ValueError(f"{name}: {p}: class {key!r} must map to a prompt or a non-empty list of prompts")
        out[str(key)] = list(prompts)
    return out


def _fields(template: str, name: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"{name}: {template!r} is not a valid template ({exc})") from None


class PromptBook:
    """Prompts of the examples of ``dataset`` (see the module docstring).

    Args:
        dataset: the source examples (captions, classes, factors).
        template: the prompt pattern, or None (the caption).
        per_class: ``{class name: [prompts]}`` (:func:`read_prompt_file`), or None.
        seed: the run's seed (draws one of several per-class prompts per sample).
        names: how the caller calls the template and the per-class prompts, for messages.
    """

    def __init__(
        self,
        dataset: ImageTextDataset,
        template: str | None = None,
        per_class: dict[str, list[str]] | None = None,
        seed: int = 0,
        names: tuple[str, str] = ("prompt_template", "prompts"),
    ):
        self.dataset, self.template, self.seed = dataset, template, int(seed)
        self.per_class = dict(per_class or {})
        unknown = [k for k in self.per_class if k not in dataset.class_names]
        if unknown:
            raise ValueError(
                f"{names[1]}: class {unknown[0]!r} is not a class of the data ({', '.join(dataset.class_names[:8])}…)"
            )
        self.available = ["class", "text", "label", *(dataset.factor_values or {})]
        patterns = [(names[0], template)] if template is not None else []
        patterns += [(names[1], p) for prompts in self.per_class.values() for p in prompts]
        for name, pattern in patterns:
            for field in _fields(pattern, name):
                if field not in self.available:
                    raise ValueError(
                        f"{name}: {pattern!r} names {{{field}}}; the data's fields are "
                        + ", ".join("{" + f + "}" for f in self.available)
                    )

    def values(self, example: int) -> dict[str, Any]:
        ds = self.dataset
        label = ds.class_names[int(ds.labels[example])]
        return {**ds.factors(example), "class": label, "label": label, "text": ds.texts[example]}

    def prompt(self, example: int, draw: float = 0.0) -> str:
        """The prompt of source ``example``; ``draw`` in [0, 1) picks one of its class's per-class prompts."""
        ds = self.dataset
        choices = self.per_class.get(ds.class_names[int(ds.labels[example])])
        pattern = choices[min(int(draw * len(choices)), len(choices) - 1)] if choices is not None else self.template
        if pattern is None:
            return ds.texts[example]
        return pattern.format(**self.values(example))

    def prompts(self, examples: np.ndarray, samples: np.ndarray | None = None) -> list[str]:
        """:meth:`prompt` of each example; of each sample where ``samples`` are given (a class with several prompts
        gets one drawn from (seed, sample index)), else each class's first prompt."""
        if samples is None or not self.per_class:
            return [self.prompt(int(e)) for e in examples]
        draws = uniform(self.seed, np.asarray(samples), "prompt")
        return [self.prompt(int(e), float(u)) for e, u in zip(examples, draws, strict=True)]
