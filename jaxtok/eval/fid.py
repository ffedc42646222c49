"""Fréchet Inception Distance (Heusel et al., arXiv 1706.08500) with pytorch-fid numerics.

Feature extraction (the Flax FID Inception, `inception.py`) is kept apart from the statistics:

- `FeatureStats` streams features into running float64 sums `n`, `Σx` `[D]`, `Σxxᵀ` `[D, D]`
  on the host. Sums add across batches and across hosts (`allreduce`), and are turned into
  `(mu, sigma)` only at the end; `sigma` is the unbiased covariance, as `np.cov` gives it.
- `frechet_distance` follows pytorch-fid: `scipy.linalg.sqrtm(sigma1 @ sigma2)`; if the result
  is not finite (singular product), `eps * I` is added to both covariances and it is retried;
  a complex result whose diagonal has an imaginary part above 1e-3 raises ValueError,
  otherwise its real part is used.

Images everywhere are `[N, H, W, 3]` uint8 (or float in [0, 1]) arrays, or iterables of such
batches, of any size (batched by `jaxtok.eval.images.iter_batches`); pytorch-fid's input
handling (bilinear resize to 299, 2x-1) is applied.
Statistics files are `.npz` with keys `mu` `[D]` and `sigma` `[D, D]`, the format pytorch-fid
(`--save-stats`) and the ADM evaluator's reference batches use.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg

from jaxtok.eval import reduce
from jaxtok.eval.images import iter_batches, to_uint8
from jaxtok.nets import inception

_LOG = logging.getLogger(__name__)

FeatureFn = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Streaming statistics.
# ---------------------------------------------------------------------------------------------


class FeatureStats:
  """Running `n`, `Σx`, `Σxxᵀ` in float64; add batches, all-reduce, then `mean_cov()`."""

  def __init__(self, dim: int = inception.FEATURE_DIM):
    self.dim = dim
    self.n = 0
    self.sum = np.zeros((dim,), np.float64)
    self.sum_sq = np.zeros((dim, dim), np.float64)

  def update(self, features) -> FeatureStats:
    """Adds a batch `[B, D]` of features."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[1] != self.dim:
      raise ValueError(f"features: expected [B, {self.dim}], got shape {f.shape}")
    self.n += f.shape[0]
    self.sum += f.sum(axis=0)
    self.sum_sq += f.T @ f
    return self

  def allreduce(self) -> FeatureStats:
    """Sums the accumulators of all processes (no-op on one host); every host gets the total."""
    self.n = int(reduce.process_sum(np.array([self.n], np.int64))[0])
    self.sum = reduce.process_sum(self.sum)
    self.sum_sq = reduce.process_sum(self.sum_sq)
    return self

  def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
    """`(mu [D], sigma [D, D])` float64; sigma with the unbiased 1/(n-1) normalization."""
    if self.n < 2:
      raise ValueError(f"features: need at least 2 samples for a covariance, got {self.n}")
    mu = self.sum / self.n
    sigma = (self.sum_sq - self.n * np.outer(mu, mu)) / (self.n - 1)
    return mu, (sigma + sigma.T) / 2  # Exact symmetry; the sums are symmetric up to rounding.


# ---------------------------------------------------------------------------------------------
# The distance.
# ---------------------------------------------------------------------------------------------


