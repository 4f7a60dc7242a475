"""Hostile and broken inputs (issue 18): each case is refused in one line, loses nothing, and leaves no half output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from latentmix.backends import load_backend
from latentmix.cli import main
from latentmix.configs import SynthesisConfig, TrainConfig
from latentmix.data import ImageFolderDataset, SyntheticDataset, load_dataset
from latentmix.jobs.synthesize import synthesize
from latentmix.train.classifier import train_classifier

FAST = TrainConfig(labels_per_class=5, steps=40, eval_every=20, batch_size=32)


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("latentmix: error:"), err
    return err


# -- 1. a model is loaded whole or not at all ------------------------------------------------------------------


@pytest.fixture
def saved_vae(tmp_path) -> Path:
    """A copy of the embedded digits VAE (the issue's case: its decoder.6.bias goes missing)."""
    from latentmix.backends import embedded_models_dir

    return Path(shutil.copytree(embedded_models_dir() / "digits-vae", tmp_path / "vae"))


def test_a_missing_tensor_is_an_error_naming_file_and_key(saved_vae, tmp_path, capsys):
    weights = saved_vae / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    del tensors["decoder.6.bias"]
    save_file(tensors, str(weights))
    with pytest.raises(
        ValueError, match=r"diffusion_pytorch_model.safetensors: the weights lack the tensor 'decoder.6.bias'"
    ):
        load_backend(saved_vae)
    assert main(["grid", "--backend", str(saved_vae), "--out", str(tmp_path / "g.png")]) == 2
    assert "lack the tensor 'decoder.6.bias'" in one_line(capsys) and not (tmp_path / "g.png").exists()


def test_wrong_shapes_and_extra_tensors_are_errors_not_tracebacks(saved_vae):
    weights = saved_vae / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    original = dict(tensors)
    tensors["decoder.6.bias"] = torch.zeros(5)
    save_file(tensors, str(weights))
    with pytest.raises(ValueError, match=r"tensor 'decoder.6.bias' has shape \[5\], the model's config needs \[1\]"):
        load_backend(saved_vae)
    save_file({**original, "decoder.99.weight": torch.zeros(2)}, str(weights))
    with pytest.raises(ValueError, match=r"unexpected tensor 'decoder.99.weight'"):
        load_backend(saved_vae)


# -- 2. no code from a loaded directory runs unless asked ------------------------------------------------------


def _remote_code_dir(root: Path, marker: Path) -> Path:
    """A text-encoder directory whose config maps to Python in the directory, which writes ``marker`` on import."""
    from latentmix.data.text import default_text_encoder_path

    root.mkdir(parents=True)
    minilm = default_text_encoder_path()
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        if (minilm / name).is_file():
            shutil.copy(minilm / name, root / name)
    (root / "config.json").write_text(json.dumps({
        "model_type": "marker-model", "hidden_size": 8,
        "auto_map": {"AutoConfig": "custom.MarkerConfig", "AutoModel": "custom.MarkerModel"},
    }))  # fmt: skip
    (root / "custom.py").write_text(
        textwrap.dedent(f"""
        from pathlib import Path
        Path({str(marker)!r}).write_text("ran")
        from transformers import PretrainedConfig, PreTrainedModel
        class MarkerConfig(PretrainedConfig):
            model_type = "marker-model"
        class MarkerModel(PreTrainedModel):
            config_class = MarkerConfig
    """)
    )
    return root


def test_code_in_a_text_encoder_directory_never_runs_without_the_option(tmp_path, capsys):
    from latentmix.data.text import TextEncoder, set_trust_remote_code

    marker = tmp_path / "marker"
    directory = _remote_code_dir(tmp_path / "encoder", marker)
    with pytest.raises(ValueError, match="pass trust_remote_code .* only if you trust that code"):
        TextEncoder.from_pretrained(directory)
    args = ["--quiet", "synthesize", "-n", "4", "--text-encoder", str(directory), "--out", str(tmp_path / "set")]
    assert main(args) == 2 and "trust_remote_code" in one_line(capsys)
    assert not marker.exists()
    set_trust_remote_code(True)  # what --trust-remote-code does: now the directory's code runs
    try:
        with pytest.raises(ValueError, match="could not load a text encoder"):  # the toy model fails after its code ran
            TextEncoder.from_pretrained(directory)
    finally:
        set_trust_remote_code(False)
    assert marker.read_text() == "ran"


def test_a_latent_diffusion_directory_runs_no_code_and_reads_nothing_outside(tmp_path, tiny_sd_pipeline):
    from latentmix.backends import LatentDiffusionBackend

    saved = LatentDiffusionBackend.from_pipeline(tiny_sd_pipeline).save_pretrained(tmp_path / "ldm")
    marker = tmp_path / "marker"
    shutil.rmtree(saved / "text_encoder")
    _remote_code_dir(saved / "text_encoder", marker)
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_backend(saved)
    assert not marker.exists()
    config = json.loads((saved / "config.json").read_text())
    for outside in ("../elsewhere", str(tmp_path / "elsewhere"), "/etc"):
        (saved / "config.json").write_text(json.dumps({**config, "vae": outside}))
        with pytest.raises(ValueError, match="'vae' = .* points outside the backend directory"):
            load_backend(saved)
    (saved / "vae_link").symlink_to(tmp_path)
    (saved / "config.json").write_text(json.dumps({**config, "vae": "vae_link"}))
    with pytest.raises(ValueError, match="is a link to .*, outside the backend directory"):
        load_backend(saved)


# -- 3. reads stay inside the data root; 4. oversized images ---------------------------------------------------


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.png", "sub/../../outside.png", "link.png"])
def test_metadata_rows_cannot_leave_the_data_root(tmp_path, name):
    root = tmp_path / "data"
    root.mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "outside.png")
    Image.new("L", (8, 8)).save(root / "a.png")
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    (root / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a.png"}) + "\n" + json.dumps({"file_name": name}) + "\n"
    )
    with pytest.raises(ValueError, match=r"metadata.jsonl:2: file_name .* (leaves the data directory|is a link)"):
        load_dataset(root)


