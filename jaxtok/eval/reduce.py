"""Cross-host sums for evaluators: every accumulator is summed over processes at the end."""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils


def process_sum(x) -> np.ndarray:
  """Sum of a host numpy array over all processes (identity on one host), dtype kept.

  64-bit values travel as raw uint32 pairs: with x64 off (JAX's default) a float64 or int64
  array would otherwise be narrowed by the gather.
  """
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x
  flat = np.ascontiguousarray(x).reshape(-1)
  if flat.dtype.itemsize == 8:
    gathered = np.asarray(multihost_utils.process_allgather(flat.view(np.uint32)))
    gathered = gathered.reshape(jax.process_count(), -1).view(flat.dtype)
  else:
    gathered = np.asarray(multihost_utils.process_allgather(flat)).reshape(
        jax.process_count(), -1)
  return gathered.sum(axis=0).astype(x.dtype).reshape(x.shape)
