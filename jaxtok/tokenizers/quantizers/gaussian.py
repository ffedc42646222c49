"""`GaussianQuantizer`: the continuous bottleneck of the VAE tokenizers (TiTok LL/BL-VAE).

Not a quantizer in the VQ sense: the input `[..., 2C]` holds the mean and log-variance of a
diagonal Gaussian posterior over C channels. It has the quantizer interface so that models
build every bottleneck from `QUANTIZERS` the same way:

    z_q, aux = quantizer(z, train=..., rngs=...)

`train=True` returns a reparameterized sample (needs `rngs`); otherwise the posterior mean.
Its tokens are continuous: there are no ids and no `lookup`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtok.tokenizers.quantizers import core

# Log-variance clip of the official DiagonalGaussianDistribution.
LOGVAR_RANGE = (-30.0, 20.0)


def as_key(rngs: nnx.Rngs | jax.Array | None, what: str) -> jax.Array:
  """A PRNG key from an `nnx.Rngs` (its default stream) or a key; ValueError on None."""
  if rngs is None:
    raise ValueError(f"{what}: expected an nnx.Rngs or a jax PRNG key, got None")
  if isinstance(rngs, nnx.Rngs):
    return rngs.default()
  return rngs


class GaussianQuantizer(nnx.Module):
  """Diagonal Gaussian posterior over `dim` channels (input `[..., 2 * dim]`).

  Attributes:
    dim: C, channels of the output (the posterior mean / sample).
    input_dim: 2C (mean and log-variance, concatenated on the last axis).
  """

  def __init__(self, dim: int, *, rngs: nnx.Rngs | None = None):
    """Builds the bottleneck (it has no parameters; `rngs` is accepted for uniformity)."""
    del rngs
    if dim < 1:
      raise ValueError(f"dim must be >= 1, got {dim}")
    self.dim = int(dim)
    self.input_dim = 2 * self.dim

  def posterior(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`[..., 2C]` -> (mean, clipped log-variance), each `[..., C]` float32."""
    core.check_features("z", z, self.input_dim)
    mean, logvar = jnp.split(jnp.asarray(z, jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def __call__(self, z: jax.Array, train: bool = False,
               rngs: nnx.Rngs | jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Posterior mean (eval) or a sample (train).

    Args:
      z: `[B, ..., 2C]` float (mean and log-variance).
      train: draw `mean + std * eps` from `rngs` instead of returning the mean.
      rngs: an `nnx.Rngs` or a PRNG key; required when `train`.

    Returns:
      (z_q `[B, ..., C]` float32, aux) with aux = {"loss", "commitment_loss",
      "codebook_loss", "entropy_loss": () float32 zeros (the KL is kept apart so that a
      trainer weights it on its own), "kl_loss": () float32 KL to N(0, I), summed over all
      non-batch axes and averaged over the batch, "posterior_mean", "posterior_logvar":
      `[B, ..., C]`, "stats": {}}.
    """
    mean, logvar = self.posterior(z)
    if train:
      key = as_key(rngs, "rngs (train=True samples the Gaussian posterior)")
      zq = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
    else:
      zq = mean
    kl = 0.5 * jnp.sum(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar,
                       axis=tuple(range(1, mean.ndim)))
    zero = jnp.zeros((), jnp.float32)
    aux = {"loss": zero, "commitment_loss": zero, "codebook_loss": zero, "entropy_loss": zero,
           "kl_loss": jnp.mean(kl), "posterior_mean": mean, "posterior_logvar": logvar,
           "stats": {}}
    return zq, aux

  def lookup(self, ids: jax.Array) -> jax.Array:
    """Not available: continuous tokens have no ids."""
    raise ValueError(f"ids: the 'gaussian' bottleneck has continuous tokens (no codebook, no "
                     f"ids); decode the latents [..., {self.dim}] directly, got ids of shape "
                     f"{tuple(getattr(ids, 'shape', ()))}")
