"""Paired augmentation sets: blend aligned (image, text, label) examples and write a dataset.

``synthesize(config, out)`` (``latentmix synthesize``) encodes the source images and captions once,
then works shard by shard: draw each sample's pair and λ from (seed, sample index), blend image
latents, text embeddings and labels with that one λ, decode, and write. The output directory:

* ``images/NNNNNN/syn-XXXXXXXX.png`` — decoded images, one folder per shard;
* ``metadata.jsonl`` — Hugging Face imagefolder layout: ``file_name``, ``text`` (the caption
  nearest to the blended text embedding), ``composed_text``, ``label`` (dominant class),
  ``soft_label``, ``lambda``, ``source_a`` / ``source_b`` (source ids), ``id``;
* ``embeddings.safetensors`` — ``latent/<id>`` and ``text_embedding/<id>`` for every sample;
* ``manifest.json`` — settings and counts; written last, it counts only complete samples;
* ``shards/`` — per-shard metadata and embeddings (kept so that a run can resume or extend).

Sample ``i`` depends only on (seed, i): launched with N processes (``torchrun`` or
``accelerate launch``), the processes split the shards and the result is byte-identical to a
one-process run. A killed run resumes without gaps or duplicates; a larger ``n`` extends a set.
The shard size is part of a run's identity: with another shard size every sample keeps its pair
and λ, but a decoded pixel may differ by one gray level (batched convolutions round differently).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from latentmix.atomic import atomic_write_text
from latentmix.backends import LatentBackend, load_backend
from latentmix.blend import CaptionBank, Pairs, blend
from latentmix.data import Subset, labelled_subset, load_dataset
from latentmix.interpolate import check_method, interpolate
from latentmix.pairing import STRATEGIES, Pairing, sample_lambdas
from latentmix.shards import (
    IMAGES,
    SHARDS,
    merge_embeddings,
    merge_metadata,
    remove_temporaries,
    shard_rows,
    write_shard,
)
from latentmix.text import DEFAULT_TEXT_ENCODER, TextEncoder
from latentmix.version import __version__

RUN_FILE = ".latentmix-run.json"
MANIFEST = "manifest.json"
IN_MEMORY_LIMIT = 20_000


@dataclass
class SynthesisConfig:
    """Settings of ``latentmix synthesize``. Everything but ``n`` identifies a run."""

    backend: str = "digits-vae"  # embedded name, directory or hub id
    data: str = "digits"  # "digits" or an image folder / imagefolder with metadata.jsonl
    split: str = "train"  # source split: never blend test images into training data
    n: int = 1000  # number of synthetic samples
    strategy: str = "intra-class"  # random | intra-class | inter-class | knn
    seed: int = 0
    alpha: float = 1.0  # λ ~ Beta(alpha, alpha) per sample (1 = uniform)
    lam: float | None = None  # a fixed λ for every sample instead of drawing it
    gamma: float = 1.0  # label sharpening exponent (Diff-Mix); 1 = linear soft labels
    class_pairs: tuple[tuple[int, int], ...] | None = None  # inter-class: allowed (a, b) class pairs
    k: int = 5  # knn: neighbours to pick from
    method: str | None = None  # image-latent interpolator; default: the backend's
    text_encoder: str = DEFAULT_TEXT_ENCODER  # hub id or directory of a transformers encoder
    labels_per_class: int | None = None  # blend only this many labelled examples per class (low-data runs)
    subset_seed: int = 0  # which examples: latentmix.data.labelled_subset(labels, labels_per_class, subset_seed)
    shard_size: int = 256  # samples per shard (and per batch)
    refine_steps: int | None = None  # inversion backends (GANs): refinement steps; default: the backend's
    num_inference_steps: int | None = None  # diffusion backends: DDIM steps; default: the backend's
    guidance_scale: float | None = None  # diffusion backends: classifier-free guidance; default: the backend's
    allow_extrapolation: bool = False  # accept a fixed lam outside [0, 1]

    def validate(self) -> None:
        for name in ("n", "shard_size", "k"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha must be a finite number > 0, got {self.alpha!r}")
        if not (isinstance(self.gamma, (int, float)) and math.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(f"gamma must be a finite number > 0, got {self.gamma!r}")
        if self.lam is not None:
            if not math.isfinite(self.lam):
                raise ValueError(f"lam must be finite, got {self.lam}")
            if not self.allow_extrapolation and not 0 <= self.lam <= 1:
                raise ValueError(
                    f"lam must be in [0, 1], got {self.lam:g} (pass allow_extrapolation to extrapolate on purpose)"
                )
        if self.method is not None:
            check_method(self.method)
        if self.refine_steps is not None and (
            isinstance(self.refine_steps, bool) or not isinstance(self.refine_steps, int) or self.refine_steps < 0
        ):
            raise ValueError(f"refine_steps must be an int >= 0, got {self.refine_steps!r}")
        if self.class_pairs is not None and self.strategy != "inter-class":
            raise ValueError("class_pairs only applies to strategy inter-class")

    def identity(self) -> dict:
        """The settings that must match for a run to resume or extend an existing set."""
        d = asdict(self)
        d.pop("n")
        d["class_pairs"] = [list(p) for p in self.class_pairs] if self.class_pairs is not None else None
        return d


@dataclass
class SyntheticSamples:
    """A synthetic set in memory (small sets; large ones stay on disk)."""

    images: Tensor  # (n, C, H, W) uint8
    latents: Tensor  # (n, *latent_shape)
    text_embeddings: Tensor  # (n, D)
    soft_labels: Tensor  # (n, K)
    lam: Tensor  # (n,)
    texts: list[str]
    composed_texts: list[str]
    labels: list[int]
    source_a: list[str]
    source_b: list[str]
    ids: list[str]


@dataclass
class SynthesisResult:
    out: Path | None
    num_samples: int
    written: int  # samples computed by this call (0 when everything was already there)
    samples: SyntheticSamples | None = None


def _check_output_dir(out: Path, config: SynthesisConfig) -> None:
    """Refuse a directory holding something else, or more samples than ``config.n``."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    run = out / RUN_FILE
    if not run.is_file():
        raise ValueError(
            f"out {out} is not empty and holds no latentmix synthesis run; choose an empty or new directory"
        )
    previous = json.loads(run.read_text())
    differ = [k for k, v in config.identity().items() if previous.get(k) != v]
    if differ:
        shown = ", ".join(f"{k}: {previous.get(k)!r} there vs {getattr(config, k)!r} now" for k in differ[:3])
        raise ValueError(f"out {out} holds a different run's set ({shown}); choose another directory")
    done, shard = 0, 0
    while (rows := shard_rows(out, shard)) > 0:
        done += rows
        shard += 1
    if done > config.n:
        raise ValueError(f"out {out} already holds {done} samples; ask for n >= {done} or use a new directory")


