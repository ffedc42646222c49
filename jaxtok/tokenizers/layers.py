"""Shared building blocks of the ViT tokenizers: pre-LN transformer, patch embedding, heads.

Everything here is NHWC / token-major (`[B, T, W]`) and float32 by default. The default block
is the CLIP-style ViT that TiTok (arXiv 2406.07550) builds on:

  x = x + out_proj(MHA(ln_1(x)))
  x = x + c_proj(GELU(c_fc(ln_2(x))))

with PyTorch's conventions kept where the released weights depend on them: LayerNorm eps 1e-5
(biased variance) and the exact (erf) GELU. q, k and v come from ONE fused `[W, 3W]`
projection (one matmul instead of three; faster on CPU and the same layout as PyTorch's packed
`in_proj_weight`).

The same block also takes FlexTok's (arXiv 2502.13967) choices, each a keyword: bias-free
projections, QK-norm (no-affine LayerNorm over head_dim on q and k), a softmax scale other
than head_dim^-0.5, a SwiGLU MLP, no-affine LayerNorms, and a full `[T, T]` attention mask
(`attention_mask`). `AdaLNBlock` is the adaLN-zero (DiT, arXiv 2212.09748) variant with one
modulation per sub-sequence of the tokens.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok.platform import target_platform

# PyTorch's nn.LayerNorm default; flax's default is 1e-6 and the released TiTok weights were
# trained with 1e-5, which the parity tolerances cannot reliably tell apart (fixture README §5).
LAYER_NORM_EPS = 1e-5
# MaskGIT-VQGAN GroupNorm epsilon and group count (maskgit-vqgan-imagenet-f16-256).
GROUP_NORM_EPS = 1e-6
GROUP_NORM_GROUPS = 32

# TiTok initializes every Linear/Conv of the ViT with trunc_normal(std=0.02) and zero bias.
VIT_INIT_STD = 0.02
VIT_KERNEL_INIT = nnx.initializers.truncated_normal(stddev=VIT_INIT_STD)


def vit_kernel_init(init_std: float | None = VIT_INIT_STD):
  """Kernel initializer of the ViT Linear/Conv layers.

  `init_std`: a float -> trunc-normal with that std (TiTok's 0.02, tuned for widths >= 512);
  None -> LeCun (fan-in scaled) trunc-normal, std ~ 1/sqrt(fan_in), which small widths need:
  with 0.02 at width 64-128 the image -> latent and latent -> image paths start ~1e-3 strong
  and a short run never leaves the mean-image solution.
  """
  if init_std is None:
    return nnx.initializers.lecun_normal()
  if init_std == VIT_INIT_STD:
    return VIT_KERNEL_INIT
  return nnx.initializers.truncated_normal(stddev=init_std)


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, as PyTorch's nn.GELU() default."""
  return jax.nn.gelu(x, approximate=False)


def layer_norm(width: int, *, rngs: nnx.Rngs, eps: float = LAYER_NORM_EPS,
               affine: bool = True) -> nnx.LayerNorm:
  """LayerNorm over the last axis with PyTorch's eps (1e-5) and a two-pass variance.

  `affine=False`: no scale and no bias (PyTorch `elementwise_affine=False`), no parameters.
  """
  return nnx.LayerNorm(width, epsilon=eps, use_fast_variance=False, use_scale=affine,
                       use_bias=affine, rngs=rngs)


def normalize(x: jax.Array, eps: float = LAYER_NORM_EPS) -> jax.Array:
  """No-affine LayerNorm over the last axis (biased variance), computed in float32."""
  xf = x.astype(jnp.float32)
  mean = jnp.mean(xf, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
  return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def swiglu_hidden(width: int, mlp_ratio: float) -> int:
  """SwiGLU hidden width `int(2 * int(width * mlp_ratio) / 3)` (2/3 of the GELU MLP's, so the
  three matrices hold about as many parameters as its two; LLaMA / FlexTok rule)."""
  return int(2 * int(width * mlp_ratio) / 3)


def attention_mask(kind: str, num_prefix: int, num_suffix: int) -> jax.Array | None:
  """`[T, T]` bool (query, key), True = may attend, over `[prefix ‖ suffix]` tokens.

  kind: "full" -> None (no mask); "causal_last": every query sees the whole prefix (e.g.
  patches), prefix queries see no suffix token, a suffix query at position i sees suffix
  tokens 0..i -- `mask[q, k] = k < P or P <= k <= q` (FlexTok's encoder, where the suffix is
  the registers, so a truncated register output equals encoding with fewer registers).
  """
  if kind == "full":
    return None
  if kind != "causal_last":
    raise ValueError(f"kind: expected one of ('full', 'causal_last'), got {kind!r}")
  t = num_prefix + num_suffix
  q = jnp.arange(t)[:, None]
  k = jnp.arange(t)[None, :]
  return (k < num_prefix) | ((k >= num_prefix) & (k <= q))


def group_norm(channels: int, *, rngs: nnx.Rngs,
               num_groups: int = GROUP_NORM_GROUPS,
               eps: float = GROUP_NORM_EPS) -> nnx.GroupNorm:
  """GroupNorm over NHWC with contiguous channel groups (as torch.nn.GroupNorm)."""
  if channels % num_groups:
    raise ValueError(f"channels: expected a multiple of num_groups={num_groups}, got {channels}")
  return nnx.GroupNorm(channels, num_groups=num_groups, epsilon=eps, use_fast_variance=False,
                       rngs=rngs)


def vit_linear(din: int, dout: int, *, rngs: nnx.Rngs, use_bias: bool = True,
               init_std: float | None = VIT_INIT_STD) -> nnx.Linear:
  """Linear layer with TiTok's ViT init (trunc-normal `init_std`, zero bias; see
  `vit_kernel_init`)."""
  return nnx.Linear(din, dout, use_bias=use_bias, kernel_init=vit_kernel_init(init_std),
                    bias_init=nnx.initializers.zeros_init(), rngs=rngs)


def _combine_masks(key_mask: jax.Array | None, attn_mask: jax.Array | None
                   ) -> jax.Array | None:
  """`[B, T]` key mask and `[T, T]` / `[B, T, T]` query-key mask -> `[B|1, 1, T, T]` or None."""
  mask = None
  if attn_mask is not None:
    mask = attn_mask[None, None] if attn_mask.ndim == 2 else attn_mask[:, None]
  if key_mask is not None:
    km = key_mask[:, None, None, :]  # [B, 1, 1, T]
    mask = km if mask is None else (mask & km)
  return mask


# Attention kernels (`attention(implementation=...)`). "chunked": scores, softmax and the
# value product for a few (batch, head) slices at a time, in a `lax.map` loop, so that the
# `[Tq, Tk]` score tiles stay in cache instead of streaming a `[B, H, Tq, Tk]` tensor through
# memory three times; on a 2-core CPU this runs TiTok-S-128's attention ~3-4x faster than
# `jax.nn.dot_product_attention` (whose CPU lowering is the unchunked einsum-softmax-einsum;
# benchmarks/profile_titok.py). "xla": `jax.nn.dot_product_attention` (cuDNN / fused kernels on
# GPU and TPU). "auto": "chunked" when compiling for CPU, "xla" elsewhere: the platform of the
# devices being compiled for (`jaxtok.parallel.target_platform`, the trainer's mesh), not the
# process's default backend (a CPU host compiling for a TPU slice must pick "xla").
ATTENTION_IMPLS = ("auto", "chunked", "xla")
# Score bytes per chunk (float32 [n, Tq, Tk]): a few MiB, what the L2/L3 of one core holds.
ATTENTION_CHUNK_BYTES = 4 << 20


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, mask: jax.Array | None = None,
              scale: float | None = None, implementation: str = "auto") -> jax.Array:
  """Softmax attention `softmax(scale * q k^T, masked) v`, softmax in float32.

  Args:
    q: `[B, Tq, H, D]`.
    k, v: `[B, Tk, H, D]`.
    mask: optional bool broadcastable to `[B, H, Tq, Tk]`, True = may attend. A query that may
      attend to no key gets the mean of the values (uniform weights), as
      `jax.nn.dot_product_attention`.
    scale: softmax scale (None: D^-0.5), folded into q.
    implementation: one of `ATTENTION_IMPLS` (see there).

  Returns:
    `[B, Tq, H, D]` in q's dtype.
  """
  if implementation not in ATTENTION_IMPLS:
    raise ValueError(f"implementation: expected one of {ATTENTION_IMPLS}, got "
                     f"{implementation!r}")
  if implementation == "auto":
    implementation = "chunked" if target_platform() == "cpu" else "xla"
  if implementation == "xla":
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale)
  b, tq, h, d = q.shape
  tk = k.shape[1]
  scale = d ** -0.5 if scale is None else scale
  n = b * h
  # Head-major [B*H, T, D] slices: each is one plain [Tq, D] x [D, Tk] matmul.
  qh = (q * jnp.asarray(scale, q.dtype)).transpose(0, 2, 1, 3).reshape(n, tq, d)
  kh = k.transpose(0, 2, 1, 3).reshape(n, tk, d)
  vh = v.transpose(0, 2, 1, 3).reshape(n, tk, d)
  shared_mask = None
  xs = (qh, kh, vh)
  if mask is not None:
    if mask.ndim != 4:
      raise ValueError(f"mask: expected 4 dims broadcastable to [B, H, Tq, Tk], got shape "
                       f"{tuple(mask.shape)}")
    if mask.shape[0] == 1 and mask.shape[1] == 1:
      shared_mask = mask[0, 0]  # One [Tq|1, Tk] mask for every slice: closed over.
    else:
      mq = mask.shape[2]
      xs = xs + (jnp.broadcast_to(mask, (b, h, mq, tk)).reshape(n, mq, tk),)

  def one(args):  # One slice: [Tq, D], [Tk, D], [Tk, D] (, [Tq|1, Tk]) -> [Tq, D].
    qi, ki, vi = args[:3]
    s = jnp.einsum("qd,kd->qk", qi, ki, preferred_element_type=jnp.float32)
    m = args[3] if len(args) > 3 else shared_mask
    if m is not None:
      s = jnp.where(m, s, jnp.finfo(jnp.float32).min)
    p = jax.nn.softmax(s, axis=-1).astype(vi.dtype)
    return jnp.einsum("qk,kd->qd", p, vi)

  per_chunk = max(1, ATTENTION_CHUNK_BYTES // (4 * tq * tk))
  out = jax.vmap(one)(xs) if per_chunk >= n else jax.lax.map(one, xs, batch_size=per_chunk)
  return out.reshape(b, h, tq, d).transpose(0, 2, 1, 3).astype(q.dtype)


class MultiHeadAttention(nnx.Module):
  """Self-attention with a fused qkv projection.

  Attributes:
    qkv: `nnx.Linear` W -> 3W; output columns are [q | k | v], each split into contiguous
      head-sized chunks (PyTorch `in_proj_weight.T`; for separate `wq, wk, wv` Linears,
      `concat([wq.T, wk.T, wv.T], 1)`).
    out: `nnx.Linear` W -> W.
    qk_norm: no-affine LayerNorm over head_dim on q and k before the scores.
    scale: softmax scale (None: head_dim^-0.5).
  """

  def __init__(self, width: int, num_heads: int, *, rngs: nnx.Rngs,
               init_std: float | None = VIT_INIT_STD, use_bias: bool = True,
               qk_norm: bool = False, scale: float | None = None):
    if width % num_heads:
      raise ValueError(f"num_heads: expected a divisor of width={width}, got {num_heads}")
    self.width = width
    self.num_heads = num_heads
    self.head_dim = width // num_heads
    self.qk_norm = qk_norm
    self.scale = scale
    self.qkv = vit_linear(width, 3 * width, rngs=rngs, init_std=init_std, use_bias=use_bias)
    self.out = vit_linear(width, width, rngs=rngs, init_std=init_std, use_bias=use_bias)

  def __call__(self, x: jax.Array, key_mask: jax.Array | None = None,
               attn_mask: jax.Array | None = None) -> jax.Array:
    """Self-attention.

    Args:
      x: `[B, T, W]` float.
      key_mask: optional `[B, T]` bool, False for keys no query may attend to.
      attn_mask: optional `[T, T]` or `[B, T, T]` bool (query, key), True = may attend.

    Returns:
      `[B, T, W]`.
    """
    b, t, _ = x.shape
    qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, T, H, D] each
    if self.qk_norm:
      q, k = normalize(q), normalize(k)
    mask = _combine_masks(key_mask, attn_mask)
    # Softmax over keys; scale D^-0.5 unless given.
    y = attention(q, k, v, mask=mask, scale=self.scale)
    return self.out(y.reshape(b, t, self.width))


