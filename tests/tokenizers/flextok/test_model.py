"""FlexTok: parity with the official PyTorch modules (every quantity of every flextok fixture),
variants, API contract."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxtok
from jaxtok.tokenizers import flow, get_family, layers
from jaxtok.tokenizers.flextok import FlexTokConfig
from jaxtok.tokenizers.flextok.convert import flextok_from_params
from tests import fixture_files
from tests.fixture_files import FIXTURES

FIXTURE_PARAMS = fixture_files.fixture_params("flextok", FIXTURES)

# Tolerances of tests/fixtures/flextok/README.md §6; ids and codes exact.
ATOL_COND = 1e-6
ATOL_ENC = 2e-5
ATOL_DEC = 1e-4
ATOL_SAMPLE = 1e-4


def fixture_config(cfg: dict) -> FlexTokConfig:
  """The FlexTokConfig of a fixture's `config/json` (latents handed in: front end "latent")."""
  return FlexTokConfig(front_end="latent", input_size=cfg["grid"] * cfg["patch_size"],
                       channels=cfg["latent_channels"], patch_size=cfg["patch_size"],
                       enc_width=cfg["enc_dim"], enc_depth=cfg["enc_depth"],
                       enc_head_dim=cfg["enc_head_dim"], dec_width=cfg["dec_dim"],
                       dec_depth=cfg["dec_depth"], dec_head_dim=cfg["dec_head_dim"],
                       mlp_ratio=cfg["mlp_ratio"], num_registers=cfg["n_registers"],
                       levels=cfg["levels"], adaln_expansion=cfg["adaLN_expansion"],
                       max_timestep=cfg["max_timestep"], nested_dropout="uniform")


def load_fixture(path):
  with np.load(path, allow_pickle=False) as f:
    data = {k: f[k] for k in f.files}
  cfg = json.loads(str(data["config/json"]))
  params = {k[len("param/"):]: v for k, v in data.items() if k.startswith("param/")}
  return data, cfg, params


def nhwc(a):
  return jnp.asarray(np.asarray(a).transpose(0, 2, 3, 1))


def nchw(a):
  a = np.asarray(a)
  return a.transpose(*range(a.ndim - 3), a.ndim - 1, a.ndim - 3, a.ndim - 2)


@pytest.fixture(scope="module", params=FIXTURE_PARAMS)
def case(request):
  data, cfg, params = load_fixture(request.param)
  config = fixture_config(cfg)
  model = flextok_from_params(config, params)
  return data, cfg, config, model, _outputs(model, data, cfg)


def _outputs(model, data, cfg):
  keep_k = tuple(int(k) for k in data["in/keep_k"])
  steps = int(cfg["steps"])
  guidance = {"none": ("none", 1.0), "cfg": ("cfg", float(cfg["cfg_scale"])),
              "apg": ("apg", float(cfg["apg_scale"]))}

  @nnx.jit
  def run(model, x0, x_t, sigma, ids, init_noise):
    enc, dec = model.encoder, model.decoder
    out = {}
    out["enc/patch_tokens"] = enc.patch_tokens(x0)
    out["enc/block0_out"] = enc.transformer.layer(0)(enc.tokens(x0), attn_mask=enc.attn_mask())
    out["enc/registers_out"] = enc.registers_out(x0)
    z = enc(x0)
    out["enc/z"] = z
    codes, qaux = model.quantize(z)
    out["enc/codes"], out["enc/ids"] = codes, qaux["ids"]
    out["encode_ids"] = model.encode_latents(x0)
    out["dec/temb"] = temb = dec.time_embedding(sigma)
    out["dec/cond_tokens"] = dec.cond_tokens(model.quantize.lookup(ids))
    b = ids.shape[0]
    masked, block0, vel, samples = [], [], [], {g: ([], []) for g in guidance}
    for k in keep_k:
      cond, uncond = model.conditions(ids, jnp.full((b,), k, jnp.int32))
      masked.append(cond)
      tokens = dec.tokens(x_t, cond)
      block0.append(dec.transformer.layer(0)(tokens, **dec.block_kwargs(temb)))
      vel.append(dec(x_t, sigma, cond))
      for g, (kind, scale) in guidance.items():
        x, traj = model.sample(cond, uncond, init_noise, steps=steps, guidance=kind,
                               guidance_scale=scale, return_trajectory=True)
        samples[g][0].append(x)
        samples[g][1].append(traj)
    out["dec/cond_tokens_masked"] = jnp.stack(masked)
    out["dec/cond_tokens_uncond"] = uncond
    out["dec/block0_out"] = jnp.stack(block0)
    out["dec/velocity"] = jnp.stack(vel)
    out["dec/velocity_uncond"] = dec(x_t, sigma, uncond)
    for g, (xs, trajs) in samples.items():
      out[f"sample/{g}/x"] = jnp.stack(xs)
      out[f"sample/{g}/traj"] = jnp.stack(trajs, axis=1)  # [S, nK, B, ...]
    out["decode_padded/none"] = model.decode_padded(
        jnp.asarray(ids), jnp.full((b,), keep_k[0], jnp.int32), steps=steps, guidance="none",
        noise=init_noise)
    return out

  with jax.default_matmul_precision("highest"):
    out = run(model, nhwc(data["in/x0"]), nhwc(data["flow/x_t"]),
              jnp.asarray(data["flow/sigma"]), jnp.asarray(data["enc/ids"]),
              nhwc(data["in/init_noise"]))
  return {k: np.asarray(v) for k, v in out.items()}


