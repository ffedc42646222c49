"""Image sources for tokenization: `jaxtok.data`'s sources, plus image ids and labels.

`jaxtok.data.sources` parses and opens the sources (`bundled`, `folder:PATH`, `wds:PATTERN`,
`hf:PATH[:split]`, `tfds:NAME[:split]`); its readers return only pixels, so this module adds
what a token shard keeps beside the ids: a stable image id and, where the source has one, the
label.

- `bundled`: every bundled photo (the held-out ones included: nothing is trained here), id =
  the photo's name, no label.
- `folder:PATH`: id = the file's path relative to PATH (POSIX separators); with
  `folder_labels=True`, label = the index of the file's first-level sub-directory among the
  sorted sub-directory names (the ImageFolder layout `PATH/<class>/<file>`).
- `wds:PATTERN`: id = the sample key; label = its `.cls` member if it has one.
- `hf:PATH[:split]`, `tfds:NAME[:split]`: id = the example's `id`/`file_name`/`image/filename`
  field if it has one, else its index; label = its `label` field if it has one.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxtok import data as data_lib

# Fields that name an example (tfds, hf: columns; "__key__": a wds: sample key).
_ID_KEYS = ("id", "file_name", "image/filename", "filename", "__key__")


def _scalar(value: Any) -> Any:
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else None


def _text(value: Any) -> str:
  value = _scalar(value)
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Source:
  """A deterministic, random-access list of records of one image source.

  `len(source)` records; `source.load(i)` -> `(image [H, W, 3] uint8, image_id, label|None)`
  (raises on an unreadable record); `class_names` (folder labels) or None.
  """

  def __init__(self, spec: str, *, folder_labels: bool = False,
               tfds_data_dir: str | None = None, image_key: str = "image"):
    parsed = data_lib.parse_source(spec)
    kind, arg = parsed.kind, parsed.arg
    self.spec, self.kind = spec, kind
    self.class_names: list[str] | None = None
    if folder_labels and kind != "folder":
      raise ValueError(f"folder_labels: only folder: sources have sub-directory labels, got "
                       f"source {spec!r}")
    self._records, self._reader = data_lib.open_source(
        spec, bundled="all", tfds_data_dir=tfds_data_dir, image_key=image_key)
    if kind == "folder":
      root = Path(arg).expanduser()
      self._ids = [Path(p).relative_to(root).as_posix() for p in self._records]
      if folder_labels:
        top = [i.split("/")[0] if "/" in i else None for i in self._ids]
        loose = [i for i, t in zip(self._ids, top) if t is None]
        if loose:
          raise ValueError(f"folder_labels: expected every image inside a class sub-directory "
                           f"of {arg!r}, but {len(loose)} lie at its top (e.g. {loose[0]!r})")
        self.class_names = sorted(set(top))
        index = {name: i for i, name in enumerate(self.class_names)}
        self._labels = [index[t] for t in top]

  def __len__(self) -> int:
    return len(self._records)

  def fingerprint(self, indices: Sequence[int]) -> str | None:
    """SHA-256 of what records `indices` are made of: each file's name, size and mtime for
    folder sources (a replaced or edited image changes it); None for bundled photos and
    tfds splits, which do not change under a fixed name and version."""
    if self.kind != "folder":
      return None
    h = hashlib.sha256()
    for i in indices:
      st = os.stat(self._records[i])
      h.update(f"{self._ids[i]}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()

  def load(self, i: int) -> tuple[np.ndarray, str, int | None]:
    record = self._records[i]
    if self.kind == "bundled":
      return self._reader(record), record, None
    if self.kind == "folder":
      label = self._labels[i] if self.class_names is not None else None
      return self._reader(record), self._ids[i], label
    example = self._reader.example(record)
    image = self._reader.image(example, f"{self.spec}[{i}]")
    image_id = next((_text(example[k]) for k in _ID_KEYS if k in example), str(i))
    label = _scalar(example["label"]) if "label" in example else None
    return image, image_id, None if label is None else int(label)
