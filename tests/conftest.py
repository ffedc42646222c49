"""Test setup shared by the whole suite.

Forces 8 host (CPU) devices before jax is imported so that every run exercises sharding
(docs/design.md §8), shares one XLA compilation cache and keeps `slow` tests for `-m slow`.
Fixture discovery is `tests/fixture_files.py`.
"""
import os
import tempfile

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
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
