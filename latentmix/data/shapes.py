"""``shapes``: a compositional RGB image-text data set, rendered offline with Pillow.

Every example is a function of (seed, split, index) only. Its **factors**:

* ``shape`` — the class label: circle, square, triangle, star, hexagon, cross;
* ``colour``: red, green, blue, yellow, purple, orange (with a small jitter);
* ``size``: small, large;
* ``position``: centre, left, right, top, bottom (with a small jitter);
* ``background``: plain, gradient, stripes, checks (grey levels, never plain for all).

Images are drawn at four times the requested side (default 32 × 32) and downsampled with Lanczos, so edges
are anti-aliased; shapes other than circles are turned by up to ±12°. **The split is fixed**: 10,000 train
and 2,000 test examples (seed 0). Captions come from five templates with paraphrases ("a small red circle on
the left", "on the left there is a little red disc", …); in every **odd-indexed** example (exactly half) the
shape word is replaced by a vague noun ("object", "thing", "figure"), so the text alone does not give the
label — colour, size and position words always stay. Rendered splits are cached as ``.npz`` files under
``$LATENTMIX_CACHE`` (default ``~/.cache/latentmix``); ``latentmix export`` writes a split as an imagefolder
with the factors in ``metadata.jsonl``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from latentmix.data.base import ImageTextDataset, check_shape, check_split

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross")
COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 220),
    "yellow": (235, 205, 35),
    "purple": (145, 55, 195),
    "orange": (245, 135, 25),
}
SIZES = {"small": 0.17, "large": 0.26}  # radius as a fraction of the side
POSITIONS = {"centre": (0.5, 0.5), "left": (0.28, 0.5), "right": (0.72, 0.5), "top": (0.5, 0.28), "bottom": (0.5, 0.72)}
BACKGROUNDS = ("plain", "gradient", "stripes", "checks")
FACTORS = {
    "shape": list(SHAPES),
    "colour": list(COLOURS),
    "size": list(SIZES),
    "position": list(POSITIONS),
    "background": list(BACKGROUNDS),
}
SPLIT_SIZES = {"train": 10_000, "test": 2_000}
SPLIT_IDS = {"train": 0, "test": 1}
RENDER_SCALE = 4
CACHE_VERSION = 1

SHAPE_WORDS = {
    "circle": ("circle", "disc", "round shape"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "star": ("star",),
    "hexagon": ("hexagon",),
    "cross": ("cross", "plus sign"),
}
VAGUE_WORDS = ("object", "thing", "figure")
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
POSITION_WORDS = {
    "centre": ("in the centre", "in the middle"),
    "left": ("on the left",),
    "right": ("on the right",),
    "top": ("at the top",),
    "bottom": ("at the bottom",),
}
BACKGROUND_WORDS = {"plain": "plain", "gradient": "shaded", "stripes": "striped", "checks": "checked"}
TEMPLATES = (
    "a {size} {colour} {shape} {where}",
    "{where} there is a {size} {colour} {shape}",
    "a {colour} {shape}, {size}, {where}",
    "a {size} {colour} {shape} {where} on a {background} background",
    "there is a {colour} {shape} {where}; it is {size}",
)


def cache_dir() -> Path:
    return Path(os.environ.get("LATENTMIX_CACHE", Path.home() / ".cache" / "latentmix")).expanduser()


def _rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_IDS[split], index, stream])


def draw_factors(seed: int, split: str, index: int) -> dict[str, int]:
    """The factor values (indices into :data:`FACTORS`) of one example."""
    rng = _rng(seed, split, index, 0)
    return {name: int(rng.integers(len(values))) for name, values in FACTORS.items()}


def caption(seed: int, split: str, index: int, factors: dict[str, int]) -> str:
    """The caption of one example (odd indices name the shape with a vague noun)."""
    return describe(seed, split, index, factors)[0]


def describe(seed: int, split: str, index: int, factors: dict[str, int]) -> tuple[str, frozenset[str]]:
    """The caption of one example and the factors it names (``label`` for the shape, ``colour``, ...)."""
    rng = _rng(seed, split, index, 1)
    names = {k: FACTORS[k][v] for k, v in factors.items()}

    def pick(words: tuple[str, ...]) -> str:
        return words[int(rng.integers(len(words)))]

    shape = pick(VAGUE_WORDS) if index % 2 else pick(SHAPE_WORDS[names["shape"]])
    words = {
        "shape": shape,
        "colour": names["colour"],
        "size": pick(SIZE_WORDS[names["size"]]),
        "where": pick(POSITION_WORDS[names["position"]]),
        "background": BACKGROUND_WORDS[names["background"]],
    }
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    named = {"colour", "size", "position"} | ({"background"} if "{background}" in template else set())
    return with_articles(template.format(**words)), frozenset(named if index % 2 else named | {"label"})


def with_articles(text: str) -> str:
    """ "a orange" -> "an orange", "a object" -> "an object"."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _polygon(cx: float, cy: float, radius: float, corners: int, turn: float, inner: float | None = None) -> list:
    points = []
    step = 2 * math.pi / corners
    for k in range(corners):
        angle = turn - math.pi / 2 + k * step
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        if inner is not None:
            angle += step / 2
            points.append((cx + inner * radius * math.cos(angle), cy + inner * radius * math.sin(angle)))
    return points


