"""`.jtok` of radix (FSQ) ids: coded as per-channel digits, exact round trips (prefixes,
adaptive lengths, both priors), sizes at log2(V) bits an id for any V (2**30 included),
per-position per-channel marginal priors, and refusal of a prior or file of the other layout."""
import dataclasses
import math

import constriction
import numpy as np
import pytest
from flax import nnx

import jaxtok
from jaxtok import codec
from jaxtok.codec import format as fmt
from jaxtok.codec import rd
from jaxtok.tokenizers.titok import TiTok, TiTokConfig
from jaxtok.tokenizers.titok.one_d_piece import OneDPiece

LEVELS = (8, 8, 8, 5, 5, 5)  # FSQ levels of the tiny TiTok: 64,000 codes.
_SMALL = dict(image_size=32, enc_patch_size=8, dec_patch_size=8, enc_width=32, enc_depth=1,
              enc_heads=2, dec_width=32, dec_depth=1, dec_heads=2, num_latent_tokens=8,
              token_size=4, codebook_size=64, head="pixel", legacy_projection=False,
              use_l2_norm=False, quantizer="fsq")


def _tok(levels=LEVELS, seed=0, prefix=True, **kw):
  cfg = TiTokConfig(**{**_SMALL, "tail_token_drop": prefix,
                       "quantizer_kwargs": {"levels": list(levels)}, **kw})
  return jaxtok.Tokenizer((OneDPiece if prefix else TiTok)(cfg, rngs=nnx.Rngs(seed)))


