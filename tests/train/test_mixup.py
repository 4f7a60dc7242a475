"""Mixup family and classifier metrics (issue 4 groundwork)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchmetrics.classification import MulticlassCalibrationError

from latentmix.classifiers.metrics import (
    brier,
    calibration_bins,
    classification_report,
    confidence_gap,
    expected_calibration_error,
    fit_temperature,
)
from latentmix.train.mixup import (
    ManifoldMixup,
    Mixup,
    apply_boxes,
    consistency_loss,
    cross_modal_mixup,
    cutmix_boxes,
    mixgen,
    modality_dropout,
    soft_targets,
)


def batch(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


def test_one_permutation_is_shared_by_inputs_and_labels_and_odd_batches_work():
    x, y = batch(7)
    # rows are identifiable: row i's pixels all equal i, and its label is i % 5
    x = torch.arange(7.0).view(7, 1, 1, 1).expand(7, 3, 8, 8).clone()
    y = torch.arange(7) % 5
    out = Mixup(5, mixup_alpha=1.0, generator=torch.Generator().manual_seed(1))(x, y)
    assert out.kind == "mixup" and out.x.shape == x.shape
    for i in range(7):
        j = int(out.perm[i])
        lam = float(out.lam[i])
        assert torch.allclose(out.x[i], torch.full_like(x[i], lam * i + (1 - lam) * j))
        expected = torch.zeros(5)
        expected[i % 5] += lam
        expected[j % 5] += 1 - lam
        assert torch.allclose(out.y[i], expected, atol=1e-6)


def test_never_mutates_the_callers_tensors_and_is_reproducible():
    x, y = batch()
    x0, y0 = x.clone(), y.clone()
    a = Mixup(5, mixup_alpha=0.4, cutmix_alpha=1.0, mode="elem", generator=torch.Generator().manual_seed(3))(x, y)
    b = Mixup(5, mixup_alpha=0.4, cutmix_alpha=1.0, mode="elem", generator=torch.Generator().manual_seed(3))(x, y)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert torch.equal(a.x, b.x) and torch.equal(a.lam, b.lam)


def test_cutmix_lambda_is_the_area_share_after_clipping():
    lam = torch.tensor([0.3, 0.5, 0.9, 0.0])
    boxes, corrected = cutmix_boxes(8, 8, lam, torch.Generator().manual_seed(0))
    area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
    torch.testing.assert_close(corrected, 1 - area.double().float() / 64)
    x = torch.zeros(4, 1, 8, 8)
    donor = torch.ones(4, 1, 8, 8)
    pasted = apply_boxes(
        torch.cat([x, donor]), torch.cat([torch.arange(4, 8), torch.arange(4)]), torch.cat([boxes, boxes])
    )[:4]
    torch.testing.assert_close(1 - pasted.mean(dim=(1, 2, 3)), corrected)
    out = Mixup(5, mixup_alpha=0.0, cutmix_alpha=1.0, generator=torch.Generator().manual_seed(0))(*batch())
    assert out.kind == "cutmix" and torch.allclose(out.y.sum(1), torch.ones(7))


def test_soft_targets_accept_indices_one_hot_and_soft_with_smoothing():
    idx = torch.tensor([0, 2])
    torch.testing.assert_close(soft_targets(idx, 3), torch.tensor([[1.0, 0, 0], [0, 0, 1]]))
    torch.testing.assert_close(soft_targets(torch.tensor([[0.2, 0.8, 0.0]]), 3, 0.3), torch.tensor([[0.24, 0.66, 0.1]]))
    with pytest.raises(ValueError, match="label 7 is outside the class range 0..2"):
        soft_targets(torch.tensor([0, 7]), 3)


def test_mixup_probability_and_bad_settings():
    out = Mixup(5, mixup_alpha=1.0, prob=0.0)(*batch())
    assert out.kind == "none" and torch.equal(out.lam, torch.ones(7))
    for kwargs, message in [
        (dict(mixup_alpha=-1.0), "mixup_alpha must be"),
        (dict(mixup_alpha=0.0), "both are 0"),
        (dict(mode="pixel"), "mode must be one of"),
        (dict(prob=2.0), "prob must be in"),
    ]:
        with pytest.raises(ValueError, match=message):
            Mixup(5, **kwargs)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.Flatten()
        self.fc = nn.Linear(4 * 64, 5)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))))


def test_manifold_mixup_hooks_a_named_layer_without_rewriting_the_model():
    torch.manual_seed(0)
    net = Net()
    x, y = batch()
    mm = ManifoldMixup(net, ["conv", "pool"], 5, alpha=1.0, generator=torch.Generator().manual_seed(0))
    logits, targets, layer = mm(x, y)
    assert logits.shape == (7, 5) and layer in ("conv", "pool") and torch.allclose(targets.sum(1), torch.ones(7))
    assert not net.conv._forward_hooks and not net.pool._forward_hooks  # hooks removed
    logits.sum().backward()
    assert net.fc.weight.grad is not None
    fm = ManifoldMixup(net, ["conv"], 5, alpha=1.0, feature_cutmix_prob=1.0, generator=torch.Generator().manual_seed(0))
    _, targets, _ = fm(x, y)
    assert torch.allclose(targets.sum(1), torch.ones(7))
    with pytest.raises(ValueError, match="unknown layer 'layer9'"):
        ManifoldMixup(net, ["layer9"], 5)


def test_manifold_mix_gradient_equals_plain_indexing():
    """The gather-based backward of the hidden-state mix is the gradient of λ·h + (1 − λ)·h[perm]."""
    from latentmix.train.mixup import mix_permuted, mix_tensors

    g = torch.Generator().manual_seed(0)
    h0 = torch.randn(9, 3, 4, 4, generator=g, dtype=torch.float64)
    perm, lam = torch.randperm(9, generator=g), torch.rand(9, generator=g, dtype=torch.float64)
    weights = torch.randn(9, 3, 4, 4, generator=g, dtype=torch.float64)
    grads = []
    for fn in (mix_permuted, mix_tensors):
        h = h0.clone().requires_grad_(True)
        out = fn(h, perm, lam)
        (out * weights).sum().backward()
        grads.append((out.detach(), h.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert torch.autograd.gradcheck(lambda h: mix_permuted(h, perm, lam), (h0.clone().requires_grad_(True),))


def test_cross_modal_mixup_mixgen_modality_dropout_and_consistency():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(4, 6, generator=g), torch.randn(4, 3, generator=g)
    y = soft_targets(torch.tensor([0, 1, 2, 3]), 4)
    perm, lam = torch.tensor([1, 0, 3, 2]), torch.tensor([0.2, 0.5, 0.7, 1.0])
    mi, mt, my = cross_modal_mixup(img, txt, y, lam, perm)
    torch.testing.assert_close(mi[0], 0.2 * img[0] + 0.8 * img[1])
    torch.testing.assert_close(mt[0], 0.2 * txt[0] + 0.8 * txt[1])
    torch.testing.assert_close(my[0], torch.tensor([0.2, 0.8, 0, 0]))
    images, captions = mixgen(torch.randn(2, 1, 4, 4, generator=g), ["a cat", "a dog"], torch.tensor([1, 0]))
    assert captions == ["a cat a dog", "a dog a cat"] and images.shape == (2, 1, 4, 4)
    di, dt = modality_dropout(torch.ones(1000, 2), torch.ones(1000, 2), 0.25, torch.Generator().manual_seed(0))
    both_gone = ((di.sum(1) == 0) & (dt.sum(1) == 0)).sum()
    assert int(both_gone) == 0 and 0.2 < float((di.sum(1) == 0).float().mean()) < 0.3
    assert float(consistency_loss(torch.zeros(2, 3), torch.zeros(2, 3))) == 0.0
    assert float(consistency_loss(torch.tensor([[5.0, 0, 0]]), torch.tensor([[0, 5.0, 0]]))) > 1.0


def test_ece_matches_torchmetrics():
    g = torch.Generator().manual_seed(0)
    for scale in (0.5, 3.0, 20.0):
        logits = torch.randn(2000, 10, generator=g) * scale
        labels = torch.where(
            torch.rand(2000, generator=g) < 0.6, logits.argmax(1), torch.randint(0, 10, (2000,), generator=g)
        )
        probs = logits.softmax(1)
        ours = expected_calibration_error(probs, labels)
        ref = float(MulticlassCalibrationError(10, n_bins=15, norm="l1")(probs, labels))
        assert ours == pytest.approx(ref, abs=1e-6)
    _, _, share = calibration_bins(probs, labels)
    assert float(share.sum()) == pytest.approx(1.0)


def test_temperature_scaling_recovers_an_overconfident_model():
    g = torch.Generator().manual_seed(1)
    true_logits = torch.randn(4000, 5, generator=g) * 2
    labels = torch.multinomial(true_logits.softmax(1), 1, generator=g).squeeze(1)
    overconfident = true_logits * 3  # the right T is 3
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(overconfident, labels, None) == pytest.approx(
        t, rel=0.02
    )  # 4,000 examples outweigh the prior
    before, after = classification_report(overconfident, labels), classification_report(overconfident, labels, t)
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"]
    assert before["confidence_gap"] > 0.05 and abs(after["confidence_gap"]) < 0.03
    assert before["accuracy"] == after["accuracy"]
    assert brier(torch.eye(3), torch.arange(3)) == 0.0 and confidence_gap(torch.eye(3), torch.arange(3)) == 0.0


def test_temperature_prior_shrinks_small_validation_fits_towards_one():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(40, 10, generator=g) * 4
    labels = logits.argmax(1)  # a lucky validation set: every prediction right
    plain, shrunk = fit_temperature(logits, labels, None), fit_temperature(logits, labels, 0.3)
    assert plain < 0.2 < 0.5 < shrunk < 1.0  # the plain fit sharpens without end; the prior holds T near 1
    assert fit_temperature(logits, labels, 0.05) > shrunk  # a tighter prior pulls harder
    # the MAP is where the summed NLL's slope balances the prior's: d/dlogT [n·NLL + log²T / 2σ²] = 0
    log_t = torch.tensor(math.log(shrunk), dtype=torch.float64, requires_grad=True)
    objective = torch.nn.functional.cross_entropy(logits.double() / log_t.exp(), labels, reduction="sum") + log_t**2 / (
        2 * 0.3**2
    )
    objective.backward()
    assert abs(float(log_t.grad)) < 1e-2  # of a summed objective whose terms are O(1) each
    with pytest.raises(ValueError, match="prior_sigma"):
        fit_temperature(logits, labels, 0.0)


def test_fusion_classifier_modality_masks_and_unimodal_heads():
    from latentmix.classifiers.networks import FusionClassifier

    torch.manual_seed(0)
    model = FusionClassifier(1, 12, 5, width=8).eval()
    image, text = torch.randn(3, 1, 8, 8), torch.randn(3, 12)
    fused, image_only, text_only = model(image, text, unimodal=True)
    assert fused.shape == image_only.shape == text_only.shape == (3, 5)
    no_text = model(image, text, keep_text=torch.zeros(3))
    torch.testing.assert_close(no_text, image_only)  # dropping the text = the image-only head
