"""Batched image augmentation of the field on the training device, through ``kornia.augmentation``: random resized
crop, flips, colour jitter, RandAugment, TrivialAugment and random erasing — each image of a batch with its own
parameters, in one call per transform (no per-image Python loop).

Seeded: kornia draws from torch's global generator, so each call forks it and seeds it from the caller's
``torch.Generator`` (whose state a checkpoint saves), leaving the global stream untouched — the same seed gives the
same augmented batches, and a resumed run continues them exactly.

latentmix images are in [-1, 1]; they are mapped to [0, 1] for kornia and back. Grey images go through the colour
transforms as three equal channels and come back as their mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from latentmix.configs.training import IMAGE_AUGMENTS as AUGMENTS

# of the image's area: timm's 0.08 is for 224 px photos; at 32 px and below the object would be lost
CROP_SCALE = (0.25, 1.0)
COLOR_JITTER = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue (timm's --color-jitter 0.4)
COLOR_JITTER_P = 0.8
ERASING_P = 0.25  # timm's --reprob default for its recipes


def _transform(name: str, side: tuple[int, int]):
    import kornia.augmentation as K
    from kornia.augmentation import auto

    if name == "crop":
        return K.RandomResizedCrop(side, scale=CROP_SCALE)
    if name == "hflip":
        return K.RandomHorizontalFlip()
    if name == "vflip":
        return K.RandomVerticalFlip()
    if name == "color-jitter":
        return K.ColorJitter(*COLOR_JITTER, p=COLOR_JITTER_P)
    if name == "randaugment":
        return auto.RandAugment(n=2, m=10)
    if name == "trivialaugment":
        return auto.TrivialAugment()
    if name == "erasing":
        return K.RandomErasing(p=ERASING_P)
    raise ValueError(f"unknown augmentation {name!r}; choose from {', '.join(AUGMENTS)}")


class BatchAugment:
    """``names`` applied in order to a batch (B, C, H, W) in [-1, 1]; ``__call__(x, generator)`` → a new batch.

    Args:
        names: any of :data:`AUGMENTS`.
        side: (H, W) of the images (random resized crop keeps it).
    """

    def __init__(self, names: Sequence[str], side: tuple[int, int]):
        if not names:
            raise ValueError("image_augment is empty: name at least one augmentation")
        self.names = tuple(names)
        self.transforms = [_transform(n, side) for n in self.names]

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"image_augment needs images (B, C, H, W), got shape {tuple(x.shape)}")
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        grey = x.shape[1] == 1
        p = ((x.float() + 1) / 2).clamp(0, 1)
        if grey:
            p = p.expand(-1, 3, -1, -1)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for t in self.transforms:
                p = t(p)
        if grey:
            p = p.mean(1, keepdim=True)
        return (p * 2 - 1).to(x.dtype)

    def one_by_one(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The same transforms applied image by image in a loop (the baseline of the augmentation benchmark)."""
        return torch.cat([self(x[i : i + 1], generator) for i in range(len(x))])
