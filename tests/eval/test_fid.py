"""Fréchet distance numerics, streaming statistics and FID of image sets."""
from pathlib import Path

import numpy as np
import pytest

from jaxtok.eval import fid

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "fid" / "inception_features.npz"


def _random_spd(rng, d):
  a = rng.standard_normal((d, d))
  return a @ a.T + 0.1 * np.eye(d)


def test_closed_form_diagonal_gaussians():
  rng = np.random.default_rng(0)
  mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
  v1, v2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
  want = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
  assert fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(want, rel=1e-9)


def test_closed_form_commuting_gaussians():
  # Same eigenvectors, different eigenvalues: Tr sqrt(S1 S2) = sum sqrt(l1 * l2).
  rng = np.random.default_rng(1)
  q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
  l1, l2 = rng.uniform(0.1, 2, 12), rng.uniform(0.1, 2, 12)
  s1, s2 = q @ np.diag(l1) @ q.T, q @ np.diag(l2) @ q.T
  want = 4.0 + np.sum(l1 + l2 - 2 * np.sqrt(l1 * l2))
  mu2 = np.zeros(12)
  mu2[0] = 2.0
  assert fid.frechet_distance(np.zeros(12), s1, mu2, s2) == pytest.approx(want, rel=1e-8)


def test_general_covariances_against_eigenvalues():
  # For SPD S1, S2 the eigenvalues of S1 S2 are real and positive: Tr sqrtm = sum sqrt(eig).
  rng = np.random.default_rng(2)
  s1, s2 = _random_spd(rng, 20), _random_spd(rng, 20)
  tr = np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).real))
  want = np.trace(s1) + np.trace(s2) - 2 * tr
  assert fid.frechet_distance(np.zeros(20), s1, np.zeros(20), s2) == pytest.approx(want, rel=1e-8)
  assert fid.frechet_distance(np.ones(20), s1, np.ones(20), s1) == pytest.approx(0, abs=1e-8)


def test_singular_product_uses_eps_offset():
  # sqrtm of the nilpotent [[0, 1], [0, 0]] is not finite; with eps*I on both: closed form.
  eps = 1e-6
  got = fid.frechet_distance(np.zeros(2), np.array([[0.0, 1.0], [0.0, 0.0]]), np.zeros(2),
                             np.eye(2), eps=eps)
  assert got == pytest.approx(2 - 4 * np.sqrt(eps * (1 + eps)), rel=1e-9)


def test_imaginary_component_raises():
  with pytest.raises(ValueError, match="imaginary"):
    fid.frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="mu1/mu2"):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(ValueError, match="features"):
    fid.FeatureStats(8).update(np.zeros((2, 7)))


def test_streaming_stats_equal_one_shot():
  rng = np.random.default_rng(3)
  x = rng.standard_normal((301, 24)) * rng.uniform(0.5, 3, 24) + 5.0
  stream = fid.FeatureStats(24)
  for start in range(0, 301, 37):
    stream.update(x[start:start + 37])
  mu, sigma = stream.mean_cov()
  np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
  # One host: the all-reduce leaves the sums as they are.
  np.testing.assert_allclose(stream.allreduce().mean_cov()[1], sigma, rtol=1e-9, atol=1e-12)


def test_sampled_gaussians_approach_closed_form():
  rng = np.random.default_rng(4)
  d, n = 4, 200_000
  mu2, v2 = np.array([1.0, 0.0, -1.0, 0.5]), np.array([0.5, 1.0, 2.0, 1.5])
  x1 = rng.standard_normal((n, d))
  x2 = rng.standard_normal((n, d)) * np.sqrt(v2) + mu2
  s1, s2 = fid.FeatureStats(d).update(x1), fid.FeatureStats(d).update(x2)
  want = np.sum(mu2 ** 2) + np.sum(1 + v2 - 2 * np.sqrt(v2))
  assert fid.frechet_distance(*s1.mean_cov(), *s2.mean_cov()) == pytest.approx(want, abs=0.02)


