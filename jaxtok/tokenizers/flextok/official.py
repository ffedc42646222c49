"""Official FlexTok release configs (Hydra trees) -> `FlexTokConfig`, read as data only.

A release (apple/ml-flextok, `FlexTokFromHub`) is `model.safetensors` + `config.json`: a dict
with the keys `vae`, `encoder`, `decoder`, `regularizer`, `flow_matching_noise_module` and
`pipeline`, each a Hydra tree of `{"_target_": "module.Class", arg: value, ...}`. The same
dict may instead sit in the safetensors `__metadata__`, one string per key (a Python literal
or JSON). The official loader hands it to `hydra.utils.instantiate`, i.e. it imports and calls
whatever the file names. Here nothing is imported, called or evaluated: strings are parsed with
`json` / `ast.literal_eval`, every `_target_` must be one of the official FlexTok classes
(`KNOWN_TARGETS`), and anything else is refused with its name and place.

What is read from where:
- sizes (widths, depths, registers, patch features, FSQ dimension, adaLN expansion, null
  condition) from the weights' shapes, which cannot disagree with the model;
- the patch size from the patch embedders' `patch_sizes` / `patch_size` argument (the
  channels follow from the patch features);
- FSQ `levels` from the `regularizer` tree; the nested-dropout `size_sampling_mode`; the
  timestep embedder's `max_timestep` (class default 1000.0 when absent; tests/fixtures/flextok
  README §5), `frequency_embedding_size` and `max_period`; the encoder mask from any
  argument whose value is "causal_last" / "full" in the `encoder` tree;
- the VAE (`official_vae_config`, the `vae` node `flextok.vae_wrapper.StableDiffusionVAE` over
  a diffusers `AutoencoderKL`): its architecture from the `vae.vae.*` weights' shapes, the
  latent scaling from the node's `scaling_factor`.
"""
from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxtok.io.safetensors import read_safetensors_metadata
from jaxtok.tokenizers import layers
from jaxtok.tokenizers.flextok.config import FlexTokConfig
from jaxtok.tokenizers.vae.config import AutoencoderKLConfig, config_from_diffusers_weights

RELEASE_KEYS = ("vae", "encoder", "decoder", "regularizer", "flow_matching_noise_module",
                "pipeline")
# The official classes a release config may name (apple/ml-flextok's own allow-list).
KNOWN_TARGETS = frozenset("flextok." + t for t in (
    "flextok_wrapper.FlexTok", "flextok_wrapper.FlexTokFromHub",
    "vae_wrapper.StableDiffusionVAE",
    "flow_matching.pipelines.MinRFPipeline", "flow_matching.noise_modules.MinRFNoiseModule",
    "flow_matching.cfg_utils.MomentumBuffer",
    "model.utils.wrappers.SequentialModuleDictWrapper", "model.utils.posembs.PositionalEmbedding",
    "model.utils.posembs.PositionalEmbeddingAdder", "model.utils.dict_ops.DictKeyFilter",
    "model.utils.dict_ops.PerSampleOp", "model.utils.dict_ops.PerSampleReducer",
    "model.utils.dict_ops.channels_first_to_last", "model.utils.dict_ops.channels_last_to_first",
    "model.trunks.transformers.FlexTransformer",
    "model.trunks.transformers.FlexTransformerDecoder",
    "model.preprocessors.token_dropout.MaskedNestedDropout",
    "model.preprocessors.time_embedding.TimestepEmbedder",
    "model.preprocessors.registers.Registers1D", "model.preprocessors.patching.PatchEmbedder",
    "model.preprocessors.nullcond.ZeroNullCond", "model.preprocessors.nullcond.LearnedNullCond",
    "model.preprocessors.mask_tokens.MaskTokenModule", "model.preprocessors.linear.LinearLayer",
    "model.preprocessors.flex_seq_packing.BlockWiseSequencePacker",
    "model.postprocessors.seq_unpacking.SequenceUnpacker",
    "model.postprocessors.heads.LinearHead", "model.postprocessors.heads.ToPatchesLinearHead",
    "model.postprocessors.heads.MLPHead",
    "model.layers.transformer_blocks.FlexBlock", "model.layers.transformer_blocks.FlexBlockAdaLN",
    "model.layers.transformer_blocks.FlexDecoderBlock",
    "model.layers.transformer_blocks.FlexDecoderBlockAdaLN", "model.layers.norm.Fp32LayerNorm",
    "model.layers.mup_readout.MuReadoutFSDP", "model.layers.mlp.Mlp", "model.layers.mlp.GatedMlp",
    "model.layers.drop_path.DropPath", "model.layers.attention.FlexAttention",
    "model.layers.attention.FlexSelfAttention", "model.layers.attention.FlexCrossAttention",
    "regularizers.quantize_fsq.FSQ"))
