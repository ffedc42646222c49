"""The train step: tokenizer loss + update (+ discriminator update), functional, jitted once.

The networks it closes over are built by `jaxtok.trainers.frozen`; the loss config it uses
by `step_loss_config`. The objective is the trainer's pixel terms plus the model's own named
terms (`aux["losses"]`, each times its `LossConfig.term_weight`), summed once
(`losses.total_of`). `make_train_step(parts)` returns a pure
`step(state, batch, key, frozen) -> (state, metrics)` over the `TrainState` pytree of
`jaxtok.trainers.state`; the trainer wraps it once in `jax.jit` with the state's shardings and
donates the state.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxtok.metrics import psnr
from jaxtok.trainers import losses
from jaxtok.trainers.config import TrainConfig
from jaxtok.trainers.state import GanState, PyTree, TrainState, cast_for_compute, update_ema

# Parameters kept in float32 under bf16 compute: codebooks (distances and quantizer losses
# are float32 by design, docs/design.md §4) and norms (cheap, and their statistics need range).
KEEP_F32 = re.compile(r"codebook|norm|(^|/)ln")

RECIPES = ("single", "stage1", "stage2")


@flax.struct.dataclass
class StepParts:
  """The static pieces a train step closes over (graph definitions and callables).

  Attributes:
    graphdef: `nnx.split` graph of the tokenizer.
    tx: optax transformation of the tokenizer params.
    recipe: "single", "stage1" or "stage2".
    loss: `jaxtok.trainers.losses.LossConfig` (perceptual / GAN weights 0 when those
      networks are off).
    compute_dtype: jnp dtype of the forward pass.
    ema_decay: weight EMA decay.
    teacher_apply: `(frozen_teacher, images [B,H,W,3]) -> ids [B, g, g]` (stage 1).
    perceptual_apply: `(frozen_perceptual, images, recon) -> [B]` distances (or None).
    disc_apply: `(disc_params, disc_state, images) -> (logits, new_disc_state)` (GAN).
    disc_tx: the discriminator's optax transformation.
    semantic_apply: `((branch, apply), ...)` with `apply(frozen_teacher, images [B,H,W,3]
      in [0, 1]) -> TeacherFeatures` per semantic branch (FQGAN alignment), or None.
    semantic_groups: InfoNCE negative groups: 1 = the global batch; n = n contiguous
      slices of the batch (the devices' shards, `loss.semantic_negatives="device"`).
    repa_apply: `apply(frozen_teacher, images [B,H,W,3] in [0, 1]) -> TeacherFeatures` of
      REPA's teacher (`loss.repa_weight > 0`), or None.
  """
  graphdef: Any = flax.struct.field(pytree_node=False)
  tx: Any = flax.struct.field(pytree_node=False)
  recipe: str = flax.struct.field(pytree_node=False, default="single")
  loss: Any = flax.struct.field(pytree_node=False, default=None)
  compute_dtype: Any = flax.struct.field(pytree_node=False, default=jnp.float32)
  ema_decay: float = flax.struct.field(pytree_node=False, default=0.0)
  teacher_apply: Any = flax.struct.field(pytree_node=False, default=None)
  perceptual_apply: Any = flax.struct.field(pytree_node=False, default=None)
  disc_apply: Any = flax.struct.field(pytree_node=False, default=None)
  disc_tx: Any = flax.struct.field(pytree_node=False, default=None)
  semantic_apply: Any = flax.struct.field(pytree_node=False, default=None)
  semantic_groups: int = flax.struct.field(pytree_node=False, default=1)
  repa_apply: Any = flax.struct.field(pytree_node=False, default=None)

  @property
  def use_gan(self) -> bool:
    return self.disc_apply is not None and self.loss.uses_gan


def step_loss_config(config: TrainConfig, has_perceptual: bool, has_disc: bool
                     ) -> losses.LossConfig:
  """`config.loss` with the perceptual / GAN weights at 0 where those networks are off."""
  out = dataclasses.replace(
      config.loss,
      perceptual_weight=config.loss.perceptual_weight if has_perceptual else 0.0,
      gan_weight=config.loss.gan_weight if has_disc else 0.0)
  out.validate()
  return out


# ------------------------------------------------------------------------------------------
# The step.
# ------------------------------------------------------------------------------------------
def _scalar_stats(stats: Any, prefix: str) -> dict[str, jax.Array]:
  out = {}
  for k, v in (stats or {}).items():
    if isinstance(v, dict):
      out.update(_scalar_stats(v, f"{prefix}{k}/"))
    else:
      out[f"{prefix}{k}"] = jnp.mean(jnp.asarray(v, jnp.float32))
  return out


def forward_losses(parts: StepParts, params: PyTree, model_state: PyTree, images: jax.Array,
                   key: jax.Array, step: jax.Array, frozen: dict[str, Any],
                   disc: tuple[PyTree, PyTree] | None = None):
  """The tokenizer objective for one batch (losses in float32, `jaxtok.trainers.losses`).

  Args:
    parts: the step's static pieces.
    params / model_state: pure dicts of the tokenizer.
    images: `[B, H, W, 3]` float32 in [0, 1].
    key: PRNG key of this step (tail-token-drop, VAE sampling).
    step: int32 scalar (GAN start gating).
    frozen: frozen networks' variables: "teacher" (stage 1), "perceptual", "semantic"
      (`{branch: teacher variables}`), "repa".
    disc: (disc_params, disc_state) for the generator's adversarial term.

  Returns:
    (total, (terms, recon, aux, new_model_state)) with `terms` from the losses module.
  """
  keep = lambda p: bool(KEEP_F32.search(p))
  cparams = cast_for_compute(params, parts.compute_dtype, keep)
  model = nnx.merge(parts.graphdef, cparams, model_state)
  recon, aux = model(images.astype(parts.compute_dtype), train=True, rngs=nnx.Rngs(key))
  new_model_state = nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.Param)))
  # Model-state updates (codebook EMA, usage counters) keep their stored dtype.
  new_model_state = jax.tree_util.tree_map(lambda n, o: n.astype(o.dtype), new_model_state,
                                           model_state)
  recon = recon.astype(jnp.float32)
  if parts.recipe == "stage1":
    if aux.get("logits") is None:
      raise ValueError("recipe: 'stage1' needs a two-stage model returning aux['logits']")
    teacher_ids = jax.lax.stop_gradient(parts.teacher_apply(frozen["teacher"], images))
    _, terms = losses.stage1_loss(parts.loss, aux["logits"], teacher_ids, aux)
  else:
    perceptual_fn = disc_fn = None
    if parts.perceptual_apply is not None:
      perceptual_fn = lambda a, b: parts.perceptual_apply(frozen["perceptual"], a, b)
    if parts.use_gan:
      disc_fn = lambda x: parts.disc_apply(disc[0], disc[1], x)[0]
    _, terms = losses.generator_loss(parts.loss, images, recon, aux, step=step,
                                     perceptual_fn=perceptual_fn, discriminator_fn=disc_fn)
  if parts.semantic_apply:  # FQGAN: InfoNCE of each head's CLS vs the frozen teacher's.
    teacher_cls = {b: jax.lax.stop_gradient(apply(frozen["semantic"][b], images).cls)
                   for b, apply in parts.semantic_apply}
    _semantic_loss(parts, model, aux, teacher_cls, terms)
  if parts.repa_apply is not None:  # REPA: projected decoder patches vs teacher patches.
    if aux.get("repa_features") is None:
      raise ValueError("loss.repa_weight: the model returned no aux['repa_features'] (set "
                       "model.repa_layer); expected 0 for this model")
    teacher = jax.lax.stop_gradient(parts.repa_apply(frozen["repa"], images).patches)
    terms["repa_loss"] = parts.loss.repa_weight * losses.repa_loss(aux["repa_features"],
                                                                    teacher)
  total = losses.total_of(terms)  # One sum of every weighted term.
  terms["total_loss"] = total
  return total, (terms, recon, aux, new_model_state)


def _semantic_loss(parts: StepParts, model: Any, aux: dict[str, Any],
                   teacher_cls: dict[str, jax.Array], terms: dict[str, jax.Array]) -> jax.Array:
  """Adds `semantic_loss` (+ per-branch parts) to `terms` and returns it."""
  if aux.get("semantic_features") is None:
    raise ValueError("loss.semantic_weight: the model returned no aux['semantic_features'] "
                     "(feature-prediction heads); expected 0 for this model")
  feats = {b: aux["semantic_features"][b] for b, _ in parts.semantic_apply}
  g = parts.semantic_groups
  if g <= 1:
    per_branch = model.semantic_losses({"semantic_features": feats}, teacher_cls)
  else:  # Per-device negatives: InfoNCE within each contiguous batch shard, then the mean.
    split = lambda a: a.reshape(g, a.shape[0] // g, *a.shape[1:])
    grouped = jax.vmap(lambda f, t: model.semantic_losses({"semantic_features": f}, t))(
        jax.tree_util.tree_map(split, feats), jax.tree_util.tree_map(split, teacher_cls))
    per_branch = {b: jnp.mean(v) for b, v in grouped.items()}
  terms.update(losses.semantic_terms(parts.loss.semantic_weight, per_branch))
  return terms["semantic_loss"]


def _discriminator_update(parts: StepParts, state: TrainState, images: jax.Array,
                          recon: jax.Array) -> tuple[GanState, dict[str, jax.Array]]:
  """One hinge + LeCam step of the discriminator: (new `GanState`, metrics)."""
  gan = state.gan
  def d_loss(dparams):
    both = jnp.concatenate([images, jax.lax.stop_gradient(recon)], axis=0)
    logits, dstate = parts.disc_apply(dparams, gan.state, both)
    real, fake = jnp.split(logits, 2, axis=0)
    ema_in = losses.LeCamEMA(gan.lecam["real"], gan.lecam["fake"])
    loss, dterms, new_lecam = losses.discriminator_loss(parts.loss, real, fake, ema_in,
                                                        step=state.step)
    return loss, (dterms, dstate, new_lecam)

  (_, (dterms, dstate, new_lecam)), dgrads = jax.value_and_grad(d_loss, has_aux=True)(
      gan.params)
  dupd, dopt = parts.disc_tx.update(dgrads, gan.opt_state, gan.params)
  lecam = (gan.lecam if new_lecam is None
           else {"real": new_lecam.real, "fake": new_lecam.fake})
  moved = GanState(params=optax.apply_updates(gan.params, dupd), state=dstate,
                   opt_state=dopt, lecam=lecam)
  # The discriminator does not move before its start step (`LossConfig.disc_start_step`).
  on = state.step >= parts.loss.disc_start_step
  new_gan = jax.tree_util.tree_map(lambda a, b: jnp.where(on, a, b), moved, gan)
  return new_gan, {f"disc/{k}": jnp.asarray(v, jnp.float32) for k, v in dterms.items()}


def make_train_step(parts: StepParts):
  """Returns `step(state, batch, key, frozen) -> (state, metrics)` (un-jitted).

  `batch["image"]` is `[B, H, W, 3]` uint8; `key` is the run's base PRNG key (folded with
  the step number, so a resumed run draws the same randomness); `frozen` holds frozen
  networks ("teacher", "perceptual"). Metrics are float32 scalars.
  """
  def step_fn(state: TrainState, batch: dict[str, jax.Array], key: jax.Array,
              frozen: dict[str, Any]):
    images = batch["image"].astype(jnp.float32) / 255.0
    step_key = jax.random.fold_in(key, state.step)
    disc = (state.gan.params, state.gan.state) if parts.use_gan else None
    # Looked up at trace time, so tests can wrap `forward_losses`.
    grad_fn = jax.value_and_grad(forward_losses, argnums=1, has_aux=True)
    (total, (terms, recon, aux, new_model_state)), grads = grad_fn(
        parts, state.params, state.model_state, images, step_key, state.step, frozen, disc)
    updates, opt_state = parts.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = update_ema(state.ema_params, params, state.step, parts.ema_decay)
    metrics = {f"loss/{k}": jnp.asarray(v, jnp.float32) for k, v in terms.items()}
    metrics["loss/total_loss"] = total
    metrics["train/grad_norm"] = optax.tree.norm(grads)
    metrics["train/param_norm"] = optax.tree.norm(params)
    metrics.update(_scalar_stats(aux.get("stats"), "codebook/"))
    if parts.recipe != "stage1":
      # Stage 1 never looks at pixels (its loss is on the proxy-code logits, as the official
      # stage 1): leaving `recon` unused lets XLA drop the frozen pixel decoder from the step
      # (S-128, batch 4: 1217 -> 585 GFLOP, 18.2 -> 15.8 s on 2 CPU cores).
      metrics["train/psnr"] = jnp.mean(psnr(jnp.clip(recon, 0, 1), images))
    new = state.replace(step=state.step + 1, params=params, model_state=new_model_state,
                        opt_state=opt_state, ema_params=ema)
    if parts.use_gan:
      gan, disc_metrics = _discriminator_update(parts, state, images, recon)
      new = new.replace(gan=gan)
      metrics.update(disc_metrics)
    return new, metrics

  return step_fn
