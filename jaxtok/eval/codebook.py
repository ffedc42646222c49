"""Codebook statistics over a whole evaluation set: usage, perplexity, entropy, dead codes.

Counts are accumulated on the host as int64 `[K, F, V]` (token position, sub-codebook,
code) across batches and hosts, and turned into statistics only at the end, so the numbers
describe the full set, not an average of per-batch numbers. `F = 1` for a single codebook;
factorized quantizers (FQGAN, arXiv 2411.16681) emit tokens `[B, K, F]` with one id per
sub-codebook.

Per factor (FQGAN: per branch, named by the model's `config.branches`), the statistics are
reported as `factor/<stat>` arrays `[F]` and as scalars `factor/<name>/<stat>` (the ones a
trainer logs). There is no per-branch reconstruction metric: FQGAN decodes the concatenation
of all branches' codes, and a decode from one branch's codes alone is not defined.

Definitions (p = normalized counts):
- usage: fraction of the V codes used at least once;
- entropy_bits: `-Σ p log2 p` (at most log2 V);
- perplexity: `2 ** entropy_bits` (the effective number of codes);
- dead_codes: codes never used.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxtok.eval import reduce


def _stats(counts: np.ndarray) -> dict[str, float]:
  """Statistics of one count vector `[V]`."""
  total = counts.sum()
  p = counts / max(total, 1)
  nz = p[p > 0]
  entropy = float(-(nz * np.log2(nz)).sum())
  return {"usage": float((counts > 0).mean()), "entropy_bits": entropy,
          "perplexity": float(2.0 ** entropy), "dead_codes": int((counts == 0).sum())}


class CodebookCounter:
  """Accumulates code counts per token position and sub-codebook.

  Args:
    codebook_size: V, ids lie in [0, V).
  """

  def __init__(self, codebook_size: int):
    if codebook_size < 1:
      raise ValueError(f"codebook_size: expected a positive int, got {codebook_size}")
    self.codebook_size = codebook_size
    self.counts: np.ndarray | None = None  # int64 [K, F, V]

  def update(self, ids) -> CodebookCounter:
    """Adds token ids `[B, K]` or `[B, K, F]` (integers in [0, V))."""
    ids = np.asarray(ids)
    if ids.ndim == 2:
      ids = ids[..., None]
    if ids.ndim != 3 or not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(f"ids: expected integer [B, K] or [B, K, F], got {ids.dtype} {ids.shape}")
    v = self.codebook_size
    if ids.size and (ids.min() < 0 or ids.max() >= v):
      raise ValueError(f"ids: expected values in [0, {v - 1}], got [{ids.min()}, {ids.max()}]")
    _, k, f = ids.shape
    if self.counts is None:
      self.counts = np.zeros((k, f, v), np.int64)
    elif self.counts.shape[:2] != (k, f):
      raise ValueError(f"ids: expected [B, {self.counts.shape[0]}, {self.counts.shape[1]}] "
                       f"like earlier batches, got {ids.shape}")
    # One bincount over flat (position, factor, code) indices: exact and O(B K F).
    flat = (np.arange(k)[:, None] * f + np.arange(f)[None, :]) * v + ids.astype(np.int64)
    self.counts += np.bincount(flat.ravel(), minlength=k * f * v).reshape(k, f, v)
    return self

  def allreduce(self) -> CodebookCounter:
    """Sums counts over processes (no-op on one host)."""
    if self.counts is not None:
      self.counts = reduce.process_sum(self.counts)
    return self

  def results(self, per_position: bool = True,
              factor_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Flat `{name: value}`: scalars for the whole set, arrays `[K]` / `[F]` per position/factor.

    Names: `usage`, `perplexity`, `entropy_bits`, `dead_codes`, `max_entropy_bits`,
    `num_tokens` (counted), then `position/<stat>` arrays `[K]` and their `position/<stat>_mean`,
    and, when F > 1, `factor/<stat>` arrays `[F]` and the scalars `factor/<name>/<stat>`.

    Args:
      per_position: also the `position/...` statistics.
      factor_names: F distinct names of the sub-codebooks (FQGAN: its branches); None names
        them "0", "1", ...
    """
    if self.counts is None:
      raise ValueError("ids: no tokens were counted")
    k, f, v = self.counts.shape
    if factor_names is None:
      factor_names = [str(j) for j in range(f)]
    factor_names = [str(n) for n in factor_names]
    if len(factor_names) != f or len(set(factor_names)) != f:
      raise ValueError(f"factor_names: expected {f} distinct names (one per sub-codebook of "
                       f"the counted ids), got {factor_names}")
    out: dict[str, Any] = dict(_stats(self.counts.sum((0, 1))))
    out["max_entropy_bits"] = float(np.log2(v))
    out["num_tokens"] = int(self.counts.sum())
    if per_position:
      pos = [_stats(self.counts[i].sum(0)) for i in range(k)]
      for name in ("usage", "perplexity", "entropy_bits", "dead_codes"):
        values = np.array([p[name] for p in pos])
        out[f"position/{name}"] = values
        out[f"position/{name}_mean"] = float(values.mean())
    if f > 1:
      fac = [_stats(self.counts[:, j].sum(0)) for j in range(f)]
      for name in ("usage", "perplexity", "entropy_bits", "dead_codes"):
        out[f"factor/{name}"] = np.array([p[name] for p in fac])
      for factor, stats in zip(factor_names, fac):
        out.update({f"factor/{factor}/{name}": value for name, value in stats.items()})
    return out
