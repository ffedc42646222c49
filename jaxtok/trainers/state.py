"""Optimisation state of a training run: AdamW schedule, masks, weight EMA, mixed precision.

The train step that uses these lives in `jaxtok.trainers.step`.

Everything here is functional and works on *pure dicts* of arrays (`nnx.State.to_pure_dict()`),
so the whole `TrainState` is a plain pytree that jit, sharding and Orbax handle directly.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxtok.trainers.config import OptimConfig

PyTree = Any


class GanState(flax.struct.PyTreeNode):
  """The GAN discriminator's part of a training run (`TrainState.gan`).

  Attributes:
    params / state: pure dicts of the discriminator's `nnx.Param`s and other variables.
    opt_state: optax state of `params`.
    lecam: LeCam EMA of real/fake discriminator logits, `{"real": f32, "fake": f32}`.
  """
  params: PyTree
  state: PyTree
  opt_state: PyTree
  lecam: PyTree


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training (the checkpointed part).

  Attributes:
    step: int32 scalar, number of optimizer steps taken.
    params: pure dict of the model's `nnx.Param`s (float32).
    model_state: pure dict of the model's other variables (codebook EMA, usage stats).
    opt_state: optax state of `params`.
    ema_params: exponential moving average of `params`, used for eval and export.
    gan: the discriminator's `GanState`, or None when the run has no GAN loss (an empty
      sub-tree: nothing to shard, step or checkpoint).
  """
  step: jax.Array
  params: PyTree
  model_state: PyTree
  opt_state: PyTree
  ema_params: PyTree
  gan: GanState | None = None


def split_pure(module: nnx.Module) -> tuple[Any, PyTree, PyTree]:
  """(graphdef, params, other variables) of `module`, both as pure dicts of arrays."""
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


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
  """ema <- d * ema + (1 - d) * params, with d = `ema_decay_at(step, decay)`.

  Written ema + (1 - d) * (params - ema): the same value, and bit-exact `ema` where
  `params == ema` (frozen parameters keep their EMA exactly, not within rounding).
  """
  if decay <= 0:
    return params
  d = ema_decay_at(step, decay)
  return jax.tree_util.tree_map(lambda e, p: (e + (1.0 - d) * (p - e)).astype(e.dtype),
                                ema, params)


def cast_for_compute(params: PyTree, dtype: jnp.dtype, keep_f32: Callable[[str], bool]
                     ) -> PyTree:
  """Floating params cast to the compute dtype, except those `keep_f32(path)` names.

  Master weights stay float32 (the cast is inside the differentiated function, so the
  gradient arrives in float32); codebooks stay float32 because distances and quantizer
  losses must be computed in float32 (docs/design.md §4).
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