def test_fixture_config_and_tables(case):
  data, cfg, config, model, _ = case
  assert config.num_patches + config.num_registers == data["enc/attn_mask"].shape[0]
  mask = np.asarray(model.encoder.attn_mask())
  np.testing.assert_array_equal(mask, data["enc/attn_mask"])
  for key, width in (("param/encoder.module_dict.enc_posemb_module.posembs", config.enc_width),
                     ("param/decoder.module_dict.dec_patches_posemb_module.posembs",
                      config.dec_width)):
    mine = np.asarray(layers.sincos_2d(config.grid, width))
    want = data[key][0].reshape(width, -1).T  # [1, D, g, g] -> [g*g, D] row-major
    np.testing.assert_allclose(mine, want, atol=1e-6)
  np.testing.assert_allclose(np.asarray(model.decoder.register_posemb[...]),
                             data["param/decoder.module_dict.dec_registers_posemb_module.posembs"]
                             [0, 0].T)


def test_encoder_parity(case):
  data, _, _, _, out = case
  for name in ("enc/patch_tokens", "enc/block0_out", "enc/registers_out", "enc/z"):
    np.testing.assert_allclose(out[name], data[name], atol=ATOL_ENC, rtol=0, err_msg=name)
  np.testing.assert_array_equal(out["enc/codes"], data["enc/codes"])
  np.testing.assert_array_equal(out["enc/ids"], data["enc/ids"])
  np.testing.assert_array_equal(out["encode_ids"], data["enc/ids"])


def test_flow_noising(case):
  data = case[0]
  x_t = flow.add_noise(nhwc(data["in/x0"]), nhwc(data["in/flow_noise"]),
                       jnp.asarray(data["flow/sigma"]))
  np.testing.assert_allclose(nchw(x_t), data["flow/x_t"], atol=1e-6)
  v = flow.velocity_target(nhwc(data["in/x0"]), nhwc(data["in/flow_noise"]))
  np.testing.assert_allclose(nchw(v), data["flow/target_v"], atol=1e-6)


def test_decoder_parity(case):
  data, _, _, _, out = case
  for name in ("dec/cond_tokens", "dec/cond_tokens_masked", "dec/cond_tokens_uncond"):
    np.testing.assert_allclose(out[name], data[name], atol=ATOL_COND, rtol=0, err_msg=name)
  for name in ("dec/temb", "dec/block0_out"):
    np.testing.assert_allclose(out[name], data[name], atol=ATOL_DEC, rtol=0, err_msg=name)
  for name in ("dec/velocity", "dec/velocity_uncond"):
    np.testing.assert_allclose(nchw(out[name]), data[name], atol=ATOL_DEC, rtol=0,
                               err_msg=name)


