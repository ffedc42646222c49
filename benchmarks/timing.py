"""Timing helpers the benchmarks share: medians, alternating A/B runs, matmul peaks, FLOPs.

Not a benchmark itself. Scripts in this folder import it as `timing` (they run as
`python benchmarks/NAME.py`, so this folder is on `sys.path`).

Same-run ratios are what the benchmarks report: on a shared machine absolute times move by
2-5x with the load, but two sides timed in alternation see the same load, so `alternate`
runs the sides in turns (a, b, a, b, ...) and each side's figure is the median of its turns.
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp


def once(fn: Callable[[], Any]) -> float:
  """Seconds of one call of `fn` (its result blocked on, for jax and torch alike)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t0


def median_time(fn: Callable[[], Any], repeats: int) -> float:
  """Median seconds over `repeats` calls (call `fn` once before to exclude compilation)."""
  return statistics.median(once(fn) for _ in range(repeats))


def alternate(sides: Mapping[str, Callable[[], Any]], repeats: int,
              warmup: bool = True) -> dict[str, float]:
  """`{name: median seconds}`, the sides called in turns `repeats` times each."""
  if repeats < 1:
    raise ValueError(f"repeats: expected >= 1, got {repeats}")
  if warmup:
    for fn in sides.values():
      jax.block_until_ready(fn())
  times: dict[str, list[float]] = {k: [] for k in sides}
  for _ in range(repeats):
    for name, fn in sides.items():
      times[name].append(once(fn))
  return {k: statistics.median(v) for k, v in times.items()}


def jax_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
  """float32 `[n, n] @ [n, n]` GFLOP/s of XLA on the default device (median of `repeats`)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.matmul)
  f(a, b).block_until_ready()
  return 2 * n ** 3 / median_time(lambda: f(a, b), repeats) / 1e9


def torch_matmul_gflops(n: int = 2048, repeats: int = 5) -> float | None:
  """The same for torch on the CPU (None without torch)."""
  try:
    import torch  # noqa: PLC0415  (optional baseline)
  except ImportError:
    return None
  a, b = torch.randn(n, n), torch.randn(n, n)
  torch.mm(a, b)
  return 2 * n ** 3 / median_time(lambda: torch.mm(a, b), repeats) / 1e9


def matmul_peaks(n: int = 2048, repeats: int = 5) -> dict[str, float | None]:
  """Same-run float32 matmul GFLOP/s of both frameworks, alternated (the machine's peak)."""
  out: dict[str, list[float]] = {"jax": [], "torch": []}
  for _ in range(2):
    out["jax"].append(jax_matmul_gflops(n, repeats))
    t = torch_matmul_gflops(n, repeats)
    if t is not None:
      out["torch"].append(t)
  return {f"{k}_matmul_{n}_f32_gflops": round(max(v), 1) if v else None
          for k, v in out.items()}


def cost_flops(jitted_or_fn: Callable[..., Any], *args: Any) -> float | None:
  """XLA cost-analysis FLOPs of one call (a scanned body counts once: unroll first)."""
  fn = jitted_or_fn if hasattr(jitted_or_fn, "lower") else jax.jit(jitted_or_fn)
  cost = fn.lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def machine() -> dict[str, Any]:
  """Load average, cores and versions: the context every figure needs."""
  return {"loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
          "cpu_count": os.cpu_count(), "jax": jax.__version__,
          "backend": jax.default_backend(), "devices": jax.device_count()}


def torch_threads(n: int | None = None) -> int | None:
  """Sets torch's intra-op threads to `n` (default: the cores, as XLA uses); returns it."""
  try:
    import torch  # noqa: PLC0415
  except ImportError:
    return None
  torch.set_num_threads(n or os.cpu_count() or 1)
  return torch.get_num_threads()
