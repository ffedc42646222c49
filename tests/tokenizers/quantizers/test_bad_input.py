"""Bad input raises ValueError naming the argument and what was expected."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.tokenizers.quantizers import (
  FactorizedVectorQuantizer,
  FiniteScalarQuantizer,
  VectorQuantizer,
)


def _vq(**kw):
  return VectorQuantizer(16, 8, rngs=nnx.Rngs(0), **kw)


@pytest.mark.parametrize("z, match", [
    (jnp.zeros((8,)), r"z must have shape \[\.\.\., 8\].*got shape \(8,\)"),
    (jnp.zeros((2, 4, 7)), r"z must have shape \[\.\.\., 8\].*got shape \(2, 4, 7\)"),
    (jnp.zeros((2, 4, 8), jnp.int32), r"z must be a floating-point array \[\.\.\., 8\].*int32"),
    (jnp.zeros((2, 4, 8), jnp.uint8), r"z must be a floating-point.*uint8"),
    (jnp.full((2, 4, 8), jnp.nan), r"z \[\.\.\., 8\] must be finite"),
    (np.full((1, 8), np.inf, np.float32), r"z \[\.\.\., 8\] must be finite"),
    ([[0.0] * 8], r"z must be a float array"),
])
def test_vq_bad_z(z, match):
  with pytest.raises(ValueError, match=match):
    _vq()(z)


@pytest.mark.parametrize("ids, match", [
    (jnp.asarray([[0, 16]]), r"ids must lie in \[0, 16\), got values in \[0, 16\]"),
    (jnp.asarray([[-1, 3]]), r"ids must lie in \[0, 16\)"),
    (jnp.asarray([[0.0, 1.0]]), r"ids must be an integer array.*float32"),
])
def test_vq_bad_ids(ids, match):
  with pytest.raises(ValueError, match=match):
    _vq().lookup(ids)


def test_vq_heads_ids_need_head_axis():
  vq = VectorQuantizer(16, 8, num_heads=2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"ids must have shape \[\.\.\., 2\], got shape \(3, 5\)"):
    vq.lookup(jnp.zeros((3, 5), jnp.int32))


@pytest.mark.parametrize("kw, match", [
    (dict(distance="dot"), r"distance must be one of \('l2', 'cosine'\), got 'dot'"),
    (dict(update="adam"), r"update must be one of"),
    (dict(num_heads=3), r"dim must be divisible by num_heads"),
    (dict(ema_decay=1.0), r"ema_decay must be in \[0, 1\)"),
])
def test_vq_bad_constructor(kw, match):
  with pytest.raises(ValueError, match=match):
    _vq(**kw)


def test_value_checks_are_skipped_under_jit_but_shape_checks_are_not():
  vq = _vq()
  out, _ = nnx.jit(lambda m, z: m(z))(vq, jnp.full((1, 2, 8), jnp.nan))  # tracer: no value check
  assert out.shape == (1, 2, 8)
  with pytest.raises(ValueError, match=r"z must have shape \[\.\.\., 8\]"):
    nnx.jit(lambda m, z: m(z))(vq, jnp.zeros((1, 2, 4)))


def test_fsq_bad_input():
  fsq = FiniteScalarQuantizer([8, 5, 5, 5])
  with pytest.raises(ValueError, match=r"z must have shape \[\.\.\., 4\].*got shape \(2, 6\)"):
    fsq(jnp.zeros((2, 6)))
  with pytest.raises(ValueError, match=r"z must be a floating-point array \[\.\.\., 4\]"):
    fsq(jnp.zeros((2, 4), jnp.int32))
  with pytest.raises(ValueError, match=r"ids must lie in \[0, 1000\), got values in \[0, 1000\]"):
    fsq.lookup(jnp.asarray([0, 1000]))
  with pytest.raises(ValueError, match=r"levels must be a non-empty list of ints >= 2"):
    FiniteScalarQuantizer([8, 1])
  with pytest.raises(ValueError, match=r"rngs is required"):
    FiniteScalarQuantizer([8, 5], dim=16)


def test_factorized_bad_input():
  fq = FactorizedVectorQuantizer(16, 12, num_factors=2, code_dim=4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"sequence of 2 of them, got a sequence of 3"):
    fq([jnp.zeros((1, 12))] * 3)
  with pytest.raises(ValueError, match=r"z\[1\] must have shape \[\.\.\., 12\]"):
    fq([jnp.zeros((1, 12)), jnp.zeros((1, 10))])
  with pytest.raises(ValueError, match=r"ids must have shape \[\.\.\., 2\], got shape \(4, 3\)"):
    fq.lookup(jnp.zeros((4, 3), jnp.int32))
  with pytest.raises(ValueError, match=r"ids must lie in \[0, 16\)"):
    fq.lookup(jnp.full((4, 2), 16, jnp.int32))
  with pytest.raises(ValueError, match=r"num_codes must have num_factors=2 entries"):
    FactorizedVectorQuantizer((16, 16, 16), 12, num_factors=2, rngs=nnx.Rngs(0))
