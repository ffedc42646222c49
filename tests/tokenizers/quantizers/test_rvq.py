"""ResidualVectorQuantizer: residual structure, prefixes, dropout, shared codebooks, errors."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.tokenizers.quantizers import QUANTIZERS, ResidualVectorQuantizer, build_quantizer


def _z(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _rvq(**kw):
  base = dict(depth=3, rngs=nnx.Rngs(0))
  q = ResidualVectorQuantizer(16, 4, **{**base, **kw})
  for i, layer in enumerate(q.layers):
    layer.codebook[...] = _z((16, 4), 10 + i) * 0.5 ** i
  return q


def test_each_depth_quantizes_the_residual_left_before_it():
  q = _rvq()
  z = _z((2, 5, 4))
  _, aux = q(z)
  assert aux["ids"].shape == (2, 5, 3) and int(aux["num_kept"]) == 3
  flat, ids = np.asarray(z).reshape(-1, 4), np.asarray(aux["ids"]).reshape(-1, 3)
  residual, total = flat.copy(), np.zeros_like(flat)
  for i in range(3):
    cb = np.asarray(q.layer(i).codebook[...])
    want = np.argmin(((residual[:, None] - cb[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(ids[:, i], want)
    residual, total = residual - cb[want], total + cb[want]
  np.testing.assert_allclose(np.asarray(aux["codes"]).reshape(-1, 4), total, atol=1e-5)
  np.testing.assert_allclose(q.lookup(aux["ids"]), aux["codes"], atol=1e-6)
  # A prefix of depths is the same quantization cut short, and its ids pad with -1.
  _, two = q(z, depth=2)
  np.testing.assert_array_equal(two["ids"][..., :2], aux["ids"][..., :2])
  assert (np.asarray(two["ids"][..., 2]) == -1).all()
  np.testing.assert_allclose(q.lookup(aux["ids"][..., :2]), two["codes"], atol=1e-6)
  np.testing.assert_allclose(q.lookup(two["ids"]), two["codes"], atol=1e-6)
  assert float(two["layer_losses"][2]) == 0.0
  np.testing.assert_allclose(aux["loss"], aux["layer_losses"].sum(), rtol=1e-6)


def test_quantizer_dropout_keeps_a_random_prefix_and_freezes_dropped_depths():
  q = _rvq(quantize_dropout=True, dropout_cutoff=1, update="ema", ema_decay=0.5)
  z = _z((4, 8, 4), 1)
  step = nnx.jit(lambda m, z, r: m(z, train=True, rngs=r))
  seen = set()
  for seed in range(12):
    before = [np.asarray(layer.cluster_size[...]).copy() for layer in q.layers]
    _, aux = step(q, z, nnx.Rngs(dropout=seed))
    kept = int(aux["num_kept"])
    seen.add(kept)
    assert 2 <= kept <= 3  # the draw is in [cutoff, depth) = [1, 3): 2 or 3 depths kept
    ids = np.asarray(aux["ids"])
    assert (ids[..., :kept] >= 0).all() and (ids[..., kept:] == -1).all()
    for i, layer in enumerate(q.layers):
      changed = not np.array_equal(np.asarray(layer.cluster_size[...]), before[i])
      assert changed == (i < kept), (seed, i, kept)
  assert seen == {2, 3}
  with pytest.raises(ValueError, match="rngs: quantize_dropout"):
    q(z, train=True)
  # Eval mode, or a given depth, never drops.
  assert int(q(z)[1]["num_kept"]) == 3


def test_shared_codebook_is_one_update_over_the_kept_residuals():
  q = _rvq(shared_codebook=True, update="ema", ema_decay=0.5)
  assert len(q.layers) == 1
  ref = nnx.clone(q)
  z = _z((3, 6, 4), 2)
  _, aux = q(z, train=True, depth=2)
  # The same update by hand: the eval-mode residuals of depths 0 and 1, one EMA step.
  codes0 = ref.layer(0).lookup(aux["ids"][..., 0])
  flat = jnp.concatenate([z, z - codes0]).reshape(-1, 4)
  ref.layers[0](flat, train=True)
  np.testing.assert_allclose(q.layers[0].cluster_size[...], ref.layers[0].cluster_size[...],
                             atol=1e-6)
  np.testing.assert_allclose(q.layers[0].codebook[...], ref.layers[0].codebook[...], atol=1e-6)
  assert float(q.layers[0].code_stats[...].sum()) == 2 * 18


def test_projection_gradients_and_registry():
  q = build_quantizer("rvq", dim=8, codebook_size=16, depth=2, code_dim=4, beta=0.5,
                      rngs=nnx.Rngs(1))
  assert QUANTIZERS["rvq"] is ResidualVectorQuantizer and q.project_in is not None
  assert q.ids_per_token == 2 and q.layer(1).beta == 0.5
  z = _z((2, 3, 8), 3)
  grads = nnx.grad(lambda m: jnp.sum(m(z)[0] ** 2) + m(z)[1]["loss"])(q)
  assert float(jnp.abs(grads.project_in.kernel[...]).sum()) > 0
  assert float(jnp.abs(grads.layers[1].codebook[...]).sum()) > 0
  zq, _ = q(z.astype(jnp.bfloat16))
  assert zq.dtype == jnp.bfloat16


def test_bad_input():
  with pytest.raises(ValueError, match="depth must be >= 1"):
    ResidualVectorQuantizer(8, 4, depth=0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="dropout_cutoff must be in"):
    ResidualVectorQuantizer(8, 4, depth=2, dropout_cutoff=2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_heads"):
    ResidualVectorQuantizer(8, 4, depth=2, num_heads=2, rngs=nnx.Rngs(0))
  q = _rvq()
  with pytest.raises(ValueError, match=r"depth must be an int in \[1, 3\]"):
    q(_z((2, 4)), depth=4)
  with pytest.raises(ValueError, match=r"ids must lie in \[-1, 16\)"):
    q.lookup(jnp.asarray([[1, 16, 0]]))
  with pytest.raises(ValueError, match=r"1 <= k <= 3"):
    q.lookup(jnp.zeros((2, 4), jnp.int32))
  with pytest.raises(ValueError, match=r"z must have shape"):
    q(_z((2, 5)))
