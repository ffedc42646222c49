"""Orbax checkpointer: keep-N, iterator state, corrupted-newest fallback, resume paths."""
import warnings

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.trainers import checkpoint as ckpt_lib


def _abstract(tree):
  s = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abs_ = jax.eval_shape(lambda: tree)
  return ckpt_lib.abstract_with_shardings(abs_, jax.tree_util.tree_map(lambda _: s, abs_))


def _state(v):
  return {"params": {"w": jnp.full((16, 4), float(v)), "layers": {0: {"b": jnp.arange(3.0) + v}}},
          "step": jnp.asarray(v, jnp.int32), "empty": {}}


def test_keep_n_and_iterator_state(tmp_path):
  it = iter(grain.MapDataset.range(50).shuffle(seed=3).to_iter_dataset())
  ck = ckpt_lib.Checkpointer(tmp_path, keep=2)
  for step in (1, 2, 3):
    next(it)
    ck.save(step, _state(step), data_iterator=it, config_json='{"a": 1}')
  expected_next = next(it)
  ck.wait()
  assert ck.all_steps() == [2, 3]
  it2 = iter(grain.MapDataset.range(50).shuffle(seed=3).to_iter_dataset())
  step, restored = ck.restore_latest(_abstract(_state(0)), data_iterator=it2)
  assert step == 3
  np.testing.assert_array_equal(restored["params"]["w"], np.full((16, 4), 3.0))
  np.testing.assert_array_equal(restored["params"]["layers"][0]["b"], np.arange(3.0) + 3)
  assert next(it2) == expected_next
  ck.close()


def test_corrupted_newest_falls_back_with_warning(tmp_path):
  ck = ckpt_lib.Checkpointer(tmp_path, keep=3)
  ck.save(1, _state(1))
  ck.save(2, _state(2))
  ck.wait()
  # Corrupt every file of step 2's array data (truncate to garbage).
  files = [p for p in (tmp_path / "2" / "state").rglob("*") if p.is_file()]
  assert files
  for p in files:
    p.write_bytes(b"garbage")
  ck2 = ckpt_lib.Checkpointer(tmp_path, keep=3)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    step, restored = ck2.restore_latest(_abstract(_state(0)))
  assert step == 1
  np.testing.assert_array_equal(restored["params"]["w"], np.full((16, 4), 1.0))
  assert any("step 2" in str(w.message) and "falling back" in str(w.message) for w in caught)
  ck.close()
  ck2.close()


def test_find_checkpoint_dir(tmp_path):
  ck = ckpt_lib.Checkpointer(tmp_path / "run" / "checkpoints", keep=3)
  ck.save(5, _state(5))
  ck.close()
  assert ckpt_lib.find_checkpoint_dir(tmp_path / "run") == (
      tmp_path / "run" / "checkpoints", None)
  assert ckpt_lib.find_checkpoint_dir(tmp_path / "run" / "checkpoints" / "5") == (
      tmp_path / "run" / "checkpoints", 5)
  with pytest.raises(ValueError, match="resume"):
    ckpt_lib.find_checkpoint_dir(tmp_path / "nothing")


def _corrupt(directory, step):
  files = [p for p in (directory / str(step) / "state").rglob("*") if p.is_file()]
  assert files
  for p in files:
    p.write_bytes(b"garbage")


@pytest.mark.parametrize("corrupt_steps", [(3,), (1, 2, 3)])
def test_redone_step_replaces_the_unloadable_one(tmp_path, corrupt_steps):
  """Issue 24 item 2: after the fallback, the redone steps are saved again (not skipped)."""
  ck = ckpt_lib.Checkpointer(tmp_path, keep=5)
  for step in (1, 2, 3):
    ck.save(step, _state(step))
  ck.close()
  for step in corrupt_steps:
    _corrupt(tmp_path, step)
  ck2 = ckpt_lib.Checkpointer(tmp_path, keep=5)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    found = ck2.restore_latest(_abstract(_state(0)))
  start = found[0] if found else 0
  assert start == (2 if corrupt_steps == (3,) else 0)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for step in range(start + 1, 4):  # The run redoes these steps (new values: 10 + step).
      ck2.save(step, _state(10 + step))
    ck2.wait()
  assert sum("moved to" in str(w.message) for w in caught) == len(corrupt_steps)
  assert ck2.all_steps() == [1, 2, 3]
  ck2.close()
  ck3 = ckpt_lib.Checkpointer(tmp_path, keep=5)
  step, restored = ck3.restore_latest(_abstract(_state(0)))
  assert step == 3
  np.testing.assert_array_equal(restored["params"]["w"], np.full((16, 4), 13.0))
  assert sorted(p.name for p in (tmp_path / "unloadable").iterdir()) == sorted(
      str(s) for s in corrupt_steps)
  ck3.close()


def test_save_that_does_not_happen_raises(tmp_path):
  ck = ckpt_lib.Checkpointer(tmp_path, keep=3)
  ck.save(2, _state(2))
  ck.wait()
  with pytest.raises(ckpt_lib.CheckpointSaveError, match=r"step 2 already exists"):
    ck.save(2, _state(5))  # A loadable step is never overwritten.
  with pytest.raises(ckpt_lib.CheckpointSaveError, match=r"step 1 was not saved"):
    ck.save(1, _state(1))  # Orbax declines a step older than the newest.
  ck.close()
