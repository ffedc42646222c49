"""`.jtok`: exact round trips (uniform, marginal, adaptive, factorized ids), real file sizes,
and refusal of every bad blob (corrupt, truncated, unknown version, other tokenizer/prior)."""
import dataclasses
import struct
import zlib

import numpy as np
import pytest
from flax import nnx

import jaxtok
from jaxtok import codec
from jaxtok.codec import format as fmt
from jaxtok.tokenizers.titok import TiTok, TiTokConfig
from jaxtok.tokenizers.titok.one_d_piece import OneDPiece

_SMALL = dict(image_size=32, enc_patch_size=8, dec_patch_size=8, enc_width=32, enc_depth=1,
              enc_heads=2, dec_width=32, dec_depth=1, dec_heads=2, num_latent_tokens=8,
              token_size=4, codebook_size=64, head="pixel", legacy_projection=False,
              use_l2_norm=False)


def _tok(seed=0, **kw):
  cls = OneDPiece if kw.get("tail_token_drop", True) else TiTok
  cfg = TiTokConfig(**{**_SMALL, "tail_token_drop": True, **kw})
  return jaxtok.Tokenizer(cls(cfg, rngs=nnx.Rngs(seed)))


@pytest.fixture(scope="module")
def tok():
  return _tok()


def _images(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def prior(tok):
  return codec.fit_marginal(tok, [_images(8, seed=s) for s in range(1, 4)])


def test_uniform_roundtrip_is_exact(tok):
  x = _images(5)
  blobs = codec.compress(tok, x)
  assert len(blobs) == 5
  np.testing.assert_array_equal(codec.decompress(tok, blobs), tok.decode(tok.encode(x)))
  ids = codec.decompress_tokens(tok, blobs)
  np.testing.assert_array_equal(np.stack(ids), tok.encode(x))
  h = codec.read_header(blobs[0])
  assert (h.prior, h.image_size, h.vocab_size, h.ids_per_token, h.num_tokens) == (
      "uniform", 32, 64, 1, 8)
  # 8 ids of 6 bits: 48 bits of payload -> two 32-bit range-coder words.
  assert h.payload_words * 32 >= 48 and h.payload_words <= 3


def test_sizes_are_the_bytes_written(tok, tmp_path):
  blobs = codec.compress(tok, _images(2))
  for i, b in enumerate(blobs):
    p = tmp_path / f"{i}.jtok"
    p.write_bytes(b)
    assert p.stat().st_size == len(b)
    h = codec.read_header(p.read_bytes())
    # magic+version+kind (5) + tokenizer id (4) + four 1-byte varints + payload + crc (4).
    assert len(b) == 5 + 4 + 4 + 4 * h.payload_words + 4


def test_marginal_roundtrip_and_file(tok, prior, tmp_path):
  x = _images(4, seed=9)
  blobs = codec.compress(tok, x, prior=prior)
  assert codec.read_header(blobs[0]).prior == "marginal"
  path = prior.save(tmp_path / "ckpt" / codec.MARGINAL_FILE)
  loaded = codec.MarginalPrior.load(tmp_path / "ckpt")  # directory -> MARGINAL_FILE
  assert loaded.prior_id == prior.prior_id
  np.testing.assert_array_equal(loaded.counts, prior.counts)
  for p in (prior, loaded, path):
    np.testing.assert_array_equal(codec.decompress(tok, blobs, prior=p),
                                  tok.decode(tok.encode(x)))


def test_marginal_codes_unseen_ids(tok, prior):
  # Ids that never occurred at a position still code (smoothing) and round-trip.
  counts = prior.counts[:, 0]
  unseen = np.argmin(counts, axis=-1).astype(np.int32)[None]
  assert counts[np.arange(8), unseen[0]].min() == 0
  blob = codec.compress_tokens(tok, unseen, prior=prior)
  np.testing.assert_array_equal(codec.decompress_tokens(tok, blob, prior=prior)[0], unseen[0])


def test_marginal_beats_uniform_on_peaked_codes(tok):
  # A prior counted on sequences that use few codes codes such sequences in fewer bytes.
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 4, (64, 8)).astype(np.int32)
  counts = np.zeros((8, 1, 64), np.int64)
  for pos in range(8):
    counts[pos, 0] += np.bincount(ids[:, pos], minlength=64)
  peaked = codec.MarginalPrior(counts, codec.tokenizer_id(tok))
  words = [sum(codec.read_header(b).payload_words for b in codec.compress_tokens(tok, ids, prior=p))
           for p in ("uniform", peaked)]
  assert words[1] < words[0]
  assert np.all(peaked.bits(ids) < 8 * 6)


