"""diffusers `AutoencoderKL` directory -> a jaxtok "vae" checkpoint directory.

    python -m jaxtok.tokenizers.convert vae --diffusers DIR [--image-size 256] --out OUT

`DIR` holds what `AutoencoderKL.save_pretrained` writes (`config.json` +
`diffusion_pytorch_model.safetensors`); the config is read as data and the parameter names
are mapped by `jaxtok.tokenizers.vae.params_from_diffusers` (the port keeps diffusers' module
layout). No torch or diffusers is needed.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from jaxtok.io import checkpoint as ckpt_format
from jaxtok.tokenizers import vae


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
  model = vae.autoencoder_from_diffusers(directory, image_size=image_size)
  with open(directory / vae.DIFFUSERS_WEIGHTS, "rb") as f:
    sha = hashlib.file_digest(f, "sha256").hexdigest()
  source = {"checkpoint": vae.DIFFUSERS_WEIGHTS, "checkpoint_sha256": sha,
            "official_config": json.loads((directory / "config.json").read_text())}
  arrays, metadata = ckpt_format.state_to_arrays(model)
  meta = ckpt_format.make_meta(vae.FAMILY, model.config, source)
  return ckpt_format.write_dir(out, meta, arrays, metadata, overwrite=overwrite)


__all__ = ["convert_vae"]
