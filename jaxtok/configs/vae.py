r"""AutoencoderKL training configs (family "vae"): L1 + perceptual + KL + (optional) GAN.

  # CPU: the tiny f8 VAE on the bundled photos (64 px -> 8 x 8 x 4 latents).
  python -m jaxtok.trainers.train --config jaxtok/configs/vae.py:tiny --workdir runs/vae
  # One training step with smoke sizes (test suite):
  python -m jaxtok.trainers.train --config jaxtok/configs/vae.py:smoke --workdir /tmp/s
  # A published layout (f8c4 = Stable Diffusion's, f8c16 = FLUX.1's), LPIPS weights on disk:
  python -m jaxtok.trainers.train --config jaxtok/configs/vae.py:variant=f8c16 \
      --workdir runs/vae_f8c16 --config.loss.perceptual=lpips:/path/vgg.pth,/path/lin.pth

The published-like recipe follows latent diffusion's KL-f8 autoencoder (arXiv 2112.10752, its
released `autoencoder_kl_*` configs): L1 pixel loss + LPIPS (weight 1) + KL (weight 1e-6,
through `loss.kl_weight`, which the trainer applies to `aux["losses"]["kl"]`) + a hinge
PatchGAN (weight 0.5) from step 50,001; Adam betas (0.5, 0.9) at lr 4.5e-6 x the global batch
(their `scale_lr`), constant. `tiny` and `smoke` drop the perceptual and GAN terms (no LPIPS
weights offline; `--config.loss.gan_weight=0.5` turns the GAN back on). Stage 0 of the FlexTok
two-stage recipe; stage 1 reads the export: `jaxtok/configs/flextok.py:vae=DIR`.
"""
from __future__ import annotations

from jaxtok.configs.common import bundled_tiny, finetune
from jaxtok.tokenizers import get_family
from jaxtok.trainers.config import TrainConfig, parse_arg, smoke

KL_WEIGHT = 1e-6  # latent diffusion's `kl_weight` for the f8 autoencoders.


def _objective(config: TrainConfig) -> TrainConfig:
  config.recipe = "single"
  config.loss.reconstruction_loss, config.loss.reconstruction_weight = "l1", 1.0
  config.loss.kl_weight = KL_WEIGHT  # Weights aux["losses"]["kl"] (the VAE has no codebook).
  return config


def published(config: TrainConfig, variant: str) -> TrainConfig:
  config.name = f"vae_{variant}"
  config.family, config.model = "vae", get_family("vae").variant(variant)
  config.batch_size = 96
  config.total_steps = 500_000
  config.optim.lr = config.optim.end_lr = 4.5e-6 * config.batch_size
  config.optim.warmup_steps = 0
  config.optim.b1, config.optim.b2 = 0.5, 0.9
  config.optim.weight_decay = 0.0
  config.optim.disc_lr, config.optim.disc_weight_decay = config.optim.lr, 0.0
  config.optim.ema_decay = 0.9999
  config.loss.perceptual, config.loss.perceptual_weight = "", 1.0  # lpips:PATH from the user.
  config.loss.gan_weight, config.loss.gan_start_step = 0.5, 50_001
  config.loss.lecam_weight = 0.0
  config.log_every, config.checkpoint_every, config.grid_every = 100, 5_000, 5_000
  return _objective(config)


def tiny(config: TrainConfig) -> TrainConfig:
  """The tiny f8 VAE on the bundled photos: L1 + KL."""
  config = bundled_tiny(config, "vae")
  config.optim.b1, config.optim.b2 = 0.5, 0.9
  config.optim.weight_decay = 0.0
  config.loss.perceptual_weight, config.loss.gan_weight = 0.0, 0.0
  return _objective(config)


def get_config(arg: str | None = None) -> TrainConfig:
  """`arg`: "tiny[,smoke]", "smoke", "variant=f8c16[,smoke]" or "finetune[,smoke]" (with
  `--config.init_from=`)."""
  a = parse_arg(arg, variant="", tiny=False, smoke=False, finetune=False)
  config = TrainConfig()
  if a["finetune"]:
    # The decoder on your images over the frozen encoder: the latent space stays the one a
    # FlexTok (or any latent model) was trained on. L1 + the GAN (0.5, the official weight).
    return finetune(config, "vae", (r"^encoder/", r"^quant_conv/"), smoke_run=a["smoke"],
                    gan_weight=0.5, reconstruction_loss="l1", lecam_weight=0.0)
  config = published(config, a["variant"]) if a["variant"] else tiny(config)
  if a["smoke"]:
    config = smoke(config)
    config.model = get_family("vae").variant("smoke")
    config.loss.perceptual = ""
    config.name += "_smoke"
  return config
