"""Keyframe paths (piecewise lerp/slerp and the C¹ spherical spline) and even frame spacing: pure torch."""

from __future__ import annotations

import pytest
import torch

from latentmix.latent.interpolate import interpolation_path
from latentmix.latent.keyframes import keyframe_path, keyframe_path_at, keyframe_positions
from latentmix.latent.spacing import allocate_frames, even_positions, spacing_cv

METHODS = ["spline", "slerp", "lerp"]


def keyframes(b=3, k=5, shape=(4, 3, 3), seed=0, dtype=torch.float32):
    return torch.randn(b, k, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("closed", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_frames_pass_exactly_through_every_keyframe(method, closed, dtype):
    kf = keyframes(dtype=dtype)
    path = keyframe_path(kf, 7, method, closed=closed)
    k = kf.shape[1]
    assert path.shape == (3, (k if closed else k - 1) * 7 + (0 if closed else 1), 4, 3, 3) and path.dtype == dtype
    assert torch.equal(path[:, ::7][:, :k], kf)  # bit for bit
    assert torch.isfinite(path.float()).all()


@pytest.mark.parametrize("closed", [False, True])
def test_spline_tangent_is_continuous_and_slerp_has_kinks(closed):
    """One-sided difference quotients at every inner keyframe agree for the spline (their gap shrinks with h,
    as for a C¹ curve) and disagree for piecewise slerp."""
    kf = keyframes(b=2, k=5, dtype=torch.float64)
    inner = range(0 if closed else 1, 5 if closed else 4)

    def kink(method, h):
        gaps = []
        for k in inner:
            lo = k - h if k else 5 - h  # closed: keyframe 0 (= position 5) is reached by segment 4
            s = torch.tensor([lo, float(k), k + h], dtype=torch.float64)
            x = keyframe_path_at(kf, s, method, closed=closed).flatten(2)
            left, right = (x[:, 1] - x[:, 0]) / h, (x[:, 2] - x[:, 1]) / h
            gaps.append(((left - right).norm(dim=1) / right.norm(dim=1)).max())
        return float(torch.stack(gaps).max())

    assert kink("spline", 1e-4) < 5e-3
    assert kink("spline", 1e-5) < 0.2 * kink("spline", 1e-4)  # O(h): the tangents agree in the limit
    assert kink("slerp", 1e-5) > 0.1


def test_spline_through_parallel_and_antipodal_neighbours_has_no_nan():
    a = torch.randn(1, 1, 16, generator=torch.Generator().manual_seed(1))
    kf = torch.cat([a, a, -a, 2 * a, -a, a * 1e-3], dim=1)  # repeats, antipodes, a tiny norm
    for method in METHODS:
        for closed in (False, True):
            path = keyframe_path(kf, 9, method, closed=closed)
            assert torch.isfinite(path).all()
            assert torch.equal(path[:, ::9][:, :6], kf)
    # an antipodal segment turns through an orthogonal direction instead of through zero
    mid = keyframe_path_at(kf, torch.tensor([1.5]), "spline")
    assert float(mid.norm()) > 0.5 * float(a.norm())


def test_spline_norm_stays_between_keyframe_norms_and_on_a_shell():
    kf = keyframes(b=4, k=6, shape=(64,))
    path = keyframe_path(kf, 16, "spline")
    norms, knots = path.norm(dim=-1), kf.norm(dim=-1)
    for j in range(5):
        seg = norms[:, j * 16 : (j + 1) * 16 + 1]
        lo = torch.minimum(knots[:, j], knots[:, j + 1])[:, None]
        hi = torch.maximum(knots[:, j], knots[:, j + 1])[:, None]
        assert bool(((seg >= lo - 1e-4) & (seg <= hi + 1e-4)).all())
    unit = kf / kf.norm(dim=-1, keepdim=True) * 8.0  # every keyframe on one shell: the whole path stays on it
    torch.testing.assert_close(keyframe_path(unit, 16, "spline").norm(dim=-1), torch.full((4, 81), 8.0))


def test_two_keyframes_with_slerp_are_the_plain_walk_and_paths_are_independent():
    kf = keyframes(b=3, k=2)
    torch.testing.assert_close(keyframe_path(kf, 8, "slerp"), interpolation_path(kf[:, 0], kf[:, 1], 9, "slerp"))
    many = keyframe_path(keyframes(b=3, k=4), 5, "spline")
    for i in range(3):
        torch.testing.assert_close(keyframe_path(keyframes(b=3, k=4)[i : i + 1], 5, "spline"), many[i : i + 1])


def test_positions_and_bad_input():
    assert keyframe_positions(3, 4).tolist() == [i / 4 for i in range(9)]
    assert len(keyframe_positions(3, 4, closed=True)) == 12
    kf = keyframes()
    with pytest.raises(ValueError, match="at least 2 keyframes"):
        keyframe_path(kf[:, :1], 4)
    with pytest.raises(ValueError, match=r"s must lie in \[0, 4\]"):
        keyframe_path_at(kf, torch.tensor([4.5]))
    with pytest.raises(ValueError, match="method must be one of"):
        keyframe_path(kf, 4, "cubic")
    with pytest.raises(ValueError, match="non-finite"):
        keyframe_path(kf * float("nan"), 4)
    with pytest.raises(ValueError, match="frames must be a positive int"):
        keyframe_path(kf, 0)
    with pytest.raises(ValueError, match=r"shape \(B, K, \*latent_shape\)"):
        keyframe_path(torch.randn(4, 8), 3)


def test_even_positions_invert_the_cumulative_distance():
    """A path whose features move as s**3 between knots: uniform s is very uneven, the re-timed one is even."""
    s = torch.linspace(0, 2, 401, dtype=torch.float64)
    seg = s.floor().clamp(max=1)
    u = s - seg
    f = torch.stack([seg * 1.0 + u**3 * torch.where(seg == 0, 1.0, 3.0), torch.zeros_like(s)], dim=-1)[None]
    uniform = spacing_cv(f[:, ::25])
    positions = even_positions(s, f, 16, knots=[0.0, 1.0, 2.0])
    assert positions[0, 0] == 0 and positions[0, -1] == 2 and 1.0 in positions[0].tolist()  # knots stay frames
    g = positions[0]
    segr = g.floor().clamp(max=1)
    fg = segr + (g - segr) ** 3 * torch.where(segr == 0, 1.0, 3.0)
    steps = fg[1:] - fg[:-1]
    assert float(uniform) > 0.8 and float(steps.std(correction=0) / steps.mean()) < 0.05
    assert (positions[0, 1:] > positions[0, :-1]).all()
    assert allocate_frames([1.0, 3.0], 16) == [4, 12] and allocate_frames([0.0, 0.0], 5) in ([3, 2], [2, 3])
    with pytest.raises(ValueError, match="knots"):
        even_positions(s, f, 16, knots=[0.0, 0.33333, 2.0])