def _pixels(batch):
  """A cheap stand-in feature extractor: mean color + mean squared color per image."""
  x = np.asarray(batch, np.float64) / 255.0
  return np.concatenate([x.mean((1, 2)), (x ** 2).mean((1, 2))], -1)


def test_compute_fid_streaming_equals_array_and_saved_stats(tmp_path):
  rng = np.random.default_rng(5)
  a = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
  b = np.clip(a.astype(int) + rng.integers(-30, 30, a.shape), 0, 255).astype(np.uint8)
  one_shot = fid.compute_fid(a, b, extractor=_pixels, batch_size=64)
  batches = fid.compute_fid(iter([a[:7], a[7:30], a[30:]]), [b[:20], b[20:]],
                            extractor=_pixels, batch_size=64)
  assert batches == pytest.approx(one_shot, rel=1e-9)
  assert one_shot > 0
  fid.save_statistics(tmp_path / "ref.npz", *fid.compute_statistics(b, extractor=_pixels))
  mu, sigma = fid.load_statistics(tmp_path / "ref.npz")
  assert mu.shape == (6,) and sigma.shape == (6, 6)
  assert fid.compute_fid(a, tmp_path / "ref.npz", extractor=_pixels) == pytest.approx(one_shot)
  np.savez(tmp_path / "bad.npz", m=mu)
  with pytest.raises(ValueError, match="'mu' and 'sigma'"):
    fid.load_statistics(tmp_path / "bad.npz")


class _RoundTrip:
  """Test double of the Tokenizer contract: tokens = 4-level quantized pixels (K = 3*H*W)."""

  def __init__(self, levels):
    self.levels = levels

  def encode(self, images):
    x = np.asarray(images, np.float32) / 255.0
    return np.round(x * (self.levels - 1)).astype(np.int32).reshape(len(x), -1)

  def decode(self, tokens):
    return (tokens.reshape(-1, 8, 8, 3) / (self.levels - 1)).astype(np.float32)


def test_reconstruction_fid_of_a_fake_tokenizer():
  rng = np.random.default_rng(6)
  images = rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
  exact = fid.reconstruction_fid(_RoundTrip(256), images, extractor=_pixels, batch_size=10)
  coarse = fid.reconstruction_fid(_RoundTrip(3), images, extractor=_pixels, batch_size=10)
  assert exact["num_images"] == 32
  assert exact["rfid"] == pytest.approx(0, abs=1e-9)
  assert coarse["rfid"] > 1e-3


def test_eigh_method_agrees_with_sqrtm():
  rng = np.random.default_rng(7)
  for d in (3, 50):
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a = fid.frechet_distance(mu1, s1, mu2, s2)
    b = fid.frechet_distance(mu1, s1, mu2, s2, method="eigh")
    assert b == pytest.approx(a, rel=1e-8)
  with pytest.raises(ValueError, match="method"):
    fid.frechet_distance(mu1, s1, mu2, s2, method="svd")


@pytest.mark.parametrize("method", [
    "eigh", pytest.param("sqrtm", marks=pytest.mark.slow)])  # sqrtm(2048x2048): minutes.
def test_real_inception_fid_of_a_set_with_itself_is_zero(method):
  with np.load(FIXTURE) as f:
    images = f["images_64"]
  mu, sigma = fid.compute_statistics(images, batch_size=8)
  assert mu.shape == (2048,) and sigma.shape == (2048, 2048)
  assert abs(fid.frechet_distance(mu, sigma, mu, sigma, method=method)) < 1e-3
  blurred = images.astype(np.float32)
  blurred = ((blurred + np.roll(blurred, 1, 1) + np.roll(blurred, 1, 2)) / 3).astype(np.uint8)
  d_blur = fid.compute_fid((mu, sigma), blurred, batch_size=8, method=method)
  assert d_blur > 1.0
