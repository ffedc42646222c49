r"""FlexTok training configs (arXiv 2502.13967): rectified-flow decoder, nested dropout.

  # CPU: tiny FlexTok in pixel space on the bundled photos, 2000 steps of 32: 570 s on 2 idle
  # cores, held-out one-step PSNR 13.01 dB at 1 token -> 15.33 dB at 64 (docs/experiments.md).
  python -m jaxtok.trainers.train --config jaxtok/configs/flextok.py:tiny --workdir runs/ft
  # One training step with tiny sizes (test suite):
  python -m jaxtok.trainers.train --config jaxtok/configs/flextok.py:smoke --workdir /tmp/s
  # Published sizes (d12-d12, d18-d18, d18-d28) over front-end latents:
  python -m jaxtok.trainers.train --config jaxtok/configs/flextok.py:variant=d18-d28 \
      --workdir runs/ft_d18_d28
  # Two-stage recipe: stage 0 trains the VAE (jaxtok/configs/vae.py), stage 1 FlexTok over its
  # frozen latents (any config above plus vae=DIR: a jaxtok "vae" export or a diffusers dir):
  python -m jaxtok.trainers.train --config jaxtok/configs/vae.py:tiny --workdir runs/vae
  python -m jaxtok.trainers.train --config jaxtok/configs/flextok.py:tiny,vae=runs/vae/export \
      --workdir runs/ft_vae
  # + REPA (arXiv 2410.06940) on the decoder, DINOv2-B weights from disk (a Hugging Face
  # model directory with config.json + model.safetensors):
  python -m jaxtok.trainers.train --config jaxtok/configs/flextok.py:variant=d18-d28,repa \
      --config.loss.repa_teacher=dinov2:/path/to/dinov2-base --workdir runs/ft_repa
  # The same at smoke / tiny size with the offline Inception stand-in teacher:
  python -m jaxtok.trainers.train --config jaxtok/configs/flextok.py:smoke,repa --workdir /tmp/r

The objective is the rectified-flow velocity MSE (`aux["losses"]["flow"]`); the pixel
reconstruction, perceptual and GAN terms are off (FlexTok trains its decoder as a flow only).
Nested dropout (`model.nested_dropout`, "pow2") and condition dropout for guidance
(`model.cond_dropout_p`) are model options. The official training recipe is unreleased
(apple/ml-flextok is inference-only); the published-size settings here (AdamW lr 1e-4, wd
0.05, EMA 0.9999, batch 256) are ours, not the paper's.

`repa` adds REPA's alignment loss (`loss.repa_weight`, 0.5 as REPA): a Linear-SiLU-Linear-
SiLU-Linear projector on the decoder's patch states after block `model.repa_layer` (REPA
aligns after block 8 of SiT-XL's 28; here a third of the decoder depth, at least 1) against
the frozen teacher's patch features by negative cosine similarity, the teacher's patch grid
resized to the decoder's (`jaxtok.trainers.losses.resize_patch_grid`). Published sizes:
2048-wide projector to 768 (DINOv2-B, REPA's teacher), whose weights the user names with
`--config.loss.repa_teacher=dinov2:<dir>` (`jaxtok.nets.teachers.build_teacher`); tiny /
smoke: the offline FID Inception stand-in after `mixed_2` (288 wide) at a reduced input size.
"""
from __future__ import annotations

import dataclasses

from jaxtok.configs.common import bundled_tiny, finetune
from jaxtok.tokenizers import get_family
from jaxtok.tokenizers.flextok.config import FlexTokConfig
from jaxtok.tokenizers.vae.config import load_config
from jaxtok.trainers.config import TrainConfig, parse_arg, smoke


def _flow_objective(config: TrainConfig) -> TrainConfig:
  config.recipe = "single"
  config.loss.reconstruction_weight = 0.0
  config.loss.perceptual_weight = 0.0
  config.loss.gan_weight = 0.0
  config.loss.quantizer_weight = 0.0  # FSQ has no auxiliary loss.
  return config


