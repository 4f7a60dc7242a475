"""The computing half of paired synthesis: encode the source data once, then make any shard of samples.

:class:`SourceData` holds what every shard needs (image latents, sentence embeddings, one-hot labels and
the caption bank of the source split, computed once); :func:`make_shard` turns a range of sample indices
into blended rows, tensors and decoded images — a pure function of (config, shard), which is what makes a
synthetic set independent of batch size, process count and resume point. :mod:`latentmix.jobs.synthesize`
writes the shards; the benchmarks call these directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from latentmix.backends import CallOptions, LatentBackend, mix_conditions
from latentmix.configs import SynthesisConfig
from latentmix.data import ImageTextDataset, Subset, labelled_subset, load_dataset, load_matching
from latentmix.data.factor_captions import FactorCaptioner
from latentmix.data.synthetic import EMBEDDING_FIELDS, image_path, sample_id
from latentmix.data.text import TextEncoder
from latentmix.latent.blend import CaptionBank, Pairs, blend
from latentmix.latent.pairing import Pairing, sample_lambdas
from latentmix.utils.viz import to_uint8

ENCODE_CHUNK = 256


def _low_data_draw(config: SynthesisConfig, labels: np.ndarray) -> np.ndarray:
    assert config.labels_per_class is not None
    return labelled_subset(labels, config.labels_per_class, config.subset_seed, imbalance_ratio=config.imbalance_ratio)


def source_labels(config: SynthesisConfig) -> np.ndarray:
    """Labels of the examples a synthesis run blends: its split, and its low-data draw (no pixels are decoded;
    the image size passed only spares a mixed-size folder the question of which size to load at)."""
    labels = load_dataset(config.data, split=config.split, image_size=8).labels.numpy()
    return labels[_low_data_draw(config, labels)] if config.labels_per_class is not None else labels


class SourceData:
    """Encoded source data: latents, text embeddings, one-hot labels, captions — computed once.

    Args:
        config: the run's settings (data, split, low-data subset, encoder settings).
        backend: encodes the source images (conditioned on their captions when text-conditioned).
        text_encoder: embeds the captions (sentence embeddings, blended with the same λ).
        quiet: hide the progress bar.
        backend_name: how the run names the backend (for messages; default: ``config.backend``).
    """

    def __init__(
        self,
        config: SynthesisConfig,
        backend: LatentBackend,
        text_encoder: TextEncoder,
        quiet: bool,
        backend_name: str | None = None,
    ):
        self.dataset: ImageTextDataset = load_matching(
            config.data, config.split, backend.image_size, backend.image_channels, resize=config.resize,
            who=f"backend {backend_name or config.backend!r}",
            fix="fit a backend on this data (latentmix fit vae --data ...)",
        )  # fmt: skip
        if config.labels_per_class is not None:
            self.dataset = Subset(self.dataset, _low_data_draw(config, self.dataset.labels.numpy()))
        ds = self.dataset
        if len(ds) < 2:
            raise ValueError(
                f"data {config.data!r} ({config.split}) holds {len(ds)} example(s); need at least 2 to blend"
            )
        if not ds.class_names or bool((ds.labels < 0).any()):
            raise ValueError(
                f"data {config.data!r} has unlabelled examples; paired synthesis needs a label for every image"
            )
        #: the backend's call options of the run, checked once: every encode here and every shard's decode
        self.options = backend.call_options(CallOptions.from_settings(config))

        def encode(start: int) -> Tensor:
            rows = range(start, min(start + ENCODE_CHUNK, len(ds)))
            cond = backend.condition([ds.texts[j] for j in rows])
            return backend.encode(ds.images(rows), cond=cond, options=self.options).float().cpu()

        chunks = range(0, len(ds), ENCODE_CHUNK)
        with torch.inference_mode():
            self.latents = torch.cat([encode(i) for i in tqdm(chunks, desc="encode sources", disable=quiet)])
        self.text_embeddings = text_encoder.encode(ds.texts)
        self.onehot = torch.nn.functional.one_hot(ds.labels, len(ds.class_names)).float()
        unique = sorted(set(ds.texts))
        self.bank = CaptionBank(unique, text_encoder.encode(unique))
        self.captioner: FactorCaptioner | None = None
        if config.caption == "factors" or (config.caption == "auto" and ds.factor_values is not None):
            self.captioner = FactorCaptioner(ds, config.caption_margin)

    def side(self, idx: np.ndarray) -> Pairs:
        t = torch.from_numpy(idx)
        return Pairs(self.latents[t], self.text_embeddings[t], self.onehot[t], [self.dataset.texts[i] for i in idx])


@dataclass
class Shard:
    """One shard of synthetic samples: metadata rows, embeddings, images (N, H, W, C) uint8, ids — the kept
    ones — and how many the shard generated before a filter dropped some."""

    rows: list[dict]
    tensors: dict[str, Tensor]
    images: np.ndarray
    ids: list[str]
    generated: int


def _declared(model: Any, name: str) -> Any:
    """``model.name`` where the model's class declares it (a property of the reference classifiers), else None:
    asking a diffusers model for a config entry by attribute is deprecated (and warns)."""
    return getattr(model, name) if hasattr(type(model), name) else None


class BlendFilter:
    """Keeps a blend when a classifier gives its dominant class (the argmax of its soft label) at least
    ``threshold`` probability (after the classifier's own temperature), e.g. a classifier fitted on the real
    labelled examples: blends that left their class are dropped.

    Args:
        classifier: a directory (``latentmix train --save-model``, ``fit reference-classifier``) or
            ``"reference"`` for the embedded digits classifier.
        threshold: the smallest probability of the dominant class that keeps a blend.
        class_names: the source data's classes, which the classifier must name in the same order.
        image_shape: (channels, side) of the decoded blends, which the classifier must take.
    """

    def __init__(
        self, classifier: str, threshold: float, class_names: list[str], image_shape: tuple[int, int], data: str
    ):
        from latentmix.classifiers.networks import load_classifier
        from latentmix.classifiers.reference import load_reference_classifier

        if classifier == "reference":
            if str(data) != "digits":
                raise ValueError(
                    "filter_classifier: 'reference' is the digits classifier; for other data pass a classifier "
                    "directory (latentmix train --save-model DIR, or latentmix fit reference-classifier)"
                )
            self.model = load_reference_classifier()
        else:
            self.model = load_classifier(classifier)
        config = self.model.config
        names = list(_declared(self.model, "class_names") or config.get("class_names") or [])
        if names != list(class_names):
            raise ValueError(
                f"filter_classifier {classifier}: it names the classes {names[:5]}…, the data {class_names[:5]}…"
            )
        shape = tuple(_declared(self.model, "image_shape") or config.get("image_shape") or ())[-2:]
        want = (image_shape[0], image_shape[1]) if len(shape) == 2 and shape[0] in (1, 3) else None
        if len(shape) == 2 and shape[0] in (1, 3) and tuple(shape) != tuple(image_shape):
            raise ValueError(f"filter_classifier {classifier}: it takes {shape} images, the blends are {want}")
        temperature = config.get("temperature", 1.0)
        temperature = 1.0 if temperature is None else temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
            raise ValueError(
                f"filter_classifier {classifier}: its temperature is {temperature!r}; it must be a finite number > 0 "
                "(refit or re-save the classifier)"
            )
        broken = next((n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())), None)
        if broken is not None:
            raise ValueError(
                f"filter_classifier {classifier}: its weight {broken!r} holds NaN or inf; it would keep no blend"
            )
        self.temperature = float(temperature)
        self.threshold = threshold

    def keep(self, images: Tensor, soft_labels: Tensor) -> Tensor:
        """A boolean mask over the batch: which blends the classifier agrees with."""
        with torch.inference_mode():
            probs = (self.model(images.float().cpu()).double() / self.temperature).softmax(1)
        dominant = soft_labels.argmax(1)
        return probs[torch.arange(len(dominant)), dominant] >= self.threshold


def shard_indices(shard: int, shard_size: int, n: int) -> np.ndarray:
    """The sample indices of ``shard`` in a run of ``n`` samples."""
    start = shard * shard_size
    return np.arange(start, min(start + shard_size, n))


def make_shard(
    shard: int,
    config: SynthesisConfig,
    src: SourceData,
    pairing: Pairing,
    backend: LatentBackend,
    method: str,
    blend_filter: BlendFilter | None = None,
    *,
    n: int | None = None,
) -> Shard:
    """Samples ``shard * shard_size …`` of the run (of ``n`` samples, default ``config.n``): pair, λ, blend (one λ
    for latent, text and label), decode."""
    idx = shard_indices(shard, config.shard_size, config.n if n is None else n)
    ia, ib = pairing.pairs(idx)
    if config.lam is not None:
        lam = np.full(len(idx), config.lam, dtype=np.float64)
    else:
        lam = sample_lambdas(config.seed, idx, config.alpha)
    mix = blend(
        src.side(ia),
        src.side(ib),
        torch.from_numpy(lam),
        method=method,
        gamma=config.gamma,
        caption_bank=src.bank,
        allow_extrapolation=config.allow_extrapolation,
    )
    texts = src.dataset.texts
    # a text-conditioned backend decodes under the blend of the two captions' conditionings, with the same λ
    cond = mix_conditions(
        backend.condition([texts[i] for i in ia]),
        backend.condition([texts[i] for i in ib]),
        torch.from_numpy(1.0 - lam),
    )
    with torch.inference_mode():
        decoded = backend.decode(mix.latents.to(backend.device), cond=cond, options=src.options)
    keep = np.ones(len(idx), dtype=bool)
    if blend_filter is not None:
        keep = blend_filter.keep(decoded, mix.soft_labels).numpy()
    images = to_uint8(decoded)[keep]
    ids = [sample_id(int(i)) for i in idx[keep]]
    kept = np.flatnonzero(keep)
    ds = src.dataset
    rows = []
    for j, sid in zip(kept, ids, strict=True):
        soft = [round(float(v), 6) for v in mix.soft_labels[j]]
        text, extra = mix.captions[j], {}
        if src.captioner is not None:
            a, b, w = int(ia[j]), int(ib[j]), float(lam[j])
            text = src.captioner.caption(a, b, w, int(idx[j]))
            extra = {"nearest_text": mix.captions[j], "factors": src.captioner.factors(a, b, w)}
        rows.append(
            {
                "file_name": image_path(shard, sid),
                "text": text,
                "composed_text": mix.composed_captions[j],
                "label": int(np.argmax(soft)),
                "soft_label": soft,
                "lambda": round(float(lam[j]), 6),
                "source_a": ds.ids[ia[j]],
                "source_b": ds.ids[ib[j]],
                "label_a": int(ds.labels[ia[j]]),
                "label_b": int(ds.labels[ib[j]]),
                "id": sid,
                **extra,
            }
        )
    latent, text_embedding = EMBEDDING_FIELDS
    pick = torch.from_numpy(kept)
    tensors = {latent: mix.latents.float().cpu()[pick], text_embedding: mix.text_embeddings.float().cpu()[pick]}
    return Shard(rows, tensors, images, ids, generated=len(idx))
