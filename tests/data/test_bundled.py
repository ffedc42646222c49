"""Tests of jaxtok.data.bundled: the shipped photos and the held-out set."""
import numpy as np

from jaxtok import data


def test_bundled_photos_are_real_rgb_photos():
  photos = data.bundled_photos()
  assert len(photos) >= 20
  for name in ("astronaut", "chelsea", "camera", "china", "flower", "grace_hopper",
               "motorcycle_left", "hubble_deep_field"):
    assert name in photos
  for name, image in photos.items():
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3, name
    assert min(image.shape[:2]) >= 150, name
    assert image.std() > 10, name  # Real content, not a flat array.
    assert not image.flags.writeable, name  # Shared through a cache.
  # Grayscale photos are replicated to RGB.
  camera = photos["camera"]
  np.testing.assert_array_equal(camera[..., 0], camera[..., 2])
  assert set(data.HELD_OUT) <= set(photos)


def test_train_names_leave_out_the_held_out_photos():
  train = data.bundled_train_names()
  everything = data.bundled_train_names(include_held_out=True)
  assert not set(train) & set(data.HELD_OUT)
  assert set(everything) == set(data.bundled_photos()) == set(train) | set(data.HELD_OUT)
  assert list(everything) == list(data.bundled_photos())  # One fixed order.
