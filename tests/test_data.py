"""Tests of jaxtok.data: sources, held-out photos, resume, sharding, bad files."""
import io
import json
import threading

import jax
import numpy as np
import pytest
from PIL import Image

from jaxtok import data


def _take(it, n):
  return [next(it)["image"] for _ in range(n)]


def _write_image(path, seed, size=(40, 56), fmt=None):
  rng = np.random.default_rng(seed)
  array = rng.integers(0, 256, size=size + (3,), dtype=np.uint8)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path, format=fmt)
  return array


@pytest.fixture(autouse=True)
def close_iterators(monkeypatch):
  """Closes every iterator a test made, so no prefetch thread outlives its test."""
  made = []
  create = data.create_train_iterator

  def tracked(*args, **kwargs):
    made.append(create(*args, **kwargs))
    return made[-1]

  monkeypatch.setattr(data, "create_train_iterator", tracked)
  yield
  for it in made:
    it.close()


class _Seen(list):
  """Names read; `clear()` also starts a new generation of readers."""
  generation = 0

  def clear(self):
    super().clear()
    self.generation += 1


@pytest.fixture
def spy_bundled(monkeypatch, close_iterators):
  """Records every bundled photo name read by readers made since the last `clear()`.

  Older readers are ignored: a closed grain iterator may still finish reads that its
  prefetch threads had started.
  """
  seen = _Seen()
  seen.generation = 1
  lock = threading.Lock()
  original = data._BundledReader.__call__

  def init(self):
    self.generation = seen.generation

  def spy(self, name):
    if getattr(self, "generation", 0) == seen.generation:
      with lock:
        seen.append(name)
    return original(self, name)

  monkeypatch.setattr(data._BundledReader, "__init__", init)
  monkeypatch.setattr(data._BundledReader, "__call__", spy)
  return seen


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
  # Grayscale photos are replicated to RGB.
  camera = photos["camera"]
  np.testing.assert_array_equal(camera[..., 0], camera[..., 2])
  assert set(data.HELD_OUT) <= set(photos)


def test_held_out_photos_are_never_trained_on(spy_bundled):
  train = data.bundled_train_names()
  assert not set(train) & set(data.HELD_OUT)
  cfg = data.DataConfig(resolution=16, read_threads=2)
  it = data.create_train_iterator(cfg, batch_size=6, seed=3)
  _take(it, 2 * len(train) // 6 + 1)  # Over two epochs.
  assert set(spy_bundled) == set(train)
  assert it.stats["skipped"] == 0
  # Opting in trains on them too.
  spy_bundled.clear()
  cfg = data.DataConfig(resolution=16, include_held_out=True)
  names = data.bundled_train_names(include_held_out=True)
  _take(data.create_train_iterator(cfg, batch_size=len(names), seed=3), 1)
  assert set(spy_bundled) == set(names)


def test_train_batches_shape_determinism_and_variety():
  cfg = data.DataConfig(resolution=24)
  a = _take(data.create_train_iterator(cfg, batch_size=4, seed=1), 3)
  b = _take(data.create_train_iterator(cfg, batch_size=4, seed=1), 3)
  c = _take(data.create_train_iterator(cfg, batch_size=4, seed=2), 3)
  assert a[0].shape == (4, 24, 24, 3) and a[0].dtype == np.uint8
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for x, y in zip(a, c))
  # Worker threads do not change the stream.
  d = _take(data.create_train_iterator(
      data.DataConfig(resolution=24, read_threads=1, prefetch=1), batch_size=4, seed=1), 3)
  for x, y in zip(a, d):
    np.testing.assert_array_equal(x, y)


def test_epochs_are_reshuffled_and_crops_differ(spy_bundled):
  n = len(data.bundled_train_names())
  cfg = data.DataConfig(resolution=16, read_threads=1, prefetch=1)
  it = data.create_train_iterator(cfg, batch_size=n, seed=0)
  first, second = _take(it, 2)
  order1, order2 = spy_bundled[:n], spy_bundled[n:2 * n]
  assert sorted(order1) == sorted(order2) and order1 != order2
  assert not np.array_equal(np.sort(first, axis=0), np.sort(second, axis=0))


def test_resume_from_state_gives_the_same_batches():
  cfg = data.DataConfig(resolution=16)
  it = data.create_train_iterator(cfg, batch_size=5, seed=7)
  _take(it, 3)
  state = json.loads(json.dumps(it.get_state()))  # Must survive JSON (Orbax) round trip.
  expected = _take(it, 4)
  fresh = data.create_train_iterator(cfg, batch_size=5, seed=7)
  fresh.set_state(state)
  got = _take(fresh, 4)
  for x, y in zip(expected, got):
    np.testing.assert_array_equal(x, y)
  assert fresh.stats["batches"] == 7
  with pytest.raises(ValueError, match="state"):
    fresh.set_state([1, 2])


