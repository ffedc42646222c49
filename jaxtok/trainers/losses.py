"""Training losses: reconstruction, perceptual, GAN (hinge + LeCam), quantizer, proxy codes.

All pure functions of arrays; every one computes in float32 whatever the input dtype (bf16
training keeps its losses in float32, docs/design.md §4). The combiners return
`(total, terms)` where `terms` names every contribution, so the trainer can say which term
went NaN (`nonfinite_terms`).

Recipes (TiTok, arXiv 2406.07550 and its released configs):
- stage 1 (two-stage recipe): cross-entropy of the decoder's proxy-code logits
  `[B, g, g, 1024]` against a frozen MaskGIT VQGAN's codes `[B, g, g]` + quantizer loss;
- stage 2 / single stage: weighted L1|L2 + perceptual + quantizer + (after a start step)
  a hinge GAN generator loss with TiTok's discriminator; the discriminator is trained with
  the hinge loss plus LeCam regularisation (Tseng et al., arXiv 2104.03310) on EMAs of the
  mean real/fake logits.
"""
# No `from __future__ import annotations`: config_flags reads LossConfig's field types.
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _f32(x) -> Array:
  return jnp.asarray(x).astype(jnp.float32)


def _same_shape(a, b, name_a: str, name_b: str) -> None:
  if a.shape != b.shape:
    raise ValueError(f"{name_b}: expected the shape of {name_a} {a.shape}, got {b.shape}")


# ----------------------------------------------------------------------------------------
# Reconstruction.
# ----------------------------------------------------------------------------------------
def l1_loss(target: Array, pred: Array) -> Array:
  """mean |target - pred| over every element (float32 scalar)."""
  _same_shape(target, pred, "target", "pred")
  return jnp.mean(jnp.abs(_f32(target) - _f32(pred)))


def l2_loss(target: Array, pred: Array) -> Array:
  """mean (target - pred)^2 over every element (float32 scalar); PyTorch's mse_loss."""
  _same_shape(target, pred, "target", "pred")
  return jnp.mean(jnp.square(_f32(target) - _f32(pred)))


RECONSTRUCTION_LOSSES = {"l1": l1_loss, "l2": l2_loss}


# ----------------------------------------------------------------------------------------
# Proxy codes (stage 1).
# ----------------------------------------------------------------------------------------
def proxy_code_cross_entropy(logits: Array, target_ids: Array, *,
                             label_smoothing: float = 0.0) -> Array:
  """Mean cross-entropy of proxy-code logits against target code ids.

  Args:
    logits: `[B, g, g, K]` (K = 1024 for MaskGIT's VQGAN) any float dtype.
    target_ids: `[B, g, g]` int, in [0, K).
    label_smoothing: eps of PyTorch's `CrossEntropyLoss(label_smoothing=eps)`: the target
      distribution is (1 - eps) one_hot + eps / K.

  Returns:
    float32 scalar, averaged over all B g g positions.
  """
  if logits.ndim < 2:
    raise ValueError(f"logits: expected [B, g, g, K], got shape {logits.shape}")
  if target_ids.shape != logits.shape[:-1]:
    raise ValueError(f"target_ids: expected shape {logits.shape[:-1]} (logits without the "
                     f"code axis), got {target_ids.shape}")
  if not jnp.issubdtype(target_ids.dtype, jnp.integer):
    raise ValueError(f"target_ids: expected integer ids, got dtype {target_ids.dtype}")
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing: expected in [0, 1), got {label_smoothing}")
  logp = jax.nn.log_softmax(_f32(logits), axis=-1)
  nll = -jnp.take_along_axis(logp, target_ids[..., None].astype(jnp.int32), axis=-1)[..., 0]
  if label_smoothing:
    smooth = -jnp.mean(logp, axis=-1)  # Cross-entropy against the uniform distribution.
    nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth
  return jnp.mean(nll)


# ----------------------------------------------------------------------------------------
# GAN.
# ----------------------------------------------------------------------------------------
def hinge_d_loss(logits_real: Array, logits_fake: Array) -> Array:
  """Discriminator hinge loss: 0.5 (mean relu(1 - real) + mean relu(1 + fake))."""
  return 0.5 * (jnp.mean(jax.nn.relu(1.0 - _f32(logits_real)))
                + jnp.mean(jax.nn.relu(1.0 + _f32(logits_fake))))


