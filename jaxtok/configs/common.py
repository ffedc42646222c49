"""Pieces shared by the config files: the `tiny` CPU run on the bundled photos, the `smoke`
model of a variant and the `finetune` recipe (docs/design.md §6).

The experiment config classes themselves belong to the trainer (`jaxtok.trainers.config`);
config files import them and return instances. Nothing in jaxtok imports `jaxtok/configs/`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from jaxtok.tokenizers import get_family
from jaxtok.tokenizers.maskgit_vqgan import MaskGITConfig
from jaxtok.trainers.config import ModelConfig, TrainConfig, smoke


def bundled_tiny(config: TrainConfig, family: str) -> TrainConfig:
  """The settings every family's `tiny` run shares: `family`'s `tiny` variant on the bundled
  photos (8 held-out images), crops of 30-100 % of the shorter side, batch 16 for 1500 steps,
  lr 1e-3 -> 1e-4 after 100 warm-up steps, EMA 0.99, a checkpoint and grid every 500 steps.
  Config files change what their family needs on top (loss, batch, betas)."""
  config.name = f"{family}_tiny"
  config.recipe = "single"
  config.family, config.model = family, get_family(family).variant("tiny")
  config.data.source = config.data.eval_source = "bundled"
  config.data.num_eval_images = 8
  config.data.crop_scale = (0.3, 1.0)
  config.batch_size = 16
  config.total_steps = 1500
  config.optim.lr, config.optim.end_lr = 1e-3, 1e-4
  config.optim.warmup_steps = 100
  config.optim.b2 = 0.99
  config.optim.weight_decay = 1e-4
  config.optim.ema_decay = 0.99
  config.log_every, config.checkpoint_every, config.grid_every = 50, 500, 500
  config.keep_checkpoints = 2
  return config


# The size fields a smoke model takes from its family's registered `smoke` variant (and
# `spatial_latents`, which depends on the token count and grid); the variant's structure
# (head, projection, quantizer, tail-token-drop) is kept.
SMOKE_SIZE_FIELDS = ("image_size", "enc_patch_size", "dec_patch_size", "enc_width",
                     "enc_depth", "enc_heads", "dec_width", "dec_depth", "dec_heads",
                     "num_latent_tokens", "token_size", "codebook_size", "spatial_latents")


def smoke_model(family: str, model: ModelConfig) -> ModelConfig:
  """`model` at the sizes of `family`'s `smoke` variant (32 px, seconds a step on CPU).

  A two-stage head gets a small MaskGIT pixel decoder whose downsampling factor equals the
  decoder patch size (the head decodes a g x g code map, g = image_size / dec_patch_size).
  """
  small = get_family(family).variant("smoke")
  sizes = {name: getattr(small, name) for name in SMOKE_SIZE_FIELDS}
  if model.head != "two_stage":
    return dataclasses.replace(model, **sizes)
  levels = sizes["dec_patch_size"].bit_length()  # 2 ** (levels - 1) = dec_patch_size.
  decoder = MaskGITConfig(hidden_channels=32, channel_mult=(1,) * (levels - 1) + (2,),
                          num_res_blocks=1, z_channels=16, codebook_size=32)
  return dataclasses.replace(model, **sizes, pixel_codebook_size=32, pixel_decoder=decoder)


def finetune(config: TrainConfig, family: str, frozen: tuple[str, ...], *,
             smoke_run: bool = False, **loss: Any) -> TrainConfig:
  """Fine-tune a released tokenizer (or any checkpoint) on your images (`,finetune`).

  The model is the one `--config.init_from` names (`model_from_init`: `hf:` released
  weights, a jaxtok checkpoint or an official file), kept as it is. `frozen` (the encoder and
  the quantizer) does not move, so every token id keeps its meaning and generators trained on
  the released tokens stay valid; the decoder adapts to the new images. AdamW at lr 5e-5
  (1000 warm-up steps, cosine to 5e-6), EMA 0.999, batch 32, 20k steps; with `gan_weight`,
  a discriminator trained from scratch (no release ships one) for 2000 steps before its hinge
  loss reaches the decoder at step 5000, as the official schedules start theirs late. The
  data is yours: `--config.data.source=folder:PATH` (or `wds:`, `hf:`, `tfds:`). `loss` sets
  the family's `LossConfig` fields on top; `smoke_run`: a one-step CPU run (the tests).
  """
  config.name = f"{family}_finetune"
  config.family = family
  config.recipe = "single"
  config.model_from_init = True
  config.optim.frozen = frozen
  config.optim.lr, config.optim.end_lr, config.optim.warmup_steps = 5e-5, 5e-6, 1000
  config.optim.ema_decay = 0.999
  config.optim.grad_clip = 1.0
  config.batch_size = 32
  config.total_steps = 20_000
  config.log_every, config.checkpoint_every, config.grid_every = 50, 2000, 1000
  config.loss.quantizer_weight = 0.0  # The quantizer is frozen.
  config.loss.gan_start_step, config.loss.disc_warmup_steps = 5000, 2000
  config.loss = dataclasses.replace(config.loss, **{"gan_weight": 0.0, **loss})
  if smoke_run:
    config = smoke(config)
    config.name += "_smoke"
  return config
