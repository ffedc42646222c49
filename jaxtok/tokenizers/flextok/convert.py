"""Official FlexTok state_dict names -> jaxtok NNX state (apple/ml-flextok layout).

Numpy in, no torch: `params` is a flat `{official_key: np.ndarray}`. Key names, shapes and
roles: tests/fixtures/flextok/README.md §3. Layout rules: Linear (out, in) -> kernel
(in, out); the patch projections' Linear (W, p*p*C) with features (py, px, c) -> conv kernel
(p, p, C, W); the separate bias-free `wq, wk, wv` -> one fused qkv kernel
`concat([wq.T, wk.T, wv.T], 1)`; the decoder register posemb (1, 1, W, R) -> (R, W).

The fixed sin-cos tables (`*posemb_module.posembs` of the patches) are not parameters in jaxtok:
they are checked against `layers.sincos_2d` and dropped. Loading is strict otherwise (see
`mapping.build_with_params`).

The VAE (`vae.*`, `split_vae`): the official `StableDiffusionVAE` holds a diffusers
`AutoencoderKL` as `.vae`, so its weights are `vae.vae.<diffusers key>`; they become the
`front_end="vae"` model's `vae/...` (`jaxtok.tokenizers.vae.params_from_diffusers`, architecture
from `official.official_vae_config`). `vae.logvar` (`learnable_logvar`: a parameter of the
VAE's training loss) is dropped. A release without `vae.vae.*` weights stays a
`front_end="latent"` model over precomputed VAE latents.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from jaxtok.io import checkpoint as ckpt_format
from jaxtok.io.torch_pickle import read_checkpoint
from jaxtok.tokenizers import layers
from jaxtok.tokenizers.flextok.config import FlexTokConfig
from jaxtok.tokenizers.flextok.model import FlexTok
from jaxtok.tokenizers.flextok.official import (
  official_flextok_config,
  official_vae_config,
  read_release_config,
)
from jaxtok.tokenizers.mapping import build_with_params
from jaxtok.tokenizers.vae.convert import params_from_diffusers

E = "encoder.module_dict."
D = "decoder.module_dict."
# Max |difference| tolerated between a checkpoint's fixed sin-cos table and jaxtok's.
SINCOS_ATOL = 1e-5
# The official StableDiffusionVAE's diffusers AutoencoderKL (`self.vae.vae`).
VAE_PREFIX = "vae.vae."
# Official VAE parameters with no jaxtok counterpart: the learnable log-variance of the VAE's
# reconstruction loss (`learnable_logvar=True`), used in training only.
VAE_DROPPED = ("vae.logvar",)


def _t(w):
  return np.ascontiguousarray(np.asarray(w).T)


def _same(w):
  return w


def _patch_kernel(p: int, c: int):
  def fn(w):  # (W, p*p*C), features (py, px, c) -> (p, p, C, W)
    return np.ascontiguousarray(np.asarray(w).T.reshape(p, p, c, -1))
  return fn


def _reg_posemb(w):  # (1, 1, W, R) -> (R, W)
  return np.ascontiguousarray(np.asarray(w)[0, 0].T)


def split_vae(params: Mapping[str, np.ndarray]
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
  """(params without `vae.*`, the diffusers `AutoencoderKL` state dict under `vae.vae.` with
  that prefix removed, the dropped training-only keys `VAE_DROPPED`).

  Raises:
    ValueError: a `vae.*` key that is neither (named).
  """
  rest = {k: v for k, v in params.items() if not k.startswith("vae.")}
  vae = {k[len(VAE_PREFIX):]: v for k, v in params.items() if k.startswith(VAE_PREFIX)}
  dropped = sorted(k for k in params if k in VAE_DROPPED)
  unknown = sorted(k for k in params if k.startswith("vae.") and not k.startswith(VAE_PREFIX)
                   and k not in VAE_DROPPED)
  if unknown:
    raise ValueError(f"params: unknown VAE keys {unknown[:5]}; expected {VAE_PREFIX}<diffusers "
                     f"AutoencoderKL key> or {list(VAE_DROPPED)}")
  return rest, vae, dropped


def _check_sincos(params: Mapping[str, np.ndarray], key: str, grid: int, width: int) -> None:
  table = np.asarray(params[key], np.float32)
  if table.shape != (1, width, grid, grid):
    raise ValueError(f"params[{key!r}]: expected the fixed sin-cos table of shape "
                     f"{(1, width, grid, grid)}, got {table.shape}")
  mine = np.asarray(layers.sincos_2d(grid, width)).reshape(grid, grid, width).transpose(2, 0, 1)
  err = float(np.max(np.abs(table[0] - mine)))
  if err > SINCOS_ATOL:
    raise ValueError(f"params[{key!r}]: expected the 2-D sin-cos table (max |diff| <= "
                     f"{SINCOS_ATOL}), got max |diff| {err:.3g}: a learned or differently "
                     f"built position embedding, which jaxtok does not support")


def fuse_qkv(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Replaces every `...attn.wq/wk/wv.weight` triple by one `...attn.wqkv.weight` (3W, W)."""
  out = dict(params)
  for key in [k for k in params if k.endswith(".attn.wq.weight")]:
    base = key[:-len("wq.weight")]
    parts = [base + f"w{n}.weight" for n in "qkv"]
    missing = [p for p in parts if p not in params]
    if missing:
      raise ValueError(f"params: {missing[0]!r} is missing (attention needs wq, wk and wv)")
    out[base + "wqkv.weight"] = np.concatenate([np.asarray(params[p]) for p in parts], 0)
    for p in parts:
      del out[p]
  return out


