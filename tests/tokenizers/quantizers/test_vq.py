"""Behaviour of VectorQuantizer and the core beyond the parity fixtures."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtok.tokenizers.quantizers import QUANTIZERS, CodebookStats, EmaState, VectorQuantizer, core


@nnx.jit(static_argnames="train")
def _call(m, z, train=False):
  return m(z, train=train)


def _z(shape, seed=0):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def test_registry():
  assert set(QUANTIZERS) == {"vq", "factorized_vq", "fsq", "gaussian", "lfq", "bsq", "rvq", "simvq"}
  assert QUANTIZERS["vq"] is VectorQuantizer


def test_contract_shapes_and_nearest_code():
  vq = VectorQuantizer(16, 4, rngs=nnx.Rngs(0))
  vq.codebook[...] = _z((16, 4), 1)
  z = _z((2, 3, 5, 4))
  zq, aux = _call(vq, z)
  assert zq.shape == z.shape and zq.dtype == z.dtype
  assert aux["ids"].shape == (2, 3, 5) and aux["ids"].dtype == jnp.int32
  for k in ("loss", "commitment_loss", "codebook_loss"):
    assert aux[k].shape == () and aux[k].dtype == jnp.float32
  assert set(aux["stats"]) >= {"usage", "perplexity", "entropy_bits", "dead_codes"}
  # Brute-force nearest neighbour in numpy.
  cb = np.asarray(vq.codebook[...])
  flat = np.asarray(z).reshape(-1, 4)
  want = np.argmin(((flat[:, None] - cb[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(np.asarray(aux["ids"]).reshape(-1), want)
  np.testing.assert_allclose(np.asarray(zq).reshape(-1, 4), cb[want], atol=1e-6)
  # Loss = codebook + beta * commitment, with beta = 0.25 by default.
  mse = float(np.mean((cb[want] - flat) ** 2))
  np.testing.assert_allclose(aux["commitment_loss"], 0.25 * mse, rtol=1e-5)
  np.testing.assert_allclose(aux["codebook_loss"], mse, rtol=1e-5)
  np.testing.assert_allclose(aux["loss"], 1.25 * mse, rtol=1e-5)
  assert vq.num_codes == 16


def test_cosine_titok_convention_and_gradients():
  vq = VectorQuantizer(8, 4, distance="cosine", rngs=nnx.Rngs(0))
  z = _z((3, 6, 4)) * 5.0
  zq, aux = _call(vq, z)
  # Output is the unit-norm code (z' + sg(zq - z'), z' = l2n(z)).
  np.testing.assert_allclose(np.linalg.norm(np.asarray(zq), axis=-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(nnx.jit(lambda m, i: m.lookup(i))(vq, aux["ids"]), zq, atol=1e-6)

  graphdef, params, rest = nnx.split(vq, nnx.Param, ...)

  def loss(params, z):
    m = nnx.merge(graphdef, params, rest)
    out, a = m(z)
    return a["codebook_loss"], (out, a)

  g_cb, g_z = jax.jit(jax.grad(lambda p, z: loss(p, z)[0], argnums=(0, 1)))(params, z)
  # The codebook loss reaches the codebook only.
  assert float(jnp.abs(g_cb["codebook"][...]).max()) > 0
  assert float(jnp.abs(g_z).max()) == 0
  g_z2 = jax.jit(jax.grad(
      lambda z: nnx.merge(graphdef, params, rest)(z)[1]["commitment_loss"]))(z)
  assert float(jnp.abs(g_z2).max()) > 0


def test_chunked_equals_unchunked_with_entropy_and_grads():
  kw = dict(distance="cosine", entropy_loss_weight=0.1)
  full = VectorQuantizer(64, 8, chunk_tokens=0, rngs=nnx.Rngs(0), **kw)
  # 96 tokens -> 4 chunks of 24.
  chunked = VectorQuantizer(64, 8, chunk_tokens=24, rngs=nnx.Rngs(0), **kw)
  assert core.num_chunks(96, 64, 24) == 4
  z = _z((4, 24, 8))

  def run(m):
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)

    def f(params, z):
      out, a = nnx.merge(graphdef, params, rest)(z)
      return a["loss"] + jnp.sum(out * 0.3), (out, a)

    return jax.jit(jax.grad(f, argnums=(0, 1), has_aux=True))(params, z)

  (gp1, gz1), (o1, a1) = run(full)
  (gp2, gz2), (o2, a2) = run(chunked)
  np.testing.assert_array_equal(a1["ids"], a2["ids"])
  np.testing.assert_array_equal(o1, o2)
  for k in ("loss", "entropy_loss", "commitment_loss"):
    np.testing.assert_allclose(a1[k], a2[k], rtol=1e-6, atol=1e-7)
  assert float(jnp.abs(a1["entropy_loss"])) > 0
  # Gradients within the fixtures' float32 gradient tolerance: the entropy term's 1/T = 100
  # amplifies the different summation order of the chunks.
  np.testing.assert_allclose(gz1, gz2, atol=2e-5)
  np.testing.assert_allclose(gp1["codebook"][...], gp2["codebook"][...], atol=2e-5)
  for k in a1["stats"]:
    np.testing.assert_array_equal(a1["stats"][k], a2["stats"][k])


def test_num_chunks_picks_divisors_within_budget():
  assert core.num_chunks(65536, 16384, None) == 128  # 512 x 16384 = 2**23 entries per chunk.
  assert core.num_chunks(100, 10, 0) == 1
  m = core.num_chunks(96, 10, 7)
  assert 96 % m == 0 and 96 // m <= 7


def test_stats_values_and_running_stats():
  vq = VectorQuantizer(4, 2, rngs=nnx.Rngs(0))
  vq.codebook[...] = jnp.asarray([[0, 0], [10, 0], [0, 10], [10, 10]], jnp.float32)
  z = jnp.asarray([[[0, 0], [0.1, 0], [10, 0.2], [9, 0]]], jnp.float32)  # codes 0,0,1,1
  _, aux = _call(vq, z, train=False)
  s = aux["stats"]
  np.testing.assert_allclose(s["usage"], 0.5)
  np.testing.assert_allclose(s["entropy_bits"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(s["perplexity"], 2.0, rtol=1e-6)
  np.testing.assert_allclose(s["dead_codes"], 2.0)
  assert isinstance(vq.code_stats, CodebookStats)
  assert float(vq.code_stats[...].sum()) == 0  # eval mode leaves the statistics alone.
  _call(vq, z, train=True)
  vq(jnp.asarray([[[10, 10]]], jnp.float32), train=True)
  np.testing.assert_array_equal(vq.code_stats[...], [[2, 2, 0, 1]])
  run = vq.running_stats()
  np.testing.assert_allclose(run["usage"], 0.75)
  np.testing.assert_allclose(run["dead_codes"], 1.0)
  vq.reset_stats()
  assert float(vq.code_stats[...].sum()) == 0 and int(vq.stats_steps[...]) == 0


def test_ema_codebook_is_not_a_param_and_moves_toward_data():
  vq = VectorQuantizer(8, 4, update="ema", ema_decay=0.5, rngs=nnx.Rngs(0))
  assert isinstance(vq.codebook, EmaState) and not isinstance(vq.codebook, nnx.Param)
  opt = nnx.Optimizer(vq, optax.adamw(1e-3), wrt=nnx.Param)
  assert not jax.tree.leaves(nnx.state(opt, nnx.OptState)) or True  # builds without error
  assert nnx.state(vq, nnx.Param) == nnx.State({})
  z = _z((2, 16, 4)) + 3.0
  before = np.asarray(vq.codebook[...]).copy()
  _, aux = _call(vq, z, train=True)
  after = np.asarray(vq.codebook[...])
  used = np.unique(np.asarray(aux["ids"]))
  means = np.stack([np.asarray(z).reshape(-1, 4)[np.asarray(aux["ids"]).reshape(-1) == k].mean(0)
                    for k in used])
  # Used codes move toward the mean of their assigned vectors.
  assert (np.linalg.norm(after[used] - means, axis=-1)
          < np.linalg.norm(before[used] - means, axis=-1)).all()
  # The EMA loss is the commitment term only.
  np.testing.assert_allclose(aux["loss"], aux["commitment_loss"])


@pytest.mark.parametrize("update", ["grad", "ema"])
def test_dead_code_restart_is_deterministic_and_resets_ema(update):
  def make(seed):
    return VectorQuantizer(32, 4, update=update, dead_code_threshold=0.95, ema_decay=0.9,
                           rngs=nnx.Rngs(seed))

  # cluster_size starts at 1; an unused code decays to 0.9 < 0.95 and restarts.
  z = _z((2, 32, 4), 3) + 5.0  # far from the uniform(-1/K, 1/K) init: few codes are used.
  a, b, c = make(0), make(0), make(1)
  outs = [_call(m, z, train=True)[1] for m in (a, b, c)]
  dead = np.asarray(outs[0]["restarted"])
  assert dead.sum() >= 28  # one or two codes take every token, the rest restart.
  np.testing.assert_array_equal(a.codebook[...], b.codebook[...])
  assert not np.array_equal(np.asarray(a.codebook[...]), np.asarray(c.codebook[...]))
  cb = np.asarray(a.codebook[...])
  flat = np.asarray(z).reshape(-1, 4)
  for row in np.flatnonzero(dead):
    assert np.isclose(flat, cb[row]).all(-1).any()
  # Distinct batch vectors while there are at least as many tokens as dead codes.
  assert len({tuple(r) for r in cb[dead]}) == dead.sum()
  np.testing.assert_allclose(np.asarray(a.cluster_size[...])[0][dead], 0.95)
  if update == "ema":
    np.testing.assert_allclose(np.asarray(a.embed_avg[...])[0][dead], cb[dead] * 0.95, rtol=1e-6)
  # The next batch now uses the restarted codes.
  _, aux2 = _call(a, z, train=False)
  assert float(aux2["stats"]["usage"]) > float(outs[0]["stats"]["usage"])


def test_heads_and_projection_lookup_round_trip():
  vq = VectorQuantizer(16, 12, code_dim=3, num_heads=2, rngs=nnx.Rngs(0))
  assert vq.project_in is not None and vq.codebook[...].shape == (2, 16, 3)
  z = _z((2, 5, 12))
  zq, aux = _call(vq, z)
  assert aux["ids"].shape == (2, 5, 2)
  np.testing.assert_allclose(vq.lookup(aux["ids"]), aux["codes"], atol=1e-6)
  np.testing.assert_allclose(zq, aux["codes"], atol=1e-5)
  assert "usage/0" in aux["stats"] and "usage/1" in aux["stats"]
  # Heads use separate codebooks: head 1's ids come from codebook[1].
  x = vq.project_in(z.reshape(-1, 12)).reshape(-1, 2, 3)
  cb = np.asarray(vq.codebook[...])
  want = np.argmin(((np.asarray(x)[:, 1, None] - cb[1][None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(np.asarray(aux["ids"])[..., 1].reshape(-1), want)


def test_rotation_trick_forward_value_and_gradient_differs():
  ste = VectorQuantizer(8, 4, rngs=nnx.Rngs(0))
  rot = VectorQuantizer(8, 4, rotation_trick=True, rngs=nnx.Rngs(0))
  rot.codebook[...] = ste.codebook[...] = _z((8, 4), 2)
  z = _z((3, 7, 4))
  (o1, _), (o2, _) = _call(ste, z), _call(rot, z)
  np.testing.assert_allclose(o1, o2, atol=1e-5)
  def grad(m):
    graphdef, state = nnx.split(m)
    return jax.jit(jax.grad(lambda z: jnp.sum(nnx.merge(graphdef, state)(z)[0] ** 3)))(z)

  g1, g2 = grad(ste), grad(rot)
  assert not np.allclose(g1, g2)


def test_bf16_input_keeps_dtype_and_float32_losses():
  vq = VectorQuantizer(32, 8, distance="cosine", rngs=nnx.Rngs(0))
  z = _z((2, 16, 8)).astype(jnp.bfloat16)
  zq, aux = _call(vq, z)
  assert zq.dtype == jnp.bfloat16
  assert aux["loss"].dtype == jnp.float32
  _, aux32 = _call(vq, z.astype(jnp.float32))
  np.testing.assert_array_equal(aux["ids"], aux32["ids"])
  np.testing.assert_allclose(aux["loss"], aux32["loss"], rtol=1e-6)


def test_onehot_and_gather_lookups_agree_including_ema_and_grads():
  def make(lookup):
    return VectorQuantizer(32, 4, update="ema", ema_decay=0.8, chunk_tokens=16, lookup=lookup,
                           rngs=nnx.Rngs(0))

  z = _z((4, 16, 4))
  results = []
  for lookup in ("onehot", "gather"):
    vq = make(lookup)
    graphdef, state = nnx.split(vq)

    @jax.jit
    def step(state, z):
      m = nnx.merge(graphdef, state)  # noqa: B023  (jitted and called in this iteration)
      out, aux = m(z, train=True)  # EMA update of the merged copy.
      gz = jax.grad(lambda z: jnp.sum(nnx.merge(graphdef, state)(z)[0] ** 2))(z)  # noqa: B023
      return out, aux, gz, nnx.state(m)

    results.append(step(state, z))
  (o1, a1, g1, s1), (o2, a2, g2, s2) = results
  np.testing.assert_array_equal(a1["ids"], a2["ids"])
  np.testing.assert_array_equal(o1, o2)
  np.testing.assert_allclose(g1, g2, atol=1e-6)
  for k in a1["stats"]:
    np.testing.assert_array_equal(a1["stats"][k], a2["stats"][k])
  for (p1, v1), (_, v2) in zip(nnx.to_flat_state(s1), nnx.to_flat_state(s2)):
    if "restart" not in str(p1):
      np.testing.assert_allclose(np.asarray(v1[...]), np.asarray(v2[...]), atol=1e-6)
  with pytest.raises(ValueError, match=r"lookup must be one of"):
    make("scatter")
