"""MaskGIT VQGAN: shapes, conventions (contiguous GroupNorm, nearest up, shortcut on h),
and the official-checkpoint mapping."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.tokenizers import maskgit_vqgan as mv
from jaxtok.tokenizers.titok import convert as titok_mapping

SMALL = mv.MaskGITConfig(hidden_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                         z_channels=8, codebook_size=16)


def test_released_layout_default():
  c = mv.MaskGITConfig()
  assert (c.hidden_channels, c.channel_mult, c.num_res_blocks, c.z_channels,
          c.codebook_size) == (128, (1, 1, 2, 2, 4), 2, 256, 1024)
  assert c.downsample_factor == 16
  with pytest.raises(ValueError, match="channel_mult"):
    mv.MaskGITConfig(hidden_channels=20)


def test_group_norm_contiguous_groups_and_upsample():
  x = np.random.default_rng(0).normal(size=(2, 3, 3, 64)).astype(np.float32)
  gn = mv.layers.group_norm(64, rngs=nnx.Rngs(0))
  g = x.reshape(2, 3, 3, 32, 2)  # group j = channels [2j, 2j+2)
  want = ((g - g.mean(axis=(1, 2, 4), keepdims=True))
          / np.sqrt(g.var(axis=(1, 2, 4), keepdims=True) + 1e-6)).reshape(x.shape)
  np.testing.assert_allclose(np.asarray(gn(jnp.asarray(x))), want, atol=1e-5)
  up = np.asarray(mv.upsample_nearest_2x(jnp.asarray(x)))
  np.testing.assert_array_equal(up[:, ::2, ::2], x)
  np.testing.assert_array_equal(up[:, 1::2, 1::2], x)
  np.testing.assert_allclose(np.asarray(mv.avg_pool_2x(jnp.asarray(up))), x, atol=1e-6)


def test_resnet_shortcut_applies_to_h():
  blk = mv.ResnetBlock(32, 64, rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 4, 4, 32)).astype(np.float32))
  h = blk.conv2(jax.nn.silu(blk.norm2(blk.conv1(jax.nn.silu(blk.norm1(x))))))
  np.testing.assert_allclose(np.asarray(blk(x)), np.asarray(h + blk.nin_shortcut(h)), atol=1e-5)


def _official_state_dict(model: mv.MaskGITVQGAN) -> dict:
  """Writes a jaxtok VQGAN's weights under the official names/layouts (test helper)."""
  out = {}
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    v = np.asarray(var[...])
    *mods, leaf = [str(p) for p in path]
    if path[:2] == ("quantize", "codebook"):
      out["quantize.embedding.weight"] = v
    elif leaf == "kernel":
      out[".".join(mods + ["weight"])] = v.transpose(3, 2, 0, 1)
    elif leaf == "scale":
      out[".".join(mods + ["weight"])] = v
    else:
      out[".".join(mods + [leaf])] = v
  return out


def test_encode_decode_and_official_mapping_roundtrip():
  model = mv.MaskGITVQGAN(SMALL, rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(2).uniform(size=(2, 8, 8, 3)).astype(np.float32))
  ids = nnx.jit(lambda m, x: m.encode(x))(model, x)
  assert ids.shape == (2, 4, 4) and ids.dtype == jnp.int32
  img = nnx.jit(lambda m, i: m.decode_ids(i))(model, ids)
  assert img.shape == (2, 8, 8, 3)
  sd = _official_state_dict(model)
  assert "encoder.down.0.block.0.conv1.weight" in sd and "decoder.up.1.upsample_conv.bias" in sd
  assert "decoder.up.0.block.0.nin_shortcut.weight" in sd  # 64 -> 32 level
  loaded = titok_mapping.maskgit_from_official(sd, SMALL)
  np.testing.assert_array_equal(np.asarray(nnx.jit(lambda m, x: m.encode(x))(loaded, x)),
                                np.asarray(ids))
  with pytest.raises(ValueError, match="images"):
    model.encode(jnp.zeros((1, 9, 9, 3)))


@pytest.mark.parametrize("use_bias", [True, False])
def test_upsample_conv_2x_equals_conv_of_nearest_upsample(use_bias):
  conv = nnx.Conv(6, 5, (3, 3), padding="SAME", use_bias=use_bias, rngs=nnx.Rngs(0))
  if use_bias:
    conv.bias[...] = jnp.arange(5, dtype=jnp.float32)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4, 6)).astype(np.float32))
  want = conv(mv.upsample_nearest_2x(x))
  got = mv.upsample_conv_2x(x, conv)
  assert got.shape == (2, 6, 8, 5)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
