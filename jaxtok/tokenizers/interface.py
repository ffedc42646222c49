"""What a tokenizer model declares to the API, and THE input checks (docs/design.md §2).

Every model exposes `model.token_spec` (a `TokenSpec`); `jaxtok.Tokenizer` reads only that.
The validation of images, token ids and prefix lengths lives here and nowhere else:

- host side (numpy, full checks incl. value ranges): `check_images`, `check_tokens`;
- jit-safe static checks (shapes and dtypes only) that models call on traced arrays:
  `check_image_shape`, `check_id_shape`;
- `check_prefix_length`, shared by both, and `check_lengths` (per-image prefix lengths: the
  API's `decode(..., lengths=)` and `.jtok` files);
- `decode_options` / `split_decode_options`: the options a model's decoder takes, and the
  check of those given to `decode`.

Every failure is a `ValueError` that names the argument, what was expected and what came.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import math
import types
import typing
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Float images may stray this far outside [0, 1] (resampling overshoot, float16 rounding)
# before they are called out of range; the API clips them to [0, 1] after the check.
IMAGE_RANGE_TOLERANCE = 1e-3


def jsonable(value: Any) -> Any:
  """`value` in JSON-ready form: tuples (at any depth, dict values included) and numpy
  arrays as lists, numpy scalars as Python numbers (configs, metric records)."""
  if isinstance(value, dict):
    return {k: jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value


def _type_name(tp: Any) -> str:
  return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check_config_value(tp: Any, value: Any, name: str) -> None:
  """Raises ValueError unless JSON `value` fits annotation `tp` (bool, int, float (finite),
  str, Literal, tuple/list of those, Optional/Union, nested config dataclasses as dicts);
  other annotations (Any, callables) are not checked."""
  origin, args = typing.get_origin(tp), typing.get_args(tp)
  problem = None
  if tp is Any or tp is object:
    return
  if origin in (typing.Union, types.UnionType):
    errors = []
    for arm in args:
      if arm is type(None):
        if value is None:
          return
        continue
      try:
        check_config_value(arm, value, name)
        return
      except ValueError as e:
        errors.append(str(e))
    problem = " or ".join(_type_name(a) for a in args)
  elif origin is typing.Literal:
    if any(value == a and type(value) is type(a) for a in args):
      return
    problem = f"one of {list(args)}"
  elif tp is bool:
    if isinstance(value, bool):
      return
    problem = "a bool (true/false, not a string or number)"
  elif tp is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return
    problem = "an int"
  elif tp is float:
    if (isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value)):
      return
    problem = "a finite number"
  elif tp is str:
    if isinstance(value, str):
      return
    problem = "a string"
  elif origin in (tuple, list) or tp in (tuple, list):
    if isinstance(value, (list, tuple)):
      if len(args) == 2 and args[1] is Ellipsis:
        for i, v in enumerate(value):
          check_config_value(args[0], v, f"{name}[{i}]")
        return
      if args and len(args) != len(value):
        problem = f"a list of {len(args)} values"
      else:
        for i, (a, v) in enumerate(zip(args, value)):
          check_config_value(a, v, f"{name}[{i}]")
        return
    else:
      problem = "a list"
  elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
    if isinstance(value, tp):
      return
    if isinstance(value, dict):
      check_config_dict(tp, value, name)
      return
    problem = f"a {tp.__name__} dict"
  else:
    return  # Annotations without a JSON meaning (callables, arrays): not checked here.
  raise ValueError(f"{name}: expected {problem}, got {value!r} ({type(value).__name__})")


def check_config_dict(cls: type, d: dict, name: str, *, complete: bool = False) -> None:
  """Checks `d` against dataclass `cls`: no unknown keys, (when `complete`) no missing
  init fields, and every value of its field's type (`check_config_value`)."""
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
  unknown = sorted(set(d) - set(fields))
  if unknown:
    raise ValueError(f"{name}: unknown {cls.__name__} fields {unknown}")
  if complete:
    missing = sorted(set(fields) - set(d))
    if missing:
      raise ValueError(f"{name}: {cls.__name__} fields {missing} are missing (a jaxtok "
                       f"config.json holds every field; defaults are not guessed)")
  hints = typing.get_type_hints(cls)
  for key, value in d.items():
    check_config_value(hints.get(key, Any), value, f"{name}.{key}")


