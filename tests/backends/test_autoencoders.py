"""diffusers' AutoencoderTiny (TAESD) and VQModel behind the backend contract (AutoencoderKL: test_backends)."""

import json

import pytest
import torch

from latentmix import interpolate
from latentmix.backends import (
    AutoencoderTinyBackend,
    LatentDiffusionBackend,
    VQModelBackend,
    load_backend,
)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- AutoencoderTiny --------------------------------------------------------------------------


def test_taesd_latents_are_the_encoder_output_scaled_and_decode_inverts_the_scaling(tiny_autoencoder_tiny):
    tiny_autoencoder_tiny.register_to_config(scaling_factor=2.0, shift_factor=0.1)
    backend = AutoencoderTinyBackend(tiny_autoencoder_tiny, image_size=16)
    assert backend.latent_shape == (4, 8, 8) and backend.latent_prior is None and backend.default_method == "slerp"
    x = images(3)
    with torch.inference_mode():
        raw = tiny_autoencoder_tiny.encode(x).latents
        z = backend.encode(x)
        torch.testing.assert_close(z, (raw - 0.1) * 2.0)
        torch.testing.assert_close(backend.decode(z), tiny_autoencoder_tiny.decode(raw).sample.clamp(-1, 1))
    with pytest.raises(ValueError, match="no generative prior"):
        backend.sample(2)


def test_taesd_loads_from_a_folder_a_pipeline_subfolder_and_its_own_save(tiny_taesd_backend, tmp_path):
    tiny_taesd_backend.vae.save_pretrained(tmp_path / "pipe" / "vae")
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    x = images(2)
    with torch.inference_mode():
        ref = tiny_taesd_backend.encode(x)
        for loaded in (
            load_backend(tmp_path / "pipe" / "vae", image_size=16),
            load_backend(tmp_path / "pipe", subfolder="vae", image_size=16),
        ):
            assert isinstance(loaded, AutoencoderTinyBackend)
            torch.testing.assert_close(loaded.encode(x), ref)
        tiny_taesd_backend.save_pretrained(tmp_path / "saved")
        again = load_backend(tmp_path / "saved")
        assert isinstance(again, AutoencoderTinyBackend) and again.image_size == 16
        torch.testing.assert_close(again.decode(ref), tiny_taesd_backend.decode(ref))
    with pytest.raises(ValueError, match="inside the model directory"):
        load_backend(tmp_path / "pipe", subfolder="../pipe/vae")


def test_a_stable_diffusion_pipeline_with_a_taesd_decoder_is_a_latent_diffusion_backend(
    tiny_sd_pipeline, tiny_autoencoder_tiny, tmp_path
):
    tiny_sd_pipeline.vae = tiny_autoencoder_tiny
    ldm = LatentDiffusionBackend.from_pipeline(tiny_sd_pipeline, num_inference_steps=2)
    assert isinstance(ldm.first_stage, AutoencoderTinyBackend) and ldm.image_size == 16
    ldm.save_pretrained(tmp_path / "ldm")
    index = json.loads((tmp_path / "ldm" / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", "AutoencoderTiny"]
    loaded = load_backend(tmp_path / "ldm")
    noise = ldm.sample(2, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(loaded.decode(noise, texts=["a", "b"]), ldm.decode(noise, texts=["a", "b"]))


# --- VQModel ----------------------------------------------------------------------------------


def test_vq_latents_are_taken_before_quantization(tiny_vq_model, tiny_vq_backend):
    backend = tiny_vq_backend
    assert backend.latent_shape == (4, 8, 8) and backend.default_method == "lerp" and backend.codebook_size == 32
    x = images(3)
    with torch.inference_mode():
        z = backend.encode(x)
        torch.testing.assert_close(z, tiny_vq_model.encode(x).latents * 0.5)
        q = backend.quantize(z)
    assert not torch.allclose(z, q)  # the latents are continuous, not codebook entries
    codebook = tiny_vq_model.quantize.embedding.weight * 0.5  # (32, 4)
    vectors = q.permute(0, 2, 3, 1).reshape(-1, 4)
    assert bool((torch.cdist(vectors, codebook).min(1).values < 1e-5).all())  # every quantized vector is a code


def test_vq_decode_requantizes_by_default_and_can_decode_continuous_latents(tiny_vq_model, tmp_path):
    requant, continuous = VQModelBackend(tiny_vq_model), VQModelBackend(tiny_vq_model, requantize=False)
    a, b = images(2, seed=1).chunk(2)
    with torch.inference_mode():
        za, zb = requant.encode(a), requant.encode(b)
        mid = interpolate(za, zb, 0.5, "lerp")
        # re-quantizing: the midpoint decodes as its nearest codes do
        torch.testing.assert_close(requant.decode(mid), continuous.decode(requant.quantize(mid)))
        torch.testing.assert_close(requant.decode(za), tiny_vq_model.decode(za / 0.5).sample.clamp(-1, 1))
        # not re-quantizing: the continuous midpoint itself is decoded
        torch.testing.assert_close(
            continuous.decode(mid), tiny_vq_model.decode(mid / 0.5, force_not_quantize=True).sample.clamp(-1, 1)
        )
        assert not torch.allclose(continuous.decode(mid), requant.decode(mid))
        # a walk without re-quantizing changes the image at every step
        path = torch.stack([interpolate(za, zb, t, "lerp") for t in torch.linspace(0, 1, 9)])[:, 0]
        smooth = continuous.decode(path)
        assert bool(((smooth[1:] - smooth[:-1]).abs().amax((1, 2, 3)) > 0).all())
    continuous.save_pretrained(tmp_path / "vq")
    assert load_backend(tmp_path / "vq").requantize is False
    tiny_vq_model.save_pretrained(tmp_path / "plain")
    assert load_backend(tmp_path / "plain").requantize is True
    assert load_backend(tmp_path / "plain", requantize=False).requantize is False


def test_vq_refuses_continuous_decoding_of_a_codebook_lookup_model(tiny_vq_model):
    tiny_vq_model.register_to_config(lookup_from_codebook=True)
    with pytest.raises(ValueError, match="requantize=False"):
        VQModelBackend(tiny_vq_model, requantize=False)
    with pytest.raises(TypeError, match="requantize must be a bool"):
        VQModelBackend(tiny_vq_model, requantize="no")
    with pytest.raises(TypeError, match="must be a diffusers VQModel"):
        VQModelBackend(torch.nn.Linear(2, 2))