def _images(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tok():
  return _tok()


@pytest.fixture(scope="module")
def prior(tok):
  return codec.fit_marginal(tok, [_images(8, seed=s) for s in range(1, 3)])


def _huge(tok, levels=(8,) * 10):
  """`tok`'s model behind a spec declaring 2**30 codes: the FSQ quantizer itself would keep a
  [1, 2**30] float32 usage table (4 GiB), so the codec is tested on the declared spec."""
  big = jaxtok.Tokenizer(tok.model)
  big.token_spec = dataclasses.replace(tok.token_spec, vocab_size=math.prod(levels),
                                       radix=tuple(levels))
  big.codebook_size = big.token_spec.vocab_size
  return big


def _ideal_bits(counts, alpha, radix, ids):
  """-log2 of the product of per-position per-channel smoothed digit frequencies."""
  total = np.zeros(len(ids))
  for b, row in enumerate(ids):
    for k, code in enumerate(row):
      for j, r in enumerate(radix):
        digit = (int(code) // math.prod(radix[:j])) % r
        c = counts[k, j, :r]
        total[b] -= math.log2((c[digit] + alpha) / (c.sum() + alpha * r))
  return total


def _words(blobs):
  return [codec.read_header(b).payload_words for b in blobs]


def test_uniform_roundtrip_codes_digits(tok):
  assert tok.token_spec.radix == LEVELS
  x = _images(4)
  ids = tok.encode(x)
  blobs = codec.compress(tok, x)
  np.testing.assert_array_equal(np.stack(codec.decompress_tokens(tok, blobs)), ids)
  np.testing.assert_array_equal(codec.decompress(tok, blobs), tok.decode(ids))
  h = codec.read_header(blobs[0])
  assert (h.version, h.radix, h.vocab_size, h.num_tokens, h.num_symbols) == (
      2, LEVELS, 64_000, 8, 8 * 6)
  assert h.as_dict()["radix"] == list(LEVELS)
  # 8 ids of log2(64000) = 15.97 bits: 128 bits, 4 words (+ the coder's last partial word).
  assert 4 <= h.payload_words <= 5


def test_prefixes_and_adaptive_lengths(tok, prior):
  x = _images(4, seed=3)
  ids = tok.encode(x)
  lengths = np.array([1, 8, 3, 5])
  for p in ("uniform", prior):
    blobs = codec.compress_tokens(tok, ids, lengths=lengths, prior=p)
    assert [codec.read_header(b).num_tokens for b in blobs] == lengths.tolist()
    for got, want, n in zip(codec.decompress_tokens(tok, blobs, prior=prior), ids, lengths):
      np.testing.assert_array_equal(got, want[:n])
  ada = tok.encode_adaptive(x, ("psnr", 5.0))
  blobs = codec.compress(tok, x, target=("psnr", 5.0), prior=prior)
  for got, want in zip(codec.decompress_tokens(tok, blobs, prior=prior), ada.prefixes()):
    np.testing.assert_array_equal(got, want)


def test_marginal_prior_is_per_position_and_channel(tok, prior, tmp_path):
  assert prior.radix == LEVELS and prior.counts.shape == (8, 6, 8)
  assert prior.num_sequences == 16
  assert prior.counts[:, 3:, 5:].sum() == 0  # 5-level channels: no padded counts.
  p = prior.probabilities(2).reshape(2, 6, 8)
  np.testing.assert_allclose(p.sum(-1), 1.0)
  assert (p[:, 3:, 5:] == 0).all() and (p[:, :, :5] > 0).all()
  x = _images(3, seed=9)
  ids = tok.encode(x)
  np.testing.assert_allclose(prior.bits(ids), _ideal_bits(prior.counts, 0.5, LEVELS, ids))
  np.testing.assert_allclose(prior.bits(ids[:, :3]),
                             _ideal_bits(prior.counts, 0.5, LEVELS, ids[:, :3]))
  blobs = codec.compress(tok, x, prior=prior)
  # Real sizes: the ideal code length plus at most the coder's two words of overhead.
  for bits, w in zip(prior.bits(ids), _words(blobs)):
    assert bits / 32 <= w <= bits / 32 + 2
  loaded = codec.MarginalPrior.load(prior.save(tmp_path / codec.MARGINAL_FILE))
  assert (loaded.radix, loaded.prior_id) == (LEVELS, prior.prior_id)
  np.testing.assert_array_equal(np.stack(codec.decompress_tokens(tok, blobs, prior=loaded)),
                                ids)
  assert "radix=[8, 8, 8, 5, 5, 5]" in repr(loaded)


def test_marginal_beats_uniform_on_skewed_digits(tok):
  rng = np.random.default_rng(0)
  radix = (8,) * 10
  big = _huge(tok, radix)
  # Digits mostly 0 or 1, but every value of every channel possible.
  digits = np.where(rng.random((64, 8, 10)) < 0.9, rng.integers(0, 2, (64, 8, 10)),
                    rng.integers(0, 8, (64, 8, 10)))
  ids = codec.priors.from_digits(digits, radix).astype(np.int32)
  counts = np.zeros((8, 10, 8), np.int64)
  for k in range(8):
    for j in range(10):
      counts[k, j] = np.bincount(digits[:, k, j], minlength=8)
  skewed = codec.MarginalPrior(counts, codec.tokenizer_id(big), radix=radix)
  words = {name: sum(_words(codec.compress_tokens(big, ids, prior=p)))
           for name, p in (("uniform", "uniform"), ("marginal", skewed))}
  assert words["marginal"] < 0.7 * words["uniform"]  # Entropy: 1.5 of 3 bits a digit.
  np.testing.assert_array_equal(
      np.stack(codec.decompress_tokens(big, codec.compress_tokens(big, ids, prior=skewed),
                                       prior=skewed)), ids)


def test_huge_radix_codes_in_small_memory(tok):
  radix = (8,) * 10
  big = _huge(tok, radix)
  ids = np.random.default_rng(1).integers(0, 2 ** 30, (3, 8)).astype(np.int32)
  blobs = codec.compress_tokens(big, ids, lengths=np.array([8, 2, 5]))
  for got, want, n in zip(codec.decompress_tokens(big, blobs), ids, (8, 2, 5)):
    np.testing.assert_array_equal(got, want[:n])
  # Uniform digits of 8 levels are exactly 3 bits: 30 bits an id, plus <= 1 word of the coder.
  for w, n in zip(_words(blobs), (8, 2, 5)):
    assert math.ceil(n * 30 / 32) <= w <= math.ceil(n * 30 / 32) + 1
  p = codec.fit_marginal(big, [_images(4)])
  assert p.counts.shape == (8, 10, 8) and p.counts.nbytes == 8 * 10 * 8 * 8
  assert p.num_sequences == 4
  np.testing.assert_array_equal(
      np.stack(codec.decompress_tokens(big, codec.compress_tokens(big, ids, prior=p),
                                       prior=p)), ids)
  assert p.bits(ids).shape == (3,)


def test_real_fsq_model_beyond_constriction_alphabet():
  # 8**8 = 2**24 codes: one symbol per id would exceed constriction's alphabets (< 2**24).
  tok = _tok(levels=(8,) * 8, prefix=False, token_size=8)
  assert tok.codebook_size == 2 ** 24
  x = _images(2)
  ids = tok.encode(x)
  blobs = codec.compress(tok, x)
  np.testing.assert_array_equal(np.stack(codec.decompress_tokens(tok, blobs)), ids)
  np.testing.assert_array_equal(codec.decompress(tok, blobs), tok.decode(ids))


def test_prior_of_the_other_layout_is_refused(tok, prior, tmp_path):
  # Per-code counts for the radix tokenizer (say, fitted before it coded digits).
  per_code = codec.MarginalPrior(np.ones((8, 1, 64_000), np.int64), codec.tokenizer_id(tok))
  with pytest.raises(ValueError, match="prior: .*counts per code.*radix"):
    codec.compress(tok, _images(1), prior=per_code)
  with pytest.raises(ValueError, match="prior: .*counts per code"):
    codec.compress(tok, _images(1), prior=per_code.save(tmp_path / "p.npz"))
  # And the reverse: digit counts for a tokenizer of atomic ids.
  vq = _tok(quantizer="vq", quantizer_kwargs={})
  assert vq.token_spec.radix is None
  digits = codec.MarginalPrior(np.ones((8, 2, 8), np.int64), codec.tokenizer_id(vq),
                               radix=(8, 8))
  with pytest.raises(ValueError, match="prior: .*per digit of radix \\[8, 8\\].*per code"):
    codec.compress(vq, _images(1), prior=digits)
  other = codec.fit_marginal(tok, [_images(2, seed=5)])
  with pytest.raises(codec.JtokError, match="coded with marginal prior"):
    codec.decompress(tok, codec.compress(tok, _images(1), prior=prior), prior=other)


def test_bad_radix_counts_are_refused(tok):
  tid = codec.tokenizer_id(tok)
  counts = np.zeros((8, 6, 8), np.int64)
  counts[0, 4, 6] = 1  # Level 6 of a 5-level channel.
  with pytest.raises(ValueError, match="counts: digit counts at or above"):
    codec.MarginalPrior(counts, tid, radix=LEVELS)
  with pytest.raises(ValueError, match=r"counts: expected \[K, d, max\(radix\)\]"):
    codec.MarginalPrior(np.zeros((8, 6, 5), np.int64), tid, radix=LEVELS)
  with pytest.raises(ValueError, match="radix: expected"):
    codec.MarginalPrior(np.zeros((8, 1, 8), np.int64), tid, radix=(1,))


def _v1_blob(tok, ids):
  """A version 1 file of atomic ids, as jaxtok wrote for FSQ tokenizers before digits."""
  enc = constriction.stream.queue.RangeEncoder()
  enc.encode(np.asarray(ids, np.int32), constriction.stream.model.Uniform(tok.codebook_size))
  words = np.asarray(enc.get_compressed(), np.uint32).astype("<u4").tobytes()
  h = fmt.Header(1, "uniform", codec.tokenizer_id(tok), None, 32, tok.codebook_size, 1,
                 len(ids), len(words) // 4)
  return fmt.pack(h, words)


def test_version_1_files_and_bad_headers(tok):
  ids = tok.encode(_images(1))[0]
  old = _v1_blob(tok, ids)
  assert codec.read_header(old).radix is None
  np.testing.assert_array_equal(codec.decompress_tokens(tok, [old])[0], ids)
  blob = codec.compress_tokens(tok, ids[None])[0]
  h, payload = fmt.parse(blob)
  wrong = fmt.pack(dataclasses.replace(h, radix=(8, 8, 8, 5, 25)), payload)
  with pytest.raises(codec.JtokError, match=r"radix=\[8, 8, 8, 5, 25\]"):
    codec.decompress_tokens(tok, [wrong])
  with pytest.raises(codec.JtokError, match="product"):  # prod(radix) != vocab_size.
    fmt.parse(fmt.pack(dataclasses.replace(h, radix=(8, 8)), payload))
  with pytest.raises(ValueError, match="header: expected version 1 without a radix"):
    fmt.pack(dataclasses.replace(h, version=1), payload)
  marg = fmt.pack(dataclasses.replace(fmt.parse(old)[0], prior="marginal",
                                      prior_id=b"\0" * 4), fmt.parse(old)[1])
  with pytest.raises(codec.JtokError, match="per-code marginal prior"):
    codec.decompress_tokens(tok, [marg])


def test_rd_sizes_radix_files(tok, prior):
  x = _images(2, seed=4)
  res = rd.rate_distortion(tok, x, codecs=(), lengths=[2, 8],
                           jtok_priors={"uniform": "uniform", "marginal": prior})
  for name, p in (("uniform", "uniform"), ("marginal", prior)):
    want = [np.mean([len(b) for b in codec.compress(tok, x, prior=p, num_tokens=k)])
            for k in (2, 8)]
    assert [q["bytes_per_image"] for q in res["curves"][f"tokenizer/{name}"]] == want
