"""Codebook statistics over a whole set."""
import numpy as np
import pytest

from jaxtok.eval import codebook


def test_counts_accumulate_across_batches():
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 6, (50, 4))
  ids[:, 3] = 2  # Position 3 always uses code 2.
  c = codebook.CodebookCounter(8)
  for s in range(0, 50, 7):
    c.update(ids[s:s + 7])
  r = c.results()
  counts = np.bincount(ids.ravel(), minlength=8)
  p = counts / counts.sum()
  h = -(p[p > 0] * np.log2(p[p > 0])).sum()
  assert r["entropy_bits"] == pytest.approx(h)
  assert r["perplexity"] == pytest.approx(2 ** h)
  assert r["dead_codes"] == 2 and r["usage"] == pytest.approx(6 / 8)
  assert r["num_tokens"] == 200 and r["max_entropy_bits"] == 3.0
  assert r["position/entropy_bits"].shape == (4,)
  assert r["position/entropy_bits"][3] == 0.0 and r["position/perplexity"][3] == 1.0
  assert r["position/dead_codes"][3] == 7


def test_uniform_codes_and_sub_codebooks():
  ids = np.stack([np.arange(16) % 4, np.zeros(16, int)], -1)[:, None, :]  # [16, 1, 2]
  r = codebook.CodebookCounter(4).update(ids).results()
  np.testing.assert_allclose(r["factor/entropy_bits"], [2.0, 0.0])
  np.testing.assert_allclose(r["factor/usage"], [1.0, 0.25])
  np.testing.assert_allclose(r["factor/perplexity"], [4.0, 1.0])


def test_named_sub_codebooks_give_scalar_statistics():
  """Per-factor (FQGAN: per-branch) scalars equal the factor's own count statistics."""
  rng = np.random.default_rng(1)
  ids = np.stack([rng.integers(0, 8, (20, 3)), rng.integers(0, 2, (20, 3))], -1)  # [20, 3, 2]
  r = codebook.CodebookCounter(8).update(ids[:7]).update(ids[7:]).results(
      factor_names=("vis", "sem"))
  for j, name in enumerate(("vis", "sem")):
    counts = np.bincount(ids[..., j].ravel(), minlength=8)
    p = counts[counts > 0] / counts.sum()
    h = float(-(p * np.log2(p)).sum())
    assert r[f"factor/{name}/entropy_bits"] == pytest.approx(h)
    assert r[f"factor/{name}/perplexity"] == pytest.approx(2 ** h)
    assert r[f"factor/{name}/usage"] == pytest.approx((counts > 0).mean())
    assert r[f"factor/{name}/dead_codes"] == int((counts == 0).sum())
    assert r[f"factor/{name}/usage"] == r["factor/usage"][j]
  assert r["factor/sem/usage"] <= 0.25  # Only codes 0 and 1.
  assert "factor/0/usage" in codebook.CodebookCounter(8).update(ids).results()
  with pytest.raises(ValueError, match="factor_names: expected 2 distinct names"):
    codebook.CodebookCounter(8).update(ids).results(factor_names=("vis",))
  with pytest.raises(ValueError, match="factor_names: expected 2 distinct names"):
    codebook.CodebookCounter(8).update(ids).results(factor_names=("a", "a"))


def test_bad_ids():
  c = codebook.CodebookCounter(4)
  with pytest.raises(ValueError, match=r"\[0, 3\]"):
    c.update(np.array([[0, 4]]))
  with pytest.raises(ValueError, match="integer"):
    c.update(np.zeros((2, 3), np.float32))
  c.update(np.zeros((2, 3), np.int32))
  with pytest.raises(ValueError, match="like earlier"):
    c.update(np.zeros((2, 4), np.int32))
  with pytest.raises(ValueError, match="no tokens"):
    codebook.CodebookCounter(4).results()


def test_a_huge_implicit_codebook_counts_sparsely():
  """V = 2^30 (FSQ levels (8,) * 10): memory follows the ids counted, not K x V."""
  v = 8 ** 10
  rng = np.random.default_rng(2)
  ids = rng.integers(0, v, (6, 64))
  ids[:, 0] = 12345  # Position 0 always uses one code.
  c = codebook.CodebookCounter(v).update(ids[:4]).update(ids[4:])
  r = c.results()
  n_used = len(np.unique(ids))
  assert r["usage"] == pytest.approx(n_used / v) and r["dead_codes"] == v - n_used
  assert r["max_entropy_bits"] == 30.0 and r["num_tokens"] == 6 * 64
  _, counts = np.unique(ids, return_counts=True)
  p = counts / counts.sum()
  assert r["entropy_bits"] == pytest.approx(float(-(p * np.log2(p)).sum()))
  assert r["position/entropy_bits"][0] == 0.0
  assert r["position/entropy_bits"][1] == pytest.approx(np.log2(6))  # 6 distinct codes.
