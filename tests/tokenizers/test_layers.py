"""Shared ViT layers against plain numpy references."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok.tokenizers import layers


def test_attention_matches_numpy_mha():
  rng = np.random.default_rng(0)
  att = layers.MultiHeadAttention(8, 2, rngs=nnx.Rngs(0))
  att.qkv.kernel[...] = jnp.asarray(rng.normal(size=(8, 24)).astype(np.float32))
  att.qkv.bias[...] = jnp.asarray(rng.normal(size=(24,)).astype(np.float32))
  x = rng.normal(size=(2, 5, 8)).astype(np.float32)
  qkv = x @ np.asarray(att.qkv.kernel[...]) + np.asarray(att.qkv.bias[...])
  q, k, v = np.split(qkv, 3, axis=-1)  # [q | k | v] column blocks, heads contiguous
  heads = []
  for h in range(2):
    s = q[..., 4 * h:4 * h + 4] @ k[..., 4 * h:4 * h + 4].transpose(0, 2, 1) / 2.0  # D^-0.5
    s = np.exp(s - s.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    heads.append(s @ v[..., 4 * h:4 * h + 4])
  want = np.concatenate(heads, -1) @ np.asarray(att.out.kernel[...]) + np.asarray(
      att.out.bias[...])
  np.testing.assert_allclose(np.asarray(att(jnp.asarray(x))), want, atol=1e-5)
  # A key mask that hides the last 2 keys == attention over the first 3 tokens only.
  mask = jnp.asarray([[True] * 3 + [False] * 2] * 2)
  masked = np.asarray(att(jnp.asarray(x), mask))[:, :3]
  np.testing.assert_allclose(masked, np.asarray(att(jnp.asarray(x[:, :3]))), atol=1e-5)


def test_patch_embed_is_a_strided_conv_and_unpatchify_order():
  rng = np.random.default_rng(1)
  pe = layers.PatchEmbed(4, 3, 6, rngs=nnx.Rngs(0))
  img = jnp.asarray(rng.normal(size=(2, 8, 8, 3)).astype(np.float32))
  conv = np.asarray(pe.proj(img)).reshape(2, 4, 6)  # nnx.Conv, row-major grid
  np.testing.assert_allclose(np.asarray(pe(img)), conv, atol=1e-5)
  # Feature index (p1 * p + p2) * C + c lands at pixel (h * p + p1, w * p + p2), channel c.
  g, p = 2, 3
  feats = np.arange(1 * g * g * p * p * 3, dtype=np.float32).reshape(1, g * g, p * p * 3)
  out = np.asarray(layers.pixel_unpatchify(jnp.asarray(feats), g, p))
  h, w, p1, p2, c = 1, 0, 2, 1, 2
  assert out[0, h * p + p1, w * p + p2, c] == feats[0, h * g + w, (p1 * p + p2) * 3 + c]


def test_transformer_stacks_blocks_and_counts_params():
  t = layers.Transformer(16, 3, 4, rngs=nnx.Rngs(0))
  assert t.blocks.attn.qkv.kernel[...].shape == (3, 16, 48)
  per_block = 2 * 2 * 16 + (16 * 48 + 48) + (16 * 16 + 16) + (16 * 64 + 64) + (64 * 16 + 16)
  assert layers.count_params(t) == 3 * per_block
  x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 5, 16)).astype(np.float32))
  y = np.asarray(t(x))
  # Scan == applying the three blocks by hand.
  gd, st = nnx.split(t.blocks)
  h = x
  for i in range(3):
    h = nnx.merge(gd, jax_tree_index(st, i))(h)
  np.testing.assert_allclose(y, np.asarray(h), atol=1e-5)


def jax_tree_index(tree, i):
  return jax.tree_util.tree_map(lambda a: a[i], tree)
