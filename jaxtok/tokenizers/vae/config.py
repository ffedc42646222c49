"""`AutoencoderKLConfig`: the convolutional KL autoencoder (arXiv 1312.6114; the latent-diffusion
VAE, arXiv 2112.10752) in the layout of diffusers' `AutoencoderKL`, JSON-serializable.

`config_from_diffusers` reads a diffusers `config.json` dict as data (every key known or
refused by name), so a user's `diffusion_pytorch_model.safetensors` + `config.json` load into
`jaxtok.tokenizers.vae.AutoencoderKL` without diffusers or torch; `config_from_diffusers_weights`
reads the architecture from a bare state dict's shapes (a VAE inside another checkpoint).
"""
# No `from __future__ import annotations`: ml_collections config_flags reads the config
# dataclass's field types at runtime (`--config.model.<field>=...` in the trainer).

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxtok.io import checkpoint as ckpt_format
from jaxtok.tokenizers.interface import ModelConfigBase

# Registry key of the family (`jaxtok.tokenizers.TOKENIZERS`).
FAMILY = "vae"

# The only block types of diffusers' AutoencoderKL encoder / decoder that this port has.
DOWN_BLOCK = "DownEncoderBlock2D"
UP_BLOCK = "UpDecoderBlock2D"

# diffusers config.json keys that carry no architecture (bookkeeping, dtype hints).
_DIFFUSERS_IGNORED = ("_class_name", "_diffusers_version", "_name_or_path", "_use_default_values",
                      "force_upcast")