class ModelConfigBase:
  """(De)serialization shared by the families' config dataclasses (`<Name>Config`).

  `to_dict` is JSON-ready (tuples as lists), `from_dict` refuses unknown fields by name (a
  family with old checkpoint keys translates them first and then calls this one), `to_json`
  is sorted, so equal configs give equal strings (checkpoint identity).
  """

  def to_dict(self) -> dict[str, Any]:
    return jsonable(dataclasses.asdict(self))

  @classmethod
  def from_dict(cls, d: dict[str, Any], *, complete: bool = False):
    """The config of `d`, every value checked against its field's type (`check_config_value`:
    no "false" for a bool, 5.5 for an int or "64" for a width).

    Args:
      d: `{field: value}` as `to_dict` gives it (JSON types: lists for tuples).
      complete: refuse a `d` that lacks fields (a `config.json`, which holds them all,
        rather than a partial dict completed by the defaults).
    """
    if not isinstance(d, dict):
      raise ValueError(f"config: expected a {cls.__name__} dict, got {type(d).__name__}")
    check_config_dict(cls, d, "config", complete=complete)
    return cls(**d)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)


@dataclasses.dataclass(frozen=True)
class TokenSpec:
  """The token interface of a tokenizer model.

  Attributes:
    num_tokens: K, tokens per image.
    image_size: side S of the square images the model takes (H = W = S).
    vocab_size: ids lie in [0, vocab_size); None when the tokens are continuous.
    ids_per_token: 1 (tokens `[B, K]`), or k for a factorized quantizer (tokens `[B, K, k]`).
    channels: C for continuous latents (tokens `[B, K, C]` float); None for discrete ids.
    prefix: whether any prefix `tokens[:, :L]`, 1 <= L <= K, decodes (ordered tokenizers).
    radix: the ids are mixed-radix numbers of these per-channel level counts, channel 0 the
      least significant digit (FSQ levels; prod(radix) = vocab_size); None: atomic ids.
  """
  num_tokens: int
  image_size: int
  vocab_size: int | None
  ids_per_token: int = 1
  channels: int | None = None
  prefix: bool = False
  radix: tuple[int, ...] | None = None

  def __post_init__(self):
    if (self.vocab_size is None) == (self.channels is None):
      raise ValueError(f"TokenSpec: expected exactly one of vocab_size (discrete) or channels "
                       f"(continuous), got vocab_size={self.vocab_size}, "
                       f"channels={self.channels}")
    if self.radix is not None:
      self._check_radix()

  def _check_radix(self) -> None:
    try:
      radix = tuple(int(r) for r in self.radix)
      ok = bool(radix) and all(r == q for r, q in zip(radix, self.radix))
    except (TypeError, ValueError):
      ok = False
    if not ok or min(radix) < 2:
      raise ValueError(f"TokenSpec: radix: expected a non-empty tuple of ints >= 2 (per-channel "
                       f"level counts), got {self.radix!r}")
    if self.vocab_size is None or self.ids_per_token != 1:
      raise ValueError(f"TokenSpec: radix: only for discrete ids, one per token; got "
                       f"vocab_size={self.vocab_size}, ids_per_token={self.ids_per_token}")
    if math.prod(radix) != self.vocab_size:
      raise ValueError(f"TokenSpec: radix: expected prod(radix) == vocab_size "
                       f"({self.vocab_size}), got prod({list(radix)}) = {math.prod(radix)}")
    object.__setattr__(self, "radix", radix)

  @property
  def continuous(self) -> bool:
    """True when the tokens are float latents `[B, K, C]`."""
    return self.channels is not None

  @property
  def token_ndim(self) -> int:
    """Rank of a token batch: 2 (`[B, K]`) or 3 (`[B, K, k]` / `[B, K, C]`)."""
    return 3 if (self.continuous or self.ids_per_token > 1) else 2

  @property
  def last_dim(self) -> int | None:
    """Size of the trailing axis of a rank-3 token batch (C or k); None for `[B, K]`."""
    if self.continuous:
      return self.channels
    return self.ids_per_token if self.ids_per_token > 1 else None

  def shape_str(self, length: Any = None) -> str:
    """The token shape as text, e.g. `[B, 32]`, `[B, L, 2]`."""
    length = self.num_tokens if length is None else length
    return f"[B, {length}]" if self.last_dim is None else f"[B, {length}, {self.last_dim}]"


