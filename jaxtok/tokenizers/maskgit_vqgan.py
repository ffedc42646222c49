"""MaskGIT VQGAN (arXiv 2202.04200): the conv tokenizer behind TiTok's two-stage recipe.

TiTok (arXiv 2406.07550) trains stage 1 against the 16x16 "proxy codes" of the released
`maskgit-vqgan-imagenet-f16-256` model and decodes its legacy models through the same VQGAN
pixel decoder. This module holds:

- `MaskGITConfig`: channel plan (default = the released f16-256 layout: hidden 128,
  mult [1, 1, 2, 2, 4], 2 res blocks per level, z 256, 1024 codes);
- `MaskGITEncoder`, `MaskGITDecoder`: NHWC conv nets (no attention; VQGAN with the non-local
  layers removed, as MaskGIT does);
- `MaskGITVQGAN`: encoder + `VectorQuantizer` + decoder with `.encode(images) -> ids [B, h, w]`
  and `.decode_ids(ids) -> images`.

Conventions the released weights depend on: GroupNorm with 32 contiguous channel groups and
eps 1e-6; the 1x1 `nin_shortcut` of a ResnetBlock is applied to the block OUTPUT h (not to the
input); nearest x2 upsampling then a 3x3 conv (computed as four 2x2 convs at the input
resolution, `upsample_conv_2x`); the resnet convs have no bias; encoder
downsampling is 2x2 average pooling; TF-"SAME" padding (symmetric at stride 1).
"""
# No `from __future__ import annotations`: ml_collections config_flags reads the config
# dataclass's field types at runtime (`--config.model.<field>=...` in the trainer).

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtok.tokenizers import layers
from jaxtok.tokenizers.quantizers import VectorQuantizer


@dataclasses.dataclass(kw_only=True)
class MaskGITConfig:
  """Channel plan of a MaskGIT VQGAN.

  Attributes:
    hidden_channels: base width; level i has `hidden_channels * channel_mult[i]` channels.
    channel_mult: per-level multipliers; `len(channel_mult)` levels, so the image is
      downsampled `2 ** (len - 1)` times (16 for the released model).
    num_res_blocks: ResnetBlocks per level (and in the middle stage).
    z_channels: latent / codebook dim.
    codebook_size: number of codes.
    num_channels: image channels.
    commitment_cost: VQ beta (only used for training losses).
  """
  hidden_channels: int = 128
  channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  z_channels: int = 256
  codebook_size: int = 1024
  num_channels: int = 3
  commitment_cost: float = 0.25

  def __post_init__(self):
    self.channel_mult = tuple(int(m) for m in self.channel_mult)
    for m in self.channel_mult:
      if (self.hidden_channels * m) % layers.GROUP_NORM_GROUPS:
        raise ValueError(
            f"channel_mult: every hidden_channels*mult must be a multiple of "
            f"{layers.GROUP_NORM_GROUPS}, got hidden_channels={self.hidden_channels}, "
            f"channel_mult={self.channel_mult}")

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.channel_mult) - 1)

  @classmethod
  def from_official(cls, d: dict, *, codebook_size: int = 1024) -> "MaskGITConfig":
    """Reads the official decoder dict (`hidden_channels`, `channel_mult`, ...)."""
    mult = tuple(d.get("channel_mult", cls.channel_mult))
    if "num_resolutions" in d and int(d["num_resolutions"]) != len(mult):
      raise ValueError(f"num_resolutions: expected len(channel_mult)={len(mult)}, "
                       f"got {d['num_resolutions']}")
    if float(d.get("dropout", 0.0)) != 0.0:
      raise ValueError(f"dropout: expected 0.0 (inference port), got {d['dropout']}")
    return cls(hidden_channels=int(d.get("hidden_channels", 128)), channel_mult=mult,
               num_res_blocks=int(d.get("num_res_blocks", 2)),
               z_channels=int(d.get("z_channels", 256)), codebook_size=int(codebook_size),
               num_channels=int(d.get("num_channels", 3)))


