"""The strict `config.json` reader (`jaxtok.io.checkpoint.read_meta` + `config_from_dict`):
types, unknown and missing keys, `format_version` (issue 24 item 6)."""
import json

import pytest
from flax import nnx

import jaxtok
from jaxtok.io import checkpoint, safetensors
from jaxtok.tokenizers.flextok.config import FlexTokConfig
from jaxtok.tokenizers.titok import TiTokConfig
from jaxtok.tokenizers.titok.one_d_piece import OneDPiece

_SMALL = dict(image_size=16, enc_patch_size=8, dec_patch_size=8, enc_width=32, enc_depth=1,
              enc_heads=2, dec_width=32, dec_depth=1, dec_heads=2, num_latent_tokens=4,
              token_size=4, codebook_size=32, head="pixel", legacy_projection=False,
              use_l2_norm=False, tail_token_drop=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  tok = jaxtok.Tokenizer(OneDPiece(TiTokConfig(**_SMALL), rngs=nnx.Rngs(0)))
  return jaxtok.save(tok, tmp_path_factory.mktemp("cfg") / "odp")


def _edited(saved, tmp_path, edit, *, config_digest=False):
  """A copy of `saved` with `edit` applied to its config.json; without `config_digest`, the
  weights lack the config's digest (as files of older jaxtoks), so the strict reader itself
  must refuse the edit."""
  out = tmp_path / "ck"
  out.mkdir()
  weights = saved / "weights.safetensors"
  meta = safetensors.read_safetensors_metadata(weights)
  if not config_digest:
    del meta[checkpoint.CONFIG_DIGEST_KEY]
  safetensors.write_safetensors(out / "weights.safetensors",
                                safetensors.read_safetensors(weights), meta)
  meta = json.loads((saved / "config.json").read_text())
  edit(meta)
  (out / "config.json").write_text(json.dumps(meta))
  return out


def _set(key, value):
  def edit(meta):
    meta["config"][key] = value
  return edit


@pytest.mark.parametrize("edit, match", [
    (_set("tail_token_drop", "false"), r"config\.tail_token_drop: expected a bool"),
    (_set("enc_width", "64"), r"config\.enc_width: expected an int, got '64'"),
    (_set("enc_width", 32.0), r"config\.enc_width: expected an int, got 32\.0"),
    (_set("enc_depth", True), r"config\.enc_depth: expected an int, got True"),
    (_set("mlp_ratio", "4"), r"config\.mlp_ratio: expected a finite number"),
    (lambda m: m["config"].pop("codebook_size"), r"fields \['codebook_size'\] are missing"),
    (lambda m: m.update(format_version=999), r"format_version 999"),
    (lambda m: m.update(format="other"), r"format 'other'"),
    (lambda m: m.update(family=["titok"]), r"family \['titok'\]; expected a family name"),
    (lambda m: m.update(extra=1), r"unknown top-level keys \['extra'\]"),
    (lambda m: m.update(config=[1]), r"config of type list"),
])
def test_bad_config_json_is_refused(saved, tmp_path, edit, match):
  path = _edited(saved, tmp_path, edit)
  with pytest.raises(ValueError, match=match):
    jaxtok.load(path)


@pytest.mark.parametrize("config_digest", [False, True])
def test_valid_config_json_still_loads(saved, tmp_path, config_digest):
  def respace(meta):  # Key order and spacing are not the config.
    meta["config"] = dict(reversed(list(meta["config"].items())))
  path = _edited(saved, tmp_path, respace, config_digest=config_digest)
  assert jaxtok.load(path).model.config == TiTokConfig(**_SMALL)


def test_config_digest_refuses_an_edited_value(saved, tmp_path):
  """A well-typed but different value (enc_heads 2 -> 4 fits every check of the reader)."""
  path = _edited(saved, tmp_path, _set("enc_heads", 4), config_digest=True)
  with pytest.raises(ValueError, match=r"config\.json is not the config weights\.safetensors "
                                       r"was saved with"):
    jaxtok.load(path)


def test_flextok_levels_and_missing_fields():
  d = FlexTokConfig().to_dict()
  with pytest.raises(ValueError, match=r"config\.levels\[5\]: expected an int, got 5\.5"):
    checkpoint.config_from_dict(FlexTokConfig, {**d, "levels": [8, 8, 8, 5, 5, 5.5]})
  partial = {k: v for k, v in d.items() if k != "guidance_scale"}
  with pytest.raises(ValueError, match=r"\['guidance_scale'\] are missing"):
    checkpoint.config_from_dict(FlexTokConfig, partial)
  assert checkpoint.config_from_dict(FlexTokConfig, d) == FlexTokConfig()
  assert FlexTokConfig.from_dict(partial) == FlexTokConfig()  # Partial dicts: code only.
