"""Tests of jaxtok.data.pipeline: held-out photos, determinism, resume, host shards, bad files."""
import io
import json

import jax
import numpy as np
import pytest
from PIL import Image

from jaxtok import data
from tests.data.common import take, write_image


def test_held_out_photos_are_never_trained_on(spy_bundled):
  train = data.bundled_train_names()
  assert not set(train) & set(data.HELD_OUT)
  cfg = data.DataConfig(resolution=16, read_threads=2)
  it = data.create_train_iterator(cfg, batch_size=6, seed=3)
  take(it, 2 * len(train) // 6 + 1)  # Over two epochs.
  assert set(spy_bundled) == set(train)
  assert it.stats["skipped"] == 0
  # Opting in trains on them too.
  spy_bundled.clear()
  cfg = data.DataConfig(resolution=16, include_held_out=True)
  names = data.bundled_train_names(include_held_out=True)
  take(data.create_train_iterator(cfg, batch_size=len(names), seed=3), 1)
  assert set(spy_bundled) == set(names)


def test_train_batches_shape_determinism_and_variety():
  cfg = data.DataConfig(resolution=24)
  a = take(data.create_train_iterator(cfg, batch_size=4, seed=1), 3)
  b = take(data.create_train_iterator(cfg, batch_size=4, seed=1), 3)
  c = take(data.create_train_iterator(cfg, batch_size=4, seed=2), 3)
  assert a[0].shape == (4, 24, 24, 3) and a[0].dtype == np.uint8
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for x, y in zip(a, c))
  # Worker threads do not change the stream.
  d = take(data.create_train_iterator(
      data.DataConfig(resolution=24, read_threads=1, prefetch=1), batch_size=4, seed=1), 3)
  for x, y in zip(a, d):
    np.testing.assert_array_equal(x, y)


def test_epochs_are_reshuffled_and_crops_differ(spy_bundled):
  n = len(data.bundled_train_names())
  cfg = data.DataConfig(resolution=16, read_threads=1, prefetch=1)
  it = data.create_train_iterator(cfg, batch_size=n, seed=0)
  first, second = take(it, 2)
  order1, order2 = spy_bundled[:n], spy_bundled[n:2 * n]
  assert sorted(order1) == sorted(order2) and order1 != order2
  assert not np.array_equal(np.sort(first, axis=0), np.sort(second, axis=0))


def test_resume_from_state_gives_the_same_batches():
  cfg = data.DataConfig(resolution=16)
  it = data.create_train_iterator(cfg, batch_size=5, seed=7)
  take(it, 3)
  state = json.loads(json.dumps(it.get_state()))  # Must survive JSON (Orbax) round trip.
  expected = take(it, 4)
  fresh = data.create_train_iterator(cfg, batch_size=5, seed=7)
  fresh.set_state(state)
  got = take(fresh, 4)
  for x, y in zip(expected, got):
    np.testing.assert_array_equal(x, y)
  assert fresh.stats["batches"] == 7
  with pytest.raises(ValueError, match="state"):
    fresh.set_state([1, 2])


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
def test_resume_with_worker_processes(tmp_path):
  for i in range(5):
    write_image(tmp_path / f"{i}.png", i)
  cfg = data.DataConfig(source=f"folder:{tmp_path}", resolution=8, num_workers=1)
  it = data.create_train_iterator(cfg, batch_size=2, seed=1)
  take(it, 2)
  state = json.loads(json.dumps(it.get_state()))
  expected = take(it, 3)
  it.close()
  fresh = data.create_train_iterator(cfg, batch_size=2, seed=1)
  fresh.set_state(state)
  got = take(fresh, 3)
  fresh.close()
  for x, y in zip(expected, got):
    np.testing.assert_array_equal(x, y)
  # Worker processes produce the same stream as in-process threads.
  threads = data.create_train_iterator(
      data.DataConfig(source=f"folder:{tmp_path}", resolution=8), batch_size=2, seed=1)
  take(threads, 2)
  for x, y in zip(expected, take(threads, 3)):
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
    take(it, 4)
    assert set(spy_bundled) == set(shards[i])
  with pytest.raises(ValueError, match="process_index"):
    data.create_train_iterator(cfg, batch_size=4, process_index=3, process_count=3)
  with pytest.raises(ValueError, match="process_count"):
    data.create_train_iterator(cfg, batch_size=4, process_index=0, process_count=1000)


def test_folder_source_skips_and_counts_corrupt_files(tmp_path, caplog):
  write_image(tmp_path / "a" / "good1.jpg", 1)
  write_image(tmp_path / "a" / "b" / "good2.PNG", 2, fmt="PNG")
  write_image(tmp_path / "good3.webp", 3, fmt="WEBP")
  buf = io.BytesIO()
  Image.fromarray(np.full((64, 64, 3), 9, np.uint8)).save(buf, format="JPEG")
  (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
  (tmp_path / "notes.png").write_text("this is not an image")
  (tmp_path / "readme.txt").write_text("ignored: not an image extension")
  assert len(data.list_image_files(tmp_path)) == 5
  cfg = data.DataConfig(source=f"folder:{tmp_path}", resolution=16)
  it = data.create_train_iterator(cfg, batch_size=3, seed=0)
  with caplog.at_level("WARNING"):
    batches = take(it, 4)  # 12 good images = 4 epochs of 5 files, 2 bad each.
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




def test_color_jitter_in_the_stream():
  cfg = data.DataConfig(source="bundled", resolution=16)
  plain = next(data.create_train_iterator(cfg, batch_size=4))["image"]
  cfg.color_jitter = 0.8
  jit = next(data.create_train_iterator(cfg, batch_size=4))["image"]
  assert jit.shape == plain.shape and not np.array_equal(jit, plain)


def test_bad_arguments_raise_value_error():
  with pytest.raises(ValueError, match="batch_size"):
    data.create_train_iterator(data.DataConfig(), batch_size=0)
  with pytest.raises(ValueError, match="crop_scale"):
    data.create_train_iterator(data.DataConfig(crop_scale=(0.0, 1.0)), batch_size=1)
  with pytest.raises(ValueError, match="resolution"):
    data.create_train_iterator(data.DataConfig(), batch_size=1)  # None: the trainer fills it.
