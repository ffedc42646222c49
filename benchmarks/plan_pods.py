r"""The run plan of the official configs on TPU slices, beside a plain-ViT reference; JSON lines.

Each cell compiles jaxtok's real train step for a TPU topology on this (CPU) host with libtpu
(`jaxtok.trainers.plan`, deviceless AOT) at the config's official global batch, in bfloat16,
and records fits / per-chip memory / FLOPs / HBM traffic / roofline MFU. For TiTok cells the
same topology, batch, dtype and optimizer also compile a plain pre-norm ViT encoder + decoder of
the same widths, depths and token counts (`vit_reference_step`: no quantizer, no frozen teacher,
`jax.nn.dot_product_attention`), and the cell reports jaxtok / reference ratios of HBM traffic
per image and of temporaries.

    pip install -e ".[tpu]"
    python benchmarks/plan_pods.py --out benchmarks/results/plan_pods.jsonl \
        [--only titok:S-128:stage1] [--topologies v5e:4x4,v5e:8x8,v5p:2x2x1] \
        [--variants fsdp=1:remat=none,fsdp=4:remat=full] [--no-reference]
    python benchmarks/plan_pods.py --table benchmarks/results/plan_pods.jsonl   # README table

Every line of the output is one cell (config, topology, mesh / remat variant), written as soon
as it is compiled, so an interrupted sweep keeps what finished. A TPU compile of a full-size
step takes minutes of CPU per cell (S-128 stage 1 at batch 256 on v5e:4x4: 806 s on 2 shared
cores); the sweep of every cell is hours on such a host.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import time
import traceback

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # The host compiles; it runs nothing.

import jax
import jax.numpy as jnp
import optax

from jaxtok import parallel
from jaxtok.configs import flextok as flextok_configs
from jaxtok.configs import fqgan as fqgan_configs
from jaxtok.configs import titok as titok_configs
from jaxtok.trainers import plan as plan_lib

# (cell name, config getter): the official recipes at their official global batch.
CONFIGS = {
    **{f"titok:{v}:{r}": (lambda v=v, r=r: titok_configs.get_config(f"variant={v},recipe={r}"))
       for v in ("S-128", "B-64", "L-32") for r in ("stage1", "stage2")},
    **{f"titok:{v}:single": (lambda v=v: titok_configs.get_config(f"variant={v},recipe=single"))
       for v in ("BL-64-VQ", "BL-128-VQ", "SL-256-VQ", "LL-32-VAE")},
    "flextok:d18-d28": lambda: flextok_configs.get_config("variant=d18-d28"),
    "fqgan:dual-16": lambda: fqgan_configs.get_config("variant=dual-16"),
}
TOPOLOGIES = ("v5e:4x4", "v5e:8x8", "v5p:2x2x1")
VARIANTS = ("fsdp=1:remat=none", "fsdp=4:remat=none", "fsdp=1:remat=full")
KEEP = ("fits", "peak_bytes", "argument_bytes", "temp_bytes", "output_bytes", "hbm_bytes",
        "flops", "hbm_traffic_bytes", "collective_bytes", "roofline_step_s", "roofline_mfu",
        "flops_per_image", "hbm_traffic_per_image", "compile_s", "required_bytes",
        "available_bytes", "while_loop_trips", "cost_counts_loops_once", "error")


# ==========================================================================================
# The plain-ViT reference.
# ==========================================================================================
def _block_params(key, width: int, depth: int, mlp: int):
  k = jax.random.split(key, 4)
  init = lambda kk, shape: 0.02 * jax.random.normal(kk, (depth, *shape), jnp.float32)
  return {"ln1": jnp.ones((depth, width)), "ln2": jnp.ones((depth, width)),
          "qkv": init(k[0], (width, 3 * width)), "proj": init(k[1], (width, width)),
          "fc1": init(k[2], (width, mlp)), "fc2": init(k[3], (mlp, width))}


def _blocks(x, params, heads: int, dtype):
  """Pre-norm ViT blocks, scanned over the stacked `params` (as jaxtok's Transformer)."""
  def norm(h, scale):
    h32 = h.astype(jnp.float32)
    h32 = (h32 - h32.mean(-1, keepdims=True)) * jax.lax.rsqrt(h32.var(-1, keepdims=True) + 1e-5)
    return (h32 * scale).astype(dtype)

  def body(h, p):
    p = jax.tree_util.tree_map(lambda a: a.astype(dtype), p)
    b, t, w = h.shape
    q, k, v = jnp.split(norm(h, p["ln1"]) @ p["qkv"], 3, axis=-1)
    split = lambda a: a.reshape(b, t, heads, w // heads)
    a = jax.nn.dot_product_attention(split(q), split(k), split(v)).reshape(b, t, w)
    h = h + a @ p["proj"]
    h = h + jax.nn.gelu(norm(h, p["ln2"]) @ p["fc1"]) @ p["fc2"]
    return h, None

  return jax.lax.scan(body, x, params)[0]


def vit_reference(model_config):
  """(init, loss) of a plain ViT encoder + decoder shaped like a TiTok config: patches +
  latent tokens through the encoder, the latent tokens (projected) + one mask token per
  decoder patch through the decoder, a linear head per decoder patch (proxy-code logits for a
  two-stage head, patch pixels otherwise)."""
  c = model_config
  g_enc, g_dec = c.image_size // c.enc_patch_size, c.image_size // c.dec_patch_size
  pe, pd = c.enc_patch_size, c.dec_patch_size
  two_stage = c.head == "two_stage"
  out_dim = c.pixel_codebook_size if two_stage else pd * pd * 3
  mlp_e, mlp_d = int(c.enc_width * c.mlp_ratio), int(c.dec_width * c.mlp_ratio)

  def init(key):
    k = jax.random.split(key, 6)
    n = lambda kk, shape: 0.02 * jax.random.normal(kk, shape, jnp.float32)
    return {"patch": n(k[0], (pe * pe * 3, c.enc_width)),
            "enc_pos": n(k[1], (g_enc * g_enc + c.num_latent_tokens, c.enc_width)),
            "latent": n(k[1], (c.num_latent_tokens, c.enc_width)),
            "enc": _block_params(k[2], c.enc_width, c.enc_depth, mlp_e),
            "bottleneck": n(k[3], (c.enc_width, c.dec_width)),
            "mask": n(k[3], (g_dec * g_dec, c.dec_width)),
            "dec": _block_params(k[4], c.dec_width, c.dec_depth, mlp_d),
            "head": n(k[5], (c.dec_width, out_dim))}

  def loss(params, images, dtype):
    b = images.shape[0]
    x = images.astype(dtype).reshape(b, g_enc, pe, g_enc, pe, 3).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, g_enc * g_enc, pe * pe * 3) @ params["patch"].astype(dtype)
    lat = jnp.broadcast_to(params["latent"].astype(dtype), (b, *params["latent"].shape))
    x = jnp.concatenate([x, lat], axis=1) + params["enc_pos"].astype(dtype)
    x = _blocks(x, params["enc"], c.enc_heads, dtype)[:, -c.num_latent_tokens:]
    z = x @ params["bottleneck"].astype(dtype)
    mask = jnp.broadcast_to(params["mask"].astype(dtype), (b, *params["mask"].shape))
    y = _blocks(jnp.concatenate([mask, z], axis=1), params["dec"], c.dec_heads, dtype)
    out = (y[:, :g_dec * g_dec] @ params["head"].astype(dtype)).astype(jnp.float32)
    if two_stage:  # Cross-entropy against fixed pseudo-targets (the code ids' shape).
      targets = (jnp.arange(g_dec * g_dec) * 7919) % out_dim
      return optax.softmax_cross_entropy_with_integer_labels(out, targets[None]).mean()
    target = images.reshape(b, g_dec, pd, g_dec, pd, 3).transpose(0, 1, 3, 2, 4, 5)
    return jnp.mean((out - target.reshape(out.shape)) ** 2)

  return init, loss


def vit_reference_report(planner: plan_lib.Planner, global_batch: int) -> dict:
  """The reference's train step (AdamW + clip + EMA, bfloat16 compute, float32 master weights
  and optimizer) compiled on the planner's mesh, with the trainer's shardings."""
  exp = planner.exp
  init, loss = vit_reference(exp.model_config)
  dtype = jnp.dtype(exp.config.dtype)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, b1=0.9, b2=0.99,
                                                               weight_decay=1e-4))

  def make_state():
    params = init(jax.random.PRNGKey(0))
    return {"params": params, "opt": tx.init(params),
            "ema": jax.tree_util.tree_map(jnp.copy, params)}

  abstract = jax.eval_shape(make_state)
  shardings = parallel.state_shardings(abstract, exp.mesh, exp.config.mesh.fsdp_min_size)

  def step(state, images_u8):
    images = images_u8.astype(jnp.float32) / 255.0
    value, grads = jax.value_and_grad(loss)(state["params"], images, dtype)
    updates, opt = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    ema = jax.tree_util.tree_map(lambda e, p: e + 0.001 * (p - e), state["ema"], params)
    return {"params": params, "opt": opt, "ema": ema}, value

  jitted = jax.jit(parallel.on_platform(step, exp.mesh),
                   in_shardings=(shardings, exp.batch_sharding),
                   out_shardings=(shardings, exp.replicated), donate_argnums=(0,))
  state = jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
  images = planner._images(global_batch, jnp.uint8, exp.batch_sharding)
  return plan_lib.compile_report(jitted, (state, images), planner.chip)


