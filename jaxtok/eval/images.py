"""Image sets for the evaluators: batches, uint8 rounding, and copies through lossy codecs.

Shared by every evaluator (`evaluators`, `fid`), the eval CLI's `--compare` and the
rate-distortion curves of `jaxtok.codec.rd`:

- `iter_batches`: `[b, H, W, 3]` numpy batches from an array or from an iterable of batches
  (data-pipeline `{"image": ...}` dicts included);
- `to_uint8`: float [0, 1] -> uint8 with rounding, what saving a reconstruction as PNG does;
- `codec_roundtrip` / `codec_images`: images through Pillow's JPEG / WebP (/ AVIF) encoder
  and back, with the file size in bytes (headers included, as a stored image costs).
"""
from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np
from PIL import Image, features

from jaxtok.nets import inception

CODECS = {"jpeg": "JPEG", "webp": "WEBP"}  # name -> Pillow format
if features.check("avif"):  # Pillow >= 11.2 built with libavif.
  CODECS["avif"] = "AVIF"


def iter_batches(images: Any, batch_size: int, name: str = "images") -> Iterable[np.ndarray]:
  """Yields `[b, H, W, 3]` numpy batches from an array or from an iterable of batches."""
  if isinstance(images, (np.ndarray, jax.Array)):
    images = inception.check_images(images, name)
    for start in range(0, images.shape[0], batch_size):
      yield images[start:start + batch_size]
    return
  if isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
    raise ValueError(f"{name}: expected an [N, H, W, 3] array or an iterable of batches, got "
                     f"{type(images).__name__}")
  for batch in images:
    if isinstance(batch, dict):  # A data-pipeline batch {"image": ...}.
      batch = batch["image"]
    yield inception.check_images(batch, name)


def to_uint8(images) -> np.ndarray:
  """float [0, 1] -> uint8 with rounding (what saving reconstructions as PNG does)."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def codec_roundtrip(image: np.ndarray, codec: str, quality: int) -> tuple[np.ndarray, int]:
  """Encodes one uint8 `[H, W, 3]` image with Pillow; returns (decoded uint8, file bytes)."""
  if codec not in CODECS:
    raise ValueError(f"codec: expected one of {sorted(CODECS)}, got {codec!r}")
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format=CODECS[codec], quality=int(quality))
  size = buf.tell()
  buf.seek(0)
  return np.asarray(Image.open(buf).convert("RGB")), size


def codec_images(images: np.ndarray, codec: str, quality: int) -> tuple[np.ndarray, float]:
  """`[N, H, W, 3]` uint8 through a codec: (decoded images, mean bytes per image)."""
  out, sizes = zip(*(codec_roundtrip(im, codec, quality) for im in images))
  return np.stack(out), float(np.mean(sizes))


__all__ = ["CODECS", "codec_images", "codec_roundtrip", "iter_batches", "to_uint8"]
