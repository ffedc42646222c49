"""Writes `torch.save`-format zip files without torch (test helper).

The archive is what `torch.save` writes: `<root>/data.pkl` (protocol 2), `<root>/data/<key>`
raw little-endian storages, `<root>/version`, `<root>/byteorder`. Tensors pickle as
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`, the
storage as the persistent id `("storage", torch.<X>Storage, key, "cpu", numel)`.
"""
import collections
import io
import pickle
import zipfile

import numpy as np

_STORAGE_NAMES = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
                  np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage",
                  np.dtype("int32"): "IntStorage", np.dtype("int8"): "CharStorage",
                  np.dtype("uint8"): "ByteStorage", np.dtype("bool"): "BoolStorage"}


class Global:
  """Pickles as the opcode GLOBAL `module name` (without importing the module)."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle requires reduce functions to be callable.
    raise AssertionError("never called")

  def __reduce__(self):
    return self.name


class Storage:
  """One storage: flat array data + storage class name (bf16 passed as uint16 bits)."""

  def __init__(self, key, flat, storage_name):
    self.key, self.flat, self.storage_name = key, flat, storage_name


class Tensor:
  """A strided view of a Storage."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

  def __reduce__(self):
    return (Global("torch._utils", "_rebuild_tensor_v2"),
            (self.storage, self.offset, tuple(self.size), tuple(self.stride), False,
             collections.OrderedDict()))


class _Pickler(pickle._Pickler):  # The pure-Python pickler lets us emit raw GLOBALs.

  def persistent_id(self, obj):
    if isinstance(obj, Storage):
      return ("storage", Global("torch", obj.storage_name), obj.key, "cpu", obj.flat.size)
    return None

  def save_global(self, obj, name=None):
    if isinstance(obj, Global):
      self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
      self.memoize(obj)
      return
    super().save_global(obj, name)


def tensor_from_array(arr, key, *, bf16=False):
  """A contiguous Tensor over a fresh storage holding `arr` (bf16: arr is float32, truncated)."""
  arr = np.asarray(arr, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
  if bf16:
    flat = (arr.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).reshape(-1)
    name = "BFloat16Storage"
  else:
    flat, name = arr.reshape(-1), _STORAGE_NAMES[arr.dtype]
  strides = [int(s // arr.itemsize) for s in arr.strides] if arr.ndim else []
  return Tensor(Storage(str(key), flat, name), 0, list(arr.shape), strides)


def save(obj, path, root="archive"):
  """`torch.save(obj, path)` for objects made of dicts/lists/Tensors; returns the path."""
  buf = io.BytesIO()
  _Pickler(buf, protocol=2).dump(obj)
  storages = {}

  def collect(o):
    if isinstance(o, Tensor):
      storages[o.storage.key] = o.storage
    elif isinstance(o, dict):
      for v in o.values():
        collect(v)
    elif isinstance(o, (list, tuple)):
      for v in o:
        collect(v)
  collect(obj)
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr(f"{root}/data.pkl", buf.getvalue())
    z.writestr(f"{root}/byteorder", "little")
    for key, st in storages.items():
      z.writestr(f"{root}/data/{key}", st.flat.astype(st.flat.dtype.newbyteorder("<")).tobytes())
    z.writestr(f"{root}/version", "3\n")
  return path


def save_state_dict(arrays, path):
  """A flat `{name: array}` state dict as a torch zip file (one storage per tensor)."""
  return save(collections.OrderedDict(
      (k, tensor_from_array(v, i)) for i, (k, v) in enumerate(arrays.items())), path)
