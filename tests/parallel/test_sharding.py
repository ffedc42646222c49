"""Tests of jaxtok.parallel.sharding: batch, replicated and FSDP state shardings."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxtok import parallel


def test_batch_sharding_splits_the_leading_axis_over_every_device():
  mesh = parallel.make_mesh(parallel.MeshConfig(fsdp=2))
  x = jax.device_put(np.arange(16 * 3).reshape(16, 3), parallel.batch_sharding(mesh))
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start)
  assert len(shards) == 8 and all(s.data.shape == (2, 3) for s in shards)
  np.testing.assert_array_equal(np.concatenate([s.data for s in shards]), np.asarray(x))
  y = jax.device_put(np.ones(5), parallel.replicated(mesh))
  assert all(s.data.shape == (5,) for s in y.addressable_shards)


def test_leaf_spec_splits_the_largest_divisible_dimension():
  assert parallel.leaf_spec((64, 30), 2, 0) == P("fsdp", None)
  assert parallel.leaf_spec((30, 64), 4, 0) == P(None, "fsdp")  # 30 is not divisible by 4.
  assert parallel.leaf_spec((3, 5), 2, 0) == P()  # Nothing divisible: replicated.
  assert parallel.leaf_spec((64, 30), 2, 64 * 30 + 1) == P()  # Too small: replicated.
  assert parallel.leaf_spec((64, 30), 1, 0) == P()  # No fsdp axis.
  assert parallel.leaf_spec((), 2, 0) == P()


def test_state_shardings_follow_the_mesh():
  tree = {"w": jax.ShapeDtypeStruct((64, 32), jnp.float32), "b": jnp.zeros(32)}
  fsdp = parallel.state_shardings(tree, parallel.make_mesh(parallel.MeshConfig(fsdp=2)),
                                  min_size=64)
  assert fsdp["w"].spec == P("fsdp", None) and fsdp["b"].spec == P()
  data_only = parallel.state_shardings(tree, parallel.make_mesh(parallel.MeshConfig()))
  assert data_only["w"].spec == P() and data_only["b"].spec == P()


def test_global_batch_size_check():
  mesh = parallel.make_mesh(parallel.MeshConfig())
  assert parallel.global_batch_size_check(16, mesh) == 16  # One process: all of it is local.
  with pytest.raises(ValueError, match="batch_size: expected a multiple of the 8 mesh devices"):
    parallel.global_batch_size_check(12, mesh)
