"""The built package holds every module and embedded model of the checkout, and CI tests the installed copy.

A package folder missing from the build would pass every test behind an editable install; here the wheel's
file list is compared with the checkout. ``.ci/run`` installs the project as the README says (a wheel built
from the checkout, not an editable install) and sets ``LATENTMIX_REQUIRE_INSTALLED=1``, so the suite must also
be importing that installed copy.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import latentmix

ROOT = Path(__file__).resolve().parents[1]
MODEL_SUFFIXES = (".json", ".md", ".safetensors")


def _checkout_files() -> set[str]:
    """What the package must ship, as paths inside it."""
    package = {f"latentmix/{p.relative_to(ROOT / 'latentmix').as_posix()}" for p in (ROOT / "latentmix").rglob("*.py")}
    models = {
        f"latentmix/embedded/{p.relative_to(ROOT / 'models').as_posix()}"
        for p in (ROOT / "models").rglob("*")
        if p.is_file()
        and (p.suffix in MODEL_SUFFIXES or p.name == "__init__.py")
        and not any(part.endswith(".train") for part in p.parts)  # training states are not shipped
    }
    return package | models | {"latentmix/py.typed"}


def _is_editable(dist: importlib.metadata.Distribution) -> bool:
    return any("__editable__" in str(f) or str(f).endswith(".pth") for f in dist.files or [])


def _shipped_files(tmp_path: Path) -> set[str]:
    """The files of the installed distribution, or of a wheel built now where the install is editable."""
    dist = importlib.metadata.distribution("latentmix")
    if not _is_editable(dist):
        return {str(f).replace(os.sep, "/") for f in dist.files or []}
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("latentmix-*.whl")
    return set(zipfile.ZipFile(wheel).namelist())


def test_the_package_ships_every_module_and_embedded_model(tmp_path):
    missing = sorted(_checkout_files() - _shipped_files(tmp_path))
    assert not missing, f"not in the built package: {missing[:10]}"


def test_ci_tests_the_installed_package_not_the_checkout():
    if os.environ.get("LATENTMIX_REQUIRE_INSTALLED") != "1":
        return  # a developer's editable install: the wheel's contents are checked above
    assert not _is_editable(importlib.metadata.distribution("latentmix")), "CI installed latentmix editable"
    where = Path(latentmix.__file__).resolve()
    assert not where.is_relative_to(ROOT / "latentmix"), f"the tests imported the checkout ({where})"