# ==========================================================================================
# The sweep.
# ==========================================================================================
def cell_config(name: str, variant: str):
  config = CONFIGS[name]()
  config.dtype = "bfloat16"
  opts = dict(kv.split("=") for kv in variant.split(":"))
  config.mesh.fsdp = int(opts.get("fsdp", 1))
  remat = opts.get("remat", "none")
  if hasattr(config.model, "remat"):
    config.model = dataclasses.replace(config.model, remat=remat)
  elif remat != "none":
    return None  # The family has no remat switch.
  return config


def run_cell(name: str, topology: str, variant: str, reference: bool) -> dict | None:
  config = cell_config(name, variant)
  if config is None:
    return None
  row = {"cell": name, "topology": topology, "variant": variant,
         "global_batch": config.batch_size}
  t0 = time.perf_counter()
  try:
    planner = plan_lib.Planner(config, topology)
    row["chips"] = planner.chips
    report = planner.train_report(config.batch_size)
    per_chip = config.batch_size // planner.chips
    if "flops" in report:
      report["flops_per_image"] = report["flops"] / per_chip
      report["hbm_traffic_per_image"] = report["hbm_traffic_bytes"] / per_chip
    row["jaxtok"] = {k: report[k] for k in KEEP if k in report}
    if reference and name.startswith("titok:"):
      ref = vit_reference_report(planner, config.batch_size)
      if "flops" in ref:
        ref["flops_per_image"] = ref["flops"] / per_chip
        ref["hbm_traffic_per_image"] = ref["hbm_traffic_bytes"] / per_chip
      row["vit_reference"] = {k: ref[k] for k in KEEP if k in ref}
      if "hbm_traffic_per_image" in report and "hbm_traffic_per_image" in ref:
        row["ratio_hbm_traffic_per_image"] = (report["hbm_traffic_per_image"]
                                              / ref["hbm_traffic_per_image"])
        row["ratio_temp_bytes"] = report["temp_bytes"] / max(1, ref["temp_bytes"])
  except Exception as e:  # One cell's failure (an invalid mesh, say) must not end the sweep.
    row["error"] = f"{type(e).__name__}: {e}"[:500]
    traceback.print_exc()
  row["wall_s"] = round(time.perf_counter() - t0, 1)
  return row


