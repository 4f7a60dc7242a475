"""Synthetic sets at scale: per-shard embeddings read in O(1), image formats, embeddings left out, old sets read."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from latentmix.cli import main
from latentmix.configs import SynthesisConfig
from latentmix.data import SyntheticDataset
from latentmix.data.synthetic_embeddings import ShardEmbeddings
from latentmix.jobs.synthesize import synthesize

SMALL = SynthesisConfig(backend="digits-vae", n=8, shard_size=4, strategy="inter-class")


def test_the_embedding_store_finds_any_sample_in_its_shard():
    """Uneven shards (a filter drops rows), the last sample of the last shard, and a row before and after each
    boundary: each read from its own shard's file."""
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp())
    (root / "shards").mkdir()
    counts, entries, start = [3, 0, 5, 1, 4], [], 0
    for s, k in enumerate(counts):
        rows = torch.arange(start, start + k, dtype=torch.float32)
        save_file({"text_embedding": rows[:, None].repeat(1, 2).contiguous()}, root / "shards" / f"{s:06d}.safetensors")
        entries.append({"file": f"shards/{s:06d}.safetensors", "rows": k})
        start += k
    store = ShardEmbeddings(root, entries, ("text_embedding",))
    assert len(store) == 13
    for i in range(13):
        assert store.row(i)["text_embedding"].tolist() == [float(i)] * 2
    assert store.stacked("text_embedding")[:, 0].tolist() == [float(i) for i in range(13)]
    with pytest.raises(ValueError, match="stores no latent .*--no-latents"):
        store.stacked("latent")
    (root / "shards" / "000004.safetensors").write_bytes(b"\x00\x01 not safetensors")
    with pytest.raises(ValueError, match="000004.safetensors: cannot read the shard's embeddings"):
        ShardEmbeddings(root, entries, ("text_embedding",)).row(12)


@pytest.mark.parametrize(("image_format", "ext"), [("jpeg", "jpg"), ("webp", "webp")])
def test_lossy_image_formats_and_embeddings_left_out(tmp_path, image_format, ext):
    config = replace(SMALL, image_format=image_format, image_quality=80, no_latents=True, out=str(tmp_path / "set"))
    synthesize(config, quiet=True)
    ds = SyntheticDataset(tmp_path / "set")
    assert all(f.suffix == f".{ext}" for f in ds.files) and Image.open(ds.files[0]).format == image_format.upper()
    assert ds.images(range(8)).shape == (8, 1, 8, 8)
    assert ds.embedding_fields == ("text_embedding",) and set(ds.embeddings(7)) == {"text_embedding"}
    assert ds.text_embeddings().shape == (8, 384)
    assert set(load_file(tmp_path / "set" / "shards" / "000001.safetensors")) == {"text_embedding"}
    png = replace(SMALL, out=str(tmp_path / "png"))
    synthesize(png, quiet=True)
    lossless = SyntheticDataset(tmp_path / "png")
    torch.testing.assert_close(lossless.text_embeddings(), ds.text_embeddings())  # the same samples, other files
    assert float((lossless.images(range(8)) - ds.images(range(8))).abs().mean()) < 0.1


def test_a_set_without_text_embeddings_is_refused_by_cross_modal_training(tmp_path, capsys):
    synthesize(replace(SMALL, no_text_embeddings=True, out=str(tmp_path / "set")), quiet=True)
    ds = SyntheticDataset(tmp_path / "set")
    assert set(ds.embeddings(0)) == {"latent"}
    with pytest.raises(ValueError, match="stores no text_embedding .*--no-text-embeddings"):
        ds.text_embeddings()
    args = ["--quiet", "train", "--synthetic", str(tmp_path / "set"), "--modality", "text", "--steps", "1"]
    assert main(args) == 2
    assert "stores no text_embedding" in capsys.readouterr().err


