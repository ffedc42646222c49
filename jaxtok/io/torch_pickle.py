"""THE torch zip-pickle reader: `torch.save` files read into numpy without importing torch.

`pytorch_model.bin` / `.pt` / `.pth` written by `torch.save` (PyTorch >= 1.6) are a zip
archive `<root>/data.pkl` + `<root>/data/<key>` storages. The pickle refers to storages
through persistent ids `("storage", <torch.XStorage>, key, location, numel)` and builds
tensors with `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`. We
unpickle it with an `Unpickler` whose `find_class` only resolves an allow-list of names
(tensor rebuild functions, storage types, `OrderedDict`), so arbitrary code in a
checkpoint is never executed.

TorchScript archives (`torch.jit.save`) have the same layout: `<root>/data.pkl` pickles the
module tree (`__torch__.*` objects whose attributes are tensors, submodules and plain values;
read here as `ScriptObject`s) with storages under `<root>/data/`, and `<root>/constants.pkl`
the code's tensor constants with storages under `<root>/constants/`. `read_torchscript`
flattens the module tree into dotted names, as `torch.jit.load(...).state_dict()` does.

bfloat16 tensors are widened to float32 (numpy has no bfloat16 of its own); every other
dtype is kept.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxtok.io.safetensors import bf16_to_f32, read_safetensors

# torch storage class name -> (numpy dtype, is_bfloat16).
_TORCH_STORAGES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2",
    "BFloat16Storage": "<u2", "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


# A storage record may be larger than the elements the pickle reads from it (torch pads
# nothing, but other writers might); beyond this slack, a record declaring far more bytes
# than it is used for is refused before it is decompressed (a zip bomb).
_MAX_STORAGE_SLACK = 1 << 20

# Errors the standard library raises on a malformed zip or pickle; read_torch_zip turns
# them into a ValueError naming the file.
_MALFORMED = (pickle.UnpicklingError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError,
              KeyError, IndexError, TypeError, AttributeError, struct.error, zlib.error,
              UnicodeDecodeError, OverflowError, NotImplementedError, OSError)


class _StorageType:
  """Stand-in for a `torch.XStorage` class named in a pickle."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = np.dtype(_TORCH_STORAGES[name])
    self.is_bf16 = name == "BFloat16Storage"


class _Storage:
  """A flat storage: the 1-D array of one `data/<key>` record."""

  def __init__(self, array: np.ndarray, is_bf16: bool):
    self.array = array
    self.is_bf16 = is_bf16


def _as_int(value, what: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"checkpoint: tensor {what} must be an integer, got {value!r}")
  return int(value)


def _rebuild_tensor(storage: _Storage, storage_offset: int, size, stride, *unused_args,
                    **unused_kwargs) -> np.ndarray:
  """numpy counterpart of `torch._utils._rebuild_tensor_v2` (strided view, then copy).

  The view is checked against its storage before any memory is touched: integer offset,
  sizes and strides, no negative size or stride (torch never writes one), every element
  inside the storage, and no more elements than the storage holds (a broadcast, stride-0
  view is materialised here, so a tiny file could otherwise ask for terabytes).
  """
  if not isinstance(storage, _Storage):
    raise ValueError(f"checkpoint: tensor rebuild expected a storage, got "
                     f"{type(storage).__name__}")
  if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
    raise ValueError(f"checkpoint: tensor size and stride must be sequences, got "
                     f"{size!r} and {stride!r}")
  base = storage.array
  storage_offset = _as_int(storage_offset, "storage offset")
  size = tuple(_as_int(s, "size") for s in size)
  stride = tuple(_as_int(s, "stride") for s in stride)
  view = f"(offset {storage_offset}, size {size}, stride {stride})"
  if len(size) != len(stride):
    raise ValueError(f"checkpoint: tensor view {view} has {len(size)} sizes but "
                     f"{len(stride)} strides")
  if storage_offset < 0:
    raise ValueError(f"checkpoint: tensor view {view} has a negative storage offset")
  if any(n < 0 for n in size):
    raise ValueError(f"checkpoint: tensor view {view} has a negative size")
  if any(st < 0 for st in stride):
    raise ValueError(f"checkpoint: tensor view {view} has a negative stride (torch never "
                     f"writes one)")
  numel = 1
  for n in size:
    numel *= n
  if numel == 0:
    arr = np.zeros(size, base.dtype)
  else:
    last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= base.size:
      raise ValueError(f"checkpoint: tensor view {view} reaches past its storage of "
                       f"{base.size} elements")
    if numel > base.size:
      raise ValueError(f"checkpoint: tensor view {view} has {numel} elements, more elements "
                       f"than its storage of {base.size} (a broadcast view); re-save it "
                       f"with .contiguous()")
    item = base.itemsize
    arr = np.lib.stride_tricks.as_strided(
        base[storage_offset:], shape=size, strides=tuple(st * item for st in stride),
        writeable=False)
  arr = np.array(arr, order="C")  # Own the memory, C-contiguous.
  if storage.is_bf16:
    arr = bf16_to_f32(arr)
  return arr


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype=None, metadata=None):
  del requires_grad, backward_hooks, dtype, metadata
  return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused_args):
  return data


