"""Image sources: a string names one; opened, it is a list of records and a reader.

Five sources:

- `bundled`: the photos of `jaxtok.data.bundled`; a record is a photo's name. Which photos
  depends on the use (`BUNDLED_SETS`): training takes all but `HELD_OUT`, evaluation only
  `HELD_OUT`.
- `folder:PATH`: every JPEG/PNG/WebP file under `PATH` (recursively, sorted paths); a record
  is a file path.
- `wds:PATTERN`: WebDataset tar shards. `PATTERN` is a path with brace ranges and lists
  (`shards/train-{000000..000146}.tar`, `{a,b}.tar`) and/or glob wildcards; its shards are
  indexed once (tar headers only: each member's offset and size), and a record is one image
  member (.jpg/.jpeg/.png/.webp; the first of a sample's images) read by seeking into its
  shard, so access is random, as for every other source. A sample is the members sharing a
  key (the member path up to the first dot of its basename, as WebDataset groups them); its
  `.cls` member, when present, is its label. Uncompressed tars only (a `.tar.gz` cannot be
  read at an offset).
- `hf:PATH[:SPLIT]`: a Hugging Face dataset saved on disk, read through the `datasets`
  library: a `save_to_disk` directory (arrow; a `DatasetDict` takes `SPLIT`, default
  `train`), or parquet files (a `.parquet` file, a directory of them, or a glob). Nothing is
  downloaded; a record is a row index, its image the `image_key` column (an `Image` feature,
  or encoded bytes).
- `tfds:NAME[:SPLIT]`: a tensorflow-datasets dataset already prepared on disk, read with
  `tfds.data_source` (random access over array_record files; needs no TensorFlow); a record
  is an example's index. `NAME` may carry a config/version (`imagenet2012/5.1.0`); `SPLIT`
  defaults to `train` and may be a slice (`train[:1%]`). The data directory is
  `tfds_data_dir` (else tfds' default, `$TFDS_DATA_DIR` or `~/tensorflow_datasets`).

`open_source(spec)` returns `(records, reader)`: a deterministic random-access sequence and a
picklable callable turning one record into `[H, W, 3]` uint8 (it raises on an unreadable
record; grain's worker processes get the reader by pickling). Readers of sources whose
records carry more than pixels (`wds:`, `hf:`, `tfds:`) also have `example(record)` (the
record's fields) and `image(example, what)`.
"""
from __future__ import annotations

import glob
import os
import re
import tarfile
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
  kind: str  # "bundled", "folder", "wds", "hf" or "tfds".
  arg: str  # The folder path, shard pattern, dataset path or tfds name; "" for bundled.
  split: str  # The tfds / hf split; "" for the other kinds ("" = hf's default).


SOURCE_FORMS = "'bundled', 'folder:PATH', 'wds:PATTERN', 'hf:PATH[:split]' or 'tfds:NAME[:split]'"


def parse_source(source: str) -> SourceSpec:
  """`bundled` | `folder:PATH` | `wds:PATTERN` | `hf:PATH[:SPLIT]` | `tfds:NAME[:SPLIT]` -> its
  `SourceSpec`.

  Raises:
    ValueError: naming `source`, for anything else.
  """
  if not isinstance(source, str):
    raise ValueError(f"source: expected a string like {SOURCE_FORMS}, got {source!r}")
  if source == "bundled":
    return SourceSpec("bundled", "", "")
  kind, sep, rest = source.partition(":")
  if sep and kind in ("folder", "wds") and rest:
    return SourceSpec(kind, rest, "")
  if sep and kind == "tfds" and rest:
    name, _, split = rest.partition(":")
    return SourceSpec("tfds", name, split or "train")
  if sep and kind == "hf" and rest:
    head, colon, tail = rest.rpartition(":")
    # A trailing ':NAME' is the split, unless the whole string is an existing path.
    if colon and head and re.fullmatch(r"[A-Za-z_][\w.\-\[\]%]*", tail) and not (
        os.path.exists(rest)):
      return SourceSpec("hf", head, tail)
    return SourceSpec("hf", rest, "")
  raise ValueError(f"source: expected {SOURCE_FORMS}, got {source!r}")


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


