"""`synthesize --filter-align`: the alignment model as a zero-shot judge of each sample's class (embedded
shapes-ldm and shapes-align on the shapes train split)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from latentmix.classifiers.align import load_align_model
from latentmix.cli import main
from latentmix.data.text import TextEncoder

ARGS = ["--quiet", "synthesize", "--backend", "shapes-ldm", "--data", "shapes", "--strategy", "augment",
        "--labels-per-class", "1", "--per-image", "3", "--strength", "0.6", "--noise", "random",
        "--num-inference-steps", "5", "--filter-align", "shapes-align"]  # fmt: skip


def test_samples_are_kept_when_the_align_model_ranks_their_class_first_whatever_the_shard_size(tmp_path):
    assert main([*ARGS, "--out", str(tmp_path / "a")]) == 0
    assert main([*ARGS, "--shard-size", "5", "--out", str(tmp_path / "b")]) == 0
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "a" / "metadata.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (tmp_path / "b" / "metadata.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in rows_b]  # a sample's fate depends on its index only
    assert manifest["generated"] == 18 and 0 < len(rows) < 18
    assert manifest["filter"]["align"] == "shapes-align" and manifest["filter"]["kept"] == len(rows)
    assert manifest["filter"]["kept_fraction"] == pytest.approx(len(rows) / 18, abs=1e-6)
    # what was kept is what the alignment model, as a zero-shot classifier over "a {class}", calls the label
    model = load_align_model("shapes-align")
    names = manifest["class_names"]
    with torch.inference_mode():
        texts = model.embed_texts(TextEncoder.from_pretrained().encode([f"a {c}" for c in names]))
        pixels = np.stack([np.asarray(Image.open(tmp_path / "a" / r["file_name"])) for r in rows])
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
        predicted = (model.embed_images(x) @ texts.T).argmax(1)
    agree = (predicted == torch.tensor([r["label"] for r in rows])).float().mean()
    assert agree >= 0.9  # the PNG round trip may move a borderline sample


def test_a_judge_that_cannot_read_the_samples_is_refused(tmp_path, capsys):
    argv = [*ARGS[:3], "digits-ldm", "--data", "digits", *ARGS[6:], "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    assert "filter_align shapes-align: it reads 3-channel 32px images, the samples are 1-channel 8px" in (
        capsys.readouterr().err
    )
    assert main([*ARGS, "--filter-align-k", "7", "--out", str(tmp_path / "y")]) == 2
    assert "filter_align_k must be in [1, 6]" in capsys.readouterr().err
