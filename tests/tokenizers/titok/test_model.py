"""TiTok: parity with the official PyTorch code (fixtures), variants, API contract."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from jaxtok.tokenizers import get_family, layers, spatial, titok
from jaxtok.tokenizers.interface import TokenSpec
from jaxtok.tokenizers.quantizers import GaussianQuantizer
from jaxtok.tokenizers.spatial import latent_grid, spatial_regions
from jaxtok.tokenizers.titok import TiTok, TiTokConfig
from jaxtok.tokenizers.titok import convert as titok_mapping
from jaxtok.tokenizers.titok.official import official_titok_config
from tests import fixture_files
from tests.fixture_files import FIXTURES as FIXTURE_ROOT

FIXTURES = FIXTURE_ROOT / "titok"

# Absolute tolerances of tests/fixtures/titok/README.md §5; tokens are compared exactly.
ATOL = {
    "enc_patch_embed": 2e-5,
    "enc_latents_ln_post": 1e-4,
    "z": 5e-5,
    "z_normalized": 5e-5,
    "z_quantized": 1e-6,
    "z_codebook": 1e-6,
    "codebook_normalized": 1e-6,
    "dec_ln_post": 3e-4,
    "decoder_logits": 3e-4,
    "pixel_decoder_input": 3e-4,
    "decoder_ffn_out": 3e-4,
    "recon": 3e-4,
    "recon_from_ids": 3e-4,
}
LOSS_RTOL = 1e-5
LOSSES = ("commitment_loss", "codebook_loss", "quantizer_loss")
# Arrays that are inputs/metadata, not outputs to compare.
NOT_OUTPUTS = {"x", "config_json", "meta_json", "fixture_kind", "prefix_lengths"}


def _nchw(a):
  return np.asarray(a).transpose(0, 3, 1, 2)


def _z_nchw(z):  # [B, K, C] -> official fake-2D (B, C, 1, K)
  return np.asarray(z).transpose(0, 2, 1)[:, :, None, :]


def _official_outputs(model: TiTok, x: jax.Array, prefix_lengths: tuple[int, ...]) -> dict:
  """Every array the fixtures hold, computed by jaxtok in the official layouts (one jit)."""

  @nnx.jit
  def run(model, x):
    out = {}
    enc = model.encoder
    out["enc_patch_embed"] = enc.patch_embed(x)
    lat = enc.latents(x)
    out["enc_latents_ln_post"] = lat
    z = enc.project(lat)
    out["z"] = z
    zq, qaux = model.quantize(z, train=False)
    out["z_quantized"] = zq
    out["ids"] = qaux["ids"]
    for name, key in zip(LOSSES, ("commitment_loss", "codebook_loss", "loss")):
      out[name] = qaux[key]
    out["z_codebook"] = model.lookup(qaux["ids"])
    out["dec_ln_post"] = model.decoder.hidden(zq)
    recon, head = model.decode_latents(zq)
    out["recon"] = recon
    out.update(head)
    out["recon_from_ids"] = model.decode_tokens(qaux["ids"])
    out["encoded_ids"] = model.encode(x)
    for n in prefix_lengths:
      img, h = model.decode_latents(model.lookup(qaux["ids"][:, :n]))
      out[f"recon_len{n}"] = img
      out[f"decoder_logits_len{n}"] = h["logits"]
    return out

  out = jax.tree_util.tree_map(np.asarray, run(model, x))
  b, k = out["ids"].shape
  g = model.config.enc_grid
  res = {
      "enc_patch_embed": out["enc_patch_embed"].reshape(b, g, g, -1).transpose(0, 3, 1, 2),
      "enc_latents_ln_post": out["enc_latents_ln_post"],
      "z": _z_nchw(out["z"]),
      "z_quantized": _z_nchw(out["z_quantized"]),
      "z_codebook": _z_nchw(out["z_codebook"]),
      "tokens": out["ids"][:, None, :],
      "dec_ln_post": out["dec_ln_post"],
      "recon": _nchw(out["recon"]),
      "recon_from_ids": _nchw(out["recon_from_ids"]),
      "encoded_ids": out["encoded_ids"],
  }
  for name in LOSSES:
    res[name] = out[name]
    # Official `TiTok.encode` multiplies its losses by 0 when finetune_decoder=True.
    res["encode_" + name] = out[name] * (0.0 if model.config.finetune_decoder else 1.0)
  if model.config.use_l2_norm:
    zz = out["z"]
    res["z_normalized"] = _z_nchw(zz / np.maximum(np.linalg.norm(zz, axis=-1, keepdims=True),
                                                  1e-12))
    cb = np.asarray(model.quantize.codebook[...])
    res["codebook_normalized"] = cb / np.maximum(np.linalg.norm(cb, axis=-1, keepdims=True),
                                                 1e-12)
  if "logits" in out:
    res["decoder_logits"] = _nchw(out["logits"])
    res["pixel_decoder_input"] = _nchw(out["pixel_decoder_input"])
  if "ffn_out" in out:
    res["decoder_ffn_out"] = _nchw(out["ffn_out"])
  for n in prefix_lengths:
    res[f"recon_len{n}"] = _nchw(out[f"recon_len{n}"])
    res[f"decoder_logits_len{n}"] = _nchw(out[f"decoder_logits_len{n}"])
  return res


def _dist_gap(z_nchw, codebook, l2):
  """(2nd smallest - smallest) VQ distance per token, float64, `(B, 1, K)`."""
  z = z_nchw[:, :, 0, :].transpose(0, 2, 1).astype(np.float64)
  cb = codebook.astype(np.float64)
  if l2:
    z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    cb = cb / np.maximum(np.linalg.norm(cb, axis=-1, keepdims=True), 1e-12)
  d = (z ** 2).sum(-1)[..., None] + (cb ** 2).sum(-1) - 2 * z @ cb.T
  d = np.sort(d, axis=-1)
  return (d[..., 1] - d[..., 0])[:, None, :]


@pytest.mark.parametrize("path", fixture_files.fixture_params(("titok", "one_d_piece"), FIXTURES))
def test_parity_with_official(path):
  """Builds the model from the file's official config + state dict; compares every array."""
  f = dict(np.load(path, allow_pickle=False))
  params = {k[len("param/"):]: v for k, v in f.items() if k.startswith("param/")}
  config_dict = json.loads(str(f["config_json"]))
  size_table = json.loads(str(f["meta_json"]))["size_table"]
  model = titok_mapping.from_official(config_dict, params, size_table=size_table)
  cfg = model.config
  if str(f["fixture_kind"]) == "one_d_piece":
    assert cfg.tail_token_drop, "One-D-Piece configs must turn on tail-token-drop"
  prefix = tuple(int(n) for n in f.get("prefix_lengths", ()))
  x = jnp.asarray(f["x"].transpose(0, 2, 3, 1))
  ours = _official_outputs(model, x, prefix)

  outputs = set(k for k in f if not k.startswith("param/")) - NOT_OUTPUTS
  failures = []
  checked = []
  for name in sorted(outputs):
    ref = f[name]
    if name == "tokens":
      if not np.array_equal(ours["tokens"], ref):
        failures.append(f"tokens differ: {ours['tokens'].ravel()} vs {ref.ravel()}")
      if not np.array_equal(ours["encoded_ids"], ref[:, 0]):
        failures.append("model.encode ids differ from the reference tokens")
    elif name == "vq_dist_gap":
      # Our own float64 distance gap from our z must match theirs (it certifies exact ties
      # cannot flip tokens).
      cb = np.asarray(model.quantize.codebook[...])
      gap = _dist_gap(ours["z"], cb, cfg.use_l2_norm)
      if not np.allclose(gap, ref, atol=1e-4):
        failures.append(f"vq_dist_gap max err {np.abs(gap - ref).max():.3g}")
    elif name in LOSSES or name.startswith("encode_"):
      if not np.allclose(ours[name], ref, rtol=LOSS_RTOL, atol=0):
        failures.append(f"{name}: {float(ours[name])!r} vs {float(ref)!r}")
    else:
      base = name.split("_len")[0] if "_len" in name else name
      if base not in ATOL or name not in ours:
        failures.append(f"{name}: fixture array with no comparison (unknown to this test)")
        continue
      if ours[name].shape != ref.shape:
        failures.append(f"{name}: shape {ours[name].shape} vs {ref.shape}")
        continue
      err = float(np.abs(ours[name] - ref).max())
      if err > ATOL[base]:
        failures.append(f"{name}: max abs err {err:.3g} > {ATOL[base]}")
    checked.append(name)
  assert not failures, "\n".join(failures)
  assert "tokens" in checked and "recon" in checked
  for n in prefix:  # every stored prefix length is compared
    assert f"recon_len{n}" in checked and f"decoder_logits_len{n}" in checked


