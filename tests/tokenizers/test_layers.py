"""Shared ViT layers against plain numpy references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
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


def _ref_attention(q, k, v, mask, scale):
  """float64 numpy softmax attention; mask broadcast to [B, H, Tq, Tk]; all-masked rows
  are uniform (as jax.nn.dot_product_attention)."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  s = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
  if mask is not None:
    s = np.where(np.asarray(mask), s, -1e30)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", p, v)


@pytest.mark.parametrize("mask_kind", ["none", "shared", "key", "per_batch"])
def test_chunked_attention_matches_reference_and_xla(monkeypatch, mask_kind):
  rng = np.random.default_rng(1)
  b, t, h, d = 3, 7, 2, 4
  q, k, v = (jnp.asarray(rng.normal(size=(b, t, h, d)).astype(np.float32)) for _ in range(3))
  mask = None
  if mask_kind == "shared":
    mask = layers.attention_mask("causal_last", 3, 4)[None, None]
  elif mask_kind == "key":
    keep = np.ones((b, t), bool)
    keep[1, 4:] = False
    mask = jnp.asarray(keep)[:, None, None, :]
  elif mask_kind == "per_batch":
    m = rng.random((b, 1, t, t)) < 0.6
    m[0, 0, 2] = False  # A query that may attend to nothing: uniform weights.
    mask = jnp.asarray(m)
  want = _ref_attention(q, k, v, mask, 0.3)
  # Force several chunks of 2 slices (6 slices: 3 loop steps) and the unchunked path.
  for chunk_bytes in (2 * 4 * t * t, 1 << 30):
    monkeypatch.setattr(layers, "ATTENTION_CHUNK_BYTES", chunk_bytes)
    got = layers.attention(q, k, v, mask=mask, scale=0.3, implementation="chunked")
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
  xla = layers.attention(q, k, v, mask=mask, scale=0.3, implementation="xla")
  np.testing.assert_allclose(np.asarray(xla), want, atol=1e-5)
  with pytest.raises(ValueError, match="implementation"):
    layers.attention(q, k, v, implementation="flash")


def test_chunked_attention_gradients_match_xla(monkeypatch):
  monkeypatch.setattr(layers, "ATTENTION_CHUNK_BYTES", 4 * 5 * 5)  # One slice per step.
  rng = np.random.default_rng(2)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 5, 3, 4)).astype(np.float32)) for _ in range(3))
  keep = jnp.asarray([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :]

  def loss(impl):
    return lambda q, k, v: jnp.sum(jnp.sin(layers.attention(q, k, v, mask=keep,
                                                            implementation=impl)))

  got = jax.grad(loss("chunked"), argnums=(0, 1, 2))(q, k, v)
  want = jax.grad(loss("xla"), argnums=(0, 1, 2))(q, k, v)
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-5)


def test_transformer_remat_same_values_and_gradients():
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 6, 16)).astype(np.float32))
  outs = {}
  for remat in layers.REMAT_POLICIES:
    tr = layers.Transformer(16, 2, 2, remat=remat, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(tr)
    f = lambda st, g=graphdef: jnp.sum(nnx.merge(g, st)(x) ** 2)
    outs[remat] = jax.value_and_grad(f)(state)
  ref_v, ref_g = outs["none"]
  for remat in ("full", "dots"):
    v, g = outs[remat]
    np.testing.assert_allclose(float(v), float(ref_v), rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(ref_g), strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  with pytest.raises(ValueError, match="remat"):
    layers.Transformer(16, 2, 2, remat="some", rngs=nnx.Rngs(0))
