r"""TiTok training configs (arXiv 2406.07550): two-stage, single-stage and a CPU `tiny`.

Commands (one per variant):

  # README first command: tiny TiTok on the photos bundled with scikit-image/sklearn/
  # matplotlib, under 6 min on a 2-core CPU; prints held-out PSNR before/after + grid path.
  python -m jaxtok.trainers.train --config jaxtok/configs/titok.py:tiny --workdir runs/tiny

  # Two-stage recipe, stage 1: proxy-code cross-entropy against the frozen MaskGIT VQGAN.
  python -m jaxtok.trainers.train \
      --config jaxtok/configs/titok.py:variant=S-128,recipe=stage1 --workdir runs/s128_s1 \
      --config.data.source=tfds:imagenet2012 \
      --config.teacher=/path/to/maskgit-vqgan-imagenet-f16-256.bin
  # Stage 2: decoder fine-tuning (encoder + quantizer frozen) from the stage-1 export.
  python -m jaxtok.trainers.train \
      --config jaxtok/configs/titok.py:variant=S-128,recipe=stage2 --workdir runs/s128_s2 \
      --config.data.source=tfds:imagenet2012 --config.init_from=runs/s128_s1/export
  # Single-stage recipe (TA-TiTok style, pixels + perceptual + GAN), e.g. BL-64-VQ:
  python -m jaxtok.trainers.train \
      --config jaxtok/configs/titok.py:variant=BL-64-VQ,recipe=single --workdir runs/bl64

  # Any of them with `,smoke` trains one step on CPU with tiny sizes (the test suite):
  python -m jaxtok.trainers.train --config jaxtok/configs/titok.py:variant=S-128,smoke \
      --workdir /tmp/smoke

Numbers come from the official configs (bytedance/1d-tokenizer configs/training/
stage1|stage2/titok_*.yaml, TA-TiTok/tatitok_bl64_vq.yaml): AdamW lr 1e-4, wd 1e-4,
cosine to 1e-5, clip 1.0, EMA, 32 images/GPU x 8 GPUs = 256; stage 1: 1M steps, 10k warmup,
betas (0.9, 0.99); stage 2: 500k steps, 5k warmup, betas (0.9, 0.999), l2 + perceptual 0.1,
GAN weight 0.01 from step 20k, LeCam 0.001, no quantizer loss; single-stage: 650k steps,
perceptual 1.1, GAN 0.1 from step 200k, quantizer 1.0. The official perceptual network
(LPIPS + ConvNeXt-S) is not redistributable here: pass `--config.loss.perceptual=lpips:PATH`
(weights file) or `inception` (offline); it is off by default.

The model is `jaxtok.tokenizers.get_family("titok").variant(name)`; any of its typed fields can
be changed on the command line, e.g. `--config.model.codebook_size=2048`.
"""
from __future__ import annotations

from jaxtok.configs.common import bundled_tiny, finetune, smoke_model
from jaxtok.tokenizers import get_family
from jaxtok.trainers.config import TrainConfig, parse_arg, smoke

# Frozen parameters of TiTok stage 2 (official `finetune_decoder=True`): encoder, latent
# tokens and the VQ codebook; the ViT decoder and the MaskGIT pixel decoder train.
STAGE2_FROZEN = (r"^encoder/", r"^quantize/", r"^latent_tokens")
# Stage 1 trains only up to the proxy-code logits; the pixel path is unused.
STAGE1_FROZEN = (r"^pixel_decoder/", r"^pixel_codebook")


