"""Tokenizer model families: THE one registry (docs/design.md §1).

`TOKENIZERS[name]` is a `Family`: the model class, its config dataclass, its named variants and
how it reads the official PyTorch weights. `jaxtok.load`, the trainer and the converter CLI all
resolve families through `get_family`. Adding a family = one package `jaxtok/tokenizers/<name>/`
(config.py, model.py, variants.py, convert.py) + one line here.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

from jaxtok.io import checkpoint as ckpt_format
from jaxtok.tokenizers import flextok, fqgan, interface, titok, vae
from jaxtok.tokenizers.flextok import convert as flextok_convert
from jaxtok.tokenizers.fqgan import convert as fqgan_convert
from jaxtok.tokenizers.titok import convert as titok_convert
from jaxtok.tokenizers.titok import one_d_piece
from jaxtok.tokenizers.vae import convert as vae_convert


@dataclasses.dataclass(frozen=True)
class Family:
  """A tokenizer family.

  Attributes:
    name: registry key ("titok", "one_d_piece").
    model_class: the `nnx.Module` class, built as `model_class(config, rngs=...)`.
    config_class: its config dataclass (with `to_dict` / `from_dict`).
    variants: variant name -> config instance (every family has `tiny` and `smoke`).
    convert: `(checkpoint, out, **options) -> Path`: an official release file (or directory)
      to a jaxtok checkpoint directory; its options are the family's (`--help` of the CLI).
    from_params: `(config, {official_key: array}) -> model`: official-layout weights into a
      model of the given config (the trainer's `init_from`); strict about keys and shapes.
    stage1_teacher: `(model config, weights file or "random", seed) -> module` with
      `module(images) -> ids`: the frozen proxy-code teacher of a two-stage recipe ("stage1"),
      or None for families without one.
  """
  name: str
  model_class: type
  config_class: type
  variants: Mapping[str, Any]
  convert: Callable[..., Any] | None = None
  from_params: Callable[[Any, Mapping[str, Any]], Any] | None = None
  stage1_teacher: Callable[[Any, str, int], Any] | None = None

  def variant(self, name: str) -> Any:
    """A fresh (mutable) copy of the config of variant `name`."""
    return interface.fresh_variant(self.name, self.config_class, self.variants, name)


TOKENIZERS: dict[str, Family] = {
    "titok": Family("titok", titok.TiTok, titok.TiTokConfig, titok.VARIANTS,
                    titok_convert.convert, titok_convert.titok_from_params,
                    titok_convert.stage1_teacher),
    "one_d_piece": Family("one_d_piece", one_d_piece.OneDPiece, titok.TiTokConfig,
                          one_d_piece.VARIANTS, titok_convert.convert,
                          titok_convert.one_d_piece_from_params,
                          titok_convert.stage1_teacher),
    "flextok": Family("flextok", flextok.FlexTok, flextok.FlexTokConfig, flextok.VARIANTS,
                      flextok_convert.convert, flextok_convert.params_into),
    "fqgan": Family("fqgan", fqgan.FQGAN, fqgan.FQGANConfig, fqgan.VARIANTS,
                    fqgan_convert.convert_fqgan, fqgan_convert.fqgan_from_params),
    "vae": Family("vae", vae.AutoencoderKL, vae.AutoencoderKLConfig, vae.VARIANTS,
                  vae_convert.convert_vae, vae_convert.params_from_diffusers),
}


def get_family(name: str) -> Family:
  """The registered family `name`; ValueError listing the registered names otherwise."""
  if name not in TOKENIZERS:
    raise ValueError(f"family: expected one of {sorted(TOKENIZERS)}, got {name!r}")
  return TOKENIZERS[name]


def parse_variant(name: str) -> tuple[Family, str]:
  """`"family:variant"` -> (Family, variant name), both checked."""
  if not isinstance(name, str) or ":" not in name:
    raise ValueError(f"variant: expected 'family:variant' (e.g. 'titok:S-128'), got {name!r}")
  family, variant = name.split(":", 1)
  fam = get_family(family)
  fam.variant(variant)  # Raises with the list of variants.
  return fam, variant


def family_of(model: Any) -> Family:
  """The family of `model`: the registered class nearest in its MRO (OneDPiece before TiTok)."""
  by_class = {fam.model_class: fam for fam in TOKENIZERS.values()}
  for cls in type(model).__mro__:
    if cls in by_class:
      return by_class[cls]
  raise ValueError(f"model: expected an instance of one of "
                   f"{sorted(f.model_class.__name__ for f in TOKENIZERS.values())}, got "
                   f"{type(model).__name__}")


def load_dir(path: str | os.PathLike) -> tuple[Family, Any]:
  """(Family, model) of a jaxtok checkpoint directory (`config.json` + `weights.safetensors`)."""
  meta = ckpt_format.read_meta(path)
  fam = get_family(meta["family"])
  config = ckpt_format.config_from_dict(fam.config_class, meta["config"])
  arrays, key_impls = ckpt_format.read_weights(path)
  model = ckpt_format.model_from_arrays(fam.model_class, config, arrays, key_impls=key_impls,
                                        source=os.path.join(path, ckpt_format.WEIGHTS_FILE))
  return fam, model


__all__ = ["Family", "TOKENIZERS", "family_of", "get_family", "load_dir", "parse_variant"]
