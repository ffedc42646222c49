r"""One short accelerator run: encode/decode and train-step speed in float32 and bfloat16, and
the model-FLOPs utilisation (MFU) of the TiTok-B-64 stage-1 step at the largest batch that
fits; one JSON. Run through `benchmarks/accelerator.sh` (installs the `gpu` extra first).

    python benchmarks/accelerator.py --out accelerator.json            # ~5 min on one GPU
    python benchmarks/accelerator.py --out /tmp/a.json --variants tiny --batch 2 \
      --train-variant tiny --train-batch 2 --mfu-variant tiny --mfu-start 2 --mfu-max 4 \
      --repeats 1 --matmul-n 512                                         # CPU dry run, ~2 min

Parts, run as mfu, train_step, encode_decode (each recorded: an error in one does not lose the
others, and the JSON is rewritten after each, so a timeout keeps what finished):
- `encode_decode`: TiTok S-128 / B-64 / L-32 `encode` and `decode_tokens` (jitted, the model's
  weights cast to the dtype; random init), images/s, and the bf16 results' max abs difference
  from float32 (codes agreement for encode, pixels for decode).
- `train_step`: the trainer's jitted stage-1 step (forward + backward + AdamW + EMA, frozen
  random MaskGIT teacher) of S-128 in float32 and bfloat16 (`TrainConfig.dtype`), steps/s.
- `mfu`: TiTok-B-64 stage-1 step in bfloat16, the batch doubled from `--mfu-start` until
  compiling or running fails for memory (or `--mfu-max`); at the largest batch that ran:
  step FLOPs (XLA cost analysis of a fully unrolled model), seconds, achieved FLOP/s, and
  MFU against the device's dense bf16 peak (`PEAK_BF16_TFLOPS`, by device kind) and against
  a bf16 matmul timed in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing
import train_step

from jaxtok.tokenizers import get_family
from jaxtok.trainers.train import Experiment

# Dense bfloat16 peak TFLOP/s per chip by `device_kind` substring (vendor data sheets).
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0,
                    "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0,
                    "TPU v6": 918.0}


def device_peak(kind: str) -> float | None:
  for key, tflops in PEAK_BF16_TFLOPS.items():
    if key.lower() in kind.lower():
      return tflops * 1e12
  return None


def matmul_tflops(dtype, n: int = 8192, repeats: int = 10) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  f = jax.jit(jnp.matmul)
  f(a, b).block_until_ready()
  return 2 * n ** 3 / timing.median_time(lambda: f(a, b), repeats) / 1e12


def _cast(state, dtype):
  return jax.tree_util.tree_map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)


def encode_decode_variant(name: str, batch: int, repeats: int) -> dict:
  """float32 and bfloat16 images/s of one variant, and bf16's agreement with float32."""
  family = get_family("titok")
  config = family.variant(name)
  graphdef, state = nnx.split(family.model_class(config, rngs=nnx.Rngs(0)))
  s = config.image_size
  images = jax.random.uniform(jax.random.key(0), (batch, s, s, 3), jnp.float32)
  enc = jax.jit(lambda st, x: nnx.merge(graphdef, st).encode(x))
  dec = jax.jit(lambda st, t: nnx.merge(graphdef, st).decode_tokens(t).astype(jnp.float32))
  row, ref = {}, {}
  for dtype in (jnp.float32, jnp.bfloat16):
    st = _cast(state, dtype)
    x = images.astype(dtype)
    ids = enc(st, x)
    ref_ids = ref.get("ids", ids)  # Both dtypes decode the float32 codes.
    recon = dec(st, ref_ids)
    r = {"encode_images_per_s": batch / timing.median_time(lambda st=st, x=x: enc(st, x),
                                                           repeats),
         "decode_images_per_s": batch / timing.median_time(
             lambda st=st, t=ref_ids: dec(st, t), repeats)}
    if ref:
      r["codes_equal_to_float32"] = float(jnp.mean(ids == ref["ids"]))
      r["decode_max_abs_diff_vs_float32"] = float(jnp.max(jnp.abs(recon - ref["recon"])))
    else:
      ref = {"ids": ids, "recon": recon}
    row[jnp.dtype(dtype).name] = r
  return row


def encode_decode(variants, batch: int, repeats: int) -> dict:
  return {name: encode_decode_variant(name, batch, repeats) for name in variants}


