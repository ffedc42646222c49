"""PSNR/SSIM/MSE/L1 against scikit-image and closed forms."""
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxtok.eval import recon


def _pair(seed=0, shape=(3, 40, 37, 3)):
  rng = np.random.default_rng(seed)
  a = rng.random(shape)
  return a, np.clip(a + 0.1 * rng.standard_normal(shape), 0, 1)


@pytest.mark.parametrize("gaussian", [True, False])
def test_ssim_matches_skimage(gaussian):
  a, b = _pair()
  got = np.asarray(recon.ssim(a, b, gaussian=gaussian))
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
  np.testing.assert_allclose(recon.ssim(a8, b8), want, atol=1e-3)
  np.testing.assert_allclose(recon.ssim(a, a), 1.0, atol=1e-5)


def test_psnr_mse_l1():
  a, b = _pair(2)
  np.testing.assert_allclose(
      recon.psnr(a, b), [peak_signal_noise_ratio(a[i], b[i], data_range=1.0) for i in range(3)],
      rtol=1e-5)
  np.testing.assert_allclose(recon.mse(a, b), ((a - b) ** 2).mean((1, 2, 3)), rtol=1e-5)
  np.testing.assert_allclose(recon.l1(a, b), np.abs(a - b).mean((1, 2, 3)), rtol=1e-5)
  assert float(recon.psnr(a, a)[0]) == 100.0
  # uint8 vs its own /255 float: zero error.
  a8 = (a * 255).astype(np.uint8)
  np.testing.assert_allclose(recon.mse(a8, a8 / 255.0), 0, atol=1e-12)


def test_bad_inputs():
  with pytest.raises(ValueError, match="a/b"):
    recon.psnr(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 9, 3)))
  with pytest.raises(ValueError, match="at least 11x11"):
    recon.ssim(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="data_range"):
    recon.psnr(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)), data_range=0)
