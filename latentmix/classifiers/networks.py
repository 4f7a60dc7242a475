"""Classifiers the trainer fits: a small CNN for images, an MLP for feature vectors, and an
image-text fusion classifier for paired sets. Named blocks are what manifold mixup hooks.

They are diffusers ``ModelMixin`` s, so a trained one saves as config.json + safetensors
(``latentmix train --save-model DIR``) with its class names, fitted temperature and input shape in the config
(``class_names``, ``temperature``, ``image_shape``: recorded, not used by the network), and
:func:`load_classifier` reads it back (whole or not at all) — e.g. to filter synthetic blends.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class SmallCNN(ModelMixin, ConfigMixin):
    """Three conv blocks, global average pooling, a linear head. Manifold layers: block1..block3."""

    manifold_layers = ("input", "block1", "block2")

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 32,
        dropout: float = 0.2,
        class_names: list[str] | None = None,
        temperature: float = 1.0,
        image_shape: list[int] | None = None,
    ):
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


class MLP(ModelMixin, ConfigMixin):
    """Two hidden layers for feature vectors / embeddings / tabular data. Manifold layers: fc1, fc2."""

    manifold_layers = ("input", "fc1", "fc2")

    @register_to_config
    def __init__(
        self,
        in_dim: int = 64,
        num_classes: int = 10,
        hidden: int = 256,
        dropout: float = 0.1,
        class_names: list[str] | None = None,
        temperature: float = 1.0,
        image_shape: list[int] | None = None,
    ):
        super().__init__()
        self.fc1 = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.fc2 = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.fc2(self.fc1(x.flatten(1))))


class FusionClassifier(ModelMixin, ConfigMixin):
    """Image encoder (SmallCNN features) + text-embedding projection, fused by concatenation.

    ``forward(image, text)`` gives the fused logits; ``image_only`` and ``text_only`` give the logits of
    each modality alone (zeroing the other), for the cross-modal consistency loss.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        text_dim: int = 384,
        num_classes: int = 10,
        width: int = 32,
        class_names: list[str] | None = None,
        temperature: float = 1.0,
        image_shape: list[int] | None = None,
    ):
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


CLASSIFIERS = {cls.__name__: cls for cls in (SmallCNN, MLP, FusionClassifier)}


def describe(
    model: ModelMixin, class_names: list[str], temperature: float, image_shape: tuple[int, ...] | None
) -> None:
    """Record what a trained classifier judges in its config: class names, temperature, input shape."""
    model.register_to_config(
        class_names=list(class_names), temperature=float(temperature), image_shape=list(image_shape or [])
    )


def load_classifier(path: str | os.PathLike) -> Any:
    """A classifier saved by ``latentmix train --save-model`` or ``fit reference-classifier`` (eval mode);
    ``.config.temperature`` and ``.config.class_names`` say how it was calibrated and what it names."""
    from latentmix.backends.files import BACKEND_CONFIG, load_weights, read_json
    from latentmix.classifiers.pretrained import is_hf_classifier, load_pretrained_classifier
    from latentmix.classifiers.reference import load_reference_classifier

    path = Path(path)
    if is_hf_classifier(path):  # a transformers model trained with `latentmix train --model`
        return load_pretrained_classifier(path)
    kind = read_json(path / BACKEND_CONFIG, "classifier config").get("_class_name")
    if kind in ("DigitsClassifier", "ReferenceClassifier"):
        return load_reference_classifier(path)
    if kind not in CLASSIFIERS:
        raise ValueError(f"{path} holds no latentmix classifier (_class_name={kind!r})")
    return load_weights(CLASSIFIERS[kind], path).eval()