def fresh_variant(family: str, config_class: type, variants: Any, name: str) -> Any:
  """A fresh (mutable) copy of `variants[name]` (ValueError listing the variants)."""
  if name not in variants:
    raise ValueError(f"variant: {family} has no variant {name!r}; expected one of "
                     f"{sorted(variants)}")
  return config_class.from_dict(variants[name].to_dict())


def as_numpy(x: Any, name: str) -> np.ndarray:
  """`x` (numpy, jax, or a rectangular list) as a numpy array."""
  if isinstance(x, (np.ndarray, jax.Array, np.generic)):
    return np.asarray(x)
  if isinstance(x, (list, tuple)):
    try:
      return np.asarray(x)
    except ValueError as e:
      raise ValueError(f"{name}: expected a rectangular array, got a ragged "
                       f"{type(x).__name__}") from e
  raise ValueError(f"{name}: expected a numpy or jax array, got {type(x).__name__}")


def check_int(value: Any, name: str, *, lo: int | None = None, hi: int | None = None) -> int:
  """`value` as an int, refusing bools, floats (2.7), strings and values outside [lo, hi]."""
  bounds = (f" in [{lo}, {hi}]" if lo is not None and hi is not None else
            f" >= {lo}" if lo is not None else f" <= {hi}" if hi is not None else "")
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name}: expected an int{bounds}, got {value!r} "
                     f"({type(value).__name__})")
  value = int(value)
  if (lo is not None and value < lo) or (hi is not None and value > hi):
    raise ValueError(f"{name}: expected an int{bounds}, got {value}")
  return value


def check_float(value: Any, name: str, *, lo: float | None = None,
                hi: float | None = None) -> float:
  """`value` as a finite float (ints accepted), refusing bools, strings ("7.5"), NaN, inf and
  values outside [lo, hi]."""
  bounds = (f" in [{lo}, {hi}]" if lo is not None and hi is not None else
            f" >= {lo}" if lo is not None else f" <= {hi}" if hi is not None else "")
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                   np.floating)):
    raise ValueError(f"{name}: expected a finite number{bounds}, got {value!r} "
                     f"({type(value).__name__})")
  value = float(value)
  if not np.isfinite(value) or (lo is not None and value < lo) or (
      hi is not None and value > hi):
    raise ValueError(f"{name}: expected a finite number{bounds}, got {value}")
  return value


def check_prefix_length(n: int, num_tokens: int, name: str) -> None:
  """Raises unless 1 <= n <= num_tokens (a decodable prefix length)."""
  if not 1 <= n <= num_tokens:
    raise ValueError(f"{name}: expected a prefix length L with 1 <= L <= {num_tokens}, got "
                     f"L={n}")


def check_lengths(lengths: Any, spec: TokenSpec, batch: int, width: int | None = None, *,
                  name: str = "lengths", family: str | None = None) -> np.ndarray:
  """Host-side check of per-image prefix lengths for `batch` rows of `width` ids (default K).

  Image b keeps `ids[b, :lengths[b]]` (the API's `decode(..., lengths=)`, `.jtok` files).
  Accepts one int (every image) or `[B]` ints, each in 1..min(width, K); lengths below K only
  when `spec.prefix`. `family` names the tokenizer in the message. Returns int32 `[B]`.
  """
  limit = min(spec.num_tokens if width is None else int(width), spec.num_tokens)
  what = f"expected an int or [B={batch}] ints in 1..{limit} (the tokens given)"
  if isinstance(lengths, (bool, np.bool_)):
    raise ValueError(f"{name}: {what}, got {lengths!r}")
  n = np.asarray(lengths) if isinstance(lengths, (int, np.integer)) else as_numpy(lengths, name)
  if n.ndim == 0:
    n = np.full((batch,), n)
  if (n.shape != (batch,) or n.size == 0 or not np.issubdtype(n.dtype, np.integer)
      or n.dtype == np.bool_ or n.min() < 1 or n.max() > limit):
    raise ValueError(f"{name}: {what}, got {lengths!r}")
  if not spec.prefix and n.min() < spec.num_tokens:
    raise ValueError(f"{name}: this {family + ' ' if family else ''}tokenizer decodes only all "
                     f"{spec.num_tokens} tokens (no prefixes), got lengths down to {n.min()}")
  return n.astype(np.int32)


