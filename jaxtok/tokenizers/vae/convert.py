"""diffusers `AutoencoderKL` weights -> jaxtok, and a VAE from a directory of either format.

    python -m jaxtok.tokenizers.convert vae --diffusers DIR [--image-size 256] --out OUT

`DIR` holds what `AutoencoderKL.save_pretrained` writes (`config.json` +
`diffusion_pytorch_model.safetensors`); the config is read as data and the parameter names
are mapped by `params_from_diffusers` (the port keeps diffusers' module layout). No torch or
diffusers is needed. `load_autoencoder` reads a jaxtok "vae" checkpoint or a diffusers
directory (FlexTok's VAE front end).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok.io import checkpoint as ckpt_format
from jaxtok.io.safetensors import read_safetensors
from jaxtok.tokenizers.vae import config as vae_config
from jaxtok.tokenizers.vae.config import FAMILY, AutoencoderKLConfig, read_diffusers_config
from jaxtok.tokenizers.vae.model import AutoencoderKL

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


# Names of the attention projections in checkpoints saved before diffusers 0.14.
_LEGACY_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def diffusers_name(path: tuple) -> str:
  """NNX variable path -> diffusers state-dict key (`kernel` / GroupNorm `scale` -> weight)."""
  *mods, leaf = (str(p) for p in path)
  return ".".join(mods + ["weight" if leaf in ("kernel", "scale") else leaf])


def _torch_to_nnx(name: str, value: np.ndarray, want: tuple) -> np.ndarray:
  """A diffusers tensor in the layout of the NNX variable of shape `want`."""
  v = np.asarray(value, np.float32)
  if v.ndim == 4 and len(want) == 2:  # 1x1-conv attention projections (old checkpoints).
    v = v[:, :, 0, 0]
  if v.ndim == 4:
    v = v.transpose(2, 3, 1, 0)  # Conv (O, I, kh, kw) -> (kh, kw, I, O).
  elif v.ndim == 2:
    v = v.T  # Linear (out, in) -> (in, out).
  if tuple(v.shape) != tuple(want):
    raise ValueError(f"weights: {name!r} has shape {tuple(value.shape)}, which does not fit "
                     f"the model's {tuple(want)} for this config")
  return v


def params_from_diffusers(config: AutoencoderKLConfig, tensors: Mapping[str, np.ndarray]
                          ) -> AutoencoderKL:
  """An `AutoencoderKL` of `config` with every parameter from a diffusers state dict.

  Raises:
    ValueError: a parameter is missing, a shape does not fit, or `tensors` holds keys the model
      does not have (each named).
  """
  model = nnx.eval_shape(lambda: AutoencoderKL(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  flat = list(nnx.to_flat_state(state))
  used, missing = set(), []
  for path, var in flat:
    name = diffusers_name(path)
    key = name
    if key not in tensors:
      for new, old in _LEGACY_ATTENTION.items():
        key = key.replace(f".{new}.", f".{old}.")
    if key not in tensors:
      missing.append(name)
      continue
    used.add(key)
    var.set_value(jnp.asarray(_torch_to_nnx(key, tensors[key], var.get_value().shape)))
  if missing:
    raise ValueError(f"weights: expected every parameter of the AutoencoderKL for this config, "
                     f"missing {len(missing)}: {missing[:10]}")
  unused = sorted(set(tensors) - used)
  if unused:
    raise ValueError(f"weights: holds {len(unused)} tensors this AutoencoderKL config does not "
                     f"have: {unused[:10]} (check use_quant_conv / mid_block_add_attention)")
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


def autoencoder_from_diffusers(directory: str | os.PathLike, *, image_size: int | None = None
                               ) -> AutoencoderKL:
  """An `AutoencoderKL` from a diffusers directory (`config.json` +
  `diffusion_pytorch_model.safetensors`, as `AutoencoderKL.save_pretrained` writes it).

  Args:
    directory: the directory.
    image_size: the tokenizer resolution (default: the config's `sample_size`).
  """
  weights = Path(directory) / DIFFUSERS_WEIGHTS
  if not weights.is_file():
    raise ValueError(f"directory: expected {DIFFUSERS_WEIGHTS} in {str(directory)!r} (a "
                     f"diffusers AutoencoderKL directory)")
  config = read_diffusers_config(directory, image_size=image_size)
  return params_from_diffusers(config, read_safetensors(weights))


def load_autoencoder(directory: str | os.PathLike,
                     config: AutoencoderKLConfig | None = None) -> AutoencoderKL:
  """An `AutoencoderKL` with the weights of a jaxtok "vae" checkpoint (`jaxtok.save`, the
  trainer's `export/`) or of a diffusers directory.

  Args:
    directory: the checkpoint directory.
    config: expected architecture; ValueError when the directory's differs in anything but
      `image_size` (which is taken from `config`).
  """
  found = vae_config.load_config(directory)
  if config is not None:
    mine, theirs = config.to_dict(), found.to_dict()
    diff = sorted(k for k in mine if k != "image_size" and mine[k] != theirs[k])
    if diff:
      raise ValueError(f"config: the AutoencoderKL in {str(directory)!r} differs in {diff}: "
                       f"{ {k: theirs[k] for k in diff} }, expected { {k: mine[k] for k in diff} }")
    found = dataclasses.replace(found, image_size=config.image_size)
  if not vae_config.is_jaxtok_checkpoint(directory):
    return autoencoder_from_diffusers(directory, image_size=found.image_size)
  arrays, key_impls = ckpt_format.read_weights(directory)
  return ckpt_format.model_from_arrays(AutoencoderKL, found, arrays, key_impls=key_impls,
                                       source=str(Path(directory) / ckpt_format.WEIGHTS_FILE))




def convert_vae(directory: str | os.PathLike, out: str | os.PathLike, *,
                image_size: int | None = None, overwrite: bool = True) -> Path:
  """Writes the jaxtok checkpoint of the diffusers AutoencoderKL in `directory` to `out`.

  Args:
    directory: the diffusers directory.
    out: destination directory (written atomically).
    image_size: tokenizer resolution (default: the config's `sample_size`).
    overwrite: replace an existing jaxtok checkpoint at `out`.

  Returns:
    The output directory (`jaxtok.load`-able; also a FlexTok `vae_checkpoint`).
  """
  directory = Path(directory)
  model = autoencoder_from_diffusers(directory, image_size=image_size)
  sha = ckpt_format.file_sha256(directory / DIFFUSERS_WEIGHTS)
  source = {"checkpoint": DIFFUSERS_WEIGHTS, "checkpoint_sha256": sha,
            "official_config": json.loads((directory / "config.json").read_text())}
  arrays, metadata = ckpt_format.state_to_arrays(model)
  meta = ckpt_format.make_meta(FAMILY, model.config, source)
  return ckpt_format.write_dir(out, meta, arrays, metadata, overwrite=overwrite)


__all__ = ["DIFFUSERS_WEIGHTS", "autoencoder_from_diffusers", "convert_vae", "diffusers_name",
           "load_autoencoder", "params_from_diffusers"]
