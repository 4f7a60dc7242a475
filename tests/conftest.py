"""Shared fixtures: tiny real models built from config (never mocks), small real data."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest
import torch
from diffusers import AutoencoderKL

from latentmix.backends import AutoencoderKLBackend, ConvVAE, VAEBackend
from latentmix.data import DigitsDataset


@pytest.fixture(scope="session")
def digits_test() -> DigitsDataset:
    return DigitsDataset("test")


@pytest.fixture
def tiny_vae() -> VAEBackend:
    torch.manual_seed(0)
    model = ConvVAE(in_channels=1, image_size=8, latent_dim=6, block_channels=(8, 16))
    return VAEBackend(model, scaling_factor=1.5)


@pytest.fixture
def tiny_autoencoder_kl() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=0.5,
    )


@pytest.fixture
def tiny_akl_backend(tiny_autoencoder_kl) -> AutoencoderKLBackend:
    return AutoencoderKLBackend(tiny_autoencoder_kl)
