"""TiTok variants: the released configurations (bytedance/1d-tokenizer configs/infer/*.yaml)
and CPU-sized ones."""
import dataclasses

from jaxtok.tokenizers.titok.config import MODEL_SIZES, TiTokConfig


def _vit_sizes(enc: str, dec: str) -> dict[str, int]:
  ew, ed, eh = MODEL_SIZES[enc]
  dw, dd, dh = MODEL_SIZES[dec]
  return dict(enc_width=ew, enc_depth=ed, enc_heads=eh, dec_width=dw, dec_depth=dd, dec_heads=dh)


def legacy_config(enc: str, dec: str, k: int) -> TiTokConfig:
  """Two-stage legacy TiTok: 4096 x 12 cosine codebook, MaskGIT pixel decoder."""
  return TiTokConfig(**_vit_sizes(enc, dec), num_latent_tokens=k, token_size=12,
                     codebook_size=4096, use_l2_norm=True, legacy_projection=True,
                     head="two_stage", finetune_decoder=True)


def _vq8k(enc: str, dec: str, k: int) -> TiTokConfig:
  """Single-stage TiTok VQ: 8192 x 64 codebook, no l2, pixel head."""
  return TiTokConfig(**_vit_sizes(enc, dec), num_latent_tokens=k, token_size=64,
                     codebook_size=8192, use_l2_norm=False, legacy_projection=False,
                     head="pixel", finetune_decoder=False)


def _vae(enc: str, dec: str, k: int) -> TiTokConfig:
  """Continuous TiTok: diagonal Gaussian with 16 channels per token, pixel head."""
  return TiTokConfig(**_vit_sizes(enc, dec), num_latent_tokens=k, token_size=16,
                     quantizer="gaussian", use_l2_norm=False, legacy_projection=False,
                     head="pixel", finetune_decoder=False)


# The README's CPU model (not the official recipe): 64x64 images, 8x8 patches (an 8x8 grid), 64
# tokens of FSQ levels (8,) * 10 (30 bits each, 240 bytes an image), width-64 ViTs of depth 2,
# pixel head, 0.25M parameters, the two-layer scans unrolled (~10 % faster steps on CPU). FSQ
# bits, the LeCun / identity-head init (`init_std=None`), `spatial_latents` and `pixel_base` lift
# it off the mean-colour solution of 18 photos: held-out 21.17 dB after 2000 steps in 229 s on 2
# idle cores (the runs behind each: docs/experiments.md, TiTok).
TINY = TiTokConfig(image_size=64, enc_patch_size=8, dec_patch_size=8,
                   enc_width=64, enc_depth=2, enc_heads=4, dec_width=64, dec_depth=2, dec_heads=4,
                   num_latent_tokens=64, token_size=10, quantizer="fsq",
                   quantizer_kwargs={"levels": [8] * 10}, use_l2_norm=True,
                   legacy_projection=False, head="pixel", finetune_decoder=False, init_std=None,
                   spatial_latents=True, pixel_base=True, scan_unroll=2)

# Seconds to train: the tiny model at 32 px with 16x16 patches (a 2x2 grid), K=8, a 64 x 8
# cosine VQ codebook with a weak entropy loss (the smoke runs exercise the learned-codebook
# path: usage statistics, EMA-free codebook gradients); no spatial prior (8 tokens do not
# tile a 2x2 grid).
SMOKE = dataclasses.replace(TINY, image_size=32, enc_patch_size=16, dec_patch_size=16,
                            enc_width=32, enc_depth=1, enc_heads=2, dec_width=32, dec_depth=1,
                            dec_heads=2, num_latent_tokens=8, token_size=8, codebook_size=64,
                            quantizer="vq", quantizer_kwargs={"entropy_loss_weight": 0.02},
                            spatial_latents=False, pixel_base=False, scan_unroll=1)

VARIANTS: dict[str, TiTokConfig] = {
    "S-128": legacy_config("small", "small", 128),
    "B-64": legacy_config("base", "base", 64),
    "L-32": legacy_config("large", "large", 32),
    "BL-64-VQ": _vq8k("base", "large", 64),
    "BL-128-VQ": _vq8k("base", "large", 128),
    "SL-256-VQ": _vq8k("small", "large", 256),
    "LL-32-VAE": _vae("large", "large", 32),
    "BL-64-VAE": _vae("base", "large", 64),
    "BL-128-VAE": _vae("base", "large", 128),
    "tiny": TINY,
    "smoke": SMOKE,
}

# Parameter counts published with the released models (TiTok arXiv 2406.07550, Table 6 /
# the official model cards), including the MaskGIT pixel decoder of the two-stage models.
PUBLISHED_PARAMS: dict[str, float] = {
    "S-128": 83.7e6,
    "B-64": 204.8e6,
    "L-32": 641.1e6,
}


__all__ = ["PUBLISHED_PARAMS", "VARIANTS", "legacy_config"]
