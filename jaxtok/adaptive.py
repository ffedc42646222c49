"""Adaptive length: per image, the token prefix to keep.

    ada = tok.encode_adaptive(images, target=("psnr", 25.0))   # = adaptive.search(tok, ...)
    ada.lengths, ada.scores, ada.reached      # [B] chosen lengths, their quality, target met
    recon = tok.decode(ada)                   # each image from its own prefix

Two kinds of target:
  * a quality target `(metric, value)`: each image keeps the shortest prefix reaching it;
  * a rate-distortion target, `("bytes", B)` (a mean byte budget per image) or `("lambda", l)`
    (a Lagrange multiplier, quality units per byte): every candidate length of every image is
    decoded once, and the lengths are chosen to maximise the summed quality (PSNR by default)
    under the budget (`allocate`). A PSNR target gives every image the same quality whatever
    its slope; equal slopes (the Lagrangian optimum) spend the bytes where they buy the most.

`search` works on anything with the `jaxtok.Tokenizer` interface (it sits below `jaxtok.api`,
which calls it). Quality is measured with `jaxtok.metrics` (PSNR, SSIM) or LPIPS (`lpips`, the
network of `jaxtok.nets.perceptual`, also what the `jaxtok.eval` LPIPS metric loads).
"""
from __future__ import annotations