def _bomb_png(path: Path, side: int = 20_000) -> Path:
    """A tiny PNG whose header claims side x side pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_a_decompression_bomb_is_one_line_in_every_job(tmp_path, capsys):
    root = tmp_path / "data" / "a"
    root.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "fine.png")
    _bomb_png(root / "bomb.png")
    with pytest.raises(
        ValueError, match=r"bomb.png is 20000 x 20000 = 400,000,000 pixels, above the limit of 50,000,000"
    ):
        load_dataset(tmp_path / "data", image_size=8)
    data = str(tmp_path / "data")
    grid = ["grid", "--backend", "digits-vae", "--data", data, "--resize", "--out", str(tmp_path / "g.png")]
    fit = ["fit", "vae", "--data", data, "--image-size", "8", "--out", str(tmp_path / "v")]
    for args in (grid, fit):
        assert main(["--quiet", *args]) == 2
        line = one_line(capsys)
        assert "above the limit" in line and "--max-image-pixels" in line
    # raising the limit lets the header through; this toy file then fails to decode, named
    assert main(["--quiet", "--max-image-pixels", "500000000", *grid]) == 2
    assert "cannot read image" in one_line(capsys)
    from latentmix.data.images import DEFAULT_MAX_IMAGE_PIXELS, set_max_image_pixels

    set_max_image_pixels(DEFAULT_MAX_IMAGE_PIXELS)


# -- 5. one writer per output ------------------------------------------------------------------------------------


@contextlib.contextmanager
def held_by_another_thread(path: Path):
    """Another writer in this process: a thread holds ``path``'s lock inside the block (events are the barrier)."""
    import threading

    from latentmix.utils.locks import exclusive

    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with exclusive(path, "out"):
            taken.set()
            release.wait()

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait()
    try:
        yield
    finally:
        release.set()
        thread.join()


