"""Settings of the jobs that walk a latent space: ``grid``, ``walk``, ``explore`` and ``edit``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from latentmix.configs.choices import (
    INVERSIONS,
    KEYFRAME_METHODS,
    METHODS,
    SAMPLERS,
    SPACING_FEATURES,
    SPACINGS,
    VIDEO_FORMATS,
    texts,
)
from latentmix.configs.common import (
    DIFFUSION,
    INVERSION_HELP,
    ITERATIONS_HELP,
    OUT_DIR_HELP,
    PAIRS,
    SEEDS,
    STRENGTH,
    STRENGTH_HELP,
    BackendSettings,
    DataSettings,
    SplitSettings,
    override,
)
from latentmix.configs.options import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    SEED,
    Check,
    index_pair,
    int_in,
    name_pair,
    number_in,
    one_of,
    option,
)
from latentmix.utils import validation

#: train latents of each value a matched attribute direction averages (the nearest to the edited image)
EDIT_NEIGHBOURS = 10
#: the bounds of a walk: frames per segment, frames in all, dense measurements per frame, re-timing passes
MAX_SEGMENT_FRAMES, MAX_WALK_FRAMES, MAX_MEASURE, MAX_REFINE = 10_000, 100_000, 64, 16


def _prompt_pairs(texts) -> tuple[tuple[str, str], ...]:
    """``--prompts A B C D`` → ((A, B), (C, D)): one walk per pair."""
    texts = list(texts)
    if len(texts) % 2:
        raise ValueError(f"--prompts takes pairs (A B [C D ...]), one walk per pair; got {len(texts)} texts")
    return tuple(zip(texts[::2], texts[1::2], strict=True))


@dataclass
class GridConfig(SplitSettings, DataSettings, BackendSettings):
    """Settings of ``latentmix grid`` / :func:`latentmix.interpolation_grid`."""

    data: str = override(
        DataSettings, "data", help="'digits', 'shapes' or an image folder, where real endpoints come from"
    )
    method: str | None = option(None, "latent interpolator (default: the backend's own)", check=one_of(METHODS))
    steps: int = option(8, "points per walk, endpoints included, at most 1,000", check=int_in(2, 1000))
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
    prior: int | None = option(
        None, "N pairs drawn from the prior, at most 1,000", metavar="N", group="endpoints", check=int_in(1, 1000)
    )
    seed: int = option(0, "seeds the choice of images and the prior draws", check=SEED)
    out: str | None = option(None, "PNG path to write", identity=False)
    gif: str | None = option(None, "also write an animated GIF here", identity=False)
    prompts: tuple[tuple[str, str], ...] | None = option(
        None,
        "text-conditioned backends: A B [C D ...], one walk A -> B per pair between prior endpoints "
        "(real endpoints use their captions)",
        parse=str,
        convert=_prompt_pairs,
        metavar="TEXT",
    )
    text_method: str = option("lerp", "how the text conditioning walks", check=one_of(METHODS))
    inversion_strength: float | None = option(None, STRENGTH_HELP + "real endpoints only)", check=STRENGTH)

    def validate(self) -> None:
        super().validate()
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


def _keyframe_specs(value, name: str) -> tuple[str, ...]:
    ok = all(isinstance(v, (str, os.PathLike)) or (isinstance(v, int) and not isinstance(v, bool)) for v in value or ())
    if isinstance(value, str) or not value or not ok:
        raise ValueError(f"{name} must be a list of dataset indices or image files, got {value!r}")
    return tuple(str(v) for v in value)


@dataclass
class WalkConfig(SplitSettings, DataSettings, BackendSettings):
    """Settings of ``latentmix walk`` / :func:`latentmix.jobs.walk.walk`: a walk through keyframes, written as
    frames, a video and a GIF."""

    data: str = override(
        DataSettings, "data", help="'digits', 'shapes' or an image folder: where dataset indices point"
    )
    split: str = override(SplitSettings, "split", help="which split dataset indices point into")
    resize: bool = override(
        DataSettings, "resize", help="convert images whose size or channels differ from the model's (else an error)"
    )
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
        check=Check(texts),
        metavar="TEXT",
    )
    frames: int = option(
        24,
        f"frames per segment (keyframe to keyframe), at most {MAX_SEGMENT_FRAMES:,}",
        check=int_in(1, MAX_SEGMENT_FRAMES),
    )
    method: str = option(
        "spline", "path through the keyframes (spline: C1 spherical spline)", check=one_of(KEYFRAME_METHODS)
    )
    text_method: str = option("lerp", "how the text conditioning travels", check=one_of(KEYFRAME_METHODS))
    closed: bool = option(False, "loop back from the last keyframe to the first")
    spacing: str = option(
        "uniform", "frame timing: uniform in t, or even (equal feature change per frame)", check=one_of(SPACINGS)
    )
    measure: int = option(
        4, f"even spacing: dense measurements per frame (first pass), 2 to {MAX_MEASURE}", check=int_in(2, MAX_MEASURE)
    )
    refine: int = option(
        4,
        f"even spacing: passes that re-time again with the new frames' measurements added, at most {MAX_REFINE}",
        check=int_in(0, MAX_REFINE),
    )
    features: str = option(
        "reference", "even spacing: distance in the reference classifier's features, or in pixels",
        check=one_of(SPACING_FEATURES),
    )  # fmt: skip
    reference: str | None = option(
        None, "reference classifier for even spacing (default: the embedded one of digits / shapes)", path=True
    )
    seed: int = option(0, "prompt travel: the seed of the one noise all keyframes share", check=SEED)
    fps: float = option(
        24.0,
        "frames per second of the video and the GIF, 0.01 to 240 (a GIF frame lasts at most 655 s)",
        check=number_in(0.01, 240.0),
    )
    video: str = option("mp4", "video format (none: frames and GIF only)", check=one_of(VIDEO_FORMATS))
    sampler: str = option(
        "ddim", DIFFUSION + "ddim, or dpm-solver / euler (prior keyframes only)", check=one_of(SAMPLERS)
    )
    inversion: str = option("ddim", INVERSION_HELP, check=one_of(INVERSIONS))
    inversion_iterations: int | None = option(None, ITERATIONS_HELP, check=NON_NEGATIVE_INT)
    inversion_strength: float | None = option(None, STRENGTH_HELP + "keyframes from images only)", check=STRENGTH)
    out: str | None = option(None, OUT_DIR_HELP + ": frames/, the video, the GIF and walk.json", identity=False)

    def validate(self) -> None:
        super().validate()
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
        total = (count if self.closed else count - 1) * self.frames + 1
        if total > MAX_WALK_FRAMES:
            raise ValueError(
                f"frames: {count} keyframes at {self.frames} frames per segment make {total:,} frames; a walk makes at "
                f"most {MAX_WALK_FRAMES:,}"
            )
        if self.prompts is not None and len(self.prompts) not in (1, count):
            raise ValueError(f"prompts: give one prompt per keyframe ({count}) or one for all, got {len(self.prompts)}")
        if self.sampler != "ddim" and self.keyframes is not None:
            raise ValueError(
                f"sampler: keyframes from images are DDIM-inverted and decode with ddim; {self.sampler} is for prior "
                "keyframes (--seeds or --prompts)"
            )
        if self.out is None:
            raise ValueError("out: give the output directory (new or empty)")


def _host(value, name: str) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"{name} must be a host name or address, got {value!r}")
    return value


def _port(value, name: str) -> int:
    port = validation.int_at_least(value, name, 1)
    if port > 65535:
        raise ValueError(f"{name} must be at most 65535, got {port}")
    return port


def _auth(value, name: str) -> str:
    user, sep, password = value.partition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not user or not password:
        raise ValueError(f"{name} must be USER:PASSWORD with both parts, got {value!r}")
    return value


@dataclass
class ExploreConfig(SplitSettings, BackendSettings):
    """Settings of ``latentmix explore``: a local web page for walking a backend's latent space."""

    data: str | None = option(
        None,
        "'digits', 'shapes' or an image folder whose items are endpoints (default: the embedded backend's own data; "
        "none for other backends: uploads and prompts only)",
        path=True,
    )
    resize: bool = override(DataSettings, "resize")
    split: str = override(SplitSettings, "split", help="which split the data set's endpoints come from")
    host: str = option("127.0.0.1", "address to bind (127.0.0.1: this machine only)", check=Check(_host))
    port: int | None = option(None, "port (default: the first free one from 7860)", check=Check(_port))
    out: str = option(
        "explore-out", "the folder exports (frames, strips, walks, synthetic sets) are written to", path=True
    )
    max_upload_pixels: int = option(16_000_000, "uploads larger than this many pixels are refused", check=POSITIVE_INT)
    max_export: int = option(
        10_000,
        "the most images (frames, strip and sheet cells, walk frames, synthetic samples, uploads) the page writes "
        "under --out while it runs, all visitors together",
        check=POSITIVE_INT,
    )
    auth: str | None = option(
        None,
        "USER:PASSWORD that visitors must log in with (Gradio's login page; default: no login, so keep --host "
        "127.0.0.1 or put the page behind your own login)",
        check=Check(_auth),
        identity=False,
        metavar="USER:PASSWORD",
    )


