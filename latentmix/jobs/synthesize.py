"""Paired augmentation sets: blend aligned (image, text, label) examples and write a dataset.

``synthesize(config, out)`` (``latentmix synthesize``) encodes the source images and captions once,
then works shard by shard: draw each sample's pair and λ from (seed, sample index), blend image
latents, text embeddings and labels with that one λ, decode, and write. The output directory:

the layout of :mod:`latentmix.data.synthetic` (images as png, jpeg or webp, ``metadata.jsonl``, each shard's
embeddings in ``shards/`` — the manifest lists them — and ``manifest.json`` written last; ``shards/`` also lets a
run resume or extend). The samples
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
import functools
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from latentmix.backends import LatentBackend, RunOptions, load_backend
from latentmix.backends.runtime import square_only
from latentmix.configs import SynthesisConfig, backend_for
from latentmix.configs.synthesis import DEFAULT_SAMPLES, MAX_SAMPLES
from latentmix.data.synthetic import EMBEDDING_FIELDS, EMBEDDINGS, IMAGE_EXTENSIONS, MANIFEST, METADATA, RUN_FILE
from latentmix.data.synthetic_embeddings import PER_SHARD
from latentmix.data.synthetic_formats import DATA, IMAGES, SHARDS
from latentmix.data.text import TextEncoder
from latentmix.jobs.claims import SOURCES, SourceCache, claim, clear_claims, release, wait_for
from latentmix.jobs.shards import merge_metadata, remove_temporaries, shard_state, write_shard
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


@dataclass(frozen=True)
class SynthesisPlan:
    """What a run derives from its settings before any work; the settings themselves stay as they were given.

    Attributes:
        backend: the backend the run uses: ``config.backend``, or the data's embedded default.
        n: samples to generate: ``config.n`` (default 1000), with ``balance`` the quota's sum, with ``per_image``
            that many per source example (the data decides).
        quota: with ``balance``: samples to make per class (every class up to the target), else None.
        identity: the settings that identify the run (for resuming), naming the resolved backend.
        root: the output directory, or None (in memory).
        keep: whether the samples are returned in memory.
    """

    backend: str
    n: int
    quota: np.ndarray | None
    identity: dict
    root: Path | None
    keep: bool

    @property
    def num_shards(self) -> int:
        return math.ceil(self.n / self.identity["shard_size"])


def plan_synthesis(config: SynthesisConfig) -> SynthesisPlan:
    """The :class:`SynthesisPlan` of validated settings (the balance quota reads the source labels)."""
    backend = backend_for(config.backend, config.data)
    if not isinstance(backend, (str, os.PathLike)):
        raise TypeError(
            "backend: a synthesis run records its backend's name or directory (to resume it); pass that, not a "
            f"loaded {type(backend).__name__}"
        )
    quota = balance_quota(source_labels(config), config.balance) if config.balance is not None else None
    if quota is not None:
        n = int(quota.sum())
    elif config.per_image is not None or (config.strategy == "augment" and config.n is None):
        n = (config.per_image or 1) * len(source_labels(config))  # augment: one variant of each source by default
    else:
        n = DEFAULT_SAMPLES if config.n is None else config.n
    one_image = config.strategy == "augment" and config.noise == "inversion" and len(config.strengths) == 1
    if one_image and config.n is not None and n > (sources := len(source_labels(config))):
        raise ValueError(
            f"n: augment from the sources' own encodings (noise inversion at one strength, or a backend without "
            f"diffusion) makes one image per source ({sources} here); n={n} would repeat them (with a diffusion "
            "backend: noise random, or several strengths)"
        )
    if n > MAX_SAMPLES:
        given = "balance" if quota is not None else "per_image"
        raise ValueError(f"{given}: it takes {n:,} samples; a synthesis run makes at most {MAX_SAMPLES:,}")
    keep = (config.out is None) if config.keep_in_memory is None else config.keep_in_memory
    if keep and n > IN_MEMORY_LIMIT:
        raise ValueError(f"n={n} is too many samples to keep in memory (limit {IN_MEMORY_LIMIT}); write them with out=")
    identity = replace(config, backend=str(backend)).identity()
    root = Path(config.out) if config.out is not None else None
    return SynthesisPlan(str(backend), n, quota, identity, root, keep)


def _check_output_dir(out: Path, plan: SynthesisPlan) -> None:
    """Refuse a directory holding something else, or more samples than the run makes."""
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
    now = plan.identity
    # a setting added since that run was written counts as its default there (``dtype`` "fp32", ...)
    defaults = SynthesisConfig().identity()
    differ = [k for k, v in now.items() if previous.get(k, defaults.get(k)) != v]
    if differ:
        shown = ", ".join(f"{k}: {previous.get(k)!r} there vs {now[k]!r} now" for k in differ[:3])
        raise ValueError(f"out {out} holds a different run's set ({shown}); choose another directory")
    done, shard = 0, 0
    while (state := shard_state(out, shard, plan.identity["set_format"])) is not None:
        done += int(state["generated"])
        shard += 1
    if done > plan.n:
        raise ValueError(f"out {out} already holds {done} samples; ask for n >= {done} or use a new directory")


def synthesize(config: SynthesisConfig, *, quiet: bool = False) -> SynthesisResult:
    """Make a paired augmentation set; write it to ``config.out`` and/or return it in memory.

    Args:
        config: a :class:`~latentmix.configs.SynthesisConfig`; its ``out`` is resumed or extended if it holds the
            same run; None keeps the set in memory only (at most 20,000 samples); ``keep_in_memory`` also returns
            the samples of a set written to ``out``.
        quiet: hide progress bars.
    """
    from accelerate import PartialState

    from latentmix.utils.device import has_accelerator

    config.validate()
    run = RunOptions.from_settings(config)
    run.resolve_device()  # a device or precision this machine lacks: refused before any work
    plan = plan_synthesis(config)
    state = PartialState(cpu=not has_accelerator() or run.device == "cpu")
    root = plan.root
    guard = exclusive(root, "out") if root is not None and state.is_main_process else contextlib.nullcontext()
    with guard:  # one writer per output directory
        if root is not None:
            _check_output_dir(root, plan)
        return _synthesize(config, plan, run, state, quiet)


def _synthesize(config: SynthesisConfig, plan: SynthesisPlan, run: RunOptions, state, quiet: bool) -> SynthesisResult:
    root = plan.root
    # --device auto: this process's own device
    backend = load_backend(plan.backend, device=state.device, run=run)
    square_only(backend, "synthesize", "paired sets are read and trained on as square images")
    method = config.method or backend.default_method
    text_encoder = TextEncoder.from_pretrained(config.text_encoder, device=backend.device)
    show = not quiet and state.is_local_main_process
    cache = SourceCache(root, plan.identity, state.process_index, state.num_processes) if root is not None else None

    def pairing(dataset, latents=None) -> Pairing:
        return Pairing(
            config.strategy, dataset.labels.numpy(), config.seed, class_pairs=config.class_pairs, latents=latents,
            k=config.k, quota=plan.quota,  # drawn from the same labels SourceData loads
        )  # fmt: skip

    filters = []

    def check(dataset) -> None:  # bad pairs or filters: refused before anything is encoded or written
        if config.strategy != "knn":
            pairing(dataset)
        filters.append(_filters(config, backend, dataset.class_names))

    with backend.progress(show):
        src = SourceData(config, backend, text_encoder, quiet=not show, backend_name=plan.backend, cache=cache,
                         check=check)  # fmt: skip
    blend_filter = filters[0]
    pairs = pairing(src.dataset, src.latents.numpy() if config.strategy == "knn" else None)

    if root is not None and state.is_main_process:
        _start_run(root, plan)
    state.wait_for_everyone()  # short: every process has just encoded its part of the sources
    collected, written = _run_shards(config, plan, state, src, pairs, backend, method, blend_filter, show)
    if root is not None:  # every process waits on the shards' files, not on the process group
        for s in range(plan.num_shards):
            if state.num_processes == 1 and not _shard_done(root, plan, s):
                raise RuntimeError(f"{root}: shard {s} is incomplete after the run wrote it")  # a bug, not a wait
            wait_for(functools.partial(_shard_done, root, plan, s))
        if state.is_main_process:
            _finish(root, config, plan, backend, text_encoder, src)
        else:  # samples are deterministic: a manifest of these settings that counts these shards describes them
            states = [shard_state(root, s, config.set_format) or {} for s in range(plan.num_shards)]
            kept = [int(state.get("kept", -1)) for state in states]  # read once; the poll reads the manifest only
            wait_for(lambda: _manifest_written(root, plan, kept))
    else:
        state.wait_for_everyone()
    samples = _gather(collected) if plan.keep and state.num_processes == 1 else None
    if root is None:
        written = sum(len(s.rows) for s in collected)
    count = json.loads((root / MANIFEST).read_text())["num_samples"] if root is not None else written
    return SynthesisResult(out=root, num_samples=count, written=written, samples=samples, generated=plan.n)


def _only_empty_layout(out: Path) -> bool:
    for p in out.iterdir():
        hidden_temporary = p.name.startswith(".") and ".tmp-" in p.name
        empty_folder = p.name in (SHARDS, IMAGES, DATA) and p.is_dir() and not any(p.iterdir())
        encoded_sources = p.name == SOURCES and p.is_dir()  # a run stopped while or after encoding its sources
        if not (hidden_temporary or empty_folder or encoded_sources):
            return False
    return True


def _start_run(root: Path, plan: SynthesisPlan) -> None:
    """Create the layout, drop an interrupted run's temporaries, and record the run's identity."""
    root.mkdir(parents=True, exist_ok=True)
    remove_temporaries(root)
    atomic_write_text(root / RUN_FILE, json.dumps(plan.identity, indent=2) + "\n")  # first: the dir is a run's
    (root / SHARDS).mkdir(exist_ok=True)
    clear_claims(root)  # earlier runs' (a process that died): taken over now


def _shard_done(root: Path, plan: SynthesisPlan, shard: int) -> bool:
    """Whether ``shard`` is complete with all the samples it must generate."""
    size = int(plan.identity["shard_size"])
    state = shard_state(root, shard, plan.identity["set_format"])
    return state is not None and state["generated"] == min(size, plan.n - shard * size)


def _manifest_written(root: Path, plan: SynthesisPlan, kept: list[int]) -> bool:
    """Whether the set's manifest has these settings and counts the shards' ``kept`` rows."""
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        listed = [int(e["rows"]) for e in manifest["embeddings"]["shards"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return manifest.get("generated") == plan.n and manifest.get("settings") == plan.identity and listed == kept


def _run_shards(
    config: SynthesisConfig, plan: SynthesisPlan, state, src, pairing, backend, method, blend_filter, show: bool
) -> tuple[list[Shard], int]:
    """Make the missing shards and write them; keep them if asked. Several processes writing a set claim shards as
    they go (:mod:`latentmix.jobs.claims`: whoever is free takes the next); in memory, each takes every
    ``num_processes``-th."""
    root, keep = plan.root, plan.keep
    claims = root is not None and state.num_processes > 1
    mine = range(plan.num_shards) if claims else range(state.process_index, plan.num_shards, state.num_processes)

    def expected(s: int) -> int:
        return min(config.shard_size, plan.n - s * config.shard_size)

    def done(s: int) -> bool:
        return root is not None and _shard_done(root, plan, s)

    todo = [s for s in mine if keep or not done(s)]
    collected: list[Shard] = []
    written = 0
    total = None if claims else sum(expected(s) for s in todo)
    bar = tqdm(total=total, desc="synthesize", unit="sample", disable=not show)
    for s in todo:
        if claims and not claim(root, s, state.process_index):  # type: ignore[arg-type]
            continue  # another process makes it
        if claims and done(s):  # finished (and released) by another process after the list was made
            release(root, s)  # type: ignore[arg-type]
            continue
        shard = make_shard(s, config, src, pairing, backend, method, blend_filter, n=plan.n)
        if root is not None and not done(s):
            ext = IMAGE_EXTENSIONS[config.image_format]
            files = [(f"{sid}.{ext}", to_pil(img)) for sid, img in zip(shard.ids, shard.images, strict=True)]
            tensors = {k: v for k, v in shard.tensors.items() if k in stored_fields(config)}
            write_shard(root, s, shard.rows, tensors, files, shard.generated, set_format=config.set_format,
                        image_format=config.image_format, quality=config.image_quality)  # fmt: skip
            written += len(shard.rows)
        if claims:
            release(root, s)  # type: ignore[arg-type]
        if keep:
            collected.append(shard)
        bar.update(shard.generated)
    bar.close()
    return collected, written


def _finish(
    root: Path,
    config: SynthesisConfig,
    plan: SynthesisPlan,
    backend: LatentBackend,
    text_encoder: TextEncoder,
    src: SourceData,
) -> None:
    num_shards = plan.num_shards
    count = merge_metadata(root, num_shards, root / METADATA)
    states = [shard_state(root, s, config.set_format) or {} for s in range(num_shards)]
    generated = sum(int(state.get("generated", 0)) for state in states)
    embeddings = {
        "layout": PER_SHARD,
        "fields": list(stored_fields(config)),
        "shards": [
            {"file": f"{SHARDS}/{s:06d}.safetensors", "rows": int(state.get("kept", 0))}
            for s, state in enumerate(states)
        ],
    }
    manifest = {
        "latentmix_version": __version__,
        "num_samples": count,
        "generated": generated,
        "filter": None
        if config.filter_classifier is None and config.filter_align is None
        else {
            "classifier": config.filter_classifier,
            "threshold": config.filter_threshold if config.filter_classifier is not None else None,
            "align": config.filter_align,
            "align_k": config.filter_align_k if config.filter_align is not None else None,
            "align_template": config.filter_align_template if config.filter_align is not None else None,
            "kept": count,
            "kept_fraction": round(count / max(generated, 1), 6),
        },
        "settings": plan.identity,
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
        "format": config.set_format,
        "image_format": config.image_format,
        "embeddings": embeddings,
    }
    if config.balance is not None:
        assert plan.quota is not None
        manifest["balance"] = _balance_report(root, src, config.balance, plan.quota)
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    (root / EMBEDDINGS).unlink(missing_ok=True)  # a pre-0.2 run's merged file: the manifest now lists the shards


def stored_fields(config: SynthesisConfig) -> tuple[str, ...]:
    """The embeddings a run stores (``--no-latents`` / ``--no-text-embeddings`` leave them out)."""
    latent, text = EMBEDDING_FIELDS
    return tuple(f for f, skip in ((latent, config.no_latents), (text, config.no_text_embeddings)) if not skip)


def _balance_report(root: Path, src: SourceData, target: int, quota: np.ndarray) -> dict:
    """Per class: real examples, synthetic samples made and kept, and their sum (the target unless a filter dropped
    some)."""
    real = np.bincount(src.dataset.labels.numpy(), minlength=len(src.dataset.class_names))
    lines = (root / METADATA).read_text(encoding="utf-8").splitlines()
    kept = np.bincount([json.loads(line)["label"] for line in lines if line.strip()], minlength=len(real))
    names = src.dataset.class_names
    return {
        "target": int(real.max()) if target == 0 else int(target),
        "real": {n: int(v) for n, v in zip(names, real, strict=True)},
        "made": {n: int(v) for n, v in zip(names, quota, strict=True)},
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


def _filters(config: SynthesisConfig, backend: LatentBackend, names: list[str]):
    """The judge(s) a run keeps its samples by (``--filter-classifier``, ``--filter-align``; both must agree), or
    None."""
    from latentmix.jobs.align_filter import AlignFilter, AllFilters

    shape = (backend.image_channels, backend.image_size)
    filters: list = []
    if config.filter_classifier is not None:
        filters.append(BlendFilter(config.filter_classifier, config.filter_threshold, names, shape, config.data))
    if config.filter_align is not None:
        filters.append(AlignFilter(config.filter_align, config.filter_align_k, config.filter_align_template, names,
                                   shape))  # fmt: skip
    return None if not filters else filters[0] if len(filters) == 1 else AllFilters(filters)
