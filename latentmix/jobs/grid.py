"""Interpolation grids: encode real endpoints (or draw them from the prior), walk, decode, save.

One PNG row per pair, one column per step. Real endpoints are shown beside their
reconstructions (the decodes at t = 0 and t = 1), so what the walk owes to the backend's
reconstruction error is visible. All pairs × steps are decoded in one batched call
(:func:`decode_walk`); for text-conditioned backends the conditioning walks with the same t
(real endpoints are conditioned on their captions, prior endpoints on ``prompts``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from latentmix.backends import CallOptions, LatentBackend, RunOptions, load_backend
from latentmix.configs import DEFAULT_BACKEND, GridConfig, backend_for
from latentmix.data import ImageTextDataset, load_matching
from latentmix.latent.interpolate import interpolation_path
from latentmix.utils.viz import grid_image, save_gif, save_png

__all__ = ["DEFAULT_BACKEND", "GridConfig", "GridResult", "decode_walk", "interpolation_grid", "render_grid"]


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
        if self.real_a is None or self.real_b is None:
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

    Text-conditioned backends take the endpoints' conditionings (``backend.condition(texts)``); they
    move with the same t as the latents, by ``text_method``. ``decode_kwargs`` go to ``backend.decode``
    (``options=`` a :class:`~latentmix.backends.CallOptions`, or a backend's own keyword arguments).

    Returns:
        images (P, steps, C, H, W) in [-1, 1] on CPU, and the latent path (P, steps, *latent_shape).
    """
    path = interpolation_path(za, zb, steps, method)  # (P, T, *latent)
    if (cond_a is None) != (cond_b is None):
        raise ValueError("give both cond_a and cond_b, or neither")
    cond = None
    if cond_a is not None and cond_b is not None:
        cond = interpolation_path(cond_a, cond_b, steps, text_method).flatten(0, 1)
    decoded = backend.decode(path.flatten(0, 1), cond=cond, **decode_kwargs).float().cpu()
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


@dataclass
class _Endpoints:
    za: Tensor
    zb: Tensor
    cond_a: Tensor | None
    cond_b: Tensor | None
    labels: list[str]
    real_a: Tensor | None = None
    real_b: Tensor | None = None


def _prior_endpoints(backend: LatentBackend, config: GridConfig) -> _Endpoints:
    prompts = _check_prompts(config.prompts, backend) if config.prompts is not None else None
    count = config.prior
    if prompts is not None:
        if count is not None and count != len(prompts):
            raise ValueError(f"prior ({count}) must equal the number of prompt pairs ({len(prompts)}), or be left out")
        count = len(prompts)
    assert count is not None
    gen = torch.Generator().manual_seed(config.seed)
    za, zb = backend.sample(count, generator=gen), backend.sample(count, generator=gen)
    labels = [f"prior {i}" for i in range(count)]
    if backend.supports_text_condition:
        prompts = prompts or [("", "")] * count
        labels = [f"{a or '(none)'} -> {b or '(none)'}" for a, b in prompts]
    texts_a = [p[0] for p in prompts] if prompts else None
    texts_b = [p[1] for p in prompts] if prompts else None
    return _Endpoints(za, zb, backend.condition(texts_a), backend.condition(texts_b), labels)


