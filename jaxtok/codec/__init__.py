"""`.jtok`: token ids stored as real, entropy-coded files (see `jaxtok.codec.format`).

    from jaxtok import codec
    blobs = codec.compress(tok, images, prior="uniform")      # list[bytes]
    recon = codec.decompress(tok, blobs)                      # [N, S, S, 3] float32
    prior = codec.fit_marginal(tok, train_batches); prior.save(ckpt / codec.MARGINAL_FILE)

FSQ ids (`TokenSpec.radix`) are coded as their per-channel digits, so any vocabulary size
codes; their marginal prior counts each digit per position and channel.

Command line: `python -m jaxtok.codec compress|decompress|info|fit-prior|rd` (see
`jaxtok/codec/__main__.py`).
"""
from jaxtok.codec.format import FORMAT_VERSION, SUFFIX, Header, JtokError
from jaxtok.codec.jtok import (
  compress,
  compress_tokens,
  decode_groups,
  decompress,
  decompress_tokens,
  read_header,
)
from jaxtok.codec.priors import (
  MARGINAL_FILE,
  MarginalPrior,
  UniformPrior,
  fit_marginal,
  tokenizer_id,
)

__all__ = ["FORMAT_VERSION", "Header", "JtokError", "MARGINAL_FILE", "MarginalPrior", "SUFFIX",
           "UniformPrior", "compress", "compress_tokens", "decode_groups", "decompress",
           "decompress_tokens", "fit_marginal", "read_header", "tokenizer_id"]
