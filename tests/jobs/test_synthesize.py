"""latentmix synthesize: layout, shared λ on disk, determinism, resume, several processes, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from latentmix import interpolate, load_backend
from latentmix.cli import main
from latentmix.data import DigitsDataset, SyntheticDataset
from latentmix.data.text import TextEncoder
from latentmix.jobs.synthesize import SynthesisConfig, synthesize

SMALL = dict(n=40, shard_size=16)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "set"
    synthesize(SynthesisConfig(**SMALL, strategy="inter-class", out=out), quiet=True)
    return out


def test_layout_metadata_and_manifest(reference):
    names = {p.name for p in reference.iterdir()}
    assert {"images", "metadata.jsonl", "manifest.json", "shards"} <= names and "embeddings.safetensors" not in names
    rows = [json.loads(line) for line in (reference / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and len({r["id"] for r in rows}) == 40
    manifest = json.loads((reference / "manifest.json").read_text())
    entry = manifest["embeddings"]  # the shards' own files, listed with their counts: no merged copy
    assert entry["layout"] == "per-shard" and entry["fields"] == ["latent", "text_embedding"]
    assert [e["file"] for e in entry["shards"]] == [f"shards/{s:06d}.safetensors" for s in range(manifest["shards"])]
    assert sum(e["rows"] for e in entry["shards"]) == 40
    assert (
        manifest["num_samples"] == 40
        and manifest["num_classes"] == 10
        and manifest["text_encoder"] == "all-MiniLM-L6-v2"
    )
    for r in rows:
        assert (reference / r["file_name"]).is_file()
        assert abs(sum(r["soft_label"]) - 1) < 1e-5 and r["label"] == max(range(10), key=lambda k: r["soft_label"][k])
        assert r["source_a"].startswith("digits-") and r["source_a"] != r["source_b"]
        assert f"({round(100 * r['lambda'])}%)" in r["composed_text"]


def test_the_same_lambda_reaches_image_latent_text_and_label_on_disk(reference):
    rows = [json.loads(line) for line in (reference / "metadata.jsonl").read_text().splitlines()]
    train = DigitsDataset("train")
    backend = load_backend("digits-vae")
    text_encoder = TextEncoder.from_pretrained()
    ds = SyntheticDataset(reference)
    for i in (0, 17, 39):
        r = rows[i]
        a, b = train.ids.index(r["source_a"]), train.ids.index(r["source_b"])
        lam = torch.tensor([r["lambda"]])
        with torch.inference_mode():
            za, zb = backend.encode(train.images([a])), backend.encode(train.images([b]))
        emb = ds.embeddings(i)
        torch.testing.assert_close(emb["latent"][None], interpolate(za, zb, 1 - lam, "slerp"), atol=1e-5, rtol=1e-4)
        ta, tb = text_encoder.encode([train.texts[a], train.texts[b]])
        torch.testing.assert_close(
            emb["text_embedding"][None], interpolate(ta[None], tb[None], 1 - lam, "slerp"), atol=1e-5, rtol=1e-4
        )
        expected = torch.zeros(10)
        expected[int(train.labels[a])] += r["lambda"]
        expected[int(train.labels[b])] += 1 - r["lambda"]
        torch.testing.assert_close(ds.soft_labels[i], expected, atol=1e-5, rtol=0)
        with torch.inference_mode():
            decoded = backend.decode(emb["latent"][None])
        torch.testing.assert_close(ds[i].image, decoded[0], atol=1 / 127.5 + 1e-6, rtol=0)  # PNG rounding only


def test_reader_and_the_datasets_imagefolder_builder_agree(reference):
    from datasets import load_dataset

    ours = SyntheticDataset(reference)
    hf = load_dataset("imagefolder", data_dir=str(reference), split="train")
    assert len(hf) == len(ours) == 40
    by_id = {row["id"]: row for row in hf}
    for i in (0, 5, 39):
        row = by_id[ours.ids[i]]
        assert row["soft_label"] == pytest.approx(ours.soft_labels[i].tolist()) and row["text"] == ours.texts[i]
        pixels = torch.tensor(np.asarray(row["image"]), dtype=torch.float32).reshape(8, 8) / 127.5 - 1
        torch.testing.assert_close(pixels, ours[i].image[0])


def test_samples_do_not_depend_on_shard_size_and_return_in_memory():
    small = synthesize(SynthesisConfig(n=30, shard_size=7), quiet=True).samples
    large = synthesize(SynthesisConfig(n=30, shard_size=30), quiet=True).samples
    assert small.source_a == large.source_a and small.source_b == large.source_b and torch.equal(small.lam, large.lam)
    torch.testing.assert_close(small.latents, large.latents, atol=1e-5, rtol=1e-5)
    assert (small.images.int() - large.images.int()).abs().max() <= 1
    prefix = synthesize(SynthesisConfig(n=10, shard_size=7), quiet=True).samples
    assert prefix.source_a == small.source_a[:10]  # sample i depends on (seed, i) only


def test_interrupted_run_resumes_to_the_identical_set(tmp_path, reference, monkeypatch, crash_on_call):
    import latentmix.jobs.synthesize as syn

    real = crash_on_call(syn, "write_shard", 2)  # crash on the second shard
    out = tmp_path / "set"
    with pytest.raises(KeyboardInterrupt):
        synthesize(SynthesisConfig(**SMALL, strategy="inter-class", out=out), quiet=True)
    assert not (out / "manifest.json").exists() and not (out / "metadata.jsonl").exists()
    monkeypatch.setattr(syn, "write_shard", real)
    result = synthesize(SynthesisConfig(**SMALL, strategy="inter-class", out=out), quiet=True)
    assert result.written == 40 - 16
    assert tree_digest(out) == tree_digest(reference)


def test_killed_process_resumes_without_gaps_or_duplicates(tmp_path):
    out = tmp_path / "set"
    args = [
        sys.executable,
        "-m",
        "latentmix",
        "--quiet",
        "synthesize",
        "--num-samples",
        "3000",
        "--shard-size",
        "50",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.mkdtemp())
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("shards/*.jsonl"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    assert main(["--quiet", "synthesize", "--num-samples", "3000", "--shard-size", "50", "--out", str(out)]) == 0
    rows = [json.loads(line)["id"] for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert rows == [f"syn-{i:08d}" for i in range(3000)]
    assert len(list((out / "images").rglob("*.png"))) == 3000
    assert not list(out.rglob(".*tmp-*"))
    clean = tmp_path / "clean"
    assert main(["--quiet", "synthesize", "--num-samples", "3000", "--shard-size", "50", "--out", str(clean)]) == 0
    assert tree_digest(out) == tree_digest(clean)


SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "synthesize_ranks.py"


def encodings(out: Path) -> list[int]:
    return [json.loads((out.parent / f"encoded-{r}.json").read_text())["encoded"] for r in range(2)]


def test_two_processes_encode_each_source_once_and_give_a_byte_identical_set(tmp_path, torchrun, reference):
    """The processes split the sources' encoding (shared through the output directory) and claim shards as they
    go; the set is byte for byte the one-process set. torchrun gives each worker 1 thread unless told otherwise, and
    float kernels round by thread count on some CPUs, so the workers get the reference's thread count."""
    out = tmp_path / "ddp" / "set"
    torchrun(SCRIPT, out, 0, cwd=tempfile.mkdtemp(), threads=torch.get_num_threads())
    assert sum(encodings(out)) == len(DigitsDataset("train")) and min(encodings(out)) > 0
    assert tree_digest(out) == tree_digest(reference)
    assert not list((out / "shards").glob("*.claim"))


