"""Encode/decode throughput of TiTok variants through the public API; prints JSON.

    python benchmarks/encode_decode.py                     # S-128, B-64, L-32 at batch 8
    python benchmarks/encode_decode.py --variants S-128 --batch 4 --quick
    PYTHONPATH=. python benchmarks/encode_decode.py --torch --repeats 2   # + same-shape torch

For each variant (random init, float32, 256x256 inputs): images/s of `tok.encode` (images ->
ids) and `tok.decode` (ids -> images, including the MaskGIT pixel decoder of the two-stage
models), the model FLOPs per image from XLA's cost analysis of the jitted function, and the
achieved fraction of this machine's float32 matmul peak, measured in the same run with a
jitted 2048x2048 `jnp.matmul`. Official PyTorch figures are quoted alongside as the baseline:
by default the ones below (torch 2.13 CPU, 2-core machine), or those of a JSON file given with
`--baselines FILE` or `$JAXTOK_BASELINES` (`{"S-128": {"encode": img/s, "decode": img/s},
...}`, measured on your kind of machine). With `--torch-vit` and torch installed, a same-run
PyTorch ViT stack of the S-128 encoder's shape is timed as well, so ratios can be read from one
run; `--torch` times a same-shape PyTorch TiTok (`torch_titok.TorchTiTok`: encode and decode
with its MaskGIT pixel decoder) in alternation with jaxtok, so each ratio comes from one run.

Times are medians over `--repeats` runs after one warm-up (compile) call. The load average
is printed too: figures taken on a busy machine are not comparable.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxtok
from jaxtok.tokenizers import get_family

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing

BASELINES_ENV = "JAXTOK_BASELINES"

# Official PyTorch figures (bytedance/1d-tokenizer, torch 2.13, batch 8, float32, 2 CPU cores,
# random weights; images/s), the default of `--baselines`.
OFFICIAL_TORCH_IMG_PER_S = {
    "S-128": {"encode": 7.04, "decode": 0.58},
    "B-64": {"encode": 2.45, "decode": 0.49},
    "L-32": {"encode": 0.70, "decode": 0.37, "note": "taken under some load"},
}
OFFICIAL_MATMUL_GFLOPS = {"torch": 150.0, "jax": "183-200"}


def _median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
  """Measured float32 matmul throughput of `[n, n] @ [n, n]` (jitted, default precision)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.matmul)
  f(a, b).block_until_ready()
  t = _median_time(lambda: f(a, b).block_until_ready(), repeats)
  return 2 * n ** 3 / t / 1e9


def _flops(fn, *args) -> float | None:
  cost = jax.jit(fn).lower(*args).cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def model_flops(config, image_shape, ids_shape) -> tuple[float | None, float | None]:
  """XLA cost-analysis FLOPs of one encode and one decode call (whole batch).

  XLA counts the body of a `lax.scan` once, not once per iteration, so the ViT layer loop
  (scanned in jaxtok.tokenizers.layers.Transformer) would be undercounted by ~depth x. We
  lower a fully unrolled copy of the model instead; it is built abstractly (`nnx.eval_shape`),
  so this costs a trace, not an init, and the numbers are the same model's.
  """
  if any(f.name == "scan_unroll" for f in dataclasses.fields(config)):
    config = dataclasses.replace(config, scan_unroll=max(config.enc_depth, config.dec_depth))
  model_cls = get_family("titok").model_class
  graphdef, state = nnx.split(nnx.eval_shape(lambda: model_cls(config, rngs=nnx.Rngs(0))))
  x = jax.ShapeDtypeStruct(image_shape, jnp.float32)
  t = jax.ShapeDtypeStruct(ids_shape, jnp.int32)
  enc = _flops(lambda st, x: nnx.merge(graphdef, st).encode(x), state, x)
  dec = _flops(lambda st, t: nnx.merge(graphdef, st).decode_tokens(t), state, t)
  return enc, dec


def load_baselines(path: str | None) -> dict:
  """`{variant: {"encode": img/s, "decode": img/s}}` from a JSON file, else the defaults."""
  if not path:
    return OFFICIAL_TORCH_IMG_PER_S
  with open(path) as f:
    baselines = json.load(f)
  if not isinstance(baselines, dict) or not all(
      isinstance(v, dict) and {"encode", "decode"} <= set(v) for v in baselines.values()):
    raise ValueError(f"--baselines: expected {{variant: {{'encode': .., 'decode': ..}}}} in "
                     f"{path!r}")
  return baselines


