"""Settings of the jobs that measure: ``evaluate`` (a backend's quality) and ``evaluate-pairs`` (how well the
captions of a paired set describe its images)."""

from __future__ import annotations

from dataclasses import dataclass

from latentmix.configs.choices import INVERSIONS
from latentmix.configs.common import (
    DEVICE,
    INVERSION_HELP,
    ITERATIONS_HELP,
    STRENGTH,
    BackendSettings,
    DataSettings,
    Settings,
    override,
)
from latentmix.configs.options import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    SEED,
    int_at_least,
    number_in,
    one_of,
    option,
)


@dataclass
class EvalConfig(DataSettings, BackendSettings):
    """Settings of ``latentmix evaluate`` (defaults: the numbers in BENCHMARKS.md)."""

    data: str = override(
        DataSettings, "data", help="'digits', 'shapes' or a labelled image folder (its test split is judged)"
    )
    refine_steps: int = override(
        BackendSettings, "refine_steps", default=200, help="refinement steps for inversion backends (GANs)"
    )
    reference: str | None = option(
        None,
        "reference classifier from `latentmix fit reference-classifier` (default: the embedded one for digits "
        "and shapes)",
        path=True,
    )
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
    inversion: str = option("ddim", INVERSION_HELP, check=one_of(INVERSIONS))
    inversion_iterations: int | None = option(None, ITERATIONS_HELP, check=NON_NEGATIVE_INT)
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
    seed: int = option(0, "seeds every draw of the evaluation", check=SEED)


@dataclass
class PairEvalConfig(Settings):
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
    seed: int = option(0, "seeds the grouping", check=SEED)
    device: str = option(
        "auto",
        "where the alignment model and the text encoder run: auto (CUDA, then MPS, then CPU), cpu, cuda[:N], mps",
        check=DEVICE,
    )

    def validate(self) -> None:
        super().validate()
        if not self.pairs:
            raise ValueError("pairs: give a paired set directory, a captioned image folder or 'shapes'")
