"""`jaxtok.metrics`: PSNR/SSIM/MSE/L1 against scikit-image, closed forms and known values."""
import jax
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxtok import metrics


def _pair(seed=0, shape=(3, 40, 37, 3)):
  rng = np.random.default_rng(seed)
  a = rng.random(shape)
  return a, np.clip(a + 0.1 * rng.standard_normal(shape), 0, 1)


@pytest.mark.parametrize("gaussian", [True, False])
def test_ssim_matches_skimage(gaussian):
  a, b = _pair()
  got = np.asarray(metrics.ssim(a, b, gaussian=gaussian))
  want = [structural_similarity(a[i], b[i], channel_axis=-1, data_range=1.0,
                                gaussian_weights=gaussian, sigma=1.5,
                                use_sample_covariance=not gaussian) for i in range(len(a))]
  np.testing.assert_allclose(got, want, atol=1e-3)
  if not gaussian:  # This mode is scikit-image's plain default call.
    np.testing.assert_allclose(
        got, [structural_similarity(a[i], b[i], channel_axis=-1, data_range=1.0)
              for i in range(len(a))], atol=1e-3)


def test_ssim_uint8_and_identity():
  a, b = _pair(1, (2, 32, 32, 3))
  a8, b8 = (a * 255).round().astype(np.uint8), (b * 255).round().astype(np.uint8)
  want = [structural_similarity(a8[i], b8[i], channel_axis=-1, data_range=255,
                                gaussian_weights=True, use_sample_covariance=False)
          for i in range(2)]
  np.testing.assert_allclose(metrics.ssim(a8, b8), want, atol=1e-3)
  np.testing.assert_allclose(metrics.ssim(a, a), 1.0, atol=1e-5)


def test_psnr_mse_l1():
  a, b = _pair(2)
  np.testing.assert_allclose(
      metrics.psnr(a, b), [peak_signal_noise_ratio(a[i], b[i], data_range=1.0) for i in range(3)],
      rtol=1e-5)
  np.testing.assert_allclose(metrics.mse(a, b), ((a - b) ** 2).mean((1, 2, 3)), rtol=1e-5)
  np.testing.assert_allclose(metrics.l1(a, b), np.abs(a - b).mean((1, 2, 3)), rtol=1e-5)
  assert float(metrics.psnr(a, a)[0]) == 100.0
  # uint8 vs its own /255 float: zero error.
  a8 = (a * 255).astype(np.uint8)
  np.testing.assert_allclose(metrics.mse(a8, a8 / 255.0), 0, atol=1e-12)


def test_bad_inputs():
  with pytest.raises(ValueError, match="a/b"):
    metrics.psnr(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 9, 3)))
  with pytest.raises(ValueError, match="at least 11x11"):
    metrics.ssim(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="data_range"):
    metrics.psnr(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)), data_range=0)


def test_known_values():
  a = np.full((2, 16, 16, 3), 0.25, np.float32)
  b = np.full_like(a, 0.5)  # Error 1/4 everywhere (exact in float32): MSE 1/16, L1 1/4.
  np.testing.assert_array_equal(metrics.mse(a, b), [1 / 16] * 2)
  np.testing.assert_array_equal(metrics.l1(a, b), [0.25] * 2)
  want = 10 * np.log10(16)  # 10 log10(peak^2 / MSE) = 12.04 dB.
  np.testing.assert_allclose(metrics.psnr(a, b), [want] * 2, rtol=1e-6)
  # data_range is the peak: the same images on a 0..255 scale give the same PSNR with peak
  # 255, and 20 log10(255) dB less with the default peak 1.
  np.testing.assert_allclose(metrics.psnr(a * 255, b * 255, data_range=255.0), [want] * 2,
                             rtol=1e-6)
  np.testing.assert_allclose(metrics.psnr(a * 255, b * 255), [want - 20 * np.log10(255)] * 2,
                             rtol=1e-5)
  # Identical images: PSNR is capped at max_db (100 dB by default), SSIM is exactly 1.
  x = np.random.default_rng(0).random((2, 16, 16, 3))
  np.testing.assert_array_equal(metrics.psnr(x, x), [100.0, 100.0])
  assert float(metrics.psnr(x, x, max_db=60.0)[0]) == 60.0
  np.testing.assert_allclose(metrics.ssim(x, x), 1.0, atol=1e-6)
  np.testing.assert_allclose(metrics.ssim(x, x, gaussian=False), 1.0, atol=1e-6)
  # Constant images of different levels: structure and contrast terms are 1, so SSIM is the
  # luminance term (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), C1 = (0.01 R)^2.
  c, d = np.full((1, 16, 16, 3), 0.2), np.full((1, 16, 16, 3), 0.6)
  c1 = (metrics.SSIM_K1 * 1.0) ** 2
  want = (2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1)
  # (float32 filtering leaves a ~1e-7 variance in a constant image, against C2 = 9e-4.)
  np.testing.assert_allclose(metrics.ssim(c, d), [want], rtol=5e-4)


def test_metrics_trace_under_jit():
  a, b = _pair(3, (2, 16, 16, 3))
  for name, fn in metrics.METRICS.items():
    np.testing.assert_allclose(jax.jit(fn)(a, b), fn(a, b), rtol=1e-5, err_msg=name)
