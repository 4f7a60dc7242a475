"""The reference digits classifier: the judge in backend quality reports.

A small CNN fitted on the digits **train** split (``latentmix fit reference-classifier``) and shipped
in ``models/digits-classifier``. ``latentmix evaluate`` uses its 128-d penultimate features for
Fréchet distances and path lengths, and its predictions for class consistency. It never sees the
test split during fitting.
"""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn
from tqdm.auto import tqdm

from latentmix.backends.base import atomic_directory, refuse_pickles
from latentmix.data import DigitsDataset
from latentmix.version import __version__

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
    """Load the shipped reference classifier (or one fitted elsewhere), in eval mode."""
    from latentmix.backends.loading import embedded_models_dir

    path = Path(path) if path is not None else embedded_models_dir() / REFERENCE
    if not path.is_dir():
        raise ValueError(
            f"reference classifier {path} does not exist; fit one with `latentmix fit reference-classifier --out {path}`"
        )
    refuse_pickles(path)
    try:
        return DigitsClassifier.from_pretrained(str(path), use_safetensors=True).eval()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"could not load the reference classifier from {path}: {str(exc).splitlines()[0]}") from None


def fit_reference_classifier(
    out: str | os.PathLike | None = None,
    *,
    epochs: int = 60,
    seed: int = 0,
    quiet: bool = False,
    command: str | None = None,
) -> tuple[DigitsClassifier, dict]:
    """Fit the reference classifier on the digits train split; report test accuracy; save to ``out``."""
    from latentmix.train.common import metrics_table, random_shift

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    torch.manual_seed(seed)
    train, test = DigitsDataset("train"), DigitsDataset("test")
    x, y = train.images(range(len(train))), train.labels
    model = DigitsClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = epochs * math.ceil(len(x) / 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in tqdm(range(epochs), desc="fit reference classifier", disable=quiet):
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
        card = "\n".join(
            [
                "# Reference digits classifier (latentmix)",
                "",
                f"Produced by latentmix {__version__} with:",
                "",
                "```",
                command or "latentmix fit reference-classifier (Python API)",
                "```",
                "",
                "Fitted on the digits train split (1,437 images; fixed split in `latentmix/data.py`); the 360-image test split",
                "was used only for the accuracy below. `latentmix evaluate` uses its 128-d penultimate features and predictions.",
                "",
                *metrics_table(metrics),
                "",
                f"Trained on CPU ({platform.machine()}, torch {torch.__version__}), seed {seed}, {epochs} epochs.",
                "",
            ]
        )

        def write(tmp: Path) -> None:
            model.save_pretrained(tmp, safe_serialization=True)
            (tmp / "MODEL_CARD.md").write_text(card)

        atomic_directory(Path(out), write, marker="_class_name")
    return model, metrics
