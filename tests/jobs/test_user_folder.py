"""A user's RGB imagefolder of mixed sizes and modes (RGB, RGBA, L, palette), every job end to end (issue 11)."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from latentmix.cli import main
from latentmix.data import SyntheticDataset, load_dataset

MODES = ("RGB", "RGBA", "L", "P")
SIZES = ((16, 16), (24, 24), (20, 26), (32, 20))


@pytest.fixture(scope="module")
def mixed_folder(photo_patches, tmp_path_factory):
    """photo_patches re-saved as a user's folder would hold them: every mode and several sizes, as .png and .jpg."""
    root = tmp_path_factory.mktemp("mixed") / "my-photos"
    shutil.copytree(photo_patches, root)
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (root / split / "metadata.jsonl").read_text().splitlines()]
        for i, row in enumerate(rows):
            path = root / split / row["file_name"]
            with Image.open(path) as image:
                image = image.convert("RGB").resize(SIZES[i % len(SIZES)])
            mode = MODES[i % len(MODES)]
            converted = image.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else image.convert(mode)
            path.unlink()
            if mode == "RGB" and i % 8 == 0:
                row["file_name"] = row["file_name"].rsplit(".", 1)[0] + ".jpg"
                path = root / split / row["file_name"]
            converted.save(path)
        (root / split / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def test_every_job_runs_on_a_folder_of_mixed_sizes_and_modes(mixed_folder, tmp_path, capsys):
    data = str(mixed_folder)
    modes = {Image.open(p).mode for p in mixed_folder.rglob("*.*") if p.suffix in (".png", ".jpg")}
    assert modes == {"RGB", "RGBA", "L", "P"}
    with pytest.raises(ValueError, match="no single square size"):
        load_dataset(data, split="train")
    train = load_dataset(data, split="train", image_size=16)
    assert train.channels == 3 and train.images(range(8)).shape[1:] == (3, train.image_size, train.image_size)

    tiny = ["--epochs", "2", "--block-channels", "8", "16", "--latent-channels", "4", "--image-size", "16"]
    assert main(["--quiet", "fit", "vae", "--data", data, *tiny, "--out", str(tmp_path / "vae")]) == 0
    vae = str(tmp_path / "vae")
    assert main(["--quiet", "grid", "--backend", vae, "--data", data, "--pairs", "0:1", "2:3",
                 "--steps", "4", "--out", str(tmp_path / "grid.png")]) == 0  # fmt: skip
    assert Image.open(tmp_path / "grid.png").size[0] > 4 * 16
    assert main(["--quiet", "synthesize", "--backend", vae, "--data", data, "-n", "24",
                 "--shard-size", "8", "--out", str(tmp_path / "pairs")]) == 0  # fmt: skip
    pairs = SyntheticDataset(tmp_path / "pairs")
    assert len(pairs) == 24 and pairs.class_names == train.class_names and all(t for t in pairs.texts)
    assert main(["--quiet", "train", "--data", data, "--synthetic", str(tmp_path / "pairs"), "--image-size", "16",
                 "--steps", "20", "--eval-every", "10", "--json", str(tmp_path / "train.json")]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "train.json").read_text())
    assert 0 <= metrics["test"]["accuracy"] <= 1 and "ece" in json.dumps(metrics)
    fit_reference = ["--quiet", "fit", "reference-classifier", "--data", data, "--epochs", "2", "--width", "8"]
    assert main([*fit_reference, "--out", str(tmp_path / "x")]) == 2  # several sizes: which one?
    assert "pass image_size (--image-size)" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main([*fit_reference, "--image-size", "16", "--out", str(tmp_path / "ref")]) == 0
    assert main(["--quiet", "evaluate", "--backend", vae, "--data", data, "--reference", str(tmp_path / "ref"),
                 "--prior-samples", "16", "--inter-paths", "4", "--ppl-pairs", "4",
                 "--json", str(tmp_path / "eval.json")]) == 0  # fmt: skip
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["reconstruction"]["encoder"]["mse"] > 0 and report["config"]["data"] == data


def test_jobs_on_a_users_folder_need_a_backend_fitted_on_it(photo_patches, tmp_path, capsys):
    """No silent digits default: grid, synthesize, evaluate and compare's blend recipes ask for --backend."""
    data = str(photo_patches)
    jobs = [
        ["grid", "--data", data, "--out", str(tmp_path / "g.png")],
        ["synthesize", "--data", data, "-n", "8", "--out", str(tmp_path / "s")],
        ["evaluate", "--data", data],
        ["compare", "--data", data, "--recipes", "erm", "blends-intra", "--seeds", "0"],
    ]
    for argv in jobs:
        assert main(["--quiet", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("latentmix: error: backend:") and "--backend" in err, err
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "s").exists()
