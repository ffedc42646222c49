"""FQGAN behaviour beyond the parity fixture: variants, token interface, Triple naming, errors."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxtok
from jaxtok.tokenizers import fqgan, get_family, layers
from jaxtok.tokenizers.fqgan import convert as fqgan_mapping
from jaxtok.tokenizers.fqgan import model as fqgan_model
from jaxtok.tokenizers.fqgan import variants as fqgan_variants
from jaxtok.tokenizers.fqgan.config import TRIPLE_BRANCHES, FQGANConfig
from jaxtok.tokenizers.fqgan.variants import VARIANTS


@pytest.mark.parametrize("name", ["dual-16", pytest.param("triple-16", marks=pytest.mark.slow),
                                  pytest.param("dual-8", marks=pytest.mark.slow),
                                  pytest.param("triple-8", marks=pytest.mark.slow)])
def test_released_variants_build(name):
  c = VARIANTS[name]
  model = nnx.eval_shape(lambda: fqgan.FQGAN(c, rngs=nnx.Rngs(0)))
  spec = model.token_spec
  down = int(name.split("-")[1])
  assert c.image_size == 256 and c.downsample_factor == down
  assert spec.num_tokens == (256 // down) ** 2 and spec.vocab_size == 16384
  assert spec.ids_per_token == len(c.branches) == (2 if name.startswith("dual") else 3)
  assert c.trunk_width == 512 and c.adapter_layers == 6
  assert {b: w for b, (w, _, _) in c.feature_heads.items()} == (
      {"sem": 1024} if name.startswith("dual") else {"sem_mid": 384, "sem_high": 768})
  assert layers.count_params(model) > 50e6


def test_config_roundtrip_and_validation():
  for c in VARIANTS.values():
    assert FQGANConfig.from_dict(c.to_dict()) == c
  with pytest.raises(ValueError, match="encoder_ch_mult"):
    FQGANConfig(encoder_ch_mult=(1, 2, 4), decoder_ch_mult=(1, 2, 4))
  with pytest.raises(ValueError, match="decode_code_order"):
    FQGANConfig(decode_code_order=("sem", "nope"))
  with pytest.raises(ValueError, match="unknown FQGANConfig"):
    FQGANConfig.from_dict({"bogus": 1})


def test_single_codebook_model():
  """One branch, no feature head: a single-codebook VQGAN with ids `[B, h*w]`."""
  c = fqgan_variants.single_codebook(VARIANTS["smoke"])
  assert c.branches == c.decode_code_order == ("vis",) and c.codebook_size == 64 ** 2
  model = nnx.eval_shape(lambda: fqgan.FQGAN(c, rngs=nnx.Rngs(0)))  # Shapes only: fast.
  graphdef, state = nnx.split(model)
  shape_of = lambda method, *args: jax.eval_shape(
      lambda st, *a: getattr(nnx.merge(graphdef, st), method)(*a), state, *args)
  spec = model.token_spec
  assert (spec.ids_per_token, spec.token_ndim, spec.vocab_size) == (1, 2, 64 ** 2)
  assert len(model.feat_heads) == 0 and len(model.quantize.quantizers) == 1
  img = jax.ShapeDtypeStruct((2, c.image_size, c.image_size, 3), jnp.float32)
  ids = shape_of("encode", img)
  assert ids.shape == (2, c.grid_size ** 2) and ids.dtype == jnp.int32
  for tokens in (ids, jax.ShapeDtypeStruct(ids.shape + (1,), jnp.int32)):
    codes = shape_of("lookup", tokens)
    assert codes.shape == (2, c.grid_size, c.grid_size, c.codebook_dim)
  assert shape_of("decode_tokens", ids).shape == (2, c.image_size, c.image_size, 3)
  grid_ids = jax.ShapeDtypeStruct((2, c.grid_size, c.grid_size), jnp.int32)
  assert shape_of("decode_code", grid_ids).shape == (2, c.image_size, c.image_size, 3)
  _, aux = shape_of("forward_official", img)
  assert aux["ids"].shape == (2, c.grid_size ** 2) and aux["semantic_features"] == {}
  with pytest.raises(ValueError, match="branches"):
    FQGANConfig(branches=(), decode_code_order=(), feature_heads={})
  with pytest.raises(ValueError, match="config: expected an FQGANConfig"):
    fqgan_variants.single_codebook(c.to_dict())
  with pytest.raises(ValueError, match=r"2\^24"):
    fqgan_variants.single_codebook(VARIANTS["dual-16"])


@pytest.mark.slow  # ~15 s (two jit compiles of the conv model); convert tests load too
def test_api_roundtrip_smoke():
  tok = jaxtok.load("fqgan:smoke")
  c = VARIANTS["smoke"]
  img = np.random.default_rng(0).uniform(size=(2, c.image_size, c.image_size, 3))
  ids = tok.encode(img.astype(np.float32))
  assert ids.shape == (2, c.grid_size ** 2, 2) and ids.dtype == np.int32
  out = tok.decode(ids)
  assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
  with pytest.raises(ValueError, match="tokens"):
    tok.decode(ids[:, :, :1])
  with pytest.raises(ValueError, match="images"):
    tok.encode(np.zeros((1, 16, 16, 3), np.float32))


@pytest.mark.slow
def test_train_forward_aux_and_errors():
  c = VARIANTS["smoke"]
  m = fqgan.FQGAN(c, rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 32, 32, 3)), jnp.float32)
  recon, aux = m(x, train=True)
  parts = (aux["codebook_loss"] + aux["commitment_loss"] + aux["entropy_loss"]
           + aux["disentangle_loss"])
  np.testing.assert_allclose(aux["losses"]["quantizer"], parts, rtol=1e-6)
  assert set(aux["semantic_features"]) == {"sem"}
  assert float(m.quantize.quantizers[0].code_stats[...].sum()) == 2 * c.grid_size ** 2
  with pytest.raises(ValueError, match="teacher_cls"):
    m.semantic_losses(aux, {})
  with pytest.raises(ValueError, match="B >= 2"):
    fqgan_model.infonce_cls_loss(jnp.ones((1, 4)), jnp.ones((1, 4)))
  with pytest.raises(ValueError, match="args"):
    m.decode_code(aux["ids"][..., 0])
  with pytest.raises(ValueError, match="full"):
    m.decode_tokens(aux["ids"][:, :3])


def test_infonce_matches_formula():
  rng = np.random.default_rng(2)
  s, t = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
  sn = s / np.linalg.norm(s, axis=1, keepdims=True)
  tn = t / np.linalg.norm(t, axis=1, keepdims=True)
  m = np.exp(sn @ tn.T)
  want = -np.mean(np.log(np.diag(m) / m.sum(axis=1)))
  got = fqgan_model.infonce_cls_loss(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def _official_state_dict(model, config):
  """A jaxtok FQGAN's weights under official names, by inverting the converter's rules."""
  flat = {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  conv = {}
  for path, v in flat.items():
    name = ".".join(str(p) for p in path)
    if name.startswith(fqgan_mapping._CONV_PREFIXES):
      leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[path[-1]]
      key = ".".join(str(p) for p in path[:-1]) + "." + leaf
      conv[key] = v.transpose(3, 2, 0, 1) if v.ndim == 4 else v
  rules = fqgan_mapping.fqgan_rules(config, conv)
  out = {}
  inverse = {"conv": lambda w: w.transpose(3, 2, 0, 1), "linear": lambda w: w.T,
             "conv1x1_dense": lambda w: w.T[:, :, None, None], "same": lambda w: w}
  for key, rule in rules.items():
    v = flat[rule[0]]
    if len(rule) == 3:
      v = v[rule[2]]
    out[key] = np.ascontiguousarray(inverse[rule[1].__name__](v))
  return out


@pytest.mark.slow  # ~16 s eager on one core
def test_triple_official_names_roundtrip():
  c = dataclasses.replace(VARIANTS["smoke"], branches=TRIPLE_BRANCHES,
                          decode_code_order=TRIPLE_BRANCHES,
                          feature_heads={"sem_mid": (32, 1, 2), "sem_high": (64, 1, 2)})
  m = fqgan.FQGAN(c, rngs=nnx.Rngs(3))
  sd = _official_state_dict(m, c)
  for key in ("encoder.semantic_head_mid.0.positional_embedding",
              "encoder.semantic_head_high.0.ln_post.weight", "encoder.visual_head.0.ln_pre.bias",
              "mid_sem_feat_pred.upscale.0.weight", "high_sem_feat_pred.class_embedding",
              "quant_conv_sem_high.weight", "quantize_sem_mid.embedding.weight",
              "encoder.conv_out_vis.weight", "post_quant_conv.weight"):
    assert key in sd, key
  assert sd["post_quant_conv.weight"].shape == (c.z_channels, 3 * c.codebook_dim, 1, 1)
  loaded = fqgan_mapping.fqgan_from_params(c, sd)
  x = jnp.asarray(np.random.default_rng(4).uniform(size=(2, 32, 32, 3)), jnp.float32)
  r1, a1 = m(x)
  r2, a2 = loaded(x)
  np.testing.assert_array_equal(np.asarray(a1["ids"]), np.asarray(a2["ids"]))
  np.testing.assert_allclose(np.asarray(r1), np.asarray(r2), atol=1e-6)
  # Official Triple decode_code order: (vis, sem_mid, sem_high).
  ids = a1["ids"]
  g = c.grid_size
  rec = loaded.decode_code(*[ids[..., i].reshape(-1, g, g) for i in range(3)])
  np.testing.assert_allclose(np.asarray(rec) * 0.5 + 0.5, np.asarray(r1), atol=1e-5)


def test_registry():
  fam = get_family("fqgan")
  assert fam.model_class is fqgan.FQGAN
  assert set(fam.variants) >= {"dual-16", "triple-16", "dual-8", "triple-8", "tiny", "smoke"}
  assert jax.tree_util.tree_leaves(fam.variant("tiny").to_dict())
