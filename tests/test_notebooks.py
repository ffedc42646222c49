"""Executes the notebooks headless (nbclient) and fails if any cell errors (DESIGN.md §1)."""
import json
import os
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = pathlib.Path(__file__).parents[1] / "notebooks"


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_ships_without_outputs(path):
  nb = nbformat.read(path, as_version=4)
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == "code":
      assert not cell.get("outputs") and cell.get("execution_count") is None, (
          f"{path.name} cell {i} has outputs; strip them before committing")


@pytest.mark.parametrize("path", [NOTEBOOKS / "quickstart.ipynb"], ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
  nb = nbformat.read(path, as_version=4)
  # The kernel inherits the environment: CPU, no trained checkpoint (figures use the
  # kernel's inline backend, so they come back as image/png outputs).
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.delenv("JAXTOK_CHECKPOINT", raising=False)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # Raises CellExecutionError on the first failing cell.
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
  assert "reloaded: same tokens" in text and "ValueError: images:" in text
  # Both figures (reconstructions, prefix decodes) rendered as images.
  assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
  assert os.environ.get("JAXTOK_CHECKPOINT") is None


def test_train_tiny_notebook_runs(tmp_path, monkeypatch):
  """`train_tiny.ipynb` at a smoke length: trains through the trainer, plots, encodes."""
  path = NOTEBOOKS / "train_tiny.ipynb"
  nb = nbformat.read(path, as_version=4)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("JAXTOK_NOTEBOOK_STEPS", "10")
  monkeypatch.setenv("JAXTOK_NOTEBOOK_WORKDIR", str(tmp_path / "runs"))
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
  assert "10 steps of" in text and "held-out PSNR" in text and "decoded PSNR:" in text
  summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
  assert summary["status"] == "done" and summary["step"] == 10
  # Loss curve, five grid snapshots in one figure, the encode/decode figure.
  assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
  assert len(list((tmp_path / "runs" / "tiny" / "grids").glob("step_*.png"))) == 5
