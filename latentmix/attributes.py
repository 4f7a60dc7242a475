"""Attributes of images: what a reference classifier says each factor is, attribute directions, and edits.

For data with known factors (``shapes``: shape, colour, size, position, background), a reference classifier
with one head per factor (``latentmix fit reference-classifier --data shapes``) reads every factor of an image.
On top of it:

* :func:`predict_factors` — (N, F) predicted factor indices (the label first);
* :func:`attribute_direction` — latent arithmetic: ``mean(z | factor = target) − mean(z | factor = source)`` over
  labelled latents, e.g. red minus blue;
* :func:`apply_direction` — move latents (or images, encoded and decoded) along a direction;
* :func:`edit_success` — the share of edits whose target factor became the wanted value while every other
  factor stayed what it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from latentmix.backends import LatentBackend
from latentmix.data import ImageTextDataset, Subset, spread_indices


def factor_names(dataset: ImageTextDataset) -> list[str]:
    """``["label", *factors]``: the columns of :func:`predict_factors` and :func:`true_factors`."""
    return ["label", *(dataset.factor_values or {})]


def true_factors(dataset: ImageTextDataset, indices=None) -> Tensor:
    """(N, F) true factor indices (the label first) of ``indices`` (default: all)."""
    table = dataset.labels[:, None]
    if dataset.factor_values is not None:
        table = torch.cat([table, dataset.factor_labels()], dim=1)
    return table if indices is None else table[torch.as_tensor(indices, dtype=torch.long)]


def predict_factors(reference: Any, images: Tensor, factors: list[str] | None = None, batch: int = 512) -> Tensor:
    """(N, 1 + F) value indices a reference classifier reads: the class head, then its factor heads in the
    order ``factors`` names them (default: the reference's own order; pass the data's, e.g.
    ``list(dataset.factor_values)``, to compare with :func:`true_factors`)."""
    columns = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = images[start : start + batch].float().cpu()
            heads = [reference(x).argmax(1)]
            if getattr(reference, "factor_heads", None):
                logits = reference.factor_logits(x)
                missing = [name for name in factors or [] if name not in logits]
                if missing:
                    raise ValueError(f"the reference has no head for the factor {missing[0]!r}")
                heads += [logits[name].argmax(1) for name in (list(logits) if factors is None else factors)]
            columns.append(torch.stack(heads, dim=1))
    return torch.cat(columns)


def check_reference(reference: Any, dataset: ImageTextDataset, where: str = "reference") -> None:
    """The reference must name the data's classes (and factors) and take its images' shape."""
    names = list(getattr(reference, "class_names", []))
    if names != list(dataset.class_names):
        raise ValueError(
            f"{where} was fitted on other classes ({', '.join(names[:6])}...) than the data "
            f"({', '.join(dataset.class_names[:6])}...); fit one on this data (latentmix fit reference-classifier)"
        )
    wanted = dict(getattr(reference, "factors", {}) or {})
    if dataset.factor_values is not None and wanted and wanted != dataset.factor_values:
        raise ValueError(f"{where} knows the factors {sorted(wanted)}, the data has {sorted(dataset.factor_values)}")
    shape = tuple(getattr(reference, "image_shape", ()))
    if shape and shape != (dataset.channels, dataset.image_size):
        raise ValueError(
            f"{where} judges {shape[0]}-channel {shape[1]}px images, the data is "
            f"{dataset.channels}-channel {dataset.image_size}px"
        )


@dataclass
class Direction:
    """An attribute direction in a backend's latent space: ``factor`` from ``source`` to ``target``."""

    factor: str
    source: str
    target: str
    vector: Tensor  # (*latent_shape)


def factor_column(dataset: ImageTextDataset, factor: str) -> tuple[int, list[str]]:
    """The column of ``factor`` in :func:`true_factors` (0 for ``label`` / ``shape`` / ``class``) and its values."""
    names = factor_names(dataset)
    if factor not in names and not (factor in ("shape", "class") and "label" in names):
        raise ValueError(f"factor {factor!r} is not one of the data's factors: {', '.join(names[1:]) or 'none'}")
    column = 0 if factor in ("label", "shape", "class") else names.index(factor)
    values = list(dataset.class_names) if column == 0 else list((dataset.factor_values or {})[factor])
    return column, values


