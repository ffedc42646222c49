"""Running on many devices and hosts: the device mesh, shardings, multi-host start-up.

    from jaxtok import parallel
    parallel.initialize()                        # before any JAX backend use; no-op on one host
    mesh = parallel.make_mesh(parallel.MeshConfig(fsdp=2))
    batch = parallel.batch_sharding(mesh)        # leading axis over every device

- `mesh`: `MeshConfig` (the trainer's `config.mesh`) and `make_mesh`;
- `sharding`: batch, replicated and FSDP state shardings, the per-process batch size;
- `platform`: the platform a step is compiled for (`compiling_for(mesh)`, `target_platform()`),
  which "auto" kernel choices follow instead of `jax.default_backend()`;
- `distributed`: `jax.distributed` start-up from flags or the environment, the primary
  process, a cross-host OR of a flag, and the preemption signal handler.
Used by the trainer and by `jaxtok.tokenize`.
"""
from jaxtok.parallel.distributed import StopSignal, initialize, is_primary, sync_flag
from jaxtok.parallel.mesh import DATA_AXES, MeshConfig, make_mesh
from jaxtok.parallel.sharding import (
  batch_sharding,
  global_batch_size_check,
  leaf_spec,
  replicated,
  state_shardings,
)
from jaxtok.platform import (
  compile_only,
  compiling_for,
  mesh_platform,
  on_platform,
  target_platform,
)

__all__ = ["DATA_AXES", "MeshConfig", "StopSignal", "batch_sharding", "compile_only",
           "compiling_for",
           "global_batch_size_check", "initialize", "is_primary", "leaf_spec", "make_mesh",
           "mesh_platform", "on_platform", "replicated", "state_shardings", "sync_flag",
           "target_platform"]
