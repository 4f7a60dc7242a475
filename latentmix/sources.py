"""The computing half of paired synthesis: encode the source data once, then make any shard of samples.

:class:`SourceData` holds what every shard needs (image latents, sentence embeddings, one-hot labels and
the caption bank of the source split, computed once); :func:`make_shard` turns a range of sample indices
into blended rows, tensors and decoded images — a pure function of (config, shard), which is what makes a
synthetic set independent of batch size, process count and resume point. :mod:`latentmix.synthesize`
writes the shards; the benchmarks call these directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from latentmix.backends import LatentBackend, mix_conditions
from latentmix.blend import CaptionBank, Pairs, blend
from latentmix.configs import SynthesisConfig
from latentmix.data import Subset, labelled_subset, load_dataset
from latentmix.data.synthetic import EMBEDDING_FIELDS, image_path, sample_id
from latentmix.pairing import Pairing, sample_lambdas
from latentmix.text import TextEncoder
from latentmix.viz import to_uint8

ENCODE_CHUNK = 256


class SourceData:
    """Encoded source data: latents, text embeddings, one-hot labels, captions — computed once.

    Args:
        config: the run's settings (data, split, low-data subset, encoder settings).
        backend: encodes the source images (conditioned on their captions when text-conditioned).
        text_encoder: embeds the captions (sentence embeddings, blended with the same λ).
        quiet: hide the progress bar.
    """

    def __init__(self, config: SynthesisConfig, backend: LatentBackend, text_encoder: TextEncoder, quiet: bool):
        self.dataset = load_dataset(
            config.data, split=config.split, image_size=backend.image_size, channels=backend.image_channels
        )
        if config.labels_per_class is not None:
            chosen = labelled_subset(self.dataset.labels.numpy(), config.labels_per_class, config.subset_seed)
            self.dataset = Subset(self.dataset, chosen)
        ds = self.dataset
        if len(ds) < 2:
            raise ValueError(
                f"data {config.data!r} ({config.split}) holds {len(ds)} example(s); need at least 2 to blend"
            )
        if not ds.class_names or bool((ds.labels < 0).any()):
            raise ValueError(
                f"data {config.data!r} has unlabelled examples; paired synthesis needs a label for every image"
            )
        kwargs = {
            **backend.encode_kwargs(config.refine_steps),
            **backend.sampling_kwargs(config.num_inference_steps, config.guidance_scale),
        }

        def encode(start: int) -> Tensor:
            rows = range(start, min(start + ENCODE_CHUNK, len(ds)))
            cond = backend.condition([ds.texts[j] for j in rows])
            return backend.encode(ds.images(rows), cond=cond, **kwargs).float().cpu()

        chunks = range(0, len(ds), ENCODE_CHUNK)
        with torch.inference_mode():
            self.latents = torch.cat([encode(i) for i in tqdm(chunks, desc="encode sources", disable=quiet)])
        self.text_embeddings = text_encoder.encode(ds.texts)
        self.onehot = torch.nn.functional.one_hot(ds.labels, len(ds.class_names)).float()
        unique = sorted(set(ds.texts))
        self.bank = CaptionBank(unique, text_encoder.encode(unique))

    def side(self, idx: np.ndarray) -> Pairs:
        t = torch.from_numpy(idx)
        return Pairs(self.latents[t], self.text_embeddings[t], self.onehot[t], [self.dataset.texts[i] for i in idx])


@dataclass
class Shard:
    """One shard of synthetic samples: metadata rows, embeddings, images (N, H, W, C) uint8, ids."""

    rows: list[dict]
    tensors: dict[str, Tensor]
    images: np.ndarray
    ids: list[str]


def shard_indices(shard: int, config: SynthesisConfig) -> np.ndarray:
    start = shard * config.shard_size
    return np.arange(start, min(start + config.shard_size, config.n))


def make_shard(
    shard: int, config: SynthesisConfig, src: SourceData, pairing: Pairing, backend: LatentBackend, method: str
) -> Shard:
    """Samples ``shard * shard_size …`` of the run: pair, λ, blend (one λ for latent, text and label), decode."""
    idx = shard_indices(shard, config)
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
    sampling = backend.sampling_kwargs(config.num_inference_steps, config.guidance_scale)
    with torch.inference_mode():
        images = to_uint8(backend.decode(mix.latents.to(backend.device), cond=cond, **sampling))
    ids = [sample_id(int(i)) for i in idx]
    ds = src.dataset
    rows = []
    for j, sid in enumerate(ids):
        soft = [round(float(v), 6) for v in mix.soft_labels[j]]
        rows.append(
            {
                "file_name": image_path(shard, sid),
                "text": mix.captions[j],
                "composed_text": mix.composed_captions[j],
                "label": int(np.argmax(soft)),
                "soft_label": soft,
                "lambda": round(float(lam[j]), 6),
                "source_a": ds.ids[ia[j]],
                "source_b": ds.ids[ib[j]],
                "label_a": int(ds.labels[ia[j]]),
                "label_b": int(ds.labels[ib[j]]),
                "id": sid,
            }
        )
    latent, text_embedding = EMBEDDING_FIELDS
    tensors = {latent: mix.latents.float().cpu(), text_embedding: mix.text_embeddings.float().cpu()}
    return Shard(rows, tensors, images, ids)
