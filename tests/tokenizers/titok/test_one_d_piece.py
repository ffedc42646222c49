"""One-D-Piece: tail-token-drop on TiTok and prefix decoding (parity is in test_titok.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.tokenizers import titok, token_drop
from jaxtok.tokenizers.titok import TiTok, TiTokConfig, one_d_piece
from jaxtok.tokenizers.titok.official import official_family, official_titok_config


def _small_cfg(**kw):
  # 32x32 images, 4x4 grid, K=6: small enough to jit many prefix lengths quickly.
  base = dict(image_size=32, enc_patch_size=8, dec_patch_size=8, enc_width=32, enc_depth=1,
              enc_heads=2, dec_width=32, dec_depth=1, dec_heads=2, num_latent_tokens=6,
              token_size=8, codebook_size=64, use_l2_norm=True, legacy_projection=False,
              head="pixel", finetune_decoder=False, tail_token_drop=True)
  base.update(kw)
  return TiTokConfig(**base)


@pytest.fixture(scope="module")
def model():
  return TiTok(_small_cfg(), rngs=nnx.Rngs(0))


def _x(n=3, s=32, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(n, s, s, 3)).astype(np.float32))


def test_variants():
  vs = one_d_piece.VARIANTS
  assert {"S-256", "B-256", "L-256", "tiny"} <= set(vs)
  for name, size in (("S-256", "small"), ("B-256", "base"), ("L-256", "large")):
    c = vs[name]
    assert c.tail_token_drop and c.num_latent_tokens == 256 and c.head == "two_stage"
    assert c.legacy_projection and (c.codebook_size, c.token_size) == (4096, 12)
    assert c.enc_width == titok.MODEL_SIZES[size][0]
  official = {"model": {"type": "one_d_piece", "vq_model": {
      "codebook_size": 4096, "token_size": 12, "use_l2_norm": True, "commitment_cost": 0.25,
      "vit_enc_model_size": "small", "vit_dec_model_size": "small", "vit_enc_patch_size": 16,
      "vit_dec_patch_size": 16, "num_latent_tokens": 256, "finetune_decoder": True,
      "strict_length_assertion": False}}, "dataset": {"preprocessing": {"crop_size": 256}}}
  assert official_titok_config(official) == vs["S-256"]
  assert official_family(official) == "one_d_piece"
  # tiny / smoke are TiTok's with tail-token-drop on (one definition); tiny's tokens are tied
  # to places coarse to fine, so its prefixes are coarser images.
  for name, extra in (("tiny", {"spatial_order": "coarse_to_fine"}), ("smoke", {})):
    assert vs[name] == TiTokConfig(**{**titok.VARIANTS[name].to_dict(), "tail_token_drop": True,
                                      **extra})


def test_prefix_decode_every_length(model):
  """Every prefix 1..K decodes to a full image; masking the tail == truncating it."""
  k = model.config.num_latent_tokens
  ids = model.encode(_x())
  z = model.lookup(ids)

  @nnx.jit
  def by_mask(m, z, lengths):
    return m.decode_latents(z, lengths=lengths)[0]

  decode = nnx.jit(lambda m, i: m.decode_tokens(i))
  outs = []
  for n in range(1, k + 1):
    img = decode(model, ids[:, :n])
    assert img.shape == (3, 32, 32, 3)
    assert np.isfinite(np.asarray(img)).all()
    masked = by_mask(model, z, jnp.full((3,), n, jnp.int32))
    np.testing.assert_allclose(np.asarray(img), np.asarray(masked), atol=2e-5)
    outs.append(np.asarray(img))
  # Different prefixes give different images (the tail carries information; small at this
  # random init, but far above the 1e-8 jit-vs-eager noise).
  assert np.abs(outs[0] - outs[-1]).max() > 1e-6
  # Per-example lengths: each row equals its own truncated decode.
  lengths = jnp.asarray([1, 4, 6], jnp.int32)
  mixed = np.asarray(by_mask(model, z, lengths))
  for b, n in enumerate([1, 4, 6]):
    np.testing.assert_allclose(mixed[b], outs[n - 1][b], atol=2e-5)
  with pytest.raises(ValueError, match="prefix"):
    model.decode_tokens(ids[:, :0])


def test_tail_token_drop_training(model):
  """train=True draws kept lengths in 1..K (per step / per example); eval keeps all K."""
  k = model.config.num_latent_tokens
  x = _x()
  fwd = nnx.jit(lambda m, x, key: m(x, train=True, rngs=key)[1]["num_tokens_kept"])
  seen = set()
  for i in range(12):
    n = np.asarray(fwd(model, x, jax.random.key(i)))
    assert (n == n[0]).all() and 1 <= n[0] <= k  # per_step: one length for the batch
    seen.add(int(n[0]))
  assert len(seen) >= 3
  _, aux = model(x, train=False)
  assert (np.asarray(aux["num_tokens_kept"]) == k).all()
  with pytest.raises(ValueError, match="rngs"):
    model(x, train=True)

  lengths = token_drop.keep_lengths(jax.random.key(0), 4096, k, "per_example")
  counts = np.bincount(np.asarray(lengths), minlength=k + 1)
  assert counts[0] == 0 and (counts[1:] > 4096 / k * 0.7).all()  # roughly uniform on 1..K
  pooled = token_drop.keep_lengths(jax.random.key(1), 5, k, "per_step")
  assert len(set(np.asarray(pooled).tolist())) == 1


def test_dropped_tokens_get_no_gradient(model):
  """With n kept tokens, the decoder output does not depend on the tokens after n."""
  x = _x(1)
  z = model.lookup(model.encode(x))

  @nnx.jit
  def grad(m, z):
    f = lambda z: jnp.sum(m.decode_latents(z, lengths=jnp.asarray([2], jnp.int32))[0] ** 2)
    return jax.grad(f)(z)

  g = np.asarray(grad(model, z))
  assert np.abs(g[:, 2:]).max() == 0.0
  assert np.abs(g[:, :2]).max() > 0.0
