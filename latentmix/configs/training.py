"""Settings of classifier training: ``train``, its report outputs, and ``compare`` (recipes x seeds), with the
recipes ``compare`` runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from latentmix.configs.choices import AUGMENT_MODES, DEFAULT_TEXT_ENCODER, MIXED_PRECISION
from latentmix.configs.common import IMBALANCE, IMBALANCE_HELP, SEEDS, TRANSFORM_NAMES, Settings, check_imbalance
from latentmix.configs.options import (
    NON_NEGATIVE_INT,
    NON_NEGATIVE_NUMBER,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    PROBABILITY,
    SEED,
    Check,
    number_in,
    one_of,
    option,
)
from latentmix.utils import validation

MIXUP_MODES = ("none", "input", "cutmix", "manifold", "adversarial-manifold", "saliency", "cross-modal", "mixgen")
MODALITIES = ("auto", "image", "text", "fusion")  # what the classifier reads: auto = fusion for cross-modal / mixgen
FUSION_MIXUPS = ("cross-modal", "mixgen")  # mixing that needs image + caption
TEXT_MIXUPS = ("none", "input", "manifold")  # mixing a text-only classifier (an MLP on sentence embeddings) allows
DEPTH_CURRICULA = ("none", "linear", "step")  # manifold mixup: how the eligible layers move deeper
GRANULARITIES = ("sample", "channel")  # adversarial mixing: one weight per sample, or per sample and channel
DEFAULT_ALPHA = {
    "input": 0.4, "cutmix": 1.0, "manifold": 2.0, "adversarial-manifold": 2.0, "saliency": 1.0, "cross-modal": 0.4,
}  # fmt: skip  # Beta(α, α) per mixup mode
DEFAULT_TEMPERATURE_PRIOR = 0.3  # σ of the log-normal prior on T; chosen on held-out digits (BENCHMARKS.md)
CLASS_WEIGHTS = ("none", "balanced")  # classifier training: loss weight per class
OPTIMIZERS = ("adamw", "sgd")
MODEL_INITS = ("pretrained", "scratch")
FREEZE = ("none", "backbone")  # backbone: train the classification head only (a linear probe)
#: batched augmentations of the real training images (kornia.augmentation, on the training device)
IMAGE_AUGMENTS = ("crop", "hflip", "vflip", "color-jitter", "randaugment", "trivialaugment", "erasing")
LAYER_MIXUPS = ("manifold", "adversarial-manifold")  # the mixing modes that take --manifold-layers


def _normalize(value, name: str) -> tuple[float, ...]:
    if (
        isinstance(value, str)
        or not isinstance(value, tuple | list)
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise ValueError(f"{name} takes MEAN STD numbers, got {value!r}")
    values = tuple(value)
    if len(values) < 2 or len(values) % 2:
        raise ValueError(f"{name} takes MEAN STD (one number each, or one per channel: means first), got {value!r}")
    if any(float(v) <= 0 for v in values[len(values) // 2 :]):
        raise ValueError(f"{name}: every std must be > 0, got {values[len(values) // 2 :]}")
    return tuple(float(v) for v in values)


def _names(value, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{name} must be a non-empty list of module names, got {value!r}")
    return tuple(value)


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
    # the published generative-augmentation methods (``synthesize --recipe``; README: recipes from the literature)
    **{
        name: {"synthetic_strategy": name, "synthetic_recipe": True}
        for name in ("real-guidance", "da-fusion", "diff-aug", "diff-mix", "diff-ii")
    },
    # the same, sampled from the backend after `fit lora` on the seed's labelled images (LoRA + one token per class,
    # prompted with the tokens: DA-Fusion's and Diff-Mix's fine-tuned models)
    **{
        f"{name}+lora": {"synthetic_strategy": name, "synthetic_recipe": True, "synthetic_adapt": "lora"}
        for name in ("real-guidance", "da-fusion", "diff-aug", "diff-mix", "diff-ii")
    },
    "blends-intra+lora": {"synthetic_strategy": "intra-class", "synthetic_adapt": "lora"},
    # both: the balanced set, and each class's loss weighted by its count among the real labelled examples
    "blends-balance+reweight": {
        "synthetic_strategy": "intra-class",
        "synthetic_balance": True,
        "synthetic_pooled": True,
        "class_weights": "balanced",
    },
}
#: ``latentmix compare`` trains at 5 labels per class unless told otherwise
COMPARE_TRAIN_DEFAULTS: dict[str, Any] = {"labels_per_class": 5}
DEFAULT_RECIPES = ("erm", "input-mixup", "manifold-mixup", "blends-intra", "blends-inter", "blends-intra+manifold")


def _recipe_names(value, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty list of recipe names, got {value!r}")
    return tuple(validation.choice(v, name, RECIPES) for v in value)


@dataclass
class TrainConfig(Settings):
    """Settings of ``latentmix train``."""

    data: str = option(
        "digits", "'digits', 'shapes', an image folder with train/ and test/, or a .npz feature file", path=True
    )
    labels_per_class: int | None = option(
        None, "K labelled examples per class (default: the whole train split)", check=POSITIVE_INT
    )
    imbalance_ratio: float | None = option(None, IMBALANCE_HELP, metavar="R", check=IMBALANCE)
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
    lr: float = option(2e-3, "peak learning rate (cosine decay)", check=POSITIVE_NUMBER)
    weight_decay: float = option(5e-4, "weight decay (decoupled for AdamW, L2 for SGD)", check=NON_NEGATIVE_NUMBER)
    width: int = option(32, "SmallCNN width / MLP hidden size / 8", check=POSITIVE_INT)
    model: str | None = option(
        None,
        "fine-tune this transformers image classifier (AutoModelForImageClassification: a local directory or a hub "
        "id), its head re-sized to the data's classes (default: latentmix's own SmallCNN / MLP)",
        path=True,
    )
    trust_remote_code: bool = option(False, "--model: allow the checkpoint's own modelling code")
    init: str = option(
        "pretrained",
        "--model: start from its weights (pretrained), or train its architecture from fresh weights (scratch: a "
        "config.json suffices)",
        check=one_of(MODEL_INITS),
    )
    normalize: tuple[float, ...] | None = option(
        None,
        "--model without an image processor: MEAN STD of the model's input on pixels in [0, 1] (one each, or one per "
        "channel, means first; default: the processor's, else none)",
        metavar="V",
        check=Check(_normalize),
    )
    freeze: str = option("none", "backbone: train the classification head only (a linear probe)", check=one_of(FREEZE))
    manifold_layers: tuple[str, ...] | None = option(
        None,
        "manifold and adversarial-manifold mixing: the module names to mix at ('input' for the input; default: the "
        "input and the blocks of the model's trunk but the last, e.g. a ResNet's stages or a ViT's layers)",
        metavar="NAME",
        check=Check(_names),
    )
    optimizer: str = option("adamw", "adamw, or sgd (with --momentum, --nesterov)", check=one_of(OPTIMIZERS))
    momentum: float = option(0.9, "sgd: momentum", check=number_in(0.0, 1.0, exclusive_maximum=True))
    nesterov: bool = option(False, "sgd: Nesterov momentum")
    warmup_steps: int = option(0, "linear learning-rate warm-up over this many steps, then cosine decay",
                               check=NON_NEGATIVE_INT)  # fmt: skip
    grad_accum: int = option(1, "accumulate gradients over this many batches per optimiser step", check=POSITIVE_INT)
    clip_grad: float | None = option(None, "clip the gradient norm to this value", check=POSITIVE_NUMBER)
    ema: float | None = option(
        None,
        "keep an exponential moving average of the weights with this decay (e.g. 0.999); it is what is evaluated, "
        "early-stopped, reported and saved",
        check=number_in(0.0, 1.0, exclusive_maximum=True),
    )
    workers: int = option(
        0,
        "loader processes that decode the synthetic images of each batch (the set is never held in memory)",
        check=NON_NEGATIVE_INT,
        identity=False,
    )
    decode_cache_mb: int = option(
        512,
        "megabytes of decoded synthetic images each loader process keeps (8-bit), so that an image drawn again is not "
        "decoded again (0: decode every draw); the images are the same either way",
        check=NON_NEGATIVE_INT,
        identity=False,
    )
    image_augment: tuple[str, ...] = option(
        (),
        f"batched augmentation of the real training images on the training device (kornia): any of "
        f"{', '.join(IMAGE_AUGMENTS)}, applied in that order",
        metavar="A",
        check=Check(lambda v, n: tuple(validation.choice(x, n, IMAGE_AUGMENTS) for x in v)),
    )
    eval_every: int = option(100, "steps between validation evaluations", check=POSITIVE_INT)
    patience: int = option(6, "evaluations without a better validation NLL before stopping", check=POSITIVE_INT)
    temperature_prior: float | None = option(
        DEFAULT_TEMPERATURE_PRIOR,
        "σ of the log-normal prior on the fitted temperature; 'none' for Guo et al.'s plain NLL fit",
        metavar="SIGMA",
        check=POSITIVE_NUMBER,
    )
    seed: int = option(0, "seeds the labelled draw, the weights, the batches and the mixing", check=SEED)
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
        super().validate()
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
        if self.manifold_layers is not None and self.mixup not in LAYER_MIXUPS:
            raise ValueError(f"manifold_layers applies to {' and '.join(LAYER_MIXUPS)} mixing, not {self.mixup!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer sgd with momentum > 0")
        if self.model is not None and self.reads != "image":
            raise ValueError(f"model: modality {self.reads} trains latentmix's own network; --model is an image "
                             "classifier")  # fmt: skip
        if self.init != "pretrained" and self.model is None:
            raise ValueError("init applies to --model (a transformers checkpoint or config)")
        if self.image_augment and self.reads != "image":
            raise ValueError("image_augment transforms the images of an image classifier, not modality "
                             f"{self.reads}")  # fmt: skip
        check_imbalance(self)

    @property
    def reads(self) -> str:
        """The modality the classifier reads, ``auto`` resolved: image, text or fusion."""
        if self.modality != "auto":
            return self.modality
        return "fusion" if self.mixup in FUSION_MIXUPS else "image"


@dataclass
class ReportOutputs(Settings):
    """Where ``latentmix train`` writes its report (outputs, not settings)."""

    json: str | None = option(None, "write all metrics (before and after temperature scaling) here", identity=False)
    reliability: str | None = option(None, "write a reliability diagram PNG here", identity=False)

    def validate(self) -> None:
        super().validate()
        if self.json is not None:
            validation.output_file(self.json, "--json", (".json",))
        if self.reliability is not None:
            validation.output_file(self.reliability, "--reliability", (".png",))


@dataclass
class CompareConfig(Settings):
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
    adapt_steps: int = option(300, "+lora recipes: `fit lora` steps on each seed's labelled images", check=POSITIVE_INT)
    workdir: str | None = option(
        None,
        "where the synthetic sets, adapters and ERM judges go, kept and reused when complete (default: a temporary "
        "directory, removed at the end)",
    )
    train: TrainConfig | None = option(
        None,
        "the training settings every recipe starts from (default: TrainConfig at 5 labels per class; on the command "
        "line: the train flags)",
        cli=False,
    )

    @property
    def base(self) -> TrainConfig:
        """The settings every recipe starts from."""
        return self.train if self.train is not None else TrainConfig(**COMPARE_TRAIN_DEFAULTS)

    def validate(self) -> None:
        super().validate()
        if self.train is not None and not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        self.base.validate()
