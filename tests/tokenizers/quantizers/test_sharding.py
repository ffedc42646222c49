"""Under jax.jit on an 8-device mesh with the batch sharded on "data", every output, loss,
gradient, statistic and in-place state update equals the single-device result."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtok.tokenizers.quantizers import (
  FactorizedVectorQuantizer,
  FiniteScalarQuantizer,
  VectorQuantizer,
)

B, T = 8, 32  # 256 tokens; chunk_tokens=64 gives 4 chunks of 64 (8 per device).

CASES = {
    "vq_l2_grad_restart_onehot": lambda: VectorQuantizer(
        64, 8, dead_code_threshold=0.9, chunk_tokens=64, lookup="onehot", rngs=nnx.Rngs(0)),
    "vq_cosine_ema_heads_proj_rot": lambda: VectorQuantizer(
        32, 16, code_dim=4, num_heads=2, distance="cosine", update="ema", ema_decay=0.9,
        rotation_trick=True, dead_code_threshold=0.5, entropy_loss_weight=0.1,
        rngs=nnx.Rngs(1)),
    "factorized_3": lambda: FactorizedVectorQuantizer(
        64, 16, num_factors=3, code_dim=8, entropy_loss_weight=0.03, chunk_tokens=64,
        rngs=nnx.Rngs(2)),
    "fsq": lambda: FiniteScalarQuantizer([8, 5, 5, 5], dim=16, rngs=nnx.Rngs(3)),
}


def _step_fn(model):
  """A functional train step: merge once, nnx.value_and_grad over the Params (the in-place
  statistics / EMA / restart updates of the other variables propagate out), split again."""
  graphdef, state = nnx.split(model)

  def step(state, z):
    m = nnx.merge(graphdef, state)

    def loss_fn(m):
      out, aux = m(z, train=True)
      return aux["loss"] + jnp.mean(jnp.square(out - 0.1)), (out, aux)

    (total, (out, aux)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(m)
    return total, out, aux, nnx.state(m), grads

  return step, state


def _compare(a, b, atol=1e-6):
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    if np.issubdtype(x.dtype, np.floating):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=atol)
    else:
      np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", list(CASES))
def test_sharded_equals_single_device(name):
  assert jax.device_count() == 8, "tests/conftest.py must force 8 host devices"
  model = CASES[name]()
  dim = model.dim
  z = jax.random.normal(jax.random.key(7), (B, T, dim), jnp.float32)
  step, state = _step_fn(model)

  single = jax.jit(step)(state, z)

  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  repl = NamedSharding(mesh, P())
  data = NamedSharding(mesh, P("data"))
  z_sharded = jax.device_put(z, data)
  assert len(z_sharded.sharding.device_set) == 8
  sharded = jax.jit(step, in_shardings=(repl, data))(jax.device_put(state, repl), z_sharded)

  # Values to float32 rounding; gradients within the fixtures' float32 gradient tolerance
  # (the entropy loss's 1/T = 100 amplifies reduction-order differences).
  _compare(single[:4], sharded[:4])
  _compare(single[4], sharded[4], atol=2e-5)
  # The step did train: statistics moved, and gradients are not all zero.
  new_state = single[3]
  stats = [v for path, v in nnx.to_flat_state(new_state) if "code_stats" in path]
  assert stats and all(float(np.asarray(s[...]).sum()) == B * T * np.asarray(s[...]).shape[0]
                       for s in stats)
  assert any(float(jnp.abs(g[...]).max()) > 0 for _, g in nnx.to_flat_state(single[4]))
  # The per-token outputs stay sharded along the batch.
  ids = sharded[2]["ids"]
  assert ids.sharding.spec[0] == "data" or not ids.sharding.is_fully_replicated
