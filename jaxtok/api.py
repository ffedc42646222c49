"""The public encode/decode API: `load`, `save` and `Tokenizer` (DESIGN.md §2).

    import jaxtok
    tok = jaxtok.load("path/to/checkpoint_dir")  # or "titok:S-128": random init
    tokens = tok.encode(images)    # [B, H, W, 3] uint8 or float in [0, 1] -> int32 [B, K]
    recon = tok.decode(tokens)     # float32 [B, H, W, 3] in [0, 1]
    recon = tok.decode(tokens[:, :k])   # any prefix, for ordered tokenizers (One-D-Piece)
    jaxtok.save(tok, "out_dir")

The checkpoint directory format is `jaxtok.io.checkpoint`; families come from the one
registry `jaxtok.tokenizers.TOKENIZERS`; what a model's tokens look like from its
`model.token_spec` (`jaxtok.tokenizers.interface.TokenSpec`).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok.io import checkpoint
from jaxtok.io.checkpoint import CONFIG_FILE
from jaxtok.tokenizers import TOKENIZERS, Family, family_of, get_family, interface


def available_variants() -> dict[str, list[str]]:
  """`{family: [variant, ...]}` that `load` accepts as `"family:variant"` (random init)."""
  return {name: sorted(fam.variants) for name, fam in TOKENIZERS.items()}


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
    trace_counts: `{"encode": n, "decode": n}` traces so far (one per new input shape/dtype).
  """

  def __init__(self, model: nnx.Module, *, family: str | None = None):
    self.model = model
    self.config = model.config
    self.family = get_family(family).name if family else family_of(model).name
    spec = model.token_spec
    self.token_spec = spec
    self.num_tokens = spec.num_tokens
    self.codebook_size = spec.vocab_size
    self.image_size = spec.image_size
    self.supports_prefix = spec.prefix
    self.continuous = spec.continuous
    self.num_factors = spec.ids_per_token if spec.ids_per_token > 1 else None
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
    return interface.check_images(images, self.image_size, "images")

  def check_tokens(self, tokens: Any) -> np.ndarray:
    """Validates `tokens` for `decode`; returns int32 ids (float32 latents if continuous)."""
    return interface.check_tokens(tokens, self.token_spec, "tokens")

  def encode(self, images: Any) -> np.ndarray:
    """Images -> token ids.

    Args:
      images: `[B, H, W, 3]` uint8 in 0..255 or float in [0, 1] (numpy or jax), H = W =
        `image_size`.

    Returns:
      `[B, K] int32` numpy token ids (`[B, K, k]` factorized; float32 `[B, K, C]` latents
      for continuous models).
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


def _resolve_variant(name: str) -> tuple[Family, str]:
  """`"family:variant"` (or a bare variant name that exactly one family has)."""
  if ":" in name:
    family, variant = name.split(":", 1)
    fam = get_family(family)
    if variant not in fam.variants:
      raise ValueError(f"path_or_variant: {family} has no variant {variant!r}; expected one of "
                       f"{sorted(fam.variants)}")
    return fam, variant
  matches = [fam for fam in TOKENIZERS.values() if name in fam.variants]
  if len(matches) == 1:
    return matches[0], name
  if matches:
    raise ValueError(f"path_or_variant: variant {name!r} exists in several families; expected "
                     f"one of {[f'{fam.name}:{name}' for fam in matches]}")
  raise ValueError(f"path_or_variant: expected a checkpoint directory (with {CONFIG_FILE}) or "
                   f"a variant name 'family:variant' among {available_variants()}, got "
                   f"{name!r}")


def _parse_variant(name: str) -> tuple[str, str]:
  """(family name, variant name) of a variant name (see `_resolve_variant`)."""
  fam, variant = _resolve_variant(name)
  return fam.name, variant


def read_config(path: str | os.PathLike) -> tuple[str, Any]:
  """`(family, config dataclass)` from a checkpoint directory's `config.json`."""
  meta = checkpoint.read_meta(path)
  fam = get_family(meta["family"])
  return fam.name, checkpoint.config_from_dict(fam.config_class, meta["config"])


def load(path_or_variant: str | os.PathLike, *, seed: int = 0) -> Tokenizer:
  """Loads a tokenizer from a checkpoint directory, or builds a variant with random weights.

  Args:
    path_or_variant: a directory holding `config.json` + `weights.safetensors` (as written by
      `save` or the converter), or a variant name `"family:variant"`: `"titok:S-128"`,
      `"one_d_piece:S-256"` (see `available_variants()`; a bare name such as `"S-128"` works
      when only one family has it).
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
    arrays, key_impls = checkpoint.read_weights(path)
    model = checkpoint.model_from_arrays(get_family(family).model_class, config, arrays,
                                         source=str(path / checkpoint.WEIGHTS_FILE),
                                         key_impls=key_impls)
    return Tokenizer(model, family=family)
  name = os.fspath(path_or_variant)
  if os.sep in name or name.startswith("."):
    raise ValueError(f"path_or_variant: {name!r} is not an existing directory")
  fam, variant = _resolve_variant(name)
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


__all__ = ["Tokenizer", "available_variants", "load", "read_config", "save"]