def _to_uint8(images: Tensor) -> Tensor:
    return ((images.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu()


def _pil(image: Tensor) -> Image.Image:
    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0], "L") if array.shape[2] == 1 else Image.fromarray(array, "RGB")


class _Source:
    """Encoded source data: latents, text embeddings, one-hot labels, ids — computed once."""

    def __init__(self, config: SynthesisConfig, backend: LatentBackend, text_encoder: TextEncoder, quiet: bool):
        self.dataset = load_dataset(
            config.data, split=config.split, image_size=backend.image_size, channels=backend.image_channels
        )
        if config.labels_per_class is not None:
            self.dataset = Subset(
                self.dataset, labelled_subset(self.dataset.labels.numpy(), config.labels_per_class, config.subset_seed)
            )
        ds = self.dataset
        if len(ds) < 2:
            raise ValueError(
                f"data {config.data!r} ({config.split}) holds {len(ds)} example(s); need at least 2 to blend"
            )
        if not ds.class_names or bool((ds.labels < 0).any()):
            raise ValueError(
                f"data {config.data!r} has unlabelled examples; paired synthesis needs a label for every image"
            )
        chunks = range(0, len(ds), 256)
        kwargs = {
            **backend.encode_kwargs(config.refine_steps),
            **backend.sampling_kwargs(config.num_inference_steps, config.guidance_scale),
        }

        def encode(i: int) -> Tensor:
            rows = range(i, min(i + 256, len(ds)))
            texts = {"texts": [ds.texts[j] for j in rows]} if backend.supports_text_condition else {}
            return backend.encode(ds.images(rows), **texts, **kwargs).float().cpu()

        with torch.inference_mode():
            self.latents = torch.cat([encode(i) for i in tqdm(chunks, desc="encode sources", disable=quiet)])
        self.text_embeddings = text_encoder.encode(ds.texts)
        self.onehot = torch.nn.functional.one_hot(ds.labels, len(ds.class_names)).float()
        unique = sorted(set(ds.texts))
        self.bank = CaptionBank(unique, text_encoder.encode(unique))

    def side(self, idx: np.ndarray) -> Pairs:
        t = torch.from_numpy(idx)
        return Pairs(self.latents[t], self.text_embeddings[t], self.onehot[t], [self.dataset.texts[i] for i in idx])