import dataclasses
import functools
import math
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
# Rate-distortion targets of `search`: a mean byte budget per image, or a Lagrange multiplier.
RD_TARGETS = ("bytes", "lambda")

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
    metric, target: the target the lengths were chosen for ("bytes" / "lambda" for the
      rate-distortion targets; `quality` then names the metric of `scores`).
    num_decodes: `decode` calls made (each a batch of up to `batch_size` images).
    quality: the metric of `scores`.
    rates: `[B]` float64 bytes of each image at its chosen length (rate-distortion targets;
      None for quality targets).
  """
  ids: np.ndarray
  lengths: np.ndarray
  scores: np.ndarray
  reached: np.ndarray
  metric: str
  target: float
  num_decodes: int
  quality: str = "psnr"
  rates: np.ndarray | None = None

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
  names = sorted(ADAPTIVE_METRICS) + list(RD_TARGETS)
  if (not isinstance(target, (tuple, list)) or len(target) != 2
      or target[0] not in names or isinstance(target[1], bool)
      or not isinstance(target[1], (int, float, np.floating, np.integer))
      or not np.isfinite(target[1])):
    raise ValueError(f"target: expected (metric, value) with metric in {names} and a finite "
                     f"number, got {target!r}")
  if target[0] in RD_TARGETS and target[1] < 0:
    raise ValueError(f"target: a {target[0]!r} target must be >= 0, got {target[1]!r}")
  return target[0], float(target[1])


def _lagrangian(quality: np.ndarray, rates: np.ndarray, lam: float) -> np.ndarray:
  """Per row, the column maximising quality - lam * rate (ties: the lowest rate, then the
  first column)."""
  gain = quality - lam * rates
  best = gain.max(axis=1, keepdims=True)
  # Among the maximisers (to a relative 1e-12), the cheapest.
  tol = 1e-12 * np.maximum(1.0, np.abs(best))
  masked = np.where(gain >= best - tol, rates, np.inf)
  return np.argmin(masked, axis=1)


def allocate(quality: Any, rates: Any, *, budget: float | None = None,
             lam: float | None = None) -> np.ndarray:
  """Rate-distortion optimal choice of one candidate per image.

  Maximises sum_i quality[i, c_i] subject to mean_i rates[i, c_i] <= budget (or, with `lam`,
  maximises sum_i quality[i, c_i] - lam * rates[i, c_i]).

  With a budget: (1) the Lagrangian solution for the smallest multiplier whose allocation fits
  (bisection over the multipliers where some image's choice changes, i.e. the slopes of the
  per-image convex hulls); (2) the bytes left are spent greedily, each step taking the upgrade
  of best quality gain per byte that still fits (any candidate, hull or not); (3) the result is
  compared with every single-candidate allocation (all images at the same column, i.e. a fixed
  length) that fits, and the best is returned. So the result is never worse than any fixed
  length within the budget, and it is exactly optimal at the budgets the Lagrangian hits.

  Args:
    quality: `[B, C]` float, higher is better (pass -LPIPS for a distance).
    rates: `[B, C]` float bytes (any non-negative cost).
    budget: the mean rate per image allowed.
    lam: the multiplier (exclusive with `budget`).

  Returns:
    `[B]` int64 column per image. When even the cheapest candidate of every image exceeds the
    budget, the cheapest of each.
  """
  q = np.asarray(quality, np.float64)
  r = np.asarray(rates, np.float64)
  if q.ndim != 2 or q.shape != r.shape or q.size == 0:
    raise ValueError(f"quality, rates: expected two [B, C] arrays of one shape, got "
                     f"{q.shape} and {r.shape}")
  if not (np.isfinite(q).all() and np.isfinite(r).all()) or (r < 0).any():
    raise ValueError("quality, rates: expected finite values and rates >= 0")
  if (budget is None) == (lam is None):
    raise ValueError("budget/lam: give exactly one")
  if lam is not None:
    return _lagrangian(q, r, float(lam))
  n = q.shape[0]
  total = float(budget) * n * (1 + 1e-12)
  cheapest = np.argmin(r, axis=1)
  rows = np.arange(n)
  if r[rows, cheapest].sum() > total:
    return cheapest
  # (1) Bisection on lam over the distinct slopes: spend(lam) is non-increasing in lam.
  slopes = []
  for i in range(n):
    dq = q[i][None, :] - q[i][:, None]
    dr = r[i][None, :] - r[i][:, None]
    ok = (dr > 0) & (dq > 0)
    slopes.append((dq[ok] / dr[ok]).ravel())
  lams = np.unique(np.concatenate(slopes + [np.zeros(1)]))
  hi_lam = float(lams[-1]) * 2 + 1.0
  cand_lams = np.concatenate([lams, [hi_lam]])
  spend = lambda c: r[rows, c].sum()
  lo, hi = 0, len(cand_lams) - 1  # the largest lam gives the cheapest maximisers: fits
  if spend(_lagrangian(q, r, cand_lams[hi])) > total:
    choice = cheapest
  else:
    while lo < hi:
      mid = (lo + hi) // 2
      if spend(_lagrangian(q, r, cand_lams[mid])) <= total:
        hi = mid
      else:
        lo = mid + 1
    choice = _lagrangian(q, r, cand_lams[hi])
  # (2) Greedy fill with the bytes left.
  choice = choice.copy()
  left = total - spend(choice)
  while True:
    dq = q - q[rows, choice][:, None]
    dr = r - r[rows, choice][:, None]
    ok = (dq > 0) & (dr <= left)
    if not ok.any():
      break
    ratio = np.where(ok, dq / np.maximum(dr, 1e-300), -np.inf)
    ratio = np.where(ok & (dr <= 0), np.inf, ratio)  # free upgrades first
    i, c = np.unravel_index(np.argmax(ratio), ratio.shape)
    left -= dr[i, c]
    choice[i] = c
  # (3) Never worse than a fixed column that fits.
  best, best_q = choice, q[rows, choice].sum()
  for c in range(q.shape[1]):
    if r[:, c].sum() <= total and q[:, c].sum() > best_q:
      best, best_q = np.full(n, c), q[:, c].sum()
  return best.astype(np.int64)


def default_rates(tok, cand: np.ndarray, n: int) -> np.ndarray:
  """`[n, C]` bytes of a fixed-length code: L * F * log2(V) / 8 per image (no entropy coding,
  no header); `jaxtok.codec` passes the real `.jtok` file sizes instead."""
  spec = tok.token_spec
  per = float(getattr(spec, "ids_per_token", 1) or 1) * math.log2(float(spec.vocab_size)) / 8
  return np.broadcast_to(np.asarray(cand, np.float64)[None, :] * per, (n, len(cand))).copy()


def search(tok, images: Any, target: tuple[str, float] = ("psnr", 25.0), *,
           lengths: Any = None, lpips_weights: Any = None, batch_size: int = 32,
           ids: Any = None, decode_options: Mapping[str, Any] | None = None,
           quality: str = "psnr", rates: Any = None) -> AdaptiveTokens:
  """Per image, the shortest prefix whose decode reaches a quality target, or the prefixes
  that maximise the total quality under a byte budget.

  Rate-distortion targets (`("bytes", B)`, `("lambda", l)`) decode every candidate length of
  every image once (len(lengths) decodes per batch), measure `quality` on each, and choose with
  `allocate`: the most total quality with a mean of at most B bytes per image, or the most
  quality - l * bytes per image. The bytes are `rates` (`[B, len(lengths)]`, e.g. real
  `.jtok` file sizes, which `jaxtok.codec.compress` passes) or the fixed-length code size
  (`default_rates`). When a fixed length is among the candidates and fits the budget, the
  result is never worse than it.

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
      `("lpips", d)` (at most this; needs `lpips_weights`); or `("bytes", B)` / `("lambda",
      l)` (rate-distortion, see above).
    lengths: the candidate prefix lengths, increasing (default every length 1..K; e.g.
      powers of two for FlexTok-style nested prefixes).
    lpips_weights: LPIPS weight file(s) for the "lpips" metric.
    batch_size: images per decode call.
    ids: the images' `encode` output when already at hand (saves the encode).
    decode_options: options for every `decode` (see `Tokenizer.decode`; e.g. FlexTok's
      `{"steps": 20, "guidance": "apg", "guidance_scale": 7.5, "seed": 0}`).
    quality: the metric a rate-distortion target maximises (one of `ADAPTIVE_METRICS`;
      "lpips" is minimised).
    rates: `[B, len(lengths)]` bytes of each image at each candidate length (rate-distortion
      targets); default `default_rates`.

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
  rd_target = metric in RD_TARGETS
  if rd_target and quality not in ADAPTIVE_METRICS:
    raise ValueError(f"quality: expected one of {sorted(ADAPTIVE_METRICS)}, got {quality!r}")
  quality_name = quality if rd_target else metric
  higher = ADAPTIVE_METRICS[quality_name]
  quality = quality_fn(quality_name, lpips_weights)
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

  if rd_target:
    c = len(cand)
    if rates is None:
      rates = default_rates(tok, cand, n)
    rates = np.asarray(rates, np.float64)
    if rates.shape != (n, c):
      raise ValueError(f"rates: expected [B, len(lengths)] = [{n}, {c}] bytes, got "
                       f"{rates.shape}")
    curves = scores_at(np.repeat(np.arange(n), c), np.tile(np.arange(c), n)).reshape(n, c)
    signed = curves if higher else -curves
    choice = (allocate(signed, rates, budget=value) if metric == "bytes"
              else allocate(signed, rates, lam=value))
    rows = np.arange(n)
    chosen = rates[rows, choice]
    fits = bool(chosen.mean() <= value * (1 + 1e-12)) if metric == "bytes" else True
    return AdaptiveTokens(ids=ids, lengths=cand[choice].astype(np.int32),
                          scores=curves[rows, choice], reached=np.full(n, fits),
                          metric=metric, target=value, num_decodes=decodes,
                          quality=quality_name, rates=chosen)

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
                        reached=reached, metric=metric, target=value, num_decodes=decodes,
                        quality=metric)


__all__ = ["ADAPTIVE_METRICS", "RD_TARGETS", "AdaptiveTokens", "allocate", "default_rates",
           "lpips", "quality_fn", "search"]