def test_resume_with_worker_processes(tmp_path):
  for i in range(5):
    _write_image(tmp_path / f"{i}.png", i)
  cfg = data.DataConfig(source=f"folder:{tmp_path}", resolution=8, num_workers=1)
  it = data.create_train_iterator(cfg, batch_size=2, seed=1)
  _take(it, 2)
  state = json.loads(json.dumps(it.get_state()))
  expected = _take(it, 3)
  it.close()
  fresh = data.create_train_iterator(cfg, batch_size=2, seed=1)
  fresh.set_state(state)
  got = _take(fresh, 3)
  fresh.close()
  for x, y in zip(expected, got):
    np.testing.assert_array_equal(x, y)
  # Worker processes produce the same stream as in-process threads.
  threads = data.create_train_iterator(
      data.DataConfig(source=f"folder:{tmp_path}", resolution=8), batch_size=2, seed=1)
  _take(threads, 2)
  for x, y in zip(expected, _take(threads, 3)):
    np.testing.assert_array_equal(x, y)


def test_each_host_reads_only_its_shard(spy_bundled):
  all_names = data.bundled_train_names()
  shards = [data.host_records(data.DataConfig(), process_index=i, process_count=3)
            for i in range(3)]
  assert sorted(sum(shards, [])) == sorted(all_names)
  for i in range(3):
    for j in range(i + 1, 3):
      assert not set(shards[i]) & set(shards[j])
  cfg = data.DataConfig(resolution=16)
  for i in range(3):
    spy_bundled.clear()
    it = data.create_train_iterator(cfg, batch_size=4, seed=0, process_index=i,
                                    process_count=3)
    _take(it, 4)
    assert set(spy_bundled) == set(shards[i])
  with pytest.raises(ValueError, match="process_index"):
    data.create_train_iterator(cfg, batch_size=4, process_index=3, process_count=3)
  with pytest.raises(ValueError, match="process_count"):
    data.create_train_iterator(cfg, batch_size=4, process_index=0, process_count=1000)


