"""Every config parses, resolves its model, its smoke variant trains one step, and its typed
fields are overridable from the command line."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

import jaxtok
from jaxtok.parallel import MeshConfig
from jaxtok.tokenizers import TOKENIZERS
from jaxtok.trainers import config as config_lib
from jaxtok.trainers import state as state_lib
from jaxtok.trainers import step as step_lib
from jaxtok.trainers.train import Experiment, model_class_and_config, train_and_evaluate
from tests.trainers.common import fixed_batches, get_config, small_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "jaxtok" / "configs"


def test_parse_arg():
  assert config_lib.parse_arg("variant=B-64,smoke", variant="S-128", smoke=False, n=3) == {
      "variant": "B-64", "smoke": True, "n": 3}
  assert config_lib.parse_arg("n=5", n=3)["n"] == 5
  with pytest.raises(ValueError, match="unknown key 'x'"):
    config_lib.parse_arg("x=1", n=3)
  with pytest.raises(ValueError, match="'n' expects int"):
    config_lib.parse_arg("n=a", n=3)


@pytest.mark.parametrize("spec", [
    "titok.py:tiny", "titok.py:variant=S-128,recipe=stage1", "titok.py:variant=B-64",
    "titok.py:variant=L-32,recipe=stage2", "titok.py:variant=BL-64-VQ",
    "titok.py:variant=BL-64-VAE", "one_d_piece.py:variant=S-256",
    "one_d_piece.py:variant=B-256,recipe=stage2", "one_d_piece.py:tiny"])
def test_full_configs_resolve(spec):
  config = get_config(spec)
  _, model_config = model_class_and_config(config)
  assert config.data.resolution is None  # It follows model.image_size.
  assert config.recipe in step_lib.RECIPES
  if config.recipe == "stage2":
    assert config.optim.frozen and config.loss.gan_weight > 0
  if spec.startswith("one_d_piece"):
    assert model_config.tail_token_drop


def test_stage_recipe_needs_two_stage_variant():
  with pytest.raises(ValueError, match="recipe"):
    get_config("titok.py:variant=BL-64-VQ,recipe=stage1")


SMOKE = [pytest.param("titok.py:variant=S-128,recipe=stage1,smoke", marks=pytest.mark.slow),
         pytest.param("titok.py:variant=S-128,recipe=stage2,smoke", marks=pytest.mark.slow),
         "titok.py:variant=BL-64-VQ,smoke",
         "one_d_piece.py:smoke",
         "one_d_piece.py:tiny,smoke",
         # One branch: the single-codebook VQGAN baseline.
         pytest.param("fqgan.py:smoke,single", marks=pytest.mark.slow)]
# titok.py:tiny,smoke runs through the command line in test_train.py.


@pytest.mark.parametrize("spec", SMOKE)
def test_smoke_variant_trains_one_step(spec):
  config = get_config(spec)
  assert config.total_steps == 1 and config.fast_compile
  exp = Experiment(config)
  state = exp.init_state()
  before = jax.device_get(state.params)
  batch = fixed_batches(1, batch=config.batch_size, size=exp.data_config.resolution)[0]
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
  if config.loss.gan_weight > 0 and config.recipe != "stage1":  # The GAN starts at step 0.
    assert "disc/discriminator_loss" in metrics
    assert "loss/weighted_gan_loss" in metrics
    assert state.gan is not None
  else:  # No GAN: no GAN sub-tree in the state (nothing sharded, stepped or checkpointed).
    assert state.gan is None and exp.abstract_state.gan is None


def test_bfloat16_mixed_precision_step():
  config = small_config(dtype="bfloat16")
  exp = Experiment(config, jax.devices()[:2])
  state = exp.init_state()
  state, metrics = exp.step(state, exp.global_batch(fixed_batches(1)[0]))
  assert np.isfinite(float(metrics["loss/total_loss"]))
  # Master weights and optimizer state stay float32.
  assert {x.dtype for x in jax.tree_util.tree_leaves(state.params)} == {np.dtype("float32")}
  assert metrics["loss/total_loss"].dtype == np.float32


def test_every_family_config_has_runtime_field_types():
  """config_flags types `--config.model.x=...` from the dataclass annotations at runtime; a
  string annotation (`from __future__ import annotations` in the config's module) breaks it."""
  classes = {config_lib.TrainConfig, config_lib.OptimConfig, MeshConfig,
             type(config_lib.TrainConfig().loss), type(config_lib.TrainConfig().data)}
  classes |= {fam.config_class for fam in TOKENIZERS.values()}
  for cls in classes:
    for field in dataclasses.fields(cls):
      assert not isinstance(field.type, str), f"{cls.__name__}.{field.name}: {field.type!r}"


def _parse_flags(argv):
  """The trainer's command line parsed exactly as `train.main` defines it."""
  values = flags.FlagValues()
  argv = ["train", *argv]
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=False,
                                  sys_argv=argv)
  values(argv)
  return values.config


