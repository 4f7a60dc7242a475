"""``latentmix fit align``: fit the image-text alignment model that judges ``latentmix evaluate-pairs``.

An :class:`~latentmix.classifiers.align.AlignModel` is fitted with the symmetric InfoNCE loss of CLIP (Radford et
al., 2021) on a data set's captioned train pairs; captions that are exactly equal inside a batch count as
positives of each other's images. The test pairs only measure it (:func:`~latentmix.classifiers.align.score_pairs`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from latentmix.classifiers.align import AlignModel, caption_ids, check_captioned, score_pairs
from latentmix.configs import AlignFitConfig
from latentmix.data import load_train_test
from latentmix.train.cards import model_card
from latentmix.train.common import FitResult, random_shift
from latentmix.utils.atomic import atomic_directory
from latentmix.utils.device import resolve_device
from latentmix.utils.locks import holds_outputs

PAIR_PASSES = 300_000  # default fit length: about 30 epochs of the 10,000 shapes train pairs
MIN_EPOCHS, MAX_EPOCHS = 10, 200


def sentence_embeddings(texts: list[str], text_encoder: str, *, batch_size: int = 128, device="cpu") -> Tensor:
    """(N, D) sentence embeddings of ``texts`` by the named encoder (each unique text encoded once; on CPU)."""
    from latentmix.data.text import TextEncoder

    return TextEncoder.from_pretrained(text_encoder, device=device).encode(texts, batch_size=batch_size)


def info_nce(logits: Tensor, text_ids: Tensor) -> Tensor:
    """Symmetric InfoNCE over an (N, N) logit matrix; pairs whose captions are equal (same ``text_ids``) are
    positives of each other, with the target mass shared among them."""
    same = (text_ids[:, None] == text_ids[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    loss_i2t = -(targets * logits.log_softmax(1)).sum(1).mean()
    loss_t2i = -(targets * logits.T.log_softmax(1)).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2


@holds_outputs(lambda out, **_: [out])
def fit_align(
    config: AlignFitConfig | None = None,
    out: str | os.PathLike | None = None,
    *,
    quiet: bool = False,
    command: str | None = None,
) -> FitResult:
    """Fit an :class:`AlignModel` on ``config.data``'s captioned train pairs; measure it on the test pairs."""
    config = config or AlignFitConfig()
    config.validate()
    train, test = load_train_test(config.data, image_size=config.image_size, channels=config.channels,
                                  purpose="the model is measured apart")  # fmt: skip
    check_captioned(train, f"data {config.data!r}")
    if len(train) < 2:
        raise ValueError(f"data {config.data!r} has {len(train)} training pairs; InfoNCE needs at least 2")
    if config.epochs is None:
        config = replace(config, epochs=min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(PAIR_PASSES / len(train)))))
    assert config.epochs is not None
    device = resolve_device(config.device)
    start = time.perf_counter()
    texts = sentence_embeddings(train.texts, config.text_encoder, device=device).to(device)
    text_ids = caption_ids(train.texts).to(device)
    torch.manual_seed(config.seed)
    model = AlignModel(
        train.channels, train.image_size, texts.shape[1], config.embed_dim, config.width, config.text_encoder,
        str(config.data), list(train.class_names),
    )  # fmt: skip
    model.to(device)
    x = train.images(range(len(train))).to(device)
    batch = min(config.batch_size, len(train))
    steps = config.epochs * (len(train) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(config.seed)
    shift = max(1, train.image_size // 32)
    model.train()
    bar = tqdm(range(config.epochs), desc="fit align", disable=quiet)
    for _ in bar:
        order = torch.randperm(len(train), generator=gen)
        for i in range(0, len(train) - batch + 1, batch):  # whole batches only: every pair sees batch-1 negatives
            idx = order[i : i + batch]
            loss = info_nce(model(random_shift(x[idx], shift, gen), texts[idx]), text_ids[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    metrics: dict[str, Any] = {"train_seconds": round(time.perf_counter() - start, 1), "train_pairs": len(train)}
    scores = score_pairs(model, test, group_size=min(100, len(test)), seed=0)
    model.cpu()
    metrics.update({f"test_{k}": v for k, v in scores.items() if isinstance(v, float)})
    metrics["test_pairs"] = len(test)
    if out is not None:
        _save(model, config, metrics, command, Path(out))
    return FitResult(model, metrics, None if out is None else Path(out))


def _save(model: AlignModel, config: AlignFitConfig, metrics: dict, command: str | None, out: Path) -> None:
    card = model_card(
        title="Image-text alignment model",
        command=command,
        default_command="latentmix fit align (Python API)",
        description=(
            f"A CLIP-style dual encoder fitted with symmetric InfoNCE on the captioned pairs of `{config.data}` (its "
            f"train split): an image tower trained from scratch and the frozen `{config.text_encoder}` sentence "
            "encoder under a learned projection. The test split was used only for the retrieval numbers below "
            "(recall within random groups of 100 test pairs). `latentmix evaluate-pairs` uses it to judge paired sets."
        ),
        metrics=metrics,
        settings=config,
    )

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "MODEL_CARD.md").write_text(card)

    atomic_directory(out, write, marker="AlignModel")
