"""Pixel conversions shared by every source: to RGB uint8, decoding, square crops.

Every image leaves this module as `[H, W, 3]` uint8 (grayscale replicated, alpha dropped);
resizing uses PIL's bicubic filter, which widens its kernel by the downscale factor, i.e. it
antialiases.
"""
from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image


def to_rgb_uint8(image: np.ndarray, name: str) -> np.ndarray:
  """`[H, W]`, `[H, W, 1|3|4]` uint8/bool/float -> `[H, W, 3]` uint8.

  Floats with no value above 1 are taken as [0, 1] intensities, others as 0..255.

  Raises:
    ValueError: naming `name`, for any other shape.
  """
  image = np.asarray(image)
  if image.dtype == bool:
    image = image.astype(np.uint8) * 255
  elif image.dtype != np.uint8:
    if np.issubdtype(image.dtype, np.floating) and image.max(initial=0) <= 1.0:
      image = image * 255.0
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"image {name!r}: expected [H, W] or [H, W, 1|3|4], got {image.shape}")
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return np.ascontiguousarray(image[..., :3])


def decode_image(data: Any, what: str) -> np.ndarray:
  """A path / encoded bytes / array -> `[H, W, 3]` uint8; raises on bad data.

  Args:
    data: a file path, the bytes of an encoded image (JPEG, PNG, WebP, ...) or a pixel array.
    what: names the image in error messages.
  """
  if isinstance(data, (str, os.PathLike)):
    with Image.open(data) as im:
      im.load()  # Forces a full decode so truncated files fail here, not later.
      return np.asarray(im.convert("RGB"))
  if isinstance(data, (bytes, bytearray)):
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      return np.asarray(im.convert("RGB"))
  return to_rgb_uint8(data, what)


def crop_resize(image: np.ndarray, top: int, left: int, side: int,
                resolution: int) -> np.ndarray:
  """The `side x side` square at (`top`, `left`) resized to `[R, R, 3]` (bicubic)."""
  crop = image[top:top + side, left:left + side]
  if crop.shape[0] == resolution and crop.shape[1] == resolution:
    return np.ascontiguousarray(crop)
  return np.asarray(Image.fromarray(crop).resize((resolution, resolution),
                                                 Image.Resampling.BICUBIC))


def center_crop_resize(image: np.ndarray, resolution: int) -> np.ndarray:
  """Center square crop (side = shorter side) resized to `[R, R, 3]` uint8 (bicubic)."""
  h, w = image.shape[:2]
  side = min(h, w)
  return crop_resize(image, (h - side) // 2, (w - side) // 2, side, resolution)
