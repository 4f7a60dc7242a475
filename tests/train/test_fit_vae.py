"""latentmix fit vae: trains with accelerate, is seeded, saves a loadable backend with a model card."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from latentmix import load_backend
from latentmix.cli import main
from latentmix.configs import VAEFitConfig
from latentmix.train import fit_vae
from latentmix.train.common import random_shift

TINY = dict(epochs=2, batch_size=256, latent_dim=4, block_channels=(8, 16), kl_warmup_epochs=1)


def test_fit_saves_a_backend_with_card_and_measured_metrics(tmp_path):
    result = fit_vae(VAEFitConfig(**TINY), tmp_path / "vae", quiet=True, command="latentmix fit vae --epochs 2")
    backend, metrics = result.backend, result.metrics
    assert result.out == tmp_path / "vae"
    assert metrics["train_images"] == 1437 and metrics["test_images"] == 360
    assert 0 < metrics["test_recon_mse"] < 1.5 and metrics["scaling_factor"] > 0
    card = (tmp_path / "vae" / "MODEL_CARD.md").read_text()
    assert "latentmix fit vae --epochs 2" in card and f"{metrics['test_recon_mse']:.5g}" in card
    loaded = load_backend(tmp_path / "vae")
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(loaded.encode(x), backend.encode(x))
    # the scaling factor makes the encoded train set unit-variance, so the N(0, I) prior matches it
    from latentmix.data import DigitsDataset

    with torch.inference_mode():
        z = loaded.encode(DigitsDataset("train").images(range(1437)))
    assert abs(float(z.std()) - 1.0) < 1e-3


def test_training_reduces_the_reconstruction_error():
    short = fit_vae(VAEFitConfig(**{**TINY, "epochs": 1}), quiet=True).metrics
    longer = fit_vae(VAEFitConfig(**{**TINY, "epochs": 8}), quiet=True).metrics
    assert longer["test_recon_mse"] < short["test_recon_mse"]


def test_fit_is_reproducible_from_the_seed():
    b1 = fit_vae(VAEFitConfig(**TINY, seed=3), quiet=True).backend
    b2 = fit_vae(VAEFitConfig(**TINY, seed=3), quiet=True).backend
    b3 = fit_vae(VAEFitConfig(**TINY, seed=4), quiet=True).backend
    w1, w2, w3 = (b.model.to_moments.weight for b in (b1, b2, b3))
    assert torch.equal(w1, w2) and not torch.equal(w1, w3)


def test_fit_on_an_image_folder_via_the_cli(tmp_path, capsys):
    from latentmix.data import DigitsDataset

    ds = DigitsDataset("train")
    for i in range(12):
        folder = tmp_path / "data" / str(int(ds.labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = ((ds.images([i])[0, 0] + 1) * 127.5).round().byte().numpy()
        Image.fromarray(pixels).resize((24, 24)).convert("RGB").save(folder / f"{i}.png")
    code = main(
        [
            "--quiet",
            "fit",
            "vae",
            "--data",
            str(tmp_path / "data"),
            "--image-size",
            "16",
            "--channels",
            "3",
            "--epochs",
            "1",
            "--latent-dim",
            "4",
            "--block-channels",
            "8",
            "16",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    backend = load_backend(tmp_path / "out")
    assert backend.image_size == 16 and backend.image_channels == 3
    assert json.loads((tmp_path / "out" / "config.json").read_text())["latentmix_backend"] == "vae"
    assert "saved" in capsys.readouterr().out


def test_random_shift_moves_each_image_by_at_most_the_limit():
    x = torch.zeros(64, 1, 5, 5)
    x[:, :, 2, 2] = 1.0
    out = random_shift(x, 1, torch.Generator().manual_seed(0))
    pos = out.flatten(1).argmax(dim=1)
    rows, cols = pos // 5, pos % 5
    assert bool(((rows - 2).abs() <= 1).all() and ((cols - 2).abs() <= 1).all())
    assert len(set(pos.tolist())) > 4 and torch.equal(x[:, :, 2, 2], torch.ones(64, 1))  # input untouched


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (dict(epochs=0), "epochs must be a positive int"),
        (dict(lr=-1.0), "lr must be"),
        (dict(mixed_precision="fp8"), "mixed_precision"),
        (dict(augment_shift=-1), "augment_shift"),
    ],
)
def test_bad_settings_fail_before_training(override, message):
    with pytest.raises(ValueError, match=message):
        fit_vae(VAEFitConfig(**{**TINY, **override}), quiet=True)


def test_fit_runs_in_two_real_processes_with_torchrun(tmp_path, torchrun):

    proc = torchrun(
        "-m",
        "latentmix",
        "--quiet",
        "fit",
        "vae",
        "--epochs",
        "2",
        "--latent-dim",
        "4",
        "--block-channels",
        "8",
        "16",
        "--out",
        str(tmp_path / "ddp"),
    )
    assert proc.stdout.count("saved") == 1 and "processes=2" in proc.stdout
    backend = load_backend(tmp_path / "ddp")
    assert backend.latent_shape == (4,)
    assert "| processes | 2 |" in (tmp_path / "ddp" / "MODEL_CARD.md").read_text()
