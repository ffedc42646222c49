"""Official FQGAN (showlab/FQGAN) checkpoints -> jaxtok `FQGAN`.

    python -m jaxtok.tokenizers.convert fqgan --checkpoint fqgan_dual_16.pt \
        --variant dual-16 --out DIR

The released `.pt` files hold `{"model": state_dict, ...}`; `jaxtok.io.torch_pickle` reads them
without torch. Names (tests/fixtures/fqgan/README.md §6): the conv trunk and decoder keep the
official module paths (`encoder.conv_blocks.<i>.res.<j>...`); per-branch modules move into
lists in `config.branches` order: `encoder.<visual|semantic>_head*.0` -> `encoder.adapters.<i>`,
`encoder.{norm,conv}_out_<b>` -> `encoder.{norm,conv}_out.<i>`, `quant_conv_<b>` ->
`quantize.projections.<i>` (a 1x1 conv = Dense), `quantize_<b>.embedding.weight` ->
`quantize.quantizers.<i>.codebook`; the feature heads (`feat_pred_head` for Dual,
`{mid,high}_sem_feat_pred` for Triple) -> `feat_heads.<j>`. `quantize_<b>.codebook_used`
(a usage log buffer) is dropped. Loading is strict otherwise.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxtok.io import checkpoint as ckpt_format
from jaxtok.io.torch_pickle import read_checkpoint
from jaxtok.tokenizers.fqgan.config import (
  DECODE_CODE_ORDER,
  DUAL_BRANCHES,
  TEACHER_WIDTHS,
  TEACHERS,
  TRIPLE_BRANCHES,
  FQGANConfig,
)
from jaxtok.tokenizers.fqgan.model import FQGAN
from jaxtok.tokenizers.fqgan.variants import VARIANTS
from jaxtok.tokenizers.interface import fresh_variant
from jaxtok.tokenizers.mapping import (
  build_with_params,
  conv,
  conv1x1_dense,
  linear,
  same,
  vit_rules,
)

__all__ = ["adapter_name", "convert_fqgan", "fqgan_from_params", "fqgan_rules",
           "head_name", "official_fqgan_config"]

# Prefixes of the official conv modules that keep their names in jaxtok.
_CONV_PREFIXES = ("encoder.conv_in.", "encoder.conv_blocks.", "encoder.mid.", "decoder.",
                  "post_quant_conv.")


def adapter_name(branch: str) -> str:
  """Official adapter module of a branch: vis -> visual_head, sem -> semantic_head,
  sem_mid -> semantic_head_mid, sem_high -> semantic_head_high."""
  if branch == "vis":
    return "visual_head"
  if branch == "sem" or branch.startswith("sem_"):
    return "semantic_head" + branch[3:]
  raise ValueError(f"branch: expected vis, sem or sem_<level>, got {branch!r}")


def head_name(branch: str) -> str:
  """Official feature-head module: sem -> feat_pred_head, sem_mid -> mid_sem_feat_pred."""
  if branch == "sem":
    return "feat_pred_head"
  if branch.startswith("sem_"):
    return f"{branch[4:]}_sem_feat_pred"
  raise ValueError(f"branch: expected sem or sem_<level> for a feature head, got {branch!r}")


def official_fqgan_config(d: Mapping[str, Any]) -> FQGANConfig:
  """`FQGANConfig` from an official-style description.

  Args:
    d: `{"variant": "dual"|"triple", "model_args": ModelArgs fields, ...}` plus the sizes the
      official code hard-codes, all optional with the released values: `image_size` (256),
      `ch` (128), `num_res_blocks` (2), `adapter` {num_layers, num_heads, mlp_ratio, width},
      `feat_pred_heads` {branch: {width, num_layers, num_heads}}, `branches` (semantic first
      as listed officially; only the set matters), `concat_order`. The fixture
      `config_json` has this form.

  Returns:
    The config (ValueError on unsupported settings: dropout, no l2 norm with a fixture...).
  """
  variant = d.get("variant", "dual")
  if variant not in ("dual", "triple"):
    raise ValueError(f"variant: expected 'dual' or 'triple', got {variant!r}")
  default_branches = DUAL_BRANCHES if variant == "dual" else TRIPLE_BRANCHES
  branches = tuple(d.get("concat_order", default_branches))
  if "branches" in d and sorted(d["branches"]) != sorted(branches):
    raise ValueError(f"branches: expected the names of concat_order {list(branches)}, got "
                     f"{d['branches']}")
  a = dict(d.get("model_args", {}))
  if float(a.get("dropout_p", 0.0)) != 0.0:
    raise ValueError(f"model_args.dropout_p: expected 0.0, got {a['dropout_p']}")
  adapter = dict(d.get("adapter", {}))
  mult = tuple(a.get("encoder_ch_mult", (1, 1, 2, 2, 4)))
  ch = int(d.get("ch", 128))
  if "width" in adapter and int(adapter["width"]) != ch * mult[-1]:
    raise ValueError(f"adapter.width: expected the trunk width ch*encoder_ch_mult[-1]="
                     f"{ch * mult[-1]}, got {adapter['width']}")
  with_heads = bool(a.get("with_clip_supervision", True))
  if "feat_pred_heads" in d:
    heads = {b: (int(h["width"]), int(h.get("num_layers", 3)), int(h.get("num_heads", 8)))
             for b, h in d["feat_pred_heads"].items()}
  else:
    heads = {b: (TEACHER_WIDTHS[t], 3, 8) for b, t in TEACHERS[default_branches].items()}
  quant = dict(d.get("quantizer", {}))
  if "decode_code_arg_order" in d:  # ["indices_sem", "indices_vis", "shape_sem", ...]
    order = tuple(n[len("indices_"):] for n in d["decode_code_arg_order"]
                  if n.startswith("indices_"))
  else:
    order = DECODE_CODE_ORDER.get(branches, branches)
  return FQGANConfig(
      image_size=int(d.get("image_size", 256)), branches=branches,
      decode_code_order=order,
      feature_heads=heads if with_heads else {},
      codebook_size=int(a.get("codebook_size", 16384)),
      codebook_dim=int(a.get("codebook_embed_dim", 8)),
      use_l2_norm=bool(a.get("codebook_l2_norm", True)),
      commitment_cost=float(a.get("commit_loss_beta", 0.25)),
      entropy_loss_weight=float(a.get("entropy_loss_ratio", 0.0)),
      entropy_temperature=float(quant.get("entropy_temperature", 0.01)),
      disentangle_weight=(float(a.get("disentanglement_ratio", 0.0))
                          if a.get("with_disentanglement", False) else 0.0),
      ch=ch, encoder_ch_mult=mult,
      decoder_ch_mult=tuple(a.get("decoder_ch_mult", (1, 1, 2, 2, 4))),
      num_res_blocks=int(d.get("num_res_blocks", 2)),
      z_channels=int(a.get("z_channels", 256)),
      in_channels=int(d.get("in_channels", 3)), out_channels=int(d.get("out_channels", 3)),
      adapter_layers=int(adapter.get("num_layers", 6)),
      adapter_heads=int(adapter.get("num_heads", 8)),
      mlp_ratio=float(adapter.get("mlp_ratio", 4.0)))


def _conv_rule(key: str, ndim: int, jprefix: tuple = ()) -> tuple:
  """Conv / GroupNorm leaves keep their module path; only the leaf and layout change."""
  *mods, leaf = key.split(".")
  path = jprefix + tuple(int(p) if p.isdigit() else p for p in mods)
  if leaf == "weight" and ndim == 4:
    return path + ("kernel",), conv
  if leaf == "weight" and ndim == 1:
    return path + ("scale",), same
  if leaf == "bias":
    return path + ("bias",), same
  raise ValueError(f"params: unexpected key {key!r} with ndim {ndim}")


def fqgan_rules(config: FQGANConfig, params: Mapping[str, np.ndarray]) -> dict[str, tuple]:
  """official key -> (jaxtok path, transform[, layer]) for an FQGAN model."""
  r: dict[str, tuple] = {}
  for key, value in params.items():
    if key.startswith(_CONV_PREFIXES):
      r[key] = _conv_rule(key, np.ndim(value))
  for i, b in enumerate(config.branches):
    o, j = f"encoder.{adapter_name(b)}.0", ("encoder", "adapters", i)
    r[f"{o}.positional_embedding"] = (j + ("positional_embedding",), same)
    r.update(vit_rules(o, j, config.adapter_layers))
    r[f"encoder.norm_out_{b}.weight"] = (("encoder", "norm_out", i, "scale"), same)
    r[f"encoder.norm_out_{b}.bias"] = (("encoder", "norm_out", i, "bias"), same)
    r[f"encoder.conv_out_{b}.weight"] = (("encoder", "conv_out", i, "kernel"), conv)
    r[f"encoder.conv_out_{b}.bias"] = (("encoder", "conv_out", i, "bias"), same)
    r[f"quant_conv_{b}.weight"] = (("quantize", "projections", i, "kernel"), conv1x1_dense)
    r[f"quant_conv_{b}.bias"] = (("quantize", "projections", i, "bias"), same)
    r[f"quantize_{b}.embedding.weight"] = (("quantize", "quantizers", i, "codebook"), same)
  head_branches = [b for b in config.branches if b in config.feature_heads]
  for h, b in enumerate(head_branches):
    o, j = head_name(b), ("feat_heads", h)
    for name in ("class_embedding", "positional_embedding"):
      r[f"{o}.{name}"] = (j + (name,), same)
    for lin in ("0", "2"):
      r[f"{o}.upscale.{lin}.weight"] = (j + (f"upscale_{lin}", "kernel"), linear)
      r[f"{o}.upscale.{lin}.bias"] = (j + (f"upscale_{lin}", "bias"), same)
    r.update(vit_rules(o, j, config.feature_heads[b][1]))
  return r


def _drop_buffers(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {k: v for k, v in params.items() if not k.endswith(".codebook_used")}


def fqgan_from_params(config: FQGANConfig, params: Mapping[str, np.ndarray]) -> FQGAN:
  """An `FQGAN(config)` holding the official state dict `params` (strict)."""
  return build_with_params(FQGAN, config, _drop_buffers(params), fqgan_rules)


def convert_fqgan(checkpoint: str | os.PathLike, out: str | os.PathLike, *,
                  variant: str | None = None, config: Mapping[str, Any] | None = None,
                  use_torch: bool | None = False, overwrite: bool = True) -> Path:
  """Converts a released FQGAN checkpoint into a jaxtok checkpoint directory.

  Args:
    checkpoint: the official `.pt` (`{"model": state_dict}`), a `.safetensors`, or a fixture
      `.npz` with `param/<key>` arrays.
    out: destination directory (written atomically).
    variant: a jaxtok FQGAN variant (`dual-16`, `triple-16`, `dual-8`, `triple-8`, ...).
    config: instead of `variant`, an official-style description (`official_fqgan_config`).
    use_torch: reader choice for torch files (`jaxtok.io.torch_pickle.read_checkpoint`).
    overwrite: replace an existing jaxtok checkpoint at `out`.

  Returns:
    The output directory, loadable with `jaxtok.load`.
  """
  if (variant is None) == (config is None):
    raise ValueError(f"variant: expected exactly one of variant (e.g. 'dual-16') or config, "
                     f"got variant={variant!r} and config={'given' if config else None}")
  model_config = (fresh_variant("fqgan", FQGANConfig, VARIANTS, variant) if variant is not None
                  else official_fqgan_config(config))
  checkpoint = Path(checkpoint)
  params = read_checkpoint(checkpoint, use_torch=use_torch)
  model = fqgan_from_params(model_config, params)
  digest = ckpt_format.file_sha256(checkpoint)
  source = {"checkpoint": checkpoint.name, "checkpoint_sha256": digest,
            "variant": variant, "official_config": dict(config) if config else None}
  arrays, metadata = ckpt_format.state_to_arrays(model)
  meta = ckpt_format.make_meta("fqgan", model.config, source)
  return ckpt_format.write_dir(out, meta, arrays, metadata, overwrite=overwrite)