def expand_braces(pattern: str) -> list[str]:
  """`a{0..2}b{x,y}` -> every expansion, in order; `{08..10}` keeps the width (08, 09, 10)."""
  m = re.search(r"\{([^{}]*)\}", pattern)
  if m is None:
    return [pattern]
  body = m.group(1)
  rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
  if rng:
    lo, hi = rng.groups()
    if int(hi) < int(lo):
      raise ValueError(f"source: brace range {{{body}}} runs backwards in {pattern!r}")
    width = len(lo) if lo.startswith("0") else 0
    items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
  elif "," in body:
    items = body.split(",")
  else:
    raise ValueError(f"source: expected {{A..B}} or {{x,y,...}} in {pattern!r}, got {{{body}}}")
  head, tail = pattern[:m.start()], pattern[m.end():]
  return [out for item in items for out in expand_braces(head + item + tail)]


def list_shards(pattern: str) -> list[str]:
  """The tar shards a `wds:` pattern names (braces expanded, then globbed), in order."""
  shards: list[str] = []
  for p in expand_braces(os.path.expanduser(pattern)):
    found = sorted(glob.glob(p)) if glob.has_magic(p) else ([p] if os.path.isfile(p) else [])
    if not found:
      raise ValueError(f"source: wds shard {p!r} (of pattern {pattern!r}) does not exist")
    shards.extend(found)
  return shards


def _sample_key(member: str) -> tuple[str, str]:
  """(WebDataset sample key, extension): the member path split at its basename's first dot."""
  folder, _, base = member.rpartition("/")
  stem, dot, ext = base.partition(".")
  return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


class TarMember(NamedTuple):
  """A `wds:` record: one image member of a shard, with the sample's label member if any."""
  shard: str
  key: str  # The sample key ("000123", or "dir/000123").
  offset: int  # Byte offset of the member's data in the shard.
  size: int
  label_offset: int = -1  # The sample's `.cls` member, or -1.
  label_size: int = 0


def index_shard(shard: str) -> list[TarMember]:
  """The image records of one tar shard, in member order (tar headers only are read)."""
  images: dict[str, TarMember] = {}
  labels: dict[str, tuple[int, int]] = {}
  try:
    with tarfile.open(shard, mode="r:") as tar:  # "r:": uncompressed, seekable.
      for m in tar:
        if not m.isfile():
          continue
        key, ext = _sample_key(m.name)
        if "." + ext.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS and key not in images:
          images[key] = TarMember(shard, key, m.offset_data, m.size)
        elif ext == "cls":
          labels[key] = (m.offset_data, m.size)
  except (tarfile.TarError, OSError) as e:
    raise ValueError(f"source: wds shard {shard!r} is not an uncompressed tar file "
                     f"({type(e).__name__}: {e})") from e
  return [r._replace(label_offset=labels[r.key][0], label_size=labels[r.key][1])
          if r.key in labels else r for r in images.values()]


def _read_at(path: str, offset: int, size: int) -> bytes:
  with open(path, "rb") as f:
    f.seek(offset)
    data = f.read(size)
  if len(data) != size:
    raise ValueError(f"{path}: truncated at byte {offset + len(data)} (expected {size} bytes "
                     f"from {offset})")
  return data


class TarReader:
  """Record = `TarMember`: its bytes read at their offset, decoded."""

  def example(self, record: TarMember) -> dict[str, Any]:
    """`{"__key__", "image" (bytes), "label"?}` of the record's sample."""
    out: dict[str, Any] = {"__key__": record.key,
                           "image": _read_at(record.shard, record.offset, record.size)}
    if record.label_offset >= 0:
      text = _read_at(record.shard, record.label_offset, record.label_size)
      out["label"] = int(text.decode().strip())
    return out

  def image(self, example: Mapping[str, Any], what: str) -> np.ndarray:
    return decode_image(example["image"], what)

  def __call__(self, record: TarMember) -> np.ndarray:
    what = f"{record.shard}:{record.key}"
    return decode_image(_read_at(record.shard, record.offset, record.size), what)


