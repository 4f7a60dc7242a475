"""Hugging Face `datasets` data as input: a save_to_disk directory, parquet files and an image folder of the same
digits give the same tensors, the same training run and the same synthetic images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentmix.cli import main
from latentmix.configs import SynthesisConfig, TrainConfig
from latentmix.data import load_dataset
from latentmix.data.hf import HFDataset
from latentmix.jobs.synthesize import synthesize
from latentmix.train.classifier import train_classifier


@pytest.fixture(scope="module")
def three_forms(tmp_path_factory):
    """The first 450 of scikit-learn's digits (300 train, 150 test) as a class-subfolder image folder, as a
    DatasetDict saved with save_to_disk, and as train/test parquet files (rows in the folder's order)."""
    import datasets
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("hf")
    digits = load_digits()
    images = [Image.fromarray((x * 255 / 16).astype(np.uint8)) for x in digits.images[:450]]
    splits = {"train": range(300), "test": range(300, 450)}
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(c) for c in range(10)])}
    )
    tables = {}
    for split, rows in splits.items():
        for i in rows:
            folder = root / "folder" / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            images[i].save(folder / f"{i:04d}.png")
        order = sorted(rows, key=lambda i: (str(digits.target[i]), i))
        tables[split] = datasets.Dataset.from_dict(
            {"image": [images[i] for i in order], "label": [int(digits.target[i]) for i in order]}, features=features
        )
    table = datasets.DatasetDict(tables)
    table.save_to_disk(str(root / "disk"))
    (root / "parquet").mkdir()
    for split in table:
        table[split].to_parquet(str(root / "parquet" / f"{split}.parquet"))
    return {name: root / name for name in ("folder", "disk", "parquet")}


def test_the_same_rows_give_the_same_images_labels_and_training_run(three_forms):
    folder = load_dataset(three_forms["folder"], split="train")
    for form in ("disk", "parquet"):
        data = load_dataset(three_forms[form], split="train")
        assert isinstance(data, HFDataset) and data.class_names == folder.class_names
        assert torch.equal(data.labels, folder.labels) and data.texts == folder.texts
        assert torch.equal(data.images(range(len(data))), folder.images(range(len(folder))))
        assert (data.native_size, data.native_channels) == (8, 1)
    runs = {form: train_classifier(TrainConfig(data=str(path), labels_per_class=5, steps=30, eval_every=15), quiet=True)
            for form, path in three_forms.items()}  # fmt: skip
    assert runs["disk"].test == runs["folder"].test == runs["parquet"].test


def test_synthesize_from_a_dataset_writes_the_images_a_folder_gives(three_forms, tmp_path):
    for form in ("folder", "disk"):
        synthesize(SynthesisConfig(backend="digits-vae", data=str(three_forms[form]), n=12, labels_per_class=2,
                                   strategy="intra-class", out=str(tmp_path / form)), quiet=True)  # fmt: skip
    files = sorted(p.relative_to(tmp_path / "folder") for p in (tmp_path / "folder" / "images").rglob("*.png"))
    assert len(files) == 12
    assert all((tmp_path / "folder" / f).read_bytes() == (tmp_path / "disk" / f).read_bytes() for f in files)
    rows = [json.loads(r) for r in (tmp_path / "disk" / "metadata.jsonl").read_text().splitlines()]
    assert rows[0]["source_a"].startswith("train/")


def test_columns_are_found_by_feature_and_name_and_can_be_chosen(tmp_path):
    import datasets

    images = [Image.new("RGB", (12, 12), (30 * i, 0, 0)) for i in range(4)]
    table = datasets.Dataset.from_dict(
        {"img": images, "fine_label": [1, 0, 1, 0], "caption": ["a b", "c d", "e f", "g h"], "note": list("wxyz")},
        features=datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=["zebra", "b"]),
            "caption": datasets.Value("string"), "note": datasets.Value("string")}),
    )  # fmt: skip
    table.save_to_disk(str(tmp_path / "t"))
    data = load_dataset(tmp_path / "t")
    assert data.columns == {"image": "img", "label": "fine_label", "text": "caption"}
    assert data.class_names == ["zebra", "b"] and data.labels.tolist() == [1, 0, 1, 0]
    assert data.texts == ["a b", "c d", "e f", "g h"] and data.captioned and data.images([0]).shape == (1, 3, 12, 12)
    chosen = HFDataset(tmp_path / "t", text_column="note")
    assert chosen.texts == list("wxyz")
    # on the command line, for every job: options after the data
    assert load_dataset(f"{tmp_path / 't'}?text=note&label=fine_label").texts == list("wxyz")
    with pytest.raises(ValueError, match="unknown option 'colour' after '\\?'; options: image, label, text"):
        load_dataset(f"{tmp_path / 't'}?colour=red")


def test_the_cli_prints_the_columns_it_read_once(three_forms, tmp_path, capsys):
    data = str(three_forms["disk"])
    args = [
        "grid",
        "--backend",
        "digits-vae",
        "--data",
        data,
        "--pairs",
        "0:1",
        "--steps",
        "3",
        "--out",
        str(tmp_path / "g.png"),
    ]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.count(f"latentmix: data {data} (test): image 'image', label 'label', no text column") == 1
    assert main(["--quiet", *args]) == 0 and "latentmix: data" not in capsys.readouterr().out


