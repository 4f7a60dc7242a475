"""Reference classifiers: the judges in backend quality reports, for the digits and for any labelled data.

``models/digits-classifier`` (a :class:`DigitsClassifier`, fitted on the digits **train** split) judges the
digits; ``latentmix fit reference-classifier --data DIR --out DIR`` (:mod:`latentmix.train.fit_reference`) fits a
:class:`ReferenceClassifier` on any labelled data set (its train split; the test split only measures it).
``latentmix evaluate`` uses a reference's penultimate features for Fréchet distances and path lengths and its
predictions for class consistency; a reference records the class names (and factor names, where the data has
factors) it knows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from latentmix.backends.files import BACKEND_CONFIG, load_weights, read_json
from latentmix.data import ImageTextDataset

REFERENCE = "digits-classifier"
#: the embedded reference classifier of each embedded data set
DEFAULT_REFERENCES = {"digits": "digits-classifier", "shapes": "shapes-classifier"}


class DigitsClassifier(ModelMixin, ConfigMixin):
    """Conv net for 8×8 grayscale digits in [-1, 1]; ``features`` gives the 128-d embedding."""

    @register_to_config
    def __init__(self, num_classes: int = 10, width: int = 64, feature_dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width // 2, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.SiLU(),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(width * 16, feature_dim),
            nn.SiLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    @property
    def class_names(self) -> list[str]:
        return [str(i) for i in range(int(self.config.num_classes))]

    @property
    def image_shape(self) -> tuple[int, int]:
        return 1, 8

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def conv_tower(in_channels: int, image_size: int, width: int, feature_dim: int) -> nn.Sequential:
    """Strided 3x3 convs (GroupNorm, SiLU) from ``image_size`` down to 4 x 4, then a ``feature_dim`` embedding
    (dropout 0.2, linear, SiLU): the image tower of reference classifiers and of alignment models."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width // 2, 3, padding=1), nn.SiLU()]
    side, ch = image_size, width // 2
    while side > 4:
        layers += [nn.Conv2d(ch, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU()]
        side, ch = (side + 1) // 2, width
    layers += [nn.Conv2d(ch, width, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten()]
    layers += [nn.Dropout(0.2), nn.Linear(width * 16, feature_dim), nn.SiLU()]
    return nn.Sequential(*layers)


class ReferenceClassifier(ModelMixin, ConfigMixin):
    """Conv net for square images of any size in [-1, 1]: strided convs down to 4 x 4, a ``feature_dim``
    embedding (``features``), a class head (``forward``) and, where the data has factors, one head per factor
    (``factor_logits``).

    Args:
        in_channels: 1 or 3.
        image_size: the side it judges.
        class_names: the classes, in label order.
        width: channels after the first downsampling.
        feature_dim: size of the embedding.
        factors: factor name -> value names, for a head per factor (e.g. ``{"colour": ["red", ...]}``).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        class_names: list[str] | None = None,
        width: int = 64,
        feature_dim: int = 128,
        factors: dict[str, list[str]] | None = None,
    ):
        super().__init__()
        self.body = conv_tower(in_channels, image_size, width, feature_dim)
        self.head = nn.Linear(feature_dim, len(class_names or []) or 1)
        self.factor_heads = nn.ModuleDict({name: nn.Linear(feature_dim, len(v)) for name, v in (factors or {}).items()})

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names or [])

    @property
    def factors(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in (self.config.factors or {}).items()}

    @property
    def image_shape(self) -> tuple[int, int]:
        return int(self.config.in_channels), int(self.config.image_size)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def factor_logits(self, x: Tensor) -> dict[str, Tensor]:
        f = self.features(x)
        return {name: head(f) for name, head in self.factor_heads.items()}


def load_reference_classifier(path: str | os.PathLike | None = None) -> Any:
    """Load a reference classifier (a directory or an embedded name; the shipped digits one by default), whole
    or not at all, in eval mode."""
    from latentmix.backends.loading import embedded_models_dir

    path = Path(path) if path is not None else embedded_models_dir() / REFERENCE
    if not path.is_dir() and len(path.parts) == 1 and (embedded_models_dir() / path).is_dir():
        path = embedded_models_dir() / path
    if not path.is_dir():
        raise ValueError(
            f"reference classifier {path} does not exist; fit one with "
            f"`latentmix fit reference-classifier --data DATA --out {path}`"
        )
    kind = read_json(path / BACKEND_CONFIG, "reference classifier config").get("_class_name")
    classes = {"DigitsClassifier": DigitsClassifier, "ReferenceClassifier": ReferenceClassifier}
    if kind not in classes:
        raise ValueError(f"{path} is not a reference classifier (_class_name={kind!r})")
    return load_weights(classes[kind], path).eval()


def reference_for(reference: str | None, data: object, *, alternative: str = "") -> str:
    """``reference``, or the embedded reference of ``data`` (:data:`DEFAULT_REFERENCES`); a ValueError naming
    what to do for other data (``alternative``: another way out, e.g. "or --features pixels")."""
    name = reference or DEFAULT_REFERENCES.get(str(data))
    if name is None:
        raise ValueError(
            f"reference: no reference classifier for data {data!r}: fit one with `latentmix fit "
            f"reference-classifier --data {data} --out DIR` and pass --reference DIR{alternative}"
        )
    return name


def measure_reference(model: Any, test: ImageTextDataset) -> dict[str, float]:
    """Test accuracy of the class head (and of each factor head, where the data has factors)."""
    x = test.images(range(len(test)))
    with torch.inference_mode():
        metrics = {"test_accuracy": float((model(x).argmax(1) == test.labels).float().mean())}
        if test.factor_values is not None and getattr(model, "factor_heads", None):
            truth, logits = test.factor_labels(), model.factor_logits(x)
            for j, name in enumerate(test.factor_values):  # by name: a loaded model's heads may be in another order
                metrics[f"test_accuracy_{name}"] = float((logits[name].argmax(1) == truth[:, j]).float().mean())
    return metrics
