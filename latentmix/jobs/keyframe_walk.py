"""Decode walks through keyframes with any backend, with uniform or perceptually even frame timing.

:func:`decode_keyframe_walk` evaluates :func:`~latentmix.latent.keyframes.keyframe_path_at` for all frames of
all paths and decodes them in shared batched calls (chunks of ``backend.batch_size``, with a progress
bar), moving text conditionings along the same positions. With ``spacing="even"`` it first decodes the
path densely (``measure`` points per frame), measures it with ``features`` and re-times it
(:func:`~latentmix.latent.spacing.even_positions`), then adds the re-timed frames' own measurements and re-times
again (``refine`` passes): ``measure + refine + 1`` decodes per frame instead of one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from latentmix.backends import LatentBackend
from latentmix.latent.choices import SPACINGS
from latentmix.latent.keyframes import keyframe_path_at, keyframe_positions, segments
from latentmix.latent.spacing import even_positions, spacing_cv
from latentmix.utils.validation import choice, int_at_least, non_negative_int, positive_int

Features = Callable[[Tensor], Tensor]  # images (N, C, H, W) in [-1, 1] -> (N, F)

__all__ = ["KeyframeWalk", "decode_frames", "decode_keyframe_walk", "pixel_features", "reference_features"]


@dataclass
class KeyframeWalk:
    """A decoded keyframe walk.

    Attributes:
        images: (B, T, C, H, W) frames in [-1, 1], on CPU.
        latents: (B, T, *latent_shape) the frames' latents.
        positions: (B, T) float64 positions on the keyframe axis (``k`` is keyframe k).
        keyframe_frames: per path, the frame index of each keyframe (closed walks: without the return).
        spacing: ``"uniform"`` or ``"even"``.
        cv: (B,) coefficient of variation of per-step feature distances of the frames, if features were given.
        cv_uniform: (B,) the same for uniformly timed frames (measured on the dense path for ``"even"``).
    """

    images: Tensor
    latents: Tensor
    positions: Tensor
    keyframe_frames: list[list[int]]
    spacing: str
    cv: Tensor | None = None
    cv_uniform: Tensor | None = None


def reference_features(classifier) -> Features:
    """The embedding of a reference classifier (:func:`latentmix.classifiers.reference.load_reference_classifier`)."""

    def features(images: Tensor) -> Tensor:
        with torch.inference_mode():
            return torch.cat(
                [classifier.features(images[i : i + 512].float().cpu()) for i in range(0, len(images), 512)]
            )

    return features


def pixel_features(images: Tensor) -> Tensor:
    """Pixels as features (distance = root of the summed squared pixel change)."""
    return images.float().flatten(1)


def decode_frames(
    backend: LatentBackend,
    latents: Tensor,
    cond: Tensor | None = None,
    *,
    show_progress: bool = False,
    desc: str = "decode frames",
    **decode_kwargs,
) -> Tensor:
    """Decode (N, *latent_shape) in chunks of ``backend.batch_size`` with a progress bar; images on CPU, float32."""
    size = backend.batch_size
    chunks = range(0, latents.shape[0], size)
    out = []
    with torch.inference_mode():
        for start in tqdm(chunks, desc=desc, disable=not show_progress or len(chunks) < 2, leave=False):
            c = None if cond is None else cond[start : start + size]
            out.append(backend.decode(latents[start : start + size], cond=c, **decode_kwargs).float().cpu())
    return torch.cat(out)


def _decode_at(backend, keyframes, conds, s, method, text_method, closed, progress, decode_kwargs) -> tuple:
    latents = keyframe_path_at(keyframes, s, method, closed=closed)  # (B, T, *L)
    cond = None if conds is None else keyframe_path_at(conds, s, text_method, closed=closed).flatten(0, 1)
    images = decode_frames(backend, latents.flatten(0, 1), cond, show_progress=progress, **decode_kwargs)
    return images.reshape(*latents.shape[:2], *images.shape[1:]), latents


def _cv(features: Features, images: Tensor, closed: bool) -> Tensor:
    """Spacing CV of decoded frames (B, T, ...); a closed walk's step back to its first frame counts too."""
    feats = features(images.flatten(0, 1)).reshape(images.shape[0], images.shape[1], -1)
    return spacing_cv(torch.cat([feats, feats[:, :1]], dim=1) if closed else feats)


