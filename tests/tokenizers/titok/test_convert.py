"""Official checkpoint files -> jaxtok checkpoint directory -> jaxtok.load, end to end.

The fixture parameters (`param/<key>`, official names, tests/fixtures/titok/README.md) are
written into a real `model.safetensors` and a real torch-format `pytorch_model.bin` (torch.save
when torch is importable, otherwise the torch-free writer in torch_format.py), converted with
the CLI, loaded with `jaxtok.load`, and checked against the official outputs in the fixture.
"""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jaxtok
from jaxtok.io import checkpoint, safetensors
from jaxtok.tokenizers import convert
from jaxtok.tokenizers.convert.__main__ import main as convert_main
from jaxtok.tokenizers.titok import convert as titok_mapping
from tests.fixture_files import FIXTURES as FIXTURE_ROOT
from tests.fixture_files import TESTS, fixture_params

FIXTURES = FIXTURE_ROOT / "titok"
_spec = importlib.util.spec_from_file_location(
    "jaxtok_tests_torch_format", TESTS / "io" / "torch_format.py")
torch_format = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(torch_format)

# Fixture README §5 tolerance for decoded images.
RECON_ATOL = 3e-4


def _load_fixture(path):
  with np.load(path, allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


def _params(fx):
  return {k[len("param/"):]: v for k, v in fx.items() if k.startswith("param/")}


def _write_bin(params, path):
  try:
    import torch  # noqa: PLC0415  (optional, heavy: lazy by design)
  except ImportError:
    return torch_format.save_state_dict(params, path)
  torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}, path)
  return path


def _size_table(fx):
  return json.loads(str(fx["meta_json"]))["size_table"]


def _heads_arg(fx):
  """`--heads` for the fixture's sizes (width and depth come from the checkpoint)."""
  return ",".join(f"{name}={v['heads']}" for name, v in _size_table(fx).items())


def _nhwc(a):
  return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("path", fixture_params(("titok", "one_d_piece"), FIXTURES))
def test_convert_safetensors_and_bin_then_load(path, tmp_path):
  fx = _load_fixture(path)
  params = _params(fx)
  cfg = json.loads(str(fx["config_json"]))
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  safetensors.write_safetensors(tmp_path / "model.safetensors", params)
  _write_bin(params, tmp_path / "pytorch_model.bin")

  assert convert_main(["titok", "--checkpoint", str(tmp_path / "model.safetensors"),
                       "--config", str(tmp_path / "config.json"),
                       "--heads", _heads_arg(fx), "--out", str(tmp_path / "from_st")]) == 0
  # --config omitted: the config.json beside the checkpoint (Hugging Face layout).
  assert convert_main(["titok", "--checkpoint", str(tmp_path / "pytorch_model.bin"),
                       "--heads", _heads_arg(fx), "--out", str(tmp_path / "from_bin")]) == 0
  # Both file formats give the same jaxtok checkpoint.
  a = safetensors.read_safetensors(tmp_path / "from_st" / "weights.safetensors")
  b = safetensors.read_safetensors(tmp_path / "from_bin" / "weights.safetensors")
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  meta = json.loads((tmp_path / "from_bin" / "config.json").read_text())
  assert meta["source"]["checkpoint"] == "pytorch_model.bin"
  assert meta["source"]["official_config"] == cfg

  tok = jaxtok.load(tmp_path / "from_bin")
  kind = str(fx["fixture_kind"])
  assert tok.family == ("one_d_piece" if kind == "one_d_piece" else "titok")
  assert tok.supports_prefix == (kind == "one_d_piece")
  x = _nhwc(fx["x"])
  tokens = tok.encode(x)
  np.testing.assert_array_equal(tokens, fx["tokens"][:, 0, :])  # The official model's tokens.
  # The loaded model is exactly the jaxtok model built straight from the official arrays.
  direct, _ = checkpoint.state_to_arrays(
      titok_mapping.from_official(cfg, params, size_table=_size_table(fx)))
  loaded, _ = checkpoint.state_to_arrays(tok.model)
  assert direct.keys() == loaded.keys()
  for k in direct:
    np.testing.assert_array_equal(direct[k], loaded[k], err_msg=k)
  recon = tok.decode(tokens)
  np.testing.assert_allclose(recon, np.clip(_nhwc(fx["recon_from_ids"]), 0, 1), atol=RECON_ATOL)
  if kind == "one_d_piece":
    # Prefix decoding through the public API; every length is covered by the model's tests.
    # (One length here, as each is one compile; the shortest is the edge case.)
    for n in [int(fx["prefix_lengths"][0])]:
      np.testing.assert_allclose(tok.decode(tokens[:, :n]),
                                 np.clip(_nhwc(fx[f"recon_len{n}"]), 0, 1), atol=RECON_ATOL)


def _has_pixel_decoder(param):
  with np.load(param.values[0], allow_pickle=False) as f:
    return any(k.startswith("param/pixel_decoder.") for k in f.files)


