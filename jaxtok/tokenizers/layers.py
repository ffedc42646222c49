"""Shared building blocks of the ViT tokenizers: pre-LN transformer, patch embedding, heads.

Everything here is NHWC / token-major (`[B, T, W]`) and float32 by default. The blocks follow
the CLIP-style ViT that TiTok (arXiv 2406.07550) builds on:

  x = x + out_proj(MHA(ln_1(x)))
  x = x + c_proj(GELU(c_fc(ln_2(x))))

with PyTorch's conventions kept where the released weights depend on them: LayerNorm eps 1e-5
(biased variance) and the exact (erf) GELU. q, k and v come from ONE fused `[W, 3W]`
projection (one matmul instead of three; faster on CPU and the same layout as PyTorch's packed
`in_proj_weight`).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

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


def layer_norm(width: int, *, rngs: nnx.Rngs, eps: float = LAYER_NORM_EPS) -> nnx.LayerNorm:
  """LayerNorm over the last axis with PyTorch's eps (1e-5) and a two-pass variance."""
  return nnx.LayerNorm(width, epsilon=eps, use_fast_variance=False, rngs=rngs)


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


class MultiHeadAttention(nnx.Module):
  """Self-attention with a fused qkv projection.

  Attributes:
    qkv: `nnx.Linear` W -> 3W; output columns are [q | k | v], each split into contiguous
      head-sized chunks (PyTorch `in_proj_weight.T`).
    out: `nnx.Linear` W -> W.
  """

  def __init__(self, width: int, num_heads: int, *, rngs: nnx.Rngs,
               init_std: float | None = VIT_INIT_STD):
    if width % num_heads:
      raise ValueError(f"num_heads: expected a divisor of width={width}, got {num_heads}")
    self.width = width
    self.num_heads = num_heads
    self.head_dim = width // num_heads
    self.qkv = vit_linear(width, 3 * width, rngs=rngs, init_std=init_std)
    self.out = vit_linear(width, width, rngs=rngs, init_std=init_std)

  def __call__(self, x: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
    """Self-attention.

    Args:
      x: `[B, T, W]` float.
      key_mask: optional `[B, T]` bool, False for keys no query may attend to.

    Returns:
      `[B, T, W]`.
    """
    b, t, _ = x.shape
    qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, T, H, D] each
    mask = None if key_mask is None else key_mask[:, None, None, :]  # [B, 1, 1, T]
    y = jax.nn.dot_product_attention(q, k, v, mask=mask)  # scale D^-0.5, softmax over keys
    return self.out(y.reshape(b, t, self.width))


class MLP(nnx.Module):
  """c_proj(GELU(c_fc(x))) with hidden width `mlp_ratio * W`."""

  def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs,
               init_std: float | None = VIT_INIT_STD):
    self.c_fc = vit_linear(width, hidden, rngs=rngs, init_std=init_std)
    self.c_proj = vit_linear(hidden, width, rngs=rngs, init_std=init_std)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.c_proj(gelu(self.c_fc(x)))


class ResidualAttentionBlock(nnx.Module):
  """Pre-LN transformer block: attention then MLP, each with a residual."""

  def __init__(self, width: int, num_heads: int, *, mlp_ratio: float = 4.0, rngs: nnx.Rngs,
               init_std: float | None = VIT_INIT_STD):
    self.ln_1 = layer_norm(width, rngs=rngs)
    self.attn = MultiHeadAttention(width, num_heads, rngs=rngs, init_std=init_std)
    self.ln_2 = layer_norm(width, rngs=rngs)
    self.mlp = MLP(width, int(width * mlp_ratio), rngs=rngs, init_std=init_std)

  def __call__(self, x: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
    x = x + self.attn(self.ln_1(x), key_mask)
    return x + self.mlp(self.ln_2(x))


class Transformer(nnx.Module):
  """`depth` ResidualAttentionBlocks applied in order; `[B, T, W] -> [B, T, W]`.

  The blocks' parameters are stacked along a leading `depth` axis (built with `nnx.vmap`) and
  applied with `jax.lax.scan`: one block is traced and compiled instead of `depth` copies,
  which keeps jit compile time and abstract (`nnx.eval_shape`) construction of the 24-layer
  models short. `unroll` is forwarded to `lax.scan` (`depth` = fully unrolled).
  """

  def __init__(self, width: int, depth: int, num_heads: int, *, mlp_ratio: float = 4.0,
               unroll: int = 1, rngs: nnx.Rngs, init_std: float | None = VIT_INIT_STD):
    if depth < 1:
      raise ValueError(f"depth: expected >= 1, got {depth}")
    self.depth = depth
    self.unroll = unroll

    @nnx.split_rngs(splits=depth)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(r):
      return ResidualAttentionBlock(width, num_heads, mlp_ratio=mlp_ratio, rngs=r,
                                    init_std=init_std)

    self.blocks = make(rngs)

  def __call__(self, x: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
    graphdef, state = nnx.split(self.blocks)

    def body(h, layer_state):
      return nnx.merge(graphdef, layer_state)(h, key_mask), None

    x, _ = jax.lax.scan(body, x, state, unroll=self.unroll)
    return x


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
