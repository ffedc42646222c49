"""The public encode/decode API: `load`, `save` and `Tokenizer` (docs/design.md §2).

    import jaxtok
    tok = jaxtok.load("path/to/checkpoint_dir")  # or "titok:S-128": random init
    tokens = tok.encode(images)    # [B, H, W, 3] uint8 or float in [0, 1] -> int32 [B, K]
    recon = tok.decode(tokens)     # float32 [B, H, W, 3] in [0, 1]
    recon = tok.decode(tokens[:, :k])   # any prefix, for ordered tokenizers (One-D-Piece)
    recon = tok.decode(tokens[:, :k], steps=20, guidance="apg", guidance_scale=7.5, seed=0)
                                        # sampler options, for sampled decoders (FlexTok)
    recon = tok.decode(tokens, lengths=n)   # per-image prefix lengths n [B]
    ada = tok.encode_adaptive(images, target=("psnr", 25.0))   # per-image shortest prefix
    jaxtok.save(tok, "out_dir")
    jaxtok.api.fingerprint(tok)   # sha256 of family, config, weights: .jtok, token-shard id

The checkpoint directory format is `jaxtok.io.checkpoint`; families come from the one
registry `jaxtok.tokenizers.TOKENIZERS`; what a model's tokens look like from its
`model.token_spec` (`jaxtok.tokenizers.interface.TokenSpec`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok import adaptive, hub
from jaxtok.adaptive import ADAPTIVE_METRICS, AdaptiveTokens
from jaxtok.io import checkpoint
from jaxtok.io.checkpoint import CONFIG_FILE
from jaxtok.tokenizers import (
  available_variants,
  family_of,
  get_family,
  interface,
  load_dir,
  read_dir_config,
  resolve_variant,
)
from jaxtok.tokenizers.quantizers.stats import CodebookStats


class Tokenizer:
  """A tokenizer model behind a numpy-in, numpy-out interface.

  Attributes:
    model: the `nnx.Module` (e.g. `jaxtok.tokenizers.titok.TiTok`).
    config: its config dataclass.
    family: registered family name ("titok", "one_d_piece").
    token_spec: the model's `TokenSpec` (everything below is read from it).
    num_tokens: K, tokens per image.
    codebook_size: vocabulary size; token ids lie in [0, codebook_size) (None if continuous).
    image_size: side of the square images the model takes (H = W).
    supports_prefix: whether `decode` accepts a prefix `tokens[:, :k]`, 1 <= k <= K.
    num_factors: None for one id per token; k when tokens are `[B, K, k]` (factorized VQ).
    continuous: True for continuous (VAE) models, whose "tokens" are float32 `[B, K, C]`.
    decode_options: `{name: default}` of the options `decode` forwards to the model
      (`interface.decode_options`; empty for deterministic decoders such as TiTok).
    pads_prefixes: True when the model decodes padded ids with per-image lengths
      (`model.decode_prefixes`, FlexTok): every prefix length shares one compiled function.
    trace_counts: `{"encode": n, "decode": n}` traces so far (one per new input shape/dtype
      and compiled-in decode options).
  """

  def __init__(self, model: nnx.Module, *, family: str | None = None):
    self.model = model
    self.config = model.config
    self.family = get_family(family).name if family else family_of(model).name
    self.token_spec = spec = model.token_spec
    self.num_tokens = spec.num_tokens
    self.codebook_size = spec.vocab_size
    self.image_size = spec.image_size
    self.supports_prefix = spec.prefix
    self.continuous = spec.continuous
    self.num_factors = spec.ids_per_token if spec.ids_per_token > 1 else None
    self.decode_options, self._runtime_options = interface.decode_options(model)
    self.pads_prefixes = spec.prefix and callable(getattr(model, "decode_prefixes", None))
    self.trace_counts = {"encode": 0, "decode": 0}
    self._graphdef = nnx.graphdef(model)
    self._compiled: dict[tuple, Callable] = {}
    self._lock = threading.Lock()
    self._fingerprint: str | None = None  # `fingerprint(self)`, computed on first use.

  def __repr__(self):
    return (f"Tokenizer(family={self.family!r}, image_size={self.image_size}, "
            f"num_tokens={self.num_tokens}, codebook_size={self.codebook_size}, "
            f"supports_prefix={self.supports_prefix})")

  def _encode_body(self, state, images):
    self.trace_counts["encode"] += 1  # Runs only while tracing.
    model = nnx.merge(self._graphdef, state)
    if images.dtype == jnp.uint8:
      x = images.astype(jnp.float32) / 255.0
    else:
      x = jnp.clip(images.astype(jnp.float32), 0.0, 1.0)
    return model.encode(x).astype(jnp.float32 if self.continuous else jnp.int32)

  def _decode_body(self, static, state, tokens, lengths, runtime):
    self.trace_counts["decode"] += 1
    model = nnx.merge(self._graphdef, state)
    options = {**dict(static), **runtime}
    if lengths is None:
      out = model.decode_tokens(tokens, **options)
    else:
      out = model.decode_prefixes(tokens, lengths, **options)
    return jnp.clip(out.astype(jnp.float32), 0.0, 1.0)

  def _compiled_fn(self, key: tuple, body: Callable, *args) -> Callable:
    with self._lock:
      fn = self._compiled.get(key)
      if fn is None:
        fn = jax.jit(body).lower(*args).compile()
        self._compiled[key] = fn
    return fn

  def _run_encode(self, x: np.ndarray) -> np.ndarray:
    """One compiled encode per images shape/dtype."""
    state = nnx.state(self.model)
    fn = self._compiled_fn(("encode", x.shape, str(x.dtype)), self._encode_body, state, x)
    return np.asarray(fn(state, x))

  def _run_decode(self, ids: np.ndarray, lengths: np.ndarray | None, static: tuple,
                  runtime: dict[str, np.ndarray]) -> np.ndarray:
    """One compiled decode per (ids shape/dtype, padded or not, compiled-in options)."""
    state = nnx.state(self.model)
    key = ("decode", ids.shape, str(ids.dtype), lengths is None, static)
    body = functools.partial(self._decode_body, static)
    fn = self._compiled_fn(key, body, state, ids, lengths, runtime)
    return np.asarray(fn(state, ids, lengths, runtime))

  def decode_cache_keys(self) -> list[tuple]:
    """`("decode", ids shape, dtype, unpadded, compiled-in options)` of each compiled decode."""
    with self._lock:
      return [k for k in self._compiled if k[0] == "decode"]

  def split_decode_options(self, options: Mapping[str, Any]) -> tuple[tuple, dict]:
    """`decode` options -> (compiled-in options, runtime int32 scalars), checked."""
    return interface.split_decode_options(
        options, self.decode_options, self._runtime_options,
        f"this {self.family} tokenizer ({type(self.model).__name__}.decode_tokens)")

  def check_images(self, images: Any) -> np.ndarray:
    """Validates `images` for `encode`; returns them as a numpy array (dtype kept)."""
    return interface.check_images(images, self.image_size, "images")

  def check_tokens(self, tokens: Any) -> np.ndarray:
    """Validates `tokens` for `decode`; returns int32 ids (float32 latents if continuous)."""
    return interface.check_tokens(tokens, self.token_spec, "tokens")

  def encode(self, images: Any) -> np.ndarray:
    """Images -> token ids.

    Args:
      images: `[B, S, S, 3]` uint8 in 0..255 or float in [0, 1] (numpy or jax), S = `image_size`.

    Returns:
      `[B, K] int32` numpy token ids (`[B, K, k]` factorized; float32 `[B, K, C]` latents
      for continuous models).
    """
    return self._run_encode(self.check_images(images))

  def decode(self, tokens: Any, *, lengths: Any = None, **options: Any) -> np.ndarray:
    """Token ids -> images.

    Prefix decoding: with `pads_prefixes` (FlexTok) the ids are padded to K on the host and
    every prefix length, and any mix of per-image `lengths`, runs one compiled function per
    batch size; otherwise (One-D-Piece) each length is its own compile.

    Args:
      tokens: `[B, K]` integer ids in [0, codebook_size), or a prefix `[B, L]` with
        1 <= L <= K when `supports_prefix`; or `AdaptiveTokens` (its ids and lengths).
      lengths: optional per-image prefix lengths `[B]` (or one int), each in 1..L: image b
        decodes `tokens[b, :lengths[b]]` (ids after it are ignored); below K only when
        `supports_prefix` (`interface.check_lengths`).
      **options: decode options of the model, listed in `decode_options` (default: the
        model's own; see `interface.decode_options`). FlexTok (a rectified-flow sampler):
        `steps` (Euler steps), `guidance` ("none", "cfg" or "apg"), `guidance_scale` (1.0 =
        no guidance), `seed` (the sampler noise). A deterministic decoder (TiTok) takes none.

    Returns:
      `[B, H, W, 3] float32` numpy images clipped to [0, 1].
    """
    static, runtime = self.split_decode_options(options)
    if isinstance(tokens, AdaptiveTokens):
      if lengths is not None:
        raise ValueError("lengths: AdaptiveTokens carry their own lengths; got lengths too")
      tokens, lengths = tokens.ids, tokens.lengths
    t = interface.as_numpy(tokens, "tokens")
    if lengths is not None and t.ndim >= 2:
      lengths = interface.check_lengths(lengths, self.token_spec, t.shape[0], t.shape[1],
                                        family=self.family)
      if np.issubdtype(t.dtype, np.integer):  # Ids after each length are ignored.
        tail = np.arange(t.shape[1])[None, :] >= lengths[:, None]
        t = np.where(tail.reshape(tail.shape + (1,) * (t.ndim - 2)), 0, t)
    ids = self.check_tokens(t)
    b, n = ids.shape[:2]
    if self.pads_prefixes:
      padded = np.zeros((b, self.num_tokens) + ids.shape[2:], ids.dtype)
      padded[:, :n] = ids
      keep = np.full((b,), n, np.int32) if lengths is None else lengths
      return self._run_decode(padded, keep, static, runtime)
    if lengths is None or np.all(lengths == n):
      return self._run_decode(ids, None, static, runtime)
    out = np.zeros((b, self.image_size, self.image_size, 3), np.float32)
    for m in np.unique(lengths):
      sel = np.flatnonzero(lengths == m)
      out[sel] = self._run_decode(ids[sel, :int(m)], None, static, runtime)
    return out

  def encode_adaptive(self, images: Any, target: tuple[str, float] = ("psnr", 25.0),
                      **options: Any) -> AdaptiveTokens:
    """Per image, the shortest prefix whose decode reaches `target`, e.g. `("psnr", 25.0)`,
    `("ssim", 0.8)`, `("lpips", 0.3)`; or the rate-distortion optimal prefixes for a mean
    byte budget `("bytes", 40)` or a multiplier `("lambda", 0.1)`: `jaxtok.adaptive.search`,
    whose keyword arguments `options` are (`lengths`, `lpips_weights`, `batch_size`, `ids`,
    `decode_options`, `quality`, `rates`)."""
    return adaptive.search(self, images, target, **options)


def fingerprint(tok: Tokenizer) -> str:
  """The identity of a tokenizer's encode/decode functions: a sha256 hex digest.

  Hashed in order: the family name, the config as sorted-key JSON (`checkpoint.config_to_dict`),
  then every model variable but RNG state and code-usage statistics (neither changes what
  `encode` or `decode` return), sorted by path: path ("/"-joined), dtype and shape
  (`"<f4(2, 3)"`), bytes. Saving and loading keeps it. `.jtok` files store its first 4 bytes
  (`jaxtok.codec.priors.tokenizer_id`), token shard manifests all of it. Computed once per
  Tokenizer object (weights changed in place afterwards keep the old value).
  """
  if tok._fingerprint is None:
    h = hashlib.sha256(tok.family.encode())
    h.update(json.dumps(checkpoint.config_to_dict(tok.config), sort_keys=True).encode())
    state = nnx.state(tok.model, nnx.Not(nnx.Any(nnx.RngState, CodebookStats)))
    for path, var in sorted(nnx.to_flat_state(state), key=lambda kv: [str(p) for p in kv[0]]):
      arr = np.ascontiguousarray(np.asarray(var.get_value()))
      h.update("/".join(map(str, path)).encode() + f"{arr.dtype.str}{arr.shape}".encode())
      h.update(arr.tobytes())
    tok._fingerprint = h.hexdigest()
  return tok._fingerprint


def read_config(path: str | os.PathLike) -> tuple[str, Any]:
  """`(family, config dataclass)` from a checkpoint directory's `config.json`."""
  fam, config = read_dir_config(path)
  return fam.name, config


def load(path_or_variant: str | os.PathLike, *, seed: int = 0, dtype: str = "float32",
         family: str | None = None, **hub_options: Any) -> Tokenizer:
  """Loads a tokenizer from a checkpoint directory, or builds a variant with random weights.

  Args:
    path_or_variant: released weights by name, `"hf:ORG/NAME[@REVISION][/FILE]"`
      (`jaxtok.hub`: downloaded or found in the HF cache, converted once, cached); a directory
      holding `config.json` + `weights.safetensors` (as written by `save` or the converter);
      or a variant name `"family:variant"`: `"titok:S-128"`, `"one_d_piece:S-256"` (see
      `available_variants()`; a bare name such as `"S-128"` works when only one family has it).
    seed: init seed for a variant name (ignored for directories).
    dtype: "float32", or "bfloat16" for inference at half the memory: the float weights are
      cast, and models that compute in their weights' dtype (TiTok, One-D-Piece) run in it.
    family: for `hf:` names, the family expected (another is an error).
    **hub_options: for `hf:` names, the family converter's options (`jaxtok.hub.load`).
  """
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"dtype: expected 'float32' or 'bfloat16', got {dtype!r}")
  tok = _load(path_or_variant, seed=seed, family=family, **hub_options)
  if dtype == "float32":
    return tok
  graphdef, params, rest = nnx.split(tok.model, nnx.Param, ...)
  params = jax.tree.map(lambda a: a.astype(jnp.bfloat16)
                        if jnp.issubdtype(a.dtype, jnp.floating) else a, params)
  return Tokenizer(nnx.merge(graphdef, params, rest), family=tok.family)


