r"""FQGAN training configs (arXiv 2411.16681; showlab/FQGAN `train_fqgan_{dual,triple}.sh`).

  python -m jaxtok.trainers.train --config jaxtok/configs/fqgan.py:variant=dual-16 \
      --workdir runs/fqgan_dual16
  # CPU: FQGAN-Dual tiny on the bundled photos (~10 min on 2 cores).
  python -m jaxtok.trainers.train --config jaxtok/configs/fqgan.py:tiny --workdir runs/fqgan
  # One training step with tiny sizes (test suite):
  python -m jaxtok.trainers.train --config jaxtok/configs/fqgan.py:smoke --workdir /tmp/s
  # The single-codebook VQGAN with tiny's bits per position (one 2^18-code codebook for
  # Dual's 2 x 512; no semantic branch), for the factorization comparison (README):
  python -m jaxtok.trainers.train --config jaxtok/configs/fqgan.py:tiny,single --workdir runs/vq

Evaluators (`config.evaluators`, run every `eval_every` steps and at the end on the EMA
weights over `data.eval_source`): tiny logs `eval/recon/{psnr,ssim}` and the codebook
statistics per branch, `eval/codebook/factor/<branch>/{usage,perplexity,entropy_bits,
dead_codes}` (a single codebook: `eval/codebook/{usage,...}`); the official configs add rFID
(`eval/fid/rfid`) over the whole validation split (held in memory: 50k ImageNet images at
256^2 are ~10 GB per host; cap it with `--config.data.eval_source=folder:DIR`).

Official recipe: loss = 1.0 L2 + 1.0 LPIPS + 0.5 PatchGAN hinge (from step 20,000) + per
branch codebook + commitment (beta 0.25) + entropy (0.03, T 0.01) + 0.1 disentanglement
(the model's `aux["losses"]["quantizer"]`) + 0.5 semantic alignment per teacher; Adam lr 2e-4,
betas (0.9, 0.95), no weight decay, gradient clipping 1.0, bf16 compute, global batch 256, ImageNet
256^2 random crop + flip, ~200k steps (dual-16: 40 epochs at batch 256 ~ 200k).

The semantic term: each semantic branch's feature head predicts a CLS feature aligned to a
frozen teacher's CLS (`config.loss.semantic_teacher`, one per branch) with in-batch InfoNCE,
weighted `config.loss.semantic_weight` (0.5) per teacher; negatives are the global batch
(`--config.loss.semantic_negatives=device` for the official per-device ones). The official
recipe names the released teachers (CLIP ViT-L/14 for Dual; DINOv2-S/14 and CLIP ViT-B/16
for Triple; Flax ports in `jaxtok.nets.vit`) by their Hugging Face names, found in the local
Hugging Face cache; weights elsewhere on disk are named by directory, e.g.
`--config.loss.semantic_teacher=sem=clip:/data/clip-vit-large-patch14` (Triple:
`sem_mid=dinov2:DIR,sem_high=clip:DIR`). Nothing is downloaded. The offline FID Inception
stand-in ("inception", 2048 wide; "inception:<block>[:<size>]") fits heads of its width only.
`tiny` / `smoke` use "inception:mixed_2" (288 wide, the width their heads are sized for) at a
reduced input size. LPIPS needs user-provided weights (`--config.loss.perceptual=lpips:PATH`).
The L2 term is on [0, 1] images (the official one is on [-1, 1], 4x larger).
"""
from __future__ import annotations

from jaxtok.configs.common import bundled_tiny, finetune
from jaxtok.tokenizers import get_family
from jaxtok.tokenizers.fqgan.variants import single_codebook
from jaxtok.trainers.config import TrainConfig, parse_arg, smoke

# The offline stand-in teacher of the CPU variants: FID Inception after `mixed_2` (288 wide,
# the tiny / smoke feature-head width) on 128^2 / 75^2 inputs instead of 299^2.
TINY_TEACHER = "inception:mixed_2:128"
SMOKE_TEACHER = "inception:mixed_2:75"
# `config.evaluators` (jaxtok.eval.evaluators): reconstruction metrics and the per-branch
# codebook statistics; the official runs add rFID (the paper's headline metric).
TINY_EVALUATORS = ("psnr", "ssim", "codebook")
OFFICIAL_EVALUATORS = ("psnr", "ssim", "fid", "codebook")