def test_adaptive_lengths_are_stored(tok):
  x = _images(6, seed=3)
  ada = tok.encode_adaptive(x, ("psnr", 5.0))
  blobs = codec.compress_tokens(tok, ada.ids, lengths=ada.lengths)
  assert [codec.read_header(b).num_tokens for b in blobs] == ada.lengths.tolist()
  for got, want in zip(codec.decompress_tokens(tok, blobs), ada.prefixes()):
    np.testing.assert_array_equal(got, want)
  # Images: exactly the decode of those prefixes (batched by length, as decode_groups does;
  # XLA's float results may differ in the last bits between batch sizes).
  np.testing.assert_array_equal(codec.decompress(tok, blobs),
                                codec.decode_groups(tok, ada.prefixes()))
  for i, n in enumerate(ada.lengths):
    np.testing.assert_allclose(codec.decompress(tok, blobs[i:i + 1])[0],
                               tok.decode(ada.ids[i:i + 1, :n])[0], atol=0)
  # Variable lengths, one call (psnr 5 dB is reached by few tokens on some images only).
  mixed = np.array([1, 8, 3, 8, 2, 5])
  blobs = codec.compress_tokens(tok, ada.ids, lengths=mixed)
  assert [len(t) for t in codec.decompress_tokens(tok, blobs)] == mixed.tolist()
  via = codec.compress(tok, x, target=("psnr", 5.0))
  assert via == codec.compress_tokens(tok, ada.ids, lengths=ada.lengths)


def test_factorized_ids_roundtrip():
  tok = _tok(quantizer="factorized_vq", num_sub_codebooks=2, tail_token_drop=False,
             token_size=4)
  assert tok.token_spec.ids_per_token == 2
  x = _images(3)
  ids = tok.encode(x)
  assert ids.shape == (3, 8, 2)
  blobs = codec.compress(tok, x)
  assert codec.read_header(blobs[0]).ids_per_token == 2
  np.testing.assert_array_equal(np.stack(codec.decompress_tokens(tok, blobs)), ids)
  p = codec.fit_marginal(tok, [x])
  assert p.counts.shape == (8, 2, 64)
  np.testing.assert_array_equal(
      np.stack(codec.decompress_tokens(tok, codec.compress(tok, x, prior=p), prior=p)), ids)
  with pytest.raises(ValueError, match="lengths"):  # No prefixes for this tokenizer.
    codec.compress_tokens(tok, ids, lengths=np.array([1, 8, 8]))


def _recrc(body: bytes) -> bytes:
  return body + struct.pack("<I", zlib.crc32(body))


def test_bad_blobs_are_refused(tok, prior):
  blob = codec.compress(tok, _images(1))[0]
  cases = {
      "checksum": blob[:9] + bytes([blob[9] ^ 1]) + blob[10:],      # one flipped bit
      "truncated|checksum": blob[:-3],
      "truncated": blob[:6],
      "not a .jtok": b"PNG" + blob[3:],
      "version 7": blob[:3] + b"\x07" + blob[4:],
      "prior kind": _recrc(blob[:4] + b"\x09" + blob[5:-4]),
  }
  for match, bad in cases.items():
    with pytest.raises(codec.JtokError, match=match):
      codec.decompress(tok, [bad])
  with pytest.raises(codec.JtokError, match="version 7"):
    codec.read_header(cases["version 7"])
  # A header that disagrees with the tokenizer (valid CRC): too many tokens.
  h, payload = fmt.parse(blob)
  too_long = fmt.pack(dataclasses.replace(h, num_tokens=9), payload)
  with pytest.raises(codec.JtokError, match="holds 9 tokens"):
    codec.decompress(tok, [too_long])
  with pytest.raises(ValueError, match="list of bytes"):
    codec.decompress(tok, blob)


