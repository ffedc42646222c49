"""FlexTok variants.

Published sizes (arXiv 2502.13967; tests/fixtures/flextok/README.md §1): encoder / decoder
d12 = 768 wide, 12 deep; d18 = 1152 / 18; d28 = 1792 / 28; head_dim 64, 256 registers, FSQ
[8, 8, 8, 5, 5, 5], over the 16-channel f8 VAE's 32 x 32 latents of a 256 px image with 2 x 2
patches (front_end "latent": the VAE is not part of the model).
"""
from typing import Any

from jaxtok.tokenizers.flextok.config import FlexTokConfig

SIZES: dict[str, tuple[int, int]] = {"d12": (768, 12), "d18": (1152, 18), "d28": (1792, 28)}


def published_config(enc: str, dec: str, **overrides: Any) -> FlexTokConfig:
  """A released-size FlexTok `<enc>-<dec>` (e.g. "d18", "d28") over 16 x 32 x 32 latents."""
  for name in (enc, dec):
    if name not in SIZES:
      raise ValueError(f"size: expected one of {sorted(SIZES)}, got {name!r}")
  (ew, ed), (dw, dd) = SIZES[enc], SIZES[dec]
  base = dict(front_end="latent", input_size=32, channels=16, patch_size=2, enc_width=ew,
              enc_depth=ed, enc_head_dim=64, dec_width=dw, dec_depth=dd, dec_head_dim=64,
              num_registers=256)
  return FlexTokConfig(**{**base, **overrides})


# CPU model in pixel space: 32 px images, 4 x 4 patches (an 8 x 8 grid), 64 registers, width-64
# transformers of depth 2, LeCun-scaled kernels, the velocity skip (`skip_data_std`: the net
# predicts -x0 at t = 1 instead of copying the noise) and high-noise t (`noise_mean` 1).
# `spatial_registers`, the coarse-to-fine quadtree prior, makes its prefix curve rise with k
# (held-out 13.01 dB at k = 1 -> 15.33 dB at k = 64 after 2000 steps; flat in k without it:
# docs/experiments.md, FlexTok). It decodes with one Euler step without guidance: from t = 1 that
# is E[x0 | tokens], the least-squares reconstruction; steps=20, guidance="apg" give a sample.
_TINY_SIZES = dict(front_end="identity", input_size=32, channels=3, patch_size=4,
                   enc_width=64, enc_depth=2, enc_head_dim=32, dec_width=64, dec_depth=2,
                   dec_head_dim=32, num_registers=64, init_std=None)
TINY = FlexTokConfig(**_TINY_SIZES, skip_data_std=0.5, noise_mean=1.0, sample_steps=1,
                     guidance="none", spatial_registers=True)

# Seconds to train: 16 px, 4 x 4 patches, 8 registers, width 32, depth 1 (the official
# decoder: no skip, default noise schedule and sampler guidance).
SMOKE = FlexTokConfig(**{**_TINY_SIZES, "input_size": 16, "enc_width": 32, "enc_depth": 1,
                         "dec_width": 32, "dec_depth": 1, "dec_head_dim": 16,
                         "enc_head_dim": 16, "num_registers": 8}, sample_steps=4)

VARIANTS: dict[str, FlexTokConfig] = {
    "d12-d12": published_config("d12", "d12"),
    "d18-d18": published_config("d18", "d18"),
    "d18-d28": published_config("d18", "d28"),
    "tiny": TINY,
    "smoke": SMOKE,
}

__all__ = ["SIZES", "VARIANTS", "published_config"]
