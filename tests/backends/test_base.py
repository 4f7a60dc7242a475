"""The backend contract, save/load, the registry and load_backend, on tiny real models."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from latentmix import load_backend
from latentmix.backends import AutoencoderKLBackend, ConvVAE, LatentBackend, VAEBackend, register_backend
from latentmix.utils.atomic import atomic_directory


def images(n, channels=1, size=8, seed=0):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_vae_contract_shapes_range_and_capabilities(tiny_vae):
    assert tiny_vae.latent_shape == (6,) and tiny_vae.image_size == 8 and tiny_vae.image_channels == 1
    assert tiny_vae.latent_prior == "gaussian" and tiny_vae.default_method == "slerp"
    assert not tiny_vae.supports_text_condition and tiny_vae.encoder_kind == "amortized"
    with torch.inference_mode():
        z = tiny_vae.encode(images(5))
        x = tiny_vae.decode(z)
    assert z.shape == (5, 6) and x.shape == (5, 1, 8, 8)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    err = tiny_vae.reconstruction_error(images(5))
    assert err.shape == (5,) and bool((err > 0).all())


def test_vae_latents_carry_the_scaling_factor(tiny_vae):
    x = images(3)
    with torch.inference_mode():
        mean, _ = tiny_vae.model.encode(x)
        torch.testing.assert_close(tiny_vae.encode(x), mean * 1.5)
        torch.testing.assert_close(tiny_vae.decode(mean * 1.5), tiny_vae.model.decode(mean))


def test_sample_uses_the_generator(tiny_vae):
    z1 = tiny_vae.sample(4, generator=torch.Generator().manual_seed(1))
    z2 = tiny_vae.sample(4, generator=torch.Generator().manual_seed(1))
    assert z1.shape == (4, 6) and torch.equal(z1, z2)
    assert not torch.equal(z1, tiny_vae.sample(4, generator=torch.Generator().manual_seed(2)))


def test_encode_posterior_sampling_is_explicit_and_seeded(tiny_vae):
    x = images(2)
    with torch.inference_mode():
        s1 = tiny_vae.encode(x, sample_posterior=True, generator=torch.Generator().manual_seed(0))
        s2 = tiny_vae.encode(x, sample_posterior=True, generator=torch.Generator().manual_seed(0))
        mean = tiny_vae.encode(x)
    assert torch.equal(s1, s2) and not torch.equal(s1, mean)


def test_chunked_encode_decode_equals_one_batch(tiny_vae):
    x = images(10)
    with torch.inference_mode():
        full_z, full_x = tiny_vae.encode(x), tiny_vae.decode(tiny_vae.encode(x))
        tiny_vae.batch_size = 3
        torch.testing.assert_close(tiny_vae.encode(x), full_z)
        torch.testing.assert_close(tiny_vae.decode(full_z), full_x)


def test_save_load_round_trip_is_exact(tiny_vae, tmp_path):
    tiny_vae.save_pretrained(tmp_path / "vae")
    config = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert config["latentmix_backend"] == "vae" and config["scaling_factor"] == 1.5
    files = {p.name for p in (tmp_path / "vae").rglob("*") if p.is_file()}
    assert "diffusion_pytorch_model.safetensors" in files and not any(f.endswith((".bin", ".pt")) for f in files)
    loaded = load_backend(tmp_path / "vae")
    assert isinstance(loaded, VAEBackend)
    x = images(4)
    with torch.inference_mode():
        assert torch.equal(loaded.encode(x), tiny_vae.encode(x))
        assert torch.equal(loaded.decode(tiny_vae.encode(x)), tiny_vae.decode(tiny_vae.encode(x)))
    assert isinstance(VAEBackend.from_pretrained(tmp_path / "vae"), VAEBackend)


def test_pickled_weights_are_refused(tiny_vae, tmp_path):
    target = tmp_path / "pickled"
    tiny_vae.save_pretrained(target)
    weights = target / "vae" / "diffusion_pytorch_model.safetensors"
    torch.save(tiny_vae.model.state_dict(), target / "vae" / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ValueError, match="refuses to load pickles"):
        load_backend(target)


def test_corrupt_or_missing_checkpoints_raise_clear_errors(tiny_vae, tmp_path):
    target = tmp_path / "corrupt"
    tiny_vae.save_pretrained(target)
    weights = target / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="diffusion_pytorch_model.safetensors is not a readable safetensors file"):
        load_backend(target)
    (target / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_backend(target)
    (target / "config.json").write_text(json.dumps({"latentmix_backend": "no-such"}))
    with pytest.raises(ValueError, match="unknown backend class 'no-such'"):
        load_backend(target)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="config.json is missing"):
        load_backend(empty)
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        load_backend("nope")


def test_wrong_weights_shape_is_a_clear_error(tiny_vae, tmp_path):
    target = tmp_path / "shape"
    tiny_vae.save_pretrained(target)
    weights = target / "vae" / "diffusion_pytorch_model.safetensors"
    save_file({"to_moments.weight": torch.zeros(3, 3)}, str(weights))
    with pytest.raises(
        ValueError, match="diffusion_pytorch_model.safetensors: the weights lack the tensor 'encoder.0.0.weight'"
    ):
        load_backend(target)


def test_save_never_overwrites_unrelated_files(tiny_vae, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty and does not hold a saved latentmix model"):
        tiny_vae.save_pretrained(target)
    assert (target / "notes.txt").read_text() == "keep me"
    tiny_vae.save_pretrained(tmp_path / "b")
    tiny_vae.scaling_factor = 2.0
    tiny_vae.save_pretrained(tmp_path / "b")  # replacing a saved backend is fine
    assert json.loads((tmp_path / "b" / "config.json").read_text())["scaling_factor"] == 2.0
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # (the writer locks' files stay: .b.lock)


def test_interrupted_save_leaves_no_directory(tmp_path):
    def write(tmp):
        (tmp / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_directory(tmp_path / "half", write)
    assert [p.name for p in tmp_path.iterdir()] == [".half.lock"]  # no half directory, no temporary


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: b.encode(images(2, channels=3)), r"images must have shape \(N, 1, 8, 8\)"),
        (lambda b: b.encode(images(2, size=16)), r"images must have shape"),
        (lambda b: b.encode(images(2) * 5), r"scaled to \[-1, 1\]"),
        (lambda b: b.encode(torch.full((1, 1, 8, 8), float("nan"))), "non-finite"),
        (lambda b: b.encode(images(2).numpy()), "must be a torch tensor"),
        (lambda b: b.decode(torch.zeros(2, 5)), r"latents must have shape \(N, 6\)"),
        (lambda b: b.decode(torch.full((2, 6), float("inf"))), "non-finite"),
        (lambda b: b.decode(torch.zeros(0, 6)), "empty batch"),
        (lambda b: b.decode(torch.zeros(2, 6), texts=["a", "b"]), "not text-conditioned"),
        (lambda b: b.sample(0), "n must be a positive int"),
    ],
)
def test_bad_input_errors_name_the_problem(tiny_vae, call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(tiny_vae)


def test_convvae_rejects_indivisible_image_size():
    with pytest.raises(ValueError, match="divisible"):
        ConvVAE(image_size=10, block_channels=(8, 16, 32))


def test_registry_refuses_a_second_class_under_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        register_backend("vae")(type("Other", (VAEBackend,), {}))


# --- diffusers AutoencoderKL adapter -----------------------------------------------------------


def test_autoencoder_kl_adapter_applies_scaling_and_shift(tiny_autoencoder_kl):
    backend = AutoencoderKLBackend(tiny_autoencoder_kl)
    assert backend.latent_shape == (4, 8, 8) and backend.image_channels == 3 and backend.latent_prior is None
    x = images(2, channels=3, size=16)
    with torch.inference_mode():
        z = backend.encode(x)
        mean = tiny_autoencoder_kl.encode(x).latent_dist.mean
        torch.testing.assert_close(z, mean * 0.5)
        out = backend.decode(z)
        torch.testing.assert_close(out, tiny_autoencoder_kl.decode(mean).sample.clamp(-1, 1))
    tiny_autoencoder_kl.register_to_config(shift_factor=0.25)
    with torch.inference_mode():
        torch.testing.assert_close(backend.encode(x), (mean - 0.25) * 0.5)
    with pytest.raises(ValueError, match="no generative prior"):
        backend.sample(2)


def test_autoencoder_kl_loads_from_a_diffusers_directory_and_pipeline_subfolder(tiny_autoencoder_kl, tmp_path):
    tiny_autoencoder_kl.save_pretrained(tmp_path / "sd" / "vae")
    (tmp_path / "sd" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    direct = load_backend(tmp_path / "sd" / "vae")
    via_subfolder = AutoencoderKLBackend.from_diffusers(str(tmp_path / "sd"), subfolder="vae")
    x = images(2, channels=3, size=16)
    with torch.inference_mode():
        ref = AutoencoderKLBackend(tiny_autoencoder_kl).encode(x)
        torch.testing.assert_close(direct.encode(x), ref)
        torch.testing.assert_close(via_subfolder.encode(x), ref)
    with pytest.raises(ValueError, match="missing the component.*unet"):
        load_backend(tmp_path / "sd")


def test_autoencoder_kl_backend_save_load_round_trip(tiny_akl_backend, tmp_path):
    tiny_akl_backend.save_pretrained(tmp_path / "akl")
    loaded = load_backend(tmp_path / "akl")
    assert isinstance(loaded, AutoencoderKLBackend) and isinstance(loaded, LatentBackend)
    x = images(2, channels=3, size=16)
    with torch.inference_mode():
        assert torch.equal(loaded.encode(x), tiny_akl_backend.encode(x))


def test_autoencoder_kl_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="could not load an AutoencoderKL"):
        AutoencoderKLBackend.from_diffusers(str(tmp_path / "absent"))