def flextok_rules(config: FlexTokConfig, params: Mapping[str, np.ndarray]) -> dict:
  """official key -> (jaxtok path, transform[, layer]) after `fuse_qkv`."""
  c = config
  p, ch = c.patch_size, c.channels
  r = {
      E + "enc_patch_emb.patch_proj.weight": (("encoder", "patch_emb", "proj", "kernel"),
                                              _patch_kernel(p, ch)),
      E + "enc_patch_emb.patch_proj.bias": (("encoder", "patch_emb", "proj", "bias"), _same),
      E + "enc_register_module.registers": (("encoder", "registers"), _same),
      E + "enc_to_latents.proj.weight": (("encoder", "to_latents", "kernel"), _t),
      E + "enc_to_latents.proj.bias": (("encoder", "to_latents", "bias"), _same),
      D + "dec_from_latents.proj.weight": (("decoder", "from_latents", "kernel"), _t),
      D + "dec_from_latents.proj.bias": (("decoder", "from_latents", "bias"), _same),
      D + "dec_registers_posemb_module.posembs": (("decoder", "register_posemb"), _reg_posemb),
      D + "dec_nested_dropout.dropout_mask_token": (("decoder", "mask_token"), _same),
      D + "dec_noise_patch_emb.patch_proj.weight": (("decoder", "patch_emb", "proj", "kernel"),
                                                    _patch_kernel(p, ch)),
      D + "dec_noise_patch_emb.patch_proj.bias": (("decoder", "patch_emb", "proj", "bias"),
                                                  _same),
      D + "dec_time_embedder.mlp.0.weight": (("decoder", "time_fc1", "kernel"), _t),
      D + "dec_time_embedder.mlp.0.bias": (("decoder", "time_fc1", "bias"), _same),
      D + "dec_time_embedder.mlp.2.weight": (("decoder", "time_fc2", "kernel"), _t),
      D + "dec_time_embedder.mlp.2.bias": (("decoder", "time_fc2", "bias"), _same),
      D + "dec_to_patches.adaLN_modulation.1.weight": (("decoder", "head_modulation", "kernel"),
                                                       _t),
      D + "dec_to_patches.adaLN_modulation.1.bias": (("decoder", "head_modulation", "bias"),
                                                     _same),
      D + "dec_to_patches.proj.weight": (("decoder", "head_proj", "kernel"), _t),
      D + "dec_to_patches.proj.bias": (("decoder", "head_proj", "bias"), _same),
  }
  if c.null_cond == "learned":
    r[D + "dec_latent_dropout.nullcond"] = (("decoder", "nullcond"), _same)
  for side, prefix, depth in (("encoder", E + "enc_transformer", c.enc_depth),
                              ("decoder", D + "dec_transformer", c.dec_depth)):
    blocks = (side, "transformer", "blocks")
    for i in range(depth):
      o = f"{prefix}.blocks.{i}."
      r[o + "attn.wqkv.weight"] = (blocks + ("attn", "qkv", "kernel"), _t, i)
      r[o + "attn.proj.weight"] = (blocks + ("attn", "out", "kernel"), _t, i)
      for fc in ("fc1", "fc2", "fc3"):
        r[o + f"mlp.{fc}.weight"] = (blocks + ("mlp", fc, "kernel"), _t, i)
      if side == "decoder":
        r[o + "adaLN_modulation.1.weight"] = (blocks + ("adaLN_modulation", "kernel"), _t, i)
        r[o + "adaLN_modulation.1.bias"] = (blocks + ("adaLN_modulation", "bias"), _same, i)
  return r


