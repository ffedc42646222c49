"""The platform a computation is compiled for, as opposed to the process's default backend.

Kernel choices that depend on the hardware (`layers.attention(implementation="auto")`, the
quantizer's `lookup="auto"`) are made at trace time. `jax.default_backend()` names the
process's default devices, which is the wrong question when a step is compiled for other
devices: a CPU host compiling the train step for a TPU slice (`jaxtok.trainers.plan`,
deviceless AOT with `libtpu`), or a CPU sub-mesh on a GPU host. The trainer traces its
jitted functions under `compiling_for(mesh)`, so these choices follow the mesh's devices;
outside such a scope `target_platform()` is `jax.default_backend()`.

    with parallel.compiling_for(mesh):
      jax.jit(step).lower(...)       # "auto" kernels pick the mesh's platform
    step = parallel.on_platform(step, mesh)   # the same, around every trace of `step`

`jax.jit` caches one trace per function object and arguments, whatever scope is active: a
function already traced outside a scope is not re-traced inside one. `on_platform` returns a
new function object, so each wrapped step has its own traces.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
from jax.sharding import Mesh

PLATFORMS = ("cpu", "gpu", "tpu")

_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "jaxtok_target_platform", default=None)


def mesh_platform(mesh: Mesh) -> str:
  """"cpu", "gpu" or "tpu": the platform of `mesh`'s devices (one platform per mesh).

  CUDA and ROCm devices both count as "gpu".
  """
  platforms = {_canonical(d.platform) for d in mesh.devices.flat}
  if len(platforms) != 1:
    raise ValueError(f"mesh: expected devices of one platform, got {sorted(platforms)}")
  return platforms.pop()


def _canonical(platform: str) -> str:
  return "gpu" if platform in ("cuda", "rocm", "gpu") else platform


def target_platform() -> str:
  """The platform being compiled for: the innermost `compiling_for` scope, else
  `jax.default_backend()` (both canonical: "cpu", "gpu" or "tpu")."""
  scoped = _TARGET.get()
  return scoped if scoped is not None else _canonical(jax.default_backend())


@contextlib.contextmanager
def compiling_for(target: Mesh | str) -> Iterator[str]:
  """Within the block, `target_platform()` is `target`'s platform (a mesh or a name)."""
  platform = mesh_platform(target) if isinstance(target, Mesh) else _canonical(target)
  if platform not in PLATFORMS:
    raise ValueError(f"target: expected a Mesh or one of {PLATFORMS}, got {target!r}")
  token = _TARGET.set(platform)
  try:
    yield platform
  finally:
    _TARGET.reset(token)


def on_platform(fn: Callable[..., Any], target: Mesh | str) -> Callable[..., Any]:
  """`fn` traced under `compiling_for(target)` (wrap the function given to `jax.jit`)."""
  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with compiling_for(target):
      return fn(*args, **kwargs)
  return wrapped


def compile_only(mesh: Mesh) -> bool:
  """True when `mesh`'s devices can be compiled for but hold no buffers: the devices of a
  `jax.experimental.topologies` description (deviceless AOT, e.g. a TPU slice described on a
  CPU host). Arrays cannot be placed on them; only `jit(...).lower(...).compile()` works."""
  return any(type(d.client).__name__ == "CompileOnlyPyClient" for d in mesh.devices.flat)
