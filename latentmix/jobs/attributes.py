"""Attributes of images: what a reference classifier says each factor is, attribute directions, and edits.

For data with known factors (``shapes``: shape, colour, size, position, background), a reference classifier
with one head per factor (``latentmix fit reference-classifier --data shapes``) reads every factor of an image.
On top of it:

* :func:`predict_factors` — (N, F) predicted factor indices (the label first);
* :func:`attribute_direction` — latent arithmetic: ``mean(z | factor = target) − mean(z | factor = source)`` over
  labelled latents, e.g. blue minus red. On a spatial latent (a VAE's 8 × 8 × 8 map) that global difference
  averages the change over every position, shape and size, so added to one image it moves it only a fraction
  of the way.
  A **matched** direction is taken among the latents that share the edited image's other factors (``given``:
  the same shape, size and position when recolouring), between the ``neighbours`` latents of each value
  nearest to the image (``near``) — the change at this image's place, for an image like this one;
* :func:`apply_direction` — move latents (or images, encoded and decoded) along a direction;
* :func:`edit_success` — the share of edits whose target factor became the wanted value while every other
  factor stayed what it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from latentmix.backends import CallOptions, LatentBackend
from latentmix.configs import EDIT_NEIGHBOURS
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
    """An attribute direction in a backend's latent space: ``factor`` from ``source`` to ``target``; ``matched``
    names the other factors (and values) its latents shared, ``neighbours`` how many of each value it averaged
    (0: all)."""

    factor: str
    source: str
    target: str
    vector: Tensor  # (*latent_shape)
    matched: dict[str, str] = field(default_factory=dict)
    neighbours: int = 0


def factor_column(dataset: ImageTextDataset, factor: str) -> tuple[int, list[str]]:
    """The column of ``factor`` in :func:`true_factors` (0 for ``label`` / ``shape`` / ``class``) and its values."""
    names = factor_names(dataset)
    if factor not in names and not (factor in ("shape", "class") and "label" in names):
        raise ValueError(f"factor {factor!r} is not one of the data's factors: {', '.join(names[1:]) or 'none'}")
    column = 0 if factor in ("label", "shape", "class") else names.index(factor)
    values = list(dataset.class_names) if column == 0 else list((dataset.factor_values or {})[factor])
    return column, values


def _value_index(dataset: ImageTextDataset, factor: str, value: str) -> tuple[int, int]:
    column, values = factor_column(dataset, factor)
    if value not in values:
        raise ValueError(f"{factor} {value!r} is not a value of the data: {', '.join(values)}")
    return column, values.index(value)


def attribute_direction(
    latents: Tensor,
    dataset: ImageTextDataset,
    factor: str,
    source: str,
    target: str,
    *,
    given: dict[str, str] | None = None,
    near: Tensor | None = None,
    neighbours: int = 0,
) -> Direction:
    """``mean(latents | factor = target) − mean(latents | factor = source)`` over the rows of ``dataset``.

    Matched (see the module doc): ``given`` restricts both means to the rows that share those factor values
    (most important first; while either value has fewer than ``neighbours`` such rows the last one is let
    go), and with ``near`` (the latent being edited) and ``neighbours`` > 0 each mean is over the
    ``neighbours`` rows nearest to it — to ``near`` among the source rows, to ``near`` moved by the matched
    mean difference among the target rows.
    """
    return _direction(latents, true_factors(dataset), dataset, factor, source, target, given, near, neighbours)


def _direction(
    latents: Tensor,
    table: Tensor,
    dataset: ImageTextDataset,
    factor: str,
    source: str,
    target: str,
    given: dict[str, str] | None,
    near: Tensor | None,
    neighbours: int,
) -> Direction:
    """:func:`attribute_direction` over ``table``, the :func:`true_factors` of ``dataset`` (computed once by the
    caller of many)."""
    column, src = _value_index(dataset, factor, source)
    tgt = _value_index(dataset, factor, target)[1]
    keys = [(*_value_index(dataset, name, value), name, value) for name, value in (given or {}).items()]
    if any(key[0] == column for key in keys):
        raise ValueError(f"given: {factor!r} is the factor being changed; match the others")
    while True:
        rows = torch.ones(len(table), dtype=torch.bool)
        for key_column, key_value, _, _ in keys:
            rows &= table[:, key_column] == key_value
        a, b = rows & (table[:, column] == src), rows & (table[:, column] == tgt)
        if not keys or min(int(a.sum()), int(b.sum())) >= max(neighbours, 1):
            break
        keys.pop()
    if not bool(a.any()) or not bool(b.any()):
        raise ValueError(f"the data has no examples of {factor} {source if not bool(a.any()) else target!r}")
    za, zb = latents[a].float(), latents[b].float()
    vector = zb.mean(0) - za.mean(0)
    if near is not None and neighbours > 0:
        near = near.float().to(za.device)
        vector = _nearest_mean(zb, near + vector, neighbours) - _nearest_mean(za, near, neighbours)
    else:
        neighbours = 0
    return Direction(factor, source, target, vector, {k[2]: k[3] for k in keys}, neighbours)


def matched_directions(
    latents: Tensor,
    dataset: ImageTextDataset,
    factor: str,
    source: str,
    target: str,
    factors: Tensor,
    near: Tensor,
    neighbours: int = EDIT_NEIGHBOURS,
) -> list[Direction]:
    """One matched :func:`attribute_direction` per latent of ``near`` (N, *latent_shape), matched on the other
    factors in the same row of ``factors`` (N, F: true or read by a reference, in the order of
    :func:`factor_names` of ``dataset``)."""
    if len(factors) != len(near):
        raise ValueError(f"factors: {len(factors)} rows for {len(near)} latents")
    table = true_factors(dataset)
    return [
        _direction(latents, table, dataset, factor, source, target, factors_given(dataset, row, factor), z, neighbours)
        for row, z in zip(factors, near, strict=True)
    ]


def _nearest_mean(latents: Tensor, to: Tensor, k: int) -> Tensor:
    distance = (latents - to).flatten(1).square().sum(1)
    return latents[distance.argsort()[:k]].mean(0)


def factors_given(dataset: ImageTextDataset, row: Tensor, factor: str) -> dict[str, str]:
    """The values of every factor but ``factor`` in one row of :func:`true_factors` / :func:`predict_factors`
    (in the data's order: the label first), as ``given`` for a matched :func:`attribute_direction`."""
    column = factor_column(dataset, factor)[0]
    out = {}
    for j, name in enumerate(factor_names(dataset)):
        if j != column:
            values = factor_column(dataset, name)[1]
            out[name] = values[int(row[j])]
    return out


def apply_direction(latents: Tensor, direction: Direction | Sequence[Direction], strength: float = 1.0) -> Tensor:
    """``latents`` moved ``strength`` times along ``direction`` — one for every row, or one per row (matched
    directions)."""
    if isinstance(direction, Direction):
        vector = direction.vector
    else:
        if len(direction) != len(latents):
            raise ValueError(f"direction: {len(direction)} directions for {len(latents)} latents")
        vector = torch.stack([d.vector for d in direction])
    return latents + strength * vector.to(device=latents.device, dtype=latents.dtype)


def plain_condition(backend: LatentBackend, n: int) -> Tensor | None:
    """The unconditional (empty-text) conditioning of a text-conditioned backend, None for the others."""
    return backend.condition([""] * n) if backend.supports_text_condition else None


def encode_plain(backend: LatentBackend, images: Tensor, *, options: CallOptions | None = None) -> Tensor:
    """Latents of ``images``, unconditioned for text-conditioned backends (a caption would name the old value);
    ``options`` default to the backend's job defaults (:meth:`~latentmix.backends.LatentBackend.call_options`)."""
    with torch.inference_mode():
        options = backend.call_options(options)
        return backend.encode(images, cond=plain_condition(backend, len(images)), options=options)


def labelled_latents(
    backend: LatentBackend, dataset: ImageTextDataset, count: int, *, options: CallOptions | None = None
) -> tuple[Tensor, ImageTextDataset]:
    """:func:`encode_plain` latents of ``count`` rows spread evenly over ``dataset``, and those rows (a
    :class:`~latentmix.data.Subset` with their factors) — what :func:`attribute_direction` averages over."""
    labelled = Subset(dataset, spread_indices(len(dataset), count))
    images = labelled.images(range(len(labelled)))
    return encode_plain(backend, images, options=options), labelled


def edit_images(
    backend: LatentBackend,
    images: Tensor,
    direction: Direction | Callable[[Tensor], list[Direction]],
    strength: float = 1.0,
    *,
    options: CallOptions | None = None,
) -> tuple[Tensor, Tensor]:
    """Encode ``images``, move their latents ``strength`` times along ``direction``, decode.

    ``direction`` is one direction for every image, or a function of the latents giving one per image
    (matched directions, which depend on where each latent lies). Returns (reconstructions, edits).
    Text-conditioned backends encode and decode unconditionally (a caption would name the old value);
    ``options`` go to the backend's encode and decode (default: its job defaults).
    """
    cond = plain_condition(backend, len(images))
    options = backend.call_options(options)
    z = encode_plain(backend, images, options=options)
    moved = apply_direction(z, direction if isinstance(direction, Direction) else direction(z), strength)
    with torch.inference_mode():
        both = torch.cat([z, moved])
        decoded = backend.decode(both, cond=None if cond is None else torch.cat([cond, cond]), options=options)
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
