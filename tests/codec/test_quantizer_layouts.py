"""`.jtok` of the LFQ / BSQ (ids as bits), residual VQ (one id per depth) and SimVQ token
layouts: bit-exact round trips with both priors, sizes at the layout's bits per token."""
import math

import numpy as np
import pytest
from flax import nnx

import jaxtok
from jaxtok import codec
from jaxtok.tokenizers.titok import TiTokConfig
from jaxtok.tokenizers.titok.one_d_piece import OneDPiece

_SMALL = dict(image_size=32, enc_patch_size=8, dec_patch_size=8, enc_width=32, enc_depth=1,
              enc_heads=2, dec_width=32, dec_depth=1, dec_heads=2, num_latent_tokens=8,
              token_size=6, head="pixel", legacy_projection=False, use_l2_norm=False,
              tail_token_drop=True)


def _images(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("quantizer, size, kwargs, radix, per_token", [
    ("lfq", 64, {}, (2,) * 6, 1),
    ("bsq", 256, {}, (2,) * 8, 1),
    ("lfq", 8, {"num_codebooks": 2}, None, 2),
    ("rvq", 16, {"depth": 3}, None, 3),
    ("simvq", 32, {}, None, 1),
])
def test_jtok_roundtrips_every_layout(quantizer, size, kwargs, radix, per_token):
  cfg = TiTokConfig(**_SMALL, quantizer=quantizer, codebook_size=size, quantizer_kwargs=kwargs)
  tok = jaxtok.Tokenizer(OneDPiece(cfg, rngs=nnx.Rngs(0)))
  assert (tok.token_spec.radix, tok.token_spec.ids_per_token) == (radix, per_token)
  x = _images(3)
  ids = tok.encode(x)
  assert ids.shape == ((3, 8) if per_token == 1 else (3, 8, per_token))
  prior = codec.fit_marginal(tok, [_images(4, seed=s) for s in (1, 2)])
  lengths = np.array([8, 3, 5])
  for p in ("uniform", prior):
    blobs = codec.compress_tokens(tok, ids, lengths=lengths, prior=p)
    for got, want, n in zip(codec.decompress_tokens(tok, blobs, prior=prior), ids, lengths):
      np.testing.assert_array_equal(got, want[:n])
  blobs = codec.compress(tok, x)
  np.testing.assert_array_equal(np.stack(codec.decompress_tokens(tok, blobs)), ids)
  np.testing.assert_array_equal(codec.decompress(tok, blobs), tok.decode(ids))
  h = codec.read_header(blobs[0])
  assert h.radix == radix and h.vocab_size == size and h.ids_per_token == per_token
  # Uniform coding: log2(size) bits per id, 8 tokens of per_token ids, in 32-bit words.
  bits = 8 * per_token * math.log2(size)
  assert math.ceil(bits / 32) <= h.payload_words <= math.ceil(bits / 32) + 1