def _background(kind: str, side: int, rng: np.random.Generator) -> Image.Image:
    lo, hi = sorted(int(v) for v in rng.integers(35, 225, size=2))
    hi = max(hi, lo + 40)
    if kind == "plain":
        return Image.new("RGB", (side, side), (lo,) * 3)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    if kind == "gradient":
        field = y / side if rng.random() < 0.5 else x / side
    elif kind == "stripes":
        period = side / float(rng.uniform(3, 6))
        field = ((x + y) / period % 1.0 < 0.5).astype(np.float32)
    else:  # checks
        cell = side / float(rng.integers(3, 6))
        field = ((np.floor(x / cell) + np.floor(y / cell)) % 2).astype(np.float32)
    grey = (lo + (hi - lo) * field).round().astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB")


@dataclass(frozen=True)
class Drawing:
    """What one example is drawn from: its background, its factors and its own jitter (position, size, colour,
    turn), so the same object can be drawn with one factor moved (:func:`ideal_walk`)."""

    background: Image.Image
    shape: str
    centre: tuple[float, float]  # the position's centre, as a fraction of the side (before jitter)
    offset: tuple[float, float]  # the position jitter
    radius: float  # the size's radius, as a fraction of the side (before jitter)
    scale: float  # the size jitter
    colour: tuple[float, float, float]  # the colour's RGB (before jitter)
    tint: tuple[int, int, int]  # the colour jitter
    turn: float


def drawing(seed: int, split: str, index: int, factors: dict[str, int], image_size: int) -> Drawing:
    """The :class:`Drawing` of one example (its random draws in the order :func:`render` has always made them)."""
    rng = _rng(seed, split, index, 2)
    names = {k: FACTORS[k][v] for k, v in factors.items()}
    background = _background(names["background"], image_size * RENDER_SCALE, rng)
    offset = (float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03)))
    scale = float(rng.uniform(0.92, 1.08))
    tint = tuple(int(rng.integers(-12, 13)) for _ in range(3))
    turn = math.radians(float(rng.uniform(-12, 12)))
    colour = tuple(float(c) for c in COLOURS[names["colour"]])
    return Drawing(background, names["shape"], POSITIONS[names["position"]], offset, SIZES[names["size"]], scale,
                   colour, tint, turn)  # type: ignore[arg-type]  # fmt: skip


def paint(d: Drawing, image_size: int) -> np.ndarray:
    """(S, S, 3) uint8: ``d`` drawn at 4 x the side, downsampled with Lanczos."""
    side = image_size * RENDER_SCALE
    canvas = d.background.copy()
    cx, cy = (d.centre[0] + d.offset[0]) * side, (d.centre[1] + d.offset[1]) * side
    radius = d.radius * side * d.scale
    colour = tuple(int(np.clip(round(c) + t, 0, 255)) for c, t in zip(d.colour, d.tint, strict=True))
    turn = d.turn
    draw = ImageDraw.Draw(canvas)
    shape = d.shape
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, radius * 1.1, 4, turn + math.pi / 4), fill=colour)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy + radius * 0.15, radius * 1.2, 3, turn), fill=colour)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, radius * 1.15, 5, turn, inner=0.45), fill=colour)
    elif shape == "hexagon":
        draw.polygon(_polygon(cx, cy, radius * 1.05, 6, turn + math.pi / 6), fill=colour)
    else:  # cross: two bars
        arm, bar = radius * 1.05, radius * 0.36
        for angle in (turn, turn + math.pi / 2):
            c, s = math.cos(angle), math.sin(angle)
            corners = [(-arm, -bar), (arm, -bar), (arm, bar), (-arm, bar)]
            draw.polygon([(cx + u * c - v * s, cy + u * s + v * c) for u, v in corners], fill=colour)
    small = canvas.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.uint8)


def render(seed: int, split: str, index: int, factors: dict[str, int], image_size: int) -> np.ndarray:
    """(S, S, 3) uint8: the example drawn at 4 x the side, downsampled with Lanczos."""
    return paint(drawing(seed, split, index, factors, image_size), image_size)


#: the factors an ideal walk can move along their own order
IDEAL_FACTORS = ("colour", "position", "size")


