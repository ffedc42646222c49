"""The on-disk format of token shards: examples, shard names and the per-host manifest.

A token directory `DIR` holds one sub-directory per host (process) of the run that wrote it:

    DIR/host-00000-of-00002/manifest.json
    DIR/host-00000-of-00002/shard-00000-of-00004.array_record
    ...

Each `.array_record` file holds one record per example (ArrayRecord, `group_size:1` so that
every record is one random-access read). A record is a msgpack map, format version 1:

    {"v": 1,                       # EXAMPLE_VERSION
     "ids": bytes,                 # the token ids, C order, little-endian, dtype below
     "dtype": "<u2",               # numpy dtype string of "ids" (the smallest that holds
                                   #   the codebook: <u1, <u2 or <i4; <f4 for latents)
     "shape": [K] | [K, k],        # per-image token shape ([K, k]: factorized VQ)
     "index": 17,                  # position in the source's (sorted) record list
     "image_id": "n01/x.JPEG",     # file path relative to the folder / tfds id / photo name
     "label": 3}                   # only when the source has labels

`manifest.json` (written atomically, the only source of truth) holds the run's `spec` (source,
tokenizer identity, host split, shard size), the `num_shards` planned for this host and, per
finished shard, its example count, byte size, sha256 and the records skipped as unreadable.
A shard file that the manifest does not list is not part of the data set (it is rewritten on
resume); `complete` is true once every planned shard is listed.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from jaxtok.io.checkpoint import file_sha256  # noqa: F401  (re-exported: rec.file_sha256)

FORMAT_NAME = "jaxtok-tokens"
FORMAT_VERSION = 1  # Of the directory layout and manifest.
EXAMPLE_VERSION = 1  # Of one record's msgpack map.
MANIFEST = "manifest.json"
SHARD_SUFFIX = ".array_record"
# Every record its own chunk: one random-access read per example (records are ~100 B-1 KB).
WRITER_OPTIONS = "group_size:1"


def host_dir_name(host: int, num_hosts: int) -> str:
  return f"host-{host:05d}-of-{num_hosts:05d}"


def shard_name(shard: int, num_shards: int) -> str:
  return f"shard-{shard:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def ids_dtype(codebook_size: int | None, continuous: bool) -> np.dtype:
  """Smallest little-endian dtype that holds ids in [0, codebook_size)."""
  if continuous:
    return np.dtype("<f4")
  if codebook_size is None or codebook_size > 2**16:
    return np.dtype("<i4")
  return np.dtype("<u1") if codebook_size <= 2**8 else np.dtype("<u2")


def encode_example(ids: np.ndarray, dtype: np.dtype, index: int, image_id: str,
                   label: int | None) -> bytes:
  """One example -> record bytes (see the module docstring)."""
  ids = np.asarray(ids)
  if dtype.kind in "iu" and ids.size and (ids.min() < 0 or ids.max() > np.iinfo(dtype).max):
    raise ValueError(f"ids: expected values in [0, {np.iinfo(dtype).max}] for dtype "
                     f"{dtype.str}, got range [{ids.min()}, {ids.max()}]")
  arr = np.ascontiguousarray(ids.astype(dtype))
  record = {"v": EXAMPLE_VERSION, "ids": arr.tobytes(), "dtype": arr.dtype.str,
            "shape": list(arr.shape), "index": int(index), "image_id": str(image_id)}
  if label is not None:
    record["label"] = int(label)
  return msgpack.packb(record, use_bin_type=True)


def decode_example(data: bytes) -> dict[str, Any]:
  """Record bytes -> `{"ids": int32 [K] (or [K, k]; float32 latents), "index": int,
  "image_id": str[, "label": int]}`."""
  try:
    record = msgpack.unpackb(data, raw=False)
  except Exception as e:  # msgpack raises several types for garbage.
    raise ValueError(f"record: not a jaxtok token example ({type(e).__name__}: {e})") from e
  if not isinstance(record, dict) or record.get("v") != EXAMPLE_VERSION:
    version = record.get("v") if isinstance(record, dict) else None
    raise ValueError(f"record: expected a jaxtok token example of version {EXAMPLE_VERSION}, "
                     f"got version {version!r}")
  dtype = np.dtype(record["dtype"])
  ids = np.frombuffer(record["ids"], dtype=dtype).reshape(record["shape"])
  out = {"ids": ids.astype(np.float32 if dtype.kind == "f" else np.int32),
         "index": int(record["index"]), "image_id": record["image_id"]}
  if "label" in record:
    out["label"] = int(record["label"])
  return out


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
  """`path` <- JSON through a temp file in the same directory, fsync and rename."""
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a manifest is read by everyone.
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(data, f, indent=1, sort_keys=True)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise
  fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)




def read_manifest(path: Path) -> dict[str, Any]:
  """A host's manifest; ValueError if it is not one of ours or of another version."""
  try:
    manifest = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"directory: cannot read token manifest {str(path)!r}: {e}") from e
  if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"directory: {str(path)!r} is not a {FORMAT_NAME} manifest of version "
                     f"{FORMAT_VERSION} (format {manifest.get('format')!r}, version "
                     f"{manifest.get('format_version')!r})")
  return manifest
