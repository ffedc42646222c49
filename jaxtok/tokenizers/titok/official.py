"""Official TiTok / One-D-Piece configs (config.json / yaml as a dict) -> `TiTokConfig`.

The official schema is `{"model": {"vq_model": {...}, "type": ...}, "dataset":
{"preprocessing": {"crop_size": S}}}`. ViT sizes are named (`vit_enc_model_size`,
`vit_dec_model_size`): official names come from `config.MODEL_SIZES`; any other name from
`size_table` (name -> {"width", "depth", "heads"}, e.g. a fixture's `meta_json["size_table"]`)
or, given the checkpoint, width and depth are read from its state-dict shapes and the head
count from `heads` (it cannot be read from the weights; never guessed).

This module is the one place that tells One-D-Piece from TiTok (`official_family`).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxtok.tokenizers.maskgit_vqgan import MaskGITConfig
from jaxtok.tokenizers.titok.config import MODEL_SIZES, TiTokConfig

_SIDES = {"vit_enc_model_size": "encoder", "vit_dec_model_size": "decoder"}


def _as_dict(cfg: Mapping[str, Any] | str) -> dict[str, Any]:
  if isinstance(cfg, str):
    cfg = json.loads(cfg)
  if "model" not in cfg or "vq_model" not in cfg["model"]:
    raise ValueError("cfg: expected the official schema {'model': {'vq_model': {...}}, ...}, "
                     f"got top-level keys {sorted(cfg)}")
  return dict(cfg)


def official_family(cfg: Mapping[str, Any] | str, one_d_piece: bool | None = None) -> str:
  """"one_d_piece" or "titok" for an official config.

  Args:
    cfg: the official config dict (or its JSON string).
    one_d_piece: force the answer; None detects One-D-Piece from `model.type ==
      "one_d_piece"` or the One-D-Piece-only key `strict_length_assertion`.
  """
  cfg = _as_dict(cfg)
  if one_d_piece is None:
    one_d_piece = (cfg["model"].get("type") == "one_d_piece"
                   or "strict_length_assertion" in cfg["model"]["vq_model"])
  return "one_d_piece" if one_d_piece else "titok"


def parse_heads(text: str | None) -> int | dict[str, int] | None:
  """`--heads` text: "6" (every unknown size) or "tiny=4,tiny96=6" (per size name)."""
  if text is None or not str(text).strip():
    return None
  text = str(text).strip()
  if "=" not in text:
    return int(text)
  out = {}
  for item in text.split(","):
    name, _, value = item.partition("=")
    if not name.strip() or not value.strip().isdigit():
      raise ValueError(f"heads: expected 'N' or 'name=N,name=N', got {text!r}")
    out[name.strip()] = int(value)
  return out


def _infer_from_params(side: str, params: Mapping[str, np.ndarray]) -> tuple[int, int]:
  """(width, depth) of the official `side` ViT ("encoder" / "decoder") from its state dict."""
  emb = params.get(f"{side}.class_embedding")
  if emb is None:
    raise ValueError(f"params: expected '{side}.class_embedding' to read the {side} width from")
  depth = 0
  while f"{side}.transformer.{depth}.ln_1.weight" in params:
    depth += 1
  if depth == 0:
    raise ValueError(f"params: expected '{side}.transformer.0.*' keys to read the {side} depth")
  return int(np.shape(emb)[-1]), depth


def _vit_size(key: str, name: str, *, size_table, heads, params) -> tuple[int, int, int]:
  """(width, depth, heads) of ViT size `name` (config key `key`)."""
  if name in MODEL_SIZES:
    return MODEL_SIZES[name]
  if size_table and name in size_table:
    entry = size_table[name]
    return int(entry["width"]), int(entry["depth"]), int(entry["heads"])
  if params is None:
    raise ValueError(f"{key}: expected one of {sorted(MODEL_SIZES)} (official sizes), got "
                     f"{name!r}; for another size pass its size_table entry (width, depth, "
                     f"heads) or the checkpoint (width and depth are read from it) and --heads")
  width, depth = _infer_from_params(_SIDES[key], params)
  h = heads.get(name) if isinstance(heads, Mapping) else heads
  if h is None:
    raise ValueError(f"{key}: size {name!r} is not an official size; the checkpoint gives "
                     f"width {width} and depth {depth}, but the number of attention heads "
                     f"cannot be read from the weights: pass --heads (e.g. --heads "
                     f"{name}=<heads>, or heads= in Python)")
  h = int(h)
  if h < 1 or width % h:
    raise ValueError(f"heads: expected a divisor of the {name!r} width {width}, got {h}")
  return width, depth, h


def official_titok_config(cfg: Mapping[str, Any] | str, *,
                          size_table: Mapping[str, Mapping[str, int]] | None = None,
                          heads: int | Mapping[str, int] | None = None,
                          one_d_piece: bool | None = None,
                          params: Mapping[str, np.ndarray] | None = None) -> TiTokConfig:
  """Reads the official 1d-tokenizer / One-D-Piece config into a `TiTokConfig`.

  Args:
    cfg: the official config dict (or its JSON string). Fixture-only keys
      `pixel_codebook_size` and `pixel_decoder` are honoured.
    size_table: ViT sizes beyond the official ones: name -> {"width", "depth", "heads"}.
    heads: head count of sizes read from `params`: one int for all, or name -> int.
    one_d_piece: force One-D-Piece (tail-token-drop) on/off; None: `official_family`.
    params: the official state dict; width and depth of an unknown size are read from it.

  Returns:
    The config (tail_token_drop=True for One-D-Piece).
  """
  cfg = _as_dict(cfg)
  vq = cfg["model"]["vq_model"]
  size = cfg.get("dataset", {}).get("preprocessing", {}).get("crop_size", 256)
  ew, ed, eh, dw, dd, dh = (
      v for key in ("vit_enc_model_size", "vit_dec_model_size")
      for v in _vit_size(key, vq.get(key, "small"), size_table=size_table, heads=heads,
                         params=params))
  # One-D-Piece has no is_legacy flag; its code always takes the legacy paths.
  legacy = bool(vq.get("is_legacy", True))
  pixel_cfg = None
  if legacy:
    pixel_cfg = MaskGITConfig.from_official(vq.get("pixel_decoder", {}),
                                            codebook_size=vq.get("pixel_codebook_size", 1024))
  mode = vq.get("quantize_mode", "vq")
  if mode not in ("vq", "vae"):
    raise ValueError(f"quantize_mode: expected 'vq' or 'vae', got {mode!r}")
  return TiTokConfig(
      image_size=int(size),
      enc_patch_size=int(vq.get("vit_enc_patch_size", 16)),
      dec_patch_size=int(vq.get("vit_dec_patch_size", 16)),
      enc_width=ew, enc_depth=ed, enc_heads=eh,
      dec_width=dw, dec_depth=dd, dec_heads=dh,
      num_latent_tokens=int(vq["num_latent_tokens"]),
      token_size=int(vq["token_size"]),
      codebook_size=int(vq.get("codebook_size", 4096)),
      use_l2_norm=bool(vq.get("use_l2_norm", False)),
      commitment_cost=float(vq.get("commitment_cost", 0.25)),
      quantizer="gaussian" if mode == "vae" else "vq",
      legacy_projection=legacy,
      head="two_stage" if legacy else "pixel",
      pixel_codebook_size=int(vq.get("pixel_codebook_size", 1024)),
      pixel_decoder=pixel_cfg,
      finetune_decoder=bool(vq.get("finetune_decoder", True)),
      tail_token_drop=official_family(cfg, one_d_piece) == "one_d_piece",
  )


__all__ = ["official_family", "official_titok_config", "parse_heads"]
