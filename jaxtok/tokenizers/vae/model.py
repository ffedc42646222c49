"""`AutoencoderKL`: the convolutional KL-regularised autoencoder of latent diffusion (Kingma &
Welling arXiv 1312.6114; Rombach et al. arXiv 2112.10752) in Flax NNX, with the module layout
(and so the parameter names) of diffusers' `AutoencoderKL`.

- Encoder: `conv_in` (3x3), `down_blocks[i]` = `layers_per_block` ResnetBlock2D (+ a stride-2
  Downsample2D except at the last level), `mid_block` = ResnetBlock2D, single-head
  self-attention, ResnetBlock2D; `conv_norm_out` (GroupNorm) + SiLU + `conv_out` (3x3) to the
  2C moments (mean ‖ log-variance); `quant_conv` (1x1) when configured.
- Decoder: `post_quant_conv` (1x1) when configured, `conv_in`, `mid_block`, `up_blocks[i]` =
  `layers_per_block + 1` ResnetBlock2D (+ nearest x2 and a 3x3 conv except at the last level,
  channels reversed), `conv_norm_out` + SiLU + `conv_out` to pixels in [-1, 1].
- GroupNorm(`norm_num_groups`, eps 1e-6) and SiLU everywhere; the posterior is the shared
  "gaussian" bottleneck (`quantizers/gaussian.py`: log-variance clipped to [-30, 20]).

As a tokenizer (family "vae") the tokens are the scaled latents `(z - shift) * scale`, `[B, h*w,
C]` float (row-major over the latent grid). Arrays are NHWC; diffusers' are NCHW (the loader
transposes). `load_autoencoder` reads a diffusers directory (`config.json` +
`diffusion_pytorch_model.safetensors`) or a jaxtok checkpoint of this family.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtok.tokenizers import interface, layers
from jaxtok.tokenizers.interface import TokenSpec
from jaxtok.tokenizers.quantizers import build_quantizer
from jaxtok.tokenizers.quantizers.gaussian import as_key
from jaxtok.tokenizers.vae.config import FAMILY, AutoencoderKLConfig

__all__ = ["AutoencoderKL", "FAMILY"]


def _conv(cin: int, cout: int, k: int, rngs: nnx.Rngs, **kw) -> nnx.Conv:
  return nnx.Conv(cin, cout, (k, k), padding=kw.pop("padding", "SAME"), rngs=rngs, **kw)


class ResnetBlock2D(nnx.Module):
  """GN-SiLU-conv3x3 twice + residual (`conv_shortcut` 1x1 on x when channels change)."""

  def __init__(self, cin: int, cout: int, config: AutoencoderKLConfig, *, rngs: nnx.Rngs):
    g, eps = config.norm_num_groups, config.norm_eps
    self.norm1 = layers.group_norm(cin, num_groups=g, eps=eps, rngs=rngs)
    self.conv1 = _conv(cin, cout, 3, rngs)
    self.norm2 = layers.group_norm(cout, num_groups=g, eps=eps, rngs=rngs)
    self.conv2 = _conv(cout, cout, 3, rngs)
    self.conv_shortcut = _conv(cin, cout, 1, rngs) if cin != cout else None

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv1(jax.nn.silu(self.norm1(x)))
    h = self.conv2(jax.nn.silu(self.norm2(h)))
    return h + (x if self.conv_shortcut is None else self.conv_shortcut(x))


class Attention(nnx.Module):
  """diffusers' mid-block attention: GN, one head over the h*w positions (scale C^-1/2),
  Linear `to_q` / `to_k` / `to_v` / `to_out[0]` with bias, residual."""

  def __init__(self, channels: int, config: AutoencoderKLConfig, *, rngs: nnx.Rngs):
    self.group_norm = layers.group_norm(channels, num_groups=config.norm_num_groups,
                                        eps=config.norm_eps, rngs=rngs)
    self.to_q = nnx.Linear(channels, channels, rngs=rngs)
    self.to_k = nnx.Linear(channels, channels, rngs=rngs)
    self.to_v = nnx.Linear(channels, channels, rngs=rngs)
    self.to_out = nnx.List([nnx.Linear(channels, channels, rngs=rngs)])

  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    y = self.group_norm(x).reshape(b, h * w, c)
    q, k, v = (m(y)[:, :, None, :] for m in (self.to_q, self.to_k, self.to_v))
    out = jax.nn.dot_product_attention(q, k, v)[:, :, 0, :]
    return x + self.to_out[0](out).reshape(b, h, w, c)


class Downsample2D(nnx.Module):
  """Zero-pad right and bottom by one, then a 3x3 stride-2 conv (diffusers `padding=0`)."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    self.conv = _conv(channels, channels, 3, rngs, strides=(2, 2), padding="VALID")

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))))


