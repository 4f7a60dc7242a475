"""The reference digits classifier: the judge in backend quality reports.

A small CNN fitted on the digits **train** split (``latentmix fit reference-classifier``) and shipped
in ``models/digits-classifier``. ``latentmix evaluate`` uses its 128-d penultimate features for
Fréchet distances and path lengths, and its predictions for class consistency. It never sees the
test split during fitting.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn
from tqdm.auto import tqdm

from latentmix.backends.files import atomic_directory, load_weights
from latentmix.cards import model_card
from latentmix.configs import ReferenceFitConfig
from latentmix.data import DigitsDataset
from latentmix.data.digits import DIGITS_TRAIN_DESCRIPTION
from latentmix.train.common import FitResult

REFERENCE = "digits-classifier"


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

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def load_reference_classifier(path: str | os.PathLike | None = None) -> DigitsClassifier:
    """Load the shipped reference classifier (or one fitted elsewhere), whole or not at all, in eval mode."""
    from latentmix.backends.loading import embedded_models_dir

    path = Path(path) if path is not None else embedded_models_dir() / REFERENCE
    if not path.is_dir():
        raise ValueError(
            f"reference classifier {path} does not exist; fit one with `latentmix fit reference-classifier --out "
            f"{path}`"
        )
    return load_weights(DigitsClassifier, path).eval()


def fit_reference_classifier(
    config: ReferenceFitConfig | None = None,
    out: str | os.PathLike | None = None,
    *,
    quiet: bool = False,
    command: str | None = None,
) -> FitResult:
    """Fit the reference classifier on the digits train split; report test accuracy; save to ``out``."""
    from latentmix.train.common import random_shift

    config = config or ReferenceFitConfig()
    config.validate()
    torch.manual_seed(config.seed)
    train, test = DigitsDataset("train"), DigitsDataset("test")
    x, y = train.images(range(len(train))), train.labels
    model = DigitsClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = config.epochs * math.ceil(len(x) / 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(config.seed)
    start = time.perf_counter()
    for _ in tqdm(range(config.epochs), desc="fit reference classifier", disable=quiet):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 128):
            idx = order[i : i + 128]
            loss = nn.functional.cross_entropy(model(random_shift(x[idx], 1, gen)), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.inference_mode():
        accuracy = float((model(test.images(range(len(test)))).argmax(1) == test.labels).float().mean())
    metrics = {
        "train_seconds": round(time.perf_counter() - start, 1),
        "test_accuracy": accuracy,
        "train_images": len(train),
        "test_images": len(test),
    }
    if out is not None:
        card = model_card(
            title="Reference digits classifier",
            command=command,
            default_command="latentmix fit reference-classifier (Python API)",
            description=(
                f"A small CNN fitted on {DIGITS_TRAIN_DESCRIPTION} (the test split was used only for the accuracy "
                "below). `latentmix evaluate` uses its 128-d penultimate features and predictions."
            ),
            metrics=metrics,
            settings=config,
        )

        def write(tmp: Path) -> None:
            model.save_pretrained(tmp, safe_serialization=True)
            (tmp / "MODEL_CARD.md").write_text(card)

        atomic_directory(Path(out), write, marker="_class_name")
    return FitResult(model, metrics, None if out is None else Path(out))
