"""Image sources: a string names one; opened, it is a list of records and a reader.

Three sources:

- `bundled`: the photos of `jaxtok.data.bundled`; a record is a photo's name. Which photos
  depends on the use (`BUNDLED_SETS`): training takes all but `HELD_OUT`, evaluation only
  `HELD_OUT`.
- `folder:PATH`: every JPEG/PNG/WebP file under `PATH` (recursively, sorted paths); a record
  is a file path.
- `tfds:NAME[:SPLIT]`: a tensorflow-datasets dataset already prepared on disk, read with
  `tfds.data_source` (random access over array_record files; needs no TensorFlow); a record
  is an example's index. `NAME` may carry a config/version (`imagenet2012/5.1.0`); `SPLIT`
  defaults to `train` and may be a slice (`train[:1%]`). The data directory is
  `tfds_data_dir` (else tfds' default, `$TFDS_DATA_DIR` or `~/tensorflow_datasets`).

`open_source(spec)` returns `(records, reader)`: a deterministic random-access sequence and a
picklable callable turning one record into `[H, W, 3]` uint8 (it raises on an unreadable
record; grain's worker processes get the reader by pickling).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxtok.data.bundled import HELD_OUT, bundled_photos, bundled_train_names
from jaxtok.data.images import decode_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")

# Which bundled photos `open_source("bundled", bundled=...)` lists: the training photos (all
# but HELD_OUT), the held-out ones (in HELD_OUT's order), or all of them.
BUNDLED_SETS = ("train", "held_out", "all")


class SourceSpec(NamedTuple):
  """A parsed source string."""
  kind: str  # "bundled", "folder" or "tfds".
  arg: str  # The folder path or the tfds dataset name; "" for bundled.
  split: str  # The tfds split; "" for the other kinds.


def parse_source(source: str) -> SourceSpec:
  """`bundled` | `folder:PATH` | `tfds:NAME[:SPLIT]` -> its `SourceSpec`.

  Raises:
    ValueError: naming `source`, for anything else.
  """
  if not isinstance(source, str):
    raise ValueError(f"source: expected a string like 'bundled', 'folder:PATH' or "
                     f"'tfds:NAME[:split]', got {source!r}")
  if source == "bundled":
    return SourceSpec("bundled", "", "")
  kind, sep, rest = source.partition(":")
  if sep and kind == "folder" and rest:
    return SourceSpec("folder", rest, "")
  if sep and kind == "tfds" and rest:
    name, _, split = rest.partition(":")
    return SourceSpec("tfds", name, split or "train")
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


class BundledReader:
  """Record = bundled photo name."""

  def __call__(self, name: str) -> np.ndarray:
    return bundled_photos()[name]


class FileReader:
  """Record = file path."""

  def __call__(self, path: str) -> np.ndarray:
    return decode_image(path, path)


class TfdsReader:
  """Record = integer index into a `tfds.data_source`; opened lazily (once per process).

  `example(index)` is the raw feature dict (labels, ids, ...), `image(example, what)` decodes
  its image feature; calling the reader does both.
  """

  def __init__(self, name: str, split: str, data_dir: str | None, image_key: str):
    self.name, self.split, self.data_dir, self.image_key = name, split, data_dir, image_key
    self._source = None

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != "_source"} | {"_source": None}

  @property
  def source(self):
    """The opened `tfds.data_source` (random access, `len()`)."""
    if self._source is None:
      self._source = open_tfds(self.name, self.split, self.data_dir)
    return self._source

  def example(self, index: int) -> Mapping[str, Any]:
    return self.source[int(index)]

  def image(self, example: Mapping[str, Any], what: str) -> np.ndarray:
    """The `image_key` feature of `example` as `[H, W, 3]` uint8 (`what` names it in errors)."""
    if self.image_key not in example:
      raise KeyError(f"tfds example has no feature {self.image_key!r} "
                     f"(features: {sorted(example)})")
    return decode_image(example[self.image_key], what)

  def __call__(self, index: int) -> np.ndarray:
    return self.image(self.example(index), f"{self.name}[{index}]")


def open_tfds(name: str, split: str, data_dir: str | None):
  """`tfds.data_source` of a dataset prepared on disk (never downloads)."""
  import tensorflow_datasets as tfds  # noqa: PLC0415  (lazy: pulls in TensorFlow)
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises many types; the message is what matters.
    raise ValueError(
        f"source: could not open tfds dataset {name!r} split {split!r} in data_dir "
        f"{data_dir or '(tfds default)'!r}; it must be prepared on disk in array_record "
        f"format (tfrecord needs the `tf` extra and is not random-access). "
        f"Cause: {type(e).__name__}: {e}") from e


def open_source(source: str, *, bundled: str = "train",
                tfds_data_dir: str | None = None, image_key: str = "image"
                ) -> tuple[Sequence[Any], Callable[[Any], np.ndarray]]:
  """The records of a source and the reader that turns one record into `[H, W, 3]` uint8.

  Args:
    source: a source string (see the module docstring).
    bundled: which bundled photos a `bundled` source lists, one of `BUNDLED_SETS`.
    tfds_data_dir: data_dir of a `tfds:` source (None = tfds' default).
    image_key: the image feature of `tfds:` examples.

  Returns:
    `(records, reader)`: photo names (`BundledReader`), sorted file paths (`FileReader`) or
    `range(len(split))` (`TfdsReader`).

  Raises:
    ValueError: for a bad source string, a missing or image-less folder, a tfds dataset that
      is not prepared or an empty split.
  """
  spec = parse_source(source)
  if bundled not in BUNDLED_SETS:  # Checked for every kind: a typo is never silent.
    raise ValueError(f"bundled: expected one of {BUNDLED_SETS}, got {bundled!r}")
  if spec.kind == "bundled":
    if bundled == "held_out":
      return list(HELD_OUT), BundledReader()
    return list(bundled_train_names(include_held_out=bundled == "all")), BundledReader()
  if spec.kind == "folder":
    files = list_image_files(spec.arg)
    if not files:
      raise ValueError(f"source: folder {spec.arg!r} holds no {'/'.join(IMAGE_EXTENSIONS)} "
                       f"files")
    return files, FileReader()
  reader = TfdsReader(spec.arg, spec.split, tfds_data_dir, image_key)
  n = len(reader.source)
  if n == 0:
    raise ValueError(f"source: tfds dataset {spec.arg!r} split {spec.split!r} is empty")
  return range(n), reader