def _all_layer_norms(module):
  return [m for _, m in nnx.iter_graph(module) if isinstance(m, nnx.LayerNorm)]


def test_layer_norm_eps_and_exact_gelu():
  """eps=1e-5 (PyTorch) on every TiTok LayerNorm and erf GELU: tolerances cannot see these."""
  cfg = get_family("titok").variant("tiny")
  model = nnx.eval_shape(lambda: TiTok(cfg, rngs=nnx.Rngs(0)))
  norms = _all_layer_norms(model)
  # ln_pre, ln_post and the (depth-stacked) ln_1, ln_2 of encoder and decoder.
  assert len(norms) == 8
  assert all(n.epsilon == 1e-5 for n in norms), [n.epsilon for n in norms]
  assert layers.LAYER_NORM_EPS == 1e-5

  # The block MLP uses the exact GELU: compare with an erf-based reference where the tanh
  # approximation is off by > 1e-4.
  xs = np.linspace(-4, 4, 81).astype(np.float32)
  exact = 0.5 * xs * (1 + erf(xs / np.sqrt(2)))
  np.testing.assert_allclose(np.asarray(layers.gelu(jnp.asarray(xs))), exact, atol=1e-6)
  mlp = layers.MLP(4, 8, rngs=nnx.Rngs(1))
  rng = np.random.default_rng(0)
  mlp.c_fc.kernel[...] = jnp.asarray(rng.normal(size=(4, 8)).astype(np.float32))
  v = jnp.asarray(rng.normal(size=(3, 4)).astype(np.float32))
  hid = np.asarray(mlp.c_fc(v))
  want = (0.5 * hid * (1 + erf(hid / np.sqrt(2)))) @ np.asarray(mlp.c_proj.kernel[...]) + \
      np.asarray(mlp.c_proj.bias[...])
  np.testing.assert_allclose(np.asarray(mlp(v)), want, atol=1e-5)
  tanh = np.asarray(jax.nn.gelu(jnp.asarray(hid), approximate=True))
  assert np.abs(tanh - 0.5 * hid * (1 + erf(hid / np.sqrt(2)))).max() > 1e-4


