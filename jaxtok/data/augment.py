"""Training augmentation: random square crops, flips and a colour jitter.

Each function takes a numpy generator; the pipeline hands one per element, derived from the
seed and the element's position in the stream, so the augmented images depend on nothing else.
"""
from __future__ import annotations

import numpy as np

from jaxtok.data.images import crop_resize


def random_crop_resize(image: np.ndarray, resolution: int, rng: np.random.Generator,
                       scale: tuple[float, float], flip: bool) -> np.ndarray:
  """Random square crop covering `U(scale)` of the shorter side's square area, resized.

  Args:
    image: `[H, W, 3]` uint8.
    resolution: output side R.
    rng: numpy generator (grain hands one per element, derived from seed and index).
    scale: (min, max) fraction of `min(H, W)**2` covered by the crop.
    flip: flip horizontally with probability 1/2.

  Returns:
    `[R, R, 3]` uint8.
  """
  h, w = image.shape[:2]
  short = min(h, w)
  frac = rng.uniform(scale[0], scale[1])
  side = int(np.clip(round(short * np.sqrt(frac)), 1, short))
  top = int(rng.integers(0, h - side + 1))
  left = int(rng.integers(0, w - side + 1))
  out = crop_resize(image, top, left, side, resolution)
  if flip and rng.uniform() < 0.5:
    out = np.ascontiguousarray(out[:, ::-1])
  return out


# Unit vectors of the YIQ-like chroma plane orthogonal to grey (1, 1, 1) / sqrt(3).
_CHROMA = np.array([[1.0, -1.0, 0.0], [1.0, 1.0, -2.0]]) / np.array([[np.sqrt(2.0)],
                                                                    [np.sqrt(6.0)]])


def augment_colors(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
  """Random colour change of one `[R, R, 3]` uint8 image (see `DataConfig.color_jitter`).

  Grey stays grey except for the brightness shift: the hue rotation and the saturation act on
  the chroma plane orthogonal to (1, 1, 1).
  """
  x = image.astype(np.float32) / 255.0
  if rng.uniform() < strength:
    x = x[..., rng.permutation(3)]
  grey = x.mean(axis=-1, keepdims=True)
  chroma = (x - grey) @ _CHROMA.T  # [R, R, 2]
  angle = rng.uniform(-np.pi, np.pi) * strength
  c, s_ = np.cos(angle), np.sin(angle)
  rot = np.array([[c, -s_], [s_, c]], np.float32) * rng.uniform(1 - strength / 2,
                                                               1 + strength / 2)
  x = grey + rng.uniform(-strength / 4, strength / 4) + (chroma @ rot.T) @ _CHROMA
  return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
