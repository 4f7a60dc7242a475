"""Synchronized augmentation of pairs: transforms applied to (image, caption, factors) together, so they agree.

Transforms (each applied to a sample with probability ``p``, drawn from an explicit generator; batched):

* ``hflip`` — mirror left-right; the caption's "left" and "right" swap, and so does the value of every factor
  whose values (``factors.json``) hold both "left" and "right", whatever the factor is called;
* ``vflip`` — mirror top-bottom; "top"/"bottom" (and "above"/"below") swap, in captions and factors alike;
* ``translate`` — move the object to another named position (a circular shift by the difference of the two
  positions' centres); the caption's position phrase and the position factor become the new one;
* ``recolour`` — give the object another named colour: the object is told from the grey background by its
  chroma (anti-aliased edges get a partial change), and the caption's colour word and the colour factor follow.

Flips rewrite words that mean the same in any English caption, so they work on any captioned data.
``translate`` and ``recolour`` need to know where named positions are and what named colours look like: they
are defined for data with ``shapes``' factors (the embedded set, an export of it, a synthetic set made from it);
on other data they are refused with one line. ``mode="image-only"`` applies the very same image transforms but
leaves captions and factors as they were — the common practice that :mod:`latentmix.jobs.evaluate_pairs` shows to
break alignment; ``"none"`` changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from latentmix.data.factor_captions import is_shapes

TRANSFORMS = ("hflip", "vflip", "translate", "recolour")
MODES = ("synchronized", "image-only", "none")
NEEDS_SHAPES = {"translate": "position", "recolour": "colour"}
_SWAPS = {
    "hflip": ({"left": "right", "right": "left"}, {"left": "right", "right": "left"}),
    "vflip": (
        {"top": "bottom", "bottom": "top", "above": "below", "below": "above"},
        {"top": "bottom", "bottom": "top"},
    ),
}


@dataclass
class AugmentedPairs:
    """A batch after augmentation: images, captions, factors (None where the data has none), and per transform
    the (N,) mask of the samples it was applied to."""

    images: Tensor
    texts: list[str]
    factors: list[dict[str, str]] | None
    applied: dict[str, Tensor]


def swap_words(text: str, swaps: dict[str, str]) -> str:
    """Swap whole words (``{"left": "right", "right": "left"}``) in one pass, keeping a leading capital."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, swaps)) + r")\b", re.IGNORECASE)

    def swap(m: re.Match) -> str:
        new = swaps[m.group(1).lower()]
        return new.capitalize() if m.group(1)[0].isupper() else new

    return pattern.sub(swap, text)


def fix_articles(text: str) -> str:
    """ "a orange" -> "an orange", "an red" -> "a red" (after a word was replaced)."""
    text = re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)
    return re.sub(r"\b([Aa])n (?=[^aeiou\W])", r"\1 ", text)


def replace_phrase(text: str, old: tuple[str, ...], new: str) -> str:
    """Replace the first of the phrases ``old`` found in ``text`` (whole words) by ``new``."""
    for phrase in old:
        pattern = re.compile(r"\b" + re.escape(phrase) + r"\b")
        if pattern.search(text):
            return fix_articles(pattern.sub(new, text, count=1))
    return text


