"""Interpolation grids: encode real endpoints (or draw them from the prior), walk, decode, save.

One PNG row per pair, one column per step. Real endpoints are shown beside their
reconstructions (the decodes at t = 0 and t = 1), so what the walk owes to the backend's
reconstruction error is visible. All pairs × steps are decoded in one batched call
(:func:`decode_walk`); for text-conditioned backends the conditioning walks with the same t
(real endpoints are conditioned on their captions, prior endpoints on ``prompts``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from latentmix.backends import LatentBackend, load_backend
from latentmix.data import ImageTextDataset, load_dataset
from latentmix.interpolate import check_method, interpolation_path
from latentmix.viz import grid_image, save_gif, save_png

DEFAULT_BACKEND = "digits-vae"


@dataclass
class GridResult:
    """What :func:`interpolation_grid` made.

    Attributes:
        images: (P, T, C, H, W) decoded walk in [-1, 1]; ``images[:, 0]`` and ``images[:, -1]``
            are the reconstructions of the endpoints.
        latents: (P, T, *latent_shape) the walk in latent space.
        t: (T,) interpolation positions.
        method: ``"lerp"`` or ``"slerp"``.
        real_a, real_b: (P, C, H, W) real endpoint images, or None for prior endpoints.
        row_labels: one description per pair (``"3 -> 8"``, ``"#12 -> #40"``, ``"prior 0"``).
        png, gif: paths written, if any.
    """

    images: Tensor
    latents: Tensor
    t: Tensor
    method: str
    real_a: Tensor | None
    real_b: Tensor | None
    row_labels: list[str]
    png: Path | None = None
    gif: Path | None = None

    def cells(self) -> Tensor:
        """(P, K, C, H, W) cells of the PNG: [real a,] decoded steps, [real b]."""
        if self.real_a is None:
            return self.images
        return torch.cat([self.real_a[:, None], self.images, self.real_b[:, None]], dim=1)


def decode_walk(
    backend: LatentBackend,
    za: Tensor,
    zb: Tensor,
    steps: int,
    method: str = "slerp",
    *,
    cond_a: Tensor | None = None,
    cond_b: Tensor | None = None,
    text_method: str = "lerp",
    **decode_kwargs,
) -> tuple[Tensor, Tensor]:
    """Walk from ``za`` to ``zb`` (P paths of ``steps`` points) and decode every frame of every path
    in the same batched calls (chunked by ``backend.batch_size``).

    Text-conditioned backends take the endpoints' conditionings (``backend.encode_text``); they
    move with the same t as the latents, by ``text_method``.

    Returns:
        images (P, steps, C, H, W) in [-1, 1] on CPU, and the latent path (P, steps, *latent_shape).
    """
    path = interpolation_path(za, zb, steps, method)  # (P, T, *latent)
    if (cond_a is None) != (cond_b is None):
        raise ValueError("give both cond_a and cond_b, or neither")
    if cond_a is not None:
        cond = interpolation_path(cond_a, cond_b, steps, text_method).flatten(0, 1)
        decode_kwargs["cond"] = cond
    decoded = backend.decode(path.flatten(0, 1), **decode_kwargs).float().cpu()
    return decoded.reshape(path.shape[0], steps, *decoded.shape[1:]), path


def _default_class_pairs(dataset: ImageTextDataset) -> list[tuple[int, int]]:
    k = len(dataset.class_names)
    present = [c for c in range(k) if len(dataset.indices_of_class(c))]
    if len(present) < 2:
        return []
    return [(present[i], present[(i + 1) % len(present)]) for i in range(0, len(present), 2)][:5]


def _pick_by_class(
    dataset: ImageTextDataset, classes, rng: np.random.Generator
) -> tuple[list[int], list[int], list[str]]:
    ia, ib, labels = [], [], []
    for ca, cb in classes:
        pool_a, pool_b = dataset.indices_of_class(ca), dataset.indices_of_class(cb)
        for c, pool in ((ca, pool_a), (cb, pool_b)):
            if len(pool) == 0:
                raise ValueError(f"classes: class {c!r} has no images in this split")
        a = int(rng.choice(pool_a))
        rest = pool_b[pool_b != a] if len(pool_b) > 1 else pool_b
        ia.append(a)
        ib.append(int(rng.choice(rest)))
        labels.append(
            f"{dataset.class_names[int(dataset.labels[ia[-1]])]} -> {dataset.class_names[int(dataset.labels[ib[-1]])]}"
        )
    return ia, ib, labels


def interpolation_grid(
    backend: str | LatentBackend = DEFAULT_BACKEND,
    *,
    method: str | None = None,
    steps: int = 8,
    pairs: list[tuple[int, int]] | None = None,
    classes: list[tuple[int | str, int | str]] | None = None,
    prior: int | None = None,
    data: str | os.PathLike = "digits",
    split: str = "test",
    seed: int = 0,
    out: str | os.PathLike | None = None,
    gif: str | os.PathLike | None = None,
    refine_steps: int | None = None,
    prompts: list[tuple[str, str]] | None = None,
    text_method: str = "lerp",
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
) -> GridResult:
    """Walk between pairs of endpoints in latent space and decode every step.

    Choose the endpoints with at most one of ``pairs``, ``classes`` and ``prior``; with none,
    one random image of each of up to five class pairs (0 -> 1, 2 -> 3, …) is used.

    Args:
        backend: a backend, or a name / path for :func:`~latentmix.load_backend`.
        method: ``"slerp"`` or ``"lerp"``; default: the backend's ``default_method``.
        steps: points per walk, endpoints included (>= 2).
        pairs: ``[(i, j), ...]`` dataset indices of the endpoints.
        classes: ``[(class_a, class_b), ...]`` by index or name; one random image of each
            (seeded; two different images when the classes are the same).
        prior: number of pairs drawn from the backend's prior (Gaussian backends).
        data, split: where real endpoints come from (default: digits test split, unseen by the
            embedded models).
        seed: seeds the choice of images and the prior draws.
        out: PNG path to write (optional); gif: animated GIF path (optional).
        refine_steps: for inversion backends (GANs), optimisation steps after the encoder's guess
            (default: ``backend.DEFAULT_REFINE_STEPS``).
        prompts: text-conditioned backends: ``[(text_a, text_b), ...]``, one pair per row, walked
            between prior noise endpoints (``prior`` draws are the default; with a count, it
            must match). Real endpoints are conditioned on their captions instead.
        text_method: how the conditioning walks (``"lerp"`` or ``"slerp"``), with the same t.
        num_inference_steps, guidance_scale: diffusion backends: DDIM steps and classifier-free
            guidance (default: the backend's).

    Returns:
        A :class:`GridResult`.
    """
    if sum(x is not None for x in (pairs, classes, prior)) > 1:
        raise ValueError("choose endpoints with only one of pairs, classes and prior")
    if prompts is not None and (pairs is not None or classes is not None):
        raise ValueError("prompts condition prior endpoints; real endpoints (pairs, classes) use their captions")
    if out is not None and Path(out).suffix.lower() != ".png":
        raise ValueError(f"out must be a .png path, got {out}")
    if gif is not None and Path(gif).suffix.lower() != ".gif":
        raise ValueError(f"gif must be a .gif path, got {gif}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2 (both endpoints are included), got {steps!r}")
    if isinstance(backend, (str, os.PathLike)):
        backend = load_backend(backend)
    elif not isinstance(backend, LatentBackend):
        raise TypeError(f"backend must be a LatentBackend or a name/path, got {type(backend).__name__}")
    method = check_method(method or backend.default_method)
    check_method(text_method)
    sampling = backend.sampling_kwargs(num_inference_steps, guidance_scale)
    encode_kwargs = {**backend.encode_kwargs(refine_steps), **sampling}
    rng = np.random.default_rng(seed)
    if prompts is not None:
        prompts = _check_prompts(prompts, backend)
        if prior is not None and prior != len(prompts):
            raise ValueError(f"prior ({prior}) must equal the number of prompt pairs ({len(prompts)}), or be left out")
        prior = len(prompts)
    conds: tuple[Tensor, Tensor] | None = None

    real_a = real_b = None
    with torch.inference_mode():
        if prior is not None:
            if isinstance(prior, bool) or not isinstance(prior, int) or prior < 1:
                raise ValueError(f"prior must be a positive number of pairs, got {prior!r}")
            gen = torch.Generator().manual_seed(seed)
            za, zb = backend.sample(prior, generator=gen), backend.sample(prior, generator=gen)
            labels = [f"prior {i}" for i in range(prior)]
            if backend.supports_text_condition:
                prompts = prompts or [("", "")] * prior
                conds = (backend.encode_text([p[0] for p in prompts]), backend.encode_text([p[1] for p in prompts]))
                labels = [f"{a or '(none)'} -> {b or '(none)'}" for a, b in prompts]
        else:
            dataset = load_dataset(data, split=split, image_size=backend.image_size, channels=backend.image_channels)
            if pairs is not None:
                if not pairs:
                    raise ValueError("pairs is empty")
                ia, ib = [int(p[0]) for p in pairs], [int(p[1]) for p in pairs]
                labels = [f"#{a} -> #{b}" for a, b in zip(ia, ib)]
            else:
                chosen = classes if classes is not None else _default_class_pairs(dataset)
                if classes is not None and not classes:
                    raise ValueError("classes is empty")
                if chosen:
                    ia, ib, labels = _pick_by_class(dataset, chosen, rng)
                else:  # unlabelled data: random pairs
                    if len(dataset) < 2:
                        raise ValueError(f"data {data!r} needs at least 2 images for a grid, found {len(dataset)}")
                    picks = rng.choice(len(dataset), size=(min(4, len(dataset) // 2), 2), replace=False)
                    ia, ib = picks[:, 0].tolist(), picks[:, 1].tolist()
                    labels = [f"#{a} -> #{b}" for a, b in zip(ia, ib)]
            real = dataset.images(ia + ib)
            real_a, real_b = real[: len(ia)], real[len(ia) :]
            if backend.supports_text_condition:
                cond = backend.encode_text([dataset.texts[i] for i in ia + ib])
                conds = (cond[: len(ia)], cond[len(ia) :])
                encode_kwargs["cond"] = cond
            z = backend.encode(real, **encode_kwargs)
            za, zb = z[: len(ia)], z[len(ia) :]
        cond_a, cond_b = conds if conds is not None else (None, None)
        images, path = decode_walk(
            backend, za, zb, steps, method, cond_a=cond_a, cond_b=cond_b, text_method=text_method, **sampling
        )
    result = GridResult(
        images=images,
        latents=path.float().cpu(),
        t=torch.linspace(0.0, 1.0, steps),
        method=method,
        real_a=None if real_a is None else real_a.float().cpu(),
        real_b=None if real_b is None else real_b.float().cpu(),
        row_labels=labels,
    )
    if out is not None:
        result.png = save_png(render_grid(result), out)
    if gif is not None:
        result.gif = save_gif(result.images.transpose(0, 1), gif)
    return result


def _check_prompts(prompts, backend: LatentBackend) -> list[tuple[str, str]]:
    if not backend.supports_text_condition:
        raise ValueError(f"prompts: backend {backend.backend_name!r} is not text-conditioned")
    if isinstance(prompts, (str, bytes)) or not prompts:
        raise ValueError("prompts must be a non-empty list of (text_a, text_b) pairs")
    checked = []
    for i, p in enumerate(prompts):
        if not isinstance(p, (list, tuple)) or len(p) != 2 or not all(isinstance(t, str) for t in p):
            raise ValueError(f"prompts[{i}] must be a pair of texts (text_a, text_b), got {p!r}")
        checked.append((p[0], p[1]))
    return checked


def render_grid(result: GridResult):
    """The PNG of a :class:`GridResult` as a PIL image (columns labelled, rows labelled)."""
    steps = [f"{t:.2g}" for t in result.t.tolist()]
    if result.real_a is None:
        return grid_image(result.cells(), col_labels=steps, row_labels=result.row_labels)
    cols = ["real", *steps, "real"]
    last = result.images.shape[1]
    return grid_image(result.cells(), col_labels=cols, row_labels=result.row_labels, gaps_after=(0, last))
