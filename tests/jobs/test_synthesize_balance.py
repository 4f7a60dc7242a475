"""Long-tailed labelled draws, class re-weighting and class balancing by synthesis (issue 14, part 4)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from latentmix.classifiers.metrics import per_class_accuracy
from latentmix.cli import main
from latentmix.data import DigitsDataset, labelled_subset, long_tailed_counts
from latentmix.jobs.compare import format_table, run_compare
from latentmix.jobs.synthesize import SynthesisConfig, synthesize
from latentmix.latent.pairing import Pairing, balance_quota
from latentmix.train.classifier import TrainConfig, balanced_class_weights, low_data_split, train_classifier
from latentmix.train.mixup import soft_cross_entropy

LABELS = DigitsDataset("train").labels.numpy()


def test_long_tailed_draw_follows_the_documented_profile_and_nests_in_the_balanced_draw():
    counts = long_tailed_counts(10, 50, 10)
    assert counts.tolist() == [50, 39, 30, 23, 18, 14, 11, 8, 6, 5]  # round(50 * 10 ** (-r / 9))
    assert long_tailed_counts(3, 7, 1).tolist() == [7, 7, 7] and long_tailed_counts(2, 3, 100).tolist() == [3, 1]
    subset = labelled_subset(LABELS, 50, 2, imbalance_ratio=10)
    assert np.bincount(LABELS[subset]).tolist() == counts.tolist()
    assert set(subset) <= set(labelled_subset(LABELS, 50, 2))  # the same draw, cut per class
    labelled, val = low_data_split(LABELS, 50, 2, imbalance_ratio=10)
    assert np.array_equal(labelled, subset) and np.bincount(LABELS[val]).tolist() == counts.tolist()
    assert not set(labelled) & set(val)
    for bad in (0.5, -1, float("nan"), True, "10"):
        with pytest.raises(ValueError, match="imbalance_ratio must be a finite number >= 1"):
            long_tailed_counts(10, 50, bad)


def test_balance_quota_fills_every_class_to_the_target_and_refuses_a_target_below_the_largest():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 3)
    assert balance_quota(labels, 0).tolist() == [0, 3, 2]
    assert balance_quota(labels, 8).tolist() == [3, 6, 5]
    with pytest.raises(ValueError, match="balance target 4 is below the largest class's count .5, class 0."):
        balance_quota(labels, 4)
    with pytest.raises(ValueError, match="nothing to balance"):
        balance_quota(np.array([0, 0, 1, 1]), 0)


def test_quota_pairing_gives_each_class_exactly_its_quota_per_index():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 3)
    quota = balance_quota(labels, 8)
    pairing = Pairing("intra-class", labels, seed=3, quota=quota)
    a, b = pairing.pairs(np.arange(quota.sum()))
    assert np.array_equal(labels[a], labels[b]) and (a != b).all()
    assert np.bincount(labels[a], minlength=3).tolist() == quota.tolist()
    part = pairing.pairs(np.arange(4, 11))  # any range on its own: the same pairs
    assert np.array_equal(part[0], a[4:11]) and np.array_equal(part[1], b[4:11])
    assert not np.array_equal(Pairing("intra-class", labels, seed=4, quota=quota).pairs(np.arange(14))[0], a)
    with pytest.raises(ValueError, match=r"sample indices must be in \[0, 14\)"):
        pairing.pairs(np.array([14]))
    with pytest.raises(ValueError, match="class 1 has 1 example.s.; balancing by intra-class blends needs 2"):
        Pairing("intra-class", np.array([0, 0, 0, 1]), seed=0, quota=np.array([0, 2]))
    with pytest.raises(ValueError, match="quota applies to strategy intra-class"):
        Pairing("random", labels, seed=0, quota=quota)


def test_synthesize_balance_writes_the_missing_samples_per_class(tmp_path):
    config = SynthesisConfig(labels_per_class=6, imbalance_ratio=3, subset_seed=1, balance=0, shard_size=16)
    result = synthesize(replace(config, out=tmp_path / "bal"), quiet=True)
    real = long_tailed_counts(10, 6, 3)
    assert result.num_samples == int((6 - real).sum())
    manifest = json.loads((tmp_path / "bal" / "manifest.json").read_text())
    assert list(manifest["balance"]["real"].values()) == real.tolist()
    assert set(manifest["balance"]["total"].values()) == {6} and manifest["balance"]["target"] == 6
    rows = [json.loads(line) for line in (tmp_path / "bal" / "metadata.jsonl").read_text().splitlines()]
    assert all(r["label_a"] == r["label_b"] == r["label"] for r in rows)  # intra-class: the label is unmixed
    assert main(["--quiet", "synthesize", "--labels-per-class", "6", "--imbalance-ratio", "3", "--subset-seed",
                 "1", "--balance", "max", "--shard-size", "16", "--out", str(tmp_path / "bal")]) == 0  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--labels-per-class", "6", "--imbalance-ratio", "3", "--balance", "5"], "below the largest class's count"),
        (["--balance", "max", "--strategy", "random"], "strategy must be intra-class"),
        (["--imbalance-ratio", "3"], "imbalance_ratio needs labels_per_class"),
        (["--labels-per-class", "6", "--imbalance-ratio", "0.5"], "imbalance-ratio"),
        (["--balance", "-3"], "balance"),
    ],
)
def test_bad_balance_settings_exit_2_with_one_line(tmp_path, capsys, argv, message):
    try:
        code = main(["--quiet", "synthesize", *argv, "--out", str(tmp_path / "x")])
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert message in err or message in err.replace("_", "-")
    assert not (tmp_path / "x").exists()


def test_class_weights_and_per_class_accuracy():
    labels = torch.tensor([0, 0, 0, 1])
    w = balanced_class_weights(labels, 3)
    assert torch.allclose(w, torch.tensor([2 / 3, 2.0, 0.0]))
    assert float(w[labels].mean()) == pytest.approx(1.0)  # the weights average 1 over the examples
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    onehot = torch.nn.functional.one_hot(labels, 3).float()
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=w, reduction="none").mean()
    assert soft_cross_entropy(logits, onehot, w) == pytest.approx(float(expected))
    assert soft_cross_entropy(logits, onehot) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)))
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert per_class_accuracy(probs, torch.tensor([0, 0, 1, 1])) == {"balanced_accuracy": 0.75,
                                                                      "worst_class_accuracy": 0.5}  # fmt: skip


def test_pooled_batches_draw_real_and_synthetic_rows_uniformly():
    from latentmix.train.classifier import Batches
    from latentmix.train.classifier_data import Split

    real = Split(torch.zeros(30, 1, 2, 2), torch.zeros(30, dtype=torch.long))  # 30 of class 0
    syn = Split(torch.ones(90, 1, 2, 2), torch.nn.functional.one_hot(torch.ones(90, dtype=torch.long), 2).float())
    config = TrainConfig(batch_size=4000, synthetic="set", synthetic_pooled=True)
    batches = Batches(config, real, syn, 2, torch.Generator().manual_seed(0))
    assert batches.ratio == 0.75  # 90 of 120 examples are synthetic
    _, y, _ = batches()
    assert abs(float(y[:, 1].mean()) - 0.75) < 0.03
    assert Batches(replace(config, synthetic_pooled=False), real, syn, 2, torch.Generator()).ratio == 0.5


def test_trainer_long_tailed_reweighted_and_pooled_runs(tmp_path):
    base = TrainConfig(labels_per_class=6, imbalance_ratio=3, steps=40, eval_every=20, batch_size=32)
    report = train_classifier(base, quiet=True)
    assert report.train_examples == report.val_examples == int(long_tailed_counts(10, 6, 3).sum())
    assert {"balanced_accuracy", "worst_class_accuracy"} <= set(report.test)
    assert report.test["worst_class_accuracy"] <= report.test["balanced_accuracy"]
    weighted = train_classifier(replace(base, class_weights="balanced"), quiet=True)
    assert weighted.test != report.test  # the weights change the loss
    with pytest.raises(ValueError, match="imbalance_ratio needs labels_per_class"):
        train_classifier(TrainConfig(imbalance_ratio=3), quiet=True)
    with pytest.raises(ValueError, match="synthetic_pooled needs a synthetic set"):
        train_classifier(replace(base, synthetic_pooled=True), quiet=True)

    recipes = ["erm", "class-reweight", "blends-balance", "blends-balance+reweight"]
    result = run_compare(
        train=base, recipes=recipes, seeds=[0, 1], backend="digits-vae", workdir=str(tmp_path), quiet=True
    )
    results = result.to_dict()
    rows = results["recipes"]["blends-balance"]["per_seed"]
    assert rows[0]["synthetic_examples"] == int((6 - long_tailed_counts(10, 6, 3)).sum())
    reweighted = results["recipes"]["class-reweight"]["per_seed"][0]["before"]
    assert reweighted["accuracy"] == weighted.test["accuracy"]  # the recipe is the trainer's --class-weights
    both = results["recipes"]["blends-balance+reweight"]["per_seed"]
    assert both[0]["synthetic_examples"] == rows[0]["synthetic_examples"]  # the same balanced set, weighted
    assert both[0]["before"]["accuracy"] != rows[0]["before"]["accuracy"]
    d = results["paired_class_balance"]["blends-balance"]["worst_class_accuracy"]
    assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    table = format_table(result)
    assert "class balance" in table and "Δ worst_class_accuracy" in table
