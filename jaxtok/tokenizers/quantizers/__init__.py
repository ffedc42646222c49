"""Quantizers: one shared core (`core.py`) and thin NNX modules over it (docs/design.md §4).

`QUANTIZERS` maps a config name to the module class; models build their bottleneck with
`build_quantizer(name, ...)`. Every entry has the interface

    z_q, aux = quantizer(z, train=False, rngs=None)

with `aux["loss"]` (the total auxiliary loss), `commitment_loss`, `codebook_loss`,
`entropy_loss`, `stats`, and `ids` for the discrete ones (`kl_loss` for "gaussian").

"lfq" / "bsq" (lookup-free / binary spherical, `lfq.py`), "rvq" (residual VQ over
`VectorQuantizer`s, `rvq.py`) and "simvq" (frozen codebook under a learnt map, `simvq.py`) give
parity with vector-quantize-pytorch 1.34.1 (tests/fixtures/quantizers/README.md §5).
"""
from __future__ import annotations

from typing import Any

from flax import nnx

from jaxtok.tokenizers.quantizers.factorized import FactorizedVectorQuantizer
from jaxtok.tokenizers.quantizers.fsq import FiniteScalarQuantizer
from jaxtok.tokenizers.quantizers.gaussian import GaussianQuantizer
from jaxtok.tokenizers.quantizers.lfq import BinarySphericalQuantizer, LookupFreeQuantizer
from jaxtok.tokenizers.quantizers.rvq import ResidualVectorQuantizer
from jaxtok.tokenizers.quantizers.simvq import SimVQ
from jaxtok.tokenizers.quantizers.stats import CodebookStats, EmaState, FrozenCodebook
from jaxtok.tokenizers.quantizers.vq import VectorQuantizer

QUANTIZERS: dict[str, type] = {
    "vq": VectorQuantizer,
    "factorized_vq": FactorizedVectorQuantizer,
    "fsq": FiniteScalarQuantizer,
    "gaussian": GaussianQuantizer,
    "lfq": LookupFreeQuantizer,
    "bsq": BinarySphericalQuantizer,
    "rvq": ResidualVectorQuantizer,
    "simvq": SimVQ,
}


def build_quantizer(name: str, *, dim: int, codebook_size: int | None = None,
                    distance: str = "l2", beta: float = 0.25, num_factors: int = 1,
                    rngs: nnx.Rngs, **kwargs: Any) -> nnx.Module:
  """The `QUANTIZERS[name]` bottleneck for `dim`-channel tokens.

  Args:
    name: one of `QUANTIZERS`.
    dim: C, channels of the quantized output (the input is `[..., 2C]` for "gaussian").
    codebook_size: codes per codebook ("vq", "factorized_vq", "rvq", "simvq"; a power of two,
      2**bits, for "lfq" / "bsq"); FSQ takes `levels` instead.
    distance: "l2" or "cosine" ("vq", "factorized_vq", "rvq").
    beta: commitment weight ("vq", "factorized_vq", "rvq", "simvq"); LFQ / BSQ take
      `commitment_loss_weight` instead.
    num_factors: k sub-codebooks of dim / k channels each ("factorized_vq").
    rngs: initialisation randomness.
    **kwargs: further keyword arguments of the class (e.g. `dead_code_threshold`, `levels`).

  Returns:
    The quantizer module.
  """
  if name not in QUANTIZERS:
    raise ValueError(f"quantizer: expected one of {sorted(QUANTIZERS)}, got {name!r}")
  if name == "vq":
    return VectorQuantizer(codebook_size, dim, distance=distance, beta=beta, **kwargs,
                           rngs=rngs)
  if name == "factorized_vq":
    if dim % num_factors:
      raise ValueError(f"num_factors: expected a divisor of dim={dim}, got {num_factors}")
    # k sub-codebooks of dim / k channels each, so the output still has dim channels.
    return FactorizedVectorQuantizer(codebook_size, dim, num_factors=num_factors,
                                     code_dim=dim // num_factors, distance=distance, beta=beta,
                                     **kwargs, rngs=rngs)
  if name == "fsq":
    return FiniteScalarQuantizer(dim=dim, **kwargs, rngs=rngs)
  if name in ("lfq", "bsq"):
    return QUANTIZERS[name](dim, codebook_size, **kwargs, rngs=rngs)
  if name == "rvq":
    return ResidualVectorQuantizer(codebook_size, dim, distance=distance, beta=beta, **kwargs,
                                   rngs=rngs)
  if name == "simvq":
    return SimVQ(codebook_size, dim, beta=beta, **kwargs, rngs=rngs)
  return GaussianQuantizer(dim, **kwargs, rngs=rngs)


__all__ = [
    "QUANTIZERS",
    "BinarySphericalQuantizer",
    "CodebookStats",
    "EmaState",
    "FactorizedVectorQuantizer",
    "FiniteScalarQuantizer",
    "FrozenCodebook",
    "GaussianQuantizer",
    "LookupFreeQuantizer",
    "ResidualVectorQuantizer",
    "SimVQ",
    "VectorQuantizer",
    "build_quantizer",
]