def test_resuming_with_another_image_format_is_refused_and_keeps_the_set(tmp_path, capsys):
    out = tmp_path / "set"
    synthesize(replace(SMALL, out=str(out)), quiet=True)
    before = sorted(p.name for p in (out / "images" / "000000").iterdir())
    argv = ["--quiet", "synthesize", "--backend", "digits-vae", "-n", "8", "--shard-size", "4"]
    assert main([*argv, "--strategy", "inter-class", "--image-format", "jpeg", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "image_format" in err
    assert sorted(p.name for p in (out / "images" / "000000").iterdir()) == before
    with pytest.raises(SystemExit) as exit_:  # argparse's own choice check
        main([*argv, "--image-format", "gif", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2
    assert "argument --image-format: invalid choice: 'gif'" in capsys.readouterr().err


def test_a_set_written_before_the_per_shard_layout_is_still_read(tmp_path):
    """Pre-0.2 sets: one merged embeddings.safetensors (``latent/<id>``), no manifest entry."""
    out = tmp_path / "set"
    synthesize(replace(SMALL, out=str(out)), quiet=True)
    new = SyntheticDataset(out)
    merged = {}
    for i, sid in enumerate(new.ids):
        merged.update({f"{k}/{sid}": v.contiguous() for k, v in new.embeddings(i).items()})
    save_file(merged, out / "embeddings.safetensors")
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["embeddings"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    old = SyntheticDataset(out)
    for i in (0, 7):
        for k, v in new.embeddings(i).items():
            torch.testing.assert_close(old.embeddings(i)[k], v)
    torch.testing.assert_close(old.text_embeddings(), new.text_embeddings())


def test_webdataset_and_parquet_sets_hold_the_same_samples_and_load_without_latentmix(tmp_path, capsys):
    import datasets
    import webdataset as wds

    sets = {}
    for set_format in ("imagefolder", "webdataset", "parquet"):
        synthesize(replace(SMALL, set_format=set_format, out=str(tmp_path / set_format)), quiet=True)
        sets[set_format] = SyntheticDataset(tmp_path / set_format)
    folder = sets["imagefolder"]
    for name in ("webdataset", "parquet"):
        ds = sets[name]
        assert ds.format == name and ds.ids == folder.ids and ds.texts == folder.texts
        assert torch.equal(ds.images(range(8)), folder.images(range(8)))  # the same png bytes, elsewhere
        torch.testing.assert_close(ds.embeddings(5)["latent"], folder.embeddings(5)["latent"])
    assert not (tmp_path / "webdataset" / "images").exists() and not (tmp_path / "parquet" / "images").exists()
    tars = str(tmp_path / "webdataset" / "shards" / "{000000..000001}.tar")
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    assert [s["__key__"] for s in samples] == folder.ids
    assert all(int(s["cls"]) == json.loads(s["json"])["label"] for s in samples)
    first = Image.open(__import__("io").BytesIO(samples[0]["png"]))
    assert first.size == (8, 8)
    hf = datasets.load_dataset("parquet", data_files=str(tmp_path / "parquet" / "data" / "*.parquet"), split="train")
    assert len(hf) == 8 and isinstance(hf.features["image"], datasets.Image)
    assert hf["id"] == folder.ids and hf["label"] == folder.labels.tolist()
    assert hf[3]["image"].size == (8, 8) and json.loads(hf[3]["metadata"])["soft_label"] == hf[3]["soft_label"]
    args = ["--quiet", "train", "--synthetic", str(tmp_path / "webdataset"), "--labels-per-class", "2", "--steps", "2"]
    assert main(args) == 0, capsys.readouterr().err


def _png(i: int) -> bytes:
    """A PNG of its own for every i."""
    import io

    buffer = io.BytesIO()
    Image.new("L", (4, 4 + i // 256), color=i % 256).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_parquet_shard_is_read_a_row_group_at_a_time(tmp_path):
    """A reader holds a few row groups' image bytes, not whole shards' (at 512 x 512, a 256-sample shard is ~90 MB),
    reads every row in any order, and still reads a shard written as one row group."""
    import pyarrow.parquet as pq

    from latentmix.data.synthetic_formats import (
        OPEN_SHARDS,
        PARQUET_ROW_GROUP,
        ShardImages,
        shard_data,
        write_parquet,
    )

    n = OPEN_SHARDS * PARQUET_ROW_GROUP + 10  # more rows than the reader may hold
    rows = [{"id": f"syn-{i}", "text": "t", "label": i % 3} for i in range(n)]
    images = [(f"syn-{i}.png", _png(i)) for i in range(n)]
    path = shard_data(tmp_path, 0, "parquet")
    path.parent.mkdir(parents=True)
    write_parquet(path, rows, images)
    assert pq.ParquetFile(path).metadata.num_row_groups == OPEN_SHARDS + 1
    reader = ShardImages(tmp_path, "parquet")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    for position in order:
        assert reader.read(0, position, images[position][0]) == images[position][1]
        assert sum(len(group) for group in reader._index.values()) <= OPEN_SHARDS * PARQUET_ROW_GROUP
    with pytest.raises(ValueError, match=f"has {n} rows; no row {n}"):
        reader.read(0, n, "x.png")
    # a shard of an earlier version: every row in one group
    table = pq.read_table(path)
    pq.write_table(table, shard_data(tmp_path, 1, "parquet"))
    assert [reader.read(1, i, "") for i in (0, n - 1)] == [images[0][1], images[n - 1][1]]
    with pytest.raises(ValueError, match="000002.parquet: cannot read the shard's images"):
        reader.read(2, 0, "")
