"""Walks through N >= 2 keyframes: piecewise lerp / slerp, and a smooth spherical spline.

Pure torch, no model code, batched over paths like :mod:`latentmix.latent.interpolate`: keyframes are
``(B, K, *latent_shape)`` (B paths of K keyframes each) and a path is evaluated at positions ``s`` on
the keyframe axis: ``s = k`` is keyframe ``k`` exactly (bit for bit), ``s = k + u`` lies between
keyframes ``k`` and ``k + 1``. An open path runs over ``[0, K - 1]``; a closed one over ``[0, K]`` and
returns to keyframe 0 at ``s = K``.

Methods:

* ``"lerp"`` / ``"slerp"``: segment by segment with :func:`~latentmix.latent.interpolate.lerp` /
  :func:`~latentmix.latent.interpolate.slerp` (continuous, with a kink at every keyframe).
* ``"spline"``: C¹ through every keyframe, built like slerp from a direction and a norm:

  - the **direction** ``x / |x|`` follows a spherical cubic Bézier curve on each segment (de Casteljau's
    construction with slerp in place of lerp, Shoemake 1985). Its inner control points lie on the
    geodesic through each keyframe along a Catmull-Rom tangent taken in the sphere's tangent plane
    (half the difference of the log maps to the next and previous keyframe), a third of it on either
    side, so the curve leaves and enters every keyframe with the same velocity: the tangent is
    continuous. Open ends use the one-sided tangent (the log map to the neighbour).
  - the **norm** follows a cubic Hermite curve through the keyframes' norms with Catmull-Rom tangents
    limited to the monotone box (Fritsch & Carlson 1980): on a segment it stays between the two
    keyframes' norms, so it never reaches zero, and it is linear (as in slerp) where neighbouring
    norms lie on a line. Gaussian latents therefore stay on their typical shell.

  Parallel neighbours (equal directions) give a zero tangent, and antipodal ones, where the log map is
  not defined, turn through the same fixed orthogonal direction as :func:`~latentmix.latent.interpolate.slerp`:
  no NaN either way.

Text conditionings travel along the same positions ``s`` (usually with ``"lerp"``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from latentmix.latent.choices import KEYFRAME_METHODS
from latentmix.latent.interpolate import DOT_THRESHOLD, compute_dtype, lerp_rows, slerp_rows
from latentmix.utils.validation import positive_int

_PARALLEL_SIN = 1e-7


def _check_keyframes(keyframes: Tensor, method: str) -> None:
    if not isinstance(keyframes, Tensor) or not keyframes.is_floating_point():
        raise TypeError(f"keyframes must be a floating point torch tensor, got {type(keyframes).__name__}")
    if keyframes.dim() < 3 or keyframes.shape[0] == 0 or keyframes[0, 0].numel() == 0:
        raise ValueError(
            f"keyframes must have shape (B, K, *latent_shape) with B >= 1 paths, got {tuple(keyframes.shape)} "
            "(one path: keyframes[None])"
        )
    if keyframes.shape[1] < 2:
        raise ValueError(f"keyframes: a path needs at least 2 keyframes, got {keyframes.shape[1]}")
    if method not in KEYFRAME_METHODS:
        raise ValueError(f"method must be one of {', '.join(KEYFRAME_METHODS)}, got {method!r}")
    if not bool(torch.isfinite(keyframes).all()):
        raise ValueError("keyframes contain non-finite values (NaN or inf)")


def segments(num_keyframes: int, closed: bool) -> int:
    """Number of segments of a path through ``num_keyframes`` keyframes."""
    return num_keyframes if closed else num_keyframes - 1


def keyframe_positions(num_keyframes: int, frames: int, *, closed: bool = False) -> Tensor:
    """Evenly spaced positions (T,) with ``frames`` frames per segment; keyframe k is frame ``k * frames``.

    An open path has ``(K - 1) * frames + 1`` frames (the last keyframe included); a closed one ``K * frames``
    (the frame after the last is the first keyframe again, so a looped video does not repeat it).
    """
    positive_int(frames, "frames")
    n = segments(positive_int(num_keyframes, "num_keyframes"), closed)
    count = n * frames + (0 if closed else 1)
    return torch.arange(count, dtype=torch.float64) / frames


def keyframe_path(keyframes: Tensor, frames: int, method: str = "spline", *, closed: bool = False) -> Tensor:
    """A walk through keyframes with ``frames`` evenly spaced frames per segment, for all paths at once.

    Args:
        keyframes: ``(B, K, *latent_shape)``: B paths of K >= 2 keyframes (one path: ``keyframes[None]``).
        frames: frames per segment (keyframe included), >= 1.
        method: ``"spline"`` (C¹ spherical spline), ``"slerp"`` or ``"lerp"`` (piecewise).
        closed: loop back from the last keyframe to the first.

    Returns:
        ``(B, T, *latent_shape)`` with T from :func:`keyframe_positions`; frame ``k * frames`` is keyframe
        ``k`` exactly.
    """
    _check_keyframes(keyframes, method)
    s = keyframe_positions(keyframes.shape[1], frames, closed=closed)
    return keyframe_path_at(keyframes, s, method, closed=closed)


def _positions(s: Tensor | list, batch: int, upper: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    s = torch.as_tensor(s, device=device, dtype=dtype)
    if s.dim() == 1:
        s = s.unsqueeze(0).expand(batch, -1)
    if s.dim() != 2 or s.shape[0] != batch or s.shape[1] == 0:
        raise ValueError(f"s must have shape (T,) or ({batch}, T) with T >= 1, got {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()) or float(s.min()) < 0 or float(s.max()) > upper:
        raise ValueError(f"s must lie in [0, {upper}] (positions on the keyframe axis)")
    return s


def keyframe_path_at(keyframes: Tensor, s: Tensor | list, method: str = "spline", *, closed: bool = False) -> Tensor:
    """The keyframe path at positions ``s``: ``(T,)`` shared by all paths or ``(B, T)``; see the module docstring.

    Returns ``(B, T, *latent_shape)`` in the dtype of ``keyframes``.
    """
    _check_keyframes(keyframes, method)
    batch, k = keyframes.shape[:2]
    n_seg = segments(k, closed)
    cdtype = compute_dtype(keyframes.dtype)
    s = _positions(s, batch, n_seg, keyframes.device, cdtype)
    flat = keyframes.flatten(2)  # (B, K, D)
    seg = s.floor().long().clamp(max=n_seg - 1)  # (B, T)
    u = s - seg
    nxt = (seg + 1) % k
    rows = torch.arange(batch, device=keyframes.device)[:, None].expand_as(seg)
    a, b = flat[rows, seg], flat[rows, nxt]  # (B, T, D)
    u_rows = u.reshape(-1, 1)
    if method == "lerp":
        out = lerp_rows(a.flatten(0, 1), b.flatten(0, 1), u_rows)[:, 0]
    elif method == "slerp":
        out = slerp_rows(a.flatten(0, 1), b.flatten(0, 1), u_rows, DOT_THRESHOLD)[:, 0]
    else:
        out = _spline(flat, seg, u, closed).flatten(0, 1)
    out = out.reshape(batch, -1, flat.shape[2]).to(keyframes.dtype)
    out = torch.where((u == 0)[..., None], a, torch.where((u == 1)[..., None], b, out))  # keyframes bit for bit
    return out.reshape(batch, s.shape[1], *keyframes.shape[2:])


# -- the spherical spline --------------------------------------------------------------------------------


def _orthogonal(p: Tensor) -> Tensor:
    """A fixed unit direction orthogonal to the unit rows ``p`` (as slerp uses for antipodal rows)."""
    k = p.abs().argmin(dim=-1, keepdim=True)
    e = torch.zeros_like(p).scatter_(-1, k, 1.0)
    w = e - p.gather(-1, k) * p
    return w / torch.linalg.vector_norm(w, dim=-1, keepdim=True)


def _log_map(p: Tensor, q: Tensor) -> Tensor:
    """Tangent vector at unit ``p`` pointing to unit ``q`` along the geodesic, of length angle(p, q)."""
    cos = (p * q).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    w = q - cos * p
    sin = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
    theta = torch.atan2(sin, cos)
    degenerate = sin < _PARALLEL_SIN
    direction = torch.where(degenerate, _orthogonal(p), w / sin.clamp_min(_PARALLEL_SIN))
    # parallel: no turn; antipodal: half a turn through the fixed orthogonal direction
    return torch.where(degenerate & (cos > 0), torch.zeros_like(w), theta * direction)


def _exp_map(p: Tensor, v: Tensor) -> Tensor:
    """The point reached from unit ``p`` along tangent ``v`` (its length is the angle), on the unit sphere."""
    angle = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    out = torch.cos(angle) * p + torch.sin(angle) * v / angle.clamp_min(torch.finfo(v.dtype).tiny)
    return out / torch.linalg.vector_norm(out, dim=-1, keepdim=True)


def _unit_slerp(a: Tensor, b: Tensor, u: Tensor) -> Tensor:
    """Slerp of unit rows (N, D) at per-row u (N,), renormalised (the near-parallel lerp fallback is not unit)."""
    out = slerp_rows(a, b, u[:, None], DOT_THRESHOLD)[:, 0]
    return out / torch.linalg.vector_norm(out, dim=-1, keepdim=True)


def _neighbours(x: Tensor, closed: bool) -> tuple[Tensor, Tensor]:
    """Previous and next keyframe of each keyframe along dim 1 (open ends: the keyframe itself)."""
    if closed:
        return x.roll(1, dims=1), x.roll(-1, dims=1)
    prev = torch.cat([x[:, :1], x[:, :-1]], dim=1)
    nxt = torch.cat([x[:, 1:], x[:, -1:]], dim=1)
    return prev, nxt


def _direction_tangents(unit: Tensor, closed: bool) -> Tensor:
    """Catmull-Rom tangents in each keyframe's tangent plane (B, K, D); one-sided at open ends."""
    prev, nxt = _neighbours(unit, closed)
    forward, backward = _log_map(unit, nxt), _log_map(unit, prev)
    tangent = 0.5 * (forward - backward)
    if not closed:  # an end has one neighbour: its whole log map (the other one is zero)
        tangent[:, 0], tangent[:, -1] = forward[:, 0], -backward[:, -1]
    return tangent