def ideal_walk(seed: int, split: str, index: int, factor: str, target: str, steps: int, image_size: int) -> np.ndarray:
    """(steps, S, S, 3) uint8: example ``index`` drawn with ``factor`` moved from its value to ``target`` along the
    factor's own order, every other factor (and every jitter) held — the colour around the hue wheel the short
    way (saturation and value in a straight line), the object slid in a straight line from its position to
    ``target``'s, the radius grown or shrunk linearly. The first frame is the example itself; the last, the same
    drawing with ``target``. What a perfect single-factor walk of the embedded data looks like."""
    import colorsys

    if factor not in IDEAL_FACTORS:
        raise ValueError(f"factor must be one of {', '.join(IDEAL_FACTORS)}, got {factor!r}")
    if target not in FACTORS[factor]:
        raise ValueError(f"target must be one of {', '.join(FACTORS[factor])} for {factor}, got {target!r}")
    factors = draw_factors(seed, split, index)
    start = drawing(seed, split, index, factors, image_size)
    frames = []
    for t in np.linspace(0.0, 1.0, steps):
        if factor == "colour":
            h0, s0, v0 = colorsys.rgb_to_hsv(*(c / 255 for c in start.colour))
            h1, s1, v1 = colorsys.rgb_to_hsv(*(c / 255 for c in COLOURS[target]))
            dh = (h1 - h0 + 0.5) % 1.0 - 0.5  # the short way round
            rgb = colorsys.hsv_to_rgb((h0 + t * dh) % 1.0, s0 + t * (s1 - s0), v0 + t * (v1 - v0))
            moved = replace(start, colour=(255 * rgb[0], 255 * rgb[1], 255 * rgb[2]))
        elif factor == "position":
            (x0, y0), (x1, y1) = start.centre, POSITIONS[target]
            moved = replace(start, centre=(x0 + t * (x1 - x0), y0 + t * (y1 - y0)))
        else:
            moved = replace(start, radius=start.radius + t * (SIZES[target] - start.radius))
        frames.append(paint(moved, image_size))
    return np.stack(frames)


def generate(seed: int, split: str, image_size: int, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, S, S, 3) uint8, factors (N, 5) int64) of a split, from the cache or rendered (and cached)."""
    count = SPLIT_SIZES[split] if count is None else count
    path = cache_dir() / f"shapes-v{CACHE_VERSION}-seed{seed}-{split}-{image_size}px-{count}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as cached:
                return cached["images"], cached["factors"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file: render again
    factors = np.array([list(draw_factors(seed, split, i).values()) for i in range(count)], dtype=np.int64)
    images = np.stack(
        [render(seed, split, i, dict(zip(FACTORS, f, strict=True)), image_size) for i, f in enumerate(factors)]
    )
    _save_cache(path, images, factors)
    return images, factors


def _save_cache(path: Path, images: np.ndarray, factors: np.ndarray) -> None:
    from latentmix.utils.atomic import atomic_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            np.savez(f, images=images, factors=factors)
    except OSError:  # a read-only home: the set is still returned, just not cached
        pass


class ShapesDataset(ImageTextDataset):
    """The ``shapes`` data set (see the module docstring).

    Args:
        split: ``"train"`` (10,000), ``"test"`` (2,000) or ``"all"``.
        image_size: side of the rendered images (default 32; any side, drawn at 4 x and downsampled).
        channels: 3, or 1 (grey; colours then differ only in brightness).
        seed: the data set's seed (0 is the documented split).
    """

    def __init__(self, split: str = "train", image_size: int = 32, channels: int = 3, seed: int = 0):
        check_split(split)
        check_shape(image_size, channels)
        splits = ("train", "test") if split == "all" else (split,)
        parts = [generate(seed, s, image_size) for s in splits]
        self._pixels = np.concatenate([p[0] for p in parts])
        self.factor_table = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        self.class_names = list(SHAPES)
        self.factor_values = {k: v for k, v in FACTORS.items() if k != "shape"}
        self.labels = self.factor_table[:, 0].clone()
        self.ids, self.texts = [], []
        #: per item, the factors its caption names ("label" = the shape; odd items name it vaguely)
        self.named_factors = []
        self.captioned = True
        for s, (_, table) in zip(splits, parts, strict=True):
            for i, row in enumerate(table.tolist()):
                text, named = describe(seed, s, i, dict(zip(FACTORS, row, strict=True)))
                self.ids.append(f"shapes-{s}-{i:05d}")
                self.texts.append(text)
                self.named_factors.append(named)
        self.image_size, self.channels, self.split, self.seed = image_size, channels, split, seed
        self.native_size, self.native_channels = image_size, 3

    def to_tensor(self, pixels: np.ndarray) -> Tensor:
        """(N, C, H, W) in [-1, 1] of rendered (N, H, W, 3) uint8 pixels, in this set's channels."""
        x = torch.from_numpy(pixels).float().permute(0, 3, 1, 2) / 127.5 - 1.0
        if self.channels == 1:
            x = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).clamp(-1, 1)
        return x.contiguous()

    def load_image(self, index: int) -> Tensor:
        return self.to_tensor(self._pixels[index : index + 1])[0]

    def images(self, indices) -> Tensor:
        idx = np.asarray([int(i) for i in indices], dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(
                f"index {int(idx[(idx < 0) | (idx >= len(self))][0])} is out of range for {len(self)} items"
            )
        return self.to_tensor(self._pixels[idx])
