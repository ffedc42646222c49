"""`jaxtok.adaptive.search` on a stand-in tokenizer whose quality per prefix length is set."""
import itertools
import types

import numpy as np
import pytest

from jaxtok import adaptive, metrics


class TableTokenizer:
  """Image i (a constant gray level) decodes from L tokens with a PSNR of `table[i][L - 1]`.

  The ids carry the image's index, so `decode` knows which row of the table applies; each
  reconstruction is the image plus a constant offset e, whose PSNR is -20 log10(e). Every
  `decode` call is recorded as `(batch size, lengths)`.
  """

  family = "table"
  supports_prefix = True

  def __init__(self, table, image_size=16, pads_prefixes=False):
    self.table = np.asarray(table, np.float64)
    self.num_tokens = self.table.shape[1]
    self.image_size = image_size
    self.pads_prefixes = pads_prefixes
    self.token_spec = types.SimpleNamespace(shape_str=lambda: f"[B, {self.num_tokens}]")
    self.calls = []

  def images(self):
    n, s = len(self.table), self.image_size
    return np.repeat(np.linspace(0.2, 0.4, n), s * s * 3).reshape(n, s, s, 3)

  def check_images(self, images):
    return np.asarray(images, np.float32)

  def check_tokens(self, ids):
    return np.asarray(ids, np.int32)

  def split_decode_options(self, options):
    if options:
      raise ValueError(f"{sorted(options)[0]}: not a decode option")
    return (), {}

  def encode(self, images):
    levels = np.asarray(images)[:, 0, 0, 0]
    index = np.round((levels - 0.2) / 0.2 * (len(self.table) - 1)).astype(np.int32)
    return np.repeat(index[:, None], self.num_tokens, axis=1)

  def decode(self, ids, *, lengths):
    lengths = np.asarray(lengths)
    assert ids.shape[1] == lengths.max()
    self.calls.append((len(ids), lengths.copy()))
    index = ids[:, 0]
    level = self.images()[index]
    offset = 10.0 ** (-self.table[index, lengths - 1] / 20.0)
    return (level + offset[:, None, None, None]).astype(np.float32)


_MONOTONE = [[10, 12, 14, 16, 18, 20, 22, 24],
             [15, 25, 26, 27, 28, 29, 30, 31],
             [5, 6, 7, 8, 9, 10, 11, 12]]


def test_monotone_quality_gives_the_shortest_length():
  tok = TableTokenizer(_MONOTONE)
  ada = adaptive.search(tok, tok.images(), ("psnr", 17.0), batch_size=8)
  np.testing.assert_array_equal(ada.lengths, [5, 2, 8])  # First PSNR >= 17 (row 3: never).
  np.testing.assert_array_equal(ada.reached, [True, True, False])
  np.testing.assert_allclose(ada.scores, [18, 25, 12], atol=1e-3)  # The kept lengths' PSNR.
  assert (ada.metric, ada.target) == ("psnr", 17.0)
  assert [len(p) for p in ada.prefixes()] == [5, 2, 8]
  # Round 1 checks the longest length for all; then 3 rounds of bisection over 8 lengths for
  # the two images still searching, one decode per distinct midpoint: lengths 4 (shared),
  # then 2 and 6, then 1 and 5.
  assert ada.num_decodes == len(tok.calls) == 1 + 1 + 2 + 2
  assert tok.calls[0][0] == 4 and list(tok.calls[0][1][:3]) == [8, 8, 8]  # 3 padded to 4.
  assert [sorted(set(lengths)) for _, lengths in tok.calls[1:]] == [[4], [2], [6], [1], [5]]


def test_padded_prefixes_decode_each_round_in_one_batch():
  tok = TableTokenizer(_MONOTONE, pads_prefixes=True)
  ada = adaptive.search(tok, tok.images(), ("psnr", 17.0), batch_size=8)
  np.testing.assert_array_equal(ada.lengths, [5, 2, 8])
  assert ada.num_decodes == 1 + 3  # One decode a round, each image at its own length.


def test_not_monotone_stops_at_a_crossing():
  row = [20, 5, 5, 21, 5, 5, 5, 22]  # Crosses 18 at 1, 4 and 8.
  tok = TableTokenizer([row])
  n = int(adaptive.search(tok, tok.images(), ("psnr", 18.0)).lengths[0])
  assert row[n - 1] >= 18 and (n == 1 or row[n - 2] < 18)


