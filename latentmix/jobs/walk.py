"""``latentmix walk``: a walk through keyframes written as PNG frames, a video and a GIF.

Keyframes come from dataset indices and image files (encoded; text-conditioned backends are conditioned
on the images' captions, or on ``prompts``), from seeds (prior draws: seed travel), or from prompts alone
(one shared noise, the prompts travel). The path is a spline, slerp or lerp through them
(:mod:`latentmix.latent.keyframes`), timed uniformly or evenly in feature space (:mod:`latentmix.latent.spacing`), and
decoded in batched calls with a progress bar.

The output directory (new or empty) appears whole, by rename, or not at all::

    OUT/frames/00000.png ...   every frame at the model's resolution
    OUT/walk.mp4               (or .webm; --video none leaves it out), frames upscaled to >= 256 px
    OUT/walk.gif               the same frames (ping-pong for open walks)
    OUT/walk.json              settings, keyframes, frame positions, where each keyframe landed, spacing numbers
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from latentmix.backends import CallOptions, LatentBackend, RunOptions, is_backend, load_backend
from latentmix.configs import WalkConfig, backend_for
from latentmix.jobs.keyframe_walk import KeyframeWalk, decode_keyframe_walk, pixel_features, reference_features
from latentmix.utils.atomic import check_new_output
from latentmix.utils.locks import holds_outputs

__all__ = ["WalkConfig", "WalkResult", "walk"]


@dataclass
class WalkResult:
    out: Path
    frames: list[Path]
    gif: Path
    video: Path | None
    manifest: Path
    walk: KeyframeWalk
    labels: list[str]  # one description per keyframe


@dataclass
class _Keyframes:
    latents: Tensor  # (K, *latent_shape)
    conds: Tensor | None  # (K, *cond_shape)
    labels: list[str]
    from_images: bool


def _texts(config: WalkConfig, count: int) -> list[str] | None:
    if config.prompts is None:
        return None
    return list(config.prompts) * count if len(config.prompts) == 1 else list(config.prompts)


def _from_images(backend: LatentBackend, config: WalkConfig, options: CallOptions) -> _Keyframes:
    from latentmix.data import load_matching
    from latentmix.data.images import is_image_file, load_image_files

    specs = [str(spec) for spec in config.keyframes or ()]  # indices may be ints in Python, paths Path objects
    prompts = _texts(config, len(specs))
    dataset = None
    images, texts = [], []
    for i, spec in enumerate(specs):
        if spec.isdigit():
            if dataset is None:
                dataset = load_matching(
                    config.data, config.split, backend.image_size, backend.image_channels, resize=config.resize,
                    who=f"backend {backend.backend_name!r}", fix="fit a backend on this data or pass --resize",
                )  # fmt: skip
            index = int(spec)
            if index >= len(dataset):
                raise ValueError(
                    f"keyframes: index {index} is out of range ({config.data} {config.split}: {len(dataset)})"
                )
            images.append(dataset.images([index]))
            texts.append(prompts[i] if prompts else dataset.texts[index])
        else:
            path = Path(spec)
            if not path.is_file() or not is_image_file(path):
                raise ValueError(f"keyframes: {spec} is neither a dataset index nor an image file")
            who = f"backend {backend.backend_name!r}"
            images.append(
                load_image_files([path], backend.image_size, backend.image_channels, resize=config.resize, who=who)
            )
            texts.append(prompts[i] if prompts else "")
    x = torch.cat(images)
    cond = backend.condition(texts)
    with torch.inference_mode():
        z = backend.encode(x, cond=cond, options=options)
    return _Keyframes(z, cond, [f"#{s}" if s.isdigit() else Path(s).name for s in specs], True)


def _from_prior(backend: LatentBackend, config: WalkConfig) -> _Keyframes:
    if config.seeds is not None:
        seeds = list(config.seeds)
        z = torch.cat([backend.sample(1, generator=torch.Generator().manual_seed(s)) for s in seeds])
        labels = [f"seed {s}" for s in seeds]
    else:  # prompt travel: one noise for every keyframe
        count = len(config.prompts or ())
        z = backend.sample(1, generator=torch.Generator().manual_seed(config.seed)).expand(count, *backend.latent_shape)
        labels = [f"seed {config.seed}"] * count
    texts = _texts(config, z.shape[0])
    if texts is not None:
        labels = [f"{label}: {text}" for label, text in zip(labels, texts, strict=True)]
    cond = backend.condition(texts or [""] * z.shape[0]) if backend.supports_text_condition else None
    return _Keyframes(z.contiguous(), cond, labels, False)


def _features(backend: LatentBackend, config: WalkConfig):
    if config.features == "pixels":
        return pixel_features
    from latentmix.classifiers.reference import load_reference_classifier, reference_for

    name = reference_for(config.reference, config.data, alternative=", or pass --features pixels")
    clf = load_reference_classifier(name)
    shape = tuple(getattr(clf, "image_shape", ()))
    if shape and shape != (backend.image_channels, backend.image_size):
        raise ValueError(
            f"reference {name} judges {shape[0]}-channel {shape[1]}px images, backend {backend.backend_name!r} makes "
            f"{backend.image_channels}-channel {backend.image_size}px ones; pass the backend's --data, a matching "
            "--reference, or --features pixels"
        )
    return reference_features(clf)


def _recorded(config: WalkConfig) -> dict:
    """The settings walk.json records: a loaded backend by its label, and not the folder it is written to."""
    named = replace(config, backend=config.backend.label) if is_backend(config.backend) else config
    return {k: v for k, v in asdict(named).items() if k != "out"}


def _check(config: WalkConfig, **_: object) -> None:
    """Everything that can be refused before the walk takes its output's writer lock."""
    from latentmix.utils.video import check_video_format

    check_new_output(config)
    if config.video != "none":
        check_video_format(config.video)  # before any work: a missing codec answers at once


