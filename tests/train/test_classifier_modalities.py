"""Classifiers that read the image, the caption, or both (issue 12, part 4): fusion ERM, text-only, MixGen,
accuracy with a modality missing at test time, and the compare recipes."""

from __future__ import annotations

import pytest
import torch

from latentmix.cli import main
from latentmix.configs import TrainConfig
from latentmix.data import load_dataset
from latentmix.train.classifier import MIXGEN_SHARE, Batches, train_classifier
from latentmix.train.classifier_data import Split

TINY = {"data": "shapes", "image_size": 16, "labels_per_class": 3, "steps": 6, "eval_every": 3, "width": 8}


@pytest.mark.parametrize(
    ("settings", "reads"),
    [
        ({"modality": "text"}, "text"),
        ({"modality": "fusion", "modality_dropout": 0.0, "consistency_weight": 0.0}, "fusion"),
        ({"mixup": "mixgen"}, "fusion"),
        ({}, "image"),
    ],
)
def test_each_modality_trains_and_reports_accuracy_with_a_modality_missing(shapes_cache, settings, reads):
    config = TrainConfig(**TINY, **settings)
    assert config.reads == reads
    report = train_classifier(config, quiet=True)
    missing = report.missing_modality
    assert missing is not None and set(missing) == {"both", "image_only", "text_only"}
    assert missing["both"] == pytest.approx(report.test["accuracy"])
    test = load_dataset("shapes", split="test", image_size=16)
    blind = float(torch.bincount(test.labels).max()) / len(test)  # the best guess without the missing input
    if reads == "image":
        assert missing["image_only"] == missing["both"] and missing["text_only"] == pytest.approx(blind)
        assert report.robustness is not None
    elif reads == "text":
        assert missing["text_only"] == missing["both"] and missing["image_only"] == pytest.approx(blind)
        assert report.robustness is None
    else:
        assert report.robustness is None  # the fusion model also reads text: no image-only attack


def test_mixgen_averages_a_quarter_of_the_rows_and_concatenates_their_captions(shapes_cache):
    from latentmix.data.text import TextEncoder

    data = load_dataset("shapes", split="test", image_size=16)
    idx = list(range(40))
    encoder = TextEncoder.from_pretrained(device="cpu")
    texts = [data.texts[i] for i in idx]
    train = Split(data.images(idx), data.labels[idx], t=encoder.encode(texts), texts=texts)
    config = TrainConfig(data="shapes", batch_size=400, mixup="mixgen")
    x, y, t = Batches(config, train, None, 6, torch.Generator().manual_seed(0), encoder=encoder)()
    rows = torch.randint(40, (400,), generator=torch.Generator().manual_seed(0))
    recaptioned = (~torch.isclose(t, train.t[rows], atol=1e-6).all(1)).nonzero().flatten()  # concatenated
    changed = (~torch.isclose(x, train.x[rows]).flatten(1).all(1)).nonzero().flatten()  # averaged images
    shared = (y.max(1).values < 1).nonzero().flatten()  # labels shared with a partner of another class
    assert 0.15 < len(recaptioned) / 400 < 0.35 and MIXGEN_SHARE == 0.25
    assert set(shared.tolist()) <= set(changed.tolist()) <= set(recaptioned.tolist())
    assert len(shared) > 0.5 * len(recaptioned)  # most partners are of another class (6 classes)
    assert torch.allclose(y.sum(1), torch.ones(400)) and bool((y[shared].max(1).values == 0.5).all())


def test_settings_the_classifier_cannot_honour_are_refused(capsys):
    base = ["--quiet", "train", "--data", "shapes", "--steps", "2"]
    cases = [
        (["--modality", "image", "--mixup", "cross-modal"], "modality must be fusion or auto"),
        (["--modality", "text", "--mixup", "cutmix"], "modality text"),
        (["--modality", "fusion", "--mixup", "manifold"], "the fusion classifier takes mixup"),
        (["--modality", "text", "--augment", "synchronized"], "augment transforms images"),
    ]
    for argv, message in cases:
        assert main([*base, *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (argv, err)


def test_compare_prints_accuracy_with_a_modality_missing_for_fusion_recipes(shapes_cache, capsys):
    argv = ["--quiet", "compare", "--data", "shapes", "--image-size", "16", "--labels-per-class", "2", "--steps", "4"]
    argv += ["--eval-every", "2", "--seeds", "0", "--recipes", "fusion-erm", "image-erm", "text-only", "mixgen"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "given both modalities, the image only, the caption only" in printed
    assert "| mixgen |" in printed and "| text-only |" in printed
