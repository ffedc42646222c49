r"""FQGAN encode/decode throughput on this machine, as JSON.

    python benchmarks/fqgan.py                                # dual-16, batch 8, 256^2
    python benchmarks/fqgan.py --variants dual-16,triple-16,tiny --batch 8 --repeats 3

For each variant (random init, float32, `image_size`^2 inputs in [0, 1]): images/s of the
jitted `FQGAN.encode` (images -> ids `[B, h*w, k]`: trunk, per-branch adapters and
quantizers) and `FQGAN.decode_tokens` (ids -> images: code lookup, `post_quant_conv`,
decoder), each with its model FLOPs per image from XLA's cost analysis and the achieved
fraction of this machine's float32 matmul peak, a 2048 x 2048 `jnp.matmul` timed in the
same run before and after (`benchmarks/encode_decode.py`). The feature-prediction heads are
training-only and not part of either figure. XLA counts a `lax.scan` body once, so FLOPs come
from a copy of each function lowered abstractly with the adapter loops unrolled (same model,
`scan_unroll` = adapter depth).

Times are medians over `--repeats` calls of functions compiled ahead of time (compile time is
reported apart). The load average before and after is printed: figures taken on a busy
machine are not comparable across runs, only within one (the matmul peak is the yardstick).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import timing
from benchmarks.encode_decode import _flops, matmul_peak_gflops
from benchmarks.flextok import _figure, _timed
from jaxtok.tokenizers import get_family


def bench_variant(name: str, batch: int, repeats: int, peak: float) -> dict:
  """Encode and decode figures of `fqgan:<name>` at `batch` images."""
  family = get_family("fqgan")
  config = family.variant(name)
  model = family.model_class(config, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  unrolled = dataclasses.replace(config, scan_unroll=config.adapter_layers)
  abs_graphdef, abs_state = nnx.split(nnx.eval_shape(
      lambda: family.model_class(unrolled, rngs=nnx.Rngs(0))))
  n_params = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
  s = config.image_size
  images = jnp.asarray(np.random.default_rng(0).random((batch, s, s, 3), np.float32))

  def encode(g):
    return lambda st, x: nnx.merge(g, st).encode(x)

  def decode(g):
    return lambda st, ids: nnx.merge(g, st).decode_tokens(ids)

  # Random ids of the encoder's shape: decoding costs the same for any ids (a code lookup),
  # and it spares a second compile of the encoder outside `_timed`.
  spec = model.token_spec
  shape = (batch, spec.num_tokens) + ((spec.last_dim,) if spec.last_dim else ())
  ids = jnp.asarray(np.random.default_rng(1).integers(0, spec.vocab_size, shape), jnp.int32)
  enc_compile, enc_s = _timed(jax.jit(encode(graphdef)), (state, images), repeats)
  dec_compile, dec_s = _timed(jax.jit(decode(graphdef)), (state, ids), repeats)
  return {
      "branches": list(config.branches), "grid": [config.grid_size] * 2,
      "num_tokens": config.grid_size ** 2, "codebook_size": config.codebook_size,
      "ids_shape": list(ids.shape), "params_m": round(n_params / 1e6, 2),
      "encode": {**_figure(batch, enc_s, _flops(encode(abs_graphdef), abs_state, images), peak),
                 "compile_s": round(enc_compile, 2)},
      "decode": {**_figure(batch, dec_s, _flops(decode(abs_graphdef), abs_state, ids), peak),
                 "compile_s": round(dec_compile, 2)},
      "loadavg_1": round(os.getloadavg()[0], 2),
  }


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variants", default="dual-16", help="comma-separated fqgan VARIANTS")
  p.add_argument("--batch", type=int, default=8, help="images per call")
  p.add_argument("--repeats", type=int, default=3, help="timed calls per figure (median)")
  args = p.parse_args(argv)
  if args.batch < 1:
    raise ValueError(f"--batch: expected >= 1, got {args.batch}")
  if args.repeats < 1:
    raise ValueError(f"--repeats: expected >= 1, got {args.repeats}")
  variants = [v for v in args.variants.split(",") if v]
  known = get_family("fqgan").variants
  unknown = [v for v in variants if v not in known]
  if unknown or not variants:
    raise ValueError(f"--variants: expected names of {sorted(known)}, got {args.variants!r}")
  out = {"benchmark": "fqgan", "dtype": "float32", "batch": args.batch,
         "repeats": args.repeats, **timing.machine()}
  peak = matmul_peak_gflops(repeats=5)
  out["matmul_2048_f32_gflops"] = round(peak, 2)
  out["variants"] = {name: bench_variant(name, args.batch, args.repeats, peak)
                     for name in variants}
  out["matmul_2048_f32_gflops_after"] = round(matmul_peak_gflops(repeats=5), 2)
  out["loadavg_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