def _names(value, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{name} must be a non-empty list of paths, got {value!r}")
    return tuple(value)


@dataclass
class EditConfig(DataSettings, BackendSettings):
    """Settings of ``latentmix edit``: move images along an attribute direction (latent arithmetic)."""

    backend: Any = override(
        BackendSettings, "backend", default="shapes-vae", help="embedded name, directory or hub id of the backend"
    )
    data: str = override(
        DataSettings,
        "data",
        default="shapes",
        help="labelled data with factors whose train latents give the direction (shapes, an export)",
    )
    resize: bool = override(
        DataSettings, "resize", help="convert images whose size or channels differ from the model's (else an error)"
    )
    images: tuple[str, ...] | None = option(
        None, "image files or folders to edit (required)", check=Check(_names), identity=False
    )
    factor: str | None = option(None, "the factor to change, e.g. colour ('label' or 'shape' for the class)")
    source: str | None = option(None, "its value the direction starts from, e.g. red")
    target: str | None = option(None, "its value the direction leads to, e.g. blue")
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
    inversion_strength: float | None = option(
        None,
        DIFFUSION + "edit partly inverted latents, inverting this fraction of the DDIM steps, in (0, 1]; lower keeps "
        "more of the image (default: 1, all the way to noise)",
        check=STRENGTH,
    )
    out: str | None = option(None, OUT_DIR_HELP + ": edited PNGs and edits.png", identity=False)

    def validate(self) -> None:
        super().validate()
        for name in ("images", "factor", "source", "target", "out"):
            if getattr(self, name) is None:
                raise ValueError(f"{name} is required")
        if self.source == self.target:
            raise ValueError(f"target: it is the source value ({self.source}); an edit must move to another value")
