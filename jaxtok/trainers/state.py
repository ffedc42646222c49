"""Optimisation state of a training run: AdamW schedule, masks, weight EMA, mixed precision.

Everything here is functional and works on *pure dicts* of arrays (`nnx.State.to_pure_dict()`),
so the whole `TrainState` is a plain pytree that jit, sharding and Orbax handle directly.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxtok.configs.common import OptimConfig

PyTree = Any


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training (the checkpointed part).

  Attributes:
    step: int32 scalar, number of optimizer steps taken.
    params: pure dict of the model's `nnx.Param`s (float32).
    model_state: pure dict of the model's other variables (codebook EMA, usage stats).
    opt_state: optax state of `params`.
    ema_params: exponential moving average of `params`, used for eval and export.
    disc_params / disc_state / disc_opt_state: GAN discriminator (empty dicts when off).
    lecam: LeCam EMA of real/fake discriminator logits, `{"real": f32, "fake": f32}`.
  """
  step: jax.Array
  params: PyTree
  model_state: PyTree
  opt_state: PyTree
  ema_params: PyTree
  disc_params: PyTree
  disc_state: PyTree
  disc_opt_state: PyTree
  lecam: PyTree


def path_str(path) -> str:
  """'/'-joined readable name of a pytree key path ('decoder/ffn/0/kernel')."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def regex_mask(params: PyTree, patterns: tuple[str, ...]) -> PyTree:
  """Bool tree: True where the param's path matches any of `patterns` (re.search)."""
  compiled = [re.compile(p) for p in patterns]
  return jax.tree_util.tree_map_with_path(
      lambda path, _: any(c.search(path_str(path)) for c in compiled), params)


def decay_mask(params: PyTree, no_decay: tuple[str, ...]) -> PyTree:
  """True for params that get weight decay: >=2-D and not matching `no_decay`.

  Norm scales, biases, embeddings, positional tables and codebooks are excluded, as in
  the usual ViT/VQGAN recipes (decay pulls codebook vectors and norms toward zero).
  """
  excluded = regex_mask(params, no_decay)
  return jax.tree_util.tree_map(lambda p, ex: (jnp.ndim(p) >= 2) and not ex, params, excluded)


def lr_schedule(optim: OptimConfig, total_steps: int) -> optax.Schedule:
  """Learning rate of the update with 0-based index `count`.

  Linear warmup reaching `lr` at update `warmup_steps - 1` (the first update already uses
  lr / warmup_steps, never 0), then cosine decay reaching `end_lr` at the last update
  (`count = total_steps - 1`).
  """
  warmup = max(0, min(optim.warmup_steps, total_steps))
  base = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=optim.end_lr)
  return lambda count: base(count + 1)


def make_optimizer(optim: OptimConfig, total_steps: int, params: PyTree
                   ) -> optax.GradientTransformation:
  """clip-by-global-norm + AdamW(warmup+cosine, decay mask); frozen params never move.

  Frozen params (matching `optim.frozen`) go through `set_to_zero`, so they neither
  count in the clipping norm nor decay.
  """
  if optim.lr <= 0:
    raise ValueError(f"optim.lr: expected > 0, got {optim.lr}")
  chain = []
  if optim.grad_clip and optim.grad_clip > 0:
    chain.append(optax.clip_by_global_norm(optim.grad_clip))
  chain.append(optax.adamw(lr_schedule(optim, total_steps), b1=optim.b1, b2=optim.b2,
                           eps=optim.eps, weight_decay=optim.weight_decay,
                           mask=lambda p: decay_mask(p, optim.no_decay)))
  train_tx = optax.chain(*chain)
  if not optim.frozen:
    return train_tx
  frozen = regex_mask(params, optim.frozen)
  if not any(jax.tree_util.tree_leaves(frozen)):
    raise ValueError(f"optim.frozen: patterns {optim.frozen} match no parameter")
  labels = jax.tree_util.tree_map(lambda f: "frozen" if f else "train", frozen)
  return optax.multi_transform({"train": train_tx, "frozen": optax.set_to_zero()}, labels)


