"""Image data for training and evaluation: bundled photos, folders and tfds datasets.

Three sources, named by a string:

- `bundled`: the real photographs that ship inside scikit-image (`skimage.data`),
  scikit-learn (`load_sample_images`) and matplotlib (`grace_hopper.jpg`). Nothing is
  downloaded. A fixed set of them (`HELD_OUT`) is reserved for evaluation and never
  trained on.
- `folder:PATH`: every JPEG/PNG/WebP file under `PATH` (recursively, sorted paths).
- `tfds:NAME[:SPLIT]`: a tensorflow-datasets dataset already prepared on disk, read with
  `tfds.data_source` (random access over array_record files; needs no TensorFlow).
  `NAME` may carry a config/version (`imagenet2012/5.1.0`); `SPLIT` defaults to `train`
  and may be a slice (`train[:1%]`). The data directory is `DataConfig.tfds_data_dir`
  (else tfds' default, `$TFDS_DATA_DIR` or `~/tensorflow_datasets`).

Training (`create_train_iterator`) is a grain pipeline: the record indices of this host's
shard are shuffled per epoch (infinite epochs), each record is decoded and randomly
cropped (random square crop of a random fraction of the shorter side's area, resized with
PIL's antialiased bicubic filter) and flipped; unreadable records are skipped, counted and
logged, never fatal. Batches are `{"image": uint8 [b, R, R, 3]}` per host; the iterator's
`get_state()` is a JSON-serialisable dict, so a resumed run sees exactly the same batches.
Every random choice is a pure function of (seed, position in the stream), so results do
not depend on the number of worker threads/processes.

Evaluation (`eval_images`) is deterministic: center square crop + bicubic resize.

(Over 500 lines: the three sources, the crops, THE `DataConfig` and the checkpointable
pipeline share private readers and record lists; split them only by making those public.)
"""
# No `from __future__ import annotations`: config_flags reads DataConfig's field types.
import dataclasses
import functools
import io
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import skimage.data
from absl import flags
from matplotlib import cbook
from PIL import Image
from sklearn.datasets import load_sample_images

_LOG = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")

# Bundled photographs. Color ones first; grayscale ones are replicated to RGB.
_SKIMAGE_COLOR = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
                  "immunohistochemistry")
_SKIMAGE_GRAY = ("camera", "coins", "moon", "clock", "grass", "gravel", "brick", "cell",
                 "text", "page")

# Photos never trained on when `source="bundled"`: four natural color photos of
# different kinds (animal, still life, portrait, plant), none of which has a near-duplicate
# among the training photos (skimage's `cat` is the same picture as `chelsea` and is not
# bundled; the two motorcycle views stay together on the training side).
HELD_OUT: tuple[str, ...] = ("chelsea", "coffee", "grace_hopper", "flower")

# How many skipped records are logged one by one before only the count is kept.
_MAX_LOGGED_ERRORS = 20


# ----------------------------------------------------------------------------------------
# Bundled photos.
# ----------------------------------------------------------------------------------------
def _to_rgb_uint8(image: np.ndarray, name: str) -> np.ndarray:
  """`[H, W]`, `[H, W, 1|3|4]` uint8/bool/float -> `[H, W, 3]` uint8."""
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


@functools.lru_cache(maxsize=1)
def _load_bundled() -> tuple[tuple[str, np.ndarray], ...]:
  photos = []
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for name in _SKIMAGE_COLOR + _SKIMAGE_GRAY:
      photos.append((name, getattr(skimage.data, name)()))
    left, right, _ = skimage.data.stereo_motorcycle()
    photos += [("motorcycle_left", left), ("motorcycle_right", right)]
    samples = load_sample_images()
    for filename, image in zip(samples.filenames, samples.images):
      photos.append((Path(filename).stem, image))  # china, flower
    with cbook.get_sample_data("grace_hopper.jpg") as f:
      photos.append(("grace_hopper", np.asarray(Image.open(f).convert("RGB"))))
  out = []
  for name, image in photos:
    image = _to_rgb_uint8(image, name)
    image.setflags(write=False)  # Shared by every caller through the cache.
    out.append((name, image))
  return tuple(out)


def bundled_photos() -> dict[str, np.ndarray]:
  """All bundled photos, by name: `{name: uint8 [H, W, 3]}` (read-only arrays).

  Includes the `HELD_OUT` ones; sizes vary (about 300 to 1400 pixels a side).
  """
  return dict(_load_bundled())


def bundled_train_names(include_held_out: bool = False) -> tuple[str, ...]:
  """Names of the bundled photos used for training (all but `HELD_OUT` by default)."""
  return tuple(n for n, _ in _load_bundled() if include_held_out or n not in HELD_OUT)


