"""The classifier trainer, compare, the scikit-learn-style estimator and their CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from latentmix.cli import main
from latentmix.data import DigitsDataset, labelled_subset
from latentmix.jobs.compare import format_table, run_compare
from latentmix.jobs.synthesize import SynthesisConfig, synthesize
from latentmix.train.classifier import TrainConfig, low_data_split, train_classifier
from latentmix.train.estimator import MixupClassifier

FAST = TrainConfig(labels_per_class=5, steps=60, eval_every=20, batch_size=32)


def test_labelled_subset_is_per_class_reproducible_and_disjoint_from_validation():
    labels = DigitsDataset("train").labels.numpy()
    a = labelled_subset(labels, 5, 3)
    assert len(a) == 50 and np.array_equal(np.bincount(labels[a]), np.full(10, 5))
    assert np.array_equal(a, labelled_subset(labels, 5, 3)) and not np.array_equal(a, labelled_subset(labels, 5, 4))
    labelled, val = low_data_split(labels, 5, 3)  # what the trainer draws
    assert np.array_equal(labelled, a) and len(val) == 50 and np.array_equal(np.bincount(labels[val]), np.full(10, 5))
    assert not set(a) & set(val)
    with pytest.raises(ValueError, match="fewer than labels_per_class"):
        labelled_subset(labels, 1000, 0)


@pytest.mark.parametrize("mixup", ["none", "input", "cutmix", "manifold", "cross-modal"])
def test_every_mixup_mode_trains_and_reports_calibration(mixup):
    report = train_classifier(replace(FAST, mixup=mixup), quiet=True)
    for key in ("test", "test_temperature_scaled"):
        numbers = getattr(report, key)
        assert set(numbers) == {
            "accuracy",
            "nll",
            "brier",
            "ece",
            "confidence_gap",
            "balanced_accuracy",
            "worst_class_accuracy",
        }
        assert 0.2 < numbers["accuracy"] <= 1  # well above chance (0.1) after 60 steps on 50 images
    assert report.test["accuracy"] == report.test_temperature_scaled["accuracy"]
    assert report.train_examples == 50 and report.val_examples == 50 and report.temperature > 0


def test_training_is_seeded():
    a = train_classifier(FAST, quiet=True)
    b = train_classifier(FAST, quiet=True)
    assert a.test == b.test
    assert train_classifier(replace(FAST, seed=1), quiet=True).test != a.test


def test_synthetic_set_with_soft_labels_and_gamma(tmp_path):
    synthesize(
        SynthesisConfig(
            n=64, strategy="inter-class", labels_per_class=5, subset_seed=0, shard_size=32, out=tmp_path / "syn"
        ),
        quiet=True,
    )
    report = train_classifier(replace(FAST, synthetic=str(tmp_path / "syn"), gamma=2.0), quiet=True)
    assert report.synthetic_examples == 64 and report.test["accuracy"] > 0.2
    fused = train_classifier(replace(FAST, synthetic=str(tmp_path / "syn"), mixup="cross-modal"), quiet=True)
    assert fused.synthetic_examples == 64 and fused.test["accuracy"] > 0.2
    from latentmix.train.classifier_data import load_synthetic

    syn = load_synthetic(replace(FAST, synthetic=str(tmp_path / "syn"), gamma=2.0), 10, (1, 8, 8))
    row = json.loads((tmp_path / "syn" / "metadata.jsonl").read_text().splitlines()[0])
    weight_b = (1 - row["lambda"]) ** 2
    assert float(syn.y[0, row["label_b"]]) == pytest.approx(weight_b, abs=1e-5)


def test_checkpoint_resume_gives_the_same_model(tmp_path, monkeypatch, crash_on_call):
    import latentmix.train.classifier as tc

    full = train_classifier(replace(FAST, checkpoint_dir=str(tmp_path / "a")), quiet=True)
    real = crash_on_call(tc, "soft_cross_entropy", 30)  # after the first checkpoint (step 20)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(replace(FAST, checkpoint_dir=str(tmp_path / "b")), quiet=True)
    monkeypatch.setattr(tc, "soft_cross_entropy", real)
    resumed = train_classifier(replace(FAST, checkpoint_dir=str(tmp_path / "b")), quiet=True)
    assert resumed.test == pytest.approx(full.test, rel=1e-5)
    with pytest.raises(ValueError, match="other settings"):
        train_classifier(replace(FAST, checkpoint_dir=str(tmp_path / "b"), lr=1e-3), quiet=True)


def test_feature_files_train_an_mlp_and_the_estimator_fits_tabular_data(tmp_path):
    from sklearn.datasets import load_wine
    from sklearn.preprocessing import StandardScaler

    X, y = load_wine(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    tr, te = order[:130], order[130:]
    np.savez(tmp_path / "wine.npz", X_train=X[tr], y_train=y[tr], X_test=X[te], y_test=y[te])
    report = train_classifier(
        TrainConfig(data=str(tmp_path / "wine.npz"), mixup="manifold", steps=200, eval_every=50), quiet=True
    )
    assert report.test["accuracy"] > 0.8
    with pytest.raises(ValueError, match="cutmix needs images"):
        train_classifier(TrainConfig(data=str(tmp_path / "wine.npz"), mixup="cutmix", steps=10), quiet=True)
    with pytest.raises(ValueError, match="cross-modal needs images with captions"):
        train_classifier(TrainConfig(data=str(tmp_path / "wine.npz"), mixup="cross-modal", steps=10), quiet=True)
    clf = MixupClassifier(steps=200).fit(X[tr], np.array(["a", "b", "c"])[y[tr]])
    proba = clf.predict_proba(X[te])
    assert proba.shape == (len(te), 3) and np.allclose(proba.sum(1), 1)
    assert (clf.predict(X[te]) == np.array(["a", "b", "c"])[y[te]]).mean() > 0.8
    with pytest.raises(ValueError, match="features"):
        clf.predict_proba(X[te][:, :5])


def test_compare_reports_mean_std_and_per_seed_numbers(tmp_path):
    result = run_compare(
        train=replace(FAST, steps=40),
        recipes=["erm", "blends-intra"],
        seeds=[0, 1],
        synthetic_n=32,
        workdir=str(tmp_path),
    )
    results = result.to_dict()
    erm = results["recipes"]["erm"]
    assert [p["seed"] for p in erm["per_seed"]] == [0, 1]
    accs = [p["before"]["accuracy"] for p in erm["per_seed"]]
    assert erm["summary"]["accuracy_before"]["mean"] == pytest.approx(np.mean(accs))
    assert erm["summary"]["accuracy_before"]["std"] == pytest.approx(np.std(accs, ddof=1))
    paired = results["paired"]["blends-intra"]
    blends = results["recipes"]["blends-intra"]["summary"]
    assert paired["ece"]["mean"] == pytest.approx(blends["ece_after"]["mean"] - erm["summary"]["ece_after"]["mean"])
    assert paired["accuracy"]["ci95"][0] <= paired["accuracy"]["mean"] <= paired["accuracy"]["ci95"][1]
    table = format_table(result)
    assert "| erm |" in table and "| blends-intra |" in table and "per seed" in table and "paired with erm" in table
    with pytest.raises(ValueError, match="recipes must be one of erm, .*got .magic."):
        run_compare(train=FAST, recipes=["magic"], seeds=[0])


def test_paired_differences_of_identical_recipes_are_exactly_zero():
    from latentmix.jobs.compare import paired_differences

    gen = torch.Generator().manual_seed(0)
    runs = [
        (torch.randn(50, 4, generator=gen, dtype=torch.float64), torch.randint(0, 4, (50,), generator=gen))
        for _ in range(3)
    ]
    d = paired_differences(runs, runs, resamples=20)
    assert all(v["mean"] == 0 and v["ci95"] == [0.0, 0.0] for v in d.values())
    shifted = [(z * 3, y) for z, y in runs]  # sharper logits: same accuracy, different NLL and ECE
    d = paired_differences(runs, shifted, resamples=20)
    assert d["accuracy"]["mean"] == 0 and d["nll"]["mean"] != 0 and d["ece"]["mean"] != 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--labels-per-class", "500"], "fewer than labels_per_class"),
        (["--alpha", "0"], "alpha must be a finite number > 0, got 0.0"),
        (["--synthetic", "/nonexistent"], "not a complete synthetic set"),
        (["--json", "out.txt"], "--json must be a .json path"),
    ],
)
def test_train_cli_errors_before_training(args, message, capsys):
    assert main(["--quiet", "train", "--steps", "5", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "nan", "x"])
def test_bad_temperature_prior_is_a_one_line_error(value, capsys):
    try:
        code = main(["--quiet", "train", "--steps", "5", "--temperature-prior", value])
    except SystemExit as exit_info:  # a value that is not a number: argparse's check
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("latentmix: error:")
    assert "temperature_prior must be a finite number > 0" in err or "--temperature-prior: invalid" in err
    with pytest.raises(ValueError, match="temperature_prior"):
        train_classifier(replace(FAST, temperature_prior=0.0), quiet=True)


def test_train_cli_writes_json_and_reliability_diagram(tmp_path, capsys):
    code = main(
        [
            "--quiet",
            "train",
            "--labels-per-class",
            "5",
            "--steps",
            "40",
            "--mixup",
            "input",
            "--json",
            str(tmp_path / "r.json"),
            "--reliability",
            str(tmp_path / "r.png"),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"test", "test_temperature_scaled", "temperature"} <= set(report)
    assert report["config"]["temperature_prior"] == 0.3
    assert (
        main(
            [
                "--quiet",
                "train",
                "--labels-per-class",
                "5",
                "--steps",
                "40",
                "--mixup",
                "input",
                "--temperature-prior",
                "none",
                "--json",
                str(tmp_path / "plain.json"),
            ]
        )
        == 0
    )
    plain = json.loads((tmp_path / "plain.json").read_text())  # the same model, Guo et al.'s fit
    assert plain["config"]["temperature_prior"] is None and plain["test"] == report["test"]
    assert plain["temperature"] != report["temperature"]
    assert Image.open(tmp_path / "r.png").size[0] > 500
    out = capsys.readouterr().out
    assert "temperature" in out and "robust accuracy % (inputs in [-1, 1]): clean" in out and "pgd10_eps0.1" in out
    assert set(report["robustness"]) == {"clean", "fgsm_eps0.1", "pgd10_eps0.1", "noise0.2", "blur1"}


def test_synthetic_set_with_another_class_count_is_refused(tmp_path):
    root = tmp_path / "folder"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray((torch.rand(8, 8) * 255).byte().numpy()).save(root / split / c / f"{i}.png")
    synthesize(SynthesisConfig(n=8, shard_size=8, out=tmp_path / "syn"), quiet=True)
    with pytest.raises(ValueError, match="synthetic set .* has 10 classes, the data has 2"):
        train_classifier(TrainConfig(data=str(root), synthetic=str(tmp_path / "syn"), steps=5), quiet=True)


def test_training_in_two_processes_gathers_every_test_prediction(tmp_path, torchrun):
    import tempfile

    torchrun(
        "-m",
        "latentmix",
        "--quiet",
        "train",
        "--labels-per-class",
        "5",
        "--steps",
        "30",
        "--json",
        str(tmp_path / "r.json"),
        cwd=tempfile.mkdtemp(),
    )
    report = json.loads((tmp_path / "r.json").read_text())
    correct = report["test"]["accuracy"] * 360  # all 360 test digits, each counted once
    assert abs(correct - round(correct)) < 1e-3 and report["val_examples"] == 50
