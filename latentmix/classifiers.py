"""Classifiers the trainer fits: a small CNN for images, an MLP for feature vectors, and an
image-text fusion classifier for paired sets. Named blocks are what manifold mixup hooks."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class SmallCNN(nn.Module):
    """Three conv blocks, global average pooling, a linear head. Manifold layers: block1..block3."""

    manifold_layers = ("input", "block1", "block2")

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.2):
        super().__init__()
        self.block1 = _block(in_channels, width)
        self.block2 = _block(width, 2 * width, stride=2)
        self.block3 = _block(2 * width, 2 * width)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(2 * width, num_classes)
        self.feature_dim = 2 * width

    def features(self, x: Tensor) -> Tensor:
        return self.pool(self.block3(self.block2(self.block1(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """Two hidden layers for feature vectors / embeddings / tabular data. Manifold layers: fc1, fc2."""

    manifold_layers = ("input", "fc1", "fc2")

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.fc1 = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.fc2 = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.fc2(self.fc1(x.flatten(1))))


class FusionClassifier(nn.Module):
    """Image encoder (SmallCNN features) + text-embedding projection, fused by concatenation.

    ``forward(image, text)`` gives the fused logits; ``image_only`` and ``text_only`` give the logits of
    each modality alone (zeroing the other), for the cross-modal consistency loss.
    """

    def __init__(self, in_channels: int, text_dim: int, num_classes: int, width: int = 32):
        super().__init__()
        self.image = SmallCNN(in_channels, num_classes, width)
        self.text = nn.Sequential(nn.Linear(text_dim, self.image.feature_dim), nn.ReLU())
        self.head = nn.Linear(2 * self.image.feature_dim, num_classes)

    def fuse(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        return self.head(torch.cat([image_features, text_features], dim=1))

    def forward(
        self,
        image: Tensor,
        text: Tensor,
        keep_image: Tensor | None = None,
        keep_text: Tensor | None = None,
        unimodal: bool = False,
    ):
        """Fused logits; ``keep_*`` (B,) masks drop a modality per row (modality dropout); with
        ``unimodal`` also the image-only and text-only logits, for the consistency loss."""
        fi, ft = self.image.features(image), self.text(text)
        if keep_image is not None:
            fi = fi * keep_image[:, None]
        if keep_text is not None:
            ft = ft * keep_text[:, None]
        fused = self.fuse(fi, ft)
        if not unimodal:
            return fused
        return fused, self.fuse(fi, torch.zeros_like(ft)), self.fuse(torch.zeros_like(fi), ft)

    def image_only(self, image: Tensor) -> Tensor:
        f = self.image.features(image)
        return self.fuse(f, f.new_zeros(f.shape))

    def text_only(self, text: Tensor) -> Tensor:
        t = self.text(text)
        return self.fuse(t.new_zeros(t.shape), t)
