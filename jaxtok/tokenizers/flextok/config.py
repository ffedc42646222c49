"""`FlexTokConfig`: everything a FlexTok model needs, JSON-serializable.

Semantics of every field: tests/fixtures/flextok/README.md (the official module behind each is
named there). Fields marked [inferred] follow that README's best knowledge of the released
models; the official checkpoint converter (`convert/flextok_config.py`) reads them from a
release's Hydra config instead.
"""
# No `from __future__ import annotations`: ml_collections config_flags reads the config
# dataclass's field types at runtime (`--config.model.<field>=...` in the trainer).

import dataclasses

from jaxtok.tokenizers import token_drop
from jaxtok.tokenizers.interface import ModelConfigBase
from jaxtok.tokenizers.spatial import spatial_regions
from jaxtok.tokenizers.vae.config import AutoencoderKLConfig, load_config

FRONT_ENDS = ("identity", "latent", "vae")
MASKS = ("causal_last", "full")
NULL_CONDS = ("learned", "zero")
GUIDANCE = ("none", "cfg", "apg")
NESTED_DROPOUT = ("none",) + token_drop.DISTRIBUTIONS


@dataclasses.dataclass(kw_only=True)
class FlexTokConfig(ModelConfigBase):
  """A FlexTok tokenizer (arXiv 2502.13967).

  Attributes:
    front_end: "identity": the encoder patchifies the images themselves (pixels mapped from
      [0, 1] to [-1, 1], `channels` = 3; the CPU default); "latent": the model works on
      front-end latents `[B, input_size, input_size, channels]` handed in directly (the
      released models' 16-channel f8 VAE latents; the VAE itself is not part of this class; a
      converted release that includes its VAE is "vae");
      "vae": images go through the frozen `AutoencoderKL` front end `vae` (scaled posterior
      means in, decoded pixels out), so `input_size` / `channels` are its latents' side and C.
    vae: the front end's `AutoencoderKLConfig` ("vae" only); None = read it from
      `vae_checkpoint`.
    vae_checkpoint: directory of the front end's weights ("vae" only): a jaxtok "vae"
      checkpoint (the stage-0 trainer's `export/`) or a diffusers AutoencoderKL directory. A
      model built from this config starts with those weights, holds them as its own `vae/...`
      parameters (the trainer freezes them, `optim.frozen`), and records "" here in its own
      `config`, so its checkpoints load without the directory.
    input_size: side of the square array the encoder patchifies (pixels or latents).
    channels: its channels C.
    patch_size: p; grid g = input_size / p, P = g*g patch tokens.
    enc_width, enc_depth, enc_head_dim: encoder transformer (heads = width / head_dim).
    dec_width, dec_depth, dec_head_dim: decoder transformer.
    mlp_ratio: SwiGLU hidden = int(2 * int(width * mlp_ratio) / 3).
    num_registers: R, tokens per image (every prefix 1..R decodes).
    levels: FSQ levels (prod = vocabulary size; [8, 8, 8, 5, 5, 5] = 64,000).
    enc_mask: "causal_last" (registers see all patches and earlier registers) or "full".
    adaln_expansion: 2 = separate adaLN modulation for patches and registers
      (`per_subseq_embs`), 1 = one modulation for all tokens.
    max_timestep: timestep scale; sinusoid frequencies are (1000 / max_timestep) * ... [inferred
      1.0].
    time_freq_size, time_max_period: sinusoid features (256) and their max period (256).
    null_cond: "learned" (one learned vector, `LearnedNullCond`) or "zero" (`ZeroNullCond`).
    nested_dropout: training keep-length distribution of the registers ("none" keeps all),
      one of `token_drop.DISTRIBUTIONS` ("pow2" [inferred] for the released models).
    cond_dropout_p: training probability that an image's conditions are all replaced by the
      null condition (classifier-free guidance training).
    drop_quant_p: training probability, per image, of skipping the FSQ rounding (the bounded
      continuous values go to the decoder).
    token_corruption_p: training probability, per token, of replacing its FSQ code by a
      uniformly random code.
    noise_mean, noise_std: logit-normal timestep sampling, t = sigmoid(N(mean, std^2)).
    sample_steps: default Euler steps of `decode_tokens`.
    guidance: default guidance of `decode_tokens`: "none", "cfg" or "apg" (arXiv 2410.02416).
    guidance_scale: default guidance scale (guidance is off at 1.0).
    apg_momentum, apg_eta, apg_norm_threshold: APG constants (the official pipeline's -0.5,
      0.0, 2.5).
    skip_data_std: None (the official decoder) or sigma_d > 0: the decoder adds
      c_skip(t) * x_t to its output, c_skip(t) = (t - (1 - t) sigma_d^2) / (t^2 + (1 - t)^2
      sigma_d^2), the least-squares coefficient of the velocity target on x_t for data of
      std sigma_d (EDM-style preconditioning, arXiv 2206.00364, for rectified flow; ours,
      not FlexTok's). The network then predicts only the residual: at t = 1 it is -x0, which
      only the registers can tell, so a small decoder need not learn to copy the noise.
    init_std: init only: trunc-normal std of the kernels (0.02, as the official code), None
      -> LeCun fan-in scaling (small widths).
    scan_unroll: `lax.scan` unroll of the block loops (speed knob; same numbers).
    repa_layer: REPA (arXiv 2410.06940): the decoder's patch states after block `repa_layer`
      (1..dec_depth) go through a trainable projector (`jaxtok.tokenizers.repa`) into
      `aux["repa_features"]` in training, for the trainer's alignment loss
      (`loss.repa_weight`, `loss.repa_teacher`); None = no projector.
    repa_width: the projector's hidden width (REPA: 2048).
    repa_dim: its output width = the teacher's feature width (e.g. 768 for DINOv2-B).
    spatial_registers: a coarse-to-fine locality prior for small data (ours, not FlexTok's;
      off in the published variants): register i is tied to the region i of the quadtree
      `titok_config.spatial_regions(R, grid, "coarse_to_fine")` (register 0 the whole image,
      1-3 the other quadrants, then blocks of a quarter side, ...; R = n * n, n a power of
      two dividing the patch grid). In the encoder each register's input also gets the mean
      patch token (embedding + sin-cos) of its region; in the decoder each noised-patch
      token also gets the sum of the kept (not nested-dropped, not null) register conditions
      whose regions cover it. Prefixes stay exact: register i's input depends on the image
      only, and a dropped register adds nothing.
  """
  front_end: str = "identity"
  input_size: int = 256
  channels: int = 3
  patch_size: int = 16
  enc_width: int = 768
  enc_depth: int = 12
  enc_head_dim: int = 64
  dec_width: int = 768
  dec_depth: int = 12
  dec_head_dim: int = 64
  mlp_ratio: float = 4.0
  num_registers: int = 256
  levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)
  enc_mask: str = "causal_last"
  adaln_expansion: int = 2
  max_timestep: float = 1.0
  time_freq_size: int = 256
  time_max_period: float = 256.0
  null_cond: str = "learned"
  nested_dropout: str = "pow2"
  cond_dropout_p: float = 0.1
  drop_quant_p: float = 0.0
  token_corruption_p: float = 0.0
  noise_mean: float = 0.0
  noise_std: float = 1.0
  sample_steps: int = 20
  guidance: str = "apg"
  guidance_scale: float = 7.5
  apg_momentum: float = -0.5
  apg_eta: float = 0.0
  apg_norm_threshold: float = 2.5
  skip_data_std: float | None = None
  init_std: float | None = 0.02
  scan_unroll: int = 1
  vae: AutoencoderKLConfig | None = None
  vae_checkpoint: str = ""
  repa_layer: int | None = None
  repa_width: int = 2048
  repa_dim: int = 768
  spatial_registers: bool = False

  def __post_init__(self):
    self.levels = tuple(int(v) for v in self.levels)
    if isinstance(self.vae, dict):
      self.vae = AutoencoderKLConfig.from_dict(self.vae)
    if self.front_end == "vae" and self.vae is None and self.vae_checkpoint:
      self.vae = load_config(self.vae_checkpoint)
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first inconsistent field."""
    def need(cond, name, expected):
      if not cond:
        raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")
    need(self.front_end in FRONT_ENDS, "front_end", f"one of {FRONT_ENDS}")
    need(self.front_end != "identity" or self.channels == 3, "channels",
         "3 for the identity (pixel) front end")
    if self.front_end == "vae":
      need(self.vae is not None, "vae", "an AutoencoderKLConfig (or a vae_checkpoint) for "
           "front_end='vae'")
      need(self.channels == self.vae.latent_channels, "channels",
           f"the VAE's latent_channels={self.vae.latent_channels}")
    else:
      need(self.vae is None and not self.vae_checkpoint, "vae",
           "None (and vae_checkpoint '') unless front_end='vae'")
    need(self.patch_size > 0 and self.input_size % self.patch_size == 0, "patch_size",
         f"a positive divisor of input_size={self.input_size}")
    for pre in ("enc", "dec"):
      w, hd = getattr(self, f"{pre}_width"), getattr(self, f"{pre}_head_dim")
      need(hd > 0 and w % hd == 0, f"{pre}_head_dim", f"a divisor of {pre}_width={w}")
      need(w % 4 == 0, f"{pre}_width", "a multiple of 4 (2-D sin-cos position embedding)")
      need(getattr(self, f"{pre}_depth") >= 1, f"{pre}_depth", ">= 1")
    need(self.num_registers >= 1, "num_registers", ">= 1")
    need(len(self.levels) >= 1 and min(self.levels) >= 2, "levels", "a list of ints >= 2")
    need(self.enc_mask in MASKS, "enc_mask", f"one of {MASKS}")
    need(self.adaln_expansion in (1, 2), "adaln_expansion", "1 or 2")
    need(self.max_timestep > 0, "max_timestep", "> 0")
    need(self.time_freq_size >= 2 and self.time_freq_size % 2 == 0, "time_freq_size",
         "an even int >= 2")
    need(self.null_cond in NULL_CONDS, "null_cond", f"one of {NULL_CONDS}")
    need(self.nested_dropout in NESTED_DROPOUT, "nested_dropout", f"one of {NESTED_DROPOUT}")
    if self.nested_dropout == "pow2":
      need(self.num_registers & (self.num_registers - 1) == 0, "num_registers",
           "a power of two for nested_dropout='pow2'")
    for p in ("cond_dropout_p", "drop_quant_p", "token_corruption_p"):
      need(0.0 <= getattr(self, p) <= 1.0, p, "a probability in [0, 1]")
    need(self.noise_std > 0, "noise_std", "> 0")
    need(self.sample_steps >= 1, "sample_steps", ">= 1")
    need(self.guidance in GUIDANCE, "guidance", f"one of {GUIDANCE}")
    need(self.skip_data_std is None or self.skip_data_std > 0, "skip_data_std", "None or > 0")
    need(self.init_std is None or self.init_std > 0, "init_std", "None or > 0")
    need(self.repa_layer is None or 1 <= self.repa_layer <= self.dec_depth, "repa_layer",
         f"None or a decoder block in 1..dec_depth={self.dec_depth}")
    need(self.repa_width >= 1, "repa_width", ">= 1")
    need(self.repa_dim >= 1, "repa_dim", ">= 1")
    if self.spatial_registers:
      need(spatial_regions(self.num_registers, self.grid, "coarse_to_fine") is not None,
           "num_registers", f"n * n registers, n a power of two dividing the patch grid "
           f"{self.grid} (e.g. {self.grid ** 2}), for spatial_registers")

  # ---- derived sizes ----
  @property
  def image_size(self) -> int:
    """Side of the images the model takes (the trainer's data resolution): `input_size` (the
    identity front end; for "latent" the side of the latents handed in), `input_size` x the
    VAE's downsampling factor for "vae"."""
    if self.front_end == "vae":
      return self.input_size * self.vae.downsample_factor
    return self.input_size

  @property
  def grid(self) -> int:
    return self.input_size // self.patch_size

  @property
  def num_patches(self) -> int:
    return self.grid ** 2

  @property
  def enc_heads(self) -> int:
    return self.enc_width // self.enc_head_dim

  @property
  def dec_heads(self) -> int:
    return self.dec_width // self.dec_head_dim

  @property
  def code_dim(self) -> int:
    return len(self.levels)

  @property
  def patch_features(self) -> int:
    return self.patch_size ** 2 * self.channels



def mup_attention_scale(head_dim: int) -> float:
  """FlexTok's softmax scale 8 / head_dim (muP form, arXiv 2203.03466; = head_dim^-0.5 only at
  head_dim 64)."""
  return 8.0 / head_dim