def hinge_g_loss(logits_fake: Array) -> Array:
  """Generator hinge loss: -mean(fake logits)."""
  return -jnp.mean(_f32(logits_fake))


class LeCamEMA(NamedTuple):
  """EMAs of the mean real and fake discriminator logits (float32 scalars)."""
  real: Array
  fake: Array

  @classmethod
  def zeros(cls) -> "LeCamEMA":
    # The reference starts both EMAs at 0.
    return cls(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))


def lecam_loss(real_mean: Array, fake_mean: Array, ema: LeCamEMA) -> Array:
  """LeCam regulariser (arXiv 2104.03310, as TiTok applies it to mean logits).

  relu(real_mean - ema.fake)^2 + relu(ema.real - fake_mean)^2.
  """
  return (jnp.square(jax.nn.relu(_f32(real_mean) - ema.fake))
          + jnp.square(jax.nn.relu(ema.real - _f32(fake_mean))))


def update_lecam_ema(ema: LeCamEMA, real_mean: Array, fake_mean: Array,
                     decay: float = 0.999) -> LeCamEMA:
  """ema <- decay ema + (1 - decay) value, for both; values are not differentiated."""
  real_mean = jax.lax.stop_gradient(_f32(real_mean))
  fake_mean = jax.lax.stop_gradient(_f32(fake_mean))
  return LeCamEMA(ema.real * decay + real_mean * (1.0 - decay),
                  ema.fake * decay + fake_mean * (1.0 - decay))


def gan_factor(step: Array | int, start: int, factor: float = 1.0) -> Array:
  """`factor` once `step >= start`, else 0 (float32; `step` may be traced)."""
  return jnp.where(jnp.asarray(step) >= start, jnp.float32(factor), jnp.float32(0.0))


# ----------------------------------------------------------------------------------------
# Semantic alignment (FQGAN).
# ----------------------------------------------------------------------------------------
SEMANTIC_NEGATIVES = ("global", "device")


def semantic_terms(weight: float, branch_losses: Mapping[str, Array]) -> dict[str, Array]:
  """`semantic_loss` = weight * sum_b branch_losses[b], and each branch's unweighted loss
  (`semantic_loss_<b>`, gradient stopped) for the logs."""
  if not branch_losses:
    raise ValueError("branch_losses: expected the alignment loss of at least one semantic "
                     "branch, got none")
  total = sum(_f32(v) for v in branch_losses.values())
  terms = {"semantic_loss": jnp.float32(weight) * total}
  terms.update({f"semantic_loss_{b}": jax.lax.stop_gradient(_f32(v))
                for b, v in branch_losses.items()})
  return terms


# ----------------------------------------------------------------------------------------
# Representation alignment (REPA, arXiv 2410.06940).
# ----------------------------------------------------------------------------------------
def _grid_side(n: int, name: str) -> int:
  side = math.isqrt(n)
  if side * side != n:
    raise ValueError(f"{name}: expected a square patch grid (N = side^2 patches), got N={n}")
  return side


def resize_patch_grid(features: Array, num_patches: int) -> Array:
  """Teacher patch features `[B, N, W]` on a square n x n grid -> `[B, P, W]` on the g x g
  grid of P = g^2 patches (row-major both).

  The grid is resized as an image with W channels, bilinear with half-pixel centres and
  antialiased when shrinking (the triangle filter widened by the scale, close to area
  averaging): `jax.image.resize(..., "linear", antialias=True)`, which equals PyTorch's
  `interpolate(mode="bilinear", align_corners=False, antialias=True)`. Each decoder patch is
  so aligned to the teacher features of the same image region. Unchanged when N == P.
  """
  b, n, w = features.shape
  if n == num_patches:
    return features
  src, dst = _grid_side(n, "features"), _grid_side(num_patches, "num_patches")
  grid = _f32(features).reshape(b, src, src, w)
  out = jax.image.resize(grid, (b, dst, dst, w), method="linear", antialias=True)
  return out.reshape(b, dst * dst, w)


