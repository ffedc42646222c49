"""Evaluation images: deterministic center square crops of a source's first records."""
from __future__ import annotations

import logging

import numpy as np

from jaxtok.data.config import check_resolution
from jaxtok.data.images import center_crop_resize
from jaxtok.data.sources import open_source

_LOG = logging.getLogger(__name__)


def eval_images(source: str, resolution: int, *, max_images: int | None = None,
                tfds_data_dir: str | None = None, image_key: str = "image") -> np.ndarray:
  """Deterministic evaluation images: center square crop + bicubic resize.

  Args:
    source: `bundled` (the `HELD_OUT` photos, in that order), `folder:PATH` (sorted
      files; unreadable ones skipped with a warning) or `tfds:NAME[:split]` (split
      defaults to `train`; use e.g. `tfds:imagenet2012:validation`).
    resolution: output side R.
    max_images: keep only the first this many (default: all; mind memory on big splits).
    tfds_data_dir, image_key: as in `DataConfig`.

  Returns:
    `[N, R, R, 3]` uint8.
  """
  check_resolution(resolution)
  if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
    raise ValueError(f"max_images: expected None or a positive int, got {max_images!r}")
  records, reader = open_source(source, bundled="held_out", tfds_data_dir=tfds_data_dir,
                                image_key=image_key)
  out, skipped = [], 0
  for record in records:
    if max_images is not None and len(out) >= max_images:
      break
    try:
      image = reader(record)
    except Exception as e:  # Bad files are skipped, as in training.
      skipped += 1
      _LOG.warning("eval_images: skipped unreadable record %s: %s: %s", record,
                   type(e).__name__, e)
      continue
    out.append(center_crop_resize(image, resolution))
  if not out:
    raise ValueError(f"source: {source!r} gave no readable images ({skipped} unreadable)")
  return np.stack(out)


def eval_tiles(source: str, resolution: int, *, max_images: int | None = None,
               tiles: int = 1) -> np.ndarray:
  """uint8 `[N, R, R, 3]` from `eval_images`, optionally cut into `tiles x tiles` crops
  (each image resized to `resolution * tiles`, then tiled: more test crops per photo)."""
  if tiles == 1:
    return eval_images(source, resolution, max_images=max_images)
  big = eval_images(source, resolution * tiles)
  n, r = big.shape[0], resolution
  out = big.reshape(n, tiles, r, tiles, r, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, r, r, 3)
  return out[:max_images] if max_images else out
