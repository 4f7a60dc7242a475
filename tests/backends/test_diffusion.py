"""Fixed-point / exact DDIM inversion and the DPM-Solver++ sampler of the latent-diffusion backend (tiny real
components), and the round trip on the embedded digits-ldm."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from latentmix.backends import LatentDiffusionBackend, load_backend
from latentmix.data import DigitsDataset

PROMPTS = ["a red square", "a blue circle", "", "a green triangle"]


@pytest.fixture
def ldm(tiny_sd_pipeline) -> LatentDiffusionBackend:
    return LatentDiffusionBackend.from_pipeline(tiny_sd_pipeline, num_inference_steps=6)


def clean_latents(backend, n=4, seed=0):
    return torch.randn(n, *backend.latent_shape, generator=torch.Generator().manual_seed(seed))


def round_trip_gap(backend, z0, cond, **inversion) -> float:
    """Relative error of sampling back from the inverted latents (0: the sampler's exact inverse)."""
    with torch.inference_mode():
        back = backend.denoise(backend.invert(z0, cond, **inversion), cond)
    return float((back - z0).norm() / z0.norm())


@pytest.mark.parametrize("guidance", [1.0, 2.5])
def test_refined_inversion_is_the_samplers_inverse_and_reports_its_cost(ldm, guidance):
    z0, cond = clean_latents(ldm), ldm.encode_text(PROMPTS)
    ldm.guidance_scale = guidance
    plain = round_trip_gap(ldm, z0, cond)
    assert ldm.last_inversion_calls == 6
    one = round_trip_gap(ldm, z0, cond, inversion="fixed-point", inversion_iterations=1)
    assert ldm.last_inversion_calls == 12
    three = round_trip_gap(ldm, z0, cond, inversion="fixed-point", inversion_iterations=3)
    assert ldm.last_inversion_calls == 24
    exact = round_trip_gap(ldm, z0, cond, inversion="exact", inversion_iterations=100)
    assert 6 < ldm.last_inversion_calls <= 6 * 101
    assert plain > one > three > exact and exact < 1e-3 < plain


def test_plain_ddim_inversion_is_unchanged(ldm):
    """inversion="ddim" still runs diffusers' DDIMInverseScheduler step for step."""
    from diffusers import DDIMInverseScheduler

    z0, cond = clean_latents(ldm, 2), ldm.encode_text(PROMPTS[:2])
    inverse = DDIMInverseScheduler.from_config(ldm.scheduler.config)
    inverse.set_timesteps(6)
    x = z0.clone()
    with torch.inference_mode():
        for t in inverse.timesteps:
            x = inverse.step(ldm.unet(x, t, encoder_hidden_states=cond).sample, t, x).prev_sample
        torch.testing.assert_close(ldm.invert(z0, cond), x)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_exact_inversion_for_other_prediction_types(tiny_sd_pipeline, prediction_type):
    scheduler = DDIMScheduler.from_config(tiny_sd_pipeline.scheduler.config, prediction_type=prediction_type)
    tiny_sd_pipeline.scheduler = scheduler
    ldm = LatentDiffusionBackend.from_pipeline(tiny_sd_pipeline, num_inference_steps=5)
    z0, cond = clean_latents(ldm, 3), ldm.encode_text(PROMPTS[:3])
    assert round_trip_gap(ldm, z0, cond, inversion="exact") < 1e-3 < round_trip_gap(ldm, z0, cond)


def test_dpm_solver_decode_is_diffusers_own_sampler(ldm, tiny_sd_pipeline):
    z = ldm.sample(2, generator=torch.Generator().manual_seed(0))
    pipe = tiny_sd_pipeline
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(
        pipe.scheduler.config, algorithm_type="dpmsolver++", solver_order=2
    )
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(
        prompt=PROMPTS[:2], latents=z.clone(), num_inference_steps=5, guidance_scale=1.0, output_type="pt",
        height=16, width=16,
    ).images  # fmt: skip
    with torch.inference_mode():
        ours = ldm.decode(z, texts=PROMPTS[:2], num_inference_steps=5, sampler="dpm-solver")
        ddim = ldm.decode(z, texts=PROMPTS[:2], num_inference_steps=5)
    torch.testing.assert_close((ours + 1) / 2, ref.clamp(0, 1), atol=1e-4, rtol=0)
    assert not torch.allclose(ours, ddim, atol=1e-3)


def test_options_are_checked_and_refused_by_other_backends(ldm, tiny_vae):
    z0, cond = clean_latents(ldm, 1), ldm.encode_text([""])
    with pytest.raises(ValueError, match="inversion must be one of ddim, fixed-point, exact"):
        ldm.invert(z0, cond, inversion="newton")
    with pytest.raises(ValueError, match="sampler must be one of ddim, dpm-solver, euler"):
        ldm.denoise(z0, cond, sampler="heun")
    with pytest.raises(ValueError, match="inversion_iterations must be an int >= 0"):
        ldm.invert(z0, cond, inversion="fixed-point", inversion_iterations=-1)
    options = ldm.call_options(inversion="exact", inversion_iterations=4, sampler="dpm-solver")
    assert options.encode_kwargs() == {"inversion": "exact", "inversion_iterations": 4}
    assert options.decode_kwargs() == {"sampler": "dpm-solver"}
    with pytest.raises(ValueError, match="inversion must be one of ddim, fixed-point, exact"):
        ldm.call_options(inversion="newton")
    plain = tiny_vae.call_options(inversion="ddim", sampler="ddim", refine_steps=0)  # every backend's defaults
    assert plain.encode_kwargs() == {} and plain.decode_kwargs() == {}
    with pytest.raises(ValueError, match="inversion applies to diffusion backends; 'vae' encodes with amortized"):
        tiny_vae.call_options(inversion="fixed-point")
    with pytest.raises(ValueError, match="sampler applies to diffusion backends; 'vae' has no sampler"):
        tiny_vae.call_options(sampler="dpm-solver")


def test_digits_ldm_round_trip_reaches_the_autoencoders_error_in_few_steps():
    """The issue's target on real test digits: 10 steps within 1.2x and 20 steps within 1.1x of the
    autoencoder's own error (plain DDIM inversion: about 2x and 1.4x)."""
    ldm = load_backend("digits-ldm")
    test = DigitsDataset("test")
    x = test.images(range(0, len(test), 3))
    cond = ldm.condition([test.texts[i] for i in range(0, len(test), 3)])
    with torch.inference_mode():
        ae = float((ldm.autoencoder.reconstruct(x) - x).pow(2).mean())

        def ratio(steps, **inversion):
            z = ldm.encode(x, cond=cond, num_inference_steps=steps, **inversion)
            return float((ldm.decode(z, cond=cond, num_inference_steps=steps) - x).pow(2).mean()) / ae

        assert ratio(10) > 1.5
        assert ratio(10, inversion="fixed-point", inversion_iterations=2) <= 1.2
        assert ratio(20, inversion="fixed-point", inversion_iterations=1) <= 1.1
