"""Execute every notebook in notebooks/ top to bottom (small sizes: FXPRUNE_NB_SMALL=1) and
check that no cell fails and that each one draws at least one figure.

Any ``notebooks/*.ipynb`` is picked up (files starting with ``_`` are skipped). The notebook
runs on a copy in memory, in the notebooks folder (so relative paths work); the committed file
is not rewritten. To refresh the committed outputs, run ``python notebooks/_build.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PATHS = sorted(p for p in NOTEBOOKS.glob("*.ipynb") if not p.name.startswith("_"))
CELL_TIMEOUT_S = 300  # one cell; the whole notebook should take well under a minute when small


def _images(nb) -> int:
    return sum(
        1
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    )


def test_there_are_notebooks() -> None:
    names = {p.stem for p in PATHS}
    assert {"01_quickstart", "02_dependency_graph", "03_group_sparse_learning", "04_cli_save_load"} <= names


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs_and_draws(path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FXPRUNE_NB_SMALL", "1")  # the kernel inherits the environment
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []  # judge this run's outputs, not the committed ones
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    t = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the failing cell and traceback
    seconds = time.perf_counter() - t
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, errors
    assert _images(nb) >= 1, f"{path.name} drew no figure (no image/png output)"
    print(f"{path.name}: {seconds:.1f}s, {_images(nb)} figures")


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_committed_notebook_has_outputs(path: Path) -> None:
    """The committed file carries the outputs of a run, figures included, so it reads well on
    a code host; stale or unexecuted notebooks fail here (rebuild with notebooks/_build.py)."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), f"{path.name} has unexecuted cells"
    assert _images(nb) >= 1, f"{path.name} has no figure in its saved outputs"
    errors = [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, f"{path.name} was saved with an error output"
