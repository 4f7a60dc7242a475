"""Interpolation in latent space: lerp, slerp, paths, 2-D grids and λ sampling.

Pure torch, no model code. Every function is batched (one row per pair), differentiable,
and returns tensors on the device and in the dtype of its inputs.

Shapes: ``a`` and ``b`` are ``(B, *latent_shape)``; ``t`` is a float, a 0-d tensor or a
tensor of shape ``(B,)`` (one value per pair). ``t = 0`` gives ``a`` and ``t = 1`` gives
``b`` exactly (bit for bit); other values of ``t`` extrapolate.

How :func:`slerp` differs from the snippets copied through diffusers' community pipelines
(each point has a regression test in ``tests/latent/test_interpolate.py``):

* one angle **per row**, over all non-batch dims (not one norm for the whole batch, not an
  element-wise product treated as the dot product);
* angles, norms and coefficients are computed in float32 (float64 for float64 inputs), so
  fp16 latents with large norms do not overflow and bf16 works without NumPy round-trips;
* nearly parallel rows (cosine above ``dot_threshold``) and rows with a zero endpoint fall
  back to lerp, so identical inputs give no NaN;
* exactly or nearly antipodal rows (where the great circle is not defined) turn through a
  fixed, deterministic orthogonal direction instead of collapsing to a zero midpoint;
* the output is not forced onto the unit sphere: the norm moves linearly from ``|a|`` to
  ``|b|`` while the direction follows the great circle.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from latentmix.latent.choices import METHODS
from latentmix.utils.validation import non_negative_int, positive_number

DOT_THRESHOLD = 0.9995
# Below this sine of the angle (cos < -(1 - 5e-7)) a row counts as antipodal.
_ANTIPODAL_SIN = 1e-3


def _check_pair(a: Tensor, b: Tensor) -> None:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"a and b must be torch tensors, got {type(a).__name__} and {type(b).__name__}")
    if not a.is_floating_point() or not b.is_floating_point():
        raise TypeError(f"a and b must be floating point tensors, got {a.dtype} and {b.dtype}")
    if a.dtype != b.dtype:
        raise TypeError(f"a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"a and b must be on the same device, got {a.device} and {b.device}")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() < 2 or a.shape[0] == 0 or a[0].numel() == 0:
        raise ValueError(
            f"a and b must have shape (B, *latent_shape) with B >= 1 and a non-empty latent, got {tuple(a.shape)}"
        )


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the interpolators compute in for inputs of ``dtype``: float64 stays, everything else is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _as_t(t: float | Tensor, batch: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Return ``t`` as a (B, 1) tensor in the compute dtype."""
    if isinstance(t, bool) or not isinstance(t, (int, float, Tensor)):
        raise TypeError(f"t must be a float or a tensor, got {type(t).__name__}")
    t = torch.as_tensor(t, device=device, dtype=dtype)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be a float or a tensor of shape ({batch},), got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("t must be finite")
    return t.unsqueeze(1)


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (both endpoints are included), got {steps}")


def _raise_non_finite(a: Tensor, b: Tensor) -> None:
    for name, x in (("a", a), ("b", b)):
        bad = ~torch.isfinite(x.flatten(1)).all(dim=1)
        if bool(bad.any()):
            rows = bad.nonzero().flatten()[:5].tolist()
            raise ValueError(f"{name} contains non-finite values (NaN or inf) in rows {rows}")


def _combine(a2: Tensor, b2: Tensor, ca: Tensor, cb: Tensor, out_dtype: torch.dtype) -> Tensor:
    """out[i, j] = ca[i, j] * a2[i] + cb[i, j] * b2[i]; a2, b2 (B, D), ca, cb (B, T) -> (B, T, D)."""
    cdtype = ca.dtype
    a3 = a2.to(cdtype).unsqueeze(1)
    b3 = b2.to(cdtype).unsqueeze(1)
    out = a3 * ca.unsqueeze(2)
    out = out.addcmul_(b3, cb.unsqueeze(2))
    return out.to(out_dtype)


