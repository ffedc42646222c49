"""Lookup-free quantization (LFQ, MAGVIT-v2, arXiv 2310.05737) and its spherical variant BSQ
(binary spherical quantization, arXiv 2406.07548), over `core.py`.

Each of the `num_codebooks` groups of b channels is quantized to the corner of a hypercube:
q_i = s * sign(x_i) (s = `codebook_scale`; `x_i > 0` gives +s, otherwise -s). BSQ l2-normalises
the group first and uses the normalised corners (s / sqrt(b)) * sign(x), so every code lies on
the unit sphere (times s). The implicit codebook has 2**b codes per group; the id of a code is its
bits read with channel 0 as the MOST significant bit (lucidrains' convention: id = sum_i
[q_i > 0] 2**(b-1-i)).

Losses (float32, means over every element):
  entropy = entropy_loss_weight * (H_sample - diversity_gamma * H_batch), where over the soft
    assignment p_n(c) = softmax_c(2 T x_n . c) (T the inverse temperature; the same as a softmax
    of -T ||x - c||^2 up to a per-token constant) H_sample is the mean per-token entropy and
    H_batch the entropy of the batch-mean distribution, both averaged over groups, with
    log(max(p, 1e-5)) as in lucidrains. "full" evaluates it over all 2**b codes; "factorized"
    uses the per-bit product form (exact for H_sample up to the clamp, and the sum of per-bit
    batch entropies, an upper bound of H_batch, for the BSQ paper's large codebooks).
  commitment = commitment_loss_weight * mean((x - sg(q))^2) (x, q after the BSQ normalisation).
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok.tokenizers.quantizers import core
from jaxtok.tokenizers.quantizers.stats import CodebookStats

# Dense per-code running statistics up to this many codes per group (as FSQ); above, per-bit.
DENSE_STATS_MAX = 2**18
# The "full" entropy materialises [tokens, groups, 2**b] probabilities: at most 2**16 codes.
FULL_ENTROPY_MAX_BITS = 16
ENTROPY_MODES = ("full", "factorized")
_LOG_FLOOR = 1e-5  # lucidrains' `log(t, eps=1e-5)` clamp in the entropy terms.


def lfq_bit_weights(num_bits: int) -> jax.Array:
  """`[b]` int32 place values 2**(b-1), ..., 1: channel 0 is the most significant bit."""
  return jnp.asarray([1 << (num_bits - 1 - i) for i in range(num_bits)], jnp.int32)


def lfq_codes_from_bits(bits: jax.Array, scale: float, spherical: bool) -> jax.Array:
  """{0, 1} bits `[..., b]` -> code values: +-s, or +-s / sqrt(b) for BSQ (float32)."""
  codes = jnp.where(bits > 0, scale, -scale).astype(jnp.float32)
  if spherical:
    codes = core.l2_normalize(codes) * scale
  return codes


def lfq_quantize(x: jax.Array, scale: float, spherical: bool
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(x', q, ids) for groups `[..., b]`: x' the (BSQ-normalised) input, q its code, ids int32.

  q = s sign(x) (x > 0 -> +s), l2-normalised (times s) for BSQ; ids have channel 0 as the most
  significant bit. No estimator is applied: q carries no gradient.
  """
  x = x.astype(jnp.float32)
  if spherical:
    x = core.l2_normalize(x) * scale
  bits = (jax.lax.stop_gradient(x) > 0).astype(jnp.int32)
  ids = jnp.sum(bits * lfq_bit_weights(x.shape[-1]), axis=-1).astype(jnp.int32)
  return x, lfq_codes_from_bits(bits, scale, spherical), ids