def make_disc_optimizer(optim: OptimConfig, total_steps: int) -> optax.GradientTransformation:
  """The discriminator's own AdamW (same betas and schedule shape, its own lr)."""
  scale = optim.disc_lr / optim.lr
  sched = lr_schedule(optim, total_steps)
  chain = []
  if optim.grad_clip and optim.grad_clip > 0:
    chain.append(optax.clip_by_global_norm(optim.grad_clip))
  chain.append(optax.adamw(lambda c: scale * sched(c), b1=optim.b1, b2=optim.b2,
                           eps=optim.eps, weight_decay=optim.disc_weight_decay,
                           mask=lambda p: decay_mask(p, optim.no_decay)))
  return optax.chain(*chain)


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
  """EMA decay with the `(1 + n) / (10 + n)` warmup, so short runs are not stuck at init."""
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_ema(ema: PyTree, params: PyTree, step: jax.Array, decay: float) -> PyTree:
  """ema <- d * ema + (1 - d) * params, with d = `ema_decay_at(step, decay)`."""
  if decay <= 0:
    return params
  d = ema_decay_at(step, decay)
  return jax.tree_util.tree_map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype),
                                ema, params)


def cast_for_compute(params: PyTree, dtype: jnp.dtype, keep_f32: Callable[[str], bool]
                     ) -> PyTree:
  """Floating params cast to the compute dtype, except those `keep_f32(path)` names.

  Master weights stay float32 (the cast is inside the differentiated function, so the
  gradient arrives in float32); codebooks stay float32 because distances and quantizer
  losses must be computed in float32 (DESIGN.md §4).
  """
  if jnp.dtype(dtype) == jnp.float32:
    return params

  def cast(path, p):
    if jnp.issubdtype(p.dtype, jnp.floating) and not keep_f32(path_str(path)):
      return p.astype(dtype)
    return p
  return jax.tree_util.tree_map_with_path(cast, params)


def count_params(params: PyTree) -> int:
  return int(sum(jnp.size(p) for p in jax.tree_util.tree_leaves(params)))


# ------------------------------------------------------------------------------------------
# The train step.
# ------------------------------------------------------------------------------------------
# Parameters kept in float32 under bf16 compute: codebooks (distances and quantizer losses
# are float32 by design, DESIGN.md §4) and norms (cheap, and their statistics need range).
KEEP_F32 = re.compile(r"codebook|norm|(^|/)ln")

RECIPES = ("single", "stage1", "stage2")


