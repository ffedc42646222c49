"""An official FlexTok release (Hydra config dict + state dict) built from a flextok fixture,
optionally with a small random diffusers VAE as its front end (`release_with_vae`)."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

# Encoder level widths of the test VAE: two levels, so f = 2. Multiples of 32: the converter
# takes GroupNorm's 32 groups (no weight shape holds the group count).
WIDTHS = (32, 64)


def vae_sizes(cfg):
  """(latent channels, latent side, image side) of a fixture's config with the test VAE."""
  latent = cfg["grid"] * cfg["patch_size"]
  return cfg["latent_channels"], latent, latent * 2 ** (len(WIDTHS) - 1)


def diffusers_vae(cfg):
  """(a random diffusers AutoencoderKL sized for the fixture, torch); skips without them."""
  torch = pytest.importorskip("torch")
  pytest.importorskip("diffusers")  # The `torch` extra installs it (CI does).
  from diffusers import AutoencoderKL  # noqa: PLC0415  (optional, heavy: lazy by design)
  c, _, size = vae_sizes(cfg)
  torch.manual_seed(0)
  n = len(WIDTHS)
  model = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n,
                        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=WIDTHS,
                        layers_per_block=1, latent_channels=c, norm_num_groups=32,
                        sample_size=size).eval()
  with torch.no_grad():  # The default init leaves norms at 1 / 0: randomise them too.
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model, torch


def release_with_vae(cfg, params, **vae_args):
  """(release config, state dict with the VAE under `vae.vae.`, the diffusers VAE): a FlexTok
  release that tokenizes images; `vae_args` go into the config's `vae` node."""
  ref, _ = diffusers_vae(cfg)
  full = dict(params)
  full.update({"vae.vae." + k: v.numpy() for k, v in ref.state_dict().items()})
  rel = release_config(cfg)
  rel["vae"].update(vae_args)
  return rel, full, ref


def _t(name: str, **kw):
  return {"_target_": "flextok." + name, **kw}


def release_config(cfg: dict) -> dict:
  """A release config of the official form for a fixture's `config/json`."""
  p = cfg["patch_size"]
  def trunk(dim, depth, head_dim, mask):
    return _t("model.trunks.transformers.FlexTransformer", dim=dim, depth=depth,
             head_dim=head_dim, mlp_ratio=cfg["mlp_ratio"], block_mask=mask,
             block_cls=_t("model.layers.transformer_blocks.FlexBlock"))
  wrap = "model.utils.wrappers.SequentialModuleDictWrapper"
  return {
      "vae": _t("vae_wrapper.StableDiffusionVAE", latent_channels=cfg["latent_channels"]),
      "encoder": _t(wrap, module_dict={
          "enc_patch_emb": _t("model.preprocessors.patching.PatchEmbedder",
                             patch_sizes=[p, p], dim=cfg["enc_dim"]),
          "enc_posemb_module": _t("model.utils.posembs.PositionalEmbeddingAdder"),
          "enc_register_module": _t("model.preprocessors.registers.Registers1D",
                                   n_max_registers=cfg["n_registers"]),
          "enc_transformer": trunk(cfg["enc_dim"], cfg["enc_depth"], cfg["enc_head_dim"],
                                   "causal_last"),
          "enc_to_latents": _t("model.postprocessors.heads.LinearHead")}),
      "decoder": _t(wrap, module_dict={
          "dec_from_latents": _t("model.preprocessors.linear.LinearLayer"),
          "dec_nested_dropout": _t("model.preprocessors.token_dropout.MaskedNestedDropout",
                                  size_sampling_mode="pow2"),
          "dec_latent_dropout": _t("model.preprocessors.nullcond.LearnedNullCond"),
          "dec_noise_patch_emb": _t("model.preprocessors.patching.PatchEmbedder",
                                   patch_sizes=[p, p]),
          "dec_time_embedder": _t("model.preprocessors.time_embedding.TimestepEmbedder",
                                 max_timestep=cfg["max_timestep"]),
          "dec_transformer": trunk(cfg["dec_dim"], cfg["dec_depth"], cfg["dec_head_dim"],
                                   "full"),
          "dec_to_patches": _t("model.postprocessors.heads.ToPatchesLinearHead")}),
      "regularizer": _t("regularizers.quantize_fsq.FSQ", levels=cfg["levels"]),
      "flow_matching_noise_module": _t("flow_matching.noise_modules.MinRFNoiseModule"),
      "pipeline": _t("flow_matching.pipelines.MinRFPipeline",
                    momentum_buffer=_t("flow_matching.cfg_utils.MomentumBuffer", momentum=-0.5)),
  }


def read_fixture(path):
  """(all arrays, the `config/json` dict, the official `param/*` state dict) of a fixture."""
  with np.load(path, allow_pickle=False) as f:
    data = {k: f[k] for k in f.files}
  params = {k[len("param/"):]: v for k, v in data.items() if k.startswith("param/")}
  return data, json.loads(str(data["config/json"])), params


def check_against_fixture(tok, data, atol):
  """A loaded latent-front-end FlexTok gives the fixture's official ids from its latents and
  its decoder velocity at the fixture's kept prefix (within `atol`)."""
  nhwc = lambda a: jnp.asarray(np.transpose(np.asarray(a), (0, 2, 3, 1)))
  model = tok.model
  assert tok.family == "flextok" and model.config.front_end == "latent"
  ids = nnx.jit(lambda m, x: m.encode_latents(x))(model, nhwc(data["in/x0"]))
  np.testing.assert_array_equal(np.asarray(ids), data["enc/ids"])
  k = int(data["in/keep_k"][0])

  @nnx.jit
  def vel(m, ids, x_t, t):
    cond, _ = m.conditions(ids, jnp.full((ids.shape[0],), k, jnp.int32))
    return m.decoder(x_t, t, cond)

  v = vel(model, jnp.asarray(data["enc/ids"]), nhwc(data["flow/x_t"]),
          jnp.asarray(data["flow/sigma"]))
  np.testing.assert_allclose(np.asarray(v).transpose(0, 3, 1, 2), data["dec/velocity"][0],
                             atol=atol, rtol=0)
