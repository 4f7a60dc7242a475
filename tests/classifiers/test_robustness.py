"""Robust accuracy: FGSM / PGD stay in their ε-ball and in [-1, 1] and raise the loss, noise and blur are what
they say, and every image training report (and compare) carries the numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latentmix.classifiers.robustness import fgsm, gaussian_blur, gaussian_noise, pgd, robustness_report
from latentmix.configs import TrainConfig
from latentmix.jobs.compare import format_table, run_compare


def _model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 4))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, 6, 6, generator=g) * 2 - 1
    y = model(x).argmax(1)  # the model is right on every clean image
    return model, x, y


def _loss(model, x, y) -> float:
    return float(nn.functional.cross_entropy(model(x), y).detach())


def test_attacks_stay_in_the_ball_and_the_image_range_and_raise_the_loss():
    model, x, y = _model_and_data()
    for adv in (fgsm(model, x, y, 0.1), pgd(model, x, y, 0.1, 5, generator=torch.Generator().manual_seed(0))):
        assert float((adv - x).abs().max()) <= 0.1 + 1e-6
        assert float(adv.min()) >= -1 and float(adv.max()) <= 1
        assert _loss(model, adv, y) > _loss(model, x, y)
    strong = pgd(model, x, y, 0.3, 10, generator=torch.Generator().manual_seed(0))
    assert _loss(model, strong, y) >= _loss(model, fgsm(model, x, y, 0.3), y) - 1e-3
    a = pgd(model, x, y, 0.1, 3, generator=torch.Generator().manual_seed(1))
    b = pgd(model, x, y, 0.1, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not any(p.grad is not None for p in model.parameters())  # gradients were taken for the inputs only


def test_blur_and_noise():
    flat = torch.full((2, 3, 8, 8), 0.25)
    torch.testing.assert_close(gaussian_blur(flat, 1.0), flat)
    impulse = torch.zeros(1, 1, 11, 11)
    impulse[0, 0, 5, 5] = 1.0
    blurred = gaussian_blur(impulse, 1.0)
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-5) and float(blurred.max()) < 0.2
    noisy = gaussian_noise(torch.zeros(2000, 1, 4, 4), 0.2, generator=torch.Generator().manual_seed(0))
    assert float(noisy.std()) == pytest.approx(0.2, rel=0.05)
    for call, message in (
        (lambda: fgsm(nn.Identity(), flat, torch.zeros(2), -0.1), "eps must be a finite number >= 0"),
        (lambda: gaussian_blur(flat, 0.0), "blur_sigma must be a finite number > 0"),
    ):
        with pytest.raises(ValueError, match=message):
            call()


def test_report_names_its_settings_and_leaves_the_model_as_it_was():
    model, x, y = _model_and_data()
    model.train()
    report = robustness_report(model, x, y, eps=0.2, pgd_steps=4, noise_std=0.3, blur_sigma=2.0)
    assert list(report) == ["clean", "fgsm_eps0.2", "pgd4_eps0.2", "noise0.3", "blur2"]
    assert report["clean"] == 1.0 and report["pgd4_eps0.2"] <= report["clean"] and model.training
    with pytest.raises(ValueError, match="needs images"):
        robustness_report(model, x.flatten(1), y)


def test_training_reports_and_compare_tables_carry_robust_accuracy(tmp_path):
    base = TrainConfig(labels_per_class=5, steps=30, eval_every=15, batch_size=32)
    result = run_compare(train=base, recipes=("erm", "saliency-mix"), seeds=(0, 1), workdir=str(tmp_path), quiet=True)
    results = result.to_dict()
    rows = results["recipes"]["erm"]["per_seed"]
    assert set(rows[0]["robustness"]) == {"clean", "fgsm_eps0.1", "pgd10_eps0.1", "noise0.2", "blur1"}
    assert rows[0]["robustness"]["clean"] == pytest.approx(rows[0]["before"]["accuracy"])
    d = results["paired_robustness"]["saliency-mix"]["pgd10_eps0.1"]
    assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    table = format_table(result)
    assert "robust test accuracy %" in table and "Δ pgd10_eps0.1" in table
