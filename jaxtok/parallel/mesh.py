"""The device mesh: a "data" axis and an optional "fsdp" axis (`MeshConfig`, `make_mesh`)."""
# No `from __future__ import annotations`: config_flags reads MeshConfig's field types.
import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

DATA_AXES = ("data", "fsdp")


@dataclasses.dataclass(kw_only=True)
class MeshConfig:
  """Device mesh: `data` x `fsdp`; -1 on `data` takes every remaining device."""
  data: int = -1
  fsdp: int = 1
  # Parameters smaller than this many elements stay replicated under fsdp.
  fsdp_min_size: int = 2**14


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ("data", "fsdp") mesh over `devices` (default: all global devices).

  Args:
    config: `data=-1` takes every device not used by `fsdp`.
    devices: explicit devices (e.g. a 1-device sub-mesh in tests).

  Raises:
    ValueError: if the axis sizes do not multiply to the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  fsdp = config.fsdp
  if fsdp < 1 or n % fsdp:
    raise ValueError(f"mesh.fsdp: expected a divisor of the {n} devices, got {fsdp}")
  data = n // fsdp if config.data == -1 else config.data
  if data * fsdp != n:
    raise ValueError(f"mesh: data ({config.data}) x fsdp ({fsdp}) must equal the number of "
                     f"devices ({n})")
  auto = jax.sharding.AxisType.Auto
  if len(devices) == len(jax.devices()) and devices == list(jax.devices()):
    # make_mesh orders devices for the physical topology (ICI rings on TPU).
    return jax.make_mesh((data, fsdp), DATA_AXES, axis_types=(auto, auto), devices=devices)
  return Mesh(np.asarray(devices, dtype=object).reshape(data, fsdp), DATA_AXES,
              axis_types=(auto, auto))