def _even(backend, keyframes, conds, features: Features, frames: int, measure: int, refine: int, args) -> tuple:
    """Even re-timing: measure densely, invert the cumulative feature distance, refine with the new frames."""
    batch, k = keyframes.shape[:2]
    closed = args[2]
    n_seg = segments(k, closed)
    steps = n_seg * frames  # steps between frames, the return to keyframe 0 included for closed walks
    dense = torch.arange(steps * measure + 1, dtype=torch.float64) / (frames * measure)
    images, _ = _decode_at(backend, keyframes, conds, dense, *args)
    feats = features(images.flatten(0, 1)).reshape(batch, len(dense), -1)
    cv_uniform = spacing_cv(feats[:, ::measure])
    measured_s, measured = dense.expand(batch, -1), feats
    knots = [float(i) for i in range(n_seg + 1)]
    for done in range(refine + 1):
        s = even_positions(measured_s, measured, steps, knots=knots)
        s = s[:, :-1] if closed else s  # the frame after the last is the first keyframe again
        images, latents = _decode_at(backend, keyframes, conds, s, *args)
        if done == refine:
            return s, images, latents, cv_uniform
        new = features(images.flatten(0, 1)).reshape(batch, s.shape[1], -1)
        measured_s = torch.cat([measured_s, s], dim=1)
        order = measured_s.argsort(dim=1, stable=True)
        measured_s = measured_s.gather(1, order)
        measured = torch.cat([measured, new], dim=1).gather(1, order[..., None].expand(-1, -1, new.shape[-1]))
    raise AssertionError("unreachable")


def decode_keyframe_walk(
    backend: LatentBackend,
    keyframes: Tensor,
    frames: int,
    method: str = "spline",
    *,
    closed: bool = False,
    conds: Tensor | None = None,
    text_method: str = "lerp",
    spacing: str = "uniform",
    features: Features | None = None,
    measure: int = 4,
    refine: int = 4,
    show_progress: bool = False,
    **decode_kwargs,
) -> KeyframeWalk:
    """Walk through ``keyframes`` (B, K, *latent_shape) and decode every frame in batched calls.

    Args:
        backend: any backend.
        keyframes: B paths of K >= 2 latents each (one path: ``z[None]``).
        frames: frames per segment; T = (K - 1) * frames + 1 (K * frames closed).
        method: ``"spline"``, ``"slerp"`` or ``"lerp"`` (:mod:`latentmix.latent.keyframes`).
        closed: loop back to the first keyframe.
        conds: (B, K, *cond_shape) conditionings of the keyframes (text-conditioned backends).
        text_method: how conditionings travel.
        spacing: ``"uniform"`` in position, or ``"even"``: equal feature distance per frame (needs ``features``).
        features: images -> (N, F) embeddings (:func:`reference_features`, :func:`pixel_features`); with
            ``"uniform"`` they only measure the result's spacing.
        measure: even spacing: dense measurements per frame (first pass).
        refine: even spacing: passes that add the measurements of the re-timed frames to the dense ones and
            re-time again (they land where the path changes fastest, so each pass sharpens the timing
            there); cost: ``measure + refine + 1`` decodes per frame in all.
        show_progress: a progress bar over decoding chunks.
        decode_kwargs: passed to ``backend.decode``: ``options=`` (:class:`~latentmix.backends.CallOptions`) or
            a backend's own keyword arguments.
    """
    choice(spacing, "spacing", SPACINGS)
    positive_int(frames, "frames")
    int_at_least(measure, "measure", 2)
    non_negative_int(refine, "refine")
    if spacing == "even" and features is None:
        raise ValueError("features: even spacing measures the path in a feature space; pass features=")
    batch, k = keyframes.shape[:2]
    if conds is not None and tuple(conds.shape[:2]) != (batch, k):
        raise ValueError(f"conds must have shape ({batch}, {k}, ...) (one per keyframe), got {tuple(conds.shape)}")
    uniform = keyframe_positions(k, frames, closed=closed)
    args = (method, text_method, closed, show_progress, decode_kwargs)
    cv_uniform = None
    if spacing == "uniform":
        s = uniform.expand(batch, -1)
        images, latents = _decode_at(backend, keyframes, conds, s, *args)
    else:
        assert features is not None
        s, images, latents, cv_uniform = _even(backend, keyframes, conds, features, frames, measure, refine, args)
    cv = None
    if features is not None:
        cv = _cv(features, images, closed)
        if cv_uniform is None:
            cv_uniform = cv
    keyframe_frames = [[int(torch.argmin((row - i).abs())) for i in range(k)] for row in s]
    return KeyframeWalk(images, latents, s, keyframe_frames, spacing, cv, cv_uniform)
