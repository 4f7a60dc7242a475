"""Synchronized augmentation: image, caption and factors transformed together (latentmix.data.augment)."""

from __future__ import annotations

import json

import pytest
import torch

from latentmix.classifiers.reference import load_reference_classifier
from latentmix.cli import main
from latentmix.data import load_dataset
from latentmix.data.augment import PairAugment, circular_shift, fix_articles, recolour_objects, swap_words


def test_word_rewrites_swap_whole_words_once_and_fix_articles():
    assert swap_words("on the left, left of the right one", {"left": "right", "right": "left"}) == (
        "on the right, right of the left one"
    )
    assert swap_words("Left of a leftover", {"left": "right", "right": "left"}) == "Right of a leftover"
    assert fix_articles("a orange star and an red one") == "an orange star and a red one"


def test_shifts_and_recolouring_are_batched_and_exact_where_they_can_be():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    out = circular_shift(x, torch.tensor([1, 0]), torch.tensor([0, -1]))
    assert torch.equal(out[0], x[0].roll(1, dims=-1)) and torch.equal(out[1], x[1].roll(-1, dims=-2))
    grey = torch.full((1, 3, 6, 6), -0.2)
    img = grey.clone()
    img[:, :, 2:4, 2:4] = torch.tensor([0.7, -0.7, -0.7])[:, None, None]  # a red square on grey
    target = torch.tensor([[-0.7, -0.4, 0.7]])  # blue
    new = recolour_objects(img, target)
    assert torch.allclose(new[0, :, 2, 2], target[0]) and torch.equal(new[:, :, 0, 0], grey[:, :, 0, 0])