class Upsample2D(nnx.Module):
  """Nearest-neighbour x2, then a 3x3 conv."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    self.conv = _conv(channels, channels, 3, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


class EncoderBlock(nnx.Module):
  """`DownEncoderBlock2D`: `resnets`, then `downsamplers[0]` unless the last level."""

  def __init__(self, cin: int, cout: int, n: int, down: bool, config: AutoencoderKLConfig, *,
               rngs: nnx.Rngs):
    self.resnets = nnx.List([ResnetBlock2D(cin if i == 0 else cout, cout, config, rngs=rngs)
                             for i in range(n)])
    self.downsamplers = nnx.List([Downsample2D(cout, rngs=rngs)] if down else [])

  def __call__(self, x: jax.Array) -> jax.Array:
    for m in (*self.resnets, *self.downsamplers):
      x = m(x)
    return x


class DecoderBlock(nnx.Module):
  """`UpDecoderBlock2D`: `resnets`, then `upsamplers[0]` unless the last level."""

  def __init__(self, cin: int, cout: int, n: int, up: bool, config: AutoencoderKLConfig, *,
               rngs: nnx.Rngs):
    self.resnets = nnx.List([ResnetBlock2D(cin if i == 0 else cout, cout, config, rngs=rngs)
                             for i in range(n)])
    self.upsamplers = nnx.List([Upsample2D(cout, rngs=rngs)] if up else [])

  def __call__(self, x: jax.Array) -> jax.Array:
    for m in (*self.resnets, *self.upsamplers):
      x = m(x)
    return x


class MidBlock(nnx.Module):
  """`UNetMidBlock2D`: resnets[0], attentions[0] (optional), resnets[1]."""

  def __init__(self, channels: int, config: AutoencoderKLConfig, *, rngs: nnx.Rngs):
    self.resnets = nnx.List([ResnetBlock2D(channels, channels, config, rngs=rngs)
                             for _ in range(2)])
    self.attentions = nnx.List([Attention(channels, config, rngs=rngs)]
                               if config.mid_block_add_attention else [])

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.resnets[0](x)
    for attn in self.attentions:
      x = attn(x)
    return self.resnets[1](x)


class Encoder(nnx.Module):
  """Pixels `[B, S, S, in]` in [-1, 1] -> moments `[B, S/f, S/f, 2C]` (before `quant_conv`)."""

  def __init__(self, config: AutoencoderKLConfig, *, rngs: nnx.Rngs):
    ch = config.block_out_channels
    self.conv_in = _conv(config.in_channels, ch[0], 3, rngs)
    self.down_blocks = nnx.List([
        EncoderBlock(ch[max(i - 1, 0)], ch[i], config.layers_per_block, i < len(ch) - 1,
                     config, rngs=rngs) for i in range(len(ch))])
    self.mid_block = MidBlock(ch[-1], config, rngs=rngs)
    self.conv_norm_out = layers.group_norm(ch[-1], num_groups=config.norm_num_groups,
                                           eps=config.norm_eps, rngs=rngs)
    self.conv_out = _conv(ch[-1], 2 * config.latent_channels, 3, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv_in(x)
    for blk in self.down_blocks:
      x = blk(x)
    x = self.mid_block(x)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class Decoder(nnx.Module):
  """Latents `[B, h, w, C]` (after `post_quant_conv`) -> pixels `[B, h*f, w*f, out]`."""

  def __init__(self, config: AutoencoderKLConfig, *, rngs: nnx.Rngs):
    ch = tuple(reversed(config.block_out_channels))
    self.conv_in = _conv(config.latent_channels, ch[0], 3, rngs)
    self.mid_block = MidBlock(ch[0], config, rngs=rngs)
    self.up_blocks = nnx.List([
        DecoderBlock(ch[max(i - 1, 0)], ch[i], config.layers_per_block + 1, i < len(ch) - 1,
                     config, rngs=rngs) for i in range(len(ch))])
    self.conv_norm_out = layers.group_norm(ch[-1], num_groups=config.norm_num_groups,
                                           eps=config.norm_eps, rngs=rngs)
    self.conv_out = _conv(ch[-1], config.out_channels, 3, rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    x = self.mid_block(self.conv_in(z))
    for blk in self.up_blocks:
      x = blk(x)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class AutoencoderKL(nnx.Module):
  """The KL autoencoder, usable as a continuous tokenizer (family "vae") and as a front end.

  Methods:
    moments(x [B,S,S,3] in [-1,1]) -> [B,h,w,2C]; decode_raw(z [B,h,w,C]) -> [-1,1] pixels
      (unscaled latents: diffusers' `encode(x).latent_dist.parameters` / `decode(z).sample`).
    encode_latents(images in [0,1], sample=False, rngs) -> scaled latents [B,h,w,C];
      decode_latents(scaled latents) -> images [0,1] (unclamped).
    encode(images) -> tokens [B, h*w, C] float32; decode_tokens(tokens) -> images.
    __call__(images, train=False, *, rngs) -> (recon, aux with `losses['kl']`).
  """

  def __init__(self, config: AutoencoderKLConfig, *, rngs: nnx.Rngs):
    if not isinstance(config, AutoencoderKLConfig):
      raise ValueError(f"config: expected an AutoencoderKLConfig, got {type(config).__name__}")
    c2 = 2 * config.latent_channels
    self.config = config
    self.encoder = Encoder(config, rngs=rngs)
    self.decoder = Decoder(config, rngs=rngs)
    self.quant_conv = _conv(c2, c2, 1, rngs) if config.use_quant_conv else None
    self.post_quant_conv = (_conv(config.latent_channels, config.latent_channels, 1, rngs)
                            if config.use_post_quant_conv else None)
    self.quantize = build_quantizer("gaussian", dim=config.latent_channels, rngs=rngs)

  @property
  def token_spec(self) -> TokenSpec:
    c = self.config
    return TokenSpec(num_tokens=c.latent_size ** 2, image_size=c.image_size, vocab_size=None,
                     channels=c.latent_channels)

  # ---- raw (diffusers) interface ----
  def moments(self, x: jax.Array) -> jax.Array:
    """`[B, H, W, in]` in [-1, 1] -> posterior mean ‖ log-variance `[B, H/f, W/f, 2C]`."""
    m = self.encoder(x.astype(jnp.float32))
    return m if self.quant_conv is None else self.quant_conv(m)

  def decode_raw(self, z: jax.Array) -> jax.Array:
    """Unscaled latents `[B, h, w, C]` -> pixels `[B, h*f, w*f, out]` in [-1, 1] (unclamped)."""
    z = z.astype(jnp.float32)
    return self.decoder(z if self.post_quant_conv is None else self.post_quant_conv(z))

  def scale(self, z: jax.Array) -> jax.Array:
    """Raw latents -> the second stage's: (z - shift_factor) * scaling_factor."""
    return (z - self.config.shift_factor) * self.config.scaling_factor

  def unscale(self, z: jax.Array) -> jax.Array:
    return z / self.config.scaling_factor + self.config.shift_factor

  # ---- tokenizer interface ----
  def _check_latent_grid(self, z: jax.Array, name: str) -> None:
    c = self.config
    if z.ndim != 4 or z.shape[-1] != c.latent_channels:
      raise ValueError(f"{name}: expected latents [B, h, w, {c.latent_channels}] (NHWC), got "
                       f"{tuple(z.shape)}")

  def encode_latents(self, images: jax.Array, *, sample: bool = False,
                     rngs: nnx.Rngs | jax.Array | None = None) -> jax.Array:
    """Images `[B, H, W, 3]` in [0, 1] (H, W multiples of f; any size: the network is
    convolutional) -> scaled latents `[B, H/f, W/f, C]` float32: the posterior mean, or a
    sample with `sample=True` (needs `rngs`)."""
    f = self.config.downsample_factor
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] % f or images.shape[2] % f:
      raise ValueError(f"images: expected [B, H, W, 3] (NHWC) with H and W multiples of {f}, "
                       f"got {tuple(images.shape)}")
    key = as_key(rngs, "rngs (needed to sample the posterior)") if sample else None
    z, _ = self.quantize(self.moments(images * 2.0 - 1.0), train=sample, rngs=key)
    return self.scale(z)

  def decode_latents(self, z: jax.Array) -> jax.Array:
    """Scaled latents `[B, h, w, C]` -> images `[B, h*f, w*f, 3]` in [0, 1] (unclamped)."""
    self._check_latent_grid(z, "z")
    return (self.decode_raw(self.unscale(z.astype(jnp.float32))) + 1.0) * 0.5

  def encode(self, images: jax.Array) -> jax.Array:
    """`[B, S, S, 3]` in [0, 1] -> tokens `[B, h*w, C]` float32 (scaled posterior means)."""
    interface.check_image_shape(images, self.config.image_size, "images")
    z = self.encode_latents(images)
    return z.reshape(z.shape[0], -1, z.shape[-1])

  def decode_tokens(self, tokens: jax.Array) -> jax.Array:
    """Tokens `[B, h*w, C]` float -> images `[B, S, S, 3]` float32 (unclamped)."""
    interface.check_id_shape(tokens, self.token_spec, "tokens")
    n = self.config.latent_size
    if tokens.shape[1] != n * n:
      raise ValueError(f"tokens: expected all {n * n} latent positions ([B, {n * n}, "
                       f"{self.config.latent_channels}]), got {tuple(tokens.shape)}")
    return self.decode_latents(tokens.reshape(tokens.shape[0], n, n, tokens.shape[-1]))

  # ---- training forward ----
  def __call__(self, images: jax.Array, train: bool = False, *,
               rngs: nnx.Rngs | jax.Array | None = None) -> tuple[jax.Array, dict[str, Any]]:
    """Encode, sample (train) or take the mean, decode. Returns `(recon [B, S, S, 3] in [0, 1]
    unclamped, aux)`.

    aux: `losses` {`kl`: KL to N(0, I) of the unscaled posterior, summed over h, w, C and
    averaged over the batch, as latent diffusion's VAE loss; `quantizer`: 0, no codebook},
    `commitment_loss` / `codebook_loss` (0), `stats` ({}), `posterior_mean`, `posterior_logvar`
    `[B, h, w, C]`, `latents` (the scaled latents decoded).
    With `train=True` the latents are a reparameterised sample drawn from `rngs`.
    """
    interface.check_image_shape(images, self.config.image_size, "images")
    key = as_key(rngs, "rngs (train=True samples the posterior)") if train else None
    z, qaux = self.quantize(self.moments(images.astype(jnp.float32) * 2.0 - 1.0), train=train,
                            rngs=key)
    recon = (self.decode_raw(z) + 1.0) * 0.5
    aux = dict(commitment_loss=qaux["commitment_loss"], codebook_loss=qaux["codebook_loss"],
               stats=qaux["stats"], posterior_mean=qaux["posterior_mean"],
               posterior_logvar=qaux["posterior_logvar"], latents=self.scale(z),
               losses={"kl": qaux["kl_loss"], "quantizer": qaux["loss"]})
    return recon, aux
