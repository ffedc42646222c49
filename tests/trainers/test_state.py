"""Optimizer masks, schedule, EMA and mixed-precision casting (jaxtok.trainers.state)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtok.trainers import state as state_lib
from jaxtok.trainers import step as step_lib
from jaxtok.trainers.config import OptimConfig


def _params():
  return {
      "encoder": {"ln_pre": {"scale": jnp.ones(4), "bias": jnp.zeros(4)},
                  "dense": {"kernel": jnp.ones((4, 4)), "bias": jnp.zeros(4)},
                  "positional_embedding": jnp.ones((5, 4))},
      "latent_tokens": jnp.ones((3, 4)),
      "quantize": {"codebook": jnp.ones((8, 4))},
      "decoder": {"norm": {"scale": jnp.ones(4)}, "conv": {"kernel": jnp.ones((3, 3, 4, 4))}},
  }


def test_decay_mask_excludes_norms_biases_embeddings_codebooks():
  mask = state_lib.decay_mask(_params(), OptimConfig().no_decay)
  flat = {state_lib.path_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(mask)}
  assert flat == {
      "encoder/ln_pre/scale": False, "encoder/ln_pre/bias": False,
      "encoder/dense/kernel": True, "encoder/dense/bias": False,
      "encoder/positional_embedding": False, "latent_tokens": False,
      "quantize/codebook": False, "decoder/norm/scale": False, "decoder/conv/kernel": True}


def test_weight_decay_applies_only_to_masked_params():
  params = _params()
  optim = OptimConfig(lr=0.1, end_lr=0.1, warmup_steps=0, weight_decay=0.5, grad_clip=0)
  tx = state_lib.make_optimizer(optim, 10, params)
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  upd, _ = tx.update(zeros, tx.init(params), params)
  # With zero gradients only weight decay moves a parameter: -lr * wd * p.
  np.testing.assert_allclose(upd["encoder"]["dense"]["kernel"], -0.05 * np.ones((4, 4)))
  assert float(jnp.abs(upd["quantize"]["codebook"]).max()) == 0.0
  assert float(jnp.abs(upd["encoder"]["ln_pre"]["scale"]).max()) == 0.0


def test_frozen_params_never_move_and_do_not_count_in_clipping():
  params = _params()
  optim = OptimConfig(lr=0.1, warmup_steps=0, frozen=(r"^encoder/",), grad_clip=1.0)
  tx = state_lib.make_optimizer(optim, 10, params)
  grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 100.0), params)
  upd, _ = tx.update(grads, tx.init(params), params)
  for p, u in jax.tree_util.tree_leaves_with_path(upd):
    if state_lib.path_str(p).startswith("encoder/"):
      assert float(jnp.abs(u).max()) == 0.0
  assert float(jnp.abs(upd["decoder"]["conv"]["kernel"]).max()) > 0
  with pytest.raises(ValueError, match="optim.frozen"):
    state_lib.make_optimizer(OptimConfig(frozen=("nothing_matches",)), 10, params)


def test_schedule_warmup_then_cosine_to_end_lr():
  optim = OptimConfig(lr=1e-3, end_lr=1e-4, warmup_steps=10)
  sched = state_lib.lr_schedule(optim, 110)
  np.testing.assert_allclose(float(sched(0)), 1e-4, rtol=1e-5)  # first update: lr / 10
  np.testing.assert_allclose(float(sched(4)), 5e-4, rtol=1e-5)
  np.testing.assert_allclose(float(sched(9)), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(float(sched(59)), 1e-4 + 0.5 * 9e-4, rtol=1e-5)
  np.testing.assert_allclose(float(sched(109)), 1e-4, rtol=1e-6)  # last update: end_lr
  with pytest.raises(ValueError, match="optim.lr"):
    state_lib.make_optimizer(OptimConfig(lr=0.0), 10, _params())


def test_ema_warmup_and_decay():
  ema = {"w": jnp.zeros(3)}
  params = {"w": jnp.ones(3)}
  # step 0: decay min(0.999, 1/10) = 0.1 -> ema = 0.9.
  np.testing.assert_allclose(state_lib.update_ema(ema, params, 0, 0.999)["w"], 0.9, rtol=1e-6)
  # Late steps use the configured decay.
  np.testing.assert_allclose(state_lib.update_ema(ema, params, 10**6, 0.999)["w"], 0.001,
                             rtol=1e-4)
  assert state_lib.update_ema(ema, params, 3, 0.0) is params


def test_bf16_cast_keeps_codebooks_and_norms_float32():
  cast = state_lib.cast_for_compute(
      _params(), jnp.bfloat16, lambda p: bool(step_lib.KEEP_F32.search(p)))
  assert cast["encoder"]["dense"]["kernel"].dtype == jnp.bfloat16
  assert cast["decoder"]["conv"]["kernel"].dtype == jnp.bfloat16
  assert cast["quantize"]["codebook"].dtype == jnp.float32
  assert cast["encoder"]["ln_pre"]["scale"].dtype == jnp.float32
  assert cast["decoder"]["norm"]["scale"].dtype == jnp.float32
  # Gradients through the cast come back in float32 (master weights).
  g = jax.grad(lambda p: jnp.sum(state_lib.cast_for_compute(
      p, jnp.bfloat16, lambda _: False)["w"] ** 2))({"w": jnp.ones(3)})
  assert g["w"].dtype == jnp.float32
  _ = optax  # imported for clarity of the optimizer under test
