"""FlexTok releases with their VAE: `vae.vae.<diffusers AutoencoderKL key>` weights -> a
`front_end="vae"` jaxtok FlexTok that tokenizes images.

A small random diffusers `AutoencoderKL` (torch) is stored under `vae.vae.` beside a flextok
fixture's official parameters in a real `model.safetensors`, with a `config.json` whose `vae`
node is `StableDiffusionVAE`; the conversion is loaded with `jaxtok.load` and its front end
checked against diffusers. The VAE is sized from the fixture (its latents are the fixture's
C x (grid * patch)^2 input); its widths are multiples of 32 because the converter takes
GroupNorm's 32 groups (no weight shape holds the group count), as the official base config.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxtok
from jaxtok.io import safetensors
from jaxtok.tokenizers.convert.__main__ import main as convert_main
from jaxtok.tokenizers.flextok.convert import convert_flextok
from tests.fixture_files import FIXTURES, fixture_params
from tests.tokenizers.flextok.release import (
  WIDTHS,
  diffusers_vae,
  read_fixture,
  release_config,
  vae_sizes,
)

ATOL = 1e-4
SCALE = 0.7


@pytest.fixture(scope="module", params=fixture_params("flextok", FIXTURES))
def release(request):
  """(fixture arrays, fixture config, official params incl. the VAE, diffusers VAE, torch)."""
  data, cfg, params = read_fixture(request.param)
  ref, torch = diffusers_vae(cfg)
  full = dict(params)
  full.update({"vae.vae." + k: v.numpy() for k, v in ref.state_dict().items()})
  full["vae.logvar"] = np.zeros((), np.float32)  # learnable_logvar=True: dropped.
  return data, cfg, full, ref, torch


def _write(tmp_path, cfg, params, **vae_args):
  rel = release_config(cfg)
  rel["vae"].update(vae_args)
  d = tmp_path / "release"
  d.mkdir(exist_ok=True)
  safetensors.write_safetensors(d / "model.safetensors", params)
  (d / "config.json").write_text(json.dumps(rel))
  return d / "model.safetensors"


def _nhwc(a):
  return np.transpose(np.asarray(a), (0, 2, 3, 1))


def test_release_with_vae_tokenizes_images(release, tmp_path, capsys):
  data, cfg, params, ref, torch = release
  c, latent, size = vae_sizes(cfg)
  ckpt = _write(tmp_path, cfg, params, scaling_factor=SCALE, sample_posterior=True,
                learnable_logvar=True)
  out = tmp_path / "converted"
  assert convert_main(["flextok", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
  assert json.loads(capsys.readouterr().out)["front_end"] == "vae"
  src = json.loads((out / "config.json").read_text())["source"]["vae"]
  assert src["converted"] is True and src["dropped_keys"] == ["vae.logvar"]
  assert src["scaling_factor"] == SCALE and src["scaling_factor_from"] == "config"
  tok = jaxtok.load(out)
  model = tok.model
  assert model.config.front_end == "vae" and model.config.image_size == size
  vc = model.config.vae
  assert (vc.block_out_channels, vc.layers_per_block, vc.latent_channels) == (WIDTHS, 1, c)
  assert vc.use_quant_conv and vc.use_post_quant_conv and vc.mid_block_add_attention
  # The FlexTok weights are the fixture's: its official ids from its latents.
  ids = nnx.jit(lambda m, x: m.encode_latents(x))(model, jnp.asarray(_nhwc(data["in/x0"])))
  np.testing.assert_array_equal(np.asarray(ids), data["enc/ids"])

  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
  z = rng.normal(size=(2, c, latent, latent)).astype(np.float32)
  with torch.no_grad():
    want_lat = ref.encode(torch.from_numpy(x)).latent_dist.mean.numpy() * SCALE
    want_img = ref.decode(torch.from_numpy(z) / SCALE).sample.numpy()
  with jax.default_matmul_precision("highest"):
    # (1) The front end of images in [0, 1] = diffusers' posterior mean of [-1, 1] x scale.
    lat = model.to_front(jnp.asarray(_nhwc(x) * 0.5 + 0.5))
    # (2) Its inverse decodes z / scale; jaxtok's images are in [0, 1], diffusers' [-1, 1].
    img = model.from_front(jnp.asarray(_nhwc(z)))
  np.testing.assert_allclose(np.asarray(lat), _nhwc(want_lat), atol=ATOL, rtol=0)
  np.testing.assert_allclose(np.asarray(img), (_nhwc(want_img) + 1) * 0.5, atol=ATOL, rtol=0)

  # (3) The tokenizer: uint8 images -> ids [B, R]; a prefix decodes to images.
  images = rng.integers(0, 256, (2, size, size, 3)).astype(np.uint8)
  tokens = tok.encode(images)
  assert tokens.dtype == np.int32 and tokens.shape == (2, cfg["n_registers"])
  k = cfg["keep_k"][1]
  recon = tok.decode(tokens[:, :k], steps=2)
  assert recon.shape == (2, size, size, 3) and np.all(np.isfinite(recon))


def test_scaling_factor_from_the_hub_must_be_passed(release, tmp_path, capsys):
  _, cfg, params, _, _ = release
  hub = "EPFL-VILAB/flextok_vae_c16"
  ckpt = _write(tmp_path, cfg, params, hf_hub_path=hub, scaling_factor=None)
  with pytest.raises(ValueError, match=rf"scaling_factor.*hf_hub_path='{hub}'"):
    convert_flextok(ckpt, None, tmp_path / "out")
  assert not (tmp_path / "out").exists()
  assert convert_main(["flextok", "--checkpoint", str(ckpt), "--vae-scaling-factor", "0.5",
                       "--out", str(tmp_path / "out")]) == 0
  capsys.readouterr()
  meta = json.loads((tmp_path / "out" / "config.json").read_text())
  assert meta["config"]["vae"]["scaling_factor"] == 0.5
  assert meta["source"]["vae"]["scaling_factor_from"] == "argument"
  ckpt = _write(tmp_path, cfg, params, scaling_factor=SCALE)
  with pytest.raises(ValueError, match="scaling_factor"):  # Both given, and they differ.
    convert_flextok(ckpt, None, tmp_path / "out2", vae_scaling_factor=0.5)


def test_vae_mismatches_are_refused(release, tmp_path):
  _, cfg, params, _, _ = release
  c = cfg["latent_channels"]
  ckpt = _write(tmp_path, cfg, params, latent_channels=c + 1, scaling_factor=SCALE)
  with pytest.raises(ValueError, match=rf"latent_channels={c + 1}.*latent_channels={c}"):
    convert_flextok(ckpt, None, tmp_path / "out")
  ckpt = _write(tmp_path, cfg, {**params, "vae.mystery": np.zeros((1,), np.float32)},
                scaling_factor=SCALE)
  with pytest.raises(ValueError, match="vae.mystery"):
    convert_flextok(ckpt, None, tmp_path / "out")
  broken = {k: v for k, v in params.items() if k != "vae.vae.decoder.conv_out.bias"}
  ckpt = _write(tmp_path, cfg, broken, scaling_factor=SCALE)
  with pytest.raises(ValueError, match=r"vae\.vae\..*decoder\.conv_out\.bias"):
    convert_flextok(ckpt, None, tmp_path / "out")
  assert not (tmp_path / "out").exists()