def lfq_ids_to_bits(ids: jax.Array, num_bits: int) -> jax.Array:
  """`[...]` ids -> `[..., b]` int32 bits (channel 0 the most significant)."""
  return (jnp.asarray(ids, jnp.int32)[..., None] // lfq_bit_weights(num_bits)) % 2


def _entropy(p: jax.Array, axis: int = -1) -> jax.Array:
  return -jnp.sum(p * jnp.log(jnp.maximum(p, _LOG_FLOOR)), axis=axis)


def lfq_entropy_terms(x: jax.Array, scale: float, spherical: bool, inv_temperature: float,
                      mode: str = "full") -> tuple[jax.Array, jax.Array]:
  """(H_sample, H_batch) of the soft code assignment of `x` `[N, G, b]` (float32).

  Args:
    x: the (BSQ-normalised) pre-quantization groups, N tokens of G groups of b bits.
    scale: code magnitude s.
    spherical: BSQ codes (+-s / sqrt(b)).
    inv_temperature: T of softmax(2 T x . c).
    mode: "full" (all 2**b codes) or "factorized" (per-bit; see the module docstring).

  Returns:
    Two () float32: the mean over tokens and groups of the per-token entropy, and the mean over
    groups of the entropy of the token-mean distribution (nats).
  """
  x = x.astype(jnp.float32)
  b = x.shape[-1]
  if mode == "full":
    codes = lfq_codes_from_bits(lfq_ids_to_bits(jnp.arange(2**b), b), scale, spherical)
    logits = 2.0 * inv_temperature * jnp.einsum("ngd,kd->ngk", x, codes,
                                                precision=core.HIGHEST)
    p = jax.nn.softmax(logits, axis=-1)
    return jnp.mean(_entropy(p)), jnp.mean(_entropy(jnp.mean(p, axis=0)))
  if mode != "factorized":
    raise ValueError(f"entropy_mode must be one of {ENTROPY_MODES}, got {mode!r}")
  mag = scale / np.sqrt(b) if spherical else scale
  # p(bit_i = 1) of the product form of softmax(2 T x . c): logit 2 T x_i (2 mag).
  p1 = jax.nn.sigmoid(4.0 * inv_temperature * mag * x)
  pb = jnp.stack([1.0 - p1, p1], axis=-1)  # [N, G, b, 2]
  h_sample = jnp.mean(jnp.sum(_entropy(pb), axis=-1))
  h_batch = jnp.mean(jnp.sum(_entropy(jnp.mean(pb, axis=0)), axis=-1))
  return h_sample, h_batch


class LookupFreeQuantizer(nnx.Module):
  """LFQ (and, with spherical=True, BSQ) with optional in/out projections.

  Forward: z `[..., dim]` -> (Linear dim -> G*b when dim != G*b) -> G groups of b channels ->
  (BSQ: l2-normalise, times s) -> q = code of sign(x) -> straight-through x + sg(q - x) ->
  concat groups -> (Linear G*b -> dim).

  Attributes:
    num_bits: b, bits per group (codebook_size = 2**b).
    num_codebooks: G groups; ids get a trailing group axis when G > 1.
    num_codes: 2**b, codes per group (the `.jtok` vocabulary of one id).
    radix: (2,) * b when G == 1: a `.jtok` file codes each id as its b bits; None when G > 1
      (G ids of 2**b codes per token, each coded whole: the same b bits).
    code_stats: `CodebookStats` cumulative counts (train mode): per code `[G, 2**b]` up to
      `DENSE_STATS_MAX` codes, else per bit `[G * b, 2]`.
  """

  spherical_default = False

  def __init__(self, dim: int, codebook_size: int | None = None, *, num_codebooks: int = 1,
               spherical: bool | None = None, codebook_scale: float = 1.0,
               entropy_loss_weight: float = 0.1, commitment_loss_weight: float = 0.25,
               diversity_gamma: float = 1.0, inv_temperature: float = 100.0,
               entropy_mode: str = "full", projection_bias: bool = True,
               rngs: nnx.Rngs | None = None):
    """Builds the quantizer.

    Args:
      dim: feature size of the input/output.
      codebook_size: 2**b codes per group, a power of two >= 2; None = 2**(dim // num_codebooks).
      num_codebooks: G groups of b bits each.
      spherical: BSQ (l2-normalised groups and codes); default False for LFQ, True for BSQ.
      codebook_scale: s, the code magnitude.
      entropy_loss_weight: weight of H_sample - diversity_gamma * H_batch (0 disables).
      commitment_loss_weight: weight of mean((x - sg q)^2) (0 disables).
      diversity_gamma: weight of the batch entropy inside the entropy loss.
      inv_temperature: T of the soft assignment softmax(2 T x . c) (lucidrains' 100).
      entropy_mode: "full" (exact, b <= 16) or "factorized" (per bit, any b).
      projection_bias: biases of the in/out projections.
      rngs: initialisation randomness (only used for projections).
    """
    if dim < 1:
      raise ValueError(f"dim must be >= 1, got {dim}")
    if num_codebooks < 1:
      raise ValueError(f"num_codebooks must be >= 1, got {num_codebooks}")
    if codebook_size is None:
      if dim % num_codebooks:
        raise ValueError(f"dim must be divisible by num_codebooks when codebook_size is None, "
                         f"got dim={dim}, num_codebooks={num_codebooks}")
      codebook_size = 2 ** (dim // num_codebooks)
    codebook_size = int(codebook_size)
    if codebook_size < 2 or codebook_size & (codebook_size - 1):
      raise ValueError(f"codebook_size must be a power of two >= 2, got {codebook_size}")
    num_bits = codebook_size.bit_length() - 1
    if num_bits > 30:
      raise ValueError(f"codebook_size must be at most 2**30 (int32 ids), got {codebook_size}")
    if entropy_mode not in ENTROPY_MODES:
      raise ValueError(f"entropy_mode must be one of {ENTROPY_MODES}, got {entropy_mode!r}")
    if entropy_mode == "full" and entropy_loss_weight and num_bits > FULL_ENTROPY_MAX_BITS:
      raise ValueError(f"entropy_mode: 'full' takes codebook_size <= 2**{FULL_ENTROPY_MAX_BITS}"
                       f", got 2**{num_bits}; use entropy_mode='factorized'")
    if codebook_scale <= 0:
      raise ValueError(f"codebook_scale must be > 0, got {codebook_scale}")
    if inv_temperature <= 0:
      raise ValueError(f"inv_temperature must be > 0, got {inv_temperature}")
    self.dim = int(dim)
    self.num_bits = num_bits
    self.num_codebooks = int(num_codebooks)
    self.num_codes = codebook_size
    self.spherical = self.spherical_default if spherical is None else bool(spherical)
    self.codebook_scale = float(codebook_scale)
    self.entropy_loss_weight = float(entropy_loss_weight)
    self.commitment_loss_weight = float(commitment_loss_weight)
    self.diversity_gamma = float(diversity_gamma)
    self.inv_temperature = float(inv_temperature)
    self.entropy_mode = entropy_mode
    self.radix = (2,) * num_bits if self.num_codebooks == 1 else None
    inner = self.num_codebooks * num_bits
    if inner != self.dim:
      if rngs is None:
        raise ValueError(f"rngs is required when dim ({self.dim}) != num_codebooks * bits "
                         f"({inner})")
      self.project_in = nnx.Linear(self.dim, inner, use_bias=projection_bias, rngs=rngs)
      self.project_out = nnx.Linear(inner, self.dim, use_bias=projection_bias, rngs=rngs)
    else:
      self.project_in = None
      self.project_out = None
    self.dense_stats = codebook_size <= DENSE_STATS_MAX
    shape = ((self.num_codebooks, codebook_size) if self.dense_stats
             else (self.num_codebooks * num_bits, 2))
    self.code_stats = CodebookStats(jnp.zeros(shape, jnp.float32))
    self.stats_steps = CodebookStats(jnp.zeros((), jnp.int32))

  @property
  def ids_per_token(self) -> int:
    return self.num_codebooks

  def _groups(self, x: jax.Array) -> jax.Array:
    """`[N, dim]` -> `[N, G, b]` float32 (after the in-projection)."""
    if self.project_in is not None:
      x = self.project_in(x)
    return x.reshape(x.shape[0], self.num_codebooks, self.num_bits)

  def _out(self, groups: jax.Array) -> jax.Array:
    x = groups.reshape(groups.shape[0], self.num_codebooks * self.num_bits)
    return x if self.project_out is None else self.project_out(x)

  def __call__(self, z: jax.Array, train: bool = False, rngs=None) -> tuple[jax.Array, dict]:
    """Quantizes z.

    Args:
      z: `[..., dim]` float (computed in float32).
      train: accumulate the running usage statistics.
      rngs: unused (the quantizer interface; LFQ is deterministic).

    Returns:
      (zq, aux): zq `[..., dim]` in z's dtype (straight-through output); aux = {"ids": int32
      `[...]` (`[..., G]` if G > 1), "codes": `[..., dim]` float32 quantized vectors without the
      estimator (out-projected), "loss", "commitment_loss", "entropy_loss" (both weighted),
      "codebook_loss" (0: the codebook is fixed), "per_sample_entropy", "batch_entropy"
      (unweighted, nats), "stats": {"usage", "perplexity", "entropy_bits", "dead_codes"}}.
    """
    core.check_features("z", z, self.dim)
    lead = z.shape[:-1]
    x = jnp.asarray(z, jnp.float32).reshape(-1, self.dim)
    xg, codes, ids = lfq_quantize(self._groups(x), self.codebook_scale, self.spherical)
    zero = jnp.zeros((), jnp.float32)
    if self.entropy_loss_weight:
      h_sample, h_batch = lfq_entropy_terms(xg, self.codebook_scale, self.spherical,
                                            self.inv_temperature, self.entropy_mode)
    else:
      h_sample = h_batch = zero
    entropy = self.entropy_loss_weight * (h_sample - self.diversity_gamma * h_batch)
    commitment = (self.commitment_loss_weight
                  * jnp.mean(jnp.square(xg - jax.lax.stop_gradient(codes)))
                  if self.commitment_loss_weight else zero)
    out = self._out(core.straight_through(xg, codes)).reshape(*lead, self.dim)
    plain = self._out(jax.lax.stop_gradient(codes)).reshape(*lead, self.dim)
    if train:
      self._update_stats(ids)
    out_ids = ids.reshape(*lead) if self.num_codebooks == 1 else ids.reshape(
        *lead, self.num_codebooks)
    stats = core.id_stats(ids[:, 0], self.num_codes) if self.num_codebooks == 1 else (
        _mean_stats([core.id_stats(ids[:, g], self.num_codes)
                     for g in range(self.num_codebooks)]))
    aux = {
        "ids": out_ids,
        "codes": jax.lax.stop_gradient(plain),
        "loss": entropy + commitment,
        "commitment_loss": commitment,
        "codebook_loss": zero,
        "entropy_loss": entropy,
        "per_sample_entropy": h_sample,
        "batch_entropy": h_batch,
        "stats": stats,
    }
    return out.astype(z.dtype), aux

  def _update_stats(self, ids: jax.Array) -> None:
    """Scatter-adds this batch's `[N, G]` ids into the running counts."""
    n, g = ids.shape
    if self.dense_stats:
      group = jnp.broadcast_to(jnp.arange(g), ids.shape)
      self.code_stats[...] = self.code_stats[...].at[group, ids].add(1.0)
    else:
      bits = lfq_ids_to_bits(ids, self.num_bits).reshape(n, g * self.num_bits)
      row = jnp.broadcast_to(jnp.arange(g * self.num_bits), bits.shape)
      self.code_stats[...] = self.code_stats[...].at[row, bits].add(1.0)
    self.stats_steps[...] = self.stats_steps[...] + 1

  def lookup(self, ids: jax.Array) -> jax.Array:
    """Ids `[...]` (`[..., G]` if G > 1) in [0, 2**b) -> `[..., dim]` float32 (out-projected)."""
    core.check_ids("ids", ids, self.num_codes,
                   last_dim=self.num_codebooks if self.num_codebooks > 1 else None)
    ids = jnp.asarray(ids, jnp.int32)
    lead = ids.shape if self.num_codebooks == 1 else ids.shape[:-1]
    bits = lfq_ids_to_bits(ids.reshape(-1, self.num_codebooks), self.num_bits)
    codes = lfq_codes_from_bits(bits, self.codebook_scale, self.spherical)
    return self._out(codes).reshape(*lead, self.dim)

  def running_stats(self) -> Mapping[str, jax.Array]:
    """Usage statistics of the batches seen in train mode since the last `reset_stats()`.

    Per code (averaged over groups) up to `DENSE_STATS_MAX` codes; above, per bit: "usage" and
    "dead_codes" count (bit, value) pairs, "entropy_bits" is the sum of the bit entropies (an
    upper bound of the code entropy) per group.
    """
    if self.dense_stats:
      return core.code_stats(self.code_stats[...])
    counts = self.code_stats[...]
    p = counts / jnp.maximum(jnp.sum(counts, axis=1, keepdims=True), 1.0)
    entropy_bits = -jnp.sum(p * jnp.log2(jnp.where(p > 0, p, 1.0))) / self.num_codebooks
    used = jnp.sum(counts > 0)
    total = counts.size
    return {"usage": used / total, "perplexity": jnp.exp2(entropy_bits),
            "entropy_bits": entropy_bits, "dead_codes": (total - used).astype(jnp.float32)}

  def reset_stats(self) -> None:
    """Zeroes the running statistics."""
    self.code_stats[...] = jnp.zeros_like(self.code_stats[...])
    self.stats_steps[...] = jnp.zeros_like(self.stats_steps[...])


class BinarySphericalQuantizer(LookupFreeQuantizer):
  """BSQ (arXiv 2406.07548): `LookupFreeQuantizer` with spherical=True by default."""

  spherical_default = True


def _mean_stats(per_group: list[dict]) -> dict:
  """Group-averaged `id_stats` ("dead_codes" summed), as `core.code_stats` averages heads."""
  out = {k: jnp.mean(jnp.stack([s[k] for s in per_group])) for k in per_group[0]}
  out["dead_codes"] = jnp.sum(jnp.stack([s["dead_codes"] for s in per_group]))
  return out
