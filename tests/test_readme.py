"""The README's set-up commands stay true: the quickstart runs, and .ci/run uses the test command."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).parent.parent


def block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\n```bash\n(.*?)\n```\n<!-- /{marker} -->", text, re.S)
    assert match, f"README.md has no {marker} block"
    return match.group(1).strip()


def test_quickstart_installs_then_runs_the_demo(tmp_path):
    install, run = [part.strip() for part in block("quickstart").split("&&")]
    assert install.startswith("pip install") and run.startswith("latentmix ")
    argv = shlex.split(run)[1:]
    proc = subprocess.run(
        [sys.executable, "-m", "latentmix", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    written = {
        line.split()[0]: tmp_path / line.split()[-1] for line in lines[lines.index("latentmix demo: wrote") + 1 :]
    }
    expected = {"grid_slerp", "grid_lerp", "walk_gif", "grid_prior", "grid_ldm_prompts", "paired_set", "paired_preview"}
    assert expected <= set(written) and "training_comparison" in written
    for name, path in written.items():
        assert path.exists(), name
    from latentmix.data import SyntheticDataset

    assert len(SyntheticDataset(written["paired_set"])) == 256
    assert Image.open(written["walk_gif"]).n_frames > 2 and "accuracy" in written["training_comparison"].read_text()


def test_ci_runs_the_readme_test_command_with_lint_and_types_first():
    assert block("test-command") == 'pip install torch==2.13.0 ".[test]" && pytest'
    ci = (ROOT / ".ci" / "run").read_text()
    assert "test-command" in ci
    order = [
        ci.index(step)
        for step in ('eval "$install"', "ruff check .", "ruff format --check .", "\nmypy", 'eval "$tests"')
    ]
    assert order == sorted(order)


def test_the_python_api_example_runs(tmp_path, monkeypatch):
    """The README's Python API block, as written (it writes grid.png into the working directory)."""
    text = (ROOT / "README.md").read_text()
    code = text.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), scope)
    assert scope["keys"].shape == (1, 85, 16) and scope["walk"].images.shape == (1, 85, 1, 8, 8)
    assert float(scope["walk"].cv[0]) < float(scope["walk"].cv_uniform[0]) and (tmp_path / "grid.png").is_file()


def test_every_command_in_the_readme_parses():
    """Each `latentmix ...` line of the README's bash blocks is one the command line takes (flags as documented)."""

    from latentmix.cli import build_parser

    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)\n```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if "latentmix " in line:
                commands.append(line[line.index("latentmix ") :].split(" && ")[0])
    assert len(commands) > 40 and any("--model" in c for c in commands)
    for command in commands:
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit:
            pytest.fail(f"README command does not parse: {command}")
