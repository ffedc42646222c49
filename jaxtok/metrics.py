"""Per-image reconstruction metrics: MSE, L1, PSNR, SSIM. Pure maths (JAX), nothing of jaxtok.

These are THE PSNR and SSIM of jaxtok: the trainer's eval metric, every evaluator
(`jaxtok.eval`), the adaptive-length search (`jaxtok.adaptive`) and the rate-distortion curves
(`jaxtok.codec.rd`) use them. LPIPS needs a network and lives in `jaxtok.adaptive.lpips`.

All functions take two `[B, H, W, C]` image batches in the same range (`data_range`, 1.0 for
[0, 1] floats; uint8 inputs are divided by 255 first) and return per-image values `[B]`
float32, so evaluators can sum them over batches and hosts and divide at the end. They trace
under `jax.jit` (the checks are on shapes and dtypes only).

SSIM (Wang et al. 2004) is computed per channel and averaged, over the "valid" region
(borders of half a window cropped), exactly as `skimage.metrics.structural_similarity` does
with `channel_axis=-1`. Two windows:

- `gaussian=True` (default, the paper's SSIM): 11x11 Gaussian, sigma 1.5, population
  covariances. Equals `structural_similarity(a, b, channel_axis=-1, data_range=R,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`.
- `gaussian=False`: 7x7 uniform window, sample covariances (N/(N-1)): scikit-image's defaults,
  `structural_similarity(a, b, channel_axis=-1, data_range=R)`.

Because scikit-image crops exactly the window radius after filtering, its reflect padding
never reaches the averaged region, so a "valid" convolution reproduces it.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

SSIM_K1, SSIM_K2 = 0.01, 0.03  # Wang et al. 2004.
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scikit-image's truncation of the Gaussian: radius int(3.5*1.5+0.5) = 5.
SSIM_UNIFORM_WIN = 7


def as_float_pair(a, b, data_range: float | None = None
                  ) -> tuple[jax.Array, jax.Array, float]:
  """`(a, b, range)` as float32 arrays of one `[B, H, W, C]` shape; uint8 sides go to [0, 1]."""
  a, b = jnp.asarray(a), jnp.asarray(b)
  if a.shape != b.shape or a.ndim != 4:
    raise ValueError(f"a/b: expected two [B, H, W, C] batches of one shape, got {a.shape} "
                     f"and {b.shape}")
  if data_range is None:
    data_range = 1.0
  if data_range <= 0:
    raise ValueError(f"data_range: expected a positive value range, got {data_range}")
  if a.dtype == jnp.uint8 or b.dtype == jnp.uint8:
    # uint8 means 0..255 pixels: both sides go to [0, 1] and the range becomes 1.
    a = a.astype(jnp.float32) / (255.0 if a.dtype == jnp.uint8 else 1.0)
    b = b.astype(jnp.float32) / (255.0 if b.dtype == jnp.uint8 else 1.0)
    data_range = 1.0
  return a.astype(jnp.float32), b.astype(jnp.float32), float(data_range)


def mse(a, b, *, data_range: float | None = None) -> jax.Array:
  """Per-image mean squared error `[B]`."""
  a, b, _ = as_float_pair(a, b, data_range)
  return jnp.mean(jnp.square(a - b), axis=(1, 2, 3))


def l1(a, b, *, data_range: float | None = None) -> jax.Array:
  """Per-image mean absolute error `[B]`."""
  a, b, _ = as_float_pair(a, b, data_range)
  return jnp.mean(jnp.abs(a - b), axis=(1, 2, 3))


def psnr(a, b, *, data_range: float | None = None, max_db: float = 100.0) -> jax.Array:
  """Per-image PSNR in dB `[B]`: `10 log10(R² / mse)`; identical images give `max_db`."""
  a, b, r = as_float_pair(a, b, data_range)
  err = jnp.mean(jnp.square(a - b), axis=(1, 2, 3))
  value = 10.0 * jnp.log10(r * r / jnp.maximum(err, 1e-30))
  return jnp.minimum(value, max_db)


@functools.lru_cache(maxsize=8)
def ssim_window(gaussian: bool = True) -> np.ndarray:
  """1D window `[w]` (normalized): Gaussian sigma 1.5 truncated at 3.5 sigma, or uniform 7."""
  if not gaussian:
    return np.full((SSIM_UNIFORM_WIN,), 1.0 / SSIM_UNIFORM_WIN, np.float64)
  radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  w = np.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
  return w / w.sum()


def _filter_valid(x: jax.Array, window: np.ndarray) -> jax.Array:
  """Separable 2D filter of `[B, H, W, C]` with `window` on H and W, "valid" region only."""
  c = x.shape[-1]
  w = jnp.asarray(window, jnp.float32)
  k = w.shape[0]
  kh = jnp.tile(w.reshape(k, 1, 1, 1), (1, 1, 1, c))
  kw = jnp.tile(w.reshape(1, k, 1, 1), (1, 1, 1, c))
  dn = ("NHWC", "HWIO", "NHWC")
  hp = jax.lax.Precision.HIGHEST
  x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn,
                                   feature_group_count=c, precision=hp)
  return jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID", dimension_numbers=dn,
                                      feature_group_count=c, precision=hp)


def ssim(a, b, *, data_range: float | None = None, gaussian: bool = True) -> jax.Array:
  """Per-image SSIM `[B]`, averaged over channels and the valid region (see module doc).

  Args:
    a, b: `[B, H, W, C]` with H, W >= the window (11 Gaussian, 7 uniform).
    data_range: the value range (1.0 for [0, 1] floats; uint8 is rescaled to [0, 1]).
    gaussian: Gaussian 11x11 window with population covariances (True), or scikit-image's
      default 7x7 uniform window with sample covariances (False).
  """
  a, b, r = as_float_pair(a, b, data_range)
  window = ssim_window(gaussian)
  win = window.shape[0]
  if a.shape[1] < win or a.shape[2] < win:
    raise ValueError(f"a/b: SSIM needs images of at least {win}x{win}, got "
                     f"{a.shape[1]}x{a.shape[2]}")
  c = a.shape[-1]
  stacked = jnp.concatenate([a, b, a * a, b * b, a * b], axis=-1)
  f = _filter_valid(stacked, window)
  ux, uy, uxx, uyy, uxy = (f[..., i * c:(i + 1) * c] for i in range(5))
  # Sample covariance (skimage's default) rescales by N/(N-1), N = window area.
  cov_norm = 1.0 if gaussian else win * win / (win * win - 1.0)
  vx = cov_norm * (uxx - ux * ux)
  vy = cov_norm * (uyy - uy * uy)
  vxy = cov_norm * (uxy - ux * uy)
  c1, c2 = (SSIM_K1 * r) ** 2, (SSIM_K2 * r) ** 2
  s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
  return jnp.mean(s, axis=(1, 2, 3))


# The metrics by name (the `jaxtok.eval` ReconEvaluator's; LPIPS is added there when weights
# are given).
METRICS = {"mse": mse, "l1": l1, "psnr": psnr, "ssim": ssim}

__all__ = ["METRICS", "as_float_pair", "l1", "mse", "psnr", "ssim", "ssim_window"]