def test_folder_source_skips_and_counts_corrupt_files(tmp_path, caplog):
  _write_image(tmp_path / "a" / "good1.jpg", 1)
  _write_image(tmp_path / "a" / "b" / "good2.PNG", 2, fmt="PNG")
  _write_image(tmp_path / "good3.webp", 3, fmt="WEBP")
  buf = io.BytesIO()
  Image.fromarray(np.full((64, 64, 3), 9, np.uint8)).save(buf, format="JPEG")
  (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
  (tmp_path / "notes.png").write_text("this is not an image")
  (tmp_path / "readme.txt").write_text("ignored: not an image extension")
  assert len(data.list_image_files(tmp_path)) == 5
  cfg = data.DataConfig(source=f"folder:{tmp_path}", resolution=16)
  it = data.create_train_iterator(cfg, batch_size=3, seed=0)
  with caplog.at_level("WARNING"):
    batches = _take(it, 4)  # 12 good images = 4 epochs of 5 files, 2 bad each.
  assert all(b.shape == (3, 16, 16, 3) for b in batches)
  assert it.stats["images"] == 12
  assert it.stats["skipped"] == 8
  assert any("truncated.jpg" in e for e in it.last_errors)
  assert any("notes.png" in e for e in it.last_errors)
  assert "skipped unreadable record" in caplog.text
  state = it.get_state()
  assert state["skipped"] == 8
  # eval_images skips them too, deterministically.
  ev = data.eval_images(f"folder:{tmp_path}", 16)
  assert ev.shape == (3, 16, 16, 3)
  np.testing.assert_array_equal(ev, data.eval_images(f"folder:{tmp_path}", 16))


def test_all_bad_files_is_an_error_not_a_hang(tmp_path):
  (tmp_path / "x.jpg").write_text("nope")
  (tmp_path / "y.png").write_bytes(b"\x89PNG\r\n")
  it = data.create_train_iterator(
      data.DataConfig(source=f"folder:{tmp_path}", resolution=8), batch_size=1)
  with pytest.raises(RuntimeError, match="unreadable"):
    next(it)


def test_random_and_center_crops():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
  center = data.center_crop_resize(image, 30)
  np.testing.assert_array_equal(center, image[:, 10:40])
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


def test_eval_images_bundled_is_held_out_center_crops():
  ev = data.eval_images("bundled", 32)
  assert ev.shape == (len(data.HELD_OUT), 32, 32, 3) and ev.dtype == np.uint8
  photos = data.bundled_photos()
  for i, name in enumerate(data.HELD_OUT):
    np.testing.assert_array_equal(ev[i], data.center_crop_resize(photos[name], 32))
  assert data.eval_images("bundled", 32, max_images=2).shape[0] == 2


def test_bad_arguments_raise_value_error(tmp_path):
  for source in ("", "imagenet", "folder:", "tfds:", 3):
    with pytest.raises(ValueError, match="source"):
      data.eval_images(source, 32)
  with pytest.raises(ValueError, match="source"):
    data.eval_images(f"folder:{tmp_path / 'missing'}", 32)
  with pytest.raises(ValueError, match="source"):
    data.eval_images(f"folder:{tmp_path}", 32)  # Empty folder.
  with pytest.raises(ValueError, match="resolution"):
    data.eval_images("bundled", 0)
  with pytest.raises(ValueError, match="max_images"):
    data.eval_images("bundled", 8, max_images=0)
  with pytest.raises(ValueError, match="batch_size"):
    data.create_train_iterator(data.DataConfig(), batch_size=0)
  with pytest.raises(ValueError, match="crop_scale"):
    data.create_train_iterator(data.DataConfig(crop_scale=(0.0, 1.0)), batch_size=1)
  with pytest.raises(ValueError, match="tfds"):
    data.eval_images("tfds:no_such_dataset_xyz", 8, tfds_data_dir=str(tmp_path))


def _tiny_tfds_builder():
  """The tiny tfds builder class, defined (and so registered with tfds) once per process.

  Other test modules import this file too (possibly under another module name), so the
  registry, not a module global, says whether the class exists.
  """
  import tensorflow_datasets as tfds  # noqa: PLC0415  (lazy: pulls in TensorFlow)
  try:
    return tfds.builder_cls("jaxtok_tiny_photos")
  except tfds.core.registered.DatasetNotFoundError:
    pass

  class JaxtokTinyPhotos(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    # A builder defined inside a test module has no package to look up checksums in.
    code_path = None

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 3)),
          "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(0, 7),
              "validation": self._generate_examples(100, 3)}

    def _generate_examples(self, start, n):
      for i in range(start, start + n):
        rng = np.random.default_rng(i)
        array = rng.integers(0, 256, size=(20 + i % 5, 30, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG")
        yield i, {"image": buf.getvalue(), "label": i % 3}

  return JaxtokTinyPhotos


def _prepare_tiny_tfds(data_dir):
  """Writes a tiny array_record tfds dataset; images given as PNG bytes need no TF."""
  _tiny_tfds_builder()(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return "jaxtok_tiny_photos"


def test_tfds_source_reads_prepared_array_record(tmp_path):
  name = _prepare_tiny_tfds(tmp_path)
  cfg = data.DataConfig(source=f"tfds:{name}:train", tfds_data_dir=str(tmp_path),
                        resolution=12)
  it = data.create_train_iterator(cfg, batch_size=4, seed=0)
  batches = _take(it, 4)  # 16 images over 7 examples: repeats epochs.
  assert all(b.shape == (4, 12, 12, 3) for b in batches)
  assert it.stats == {"images": 16, "skipped": 0, "batches": 4}
  shard = data.host_records(cfg, process_index=1, process_count=2)
  assert shard == [1, 3, 5]
  ev = data.eval_images(f"tfds:{name}:validation", 12, tfds_data_dir=str(tmp_path))
  assert ev.shape == (3, 12, 12, 3)
  with pytest.raises(ValueError, match="split"):
    data.eval_images(f"tfds:{name}:nosuchsplit", 12, tfds_data_dir=str(tmp_path))


def test_to_global_batch_over_eight_devices():
  mesh = jax.make_mesh((len(jax.devices()),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  it = data.create_train_iterator(data.DataConfig(resolution=8), batch_size=8, seed=0)
  batch = next(it)
  out = data.to_global_batch(batch, sharding)
  assert out["image"].shape == (8, 8, 8, 3)
  assert out["image"].sharding == sharding
  assert len(out["image"].addressable_shards) == len(jax.devices())
  np.testing.assert_array_equal(np.asarray(out["image"]), batch["image"])


def test_color_jitter_changes_colours_keeps_grey_and_validates():
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
  # Through the training stream: same shapes, other pixels than without jitter.
  cfg = data.DataConfig(source="bundled", resolution=16)
  plain = next(data.create_train_iterator(cfg, batch_size=4))["image"]
  cfg.color_jitter = 0.8
  jit = next(data.create_train_iterator(cfg, batch_size=4))["image"]
  assert jit.shape == plain.shape and not np.array_equal(jit, plain)
  with pytest.raises(ValueError, match="color_jitter"):
    data.DataConfig(color_jitter=1.5).validate()