def test_candidate_lengths_and_trivial_targets():
  tok = TableTokenizer(_MONOTONE)
  pow2 = adaptive.search(tok, tok.images(), ("psnr", 17.0), lengths=[1, 2, 4, 8])
  np.testing.assert_array_equal(pow2.lengths, [8, 2, 8])  # Row 0 reaches 17 at 5, so 8.
  low = adaptive.search(tok, tok.images(), ("psnr", 0.0))
  assert (low.lengths == 1).all() and low.reached.all()
  tok.calls.clear()
  high = adaptive.search(tok, tok.images(), ("psnr", 99.0))
  assert (high.lengths == 8).all() and not high.reached.any()
  assert high.num_decodes == 1 == len(tok.calls)  # Only the longest length is decoded.


def test_ssim_target_and_given_ids():
  tok = TableTokenizer(_MONOTONE)
  x = tok.images()
  ids = tok.encode(x)
  ada = adaptive.search(tok, x, ("ssim", 0.9), ids=ids)
  np.testing.assert_array_equal(ada.ids, ids)
  k = tok.num_tokens
  table = np.stack([metrics.ssim(x, tok.decode(ids[:, :n], lengths=np.full(len(x), n)))
                    for n in range(1, k + 1)], axis=1)  # [B, K], rising with the length
  for i, n in enumerate(ada.lengths):
    np.testing.assert_allclose(ada.scores[i], table[i, n - 1], rtol=1e-4)
    if ada.reached[i]:
      assert n == 1 + int(np.argmax(table[i] >= 0.9))
    else:
      assert n == k and table[i, -1] < 0.9
  assert ada.reached.any() and not ada.reached.all()


def test_quality_fns_and_bad_arguments():
  a = np.zeros((2, 16, 16, 3), np.float32)
  np.testing.assert_allclose(adaptive.quality_fn("psnr")(a, a + 0.25), [12.0412] * 2,
                             rtol=1e-4)
  assert adaptive.quality_fn("ssim")(a, a).dtype == np.float64
  with pytest.raises(ValueError, match="metric: expected one of"):
    adaptive.quality_fn("mse")
  with pytest.raises(ValueError, match="lpips_weights"):
    adaptive.quality_fn("lpips", None)
  tok = TableTokenizer(_MONOTONE)
  x = tok.images()
  for bad in (("mse", 1.0), ("psnr",), ("psnr", float("nan")), "psnr", ("psnr", True)):
    with pytest.raises(ValueError, match="target"):
      adaptive.search(tok, x, bad)
  for bad in ([3, 2], [0, 2], [1, 9], [1.0, 2.0]):
    with pytest.raises(ValueError, match=r"lengths: expected increasing prefix lengths in"):
      adaptive.search(tok, x, lengths=bad)
  with pytest.raises(ValueError, match="batch_size"):
    adaptive.search(tok, x, batch_size=0)
  with pytest.raises(ValueError, match="decode_options"):
    adaptive.search(tok, x, decode_options=[("steps", 2)])
  with pytest.raises(ValueError, match="stepz"):
    adaptive.search(tok, x, decode_options={"stepz": 2})
  with pytest.raises(ValueError, match=r"ids: expected the images' full ids \[B, 8\]"):
    adaptive.search(tok, x, ids=tok.encode(x)[:, :4])
  tok.supports_prefix = False
  with pytest.raises(ValueError, match="supports_prefix"):
    adaptive.search(tok, x)
  assert not tok.calls  # Every check comes before any decode.


def _exhaustive(q, r, budget):
  """The quality sum of the best allocation, by brute force."""
  n, c = q.shape
  best = -np.inf
  for combo in itertools.product(range(c), repeat=n):
    idx = np.array(combo)
    if r[np.arange(n), idx].sum() <= budget * n + 1e-9:
      best = max(best, q[np.arange(n), idx].sum())
  return best