def repa_loss(projected: Array, teacher: Array) -> Array:
  """REPA's alignment loss: -mean over images and patches of cos(projected, teacher).

  Args:
    projected: `[B, P, W]` the projector's output on the model's patch states.
    teacher: `[B, N, W]` the frozen teacher's patch features (gradient stopped here); an
      n x n grid different from the model's g x g is resized first (`resize_patch_grid`).

  Returns:
    float32 scalar in [-1, 1] (-1 = perfectly aligned).
  """
  if projected.ndim != 3 or teacher.ndim != 3:
    raise ValueError(f"projected / teacher: expected [B, P, W] and [B, N, W], got shapes "
                     f"{projected.shape} and {teacher.shape}")
  if teacher.shape[0] != projected.shape[0] or teacher.shape[2] != projected.shape[2]:
    raise ValueError(f"teacher: expected [{projected.shape[0]}, N, {projected.shape[2]}] "
                     f"(the projection's batch and width), got {teacher.shape}")
  target = jax.lax.stop_gradient(resize_patch_grid(_f32(teacher), projected.shape[1]))
  unit = lambda x: x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-12))
  return -jnp.mean(jnp.sum(unit(_f32(projected)) * unit(target), axis=-1))


# ----------------------------------------------------------------------------------------
# Combiners.
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass(kw_only=True)
class LossConfig:
  """THE loss config: weights of every term, and which perceptual network to use.

  The experiment config holds it as `config.loss`, so every field is settable from the
  command line (`--config.loss.gan_weight=0.1`). Defaults: GAN and perceptual loss off
  (a pixel + quantizer objective); `jaxtok/configs/titok.py` sets the official values. The
  official 1d-tokenizer key of a field is given in brackets where it differs.

  Attributes:
    reconstruction_loss: "l1" or "l2".
    reconstruction_weight: weight of the pixel loss.
    quantizer_weight: weight of the model's `aux["losses"]["quantizer"]` term (the
      quantizer's total loss).
    kl_weight: weight of `aux["losses"]["kl"]` (the KL of a Gaussian bottleneck: the VAE,
      TiTok's VAE variants).
    flow_weight: weight of `aux["losses"]["flow"]` (a rectified-flow decoder's velocity MSE:
      FlexTok). A model term with no weight field here is summed with weight 1.
    perceptual: the perceptual network: "" (off), "lpips:PATH[,PATH2]" (LPIPS weights the user
      provides) or "inception[:PATH]" (offline distance on the FID Inception network).
    perceptual_weight: weight of the perceptual distance; the trainer uses 0 while
      `perceptual` is "" (TiTok single stage: 1.1).
    gan_weight: fixed weight of the generator's hinge GAN loss [discriminator_weight];
      0 = no discriminator (TiTok: 0.1 single stage, 0.01 stage 2).
    gan_factor: multiplier of the GAN terms once `step >= gan_start_step`
      [discriminator_factor].
    gan_start_step: first step with a GAN loss [discriminator_start] (TiTok: 20000 stage 2,
      200000 single stage).
    disc_warmup_steps: the discriminator trains this many steps before `gan_start_step`
      (from `disc_start_step`) while the generator does not see it yet: a discriminator
      trained from scratch beside a pretrained tokenizer (no release ships one) is not
      random when its loss is switched on. 0 = both start together, as the official
      schedules.
    lecam_weight: LeCam regularisation of the discriminator (arXiv 2104.03310)
      [lecam_regularization_weight] (TiTok: 0.001).
    lecam_ema_decay: decay of the LeCam logit EMAs (TiTok: 0.999).
    label_smoothing: of the stage-1 proxy-code cross-entropy.
    semantic_weight: weight of each semantic branch's alignment loss (FQGAN, arXiv
      2411.16681: the in-batch InfoNCE between the branch's predicted CLS feature and a frozen
      teacher's CLS feature), summed over the model's semantic branches (`feature_heads`);
      0 = off (FQGAN official: 0.5 per teacher). A model without semantic branches rejects
      a weight > 0.
    semantic_teacher: the frozen teacher of each semantic branch: one teacher name for every
      branch, or "branch=name,branch=name" (names: `jaxtok.nets.teachers.build_teacher`, e.g.
      "inception:mixed_2" or "inception:mixed_2:128" for the offline FID Inception stand-in;
      "dinov2:<dir>" / "clip:<dir>" for the released towers from a Hugging Face model
      directory; their Hub names, e.g. "facebook/dinov2-small", from the local Hugging Face
      cache). Its feature width
      must equal the branch's feature-head width. Required when `semantic_weight > 0`.
    semantic_negatives: InfoNCE negatives: "global" (the other images of the global batch)
      or "device" (only those of the same device's batch shard, as the official DDP code
      effectively does).
    repa_weight: weight of REPA's alignment loss (arXiv 2410.06940, lambda = 0.5 there;
      `repa_loss`) between the model's projected decoder patch states
      (`aux["repa_features"]`, a model with `repa_layer` set: FlexTok) and the patch features
      of the frozen `repa_teacher`; 0 = off (no teacher is built).
    repa_teacher: the teacher's name (`jaxtok.nets.teachers.build_teacher`: e.g.
      "inception:mixed_2:75", the offline stand-in, or "dinov2:<dir>" for DINOv2 weights on
      disk); its width must equal the model's `repa_dim`. Required when `repa_weight > 0`.
  """
  reconstruction_loss: str = "l2"
  reconstruction_weight: float = 1.0
  quantizer_weight: float = 1.0
  kl_weight: float = 1.0
  flow_weight: float = 1.0
  perceptual: str = ""
  perceptual_weight: float = 1.1
  gan_weight: float = 0.0
  gan_factor: float = 1.0
  gan_start_step: int = 20_000
  disc_warmup_steps: int = 0
  lecam_weight: float = 0.001
  lecam_ema_decay: float = 0.999
  label_smoothing: float = 0.0
  semantic_weight: float = 0.0
  semantic_teacher: str = ""
  semantic_negatives: str = "global"
  repa_weight: float = 0.0
  repa_teacher: str = ""

  @property
  def disc_start_step(self) -> int:
    """First step that updates the discriminator (`disc_warmup_steps` before the GAN loss)."""
    return max(0, self.gan_start_step - self.disc_warmup_steps)

  def validate(self) -> None:
    if self.reconstruction_loss not in RECONSTRUCTION_LOSSES:
      raise ValueError(f"reconstruction_loss: expected one of {sorted(RECONSTRUCTION_LOSSES)}, "
                       f"got {self.reconstruction_loss!r}")
    for name in ("reconstruction_weight", "perceptual_weight", "quantizer_weight", "kl_weight",
                 "flow_weight",
                 "gan_weight", "gan_factor", "lecam_weight", "semantic_weight",
                 "repa_weight"):
      value = getattr(self, name)
      if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    for name in ("gan_start_step", "disc_warmup_steps"):
      value = getattr(self, name)
      if not (isinstance(value, int) and value >= 0):
        raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    if not 0.0 <= self.lecam_ema_decay < 1.0:
      raise ValueError(f"lecam_ema_decay: expected in [0, 1), got {self.lecam_ema_decay}")
    if self.semantic_negatives not in SEMANTIC_NEGATIVES:
      raise ValueError(f"semantic_negatives: expected one of {SEMANTIC_NEGATIVES}, got "
                       f"{self.semantic_negatives!r}")

  def semantic_teachers(self, branches) -> dict[str, str]:
    """`{branch: teacher name}` for the semantic `branches` from `semantic_teacher`."""
    branches = tuple(branches)
    spec = self.semantic_teacher.strip()
    if not spec:
      raise ValueError(f"loss.semantic_teacher: expected a teacher name (or 'branch=name,...' "
                       f"for the semantic branches {list(branches)}) when semantic_weight > 0, "
                       f"got ''")
    if "=" not in spec:
      return {b: spec for b in branches}
    out = {}
    for item in spec.split(","):
      branch, eq, name = (x.strip() for x in item.partition("="))
      if not eq or not branch or not name:
        raise ValueError(f"loss.semantic_teacher: expected 'branch=name' items separated by "
                         f"',', got {item!r} in {spec!r}")
      out[branch] = name
    if sorted(out) != sorted(branches):
      raise ValueError(f"loss.semantic_teacher: expected one teacher for each semantic branch "
                       f"{list(branches)}, got branches {list(out)} in {spec!r}")
    return {b: out[b] for b in branches}

  @property
  def uses_gan(self) -> bool:
    return self.gan_weight > 0 and self.gan_factor > 0


  def term_weight(self, name: str) -> float:
    """Weight of the model's loss term `aux["losses"][name]`: the `<name>_weight` field, else 1."""
    return float(getattr(self, f"{name}_weight", 1.0))


