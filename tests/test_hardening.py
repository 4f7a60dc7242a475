"""Hardening the new surface (issue 34): nothing deleted behind a user's back, no silently wrong set, bounded work,
messages that name the fix. Each numbered section is one class of the issue; races are made deterministic with a
hook or a pipe, never a sleep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from latentmix.cli import main
from latentmix.configs import ExportConfig, WalkConfig
from latentmix.jobs.export import export_dataset
from latentmix.jobs.walk import walk


def run(argv: list[str]) -> int:
    """``latentmix ARGV``'s exit status, whether the library or argparse refused it."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("latentmix: error:"), err
    return err


# -- 1. data loss: one writer per folder, and the final move never replaces what it did not create --------------


def test_a_folder_that_appears_while_a_walk_writes_is_kept_and_named(tmp_path, monkeypatch):
    import latentmix.utils.viz as viz

    out = tmp_path / "walk"
    real = viz.save_gif

    def intrude_then_save(*args, **kwargs):  # another program writes into --out while the walk writes its GIF
        out.mkdir(exist_ok=True)
        (out / "someone-elses.txt").write_text("keep me")
        return real(*args, **kwargs)

    monkeypatch.setattr(viz, "save_gif", intrude_then_save)
    with pytest.raises(ValueError, match=r"changed while this run wrote it.*nothing in it was replaced") as caught:
        walk(WalkConfig(keyframes=("0", "1"), frames=2, video="none", out=str(out)))
    assert (out / "someone-elses.txt").read_text() == "keep me" and sorted(p.name for p in out.iterdir()) == [
        "someone-elses.txt"
    ]
    kept = Path(str(caught.value).rsplit("output is in ", 1)[1])
    assert (kept / "walk.json").is_file() and len(list((kept / "frames").iterdir())) == 3


HOLD = """
import sys
from latentmix.utils.locks import exclusive
with exclusive(sys.argv[1], "out"):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def held(tmp_path):
    """``held(path)``: another process holds ``path``'s writer lock until the test ends (a pipe is the barrier)."""
    procs = []

    def hold(path: Path) -> Path:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return path

    yield hold
    for proc in procs:
        proc.communicate("")


@pytest.mark.parametrize(
    "argv",
    [
        ["walk", "--keyframes", "0", "1", "--frames", "2", "--video", "none"],
        ["export", "--data", "digits", "--split", "test"],
        ["augment", "--data", "shapes", "--split", "test"],
        ["synthesize", "-n", "8", "--shard-size", "8"],
    ],
)
def test_a_folder_another_run_writes_is_refused_and_untouched(tmp_path, held, capsys, argv):
    out = held(tmp_path / "out")
    assert main(["--quiet", *argv, "--out", str(out)]) == 2
    assert "being written by another latentmix run" in one_line(capsys)
    assert not out.exists()


def test_a_killed_writers_hidden_temporary_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "export"
    stale = tmp_path / f".{out.name}.tmp-deadbeef"
    (stale / "test").mkdir(parents=True)
    (stale / "test" / "half.png").write_bytes(b"half")
    export_dataset(ExportConfig(data="digits", split="test", out=str(out)), quiet=True)
    assert not stale.exists() and (out / "test" / "metadata.jsonl").is_file()
    assert json.loads((out / "class_names.json").read_text())[0] == "0"


# -- 2. the page on a network: the real address, a warning, a login, a bounded disk ------------------------------


def test_a_page_on_every_interface_says_so_and_what_it_exposes():
    from latentmix.configs import ExploreConfig
    from latentmix.explore.serving import address, exposure_warning

    assert exposure_warning(ExploreConfig()) is None  # 127.0.0.1: this machine only
    warning = exposure_warning(ExploreConfig(host="0.0.0.0", max_export=500))
    assert warning is not None and "0.0.0.0 (every interface)" in warning and "there is no login" in warning
    assert "500 images" in warning
    assert "log in with --auth" in str(exposure_warning(ExploreConfig(host="0.0.0.0", auth="me:secret")))
    assert address("0.0.0.0", 7861) == "http://0.0.0.0:7861/" and address("::", 80) == "http://[::]:80/"