def _image_shape_problem(shape: tuple, s: int, name: str) -> str | None:
  if len(shape) != 4 or shape[-1] != 3:
    return f"{name}: expected shape [B, {s}, {s}, 3] (NHWC, RGB), got {shape}"
  if shape[1:3] != (s, s):
    return (f"{name}: expected {s}x{s} images (shape [B, {s}, {s}, 3]), got "
            f"{shape[1]}x{shape[2]} (shape {shape}); resize or crop first")
  return None


def check_image_shape(x: jax.Array, image_size: int, name: str = "images") -> None:
  """Static (jit-safe) check: `x` is float `[B, S, S, 3]`, S = image_size."""
  problem = _image_shape_problem(tuple(x.shape), image_size, name)
  if problem:
    raise ValueError(problem)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name}: expected float values in [0, 1], got dtype {x.dtype}")


def check_images(x: Any, image_size: int, name: str = "images") -> np.ndarray:
  """Host-side check of images for `encode`; returns them as numpy (dtype kept).

  Accepts `[B, S, S, 3]` uint8 (0..255) or float in [0, 1] (up to `IMAGE_RANGE_TOLERANCE`
  outside); rejects empty batches, other dtypes, NaN/inf and out-of-range floats.
  """
  x = as_numpy(x, name)
  problem = _image_shape_problem(tuple(x.shape), image_size, name)
  if problem:
    raise ValueError(problem)
  if x.shape[0] == 0:
    raise ValueError(f"{name}: expected at least one image (B >= 1), got shape {x.shape}")
  if x.dtype == np.uint8:
    return x
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name}: expected dtype uint8 (0..255) or a float dtype (0..1), got "
                     f"{x.dtype}")
  xf = x.astype(np.float32)
  if not np.all(np.isfinite(xf)):
    raise ValueError(f"{name}: expected finite values in [0, 1], got "
                     f"{int(np.sum(~np.isfinite(xf)))} NaN/inf values")
  lo, hi = float(xf.min()), float(xf.max())
  if lo < -IMAGE_RANGE_TOLERANCE or hi > 1 + IMAGE_RANGE_TOLERANCE:
    hint = " (0..255 data? pass uint8 or divide by 255)" if hi > 1.5 else ""
    raise ValueError(f"{name}: expected float values in [0, 1], got range [{lo:.4g}, "
                     f"{hi:.4g}]{hint}")
  if x.dtype not in (np.float32, np.float16, np.float64):
    x = xf  # e.g. bfloat16: hand XLA plain float32.
  return x


def _check_token_dtype(dtype: Any, spec: TokenSpec, name: str) -> None:
  """Float latents for a continuous spec, integer (not bool) ids otherwise."""
  full = spec.shape_str()
  if spec.continuous:
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(f"{name}: expected float latents {full} (continuous tokens), got dtype "
                       f"{dtype}")
  elif dtype == np.bool_ or not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f"{name}: expected integer token ids (int32 {full}), got dtype {dtype}")


def check_id_shape(ids: jax.Array, spec: TokenSpec, name: str = "ids") -> None:
  """Static (jit-safe) check of a token batch for a model's decoder.

  Checks dtype (integer ids, or float latents when `spec.continuous`), rank, trailing axis and
  a token-axis length in 1..K. Models decode any prefix structurally; whether prefixes are
  meaningful (`spec.prefix`) is the API's concern (`check_tokens`).
  """
  full = spec.shape_str()
  _check_token_dtype(ids.dtype, spec, name)
  if ids.ndim != spec.token_ndim or (spec.last_dim is not None
                                     and ids.shape[-1] != spec.last_dim):
    raise ValueError(f"{name}: expected shape {full} (or a prefix {spec.shape_str('L')}), got "
                     f"{tuple(ids.shape)}")
  check_prefix_length(ids.shape[1], spec.num_tokens, f"{name} (token axis)")


