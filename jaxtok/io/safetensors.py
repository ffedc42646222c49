"""Safetensors read/write through the `safetensors` library's numpy API (no torch).

File layout: an 8-byte little-endian header length, a JSON header
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, then the
raw little-endian tensor bytes (offsets are relative to the end of the header). The library
validates the header before any byte is read (offsets inside the file, no two tensors over
the same bytes, every byte covered, sizes matching shapes and dtypes); its errors are
re-raised as `ValueError`s naming the file.

A header alone cannot tell a float32 tensor from one relabelled int32, so files jaxtok writes
carry a SHA-256 digest of their metadata and tensors (names, dtypes, shapes and bytes) under
the metadata key `jaxtok.sha256`, checked on every full read; files of other writers have none.

bfloat16 tensors are widened to float32 (numpy has no bfloat16 of its own); every other
dtype is kept.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Mapping

import numpy as np
import safetensors
import safetensors.numpy

# safetensors dtype tag -> numpy dtype (little-endian). BF16 is handled separately.
_ST_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U8": np.dtype("u1"), "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"), "U64": np.dtype("<u8"), "BOOL": np.dtype("?"),
}
_NP_TO_ST = {v: k for k, v in _ST_DTYPES.items()}

# The metadata key of the digest jaxtok writes (and hides from read_safetensors_metadata).
DIGEST_KEY = "jaxtok.sha256"


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
  """uint16 bit patterns of bfloat16 values -> float32 (bfloat16 is the top half of f32)."""
  return (raw.astype(np.uint32) << 16).view(np.float32)


def _digest(entries, metadata: Mapping[str, str]) -> str:
  """SHA-256 over the metadata (the digest itself aside) and (name, dtype tag, shape,
  little-endian bytes) of each tensor, by name.

  `entries`: (name, tag, shape, little-endian array) tuples.
  """
  h = hashlib.sha256()
  h.update(json.dumps(sorted((k, v) for k, v in metadata.items() if k != DIGEST_KEY)).encode())
  for name, tag, shape, arr in sorted(entries, key=lambda e: e[0]):
    data = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    h.update(json.dumps([name, tag, [int(d) for d in shape], int(data.size)]).encode())
    h.update(data)
  return h.hexdigest()


def _open(path: str):
  """The library's handle on `path` (header validated) and the parsed header."""
  try:
    handle = safetensors.safe_open(path, framework="np")
  except (safetensors.SafetensorError, OSError, ValueError, TypeError) as e:
    raise ValueError(f"path: {path!r} is not a valid safetensors file: {e}") from e
  with open(path, "rb") as f:  # Validated: the length and the JSON are known to be sound.
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n).decode("utf-8"))
  return handle, header, 8 + n


def read_safetensors(path: str | os.PathLike, *,
                     keep: Callable[[str], bool] | None = None) -> dict[str, np.ndarray]:
  """Reads the tensors of a `.safetensors` file.

  Args:
    path: the file.
    keep: optional name filter; only tensors with `keep(name)` true are read from disk
      (e.g. the vision tower of a whole CLIP checkpoint), the others are skipped unread.
      The `jaxtok.sha256` digest is only checked when every tensor is read (`keep=None`).

  Returns:
    `{name: array}` in the order of the header, arrays owned (copied out of the file).

  Raises:
    ValueError: the file is not a valid safetensors file, holds a dtype numpy cannot
      represent, or does not match its digest (naming the file and what is wrong).
  """
  path = os.fspath(path)
  handle, header, data_start = _open(path)
  out, entries = {}, []
  with handle, open(path, "rb") as raw:
    meta = handle.metadata() or {}
    for name, info in header.items():
      if name == "__metadata__" or (keep is not None and not keep(name)):
        continue
      tag = info["dtype"]
      if tag == "BF16":  # The numpy API has no bfloat16: widen the validated raw bytes.
        begin, end = info["data_offsets"]
        raw.seek(data_start + begin)
        bits = np.frombuffer(raw.read(end - begin), dtype="<u2").reshape(info["shape"])
        arr, data = bf16_to_f32(bits), bits
      elif tag in _ST_DTYPES:
        arr = np.array(handle.get_tensor(name), order="C")
        arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
        data = arr.astype(_ST_DTYPES[tag], copy=False)
      else:
        raise ValueError(f"path: tensor {name!r} in {path!r} has dtype {tag!r}; "
                         f"expected one of {sorted(_ST_DTYPES) + ['BF16']}")
      out[name] = arr
      entries.append((name, tag, info["shape"], data))
  if keep is None and DIGEST_KEY in meta and _digest(entries, meta) != meta[DIGEST_KEY]:
    raise ValueError(f"path: {path!r} does not match the {DIGEST_KEY} digest jaxtok wrote "
                     f"into it: the file was modified or is corrupt")
  return out


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
  """The `__metadata__` string map of a `.safetensors` file ({} when absent), without the
  digest jaxtok adds."""
  path = os.fspath(path)
  handle, _, _ = _open(path)
  with handle:
    meta = dict(handle.metadata() or {})
  meta.pop(DIGEST_KEY, None)
  return meta


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
  """Writes `{name: array}` as a `.safetensors` file (with the library), digest included.

  Args:
    path: destination file (overwritten).
    tensors: arrays of any dtype in `_ST_DTYPES` (bfloat16 is not written: widen first).
    metadata: optional `{str: str}` stored under `__metadata__`.
  """
  meta: dict[str, str] = {str(k): str(v) for k, v in (metadata or {}).items()}
  if DIGEST_KEY in meta:
    raise ValueError(f"metadata: the key {DIGEST_KEY!r} is reserved for jaxtok's digest")
  arrays: dict[str, np.ndarray] = {}
  entries = []
  for name, value in tensors.items():
    arr = np.asarray(value, order="C")  # Not ascontiguousarray: it turns 0-d into [1].
    le = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
    if le not in _NP_TO_ST:
      raise ValueError(f"tensors[{name!r}]: expected a dtype among "
                       f"{sorted(str(d) for d in _NP_TO_ST)}, got {arr.dtype}")
    arr = np.ascontiguousarray(arr.astype(le, copy=False)).reshape(arr.shape)
    arrays[str(name)] = arr
    entries.append((str(name), _NP_TO_ST[le], arr.shape, arr))
  meta[DIGEST_KEY] = _digest(entries, meta)
  safetensors.numpy.save_file(arrays, os.fspath(path), metadata=meta)
