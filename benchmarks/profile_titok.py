r"""Where TiTok's time goes: per-stage seconds of jaxtok beside a same-shape PyTorch model; JSON.

    PYTHONPATH=. python benchmarks/profile_titok.py                 # S-128, batch 8 (~3 min idle)
    PYTHONPATH=. python benchmarks/profile_titok.py --variant B-64 --batch 4 --repeats 2
    PYTHONPATH=. python benchmarks/profile_titok.py --stages enc_block_attention,enc_block_mlp

Stages (each jitted alone for jaxtok; the same shapes through `torch_titok.TorchTiTok` under
`torch.inference_mode()`, 2 torch threads = the cores): patch embed, ONE encoder ViT block
split into attention (ln_1 + qkv + softmax attention + out) and MLP (ln_2 + c_fc + GELU +
c_proj), the whole encoder ViT, the quantizer, the decoder ViT + code head, the MaskGIT pixel
decoder per resolution level (conv_in+mid, up4 .. up0, norm_out+conv_out), and stage-1 loss +
backward (proxy-code CE, gradients of every parameter; the frozen MaskGIT teacher timed
separately as `teacher_encode`). jaxtok's attention is timed with each kernel of
`layers.ATTENTION_IMPLS` ("chunked", "xla" = `jax.nn.dot_product_attention`).

Each stage's two sides run in alternation (`timing.alternate`: jax, torch, jax, torch, ...;
figure = median), so a ratio comes from one load level; the load average is printed per
stage. `gflop` is XLA's cost analysis of the stage (the same count for both sides; a scanned
ViT counts its body once, so the whole-encoder figures come from `encode_decode.model_flops`,
which lowers an unrolled copy).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import encode_decode
import timing
import torch_titok

import jaxtok
from jaxtok.tokenizers import layers, maskgit_vqgan
from jaxtok.trainers import losses


def jitted(module: nnx.Module, fn):
  """`fn(module, *args)` as a jitted function of `args` (the module's state is an argument)."""
  graphdef, state = nnx.split(module)
  f = jax.jit(lambda st, *a: fn(nnx.merge(graphdef, st), *a))
  return lambda *a: f(state, *a), (lambda *a: f.lower(state, *a))


def with_attention(impl: str, fn):
  """`fn` traced with `layers.attention(implementation=impl)`."""
  def wrapped(*args):
    orig = layers.attention
    layers.attention = lambda *a, **kw: orig(*a, **{**kw, "implementation": impl})
    try:
      return fn(*args)
    finally:
      layers.attention = orig
  return wrapped


def nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.array(x).transpose(0, 3, 1, 2).copy())


