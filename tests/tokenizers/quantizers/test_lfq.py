"""LookupFreeQuantizer / BinarySphericalQuantizer: ids as bits, codes, losses, stats, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.tokenizers.quantizers import (
    QUANTIZERS,
    BinarySphericalQuantizer,
    LookupFreeQuantizer,
    build_quantizer,
)
from jaxtok.tokenizers.quantizers.lfq import (
    lfq_codes_from_bits,
    lfq_entropy_terms,
    lfq_ids_to_bits,
)


def _z(shape, seed=0, scale=1.0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, jnp.float32)


def test_ids_are_sign_bits_most_significant_first():
  q = LookupFreeQuantizer(4)
  assert q.num_codes == 16 and q.radix == (2, 2, 2, 2) and q.project_in is None
  z = jnp.asarray([[0.3, -0.1, -2.0, 0.5], [-1.0, -1.0, -1.0, 1e-3]])
  zq, aux = q(z)
  np.testing.assert_array_equal(aux["ids"], [0b1001, 0b0001])
  np.testing.assert_array_equal(zq, [[1, -1, -1, 1], [-1, -1, -1, 1]])
  np.testing.assert_array_equal(q.lookup(aux["ids"]), aux["codes"])
  np.testing.assert_array_equal(q.lookup(jnp.arange(16))[5], [-1, 1, -1, 1])


def test_bsq_codes_lie_on_the_sphere_and_invert():
  q = BinarySphericalQuantizer(16, 2**6, codebook_scale=2.0, rngs=nnx.Rngs(0))
  assert q.spherical and q.project_in is not None and q.num_bits == 6
  z = _z((3, 5, 16))
  _, aux = q(z)
  assert aux["ids"].shape == (3, 5)
  codes = jax.vmap(lambda b: q.lookup(b))(aux["ids"])  # the out-projected codes
  np.testing.assert_allclose(codes, aux["codes"], atol=1e-6)
  # Inside the projections: every code has norm s = 2, entries +-2/sqrt(6).
  raw = lfq_codes_from_bits(lfq_ids_to_bits(jnp.arange(64), 6), 2.0, True)
  np.testing.assert_allclose(jnp.linalg.norm(raw, axis=-1), 2.0, atol=1e-6)
  np.testing.assert_allclose(jnp.abs(raw), 2.0 / np.sqrt(6), atol=1e-6)


def test_groups_give_a_trailing_id_axis_and_stats():
  q = LookupFreeQuantizer(12, 2**3, num_codebooks=4)  # 4 groups of 3 bits, no projection
  assert q.project_in is None and q.radix is None and q.ids_per_token == 4
  z = _z((2, 64, 12), 1)
  zq, aux = nnx.jit(lambda m, z: m(z, train=True))(q, z)
  assert aux["ids"].shape == (2, 64, 4) and zq.shape == z.shape
  np.testing.assert_array_equal(q.lookup(aux["ids"]), aux["codes"])
  assert 0 < float(aux["stats"]["usage"]) <= 1
  run = q.running_stats()
  assert int(q.stats_steps[...]) == 1 and float(q.code_stats[...].sum()) == 2 * 64 * 4
  # 128 tokens over 8 codes per group: every code used in every group.
  assert float(run["usage"]) == 1.0 and float(run["dead_codes"]) == 0
  q.reset_stats()
  assert float(q.code_stats[...].sum()) == 0


def test_losses_match_their_formulas_and_train_the_input():
  q = LookupFreeQuantizer(6, entropy_loss_weight=0.2, commitment_loss_weight=0.5,
                          diversity_gamma=1.5, inv_temperature=3.0)
  z = _z((40, 6), 2, 0.4)
  _, aux = q(z)
  codes = np.where(np.asarray(z) > 0, 1.0, -1.0)
  np.testing.assert_allclose(aux["commitment_loss"], 0.5 * np.mean((np.asarray(z) - codes) ** 2),
                             rtol=1e-5)
  # Brute force over the 64 codes in float64.
  allc = np.array([[1.0 if (k >> (5 - i)) & 1 else -1.0 for i in range(6)] for k in range(64)])
  logits = 2 * 3.0 * np.asarray(z, np.float64) @ allc.T
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  ent = lambda p: -(p * np.log(np.maximum(p, 1e-5))).sum(-1)
  h_s, h_b = ent(p).mean(), ent(p.mean(0))
  np.testing.assert_allclose(aux["per_sample_entropy"], h_s, rtol=1e-5)
  np.testing.assert_allclose(aux["batch_entropy"], h_b, rtol=1e-5)
  np.testing.assert_allclose(aux["entropy_loss"], 0.2 * (h_s - 1.5 * h_b), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(aux["loss"], aux["entropy_loss"] + aux["commitment_loss"])
  g = jax.grad(lambda z: q(z)[1]["loss"])(z)
  assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).sum()) > 0


def test_factorized_entropy_is_exact_per_sample_and_bounds_the_batch_entropy():
  x = _z((50, 2, 5), 3, 0.3)
  for spherical in (False, True):
    full = lfq_entropy_terms(x, 1.0, spherical, 1.0, "full")
    fac = lfq_entropy_terms(x, 1.0, spherical, 1.0, "factorized")
    # Small logits: no probability reaches the 1e-5 clamp, so the product form is exact.
    np.testing.assert_allclose(fac[0], full[0], rtol=1e-5)
    assert float(fac[1]) >= float(full[1]) - 1e-5
  q = LookupFreeQuantizer(24, entropy_mode="factorized")  # 2**24 codes: per-bit statistics
  _, aux = nnx.jit(lambda m, z: m(z, train=True))(q, _z((8, 24), 4))
  assert np.isfinite(float(aux["loss"])) and q.code_stats[...].shape == (24, 2)
  assert float(q.running_stats()["usage"]) > 0


def test_registry_build_and_dtype():
  assert QUANTIZERS["lfq"] is LookupFreeQuantizer and QUANTIZERS["bsq"] is BinarySphericalQuantizer
  q = build_quantizer("bsq", dim=8, codebook_size=2**4, rngs=nnx.Rngs(0))
  assert isinstance(q, BinarySphericalQuantizer) and q.spherical and q.num_codes == 16
  zq, aux = q(_z((2, 3, 8)).astype(jnp.bfloat16))
  assert zq.dtype == jnp.bfloat16 and aux["loss"].dtype == jnp.float32


@pytest.mark.parametrize("kwargs, match", [
    (dict(dim=8, codebook_size=12), "codebook_size must be a power of two"),
    (dict(dim=8, codebook_size=2**20), "entropy_mode: 'full' takes codebook_size <= 2\\*\\*16"),
    (dict(dim=8, entropy_mode="soft"), "entropy_mode must be one of"),
    (dict(dim=7, num_codebooks=2), "dim must be divisible by num_codebooks"),
    (dict(dim=8, codebook_size=2**3), "rngs is required"),
    (dict(dim=8, inv_temperature=0.0), "inv_temperature must be > 0"),
])
def test_bad_construction(kwargs, match):
  with pytest.raises(ValueError, match=match):
    LookupFreeQuantizer(**kwargs)


def test_bad_call_and_ids():
  q = LookupFreeQuantizer(4)
  with pytest.raises(ValueError, match=r"z must have shape \[\.\.\., 4\]"):
    q(_z((2, 5)))
  with pytest.raises(ValueError, match=r"ids must lie in \[0, 16\)"):
    q.lookup(jnp.asarray([3, 16]))
  g = LookupFreeQuantizer(8, 16, num_codebooks=2)
  with pytest.raises(ValueError, match=r"ids must have shape \[\.\.\., 2\]"):
    g.lookup(jnp.asarray([1, 2, 3]))
