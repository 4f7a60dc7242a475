"""The latentmix command: thin over the library, flags generated from the configs, one-line errors, no partial files."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from latentmix import configs
from latentmix.cli import build_parser, main


def run_cli(*args, cwd=None):
    """Run the installed command in a scratch directory (not the source tree)."""
    cwd = cwd or Path(tempfile.mkdtemp())
    return subprocess.run(
        [sys.executable, "-m", "latentmix", *args], capture_output=True, text=True, cwd=cwd, timeout=1800
    )


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("latentmix: error:"), err
    return lines[0]


def test_grid_command_writes_png_and_gif(tmp_path, capsys):
    outputs = ["--out", str(tmp_path / "g.png"), "--gif", str(tmp_path / "g.gif")]
    code = main(["--quiet", "grid", *outputs, "--classes", "3:8", "1:7", "--steps", "5"])
    assert code == 0
    out = capsys.readouterr().out
    assert "2 pairs x 5 steps" in out and "slerp" in out
    assert Image.open(tmp_path / "g.png").size[1] >= 2 * 64 and Image.open(tmp_path / "g.gif").n_frames == 8


def test_grid_command_with_pairs_prior_and_lerp(tmp_path, capsys):
    assert main(["grid", "--pairs", "0:1", "--method", "lerp", "--out", str(tmp_path / "a.png")]) == 0
    assert "1 pairs x 8 steps, lerp" in capsys.readouterr().out
    assert main(["grid", "--prior", "3", "--out", str(tmp_path / "b.png")]) == 0
    assert "3 pairs x 8 steps, slerp" in capsys.readouterr().out
    one_row, three_rows = Image.open(tmp_path / "a.png").size, Image.open(tmp_path / "b.png").size
    assert one_row[1] < three_rows[1] and one_row[0] > three_rows[0]  # real endpoints add two columns


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["grid", "--steps", "1", "--out", "{tmp}/g.png"], "steps must be an int >= 2"),
        (["grid", "--backend", "no-such-model", "--out", "{tmp}/g.png"], "unknown backend 'no-such-model'"),
        (["grid", "--pairs", "0:100000", "--out", "{tmp}/g.png"], "out of range"),
        (["grid", "--classes", "3:11", "--out", "{tmp}/g.png"], "class 11 is out of range"),
        (["grid", "--data", "/nonexistent/folder", "--out", "{tmp}/g.png"], "does not exist"),
        (["grid", "--gif", "{tmp}/x.png", "--out", "{tmp}/g.png"], "gif must be a .gif path"),
        (["fit", "vae", "--epochs", "0", "--out", "{tmp}/o"], "epochs must be a positive int, got 0"),
        (["train", "--alpha", "nan", "--json", "{tmp}/r.json"], "alpha must be a finite number > 0, got nan"),
        (["train", "--json", "{tmp}/r.txt"], "--json must be a .json path"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2_and_no_file(tmp_path, capsys, args, message):
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    assert message in one_line_error(capsys)
    assert not list(tmp_path.iterdir())


def test_a_real_process_exits_2_with_one_line_on_bad_flags_and_bad_settings(tmp_path):
    proc = run_cli("grid", "--pairs", "0-1", "--out", str(tmp_path / "x.png"))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("latentmix: error: argument --pairs: expected A:B, got '0-1'")
    proc = run_cli("grid", "--steps", "1", "--out", str(tmp_path / "x.png"))
    assert proc.returncode == 2 and proc.stderr.strip() == "latentmix: error: steps must be an int >= 2, got 1"
    assert not list(tmp_path.iterdir())


def test_unreadable_image_in_data_folder_is_named(tmp_path, capsys):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "bad.png").write_bytes(b"\x89PNG garbage")
    assert (
        main(["grid", "--backend", "digits-vae", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "g.png")])
        == 2
    )
    line = one_line_error(capsys)
    assert "cannot read image" in line and "bad.png" in line
    assert not (tmp_path / "g.png").exists()


def test_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text('{"latentmix_backend": "vae"}')
    assert main(["grid", "--backend", str(tmp_path / "ckpt"), "--out", str(tmp_path / "g.png")]) == 2
    assert "could not load ConvVAE weights" in one_line_error(capsys)


def test_every_setting_of_every_job_is_a_flag_with_help_and_the_configs_default():
    """The CLI is generated from the configs: a field without a flag, help or the same default is a bug."""
    parser = build_parser()
    subparsers = {a.dest: a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0]))}
    commands = subparsers["command"].choices
    fits = next(a for a in commands["fit"]._actions if a.dest == "model").choices
    classes = {
        "grid": configs.GridConfig, "walk": configs.WalkConfig, "explore": configs.ExploreConfig,
        "edit": configs.EditConfig, "synthesize": configs.SynthesisConfig, "export": configs.ExportConfig,
        "augment": configs.AugmentConfig, "evaluate": configs.EvalConfig, "evaluate-pairs": configs.PairEvalConfig,
        "train": configs.TrainConfig, "compare": configs.CompareConfig, "demo": configs.DemoConfig,
        "fit vae": configs.VAEFitConfig, "fit gan": configs.GANFitConfig, "fit ldm": configs.LDMFitConfig,
        "fit reference-classifier": configs.ReferenceFitConfig, "fit align": configs.AlignFitConfig,
    }  # fmt: skip
    jobs = {job: fits[job[4:]] if job.startswith("fit ") else commands[job] for job in classes}
    for job, sub in jobs.items():
        actions = {a.dest: a for a in sub._actions}
        for f in dataclasses.fields(classes[job]):
            if not f.metadata.get("cli", True):  # Python only (a loaded object, the base settings of compare)
                continue
            assert f.name in actions, f"{job}: no flag for {f.name}"
            assert actions[f.name].help, f"{job} --{f.name} has no help"
            check = f.metadata.get("check")
            if check is not None and check.choices is not None and not isinstance(f.default, tuple):
                assert tuple(actions[f.name].choices) == check.choices, f"{job} --{f.name}: choices differ"
        for action in sub._actions:
            assert action.help, f"{job}: {action.option_strings} has no help"
    args = build_parser().parse_args(["train", "--steps", "7"])
    from latentmix.configs.options import from_args

    assert from_args(configs.TrainConfig, args) == configs.TrainConfig(steps=7)  # every other default: the config's