def _conv(cin: int, cout: int, k: int, *, use_bias: bool, rngs: nnx.Rngs) -> nnx.Conv:
  return nnx.Conv(cin, cout, (k, k), padding="SAME", use_bias=use_bias, rngs=rngs)


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
  """`[B, H, W, C]` -> `[B, 2H, 2W, C]`, each pixel repeated 2x2."""
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return x.reshape(b, 2 * h, 2 * w, c)


def _phase_taps(k: jax.Array) -> tuple[jax.Array, jax.Array]:
  """3 taps `[3, ...]` of a SAME conv along one axis of a x2 nearest-upsampled input -> the 2
  taps over the ORIGINAL input for even (offsets -1, 0) and odd (offsets 0, +1) outputs."""
  return jnp.stack([k[0], k[1] + k[2]]), jnp.stack([k[0] + k[1], k[2]])


def upsample_conv_2x(x: jax.Array, conv: nnx.Conv) -> jax.Array:
  """`conv(upsample_nearest_2x(x))` for a 3x3 stride-1 "SAME" `conv`, `[B, H, W, C] ->
  [B, 2H, 2W, O]`, computed at the input resolution.

  Each of the four output phases (even/odd row x even/odd column) of a 3x3 conv over a
  nearest-upsampled map sees only a 2x2 neighbourhood of the input, with the taps that land on
  the same input pixel summed: four 2x2 convs at H x W (16 HWCO multiply-adds) instead of one
  3x3 conv at 2H x 2W (36 HWCO), then interleaved. Same numbers up to float32 summation order.
  """
  b, h, w, _ = x.shape
  kernel = conv.kernel[...]
  rows = _phase_taps(kernel)  # rows[a]: [2, 3, C, O], the row taps of output row phase a.
  pads = ((1, 0), (0, 1))  # Phase 0 reads offsets (-1, 0), phase 1 reads (0, +1).
  phases = []
  for a in (0, 1):
    cols = _phase_taps(jnp.swapaxes(rows[a], 0, 1))  # cols[c]: [2 (col), 2 (row), C, O]
    for c in (0, 1):
      phases.append(jax.lax.conv_general_dilated(
          x, jnp.swapaxes(cols[c], 0, 1).astype(x.dtype), (1, 1), (pads[a], pads[c]),
          dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=conv.precision))
  out = jnp.stack(phases).reshape(2, 2, b, h, w, -1)  # [row phase, col phase, B, H, W, O]
  out = out.transpose(2, 3, 0, 4, 1, 5).reshape(b, 2 * h, 2 * w, -1)
  if conv.bias is not None:
    out = out + conv.bias[...]
  return out