@pytest.mark.parametrize("guidance", ["none", "cfg", "apg"])
def test_sampler_parity(case, guidance):
  data, _, _, _, out = case
  np.testing.assert_allclose(data["sample/t"], 1.0 - np.arange(len(data["sample/t"]))
                             / len(data["sample/t"]), atol=1e-7)
  for part in ("x", "traj"):
    name = f"sample/{guidance}/{part}"
    np.testing.assert_allclose(nchw(out[name]), data[name], atol=ATOL_SAMPLE, rtol=0,
                               err_msg=name)
  if guidance == "none":  # decode_padded (the API path) == the sampler at keep_k[0].
    np.testing.assert_allclose(nchw(out["decode_padded/none"]), data["sample/none/x"][0],
                               atol=ATOL_SAMPLE, rtol=0)


# ---- variants, API, training forward ---------------------------------------------------------

def test_variants_build_abstractly_at_published_sizes():
  fam = get_family("flextok")
  assert {"d12-d12", "d18-d18", "d18-d28", "tiny", "smoke"} <= set(fam.variants)
  counts = {}
  for name in ("d12-d12", "d18-d28"):
    cfg = fam.variant(name)
    model = nnx.eval_shape(lambda c=cfg: fam.model_class(c, rngs=nnx.Rngs(0)))
    counts[name] = layers.count_params(model)
    assert model.token_spec.num_tokens == 256 and model.token_spec.vocab_size == 64000
    assert model.token_spec.radix == (8, 8, 8, 5, 5, 5)
    assert cfg.enc_heads == cfg.enc_width // 64
  # d12: per block 4 W^2 attention + 3 * W * int(2 * 4W / 3) SwiGLU (no biases).
  w = 768
  per_block = 4 * w * w + 3 * w * layers.swiglu_hidden(w, 4.0)
  assert counts["d12-d12"] > 2 * 12 * per_block  # + decoder adaLN (12 W^2 per block) etc.
  assert counts["d18-d28"] > 3 * counts["d12-d12"]
  assert fam.variant("tiny").to_dict() == FlexTokConfig.from_dict(
      fam.variant("tiny").to_dict()).to_dict()


def test_api_encode_decode_prefixes_and_errors():
  tok = jaxtok.load("flextok:smoke")
  assert tok.family == "flextok" and tok.supports_prefix and tok.codebook_size == 64000
  s, r = tok.image_size, tok.num_tokens
  images = np.random.default_rng(0).uniform(size=(2, s, s, 3)).astype(np.float32)
  ids = tok.encode(images)
  assert ids.shape == (2, r) and ids.dtype == np.int32
  assert ids.min() >= 0 and ids.max() < 64000
  full = tok.decode(ids)
  assert full.shape == (2, s, s, 3) and full.dtype == np.float32
  assert full.min() >= 0.0 and full.max() <= 1.0
  np.testing.assert_array_equal(tok.decode(ids), full)  # deterministic (seed 0)
  assert tok.decode(ids[:, :1]).shape == (2, s, s, 3)
  with pytest.raises(ValueError, match="ids in"):
    tok.decode(np.full((1, r), 64000, np.int32))
  with pytest.raises(ValueError, match="prefix length"):
    tok.decode(np.zeros((1, r + 1), np.int32))
  with pytest.raises(ValueError, match="images"):
    tok.encode(np.zeros((1, s + 1, s, 3), np.float32))


def test_prefix_encoding_equals_fewer_registers_and_prefix_decode():
  """causal_last: the first n ids do not depend on registers > n; a prefix decode == the
  padded decode with keep = n (whatever the padding ids)."""
  fam = get_family("flextok")
  cfg = fam.variant("smoke")
  model = fam.model_class(cfg, rngs=nnx.Rngs(1))
  model.encoder.to_latents.kernel[...] = jax.random.normal(
      jax.random.key(2), model.encoder.to_latents.kernel.shape)
  x = jax.random.uniform(jax.random.key(3), (2, cfg.input_size, cfg.input_size, 3))
  enc = nnx.jit(lambda m, x: m.encoder(m.to_front(x)))
  z_full = enc(model, x)
  model.encoder.registers[...] = model.encoder.registers[...].at[3:].set(5.0)  # later regs
  z_changed = enc(model, x)
  np.testing.assert_allclose(z_full[:, :3], z_changed[:, :3], atol=1e-5)
  assert float(jnp.max(jnp.abs(z_full[:, 3:] - z_changed[:, 3:]))) > 1e-3
  ids = nnx.jit(lambda m, x: m.encode(x))(model, x)
  kw = dict(steps=2, guidance="cfg", guidance_scale=2.0, seed=4)
  a = nnx.jit(lambda m, i: m.decode_tokens(i, **kw))(model, ids[:, :3])
  junk = ids.at[:, 3:].set(7)
  b = nnx.jit(lambda m, i: m.from_front(m.decode_padded(i, jnp.full((2,), 3), **kw)))(model,
                                                                                       junk)
  np.testing.assert_allclose(a, b, atol=1e-6)


