"""AutoencoderKL: parity with diffusers' AutoencoderKL (random weights, save_pretrained ->
jaxtok), the diffusers config reader, and the tokenizer interface."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxtok
from jaxtok.io.safetensors import read_safetensors, write_safetensors
from jaxtok.tokenizers import get_family
from jaxtok.tokenizers.convert.__main__ import main as convert_main
from jaxtok.tokenizers.flextok.config import FlexTokConfig
from jaxtok.tokenizers.vae import config as vae_config
from jaxtok.tokenizers.vae import convert as vae_convert
from jaxtok.tokenizers.vae.config import (
  AutoencoderKLConfig,
  config_from_diffusers,
  config_from_diffusers_weights,
)

# Small diffusers configs: f8 with 16 shifted latents, attention and no quant convs; f2 with 4
# latents, quant convs, no attention and two ResNets a level.
CASES = {
    "f8c16_attn": dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1,
                       latent_channels=16, norm_num_groups=4, sample_size=16,
                       scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                       use_post_quant_conv=False),
    "f2c4_quant": dict(block_out_channels=(8, 16), layers_per_block=2, latent_channels=4,
                       norm_num_groups=8, sample_size=16, scaling_factor=0.18215,
                       mid_block_add_attention=False),
}


def _diffusers_dir(tmp_path, kwargs, seed=0):
  torch = pytest.importorskip("torch")
  pytest.importorskip("diffusers")  # The `torch` extra installs it (CI does).
  from diffusers import AutoencoderKL  # noqa: PLC0415  (optional, heavy: lazy by design)
  torch.manual_seed(seed)
  n = len(kwargs["block_out_channels"])
  model = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n,
                        up_block_types=("UpDecoderBlock2D",) * n, **kwargs).eval()
  with torch.no_grad():  # The default init leaves norms at 1 / 0: randomise them too.
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(tmp_path)
  return model, torch


@pytest.mark.parametrize("case", sorted(CASES))
def test_parity_with_diffusers(tmp_path, case):
  ref, torch = _diffusers_dir(tmp_path, CASES[case])
  port = vae_convert.load_autoencoder(tmp_path)
  size = CASES[case]["sample_size"]
  assert port.config.image_size == size
  assert port.config.scaling_factor == pytest.approx(CASES[case].get("scaling_factor", 0.18215))
  rng = np.random.default_rng(1)
  x = rng.uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
  f = 2 ** (len(CASES[case]["block_out_channels"]) - 1)
  c = CASES[case]["latent_channels"]
  z = rng.normal(size=(2, c, size // f, size // f)).astype(np.float32)
  with torch.no_grad():
    dist = ref.encode(torch.from_numpy(x)).latent_dist
    want_moments, want_mean = dist.parameters.numpy(), dist.mean.numpy()
    want_dec = ref.decode(torch.from_numpy(z)).sample.numpy()
  nhwc = lambda a: np.transpose(a, (0, 2, 3, 1))
  with jax.default_matmul_precision("highest"):
    moments = np.asarray(port.moments(jnp.asarray(nhwc(x))))
    mean, _ = port.quantize.posterior(jnp.asarray(moments))
    dec = np.asarray(port.decode_raw(jnp.asarray(nhwc(z))))
  np.testing.assert_allclose(moments, nhwc(want_moments), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(mean), nhwc(want_mean), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(dec, nhwc(want_dec), atol=1e-4, rtol=1e-4)
  # Scaled latents and images in [0, 1]: the tokenizer view of the same numbers.
  lat = np.asarray(port.encode_latents(jnp.asarray(nhwc(x) * 0.5 + 0.5)))
  shift = CASES[case].get("shift_factor") or 0.0
  np.testing.assert_allclose(lat, (nhwc(want_mean) - shift) * port.config.scaling_factor,
                             atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_architecture_from_weight_shapes(tmp_path, case):
  _diffusers_dir(tmp_path, CASES[case])
  want = vae_config.read_diffusers_config(tmp_path)
  tensors = read_safetensors(tmp_path / vae_convert.DIFFUSERS_WEIGHTS)
  got = config_from_diffusers_weights(tensors, latent_size=want.latent_size,
                                      scaling_factor=want.scaling_factor,
                                      shift_factor=want.shift_factor,
                                      norm_num_groups=want.norm_num_groups)
  assert got == want
  del tensors["encoder.conv_out.weight"]
  with pytest.raises(ValueError, match="encoder.conv_out.weight"):
    config_from_diffusers_weights(tensors, latent_size=4)


def test_legacy_attention_names_and_strictness(tmp_path):
  _diffusers_dir(tmp_path, CASES["f8c16_attn"])
  good = vae_convert.load_autoencoder(tmp_path)
  # The converter CLI writes the same weights as a jaxtok checkpoint.
  out = tmp_path / "jaxtok"
  assert convert_main(["vae", "--diffusers", str(tmp_path), "--out", str(out)]) == 0
  converted = jaxtok.load(out)
  assert converted.family == "vae" and converted.model.config == good.config
  for a, b in zip(jax.tree_util.tree_leaves(nnx.state(good)),
                  jax.tree_util.tree_leaves(nnx.state(converted.model))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  tensors = read_safetensors(tmp_path / vae_convert.DIFFUSERS_WEIGHTS)
  renamed = {}
  for k, v in tensors.items():
    for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"),
                     ("to_out.0", "proj_attn")):
      k = k.replace(f".{new}.", f".{old}.")
    renamed[k] = v[..., None, None] if ".query.weight" in k else v  # 1x1-conv form too.
  assert any(".proj_attn." in k for k in renamed)
  write_safetensors(tmp_path / vae_convert.DIFFUSERS_WEIGHTS, renamed)
  legacy = vae_convert.load_autoencoder(tmp_path)
  for a, b in zip(jax.tree_util.tree_leaves(nnx.state(good)),
                  jax.tree_util.tree_leaves(nnx.state(legacy))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  extra = dict(renamed, **{"encoder.extra.weight": np.zeros((2,), np.float32)})
  write_safetensors(tmp_path / vae_convert.DIFFUSERS_WEIGHTS, extra)
  with pytest.raises(ValueError, match="encoder.extra.weight"):
    vae_convert.load_autoencoder(tmp_path)
  del renamed["decoder.conv_out.bias"]
  write_safetensors(tmp_path / vae_convert.DIFFUSERS_WEIGHTS, renamed)
  with pytest.raises(ValueError, match="decoder.conv_out.bias"):
    vae_convert.load_autoencoder(tmp_path)


def test_diffusers_config_reader_refuses_what_it_does_not_have(tmp_path):
  base = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.30.0",
          "block_out_channels": [32, 64], "down_block_types": ["DownEncoderBlock2D"] * 2,
          "up_block_types": ["UpDecoderBlock2D"] * 2, "latent_channels": 4,
          "norm_num_groups": 32, "layers_per_block": 1, "sample_size": [64, 64],
          "scaling_factor": 0.5, "shift_factor": None, "latents_mean": None,
          "force_upcast": True, "act_fn": "silu"}
  cfg = config_from_diffusers(base)
  assert cfg.image_size == 64 and cfg.shift_factor == 0.0 and cfg.downsample_factor == 2
  for key, value, match in (("_class_name", "AutoencoderKLWan", "_class_name"),
                            ("act_fn", "relu", "act_fn"),
                            ("down_block_types", ["DownEncoderBlock2D", "X"], "down_block_types"),
                            ("latents_mean", [0.1] * 4, "latents_mean"),
                            ("mystery", 1, "mystery")):
    with pytest.raises(ValueError, match=match):
      config_from_diffusers({**base, key: value})
  (tmp_path / "config.json").write_text(json.dumps(base))
  with pytest.raises(ValueError, match="diffusion_pytorch_model.safetensors"):
    vae_convert.load_autoencoder(tmp_path)
  with pytest.raises(ValueError, match="norm_num_groups"):
    AutoencoderKLConfig(block_out_channels=(32, 48), norm_num_groups=32)


def test_tokenizer_interface_and_training_forward(tmp_path):
  fam = get_family("vae")
  assert {"f8c4", "f8c8", "f8c16", "tiny", "smoke"} <= set(fam.variants)
  for name, c in (("f8c4", 4), ("f8c8", 8), ("f8c16", 16)):
    cfg = fam.variant(name)
    assert cfg.downsample_factor == 8 and cfg.latent_channels == c
  tok = jaxtok.load("vae:smoke")
  spec = tok.model.token_spec
  assert spec.continuous and spec.channels == 4 and spec.num_tokens == 16
  images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
  tokens = tok.encode(images)
  assert tokens.shape == (2, 16, 4) and tokens.dtype == np.float32
  assert tok.decode(tokens).shape == (2, 32, 32, 3)
  with pytest.raises(ValueError, match="tokens"):
    tok.decode(tokens[:, :8])
  model = tok.model
  x = jnp.asarray(images / 255.0, jnp.float32)
  recon, aux = model(x, train=True, rngs=nnx.Rngs(3))
  recon_eval, aux_eval = model(x)
  assert recon.shape == x.shape and float(aux["losses"]["kl"]) > 0
  assert float(aux["losses"]["quantizer"]) == 0.0
  # The training sample differs from the mean; the eval pass decodes the mean.
  assert not np.allclose(np.asarray(aux["latents"]), np.asarray(aux_eval["latents"]))
  np.testing.assert_allclose(np.asarray(aux_eval["latents"]).reshape(2, 16, 4), tokens,
                             atol=1e-5)
  mean, logvar = aux["posterior_mean"], aux["posterior_logvar"]
  kl = 0.5 * np.sum(np.asarray(mean) ** 2 + np.exp(logvar) - 1 - np.asarray(logvar),
                    axis=(1, 2, 3)).mean()
  assert float(aux["losses"]["kl"]) == pytest.approx(kl, rel=1e-5)
  with pytest.raises(ValueError, match="rngs"):
    model(x, train=True)
  with pytest.raises(ValueError, match="images"):
    model.encode(jnp.zeros((1, 16, 16, 3)))
  saved = jaxtok.save(tok, tmp_path / "ckpt")
  again = vae_convert.load_autoencoder(saved)
  np.testing.assert_allclose(np.asarray(again.encode(x)), tokens, atol=1e-5)
  with pytest.raises(ValueError, match="latent_channels"):
    vae_convert.load_autoencoder(saved, dataclasses_replace(model.config, latent_channels=8))


def dataclasses_replace(cfg, **kw):
  return AutoencoderKLConfig.from_dict({**cfg.to_dict(), **kw})


def test_flextok_vae_front_end_config():
  small = get_family("vae").variant("smoke")
  base = dict(front_end="vae", input_size=4, channels=4, patch_size=1, enc_width=32,
              enc_depth=1, enc_head_dim=16, dec_width=32, dec_depth=1, dec_head_dim=16,
              num_registers=8)
  cfg = FlexTokConfig(**base, vae=small)
  assert cfg.image_size == 32  # 4 x 4 latents of the f8 VAE.
  again = FlexTokConfig.from_dict(json.loads(cfg.to_json()))
  assert again == cfg and isinstance(again.vae, AutoencoderKLConfig)
  with pytest.raises(ValueError, match="vae"):
    FlexTokConfig(**base)
  with pytest.raises(ValueError, match="channels"):
    FlexTokConfig(**{**base, "channels": 16}, vae=small)
  with pytest.raises(ValueError, match="vae"):
    FlexTokConfig(**{**base, "front_end": "identity", "channels": 3}, vae=small)
  with pytest.raises(ValueError, match="config.json"):
    FlexTokConfig(**base, vae_checkpoint="/nonexistent/vae")