def test_published_parameter_counts():
  """S-128 / B-64 / L-32 incl. the MaskGIT pixel decoder, from abstract shapes only."""
  for name, published in titok.PUBLISHED_PARAMS.items():
    cfg = titok.VARIANTS[name]
    n = layers.count_params(nnx.eval_shape(lambda cfg=cfg: TiTok(cfg, rngs=nnx.Rngs(0))))
    # Published figures are rounded to 0.1M.
    assert abs(n - published) <= 0.05e6 + 1, (name, n, published)


def test_variants_are_consistent():
  vs = titok.VARIANTS
  assert {"S-128", "B-64", "L-32", "BL-64-VQ", "BL-128-VQ", "SL-256-VQ", "LL-32-VAE",
          "BL-64-VAE", "BL-128-VAE", "tiny"} <= set(vs)
  for name in ("S-128", "B-64", "L-32"):
    assert vs[name].head == "two_stage" and vs[name].legacy_projection
    assert (vs[name].codebook_size, vs[name].token_size) == (4096, 12)
  for name in ("BL-64-VQ", "BL-128-VQ", "SL-256-VQ"):
    c = vs[name]
    assert (c.head, c.codebook_size, c.token_size, c.use_l2_norm) == ("pixel", 8192, 64, False)
  for name in ("LL-32-VAE", "BL-64-VAE", "BL-128-VAE"):
    assert vs[name].quantizer == "gaussian" and vs[name].token_size == 16
  assert [vs[n].num_latent_tokens for n in ("S-128", "B-64", "L-32")] == [128, 64, 32]
  # Configs round-trip through JSON.
  for c in vs.values():
    assert TiTokConfig.from_dict(json.loads(c.to_json())) == c


def test_init_std_option():
  """`init_std` only changes the init: 0.02 (official default) vs LeCun (None, `tiny`)."""
  # `smoke` is the tiny model at 32 px, so it shares its init.
  assert all(c.init_std == 0.02 for n, c in titok.VARIANTS.items() if n not in ("tiny", "smoke"))
  assert titok.VARIANTS["tiny"].init_std is None
  small = dict(image_size=32, enc_patch_size=8, dec_patch_size=8, enc_width=64, enc_depth=1,
               enc_heads=2, dec_width=64, dec_depth=1, dec_heads=2, num_latent_tokens=4,
               token_size=8, codebook_size=16, legacy_projection=False, head="pixel")
  official = TiTok(TiTokConfig(**small), rngs=nnx.Rngs(0))
  lecun = TiTok(TiTokConfig(**small, init_std=None), rngs=nnx.Rngs(0))
  qkv = lambda m: np.asarray(m.encoder.transformer.blocks.attn.qkv.kernel[...])
  assert abs(qkv(official).std() - 0.02 * 0.88) < 0.003  # trunc-normal(2 sigma) shrinks std
  assert abs(qkv(lecun).std() - 64 ** -0.5) < 0.02
  emb = lambda m: np.asarray(m.decoder.decoder_embed.kernel[...]).std()
  assert emb(lecun) > 10 * emb(official)
  # The output head keeps the small init either way; other init_std values are honoured.
  np.testing.assert_array_equal(official.decoder.ffn_0.kernel[...],
                                lecun.decoder.ffn_0.kernel[...])
  # ...except that the LeCun init starts the pixel head at the identity conv and mid-grey.
  np.testing.assert_array_equal(lecun.decoder.conv_out.kernel[1, 1], np.eye(3))
  assert float(np.abs(lecun.decoder.conv_out.kernel[0]).max()) == 0.0
  np.testing.assert_array_equal(lecun.decoder.ffn_0.bias[...], 0.5)
  flat = lecun.decode_latents(jnp.zeros((1, 4, 8)))[0]
  assert abs(float(flat.mean()) - 0.5) < 0.05
  custom = TiTok(TiTokConfig(**small, init_std=0.1), rngs=nnx.Rngs(0))
  assert abs(qkv(custom).std() - 0.1 * 0.88) < 0.01
  with pytest.raises(ValueError, match="init_std"):
    TiTokConfig(**small, init_std=0.0)


