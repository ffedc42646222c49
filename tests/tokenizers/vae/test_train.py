"""The VAE through the one trainer (L1 + KL + GAN), and the FlexTok two-stage recipe: stage 0
trains the VAE, stage 1 trains FlexTok over its frozen latents; both export and load."""
import importlib.util
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxtok
from jaxtok.io import checkpoint as ckpt_format
from jaxtok.trainers import state as state_lib
from jaxtok.trainers.train import Experiment, model_class_and_config, train_and_evaluate
from tests.fixture_files import REPO


def get_config(file, arg):
  spec = importlib.util.spec_from_file_location(f"cfg_{file}", REPO / "jaxtok" / "configs" /
                                                f"{file}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _moved(before, after):
  return {state_lib.path_str(p): not np.array_equal(a, b) for (p, a), b in zip(
      jax.tree_util.tree_leaves_with_path(after), jax.tree_util.tree_leaves(before))}


def test_configs_resolve():
  for arg, channels in (("variant=f8c4", 4), ("variant=f8c16", 16), ("tiny", 4)):
    config = get_config("vae", arg)
    _, model_config = model_class_and_config(config)
    assert config.family == "vae" and model_config.latent_channels == channels
    assert model_config.downsample_factor == 8
    assert config.loss.reconstruction_loss == "l1" and config.loss.kl_weight == 1e-6
  assert get_config("vae", "variant=f8c4").loss.gan_weight == 0.5


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
def test_smoke_trains_with_l1_kl_and_gan():
  config = get_config("vae", "smoke")
  config.loss.gan_weight, config.loss.gan_start_step = 0.5, 0
  config.loss.kl_weight = 1e-3  # Large enough to see the KL in the total.
  exp = Experiment(config, jax.devices()[:2])
  state = exp.init_state()
  before = jax.device_get(state.params)
  rng = np.random.default_rng(0)
  size = exp.data_config.resolution
  assert size == 32 and exp.token_spec.continuous
  batch = {"image": rng.integers(0, 256, (config.batch_size, size, size, 3)).astype(np.uint8)}
  state, metrics = exp.step(state, exp.global_batch(batch))
  m = jax.device_get(metrics)
  assert m["loss/kl_loss"] > 0 and "disc/discriminator_loss" in m
  total = (m["loss/reconstruction_loss"] + m["loss/perceptual_loss"] + m["loss/quantizer_loss"]
           + m["loss/weighted_gan_loss"] + m["loss/kl_loss"])
  assert np.isclose(m["loss/total_loss"], total, rtol=1e-5), m
  moved = _moved(before, jax.device_get(state.params))
  assert moved["encoder/conv_in/kernel"] and moved["decoder/conv_out/kernel"]
  recon = exp.reconstruct(state, batch["image"][:2])
  assert recon.shape == (2, size, size, 3)


@pytest.mark.slow  # ~30 s: trains a VAE, then FlexTok on it.
def test_two_stage_recipe_end_to_end(tmp_path):
  # Stage 0: the VAE.
  config = get_config("vae", "smoke")
  config.total_steps, config.checkpoint_every, config.grid_every = 2, 0, 0
  summary = train_and_evaluate(config, tmp_path / "vae", devices=jax.devices()[:2])
  assert summary["status"] == "done" and np.isfinite(summary["psnr_after"])
  vae_dir = Path(summary["export"])
  vae_tok = jaxtok.load(vae_dir)
  assert vae_tok.family == "vae" and vae_tok.model.token_spec.continuous
  images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
  assert vae_tok.decode(vae_tok.encode(images)).shape == (2, 32, 32, 3)

  # Stage 1: FlexTok over the frozen VAE latents.
  config = get_config("flextok", f"smoke,vae={vae_dir}")
  config.total_steps, config.checkpoint_every, config.grid_every = 2, 0, 0
  model_config = model_class_and_config(config)[1]
  assert model_config.front_end == "vae" and model_config.image_size == 32
  assert (model_config.input_size, model_config.channels) == (4, 4)
  exp = Experiment(config, jax.devices()[:2])
  state = exp.init_state()
  vae_arrays, _ = ckpt_format.read_weights(vae_dir)
  params = jax.device_get(state.params)
  for p, v in jax.tree_util.tree_leaves_with_path(params):  # Stage 1 starts from stage 0.
    path = state_lib.path_str(p)
    if path.startswith("vae/"):
      np.testing.assert_array_equal(v, vae_arrays[path[len("vae/"):]])
  summary = train_and_evaluate(config, tmp_path / "flextok", devices=jax.devices()[:2])
  assert summary["status"] == "done" and np.isfinite(summary["psnr_after"])
  ft_dir = Path(summary["export"])
  shutil.rmtree(tmp_path / "vae")  # The FlexTok export holds its VAE: it loads without it.
  meta = ckpt_format.read_meta(ft_dir)
  assert meta["config"]["front_end"] == "vae" and meta["config"]["vae_checkpoint"] == ""
  arrays, _ = ckpt_format.read_weights(ft_dir)
  for key, value in vae_arrays.items():  # Frozen through stage 1 (weights and EMA).
    np.testing.assert_array_equal(arrays[f"vae/{key}"], value)
  assert not np.array_equal(arrays["decoder/head_proj/kernel"],
                            params["decoder"]["head_proj"]["kernel"])
  tok = jaxtok.load(ft_dir)
  ids = tok.encode(images)
  assert ids.shape == (2, 8) and ids.dtype == np.int32
  out = tok.decode(ids[:, :2], steps=2)
  assert out.shape == (2, 32, 32, 3) and np.all(np.isfinite(out))
  model = tok.model
  with pytest.raises(ValueError, match="images"):
    model.encode(np.zeros((1, 16, 16, 3), np.float32))
