"""Official TiTok / One-D-Piece / MaskGIT-VQGAN checkpoints -> jaxtok.

    convert_titok("model.safetensors", "config.json", "DIR"); tok = jaxtok.load("DIR")

Inputs are the released files of bytedance/1d-tokenizer (TiTok, arXiv 2406.07550) and
turingmotors/One-D-Piece (arXiv 2501.10064): `model.safetensors` or `pytorch_model.bin` (any
`torch.save` zip file), the official `config.json` (or the repo's `.yaml`), and for legacy
two-stage models whose checkpoint lacks them, the MaskGIT VQGAN
(`maskgit-vqgan-imagenet-f16-256.bin`) whose `decoder.*` / `quantize.embedding.weight` become
the TiTok `pixel_decoder.*` / `pixel_quantize.embedding.weight` (the official code loads them
the same way). No torch is needed: `jaxtok.io` parses both file formats with numpy.

Numpy in, no torch needed: `params` is a flat `{official_key: np.ndarray}` (as read from
`model.safetensors` / `pytorch_model.bin` by `jaxtok.io.torch_pickle`).

Layouts (`jaxtok.tokenizers.mapping`): norm weight -> scale; PyTorch's packed
`in_proj_weight` (3W, W) with row blocks [q; k; v] -> fused qkv kernel (W, 3W) = `w.T`.
Key names and semantics: tests/fixtures/titok/README.md §3-4. Loading is strict.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from flax import nnx

from jaxtok.io import checkpoint as ckpt_format
from jaxtok.io.torch_pickle import read_checkpoint
from jaxtok.tokenizers.mapping import (
  ParamPath,
  Transform,
  build_with_params,
  conv,
  conv1x1_dense,
  linear,
  same,
  vit_rules,
)
from jaxtok.tokenizers.maskgit_vqgan import MaskGITConfig, MaskGITVQGAN
from jaxtok.tokenizers.titok.config import TiTokConfig
from jaxtok.tokenizers.titok.model import TiTok
from jaxtok.tokenizers.titok.official import official_family, official_titok_config
from jaxtok.tokenizers.titok.one_d_piece import OneDPiece


def _maskgit_rule(key: str, prefix: str, jprefix: ParamPath, ndim: int
                  ) -> tuple[ParamPath, Transform]:
  """MaskGIT conv nets keep the official names; only leaves and layouts change."""
  parts = key[len(prefix) + 1:].split(".")
  path = tuple(int(p) if p.isdigit() else p for p in parts[:-1])
  leaf = parts[-1]
  if leaf == "weight" and ndim == 4:
    return jprefix + path + ("kernel",), conv
  if leaf == "weight" and ndim == 1:
    return jprefix + path + ("scale",), same
  if leaf == "bias":
    return jprefix + path + ("bias",), same
  raise ValueError(f"params: unexpected MaskGIT key {key!r} with ndim {ndim}")


def titok_rules(config: TiTokConfig, params: Mapping[str, np.ndarray]
                ) -> dict[str, tuple[ParamPath, Transform]]:
  """official key -> (jaxtok state path, layout transform) for a TiTok / One-D-Piece model."""
  r: dict[str, tuple[ParamPath, Transform]] = {}
  r["latent_tokens"] = (("encoder", "latent_tokens"), same)
  for side in ("encoder", "decoder"):
    for name in ("class_embedding", "positional_embedding", "latent_token_positional_embedding"):
      r[f"{side}.{name}"] = ((side, name), same)
  r["encoder.patch_embed.weight"] = (("encoder", "patch_embed", "proj", "kernel"), conv)
  r["encoder.patch_embed.bias"] = (("encoder", "patch_embed", "proj", "bias"), same)
  r["encoder.conv_out.weight"] = (("encoder", "conv_out", "kernel"), conv1x1_dense)
  r["encoder.conv_out.bias"] = (("encoder", "conv_out", "bias"), same)
  r.update(vit_rules("encoder", ("encoder",), config.enc_depth))
  r.update(vit_rules("decoder", ("decoder",), config.dec_depth))
  r["decoder.decoder_embed.weight"] = (("decoder", "decoder_embed", "kernel"), linear)
  r["decoder.decoder_embed.bias"] = (("decoder", "decoder_embed", "bias"), same)
  r["decoder.mask_token"] = (("decoder", "mask_token"), same)
  r["decoder.ffn.0.weight"] = (("decoder", "ffn_0", "kernel"), conv1x1_dense)
  r["decoder.ffn.0.bias"] = (("decoder", "ffn_0", "bias"), same)
  if config.head == "two_stage":
    r["decoder.ffn.2.weight"] = (("decoder", "ffn_2", "kernel"), conv1x1_dense)
    r["decoder.ffn.2.bias"] = (("decoder", "ffn_2", "bias"), same)
    r["pixel_quantize.embedding.weight"] = (("pixel_codebook",), same)
    for key, value in params.items():
      if key.startswith("pixel_decoder."):
        r[key] = _maskgit_rule(key, "pixel_decoder", ("pixel_decoder",), np.ndim(value))
  else:
    r["decoder.conv_out.weight"] = (("decoder", "conv_out", "kernel"), conv)
    r["decoder.conv_out.bias"] = (("decoder", "conv_out", "bias"), same)
  if config.quantizer == "vq":
    r["quantize.embedding.weight"] = (("quantize", "codebook"), same)
  return r


def maskgit_rules(params: Mapping[str, np.ndarray]) -> dict[str, tuple[ParamPath, Transform]]:
  """official key -> (path, transform) for the standalone MaskGIT VQGAN checkpoint."""
  r = {"quantize.embedding.weight": (("quantize", "codebook"), same)}
  for key, value in params.items():
    for side in ("encoder", "decoder"):
      if key.startswith(side + "."):
        r[key] = _maskgit_rule(key, side, (side,), np.ndim(value))
  return r


def from_official(config_dict: Mapping[str, Any] | str,
                  params: Mapping[str, np.ndarray], *,
                  one_d_piece: bool | None = None,
                  size_table: Mapping[str, Mapping[str, int]] | None = None,
                  heads: int | Mapping[str, int] | None = None) -> TiTok:
  """Builds a TiTok / One-D-Piece model from an official config dict and state_dict arrays.

  Args:
    config_dict: the official config (`{"model": {"vq_model": ...}, "dataset": ...}`) or its
      JSON string.
    params: `{official_key: array}` of the official `model.state_dict()`.
    one_d_piece, size_table, heads: see `official.official_titok_config`.

  Returns:
    The family's model (`TiTok` or `OneDPiece`) holding exactly the official weights.
  """
  config = official_titok_config(config_dict, size_table=size_table, heads=heads,
                                 one_d_piece=one_d_piece, params=params)
  one_d = official_family(config_dict, one_d_piece) == "one_d_piece"
  return titok_from_params(config, params, model_class=OneDPiece if one_d else TiTok)


def titok_from_params(config: TiTokConfig, params: Mapping[str, np.ndarray], *,
                      model_class: type = TiTok) -> TiTok:
  """A `model_class(config)` (TiTok or a subclass) loaded with official-layout `params`."""
  if config.quantizer not in ("vq", "gaussian"):
    raise ValueError(f"config.quantizer: official checkpoints use 'vq' or 'gaussian', got "
                     f"{config.quantizer!r}")
  return build_with_params(model_class, config, params, titok_rules)


def one_d_piece_from_params(config: TiTokConfig, params: Mapping[str, np.ndarray]) -> OneDPiece:
  """A `OneDPiece(config)` loaded with official-layout `params`."""
  return titok_from_params(config, params, model_class=OneDPiece)


def stage1_teacher(config: TiTokConfig, weights: str, seed: int) -> MaskGITVQGAN:
  """The frozen MaskGIT VQGAN whose codes stage 1 regresses (`model.encode(images) -> ids`).

  Args:
    config: the two-stage TiTok's config (its `pixel_decoder` and `pixel_codebook_size`).
    weights: the released `maskgit-vqgan-imagenet-f16-256.bin`, or "random" (smoke tests: no
      released weights offline).
    seed: init seed of a "random" teacher.
  """
  mg_cfg = dataclasses.replace(config.pixel_decoder, codebook_size=config.pixel_codebook_size)
  if weights == "random":
    return MaskGITVQGAN(mg_cfg, rngs=nnx.Rngs(seed))
  if not weights:
    raise ValueError("teacher: recipe 'stage1' needs the MaskGIT-VQGAN weights file "
                     "(maskgit-vqgan-imagenet-f16-256.bin), or 'random' for smoke tests")
  return maskgit_from_official(read_checkpoint(weights), mg_cfg)


def maskgit_from_official(params: Mapping[str, np.ndarray],
                          config: MaskGITConfig | None = None) -> MaskGITVQGAN:
  """`MaskGITVQGAN` from the released `maskgit-vqgan-imagenet-f16-256` state dict."""
  return build_with_params(MaskGITVQGAN, config or MaskGITConfig(), params,
                           lambda _, p: maskgit_rules(p))


# MaskGIT VQGAN state-dict prefixes -> TiTok's names for the same modules.
_MASKGIT_TO_TITOK = {"decoder.": "pixel_decoder.",
                     "quantize.embedding.weight": "pixel_quantize.embedding.weight"}


def read_official_config(config: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
  """The official config as a dict, from a dict, a JSON string or a `.json`/`.yaml` file."""
  if isinstance(config, Mapping):
    return dict(config)
  if isinstance(config, str) and config.lstrip().startswith("{"):
    return json.loads(config)
  path = Path(config)
  if not path.is_file():
    raise ValueError(f"config: expected an official config.json/.yaml file or dict, got "
                     f"{str(config)!r}, which is not a file")
  text = path.read_text()
  if path.suffix in (".yaml", ".yml"):
    data = yaml.safe_load(text)
  else:
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"config: {str(path)!r} is not valid JSON: {e}") from e
  if not isinstance(data, dict):
    raise ValueError(f"config: expected a mapping in {str(path)!r}, got {type(data).__name__}")
  return data


def merge_maskgit_params(params: Mapping[str, np.ndarray], maskgit: Mapping[str, np.ndarray],
                         *, override: bool = False) -> tuple[dict[str, np.ndarray], list[str]]:
  """Adds the MaskGIT VQGAN's decoder and codebook to a legacy TiTok state dict.

  Args:
    params: the TiTok state dict (official names).
    maskgit: the MaskGIT VQGAN state dict (`encoder.*`, `decoder.*`, `quantize.*`); its
      encoder is not part of TiTok and is ignored.
    override: replace `pixel_*` entries the TiTok checkpoint already has (by default the
      checkpoint's own, possibly fine-tuned, decoder wins).

  Returns:
    (merged state dict, the TiTok keys taken from `maskgit`).
  """
  merged, taken = dict(params), []
  found = False
  for key, value in maskgit.items():
    for src, dst in _MASKGIT_TO_TITOK.items():
      if key == src or (src.endswith(".") and key.startswith(src)):
        found = True
        new = dst + key[len(src):] if src.endswith(".") else dst
        if override or new not in merged:
          merged[new] = value
          taken.append(new)
  if not found:
    raise ValueError(f"maskgit_vqgan: expected a MaskGIT VQGAN state dict with 'decoder.*' and "
                     f"'quantize.embedding.weight', got keys {sorted(maskgit)[:6]}")
  return merged, taken


def convert_titok(checkpoint: str | os.PathLike,
                  config: str | os.PathLike | Mapping[str, Any] | None,
                  out: str | os.PathLike, *,
                  maskgit_vqgan: str | os.PathLike | None = None,
                  maskgit_override: bool = False,
                  one_d_piece: bool | None = None,
                  heads: int | Mapping[str, int] | None = None,
                  size_table: Mapping[str, Mapping[str, int]] | None = None,
                  use_torch: bool | None = False,
                  overwrite: bool = True) -> Path:
  """Converts an official TiTok / One-D-Piece checkpoint into a jaxtok checkpoint directory.

  Args:
    checkpoint: `model.safetensors`, `pytorch_model.bin`/`.pt` (torch zip), or a fixture
      `.npz` with `param/<key>` arrays.
    config: the official config (`config.json`/`.yaml` path, dict or JSON string). None: the
      `config.json` next to `checkpoint` (the Hugging Face layout).
    out: destination directory (written atomically).
    maskgit_vqgan: the MaskGIT VQGAN checkpoint supplying `pixel_decoder.*` and
      `pixel_quantize.embedding.weight` where `checkpoint` lacks them (legacy models).
    maskgit_override: take those from `maskgit_vqgan` even where `checkpoint` has them.
    one_d_piece: force the One-D-Piece family on/off (None: detect from the config).
    heads: attention heads of ViT sizes that are not official (one int, or size name ->
      int); their width and depth are read from the checkpoint (`--heads`).
    size_table: ViT sizes that are not official, name -> {"width", "depth", "heads"}.
    use_torch: reader choice for torch files (see `jaxtok.io.torch_pickle.read_checkpoint`).
    overwrite: replace an existing jaxtok checkpoint at `out`.

  Returns:
    The output directory, loadable with `jaxtok.load`.
  """
  checkpoint = Path(checkpoint)
  if config is None:
    config = checkpoint.parent / "config.json"
    if not config.is_file():
      raise ValueError(f"config: none given and no config.json next to {str(checkpoint)!r}")
  cfg = read_official_config(config)
  params = read_checkpoint(checkpoint, use_torch=use_torch)
  source: dict[str, Any] = {"checkpoint": checkpoint.name,
                            "checkpoint_sha256": ckpt_format.file_sha256(checkpoint),
                            "official_config": cfg}
  if maskgit_vqgan is not None:
    maskgit_path = Path(maskgit_vqgan)
    maskgit = read_checkpoint(maskgit_path, use_torch=use_torch)
    params, taken = merge_maskgit_params(params, maskgit, override=maskgit_override)
    source.update(maskgit_vqgan=maskgit_path.name,
                  maskgit_vqgan_sha256=ckpt_format.file_sha256(maskgit_path),
                  keys_from_maskgit_vqgan=len(taken))
  model_config = official_titok_config(cfg, size_table=size_table, heads=heads,
                                       one_d_piece=one_d_piece, params=params)
  if model_config.head == "two_stage" and not any(k.startswith("pixel_decoder.") for k in params):
    raise ValueError(f"checkpoint: {checkpoint.name} is a legacy two-stage TiTok without "
                     f"'pixel_decoder.*' weights; pass the MaskGIT VQGAN with --maskgit-vqgan "
                     f"(maskgit-vqgan-imagenet-f16-256.bin)")
  model = from_official(cfg, params, one_d_piece=one_d_piece,
                                      size_table=size_table, heads=heads)
  arrays, metadata = ckpt_format.state_to_arrays(model)
  family = "one_d_piece" if isinstance(model, OneDPiece) else "titok"
  meta = ckpt_format.make_meta(family, model.config, source)
  return ckpt_format.write_dir(out, meta, arrays, metadata, overwrite=overwrite)


def convert(checkpoint: str | os.PathLike, out: str | os.PathLike, *,
            config: str | os.PathLike | Mapping[str, Any] | None = None, **options: Any) -> Path:
  """The registry's entry (`Family.convert`): `convert_titok(checkpoint, config, out, ...)`."""
  return convert_titok(checkpoint, config, out, **options)
