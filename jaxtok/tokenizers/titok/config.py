"""`TiTokConfig`: everything a TiTok / One-D-Piece model needs, JSON-serializable.

`MODEL_SIZES` holds the official ViT sizes only; official checkpoint configs are read by
`jaxtok.tokenizers.titok.official`.
"""
# No `from __future__ import annotations`: ml_collections config_flags reads the config
# dataclass's field types at runtime (`--config.model.<field>=...` in the trainer).

import dataclasses
from typing import Any

from jaxtok.tokenizers import layers, token_drop
from jaxtok.tokenizers.interface import ModelConfigBase
from jaxtok.tokenizers.maskgit_vqgan import MaskGITConfig
from jaxtok.tokenizers.quantizers import QUANTIZERS
from jaxtok.tokenizers.spatial import SPATIAL_ORDERS, spatial_regions

# ViT sizes of the official code: name -> (width, depth, heads).
MODEL_SIZES: dict[str, tuple[int, int, int]] = {
    "small": (512, 8, 8),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}

HEADS = ("two_stage", "pixel")
# Values of the `quantize_mode` field of old checkpoints (now `quantizer`).
LEGACY_QUANTIZE_MODES = ("vq", "vae")


@dataclasses.dataclass(kw_only=True)
class TiTokConfig(ModelConfigBase):
  """Everything a TiTok model needs; JSON-serializable through `to_dict`/`from_dict`.

  Attributes:
    image_size: square input side S.
    enc_patch_size, dec_patch_size: patch sides (S must be divisible by both).
    enc_width, enc_depth, enc_heads: encoder ViT size.
    dec_width, dec_depth, dec_heads: decoder ViT size.
    mlp_ratio: MLP hidden width / ViT width.
    num_latent_tokens: K, tokens per image.
    token_size: C, channels per token ("gaussian": channels of the posterior mean).
    codebook_size: N, VQ codebook entries ("vq", "factorized_vq").
    use_l2_norm: cosine VQ (l2-normalized z and codes), as the legacy models.
    commitment_cost: VQ beta.
    quantizer: the bottleneck, a name in `quantizers.QUANTIZERS`: "vq" (one codebook),
      "factorized_vq" (`num_sub_codebooks` codebooks), "fsq" (levels in `quantizer_kwargs`,
      default (8, 8, 8, 5, 5, 5)), "lfq" / "bsq" (lookup-free / binary spherical,
      `codebook_size` = 2**bits), "rvq" (residual VQ, `{"depth": D}` in `quantizer_kwargs`),
      "simvq" (frozen codebook under a learnt map) or "gaussian" (diagonal Gaussian over
      `token_size` channels, continuous tokens: the VAE variants).
    num_sub_codebooks: k >= 2 for "factorized_vq".
    quantizer_kwargs: extra keyword arguments for the quantizer (e.g. `{"update": "ema"}`,
      `{"dead_code_threshold": 1.0}`, `{"levels": [8, 5, 5, 5]}`).
    legacy_projection: raw-reshape latent projection of the released legacy weights.
    head: "two_stage" (MaskGIT logits + pixel decoder) or "pixel".
    pixel_codebook_size: MaskGIT codebook entries (two-stage head; 1024 when released).
    pixel_decoder: MaskGIT pixel decoder plan (two-stage head).
    finetune_decoder: official stage-2 flag; a training hint that the encoder and quantizer
      are frozen (the model computes the same things either way).
    tail_token_drop: One-D-Piece tail-token-drop when `train=True`.
    tail_token_drop_mode: "per_step" (one kept length per call, as One-D-Piece) or
      "per_example" (one length per image).
    spatial_latents: a locality prior for small data (off in every released model): latent
      token i also receives the mean patch embedding of its region of the patch grid
      (`spatial_regions(K, g, spatial_order)`) and, in the decoder, each mask position
      receives the sum of the embedded tokens whose regions cover it; attention stays global, so
      tokens can still carry information about the whole image. Without it, a narrow ViT
      trained on a few photos sits at the mean-colour solution for thousands of steps: both
      attentions start uniform, so no latent is tied to a place.
    spatial_order: the regions of `spatial_latents`: "raster" (K tiles, one region per
      token) or "coarse_to_fine" (a quadtree: token 0 the whole image, then quadrants, ...; the
      order for tail-token-drop, whose every prefix should be a coarser image).
    pixel_base: pixel head only (off in every released model): each decoder position also
      predicts one colour; the g x g colours, bilinearly upsampled to S x S, are added under the
      p x p patches, so neighbouring patches blend instead of meeting at hard edges.
    scan_unroll: `lax.scan` unroll of the ViT layer loop (speed knob; same numbers).
    remat: activation checkpointing of the ViT blocks, one of `layers.REMAT_POLICIES`
      ("none", "full", "dots"): training memory against recomputation; same numbers.
    init_std: initialisation only (no effect on loaded weights or the forward pass): std of
      the trunc-normal init of the ViT Linear/Conv kernels, 0.02 as the official code; None
      -> LeCun fan-in scaling (1/sqrt(fan_in)) for the patch embedding, transformers, latent
      projection and decoder embedding (the decoder's output head keeps 0.02), which small
      widths (the `tiny` variant) need to leave the mean-image solution in a short run; the
      pixel head's 3x3 conv then starts as the identity and its linear layer's bias at 0.5,
      so the untrained model draws mid-grey and the head's gradient is not the product of
      two 0.02-scale layers.
  """
  image_size: int = 256
  enc_patch_size: int = 16
  dec_patch_size: int = 16
  enc_width: int = 512
  enc_depth: int = 8
  enc_heads: int = 8
  dec_width: int = 512
  dec_depth: int = 8
  dec_heads: int = 8
  mlp_ratio: float = 4.0
  num_latent_tokens: int = 128
  token_size: int = 12
  codebook_size: int = 4096
  use_l2_norm: bool = True
  commitment_cost: float = 0.25
  quantizer: str = "vq"
  num_sub_codebooks: int = 1
  quantizer_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  legacy_projection: bool = True
  head: str = "two_stage"
  pixel_codebook_size: int = 1024
  pixel_decoder: MaskGITConfig | None = None
  finetune_decoder: bool = True
  tail_token_drop: bool = False
  tail_token_drop_mode: str = "per_step"
  spatial_latents: bool = False
  spatial_order: str = "raster"
  pixel_base: bool = False
  scan_unroll: int = 1
  remat: str = "none"
  init_std: float | None = layers.VIT_INIT_STD

  def __post_init__(self):
    if isinstance(self.pixel_decoder, dict):
      self.pixel_decoder = MaskGITConfig(**self.pixel_decoder)
    if self.head == "two_stage" and self.pixel_decoder is None:
      self.pixel_decoder = MaskGITConfig()
    if self.head == "pixel":
      self.pixel_decoder = None
    self.quantizer_kwargs = dict(self.quantizer_kwargs)
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first inconsistent field."""
    def need(cond, name, expected):
      if not cond:
        raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")
    need(self.head in HEADS, "head", f"one of {HEADS}")
    need(self.quantizer in QUANTIZERS, "quantizer", f"one of {sorted(QUANTIZERS)}")
    need(self.tail_token_drop_mode in token_drop.MODES, "tail_token_drop_mode",
         f"one of {token_drop.MODES}")
    for p in ("enc_patch_size", "dec_patch_size"):
      need(getattr(self, p) > 0 and self.image_size % getattr(self, p) == 0, p,
           f"a positive divisor of image_size={self.image_size}")
    need(self.enc_width % self.enc_heads == 0, "enc_heads", f"a divisor of {self.enc_width}")
    need(self.dec_width % self.dec_heads == 0, "dec_heads", f"a divisor of {self.dec_width}")
    need(self.num_latent_tokens >= 1, "num_latent_tokens", ">= 1")
    need(self.token_size >= 1, "token_size", ">= 1")
    need(self.num_sub_codebooks >= 1, "num_sub_codebooks", ">= 1")
    need(self.init_std is None or self.init_std > 0, "init_std", "None or > 0")
    need(self.remat in layers.REMAT_POLICIES, "remat", f"one of {layers.REMAT_POLICIES}")
    if self.quantizer == "factorized_vq":
      need(self.num_sub_codebooks >= 2, "num_sub_codebooks", ">= 2 for 'factorized_vq'")
      need(self.token_size % self.num_sub_codebooks == 0, "num_sub_codebooks",
           f"a divisor of token_size={self.token_size}")
    need(not self.pixel_base or self.head == "pixel", "pixel_base",
         "False unless head='pixel'")
    need(self.spatial_order in SPATIAL_ORDERS, "spatial_order", f"one of {SPATIAL_ORDERS}")
    if self.spatial_latents:
      fits = ("a K that tiles the {g} x {g} patch grid (gh * gw = K, gh and gw dividing {g})"
              if self.spatial_order == "raster" else
              "K = n * n, n a power of two dividing the {g} x {g} patch grid")
      for grid in (self.enc_grid, self.dec_grid):
        need(spatial_regions(self.num_latent_tokens, grid, self.spatial_order) is not None,
             "num_latent_tokens",
             fits.format(g=grid) + f" for spatial_latents ({self.spatial_order!r})")
    if self.head == "two_stage":
      grid = self.image_size // self.dec_patch_size
      f = self.pixel_decoder.downsample_factor
      need(grid * f == self.image_size, "dec_patch_size",
           f"the MaskGIT downsample factor {f} (two-stage head decodes a g x g code map)")

  # ---- derived sizes ----
  @property
  def enc_grid(self) -> int:
    return self.image_size // self.enc_patch_size

  @property
  def dec_grid(self) -> int:
    return self.image_size // self.dec_patch_size

  @property
  def latent_channels(self) -> int:
    """Channels out of the encoder projection (2C for "gaussian": mean and log-variance)."""
    return 2 * self.token_size if self.quantizer == "gaussian" else self.token_size

  # ---- (de)serialization: interface.ModelConfigBase ----
  @classmethod
  def from_dict(cls, d: dict[str, Any], *, complete: bool = False) -> "TiTokConfig":
    """Inverse of `to_dict`; also reads old checkpoints' `quantize_mode` ("vae" -> gaussian)."""
    if not isinstance(d, dict):
      raise ValueError(f"config: expected a TiTokConfig dict, got {type(d).__name__}")
    d = dict(d)
    if "quantize_mode" in d:
      mode = d.pop("quantize_mode")
      if mode not in LEGACY_QUANTIZE_MODES:
        raise ValueError(f"quantize_mode: expected one of {LEGACY_QUANTIZE_MODES} (old "
                         f"checkpoints), got {mode!r}")
      d.setdefault("quantizer", "gaussian" if mode == "vae" else "vq")
    return super().from_dict(d, complete=complete)
