"""Captions of blends rendered from the blended factors, where the source data knows its factors (``shapes``).

The rule (``latentmix synthesize --caption factors``, the default for data with factors):

* each factor — the label included — takes the **dominant** parent's value (a's when λ ≥ 0.5, else b's);
* optionally (``margin`` > 0), where the parents differ in a factor and λ is within ``margin`` of 0.5, the blend
  is between the two and **both** values are named, the dominant first ("a red or blue circle", "on the left or
  at the top"). The default is 0 — always the dominant value — because ``shapes-align`` scores those captions
  higher (text→image recall@1 68.8 % against 66.8 % with margin 0.1 on random shapes-ldm blends; BENCHMARKS.md);
  a judge that has never read an "or" caption cannot reward one, so the choice is worth re-measuring with a
  judge fitted on such captions;
* the caption names every factor, the shape included (no vague noun: a synthetic caption says what it can).

For ``shapes`` the words and templates are the data set's own (:mod:`latentmix.data.shapes`), picked by the
sample's index so that a set has the paraphrase variety of the real captions; for other data with factors
(a folder with ``factors.json``) a plain "circle; colour: red; size: small" form is used. Without factors the
nearest-caption rule of :mod:`latentmix.latent.blend` stays. ``latentmix evaluate-pairs`` compares the rules.
"""

from __future__ import annotations

from typing import Any

from latentmix.data.base import ImageTextDataset

DEFAULT_MARGIN = 0.0  # always the dominant value: the better rule by evaluate-pairs (BENCHMARKS.md)


def blended_factors(
    a: dict[str, str], b: dict[str, str], lam: float, margin: float = DEFAULT_MARGIN
) -> dict[str, tuple[str, ...]]:
    """Per factor, the values a blend with weight ``lam`` on ``a`` shows: the dominant one, or both (dominant
    first) where the parents differ and ``|lam - 0.5| < margin``."""
    first, second = (a, b) if lam >= 0.5 else (b, a)
    near_half = abs(lam - 0.5) < margin
    return {k: (first[k], second[k]) if near_half and first[k] != second[k] else (first[k],) for k in first}


def dominant_factors(a: dict[str, str], b: dict[str, str], lam: float) -> dict[str, str]:
    """The dominant parent's value of every factor."""
    return dict(a if lam >= 0.5 else b)


def is_shapes(data: Any) -> bool:
    """Whether ``data`` (anything with ``class_names`` and ``factor_values``) has the classes and factors of
    ``shapes`` (the embedded set, an export of it, a set made from it)."""
    from latentmix.data.shapes import FACTORS

    values = data.factor_values or {}
    same = [set(values.get(k, ())) == set(v) for k, v in FACTORS.items() if k != "shape"]
    return set(data.class_names) == set(FACTORS["shape"]) and set(values) == set(FACTORS) - {"shape"} and all(same)


def render_shapes(factors: dict[str, tuple[str, ...]], index: int) -> str:
    """A shapes caption naming every factor (alternatives joined by "or"), template and words chosen by ``index``."""
    from latentmix.data.shapes import (
        BACKGROUND_WORDS,
        POSITION_WORDS,
        SHAPE_WORDS,
        SIZE_WORDS,
        TEMPLATES,
        with_articles,
    )

    def words(table: dict[str, tuple[str, ...]], values: tuple[str, ...], salt: int) -> str:
        return " or ".join(table[v][(index // salt) % len(table[v])] for v in values)

    filled = {
        "shape": words(SHAPE_WORDS, factors["label"], 1),
        "colour": " or ".join(factors["colour"]),
        "size": words(SIZE_WORDS, factors["size"], 3),
        "where": words(POSITION_WORDS, factors["position"], 7),
        "background": " or ".join(BACKGROUND_WORDS[v] for v in factors["background"]),
    }
    return with_articles(TEMPLATES[index % len(TEMPLATES)].format(**filled))


def render_generic(factors: dict[str, tuple[str, ...]]) -> str:
    """``"circle; colour: red or blue; size: small"``: the label, then every other factor by name."""
    parts = [" or ".join(factors["label"])]
    parts += [f"{k}: {' or '.join(v)}" for k, v in factors.items() if k != "label"]
    return "; ".join(parts)


class FactorCaptioner:
    """Renders blend captions from the source data's factors (see the module docstring).

    Args:
        data: the source data; it must have factors.
        margin: how near λ must be to 0.5 for both differing values to be named (0: always the dominant one).
    """

    def __init__(self, data: ImageTextDataset, margin: float = DEFAULT_MARGIN):
        if data.factor_values is None:
            raise ValueError(
                "caption: 'factors' needs source data with factors (shapes, or a folder with factors.json)"
            )
        if not 0 <= margin <= 0.5:
            raise ValueError(f"caption_margin must be in [0, 0.5], got {margin}")
        self.data, self.margin, self.shapes = data, margin, is_shapes(data)

    def caption(self, ia: int, ib: int, lam: float, index: int) -> str:
        """The caption of sample ``index``, blending source items ``ia`` and ``ib`` with weight ``lam`` on ``ia``."""
        factors = blended_factors(self.data.factors(ia), self.data.factors(ib), lam, self.margin)
        return render_shapes(factors, index) if self.shapes else render_generic(factors)

    def factors(self, ia: int, ib: int, lam: float) -> dict[str, str]:
        """The dominant parent's factor values, written beside the caption."""
        return dominant_factors(self.data.factors(ia), self.data.factors(ib), lam)