def _gib(x) -> str:
  return "-" if x is None else f"{x / (1 << 30):.2f}"


def table(path: str) -> str:
  """The README table (markdown) of a sweep's JSON lines."""
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  out = ["| config | topology | mesh / remat | global batch | fits | per-chip peak GiB "
         "(temp) | roofline MFU | HBM traffic / image GB | ViT reference: temp GiB, traffic / "
         "image GB | ratio traffic, temp |",
         "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    j = r.get("jaxtok", {})
    ref = r.get("vit_reference")
    fits = "error" if "error" in r else ("yes" if j.get("fits") else "no")
    peak = (f"{_gib(j.get('peak_bytes'))} ({_gib(j.get('temp_bytes'))})" if "peak_bytes" in j
            else f"needs {_gib(j.get('required_bytes'))}" if j.get("required_bytes") else "-")
    mfu = f"{j['roofline_mfu']:.2f}" if "roofline_mfu" in j else "-"
    traffic = (f"{j['hbm_traffic_per_image'] / 1e9:.2f}" if "hbm_traffic_per_image" in j
               else "-")
    refs = (f"{_gib(ref.get('temp_bytes'))}, {ref['hbm_traffic_per_image'] / 1e9:.2f}"
            if ref and "hbm_traffic_per_image" in ref else "-")
    ratio = (f"{r['ratio_hbm_traffic_per_image']:.2f}, {r['ratio_temp_bytes']:.2f}"
             if "ratio_temp_bytes" in r else "-")
    out.append(f"| {r['cell']} | {r['topology']} | {r['variant']} | {r['global_batch']} | "
               f"{fits} | {peak} | {mfu} | {traffic} | {refs} | {ratio} |")
  return "\n".join(out)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default="benchmarks/results/plan_pods.jsonl")
  ap.add_argument("--only", default="", help="comma-separated cells (default: all): "
                  + ", ".join(CONFIGS))
  ap.add_argument("--topologies", default=",".join(TOPOLOGIES))
  ap.add_argument("--variants", default=",".join(VARIANTS))
  ap.add_argument("--no-reference", action="store_true")
  ap.add_argument("--table", default="", help="print the markdown table of this JSONL file")
  args = ap.parse_args()
  if args.table:
    print(table(args.table))
    return
  plan_lib.require_libtpu()
  cells = [c for c in args.only.split(",") if c] or list(CONFIGS)
  unknown = [c for c in cells if c not in CONFIGS]
  if unknown:
    sys.exit(f"--only: unknown cells {unknown}; expected some of {list(CONFIGS)}")
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  for name in cells:
    for topology in args.topologies.split(","):
      for variant in args.variants.split(","):
        row = run_cell(name, topology, variant, not args.no_reference)
        if row is None:
          continue
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
          f.write(json.dumps(row) + "\n")
        gc.collect()


if __name__ == "__main__":
  main()
