"""`FiniteScalarQuantizer` (FSQ, arXiv 2309.15505) over `core.py`.

Each of the d = len(levels) channels is bounded by tanh into (-L/2, L/2) (with a half-level
offset for even L), rounded with straight-through, and scaled to [-1, 1]. The implicit codebook
has prod(levels) codes; ids are the mixed-radix number of the per-channel levels with channel 0
as the least significant digit, exactly as FlexTok (levels [8, 8, 8, 5, 5, 5] = 64,000 codes)
and lucidrains' FSQ.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok.tokenizers.quantizers import core
from jaxtok.tokenizers.quantizers.stats import CodebookStats

# The largest implicit codebook whose running statistics are a dense per-code histogram (1 MiB
# of float32). Above it (e.g. levels [8] * 8: 16.7 M codes, a 64 MiB histogram updated every
# step and stored in every checkpoint) they are per-channel level counts; the per-batch `stats`
# are exact at any size (`core.id_stats`).
DENSE_STATS_MAX = 2**18

# Bounding slack: half_l = (L - 1)(1 + eps) / 2 keeps tanh's range just past the extreme levels.
_BOUND_EPS = 1e-3


def fsq_bound(z: jax.Array, levels: jax.Array) -> jax.Array:
  """tanh bound: `[..., d]` float32 -> values in (-(L-1)/2 - 0.5·[L even], (L-1)/2 ...)."""
  levels_f = levels.astype(jnp.float32)
  half_l = (levels_f - 1.0) * (1.0 + _BOUND_EPS) / 2.0
  offset = jnp.where(levels % 2 == 0, 0.5, 0.0)
  shift = jnp.arctanh(offset / half_l)
  return jnp.tanh(z + shift) * half_l - offset


def fsq_quantize(z: jax.Array, levels: jax.Array) -> jax.Array:
  """FSQ codes in [-1, 1] with straight-through rounding: `[..., d]` -> `[..., d]` float32."""
  bounded = fsq_bound(z, levels)
  rounded = bounded + jax.lax.stop_gradient(jnp.round(bounded) - bounded)
  return rounded / (levels // 2).astype(jnp.float32)


def fsq_codes_to_ids(codes: jax.Array, levels: jax.Array, basis: jax.Array) -> jax.Array:
  """Mixed-radix ids: `[..., d]` codes -> `[...]` int32."""
  half = (levels // 2).astype(jnp.float32)
  digits = jnp.round(jax.lax.stop_gradient(codes) * half + half).astype(jnp.int32)
  return jnp.sum(digits * basis, axis=-1).astype(jnp.int32)


def fsq_ids_to_codes(ids: jax.Array, levels: jax.Array, basis: jax.Array) -> jax.Array:
  """Inverse of `fsq_codes_to_ids`: `[...]` int ids -> `[..., d]` float32 codes."""
  digits = (ids[..., None] // basis) % levels
  half = (levels // 2)
  return (digits - half).astype(jnp.float32) / half.astype(jnp.float32)


class FiniteScalarQuantizer(nnx.Module):
  """Finite scalar quantization with optional in/out projections.

  Attributes:
    levels: tuple of per-channel level counts.
    num_codes: prod(levels).
    code_stats: `CodebookStats` cumulative counts (train mode): per code `[1, num_codes]` when
      num_codes <= `DENSE_STATS_MAX`, else per channel and level `[len(levels), max(levels)]`.
  """

  def __init__(self, levels: Sequence[int] = (8, 8, 8, 5, 5, 5), dim: int | None = None, *,
               rngs: nnx.Rngs | None = None):
    """Builds the quantizer.

    Args:
      levels: per-channel number of levels, each >= 2 (FlexTok: [8, 8, 8, 5, 5, 5]).
      dim: input/output feature size; None = len(levels) (no projection). Otherwise Linear
        projections dim -> len(levels) -> dim (with bias) are added, which need `rngs`.
      rngs: initialisation randomness (only used for projections).
    """
    levels = tuple(int(v) for v in levels)
    if not levels or min(levels) < 2:
      raise ValueError(f"levels must be a non-empty list of ints >= 2, got {list(levels)}")
    num_codes = int(np.prod(levels))
    if num_codes >= 2**31:
      raise ValueError(f"prod(levels) must fit in int32, got {num_codes}")
    self.levels = levels
    self.num_codes = num_codes
    self.code_dim = len(levels)
    self.dim = self.code_dim if dim is None else int(dim)
    self._basis = tuple(int(b) for b in np.cumprod((1,) + levels[:-1]))
    if self.dim != self.code_dim:
      if rngs is None:
        raise ValueError(f"rngs is required when dim ({self.dim}) != len(levels) "
                         f"({self.code_dim})")
      self.project_in = nnx.Linear(self.dim, self.code_dim, rngs=rngs)
      self.project_out = nnx.Linear(self.code_dim, self.dim, rngs=rngs)
    else:
      self.project_in = None
      self.project_out = None
    self.dense_stats = num_codes <= DENSE_STATS_MAX
    shape = (1, num_codes) if self.dense_stats else (len(levels), max(levels))
    self.code_stats = CodebookStats(jnp.zeros(shape, jnp.float32))
    self.stats_steps = CodebookStats(jnp.zeros((), jnp.int32))

  @property
  def basis(self) -> jax.Array:
    """`[d]` int32 mixed-radix place values cumprod([1, L0, L1, ...])."""
    return jnp.asarray(self._basis, jnp.int32)

  def _levels(self) -> jax.Array:
    return jnp.asarray(self.levels, jnp.int32)

  def __call__(self, z: jax.Array, train: bool = False, rngs=None) -> tuple[jax.Array, dict]:
    """Quantizes z.

    Args:
      z: `[..., dim]` float (computed in float32).
      train: accumulate the running usage statistics.
      rngs: unused (the quantizer interface; FSQ is deterministic).

    Returns:
      (zq, aux): zq `[..., dim]` in z's dtype; aux = {"ids": int32 `[...]`, "codes":
      `[..., len(levels)]` float32 FSQ codes (before the out-projection), "loss",
      "commitment_loss", "codebook_loss", "entropy_loss" (all 0: FSQ has no auxiliary loss),
      "stats": {"usage", "perplexity", "entropy_bits", "dead_codes"}}.
    """
    core.check_features("z", z, self.dim)
    x = jnp.asarray(z, jnp.float32)
    if self.project_in is not None:
      x = self.project_in(x)
    levels = self._levels()
    codes = fsq_quantize(x, levels)
    ids = fsq_codes_to_ids(codes, levels, self.basis)
    out = codes if self.project_out is None else self.project_out(codes)
    if train:
      # Counts by scatter-add (a one-hot over the implicit codes would cost N x num_codes for
      # no matmul benefit). Integer-valued float sums are exact, so the result is the same on
      # one device and on a sharded batch.
      if self.dense_stats:
        self.code_stats[...] = self.code_stats[...].at[0, ids.reshape(-1)].add(1.0)
      else:
        digits = self.level_indices(ids).reshape(-1, self.code_dim)
        channel = jnp.broadcast_to(jnp.arange(self.code_dim), digits.shape)
        self.code_stats[...] = self.code_stats[...].at[channel, digits].add(1.0)
      self.stats_steps[...] = self.stats_steps[...] + 1
    zero = jnp.zeros((), jnp.float32)
    aux = {
        "ids": ids,
        "codes": jax.lax.stop_gradient(codes),
        "loss": zero,
        "commitment_loss": zero,
        "codebook_loss": zero,
        "entropy_loss": zero,
        "stats": core.id_stats(ids, self.num_codes),
    }
    return out.astype(z.dtype), aux

  def lookup(self, ids: jax.Array) -> jax.Array:
    """`[...]` int ids in [0, prod(levels)) -> `[..., dim]` float32 (codes, out-projected)."""
    core.check_ids("ids", ids, self.num_codes)
    codes = fsq_ids_to_codes(jnp.asarray(ids, jnp.int32), self._levels(), self.basis)
    return codes if self.project_out is None else self.project_out(codes)

  def level_indices(self, ids: jax.Array) -> jax.Array:
    """`[...]` int ids -> `[..., len(levels)]` int32 per-channel level (digit) in [0, L_i)."""
    core.check_ids("ids", ids, self.num_codes)
    return (jnp.asarray(ids, jnp.int32)[..., None] // self.basis) % self._levels()

  def implicit_codebook(self) -> jax.Array:
    """`[prod(levels), len(levels)]` float32: the codes of ids 0..prod(levels)-1."""
    return fsq_ids_to_codes(jnp.arange(self.num_codes, dtype=jnp.int32), self._levels(),
                            self.basis)

  def running_stats(self) -> Mapping[str, jax.Array]:
    """Usage statistics of all batches seen in train mode since the last `reset_stats()`.

    Per code (`core.code_stats`) up to `DENSE_STATS_MAX` codes. Above, per channel: "usage"
    and "dead_codes" count (channel, level) pairs, out of sum(levels); "entropy_bits" is the sum
    of the channels' level entropies, an upper bound of the code entropy (equal when the
    channels are independent), and "perplexity" its power of two.
    """
    if self.dense_stats:
      return core.code_stats(self.code_stats[...])
    counts = self.code_stats[...]
    valid = jnp.arange(counts.shape[1])[None, :] < self._levels()[:, None]
    p = counts / jnp.maximum(jnp.sum(counts, axis=1, keepdims=True), 1.0)
    entropy_bits = -jnp.sum(p * jnp.log2(jnp.where(p > 0, p, 1.0)))
    used = jnp.sum((counts > 0) & valid)
    return {"usage": used / sum(self.levels), "perplexity": jnp.exp2(entropy_bits),
            "entropy_bits": entropy_bits,
            "dead_codes": (sum(self.levels) - used).astype(jnp.float32)}

  def reset_stats(self) -> None:
    """Zeroes the running statistics."""
    self.code_stats[...] = jnp.zeros_like(self.code_stats[...])
    self.stats_steps[...] = jnp.zeros_like(self.stats_steps[...])
