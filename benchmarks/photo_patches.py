"""A user's own captioned RGB data set, built as a user would: 32 x 32 photo patches in six classes.

    python benchmarks/photo_patches.py --out photo-patches            # 1,000 train / 300 test images

Every example is a square crop of one of the photos that scikit-image ships (or of one of its LFW faces),
resized to ``size`` x ``size``, mirrored at random, with a brightness jitter; a function of (seed, split,
index) only. The caption names the class and says what the crop shows (zoom, where it was taken, brightness),
in several phrasings, so captions say more than the label. The output is a Hugging Face imagefolder with
``train/`` and ``test/`` (``metadata.jsonl`` with ``file_name``, ``text``, ``label``). Used by the tests (a
small version) and by ``benchmarks/fit_user_data.py``; it is test data, not embedded data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("astronaut", "cat", "coffee", "face", "rocket", "stars")
SOURCES = {
    "astronaut": "astronaut",
    "cat": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "stars": "hubble_deep_field",
}
NOUNS = {
    "astronaut": "an astronaut",
    "cat": "a cat",
    "coffee": "a cup of coffee",
    "face": "a face",
    "rocket": "a rocket",
    "stars": "a starry sky",
}
TEMPLATES = (
    "{zoom} {noun}, {where}, {light}",
    "a {light} photo patch of {noun} {where}",
    "{noun}: {zoom_short} crop {where}, {light}",
    "{where}, {zoom} {noun} ({light})",
)
SPLIT_SEED = {"train": 0, "test": 1}


def _photos() -> dict[str, np.ndarray]:
    import skimage.data

    photos = {name: getattr(skimage.data, source)() for name, source in SOURCES.items()}
    faces = skimage.data.lfw_subset()[:100]  # the first 100 of lfw_subset are faces
    photos["face"] = (np.stack([faces] * 3, axis=-1) * 255).round().astype(np.uint8)
    return photos


def _where(cx: float, cy: float) -> str:
    vertical = "top" if cy < 0.4 else "bottom" if cy > 0.6 else "middle"
    horizontal = "left" if cx < 0.4 else "right" if cx > 0.6 else "centre"
    if vertical == "middle" and horizontal == "centre":
        return "from the centre of the picture"
    if vertical == "middle":
        return f"from the {horizontal} of the picture"
    return f"from the {vertical} {horizontal} of the picture".replace(" centre", "")


def make_example(
    photos: dict[str, np.ndarray], label: int, rng: np.random.Generator, size: int
) -> tuple[Image.Image, str]:
    """One patch of class ``label`` and its caption."""
    name = CLASSES[label]
    if name == "face":
        face = photos["face"][rng.integers(len(photos["face"]))]
        side = int(rng.integers(19, 26))
        top, left = rng.integers(0, 26 - side, size=2)
        crop, cx, cy, scale = face[top : top + side, left : left + side], 0.5, 0.5, side / 25
    else:
        photo = photos[name]
        h, w = photo.shape[:2]
        scale = float(rng.uniform(0.25, 0.6))
        side = int(scale * min(h, w))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop, cx, cy = photo[top : top + side, left : left + side], (left + side / 2) / w, (top + side / 2) / h
    image = Image.fromarray(np.ascontiguousarray(crop[..., :3])).resize((size, size), Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        cx = 1 - cx
    gain = float(rng.uniform(0.75, 1.25))
    image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) * gain, 0, 255).astype(np.uint8))
    words = {
        "noun": NOUNS[name],
        "zoom": "a close-up of" if scale < 0.4 else "a wide view of",
        "zoom_short": "a close" if scale < 0.4 else "a wide",
        "where": _where(cx, cy),
        "light": "bright" if gain > 1.08 else "dark" if gain < 0.92 else "evenly lit",
    }
    return image, TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(**words)


def write_photo_patches(
    root: str | Path, n_train: int = 1000, n_test: int = 300, size: int = 32, seed: int = 0
) -> Path:
    """Write the data set (balanced classes) to ``root``; return ``root``."""
    root = Path(root)
    photos = _photos()
    for split, count in (("train", n_train), ("test", n_test)):
        folder = root / split
        (folder / "images").mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(count):
            label = i % len(CLASSES)
            rng = np.random.default_rng([seed, SPLIT_SEED[split], i])
            image, text = make_example(photos, label, rng, size)
            name = f"images/{split}-{i:05d}.png"
            image.save(folder / name)
            rows.append({"file_name": name, "text": text, "label": CLASSES[label]})
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_photo_patches(args.out, args.train, args.test, args.size, args.seed))
