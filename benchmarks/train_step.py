r"""Train-step throughput of the jaxtok trainer on this machine, as JSON.

  python benchmarks/train_step.py                       # tiny + S-128 (stage 1, batch 2)
  python benchmarks/train_step.py --configs tiny --steps 20
  python benchmarks/train_step.py --torch --s128_batch 4 --steps 10   # + same-shape torch step

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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import numpy as np
import timing

from jaxtok.configs import titok as titok_configs
from jaxtok.trainers.train import Experiment


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


class TorchStage1Step:
  """A same-shape PyTorch stage-1 step: frozen teacher codes, proxy-code CE + VQ loss,
  backward, grad-norm clip, AdamW, EMA of the weights (the work of jaxtok's step)."""

  def __init__(self, model_config, batch: int, resolution: int):
    import torch  # noqa: PLC0415  (optional baseline)
    import torch_titok  # noqa: PLC0415
    self.torch = torch
    torch.manual_seed(0)
    self.model = torch_titok.TorchTiTok(model_config)
    # Stage 1 trains the encoder, quantizer and decoder ViT; the pixel decoder is not used.
    self.model.pixel_decoder.requires_grad_(False)
    self.teacher = torch_titok.PixelEncoder(model_config.pixel_decoder).eval().requires_grad_(False)
    self.params = [p for p in self.model.parameters() if p.requires_grad]
    self.ema = [p.detach().clone() for p in self.params]
    self.opt = torch.optim.AdamW(self.params, lr=1e-4, betas=(0.9, 0.99), weight_decay=1e-4)
    self.images = torch.rand(batch, 3, resolution, resolution)

  def __call__(self) -> float:
    torch = self.torch
    with torch.no_grad():
      target = self.teacher(self.images * 2 - 1)
    loss = self.model.stage1_loss(self.images, target)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.params, 1.0)
    self.opt.step()
    with torch.no_grad():
      torch._foreach_lerp_(self.ema, self.params, 1 - 0.999)
    return float(loss.detach())


def bench(name: str, batch: int | None, steps: int, same_run_torch: bool = False) -> dict:
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
  holder = {"state": state}

  def jax_step():
    holder["state"], m = exp.step(holder["state"], gb)
    return jax.device_get(m["loss/total_loss"])  # The trainer fetches metrics every step too.

  extra = {}
  if same_run_torch and config.recipe == "stage1":
    tstep = TorchStage1Step(exp.model_config, config.batch_size, r)
    t = timing.alternate({"jax": jax_step, "torch": tstep}, steps)
    dt = t["jax"]
    extra = {"same_shape_torch_same_run": {
        "what": "torch_titok stage-1 step: teacher + CE + backward + clip + AdamW + EMA",
        "steps_per_sec": 1.0 / t["torch"], "jax_speedup_vs_torch": t["torch"] / t["jax"]}}
  else:
    jax_step()
    dt = timing.median_time(jax_step, steps)
  extra["loadavg_1"] = round(os.getloadavg()[0], 2)
  return {**extra, "config": name, "recipe": config.recipe, "batch_size": config.batch_size,
          "resolution": r, "params": int(sum(x.size for x in
                                             jax.tree_util.tree_leaves(state.params))),
          "steps_timed": steps, "seconds_per_step": dt, "steps_per_sec": 1.0 / dt,
          "images_per_sec": config.batch_size / dt, "step_flops": flops,
          "achieved_flops_per_sec": flops / dt, "setup_seconds": setup}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", default="tiny,S-128")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--s128_batch", type=int, default=2,
                      help="batch of the non-tiny configs (the issue's figure: 4)")
  parser.add_argument("--torch", action="store_true",
                      help="time a same-shape PyTorch stage-1 step in alternation (needs torch)")
  parser.add_argument("--torch-threads", type=int, default=None, help="default: the cores")
  args = parser.parse_args()
  extra = {}
  if args.torch:
    extra["torch_threads"] = timing.torch_threads(args.torch_threads)
    extra.update(timing.matmul_peaks())
  peak = matmul_peak()
  results = []
  for name in args.configs.split(","):
    res = bench(name, args.s128_batch if name != "tiny" else None,
                args.steps if name == "tiny" else max(2, args.steps // 5),
                same_run_torch=args.torch)
    res["fraction_of_matmul_peak"] = res["achieved_flops_per_sec"] / peak["flops_per_sec"]
    results.append(res)
  print(json.dumps({"benchmark": "train_step", "backend": jax.default_backend(),
                    "devices": jax.device_count(), "cpu_count": os.cpu_count(),
                    "machine": platform.machine(), "jax": jax.__version__,
                    "baseline_matmul": peak, **extra, "results": results}, indent=2))


if __name__ == "__main__":
  main()
