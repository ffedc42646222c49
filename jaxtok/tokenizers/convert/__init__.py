"""Official PyTorch checkpoints -> jaxtok checkpoint directories.

    python -m jaxtok.tokenizers.convert titok --checkpoint model.safetensors \
        --config config.json [--maskgit-vqgan maskgit-vqgan-imagenet-f16-256.bin] --out DIR

or from Python:

    from jaxtok.tokenizers.convert import convert_titok
    convert_titok("model.safetensors", "config.json", "DIR")
    tok = jaxtok.load("DIR")

Inputs are the released files of bytedance/1d-tokenizer (TiTok, arXiv 2406.07550) and
turingmotors/One-D-Piece (arXiv 2501.10064): `model.safetensors` or `pytorch_model.bin` (any
`torch.save` zip file), the official `config.json` (or the repo's `.yaml`), and for legacy
two-stage models whose checkpoint lacks them, the MaskGIT VQGAN
(`maskgit-vqgan-imagenet-f16-256.bin`) whose `decoder.*` / `quantize.embedding.weight` become
the TiTok `pixel_decoder.*` / `pixel_quantize.embedding.weight` (the official code loads them
the same way). No torch is needed: `jaxtok.io` parses both file formats with numpy.

The name mapping lives in `titok_mapping` (official key -> NNX path and layout).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from jaxtok.io import checkpoint as ckpt_format
from jaxtok.io.safetensors import read_safetensors, write_safetensors
from jaxtok.io.torch_pickle import read_checkpoint, read_torch_zip
from jaxtok.tokenizers import family_of
from jaxtok.tokenizers.convert import titok_mapping
from jaxtok.tokenizers.convert.titok_config import official_titok_config

__all__ = ["convert_titok", "read_official_config", "merge_maskgit_params",
           "read_checkpoint", "read_safetensors", "read_torch_zip", "write_safetensors"]

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


def _sha256(path: Path) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


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
  source: dict[str, Any] = {"checkpoint": checkpoint.name, "checkpoint_sha256": _sha256(checkpoint),
                            "official_config": cfg}
  if maskgit_vqgan is not None:
    maskgit_path = Path(maskgit_vqgan)
    maskgit = read_checkpoint(maskgit_path, use_torch=use_torch)
    params, taken = merge_maskgit_params(params, maskgit, override=maskgit_override)
    source.update(maskgit_vqgan=maskgit_path.name, maskgit_vqgan_sha256=_sha256(maskgit_path),
                  keys_from_maskgit_vqgan=len(taken))
  model_config = official_titok_config(cfg, size_table=size_table, heads=heads,
                                       one_d_piece=one_d_piece, params=params)
  if model_config.head == "two_stage" and not any(k.startswith("pixel_decoder.") for k in params):
    raise ValueError(f"checkpoint: {checkpoint.name} is a legacy two-stage TiTok without "
                     f"'pixel_decoder.*' weights; pass the MaskGIT VQGAN with --maskgit-vqgan "
                     f"(maskgit-vqgan-imagenet-f16-256.bin)")
  model = titok_mapping.from_official(cfg, params, one_d_piece=one_d_piece,
                                      size_table=size_table, heads=heads)
  arrays, metadata = ckpt_format.state_to_arrays(model)
  meta = ckpt_format.make_meta(family_of(model).name, model.config, source)
  return ckpt_format.write_dir(out, meta, arrays, metadata, overwrite=overwrite)
