"""Image-text alignment models: a small CLIP-style dual encoder that says whether a caption describes an image.

An :class:`AlignModel` has an image tower trained from scratch (the conv tower of the reference classifiers,
then a projection) and a text tower that is the frozen offline sentence encoder (all-MiniLM-L6-v2 by default)
under a learned two-layer projection. Both land on the unit sphere of a shared ``embed_dim`` space; the cosine
of an image and a caption is their alignment score. It is fitted with the symmetric InfoNCE loss of CLIP
(Radford et al., 2021) on a data set's real train pairs — ``latentmix fit align --data shapes`` (the embedded
``models/shapes-align``) or any captioned image folder — and :mod:`latentmix.jobs.evaluate_pairs` uses it to judge
paired sets. Captions that are exactly equal inside a batch count as positives of each other's images (a data
set whose captions repeat would otherwise teach the model to tell identical texts apart).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn
from tqdm.auto import tqdm

from latentmix.backends.files import BACKEND_CONFIG, atomic_directory, load_weights, read_json
from latentmix.classifiers.reference import conv_tower
from latentmix.configs import DEFAULT_ALIGN_MODELS, AlignFitConfig
from latentmix.data import ImageTextDataset, load_train_test
from latentmix.train.cards import model_card
from latentmix.train.common import FitResult, random_shift
from latentmix.utils.locks import holds_outputs

PAIR_PASSES = 300_000  # default fit length: about 30 epochs of the 10,000 shapes train pairs
MIN_EPOCHS, MAX_EPOCHS = 10, 200


class AlignModel(ModelMixin, ConfigMixin):
    """A dual encoder: ``embed_images`` (pixels in [-1, 1]) and ``embed_texts`` (sentence embeddings of
    ``text_encoder``) both return unit vectors of size ``embed_dim``.

    Args:
        in_channels, image_size: the images it reads.
        text_dim: size of the sentence embeddings it projects.
        embed_dim: size of the shared space.
        width: channels of the image tower.
        text_encoder: the sentence encoder its text tower sits on (a name or path for ``TextEncoder``).
        data: the data set it was fitted on (for the default real pairs and for messages).
        class_names: that data's classes (a paired set with other classes was made from other data).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        text_dim: int = 384,
        embed_dim: int = 128,
        width: int = 64,
        text_encoder: str = "all-MiniLM-L6-v2",
        data: str = "",
        class_names: list[str] | None = None,
    ):
        super().__init__()
        self.image_tower = conv_tower(in_channels, image_size, width, 2 * embed_dim)
        self.image_projection = nn.Linear(2 * embed_dim, embed_dim)
        self.text_projection = nn.Sequential(
            nn.Linear(text_dim, 2 * embed_dim), nn.GELU(), nn.Linear(2 * embed_dim, embed_dim)
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def image_shape(self) -> tuple[int, int]:
        return int(self.config.in_channels), int(self.config.image_size)

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names or [])

    def embed_images(self, images: Tensor) -> Tensor:
        return nn.functional.normalize(self.image_projection(self.image_tower(images)), dim=-1)

    def embed_texts(self, sentence_embeddings: Tensor) -> Tensor:
        return nn.functional.normalize(self.text_projection(sentence_embeddings), dim=-1)

    def forward(self, images: Tensor, sentence_embeddings: Tensor) -> Tensor:
        """The (N, M) scaled cosine logits of every image against every caption."""
        scale = self.logit_scale.exp().clamp(max=100.0)
        return scale * self.embed_images(images) @ self.embed_texts(sentence_embeddings).T


def load_align_model(path: str | os.PathLike) -> AlignModel:
    """An alignment model from a directory or an embedded name (``shapes-align``), whole or not at all."""
    from latentmix.backends.loading import embedded_models_dir

    where = Path(path)
    if not where.is_dir() and len(where.parts) == 1 and (embedded_models_dir() / where).is_dir():
        where = embedded_models_dir() / where
    if not where.is_dir():
        raise ValueError(f"align: {path} does not exist; fit one with `latentmix fit align --data DATA --out {path}`")
    kind = read_json(where / BACKEND_CONFIG, "alignment model config").get("_class_name")
    if kind != "AlignModel":
        raise ValueError(f"align: {where} is not an alignment model (_class_name={kind!r})")
    return load_weights(AlignModel, where).eval()


def align_model_for(align: str | None, data: str) -> str:
    """``align``, or the embedded alignment model of ``data``; a one-line way out for other data."""
    name = align or DEFAULT_ALIGN_MODELS.get(str(data))
    if name is None:
        raise ValueError(
            f"align: no alignment model for data {data!r}: fit one with `latentmix fit align --data {data} --out DIR` "
            "and pass --align DIR"
        )
    return name


def check_captioned(data: ImageTextDataset, name: str) -> None:
    """A ValueError unless every item of ``data`` has a caption of its own (not one made from its class name)."""
    if not getattr(data, "captioned", False):
        raise ValueError(
            f"{name} has no captions of its own (its texts are made from the class names); pair alignment needs "
            "captions: a metadata.jsonl with a 'text' for every image"
        )


def sentence_embeddings(texts: list[str], text_encoder: str, *, batch_size: int = 128) -> Tensor:
    """(N, D) sentence embeddings of ``texts`` by the named encoder (each unique text encoded once)."""
    from latentmix.data.text import TextEncoder

    return TextEncoder.from_pretrained(text_encoder, device="cpu").encode(texts, batch_size=batch_size)


def caption_ids(texts: list[str]) -> Tensor:
    """An id per caption, equal for equal captions (ties in retrieval, positives of each other in InfoNCE)."""
    unique = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    return torch.tensor([unique[t] for t in texts])


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
    from latentmix.jobs.evaluate_pairs import score_pairs

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
    start = time.perf_counter()
    texts = sentence_embeddings(train.texts, config.text_encoder)
    text_ids = caption_ids(train.texts)
    torch.manual_seed(config.seed)
    model = AlignModel(
        train.channels, train.image_size, texts.shape[1], config.embed_dim, config.width, config.text_encoder,
        str(config.data), list(train.class_names),
    )  # fmt: skip
    x = train.images(range(len(train)))
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
