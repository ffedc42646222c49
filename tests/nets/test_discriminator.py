"""Tests of jaxtok.nets.discriminator against an independent numpy forward pass."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.nets import discriminator as D


def _np_same_conv(x, w, b):
  """TF-SAME stride-1 conv, NCHW / OIHW, float64."""
  k = w.shape[-1]
  lo, hi = (k - 1) // 2, k - 1 - (k - 1) // 2
  xp = np.pad(x, ((0, 0), (0, 0), (lo, hi), (lo, hi)))
  h, wd = x.shape[2:]
  out = np.zeros((x.shape[0], w.shape[0], h, wd))
  for dy in range(k):
    for dx in range(k):
      out += np.einsum("bihw,oi->bohw", xp[:, :, dy:dy + h, dx:dx + wd], w[:, :, dy, dx])
  return out + b[None, :, None, None]


def _np_blur(x, taps=(1, 3, 3, 1)):
  k = np.outer(taps, taps).astype(np.float64)
  k /= k.sum()
  h = x.shape[2]
  pad = max((math.ceil(h / 2) - 1) * 2 + 4 - h, 0)
  xp = np.pad(x, ((0, 0), (0, 0), (pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2)))
  n = (xp.shape[2] - len(taps)) // 2 + 1
  out = np.zeros(x.shape[:2] + (n, n))
  for i in range(n):
    for j in range(n):
      out[:, :, i, j] = (xp[:, :, 2 * i:2 * i + len(taps), 2 * j:2 * j + len(taps)] * k).sum((2, 3))
  return out


def _np_group_norm(x, gamma, beta, groups=32, eps=1e-5):
  b, c, h, w = x.shape
  g = x.reshape(b, groups, c // groups, h, w)
  g = (g - g.mean((2, 3, 4), keepdims=True)) / np.sqrt(g.var((2, 3, 4), keepdims=True) + eps)
  return g.reshape(b, c, h, w) * gamma[None, :, None, None] + beta[None, :, None, None]


def _np_adaptive_max(x, n):
  size = x.shape[2]
  out = np.zeros(x.shape[:2] + (n, n))
  for i in range(n):
    for j in range(n):
      r0, r1 = (i * size) // n, -(-(i + 1) * size // n)
      c0, c1 = (j * size) // n, -(-(j + 1) * size // n)
      out[:, :, i, j] = x[:, :, r0:r1, c0:c1].max((2, 3))
  return out


def _random_state_dict(hidden, stages, rng):
  mult = (1,) + tuple(2 ** t for t in range(stages))
  conv = lambda o, i, k: (rng.normal(0, 1 / np.sqrt(i * k * k), (o, i, k, k)),
                          rng.normal(0, 0.1, (o,)))
  sd = {}
  sd["block_in.0.weight"], sd["block_in.0.bias"] = conv(hidden, 3, 5)
  for i in range(stages):
    cin, cout = hidden * mult[i], hidden * mult[i + 1]
    sd[f"blocks.{i}.0.weight"], sd[f"blocks.{i}.0.bias"] = conv(cout, cin, 3)
    sd[f"blocks.{i}.2.weight"] = rng.uniform(0.5, 1.5, (cout,))
    sd[f"blocks.{i}.2.bias"] = rng.normal(0, 0.1, (cout,))
  c = hidden * mult[-1]
  sd["to_logits.0.weight"], sd["to_logits.0.bias"] = conv(c, c, 1)
  sd["to_logits.2.weight"], sd["to_logits.2.bias"] = conv(1, c, 5)
  return sd


def _np_forward(sd, x, stages, pool):
  act = lambda v: np.where(v > 0, v, 0.1 * v)
  h = act(_np_same_conv(x, sd["block_in.0.weight"], sd["block_in.0.bias"]))
  for i in range(stages):
    h = _np_same_conv(h, sd[f"blocks.{i}.0.weight"], sd[f"blocks.{i}.0.bias"])
    h = act(_np_group_norm(_np_blur(h), sd[f"blocks.{i}.2.weight"], sd[f"blocks.{i}.2.bias"]))
  h = _np_adaptive_max(h, pool)
  h = act(_np_same_conv(h, sd["to_logits.0.weight"], sd["to_logits.0.bias"]))
  return _np_same_conv(h, sd["to_logits.2.weight"], sd["to_logits.2.bias"])


@pytest.mark.parametrize("size", [32, 40])  # 40: adaptive pool with uneven bins.
def test_discriminator_matches_numpy_reference(size):
  cfg = D.DiscriminatorConfig(hidden_channels=32, num_stages=2, pool_size=4)
  model = D.NLayerDiscriminator(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(size)
  sd = _random_state_dict(32, 2, rng)
  model.load_torch_state_dict(sd)
  x = rng.uniform(size=(2, size, size, 3))
  got = nnx.jit(lambda m, v: m(v))(model, jnp.asarray(x, jnp.float32))
  expected = _np_forward(sd, x.transpose(0, 3, 1, 2), 2, 4).transpose(0, 2, 3, 1)
  assert got.shape == (2, 4, 4, 1)
  np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)


def test_titok_default_discriminator_shapes_and_grads():
  model = D.NLayerDiscriminator(D.DiscriminatorConfig(hidden_channels=32), rngs=nnx.Rngs(0))
  images = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3), jnp.bfloat16)

  @nnx.jit
  def loss_and_grad(m, x):
    return nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(m)

  logits = nnx.jit(lambda m, x: m(x))(model, images)
  assert logits.shape == (2, 16, 16, 1) and logits.dtype == jnp.float32
  value, grads = loss_and_grad(model, images)
  leaves = jax.tree_util.tree_leaves(grads)
  assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in leaves)
  assert any(float(jnp.abs(g).sum()) > 0 for g in leaves)
  with pytest.raises(ValueError, match="images"):
    model(images[..., :1])
  with pytest.raises(ValueError, match="blur_kernel_size"):
    D.NLayerDiscriminator(D.DiscriminatorConfig(blur_kernel_size=6), rngs=nnx.Rngs(0))


def test_blur_and_adaptive_pool_helpers():
  x = np.random.default_rng(0).normal(size=(1, 9, 9, 2))
  blur = D.BlurDownsample((1, 2, 1))
  np.testing.assert_allclose(blur(jnp.asarray(x, jnp.float32)),
                             _np_blur(x.transpose(0, 3, 1, 2), (1, 2, 1)).transpose(0, 2, 3, 1),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(D.adaptive_max_pool(jnp.asarray(x), 4),
                             _np_adaptive_max(x.transpose(0, 3, 1, 2), 4).transpose(0, 2, 3, 1))
  # Upsampling case (fewer pixels than bins) as torch: overlapping single-pixel bins.
  small = np.arange(9.0).reshape(1, 3, 3, 1)
  np.testing.assert_allclose(D.adaptive_max_pool(jnp.asarray(small), 4),
                             _np_adaptive_max(small.transpose(0, 3, 1, 2), 4)
                             .transpose(0, 2, 3, 1))
