"""`jaxtok.adaptive.search` on a stand-in tokenizer whose quality per prefix length is set."""
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
