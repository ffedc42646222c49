"""Multi-process start-up: `jax.distributed.initialize` when (and only when) needed.

The same command line runs on one laptop and on every worker of a TPU pod / GPU cluster.
Call `initialize()` before anything touches a JAX backend.

Explicit settings come from arguments or environment variables:
  JAXTOK_COORDINATOR   host:port of process 0 (e.g. "127.0.0.1:12345")
  JAXTOK_NUM_PROCESSES total number of processes
  JAXTOK_PROCESS_ID    this process's index
  JAXTOK_LOCAL_DEVICES optional comma-separated local device ids
Without them, cluster environments JAX can auto-detect (multi-host TPU, SLURM, Open MPI)
use `jax.distributed.initialize()` with no arguments; a single host is a no-op.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils

_INITIALIZED = False


def _auto_detectable_cluster() -> bool:
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if hosts and len([h for h in hosts.split(",") if h.strip()]) > 1:
    return True
  return (int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1
          or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: list[int] | None = None,
               cpu_collectives: str = "gloo") -> bool:
  """Initializes the JAX distributed runtime if this is a multi-process run.

  Args:
    coordinator_address: "host:port" of process 0 (or $JAXTOK_COORDINATOR).
    num_processes: number of processes (or $JAXTOK_NUM_PROCESSES).
    process_id: index of this process (or $JAXTOK_PROCESS_ID).
    local_device_ids: devices this process uses (or $JAXTOK_LOCAL_DEVICES).
    cpu_collectives: CPU cross-process collectives implementation ("gloo" or "mpi"),
      needed when the devices are CPUs.

  Returns:
    True if the distributed runtime is (now) initialized, False on a single host.

  Raises:
    ValueError: when only some of the explicit settings are given.
  """
  global _INITIALIZED
  if _INITIALIZED:
    return True
  env = os.environ
  coordinator_address = coordinator_address or env.get("JAXTOK_COORDINATOR") or None
  if num_processes is None and env.get("JAXTOK_NUM_PROCESSES"):
    num_processes = int(env["JAXTOK_NUM_PROCESSES"])
  if process_id is None and env.get("JAXTOK_PROCESS_ID"):
    process_id = int(env["JAXTOK_PROCESS_ID"])
  if local_device_ids is None and env.get("JAXTOK_LOCAL_DEVICES"):
    local_device_ids = [int(x) for x in env["JAXTOK_LOCAL_DEVICES"].split(",")]
  explicit = [coordinator_address is not None, num_processes is not None,
              process_id is not None]
  if any(explicit) and not all(explicit):
    raise ValueError(
        "distributed: coordinator_address, num_processes and process_id must be given "
        f"together; got coordinator_address={coordinator_address!r}, "
        f"num_processes={num_processes!r}, process_id={process_id!r}")
  if all(explicit):
    if num_processes == 1:
      return False
    if cpu_collectives and (env.get("JAX_PLATFORMS", "") in ("cpu", "")):
      # Without a collectives backend, CPU devices of different processes cannot talk.
      jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids)
  elif _auto_detectable_cluster():
    jax.distributed.initialize()
  else:
    return False
  _INITIALIZED = True
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def is_primary() -> bool:
  """True on the process that writes logs, grids and exports (process 0)."""
  return jax.process_index() == 0


def sync_flag(flag: bool) -> bool:
  """True on every process if `flag` is True on any of them (a cross-host OR).

  Used so that a SIGTERM seen by one worker makes all of them save and stop together.
  """
  if jax.process_count() == 1:
    return bool(flag)
  flags = multihost_utils.process_allgather(np.asarray([int(flag)], np.int32))
  return bool(np.any(flags))


class StopSignal:
  """Records SIGTERM/SIGINT (preemption) so the training loop can save and exit cleanly.

  `install()` replaces the handlers (main thread only; elsewhere it is a no-op) and
  `uninstall()` restores them; `signum` is the last signal received, or None.
  """

  def __init__(self):
    self.signum = None
    self._old = {}

  def install(self) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
      # ValueError: not the main thread (e.g. a worker thread of a test runner).
      with contextlib.suppress(ValueError):
        self._old[sig] = signal.signal(sig, self._handle)

  def uninstall(self) -> None:
    for sig, old in self._old.items():
      signal.signal(sig, old)
    self._old = {}

  def _handle(self, signum, frame):
    self.signum = signum