def test_the_login_keeps_the_page_api_closed(tmp_path):
    import urllib.error
    import urllib.request

    from latentmix.backends import load_backend
    from latentmix.explore import Explorer
    from latentmix.explore.app import launch

    app = launch(Explorer(load_backend("digits-vae"), None, out_dir=tmp_path), block=False, auth=("me", "secret"))
    try:
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(app.local_url + "config")
    finally:
        app.close()


def test_the_page_writes_at_most_max_export_images(tmp_path):
    import torch

    from latentmix.backends import load_backend
    from latentmix.explore import Explorer

    explorer = Explorer(load_backend("digits-vae"), None, out_dir=tmp_path, max_export=5)
    explorer.save_frame(torch.zeros(1, 8, 8))
    explorer.save_strip(torch.zeros(4, 1, 8, 8), video=None)
    with pytest.raises(ValueError, match=r"frame: 1 more images would pass this page's export quota of 5 .*0 left"):
        explorer.save_frame(torch.zeros(1, 8, 8))
    assert len(list(tmp_path.glob("frame-*.png"))) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--host", "no-such-host.invalid"], "is not a host name or address this machine resolves"),
        (["--host", "203.0.113.9"], "is not an address of this machine"),
        (["--max-upload-pixels", "60000000"], "above the largest image latentmix opens"),
        (["--auth", "onlyuser"], "auth must be USER:PASSWORD"),
    ],
)
def test_bad_serving_settings_are_one_line_before_loading(tmp_path, capsys, argv, message):
    assert main(["explore", "--out", str(tmp_path / "x"), *argv]) == 2
    assert message in one_line(capsys) and not (tmp_path / "x").exists()


def test_an_out_that_is_a_file_is_refused_at_start(tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    assert main(["explore", "--out", str(tmp_path / "file")]) == 2
    assert "is a file; the page writes its exports into a folder" in one_line(capsys)
    assert (tmp_path / "file").read_text() == "mine"


# -- 3. silently wrong results: each is one line, exit 2, nothing written ----------------------------------------


@pytest.fixture(scope="module")
def saved_classifier(tmp_path_factory) -> Path:
    from latentmix.configs import TrainConfig
    from latentmix.train.classifier import train_classifier

    out = tmp_path_factory.mktemp("clf") / "erm"
    train_classifier(TrainConfig(labels_per_class=5, steps=5, eval_every=5, save_model=str(out)), quiet=True)
    return out


def _broken_copy(saved: Path, where: Path, *, temperature=None, nan_weight: bool = False) -> Path:
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    copy = Path(shutil.copytree(saved, where))
    if temperature is not None:
        config = json.loads((copy / "config.json").read_text())
        config["temperature"] = temperature
        (copy / "config.json").write_text(json.dumps(config))  # NaN is written as NaN, as Python's json reads it
    if nan_weight:
        (weights,) = copy.glob("*.safetensors")
        tensors = load_file(str(weights))
        first = sorted(tensors)[0]
        tensors[first] = torch.full_like(tensors[first], float("nan"))
        save_file(tensors, str(weights))
    return copy


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ({"temperature": float("nan")}, "its temperature is nan"),
        ({"temperature": 0}, "its temperature is 0"),
        ({"temperature": -1.5}, "its temperature is -1.5"),
        ({"nan_weight": True}, "holds NaN or inf; it would keep no blend"),
    ],
)
def test_a_broken_filter_classifier_is_refused_not_an_empty_set(saved_classifier, tmp_path, capsys, broken, message):
    clf = _broken_copy(saved_classifier, tmp_path / "clf", **broken)
    out = tmp_path / "set"
    assert main(["--quiet", "synthesize", "-n", "8", "--filter-classifier", str(clf), "--out", str(out)]) == 2
    assert message in one_line(capsys) and not out.exists()