def test_command_line_overrides_nested_and_optional_typed_fields():
  config = _parse_flags([
      "--config", f"{CONFIGS}/titok.py:variant=S-128,recipe=stage1,smoke",
      "--config.model.codebook_size=48", "--config.model.init_std=0.01",
      "--config.model.pixel_decoder.z_channels=8", "--config.loss.gan_weight=0.5",
      "--config.loss.lecam_ema_decay=0.99", "--config.loss.perceptual=inception",
      "--config.data.crop_scale=(0.5, 1.0)", "--config.data.eval_source=folder:/x",
      "--config.optim.lr=0.003"])
  assert config.model.codebook_size == 48 and config.model.init_std == 0.01
  assert config.model.pixel_decoder.z_channels == 8
  assert config.loss.gan_weight == 0.5 and config.loss.lecam_ema_decay == 0.99
  assert config.loss.perceptual == "inception"
  assert config.data.crop_scale == (0.5, 1.0) and config.data.eval_source == "folder:/x"
  assert config.optim.lr == 0.003
  _, model_config = model_class_and_config(config)  # Re-validated after the overrides.
  assert model_config.codebook_size == 48 and model_config.pixel_decoder.z_channels == 8
  with pytest.raises(flags.IllegalFlagValueError, match="codebook_size"):
    _parse_flags(["--config", f"{CONFIGS}/titok.py:tiny", "--config.model.codebook_size=x"])


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
def test_cli_model_override_reaches_the_exported_model(tmp_path):
  """A real `python -m jaxtok.trainers.train` run (0 steps): typed overrides land in the model."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  cmd = [sys.executable, "-m", "jaxtok.trainers.train",
         "--config", f"{CONFIGS}/titok.py:tiny,smoke", "--workdir", str(tmp_path),
         "--config.total_steps=0", "--config.grid_every=0",
         "--config.model.codebook_size=48", "--config.model.init_std=0.01",
         "--config.loss.quantizer_weight=0.5"]
  out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=400)
  assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
  tok = jaxtok.load(tmp_path / "export")
  assert tok.model.config.codebook_size == 48 and tok.model.config.init_std == 0.01
  run_config = json.loads((tmp_path / "config.json").read_text())
  assert run_config["loss"]["quantizer_weight"] == 0.5
  assert run_config["model"]["codebook_size"] == 48


def test_data_resolution_follows_the_model():
  config = small_config()
  assert Experiment(config, jax.devices()[:1]).data_config.resolution == 32
  config.data.resolution = 64
  with pytest.raises(ValueError, match=r"data.resolution: .*model.image_size.* 32, got 64"):
    Experiment(config, jax.devices()[:1])


def test_family_must_match_the_model_config_class():
  config = small_config()
  config.family = "nope"
  with pytest.raises(ValueError, match=r"family: expected one of \[.*'one_d_piece', 'titok'"):
    model_class_and_config(config)
  config.family = "titok"
  config.model = config_lib.OptimConfig()
  with pytest.raises(ValueError, match="model: family 'titok' takes a TiTokConfig"):
    model_class_and_config(config)


def test_fsq_titok_trains():
  """TiTok with the FSQ bottleneck of the quantizer registry: a few finite steps."""
  config = small_config()
  config.model.quantizer = "fsq"
  config.model.quantizer_kwargs = {"levels": [8, 5, 5, 5]}
  exp = Experiment(config, jax.devices()[:1])
  state = exp.init_state()
  losses = []
  for batch in fixed_batches(3):
    state, metrics = exp.step(state, exp.global_batch(batch))
    losses.append(float(metrics["loss/total_loss"]))
  assert np.all(np.isfinite(losses)), losses
  assert losses[-1] < losses[0]


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
def test_every_periods_zero_is_off_and_negative_is_refused(tmp_path):
  for name in ("log_every", "checkpoint_every", "eval_every", "grid_every"):
    with pytest.raises(ValueError, match=name):
      Experiment(small_config(**{name: -1}), jax.devices()[:1])
  # 0 = off: no periodic checkpoint, but the last step is still saved (no modulo by zero).
  config = small_config(total_steps=3, checkpoint_every=0, log_every=0)
  summary = train_and_evaluate(config, tmp_path / "run")
  assert summary["status"] == "done" and summary["step"] == 3
  steps = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps == [3]
