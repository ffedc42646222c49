r"""FlexTok throughput on this machine, as JSON: encode, decode and train-step images/s.

    python benchmarks/flextok.py                          # d12-d12 and tiny
    python benchmarks/flextok.py --variants tiny --batch 8 --repeats 3

For each variant (random init, float32): images/s of the jitted encoder (front-end array ->
256 / R ids), of the rectified-flow decoder (all R ids -> front-end array) at 20 and 25 Euler
steps without guidance and with CFG and APG (guided steps run the conditional and
unconditional passes as one doubled batch), and of the trainer's jitted, donated train step
(`jaxtok.trainers.train.Experiment` with the `jaxtok/configs/flextok.py` settings, the flow
loss only). Each figure comes with the model FLOPs per image from XLA's cost analysis and the
fraction of this machine's float32 matmul peak (a 2048 x 2048 `jnp.matmul` timed in the same
run, `benchmarks/encode_decode.py`).

`d12-d12` is a latent-space model: it encodes 16 x 32 x 32 VAE latents (a 256 px image); the
VAE is not part of the figures. `tiny` works on 32 px pixels. XLA counts a `lax.scan` body
once, so FLOPs are taken from a copy of each function lowered with the block loops unrolled
(same model, `scan_unroll` = depth); the sampler's step loop is counted by running the cost
analysis at 1 step and multiplying by the step count (the loop body is all but the tiny
id -> condition projection, so this is exact to < 0.1 %).

Times are medians over `--repeats` calls of functions compiled ahead of time (compile time
is reported apart); the train step is timed after one warm-up step. The load average and the
matmul peak before and after are printed: figures taken on a busy machine are not comparable.
Defaults keep a run to minutes on 2 cores: batch 1, one repeat and 2 train steps at the
published sizes (CFG not timed there: it costs what APG does); batch 8, 3 repeats at tiny.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.encode_decode import _flops, _median_time, matmul_peak_gflops
from jaxtok.configs import flextok as flextok_configs
from jaxtok.tokenizers import get_family
from jaxtok.trainers.train import Experiment

STEPS = (20, 25)
GUIDANCE = ("none", "cfg", "apg")
GUIDANCE_SCALE = 7.5  # The official pipeline's default scale.


def _unrolled(config):
  depth = max(config.enc_depth, config.dec_depth)
  return dataclasses.replace(config, scan_unroll=depth)


def _figure(batch: int, seconds: float, flops_per_batch: float | None, peak: float) -> dict:
  ips = batch / seconds
  out = {"images_per_s": round(ips, 4), "seconds_per_batch": round(seconds, 4)}
  if flops_per_batch is not None:
    per_image = flops_per_batch / batch
    out["gflops_per_image"] = round(per_image / 1e9, 3)
    out["achieved_gflops"] = round(per_image * ips / 1e9, 2)
    out["fraction_of_matmul_peak"] = round(per_image * ips / 1e9 / peak, 4)
  return out


def _timed(jitted, args: tuple, repeats: int) -> tuple[float, float]:
  """(compile seconds, median seconds of `repeats` calls) of `jitted(*args)`, compiled ahead
  of time so that no timed call compiles."""
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  return compile_s, _median_time(lambda: jax.block_until_ready(compiled(*args)), repeats)


def bench_inference(name: str, batch: int, repeats: int, peak: float, steps: tuple[int, ...],
                    guidance: tuple[str, ...]) -> dict:
  family = get_family("flextok")
  config = family.variant(name)
  model = family.model_class(config, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  abs_graphdef, abs_state = nnx.split(nnx.eval_shape(
      lambda: family.model_class(_unrolled(config), rngs=nnx.Rngs(0))))
  n_params = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
  c = config
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (batch, c.input_size, c.input_size,
                                                           c.channels)), jnp.float32)

  def encode(g):
    return lambda st, x: nnx.merge(g, st).encode_latents(x)

  def decode(g, n, guide):
    keep = jnp.full((batch,), c.num_registers, jnp.int32)
    return lambda st, ids, seed: nnx.merge(g, st).decode_padded(
        ids, keep, steps=n, guidance=guide, guidance_scale=GUIDANCE_SCALE, seed=seed)

  enc = jax.jit(encode(graphdef))
  first, seconds = _timed(enc, (state, x), repeats)
  ids = enc(state, x)
  result = {"front_end": c.front_end, "input": [c.input_size, c.input_size, c.channels],
            "num_tokens": c.num_registers, "params_m": round(n_params / 1e6, 2),
            "encode": {**_figure(batch, seconds, _flops(encode(abs_graphdef), abs_state, x),
                                 peak), "compile_s": round(first, 2)},
            "decode": {}}
  seed = jnp.int32(0)
  for guide in guidance:
    # One Euler step's FLOPs (the loop body); the step loop scales it exactly.
    one = _flops(decode(abs_graphdef, 1, guide), abs_state, ids, seed)
    for n in steps:
      first, seconds = _timed(jax.jit(decode(graphdef, n, guide)), (state, ids, seed),
                              repeats)
      result["decode"][f"{guide}_{n}_steps"] = {
          **_figure(batch, seconds, None if one is None else one * n, peak),
          "compile_s": round(first, 2)}
  return result


def bench_train(name: str, batch: int, steps: int, peak: float) -> dict:
  """Train-step figures of `flextok.py:<name>` at `batch` images (0: the config's)."""
  arg = name if name in ("tiny", "smoke") else f"variant={name}"
  config = flextok_configs.get_config(arg)
  config.batch_size = batch or config.batch_size
  batch = config.batch_size
  config.mesh.data, config.progress_bar = -1, False
  t0 = time.perf_counter()
  exp = Experiment(config)
  state = exp.init_state()
  r, channels = exp.data_config.resolution, config.model.channels
  # A latent-space model's batch holds front-end latents (random values: the same compute;
  # the VAE is not timed), through the same jitted step.
  images = np.random.default_rng(0).integers(0, 256, (exp.local_batch, r, r, channels),
                                             np.uint8)
  gb = exp.global_batch({"image": images})
  state, m = exp.step(state, gb)  # Compile + first run.
  jax.block_until_ready(m)
  setup = time.perf_counter() - t0
  t = time.perf_counter()
  for _ in range(steps):
    state, m = exp.step(state, gb)
    jax.device_get(m["loss/total_loss"])  # The trainer fetches metrics every step too.
  seconds = (time.perf_counter() - t) / steps
  # FLOPs from the same step with the block loops unrolled, lowered abstractly.
  config.model = _unrolled(config.model)
  flat = Experiment(config)
  batch_spec = jax.ShapeDtypeStruct(gb["image"].shape, gb["image"].dtype)
  cost = flat.train_step.lower(flat.abstract_state, {"image": batch_spec}, flat.key,
                               flat.frozen).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost["flops"]) if cost and "flops" in cost else None
  return {"batch_size": batch, "resolution": r, "steps_timed": steps,
          "setup_s": round(setup, 2), **_figure(batch, seconds, flops, peak)}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variants", default="d12-d12,tiny", help="comma-separated flextok VARIANTS")
  p.add_argument("--batch", type=int, default=0,
                 help="images per call (0: 1 for d12-d12 and the other published sizes, 8 "
                      "for tiny / smoke)")
  p.add_argument("--repeats", type=int, default=0,
                 help="timed runs per figure, median (0: 1 for published sizes, 3 for tiny)")
  p.add_argument("--train-batch", type=int, default=0,
                 help="train-step batch (0: 2 for published sizes, the config's for tiny)")
  p.add_argument("--train-steps", type=int, default=0,
                 help="timed train steps (0: 2 for published sizes, 5 for tiny)")
  p.add_argument("--steps", default=",".join(map(str, STEPS)), help="Euler steps to time")
  p.add_argument("--guidance", default="",
                 help=f"guidance modes to time, of {GUIDANCE} (default: all for tiny; "
                      "none,apg for published sizes: CFG costs what APG does, up to APG's "
                      "per-step projection)")
  args = p.parse_args(argv)
  steps = tuple(int(s) for s in args.steps.split(",") if s)
  guidance = tuple(g for g in args.guidance.split(",") if g)
  for g in guidance:
    if g not in GUIDANCE:
      raise ValueError(f"--guidance: expected modes of {GUIDANCE}, got {g!r}")
  for name in ("batch", "repeats", "train_batch", "train_steps"):
    if getattr(args, name) < 0:
      raise ValueError(f"--{name.replace('_', '-')}: expected >= 0 (0 = auto), got "
                       f"{getattr(args, name)}")
  if not steps or min(steps) < 1:
    raise ValueError(f"--steps: expected a list of ints >= 1, got {args.steps!r}")
  load_before = os.getloadavg()
  peak = matmul_peak_gflops(repeats=5)
  out = {"benchmark": "flextok", "dtype": "float32", "guidance_scale": GUIDANCE_SCALE,
         "jax": jax.__version__, "backend": jax.default_backend(), "devices": jax.device_count(),
         "cpu_count": os.cpu_count(), "machine": platform.machine(),
         "loadavg_1_5_15_before": [round(x, 2) for x in load_before],
         "matmul_2048_f32_gflops": round(peak, 2), "variants": {}}
  for name in (v for v in args.variants.split(",") if v):
    small = name in ("tiny", "smoke")
    batch = args.batch or (8 if small else 1)
    repeats = args.repeats or (3 if small else 1)
    modes = guidance or (GUIDANCE if small else ("none", "apg"))
    res = bench_inference(name, batch, repeats, peak, steps, modes)
    res["batch"], res["repeats"] = batch, repeats
    res["train_step"] = bench_train(name, args.train_batch or (0 if small else 2),
                                    args.train_steps or (5 if small else 2), peak)
    out["variants"][name] = res
  out["matmul_2048_f32_gflops_after"] = round(matmul_peak_gflops(repeats=5), 2)
  out["loadavg_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
