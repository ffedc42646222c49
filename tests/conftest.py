"""Test setup shared by the whole suite.

Forces 8 host (CPU) devices before jax is imported so that every run exercises sharding
(docs/design.md §8), shares one XLA compilation cache and keeps `slow` tests for `-m slow`.
Fixture discovery is `tests/fixture_files.py`.
"""
import os
import tempfile

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  _flags += " --xla_force_host_platform_device_count=8"
# XLA:CPU aborts the process (SIGABRT, "Termination timeout ... exceeded") when one of the 8
# simulated devices reaches a collective 40 s after the others. On 2 shared cores under
# `pytest -n 2` a big step (FQGAN with its teacher, fsdp) can be that slow: that is load, not a
# deadlock, so the suite waits up to 15 minutes (subprocesses inherit XLA_FLAGS).
for _flag, _value in (("xla_cpu_collective_call_terminate_timeout_seconds", 900),
                      ("xla_cpu_collective_call_warn_stuck_timeout_seconds", 300),
                      ("xla_cpu_collective_timeout_seconds", 900)):
  if _flag not in _flags:
    _flags += f" --{_flag}={_value}"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the whole run, shared by pytest-xdist workers and
# by the subprocesses that the trainer tests spawn (CLI runs, kill -9 + restart, multi-process):
# they compile the same tiny models again and again, and compiling dominates the suite's time.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"jaxtok-test-xla-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402  (must come after XLA_FLAGS)
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_collection_modifyitems(config, items):
  # `slow` tests run only when asked for with -m slow (or -m "slow or not slow").
  if "slow" in (config.getoption("-m") or ""):
    return
  skip = pytest.mark.skip(reason="slow; run with -m slow")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)
