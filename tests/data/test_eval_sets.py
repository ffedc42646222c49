"""Tests of jaxtok.data.eval_sets: deterministic evaluation images and tiles."""
import numpy as np
import pytest

from jaxtok import data
from tests.data.common import write_image


def test_eval_images_bundled_is_held_out_center_crops():
  ev = data.eval_images("bundled", 32)
  assert ev.shape == (len(data.HELD_OUT), 32, 32, 3) and ev.dtype == np.uint8
  photos = data.bundled_photos()
  for i, name in enumerate(data.HELD_OUT):
    np.testing.assert_array_equal(ev[i], data.center_crop_resize(photos[name], 32))
  assert data.eval_images("bundled", 32, max_images=2).shape[0] == 2


def test_eval_images_of_a_folder_skip_unreadable_files(tmp_path, caplog):
  good = [write_image(tmp_path / f"{i}.png", i, size=(20, 20)) for i in range(3)]
  (tmp_path / "1b.png").write_text("not an image")
  with caplog.at_level("WARNING"):
    ev = data.eval_images(f"folder:{tmp_path}", 20)
  np.testing.assert_array_equal(ev, np.stack(good))  # Sorted paths: 0, 1, (1b), 2.
  assert "1b.png" in caplog.text
  np.testing.assert_array_equal(data.eval_images(f"folder:{tmp_path}", 20, max_images=2),
                                ev[:2])


def test_eval_tiles_cut_each_image_into_tiles():
  big = data.eval_images("bundled", 32)
  tiles = data.eval_tiles("bundled", 16, tiles=2)
  assert tiles.shape == (4 * len(big), 16, 16, 3)
  # Image-major, then row-major tiles.
  np.testing.assert_array_equal(tiles[0], big[0, :16, :16])
  np.testing.assert_array_equal(tiles[1], big[0, :16, 16:])
  np.testing.assert_array_equal(tiles[2], big[0, 16:, :16])
  np.testing.assert_array_equal(tiles[4], big[1, :16, :16])
  np.testing.assert_array_equal(data.eval_tiles("bundled", 16, tiles=2, max_images=3), tiles[:3])
  np.testing.assert_array_equal(data.eval_tiles("bundled", 16, max_images=3),
                                data.eval_images("bundled", 16, max_images=3))


def test_bad_arguments_raise_value_error(tmp_path):
  for source in ("", "imagenet", "folder:", "tfds:", 3):
    with pytest.raises(ValueError, match="source"):
      data.eval_images(source, 32)
  with pytest.raises(ValueError, match="source"):
    data.eval_images(f"folder:{tmp_path / 'missing'}", 32)
  with pytest.raises(ValueError, match="source"):
    data.eval_images(f"folder:{tmp_path}", 32)  # Empty folder.
  (tmp_path / "x.png").write_text("nope")
  with pytest.raises(ValueError, match="no readable images"):
    data.eval_images(f"folder:{tmp_path}", 32)
  with pytest.raises(ValueError, match="resolution"):
    data.eval_images("bundled", 0)
  with pytest.raises(ValueError, match="max_images"):
    data.eval_images("bundled", 8, max_images=0)
  with pytest.raises(ValueError, match="tfds"):
    data.eval_images("tfds:no_such_dataset_xyz", 8, tfds_data_dir=str(tmp_path))