def circular_shift(images: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """Shift each image by its own whole-pixel offset (right by ``dx``, down by ``dy``), wrapping around."""
    n, c, h, w = images.shape
    rows = (torch.arange(h, device=images.device)[None, :] - dy[:, None]) % h  # (N, H)
    cols = (torch.arange(w, device=images.device)[None, :] - dx[:, None]) % w  # (N, W)
    out = images.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def recolour_objects(images: Tensor, targets: Tensor) -> Tensor:
    """Give each image's coloured object the RGB colour ``targets`` (N, 3) in [-1, 1], on a grey background.

    Per pixel, alpha = chroma / the image's largest chroma (1 inside the object, partial on anti-aliased edges,
    0 on grey); the object's colour is the mean of the pixels with alpha >= 0.8; the new pixel is the old one
    plus alpha x (target - object colour), which keeps the background mixed into the edges.
    """
    chroma = images.amax(1) - images.amin(1)  # (N, H, W)
    top = chroma.flatten(1).amax(1).clamp_min(1e-6)[:, None, None]
    alpha = (chroma / top).clamp(0, 1)[:, None]  # (N, 1, H, W)
    inside = (alpha >= 0.8).float()
    colour = (images * inside).sum((2, 3)) / inside.sum((2, 3)).clamp_min(1.0)  # (N, 3)
    return (images + alpha * (targets - colour)[:, :, None, None]).clamp(-1, 1)


class PairAugment:
    """Random transforms of (image, caption, factors) batches (see the module docstring).

    Args:
        transforms: any of :data:`TRANSFORMS`.
        p: probability that each transform is applied to a sample.
        mode: ``"synchronized"`` (captions and factors follow), ``"image-only"`` or ``"none"``.
        data: the data the pairs come from (anything with ``class_names`` and ``factor_values``); ``translate``
            and ``recolour`` need shapes' factors.
        name: how errors name the data.
    """

    def __init__(
        self,
        transforms: tuple[str, ...] = ("hflip", "translate", "recolour"),
        *,
        p: float = 0.5,
        mode: str = "synchronized",
        data: Any = None,
        name: str = "the data",
    ):
        bad = [t for t in transforms if t not in TRANSFORMS]
        if bad or not transforms:
            raise ValueError(f"transforms must be some of {', '.join(TRANSFORMS)}, got {list(transforms)}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        shapes = data is not None and is_shapes(data)
        for t in transforms:
            if t in NEEDS_SHAPES and not shapes:
                raise ValueError(
                    f"augment: {t!r} rewrites {NEEDS_SHAPES[t]} words, which is defined only for data with shapes' "
                    f"positions and colours; {name} has not them (use hflip or vflip)"
                )
        self.transforms, self.p, self.mode = tuple(transforms), p, mode
        #: the data's factor values (factors.json), which say which factors a flip mirrors
        self.factor_values: dict[str, list[str]] = dict(getattr(data, "factor_values", None) or {})

    def mirrored(self, name: str, factor: str, value: str) -> str:
        """``value`` of ``factor`` after the flip ``name``: swapped where the factor's own values hold both sides
        (a left/right factor by what it holds, whatever it is called), else as it was."""
        swaps = _SWAPS[name][1]
        if value not in swaps:
            return value
        known = self.factor_values.get(factor)
        mirrors = swaps[value] in known if known is not None else factor == "position"  # no list: shapes' own name
        return swaps[value] if mirrors else value

    def __call__(
        self,
        images: Tensor,
        texts: list[str],
        factors: list[dict[str, str]] | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> AugmentedPairs:
        """Augment one batch; the caller's tensors and lists are not changed."""
        if len(texts) != len(images) or (factors is not None and len(factors) != len(images)):
            raise ValueError("images, texts and factors must have one entry per sample")
        n = len(images)
        texts, factors = list(texts), None if factors is None else [dict(f) for f in factors]
        applied: dict[str, Tensor] = {}
        if self.mode == "none" or n == 0:
            return AugmentedPairs(images, texts, factors, applied)
        sync = self.mode == "synchronized"
        for name in self.transforms:
            mask = torch.rand(n, generator=generator) < self.p
            applied[name] = mask
            if name in _SWAPS:
                words = _SWAPS[name][0]
                flipped = images.flip(-1 if name == "hflip" else -2)
                images = torch.where(mask[:, None, None, None].to(images.device), flipped, images)
                for i in mask.nonzero().flatten().tolist() if sync else []:
                    texts[i] = swap_words(texts[i], words)
                    if factors is not None:
                        factors[i] = {k: self.mirrored(name, k, v) for k, v in factors[i].items()}
            elif name == "translate":
                images = self._translate(images, texts, factors, mask, generator, sync)
            else:
                images = self._recolour(images, texts, factors, mask, generator, sync)
        return AugmentedPairs(images, texts, factors, applied)

    @staticmethod
    def _need_factors(factors, name: str) -> list[dict[str, str]]:
        if factors is None:
            raise ValueError(f"augment: {name!r} needs each sample's factors (shapes data)")
        return factors

    def _translate(self, images, texts, factors, mask, generator, sync: bool) -> Tensor:
        from latentmix.data.shapes import POSITION_WORDS, POSITIONS

        factors = self._need_factors(factors, "translate")
        names = list(POSITIONS)
        step = torch.randint(1, len(names), (len(images),), generator=generator)  # another position, uniformly
        side = images.shape[-1]
        dx, dy = torch.zeros(len(images), dtype=torch.long), torch.zeros(len(images), dtype=torch.long)
        for i in mask.nonzero().flatten().tolist():
            old = factors[i]["position"]
            new = names[(names.index(old) + int(step[i])) % len(names)]
            dx[i] = round((POSITIONS[new][0] - POSITIONS[old][0]) * side)
            dy[i] = round((POSITIONS[new][1] - POSITIONS[old][1]) * side)
            if sync:
                texts[i] = replace_phrase(texts[i], POSITION_WORDS[old], POSITION_WORDS[new][0])
                factors[i]["position"] = new
        return circular_shift(images, dx.to(images.device), dy.to(images.device))

    def _recolour(self, images, texts, factors, mask, generator, sync: bool) -> Tensor:
        from latentmix.data.shapes import COLOURS

        factors = self._need_factors(factors, "recolour")
        if images.shape[1] != 3:
            raise ValueError(f"augment: 'recolour' needs RGB images, got {images.shape[1]} channel(s)")
        names = list(COLOURS)
        step = torch.randint(1, len(names), (len(images),), generator=generator)
        rgb = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 127.5 - 1.0
        targets = torch.zeros(len(images), 3)
        chosen = mask.nonzero().flatten().tolist()
        for i in chosen:
            old = factors[i]["colour"]
            new = names[(names.index(old) + int(step[i])) % len(names)]
            targets[i] = rgb[names.index(new)]
            if sync:
                texts[i] = replace_phrase(texts[i], (old,), new)
                factors[i]["colour"] = new
        if not chosen:
            return images
        recoloured = recolour_objects(images.float(), targets.to(images.device)).to(images.dtype)
        return torch.where(mask[:, None, None, None].to(images.device), recoloured, images)
