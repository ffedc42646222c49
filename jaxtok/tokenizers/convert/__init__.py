"""Official PyTorch checkpoints -> jaxtok: one entry point for every family.

    python -m jaxtok.tokenizers.convert titok|flextok|fqgan|vae ... --out DIR   # the CLI

or from Python:

    from jaxtok.tokenizers.convert import convert_official, load_official
    convert_official("titok", "model.safetensors", "DIR", config="config.json")
    model = load_official("fqgan", "fqgan_dual_ds16.pt", variant="dual-16")
    model = load_official("flextok", "model.safetensors", into=my_flextok_config)

Each family's converter lives in its package (`jaxtok.tokenizers.<family>.convert`) and is
registered in `jaxtok.tokenizers.TOKENIZERS` (`Family.convert`, `Family.from_params`); this
module only dispatches. No torch is needed: `jaxtok.io` reads safetensors and torch zip files
with numpy, and nothing in a checkpoint is executed.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from jaxtok.io.torch_pickle import read_checkpoint
from jaxtok.tokenizers import get_family, load_dir
from jaxtok.tokenizers.flextok.convert import convert_flextok
from jaxtok.tokenizers.fqgan.convert import convert_fqgan
from jaxtok.tokenizers.titok.convert import convert_titok
from jaxtok.tokenizers.vae.convert import convert_vae

__all__ = ["convert_flextok", "convert_fqgan", "convert_official", "convert_titok",
           "convert_vae", "load_official"]


def _family(name: str, need: str):
  fam = get_family(name)
  if getattr(fam, need) is None:
    raise ValueError(f"family: {name!r} has no official-weights converter")
  return fam


def convert_official(family: str, checkpoint: str | os.PathLike, out: str | os.PathLike,
                     **options: Any) -> Path:
  """Converts an official release of `family` into a jaxtok checkpoint directory at `out`.

  Args:
    family: a registered family ("titok" and "one_d_piece" share TiTok's converter, which
      tells them apart from the official config).
    checkpoint: the release's weights file (a diffusers directory for "vae").
    out: destination directory (written atomically).
    **options: the family converter's options (`config=`, `variant=`, `maskgit_vqgan=`,
      `vae_scaling_factor=`, `image_size=`, `overwrite=`, ...; see its `convert_*`).

  Returns:
    The output directory, loadable with `jaxtok.load`.
  """
  return Path(_family(family, "convert").convert(checkpoint, out, **options))


def load_official(family: str, checkpoint: str | os.PathLike, *, into: Any = None,
                  **options: Any) -> Any:
  """A model of `family` holding an official release's weights.

  Args:
    family: a registered family.
    checkpoint: the release's weights file (a diffusers directory for "vae" without `config`).
    into: a config of the family: the weights go into a model of exactly this config (the
      trainer's `init_from`: the experiment's config, e.g. with another dropout or resolution
      setting); keys and shapes are checked strictly. None: the release's own config (read
      by the family's converter from the files, with `options`).
    **options: the converter's options (`convert_official`: e.g. FQGAN's `variant` or
      `config`, the official description), only without `into`.
  """
  fam = _family(family, "from_params")
  if into is not None:
    if options:
      raise ValueError(f"options: {sorted(options)} apply only without into (the "
                       f"converter reads the release's config); got into too")
    if not isinstance(into, fam.config_class):
      raise ValueError(f"into: family {family!r} takes a {fam.config_class.__name__}, got "
                       f"{type(into).__name__}")
    return fam.from_params(into, read_checkpoint(Path(checkpoint)))
  with tempfile.TemporaryDirectory(prefix="jaxtok-convert-") as tmp:
    out = convert_official(family, checkpoint, Path(tmp) / "model", **options)
    return load_dir(out)[1]