def tiny(config: TrainConfig) -> TrainConfig:
  """Pixel-space tiny model (`flextok:tiny`: coarse-to-fine register prior, velocity skip,
  high-noise t, one-step decode) on the bundled photos; 2000 steps of 32."""
  config = bundled_tiny(config, "flextok")
  config.batch_size = 32
  config.total_steps = 2000
  config.checkpoint_every, config.grid_every = 1000, 1000
  return _flow_objective(config)


def published(config: TrainConfig, variant: str) -> TrainConfig:
  config.name = f"flextok_{variant}"
  config.family, config.model = "flextok", get_family("flextok").variant(variant)
  config.batch_size = 256
  config.total_steps = 1_000_000
  config.optim.lr, config.optim.end_lr, config.optim.weight_decay = 1e-4, 1e-5, 0.05
  config.optim.warmup_steps = 10_000
  config.optim.grad_clip = 1.0
  config.optim.ema_decay = 0.9999
  return _flow_objective(config)


def on_vae(config: TrainConfig, directory: str) -> TrainConfig:
  """Stage 1 of the two-stage recipe: the model over the frozen VAE front end in `directory`.

  The FlexTok encoder patchifies the VAE's latents of `vae.image_size` images: 2 x 2 patches
  (the released models') on grids of 16 and more, 1 x 1 on the CPU-sized grids. The VAE's
  parameters (`vae/...`) are frozen; the objective stays the flow loss.
  """
  vae = load_config(directory)
  patch = 2 if vae.latent_size >= 16 else 1
  config.model = FlexTokConfig.from_dict({
      **config.model.to_dict(), "front_end": "vae", "vae": None, "vae_checkpoint": directory,
      "input_size": vae.latent_size, "channels": vae.latent_channels, "patch_size": patch})
  config.optim.frozen = (*config.optim.frozen, r"^vae/")
  config.name += "_vae"
  return config


# REPA's offline stand-in teachers of the CPU sizes (FID Inception after `mixed_2`, 288 wide).
TINY_REPA_TEACHER = "inception:mixed_2:128"
SMOKE_REPA_TEACHER = "inception:mixed_2:75"


def with_repa(config: TrainConfig, teacher: str, *, width: int, dim: int) -> TrainConfig:
  """REPA on: projector (`width` hidden, `dim` out) after a third of the decoder's blocks."""
  config.model = dataclasses.replace(config.model,
                                     repa_layer=max(1, config.model.dec_depth // 3),
                                     repa_width=width, repa_dim=dim)
  config.loss.repa_weight, config.loss.repa_teacher = 0.5, teacher
  config.name += "_repa"
  return config


def get_config(arg: str | None = None) -> TrainConfig:
  """`arg`: "tiny[,smoke]", "smoke" or "variant=d18-d28", each with an optional ",vae=DIR"
  (stage 1 over a trained VAE) and ",repa" (the REPA loss on); or "finetune[,smoke]" (with
  `--config.init_from=`)."""
  a = parse_arg(arg, variant="", tiny=False, smoke=False, vae="", repa=False, finetune=False)
  config = TrainConfig()
  if a["finetune"]:
    # The rectified-flow decoder on your images over the frozen encoder (its registers and
    # FSQ have no weights of their own) and the frozen VAE; no GAN, as FlexTok's training.
    return finetune(config, "flextok", (r"^encoder/", r"^vae/"), smoke_run=a["smoke"])
  config = published(config, a["variant"]) if a["variant"] else tiny(config)
  if a["smoke"]:
    config = smoke(config)
    config.model = get_family("flextok").variant("smoke")
    config.name += "_smoke"
  if a["vae"]:
    config = on_vae(config, a["vae"])
  if a["repa"]:
    if a["smoke"]:
      config = with_repa(config, SMOKE_REPA_TEACHER, width=64, dim=288)
    elif a["variant"]:  # The teacher's weights are the user's: --config.loss.repa_teacher.
      config = with_repa(config, "", width=2048, dim=768)
    else:
      config = with_repa(config, TINY_REPA_TEACHER, width=256, dim=288)
  return config
