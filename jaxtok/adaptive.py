"""Adaptive length: per image, the shortest token prefix whose decode reaches a quality target.

    ada = tok.encode_adaptive(images, target=("psnr", 25.0))   # = adaptive.search(tok, ...)
    ada.lengths, ada.scores, ada.reached      # [B] chosen lengths, their quality, target met
    recon = tok.decode(ada)                   # each image from its own prefix

`search` works on anything with the `jaxtok.Tokenizer` interface (it sits below `jaxtok.api`,
which calls it). Quality is measured with `jaxtok.metrics` (PSNR, SSIM) or LPIPS (`lpips`, the
network of `jaxtok.nets.perceptual`, also what the `jaxtok.eval` LPIPS metric loads).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxtok import metrics
from jaxtok.nets import perceptual

# Quality targets of `search`: name -> True when higher is better.
ADAPTIVE_METRICS = {"psnr": True, "ssim": True, "lpips": False}

_psnr = jax.jit(metrics.psnr)
_ssim = jax.jit(metrics.ssim)
_lpips_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class AdaptiveTokens:
  """Per-image adaptive-length tokens from `search` (`Tokenizer.encode_adaptive`).

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


def lpips(weights: Any) -> Callable[[Any, Any], jax.Array]:
  """LPIPS distance `fn(a, b) -> [B]` float32 from `jaxtok.nets.perceptual` weight file(s).

  `a`, `b`: `[B, H, W, 3]` uint8 or float in [0, 1] (as `jaxtok.metrics` takes them). One
  network is loaded and jitted per set of files (cached by path, so a file replaced on disk
  afterwards is not re-read in this process).
  """
  if weights is None:
    raise ValueError("lpips_weights: the 'lpips' metric needs LPIPS weight files (see "
                     "jaxtok.nets.perceptual), got None")
  paths = ((weights,) if isinstance(weights, (str, bytes, os.PathLike))
           else tuple(weights))
  with _lpips_lock:
    return _load_lpips(tuple(os.fsdecode(p) for p in paths))


@functools.lru_cache(maxsize=4)
def _load_lpips(paths: tuple[str, ...]) -> Callable[[Any, Any], jax.Array]:
  graphdef, state = nnx.split(perceptual.LPIPS.from_file(*paths))
  run = jax.jit(lambda st, a, b: nnx.merge(graphdef, st)(a, b))

  def distance(a, b):
    a, b, _ = metrics.as_float_pair(a, b)
    return run(state, a, b)

  return distance


def quality_fn(metric: str, lpips_weights: Any = None) -> Callable[[Any, Any], np.ndarray]:
  """`fn(real, fake) -> [B]` float64 numpy of a target metric (see `ADAPTIVE_METRICS`)."""
  if metric not in ADAPTIVE_METRICS:
    raise ValueError(f"metric: expected one of {sorted(ADAPTIVE_METRICS)}, got {metric!r}")
  if metric == "psnr":
    fn = _psnr
  elif metric == "ssim":
    fn = _ssim
  else:
    fn = lpips(lpips_weights)
  return lambda real, fake: np.asarray(fn(real, fake), np.float64)


def _check_target(target: Any) -> tuple[str, float]:
  if (not isinstance(target, (tuple, list)) or len(target) != 2
      or target[0] not in ADAPTIVE_METRICS or isinstance(target[1], bool)
      or not isinstance(target[1], (int, float, np.floating, np.integer))
      or not np.isfinite(target[1])):
    raise ValueError(f"target: expected (metric, value) with metric in "
                     f"{sorted(ADAPTIVE_METRICS)} and a finite number, got {target!r}")
  return target[0], float(target[1])


