"""``latentmix fit reference-classifier``: fit the judge of ``latentmix evaluate`` on a labelled data set.

The model (:class:`~latentmix.classifiers.reference.ReferenceClassifier`, or the small
:class:`~latentmix.classifiers.reference.DigitsClassifier` for the 8 x 8 digits) is fitted on the data's train
split with one head per factor where the data has factors; the test split only measures it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from latentmix.classifiers.reference import DigitsClassifier, ReferenceClassifier, measure_reference
from latentmix.configs import ReferenceFitConfig
from latentmix.data import ImageTextDataset, load_train_test
from latentmix.data.digits import DIGITS_TRAIN_DESCRIPTION
from latentmix.train.cards import model_card
from latentmix.train.common import FitResult, random_shift
from latentmix.utils.atomic import atomic_directory
from latentmix.utils.locks import holds_outputs

IMAGE_PASSES = 86_220  # 60 epochs over the 1,437 digits training images
MIN_EPOCHS, MAX_EPOCHS = 15, 60


def _build(config: ReferenceFitConfig, train: ImageTextDataset) -> Any:
    if str(config.data) == "digits" and (train.image_size, train.channels) == (8, 1):
        return DigitsClassifier(width=config.width)
    factors = getattr(train, "factor_values", None)
    return ReferenceClassifier(train.channels, train.image_size, list(train.class_names), config.width, factors=factors)


def _loss(model: Any, x: Tensor, y: Tensor, factors: Tensor | None, names: list[str]) -> Tensor:
    """Cross-entropy of the class head plus one per factor head (``factors[:, j]`` is factor ``names[j]``)."""
    features = model.features(x)
    loss = nn.functional.cross_entropy(model.head(features), y, label_smoothing=0.05)
    if factors is not None:
        for j, name in enumerate(names):
            head = model.factor_heads[name]
            loss = loss + nn.functional.cross_entropy(head(features), factors[:, j], label_smoothing=0.05)
    return loss


@holds_outputs(lambda out, **_: [out])
def fit_reference_classifier(
    config: ReferenceFitConfig | None = None,
    out: str | os.PathLike | None = None,
    *,
    quiet: bool = False,
    command: str | None = None,
) -> FitResult:
    """Fit a reference classifier on ``config.data``'s train split; report its test accuracy; save to ``out``."""
    config = config or ReferenceFitConfig()
    config.validate()
    train, test = load_train_test(config.data, image_size=config.image_size, channels=config.channels,
                                  purpose="the reference is measured apart")  # fmt: skip
    if not train.class_names or bool((train.labels < 0).any()):
        raise ValueError(f"data {config.data!r} has unlabelled images; a reference classifier needs a label per image")
    torch.manual_seed(config.seed)
    x, y = train.images(range(len(train))), train.labels
    factors = train.factor_labels() if train.factor_values is not None else None
    names = list(train.factor_values or {})
    if config.epochs is None:
        config = replace(config, epochs=min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(IMAGE_PASSES / len(train)))))
    assert config.epochs is not None
    model = _build(config, train)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    batch = 128
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=config.epochs * math.ceil(len(x) / batch))
    gen = torch.Generator().manual_seed(config.seed)
    shift = max(1, train.image_size // 16)
    start = time.perf_counter()
    for _ in tqdm(range(config.epochs), desc="fit reference classifier", disable=quiet):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            shifted, wanted = random_shift(x[idx], shift, gen), None if factors is None else factors[idx]
            loss = _loss(model, shifted, y[idx], wanted, names)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    metrics = {"train_seconds": round(time.perf_counter() - start, 1), **measure_reference(model, test)}
    metrics.update({"train_images": len(train), "test_images": len(test)})
    if out is not None:
        _save(model, config, metrics, command, Path(out))
    return FitResult(model, metrics, None if out is None else Path(out))


def _save(model: Any, config: ReferenceFitConfig, metrics: dict, command: str | None, out: Path) -> None:
    data = DIGITS_TRAIN_DESCRIPTION if str(config.data) == "digits" else f"`{config.data}` (its train split)"
    card = model_card(
        title="Reference classifier",
        command=command,
        default_command="latentmix fit reference-classifier (Python API)",
        description=(
            f"A small CNN fitted on {data}; the test split was used only for the accuracy below. `latentmix "
            "evaluate` uses its penultimate features and predictions to judge backends."
        ),
        metrics=metrics,
        settings=config,
    )

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "MODEL_CARD.md").write_text(card)

    atomic_directory(out, write, marker="_class_name")
