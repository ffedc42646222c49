"""FQGAN variants: the released FQGAN-Dual / Triple (arXiv 2411.16681) and CPU-sized ones."""
import dataclasses

from jaxtok.tokenizers.fqgan.config import (
  DECODE_CODE_ORDER,
  DUAL_BRANCHES,
  TEACHER_WIDTHS,
  TEACHERS,
  TRIPLE_BRANCHES,
  FQGANConfig,
)


def released(variant: str, down: int) -> FQGANConfig:
  """The released FQGAN-{Dual,Triple} at down 16 (VQ-16) or 8 (VQ-8)."""
  mult = {16: (1, 1, 2, 2, 4), 8: (1, 2, 2, 4)}[down]
  branches = {"dual": DUAL_BRANCHES, "triple": TRIPLE_BRANCHES}[variant]
  heads = {b: (TEACHER_WIDTHS[t], 3, 8) for b, t in TEACHERS[branches].items()}
  return FQGANConfig(branches=branches, decode_code_order=DECODE_CODE_ORDER[branches],
                     feature_heads=heads, encoder_ch_mult=mult, decoder_ch_mult=mult)


# CPU model: 64x64 images, down 8 (an 8x8 grid, 64 positions x 2 branches), a 512 x 8
# codebook per branch, ch 32, one-layer adapters and head. The feature head is 288 wide to
# match the offline default teacher (`jaxtok.nets.teachers.InceptionTeacher`, FID Inception
# `mixed_2` features).
TINY = FQGANConfig(image_size=64, feature_heads={"sem": (288, 1, 8)}, codebook_size=512,
                   ch=32, encoder_ch_mult=(1, 1, 2, 2), decoder_ch_mult=(1, 1, 2, 2),
                   num_res_blocks=1, z_channels=64, adapter_layers=1, adapter_heads=4)

# Seconds to train: 32x32 images, 4x4 grid, a 64 x 8 codebook, 32-channel trunk.
SMOKE = dataclasses.replace(TINY, image_size=32, feature_heads={"sem": (288, 1, 4)},
                            codebook_size=64, encoder_ch_mult=(1, 1, 1, 1),
                            decoder_ch_mult=(1, 1, 1, 1), z_channels=32, adapter_heads=2)


def single_codebook(config: FQGANConfig, branch: str = "vis") -> FQGANConfig:
  """The single-codebook VQGAN with `config`'s bits per position: the same trunk, adapter,
  decoder and code size, one branch `branch` with `codebook_size ** num_branches` codes, no
  feature head (so no semantic or disentanglement loss).

  The FQGAN paper's baseline is the VQGAN without adapters at the *same codebook size* per
  branch (fewer bits); this one keeps the bit budget and the architecture fixed, so a
  comparison isolates the factorization. Each position costs `num_branches * log2 K` bits,
  one code of `K ** num_branches`: sizes for CPU models (`tiny`: 2 x 512 -> 262,144 codes),
  not for the released ones (2 x 16,384 -> 2^28).
  """
  if not isinstance(config, FQGANConfig):
    raise ValueError(f"config: expected an FQGANConfig, got {type(config).__name__}")
  size = config.codebook_size ** config.num_branches
  if size > 2 ** 24:
    raise ValueError(f"config: the same-bits single codebook of {config.num_branches} x "
                     f"{config.codebook_size} codes has {size:,} codes (> 2^24); expected a "
                     f"CPU-sized model such as 'tiny'")
  return dataclasses.replace(config, branches=(branch,), decode_code_order=(branch,),
                             feature_heads={}, codebook_size=size)


VARIANTS: dict[str, FQGANConfig] = {
    "dual-16": released("dual", 16),
    "triple-16": released("triple", 16),
    "dual-8": released("dual", 8),
    "triple-8": released("triple", 8),
    "tiny": TINY,
    "smoke": SMOKE,
}

__all__ = ["VARIANTS", "released", "single_codebook"]