ENC = "encoder.module_dict."
DEC = "decoder.module_dict."
SD_VAE = "flextok.vae_wrapper.StableDiffusionVAE"
# GroupNorm groups of the official VAE: its base diffusers config's (and every Stable Diffusion
# VAE's) 32. No weight shape holds it, and a hub config (`hf_hub_path`) cannot be read offline.
VAE_NORM_GROUPS = 32
# `StableDiffusionVAE`'s own default of `latent_channels` (used when no `hf_hub_path` is given).
VAE_DEFAULT_LATENT_CHANNELS = 16


# Nesting deeper than this is no release config (the official ones are < 10 deep); refusing it
# keeps the parsers and the walk below off Python's recursion limit.
MAX_DEPTH = 64


def _parse_value(key: str, text: Any) -> Any:
  if not isinstance(text, str):
    return text
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    pass
  except RecursionError:
    raise ValueError(f"config[{key!r}]: nested deeper than {MAX_DEPTH} levels") from None
  try:
    return ast.literal_eval(text)  # Literals only: no names, calls or attribute access.
  except (RecursionError, MemoryError):
    raise ValueError(f"config[{key!r}]: nested deeper than {MAX_DEPTH} levels") from None
  except (ValueError, SyntaxError, TypeError) as e:
    raise ValueError(f"config[{key!r}]: expected a JSON or Python-literal string, got "
                     f"{text[:80]!r} ({type(e).__name__})") from None


def read_release_config(checkpoint: str | os.PathLike,
                        config: str | os.PathLike | Mapping[str, Any] | None = None
                        ) -> tuple[dict[str, Any], str]:
  """(release dict, where it came from): `config` (a dict, JSON string or `config.json`), else
  a `config.json` beside `checkpoint`, else the checkpoint's safetensors `__metadata__`."""
  source = "dict"
  if config is None:
    beside = Path(checkpoint).parent / "config.json"
    if beside.is_file():
      config = beside
    else:
      meta = read_safetensors_metadata(checkpoint)
      data = {k: _parse_value(k, v) for k, v in meta.items() if k in RELEASE_KEYS}
      if not data:
        raise ValueError(f"config: none given, no config.json beside {str(checkpoint)!r} and "
                         f"no FlexTok keys {RELEASE_KEYS} in its __metadata__")
      return check_release(data), "safetensors __metadata__"
  if isinstance(config, Mapping):
    data = dict(config)
  elif isinstance(config, str) and config.lstrip().startswith("{"):
    try:
      data = json.loads(config)
    except json.JSONDecodeError as e:
      raise ValueError(f"config: the JSON string given is not valid JSON: {e}") from e
    except RecursionError:
      raise ValueError(f"config: the JSON string given is nested deeper than {MAX_DEPTH} "
                       f"levels") from None
  else:
    path = Path(config)
    if not path.is_file():
      raise ValueError(f"config: expected a FlexTok config.json, got {str(config)!r}, which is "
                       f"not a file")
    try:
      data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f"config: {str(path)!r} is not valid JSON: {e}") from e
    except RecursionError:
      raise ValueError(f"config: {str(path)!r} is nested deeper than {MAX_DEPTH} "
                       f"levels") from None
    source = path.name
  if not isinstance(data, dict):
    raise ValueError(f"config: expected a mapping, got {type(data).__name__}")
  data = {k: _parse_value(k, v) for k, v in data.items()}
  return check_release(data), source


