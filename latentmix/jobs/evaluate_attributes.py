"""The ``attributes`` section of ``latentmix evaluate``, for data with known factors (``shapes``).

Judged by a reference classifier with one head per factor (the label first):

* ``reconstruction``: the share of test reconstructions whose every factor (and each factor alone) is read right;
* ``prompted`` (text-conditioned backends): samples prompted with test captions; ``compositional`` is the share
  whose every factor that its caption names is realised (a vague caption does not name the shape);
* ``paths_<factor>_<method>``: walks between test examples that differ in that factor only (``label`` = the
  shape, ``colour``, ``position``): ``monotone`` — the factor moves from A's value to B's once, never back, never
  a third value, while every other factor stays put at every step; ``midpoint_a_or_b`` — the midpoint's value
  is A's or B's, not a third. Diffusion backends add ``paths_<factor>_<method>_partial``: the walks between
  latents inverted only ``path_strength`` of the way to noise, which the sampler cleans up from there;
* ``arithmetic_<factor>``: latent arithmetic, ``mean(train latents | target) − mean(train latents | source)``
  added to held-out test latents of the source value, for every ordered pair of values: ``success`` — the
  factor became the target and every other factor kept what the unedited reconstruction shows;
  ``arithmetic_<factor>_matched``: the same edits along matched directions (taken among the train latents
  that share the test example's other factors, between the nearest of each value; see
  :func:`latentmix.jobs.attributes.attribute_direction`). A text-conditioned backend is encoded and decoded
  unconditionally here (its captions name the source value).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import Tensor

from latentmix.backends import CallOptions
from latentmix.data import Subset
from latentmix.jobs.attributes import (
    apply_direction,
    attribute_direction,
    edit_success,
    encode_plain,
    factor_column,
    factor_names,
    labelled_latents,
    matched_directions,
    plain_condition,
    predict_factors,
    true_factors,
)
from latentmix.latent.interpolate import METHODS, interpolation_path

PATH_FACTORS = ("label", "colour", "position", "size")
EDIT_FACTORS = ("label", "colour", "size", "position")


def attribute_report(ctx: Any, report: dict) -> dict:
    names = factor_names(ctx.test)
    truth = true_factors(ctx.test)
    assert ctx.recon is not None
    out: dict[str, Any] = {"reconstruction": _accuracy(predict_factors(ctx.clf, ctx.recon, names[1:]), truth, names)}
    if ctx.backend.supports_text_condition and ctx.backend.latent_prior == "gaussian":
        out["prompted"] = _prompted(ctx, names, truth)
    for factor in PATH_FACTORS:
        if factor in names:
            out.update(_single_factor_paths(ctx, names, truth, factor))
    edit_factors = [f for f in EDIT_FACTORS if f in names]
    if edit_factors:
        z_train, labelled = labelled_latents(
            ctx.backend, ctx.train, ctx.config.direction_samples, options=_plain_options(ctx)
        )
        for factor in edit_factors:
            out.update(_arithmetic(ctx, names, factor, z_train, labelled))
    return out


def _accuracy(pred: Tensor, truth: Tensor, names: list[str], named: Tensor | None = None) -> dict[str, float]:
    """Per-factor accuracy and the share with every (named) factor right."""
    right = pred == truth
    out = {name: float(right[:, j].float().mean()) for j, name in enumerate(names)}
    mask = torch.ones_like(right) if named is None else named
    out["all"] = float((right | ~mask).all(1).float().mean())
    return out


def _prompted(ctx: Any, names: list[str], truth: Tensor) -> dict[str, float]:
    n = min(len(ctx.test), ctx.config.prior_samples)
    texts = ctx.test.texts[:n]
    named = getattr(ctx.test, "named_factors", None)
    mask = torch.tensor([[name in named[i] for name in names] for i in range(n)]) if named else None
    gen = torch.Generator().manual_seed(ctx.config.seed + 2)
    with torch.inference_mode():
        samples = ctx.decode(ctx.backend.sample(n, generator=gen), ctx.backend.condition(texts))
    result = _accuracy(predict_factors(ctx.clf, samples, names[1:]), truth[:n], names, mask)
    result["compositional"] = result.pop("all")
    result["samples"] = n
    return result


def pairs_differing_in(truth: Tensor, column: int, limit: int, rng: np.random.Generator) -> tuple[list, list]:
    """Up to ``limit`` pairs of rows equal in every factor but ``column`` (where they differ)."""
    others = [j for j in range(truth.shape[1]) if j != column]
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, row in enumerate(truth.tolist()):
        groups[tuple(row[j] for j in others)].append(i)
    candidates = [
        (a, b)
        for members in groups.values()
        for a in members
        for b in members
        if a < b and truth[a, column] != truth[b, column]
    ]
    if not candidates:
        return [], []
    chosen = rng.choice(len(candidates), size=min(limit, len(candidates)), replace=False)
    return [candidates[k][0] for k in chosen], [candidates[k][1] for k in chosen]


def _single_factor_paths(ctx: Any, names: list[str], truth: Tensor, factor: str) -> dict[str, dict]:
    """``paths_<factor>_<method>``; for diffusion backends also ``…_<method>_partial``: the same walks between
    latents inverted ``path_strength`` of the way (and sampled back from there)."""
    column, steps = names.index(factor), ctx.config.path_steps
    ia, ib = pairs_differing_in(truth, column, ctx.config.factor_paths, np.random.default_rng(ctx.config.seed + 3))
    if not ia:
        return {}
    out = {}
    c = ctx.c_test
    walks: list[tuple[str, Tensor, Tensor, CallOptions]] = [("", ctx.z_test[ia], ctx.z_test[ib], ctx.options)]
    strength = ctx.config.path_strength
    if "strength" in ctx.backend.option_names and strength < 1:
        partial = ctx.options.replace(strength=strength)
        with torch.inference_mode():
            za, zb = (
                ctx.backend.encode(ctx.x_test[rows], cond=None if c is None else c[rows], options=partial)
                for rows in (ia, ib)
            )
        walks.append(("_partial", za, zb, partial))
    cond = None if c is None else interpolation_path(c[ia], c[ib], steps, "lerp").flatten(0, 1)
    ideal = _ideal_paths(ctx, names, truth, factor, ia, ib)
    if ideal is not None:
        out[f"paths_{factor}_ideal"] = ideal
    for (suffix, za, zb, options), method in itertools.product(walks, METHODS):
        path = interpolation_path(za, zb, steps, method)
        images = ctx.decode(path.flatten(0, 1), cond, options)
        pred = predict_factors(ctx.clf, images, names[1:]).reshape(len(ia), steps, len(names))
        row = path_rule(pred, truth, ia, ib, column)
        if ideal is not None:  # how close to what a perfect walk of this data scores by the same rule
            row["ideal_ratio"] = row["monotone"] / ideal["monotone"] if ideal["monotone"] else None
        out[f"paths_{factor}_{method}{suffix}"] = {**row, **({"strength": strength} if suffix else {})}
    return out


def path_rule(pred: Tensor, truth: Tensor, ia: list[int], ib: list[int], column: int) -> dict[str, Any]:
    """The single-factor path numbers of walks read by a reference (``pred``: (P, T, F) factors along each walk from
    item ``ia[p]`` to ``ib[p]``): ``monotone`` — A's value, then B's, never a third, one switch, every other factor
    kept all the way — and ``midpoint_a_or_b``, the share whose middle frame shows A's or B's value."""
    a, b = truth[ia, column], truth[ib, column]
    values = pred[:, :, column]
    only_ends = ((values == a[:, None]) | (values == b[:, None])).all(1)
    one_switch = (values[:, 1:] != values[:, :-1]).sum(1) == 1
    starts_ends = (values[:, 0] == a) & (values[:, -1] == b)
    others = [j for j in range(pred.shape[2]) if j != column]
    kept = (pred[:, :, others] == truth[ia][:, None, others]).all(2).all(1)
    mid = values[:, pred.shape[1] // 2]
    return {
        "monotone": float((only_ends & one_switch & starts_ends & kept).float().mean()),
        "midpoint_a_or_b": float(((mid == a) | (mid == b)).float().mean()),
        "paths": len(ia),
    }


def _ideal_paths(ctx: Any, names: list[str], truth: Tensor, factor: str, ia: list[int], ib: list[int]) -> dict | None:
    """For the embedded ``shapes``: the same walks drawn ideally by the data's own generator
    (:func:`latentmix.data.shapes.ideal_walk`: the factor moved along its own order, every other factor held), read
    by the same reference with the same rule — the rate a perfect walk gets, which the model's is judged against.
    None for other data and for the shape (which has no order)."""
    from latentmix.data.shapes import FACTORS, IDEAL_FACTORS, ShapesDataset, ideal_walk

    base, rows = ctx.test, np.arange(len(ctx.test))
    if isinstance(ctx.test, Subset):
        base, rows = ctx.test.base, ctx.test.indices
    if factor not in IDEAL_FACTORS or not isinstance(base, ShapesDataset) or base.split not in ("train", "test"):
        return None
    column, steps = names.index(factor), ctx.config.path_steps
    frames = [
        ideal_walk(base.seed, base.split, int(rows[i]), factor, FACTORS[factor][int(truth[j, column])], steps,
                   base.image_size)
        for i, j in zip(ia, ib, strict=True)
    ]  # fmt: skip
    images = base.to_tensor(np.concatenate(frames))
    pred = predict_factors(ctx.clf, images, names[1:]).reshape(len(ia), steps, len(names))
    return path_rule(pred, truth, ia, ib, column)


def _arithmetic(ctx: Any, names: list[str], factor: str, z_train: Tensor, directions_from: Any) -> dict[str, dict]:
    """Directions from train latents (``z_train`` of ``directions_from``), added to ``edits_per_pair`` test
    latents per (source, target) pair: the global mean difference (``arithmetic_<factor>``) and the matched
    one (``arithmetic_<factor>_matched``: among the train latents that share the test example's other
    factors, the nearest of each value: :func:`~latentmix.jobs.attributes.matched_directions`)."""
    column, values = factor_column(ctx.test, factor)
    truth = true_factors(ctx.test)
    test_values = truth[:, column].numpy()
    members = {v: np.flatnonzero(test_values == v)[: ctx.config.edits_per_pair] for v in range(len(values))}
    chosen = np.concatenate(list(members.values()))
    if not len(chosen):
        return {}
    z_chosen = encode_plain(ctx.backend, ctx.x_test[chosen], options=_plain_options(ctx))
    where = {int(row): k for k, row in enumerate(chosen)}
    moved: dict[str, list[Tensor]] = {"": [], "_matched": []}
    before, targets = [], []
    for source, rows_of_source in members.items():
        for target in range(len(values)):
            if target == source or not len(rows_of_source):
                continue
            pair = (factor, values[source], values[target])
            try:
                direction = attribute_direction(z_train, directions_from, *pair)
            except ValueError:
                continue  # a value the train rows lack
            positions = [where[int(r)] for r in rows_of_source]
            matched = matched_directions(
                z_train, directions_from, *pair, truth[torch.as_tensor(rows_of_source)], z_chosen[positions]
            )
            moved[""].append(apply_direction(z_chosen[positions], direction))
            moved["_matched"].append(apply_direction(z_chosen[positions], matched))
            before += positions
            targets += [target] * len(positions)
    if not targets:
        return {}
    unedited = predict_factors(ctx.clf, _decode_plain(ctx, z_chosen), names[1:])[torch.tensor(before)]
    out = {}
    for suffix, latents in moved.items():
        after = predict_factors(ctx.clf, _decode_plain(ctx, torch.cat(latents)), names[1:])
        out[f"arithmetic_{factor}{suffix}"] = {
            **edit_success(unedited, after, column, torch.tensor(targets)),
            "edits": len(targets),
        }
    return out


def _plain_options(ctx: Any) -> CallOptions:
    """:func:`encode_plain` settings of the evaluation: its refinement (backends that refine) and sampler."""
    refine = ctx.config.refine_steps if "refine_steps" in ctx.backend.option_names else None
    return ctx.options.replace(refine_steps=refine)


def _decode_plain(ctx: Any, latents: Tensor) -> Tensor:
    with torch.inference_mode():
        return (
            ctx.backend.decode(latents, cond=plain_condition(ctx.backend, len(latents)), options=ctx.options)
            .float()
            .cpu()
        )
