"""TiTok's GAN discriminator (the 1d-tokenizer `NLayerDiscriminator`), NHWC, Flax NNX.

Architecture (TiTok, arXiv 2406.07550; the MaskGIT-style StyleGAN-like design):

  block_in:  conv 5x5 (3 -> C), LeakyReLU(0.1)
  stage i:   conv 3x3 (C m_i -> C m_{i+1}), blur downsample x2, GroupNorm(32), LeakyReLU(0.1)
             with m = (1, 1, 2, 4, ...) (C=128, 3 stages: 128, 128, 256, 512 channels)
  pool:      adaptive max pool to 16x16
  to_logits: conv 1x1, LeakyReLU(0.1), conv 5x5 (-> 1)

All convs use TF "SAME" padding (the reference's Conv2dSame). The blur downsample pads as a
4x4 stride-2 "SAME" conv would, then applies the normalised outer product of a binomial
kernel ((1, 3, 3, 1) by default) per channel with stride 2. Logits: `[B, 16, 16, 1]`.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

BLUR_KERNELS = {3: (1, 2, 1), 4: (1, 3, 3, 1), 5: (1, 4, 6, 4, 1)}
_GN_EPS = 1e-5  # torch.nn.GroupNorm's default.
# PyTorch's default conv init (kaiming_uniform, a=sqrt(5)): U(+-1/sqrt(fan_in)).
_TORCH_INIT = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


@dataclasses.dataclass(kw_only=True)
class DiscriminatorConfig:
  """Settings of `NLayerDiscriminator` (defaults = TiTok's)."""
  num_channels: int = 3
  hidden_channels: int = 128
  num_stages: int = 3
  blur_resample: bool = True
  blur_kernel_size: int = 4
  pool_size: int = 16
  negative_slope: float = 0.1


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
  total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class BlurDownsample(nnx.Module):
  """Per-channel binomial blur with stride 2: `[B, H, W, C]` -> `[B, ~H/2, ~W/2, C]`."""

  def __init__(self, kernel: tuple[int, ...] = (1, 3, 3, 1)):
    k = np.asarray(kernel, np.float32)
    k2 = np.outer(k, k)
    self.kernel = jnp.asarray(k2 / k2.sum())  # A constant, not a parameter.

  def __call__(self, x: jax.Array) -> jax.Array:
    _, h, w, c = x.shape
    # Padding as for a 4x4 stride-2 SAME conv, whatever the blur size (as the reference).
    x = jnp.pad(x, ((0, 0), _same_pad(h, 4, 2), _same_pad(w, 4, 2), (0, 0)))
    kh, kw = self.kernel.shape
    weight = jnp.broadcast_to(self.kernel.astype(x.dtype)[:, :, None, None], (kh, kw, 1, c))
    return jax.lax.conv_general_dilated(
        x, weight, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c)


def adaptive_max_pool(x: jax.Array, out_size: int) -> jax.Array:
  """PyTorch `AdaptiveMaxPool2d`: bin i covers [floor(i S/n), ceil((i+1) S/n)).

  `[B, H, W, C]` -> `[B, n, n, C]`. Exact reshape-max when n divides the size.
  """

  def pool_axis(x, axis):
    size = x.shape[axis]
    if size % out_size == 0:
      shape = x.shape[:axis] + (out_size, size // out_size) + x.shape[axis + 1:]
      return jnp.max(x.reshape(shape), axis=axis + 1)
    bins = []
    for i in range(out_size):
      start, end = (i * size) // out_size, -((-(i + 1) * size) // out_size)
      bins.append(jnp.max(jax.lax.slice_in_dim(x, start, end, axis=axis), axis=axis,
                          keepdims=True))
    return jnp.concatenate(bins, axis=axis)

  return pool_axis(pool_axis(x, 1), 2)


class NLayerDiscriminator(nnx.Module):
  """TiTok's patch discriminator: images `[B, H, W, 3]` in [0, 1] -> logits `[B, 16, 16, 1]`.

  Parameters are float32; inputs of any float dtype are cast to float32.
  """

  def __init__(self, config: DiscriminatorConfig | None = None, *, rngs: nnx.Rngs):
    cfg = config or DiscriminatorConfig()
    if cfg.num_stages < 1:
      raise ValueError(f"config.num_stages: expected >= 1, got {cfg.num_stages}")
    if cfg.blur_resample and cfg.blur_kernel_size not in BLUR_KERNELS:
      raise ValueError(f"config.blur_kernel_size: expected one of {sorted(BLUR_KERNELS)}, "
                       f"got {cfg.blur_kernel_size}")
    self.config = cfg
    conv = lambda i, o, k: nnx.Conv(i, o, (k, k), padding="SAME", kernel_init=_TORCH_INIT,
                                    rngs=rngs)
    c = cfg.hidden_channels
    self.block_in = conv(cfg.num_channels, c, 5)
    mult = (1,) + tuple(2 ** t for t in range(cfg.num_stages))
    convs, norms = [], []
    for i in range(cfg.num_stages):
      cin, cout = c * mult[i], c * mult[i + 1]
      convs.append(conv(cin, cout, 3))
      norms.append(nnx.GroupNorm(cout, num_groups=32, epsilon=_GN_EPS, rngs=rngs))
    self.stage_convs = nnx.List(convs)
    self.stage_norms = nnx.List(norms)
    self.blur = (BlurDownsample(BLUR_KERNELS[cfg.blur_kernel_size])
                 if cfg.blur_resample else None)
    cout = c * mult[-1]
    self.logits_hidden = conv(cout, cout, 1)
    self.logits_out = conv(cout, 1, 5)

  def _act(self, x):
    return jax.nn.leaky_relu(x, self.config.negative_slope)

  def _down(self, x):
    if self.blur is not None:
      return self.blur(x)
    return nnx.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")

  def __call__(self, images: jax.Array) -> jax.Array:
    if images.ndim != 4 or images.shape[-1] != self.config.num_channels:
      raise ValueError(f"images: expected [B, H, W, {self.config.num_channels}], got "
                       f"{images.shape}")
    x = self._act(self.block_in(images.astype(jnp.float32)))
    for conv, norm in zip(self.stage_convs, self.stage_norms):
      x = self._act(norm(self._down(conv(x))))
    x = adaptive_max_pool(x, self.config.pool_size)
    return self.logits_out(self._act(self.logits_hidden(x)))

  def load_torch_state_dict(self, state_dict) -> None:
    """Loads the official 1d-tokenizer discriminator weights (numpy values).

    Keys: `block_in.0.*`, `blocks.{i}.0.*` (conv), `blocks.{i}.2.*` (GroupNorm),
    `to_logits.0.*`, `to_logits.2.*`.
    """
    sd = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}

    def put(conv, prefix):
      for key in (f"{prefix}.weight", f"{prefix}.bias"):
        if key not in sd:
          raise ValueError(f"state_dict: missing {key!r}")
      w = sd[f"{prefix}.weight"].transpose(2, 3, 1, 0)  # OIHW -> HWIO
      if w.shape != conv.kernel.shape:
        raise ValueError(f"state_dict[{prefix}.weight]: expected (HWIO) "
                         f"{conv.kernel.shape}, got {w.shape}")
      conv.kernel.set_value(jnp.asarray(w))
      conv.bias.set_value(jnp.asarray(sd[f"{prefix}.bias"]))

    put(self.block_in, "block_in.0")
    for i, (conv, norm) in enumerate(zip(self.stage_convs, self.stage_norms)):
      put(conv, f"blocks.{i}.0")
      norm.scale.set_value(jnp.asarray(sd[f"blocks.{i}.2.weight"]))
      norm.bias.set_value(jnp.asarray(sd[f"blocks.{i}.2.bias"]))
    put(self.logits_hidden, "to_logits.0")
    put(self.logits_out, "to_logits.2")