def test_a_second_writer_is_refused_and_a_killed_ones_lock_does_not_block(tmp_path):
    from latentmix.utils.locks import lock_path

    out = tmp_path / "set"
    with (
        held_by_another_thread(out),
        pytest.raises(ValueError, match=r"being written by another latentmix run \(process \d+\)"),
    ):
        synthesize(SynthesisConfig(n=8, shard_size=8, out=out), quiet=True)
    assert not out.exists()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from latentmix.utils.locks import exclusive
        with exclusive({str(out)!r}):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ValueError, match="being written by another latentmix run"):
        synthesize(SynthesisConfig(n=8, shard_size=8, out=out), quiet=True)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_path(out).exists()  # the file stays; the lock died with its process
    assert synthesize(SynthesisConfig(n=8, shard_size=8, out=out), quiet=True).num_samples == 8
    with held_by_another_thread(tmp_path / "ckpt"), pytest.raises(ValueError, match="being written by another"):
        train_classifier(replace(FAST, checkpoint_dir=str(tmp_path / "ckpt")), quiet=True)


# -- 6. training that diverges or is fed garbage -------------------------------------------------------------------


def test_non_finite_settings_and_inputs_are_refused(tmp_path, capsys):
    assert main(["--quiet", "train", "--lr", "inf"]) == 2
    assert "lr must be a finite number > 0, got inf" in one_line(capsys)
    X, y = np.random.default_rng(0).normal(size=(40, 4)), np.arange(40) % 2
    for name, arrays, message in (
        ("nan", {"X_train": np.where(np.arange(160).reshape(40, 4) == 7, np.nan, X), "y_train": y}, "non-finite"),
        ("lengths", {"X_train": X, "y_train": y[:30]}, r"X_train \(40, 4\) and y_train \(30,\) must have one row"),
        ("labels", {"X_train": X, "y_train": y.astype(float)}, "integer class labels"),
    ):
        np.savez(tmp_path / f"{name}.npz", **arrays, X_test=X[:8], y_test=y[:8])
        with pytest.raises(ValueError, match=message):
            train_classifier(TrainConfig(data=str(tmp_path / f"{name}.npz"), steps=5), quiet=True)


def test_a_diverging_run_stops_in_one_line_and_keeps_its_last_checkpoint(tmp_path, monkeypatch):
    import latentmix.train.classifier as tc
    from latentmix.train.checkpoint import read_meta
    from latentmix.train.common import TrainingDiverged

    real, calls = tc.soft_cross_entropy, []

    def explodes(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) > 25 else loss  # after the checkpoint of step 20

    monkeypatch.setattr(tc, "soft_cross_entropy", explodes)
    with pytest.raises(TrainingDiverged, match=r"training diverged: the loss became nan at step 25 .* kept in"):
        train_classifier(replace(FAST, checkpoint_dir=str(tmp_path / "ckpt")), quiet=True)
    assert read_meta(tmp_path / "ckpt")["progress"]["step"] == 20


