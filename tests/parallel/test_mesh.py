"""Tests of jaxtok.parallel.mesh: ("data", "fsdp") meshes over all or some devices."""
import jax
import pytest

from jaxtok import parallel


def test_meshes_over_every_device():
  assert jax.device_count() == 8, "conftest forces 8 host devices"
  mesh = parallel.make_mesh(parallel.MeshConfig())
  assert mesh.axis_names == parallel.DATA_AXES and dict(mesh.shape) == {"data": 8, "fsdp": 1}
  assert set(mesh.devices.flat) == set(jax.devices())
  mesh = parallel.make_mesh(parallel.MeshConfig(fsdp=2))  # data=-1 takes what fsdp leaves.
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
  mesh = parallel.make_mesh(parallel.MeshConfig(data=2, fsdp=4))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4}


def test_meshes_over_some_devices_keep_their_order():
  devices = jax.devices()[5:1:-1]
  mesh = parallel.make_mesh(parallel.MeshConfig(fsdp=2), devices)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2}
  assert list(mesh.devices.flat) == devices
  assert list(parallel.make_mesh(parallel.MeshConfig(), devices[:1]).devices.flat) == devices[:1]


def test_bad_axis_sizes_are_value_errors():
  with pytest.raises(ValueError, match="mesh.fsdp"):
    parallel.make_mesh(parallel.MeshConfig(fsdp=3))
  with pytest.raises(ValueError, match="mesh.fsdp"):
    parallel.make_mesh(parallel.MeshConfig(fsdp=0))
  with pytest.raises(ValueError, match=r"mesh: data \(3\) x fsdp \(2\)"):
    parallel.make_mesh(parallel.MeshConfig(data=3, fsdp=2))
