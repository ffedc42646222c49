"""Tests of jaxtok.parallel.distributed in one process (the multi-process runs over gloo are
tests/trainers/test_multiprocess.py and tests/tokenize/test_cli.py)."""
import os
import signal

import jax
import pytest

from jaxtok.parallel import distributed

_ENV = ("JAXTOK_COORDINATOR", "JAXTOK_NUM_PROCESSES", "JAXTOK_PROCESS_ID",
        "JAXTOK_LOCAL_DEVICES", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


@pytest.fixture
def calls(monkeypatch):
  """A clean environment, and a record of the `jax.distributed.initialize` calls made."""
  for name in _ENV:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(distributed, "_INITIALIZED", False)
  made = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: made.append(kw))
  return made


def test_a_single_host_is_a_no_op(calls, monkeypatch):
  assert distributed.initialize() is False
  assert distributed.initialize("127.0.0.1:1", 1, 0) is False  # One process: nothing to join.
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "only-one")
  assert distributed.initialize() is False
  assert calls == []
  assert distributed.is_primary()
  assert distributed.sync_flag(True) is True and distributed.sync_flag(False) is False


def test_partial_settings_are_a_value_error(calls, monkeypatch):
  with pytest.raises(ValueError, match="must be given together"):
    distributed.initialize(coordinator_address="127.0.0.1:1")
  monkeypatch.setenv("JAXTOK_NUM_PROCESSES", "2")
  with pytest.raises(ValueError, match="num_processes=2"):
    distributed.initialize(process_id=0)
  assert calls == []


def test_explicit_settings_from_the_environment(calls, monkeypatch):
  updates = []
  monkeypatch.setattr(jax.config, "update", lambda *a: updates.append(a))
  monkeypatch.setenv("JAXTOK_COORDINATOR", "127.0.0.1:9")
  monkeypatch.setenv("JAXTOK_NUM_PROCESSES", "2")
  monkeypatch.setenv("JAXTOK_PROCESS_ID", "1")
  monkeypatch.setenv("JAXTOK_LOCAL_DEVICES", "0,1")
  assert distributed.initialize() is True
  assert calls == [{"coordinator_address": "127.0.0.1:9", "num_processes": 2, "process_id": 1,
                    "local_device_ids": [0, 1]}]
  # CPU devices of different processes talk through gloo.
  assert updates == [("jax_cpu_collectives_implementation", "gloo")]
  assert distributed.initialize() is True and len(calls) == 1  # Once per process.


def test_arguments_override_and_clusters_are_auto_detected(calls, monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "tpu")  # No CPU collectives to choose.
  monkeypatch.setenv("JAXTOK_COORDINATOR", "127.0.0.1:9")
  assert distributed.initialize("10.0.0.1:5", 4, 3) is True
  assert calls == [{"coordinator_address": "10.0.0.1:5", "num_processes": 4, "process_id": 3,
                    "local_device_ids": None}]
  monkeypatch.delenv("JAXTOK_COORDINATOR")
  for name, value in (("SLURM_NTASKS", "2"), ("OMPI_COMM_WORLD_SIZE", "4"),
                      ("TPU_WORKER_HOSTNAMES", "a,b")):
    calls.clear()
    monkeypatch.setattr(distributed, "_INITIALIZED", False)
    with monkeypatch.context() as m:
      m.setenv(name, value)
      assert distributed.initialize() is True
    assert calls == [{}], name  # jax reads the cluster itself.


def test_stop_signal_records_sigterm_and_restores_the_handler():
  before = signal.getsignal(signal.SIGTERM)
  stop = distributed.StopSignal()
  stop.install()
  try:
    assert stop.signum is None
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signum == signal.SIGTERM
  finally:
    stop.uninstall()
  assert signal.getsignal(signal.SIGTERM) is before