def bench_variant(name: str, batch: int, repeats: int, peak_gflops: float,
                  baselines: dict, same_run_torch: bool = False) -> dict:
  t0 = time.perf_counter()
  tok = jaxtok.load(f"titok:{name}", seed=0)
  build_s = time.perf_counter() - t0
  n_params = sum(int(np.size(x)) for x in
                 jax.tree_util.tree_leaves(nnx.state(tok.model, nnx.Param)))
  s = tok.image_size
  images = np.random.default_rng(0).random((batch, s, s, 3), dtype=np.float32)

  t0 = time.perf_counter()
  ids = tok.encode(images)  # Compile + first run.
  enc_first_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  tok.decode(ids)
  dec_first_s = time.perf_counter() - t0
  torch_fig = None
  if same_run_torch:
    # jaxtok and the same-shape PyTorch model in alternation (timing.alternate).
    import torch  # noqa: PLC0415  (optional baseline)
    import torch_titok  # noqa: PLC0415
    tmodel = torch_titok.TorchTiTok(tok.config).eval()
    timages = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    tids = torch.from_numpy(np.array(ids)).long()
    with torch.inference_mode():
      enc = timing.alternate({"jax": lambda: tok.encode(images),
                              "torch": lambda: tmodel.encode(timages)}, repeats, warmup=False)
      dec = timing.alternate({"jax": lambda: tok.decode(ids),
                              "torch": lambda: tmodel.decode(tids)}, repeats, warmup=False)
    enc_s, dec_s = enc["jax"], dec["jax"]
    torch_fig = {k: {"images_per_s": round(batch / t["torch"], 3),
                     "jax_speedup_vs_torch": round(t["torch"] / t["jax"], 3)}
                 for k, t in (("encode", enc), ("decode", dec))}
  else:
    enc_s = _median_time(lambda: tok.encode(images), repeats)
    dec_s = _median_time(lambda: tok.decode(ids), repeats)

  enc_flops, dec_flops = model_flops(tok.config, images.shape, ids.shape)

  def side(seconds, flops):
    ips = batch / seconds
    out = {"images_per_s": round(ips, 3), "seconds_per_batch": round(seconds, 4)}
    if flops is not None:
      per_image = flops / batch
      out["gflops_per_image"] = round(per_image / 1e9, 3)
      out["achieved_gflops"] = round(per_image * ips / 1e9, 2)
      out["fraction_of_matmul_peak"] = round(per_image * ips / 1e9 / peak_gflops, 3)
    return out

  result = {
      "params_m": round(n_params / 1e6, 2), "num_tokens": tok.num_tokens,
      "build_s": round(build_s, 2),
      "encode": {**side(enc_s, enc_flops), "first_call_s": round(enc_first_s, 2)},
      "decode": {**side(dec_s, dec_flops), "first_call_s": round(dec_first_s, 2)},
  }
  if torch_fig:
    result["same_shape_torch_same_run"] = torch_fig
  result["loadavg_1"] = round(os.getloadavg()[0], 2)
  base = baselines.get(name)
  if base:
    result["official_torch_baseline"] = base
    result["speedup_vs_official"] = {
        k: round(result[k]["images_per_s"] / base[k], 3) for k in ("encode", "decode")}
  return result


def torch_vit_baseline(batch: int, repeats: int) -> dict | None:
  """Same-run PyTorch ViT stack of the S-128 encoder's shape (8 layers, width 512, 385 tokens)."""
  try:
    import torch  # noqa: PLC0415  (optional baseline)
  except ImportError:
    return None
  torch.manual_seed(0)
  layer = lambda: torch.nn.TransformerEncoderLayer(512, 8, 2048, dropout=0.0,
                                                   activation="gelu", batch_first=True,
                                                   norm_first=True)
  net = torch.nn.Sequential(*[layer() for _ in range(8)]).eval()
  x = torch.randn(batch, 1 + 256 + 128, 512)
  with torch.inference_mode():
    net(x)
    t = _median_time(lambda: net(x), repeats)
  return {"what": "torch nn.TransformerEncoder, 8 x width 512, 385 tokens (S-128 encoder shape)",
          "images_per_s": round(batch / t, 3), "torch_threads": torch.get_num_threads()}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variants", default="S-128,B-64,L-32",
                 help="comma-separated titok VARIANTS names")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median)")
  p.add_argument("--quick", action="store_true",
                 help="one timed run per figure and a shorter matmul measurement")
  p.add_argument("--baselines", default=os.environ.get(BASELINES_ENV),
                 help=f"JSON file of official img/s per variant (default ${BASELINES_ENV}, "
                      "else the figures quoted in this script)")
  p.add_argument("--torch-vit", action="store_true",
                 help="also time a same-run PyTorch ViT stack (needs torch)")
  p.add_argument("--torch", action="store_true",
                 help="time a same-shape PyTorch TiTok (torch_titok.py) in alternation with "
                      "jaxtok, and both frameworks' matmul peak (needs torch)")
  p.add_argument("--torch-threads", type=int, default=None, help="default: the cores")
  args = p.parse_args(argv)
  if args.batch < 1:
    raise ValueError(f"--batch: expected >= 1, got {args.batch}")
  repeats = 1 if args.quick else args.repeats
  variants = [v for v in args.variants.split(",") if v]
  baselines = load_baselines(args.baselines)
  load_before = os.getloadavg()
  if args.torch:
    timing.torch_threads(args.torch_threads)
  peak = matmul_peak_gflops(repeats=3 if args.quick else 10)
  out = {
      "benchmark": "encode_decode", "batch": args.batch, "dtype": "float32",
      "repeats": repeats, "jax": jax.__version__, "backend": jax.default_backend(),
      "devices": len(jax.devices()), "cpu_count": os.cpu_count(),
      "machine": platform.machine(), "loadavg_1_5_15_before": [round(x, 2) for x in load_before],
      "matmul_2048_f32_gflops": round(peak, 2),
      "official_matmul_gflops": OFFICIAL_MATMUL_GFLOPS,
      "variants": {},
  }
  if args.torch:
    out.update(timing.matmul_peaks())
  for name in variants:
    out["variants"][name] = bench_variant(name, args.batch, repeats, peak, baselines,
                                          same_run_torch=args.torch)
  if args.torch_vit:
    out["torch_vit_same_run"] = torch_vit_baseline(args.batch, repeats)
  out["loadavg_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
