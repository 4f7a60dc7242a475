"""Grids, paired synthesis and evaluation take the embedded latent-diffusion backend unchanged."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from latentmix import interpolation_grid
from latentmix.backends import load_backend
from latentmix.data import DigitsDataset, SyntheticDataset
from latentmix.jobs.evaluate import EvalConfig, evaluate_backend
from latentmix.jobs.synthesize import SynthesisConfig, synthesize
from latentmix.latent.interpolate import interpolate

STEPS = 8  # DDIM steps: enough to exercise every path, few enough for CPU tests


@pytest.fixture(scope="module")
def digits_ldm():
    return load_backend("digits-ldm")


def test_embedded_ldm_reconstructs_close_to_its_autoencoder(digits_ldm, digits_test):
    x = digits_test.images(range(64))
    with torch.inference_mode():
        ldm = float(digits_ldm.reconstruction_error(x, texts=digits_test.texts[:64], num_inference_steps=25).mean())
        ae = float(digits_ldm.autoencoder.reconstruction_error(x).mean())
    assert ldm < 2 * ae


def test_grid_real_endpoints_are_conditioned_on_their_captions(digits_ldm, digits_test):
    result = interpolation_grid(backend=digits_ldm, pairs=[(0, 5), (10, 20)], steps=4, num_inference_steps=STEPS)
    assert result.images.shape == (2, 4, 1, 8, 8)
    with torch.inference_mode():  # the endpoints are the round trips of the real images under their own captions
        ends = digits_ldm.reconstruct(
            digits_test.images([0, 10, 5, 20]),
            texts=[digits_test.texts[i] for i in (0, 10, 5, 20)],
            num_inference_steps=STEPS,
        )
    torch.testing.assert_close(torch.cat([result.images[:, 0], result.images[:, -1]]), ends, atol=1e-4, rtol=0)
    prompts = interpolation_grid(
        backend=digits_ldm,
        prompts=[("a handwritten digit 3", "a handwritten digit 8")],
        steps=3,
        num_inference_steps=STEPS,
        guidance_scale=2.0,
    )
    assert prompts.images.shape == (1, 3, 1, 8, 8) and prompts.real_a is None
    with pytest.raises(ValueError, match="prompts condition prior endpoints"):
        interpolation_grid(backend=digits_ldm, classes=[(3, 8)], prompts=[("a", "b")])
    with pytest.raises(ValueError, match="prompts: backend 'vae' is not text-conditioned"):
        interpolation_grid(backend="digits-vae", prompts=[("a", "b")])


def test_grid_at_an_inversion_strength_walks_between_partly_inverted_latents(digits_ldm, digits_test):
    """``inversion_strength`` inverts part of the way: the walk's latents are those partly noised ones (its ends
    the images' partial round trips), not the pure-noise latents of a full inversion."""
    full = interpolation_grid(backend=digits_ldm, pairs=[(0, 5)], steps=3, num_inference_steps=STEPS)
    half = interpolation_grid(
        backend=digits_ldm, pairs=[(0, 5)], steps=3, num_inference_steps=STEPS, inversion_strength=0.5
    )
    texts = [digits_test.texts[i] for i in (0, 5)]
    with torch.inference_mode():
        partial = digits_ldm.encode(digits_test.images([0, 5]), texts=texts, num_inference_steps=STEPS, strength=0.5)
        ends = digits_ldm.decode(partial, texts=texts, num_inference_steps=STEPS, strength=0.5)
    torch.testing.assert_close(half.latents[0, [0, -1]], partial.float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([half.images[:, 0], half.images[:, -1]]), ends, atol=1e-4, rtol=0)
    assert (half.latents - full.latents).abs().max() > 0.1  # not the full inversion's noise latents
    with pytest.raises(ValueError, match="inversion_strength walks between partly inverted real images"):
        interpolation_grid(backend=digits_ldm, prior=2, inversion_strength=0.5)


def test_synthesis_decodes_with_the_blended_text_conditioning(digits_ldm, tmp_path):
    config = SynthesisConfig(
        backend="digits-ldm", n=12, strategy="inter-class", num_inference_steps=STEPS, shard_size=8
    )
    synthesize(replace(config, out=tmp_path / "set"), quiet=True)
    syn = SyntheticDataset(tmp_path / "set")
    assert len(syn) == 12 and syn.manifest["backend_class"] == "latent-diffusion"
    train = DigitsDataset("train")
    text_of = dict(zip(train.ids, train.texts, strict=True))
    latents = torch.stack([syn.embeddings(i)["latent"] for i in range(len(syn))])
    cond_a = digits_ldm.encode_text([text_of[s] for s in syn.source_a])
    cond_b = digits_ldm.encode_text([text_of[s] for s in syn.source_b])
    blended = interpolate(cond_a, cond_b, 1.0 - syn.lam.double(), "lerp")
    stored = syn.images(range(len(syn)))
    with torch.inference_mode():
        again = digits_ldm.decode(latents, cond=blended, num_inference_steps=STEPS)
        only_a = digits_ldm.decode(latents, cond=cond_a, num_inference_steps=STEPS)
    assert (again - stored).abs().max() <= 2 / 255 + 1e-6  # the PNGs are these decodes, to one gray level
    moved = syn.lam < 0.9
    assert (only_a[moved] - stored[moved]).abs().amax(dim=(1, 2, 3)).gt(2 / 255).all()


def test_evaluate_reports_text_conditional_consistency(digits_ldm):
    config = EvalConfig(
        prior_samples=40, intra_pairs_per_class=2, inter_paths=6, path_steps=3, ppl_pairs=8, num_inference_steps=STEPS,
        inversion="fixed-point", inversion_iterations=1, spacing_pairs=3, spacing_frames=6,
    )  # fmt: skip
    report = evaluate_backend(config, backend=digits_ldm, quiet=True).to_dict()
    assert report["backend"] == "latent-diffusion" and report["latent_shape"] == [4, 2, 2]
    assert 0 <= report["class_consistency"]["text_conditional"] <= 1
    recon = report["reconstruction"]
    assert 0 < recon["autoencoder"]["mse"] < recon["encoder"]["mse"] < 0.1
    assert recon["encoder"]["inversion"] == "fixed-point" and recon["encoder"]["unet_calls_per_image"] == 2 * STEPS
    assert recon["autoencoder"]["round_trip_ratio"] == pytest.approx(
        recon["encoder"]["mse"] / recon["autoencoder"]["mse"]
    )
    spacing = report["walk_spacing"]
    assert spacing["method"] == "slerp" and spacing["pairs"] == 3 and spacing["cv_even"] < spacing["cv_uniform"]
    assert all(math.isfinite(v) and v > 0 for v in report["path_length"].values())  # float64, with conditioning


def test_synthesize_cli_with_the_ldm_and_sampler_flags(tmp_path, capsys):
    from latentmix.cli import main

    out = tmp_path / "set"
    assert (
        main(
            [
                "--quiet",
                "synthesize",
                "--backend",
                "digits-ldm",
                "-n",
                "6",
                "--num-inference-steps",
                "4",
                "--guidance-scale",
                "1.5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "wrote 6 samples" in capsys.readouterr().out and len(SyntheticDataset(out)) == 6
    assert (
        main(
            [
                "--quiet",
                "synthesize",
                "--backend",
                "digits-ldm",
                "-n",
                "6",
                "--guidance-scale",
                "0.5",
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert "guidance_scale must be a finite number >= 1" in capsys.readouterr().err and not (tmp_path / "bad").exists()
