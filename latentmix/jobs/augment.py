"""``latentmix augment``: write a data set or a paired set with its pairs transformed (:mod:`latentmix.data.augment`).

The output is an imagefolder like ``latentmix export`` writes (``images/``, ``metadata.jsonl`` with ``text``,
``label`` and one column per factor, ``class_names.json``, ``factors.json``), so ``--data OUT`` reads it back
and ``latentmix evaluate-pairs OUT`` scores its alignment. Which pairs are transformed, and how, depends only
on the seed and the pair's position (batches of 256, each with its own generator seeded by (seed, batch)).
The directory appears whole, by rename, or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from latentmix.configs import AugmentConfig
from latentmix.data import load_pairs
from latentmix.data.augment import PairAugment
from latentmix.data.folder import CLASS_NAMES, FACTORS
from latentmix.jobs.export import write_split
from latentmix.utils.atomic import check_new_output
from latentmix.utils.locks import holds_outputs

BATCH = 256


@dataclass
class AugmentResult:
    """What :func:`augment_dataset` wrote: ``out`` and how many pairs."""

    out: Path
    pairs: int


@holds_outputs(lambda config, **_: [config.out], check=check_new_output)  # one writer, from start to end
def augment_dataset(config: AugmentConfig, *, quiet: bool = False) -> AugmentResult:
    """Write ``config.data`` with ``config.transforms`` applied to its pairs under ``config.out`` (new or empty)."""
    from latentmix.utils.atomic import atomic_directory

    out = Path(str(config.out))
    data = load_pairs(config.data, split=config.split)
    if not getattr(data, "captioned", False):
        raise ValueError(
            f"data {config.data!r} has no captions of its own; synchronized augmentation rewrites captions"
        )
    augment = PairAugment(config.transforms, p=config.p, mode=config.mode, data=data, name=f"data {config.data!r}")
    has_factors = data.factor_values is not None

    def batches():
        for b, start in enumerate(range(0, len(data), BATCH)):
            indices = range(start, min(start + BATCH, len(data)))
            factors = [data.factors(i) for i in indices] if has_factors else None
            gen = torch.Generator().manual_seed(hash_seed(config.seed, b))
            result = augment(data.images(indices), [data.texts[i] for i in indices], factors, generator=gen)
            named = [data.named_factors[i] for i in indices] if data.named_factors is not None else None
            yield result.images, result.texts, [int(data.labels[i]) for i in indices], result.factors, named

    def write(tmp: Path) -> None:
        (tmp / CLASS_NAMES).write_text(json.dumps(list(data.class_names), indent=1) + "\n", encoding="utf-8")
        if has_factors:
            (tmp / FACTORS).write_text(json.dumps(data.factor_values, indent=1) + "\n", encoding="utf-8")
        write_split(tmp, batches(), len(data), f"augment ({config.mode})", quiet)

    atomic_directory(out, write, marker="")
    return AugmentResult(out, len(data))


def hash_seed(seed: int, batch: int) -> int:
    """A generator seed for batch ``batch`` of a run seeded ``seed`` (distinct for distinct pairs)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])