def _sqrtm(a: np.ndarray) -> np.ndarray:
  out = scipy.linalg.sqrtm(a)
  return out[0] if isinstance(out, tuple) else out


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """`Tr sqrt(sigma1 sigma2)` for PSD inputs via two symmetric eigensolves.

  sigma1 sigma2 is similar to A sigma2 A with A = sigma1^(1/2) (symmetric PSD), so its
  eigenvalues are those of a symmetric PSD matrix; negative round-off is clipped to 0.
  """
  lam, v = np.linalg.eigh(sigma1)
  a = (v * np.sqrt(np.clip(lam, 0, None))) @ v.T
  m = a @ sigma2 @ a
  ev = np.linalg.eigvalsh((m + m.T) / 2)
  return float(np.sum(np.sqrt(np.clip(ev, 0, None))))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6,
                     method: str = "sqrtm") -> float:
  """`||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2))`, pytorch-fid's numerics.

  Args:
    mu1, mu2: `[D]` means. sigma1, sigma2: `[D, D]` covariances.
    eps: added to both diagonals when `sqrtm` of the product is not finite.
    method: "sqrtm" (default; pytorch-fid's numerics, scipy.linalg.sqrtm: minutes for
      D = 2048 on a small CPU) or "eigh" (the same trace from two symmetric eigensolves, a
      few seconds; agrees to ~1e-6 relative on well-conditioned covariances, assumes both
      are PSD, which sample covariances are).

  Raises:
    ValueError: mismatched shapes, or a significant imaginary part in `sqrtm`.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or mu1.ndim != 1:
    raise ValueError(f"mu1/mu2: expected equal [D] shapes, got {mu1.shape} and {mu2.shape}")
  d = mu1.shape[0]
  if sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f"sigma1/sigma2: expected [{d}, {d}], got {sigma1.shape} and {sigma2.shape}")
  diff = mu1 - mu2
  if method == "eigh":
    tr = _trace_sqrt_product_eigh(sigma1, sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr)
  if method != "sqrtm":
    raise ValueError(f"method: expected 'sqrtm' or 'eigh', got {method!r}")
  covmean = _sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    _LOG.warning("FID: sqrtm of the covariance product is not finite (singular product); "
                 "adding %g to the diagonals", eps)
    offset = np.eye(d) * eps
    covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    imag = np.abs(np.diagonal(covmean).imag).max()
    if imag > 1e-3:
      raise ValueError(f"sigma1/sigma2: sqrtm of their product has an imaginary component "
                       f"{imag:.3g} > 1e-3 on its diagonal (not PSD covariances?)")
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


# ---------------------------------------------------------------------------------------------
# Statistics files.
# ---------------------------------------------------------------------------------------------


def save_statistics(path: str | os.PathLike, mu, sigma) -> None:
  """Writes `mu`, `sigma` to an `.npz` (pytorch-fid / ADM reference-batch keys)."""
  mu, sigma = np.asarray(mu), np.asarray(sigma)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise ValueError(f"mu/sigma: expected [D] and [D, D], got {mu.shape} and {sigma.shape}")
  np.savez(path, mu=mu, sigma=sigma)


def load_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """`(mu, sigma)` float64 from an `.npz` with keys `mu` and `sigma`."""
  with np.load(path, allow_pickle=False) as f:
    if "mu" not in f.files or "sigma" not in f.files:
      raise ValueError(f"path: expected an .npz with keys 'mu' and 'sigma', got keys "
                       f"{sorted(f.files)} in {str(path)!r}")
    return np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)


# ---------------------------------------------------------------------------------------------
# Images -> statistics -> FID.
# ---------------------------------------------------------------------------------------------


def _feature_fn(extractor: FeatureFn | None, batch_size: int) -> FeatureFn:
  return extractor if extractor is not None else inception.default_extractor(
      batch_size=batch_size)


def accumulate(images: Any, *, extractor: FeatureFn | None = None, batch_size: int = 64,
               stats: FeatureStats | None = None) -> FeatureStats:
  """Streams `images` through the feature extractor into `stats` (new if None); local only."""
  fn = _feature_fn(extractor, batch_size)
  for batch in iter_batches(images, batch_size):
    feats = np.asarray(fn(batch))
    if stats is None:
      stats = FeatureStats(feats.shape[-1])
    stats.update(feats)
  if stats is None:
    raise ValueError("images: expected at least one image, got none")
  return stats


def compute_statistics(images: Any, *, extractor: FeatureFn | None = None,
                       batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
  """`(mu [2048], sigma [2048, 2048])` float64 of the pool3 features of `images`.

  On several hosts each passes its own shard and all receive the global statistics.
  """
  return accumulate(images, extractor=extractor, batch_size=batch_size).allreduce().mean_cov()


def _stats_of(source: Any, extractor, batch_size) -> tuple[np.ndarray, np.ndarray]:
  """`source`: images, a `(mu, sigma)` pair, or the path of an `.npz` statistics file."""
  if isinstance(source, (str, os.PathLike)):
    return load_statistics(source)
  if isinstance(source, tuple) and len(source) == 2 and np.ndim(source[1]) == 2:
    return np.asarray(source[0], np.float64), np.asarray(source[1], np.float64)
  return compute_statistics(source, extractor=extractor, batch_size=batch_size)


def compute_fid(images_a: Any, images_b: Any, *, extractor: FeatureFn | None = None,
                batch_size: int = 64, eps: float = 1e-6, method: str = "sqrtm") -> float:
  """FID between two image sets.

  Args:
    images_a, images_b: each `[N, H, W, 3]` uint8 (or float in [0, 1]) images, an iterable of
      such batches, a `(mu, sigma)` pair, or an `.npz` statistics path (FID against saved
      reference statistics).
    extractor: images -> `[B, D]` features; default the FID Inception (pool3, 2048).
    batch_size: images per forward pass.
    eps, method: see `frechet_distance`.
  """
  mu1, s1 = _stats_of(images_a, extractor, batch_size)
  mu2, s2 = _stats_of(images_b, extractor, batch_size)
  return frechet_distance(mu1, s1, mu2, s2, eps=eps, method=method)


def reconstruction_stats(tokenizer, images: Any, *, extractor: FeatureFn | None = None,
                         batch_size: int = 64, prefix: int | None = None
                         ) -> tuple[FeatureStats, FeatureStats]:
  """Feature sums of `images` and of their reconstructions, summed over hosts.

  Reconstructions `tokenizer.decode(tokenizer.encode(x)[:, :prefix])` are rounded to uint8,
  as when they are saved to PNG and read back by pytorch-fid.
  """
  fn = _feature_fn(extractor, batch_size)
  real, fake = None, None
  for batch in iter_batches(images, batch_size):
    tokens = tokenizer.encode(batch)
    if prefix is not None:
      tokens = tokens[:, :prefix]
    recon = to_uint8(tokenizer.decode(tokens))
    fr, ff = np.asarray(fn(batch)), np.asarray(fn(recon))
    if real is None:
      real, fake = FeatureStats(fr.shape[-1]), FeatureStats(ff.shape[-1])
    real.update(fr)
    fake.update(ff)
  if real is None:
    raise ValueError("images: expected at least one image, got none")
  return real.allreduce(), fake.allreduce()


def reconstruction_fid(tokenizer, images: Any, *, extractor: FeatureFn | None = None,
                       batch_size: int = 64, prefix: int | None = None,
                       method: str = "sqrtm") -> dict[str, Any]:
  """rFID: FID between `images` and `tokenizer.decode(tokenizer.encode(images))`.

  Returns:
    `{"rfid": float, "num_images": int}`.
  """
  real, fake = reconstruction_stats(tokenizer, images, extractor=extractor,
                                    batch_size=batch_size, prefix=prefix)
  return {"rfid": frechet_distance(*real.mean_cov(), *fake.mean_cov(), method=method),
          "num_images": real.n}
