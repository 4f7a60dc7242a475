"""SDXL folders: two text encoders, pooled embeddings and size conditioning, the same jobs as Stable Diffusion."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from latentmix.backends import (
    LatentDiffusionBackend,
    RunOptions,
    StableDiffusionXLBackend,
    load_backend,
    mix_conditions,
)
from latentmix.cli import main

PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture
def xl_dir(tiny_sdxl_pipeline, tmp_path):
    tiny_sdxl_pipeline.save_pretrained(tmp_path / "xl")
    return tmp_path / "xl"


@pytest.fixture
def xl(tiny_sdxl_pipeline) -> StableDiffusionXLBackend:
    return StableDiffusionXLBackend.from_pipeline(tiny_sdxl_pipeline, num_inference_steps=4)


def noise(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def reference(pipe, z, **kwargs) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    size = {"height": 16, "width": 16}
    out = pipe(prompt=PROMPTS, latents=z.clone(), num_inference_steps=4, output_type="pt", **size, **kwargs)
    return out.images.clamp(0, 1)


@pytest.mark.parametrize(
    "kwargs",
    [{"guidance_scale": 1.0}, {"guidance_scale": 3.0}, {"guidance_scale": 3.0, "negative_prompt": ["blurry", "dark"]}],
    ids=["conditional", "guided-zeros", "negative-prompts"],
)
def test_ddim_decode_matches_the_sdxl_pipeline(xl, tiny_sdxl_pipeline, kwargs):
    """Same components, latents, prompts and DDIM steps: both encoders' penultimate states, the pooled embedding,
    the size ids and (without a negative prompt) zeros as the unconditional input, as StableDiffusionXLPipeline."""
    z = noise(2)
    ref = reference(tiny_sdxl_pipeline, z, **kwargs)
    with torch.inference_mode():
        ours = xl.decode(z, texts=PROMPTS, **kwargs)
    torch.testing.assert_close((ours + 1) / 2, ref, atol=1e-4, rtol=0)


def test_a_non_square_decode_matches_the_sdxl_pipeline_and_its_size_ids(xl, tiny_sdxl_pipeline):
    """--height 16 --width 24: latents of half the side (this VAE's scale), the size ids (16, 24, 0, 0, 16, 24)."""
    xl.set_resolution(16, 24)
    assert xl.latent_shape == (4, 8, 12)
    z = torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(0))
    assert xl.time_ids(z)[0].tolist() == [16, 24, 0, 0, 16, 24]
    pipe = tiny_sdxl_pipeline
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt=PROMPTS, latents=z.clone(), num_inference_steps=4, output_type="pt", height=16, width=24,
               guidance_scale=3.0).images.clamp(0, 1)  # fmt: skip
    with torch.inference_mode():
        ours = xl.decode(z, texts=PROMPTS, guidance_scale=3.0)
    torch.testing.assert_close((ours + 1) / 2, ref, atol=1e-4, rtol=0)


def test_a_blend_moves_token_states_and_the_pooled_embedding_with_one_t(xl):
    a, b = xl.encode_text(PROMPTS[:1]), xl.encode_text(PROMPTS[1:])
    assert a.shape == (1, 12 + 1, 56)  # 12 tokens of 32 + 24 features, then the 16-d pooled embedding in one row
    mid = mix_conditions(a, b, torch.tensor([0.25]), "lerp")
    (ta, pa), (tb, pb), (tm, pm) = (xl.split_condition(c) for c in (a, b, mid))
    assert pm.shape == (1, 16) and float(pa.abs().min()) >= 0  # the pooled part, not padding
    torch.testing.assert_close(tm, 0.75 * ta + 0.25 * tb)
    torch.testing.assert_close(pm, 0.75 * pa + 0.25 * pb)
    assert float((mid[:, 12:].flatten(1)[:, 16:]).abs().max()) == 0  # the padding stays zero


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_inversion_and_partial_inversion_mirror_sampling(xl, strength):
    """With a UNet that predicts zero noise, (partial) DDIM inversion then sampling is the identity on latents: the
    round trip is the autoencoder's own reconstruction."""
    with torch.no_grad():
        xl.unet.conv_out.weight.zero_()
        xl.unet.conv_out.bias.zero_()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        z = xl.encode(x, texts=PROMPTS, guidance_scale=2.0, strength=strength)
        again = xl.decode(z, texts=PROMPTS, guidance_scale=2.0, strength=strength)
        torch.testing.assert_close(again, xl.autoencoder.reconstruct(x), atol=1e-4, rtol=0)


