"""FlexTok through the public API (`jaxtok.load` / `Tokenizer`): sampler options, prefix
decoding with one compile for every length, per-image lengths, refused options."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxtok
from jaxtok import api
from jaxtok.tokenizers.titok import TiTok, TiTokConfig

# Options of every decode below (one compiled function for the whole module at B = 2).
_OPTS = dict(steps=2, guidance="apg", guidance_scale=3.0)


@pytest.fixture(scope="module")
def tok():
  t = jaxtok.load("flextok:smoke", seed=0)
  # The zero-init heads (encoder to_latents, decoder adaLN-zero and head) make a fresh model
  # ignore its tokens; perturb every weight so that ids, lengths and guidance matter.
  state = nnx.state(t.model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  leaves = [p + 0.2 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
  nnx.update(t.model, jax.tree.unflatten(treedef, leaves))
  return jaxtok.Tokenizer(t.model)


@pytest.fixture(scope="module")
def ids(tok):
  x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
  return tok.encode(x)


def _ref(tok, ids, **kw):
  out = tok.model.decode_tokens(jnp.asarray(ids), **kw)
  return np.clip(np.asarray(out), 0.0, 1.0)


def test_encode_shape_dtype_and_options(tok, ids):
  c = tok.model.config
  assert tok.family == "flextok" and tok.supports_prefix and tok.pads_prefixes
  assert ids.shape == (2, c.num_registers) and ids.dtype == np.int32
  assert ids.min() >= 0 and ids.max() < tok.codebook_size
  assert len(np.unique(ids)) > 1  # The perturbed encoder really depends on the image.
  assert tok.token_spec.radix == c.levels  # FSQ ids: mixed-radix digits of the levels.
  # Derived from FlexTok.decode_tokens' keyword-only arguments, defaults included.
  assert set(tok.decode_options) == {"steps", "guidance", "guidance_scale", "seed"}


def test_prefix_decode_equals_model_and_one_compile(tok, ids):
  before = len(tok.decode_cache_keys())
  outs = {}
  for k in (2, 4):
    out = tok.decode(ids[:, :k], seed=3, **_OPTS)
    assert out.shape == (2, 16, 16, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, _ref(tok, ids[:, :k], seed=3, **_OPTS), atol=1e-6)
    outs[k] = out
  assert not np.array_equal(outs[2], outs[4])  # The length is really used.
  # Both lengths (and a third, and another seed) ran the same compiled function.
  tok.decode(ids[:, :1], seed=4, **_OPTS)
  keys = tok.decode_cache_keys()
  assert len(keys) - before <= 1
  assert sum(k[1] == (2, tok.num_tokens) for k in keys) == 1


def test_seed_reproduces_and_changes_the_sample(tok, ids):
  a = tok.decode(ids[:, :4], seed=0, **_OPTS)
  b = tok.decode(ids[:, :4], seed=0, **_OPTS)
  c = tok.decode(ids[:, :4], seed=1, **_OPTS)
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).max() > 1e-3
  # An omitted seed is the model's default (0).
  np.testing.assert_array_equal(tok.decode(ids[:, :4], **_OPTS), a)


def test_per_image_lengths_and_adaptive_tokens(tok, ids):
  mixed = tok.decode(ids, lengths=[2, 4], seed=5, **_OPTS)
  # Row b of a batch at one length uses the same noise row: per-image lengths match it.
  np.testing.assert_allclose(mixed[0], tok.decode(ids[:, :2], seed=5, **_OPTS)[0], atol=1e-6)
  np.testing.assert_allclose(mixed[1], tok.decode(ids[:, :4], seed=5, **_OPTS)[1], atol=1e-6)
  # Ids after each length are ignored (even out-of-range ones).
  junk = ids.copy()
  junk[0, 2:] = -1
  np.testing.assert_array_equal(tok.decode(junk, lengths=[2, 4], seed=5, **_OPTS), mixed)
  ada = api.AdaptiveTokens(ids=ids, lengths=np.array([2, 4], np.int32),
                              scores=np.zeros(2), reached=np.ones(2, bool), metric="psnr",
                              target=0.0, num_decodes=0)
  np.testing.assert_array_equal(tok.decode(ada, seed=5, **_OPTS), mixed)


def test_encode_adaptive_pow2_lengths(tok, ids):
  x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
  pow2 = 2 ** np.arange(int(np.log2(tok.num_tokens)) + 1)
  ada = tok.encode_adaptive(x, ("psnr", 0.0), lengths=pow2, ids=ids,
                            decode_options=dict(seed=0, **_OPTS))
  # Every image reaches 0 dB at once: the first round (longest) plus bisection rounds, each
  # one batch (all images at their own lengths).
  assert ada.reached.all() and ada.lengths.tolist() == [1, 1]
  assert ada.num_decodes == 1 + int(np.ceil(np.log2(len(pow2))))
  with pytest.raises(ValueError, match=r"stepz: not a decode option"):
    tok.encode_adaptive(x, ("psnr", 0.0), ids=ids, decode_options=dict(stepz=2))


def test_bad_options_raise(tok, ids):
  with pytest.raises(ValueError, match=r"stepz: not a decode option of this flextok tokenizer"
                                       r".*accepts \['guidance', 'guidance_scale', 'seed', "
                                       r"'steps'\]"):
    tok.decode(ids, stepz=2)
  with pytest.raises(ValueError, match=r"seed: expected an int"):
    tok.decode(ids, seed=1.5, **_OPTS)
  with pytest.raises(ValueError, match=r"guidance: expected one of"):
    tok.decode(ids, guidance="bogus", steps=2)
  with pytest.raises(ValueError, match=r"steps: expected a scalar option value"):
    tok.decode(ids, steps=[2])
  with pytest.raises(ValueError, match=r"lengths: expected an int or \[B=2\] ints in 1\.\.4"):
    tok.decode(ids[:, :4], lengths=[2, 5], **_OPTS)
  with pytest.raises(ValueError, match=r"lengths: AdaptiveTokens carry their own lengths"):
    ada = api.AdaptiveTokens(ids=ids, lengths=np.array([1, 1], np.int32),
                                scores=np.zeros(2), reached=np.ones(2, bool), metric="psnr",
                                target=0.0, num_decodes=0)
    tok.decode(ada, lengths=[1, 1])


def test_deterministic_family_refuses_options():
  config = TiTokConfig(image_size=16, enc_patch_size=8, dec_patch_size=8, enc_width=32,
                       enc_depth=1, enc_heads=2, dec_width=32, dec_depth=1, dec_heads=2,
                       num_latent_tokens=4, token_size=4, codebook_size=16, head="pixel",
                       legacy_projection=False, use_l2_norm=False)
  titok = jaxtok.Tokenizer(TiTok(config, rngs=nnx.Rngs(0)))
  assert titok.decode_options == {} and not titok.pads_prefixes
  with pytest.raises(ValueError, match=r"steps: not a decode option of this titok tokenizer.*"
                                       r"deterministic and accepts no options"):
    titok.decode(np.zeros((1, 4), np.int32), steps=4)
  with pytest.raises(ValueError, match=r"lengths: this titok tokenizer decodes only all 4"):
    titok.decode(np.zeros((1, 4), np.int32), lengths=2)
