"""Datasets: the fixed digits split, image folders, imagefolder metadata, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from latentmix.data import (
    DIGIT_TEMPLATES,
    DigitsDataset,
    ImageFolderDataset,
    digits_split_indices,
    load_dataset,
    pil_to_tensor,
)


def test_digits_split_is_fixed_disjoint_and_stratified():
    train, test = digits_split_indices()
    assert len(train) == 1437 and len(test) == 360
    assert not set(train) & set(test) and len(set(train) | set(test)) == 1797
    # pinned: a change of the split would leak test images into embedded models
    assert test[:8].tolist() == [21, 24, 28, 34, 35, 37, 39, 42] and int(test.sum()) == 337944
    labels = DigitsDataset("test").labels
    counts = torch.bincount(labels, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37


def test_digits_images_labels_and_captions():
    ds = DigitsDataset("train")
    item = ds[0]
    assert item.image.shape == (1, 8, 8) and item.image.dtype == torch.float32
    assert float(ds.images(range(len(ds))).min()) == -1.0 and float(ds.images(range(len(ds))).max()) == 1.0
    assert item.text in [t.format(name=item.label) for t in DIGIT_TEMPLATES]
    assert all(ds.class_names[y] in text for y, text in zip(ds.labels.tolist(), ds.texts, strict=True))
    assert (
        len({t.split(str(y))[0] for y, t in zip(ds.labels.tolist(), ds.texts, strict=True)}) >= 3
    )  # several templates
    rgb = DigitsDataset("test", image_size=16, channels=3)
    assert rgb[0].image.shape == (3, 16, 16)
    assert set(ds.indices_of_class("3").tolist()) == set(np.flatnonzero(ds.labels.numpy() == 3).tolist())


def _write_class_folders(root):
    photos = {"astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee(), "camera": skimage.data.camera()}
    for cls, (name, pixels) in zip(["a", "a", "b"], photos.items(), strict=True):
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / cls / f"{name}.png")
    Image.fromarray(skimage.data.chelsea()).save(root / "b" / "chelsea.jpg")


def test_image_folder_with_class_subfolders_mixed_modes_and_sizes(tmp_path):
    _write_class_folders(tmp_path)
    ds = ImageFolderDataset(tmp_path, image_size=32, channels=3)
    assert len(ds) == 4 and ds.class_names == ["a", "b"] and ds.labels.tolist() == [0, 0, 1, 1]
    batch = ds.images(range(4))
    assert batch.shape == (4, 3, 32, 32) and float(batch.min()) >= -1 and float(batch.max()) <= 1
    camera = ds.images([ds.ids.index("b/camera.png")])[0]
    torch.testing.assert_close(camera[0], camera[1])  # grayscale photo repeated into RGB
    gray = ImageFolderDataset(tmp_path, image_size=16, channels=1)
    assert gray.images([0]).shape == (1, 1, 16, 16)
    assert "a" in ds.texts[0] and ds[2].id.startswith("b/")


def test_imagefolder_metadata_layout_with_texts_and_labels(tmp_path):
    rows = []
    for _i, (name, pixels) in enumerate([("astronaut", skimage.data.astronaut()), ("coffee", skimage.data.coffee())]):
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
        rows.append({"file_name": f"{name}.png", "text": f"a photo of {name}", "label": name})
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_dataset(tmp_path, image_size=24, channels=3)
    assert ds.texts == ["a photo of astronaut", "a photo of coffee"]
    assert ds.class_names == ["astronaut", "coffee"] and ds.labels.tolist() == [0, 1]
    rows[1]["label"] = 1
    rows[0]["label"] = 0
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert load_dataset(tmp_path, image_size=24).class_names == ["0", "1"]


def test_train_subfolder_is_used_for_the_train_split(tmp_path):
    _write_class_folders(tmp_path / "train")
    _write_class_folders(tmp_path / "test")
    (tmp_path / "test" / "b" / "chelsea.jpg").unlink()
    assert len(load_dataset(tmp_path, split="train", image_size=8)) == 4
    assert len(load_dataset(tmp_path, split="test", image_size=8)) == 3


def test_pil_to_tensor_center_crops_then_resizes():
    wide = Image.fromarray(
        np.concatenate(
            [np.zeros((10, 10), np.uint8), np.full((10, 10), 255, np.uint8), np.zeros((10, 10), np.uint8)], axis=1
        )
    )
    out = pil_to_tensor(wide, 5, 1)
    assert out.shape == (1, 5, 5)
    assert torch.allclose(out, torch.ones(1, 5, 5))  # the white centre square survives the crop


def test_bad_data_raises_naming_the_problem(tmp_path):
    _write_class_folders(tmp_path / "ok")
    (tmp_path / "ok" / "a" / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        ImageFolderDataset(tmp_path / "ok", image_size=8)
    with pytest.raises(ValueError, match="does not exist"):
        ImageFolderDataset(tmp_path / "absent", image_size=8)
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="neither a metadata.jsonl nor one subfolder per class"):
        ImageFolderDataset(tmp_path / "flat", image_size=8)
    (tmp_path / "emptyclass" / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        ImageFolderDataset(tmp_path / "emptyclass", image_size=8)
    meta = tmp_path / "meta"
    meta.mkdir()
    Image.fromarray(skimage.data.camera()).save(meta / "a.png")
    Image.fromarray(skimage.data.camera()).save(meta / "b.png")
    (meta / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "x"}\n{"file_name": "b.png"}\n')
    with pytest.raises(ValueError, match="'text' is missing for some images"):
        ImageFolderDataset(meta, image_size=8)
    (meta / "metadata.jsonl").write_text('{"file_name": "a.png"}\n{"file_name": "gone.png"}\n')
    with pytest.raises(ValueError, match="gone.png .* does not exist"):
        ImageFolderDataset(meta, image_size=8)
    (meta / "metadata.jsonl").write_text('{"file_name": "a.png"}\nnot json\n')
    with pytest.raises(ValueError, match="metadata.jsonl:2: not valid JSON"):
        ImageFolderDataset(meta, image_size=8)
    Image.fromarray(skimage.data.camera()[:300]).save(meta / "b.png")  # 512 x 300: no single square size
    (meta / "metadata.jsonl").write_text('{"file_name": "a.png"}\n{"file_name": "b.png"}\n')
    with pytest.raises(ValueError, match=r"no single square size \(512x300, 512x512\); pass image_size"):
        load_dataset(meta)
    assert load_dataset(meta, image_size=8).native_size is None
    with pytest.raises(ValueError, match="split must be one of"):
        DigitsDataset("validation")
    with pytest.raises(ValueError, match="channels must be one of 1, 3"):
        DigitsDataset("train", channels=2)
    with pytest.raises(ValueError, match="out of range"):
        DigitsDataset("test").images([360])
    with pytest.raises(ValueError, match="unknown class"):
        DigitsDataset("test").indices_of_class("eleven")