# Diagnostic parts of a model's losses, logged (gradient stopped) but never summed.
LOGGED_AUX = ("commitment_loss", "codebook_loss")


def model_terms(cfg: LossConfig, aux: Mapping[str, Any]) -> dict[str, Array]:
  """The model's own loss terms, weighted: `{"<name>_loss": w(name) * aux["losses"][name]}`
  (summed into the objective), plus the `LOGGED_AUX` parts it reports (gradient stopped)."""
  named = aux.get("losses") if isinstance(aux, Mapping) else None
  if not isinstance(named, Mapping):
    raise ValueError(f"aux: expected a 'losses' dict of the model's named loss terms, got keys "
                     f"{sorted(aux) if isinstance(aux, Mapping) else type(aux).__name__}")
  terms = {f"{name}_loss": cfg.term_weight(name) * _f32(value) for name, value in named.items()}
  for key in LOGGED_AUX:
    if aux.get(key) is not None:
      terms[key] = jax.lax.stop_gradient(_f32(aux[key]))
  return terms


# The terms of `generator_loss` / `stage1_loss` / the trainer that are logged, not summed.
NOT_SUMMED = frozenset(LOGGED_AUX) | {"gan_loss", "gan_factor", "total_loss"}


def total_of(terms: Mapping[str, Array]) -> Array:
  """The objective: the sum of every term not in `NOT_SUMMED` (nor a per-branch
  `semantic_loss_<b>` log)."""
  summed = (v for k, v in terms.items()
            if k not in NOT_SUMMED and not k.startswith("semantic_loss_"))
  return sum(summed, jnp.zeros((), jnp.float32))