# -- 7. broken synthetic sets --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "set"
    synthesize(SynthesisConfig(n=8, shard_size=8, labels_per_class=5, out=out), quiet=True)
    return out


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda m, rows: rows[2].pop("soft_label"), r"metadata.jsonl:3: the row lacks 'soft_label'"),
        (
            lambda m, rows: rows[0].update(soft_label=[float("nan")] * 10),
            r"metadata.jsonl:1: 'soft_label' must be 10 finite",
        ),
        (lambda m, rows: m.pop("class_names"), r"manifest.json lacks 'class_names'"),
        (lambda m, rows: rows[1].update(file_name="../../x.png"), r"metadata.jsonl:2: file_name .* leaves"),
    ],
)
def test_a_broken_synthetic_set_names_what_is_missing(small_set, tmp_path, break_it, message, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(small_set, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    rows = [json.loads(line) for line in (broken / "metadata.jsonl").read_text().splitlines()]
    break_it(manifest, rows)
    (broken / "manifest.json").write_text(json.dumps(manifest))
    (broken / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=message):
        SyntheticDataset(broken)
    assert main(["--quiet", "train", "--labels-per-class", "5", "--steps", "5", "--synthetic", str(broken)]) == 2
    one_line(capsys)


# -- 8. checkpoints and resume that cannot drift ---------------------------------------------------------------------


def test_a_finished_run_reports_again_instead_of_training_on(tmp_path, monkeypatch, crash_on_call):
    import latentmix.train.classifier as tc

    first = train_classifier(replace(FAST, checkpoint_dir=str(tmp_path / "ckpt")), quiet=True)
    crash_on_call(tc, "soft_cross_entropy", 1)  # any training step would crash
    again = train_classifier(replace(FAST, checkpoint_dir=str(tmp_path / "ckpt")), quiet=True)
    assert again.test == first.test and again.steps_run == first.steps_run and again.temperature == first.temperature


def test_a_checkpoint_is_one_file_and_its_identity_ignores_how_paths_are_spelled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_classifier(replace(FAST, steps=20, checkpoint_dir="ckpt"), quiet=True)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["state.safetensors"]
    longer = train_classifier(
        replace(FAST, steps=20, checkpoint_dir=str(tmp_path / "ckpt" / ".." / "ckpt")), quiet=True
    )
    assert longer.steps_run == 20  # the same run, found, not "other settings"


def test_an_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    """Killed while writing the step-40 checkpoint: the step-20 one stays, whole, and resumes."""
    import latentmix.utils.atomic as atomic
    from latentmix.train.checkpoint import read_meta

    real_replace, writes = atomic.os.replace, []

    def killed_on_the_second_checkpoint(src, dst):
        if str(dst).endswith("state.safetensors"):
            writes.append(dst)
            if len(writes) == 2:
                raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", killed_on_the_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(replace(FAST, checkpoint_dir=str(tmp_path / "ckpt")), quiet=True)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["state.safetensors"]  # no half file beside it
    assert read_meta(tmp_path / "ckpt")["progress"]["step"] == 20
    full = train_classifier(FAST, quiet=True)
    assert train_classifier(replace(FAST, checkpoint_dir=str(tmp_path / "ckpt")), quiet=True).test == pytest.approx(
        full.test
    )


def test_synthesize_resumes_a_run_killed_at_its_start_and_redoes_deleted_images(tmp_path, small_set):
    out = tmp_path / "set"
    (out / "shards").mkdir(parents=True)  # a run killed before it wrote its run file (the old layout order)
    (out / "images").mkdir()
    assert synthesize(SynthesisConfig(n=8, shard_size=8, labels_per_class=5, out=out), quiet=True).num_samples == 8
    victim = next((out / "images").rglob("*.png"))
    victim.unlink()
    result = synthesize(SynthesisConfig(n=8, shard_size=8, labels_per_class=5, out=out), quiet=True)
    assert result.written == 8 and victim.is_file()
    digest = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert digest == {p.relative_to(small_set): p.read_bytes() for p in sorted(small_set.rglob("*")) if p.is_file()}


# -- 9. data loading that neither crushes nor explodes -------------------------------------------------------------


def test_labels_are_bounded_and_16_bit_images_keep_their_brightness(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    Image.new("L", (8, 8), 10).save(root / "a.png")
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "label": 10**12}) + "\n")
    with pytest.raises(ValueError, match=r"metadata.jsonl:1: label 1000000000000 is outside 0..99999"):
        load_dataset(root)
    wide = np.full((8, 8), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    Image.fromarray(wide).save(root / "a.png")
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "label": 0}) + "\n")
    assert Image.open(root / "a.png").mode.startswith("I")
    assert float(load_dataset(root).images([0]).mean()) == pytest.approx(0.0, abs=0.01)  # not 99.6 % white


def test_captions_with_line_separators_load_as_datasets_reads_them(tmp_path):
    from datasets import load_dataset as hf_load

    root = tmp_path / "data"
    root.mkdir()
    texts = ["a\u2028caption", "next\x85line"]
    rows = []
    for i, text in enumerate(texts):
        Image.new("L", (8, 8), 40 * i).save(root / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": text}, ensure_ascii=False) + "\n")
    (root / "metadata.jsonl").write_bytes("".join(rows).encode("utf-8"))
    assert load_dataset(root).texts == texts == hf_load("imagefolder", data_dir=str(root), split="train")["text"]


def test_hidden_files_are_skipped_and_unreadable_folders_are_named(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    Image.new("L", (8, 8)).save(root / "cat" / "1.png")
    Image.new("L", (8, 8)).save(root / "dog" / "1.png")
    (root / "cat" / "._1.png").write_bytes(b"\x00\x05\x16\x07 Mac OS X metadata")
    assert len(ImageFolderDataset(root)) == 2
    real_scandir = os.scandir

    def denied(path="."):
        if str(path).endswith("dog"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(ValueError, match=r"folder .*dog cannot be read \(Permission denied\)"):
        ImageFolderDataset(root)
