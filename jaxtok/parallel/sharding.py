"""Shardings over the ("data", "fsdp") mesh of `jaxtok.parallel.mesh` (docs/design.md §5).

Batches are split over both mesh axes (every device sees a different slice of the global
batch); parameters and optimizer state are replicated over "data" and, when `fsdp > 1`, split
over "fsdp" along their largest divisible dimension. The trainer's step is `jax.jit` with these
shardings as in/out shardings; per-host batches become global arrays with
`jaxtok.data.to_global_batch`.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtok.parallel.mesh import DATA_AXES


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device of the mesh."""
  return NamedSharding(mesh, P(DATA_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def leaf_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
  """FSDP spec for one array: split its largest dim divisible by `fsdp`, else replicate."""
  if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(tree: Any, mesh: Mesh, min_size: int = 2**14) -> Any:
  """NamedShardings for a (possibly abstract) state pytree; FSDP when the mesh has it."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree_util.tree_map(
      lambda x: NamedSharding(mesh, leaf_spec(tuple(np.shape(x)), fsdp, min_size)), tree)


def global_batch_size_check(global_batch: int, mesh: Mesh) -> int:
  """Per-process batch size; the global batch must split evenly over devices/processes."""
  if global_batch % mesh.size:
    raise ValueError(f"batch_size: expected a multiple of the {mesh.size} mesh devices, got "
                     f"{global_batch}")
  if global_batch % jax.process_count():
    raise ValueError(f"batch_size: expected a multiple of {jax.process_count()} processes, "
                     f"got {global_batch}")
  return global_batch // jax.process_count()

