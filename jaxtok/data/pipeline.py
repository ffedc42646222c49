"""The training stream: a checkpointable grain pipeline of augmented crops, per host.

The record indices of this host's shard (every count-th record, from its index) are shuffled
per epoch (infinite epochs), each record is decoded and randomly cropped (random square crop of
a random fraction of the shorter side's area, resized with PIL's antialiased bicubic filter),
flipped and optionally colour-jittered; unreadable records are skipped, counted and logged,
never fatal. Batches are `{"image": uint8 [b, R, R, 3]}` per host; the iterator's `get_state()`
is a JSON-serialisable dict, so a resumed run sees exactly the same batches. Every random
choice is a pure function of (seed, position in the stream), so results do not depend on the
number of worker threads/processes.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np
from absl import flags

from jaxtok.data.augment import augment_colors, random_crop_resize
from jaxtok.data.config import DataConfig, check_resolution
from jaxtok.data.sources import open_source

_LOG = logging.getLogger(__name__)

# How many skipped records are logged one by one before only the count is kept.
_MAX_LOGGED_ERRORS = 20


class _RandomCropTransform:
  """(record, rng) -> {"image": [R, R, 3] uint8} or {"error": str} for a bad record."""

  def __init__(self, reader, resolution: int, scale: tuple[float, float], flip: bool,
               color_jitter: float = 0.0):
    self.reader, self.resolution, self.scale, self.flip = reader, resolution, scale, flip
    self.color_jitter = color_jitter

  def __call__(self, record, rng: np.random.Generator) -> dict[str, Any]:
    try:
      image = self.reader(record)
      if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")
      out = random_crop_resize(image, self.resolution, rng, self.scale, self.flip)
      if self.color_jitter:
        out = augment_colors(out, rng, self.color_jitter)
      return {"image": out}
    except Exception as e:  # Any decode failure is a bad record: skip, never fatal.
      return {"error": f"{record}: {type(e).__name__}: {e}"}


class TrainIterator(grain.DatasetIterator):
  """Drops bad records (counting them) and stacks good ones into per-host batches.

  Yields `{"image": uint8 [batch_size, R, R, 3]}`. `get_state()` is a JSON-serialisable
  dict (it is what grain's Orbax handler and `DatasetIterator.save` write); `stats` holds
  the counts `{"images": ..., "skipped": ..., "batches": ...}` and `last_errors`.
  """

  def __init__(self, parent: grain.DatasetIterator, batch_size: int, num_records: int):
    super().__init__(parent)
    self._batch_size = batch_size
    self._num_records = num_records
    self._images = 0
    self._skipped = 0
    self._batches = 0
    self.last_errors: list[str] = []

  @property
  def stats(self) -> dict[str, int]:
    return {"images": self._images, "skipped": self._skipped, "batches": self._batches}

  def __next__(self) -> dict[str, np.ndarray]:
    self._assert_not_closed()
    images = []
    bad_in_a_row = 0
    while len(images) < self._batch_size:
      element = next(self._parent)
      if "error" in element:
        self._skipped += 1
        bad_in_a_row += 1
        self.last_errors = (self.last_errors + [element["error"]])[-_MAX_LOGGED_ERRORS:]
        if self._skipped <= _MAX_LOGGED_ERRORS:
          _LOG.warning("data: skipped unreadable record (%d so far): %s", self._skipped,
                       element["error"])
        if bad_in_a_row >= self._num_records:
          raise RuntimeError(
              f"data: {bad_in_a_row} records in a row were unreadable, a whole epoch of "
              f"this host's {self._num_records} records; last error: {element['error']}")
        continue
      bad_in_a_row = 0
      images.append(element["image"])
    self._images += len(images)
    self._batches += 1
    return {"image": np.stack(images)}

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._parent.get_state(), "images": self._images,
            "skipped": self._skipped, "batches": self._batches}

  def set_state(self, state: Mapping[str, Any]) -> None:
    if not isinstance(state, Mapping) or "parent" not in state:
      raise ValueError(f"state: expected a dict from TrainIterator.get_state(), got "
                       f"{type(state).__name__}")
    self._parent.set_state(state["parent"])
    self._images = int(state["images"])
    self._skipped = int(state["skipped"])
    self._batches = int(state["batches"])


def _host(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not (isinstance(count, int) and count >= 1 and isinstance(index, int)
          and 0 <= index < count):
    raise ValueError(f"process_index/process_count: expected 0 <= index < count, got "
                     f"{process_index!r}/{process_count!r}")
  return index, count


def _host_shard(cfg: DataConfig, process_index: int | None, process_count: int | None
                ) -> tuple[Sequence[Any], Callable[[Any], np.ndarray]]:
  """(this host's records: every count-th from its index, the record reader)."""
  index, count = _host(process_index, process_count)
  records, reader = open_source(cfg.source, bundled="all" if cfg.include_held_out else "train",
                                tfds_data_dir=cfg.tfds_data_dir, image_key=cfg.image_key)
  if len(records) < count:
    raise ValueError(f"process_count: {count} hosts but source {cfg.source!r} has only "
                     f"{len(records)} records; every host needs at least one")
  return records[index::count], reader


def host_records(cfg: DataConfig, process_index: int | None = None,
                 process_count: int | None = None) -> list[Any]:
  """The records (names / paths / tfds indices) this host trains on: every count-th."""
  cfg.validate()
  return list(_host_shard(cfg, process_index, process_count)[0])


def create_train_iterator(cfg: DataConfig, *, batch_size: int, seed: int | None = None,
                          process_index: int | None = None,
                          process_count: int | None = None) -> TrainIterator:
  """The infinite, checkpointable training iterator of this host.

  Args:
    cfg: data settings.
    batch_size: images per batch on this host (the global batch / process count).
    seed: overrides `cfg.seed` when given.
    process_index, process_count: this host's shard (default: jax's). Host i reads
      records i, i + count, i + 2 count, ... of the source's sorted record list.

  Returns:
    A `TrainIterator` yielding `{"image": uint8 [batch_size, R, R, 3]}` (values 0..255;
    divide by 255 for the [0, 1] floats models take); `get_state()` / `set_state()`
    resume the exact stream; `stats` counts skipped unreadable records.
  """
  cfg.validate()
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size: expected a positive int (per host), got {batch_size!r}")
  resolution = check_resolution(cfg.resolution)
  records, reader = _host_shard(cfg, process_index, process_count)
  ds = grain.MapDataset.source(records).seed(cfg.seed if seed is None else seed)
  if cfg.shuffle:
    ds = ds.shuffle()  # Reshuffled every epoch (grain keys the shuffle by epoch).
  ds = ds.repeat(None)
  ds = ds.random_map(_RandomCropTransform(reader, resolution, tuple(cfg.crop_scale),
                                          cfg.flip, cfg.color_jitter))
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads,
                                               prefetch_buffer_size=cfg.prefetch))
  if cfg.num_workers > 0:
    if not flags.FLAGS.is_parsed():
      # grain's worker processes read absl flags; outside an absl app (tests, notebooks)
      # take their defaults, as grain's own docs do.
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers))
  return TrainIterator(iter(it_ds), batch_size, len(records))


def to_global_batch(batch: Mapping[str, np.ndarray],
                    sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
  """Per-host numpy batch -> global `jax.Array`s laid out by `sharding`.

  The global batch is the concatenation of every host's batch along axis 0
  (`jax.make_array_from_process_local_data`).
  """
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
