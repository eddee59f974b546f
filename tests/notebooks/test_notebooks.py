"""Notebooks are clients of the installed library: execute each on small data, parameters injected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.notebook

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PARAMS = {
    "01_explore_events_and_features": {"SAMPLE_EVENTS": 15_000, "CURVE_POINTS": 6},
    "02_train_and_evaluate_two_tower": {"SAMPLE_EVENTS": 20_000, "EPOCHS": 2},
    "03_incremental_vs_full_refresh": {"SAMPLE_EVENTS": 12_000, "DAYS": 4},
}


def _inject(nb, values: dict[str, object]) -> None:
    """Insert a cell after the one tagged ``parameters`` that overrides it (papermill's convention)."""
    import nbformat

    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))


def test_notebooks_are_stored_without_outputs():
    import nbformat

    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code"), \
            f"{path.name} has outputs: clear them before committing"
        assert not any("sys.path" in c.source for c in nb.cells), f"{path.name} edits sys.path"


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_notebook_executes(name, tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    _inject(nb, {"HOME": str(tmp_path / "home"), **PARAMS[name]})
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any failure
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs), \
        "expected at least one plot"
