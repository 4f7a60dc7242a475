"""The ``shapes`` data set, its export as an imagefolder, and factors read back from ``factors.json``."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from latentmix.cli import main
from latentmix.data import load_dataset
from latentmix.data.shapes import FACTORS, SHAPE_WORDS, SIZE_WORDS, VAGUE_WORDS, ShapesDataset, generate, render


def test_the_split_is_fixed_rgb_and_a_function_of_seed_and_index(shapes_cache):
    train, test = load_dataset("shapes", split="train"), load_dataset("shapes", split="test")
    assert (len(train), len(test)) == (10_000, 2_000)
    assert (train.image_size, train.channels) == (32, 3) and train.class_names == FACTORS["shape"]
    assert train.images([0]).shape == (1, 3, 32, 32) and -1 <= float(train.images([0]).min()) < 0
    assert set(train.ids).isdisjoint(test.ids)
    # every example depends on (seed, split, index) only: a short render equals the cached split's head
    head, factors = generate(0, "test", 32, count=5)
    assert np.array_equal(head, test._pixels[:5]) and np.array_equal(factors, test.factor_table[:5].numpy())
    again = render(0, "test", 3, dict(zip(FACTORS, factors[3].tolist(), strict=True)), 32)
    assert np.array_equal(again, head[3])
    assert not np.array_equal(generate(1, "test", 32, count=5)[0], head)  # another seed, other images
    # every value of every factor occurs, and the label column is the shape
    assert train.factor_table.shape == (10_000, 5) and torch.equal(train.labels, train.factor_table[:, 0])
    for j, values in enumerate(FACTORS.values()):
        assert set(train.factor_table[:, j].tolist()) == set(range(len(values)))
    assert train.factor_values is not None and list(train.factor_values) == ["colour", "size", "position", "background"]
    assert train.factors(0)["label"] == train.class_names[int(train.labels[0])]


def test_captions_name_colour_size_and_position_and_half_name_the_shape_vaguely(shapes_cache):
    test = load_dataset("shapes", split="test")
    vague = 0
    for i in range(200):
        text, named, f = test.texts[i], test.named_factors[i], test.factors(i)
        assert f["colour"] in text and any(w in text for w in SIZE_WORDS[f["size"]])
        shape_words = SHAPE_WORDS[f["label"]]
        if i % 2:
            vague += 1
            assert "label" not in named and any(re.search(rf"\b{w}\b", text) for w in VAGUE_WORDS)
            assert not any(re.search(rf"\b{w}\b", text) for words in SHAPE_WORDS.values() for w in words)
        else:
            assert "label" in named and any(w in text for w in shape_words)
        assert {"colour", "size", "position"} <= named
        assert not re.search(r"\ba [aeiou]", text)  # "an orange", "an object"
    assert vague == 100 and len(set(test.texts[:200])) > 150


def test_image_size_and_grey_channels_are_configurable(shapes_cache):
    small = ShapesDataset("test", image_size=16)
    assert small.images([0, 1]).shape == (2, 3, 16, 16) and small.texts == load_dataset("shapes", split="test").texts
    grey = load_dataset("shapes", split="test", image_size=16, channels=1)
    assert grey.images([0]).shape == (1, 1, 16, 16)
    both = load_dataset("shapes", split="all")  # the 32 px splits, cached by the first test
    assert len(both) == 12_000 and both.ids[10_000] == "shapes-test-00000"


def test_the_cache_is_reused_and_a_damaged_one_rendered_again(shapes_cache):
    ShapesDataset("test", image_size=8)
    files = sorted(shapes_cache.glob("shapes-*-test-8px-*.npz"))
    assert len(files) == 1
    files[0].write_bytes(b"not an npz")
    again = ShapesDataset("test", image_size=8)
    assert again.images([0]).shape == (1, 3, 8, 8)
    with np.load(files[0]) as cached:  # rewritten whole
        assert cached["images"].shape == (2000, 8, 8, 3)


def test_export_round_trips_images_captions_labels_and_factors(shapes_cache, tmp_path):
    out = tmp_path / "exported"
    assert (
        main(["--quiet", "export", "--data", "shapes", "--split", "test", "--image-size", "8", "--out", str(out)]) == 0
    )
    rows = [json.loads(line) for line in (out / "test" / "metadata.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"file_name", "text", "label", "colour", "size", "position", "background", "named_factors"}
    assert json.loads((out / "factors.json").read_text())["colour"] == FACTORS["colour"]
    original, back = load_dataset("shapes", split="test", image_size=8), load_dataset(out, split="test")
    assert back.class_names == original.class_names and back.texts == original.texts
    assert torch.equal(back.labels, original.labels) and torch.equal(back.factor_table, original.factor_table)
    assert back.named_factors == original.named_factors
    assert torch.allclose(back.images(range(50)), original.images(range(50)), atol=1e-6)
    assert main(["--quiet", "export", "--data", "shapes", "--out", str(out)]) == 2  # not an empty directory


def _folder_with_factors(root, factors, rows):
    (root / "images").mkdir(parents=True)
    for i in range(len(rows)):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / "images" / f"{i}.png")
    (root / "factors.json").write_text(json.dumps(factors))
    (root / "metadata.jsonl").write_text(
        "\n".join(json.dumps({"file_name": f"images/{i}.png", "text": "x", **r}) for i, r in enumerate(rows))
    )


def test_a_folder_reads_factors_json_and_names_bad_rows(tmp_path):
    good = tmp_path / "good"
    _folder_with_factors(
        good, {"colour": ["red", "blue"]}, [{"label": "a", "colour": "blue"}, {"label": "b", "colour": "red"}]
    )
    data = load_dataset(good)
    assert data.factor_values == {"colour": ["red", "blue"]} and data.factor_table.tolist() == [[0, 1], [1, 0]]
    assert data.factors(0) == {"label": "a", "colour": "blue"}
    bad = tmp_path / "bad"
    _folder_with_factors(bad, {"colour": ["red", "blue"]}, [{"label": "a", "colour": "green"}])
    with pytest.raises(ValueError, match=r"metadata.jsonl:1: colour 'green' is not one of factors.json's"):
        load_dataset(bad)
    reserved = tmp_path / "reserved"
    _folder_with_factors(reserved, {"text": ["x"]}, [{"label": "a"}])
    with pytest.raises(ValueError, match="text"):
        load_dataset(reserved)


def test_ideal_walks_start_at_the_example_and_the_rule_passes_them_where_it_should(shapes_cache):
    """The ideal walk (the data's own generator moving one factor along its order) is what the single-factor path
    rule is judged against: it starts at the example itself, ends at the target with every other factor kept, and
    the rule passes it between neighbouring values (red → orange) and fails it where a perfect walk passes a third
    value (a left → right slide goes through the centre)."""
    import torch

    from latentmix.classifiers.reference import load_reference_classifier
    from latentmix.data.shapes import FACTORS, ShapesDataset, ideal_walk
    from latentmix.jobs.attributes import factor_names, predict_factors, true_factors
    from latentmix.jobs.evaluate_attributes import path_rule

    test = ShapesDataset("test")
    names, truth = factor_names(test), true_factors(test)
    reference = load_reference_classifier("shapes-classifier")

    def judged(factor: str, start: str, target: str, count: int = 6) -> dict:
        column = names.index(factor)
        rows = [i for i in range(len(test)) if test.factors(i)[factor] == start][:count]
        walks = [ideal_walk(0, "test", i, factor, target, 9, 32) for i in rows]
        assert all(np.array_equal(w[0], test._pixels[i]) for w, i in zip(walks, rows, strict=True))
        pred = predict_factors(reference, test.to_tensor(np.concatenate(walks)), names[1:]).reshape(count, 9, -1)
        ends = truth[rows].clone()
        ends[:, column] = FACTORS[factor].index(target)
        assert torch.equal(pred[:, -1], ends)  # the last frame: the target, everything else as it was
        table = torch.cat([truth[rows], ends])  # A: the example, B: the same drawing with the target value
        return path_rule(pred, table, list(range(count)), list(range(count, 2 * count)), column)

    assert judged("colour", "red", "orange")["monotone"] == 1.0  # neighbours on the hue wheel: no third colour
    slide = judged("position", "left", "right")
    assert slide["monotone"] == 0.0 and slide["midpoint_a_or_b"] == 0.0  # a perfect slide passes the centre
    assert judged("size", "small", "large")["monotone"] == 1.0