def official(config: TrainConfig, variant: str) -> TrainConfig:
  """The official FQGAN optimisation / loss settings for a released variant."""
  config.name = f"fqgan_{variant}"
  config.family, config.model = "fqgan", get_family("fqgan").variant(variant)
  config.recipe = "single"
  config.batch_size = 256
  config.total_steps = 200_000
  config.dtype = "bfloat16"
  config.data.source = "tfds:imagenet2012"
  config.data.eval_source = "tfds:imagenet2012:validation"
  config.optim.lr, config.optim.end_lr = 2e-4, 2e-4
  config.optim.warmup_steps = 0
  config.optim.b1, config.optim.b2 = 0.9, 0.95
  config.optim.weight_decay = 0.0
  config.optim.grad_clip = 1.0
  config.optim.disc_lr, config.optim.disc_weight_decay = 2e-4, 0.0
  config.loss.reconstruction_loss, config.loss.reconstruction_weight = "l2", 1.0
  config.loss.quantizer_weight = 1.0
  config.loss.perceptual_weight = 1.0
  config.loss.gan_weight, config.loss.gan_start_step = 0.5, 20_000
  config.loss.lecam_weight = 0.0
  config.loss.semantic_weight = 0.5
  config.loss.semantic_teacher = ",".join(f"{b}={t}" for b, t in config.model.teachers().items())
  config.log_every, config.checkpoint_every = 100, 5_000
  config.grid_every, config.eval_every = 5_000, 50_000
  config.evaluators = OFFICIAL_EVALUATORS
  return config


def tiny(config: TrainConfig) -> TrainConfig:
  """FQGAN-Dual `tiny` on the bundled photos: pixel + quantizer + semantic (Inception
  stand-in teacher) losses, no GAN. The teacher costs ~50% more time per step (40 steps:
  93 s vs 61 s without, 2 loaded cores); `--config.loss.semantic_weight=0` drops it."""
  config = bundled_tiny(config, "fqgan")
  config.optim.b1, config.optim.b2 = 0.9, 0.95
  config.optim.weight_decay = 0.0
  config.loss.reconstruction_loss, config.loss.quantizer_weight = "l2", 1.0
  config.loss.semantic_weight, config.loss.semantic_teacher = 0.5, TINY_TEACHER
  config.evaluators, config.eval_every = TINY_EVALUATORS, config.grid_every
  return config


def single(config: TrainConfig) -> TrainConfig:
  """`config`'s model as the single-codebook VQGAN of the same bits per position
  (`fqgan_config.single_codebook`: one branch of K^k codes, no feature head), without the
  semantic term; everything else (optimiser, steps, data, evaluators) unchanged."""
  config.model = single_codebook(config.model)
  config.loss.semantic_weight, config.loss.semantic_teacher = 0.0, ""
  config.name += "_single"
  return config


def get_config(arg: str | None = None) -> TrainConfig:
  """`arg`: "variant=dual-16[,smoke]", "tiny[,single][,smoke]" or "smoke[,single]"
  (`single`: the same-bits single-codebook VQGAN; CPU sizes only), or "finetune[,smoke]" (with
  `--config.init_from=`)."""
  a = parse_arg(arg, variant="dual-16", tiny=False, smoke=False, single=False, finetune=False)
  config = TrainConfig()
  if a["finetune"]:
    # The pixel decoder on your images over the frozen encoder, codebooks and semantic
    # heads (no alignment loss: the tokens do not move); l2 + the GAN (0.5, FQGAN's weight).
    return finetune(config, "fqgan", (r"^encoder/", r"^quantize/", r"^feat_heads/"),
                    smoke_run=a["smoke"], gan_weight=0.5, reconstruction_loss="l2",
                    lecam_weight=0.0)
  if a["tiny"] or (a["smoke"] and "variant" not in arg):
    config = tiny(config)
  else:
    config = official(config, a["variant"])
  if a["smoke"]:
    config = smoke(config)
    config.model = get_family("fqgan").variant("smoke")
    config.dtype = "float32"
    config.loss.semantic_weight, config.loss.semantic_teacher = 0.5, SMOKE_TEACHER
    config.name += "_smoke"
  if a["single"]:
    config = single(config)
  return config
