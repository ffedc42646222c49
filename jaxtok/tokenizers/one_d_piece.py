"""One-D-Piece (arXiv 2501.10064): TiTok with tail-token-drop, decodable from any prefix.

One-D-Piece is architecturally the legacy two-stage TiTok; its only change is a training-time
regularizer, *tail-token-drop*: each training step keeps the first n of the K tokens, n drawn
uniformly from 1..K, so that information concentrates at the head of the sequence and any
prefix decodes to a usable image. Here it is a `TiTokConfig` option, not a new model:

- `tail_token_drop=True` turns it on for `model(images, train=True, rngs=...)`;
- `tail_token_drop_mode="per_step"` draws one n per call (as the official code);
  `"per_example"` draws one n per image. Either way the shapes stay static: the decoder sees all
  K latents but the dropped ones are hidden from every query by the attention mask, which is
  exactly a truncation (masked keys get zero attention weight).
- `model.decode_tokens(ids[:, :L])` decodes a prefix of any length 1..K: the decoder then
  runs over [cls, g*g masks, L latents] with the first L latent position embeddings.

`VARIANTS` holds the released S/B/L-256 configurations (turingmotors/One-D-Piece configs).
"""
from __future__ import annotations

from jaxtok.tokenizers.titok import (MODEL_SIZES, TiTok, TiTokConfig, tail_drop_lengths)

__all__ = ["OneDPiece", "VARIANTS", "one_d_piece_config", "get_config", "tail_drop_lengths"]

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
  w, d, h = MODEL_SIZES[size]
  kw = dict(enc_width=w, enc_depth=d, enc_heads=h, dec_width=w, dec_depth=d, dec_heads=h,
            num_latent_tokens=num_latent_tokens, token_size=12, codebook_size=4096,
            use_l2_norm=True, legacy_projection=True, head="two_stage", finetune_decoder=True,
            tail_token_drop=True, tail_token_drop_mode="per_step")
  kw.update(overrides)
  return TiTokConfig(**kw)


VARIANTS: dict[str, TiTokConfig] = {
    "S-256": one_d_piece_config("small"),
    "B-256": one_d_piece_config("base"),
    "L-256": one_d_piece_config("large"),
    # CPU-sized: the TiTok "tiny" shape with tail-token-drop on.
    "tiny": TiTokConfig(image_size=64, enc_patch_size=8, dec_patch_size=8,
                        enc_width=128, enc_depth=2, enc_heads=4,
                        dec_width=128, dec_depth=2, dec_heads=4,
                        num_latent_tokens=32, token_size=16, codebook_size=1024,
                        use_l2_norm=True, legacy_projection=False, head="pixel",
                        finetune_decoder=False, tail_token_drop=True),
}


def get_config(name: str) -> TiTokConfig:
  """A fresh copy of `VARIANTS[name]`."""
  if name not in VARIANTS:
    raise ValueError(f"name: expected one of {sorted(VARIANTS)}, got {name!r}")
  return TiTokConfig.from_dict(VARIANTS[name].to_dict())