def test_synchronized_pairs_stay_true_to_the_judge_and_image_only_ones_do_not(shapes_cache):
    data = load_dataset("shapes", split="test")
    idx = range(400)
    images, texts, factors = data.images(idx), [data.texts[i] for i in idx], [data.factors(i) for i in idx]
    judge = load_reference_classifier("shapes-classifier")
    accuracy = {}
    for mode in ("synchronized", "image-only"):
        aug = PairAugment(("hflip", "translate", "recolour"), p=0.5, mode=mode, data=data)
        out = aug(images, texts, factors, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            logits = judge.factor_logits(out.images)
        for factor in ("colour", "position"):
            truth = torch.tensor([data.factor_values[factor].index(f[factor]) for f in out.factors])
            accuracy[mode, factor] = float((logits[factor].argmax(1) == truth).float().mean())
        if mode == "synchronized":
            for text, f in zip(out.texts, out.factors, strict=True):
                assert f["colour"] in text  # the caption names the colour the image now has
            assert 0.3 < out.applied["recolour"].float().mean() < 0.7  # about half were recoloured
    assert texts == [data.texts[i] for i in idx] and factors[0] == data.factors(0)  # the caller's lists untouched
    assert accuracy["synchronized", "colour"] >= 0.97 and accuracy["synchronized", "position"] >= 0.97
    assert accuracy["image-only", "colour"] < 0.7 and accuracy["image-only", "position"] < 0.7


def test_the_same_seed_gives_the_same_batch_and_bad_requests_are_refused(shapes_cache, digits_test):
    data = load_dataset("shapes", split="test", image_size=16)
    idx = range(20)
    args = (data.images(idx), [data.texts[i] for i in idx], [data.factors(i) for i in idx])
    aug = PairAugment(data=data)
    a = aug(*args, generator=torch.Generator().manual_seed(3))
    b = aug(*args, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.images, b.images) and a.texts == b.texts and a.factors == b.factors
    none = PairAugment(mode="none", data=data)(*args)
    assert torch.equal(none.images, args[0]) and none.texts == args[1]
    with pytest.raises(ValueError, match="defined only for data with shapes"):
        PairAugment(("translate",), data=digits_test)
    with pytest.raises(ValueError, match="transforms must be"):
        PairAugment(("rotate",), data=data)
    PairAugment(("hflip", "vflip"), data=digits_test)  # flips rewrite plain words: any captioned data


def test_augment_command_writes_a_readable_set_and_refuses_undefined_rewrites(shapes_cache, tmp_path, capsys):
    out = tmp_path / "aug"
    argv = ["--quiet", "augment", "--data", "shapes", "--split", "test", "--p", "1", "--transforms", "hflip"]
    assert main([*argv, "--out", str(out)]) == 0
    original, back = load_dataset("shapes", split="test"), load_dataset(out)
    assert len(back) == len(original) and back.class_names == original.class_names
    assert torch.allclose(back.images([0]), original.images([0]).flip(-1), atol=1 / 127.5)
    swapped = {"left": "right", "right": "left"}
    for i in range(50):
        before = original.factors(i)["position"]
        assert back.factors(i)["position"] == swapped.get(before, before)
    row = json.loads((out / "metadata.jsonl").read_text().splitlines()[0])
    assert set(row) >= {"file_name", "text", "label", "colour", "position", "named_factors"}
    capsys.readouterr()
    assert main(["--quiet", "augment", "--data", "digits", "--out", str(tmp_path / "d")]) == 2
    assert "no captions of its own" in capsys.readouterr().err
    folder = tmp_path / "captioned"
    folder.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(folder / "a.png")
    row = {"file_name": "a.png", "text": "a dog on the left", "label": "dog"}
    (folder / "metadata.jsonl").write_text(json.dumps(row))
    assert main(["--quiet", "augment", "--data", str(folder), "--split", "all", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'translate' rewrites position words" in err
    argv = ["--quiet", "augment", "--data", str(folder), "--split", "all", "--transforms", "hflip", "--p", "1"]
    assert main([*argv, "--out", str(tmp_path / "f")]) == 0
    assert load_dataset(tmp_path / "f").texts == ["a dog on the right"]


def test_the_trainer_augments_real_rows_and_re_embeds_rewritten_captions_only_when_synchronized(shapes_cache):
    from latentmix.configs import TrainConfig
    from latentmix.data.text import TextEncoder
    from latentmix.train.classifier import Batches
    from latentmix.train.classifier_data import Split

    data = load_dataset("shapes", split="test", image_size=16)
    idx = list(range(32))
    encoder = TextEncoder.from_pretrained(device="cpu")
    texts = [data.texts[i] for i in idx]
    train = Split(data.images(idx), data.labels[idx], t=encoder.encode(texts), texts=texts,
                  factors=[data.factors(i) for i in idx])  # fmt: skip
    drawn = {}
    for mode in ("synchronized", "image-only"):
        config = TrainConfig(data="shapes", batch_size=16, augment=mode, augment_transforms=("recolour",), augment_p=1)
        augment = PairAugment(("recolour",), p=1.0, mode=mode, data=data)
        batches = Batches(config, train, None, 6, torch.Generator().manual_seed(0), augment, encoder)
        drawn[mode] = batches()
    (xs, ys, ts), (xi, yi, ti) = drawn["synchronized"], drawn["image-only"]
    assert torch.equal(xs, xi) and torch.equal(ys, yi)  # the same rows, transformed the same way
    rows = torch.randint(32, (16,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(ti, train.t[rows])  # image-only: the captions' embeddings are the originals
    assert not torch.allclose(ts, train.t[rows])  # synchronized: every caption now names the new colour
    assert not torch.allclose(xs, train.x[rows])


def test_train_accepts_augment_and_refuses_rewrites_the_data_cannot_have(shapes_cache, capsys):
    argv = ["--quiet", "train", "--data", "shapes", "--labels-per-class", "2", "--steps", "4", "--eval-every", "2"]
    assert main([*argv, "--augment", "synchronized", "--mixup", "cross-modal", "--image-size", "16"]) == 0
    capsys.readouterr()
    assert main(["--quiet", "train", "--data", "digits", "--steps", "2", "--augment", "synchronized"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'translate' rewrites position words" in err
    assert main([*argv, "--augment", "synchronized", "--augment-transforms", "rotate"]) == 2
    assert "augment_transforms must be" in capsys.readouterr().err