def _folder(root: Path, rows: list[dict], factors: dict | None = None) -> Path:
    import numpy as np
    from PIL import Image

    (root / "images").mkdir(parents=True)
    for i, row in enumerate(rows):
        name = row.setdefault("file_name", f"images/{i}.png")
        if not (root / name).exists():
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(root / name)
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if factors is not None:
        (root / "factors.json").write_text(json.dumps(factors))
    return root


def test_one_int_label_among_class_names_is_refused(tmp_path, capsys):
    root = _folder(tmp_path / "d", [{"label": "cat"}, {"label": "dog"}, {"label": 3}])
    assert main(["export", "--data", str(root), "--split", "all", "--out", str(tmp_path / "e")]) == 2
    assert "label 3 is an int but other labels are class names" in one_line(capsys)
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("command", ["export", "augment", "fit align"])
def test_one_image_listed_with_two_labels_is_refused(tmp_path, capsys, command):
    rows = [{"label": "cat", "text": "a cat"}, {"label": "dog", "text": "a dog"}]
    rows.append({"file_name": "images/0.png", "label": "dog", "text": "a dog"})
    root = _folder(tmp_path / "d", rows)
    args = {"export": ["--split", "all"], "augment": ["--split", "all", "--transforms", "hflip"], "fit align": []}
    out = tmp_path / "o"
    assert main(["--quiet", *command.split(), "--data", str(root), *args[command], "--out", str(out)]) == 2
    assert "0.png is listed again (first at line 1) with another label" in one_line(capsys) and not out.exists()


def test_a_flip_mirrors_a_left_right_factor_by_its_values_whatever_its_name():
    from types import SimpleNamespace

    import torch

    from latentmix.data.augment import PairAugment

    values = {"side": ["left", "right"], "hand": ["left", "right", "both"], "mood": ["up", "down"]}
    flip = PairAugment(("hflip",), p=1.0, data=SimpleNamespace(class_names=["a", "b"], factor_values=values))
    out = flip(torch.zeros(1, 1, 4, 4), ["a hand on the left"], [{"side": "left", "hand": "right", "mood": "up"}])
    assert out.texts == ["a hand on the right"] and out.factors == [{"side": "right", "hand": "left", "mood": "up"}]


def _synthetic_set(tmp_path: Path) -> Path:
    from latentmix.configs import SynthesisConfig
    from latentmix.jobs.synthesize import synthesize

    out = tmp_path / "set"
    synthesize(SynthesisConfig(n=6, shard_size=6, labels_per_class=5, out=str(out)), quiet=True)
    return out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda rows: rows[1].update({"lambda": 1.4}), "'lambda' must be a number in \\[0, 1\\]"),
        (lambda rows: rows[2].update({"label": (rows[2]["label"] + 1) % 10}), "is not the dominant class"),
        (lambda rows: rows[3].update({"id": rows[0]["id"]}), "appears twice"),
    ],
)
def test_a_synthetic_set_that_contradicts_itself_does_not_train(tmp_path, capsys, change, message):
    out = _synthetic_set(tmp_path)
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    change(rows)
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["--quiet", "train", "--labels-per-class", "5", "--steps", "5", "--synthetic", str(out)]
    assert main([*argv, "--json", str(tmp_path / "r.json")]) == 2
    assert message.replace("\\", "") in one_line(capsys).replace("\\", "") and not (tmp_path / "r.json").exists()


# -- 4. summaries say what was written -------------------------------------------------------------------------


def test_a_balance_a_filter_fell_short_of_says_which_classes_and_why():
    from latentmix.cli import _balance_summary

    balance = {
        "target": 20, "real": {"0": 20, "1": 5}, "made": {"0": 0, "1": 15}, "synthetic": {"0": 0, "1": 11},
        "total": {"0": 20, "1": 16},
    }  # fmt: skip
    text = _balance_summary(balance)
    assert "balanced towards 20" in text and "short of 20: 1 16 (the filter kept 11 of 15)" in text
    full = {**balance, "synthetic": {"0": 0, "1": 15}, "total": {"0": 20, "1": 20}}
    assert _balance_summary(full).startswith("balanced to 20 per class")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--balance", "10", "-n", "7"], "n: balance sets the number of samples; drop n"),
        (["--balance", "0"], "expected a count from 1 to 100,000,000 or 'max', got '0'"),
        (["--balance", "1000000000000"], "expected a count from 1 to 100,000,000 or 'max'"),
        (["-n", "1000000000"], "num_samples|n must be at most 100,000,000"),
    ],
)
def test_balance_and_n_settings_say_what_they_do(tmp_path, capsys, argv, message):
    import re

    assert run(["--quiet", "synthesize", "--labels-per-class", "5", *argv, "--out", str(tmp_path / "s")]) == 2
    assert re.search(message, one_line(capsys)) and not (tmp_path / "s").exists()