def _step_runner(name: str, batch: int, dtype: str, unroll: bool = False):
  config = train_step.config_for(name, batch)
  config.dtype = dtype
  if unroll:  # XLA counts a scanned body once; unrolled, the cost analysis is the real one.
    config.model.scan_unroll = max(config.model.enc_depth, config.model.dec_depth)
  exp = Experiment(config)
  state = exp.init_state()
  r = exp.data_config.resolution
  gb = exp.global_batch({"image": np.random.default_rng(0).integers(
      0, 256, (exp.local_batch, r, r, 3), dtype=np.uint8)})
  compiled = exp.train_step.lower(state, gb, exp.key, exp.frozen).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  holder = {"state": state}

  def step():
    holder["state"], m = compiled(holder["state"], gb, exp.key, exp.frozen)
    return jax.device_get(m["loss/total_loss"])

  step()
  return step, float(cost.get("flops", float("nan"))) if cost else float("nan")


def train_steps(name: str, batch: int, steps: int) -> dict:
  out = {}
  for dtype in ("float32", "bfloat16"):
    step, flops = _step_runner(name, batch, dtype)
    dt = timing.median_time(step, steps)
    out[dtype] = {"batch": batch, "steps_per_s": 1 / dt, "images_per_s": batch / dt}
  return out


def _is_oom(err: BaseException) -> bool:
  text = str(err).lower()
  return any(s in text for s in ("resource_exhausted", "out of memory", "oom", "allocat"))


def mfu(name: str, start: int, largest: int, steps: int, kind: str, matmul_n: int) -> dict:
  best, tried = None, []
  batch = start
  while batch <= largest:
    try:
      step, flops = _step_runner(name, batch, "bfloat16", unroll=True)
      dt = timing.median_time(step, steps)
    except Exception as err:  # The batch that no longer fits ends the search.
      if not _is_oom(err):
        raise
      tried.append({"batch": batch, "fits": False})
      break
    tried.append({"batch": batch, "fits": True, "seconds": dt})
    best = {"batch": batch, "seconds_per_step": dt, "step_flops": flops,
            "achieved_tflops": flops / dt / 1e12}
    del step
    batch *= 2
  if best is None:
    return {"tried": tried, "error": "no batch fits"}
  peak = device_peak(kind)
  measured = matmul_tflops(jnp.bfloat16, matmul_n)
  best.update({"device_kind": kind, "peak_bf16_tflops_datasheet": peak and peak / 1e12,
               "mfu_vs_datasheet": peak and best["achieved_tflops"] * 1e12 / peak,
               "matmul_bf16_tflops_same_run": measured,
               "mfu_vs_measured_matmul": best["achieved_tflops"] / measured, "tried": tried})
  return best


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="accelerator.json")
  p.add_argument("--variants", default="S-128,B-64,L-32")
  p.add_argument("--batch", type=int, default=32, help="encode/decode batch")
  p.add_argument("--train-batch", type=int, default=32)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--mfu-start", type=int, default=64)
  p.add_argument("--mfu-max", type=int, default=512)
  p.add_argument("--skip-mfu", action="store_true")
  p.add_argument("--matmul-n", type=int, default=8192, help="side of the peak matmul")
  p.add_argument("--train-variant", default="S-128", help="train_step part's config")
  p.add_argument("--mfu-variant", default="B-64")
  args = p.parse_args(argv)
  kind = jax.devices()[0].device_kind
  out = {"benchmark": "accelerator", "device_kind": kind, **timing.machine(), "parts": {}}
  try:
    out["matmul_tflops"] = {"n": args.matmul_n,
                            "float32": matmul_tflops(jnp.float32, args.matmul_n),
                            "bfloat16": matmul_tflops(jnp.bfloat16, args.matmul_n)}
  except Exception:
    out["matmul_tflops"] = {"error": traceback.format_exc(limit=3)}
  # The headline figure (MFU) first: a timeout keeps what finished.
  parts = []
  if not args.skip_mfu:
    parts.append(("mfu", lambda: mfu(args.mfu_variant, args.mfu_start, args.mfu_max,
                                     args.repeats, kind, args.matmul_n)))
  parts += [("train_step", lambda: train_steps(args.train_variant, args.train_batch,
                                                args.repeats)),
            ("encode_decode", lambda: encode_decode(
                [v for v in args.variants.split(",") if v], args.batch, args.repeats))]
  for name, fn in parts:
    t0 = time.perf_counter()
    try:
      out["parts"][name] = fn()
    except Exception:  # Recorded; the other parts still run.
      out["parts"][name] = {"error": traceback.format_exc(limit=5)}
    out["parts"][name + "_wall_s"] = round(time.perf_counter() - t0, 1)
    with open(args.out, "w") as f:  # Written after every part: a timeout keeps what ran.
      json.dump(out, f, indent=2, default=float)
    print(name, "done", file=sys.stderr, flush=True)
  print(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
  main()