@flax.struct.dataclass
class StepParts:
  """The static pieces a train step closes over (graph definitions and callables).

  Attributes:
    graphdef: `nnx.split` graph of the tokenizer.
    tx: optax transformation of the tokenizer params.
    recipe: "single", "stage1" or "stage2".
    loss: `jaxtok.trainers.losses.LossConfig` (weights; perceptual weight 0 when off).
    compute_dtype: jnp dtype of the forward pass.
    ema_decay: weight EMA decay.
    teacher_apply: `(frozen_teacher, images [B,H,W,3]) -> ids [B, g, g]` (stage 1).
    perceptual_apply: `(frozen_perceptual, images, recon) -> [B]` distances (or None).
    disc_apply: `(disc_params, disc_state, images) -> (logits, new_disc_state)` (GAN).
    disc_tx: the discriminator's optax transformation.
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

  @property
  def use_gan(self) -> bool:
    return self.disc_apply is not None and self.loss.uses_gan


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
    params / model_state: pure dicts of the tokenizer.
    images: `[B, H, W, 3]` float32 in [0, 1].
    key: PRNG key of this step (tail-token-drop, VAE sampling).
    step: int32 scalar (GAN start gating).
    frozen: frozen networks' variables: "teacher" (stage 1), "perceptual".
    disc: (disc_params, disc_state) for the generator's adversarial term.

  Returns:
    (total, (terms, recon, aux, new_model_state)) with `terms` from the losses module.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from jaxtok.trainers import losses  # pylint: disable=g-import-not-at-top
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
    if "logits" not in aux:
      raise ValueError("recipe: 'stage1' needs a two-stage model returning aux['logits']")
    teacher_ids = jax.lax.stop_gradient(parts.teacher_apply(frozen["teacher"], images))
    total, terms = losses.stage1_loss(parts.loss, aux["logits"], teacher_ids, aux)
  else:
    perceptual_fn = disc_fn = None
    if parts.perceptual_apply is not None:
      perceptual_fn = lambda a, b: parts.perceptual_apply(frozen["perceptual"], a, b)
    if parts.use_gan:
      disc_fn = lambda x: parts.disc_apply(disc[0], disc[1], x)[0]
    total, terms = losses.generator_loss(parts.loss, images, recon, aux, step=step,
                                         perceptual_fn=perceptual_fn,
                                         discriminator_fn=disc_fn)
  if "kl_loss" in aux:  # VAE tokenizers: the KL term, weighted like the quantizer loss.
    terms["kl_loss"] = parts.loss.quantizer_weight * aux["kl_loss"].astype(jnp.float32)
    total = total + terms["kl_loss"]
    terms["total_loss"] = total
  return total, (terms, recon, aux, new_model_state)


def make_train_step(parts: StepParts):
  """Returns `step(state, batch, key, frozen) -> (state, metrics)` (un-jitted).

  `batch["image"]` is `[B, H, W, 3]` uint8; `key` is the run's base PRNG key (folded with
  the step number, so a resumed run draws the same randomness); `frozen` holds frozen
  networks ("teacher", "perceptual"). Metrics are float32 scalars.
  """
  from jaxtok.trainers import losses  # pylint: disable=g-import-not-at-top

  def step_fn(state: TrainState, batch: dict[str, jax.Array], key: jax.Array,
              frozen: dict[str, Any]):
    images = batch["image"].astype(jnp.float32) / 255.0
    step_key = jax.random.fold_in(key, state.step)
    disc = (state.disc_params, state.disc_state) if parts.use_gan else None
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
    metrics["train/psnr"] = jnp.mean(psnr(jnp.clip(recon, 0, 1), images))
    new = state.replace(step=state.step + 1, params=params, model_state=new_model_state,
                        opt_state=opt_state, ema_params=ema)
    if parts.use_gan:
      def d_loss(dparams):
        both = jnp.concatenate([images, jax.lax.stop_gradient(recon)], axis=0)
        logits, dstate = parts.disc_apply(dparams, state.disc_state, both)
        real, fake = jnp.split(logits, 2, axis=0)
        ema_in = losses.LeCamEMA(state.lecam["real"], state.lecam["fake"])
        loss, dterms, new_lecam = losses.discriminator_loss(parts.loss, real, fake, ema_in,
                                                            step=state.step)
        return loss, (dterms, dstate, new_lecam)
      (_, (dterms, dstate, new_lecam)), dgrads = jax.value_and_grad(d_loss, has_aux=True)(
          state.disc_params)
      dupd, dopt = parts.disc_tx.update(dgrads, state.disc_opt_state, state.disc_params)
      dparams = optax.apply_updates(state.disc_params, dupd)
      lecam = (state.lecam if new_lecam is None
               else {"real": new_lecam.real, "fake": new_lecam.fake})
      # The discriminator does not move before the GAN start step.
      on = state.step >= parts.loss.discriminator_start
      pick = lambda n, o: jax.tree_util.tree_map(lambda a, b: jnp.where(on, a, b), n, o)
      new = new.replace(disc_params=pick(dparams, state.disc_params),
                        disc_state=pick(dstate, state.disc_state),
                        disc_opt_state=pick(dopt, state.disc_opt_state),
                        lecam=pick(lecam, state.lecam))
      metrics.update({f"disc/{k}": jnp.asarray(v, jnp.float32) for k, v in dterms.items()})
    return new, metrics

  return step_fn


def psnr(recon: jax.Array, target: jax.Array) -> jax.Array:
  """Per-image PSNR in dB of `[B, H, W, 3]` images in [0, 1] -> `[B]` float32."""
  mse = jnp.mean(jnp.square(recon.astype(jnp.float32) - target.astype(jnp.float32)),
                 axis=(1, 2, 3))
  return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))
