"""Small shared pieces of the trainer tests (each family's smoke model and fixed batches)."""
import dataclasses
import importlib.util

import numpy as np

from jaxtok.configs import flextok as flextok_configs
from jaxtok.configs import fqgan as fqgan_configs
from jaxtok.tokenizers import get_family
from jaxtok.trainers.config import TrainConfig
from tests.fixture_files import REPO

# The families the trainer tests run (8-device equality, kill -9 resume): the smoke config of
# each family's config file, as its command-line spec.
FAMILIES = ("titok", "flextok", "fqgan")
CLI_SPECS = {"titok": "titok.py:tiny,smoke", "flextok": "flextok.py:smoke",
             "fqgan": "fqgan.py:smoke"}


def _base_config(family: str) -> TrainConfig:
  if family == "titok":
    c = TrainConfig()
    c.family, c.model = "titok", get_family("titok").variant("smoke")
    # No entropy loss here: its softmax at temperature 0.01 amplifies the summation-order
    # noise of a sharded reduction 100x, which the equality tests would then have to
    # tolerate. The quantizer's own 8-device tests cover the entropy loss.
    c.model.quantizer_kwargs = {}
    return c
  if family == "flextok":  # The rectified-flow objective of flextok.py:smoke.
    return flextok_configs.get_config("smoke")
  if family == "fqgan":  # fqgan.py:smoke, semantic term (Inception stand-in) included.
    c = fqgan_configs.get_config("smoke")
    c.model = dataclasses.replace(c.model, entropy_loss_weight=0.0)  # As for TiTok above.
    # Biases in front of a GroupNorm (and attention key biases) have a true gradient of 0;
    # Adam at eps 1e-8 turns the summation-order noise of those gradients into lr-sized
    # steps in random directions. eps 1e-6 keeps that noise below the equality tolerance.
    c.optim.eps = 1e-6
    return c
  raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")


def small_config(family: str = "titok", **overrides) -> TrainConfig:
  """A 10-step run of `family`'s smoke model (titok: 32 px), `overrides` on top."""
  c = _base_config(family)
  c.data.num_eval_images = 2
  c.batch_size = 8
  c.total_steps = 10
  c.optim.lr, c.optim.end_lr, c.optim.warmup_steps = 1e-3, 1e-4, 2
  c.optim.ema_decay = 0.9
  c.progress_bar = False
  c.grid_every = 0
  c.log_every = 1
  c.fast_compile = True
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def fixed_batches(n: int, batch: int = 8, size: int = 32, seed: int = 0):
  rng = np.random.default_rng(seed)
  # Smooth-ish images (low-frequency noise upsampled) so the loss is not pure noise.
  out = []
  for _ in range(n):
    small = rng.integers(0, 256, (batch, size // 8, size // 8, 3)).astype(np.float32)
    img = np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)
    out.append({"image": img.astype(np.uint8)})
  return out


def get_config(spec: str) -> TrainConfig:
  """Loads `file.py:arg` of jaxtok/configs/ the way DEFINE_config_file does (by path)."""
  file, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("cfg", REPO / "jaxtok" / "configs" / file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)
