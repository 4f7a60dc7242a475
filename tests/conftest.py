"""Shared fixtures: tiny real models built from config (never mocks), small real data."""

from __future__ import annotations

import getpass
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# rendered shapes splits are cached here, never in the user's home (one cache per user, reused across runs)
os.environ.setdefault(
    "LATENTMIX_CACHE", os.path.join(tempfile.gettempdir(), f"latentmix-test-cache-{getpass.getuser()}")
)

import pytest
import torch
from diffusers import AutoencoderKL

from latentmix.backends import AutoencoderKLBackend, ConvVAE, VAEBackend
from latentmix.data import DigitsDataset


@pytest.fixture(scope="session")
def shapes_cache():
    """The directory the shapes splits are cached in during tests."""
    from latentmix.data.shapes import cache_dir

    return cache_dir()


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


@pytest.fixture
def tiny_autoencoder_tiny():
    """A TAESD-style AutoencoderTiny: 16 x 16 RGB <-> (4, 8, 8)."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    )


@pytest.fixture
def tiny_taesd_backend(tiny_autoencoder_tiny):
    from latentmix.backends import AutoencoderTinyBackend

    return AutoencoderTinyBackend(tiny_autoencoder_tiny, image_size=16)


@pytest.fixture
def tiny_vq_model():
    """A VQModel (the original latent-diffusion autoencoder family): 16 x 16 RGB <-> (4, 8, 8), 32 codes."""
    from diffusers import VQModel

    torch.manual_seed(0)
    return VQModel(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        vq_embed_dim=4,
        num_vq_embeddings=32,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=0.5,
    )


@pytest.fixture
def tiny_vq_backend(tiny_vq_model):
    from latentmix.backends import VQModelBackend

    return VQModelBackend(tiny_vq_model)


def _byte_unicode() -> list[str]:
    """CLIP's byte-to-unicode table (the characters of its byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


@pytest.fixture(scope="session")
def tiny_clip_tokenizer(tmp_path_factory):
    """A real CLIPTokenizer with a character-level vocabulary (no merges), built offline."""
    import json

    from transformers import CLIPTokenizer

    chars = _byte_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    root = tmp_path_factory.mktemp("clip-tokenizer")
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=12)


#: Stable Diffusion's noise schedule, and the UNet shape the tiny SD and SDXL pipelines share (8 x 8 x 4 latents)
SD_SCHEDULER = dict(
    beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False,
    steps_offset=1,
)  # fmt: skip
TINY_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
)  # fmt: skip


@pytest.fixture
def tiny_sd_pipeline(tiny_autoencoder_kl, tiny_clip_tokenizer):
    """A Stable Diffusion pipeline of tiny random components built from config, as diffusers' tests build them."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_UNET, cross_attention_dim=32, attention_head_dim=8)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tiny_clip_tokenizer),
            bos_token_id=len(tiny_clip_tokenizer) - 2,
            eos_token_id=len(tiny_clip_tokenizer) - 1,
            pad_token_id=len(tiny_clip_tokenizer) - 1,
            max_position_embeddings=12,
        )
    )
    scheduler = DDIMScheduler(**SD_SCHEDULER)
    return StableDiffusionPipeline(
        vae=tiny_autoencoder_kl,
        unet=unet,
        scheduler=scheduler,
        text_encoder=text_encoder,
        tokenizer=tiny_clip_tokenizer,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.fixture
def tiny_sdxl_pipeline(tiny_autoencoder_kl, tiny_clip_tokenizer):
    """An SDXL pipeline of tiny random components built from config, as diffusers' SDXL tests build them: two CLIP
    text encoders (the second with a projection), a UNet with pooled-text and size conditioning."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        **TINY_UNET,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 16,
        cross_attention_dim=32 + 24,
    )
    encoders = []
    for cls, hidden in ((CLIPTextModel, 32), (CLIPTextModelWithProjection, 24)):
        torch.manual_seed(0)
        config = CLIPTextConfig(
            hidden_size=hidden, intermediate_size=37, num_attention_heads=4, num_hidden_layers=3, projection_dim=16,
            vocab_size=len(tiny_clip_tokenizer), bos_token_id=len(tiny_clip_tokenizer) - 2,
            eos_token_id=len(tiny_clip_tokenizer) - 1, pad_token_id=len(tiny_clip_tokenizer) - 1,
            max_position_embeddings=12,
        )  # fmt: skip
        encoders.append(cls(config))
    scheduler = DDIMScheduler(**SD_SCHEDULER)
    return StableDiffusionXLPipeline(
        vae=tiny_autoencoder_kl,
        unet=unet,
        scheduler=scheduler,
        text_encoder=encoders[0],
        text_encoder_2=encoders[1],
        tokenizer=tiny_clip_tokenizer,
        tokenizer_2=tiny_clip_tokenizer,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


@pytest.fixture
def crash_on_call(monkeypatch):
    """``crash_on_call(module, name, n)``: ``module.name`` raises KeyboardInterrupt on its n-th call (a run
    killed mid-way). Returns the real function, to put back with ``monkeypatch.setattr`` before resuming."""

    def install(module, name: str, n: int):
        real, calls = getattr(module, name), []

        def crashing(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, crashing)
        return real

    return install


@pytest.fixture(scope="session")
def photo_patches(tmp_path_factory):
    """A user's captioned RGB folder (benchmarks/photo_patches.py), small: 16 x 16, 60 train / 24 test, 6 classes."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
    from photo_patches import write_photo_patches

    return write_photo_patches(tmp_path_factory.mktemp("user") / "photo-patches", n_train=60, n_test=24, size=16)


@pytest.fixture
def torchrun():
    """``torchrun(*args, cwd=None, threads=None)``: run ``args`` (``"-m", "latentmix", ...`` or a script and its
    arguments) under ``torch.distributed.run`` as two real CPU processes (gloo), and assert that it succeeded.

    ``threads`` sets each worker's thread count (torchrun gives each one thread unless told otherwise, and float
    kernels may round by thread count); ``cwd`` runs it elsewhere than the repository."""
    import subprocess
    import sys

    def run(*args: str, cwd=None, threads: int | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *map(str, args)]
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads is not None else {})}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=cwd, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc

    return run
