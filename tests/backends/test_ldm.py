"""The latent-diffusion backend with tiny real components: Stable Diffusion layout, DDIM, guidance."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

from latentmix.backends import CallOptions, LatentBackend, LatentDiffusionBackend, load_backend
from latentmix.jobs.grid import decode_walk

PROMPTS = ["a red square", "a blue circle", "", "a green triangle"]


@pytest.fixture
def ldm(tiny_sd_pipeline) -> LatentDiffusionBackend:
    return LatentDiffusionBackend.from_pipeline(tiny_sd_pipeline, num_inference_steps=4)


def noise(backend, n, seed=0):
    return backend.sample(n, generator=torch.Generator().manual_seed(seed))


def rgb(n, seed=0):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_contract_shapes_and_capabilities(ldm):
    assert isinstance(ldm, LatentBackend)
    assert (ldm.image_size, ldm.image_channels, ldm.latent_shape) == (16, 3, (4, 8, 8))
    assert ldm.supports_text_condition and ldm.requires_text and ldm.latent_prior == "gaussian"
    assert ldm.encoder_kind == "ddim-inversion" and ldm.default_method == "slerp"
    assert ldm.encode_text(PROMPTS).shape == (4, 12, 32)
    with torch.inference_mode():
        out = ldm.decode(noise(ldm, 4), texts=PROMPTS)
    assert out.shape == (4, 3, 16, 16) and out.abs().max() <= 1


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_decode_matches_the_diffusers_pipeline(ldm, tiny_sd_pipeline, guidance):
    """Same components, latents, prompts and DDIM steps: our batched decode is diffusers' own sampler."""
    z = noise(ldm, 2)
    pipe = tiny_sd_pipeline
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(
        prompt=PROMPTS[:2],
        latents=z.clone(),
        num_inference_steps=4,
        guidance_scale=guidance,
        output_type="pt",
        height=16,
        width=16,
    ).images
    with torch.inference_mode():
        ours = ldm.decode(z, texts=PROMPTS[:2], guidance_scale=guidance)
    torch.testing.assert_close((ours + 1) / 2, ref.clamp(0, 1), atol=1e-4, rtol=0)


def test_ddim_inversion_mirrors_sampling(ldm):
    """With a UNet that predicts zero noise, DDIM inversion then sampling is the identity on latents,
    so the round trip equals the autoencoder's own reconstruction: no drift from mismatched steps."""
    with torch.no_grad():
        ldm.unet.conv_out.weight.zero_()
        ldm.unet.conv_out.bias.zero_()
    x = rgb(3)
    with torch.inference_mode():
        torch.testing.assert_close(
            ldm.reconstruct(x, texts=PROMPTS[:3], num_inference_steps=7),
            ldm.autoencoder.reconstruct(x),
            atol=1e-5,
            rtol=0,
        )


@pytest.mark.parametrize("strength", [0.25, 0.5])
def test_partial_inversion_mirrors_partial_sampling(ldm, strength):
    """``strength`` inverts the first int(steps * strength) DDIM steps and samples back over the same ones: with a
    zero-noise UNet the round trip is the autoencoder's reconstruction, and only those UNet calls are made."""
    with torch.no_grad():
        ldm.unet.conv_out.weight.zero_()
        ldm.unet.conv_out.bias.zero_()
    x = rgb(3)
    with torch.inference_mode():
        z = ldm.encode(x, texts=PROMPTS[:3], num_inference_steps=8, strength=strength)
        assert ldm.last_inversion_calls == int(8 * strength)
        back = ldm.decode(z, texts=PROMPTS[:3], num_inference_steps=8, strength=strength)
    torch.testing.assert_close(back, ldm.autoencoder.reconstruct(x), atol=1e-5, rtol=0)