def flextok_from_params(config: FlexTokConfig, params: Mapping[str, np.ndarray]) -> FlexTok:
  """A `FlexTok(config)` holding the official `params` (without `vae.*`), checked strictly."""
  params = dict(params)
  for key, width in ((E + "enc_posemb_module.posembs", config.enc_width),
                     (D + "dec_patches_posemb_module.posembs", config.dec_width)):
    if key in params:
      _check_sincos(params, key, config.grid, width)
      del params[key]
  return build_with_params(FlexTok, config, fuse_qkv(params), flextok_rules)


def flextok_with_vae(config: FlexTokConfig, params: Mapping[str, np.ndarray],
                     vae_tensors: Mapping[str, np.ndarray]) -> FlexTok:
  """A `front_end="vae"` `FlexTok(config)`: the official FlexTok `params` (without `vae.*`) and
  the diffusers `AutoencoderKL` state dict `vae_tensors` of `config.vae`, both checked
  strictly."""
  if config.front_end != "vae":
    raise ValueError(f"config.front_end: expected 'vae', got {config.front_end!r}")
  latent = flextok_from_params(dataclasses.replace(config, front_end="latent", vae=None), params)
  try:
    vae = params_from_diffusers(config.vae, vae_tensors)
  except ValueError as e:
    raise ValueError(f"params ({VAE_PREFIX}*): {e}") from e
  have = dict(nnx.to_flat_state(nnx.state(latent)))
  have.update({("vae",) + tuple(path): var for path, var in nnx.to_flat_state(nnx.state(vae))})
  graphdef, state = nnx.split(nnx.eval_shape(lambda: FlexTok(config, rngs=nnx.Rngs(0))))
  flat = list(nnx.to_flat_state(state))
  want = {path for path, _ in flat}
  if want != set(have):  # The two parts must make up the whole model, nothing more or less.
    odd = sorted("/".join(map(str, p)) for p in want ^ set(have))
    raise ValueError(f"config: the FlexTok and VAE parts do not make up the vae front-end "
                     f"model: {odd[:5]}")
  return nnx.merge(graphdef, nnx.from_flat_state(
      [(path, var.replace(have[path].get_value())) for path, var in flat]))


def params_into(config: FlexTokConfig, params: Mapping[str, np.ndarray]) -> FlexTok:
  """A `FlexTok(config)` from an official state dict: with the release's `vae.vae.*` weights
  for a `front_end="vae"` config, without them otherwise (the trainer's `init_from`)."""
  kept, vae_tensors, _ = split_vae(params)
  if config.front_end == "vae":
    if not vae_tensors:
      raise ValueError(f"params: a front_end='vae' FlexTok needs the release's {VAE_PREFIX}* "
                       f"weights, which this checkpoint lacks; expected a config with "
                       f"front_end='latent'")
    return flextok_with_vae(config, kept, vae_tensors)
  return flextok_from_params(config, kept)