def _nodes(tree: Any, path: str = "") -> Iterator[tuple[str, dict]]:
  """Every dict of a tree with its path, depth first (iterative: no recursion limit to hit;
  a tree deeper than `MAX_DEPTH` is refused)."""
  stack = [(path, tree, 0)]
  while stack:
    where, node, depth = stack.pop()
    if depth > MAX_DEPTH:
      raise ValueError(f"config: {where or 'the config'} is nested deeper than {MAX_DEPTH} "
                       f"levels")
    if isinstance(node, dict):
      yield where, node
      children = [(f"{where}.{k}" if where else str(k), v) for k, v in node.items()]
    elif isinstance(node, (list, tuple)):
      children = [(f"{where}[{i}]", v) for i, v in enumerate(node)]
    else:
      continue
    stack.extend((p, v, depth + 1) for p, v in reversed(children))


def check_release(data: Mapping[str, Any]) -> dict[str, Any]:
  """Checks the six release keys are there and every `_target_` (under any key) is a known
  official class; returns the six release keys only."""
  missing = [k for k in RELEASE_KEYS if k not in data]
  if missing:
    raise ValueError(f"config: expected a FlexTok release config with keys {RELEASE_KEYS}, "
                     f"missing {missing}")
  for key in data:  # Every key: an extra one is no place to hide a class.
    for path, node in _nodes(data[key], str(key)):
      if "_target_" in node:
        target = node["_target_"]
        if not isinstance(target, str) or target not in KNOWN_TARGETS:
          raise ValueError(f"config: unknown _target_ {target!r} at {path}; jaxtok maps only "
                           f"the official FlexTok classes (flextok.*) and never imports or "
                           f"instantiates a checkpoint's classes")
  return {k: data[k] for k in RELEASE_KEYS}  # Extra keys are not carried into provenance.


def _find(tree: Any, target_suffix: str) -> list[dict]:
  return [n for _, n in _nodes(tree) if str(n.get("_target_", "")).endswith(target_suffix)]


def _arg(nodes: list[dict], names: tuple[str, ...], default: Any = None) -> Any:
  for node in nodes:
    for name in names:
      if name in node:
        return node[name]
  return default


def _shape(params: Mapping[str, np.ndarray], key: str) -> tuple[int, ...]:
  if key not in params:
    raise ValueError(f"params: expected the official key {key!r} in the checkpoint")
  return tuple(np.shape(params[key]))


def _depth(params: Mapping[str, np.ndarray], prefix: str) -> int:
  idx = {int(k[len(prefix):].split(".")[0]) for k in params if k.startswith(prefix)}
  if not idx:
    raise ValueError(f"params: no transformer blocks {prefix}<i>.* in the checkpoint")
  return max(idx) + 1


