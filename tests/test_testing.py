"""Every registered backend class passes latentmix.testing.check_backend on a tiny instance built from config."""

from __future__ import annotations

import tempfile

import pytest
import torch

from latentmix.backends import GANBackend, LatentDiffusionBackend, StableDiffusionXLBackend, registered_backends
from latentmix.backends.gan import Discriminator, Generator, InversionEncoder
from latentmix.testing import BACKEND_CHECKS, check_backend, check_save_load_round_trip, make_probe


@pytest.fixture
def tiny_gan() -> GANBackend:
    torch.manual_seed(0)
    return GANBackend(Generator(8, 1, 8, 16), Discriminator(1, 8, 16), InversionEncoder(8, 1, 8, 16))


@pytest.fixture
def tiny_ldm(tiny_sd_pipeline) -> LatentDiffusionBackend:
    return LatentDiffusionBackend.from_pipeline(tiny_sd_pipeline, num_inference_steps=2)


@pytest.fixture
def tiny_sdxl(tiny_sdxl_pipeline) -> StableDiffusionXLBackend:
    return StableDiffusionXLBackend.from_pipeline(tiny_sdxl_pipeline, num_inference_steps=2)


#: one tiny instance per registered backend class (a fixture name), and the keyword arguments its calls need
FACTORIES = {
    "vae": ("tiny_vae", {}),
    "autoencoder-kl": ("tiny_akl_backend", {}),
    "autoencoder-tiny": ("tiny_taesd_backend", {}),
    "vq": ("tiny_vq_backend", {}),
    "gan": ("tiny_gan", {}),
    "latent-diffusion": ("tiny_ldm", {"num_inference_steps": 2}),
    "latent-diffusion-xl": ("tiny_sdxl", {"num_inference_steps": 2}),
}


def test_every_registered_backend_class_is_checked():
    assert set(registered_backends()) == set(FACTORIES)


@pytest.mark.parametrize("check", list(BACKEND_CHECKS))
@pytest.mark.parametrize("name", list(FACTORIES))
def test_backend_follows_the_contract(name, check, request, tmp_path):
    fixture, call_kwargs = FACTORIES[name]
    backend = request.getfixturevalue(fixture)
    assert check_backend(backend, checks=[check], call_kwargs=call_kwargs, tmp_dir=tmp_path) == [check]


def test_a_broken_backend_fails_with_the_check_named(tiny_vae, tmp_path):
    """The suite can fail: a backend whose decode ignores the batch breaks 'batched_equals_per_item'."""
    real_decode = tiny_vae._decode
    tiny_vae._decode = lambda latents: real_decode(latents.mean(0, keepdim=True).expand_as(latents))
    with pytest.raises(AssertionError, match=r"check_backend\[batched_equals_per_item\]"):
        check_backend(tiny_vae, checks=["batched_equals_per_item"], tmp_dir=tmp_path)
    tiny_vae._decode = real_decode
    tiny_vae.latent_prior = None  # claims no prior, yet samples
    tiny_vae.sample = lambda n, generator=None: torch.zeros(n, 6)
    with pytest.raises(AssertionError, match=r"check_backend\[prior\]: sample\(\) without a prior did not raise"):
        check_backend(tiny_vae, checks=["prior"], tmp_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown check"):
        check_backend(tiny_vae, checks=["nope"])


def test_check_backend_leaves_no_directory_behind(tiny_vae, tmp_path, monkeypatch):
    """Without tmp_dir the save checks write in a temporary directory that is removed afterwards."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert check_backend(tiny_vae, checks=["save_load_round_trip", "refuses_pickles"]) == [
        "save_load_round_trip",
        "refuses_pickles",
    ]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="tmp_dir"):
        check_save_load_round_trip(tiny_vae, make_probe(tiny_vae))
