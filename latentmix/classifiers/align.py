"""Image-text alignment models: a small CLIP-style dual encoder that says whether a caption describes an image.

An :class:`AlignModel` has an image tower trained from scratch (the conv tower of the reference classifiers,
then a projection) and a text tower that is the frozen offline sentence encoder (all-MiniLM-L6-v2 by default)
under a learned two-layer projection. Both land on the unit sphere of a shared ``embed_dim`` space; the cosine
of an image and a caption is their alignment score. It is fitted with the symmetric InfoNCE loss of CLIP
(Radford et al., 2021) on a data set's real train pairs — ``latentmix fit align --data shapes`` (the embedded
``models/shapes-align``; :mod:`latentmix.train.fit_align`) or any captioned image folder.

:func:`score_pairs` scores a set of pairs with it: every image and caption is embedded (batched), the pairs are
shuffled into groups, and within each group images retrieve captions and captions images (:func:`retrieval`:
recall@1/@5 both ways, with ties for equal captions, the perfect judge's ceiling and factor-level recall where
the data knows its factors). ``latentmix evaluate-pairs`` (:mod:`latentmix.jobs.evaluate_pairs`) reports it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn
from tqdm.auto import tqdm

from latentmix.backends.files import BACKEND_CONFIG, load_weights, read_json
from latentmix.classifiers.reference import conv_tower
from latentmix.configs import DEFAULT_ALIGN_MODELS
from latentmix.data import ImageTextDataset, spread_indices


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


def caption_ids(texts: list[str]) -> Tensor:
    """An id per caption, equal for equal captions (ties in retrieval, positives of each other in InfoNCE)."""
    unique = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    return torch.tensor([unique[t] for t in texts])


def recall_at(greater: Tensor, ties: Tensor, k: int) -> Tensor:
    """Expected recall@k per query when ``greater`` candidates score above the match and ``ties`` equal it."""
    return ((k - greater).double() / (ties + 1).double()).clamp(0.0, 1.0)


def retrieval(
    images: Tensor,
    texts: Tensor,
    *,
    text_ids: Tensor | None = None,
    group_size: int = 100,
    generator: torch.Generator | None = None,
    table: Tensor | None = None,
    named: Tensor | None = None,
) -> dict[str, float]:
    """Recall@1/@5 both ways within random groups, and the matched similarity, from unit embeddings (N, E).

    Args:
        images, texts: row i of each is pair i.
        text_ids: equal ids mark equal captions (ties); default: every caption distinct.
        group_size: pairs per group (N // group_size groups; at least one group of min(N, group_size)).
        generator: shuffles the pairs into groups.
        table, named: (N, F) factor values (label first) and (N, F) whether each caption names each factor: the
            perfect judge's text→image recall@1 ("ceiling") and the factor-level recall@1 ("fits") are added.
    """
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"pair alignment needs at least 2 pairs, got {n}")
    g = min(group_size, n)
    groups = n // g
    order = torch.randperm(n, generator=generator)[: groups * g].view(groups, g)
    img, txt = images[order].double(), texts[order].double()
    sims = img @ txt.transpose(1, 2)  # (G, g, g): image i against caption j
    match = sims.diagonal(dim1=1, dim2=2)  # (G, g)
    ids = (text_ids if text_ids is not None else torch.arange(n))[order]
    same_text = ids[:, :, None] == ids[:, None, :]  # (G, g, g), the diagonal included
    above_i2t = ((sims > match[:, :, None]) & ~same_text).sum(2)
    ties_i2t = same_text.sum(2) - 1
    above_t2i = (sims > match[:, None, :]).sum(1)
    no_ties = torch.zeros_like(above_t2i)
    out = {
        "image_to_text_r1": float(recall_at(above_i2t, ties_i2t, 1).mean()),
        "image_to_text_r5": float(recall_at(above_i2t, ties_i2t, 5).mean()),
        "text_to_image_r1": float(recall_at(above_t2i, no_ties, 1).mean()),
        "text_to_image_r5": float(recall_at(above_t2i, no_ties, 5).mean()),
        "matched_similarity": float(match.mean()),
        "pairs_scored": int(groups * g),
        "groups": int(groups),
    }
    if table is not None and named is not None:
        t, m = table[order], named[order]  # (G, g, F)
        # fits[b, i, j]: image j matches every factor that caption i names
        fits = (~m[:, :, None, :] | (t[:, :, None, :] == t[:, None, :, :])).all(-1)
        out["text_to_image_r1_ceiling"] = float((1.0 / fits.sum(2).double()).mean())
        top_image = sims.argmax(1, keepdim=True)  # (G, 1, g): per caption, the image it retrieves first
        top_text = sims.argmax(2, keepdim=True)  # (G, g, 1): per image, the caption it retrieves first
        out["text_to_image_r1_fits"] = float(fits.gather(2, top_image.transpose(1, 2)).double().mean())
        out["image_to_text_r1_fits"] = float(fits.gather(1, top_text.transpose(1, 2)).double().mean())
    return out


def factor_table(data: ImageTextDataset) -> tuple[Tensor, Tensor] | None:
    """(labels and factor values (N, F), which of them each caption names (N, F)), where the data knows both."""
    if data.factor_values is None or data.named_factors is None:
        return None
    names = ["label", *data.factor_values]
    table = torch.cat([data.labels[:, None], data.factor_labels()], dim=1)
    named = torch.tensor([[f in item for f in names] for item in data.named_factors], dtype=torch.bool)
    return table, named


@torch.inference_mode()
def embed_images(model, data: ImageTextDataset, indices, *, batch_size: int = 512, quiet: bool = True) -> Tensor:
    """(N, E) unit image embeddings of ``data``'s images at ``indices``, ``batch_size`` at a time."""
    indices = list(indices)
    chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    device = next(model.parameters()).device
    batches = tqdm(chunks, desc="embed images", disable=quiet)
    return torch.cat([model.embed_images(data.images(c).to(device)).float().cpu() for c in batches])


@torch.inference_mode()
def embed_captions(model, texts: list[str], encoder=None) -> tuple[Tensor, Tensor]:
    """(N, E) unit caption embeddings, and an id per caption (equal captions share it)."""
    from latentmix.data.text import TextEncoder

    device = next(model.parameters()).device
    encoder = encoder or TextEncoder.from_pretrained(model.config.text_encoder, device=device)
    return model.embed_texts(encoder.encode(texts).to(device)).float().cpu(), caption_ids(texts)


def score_pairs(
    model,
    data: ImageTextDataset,
    *,
    columns: dict[str, list[str]] | None = None,
    group_size: int = 100,
    seed: int = 0,
    max_pairs: int | None = None,
    batch_size: int = 512,
    encoder=None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Alignment numbers of ``data``'s pairs (its ``texts``), or of each caption column in ``columns``
    (name -> one caption per item), all against the same images and the same groups."""
    indices = spread_indices(len(data), max_pairs).tolist()
    images = embed_images(model, data, indices, batch_size=batch_size, quiet=quiet)
    factors = factor_table(data)
    results = {}
    for name, texts in (columns or {"text": data.texts}).items():
        texts = [texts[i] for i in indices]
        captions, ids = embed_captions(model, texts, encoder)
        extra = {}
        if factors is not None and columns is None:
            extra = {"table": factors[0][indices], "named": factors[1][indices]}
        gen = torch.Generator().manual_seed(seed)
        results[name] = retrieval(images, captions, text_ids=ids, group_size=group_size, generator=gen, **extra)
    return results if columns is not None else results["text"]