def test_wrong_tokenizer_and_prior_are_refused(tok, prior):
  other = _tok(seed=1)
  assert codec.tokenizer_id(other) != codec.tokenizer_id(tok)
  blobs = codec.compress(tok, _images(2))
  with pytest.raises(codec.JtokError, match="another tokenizer"):
    codec.decompress(other, blobs)
  marg = codec.compress(tok, _images(2), prior=prior)
  with pytest.raises(codec.JtokError, match="marginal prior"):
    codec.decompress(tok, marg)  # No prior given.
  other_prior = codec.fit_marginal(tok, [_images(4, seed=11)])
  with pytest.raises(codec.JtokError, match="coded with marginal prior"):
    codec.decompress(tok, marg, prior=other_prior)
  with pytest.raises(ValueError, match="counted with tokenizer"):
    codec.compress(other, _images(1), prior=prior)
  with pytest.raises(ValueError, match="needs its table"):
    codec.compress(tok, _images(1), prior="marginal")


def test_tokenizer_id_follows_weights_not_object(tok, tmp_path):
  jaxtok.save(tok, tmp_path / "ck")
  again = jaxtok.load(tmp_path / "ck")
  assert codec.tokenizer_id(again) == codec.tokenizer_id(tok)
  blobs = codec.compress(tok, _images(1))
  np.testing.assert_array_equal(codec.decompress(again, blobs), codec.decompress(tok, blobs))


def test_continuous_tokenizer_is_refused():
  tok = _tok(quantizer="gaussian", tail_token_drop=False)
  with pytest.raises(ValueError, match="continuous"):
    codec.compress(tok, _images(1))


def test_bad_prior_file(tmp_path):
  (tmp_path / "x.npz").write_bytes(b"garbage")
  with pytest.raises(ValueError, match="not a jaxtok marginal prior"):
    codec.MarginalPrior.load(tmp_path / "x.npz")
  with pytest.raises(ValueError, match="no marginal prior file"):
    codec.MarginalPrior.load(tmp_path)


@pytest.mark.parametrize("num_tokens", [-1, 0, 1000, 2.7, True, "3"])
def test_compress_refuses_bad_num_tokens(tok, num_tokens):
  """Issue 24 item 7: -1 / 1000 / 2.7 stored 63 / 64 / 2 tokens instead of refusing."""
  with pytest.raises(ValueError, match=r"num_tokens: expected an int in \[1, 8\]"):
    codec.compress(tok, _images(1), num_tokens=num_tokens)


@pytest.mark.parametrize("batch_size", [0, -2, 1.5])
def test_compress_refuses_bad_batch_size(tok, batch_size):
  with pytest.raises(ValueError, match=r"batch_size: expected an int >= 1"):
    codec.compress(tok, _images(1), batch_size=batch_size)


def test_payload_must_be_consumed_exactly(tok):
  """Issue 24 item 7: extra payload words with a recomputed CRC decoded without complaint."""
  blob = codec.compress(tok, _images(1))[0]
  h, payload = fmt.parse(blob)
  padded = fmt.pack(h, payload + b"\x05\x00\x00\x00")
  with pytest.raises(codec.JtokError, match=r"not exactly the coding"):
    codec.decompress(tok, [padded])
  np.testing.assert_array_equal(codec.decompress_tokens(tok, [blob])[0],
                                tok.encode(_images(1))[0])


def test_truncated_prior_file_is_a_value_error(prior, tmp_path):
  path = prior.save(tmp_path / "p.npz")
  raw = path.read_bytes()
  for cut in (len(raw) // 2, len(raw) - 30):
    path.write_bytes(raw[:cut])
    with pytest.raises(ValueError, match=r"not a jaxtok marginal prior"):
      codec.MarginalPrior.load(path)


def test_byte_budget_target_spends_at_most_the_budget(tok, prior):
  x = _images(6, seed=5)
  ids = tok.encode(x)
  for p in ("uniform", prior):
    fixed = codec.compress_tokens(tok, ids[:, :4], prior=p)
    budget = float(np.mean([len(b) for b in fixed]))
    blobs = codec.compress(tok, x, target=("bytes", budget), prior=p)
    assert np.mean([len(b) for b in blobs]) <= budget
    psnr = lambda blobs: float(np.mean(jaxtok.metrics.psnr(
        x, codec.decompress(tok, blobs, prior=prior))))
    assert psnr(blobs) >= psnr(fixed) - 1e-3  # never below the fixed length it can match
  lam = codec.compress(tok, x, target=("lambda", 1e6))  # bytes are dear: one token each
  assert [codec.read_header(b).num_tokens for b in lam] == [1] * 6
