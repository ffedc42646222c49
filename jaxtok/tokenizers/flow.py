"""Rectified flow (arXiv 2209.03003): noising, timestep features, guidance, Euler sampling.

Conventions of FlexTok's `MinRFPipeline` / `MinRFNoiseModule` (tests/fixtures/flextok/README.md
§4.7-4.11): t = 1 is pure noise, t = 0 data,

  x_t = t * eps + (1 - t) * x0,     velocity target v = eps - x0,

and the sampler integrates dx/dt = v from t = 1 down to 0 with Euler steps
`x <- x - (1/N) * v(x, t)`, t = N/N, (N-1)/N, ..., 1/N. Everything here is model-agnostic:
the velocity function is an argument.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp


def sample_timesteps(key: jax.Array, batch: int, mean: float = 0.0,
                     std: float = 1.0) -> jax.Array:
  """Logit-normal t = sigmoid(N(mean, std^2)) `[batch]` float32 (SD3, arXiv 2403.03206)."""
  return jax.nn.sigmoid(mean + std * jax.random.normal(key, (batch,), jnp.float32))


def add_noise(x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """x_t = t * noise + (1 - t) * x0, t `[B]` broadcast over the trailing axes."""
  tb = t.reshape(t.shape + (1,) * (x0.ndim - 1)).astype(x0.dtype)
  return tb * noise + (1 - tb) * x0


def velocity_target(x0: jax.Array, noise: jax.Array) -> jax.Array:
  """d x_t / d t = noise - x0."""
  return noise - x0


def timestep_features(t: jax.Array, size: int = 256, max_period: float = 256.0,
                      max_timestep: float = 1.0) -> jax.Array:
  """Sinusoid features `[B, size]` of t `[B]`: [cos(t f) ‖ sin(t f)] (cos first), with
  f_k = (1000 / max_timestep) * exp(-ln(max_period) * k / (size/2)), in float32."""
  half = size // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  freqs = (1000.0 / max_timestep) * freqs
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def _per_sample_norm(x: jax.Array) -> jax.Array:
  """L2 norm over all but the batch axis, shaped `[B, 1, ..., 1]`."""
  axes = tuple(range(1, x.ndim))
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))


def cfg(v_cond: jax.Array, v_uncond: jax.Array, scale: float) -> jax.Array:
  """Classifier-free guidance (arXiv 2207.12598): v_u + s (v_c - v_u)."""
  return v_uncond + scale * (v_cond - v_uncond)


def apg(v_cond: jax.Array, v_uncond: jax.Array, buf: jax.Array, scale: float, *,
        momentum: float = -0.5, eta: float = 0.0, norm_threshold: float = 2.5
        ) -> tuple[jax.Array, jax.Array]:
  """Adaptive projected guidance (arXiv 2410.02416), per sample; returns (v, new buffer).

    d = v_c - v_u;  buf <- d + momentum * buf (stored unclipped)
    d' = buf * min(1, norm_threshold / ||buf||)
    d_par = <d', u> u with u = v_c / max(||v_c||, 1e-12);  d_orth = d' - d_par
    v = v_c + (s - 1) (d_orth + eta d_par)

  Norms are over all values of a sample. (The official code projects in float64; float32
  here, which the fixture's 1e-4 tolerance covers.)
  """
  buf = (v_cond - v_uncond) + momentum * buf
  norm = _per_sample_norm(buf)
  d = buf * jnp.minimum(1.0, norm_threshold / norm)
  u = v_cond / jnp.maximum(_per_sample_norm(v_cond), 1e-12)
  axes = tuple(range(1, v_cond.ndim))
  d_par = jnp.sum(d * u, axis=axes, keepdims=True) * u
  d_orth = d - d_par
  return v_cond + (scale - 1.0) * (d_orth + eta * d_par), buf


def euler_sample(velocity: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array | None]],
                 noise: jax.Array, steps: int, *, guidance: str = "none", scale: float = 1.0,
                 momentum: float = -0.5, eta: float = 0.0, norm_threshold: float = 2.5,
                 return_trajectory: bool = False
                 ) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Euler integration from t = 1 (`noise`) to t = 0.

  Args:
    velocity: `(x [B, ...], t [B]) -> (v_cond, v_uncond or None)`; `v_uncond` is needed
      when guidance is on.
    noise: x at t = 1, `[B, ...]`.
    steps: N >= 1 (static).
    guidance: "none", "cfg" or "apg"; off when `scale == 1` (as the official pipeline).
    scale: guidance scale.
    momentum, eta, norm_threshold: APG constants.
    return_trajectory: also return `[N, B, ...]`, the x fed to each step.

  Returns:
    x at t = 0 (and the trajectory).
  """
  if steps < 1:
    raise ValueError(f"steps: expected >= 1, got {steps}")
  if guidance not in ("none", "cfg", "apg"):
    raise ValueError(f"guidance: expected one of ('none', 'cfg', 'apg'), got {guidance!r}")
  guided = guidance != "none" and scale != 1.0
  b = noise.shape[0]
  dt = 1.0 / steps

  def step(carry, i):
    x, buf = carry
    t = jnp.full((b,), (steps - i) / steps, jnp.float32)
    v_c, v_u = velocity(x, t)
    if not guided:
      v = v_c
    elif guidance == "cfg":
      v = cfg(v_c, v_u, scale)
    else:
      v, buf = apg(v_c, v_u, buf, scale, momentum=momentum, eta=eta,
                   norm_threshold=norm_threshold)
    return (x - dt * v, buf), x

  (x, _), traj = jax.lax.scan(step, (noise, jnp.zeros_like(noise)),
                              jnp.arange(steps, dtype=jnp.float32))
  return (x, traj) if return_trajectory else x