def test_a_process_with_nothing_left_outwaits_the_process_groups_timeout(tmp_path, torchrun, reference):
    """A resumed run whose remaining shards fall to rank 0 (round-robin would give rank 1 nothing): rank 0 stalls
    12 s on one shard, past the group's 10 s timeout, while rank 1 takes the other and then waits on files, not at
    a barrier — the run ends without a timeout, and the sources come from the first run's cache."""
    import shutil

    out = tmp_path / "skewed" / "set"
    shutil.copytree(reference, out)
    for shard in (0, 2):
        (out / "shards" / f"{shard:06d}.done").unlink()
    (out / "shards" / "000001.claim").write_text('{"rank": 1, "pid": 1}\n')  # a dead process's claim
    torchrun(SCRIPT, out, 12, cwd=tempfile.mkdtemp(), threads=torch.get_num_threads())
    assert encodings(out) == [0, 0]
    assert tree_digest(out) == tree_digest(reference)


def test_extending_a_set_adds_samples_and_keeps_the_old_ones(tmp_path, reference):
    out = tmp_path / "grow"
    synthesize(SynthesisConfig(n=20, shard_size=16, strategy="inter-class", out=out), quiet=True)
    first = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    synthesize(SynthesisConfig(**SMALL, strategy="inter-class", out=out), quiet=True)
    assert tree_digest(out) == tree_digest(reference)
    again = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert again[:20] == first