def search(tok, images: Any, target: tuple[str, float] = ("psnr", 25.0), *,
           lengths: Any = None, lpips_weights: Any = None, batch_size: int = 32,
           ids: Any = None, decode_options: Mapping[str, Any] | None = None) -> AdaptiveTokens:
  """Per image, the shortest prefix whose decode reaches a quality target.

  Bisection over the valid lengths, batched across images: one round decodes every image
  still searching at its own midpoint (images that share a midpoint share a batch), so a
  search takes `1 + ceil(log2(len(lengths)))` rounds (the first checks the longest length).
  With `tok.pads_prefixes` (FlexTok) a round decodes all its images together, each at its
  own length.
  The result is the shortest length when quality rises with length, as it does for
  tokenizers trained with tail-token-drop; otherwise it is a length where quality first
  crosses the target (the one before it misses).

  Args:
    tok: a `jaxtok.Tokenizer` whose prefixes decode (`supports_prefix`).
    images: `[B, S, S, 3]` uint8 or float in [0, 1].
    target: `(metric, value)`: `("psnr", dB)`, `("ssim", s)` (at least this), or
      `("lpips", d)` (at most this; needs `lpips_weights`).
    lengths: the candidate prefix lengths, increasing (default every length 1..K; e.g.
      powers of two for FlexTok-style nested prefixes).
    lpips_weights: LPIPS weight file(s) for the "lpips" metric.
    batch_size: images per decode call.
    ids: the images' `encode` output when already at hand (saves the encode).
    decode_options: options for every `decode` (see `Tokenizer.decode`; e.g. FlexTok's
      `{"steps": 20, "guidance": "apg", "guidance_scale": 7.5, "seed": 0}`).

  Returns:
    `AdaptiveTokens` (ids, lengths, scores, reached, ...).
  """
  if not tok.supports_prefix:
    raise ValueError(f"encode_adaptive: needs an ordered tokenizer whose prefixes decode "
                     f"(supports_prefix); this {tok.family} tokenizer decodes only all "
                     f"{tok.num_tokens} tokens")
  metric, value = _check_target(target)
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
  if decode_options is None:
    decode_options = {}
  if not isinstance(decode_options, Mapping):
    raise ValueError(f"decode_options: expected a dict of decode options, got "
                     f"{type(decode_options).__name__}")
  tok.split_decode_options(decode_options)  # Fail before any work.
  higher = ADAPTIVE_METRICS[metric]
  quality = quality_fn(metric, lpips_weights)
  images = tok.check_images(images)
  real = (images.astype(np.float32) / 255.0 if images.dtype == np.uint8
          else np.clip(images.astype(np.float32), 0.0, 1.0))
  k = tok.num_tokens
  cand = np.arange(1, k + 1) if lengths is None else np.asarray(lengths)
  if (cand.ndim != 1 or cand.size == 0 or not np.issubdtype(cand.dtype, np.integer)
      or np.any(np.diff(cand) <= 0) or cand[0] < 1 or cand[-1] > k):
    raise ValueError(f"lengths: expected increasing prefix lengths in [1, {k}], got "
                     f"{lengths!r}")
  n = len(images)
  if ids is None:
    ids = np.concatenate([tok.encode(images[s:s + batch_size])
                          for s in range(0, n, batch_size)])
  else:
    ids = tok.check_tokens(ids)
    if ids.shape[:2] != (n, k):
      raise ValueError(f"ids: expected the images' full ids {tok.token_spec.shape_str()} "
                       f"with B = {n}, got {ids.shape}")
  decodes = 0

  def scores_at(rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Metric of image rows[j] decoded from its first cand[idx[j]] tokens."""
    nonlocal decodes
    out = np.zeros(len(rows), np.float64)
    # Padded prefixes: one batch for all lengths; otherwise one batch per length.
    groups = ([np.arange(len(rows))] if tok.pads_prefixes
              else [np.flatnonzero(idx == i) for i in np.unique(idx)])
    for sel in groups:
      for s in range(0, len(sel), batch_size):
        part = sel[s:s + batch_size]
        # Pad to a power of two (<= batch_size): few distinct shapes, few compilations.
        size = min(batch_size, 1 << int(np.ceil(np.log2(len(part)))))
        padded = np.concatenate([part, np.repeat(part[:1], size - len(part))])
        m = cand[idx[padded]].astype(np.int32)
        fake = tok.decode(ids[rows[padded], :int(m.max())], lengths=m, **decode_options)
        decodes += 1
        out[part] = quality(real[rows[part]], fake[:len(part)])
    return out

  def ok(score):
    return score >= value if higher else score <= value

  last = len(cand) - 1
  score_hi = scores_at(np.arange(n), np.full(n, last))
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


__all__ = ["ADAPTIVE_METRICS", "AdaptiveTokens", "lpips", "quality_fn", "search"]
