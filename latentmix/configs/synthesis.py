"""Settings of the jobs that write data sets: ``synthesize`` (paired blends), ``export`` and ``augment``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from latentmix.configs.choices import AUGMENT_MODES, CAPTION_RULES, DEFAULT_TEXT_ENCODER, METHODS, SPLITS, STRATEGIES
from latentmix.configs.common import (
    IMBALANCE,
    IMBALANCE_HELP,
    OUT_DIR_HELP,
    PAIRS,
    TRANSFORM_NAMES,
    BackendSettings,
    DataSettings,
    Settings,
    SplitSettings,
    check_imbalance,
    override,
)
from latentmix.configs.options import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    PROBABILITY,
    SEED,
    identity,
    index_pair,
    int_in,
    number_in,
    one_of,
    option,
)

#: the most samples one synthesis run makes (a documented bound: a larger run is refused before any work)
MAX_SAMPLES = 100_000_000


def _balance_target(token: str) -> int:
    """``--balance max`` → 0 (every class up to the largest class's count), else a count of at least 1."""
    if token.strip().lower() == "max":
        return 0
    try:
        count = int(token)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or 'max', got {token!r}") from None
    if not 1 <= count <= MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"expected a count from 1 to {MAX_SAMPLES:,} or 'max', got {token!r}")
    return count


@dataclass
class SynthesisConfig(SplitSettings, DataSettings, BackendSettings):
    """Settings of ``latentmix synthesize``. Everything but ``n`` identifies a run (for resuming)."""

    data: str = override(
        DataSettings, "data", help="'digits', 'shapes' or an image folder / imagefolder with metadata.jsonl"
    )
    split: str = override(
        SplitSettings, "split", default="train", help="source split (never blend test images into training data)"
    )
    n: int = option(
        1000,
        f"number of synthetic samples, at most {MAX_SAMPLES:,} (with --balance: set by the balance)",
        flags=("--num-samples", "-n"),
        check=int_in(1, MAX_SAMPLES),
        identity=False,
    )
    strategy: str = option("intra-class", "which two examples each sample blends", check=one_of(STRATEGIES))
    seed: int = option(0, "the run's seed: sample i depends only on (seed, i)", check=SEED)
    alpha: float = option(1.0, "λ ~ Beta(alpha, alpha) per sample (1: uniform)", check=POSITIVE_NUMBER)
    lam: float | None = option(None, "a fixed λ (weight of the first source) instead of drawing it", check=number_in())
    gamma: float = option(1.0, "label sharpening exponent (Diff-Mix; 1: linear soft labels)", check=POSITIVE_NUMBER)
    class_pairs: tuple[tuple[int, int], ...] | None = option(
        None, "inter-class: the allowed (class a, class b) pairs", parse=index_pair, metavar="A:B", check=PAIRS
    )
    k: int = option(5, "knn: neighbours to choose from", check=POSITIVE_INT)
    method: str | None = option(None, "image-latent interpolator (default: the backend's)", check=one_of(METHODS))
    text_encoder: str = option(DEFAULT_TEXT_ENCODER, "hub id or directory of a transformers text encoder", path=True)
    caption: str = option(
        "auto",
        "the 'text' of a blend: 'factors' renders it from the blended factors (the dominant parent's, both near "
        "λ = 0.5), 'nearest' is the source caption nearest to the blended text embedding; 'auto': factors where "
        "the data has them",
        check=one_of(CAPTION_RULES),
    )
    caption_margin: float = option(
        0.0,
        "factors rule: name both parents' values where |λ - 0.5| is below this (0: always the dominant one)",
        check=number_in(0.0, 0.5),
    )
    labels_per_class: int | None = option(
        None, "blend only K labelled examples per class (low-data runs; default: all)", check=POSITIVE_INT
    )
    subset_seed: int = option(0, "which K per class: the same draw as `latentmix train --seed`", check=SEED)
    imbalance_ratio: float | None = option(
        None, IMBALANCE_HELP + "; the same draw as `latentmix train --imbalance-ratio`", metavar="R", check=IMBALANCE
    )
    balance: int | None = option(
        None,
        "balance the classes by synthesis: intra-class blends of each class below this count until it has it "
        "('max': the largest class's count; in Python 0 means max); sets the number of samples",
        parse=_balance_target,
        metavar="COUNT|max",
        check=NON_NEGATIVE_INT,
    )
    shard_size: int = option(256, "samples per shard (and per batch); part of a run's identity", check=POSITIVE_INT)
    allow_extrapolation: bool = option(False, "accept a fixed --lam outside [0, 1]")
    filter_classifier: str | None = option(
        None,
        "keep only blends this classifier agrees with: a directory from `latentmix train --save-model` or "
        "`fit reference-classifier`, or 'reference' (the embedded digits classifier, for digits)",
        path=True,
    )
    filter_threshold: float = option(
        0.5, "a blend is kept when the classifier gives its dominant class at least this probability", check=PROBABILITY
    )
    out: str | None = option(
        None,
        "output directory (an existing run with the same settings resumes or extends; in Python, none keeps the set "
        "in memory)",
        identity=False,
    )
    keep_in_memory: bool | None = option(
        None, "also return the samples (default: only when out is none)", cli=False, identity=False
    )

    def validate(self) -> None:
        super().validate()
        if self.lam is not None and not self.allow_extrapolation and not 0 <= self.lam <= 1:
            raise ValueError(
                f"lam must be in [0, 1], got {self.lam:g} (pass allow_extrapolation to extrapolate on purpose)"
            )
        if self.class_pairs is not None and self.strategy != "inter-class":
            raise ValueError("class_pairs only applies to strategy inter-class")
        if self.balance is not None and self.strategy != "intra-class":
            raise ValueError(f"balance makes intra-class blends; strategy must be intra-class, not {self.strategy!r}")
        check_imbalance(self)

    def identity(self) -> dict:
        """The settings that must match for a run to resume or extend an existing set."""
        return identity(self)


