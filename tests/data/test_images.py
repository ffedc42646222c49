"""Tests of jaxtok.data.images: conversion to RGB uint8, decoding, center crops."""
import io

import numpy as np
import pytest
from PIL import Image

from jaxtok import data
from tests.data.common import write_image


def test_to_rgb_uint8_converts_every_layout():
  gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
  out = data.to_rgb_uint8(gray, "g")
  assert out.shape == (3, 4, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[..., 1], gray)
  rgba = np.zeros((2, 2, 4), np.uint8)
  rgba[..., 3] = 255
  np.testing.assert_array_equal(data.to_rgb_uint8(rgba, "a"), np.zeros((2, 2, 3), np.uint8))
  unit = np.full((2, 2, 3), 0.5, np.float32)  # Floats in [0, 1] are intensities.
  assert (data.to_rgb_uint8(unit, "f") == 128).all()
  wide = np.full((2, 2), 300.0)  # Other floats are 0..255 values, clipped.
  assert (data.to_rgb_uint8(wide, "w") == 255).all()
  assert (data.to_rgb_uint8(np.ones((2, 2), bool), "b") == 255).all()
  with pytest.raises(ValueError, match="'bad'.*expected"):
    data.to_rgb_uint8(np.zeros((2, 2, 2)), "bad")


def test_decode_image_from_path_bytes_and_array(tmp_path):
  array = write_image(tmp_path / "a.png", 0)
  np.testing.assert_array_equal(data.decode_image(tmp_path / "a.png", "a"), array)
  np.testing.assert_array_equal(data.decode_image(str(tmp_path / "a.png"), "a"), array)
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  np.testing.assert_array_equal(data.decode_image(buf.getvalue(), "a"), array)
  np.testing.assert_array_equal(data.decode_image(array[..., 0], "a")[..., 2], array[..., 0])
  with pytest.raises(OSError):  # Truncated data fails at decode time, not later.
    data.decode_image(buf.getvalue()[:len(buf.getvalue()) // 2], "half")


def test_center_crops():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
  center = data.center_crop_resize(image, 30)
  np.testing.assert_array_equal(center, image[:, 10:40])
  np.testing.assert_array_equal(data.center_crop_resize(image.transpose(1, 0, 2), 30),
                                image.transpose(1, 0, 2)[10:40])
  small = data.center_crop_resize(image, 15)  # Bicubic, antialiased: close to a 2x2 mean.
  mean = image[:, 10:40].reshape(15, 2, 15, 2, 3).mean(axis=(1, 3))
  assert small.shape == (15, 15, 3)
  assert np.abs(small - mean).mean() < np.abs(image[::2, 10:40:2] - mean).mean()
