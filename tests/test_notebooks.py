"""Executes the notebooks headless (nbclient) and fails if any cell errors (docs/design.md §1)."""
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


def _execute(name: str, tmp_path, monkeypatch, **env: str) -> tuple[list, str]:
  """Runs notebooks/`name` headless on CPU without a trained checkpoint, `env` set: (the code
  cells' outputs, their stream text). Figures use the kernel's inline backend, so they come
  back as image/png outputs."""
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # The kernel inherits the environment.
  monkeypatch.delenv("JAXTOK_CHECKPOINT", raising=False)
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # Raises CellExecutionError on the first failing cell.
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
  return outputs, text


def test_notebook_runs(tmp_path, monkeypatch):
  outputs, text = _execute("quickstart.ipynb", tmp_path, monkeypatch)
  assert "reloaded: same tokens" in text and "ValueError: images:" in text
  # Both figures (reconstructions, prefix decodes) rendered as images.
  assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
  assert os.environ.get("JAXTOK_CHECKPOINT") is None


def test_train_tiny_notebook_runs(tmp_path, monkeypatch):
  """`train_tiny.ipynb` at a smoke length: trains through the trainer, plots, encodes."""
  outputs, text = _execute("train_tiny.ipynb", tmp_path, monkeypatch,
                           JAXTOK_NOTEBOOK_STEPS="10",
                           JAXTOK_NOTEBOOK_WORKDIR=str(tmp_path / "runs"))
  assert "10 steps of" in text and "held-out PSNR" in text and "decoded PSNR:" in text
  summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
  assert summary["status"] == "done" and summary["step"] == 10
  # Loss curve, five grid snapshots in one figure, the encode/decode figure.
  assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
  assert len(list((tmp_path / "runs" / "tiny" / "grids").glob("step_*.png"))) == 5


@pytest.mark.slow  # ~35 s; the slow set (CI) runs it.
def test_flextok_notebook_runs(tmp_path, monkeypatch):
  """`flextok.ipynb` at a smoke length: trains tiny FlexTok, decodes every power-of-two prefix
  without and with guidance as two grids, refuses bad input."""
  outputs, text = _execute("flextok.ipynb", tmp_path, monkeypatch, JAXTOK_NOTEBOOK_STEPS="4",
                           JAXTOK_NOTEBOOK_SAMPLE_STEPS="2",
                           JAXTOK_NOTEBOOK_WORKDIR=str(tmp_path / "runs"))
  assert "4 steps of 32 images" in text and "(4, 32, 32, 3) -> (4, 64) int32" in text
  summary = json.loads((tmp_path / "runs" / "flextok_tiny" / "summary.json").read_text())
  assert summary["status"] == "done" and summary["step"] == 4
  for title in ("no guidance", "APG, scale 7.5"):
    line = next(x for x in text.splitlines() if x.startswith(f"{title} PSNR (dB) by k:"))
    assert all(f"{k}:" in line for k in (1, 2, 4, 8, 16, 32, 64)), line
  assert text.count("ValueError:") == 3
  assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # the two grids
