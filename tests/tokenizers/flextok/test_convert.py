"""FlexTok releases (model.safetensors + Hydra config) -> jaxtok checkpoint -> jaxtok.load.

The fixture's official parameters are written into a real `model.safetensors`, with the
release config either as `config.json` beside it or only in the safetensors `__metadata__`
(one Python-literal string per key, as the official saver writes it), converted with the CLI,
loaded, and checked against the fixture's official outputs.
"""
import json

import jax.numpy as jnp
import numpy as np
import pytest

import jaxtok
from jaxtok.io import safetensors
from jaxtok.tokenizers.convert.__main__ import main as convert_main
from jaxtok.tokenizers.flextok.convert import convert_flextok
from jaxtok.tokenizers.flextok.official import read_release_config
from tests.fixture_files import FIXTURES, fixture_params
from tests.tokenizers.flextok.release import check_against_fixture, read_fixture, release_config

ATOL_DEC = 1e-4  # fixture README §6


def _nhwc(a):
  return jnp.asarray(np.asarray(a).transpose(0, 2, 3, 1))


@pytest.mark.parametrize("path", fixture_params("flextok", FIXTURES))
def test_cli_converts_safetensors_with_config_json(path, tmp_path, capsys):
  data, cfg, params = read_fixture(path)
  release = tmp_path / "release"
  release.mkdir()
  safetensors.write_safetensors(release / "model.safetensors", params)
  (release / "config.json").write_text(json.dumps(release_config(cfg)))
  out = tmp_path / "converted"
  assert convert_main(["flextok", "--checkpoint", str(release / "model.safetensors"),
                       "--out", str(out)]) == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary["family"] == "flextok" and summary["num_tokens"] == cfg["n_registers"]
  meta = json.loads((out / "config.json").read_text())
  assert meta["source"]["config_from"] == "config.json"
  assert meta["config"]["max_timestep"] == cfg["max_timestep"]
  assert meta["config"]["nested_dropout"] == "pow2"
  # No vae.vae.* weights: the StableDiffusionVAE release stays a model over VAE latents.
  assert meta["source"]["vae"]["converted"] is False
  assert meta["source"]["vae"]["front_end"] == meta["config"]["front_end"] == "latent"
  check_against_fixture(jaxtok.load(out), data, ATOL_DEC)


@pytest.mark.parametrize("path", fixture_params("flextok", FIXTURES))
def test_metadata_only_release_converts(path, tmp_path):
  data, cfg, params = read_fixture(path)
  ckpt = tmp_path / "model.safetensors"
  rel = release_config(cfg)
  # The official saver stores str(value) per key: Python literals (single quotes, True/None).
  safetensors.write_safetensors(ckpt, params, metadata={k: str(v) for k, v in rel.items()})
  assert read_release_config(ckpt)[1] == "safetensors __metadata__"
  out = convert_flextok(ckpt, None, tmp_path / "out")
  check_against_fixture(jaxtok.load(out), data, ATOL_DEC)


def test_unknown_target_and_bad_configs_are_refused(tmp_path):
  path = fixture_params("flextok", FIXTURES)[0].values[0]
  _, cfg, params = read_fixture(path)
  ckpt = tmp_path / "model.safetensors"
  safetensors.write_safetensors(ckpt, params)
  rel = release_config(cfg)
  rel["pipeline"]["momentum_buffer"] = {"_target_": "os.system", "command": "echo pwned"}
  with pytest.raises(ValueError, match=r"unknown _target_ 'os\.system' at "
                                       r"pipeline\.momentum_buffer"):
    convert_flextok(ckpt, rel, tmp_path / "out")
  assert not (tmp_path / "out").exists()
  rel = release_config(cfg)
  del rel["flow_matching_noise_module"]
  with pytest.raises(ValueError, match="flow_matching_noise_module"):
    convert_flextok(ckpt, rel, tmp_path / "out")
  rel = release_config(cfg)
  rel["regularizer"]["levels"] = [8, 8, 8, 5, 5]
  with pytest.raises(ValueError, match="FSQ levels"):
    convert_flextok(ckpt, rel, tmp_path / "out")
  # A literal that is code, not data, in the metadata form.
  bad = tmp_path / "bad.safetensors"
  meta = {k: str(v) for k, v in release_config(cfg).items()}
  meta["vae"] = "__import__('os').system('echo pwned')"
  safetensors.write_safetensors(bad, params, metadata=meta)
  with pytest.raises(ValueError, match=r"config\['vae'\]: expected a JSON or Python-literal"):
    convert_flextok(bad, None, tmp_path / "out")
  params = dict(params)
  del params["decoder.module_dict.dec_to_patches.proj.bias"]
  safetensors.write_safetensors(ckpt, params)
  with pytest.raises(ValueError, match="dec_to_patches.proj.bias"):
    convert_flextok(ckpt, release_config(cfg), tmp_path / "out")


def test_extra_keys_and_deep_configs_are_refused(tmp_path):
  """Issue 24 item 8: extra top-level keys skipped the `_target_` check and reached the
  provenance; 200,000-deep metadata escaped as a RecursionError."""
  path = fixture_params("flextok", FIXTURES)[0].values[0]
  _, cfg, params = read_fixture(path)
  rel = {**release_config(cfg), "extra": {"_target_": "os.system", "command": "echo pwned"}}
  with pytest.raises(ValueError, match=r"unknown _target_ 'os\.system' at extra"):
    read_release_config(tmp_path / "model.safetensors", rel)
  data, _ = read_release_config(tmp_path / "model.safetensors",
                                {**release_config(cfg), "note": {"x": 1}})
  assert "note" not in data
  deep = "[" * 200_000 + "]" * 200_000
  for config in ({**release_config(cfg), "vae": deep}, '{"vae": ' + deep + "}"):
    with pytest.raises(ValueError, match=r"nested deeper than"):
      read_release_config(tmp_path / "model.safetensors", config)
  bad = tmp_path / "deep.safetensors"
  meta = {k: json.dumps(v) for k, v in release_config(cfg).items()}
  meta["encoder"] = deep
  safetensors.write_safetensors(bad, params, metadata=meta)
  with pytest.raises(ValueError, match=r"nested deeper than"):
    read_release_config(bad)
