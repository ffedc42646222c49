"""The diagonal-Gaussian bottleneck (VAE tokenizers) and `build_quantizer`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.tokenizers.quantizers import QUANTIZERS, GaussianQuantizer, build_quantizer


def test_gaussian_mean_sample_and_kl():
  q = build_quantizer("gaussian", dim=3, rngs=nnx.Rngs(0))
  assert isinstance(q, GaussianQuantizer) and q.input_dim == 6
  z = jax.random.normal(jax.random.key(0), (2, 4, 6), jnp.float32)
  mean, logvar = np.asarray(z[..., :3]), np.asarray(z[..., 3:])
  zq, aux = q(z)
  np.testing.assert_array_equal(np.asarray(zq), mean)
  want = np.mean(0.5 * np.sum(mean ** 2 + np.exp(logvar) - 1 - logvar, axis=(1, 2)))
  np.testing.assert_allclose(float(aux["kl_loss"]), want, rtol=1e-5)
  assert float(aux["loss"]) == 0.0 and aux["stats"] == {}
  sample, _ = q(z, train=True, rngs=jax.random.key(1))
  assert sample.shape == (2, 4, 3) and float(jnp.abs(sample - zq).max()) > 0
  with pytest.raises(ValueError, match="rngs"):
    q(z, train=True)
  with pytest.raises(ValueError, match="z must have shape"):
    q(z[..., :5])
  with pytest.raises(ValueError, match="continuous tokens"):
    q.lookup(jnp.zeros((2, 4), jnp.int32))


def test_build_quantizer_names():
  for name in QUANTIZERS:
    kw = {"levels": (4, 4)} if name == "fsq" else {}
    q = build_quantizer(name, dim=4, codebook_size=8, num_factors=2, rngs=nnx.Rngs(0), **kw)
    assert isinstance(q, QUANTIZERS[name])
  with pytest.raises(ValueError, match=r"quantizer: expected one of"):
    build_quantizer("nope", dim=4, rngs=nnx.Rngs(0))
