"""One-D-Piece (arXiv 2501.10064): TiTok with tail-token-drop, decodable from any prefix.

One-D-Piece is architecturally the legacy two-stage TiTok; its only change is a training-time
regularizer, *tail-token-drop*: each training step keeps the first n of the K tokens, n drawn
uniformly from 1..K (`token_drop.keep_lengths`), so that information concentrates at the head
of the sequence and any prefix decodes to a usable image. Here it is a `TiTokConfig` option
on the TiTok model, not a copy of it:

- `tail_token_drop=True` turns it on for `model(images, train=True, rngs=...)`;
- `tail_token_drop_mode="per_step"` draws one n per call (as the official code);
  `"per_example"` draws one n per image. Either way the shapes stay static: the decoder sees all
  K latents but the dropped ones are hidden from every query by the attention mask, which is
  exactly a truncation (masked keys get zero attention weight).
- `model.decode_tokens(ids[:, :L])` decodes a prefix of any length 1..K: the decoder then
  runs over [cls, g*g masks, L latents] with the first L latent position embeddings.

`VARIANTS` holds the released S/B/L-256 configurations (turingmotors/One-D-Piece configs) and
TiTok's `tiny` and `smoke` models with tail-token-drop on; `tiny` ties its tokens to places
coarse to fine (`spatial_order="coarse_to_fine"`: token 0 the whole image, then quadrants,
blocks, cells), so each prefix is a coarser image. With TiTok's raster tiling the first
tokens held the top rows, and the prefix curve was not monotone (1 token: 12.96 dB, 2: 12.71).
"""
from __future__ import annotations

import dataclasses

from jaxtok.tokenizers.titok import variants as titok_variants
from jaxtok.tokenizers.titok.config import MODEL_SIZES, TiTokConfig
from jaxtok.tokenizers.titok.model import TiTok

__all__ = ["OneDPiece", "VARIANTS", "one_d_piece_config"]


class OneDPiece(TiTok):
  """A TiTok trained with tail-token-drop; its own class so the registry can tell it apart."""


def one_d_piece_config(size: str, num_latent_tokens: int = 256, **overrides) -> TiTokConfig:
  """A One-D-Piece config: legacy two-stage TiTok (4096 x 12 cosine VQ) + tail-token-drop.

  Args:
    size: ViT size of encoder and decoder ("small", "base", "large").
    num_latent_tokens: K.
    **overrides: any other `TiTokConfig` field.
  """
  if size not in MODEL_SIZES:
    raise ValueError(f"size: expected one of {sorted(MODEL_SIZES)}, got {size!r}")
  return dataclasses.replace(titok_variants.legacy_config(size, size, num_latent_tokens),
                             **{"tail_token_drop": True, **overrides})


VARIANTS: dict[str, TiTokConfig] = {
    "S-256": one_d_piece_config("small"),
    "B-256": one_d_piece_config("base"),
    "L-256": one_d_piece_config("large"),
    "tiny": dataclasses.replace(titok_variants.VARIANTS["tiny"], tail_token_drop=True,
                                spatial_order="coarse_to_fine"),
    "smoke": dataclasses.replace(titok_variants.VARIANTS["smoke"], tail_token_drop=True),
}
