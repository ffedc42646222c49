r"""FlexTok training configs (arXiv 2502.13967): rectified-flow decoder, nested dropout.

  # CPU: tiny FlexTok in pixel space on the bundled photos (~10 min on 2 cores).
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

The objective is the rectified-flow velocity MSE (`aux["flow_loss"]`); the pixel
reconstruction, perceptual and GAN terms are off (FlexTok trains its decoder as a flow only).
Nested dropout (`model.nested_dropout`, "pow2") and condition dropout for guidance
(`model.cond_dropout_p`) are model options. The official training recipe is unreleased
(apple/ml-flextok is inference-only); the published-size settings here (AdamW lr 1e-4, wd
0.05, EMA 0.9999, batch 256) are ours, not the paper's.
"""
from __future__ import annotations

from jaxtok.configs.common import bundled_tiny
from jaxtok.tokenizers import get_family
from jaxtok.tokenizers.flextok_config import FlexTokConfig
from jaxtok.tokenizers.vae_config import load_config
from jaxtok.trainers.config import TrainConfig, parse_arg, smoke


def _flow_objective(config: TrainConfig) -> TrainConfig:
  config.recipe = "single"
  config.loss.reconstruction_weight = 0.0
  config.loss.perceptual_weight = 0.0
  config.loss.gan_weight = 0.0
  config.loss.quantizer_weight = 0.0  # FSQ has no auxiliary loss.
  return config


def tiny(config: TrainConfig) -> TrainConfig:
  """Pixel-space tiny model on the bundled photos, for ~10 min on 2 CPU cores."""
  config = bundled_tiny(config, "flextok")
  config.batch_size = 32
  config.total_steps = 1800  # ~10 min at ~3 steps/s on 2 loaded cores
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


def get_config(arg: str | None = None) -> TrainConfig:
  """`arg`: "tiny[,smoke]", "smoke" or "variant=d18-d28", each with an optional ",vae=DIR"
  (stage 1 over a trained VAE)."""
  a = parse_arg(arg, variant="", tiny=False, smoke=False, vae="")
  config = TrainConfig()
  config = published(config, a["variant"]) if a["variant"] else tiny(config)
  if a["smoke"]:
    config = smoke(config)
    config.model = get_family("flextok").variant("smoke")
    config.name += "_smoke"
  if a["vae"]:
    config = on_vae(config, a["vae"])
  return config