def _rebuild_from_type_v2(func, new_type, args, state):
  del new_type, state  # A tensor subclass (e.g. Parameter) is just its data here.
  return func(*args)


def _rebuild_device_tensor_from_numpy(data, dtype, device, requires_grad):
  del dtype, device, requires_grad
  return np.asarray(data)


class ScriptObject:
  """Stand-in for a pickled TorchScript `__torch__.*` object: its attributes land in
  `__dict__` (pickle's BUILD); no code of the archive is ever run."""

  def __init__(self, *args):
    del args


def _identity(value, *unused_args):
  """`torch.jit._pickle.build_intlist` & co. and `restore_type_tag`: plain values."""
  return value


def _np_scalar(dtype, data=None):
  """Rebuilds a pickled numpy scalar (numpy's own `multiarray.scalar`, without importing it
  under a path that moved between numpy 1 and 2)."""
  return np.frombuffer(data, dtype=dtype)[0] if data is not None else dtype.type()


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles `data.pkl` of a torch zip archive into numpy arrays, allow-listed names only."""

  _ALLOWED = {
      ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
      ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
      ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
      ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
      ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
      ("torch._utils", "_rebuild_device_tensor_from_numpy"): _rebuild_device_tensor_from_numpy,
      ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
      ("torch", "Tensor"): object,
      ("torch.nn.parameter", "Parameter"): object,
      ("collections", "OrderedDict"): collections.OrderedDict,
      ("builtins", "set"): set,
      ("builtins", "frozenset"): frozenset,
      ("builtins", "slice"): slice,
      ("numpy.core.multiarray", "scalar"): _np_scalar,
      ("numpy._core.multiarray", "scalar"): _np_scalar,
      ("numpy", "dtype"): np.dtype,
  }

  def __init__(self, file, archive: zipfile.ZipFile, storage_dir: str, byteorder: str):
    super().__init__(file)
    self._archive, self._storage_dir, self._byteorder = archive, storage_dir, byteorder
    self._storages: dict[str, _Storage] = {}

  def find_class(self, module, name):
    if module == "torch" and name in _TORCH_STORAGES:
      return _StorageType(name)
    if module == "torch" and name in ("float32", "float16", "bfloat16", "float64", "int64",
                                      "int32", "int16", "int8", "uint8", "bool"):
      return name  # dtype objects only appear as metadata we ignore.
    if (module, name) in self._ALLOWED:
      return self._ALLOWED[(module, name)]
    if module == "__torch__" or module.startswith("__torch__."):
      return ScriptObject
    if module == "torch.jit._pickle" and (name.startswith("build_") or
                                          name == "restore_type_tag"):
      return _identity
    raise pickle.UnpicklingError(
        f"checkpoint: refusing to load {module}.{name} from the pickle (only tensors, storages "
        f"and plain containers are read without torch; install torch==2.13.0 for others)")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"checkpoint: unknown persistent id {pid!r}")
    storage_type, key, numel = pid[1], str(pid[2]), pid[4]
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f"checkpoint: storage of unknown type {storage_type!r}")
    numel = _as_int(numel, "storage numel")
    if numel < 0:
      raise ValueError(f"checkpoint: storage {key} has a negative element count {numel}")
    if key not in self._storages:
      try:
        info = self._archive.getinfo(f"{self._storage_dir}{key}")
      except KeyError:
        raise ValueError(f"checkpoint: the pickle names storage {key!r} but the archive has "
                         f"no storage record {self._storage_dir}{key}") from None
      if info.file_size > numel * storage_type.dtype.itemsize + _MAX_STORAGE_SLACK:
        raise ValueError(f"checkpoint: storage record {info.filename} declares "
                         f"{info.file_size} bytes for {numel} elements")
      raw = self._archive.read(info)
      dtype = storage_type.dtype
      if self._byteorder == "big" and dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">")
      if len(raw) < numel * dtype.itemsize:
        raise ValueError(f"checkpoint: storage {key} holds {len(raw)} bytes, expected "
                         f"{numel} x {dtype.itemsize}")
      arr = np.frombuffer(raw, dtype=dtype, count=numel)
      arr = arr.astype(dtype.newbyteorder("="), copy=False)
      self._storages[key] = _Storage(arr, storage_type.is_bf16)
    return self._storages[key]


def read_torch_zip(path: str | os.PathLike, *, record: str = "data") -> Any:
  """Loads a `torch.save` (or `torch.jit.save`) zip archive without torch.

  Args:
    path: a `.bin`/`.pt`/`.pth` file written by `torch.save` (PyTorch >= 1.6), or a
      TorchScript archive.
    record: which pickle of the archive: "data" (the saved object / module tree) or, for
      TorchScript, "constants" (the code's tensor constants, a tuple).

  Returns:
    The pickled object with every tensor replaced by an owned `np.ndarray` (TorchScript
    modules as `ScriptObject`s).

  Raises:
    ValueError: not a zip-format torch file (e.g. the pre-1.6 legacy format) or it names
      classes outside the allow-list.
  """
  path = os.fspath(path)
  if record not in ("data", "constants"):
    raise ValueError(f"record: expected 'data' or 'constants', got {record!r}")
  if not zipfile.is_zipfile(path):
    raise ValueError(f"path: expected a zip-format torch checkpoint (torch.save of PyTorch "
                     f">= 1.6), got a non-zip file {path!r}; re-save it with a recent torch")
  try:
    with zipfile.ZipFile(path) as archive:
      names = archive.namelist()
      pkls = [n for n in names if n.rpartition("/")[2] == f"{record}.pkl"]
      if len(pkls) != 1:
        raise ValueError(f"path: expected exactly one {record}.pkl in {path!r}, found {pkls}")
      root = pkls[0][:-len(f"{record}.pkl")]
      byteorder = "little"
      if f"{root}byteorder" in names:
        byteorder = archive.read(f"{root}byteorder").decode().strip()
        if byteorder not in ("little", "big"):
          raise ValueError(f"path: {path!r} has byteorder {byteorder[:20]!r}; expected "
                           f"'little' or 'big'")
      unpickler = _TorchUnpickler(io.BytesIO(archive.read(pkls[0])), archive,
                                  f"{root}{record}/", byteorder)
      return unpickler.load()
  except RecursionError:
    raise ValueError(f"path: the pickle in {path!r} is nested too deeply to be a "
                     f"checkpoint") from None
  except ValueError as e:
    if path in str(e):
      raise
    raise ValueError(f"path: {path!r} is not a valid checkpoint: {e}") from e
  except _MALFORMED as e:
    raise ValueError(f"path: {path!r} is a malformed torch checkpoint "
                     f"({type(e).__name__}: {e})") from e


def read_torchscript(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Tensors and plain attributes of a TorchScript archive's module tree, without torch.

  Args:
    path: a `torch.jit.save` archive.

  Returns:
    (tensors, attrs): `{dotted name: np.ndarray}` (the names and values of
    `torch.jit.load(path).state_dict()`) and `{dotted name: value}` for every other
    attribute that is not a submodule (e.g. a conv's `stride`, `padding`, `training`).
  """
  root = read_torch_zip(path)
  if not isinstance(root, ScriptObject):
    raise ValueError(f"path: expected a TorchScript archive (a pickled __torch__ module), got "
                     f"{type(root).__name__} in {os.fspath(path)!r}")
  tensors: dict[str, np.ndarray] = {}
  attrs: dict[str, Any] = {}
  stack = [("", root)]
  while stack:
    prefix, obj = stack.pop()
    for key, value in vars(obj).items():
      name = f"{prefix}{key}"
      if isinstance(value, np.ndarray):
        tensors[name] = value
      elif isinstance(value, ScriptObject):
        stack.append((name + ".", value))
      else:
        attrs[name] = value
  return tensors, attrs


def _read_torch_with_torch(path: str) -> Any:
  import torch  # noqa: PLC0415  (optional dependency)
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, *_MALFORMED) as e:
    raise ValueError(f"path: torch.load(weights_only=True) refused {path!r}: "
                     f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e

  def to_np(x):
    if isinstance(x, torch.Tensor):
      return x.detach().to(torch.float32 if x.dtype == torch.bfloat16 else x.dtype).numpy()
    if isinstance(x, Mapping):
      return {k: to_np(v) for k, v in x.items()}
    return x
  return to_np(obj)


def _find_state_dict(obj: Any, path: str) -> dict[str, np.ndarray]:
  """The flat `{key: array}` mapping inside a loaded checkpoint.

  Training checkpoints often wrap it (`{"state_dict": ...}`, `{"model": ...}`); we accept
  a mapping of arrays, or a mapping holding exactly one such mapping under a known key.
  """
  if isinstance(obj, Mapping) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
    return dict(obj)
  if isinstance(obj, Mapping):
    for key in ("state_dict", "model", "module", "model_state_dict", "ema"):
      inner = obj.get(key)
      if isinstance(inner, Mapping) and inner and all(
          isinstance(v, np.ndarray) for v in inner.values()):
        return dict(inner)
  raise ValueError(f"path: expected {path!r} to hold a state dict ({{name: tensor}}, possibly "
                   f"under 'state_dict' or 'model'), got {type(obj).__name__} with keys "
                   f"{list(obj)[:8] if isinstance(obj, Mapping) else None}")


def read_checkpoint(path: str | os.PathLike, *, use_torch: bool | None = False
                    ) -> dict[str, np.ndarray]:
  """Reads a PyTorch state dict from `.safetensors`, `.bin`, `.pt`, `.pth` or `.npz`.

  Args:
    path: the checkpoint file. The format is detected from its content (zip archive =
      torch, else safetensors) except `.npz`, read with `np.load(allow_pickle=False)` where
      keys may carry a `param/` prefix (the jaxtok fixture format), which is dropped.
    use_torch: for torch files, False (default) = the torch-free reader; True = `torch.load`
      (needs torch); None = torch-free, falling back to torch if it fails and torch exists.

  Returns:
    `{official_key: np.ndarray}` (bfloat16 widened to float32).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f"path: expected an existing checkpoint file, got {path!r}")
  if path.endswith(".npz"):
    try:
      with np.load(path, allow_pickle=False) as f:
        names = [k for k in f.files if k.startswith("param/")] or list(f.files)
        return {k.removeprefix("param/"): f[k] for k in names}
    except (ValueError, OSError, *_MALFORMED) as e:
      raise ValueError(f"path: {path!r} is not a readable .npz checkpoint "
                       f"({type(e).__name__}: {e})") from e
  if not zipfile.is_zipfile(path):
    with open(path, "rb") as f:
      head = f.read(2)
    if path.endswith(".safetensors") or head != b"\x80\x02":
      return read_safetensors(path)
    # A pickle not in a zip: the legacy torch format, which only torch reads.
    if use_torch is False:
      raise ValueError(f"path: {path!r} is a legacy (pre-1.6) torch file; pass use_torch=True "
                       f"(needs torch==2.13.0) or re-save it with a recent torch")
    return _find_state_dict(_read_torch_with_torch(path), path)
  if use_torch:
    return _find_state_dict(_read_torch_with_torch(path), path)
  try:
    return _find_state_dict(read_torch_zip(path), path)
  except ValueError:
    if use_torch is None:
      try:
        import torch  # noqa: F401, PLC0415  (optional dependency)
      except ImportError:
        raise
      return _find_state_dict(_read_torch_with_torch(path), path)
    raise
