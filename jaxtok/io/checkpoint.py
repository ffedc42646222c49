"""The jaxtok checkpoint directory: layout, config JSON and model state <-> arrays.

A checkpoint directory holds exactly two files:

- `config.json`: `{"format": "jaxtok-checkpoint", "format_version": 1, "family": "titok",
  "config": {...the model config dataclass...}}` (plus optional `"source"` provenance);
- `weights.safetensors`: every variable of the model (`nnx.state`), keyed by its `/`-joined
  path (e.g. `encoder/transformer/blocks/attn/qkv/kernel`). PRNG key variables (e.g. the
  dead-code-restart stream of a VQ) are stored as their raw key data (uint32) under
  `<path>.__key_data__`, their implementation names in the file's metadata (`key_impls`), and
  re-wrapped on load.

The weights file's metadata also holds `jaxtok.config_sha256`, the digest of config.json's
family and config, so that an edited or damaged config.json is refused rather than read into
another model (`read_meta`); files written before it existed are read unchecked.

No model knowledge beyond nnx: callers pass the model class to build. Safetensors is read and
written through the `safetensors` library's numpy API (`jaxtok.io.safetensors`), so a
checkpoint loads without torch or orbax.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from jaxtok.io import safetensors

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT_NAME = "jaxtok-checkpoint"
FORMAT_VERSION = 1
# Suffix of the safetensors entry that holds a PRNG key variable's raw key data.
KEY_DATA_SUFFIX = ".__key_data__"
# The top-level keys of config.json.
_META_KEYS = {"format", "format_version", "family", "config", "source"}
# Metadata key of weights.safetensors: SHA-256 of the family and config of config.json.
CONFIG_DIGEST_KEY = "jaxtok.config_sha256"


def config_digest(meta: Mapping[str, Any]) -> str:
  """SHA-256 of `meta`'s family and config, canonical JSON (key order, spacing aside)."""
  canon = json.dumps({"family": meta["family"], "config": meta["config"]}, sort_keys=True,
                     separators=(",", ":"), allow_nan=False)
  return hashlib.sha256(canon.encode()).hexdigest()


# ------------------------------------------------------------------ config <-> JSON dicts


def config_to_dict(config: Any) -> dict[str, Any]:
  """A config dataclass as a JSON-ready dict (tuples become lists, nested dataclasses dicts)."""
  if hasattr(config, "to_dict"):
    return config.to_dict()
  if not dataclasses.is_dataclass(config):
    raise ValueError(f"config: expected a dataclass instance, got {type(config).__name__}")

  def plain(v):
    if dataclasses.is_dataclass(v):
      return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (list, tuple)):
      return [plain(x) for x in v]
    if isinstance(v, Mapping):
      return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, np.generic):
      return v.item()
    return v
  return plain(config)


def _coerce(tp: Any, value: Any) -> Any:
  """Rebuilds `value` (from JSON) as annotation `tp`: dataclasses and tuples recursively."""
  origin = typing.get_origin(tp)
  if origin in (typing.Union, types.UnionType):
    for arg in typing.get_args(tp):
      if arg is type(None):
        if value is None:
          return None
        continue
      if dataclasses.is_dataclass(arg) and isinstance(value, Mapping):
        return config_from_dict(arg, value)
      if typing.get_origin(arg) is tuple and isinstance(value, list):
        return _coerce(arg, value)
    return value
  if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
    return config_from_dict(tp, value)
  if (origin is tuple or tp is tuple) and isinstance(value, list):
    args = typing.get_args(tp)
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_coerce(args[0], v) for v in value)
    if args and len(args) == len(value):
      return tuple(_coerce(a, v) for a, v in zip(args, value))
    return tuple(value)
  return value


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
  """Inverse of `config_to_dict` for dataclass `cls`; unknown keys raise ValueError."""
  if not isinstance(data, Mapping):
    raise ValueError(f"config: expected a {cls.__name__} dict, got {type(data).__name__}")
  if hasattr(cls, "from_dict"):
    # A config.json holds every field: the strict, complete reading of a model config.
    return cls.from_dict(dict(data), complete=True)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(data) - set(fields))
  if unknown:
    raise ValueError(f"config: {cls.__name__} has no field(s) {unknown}; expected keys among "
                     f"{sorted(fields)}")
  hints = typing.get_type_hints(cls)
  kwargs = {k: _coerce(hints.get(k, Any), v) for k, v in data.items() if fields[k].init}
  return cls(**kwargs)


# ------------------------------------------------------------------ model state <-> arrays


def _path_key(path: tuple) -> str:
  return "/".join(str(p) for p in path)


