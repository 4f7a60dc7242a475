"""lerp / slerp / paths / 2-D grids / λ sampling.

The first group are regression tests for the defects of the slerp snippets copied through
diffusers' community pipelines; the reference below reproduces that snippet.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentmix import interpolation_grid_2d, interpolation_path, lerp, sample_lambda, slerp
from latentmix.latent.interpolate import interpolate


def community_slerp(t, v0, v1, dot_threshold=0.9995):
    """The widely copied snippet (diffusers community pipelines), for contrast."""
    v0, v1 = v0.cpu().numpy(), v1.cpu().numpy()
    dot = np.sum(v0 * v1 / (np.linalg.norm(v0) * np.linalg.norm(v1)))
    if np.abs(dot) > dot_threshold:
        v2 = (1 - t) * v0 + t * v1
    else:
        theta_0 = np.arccos(dot)
        sin_theta_0 = np.sin(theta_0)
        theta_t = theta_0 * t
        s0 = np.sin(theta_0 - theta_t) / sin_theta_0
        s1 = np.sin(theta_t) / sin_theta_0
        v2 = s0 * v0 + s1 * v1
    return torch.from_numpy(v2)


def cos(x, y):
    return torch.nn.functional.cosine_similarity(x.flatten(1).double(), y.flatten(1).double(), dim=1)


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- regression tests for the copied snippets' defects ------------------------------------


def test_one_angle_per_row_not_per_batch():
    a, b = randn(6, 4, 4, 4, seed=1), randn(6, 4, 4, 4, seed=2)
    b[0] = a[0] * 3  # row 0 parallel, others not: a batch-wide angle gets every row wrong
    out = slerp(a, b, 0.5)
    rows = torch.cat([slerp(a[i : i + 1], b[i : i + 1], 0.5) for i in range(6)])
    torch.testing.assert_close(out, rows)
    batch_wide = community_slerp(0.5, a, b)
    assert not torch.allclose(out, batch_wide, atol=1e-3)


def test_dot_product_over_all_latent_dims_bisects_the_angle():
    a, b = randn(5, 3, 8, 8, seed=3), randn(5, 3, 8, 8, seed=4)
    mid = slerp(a, b, 0.5)
    theta = torch.arccos(cos(a, b))
    torch.testing.assert_close(cos(mid, a), torch.cos(theta / 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(cos(mid, b), torch.cos(theta / 2), atol=1e-5, rtol=0)


def test_identical_inputs_give_the_input_and_finite_gradients():
    a = randn(4, 16, seed=5).requires_grad_()
    out = slerp(a, a.detach().clone(), torch.tensor([0.0, 0.3, 0.7, 1.0]))
    torch.testing.assert_close(out, a.detach())
    out.sum().backward()
    assert torch.isfinite(a.grad).all()


def test_antipodal_midpoint_is_not_zero_and_keeps_the_norm():
    a = randn(3, 32, seed=6)
    path = interpolation_path(a, -a, 9)
    assert torch.isfinite(path).all()
    norms = path.norm(dim=-1)
    torch.testing.assert_close(norms, a.norm(dim=-1, keepdim=True).expand_as(norms), rtol=1e-5, atol=1e-5)
    mid = path[:, 4]
    assert cos(mid, a).abs().max() < 1e-5  # a quarter turn: orthogonal to both ends
    assert community_slerp(0.5, a[:1], -a[:1]).abs().max() < 1e-6  # the snippet collapses to zero


def test_antipodal_path_is_symmetric_and_deterministic():
    a = randn(2, 10, seed=7)
    fwd = slerp(a, -a, 0.3)
    torch.testing.assert_close(fwd, slerp(-a, a, 0.7), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fwd, slerp(a, -a, 0.3), rtol=0, atol=0)


def test_bfloat16_works_and_matches_float32():
    a, b = randn(8, 64, seed=8), randn(8, 64, seed=9)
    out = slerp(a.bfloat16(), b.bfloat16(), 0.25)
    assert out.dtype == torch.bfloat16
    ref = slerp(a.bfloat16().float(), b.bfloat16().float(), 0.25)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_float16_large_latents_do_not_overflow_the_norm():
    a = randn(4, 4, 64, 64, seed=10) * 300  # |a|^2 ~ 1.5e9, far beyond float16's 65504
    b = randn(4, 4, 64, 64, seed=11) * 300
    out = slerp(a.half(), b.half(), 0.5)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    ref = slerp(a.half().float(), b.half().float(), 0.5)
    torch.testing.assert_close(out.float(), ref, atol=0.5, rtol=2e-3)


def test_output_is_not_unit_norm_the_norm_is_interpolated():
    a, b = randn(4, 32, seed=12) * 2.0, randn(4, 32, seed=13) * 7.0
    t = torch.tensor([0.1, 0.4, 0.6, 0.9])
    out = slerp(a, b, t)
    expected = (1 - t) * a.norm(dim=1) + t * b.norm(dim=1)
    torch.testing.assert_close(out.norm(dim=1), expected, rtol=1e-5, atol=1e-5)


# --- behaviour -------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [lerp, slerp])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_endpoints_exact_and_dtype_preserved(fn, dtype):
    a, b = randn(5, 3, 4, seed=14, dtype=dtype), randn(5, 3, 4, seed=15, dtype=dtype)
    assert torch.equal(fn(a, b, 0.0), a) and torch.equal(fn(a, b, 1.0), b)
    assert fn(a, b, 0.5).dtype == dtype and fn(a, b, 0.5).shape == a.shape
    path = interpolation_path(a, b, 5, "slerp" if fn is slerp else "lerp")
    assert path.shape == (5, 5, 3, 4) and torch.equal(path[:, 0], a) and torch.equal(path[:, -1], b)


def test_zero_vector_falls_back_to_lerp_with_nonzero_midpoint():
    a, b = torch.zeros(2, 8), randn(2, 8, seed=16)
    torch.testing.assert_close(slerp(a, b, 0.5), 0.5 * b)
    assert torch.equal(slerp(torch.zeros(1, 4), torch.zeros(1, 4), 0.5), torch.zeros(1, 4))
    x = torch.zeros(2, 8, requires_grad=True)
    slerp(x, b, 0.3).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_per_row_t_and_gradients_match_finite_differences():
    a = randn(3, 5, seed=17, dtype=torch.float64).requires_grad_()
    b = randn(3, 5, seed=18, dtype=torch.float64).requires_grad_()
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y, s: slerp(x, y, s), (a, b, t))
    assert torch.autograd.gradcheck(lambda x, y, s: lerp(x, y, s), (a, b, t))


def test_lerp_matches_formula():
    a, b = randn(4, 3, seed=19), randn(4, 3, seed=20)
    t = torch.tensor([0.0, 0.25, 0.5, 2.0])
    torch.testing.assert_close(lerp(a, b, t), (1 - t[:, None]) * a + t[:, None] * b)


def test_path_matches_single_calls_and_interpolate_dispatches():
    a, b = randn(3, 6, seed=21), randn(3, 6, seed=22)
    path = interpolation_path(a, b, 4, "slerp")
    for i, t in enumerate(torch.linspace(0, 1, 4).tolist()):
        torch.testing.assert_close(path[:, i], slerp(a, b, t))
        torch.testing.assert_close(interpolate(a, b, t, "lerp"), lerp(a, b, t))


def test_grid_2d_corners_and_edges():
    corners = [randn(2, 6, seed=s) for s in range(23, 27)]
    grid = interpolation_grid_2d(*corners, rows=3, cols=5, method="slerp")
    assert grid.shape == (2, 3, 5, 6)
    for got, want in zip((grid[:, 0, 0], grid[:, 0, -1], grid[:, -1, 0], grid[:, -1, -1]), corners, strict=True):
        assert torch.equal(got, want)
    torch.testing.assert_close(grid[:, 0], interpolation_path(corners[0], corners[1], 5))
    bilinear = interpolation_grid_2d(*corners, rows=3, cols=3, method="lerp")
    torch.testing.assert_close(bilinear[:, 1, 1], sum(corners) / 4)


def test_works_on_meta_like_devices_via_device_preservation():
    a, b = randn(2, 4, seed=27), randn(2, 4, seed=28)
    assert slerp(a, b, 0.5).device == a.device


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: slerp(torch.zeros(2, 3), torch.zeros(2, 4), 0.5), "same shape"),
        (lambda: slerp(torch.zeros(3), torch.zeros(3), 0.5), r"\(B, \*latent_shape\)"),
        (lambda: slerp(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.float64), 0.5), "same dtype"),
        (lambda: slerp(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long), 0.5), "floating point"),
        (lambda: slerp(torch.ones(2, 3), torch.full((2, 3), float("nan")), 0.5), "b contains non-finite"),
        (lambda: lerp(torch.full((2, 3), float("inf")), torch.ones(2, 3), 0.5), "a contains non-finite"),
        (lambda: slerp(torch.ones(2, 3), torch.ones(2, 3), torch.ones(3)), r"shape \(2,\)"),
        (lambda: slerp(torch.ones(2, 3), torch.ones(2, 3), float("nan")), "t must be finite"),
        (lambda: slerp(torch.ones(2, 3), torch.ones(2, 3), "0.5"), "t must be a float"),
        (lambda: interpolation_path(torch.ones(2, 3), torch.ones(2, 3), 1), "steps must be >= 2"),
        (lambda: interpolation_path(torch.ones(2, 3), torch.ones(2, 3), 4, "cubic"), "method must be one of"),
        (lambda: sample_lambda(4, 0.0), "alpha must be"),
        (lambda: sample_lambda(-1, 1.0), "n must be"),
    ],
)
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_interpolators_do_not_mutate_inputs():
    a, b = randn(3, 5, seed=29), randn(3, 5, seed=30)
    a0, b0 = a.clone(), b.clone()
    slerp(a, b, 0.4), lerp(a, b, 0.4), interpolation_path(a, -a, 3)
    assert torch.equal(a, a0) and torch.equal(b, b0)


# --- λ sampling ------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_sample_lambda_matches_beta_moments_and_is_reproducible(alpha):
    lam = sample_lambda(40_000, alpha, generator=torch.Generator().manual_seed(0))
    assert lam.shape == (40_000,) and lam.dtype == torch.float32
    assert bool(((lam >= 0) & (lam <= 1)).all())
    var = 1 / (4 * (2 * alpha + 1))
    assert abs(float(lam.mean()) - 0.5) < 0.01
    assert abs(float(lam.var()) - var) < 0.01
    again = sample_lambda(40_000, alpha, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lam, again)
    assert not torch.equal(lam, sample_lambda(40_000, alpha, generator=torch.Generator().manual_seed(1)))


def test_sample_lambda_small_alpha_has_no_nan_and_is_u_shaped():
    lam = sample_lambda(10_000, 0.05, generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(lam).all()
    assert float(((lam < 0.05) | (lam > 0.95)).float().mean()) > 0.7


# --- properties (hypothesis) -----------------------------------------------------------------

pair_kind = st.sampled_from(["independent", "same", "scaled", "negated", "zero", "near"])


@st.composite
def pairs(draw):
    batch = draw(st.integers(1, 4))
    dim = draw(st.integers(2, 33))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    a = randn(batch, dim, seed=seed) * scale
    b = randn(batch, dim, seed=seed + 1) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    kinds = [draw(pair_kind) for _ in range(batch)]
    for i, kind in enumerate(kinds):
        if kind == "same":
            b[i] = a[i]
        elif kind == "scaled":
            b[i] = a[i] * 2.5
        elif kind == "negated":
            b[i] = -a[i] * draw(st.sampled_from([1.0, 0.5]))
        elif kind == "zero":
            (a if draw(st.booleans()) else b)[i] = 0
        elif kind == "near":
            b[i] = a[i] + 1e-4 * scale * randn(dim, seed=seed + 2)
    t = torch.tensor([draw(st.floats(0, 1)) for _ in range(batch)])
    return a, b, t


@settings(max_examples=150, deadline=None)
@given(pairs())
def test_property_finite_and_endpoints(data):
    a, b, t = data
    assert torch.isfinite(slerp(a, b, t)).all()
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)


@settings(max_examples=150, deadline=None)
@given(pairs())
def test_property_symmetry(data):
    a, b, t = data
    scale = torch.maximum(a.norm(dim=1), b.norm(dim=1)).max().item() + 1e-12
    torch.testing.assert_close(slerp(a, b, t), slerp(b, a, 1 - t), atol=2e-4 * scale, rtol=1e-4)


@settings(max_examples=100, deadline=None)
@given(pairs())
def test_property_batch_independence(data):
    a, b, t = data
    out = slerp(a, b, t)
    for i in range(a.shape[0]):
        torch.testing.assert_close(
            out[i : i + 1],
            slerp(a[i : i + 1], b[i : i + 1], t[i : i + 1]),
            atol=1e-6 * (1 + a[i].norm().item() + b[i].norm().item()),
            rtol=1e-5,
        )


@settings(max_examples=150, deadline=None)
@given(pairs())
def test_property_norm_moves_linearly_between_endpoint_norms(data):
    a, b, t = data
    out = slerp(a, b, t)
    expected = (1 - t) * a.norm(dim=1) + t * b.norm(dim=1)
    got = out.norm(dim=1)
    tol = 1e-4 * (a.norm(dim=1) + b.norm(dim=1)) + 1e-12
    # equal on the great circle; lerp fallback (near-parallel rows) may dip by at most 1 - cos(1.8°)
    assert bool((got <= expected + tol).all())
    assert bool((got >= expected * 0.999 - tol).all())


@settings(max_examples=60, deadline=None)
@given(pairs())
def test_property_gradients_are_finite(data):
    a, b, t = data
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    slerp(a, b, t).square().sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_slerp_keeps_gaussian_latents_on_their_shell_unlike_lerp():
    a, b = randn(256, 512, seed=31), randn(256, 512, seed=32)
    shell = math.sqrt(512)
    assert abs(float(slerp(a, b, 0.5).norm(dim=1).mean()) / shell - 1) < 0.02
    assert float(lerp(a, b, 0.5).norm(dim=1).mean()) / shell < 0.75  # ~1/sqrt(2): off the shell