def test_time_ids_follow_the_decoded_size(xl):
    assert xl.time_ids(noise(3)).tolist() == [[16, 16, 0, 0, 16, 16]] * 3


def test_an_sdxl_folder_loads_round_trips_and_saves_for_diffusers(xl_dir, xl, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    backend = load_backend(xl_dir)
    assert isinstance(backend, StableDiffusionXLBackend) and backend.latent_shape == (4, 8, 8)
    assert set(backend.modules()) >= {"unet", "text_encoder", "text_encoder_2", "autoencoder.vae"}
    z = noise(2)
    with torch.inference_mode():
        images = backend.decode(z, texts=PROMPTS, num_inference_steps=4, guidance_scale=2.0)
        torch.testing.assert_close(images, xl.decode(z, texts=PROMPTS, guidance_scale=2.0), atol=1e-5, rtol=0)
        back = backend.encode(images, texts=PROMPTS, num_inference_steps=4, guidance_scale=2.0)
    assert back.shape == z.shape and bool(torch.isfinite(back).all())
    backend.save_pretrained(tmp_path / "saved")
    reloaded = load_backend(tmp_path / "saved")
    assert isinstance(reloaded, StableDiffusionXLBackend) and reloaded.num_inference_steps == 50
    pipe = StableDiffusionXLPipeline.from_pretrained(tmp_path / "saved")  # a diffusers folder still
    assert pipe.text_encoder_2.config.projection_dim == 16
    with torch.inference_mode():
        again = reloaded.decode(z, texts=PROMPTS, num_inference_steps=4, guidance_scale=2.0)
    torch.testing.assert_close(again, images, atol=1e-5, rtol=0)


def test_an_fp16_variant_folder_loads_with_variant_and_runs_in_bf16(tiny_sdxl_pipeline, tmp_path):
    tiny_sdxl_pipeline.save_pretrained(tmp_path / "xl16", variant="fp16")
    with pytest.raises(ValueError, match="variant"):
        load_backend(tmp_path / "xl16")
    backend = load_backend(tmp_path / "xl16", run=RunOptions(variant="fp16", dtype="bf16"))
    assert backend.unet.dtype == torch.bfloat16 and backend.text_encoder_2.model.dtype == torch.bfloat16
    with torch.inference_mode():
        images = backend.decode(noise(2), texts=PROMPTS, num_inference_steps=2, guidance_scale=2.0)
    assert images.dtype == torch.float32 and bool(torch.isfinite(images).all())


def test_walks_between_prompts_and_between_inverted_images(xl_dir, tmp_path, capsys):
    out = tmp_path / "prompts"
    args = ["--quiet", "walk", "--backend", str(xl_dir), "--prompts", *PROMPTS, "--frames", "2", "--video", "none"]
    assert main([*args, "--num-inference-steps", "2", "--out", str(out)]) == 0, capsys.readouterr().err
    assert len(list((out / "frames").iterdir())) == 3
    from skimage import data

    files = []
    for name, photo in (("astronaut", data.astronaut()), ("coffee", data.coffee())):
        files.append(tmp_path / f"{name}.png")
        Image.fromarray(photo).resize((16, 16)).save(files[-1])
    out = tmp_path / "images"
    args = ["--quiet", "walk", "--backend", str(xl_dir), "--keyframes", *map(str, files), "--prompts", *PROMPTS]
    more = ["--frames", "3", "--num-inference-steps", "2", "--guidance-scale", "2", "--video", "none"]
    assert main([*args, *more, "--out", str(out)]) == 0, capsys.readouterr().err
    manifest = json.loads((out / "walk.json").read_text())
    assert manifest["keyframes"] == ["astronaut.png", "coffee.png"] and manifest["frames"] == 4
    frames = sorted((out / "frames").iterdir())
    assert np.asarray(Image.open(frames[0])).shape == (16, 16, 3)


@pytest.mark.parametrize("missing", ["text_encoder_2", "tokenizer_2", "unet"])
def test_an_sdxl_folder_missing_a_component_is_one_line_before_loading(xl_dir, missing, capsys):
    import shutil

    shutil.rmtree(xl_dir / missing)
    with pytest.raises(ValueError, match=f"missing the component\\(s\\) {missing} \\(an SDXL backend needs"):
        load_backend(xl_dir)
    assert main(["--quiet", "walk", "--backend", str(xl_dir), "--prompts", *PROMPTS, "--out", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and missing in err


def test_sd_and_sdxl_folders_are_told_apart(xl_dir, tiny_sd_pipeline, tmp_path):
    with pytest.raises(ValueError, match="is an SDXL pipeline .* StableDiffusionXLBackend"):
        LatentDiffusionBackend.from_pretrained(xl_dir)
    tiny_sd_pipeline.save_pretrained(tmp_path / "sd")
    assert type(load_backend(tmp_path / "sd")) is LatentDiffusionBackend
    with pytest.raises(ValueError, match="without a second text encoder, not SDXL"):
        StableDiffusionXLBackend.from_pretrained(tmp_path / "sd")


def test_grids_and_paired_synthesis_on_a_captioned_folder(xl_dir, photo_patches, tmp_path, capsys):
    from latentmix.data import SyntheticDataset

    steps = ["--num-inference-steps", "2", "--guidance-scale", "2"]
    grid = ["--quiet", "grid", "--backend", str(xl_dir), "--data", str(photo_patches), "--pairs", "0:1", "--steps", "3"]
    assert main([*grid, *steps, "--out", str(tmp_path / "grid.png")]) == 0, capsys.readouterr().err
    assert Image.open(tmp_path / "grid.png").size[0] > 0
    synth = ["--quiet", "synthesize", "--backend", str(xl_dir), "--data", str(photo_patches), "-n", "4"]
    assert main([*synth, *steps, "--out", str(tmp_path / "set")]) == 0, capsys.readouterr().err
    pairs = SyntheticDataset(tmp_path / "set")
    assert len(pairs) == 4 and pairs.images(range(4)).shape == (4, 3, 16, 16)
    assert all(" " in caption for caption in pairs.texts)


def test_the_explore_page_blends_sdxl_prompts_with_one_t(xl):
    """The explore page's frame between two prompts: the slerped noise decoded under the lerped conditioning (token
    states and pooled embedding together)."""
    from latentmix.backends import CallOptions
    from latentmix.explore import Explorer
    from latentmix.latent.interpolate import interpolate

    explorer = Explorer(xl, None, options=CallOptions(num_inference_steps=2, guidance_scale=2.0))
    a, b = explorer.from_prompt(PROMPTS[0], 0), explorer.from_prompt(PROMPTS[1], 1)
    (za, ca), (zb, cb) = explorer.latent(a), explorer.latent(b)
    with torch.inference_mode():
        want = xl.decode(interpolate(za, zb, 0.25, "slerp"), cond=0.75 * ca + 0.25 * cb, num_inference_steps=2,
                         guidance_scale=2.0)[0]  # fmt: skip
    torch.testing.assert_close(explorer.frame(a, b, 0.25), want.float(), atol=1e-5, rtol=0)