def official_flextok_config(release: Mapping[str, Any],
                            params: Mapping[str, np.ndarray]) -> FlexTokConfig:
  """The `FlexTokConfig` of a release dict (checked by `check_release`) and its weights."""
  enc, dec = release["encoder"], release["decoder"]
  ew = _shape(params, ENC + "enc_register_module.registers")[1]
  r = _shape(params, ENC + "enc_register_module.registers")[0]
  dw = _shape(params, DEC + "dec_from_latents.proj.weight")[0]
  code_dim = _shape(params, ENC + "enc_to_latents.proj.weight")[0]
  feats = _shape(params, ENC + "enc_patch_emb.patch_proj.weight")[1]
  grid = _shape(params, ENC + "enc_posemb_module.posembs")[-1]
  mod_rows = _shape(params, DEC + "dec_transformer.blocks.0.adaLN_modulation.1.weight")[0]
  if mod_rows % (6 * dw) or mod_rows // (6 * dw) not in (1, 2):
    raise ValueError(f"params: adaLN modulation of {mod_rows} rows is neither 6 nor 12 x the "
                     f"decoder width {dw}")
  dec_feats = _shape(params, DEC + "dec_noise_patch_emb.patch_proj.weight")[1]
  if dec_feats != feats:
    raise ValueError(f"params: encoder and decoder patch features differ ({feats} vs "
                     f"{dec_feats}); jaxtok's FlexTok uses one patch size for both")
  patch = _arg(_find(enc, "PatchEmbedder"), ("patch_sizes", "patch_size"))
  if patch is None:
    raise ValueError("config: the encoder's PatchEmbedder names no patch_sizes / patch_size")
  patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch)
  if feats % (patch * patch):
    raise ValueError(f"config: patch size {patch} does not divide the {feats} patch features")
  channels = feats // (patch * patch)
  fsq = _find(release["regularizer"], "quantize_fsq.FSQ")
  levels = _arg(fsq, ("levels",))
  if levels is None:
    raise ValueError("config: the regularizer names no FSQ levels")
  if len(levels) != code_dim:
    raise ValueError(f"config: FSQ levels {levels} do not match the encoder head's {code_dim} "
                     f"outputs")
  temb = _find(dec, "TimestepEmbedder")
  mask = None
  for _, node in _nodes(enc):
    for v in node.values():
      if v in ("causal_last", "full"):
        mask = v
  nested = _arg(_find(dec, "MaskedNestedDropout"), ("size_sampling_mode",), "pow2")
  if nested == "disable":
    nested = "none"
  mlp_ratio = float(_arg(_find(enc, "FlexTransformer"), ("mlp_ratio",), 4.0))
  for prefix, width in ((ENC + "enc_transformer", ew), (DEC + "dec_transformer", dw)):
    hidden = _shape(params, prefix + ".blocks.0.mlp.fc1.weight")[0]
    if layers.swiglu_hidden(width, mlp_ratio) != hidden:
      raise ValueError(f"config: mlp_ratio {mlp_ratio} gives a SwiGLU hidden width of "
                       f"{layers.swiglu_hidden(width, mlp_ratio)} at width {width}, but the "
                       f"checkpoint's {prefix}.blocks.0.mlp.fc1 has {hidden}")
  vae = release["vae"]
  front = "latent" if _find(vae, "StableDiffusionVAE") else "identity"
  return FlexTokConfig(
      front_end=front, input_size=grid * patch, channels=channels, patch_size=patch,
      enc_width=ew, enc_depth=_depth(params, ENC + "enc_transformer.blocks."),
      enc_head_dim=int(_arg(_find(enc, "FlexTransformer"), ("head_dim",), 64)),
      dec_width=dw, dec_depth=_depth(params, DEC + "dec_transformer.blocks."),
      dec_head_dim=int(_arg(_find(dec, "FlexTransformer"), ("head_dim",), 64)),
      mlp_ratio=mlp_ratio,
      num_registers=r, levels=tuple(int(v) for v in levels),
      enc_mask=mask or "causal_last", adaln_expansion=mod_rows // (6 * dw),
      max_timestep=float(_arg(temb, ("max_timestep",), 1000.0)),
      time_freq_size=int(_arg(temb, ("frequency_embedding_size",),
                              _shape(params, DEC + "dec_time_embedder.mlp.0.weight")[1])),
      time_max_period=float(_arg(temb, ("max_period",), 256.0)),
      null_cond="learned" if DEC + "dec_latent_dropout.nullcond" in params else "zero",
      nested_dropout=nested)


