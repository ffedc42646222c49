"""Official configs with ViT sizes the library has never seen: size_table, or shapes + heads."""
import json

import numpy as np
import pytest

import jaxtok
from jaxtok.io import safetensors
from jaxtok.tokenizers import titok
from jaxtok.tokenizers.convert.__main__ import main as convert_main
from jaxtok.tokenizers.titok import convert as titok_mapping
from jaxtok.tokenizers.titok.official import official_titok_config, parse_heads
from tests.fixture_files import FIXTURES as FIXTURE_ROOT
from tests.fixture_files import fixture_params

FIXTURES = FIXTURE_ROOT / "titok"


def _renamed(path):
  """The fixture's official config with its size names replaced by never-seen ones."""
  with np.load(path, allow_pickle=False) as f:
    fx = {k: f[k] for k in f.files}
  cfg = json.loads(str(fx["config_json"]))
  table = json.loads(str(fx["meta_json"]))["size_table"]
  vq = cfg["model"]["vq_model"]
  new_table, heads = {}, {}
  for key in ("vit_enc_model_size", "vit_dec_model_size"):
    old = vq[key]
    new = f"never_seen_{old}"
    assert new not in titok.MODEL_SIZES
    vq[key] = new
    new_table[new] = table[old]
    heads[new] = table[old]["heads"]
  params = {k[len("param/"):]: v for k, v in fx.items() if k.startswith("param/")}
  return fx, cfg, new_table, heads, params


@pytest.mark.parametrize("path", fixture_params(("titok", "one_d_piece"), FIXTURES))
def test_unknown_size_names(path, tmp_path):
  fx, cfg, table, heads, params = _renamed(path)
  from_table = official_titok_config(cfg, size_table=table)
  from_shapes = official_titok_config(cfg, params=params, heads=heads)
  assert from_table == from_shapes
  enc = table[cfg["model"]["vq_model"]["vit_enc_model_size"]]
  assert (from_table.enc_width, from_table.enc_depth, from_table.enc_heads) == (
      enc["width"], enc["depth"], enc["heads"])
  with pytest.raises(ValueError, match=r"vit_enc_model_size: .*never_seen_.*pass --heads"):
    official_titok_config(cfg, params=params)
  with pytest.raises(ValueError, match=r"vit_enc_model_size: expected one of .*size_table"):
    official_titok_config(cfg)
  # The model built from shapes + heads gives the official tokens.
  model = titok_mapping.from_official(cfg, params, heads=heads)
  x = np.ascontiguousarray(fx["x"].transpose(0, 2, 3, 1))
  np.testing.assert_array_equal(np.asarray(model.encode(x)), fx["tokens"][:, 0, :])
  # And through the CLI: without --heads a clear error (exit 2), with it a checkpoint.
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  safetensors.write_safetensors(tmp_path / "model.safetensors", params)
  argv = ["titok", "--checkpoint", str(tmp_path / "model.safetensors"), "--out",
          str(tmp_path / "out")]
  assert convert_main(argv) == 2
  heads_arg = ",".join(f"{k}={v}" for k, v in heads.items())
  assert convert_main(argv + ["--heads", heads_arg]) == 0
  assert jaxtok.load(tmp_path / "out").config == from_table


def test_parse_heads():
  assert parse_heads(None) is None
  assert parse_heads("6") == 6
  assert parse_heads("a=4,b=6") == {"a": 4, "b": 6}
  with pytest.raises(ValueError, match="heads"):
    parse_heads("a=x")
  cfg = {"model": {"vq_model": {"vit_enc_model_size": "odd", "vit_dec_model_size": "odd",
                                "num_latent_tokens": 4, "token_size": 4, "is_legacy": False}}}
  params = {"encoder.class_embedding": np.zeros((1, 48)),
            "encoder.transformer.0.ln_1.weight": np.zeros(48),
            "decoder.class_embedding": np.zeros((1, 48)),
            "decoder.transformer.0.ln_1.weight": np.zeros(48)}
  with pytest.raises(ValueError, match=r"heads: expected a divisor of the 'odd' width 48"):
    official_titok_config(cfg, params=params, heads=5)
  c = official_titok_config(cfg, params=params, heads=3)
  assert (c.enc_width, c.enc_depth, c.enc_heads, c.dec_heads) == (48, 1, 3, 3)