def attribute_direction(latents: Tensor, dataset: ImageTextDataset, factor: str, source: str, target: str) -> Direction:
    """``mean(latents | factor = target) − mean(latents | factor = source)`` over the rows of ``dataset``."""
    column, values = factor_column(dataset, factor)
    for value in (source, target):
        if value not in values:
            raise ValueError(f"{factor} {value!r} is not a value of the data: {', '.join(values)}")
    table = true_factors(dataset)[:, column]
    a, b = table == values.index(source), table == values.index(target)
    if not bool(a.any()) or not bool(b.any()):
        raise ValueError(f"the data has no examples of {factor} {source if not bool(a.any()) else target!r}")
    vector = latents[b].float().mean(0) - latents[a].float().mean(0)
    return Direction(factor, source, target, vector)


def apply_direction(latents: Tensor, direction: Direction, strength: float = 1.0) -> Tensor:
    return latents + strength * direction.vector.to(device=latents.device, dtype=latents.dtype)


def plain_condition(backend: LatentBackend, n: int) -> Tensor | None:
    """The unconditional (empty-text) conditioning of a text-conditioned backend, None for the others."""
    return backend.condition([""] * n) if backend.supports_text_condition else None


def encode_plain(backend: LatentBackend, images: Tensor, *, refine_steps: int | None = None, **sampling: Any) -> Tensor:
    """Latents of ``images``, unconditioned for text-conditioned backends (a caption would name the old value)."""
    with torch.inference_mode():
        kwargs = {**backend.encode_kwargs(refine_steps), **sampling}
        return backend.encode(images, cond=plain_condition(backend, len(images)), **kwargs)


def labelled_latents(
    backend: LatentBackend, dataset: ImageTextDataset, count: int, *, refine_steps: int | None = None, **sampling: Any
) -> tuple[Tensor, ImageTextDataset]:
    """:func:`encode_plain` latents of ``count`` rows spread evenly over ``dataset``, and those rows (a
    :class:`~latentmix.data.Subset` with their factors) — what :func:`attribute_direction` averages over."""
    labelled = Subset(dataset, spread_indices(len(dataset), count))
    images = labelled.images(range(len(labelled)))
    return encode_plain(backend, images, refine_steps=refine_steps, **sampling), labelled


def edit_images(
    backend: LatentBackend,
    images: Tensor,
    direction: Direction,
    strength: float = 1.0,
    *,
    refine_steps: int | None = None,
    **sampling: Any,
) -> tuple[Tensor, Tensor]:
    """Encode ``images``, move their latents ``strength`` times along ``direction``, decode.

    Returns (reconstructions, edits). Text-conditioned backends encode and decode unconditionally (a
    caption would name the old value); ``sampling`` goes to a diffusion backend's encode and decode.
    """
    cond = plain_condition(backend, len(images))
    z = encode_plain(backend, images, refine_steps=refine_steps, **sampling)
    with torch.inference_mode():
        both = torch.cat([z, apply_direction(z, direction, strength)])
        decoded = backend.decode(both, cond=None if cond is None else torch.cat([cond, cond]), **sampling)
    return decoded[: len(images)], decoded[len(images) :]


def edit_success(before: Tensor, after: Tensor, column: int, target: int | Tensor) -> dict[str, float]:
    """Shares of edits (rows of predicted factors, before and after) whose ``column`` became ``target`` (one
    value, or one per row): ``target_reached``, and ``success`` — reached while every other factor kept its
    value."""
    changed = after[:, column] == torch.as_tensor(target)
    others = torch.ones(before.shape[1], dtype=torch.bool)
    others[column] = False
    kept = (after[:, others] == before[:, others]).all(1)
    return {"target_reached": float(changed.float().mean()), "success": float((changed & kept).float().mean())}
