"""Executes the notebooks headless (nbclient) and fails if any cell errors (docs/design.md §1)."""
import json
import pathlib
import re

import numpy as np
import pytest

from tests.fixture_files import FIXTURES, fixture_params
from tests.hub_cache import json_file, put_snapshot, safetensors_file, titok_release
from tests.tokenizers.flextok.release import read_fixture, release_with_vae

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


def _quickstart_hub_cache(hf: pathlib.Path) -> dict:
  """The quickstart's two `hf:` names as offline HF cache snapshots built from the shared
  fixtures, in their releases' formats: TiTok's Mixin fixture (config.json +
  model.safetensors) under the TiTok-L-32 repo, the FlexTok fixture with a random diffusers VAE
  front end (config in config.json and the safetensors metadata, as the official saver writes)
  under flextok_d18_d28_dfn. Returns the TiTok converter options (the tiny ViT's head counts,
  which no official size table holds)."""
  titok = next(p.values[0] for p in fixture_params("titok", FIXTURES / "titok")
               if not json.loads(str(np.load(p.values[0])["config_json"]))["model"]["vq_model"]
               .get("is_legacy", True))
  with np.load(titok, allow_pickle=False) as f:
    name, files, options = titok_release({k: f[k] for k in f.files},
                                         mixin_repo="yucornetto/tokenizer_titok_l32_imagenet")
  assert name == "hf:yucornetto/tokenizer_titok_l32_imagenet"
  put_snapshot(hf, name[3:], files)
  _, cfg, params = read_fixture(fixture_params("flextok", FIXTURES / "flextok")[0].values[0])
  rel, full, _ = release_with_vae(cfg, params, scaling_factor=0.7)
  put_snapshot(hf, "EPFL-VILAB/flextok_d18_d28_dfn", {
      "config.json": json_file(rel), "model.safetensors": safetensors_file(
          full, metadata={k: str(v) for k, v in rel.items()})})
  return options


@pytest.mark.slow  # ~1 min: converts two releases and runs FlexTok's flow decoder.
def test_quickstart_notebook_runs_the_hf_names_offline(tmp_path, monkeypatch):
  hf = tmp_path / "hf"
  options = _quickstart_hub_cache(hf)
  outputs, text = _execute("quickstart.ipynb", tmp_path, monkeypatch, HF_HUB_CACHE=str(hf),
                           HF_HUB_OFFLINE="1", JAXTOK_CACHE=str(tmp_path / "jaxtok"),
                           JAXTOK_LOAD_OPTIONS=json.dumps(options),
                           JAXTOK_NOTEBOOK_SAMPLE_STEPS="2")
  assert "loaded hf:yucornetto/tokenizer_titok_l32_imagenet in" in text
  assert "loaded hf:EPFL-VILAB/flextok_d18_d28_dfn in" in text
  assert "reloaded: same tokens" in text and text.count("ValueError: ") == 3
  line = next(x for x in text.splitlines() if x.startswith("FlexTok PSNR (dB) by k:"))
  n = json.loads(str(np.load(fixture_params("flextok", FIXTURES / "flextok")[0].values[0])
                     ["config/json"]))["n_registers"]
  assert [int(k) for k in re.findall(r"(\d+): ", line)] == [2 ** i for i in range(12)
                                                             if 2 ** i <= n], line
  # Reconstructions, the prefix row: figures rendered as images.
  assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
  # Both releases went through the converter into the jaxtok cache.
  assert len(list((tmp_path / "jaxtok").rglob("weights.safetensors"))) == 2


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
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