def test_a_full_disk_loses_nothing_already_written(tmp_path, monkeypatch):
    out = tmp_path / "set"
    synthesize(SynthesisConfig(n=16, shard_size=16, out=out), quiet=True)
    before = tree_digest(out)
    real_write = Path.write_bytes

    def full_disk(self, data):  # the second shard's first image file
        if "000001" in str(self):
            raise OSError(28, "No space left on device", str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match="No space left"):
        synthesize(SynthesisConfig(n=40, shard_size=16, out=out), quiet=True)
    after = tree_digest(out)
    assert {k: v for k, v in after.items() if k in before} == before and set(after) <= set(before) | {
        ".latentmix-run.json"
    }
    assert SyntheticDataset(out).manifest["num_samples"] == 16


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(lam=1.4), r"lam must be in \[0, 1\], got 1.4"),
        (dict(strategy="shuffle"), "strategy must be one of"),
        (dict(n=0), "n must be a positive int"),
        (dict(alpha=0.0), "alpha must be"),
        (dict(class_pairs=((1, 2),)), "only applies to strategies inter-class and translate"),
        (dict(strategy="inter-class", class_pairs=((3, 3),)), "not a pair of two different classes"),
    ],
)
def test_bad_settings_fail_before_anything_is_written(tmp_path, config, message):
    with pytest.raises(ValueError, match=message):
        synthesize(SynthesisConfig(n=config.pop("n", 8), **config, out=tmp_path / "out"), quiet=True)
    assert not (tmp_path / "out").exists()


def test_bad_data_and_output_directories(tmp_path):
    from PIL import Image

    one_class = tmp_path / "one"
    (one_class / "cats").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (8, 8), color=40 * i).save(one_class / "cats" / f"{i}.png")
    with pytest.raises(ValueError, match="inter-class needs at least 2 classes"):
        synthesize(
            SynthesisConfig(backend="digits-vae", n=4, data=str(one_class), strategy="inter-class", out=tmp_path / "a"),
            quiet=True,
        )
    meta = tmp_path / "meta"
    meta.mkdir()
    for i in range(2):
        Image.new("L", (8, 8)).save(meta / f"{i}.png")
    (meta / "metadata.jsonl").write_text(
        '{"file_name": "0.png", "text": "x", "label": 0}\n{"file_name": "1.png", "label": 1}\n'
    )
    with pytest.raises(ValueError, match="'text' is missing for some images"):
        synthesize(
            SynthesisConfig(backend="digits-vae", n=4, data=str(meta), strategy="random", out=tmp_path / "b"),
            quiet=True,
        )
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no latentmix synthesis run"):
        synthesize(SynthesisConfig(n=4, out=unrelated), quiet=True)
    assert (unrelated / "keep.txt").read_text() == "mine"
    done = tmp_path / "done"
    synthesize(SynthesisConfig(n=8, shard_size=4, out=done), quiet=True)
    with pytest.raises(ValueError, match="holds a different run's set .*seed"):
        synthesize(SynthesisConfig(n=8, shard_size=4, seed=1, out=done), quiet=True)
    with pytest.raises(ValueError, match="already holds 8 samples"):
        synthesize(SynthesisConfig(n=4, shard_size=4, out=done), quiet=True)
    with pytest.raises(ValueError, match="not a complete synthetic set"):
        SyntheticDataset(tmp_path / "b")


def test_cli_bad_input_is_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "latentmix",
            "synthesize",
            "--num-samples",
            "4",
            "--lam",
            "-0.2",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=tempfile.mkdtemp(),
        timeout=1800,
    )
    assert (
        proc.returncode == 2
        and proc.stderr.strip().count("\n") == 0
        and "allow-extrapolation" in proc.stderr.replace("_", "-")
    )
