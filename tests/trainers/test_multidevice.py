"""8 simulated devices (data and data x fsdp meshes) train exactly like 1 device, for every
family's smoke model (TiTok, FlexTok's rectified flow, FQGAN with its semantic teacher)."""
import jax
import numpy as np
import pytest

from jaxtok.parallel import MeshConfig
from jaxtok.trainers.train import Experiment
from tests.trainers.common import fixed_batches, small_config

STEPS = 3


def _batches(config):
  return fixed_batches(STEPS, size=config.model.image_size)


def run_steps(config, devices, batches):
  """(experiment, losses, params, EMA params, initial params) after one step per batch."""
  exp = Experiment(config, devices)
  state = exp.init_state()
  init = jax.device_get(state.params)
  losses = []
  for b in batches:
    state, m = exp.step(state, exp.global_batch(b))
    losses.append(float(m["loss/total_loss"]))
  return exp, losses, jax.device_get(state.params), jax.device_get(state.ema_params), init


# FQGAN (conv model + Inception teacher): ~3 min on 2 cores, so in the slow set.
@pytest.fixture(scope="module",
                params=["titok", "flextok", pytest.param("fqgan", marks=pytest.mark.slow)])
def one_device(request):
  assert jax.device_count() == 8, "conftest forces 8 host devices"
  config = small_config(request.param)
  return request.param, run_steps(config, jax.devices()[:1], _batches(config))


@pytest.mark.parametrize("mesh", [MeshConfig(data=8), MeshConfig(data=4, fsdp=2,
                                                                  fsdp_min_size=0)],
                         ids=["data8", "data4_fsdp2"])
def test_eight_devices_match_one(one_device, mesh):
  family, reference = one_device
  config = small_config(family)
  config.mesh = mesh
  exp, losses, params, ema, init = run_steps(config, None, _batches(config))
  assert exp.mesh.size == 8
  if mesh.fsdp > 1:  # Parameters really are split over the fsdp axis.
    specs = [s.spec for s in jax.tree_util.tree_leaves(exp.state_shardings.params)]
    assert any("fsdp" in tuple(s) for s in specs)
  _, ref_losses, ref_params, ref_ema, _ = reference
  np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
  # It trains: the weights move, and a deterministic objective falls (a rectified-flow loss
  # draws new timesteps and noise every step, so 3 of its values need not fall).
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(params),
                                                      jax.tree_util.tree_leaves(init)))
  if family != "flextok":
    assert losses[-1] < losses[0]
  for got, want in ((params, ref_params), (ema, ref_ema)):
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got),
                            jax.tree_util.tree_leaves(want)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5, err_msg=jax.tree_util.keystr(path))
