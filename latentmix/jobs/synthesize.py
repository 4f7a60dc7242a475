"""Paired augmentation sets: blend aligned (image, text, label) examples and write a dataset.

``synthesize(config, out)`` (``latentmix synthesize``) encodes the source images and captions once,
then works shard by shard: draw each sample's pair and λ from (seed, sample index), blend image
latents, text embeddings and labels with that one λ, decode, and write. The output directory:

the layout of :mod:`latentmix.data.synthetic` (images, ``metadata.jsonl``, ``embeddings.safetensors``,
``manifest.json`` written last, ``shards/`` kept so that a run can resume or extend). The samples
themselves come from :mod:`latentmix.jobs.sources`.

Sample ``i`` depends only on (seed, i): launched with N processes (``torchrun`` or
``accelerate launch``), the processes split the shards and the result is byte-identical to a
one-process run with the same threads per process (float kernels may round by thread count). A killed
run resumes without gaps or duplicates; a larger ``n`` extends a set.
The shard size is part of a run's identity: with another shard size every sample keeps its pair
and λ, but a decoded pixel may differ by one gray level (batched convolutions round differently).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from latentmix.backends import LatentBackend, load_backend
from latentmix.configs import SynthesisConfig, backend_for
from latentmix.data.synthetic import EMBEDDING_FIELDS, EMBEDDINGS, IMAGES, MANIFEST, METADATA, RUN_FILE, SHARDS
from latentmix.data.text import TextEncoder
from latentmix.jobs.shards import merge_embeddings, merge_metadata, remove_temporaries, shard_state, write_shard
from latentmix.jobs.sources import BlendFilter, Shard, SourceData, make_shard, source_labels
from latentmix.latent.pairing import Pairing, balance_quota
from latentmix.utils.atomic import atomic_write_text
from latentmix.utils.locks import exclusive
from latentmix.utils.viz import to_pil
from latentmix.version import __version__

__all__ = ["SynthesisConfig", "SynthesisResult", "SyntheticSamples", "synthesize"]

IN_MEMORY_LIMIT = 20_000


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
    num_samples: int  # samples in the set (those a filter kept)
    written: int  # samples computed and kept by this call (0 when everything was already there)
    samples: SyntheticSamples | None = None
    generated: int = 0  # candidates generated (``config.n``); num_samples / generated is the kept fraction


def _check_output_dir(out: Path, config: SynthesisConfig) -> None:
    """Refuse a directory holding something else, or more samples than ``config.n``."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    run = out / RUN_FILE
    if not run.is_file() and _only_empty_layout(out):
        return  # a run killed before it wrote its run file (latentmix < 0.2 made the folders first)
    if not run.is_file():
        raise ValueError(
            f"out {out} is not empty and holds no latentmix synthesis run; choose an empty or new directory"
        )
    previous = json.loads(run.read_text(encoding="utf-8"))
    now = config.identity()
    differ = [k for k, v in now.items() if previous.get(k) != v]
    if differ:
        shown = ", ".join(f"{k}: {previous.get(k)!r} there vs {now[k]!r} now" for k in differ[:3])
        raise ValueError(f"out {out} holds a different run's set ({shown}); choose another directory")
    done, shard = 0, 0
    while (state := shard_state(out, shard)) is not None:
        done += int(state["generated"])
        shard += 1
    if done > config.n:
        raise ValueError(f"out {out} already holds {done} samples; ask for n >= {done} or use a new directory")