# -- 5. no tracebacks, no runaway work ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fps", "1e-9"], "fps must be a finite number >= 0.01"),
        (["--frames", "100000000"], "frames must be at most 10,000"),
        (["--keyframes", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "--frames", "10000"],
         "make 110,001 frames; a walk makes at most 100,000"),
        (["--measure", "100000000", "--spacing", "even"], "measure must be at most 64"),
    ],
)  # fmt: skip
def test_walks_are_bounded_up_front(tmp_path, capsys, argv, message):
    base = ["--keyframes", "0", "1"] if "--keyframes" not in argv else []
    assert main(["--quiet", "walk", *base, *argv, "--video", "none", "--out", str(tmp_path / "w")]) == 2
    assert message in one_line(capsys) and not (tmp_path / "w").exists()


def test_json_nested_too_deeply_is_one_line(tmp_path, capsys):
    root = _folder(tmp_path / "d", [{"label": "a"}, {"label": "b"}])
    with (root / "metadata.jsonl").open("a") as f:
        f.write("[" * 100_000 + "]" * 100_000 + "\n")
    assert main(["export", "--data", str(root), "--split", "all", "--out", str(tmp_path / "e")]) == 2
    assert "metadata.jsonl:3: JSON nested too deeply to read" in one_line(capsys)


# -- 6. messages that name the fix -------------------------------------------------------------------------------


def test_a_bomb_upload_says_how_many_pixels_and_which_limit(tmp_path):
    import struct
    import zlib

    from latentmix.backends import load_backend
    from latentmix.explore import Explorer

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 0, 0, 0, 0)
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    explorer = Explorer(load_backend("digits-vae"), None, out_dir=tmp_path / "out")
    with pytest.raises(ValueError, match=r"bomb.png is 30000 x 30000 = 900,000,000 pixels.*--max-upload-pixels"):
        explorer.from_upload(tmp_path / "bomb.png")


def test_seeds_indices_and_keyframe_specs_are_checked_by_name(tmp_path, capsys):
    from latentmix.backends import load_backend
    from latentmix.data import load_dataset
    from latentmix.explore import Explorer

    explorer = Explorer(load_backend("digits-ldm"), load_dataset("digits", split="test"), out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*63\)"):
        explorer.from_prompt("a handwritten digit 3", 2**64)
    with pytest.raises(TypeError, match="index must be an integer, got 1.5"):
        explorer.from_index(1.5)
    assert main(["--quiet", "grid", "--prior", "1", "--seed", str(2**64), "--out", str(tmp_path / "g.png")]) == 2
    assert "seed must be an int in [0, 2**63)" in one_line(capsys)


def test_an_edit_to_the_same_value_and_an_unwritable_report_are_refused_first(tmp_path, capsys):
    argv = ["edit", "--images", str(tmp_path), "--factor", "colour", "--source", "red", "--target", "red"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert "target: it is the source value (red)" in one_line(capsys)
    (tmp_path / "file").write_text("")
    assert main(["--quiet", "train", "--steps", "5", "--json", str(tmp_path / "file" / "r.json")]) == 2
    assert "--json" in one_line(capsys)  # before training, not after it


def test_a_filter_classifier_is_read_without_deprecation_warnings(saved_classifier):
    import warnings

    from latentmix.jobs.sources import BlendFilter

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        blend_filter = BlendFilter(str(saved_classifier), 0.5, [str(d) for d in range(10)], (1, 8), "digits")
    assert blend_filter.temperature > 0