@holds_outputs(lambda config, **_: [config.out], check=_check)  # one writer per output, from start to end
def walk(config: WalkConfig, *, quiet: bool = True) -> WalkResult:
    """Run ``config``'s walk and write its frames, video, GIF and manifest to ``config.out`` (see the module
    docstring); ``config.backend`` may be a name, a directory or a loaded backend."""
    from latentmix.utils.atomic import atomic_directory
    from latentmix.utils.video import save_video
    from latentmix.utils.viz import save_gif, to_pil, to_uint8

    out = Path(str(config.out))
    backend = load_backend(backend_for(config.backend, config.data), run=RunOptions.from_settings(config))
    if config.prompts is not None and not backend.supports_text_condition:
        raise ValueError(f"prompts: backend {backend.backend_name!r} is not text-conditioned")
    options = backend.call_options(CallOptions.from_settings(config))  # refused before any work
    features = _features(backend, config) if config.spacing == "even" else None
    with backend.progress(not quiet):
        keys = _from_images(backend, config, options) if config.keyframes is not None else _from_prior(backend, config)
        result = decode_keyframe_walk(
            backend, keys.latents[None], config.frames, config.method, closed=config.closed,
            conds=None if keys.conds is None else keys.conds[None], text_method=config.text_method,
            spacing=config.spacing, features=features, measure=config.measure, refine=config.refine,
            show_progress=not quiet, options=options,
        )  # fmt: skip
    frames = to_uint8(result.images[0])
    names = [f"{i:05d}.png" for i in range(len(frames))]
    video_name = None if config.video == "none" else f"walk.{config.video}"
    manifest = {
        "keyframes": keys.labels,
        "keyframe_frames": result.keyframe_frames[0],
        "frames": len(frames),
        "fps": config.fps,
        "positions": [round(float(s), 6) for s in result.positions[0]],
        "spacing": config.spacing,
        "spacing_cv": None if result.cv is None else float(result.cv[0]),
        "spacing_cv_uniform": None if result.cv_uniform is None else float(result.cv_uniform[0]),
        "video": video_name,
        "config": _recorded(config),
    }

    def write(tmp: Path) -> None:
        (tmp / "frames").mkdir()
        for name, array in zip(names, frames, strict=True):
            to_pil(array).save(tmp / "frames" / name)
        save_gif(
            result.images[0][:, None],
            tmp / "walk.gif",
            duration_ms=round(1000 / config.fps),
            pingpong=not config.closed,
        )
        if video_name is not None:
            save_video(frames, tmp / video_name, fps=config.fps)
        (tmp / "walk.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")

    atomic_directory(out, write, marker="")
    return WalkResult(
        out, [out / "frames" / n for n in names], out / "walk.gif", None if video_name is None else out / video_name,
        out / "walk.json", result, keys.labels,
    )  # fmt: skip