def is_key_array(x: Any) -> bool:
  """True for a typed PRNG key array (dtype `key<impl>`)."""
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def host_array(x: Any) -> Any:
  """A host (numpy) copy of an array leaf; typed PRNG keys stay typed keys.

  `np.asarray` cannot convert a typed key array; this rebuilds it from its key data, so a
  state tree with key variables (e.g. a VQ's dead-code-restart stream) can be brought to the
  host leaf by leaf: `jax.tree_util.tree_map(host_array, state)`. An array sharded over
  several processes is gathered first (a collective: every process must call this).
  """
  if is_key_array(x):
    return jax.random.wrap_key_data(host_array(jax.random.key_data(x)),
                                    impl=jax.random.key_impl(x))
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    # Sharded across processes (multi-host training): every process gets the whole array.
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def state_to_arrays(model: nnx.Module) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """Every variable of `model` as `{path: np.ndarray}` plus safetensors metadata.

  Typed PRNG keys become `{path}.__key_data__` uint32 arrays with their implementation in the
  metadata's `key_impls`; bfloat16 is widened to float32 (numpy safetensors has no bf16).
  """
  arrays, key_impls = {}, {}
  for path, var in nnx.to_flat_state(nnx.state(model)):
    value = var.get_value()
    key = _path_key(path)
    if is_key_array(value):
      key_impls[key] = str(jax.random.key_impl(value))
      arrays[key + KEY_DATA_SUFFIX] = np.asarray(jax.random.key_data(value))
      continue
    arr = np.asarray(value)
    if arr.dtype == jnp.bfloat16:
      arr = arr.astype(np.float32)
    arrays[key] = arr
  return arrays, {"key_impls": json.dumps(key_impls)}


def _key_from_arrays(key: str, spec: Any, arrays: Mapping[str, np.ndarray],
                     impl: str | None, source: str) -> tuple[Any, str] | None:
  """(typed key, the entry used) for key variable `key`, or None if the file lacks it.

  Reads `{key}.__key_data__`, or raw uint32 key data stored under the plain `key`.
  """
  for name in (key + KEY_DATA_SUFFIX, key):
    if name in arrays:
      data = np.asarray(arrays[name])
      if not np.issubdtype(data.dtype, np.unsignedinteger):
        raise ValueError(f"{source}: key variable {key!r} needs uint32 key data, got dtype "
                         f"{data.dtype} in {name!r}")
      try:
        value = jax.random.wrap_key_data(jnp.asarray(data, jnp.uint32), impl=impl)
      except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {name!r} is not key data of impl {impl or 'default'}: "
                         f"{e}") from e
      if value.shape != spec.shape:
        raise ValueError(f"{source}: key variable {key!r} has shape {value.shape}, the model "
                         f"expects {spec.shape}")
      return value, name
  return None


