"""FlexTok's parts against plain numpy: the shared keep-length sampler, flow math, APG
branches the fixture does not reach, masks and adaLN blocks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.tokenizers import flow, layers, token_drop


@pytest.mark.parametrize("distribution,support", [
    ("uniform", set(range(1, 33))), ("pow2", {1, 2, 4, 8, 16, 32}),
    ("uniform_pow2", {1, 2, 4, 8, 16, 32})])
def test_keep_lengths_distributions(distribution, support):
  k = np.asarray(token_drop.keep_lengths(jax.random.key(0), 16000, 32, "per_example",
                                         distribution))
  assert k.dtype == np.int32 and set(np.unique(k)) == support
  freq = {v: np.mean(k == v) for v in support}
  if distribution == "uniform_pow2":  # P(k = 2^j) = (# of n in (2^(j-1), 2^j]) / 32
    for v in support:
      assert abs(freq[v] - max(v // 2, 1) / 32) < 0.015
  else:
    for v in support:
      assert abs(freq[v] - 1 / len(support)) < 0.015
  step = np.asarray(token_drop.keep_lengths(jax.random.key(1), 8, 32, "per_step", distribution))
  assert len(set(step)) == 1
  # Not a power of two: uniform_pow2 caps at K; pow2 refuses.
  capped = np.asarray(token_drop.keep_lengths(jax.random.key(2), 4000, 6, "per_example",
                                              "uniform_pow2"))
  assert set(np.unique(capped)) == {1, 2, 4, 6}
  with pytest.raises(ValueError, match="power of two"):
    token_drop.keep_lengths(jax.random.key(0), 2, 6, "per_example", "pow2")
  with pytest.raises(ValueError, match="distribution"):
    token_drop.keep_lengths(jax.random.key(0), 2, 8, "per_example", "normal")


def _apg_numpy(vc, vu, buf, s, momentum, eta, thr):
  buf = (vc - vu) + momentum * buf
  out = []
  for i in range(vc.shape[0]):
    n = np.linalg.norm(buf[i])
    d = buf[i] * min(1.0, thr / n)
    u = vc[i] / max(np.linalg.norm(vc[i]), 1e-12)
    par = np.sum(d * u) * u
    out.append(vc[i] + (s - 1) * ((d - par) + eta * par))
  return np.stack(out), buf


def test_apg_both_clip_branches_and_eta():
  rng = np.random.default_rng(0)
  vc, vu = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3))
  vu[1] = vc[1] + 0.01 * rng.normal(size=(4, 4, 3))  # sample 1: ||d|| < threshold
  buf = rng.normal(size=vc.shape) * 0.001
  for eta in (0.0, 0.3):
    want, want_buf = _apg_numpy(vc, vu, buf, 7.5, -0.5, eta, 2.5)
    got, got_buf = flow.apg(jnp.asarray(vc, jnp.float32), jnp.asarray(vu, jnp.float32),
                            jnp.asarray(buf, jnp.float32), 7.5, eta=eta)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got_buf), want_buf, atol=1e-6)
  np.testing.assert_allclose(np.asarray(flow.cfg(jnp.asarray(vc), jnp.asarray(vu), 3.0)),
                             vu + 3.0 * (vc - vu), atol=1e-6)


def test_euler_exact_on_straight_paths_and_guidance_off_at_scale_one():
  x0 = jax.random.normal(jax.random.key(0), (2, 3, 3, 2))
  eps = jax.random.normal(jax.random.key(1), x0.shape)
  # The true velocity of the straight path through (x0, eps) is constant: Euler is exact.
  vel = lambda x, t: (flow.velocity_target(x0, eps), None)
  x, traj = flow.euler_sample(vel, eps, 5, return_trajectory=True)
  np.testing.assert_allclose(np.asarray(x), np.asarray(x0), atol=1e-5)
  assert traj.shape == (5,) + x0.shape
  np.testing.assert_allclose(np.asarray(traj[2]), np.asarray(flow.add_noise(
      x0, eps, jnp.full((2,), 0.6))), atol=1e-5)
  both = lambda x, t: (flow.velocity_target(x0, eps), jnp.zeros_like(x))
  np.testing.assert_allclose(np.asarray(flow.euler_sample(both, eps, 5, guidance="apg",
                                                          scale=1.0)), np.asarray(x), atol=0)
  t = flow.sample_timesteps(jax.random.key(3), 20000)
  np.testing.assert_allclose(float(jnp.mean(jax.scipy.special.logit(t))), 0.0, atol=0.03)


def test_causal_last_mask_and_adaln_block():
  m = np.asarray(layers.attention_mask("causal_last", 3, 4))
  q, k = np.meshgrid(np.arange(7), np.arange(7), indexing="ij")
  np.testing.assert_array_equal(m, (k < 3) | ((k >= 3) & (k <= q)))
  assert layers.attention_mask("full", 3, 4) is None
  assert layers.swiglu_hidden(64, 4.0) == 170
  blk = layers.AdaLNBlock(8, 2, cond_width=5, num_subseqs=2, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 6, 8))
  c = jax.random.normal(jax.random.key(1), (2, 5))
  # adaLN-zero: the zero-initialised modulation makes the block the identity.
  np.testing.assert_allclose(np.asarray(blk(x, cond=c, sizes=(4, 2))), np.asarray(x), atol=0)
  blk.adaLN_modulation.bias[...] = jax.random.normal(jax.random.key(2), (2 * 6 * 8,))
  mod = blk.modulation(c, (4, 2))
  bias = np.asarray(blk.adaLN_modulation.bias[...]).reshape(2, 6, 8)
  np.testing.assert_allclose(np.asarray(mod["gate_msa"][:, :4]),
                             np.broadcast_to(bias[0, 0], (2, 4, 8)))
  np.testing.assert_allclose(np.asarray(mod["scale_mlp"][:, 4:]),
                             np.broadcast_to(bias[1, 5], (2, 2, 8)))
