"""Tests of jaxtok.data.sources: source strings, record lists and readers of each kind."""
import pickle

import numpy as np
import pytest

from jaxtok import data
from tests.data.common import prepare_tiny_tfds, take, tiny_tfds_png, write_image


def test_parse_source():
  assert data.parse_source("bundled") == data.SourceSpec("bundled", "", "")
  assert data.parse_source("folder:/a/b:c") == ("folder", "/a/b:c", "")
  assert data.parse_source("tfds:imagenet2012/5.1.0") == ("tfds", "imagenet2012/5.1.0", "train")
  assert data.parse_source("tfds:x:train[:1%]").split == "train[:1%]"
  for source in ("", "imagenet", "folder:", "tfds:", "Bundled", 3, None):
    with pytest.raises(ValueError, match="source"):
      data.parse_source(source)


def test_open_source_bundled_sets():
  names, reader = data.open_source("bundled")
  assert names == list(data.bundled_train_names())
  assert data.open_source("bundled", bundled="held_out")[0] == list(data.HELD_OUT)
  assert data.open_source("bundled", bundled="all")[0] == list(
      data.bundled_train_names(include_held_out=True))
  np.testing.assert_array_equal(reader(names[0]), data.bundled_photos()[names[0]])
  assert isinstance(pickle.loads(pickle.dumps(reader)), data.BundledReader)
  with pytest.raises(ValueError, match="bundled: expected one of"):
    data.open_source("bundled", bundled="test")


def test_open_source_folder_lists_sorted_images_recursively(tmp_path):
  a = write_image(tmp_path / "b" / "z.JPEG", 1, fmt="PNG")  # Suffix case does not matter.
  write_image(tmp_path / "a.png", 2)
  write_image(tmp_path / "b" / "c" / "y.webp", 3, fmt="WEBP")
  (tmp_path / "notes.txt").write_text("not an image")
  (tmp_path / "dir.png").mkdir()  # A directory, even with an image suffix, is no record.
  files, reader = data.open_source(f"folder:{tmp_path}")
  assert files == data.list_image_files(tmp_path) == sorted(files)
  assert [f[len(str(tmp_path)) + 1:] for f in files] == ["a.png", "b/c/y.webp", "b/z.JPEG"]
  np.testing.assert_array_equal(reader(files[2]), a)
  with pytest.raises(ValueError, match="does not exist"):
    data.open_source(f"folder:{tmp_path / 'missing'}")
  with pytest.raises(ValueError, match="holds no"):
    data.open_source(f"folder:{tmp_path / 'dir.png'}")
  with pytest.raises(ValueError, match="bundled"):  # Checked for every kind of source.
    data.open_source(f"folder:{tmp_path}", bundled="nope")


def test_tfds_source_reads_prepared_array_record(tmp_path):
  name = prepare_tiny_tfds(tmp_path)
  records, reader = data.open_source(f"tfds:{name}", tfds_data_dir=str(tmp_path))
  assert records == range(7)
  # tfds stores the examples shuffled: compare the images and labels as sets.
  want = {data.decode_image(tiny_tfds_png(i), "png").tobytes(): i % 3 for i in range(7)}
  got = {}
  for index in records:
    example = reader.example(index)
    image = reader.image(example, f"{name}[{index}]")
    np.testing.assert_array_equal(reader(index), image)
    got[image.tobytes()] = int(example["label"])
  assert got == want
  # Workers get the reader by pickling: the opened source stays behind and reopens lazily.
  clone = pickle.loads(pickle.dumps(reader))
  assert clone._source is None
  np.testing.assert_array_equal(clone(3), reader(3))
  with pytest.raises(KeyError, match="no feature 'photo'"):
    data.open_source(f"tfds:{name}", tfds_data_dir=str(tmp_path), image_key="photo")[1](0)
  # The training stream and the evaluation images read it too.
  cfg = data.DataConfig(source=f"tfds:{name}:train", tfds_data_dir=str(tmp_path),
                        resolution=12)
  it = data.create_train_iterator(cfg, batch_size=4, seed=0)
  batches = take(it, 4)  # 16 images over 7 examples: repeats epochs.
  assert all(b.shape == (4, 12, 12, 3) for b in batches)
  assert it.stats == {"images": 16, "skipped": 0, "batches": 4}
  shard = data.host_records(cfg, process_index=1, process_count=2)
  assert shard == [1, 3, 5]
  ev = data.eval_images(f"tfds:{name}:validation", 12, tfds_data_dir=str(tmp_path))
  assert ev.shape == (3, 12, 12, 3)
  with pytest.raises(ValueError, match="split"):
    data.eval_images(f"tfds:{name}:nosuchsplit", 12, tfds_data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="tfds"):
    data.open_source("tfds:no_such_dataset_xyz", tfds_data_dir=str(tmp_path))
