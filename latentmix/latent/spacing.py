"""Perceptually even frames: re-time a walk so that consecutive frames change by the same amount.

With evenly spaced t most of a walk's visible change happens in a few frames (DiffMorpher re-times its
frames for this reason). :func:`even_positions` measures a path densely in a feature space (the
reference classifier's embedding, or any function of the decoded images), accumulates the distance
between consecutive dense frames, and inverts that cumulative distance (piecewise linearly) so that
the returned positions are equally far apart in feature space.

Keyframes stay frames: the frame budget is shared among the segments in proportion to their measured
lengths (largest remainders, at least one step each), and each segment is evened on its own, so a
keyframe walk still shows every keyframe and moves at (nearly) one speed throughout.

:func:`spacing_cv` is the yardstick: the coefficient of variation (std / mean) of the per-step feature
distances along each path (0 for perfectly even frames).
"""

from __future__ import annotations

import torch
from torch import Tensor

from latentmix.utils.validation import int_at_least


def step_distances(features: Tensor) -> Tensor:
    """Euclidean distance between consecutive frames: features (B, T, F) -> (B, T - 1), float64."""
    if features.dim() != 3 or features.shape[1] < 2:
        raise ValueError(f"features must have shape (B, T, F) with T >= 2, got {tuple(features.shape)}")
    f = features.double()
    return torch.linalg.vector_norm(f[:, 1:] - f[:, :-1], dim=-1)


def spacing_cv(features: Tensor) -> Tensor:
    """Coefficient of variation of the per-step feature distances of each path (B,); 0 where a path does
    not move at all."""
    d = step_distances(features)
    mean = d.mean(dim=1)
    cv = d.std(dim=1, correction=0) / mean.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(mean > 0, cv, torch.zeros_like(cv))


def allocate_frames(lengths: list[float], steps: int) -> list[int]:
    """Split ``steps`` among segments in proportion to ``lengths`` (largest remainders, >= 1 each)."""
    n = len(lengths)
    if steps < n:
        raise ValueError(f"frames: {steps} steps cannot cover {n} segments")
    total = sum(lengths)
    shares = [steps / n] * n if total <= 0 else [steps * length / total for length in lengths]
    counts = [max(1, int(share)) for share in shares]
    while sum(counts) > steps:  # the minimum of one step each overdrew: take from the most over-served
        i = max((i for i in range(n) if counts[i] > 1), key=lambda i: counts[i] - shares[i])
        counts[i] -= 1
    order = sorted(range(n), key=lambda i: counts[i] - shares[i])  # largest remainder first
    for i in order[: steps - sum(counts)]:
        counts[i] += 1
    return counts


def even_positions(dense_s: Tensor, dense_features: Tensor, steps: int, *, knots: list[float] | None = None) -> Tensor:
    """Positions (B, steps + 1) equally far apart in feature space along each densely measured path.

    Args:
        dense_s: (M,) or (B, M) non-decreasing positions at which each path was measured (the first and last are
            its ends; repeats are allowed, as when measurements of several passes are merged).
        dense_features: (B, M, F) features of the decoded paths at ``dense_s``.
        steps: steps of the re-timed path (frames - 1), >= the number of segments.
        knots: positions that must stay frames (the keyframes, ends included), each one of the measured
            positions; default: only the two ends.

    Returns:
        (B, steps + 1) float64 positions; every knot is among them exactly.
    """
    int_at_least(steps, "steps", 1)
    batch, m = dense_features.shape[:2]
    s = dense_s.double().cpu()
    s = s.expand(batch, -1) if s.dim() == 1 else s
    if s.shape != (batch, m) or m < 2:
        raise ValueError(f"dense_s must have shape (M,) or ({batch}, M) with M = {m} >= 2, got {tuple(dense_s.shape)}")
    if not bool((s[:, 1:] >= s[:, :-1]).all()):
        raise ValueError("dense_s must not decrease")
    cum = torch.cat([torch.zeros(batch, 1, dtype=torch.float64), step_distances(dense_features).cpu()], 1).cumsum(1)
    return torch.stack([_even_row(row_s, row_cum, steps, knots) for row_s, row_cum in zip(s, cum, strict=True)])


def _even_row(s: Tensor, cum: Tensor, steps: int, knots: list[float] | None) -> Tensor:
    """:func:`even_positions` of one path measured at ``s`` with cumulative feature distance ``cum``."""
    knot_s = torch.tensor([float(s[0]), float(s[-1])] if knots is None else knots, dtype=torch.float64)
    where = torch.searchsorted(s, knot_s).clamp(max=len(s) - 1)
    if not bool((s[where] - knot_s).abs().le(1e-9).all()) or not bool((knot_s[1:] > knot_s[:-1]).all()):
        raise ValueError("knots must be increasing positions among the measured positions dense_s")
    at_knots = cum[where]
    lengths = at_knots[1:] - at_knots[:-1]
    pieces = []
    for j, count in enumerate(allocate_frames(lengths.tolist(), steps)):
        frac = torch.arange(count, dtype=torch.float64) / count
        if lengths[j] > 0:
            piece = _invert(cum, s, at_knots[j] + frac * lengths[j])
        else:  # a segment along which nothing changes: even in position
            piece = knot_s[j] + frac * (knot_s[j + 1] - knot_s[j])
        piece[0] = knot_s[j]  # the knot exactly
        pieces.append(piece)
    return torch.cat([*pieces, knot_s[-1:]])


def _invert(cum: Tensor, s: Tensor, target: Tensor) -> Tensor:
    """Positions where the increasing (non-decreasing) cumulative distance ``cum`` (at ``s``) reaches ``target``."""
    hi = torch.searchsorted(cum, target, right=False).clamp(1, len(cum) - 1)
    lo = hi - 1
    span = cum[hi] - cum[lo]
    frac = torch.where(span > 0, (target - cum[lo]) / span.clamp_min(1e-300), torch.zeros_like(span))
    return s[lo] + frac.clamp(0, 1) * (s[hi] - s[lo])
