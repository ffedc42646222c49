"""An official FlexTok release (Hydra config dict + state dict) built from a flextok fixture."""
import json

import numpy as np


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
