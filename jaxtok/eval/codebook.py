"""Codebook statistics over a whole evaluation set: usage, perplexity, entropy, dead codes.

Counts are accumulated on the host per (token position, sub-codebook, code), sparse (only
the triples seen), across batches and hosts, and turned into statistics only at the end, so
the numbers describe the full set, not an average of per-batch numbers. `F = 1` for a single
codebook; factorized quantizers (FQGAN, arXiv 2411.16681) emit tokens `[B, K, F]` with one id
per sub-codebook.

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

import jax
import numpy as np

from jaxtok.eval import reduce


def _stats(counts: np.ndarray, v: int) -> dict[str, float]:
  """Statistics of the non-zero counts `counts` of a V-code distribution."""
  counts = counts[counts > 0]
  p = counts / max(counts.sum(), 1)
  entropy = float(-(p * np.log2(p)).sum())
  return {"usage": counts.size / v, "entropy_bits": entropy,
          "perplexity": float(2.0 ** entropy), "dead_codes": int(v - counts.size)}


def _group(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(sorted distinct keys, summed counts)."""
  if keys.size == 0:
    return keys.astype(np.int64), counts.astype(np.int64)
  uniq, inverse = np.unique(keys, return_inverse=True)
  return uniq.astype(np.int64), np.bincount(inverse.ravel(), weights=counts,
                                            minlength=uniq.size).astype(np.int64)


def _gather(x: np.ndarray) -> np.ndarray:
  """The int64 vectors `x` of all processes, concatenated (padded to a common length)."""
  n = reduce.process_sum(np.eye(jax.process_count(), dtype=np.int64)[jax.process_index()]
                         * x.size)
  out = np.zeros((jax.process_count(), int(n.max())), np.int64)
  out[jax.process_index(), :x.size] = x
  out = reduce.process_sum(out)
  return np.concatenate([out[i, :n[i]] for i in range(jax.process_count())])


class CodebookCounter:
  """Accumulates code counts per token position and sub-codebook.

  The counts are kept sparse: the distinct (position, sub-codebook, code) triples seen and
  their counts, so memory grows with what was counted, not with K F V (an FSQ tokenizer has
  an implicit codebook of up to 2^30 codes).

  Args:
    codebook_size: V, ids lie in [0, V).
  """

  def __init__(self, codebook_size: int):
    if codebook_size < 1:
      raise ValueError(f"codebook_size: expected a positive int, got {codebook_size}")
    self.codebook_size = codebook_size
    self.shape: tuple[int, int, int] | None = None  # (K, F, V) once ids were seen.
    self._keys = np.zeros((0,), np.int64)  # Sorted flat indices (position * F + factor) V + code.
    self._counts = np.zeros((0,), np.int64)
    self._pending: list[np.ndarray] = []  # Flat indices of batches not merged yet.
    self._pending_size = 0

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
    if self.shape is None:
      self.shape = (k, f, v)
    elif self.shape[:2] != (k, f):
      raise ValueError(f"ids: expected [B, {self.shape[0]}, {self.shape[1]}] like earlier "
                       f"batches, got {ids.shape}")
    flat = (np.arange(k)[:, None] * f + np.arange(f)[None, :]) * v + ids.astype(np.int64)
    self._pending.append(flat.ravel())
    self._pending_size += flat.size
    # Merged when the pending ids outnumber the merged keys: each id is sorted O(log) times.
    if self._pending_size > max(self._keys.size, 1 << 16):
      self._merge()
    return self

  def _merge(self) -> None:
    if self._pending:
      pending = np.concatenate(self._pending)
      self._keys, self._counts = _group(np.concatenate([self._keys, pending]),
                                        np.concatenate([self._counts,
                                                        np.ones(pending.size, np.int64)]))
      self._pending, self._pending_size = [], 0

  def allreduce(self) -> CodebookCounter:
    """Sums counts over processes (no-op on one host)."""
    self._merge()
    if jax.process_count() > 1 and self.shape is not None:
      self._keys, self._counts = _group(_gather(self._keys), _gather(self._counts))
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
    if self.shape is None:
      raise ValueError("ids: no tokens were counted")
    self._merge()
    k, f, v = self.shape
    if factor_names is None:
      factor_names = [str(j) for j in range(f)]
    factor_names = [str(n) for n in factor_names]
    if len(factor_names) != f or len(set(factor_names)) != f:
      raise ValueError(f"factor_names: expected {f} distinct names (one per sub-codebook of "
                       f"the counted ids), got {factor_names}")
    slot, code = np.divmod(self._keys, v)  # slot = position * F + factor.
    position, factor = np.divmod(slot, f)

    def stats_of(select: np.ndarray) -> dict[str, float]:  # Over the codes, summed.
      return _stats(_group(code[select], self._counts[select])[1], v)

    everything = np.ones(code.shape, bool)
    out: dict[str, Any] = dict(stats_of(everything))
    out["max_entropy_bits"] = float(np.log2(v))
    out["num_tokens"] = int(self._counts.sum())
    if per_position:
      pos = [stats_of(position == i) for i in range(k)]
      for name in ("usage", "perplexity", "entropy_bits", "dead_codes"):
        values = np.array([p[name] for p in pos])
        out[f"position/{name}"] = values
        out[f"position/{name}_mean"] = float(values.mean())
    if f > 1:
      fac = [stats_of(factor == j) for j in range(f)]
      for name in ("usage", "perplexity", "entropy_bits", "dead_codes"):
        out[f"factor/{name}"] = np.array([p[name] for p in fac])
      for factor_name, stats in zip(factor_names, fac):
        out.update({f"factor/{factor_name}/{name}": value for name, value in stats.items()})
    return out
