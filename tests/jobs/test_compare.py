"""latentmix compare: what it leaves on disk and what its verdicts say."""

from __future__ import annotations

import tempfile

from latentmix.jobs.compare import run_compare, verdicts
from latentmix.train.classifier import TrainConfig


def test_compare_without_a_workdir_leaves_nothing_behind(tmp_path, monkeypatch):
    """The synthetic sets and ERM judges of a run without --workdir go to a temporary directory, removed at the end."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    base = TrainConfig(labels_per_class=3, steps=20, eval_every=10, batch_size=16)
    result = run_compare(train=base, recipes=["erm", "blends-intra"], seeds=[0], backend="digits-vae",
                         synthetic_n=20, quiet=True)  # fmt: skip
    assert result.recipes["blends-intra"]["per_seed"][0]["synthetic_examples"] == 20
    assert list(tmp_path.iterdir()) == []


def _results(mean: float, lo: float, hi: float, agreement: float | None) -> dict:
    summary = {} if agreement is None else {"erm_agreement": {"mean": agreement, "std": 0.0}}
    return {
        "baseline": "erm",
        "paired": {"blends": {"accuracy": {"mean": mean, "ci95": [lo, hi]}}},
        "recipes": {"erm": {"summary": {}}, "blends": {"summary": summary}},
    }


def test_verdicts_call_samples_off_class_only_when_the_erm_classifier_disagrees_with_them():
    hurt_off = verdicts(_results(-0.02, -0.03, -0.01, 0.6))["blends"]
    assert hurt_off.startswith("blends HURT: -2.0 accuracy points vs erm [-3.0, -1.0]")
    assert "agrees with only 60 % of its samples (off-class samples): try the filtered recipe" in hurt_off
    hurt_on = verdicts(_results(-0.02, -0.03, -0.01, 0.99))["blends"]
    assert hurt_on.endswith("erm's classifier agrees with 99 % of its samples") and "off-class" not in hurt_on
    assert verdicts(_results(0.02, 0.01, 0.03, 0.99))["blends"].startswith("blends helped: +2.0")
    assert "no measurable difference" in verdicts(_results(0.0, -0.01, 0.01, None))["blends"]
