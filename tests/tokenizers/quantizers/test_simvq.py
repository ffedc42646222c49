"""SimVQ: implicit codebook F W, gradients to W only, lookups, training, errors."""
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtok.tokenizers.quantizers import QUANTIZERS, FrozenCodebook, SimVQ, build_quantizer


def _z(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def test_nearest_implicit_code_and_lookup():
  q = SimVQ(32, 6, frozen_dim=4, rngs=nnx.Rngs(0))
  assert isinstance(q.frozen_codebook, FrozenCodebook) and q.frozen_codebook[...].shape == (32, 4)
  z = _z((2, 7, 6))
  zq, aux = q(z, train=True)
  cb = np.asarray(q.frozen_codebook[...]) @ np.asarray(q.code_transform.kernel[...])
  np.testing.assert_allclose(q.codebook(), cb, atol=1e-6)
  flat = np.asarray(z).reshape(-1, 6)
  want = np.argmin(((flat[:, None] - cb[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(np.asarray(aux["ids"]).reshape(-1), want)
  np.testing.assert_allclose(np.asarray(zq).reshape(-1, 6), cb[want], atol=1e-5)
  np.testing.assert_allclose(q.lookup(aux["ids"]), aux["codes"], atol=1e-6)
  mse = np.mean((cb[want] - flat) ** 2)
  np.testing.assert_allclose(aux["loss"], 1.25 * mse, rtol=1e-5)
  assert float(q.running_stats()["usage"]) > 0 and int(q.stats_steps[...]) == 1


def test_training_moves_the_map_not_the_frozen_codebook():
  q = build_quantizer("simvq", dim=4, codebook_size=16, beta=0.25, rngs=nnx.Rngs(0))
  assert QUANTIZERS["simvq"] is SimVQ and isinstance(q, SimVQ)
  frozen = np.asarray(q.frozen_codebook[...]).copy()
  opt = nnx.Optimizer(q, optax.adam(0.05), wrt=nnx.Param)
  z = _z((64, 4), 1) * 2.0

  @nnx.jit
  def step(q, opt):
    loss, grads = nnx.value_and_grad(lambda m: m(z)[1]["loss"])(q)
    opt.update(q, grads)
    return loss

  losses = [float(step(q, opt)) for _ in range(30)]
  assert losses[-1] < 0.75 * losses[0]
  np.testing.assert_array_equal(q.frozen_codebook[...], frozen)


def test_bad_input():
  with pytest.raises(ValueError, match="num_codes must be >= 1"):
    SimVQ(0, 4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="frozen_dim must be >= 1"):
    SimVQ(8, 4, frozen_dim=0, rngs=nnx.Rngs(0))
  q = SimVQ(8, 4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"z must have shape \[\.\.\., 4\]"):
    q(_z((3, 5)))
  with pytest.raises(ValueError, match=r"ids must lie in \[0, 8\)"):
    q.lookup(jnp.asarray([8]))