def test_training_forward_flow_loss():
  """The train pass: loss = MSE(v, eps - x0), per-image pow2 keep lengths, logit-normal t.

  Gradients through the one trainer: test_flextok_train.py.
  """
  fam = get_family("flextok")
  cfg = fam.variant("smoke")
  cfg.drop_quant_p, cfg.token_corruption_p = 0.5, 0.1
  model = fam.model_class(cfg, rngs=nnx.Rngs(0))
  x = jax.random.uniform(jax.random.key(0), (4, cfg.input_size, cfg.input_size, 3))
  _, aux = nnx.jit(lambda m, x: m(x, train=True, rngs=jax.random.key(5)))(model, x)
  loss, v, tgt = aux["losses"]["flow"], aux["velocity"], aux["target_velocity"]
  assert np.isfinite(float(loss)) and float(loss) > 0
  np.testing.assert_allclose(float(loss), float(jnp.mean((v - tgt) ** 2)), rtol=1e-5)
  keep = np.asarray(aux["num_tokens_kept"])
  assert keep.shape == (4,) and set(keep) <= {1, 2, 4, 8}
  assert float(aux["t"].min()) > 0 and float(aux["t"].max()) < 1
  with pytest.raises(ValueError, match="rngs"):
    model(x, train=True)


def test_bad_config_values_are_named():
  with pytest.raises(ValueError, match="patch_size"):
    FlexTokConfig(input_size=30, patch_size=4)
  with pytest.raises(ValueError, match="channels"):
    FlexTokConfig(channels=16)
  with pytest.raises(ValueError, match="nested_dropout"):
    FlexTokConfig(nested_dropout="geometric")
  with pytest.raises(ValueError, match="num_registers"):
    FlexTokConfig(num_registers=24, nested_dropout="pow2")


def test_velocity_skip_is_the_least_squares_coefficient():
  """skip_data_std: v = net + c_skip(t) x_t with c_skip = Cov(v, x_t) / Var(x_t) for data of
  that std (checked by regression on samples); at init (zero head) v(x_1, 1) = x_1, so the
  one-step decode from t = 1 starts at 0 (mid-grey); None adds nothing."""
  fam = get_family("flextok")
  base = fam.variant("smoke")
  sd = 0.5
  cfg = FlexTokConfig.from_dict({**base.to_dict(), "skip_data_std": sd})
  model = fam.model_class(cfg, rngs=nnx.Rngs(0))
  plain = fam.model_class(base, rngs=nnx.Rngs(0))
  s, r = cfg.input_size, cfg.num_registers
  cond = jnp.zeros((3, r, cfg.dec_width))
  x = jax.random.normal(jax.random.key(1), (3, s, s, 3))
  t = jnp.array([1.0, 0.5, 0.0])
  v = model.decoder(x, t, cond)
  np.testing.assert_allclose(v[0], x[0], atol=1e-6)  # c_skip(1) = 1, the head is zero
  np.testing.assert_allclose(v[2], -x[2], atol=1e-6)  # c_skip(0) = -1
  np.testing.assert_allclose(plain.decoder(x, t, cond), 0.0, atol=1e-7)
  for tt in (0.2, 0.7):
    k0, k1 = jax.random.split(jax.random.key(int(tt * 10)))
    x0, eps = sd * jax.random.normal(k0, (20000,)), jax.random.normal(k1, (20000,))
    xt, target = flow.add_noise(x0, eps, jnp.full((1,), tt)), eps - x0
    fit = float(jnp.sum(xt * target) / jnp.sum(xt * xt))
    c = float(model.decoder.skip(jnp.ones((1, 1, 1, 1)), jnp.array([tt]))[0, 0, 0, 0])
    assert abs(c - fit) < 0.03, (tt, c, fit)
  with pytest.raises(ValueError, match="skip_data_std"):
    FlexTokConfig(skip_data_std=0.0)