def synthesize(
    config: SynthesisConfig,
    out: str | os.PathLike | None = None,
    *,
    quiet: bool = False,
    keep_in_memory: bool | None = None,
) -> SynthesisResult:
    """Make a paired augmentation set; write it to ``out`` and/or return it in memory.

    Args:
        config: a :class:`~latentmix.configs.SynthesisConfig`.
        out: output directory (resumed or extended if it holds the same run); None keeps the
            set in memory only (at most 20,000 samples).
        quiet: hide progress bars.
        keep_in_memory: also return the samples (default: only when ``out`` is None).
    """
    from accelerate import PartialState

    from latentmix.train.common import has_accelerator

    config.validate()
    config = replace(config, backend=backend_for(config.backend, config.data))  # the run's identity names it
    quota = None  # with balance, the data decides how many samples: every class up to the target
    if config.balance is not None:
        quota = balance_quota(source_labels(config), config.balance)
        config = replace(config, n=int(quota.sum()))
    keep = (out is None) if keep_in_memory is None else keep_in_memory
    if keep and config.n > IN_MEMORY_LIMIT:
        raise ValueError(
            f"n={config.n} is too many samples to keep in memory (limit {IN_MEMORY_LIMIT}); write them with out="
        )
    state = PartialState(cpu=not has_accelerator())
    root = Path(out) if out is not None else None
    guard = exclusive(root, "out") if root is not None and state.is_main_process else contextlib.nullcontext()
    with guard:  # one writer per output directory
        if root is not None:
            _check_output_dir(root, config)
        return _synthesize(config, root, state, keep, quiet, quota)


def _synthesize(
    config: SynthesisConfig, root: Path | None, state, keep: bool, quiet: bool, quota: np.ndarray | None
) -> SynthesisResult:
    assert config.backend is not None
    backend = load_backend(config.backend, device=state.device)
    method = config.method or backend.default_method
    text_encoder = TextEncoder.from_pretrained(config.text_encoder, device=state.device)
    show = not quiet and state.is_local_main_process
    with backend.progress(show):
        src = SourceData(config, backend, text_encoder, quiet=not show)
    blend_filter = None
    if config.filter_classifier is not None:
        shape = (backend.image_channels, backend.image_size)
        names = src.dataset.class_names
        blend_filter = BlendFilter(config.filter_classifier, config.filter_threshold, names, shape, config.data)
    pairing = Pairing(
        config.strategy,
        src.dataset.labels.numpy(),
        config.seed,
        class_pairs=config.class_pairs,
        latents=src.latents.numpy() if config.strategy == "knn" else None,
        k=config.k,
        quota=quota,  # drawn from the same labels SourceData just loaded
    )

    if root is not None and state.is_main_process:
        _start_run(root, config)
    state.wait_for_everyone()
    collected, written = _run_shards(config, root, state, src, pairing, backend, method, blend_filter, keep, show)
    state.wait_for_everyone()

    if root is not None and state.is_main_process:
        _finish(root, config, math.ceil(config.n / config.shard_size), backend, text_encoder, src)
    state.wait_for_everyone()
    samples = _gather(collected) if keep and state.num_processes == 1 else None
    if root is None:
        written = sum(len(s.rows) for s in collected)
    count = json.loads((root / MANIFEST).read_text())["num_samples"] if root is not None else written
    return SynthesisResult(out=root, num_samples=count, written=written, samples=samples, generated=config.n)


def _only_empty_layout(out: Path) -> bool:
    for p in out.iterdir():
        hidden_temporary = p.name.startswith(".") and ".tmp-" in p.name
        empty_folder = p.name in (SHARDS, IMAGES) and p.is_dir() and not any(p.iterdir())
        if not (hidden_temporary or empty_folder):
            return False
    return True


def _start_run(root: Path, config: SynthesisConfig) -> None:
    """Create the layout, drop an interrupted run's temporaries, and record the run's identity."""
    root.mkdir(parents=True, exist_ok=True)
    remove_temporaries(root)
    atomic_write_text(root / RUN_FILE, json.dumps(config.identity(), indent=2) + "\n")  # first: the dir is a run's
    (root / SHARDS).mkdir(exist_ok=True)
    (root / IMAGES).mkdir(exist_ok=True)