def test_partial_sampling_is_the_tail_of_full_sampling(ldm):
    """Sampling at ``strength`` from a latent at that noise level runs the same DDIM steps as the end of a full
    run: stopping a full run after its first steps and finishing with ``strength`` gives the full run's result."""
    cond, steps = ldm.encode_text(PROMPTS[:2]), 8
    with torch.inference_mode():
        full = ldm.denoise(noise(ldm, 2), cond, num_inference_steps=steps)
        scheduler = DDIMScheduler.from_config(ldm.scheduler.config)
        scheduler.set_timesteps(steps)
        x = noise(ldm, 2)
        for t in scheduler.timesteps[: steps // 2]:  # the first half by hand
            x = scheduler.step(ldm.predict_noise(x, t, cond, 1.0), t, x).prev_sample
        tail = ldm.denoise(x, cond, num_inference_steps=steps, strength=0.5)
    torch.testing.assert_close(tail, full, atol=1e-5, rtol=0)


def test_batched_walk_equals_one_call_per_frame(ldm):
    za, zb = noise(ldm, 2, 0), noise(ldm, 2, 1)
    ca, cb = ldm.encode_text(PROMPTS[:2]), ldm.encode_text(PROMPTS[2:])
    with torch.inference_mode():
        images, path = decode_walk(ldm, za, zb, 3, "slerp", cond_a=ca, cond_b=cb)
        t = torch.linspace(0, 1, 3)
        for p in range(2):
            for k in range(3):
                cond = torch.lerp(ca[p : p + 1], cb[p : p + 1], t[k])
                frame = ldm.decode(path[p, k : k + 1], cond=cond)
                torch.testing.assert_close(images[p, k : k + 1], frame, atol=2e-5, rtol=0)
    assert torch.equal(path[:, 0], za) and torch.allclose(path[:, -1], zb, atol=1e-6)


def test_chunking_does_not_change_results(ldm):
    z = noise(ldm, 5)
    texts = [*PROMPTS, "x"]
    with torch.inference_mode():
        whole = ldm.decode(z, texts=texts, guidance_scale=2.0)
        ldm.batch_size = 2
        torch.testing.assert_close(ldm.decode(z, texts=texts, guidance_scale=2.0), whole, atol=2e-5, rtol=0)


def test_guidance_changes_samples_and_one_is_the_conditional_model(ldm):
    z = noise(ldm, 2)
    with torch.inference_mode():
        plain = ldm.decode(z, texts=PROMPTS[:2], guidance_scale=1.0)
        guided = ldm.decode(z, texts=PROMPTS[:2], guidance_scale=4.0)
        x, t, cond = z.float(), torch.tensor(500), ldm.encode_text(PROMPTS[:2])
        eps = ldm.predict_noise(x, t, cond, 4.0)
        eps_c = ldm.unet(x, t, encoder_hidden_states=cond).sample
        eps_u = ldm.unet(x, t, encoder_hidden_states=ldm.encode_text(["", ""])).sample
    assert not torch.allclose(plain, guided)
    torch.testing.assert_close(eps, eps_u + 4.0 * (eps_c - eps_u), atol=1e-5, rtol=0)


def test_pipeline_directory_loads_and_saves_in_the_same_layout(ldm, tiny_sd_pipeline, tmp_path):
    tiny_sd_pipeline.save_pretrained(tmp_path / "sd", safe_serialization=True)
    loaded = load_backend(tmp_path / "sd", num_inference_steps=4)
    assert (
        isinstance(loaded, LatentDiffusionBackend) and loaded.text_max_length == 12 and not loaded.text_attention_mask
    )
    z = noise(ldm, 2)
    with torch.inference_mode():
        ref = ldm.decode(z, texts=PROMPTS[:2])
        torch.testing.assert_close(loaded.decode(z, texts=PROMPTS[:2]), ref)
    loaded.save_pretrained(tmp_path / "saved")
    for part in ("model_index.json", "config.json", "unet", "vae", "scheduler", "text_encoder", "tokenizer"):
        assert (tmp_path / "saved" / part).exists(), part
    again = load_backend(tmp_path / "saved")
    assert again.num_inference_steps == 4
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "saved", safety_checker=None)  # diffusers reads it too
    assert type(pipe.unet).__name__ == "UNet2DConditionModel"
    with torch.inference_mode():
        torch.testing.assert_close(again.decode(z, texts=PROMPTS[:2]), ref)


@pytest.mark.parametrize("missing", ["unet", "tokenizer", "text_encoder", "vae"])
def test_pipeline_directory_missing_a_component_names_it(tiny_sd_pipeline, tmp_path, missing):
    tiny_sd_pipeline.save_pretrained(tmp_path / "sd", safe_serialization=True)
    shutil.rmtree(tmp_path / "sd" / missing)
    with pytest.raises(ValueError, match=f"missing the component.*{missing}"):
        load_backend(tmp_path / "sd")


def test_references_are_saved_instead_of_copies(tmp_path):
    digits = load_backend("digits-ldm")
    assert digits.autoencoder_ref == "digits-vae" and digits.text_encoder_ref == "all-MiniLM-L6-v2"
    digits.save_pretrained(tmp_path / "ldm")
    config = json.loads((tmp_path / "ldm" / "config.json").read_text())
    assert config["vae"] == "digits-vae" and config["text_encoder"] == "all-MiniLM-L6-v2"
    assert not (tmp_path / "ldm" / "vae").exists() and not (tmp_path / "ldm" / "model_index.json").exists()
    assert sum(f.stat().st_size for f in (tmp_path / "ldm").rglob("*") if f.is_file()) < 5 * 2**20


