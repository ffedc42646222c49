"""The bundled photographs: real photos that ship inside installed packages.

They come from scikit-image (`skimage.data`), scikit-learn (`load_sample_images`) and
matplotlib (`grace_hopper.jpg`); nothing is downloaded. A fixed set of them (`HELD_OUT`) is
reserved for evaluation and never trained on.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import skimage.data
from matplotlib import cbook
from PIL import Image
from sklearn.datasets import load_sample_images

from jaxtok.data.images import to_rgb_uint8

# Bundled photographs. Color ones first; grayscale ones are replicated to RGB.
_SKIMAGE_COLOR = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
                  "immunohistochemistry")
_SKIMAGE_GRAY = ("camera", "coins", "moon", "clock", "grass", "gravel", "brick", "cell",
                 "text", "page")

# Photos never trained on when `source="bundled"`: four natural color photos of
# different kinds (animal, still life, portrait, plant), none of which has a near-duplicate
# among the training photos (skimage's `cat` is the same picture as `chelsea` and is not
# bundled; the two motorcycle views stay together on the training side).
HELD_OUT: tuple[str, ...] = ("chelsea", "coffee", "grace_hopper", "flower")


@functools.lru_cache(maxsize=1)
def _load_bundled() -> tuple[tuple[str, np.ndarray], ...]:
  photos = []
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for name in _SKIMAGE_COLOR + _SKIMAGE_GRAY:
      photos.append((name, getattr(skimage.data, name)()))
    left, right, _ = skimage.data.stereo_motorcycle()
    photos += [("motorcycle_left", left), ("motorcycle_right", right)]
    samples = load_sample_images()
    for filename, image in zip(samples.filenames, samples.images):
      photos.append((Path(filename).stem, image))  # china, flower
    with cbook.get_sample_data("grace_hopper.jpg") as f:
      photos.append(("grace_hopper", np.asarray(Image.open(f).convert("RGB"))))
  out = []
  for name, image in photos:
    image = to_rgb_uint8(image, name)
    image.setflags(write=False)  # Shared by every caller through the cache.
    out.append((name, image))
  return tuple(out)


def bundled_photos() -> dict[str, np.ndarray]:
  """All bundled photos, by name: `{name: uint8 [H, W, 3]}` (read-only arrays).

  Includes the `HELD_OUT` ones; sizes vary (about 300 to 1400 pixels a side).
  """
  return dict(_load_bundled())


def bundled_train_names(include_held_out: bool = False) -> tuple[str, ...]:
  """Names of the bundled photos used for training (all but `HELD_OUT` by default)."""
  return tuple(n for n, _ in _load_bundled() if include_held_out or n not in HELD_OUT)