def stage1_loss(cfg: LossConfig, logits: Array, target_ids: Array,
                aux: Mapping[str, Any]) -> tuple[Array, dict[str, Array]]:
  """TiTok stage-1 loss: proxy-code CE + weighted quantizer loss.

  Args:
    cfg: weights (`quantizer_weight`, `label_smoothing`).
    logits: `[B, g, g, K]` proxy-code logits (`aux["logits"]` of the legacy model).
    target_ids: `[B, g, g]` MaskGIT VQGAN codes of the input images.
    aux: the model's aux dict (`losses`, optional commitment/codebook parts).

  Returns:
    (total float32 scalar, terms) with terms `reconstruction_loss`, `quantizer_loss`, ...
  """
  cfg.validate()
  terms = {"reconstruction_loss": proxy_code_cross_entropy(
      logits, target_ids, label_smoothing=cfg.label_smoothing)}
  terms.update(model_terms(cfg, aux))
  total = total_of(terms)
  return total, {"total_loss": total, **terms}


def generator_loss(cfg: LossConfig, images: Array, recon: Array, aux: Mapping[str, Any], *,
                   step: Array | int = 0,
                   perceptual_fn: Callable[[Array, Array], Array] | None = None,
                   discriminator_fn: Callable[[Array], Array] | None = None
                   ) -> tuple[Array, dict[str, Array]]:
  """Pixel-space generator loss (TiTok stage 2 / single stage).

  total = w_rec * rec(images, recon) + w_perc * mean(perceptual(images, recon))
          + sum_n w_n * aux["losses"][n] + w_d * factor(step) * (-mean D(recon))

  Args:
    cfg: weights.
    images: `[B, H, W, 3]` targets in [0, 1].
    recon: `[B, H, W, 3]` reconstructions (unclamped), any float dtype.
    aux: the model's aux dict (`losses`, ...).
    step: global step (may be traced) for the GAN start.
    perceptual_fn: `(images, recon) -> [B]` distance (e.g. `LPIPS`); required when
      `cfg.perceptual_weight > 0`.
    discriminator_fn: `recon -> logits`; required when `cfg.uses_gan`. Differentiate
      only with respect to the generator: the discriminator has its own optimizer.

  Returns:
    (total float32 scalar, terms): `reconstruction_loss`, `perceptual_loss`,
    `quantizer_loss` (weighted, they sum to total with `weighted_gan_loss`), `gan_loss`
    (unweighted), `gan_factor`, `commitment_loss`, `codebook_loss`.
  """
  cfg.validate()
  _same_shape(images, recon, "images", "recon")
  terms: dict[str, Array] = {}
  rec = RECONSTRUCTION_LOSSES[cfg.reconstruction_loss](images, recon)
  terms["reconstruction_loss"] = cfg.reconstruction_weight * rec
  if cfg.perceptual_weight > 0:
    if perceptual_fn is None:
      raise ValueError("perceptual_fn: required when perceptual_weight > 0 (e.g. "
                       "jaxtok.nets.perceptual.LPIPS.from_file(...)), got None")
    terms["perceptual_loss"] = cfg.perceptual_weight * jnp.mean(
        _f32(perceptual_fn(images, recon)))
  else:
    terms["perceptual_loss"] = jnp.zeros((), jnp.float32)
  terms.update(model_terms(cfg, aux))
  if cfg.uses_gan:
    if discriminator_fn is None:
      raise ValueError("discriminator_fn: required when gan_weight > 0, got None")
    factor = gan_factor(step, cfg.gan_start_step, cfg.gan_factor)
    g = hinge_g_loss(discriminator_fn(recon))
    terms["gan_loss"] = jax.lax.stop_gradient(g)
    terms["gan_factor"] = factor
    terms["weighted_gan_loss"] = jnp.float32(cfg.gan_weight) * factor * g
  total = total_of(terms)
  return total, {"total_loss": total, **terms}