@pytest.fixture(scope="module")
def tiny_model():
  return TiTok(get_family("titok").variant("tiny"), rngs=nnx.Rngs(0))


def _images(n=2, s=64, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(n, s, s, 3)).astype(np.float32))


# The tiny model (FSQ tokens) and the same sizes with a learned cosine VQ codebook.
TINY_VQ = dataclasses.replace(titok.VARIANTS["tiny"], quantizer="vq", token_size=16,
                              codebook_size=512, quantizer_kwargs={"entropy_loss_weight": 0.02})


@pytest.mark.parametrize("quantizer", ["fsq", "vq"])
def test_contract_shapes_and_training_forward(tiny_model, quantizer):
  model = tiny_model if quantizer == "fsq" else TiTok(TINY_VQ, rngs=nnx.Rngs(0))
  assert model.config.quantizer == quantizer
  cfg = model.config
  x = _images()
  ids = nnx.jit(lambda m, x: m.encode(x))(model, x)
  assert ids.shape == (2, cfg.num_latent_tokens) and ids.dtype == jnp.int32
  assert int(ids.min()) >= 0 and int(ids.max()) < model.token_spec.vocab_size
  img = nnx.jit(lambda m, i: m.decode_tokens(i))(model, ids)
  assert img.shape == (2, 64, 64, 3) and img.dtype == jnp.float32

  def loss_fn(m, x):
    recon, aux = m(x, train=True, rngs=jax.random.key(0))
    return jnp.mean((recon - x) ** 2) + aux["losses"]["quantizer"], aux

  grads, aux = nnx.jit(nnx.grad(loss_fn, has_aux=True))(model, x)
  keys = ("losses", "ids", "stats") + (
      ("commitment_loss", "codebook_loss") if quantizer == "vq" else ())
  for k in keys:
    assert k in aux
  g = nnx.state(grads, nnx.Param)
  gl = jax.tree_util.tree_leaves(g)
  assert all(np.isfinite(np.asarray(v)).all() for v in gl)
  # The encoder gets gradients through the straight-through estimator.
  assert float(jnp.abs(grads.encoder.latent_tokens[...]).sum()) > 0
  if quantizer == "vq":
    assert float(jnp.abs(grads.quantize.codebook[...]).sum()) > 0


def test_bad_inputs_raise_value_error(tiny_model):
  model = tiny_model
  with pytest.raises(ValueError, match="images"):
    model.encode(jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match="images"):
    model.encode(jnp.zeros((1, 64, 64, 3), jnp.uint8))
  with pytest.raises(ValueError, match="ids"):
    model.decode_tokens(jnp.zeros((1, model.config.num_latent_tokens + 1), jnp.int32))
  with pytest.raises(ValueError, match="ids"):
    model.decode_tokens(jnp.zeros((1, 4), jnp.float32))
  with pytest.raises(ValueError, match="head"):
    TiTokConfig(head="nope")
  with pytest.raises(ValueError, match="enc_patch_size"):
    TiTokConfig(image_size=64, enc_patch_size=7)
  with pytest.raises(ValueError, match="vit_enc_model_size"):
    official_titok_config({"model": {"vq_model": {
        "vit_enc_model_size": "huge", "num_latent_tokens": 4, "token_size": 4}}})


def test_from_official_is_strict():
  f = np.load(FIXTURES / "titok_single_tiny.npz")
  params = {k[6:]: f[k] for k in f.files if k.startswith("param/")}
  cfg = str(f["config_json"])
  sizes = json.loads(str(f["meta_json"]))["size_table"]
  extra = dict(params, **{"decoder.extra.weight": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match="no jaxtok parameter"):
    titok_mapping.from_official(cfg, extra, size_table=sizes)
  missing = {k: v for k, v in params.items() if k != "decoder.mask_token"}
  with pytest.raises(ValueError, match="absent"):
    titok_mapping.from_official(cfg, missing, size_table=sizes)
  bad = dict(params, **{"decoder.mask_token": np.zeros((1, 1, 7), np.float32)})
  with pytest.raises(ValueError, match="decoder.mask_token"):
    titok_mapping.from_official(cfg, bad, size_table=sizes)


def test_legacy_projection_is_a_raw_reshape():
  """The legacy path reinterprets [B, K, W] as [B, W, K] (no transpose): the released bug."""
  cfg = TiTokConfig(image_size=32, enc_patch_size=16, dec_patch_size=16, enc_width=8,
                    enc_depth=1, enc_heads=2, dec_width=8, dec_depth=1, dec_heads=2,
                    num_latent_tokens=3, token_size=4, codebook_size=8, head="pixel",
                    legacy_projection=True)
  enc = titok.TiTokEncoder(cfg, rngs=nnx.Rngs(0))
  lat = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32))
  w = np.asarray(enc.conv_out.kernel[...])
  b = np.asarray(enc.conv_out.bias[...])
  want = np.einsum("bwk,wc->bkc", np.asarray(lat).reshape(2, 8, 3), w) + b
  np.testing.assert_allclose(np.asarray(enc.project(lat)), want, atol=1e-5)
  cfg.legacy_projection = False
  np.testing.assert_allclose(np.asarray(enc.project(lat)), np.asarray(lat) @ w + b, atol=1e-5)