def test_allocate_fits_beats_every_fixed_length_and_is_optimal_on_concave_curves():
  rng = np.random.default_rng(0)
  for trial in range(60):
    n, c = 4, 5
    concave = trial % 2 == 0
    if concave:  # Diminishing returns at one byte a step: greedy by slope is optimal.
      steps = np.sort(rng.uniform(0, 5, (n, c)), axis=1)[:, ::-1]
      q = np.cumsum(steps, axis=1)
      r = np.broadcast_to(np.arange(1, c + 1, dtype=np.float64), (n, c))
    else:
      q = np.cumsum(rng.uniform(0, 5, (n, c)), axis=1)
      r = np.cumsum(rng.uniform(0.5, 3, (n, c)), axis=1)
    budget = rng.uniform(r[:, 0].mean(), r[:, -1].mean())
    idx = adaptive.allocate(q, r, budget=budget)
    rows = np.arange(n)
    assert r[rows, idx].mean() <= budget + 1e-9
    got = q[rows, idx].sum()
    for col in range(c):
      if r[:, col].mean() <= budget:
        assert got >= q[:, col].sum() - 1e-9
    best = _exhaustive(q, r, budget)
    assert got <= best + 1e-9
    if concave:
      np.testing.assert_allclose(got, best, rtol=1e-12)
  # Over budget even at the cheapest: the cheapest of each. A multiplier: per-row argmax.
  q = np.array([[1.0, 2.0, 2.5], [0.0, 3.0, 3.1]])
  r = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
  np.testing.assert_array_equal(adaptive.allocate(q, r, budget=0.5), [0, 0])
  np.testing.assert_array_equal(adaptive.allocate(q, r, lam=0.0), [2, 2])
  np.testing.assert_array_equal(adaptive.allocate(q, r, lam=0.8), [1, 1])
  np.testing.assert_array_equal(adaptive.allocate(q, r, lam=0.3), [2, 1])
  with pytest.raises(ValueError, match="budget/lam: give exactly one"):
    adaptive.allocate(q, r)
  with pytest.raises(ValueError, match="one shape"):
    adaptive.allocate(q, r[:, :2], budget=1.0)
  with pytest.raises(ValueError, match="rates >= 0"):
    adaptive.allocate(q, -r, budget=1.0)


def test_byte_budget_spends_bytes_where_the_curve_is_steep():
  tok = TableTokenizer(_MONOTONE)
  x = tok.images()
  rates = np.broadcast_to(np.arange(1, 9, dtype=np.float64), (3, 8)) * 2.0  # 2 bytes a token
  ada = adaptive.search(tok, x, ("bytes", 8.0), rates=rates, batch_size=8)
  # Mean 4 tokens each (12 in all). Fixed length 4: PSNR 16 + 27 + 8 = 51. Row 1 gains 10 dB
  # from its second token, then 1 dB a token; rows 0 and 2 gain 2 and 1 dB a token: the optimum
  # (55 dB) gives row 0 all 8 tokens, row 1 its steep second one, and the last 2 tokens buy
  # 1 dB each wherever they go.
  assert ada.lengths[0] == 8 and ada.lengths[1] >= 2 and ada.lengths.sum() == 12
  assert ada.scores.sum() == pytest.approx(55.0, abs=1e-3)
  np.testing.assert_allclose(ada.rates, 2.0 * ada.lengths)
  assert ada.reached.all() and (ada.metric, ada.quality, ada.target) == ("bytes", "psnr", 8.0)
  assert ada.num_decodes == 8  # every candidate length once (3 images in one padded batch)
  lam = adaptive.search(tok, x, ("lambda", 0.75), rates=rates, batch_size=8)
  np.testing.assert_array_equal(lam.lengths, [8, 2, 1])  # 2 dB / 2 B > 0.75; 1 / 2 < 0.75
  # The default rates: the fixed-length code size, L * log2(V) / 8.
  spec = types.SimpleNamespace(vocab_size=256, ids_per_token=2)
  np.testing.assert_allclose(adaptive.default_rates(types.SimpleNamespace(token_spec=spec),
                                                     np.array([1, 3]), 2), [[2, 6], [2, 6]])
  with pytest.raises(ValueError, match="must be >= 0"):
    adaptive.search(tok, x, ("bytes", -1.0), rates=rates)
  with pytest.raises(ValueError, match="quality: expected one of"):
    adaptive.search(tok, x, ("bytes", 8.0), rates=rates, quality="mse")
  with pytest.raises(ValueError, match=r"rates: expected \[B, len\(lengths\)\] = \[3, 8\]"):
    adaptive.search(tok, x, ("bytes", 8.0), rates=rates[:, :4])