def official_model(release: Mapping[str, Any], params: Mapping[str, np.ndarray], *,
                   vae_scaling_factor: float | None = None
                   ) -> tuple[FlexTok, dict[str, Any]]:
  """(FlexTok, what became of the VAE) from a checked release dict and its state dict.

  A `StableDiffusionVAE` release with `vae.vae.*` weights gives a `front_end="vae"` model (its
  encoder takes the VAE's scaled posterior means of images in [0, 1], mapped to [-1, 1] as the
  official pipeline feeds them); one without them a `front_end="latent"` model. See
  `official.official_vae_config` for `vae_scaling_factor`.
  """
  kept, vae_tensors, dropped = split_vae(params)
  config = official_flextok_config(release, kept)
  info: dict[str, Any] = {"dropped_keys": dropped}
  if not vae_tensors:
    reason = (f"the checkpoint holds no {VAE_PREFIX}* weights: the model takes precomputed "
              f"VAE latents" if config.front_end == "latent"
              else "the release has no StableDiffusionVAE")
    info.update(converted=False, front_end=config.front_end, reason=reason)
    return flextok_from_params(config, kept), info
  vae_config, facts = official_vae_config(release, vae_tensors, latent_size=config.input_size,
                                          scaling_factor=vae_scaling_factor)
  if vae_config.latent_channels != config.channels:
    raise ValueError(f"params: the VAE's latent_channels={vae_config.latent_channels} "
                     f"({VAE_PREFIX}encoder.conv_out) differ from the {config.channels} input "
                     f"channels of the FlexTok encoder's patch embedding")
  config = dataclasses.replace(config, front_end="vae", vae=vae_config)
  info.update(converted=True, front_end="vae", keys=len(vae_tensors), **facts,
              latents="posterior mean x scaling_factor (deterministic; the official "
                      "sample_posterior draws a sample)")
  return flextok_with_vae(config, kept, vae_tensors), info


def from_official(release: Mapping[str, Any], params: Mapping[str, np.ndarray], *,
                  vae_scaling_factor: float | None = None) -> FlexTok:
  """FlexTok from a checked release dict and its state dict (`official_model`)."""
  return official_model(release, params, vae_scaling_factor=vae_scaling_factor)[0]


def convert_flextok(checkpoint: str | os.PathLike,
                    config: str | os.PathLike | Mapping[str, Any] | None,
                    out: str | os.PathLike, *, vae_scaling_factor: float | None = None,
                    overwrite: bool = True) -> Path:
  """Official FlexTok release -> a jaxtok checkpoint directory (`jaxtok.load`-able).

  The VAE is converted too: a release whose `vae` node is `StableDiffusionVAE` and whose
  checkpoint holds its `vae.vae.*` weights becomes a `front_end="vae"` model that tokenizes
  images (`tok.encode(images)`, `tok.decode(ids)` -> images). Its architecture is read from the
  weights' shapes (GroupNorm groups: 32, which no shape holds); its latents are the posterior
  mean x `scaling_factor` (the official wrapper samples the posterior by default: jaxtok's
  tokens are deterministic) and decoding divides by it. `vae.logvar` (a training-loss
  parameter) is dropped. Without `vae.vae.*` weights the model is `front_end="latent"` (it
  takes precomputed VAE latents), as before.

  Args:
    checkpoint: `model.safetensors` (or a torch zip `.bin` / a fixture `.npz`).
    config: the release `config.json` (path, dict or JSON string); None: the `config.json`
      beside `checkpoint`, else the safetensors `__metadata__`.
    out: destination directory (written atomically).
    vae_scaling_factor: the VAE's latent scaling where the release's `vae` node sets no
      `scaling_factor` (the official code then reads the `hf_hub_path` model's config, which
      jaxtok cannot; ValueError naming `scaling_factor` when it is needed and missing).
    overwrite: replace an existing jaxtok checkpoint at `out`.

  Returns:
    The output directory. Its `source.vae` records what became of the VAE: `converted`,
    `front_end`, `dropped_keys`, and for a converted one `hf_hub_path`, `sample_posterior`,
    `scaling_factor` (+ `scaling_factor_from`: "config" or "argument"), `norm_num_groups`.
  """
  checkpoint = Path(checkpoint)
  release, where = read_release_config(checkpoint, config)
  params = read_checkpoint(checkpoint)
  model, vae_info = official_model(release, params, vae_scaling_factor=vae_scaling_factor)
  sha = ckpt_format.file_sha256(checkpoint)
  source = {"checkpoint": checkpoint.name, "checkpoint_sha256": sha, "config_from": where,
            "official_config": release, "vae": vae_info}
  arrays, metadata = ckpt_format.state_to_arrays(model)
  meta = ckpt_format.make_meta("flextok", model.config, source)
  return ckpt_format.write_dir(out, meta, arrays, metadata, overwrite=overwrite)


def convert(checkpoint: str | os.PathLike, out: str | os.PathLike, *,
            config: str | os.PathLike | Mapping[str, Any] | None = None, **options: Any) -> Path:
  """The registry's entry (`Family.convert`): `convert_flextok(checkpoint, config, out, ...)`."""
  return convert_flextok(checkpoint, config, out, **options)