def _small(**kw):
  base = dict(image_size=32, enc_patch_size=8, dec_patch_size=8, enc_width=32, enc_depth=1,
              enc_heads=2, dec_width=32, dec_depth=1, dec_heads=2, num_latent_tokens=4,
              token_size=8, codebook_size=32, use_l2_norm=False, legacy_projection=False,
              head="pixel", finetune_decoder=False)
  base.update(kw)
  return TiTokConfig(**base)


def test_vae_and_factorized_variants():
  x = _images(2, 32)
  # Continuous (VAE) tokens: 2C encoder channels -> mean/logvar; KL; mean as "encode".
  vae = TiTok(_small(quantizer="gaussian"), rngs=nnx.Rngs(0))
  assert isinstance(vae.quantize, GaussianQuantizer)
  assert vae.encoder.conv_out.kernel[...].shape == (32, 16)

  @nnx.jit
  def run_vae(m, x, key):
    mean = m.encode(x)
    return dict(mean=mean, sample=m.encode_latents(x, sample=True, rngs=key),
                train=m(x, train=True, rngs=key), eval=m(x, train=False)[0],
                from_mean=m.decode_tokens(mean))

  out = run_vae(vae, x, jax.random.key(0))
  mean = out["mean"]
  assert mean.shape == (2, 4, 8) and mean.dtype == jnp.float32
  assert float(jnp.abs(out["sample"] - mean).max()) > 0
  recon, aux = out["train"]
  z = np.asarray(aux["posterior_mean"]), np.asarray(aux["posterior_logvar"])
  want_kl = np.mean(0.5 * np.sum(z[0] ** 2 + np.exp(z[1]) - 1 - z[1], axis=(1, 2)))
  np.testing.assert_allclose(float(aux["losses"]["kl"]), want_kl, rtol=1e-5)
  assert recon.shape == (2, 32, 32, 3)
  np.testing.assert_allclose(np.asarray(out["from_mean"]), np.asarray(out["eval"]), atol=1e-5)
  with pytest.raises(ValueError, match="rngs"):
    vae(x, train=True)

  # Factorized VQ: k sub-codebooks, ids [B, K, k], token_size/k channels each.
  fac = TiTok(_small(quantizer="factorized_vq", num_sub_codebooks=2, use_l2_norm=True),
              rngs=nnx.Rngs(0))

  @nnx.jit
  def run_fac(m, x):
    ids = m.encode(x)
    return ids, m.decode_tokens(ids), m(x)[0]

  ids, img, recon = run_fac(fac, x)
  assert ids.shape == (2, 4, 2) and ids.dtype == jnp.int32
  np.testing.assert_allclose(np.asarray(img), np.asarray(recon), atol=1e-5)
  with pytest.raises(ValueError, match="ids"):
    fac.decode_tokens(ids[..., 0])

  with pytest.raises(ValueError, match="ids: the 'gaussian' bottleneck has continuous tokens"):
    vae.lookup(jnp.zeros((1, 4), jnp.int32))


