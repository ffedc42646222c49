"""Tests of jaxtok.data.augment: random square crops, flips and the colour jitter."""
import numpy as np

from jaxtok import data


def test_random_crops_and_flips():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
  # Full-scale crops of a square image are the resized image, flipped or not.
  square = image[:, :30]
  flips = 0
  for seed in range(20):
    out = data.random_crop_resize(square, 30, np.random.default_rng(seed), (1.0, 1.0), True)
    if np.array_equal(out, square[:, ::-1]):
      flips += 1
    else:
      np.testing.assert_array_equal(out, square)
  assert 3 <= flips <= 17
  # A small scale crops a sub-square, then resizes it up.
  out = data.random_crop_resize(image, 16, np.random.default_rng(1), (0.1, 0.1), False)
  assert out.shape == (16, 16, 3)
  # Without a resize (crop side = output side), the crop is a window of the image.
  out = data.random_crop_resize(image, 15, np.random.default_rng(2), (0.25, 0.25), False)
  windows = np.lib.stride_tricks.sliding_window_view(image, (15, 15, 3))
  assert any(np.array_equal(out, w) for w in windows.reshape(-1, 15, 15, 3))


def test_color_jitter_changes_colours_keeps_grey():
  photo = data.center_crop_resize(data.bundled_photos()["astronaut"], 32)
  rng = np.random.default_rng(0)
  assert np.array_equal(data.augment_colors(photo, rng, 0.0), photo)  # strength 0 = identity
  outs = [data.augment_colors(photo, np.random.default_rng(s), 1.0) for s in range(4)]
  assert all(o.shape == photo.shape and o.dtype == np.uint8 for o in outs)
  # Strong jitter moves the mean colour, differently per draw; the same seed repeats.
  means = np.array([o.reshape(-1, 3).mean(0) for o in outs])
  assert np.abs(means - photo.reshape(-1, 3).mean(0)).max() > 10
  assert np.abs(means[0] - means[1]).max() > 1
  assert np.array_equal(outs[0], data.augment_colors(photo, np.random.default_rng(0), 1.0))
  grey = np.repeat(photo[..., :1], 3, axis=-1)
  jittered = data.augment_colors(grey, np.random.default_rng(1), 1.0).astype(int)
  assert np.ptp(jittered, axis=-1).max() <= 1  # grey stays grey (rounding aside)
