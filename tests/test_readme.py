"""The README's set-up commands stay true: the quickstart runs, and .ci/run uses the test command."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

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
        [sys.executable, "-m", "latentmix", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    written = lines[lines.index("latentmix demo: wrote") + 1 :]
    assert len(written) >= 8
    for line in written:
        assert (tmp_path / line.split()[-1]).exists(), line


def test_ci_runs_the_readme_test_command():
    assert block("test-command") == 'pip install torch==2.13.0 ".[test]" && pytest'
    assert "test-command" in (ROOT / ".ci" / "run").read_text()
