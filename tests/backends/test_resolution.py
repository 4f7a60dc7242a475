"""--height / --width (issue 30): a diffusion backend decodes and encodes at another resolution, the latents follow
(⅛ of the side for an SD-shaped VAE), and it matches diffusers' pipeline at that size — on tiny pipelines built from
config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from latentmix.backends import LatentDiffusionBackend, RunOptions, load_backend
from latentmix.cli import main


@pytest.fixture
def sd8_pipeline(tiny_clip_tokenizer, tiny_sd_pipeline):
    """The tiny SD pipeline with an SD-shaped VAE: four blocks, so latents are ⅛ of the image side."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    from tests.conftest import TINY_UNET

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        norm_num_groups=4, sample_size=32, scaling_factor=0.5,
    )  # fmt: skip
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{**TINY_UNET, "sample_size": 4}, cross_attention_dim=32, attention_head_dim=8)
    pipe = tiny_sd_pipeline
    return StableDiffusionPipeline(vae=vae, unet=unet, scheduler=pipe.scheduler, text_encoder=pipe.text_encoder,
                                   tokenizer=pipe.tokenizer, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)  # fmt: skip


@pytest.fixture
def sd8_dir(sd8_pipeline, tmp_path):
    sd8_pipeline.save_pretrained(tmp_path / "sd8")
    return tmp_path / "sd8"


def test_height_32_width_48_gives_latents_of_an_eighth_of_the_side_and_the_pipelines_images(sd8_pipeline, tmp_path):
    ldm = LatentDiffusionBackend.from_pipeline(sd8_pipeline, num_inference_steps=3)
    assert ldm.image_shape == (32, 32) and ldm.latent_shape == (4, 4, 4)
    ldm.set_resolution(32, 48)
    assert ldm.image_shape == (32, 48) and ldm.latent_shape == (4, 4, 6) and ldm.image_size == 48
    z = torch.randn(2, *ldm.latent_shape, generator=torch.Generator().manual_seed(0))
    pipe = sd8_pipeline
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt=["a red", "a blue"], latents=z.clone(), num_inference_steps=3, guidance_scale=2.0,
               output_type="pt", height=32, width=48).images  # fmt: skip
    with torch.inference_mode():
        ours = ldm.decode(z, texts=["a red", "a blue"], guidance_scale=2.0)
    assert ours.shape == (2, 3, 32, 48)
    torch.testing.assert_close((ours + 1) / 2, ref.clamp(0, 1), atol=1e-4, rtol=0)
    # images in: a 32 x 48 batch, or square ones at the longer side (as data sets are read), centre-cropped
    square = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        from_square = ldm.encode(square, texts=["a", "b"], num_inference_steps=2)
        from_crop = ldm.encode(square[:, :, 8:40, :], texts=["a", "b"], num_inference_steps=2)
    assert from_square.shape == (2, 4, 4, 6)
    torch.testing.assert_close(from_square, from_crop)
    with pytest.raises(ValueError, match="height 40 must be a multiple of 16"):
        ldm.set_resolution(40, 48)
    ldm.save_pretrained(tmp_path / "saved")  # the resolution is a run setting: a save keeps the model's own size
    assert load_backend(tmp_path / "saved").image_shape == (32, 32)


def test_the_cli_walks_grids_and_explores_at_a_non_square_size(sd8_dir, tmp_path, capsys):
    size = ["--num-inference-steps", "2", "--height", "32", "--width", "48"]
    assert main(["--quiet", "grid", "--backend", str(sd8_dir), "--prompts", "a red", "a blue", "--steps", "3",
                 *size, "--out", str(tmp_path / "g.png")]) == 0, capsys.readouterr().err  # fmt: skip
    walk = tmp_path / "walk"
    assert main(["--quiet", "walk", "--backend", str(sd8_dir), "--prompts", "a red", "a blue", "--frames", "3",
                 *size, "--out", str(walk)]) == 0, capsys.readouterr().err  # fmt: skip
    frames = sorted((walk / "frames").glob("*.png"))
    assert frames and all(Image.open(f).size == (48, 32) for f in frames)  # PIL: (width, height)
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    keyframes = [str(photos / "0.png"), str(photos / "1.png")]
    assert main(["--quiet", "walk", "--backend", str(sd8_dir), "--keyframes", *keyframes, "--frames", "3",
                 "--resize", *size, "--out", str(tmp_path / "w2")]) == 0  # fmt: skip
    frames = sorted((tmp_path / "w2" / "frames").glob("*.png"))  # two real photos inverted and walked at 32 x 48
    assert len(frames) == 4 and all(Image.open(f).size == (48, 32) for f in frames)
    backend = load_backend(sd8_dir, run=RunOptions(height=32, width=48))
    from latentmix.backends import CallOptions
    from latentmix.explore import Explorer

    explorer = Explorer(backend, None, options=CallOptions(num_inference_steps=2))
    a, b = explorer.from_prompt("a red", 0), explorer.from_prompt("a blue", 1)
    assert explorer.frame(a, b, 0.5).shape == (3, 32, 48)


def test_bad_sizes_and_jobs_that_need_square_images_are_one_line_errors(sd8_dir, tmp_path, capsys, monkeypatch):
    import latentmix.backends.loading as loading

    read = []
    real = loading.load_directory
    monkeypatch.setattr(loading, "load_directory", lambda *a, **k: read.append(a) or real(*a, **k))
    cases = {
        "height 40 must be a multiple of 16": ["grid", "--backend", str(sd8_dir), "--prompts", "a", "b", "--height",
                                               "40", "--out", str(tmp_path / "g.png")],
        "height/width apply to diffusion backends on a diffusers autoencoder": [
            "grid", "--backend", "digits-vae", "--height", "16", "--out", str(tmp_path / "g.png")],
        "height/width: synthesize needs square images": [
            "synthesize", "--backend", str(sd8_dir), "--data", "shapes", "-n", "2", "--resize", "--height", "32",
            "--width", "48", "--num-inference-steps", "1", "--out", str(tmp_path / "s")],
        "height must be a positive int": ["grid", "--backend", str(sd8_dir), "--height", "0", "--out",
                                          str(tmp_path / "g.png")],
    }  # fmt: skip
    for message, argv in cases.items():
        read.clear()
        assert main(["--quiet", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
        if "multiple" in message:
            assert not read  # refused from the folder's configs, before any weights are read
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "s" / "manifest.json").exists()