def check_tokens(t: Any, spec: TokenSpec, name: str = "tokens") -> np.ndarray:
  """Host-side check of tokens for `decode`; returns int32 ids (float32 latents if continuous).

  Beyond `check_id_shape`: a non-empty batch, the exact length K unless `spec.prefix`, ids in
  [0, vocab_size), finite latents.
  """
  t = as_numpy(t, name)
  k = spec.num_tokens
  full = spec.shape_str()
  _check_token_dtype(t.dtype, spec, name)
  prefix_note = (f" (or a prefix {spec.shape_str('L')}, 1 <= L <= {k})" if spec.prefix else "")
  if t.ndim != spec.token_ndim or (spec.last_dim is not None and t.shape[-1] != spec.last_dim):
    raise ValueError(f"{name}: expected shape {full}{prefix_note}, got {t.shape}")
  if t.shape[0] == 0:
    raise ValueError(f"{name}: expected at least one row (B >= 1), got shape {t.shape}")
  length = t.shape[1]
  if spec.prefix:
    try:
      check_prefix_length(length, k, name)
    except ValueError as e:
      raise ValueError(f"{e} (shape {t.shape})") from None
  elif length != k:
    raise ValueError(f"{name}: expected exactly {k} tokens per image (shape {full}); this "
                     f"tokenizer does not decode prefixes, got {length} (shape {t.shape})")
  if spec.continuous:
    t = t.astype(np.float32)
    if not np.all(np.isfinite(t)):
      raise ValueError(f"{name}: expected finite latents, got NaN/inf values")
    return t
  lo, hi = int(t.min()), int(t.max())
  if lo < 0 or hi >= spec.vocab_size:
    raise ValueError(f"{name}: expected ids in [0, {spec.vocab_size - 1}] (vocabulary size "
                     f"{spec.vocab_size}), got range [{lo}, {hi}]")
  return t.astype(np.int32)


def _keyword_options(method: Any) -> dict[str, Any]:
  """`{name: default}` of a decode method's keyword-only arguments (its decode options)."""
  return {p.name: p.default for p in inspect.signature(method).parameters.values()
          if p.kind is inspect.Parameter.KEYWORD_ONLY}


def decode_options(model: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
  """A model's decode options: `({name: default}, names passed at run time)`.

  The options are the keyword-only arguments of `model.decode_tokens` (FlexTok's sampler
  `steps`, `guidance`, `guidance_scale`, `seed`; none for a deterministic decoder such as
  TiTok); a prefix model's `decode_prefixes` must take the same. `model.runtime_decode_options`
  names those passed as int32 scalars at run time (FlexTok's `seed`); the others are
  compiled in, so each new value compiles once.
  """
  name = type(model).__name__
  defaults = _keyword_options(model.decode_tokens)
  runtime = tuple(getattr(model, "runtime_decode_options", ()))
  missing = sorted(set(runtime) - set(defaults))
  if missing:
    raise ValueError(f"model: runtime_decode_options {missing} are not keyword options of "
                     f"{name}.decode_tokens {sorted(defaults)}")
  prefixes = getattr(model, "decode_prefixes", None)
  if model.token_spec.prefix and callable(prefixes) and _keyword_options(prefixes) != defaults:
    raise ValueError(f"model: {name}.decode_prefixes must take the keyword options of "
                     f"decode_tokens {sorted(defaults)}")
  return defaults, runtime


def split_decode_options(options: dict[str, Any], defaults: dict[str, Any],
                         runtime: tuple[str, ...], owner: str) -> tuple[tuple, dict]:
  """Host-side check of `decode` options against a model's `decode_options(model)`.

  Returns `(compiled-in options as a sorted (name, value) tuple, {runtime name: int32})`,
  defaults filled in. `owner` names the decoder in the message of an unknown option.
  """
  unknown = sorted(set(options) - set(defaults))
  if unknown:
    accepted = (f"it accepts {sorted(defaults)}" if defaults else
                "its decode is deterministic and accepts no options")
    raise ValueError(f"{unknown[0]}: not a decode option of {owner}; {accepted}")
  full = {**defaults, **options}
  values = {}
  for name in runtime:
    v = full.pop(name)
    if (isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))
        or not -2**31 <= int(v) < 2**31):
      raise ValueError(f"{name}: expected an int in [-2**31, 2**31), got {v!r}")
    values[name] = np.int32(v)
  static = []
  for name in sorted(full):
    v = full[name]
    v = v.item() if isinstance(v, np.generic) else v
    try:
      hash(v)
    except TypeError:
      raise ValueError(f"{name}: expected a scalar option value (int, float, str or None), "
                       f"got {type(v).__name__}") from None
    static.append((name, v))
  return tuple(static), values


__all__ = ["IMAGE_RANGE_TOLERANCE", "TokenSpec", "as_numpy", "check_float", "check_id_shape",
           "check_image_shape", "check_int", "check_images", "check_lengths", "check_prefix_length",
           "check_tokens", "decode_options", "split_decode_options"]