@pytest.mark.parametrize("path", [p for p in fixture_params(("titok", "one_d_piece"), FIXTURES)
                                  if _has_pixel_decoder(p)])
def test_legacy_pixel_decoder_from_maskgit_vqgan(path, tmp_path):
  """A legacy checkpoint without its pixel decoder + the MaskGIT VQGAN .bin = the full model."""
  fx = _load_fixture(path)
  cfg = json.loads(str(fx["config_json"]))
  params = _params(fx)
  titok_only = {k: v for k, v in params.items() if not k.startswith("pixel_")}
  maskgit = {"decoder." + k[len("pixel_decoder."):]: v for k, v in params.items()
             if k.startswith("pixel_decoder.")}
  maskgit["quantize.embedding.weight"] = params["pixel_quantize.embedding.weight"]
  # The VQGAN's encoder is not part of TiTok; it must be ignored.
  maskgit["encoder.conv_in.weight"] = np.zeros((4, 3, 3, 3), np.float32)
  safetensors.write_safetensors(tmp_path / "titok.safetensors", titok_only)
  torch_format.save_state_dict(maskgit, tmp_path / "maskgit.bin")

  with pytest.raises(ValueError, match=r"--maskgit-vqgan"):
    convert.convert_titok(tmp_path / "titok.safetensors", cfg, tmp_path / "no_maskgit",
                          size_table=_size_table(fx))
  assert convert_main(["titok", "--checkpoint", str(tmp_path / "titok.safetensors"),
                       "--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "x")]) == 2
  (tmp_path / "cfg.json").write_text(json.dumps(cfg))
  out = convert.convert_titok(tmp_path / "titok.safetensors", tmp_path / "cfg.json",
                              tmp_path / "ckpt", maskgit_vqgan=tmp_path / "maskgit.bin",
                              size_table=_size_table(fx))
  meta = json.loads((out / "config.json").read_text())
  assert meta["source"]["keys_from_maskgit_vqgan"] == len(maskgit) - 1
  # Same weights as converting the complete checkpoint.
  safetensors.write_safetensors(tmp_path / "full.safetensors", params)
  full = convert.convert_titok(tmp_path / "full.safetensors", cfg, tmp_path / "full",
                               size_table=_size_table(fx))
  a = safetensors.read_safetensors(out / "weights.safetensors")
  b = safetensors.read_safetensors(full / "weights.safetensors")
  for k in b:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_merge_maskgit_precedence():
  params = {"pixel_decoder.conv_in.bias": np.ones(2), "latent_tokens": np.zeros(1)}
  maskgit = {"decoder.conv_in.bias": np.full(2, 5.0), "decoder.conv_out.bias": np.zeros(3),
             "quantize.embedding.weight": np.zeros((4, 2)), "encoder.x": np.zeros(1)}
  merged, taken = titok_mapping.merge_maskgit_params(params, maskgit)
  np.testing.assert_array_equal(merged["pixel_decoder.conv_in.bias"], np.ones(2))
  assert sorted(taken) == ["pixel_decoder.conv_out.bias", "pixel_quantize.embedding.weight"]
  merged, _ = titok_mapping.merge_maskgit_params(params, maskgit, override=True)
  np.testing.assert_array_equal(merged["pixel_decoder.conv_in.bias"], np.full(2, 5.0))
  with pytest.raises(ValueError, match=r"maskgit_vqgan: expected a MaskGIT VQGAN state dict"):
    titok_mapping.merge_maskgit_params(params, {"foo": np.zeros(1)})


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
def test_cli_subprocess(tmp_path):
  """`python -m jaxtok.tokenizers.convert` in a fresh process, torch-free reader, .bin input."""
  path = FIXTURES / "titok_single_tiny.npz"
  fx = _load_fixture(path)
  torch_format.save_state_dict(_params(fx), tmp_path / "pytorch_model.bin")
  (tmp_path / "config.json").write_text(str(fx["config_json"]))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "jaxtok.tokenizers.convert", "titok", "--checkpoint",
       str(tmp_path / "pytorch_model.bin"), "--heads", _heads_arg(fx), "--out",
       str(tmp_path / "out")],
      capture_output=True, text=True, env=env, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary["family"] == "titok" and summary["num_tokens"] == 16
  assert summary["files"] == ["config.json", "weights.safetensors"]
  tok = jaxtok.load(tmp_path / "out")
  np.testing.assert_array_equal(tok.encode(_nhwc(fx["x"])), fx["tokens"][:, 0, :])
  # Bad input: a clear error and exit status 2, no traceback.
  proc = subprocess.run(
      [sys.executable, "-m", "jaxtok.tokenizers.convert", "titok", "--checkpoint",
       str(tmp_path / "missing.bin"), "--config", str(tmp_path / "config.json"), "--out",
       str(tmp_path / "out2")], capture_output=True, text=True, env=env, timeout=600,
      check=False)
  assert proc.returncode == 2 and "error: path: expected an existing checkpoint file" in proc.stderr