def _run_shards(
    config, root, state, src, pairing, backend, method, blend_filter, keep: bool, show: bool
) -> tuple[list[Shard], int]:
    """This process's shards (every ``num_processes``-th): make the missing ones, write them; keep them if asked."""
    num_shards = math.ceil(config.n / config.shard_size)
    mine = list(range(state.process_index, num_shards, state.num_processes))

    def expected(s: int) -> int:
        return min(config.shard_size, config.n - s * config.shard_size)

    def done(s: int) -> bool:
        state = shard_state(root, s) if root is not None else None
        return state is not None and state["generated"] == expected(s)

    todo = [s for s in mine if keep or not done(s)]
    collected: list[Shard] = []
    written = 0
    bar = tqdm(total=sum(expected(s) for s in todo), desc="synthesize", unit="sample", disable=not show)
    for s in todo:
        shard = make_shard(s, config, src, pairing, backend, method, blend_filter)
        if root is not None and not done(s):
            files = [(f"{sid}.png", to_pil(img)) for sid, img in zip(shard.ids, shard.images, strict=True)]
            write_shard(root, s, shard.rows, shard.tensors, files, generated=shard.generated)
            written += len(shard.rows)
        if keep:
            collected.append(shard)
        bar.update(shard.generated)
    bar.close()
    return collected, written


def _finish(
    root: Path,
    config: SynthesisConfig,
    num_shards: int,
    backend: LatentBackend,
    text_encoder: TextEncoder,
    src: SourceData,
) -> None:
    count = merge_metadata(root, num_shards, root / METADATA)
    generated = sum(int((shard_state(root, s) or {}).get("generated", 0)) for s in range(num_shards))
    merge_embeddings(
        root,
        num_shards,
        list(EMBEDDING_FIELDS),
        root / EMBEDDINGS,
        {"format": "latentmix-synthetic", "keys": ", ".join(f"{f}/<id>" for f in EMBEDDING_FIELDS)},
    )
    manifest = {
        "latentmix_version": __version__,
        "num_samples": count,
        "generated": generated,
        "filter": None
        if config.filter_classifier is None
        else {
            "classifier": config.filter_classifier,
            "threshold": config.filter_threshold,
            "kept": count,
            "kept_fraction": round(count / max(generated, 1), 6),
        },
        "settings": config.identity(),
        "backend_class": backend.backend_name,
        "interpolation": config.method or backend.default_method,
        "text_encoder": text_encoder.name,
        "class_names": src.dataset.class_names,
        "factor_values": src.dataset.factor_values,
        "num_classes": len(src.dataset.class_names),
        "image_size": backend.image_size,
        "channels": backend.image_channels,
        "latent_shape": list(backend.latent_shape),
        "text_embedding_dim": int(src.text_embeddings.shape[1]),
        "source_examples": len(src.dataset),
        "shards": num_shards,
    }
    if config.balance is not None:
        manifest["balance"] = _balance_report(root, src, config.balance)
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def _balance_report(root: Path, src: SourceData, target: int) -> dict:
    """Per class: real examples, synthetic samples kept, and their sum (the target unless a filter dropped some)."""
    real = np.bincount(src.dataset.labels.numpy(), minlength=len(src.dataset.class_names))
    lines = (root / METADATA).read_text(encoding="utf-8").splitlines()
    kept = np.bincount([json.loads(line)["label"] for line in lines if line.strip()], minlength=len(real))
    names = src.dataset.class_names
    return {
        "target": int(real.max()) if target == 0 else int(target),
        "real": {n: int(v) for n, v in zip(names, real, strict=True)},
        "synthetic": {n: int(v) for n, v in zip(names, kept, strict=True)},
        "total": {n: int(a + b) for n, a, b in zip(names, real, kept, strict=True)},
    }


def _gather(collected: list[Shard]) -> SyntheticSamples:
    rows = [r for shard in collected for r in shard.rows]
    latent, text_embedding = EMBEDDING_FIELDS
    return SyntheticSamples(
        images=torch.from_numpy(np.concatenate([s.images for s in collected])).permute(0, 3, 1, 2).contiguous(),
        latents=torch.cat([s.tensors[latent] for s in collected]),
        text_embeddings=torch.cat([s.tensors[text_embedding] for s in collected]),
        soft_labels=torch.tensor([r["soft_label"] for r in rows]),
        lam=torch.tensor([r["lambda"] for r in rows]),
        texts=[r["text"] for r in rows],
        composed_texts=[r["composed_text"] for r in rows],
        labels=[r["label"] for r in rows],
        source_a=[r["source_a"] for r in rows],
        source_b=[r["source_b"] for r in rows],
        ids=[r["id"] for r in rows],
    )
