"""Small shared pieces of the trainer tests (the registry's smoke TiTok and fixed batches)."""
import numpy as np

from jaxtok.tokenizers import get_family
from jaxtok.trainers.config import TrainConfig


def small_config(**overrides) -> TrainConfig:
  """A 10-step run of the registry's `titok:smoke` model (32 px), `overrides` on top."""
  c = TrainConfig()
  c.family, c.model = "titok", get_family("titok").variant("smoke")
  # No entropy loss here: its softmax at temperature 0.01 amplifies the summation-order
  # noise of a sharded reduction 100x, which the equality tests would then have to
  # tolerate. The quantizer's own 8-device tests cover the entropy loss.
  c.model.quantizer_kwargs = {}
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
