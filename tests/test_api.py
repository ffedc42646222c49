"""Tests of the public API (jaxtok.load / save / Tokenizer), docs/design.md §2."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxtok
from jaxtok import api, codec, metrics, tokenize
from jaxtok.io import checkpoint, safetensors
from jaxtok.nets import perceptual
from jaxtok.tokenizers import interface, resolve_variant
from jaxtok.tokenizers.quantizers.stats import CodebookStats
from jaxtok.tokenizers.titok import TiTok, TiTokConfig
from jaxtok.tokenizers.titok.one_d_piece import OneDPiece

# Small but complete models: both heads, legacy projection, cosine VQ, and One-D-Piece.
_SMALL = dict(image_size=32, enc_patch_size=8, dec_patch_size=8, enc_width=32, enc_depth=1,
              enc_heads=2, dec_width=32, dec_depth=1, dec_heads=2, num_latent_tokens=6,
              token_size=4, codebook_size=32)


def _pixel_config(**kw):
  return TiTokConfig(**{**_SMALL, "head": "pixel", "legacy_projection": False,
                        "use_l2_norm": False, **kw})


def _two_stage_config(**kw):
  # MaskGIT pixel decoder with 2 resolutions: downsample factor 2 -> dec patch 2 on 8x8 images.
  pixel = dict(hidden_channels=32, channel_mult=[1, 1], num_res_blocks=1, z_channels=8)
  return TiTokConfig(**{**_SMALL, "image_size": 8, "enc_patch_size": 4, "dec_patch_size": 2,
                        "head": "two_stage", "pixel_codebook_size": 16, "pixel_decoder": pixel,
                        **kw})


@pytest.fixture(scope="module")
def pixel_tok():
  return jaxtok.Tokenizer(TiTok(_pixel_config(), rngs=nnx.Rngs(0)))


@pytest.fixture(scope="module")
def prefix_tok():
  # One-D-Piece style (tail-token-drop on); the pixel head keeps compiles cheap. The two-stage
  # head goes through this API in tests/tokenizers/titok/test_convert.py (legacy and
  # One-D-Piece fixtures).
  return jaxtok.Tokenizer(OneDPiece(_pixel_config(image_size=16, tail_token_drop=True),
                                    rngs=nnx.Rngs(1)))


def _images(n, size, seed=0):
  return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


def test_encode_decode_shapes_dtypes_and_range(pixel_tok):
  tok = pixel_tok
  assert (tok.num_tokens, tok.codebook_size, tok.image_size) == (6, 32, 32)
  assert not tok.supports_prefix and tok.family == "titok"
  x = _images(3, 32)
  ids = tok.encode(x)
  assert isinstance(ids, np.ndarray) and ids.dtype == np.int32 and ids.shape == (3, 6)
  assert ids.min() >= 0 and ids.max() < 32
  # Same numbers as the model itself.
  np.testing.assert_array_equal(ids, np.asarray(tok.model.encode(jnp.asarray(x))))
  recon = tok.decode(ids)
  assert isinstance(recon, np.ndarray) and recon.dtype == np.float32
  assert recon.shape == (3, 32, 32, 3)
  assert recon.min() >= 0.0 and recon.max() <= 1.0
  ref = np.clip(np.asarray(tok.model.decode_tokens(jnp.asarray(ids))), 0, 1)
  np.testing.assert_allclose(recon, ref, atol=1e-5)


def test_uint8_equals_float_and_jax_input(pixel_tok):
  u8 = (np.random.default_rng(1).random((2, 32, 32, 3)) * 255).round().astype(np.uint8)
  a = pixel_tok.encode(u8)
  b = pixel_tok.encode(u8.astype(np.float32) / 255.0)
  c = pixel_tok.encode(jnp.asarray(u8))
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a, c)


def test_jit_cache_does_not_retrace(pixel_tok):
  tok = jaxtok.Tokenizer(pixel_tok.model)
  x = _images(2, 32, seed=3)
  tok.encode(x)
  tok.encode(x + 0.0)
  assert tok.trace_counts["encode"] == 1
  tok.encode(_images(4, 32))  # New batch size: one new trace.
  tok.encode(_images(4, 32, seed=5))
  assert tok.trace_counts["encode"] == 2
  ids = tok.encode(x)
  tok.decode(ids)
  tok.decode(ids[::-1].copy())
  assert tok.trace_counts["decode"] == 1


def test_prefix_decode_every_length(prefix_tok):
  tok = prefix_tok
  assert tok.supports_prefix
  x = _images(2, 16, seed=7)
  ids = tok.encode(x)
  outs = []
  # Each length is one compile; the model tests cover every length, here the ends and middle.
  for length in (1, tok.num_tokens // 2, tok.num_tokens):
    out = tok.decode(ids[:, :length])
    assert out.shape == (2, 16, 16, 3) and out.dtype == np.float32
    ref = np.clip(np.asarray(tok.model.decode_tokens(jnp.asarray(ids[:, :length]))), 0, 1)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    outs.append(out)
  # Different prefixes decode to different images (the prefix is really used; random-init
  # outputs are small, so only inequality is asserted).
  assert not np.array_equal(outs[0], outs[-1])


@pytest.mark.parametrize("images, match", [
    (np.zeros((2, 32, 32)), r"images: expected shape \[B, 32, 32, 3\].*got \(2, 32, 32\)"),
    (np.zeros((2, 32, 32, 4), np.float32), r"images: expected shape .*got \(2, 32, 32, 4\)"),
    (np.zeros((2, 16, 16, 3), np.float32), r"images: expected 32x32 images.*got 16x16"),
    (np.zeros((0, 32, 32, 3), np.float32), r"images: expected at least one image"),
    (np.zeros((1, 32, 32, 3), np.int64), r"images: expected dtype uint8.*got int64"),
    (np.zeros((1, 32, 32, 3), bool), r"images: expected dtype uint8.*got bool"),
    (np.full((1, 32, 32, 3), 2.0, np.float32), r"images: expected float values in \[0, 1\]"),
    (np.full((1, 32, 32, 3), 255.0, np.float32), r"0\.\.255 data"),
    (np.full((1, 32, 32, 3), -0.01, np.float32), r"got range \[-0\.01"),
    (np.full((1, 32, 32, 3), np.nan, np.float32), r"images: expected finite values"),
    ("not an array", r"images: expected a numpy or jax array, got str"),
])
def test_bad_images_raise(pixel_tok, images, match):
  with pytest.raises(ValueError, match=match):
    pixel_tok.encode(images)


def test_tiny_overshoot_is_accepted_and_clipped(pixel_tok):
  x = _images(1, 32)
  x[0, 0, 0] = [1.0005, -0.0005, 0.5]
  y = np.clip(x, 0, 1)
  np.testing.assert_array_equal(pixel_tok.encode(x), pixel_tok.encode(y))


@pytest.mark.parametrize("tokens, match", [
    (np.zeros((2, 6), np.float32), r"tokens: expected integer token ids.*got dtype float32"),
    (np.zeros((2, 6), bool), r"tokens: expected integer token ids.*got dtype bool"),
    (np.zeros((2, 6, 1), np.int32), r"tokens: expected shape \[B, 6\].*got \(2, 6, 1\)"),
    (np.zeros((6,), np.int32), r"tokens: expected shape \[B, 6\].*got \(6,\)"),
    (np.zeros((0, 6), np.int32), r"tokens: expected at least one row"),
    (np.full((2, 6), 32, np.int32), r"tokens: expected ids in \[0, 31\].*got range \[32, 32\]"),
    (np.full((2, 6), -1, np.int64), r"tokens: expected ids in \[0, 31\].*got range \[-1, -1\]"),
    (np.zeros((2, 3), np.int32), r"exactly 6 tokens.*does not decode prefixes, got 3"),
    (np.zeros((2, 7), np.int32), r"exactly 6 tokens.*got 7"),
])
def test_bad_tokens_raise(pixel_tok, tokens, match):
  with pytest.raises(ValueError, match=match):
    pixel_tok.decode(tokens)


@pytest.mark.parametrize("length", [0, 7])
def test_bad_prefix_length_raises(prefix_tok, length):
  with pytest.raises(ValueError, match=rf"tokens: expected a prefix length L with 1 <= L <= 6, "
                                       rf"got L={length}"):
    prefix_tok.decode(np.zeros((1, length), np.int32))


def test_save_load_roundtrip(tmp_path, prefix_tok):
  out = jaxtok.save(prefix_tok, tmp_path / "ckpt")
  assert sorted(p.name for p in out.iterdir()) == ["config.json", "weights.safetensors"]
  meta = json.loads((out / "config.json").read_text())
  assert meta["family"] == "one_d_piece" and meta["config"]["tail_token_drop"] is True
  tok2 = jaxtok.load(out)
  assert tok2.config == prefix_tok.config and tok2.supports_prefix
  x = _images(2, 16, seed=11)
  ids = prefix_tok.encode(x)
  np.testing.assert_array_equal(tok2.encode(x), ids)
  np.testing.assert_array_equal(tok2.decode(ids[:, :3]), prefix_tok.decode(ids[:, :3]))
  # Every variable round-trips bit-exactly (parameters and non-parameter state alike).
  a, _ = checkpoint.state_to_arrays(prefix_tok.model)
  b, _ = checkpoint.state_to_arrays(tok2.model)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # Also loadable through the config.json path, and from a plain model.
  assert jaxtok.load(out / "config.json").num_tokens == 6
  jaxtok.save(prefix_tok.model, tmp_path / "from_model")
  assert jaxtok.load(tmp_path / "from_model").family == "one_d_piece"


def test_save_is_atomic_and_protects_foreign_dirs(tmp_path, pixel_tok):
  target = tmp_path / "ckpt"
  jaxtok.save(pixel_tok, target)
  jaxtok.save(pixel_tok, target)  # Replacing a jaxtok checkpoint is fine.
  # No temp dirs left behind.
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
  with pytest.raises(ValueError, match="overwrite=True"):
    jaxtok.save(pixel_tok, target, overwrite=False)
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("keep me")
  with pytest.raises(ValueError, match=r"directory: .* is not empty"):
    jaxtok.save(pixel_tok, foreign)
  assert (foreign / "notes.txt").read_text() == "keep me"


def test_save_failure_leaves_old_checkpoint(tmp_path, pixel_tok, monkeypatch):
  target = tmp_path / "ckpt"
  jaxtok.save(pixel_tok, target)
  before = (target / "weights.safetensors").read_bytes()

  def boom(*args, **kwargs):
    raise OSError("disk full")
  monkeypatch.setattr(safetensors, "write_safetensors", boom)
  with pytest.raises(OSError, match="disk full"):
    jaxtok.save(pixel_tok, target)
  assert (target / "weights.safetensors").read_bytes() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_load_rejects_bad_checkpoints(tmp_path, pixel_tok):
  with pytest.raises(ValueError, match="path_or_variant: expected a checkpoint directory"):
    jaxtok.load("no-such-variant")
  with pytest.raises(ValueError, match="is not an existing directory"):
    jaxtok.load(str(tmp_path / "missing" / "dir"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match="has no config.json"):
    jaxtok.load(empty)
  out = jaxtok.save(pixel_tok, tmp_path / "ckpt")
  arrays = safetensors.read_safetensors(out / "weights.safetensors")
  # Wrong shape.
  bad = dict(arrays)
  key = next(k for k in bad if k.endswith("kernel"))
  bad[key] = np.zeros((3, 3), np.float32)
  safetensors.write_safetensors(out / "weights.safetensors", bad)
  with pytest.raises(ValueError, match=rf"variable '{key}' has shape \(3, 3\)"):
    jaxtok.load(out)
  # Missing parameter.
  bad = dict(arrays)
  del bad[key]
  safetensors.write_safetensors(out / "weights.safetensors", bad)
  with pytest.raises(ValueError, match=r"expected every parameter of the model, missing 1"):
    jaxtok.load(out)
  # Extra entry.
  safetensors.write_safetensors(out / "weights.safetensors", {**arrays, "bogus": np.zeros(2)})
  with pytest.raises(ValueError, match=r"1 entries the model does not have: \['bogus'\]"):
    jaxtok.load(out)
  # Unknown config field.
  safetensors.write_safetensors(out / "weights.safetensors", arrays)
  meta = json.loads((out / "config.json").read_text())
  meta["config"]["no_such_field"] = 1
  (out / "config.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="no_such_field"):
    jaxtok.load(out)


def test_config_dict_roundtrip():
  for cfg in (_pixel_config(), _two_stage_config(tail_token_drop=True, codebook_size=64)):
    d = checkpoint.config_to_dict(cfg)
    json.dumps(d)  # JSON-ready.
    assert checkpoint.config_from_dict(TiTokConfig, d) == cfg


def test_key_variables_roundtrip(tmp_path):
  """PRNG key variables held by a model survive save/load as raw key data."""

  class WithRngs(TiTok):
    def __init__(self, config, *, rngs):
      super().__init__(config, rngs=rngs)
      self.rngs = nnx.Rngs(dropout=7)

  model = WithRngs(_pixel_config(), rngs=nnx.Rngs(0))
  arrays, meta = checkpoint.state_to_arrays(model)
  assert any(k.endswith(".__key_data__") for k in arrays)
  assert json.loads(meta["key_impls"]) == {"rngs/dropout/key": "threefry2x32"}
  rebuilt = checkpoint.model_from_arrays(WithRngs, model.config, arrays,
                                         key_impls=json.loads(meta["key_impls"]))
  a = jax.random.key_data(model.rngs.dropout.key[...])
  b = jax.random.key_data(rebuilt.rngs.dropout.key[...])
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # A file without the key data still loads: non-parameter variables come from a real init.
  params_only = {k: v for k, v in arrays.items() if not k.startswith("rngs/")}
  rebuilt = checkpoint.model_from_arrays(WithRngs, model.config, params_only)
  np.testing.assert_array_equal(np.asarray(rebuilt.encoder.ln_pre.scale[...]),
                                np.asarray(model.encoder.ln_pre.scale[...]))


def test_variant_names():
  # Building a variant is exercised end to end by the notebook test ("one_d_piece:tiny").
  variants = jaxtok.available_variants()
  assert {"S-128", "B-64", "L-32", "tiny"} <= set(variants["titok"])
  assert {"S-256", "B-256", "L-256"} <= set(variants["one_d_piece"])
  assert [(f.name, v) for f, v in map(resolve_variant, ["S-128", "one_d_piece:tiny"])] == [
      ("titok", "S-128"), ("one_d_piece", "tiny")]
  with pytest.raises(ValueError, match=r"titok has no variant 'S-999'; expected one of"):
    jaxtok.load("titok:S-999")
  with pytest.raises(ValueError, match=r"family: expected one of"):
    jaxtok.load("nofamily:S-128")
  with pytest.raises(ValueError, match=r"path_or_variant: expected a directory path"):
    jaxtok.load(123)


def test_dead_code_restart_model_exports(tmp_path):
  """A VQ with dead-code restart holds a typed PRNG key; save/load keeps it and the tokens."""
  # cluster_size starts at 1 and decays towards the counts: unused codes restart at step 1.
  model = TiTok(_pixel_config(quantizer_kwargs={"dead_code_threshold": 0.995}),
                rngs=nnx.Rngs(0))
  x = _images(4, 32, seed=13)
  before = np.asarray(model.quantize.codebook[...])
  step = nnx.jit(lambda m, x: m(x, train=True)[1]["losses"]["quantizer"])
  for _ in range(2):  # Restarts move the key and the codebook.
    step(model, jnp.asarray(x))
  assert not np.array_equal(before, np.asarray(model.quantize.codebook[...]))
  key_path = ("quantize", "restart_rngs", "restart", "key")
  flat = dict(nnx.to_flat_state(nnx.state(model)))
  assert checkpoint.is_key_array(flat[key_path].get_value())
  out = jaxtok.save(model, tmp_path / "ckpt")
  tok = jaxtok.load(out)
  np.testing.assert_array_equal(tok.encode(x), jaxtok.Tokenizer(model).encode(x))
  loaded = dict(nnx.to_flat_state(nnx.state(tok.model)))
  np.testing.assert_array_equal(np.asarray(jax.random.key_data(loaded[key_path].get_value())),
                                np.asarray(jax.random.key_data(flat[key_path].get_value())))
  # Host copies keep keys typed (np.asarray alone cannot convert them).
  host = jax.tree_util.tree_map(checkpoint.host_array, nnx.state(model))
  merged = nnx.merge(nnx.graphdef(model), host)
  np.testing.assert_array_equal(jaxtok.Tokenizer(merged).encode(x), tok.encode(x))
  # Raw uint32 key data stored under the plain variable name loads too.
  arrays, meta = checkpoint.state_to_arrays(model)
  name = "/".join(key_path)
  arrays[name] = arrays.pop(name + checkpoint.KEY_DATA_SUFFIX)
  rebuilt = checkpoint.model_from_arrays(TiTok, model.config, arrays,
                                         key_impls=json.loads(meta["key_impls"]))
  np.testing.assert_array_equal(jaxtok.Tokenizer(rebuilt).encode(x), tok.encode(x))


def test_token_spec_drives_the_tokenizer(pixel_tok, prefix_tok):
  spec = pixel_tok.model.token_spec
  assert (spec.num_tokens, spec.image_size, spec.vocab_size, spec.ids_per_token,
          spec.channels, spec.prefix) == (6, 32, 32, 1, None, False)
  assert prefix_tok.model.token_spec.prefix and prefix_tok.family == "one_d_piece"
  vae = jaxtok.Tokenizer(TiTok(_pixel_config(quantizer="gaussian"), rngs=nnx.Rngs(0)))
  assert vae.continuous and vae.codebook_size is None and vae.token_spec.channels == 4
  latents = vae.encode(_images(1, 32))
  assert latents.shape == (1, 6, 4) and latents.dtype == np.float32
  assert vae.decode(latents).shape == (1, 32, 32, 3)
  with pytest.raises(ValueError, match=r"tokens: expected float latents \[B, 6, 4\]"):
    vae.decode(np.zeros((1, 6, 4), np.int32))


def test_old_quantize_mode_key_loads():
  d = _pixel_config().to_dict()
  d.pop("quantizer")
  assert TiTokConfig.from_dict({**d, "quantize_mode": "vae"}).quantizer == "gaussian"
  assert TiTokConfig.from_dict({**d, "quantize_mode": "vq"}).quantizer == "vq"
  with pytest.raises(ValueError, match="quantize_mode"):
    TiTokConfig.from_dict({**d, "quantize_mode": "nope"})


def test_ambiguous_bare_variant_names_raise():
  with pytest.raises(ValueError, match=r"several families.*'titok:tiny', 'one_d_piece:tiny'"):
    jaxtok.load("tiny")


def test_check_lengths_is_the_one_prefix_length_check(prefix_tok, pixel_tok):
  spec = prefix_tok.token_spec  # K = 6, prefixes decode.
  np.testing.assert_array_equal(interface.check_lengths(3, spec, 2), [3, 3])
  out = interface.check_lengths(np.array([1, 6], np.int64), spec, 2)
  assert out.dtype == np.int32 and list(out) == [1, 6]
  for bad in (0, 7, [1, 2, 3], [1.5, 2.0], True, np.array([[1, 2]]), [0, 1]):
    with pytest.raises(ValueError, match=r"lengths: expected an int or \[B=2\] ints in 1\.\.6"):
      interface.check_lengths(bad, spec, 2)
  with pytest.raises(ValueError, match=r"in 1\.\.4 \(the tokens given\)"):
    interface.check_lengths([5, 1], spec, 2, width=4)
  fixed = pixel_tok.token_spec  # K = 6, no prefixes: only the full length.
  np.testing.assert_array_equal(interface.check_lengths(6, fixed, 1), [6])
  with pytest.raises(ValueError, match="this titok tokenizer decodes only all 6 tokens"):
    interface.check_lengths([5], fixed, 1, family="titok")
  # decode and the .jtok writer both check with it.
  ids = np.zeros((1, 6), np.int32)
  with pytest.raises(ValueError, match=r"lengths: expected an int or \[B=1\] ints in 1\.\.6"):
    prefix_tok.decode(ids, lengths=[7])
  with pytest.raises(ValueError, match=r"lengths: expected an int or \[B=1\] ints in 1\.\.6"):
    codec.compress_tokens(prefix_tok, ids, lengths=[7])
  with pytest.raises(ValueError, match="this titok tokenizer decodes only all 6 tokens"):
    pixel_tok.decode(ids, lengths=2)


def test_fingerprint_is_the_one_tokenizer_identity(tmp_path):
  model = TiTok(_pixel_config(), rngs=nnx.Rngs(0))
  nnx.update(model, jax.tree.map(lambda x: jnp.full_like(x, 0.25), nnx.state(model, nnx.Param)))
  tok = jaxtok.Tokenizer(model)
  fp = api.fingerprint(tok)
  assert len(fp) == 64 and int(fp, 16) >= 0
  # Pinned: what `.jtok` files (format versions 1 and 2) and marginal priors store as their
  # tokenizer id (4 bytes); a change here makes them refuse the files written before.
  assert codec.tokenizer_id(tok) == bytes.fromhex(fp)[:4] == bytes.fromhex("e18ad3e1")
  assert tokenize.tokenizer_fingerprint is api.fingerprint  # Token shard manifests.
  assert api.fingerprint(jaxtok.load(jaxtok.save(tok, tmp_path / "ck"))) == fp
  # Code-usage statistics (like RNG state) are not part of it; the weights are.
  stats = nnx.state(model, CodebookStats)
  nnx.update(model, jax.tree.map(lambda x: x + 1, stats))
  assert api.fingerprint(jaxtok.Tokenizer(model)) == fp
  assert api.fingerprint(jaxtok.Tokenizer(TiTok(_pixel_config(), rngs=nnx.Rngs(1)))) != fp


# -- encode_adaptive ------------------------------------------------------------------------


def _psnr_all_lengths(tok, images, ids):
  return np.stack([np.asarray(metrics.psnr(images, tok.decode(ids[:, :n])), np.float64)
                   for n in range(1, tok.num_tokens + 1)], axis=1)  # [B, K]


def test_encode_adaptive_first_crossing(prefix_tok):
  x = _images(6, 16, seed=4)
  ids = prefix_tok.encode(x)
  table = _psnr_all_lengths(prefix_tok, x, ids)
  target = float(np.median(table))  # Some images reach it early, some late or never.
  ada = prefix_tok.encode_adaptive(x, ("psnr", target), batch_size=4)
  np.testing.assert_array_equal(ada.ids, ids)
  k = prefix_tok.num_tokens
  for i, n in enumerate(ada.lengths):
    row = table[i]
    if ada.reached[i]:
      assert row[n - 1] >= target - 1e-4
      assert n == 1 or row[n - 2] < target + 1e-4
      if np.all(np.diff(row) >= 0):  # Monotone: bisection finds the shortest length.
        assert n == 1 + int(np.argmax(row >= target))
    else:
      assert n == k and row[-1] < target + 1e-4
    np.testing.assert_allclose(ada.scores[i], row[n - 1], atol=1e-3)
  assert ada.reached.any() and ada.lengths.min() < k
  # Rounds: 1 (longest) + ceil(log2 K); each image is decoded at most once a round.
  assert ada.num_decodes <= (1 + int(np.ceil(np.log2(k)))) * len(x)
  assert ada.prefixes()[0].shape == (ada.lengths[0],)


def test_encode_adaptive_unreachable_and_trivial_targets(prefix_tok):
  x = _images(3, 16, seed=5)
  none = prefix_tok.encode_adaptive(x, ("psnr", 99.0))
  assert not none.reached.any() and (none.lengths == prefix_tok.num_tokens).all()
  assert none.num_decodes == 1  # Only the longest length is checked.
  low = prefix_tok.encode_adaptive(x, ("ssim", -1.0))
  assert low.reached.all() and (low.lengths == 1).all()
  few = prefix_tok.encode_adaptive(x, ("psnr", 0.0), lengths=[2, 4, 6])
  assert (few.lengths == 2).all()


def test_encode_adaptive_bad_input(prefix_tok, pixel_tok):
  x = _images(2, 16)
  with pytest.raises(ValueError, match="supports_prefix"):
    pixel_tok.encode_adaptive(x)
  for bad in (("mse", 1.0), ("psnr",), ("psnr", float("nan")), "psnr", ("psnr", True)):
    with pytest.raises(ValueError, match="target"):
      prefix_tok.encode_adaptive(x, bad)
  with pytest.raises(ValueError, match="lpips_weights"):
    prefix_tok.encode_adaptive(x, ("lpips", 0.3))
  with pytest.raises(ValueError, match="lengths"):
    prefix_tok.encode_adaptive(x, lengths=[3, 2])
  with pytest.raises(ValueError, match="lengths"):
    prefix_tok.encode_adaptive(x, lengths=[0, 2])
  with pytest.raises(ValueError, match="ids"):
    prefix_tok.encode_adaptive(x, ids=prefix_tok.encode(x)[:1])


@pytest.mark.slow  # Compiles VGG16 (LPIPS) on CPU.
def test_encode_adaptive_lpips_target_is_an_upper_bound(prefix_tok, tmp_path):
  rng = np.random.default_rng(0)
  params = {k: np.abs(rng.standard_normal(s)).astype(np.float32) * 0.05
            for k, s in perceptual.lpips_weight_shapes().items()}
  path = tmp_path / "lpips.npz"
  perceptual.save_lpips_weights(path, params)
  x = _images(4, 16, seed=6)
  ids = prefix_tok.encode(x)
  model = perceptual.LPIPS.from_file(path)
  table = np.stack([np.asarray(model(x, prefix_tok.decode(ids[:, :n])))
                    for n in range(1, prefix_tok.num_tokens + 1)], axis=1)
  target = float(np.median(table))
  ada = prefix_tok.encode_adaptive(x, ("lpips", target), lpips_weights=[path])
  for i, n in enumerate(ada.lengths):
    if ada.reached[i]:
      assert table[i, n - 1] <= target + 1e-4
      assert n == 1 or table[i, n - 2] > target - 1e-4
    np.testing.assert_allclose(ada.scores[i], table[i, n - 1], rtol=1e-4, atol=1e-5)