def _load(path_or_variant: str | os.PathLike, *, seed: int, family: str | None,
          **hub_options: Any) -> Tokenizer:
  """`load` in float32."""
  if hub.is_hub_name(path_or_variant):
    fam, model = hub.load(path_or_variant, family=family, **hub_options)
    return Tokenizer(model, family=fam.name)
  if family is not None or hub_options:
    raise ValueError(f"family/options: only 'hf:' names take them, got {path_or_variant!r} "
                     f"with {sorted(hub_options) + (['family'] if family else [])}")
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
    fam, model = load_dir(path)
    return Tokenizer(model, family=fam.name)
  name = os.fspath(path_or_variant)
  if os.sep in name or name.startswith("."):
    raise ValueError(f"path_or_variant: {name!r} is not an existing directory")
  fam, variant = resolve_variant(name, "path_or_variant",
                                 f"a checkpoint directory (with {CONFIG_FILE}) or ")
  if not isinstance(seed, (int, np.integer)):
    raise ValueError(f"seed: expected an int, got {type(seed).__name__}")
  model = fam.model_class(fam.variant(variant), rngs=nnx.Rngs(int(seed)))
  return Tokenizer(model, family=fam.name)


def save(tok_or_model: Tokenizer | nnx.Module, directory: str | os.PathLike, *,
         family: str | None = None, overwrite: bool = True,
         source: Mapping[str, Any] | None = None) -> Path:
  """Writes a checkpoint directory atomically (temp dir in the same parent, then rename).

  Args:
    tok_or_model: a `Tokenizer` or a registered model (its `.config` is its config dataclass).
    directory: destination. An existing jaxtok checkpoint there is replaced when `overwrite`;
      an existing directory with other content is never touched (ValueError).
    family: family name to record; default: the Tokenizer's, or the model class's family.
    overwrite: allow replacing an existing jaxtok checkpoint.
    source: JSON-ready provenance stored under `"source"` in config.json (the converter
      records the official files and their sha256 there); `load` ignores it.

  Returns:
    The directory path.
  """
  if isinstance(tok_or_model, Tokenizer):
    model, family = tok_or_model.model, family or tok_or_model.family
  elif isinstance(tok_or_model, nnx.Module):
    model = tok_or_model
    family = get_family(family).name if family else family_of(model).name
  else:
    raise ValueError(f"tok_or_model: expected a jaxtok.Tokenizer or an nnx.Module, got "
                     f"{type(tok_or_model).__name__}")
  arrays, metadata = checkpoint.state_to_arrays(model)
  meta = checkpoint.make_meta(family, model.config, source)
  return checkpoint.write_dir(directory, meta, arrays, metadata, overwrite=overwrite)


__all__ = ["ADAPTIVE_METRICS", "AdaptiveTokens", "Tokenizer", "available_variants", "fingerprint",
           "load", "read_config", "save"]