def _norm_tangents(norm: Tensor, closed: bool) -> Tensor:
    """Catmull-Rom tangents of the norms (B, K), limited to the monotone box (|m| <= 3 |secant|, same sign)."""
    prev, nxt = _neighbours(norm.unsqueeze(-1), closed)
    d_in, d_out = norm - prev[..., 0], nxt[..., 0] - norm
    m = 0.5 * (d_in + d_out)
    if not closed:
        m[:, 0], m[:, -1] = d_out[:, 0], d_in[:, -1]
        d_in[:, 0], d_out[:, -1] = d_out[:, 0], d_in[:, -1]
    same_sign = (d_in * d_out) > 0
    if not closed:  # an open end is limited by its one secant
        same_sign[:, 0], same_sign[:, -1] = True, True
    limit = 3.0 * torch.minimum(d_in.abs(), d_out.abs())
    return torch.where(same_sign, m.clamp(-limit, limit), torch.zeros_like(m))


def _spline(flat: Tensor, seg: Tensor, u: Tensor, closed: bool) -> Tensor:
    """The C¹ spherical spline (B, T, D) in the compute dtype of ``u``; see the module docstring."""
    cdtype = u.dtype
    x = flat.to(cdtype)
    norm = torch.linalg.vector_norm(x, dim=-1)  # (B, K)
    tiny = torch.finfo(cdtype).tiny
    zero = norm <= tiny
    unit = torch.where(zero[..., None], _orthogonal_fallback(x), x / norm.clamp_min(tiny)[..., None])
    tangent = _direction_tangents(unit, closed)
    ctrl_out, ctrl_in = _exp_map(unit, tangent / 3.0), _exp_map(unit, -tangent / 3.0)
    k = flat.shape[1]
    nxt = (seg + 1) % k
    rows = torch.arange(flat.shape[0], device=flat.device)[:, None].expand_as(seg)
    points = [unit[rows, seg], ctrl_out[rows, seg], ctrl_in[rows, nxt], unit[rows, nxt]]  # (B, T, D) each
    uu = u.reshape(-1)
    level = [p.flatten(0, 1) for p in points]
    while len(level) > 1:  # de Casteljau with slerp
        level = [_unit_slerp(level[i], level[i + 1], uu) for i in range(len(level) - 1)]
    direction = level[0].reshape(points[0].shape)

    m = _norm_tangents(norm, closed)
    n0, n1, m0, m1 = norm[rows, seg], norm[rows, nxt], m[rows, seg], m[rows, nxt]
    u2, u3 = u * u, u * u * u
    radius = (2 * u3 - 3 * u2 + 1) * n0 + (u3 - 2 * u2 + u) * m0 + (-2 * u3 + 3 * u2) * n1 + (u3 - u2) * m1
    return direction * radius.unsqueeze(-1)


def _orthogonal_fallback(x: Tensor) -> Tensor:
    """A unit direction for zero keyframes (their norm is 0, so the direction does not show at them)."""
    e = torch.zeros_like(x)
    e[..., 0] = 1.0
    return e