def _make_shard(
    shard: int, config: SynthesisConfig, src: _Source, pairing: Pairing, backend: LatentBackend, method: str
):
    start = shard * config.shard_size
    idx = np.arange(start, min(start + config.shard_size, config.n))
    ia, ib = pairing.pairs(idx)
    lam = (
        np.full(len(idx), config.lam, dtype=np.float64)
        if config.lam is not None
        else sample_lambdas(config.seed, idx, config.alpha)
    )
    mix = blend(
        src.side(ia),
        src.side(ib),
        torch.from_numpy(lam),
        method=method,
        gamma=config.gamma,
        caption_bank=src.bank,
        allow_extrapolation=config.allow_extrapolation,
    )
    decode_kwargs = backend.sampling_kwargs(config.num_inference_steps, config.guidance_scale)
    if backend.supports_text_condition:  # the blended text conditions the decode, with the same λ
        t = torch.from_numpy(1.0 - lam)
        texts = src.dataset.texts
        decode_kwargs["cond"] = interpolate(
            backend.encode_text([texts[i] for i in ia]), backend.encode_text([texts[i] for i in ib]), t, "lerp"
        )
    with torch.inference_mode():
        images = _to_uint8(backend.decode(mix.latents.to(backend.device), **decode_kwargs))
    ids = [f"syn-{i:08d}" for i in idx]
    ds = src.dataset
    rows = []
    for j, sid in enumerate(ids):
        soft = [round(float(v), 6) for v in mix.soft_labels[j]]
        rows.append(
            {
                "file_name": f"{IMAGES}/{shard:06d}/{sid}.png",
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
    tensors = {"latent": mix.latents.float().cpu(), "text_embedding": mix.text_embeddings.float().cpu()}
    return rows, tensors, images, ids


def synthesize(
    config: SynthesisConfig,
    out: str | os.PathLike | None = None,
    *,
    quiet: bool = False,
    keep_in_memory: bool | None = None,
) -> SynthesisResult:
    """Make a paired augmentation set; write it to ``out`` and/or return it in memory.

    Args:
        config: a :class:`SynthesisConfig`.
        out: output directory (resumed or extended if it holds the same run); None keeps the
            set in memory only (at most 20,000 samples).
        quiet: hide progress bars.
        keep_in_memory: also return the samples (default: only when ``out`` is None).
    """
    from accelerate import PartialState

    from latentmix.train.common import has_accelerator

    config.validate()
    keep = (out is None) if keep_in_memory is None else keep_in_memory
    if keep and config.n > IN_MEMORY_LIMIT:
        raise ValueError(
            f"n={config.n} is too many samples to keep in memory (limit {IN_MEMORY_LIMIT}); write them with out="
        )
    state = PartialState(cpu=not has_accelerator())
    root = Path(out) if out is not None else None
    if root is not None:
        _check_output_dir(root, config)

    backend = load_backend(config.backend, device=state.device)
    method = config.method or backend.default_method
    text_encoder = TextEncoder.from_pretrained(config.text_encoder, device=state.device)
    src = _Source(config, backend, text_encoder, quiet or not state.is_local_main_process)
    pairing = Pairing(
        config.strategy,
        src.dataset.labels.numpy(),
        config.seed,
        class_pairs=config.class_pairs,
        latents=src.latents.numpy() if config.strategy == "knn" else None,
        k=config.k,
    )

    if root is not None and state.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        (root / SHARDS).mkdir(exist_ok=True)
        (root / IMAGES).mkdir(exist_ok=True)
        remove_temporaries(root)
        atomic_write_text(root / RUN_FILE, json.dumps(config.identity(), indent=2) + "\n")
    state.wait_for_everyone()

    num_shards = math.ceil(config.n / config.shard_size)
    mine = list(range(state.process_index, num_shards, state.num_processes))
    expected = lambda s: min(config.shard_size, config.n - s * config.shard_size)  # noqa: E731
    todo = [s for s in mine if keep or root is None or shard_rows(root, s) != expected(s)]
    collected: list = []
    written = 0
    bar = tqdm(
        total=sum(expected(s) for s in todo),
        desc="synthesize",
        unit="sample",
        disable=quiet or not state.is_local_main_process,
    )
    for s in todo:
        rows, tensors, images, ids = _make_shard(s, config, src, pairing, backend, method)
        if root is not None and shard_rows(root, s) != expected(s):
            write_shard(root, s, rows, tensors, [(f"{sid}.png", _pil(img)) for sid, img in zip(ids, images)])
            written += len(rows)
        if keep:
            collected.append((rows, tensors, images))
        bar.update(len(rows))
    bar.close()
    state.wait_for_everyone()

    if root is not None and state.is_main_process:
        _finish(root, config, num_shards, backend, text_encoder, src)
    state.wait_for_everyone()
    samples = _gather(collected) if keep and state.num_processes == 1 else None
    if root is None:
        written = config.n
    return SynthesisResult(out=root, num_samples=config.n, written=written, samples=samples)


def _finish(
    root: Path,
    config: SynthesisConfig,
    num_shards: int,
    backend: LatentBackend,
    text_encoder: TextEncoder,
    src: _Source,
) -> None:
    count = merge_metadata(root, num_shards, root / "metadata.jsonl")
    merge_embeddings(
        root,
        num_shards,
        ["latent", "text_embedding"],
        root / "embeddings.safetensors",
        {"format": "latentmix-synthetic", "keys": "latent/<id>, text_embedding/<id>"},
    )
    manifest = {
        "latentmix_version": __version__,
        "num_samples": count,
        "settings": config.identity(),
        "backend_class": backend.backend_name,
        "interpolation": config.method or backend.default_method,
        "text_encoder": text_encoder.name,
        "class_names": src.dataset.class_names,
        "num_classes": len(src.dataset.class_names),
        "image_size": backend.image_size,
        "channels": backend.image_channels,
        "latent_shape": list(backend.latent_shape),
        "text_embedding_dim": int(src.text_embeddings.shape[1]),
        "source_examples": len(src.dataset),
        "shards": num_shards,
    }
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def _gather(collected) -> SyntheticSamples:
    rows = [r for part in collected for r in part[0]]
    return SyntheticSamples(
        images=torch.cat([p[2] for p in collected]),
        latents=torch.cat([p[1]["latent"] for p in collected]),
        text_embeddings=torch.cat([p[1]["text_embedding"] for p in collected]),
        soft_labels=torch.tensor([r["soft_label"] for r in rows]),
        lam=torch.tensor([r["lambda"] for r in rows]),
        texts=[r["text"] for r in rows],
        composed_texts=[r["composed_text"] for r in rows],
        labels=[r["label"] for r in rows],
        source_a=[r["source_a"] for r in rows],
        source_b=[r["source_b"] for r in rows],
        ids=[r["id"] for r in rows],
    )