def test_fsq_bottleneck_encodes_decodes_and_trains():
  """TiTok builds any registry bottleneck: FSQ ids, decode, finite training losses."""
  fsq = TiTok(_small(quantizer="fsq", quantizer_kwargs={"levels": [8, 5, 5]}), rngs=nnx.Rngs(0))
  assert fsq.token_spec.vocab_size == 200 and fsq.token_spec.ids_per_token == 1
  assert fsq.token_spec.radix == (8, 5, 5)  # The FSQ ids' digits, channel 0 first.
  x = _images(2, 32)

  @nnx.jit
  def run(m, x):
    ids = m.encode(x)
    recon, aux = m(x, train=True)
    return ids, m.decode_tokens(ids), m(x)[0], recon, aux

  ids, img, recon_eval, recon, aux = run(fsq, x)
  assert ids.shape == (2, 4) and ids.dtype == jnp.int32
  assert int(ids.min()) >= 0 and int(ids.max()) < 200
  np.testing.assert_allclose(np.asarray(img), np.asarray(recon_eval), atol=1e-5)
  assert recon.shape == (2, 32, 32, 3) and np.isfinite(np.asarray(recon)).all()
  for k in ("commitment_loss", "codebook_loss"):
    assert np.isfinite(float(aux[k])), k
  assert np.isfinite(float(aux["losses"]["quantizer"]))
  loss = lambda m: jnp.mean((m(x, train=True)[0] - x) ** 2) + m(x, train=True)[1]["losses"][
      "quantizer"]
  grads = nnx.jit(nnx.grad(loss))(fsq)
  assert all(np.isfinite(np.asarray(g)).all()
             for g in jax.tree_util.tree_leaves(nnx.state(grads, nnx.Param)))
  assert float(jnp.abs(grads.encoder.latent_tokens[...]).sum()) > 0


def test_token_spec_radix_is_checked():
  spec = TokenSpec(num_tokens=4, image_size=32, vocab_size=200, radix=[8, 5, 5])
  assert spec.radix == (8, 5, 5) and TokenSpec(4, 32, 200).radix is None
  for kw, match in ((dict(radix=(8, 5, 4)), r"prod\(radix\) == vocab_size \(200\)"),
                    (dict(radix=(200, 1)), ">= 2"), (dict(radix=()), ">= 2"),
                    (dict(radix=(8.5, 5, 5)), ">= 2"),
                    (dict(radix=(8, 5, 5), ids_per_token=2), "one per token"),
                    (dict(vocab_size=None, channels=4, radix=(8, 5, 5)), "discrete")):
    with pytest.raises(ValueError, match=f"radix: .*{match}"):
      TokenSpec(**{**dict(num_tokens=4, image_size=32, vocab_size=200), **kw})


def test_tiny_and_smoke_variants():
  for fam in ("titok", "one_d_piece"):
    smoke = get_family(fam).variant("smoke")
    assert (smoke.image_size, smoke.head) == (32, "pixel")
    assert smoke.tail_token_drop == (fam == "one_d_piece")
  tiny = titok.VARIANTS["tiny"]
  assert (tiny.image_size, tiny.enc_width, tiny.quantizer, tiny.num_latent_tokens) == (
      64, 64, "fsq", 64)
  levels = tiny.quantizer_kwargs["levels"]
  assert tiny.token_size == len(levels)
  spec = titok.TiTok(tiny, rngs=nnx.Rngs(0)).token_spec
  assert spec.vocab_size == int(np.prod(levels)) and spec.radix == tuple(levels)
  assert titok.VARIANTS["smoke"].quantizer == "vq"
  assert tiny.spatial_latents and not titok.VARIANTS["smoke"].spatial_latents
  assert set(titok.MODEL_SIZES) == {"small", "base", "large"}


def test_latent_grid_tilings():
  assert latent_grid(32, 8) == (4, 8)
  assert latent_grid(64, 8) == (8, 8)
  assert latent_grid(16, 16) == (4, 4)
  assert latent_grid(12, 8) is None  # 12 = 2 x 6 or 3 x 4: 6 and 3 do not divide 8.
  assert latent_grid(128, 8) is None  # More regions than patches.
  with pytest.raises(ValueError, match="num_latent_tokens"):
    TiTokConfig(image_size=64, enc_patch_size=8, dec_patch_size=8, num_latent_tokens=12,
                head="pixel", spatial_latents=True)
  raster = spatial_regions(32, 8)
  assert raster.shape == (32, 64) and (raster.sum(axis=0) == 1).all()
  assert (raster.sum(axis=1) == 2).all()