def lerp_rows(a2: Tensor, b2: Tensor, t: Tensor) -> Tensor:
    """Lerp of (B, D) rows at t (B, T) -> (B, T, D), endpoints exact."""
    out = _combine(a2, b2, 1.0 - t, t, a2.dtype)
    if not bool(torch.isfinite(out).all()):
        _raise_non_finite(a2, b2)
    return out


def _row_stats(a2: Tensor, b2: Tensor, cdtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Norms and dot product of each row pair, in ``cdtype`` (no full-size copies for float32)."""
    na = torch.linalg.vector_norm(a2, dim=1, dtype=cdtype)
    nb = torch.linalg.vector_norm(b2, dim=1, dtype=cdtype)
    if a2.dtype == cdtype:
        dot = torch.bmm(a2.unsqueeze(1), b2.unsqueeze(2)).flatten()
    else:
        dot = (a2.to(cdtype) * b2.to(cdtype)).sum(dim=1)
    return na, nb, dot


def slerp_rows(a2: Tensor, b2: Tensor, t: Tensor, dot_threshold: float) -> Tensor:
    """Slerp of (B, D) rows at t (B, T) -> (B, T, D)."""
    cdtype = t.dtype
    na, nb, dot = _row_stats(a2, b2, cdtype)
    if not bool(torch.isfinite(na).all() & torch.isfinite(nb).all() & torch.isfinite(dot).all()):
        _raise_non_finite(a2, b2)
        if cdtype == torch.float32:  # finite inputs whose norm overflows float32
            return slerp_rows(a2, b2, t.double(), dot_threshold).to(a2.dtype)
        raise ValueError("a and b are too large to interpolate")

    tiny = torch.finfo(cdtype).tiny
    zero = (na <= tiny) | (nb <= tiny)
    na_s = torch.where(zero, torch.ones_like(na), na)
    nb_s = torch.where(zero, torch.ones_like(nb), nb)
    cos = (dot / (na_s * nb_s)).clamp(-1.0, 1.0)
    sin2 = (1.0 - cos * cos).clamp_min(0.0)
    parallel = zero | (cos > dot_threshold)
    antipodal = ~parallel & (sin2 < _ANTIPODAL_SIN**2)
    if a2.shape[1] == 1:  # no orthogonal direction exists in one dimension
        parallel = parallel | antipodal
        antipodal = torch.zeros_like(antipodal)
    general = ~(parallel | antipodal)

    # General rows: direction on the great circle, norm moving linearly from |a| to |b|.
    sin = torch.sqrt(torch.where(general, sin2, torch.ones_like(sin2)))
    omega = torch.atan2(sin, cos)
    norm_t = (1.0 - t) * na_s[:, None] + t * nb_s[:, None]
    sa = torch.sin((1.0 - t) * omega[:, None]) / sin[:, None]
    sb = torch.sin(t * omega[:, None]) / sin[:, None]
    ca = norm_t * sa / na_s[:, None]
    cb = norm_t * sb / nb_s[:, None]

    # Antipodal rows: turn by pi through p = unit(e_k - u_k u), k = argmin |u_k|.
    any_antipodal = bool(antipodal.any())
    if any_antipodal:
        rows = antipodal.nonzero().flatten()
        u = a2[rows].to(cdtype) / na_s[rows, None]
        k = u.abs().argmin(dim=1)
        u_k = u.gather(1, k[:, None]).squeeze(1)
        p_norm = torch.sqrt(1.0 - u_k * u_k)
        tr = t[rows] if t.shape[0] > 1 else t.expand(len(rows), -1)
        nr = norm_t[rows]
        ca_anti = nr * (torch.cos(math.pi * tr) - torch.sin(math.pi * tr) * (u_k / p_norm)[:, None]) / na_s[rows, None]
        gamma = nr * torch.sin(math.pi * tr) / p_norm[:, None]
        ca = ca.index_put((rows,), ca_anti)
        cb = cb.index_put((rows,), torch.zeros_like(ca_anti))

    tb = t.expand_as(ca)
    ca = torch.where(parallel[:, None], 1.0 - tb, ca)
    cb = torch.where(parallel[:, None], tb, cb)
    # Endpoints exactly: 1 * a + 0 * b is a, bit for bit.
    ca = torch.where(tb == 0, torch.ones_like(ca), torch.where(tb == 1, torch.zeros_like(ca), ca))
    cb = torch.where(tb == 0, torch.zeros_like(cb), torch.where(tb == 1, torch.ones_like(cb), cb))

    if not any_antipodal:
        return _combine(a2, b2, ca, cb, a2.dtype)
    out = _combine(a2, b2, ca, cb, cdtype)
    gamma = torch.where((tr == 0) | (tr == 1), torch.zeros_like(gamma), gamma)
    steps = torch.arange(out.shape[1], device=out.device)
    out = out.index_put((rows[:, None], steps[None, :], k[:, None].expand_as(gamma)), gamma, accumulate=True)
    return out.to(a2.dtype)


def lerp(a: Tensor, b: Tensor, t: float | Tensor) -> Tensor:
    """Linear interpolation ``(1 - t) * a + t * b``, one ``t`` per row.

    Args:
        a, b: ``(B, *latent_shape)`` floating point tensors of the same dtype and device.
        t: a float, or a tensor of shape ``(B,)``.

    Returns:
        ``(B, *latent_shape)`` in the dtype of ``a``; ``t = 0`` and ``t = 1`` return ``a`` and
        ``b`` exactly.
    """
    _check_pair(a, b)
    tt = _as_t(t, a.shape[0], a.device, compute_dtype(a.dtype))
    return lerp_rows(a.flatten(1), b.flatten(1), tt).reshape(a.shape)


def slerp(a: Tensor, b: Tensor, t: float | Tensor, *, dot_threshold: float = DOT_THRESHOLD) -> Tensor:
    """Spherical interpolation with one angle per row, over all non-batch dims.

    The direction moves along the great circle from ``a / |a|`` to ``b / |b|`` and the norm
    moves linearly from ``|a|`` to ``|b|``, so Gaussian latents stay on their typical shell.

    Args:
        a, b: ``(B, *latent_shape)`` floating point tensors of the same dtype and device.
        t: a float, or a tensor of shape ``(B,)``.
        dot_threshold: rows whose cosine similarity exceeds this fall back to :func:`lerp`
            (the angle is too small to compute reliably and lerp is then indistinguishable).

    Returns:
        ``(B, *latent_shape)`` in the dtype of ``a``. Zero rows fall back to lerp; exactly
        antipodal rows turn through a deterministic orthogonal direction (never a zero
        midpoint, except in one dimension, where no such direction exists).
    """
    _check_pair(a, b)
    if not 0.0 < float(dot_threshold) <= 1.0:
        raise ValueError(f"dot_threshold must be in (0, 1], got {dot_threshold}")
    tt = _as_t(t, a.shape[0], a.device, compute_dtype(a.dtype))
    return slerp_rows(a.flatten(1), b.flatten(1), tt, float(dot_threshold)).reshape(a.shape)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return method


def interpolate(a: Tensor, b: Tensor, t: float | Tensor, method: str = "slerp") -> Tensor:
    """:func:`lerp` or :func:`slerp` by name."""
    return slerp(a, b, t) if check_method(method) == "slerp" else lerp(a, b, t)


def interpolation_path(a: Tensor, b: Tensor, steps: int, method: str = "slerp") -> Tensor:
    """Evenly spaced points from ``a`` to ``b``, both endpoints included, for all pairs at once.

    Args:
        a, b: ``(B, *latent_shape)``.
        steps: number of points per path, at least 2.
        method: ``"slerp"`` or ``"lerp"``.

    Returns:
        ``(B, steps, *latent_shape)``; ``[:, 0]`` is ``a`` and ``[:, -1]`` is ``b`` exactly.
    """
    check_method(method)
    _check_pair(a, b)
    _check_steps(steps)
    cdtype = compute_dtype(a.dtype)
    t = torch.linspace(0.0, 1.0, steps, device=a.device, dtype=cdtype).unsqueeze(0)
    a2, b2 = a.flatten(1), b.flatten(1)
    if method == "slerp":
        out = slerp_rows(a2, b2, t, DOT_THRESHOLD)
    else:
        out = lerp_rows(a2, b2, t.expand(a.shape[0], -1))
    return out.reshape(a.shape[0], steps, *a.shape[1:])


def interpolation_grid_2d(
    top_left: Tensor,
    top_right: Tensor,
    bottom_left: Tensor,
    bottom_right: Tensor,
    rows: int,
    cols: int,
    method: str = "slerp",
) -> Tensor:
    """A 2-D sheet between four corner latents, for each of B sets of corners.

    Interpolates along the top and bottom edges, then down each column; the four corners
    are reproduced exactly.

    Args:
        top_left, top_right, bottom_left, bottom_right: ``(B, *latent_shape)``.
        rows, cols: grid size, each at least 2.
        method: ``"slerp"`` or ``"lerp"`` (lerp gives bilinear interpolation).

    Returns:
        ``(B, rows, cols, *latent_shape)``.
    """
    _check_steps(rows)
    _check_steps(cols)
    for other in (top_right, bottom_left, bottom_right):
        _check_pair(top_left, other)
    top = interpolation_path(top_left, top_right, cols, method)  # (B, cols, *L)
    bottom = interpolation_path(bottom_left, bottom_right, cols, method)
    batch, latent = top_left.shape[0], top_left.shape[1:]
    cols_path = interpolation_path(top.flatten(0, 1), bottom.flatten(0, 1), rows, method)  # (B*cols, rows, *L)
    return cols_path.reshape(batch, cols, rows, *latent).transpose(1, 2)


def _log_standard_gamma(alpha: float, n: int, generator: torch.Generator | None, device) -> Tensor:
    """log of Gamma(alpha, 1) samples (Marsaglia & Tsang, 2000), drawn with ``generator``."""
    boost = alpha < 1.0
    a = alpha + 1.0 if boost else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, dtype=torch.float64, device=device)
    todo = torch.arange(n, device=device)
    while todo.numel():
        m = todo.numel()
        x = torch.randn(m, generator=generator, dtype=torch.float64, device=device)
        u = torch.rand(m, generator=generator, dtype=torch.float64, device=device)
        v = (1.0 + c * x) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        out[todo[ok]] = math.log(d) + torch.log(v[ok].clamp_min(1e-300))
        todo = todo[~ok]
    if boost:  # Gamma(alpha) = Gamma(alpha + 1) * U ** (1 / alpha), in log space to avoid underflow
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        out = out + torch.log(u.clamp_min(1e-300)) / alpha
    return out


def sample_lambda(
    n: int,
    alpha: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw ``n`` mixing weights λ ~ Beta(alpha, alpha) with an explicit generator.

    ``torch.distributions.Beta`` takes no generator, so this draws two Gamma variates with
    ``generator`` and returns ``X / (X + Y)``, computed in log space so that small ``alpha``
    (U-shaped, mass near 0 and 1) neither underflows nor gives NaN.

    Args:
        n: number of samples.
        alpha: Beta concentration, > 0. ``alpha = 1`` is uniform on [0, 1].
        generator: a ``torch.Generator``; samples are drawn on its device.
        device, dtype: where and how the result is returned.
    """
    non_negative_int(n, "n")
    alpha = positive_number(alpha, "alpha")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    log_x = _log_standard_gamma(alpha, n, generator, gen_device)
    log_y = _log_standard_gamma(alpha, n, generator, gen_device)
    lam = torch.sigmoid(log_x - log_y)
    return lam.to(device=device if device is not None else gen_device, dtype=dtype)
