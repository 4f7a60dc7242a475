"""The latentmix command: thin over the library, one-line errors, non-zero exits, no partial files."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from latentmix.cli import main


def run_cli(*args, cwd=None):
    """Run the installed command in a scratch directory (not the source tree)."""
    cwd = cwd or Path(tempfile.mkdtemp())
    return subprocess.run(
        [sys.executable, "-m", "latentmix", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_grid_command_writes_png_and_gif(tmp_path, capsys):
    code = main(
        [
            "--quiet",
            "grid",
            "--out",
            str(tmp_path / "g.png"),
            "--gif",
            str(tmp_path / "g.gif"),
            "--classes",
            "3:8",
            "1:7",
            "--steps",
            "5",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "2 pairs x 5 steps" in out and "slerp" in out
    assert Image.open(tmp_path / "g.png").size[1] >= 2 * 64 and Image.open(tmp_path / "g.gif").n_frames == 8


def test_grid_command_with_pairs_prior_and_lerp(tmp_path):
    assert main(["grid", "--pairs", "0:1", "--method", "lerp", "--out", str(tmp_path / "a.png")]) == 0
    assert main(["grid", "--prior", "3", "--out", str(tmp_path / "b.png")]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["grid", "--steps", "1"], "steps must be an int >= 2"),
        (["grid", "--backend", "no-such-model"], "unknown backend 'no-such-model'"),
        (["grid", "--pairs", "0:100000"], "out of range"),
        (["grid", "--classes", "3:11"], "class 11 is out of range"),
        (["grid", "--data", "/nonexistent/folder"], "does not exist"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2_and_no_file(tmp_path, args, message):
    proc = run_cli(*args, "--out", str(tmp_path / "g.png"))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("latentmix: error:") and message in lines[0], proc.stderr
    assert not list(tmp_path.iterdir())


def test_unreadable_image_in_data_folder_is_named(tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "bad.png").write_bytes(b"\x89PNG garbage")
    proc = run_cli("grid", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "g.png"))
    assert proc.returncode == 2 and "cannot read image" in proc.stderr and "bad.png" in proc.stderr
    assert not (tmp_path / "g.png").exists()


def test_corrupt_checkpoint_is_one_line(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text('{"latentmix_backend": "vae"}')
    proc = run_cli("grid", "--backend", str(tmp_path / "ckpt"), "--out", str(tmp_path / "g.png"))
    assert (
        proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "could not load ConvVAE" in proc.stderr
    )


def test_argument_errors_exit_non_zero():
    proc = run_cli("grid", "--pairs", "0-1", "--out", "x.png")
    assert proc.returncode == 2 and "expected A:B" in proc.stderr
    assert run_cli("fit", "vae", "--epochs", "0", "--out", "x").returncode == 2


def test_demo_writes_its_outputs(tmp_path, capsys):
    assert main(["--quiet", "demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    for name in (
        "grid_slerp.png",
        "grid_lerp.png",
        "walk_slerp.gif",
        "grid_prior.png",
        "grid_ldm_prompts.png",
        "paired_preview.png",
    ):
        assert (tmp_path / "demo" / name).is_file() and name in out
    from latentmix.data import SyntheticDataset

    assert len(SyntheticDataset(tmp_path / "demo" / "paired_set_seed0")) == 256
