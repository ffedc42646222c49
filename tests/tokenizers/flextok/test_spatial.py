"""FlexTok's coarse-to-fine locality prior (`spatial_registers`): region wiring in the encoder
and decoder against numpy, prefixes still exact, config validation, variants."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.tokenizers import get_family, layers
from jaxtok.tokenizers.flextok import VARIANTS, FlexTokConfig
from jaxtok.tokenizers.spatial import spatial_regions


def _spatial_smoke(num_registers: int = 16) -> FlexTokConfig:
  """The smoke model (16 px, 4 x 4 patch grid) with the prior on."""
  return dataclasses.replace(VARIANTS["smoke"], spatial_registers=True,
                             num_registers=num_registers)


def _model(cfg, seed=0):
  model = get_family("flextok").model_class(cfg, rngs=nnx.Rngs(seed))
  # A non-zero head, so the codes differ between registers and images.
  model.encoder.to_latents.kernel[...] = jax.random.normal(
      jax.random.key(seed + 1), model.encoder.to_latents.kernel.shape)
  return model


def test_config_validation_and_variants():
  with pytest.raises(ValueError, match="num_registers"):
    dataclasses.replace(VARIANTS["smoke"], spatial_registers=True)  # 8: not n * n
  with pytest.raises(ValueError, match="num_registers"):
    dataclasses.replace(VARIANTS["smoke"], spatial_registers=True, num_registers=64)  # n=8 > 4
  assert _spatial_smoke(4).spatial_registers and _spatial_smoke(1).spatial_registers
  for name in ("d12-d12", "d18-d18", "d18-d28", "smoke"):
    assert not VARIANTS[name].spatial_registers, name
  tiny = VARIANTS["tiny"]
  assert tiny.spatial_registers and tiny.num_registers == tiny.grid ** 2


def test_region_wiring_against_numpy():
  """Encoder: register i's input = register i + the mean patch token of region i; decoder:
  noised patch p's token + the sum of the kept conditions whose regions cover p."""
  cfg = _spatial_smoke()
  model = _model(cfg)
  regions = spatial_regions(cfg.num_registers, cfg.grid, "coarse_to_fine")
  x = jax.random.uniform(jax.random.key(3), (2, cfg.input_size, cfg.input_size, 3))
  x0 = model.to_front(x)
  enc = model.encoder
  tokens = np.asarray(enc.tokens(x0))
  patches = np.asarray(enc.patch_tokens(x0))
  want = np.asarray(enc.registers[...])[None] + np.einsum(
      "kp,bpw->bkw", regions / regions.sum(1, keepdims=True), patches)
  np.testing.assert_allclose(tokens[:, :cfg.num_patches], patches, atol=1e-6)
  np.testing.assert_allclose(tokens[:, cfg.num_patches:], want, atol=1e-5)

  dec = model.decoder
  cond = jax.random.normal(jax.random.key(4), (2, cfg.num_registers, cfg.dec_width))
  keep = jnp.array([5, 16])
  pc = np.asarray(dec.patch_conditions(cond, keep))
  kept = (np.arange(cfg.num_registers)[None, :] < np.asarray(keep)[:, None])[..., None]
  np.testing.assert_allclose(pc, np.einsum("kp,bkw->bpw", regions, np.asarray(cond) * kept),
                             atol=1e-5)
  # Register 4 covers one 2 x 2 block of the 4 x 4 grid (level 2 starts at 4): only there.
  assert regions[4].sum() == 1 and regions[0].sum() == cfg.num_patches
  x_t = jax.random.normal(jax.random.key(5), x0.shape)
  base = np.asarray(dec.patch_emb(x_t) + layers.sincos_2d(cfg.grid, cfg.dec_width))
  got = np.asarray(dec.tokens(x_t, cond, jnp.asarray(pc)))
  np.testing.assert_allclose(got[:, :cfg.num_patches], base + pc, atol=1e-5)
  np.testing.assert_allclose(got[:, cfg.num_patches:], np.asarray(cond), atol=0)
  assert model.patch_conditions(jnp.zeros((2, cfg.num_registers), jnp.int32), keep).shape == (
      2, cfg.num_patches, cfg.dec_width)
  off = _model(VARIANTS["smoke"])
  assert off.decoder.patch_conditions(cond[:, :8], keep) is None


def test_prefix_encoding_and_decoding_stay_exact():
  """With the prior on, register i still depends on neither later registers nor their ids:
  the first n ids do not change when later registers do, and decoding a prefix equals the
  padded decode with keep = n whatever the padding (guided, so the null pass is covered)."""
  cfg = _spatial_smoke()
  model = _model(cfg)
  x = jax.random.uniform(jax.random.key(3), (2, cfg.input_size, cfg.input_size, 3))
  enc = nnx.jit(lambda m, x: m.encoder(m.to_front(x)))
  z_full = enc(model, x)
  model.encoder.registers[...] = model.encoder.registers[...].at[4:].set(5.0)
  z_changed = enc(model, x)
  np.testing.assert_allclose(z_full[:, :4], z_changed[:, :4], atol=1e-5)
  assert float(jnp.max(jnp.abs(z_full[:, 4:] - z_changed[:, 4:]))) > 1e-3
  # Decoder with non-zero heads, so the conditions reach the velocity.
  for lin in (model.decoder.head_proj, model.decoder.head_modulation):
    lin.kernel[...] = 0.1 * jax.random.normal(jax.random.key(7), lin.kernel.shape)
  ids = nnx.jit(lambda m, x: m.encode(x))(model, x)
  kw = dict(steps=2, guidance="cfg", guidance_scale=2.0, seed=4)
  dec = nnx.jit(lambda m, i, k: m.from_front(m.decode_padded(i, k, **kw)))
  a = nnx.jit(lambda m, i: m.decode_tokens(i, **kw))(model, ids[:, :4])
  b = dec(model, ids.at[:, 4:].set(7), jnp.full((2,), 4))
  np.testing.assert_allclose(a, b, atol=1e-6)
  c = dec(model, ids.at[:, 3].set((ids[:, 3] + 1) % 64000), jnp.full((2,), 4))
  assert float(jnp.max(jnp.abs(a - c))) > 1e-4  # a kept id matters


def test_training_pass_with_the_prior():
  """The train pass (nested dropout + condition dropout, which also drops the patch
  conditions): loss = MSE(v, eps - x0), finite; the eval pass reconstructs."""
  cfg = dataclasses.replace(_spatial_smoke(), cond_dropout_p=0.5)
  model = _model(cfg)
  x = jax.random.uniform(jax.random.key(0), (4, cfg.input_size, cfg.input_size, 3))
  _, aux = nnx.jit(lambda m, x: m(x, train=True, rngs=jax.random.key(5)))(model, x)
  loss = float(aux["losses"]["flow"])
  assert np.isfinite(loss) and loss > 0
  np.testing.assert_allclose(loss, float(jnp.mean((aux["velocity"] - aux["target_velocity"])
                                                  ** 2)), rtol=1e-5)
  assert set(np.asarray(aux["num_tokens_kept"])) <= {1, 2, 4, 8, 16}
