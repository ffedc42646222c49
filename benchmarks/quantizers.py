"""Quantizer throughput and distance-memory benchmark; prints one JSON object.

Run:
  python benchmarks/quantizers.py            # full size: 256 images x 256 tokens = 65,536
  python benchmarks/quantizers.py --quick    # 8,192 tokens, fewer repeats (smoke run)

Measures, on the default JAX backend:
  * tokens/s of a jitted forward+backward (loss + a fixed cotangent, gradients w.r.t. the
    parameters and the input) for VQ (L2, 16384x8), cosine VQ (16384x8), factorized VQ
    (2 x 16384, code_dim 8) and FSQ ([8,8,8,5,5,5] = 64,000 codes);
  * XLA's temp-buffer size (`compile().memory_analysis()`) of the forward+backward for the
    automatic chunked distance path vs. the unchunked one vs. a naive broadcast
    (z[:, None] - c[None]) implementation, for several codebook sizes (compiled, not run);
  * wall time of chunked vs. unchunked vs. naive at one mid-size codebook, same run (baseline).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtok.tokenizers.quantizers import (
  FactorizedVectorQuantizer,
  FiniteScalarQuantizer,
  VectorQuantizer,
  core,
)


def _grad_step(model, z):
  """Jitted fwd+bwd of `model` on z; returns (fn, args)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  cot = jax.random.normal(jax.random.key(1), z.shape[:-1] + (1,), jnp.float32)

  def loss(params, z):
    out, aux = nnx.merge(graphdef, params, rest)(z, train=False)
    return aux["loss"] + jnp.mean(out * cot)

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), (params, z)


def _naive_step(num_codes, dim, z):
  """Baseline: broadcast-difference distances, gather lookup, STE, VQ losses."""
  cb = jax.random.normal(jax.random.key(2), (num_codes, dim), jnp.float32)

  def loss(cb, z):
    flat = z.reshape(-1, dim)
    d = jnp.sum(jnp.square(flat[:, None, :] - cb[None, :, :]), axis=-1)
    q = cb[jnp.argmin(d, axis=-1)]
    commit, cbl = core.vq_losses(flat, q, 0.25)
    return commit + cbl + jnp.mean(core.straight_through(flat, q))

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), (cb, z)


def _temp_bytes(fn, args) -> int:
  analysis = fn.lower(*args).compile().memory_analysis()
  return int(analysis.temp_size_in_bytes) if analysis is not None else -1


def _time(fn, args, repeats: int) -> dict:
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))  # compile + first run
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return {"compile_and_first_s": round(first, 3), "median_step_s": statistics.median(times),
          "step_times_s": [round(t, 4) for t in times]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=256)
  parser.add_argument("--tokens_per_image", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--memory_codebooks", type=int, nargs="+", default=[1024, 4096, 16384])
  parser.add_argument("--baseline_codebook", type=int, default=2048)
  parser.add_argument("--quick", action="store_true", help="32 images, 1 repeat")
  args = parser.parse_args()
  if args.quick:
    args.images, args.repeats = 32, 1

  n_tokens = args.images * args.tokens_per_image
  shape = (args.images, args.tokens_per_image)
  z8 = jax.random.normal(jax.random.key(0), shape + (8,), jnp.float32)
  z6 = jax.random.normal(jax.random.key(0), shape + (6,), jnp.float32)
  result = {
      "benchmark": "quantizers",
      "backend": jax.default_backend(),
      "device": str(jax.devices()[0]),
      "num_devices_used": 1,
      "cpu": platform.processor() or platform.machine(),
      "tokens": n_tokens,
      "repeats": args.repeats,
      "throughput": [],
      "distance_memory": [],
      "baseline_timing": [],
  }

  rngs = lambda: nnx.Rngs(0)
  configs = [
      ("vq_l2_16384x8", lambda: VectorQuantizer(16384, 8, rngs=rngs()), z8),
      ("vq_cosine_16384x8", lambda: VectorQuantizer(16384, 8, distance="cosine", rngs=rngs()),
       z8),
      ("factorized_2x16384x8", lambda: FactorizedVectorQuantizer(
          16384, 8, num_factors=2, code_dim=8, entropy_loss_weight=0.03, rngs=rngs()), z8),
      ("fsq_888555_64000", lambda: FiniteScalarQuantizer((8, 8, 8, 5, 5, 5)), z6),
  ]
  for name, make, z in configs:
    fn, fargs = _grad_step(make(), z)
    t = _time(fn, fargs, args.repeats)
    entry = {"quantizer": name, "tokens_per_s": round(n_tokens / t["median_step_s"], 1),
             "distance_chunks": (core.num_chunks(n_tokens, 16384, None)
                                 if name.startswith(("vq", "factorized")) else None),
             "temp_bytes": _temp_bytes(fn, fargs), **t}
    result["throughput"].append(entry)
    print(f"# {name}: {entry['tokens_per_s']} tokens/s", file=sys.stderr, flush=True)

  for k in args.memory_codebooks:
    row = {"codebook_size": k, "code_dim": 8,
           "distance_matrix_bytes": n_tokens * k * 4,
           "chunks_auto": core.num_chunks(n_tokens, k, None)}
    for label, kw in (("chunked_auto", {}), ("unchunked", {"chunk_tokens": 0})):
      fn, fargs = _grad_step(VectorQuantizer(k, 8, rngs=rngs(), **kw), z8)
      row[f"{label}_temp_bytes"] = _temp_bytes(fn, fargs)
    fn, fargs = _naive_step(k, 8, z8)
    row["naive_broadcast_temp_bytes"] = _temp_bytes(fn, fargs)
    result["distance_memory"].append(row)
    print(f"# memory K={k}: {row}", file=sys.stderr, flush=True)

  k = args.baseline_codebook
  for label, (fn, fargs) in (
      ("chunked_auto", _grad_step(VectorQuantizer(k, 8, rngs=rngs()), z8)),
      ("unchunked", _grad_step(VectorQuantizer(k, 8, chunk_tokens=0, rngs=rngs()), z8)),
      ("naive_broadcast", _naive_step(k, 8, z8))):
    t = _time(fn, fargs, args.repeats)
    result["baseline_timing"].append({"impl": label, "codebook_size": k,
                                      "tokens_per_s": round(n_tokens / t["median_step_s"], 1),
                                      **t})
    print(f"# baseline {label} K={k}: {t['median_step_s']:.3f} s/step", file=sys.stderr, flush=True)

  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