def test_coarse_to_fine_regions_are_a_quadtree():
  regions = spatial_regions(64, 8, "coarse_to_fine")  # 8 x 8 tokens on 8 x 8 patches.
  sizes = regions.sum(axis=1)
  # Level by level: 1 token over all 64 patches, 3 quadrants, 12 blocks of 2 x 2, 48 cells.
  np.testing.assert_array_equal(sizes, [64] + [16] * 3 + [4] * 12 + [1] * 48)
  # A patch has at most one token per level; where a block's first cell holds the coarser
  # token (Haar-like), the finer level adds none: patch (0, 0) has only token 0.
  cover = regions.sum(axis=0).reshape(8, 8)
  assert cover[0, 0] == 1 and cover[7, 7] == 4 and cover[0, 1] == 2 and cover.max() == 4
  square = regions.reshape(64, 8, 8)
  assert square[1, :4, 4:].all() and square[1].sum() == 16  # Token 1: the top-right quadrant.
  assert square[4, :2, 2:4].all() and square[4].sum() == 4  # First of level 2: rows 0-1, cols 2-3.
  # Any prefix of whole levels covers every patch: 1, 4 and 16 tokens are coarser images.
  for n in (1, 4, 16, 64):
    assert (regions[:n].sum(axis=0) >= 1).all()
  # 16 tokens on an 8 x 8 grid: a 4 x 4 quadtree whose cells are 2 x 2 patches.
  small = spatial_regions(16, 8, "coarse_to_fine")
  np.testing.assert_array_equal(small.sum(axis=1), [64] + [16] * 3 + [4] * 12)
  assert spatial_regions(32, 8, "coarse_to_fine") is None  # Not a square.
  assert spatial_regions(36, 12, "coarse_to_fine") is None  # 6 is not a power of two.
  with pytest.raises(ValueError, match="order"):
    spatial_regions(64, 8, "zigzag")
  with pytest.raises(ValueError, match="num_latent_tokens"):
    TiTokConfig(image_size=64, enc_patch_size=8, dec_patch_size=8, num_latent_tokens=32,
                head="pixel", spatial_latents=True, spatial_order="coarse_to_fine")
  with pytest.raises(ValueError, match="spatial_order"):
    TiTokConfig(image_size=64, enc_patch_size=8, dec_patch_size=8, num_latent_tokens=64,
                head="pixel", spatial_latents=True, spatial_order="zigzag")


def test_coarse_to_fine_pool_and_spread():
  grid, k, w = 8, 16, 3
  x = jax.random.normal(jax.random.PRNGKey(0), (2, grid * grid, w))
  img = np.asarray(x).reshape(2, grid, grid, w)
  pooled = spatial.pool_to_latents(x, k, grid, "coarse_to_fine")
  np.testing.assert_allclose(pooled[:, 0], img.mean(axis=(1, 2)), atol=1e-6)
  np.testing.assert_allclose(pooled[:, 3], img[:, 4:, 4:].mean(axis=(1, 2)), atol=1e-6)
  np.testing.assert_allclose(pooled[:, 4], img[:, 0:2, 2:4].mean(axis=(1, 2)), atol=1e-6)
  # A patch receives the sum of its three covering tokens (whole image, quadrant, block).
  spread = np.asarray(spatial.spread_to_patches(pooled, grid, "coarse_to_fine"))
  spread = spread.reshape(2, grid, grid, w)
  np.testing.assert_allclose(spread[:, 7, 7], pooled[:, 0] + pooled[:, 3] + pooled[:, 15],
                             atol=1e-6)
  np.testing.assert_allclose(spread[:, 0, 0], pooled[:, 0], atol=1e-6)  # Top-left: token 0.


def test_spatial_latents_pool_and_spread_regions():
  grid, k, w = 8, 32, 3
  x = jax.random.normal(jax.random.PRNGKey(0), (2, grid * grid, w))
  pooled = spatial.pool_to_latents(x, k, grid)
  # Token 5 of the 4 x 8 tiling is row 0, column 5: patches (rows 0-1, column 5).
  img = np.asarray(x).reshape(2, grid, grid, w)
  np.testing.assert_allclose(pooled[:, 5], img[:, 0:2, 5].mean(axis=1), atol=1e-6)
  np.testing.assert_allclose(pooled[:, 8 + 2], img[:, 2:4, 2].mean(axis=1), atol=1e-6)
  spread = np.asarray(spatial.spread_to_patches(pooled, grid)).reshape(2, grid, grid, w)
  np.testing.assert_allclose(spread[:, 1, 5], pooled[:, 5], atol=0)
  np.testing.assert_allclose(spatial.pool_to_latents(jnp.asarray(spread.reshape(2, -1, w)), k,
                                                   grid), pooled, atol=1e-6)


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
@pytest.mark.parametrize("order", ["raster", "coarse_to_fine"])
def test_spatial_latents_prefix_equals_masked_tail(order):
  """A prefix of L tokens decodes exactly as all K with the tail hidden (`lengths`): the
  dropped tokens' regions get nothing from them, as in tail-token-drop training."""
  config = dataclasses.replace(titok.VARIANTS["tiny"], spatial_latents=True, spatial_order=order)
  model = TiTok(config, rngs=nnx.Rngs(0))
  images = jax.random.uniform(jax.random.PRNGKey(1), (2, 64, 64, 3))
  ids = model.encode(images)
  z = model.lookup(ids)
  for n in (1, 7, 32):
    prefix, _ = model.decode_latents(z[:, :n])
    masked, _ = model.decode_latents(z, lengths=jnp.full((2,), n))
    np.testing.assert_allclose(prefix, masked, atol=2e-5)
  # Content reaches the decoder through the regions: changing the last token (the bottom-right
  # 8 x 8 pixel patch in both orders) changes its region most.
  other = model.decode_latents(z.at[:, -1].set(z[:, 1]))[0] - model.decode_latents(z)[0]
  err = np.abs(np.asarray(other)).mean(axis=(0, 3))  # [64, 64]
  assert err[56:, 56:].mean() > 3 * err[:32, :32].mean()