@dataclasses.dataclass(kw_only=True)
class AutoencoderKLConfig(ModelConfigBase):
  """A diffusers-layout `AutoencoderKL`.

  Attributes:
    image_size: side S of the square training / tokenizer images (the network is fully
      convolutional; `token_spec` and the trainer's data resolution read it).
    in_channels, out_channels: image channels (3).
    block_out_channels: channels of each encoder level (the decoder mirrors them); each level
      but the last halves the resolution, so the downsampling factor is 2^(levels - 1).
    layers_per_block: ResnetBlock2D per encoder level (the decoder has one more per level).
    latent_channels: C of the latents (4, 8, 16).
    norm_num_groups: GroupNorm groups (32; eps `norm_eps`).
    norm_eps: GroupNorm epsilon (diffusers' 1e-6).
    mid_block_add_attention: the single-head self-attention of the mid blocks.
    use_quant_conv, use_post_quant_conv: the 1x1 convs on the moments / before the decoder
      (SD: on; FLUX.1: off).
    scaling_factor, shift_factor: latents handed to a second stage (a diffusion model,
      FlexTok) are (z - shift_factor) * scaling_factor, z the posterior mean or a sample.
  """
  image_size: int = 256
  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
  layers_per_block: int = 2
  latent_channels: int = 4
  norm_num_groups: int = 32
  norm_eps: float = 1e-6
  mid_block_add_attention: bool = True
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  scaling_factor: float = 0.18215
  shift_factor: float = 0.0

  def __post_init__(self):
    self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first inconsistent field."""
    def need(cond, name, expected):
      if not cond:
        raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")
    need(len(self.block_out_channels) >= 1 and min(self.block_out_channels) >= 1,
         "block_out_channels", "a non-empty tuple of positive ints")
    need(self.norm_num_groups >= 1
         and all(c % self.norm_num_groups == 0 for c in self.block_out_channels),
         "norm_num_groups", f"a divisor of every block_out_channels {self.block_out_channels}")
    need(self.layers_per_block >= 1, "layers_per_block", ">= 1")
    need(self.latent_channels >= 1, "latent_channels", ">= 1")
    need(self.in_channels >= 1, "in_channels", ">= 1")
    need(self.out_channels >= 1, "out_channels", ">= 1")
    need(self.norm_eps > 0, "norm_eps", "> 0")
    need(self.scaling_factor > 0, "scaling_factor", "> 0")
    need(self.image_size >= 1 and self.image_size % self.downsample_factor == 0, "image_size",
         f"a positive multiple of the downsampling factor {self.downsample_factor}")

  @property
  def downsample_factor(self) -> int:
    """f: image side / latent side (8 for four levels)."""
    return 2 ** (len(self.block_out_channels) - 1)

  @property
  def latent_size(self) -> int:
    """Side of the latents of an `image_size` image."""
    return self.image_size // self.downsample_factor


def config_from_diffusers(d: Mapping[str, Any], *, image_size: int | None = None
                          ) -> AutoencoderKLConfig:
  """A diffusers `AutoencoderKL` `config.json` dict -> `AutoencoderKLConfig`.

  Args:
    d: the parsed JSON (read as data; nothing in it is imported or run).
    image_size: overrides the config's `sample_size` (the training resolution).

  Raises:
    ValueError: another class, a block type or activation this port does not have,
      `latents_mean` / `latents_std` normalisation, or an unknown key (each named).
  """
  d = dict(d)
  cls = d.get("_class_name", "AutoencoderKL")
  if cls != "AutoencoderKL":
    raise ValueError(f"config: expected a diffusers AutoencoderKL config (_class_name "
                     f"'AutoencoderKL'), got _class_name {cls!r}")
  levels = len(d.get("block_out_channels", (64,)))
  for key, want in (("down_block_types", DOWN_BLOCK), ("up_block_types", UP_BLOCK)):
    got = list(d.pop(key, [want] * levels))
    if got != [want] * levels:
      raise ValueError(f"config.{key}: expected {levels} x {want!r} (the AutoencoderKL blocks "
                       f"this port has), got {got}")
  act = d.pop("act_fn", "silu")
  if act != "silu":
    raise ValueError(f"config.act_fn: expected 'silu', got {act!r}")
  for key in ("latents_mean", "latents_std"):
    if d.pop(key, None) is not None:
      raise ValueError(f"config.{key}: per-channel latent normalisation is not supported; "
                       f"expected null (scaling_factor / shift_factor only)")
  for key in _DIFFUSERS_IGNORED:
    d.pop(key, None)
  sample = d.pop("sample_size", 256)
  if isinstance(sample, (list, tuple)):
    if len(set(sample)) != 1:
      raise ValueError(f"config.sample_size: expected square images, got {sample}")
    sample = sample[0]
  shift = d.pop("shift_factor", None)
  known = {f.name for f in dataclasses.fields(AutoencoderKLConfig)} - {"image_size",
                                                                         "shift_factor",
                                                                         "norm_eps"}
  unknown = sorted(set(d) - known)
  if unknown:
    raise ValueError(f"config: unknown diffusers AutoencoderKL keys {unknown}; expected keys "
                     f"among {sorted(known)}")
  return AutoencoderKLConfig(image_size=int(image_size or sample), shift_factor=float(shift or 0.0),
                             **d)


def _diffusers_shape(tensors: Mapping[str, Any], key: str, ndim: int, where: str
                     ) -> tuple[int, ...]:
  if key not in tensors:
    raise ValueError(f"{where}: expected the diffusers AutoencoderKL key {key!r}")
  shape = tuple(int(n) for n in np.shape(tensors[key]))
  if len(shape) != ndim:
    raise ValueError(f"{where}: expected {key!r} to have {ndim} dimensions, got shape {shape}")
  return shape


def _indices(tensors: Mapping[str, Any], prefix: str) -> list[int]:
  """The sorted `i` of every key `prefix<i>.*`."""
  return sorted({int(k[len(prefix):].split(".")[0]) for k in tensors
                 if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit()})


def config_from_diffusers_weights(tensors: Mapping[str, Any], *, latent_size: int,
                                  scaling_factor: float = 1.0, shift_factor: float = 0.0,
                                  norm_num_groups: int = 32, where: str = "weights"
                                  ) -> AutoencoderKLConfig:
  """The `AutoencoderKLConfig` of a diffusers `AutoencoderKL` state dict, read from the weights'
  shapes alone (for checkpoints that come without a diffusers `config.json`).

  From the shapes: `block_out_channels` (the width of each `encoder.down_blocks.<i>`),
  `layers_per_block` (the ResNets of `encoder.down_blocks.0`), `latent_channels` (half the
  outputs of `encoder.conv_out`), `in_channels` / `out_channels`, and whether there are
  `quant_conv` / `post_quant_conv` and mid-block attention. The GroupNorm group count is in no
  shape: `norm_num_groups` (diffusers' and Stable Diffusion's 32 by default) is taken as given;
  `norm_eps` is diffusers' 1e-6. The decoder is not read here: `vae.params_from_diffusers`
  checks every tensor against the model of this config.

  Args:
    tensors: `{diffusers key: array}` (names without any prefix; numpy arrays or anything with
      a shape).
    latent_size: side of the latents the second stage takes: `image_size` is this x the
      downsampling factor.
    scaling_factor, shift_factor, norm_num_groups: the fields no weight shape holds.
    where: how error messages name `tensors`.

  Raises:
    ValueError: a key the architecture needs is missing or has an unexpected shape (named).
  """
  ch0, cin = _diffusers_shape(tensors, "encoder.conv_in.weight", 4, where)[:2]
  levels = _indices(tensors, "encoder.down_blocks.")
  if not levels or levels != list(range(len(levels))):
    raise ValueError(f"{where}: expected encoder.down_blocks.0..n-1, got indices {levels}")
  widths = tuple(_diffusers_shape(tensors, f"encoder.down_blocks.{i}.resnets.0.conv1.weight", 4,
                                  where)[0] for i in levels)
  if widths[0] != ch0:
    raise ValueError(f"{where}: encoder.conv_in has {ch0} outputs but encoder.down_blocks.0 "
                     f"is {widths[0]} wide")
  resnets = _indices(tensors, "encoder.down_blocks.0.resnets.")
  moments = _diffusers_shape(tensors, "encoder.conv_out.weight", 4, where)[0]
  if moments % 2:
    raise ValueError(f"{where}: encoder.conv_out has {moments} outputs; expected 2 x "
                     f"latent_channels (mean and log-variance)")
  out = _diffusers_shape(tensors, "decoder.conv_out.weight", 4, where)[0]
  attention = any(k.startswith("encoder.mid_block.attentions.") for k in tensors)
  return AutoencoderKLConfig(
      image_size=int(latent_size) * 2 ** (len(widths) - 1), in_channels=cin, out_channels=out,
      block_out_channels=widths, layers_per_block=len(resnets), latent_channels=moments // 2,
      norm_num_groups=int(norm_num_groups), mid_block_add_attention=attention,
      use_quant_conv="quant_conv.weight" in tensors,
      use_post_quant_conv="post_quant_conv.weight" in tensors,
      scaling_factor=float(scaling_factor), shift_factor=float(shift_factor))


def read_diffusers_config(directory: str | os.PathLike, *, image_size: int | None = None
                          ) -> AutoencoderKLConfig:
  """`config_from_diffusers` of `directory/config.json`."""
  file = Path(directory) / "config.json"
  try:
    data = json.loads(file.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"directory: cannot read a diffusers config.json at {file}: {e}") from e
  if not isinstance(data, dict):
    raise ValueError(f"directory: expected {file} to hold a JSON object, got "
                     f"{type(data).__name__}")
  return config_from_diffusers(data, image_size=image_size)


def is_jaxtok_checkpoint(directory: str | os.PathLike) -> bool:
  """Whether `directory` holds a jaxtok checkpoint (its `config.json` names a family)."""
  return (Path(directory) / ckpt_format.WEIGHTS_FILE).is_file()


def load_config(directory: str | os.PathLike) -> AutoencoderKLConfig:
  """The `AutoencoderKLConfig` of a jaxtok "vae" checkpoint or a diffusers directory."""
  if not is_jaxtok_checkpoint(directory):
    return read_diffusers_config(directory)
  meta = ckpt_format.read_meta(directory)
  if meta["family"] != FAMILY:
    raise ValueError(f"directory: {str(directory)!r} holds a {meta['family']!r} checkpoint; "
                     f"expected a {FAMILY!r} (AutoencoderKL) one or a diffusers directory")
  return AutoencoderKLConfig.from_dict(meta["config"], complete=True)


__all__ = ["AutoencoderKLConfig", "config_from_diffusers", "config_from_diffusers_weights",
           "is_jaxtok_checkpoint", "load_config", "read_diffusers_config"]
