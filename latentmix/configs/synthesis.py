"""Settings of the jobs that write data sets: ``synthesize`` (paired blends), ``export`` and ``augment``."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from latentmix.configs.choices import (
    AUGMENT_MODES,
    CAPTION_RULES,
    DEFAULT_TEXT_ENCODER,
    IMAGE_FORMATS,
    METHODS,
    NOISE_KINDS,
    SET_FORMATS,
    SPLITS,
    STRATEGIES,
)
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
    Check,
    identity,
    index_pair,
    int_in,
    number_in,
    one_of,
    option,
)
from latentmix.utils import validation

#: the most samples one synthesis run makes (a documented bound: a larger run is refused before any work)
MAX_SAMPLES = 100_000_000
DEFAULT_SAMPLES = 1000
CLASS_PROMPT = "a photo of a {class}"

#: ``synthesize --recipe NAME``: the published generative-augmentation methods these settings express.
#: ``fixes``: what the method *is* (a different value is refused); ``defaults``: the paper's settings, which apply
#: where the run leaves the setting at its own default (change them freely). README: "Recipes from the literature".
SYNTHESIS_RECIPES: dict[str, dict[str, dict]] = {
    # He et al. 2023: img2img of each real image with its class prompt (SDEdit at 0.5)
    "real-guidance": {
        "fixes": {"strategy": "augment", "noise": "random"},
        "defaults": {"strength": (0.5,), "per_image": 10, "prompt_template": CLASS_PROMPT},
    },
    # Trabucco et al. 2024: M variants per real image at a strength drawn per variant, a learned token per class
    # (pass --textual-inversion and a prompt that names the token)
    "da-fusion": {
        "fixes": {"strategy": "augment", "noise": "random"},
        "defaults": {"strength": (0.5, 0.7, 0.9), "per_image": 10, "prompt_template": CLASS_PROMPT},
    },
    # Wang et al. 2024 (Diff-Mix's ablation): translation within the class, at the repository's strength 0.8
    "diff-aug": {
        "fixes": {"strategy": "augment", "noise": "random"},
        "defaults": {"strength": (0.8,), "per_image": 5, "prompt_template": CLASS_PROMPT},
    },
    # Wang et al. 2024: a source image translated toward another class's prompt, label (1 - s^γ)·y_a + s^γ·y_b
    "diff-mix": {
        "fixes": {"strategy": "translate", "noise": "random"},
        "defaults": {"strength": (0.8,), "per_image": 5, "prompt_template": CLASS_PROMPT, "gamma": 0.5},
    },
    # Wang & Chen 2025: slerp between DDIM inversions of two images of one class (one prompt, not the paper's
    # two-stage denoising)
    "diff-ii": {
        "fixes": {"strategy": "intra-class", "noise": "inversion", "method": "slerp"},
        "defaults": {"per_image": 5, "prompt_template": CLASS_PROMPT},
    },
}


def _strengths(value, name: str) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or not value:
        raise ValueError(f"{name} must be a non-empty list of numbers in (0, 1], got {value!r}")
    return tuple(validation.strength(v, name) for v in value)


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
    recipe: str | None = option(
        None,
        "a published method's settings: " + ", ".join(SYNTHESIS_RECIPES) + " (README: recipes from the literature)",
        check=one_of(tuple(SYNTHESIS_RECIPES)),
    )
    n: int | None = option(
        None,
        f"number of synthetic samples, at most {MAX_SAMPLES:,} (default {DEFAULT_SAMPLES}, augment: one per source; "
        "with --balance or --per-image: set by the data)",
        flags=("--num-samples", "-n"),
        check=int_in(1, MAX_SAMPLES),
        identity=False,
    )
    strategy: str = option(
        "intra-class",
        "which examples each sample comes from: two blended (random, intra-class, inter-class, knn), variants of one "
        "(augment), or one moved toward another class's prompt (translate)",
        check=one_of(STRATEGIES),
    )
    strength: tuple[float, ...] | None = option(
        None,
        "diffusion backends: run only this fraction of the sampling steps from a partly noised latent (img2img); "
        "several: one drawn per sample (default: 1, all the way from noise)",
        metavar="S",
        check=Check(_strengths),
    )
    noise: str = option(
        "inversion",
        "where each sample's noise comes from: inversion (the sources' DDIM inversion to that strength) or random "
        "(each sample's own seeded noise added to the source latent: SDEdit; diffusion backends)",
        check=one_of(NOISE_KINDS),
    )
    per_image: int | None = option(
        None,
        "samples per source example: sets the number of samples (augment: that many variants of each)",
        check=POSITIVE_INT,
    )
    prompt_template: str | None = option(
        None,
        "diffusion backends: the prompt of each source, e.g. 'a photo of a {class}' ({class}, {text} or a factor "
        "of the data); default: its caption",
    )
    prompts: str | None = option(
        None,
        "a JSON file of class name -> prompt (or list of prompts, one drawn per sample); a template each",
        path=True,
    )
    seed: int = option(0, "the run's seed: sample i depends only on (seed, i)", check=SEED)
    alpha: float = option(1.0, "λ ~ Beta(alpha, alpha) per sample (1: uniform)", check=POSITIVE_NUMBER)
    lam: float | None = option(None, "a fixed λ (weight of the first source) instead of drawing it", check=number_in())
    gamma: float = option(
        1.0,
        "label sharpening exponent γ (Diff-Mix: (1 - s^γ)·y_a + s^γ·y_b, s the weight of b, or a translation's "
        "strength; 1: linear soft labels)",
        check=POSITIVE_NUMBER,
    )
    class_pairs: tuple[tuple[int, int], ...] | None = option(
        None,
        "inter-class, translate: the allowed (class a, class b) pairs",
        parse=index_pair,
        metavar="A:B",
        check=PAIRS,
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
    set_format: str = option(
        "imagefolder",
        "how shards are stored: imagefolder (image files + metadata.jsonl), webdataset (one tar per shard) or parquet "
        "(one file per shard, readable by datasets.load_dataset('parquet'))",
        flags=("--format",),
        check=one_of(SET_FORMATS),
    )
    image_format: str = option(
        "png", "image files: png (lossless), jpeg or webp (smaller)", check=one_of(IMAGE_FORMATS)
    )
    image_quality: int = option(95, "jpeg / webp quality, 1-100 (png ignores it)", check=int_in(1, 100))
    no_latents: bool = option(False, "do not store each sample's latent (a smaller set)")
    no_text_embeddings: bool = option(
        False, "do not store each sample's blended text embedding (cross-modal and text training then refuse the set)"
    )
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
    filter_align: str | None = option(
        None,
        "keep only samples whose class prompt this alignment model (`latentmix fit align`, or shapes-align) ranks "
        "within the top --filter-align-k of every class's prompt for the image",
        path=True,
    )
    filter_align_k: int = option(1, "the alignment filter keeps a sample whose class is within this top k",
                                 check=POSITIVE_INT)  # fmt: skip
    filter_align_template: str = option("a {class}", "the alignment filter's prompt of each class ({class})")
    out: str | None = option(
        None,
        "output directory (an existing run with the same settings resumes or extends; in Python, none keeps the set "
        "in memory)",
        identity=False,
    )
    keep_in_memory: bool | None = option(
        None, "also return the samples (default: only when out is none)", cli=False, identity=False
    )

    def __post_init__(self) -> None:
        """A recipe's settings: what it fixes (a different value is refused), and its defaults where the run left
        the setting at its own default."""
        if self.recipe is None:
            return
        spec = SYNTHESIS_RECIPES.get(self.recipe)
        if spec is None:
            raise ValueError(f"recipe must be one of {', '.join(SYNTHESIS_RECIPES)}, got {self.recipe!r}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, value in spec["fixes"].items():
            mine = getattr(self, name)
            if mine not in (value, defaults[name]):
                raise ValueError(f"recipe {self.recipe} is {name} {value!r}; drop {name} {mine!r} or the recipe")
            setattr(self, name, value)
        for name, value in spec["defaults"].items():
            if getattr(self, name) == defaults[name]:
                setattr(self, name, value)

    @property
    def strengths(self) -> tuple[float, ...]:
        """The strengths samples are drawn at (1: all the way from noise)."""
        return self.strength if self.strength is not None else (1.0,)

    def validate(self) -> None:
        super().validate()
        if self.n is not None and (self.balance is not None or self.per_image is not None):
            given = "balance" if self.balance is not None else "per_image"
            raise ValueError(f"n: {given} sets the number of samples; drop n (or {given})")
        if self.per_image is not None and self.balance is not None:
            raise ValueError("per_image: balance sets the number of samples; drop one of them")
        if (
            self.strategy == "augment"
            and self.noise == "inversion"
            and len(self.strengths) == 1
            and (self.per_image or 1) > 1
        ):
            raise ValueError(
                "per_image: augment with noise inversion makes the same image every time (DDIM inversion is "
                "deterministic); use noise random for variants, or several strengths"
            )
        if self.lam is not None and self.strategy in ("augment", "translate"):
            raise ValueError(f"lam applies to the blend strategies; {self.strategy} has no second source to weigh")
        if self.lam is not None and not self.allow_extrapolation and not 0 <= self.lam <= 1:
            raise ValueError(
                f"lam must be in [0, 1], got {self.lam:g} (pass allow_extrapolation to extrapolate on purpose)"
            )
        if self.class_pairs is not None and self.strategy not in ("inter-class", "translate"):
            raise ValueError("class_pairs only applies to strategies inter-class and translate")
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