def model_from_arrays(model_class: Callable[..., nnx.Module], config: Any,
                      arrays: Mapping[str, np.ndarray], *, source: str = "weights",
                      key_impls: Mapping[str, str] | None = None) -> nnx.Module:
  """Builds `model_class(config, rngs=...)` with its variables taken from `arrays`.

  Args:
    model_class: the model class (built as `model_class(config, rngs=nnx.Rngs(0))`).
    config: its config dataclass.
    arrays: `{path: array}` as written by `state_to_arrays`.
    source: names the origin of `arrays` in error messages.
    key_impls: `{path: PRNG impl name}` of key variables (default: jax's default impl).

  Returns:
    The model (no random init is run unless non-parameter variables are missing).

  Raises:
    ValueError: a parameter is missing, has the wrong shape, or `arrays` holds unused keys.
  """
  ctor = lambda: model_class(config, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(nnx.eval_shape(ctor))
  flat = list(nnx.to_flat_state(state))
  used, missing = set(), []
  for path, var in flat:
    key = _path_key(path)
    spec = var.get_value()
    if is_key_array(spec):
      found = _key_from_arrays(key, spec, arrays, (key_impls or {}).get(key), source)
      if found is None:
        missing.append((key, var))
      else:
        var.set_value(found[0])
        used.add(found[1])
      continue
    if key not in arrays:
      missing.append((key, var))
      continue
    used.add(key)
    arr = np.asarray(arrays[key])
    if tuple(arr.shape) != tuple(spec.shape):
      raise ValueError(f"{source}: variable {key!r} has shape {tuple(arr.shape)}, the model for "
                       f"this config expects {tuple(spec.shape)}")
    var.set_value(jnp.asarray(arr, dtype=spec.dtype))
  missing_params = [k for k, v in missing if isinstance(v, nnx.Param)]
  if missing_params:
    raise ValueError(f"{source}: expected every parameter of the model, missing "
                     f"{len(missing_params)}: {missing_params[:10]}")
  unused = sorted(set(arrays) - used)
  if unused:
    raise ValueError(f"{source}: holds {len(unused)} entries the model does not have: "
                     f"{unused[:10]}")
  if missing:
    # Non-parameter variables (statistics, RNG state) absent from the file: take them from a
    # real init, which costs one model construction.
    real = {_path_key(p): v for p, v in nnx.to_flat_state(nnx.state(ctor()))}
    for key, var in missing:
      var.set_value(real[key].get_value())
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


# ------------------------------------------------------------------ the directory on disk


def file_sha256(path: str | os.PathLike) -> str:
  """Hex SHA-256 of a file, read in 1 MiB blocks (provenance of converted and written files)."""
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
  """The checked `config.json` dict of checkpoint directory `path`."""
  file = Path(path) / CONFIG_FILE
  try:
    meta = json.loads(file.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"path_or_variant: cannot read {file}: {e}") from e
  except (UnicodeDecodeError, RecursionError) as e:
    raise ValueError(f"path_or_variant: {file} is not a readable JSON file "
                     f"({type(e).__name__})") from None
  if not isinstance(meta, dict) or "family" not in meta or "config" not in meta:
    raise ValueError(f"path_or_variant: expected {file} to hold "
                     f"{{'family': ..., 'config': {{...}}}}, got keys "
                     f"{sorted(meta) if isinstance(meta, dict) else type(meta).__name__}")
  unknown = sorted(set(meta) - _META_KEYS)
  if unknown:
    raise ValueError(f"path_or_variant: {file} has unknown top-level keys {unknown}; expected "
                     f"some of {sorted(_META_KEYS)}")
  if meta.get("format", FORMAT_NAME) != FORMAT_NAME:
    raise ValueError(f"path_or_variant: {file} has format {meta['format']!r}; expected "
                     f"{FORMAT_NAME!r}")
  version = meta.get("format_version", FORMAT_VERSION)
  if isinstance(version, bool) or not isinstance(version, int) or not (
      1 <= version <= FORMAT_VERSION):
    raise ValueError(f"path_or_variant: {file} has format_version {version!r}; this jaxtok "
                     f"reads versions 1..{FORMAT_VERSION} (a newer jaxtok wrote it?)")
  if not isinstance(meta["family"], str):
    raise ValueError(f"path_or_variant: {file} has family {meta['family']!r}; expected a "
                     f"family name (a string)")
  if not isinstance(meta["config"], dict):
    raise ValueError(f"path_or_variant: {file} has config of type "
                     f"{type(meta['config']).__name__}; expected an object of config fields")
  if "source" in meta and not isinstance(meta["source"], dict):
    raise ValueError(f"path_or_variant: {file} has source of type "
                     f"{type(meta['source']).__name__}; expected an object (provenance)")
  weights = Path(path) / WEIGHTS_FILE
  if weights.is_file():
    want = safetensors.read_safetensors_metadata(weights).get(CONFIG_DIGEST_KEY)
    try:
      got = config_digest(meta)
    except ValueError:  # NaN / Infinity in the JSON.
      got = None
    if want is not None and got != want:
      raise ValueError(f"path_or_variant: {file} is not the config {weights.name} was saved "
                       f"with (its {CONFIG_DIGEST_KEY} differs): the file was edited or is "
                       f"corrupt; restore it, or save the model again with jaxtok.save")
  return meta


def read_weights(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """(arrays, key_impls) of checkpoint directory `path`'s weights file."""
  weights = Path(path) / WEIGHTS_FILE
  if not weights.is_file():
    raise ValueError(f"path_or_variant: directory {str(Path(path))!r} has no {WEIGHTS_FILE}")
  arrays = safetensors.read_safetensors(weights)
  key_impls = json.loads(safetensors.read_safetensors_metadata(weights).get("key_impls", "{}"))
  return arrays, key_impls


def make_meta(family: str, config: Any, source: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
  """The `config.json` dict for a `family` model with `config`."""
  meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "family": family,
          "config": config_to_dict(config)}
  if source is not None:
    meta["source"] = dict(source)
  return meta


def write_dir(directory: str | os.PathLike, meta: Mapping[str, Any],
              arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str], *,
              overwrite: bool = True) -> Path:
  """Writes a checkpoint directory atomically (temp dir in the same parent, then rename).

  An existing jaxtok checkpoint at `directory` is replaced when `overwrite`; an existing
  directory with other content is never touched (ValueError).
  """
  target = Path(directory)
  if target.exists():
    if not target.is_dir():
      raise ValueError(f"directory: {str(target)!r} exists and is not a directory")
    contents = {p.name for p in target.iterdir()}
    if contents and not (contents <= {CONFIG_FILE, WEIGHTS_FILE} and overwrite):
      raise ValueError(f"directory: {str(target)!r} is not empty (holds {sorted(contents)[:5]}); "
                       f"expected a new/empty directory or a jaxtok checkpoint with "
                       f"overwrite=True")
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
  try:
    metadata = {**metadata, CONFIG_DIGEST_KEY: config_digest(meta)}
    safetensors.write_safetensors(tmp / WEIGHTS_FILE, arrays, metadata)
    (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if target.exists():
      old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
      os.rename(target, old / "ckpt")
      os.rename(tmp, target)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, target)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
  return target


__all__ = ["CONFIG_FILE", "FORMAT_NAME", "FORMAT_VERSION", "KEY_DATA_SUFFIX", "WEIGHTS_FILE",
           "config_from_dict", "config_to_dict", "host_array", "is_key_array", "make_meta",
           "model_from_arrays", "read_meta", "read_weights", "state_to_arrays", "write_dir"]