def test_pixel_base_adds_a_bilinear_colour_field():
  """`pixel_base`: each decoder position's colour, bilinearly upsampled, lies under the patches;
  with the patch head silenced the image is that smooth field through the 3x3 conv."""
  config = dataclasses.replace(titok.VARIANTS["tiny"], pixel_base=True)
  model = TiTok(config, rngs=nnx.Rngs(0))
  assert "ffn_base" in nnx.to_pure_dict(nnx.state(model.decoder, nnx.Param))
  no_base = dataclasses.replace(titok.VARIANTS["tiny"], pixel_base=False)
  assert titok.TiTok(no_base, rngs=nnx.Rngs(0)).decoder.ffn_base is None
  dec = model.decoder
  dec.ffn_0.kernel[...] = jnp.zeros_like(dec.ffn_0.kernel[...])
  dec.ffn_0.bias[...] = jnp.zeros_like(dec.ffn_0.bias[...])
  h = jax.random.normal(jax.random.PRNGKey(0), (2, config.dec_grid ** 2, config.dec_width))
  ffn, image = dec.pixel_head(h)
  g = config.dec_grid
  colours = np.asarray(dec.ffn_base(h)).reshape(2, g, g, 3)
  # Bilinear (half-pixel centres): the centre of patch (r, c) sits between four pixels whose mean
  # is that patch's colour; next to a border the field blends into the neighbour.
  p = config.dec_patch_size
  centre = np.asarray(ffn)[:, 3 * p + p // 2 - 1:3 * p + p // 2 + 1,
                           2 * p + p // 2 - 1:2 * p + p // 2 + 1].mean(axis=(1, 2))
  np.testing.assert_allclose(centre, colours[:, 3, 2], atol=0.1 * np.abs(colours).max())
  edge = np.asarray(ffn)[:, 3 * p + p // 2, 3 * p - 1]  # Last column of patch (3, 2).
  between = (colours[:, 3, 2] + colours[:, 3, 3]) / 2
  assert np.abs(edge - between).max() < np.abs(edge - colours[:, 3, 2]).max() + 1e-6
  np.testing.assert_allclose(image, dec.conv_out(ffn), atol=1e-6)
  with pytest.raises(ValueError, match="pixel_base"):
    dataclasses.replace(titok.VARIANTS["S-128"], pixel_base=True)


@pytest.mark.parametrize("quantizer, kwargs, per_token, radix", [
    ("lfq", {}, 1, (2,) * 5),
    # BSQ and SimVQ share every model path with LFQ and VQ (the codec test covers their ids).
    pytest.param("bsq", {"num_codebooks": 1}, 1, (2,) * 5, marks=pytest.mark.slow),
    ("rvq", {"depth": 3, "quantize_dropout": True}, 3, None),
    pytest.param("simvq", {}, 1, None, marks=pytest.mark.slow),
])
def test_new_bottlenecks_encode_decode_and_train(quantizer, kwargs, per_token, radix):
  """LFQ, BSQ, residual VQ and SimVQ through the config: token layout, ids, decode, grads."""
  model = TiTok(_small(quantizer=quantizer, codebook_size=32, quantizer_kwargs=kwargs),
                rngs=nnx.Rngs(0))
  spec = model.token_spec
  assert (spec.vocab_size, spec.ids_per_token, spec.radix) == (32, per_token, radix)
  x = _images(2, 32)

  @nnx.jit
  def run(m, x, r):
    ids = m.encode(x)
    recon, aux = m(x, train=True, rngs=r)
    return ids, m.decode_tokens(ids), m(x)[0], recon, aux

  ids, img, recon_eval, recon, aux = run(model, x, nnx.Rngs(1))
  assert ids.shape == ((2, 4) if per_token == 1 else (2, 4, per_token))
  assert int(ids.min()) >= 0 and int(ids.max()) < 32
  np.testing.assert_allclose(np.asarray(img), np.asarray(recon_eval), atol=1e-5)
  assert np.isfinite(np.asarray(recon)).all() and np.isfinite(float(aux["losses"]["quantizer"]))
  loss = lambda m: jnp.mean((m(x, train=True, rngs=nnx.Rngs(2))[0] - x) ** 2) + m(
      x, train=True, rngs=nnx.Rngs(2))[1]["losses"]["quantizer"]
  grads = nnx.jit(nnx.grad(loss))(model)
  assert all(np.isfinite(np.asarray(g)).all()
             for g in jax.tree_util.tree_leaves(nnx.state(grads, nnx.Param)))
  assert float(jnp.abs(grads.encoder.latent_tokens[...]).sum()) > 0
  if quantizer == "rvq":
    with pytest.raises(ValueError, match="rngs"):
      model(x, train=True)