class MLP(nnx.Module):
  """c_proj(GELU(c_fc(x))) with hidden width `mlp_ratio * W`."""

  def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs,
               init_std: float | None = VIT_INIT_STD, use_bias: bool = True):
    self.c_fc = vit_linear(width, hidden, rngs=rngs, init_std=init_std, use_bias=use_bias)
    self.c_proj = vit_linear(hidden, width, rngs=rngs, init_std=init_std, use_bias=use_bias)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.c_proj(gelu(self.c_fc(x)))


class SwiGLU(nnx.Module):
  """fc2(SiLU(fc1(x)) * fc3(x)) (arXiv 2002.05202), W -> hidden -> W."""

  def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs,
               init_std: float | None = VIT_INIT_STD, use_bias: bool = False):
    self.fc1 = vit_linear(width, hidden, rngs=rngs, init_std=init_std, use_bias=use_bias)
    self.fc3 = vit_linear(width, hidden, rngs=rngs, init_std=init_std, use_bias=use_bias)
    self.fc2 = vit_linear(hidden, width, rngs=rngs, init_std=init_std, use_bias=use_bias)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.silu(self.fc1(x)) * self.fc3(x))


MLP_TYPES = ("gelu", "swiglu")


def _block_parts(module: nnx.Module, width: int, num_heads: int, *, mlp_ratio: float,
                 rngs: nnx.Rngs, init_std: float | None, use_bias: bool, qk_norm: bool,
                 attn_scale: float | None, mlp: str, norm_affine: bool) -> None:
  """The ln_1 / attn / ln_2 / mlp members shared by both block kinds."""
  if mlp not in MLP_TYPES:
    raise ValueError(f"mlp: expected one of {MLP_TYPES}, got {mlp!r}")
  module.ln_1 = layer_norm(width, rngs=rngs, affine=norm_affine)
  module.attn = MultiHeadAttention(width, num_heads, rngs=rngs, init_std=init_std,
                                   use_bias=use_bias, qk_norm=qk_norm, scale=attn_scale)
  module.ln_2 = layer_norm(width, rngs=rngs, affine=norm_affine)
  if mlp == "gelu":
    module.mlp = MLP(width, int(width * mlp_ratio), rngs=rngs, init_std=init_std,
                     use_bias=use_bias)
  else:
    module.mlp = SwiGLU(width, swiglu_hidden(width, mlp_ratio), rngs=rngs, init_std=init_std,
                        use_bias=use_bias)