def build_stages(variant: str, batch: int):
  """`[(name, {side: thunk}, flops_lowering | None)]` in model order; inputs precomputed."""
  tok = jaxtok.load(f"titok:{variant}", seed=0)
  model, cfg = tok.model, tok.config
  tmodel = torch_titok.TorchTiTok(cfg).eval()
  s = cfg.image_size
  rng = np.random.default_rng(0)
  images = rng.random((batch, s, s, 3), dtype=np.float32)
  timages = nchw(images)
  stages = []

  def add(name, jfn, tfn, lower=None):
    stages.append((name, {"jax": jfn, "torch": tfn}, lower))

  pe, pe_low = jitted(model.encoder.patch_embed, lambda m, x: m(x))
  add("patch_embed", lambda: pe(images), lambda: tmodel.patch_embed(timages),
      lambda: pe_low(images))

  blk = model.encoder.transformer.layer(0)
  tblk = tmodel.encoder.blocks[0]
  t_enc = 1 + cfg.enc_grid ** 2 + cfg.num_latent_tokens
  x = jnp.asarray(rng.standard_normal((batch, t_enc, cfg.enc_width), np.float32))
  tx = torch.from_numpy(np.array(x))
  # FLOPs from the "xla" lowering for both rows: the chunked kernel's `lax.map` body would be
  # counted once.
  _, at_low = jitted(blk, with_attention("xla", lambda m, x: m.attn(m.ln_1(x))))
  for impl in ("chunked", "xla"):
    at, _ = jitted(blk, with_attention(impl, lambda m, x: m.attn(m.ln_1(x))))
    sides = {"jax": (lambda at=at: at(x)), "torch": lambda: tblk.attention(tx)}
    stages.append((f"enc_block_attention[{impl}]", sides, lambda: at_low(x)))
  mlp, mlp_low = jitted(blk, lambda m, x: m.mlp(m.ln_2(x)))
  add("enc_block_mlp", lambda: mlp(x), lambda: tblk.mlp(tx), lambda: mlp_low(x))

  enc, _ = jitted(model, lambda m, x: m._latents(x))
  add("encoder_vit", lambda: enc(images), lambda: tmodel.encode_latents(timages))
  z = enc(images)
  tz = torch.from_numpy(np.array(z))
  qz, q_low = jitted(model.quantize, lambda m, z: m(z, train=False)[0])
  add("quantizer", lambda: qz(z), lambda: tmodel.quantize(tz), lambda: q_low(z))
  zq = qz(z)
  tzq = torch.from_numpy(np.array(zq))

  def head(m, zq):
    return jax.nn.softmax(m.decoder.logits(m.decoder.hidden(zq)), -1) @ m.pixel_codebook[...]

  dh, _ = jitted(model, head)
  add("decoder_vit+head", lambda: dh(zq),
      lambda: tmodel.logits(tzq).softmax(-1) @ tmodel.pixel_codebook)
  h = dh(zq)
  pd, tpd = model.pixel_decoder, tmodel.pixel_decoder
  jstages = [("conv_in+mid", lambda m, x: nnx_seq(m.mid, m.conv_in(x)))]
  jstages += [(f"up{lvl}", (lambda m, x, lvl=lvl: m.up[lvl](x)))
              for lvl in reversed(range(len(pd.up)))]
  jstages.append(("norm_out+conv_out", lambda m, x: m.conv_out(jax.nn.silu(m.norm_out(x)))))
  for (name, jf), (_, tf) in zip(jstages, tpd.stages()):
    f, low = jitted(pd, jf)
    th = nchw(h)
    add(f"pixel_decoder/{name}", (lambda f=f, h=h: f(h)), (lambda tf=tf, th=th: tf(th)),
        (lambda low=low, h=h: low(h)))
    h = f(h)

  # Stage-1 training: loss + backward (no optimizer), teacher codes precomputed.
  teacher = maskgit_vqgan.MaskGITVQGAN(cfg.pixel_decoder, rngs=nnx.Rngs(1))
  tteacher = torch_titok.PixelEncoder(cfg.pixel_decoder).eval()
  te, te_low = jitted(teacher, lambda m, x: m.encode(x))
  add("teacher_encode", lambda: te(images), lambda: tteacher(timages),
      lambda: te_low(images))
  target = te(images)
  ttarget = torch.from_numpy(np.array(target)).long()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  loss_cfg = losses.LossConfig()

  def loss(p, x, t):
    _, aux = nnx.merge(graphdef, p, rest)(x, train=False)
    return losses.stage1_loss(loss_cfg, aux["logits"], t, aux)[0]

  vg = jax.jit(jax.value_and_grad(loss))

  def torch_step():
    with torch.enable_grad():
      tmodel.zero_grad(set_to_none=True)
      tmodel.stage1_loss(timages, ttarget).backward()

  stages.append(("stage1_loss+backward", {"jax": lambda: vg(params, images, target),
                                          "torch": torch_step},
                 lambda: vg.lower(params, images, target)))
  flops = encode_decode.model_flops(cfg, images.shape, (batch, cfg.num_latent_tokens))
  return stages, {"encode": flops[0], "decode": flops[1]}


def nnx_seq(blocks, x):
  for b in blocks:
    x = b(x)
  return x


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variant", default="S-128")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--repeats", type=int, default=3, help="alternating turns per stage")
  p.add_argument("--stages", default="", help="comma-separated stage names (default: all)")
  p.add_argument("--torch-threads", type=int, default=None, help="default: the cores")
  args = p.parse_args(argv)
  if args.batch < 1 or args.repeats < 1:
    raise ValueError(f"--batch/--repeats: expected >= 1, got {args.batch}/{args.repeats}")
  threads = timing.torch_threads(args.torch_threads)
  out = {"benchmark": "profile_titok", "variant": args.variant, "batch": args.batch,
         "dtype": "float32", "repeats": args.repeats, "torch": torch.__version__,
         "torch_threads": threads, **timing.machine(), **timing.matmul_peaks()}
  stages, model_flops = build_stages(args.variant, args.batch)
  want = {s for s in args.stages.split(",") if s}
  rows = {}
  with torch.inference_mode(False), torch.no_grad():
    for name, sides, lower in stages:
      if want and name not in want:
        continue
      if name == "stage1_loss+backward":
        t = timing.alternate(sides, args.repeats)
      else:
        with torch.inference_mode():
          t = timing.alternate(sides, args.repeats)
      row = {"jax_s": round(t["jax"], 4), "torch_s": round(t["torch"], 4),
             "jax_speedup_vs_torch": round(t["torch"] / t["jax"], 3),
             "loadavg_1": round(os.getloadavg()[0], 2)}
      if lower is not None:
        cost = lower().compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        if cost and "flops" in cost:
          row["gflop"] = round(cost["flops"] / 1e9, 2)
          row["jax_gflops_per_s"] = round(cost["flops"] / 1e9 / t["jax"], 1)
          row["torch_gflops_per_s"] = round(cost["flops"] / 1e9 / t["torch"], 1)
      rows[name] = row
      print(name, row, file=sys.stderr, flush=True)
  out["stages"] = rows
  out["model_gflop_per_batch"] = {k: (round(v / 1e9, 2) if v else None)
                                  for k, v in model_flops.items()}
  out["loadavg_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
