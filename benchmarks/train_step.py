r"""Train-step throughput of the jaxtok trainer on this machine, as JSON.

  python benchmarks/train_step.py                       # tiny + S-128 (stage 1, batch 2)
  python benchmarks/train_step.py --configs tiny --steps 20

For each config: steps/s and images/s of the jitted, donated train step (the exact function
`python -m jaxtok.trainers.train` runs, after compilation), the step's FLOPs from XLA's cost
analysis, and the fraction of this machine's measured peak matmul throughput (a 2048 x 2048
float32 matmul timed in the same run, the baseline).
"""
import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxtok.configs import titok as titok_configs  # noqa: E402
from jaxtok.trainers.train import Experiment  # noqa: E402


def matmul_peak(n: int = 2048, iters: int = 10) -> dict:
  """FLOP/s of an n x n float32 matmul (best of `iters`)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(iters):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return {"matmul_n": n, "seconds": best, "flops_per_sec": 2 * n ** 3 / best}


def config_for(name: str, batch: int | None):
  if name == "tiny":
    config = titok_configs.get_config("tiny")
  else:
    config = titok_configs.get_config(f"variant={name}")
    if config.recipe == "stage1":
      config.teacher = "random"  # Same compute as the released MaskGIT VQGAN.
  config.mesh.data = -1
  if batch:
    config.batch_size = batch
  return config


def bench(name: str, batch: int | None, steps: int) -> dict:
  config = config_for(name, batch)
  t0 = time.perf_counter()
  exp = Experiment(config)
  state = exp.init_state()
  rng = np.random.default_rng(0)
  r = exp.data_config.resolution
  batch_np = {"image": rng.integers(0, 256, (exp.local_batch, r, r, 3), dtype=np.uint8)}
  gb = exp.global_batch(batch_np)
  compiled = exp.train_step.lower(state, gb, exp.key, exp.frozen).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  state, m = exp.step(state, gb)  # Warm-up (first run allocations).
  jax.block_until_ready(m)
  setup = time.perf_counter() - t0
  t = time.perf_counter()
  for _ in range(steps):
    state, m = exp.step(state, gb)
    jax.device_get(m["loss/total_loss"])  # The trainer fetches metrics every step too.
  dt = (time.perf_counter() - t) / steps
  return {"config": name, "recipe": config.recipe, "batch_size": config.batch_size,
          "resolution": r, "params": int(sum(x.size for x in
                                             jax.tree_util.tree_leaves(state.params))),
          "steps_timed": steps, "seconds_per_step": dt, "steps_per_sec": 1.0 / dt,
          "images_per_sec": config.batch_size / dt, "step_flops": flops,
          "achieved_flops_per_sec": flops / dt, "setup_seconds": setup}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", default="tiny,S-128")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--s128_batch", type=int, default=2)
  args = parser.parse_args()
  peak = matmul_peak()
  results = []
  for name in args.configs.split(","):
    res = bench(name, args.s128_batch if name != "tiny" else None,
                args.steps if name == "tiny" else max(2, args.steps // 5))
    res["fraction_of_matmul_peak"] = res["achieved_flops_per_sec"] / peak["flops_per_sec"]
    results.append(res)
  print(json.dumps({"benchmark": "train_step", "backend": jax.default_backend(),
                    "devices": jax.device_count(), "cpu_count": os.cpu_count(),
                    "machine": platform.machine(), "jax": jax.__version__,
                    "baseline_matmul": peak, "results": results}, indent=2))


if __name__ == "__main__":
  main()
