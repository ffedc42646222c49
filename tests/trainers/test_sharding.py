"""8 simulated devices (data and data x fsdp meshes) train exactly like 1 device."""
import jax
import numpy as np
import pytest

from jaxtok.trainers import sharding as shd
from jaxtok.trainers.config import MeshConfig
from jaxtok.trainers.train import Experiment
from tests.trainers.common import fixed_batches, small_config

STEPS = 3


def run_steps(config, devices, batches):
  exp = Experiment(config, devices)
  state = exp.init_state()
  losses = []
  for b in batches:
    state, m = exp.step(state, exp.global_batch(b))
    losses.append(float(m["loss/total_loss"]))
  return exp, losses, jax.device_get(state.params), jax.device_get(state.ema_params)


@pytest.fixture(scope="module")
def one_device():
  assert jax.device_count() == 8, "conftest forces 8 host devices"
  return run_steps(small_config(), jax.devices()[:1], fixed_batches(STEPS))


@pytest.mark.parametrize("mesh", [MeshConfig(data=8), MeshConfig(data=4, fsdp=2,
                                                                  fsdp_min_size=0)],
                         ids=["data8", "data4_fsdp2"])
def test_eight_devices_match_one(one_device, mesh):
  config = small_config()
  config.mesh = mesh
  exp, losses, params, ema = run_steps(config, None, fixed_batches(STEPS))
  assert exp.mesh.size == 8
  if mesh.fsdp > 1:  # Parameters really are split over the fsdp axis.
    specs = [s.spec for s in jax.tree_util.tree_leaves(exp.state_shardings.params)]
    assert any("fsdp" in tuple(s) for s in specs)
  _, ref_losses, ref_params, ref_ema = one_device
  np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
  assert losses[-1] < losses[0]  # It trains.
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref_params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)
  for a, b in zip(jax.tree_util.tree_leaves(ema), jax.tree_util.tree_leaves(ref_ema)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)


def test_mesh_and_batch_validation():
  with pytest.raises(ValueError, match="mesh.fsdp"):
    shd.make_mesh(MeshConfig(fsdp=3))
  with pytest.raises(ValueError, match="mesh"):
    shd.make_mesh(MeshConfig(data=3, fsdp=2))
  mesh = shd.make_mesh(MeshConfig())
  with pytest.raises(ValueError, match="batch_size"):
    shd.global_batch_size_check(12, mesh)
  assert shd.leaf_spec((64, 30), 2, 0) == jax.sharding.PartitionSpec("fsdp", None)
  assert shd.leaf_spec((3, 5), 2, 0) == jax.sharding.PartitionSpec()
