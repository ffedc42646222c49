"""The GAN as an optional sub-tree of the train state (`TrainState.gan`, a `GanState`)."""
import jax
import numpy as np

from jaxtok.trainers import checkpoint as ckpt_lib
from jaxtok.trainers import state as state_lib
from jaxtok.trainers.train import Experiment
from tests.trainers.common import fixed_batches, small_config


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b), strict=True))


def test_gan_sub_tree_waits_for_start_step_moves_then_checkpoints(tmp_path):
  config = small_config()
  config.loss.gan_weight, config.loss.gan_start_step = 0.1, 1
  config.loss.lecam_weight = 0.001
  exp = Experiment(config, jax.devices()[:1])
  state = exp.init_state()
  assert isinstance(state.gan, state_lib.GanState)
  assert set(state.gan.lecam) == {"real", "fake"}
  start = jax.device_get(state.gan)
  batches = [exp.global_batch(b) for b in fixed_batches(2)]
  state, m0 = exp.step(state, batches[0])  # Step 0 < gan_start_step: the disc holds still.
  assert _same(state.gan, start)
  assert "disc/discriminator_loss" in jax.device_get(m0)
  state, _ = exp.step(state, batches[1])  # Step 1: it moves, and so do the LeCam EMAs.
  moved = jax.device_get(state.gan)
  assert not np.array_equal(_leaves(moved.params)[0], _leaves(start.params)[0])
  assert float(moved.lecam["real"]) != float(start.lecam["real"])
  ck = ckpt_lib.Checkpointer(tmp_path, keep=1)
  ck.save(2, state)
  ck.wait()
  step, restored = ck.restore_latest(exp.abstract_for_restore())
  ck.close()
  assert step == 2 and isinstance(restored.gan, state_lib.GanState)
  assert _same(restored.gan, moved) and _same(restored.params, state.params)
