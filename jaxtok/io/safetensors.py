"""Safetensors read/write with numpy (no torch, no `safetensors` package needed).

File layout: an 8-byte little-endian header length, a JSON header
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, then the
raw little-endian tensor bytes (offsets are relative to the end of the header).

bfloat16 tensors are widened to float32 (numpy has no bfloat16 of its own); every other
dtype is kept.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

# safetensors dtype tag -> numpy dtype (little-endian). BF16 is handled separately.
_ST_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U8": np.dtype("u1"), "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"), "U64": np.dtype("<u8"), "BOOL": np.dtype("?"),
}
_NP_TO_ST = {v: k for k, v in _ST_DTYPES.items()}

# Upper bound on the JSON header of a safetensors file; the reference implementation
# refuses headers above 100 MB too, so a larger value means a corrupt or foreign file.
_MAX_HEADER_BYTES = 100_000_000



def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
  """uint16 bit patterns of bfloat16 values -> float32 (bfloat16 is the top half of f32)."""
  return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path: str | os.PathLike, *,
                     keep: Callable[[str], bool] | None = None) -> dict[str, np.ndarray]:
  """Reads the tensors of a `.safetensors` file.

  Args:
    path: the file.
    keep: optional name filter; only tensors with `keep(name)` true are read from disk
      (e.g. the vision tower of a whole CLIP checkpoint), the others are skipped unread.

  Returns:
    `{name: array}` in the order of the header, arrays owned (copied out of the file).

  Raises:
    ValueError: the file is not a valid safetensors file (naming what is wrong).
  """
  path = os.fspath(path)
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    if len(head) < 8:
      raise ValueError(f"path: expected a safetensors file (8-byte header length first), "
                       f"got {len(head)} bytes in {path!r}")
    (n,) = struct.unpack("<Q", head)
    if n > _MAX_HEADER_BYTES or 8 + n > size:
      raise ValueError(f"path: {path!r} has a safetensors header length of {n} bytes, "
                       f"which does not fit the {size}-byte file")
    try:
      header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ValueError(f"path: {path!r} has an unreadable safetensors JSON header: {e}") from e
    if not isinstance(header, dict):
      raise ValueError(f"path: {path!r}: expected a JSON object header, got {type(header)}")
    data_start, data_len = 8 + n, size - 8 - n
    out = {}
    for name, info in header.items():
      if name == "__metadata__" or (keep is not None and not keep(name)):
        continue
      dtype_tag, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
      if dtype_tag == "BF16":
        np_dtype = np.dtype("<u2")
      elif dtype_tag in _ST_DTYPES:
        np_dtype = _ST_DTYPES[dtype_tag]
      else:
        raise ValueError(f"path: tensor {name!r} in {path!r} has dtype {dtype_tag!r}; "
                         f"expected one of {sorted(_ST_DTYPES) + ['BF16']}")
      count = int(np.prod(shape, dtype=np.int64))
      if not 0 <= begin <= end <= data_len or end - begin != count * np_dtype.itemsize:
        raise ValueError(f"path: tensor {name!r} in {path!r} has data_offsets "
                         f"[{begin}, {end}] that do not hold {shape} x {dtype_tag} "
                         f"within {data_len} data bytes")
      f.seek(data_start + begin)
      arr = np.frombuffer(f.read(end - begin), dtype=np_dtype).reshape(shape)
      if dtype_tag == "BF16":
        arr = bf16_to_f32(arr)
      out[name] = np.array(arr, dtype=arr.dtype.newbyteorder("="))
  return out


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
  """The `__metadata__` string map of a `.safetensors` file ({} when absent)."""
  with open(path, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise ValueError(f"path: expected a safetensors file, got {len(head)} bytes in {path!r}")
    (n,) = struct.unpack("<Q", head)
    if n > _MAX_HEADER_BYTES:
      raise ValueError(f"path: {path!r} has an implausible safetensors header length {n}")
    try:
      header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ValueError(f"path: {path!r} has an unreadable safetensors JSON header: {e}") from e
  return dict(header.get("__metadata__") or {})


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
  """Writes `{name: array}` as a `.safetensors` file readable by the reference library.

  Args:
    path: destination file (overwritten).
    tensors: arrays of any dtype in `_ST_DTYPES` (bfloat16 is not written: widen first).
    metadata: optional `{str: str}` stored under `__metadata__`.
  """
  header: dict[str, Any] = {}
  if metadata:
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
  arrays, offset = [], 0
  for name, value in tensors.items():
    arr = np.asarray(value, order="C")  # Not ascontiguousarray: it turns 0-d into [1].
    le = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
    if le not in _NP_TO_ST:
      raise ValueError(f"tensors[{name!r}]: expected a dtype among "
                       f"{sorted(str(d) for d in _NP_TO_ST)}, got {arr.dtype}")
    arr = arr.astype(le, copy=False)
    nbytes = arr.nbytes
    header[name] = {"dtype": _NP_TO_ST[le], "shape": list(arr.shape),
                    "data_offsets": [offset, offset + nbytes]}
    arrays.append(arr)
    offset += nbytes
  head = json.dumps(header, separators=(",", ":")).encode("utf-8")
  head += b" " * (-len(head) % 8)  # The format pads the header to 8-byte alignment.
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(head)))
    f.write(head)
    for arr in arrays:
      f.write(arr.tobytes())
