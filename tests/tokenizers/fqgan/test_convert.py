"""Released-format FQGAN checkpoint -> CLI -> jaxtok checkpoint dir -> jaxtok.load.

The fixture's official parameters (`param/<key>`, tests/fixtures/fqgan/README.md) are written as
a real torch zip file holding `{"model": state_dict, "steps": ...}` (the layout of the released
`.pt` files) with the torch-free writer of tests/io/torch_format.py, converted with
`python -m jaxtok.tokenizers.convert fqgan`, loaded, and checked against the fixture's ids and
decoded images.
"""
import collections
import importlib.util
import json

import numpy as np
import pytest

import jaxtok
from jaxtok.tokenizers.convert.__main__ import main as convert_main
from tests.fixture_files import FIXTURES as FIXTURE_ROOT
from tests.fixture_files import TESTS, fixture_params

ROOT = FIXTURE_ROOT / "fqgan"
_spec = importlib.util.spec_from_file_location(
    "jaxtok_tests_torch_format_fqgan",
    TESTS / "io" / "torch_format.py")
torch_format = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(torch_format)


def _write_released_pt(f, path):
  sd = collections.OrderedDict(
      (k[len("param/"):], torch_format.tensor_from_array(np.ascontiguousarray(f[k]), i))
      for i, k in enumerate(k for k in f.files if k.startswith("param/")))
  torch_format.save({"model": sd, "steps": 7}, path)
  return path


@pytest.mark.parametrize("path", fixture_params("fqgan", ROOT))
def test_convert_cli_load_reproduces_fixture(path, tmp_path, capsys):
  f = np.load(path, allow_pickle=False)
  cfg = json.loads(str(f["config_json"]))
  pt = _write_released_pt(f, tmp_path / "fqgan.pt")
  cfg_file = tmp_path / "official.json"
  cfg_file.write_text(json.dumps(cfg))
  out = tmp_path / "converted"
  rc = convert_main(["fqgan", "--checkpoint", str(pt), "--config", str(cfg_file),
                     "--out", str(out)])
  assert rc == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary["family"] == "fqgan" and summary["branches"] == cfg["concat_order"]

  tok = jaxtok.load(out)
  x = np.transpose(f["x"], (0, 2, 3, 1)) * 0.5 + 0.5  # official [-1, 1] -> [0, 1]
  ids = tok.encode(x)
  branches = cfg["concat_order"]
  want = np.stack([f[f"indices_{b}"].reshape(x.shape[0], -1) for b in branches], axis=-1)
  np.testing.assert_array_equal(ids, want)
  recon = tok.decode(ids)
  want_img = np.clip(np.transpose(f["recon_from_indices"], (0, 2, 3, 1)) * 0.5 + 0.5, 0, 1)
  np.testing.assert_allclose(recon, want_img, atol=1e-4 * 0.5 * np.abs(
      f["recon_from_indices"]).max() + 1e-5)


@pytest.mark.parametrize("path", fixture_params("fqgan", ROOT))
def test_convert_wrong_variant_is_a_clear_error(path, tmp_path, capsys):
  f = np.load(path, allow_pickle=False)
  pt = _write_released_pt(f, tmp_path / "fqgan.pt")
  rc = convert_main(["fqgan", "--checkpoint", str(pt), "--variant", "dual-16",
                     "--out", str(tmp_path / "o")])
  assert rc == 2
  err = capsys.readouterr().err
  assert err.startswith("error: params") and ("absent" in err or "expected shape" in err)
  rc = convert_main(["fqgan", "--checkpoint", str(pt), "--variant", "nope",
                     "--out", str(tmp_path / "o")])
  assert rc == 2 and "variant" in capsys.readouterr().err
  assert not (tmp_path / "o").exists()