class ResidualAttentionBlock(nnx.Module):
  """Pre-LN transformer block: attention then MLP, each with a residual.

  Keywords beyond TiTok's defaults: `use_bias` (projections and MLP), `qk_norm`,
  `attn_scale`, `mlp` ("gelu" or "swiglu"), `norm_affine` (LayerNorm scale and bias).
  """

  def __init__(self, width: int, num_heads: int, *, mlp_ratio: float = 4.0, rngs: nnx.Rngs,
               init_std: float | None = VIT_INIT_STD, use_bias: bool = True,
               qk_norm: bool = False, attn_scale: float | None = None, mlp: str = "gelu",
               norm_affine: bool = True):
    _block_parts(self, width, num_heads, mlp_ratio=mlp_ratio, rngs=rngs, init_std=init_std,
                 use_bias=use_bias, qk_norm=qk_norm, attn_scale=attn_scale, mlp=mlp,
                 norm_affine=norm_affine)

  def __call__(self, x: jax.Array, key_mask: jax.Array | None = None,
               attn_mask: jax.Array | None = None) -> jax.Array:
    x = x + self.attn(self.ln_1(x), key_mask, attn_mask)
    return x + self.mlp(self.ln_2(x))


# adaLN-zero chunk order of the modulation vector (FlexTok / DiT): 6 chunks of W each.
ADALN_CHUNKS = ("gate_msa", "gate_mlp", "shift_msa", "scale_msa", "shift_mlp", "scale_mlp")