def discriminator_loss(cfg: LossConfig, logits_real: Array, logits_fake: Array,
                       lecam_ema: LeCamEMA | None = None, *, step: Array | int = 0
                       ) -> tuple[Array, dict[str, Array], LeCamEMA | None]:
  """Discriminator loss: factor(step) * hinge + w_lecam * LeCam, and the updated EMAs.

  The hinge term is on from `cfg.disc_start_step` (`gan_start_step`, or `disc_warmup_steps`
  earlier). As in TiTok's released code, LeCam is not multiplied by the start factor (the
  trainer does not step the discriminator before its start step anyway).

  Args:
    cfg: weights.
    logits_real: D(images), logits_fake: D(stop_gradient(recon)); any shape.
    lecam_ema: current EMAs (`LeCamEMA.zeros()` at start); required when LeCam is on.
    step: global step for the start factor.

  Returns:
    (loss, terms {discriminator_loss, hinge_loss, lecam_loss, logits_real, logits_fake},
    new EMAs or None when LeCam is off).
  """
  cfg.validate()
  factor = gan_factor(step, cfg.disc_start_step, cfg.gan_factor)
  hinge = hinge_d_loss(logits_real, logits_fake)
  real_mean, fake_mean = jnp.mean(_f32(logits_real)), jnp.mean(_f32(logits_fake))
  terms = {"hinge_loss": hinge,
           "logits_real": jax.lax.stop_gradient(real_mean),
           "logits_fake": jax.lax.stop_gradient(fake_mean)}
  loss = factor * hinge
  new_ema = None
  if cfg.lecam_weight > 0:
    if lecam_ema is None:
      raise ValueError("lecam_ema: required when lecam_weight > 0 "
                       "(start from LeCamEMA.zeros()), got None")
    terms["lecam_loss"] = cfg.lecam_weight * lecam_loss(
        real_mean, fake_mean, lecam_ema)
    loss = loss + terms["lecam_loss"]
    new_ema = update_lecam_ema(lecam_ema, real_mean, fake_mean, cfg.lecam_ema_decay)
  else:
    terms["lecam_loss"] = jnp.zeros((), jnp.float32)
  terms["discriminator_loss"] = loss
  return loss, terms, new_ema


def nonfinite_terms(terms: Mapping[str, Any]) -> list[str]:
  """Host-side: names of the terms (in dict order) holding a NaN/Inf."""
  return [name for name, value in terms.items()
          if not np.all(np.isfinite(np.asarray(value)))]
