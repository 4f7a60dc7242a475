"""GAN backend (inversion, refinement), fit gan (resume), the reference classifier, metrics, evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentmix import load_backend
from latentmix.backends import Discriminator, GANBackend, Generator, InversionEncoder
from latentmix.classifiers.metrics import frechet_distance, monotone_fraction, trimmed_mean
from latentmix.classifiers.reference import load_reference_classifier
from latentmix.cli import main
from latentmix.data import DigitsDataset
from latentmix.jobs.evaluate import EvalConfig, evaluate_backend
from latentmix.train.checkpoint import read_meta
from latentmix.train.fit_gan import GANFitConfig, fit_gan

TINY_FIT = dict(latent_dim=8, width=16, epochs=2, encoder_epochs=2, batch_size=256, checkpoint_every=1)


@pytest.fixture
def tiny_gan() -> GANBackend:
    torch.manual_seed(0)
    return GANBackend(Generator(8, 1, 8, 16), Discriminator(1, 8, 16), InversionEncoder(8, 1, 8, 16))


def test_gan_contract_and_capabilities(tiny_gan):
    assert (
        tiny_gan.latent_prior == "gaussian"
        and tiny_gan.default_method == "slerp"
        and tiny_gan.encoder_kind == "inversion"
    )
    x = DigitsDataset("test").images(range(6))
    with torch.inference_mode():
        z = tiny_gan.encode(x)
        out = tiny_gan.decode(z)
    assert z.shape == (6, 8) and out.shape == (6, 1, 8, 8) and float(out.abs().max()) <= 1
    assert tiny_gan.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 8)


def test_refinement_lowers_the_error_batched_and_row_independent(tiny_gan):
    tiny_gan.feature_weight = tiny_gan.prior_weight = 0.0
    x = DigitsDataset("test").images(range(8))
    with torch.inference_mode():
        z0 = tiny_gan.encode(x)
        err0 = (tiny_gan.decode(z0) - x).pow(2).mean()
    z = tiny_gan.encode(x, refine_steps=30)
    with torch.inference_mode():
        err = (tiny_gan.decode(z) - x).pow(2).mean()
    assert err < err0
    alone = tiny_gan.encode(x[3:4], refine_steps=30)
    torch.testing.assert_close(alone, z[3:4], atol=1e-4, rtol=1e-4)  # each image's loss is its own
    assert all(p.grad is None for p in tiny_gan.generator.parameters())


def test_gan_save_load_and_missing_parts(tiny_gan, tmp_path):
    tiny_gan.save_pretrained(tmp_path / "gan")
    loaded = load_backend(tmp_path / "gan")
    x = DigitsDataset("test").images(range(3))
    with torch.inference_mode():
        assert torch.equal(loaded.encode(x), tiny_gan.encode(x))
    no_encoder = GANBackend(tiny_gan.generator, tiny_gan.discriminator)
    with pytest.raises(ValueError, match="no inversion encoder: `latentmix fit gan --out DIR` fits one"):
        no_encoder.encode(x)
    with pytest.raises(ValueError, match="refine_steps must be an int >= 0"):
        tiny_gan.encode(x, refine_steps=-1)
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, 8, 8\)"):
        tiny_gan.encode(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="power of two"):
        Generator(8, 1, 12, 16)


def test_fit_gan_resumes_exactly_after_an_interruption(tmp_path, monkeypatch, crash_on_call):
    import latentmix.train.fit_gan as fg

    full = fit_gan(GANFitConfig(**TINY_FIT), tmp_path / "full", quiet=True).backend
    assert (tmp_path / "full" / "MODEL_CARD.md").is_file() and list((tmp_path / "full.train" / "samples").glob("*.png"))
    real = crash_on_call(
        fg, "ema_update", 7
    )  # 5 steps per epoch: during the second GAN epoch, after the first checkpoint
    with pytest.raises(KeyboardInterrupt):
        fit_gan(GANFitConfig(**TINY_FIT), tmp_path / "cut", quiet=True)
    assert read_meta(tmp_path / "cut.train")["progress"]["epoch"] == 1
    monkeypatch.setattr(fg, "ema_update", real)
    resumed = fit_gan(GANFitConfig(**TINY_FIT), tmp_path / "cut", quiet=True).backend
    for a, b in zip(full.generator.state_dict().values(), resumed.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(full.encoder.state_dict().values(), resumed.encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="other settings"):
        fit_gan(GANFitConfig(**{**TINY_FIT, "lr": 1e-3}), tmp_path / "cut", quiet=True)


def test_reference_classifier_is_shipped_and_accurate_on_unseen_digits():
    clf = load_reference_classifier()
    test = DigitsDataset("test")
    with torch.inference_mode():
        acc = float((clf(test.images(range(len(test)))).argmax(1) == test.labels).float().mean())
        feats = clf.features(test.images(range(4)))
    assert acc > 0.97 and feats.shape == (4, 128)


def test_frechet_distance_matches_the_gaussian_formula():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=g, dtype=torch.float64)
    b = torch.randn(20000, 3, generator=g, dtype=torch.float64) * 2 + 1
    # N(0, I) vs N(1, 4I): |mu|^2 = 3, trace term 3 * (1 + 4 - 2 * 2) = 3
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.05)
    assert abs(frechet_distance(a, a)) < 1e-6
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(a, b[:, :2])


def test_trimmed_mean_and_monotone_fraction():
    assert trimmed_mean(torch.tensor([0.0] * 98 + [1000.0, -1000.0]), 0.01) == 0.0
    probs = torch.tensor([[1.0, 0.8, 0.5, 0.1], [1.0, 0.5, 0.7, 0.0], [0.9, 0.9, 0.905, 0.2]])
    assert monotone_fraction(probs, tolerance=0.01) == pytest.approx(2 / 3)


def test_evaluate_reports_every_section_for_a_tiny_vae_and_gan(tiny_vae, tiny_gan):
    small = EvalConfig(
        prior_samples=64, intra_pairs_per_class=3, inter_paths=10, ppl_pairs=16, refine_steps=5, spacing_pairs=4
    )
    for backend in (tiny_vae, tiny_gan):
        report = evaluate_backend(small, backend=backend, quiet=True).to_dict()
        assert set(report) >= {
            "reconstruction",
            "frechet_distance",
            "class_consistency",
            "path_length",
            "midpoint_norm_ratio",
            "walk_spacing",
        }
        assert report["walk_spacing"]["cv_even"] < report["walk_spacing"]["cv_uniform"]
        assert 0 <= report["class_consistency"]["intra_class_midpoints_slerp"] <= 1
        assert report["midpoint_norm_ratio"]["slerp"] == pytest.approx(1.0, abs=0.01)
        assert report["midpoint_norm_ratio"]["lerp"] <= report["midpoint_norm_ratio"]["slerp"] + 1e-6
        assert np.isfinite(list(report["path_length"].values())).all()
    assert "refined" in report["reconstruction"] and report["reconstruction"]["refined"]["steps"] == 5


def test_evaluate_cli_writes_json_and_refuses_other_image_sizes(tmp_path, tiny_akl_backend, capsys):
    tiny_akl_backend.save_pretrained(tmp_path / "akl")
    assert main(["--quiet", "evaluate", "--backend", str(tmp_path / "akl")]) == 2
    err = capsys.readouterr().err
    assert "makes 3-channel 16x16 images but data 'digits' holds 1-channel 8x8 images" in err and "--resize" in err
    assert main(["--quiet", "evaluate", "--json", str(tmp_path / "r.txt")]) == 2


def test_grids_and_synthesis_take_gan_backends_unchanged(tiny_gan, tiny_vae, tmp_path):
    from latentmix import interpolation_grid
    from latentmix.data import SyntheticDataset
    from latentmix.jobs.synthesize import SynthesisConfig, synthesize

    calls = []
    refine = tiny_gan.refine
    tiny_gan.refine = lambda x, z, steps: calls.append(steps) or refine(x, z, steps)
    result = interpolation_grid(backend=tiny_gan, classes=[(3, 8)], steps=4)
    assert result.images.shape == (1, 4, 1, 8, 8) and calls == [tiny_gan.DEFAULT_REFINE_STEPS]
    interpolation_grid(backend=tiny_gan, classes=[(3, 8)], steps=4, refine_steps=0)
    assert calls == [tiny_gan.DEFAULT_REFINE_STEPS]  # 0 steps: encoder only
    tiny_gan.refine = refine
    tiny_gan.save_pretrained(tmp_path / "gan")
    synthesize(SynthesisConfig(backend=str(tmp_path / "gan"), n=8, refine_steps=2, out=tmp_path / "set"), quiet=True)
    assert len(SyntheticDataset(tmp_path / "set")) == 8
    with pytest.raises(ValueError, match="refine_steps applies to inversion backends"):
        interpolation_grid(backend=tiny_vae, refine_steps=3)


def test_fit_gan_under_torchrun_trains_one_model_on_the_global_batch(tmp_path, torchrun):
    """DDP: both processes end with the same generator, and an epoch has as many steps as one process would
    take with the same global batch."""
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "fit_gan_ranks.py"
    torchrun(str(script), str(tmp_path / "gan"))
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert [r["rank"] for r in ranks] == [0, 1]
    # each process saw its own half of every batch and drew its own noise, yet both hold the same weights:
    # the gradients were averaged (DDP), so this is one model trained on the global batch of 64
    assert all(r["processes"] == 2 and r["batch_per_process"] == 32 for r in ranks)
    assert all(r["steps_per_epoch"] == 1437 // 64 for r in ranks)
    assert ranks[0]["digest"] == ranks[1]["digest"]
    assert load_backend(tmp_path / "gan").latent_shape == (8,)
