"""`FactorizedVectorQuantizer` (FQGAN, arXiv 2411.16681) over `core.py` and `VectorQuantizer`.

k sub-codebooks; each factor has its own Linear projection (the official per-branch 1x1
`quant_conv`) into a small code space and its own `VectorQuantizer` (cosine distance, entropy
loss). The outputs are concatenated in factor order. A disentanglement loss pushes the k
sub-codes of a token apart (mean squared cosine similarity, averaged over factor pairs).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtok.tokenizers.quantizers import core
from jaxtok.tokenizers.quantizers.vq import VectorQuantizer

_STAT_KEYS = ("usage", "perplexity", "entropy_bits", "dead_codes")


class FactorizedVectorQuantizer(nnx.Module):
  """k independent sub-quantizers with concatenated output.

  Attributes:
    num_factors: k.
    num_codes: codes per sub-codebook (tuple of k ints).
    projections: k `nnx.Linear(dim, code_dim)` pre-quantization projections.
    quantizers: k `VectorQuantizer(num_codes[i], code_dim)`.
  """

  def __init__(self, num_codes: int | Sequence[int], dim: int, *, num_factors: int = 2,
               code_dim: int = 8, distance: str = "cosine", beta: float = 0.25,
               entropy_loss_weight: float = 0.0, entropy_temperature: float = 0.01,
               disentangle_weight: float = 0.1, update: str = "grad", ema_decay: float = 0.99,
               ema_eps: float = 1e-5, rotation_trick: bool = False,
               dead_code_threshold: float = 0.0, norm_eps: float = 1e-12,
               chunk_tokens: int | None = None, lookup: str = "auto", rngs: nnx.Rngs):
    """Builds the quantizer.

    Args:
      num_codes: codebook size of every factor (int) or of each factor (k ints).
      dim: input feature size (each factor's projection maps dim -> code_dim).
      num_factors: k >= 1 (FQGAN dual = 2, triple = 3).
      code_dim: sub-code size (8 in FQGAN).
      distance, beta, update, ema_decay, ema_eps, rotation_trick, dead_code_threshold,
        norm_eps, chunk_tokens, lookup: passed to every `VectorQuantizer`.
      entropy_loss_weight: FQGAN entropy loss weight per factor (0.03 in the training
        scripts; 0 disables).
      entropy_temperature: its softmax temperature (0.01).
      disentangle_weight: weight of each pairwise disentanglement term (0.1 in FQGAN).
      rngs: initialisation randomness.
    """
    if num_factors < 1:
      raise ValueError(f"num_factors must be >= 1, got {num_factors}")
    if isinstance(num_codes, int):
      num_codes = (num_codes,) * num_factors
    num_codes = tuple(int(k) for k in num_codes)
    if len(num_codes) != num_factors:
      raise ValueError(f"num_codes must have num_factors={num_factors} entries, got "
                       f"{list(num_codes)}")
    self.num_factors = num_factors
    self.num_codes = num_codes
    self.dim = dim
    self.code_dim = code_dim
    self.disentangle_weight = float(disentangle_weight)
    self.norm_eps = norm_eps
    self.projections = nnx.List([nnx.Linear(dim, code_dim, rngs=rngs)
                                 for _ in range(num_factors)])
    self.quantizers = nnx.List([
        VectorQuantizer(k, code_dim, distance=distance, beta=beta, update=update,
                        ema_decay=ema_decay, ema_eps=ema_eps, rotation_trick=rotation_trick,
                        dead_code_threshold=dead_code_threshold,
                        entropy_loss_weight=entropy_loss_weight,
                        entropy_temperature=entropy_temperature, norm_eps=norm_eps,
                        chunk_tokens=chunk_tokens, lookup=lookup, rngs=rngs)
        for k in num_codes])

  @property
  def out_dim(self) -> int:
    """Size of the concatenated output: num_factors * code_dim."""
    return self.num_factors * self.code_dim

  def project(self, z) -> list[jax.Array]:
    """Per-factor projections of z.

    Args:
      z: `[..., dim]` float shared by every factor, or a sequence of k such arrays (one per
        factor, as FQGAN's per-branch encoder heads).

    Returns:
      k float32 arrays `[..., code_dim]`.
    """
    if isinstance(z, (list, tuple)):
      if len(z) != self.num_factors:
        raise ValueError(f"z must be an array [..., {self.dim}] or a sequence of "
                         f"{self.num_factors} of them, got a sequence of {len(z)}")
      inputs = list(z)
      for i, zi in enumerate(inputs):
        core.check_features(f"z[{i}]", zi, self.dim)
      if len({tuple(zi.shape) for zi in inputs}) != 1:
        raise ValueError(f"z must hold arrays of one shape [..., {self.dim}], got shapes "
                         f"{[tuple(zi.shape) for zi in inputs]}")
    else:
      core.check_features("z", z, self.dim)
      inputs = [z] * self.num_factors
    return [proj(jnp.asarray(zi, jnp.float32)) for proj, zi in zip(self.projections, inputs)]

  def __call__(self, z, train: bool = False, rngs=None) -> tuple[jax.Array, dict]:
    """Projects and quantizes z.

    Args:
      z: see `project`.
      train: forwarded to every sub-quantizer (statistics, EMA, dead codes).
      rngs: unused (the quantizer interface).

    Returns:
      (zq, aux): zq `[..., num_factors * code_dim]` float32; aux as `quantize_projected`.
    """
    return self.quantize_projected(self.project(z), train=train)

  def quantize_projected(self, zs: Sequence[jax.Array], train: bool = False
                         ) -> tuple[jax.Array, dict]:
    """Quantizes already-projected per-factor inputs.

    Args:
      zs: k arrays `[..., code_dim]` float.
      train: forwarded to every sub-quantizer.

    Returns:
      (zq, aux): zq `[..., k * code_dim]` float32, the concatenated sub-quantizer outputs in
      factor order; aux = {"ids": int32 `[..., k]`, "loss" (sum of sub-losses +
      disentanglement), "commitment_loss", "codebook_loss", "entropy_loss" (sums over
      factors), "disentangle_loss", "factor_losses": k dicts of that factor's losses,
      "stats": {"usage", "perplexity", "entropy_bits", "dead_codes"} averaged (dead codes
      summed) over factors plus "<stat>/<i>" per sub-codebook}.
    """
    if len(zs) != self.num_factors:
      raise ValueError(f"zs must hold {self.num_factors} arrays [..., {self.code_dim}], got "
                       f"{len(zs)}")
    outs, auxes = [], []
    for vq, zi in zip(self.quantizers, zs):
      out, aux = vq(zi, train=train)
      outs.append(out.astype(jnp.float32))
      auxes.append(aux)
    flat = [o.reshape(-1, self.code_dim) for o in outs]
    disentangle = self.disentangle_weight * core.disentanglement_loss(flat, self.norm_eps)
    sums = {k: sum(a[k] for a in auxes)
            for k in ("loss", "commitment_loss", "codebook_loss", "entropy_loss")}
    stats: dict[str, jax.Array] = {}
    for key in _STAT_KEYS:
      vals = [a["stats"][key] for a in auxes]
      stats[key] = sum(vals) if key == "dead_codes" else sum(vals) / len(vals)
      for i, v in enumerate(vals):
        stats[f"{key}/{i}"] = v
    aux = {
        "ids": jnp.stack([a["ids"] for a in auxes], axis=-1),
        "loss": sums["loss"] + disentangle,
        "commitment_loss": sums["commitment_loss"],
        "codebook_loss": sums["codebook_loss"],
        "entropy_loss": sums["entropy_loss"],
        "disentangle_loss": disentangle,
        "factor_losses": [{k: a[k] for k in ("loss", "commitment_loss", "codebook_loss",
                                             "entropy_loss")} for a in auxes],
        "codes": jnp.concatenate([a["codes"] for a in auxes], axis=-1),
        "stats": stats,
    }
    return jnp.concatenate(outs, axis=-1), aux

  def lookup(self, ids: jax.Array) -> jax.Array:
    """`[..., k]` int ids -> `[..., k * code_dim]` float32 concatenated (normalised) codes."""
    core.check_ids("ids", ids, max(self.num_codes), last_dim=self.num_factors)
    return jnp.concatenate([vq.lookup(ids[..., i]) for i, vq in enumerate(self.quantizers)],
                           axis=-1)

  def running_stats(self) -> Mapping[str, jax.Array]:
    """Per-sub-codebook running statistics ("<stat>/<i>") since `reset_stats()`."""
    out = {}
    for i, vq in enumerate(self.quantizers):
      for k, v in vq.running_stats().items():
        out[f"{k}/{i}"] = v
    return out

  def reset_stats(self) -> None:
    """Zeroes every sub-quantizer's running statistics."""
    for vq in self.quantizers:
      vq.reset_stats()
