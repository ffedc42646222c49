"""The public encode/decode API: `load`, `save` and `Tokenizer` (DESIGN.md §2).

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

The checkpoint directory format is `jaxtok.io.checkpoint`; families come from the one
registry `jaxtok.tokenizers.TOKENIZERS`; what a model's tokens look like from its
`model.token_spec` (`jaxtok.tokenizers.interface.TokenSpec`).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from skimage.metrics import structural_similarity

from jaxtok.io import checkpoint
from jaxtok.io.checkpoint import CONFIG_FILE
from jaxtok.nets import perceptual
from jaxtok.tokenizers import TOKENIZERS, Family, family_of, get_family, interface


def available_variants() -> dict[str, list[str]]:
  """`{family: [variant, ...]}` that `load` accepts as `"family:variant"` (random init)."""
  return {name: sorted(fam.variants) for name, fam in TOKENIZERS.items()}


# ------------------------------------------------------------------- adaptive length

# Quality targets of `Tokenizer.encode_adaptive`: name -> higher is better. PSNR and SSIM are
# the definitions of `jaxtok.eval.recon` (the api sits below eval, so SSIM comes from
# scikit-image's `structural_similarity`, which `recon.ssim` reproduces; a test checks both).
ADAPTIVE_METRICS = {"psnr": True, "ssim": True, "lpips": False}


def _psnr(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
  """Per-image PSNR (dB) of [0, 1] images, capped at 100 dB like `recon.psnr`."""
  err = np.mean(np.square(real.astype(np.float64) - fake), axis=(1, 2, 3))
  return np.minimum(10.0 * np.log10(1.0 / np.maximum(err, 1e-30)), 100.0)


def _ssim(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
  """Per-image SSIM: Gaussian window, sigma 1.5, population covariances (= `recon.ssim`)."""
  return np.array([structural_similarity(
      a.astype(np.float64), b.astype(np.float64), channel_axis=-1, data_range=1.0,
      gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
      for a, b in zip(real, fake)])


@dataclasses.dataclass(frozen=True)
class AdaptiveTokens:
  """Per-image adaptive-length tokens from `Tokenizer.encode_adaptive`.

  Attributes:
    ids: `[B, K]` (`[B, K, F]`) int32, the full ids `encode` gives; image i keeps
      `ids[i, :lengths[i]]`.
    lengths: `[B]` int32 chosen prefix lengths.
    scores: `[B]` float64, the metric of each image decoded from its chosen prefix.
    reached: `[B]` bool, whether the target was met (False: even the longest length misses
      it, and that length was kept).
    metric, target: the target the lengths were chosen for.
    num_decodes: `decode` calls made (each a batch of up to `batch_size` images).
  """
  ids: np.ndarray
  lengths: np.ndarray
  scores: np.ndarray
  reached: np.ndarray
  metric: str
  target: float
  num_decodes: int

  def prefixes(self) -> list[np.ndarray]:
    """Each image's kept ids: `[L_i]` (`[L_i, F]`) int32."""
    return [self.ids[i, :int(n)] for i, n in enumerate(self.lengths)]


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
    decode_options: `{name: default}` of the options `decode` forwards to the model (the
      keyword-only arguments of `model.decode_tokens`: FlexTok's sampler `steps`, `guidance`,
      `guidance_scale`, `seed`; empty for deterministic decoders such as TiTok).
    pads_prefixes: True when the model decodes padded ids with per-image lengths
      (`model.decode_prefixes`, FlexTok): every prefix length shares one compiled function.
    trace_counts: `{"encode": n, "decode": n}` traces so far (one per new input shape/dtype,
      and per new compiled-in decode options).
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
    self.decode_options = _keyword_options(model.decode_tokens)
    self._runtime_options = tuple(getattr(model, "runtime_decode_options", ()))
    missing = sorted(set(self._runtime_options) - set(self.decode_options))
    if missing:
      raise ValueError(f"model: runtime_decode_options {missing} are not keyword options of "
                       f"{type(model).__name__}.decode_tokens {sorted(self.decode_options)}")
    self.pads_prefixes = spec.prefix and callable(getattr(model, "decode_prefixes", None))
    if self.pads_prefixes and _keyword_options(model.decode_prefixes) != self.decode_options:
      raise ValueError(f"model: {type(model).__name__}.decode_prefixes must take the keyword "
                       f"options of decode_tokens {sorted(self.decode_options)}")
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

  def _run(self, kind: str, x: np.ndarray) -> np.ndarray:
    state = nnx.state(self.model)
    if kind == "encode":
      fn = self._compiled_fn(("encode", x.shape, str(x.dtype)), self._encode_body, state, x)
      return np.asarray(fn(state, x))
    return self._run_decode(x, None, (), {})

  def _run_decode(self, ids: np.ndarray, lengths: np.ndarray | None, static: tuple,
                  runtime: dict[str, np.ndarray]) -> np.ndarray:
    """One compiled decode per (ids shape/dtype, padded or not, compiled-in options)."""
    state = nnx.state(self.model)
    key = ("decode", ids.shape, str(ids.dtype), lengths is None, static)
    body = functools.partial(self._decode_body, static)
    fn = self._compiled_fn(key, body, state, ids, lengths, runtime)
    return np.asarray(fn(state, ids, lengths, runtime))

  def decode_cache_keys(self) -> list[tuple]:
    """Keys of the compiled decode functions so far: `("decode", ids shape, dtype, unpadded,
    compiled-in options)` (padded prefix decoding: one key for every prefix length)."""
    with self._lock:
      return [k for k in self._compiled if k[0] == "decode"]

  def split_decode_options(self, options: Mapping[str, Any]) -> tuple[tuple, dict]:
    """Validates `decode` options: `(compiled-in options as a sorted tuple, runtime int32
    scalars)`, defaults filled from the model's signature. ValueError names a bad option."""
    unknown = sorted(set(options) - set(self.decode_options))
    if unknown:
      accepted = (f"it accepts {sorted(self.decode_options)}" if self.decode_options else
                  "its decode is deterministic and accepts no options")
      raise ValueError(f"{unknown[0]}: not a decode option of this {self.family} tokenizer "
                       f"({type(self.model).__name__}.decode_tokens); {accepted}")
    full = {**self.decode_options, **options}
    runtime = {}
    for name in self._runtime_options:
      v = full.pop(name)
      if (isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))
          or not -2**31 <= int(v) < 2**31):
        raise ValueError(f"{name}: expected an int in [-2**31, 2**31), got {v!r}")
      runtime[name] = np.int32(v)
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
    return tuple(static), runtime

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

  def decode(self, tokens: Any, *, lengths: Any = None, **options: Any) -> np.ndarray:
    """Token ids -> images.

    Prefix decoding: with `pads_prefixes` (FlexTok) the ids are padded to K on the host and
    every prefix length, and any mix of per-image `lengths`, runs one compiled function per
    batch size; otherwise (One-D-Piece) each length is its own compile.

    Args:
      tokens: `[B, K]` integer ids in [0, codebook_size), or a prefix `[B, L]` with
        1 <= L <= K when `supports_prefix`; or `AdaptiveTokens` (its ids and lengths).
      lengths: optional per-image prefix lengths `[B]` (or one int), each in 1..L: image b
        decodes `tokens[b, :lengths[b]]` (ids after it are ignored). Needs `supports_prefix`.
      **options: decode options of the model, listed in `decode_options` (default: the
        model's own). FlexTok (a rectified-flow sampler): `steps` (Euler steps, int >= 1),
        `guidance` ("none", "cfg" or "apg"), `guidance_scale` (float; 1.0 = no guidance),
        `seed` (int: the sampler noise; a fixed seed reproduces the output). Options other
        than the model's `runtime_decode_options` (FlexTok: `seed`, an int32 at run time) are
        compiled in, so each new value compiles once. A deterministic decoder (TiTok) takes
        none. An unknown option raises ValueError naming it and the accepted ones.

    Returns:
      `[B, H, W, 3] float32` numpy images clipped to [0, 1].
    """
    static, runtime = self.split_decode_options(options)
    if isinstance(tokens, AdaptiveTokens):
      if lengths is not None:
        raise ValueError("lengths: AdaptiveTokens carry their own lengths; got lengths too")
      tokens, lengths = tokens.ids, tokens.lengths
    t = interface.as_numpy(tokens, "tokens")
    if lengths is not None:
      if not self.supports_prefix:
        raise ValueError(f"lengths: this {self.family} tokenizer decodes only all "
                         f"{self.num_tokens} tokens (supports_prefix is False)")
      if t.ndim >= 2:
        lengths = _check_lengths(lengths, t.shape[0], min(t.shape[1], self.num_tokens))
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

  def _quality_fn(self, metric: str, lpips_weights: Any) -> Callable:
    if metric == "psnr":
      return _psnr
    if metric == "ssim":
      return _ssim
    if lpips_weights is None:
      raise ValueError("lpips_weights: target metric 'lpips' needs LPIPS weight files (see "
                       "jaxtok.nets.perceptual), got None")
    paths = ((lpips_weights,) if isinstance(lpips_weights, (str, os.PathLike))
             else tuple(lpips_weights))
    key = ("lpips",) + tuple(os.fspath(p) for p in paths)
    with self._lock:
      fn = self._compiled.get(key)
      if fn is None:
        model = perceptual.LPIPS.from_file(*paths)
        graphdef, state = nnx.split(model)
        run = jax.jit(lambda st, a, b: nnx.merge(graphdef, st)(a, b))
        fn = lambda a, b: np.asarray(run(state, a.astype(np.float32), b), np.float64)  # noqa: E731
        self._compiled[key] = fn
    return fn

  def encode_adaptive(self, images: Any, target: tuple[str, float] = ("psnr", 25.0), *,
                      lengths: Any = None, lpips_weights: Any = None, batch_size: int = 32,
                      ids: Any = None,
                      decode_options: Mapping[str, Any] | None = None) -> AdaptiveTokens:
    """Per image, the shortest prefix whose decode reaches a quality target.

    Bisection over the valid lengths, batched across images: one round decodes every image
    still searching at its own midpoint (images that share a midpoint share a batch), so a
    search takes `1 + ceil(log2(len(lengths)))` rounds (the first checks the longest length).
    With `pads_prefixes` (FlexTok) a round decodes all its images together, each at its own
    length.
    The result is the shortest length when quality rises with length, as it does for
    tokenizers trained with tail-token-drop; otherwise it is a length where quality first
    crosses the target (the one before it misses).

    Args:
      images: `[B, S, S, 3]` uint8 or float in [0, 1].
      target: `(metric, value)`: `("psnr", dB)`, `("ssim", s)` (at least this), or
        `("lpips", d)` (at most this; needs `lpips_weights`).
      lengths: the candidate prefix lengths, increasing (default every length 1..K; e.g.
        powers of two for FlexTok-style nested prefixes).
      lpips_weights: LPIPS weight file(s) for the "lpips" metric.
      batch_size: images per decode call.
      ids: the images' `encode` output when already at hand (saves the encode).
      decode_options: options for every `decode` (see `decode`; e.g. FlexTok's
        `{"steps": 20, "guidance": "apg", "guidance_scale": 7.5, "seed": 0}`).

    Returns:
      `AdaptiveTokens` (ids, lengths, scores, reached, ...).
    """
    if not self.supports_prefix:
      raise ValueError(f"encode_adaptive: needs an ordered tokenizer whose prefixes decode "
                       f"(supports_prefix); this {self.family} tokenizer decodes only all "
                       f"{self.num_tokens} tokens")
    if (not isinstance(target, (tuple, list)) or len(target) != 2
        or target[0] not in ADAPTIVE_METRICS or isinstance(target[1], bool)
        or not isinstance(target[1], (int, float, np.floating, np.integer))
        or not np.isfinite(target[1])):
      raise ValueError(f"target: expected (metric, value) with metric in "
                       f"{sorted(ADAPTIVE_METRICS)} and a finite number, got {target!r}")
    metric, value = target[0], float(target[1])
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if decode_options is None:
      decode_options = {}
    if not isinstance(decode_options, Mapping):
      raise ValueError(f"decode_options: expected a dict of decode options, got "
                       f"{type(decode_options).__name__}")
    self.split_decode_options(decode_options)  # Fail before any work.
    higher = ADAPTIVE_METRICS[metric]
    quality = self._quality_fn(metric, lpips_weights)
    images = self.check_images(images)
    real = (images.astype(np.float32) / 255.0 if images.dtype == np.uint8
            else np.clip(images.astype(np.float32), 0.0, 1.0))
    k = self.num_tokens
    cand = np.arange(1, k + 1) if lengths is None else np.asarray(lengths)
    if (cand.ndim != 1 or cand.size == 0 or not np.issubdtype(cand.dtype, np.integer)
        or np.any(np.diff(cand) <= 0) or cand[0] < 1 or cand[-1] > k):
      raise ValueError(f"lengths: expected increasing prefix lengths in [1, {k}], got "
                       f"{lengths!r}")
    n = len(images)
    if ids is None:
      ids = np.concatenate([self.encode(images[s:s + batch_size])
                            for s in range(0, n, batch_size)])
    else:
      ids = self.check_tokens(ids)
      if ids.shape[:2] != (n, k):
        raise ValueError(f"ids: expected the images' full ids {self.token_spec.shape_str()} "
                         f"with B = {n}, got {ids.shape}")
    decodes = 0

    def scores_at(rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
      """Metric of image rows[j] decoded from its first cand[idx[j]] tokens."""
      nonlocal decodes
      out = np.zeros(len(rows), np.float64)
      # Padded prefixes: one batch for all lengths; otherwise one batch per length.
      groups = ([np.arange(len(rows))] if self.pads_prefixes
                else [np.flatnonzero(idx == i) for i in np.unique(idx)])
      for sel in groups:
        for s in range(0, len(sel), batch_size):
          part = sel[s:s + batch_size]
          # Pad to a power of two (<= batch_size): few distinct shapes, few compilations.
          size = min(batch_size, 1 << int(np.ceil(np.log2(len(part)))))
          padded = np.concatenate([part, np.repeat(part[:1], size - len(part))])
          n = cand[idx[padded]].astype(np.int32)
          fake = self.decode(ids[rows[padded], :int(n.max())], lengths=n, **decode_options)
          decodes += 1
          out[part] = quality(real[rows[part]], fake[:len(part)])
      return out

    def ok(score):
      return score >= value if higher else score <= value

    last = len(cand) - 1
    all_rows = np.arange(n)
    score_hi = scores_at(all_rows, np.full(n, last))
    reached = ok(score_hi)
    lo, hi = np.zeros(n, np.int64), np.full(n, last)
    lo[~reached] = last  # Misses even at the longest length: keep it.
    best = score_hi.copy()
    while np.any(lo < hi):
      rows = np.flatnonzero(lo < hi)
      mid = (lo[rows] + hi[rows]) // 2
      sc = scores_at(rows, mid)
      good = ok(sc)
      hi[rows[good]] = mid[good]
      best[rows[good]] = sc[good]
      lo[rows[~good]] = mid[~good] + 1
    return AdaptiveTokens(ids=ids, lengths=cand[hi].astype(np.int32), scores=best,
                          reached=reached, metric=metric, target=value, num_decodes=decodes)


def _keyword_options(method: Callable) -> dict[str, Any]:
  """`{name: default}` of a decode method's keyword-only arguments (its decode options)."""
  return {p.name: p.default for p in inspect.signature(method).parameters.values()
          if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _check_lengths(lengths: Any, batch: int, max_len: int) -> np.ndarray:
  """Per-image prefix lengths: an int or `[B]` ints in 1..max_len -> int32 `[B]`."""
  if isinstance(lengths, (bool, np.bool_)):
    raise ValueError(f"lengths: expected an int or [B={batch}] ints, got {lengths!r}")
  n = (np.asarray(lengths) if isinstance(lengths, (int, np.integer))
       else interface.as_numpy(lengths, "lengths"))
  if n.ndim == 0:
    n = np.full((batch,), n)
  if (n.shape != (batch,) or n.size == 0 or not np.issubdtype(n.dtype, np.integer)
      or n.min() < 1
      or n.max() > max_len):
    raise ValueError(f"lengths: expected an int or [B={batch}] ints in 1..{max_len} (the "
                     f"tokens given), got {lengths!r}")
  return n.astype(np.int32)


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


__all__ = ["ADAPTIVE_METRICS", "AdaptiveTokens", "Tokenizer", "available_variants", "load",
           "read_config", "save"]
