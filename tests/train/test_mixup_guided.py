"""Adversarial feature mixing, the depth curriculum and saliency-guided mixing: label weights, budgets, boxes,
determinism, the trainer's modes and their bad input."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from latentmix.cli import main
from latentmix.configs import TrainConfig
from latentmix.train.classifier import train_classifier
from latentmix.train.mixup import ManifoldMixup, soft_cross_entropy, soft_targets
from latentmix.train.mixup_guided import AdversarialManifoldMixup, DepthCurriculum, SaliencyMix


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )  # fmt: skip


def _batch(n: int = 12):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 10, 10, generator=g), torch.randint(0, 5, (n,), generator=g)


# -- adversarial feature mixing ---------------------------------------------------------------------------
@pytest.mark.parametrize("granularity", ["sample", "channel"])
@pytest.mark.parametrize("layer", ["input", "1", "4"])
def test_adversarial_weights_stay_in_budget_and_labels_follow_them(granularity, layer):
    model, (x, y) = _net(), _batch()
    mixer = AdversarialManifoldMixup(model, [layer], 5, budget=0.15, steps=2, granularity=granularity,
                                     generator=torch.Generator().manual_seed(3))  # fmt: skip
    seen = {}
    original = mixer._forward

    def spy(xx, name, mix):
        def record(h):
            out = mix(h)
            seen["h"], seen["out"] = h.detach(), out.detach()
            return out

        return original(xx, name, record)

    mixer._forward = spy
    x_before = x.clone()
    _, targets, used = mixer(x, y)
    assert used == layer and torch.equal(x, x_before)
    torch.testing.assert_close(targets.sum(1), torch.ones(len(x)))
    # recover the per-row weights from the final mix and check the budget and the label weights
    lam0 = AdversarialManifoldMixup(model, [layer], 5, budget=0.15, generator=torch.Generator().manual_seed(3))
    g = lam0.generator
    torch.randint(1, (1,), generator=g)
    perm = torch.randperm(len(x), generator=g)
    from latentmix.train.mixup import draw_lambdas

    start = draw_lambdas(len(x), 2.0, "elem", g, "cpu").float()
    h, out = seen["h"], seen["out"]
    diff = h - h[perm]
    dims = tuple(range(2, h.dim())) if granularity == "channel" else tuple(range(1, h.dim()))
    energy = (diff * diff).sum(dims)
    w = ((out - h[perm]) * diff).sum(dims) / energy.clamp_min(1e-12)
    seen_w = energy > 1e-6  # rows (or channels) where the partner differs: there the weight is visible
    start = start.view(-1, *([1] * (w.dim() - 1))).expand_as(w)
    assert bool(((w - start).abs()[seen_w] <= 0.15 + 1e-4).all())
    assert bool(((w >= -1e-4) & (w <= 1 + 1e-4))[seen_w].all())
    if granularity == "channel" and layer == "1":  # BatchNorm output: every channel visible, and they differ
        assert bool((w.std(1) > 1e-3).any())
    if granularity == "sample" or layer in ("input", "1"):  # the label weight is the weight (channels: their mean)
        onehot = soft_targets(y, 5)
        lw = w.reshape(len(w), -1).mean(1)
        keep = seen_w.reshape(len(w), -1).all(1)
        assert int(keep.sum()) >= len(x) - 2
        want = lw[:, None] * onehot + (1 - lw[:, None]) * onehot[perm]
        torch.testing.assert_close(targets[keep], want[keep], atol=2e-4, rtol=0)


def test_the_ascent_raises_the_loss_and_leaves_batchnorm_as_one_forward_would():
    model, (x, y) = _net(), _batch(32)

    def run(budget: float):
        m = AdversarialManifoldMixup(model, ["input"], 5, budget=budget, generator=torch.Generator().manual_seed(5))
        model.eval()  # the same function for both runs: compare losses, not BatchNorm batches
        logits, targets, _ = m(x, y)
        return float(soft_cross_entropy(logits, targets).detach())

    plain, adversarial = run(0.0), run(0.1)
    assert adversarial > plain
    model.train()
    bn = model[1]
    before = bn.num_batches_tracked.clone()
    AdversarialManifoldMixup(model, ["2"], 5, budget=0.2, steps=3)(x, y)
    assert int(bn.num_batches_tracked - before) == 1  # the ascent passes were undone


def test_adversarial_budget_zero_is_manifold_mixup_at_the_sampled_lambda():
    model, (x, y) = _net(), _batch()
    model.eval()
    logits, _, _ = AdversarialManifoldMixup(model, ["input"], 5, budget=0.0,
                                                  generator=torch.Generator().manual_seed(9))(x, y)  # fmt: skip
    g = torch.Generator().manual_seed(9)
    torch.randint(1, (1,), generator=g)
    perm = torch.randperm(len(x), generator=g)
    from latentmix.train.mixup import draw_lambdas

    lam = draw_lambdas(len(x), 2.0, "elem", g, "cpu").float()
    mixed = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[perm]
    torch.testing.assert_close(logits, model(mixed), atol=1e-5, rtol=0)


def test_adversarial_mixing_is_deterministic_under_a_generator_and_refuses_bad_settings():
    model, (x, y) = _net(), _batch()
    model.eval()
    a = AdversarialManifoldMixup(model, ["input", "2"], 5, generator=torch.Generator().manual_seed(4))(x, y)
    b = AdversarialManifoldMixup(model, ["input", "2"], 5, generator=torch.Generator().manual_seed(4))(x, y)
    c = AdversarialManifoldMixup(model, ["input", "2"], 5, generator=torch.Generator().manual_seed(5))(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    for kwargs, message in (
        ({"budget": -0.1}, "budget must be a number in"),
        ({"steps": 0}, "steps must be a positive int"),
        ({"granularity": "pixel"}, "granularity must be one of"),
        ({"alpha": 0}, "alpha must be > 0"),
    ):
        with pytest.raises(ValueError, match=message):
            AdversarialManifoldMixup(model, ["input"], 5, **kwargs)
    with pytest.raises(ValueError, match="unknown layer 'block9'"):
        AdversarialManifoldMixup(model, ["block9"], 5)


# -- depth curriculum -----------------------------------------------------------------------------------
def test_depth_curriculum_moves_from_the_input_to_the_deepest_layer():
    layers = ["input", "block1", "block2", "block3"]
    linear = DepthCurriculum(layers, 100)
    assert [linear.eligible(s) for s in (0, 20, 50, 80, 100, 500)] == [
        ["input"], ["block1"], ["block2"], ["block2"], ["block3"], ["block3"]]  # fmt: skip
    stepped = DepthCurriculum(layers, 100, "step")
    assert [stepped.eligible(s)[0] for s in (0, 24, 25, 60, 99)] == ["input", "input", "block1", "block2", "block3"]
    wide = DepthCurriculum(layers, 10, width=2)
    assert wide.eligible(0) == ["input", "block1"] and wide.eligible(10) == ["block2", "block3"]
    for kwargs, message in (({"width": 5}, "width 5 is more than"), ({"schedule": "cosine"}, "schedule must be")):
        with pytest.raises(ValueError, match=message):
            DepthCurriculum(layers, 10, **kwargs)


def test_manifold_mixup_takes_the_curriculum_window():
    model, (x, y) = _net(), _batch()
    mixer = ManifoldMixup(model, ["input", "2", "4"], 5, generator=torch.Generator().manual_seed(0))
    assert {mixer(x, y, ["4"])[2] for _ in range(5)} == {"4"}
    with pytest.raises(ValueError, match="unknown layer"):
        mixer(x, y, ["nope"])


# -- saliency-guided mixing -----------------------------------------------------------------------------
def _peaked(n: int = 16):
    """Black images with one bright pixel each, at a known place, and a model whose first layer sees them."""
    g = torch.Generator().manual_seed(2)
    x = torch.zeros(n, 1, 12, 12)
    where = torch.randint(0, 12, (n, 2), generator=g)
    x[torch.arange(n), 0, where[:, 0], where[:, 1]] = 1.0
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.Flatten(), nn.Linear(144, 3))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    return model, x, torch.randint(0, 3, (n,), generator=g), where


def test_saliency_box_covers_the_pasted_images_salient_point_and_labels_follow_the_area():
    model, x, y, where = _peaked()
    out = SaliencyMix(model, "0", 3, alpha=1.0, generator=torch.Generator().manual_seed(0))(x, y)
    pasted = 0
    for i, j in enumerate(out.perm.tolist()):
        if j != i and float(out.lam[i]) < 1.0:
            r, c = where[j].tolist()
            assert float(out.x[i, 0, r, c]) == 1.0  # the partner's salient pixel was pasted in
            pasted += 1
    assert pasted >= len(x) // 2
    torch.testing.assert_close(out.y.sum(1), torch.ones(len(x)))
    onehot = soft_targets(y, 3)
    torch.testing.assert_close(out.y, out.lam[:, None] * onehot + (1 - out.lam[:, None]) * onehot[out.perm])


def test_saliency_mix_label_weight_is_the_share_not_pasted_and_is_deterministic():
    model, (x, y) = _net(), _batch(20)
    mk = lambda seed: SaliencyMix(model, "2", 5, generator=torch.Generator().manual_seed(seed))(x, y)  # noqa: E731
    a, b, c = mk(0), mk(0), mk(1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and not torch.equal(a.x, c.x)
    changed = (a.x != x).any(1)  # (B, H, W) pixels taken from the partner (where it differs)
    partner_differs = (x[a.perm] != x).any(1)
    share = changed.float().sum((1, 2)) / 100
    moved = partner_differs.all((1, 2))
    torch.testing.assert_close(1 - a.lam[moved], share[moved])
    model.train()
    bn = model[1]
    before = bn.num_batches_tracked.clone()
    mk(3)
    assert torch.equal(bn.num_batches_tracked, before) and model.training  # saliency runs in eval mode
    with pytest.raises(ValueError, match="not the input"):
        SaliencyMix(model, "input", 5)
    with pytest.raises(ValueError, match="unknown layer"):
        SaliencyMix(model, "nope", 5)
    with pytest.raises(ValueError, match="needs a \\(B, C, H, W\\) map"):
        SaliencyMix(model, "7", 5)(x, y)


# -- the trainer ------------------------------------------------------------------------------------------
FAST = TrainConfig(labels_per_class=5, steps=40, eval_every=20, batch_size=32)


@pytest.mark.parametrize(
    "settings",
    [
        {"mixup": "adversarial-manifold"},
        {"mixup": "adversarial-manifold", "adversarial_granularity": "channel", "depth_curriculum": "step"},
        {"mixup": "manifold", "depth_curriculum": "linear"},
        {"mixup": "saliency"},
    ],
)
def test_new_modes_train_end_to_end(settings):
    report = train_classifier(replace(FAST, **settings), quiet=True)
    assert 0.2 < report.test["accuracy"] <= 1 and report.steps_run == 40


def test_adversarial_robust_recipe_sets_the_study_settings(tmp_path):
    from latentmix.jobs.compare import recipe_config

    config = recipe_config(FAST, "adversarial-robust", 3, tmp_path)
    assert (config.mixup, config.adversarial_budget, config.adversarial_steps) == ("adversarial-manifold", 0.5, 3)
    assert config.adversarial_granularity == "channel" and config.seed == 3 and config.synthetic is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mixup", "adversarial-manifold", "--adversarial-budget", "-0.1"], "adversarial_budget must be"),
        (["--mixup", "saliency", "--saliency-layer", "block9"], "no module 'block9'; nearest: block"),
        (["--mixup", "input", "--depth-curriculum", "linear"], "depth_curriculum applies to manifold"),
        (["--mixup", "manifold", "--saliency-layer", "block1"], "saliency_layer applies to saliency"),
    ],
)
def test_bad_settings_are_one_line_and_status_2(args, message, capsys):
    assert main(["--quiet", "train", "--steps", "2", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
