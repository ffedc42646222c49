"""`FQGANConfig` and the released / CPU-sized FQGAN variants (arXiv 2411.16681).

Sizes of the released models: showlab/FQGAN `train_fqgan_{dual,triple}.sh` with `VQ-16`
(`ch_mult` [1, 1, 2, 2, 4]) or `VQ-8` ([1, 2, 2, 4]): ch 128, 2 res blocks, z 256, K 16384,
D 8, adapters 512 wide / 6 layers / 8 heads, feature heads 3 layers / 8 heads, 256x256 input.
"""
# No `from __future__ import annotations`: ml_collections config_flags reads the config
# dataclass's field types at runtime (`--config.model.<field>=...` in the trainer).

import dataclasses
from typing import Any

from jaxtok.tokenizers import layers
from jaxtok.tokenizers.interface import ModelConfigBase

# Official branch names: Dual = (vis, sem), Triple = (vis, sem_mid, sem_high). The tuple
# order is the decoder's concatenation order, which is also jaxtok's token-id order.
DUAL_BRANCHES = ("vis", "sem")
TRIPLE_BRANCHES = ("vis", "sem_mid", "sem_high")
# Official `decode_code` argument order (indices first, then shapes, in this order).
DECODE_CODE_ORDER = {DUAL_BRANCHES: ("sem", "vis"), TRIPLE_BRANCHES: TRIPLE_BRANCHES}
# Released teachers per semantic branch (vq_loss.py), with their CLS feature widths.
TEACHERS = {
    DUAL_BRANCHES: {"sem": "openai/clip-vit-large-patch14"},
    TRIPLE_BRANCHES: {"sem_mid": "facebook/dinov2-small",
                      "sem_high": "openai/clip-vit-base-patch16"},
}
TEACHER_WIDTHS = {"openai/clip-vit-large-patch14": 1024, "facebook/dinov2-small": 384,
                  "openai/clip-vit-base-patch16": 768}


@dataclasses.dataclass(kw_only=True)
class FQGANConfig(ModelConfigBase):
  """Everything an FQGAN model needs; JSON-serializable through `to_dict`/`from_dict`.

  Attributes:
    image_size: square input side S (the adapters' position embeddings fix the latent grid).
    branches: branch names in the decoder's concatenation order = token-id order. One
      branch without a feature head is a single-codebook VQGAN (`single_codebook`); its ids
      are `[B, h*w]` instead of `[B, h*w, k]`.
    decode_code_order: branch order of the official `decode_code` arguments.
    feature_heads: semantic branch -> (width, layers, heads) of its feature-prediction head
      (`FeatPredHead`); width = the teacher's feature width.
    codebook_size: K codes per branch.
    codebook_dim: D, code size per branch.
    use_l2_norm: cosine VQ (l2-normalised z and codes), as released.
    commitment_cost: beta (0.25).
    entropy_loss_weight: per-branch entropy loss weight (0.03 in the training scripts).
    entropy_temperature: its softmax temperature (0.01, hard-coded officially).
    disentangle_weight: weight of each pairwise disentanglement term (0.1).
    ch: trunk base width; encoder level i has `ch * encoder_ch_mult[i]` channels.
    encoder_ch_mult, decoder_ch_mult: 4 levels (down 8) or 5 levels (down 16).
    num_res_blocks: ResnetBlocks per encoder level (decoder: one more).
    z_channels: channels of the branch outputs and of the decoder input.
    in_channels, out_channels: image channels.
    adapter_layers, adapter_heads, mlp_ratio: per-branch `FactorizedAdapter` transformer
      (its width is the trunk width `ch * encoder_ch_mult[-1]`).
    scan_unroll: `lax.scan` unroll of the transformer layer loops (speed knob).
  """
  image_size: int = 256
  branches: tuple[str, ...] = DUAL_BRANCHES
  decode_code_order: tuple[str, ...] = ("sem", "vis")
  feature_heads: dict[str, Any] = dataclasses.field(
      default_factory=lambda: {"sem": (1024, 3, 8)})
  codebook_size: int = 16384
  codebook_dim: int = 8
  use_l2_norm: bool = True
  commitment_cost: float = 0.25
  entropy_loss_weight: float = 0.03
  entropy_temperature: float = 0.01
  disentangle_weight: float = 0.1
  ch: int = 128
  encoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
  decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  z_channels: int = 256
  in_channels: int = 3
  out_channels: int = 3
  adapter_layers: int = 6
  adapter_heads: int = 8
  mlp_ratio: float = 4.0
  scan_unroll: int = 1

  def __post_init__(self):
    self.branches = tuple(str(b) for b in self.branches)
    self.decode_code_order = tuple(str(b) for b in self.decode_code_order)
    self.encoder_ch_mult = tuple(int(m) for m in self.encoder_ch_mult)
    self.decoder_ch_mult = tuple(int(m) for m in self.decoder_ch_mult)
    self.feature_heads = {str(b): tuple(int(v) for v in spec)
                          for b, spec in dict(self.feature_heads).items()}
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first inconsistent field."""
    def need(cond, name, expected):
      if not cond:
        raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")
    need(len(self.branches) >= 1 and len(set(self.branches)) == len(self.branches),
         "branches", "distinct branch names (>= 1; one = a single-codebook VQGAN)")
    need(sorted(self.decode_code_order) == sorted(self.branches), "decode_code_order",
         f"a permutation of branches={self.branches}")
    need(all(b in self.branches and len(s) == 3 and s[0] % s[2] == 0
             for b, s in self.feature_heads.items()), "feature_heads",
         f"branch -> (width, layers, heads) with branch in {self.branches} and heads dividing "
         f"width")
    need(len(self.encoder_ch_mult) in (4, 5), "encoder_ch_mult",
         "4 levels (down 8) or 5 levels (down 16), as the official code")
    need(len(self.decoder_ch_mult) == len(self.encoder_ch_mult), "decoder_ch_mult",
         f"{len(self.encoder_ch_mult)} levels like encoder_ch_mult")
    for name in ("encoder_ch_mult", "decoder_ch_mult"):
      need(all((self.ch * m) % layers.GROUP_NORM_GROUPS == 0 for m in getattr(self, name)),
           name, f"ch*mult multiples of {layers.GROUP_NORM_GROUPS} (GroupNorm(32))")
    need(self.image_size % self.downsample_factor == 0, "image_size",
         f"a multiple of the downsample factor {self.downsample_factor}")
    need(self.trunk_width % self.adapter_heads == 0, "adapter_heads",
         f"a divisor of the trunk width {self.trunk_width}")
    for name in ("codebook_size", "codebook_dim", "num_res_blocks", "adapter_layers"):
      need(getattr(self, name) >= 1, name, ">= 1")

  # ---- derived sizes ----
  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.encoder_ch_mult) - 1)

  @property
  def grid_size(self) -> int:
    """Side h = w of the latent grid."""
    return self.image_size // self.downsample_factor

  @property
  def trunk_width(self) -> int:
    """Channels of the shared trunk output (= the adapters' width)."""
    return self.ch * self.encoder_ch_mult[-1]

  @property
  def num_branches(self) -> int:
    return len(self.branches)

  def teachers(self) -> dict[str, str]:
    """Semantic branch -> released teacher name (empty for non-official branch sets)."""
    return dict(TEACHERS.get(self.branches, {}))