def _pick_pairs(dataset: ImageTextDataset, config: GridConfig) -> tuple[list[int], list[int], list[str]]:
    rng = np.random.default_rng(config.seed)
    if config.pairs is not None:
        ia, ib = [int(p[0]) for p in config.pairs], [int(p[1]) for p in config.pairs]
        return ia, ib, [f"#{a} -> #{b}" for a, b in zip(ia, ib, strict=True)]
    chosen = config.classes if config.classes is not None else _default_class_pairs(dataset)
    if chosen:
        return _pick_by_class(dataset, chosen, rng)
    if len(dataset) < 2:  # unlabelled data: random pairs
        raise ValueError(f"data {config.data!r} needs at least 2 images for a grid, found {len(dataset)}")
    picks = rng.choice(len(dataset), size=(min(4, len(dataset) // 2), 2), replace=False)
    ia, ib = picks[:, 0].tolist(), picks[:, 1].tolist()
    return ia, ib, [f"#{a} -> #{b}" for a, b in zip(ia, ib, strict=True)]


def _real_endpoints(backend: LatentBackend, config: GridConfig, options: CallOptions) -> _Endpoints:
    dataset = load_matching(
        config.data, config.split, backend.image_size, backend.image_channels, resize=config.resize,
        who=f"backend {backend.backend_name!r}", fix="fit a backend on this data (latentmix fit vae --data ...)",
    )  # fmt: skip
    ia, ib, labels = _pick_pairs(dataset, config)
    real = backend.to_image_shape(dataset.images(ia + ib))  # a non-square diffusion backend: the centre crop
    cond = backend.condition([dataset.texts[i] for i in ia + ib])  # real endpoints: their own captions
    z = backend.encode(real, cond=cond, options=options)
    n = len(ia)
    cond_a, cond_b = (None, None) if cond is None else (cond[:n], cond[n:])
    return _Endpoints(z[:n], z[n:], cond_a, cond_b, labels, real[:n], real[n:])


def interpolation_grid(config: GridConfig | None = None, *, quiet: bool = True, **settings) -> GridResult:
    """Walk between pairs of endpoints in latent space and decode every step.

    Choose the endpoints with at most one of ``pairs``, ``classes`` and ``prior``; with none,
    one random image of each of up to five class pairs (0 -> 1, 2 -> 3, …) is used.

    Args:
        config: a :class:`~latentmix.configs.GridConfig`; ``settings`` override its fields, so
            ``interpolation_grid(backend="digits-vae", steps=10, classes=[(3, 8)], out="grid.png")`` works too.
            The fields: ``backend`` (a name, a directory or a loaded backend; default: the data's embedded one),
            ``method`` (default: the backend's), ``steps``, ``pairs`` (dataset indices),
            ``classes`` (by index or name; seeded picks), ``prior`` (pairs from the prior), ``data`` /
            ``split`` (default: the digits test split), ``seed``, ``out`` (PNG) / ``gif``,
            ``refine_steps`` (GANs), ``prompts`` (text-conditioned backends: pairs of texts walked between
            prior endpoints; real endpoints use their captions), ``text_method``, and the diffusion sampler's
            ``num_inference_steps`` / ``guidance_scale``, and ``inversion_strength`` (walk between partly
            inverted latents: the backend's ``strength``).
        quiet: hide progress bars of long decodes (latent diffusion).

    Returns:
        A :class:`GridResult`.
    """
    if config is not None and not isinstance(config, GridConfig):
        raise TypeError(
            f"interpolation_grid takes a GridConfig (or settings), got {type(config).__name__}; pass a backend as "
            "backend=..."
        )
    config = replace(config or GridConfig(), **settings)
    config.validate()
    backend = load_backend(backend_for(config.backend, config.data), run=RunOptions.from_settings(config))
    if config.classes is not None and not config.classes:
        raise ValueError("classes is empty")
    method = config.method or backend.default_method
    options = backend.call_options(CallOptions.from_settings(config))
    with torch.inference_mode(), backend.progress(not quiet):
        if config.prior is not None or config.prompts is not None:
            ends = _prior_endpoints(backend, config)
        else:
            ends = _real_endpoints(backend, config, options)
        images, path = decode_walk(
            backend, ends.za, ends.zb, config.steps, method, cond_a=ends.cond_a, cond_b=ends.cond_b,
            text_method=config.text_method, options=options,
        )  # fmt: skip
    result = GridResult(
        images=images,
        latents=path.float().cpu(),
        t=torch.linspace(0.0, 1.0, config.steps),
        method=method,
        real_a=None if ends.real_a is None else ends.real_a.float().cpu(),
        real_b=None if ends.real_b is None else ends.real_b.float().cpu(),
        row_labels=ends.labels,
    )
    if config.out is not None:
        result.png = save_png(render_grid(result), config.out)
    if config.gif is not None:
        result.gif = save_gif(result.images.transpose(0, 1), config.gif)
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
