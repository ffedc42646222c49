"""Every config parses, resolves its model, and its smoke variant trains one step."""
import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxtok.configs import common
from jaxtok.trainers import state as state_lib
from jaxtok.trainers.train import Experiment, model_class_and_config
from tests.trainers.common import fixed_batches, small_config

CONFIGS = Path(__file__).resolve().parents[2] / "jaxtok" / "configs"


def get_config(spec: str):
  """Loads `file.py:arg` the way DEFINE_config_file does (by path)."""
  file, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("cfg", CONFIGS / file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def test_parse_arg():
  assert common.parse_arg("variant=B-64,smoke", variant="S-128", smoke=False, n=3) == {
      "variant": "B-64", "smoke": True, "n": 3}
  assert common.parse_arg("n=5", n=3)["n"] == 5
  with pytest.raises(ValueError, match="unknown key 'x'"):
    common.parse_arg("x=1", n=3)
  with pytest.raises(ValueError, match="'n' expects int"):
    common.parse_arg("n=a", n=3)


@pytest.mark.parametrize("spec", [
    "titok.py:tiny", "titok.py:variant=S-128,recipe=stage1", "titok.py:variant=B-64",
    "titok.py:variant=L-32,recipe=stage2", "titok.py:variant=BL-64-VQ",
    "titok.py:variant=BL-64-VAE", "one_d_piece.py:variant=S-256",
    "one_d_piece.py:variant=B-256,recipe=stage2", "one_d_piece.py:tiny"])
def test_full_configs_resolve(spec):
  config = get_config(spec)
  _, model_config = model_class_and_config(config.model)
  assert model_config.image_size == config.data.resolution
  assert config.recipe in state_lib.RECIPES
  if config.recipe == "stage2":
    assert config.optim.frozen and config.loss.gan_weight > 0
  if spec.startswith("one_d_piece"):
    assert model_config.tail_token_drop


def test_stage_recipe_needs_two_stage_variant():
  with pytest.raises(ValueError, match="recipe"):
    get_config("titok.py:variant=BL-64-VQ,recipe=stage1")


SMOKE = ["titok.py:variant=S-128,recipe=stage1,smoke",
         "titok.py:variant=S-128,recipe=stage2,smoke",
         "titok.py:variant=BL-64-VQ,smoke",
         "one_d_piece.py:smoke",
         "one_d_piece.py:tiny,smoke"]
# titok.py:tiny,smoke runs through the command line in test_train.py.


@pytest.mark.parametrize("spec", SMOKE)
def test_smoke_variant_trains_one_step(spec):
  config = get_config(spec)
  assert config.total_steps == 1 and config.fast_compile
  exp = Experiment(config)
  state = exp.init_state()
  before = jax.device_get(state.params)
  batch = fixed_batches(1, batch=config.batch_size, size=config.data.resolution)[0]
  state, metrics = exp.step(state, exp.global_batch(batch))
  metrics = jax.device_get(metrics)
  assert np.isfinite(metrics["loss/total_loss"]), metrics
  assert int(state.step) == 1
  after = jax.device_get(state.params)
  changed = {state_lib.path_str(p): not np.array_equal(a, b) for (p, a), b in
             zip(jax.tree_util.tree_leaves_with_path(after), jax.tree_util.tree_leaves(before))}
  frozen = state_lib.regex_mask(after, config.optim.frozen)
  frozen = {state_lib.path_str(p): f for p, f in jax.tree_util.tree_leaves_with_path(frozen)}
  assert any(changed.values())
  assert not any(changed[k] for k, f in frozen.items() if f), "a frozen param moved"
  if config.recipe == "stage1":
    assert "loss/reconstruction_loss" in metrics  # proxy-code cross-entropy
  if config.loss.gan_weight > 0:  # smoke starts the GAN at step 0: the disc moved.
    assert "disc/discriminator_loss" in metrics
    assert "loss/weighted_gan_loss" in metrics


def test_bfloat16_mixed_precision_step():
  config = small_config(dtype="bfloat16")
  exp = Experiment(config, jax.devices()[:2])
  state = exp.init_state()
  state, metrics = exp.step(state, exp.global_batch(fixed_batches(1)[0]))
  assert np.isfinite(float(metrics["loss/total_loss"]))
  # Master weights and optimizer state stay float32.
  assert {x.dtype for x in jax.tree_util.tree_leaves(state.params)} == {np.dtype("float32")}
  assert metrics["loss/total_loss"].dtype == np.float32