def official_vae_config(release: Mapping[str, Any], tensors: Mapping[str, np.ndarray], *,
                        latent_size: int, scaling_factor: float | None = None
                        ) -> tuple[AutoencoderKLConfig, dict[str, Any]]:
  """The `AutoencoderKLConfig` of a release's `StableDiffusionVAE` and its weights.

  The official wrapper builds a diffusers `AutoencoderKL` from its base config (or, with
  `hf_hub_path`, from that hub model's config, which cannot be read offline), so the
  architecture is read from the weights' shapes (`config_from_diffusers_weights`), with
  `norm_num_groups` = `VAE_NORM_GROUPS` (32: no shape holds it). Without `hf_hub_path` the
  node's `latent_channels` (class default 16) must match the weights; with it, the official code
  ignores that argument and so does this function. The official latents are
  `z * scaling_factor` (no shift), z a posterior sample (`sample_posterior`, the official
  default) or its mode; jaxtok's "vae" front end encodes with the posterior mean (a
  deterministic tokenizer) and decodes `z / scaling_factor`.

  Args:
    release: the checked release dict (`check_release`).
    tensors: the diffusers `AutoencoderKL` state dict (the release's `vae.vae.*` keys with
      that prefix removed).
    latent_size: side of the latents the FlexTok encoder patchifies (the image side is this x
      the VAE's downsampling factor).
    scaling_factor: the latent scaling to use where the node's `scaling_factor` is None (the
      official code then takes the hub config's); must agree with the node's when both are set.

  Returns:
    (config, facts): facts records `hf_hub_path`, `sample_posterior`, `dtype_override`,
    `scaling_factor` and where it came from ("config" or "argument"), and `norm_num_groups`.

  Raises:
    ValueError: no `StableDiffusionVAE` node, a latent_channels mismatch, or a missing or
      conflicting scaling factor (each named).
  """
  nodes = [n for _, n in _nodes(release["vae"]) if n.get("_target_") == SD_VAE]
  if not nodes:
    raise ValueError(f"config: the checkpoint holds VAE weights (vae.vae.*), but the 'vae' node "
                     f"names no {SD_VAE}")
  node = nodes[0]
  hub = node.get("hf_hub_path")
  given = node.get("scaling_factor")
  if given is not None and (isinstance(given, bool) or not isinstance(given, (int, float))):
    raise ValueError(f"config: vae scaling_factor: expected a number or null, got {given!r}")
  if not given:  # The official `scaling_factor or <hub config's>`: None and 0 both defer.
    if scaling_factor is None:
      origin = (f"from the hub config of hf_hub_path={hub!r}, which jaxtok cannot read offline"
                if hub is not None else "from nowhere: hf_hub_path is None too")
      raise ValueError(f"scaling_factor: the release's vae node sets none (the official code "
                       f"would take it {origin}); pass the VAE's latent scaling factor "
                       f"(--vae-scaling-factor / vae_scaling_factor=)")
    used, origin = float(scaling_factor), "argument"
  else:
    used, origin = float(given), "config"
    if scaling_factor is not None and float(scaling_factor) != used:
      raise ValueError(f"scaling_factor: {scaling_factor!r} was passed, but the release's vae "
                       f"node sets scaling_factor={given!r}")
  config = config_from_diffusers_weights(tensors, latent_size=latent_size, scaling_factor=used,
                                         norm_num_groups=VAE_NORM_GROUPS,
                                         where="params (vae.vae.*)")
  c = config.latent_channels
  if hub is None:
    want = node.get("latent_channels", VAE_DEFAULT_LATENT_CHANNELS)
    if isinstance(want, bool) or not isinstance(want, int) or want != c:
      note = ("" if "latent_channels" in node
              else f" (StableDiffusionVAE's default {VAE_DEFAULT_LATENT_CHANNELS}: the node "
                   f"sets none)")
      raise ValueError(f"config: vae latent_channels={want!r}{note} does not match the "
                       f"weights' latent_channels={c} (vae.vae.encoder.conv_out has {2 * c} "
                       f"outputs)")
  facts = {"hf_hub_path": hub, "sample_posterior": bool(node.get("sample_posterior", True)),
           "dtype_override": node.get("dtype_override", "fp32"), "scaling_factor": used,
           "scaling_factor_from": origin, "norm_num_groups": VAE_NORM_GROUPS}
  return config, facts