def test_bad_datasets_are_refused_with_one_line(tmp_path, capsys, monkeypatch):
    import datasets

    datasets.Dataset.from_dict({"pixels": [[0, 1]], "label": [0]}).save_to_disk(str(tmp_path / "noimage"))
    with pytest.raises(ValueError, match="has no image column .*columns: pixels, label"):
        load_dataset(tmp_path / "noimage")
    datasets.Dataset.from_dict({"image": [Image.new("L", (4, 4))], "label": ["cat"]}).save_to_disk(
        str(tmp_path / "str")
    )
    with pytest.raises(ValueError, match="label_column: column 'label' .* must hold integers or a ClassLabel, got str"):
        load_dataset(tmp_path / "str")
    with pytest.raises(ValueError, match="text_column: data .* has no column 'words'"):
        HFDataset(tmp_path / "str", text_column="words")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": [Image.new("L", (4, 4))], "label": [0]})}
                         ).save_to_disk(str(tmp_path / "trainonly"))  # fmt: skip
    with pytest.raises(ValueError, match="has no split 'test' \\(its splits: train\\)"):
        load_dataset(tmp_path / "trainonly", split="test")
    assert len(load_dataset(f"{tmp_path / 'trainonly'}?test=train", split="test")) == 1  # a split named for test
    with pytest.raises(ValueError, match="has no split 'dev'"):
        load_dataset(f"{tmp_path / 'trainonly'}?test=dev", split="test")
    import io

    png = io.BytesIO()
    Image.new("L", (8, 8)).save(png, "PNG")
    rows = [{"bytes": png.getvalue(), "path": None}, {"bytes": b"not a png", "path": None}]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    bad = datasets.Dataset.from_dict({"image": rows * 2, "label": [0, 1, 0, 1]}, features=features)
    bad.to_parquet(str(tmp_path / "bad.parquet"))
    whole = (tmp_path / "bad.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    for name, message in (("bad", "row 1 holds an image that cannot be decoded"), ("cut", "cannot be read (Parquet")):
        out = tmp_path / f"{name}.json"
        argv = ["--quiet", "train", "--data", str(tmp_path / f"{name}.parquet"), "--steps", "2", "--json", str(out)]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not out.exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    argv = ["grid", "--backend", "digits-vae", "--data", "hf://latentmix-no-such/dataset"]
    assert main([*argv, "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "datasets.load_dataset('latentmix-no-such/dataset') failed" in err[0]
    assert not Path(tmp_path / "g.png").exists()


def test_a_low_data_run_decodes_only_its_labelled_and_validation_rows(three_forms, monkeypatch):
    decoded = {"train": 0, "test": 0}
    real = HFDataset.load_image

    def counting(self, index):
        decoded[self.split_name] += 1
        return real(self, index)

    monkeypatch.setattr(HFDataset, "load_image", counting)
    train_classifier(TrainConfig(data=str(three_forms["disk"]), labels_per_class=2, steps=4, eval_every=2), quiet=True)
    assert decoded["train"] == 2 * 10 * 2  # 2 labelled + 2 validation per class, not the split's 300 rows
    assert decoded["test"] == 150


def test_column_and_split_flags_of_every_data_job_read_what_the_data_options_read(three_forms, tmp_path, capsys):
    import datasets

    from latentmix.cli import _data_commands, build_parser
    from latentmix.data.hf import with_options

    commands = {p.prog.removeprefix("latentmix ") for p in _data_commands(build_parser())}
    assert {"grid", "walk", "synthesize", "train", "compare", "evaluate", "explore", "fit vae", "fit ldm",
            "fit lora"} <= commands  # fmt: skip
    # the digits rows under other names: split "fit" / "holdout", image "pic", plain integer label "y"
    disk = datasets.load_from_disk(str(three_forms["disk"]))
    renamed = datasets.DatasetDict({"fit": disk["train"], "holdout": disk["test"]})
    renamed = renamed.rename_columns({"image": "pic", "label": "y"}).cast_column("y", datasets.Value("int64"))
    renamed.save_to_disk(str(tmp_path / "renamed"))
    base = ["train", "--steps", "6", "--eval-every", "3", "--labels-per-class", "3"]
    flags = ["--data", str(tmp_path / "renamed"), "--image-column", "pic", "--label-column", "y",
             "--train-split", "fit", "--test-split", "holdout"]  # fmt: skip
    assert main(["--quiet", *base, *flags, "--json", str(tmp_path / "flags.json")]) == 0, capsys.readouterr().err
    options = f"{tmp_path / 'renamed'}?image=pic&label=y&train=fit&test=holdout"
    assert main(["--quiet", *base, "--data", options, "--json", str(tmp_path / "options.json")]) == 0
    assert main(["--quiet", *base, "--data", str(three_forms["disk"]), "--json", str(tmp_path / "same.json")]) == 0
    read = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in ("flags", "options", "same")}
    assert read["flags"]["test"] == read["options"]["test"] == read["same"]["test"]
    assert with_options(str(tmp_path / "renamed"), image_column="pic", test_split="holdout") == (
        f"{tmp_path / 'renamed'}?image=pic&test=holdout"
    )
    assert with_options("cifar10", data_config="plain_text") == "hf://cifar10:plain_text"
    assert with_options("hf://cifar10:plain_text", label_column="label") == "hf://cifar10:plain_text?label=label"
    refused = {  # one line, exit status 2, before anything is read
        "--label-column applies to datasets data": ["--data", "shapes", "--label-column", "y"],
        "--image-column needs --data": ["--image-column", "pic"],
        "--test-split holdout contradicts data": ["--data", f"{tmp_path / 'renamed'}?test=fit", "--test-split",
                                                 "holdout"],
        "--data-config applies to a hub id": ["--data", str(tmp_path / "renamed"), "--data-config", "x"],
        "has no split 'dev'": ["--data", str(tmp_path / "renamed"), "--image-column", "pic", "--label-column", "y",
                               "--train-split", "dev"],
    }  # fmt: skip
    for message, argv in refused.items():
        assert main(["--quiet", *base, *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
