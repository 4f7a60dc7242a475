"""Notebooks are executed end to end (they are small) and must be committed without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_is_stripped(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), (
        "commit notebooks with outputs stripped"
    )
    # the timeout catches a hung cell, it does not measure speed: a busy machine makes the suite slower, not red
    client = NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_there_is_a_notebook_for_each_job_so_far():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_interpolation_grids.ipynb", "02_paired_synthesis.ipynb", "03_training_on_blends.ipynb"} <= names