def open_hf(path: str, split: str, image_key: str):
  """A `datasets.Dataset` saved on disk (arrow directory or parquet files), images undecoded."""
  try:
    import datasets  # noqa: PLC0415  (lazy: the `hf` extra)
  except ImportError as e:
    raise ValueError("source: hf: sources need the `datasets` library "
                     "(pip install 'jaxtok[hf]')") from e
  p = Path(path).expanduser()
  parquet = ([str(p)] if p.is_file() and p.suffix == ".parquet" else
             sorted(str(f) for f in p.rglob("*.parquet")) if p.is_dir() else
             sorted(glob.glob(str(p))) if glob.has_magic(str(p)) else [])
  try:
    if p.is_dir() and not parquet:
      ds = datasets.load_from_disk(str(p))
    elif parquet:
      ds = datasets.Dataset.from_parquet(parquet, keep_in_memory=False)
    else:
      raise ValueError(f"{path!r} does not exist (hf: names a dataset saved on disk with "
                       f"`save_to_disk`, or parquet files; hub dataset ids are not downloaded)")
  except ValueError:
    raise
  except Exception as e:  # datasets raises many types; the message is what matters.
    raise ValueError(f"source: could not open the hf dataset {path!r}: "
                     f"{type(e).__name__}: {e}") from e
  if isinstance(ds, datasets.DatasetDict):
    split = split or "train"
    if split not in ds:
      raise ValueError(f"source: hf dataset {path!r} has splits {sorted(ds)}, not {split!r}; "
                       f"expected 'hf:{path}:<split>'")
    ds = ds[split]
  elif split:
    raise ValueError(f"source: hf dataset {path!r} is a single split; got split {split!r}")
  if image_key not in ds.column_names:
    raise ValueError(f"image_key: the hf dataset {path!r} has no column {image_key!r} "
                     f"(columns: {ds.column_names})")
  if isinstance(ds.features[image_key], datasets.Image):
    ds = ds.cast_column(image_key, datasets.Image(decode=False))
  return ds


class HfReader:
  """Record = row index of an `hf:` dataset; opened lazily (once per process)."""

  def __init__(self, path: str, split: str, image_key: str):
    self.path, self.split, self.image_key = path, split, image_key
    self._ds = None

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != "_ds"} | {"_ds": None}

  @property
  def dataset(self):
    if self._ds is None:
      self._ds = open_hf(self.path, self.split, self.image_key)
    return self._ds

  def example(self, index: int) -> Mapping[str, Any]:
    return self.dataset[int(index)]

  def image(self, example: Mapping[str, Any], what: str) -> np.ndarray:
    value = example[self.image_key]
    if isinstance(value, Mapping):  # An undecoded `Image` feature: {"bytes", "path"}.
      value = value.get("bytes") or value.get("path")
    return decode_image(value, what)

  def __call__(self, index: int) -> np.ndarray:
    return self.image(self.example(index), f"{self.path}[{index}]")


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
    image_key: the image feature of `tfds:` examples / the image column of `hf:` datasets.

  Returns:
    `(records, reader)`: photo names (`BundledReader`), sorted file paths (`FileReader`),
    `TarMember`s (`TarReader`), or `range(len(split))` (`HfReader`, `TfdsReader`).

  Raises:
    ValueError: for a bad source string, a missing or image-less folder or shard set, a tfds
      or hf dataset that is not on disk, or an empty split.
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
  if spec.kind == "wds":
    records = [r for shard in list_shards(spec.arg) for r in index_shard(shard)]
    if not records:
      raise ValueError(f"source: the wds shards of {spec.arg!r} hold no "
                       f"{'/'.join(IMAGE_EXTENSIONS)} members")
    return records, TarReader()
  if spec.kind == "hf":
    reader = HfReader(spec.arg, spec.split, image_key)
    if len(reader.dataset) == 0:
      raise ValueError(f"source: hf dataset {spec.arg!r} is empty")
    return range(len(reader.dataset)), reader
  reader = TfdsReader(spec.arg, spec.split, tfds_data_dir, image_key)
  n = len(reader.source)
  if n == 0:
    raise ValueError(f"source: tfds dataset {spec.arg!r} split {spec.split!r} is empty")
  return range(n), reader
