"""``latentmix fit ldm``: a tiny UNet on the digits VAE's latents with MiniLM captions; resume; CLI."""

from __future__ import annotations

import json

import pytest
import torch

from latentmix.backends import LatentDiffusionBackend, load_backend
from latentmix.cli import main
from latentmix.train.checkpoint import read_meta
from latentmix.train.fit_ldm import LDMFitConfig, fit_ldm

TINY = dict(
    steps=12, batch_size=64, block_channels=(16,), cross_attention_dim=16, checkpoint_every=4, num_inference_steps=5
)


def test_fit_resumes_exactly_after_an_interruption_and_saves_references(tmp_path, monkeypatch, crash_on_call):
    import latentmix.train.fit_ldm as fl

    result = fit_ldm(LDMFitConfig(**TINY), tmp_path / "full", quiet=True)
    full, metrics = result.backend, result.metrics
    assert isinstance(full, LatentDiffusionBackend) and full.latent_shape == (4, 2, 2)
    for key in ("test_recon_mse_autoencoder", "test_recon_mse_ddim_50", "text_conditional_consistency"):
        assert 0 <= metrics[key] < 1, key
    card = (tmp_path / "full" / "MODEL_CARD.md").read_text()
    assert "text_conditional_consistency" in card and "digits-vae" in card
    saved = json.loads((tmp_path / "full" / "config.json").read_text())
    assert saved["vae"] == "digits-vae" and saved["text_encoder"] == "all-MiniLM-L6-v2"

    real = crash_on_call(fl, "ema_update", 6)  # after the first checkpoint (step 4), before the second
    with pytest.raises(KeyboardInterrupt):
        fit_ldm(LDMFitConfig(**TINY), tmp_path / "cut", quiet=True)
    assert read_meta(tmp_path / "cut.train")["progress"]["step"] == 4
    monkeypatch.setattr(fl, "ema_update", real)
    resumed = fit_ldm(LDMFitConfig(**TINY), tmp_path / "cut", quiet=True).backend
    for a, b in zip(full.unet.state_dict().values(), resumed.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="other settings"):
        fit_ldm(LDMFitConfig(**{**TINY, "lr": 1e-4}), tmp_path / "cut", quiet=True)


def test_training_lowers_the_denoising_loss(tmp_path):
    short = fit_ldm(LDMFitConfig(**{**TINY, "steps": 2, "evaluate": False}), tmp_path / "a", quiet=True)
    longer = fit_ldm(LDMFitConfig(**{**TINY, "steps": 40, "lr": 3e-3, "evaluate": False}), tmp_path / "b", quiet=True)
    assert longer.metrics["final_loss_mean_last_200"] < short.metrics["final_loss_mean_last_200"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"steps": 0}, "steps must be a positive int"),
        ({"guidance_scale": 0.5}, "guidance_scale must be a finite number >= 1"),
        ({"latent_channels": 3}, "latent_channels: .*16 latent values"),
        ({"autoencoder": "digits-gan"}, "autoencoder: .*needs an autoencoder"),
        ({"beta_schedule": "cosine"}, "beta_schedule must be"),
        ({"block_channels": (12,)}, "block_channels must be multiples of 8"),
    ],
)
def test_bad_settings_fail_before_training(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        fit_ldm(LDMFitConfig(**{**TINY, **override}), tmp_path / "x", quiet=True)


def test_fit_ldm_cli_then_grid_with_prompts(tmp_path, capsys):
    out = tmp_path / "ldm"
    assert (
        main(
            [
                "--quiet",
                "fit",
                "ldm",
                "--steps",
                "3",
                "--batch-size",
                "32",
                "--block-channels",
                "16",
                "--cross-attention-dim",
                "16",
                "--num-inference-steps",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert f"saved {out}" in capsys.readouterr().out
    assert load_backend(out).num_inference_steps == 4
    png = tmp_path / "walk.png"
    assert (
        main(
            [
                "--quiet",
                "grid",
                "--backend",
                str(out),
                "--prompts",
                "a handwritten digit 3",
                "a handwritten digit 8",
                "--steps",
                "4",
                "--guidance-scale",
                "2",
                "--out",
                str(png),
            ]
        )
        == 0
    )
    assert png.is_file() and "1 pairs x 4 steps" in capsys.readouterr().out
    assert main(["--quiet", "grid", "--backend", str(out), "--prompts", "only one", "--out", str(png)]) == 2
    assert "--prompts takes pairs" in capsys.readouterr().err
    assert main(["--quiet", "grid", "--backend", "digits-vae", "--guidance-scale", "2", "--out", str(png)]) == 2
    assert "guidance_scale applies to diffusion backends" in capsys.readouterr().err


def test_fit_ldm_runs_in_two_real_processes_with_torchrun(tmp_path, torchrun):

    proc = torchrun(
        "-m",
        "latentmix",
        "--quiet",
        "fit",
        "ldm",
        "--steps",
        "4",
        "--batch-size",
        "32",
        "--block-channels",
        "16",
        "--cross-attention-dim",
        "16",
        "--no-evaluate",
        "--out",
        str(tmp_path / "ddp"),
    )
    assert proc.stdout.count("saved") == 1 and "processes=2" in proc.stdout
    assert load_backend(tmp_path / "ddp").latent_shape == (4, 2, 2)
