"""The public encode/decode API: `load`, `save` and `Tokenizer` (DESIGN.md §2).

    import jaxtok
    tok = jaxtok.load("path/to/checkpoint_dir")  # or "S-128" / "titok:S-128": random init
    tokens = tok.encode(images)    # [B, H, W, 3] uint8 or float in [0, 1] -> int32 [B, K]
    recon = tok.decode(tokens)     # float32 [B, H, W, 3] in [0, 1]
    recon = tok.decode(tokens[:, :k])   # any prefix, for ordered tokenizers (One-D-Piece)
    jaxtok.save(tok, "out_dir")

A checkpoint directory holds exactly two files:

- `config.json`: `{"family": "titok", "config": {...the model config dataclass...},
  "format": "jaxtok-checkpoint", "format_version": 1}`;
- `weights.safetensors`: every variable of the model (`nnx.state`), keyed by its
  `/`-joined path (e.g. `encoder/transformer/0/attn/qkv/kernel`). PRNG key variables are stored
  as their raw key data (uint32) and re-wrapped on load.

Safetensors is read and written with numpy (`jaxtok.io.safetensors`), so a
checkpoint loads without torch, orbax or the network.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import tempfile
import threading
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok.io import safetensors

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT_NAME = "jaxtok-checkpoint"
FORMAT_VERSION = 1

# Float images may stray this far outside [0, 1] (resampling overshoot, float16 rounding)
# before we call them out of range; they are clipped to [0, 1] after the check.
IMAGE_RANGE_TOLERANCE = 1e-3

# Suffix of the safetensors entry that holds a PRNG key variable's raw key data.
_KEY_DATA_SUFFIX = ".__key_data__"

# family name -> module that defines its `VARIANTS`. The model class comes from
# `jaxtok.tokenizers.TOKENIZERS`; the class named here is the fallback when that registry lacks
# the family.
_FAMILY_MODULES = {
    "titok": "jaxtok.tokenizers.titok",
    "one_d_piece": "jaxtok.tokenizers.one_d_piece",
}
_FALLBACK_CLASSES = {
    "titok": ("jaxtok.tokenizers.titok", "TiTok"),
    "one_d_piece": ("jaxtok.tokenizers.titok", "TiTok"),  # One-D-Piece = TiTok + tail drop.
}


# ------------------------------------------------------------------------------- families


def _registry() -> dict[str, type]:
  """`{family: model class}`: jaxtok.tokenizers.TOKENIZERS, completed by the fallbacks."""
  from jaxtok import tokenizers  # pylint: disable=g-import-not-at-top  (avoids an import cycle)
  registry = {k: f.model_class for k, f in tokenizers.TOKENIZERS.items()}
  for family, (module, name) in _FALLBACK_CLASSES.items():
    if family not in registry:
      registry[family] = getattr(importlib.import_module(module), name)
  return registry


def _model_class(family: str) -> type:
  registry = _registry()
  if family not in registry:
    raise ValueError(f"family: expected one of {sorted(registry)}, got {family!r}")
  return registry[family]


def _variants(family: str) -> Mapping[str, Any]:
  if family not in _FAMILY_MODULES:
    raise ValueError(f"family: expected one of {sorted(_FAMILY_MODULES)}, got {family!r}")
  return getattr(importlib.import_module(_FAMILY_MODULES[family]), "VARIANTS", {})


def available_variants() -> dict[str, list[str]]:
  """`{family: [variant, ...]}` that `load` accepts as `"family:variant"` (random init)."""
  out = {}
  for family in _FAMILY_MODULES:
    try:
      out[family] = sorted(_variants(family))
    except ImportError:  # A family whose module is not importable offers no variants.
      continue
  return out


def _family_of_model(model: nnx.Module) -> str:
  """The registered family whose model class `model` is (first match, titok first)."""
  registry = _registry()
  cfg = getattr(model, "config", None)
  if getattr(cfg, "tail_token_drop", False) and isinstance(model, registry["one_d_piece"]):
    return "one_d_piece"
  for name, cls in registry.items():
    if isinstance(model, cls):
      return name
  raise ValueError(f"model: expected an instance of one of the classes of "
                   f"{sorted(registry)}, got {type(model).__name__}")


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
    if isinstance(v, (np.generic,)):
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
  if hasattr(cls, "from_dict"):
    return cls.from_dict(dict(data))
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(data) - set(fields))
  if unknown:
    raise ValueError(f"config: {cls.__name__} has no field(s) {unknown}; expected keys among "
                     f"{sorted(fields)}")
  hints = typing.get_type_hints(cls)
  kwargs = {k: _coerce(hints.get(k, Any), v) for k, v in data.items() if fields[k].init}
  return cls(**kwargs)


# ----------------------------------------------------------------------- weights on disk


def _path_key(path: tuple) -> str:
  return "/".join(str(p) for p in path)


def _is_key_array(x: Any) -> bool:
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _variable_value(var: Any) -> Any:
  return var.get_value() if hasattr(var, "get_value") else var.value


def _set_variable_value(var: Any, value: Any) -> None:
  if hasattr(var, "set_value"):
    var.set_value(value)
  else:
    var.value = value


def state_to_arrays(model: nnx.Module) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """Every variable of `model` as `{path: np.ndarray}` plus safetensors metadata."""
  arrays, key_impls = {}, {}
  for path, var in nnx.to_flat_state(nnx.state(model)):
    value = _variable_value(var)
    key = _path_key(path)
    if _is_key_array(value):
      key_impls[key] = str(jax.random.key_impl(value))
      arrays[key + _KEY_DATA_SUFFIX] = np.asarray(jax.random.key_data(value))
    else:
      arr = np.asarray(value)
      if arr.dtype == jnp.bfloat16:  # safetensors via numpy has no bf16: store widened.
        arr = arr.astype(np.float32)
      arrays[key] = arr
  return arrays, {"key_impls": json.dumps(key_impls)}


def model_from_arrays(family: str, config: Any, arrays: Mapping[str, np.ndarray],
                      *, source: str = "weights", model_class: type | None = None,
                      key_impls: Mapping[str, str] | None = None) -> nnx.Module:
  """Builds the `family` model for `config` with its variables taken from `arrays`.

  Args:
    family: registered family name.
    config: the model config dataclass.
    arrays: `{path: array}` as written by `state_to_arrays`.
    source: names the origin of `arrays` in error messages.
    model_class: build this class instead of the family's registered one.
    key_impls: `{path: PRNG impl name}` of key variables (default: jax's default impl).

  Returns:
    The model (no random init is run unless non-parameter variables are missing).

  Raises:
    ValueError: a parameter is missing, has the wrong shape, or `arrays` holds unused keys.
  """
  cls = model_class or _model_class(family)
  abstract = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  flat = list(nnx.to_flat_state(state))
  used, missing = set(), []
  for path, var in flat:
    key = _path_key(path)
    spec = _variable_value(var)
    if _is_key_array(spec) and key + _KEY_DATA_SUFFIX in arrays:
      used.add(key + _KEY_DATA_SUFFIX)
      data = jnp.asarray(arrays[key + _KEY_DATA_SUFFIX], jnp.uint32)
      impl = (key_impls or {}).get(key)
      _set_variable_value(var, jax.random.wrap_key_data(data, impl=impl))
      continue
    if key not in arrays:
      missing.append((key, var))
      continue
    used.add(key)
    arr = np.asarray(arrays[key])
    if tuple(arr.shape) != tuple(spec.shape):
      raise ValueError(f"{source}: variable {key!r} has shape {tuple(arr.shape)}, the model for "
                       f"this config expects {tuple(spec.shape)}")
    _set_variable_value(var, jnp.asarray(arr, dtype=spec.dtype))
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
    real = cls(config, rngs=nnx.Rngs(0))
    real_flat = {_path_key(p): v for p, v in nnx.to_flat_state(nnx.state(real))}
    for key, var in missing:
      _set_variable_value(var, _variable_value(real_flat[key]))
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


# ------------------------------------------------------------------------ the Tokenizer


def _as_numpy(x: Any, name: str) -> np.ndarray:
  if isinstance(x, (np.ndarray, jax.Array, np.generic)):
    return np.asarray(x)
  if isinstance(x, (list, tuple)):
    try:
      return np.asarray(x)
    except ValueError as e:
      raise ValueError(f"{name}: expected a rectangular array, got a ragged "
                       f"{type(x).__name__}") from e
  raise ValueError(f"{name}: expected a numpy or jax array, got {type(x).__name__}")


class Tokenizer:
  """A tokenizer model behind a numpy-in, numpy-out interface.

  Attributes:
    model: the `nnx.Module` (e.g. `jaxtok.tokenizers.titok.TiTok`).
    config: its config dataclass.
    family: registered family name ("titok", "one_d_piece").
    num_tokens: K, tokens per image.
    codebook_size: number of codebook entries; token ids lie in [0, codebook_size).
    image_size: side of the square images the model takes (H = W).
    supports_prefix: whether `decode` accepts a prefix `tokens[:, :k]`, 1 <= k <= K.
    num_factors: None for one codebook; k when the quantizer is factorized (tokens are then
      `[B, K, k]`, each id in [0, codebook_size)).
    continuous: True for VAE models, whose "tokens" are float32 `[B, K, C]` latents.
    trace_counts: `{"encode": n, "decode": n}` traces so far (one per new input shape/dtype).
  """

  def __init__(self, model: nnx.Module, *, family: str | None = None):
    self.model = model
    self.config = model.config
    self.family = family or _family_of_model(model)
    self.num_tokens = int(self.config.num_latent_tokens)
    self.codebook_size = int(self.config.codebook_size)
    self.image_size = int(self.config.image_size)
    self.supports_prefix = bool(getattr(model, "supports_prefix",
                                        getattr(self.config, "tail_token_drop", False)))
    self.continuous = getattr(self.config, "quantize_mode", "vq") == "vae"
    self.num_factors = (int(self.config.num_sub_codebooks)
                        if getattr(self.config, "quantizer", "vq") == "factorized_vq" else None)
    self.trace_counts = {"encode": 0, "decode": 0}
    self._graphdef = nnx.graphdef(model)
    self._compiled: dict[tuple, Callable] = {}
    self._lock = threading.Lock()

  def __repr__(self):
    return (f"Tokenizer(family={self.family!r}, image_size={self.image_size}, "
            f"num_tokens={self.num_tokens}, codebook_size={self.codebook_size}, "
            f"supports_prefix={self.supports_prefix})")

  # -- jitted bodies ------------------------------------------------------------------

  def _encode_body(self, state, images):
    self.trace_counts["encode"] += 1  # Runs only while tracing.
    model = nnx.merge(self._graphdef, state)
    if images.dtype == jnp.uint8:
      x = images.astype(jnp.float32) / 255.0
    else:
      x = jnp.clip(images.astype(jnp.float32), 0.0, 1.0)
    return model.encode(x).astype(jnp.float32 if self.continuous else jnp.int32)

  def _decode_body(self, state, tokens):
    self.trace_counts["decode"] += 1
    model = nnx.merge(self._graphdef, state)
    return jnp.clip(model.decode_tokens(tokens).astype(jnp.float32), 0.0, 1.0)

  def _run(self, kind: str, x: np.ndarray) -> np.ndarray:
    state = nnx.state(self.model)
    key = (kind, x.shape, str(x.dtype))
    with self._lock:
      fn = self._compiled.get(key)
      if fn is None:
        body = self._encode_body if kind == "encode" else self._decode_body
        fn = jax.jit(body).lower(state, x).compile()
        self._compiled[key] = fn
    return np.asarray(fn(state, x))

  # -- public ---------------------------------------------------------------------------

  def check_images(self, images: Any) -> np.ndarray:
    """Validates `images` for `encode`; returns them as a numpy array (dtype kept)."""
    x = _as_numpy(images, "images")
    s = self.image_size
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"images: expected shape [B, {s}, {s}, 3] (NHWC, RGB), got {x.shape}")
    if x.shape[0] == 0:
      raise ValueError(f"images: expected at least one image (B >= 1), got shape {x.shape}")
    if x.shape[1:3] != (s, s):
      raise ValueError(f"images: expected {s}x{s} images (shape [B, {s}, {s}, 3]), got "
                       f"{x.shape[1]}x{x.shape[2]} (shape {x.shape}); resize or crop first")
    if x.dtype == np.uint8:
      return x
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"images: expected dtype uint8 (0..255) or a float dtype (0..1), got "
                       f"{x.dtype}")
    xf = x.astype(np.float32)
    if not np.all(np.isfinite(xf)):
      raise ValueError(f"images: expected finite values in [0, 1], got "
                       f"{int(np.sum(~np.isfinite(xf)))} NaN/inf values")
    lo, hi = float(xf.min()), float(xf.max())
    if lo < -IMAGE_RANGE_TOLERANCE or hi > 1 + IMAGE_RANGE_TOLERANCE:
      hint = " (0..255 data? pass uint8 or divide by 255)" if hi > 1.5 else ""
      raise ValueError(f"images: expected float values in [0, 1], got range [{lo:.4g}, "
                       f"{hi:.4g}]{hint}")
    if x.dtype not in (np.float32, np.float16, np.float64):
      x = xf  # e.g. bfloat16: hand XLA plain float32.
    return x

  def _token_shape(self, length: str) -> str:
    if self.continuous:
      return f"[B, {length}, {self.config.token_size}]"
    if self.num_factors:
      return f"[B, {length}, {self.num_factors}]"
    return f"[B, {length}]"

  def check_tokens(self, tokens: Any) -> np.ndarray:
    """Validates `tokens` for `decode`; returns them as int32 `[B, L]` (see `_token_shape`)."""
    t = _as_numpy(tokens, "tokens")
    k = self.num_tokens
    full = self._token_shape(str(k))
    if self.continuous:
      if not jnp.issubdtype(t.dtype, jnp.floating):
        raise ValueError(f"tokens: expected float latents {full} (this is a VAE tokenizer), "
                         f"got dtype {t.dtype}")
    elif t.dtype == np.bool_ or not np.issubdtype(t.dtype, np.integer):
      raise ValueError(f"tokens: expected integer token ids (int32 {full}), got dtype "
                       f"{t.dtype}")
    want_ndim = 3 if (self.continuous or self.num_factors) else 2
    prefix_note = (f" (or a prefix {self._token_shape('L')}, 1 <= L <= {k})"
                   if self.supports_prefix else "")
    if t.ndim != want_ndim or (want_ndim == 3 and t.shape[2] != (
        self.config.token_size if self.continuous else self.num_factors)):
      raise ValueError(f"tokens: expected shape {full}{prefix_note}, got {t.shape}")
    if t.shape[0] == 0:
      raise ValueError(f"tokens: expected at least one row (B >= 1), got shape {t.shape}")
    length = t.shape[1]
    if self.supports_prefix:
      if not 1 <= length <= k:
        raise ValueError(f"tokens: expected a prefix length L with 1 <= L <= {k}, got "
                         f"L={length} (shape {t.shape})")
    elif length != k:
      raise ValueError(f"tokens: expected exactly {k} tokens per image (shape {full}); "
                       f"this {self.family} tokenizer does not decode prefixes, got "
                       f"{length} (shape {t.shape})")
    if self.continuous:
      t = t.astype(np.float32)
      if not np.all(np.isfinite(t)):
        raise ValueError("tokens: expected finite latents, got NaN/inf values")
      return t
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= self.codebook_size:
      raise ValueError(f"tokens: expected ids in [0, {self.codebook_size - 1}] (codebook size "
                       f"{self.codebook_size}), got range [{lo}, {hi}]")
    return t.astype(np.int32)

  def encode(self, images: Any) -> np.ndarray:
    """Images -> token ids.

    Args:
      images: `[B, H, W, 3]` uint8 in 0..255 or float in [0, 1] (numpy or jax), H = W =
        `image_size`.

    Returns:
      `[B, K] int32` numpy token ids.
    """
    return self._run("encode", self.check_images(images))

  def decode(self, tokens: Any) -> np.ndarray:
    """Token ids -> images.

    Args:
      tokens: `[B, K]` integer ids in [0, codebook_size), or a prefix `[B, L]` with
        1 <= L <= K when `supports_prefix`.

    Returns:
      `[B, H, W, 3] float32` numpy images clipped to [0, 1].
    """
    return self._run("decode", self.check_tokens(tokens))


# ------------------------------------------------------------------------- load / save


def _parse_variant(name: str) -> tuple[str, str]:
  if ":" in name:
    family, variant = name.split(":", 1)
    variants = _variants(family)
    if variant not in variants:
      raise ValueError(f"path_or_variant: {family} has no variant {variant!r}; expected one of "
                       f"{sorted(variants)}")
    return family, variant
  matches = [f for f, vs in available_variants().items() if name in vs]
  if not matches:
    raise ValueError(f"path_or_variant: expected a checkpoint directory (with {CONFIG_FILE}) or "
                     f"a variant name among {available_variants()}, got {name!r}")
  return matches[0], name


def read_config(path: str | os.PathLike) -> tuple[str, Any]:
  """`(family, config dataclass)` from a checkpoint directory's `config.json`."""
  path = Path(path)
  try:
    meta = json.loads((path / CONFIG_FILE).read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"path_or_variant: cannot read {path / CONFIG_FILE}: {e}") from e
  if not isinstance(meta, dict) or "family" not in meta or "config" not in meta:
    raise ValueError(f"path_or_variant: expected {path / CONFIG_FILE} to hold "
                     f"{{'family': ..., 'config': {{...}}}}, got keys "
                     f"{sorted(meta) if isinstance(meta, dict) else type(meta).__name__}")
  family = meta["family"]
  return family, config_from_dict(_config_class(family), meta["config"])


def _config_class(family: str) -> type:
  """The config dataclass the family's model takes (its `config_class`, else the annotation
  of its constructor's `config` argument)."""
  from jaxtok import tokenizers  # pylint: disable=g-import-not-at-top
  if family in tokenizers.TOKENIZERS:
    return tokenizers.TOKENIZERS[family].config_class
  cls = _model_class(family)
  explicit = getattr(cls, "config_class", None)
  if explicit is not None:
    return explicit
  hint = typing.get_type_hints(cls.__init__).get("config")
  if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
    raise ValueError(f"family: cannot tell the config class of {cls.__name__} (expected a "
                     f"`config_class` attribute or a dataclass annotation on `config`)")
  return hint


def load(path_or_variant: str | os.PathLike, *, seed: int = 0) -> Tokenizer:
  """Loads a tokenizer from a checkpoint directory, or builds a variant with random weights.

  Args:
    path_or_variant: a directory holding `config.json` + `weights.safetensors` (as written by
      `save` or the converter), or a variant name: `"S-128"`, `"titok:S-128"`,
      `"one_d_piece:S-256"` (see `available_variants()`).
    seed: init seed for a variant name (ignored for directories).

  Returns:
    A `Tokenizer`.
  """
  if isinstance(path_or_variant, Tokenizer):
    return path_or_variant
  if not isinstance(path_or_variant, (str, os.PathLike)):
    raise ValueError(f"path_or_variant: expected a directory path or a variant name (str), got "
                     f"{type(path_or_variant).__name__}")
  path = Path(path_or_variant)
  if path.is_file() and path.name == CONFIG_FILE:
    path = path.parent
  if path.is_dir():
    if not (path / CONFIG_FILE).is_file():
      raise ValueError(f"path_or_variant: directory {str(path)!r} has no {CONFIG_FILE}; expected "
                       f"a jaxtok checkpoint (convert official files with "
                       f"`python -m jaxtok.tokenizers.convert`)")
    family, config = read_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
      raise ValueError(f"path_or_variant: directory {str(path)!r} has no {WEIGHTS_FILE}")
    arrays = safetensors.read_safetensors(weights)
    key_impls = json.loads(safetensors.read_safetensors_metadata(weights).get("key_impls", "{}"))
    model = model_from_arrays(family, config, arrays, source=str(weights), key_impls=key_impls)
    return Tokenizer(model, family=family)
  name = os.fspath(path_or_variant)
  if os.sep in name or name.startswith("."):
    raise ValueError(f"path_or_variant: {name!r} is not an existing directory")
  family, variant = _parse_variant(name)
  config = _variants(family)[variant]
  if not isinstance(seed, (int, np.integer)):
    raise ValueError(f"seed: expected an int, got {type(seed).__name__}")
  model = _model_class(family)(config, rngs=nnx.Rngs(int(seed)))
  return Tokenizer(model, family=family)


def save(tok_or_model: Tokenizer | nnx.Module, directory: str | os.PathLike, *,
         family: str | None = None, overwrite: bool = True,
         source: Mapping[str, Any] | None = None) -> Path:
  """Writes a checkpoint directory atomically (temp dir in the same parent, then rename).

  Args:
    tok_or_model: a `Tokenizer` or a model whose `.config` is its config dataclass.
    directory: destination. An existing jaxtok checkpoint there is replaced when `overwrite`;
      an existing directory with other content is never touched (ValueError).
    family: family name to record; default: the Tokenizer's, or inferred from the model class.
    overwrite: allow replacing an existing jaxtok checkpoint.
    source: JSON-ready provenance stored under `"source"` in config.json (the converter
      records the official files and their sha256 there); `load` ignores it.

  Returns:
    The directory path.
  """
  if isinstance(tok_or_model, Tokenizer):
    model, family = tok_or_model.model, family or tok_or_model.family
  elif isinstance(tok_or_model, nnx.Module):
    model, family = tok_or_model, family or _family_of_model(tok_or_model)
  else:
    raise ValueError(f"tok_or_model: expected a jaxtok.Tokenizer or an nnx.Module, got "
                     f"{type(tok_or_model).__name__}")
  config = getattr(model, "config", None)
  if config is None:
    raise ValueError("tok_or_model: expected the model to carry its config as `.config`")
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
  arrays, metadata = state_to_arrays(model)
  meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "family": family,
          "config": config_to_dict(config)}
  if source is not None:
    meta["source"] = dict(source)
  tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
  try:
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
