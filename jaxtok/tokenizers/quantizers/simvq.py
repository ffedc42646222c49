"""`SimVQ` (arXiv 2411.02038): a frozen random codebook under a learnt linear map, over `core.py`.

The codebook is implicit, C = F W with F `[K, f]` a fixed Gaussian draw (N(0, 1/f)) and W the
`f -> dim` Linear map (no bias). Training W moves the whole codebook at once, so no code is left
behind (the paper's remedy for codebook collapse). Nearest code by squared Euclidean distance.

Losses (means over all elements, float32): codebook = mean((q - sg z)^2) (gradient to W),
commitment = beta * mean((sg q - z)^2) (gradient to z), loss = commitment_weight * (codebook +
commitment) (lucidrains' `SimVQ`: beta = input_to_quantize_commit_loss_weight = 0.25).
Output: the rotation trick (default, as lucidrains) or straight-through.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtok.tokenizers.quantizers import core
from jaxtok.tokenizers.quantizers.stats import CodebookStats, FrozenCodebook

# lucidrains `rotate_to` / `safe_div` floor.
ROTATION_EPS = 1e-6


class SimVQ(nnx.Module):
  """SimVQ quantizer.

  Attributes:
    frozen_codebook: `FrozenCodebook` `[K, f]` (not a Param: the optimizer never sees it).
    code_transform: `nnx.Linear(f, dim, use_bias=False)`, the learnt map W.
    num_codes: K.
    code_stats: `CodebookStats` `[1, K]` cumulative counts (train mode).
  """

  def __init__(self, num_codes: int, dim: int, *, frozen_dim: int | None = None,
               beta: float = 0.25, commitment_weight: float = 1.0, rotation_trick: bool = True,
               chunk_tokens: int | None = None, lookup: str = "auto", rngs: nnx.Rngs):
    """Builds the quantizer.

    Args:
      num_codes: K codes.
      dim: feature size of the input/output (and of the implicit codes).
      frozen_dim: f, the frozen codebook's width; default dim.
      beta: weight of the input-to-code commitment term inside the loss.
      commitment_weight: weight of the whole loss.
      rotation_trick: rotation-trick estimator (arXiv 2410.06424) instead of straight-through.
      chunk_tokens: token chunking of the distance computation (see `core.num_chunks`).
      lookup: "onehot", "gather" or "auto" (see `core.resolve_lookup`).
      rngs: the frozen codebook draw and W's initialisation.
    """
    if num_codes < 1:
      raise ValueError(f"num_codes must be >= 1, got {num_codes}")
    if dim < 1:
      raise ValueError(f"dim must be >= 1, got {dim}")
    frozen_dim = dim if frozen_dim is None else int(frozen_dim)
    if frozen_dim < 1:
      raise ValueError(f"frozen_dim must be >= 1, got {frozen_dim}")
    core.resolve_lookup(lookup)
    self.num_codes = int(num_codes)
    self.dim = int(dim)
    self.frozen_dim = frozen_dim
    self.beta = float(beta)
    self.commitment_weight = float(commitment_weight)
    self.rotation_trick = bool(rotation_trick)
    self.chunk_tokens = chunk_tokens
    self.lookup_impl = lookup
    self.frozen_codebook = FrozenCodebook(
        jax.random.normal(rngs.params(), (num_codes, frozen_dim), jnp.float32)
        * frozen_dim ** -0.5)
    self.code_transform = nnx.Linear(frozen_dim, dim, use_bias=False, rngs=rngs)
    self.code_stats = CodebookStats(jnp.zeros((1, num_codes), jnp.float32))
    self.stats_steps = CodebookStats(jnp.zeros((), jnp.int32))

  def codebook(self) -> jax.Array:
    """The implicit codebook F W, `[K, dim]` float32."""
    frozen = jax.lax.stop_gradient(jnp.asarray(self.frozen_codebook[...], jnp.float32))
    return self.code_transform(frozen).astype(jnp.float32)

  def __call__(self, z: jax.Array, train: bool = False, rngs=None) -> tuple[jax.Array, dict]:
    """Quantizes z.

    Args:
      z: `[..., dim]` float (computed in float32).
      train: accumulate the running usage statistics.
      rngs: unused (the quantizer interface).

    Returns:
      (zq, aux): zq `[..., dim]` in z's dtype; aux = {"ids": int32 `[...]`, "codes": `[..., dim]`
      float32 selected codes, "loss", "commitment_loss", "codebook_loss" (both already times
      commitment_weight), "entropy_loss" (0), "stats"}.
    """
    core.check_features("z", z, self.dim)
    lead = z.shape[:-1]
    x = jnp.asarray(z, jnp.float32).reshape(-1, self.dim)
    assign = core.assign_codes(x, self.codebook(), chunk_tokens=self.chunk_tokens,
                               lookup=self.lookup_impl)
    codes = assign.codes
    commitment, codebook_loss = core.vq_losses(x, codes, self.beta)
    commitment = self.commitment_weight * commitment
    codebook_loss = self.commitment_weight * codebook_loss
    if self.rotation_trick:
      out = core.rotation_trick(x, codes, eps=ROTATION_EPS)
    else:
      out = core.straight_through(x, codes)
    if train:
      self.code_stats[...] = self.code_stats[...] + assign.counts[None]
      self.stats_steps[...] = self.stats_steps[...] + 1
    aux = {
        "ids": assign.ids.reshape(lead),
        "codes": jax.lax.stop_gradient(codes).reshape(*lead, self.dim),
        "loss": commitment + codebook_loss,
        "commitment_loss": commitment,
        "codebook_loss": codebook_loss,
        "entropy_loss": jnp.zeros((), jnp.float32),
        "stats": core.code_stats(assign.counts),
    }
    return out.reshape(*lead, self.dim).astype(z.dtype), aux

  def lookup(self, ids: jax.Array) -> jax.Array:
    """`[...]` int ids in [0, K) -> `[..., dim]` float32 implicit codes."""
    core.check_ids("ids", ids, self.num_codes)
    return core.one_hot_lookup(jnp.asarray(ids, jnp.int32), self.codebook())

  def running_stats(self) -> Mapping[str, jax.Array]:
    """Usage statistics of the batches seen in train mode since the last `reset_stats()`."""
    return core.code_stats(self.code_stats[...])

  def reset_stats(self) -> None:
    """Zeroes the running statistics."""
    self.code_stats[...] = jnp.zeros_like(self.code_stats[...])
    self.stats_steps[...] = jnp.zeros_like(self.stats_steps[...])