def test_low_precision_paths_stay_finite(ldm):
    ldm.to(dtype=torch.bfloat16)
    with torch.inference_mode():
        z = ldm.encode(rgb(2).bfloat16(), texts=PROMPTS[:2], num_inference_steps=3)
        out = ldm.decode(z, texts=PROMPTS[:2], guidance_scale=2.0, num_inference_steps=3)
    assert z.dtype == torch.bfloat16 and out.dtype == torch.float32  # the force_upcast VAE decodes in float32
    assert bool(torch.isfinite(out.float()).all())


def test_float16_keeps_a_force_upcast_vae_in_float32(ldm):
    assert ldm.autoencoder.vae.config.force_upcast
    ldm.to(dtype=torch.float16)
    assert ldm.unet.dtype == torch.float16 and ldm.autoencoder.vae.dtype == torch.float32


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: b.decode(noise(b, 2)), "texts: .*text-conditioned"),
        (lambda b: b.decode(noise(b, 2), texts=["one"]), "texts: .*one text per item \\(2\\)"),
        (lambda b: b.decode(noise(b, 2), texts="a b"), "texts: .*list"),
        (lambda b: b.encode(rgb(2)), "texts"),
        (lambda b: b.decode(torch.zeros(2, 4, 4, 4), texts=["", ""]), "latents must have shape \\(N, 4, 8, 8\\)"),
        (
            lambda b: b.decode(noise(b, 1), texts=[""], num_inference_steps=0),
            "num_inference_steps must be a positive int",
        ),
        (
            lambda b: b.decode(noise(b, 1), texts=[""], num_inference_steps=-3),
            "num_inference_steps must be a positive int",
        ),
        (
            lambda b: b.decode(noise(b, 1), texts=[""], guidance_scale=0.5),
            "guidance_scale must be a finite number >= 1",
        ),
        (lambda b: b.decode(noise(b, 1), cond=torch.zeros(1, 5, 32)), "cond must have shape \\(1, 12, 32\\)"),
        (lambda b: b.decode(noise(b, 1), texts=[""], cond=b.encode_text([""])), "texts or cond, not both"),
        (lambda b: b.call_options(guidance_scale=0.9), "guidance_scale must be a finite number >= 1"),
        (lambda b: b.call_options(strength=0), "strength must be a number in \\(0, 1\\]"),
        (lambda b: b.call_options(strength=0.2), "strength 0.2 keeps no step of 4"),
        (lambda b: b.call_options(strength=0.5, sampler="dpm-solver"), "strength below 1 needs sampler='ddim'"),
        (
            lambda b: b.call_options(CallOptions(strength=0.1, names={"strength": "path_strength"})),
            "path_strength 0.1 keeps no step of 4",
        ),
        (lambda b: b.decode(noise(b, 1), texts=[""], strength=1.5), "strength must be a number in \\(0, 1\\]"),
        (lambda b: b.decode(noise(b, 1), texts=[""], strength=0.2), "strength 0.2 keeps no step of 4"),
        (
            lambda b: b.decode(noise(b, 1), texts=[""], strength=0.5, sampler="dpm-solver"),
            "strength below 1 needs sampler='ddim'",
        ),
        (
            lambda b: b.encode(rgb(1), texts=[""], strength=0.5, inversion="fixed-point"),
            "strength below 1 needs inversion='ddim'",
        ),
    ],
)
def test_bad_input_is_a_clear_error(ldm, call, message):
    with pytest.raises(ValueError, match=message):
        call(ldm)


def test_unconditional_backends_refuse_texts_and_sampler_settings(tiny_vae):
    with pytest.raises(ValueError, match="not text-conditioned"):
        tiny_vae.decode(torch.zeros(1, 6), texts=["a"])
    with pytest.raises(ValueError, match="guidance_scale applies to diffusion backends; 'vae' has no sampler"):
        tiny_vae.call_options(guidance_scale=2.0)
    with pytest.raises(ValueError, match="num_inference_steps and strength apply to diffusion backends"):
        tiny_vae.call_options(num_inference_steps=4, strength=0.5)


def test_mismatched_components_are_refused(tiny_sd_pipeline, tiny_vae):
    from latentmix.data.text import TextEncoder

    te = TextEncoder(tiny_sd_pipeline.text_encoder, tiny_sd_pipeline.tokenizer)
    with pytest.raises(ValueError, match="latents .* hold 6"):
        LatentDiffusionBackend(tiny_vae, tiny_sd_pipeline.unet, tiny_sd_pipeline.scheduler, te)
    with pytest.raises(TypeError, match="unet must be a diffusers UNet2DConditionModel"):
        LatentDiffusionBackend(tiny_vae, tiny_sd_pipeline.vae, tiny_sd_pipeline.scheduler, te)