def per_token(mod: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
  """`[B, S, ...]` per-sub-sequence values -> `[B, sum(sizes), ...]` (token t of sub-sequence
  s gets `mod[:, s]`); S = 1 broadcasts one value to every token."""
  if mod.shape[1] == 1:
    return jnp.broadcast_to(mod, (mod.shape[0], sum(sizes)) + mod.shape[2:])
  if mod.shape[1] != len(sizes):
    raise ValueError(f"sizes: expected {mod.shape[1]} sub-sequence lengths, got {sizes}")
  parts = [jnp.broadcast_to(mod[:, s:s + 1], (mod.shape[0], n) + mod.shape[2:])
           for s, n in enumerate(sizes)]
  return jnp.concatenate(parts, axis=1)


class AdaLNBlock(nnx.Module):
  """adaLN-zero pre-LN block (DiT, arXiv 2212.09748) with per-sub-sequence modulation.

    m = adaLN_modulation(SiLU(c)) -> [B, S, 6, W] (chunk order `ADALN_CHUNKS`)
    x += gate_msa * Attn(LN(x) * (1 + scale_msa) + shift_msa)
    x += gate_mlp * MLP(LN(x) * (1 + scale_mlp) + shift_mlp)

  where token t of sub-sequence s (lengths `sizes`, static) is modulated by `m[:, s]`
  (FlexTok's `per_subseq_embs`: S = 2, noised patches then registers).

  Attributes: `ln_1`, `attn`, `ln_2`, `mlp` (as `ResidualAttentionBlock`) and
  `adaLN_modulation`: Linear cond_width -> S * 6 * W (zero-initialised: the block starts as
  the identity).
  """

  def __init__(self, width: int, num_heads: int, *, cond_width: int, num_subseqs: int = 1,
               mlp_ratio: float = 4.0, rngs: nnx.Rngs, init_std: float | None = VIT_INIT_STD,
               use_bias: bool = False, qk_norm: bool = False, attn_scale: float | None = None,
               mlp: str = "swiglu", norm_affine: bool = False):
    _block_parts(self, width, num_heads, mlp_ratio=mlp_ratio, rngs=rngs, init_std=init_std,
                 use_bias=use_bias, qk_norm=qk_norm, attn_scale=attn_scale, mlp=mlp,
                 norm_affine=norm_affine)
    self.num_subseqs = num_subseqs
    self.adaLN_modulation = nnx.Linear(cond_width, num_subseqs * 6 * width,
                                       kernel_init=nnx.initializers.zeros_init(),
                                       bias_init=nnx.initializers.zeros_init(), rngs=rngs)

  def modulation(self, cond: jax.Array, sizes: tuple[int, ...]) -> dict[str, jax.Array]:
    """`[B, C]` conditioning -> {chunk name: `[B, T, W]`}."""
    b, w = cond.shape[0], self.ln_1.num_features
    m = self.adaLN_modulation(jax.nn.silu(cond)).reshape(b, self.num_subseqs, 6, w)
    m = per_token(m, sizes)  # [B, T, 6, W]
    return {name: m[:, :, i] for i, name in enumerate(ADALN_CHUNKS)}

  def __call__(self, x: jax.Array, key_mask: jax.Array | None = None,
               attn_mask: jax.Array | None = None, *, cond: jax.Array,
               sizes: tuple[int, ...]) -> jax.Array:
    m = self.modulation(cond, sizes)
    h = self.ln_1(x) * (1 + m["scale_msa"]) + m["shift_msa"]
    x = x + m["gate_msa"] * self.attn(h, key_mask, attn_mask)
    h = self.ln_2(x) * (1 + m["scale_mlp"]) + m["shift_mlp"]
    return x + m["gate_mlp"] * self.mlp(h)


BLOCKS = {"residual": ResidualAttentionBlock, "adaln": AdaLNBlock}

# Activation checkpointing of each block (`Transformer(remat=...)`): "none" keeps every
# activation for the backward pass; "full" keeps only each block's input and recomputes the
# rest (least memory, ~1/3 more compute); "dots" keeps the matmul outputs without a batch
# dimension (the projections and MLP) and recomputes the attention scores, softmax and
# elementwise ops.
REMAT_POLICIES = ("none", "full", "dots")


class Transformer(nnx.Module):
  """`depth` blocks applied in order; `[B, T, W] -> [B, T, W]`.

  `block` names the block class in `BLOCKS` ("residual": `ResidualAttentionBlock`, "adaln":
  `AdaLNBlock`); `**block_kwargs` go to it (e.g. `qk_norm=True`, `mlp="swiglu"`). Call
  keywords (`attn_mask`, and `cond` / `sizes` for "adaln") go to every block.

  The blocks' parameters are stacked along a leading `depth` axis (built with `nnx.vmap`) and
  applied with `jax.lax.scan`: one block is traced and compiled instead of `depth` copies,
  which keeps jit compile time and abstract (`nnx.eval_shape`) construction of the 24-layer
  models short. `unroll` is forwarded to `lax.scan` (`depth` = fully unrolled); `remat` is
  the activation-checkpointing policy of each block (`REMAT_POLICIES`; same numbers).
  """

  def __init__(self, width: int, depth: int, num_heads: int, *, mlp_ratio: float = 4.0,
               unroll: int = 1, rngs: nnx.Rngs, init_std: float | None = VIT_INIT_STD,
               block: str = "residual", remat: str = "none", **block_kwargs: Any):
    if depth < 1:
      raise ValueError(f"depth: expected >= 1, got {depth}")
    if block not in BLOCKS:
      raise ValueError(f"block: expected one of {sorted(BLOCKS)}, got {block!r}")
    if remat not in REMAT_POLICIES:
      raise ValueError(f"remat: expected one of {REMAT_POLICIES}, got {remat!r}")
    self.depth = depth
    self.unroll = unroll
    self.remat = remat
    cls = BLOCKS[block]

    @nnx.split_rngs(splits=depth)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(r):
      return cls(width, num_heads, mlp_ratio=mlp_ratio, rngs=r, init_std=init_std,
                 **block_kwargs)

    self.blocks = make(rngs)

  def layer(self, i: int) -> nnx.Module:
    """Block `i` as a standalone module (a copy of its slice of the stacked parameters)."""
    if not 0 <= i < self.depth:
      raise ValueError(f"i: expected 0 <= i < {self.depth}, got {i}")
    graphdef, state = nnx.split(self.blocks)
    return nnx.merge(graphdef, jax.tree_util.tree_map(lambda a: a[i], state))

  def __call__(self, x: jax.Array, key_mask: jax.Array | None = None,
               attn_mask: jax.Array | None = None, **kwargs: Any) -> jax.Array:
    graphdef, state = nnx.split(self.blocks)

    def body(h, layer_state):
      return nnx.merge(graphdef, layer_state)(h, key_mask, attn_mask, **kwargs), None

    if self.remat == "full":
      body = jax.checkpoint(body)
    elif self.remat == "dots":
      body = jax.checkpoint(body, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    x, _ = jax.lax.scan(body, x, state, unroll=self.unroll)
    return x

  def with_hidden(self, x: jax.Array, layer: int, key_mask: jax.Array | None = None,
                  attn_mask: jax.Array | None = None, **kwargs: Any
                  ) -> tuple[jax.Array, jax.Array]:
    """(output, hidden state after the first `layer` blocks), both `[B, T, W]`, in one pass
    (`1 <= layer <= depth`; REPA-style feature taps). Two scans over the stacked blocks
    [:layer] and [layer:], the same numbers as `__call__`."""
    if not 1 <= layer <= self.depth:
      raise ValueError(f"layer: expected 1 <= layer <= {self.depth}, got {layer}")
    graphdef, state = nnx.split(self.blocks)

    def body(h, layer_state):
      return nnx.merge(graphdef, layer_state)(h, key_mask, attn_mask, **kwargs), None

    def run(h, lo, hi):
      part = jax.tree_util.tree_map(lambda a: a[lo:hi], state)
      return jax.lax.scan(body, h, part, unroll=self.unroll)[0]

    hidden = run(x, 0, layer)
    return (hidden if layer == self.depth else run(hidden, layer, self.depth)), hidden


class PatchEmbed(nnx.Module):
  """Non-overlapping p x p patches -> width, as a strided conv (NHWC).

  The kernel is stored as a conv kernel `[p, p, 3, W]` (PyTorch `(W, 3, p, p)` transposed
  (2, 3, 1, 0)) but applied as one `[B*g*g, p*p*3] @ [p*p*3, W]` matmul, which is what the
  strided conv computes and is faster on CPU.
  """

  def __init__(self, patch_size: int, in_channels: int, width: int, *, rngs: nnx.Rngs,
               init_std: float | None = VIT_INIT_STD):
    self.patch_size = patch_size
    self.proj = nnx.Conv(in_channels, width, (patch_size, patch_size),
                         strides=(patch_size, patch_size), padding="VALID",
                         kernel_init=vit_kernel_init(init_std),
                         bias_init=nnx.initializers.zeros_init(), rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    """`[B, H, W, C]` -> `[B, g*g, width]`, tokens in row-major grid order."""
    p = self.patch_size
    b, h, w, c = images.shape
    gh, gw = h // p, w // p
    x = images.reshape(b, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, gh * gw, p * p * c)
    kernel = self.proj.kernel[...].reshape(p * p * c, -1)
    return x @ kernel + self.proj.bias[...]


def sincos_2d(grid: int, width: int) -> jax.Array:
  """Fixed 2-D sin-cos position table `[grid * grid, width]` float32, row-major tokens.

  `pe[row * g + col] = [sin(row w), cos(row w), sin(col w), cos(col w)]`, w_k =
  10000^(-k / (width / 4)), k = 0..width/4 - 1: the row drives the first width/2 channels
  (FlexTok's table; MAE's (arXiv 2111.06377) uses the same frequencies).
  """
  if width % 4:
    raise ValueError(f"width: expected a multiple of 4 (2-D sin-cos embedding), got {width}")
  q = width // 4
  omega = 1.0 / 10000.0 ** (np.arange(q, dtype=np.float64) / q)
  pos = np.arange(grid, dtype=np.float64)[:, None] * omega[None]  # [g, q]
  rows = np.concatenate([np.sin(pos), np.cos(pos)], axis=1)  # [g, width/2]
  table = np.concatenate([np.repeat(rows, grid, axis=0), np.tile(rows, (grid, 1))], axis=1)
  return jnp.asarray(table, jnp.float32)


def pixel_unpatchify(x: jax.Array, grid: int, patch_size: int, channels: int = 3) -> jax.Array:
  """`[B, g*g, p*p*C]` -> `[B, g*p, g*p, C]`.

  Feature index = (p1 * p + p2) * C + c, i.e. einops `b (p1 p2 c) h w -> b c (h p1) (w p2)`
  of the official single-stage head, expressed in NHWC.
  """
  b = x.shape[0]
  p = patch_size
  x = x.reshape(b, grid, grid, p, p, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, grid * p, grid * p, channels)


def count_params(module_or_state: Any) -> int:
  """Number of scalar parameters (`nnx.Param`) of a module or state (abstract shapes work)."""
  state = module_or_state
  if isinstance(module_or_state, nnx.Module):
    state = nnx.state(module_or_state, nnx.Param)
  leaves = jax.tree_util.tree_leaves(state)
  total = 0
  for leaf in leaves:
    shape = getattr(leaf, "shape", ())
    n = 1
    for s in shape:
      n *= int(s)
    total += n
  return total


def normal_param(shape: tuple[int, ...], scale: float, rngs: nnx.Rngs) -> nnx.Param:
  """`nnx.Param` drawn from N(0, scale^2) (TiTok's `scale * randn` embeddings)."""
  return nnx.Param(scale * jax.random.normal(rngs.params(), shape, jnp.float32))