# ----------------------------------------------------------------------------------------
# Image ops.
# ----------------------------------------------------------------------------------------
def _decode(data: Any, what: str) -> np.ndarray:
  """Decodes a path / encoded bytes / array into `[H, W, 3]` uint8; raises on bad data."""
  if isinstance(data, (str, os.PathLike)):
    with Image.open(data) as im:
      im.load()  # Forces a full decode so truncated files fail here, not later.
      return np.asarray(im.convert("RGB"))
  if isinstance(data, (bytes, bytearray)):
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      return np.asarray(im.convert("RGB"))
  return _to_rgb_uint8(data, what)


def _crop_resize(image: np.ndarray, top: int, left: int, side: int,
                 resolution: int) -> np.ndarray:
  crop = image[top:top + side, left:left + side]
  if crop.shape[0] == resolution and crop.shape[1] == resolution:
    return np.ascontiguousarray(crop)
  # PIL widens the bicubic kernel by the downscale factor, i.e. it antialiases.
  return np.asarray(Image.fromarray(crop).resize((resolution, resolution),
                                                 Image.Resampling.BICUBIC))


def center_crop_resize(image: np.ndarray, resolution: int) -> np.ndarray:
  """Center square crop (side = shorter side) resized to `[R, R, 3]` uint8 (bicubic)."""
  h, w = image.shape[:2]
  side = min(h, w)
  return _crop_resize(image, (h - side) // 2, (w - side) // 2, side, resolution)


def random_crop_resize(image: np.ndarray, resolution: int, rng: np.random.Generator,
                       scale: tuple[float, float], flip: bool) -> np.ndarray:
  """Random square crop covering `U(scale)` of the shorter side's square area, resized.

  Args:
    image: `[H, W, 3]` uint8.
    resolution: output side R.
    rng: numpy generator (grain hands one per element, derived from seed and index).
    scale: (min, max) fraction of `min(H, W)**2` covered by the crop.
    flip: flip horizontally with probability 1/2.

  Returns:
    `[R, R, 3]` uint8.
  """
  h, w = image.shape[:2]
  short = min(h, w)
  frac = rng.uniform(scale[0], scale[1])
  side = int(np.clip(round(short * np.sqrt(frac)), 1, short))
  top = int(rng.integers(0, h - side + 1))
  left = int(rng.integers(0, w - side + 1))
  out = _crop_resize(image, top, left, side, resolution)
  if flip and rng.uniform() < 0.5:
    out = np.ascontiguousarray(out[:, ::-1])
  return out


# Unit vectors of the YIQ-like chroma plane orthogonal to grey (1, 1, 1) / sqrt(3).
_CHROMA = np.array([[1.0, -1.0, 0.0], [1.0, 1.0, -2.0]]) / np.array([[np.sqrt(2.0)],
                                                                    [np.sqrt(6.0)]])


def augment_colors(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
  """Random colour change of one `[R, R, 3]` uint8 image (see `DataConfig.color_jitter`).

  Grey stays grey except for the brightness shift: the hue rotation and the saturation act on
  the chroma plane orthogonal to (1, 1, 1).
  """
  x = image.astype(np.float32) / 255.0
  if rng.uniform() < strength:
    x = x[..., rng.permutation(3)]
  grey = x.mean(axis=-1, keepdims=True)
  chroma = (x - grey) @ _CHROMA.T  # [R, R, 2]
  angle = rng.uniform(-np.pi, np.pi) * strength
  c, s_ = np.cos(angle), np.sin(angle)
  rot = np.array([[c, -s_], [s_, c]], np.float32) * rng.uniform(1 - strength / 2,
                                                               1 + strength / 2)
  x = grey + rng.uniform(-strength / 4, strength / 4) + (chroma @ rot.T) @ _CHROMA
  return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------
# Sources: a random-access list of records + a function that turns one into an image.
# ----------------------------------------------------------------------------------------
def _parse_source(source: str) -> tuple[str, str, str]:
  """`bundled` | `folder:PATH` | `tfds:NAME[:SPLIT]` -> (kind, arg, split)."""
  if not isinstance(source, str):
    raise ValueError(f"source: expected a string like 'bundled', 'folder:PATH' or "
                     f"'tfds:NAME[:split]', got {source!r}")
  if source == "bundled":
    return "bundled", "", ""
  kind, sep, rest = source.partition(":")
  if sep and kind == "folder" and rest:
    return "folder", rest, ""
  if sep and kind == "tfds" and rest:
    name, _, split = rest.partition(":")
    return "tfds", name, split or "train"
  raise ValueError(f"source: expected 'bundled', 'folder:PATH' or 'tfds:NAME[:split]', "
                   f"got {source!r}")


def list_image_files(root: str | os.PathLike) -> list[str]:
  """Sorted paths of every .jpg/.jpeg/.png/.webp file (any case) under `root`."""
  root = Path(root).expanduser()
  if not root.is_dir():
    raise ValueError(f"source: folder {str(root)!r} does not exist or is not a directory")
  files = [str(p) for p in root.rglob("*")
           if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
  return sorted(files)


class _BundledReader:
  """Record = photo name."""

  def __call__(self, name: str) -> np.ndarray:
    return dict(_load_bundled())[name]


class _FileReader:
  """Record = file path."""

  def __call__(self, path: str) -> np.ndarray:
    return _decode(path, path)


class _TfdsReader:
  """Record = integer index into a `tfds.data_source`; opened lazily (per process)."""

  def __init__(self, name: str, split: str, data_dir: str | None, image_key: str):
    self.name, self.split, self.data_dir, self.image_key = name, split, data_dir, image_key
    self._source = None

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != "_source"} | {"_source": None}

  @property
  def source(self):
    if self._source is None:
      self._source = _open_tfds(self.name, self.split, self.data_dir)
    return self._source

  def __call__(self, index: int) -> np.ndarray:
    example = self.source[int(index)]
    if self.image_key not in example:
      raise KeyError(f"tfds example has no feature {self.image_key!r} "
                     f"(features: {sorted(example)})")
    return _decode(example[self.image_key], f"{self.name}[{index}]")


def _open_tfds(name: str, split: str, data_dir: str | None):
  import tensorflow_datasets as tfds  # noqa: PLC0415  (lazy: pulls in TensorFlow)
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises many types; the message is what matters.
    raise ValueError(
        f"source: could not open tfds dataset {name!r} split {split!r} in data_dir "
        f"{data_dir or '(tfds default)'!r}; it must be prepared on disk in array_record "
        f"format (tfrecord needs the `tf` extra and is not random-access). "
        f"Cause: {type(e).__name__}: {e}") from e


def _records(kind: str, arg: str, split: str, cfg: "DataConfig | None",
             data_dir: str | None = None, image_key: str = "image"
             ) -> tuple[Sequence[Any], Callable[[Any], np.ndarray]]:
  """Records of a source and the reader that turns one record into `[H, W, 3]` uint8."""
  if kind == "bundled":
    include = bool(cfg and cfg.include_held_out)
    names = list(bundled_train_names(include)) if cfg is not None else list(HELD_OUT)
    return names, _BundledReader()
  if kind == "folder":
    files = list_image_files(arg)
    if not files:
      raise ValueError(f"source: folder {arg!r} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
    return files, _FileReader()
  reader = _TfdsReader(arg, split, data_dir, image_key)
  n = len(reader.source)
  if n == 0:
    raise ValueError(f"source: tfds dataset {arg!r} split {split!r} is empty")
  return range(n), reader


# ----------------------------------------------------------------------------------------
# Training pipeline.
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass(kw_only=True)
class DataConfig:
  """THE data config: training stream and held-out images (`config.data` of the trainer).

  Attributes:
    source: training images: `bundled`, `folder:PATH` or `tfds:NAME[:split]` (see the module
      docstring).
    eval_source: held-out images for PSNR, grids and evaluators (same syntax; `bundled` =
      the `HELD_OUT` photos).
    resolution: output side R in pixels. None = the model's `image_size` (the trainer fills
      it in and rejects any other value: the model config is the one source of truth).
    num_eval_images: how many `eval_source` images the trainer evaluates and draws.
    crop_scale: (min, max) fraction of the shorter side's square area covered by the
      random square crop; (1.0, 1.0) = "resize shorter side + random crop" (the TiTok
      ImageNet recipe, arXiv 2406.07550).
    flip: random horizontal flips.
    color_jitter: strength s in [0, 1] of a per-image colour augmentation (0 = off): a random
      permutation of the RGB channels with probability s, a hue rotation of up to s * 180
      degrees around the grey axis, saturation x U(1 - s/2, 1 + s/2) and brightness
      +- s/4 (`augment_colors`). Few training photos (`bundled`) otherwise teach the model
      the colours of those photos; ImageNet recipes leave it off.
    seed: seed of the shuffle and the crops (overridable in `create_train_iterator`); the
      trainer's model init has its own seed (`TrainConfig.seed`).
    shuffle: shuffle records each epoch (off: file order, still infinite).
    num_workers: grain worker processes (0 = decode in threads of this process).
    read_threads: decoding threads (per process).
    prefetch: elements buffered ahead by the reading threads.
    include_held_out: for `bundled`, also train on `HELD_OUT` (off by default so that
      held-out metrics stay honest).
    tfds_data_dir: data_dir for `tfds:` sources (None = tfds' default).
    image_key: the image feature of `tfds:` examples.
  """
  source: str = "bundled"
  eval_source: str = "bundled"
  resolution: int | None = None
  num_eval_images: int = 8
  crop_scale: tuple[float, float] = (0.25, 1.0)
  flip: bool = True
  color_jitter: float = 0.0
  seed: int = 0
  shuffle: bool = True
  num_workers: int = 0
  read_threads: int = 4
  prefetch: int = 64
  include_held_out: bool = False
  tfds_data_dir: str | None = None
  image_key: str = "image"

  def validate(self) -> None:
    """Raises ValueError naming the first bad field (`resolution` None is allowed here)."""
    _parse_source(self.source)
    _parse_source(self.eval_source)
    if self.resolution is not None:
      _check_resolution(self.resolution)
    if not isinstance(self.num_eval_images, int) or self.num_eval_images < 1:
      raise ValueError(f"num_eval_images: expected a positive int, got "
                       f"{self.num_eval_images!r}")
    lo, hi = self.crop_scale
    if not 0.0 < lo <= hi <= 1.0:
      raise ValueError(f"crop_scale: expected 0 < min <= max <= 1, got {self.crop_scale!r}")
    if not 0.0 <= self.color_jitter <= 1.0:
      raise ValueError(f"color_jitter: expected a strength in [0, 1], got {self.color_jitter!r}")
    if self.num_workers < 0 or self.read_threads < 1 or self.prefetch < 1:
      raise ValueError(f"num_workers >= 0, read_threads >= 1, prefetch >= 1 expected, got "
                       f"{self.num_workers}, {self.read_threads}, {self.prefetch}")


def _check_resolution(resolution: Any) -> int:
  if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution <= 0:
    raise ValueError(f"resolution: expected a positive int, got {resolution!r}")
  return resolution


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
  kind, arg, split = _parse_source(cfg.source)
  records, reader = _records(kind, arg, split, cfg, cfg.tfds_data_dir, cfg.image_key)
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
  resolution = _check_resolution(cfg.resolution)
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


# ----------------------------------------------------------------------------------------
# Evaluation images.
# ----------------------------------------------------------------------------------------
def eval_images(source: str, resolution: int, *, max_images: int | None = None,
                tfds_data_dir: str | None = None, image_key: str = "image") -> np.ndarray:
  """Deterministic evaluation images: center square crop + bicubic resize.

  Args:
    source: `bundled` (the `HELD_OUT` photos, in that order), `folder:PATH` (sorted
      files; unreadable ones skipped with a warning) or `tfds:NAME[:split]` (split
      defaults to `train`; use e.g. `tfds:imagenet2012:validation`).
    resolution: output side R.
    max_images: keep only the first this many (default: all; mind memory on big splits).
    tfds_data_dir, image_key: as in `DataConfig`.

  Returns:
    `[N, R, R, 3]` uint8.
  """
  _check_resolution(resolution)
  if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
    raise ValueError(f"max_images: expected None or a positive int, got {max_images!r}")
  kind, arg, split = _parse_source(source)
  if kind == "bundled":
    photos = bundled_photos()
    records, reader = list(HELD_OUT), photos.__getitem__
  else:
    records, reader = _records(kind, arg, split, None, tfds_data_dir, image_key)
  out, skipped = [], 0
  for record in records:
    if max_images is not None and len(out) >= max_images:
      break
    try:
      image = reader(record)
    except Exception as e:  # Bad files are skipped, as in training.
      skipped += 1
      _LOG.warning("eval_images: skipped unreadable record %s: %s: %s", record,
                   type(e).__name__, e)
      continue
    out.append(center_crop_resize(image, resolution))
  if not out:
    raise ValueError(f"source: {source!r} gave no readable images ({skipped} unreadable)")
  return np.stack(out)


def eval_tiles(source: str, resolution: int, *, max_images: int | None = None,
                tiles: int = 1) -> np.ndarray:
  """uint8 `[N, R, R, 3]` from `eval_images`, optionally cut into `tiles x tiles` crops
  (each image resized to `resolution * tiles`, then tiled: more test crops per photo)."""
  if tiles == 1:
    return eval_images(source, resolution, max_images=max_images)
  big = eval_images(source, resolution * tiles)
  n, r = big.shape[0], resolution
  out = big.reshape(n, tiles, r, tiles, r, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, r, r, 3)
  return out[:max_images] if max_images else out