@dataclass
class ExportConfig(Settings):
    """Settings of ``latentmix export``: a data set written as an imagefolder with metadata.jsonl."""

    data: str = option("shapes", "'digits', 'shapes' or a labelled image folder", path=True)
    split: str = option("all", "train, test, or all (both, as train/ and test/)", check=one_of(SPLITS))
    image_size: int | None = option(None, "image side (default: the data's own)", check=POSITIVE_INT)
    out: str | None = option(None, OUT_DIR_HELP, identity=False)

    def validate(self) -> None:
        super().validate()
        if self.out is None:
            raise ValueError("out: give the output directory (new or empty)")


@dataclass
class AugmentConfig(Settings):
    """Settings of ``latentmix augment``: a data set or paired set written with synchronized (or image-only)
    transforms of its pairs."""

    data: str = option("shapes", "'shapes', a captioned image folder, or a paired set from `synthesize`", path=True)
    split: str = option("test", "train, test or all (for a paired set: ignored)", check=one_of(SPLITS))
    transforms: tuple[str, ...] = option(
        ("hflip", "translate", "recolour"),
        "any of hflip, vflip (any captioned data), translate, recolour (data with shapes' factors); vflip turns "
        "triangles and stars upside down, which shapes never shows",
        metavar="T",
        check=TRANSFORM_NAMES,
    )
    p: float = option(0.5, "probability that each transform is applied to a pair", check=PROBABILITY)
    mode: str = option(
        "synchronized", "synchronized (captions and factors follow), image-only, or none", check=one_of(AUGMENT_MODES)
    )
    seed: int = option(0, "seeds which pairs are transformed and how", check=SEED)
    out: str | None = option(None, OUT_DIR_HELP, identity=False)

    def validate(self) -> None:
        super().validate()
        if self.out is None:
            raise ValueError("out: give the output directory (new or empty)")