def official(config: TrainConfig, recipe: str) -> TrainConfig:
  """The official TiTok optimisation/loss settings of `recipe`."""
  config.recipe = recipe
  config.batch_size = 256
  config.data.source = "tfds:imagenet2012"
  config.data.eval_source = "tfds:imagenet2012:validation"
  config.data.crop_scale = (1.0, 1.0)  # resize shorter side + random crop, random flip.
  config.optim.lr, config.optim.end_lr, config.optim.weight_decay = 1e-4, 1e-5, 1e-4
  config.optim.grad_clip = 1.0
  config.optim.ema_decay = 0.999
  config.log_every, config.checkpoint_every = 50, 50_000
  config.grid_every, config.eval_every = 5_000, 50_000
  if recipe == "stage1":
    config.total_steps, config.optim.warmup_steps, config.optim.b2 = 1_000_000, 10_000, 0.99
    config.loss.quantizer_weight = 1.0
    config.optim.frozen = STAGE1_FROZEN
  elif recipe == "stage2":
    config.total_steps, config.optim.warmup_steps, config.optim.b2 = 500_000, 5_000, 0.999
    config.loss.reconstruction_loss, config.loss.reconstruction_weight = "l2", 1.0
    config.loss.quantizer_weight = 0.0
    config.loss.perceptual_weight = 0.1
    config.loss.gan_weight, config.loss.gan_start_step = 0.01, 20_000
    config.loss.lecam_weight = 0.001
    config.optim.disc_lr = 1e-4
    config.optim.frozen = STAGE2_FROZEN
  elif recipe == "single":
    config.total_steps, config.optim.warmup_steps, config.optim.b2 = 650_000, 10_000, 0.999
    config.loss.reconstruction_loss, config.loss.quantizer_weight = "l2", 1.0
    config.loss.perceptual_weight = 1.1
    config.loss.gan_weight, config.loss.gan_start_step = 0.1, 200_000
    config.loss.lecam_weight = 0.001
  else:
    raise ValueError(f"recipe: expected 'stage1', 'stage2' or 'single', got {recipe!r}")
  return config


def tiny(config: TrainConfig, family: str = "titok") -> TrainConfig:
  """Single-stage tiny model on the bundled photos, tuned for ~6 min on 2 CPU cores.

  The `tiny` model variant brings the init, the 30-bit FSQ tokens and the locality prior.
  Colour jitter 0.5 because the 18 training photos lean red (retina, ihc, coffee-coloured
  scenes) and tint the held-out reconstructions without it; crops of 60-100 % of the shorter
  side and lr 2e-3: held-out 21.17 dB (the runs behind each choice: docs/experiments.md).
  """
  config = bundled_tiny(config, family)
  config.loss.reconstruction_loss, config.loss.quantizer_weight = "l2", 1.0
  config.data.color_jitter = 0.5
  config.data.crop_scale = (0.6, 1.0)
  config.optim.lr = 2e-3
  config.total_steps = 2000  # 229 s of training on 2 idle cores (~9 steps/s), fresh clone.
  return config


def make_smoke(config: TrainConfig) -> TrainConfig:
  """`smoke` run settings and the family's smoke sizes (stage 1 gets a random teacher)."""
  config = smoke(config)
  config.model = smoke_model(config.family, config.model)
  if config.recipe == "stage1":
    config.teacher = "random"
  config.name += "_smoke"
  return config


def finetune_titok(config: TrainConfig, family: str, smoke_run: bool) -> TrainConfig:
  """`,finetune` (`configs.common.finetune`): the decoder (and a two-stage model's MaskGIT
  pixel decoder) on your images, l2 + the GAN (0.1, as TiTok's single stage) over the frozen
  encoder, latent tokens and codebook (`STAGE2_FROZEN`, the official stage 2's)."""
  return finetune(config, family, STAGE2_FROZEN, smoke_run=smoke_run, gan_weight=0.1,
                  reconstruction_loss="l2", lecam_weight=0.001)


def get_config(arg: str | None = None) -> TrainConfig:
  """`arg`: "tiny[,smoke]", "variant=S-128,recipe=stage1[,smoke]" or "finetune[,smoke]"
  (with `--config.init_from=`)."""
  a = parse_arg(arg, variant="S-128", recipe="", tiny=False, smoke=False, finetune=False)
  config = TrainConfig()
  if a["finetune"]:
    return finetune_titok(config, "titok", a["smoke"])
  if a["tiny"]:
    config = tiny(config)
  else:
    variant = a["variant"]
    config.family, config.model = "titok", get_family("titok").variant(variant)
    two_stage = config.model.head == "two_stage"
    recipe = a["recipe"] or ("stage1" if two_stage else "single")
    if recipe in ("stage1", "stage2") and not two_stage:
      raise ValueError(f"recipe: {recipe!r} needs a two-stage variant (S-128, B-64, L-32), "
                       f"got {variant!r}")
    config.name = f"titok_{variant}_{recipe}"
    config = official(config, recipe)
  if a["smoke"]:
    config = make_smoke(config)
  return config