def avg_pool_2x(x: jax.Array) -> jax.Array:
  """`[B, H, W, C]` -> `[B, H/2, W/2, C]`, 2x2 mean."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class ResnetBlock(nnx.Module):
  """GN-SiLU-conv3x3 twice, plus a residual.

  MaskGIT layout (default): bias-free convs; the residual is x, or `nin_shortcut(h)`
  (out -> out) when in != out. VQGAN layout (`vqgan=True`, taming / LlamaGen / FQGAN): convs
  with bias, and the residual is x or `nin_shortcut(x)` (in -> out, 1x1 with bias).
  """

  def __init__(self, cin: int, cout: int, *, vqgan: bool = False, rngs: nnx.Rngs):
    self.cin, self.cout = cin, cout
    self.vqgan = vqgan
    self.norm1 = layers.group_norm(cin, rngs=rngs)
    self.conv1 = _conv(cin, cout, 3, use_bias=vqgan, rngs=rngs)
    self.norm2 = layers.group_norm(cout, rngs=rngs)
    self.conv2 = _conv(cout, cout, 3, use_bias=vqgan, rngs=rngs)
    # Released MaskGIT weights: a (out, out, 1x1) shortcut applied to h, not to x.
    short_in = cin if vqgan else cout
    self.nin_shortcut = (_conv(short_in, cout, 1, use_bias=vqgan, rngs=rngs)
                         if cin != cout else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv1(jax.nn.silu(self.norm1(x)))
    h = self.conv2(jax.nn.silu(self.norm2(h)))
    if self.nin_shortcut is None:
      return h + x
    return h + self.nin_shortcut(x if self.vqgan else h)


class AttnBlock(nnx.Module):
  """VQGAN non-local block: GN, 1x1 q/k/v, single-head softmax attention over the h*w
  positions (scale C^-1/2), 1x1 `proj_out`, residual. `[B, H, W, C] -> [B, H, W, C]`."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    self.norm = layers.group_norm(channels, rngs=rngs)
    self.q = _conv(channels, channels, 1, use_bias=True, rngs=rngs)
    self.k = _conv(channels, channels, 1, use_bias=True, rngs=rngs)
    self.v = _conv(channels, channels, 1, use_bias=True, rngs=rngs)
    self.proj_out = _conv(channels, channels, 1, use_bias=True, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    y = self.norm(x)
    q, k, v = (m(y).reshape(b, h * w, 1, c) for m in (self.q, self.k, self.v))
    out = jax.nn.dot_product_attention(q, k, v)  # scale C^-1/2, softmax over keys
    return x + self.proj_out(out.reshape(b, h, w, c))


class Downsample(nnx.Module):
  """VQGAN downsampling: zero-pad right and bottom by 1, then a 3x3 stride-2 conv (no pad)."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(channels, channels, (3, 3), strides=(2, 2), padding="VALID",
                         rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))))


class Upsample(nnx.Module):
  """VQGAN upsampling: nearest x2, then a 3x3 conv."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    self.conv = _conv(channels, channels, 3, use_bias=True, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return upsample_conv_2x(x, self.conv)


def _resnet_stack(cin: int, cout: int, num_blocks: int, rngs: nnx.Rngs) -> nnx.List:
  """`num_blocks` ResnetBlocks, the first cin -> cout, the rest cout -> cout."""
  return nnx.List([ResnetBlock(cin if i == 0 else cout, cout, rngs=rngs)
                   for i in range(num_blocks)])


def _apply_stack(blocks: nnx.List, x: jax.Array) -> jax.Array:
  for blk in blocks:
    x = blk(x)
  return x


class UpBlock(nnx.Module):
  """Level of the decoder: `num_res_blocks` ResnetBlocks, then (optionally) x2 up + conv."""

  def __init__(self, cin: int, cout: int, num_res_blocks: int, upsample: bool, *,
               rngs: nnx.Rngs):
    self.block = _resnet_stack(cin, cout, num_res_blocks, rngs)
    self.upsample_conv = _conv(cout, cout, 3, use_bias=True, rngs=rngs) if upsample else None

  def __call__(self, x: jax.Array) -> jax.Array:
    x = _apply_stack(self.block, x)
    if self.upsample_conv is not None:
      x = upsample_conv_2x(x, self.upsample_conv)
    return x


class DownBlock(nnx.Module):
  """Level of the encoder: `num_res_blocks` ResnetBlocks, then (optionally) 2x2 avg-pool."""

  def __init__(self, cin: int, cout: int, num_res_blocks: int, downsample: bool, *,
               rngs: nnx.Rngs):
    self.block = _resnet_stack(cin, cout, num_res_blocks, rngs)
    self.downsample = downsample

  def __call__(self, x: jax.Array) -> jax.Array:
    x = _apply_stack(self.block, x)
    return avg_pool_2x(x) if self.downsample else x


class MaskGITDecoder(nnx.Module):
  """`[B, h, w, z_channels]` -> `[B, h*f, w*f, 3]` (unclamped), f = config.downsample_factor.

  `up[lvl]` is the level of resolution lvl; levels run from the last (coarsest) to 0, as in
  the released weights (`pixel_decoder.up.4` first).
  """

  def __init__(self, config: MaskGITConfig, *, rngs: nnx.Rngs):
    self.config = config
    hid, mult = config.hidden_channels, config.channel_mult
    n = len(mult)
    top = hid * mult[-1]
    self.conv_in = _conv(config.z_channels, top, 3, use_bias=True, rngs=rngs)
    self.mid = nnx.List([ResnetBlock(top, top, rngs=rngs) for _ in range(config.num_res_blocks)])
    ups = []
    for lvl in range(n):
      cin = hid * (mult[-1] if lvl == n - 1 else mult[lvl + 1])
      ups.append(UpBlock(cin, hid * mult[lvl], config.num_res_blocks, lvl != 0, rngs=rngs))
    self.up = nnx.List(ups)
    self.norm_out = layers.group_norm(hid * mult[0], rngs=rngs)
    self.conv_out = _conv(hid * mult[0], config.num_channels, 3, use_bias=True, rngs=rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    x = self.conv_in(z)
    for blk in self.mid:
      x = blk(x)
    for lvl in reversed(range(len(self.up))):
      x = self.up[lvl](x)
    return self.conv_out(jax.nn.silu(self.norm_out(x)))


class MaskGITEncoder(nnx.Module):
  """`[B, H, W, 3]` -> `[B, H/f, W/f, z_channels]` (pre-quantization)."""

  def __init__(self, config: MaskGITConfig, *, rngs: nnx.Rngs):
    self.config = config
    hid, mult = config.hidden_channels, config.channel_mult
    n = len(mult)
    self.conv_in = _conv(config.num_channels, hid, 3, use_bias=False, rngs=rngs)
    in_mult = (1,) + mult
    self.down = nnx.List([
        DownBlock(hid * in_mult[i], hid * mult[i], config.num_res_blocks, i != n - 1, rngs=rngs)
        for i in range(n)
    ])
    top = hid * mult[-1]
    self.mid = nnx.List([ResnetBlock(top, top, rngs=rngs) for _ in range(config.num_res_blocks)])
    self.norm_out = layers.group_norm(top, rngs=rngs)
    self.conv_out = _conv(top, config.z_channels, 1, use_bias=True, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    x = self.conv_in(images)
    for blk in self.down:
      x = blk(x)
    for blk in self.mid:
      x = blk(x)
    return self.conv_out(jax.nn.silu(self.norm_out(x)))


class MaskGITVQGAN(nnx.Module):
  """The full MaskGIT VQGAN: encoder, VQ (plain l2, no normalization), decoder.

  Used by TiTok stage-1 training to compute proxy codes, and to decode code maps.
  """

  def __init__(self, config: MaskGITConfig | None = None, *, rngs: nnx.Rngs):
    self.config = config = config or MaskGITConfig()
    self.encoder = MaskGITEncoder(config, rngs=rngs)
    self.quantize = VectorQuantizer(config.codebook_size, config.z_channels, distance="l2",
                                    beta=config.commitment_cost, rngs=rngs)
    self.decoder = MaskGITDecoder(config, rngs=rngs)

  def _check_images(self, images: jax.Array) -> None:
    f = self.config.downsample_factor
    if images.ndim != 4 or images.shape[-1] != self.config.num_channels:
      raise ValueError(f"images: expected [B, H, W, {self.config.num_channels}], "
                       f"got shape {tuple(images.shape)}")
    if images.shape[1] % f or images.shape[2] % f:
      raise ValueError(f"images: expected H and W divisible by {f}, got {tuple(images.shape)}")

  def encode(self, images: jax.Array) -> jax.Array:
    """`[B, H, W, 3]` float in [0, 1] -> code ids `[B, H/16, W/16]` int32."""
    self._check_images(images)
    z = self.encoder(jnp.asarray(images, jnp.float32))
    _, aux = self.quantize(z, train=False)
    return aux["ids"].astype(jnp.int32)

  def decode_ids(self, ids: jax.Array) -> jax.Array:
    """Code ids `[B, h, w]` int -> images `[B, 16h, 16w, 3]` float32 (unclamped)."""
    if ids.ndim != 3:
      raise ValueError(f"ids: expected [B, h, w], got shape {tuple(ids.shape)}")
    return self.decoder(self.quantize.lookup(ids))

  def __call__(self, images: jax.Array, train: bool = False):
    """`recon [B, H, W, 3], aux` with the quantizer's losses, ids and stats."""
    self._check_images(images)
    z = self.encoder(jnp.asarray(images, jnp.float32))
    zq, aux = self.quantize(z, train=train)
    return self.decoder(zq), aux
